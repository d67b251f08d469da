// `shammie analyze` for [[analysis]] methods = ["clm"]: conformal language
// modeling over the `samples` tables of lm.sample runs (docs/experiments/
// conformal-lm.md). Builds one calibration item per (run, prompt) from the
// prompt's samples (quality = length-normalised log-likelihood, admission =
// the task's metric, similarity = ROUGE-L between samples), runs the
// calibrate-then-test trials of analysis/clm_study.hpp, prints the tables,
// writes /analysis/<name> (and /analysis/<name>-components) and, with a
// report directory, plots risk, samples and set size against epsilon.
#pragma once

#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.hpp"
#include "orchestrator/spec.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

common::Result<nlohmann::json> AnalyzeClm(storage::ResultStore& store, const AnalysisSpec& a,
                                          const std::string& report_dir, const std::string& title, std::ostream& out);

}  // namespace shammie::orchestrator
