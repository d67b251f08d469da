// Oracles for conformal language modeling and risk-controlled selection
// (PAPERS.md §8(f), §10(f); guidebo's ideal_interval values).
#include <gtest/gtest.h>

#include <cmath>

#include "analysis/conformal.hpp"
#include "analysis/ltt.hpp"
#include "analysis/pareto.hpp"
#include "analysis/risk_control.hpp"

namespace shammie::analysis {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<ClmPrompt> OraclePrompts() {
  std::vector<std::vector<int>> labels = {{0, 0, 1, 0, 1}, {1, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
  std::vector<std::vector<double>> quality = {{.2, .9, .8, .1, .7}, {.6, .3, .2, .9, .1}, {.5, .4, .3, .2, .1}};
  std::vector<ClmPrompt> out(3);
  for (size_t i = 0; i < 3; ++i) {
    out[i].admissible = labels[i];
    out[i].quality = quality[i];
  }
  return out;
}

TEST(ConformalTest, FirstKStopsWhereTheReferenceDoes) {
  auto prompts = OraclePrompts();
  ClmConfig c;
  c.confidence_threshold = 2;
  std::vector<int> loss;
  std::vector<size_t> samples;
  for (const auto& p : prompts) {
    auto o = EvaluateClm(p, c, SetScore::kFirstK);
    loss.push_back(o.loss);
    samples.push_back(o.samples);
  }
  EXPECT_EQ(loss, (std::vector<int>{1, 0, 1}));
  EXPECT_EQ(samples, (std::vector<size_t>{2, 2, 2})) << "stop index 1";
  c.confidence_threshold = 3;
  loss.clear();
  for (const auto& p : prompts) loss.push_back(EvaluateClm(p, c, SetScore::kFirstK).loss);
  EXPECT_EQ(loss, (std::vector<int>{0, 0, 1}));
  // Taking every sample: the set loss is 1 only where nothing is admissible.
  c.confidence_threshold = kInf;
  loss.clear();
  for (const auto& p : prompts) loss.push_back(EvaluateClm(p, c, SetScore::kFirstK).loss);
  EXPECT_EQ(loss, (std::vector<int>{0, 0, 1}));
}

TEST(ConformalTest, MaxStopsWhereTheReferenceDoes) {
  auto prompts = OraclePrompts();
  ClmConfig c;
  c.confidence_threshold = 0.75;
  std::vector<size_t> stops;
  for (const auto& p : prompts) stops.push_back(EvaluateClm(p, c, SetScore::kMax).samples - 1);
  EXPECT_EQ(stops, (std::vector<size_t>{1, 3, 4}));
  c.confidence_threshold = 0.95;
  stops.clear();
  for (const auto& p : prompts) stops.push_back(EvaluateClm(p, c, SetScore::kMax).samples - 1);
  EXPECT_EQ(stops, (std::vector<size_t>{4, 4, 4})) << "never reached: all kmax samples";
}

TEST(ConformalTest, RejectionByQualityAndSimilarity) {
  ClmPrompt p;
  p.quality = {0.9, 0.85, 0.2, 0.8};
  p.admissible = {0, 0, 1, 1};
  // 0 and 1 are near-duplicates; 3 is similar to 1 only (which is rejected).
  p.similarity = {{1, .95, .1, .1}, {.95, 1, .1, .9}, {.1, .1, 1, .1}, {.1, .9, .1, 1}};
  ClmConfig c;
  c.similarity_threshold = 0.5;
  c.quality_threshold = 0.5;
  auto o = EvaluateClm(p, c, SetScore::kFirstK);
  EXPECT_EQ(o.set_size, 2u) << "keeps 0 and 3: 1 is a duplicate of 0, 2 is low quality";
  EXPECT_EQ(o.loss, 0);
  EXPECT_EQ(o.samples, 4u);
}

TEST(ConformalTest, BinomialPValues) {
  EXPECT_NEAR(BinomialPValue(15, 300, 0.1), 0.0012666, 1e-7);
  EXPECT_NEAR(BinomialPValue(30, 300, 0.1), 0.548419, 1e-6);
  EXPECT_NEAR(BinomialPValue(0, 50, 0.05), 0.0769450, 1e-7);
}

TEST(RiskControlTest, HoeffdingBentkusValues) {
  EXPECT_NEAR(HoeffdingPValue(0.05, 100, 0.1), 0.188125, 1e-6);
  EXPECT_NEAR(BentkusPValue(0.05, 100, 0.1), 0.15651, 1e-5);
  EXPECT_NEAR(HoeffdingBentkusPValue(0.05, 100, 0.1), 0.15651, 1e-5);
  EXPECT_NEAR(BinomialPValue(5, 100, 0.1), 0.0575769, 1e-7);
  EXPECT_NEAR(HoeffdingBentkusPValue(0.08, 1000, 0.1), 0.0478732, 1e-7);
  EXPECT_NEAR(HoeffdingBentkusPValue(0.0, 100, 0.1), 2.65614e-5, 1e-10);
  EXPECT_EQ(HoeffdingBentkusPValue(0.1, 100, 0.1), 1.0);
}

TEST(RiskControlTest, FixedSequenceToy) {
  // n = 1000, alpha = delta = 0.1, risks in testing order.
  const std::vector<double> risks = {0.02, 0.05, 0.07, 0.085, 0.095, 0.12};
  std::vector<std::vector<double>> losses;
  for (double r : risks) {
    std::vector<double> l(1000, 0);
    for (int i = 0; i < static_cast<int>(std::lround(r * 1000)); ++i) l[static_cast<size_t>(i)] = 1;
    losses.push_back(l);
  }
  auto res = LearnThenTest(losses, 0.1, 0.1, PValueBound::kHoeffdingBentkus, FwerProcedure::kFixedSequence);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->valid, (std::vector<size_t>{0, 1, 2}));
  EXPECT_NEAR(res->p_values[2], 0.00156, 1e-5);
  EXPECT_NEAR(res->p_values[3], 0.165, 1e-3);
  EXPECT_NEAR(res->p_values[4], 0.869, 1e-3);
}

TEST(RiskControlTest, RegionOfInterestMatchesGuidebo) {
  auto a = ComputeRegionOfInterest(0.1, 0.1, 2500, 2500, 0.01);
  EXPECT_NEAR(a.limit, 0.0888, 1e-4);
  EXPECT_NEAR(a.lower, 0.0736, 1e-4);
  EXPECT_NEAR(a.upper, 0.10447, 1e-5);
  auto b = ComputeRegionOfInterest(0.05, 0.1, 1000, 1000, 0.01);
  EXPECT_NEAR(b.limit, 0.037, 1e-4);
  EXPECT_NEAR(b.lower, 0.021, 1e-4);
  EXPECT_NEAR(b.upper, 0.05405, 1e-5);
}

TEST(RiskControlTest, ParetoFrontWithTies) {
  std::vector<std::vector<double>> pts = {{1, 2}, {1, 2}, {1, 3}, {2, 1}, {3, 3}, {0.5, 5}};
  EXPECT_EQ(ParetoFront(pts), (std::vector<size_t>{0, 1, 3, 5})) << "duplicates kept, weakly dominated removed";
}

TEST(RiskControlTest, SelectsTheCheapestCertifiedConfiguration) {
  // Configuration k has risk 0.01 * k and cost 10 - k: riskier is cheaper.
  const size_t configs = 12, n = 2000;
  auto make = [&](size_t offset) {
    SplitLosses s;
    s.constraint.resize(1);
    for (size_t k = 0; k < configs; ++k) {
      std::vector<double> l(n, 0), cost(n, 10.0 - static_cast<double>(k));
      const size_t bad = static_cast<size_t>(std::lround(0.01 * static_cast<double>(k * n)));
      for (size_t i = 0; i < bad; ++i) l[(i * 7 + offset) % n] = 1;
      s.constraint[0].push_back(l);
      s.free_objective.push_back(cost);
    }
    return s;
  };
  RiskControlOptions o;
  o.alphas = {0.1};
  o.delta = 0.1;
  o.binary = true;
  auto r = SelectRiskControlled(make(0), make(3), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->chosen.has_value());
  // With n = 2000: risk 0.08 passes easily (p ~ 1e-3), 0.09 passes at delta = 0.1
  // (p ~ 0.07), 0.10 and above cannot (p >= 0.5).
  EXPECT_GE(*r->chosen, 8u);
  EXPECT_LE(*r->chosen, 9u);
  for (size_t k : r->tested) EXPECT_LE(static_cast<double>(k) * 0.01, 0.1 + 1e-9) << "outside the ROI was tested";
  auto none = SelectRiskControlled(make(0), make(3), RiskControlOptions{{0.001}, 0.1, true, 0.01});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->chosen.has_value());
}

TEST(ComponentTest, ThresholdKeepsOnlyCertifiedComponents) {
  // Correct components score high, incorrect ones low, with overlap.
  std::vector<ComponentPrompt> prompts;
  for (int i = 0; i < 400; ++i) {
    ComponentPrompt p;
    for (int j = 0; j < 5; ++j) {
      const bool correct = (i + j) % 4 != 0;
      p.correct.push_back(correct);
      p.score.push_back(correct ? 0.5 + 0.1 * ((i * 7 + j) % 5) : 0.1 * ((i + 3 * j) % 7));
    }
    prompts.push_back(p);
  }
  auto c = CalibrateComponents(prompts, 0.1, 0.05);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->found);
  EXPECT_LE(c->cal_loss, 0.1);
  EXPECT_GE(c->threshold, 0.5) << "incorrect components score up to 0.6";
  EXPECT_GT(c->recall, 0.3);
}

}  // namespace
}  // namespace shammie::analysis
