// `shammie analyze` for [[analysis]] methods = ["pareto-testing"]: picks the
// configuration (one run of the stage each) with the lowest cost whose risk
// is certified <= alpha with probability >= 1 - delta (Pareto Testing,
// Laufer-Goldshtein et al., ICLR 2023; analysis/risk_control.hpp), from the
// per-example table every run wrote: columns split ("validation" or
// "calibration"), loss (the constrained loss, in [0, 1]) and cost (free
// objective), the calibration rows aligned across runs (the same examples in
// the same order). Then repeats the choice over random halvings of the
// calibration rows, testing each choice on the other half: the share of
// choices whose test risk exceeds alpha (to compare with delta) and their
// mean test cost. What an adaptive sweep (strategy = "risk-bo") ends with;
// the same analysis of a grid, random or plain bo stage compares strategies
// at equal budget.
#pragma once

#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.hpp"
#include "orchestrator/spec.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

common::Result<nlohmann::json> AnalyzeParetoTesting(storage::ResultStore& store, const ExperimentSpec& spec,
                                                    const AnalysisSpec& a, std::ostream& out);

}  // namespace shammie::orchestrator
