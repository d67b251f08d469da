// Published and hand-computed values (PAPERS.md §3(f), §6(f), ppi_py's tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "analysis/bayes_ppi.hpp"
#include "analysis/bootstrap.hpp"
#include "analysis/ltt.hpp"
#include "analysis/ppi.hpp"
#include "common/random.hpp"

namespace shammie::analysis {
namespace {

TEST(OracleTest, GlideStratifiedExample) {
  // y_true = [1,2,.,.,4,5,.,.], y_proxy = [1.1,2.2,1.5,1.8,3.9,5.1,4.5,4.8], groups = [0,0,0,0,1,1,1,1];
  // ddof = 1, pooled Var(f), no clipping; weights = sample shares.
  std::vector<Stratum> strata = {{"0", 0.5, {1, 2}, {1.1, 2.2}, {1.5, 1.8}}, {"1", 0.5, {4, 5}, {3.9, 5.1}, {4.5, 4.8}}};
  PpiOptions free;
  free.lambda_mode = LambdaMode::kTunedFree;
  auto e = StratifiedPpiMean(strata, 0.05, free);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_NEAR(e->strata[0].lambda, 1.2692308, 1e-7);
  EXPECT_NEAR(e->strata[1].lambda, 1.1428571, 1e-7);
  EXPECT_NEAR(e->combined.estimate, 3.0857143, 1e-7);
  EXPECT_NEAR(e->combined.lower, 2.71988, 1e-5);
  EXPECT_NEAR(e->combined.upper, 3.45155, 1e-5);
}

TEST(OracleTest, FlatStratifiedFormMatchesTheGroupedForm) {
  common::SplitMix64 rng(9);
  std::vector<double> y, f, fu;
  std::vector<int32_t> s_lab, s_unl;
  std::vector<Stratum> grouped(3);
  const std::vector<double> weights = {0.2, 0.5, 0.3};
  const std::vector<std::string> names = {"a", "b", "c"};
  for (int k = 0; k < 3; ++k) {
    grouped[static_cast<size_t>(k)].name = names[static_cast<size_t>(k)];
    grouped[static_cast<size_t>(k)].weight = weights[static_cast<size_t>(k)];
  }
  for (int i = 0; i < 3000; ++i) {
    const int32_t k = static_cast<int32_t>(rng.NextInt(0, 2));
    const double yv = rng.NextNormal(), fv = yv + 0.3 * k + (0.5 + k) * rng.NextNormal();
    Stratum& g = grouped[static_cast<size_t>(k)];
    if (i % 10 == 0) {
      y.push_back(yv);
      f.push_back(fv);
      s_lab.push_back(k);
      g.y.push_back(yv);
      g.f.push_back(fv);
    } else {
      fu.push_back(fv);
      s_unl.push_back(k);
      g.f_unlabeled.push_back(fv);
    }
  }
  auto a = StratifiedPpiMean(grouped, 0.1);
  auto b = StratifiedPpiMean(y, f, s_lab, fu, s_unl, weights, names, 0.1);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  EXPECT_NEAR(a->combined.estimate, b->combined.estimate, 1e-12);
  EXPECT_NEAR(a->combined.lower, b->combined.lower, 1e-12);
  EXPECT_NEAR(a->combined.upper, b->combined.upper, 1e-12);
  std::vector<int32_t> bad = s_unl;
  bad[5] = 3;
  EXPECT_EQ(StratifiedPpiMean(y, f, s_lab, fu, bad, weights, names, 0.1).status().code(),
            common::StatusCode::kInvalidArgument);
}

TEST(OracleTest, PpiPyClippingMakesTheEstimateExact) {
  // ppi_py tests/test_mean.py: Yhat = Y + 2 on labeled data, Yhat_unlabeled = 2.
  common::SplitMix64 rng(1);
  std::vector<double> y, f, fu(10000, 2.0);
  for (int i = 0; i < 100; ++i) {
    double v = rng.NextDouble() * 2 - 1;
    y.push_back(v);
    f.push_back(v + 2);
  }
  auto e = PpiMean(y, f, fu, 0.1);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->lambda, 1.0);
  EXPECT_NEAR(e->estimate, 0.0, 1e-12);
}

TEST(OracleTest, GaussianDesignAnalyticWidths) {
  // With N -> infinity and the optimal lambda, Var(y - lambda f) = s^2 / (1 + s^2)
  // for f = y + mu + s e, y ~ N(0, 1). Classical 90% width at n = 100: 2 * 1.645 / 10.
  EXPECT_NEAR(2 * NormalQuantile(0.95) / 10, 0.3290, 1e-4);
  // Optimal allocation for sigma = (0.25, 4) at n = 100 puts 20 / 80 labels:
  // n_k ~ w_k * s_k / sqrt(1 + s_k^2).
  const double s0 = 0.25 / std::sqrt(1 + 0.0625), s1 = 4 / std::sqrt(17.0);
  EXPECT_NEAR(100 * s0 / (s0 + s1), 19.5, 0.5);
  const double var = 0.25 * (s0 * s0 / 20 + s1 * s1 / 80);
  EXPECT_NEAR(2 * NormalQuantile(0.95) * std::sqrt(var), 0.1995, 2e-4);
}

TEST(OracleTest, BayesChainRuleToyCounts) {
  // Labeled (A,H): (1,1)=45, (1,0)=15, (0,1)=4, (0,0)=36; unlabeled A: 600 ones, 400 zeros.
  std::vector<int64_t> a, au;
  std::vector<double> h;
  auto add = [&](int64_t judge, double label, int count) {
    for (int i = 0; i < count; ++i) {
      a.push_back(judge);
      h.push_back(label);
    }
  };
  add(1, 1, 45);
  add(1, 0, 15);
  add(0, 1, 4);
  add(0, 0, 36);
  au.insert(au.end(), 600, 1);
  au.insert(au.end(), 400, 0);
  BayesOptions o;
  o.draws = 400000;
  o.seed = 3;
  auto e = ChainRuleMean(a, h, au, 0.05, o);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->posterior_mean, 0.492667, 1e-6);
  EXPECT_NEAR(e->lower, 0.4134, 0.003);
  EXPECT_NEAR(e->upper, 0.5689, 0.003);
  EXPECT_NEAR(e->posterior_sd, 0.0396, 0.001);

