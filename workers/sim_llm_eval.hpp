// sim.llm_eval: simulated "LLM evaluation" data for the statistics study
// (experiments/configs/llm-eval-ppi.toml). Items fall into domains; a human
// label says whether the model's answer is good (Bernoulli, prevalence per
// domain); an autorater ("judge") votes on every item, agreeing with the
// human with a per-domain accuracy, and gives a confidence score; only a
// small random subset of items has a human label.
//
// Output: one table, `labels`, with columns item (int), domain (string),
// human (float; NaN where unlabeled), judge (int 0/1), judge_score (float in
// (0, 1)). Deterministic for a given config and seed.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

#include "common/status.hpp"
#include "storage/result_store.hpp"

namespace shammie::workers {

common::Result<storage::Table> SimulateLlmEval(const nlohmann::json& config, uint64_t seed);

}  // namespace shammie::workers
