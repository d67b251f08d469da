// The subcommands of `shammie` that act on results (export, analyze). Each
// returns the process exit code (DESIGN.md §4) and writes only to the
// streams it is given; cli.cpp parses the arguments and dispatches.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "workers/job_kind.hpp"

namespace shammie::orchestrator {

inline constexpr int kExitOk = 0;
inline constexpr int kExitBadInput = 2;

// `target` is a run directory (holding results.h5) or the file itself.
std::string ResultsFilePath(const std::string& target);

// `shammie export DIR --format csv|json [-o FILE]`.
int ExportCommand(const std::string& target, const std::string& format, const std::string& output, std::ostream& out,
                  std::ostream& err);

struct AnalyzeArgs {
  std::string dir, csv, label, pred, strata, report;
  std::vector<std::string> methods;
  double alpha = 0.1, lambda = 1.0, target_width = 0;
  bool clt_free = false, json = false;
  size_t bins = 10;
  uint64_t seed = 0;
};

// `shammie analyze --csv FILE ...`: a mean from human labels and autorater predictions.
int AnalyzeCsvCommand(const AnalyzeArgs& args, std::ostream& out, std::ostream& err);
// `shammie analyze DIR`: the [[analysis]] tables of the experiment stored in DIR/results.h5.
int AnalyzeRunCommand(const AnalyzeArgs& args, const workers::KindRegistry& kinds, std::ostream& out,
                      std::ostream& err);

}  // namespace shammie::orchestrator
