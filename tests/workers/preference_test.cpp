// The preference-optimization study's exact parts (workers/preference.hpp)
// against closed forms: the worked values of PAPERS.md §5(f) and §7(f), the
// RLHF optimum pi_ref exp(r / beta) / Z, Bradley-Terry label frequencies by
// simulation, and the pessimistic objective's choice of the family member
// nearest pi_ref in forward KL. Then the three kinds chained through
// artifacts.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "tests/test_util.hpp"
#include "tests/workers/kind_config.hpp"
#include "workers/job_kind.hpp"
#include "workers/local_context.hpp"
#include "workers/preference.hpp"

namespace shammie::workers::pref {
namespace {

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

TEST(PreferenceLossTest, MatchesTheWorkedValues) {
  // beta = 0.1, log pi(w) = -10, log pi(l) = -12, log pi_ref(w) = -11, log pi_ref(l) = -11.5.
  const double hw = -10 - -11.0, hl = -12 - -11.5;
  EXPECT_NEAR(0.1 * (hw - hl), 0.15, 1e-15);
  EXPECT_NEAR(DpoLoss(0.1, hw, hl), 0.620957, 5e-7);
  EXPECT_NEAR(DistillLoss(0.1, 0.9, hw, hl), 0.5625, 1e-12);
  EXPECT_NEAR(BradleyTerryLoss(1.2, 0.3), 0.341154, 5e-7);
  EXPECT_NEAR(CenteringPenalty(1.2, 0.3, 0.01), 0.0225, 1e-15);
  // Bradley-Terry is blind to a shift c(x); only the centering term sees it.
  EXPECT_NEAR(BradleyTerryLoss(1.2 + 7, 0.3 + 7), BradleyTerryLoss(1.2, 0.3), 1e-12);
  EXPECT_GT(CenteringPenalty(1.2 + 7, 0.3 + 7, 0.01), 1.0);
  EXPECT_NEAR(LogSigmoid(-800), -800, 1e-9);
  EXPECT_EQ(LogSigmoid(800), 0);
}

TEST(PreferenceLossTest, OptimalPolicyIsTheClosedForm) {
  const std::vector<double> ref(4, std::log(0.25)), r = {1, 0.5, 0, -0.5};
  const double beta = 0.5;
  const std::vector<double> p = OptimalPolicy(ref, r, beta);
  const std::vector<double> want = {0.643914, 0.236883, 0.087144, 0.032059};
  std::vector<double> logp(4);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(p[i], want[i], 5e-7) << i;
    logp[i] = std::log(p[i]);
    // Implicit reward differences relative to y1 are exactly those of r.
    EXPECT_NEAR(beta * (logp[i] - ref[i]) - beta * (logp[0] - ref[0]), r[i] - r[0], 1e-12);
  }
  // beta KL(pi_ref || pi*) = beta log Z - E_ref[r], the pessimistic objective's value.
  double z = 0, mean = 0;
  for (size_t i = 0; i < 4; ++i) {
    z += 0.25 * std::exp(r[i] / beta);
    mean += 0.25 * r[i];
  }
  EXPECT_NEAR(beta * KlDivergence(ref, logp), 0.276948, 5e-7);
  EXPECT_NEAR(beta * KlDivergence(ref, logp), beta * std::log(z) - mean, 1e-12);
}

BanditSpec Spec(int prompts, int responses, double coverage, int pairs, std::vector<double> bias, double spread = 0.5) {
  BanditSpec s;
  s.prompts = prompts;
  s.responses = responses;
  s.coverage = coverage;
  s.pairs_per_prompt = pairs;
  s.bias = std::move(bias);
  s.ref_spread = spread;
  return s;
}

TEST(PreferenceBanditTest, LabelsFollowBradleyTerryOnTheBiasedReward) {
  const Bandit b = MakeBandit(Spec(1, 2, 1.0, 20000, {1.5}, 0.0), 11);
  const double s0 = b.quality[0] + 1.5 * b.length[0], s1 = b.quality[1] + 1.5 * b.length[1];
  const double p = Sigmoid(s0 - s1);
  double wins = 0;
  for (const Pair& pair : b.pairs) wins += pair.winner == 0 ? 1 : 0;
  const double n = static_cast<double>(b.pairs.size());
  EXPECT_NEAR(wins / n, p, 4 * std::sqrt(p * (1 - p) / n));
  EXPECT_NEAR(std::exp(b.ref_logp[0]), 0.5, 1e-12) << "ref_spread 0 is uniform";
}

TEST(PreferenceBanditTest, CoverageLimitsWhichPairsAreComparedAndPoolsAreUsed) {
  const Bandit b = MakeBandit(Spec(5, 10, 0.2, 500, {0.0, 1.0, 2.0}), 3);
  ASSERT_EQ(b.pairs.size(), 2500u);
  std::vector<std::set<std::pair<int, int>>> compared(5);
  std::set<int> pools;
  for (const Pair& p : b.pairs) {
    compared[static_cast<size_t>(p.prompt)].insert({std::min(p.winner, p.loser), std::max(p.winner, p.loser)});
    pools.insert(p.pool);
  }
  for (const auto& c : compared) EXPECT_EQ(c.size(), 9u) << "round(0.2 * 45) comparable pairs, all drawn in 500";
  EXPECT_EQ(pools, (std::set<int>{0, 1, 2}));
  for (int x = 0; x < 5; ++x) {
    double total = 0;
    for (double lp : b.Row(b.ref_logp, x)) total += std::exp(lp);
    EXPECT_NEAR(total, 1, 1e-12);
  }
  const std::string text = BanditToJson(b);
  auto back = BanditFromJson(text);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(BanditToJson(*back), text);
  EXPECT_EQ(BanditToJson(MakeBandit(Spec(5, 10, 0.2, 500, {0.0, 1.0, 2.0}), 3)), text) << "same seed, same bandit";
  EXPECT_NE(BanditToJson(MakeBandit(Spec(5, 10, 0.2, 500, {0.0, 1.0, 2.0}), 4)), text);
}

TEST(PreferenceBanditTest, MalformedArtifactsAreDataLoss) {
  for (const std::string text : {"", "[]", R"({"prompts": 1})",
                                  R"({"prompts":1,"responses":2,"pools":1,"quality":[0,0],"length":[0,0],"ref_logp":[0,0],"pairs":[[0,0,5,0]]})",
                                  R"({"prompts":1,"responses":2,"pools":1,"quality":[0],"length":[0,0],"ref_logp":[0,0],"pairs":[]})"}) {
    auto b = BanditFromJson(text);
    ASSERT_FALSE(b.ok()) << text;
    EXPECT_EQ(b.status().code(), common::StatusCode::kDataLoss) << text;
  }
}

TEST(RewardFitTest, RecoversEachPoolsReward) {
  const Bandit b = MakeBandit(Spec(60, 10, 1.0, 200, {0.0, 2.0}), 8);
  std::vector<size_t> pool0, pool1;
  for (size_t i = 0; i < b.pairs.size(); ++i) (b.pairs[i].pool == 0 ? pool0 : pool1).push_back(i);
  const RewardFit unbiased = FitReward(b, pool0, 0.0, 3000, 0.05);
  const RewardFit biased = FitReward(b, pool1, 0.0, 3000, 0.05);
  EXPECT_NEAR(unbiased.reward.w_quality, 1.0, 0.1);
  EXPECT_NEAR(unbiased.reward.w_length, 0.0, 0.1);
  EXPECT_NEAR(biased.reward.w_quality, 1.0, 0.15);
  EXPECT_NEAR(biased.reward.w_length, 2.0, 0.2);
  // The loss it reports is the mean Bradley-Terry loss of its own reward.
  double loss = 0;
  for (size_t i : pool0) {
    const Pair& p = b.pairs[i];
    loss += BradleyTerryLoss(unbiased.reward(b, b.At(p.prompt, p.winner)), unbiased.reward(b, b.At(p.prompt, p.loser)));
  }
  EXPECT_NEAR(unbiased.loss, loss / static_cast<double>(pool0.size()), 1e-12);
  // eta shrinks the scale (it penalizes r+ + r-, not the margin's sign).
  const RewardFit centered = FitReward(b, pool0, 1.0, 3000, 0.05);
  EXPECT_LT(std::abs(centered.reward.w_quality), std::abs(unbiased.reward.w_quality));
}

// Per prompt, the largest |pi - pi_ref exp(r / beta) / Z| over responses.
double GapToClosedForm(const Bandit& b, const std::vector<double>& logits, const LinearReward& r, double beta) {
  double gap = 0;
  for (int x = 0; x < b.prompts; ++x) {
    std::vector<double> reward;
    for (int y = 0; y < b.responses; ++y) reward.push_back(r(b, b.At(x, y)));
    const auto star = OptimalPolicy(b.Row(b.ref_logp, x), reward, beta);
    const auto lp = LogSoftmax(b.Row(logits, x));
    for (size_t y = 0; y < star.size(); ++y) gap = std::max(gap, std::abs(std::exp(lp[y]) - star[y]));
  }
  return gap;
}

bool Ignore(int, const std::vector<double>&, double, int) { return true; }

TEST(AlignTest, DistillationConvergesToTheClosedFormOfItsMeanReward) {
  const Bandit b = MakeBandit(Spec(3, 5, 1.0, 200, {0.0, 2.0}), 21);
  const std::vector<char> in = b.InData();
  ASSERT_EQ(std::count(in.begin(), in.end(), 1), 15) << "every response compared";
  const std::vector<LinearReward> family = {{1.0, 0.2}, {0.6, 1.4}};
  AlignSpec spec;
  spec.method = Method::kDistill;
  spec.beta = 0.5;
  spec.steps = 4000;
  auto result = Align(b, family, spec, 1000, Ignore);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_LT(GapToClosedForm(b, result->logits, {0.8, 0.8}, spec.beta), 1e-4);
  EXPECT_GT(GapToClosedForm(b, result->logits, family[0], spec.beta), 1e-2) << "not one member's optimum";
}

TEST(AlignTest, PessimismPicksTheMemberNearestTheReferenceInForwardKl) {
  const Bandit b = MakeBandit(Spec(4, 6, 1.0, 300, {0.0}), 5);
  const std::vector<LinearReward> family = {{0.9, 1.6}, {1.0, 0.1}, {0.3, 2.5}};
  const double beta = 0.5;
  // The oracle: beta KL(pi_ref || pi_r), the pessimistic value of member r.
  size_t nearest = 0;
  double best = 1e300;
  for (size_t j = 0; j < family.size(); ++j) {
    double kl = 0;
    for (int x = 0; x < b.prompts; ++x) {
      std::vector<double> reward, logp;
      for (int y = 0; y < b.responses; ++y) reward.push_back(family[j](b, b.At(x, y)));
      for (double p : OptimalPolicy(b.Row(b.ref_logp, x), reward, beta)) logp.push_back(std::log(p));
      kl += beta * KlDivergence(b.Row(b.ref_logp, x), logp);
    }
    if (kl < best) {
      best = kl;
      nearest = j;
    }
  }
  ASSERT_EQ(nearest, 1u);
  AlignSpec spec;
  spec.method = Method::kPessimistic;
  spec.beta = beta;
  spec.gamma = 1e-3;
  spec.steps = 4000;
  int last_member = -1;
  auto result = Align(b, family, spec, 500, [&](int, const std::vector<double>&, double, int member) {
    last_member = member;
    return true;
  });
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->member, 1);
  EXPECT_EQ(last_member, 1);
  EXPECT_LT(GapToClosedForm(b, result->logits, family[1], beta), 0.02);
}

