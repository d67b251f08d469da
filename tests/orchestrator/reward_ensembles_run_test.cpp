// Reward-model ensembles end to end under mpirun
// (experiments/configs/reward-ensembles-smoke.toml): every rm kind runs
// through the engine and the LibTorch plugin, results.h5 holds their
// tables, and `shammie analyze` draws the curves. Checks what holds whatever
// the small models learn:
// - the ensembles have the documented members (single 1, finetune = the
//   fine-tunes of one backbone, pretrain = one per backbone);
// - best-of-1 is the SFT policy itself under every aggregation, and one
//   member makes every aggregation the same;
// - the picked proxy reward never falls with n (a max over a union of
//   groups), and the gold of every pick is the letter F1 of its response;
// - RL starts at KL 0 (the policy is the SFT model).
// And two of the paper's claims, with wide margins: the length hack survives
// every ensemble type and aggregation, and pretrain-ensemble members are
// more diverse than finetune-ensemble members. A second test checks the
// gold ordering of the ensemble types on a fixed seed at 5 x 5.
// Label `mpi`.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/result_store.hpp"
#include "tests/table_column.hpp"
#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

using testing::Column;
using testing::ScratchDir;

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";

TEST(RewardEnsemblesRunTest, SmokeStudyRunsEveryKindAndKeepsTheExactParts) {
  ScratchDir scratch("reward-ensembles-smoke");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " SHAMMIE_SOURCE_DIR
                                 "/experiments/configs/reward-ensembles-smoke.toml --out " + dir + " --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto analyze = testing::RunCommand(kShammie + " analyze " + dir + " --report " + dir + "/report");
  ASSERT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  EXPECT_GT(testing::ReadFileText(dir + "/report/bon-gold.png").size(), 1000u);
  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  std::map<std::string, int> per_stage;
  std::map<std::string, double> correlation;  // member_correlation_sft by ensemble type
  std::vector<double> sft_gold_of_rerank;
  double pool_sft_gold = NAN;
  auto last = [&](const std::string& job, const std::string& metric) {
    auto m = (*store)->ReadMetric(job, metric);
    EXPECT_TRUE(m.ok() && !m->empty()) << job << " " << metric;
    return m.ok() && !m->empty() ? m->back().value : NAN;
  };
  for (const auto& r : *runs) {
    ++per_stage[r.stage];
    const nlohmann::json config = nlohmann::json::parse(r.config_json);
    if (r.stage == "prefs") {
      auto t = (*store)->ReadTable(r.job_id, "pairs");
      ASSERT_TRUE(t.ok());
      EXPECT_GT(t->num_rows(), 250u);
      const auto& y1 = Column<std::string>(*t, "response_1");
      const auto& y2 = Column<std::string>(*t, "response_2");
      for (size_t i = 0; i < y1.size(); ++i) EXPECT_NE(y1[i], y2[i]) << "identical pairs are dropped";
    }
    if (r.stage == "rerank") {
      const std::string ensemble = config["ensemble"].get<std::string>();
      EXPECT_EQ(last(r.job_id, "members"), ensemble == "single" ? 1 : 3) << ensemble;
      // every_ensemble over 3 backbones x 3 fine-tunes: 9 singles, 3
      // finetune ensembles, 3^3 pretrain ensembles.
      EXPECT_EQ(last(r.job_id, "ensembles"), ensemble == "single" ? 9 : ensemble == "finetune" ? 3 : 27) << ensemble;
      if (ensemble != "single") correlation[ensemble] = last(r.job_id, "member_correlation_sft");
      const double sft_gold = last(r.job_id, "sft_gold");
      for (const std::string agg : {"mean", "median", "min", "mean_minus_std"}) {
        auto gold = (*store)->ReadMetric(r.job_id, agg + "_gold");
        auto proxy = (*store)->ReadMetric(r.job_id, agg + "_proxy");
        ASSERT_TRUE(gold.ok() && proxy.ok());
        ASSERT_EQ(gold->size(), 5u);  // n = 1, 2, 4, 8, 16
        EXPECT_NEAR(gold->front().value, sft_gold, 1e-12) << "best-of-1 is the policy";
        for (size_t i = 1; i < proxy->size(); ++i) EXPECT_GE((*proxy)[i].value, (*proxy)[i - 1].value - 1e-9) << agg;
        // The length hack survives every ensemble and aggregation: the
        // picks' share of over-long responses rises with n (by 0.26-0.32
        // over three experiment seeds; the bound leaves 0.11 of margin).
        auto hack = (*store)->ReadMetric(r.job_id, agg + "_hack");
        ASSERT_TRUE(hack.ok() && hack->size() == 5u);
        EXPECT_GT(hack->back().value, hack->front().value + 0.15) << ensemble << " " << agg;
        if (ensemble == "single") {
          auto mean = (*store)->ReadMetric(r.job_id, "mean_gold");
          for (size_t i = 0; i < gold->size(); ++i) EXPECT_EQ((*gold)[i].value, (*mean)[i].value) << agg;
        }
      }
      sft_gold_of_rerank.push_back(sft_gold);
    }
    if (r.stage == "bon") {  // the shared pool: every sample scored once by all 9 reward models
      EXPECT_EQ(last(r.job_id, "reward_models"), 9);
      auto t = (*store)->ReadTable(r.job_id, "samples");
      ASSERT_TRUE(t.ok());
      EXPECT_EQ(t->num_rows(), 40u * 16u);
      EXPECT_EQ(t->columns.size(), 6u + 9u);
      const auto& response = Column<std::string>(*t, "response");
      const auto& gold = Column<double>(*t, "gold");
      const auto& length = Column<double>(*t, "length");
      double mean = 0;
      for (size_t i = 0; i < response.size(); ++i) {
        EXPECT_EQ(length[i], static_cast<double>(response[i].size()));
        EXPECT_GE(gold[i], 0);
        EXPECT_LE(gold[i], 1);
        mean += gold[i] / static_cast<double>(response.size());
      }
      EXPECT_NEAR(mean, last(r.job_id, "sft_gold"), 1e-9);
      pool_sft_gold = last(r.job_id, "sft_gold");
    }
    if (r.stage == "rl") {
      auto kl = (*store)->ReadMetric(r.job_id, "kl");
      ASSERT_TRUE(kl.ok());
      ASSERT_EQ(kl->size(), 3u);  // steps 0, 5, 10
      EXPECT_NEAR(kl->front().value, 0, 1e-4) << "the policy starts as the SFT model";
      const double decreases = last(r.job_id, "eval_reward_decreases");
      EXPECT_GE(decreases, 0);
      EXPECT_LE(decreases, 1);
    }
  }
  EXPECT_EQ(per_stage, (std::map<std::string, int>{{"bon", 1}, {"eval-pretrain", 1}, {"eval-rm", 1}, {"prefs", 1},
                                                   {"pretrain", 3}, {"rerank", 3}, {"rl", 1}, {"rm", 9}, {"sft", 1}}));
  ASSERT_EQ(sft_gold_of_rerank.size(), 3u);
  for (double g : sft_gold_of_rerank) EXPECT_EQ(g, pool_sft_gold) << "every rerank job reads the one pool";
  // The diversity behind the paper's "pretrain > finetune": fine-tunes of one
  // backbone share its frozen first block and agree more than fine-tunes of
  // different backbones (gaps of 0.14-0.26 over three experiment seeds; the
  // bound is half the smallest).
  ASSERT_EQ(correlation.size(), 2u);
  EXPECT_GT(correlation["finetune"], correlation["pretrain"] + 0.07);
  EXPECT_TRUE((*store)->ReadAnalysis("bon-gold").ok());
}

