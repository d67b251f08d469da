#include "analysis/ltt.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

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

// Sum, range and "non-binary mass" sum l (1 - l) of a loss vector in one
// pass. GCC vector extensions give SIMD adds without -ffast-math (which
// would let the compiler reorder every floating-point sum in the file).
struct LossStats {
  double sum = 0, min = 0, max = 0, non_binary = 0;
};

LossStats StatsOf(const std::vector<double>& l) {
  typedef double v2 __attribute__((vector_size(16)));
  constexpr size_t kLanes = 4;  // 4 x 2 doubles in flight
  v2 sum[kLanes] = {}, frac[kLanes] = {}, lo[kLanes], hi[kLanes];
  for (size_t k = 0; k < kLanes; ++k) {
    lo[k] = v2{1, 1};
    hi[k] = v2{0, 0};
  }
  const size_t n = l.size();
  size_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    for (size_t k = 0; k < kLanes; ++k) {
      v2 v;
      std::memcpy(&v, &l[i + 2 * k], sizeof(v));
      sum[k] += v;
      frac[k] += v * (1 - v);
      lo[k] = v < lo[k] ? v : lo[k];
      hi[k] = v > hi[k] ? v : hi[k];
      // NaN compares false both ways and would hide: make it reach the sum.
    }
  }
  LossStats st;
  double mn = 1, mx = 0;
  for (size_t k = 0; k < kLanes; ++k) {
    st.sum += sum[k][0] + sum[k][1];
    st.non_binary += frac[k][0] + frac[k][1];
    mn = std::min({mn, lo[k][0], lo[k][1]});
    mx = std::max({mx, hi[k][0], hi[k][1]});
  }
  for (; i < n; ++i) {
    st.sum += l[i];
    st.non_binary += l[i] * (1 - l[i]);
    mn = std::min(mn, l[i]);
    mx = std::max(mx, l[i]);
  }
  st.min = mn;
  st.max = mx;
  return st;
}

}  // namespace

double HoeffdingPValue(double risk, size_t n, double alpha) {
  return std::exp(-static_cast<double>(n) * H1(std::min(risk, alpha), alpha));
}

double BentkusPValue(double risk, size_t n, double alpha) {
  // ceil(n R) with a guard: ceil(0.07 * 100) is 8 in floating point (PAPERS.md §0.2.1).
  const double k = std::ceil(static_cast<double>(n) * risk - 1e-9);
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
  for (size_t c = 0; c < losses.size(); ++c) {
    const size_t n = losses[c].size();  // configurations may have different numbers of examples
    if (n == 0) return common::InvalidArgument("configuration " + std::to_string(c) + " has no calibration losses");
    const std::vector<double>& l = losses[c];
    const LossStats st = StatsOf(l);
    const double total = st.sum, min_loss = st.min, max_loss = st.max;
    if (!std::isfinite(total) || !(min_loss >= 0) || !(max_loss <= 1)) {
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
