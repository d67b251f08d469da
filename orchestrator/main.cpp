// shammie's entry point: builds the object graph (kind registry, streams)
// and hands over to RunCli(). No other code owns process-wide state.
#include <iostream>
#include <string>
#include <vector>

#include "orchestrator/cli.hpp"
#include "workers/job_kind.hpp"

int main(int argc, char** argv) {
  shammie::workers::KindRegistry kinds;
  shammie::workers::RegisterBuiltinKinds(kinds);
  std::vector<std::string> args(argv, argv + argc);
  try {
    return shammie::orchestrator::RunCli(args, kinds, std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "shammie: internal error: " << e.what() << "\n";
    return 3;
  }
}
