// The engine's own job kinds (bench.*) and the default experiment's
// toy.quadratic: their config schemas and their code.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <cstdlib>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

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

// Appends "<job id> <attempt>" to the file named by config key `trace`, if
// any: an independent count of executions for tests of memoization and resume.
common::Status Trace(JobContext& ctx) {
  const auto it = ctx.config().find("trace");
  if (it == ctx.config().end() || it->get<std::string>().empty()) return common::Status::Ok();
  const std::string line = ctx.job_id() + " " + std::to_string(ctx.attempt()) + "\n";
  const int fd = ::open(it->get<std::string>().c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return common::Unavailable("cannot open trace file " + it->get<std::string>());
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  return ok ? common::Status::Ok() : common::Unavailable("cannot write trace file " + it->get<std::string>());
}

common::Status RunSleep(JobContext& ctx) {
  SHAMMIE_RETURN_IF_ERROR(SleepCancellable(ctx, ctx.config()["seconds"].get<double>()));
  return Trace(ctx);
}

// Every member fills a vector with (gang rank + 1) * (i % 7 + 1) and
// allreduces it `iterations` times; the sum must be n(n+1)/2 * (i % 7 + 1).
common::Status RunAllreduce(JobContext& ctx) {
  cluster::Collectives& gang = ctx.collectives();
  const auto elements = static_cast<size_t>(ctx.config()["elements"].get<int64_t>());
  const int64_t iterations = ctx.config()["iterations"].get<int64_t>();
  const double n = gang.size();
  std::vector<double> v(elements);
  double seconds = 0;
  for (int64_t it = 0; it < iterations; ++it) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "cancelled between allreduces");
    for (size_t i = 0; i < elements; ++i) v[i] = (gang.rank() + 1) * static_cast<double>(i % 7 + 1);
    const auto start = std::chrono::steady_clock::now();
    SHAMMIE_RETURN_IF_ERROR(gang.AllreduceSum(std::span<double>(v)));
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (size_t i = 0; i < elements; ++i) {
      const double expected = n * (n + 1) / 2 * static_cast<double>(i % 7 + 1);
      if (v[i] != expected) {
        return common::Internal("allreduce gave " + std::to_string(v[i]) + " at element " + std::to_string(i) +
                                ", expected " + std::to_string(expected));
      }
    }
  }
  ctx.ReportMetric("gang_size", 0, n);
  ctx.ReportMetric("checked_sum", 0, elements > 0 ? v[elements > 1 ? 1 : 0] : 0);
  ctx.ReportMetric("allreduce_us", 0, iterations > 0 ? seconds * 1e6 / static_cast<double>(iterations) : 0);
  return common::Status::Ok();
}

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
    k.config.String("trace").Default("").Doc("If set, a file to which every execution appends \"<job id> <attempt>\" (counts executions).");
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
  {
    JobKind k;
    k.name = "bench.allreduce";
    k.doc = "Allreduces a vector across the job's gang (resources.ranks) and checks the sum: exercises gangs.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("elements").Default(1024).Range(1, 1 << 28).Doc("Doubles per allreduce.");
    k.config.Int("iterations").Default(10).Range(1, 1000000).Doc("Allreduces to run (and check).");
    k.run = RunAllreduce;
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
