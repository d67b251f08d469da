#include "analysis/bayes_opt.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <numbers>
#include <set>
#include <string>
#include <utility>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <nlopt.hpp>

#include "analysis/pareto.hpp"
#include "common/random.hpp"

namespace shammie::analysis {

using std::size_t;
using Points = std::vector<std::vector<double>>;

namespace {

constexpr double kSqrt5 = 2.2360679774997896964;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Matern nu = 5/2 at scaled distance r: (1 + s + s^2 / 3) exp(-s), s = sqrt(5) r.
double Matern52(double r) {
  const double s = kSqrt5 * r;
  return (1 + s + s * s / 3) * std::exp(-s);
}

std::string Str(size_t v) { return std::to_string(v); }

bool AllFinite(std::span<const double> v) {
  return std::all_of(v.begin(), v.end(), [](double a) { return std::isfinite(a); });
}

// Every point has `dims` finite values (and, with `unit_cube`, lies in [0,1]^dims).
common::Status CheckPoints(const Points& points, size_t dims, const std::string& what, bool unit_cube = false) {
  for (size_t i = 0; i < points.size(); ++i) {
    if (points[i].size() != dims) {
      return common::InvalidArgument(what + " " + Str(i) + " has " + Str(points[i].size()) + " values, expected " +
                                     Str(dims));
    }
    if (!AllFinite(points[i])) return common::InvalidArgument(what + " " + Str(i) + " is not finite");
    if (unit_cube) {
      for (double v : points[i]) {
        if (v < 0 || v > 1) return common::InvalidArgument(what + " " + Str(i) + " is outside [0, 1]^d");
      }
    }
  }
  return common::Status::Ok();
}

// Cholesky of K; when it fails (K numerically not positive definite), retries
// with growing jitter on the diagonal (1e-10 to 1e-3 of its mean).
bool Factorize(const Eigen::MatrixXd& k, Eigen::LLT<Eigen::MatrixXd>* llt) {
  llt->compute(k);
  if (llt->info() == Eigen::Success) return true;
  const double scale = k.rows() > 0 && k.diagonal().mean() > 0 ? k.diagonal().mean() : 1.0;
  for (double jitter = 1e-10 * scale; jitter <= 1e-3 * scale; jitter *= 10) {
    Eigen::MatrixXd kj = k;
    kj.diagonal().array() += jitter;
    llt->compute(kj);
    if (llt->info() == Eigen::Success) return true;
  }
  return false;
}

Eigen::MatrixXd ToMatrix(const Points& x) {
  Eigen::MatrixXd m(static_cast<Eigen::Index>(x.size()), static_cast<Eigen::Index>(x.empty() ? 0 : x[0].size()));
  for (size_t i = 0; i < x.size(); ++i) {
    for (size_t k = 0; k < x[i].size(); ++k) m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(k)) = x[i][k];
  }
  return m;
}

// Scaled distances r(i, j) = sqrt(sum_k ((x_ik - x_jk) / l_k)^2).
Eigen::MatrixXd ScaledDistances(const Eigen::MatrixXd& x, const Eigen::VectorXd& inv_length) {
  const Eigen::MatrixXd xs = x * inv_length.asDiagonal();
  const Eigen::VectorXd sq = xs.rowwise().squaredNorm();
  Eigen::MatrixXd r2 = (sq.replicate(1, xs.rows()) + sq.transpose().replicate(xs.rows(), 1)) - 2 * xs * xs.transpose();
  return r2.cwiseMax(0.0).cwiseSqrt();
}

// Log marginal likelihood of standardized targets z (Rasmussen & Williams
// eq. 2.30) and, when `grad` is set, its gradient in theta = (log constant,
// log length scales) (eq. 5.9): 0.5 tr((a a^T - K^-1) dK/dtheta_j).
// dK/dlog c = c M; dK/dlog l_k = c 5/3 (1 + sqrt5 r) exp(-sqrt5 r) (dx_k / l_k)^2.
// NaN when K cannot be factorized.
double LogMarginalLikelihood(const Eigen::MatrixXd& x, const Eigen::VectorXd& z, double noise, const double* theta,
                             double* grad) {
  const Eigen::Index n = x.rows(), d = x.cols();
  const double c = std::exp(theta[0]);
  Eigen::VectorXd inv_length(d);
  for (Eigen::Index k = 0; k < d; ++k) inv_length[k] = std::exp(-theta[1 + k]);
  const Eigen::MatrixXd r = ScaledDistances(x, inv_length);
  const Eigen::MatrixXd m = r.unaryExpr([](double v) { return Matern52(v); });
  Eigen::MatrixXd kmat = c * m;
  kmat.diagonal().array() += noise;
  Eigen::LLT<Eigen::MatrixXd> llt;
  if (!Factorize(kmat, &llt)) return std::numeric_limits<double>::quiet_NaN();
  const Eigen::VectorXd a = llt.solve(z);
  const double lml = -0.5 * z.dot(a) - llt.matrixL().toDenseMatrix().diagonal().array().log().sum() -
                     0.5 * static_cast<double>(n) * std::log(2 * std::numbers::pi);
  if (grad != nullptr) {
    const Eigen::MatrixXd w = a * a.transpose() - llt.solve(Eigen::MatrixXd::Identity(n, n));
    grad[0] = 0.5 * w.cwiseProduct(c * m).sum();
    const Eigen::MatrixXd e =
        r.unaryExpr([c](double v) { return c * 5.0 / 3.0 * (1 + kSqrt5 * v) * std::exp(-kSqrt5 * v); });
    const Eigen::MatrixXd we = w.cwiseProduct(e);
    for (Eigen::Index k = 0; k < d; ++k) {
      const Eigen::VectorXd col = x.col(k) * inv_length[k];
      const Eigen::MatrixXd diff2 =
          (col.replicate(1, n) - col.transpose().replicate(n, 1)).array().square().matrix();
      grad[1 + k] = 0.5 * we.cwiseProduct(diff2).sum();
    }
  }
  return lml;
}

// Runs an NLopt optimizer, swallowing its failures (roundoff, bad steps): the
// callers keep the best point they saw themselves.
void RunQuietly(nlopt::opt& opt, std::vector<double>& x) {
  double value = 0;
  try {
    opt.optimize(x, value);
  } catch (const std::exception&) {
  }
}

}  // namespace

