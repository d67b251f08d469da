// The experiment spec as typed, immutable structs (STYLE.md 13): parsed once
// from TOML at the edge (spec_loader.hpp); nothing downstream sees a TOML table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.hpp"

namespace shammie::orchestrator {

// A position in a file the user wrote; 1-based like editors.
struct Location {
  std::string file;
  int64_t line = 0;
  int64_t column = 0;
  std::string ToString() const;  // "file:line:col"
};

// One error in a spec: "file:line:col: dotted.key: message".
struct Diagnostic {
  Location where;
  std::string key;
  std::string message;
  std::string ToString() const;
};

struct Resources {
  int64_t ranks = 1;                    // MPI ranks in the job's gang
  int64_t gpus = 0;                     // GPUs per rank
  std::optional<int64_t> time_limit_s;  // wall-clock limit per attempt
  std::optional<int64_t> memory_bytes;  // per rank
  std::string isolation = "thread";     // "thread" or "process"
};

struct RetryPolicy {
  int64_t attempts = 1;  // total attempts; 1 = no retry
  double backoff_s = 1.0;  // wait before attempt k is backoff_s * 2^(k-2)
  std::vector<common::StatusCode> on;  // codes that allow another attempt
};

// One axis of a random sweep.
struct RandomAxis {
  enum class Distribution { kUniform, kLogUniform, kIntUniform, kChoice };
  std::string key;
  Distribution distribution = Distribution::kUniform;
  double lo = 0, hi = 0;                // uniform, log_uniform, int_uniform (inclusive ints)
  std::vector<nlohmann::json> choices;  // choice (normalized values)
};

// A list of values for one config key.
struct SweepAxis {
  std::string key;
  std::vector<nlohmann::json> values;  // normalized by the key's schema
};

// An adaptive sweep (sweep.strategy = "bo" or "risk-bo"; docs/adaptive-sweeps.md):
// the random axes are the search space and random.samples the initial
// design; the controller proposes the rest from the results.
struct AdaptiveSweep {
  std::string strategy = "grid";        // grid: the fixed expansion; bo; risk-bo
  int64_t budget = 0;                   // evaluations in all, the initial design included
  int64_t batch = 1;                    // proposals per round (in flight together)
  std::vector<std::string> objectives;  // metrics (final values), minimized
  std::vector<std::string> maximize;    // those of `objectives` to maximize instead
  std::vector<double> reference;        // bo: hypervolume reference point (empty: from the data)
  std::string constraint;               // risk-bo: the constrained objective (a risk in [0, 1])
  double alpha = 0.1, delta = 0.1;      // risk-bo: risk limit, error level
  int64_t validation_size = 0;          // risk-bo: examples behind the constraint's metric
  int64_t calibration_size = 0;         // risk-bo: examples the final test will use
  bool binary = false;                  // risk-bo: 0/1 losses (exact binomial p-values)
  bool adaptive() const { return strategy != "grid"; }
};

// How a stage becomes many jobs: jobs = over × grid × zip × random × seeds.
struct Sweep {
  std::vector<SweepAxis> grid;          // cartesian product
  std::vector<SweepAxis> zip;           // paired lists, equal lengths
  int64_t random_samples = 0;           // 0: no random axes
  std::vector<RandomAxis> random;
  int64_t seeds = 1;                    // replicates with different seeds
  std::vector<std::string> over;        // upstream stages: one job per upstream job
  AdaptiveSweep adaptive;
  int64_t PointsPerUpstream() const;    // grid × zip × random × seeds
};

struct Stage {
  std::string name;
  std::string kind;
  std::string description;
  std::vector<std::string> depends_on;
  nlohmann::json config;  // the kind's keys, normalized, defaults filled in
  Resources resources;
  RetryPolicy retry;
  Sweep sweep;
  Location location;  // where the stage's [[stage]] table starts
};

// One [[analysis]] table: statistics over per-example tables of a stage's runs.
struct AnalysisSpec {
  std::string name;
  std::vector<std::string> methods;  // classical, ppi, ppi++, stratppi, bayes-ppi; or ltt, clm, pareto-testing or curves alone
  std::string stage;                 // whose runs to read
  std::string table;                 // tables/<table> of each run (every family but curves)
  std::string label;                 // column of human labels; NaN = unlabeled
  std::string prediction;            // column of autorater predictions
  std::string strata;                // optional column of strata
  std::string config;                // ltt: column naming the configuration
  std::string loss;                  // ltt: column of losses in [0, 1]
  double delta = 0.1;                // ltt, clm
  std::string bound = "hoeffding-bentkus";
  std::string procedure = "fixed-sequence";
  double alpha = 0.1;
  double lambda = 1.0;
  bool clt_free = false;
  int64_t bins = 10;
  std::optional<double> target_width;
  int64_t seed = 0;
  std::vector<double> epsilons;      // clm
  int64_t trials = 100;              // clm
  double calibration = 0.5;          // clm
  int64_t grid_points = 10;          // clm
  std::string components = "none";  // clm
  std::string separator = "=";       // clm
  std::string metric;                // curves: the metric whose curve is averaged
  std::vector<std::string> by;       // curves: config keys that form the groups
  std::string x;                     // curves: a config key or metric as the x axis ("" = the step)
  std::string x_metric;              // curves: a metric as the x axis, paired with `metric` step by step
  nlohmann::json parameters;         // the table as resolved (for provenance)
  Location location;
};

// [slurm]: what `shammie submit` asks Slurm for (docs/slurm.md). Keys left
// out come from the command line or the defaults; the command line wins.
struct SlurmSpec {
  bool present = false;
  Location location;  // where the [slurm] table starts
  std::optional<int64_t> nodes, ntasks_per_node, gpus_per_node, cpus_per_task, max_requeues, array;
  std::optional<int64_t> time_s, grace_s, mem_per_cpu_bytes;
  std::optional<std::string> partition, account, qos, job_name;
};

// One task of a continual-learning sequence: a complete lm.train config
// (the [continual.finetune] keys with the task's own keys over them).
struct ContinualTask {
  nlohmann::json config;
  std::string role;  // "source" (many examples) or "target" (few)
  Location location;
};

struct ContinualSequence {
  std::string name;
  std::string regime;  // positive, negative, neutral, mixed
  std::vector<ContinualTask> tasks;
  Location location;
};

// The [continual] table: a continual-learning study (orchestrator/continual.hpp
// expands it into jobs; docs/experiments/continual.md).
struct ContinualSpec {
  std::vector<std::string> learners;  // independent, sequential, selective, oracle
  int64_t seeds = 1;
  std::string selection = "probe";    // probe: val accuracy after probe_steps; zero-shot: val loss at step 0
  int64_t probe_steps = 20;
  std::string rule = "best";          // the selective learner's choice: best | first | last
  std::string pool = "all";           // its pool: all (base + past tasks) | base
  nlohmann::json base;                // lm.train config of the base model (theta_0)
  std::vector<ContinualSequence> sequences;
  Resources resources;
  Location location;
};

struct ExperimentSpec {
  std::string name;
  std::string description;
  int64_t seed = 0;
  std::string output;  // run directory; default "runs/<name>"
  std::vector<Stage> stages;  // dependencies before dependents
  std::vector<AnalysisSpec> analyses;
  SlurmSpec slurm;
  std::optional<ContinualSpec> continual;
  std::string path;            // the file given on the command line
  std::vector<std::string> files;  // it and every file it extends
  std::string canonical_text;  // canonical TOML of the merged spec
  std::string spec_hash;       // Hash128Hex(canonical_text)

  const Stage* FindStage(const std::string& name) const;
};

}  // namespace shammie::orchestrator
