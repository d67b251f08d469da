// Splitting a plan into independent shards for a Slurm job array (`shammie
// submit --array N`, docs/slurm.md). Jobs connected by dependencies (in
// either direction) always land in the same shard, so every shard is a
// complete DAG that one `shammie run --shard I/N` can run on its own; whole
// components are dealt to shards largest first, each to the shard with the
// fewest jobs so far. Deterministic: the same plan and N always give the
// same shards.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.hpp"
#include "orchestrator/plan.hpp"

namespace shammie::orchestrator {

// Number of weakly connected components of the plan's DAG: the most shards
// that can hold work.
int64_t IndependentParts(const Plan& plan);

// The jobs of shard `index` of `count` (0 <= index < count), in plan order.
// A shard may be empty when count > IndependentParts(plan).
Plan ShardOf(const Plan& plan, int64_t index, int64_t count);

struct ShardSpec {
  int64_t index = 0;
  int64_t count = 1;
};
// Parses "I/N" (0 <= I < N); InvalidArgument otherwise.
common::Result<ShardSpec> ParseShard(const std::string& text);

}  // namespace shammie::orchestrator
