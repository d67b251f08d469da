// `[[analysis]] methods = ["curves"]`: a metric's curve over steps, averaged
// over the runs of a stage that share the values of some config keys (the
// seeds of one sweep point, or every point of a sweep axis), with a Student-t
// interval per step. E.g. success against RL iteration per prover strength
// and alpha (docs/experiments/pav.md), accuracy against sampled tokens per
// search method. Writes /analysis/<name> (group, step, runs, mean, lower,
// upper) and, with a report directory, <name>.png. With `x` (a numeric
// config key or a metric), each run gives one point instead, its metric's
// last value at its x, and the table's second column is x: loss against
// parameters, throughput against batch.
#pragma once

#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.hpp"
#include "orchestrator/spec.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

common::Result<nlohmann::json> AnalyzeCurves(storage::ResultStore& store, const AnalysisSpec& a,
                                             const std::string& report_dir, const std::string& title, std::ostream& out);

}  // namespace shammie::orchestrator
