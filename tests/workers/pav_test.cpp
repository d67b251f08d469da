// The exact parts of process advantage verifiers (workers/pav.hpp), against
// the values PAPERS.md §2(f) computed, a brute-force enumeration of every
// sequence, and Monte Carlo over the prover's own samples.
#include "workers/pav.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

namespace shammie::workers::pav {
namespace {

TEST(PavTest, BestOfKMatchesTheComputedValues) {
  EXPECT_NEAR(BestOfK(0.2, 2), 0.36, 1e-12);
  EXPECT_NEAR(BestOfK(0.2, 4), 0.5904, 1e-12);
  EXPECT_NEAR(BestOfK(0.2, 8), 0.832228, 1e-6);
  EXPECT_NEAR(BestOfK(0.2, 32), 0.999208, 1e-6);
  EXPECT_NEAR(BestOfK(0.05, 4), 0.185494, 1e-6);
  // A step that moves Q^pi from 0.2 to 0.3, and from 0.8 to 0.9.
  EXPECT_NEAR(BestOfK(0.3, 1) - BestOfK(0.2, 1), 0.1, 1e-12);
  EXPECT_NEAR(BestOfK(0.3, 4) - BestOfK(0.2, 4), 0.1695, 1e-4);
  EXPECT_NEAR(BestOfK(0.3, 32) - BestOfK(0.2, 32), 0.00078, 1e-5);
  EXPECT_NEAR(BestOfK(0.9, 4) - BestOfK(0.8, 4), 0.0015, 1e-4);
}

TEST(PavTest, TheAutomatonTracksTheLongestMatchedPrefix) {
  PlantedTask t;
  t.vocab = 4;
  t.length = 8;
  t.target = {1, 2, 1, 3};
  PlantedAutomaton a(t);
  EXPECT_EQ(a.Run({1, 2, 1}), 3);
  EXPECT_EQ(a.Run({1, 2, 1, 2}), 2);  // "1 2" is a border of "1 2 1 2"
  EXPECT_EQ(a.Run({1, 2, 1, 2, 1, 3}), 4);
  EXPECT_EQ(a.Run({1, 2, 1, 3, 4, 4}), 4);  // found stays found
  EXPECT_EQ(a.Run({1, 1}), 1);
  EXPECT_TRUE(Succeeds(a, {4, 1, 2, 1, 2, 1, 3, 4}));
  EXPECT_FALSE(Succeeds(a, {1, 2, 1, 2, 1, 2, 1, 2}));
}

TEST(PavTest, ProverValuesMatchTheComputedTable) {
  PlantedTask t;  // 13 tokens, target (3 7 1 9), length 10
  const double v1 = ProverValues(t, 1).Value(0, 10);
  EXPECT_NEAR(v1, 0.000245, 5e-7);
  EXPECT_NEAR(ProverValues(t, 5).Value(0, 10), 0.041133, 5e-7);
  EXPECT_NEAR(ProverValues(t, 15).Value(0, 10), 0.349662, 5e-7);
  const ProverValues g10(t, 10), g100(t, 100);
  EXPECT_NEAR(g10.Value(0, 10), 0.186891, 5e-7);
  EXPECT_NEAR(g10.Advantage(0, 10, 3), 0.027189, 5e-7);
  EXPECT_NEAR(g10.Advantage(0, 10, 5), -0.022657, 5e-7);
  EXPECT_NEAR(g100.Value(0, 10), 0.955912, 5e-7);
  EXPECT_NEAR(g100.Advantage(0, 10, 3), 0.002350, 5e-7);
  EXPECT_NEAR(g100.Advantage(0, 10, 5), -0.019581, 5e-7);
  // gamma = 1 is the uniform policy: by inclusion-exclusion over the 7
  // starts of a run of 4 in 10 tokens. The target has no self-overlap, so two
  // occurrences need starts 4 or more apart (6 such pairs) and three do not fit.
  const double p = std::pow(13.0, -4);
  EXPECT_NEAR(v1, 7 * p - 6 * p * p, 1e-15);
}

TEST(PavTest, ValuesEqualBruteForceOverEverySequence) {
  PlantedTask t;
  t.vocab = 3;
  t.length = 6;
  t.target = {1, 2, 1};
  const ProverValues mu(t, 4);
  // Sum over all 3^6 sequences of mu's probability times the outcome.
  double total = 0, mass = 0;
  std::vector<int> seq(6);
  std::function<void(size_t, int, double)> walk = [&](size_t h, int state, double prob) {
    if (h == seq.size()) {
      mass += prob;
      total += prob * (Succeeds(mu.automaton(), seq) ? 1 : 0);
      return;
    }
    for (int a = 1; a <= t.vocab; ++a) {
      seq[h] = a;
      walk(h + 1, mu.automaton().Next(state, a), prob * mu.Probability(state, a));
    }
  };
  walk(0, 0, 1.0);
  EXPECT_NEAR(mass, 1.0, 1e-12);
  EXPECT_NEAR(mu.Value(0, 6), total, 1e-12);
}

TEST(PavTest, AdvantagesTelescopeAlongAnyTrajectory) {
  PlantedTask t;
  for (double gamma : {1.0, 5.0, 10.0, 100.0}) {
    const ProverValues mu(t, gamma);
    common::SplitMix64 rng(7);
    for (int n = 0; n < 200; ++n) {
      std::vector<int> seq = mu.Sample(rng);
      if (n % 2) {  // also arbitrary, non-prover sequences
        for (int& a : seq) a = static_cast<int>(rng.NextInt(1, t.vocab));
      }
      const std::vector<double> adv = mu.Advantages(seq);
      double sum = 0;
      for (double a : adv) sum += a;
      const double final_value = Succeeds(mu.automaton(), seq) ? 1.0 : 0.0;
      EXPECT_NEAR(sum, final_value - mu.Value(0, t.length), 1e-12);
    }
  }
}

TEST(PavTest, MonteCarloOverTheProversSamplesAgreesWithTheExactValue) {
  PlantedTask t;
  const ProverValues mu(t, 10);
  common::SplitMix64 rng(2026);
  const int n = 200000;
  int hits = 0;
  for (int i = 0; i < n; ++i) hits += Succeeds(mu.automaton(), mu.Sample(rng)) ? 1 : 0;
  const double v = mu.Value(0, 10), se = std::sqrt(v * (1 - v) / n);
  EXPECT_NEAR(static_cast<double>(hits) / n, v, 4 * se);
}

TEST(PavTest, EffectiveRewardAtAlphaZeroIsQ) {
  EXPECT_EQ(EffectiveReward(0.37, 0.2, 0), 0.37);
  EXPECT_NEAR(EffectiveReward(0.37, 0.2, 0.5), 0.47, 1e-15);
}

TEST(PavTest, PassAtNIsTheUnbiasedEstimate) {
  EXPECT_NEAR(PassAtN(10, 0, 3), 0.0, 1e-15);
  EXPECT_NEAR(PassAtN(10, 1, 1), 0.1, 1e-15);
  EXPECT_NEAR(PassAtN(10, 1, 3), 0.3, 1e-15);  // 1 - C(9,3)/C(10,3)
  EXPECT_NEAR(PassAtN(10, 8, 3), 1.0, 1e-15);
  EXPECT_NEAR(PassAtN(5, 2, 2), 1 - 3.0 / 10.0, 1e-15);
}

TEST(PavTest, BadTasksAreRefused) {
  PlantedTask t;
  t.target = {0, 1};
  EXPECT_FALSE(ValidatePlantedTask(t).ok());
  t.target = {};
  EXPECT_FALSE(ValidatePlantedTask(t).ok());
  t.target = std::vector<int>(11, 1);
  EXPECT_FALSE(ValidatePlantedTask(t).ok());
  t.target = {14};
  EXPECT_FALSE(ValidatePlantedTask(t).ok());
}

}  // namespace
}  // namespace shammie::workers::pav
