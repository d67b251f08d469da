// Bayesian prediction-powered inference (Hofer et al. 2024): the chain-rule
// model for discrete autoraters, and its binned form for continuous scores.
//
// Model (discrete judge A with categories a, human label H with values h):
//   P(A = a)        ~ Dirichlet(prior, ..., prior)   from ALL n + N judge outputs
//   P(H = h | A = a) ~ Dirichlet(prior, ..., prior)   from the n labeled pairs with A = a
//   theta = E[H] = sum_a P(A = a) * sum_h h * P(H = h | A = a)
// The posteriors are independent and conjugate, so the posterior mean is exact
// and the credible interval comes from Monte-Carlo draws (seeded, portable).
// It is Bayesian post-stratification on the judge's output: H may relate to A
// in any (non-linear, non-monotone) way.
//
// Binned model (continuous score S): cut S into K quantile bins computed on
// all n + N scores, then the chain rule over bins.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace shammie::analysis {

struct BayesOptions {
  double prior = 1.0;      // Dirichlet concentration of every cell (1 = uniform)
  size_t draws = 100000;   // Monte-Carlo draws for the interval
  uint64_t seed = 0;
};

struct BayesEstimate {
  std::string method;        // "bayes-chain-rule" or "bayes-binned"
  double posterior_mean = 0;  // exact
  double posterior_sd = 0;    // Monte-Carlo
  double lower = 0, upper = 0;  // equal-tailed credible interval
  double alpha = 0.1;
  size_t categories = 0;      // judge categories (or bins) used
  std::vector<std::string> notes;
  double width() const { return upper - lower; }
};

// Judge outputs are integers (category ids); human labels take at most 32
// distinct values (binary, Likert, ...). The label's support is the set of
// observed values, and {0, 1} whenever every label is 0 or 1.
common::Result<BayesEstimate> ChainRuleMean(std::span<const int64_t> judge_labeled, std::span<const double> human,
                                            std::span<const int64_t> judge_unlabeled, double alpha,
                                            const BayesOptions& options = {});

common::Result<BayesEstimate> BinnedChainRuleMean(std::span<const double> score_labeled, std::span<const double> human,
                                                  std::span<const double> score_unlabeled, size_t bins, double alpha,
                                                  const BayesOptions& options = {});

// Labeled-only baseline for a binary label: theta ~ Beta(prior + #1, prior + #0).
common::Result<BayesEstimate> BetaBinomialMean(std::span<const double> human, double alpha,
                                               const BayesOptions& options = {});

// Quantile of `values` at p in [0, 1] with linear interpolation (numpy's default).
double Quantile(std::vector<double> values, double p);

}  // namespace shammie::analysis