struct GaussianProcess::State {
  Eigen::MatrixXd x;  // n x d
  Eigen::VectorXd z;  // standardized targets
  double y_mean = 0, y_scale = 1, noise = 0;
  GpHyperparameters hyper;
  Eigen::VectorXd inv_length;
  Eigen::LLT<Eigen::MatrixXd> llt;  // of K = c M + noise I (+ jitter if needed)
  Eigen::VectorXd alpha;            // K^-1 z
  double lml = 0;

  // The kernel column k(x_i, p), i = 1..n, without the constant.
  Eigen::VectorXd Correlations(std::span<const double> p) const {
    Eigen::VectorXd out(x.rows());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      double r2 = 0;
      for (Eigen::Index k = 0; k < x.cols(); ++k) {
        const double t = (x(i, k) - p[static_cast<size_t>(k)]) * inv_length[k];
        r2 += t * t;
      }
      out[i] = Matern52(std::sqrt(r2));
    }
    return out;
  }
};

namespace {

common::Result<std::shared_ptr<const GaussianProcess::State>> Build(Eigen::MatrixXd x, Eigen::VectorXd z,
                                                                     double y_mean, double y_scale, double noise,
                                                                     GpHyperparameters hyper) {
  auto s = std::make_shared<GaussianProcess::State>();
  s->x = std::move(x);
  s->z = std::move(z);
  s->y_mean = y_mean;
  s->y_scale = y_scale;
  s->noise = noise;
  s->hyper = std::move(hyper);
  const auto d = s->x.cols();
  s->inv_length.resize(d);
  for (Eigen::Index k = 0; k < d; ++k) s->inv_length[k] = 1 / s->hyper.length_scales[static_cast<size_t>(k)];
  Eigen::MatrixXd kmat = s->hyper.constant * ScaledDistances(s->x, s->inv_length).unaryExpr(
                                                  [](double v) { return Matern52(v); });
  kmat.diagonal().array() += noise;
  if (!Factorize(kmat, &s->llt)) {
    return common::Internal("Gaussian process: the kernel matrix is not positive definite even with jitter");
  }
  s->alpha = s->llt.solve(s->z);
  s->lml = -0.5 * s->z.dot(s->alpha) - s->llt.matrixL().toDenseMatrix().diagonal().array().log().sum() -
           0.5 * static_cast<double>(s->x.rows()) * std::log(2 * std::numbers::pi);
  return std::shared_ptr<const GaussianProcess::State>(std::move(s));
}

}  // namespace

