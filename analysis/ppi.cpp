#include "analysis/ppi.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include <boost/math/distributions/normal.hpp>

namespace shammie::analysis {

namespace {

// Sum with four independent accumulators: the compiler can pipeline them
// (a single accumulator serializes on the add latency).
template <typename F>
double Sum4(size_t n, F term) {
  double a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += term(i);
    b += term(i + 1);
    c += term(i + 2);
    d += term(i + 3);
  }
  for (; i < n; ++i) a += term(i);
  return (a + b) + (c + d);
}

// Count, mean and sum of squared deviations.
struct Moments {
  double n = 0, mean = 0, m2 = 0;
  double var() const { return m2 / (n - 1); }  // ddof = 1
};

// The exact two-pass form: mean, then squared deviations from it.
Moments TwoPassMoments(std::span<const double> x) {
  Moments m;
  m.n = static_cast<double>(x.size());
  if (x.empty()) return m;
  m.mean = Sum4(x.size(), [&](size_t i) { return x[i]; }) / m.n;
  const double mean = m.mean;
  m.m2 = Sum4(x.size(), [&](size_t i) { return (x[i] - mean) * (x[i] - mean); });
  return m;
}

// Moments from shifted sums S = sum(x - s), Q = sum((x - s)^2):
// m2 = Q - S^2 / n. The subtraction amplifies Q's rounding error by
// 1 / (1 - r), r = S^2 / (n Q) = (mean - s)^2 / ((mean - s)^2 + var). Below
// r = 0.99 (shift within 10 standard deviations of the mean) that is at most
// 100x a relative error of about 1e-14, far inside the 1e-9 agreement with
// numpy's two-pass variance that the tests and bench check; false means use
// the two-pass form.
bool MomentsFromShifted(double n, double shift, double s, double q, Moments& m) {
  m.n = n;
  if (n == 0) return true;
  m.mean = shift + s / n;
  const double correction = s * s / n;
  if (!std::isfinite(q) || !std::isfinite(correction)) {
    m.m2 = q - correction;  // non-finite input shows as a non-finite m2
    return true;
  }
  if (correction > 0.99 * q) return false;
  m.m2 = q - correction;
  return true;
}

// One streaming pass over x (the large unlabeled side is read once): shifted
// sums in 8 SIMD lanes (GCC vector extensions; a fixed summation order, the
// same result on every x86-64, no -ffast-math). Non-finite values reach the
// mean and m2, where callers check them.
Moments MomentsOf(std::span<const double> x) {
  const size_t n = x.size();
  if (n == 0) return {};
  double shift = 0;  // the mean of the first few values: close to the mean in practice
  const size_t head = std::min<size_t>(n, 16);
  for (size_t i = 0; i < head; ++i) shift += x[i];
  shift /= static_cast<double>(head);
  if (!std::isfinite(shift)) return TwoPassMoments(x);
  typedef double v2 __attribute__((vector_size(16)));
  constexpr size_t kLanes = 4;  // 4 x 2 doubles in flight
  v2 sum[kLanes] = {}, sq[kLanes] = {};
  const v2 vshift = {shift, shift};
  size_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    for (size_t k = 0; k < kLanes; ++k) {
      v2 v;
      std::memcpy(&v, &x[i + 2 * k], sizeof(v));
      v -= vshift;
      sum[k] += v;
      sq[k] += v * v;
    }
  }
  double s = 0, q = 0;
  for (size_t k = 0; k < kLanes; ++k) {
    s += sum[k][0] + sum[k][1];
    q += sq[k][0] + sq[k][1];
  }
  for (; i < n; ++i) {
    const double d = x[i] - shift;
    s += d;
    q += d * d;
  }
  Moments m;
  if (!MomentsFromShifted(static_cast<double>(n), shift, s, q, m)) return TwoPassMoments(x);
  return m;
}

// Moments of the concatenation (Chan, Golub and LeVeque's pairwise update).
Moments Pool(const Moments& a, const Moments& b) {
  Moments m;
  m.n = a.n + b.n;
  const double delta = b.mean - a.mean;
  m.mean = a.mean + delta * b.n / m.n;
  m.m2 = a.m2 + b.m2 + delta * delta * a.n * b.n / m.n;
  return m;
}

