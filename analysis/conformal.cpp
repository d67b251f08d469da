#include "analysis/conformal.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/bayes_ppi.hpp"
#include "analysis/ltt.hpp"
#include "analysis/pareto.hpp"
#include "common/random.hpp"

namespace shammie::analysis {

std::string SetScoreName(SetScore score) {
  switch (score) {
    case SetScore::kFirstK: return "first-k";
    case SetScore::kMax: return "max";
    case SetScore::kSum: return "sum";
  }
  return "?";
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Rejection mask and the set confidence after each draw, for one prompt.
struct Trace {
  std::vector<char> kept;
  std::vector<double> confidence;  // running max of F_k (non-decreasing)
};

Trace TraceOf(const ClmPrompt& p, double lambda1, double lambda2, SetScore score) {
  const size_t k = p.quality.size();
  Trace t;
  t.kept.assign(k, 0);
  t.confidence.assign(k, -kInf);
  double f = score == SetScore::kMax ? -kInf : 0, running = -kInf;
  for (size_t i = 0; i < k; ++i) {
    bool keep = !(p.quality[i] < lambda2);
    if (keep && lambda1 < kInf && !p.similarity.empty()) {
      for (size_t j = 0; j < i && keep; ++j) {
        // Symmetrised similarity, against earlier kept items only.
        if (t.kept[j] && std::max(p.similarity[i][j], p.similarity[j][i]) > lambda1) keep = false;
      }
    }
    t.kept[i] = keep;
    if (keep) {
      switch (score) {
        case SetScore::kFirstK: f += 1; break;
        case SetScore::kMax: f = std::max(f, p.quality[i]); break;
        case SetScore::kSum: f += p.quality[i]; break;
      }
    }
    running = std::max(running, f);
    t.confidence[i] = running;
  }
  return t;
}

ClmOutcome OutcomeOf(const ClmPrompt& p, const Trace& t, double lambda3) {
  const size_t k = p.quality.size();
  // Stop index: how many draws had running confidence below lambda3, capped at kmax - 1.
  size_t stop = static_cast<size_t>(std::lower_bound(t.confidence.begin(), t.confidence.end(), lambda3) - t.confidence.begin());
  stop = std::min(stop, k - 1);
  ClmOutcome o;
  o.samples = stop + 1;
  bool hit = false;
  for (size_t i = 0; i <= stop; ++i) {
    if (!t.kept[i]) continue;
    ++o.set_size;
    hit |= p.admissible[i] == 1;
  }
  o.loss = hit ? 0 : 1;
  return o;
}

common::Status CheckPrompts(const std::vector<ClmPrompt>& prompts) {
  if (prompts.empty()) return common::InvalidArgument("no calibration prompts");
  const size_t k = prompts.front().quality.size();
  if (k == 0) return common::InvalidArgument("prompts have no sampled candidates");
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    const std::string where = "prompt " + std::to_string(i);
    if (p.quality.size() != k || p.admissible.size() != k) {
      return common::InvalidArgument(where + ": every prompt needs kmax = " + std::to_string(k) + " qualities and admission labels");
    }
    for (size_t j = 0; j < k; ++j) {
      if (!std::isfinite(p.quality[j])) return common::InvalidArgument(where + ": quality is not finite");
      if (p.admissible[j] != 0 && p.admissible[j] != 1) return common::InvalidArgument(where + ": admission labels must be 0 or 1");
    }
    if (!p.similarity.empty()) {
      if (p.similarity.size() != k) return common::InvalidArgument(where + ": similarity must be kmax x kmax");
      for (const auto& row : p.similarity) {
        if (row.size() != k) return common::InvalidArgument(where + ": similarity must be kmax x kmax");
        for (double s : row) {
          if (std::isnan(s)) return common::InvalidArgument(where + ": similarity has NaN");
        }
      }
    }
  }
  return common::Status::Ok();
}

// The reference code's grid: `points` quantiles at linspace(0, 1, points)
// (nearest observed value), deduplicated, plus -inf and +inf.
std::vector<double> Grid(std::vector<double> values, size_t points) {
  std::vector<double> out = {-kInf, kInf};
  if (!values.empty()) {
    std::sort(values.begin(), values.end());
    for (size_t i = 0; i < points; ++i) {
      const double q = points == 1 ? 0.5 : static_cast<double>(i) / static_cast<double>(points - 1);
      out.push_back(values[static_cast<size_t>(std::llround(q * static_cast<double>(values.size() - 1)))]);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

ClmOutcome EvaluateClm(const ClmPrompt& prompt, const ClmConfig& config, SetScore score) {
  return OutcomeOf(prompt, TraceOf(prompt, config.similarity_threshold, config.quality_threshold, score),
                   config.confidence_threshold);
}

ClmMetrics EvaluateClmSet(const std::vector<ClmPrompt>& prompts, const ClmConfig& config, SetScore score) {
  ClmMetrics m;
  for (const auto& p : prompts) {
    ClmOutcome o = EvaluateClm(p, config, score);
    m.loss += o.loss;
    m.samples += static_cast<double>(o.samples);
    m.set_size += static_cast<double>(o.set_size);
  }
  const double n = static_cast<double>(std::max<size_t>(1, prompts.size()));
  m.loss /= n;
  m.samples /= n;
  m.set_size /= n;
  return m;
}

common::Result<ClmCalibration> CalibrateClm(const std::vector<ClmPrompt>& calibration, const ClmOptions& options) {
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<ClmCalibration> out, CalibrateClmMany(calibration, options, {options.epsilon}));
  return std::move(out.front());
}

common::Result<std::vector<ClmCalibration>> CalibrateClmMany(const std::vector<ClmPrompt>& calibration,
                                                             const ClmOptions& options,
                                                             const std::vector<double>& epsilons) {
  SHAMMIE_RETURN_IF_ERROR(CheckPrompts(calibration));
  if (epsilons.empty()) return common::InvalidArgument("no epsilon to calibrate for");
  for (double epsilon : epsilons) {
    if (!(epsilon > 0 && epsilon < 1)) return common::InvalidArgument("epsilon must be in (0, 1)");
  }
  if (!(options.delta > 0 && options.delta < 1)) return common::InvalidArgument("delta must be in (0, 1)");
  if (!(options.opt_fraction > 0 && options.opt_fraction < 1)) return common::InvalidArgument("opt_fraction must be in (0, 1)");
  if (options.grid_points < 1 || options.grid_points > 100) return common::InvalidArgument("grid_points must be in [1, 100]");
  // Split (seeded shuffle).
  std::vector<size_t> order(calibration.size());
  std::iota(order.begin(), order.end(), 0);
  common::SplitMix64 rng(options.seed ^ 0x3c6ef372fe94f82bULL);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(i) - 1))]);
  const size_t n_opt = std::max<size_t>(1, static_cast<size_t>(std::floor(options.opt_fraction * static_cast<double>(calibration.size()))));
  if (n_opt >= calibration.size()) return common::InvalidArgument("need at least 2 calibration prompts to split");
  std::vector<const ClmPrompt*> opt, cal;
  for (size_t i = 0; i < order.size(); ++i) (i < n_opt ? opt : cal).push_back(&calibration[order[i]]);

  // Grids from the opt split's scores.
  std::vector<double> qualities, similarities;
  for (const ClmPrompt* p : opt) {
    qualities.insert(qualities.end(), p->quality.begin(), p->quality.end());
    for (size_t i = 0; i < p->similarity.size(); ++i) {
      for (size_t j = 0; j < i; ++j) similarities.push_back(p->similarity[i][j]);
    }
  }
  std::vector<double> lambda1 = {kInf}, lambda2 = {-kInf};
  if (options.reject) {
    lambda1 = Grid(similarities, options.grid_points);
    lambda2 = Grid(qualities, options.grid_points);
  }
  // Evaluate every configuration on opt; lambda3 from quantiles of the confidences it produces.
  std::vector<ClmConfig> configs;
  std::vector<std::vector<double>> objectives;  // (loss, samples + size)
  for (double l1 : lambda1) {
    for (double l2 : lambda2) {
      std::vector<Trace> traces;
      std::vector<double> confidences;
      for (const ClmPrompt* p : opt) {
        traces.push_back(TraceOf(*p, l1, l2, options.score));
        for (double c : traces.back().confidence) {
          if (std::isfinite(c)) confidences.push_back(c);
        }
      }
      for (double l3 : Grid(confidences, options.grid_points)) {
        double loss = 0, cost = 0;
        for (size_t i = 0; i < opt.size(); ++i) {
          ClmOutcome o = OutcomeOf(*opt[i], traces[i], l3);
          loss += o.loss;
          cost += static_cast<double>(o.samples + o.set_size);
        }
        configs.push_back({l1, l2, l3});
        objectives.push_back({loss / static_cast<double>(opt.size()), cost / static_cast<double>(opt.size())});
      }
    }
  }
  std::vector<size_t> front = ParetoFront(objectives);
  std::stable_sort(front.begin(), front.end(), [&](size_t a, size_t b) {
    return objectives[a][0] != objectives[b][0] ? objectives[a][0] < objectives[b][0] : objectives[a][1] < objectives[b][1];
  });
  // Losses on cal of the front, in testing order, computed once for every epsilon.
  std::vector<size_t> failures;
  failures.reserve(front.size());
  for (size_t idx : front) {
    size_t f = 0;
    for (const ClmPrompt* p : cal) f += static_cast<size_t>(EvaluateClm(*p, configs[idx], options.score).loss);
    failures.push_back(f);
  }
  // Fixed-sequence testing on cal with the binomial p-value, per epsilon.
  std::vector<ClmCalibration> out(epsilons.size());
  for (size_t e = 0; e < epsilons.size(); ++e) {
    ClmCalibration& c = out[e];
    c.candidates = front.size();
    for (size_t t = 0; t < front.size(); ++t) {
      if (BinomialPValue(failures[t], cal.size(), epsilons[e]) > options.delta) break;
      c.found = true;
      c.config = configs[front[t]];
      ++c.accepted;
    }
    if (c.found) {
      ClmMetrics& m = c.cal_metrics;
      for (const ClmPrompt* p : cal) {
        ClmOutcome o = EvaluateClm(*p, c.config, options.score);
        m.loss += o.loss;
        m.samples += static_cast<double>(o.samples);
        m.set_size += static_cast<double>(o.set_size);
      }
      const double n = static_cast<double>(cal.size());
      m.loss /= n;
      m.samples /= n;
      m.set_size /= n;
    }
  }
  return out;
}