common::Result<GaussianProcess> GaussianProcess::Fit(const Points& x, const std::vector<double>& y,
                                                     const GpOptions& options) {
  if (x.empty()) return common::InvalidArgument("Gaussian process: no observations");
  if (x.size() != y.size()) {
    return common::InvalidArgument("Gaussian process: " + Str(x.size()) + " points but " + Str(y.size()) + " targets");
  }
  const size_t d = x[0].size();
  if (d == 0) return common::InvalidArgument("Gaussian process: points have no dimensions");
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(x, d, "Gaussian process: point"));
  if (!AllFinite(y)) return common::InvalidArgument("Gaussian process: a target is not finite");
  if (!(options.noise >= 0) || !std::isfinite(options.noise)) {
    return common::InvalidArgument("Gaussian process: noise must be finite and >= 0");
  }
  if (options.restarts < 0) return common::InvalidArgument("Gaussian process: restarts must be >= 0");
  if (!(options.min_length_scale > 0 && options.min_length_scale <= options.max_length_scale &&
        std::isfinite(options.max_length_scale) && options.min_constant > 0 &&
        options.min_constant <= options.max_constant && std::isfinite(options.max_constant))) {
    return common::InvalidArgument("Gaussian process: bounds must satisfy 0 < min <= max < inf");
  }

  // Standardize as sklearn's normalize_y: population std, tiny std -> 1.
  const double n = static_cast<double>(y.size());
  double y_mean = 0;
  for (double v : y) y_mean += v;
  y_mean /= n;
  double var = 0;
  for (double v : y) var += (v - y_mean) * (v - y_mean);
  double y_scale = std::sqrt(var / n);
  if (y_scale < 10 * std::numeric_limits<double>::epsilon()) y_scale = 1;
  Eigen::VectorXd z(static_cast<Eigen::Index>(y.size()));
  for (size_t i = 0; i < y.size(); ++i) z[static_cast<Eigen::Index>(i)] = (y[i] - y_mean) / y_scale;
  Eigen::MatrixXd xm = ToMatrix(x);

  GpHyperparameters hyper;
  if (options.fixed) {
    hyper = *options.fixed;
    if (hyper.length_scales.size() != d) {
      return common::InvalidArgument("Gaussian process: " + Str(hyper.length_scales.size()) +
                                     " fixed length scales for " + Str(d) + " dimensions");
    }
    bool ok = hyper.constant > 0 && std::isfinite(hyper.constant);
    for (double l : hyper.length_scales) ok = ok && l > 0 && std::isfinite(l);
    if (!ok) return common::InvalidArgument("Gaussian process: fixed hyper-parameters must be finite and > 0");
  } else {
    // Maximize the log marginal likelihood over theta = (log c, log l_1..d):
    // L-BFGS with analytic gradients within the bounds, from the default
    // (c = 1, l = 1, clipped into the bounds) and options.restarts
    // log-uniform random starts.
    const size_t dims = d + 1;
    std::vector<double> lower(dims), upper(dims);
    lower[0] = std::log(options.min_constant);
    upper[0] = std::log(options.max_constant);
    for (size_t k = 1; k < dims; ++k) {
      lower[k] = std::log(options.min_length_scale);
      upper[k] = std::log(options.max_length_scale);
    }
    struct Search {
      const Eigen::MatrixXd* x;
      const Eigen::VectorXd* z;
      double noise;
      std::vector<double> best_theta;
      double best = -kInf;
    } search{&xm, &z, options.noise, {}, -kInf};
    auto objective = [](unsigned count, const double* theta, double* grad, void* data) -> double {
      auto* s = static_cast<Search*>(data);
      const double lml = LogMarginalLikelihood(*s->x, *s->z, s->noise, theta, grad);
      if (!std::isfinite(lml)) {
        if (grad != nullptr) std::fill(grad, grad + count, 0.0);
        return 1e100;
      }
      if (lml > s->best) {
        s->best = lml;
        s->best_theta.assign(theta, theta + count);
      }
      if (grad != nullptr) {
        for (unsigned k = 0; k < count; ++k) grad[k] = -grad[k];
      }
      return -lml;
    };
    common::SplitMix64 rng(options.seed);
    for (int start = 0; start <= options.restarts; ++start) {
      std::vector<double> theta(dims);
      for (size_t k = 0; k < dims; ++k) {
        theta[k] = start == 0 ? std::clamp(0.0, lower[k], upper[k])
                              : lower[k] + (upper[k] - lower[k]) * rng.NextDouble();
      }
      nlopt::opt opt(nlopt::LD_LBFGS, static_cast<unsigned>(dims));
      opt.set_lower_bounds(lower);
      opt.set_upper_bounds(upper);
      opt.set_min_objective(objective, &search);
      opt.set_ftol_rel(1e-12);
      opt.set_xtol_rel(1e-9);
      opt.set_maxeval(500);
      RunQuietly(opt, theta);
    }
    if (search.best_theta.empty()) {
      return common::Internal("Gaussian process: the likelihood could not be evaluated at any hyper-parameters");
    }
    hyper.constant = std::exp(search.best_theta[0]);
    for (size_t k = 1; k < dims; ++k) hyper.length_scales.push_back(std::exp(search.best_theta[k]));
  }
  SHAMMIE_ASSIGN_OR_RETURN(auto state, Build(std::move(xm), std::move(z), y_mean, y_scale, options.noise, hyper));
  return GaussianProcess(std::move(state));
}

