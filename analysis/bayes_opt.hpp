// Bayesian-optimization primitives for adaptive sweeps (all objectives are
// minimized; configurations live in the unit cube [0,1]^d, and the caller
// maps declared ranges to it):
//   - GaussianProcess: a GP regressor with kernel ConstantKernel x Matern
//     (nu = 5/2) with one length scale per dimension (ARD), fixed observation
//     noise on standardized targets (sklearn's GaussianProcessRegressor with
//     normalize_y=True and `alpha`), hyper-parameters fitted by maximizing the
//     log marginal likelihood (Rasmussen & Williams 2006, eqs. 2.25-2.30 and
//     5.8-5.9) from several starts, as guidebo does with sklearn;
//   - Hypervolume / HypervolumeImprovement: the exact volume dominated by a
//     set of points and bounded by a reference point, for any dimension;
//   - ProposeBatch: guidebo's "HVI" acquisition (Laufer-Goldshtein et al.,
//     "Risk-Controlling Model Selection via Guided Bayesian Optimization",
//     TMLR 2024): maximize the hypervolume improvement of the GP posterior
//     mean over the observed Pareto front; batches and pending evaluations by
//     the Kriging believer (Ginsbourger et al. 2010);
//   - RiskGuidedReference: the same paper's reference point, which focuses
//     the search on the region of interest of the risk-controlling test
//     (analysis/risk_control.hpp, PAPERS.md section 8(a')).
// Eigen and NLopt stay inside bayes_opt.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "analysis/risk_control.hpp"
#include "common/status.hpp"

namespace shammie::analysis {

struct GpHyperparameters {
  double constant = 1;                // ConstantKernel's value, in standardized units
  std::vector<double> length_scales;  // one per input dimension, in unit-cube units
};

struct GpOptions {
  // Added to the kernel's diagonal on the standardized scale (sklearn's `alpha`).
  double noise = 1e-2;
  // Random starts of the likelihood maximizer in addition to the first one at
  // constant 1 and length scales 1 (sklearn's n_restarts_optimizer; guidebo
  // uses 25). Random starts are log-uniform within the bounds below.
  int restarts = 25;
  uint64_t seed = 0;
  double min_length_scale = 1e-2, max_length_scale = 1e2;
  double min_constant = 1e-3, max_constant = 1e3;
  // When set, nothing is fitted: the GP uses these hyper-parameters.
  std::optional<GpHyperparameters> fixed;
};

struct GpPrediction {
  double mean = 0;
  double variance = 0;  // of the latent function (no observation noise), in the targets' units squared
};

// Targets y are standardized: (y - mean(y)) / std(y) with the population std
// (ddof 0); a std below 10 machine epsilons counts as 1 (sklearn's
// normalize_y), so constant targets work. Predictions come back in y's units.
class GaussianProcess {
 public:
  // x: n points of dimension d >= 1; y: n finite values. Errors: no points,
  // ragged or mismatched sizes, non-finite values, bad options.
  static common::Result<GaussianProcess> Fit(const std::vector<std::vector<double>>& x, const std::vector<double>& y,
                                             const GpOptions& options = {});

  // x must have dimensions() values (a programmer error otherwise).
  double Mean(std::span<const double> x) const;
  double Variance(std::span<const double> x) const;
  GpPrediction Predict(std::span<const double> x) const;

  const GpHyperparameters& hyperparameters() const;
  // Of the standardized targets at hyperparameters() (what is maximized; the
  // same number as sklearn's log_marginal_likelihood with normalize_y=True).
  double log_marginal_likelihood() const;
  std::size_t dimensions() const;
  std::size_t size() const;        // observations, believed ones included
  double target_mean() const;      // the standardization: y = target_mean + target_scale * z
  double target_scale() const;

  // The Kriging believer: this GP conditioned on observations at `points`
  // equal to its own posterior mean there (same hyper-parameters and
  // standardization). The mean is unchanged everywhere; the variance shrinks
  // around `points`.
  GaussianProcess WithBelieved(const std::vector<std::vector<double>>& points) const;

  struct State;  // defined in bayes_opt.cpp (Eigen stays there)

