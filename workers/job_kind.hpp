// Job kinds: a name, a doc line and the schema of its [stage.config] table.
//
// The registry is an object built by main() (no global registration), so a
// test can build one with exactly the kinds it needs. Adding a kind means
// declaring its schema in one Register* function; the spec parser, `shammie
// validate --explain` and the provenance dump all read that declaration.
// The engine (a later layer) attaches the code that runs each kind.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/schema.hpp"
#include "common/status.hpp"
#include "workers/job.hpp"

namespace shammie::workers {

// A problem found by a kind's cross-key check: which key, and what is wrong.
struct ConfigProblem {
  std::string key;
  std::string message;
};

struct JobKind {
  std::string name;    // "family.name", e.g. "toy.quadratic"
  std::string doc;
  common::Schema config;  // keys of [stage.config]
  // Optional: constraints between keys that per-key declarations cannot say
  // (e.g. two lists of equal length). Gets the normalized config with
  // defaults filled in; called by the spec loader for every stage of this kind.
  std::function<std::vector<ConfigProblem>(const nlohmann::json& config)> check;
  // The job's code; empty for kinds whose code this build lacks (validation
  // still works). The engine refuses to run a kind without it.
  JobFunction run;
};

class KindRegistry {
 public:
  // Fails with AlreadyExists on a duplicate name, InvalidArgument on a bad name.
  common::Status Register(JobKind kind);
  const JobKind* Find(std::string_view name) const;
  std::vector<std::string> Names() const;  // sorted

 private:
  std::map<std::string, JobKind, std::less<>> kinds_;
};

// bench.noop, bench.sleep, bench.fail: for measuring and testing the engine.
void RegisterBenchKinds(KindRegistry& registry);
// toy.quadratic: gradient descent on a 1-D quadratic, the default experiment.
void RegisterToyKinds(KindRegistry& registry);
// sim.llm_eval: simulated LLM-evaluation data (workers/sim_llm_eval.hpp).
void RegisterSimKinds(KindRegistry& registry);
// lm.train (workers/lm_kinds.hpp): schemas here, code in the LibTorch plugin.
void RegisterLmKinds(KindRegistry& registry);
// continual.select: workers/continual.hpp.
void RegisterContinualKinds(KindRegistry& registry);
// pref.bandit, pref.rm, pref.align: workers/preference.hpp.
void RegisterPreferenceKinds(KindRegistry& registry);
// rec.batching (workers/recursive_kinds.cpp).
void RegisterRecursiveKinds(KindRegistry& registry);
// Every kind this build has.
void RegisterBuiltinKinds(KindRegistry& registry);

}  // namespace shammie::workers