GpPrediction GaussianProcess::Predict(std::span<const double> x) const {
  const State& s = *state_;
  SHAMMIE_CHECK(x.size() == static_cast<size_t>(s.x.cols()));
  const Eigen::VectorXd corr = s.Correlations(x);
  GpPrediction p;
  p.mean = s.y_mean + s.y_scale * s.hyper.constant * corr.dot(s.alpha);  // exactly Mean(x)
  const Eigen::VectorXd v = s.llt.matrixL().solve(s.hyper.constant * corr);
  p.variance = std::max(0.0, s.hyper.constant - v.squaredNorm()) * s.y_scale * s.y_scale;
  return p;
}

double GaussianProcess::Mean(std::span<const double> x) const {
  const State& s = *state_;
  SHAMMIE_CHECK(x.size() == static_cast<size_t>(s.x.cols()));
  return s.y_mean + s.y_scale * s.hyper.constant * s.Correlations(x).dot(s.alpha);
}

double GaussianProcess::Variance(std::span<const double> x) const { return Predict(x).variance; }
const GpHyperparameters& GaussianProcess::hyperparameters() const { return state_->hyper; }
double GaussianProcess::log_marginal_likelihood() const { return state_->lml; }
size_t GaussianProcess::dimensions() const { return static_cast<size_t>(state_->x.cols()); }
size_t GaussianProcess::size() const { return static_cast<size_t>(state_->x.rows()); }
double GaussianProcess::target_mean() const { return state_->y_mean; }
double GaussianProcess::target_scale() const { return state_->y_scale; }

GaussianProcess GaussianProcess::WithBelieved(const Points& points) const {
  const State& s = *state_;
  if (points.empty()) return *this;
  const Eigen::Index n = s.x.rows(), extra = static_cast<Eigen::Index>(points.size());
  Eigen::MatrixXd x(n + extra, s.x.cols());
  Eigen::VectorXd z(n + extra);
  x.topRows(n) = s.x;
  z.head(n) = s.z;
  for (Eigen::Index i = 0; i < extra; ++i) {
    const auto& p = points[static_cast<size_t>(i)];
    SHAMMIE_CHECK(p.size() == static_cast<size_t>(s.x.cols()));
    for (Eigen::Index k = 0; k < s.x.cols(); ++k) x(n + i, k) = p[static_cast<size_t>(k)];
    z[n + i] = s.hyper.constant * s.Correlations(p).dot(s.alpha);  // the standardized posterior mean
  }
  auto state = Build(std::move(x), std::move(z), s.y_mean, s.y_scale, s.noise, s.hyper);
  SHAMMIE_CHECK_MSG(state.ok(), state.status().ToString());
  return GaussianProcess(std::move(state).value());
}