double Mean(std::span<const double> x) { return MomentsOf(x).mean; }

// Unbiased (ddof = 1) covariance; requires x.size() == y.size() >= 2.
double Cov(std::span<const double> x, std::span<const double> y) {
  const double mx = Mean(x), my = Mean(y);
  return Sum4(x.size(), [&](size_t i) { return (x[i] - mx) * (y[i] - my); }) / static_cast<double>(x.size() - 1);
}

double Var(std::span<const double> x) { return MomentsOf(x).var(); }

common::Status CheckAlpha(double alpha) {
  if (!(alpha > 0 && alpha < 1)) return common::InvalidArgument("alpha must be in (0, 1), got " + std::to_string(alpha));
  return common::Status::Ok();
}

common::Status CheckUnit(std::span<const double> x, const std::string& what) {
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] < 0 || x[i] > 1) {
      return common::InvalidArgument("the Hoeffding interval needs " + what + " in [0, 1]; item " + std::to_string(i) +
                                     " is " + std::to_string(x[i]));
    }
  }
  return common::Status::Ok();
}

void SetNormalInterval(MeanEstimate& e) {
  const double z = NormalQuantile(1 - e.alpha / 2);
  e.lower = e.estimate - z * e.std_error;
  e.upper = e.estimate + z * e.std_error;
}

double HoeffdingHalfWidth(double range, size_t n, double alpha) {
  return range * std::sqrt(std::log(2.0 / alpha) / (2.0 * static_cast<double>(n)));
}

}  // namespace

double NormalQuantile(double p) { return boost::math::quantile(boost::math::normal_distribution<double>(), p); }

common::Status CheckFinite(std::span<const double> values, const std::string& what) {
  // Fast path: a finite sum of x * 0 means every value is finite (inf * 0 and nan * 0 are nan).
  if (std::isfinite(Sum4(values.size(), [&](size_t i) { return values[i] * 0.0; }))) return common::Status::Ok();
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return common::InvalidArgument(what + " has a non-finite value (" + std::to_string(values[i]) + ") at item " +
                                     std::to_string(i));
    }
  }
  return common::Status::Ok();
}

common::Result<MeanEstimate> ClassicalMean(std::span<const double> y, double alpha, IntervalKind interval) {
  SHAMMIE_RETURN_IF_ERROR(CheckAlpha(alpha));
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(y, "labels"));
  if (y.size() < 2) return common::InvalidArgument("classical inference needs at least 2 labeled points, got " + std::to_string(y.size()));
  MeanEstimate e;
  e.method = "classical";
  e.alpha = alpha;
  e.estimate = Mean(y);
  const double var = Var(y);
  e.std_error = std::sqrt(var / static_cast<double>(y.size()));
  e.effective_n = static_cast<double>(y.size());
  if (interval == IntervalKind::kHoeffding) {
    SHAMMIE_RETURN_IF_ERROR(CheckUnit(y, "labels"));
    const double h = HoeffdingHalfWidth(1.0, y.size(), alpha);
    e.lower = std::max(0.0, e.estimate - h);
    e.upper = std::min(1.0, e.estimate + h);
    return e;
  }
  if (var == 0) e.notes.push_back("all labels are equal: the normal interval has width 0; consider the Hoeffding interval");
  SetNormalInterval(e);
  return e;
}

namespace {
double TunedLambdaFromMoments(std::span<const double> y, std::span<const double> f, const Moments& f_moments,
                              const Moments& fu_moments, bool clip) {
  const double var_f = Pool(f_moments, fu_moments).var();
  if (!(var_f > 0)) return 0.0;
  const double n = static_cast<double>(y.size()), big_n = fu_moments.n;
  double lambda = Cov(y, f) / ((1 + n / big_n) * var_f);
  if (clip) lambda = std::clamp(lambda, 0.0, 1.0);
  return lambda;
}
}  // namespace

