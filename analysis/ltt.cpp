#include "analysis/ltt.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
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

// P(Binomial(n, p) <= k) for k = 0 .. max(k_max, mode): one Boost pmf at
// the mode, then the ratio pmf(j + 1) / pmf(j) = (n - j) / (j + 1) * p / (1 - p)
// on either side, and a running sum from k = 0 up. A multiplication per k in
// place of an incomplete beta function per configuration (1.5 us each here,
// 1 ms of a 1,000-configuration LTT). Each step costs a few ulp, so an entry
// |k - mode| steps away carries about |k - mode| * 4e-16 relative error
// (4e-13 a thousand steps away); tests compare every entry with BinomialCdf.
// The anchor does not depend on k_max, so an entry is the same whichever
// other configurations share the table.
std::vector<double> BinomialCdfTable(size_t n, double p, size_t k_max) {
  const size_t mode = std::min(n, static_cast<size_t>(std::floor(static_cast<double>(n + 1) * p)));
  const size_t len = std::max(mode, k_max) + 1;
  std::vector<double> pmf(len);
  pmf[mode] = boost::math::pdf(boost::math::binomial_distribution<double>(static_cast<double>(n), p),
                               static_cast<double>(mode));
  const double odds = p / (1 - p);
  for (size_t j = mode; j > 0; --j) {
    pmf[j - 1] = pmf[j] * (static_cast<double>(j) / (static_cast<double>(n - j + 1) * odds));
  }
  for (size_t j = mode; j + 1 < len; ++j) {
    pmf[j + 1] = pmf[j] * (static_cast<double>(n - j) / static_cast<double>(j + 1) * odds);
  }
  double sum = 0;
  for (double& v : pmf) {
    sum += v;
    v = std::min(1.0, sum);
  }
  return pmf;
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
  return std::min(1.0, std::exp(1.0) * BinomialCdf(k, n, alpha));
}

double HoeffdingBentkusPValue(double risk, size_t n, double alpha) {
  return std::min(HoeffdingPValue(risk, n, alpha), BentkusPValue(risk, n, alpha));
}

double BinomialCdf(double k, size_t n, double p) {
  if (k < 0) return 0;
  if (k >= static_cast<double>(n)) return 1;
  return boost::math::cdf(boost::math::binomial_distribution<double>(static_cast<double>(n), p), std::floor(k));
}

double BinomialPValue(size_t failures, size_t n, double alpha) {
  return BinomialCdf(static_cast<double>(failures), n, alpha);
}

namespace {

common::Status CheckLevels(double alpha, double delta, size_t configurations) {
  if (!(alpha > 0 && alpha < 1)) return common::InvalidArgument("alpha (risk level) must be in (0, 1)");
  if (!(delta > 0 && delta < 1)) return common::InvalidArgument("delta must be in (0, 1)");
  if (configurations == 0) return common::InvalidArgument("no configurations to test");
  return common::Status::Ok();
}

// Risks and p-values from per-configuration loss sums and counts. The
// binomial CDFs come from one BinomialCdfTable per distinct n (at most
// kMaxTable entries; longer ones, Boost per configuration).
void PValues(const std::vector<double>& sums, const std::vector<size_t>& n, double alpha, PValueBound bound,
             LttResult* out) {
  const size_t m = sums.size();
  out->risks.resize(m);
  out->p_values.assign(m, 1.0);
  // k: the binomial CDF argument each configuration needs, or -1 where none is.
  std::vector<double> k(m, -1);
  std::map<size_t, size_t> k_max;  // n -> largest k needed
  for (size_t c = 0; c < m; ++c) {
    out->risks[c] = sums[c] / static_cast<double>(n[c]);
    if (bound == PValueBound::kBinomial) {
      k[c] = static_cast<double>(std::llround(sums[c]));
    } else if (bound != PValueBound::kHoeffding) {
      // ceil(n R) with the guard of BentkusPValue; from ceil(n alpha) on the Bentkus p-value is 1.
      const double kb = std::ceil(static_cast<double>(n[c]) * out->risks[c] - 1e-9);
      if (kb < std::ceil(static_cast<double>(n[c]) * alpha)) k[c] = kb;
    }
    if (k[c] >= 0 && k[c] < static_cast<double>(n[c])) {
      size_t& top = k_max[n[c]];
      top = std::max(top, static_cast<size_t>(k[c]));
    }
  }
  constexpr size_t kMaxTable = size_t{1} << 20;
  std::map<size_t, std::vector<double>> tables;
  for (const auto& [size, top] : k_max) {
    if (std::max<double>(static_cast<double>(top), static_cast<double>(size) * alpha) < kMaxTable) {
      tables[size] = BinomialCdfTable(size, alpha, top);
    }
  }
  for (size_t c = 0; c < m; ++c) {
    double cdf = 1;  // also for k < 0, where Bentkus is 1 without it
    if (k[c] >= 0 && k[c] < static_cast<double>(n[c])) {
      auto t = tables.find(n[c]);
      cdf = t != tables.end() ? t->second[static_cast<size_t>(k[c])] : BinomialCdf(k[c], n[c], alpha);
    }
    const double hoeffding = bound == PValueBound::kHoeffding || bound == PValueBound::kHoeffdingBentkus
                                 ? HoeffdingPValue(out->risks[c], n[c], alpha)
                                 : 1.0;
    const double bentkus = std::min(1.0, std::exp(1.0) * cdf);
    switch (bound) {
      case PValueBound::kHoeffding: out->p_values[c] = hoeffding; break;
      case PValueBound::kBentkus: out->p_values[c] = bentkus; break;
      case PValueBound::kHoeffdingBentkus: out->p_values[c] = std::min(hoeffding, bentkus); break;
      case PValueBound::kBinomial: out->p_values[c] = cdf; break;
    }
  }
}

// The family-wise error procedure over out->p_values.
common::Status Certify(double delta, FwerProcedure procedure, std::span<const size_t> order, LttResult* out) {
  const size_t m = out->p_values.size();
  if (procedure == FwerProcedure::kBonferroni) {
    const double threshold = delta / static_cast<double>(m);
    for (size_t c = 0; c < m; ++c) {
      if (out->p_values[c] <= threshold) out->valid.push_back(c);
    }
    return common::Status::Ok();
  }
  std::vector<size_t> sequence(order.begin(), order.end());
  if (sequence.empty()) {
    sequence.resize(m);
    std::iota(sequence.begin(), sequence.end(), 0);
  }
  std::vector<bool> seen(m, false);
  for (size_t c : sequence) {
    if (c >= m || seen[c]) {
      return common::InvalidArgument("the testing order must list distinct configuration indices below " +
                                     std::to_string(m));
    }
    seen[c] = true;
  }
  for (size_t c : sequence) {
    if (out->p_values[c] > delta) break;
    out->valid.push_back(c);
  }
  return common::Status::Ok();
}

__attribute__((target_clones("popcnt", "default"))) size_t PopCount(const uint64_t* words, size_t count) {
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) total += static_cast<size_t>(__builtin_popcountll(words[i]));
  return total;
}

}  // namespace

