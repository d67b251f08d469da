// Conformal language modeling over many random splits (analysis/clm_study):
// - the guarantee, checked by simulation on the simulated LM of PAPERS.md
//   §10(e) with fresh calibration data per trial and a large independent
//   test set: the share of trials whose risk exceeds epsilon stays within
//   delta plus Monte-Carlo error, for every set score with and without
//   rejection, and for the component-level variant;
// - the study's random splits of one pool: mean risk, set sizes, threads;
// - CalibrateClmMany is CalibrateClm once per epsilon;
// - ROUGE-L on hand-computed strings.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "analysis/clm_study.hpp"
#include "common/random.hpp"

namespace shammie::analysis {
namespace {

// PAPERS.md §10(e): per prompt a categorical distribution over 50 answer
// strings, 1-3 of them admissible with prompt-dependent mass (some prompts
// hard); quality = a noisy view of whether the sample is admissible;
// similarity = 1 for identical strings (the same answer drawn twice).
std::vector<ClmPrompt> SimulatedLm(size_t prompts, size_t kmax, uint64_t seed) {
  common::SplitMix64 rng(seed);
  std::vector<ClmPrompt> out;
  for (size_t p = 0; p < prompts; ++p) {
    const double mass = rng.NextDouble();  // mass on admissible answers: some prompts hard (P(none of 10) = 1/11)
    const int good = static_cast<int>(rng.NextInt(1, 3));
    std::vector<int> answer(kmax);
    ClmPrompt c;
    for (size_t k = 0; k < kmax; ++k) {
      const bool admissible = rng.NextDouble() < mass;
      answer[k] = admissible ? static_cast<int>(rng.NextInt(0, good - 1)) : static_cast<int>(rng.NextInt(3, 49));
      c.admissible.push_back(admissible ? 1 : 0);
      c.quality.push_back((admissible ? 0.6 : 0.4) + 0.25 * (rng.NextDouble() - 0.5) + 0.3 * (mass - 0.5));
    }
    c.similarity.assign(kmax, std::vector<double>(kmax, 0.0));
    for (size_t i = 0; i < kmax; ++i) {
      for (size_t j = 0; j < kmax; ++j) c.similarity[i][j] = answer[i] == answer[j] ? 1.0 : 0.0;
    }
    out.push_back(std::move(c));
  }
  return out;
}

TEST(ClmStudyTest, RougeLOnHandComputedStrings) {
  EXPECT_DOUBLE_EQ(RougeL("abc", "abc"), 1.0);
  EXPECT_DOUBLE_EQ(RougeL("abcd", "acbd"), 0.75);  // LCS 3: 2 * 3 / 8
  EXPECT_DOUBLE_EQ(RougeL("3+8-5=11-5=6", "3+8-5=11-5=6"), 1.0);
  EXPECT_DOUBLE_EQ(RougeL("ab", "cd"), 0.0);
  EXPECT_DOUBLE_EQ(RougeL("", ""), 1.0);
  EXPECT_DOUBLE_EQ(RougeL("", "a"), 0.0);
  EXPECT_DOUBLE_EQ(RougeL("aab", "ab"), 0.8);  // LCS 2: 4 / 5
}

TEST(ClmStudyTest, ManyEpsilonsEqualOneAtATime) {
  const auto prompts = SimulatedLm(300, 10, 7);
  const std::vector<double> eps = {0.2, 0.3, 0.45};
  for (bool reject : {false, true}) {
    ClmOptions o;
    o.delta = 0.05;
    o.reject = reject;
    o.score = SetScore::kSum;
    o.seed = 11;
    auto many = CalibrateClmMany(prompts, o, eps);
    ASSERT_TRUE(many.ok()) << many.status().ToString();
    for (size_t e = 0; e < eps.size(); ++e) {
      o.epsilon = eps[e];
      auto one = CalibrateClm(prompts, o);
      ASSERT_TRUE(one.ok());
      EXPECT_EQ((*many)[e].found, one->found);
      EXPECT_EQ((*many)[e].accepted, one->accepted);
      EXPECT_EQ((*many)[e].config.confidence_threshold, one->config.confidence_threshold);
      EXPECT_EQ((*many)[e].config.quality_threshold, one->config.quality_threshold);
      EXPECT_EQ((*many)[e].config.similarity_threshold, one->config.similarity_threshold);
      EXPECT_DOUBLE_EQ((*many)[e].cal_metrics.set_size, one->cal_metrics.set_size);
    }
  }
  ClmOptions o;
  EXPECT_FALSE(CalibrateClmMany(prompts, o, {}).ok());
  EXPECT_FALSE(CalibrateClmMany(prompts, o, {1.0}).ok());
}

// The guarantee P(risk of the calibrated configuration > epsilon) <= delta,
// checked the way it is stated: fresh calibration data in every trial, and
// the risk measured on a large independent test set (20,000 prompts:
// standard error <= 0.0035), so test noise does not blur it.
TEST(ClmStudyTest, TheGuaranteeHoldsOnFreshData) {
  const auto test = SimulatedLm(20000, 10, 99);
  const std::vector<double> eps = {0.2, 0.3};
  const double delta = 0.1;
  const size_t trials = 60;
  for (const auto& m : ClmMethods()) {
    std::vector<size_t> violations(eps.size(), 0), certified(eps.size(), 0);
    for (size_t t = 0; t < trials; ++t) {
      ClmOptions o;
      o.delta = delta;
      o.score = m.score;
      o.reject = m.reject;
      o.seed = t;
      auto c = CalibrateClmMany(SimulatedLm(400, 10, 1000 + t), o, eps);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      for (size_t e = 0; e < eps.size(); ++e) {
        if (!(*c)[e].found) continue;
        ++certified[e];
        violations[e] += EvaluateClmSet(test, (*c)[e].config, m.score).loss > eps[e] ? 1 : 0;
      }
    }
    for (size_t e = 0; e < eps.size(); ++e) {
      EXPECT_GT(certified[e], trials / 2) << m.name << " " << eps[e];
      // delta plus 3 Monte-Carlo standard errors of 60 trials.
      EXPECT_LE(static_cast<double>(violations[e]) / trials, delta + 3 * std::sqrt(delta * (1 - delta) / trials))
          << m.name << " " << eps[e];
    }
  }
}

// RunClmTrials: random splits of one pool of prompts (what the study runs on
// sampled text); the mean test risk stays below epsilon, looser levels give
// smaller sets, rejection drops duplicates, results do not depend on threads.
TEST(ClmStudyTest, RandomSplitsOfOnePool) {
  const auto prompts = SimulatedLm(1200, 10, 2026);
  ClmTrialOptions o;
  o.epsilons = {0.2, 0.3, 0.4};
  o.delta = 0.1;
  o.trials = 30;
  o.calibration_fraction = 0.5;
  o.threads = 2;
  auto rows = RunClmTrials(prompts, o);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), ClmMethods().size() * o.epsilons.size());
  std::map<std::pair<std::string, double>, ClmTrialRow> by;
  for (const auto& r : *rows) {
    by[{r.method, r.epsilon}] = r;
    EXPECT_GT(r.certified, 20u) << r.method << " " << r.epsilon;
    EXPECT_LE(r.risk, r.epsilon) << r.method << " " << r.epsilon;
    EXPECT_LE(r.set_size, r.samples + 1e-12);
  }
  for (const auto& m : ClmMethods()) EXPECT_LT((by[{m.name, 0.4}].samples), (by[{m.name, 0.2}].samples)) << m.name;
  for (double e : o.epsilons) EXPECT_LT((by[{"max+reject", e}].set_size), (by[{"max", e}].set_size)) << e;
  o.threads = 1;
  auto again = RunClmTrials(prompts, o);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < rows->size(); ++i) {
    EXPECT_EQ((*rows)[i].risk, (*again)[i].risk);
    EXPECT_EQ((*rows)[i].set_size, (*again)[i].set_size);
    EXPECT_EQ((*rows)[i].violation_rate, (*again)[i].violation_rate);
  }
}