common::Result<std::vector<GaussianProcess>> FitObjectives(const Points& x, const Points& y, const GpOptions& options) {
  if (y.empty()) return common::InvalidArgument("no observations");
  if (x.size() != y.size()) {
    return common::InvalidArgument(Str(x.size()) + " configurations but " + Str(y.size()) + " objective rows");
  }
  const size_t m = y[0].size();
  if (m == 0) return common::InvalidArgument("no objectives");
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(y, m, "objective row"));
  std::vector<GaussianProcess> models;
  for (size_t j = 0; j < m; ++j) {
    std::vector<double> column;
    for (const auto& row : y) column.push_back(row[j]);
    GpOptions o = options;
    o.seed = common::DeriveSeed(options.seed, "gp", j);
    auto gp = GaussianProcess::Fit(x, column, o);
    if (!gp.ok()) return gp.status().WithContext("objective " + Str(j));
    models.push_back(std::move(gp).value());
  }
  return models;
}

// ---------------------------------------------------------------- hypervolume

namespace {

// The hypervolume of `pts` in their first m coordinates, every point strictly
// below `ref` there. 2-D: sweep in increasing first coordinate, adding the
// strip each new lowest point opens. Above: slice along coordinate m-1; the
// slab between consecutive values is (thickness) x (the (m-1)-D hypervolume of
// the points at or below it).
double HvRecursive(Points pts, size_t m, std::span<const double> ref) {
  if (pts.empty()) return 0;
  if (m == 1) {
    double lo = pts[0][0];
    for (const auto& p : pts) lo = std::min(lo, p[0]);
    return ref[0] - lo;
  }
  if (m == 2) {
    std::sort(pts.begin(), pts.end(),
              [](const auto& a, const auto& b) { return a[0] < b[0] || (a[0] == b[0] && a[1] < b[1]); });
    double volume = 0, floor = ref[1];
    for (const auto& p : pts) {
      if (p[1] < floor) {
        volume += (ref[0] - p[0]) * (floor - p[1]);
        floor = p[1];
      }
    }
    return volume;
  }
  const size_t last = m - 1;
  std::sort(pts.begin(), pts.end(), [last](const auto& a, const auto& b) { return a[last] < b[last]; });
  double volume = 0;
  Points slice;
  for (size_t i = 0; i < pts.size(); ++i) {
    slice.push_back(pts[i]);
    const double next = i + 1 < pts.size() ? pts[i + 1][last] : ref[last];
    if (next > pts[i][last]) volume += (next - pts[i][last]) * HvRecursive(slice, m - 1, ref);
  }
  return volume;
}

bool StrictlyBelow(std::span<const double> p, std::span<const double> ref) {
  for (size_t j = 0; j < ref.size(); ++j) {
    if (!(p[j] < ref[j])) return false;
  }
  return true;
}

// The points that can add hypervolume: strictly below the reference and not
// dominated by another point.
Points UsefulFront(const Points& points, std::span<const double> ref) {
  Points below;
  for (const auto& p : points) {
    if (StrictlyBelow(p, ref)) below.push_back(p);
  }
  Points out;
  for (size_t i : ParetoFront(below)) out.push_back(below[i]);
  return out;
}

double HviUnchecked(const Points& front, std::span<const double> y, std::span<const double> ref) {
  if (!StrictlyBelow(y, ref)) return 0;
  const size_t m = ref.size();
  for (const auto& p : front) {
    bool dominates = true;
    for (size_t j = 0; j < m && dominates; ++j) dominates = p[j] <= y[j];
    if (dominates) return 0;
  }
  double box = 1;
  for (size_t j = 0; j < m; ++j) box *= ref[j] - y[j];
  Points clipped;
  clipped.reserve(front.size());
  for (const auto& p : front) {
    if (!StrictlyBelow(p, ref)) continue;
    std::vector<double> q(m);
    for (size_t j = 0; j < m; ++j) q[j] = std::max(p[j], y[j]);
    clipped.push_back(std::move(q));
  }
  return std::max(0.0, box - HvRecursive(std::move(clipped), m, ref));
}

common::Status CheckReference(std::span<const double> reference) {
  if (reference.empty()) return common::InvalidArgument("hypervolume: empty reference point");
  if (!AllFinite(reference)) return common::InvalidArgument("hypervolume: reference point is not finite");
  return common::Status::Ok();
}

}  // namespace

