#include "analysis/metric_summary.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/test_util.hpp"

namespace shammie::analysis {
namespace {

using storage::MetricPoint;
using storage::ResultStore;

TEST(MetricSummaryTest, LastMinMaxAndBest) {
  testing::ScratchDir dir("summary");
  storage::ExperimentInfo info;
  info.experiment = "s";
  auto store = ResultStore::Create(dir.File("r.h5"), info);
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  ASSERT_TRUE(s.BeginRun({"a1", "train", "toy.quadratic", R"({"lr":0.1})", 1, {}}).ok());
  ASSERT_TRUE(s.BeginRun({"b2", "train", "toy.quadratic", R"({"lr":0.5})", 1, {}}).ok());
  ASSERT_TRUE(s.BeginRun({"c3", "eval", "bench.noop", "{}", 1, {}}).ok());
  std::vector<MetricPoint> a = {{0, 4.0}, {10, 1.0}, {20, 2.0}};
  std::vector<MetricPoint> b = {{0, 4.0}, {10, 0.5}};
  std::vector<MetricPoint> c = {{0, 9.0}};
  ASSERT_TRUE(s.AppendMetrics("a1", "loss", a).ok());
  ASSERT_TRUE(s.AppendMetrics("b2", "loss", b).ok());
  ASSERT_TRUE(s.AppendMetrics("c3", "loss", c).ok());

  auto rows = SummarizeMetric(s, "loss", std::string("train"));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].job_id, "a1");
  EXPECT_EQ((*rows)[0].points, 3);
  EXPECT_EQ((*rows)[0].last_step, 20);
  EXPECT_EQ((*rows)[0].last_value, 2.0);
  EXPECT_EQ((*rows)[0].min_value, 1.0);
  EXPECT_EQ((*rows)[0].max_value, 4.0);
  auto best = BestByLastValue(*rows, /*minimize=*/true);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->job_id, "b2");
  EXPECT_EQ(BestByLastValue(*rows, false)->job_id, "a1");
  EXPECT_EQ(SummarizeMetric(s, "loss")->size(), 3u);
  EXPECT_TRUE(SummarizeMetric(s, "accuracy")->empty());
  EXPECT_FALSE(BestByLastValue({}, true).has_value());

  // Two seeds of the lr = 0.1 point and one of lr = 0.5.
  ASSERT_TRUE(s.BeginRun({"d4", "train", "toy.quadratic", R"({"lr":0.1})", 2, {}}).ok());
  std::vector<MetricPoint> d = {{0, 4.0}, {20, 3.0}};
  ASSERT_TRUE(s.AppendMetrics("d4", "loss", d).ok());
  auto train = SummarizeMetric(s, "loss", std::string("train"));
  ASSERT_TRUE(train.ok());
  auto by_config = SummarizeOverSeeds(*train, 0.05);
  ASSERT_TRUE(by_config.ok());
  ASSERT_EQ(by_config->size(), 2u);
  EXPECT_EQ((*by_config)[0].config_json, R"({"lr":0.1})");
  EXPECT_EQ((*by_config)[0].seeds, 2u);
  EXPECT_DOUBLE_EQ((*by_config)[0].mean, 2.5);  // last values 2.0 and 3.0
  // t_{0.975, 1} = 12.706: half-width 12.706 * sd / sqrt(2) with sd = 0.7071.
  EXPECT_NEAR((*by_config)[0].upper - 2.5, 12.7062 * std::sqrt(0.5) / std::sqrt(2.0), 1e-3);
  EXPECT_EQ((*by_config)[1].seeds, 1u);

  std::vector<MetricPoint> bad = {{30, std::nan("")}};
  ASSERT_TRUE(s.AppendMetrics("a1", "loss", bad).ok());
  auto with_nan = SummarizeMetric(s, "loss");
  EXPECT_EQ(with_nan.status().code(), common::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace shammie::analysis