double TunedLambda(std::span<const double> y, std::span<const double> f, std::span<const double> f_unlabeled,
                   bool clip) {
  return TunedLambdaFromMoments(y, f, MomentsOf(f), MomentsOf(f_unlabeled), clip);
}

namespace {

// PPI / PPI++ with a normal interval, given the unlabeled predictions'
// moments (so stratified callers can compute them for all strata in one
// pass). Inputs are already checked: finite, equal lengths, n >= 2, N >= 2.
MeanEstimate PpiCore(std::span<const double> y, std::span<const double> f, const Moments& fu_moments, double alpha,
                     const PpiOptions& options) {
  const Moments f_moments = MomentsOf(f);
  MeanEstimate e;
  e.alpha = alpha;
  if (options.lambda_mode == LambdaMode::kFixed) {
    e.lambda = options.lambda;
    e.method = "ppi";
  } else {
    e.lambda = TunedLambdaFromMoments(y, f, f_moments, fu_moments, options.lambda_mode == LambdaMode::kTunedClip);
    e.method = "ppi++";
    if (!(Pool(f_moments, fu_moments).var() > 0)) e.notes.push_back("the autorater is constant: lambda = 0 (classical)");
  }
  const double n = static_cast<double>(y.size());
  std::vector<double> rectifier(y.size());
  for (size_t i = 0; i < y.size(); ++i) rectifier[i] = y[i] - e.lambda * f[i];
  const Moments r_moments = MomentsOf(rectifier);
  e.estimate = e.lambda * fu_moments.mean + r_moments.mean;
  const double variance = e.lambda * e.lambda * fu_moments.var() / fu_moments.n + r_moments.var() / n;
  e.std_error = std::sqrt(variance);
  if (variance > 0) {
    e.effective_n = Var(y) / variance;
  } else {
    e.notes.push_back("zero estimated variance: the normal interval has width 0 and the effective sample size is "
                      "undefined (reported as 0)");
  }
  SetNormalInterval(e);
  return e;
}

common::Status CheckLabeled(std::span<const double> y, std::span<const double> f, const std::string& where) {
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(y, where + "labels"));
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(f, where + "predictions on labeled items"));
  if (y.size() != f.size()) {
    return common::InvalidArgument(where + "labels and their predictions differ in length: " + std::to_string(y.size()) +
                                   " vs " + std::to_string(f.size()));
  }
  if (y.size() < 2) return common::InvalidArgument(where + "PPI needs at least 2 labeled points, got " + std::to_string(y.size()));
  return common::Status::Ok();
}

// Moments of unlabeled predictions; a non-finite value shows as a non-finite mean or spread.
common::Status CheckUnlabeled(const Moments& m, std::span<const double> f_unlabeled, const std::string& where) {
  if (m.n < 2) {
    return common::InvalidArgument(where + "PPI needs at least 2 unlabeled predictions, got " +
                                   std::to_string(static_cast<size_t>(m.n)));
  }
  if (!std::isfinite(m.mean) || !std::isfinite(m.m2)) {
    SHAMMIE_RETURN_IF_ERROR(CheckFinite(f_unlabeled, where + "predictions on unlabeled items"));
    return common::InvalidArgument(where + "predictions on unlabeled items are too large to average");
  }
  return common::Status::Ok();
}

common::Status CheckOptions(const PpiOptions& options) {
  if (options.lambda_mode == LambdaMode::kFixed && !std::isfinite(options.lambda)) {
    return common::InvalidArgument("lambda must be finite");
  }
  return common::Status::Ok();
}

}  // namespace