 private:
  explicit GaussianProcess(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// One GP per objective: y[i][j] is objective j at x[i]; objective j's GP uses
// seed DeriveSeed(options.seed, "gp", j).
common::Result<std::vector<GaussianProcess>> FitObjectives(const std::vector<std::vector<double>>& x,
                                                           const std::vector<std::vector<double>>& y,
                                                           const GpOptions& options = {});

// The volume of the region dominated by `points` (minimization) and bounded by
// `reference`: the union over points p of the boxes [p, reference]. Points not
// strictly below the reference in every coordinate add nothing. Exact: a sweep
// in 2-D, slicing along the last coordinate above (O(n^(m-1) log n)). Empty
// `points`: 0. Errors: empty or non-finite reference, a point of another size,
// non-finite points.
common::Result<double> Hypervolume(const std::vector<std::vector<double>>& points, std::span<const double> reference);
// HV(points + {candidate}) - HV(points), computed as the volume of
// [candidate, reference] minus the hypervolume of the points clipped to it
// (no cancellation between two large volumes); exactly 0 when a point
// dominates (is <= in every coordinate) the candidate.
common::Result<double> HypervolumeImprovement(const std::vector<std::vector<double>>& points,
                                              std::span<const double> candidate, std::span<const double> reference);

struct ProposeOptions {
  std::size_t batch_size = 1;
  // Configurations being evaluated now (no result yet): believed at their
  // posterior mean, and never proposed again.
  std::vector<std::vector<double>> pending;
  uint64_t seed = 0;
  // Local optimizer starts for the acquisition (see bayes_opt.cpp).
  int restarts = 10;
  // When HVI of the posterior mean is 0 everywhere, the optimistic prediction
  // mean - fallback_kappa * std is used instead (0: skip to the uncertainty).
  double fallback_kappa = 2;
  // No proposal lies within this Euclidean distance of an evaluated, pending
  // or already proposed point.
  double min_distance = 1e-6;
  GpOptions gp;  // for the overload that fits the GPs
};

enum class ProposalCriterion {
  kHvi,            // hypervolume improvement of the posterior mean (guidebo's "HVI")
  kOptimisticHvi,  // HVI of mean - kappa * std: no mean prediction improves the front
  kUncertainty,    // sum over objectives of the posterior std / target_scale(): nothing improves even optimistically
};

struct ProposedPoint {
  std::vector<double> x;          // in [0,1]^d
  std::vector<double> mean;       // posterior mean per objective (what the believer adds to the front)
  std::vector<double> std_dev;    // posterior std per objective, given the evaluated and the earlier believed points
  ProposalCriterion criterion = ProposalCriterion::kHvi;
  double acquisition = 0;         // the criterion's value at x
};

// Picks options.batch_size new configurations, one at a time: each maximizes
// the acquisition over [0,1]^d against the Pareto front of the observed `y`
// plus the believed means of pending and already picked points, relative to
// `reference`. x: n evaluated configurations in [0,1]^d; y: their m
// objective values; models: one GP per objective (e.g. FitObjectives) over
// the same d. Deterministic given options.seed.
common::Result<std::vector<ProposedPoint>> ProposeBatch(std::span<const GaussianProcess> models,
                                                        const std::vector<std::vector<double>>& x,
                                                        const std::vector<std::vector<double>>& y,
                                                        std::span<const double> reference,
                                                        const ProposeOptions& options = {});
// Same, fitting the GPs first with options.gp.
common::Result<std::vector<ProposedPoint>> ProposeBatch(const std::vector<std::vector<double>>& x,
                                                        const std::vector<std::vector<double>>& y,
                                                        std::span<const double> reference,
                                                        const ProposeOptions& options = {});

// A constrained objective of guided BO: its index among the objectives and
// its region of interest (lower and upper are used).
struct ConstrainedObjective {
  std::size_t objective = 0;
  RegionOfInterest roi;
};

struct ReferenceOptions {
  uint64_t seed = 0;
  int restarts = 10;  // local optimizer starts
};

struct GuidedReference {
  std::vector<double> reference;  // one per objective
  std::vector<double> x_star;     // the configuration whose predicted constrained objectives are nearest `lower`
  std::vector<double> predicted;  // every objective's posterior mean at x_star
  double distance = 0;            // ||mu_c(x_star) - lower|| over the constrained objectives
};

// guidebo's reference point: constrained coordinates = roi.upper; every
// other (free) coordinate = its GP's posterior mean at the x* in [0,1]^d that
// minimizes the Euclidean distance between the constrained GPs' means and
// their roi.lower. models: one GP per objective, same dimensions. Errors: no
// models, an index out of range or repeated, lower > upper or non-finite.
common::Result<GuidedReference> RiskGuidedReference(std::span<const GaussianProcess> models,
                                                    std::span<const ConstrainedObjective> constraints,
                                                    const ReferenceOptions& options = {});

}  // namespace shammie::analysis
