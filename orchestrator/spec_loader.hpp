// Loading an experiment file: TOML syntax, `extends` composition, strict
// schema validation of every table, sweep checks and the stage DAG. Collects
// every error of the file(s) before failing (STYLE.md 14).
//
// Composition: `extends = "base.toml"` (or a list, applied in order) names
// files relative to the file that says it. The extending file is merged over
// its bases: tables merge key by key, `[[stage]]` entries merge by `name`
// (a stage with a new name is appended), and any other value is replaced
// whole. Errors point into the file where the offending value was written.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "orchestrator/spec.hpp"
#include "workers/job_kind.hpp"

namespace shammie::orchestrator {

struct LoadResult {
  std::optional<ExperimentSpec> spec;  // set when there are no errors
  std::vector<Diagnostic> errors;      // in file order
  bool ok() const { return spec.has_value() && errors.empty(); }
};

// Reads `path` (and what it extends) and validates it against the kinds in
// `kinds`. Never throws; I/O errors are diagnostics too.
LoadResult LoadExperiment(const std::string& path, const workers::KindRegistry& kinds);
// The same from text, for tests: `path` names it in messages; extends are
// resolved relative to its directory.
LoadResult LoadExperimentFromString(const std::string& text, const std::string& path,
                                    const workers::KindRegistry& kinds);

// Reference text of every table and key of the spec (for --explain).
std::string ExplainSpec();

}  // namespace shammie::orchestrator
