// Slurm (DESIGN.md §3, the Slurm launcher): the sbatch script `shammie
// submit` writes, and the few Slurm commands it and `shammie status` run
// (sbatch, squeue, sacct). Everything here is called on the submitting
// machine by the CLI, never inside the MPI job; each command is exec'd with an
// argv (no shell), and every value that goes into the script is quoted here.
//
// The script's protocol for preemption and time limits (docs/slurm.md):
//  1. `#SBATCH --signal=B:USR1@GRACE` makes Slurm send SIGUSR1 to the batch
//     shell GRACE seconds before the time limit (or on a preemption notice).
//  2. The shell traps it and forwards it to srun (`kill -USR1 $srun_pid`;
//     `wait` returns early for a trapped signal, so the shell waits again);
//     srun forwards it to every task. Workers ignore it; the controller
//     stops dispatching, running jobs see cancelled() and checkpoint, results
//     are flushed, and the controller writes $SHAMMIE_STOP_FILE
//     (RUN_DIR/slurm/stopped.JOBID: "N of M jobs left") when work remains.
//  3. After srun returns, the shell requeues the job (`scontrol requeue
//     $SLURM_JOB_ID`) when STOP_FILE exists and SLURM_RESTART_COUNT is
//     below max_requeues. The next start runs the same line with --resume:
//     done jobs come from the journal, stopped training from its checkpoint.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.hpp"

namespace shammie::cluster {

// What the batch job asks of Slurm. Unset optionals are left to the site's
// defaults (no directive is written).
struct SlurmResources {
  int64_t nodes = 1;
  int64_t ntasks_per_node = 2;
  int64_t gpus_per_node = 0;
  int64_t cpus_per_task = 1;             // also OMP_NUM_THREADS of every rank
  std::optional<std::string> time;       // Slurm time: [D-]HH:MM:SS, MM:SS or minutes
  std::optional<std::string> partition;
  std::optional<std::string> account;
  std::optional<std::string> qos;
  std::string job_name = "shammie";
  int64_t grace_s = 120;                 // SIGUSR1 this long before the time limit
  int64_t max_requeues = 3;              // requeues after a stop with work left
  std::optional<std::string> memory_per_cpu;  // Slurm size, e.g. 2G
};

struct BatchScript {
  SlurmResources resources;
  std::string run_dir;                   // absolute
  std::string workdir;                   // absolute: where sbatch was run; the script cd's there
  std::string output_pattern;            // --output (absolute; may hold %j, %A, %a)
  // Array mode: one array task per shard, each its own MPI job; 0 = no array.
  int64_t array_tasks = 0;
  // The program each rank runs, argv[0] first. In array mode the literal
  // strings kShardIndexWord / kShardDirWord (anywhere in a word) become the
  // array task's index and its shard directory (quoted shell expansions).
  std::vector<std::string> program;
  std::vector<std::pair<std::string, std::string>> env;  // exported before srun
  std::string provenance;                // comment lines at the top (the submit command)
};

inline constexpr const char* kShardIndexWord = "@SHARD_INDEX@";
inline constexpr const char* kShardDirWord = "@SHARD_DIR@";

// Quotes a word for bash: unchanged when it has only safe characters,
// otherwise in single quotes ('\'' for a quote). Any byte string is safe.
std::string ShellQuote(const std::string& word);

// Quotes a value for an `#SBATCH --key=VALUE` line (sbatch's own parser:
// double quotes, backslash escapes). Values with control characters cannot
// be written: check them with SbatchValueProblem first.
std::string SbatchQuote(const std::string& value);
// Why `value` cannot go into an #SBATCH line (control characters), or nullopt.
std::optional<std::string> SbatchValueProblem(const std::string& value);

// Why `text` is not a Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH,
// D-HH:MM, D-HH:MM:SS), or nullopt. `seconds` gets its length.
std::optional<std::string> SlurmTimeProblem(const std::string& text, int64_t* seconds);

// Checks the resources (ranges, at least 2 ranks in all, grace shorter than
// the time limit); InvalidArgument naming the key otherwise.
common::Status CheckResources(const SlurmResources& r);

// The script's text: directives, captured environment, the srun line and the
// signal/requeue protocol. Deterministic.
std::string RenderBatchScript(const BatchScript& script);

// Output of a command run without a shell.
struct CommandOutput {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs argv[0] (looked up on PATH) with argv, stdin from /dev/null; waits at
// most `deadline`, then kills it (SIGKILL) and answers Unavailable.
common::Result<CommandOutput> RunProgram(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds deadline = std::chrono::seconds(60));

// `sbatch --parsable SCRIPT` from `workdir`; returns the job id (for an
// array, the array's job id). Unavailable when sbatch is missing or fails.
common::Result<std::string> SubmitBatchScript(const std::string& script_path);

// A Slurm job's (or array task's) id and state, as squeue or sacct tell it.
struct SlurmJobState {
  std::string id;        // "123", "123_4"
  std::string state;     // PENDING, RUNNING, COMPLETED, REQUEUED, ...
  std::string reason;    // squeue's reason or node list; sacct's exit code
  std::string elapsed;
  int64_t restarts = -1;  // from scontrol, when known
};
// States of the given jobs: squeue for queued/running ones, then `scontrol
// show job` (finished within MinJobAge), then `sacct` (-c with a jobcomp
// log and no database). Jobs no source knows come back with state "UNKNOWN".
std::vector<SlurmJobState> QueryJobStates(const std::vector<std::string>& job_ids);

}  // namespace shammie::cluster