TEST(AlignTest, DpoMarginsGrowWithoutBoundWhileDistillationsSettle) {
  const Bandit b = MakeBandit(Spec(10, 12, 0.3, 15, {0.0, 2.0}), 2);
  const std::vector<LinearReward> family = {{0.8, 0.9}};
  AlignSpec spec;
  spec.beta = 0.5;
  spec.steps = 8000;
  for (Method method : {Method::kDpo, Method::kDistill}) {
    spec.method = method;
    std::vector<double> margins;
    auto result = Align(b, family, spec, 1000, [&](int, const std::vector<double>& logits, double objective, int) {
      margins.push_back(Evaluate(b, logits, spec.beta).margin_mean);
      if (method == Method::kDpo) {
        // The objective it reports is the mean DPO loss of these logits.
        double loss = 0;
        for (const Pair& p : b.pairs) {
          const auto lp = LogSoftmax(b.Row(logits, p.prompt));
          const size_t w = b.At(p.prompt, p.winner), l = b.At(p.prompt, p.loser);
          loss += DpoLoss(spec.beta, lp[static_cast<size_t>(p.winner)] - b.ref_logp[w],
                          lp[static_cast<size_t>(p.loser)] - b.ref_logp[l]);
        }
        EXPECT_NEAR(objective, loss / static_cast<double>(b.pairs.size()), 1e-9);
      }
      return true;
    });
    ASSERT_TRUE(result.ok());
    ASSERT_EQ(margins.size(), 9u);  // steps 0, 1000, ..., 8000
    EXPECT_NEAR(margins[0], 0, 1e-12);
    if (method == Method::kDpo) {
      for (size_t i = 2; i < margins.size(); ++i) EXPECT_GT(margins[i], margins[i - 1] + 0.1) << i;
    } else {
      EXPECT_NEAR(margins[8], margins[4], 1e-3) << "distillation settles on the reward model's margins";
    }
  }
}