// The paper's ordering under best-of-n, pretrain > finetune > single, on a
// fixed seed where the preference data allows it
// (experiments/configs/reward-ensembles-ordering.toml: 5 x 5 reward models,
// about two minutes). Gold F1 of the picks, mean aggregation, averaged over
// n = 2..16; measured here (2026-11-29): pretrain - finetune 0.0140,
// finetune - single 0.0066, with each gap positive at every n. The bounds,
// 0.005 and 0.001, leave room for another CPU's rounding, which moved seed
// 2026's default-size values by up to 0.005. On other data the order can
// fail (seed 11 is a documented herding case), so this guards the mechanism
// on one data set and does not claim the order holds on every one.
TEST(RewardEnsemblesRunTest, PretrainBeatsFinetuneBeatsSingleOnAFixedSeed) {
  ScratchDir scratch("reward-ensembles-ordering");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " SHAMMIE_SOURCE_DIR
                                 "/experiments/configs/reward-ensembles-ordering.toml --out " + dir +
                                 " --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  std::map<std::string, std::vector<double>> gold;  // mean_gold at n = 1, 2, 4, 8, 16, by ensemble type
  for (const auto& r : *runs) {
    if (r.stage != "rerank") continue;
    const std::string ensemble = nlohmann::json::parse(r.config_json)["ensemble"].get<std::string>();
    auto m = (*store)->ReadMetric(r.job_id, "mean_gold");
    ASSERT_TRUE(m.ok());
    for (const auto& point : *m) gold[ensemble].push_back(point.value);
  }
  ASSERT_EQ(gold.size(), 3u);
  for (const auto& [ensemble, g] : gold) ASSERT_EQ(g.size(), 5u) << ensemble;
  auto mean_over_n = [&](const std::string& ensemble) {
    double sum = 0;
    for (size_t i = 1; i < 5; ++i) sum += gold[ensemble][i] / 4;
    return sum;
  };
  const double single = mean_over_n("single"), finetune = mean_over_n("finetune"),
               pretrain = mean_over_n("pretrain");
  std::cout << "gold over n = 2..16: single " << single << ", finetune " << finetune << ", pretrain " << pretrain
            << std::endl;
  EXPECT_NEAR(gold["single"][0], gold["pretrain"][0], 1e-12) << "best-of-1 is the policy for every ensemble";
  EXPECT_GT(pretrain, finetune + 0.005);
  EXPECT_GT(finetune, single + 0.001);
}

}  // namespace
}  // namespace shammie::orchestrator
