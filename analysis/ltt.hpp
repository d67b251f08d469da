// Learn-then-Test (Angelopoulos, Bates, Candes, Jordan, Lei 2021): pick the
// configurations whose risk is provably at most alpha, with family-wise error
// at most delta, from per-configuration losses on a calibration set.
//
// For each configuration, the null hypothesis is "risk > alpha"; its p-value
// comes from the mean loss R over n i.i.d. losses in [0, 1]:
//   Hoeffding:  exp(-n * h1(min(R, alpha), alpha)),  h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b)), 0 log 0 = 0
//   Bentkus:    e * BinomCDF(ceil(n R); n, alpha)
//   HB:         min(Hoeffding, Bentkus)
//   binomial:   BinomCDF(#failures; n, alpha) for binary losses (exact, tighter)
// Then a family-wise error procedure keeps the valid set: Bonferroni
// (p <= delta / m) or fixed-sequence testing along an order fixed before
// looking at the calibration data (accept while p <= delta, stop at the first
// failure).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace shammie::analysis {

double HoeffdingPValue(double risk, size_t n, double alpha);
double BentkusPValue(double risk, size_t n, double alpha);
double HoeffdingBentkusPValue(double risk, size_t n, double alpha);
// P(Binomial(n, alpha) <= failures).
double BinomialPValue(size_t failures, size_t n, double alpha);

enum class PValueBound { kHoeffding, kBentkus, kHoeffdingBentkus, kBinomial };
enum class FwerProcedure { kBonferroni, kFixedSequence };

struct LttResult {
  std::vector<double> risks;      // empirical risk per configuration
  std::vector<double> p_values;   // per configuration
  std::vector<size_t> valid;      // indices of configurations certified to have risk <= alpha
};

// losses[c][i]: loss of configuration c on calibration example i, in [0, 1]
// (configurations may have different numbers of examples)
// (for kBinomial, in {0, 1}). `order` (fixed sequence only) lists
// configuration indices in testing order; empty means 0, 1, 2, ...
common::Result<LttResult> LearnThenTest(const std::vector<std::vector<double>>& losses, double alpha, double delta,
                                        PValueBound bound, FwerProcedure procedure,
                                        std::span<const size_t> order = {});

}  // namespace shammie::analysis