  std::vector<double> labels(h.begin(), h.end());
  auto beta = BetaBinomialMean(labels, 0.05, o);
  ASSERT_TRUE(beta.ok());
  EXPECT_NEAR(beta->posterior_mean, 50.0 / 102, 1e-9);
  EXPECT_NEAR(beta->lower, 0.39404, 0.003);
  EXPECT_NEAR(beta->upper, 0.58672, 0.003);

  // PPI with lambda = 1 on the same data: 0.49, 95% [0.40193, 0.57807].
  std::vector<double> f(a.begin(), a.end()), fu(au.begin(), au.end());
  PpiOptions fixed;
  fixed.lambda_mode = LambdaMode::kFixed;
  auto p = PpiMean(h, f, fu, 0.05, fixed);
  ASSERT_TRUE(p.ok());
  EXPECT_NEAR(p->estimate, 0.49, 1e-12);
  EXPECT_NEAR(p->lower, 0.40193, 2e-3);
  EXPECT_NEAR(p->upper, 0.57807, 2e-3);
}

TEST(OracleTest, BentkusCeilPitfall) {
  // ceil(0.07 * 100) is 8 in floating point; the p-value must use 7.
  EXPECT_NEAR(BentkusPValue(0.07, 100, 0.1), std::min(1.0, std::exp(1.0) * BinomialPValue(7, 100, 0.1)), 1e-15);
  // h1(0, alpha) is finite: p = (1 - alpha)^n.
  EXPECT_NEAR(HoeffdingPValue(0.0, 100, 0.1), std::pow(0.9, 100), 1e-15);
}