common::Result<double> Hypervolume(const Points& points, std::span<const double> reference) {
  SHAMMIE_RETURN_IF_ERROR(CheckReference(reference));
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(points, reference.size(), "hypervolume: point"));
  return HvRecursive(UsefulFront(points, reference), reference.size(), reference);
}

common::Result<double> HypervolumeImprovement(const Points& points, std::span<const double> candidate,
                                              std::span<const double> reference) {
  SHAMMIE_RETURN_IF_ERROR(CheckReference(reference));
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(points, reference.size(), "hypervolume: point"));
  if (candidate.size() != reference.size() || !AllFinite(candidate)) {
    return common::InvalidArgument("hypervolume: the candidate needs " + Str(reference.size()) + " finite values");
  }
  return HviUnchecked(UsefulFront(points, reference), candidate, reference);
}

// ------------------------------------------------------- maximizing over [0,1]^d

namespace {

struct BoxOptimum {
  std::vector<double> x;
  double value = -kInf;
  bool found = false;
};

// Maximizes f over [0,1]^d, keeping the best point for which `valid` holds:
//   1. 64 (d + 1) seeded uniform samples;
//   2. GN_DIRECT_L (deterministic global search of the box, 100 (d + 1)
//      evaluations): finds the basin even when most of the box is flat;
//   3. local polishing from DIRECT's best and from the `restarts - 1` best
//      samples with LN_BOBYQA (LN_COBYLA in 1-D, where BOBYQA is not defined);
//      both are derivative-free, as the acquisitions have kinks.
// Invalid points are evaluated but never kept, so the optimizers still move.
BoxOptimum MaximizeOverBox(size_t d, const std::function<double(std::span<const double>)>& f,
                           const std::function<bool(std::span<const double>)>& valid, uint64_t seed, int restarts) {
  struct Tracker {
    size_t d;
    const std::function<double(std::span<const double>)>* f;
    const std::function<bool(std::span<const double>)>* valid;
    BoxOptimum best;
    double Eval(const double* x) {
      std::span<const double> p(x, d);
      const double v = (*f)(p);
      if (!std::isfinite(v)) return -1e100;
      if (v > best.value && (*valid)(p)) {
        best.x.assign(x, x + d);
        best.value = v;
        best.found = true;
      }
      return v;
    }
  } tracker{d, &f, &valid, {}};
  auto objective = [](unsigned, const double* x, double*, void* data) -> double {
    return static_cast<Tracker*>(data)->Eval(x);
  };

  common::SplitMix64 rng(seed);
  std::vector<std::pair<double, std::vector<double>>> samples;
  const size_t count = 64 * (d + 1);
  for (size_t i = 0; i < count; ++i) {
    std::vector<double> p(d);
    for (auto& v : p) v = rng.NextDouble();
    samples.emplace_back(tracker.Eval(p.data()), std::move(p));
  }
  std::stable_sort(samples.begin(), samples.end(), [](const auto& a, const auto& b) { return a.first > b.first; });

  const std::vector<double> zeros(d, 0.0), ones(d, 1.0);
  {
    nlopt::opt global(nlopt::GN_DIRECT_L, static_cast<unsigned>(d));
    global.set_lower_bounds(zeros);
    global.set_upper_bounds(ones);
    global.set_max_objective(objective, &tracker);
    global.set_maxeval(static_cast<int>(100 * (d + 1)));
    std::vector<double> x(d, 0.5);
    RunQuietly(global, x);
  }
  std::vector<std::vector<double>> starts;
  if (tracker.best.found) starts.push_back(tracker.best.x);
  for (size_t i = 0; i < samples.size() && starts.size() < static_cast<size_t>(std::max(restarts, 1)); ++i) {
    starts.push_back(samples[i].second);
  }
  for (auto& x : starts) {
    nlopt::opt local(d >= 2 ? nlopt::LN_BOBYQA : nlopt::LN_COBYLA, static_cast<unsigned>(d));
    local.set_lower_bounds(zeros);
    local.set_upper_bounds(ones);
    local.set_max_objective(objective, &tracker);
    local.set_maxeval(static_cast<int>(50 * (d + 1)));
    local.set_xtol_rel(1e-8);
    local.set_initial_step(0.05);
    RunQuietly(local, x);
  }
  return tracker.best;
}

common::Status CheckModels(std::span<const GaussianProcess> models, size_t d) {
  for (size_t j = 0; j < models.size(); ++j) {
    if (models[j].dimensions() != d) {
      return common::InvalidArgument("model " + Str(j) + " has " + Str(models[j].dimensions()) +
                                     " input dimensions, expected " + Str(d));
    }
  }
  return common::Status::Ok();
}

}  // namespace

