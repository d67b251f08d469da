// Prediction-powered inference for a population mean (Angelopoulos et al.
// 2023; PPI++: Angelopoulos, Duchi, Zrnic 2023) and its stratified version
// (StratPPI: Fisch et al. 2024). Pure functions on plain vectors; no I/O.
//
// Data: n labeled pairs (y_i, f_i) — human label and autorater prediction on
// the same item — and N unlabeled predictions f~_j.
//
// Conventions (stated because libraries differ, PAPERS.md §0.2.4):
// - every variance and covariance uses ddof = 1 (unbiased);
// - the tuned weight is lambda = Cov_lab(y, f) / ((1 + n/N) * Var_pooled(f)),
//   Var_pooled over the n + N predictions together (ppi_py's and GLIDE's
//   choice), clipped to [0, 1] unless LambdaMode::kTunedFree;
// - a constant autorater (Var(f) = 0) gets lambda = 0 (classical), with a note;
// - the estimate is  lambda * mean(f~) + mean(y - lambda * f)  and its
//   variance  lambda^2 Var(f~)/N + Var(y - lambda f)/n.
// Inputs with NaN/inf, mismatched lengths or fewer than 2 labeled (or
// unlabeled) points are InvalidArgument errors; no function returns NaN.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace shammie::analysis {

enum class LambdaMode {
  kFixed,       // use PpiOptions::lambda (1 = plain PPI, 0 = classical)
  kTunedClip,   // PPI++ power tuning, clipped to [0, 1] (default)
  kTunedFree,   // PPI++ power tuning, unclipped
};

enum class IntervalKind {
  kNormal,     // CLT interval: estimate -/+ z_{1-alpha/2} * se
  kHoeffding,  // CLT-free, for labels and predictions in [0, 1] and a fixed lambda in [0, 1]:
               // Hoeffding's inequality on each mean, alpha split in proportion to the ranges
};

struct PpiOptions {
  LambdaMode lambda_mode = LambdaMode::kTunedClip;
  double lambda = 1.0;  // for kFixed
  IntervalKind interval = IntervalKind::kNormal;
};

struct MeanEstimate {
  std::string method;      // "classical", "ppi", "ppi++", "stratppi"
  double estimate = 0;
  double std_error = 0;    // for kHoeffding: the normal-theory se, for reference
  double lower = 0, upper = 0;
  double alpha = 0.1;
  double lambda = 0;       // PPI weight (0 for classical)
  double effective_n = 0;  // labeled points classical inference would need for the same variance
  std::vector<std::string> notes;  // documented fallbacks that were applied
  double width() const { return upper - lower; }
};

// Checks that every value is finite; `what` names the input in the message.
common::Status CheckFinite(std::span<const double> values, const std::string& what);

// Classical: mean of the labels with a normal (or Hoeffding, labels in [0, 1]) interval.
common::Result<MeanEstimate> ClassicalMean(std::span<const double> y, double alpha,
                                           IntervalKind interval = IntervalKind::kNormal);

// PPI / PPI++ for the mean.
common::Result<MeanEstimate> PpiMean(std::span<const double> y, std::span<const double> f,
                                     std::span<const double> f_unlabeled, double alpha,
                                     const PpiOptions& options = {});

// The tuned lambda alone (see conventions above); 0 when Var(f) = 0.
double TunedLambda(std::span<const double> y, std::span<const double> f, std::span<const double> f_unlabeled,
                   bool clip);

// ---- Stratified PPI ----

struct Stratum {
  std::string name;
  double weight = 0;  // population share P(X in stratum); weights must sum to 1
  std::vector<double> y, f, f_unlabeled;
};

struct StratumResult {
  std::string name;
  double weight = 0;
  double estimate = 0, variance = 0, lambda = 0;
  size_t n = 0, n_unlabeled = 0;
};

struct StratifiedEstimate {
  MeanEstimate combined;  // method "stratppi"
  std::vector<StratumResult> strata;
};

// Per-stratum PPI++ (each stratum its own lambda, per `options`), combined as
// sum_k w_k theta_k with variance sum_k w_k^2 V_k. Each stratum needs >= 2
// labeled and >= 2 unlabeled points; weights must be positive and sum to 1
// (within 1e-9).
common::Result<StratifiedEstimate> StratifiedPpiMean(const std::vector<Stratum>& strata, double alpha,
                                                     const PpiOptions& options = {});

// The same from flat arrays: stratum codes in [0, K) for every labeled and
// unlabeled item, K weights and names. Reads the (large) unlabeled arrays
// twice and copies nothing of them: the form for 10^6+ autorater outputs.
common::Result<StratifiedEstimate> StratifiedPpiMean(std::span<const double> y, std::span<const double> f,
                                                     std::span<const int32_t> stratum,
                                                     std::span<const double> f_unlabeled,
                                                     std::span<const int32_t> stratum_unlabeled,
                                                     std::span<const double> weights,
                                                     const std::vector<std::string>& names, double alpha,
                                                     const PpiOptions& options = {});

enum class Allocation { kProportional, kOptimal };

// How to split a budget of `budget` labels across strata, from pilot data in
// `strata` (its labeled pairs estimate each stratum's residual spread):
// proportional n_k ~ w_k, or optimal (Neyman) n_k ~ w_k * sd_k(y - lambda_k f).
// Integers by largest remainder, each at least `min_per_stratum`.
common::Result<std::vector<size_t>> AllocateLabels(const std::vector<Stratum>& strata, size_t budget,
                                                   Allocation allocation, size_t min_per_stratum = 2);

// Labels classical inference needs for a normal interval of the given width
// with per-label variance `variance`: ceil((2 z sqrt(variance) / width)^2).
size_t LabelsForWidth(double variance, double width, double alpha);

// Normal quantile z_p (Boost.Math).
double NormalQuantile(double p);

}  // namespace shammie::analysis
