// The job DAG: sweeps expanded, content-addressed ids, dependencies,
// resources and priorities. Deterministic: the same spec always gives the
// same jobs, ids and order.
//
// Job id = the first 32 hex digits of XXH3-128 over the canonical JSON
//   {"v":1,"kind":K,"config":C,"seed":S,"inputs":[sorted ids of upstream jobs]}
// where C is the resolved config (defaults filled, floats normalized), so
// changing a value changes exactly the ids of the jobs that use it and of
// everything downstream of them. Resources, retry policy and stage names are
// not part of the id (see docs/experiment-spec.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.hpp"
#include "orchestrator/spec.hpp"

namespace shammie::orchestrator {

struct PlannedJob {
  std::string id;
  std::string stage;
  std::string kind;
  nlohmann::json config;   // resolved: stage.config with this job's sweep values
  nlohmann::json point;    // the swept keys and their values for this job
  int64_t replicate = 0;   // 0 .. sweep.seeds-1
  int64_t seed = 0;        // derived from experiment.seed, stage name, replicate
  std::vector<std::string> inputs;  // ids of the jobs this one waits for, sorted
  Resources resources;
  RetryPolicy retry;
  int64_t critical_path = 1;  // jobs on the longest chain from here to a sink (priority)

  std::string Label() const;  // "train[learning_rate=0.1 #1]"
};

struct Plan {
  std::string experiment;
  std::string spec_hash;
  std::vector<PlannedJob> jobs;  // every job after all of its inputs
  int64_t duplicates_merged = 0;  // jobs that resolved to an id already planned
  // Stages whose jobs a shard must keep together: adaptive sweeps, whose
  // controller proposes from all of their results (orchestrator/adaptive.hpp).
  std::vector<std::string> unsplit_stages;

  nlohmann::json ToJson() const;
  std::string ToText() const;
};

std::string JobId(const std::string& kind, const nlohmann::json& config, int64_t seed,
                  const std::vector<std::string>& sorted_inputs);

// Expands every stage. Fails (InvalidArgument) only if the plan would exceed
// kMaxJobsPerStage * 10 jobs in total.
common::Result<Plan> BuildPlan(const ExperimentSpec& spec);

}  // namespace shammie::orchestrator
