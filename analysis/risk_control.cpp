#include "analysis/risk_control.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/pareto.hpp"

namespace shammie::analysis {

namespace {

double Mean(const std::vector<double>& x) { return std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size()); }

common::Status CheckSplit(const SplitLosses& s, size_t constraints, const std::string& name, size_t* configs,
                          size_t* examples) {
  if (s.constraint.size() != constraints) {
    return common::InvalidArgument(name + " has " + std::to_string(s.constraint.size()) + " constraints, expected " +
                                   std::to_string(constraints));
  }
  *configs = s.free_objective.size();
  if (*configs == 0) return common::InvalidArgument(name + " has no configurations");
  *examples = s.free_objective.front().size();
  if (*examples == 0) return common::InvalidArgument(name + " has no examples");
  for (const auto& f : s.free_objective) {
    if (f.size() != *examples) return common::InvalidArgument(name + ": every configuration needs the same examples");
    for (double v : f) {
      if (!std::isfinite(v)) return common::InvalidArgument(name + ": free objective is not finite");
    }
  }
  for (const auto& c : s.constraint) {
    if (c.size() != *configs) return common::InvalidArgument(name + ": constraint losses for every configuration needed");
    for (const auto& k : c) {
      if (k.size() != *examples) return common::InvalidArgument(name + ": every configuration needs the same examples");
      for (double v : k) {
        if (!(v >= 0 && v <= 1)) return common::InvalidArgument(name + ": constraint losses must be in [0, 1]");
      }
    }
  }
  return common::Status::Ok();
}

}  // namespace

double LeftTailPValue(double risk, size_t n, double alpha, bool binary) {
  if (binary) return BinomialCdf(std::ceil(static_cast<double>(n) * risk - 1e-9), n, alpha);
  return HoeffdingBentkusPValue(risk, n, alpha);
}

double RightTailPValue(double risk, size_t n, double alpha, bool binary) {
  // The mirror image: losses 1 - l have risk 1 - R against level 1 - alpha.
  const double k = std::floor(static_cast<double>(n) * risk + 1e-9);
  const double tail = 1 - BinomialCdf(k, n, alpha);
  if (binary) return tail;
  const double hoeffding = HoeffdingPValue(1 - std::max(risk, alpha), n, 1 - alpha);
  return std::min(std::exp(1.0) * tail, hoeffding);
}

RegionOfInterest ComputeRegionOfInterest(double alpha, double delta, size_t n_cal, size_t n_val, double delta_prime,
                                         bool binary) {
  constexpr int kGrid = 10000;
  auto grid = [](double lo, double hi, int i) { return lo + (hi - lo) * i / (kGrid - 1); };
  RegionOfInterest roi;
  // limit: the last grid point before the first risk whose p-value reaches delta.
  int i = 0;
  while (i < kGrid && LeftTailPValue(grid(0, alpha, i), n_cal, alpha, binary) < delta) ++i;
  roi.limit = grid(0, alpha, i == 0 ? kGrid - 1 : i - 1);
  int j = 0;
  while (j < kGrid && LeftTailPValue(grid(0, alpha, j), n_val, roi.limit, binary) < delta_prime) ++j;
  roi.lower = grid(0, alpha, j == 0 ? kGrid - 1 : j - 1);
  int k = 0;
  while (k < kGrid && RightTailPValue(grid(roi.limit, 1.0, k), n_val, roi.limit, binary) >= delta_prime) ++k;
  roi.upper = grid(roi.limit, 1.0, std::min(k, kGrid - 1));
  return roi;
}

common::Result<RiskControlResult> SelectRiskControlled(const SplitLosses& validation, const SplitLosses& calibration,
                                                       const RiskControlOptions& options,
                                                       std::span<const size_t> candidates) {
  const size_t constraints = options.alphas.size();
  if (constraints == 0) return common::InvalidArgument("give at least one constrained risk (alpha)");
  for (double a : options.alphas) {
    if (!(a > 0 && a < 1)) return common::InvalidArgument("each alpha must be in (0, 1)");
  }
  if (!(options.delta > 0 && options.delta < 1)) return common::InvalidArgument("delta must be in (0, 1)");
  size_t m_val, n_val, m_cal, n_cal;
  SHAMMIE_RETURN_IF_ERROR(CheckSplit(validation, constraints, "validation", &m_val, &n_val));
  SHAMMIE_RETURN_IF_ERROR(CheckSplit(calibration, constraints, "calibration", &m_cal, &n_cal));
  if (m_val != m_cal) return common::InvalidArgument("validation and calibration have different configurations");
  std::vector<size_t> pool(candidates.begin(), candidates.end());
  if (pool.empty()) {
    pool.resize(m_val);
    std::iota(pool.begin(), pool.end(), 0);
  }
  for (size_t k : pool) {
    if (k >= m_val) return common::InvalidArgument("candidate " + std::to_string(k) + " is not a configuration");
  }
  // (a) Pareto front on validation within the region of interest.
  std::vector<RegionOfInterest> roi;
  for (double a : options.alphas) {
    roi.push_back(ComputeRegionOfInterest(a, options.delta, n_cal, n_val, options.delta_prime, options.binary));
  }
  std::vector<size_t> in_roi;
  std::vector<std::vector<double>> points;
  for (size_t k : pool) {
    std::vector<double> p;
    bool inside = true;
    for (size_t c = 0; c < constraints; ++c) {
      p.push_back(Mean(validation.constraint[c][k]));
      inside &= p.back() <= roi[c].upper;
    }
    p.push_back(Mean(validation.free_objective[k]));
    if (!inside) continue;
    in_roi.push_back(k);
    points.push_back(std::move(p));
  }
  RiskControlResult out;
  std::vector<size_t> front_idx = ParetoFront(points);
  // (b) order by validation p-value (one constraint: by validation risk).
  std::vector<std::pair<double, size_t>> order;
  for (size_t f : front_idx) {
    double key = 0;
    if (constraints == 1) {
      key = points[f][0];
    } else {
      for (size_t c = 0; c < constraints; ++c) {
        key = std::max(key, LeftTailPValue(points[f][c], n_val, options.alphas[c], options.binary));
      }
    }
    order.emplace_back(key, in_roi[f]);
  }
  std::stable_sort(order.begin(), order.end());
  // (c) fixed-sequence testing on calibration.
  for (const auto& [key, k] : order) {
    double p = 0;
    for (size_t c = 0; c < constraints; ++c) {
      p = std::max(p, LeftTailPValue(Mean(calibration.constraint[c][k]), n_cal, options.alphas[c], options.binary));
    }
    out.tested.push_back(k);
    out.calibration_p_values.push_back(p);
  }
  for (size_t i = 0; i < out.tested.size(); ++i) {
    if (out.calibration_p_values[i] > options.delta) break;
    out.accepted.push_back(out.tested[i]);
  }
  // (d) best free objective among the accepted.
  double best = std::numeric_limits<double>::infinity();
  for (size_t k : out.accepted) {
    const double v = Mean(calibration.free_objective[k]);
    if (v < best) {
      best = v;
      out.chosen = k;
    }
  }
  return out;
}

}  // namespace shammie::analysis
