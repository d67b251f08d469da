// Continual learning with selective checkpoint initialisation (PAPERS.md §9):
// the job kind that picks a checkpoint from a pool, and how two tasks of the
// synthetic library relate. The study's DAG is built by the orchestrator
// (orchestrator/continual.hpp); training is lm.train.
#pragma once

#include <string>

#include "workers/job_kind.hpp"
#include "workers/tasks.hpp"

namespace shammie::workers {

// How training on `source` is expected to transfer to `target`:
// - "positive": same family and rule (grammar) or modulus (modadd) and the
//   same variant: the source teaches the target's rule;
// - "negative": same inputs, contradicting answers: one is flip/permute of
//   the other (contradicts on every input), a different modadd shift, two
//   different permutations, or one is "ignore" and the other not (the rule
//   on other letters, a permuted rule: contradicts on about half the inputs
//   and teaches features the other task does not use);
// - "neutral":  anything else: another family, rule or input distribution.
// String families (copy, reverse, ...) are positive only with an identical
// spec (rotate: same shift), neutral otherwise.
std::string TaskRelation(const TaskSpec& source, const TaskSpec& target);

// continual.select: reads the "summary" artifacts of its upstream jobs (probe
// fine-tunes from each candidate checkpoint, or full fine-tunes), scores each
// candidate, and records the chosen checkpoint as its own artifact "model":
// the candidate itself (pick = "init": selective initialisation) or the
// fine-tuned model of the best input (pick = "model": the oracle).
// Registered by RegisterContinualKinds() (workers/job_kind.hpp).

}  // namespace shammie::workers
