// Risk-controlling adaptive sweeps end to end: `shammie run` under mpirun
// trains an early-exit transformer with LibTorch, the controller proposes
// risk-bo and bo rounds from the jobs' results, and `shammie analyze` picks
// the cheapest certified configuration (experiments/configs/risk-bo-smoke.toml).
// Checks: the budgets, the full-model oracle (threshold 1, no pruning: no
// loss at full cost), the guarantee over random splits, and that a second
// run proposes the same points and runs nothing. Label `mpi`.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "storage/result_store.hpp"
#include "tests/table_column.hpp"
#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

using testing::Column;
using testing::ScratchDir;

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";


TEST(RiskBoRunTest, SmokeStudySearchesAdaptivelyAndCertifiesItsChoice) {
  ScratchDir scratch("risk-bo-smoke");
  const std::string dir = scratch.File("run");
  const std::string run_cmd =
      kShammie + " run " SHAMMIE_SOURCE_DIR "/experiments/configs/risk-bo-smoke.toml --out " + dir + " --progress plain";
  auto run = testing::RunCommand(run_cmd);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("stage risk-bo round 4: 2 new points"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("35 jobs: 35 done"), std::string::npos) << run.output;  // 1 + 12 + 8 + 12 + 2

  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  std::map<std::string, int> per_stage;
  for (const auto& r : *runs) {
    ++per_stage[r.stage];
    if (r.stage != "grid") continue;
    // The oracle: threshold 1 and no pruning is the full model itself.
    const auto config = nlohmann::json::parse(r.config_json);
    if (config["threshold"].get<double>() != 1.0) continue;
    auto table = (*store)->ReadTable(r.job_id, "losses");
    ASSERT_TRUE(table.ok());
    for (int64_t l : Column<int64_t>(*table, "loss")) EXPECT_EQ(l, 0);
    for (double c : Column<double>(*table, "cost")) EXPECT_EQ(c, 1.0);
    auto acc = (*store)->ReadMetric(r.job_id, "val_accuracy");
    auto full = (*store)->ReadMetric(r.job_id, "val_full_accuracy");
    ASSERT_TRUE(acc.ok() && full.ok());
    EXPECT_EQ(acc->back().value, full->back().value);
  }
  EXPECT_EQ(per_stage["model"], 1);
  EXPECT_EQ(per_stage["risk-bo"], 12);  // the budget, initial design included
  EXPECT_EQ(per_stage["bo"], 8);
  EXPECT_EQ(per_stage["random"], 12);
  EXPECT_EQ(per_stage["grid"], 2);
  store->reset();

  auto analyze = testing::RunCommand(kShammie + " analyze " + dir + " --report " + dir + "/report");
  ASSERT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  const auto summary = nlohmann::json::parse(testing::ReadFileText(dir + "/report/summary.json"));
  for (const std::string name : {"select-risk-bo", "select-random"}) {
    const auto& r = summary["analyses"][name]["result"];
    ASSERT_TRUE(r["selected"].is_object()) << name;
    EXPECT_LE(r["selected"]["cal_risk"].get<double>(), 0.05) << name;
    // Far below the full model's cost (measured 0.144 and 0.146).
    EXPECT_LT(r["selected"]["cal_cost"].get<double>(), 0.3) << name;
    // The guarantee over 100 random halvings: violations <= delta (measured 0).
    EXPECT_EQ(r["trials"]["certified"].get<int>(), 100) << name;
    EXPECT_LE(r["trials"]["violation_rate"].get<double>(), 0.1 + 3 * std::sqrt(0.1 * 0.9 / 100)) << name;
    EXPECT_LE(r["trials"]["test_risk"].get<double>(), 0.05) << name;
  }

  // The same results give the same proposals: a second run runs nothing.
  auto again = testing::RunCommand(run_cmd);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("; 0 attempts"), std::string::npos) << again.output;
}

}  // namespace
}  // namespace shammie::orchestrator