common::Result<ComponentCalibration> CalibrateComponents(const std::vector<ComponentPrompt>& calibration,
                                                         double epsilon, double delta) {
  if (calibration.empty()) return common::InvalidArgument("no calibration prompts");
  if (!(epsilon > 0 && epsilon < 1) || !(delta > 0 && delta < 1)) return common::InvalidArgument("epsilon and delta must be in (0, 1)");
  std::vector<double> thresholds;
  size_t correct_total = 0;
  for (size_t i = 0; i < calibration.size(); ++i) {
    const auto& p = calibration[i];
    if (p.score.size() != p.correct.size()) {
      return common::InvalidArgument("prompt " + std::to_string(i) + ": scores and labels differ in length");
    }
    for (size_t j = 0; j < p.score.size(); ++j) {
      if (!std::isfinite(p.score[j])) return common::InvalidArgument("prompt " + std::to_string(i) + ": score is not finite");
      if (p.correct[j] != 0 && p.correct[j] != 1) return common::InvalidArgument("prompt " + std::to_string(i) + ": labels must be 0 or 1");
      thresholds.push_back(p.score[j]);
      correct_total += static_cast<size_t>(p.correct[j]);
    }
  }
  thresholds.push_back(-kInf);
  thresholds.push_back(kInf);
  std::sort(thresholds.begin(), thresholds.end(), std::greater<>());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  ComponentCalibration out;
  for (double tau : thresholds) {  // high to low: +inf keeps nothing, then more and more
    size_t failures = 0;
    for (const auto& p : calibration) {
      bool bad = false;
      for (size_t j = 0; j < p.score.size(); ++j) bad |= p.score[j] > tau && p.correct[j] == 0;
      failures += bad;
    }
    if (BinomialPValue(failures, calibration.size(), epsilon) > delta) break;
    out.found = true;
    out.threshold = tau;
    out.cal_loss = static_cast<double>(failures) / static_cast<double>(calibration.size());
  }
  if (out.found && correct_total > 0) {
    size_t kept = 0;
    for (const auto& p : calibration) {
      for (size_t j = 0; j < p.score.size(); ++j) kept += p.score[j] > out.threshold && p.correct[j] == 1;
    }
    out.recall = static_cast<double>(kept) / static_cast<double>(correct_total);
  }
  return out;
}

}  // namespace shammie::analysis