common::Result<LttResult> LearnThenTest(const std::vector<std::vector<double>>& losses, double alpha, double delta,
                                        PValueBound bound, FwerProcedure procedure, std::span<const size_t> order) {
  SHAMMIE_RETURN_IF_ERROR(CheckLevels(alpha, delta, losses.size()));
  const std::vector<LossStats> stats = StatsOfAll(losses);
  std::vector<double> sums(losses.size());
  std::vector<size_t> n(losses.size());
  for (size_t c = 0; c < losses.size(); ++c) {
    n[c] = losses[c].size();  // configurations may have different numbers of examples
    if (n[c] == 0) return common::InvalidArgument("configuration " + std::to_string(c) + " has no calibration losses");
    const std::vector<double>& l = losses[c];
    const LossStats& st = stats[c];
    if (!std::isfinite(st.sum) || !(st.min_non_binary >= 0)) {
      for (size_t k = 0; k < n[c]; ++k) {
        if (!(l[k] >= 0 && l[k] <= 1)) {
          return common::InvalidArgument("loss of configuration " + std::to_string(c) + " on example " +
                                         std::to_string(k) + " is " + std::to_string(l[k]) + "; losses must be in [0, 1]");
        }
      }
    }
    if (bound == PValueBound::kBinomial && st.non_binary != 0) {
      return common::InvalidArgument("the binomial p-value needs binary (0/1) losses; use hoeffding-bentkus");
    }
    sums[c] = st.sum;
  }
  LttResult out;
  PValues(sums, n, alpha, bound, &out);
  SHAMMIE_RETURN_IF_ERROR(Certify(delta, procedure, order, &out));
  return out;
}

template <typename T>
void BinaryLosses::Pack(std::span<const T> losses) {
  offset_.push_back(words_.size());
  examples_.push_back(losses.size());
  words_.resize(words_.size() + (losses.size() + 63) / 64, 0);
  uint64_t* w = words_.data() + offset_.back();
  for (size_t i = 0; i < losses.size(); ++i) w[i / 64] |= static_cast<uint64_t>(losses[i] != 0) << (i % 64);
}

common::Status BinaryLosses::Add(std::span<const double> losses) {
  for (size_t i = 0; i < losses.size(); ++i) {
    if (losses[i] != 0 && losses[i] != 1) {
      return common::InvalidArgument("loss on example " + std::to_string(i) + " is " + std::to_string(losses[i]) +
                                     "; binary losses must be 0 or 1");
    }
  }
  Pack(losses);
  return common::Status::Ok();
}

void BinaryLosses::AddBytes(std::span<const uint8_t> losses) { Pack(losses); }

size_t BinaryLosses::Failures(size_t c) const { return PopCount(words_.data() + offset_[c], (examples_[c] + 63) / 64); }

common::Result<LttResult> LearnThenTest(const BinaryLosses& losses, double alpha, double delta, PValueBound bound,
                                        FwerProcedure procedure, std::span<const size_t> order) {
  SHAMMIE_RETURN_IF_ERROR(CheckLevels(alpha, delta, losses.configurations()));
  std::vector<double> sums(losses.configurations());
  std::vector<size_t> n(losses.configurations());
  for (size_t c = 0; c < sums.size(); ++c) {
    n[c] = losses.examples(c);
    if (n[c] == 0) return common::InvalidArgument("configuration " + std::to_string(c) + " has no calibration losses");
    sums[c] = static_cast<double>(losses.Failures(c));
  }
  LttResult out;
  PValues(sums, n, alpha, bound, &out);
  SHAMMIE_RETURN_IF_ERROR(Certify(delta, procedure, order, &out));
  return out;
}

}  // namespace shammie::analysis
