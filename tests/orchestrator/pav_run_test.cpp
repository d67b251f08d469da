// Process advantage verifiers end to end under mpirun
// (experiments/configs/pav-smoke.toml): every pav kind runs through the
// engine and the LibTorch plugin, results.h5 holds their tables, and
// `shammie analyze` draws the curves. Checks what holds whatever the small
// models learn: the prover's exact value, Monte-Carlo values as shares of
// completions, complete answers with their exact outcome, pass@N never
// falling with N, best-of-1 equal to pass@1, alpha = 0 ignoring the prover.
// Label `mpi`.
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

TEST(PavRunTest, SmokeStudyRunsEveryKindAndKeepsTheExactParts) {
  ScratchDir scratch("pav-smoke");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " SHAMMIE_SOURCE_DIR "/experiments/configs/pav-smoke.toml --out " + dir +
                                 " --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto analyze = testing::RunCommand(kShammie + " analyze " + dir + " --report " + dir + "/report");
  ASSERT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  for (const std::string png : {"didactic.png", "search.png", "rl.png"}) {
    EXPECT_GT(testing::ReadFileText(dir + "/report/" + png).size(), 1000u) << png;
  }
  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  std::map<std::string, int> per_stage;
  std::vector<std::vector<storage::MetricPoint>> didactic_success;
  for (const auto& r : *runs) {
    ++per_stage[r.stage];
    const nlohmann::json config = nlohmann::json::parse(r.config_json);
    if (r.stage == "didactic") {
      auto v = (*store)->ReadMetric(r.job_id, "prover_value");
      ASSERT_TRUE(v.ok());
      EXPECT_NEAR(v->back().value, 0.186891, 5e-7) << "V^mu(empty prefix), gamma = 10 (PAPERS.md §2(f))";
      auto success = (*store)->ReadMetric(r.job_id, "success");
      ASSERT_TRUE(success.ok());
      EXPECT_EQ(success->size(), 4u);  // iterations 0, 20, 40, 60
    }
    if (r.stage == "rollouts") {
      auto t = (*store)->ReadTable(r.job_id, "values");
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      const auto& q = Column<double>(*t, "q");
      const auto& final = Column<int64_t>(*t, "final");
      int64_t finals = 0;
      for (size_t i = 0; i < q.size(); ++i) {
        if (final[i]) {
          ++finals;
          EXPECT_TRUE(q[i] == 0 || q[i] == 1);
        } else {
          EXPECT_DOUBLE_EQ(q[i] * 4, std::round(q[i] * 4));
        }
      }
      EXPECT_EQ(finals, 40 * 2);
    }
    if (r.stage == "best-of-n") {
      auto pass = (*store)->ReadMetric(r.job_id, "pass_at_n");
      auto acc = (*store)->ReadMetric(r.job_id, "accuracy_at_n");
      ASSERT_TRUE(pass.ok() && acc.ok());
      ASSERT_EQ(pass->size(), 4u);  // N = 1, 2, 4, 8
      for (size_t i = 1; i < pass->size(); ++i) EXPECT_GE((*pass)[i].value, (*pass)[i - 1].value);
      EXPECT_DOUBLE_EQ((*acc)[0].value, (*pass)[0].value);
      auto t = (*store)->ReadTable(r.job_id, "search");
      ASSERT_TRUE(t.ok());
      EXPECT_EQ(Column<int64_t>(*t, "correct").size(), 60u);
    }
    if (r.stage == "rl") {
      auto acc = (*store)->ReadMetric(r.job_id, "accuracy");
      ASSERT_TRUE(acc.ok());
      EXPECT_EQ(acc->front().step, 0);
      EXPECT_EQ(acc->back().step, 10 * 8 * 4) << "steps count the RL samples drawn";
    }
  }
  EXPECT_EQ(per_stage, (std::map<std::string, int>{{"beam", 2}, {"best-of-n", 1}, {"didactic", 2}, {"policy", 1},
                                                   {"rl", 2}, {"rollouts", 2}, {"verifier", 1}}));
  for (const std::string name : {"didactic", "search", "rl"}) {
    auto a = (*store)->ReadAnalysis(name);
    EXPECT_TRUE(a.ok()) << name << ": " << a.status().ToString();
  }
}

}  // namespace
}  // namespace shammie::orchestrator
