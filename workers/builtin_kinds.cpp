// The engine's own job kinds (bench.*) and the default experiment's
// toy.quadratic: their config schemas and their code.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <cstdlib>
#include <thread>

#include "common/random.hpp"
#include "workers/job_kind.hpp"

namespace shammie::workers {

namespace {

void MustRegister(KindRegistry& registry, JobKind kind) {
  common::Status s = registry.Register(std::move(kind));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

// Sleeps `seconds`, waking every 10 ms to honour cancellation.
common::Status SleepCancellable(JobContext& ctx, double seconds) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point end =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < end) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "cancelled while sleeping");
    const Clock::duration left = end - Clock::now();
    std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(10)));
  }
  return common::Status::Ok();
}

common::Status RunSleep(JobContext& ctx) { return SleepCancellable(ctx, ctx.config()["seconds"].get<double>()); }

// Fails with probability p, drawn from (seed, attempt): the same attempt of
// the same job always does the same thing, and a retry draws anew.
common::Status RunFail(JobContext& ctx) {
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "bench.fail", static_cast<uint64_t>(ctx.attempt())));
  if (!(rng.NextDouble() < ctx.config()["probability"].get<double>())) return common::Status::Ok();
  const std::string mode = ctx.config()["mode"].get<std::string>();
  const std::string what = "bench.fail: injected failure (attempt " + std::to_string(ctx.attempt()) + ")";
  if (mode == "invalid") return common::InvalidArgument(what + " that must not be retried");
  if (mode == "crash") {
    std::fprintf(stderr, "%s: crashing the process on purpose\n", what.c_str());
    std::abort();
  }
  if (mode == "hang") {
    while (!ctx.cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return common::Status(common::StatusCode::kCancelled, what + ": hung until cancelled");
  }
  return common::Status(common::StatusCode::kAborted, what);
}

// Gradient descent on f(x) = c/2 (x - t)^2 with Gaussian gradient noise.
// Reports `loss` every eval_every steps and at the end, and `x` at the end.
// A run that diverges (learning_rate * curvature > 2 without noise) is a
// result, not an error: it reports loss = inf and diverged = 1.
common::Status RunQuadratic(JobContext& ctx) {
  const auto& c = ctx.config();
  const double lr = c["learning_rate"].get<double>(), curvature = c["curvature"].get<double>();
  const double target = c["target"].get<double>(), noise = c["noise"].get<double>();
  const int64_t steps = c["steps"].get<int64_t>(), every = c["eval_every"].get<int64_t>();
  common::SplitMix64 rng(ctx.seed());
  double x = c["x0"].get<double>();
  auto loss = [&] { return 0.5 * curvature * (x - target) * (x - target); };
  ctx.ReportMetric("loss", 0, loss());
  for (int64_t step = 1; step <= steps; ++step) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "cancelled at step " + std::to_string(step));
    double grad = curvature * (x - target);
    if (noise > 0) grad += noise * rng.NextNormal();
    x -= lr * grad;
    if (!std::isfinite(loss())) {
      ctx.ReportMetric("loss", step, std::numeric_limits<double>::infinity());
      ctx.ReportMetric("diverged", step, 1);
      return common::Status::Ok();
    }
    if (step % every == 0 || step == steps) ctx.ReportMetric("loss", step, loss());
  }
  ctx.ReportMetric("x", steps, x);
  ctx.ReportMetric("diverged", steps, 0);
  return common::Status::Ok();
}

}  // namespace

void RegisterBenchKinds(KindRegistry& registry) {
  {
    JobKind k;
    k.name = "bench.noop";
    k.doc = "Does nothing and succeeds: measures dispatch overhead.";
    k.config = common::Schema(k.name, k.doc);
    k.run = [](JobContext&) { return common::Status::Ok(); };
    MustRegister(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "bench.sleep";
    k.doc = "Sleeps, checking for cancellation: measures scheduling of long jobs.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Float("seconds").Default(1.0).Range(0, 86400).Doc("How long to sleep, in seconds.");
    k.run = RunSleep;
    MustRegister(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "bench.fail";
    k.doc = "Fails on purpose: exercises retries, error reporting and resume.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Float("probability").Default(1.0).Range(0, 1)
        .Doc("Chance that an attempt fails, drawn from the job's seed and attempt number.");
    k.config.Enum("mode", {"error", "invalid", "crash", "hang"}).Default("error")
        .Doc("How it fails: `error` returns a retryable error (aborted), `invalid` a non-retryable one "
             "(invalid_argument), `crash` kills the worker process, `hang` never returns (tests deadlines).");
    k.run = RunFail;
    MustRegister(registry, std::move(k));
  }
}

void RegisterToyKinds(KindRegistry& registry) {
  JobKind k;
  k.name = "toy.quadratic";
  k.doc = "Gradient descent on f(x) = curvature/2 * (x - target)^2 with optional gradient noise; reports loss per "
          "step. The default experiment's job.";
  k.config = common::Schema(k.name, k.doc);
  k.config.Float("learning_rate").Default(0.1).Min(0, /*exclusive=*/true).Max(10).Doc("Step size.");
  k.config.Int("steps").Default(100).Range(1, 10000000).Doc("Number of gradient steps.");
  k.config.Float("x0").Default(5.0).Doc("Starting point.");
  k.config.Float("target").Default(0.0).Doc("Minimizer of f.");
  k.config.Float("curvature").Default(1.0).Min(0, /*exclusive=*/true).Doc("Second derivative of f.");
  k.config.Float("noise").Default(0.0).Min(0).Doc("Standard deviation of Gaussian noise added to each gradient.");
  k.config.Int("eval_every").Default(10).Range(1, 10000000).Doc("Report the loss every this many steps.");
  k.run = RunQuadratic;
  MustRegister(registry, std::move(k));
}

}  // namespace shammie::workers
