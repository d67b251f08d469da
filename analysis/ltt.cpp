#include "analysis/ltt.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include <boost/math/distributions/binomial.hpp>

namespace shammie::analysis {

namespace {

// h1(a, b) with 0 log 0 = 0 (PAPERS.md §0.2.2: the reference code returns NaN at a = 0).
double H1(double a, double b) {
  double out = 0;
  if (a > 0) out += a * std::log(a / b);
  if (a < 1) out += (1 - a) * std::log((1 - a) / (1 - b));
  return out;
}

double BinomCdf(double k, size_t n, double p) {
  if (k < 0) return 0;
  if (k >= static_cast<double>(n)) return 1;
  return boost::math::cdf(boost::math::binomial_distribution<double>(static_cast<double>(n), p), k);
}

// Sum, "non-binary mass" sum l (1 - l), and the least l (1 - l) of a loss
// vector in one pass; l (1 - l) >= 0 exactly when 0 <= l <= 1, so one
// minimum checks the range. GCC vector extensions give SIMD adds without
// -ffast-math (which would let the compiler reorder every floating-point sum
// in the file). The lanes fix the summation order; the AVX2 clone runs the
// same operations in the same order (no FMA contraction under -std=c++20),
// so both clones give the same bits. This pass reads 8 bytes per loss and
// runs at memory speed (docs/benchmarks.md).
struct LossStats {
  double sum = 0, non_binary = 0, min_non_binary = 0;
};

__attribute__((target_clones("avx2", "default"))) LossStats StatsOf(const std::vector<double>& l) {
  typedef double v4 __attribute__((vector_size(32)));
  constexpr size_t kLanes = 4;  // 4 x 4 doubles in flight
  v4 sum[kLanes] = {}, frac[kLanes] = {}, lo[kLanes];
  for (size_t k = 0; k < kLanes; ++k) lo[k] = v4{0, 0, 0, 0};
  const size_t n = l.size();
  size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    for (size_t k = 0; k < kLanes; ++k) {
      v4 v;
      std::memcpy(&v, &l[i + 4 * k], sizeof(v));
      const v4 t = v * (1 - v);
      sum[k] += v;
      frac[k] += t;
      lo[k] = t < lo[k] ? t : lo[k];
      // NaN compares false and would hide from the minimum: it reaches the sum.
    }
  }
  LossStats st;
  double mn = 0;
  for (size_t k = 0; k < kLanes; ++k) {
    st.sum += (sum[k][0] + sum[k][1]) + (sum[k][2] + sum[k][3]);
    st.non_binary += (frac[k][0] + frac[k][1]) + (frac[k][2] + frac[k][3]);
    mn = std::min({mn, lo[k][0], lo[k][1], lo[k][2], lo[k][3]});
  }
  for (; i < n; ++i) {
    const double t = l[i] * (1 - l[i]);
    st.sum += l[i];
    st.non_binary += t;
    mn = std::min(mn, t);
  }
  st.min_non_binary = mn;
  return st;
}

// StatsOf for every configuration. The pass is bound by memory bandwidth,
// which one core does not saturate (docs/benchmarks.md: 1.6x from a second
// core here): large inputs are split over up to 8 threads by configuration.
// Each configuration is summed by one thread in the same order, so the result
// does not depend on the thread count.
std::vector<LossStats> StatsOfAll(const std::vector<std::vector<double>>& losses) {
  std::vector<LossStats> stats(losses.size());
  size_t total = 0;
  for (const auto& l : losses) total += l.size();
  constexpr size_t kPerThread = size_t{1} << 21;  // 16 MB of losses: below that a thread costs more than it saves
  const size_t threads = std::min<size_t>({std::max(1u, std::thread::hardware_concurrency()), 8, losses.size(),
                                           std::max<size_t>(1, total / kPerThread)});
  auto work = [&](size_t part) {
    for (size_t c = part; c < losses.size(); c += threads) stats[c] = StatsOf(losses[c]);
  };
  std::vector<std::thread> pool;
  for (size_t part = 1; part < threads; ++part) pool.emplace_back(work, part);
  work(0);
  for (auto& t : pool) t.join();
  return stats;
}

}  // namespace

double HoeffdingPValue(double risk, size_t n, double alpha) {
  return std::exp(-static_cast<double>(n) * H1(std::min(risk, alpha), alpha));
}

