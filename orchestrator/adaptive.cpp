#include "orchestrator/adaptive.hpp"

#include <algorithm>
#include <cmath>

#include "analysis/bayes_opt.hpp"
#include "analysis/risk_control.hpp"
#include "common/random.hpp"

namespace shammie::orchestrator {

using nlohmann::json;
using D = RandomAxis::Distribution;

std::vector<double> PointToUnit(const Stage& stage, const json& point) {
  std::vector<double> u;
  for (const auto& axis : stage.sweep.random) {
    const double v = point.at(axis.key).get<double>();
    double t = 0;
    if (axis.hi > axis.lo) {
      t = axis.distribution == D::kLogUniform ? (std::log(v) - std::log(axis.lo)) / (std::log(axis.hi) - std::log(axis.lo))
                                              : (v - axis.lo) / (axis.hi - axis.lo);
    }
    u.push_back(std::clamp(t, 0.0, 1.0));
  }
  return u;
}

json UnitToPoint(const Stage& stage, const std::vector<double>& unit) {
  json point = json::object();
  for (size_t i = 0; i < stage.sweep.random.size(); ++i) {
    const RandomAxis& axis = stage.sweep.random[i];
    const double t = std::clamp(unit[i], 0.0, 1.0);
    switch (axis.distribution) {
      case D::kUniform: point[axis.key] = axis.lo + t * (axis.hi - axis.lo); break;
      case D::kLogUniform: point[axis.key] = std::exp(std::log(axis.lo) + t * (std::log(axis.hi) - std::log(axis.lo))); break;
      case D::kIntUniform: point[axis.key] = static_cast<int64_t>(std::llround(axis.lo + t * (axis.hi - axis.lo))); break;
      case D::kChoice: break;  // refused by the loader
    }
  }
  return point;
}

PlannedJob AdaptiveJob(const PlannedJob& like, const json& point) {
  PlannedJob job = like;
  job.config.update(point);
  job.point = point;
  job.critical_path = 1;
  job.id = JobId(job.kind, job.config, job.seed, job.inputs);
  return job;
}

namespace {

// Seeded uniform points (too little data for a surrogate yet).
std::vector<json> RandomPoints(const Stage& stage, size_t count, uint64_t seed) {
  common::SplitMix64 rng(seed);
  std::vector<json> out;
  for (size_t i = 0; i < count; ++i) {
    std::vector<double> u;
    for (size_t d = 0; d < stage.sweep.random.size(); ++d) u.push_back(rng.NextDouble());
    out.push_back(UnitToPoint(stage, u));
  }
  return out;
}

}  // namespace

common::Result<AdaptiveRound> ProposeRound(const ExperimentSpec& spec, const Stage& stage,
                                           const std::vector<AdaptiveObservation>& observed, size_t count,
                                           int64_t round) {
  const AdaptiveSweep& a = stage.sweep.adaptive;
  const uint64_t seed = common::DeriveSeed(static_cast<uint64_t>(spec.seed), "sweep.adaptive:" + stage.name,
                                           static_cast<uint64_t>(round));
  AdaptiveRound out;
  std::vector<std::vector<double>> x, y, evaluated;
  for (const auto& o : observed) {
    evaluated.push_back(PointToUnit(stage, o.point));
    if (!o.objectives) continue;
    std::vector<double> v = *o.objectives;
    bool finite = true;
    for (size_t k = 0; k < v.size(); ++k) {
      if (std::find(a.maximize.begin(), a.maximize.end(), a.objectives[k]) != a.maximize.end()) v[k] = -v[k];
      finite &= std::isfinite(v[k]);
    }
    if (!finite) continue;
    x.push_back(evaluated.back());
    y.push_back(std::move(v));
  }
  if (x.size() < 2) {
    out.points = RandomPoints(stage, count, seed);
    out.criterion = "random (fewer than 2 results to fit a surrogate)";
    return out;
  }
  analysis::GpOptions gp;
  gp.seed = seed;
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<analysis::GaussianProcess> models, analysis::FitObjectives(x, y, gp));
  if (a.strategy == "risk-bo") {
    const size_t c = static_cast<size_t>(
        std::find(a.objectives.begin(), a.objectives.end(), a.constraint) - a.objectives.begin());
    const analysis::RegionOfInterest roi =
        analysis::ComputeRegionOfInterest(a.alpha, a.delta, static_cast<size_t>(a.calibration_size),
                                          static_cast<size_t>(a.validation_size), 0.01, a.binary);
    const analysis::ConstrainedObjective constraint{c, roi};
    analysis::ReferenceOptions ro;
    ro.seed = seed;
    SHAMMIE_ASSIGN_OR_RETURN(analysis::GuidedReference guided,
                             analysis::RiskGuidedReference(models, std::span(&constraint, 1), ro));
    out.reference = guided.reference;
  } else if (!a.reference.empty()) {
    out.reference = a.reference;
    for (size_t k = 0; k < out.reference.size(); ++k) {
      if (std::find(a.maximize.begin(), a.maximize.end(), a.objectives[k]) != a.maximize.end()) out.reference[k] *= -1;
    }
  } else {
    // The worst value seen plus 10% of the range (a unit when flat).
    for (size_t k = 0; k < y.front().size(); ++k) {
      double lo = y[0][k], hi = y[0][k];
      for (const auto& row : y) {
        lo = std::min(lo, row[k]);
        hi = std::max(hi, row[k]);
      }
      out.reference.push_back(hi + (hi > lo ? 0.1 * (hi - lo) : 1.0));
    }
  }
  analysis::ProposeOptions po;
  po.batch_size = count;
  po.seed = seed;
  // Failed configurations are not proposed again either.
  for (const auto& e : evaluated) {
    if (std::find(x.begin(), x.end(), e) == x.end()) po.pending.push_back(e);
  }
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<analysis::ProposedPoint> proposed,
                           analysis::ProposeBatch(models, x, y, out.reference, po));
  std::vector<std::string> criteria;
  for (const auto& p : proposed) {
    out.points.push_back(UnitToPoint(stage, p.x));
    const char* name = p.criterion == analysis::ProposalCriterion::kHvi             ? "hvi"
                       : p.criterion == analysis::ProposalCriterion::kOptimisticHvi ? "optimistic-hvi"
                                                                                     : "uncertainty";
    if (std::find(criteria.begin(), criteria.end(), name) == criteria.end()) criteria.push_back(name);
  }
  for (const auto& c : criteria) out.criterion += (out.criterion.empty() ? "" : "+") + c;
  return out;
}

}  // namespace shammie::orchestrator