TEST(OracleTest, BentkusShortcutAtTheMedianChangesNothing) {
  // From k = ceil(n alpha) on, the Bentkus p-value is 1 without evaluating the CDF.
  for (const auto& [n, alpha] : std::vector<std::pair<size_t, double>>{{101, 0.3}, {10, 0.05}, {1000, 0.1}, {37, 0.5}}) {
    for (size_t k = 0; k <= n; ++k) {
      const double risk = static_cast<double>(k) / static_cast<double>(n);
      EXPECT_EQ(BentkusPValue(risk, n, alpha), std::min(1.0, std::exp(1.0) * BinomialPValue(k, n, alpha)))
          << n << " " << alpha << " " << k;
    }
  }
}

// PPI with a fixed lambda from long-double two-pass moments: the reference
// for the one-pass shifted sums, including data whose first values are far
// from the mean (the two-pass fallback) and a large common offset.
TEST(OracleTest, OnePassMomentsMatchTwoPassLongDouble) {
  auto reference = [](const std::vector<double>& y, const std::vector<double>& f, const std::vector<double>& fu,
                      long double lambda) {
    auto moments = [](const std::vector<long double>& x) {
      long double mean = 0, m2 = 0;
      for (long double v : x) mean += v;
      mean /= static_cast<long double>(x.size());
      for (long double v : x) m2 += (v - mean) * (v - mean);
      return std::pair<long double, long double>{mean, m2 / static_cast<long double>(x.size() - 1)};
    };
    std::vector<long double> u(fu.begin(), fu.end()), r;
    for (size_t i = 0; i < y.size(); ++i) r.push_back(static_cast<long double>(y[i]) - lambda * f[i]);
    const auto [mu, vu] = moments(u);
    const auto [mr, vr] = moments(r);
    const long double estimate = lambda * mu + mr;
    const long double se = std::sqrt(lambda * lambda * vu / u.size() + vr / r.size());
    return std::pair<double, double>{static_cast<double>(estimate), static_cast<double>(se)};
  };
  common::SplitMix64 rng(17);
  for (const double offset : {0.0, 1e6}) {
    for (const bool outliers_first : {false, true}) {
      std::vector<double> y(500), f(500), fu(20000);
      for (size_t i = 0; i < y.size(); ++i) {
        y[i] = offset + rng.NextNormal();
        f[i] = y[i] + 0.5 * rng.NextNormal();
      }
      for (size_t i = 0; i < fu.size(); ++i) fu[i] = offset + 1.1 * rng.NextNormal();
      if (outliers_first) {
        for (size_t i = 0; i < 16; ++i) fu[i] = offset + 1e4;  // the shift lands far from the mean
      }
      PpiOptions fixed;
      fixed.lambda_mode = LambdaMode::kFixed;
      fixed.lambda = 0.7;
      auto e = PpiMean(y, f, fu, 0.1, fixed);
      ASSERT_TRUE(e.ok()) << e.status().ToString();
      const auto [estimate, se] = reference(y, f, fu, 0.7L);
      EXPECT_NEAR(e->estimate, estimate, 1e-12 * std::max(1.0, std::abs(estimate))) << offset << " " << outliers_first;
      EXPECT_NEAR(e->std_error, se, 1e-10 * se) << offset << " " << outliers_first;
      // The flat stratified form, one stratum: its shift is the labeled predictions' mean.
      std::vector<int32_t> s_lab(y.size(), 0), s_unl(fu.size(), 0);
      if (outliers_first) {
        for (double& v : f) v += 1e5;  // labeled predictions far from the unlabeled ones
      }
      auto st = StratifiedPpiMean(y, f, s_lab, fu, s_unl, std::vector<double>{1.0}, {"all"}, 0.1, fixed);
      ASSERT_TRUE(st.ok()) << st.status().ToString();
      const auto [s_estimate, s_se] = reference(y, f, fu, 0.7L);
      EXPECT_NEAR(st->combined.estimate, s_estimate, 1e-12 * std::max(1.0, std::abs(s_estimate))) << offset;
      EXPECT_NEAR(st->combined.std_error, s_se, 1e-10 * s_se) << offset << " " << outliers_first;
      // A NaN among the unlabeled predictions is an error on both paths.
      fu[fu.size() / 2] = std::nan("");
      EXPECT_EQ(PpiMean(y, f, fu, 0.1, fixed).status().code(), common::StatusCode::kInvalidArgument);
      EXPECT_EQ(StratifiedPpiMean(y, f, s_lab, fu, s_unl, std::vector<double>{1.0}, {"all"}, 0.1, fixed).status().code(),
                common::StatusCode::kInvalidArgument);
    }
  }
}

