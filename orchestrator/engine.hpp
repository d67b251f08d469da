// The controller (MPI rank 0): runs a plan's job DAG on the worker ranks.
//
// - Scheduling: a job is ready when all its inputs are done; ready jobs go
//   to workers in critical-path order. A job with resources.ranks = k waits
//   for k idle workers and gets them as a gang (no backfill past it, so gangs
//   never starve). Short jobs are prefetched: a worker may hold several
//   queued tasks when its stage's mean duration is well under the dispatch
//   round trip, and one otherwise.
// - Durability: every state change is a journal record (DIR/journal.bin);
//   records reach the kernel after every batch of messages and the disk in
//   group commits. results.h5 is rebuilt from the journal into a temporary
//   file and renamed over the old one at the end (and on a stop), so it is
//   always a complete, readable file.
// - Memoization and resume: jobs the journal records as done are not run
//   again; failed, cancelled and interrupted ones are.
// - Failures: an attempt's error is retried per the stage's retry policy;
//   a job that fails for good skips its dependants (with the reason). A
//   worker silent for `stall_timeout` while running a job is reported with
//   the job and rank, its attempt fails (deadline_exceeded) and it gets no
//   more work.
// - Stop: when `stop_requested()` turns true, no more dispatching; running
//   jobs are asked to stop (cancelled() in their context); everything is
//   flushed; the report says how to resume.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "cluster/channel.hpp"
#include "common/status.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/spec.hpp"

namespace shammie::orchestrator {

struct EngineOptions {
  std::string run_dir;
  std::string command_line;
  std::chrono::milliseconds stall_timeout{60000};
  std::chrono::milliseconds journal_sync{50};
  int max_prefetch = 64;
  ProgressMode progress = ProgressMode::kNone;
  std::ostream* progress_out = nullptr;  // default std::cerr
  std::chrono::milliseconds plain_progress_every{10000};
  std::function<bool()> stop_requested;  // polled between messages
};

struct EngineReport {
  int64_t total = 0;
  int64_t done = 0;       // including cached
  int64_t cached = 0;     // done before this run (memoized)
  int64_t failed = 0;
  int64_t skipped = 0;
  int64_t not_run = 0;    // left by a stop (or lost workers)
  int64_t attempts = 0;   // attempts started by this run
  bool stopped = false;
  bool workers_lost = false;  // some rank hangs: the MPI job must be aborted, not finalized
  double seconds = 0;          // the whole controller, results.h5 included
  double jobs_seconds = 0;     // from the first dispatch to the last result
  double results_seconds = 0;  // rebuilding results.h5 from the journal
  double controller_cpu_seconds = 0;  // CPU time of the controller while jobs ran
  int64_t metric_points = 0;   // received in this run
  int exit_code = 0;      // DESIGN.md §4: 0 all done or stopped, 1 some jobs failed, 3 environment
};

// Runs on rank 0 of `channel`; every other rank must run workers::RunWorker.
// Tells the workers to shut down before returning. Fails (and writes
// nothing) only when the run directory cannot be used.
common::Result<EngineReport> RunController(cluster::ControlChannel& channel, const ExperimentSpec& spec,
                                           const Plan& plan, const EngineOptions& options);

// Rebuilds DIR/results.h5 from DIR/journal.bin (atomically: temporary file,
// fsync, rename).
common::Status WriteResultsFile(const std::string& run_dir, const ExperimentSpec& spec, const Plan& plan,
                                const std::string& command_line);

}  // namespace shammie::orchestrator