// Components with a score that is higher, on average, for correct ones.
std::vector<ComponentPrompt> SimulatedComponents(size_t prompts, uint64_t seed) {
  common::SplitMix64 rng(seed);
  std::vector<ComponentPrompt> out(prompts);
  for (auto& p : out) {
    const int n = static_cast<int>(rng.NextInt(1, 4));
    for (int j = 0; j < n; ++j) {
      const bool ok = rng.NextDouble() < 0.7;
      p.correct.push_back(ok ? 1 : 0);
      p.score.push_back((ok ? 0.65 : 0.35) + 0.4 * (rng.NextDouble() - 0.5));
    }
  }
  return out;
}

TEST(ClmStudyTest, ComponentGuaranteeHoldsOnFreshData) {
  const auto test = SimulatedComponents(40000, 99);
  const double delta = 0.1;
  const size_t trials = 100;
  for (double eps : {0.05, 0.1, 0.2}) {
    size_t violations = 0;
    for (size_t t = 0; t < trials; ++t) {
      auto c = CalibrateComponents(SimulatedComponents(500, 1000 + t), eps, delta);
      ASSERT_TRUE(c.ok());
      ASSERT_TRUE(c->found);
      size_t bad = 0;
      for (const auto& p : test) {
        bool wrong = false;
        for (size_t j = 0; j < p.score.size(); ++j) wrong |= p.score[j] > c->threshold && p.correct[j] == 0;
        bad += wrong ? 1 : 0;
      }
      violations += static_cast<double>(bad) / static_cast<double>(test.size()) > eps ? 1 : 0;
    }
    EXPECT_LE(static_cast<double>(violations) / trials, delta + 3 * std::sqrt(delta * (1 - delta) / trials)) << eps;
  }
  ClmTrialOptions o;
  o.epsilons = {0.05, 0.1, 0.2};
  o.delta = delta;
  o.trials = 40;
  auto rows = RunComponentTrials(SimulatedComponents(1000, 5), o);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 3u);
  for (const auto& r : *rows) {
    EXPECT_EQ(r.certified, 40u);
    EXPECT_LE(r.risk, r.epsilon);
    EXPECT_GT(r.recall, 0.0);
  }
  EXPECT_LT((*rows)[0].recall, (*rows)[2].recall);  // a stricter guarantee keeps fewer components
}

TEST(ClmStudyTest, BadOptionsAreErrors) {
  const auto prompts = SimulatedLm(20, 4, 1);
  ClmTrialOptions o;
  EXPECT_FALSE(RunClmTrials(prompts, o).ok());  // no epsilons
  o.epsilons = {0.2};
  o.calibration_fraction = 1.0;
  EXPECT_FALSE(RunClmTrials(prompts, o).ok());
  o.calibration_fraction = 0.5;
  o.trials = 0;
  EXPECT_FALSE(RunClmTrials(prompts, o).ok());
  o.trials = 2;
  EXPECT_TRUE(RunClmTrials(prompts, o).ok());
  EXPECT_FALSE(RunClmTrials(SimulatedLm(2, 4, 1), o).ok());  // too few prompts to split
}

}  // namespace
}  // namespace shammie::analysis
