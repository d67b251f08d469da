#include "analysis/bootstrap.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>

#include "analysis/bayes_ppi.hpp"
#include "analysis/ppi.hpp"
#include "common/random.hpp"

namespace shammie::analysis {

double MeanOf(std::span<const double> x) {
  return std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
}

namespace {

double NormalCdf(double x) { return boost::math::cdf(boost::math::normal_distribution<double>(), x); }

common::Status CheckInputs(std::span<const double> values, double alpha, const BootstrapOptions& options) {
  if (!(alpha > 0 && alpha < 1)) return common::InvalidArgument("alpha must be in (0, 1)");
  if (values.size() < 2) return common::InvalidArgument("the bootstrap needs at least 2 values, got " + std::to_string(values.size()));
  if (options.resamples < 100) return common::InvalidArgument("the bootstrap needs at least 100 resamples");
  return CheckFinite(values, "values");
}

std::vector<double> Resample(std::span<const double> values, size_t resamples, uint64_t seed, const Statistic& stat) {
  common::SplitMix64 rng(seed ^ 0xbb67ae8584caa73bULL);
  std::vector<double> sample(values.size()), out(resamples);
  const int64_t last = static_cast<int64_t>(values.size()) - 1;
  for (size_t b = 0; b < resamples; ++b) {
    for (double& s : sample) s = values[static_cast<size_t>(rng.NextInt(0, last))];
    out[b] = stat(sample);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

common::Result<Interval> BootstrapInterval(std::span<const double> values, double alpha,
                                           const BootstrapOptions& options, const Statistic& statistic) {
  SHAMMIE_RETURN_IF_ERROR(CheckInputs(values, alpha, options));
  Interval out;
  out.alpha = alpha;
  out.estimate = statistic(values);
  std::vector<double> boot = Resample(values, options.resamples, options.seed, statistic);
  double lo_p = alpha / 2, hi_p = 1 - alpha / 2;
  if (options.method == BootstrapMethod::kBca) {
    const double below = static_cast<double>(std::lower_bound(boot.begin(), boot.end(), out.estimate) - boot.begin());
    const double prop = below / static_cast<double>(boot.size());
    // Jackknife acceleration.
    std::vector<double> jack(values.size()), rest(values.size() - 1);
    for (size_t i = 0; i < values.size(); ++i) {
      std::copy(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(i), rest.begin());
      std::copy(values.begin() + static_cast<std::ptrdiff_t>(i) + 1, values.end(), rest.begin() + static_cast<std::ptrdiff_t>(i));
      jack[i] = statistic(rest);
    }
    const double jm = MeanOf(jack);
    double num = 0, den = 0;
    for (double j : jack) {
      num += std::pow(jm - j, 3);
      den += std::pow(jm - j, 2);
    }
    if (prop > 0 && prop < 1 && den > 0) {
      const double z0 = NormalQuantile(prop);
      const double a = num / (6 * std::pow(den, 1.5));
      auto adjust = [&](double p) {
        const double z = NormalQuantile(p);
        return NormalCdf(z0 + (z0 + z) / (1 - a * (z0 + z)));
      };
      lo_p = adjust(alpha / 2);
      hi_p = adjust(1 - alpha / 2);
    }
  }
  out.lower = Quantile(boot, lo_p);
  out.upper = Quantile(boot, hi_p);
  return out;
}

common::Result<PairedComparison> ComparePaired(std::span<const double> a, std::span<const double> b, double alpha,
                                               const BootstrapOptions& options) {
  if (a.size() != b.size()) {
    return common::InvalidArgument("paired comparison needs equal lengths: " + std::to_string(a.size()) + " vs " +
                                   std::to_string(b.size()));
  }
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(a, "first series"));
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(b, "second series"));
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  PairedComparison out;
  SHAMMIE_ASSIGN_OR_RETURN(out.difference, BootstrapInterval(d, alpha, options));
  std::vector<double> boot = Resample(d, options.resamples, options.seed, MeanOf);
  const double not_greater = static_cast<double>(std::upper_bound(boot.begin(), boot.end(), 0.0) - boot.begin());
  out.p_not_greater = not_greater / static_cast<double>(boot.size());
  return out;
}

common::Result<SeedSummary> SummarizeSeeds(std::span<const double> values, double alpha) {
  if (!(alpha > 0 && alpha < 1)) return common::InvalidArgument("alpha must be in (0, 1)");
  if (values.empty()) return common::InvalidArgument("no values to summarize");
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(values, "values"));
  SeedSummary s;
  s.count = values.size();
  s.mean = MeanOf(values);
  s.lower = s.upper = s.mean;
  if (values.size() == 1) return s;
  double ss = 0;
  for (double v : values) ss += (v - s.mean) * (v - s.mean);
  s.std_dev = std::sqrt(ss / static_cast<double>(values.size() - 1));
  const double t = boost::math::quantile(boost::math::students_t_distribution<double>(static_cast<double>(values.size() - 1)),
                                         1 - alpha / 2);
  const double h = t * s.std_dev / std::sqrt(static_cast<double>(values.size()));
  s.lower = s.mean - h;
  s.upper = s.mean + h;
  return s;
}

}  // namespace shammie::analysis
