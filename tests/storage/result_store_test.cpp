#include "storage/result_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/test_util.hpp"

namespace shammie::storage {
namespace {

using common::StatusCode;
using testing::ScratchDir;

ExperimentInfo SampleInfo() {
  ExperimentInfo info;
  info.experiment = "lr-sweep";
  info.spec_text = "[experiment]\nname = \"lr-sweep\"\n";
  info.spec_hash = "0123456789abcdef0123456789abcdef";
  info.shammie_version = "0.1.0";
  info.git_commit = "abc123";
  info.build_options = "build_type=Test";
  info.command_line = "shammie run lr.toml";
  info.start_time = "2026-11-26T10:00:00Z";
  return info;
}

JobRecord Job(const std::string& id, JobStatus status) {
  JobRecord j;
  j.id = id;
  j.stage = "s";
  j.kind = "k";
  j.status = status;
  return j;
}

Table SampleTable(int offset) {
  Table t;
  t.columns.push_back({"score", std::vector<double>{0.5 + offset, -1.25, 3e-9}});
  t.columns.push_back({"label", std::vector<int64_t>{1, 0, static_cast<int64_t>(1) << 40}});
  t.columns.push_back({"text", std::vector<std::string>{"a", "", "ünïcode \"quoted\""}});
  return t;
}

TEST(ResultStoreTest, WritesAndReadsBackEverything) {
  ScratchDir dir("store-roundtrip");
  const std::string path = dir.File("results.h5");
  std::vector<MetricPoint> loss;
  for (int i = 0; i < 10000; ++i) loss.push_back({i, 1.0 / (i + 1)});  // spans several chunks
  {
    auto store = ResultStore::Create(path, SampleInfo());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    JobRecord job{"aaaa1111", "train", "toy.quadratic", JobStatus::kRunning, 1, "1", "host", 10.5, 0, "", 42,
                  "{\"learning_rate\":0.1}"};
    ASSERT_TRUE((*store)->UpsertJob(job).ok());
    job.status = JobStatus::kDone;
    job.end_time = 12.25;
    ASSERT_TRUE((*store)->UpsertJob(job).ok());  // update in place
    JobRecord failed{"bbbb2222", "train", "bench.fail", JobStatus::kFailed, 3, "2,3", "h2", 1, 2, "aborted: boom", -7, "{}"};
    ASSERT_TRUE((*store)->UpsertJob(failed).ok());

    RunRecord run{"aaaa1111", "train", "toy.quadratic", R"({"lr":0.1})", 42, {"cccc", "dddd"}, {{"model", "checkpoints/ab.ckpt"}}};
    ASSERT_TRUE((*store)->BeginRun(run).ok());
    ASSERT_TRUE((*store)->BeginRun(run).ok()) << "same record twice is a no-op";
    RunRecord different = run;
    different.seed = 43;
    EXPECT_EQ((*store)->BeginRun(different).code(), StatusCode::kFailedPrecondition);

    // Appended in uneven batches, like a worker streaming.
    size_t pos = 0;
    for (size_t batch : {1u, 999u, 4096u, 3000u, 1904u}) {
      ASSERT_TRUE((*store)->AppendMetrics("aaaa1111", "loss", std::span(loss).subspan(pos, batch)).ok());
      pos += batch;
    }
    ASSERT_EQ(pos, loss.size());
    std::vector<MetricPoint> acc = {{100, 0.75}};
    ASSERT_TRUE((*store)->AppendMetrics("aaaa1111", "accuracy", acc).ok());
    ASSERT_TRUE((*store)->AppendTable("aaaa1111", "predictions", SampleTable(0)).ok());
    ASSERT_TRUE((*store)->AppendTable("aaaa1111", "predictions", SampleTable(1)).ok());
    ASSERT_TRUE((*store)->SetEndTime("2026-11-26T11:00:00Z").ok());
    ASSERT_TRUE((*store)->Close().ok());
  }
  auto store = ResultStore::Open(path, ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ExperimentInfo expected = SampleInfo();
  expected.end_time = "2026-11-26T11:00:00Z";
  const ExperimentInfo& info = (*store)->info();
  EXPECT_EQ(info.experiment, expected.experiment);
  EXPECT_EQ(info.spec_text, expected.spec_text);
  EXPECT_EQ(info.spec_hash, expected.spec_hash);
  EXPECT_EQ(info.command_line, expected.command_line);
  EXPECT_EQ(info.end_time, expected.end_time);
  EXPECT_EQ(info.layout_version, kLayoutVersion);

  auto jobs = (*store)->ReadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].status, JobStatus::kDone);
  EXPECT_EQ((*jobs)[0].end_time, 12.25);
  EXPECT_EQ((*jobs)[1].error, "aborted: boom");
  EXPECT_EQ((*jobs)[1].ranks, "2,3");

  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0], (RunRecord{"aaaa1111", "train", "toy.quadratic", R"({"lr":0.1})", 42, {"cccc", "dddd"}, {{"model", "checkpoints/ab.ckpt"}}}));

  auto metrics = (*store)->ListMetrics("aaaa1111");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(*metrics, (std::vector<std::string>{"accuracy", "loss"}));
  auto back = (*store)->ReadMetric("aaaa1111", "loss");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, loss);

  auto table = (*store)->ReadTable("aaaa1111", "predictions");
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  ASSERT_EQ(table->num_rows(), 6u);
  Table first = SampleTable(0), second = SampleTable(1);
  EXPECT_EQ(std::get<std::vector<double>>(table->columns[0].values)[3], 1.5);
  EXPECT_EQ(std::get<std::vector<std::string>>(table->columns[2].values)[2], "ünïcode \"quoted\"");
  EXPECT_EQ(std::get<std::vector<int64_t>>(table->columns[1].values)[5], static_cast<int64_t>(1) << 40);

  // Read-only means read-only.
  EXPECT_EQ((*store)->UpsertJob(Job("x1", JobStatus::kDone)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*store)->ReadMetric("aaaa1111", "nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*store)->ReadRun("../etc").status().code(), StatusCode::kNotFound);
}

TEST(ResultStoreTest, ReopenForAppendKeepsJobRowsAndMetrics) {
  ScratchDir dir("store-append");
  const std::string path = dir.File("results.h5");
  {
    auto store = ResultStore::Create(path, SampleInfo());
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->UpsertJob(Job("j1", JobStatus::kRunning)).ok());
    ASSERT_TRUE((*store)->BeginRun({"j1", "s", "k", "{}", 1, {}, {}}).ok());
    std::vector<MetricPoint> p = {{0, 1.0}, {1, 0.5}};
    ASSERT_TRUE((*store)->AppendMetrics("j1", "loss", p).ok());
    ASSERT_TRUE((*store)->Close().ok());
  }
  {
    auto store = ResultStore::Open(path, ResultStore::Mode::kReadWrite);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->UpsertJob(Job("j1", JobStatus::kDone)).ok());
    ASSERT_TRUE((*store)->UpsertJob(Job("j2", JobStatus::kPending)).ok());
    std::vector<MetricPoint> p = {{2, 0.25}};
    ASSERT_TRUE((*store)->AppendMetrics("j1", "loss", p).ok());
    // A read on a writable store sees buffered points.
    auto seen = (*store)->ReadMetric("j1", "loss");
    ASSERT_TRUE(seen.ok());
    EXPECT_EQ(seen->size(), 3u);
    ASSERT_TRUE((*store)->Close().ok());
  }
  auto store = ResultStore::Open(path, ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->ReadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].status, JobStatus::kDone);
  auto final_loss = (*store)->ReadMetric("j1", "loss");
  ASSERT_TRUE(final_loss.ok());
  EXPECT_EQ(*final_loss, (std::vector<MetricPoint>{{0, 1.0}, {1, 0.5}, {2, 0.25}}));
}