// ----------------------------------------------------------------- ProposeBatch

common::Result<std::vector<ProposedPoint>> ProposeBatch(std::span<const GaussianProcess> models, const Points& x,
                                                        const Points& y, std::span<const double> reference,
                                                        const ProposeOptions& options) {
  if (x.empty()) return common::InvalidArgument("propose: no evaluated configurations");
  if (x.size() != y.size()) {
    return common::InvalidArgument("propose: " + Str(x.size()) + " configurations but " + Str(y.size()) +
                                   " objective rows");
  }
  const size_t d = x[0].size(), m = reference.size();
  if (d == 0) return common::InvalidArgument("propose: configurations have no dimensions");
  if (m == 0) return common::InvalidArgument("propose: empty reference point");
  if (!AllFinite(reference)) return common::InvalidArgument("propose: reference point is not finite");
  if (models.size() != m) {
    return common::InvalidArgument("propose: " + Str(models.size()) + " models for " + Str(m) + " objectives");
  }
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(x, d, "propose: configuration", true));
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(y, m, "propose: objective row"));
  SHAMMIE_RETURN_IF_ERROR(CheckPoints(options.pending, d, "propose: pending configuration", true));
  SHAMMIE_RETURN_IF_ERROR(CheckModels(models, d));
  if (options.batch_size == 0) return common::InvalidArgument("propose: batch_size must be >= 1");
  if (options.restarts < 0) return common::InvalidArgument("propose: restarts must be >= 0");
  if (!(options.fallback_kappa >= 0) || !std::isfinite(options.fallback_kappa)) {
    return common::InvalidArgument("propose: fallback_kappa must be finite and >= 0");
  }
  if (!(options.min_distance >= 0) || !std::isfinite(options.min_distance)) {
    return common::InvalidArgument("propose: min_distance must be finite and >= 0");
  }

  auto means_at = [&](std::span<const double> p) {
    std::vector<double> mu(m);
    for (size_t j = 0; j < m; ++j) mu[j] = models[j].Mean(p);
    return mu;
  };
  Points taken = x;            // no proposal near these
  Points believed;             // pending + chosen configurations
  Points front_values = y;     // observed values + believed means
  for (const auto& p : options.pending) {
    taken.push_back(p);
    believed.push_back(p);
    front_values.push_back(means_at(p));
  }
  const double min_d2 = options.min_distance * options.min_distance;
  auto valid = [&](std::span<const double> p) {
    for (const auto& t : taken) {
      double d2 = 0;
      for (size_t k = 0; k < d; ++k) d2 += (p[k] - t[k]) * (p[k] - t[k]);
      if (d2 < min_d2) return false;
    }
    return true;
  };

  std::vector<ProposedPoint> out;
  for (size_t step = 0; step < options.batch_size; ++step) {
    std::vector<GaussianProcess> believers;
    for (const auto& gp : models) believers.push_back(gp.WithBelieved(believed));
    const Points front = UsefulFront(front_values, reference);
    std::vector<double> mu(m), sd(m), shifted(m);
    auto predict = [&](std::span<const double> p) {
      for (size_t j = 0; j < m; ++j) {
        const GpPrediction g = believers[j].Predict(p);
        mu[j] = g.mean;
        sd[j] = std::sqrt(g.variance);
      }
    };
    std::vector<ProposalCriterion> stages = {ProposalCriterion::kHvi};
    if (options.fallback_kappa > 0) stages.push_back(ProposalCriterion::kOptimisticHvi);
    stages.push_back(ProposalCriterion::kUncertainty);
    BoxOptimum best;
    ProposalCriterion used = ProposalCriterion::kHvi;
    for (size_t s = 0; s < stages.size(); ++s) {
      const ProposalCriterion criterion = stages[s];
      auto acquisition = [&](std::span<const double> p) -> double {
        predict(p);
        switch (criterion) {
          case ProposalCriterion::kHvi:
            return HviUnchecked(front, mu, reference);
          case ProposalCriterion::kOptimisticHvi:
            for (size_t j = 0; j < m; ++j) shifted[j] = mu[j] - options.fallback_kappa * sd[j];
            return HviUnchecked(front, shifted, reference);
          case ProposalCriterion::kUncertainty: {
            double total = 0;
            for (size_t j = 0; j < m; ++j) total += sd[j] / believers[j].target_scale();
            return total;
          }
        }
        return 0;
      };
      best = MaximizeOverBox(d, acquisition, valid, common::DeriveSeed(options.seed, "acquisition", step * 4 + s),
                             options.restarts);
      used = criterion;
      if (!best.found) break;
      if (best.value > 0) break;
    }
    if (!best.found) {
      return common::Internal("propose: every candidate configuration was within min_distance of a taken one");
    }
    ProposedPoint point;
    point.x = best.x;
    predict(point.x);
    point.mean = mu;
    point.std_dev = sd;
    point.criterion = used;
    point.acquisition = best.value;
    taken.push_back(point.x);
    believed.push_back(point.x);
    front_values.push_back(point.mean);
    out.push_back(std::move(point));
  }
  return out;
}

