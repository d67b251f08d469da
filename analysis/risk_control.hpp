// Risk-controlling configuration selection: Pareto Testing (Laufer-Goldshtein
// et al., ICLR 2023) and the region of interest of guided BO (TMLR 2024).
//
// Given per-example losses of m configurations on a validation split and on a
// calibration split, with constrained losses (each must have risk <= alpha_i)
// and one free objective (to minimize, e.g. cost):
//   (a) on validation, keep the Pareto front over (risks..., free objective),
//       restricted to the region of interest: every constrained risk at most
//       the ROI's upper bound (configurations above it cannot pass);
//   (b) order the front by its validation p-value (max over constraints of
//       the left-tail HB p-value), or by validation risk with one constraint;
//   (c) on calibration, fixed-sequence test (p <= delta, max over
//       constraints) and stop at the first failure;
//   (d) among accepted configurations, return the one with the lowest mean
//       free objective on calibration.
// Guarantee: P(the chosen configuration has any risk_i > alpha_i) <= delta.
// Adaptive search (Bayesian optimization) supplies `candidates`: the
// configurations it evaluated; the rest of the procedure is unchanged.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "analysis/ltt.hpp"
#include "common/status.hpp"

namespace shammie::analysis {

struct RegionOfInterest {
  double limit = 0;  // largest empirical risk that passes the level-delta test on n_cal examples
  double lower = 0;  // validation risks below this are clearly safer than needed
  double upper = 0;  // validation risks above this are unlikely to pass
};

// guidebo's `ideal_interval` (fixed-sequence testing): a 10,000-point grid
// on [0, alpha] for limit and lower, and on [limit, 1] for upper, with
// left/right-tail HB p-values (binomial ones for binary losses).
RegionOfInterest ComputeRegionOfInterest(double alpha, double delta, size_t n_cal, size_t n_val,
                                         double delta_prime = 0.01, bool binary = false);

struct SplitLosses {
  // constraint[c][k][i]: loss of configuration k on example i for constraint c, in [0, 1]
  std::vector<std::vector<std::vector<double>>> constraint;
  // free_objective[k][i]: the objective to minimize
  std::vector<std::vector<double>> free_objective;
};

struct RiskControlOptions {
  std::vector<double> alphas;  // one per constraint
  double delta = 0.1;
  bool binary = false;         // losses are 0/1: exact binomial p-values
  double delta_prime = 0.01;   // ROI tolerance
};

struct RiskControlResult {
  std::optional<size_t> chosen;   // configuration index; nullopt if none could be certified
  std::vector<size_t> tested;     // the ordered candidates (front in the ROI)
  std::vector<size_t> accepted;   // accepted by fixed-sequence testing
  std::vector<double> calibration_p_values;  // for `tested`, same order
};

// `candidates`: configurations to consider (empty: all).
common::Result<RiskControlResult> SelectRiskControlled(const SplitLosses& validation, const SplitLosses& calibration,
                                                       const RiskControlOptions& options,
                                                       std::span<const size_t> candidates = {});

// Left- and right-tail p-values used above (exposed for tests).
double LeftTailPValue(double risk, size_t n, double alpha, bool binary);
double RightTailPValue(double risk, size_t n, double alpha, bool binary);

}  // namespace shammie::analysis
