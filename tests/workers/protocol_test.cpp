#include "workers/protocol.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "common/wire.hpp"

namespace shammie::workers {
namespace {

TEST(ProtocolTest, EveryMessageRoundTrips) {
  Task t;
  t.task = 42;
  t.job_id = "0123456789abcdef0123456789abcdef";
  t.kind = "toy.quadratic";
  t.config_json = R"({"learning_rate":0.1})";
  t.seed = 0xfedcba9876543210ull;
  t.attempt = 3;
  t.gang_id = 42;
  t.gang = {2, 5, 7};
  t.isolation = Isolation::kProcess;
  t.time_limit_ms = 90000;
  t.artifact_dir = "/runs/x/checkpoints";
  t.inputs = {{"up1", "model", "/runs/x/checkpoints/aa.ckpt"}, {"up2", "model", "/runs/x/checkpoints/bb.ckpt"}};
  t.previous = {{"0123", "checkpoint", "/runs/x/checkpoints/cc.ckpt"}};
  auto tasks = DecodeAssign(EncodeAssign({t, t}));
  ASSERT_TRUE(tasks.ok());
  ASSERT_EQ(tasks->size(), 2u);
  const Task& u = (*tasks)[1];
  EXPECT_EQ(u.task, t.task);
  EXPECT_EQ(u.job_id, t.job_id);
  EXPECT_EQ(u.config_json, t.config_json);
  EXPECT_EQ(u.seed, t.seed);
  EXPECT_EQ(u.attempt, t.attempt);
  EXPECT_EQ(u.gang, t.gang);
  EXPECT_EQ(u.isolation, Isolation::kProcess);
  EXPECT_EQ(u.time_limit_ms, 90000);
  EXPECT_EQ(u.artifact_dir, t.artifact_dir);
  EXPECT_EQ(u.inputs, t.inputs);
  EXPECT_EQ(u.previous, t.previous);

  auto a = DecodeArtifact(EncodeArtifact({11, "model", "/runs/x/checkpoints/dd.ckpt"}));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->task, 11u);
  EXPECT_EQ(a->name, "model");
  EXPECT_EQ(a->path, "/runs/x/checkpoints/dd.ckpt");
  EXPECT_EQ(*PeekType(EncodeArtifact({})), MsgType::kArtifact);

  MetricsMsg m{7, {{"loss", {{0, 1.5}, {10, 0.25}}}, {"x", {{1, -3}}}}};
  auto m2 = DecodeMetrics(EncodeMetrics(m));
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(m2->task, 7u);
  ASSERT_EQ(m2->series.size(), 2u);
  EXPECT_EQ(m2->series[0].points, m.series[0].points);

  storage::Table table;
  table.columns.push_back({"item", std::vector<int64_t>{1, 2}});
  table.columns.push_back({"score", std::vector<double>{0.5, NAN}});
  table.columns.push_back({"domain", std::vector<std::string>{"math", ""}});
  auto t2 = DecodeTable(EncodeTable({9, "labels", table}));
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(t2->name, "labels");
  EXPECT_EQ(std::get<std::vector<std::string>>(t2->table.columns[2].values), (std::vector<std::string>{"math", ""}));
  EXPECT_TRUE(std::isnan(std::get<std::vector<double>>(t2->table.columns[1].values)[1]));

  auto d = DecodeDone(EncodeDone({{1, common::StatusCode::kOk, "", 0.5, false},
                                  {2, common::StatusCode::kAborted, "boom", 1.5, true}}));
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ((*d)[1].code, common::StatusCode::kAborted);
  EXPECT_EQ((*d)[1].message, "boom");
  EXPECT_TRUE((*d)[1].worker_lost);

  auto h = DecodeHello(EncodeHello({3, "node-1", 1234}));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->host, "node-1");
  EXPECT_EQ(*PeekType(EncodeShutdown()), MsgType::kShutdown);
}

TEST(ProtocolTest, AnotherVersionOrATruncatedMessageIsDataLossNotACrash) {
  std::string msg = EncodeAssign({Task{1, "id", "bench.noop", "{}", 1, 1, 1, {1}, Isolation::kThread, 0}});
  std::string other = msg;
  other[0] = static_cast<char>(kProtocolVersion + 1);
  EXPECT_EQ(PeekType(other).status().code(), common::StatusCode::kDataLoss);
  EXPECT_NE(PeekType(other).status().message().find("mixed shammie versions"), std::string::npos);
  for (size_t cut = 0; cut < msg.size(); ++cut) {
    auto r = DecodeAssign(msg.substr(0, cut));
    EXPECT_FALSE(r.ok()) << "cut at " << cut;
  }
  // A Done decoded as an Assign is refused by type.
  EXPECT_FALSE(DecodeAssign(EncodeDone({})).ok());
  // A huge declared count in a short message is refused before allocating.
  common::WireWriter w;
  w.U8(kProtocolVersion);
  w.U8(static_cast<uint8_t>(MsgType::kMetrics));
  w.U64(1);
  w.Var(1ull << 60);
  EXPECT_FALSE(DecodeMetrics(w.Take()).ok());
}

}  // namespace
}  // namespace shammie::workers