TEST(ResultStoreTest, RefusesToOverwrite) {
  ScratchDir dir("store-exists");
  const std::string path = dir.File("results.h5");
  ASSERT_TRUE(ResultStore::Create(path, SampleInfo()).ok());
  auto again = ResultStore::Create(path, SampleInfo());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
}

TEST(ResultStoreTest, CreateInMissingDirectoryCarriesHdf5Stack) {
  ScratchDir dir("store-nodir");
  auto store = ResultStore::Create(dir.File("no/such/dir/results.h5"), SampleInfo());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find("H5Fcreate"), std::string::npos) << store.status().message();
  EXPECT_NE(store.status().message().find("unable to"), std::string::npos) << store.status().message();
}

TEST(ResultStoreTest, BadFilesGiveClearErrors) {
  ScratchDir dir("store-bad");
  EXPECT_EQ(ResultStore::Open(dir.File("missing.h5"), ResultStore::Mode::kReadOnly).status().code(),
            StatusCode::kNotFound);

  testing::WriteFile(dir.File("text.h5"), "this is not HDF5\n");
  auto text = ResultStore::Open(dir.File("text.h5"), ResultStore::Mode::kReadOnly);
  EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("not an HDF5 file"), std::string::npos);

  // A newer layout is refused with advice.
  ExperimentInfo newer = SampleInfo();
  newer.layout_version = kLayoutVersion + 1;
  ASSERT_TRUE(ResultStore::Create(dir.File("newer.h5"), newer).ok());
  auto opened = ResultStore::Open(dir.File("newer.h5"), ResultStore::Mode::kReadOnly);
  EXPECT_EQ(opened.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(opened.status().message().find("upgrade shammie"), std::string::npos) << opened.status().message();

  // Truncated: a real store cut in half, then to the superblock only.
  const std::string good = dir.File("good.h5");
  {
    auto store = ResultStore::Create(good, SampleInfo());
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->BeginRun({"j1", "s", "k", "{}", 1, {}, {}}).ok());
    std::vector<MetricPoint> p(20000, MetricPoint{1, 2.0});
    ASSERT_TRUE((*store)->AppendMetrics("j1", "loss", p).ok());
    ASSERT_TRUE((*store)->Close().ok());
  }
  const auto size = std::filesystem::file_size(good);
  for (auto cut : {size / 2, std::uintmax_t{100}}) {
    const std::string truncated = dir.File("truncated-" + std::to_string(cut) + ".h5");
    std::filesystem::copy_file(good, truncated);
    std::filesystem::resize_file(truncated, cut);
    auto t = ResultStore::Open(truncated, ResultStore::Mode::kReadOnly);
    ASSERT_FALSE(t.ok()) << "cut at " << cut;
    EXPECT_EQ(t.status().code(), StatusCode::kDataLoss) << t.status().ToString();
    EXPECT_NE(t.status().message().find("truncated"), std::string::npos) << t.status().message();
  }
}