double BentkusPValue(double risk, size_t n, double alpha) {
  // ceil(n R) with a guard: ceil(0.07 * 100) is 8 in floating point (PAPERS.md §0.2.1).
  const double k = std::ceil(static_cast<double>(n) * risk - 1e-9);
  // From the median on, the CDF is >= 1/2 and e * CDF > 1: p = 1 without
  // the incomplete beta function. A binomial's median is floor(n alpha) or
  // ceil(n alpha) (Kaas and Buhrman 1980), so k >= ceil(n alpha) suffices.
  if (k >= std::ceil(static_cast<double>(n) * alpha)) return 1.0;
  return std::min(1.0, std::exp(1.0) * BinomCdf(k, n, alpha));
}

double HoeffdingBentkusPValue(double risk, size_t n, double alpha) {
  return std::min(HoeffdingPValue(risk, n, alpha), BentkusPValue(risk, n, alpha));
}

double BinomialPValue(size_t failures, size_t n, double alpha) {
  return BinomCdf(static_cast<double>(failures), n, alpha);
}

common::Result<LttResult> LearnThenTest(const std::vector<std::vector<double>>& losses, double alpha, double delta,
                                        PValueBound bound, FwerProcedure procedure, std::span<const size_t> order) {
  if (!(alpha > 0 && alpha < 1)) return common::InvalidArgument("alpha (risk level) must be in (0, 1)");
  if (!(delta > 0 && delta < 1)) return common::InvalidArgument("delta must be in (0, 1)");
  if (losses.empty()) return common::InvalidArgument("no configurations to test");
  LttResult out;
  const std::vector<LossStats> stats = StatsOfAll(losses);
  for (size_t c = 0; c < losses.size(); ++c) {
    const size_t n = losses[c].size();  // configurations may have different numbers of examples
    if (n == 0) return common::InvalidArgument("configuration " + std::to_string(c) + " has no calibration losses");
    const std::vector<double>& l = losses[c];
    const LossStats& st = stats[c];
    const double total = st.sum;
    if (!std::isfinite(total) || !(st.min_non_binary >= 0)) {
      for (size_t k = 0; k < n; ++k) {
        if (!(l[k] >= 0 && l[k] <= 1)) {
          return common::InvalidArgument("loss of configuration " + std::to_string(c) + " on example " +
                                         std::to_string(k) + " is " + std::to_string(l[k]) + "; losses must be in [0, 1]");
        }
      }
    }
    if (bound == PValueBound::kBinomial && st.non_binary != 0) {
      return common::InvalidArgument("the binomial p-value needs binary (0/1) losses; use hoeffding-bentkus");
    }
    const size_t failures = static_cast<size_t>(std::llround(total));
    const double risk = total / static_cast<double>(n);
    double p = 1;
    switch (bound) {
      case PValueBound::kHoeffding: p = HoeffdingPValue(risk, n, alpha); break;
      case PValueBound::kBentkus: p = BentkusPValue(risk, n, alpha); break;
      case PValueBound::kHoeffdingBentkus: p = HoeffdingBentkusPValue(risk, n, alpha); break;
      case PValueBound::kBinomial: p = BinomialPValue(failures, n, alpha); break;
    }
    out.risks.push_back(risk);
    out.p_values.push_back(p);
  }
  if (procedure == FwerProcedure::kBonferroni) {
    const double threshold = delta / static_cast<double>(losses.size());
    for (size_t c = 0; c < losses.size(); ++c) {
      if (out.p_values[c] <= threshold) out.valid.push_back(c);
    }
    return out;
  }
  std::vector<size_t> sequence(order.begin(), order.end());
  if (sequence.empty()) {
    sequence.resize(losses.size());
    std::iota(sequence.begin(), sequence.end(), 0);
  }
  std::vector<bool> seen(losses.size(), false);
  for (size_t c : sequence) {
    if (c >= losses.size() || seen[c]) {
      return common::InvalidArgument("the testing order must list distinct configuration indices below " +
                                     std::to_string(losses.size()));
    }
    seen[c] = true;
  }
  for (size_t c : sequence) {
    if (out.p_values[c] > delta) break;
    out.valid.push_back(c);
  }
  return out;
}

}  // namespace shammie::analysis
