// Continual learning with selective checkpoint initialisation (PAPERS.md §9):
// the job kind that picks a checkpoint from a pool, and how two tasks of the
// synthetic library relate. The study's DAG is built by the orchestrator
// (orchestrator/continual.hpp); training is lm.train.
#pragma once

#include <string>

#include "workers/job_kind.hpp"
#include "workers/tasks.hpp"

namespace shammie::workers {

// How training on `source` relates to `target`, measured on 512 of the
// target's test prompts:
// - "positive": the source gives the target's answer on every prompt (the
//   same rule; also flip vs a binary permute, which are one task);
// - "negative": the same prompts, a different answer on some: flip/permute
//   (every prompt), "ignore", the rule on other letters (about half), a
//   different modadd shift;
// - "neutral":  the source cannot answer the target's prompts (another
//   family, rule or input format: length, alphabet, modulus).
std::string TaskRelation(const TaskSpec& source, const TaskSpec& target);

// continual.select: reads the "summary" artifacts of its upstream jobs (probe
// fine-tunes from each candidate checkpoint, or full fine-tunes), scores each
// candidate, and records the chosen checkpoint as its own artifact "model":
// the candidate itself (pick = "init": selective initialisation) or the
// fine-tuned model of the best input (pick = "model": the oracle).
// Registered by RegisterContinualKinds() (workers/job_kind.hpp).

}  // namespace shammie::workers
