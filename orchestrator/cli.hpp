// The `shammie` command line (DESIGN.md §4). RunCli() is main() without the
// process: it takes the streams and the kind registry, so tests drive it
// in-process. Exit codes: 0 ok, 1 some jobs failed, 2 bad input, 3 internal.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "workers/job_kind.hpp"

namespace shammie::orchestrator {

int RunCli(const std::vector<std::string>& args, const workers::KindRegistry& kinds, std::ostream& out,
           std::ostream& err);

}  // namespace shammie::orchestrator