common::Result<MeanEstimate> PpiMean(std::span<const double> y, std::span<const double> f,
                                     std::span<const double> f_unlabeled, double alpha, const PpiOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckAlpha(alpha));
  SHAMMIE_RETURN_IF_ERROR(CheckOptions(options));
  SHAMMIE_RETURN_IF_ERROR(CheckLabeled(y, f, ""));
  const Moments fu_moments = MomentsOf(f_unlabeled);  // one pass over the large side
  SHAMMIE_RETURN_IF_ERROR(CheckUnlabeled(fu_moments, f_unlabeled, ""));
  MeanEstimate e = PpiCore(y, f, fu_moments, alpha, options);
  if (options.interval == IntervalKind::kHoeffding) {
    if (options.lambda_mode != LambdaMode::kFixed || e.lambda < 0 || e.lambda > 1) {
      return common::InvalidArgument(
          "the Hoeffding (CLT-free) PPI interval needs a fixed lambda in [0, 1] chosen before seeing the data");
    }
    SHAMMIE_RETURN_IF_ERROR(CheckUnit(y, "labels"));
    SHAMMIE_RETURN_IF_ERROR(CheckUnit(f, "predictions"));
    SHAMMIE_RETURN_IF_ERROR(CheckUnit(f_unlabeled, "predictions"));
    // Two means, alpha/2 each: lambda*mean(f~) has range lambda; mean(y - lambda f) range 1 + lambda.
    const double h = HoeffdingHalfWidth(e.lambda, f_unlabeled.size(), alpha / 2) +
                     HoeffdingHalfWidth(1 + e.lambda, y.size(), alpha / 2);
    e.lower = e.estimate - h;
    e.upper = e.estimate + h;
  }
  return e;
}

namespace {

struct StratumInput {
  std::string name;
  double weight = 0;
  std::span<const double> y, f;
  Moments fu;
  std::span<const double> fu_values;  // for locating a non-finite value
};

common::Result<StratifiedEstimate> CombineStrata(const std::vector<StratumInput>& strata, double alpha,
                                                 const PpiOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckAlpha(alpha));
  SHAMMIE_RETURN_IF_ERROR(CheckOptions(options));
  if (strata.empty()) return common::InvalidArgument("stratified PPI needs at least one stratum");
  if (options.interval != IntervalKind::kNormal) {
    return common::InvalidArgument("stratified PPI supports the normal interval only");
  }
  double total_weight = 0;
  for (const auto& s : strata) {
    if (!(s.weight > 0) || !std::isfinite(s.weight)) {
      return common::InvalidArgument("stratum " + s.name + " has weight " + std::to_string(s.weight) + "; weights must be > 0");
    }
    total_weight += s.weight;
  }
  if (std::abs(total_weight - 1) > 1e-9) {
    return common::InvalidArgument("stratum weights sum to " + std::to_string(total_weight) + ", not 1");
  }
  StratifiedEstimate out;
  MeanEstimate& c = out.combined;
  c.method = "stratppi";
  c.alpha = alpha;
  double variance = 0, classical_variance = 0;
  size_t n = 0;
  for (const auto& s : strata) {
    const std::string where = "stratum " + s.name + ": ";
    SHAMMIE_RETURN_IF_ERROR(CheckLabeled(s.y, s.f, where));
    SHAMMIE_RETURN_IF_ERROR(CheckUnlabeled(s.fu, s.fu_values, where));
    const MeanEstimate e = PpiCore(s.y, s.f, s.fu, alpha, options);
    StratumResult r;
    r.name = s.name;
    r.weight = s.weight;
    r.estimate = e.estimate;
    r.variance = e.std_error * e.std_error;
    r.lambda = e.lambda;
    r.n = s.y.size();
    r.n_unlabeled = static_cast<size_t>(s.fu.n);
    for (const auto& note : e.notes) c.notes.push_back("stratum " + s.name + ": " + note);
    c.estimate += s.weight * r.estimate;
    variance += s.weight * s.weight * r.variance;
    classical_variance += s.weight * s.weight * Var(s.y) / static_cast<double>(s.y.size());
    n += s.y.size();
    out.strata.push_back(r);
  }
  c.std_error = std::sqrt(variance);
  c.lambda = 0;  // one per stratum: see strata[k].lambda
  c.effective_n = variance > 0 ? static_cast<double>(n) * classical_variance / variance : 0;
  SetNormalInterval(c);
  return out;
}

}  // namespace

