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

#include <cstdint>
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
// P(Binomial(n, p) <= k) for real k (0 below 0, 1 from n on), Boost's incomplete beta.
double BinomialCdf(double k, size_t n, double p);

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
// The binomial CDFs come from one table per calibration size (a pmf
// recurrence from Boost's value at the mode): they agree with BinomialCdf to
// about 1e-12 relative, not to the last bit.
common::Result<LttResult> LearnThenTest(const std::vector<std::vector<double>>& losses, double alpha, double delta,
                                        PValueBound bound, FwerProcedure procedure,
                                        std::span<const size_t> order = {});

// Binary (0/1) losses of many configurations, bit-packed: 64 losses to a
// word, 1/64 of the memory of doubles. Miscoverage and admission indicators
// (conformal prediction, risk control) are binary; for them LTT reads 1.25 MB
// where doubles take 80 MB (1,000 configurations x 10^4 examples), and is no
// longer bound by memory bandwidth (docs/benchmarks.md).
class BinaryLosses {
 public:
  // Appends one configuration's losses. Fails, adding nothing, unless every
  // loss is exactly 0 or 1 (the message names the example).
  common::Status Add(std::span<const double> losses);
  // From nonzero/zero bytes (e.g. a numpy bool array).
  void AddBytes(std::span<const uint8_t> losses);

  size_t configurations() const { return examples_.size(); }
  size_t examples(size_t c) const { return examples_[c]; }
  // Number of losses equal to 1 (popcount of the configuration's words).
  size_t Failures(size_t c) const;

 private:
  template <typename T>
  void Pack(std::span<const T> losses);  // one configuration, nonzero = 1

  std::vector<uint64_t> words_;    // configuration c: words_[offset_[c], offset_[c] + ceil(examples_[c] / 64))
  std::vector<size_t> offset_, examples_;
};

// LTT over binary losses: the same risks, p-values and valid set as the
// double form on the same 0/1 values (every bound is allowed).
common::Result<LttResult> LearnThenTest(const BinaryLosses& losses, double alpha, double delta, PValueBound bound,
                                        FwerProcedure procedure, std::span<const size_t> order = {});

}  // namespace shammie::analysis
