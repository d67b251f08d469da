#include "workers/job_kind.hpp"

#include "common/text.hpp"

namespace shammie::workers {

common::Status KindRegistry::Register(JobKind kind) {
  // Kind names are "family.name" with safe characters.
  if (!common::IsSafeName(kind.name) || kind.name.find('.') == std::string::npos) {
    return common::InvalidArgument("job kind name \"" + kind.name + "\" must look like `family.name`");
  }
  if (kinds_.count(kind.name)) return common::AlreadyExists("job kind " + kind.name + " is registered twice");
  std::string name = kind.name;
  kinds_.emplace(std::move(name), std::move(kind));
  return common::Status::Ok();
}

const JobKind* KindRegistry::Find(std::string_view name) const {
  auto it = kinds_.find(name);
  return it == kinds_.end() ? nullptr : &it->second;
}

std::vector<std::string> KindRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, kind] : kinds_) names.push_back(name);
  return names;
}

namespace {
void MustRegister(KindRegistry& registry, JobKind kind) {
  common::Status s = registry.Register(std::move(kind));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}
}  // namespace

void RegisterBenchKinds(KindRegistry& registry) {
  {
    JobKind k{"bench.noop", "Does nothing and succeeds: measures dispatch overhead.", {}, {}};
    k.config = common::Schema("bench.noop", k.doc);
    MustRegister(registry, std::move(k));
  }
  {
    JobKind k{"bench.sleep", "Sleeps, checking for cancellation: measures scheduling of long jobs.", {}, {}};
    k.config = common::Schema("bench.sleep", k.doc);
    k.config.Float("seconds").Default(1.0).Range(0, 86400).Doc("How long to sleep, in seconds.");
    MustRegister(registry, std::move(k));
  }
  {
    JobKind k{"bench.fail", "Fails on purpose: exercises retries, error reporting and resume.", {}, {}};
    k.config = common::Schema("bench.fail", k.doc);
    k.config.Float("probability").Default(1.0).Range(0, 1)
        .Doc("Chance that an attempt fails, drawn from the job's seed and attempt number.");
    k.config.Enum("mode", {"error", "invalid", "crash", "hang"}).Default("error")
        .Doc("How it fails: `error` returns a retryable error (aborted), `invalid` a non-retryable one "
             "(invalid_argument), `crash` kills the worker process, `hang` never returns (tests deadlines).");
    MustRegister(registry, std::move(k));
  }
}

void RegisterToyKinds(KindRegistry& registry) {
  JobKind k{"toy.quadratic",
            "Gradient descent on f(x) = curvature/2 * (x - target)^2 with optional gradient noise; "
            "reports loss per step. The default experiment's job.",
            {},
            {}};
  k.config = common::Schema("toy.quadratic", k.doc);
  k.config.Float("learning_rate").Default(0.1).Min(0, /*exclusive=*/true).Max(10).Doc("Step size.");
  k.config.Int("steps").Default(100).Range(1, 10000000).Doc("Number of gradient steps.");
  k.config.Float("x0").Default(5.0).Doc("Starting point.");
  k.config.Float("target").Default(0.0).Doc("Minimizer of f.");
  k.config.Float("curvature").Default(1.0).Min(0, /*exclusive=*/true).Doc("Second derivative of f.");
  k.config.Float("noise").Default(0.0).Min(0).Doc("Standard deviation of Gaussian noise added to each gradient.");
  k.config.Int("eval_every").Default(10).Range(1, 10000000).Doc("Report the loss every this many steps.");
  MustRegister(registry, std::move(k));
}

void RegisterBuiltinKinds(KindRegistry& registry) {
  RegisterBenchKinds(registry);
  RegisterToyKinds(registry);
  RegisterSimKinds(registry);
}

}  // namespace shammie::workers
