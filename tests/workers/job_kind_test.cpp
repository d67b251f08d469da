#include "workers/job_kind.hpp"

#include <gtest/gtest.h>

namespace shammie::workers {
namespace {

TEST(KindRegistryTest, BuiltinsAreRegisteredWithSchemas) {
  KindRegistry r;
  RegisterBuiltinKinds(r);
  EXPECT_EQ(r.Names(), (std::vector<std::string>{"bench.fail", "bench.noop", "bench.sleep", "toy.quadratic"}));
  const JobKind* q = r.Find("toy.quadratic");
  ASSERT_NE(q, nullptr);
  ASSERT_NE(q->config.Find("learning_rate"), nullptr);
  EXPECT_EQ(q->config.Find("learning_rate")->default_value, 0.1);
  EXPECT_EQ(r.Find("bench.fail")->config.Find("mode")->choices,
            (std::vector<std::string>{"error", "invalid", "crash", "hang"}));
  EXPECT_TRUE(r.Find("bench.noop")->config.keys().empty());
  EXPECT_EQ(r.Find("toy.nope"), nullptr);
}

TEST(KindRegistryTest, RejectsDuplicatesAndBadNames) {
  KindRegistry r;
  EXPECT_TRUE(r.Register({"my.kind", "", {}}).ok());
  EXPECT_EQ(r.Register({"my.kind", "", {}}).code(), common::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.Register({"nodot", "", {}}).code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Register({"bad/name.x", "", {}}).code(), common::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shammie::workers
