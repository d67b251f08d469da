// The local launcher (DESIGN.md §3): `shammie run` outside an MPI job starts
// itself under `mpirun -np N` and waits for it.
//
// Signals: mpirun runs in its own process group, so a terminal's Ctrl-C
// reaches only this process, which turns the first SIGINT/SIGTERM into a
// SIGUSR1 for mpirun (Open MPI forwards SIGUSR1 to every rank; the
// controller treats it as "stop and flush") and a second SIGINT into a
// SIGTERM (mpirun then kills the job: an abort).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.hpp"

namespace shammie::cluster {

struct MpirunLaunch {
  std::string mpirun;                  // path of mpirun
  int ranks = 2;
  bool as_root = false;                // add --allow-run-as-root
  std::vector<std::string> program;    // argv of each rank, program[0] the executable
  std::vector<std::pair<std::string, std::string>> env;  // set for every rank
};

// The full mpirun command line (no shell quoting needed: it is exec'd).
std::vector<std::string> MpirunCommand(const MpirunLaunch& launch);

// Finds an executable on PATH.
std::optional<std::string> FindOnPath(const std::string& name);

// Path of the running executable (/proc/self/exe).
std::string SelfExecutable();

// Runs mpirun and waits; returns its exit status (128 + signal if killed).
common::Result<int> RunMpirun(const MpirunLaunch& launch);

}  // namespace shammie::cluster
