// Bootstrap confidence intervals and summaries over seeds: how researchers
// report a metric across replicates.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace shammie::analysis {

enum class BootstrapMethod { kPercentile, kBca };

struct BootstrapOptions {
  size_t resamples = 10000;
  uint64_t seed = 0;
  BootstrapMethod method = BootstrapMethod::kBca;
};

struct Interval {
  double estimate = 0;
  double lower = 0, upper = 0;
  double alpha = 0.05;
};

using Statistic = std::function<double(std::span<const double>)>;
double MeanOf(std::span<const double> x);

// Bootstrap interval of `statistic` (default: the mean) over i.i.d. values.
// BCa (Efron 1987) corrects bias and skew with the jackknife acceleration;
// it falls back to the percentile interval when every resample equals the
// estimate (documented; never NaN).
common::Result<Interval> BootstrapInterval(std::span<const double> values, double alpha,
                                           const BootstrapOptions& options = {}, const Statistic& statistic = MeanOf);

// Paired comparison of two methods on the same items (or seeds): the bootstrap
// interval of mean(a - b), and the share of resamples where the mean
// difference is <= 0 (a one-sided bootstrap p-value for "a > b").
struct PairedComparison {
  Interval difference;
  double p_not_greater = 1;
};
common::Result<PairedComparison> ComparePaired(std::span<const double> a, std::span<const double> b, double alpha,
                                               const BootstrapOptions& options = {});

// Mean and Student-t interval over replicates (e.g. seeds of one sweep point).
struct SeedSummary {
  size_t count = 0;
  double mean = 0, std_dev = 0;
  double lower = 0, upper = 0;  // equal to the mean when count == 1 (noted)
};
common::Result<SeedSummary> SummarizeSeeds(std::span<const double> values, double alpha);

}  // namespace shammie::analysis