TEST(ResultStoreTest, RejectsBadNamesAndTables) {
  ScratchDir dir("store-names");
  auto store = ResultStore::Create(dir.File("r.h5"), SampleInfo());
  ASSERT_TRUE(store.ok());
  std::vector<MetricPoint> p = {{0, 1}};
  EXPECT_EQ((*store)->AppendMetrics("j1", "loss", p).code(), StatusCode::kFailedPrecondition) << "before BeginRun";
  ASSERT_TRUE((*store)->BeginRun({"j1", "s", "k", "{}", 1, {}, {}}).ok());
  EXPECT_EQ((*store)->AppendMetrics("j1", "a/b", p).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->AppendMetrics("j1", "", p).code(), StatusCode::kInvalidArgument);
  Table ragged;
  ragged.columns.push_back({"a", std::vector<double>{1, 2}});
  ragged.columns.push_back({"b", std::vector<int64_t>{1}});
  EXPECT_EQ((*store)->AppendTable("j1", "t", ragged).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*store)->AppendTable("j1", "t", SampleTable(0)).ok());
  Table other;
  other.columns.push_back({"score", std::vector<int64_t>{1}});
  EXPECT_EQ((*store)->AppendTable("j1", "t", other).code(), StatusCode::kInvalidArgument) << "schema mismatch";
}

}  // namespace
}  // namespace shammie::storage