TEST(OracleTest, LearnThenTestChecksEveryLossAndSumsExactly) {
  // 37 and 1003 losses: SIMD blocks of 16 plus a tail.
  common::SplitMix64 rng(3);
  for (const size_t n : {size_t{37}, size_t{1003}}) {
    std::vector<std::vector<double>> losses(2, std::vector<double>(n));
    long double total = 0;
    for (size_t i = 0; i < n; ++i) {
      losses[0][i] = rng.NextDouble();
      total += losses[0][i];
      losses[1][i] = i % 3 == 0 ? 1.0 : 0.0;
    }
    auto ok = LearnThenTest(losses, 0.5, 0.1, PValueBound::kHoeffdingBentkus, FwerProcedure::kBonferroni);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_NEAR(ok->risks[0], static_cast<double>(total / n), 1e-15);
    EXPECT_EQ(LearnThenTest(losses, 0.5, 0.1, PValueBound::kBinomial, FwerProcedure::kBonferroni).status().code(),
              common::StatusCode::kInvalidArgument)
        << "fractional losses need hoeffding-bentkus";
    for (const double bad : {1.5, -0.1, 1.0 + 1e-12, std::nan(""), std::numeric_limits<double>::infinity(), -1e300}) {
      for (const size_t at : {size_t{0}, size_t{17}, n - 1}) {
        auto copy = losses;
        copy[1][at] = bad;
        auto r = LearnThenTest(copy, 0.5, 0.1, PValueBound::kHoeffdingBentkus, FwerProcedure::kBonferroni);
        ASSERT_FALSE(r.ok()) << bad << " at " << at;
        EXPECT_NE(r.status().message().find("configuration 1 on example " + std::to_string(at)), std::string::npos)
            << r.status().message();
      }
    }
  }
}

// Relative agreement, with an absolute floor for values that underflow.
void ExpectClose(double got, double want, const std::string& what) {
  EXPECT_LE(std::abs(got - want), 1e-11 * std::abs(want) + 1e-300) << what << ": " << got << " vs " << want;
}

TEST(OracleTest, LearnThenTestCdfTableMatchesBoostAtEveryK) {
  // One configuration with k failures for every k = 0..n: LTT's p-values come
  // from the pmf recurrence, the scalar functions from Boost's incomplete beta.
  for (const auto& [n, alpha] : std::vector<std::pair<size_t, double>>{
           {1, 0.3}, {2, 0.5}, {37, 0.05}, {130, 0.9}, {1000, 0.1}, {10000, 0.1}, {10000, 0.003}}) {
    BinaryLosses bits;
    std::vector<std::vector<double>> rows;
    for (size_t k = 0; k <= n; ++k) {
      std::vector<double> l(n, 0.0);
      std::fill(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(k), 1.0);
      ASSERT_TRUE(bits.Add(l).ok());
      if (n <= 1000) rows.push_back(std::move(l));
    }
    for (const PValueBound bound : {PValueBound::kBinomial, PValueBound::kBentkus, PValueBound::kHoeffdingBentkus}) {
      auto r = LearnThenTest(bits, alpha, 0.1, bound, FwerProcedure::kBonferroni);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      for (size_t k = 0; k <= n; ++k) {
        const double risk = static_cast<double>(k) / static_cast<double>(n);
        EXPECT_EQ(r->risks[k], risk);
        const double want = bound == PValueBound::kBinomial ? BinomialPValue(k, n, alpha)
                            : bound == PValueBound::kBentkus ? BentkusPValue(risk, n, alpha)
                                                             : HoeffdingBentkusPValue(risk, n, alpha);
        ExpectClose(r->p_values[k], want, "n " + std::to_string(n) + " alpha " + std::to_string(alpha) + " k " +
                                              std::to_string(k));
      }
      if (rows.empty()) continue;
      // The double form gives the same bits: the same sums, the same tables.
      auto d = LearnThenTest(rows, alpha, 0.1, bound, FwerProcedure::kBonferroni);
      ASSERT_TRUE(d.ok());
      EXPECT_EQ(d->risks, r->risks);
      EXPECT_EQ(d->p_values, r->p_values);
      EXPECT_EQ(d->valid, r->valid);
    }
  }
}