common::Result<StratifiedEstimate> StratifiedPpiMean(const std::vector<Stratum>& strata, double alpha,
                                                     const PpiOptions& options) {
  std::vector<StratumInput> inputs;
  for (const auto& s : strata) {
    inputs.push_back({s.name, s.weight, s.y, s.f, MomentsOf(s.f_unlabeled), s.f_unlabeled});
  }
  return CombineStrata(inputs, alpha, options);
}

common::Result<StratifiedEstimate> StratifiedPpiMean(std::span<const double> y, std::span<const double> f,
                                                     std::span<const int32_t> stratum,
                                                     std::span<const double> f_unlabeled,
                                                     std::span<const int32_t> stratum_unlabeled,
                                                     std::span<const double> weights,
                                                     const std::vector<std::string>& names, double alpha,
                                                     const PpiOptions& options) {
  const size_t k = weights.size();
  if (names.size() != k) return common::InvalidArgument("need one name per stratum weight");
  if (y.size() != f.size() || stratum.size() != y.size()) {
    return common::InvalidArgument("labels, predictions and strata of labeled items differ in length");
  }
  if (stratum_unlabeled.size() != f_unlabeled.size()) {
    return common::InvalidArgument("predictions and strata of unlabeled items differ in length");
  }
  auto code_ok = [k](int32_t c) { return c >= 0 && static_cast<size_t>(c) < k; };
  // Labeled items are few: gather them per stratum.
  std::vector<std::vector<double>> ys(k), fs(k);
  for (size_t i = 0; i < y.size(); ++i) {
    if (!code_ok(stratum[i])) return common::InvalidArgument("labeled item " + std::to_string(i) + " has stratum code " + std::to_string(stratum[i]));
    ys[static_cast<size_t>(stratum[i])].push_back(y[i]);
    fs[static_cast<size_t>(stratum[i])].push_back(f[i]);
  }
  // Unlabeled items are many: one pass of per-stratum shifted sums, no
  // copies. The shift is the stratum's labeled-prediction mean. Four copies
  // of the accumulators (item i updates copy i % 4) keep consecutive items
  // of one stratum from waiting on each other's adds.
  std::vector<double> shift(k, 0.0);
  for (size_t c = 0; c < k; ++c) {
    if (!fs[c].empty()) shift[c] = std::accumulate(fs[c].begin(), fs[c].end(), 0.0) / static_cast<double>(fs[c].size());
  }
  constexpr size_t kCopies = 4;
  typedef double v2 __attribute__((vector_size(16)));  // {sum of d, sum of d^2}: one read-modify-write per item
  std::vector<v2> acc(kCopies * k, v2{0, 0});
  std::vector<double> acc_n(kCopies * k, 0.0);
  const size_t big_n = f_unlabeled.size();
  auto add = [&](size_t copy, size_t i) {
    const auto c = static_cast<size_t>(stratum_unlabeled[i]);
    const double d = f_unlabeled[i] - shift[c];
    acc_n[copy * k + c] += 1;
    acc[copy * k + c] += v2{d, d * d};
  };
  size_t next = 0;
  for (; next + kCopies <= big_n; next += kCopies) {
    bool codes_ok = true;
    for (size_t copy = 0; copy < kCopies; ++copy) codes_ok = codes_ok && code_ok(stratum_unlabeled[next + copy]);
    if (!codes_ok) break;  // the loop below names the bad item
    for (size_t copy = 0; copy < kCopies; ++copy) add(copy, next + copy);
  }
  for (; next < big_n; ++next) {
    if (!code_ok(stratum_unlabeled[next])) {
      return common::InvalidArgument("unlabeled item " + std::to_string(next) + " has stratum code " +
                                     std::to_string(stratum_unlabeled[next]));
    }
    add(0, next);
  }
  std::vector<Moments> m(k);
  bool exact = true;
  for (size_t c = 0; c < k; ++c) {
    double n_c = 0, s_c = 0, q_c = 0;
    for (size_t copy = 0; copy < kCopies; ++copy) {
      n_c += acc_n[copy * k + c];
      s_c += acc[copy * k + c][0];
      q_c += acc[copy * k + c][1];
    }
    exact = exact && MomentsFromShifted(n_c, shift[c], s_c, q_c, m[c]);
  }
  if (!exact) {  // a shift far from its stratum's mean: the two-pass form
    m.assign(k, Moments{});
    for (size_t i = 0; i < big_n; ++i) {
      m[static_cast<size_t>(stratum_unlabeled[i])].n += 1;
      m[static_cast<size_t>(stratum_unlabeled[i])].mean += f_unlabeled[i];
    }
    for (auto& mk : m) mk.mean = mk.n > 0 ? mk.mean / mk.n : 0;
    for (size_t i = 0; i < big_n; ++i) {
      Moments& mk = m[static_cast<size_t>(stratum_unlabeled[i])];
      const double d = f_unlabeled[i] - mk.mean;
      mk.m2 += d * d;
    }
  }
  std::vector<StratumInput> inputs;
  for (size_t s = 0; s < k; ++s) inputs.push_back({names[s], weights[s], ys[s], fs[s], m[s], f_unlabeled});
  return CombineStrata(inputs, alpha, options);
}

