// The subcommands of `shammie` that act on results (export, analyze). Each
// returns the process exit code (DESIGN.md §4) and writes only to the
// streams it is given; cli.cpp parses the arguments and dispatches.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "orchestrator/spec.hpp"
#include "workers/job_kind.hpp"

namespace shammie::orchestrator {

inline constexpr int kExitOk = 0;
inline constexpr int kExitJobsFailed = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitInternal = 3;

// Loads a spec; prints every diagnostic (and a count) to `err`. nullopt on errors.
std::optional<ExperimentSpec> LoadOrReport(const std::string& path, const workers::KindRegistry& kinds,
                                           std::ostream& err);

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

struct RunArgs {
  std::string spec;
  std::string out;          // run directory; default: the spec's experiment.output
  int ranks = 0;            // 0: cores + 1 (when launching mpirun)
  bool resume = false;      // DIR must hold an earlier run
  std::string progress = "auto";  // auto, tty, plain, none
  double stall_timeout_s = 60;
  std::string shard;        // "I/N": run only shard I of N of the plan (orchestrator/shard.hpp); "" = all
  std::vector<std::string> argv;  // the whole command line (provenance)
};

// `shammie run`: outside an MPI job, relaunches itself under mpirun; inside
// one, rank 0 is the controller and the other ranks are workers.
int RunCommand(const RunArgs& args, const workers::KindRegistry& kinds, std::ostream& out, std::ostream& err);

// `shammie status DIR`: what finished, what failed (with the error), what is
// left; the Slurm jobs and their states when the run was submitted; for a job
// array, every shard.
int StatusCommand(const std::string& dir, bool json, std::ostream& out, std::ostream& err);

struct SubmitArgs {
  std::string spec;
  std::string out;  // run directory; default: the spec's experiment.output
  // Unset: from the spec's [slurm] table, else the defaults (docs/slurm.md).
  std::optional<int64_t> nodes, ntasks_per_node, gpus_per_node, cpus_per_task, max_requeues, array, grace_s;
  std::optional<std::string> time, partition, account, qos, job_name, mem_per_cpu;
  bool dry_run = false;
  std::vector<std::string> argv;  // the whole command line (provenance)
};

// `shammie submit`: writes DIR/slurm/job.sbatch and submits it with sbatch.
int SubmitCommand(const SubmitArgs& args, const workers::KindRegistry& kinds, std::ostream& out, std::ostream& err);

// `shammie merge DIR`: joins DIR/shards/*/results.h5 of a job array into DIR/results.h5.
int MergeCommand(const std::string& dir, std::ostream& out, std::ostream& err);

// Files under RUN_DIR/slurm/ that submit writes and status reads.
std::string SlurmDir(const std::string& run_dir);
std::string SlurmJobsFile(const std::string& run_dir);  // one line per submission: "<job id> <array tasks> <time>"

}  // namespace shammie::orchestrator