TEST(AlignTest, DistillationNeedsARewardModel) {
  const Bandit b = MakeBandit(Spec(2, 4, 1.0, 5, {0.0}), 1);
  AlignSpec spec;
  spec.method = Method::kPessimistic;
  auto result = Align(b, {}, spec, 1, Ignore);
  EXPECT_EQ(result.status().code(), common::StatusCode::kInvalidArgument);
}

TEST(RewardEnsembleTest, AggregationsMatchTheWorkedValues) {
  const std::vector<double> r = {1.2, 0.8, 1.0, 3.5, 0.9};
  EXPECT_NEAR(Aggregate(r, Aggregation::kMean, 1), 1.48, 1e-12);
  EXPECT_NEAR(Aggregate(r, Aggregation::kMedian, 1), 1.0, 1e-12);
  EXPECT_NEAR(Aggregate(r, Aggregation::kMin, 1), 0.8, 1e-12);
  EXPECT_NEAR(Aggregate(r, Aggregation::kMeanMinusStd, 1), 0.461373, 5e-7);
  const std::vector<double> calm = {0.5, 0.6, 0.4, 0.5, 0.55};
  EXPECT_NEAR(Aggregate(calm, Aggregation::kMeanMinusStd, 1), 0.443668, 5e-7);
  // The uncertainty penalty closes the gap between the high-mean outlier and
  // the low-variance candidate from 0.97 (mean) to 0.018 at lambda = 1, and
  // overtakes it by lambda = 1.1 (PAPERS.md §7(f) says "overtakes" at 1: not
  // quite).
  EXPECT_NEAR(Aggregate(r, Aggregation::kMeanMinusStd, 1) - Aggregate(calm, Aggregation::kMeanMinusStd, 1), 0.017705, 5e-6);
  EXPECT_LT(Aggregate(r, Aggregation::kMeanMinusStd, 1.1), Aggregate(calm, Aggregation::kMeanMinusStd, 1.1));
  EXPECT_NEAR(Aggregate(std::vector<double>{3, 1, 2, 10}, Aggregation::kMedian, 1), 2.5, 1e-12);
  for (const auto& name : AggregationNames()) {
    auto a = ParseAggregation(name);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(AggregationNames()[static_cast<size_t>(*a)], name);
  }
  EXPECT_FALSE(ParseAggregation("max").ok());
}