common::Result<std::vector<size_t>> AllocateLabels(const std::vector<Stratum>& strata, size_t budget,
                                                   Allocation allocation, size_t min_per_stratum) {
  if (strata.empty()) return common::InvalidArgument("no strata to allocate labels to");
  if (budget < strata.size() * min_per_stratum) {
    return common::InvalidArgument("a budget of " + std::to_string(budget) + " labels cannot give " +
                                   std::to_string(min_per_stratum) + " to each of " + std::to_string(strata.size()) +
                                   " strata");
  }
  std::vector<double> share(strata.size());
  for (size_t k = 0; k < strata.size(); ++k) {
    const Stratum& s = strata[k];
    if (!(s.weight > 0)) return common::InvalidArgument("stratum " + s.name + " has a non-positive weight");
    share[k] = s.weight;
    if (allocation == Allocation::kOptimal) {
      if (s.y.size() < 2 || s.y.size() != s.f.size() || s.f_unlabeled.size() < 2) {
        return common::InvalidArgument("stratum " + s.name + ": optimal allocation needs pilot data (>= 2 labeled pairs and >= 2 unlabeled predictions)");
      }
      SHAMMIE_RETURN_IF_ERROR(CheckFinite(s.y, "stratum " + s.name + " labels"));
      SHAMMIE_RETURN_IF_ERROR(CheckFinite(s.f, "stratum " + s.name + " predictions"));
      const double lambda = TunedLambda(s.y, s.f, s.f_unlabeled, /*clip=*/true);
      std::vector<double> r(s.y.size());
      for (size_t i = 0; i < r.size(); ++i) r[i] = s.y[i] - lambda * s.f[i];
      share[k] = s.weight * std::sqrt(Var(r));
    }
  }
  double total = std::accumulate(share.begin(), share.end(), 0.0);
  if (!(total > 0)) {  // every pilot residual is constant: nothing to optimize
    for (size_t k = 0; k < strata.size(); ++k) share[k] = strata[k].weight;
    total = std::accumulate(share.begin(), share.end(), 0.0);
  }
  // Minimum first, then the rest by largest remainder of the ideal split.
  const size_t rest = budget - strata.size() * min_per_stratum;
  std::vector<size_t> out(strata.size(), min_per_stratum);
  std::vector<std::pair<double, size_t>> remainders;
  size_t given = 0;
  for (size_t k = 0; k < strata.size(); ++k) {
    const double ideal = static_cast<double>(rest) * share[k] / total;
    const size_t whole = static_cast<size_t>(std::floor(ideal));
    out[k] += whole;
    given += whole;
    remainders.emplace_back(ideal - static_cast<double>(whole), k);
  }
  std::stable_sort(remainders.begin(), remainders.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; given < rest; ++i, ++given) out[remainders[i % remainders.size()].second] += 1;
  return out;
}

size_t LabelsForWidth(double variance, double width, double alpha) {
  const double z = NormalQuantile(1 - alpha / 2);
  return static_cast<size_t>(std::ceil(std::pow(2 * z * std::sqrt(variance) / width, 2)));
}

}  // namespace shammie::analysis