common::Result<std::vector<ProposedPoint>> ProposeBatch(const Points& x, const Points& y,
                                                        std::span<const double> reference,
                                                        const ProposeOptions& options) {
  SHAMMIE_ASSIGN_OR_RETURN(auto models, FitObjectives(x, y, options.gp));
  return ProposeBatch(models, x, y, reference, options);
}

// ------------------------------------------------------------ RiskGuidedReference

common::Result<GuidedReference> RiskGuidedReference(std::span<const GaussianProcess> models,
                                                    std::span<const ConstrainedObjective> constraints,
                                                    const ReferenceOptions& options) {
  if (models.empty()) return common::InvalidArgument("guided reference: no models");
  if (constraints.empty()) return common::InvalidArgument("guided reference: no constrained objectives");
  if (options.restarts < 0) return common::InvalidArgument("guided reference: restarts must be >= 0");
  const size_t d = models[0].dimensions(), m = models.size();
  SHAMMIE_RETURN_IF_ERROR(CheckModels(models, d));
  std::set<size_t> seen;
  for (const auto& c : constraints) {
    if (c.objective >= m) {
      return common::InvalidArgument("guided reference: objective " + Str(c.objective) + " out of range (" + Str(m) +
                                     " models)");
    }
    if (!seen.insert(c.objective).second) {
      return common::InvalidArgument("guided reference: objective " + Str(c.objective) + " constrained twice");
    }
    if (!std::isfinite(c.roi.lower) || !std::isfinite(c.roi.upper) || c.roi.lower > c.roi.upper) {
      return common::InvalidArgument("guided reference: objective " + Str(c.objective) +
                                     " needs finite lower <= upper");
    }
  }
  // Squared distance: the same minimizer, smooth at 0.
  auto closeness = [&](std::span<const double> p) {
    double d2 = 0;
    for (const auto& c : constraints) {
      const double t = models[c.objective].Mean(p) - c.roi.lower;
      d2 += t * t;
    }
    return -d2;
  };
  const BoxOptimum best = MaximizeOverBox(d, closeness, [](std::span<const double>) { return true; },
                                          common::DeriveSeed(options.seed, "reference", 0), options.restarts);
  if (!best.found) return common::Internal("guided reference: the constrained means could not be evaluated");
  GuidedReference out;
  out.x_star = best.x;
  out.distance = std::sqrt(-best.value);
  for (size_t j = 0; j < m; ++j) out.predicted.push_back(models[j].Mean(out.x_star));
  out.reference = out.predicted;
  for (const auto& c : constraints) out.reference[c.objective] = c.roi.upper;
  return out;
}

}  // namespace shammie::analysis