TEST(RewardEnsembleTest, LetterF1PenalizesMissingWrongAndRepeatedLetters) {
  EXPECT_DOUBLE_EQ(LetterF1("abc", "abc"), 1.0);
  EXPECT_DOUBLE_EQ(LetterF1("cab", "abc"), 1.0) << "order does not matter";
  EXPECT_DOUBLE_EQ(LetterF1("", "abc"), 0.0);
  EXPECT_DOUBLE_EQ(LetterF1("xyz", "abc"), 0.0);
  // Recall 2/3, precision 2/2: F1 = 0.8.
  EXPECT_NEAR(LetterF1("ab", "abc"), 0.8, 1e-12);
  // Recall 1, precision 3/5 (two extra letters, wrong or repeated): F1 = 0.75.
  EXPECT_NEAR(LetterF1("abcxy", "abc"), 0.75, 1e-12);
  EXPECT_NEAR(LetterF1("abcab", "abc"), 0.75, 1e-12);
}

// pref.bandit -> pref.rm (two pools) -> pref.align, through artifacts.
TEST(PreferenceKindsTest, ChainThroughArtifacts) {
  testing::ScratchDir scratch("pref-kinds");
  KindRegistry registry;
  RegisterBuiltinKinds(registry);
  auto run = [&](const std::string& kind, const std::string& id, const nlohmann::json& overrides,
                 std::vector<Artifact> inputs, LocalJobContext*& out, std::vector<std::unique_ptr<LocalJobContext>>& keep) {
    keep.push_back(std::make_unique<LocalJobContext>(id, shammie::testing::KindConfig(kind, overrides), 99));
    out = keep.back().get();
    out->set_artifact_dir(scratch.File("artifacts"));
    out->set_inputs(std::move(inputs));
    return registry.Find(kind)->run(*out);
  };
  std::vector<std::unique_ptr<LocalJobContext>> keep;
  LocalJobContext *data = nullptr, *rm0 = nullptr, *rm1 = nullptr, *align = nullptr, *bad = nullptr;
  ASSERT_TRUE(run("pref.bandit", "data", {{"prompts", 6}, {"responses", 8}, {"bias", {0.0, 2.0}}}, {}, data, keep).ok());
  const std::vector<Artifact> bandit = data->recorded();
  ASSERT_EQ(bandit.size(), 1u);
  EXPECT_EQ(data->tables().at("responses").num_rows(), 48u);
  EXPECT_EQ(data->tables().at("pairs").num_rows(), 6u * 20u);
  ASSERT_TRUE(run("pref.rm", "rm0", {{"pool", 0}}, bandit, rm0, keep).ok());
  ASSERT_TRUE(run("pref.rm", "rm1", {{"pool", 1}}, bandit, rm1, keep).ok());
  auto status = run("pref.rm", "rm2", {{"pool", 2}}, bandit, bad, keep);
  EXPECT_EQ(status.code(), common::StatusCode::kInvalidArgument) << "the bandit has two pools";
  EXPECT_NE(status.message().find("2 annotator pools"), std::string::npos) << status.message();
  status = run("pref.align", "lonely", {{"method", "distill"}}, bandit, bad, keep);
  EXPECT_EQ(status.code(), common::StatusCode::kInvalidArgument) << "distillation without reward models";
  std::vector<Artifact> inputs = bandit;
  for (auto* rm : {rm0, rm1}) inputs.push_back(rm->recorded().at(0));
  ASSERT_TRUE(run("pref.align", "align", {{"method", "pessimistic"}, {"steps", 300}, {"eval_every", 100}}, inputs, align, keep).ok());
  EXPECT_EQ(align->metrics().at("gold").size(), 4u);  // steps 0, 100, 200, 300
  EXPECT_EQ(align->metrics().at("family_size").back().value, 2);
  EXPECT_EQ(align->metrics().at("member_pool").back().value, 0) << "the unbiased pool's reward is the flatter one";
  EXPECT_EQ(align->tables().at("policy").num_rows(), 48u);
}

}  // namespace
}  // namespace shammie::workers::pref
