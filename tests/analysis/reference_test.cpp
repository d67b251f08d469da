// shammie's statistics against an independent Python reference
// (reference_stats.py, numpy/scipy) on the same random data: deterministic
// quantities must agree to 1e-9 relative.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "analysis/bayes_ppi.hpp"
#include "analysis/bootstrap.hpp"
#include "analysis/ltt.hpp"
#include "analysis/ppi.hpp"
#include "common/random.hpp"
#include "tests/test_util.hpp"

namespace shammie::analysis {
namespace {

using nlohmann::json;

struct Data {
  std::vector<double> y, f, fu;
};

// A biased, noisy autorater: f = y + bias + noise * e.
Data MakeData(common::SplitMix64& rng, size_t n, size_t big_n, double bias, double noise, double y_mean = 0.3) {
  Data d;
  for (size_t i = 0; i < n + big_n; ++i) {
    double y = y_mean + rng.NextNormal();
    double f = y + bias + noise * rng.NextNormal();
    if (i < n) {
      d.y.push_back(y);
      d.f.push_back(f);
    } else {
      d.fu.push_back(f);
    }
  }
  return d;
}

json RunReference(const json& cases) {
  testing::ScratchDir dir("reference");
  testing::WriteFile(dir.File("cases.json"), cases.dump());
  auto r = testing::RunCommand("/usr/bin/python3 " SHAMMIE_SOURCE_DIR "/tests/analysis/reference_stats.py < " +
                               dir.File("cases.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return json::parse(r.output);
}

void Near(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * std::max(1.0, std::abs(want))) << what;
}

TEST(ReferenceTest, AgreesWithNumpyScipy) {
  common::SplitMix64 rng(2024);
  json cases = json::array();
  std::vector<std::function<void(const json&)>> checks;

  for (int t = 0; t < 5; ++t) {
    Data d = MakeData(rng, 20 + 30 * t, 200 + 500 * t, 0.2 * t, 0.5 + 0.3 * t);
    const double alpha = 0.05 + 0.05 * t;
    cases.push_back({{"type", "classical"}, {"y", d.y}, {"alpha", alpha}});
    checks.push_back([d, alpha](const json& want) {
      auto e = ClassicalMean(d.y, alpha);
      ASSERT_TRUE(e.ok());
      Near(e->estimate, want["estimate"], "classical estimate");
      Near(e->lower, want["lower"], "classical lower");
      Near(e->upper, want["upper"], "classical upper");
    });
    for (std::string mode : {"fixed", "clip", "free"}) {
      cases.push_back({{"type", "ppi"}, {"y", d.y}, {"f", d.f}, {"fu", d.fu}, {"alpha", alpha}, {"mode", mode},
                       {"lambda", 0.7}});
      checks.push_back([d, alpha, mode](const json& want) {
        PpiOptions o;
        o.lambda_mode = mode == "fixed" ? LambdaMode::kFixed : mode == "clip" ? LambdaMode::kTunedClip : LambdaMode::kTunedFree;
        o.lambda = 0.7;
        auto e = PpiMean(d.y, d.f, d.fu, alpha, o);
        ASSERT_TRUE(e.ok()) << e.status().ToString();
        Near(e->estimate, want["estimate"], mode + " estimate");
        Near(e->lower, want["lower"], mode + " lower");
        Near(e->upper, want["upper"], mode + " upper");
        Near(e->lambda, want["lambda"], mode + " lambda");
        Near(e->effective_n, want["effective_n"], mode + " effective n");
      });
    }
  }

  {  // Stratified, heterogeneous autorater quality.
    std::vector<Stratum> strata;
    json js = json::array();
    const double weights[3] = {0.5, 0.3, 0.2};
    for (int k = 0; k < 3; ++k) {
      Data d = MakeData(rng, 15 + 10 * k, 300, 0.1 * k, 0.2 + 1.5 * k);
      strata.push_back({"s" + std::to_string(k), weights[k], d.y, d.f, d.fu});
      js.push_back({{"w", weights[k]}, {"y", d.y}, {"f", d.f}, {"fu", d.fu}});
    }
    for (std::string mode : {"clip", "free"}) {
      cases.push_back({{"type", "stratppi"}, {"strata", js}, {"alpha", 0.1}, {"mode", mode}});
      checks.push_back([strata, mode](const json& want) {
        PpiOptions o;
        o.lambda_mode = mode == "clip" ? LambdaMode::kTunedClip : LambdaMode::kTunedFree;
        auto e = StratifiedPpiMean(strata, 0.1, o);
        ASSERT_TRUE(e.ok()) << e.status().ToString();
        Near(e->combined.estimate, want["estimate"], "stratppi estimate");
        Near(e->combined.lower, want["lower"], "stratppi lower");
        Near(e->combined.upper, want["upper"], "stratppi upper");
        for (size_t k = 0; k < 3; ++k) Near(e->strata[k].lambda, want["lambdas"][k], "stratum lambda");
      });
    }
    for (std::string kind : {"proportional", "optimal"}) {
      cases.push_back({{"type", "allocation"}, {"strata", js}, {"kind", kind}, {"budget", 503}, {"min", 5}});
      checks.push_back([strata, kind](const json& want) {
        auto a = AllocateLabels(strata, 503, kind == "optimal" ? Allocation::kOptimal : Allocation::kProportional, 5);
        ASSERT_TRUE(a.ok());
        EXPECT_EQ(json(*a), want["allocation"]) << kind;
      });
    }
  }

  {  // LTT p-values, including the pitfalls: R = 0 and ceil(0.07 * 100).
    std::vector<double> risks = {0.0, 0.01, 0.07, 0.0999, 0.1, 0.13, 0.5, 1.0};
    std::vector<size_t> failures = {0, 3, 7, 10, 11, 40};
    cases.push_back({{"type", "ltt"}, {"n", 100}, {"alpha", 0.1}, {"risks", risks}, {"failures", failures}});
    checks.push_back([risks, failures](const json& want) {
      for (size_t i = 0; i < risks.size(); ++i) {
        Near(HoeffdingPValue(risks[i], 100, 0.1), want["p"][i]["hoeffding"], "hoeffding");
        Near(BentkusPValue(risks[i], 100, 0.1), want["p"][i]["bentkus"], "bentkus at " + std::to_string(risks[i]));
        Near(HoeffdingBentkusPValue(risks[i], 100, 0.1), want["p"][i]["hb"], "hb");
        EXPECT_FALSE(std::isnan(HoeffdingPValue(risks[i], 100, 0.1)));
      }
      for (size_t i = 0; i < failures.size(); ++i) Near(BinomialPValue(failures[i], 100, 0.1), want["binomial"][i], "binomial");
    });
  }

  {  // Chain rule, a 3-level judge with a non-monotone confusion, and Likert labels.
    std::vector<int64_t> a, au;
    std::vector<double> h;
    const double p_h[3] = {0.1, 0.9, 0.5};
    for (int i = 0; i < 150; ++i) {
      int64_t j = rng.NextInt(0, 2);
      a.push_back(j);
      h.push_back(rng.NextDouble() < p_h[j] ? 1 : 0);
    }
    for (int i = 0; i < 2000; ++i) au.push_back(rng.NextInt(0, 2));
    cases.push_back({{"type", "chain_rule"}, {"a", a}, {"h", h}, {"au", au}, {"prior", 0.5}});
    checks.push_back([a, h, au](const json& want) {
      BayesOptions o;
      o.prior = 0.5;
      o.draws = 1000;
      auto e = ChainRuleMean(a, h, au, 0.1, o);
      ASSERT_TRUE(e.ok());
      Near(e->posterior_mean, want["posterior_mean"], "chain rule mean");
    });
    std::vector<double> likert;
    for (size_t i = 0; i < h.size(); ++i) likert.push_back(static_cast<double>(rng.NextInt(1, 5)));
    cases.push_back({{"type", "chain_rule"}, {"a", a}, {"h", likert}, {"au", au}, {"prior", 1.0}});
    checks.push_back([a, likert, au](const json& want) {
      BayesOptions o;
      o.draws = 1000;
      auto e = ChainRuleMean(a, likert, au, 0.1, o);
      ASSERT_TRUE(e.ok());
      Near(e->posterior_mean, want["posterior_mean"], "chain rule mean (Likert)");
    });
  }

  {
    std::vector<double> x = {0.71, 0.69, 0.74, 0.70, 0.66};
    cases.push_back({{"type", "seeds"}, {"x", x}, {"alpha", 0.05}});
    checks.push_back([x](const json& want) {
      auto s = SummarizeSeeds(x, 0.05);
      ASSERT_TRUE(s.ok());
      Near(s->mean, want["mean"], "seed mean");
      Near(s->lower, want["lower"], "seed lower");
      Near(s->upper, want["upper"], "seed upper");
    });
  }

  json results = RunReference(cases);
  ASSERT_EQ(results.size(), checks.size());
  for (size_t i = 0; i < checks.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + " (" + cases[i]["type"].get<std::string>() + ")");
    checks[i](results[i]);
  }
}

}  // namespace
}  // namespace shammie::analysis
