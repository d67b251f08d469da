// A continual-learning study ([continual] in the experiment file) as a job
// DAG (PAPERS.md §9; docs/experiments/continual.md). Per sequence, replicate
// and task, each learner fine-tunes the task from a checkpoint:
//   independent  base -> ft
//   sequential   previous task's ft -> ft
//   selective    pool = base + its own past fts; one probe (a short lm.train
//                from each candidate, no model saved) per candidate, fanned
//                out in parallel -> continual.select (best validation score)
//                -> ft from the chosen candidate
//   oracle       pool = base + its own past choices; a full ft from every
//                candidate -> continual.select (best test accuracy) whose
//                model is the oracle's checkpoint for the task
// Jobs are content-addressed (plan.hpp), so the same fine-tune asked for by
// two learners (every learner's first task, the oracle's base candidate and
// independent) is one job, and a rerun reuses every finished one.
//
// Seeds: a task's fine-tunes and probes share one seed per (task config,
// occurrence of that config in the sequence, replicate), the same for every
// learner: comparisons between learners are paired, and the same task in two
// sequences is one job.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "orchestrator/plan.hpp"
#include "common/status.hpp"
#include "orchestrator/spec.hpp"

namespace shammie::orchestrator {

// One learner on one task of one replicate of one sequence.
struct ContinualCell {
  std::string sequence, regime, learner;
  int64_t replicate = 0;
  int64_t position = 0;       // 0-based index of the task in the sequence
  std::string role;           // source | target
  std::string task;           // short description, e.g. "grammar/contains/flip"
  nlohmann::json config;      // the task's fine-tune config
  std::string result_job;     // the job whose test_accuracy is the learner's accuracy on the task
                              // (the fine-tune; for the oracle its select job, whose selected_score it is)
  std::string select_job;     // selective and oracle: the continual.select job; "" otherwise
  std::vector<std::string> candidates;           // selective/oracle pool: job ids (base first)
  std::vector<int64_t> candidate_positions;      // -1 for the base, else the task position
  std::vector<std::string> candidate_jobs;       // selective: probe per candidate; oracle: fine-tune per candidate
  int64_t finetune_steps = 0;  // optimizer steps of fine-tunes this learner runs for the task
  int64_t probe_steps = 0;     // optimizer steps of its probes for the task
};

struct ContinualLayout {
  std::string base_job;
  std::vector<ContinualCell> cells;  // by sequence, replicate, position, learner (spec order)
  std::vector<PlannedJob> jobs;      // every job after its inputs, each id once
  int64_t duplicates_merged = 0;
};

// Deterministic: the same spec gives the same jobs, ids and cells (the
// analysis rebuilds the layout from the spec stored in results.h5).
ContinualLayout LayOutContinual(const ExperimentSpec& spec);

// "grammar/contains/flip", "modadd/23+3", ...: how tables name a task.
std::string DescribeTask(const nlohmann::json& config);

}  // namespace shammie::orchestrator

namespace shammie::storage {
class ResultStore;
}

namespace shammie::orchestrator {

// `shammie analyze` of a [continual] study: per task and learner (table
// /analysis/continual-tasks: accuracy, transfer relative to independent,
// the selected source and its relation, compute), per regime and learner on
// the target tasks (/analysis/continual-summary: mean accuracy and transfer
// with bootstrap intervals over seeds, negative-transfer rate, steps), and
// the oracle's source -> target transfer matrix (/analysis/continual-transfer).
// Prints the tables to `out`; with `report_dir`, plots each sequence's
// transfer heatmap and accuracy curves there. Returns a JSON summary.
common::Result<nlohmann::json> AnalyzeContinual(const ExperimentSpec& spec, storage::ResultStore& store, double alpha,
                                                const std::string& report_dir, std::ostream& out);

}  // namespace shammie::orchestrator