TEST(OracleTest, BinaryLossesPackEveryBit) {
  // Sizes around the 64-bit word: the popcount must see every loss and no padding.
  common::SplitMix64 rng(11);
  BinaryLosses bits;
  std::vector<std::vector<double>> rows;
  for (const size_t n : {size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{128}, size_t{1001}}) {
    std::vector<double> l(n);
    std::vector<uint8_t> b(n);
    size_t ones = 0;
    for (size_t i = 0; i < n; ++i) {
      b[i] = rng.NextDouble() < 0.3 ? 1 : 0;
      l[i] = b[i];
      ones += b[i];
    }
    ASSERT_TRUE(bits.Add(l).ok());
    bits.AddBytes(b);
    EXPECT_EQ(bits.Failures(bits.configurations() - 2), ones) << n;
    EXPECT_EQ(bits.Failures(bits.configurations() - 1), ones) << n;
    EXPECT_EQ(bits.examples(bits.configurations() - 1), n);
    rows.push_back(l);
    rows.push_back(l);
  }
  for (const FwerProcedure procedure : {FwerProcedure::kBonferroni, FwerProcedure::kFixedSequence}) {
    auto a = LearnThenTest(bits, 0.4, 0.2, PValueBound::kBinomial, procedure);
    auto b = LearnThenTest(rows, 0.4, 0.2, PValueBound::kBinomial, procedure);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->p_values, b->p_values);
    EXPECT_EQ(a->valid, b->valid);
    if (procedure == FwerProcedure::kBonferroni) {
      EXPECT_FALSE(a->valid.empty()) << "risk 0.3 < 0.4 on 1001 examples is certified";
    }
  }
  // A fractional loss is refused by name, and nothing is added.
  std::vector<double> bad = {0, 1, 0.5, 1};
  auto st = bits.Add(bad);
  EXPECT_EQ(st.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("example 2 is 0.5"), std::string::npos) << st.message();
  EXPECT_EQ(bits.configurations(), rows.size());
  BinaryLosses empty;
  EXPECT_FALSE(LearnThenTest(empty, 0.1, 0.1, PValueBound::kBinomial, FwerProcedure::kBonferroni).ok());
  empty.AddBytes({});
  auto none = LearnThenTest(empty, 0.1, 0.1, PValueBound::kBinomial, FwerProcedure::kBonferroni);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no calibration losses"), std::string::npos);
}

TEST(OracleTest, FixedSequenceStopsAtFirstFailure) {
  // Configurations 0..3 with risks 0, 0.02, 0.5, 0 on 200 examples.
  std::vector<std::vector<double>> losses(4, std::vector<double>(200, 0));
  for (int i = 0; i < 4; ++i) losses[1][i] = 1;
  for (int i = 0; i < 100; ++i) losses[2][i] = 1;
  auto fst = LearnThenTest(losses, 0.1, 0.1, PValueBound::kBinomial, FwerProcedure::kFixedSequence);
  ASSERT_TRUE(fst.ok());
  EXPECT_EQ(fst->valid, (std::vector<size_t>{0, 1})) << "stops at configuration 2";
  auto bonf = LearnThenTest(losses, 0.1, 0.1, PValueBound::kBinomial, FwerProcedure::kBonferroni);
  ASSERT_TRUE(bonf.ok());
  EXPECT_EQ(bonf->valid, (std::vector<size_t>{0, 1, 3}));
  std::vector<size_t> order = {3, 0, 2, 1};
  auto ordered = LearnThenTest(losses, 0.1, 0.1, PValueBound::kBinomial, FwerProcedure::kFixedSequence, order);
  ASSERT_TRUE(ordered.ok());
  EXPECT_EQ(ordered->valid, (std::vector<size_t>{3, 0}));
}

