// Conformal language modeling end to end: `shammie run` trains a small
// arithmetic-chain generator with LibTorch and samples 10 answers for each of
// 600 test prompts under mpirun; `shammie analyze` calibrates the sets over
// random splits (experiments/configs/conformal-lm-smoke.toml). Checks the
// claims of docs/experiments/conformal-lm.md on this fixed seed: violations
// stay within delta, levels above the floor certify, the mean realised risk
// stays below epsilon, looser levels need fewer samples, Max stops sooner
// than First-K, rejection shrinks the sets, the component-level sets keep
// most correct steps. The same seed trains a slightly different generator on
// CPUs with other SIMD kernels, so no check depends on its exact quality.
// Label `mpi`.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

#include "storage/result_store.hpp"
#include "tests/table_column.hpp"
#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

using testing::Column;
using testing::ScratchDir;

const std::string kShammie =
    std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";

TEST(ClmRunTest, SmokeStudyCalibratesSetsOfSampledAnswers) {
  ScratchDir scratch("clm-smoke");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(
      kShammie +
      " run " SHAMMIE_SOURCE_DIR
      "/experiments/configs/conformal-lm-smoke.toml --out " +
      dir + " --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto analyze = testing::RunCommand(kShammie + " analyze " + dir +
                                     " --report " + dir + "/report");
  ASSERT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  for (const std::string png : {"sets-risk.png", "sets-set-size.png",
                                "sets-samples.png", "sets-components.png"}) {
    EXPECT_GT(testing::ReadFileText(dir + "/report/" + png).size(), 1000u)
        << png;
  }
  auto store = storage::ResultStore::Open(
      dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());

  // The floor, from the samples themselves: the share of prompts none of whose
  // 10 samples is acceptable. No epsilon below it can be met, and one a
  // little above it can be met only on some splits. The generator's quality
  // (so the floor) moves with the CPU's floating-point kernels (measured 0.01
  // to 0.04 here), so the levels below are checked relative to it.
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  double floor = -1;
  for (const auto &r : *runs) {
    if (r.stage != "sample")
      continue;
    auto samples_table = (*store)->ReadTable(r.job_id, "samples");
    ASSERT_TRUE(samples_table.ok()) << samples_table.status().ToString();
    const auto &prompt = Column<int64_t>(*samples_table, "prompt_index");
    const auto &correct = Column<int64_t>(*samples_table, "correct");
    std::map<int64_t, bool> any;
    for (size_t i = 0; i < prompt.size(); ++i)
      any[prompt[i]] = any[prompt[i]] || correct[i] != 0;
    ASSERT_EQ(any.size(), 600u);
    int64_t none = 0;
    for (const auto &[p, ok] : any)
      none += ok ? 0 : 1;
    floor = static_cast<double>(none) / static_cast<double>(any.size());
  }
  ASSERT_GE(floor, 0.0) << "no sample stage";
  // The generator is trained past its transition
  // (docs/experiments/conformal-lm.md): most prompts have an acceptable sample
  // among 10.
  ASSERT_LT(floor, 0.08);

  auto sets = (*store)->ReadAnalysis("sets");
  ASSERT_TRUE(sets.ok()) << sets.status().ToString();
  const storage::Table &t = sets->second;
  const auto &method = Column<std::string>(t, "method");
  const auto &epsilon = Column<double>(t, "epsilon");
  const auto &certified = Column<int64_t>(t, "certified");
  const auto &violation = Column<double>(t, "violation_rate");
  const auto &risk = Column<double>(t, "risk");
  const auto &samples = Column<double>(t, "samples");
  const auto &set_size = Column<double>(t, "set_size");
  ASSERT_EQ(method.size(), 24u); // 6 methods x 4 epsilons
  // 40 splits. "Most splits certify" = at least 35; the mean realised risk is
  // compared with epsilon only there: over a handful of certified splits it is
  // the risk of the splits that got lucky calibration halves, which the
  // guarantee does not bound.
  constexpr int64_t kMost = 35;
  std::map<std::pair<std::string, double>, size_t> row;
  for (size_t i = 0; i < method.size(); ++i) {
    row[{method[i], epsilon[i]}] = i;
    // The guarantee: violations within delta = 0.1 up to 3 Monte-Carlo
    // standard errors of 40 splits (plus test noise, see the analysis output).
    EXPECT_LE(violation[i], 0.1 + 3 * std::sqrt(0.1 * 0.9 / 40))
        << method[i] << " " << epsilon[i];
    if (certified[i] >= kMost) {
      EXPECT_LE(risk[i], epsilon[i]) << method[i] << " " << epsilon[i];
    }
    // Reachable levels certify: 0.1 above the floor is more than 4 standard
    // errors of a 300-prompt calibration risk (<= 0.023 at epsilon <= 0.3).
    if (epsilon[i] >= floor + 0.1) {
      EXPECT_GE(certified[i], kMost)
          << method[i] << " " << epsilon[i] << " floor " << floor;
    }
  }
  auto at = [&](const std::string &m, double e) { return row.at({m, e}); };
  auto both = [&](size_t a, size_t b) {
    return certified[a] >= kMost && certified[b] >= kMost;
  };
  int compared = 0;
  for (const std::string m : {"first-k", "max", "sum", "first-k+reject",
                              "max+reject", "sum+reject"}) {
    // Looser levels stop sooner: 0.3 against the tightest level that most
    // splits certify (0.1 sits close to the floor on some kernel families:
    // 0.067 with SSE kernels, where 15-28 of 40 splits certified it).
    for (double tight : {0.1, 0.15}) {
      if (!both(at(m, 0.3), at(m, tight)))
        continue;
      EXPECT_LT(samples[at(m, 0.3)], samples[at(m, tight)]) << m << " " << tight;
      ++compared;
      break;
    }
  }
  EXPECT_GE(compared, 4);
  compared = 0;
  for (double e : {0.1, 0.15, 0.2, 0.3}) {
    if (!both(at("max", e), at("first-k", e)))
      continue;
    // Quality-based stopping draws fewer samples than First-K at tight levels
    // (measured 3.0-3.8 vs 5.0-8.0 at epsilon 0.1; at 0.3 both draw about 3).
    if (e <= 0.15) {
      EXPECT_LT(samples[at("max", e)], 0.85 * samples[at("first-k", e)]) << e;
    }
    // Rejecting low-quality and duplicate samples shrinks the sets (measured
    // 1.0 to 2.0 vs 2.9 to 8.0).
    if (certified[at("max+reject", e)] >= kMost) {
      EXPECT_LT(set_size[at("max+reject", e)],
                0.85 * set_size[at("first-k", e)])
          << e;
    }
    ++compared;
  }
  EXPECT_GE(compared, 3);

  auto components = (*store)->ReadAnalysis("sets-components");
  ASSERT_TRUE(components.ok()) << components.status().ToString();
  const storage::Table &c = components->second;
  const auto &c_eps = Column<double>(c, "epsilon");
  const auto &c_certified = Column<int64_t>(c, "certified");
  const auto &c_risk = Column<double>(c, "risk");
  const auto &c_recall = Column<double>(c, "recall");
  ASSERT_EQ(c_eps.size(), 4u);
  for (size_t i = 0; i < c_eps.size(); ++i) {
    if (c_certified[i] >= kMost) {
      EXPECT_LE(c_risk[i], c_eps[i]) << c_eps[i];
    }
  }
  EXPECT_LT(c_recall.front(), c_recall.back());
  // At epsilon 0.2 most correct steps are kept (measured 0.96).
  EXPECT_GT(c_recall[2], 0.8);
}

} // namespace
} // namespace shammie::orchestrator
