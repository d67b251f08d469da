// Adaptive sweeps (sweep.strategy = "bo" / "risk-bo"; docs/adaptive-sweeps.md):
// the controller proposes configurations from results as they arrive.
//
// The stage's random axes are the search space (mapped to the unit cube:
// uniform linearly, log_uniform in logs, int_uniform linearly then rounded)
// and random.samples points of the plan are the initial design. Then, in
// rounds: when every job of the stage has settled and the budget is not
// spent, ProposeRound() fits one Gaussian process per objective (the last
// value of each metric; failed jobs are left out) and picks `batch` new
// points by hypervolume improvement (analysis/bayes_opt.hpp), each with
// Kriging-believer updates, so a round's points run side by side on free
// workers. risk-bo takes the reference point from the region of interest of
// the final risk-controlling test (Laufer-Goldshtein et al., TMLR 2024).
//
// Rounds make the search deterministic: the same results give the same
// proposals, so a resumed run proposes the jobs it already ran (and finds
// them done in the journal) before it proposes new ones.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/spec.hpp"

namespace shammie::orchestrator {

// A configuration's coordinates in [0,1]^d (axes in the stage's sorted
// order) and back to config values.
std::vector<double> PointToUnit(const Stage& stage, const nlohmann::json& point);
nlohmann::json UnitToPoint(const Stage& stage, const std::vector<double>& unit);

struct AdaptiveObservation {
  nlohmann::json point;
  std::optional<std::vector<double>> objectives;  // as reported (not negated); nullopt: failed or missing
};

struct AdaptiveRound {
  std::vector<nlohmann::json> points;  // to evaluate next (may be fewer than asked: duplicates are dropped)
  std::vector<double> reference;       // in minimized units (maximized objectives negated)
  std::string criterion;               // how the points were chosen
};

// `count` new points for `stage` given everything evaluated so far (in
// proposal order). Deterministic given (observations, round).
common::Result<AdaptiveRound> ProposeRound(const ExperimentSpec& spec, const Stage& stage,
                                           const std::vector<AdaptiveObservation>& observed, size_t count,
                                           int64_t round);

// A job of an adaptive stage at `point`, everything else as `like` (a job of
// the same stage): config, point and content-addressed id.
PlannedJob AdaptiveJob(const PlannedJob& like, const nlohmann::json& point);

}  // namespace shammie::orchestrator