TEST(OracleTest, DegenerateInputsGiveErrorsNotNaN) {
  std::vector<double> one = {1.0}, two = {1.0, 1.0}, nan = {1.0, std::nan("")};
  EXPECT_EQ(ClassicalMean(one, 0.1).status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(ClassicalMean(nan, 0.1).status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(ClassicalMean(two, 1.5).status().code(), common::StatusCode::kInvalidArgument);
  auto equal = ClassicalMean(two, 0.1);
  ASSERT_TRUE(equal.ok());
  EXPECT_EQ(equal->width(), 0);
  EXPECT_FALSE(equal->notes.empty()) << "a zero-width interval is explained";
  std::vector<double> f3 = {1, 2, 3};
  EXPECT_EQ(PpiMean(two, f3, f3, 0.1).status().code(), common::StatusCode::kInvalidArgument) << "mismatched lengths";
  std::vector<double> constant = {0.5, 0.5};
  std::vector<double> y = {0.0, 1.0};
  auto c = PpiMean(y, constant, constant, 0.1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->lambda, 0.0) << "constant autorater falls back to classical";
  EXPECT_FALSE(c->notes.empty());
  EXPECT_FALSE(std::isnan(c->estimate));
  std::vector<Stratum> empty_stratum = {{"a", 0.5, {1, 2}, {1, 2}, {1, 2}}, {"b", 0.5, {}, {}, {1, 2}}};
  auto s = StratifiedPpiMean(empty_stratum, 0.1);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("stratum b"), std::string::npos) << s.status().message();
  std::vector<Stratum> bad_weights = {{"a", 0.5, {1, 2}, {1, 2}, {1, 2}}, {"b", 0.4, {1, 2}, {1, 2}, {1, 2}}};
  EXPECT_EQ(StratifiedPpiMean(bad_weights, 0.1).status().code(), common::StatusCode::kInvalidArgument);
  std::vector<double> many(100);
  for (int i = 0; i < 100; ++i) many[static_cast<size_t>(i)] = i * 0.37;
  std::vector<int64_t> judge(100, 0);
  EXPECT_EQ(ChainRuleMean(judge, many, {}, 0.1).status().code(), common::StatusCode::kInvalidArgument)
      << "continuous labels are not discrete";
  EXPECT_EQ(SummarizeSeeds({}, 0.1).status().code(), common::StatusCode::kInvalidArgument);
  std::vector<double> single = {0.4};
  EXPECT_EQ(SummarizeSeeds(single, 0.1)->lower, 0.4);
}

TEST(OracleTest, BootstrapOfAKnownMean) {
  common::SplitMix64 rng(5);
  std::vector<double> x(400);
  for (double& v : x) v = -std::log(1 - rng.NextDouble());  // Exp(1): skewed
  BootstrapOptions o;
  o.resamples = 4000;
  auto bca = BootstrapInterval(x, 0.1, o);
  o.method = BootstrapMethod::kPercentile;
  auto pct = BootstrapInterval(x, 0.1, o);
  ASSERT_TRUE(bca.ok() && pct.ok());
  // The normal-theory interval for comparison: mean -/+ 1.645 * sd / sqrt(n).
  auto classical = ClassicalMean(x, 0.1);
  EXPECT_NEAR(bca->lower, classical->lower, 0.03);
  EXPECT_NEAR(bca->upper, classical->upper, 0.03);
  EXPECT_GT(bca->upper - bca->estimate, bca->estimate - bca->lower) << "BCa leans right for a right-skewed mean";
  EXPECT_NEAR(pct->estimate, bca->estimate, 1e-12);
  std::vector<double> a = x, b = x;
  for (double& v : b) v -= 0.1;
  auto cmp = ComparePaired(a, b, 0.1, o);
  ASSERT_TRUE(cmp.ok());
  EXPECT_NEAR(cmp->difference.estimate, 0.1, 1e-12);
  EXPECT_EQ(cmp->p_not_greater, 0.0);
}

}  // namespace
}  // namespace shammie::analysis
