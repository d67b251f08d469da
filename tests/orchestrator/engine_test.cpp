// The controller and workers as threads over an in-process channel: the
// scheduling logic, failures, retries, skips, gangs, stops, stalls and
// memoization, with results read back from results.h5 and executions counted
// independently (bench.sleep's trace file). The same engine runs under real
// mpirun in tests/engine/mpi_engine_test.sh.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "cluster/inproc_channel.hpp"
#include "orchestrator/engine.hpp"
#include "orchestrator/run_journal.hpp"
#include "orchestrator/spec_loader.hpp"
#include "storage/checkpoint_store.hpp"
#include "storage/result_store.hpp"
#include "tests/test_util.hpp"
#include "workers/local_context.hpp"
#include "workers/protocol.hpp"
#include "workers/worker.hpp"

namespace shammie::orchestrator {
namespace {

using testing::ScratchDir;

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// "jobid attempt" lines -> executions per job id.
std::map<std::string, int> Executions(const std::string& trace) {
  std::map<std::string, int> n;
  for (const auto& l : Lines(trace)) ++n[l.substr(0, l.find(' '))];
  return n;
}

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : dir_("engine") {
    workers::RegisterBuiltinKinds(kinds_);
    workers::JobKind thrower;
    thrower.name = "test.throw";
    thrower.doc = "Throws from job code.";
    thrower.config = common::Schema(thrower.name, thrower.doc);
    thrower.run = [](workers::JobContext& ctx) -> common::Status {
      ctx.ReportMetric("before", 0, 1.0);
      throw std::runtime_error("out of cheese");
    };
    EXPECT_TRUE(kinds_.Register(std::move(thrower)).ok());

    // Writes a checkpoint-like file, records it, and appends to `trace` what
    // it was handed: "<id> <attempt> prev=<content|-> inputs=<content>,..."
    workers::JobKind art;
    art.name = "test.artifact";
    art.doc = "Records an artifact; optionally fails its first attempt after recording.";
    art.config = common::Schema(art.name, art.doc);
    art.config.Bool("fail_first").Default(false).Doc("Fail attempt 1 (aborted) after recording.");
    art.config.String("trace").Default("").Doc("Trace file.");
    art.run = [](workers::JobContext& ctx) -> common::Status {
      auto content = [](const std::string& path) {
        auto b = storage::ReadVerified(path);
        return b.ok() ? *b : "<" + b.status().ToString() + ">";
      };
      std::string line = ctx.job_id() + " " + std::to_string(ctx.attempt()) + " prev=";
      const workers::Artifact* prev = ctx.PreviousArtifact("model");
      line += prev ? content(prev->path) : "-";
      line += " inputs=";
      for (const auto& a : ctx.inputs()) line += a.name + ":" + content(a.path) + ",";
      SHAMMIE_ASSIGN_OR_RETURN(std::string path,
                               storage::WriteContentAddressed(ctx.artifact_dir(),
                                                              ctx.job_id() + "@" + std::to_string(ctx.attempt()),
                                                              "ckpt"));
      SHAMMIE_RETURN_IF_ERROR(ctx.RecordArtifact("model", path));
      std::ofstream(ctx.config()["trace"].get<std::string>(), std::ios::app) << line << "\n";
      if (ctx.config()["fail_first"].get<bool>() && ctx.attempt() == 1) return common::Status(common::StatusCode::kAborted, "first attempt fails");
      return common::Status::Ok();
    };
    EXPECT_TRUE(kinds_.Register(std::move(art)).ok());
  }

  ExperimentSpec Spec(const std::string& body) {
    const std::string text = "[experiment]\nname = \"t\"\nseed = 7\n" + body;
    LoadResult r = LoadExperimentFromString(text, "test.toml", kinds_);
    for (const auto& d : r.errors) ADD_FAILURE() << d.ToString();
    return r.ok() ? *r.spec : ExperimentSpec{};
  }

  struct Outcome {
    common::Status status;
    EngineReport report;
    Plan plan;
  };

  Outcome Run(const ExperimentSpec& spec, int workers, EngineOptions opt = {},
              const std::function<void(cluster::InProcNetwork&)>& setup = {},
              workers::WorkerOptions wopt = {}, const std::vector<std::string>& hosts = {}) {
    Outcome o;
    auto plan = BuildPlan(spec);
    EXPECT_TRUE(plan.ok());
    o.plan = *plan;
    auto net = std::make_shared<cluster::InProcNetwork>(workers + 1);
    if (setup) setup(*net);
    std::vector<std::thread> threads;
    for (int r = 1; r <= workers; ++r) {
      workers::WorkerOptions own = wopt;
      if (!hosts.empty()) own.host = hosts[static_cast<size_t>(r - 1)];
      threads.emplace_back([net, r, this, own] {
        auto ch = net->Channel(r);
        common::Status s = workers::RunWorker(*ch, kinds_, own);
        EXPECT_TRUE(s.ok()) << s.ToString();
      });
    }
    if (opt.run_dir.empty()) opt.run_dir = dir_.File("run");
    auto ch = net->Channel(0);
    auto report = RunController(*ch, spec, o.plan, opt);
    // Ranks the test killed never heard the shutdown: bring them back for it.
    for (int r = 1; r <= workers; ++r) {
      if (net->dead(r)) {
        net->Revive(r);
        (void)ch->Send(r, workers::kTagControl, workers::EncodeShutdown());
      }
    }
    for (auto& t : threads) t.join();
    o.status = report.ok() ? common::Status::Ok() : report.status();
    if (report.ok()) o.report = *report;
    return o;
  }

  std::unique_ptr<storage::ResultStore> Results(const std::string& run = "run") {
    auto store = storage::ResultStore::Open(dir_.File(run) + "/results.h5", storage::ResultStore::Mode::kReadOnly);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }

  std::map<std::string, storage::JobRecord> JobsById(storage::ResultStore& store) {
    std::map<std::string, storage::JobRecord> m;
    auto jobs = store.ReadJobs();
    EXPECT_TRUE(jobs.ok());
    for (auto& j : *jobs) m[j.id] = j;
    return m;
  }

  workers::KindRegistry kinds_;
  ScratchDir dir_;
};

TEST_F(EngineTest, MixedDagStoresEveryResultAsTheJobComputedIt) {
  const std::string trace = dir_.File("trace");
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "train"
kind = "toy.quadratic"
config = { steps = 50, noise = 0.3, eval_every = 5 }
sweep = { grid = { learning_rate = [0.05, 0.2] }, seeds = 3 }

[[stage]]
name = "eval"
kind = "bench.sleep"
depends_on = ["train"]
config = { seconds = 0.001, trace = ")" + trace + R"(" }
sweep = { over = ["train"] }

[[stage]]
name = "reduce"
kind = "bench.allreduce"
depends_on = ["eval"]
resources = { ranks = 2 }

[[stage]]
name = "many"
kind = "bench.noop"
sweep = { seeds = 40 }
)");
  Outcome o = Run(spec, 3);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.total, 6 + 6 + 1 + 40);
  EXPECT_EQ(o.report.done, o.report.total);
  EXPECT_EQ(o.report.exit_code, 0);
  EXPECT_EQ(o.report.attempts, o.report.total);

  auto store = Results();
  ASSERT_TRUE(store);
  auto jobs = JobsById(*store);
  ASSERT_EQ(jobs.size(), o.plan.jobs.size());
  const workers::JobKind* quadratic = kinds_.Find("toy.quadratic");
  for (const auto& pj : o.plan.jobs) {
    EXPECT_EQ(jobs[pj.id].status, storage::JobStatus::kDone) << pj.Label();
    EXPECT_EQ(jobs[pj.id].attempts, 1);
    if (pj.kind == "toy.quadratic") {
      // Oracle: the same job run in-process gives the same series, bit for bit.
      workers::LocalJobContext local(pj.id, pj.config, static_cast<uint64_t>(pj.seed));
      ASSERT_TRUE(quadratic->run(local).ok());
      for (const auto& [name, points] : local.metrics()) {
        auto stored = store->ReadMetric(pj.id, name);
        ASSERT_TRUE(stored.ok()) << name;
        EXPECT_EQ(*stored, points) << pj.Label() << " " << name;
      }
    }
    if (pj.kind == "bench.allreduce") {
      auto sum = store->ReadMetric(pj.id, "checked_sum");
      ASSERT_TRUE(sum.ok());
      EXPECT_EQ(sum->front().value, 3.0 * 2);  // n(n+1)/2 * 2 for n = 2 ranks
      EXPECT_EQ(jobs[pj.id].ranks.find(','), 1u) << jobs[pj.id].ranks;  // two ranks
    }
  }
  // Every eval job ran once, after its own train job.
  EXPECT_EQ(Executions(trace).size(), 6u);
  for (const auto& [id, n] : Executions(trace)) EXPECT_EQ(n, 1) << id;
}

TEST_F(EngineTest, RetriesExactlyThePolicyAndSkipsDependants) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "flaky"
kind = "bench.fail"
config = { probability = 1.0, mode = "error" }
retry = { attempts = 3, backoff = 0.01 }

[[stage]]
name = "after"
kind = "bench.noop"
depends_on = ["flaky"]
sweep = { seeds = 4 }

[[stage]]
name = "after_after"
kind = "bench.noop"
depends_on = ["after"]

[[stage]]
name = "bad"
kind = "bench.fail"
config = { probability = 1.0, mode = "invalid" }
retry = { attempts = 3, backoff = 0.01 }

[[stage]]
name = "fine"
kind = "bench.noop"
sweep = { seeds = 5 }
)");
  Outcome o = Run(spec, 2);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.failed, 2);
  EXPECT_EQ(o.report.skipped, 5);
  EXPECT_EQ(o.report.done, 5);
  EXPECT_EQ(o.report.exit_code, 1);
  auto store = Results();
  ASSERT_TRUE(store);
  auto jobs = JobsById(*store);
  std::string flaky_id;
  for (const auto& pj : o.plan.jobs) {
    const auto& row = jobs[pj.id];
    if (pj.stage == "flaky") {
      flaky_id = pj.id;
      EXPECT_EQ(row.status, storage::JobStatus::kFailed);
      EXPECT_EQ(row.attempts, 3);  // retryable (aborted): all three attempts
      EXPECT_NE(row.error.find("aborted: bench.fail: injected failure (attempt 3)"), std::string::npos) << row.error;
    } else if (pj.stage == "bad") {
      EXPECT_EQ(row.status, storage::JobStatus::kFailed);
      EXPECT_EQ(row.attempts, 1);  // invalid_argument must not be retried
      EXPECT_NE(row.error.find("invalid_argument"), std::string::npos) << row.error;
    } else if (pj.stage == "fine") {
      EXPECT_EQ(row.status, storage::JobStatus::kDone);
    } else {
      EXPECT_EQ(row.status, storage::JobStatus::kSkipped) << pj.Label();
      EXPECT_EQ(row.attempts, 0);
      EXPECT_NE(row.error.find(flaky_id), std::string::npos) << row.error;
    }
  }
  // status agrees with results.h5.
  auto st = ReplayJournal(JournalPath(dir_.File("run")));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->jobs[flaky_id].failures, 3u);
  EXPECT_TRUE(st->jobs[flaky_id].final_failure);
}

TEST_F(EngineTest, AnExceptionInJobCodeIsAFailedAttemptWithItsMessage) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "boom"
kind = "test.throw"
retry = { attempts = 3, on = ["internal"], backoff = 0.0 }

[[stage]]
name = "fine"
kind = "bench.noop"
sweep = { seeds = 3 }
)");
  Outcome o = Run(spec, 2);
  ASSERT_TRUE(o.status.ok());
  EXPECT_EQ(o.report.failed, 1);
  EXPECT_EQ(o.report.done, 3);
  auto store = Results();
  ASSERT_TRUE(store);
  for (const auto& pj : o.plan.jobs) {
    if (pj.stage != "boom") continue;
    auto row = JobsById(*store)[pj.id];
    EXPECT_EQ(row.attempts, 3);  // `internal` was made retryable for this stage
    EXPECT_EQ(row.error, "internal: uncaught exception: out of cheese");
    EXPECT_FALSE(store->ListMetrics(pj.id).ok());  // a failed attempt's metrics are not results
  }
}

TEST_F(EngineTest, RerunningTheSameSpecExecutesNothingAgain) {
  const std::string trace = dir_.File("trace");
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "s"
kind = "bench.sleep"
config = { seconds = 0.0, trace = ")" + trace + R"(" }
sweep = { seeds = 12 }
)");
  Outcome first = Run(spec, 2);
  ASSERT_TRUE(first.status.ok());
  EXPECT_EQ(first.report.done, 12);
  Outcome second = Run(spec, 2);
  ASSERT_TRUE(second.status.ok());
  EXPECT_EQ(second.report.done, 12);
  EXPECT_EQ(second.report.cached, 12);
  EXPECT_EQ(second.report.attempts, 0);
  EXPECT_EQ(Lines(trace).size(), 12u);
  auto store = Results();
  ASSERT_TRUE(store);
  for (const auto& [id, row] : JobsById(*store)) EXPECT_EQ(row.status, storage::JobStatus::kDone);
}

TEST_F(EngineTest, CriticalPathGoesFirst) {
  const std::string trace = dir_.File("trace");
  const std::string sleep = "kind = \"bench.sleep\"\nconfig = { seconds = 0.0, trace = \"" + trace + "\" }\n";
  ExperimentSpec spec = Spec("[[stage]]\nname = \"side\"\n" + sleep + "sweep = { seeds = 5 }\n" +
                             "[[stage]]\nname = \"a\"\n" + sleep + "[[stage]]\nname = \"b\"\ndepends_on = [\"a\"]\n" +
                             sleep + "[[stage]]\nname = \"c\"\ndepends_on = [\"b\"]\n" + sleep);
  Outcome o = Run(spec, 1);
  ASSERT_TRUE(o.status.ok());
  std::map<std::string, std::string> stage_of;
  for (const auto& pj : o.plan.jobs) stage_of[pj.id] = pj.stage;
  std::vector<std::string> order;
  for (const auto& l : Lines(trace)) order.push_back(stage_of[l.substr(0, l.find(' '))]);
  // One worker: a (critical path 3) and b (2) run before every side job (1),
  // although the side stage comes first in the file; c ties with them.
  ASSERT_EQ(order.size(), 8u);
  EXPECT_EQ(order[0], "a");
  EXPECT_EQ(order[1], "b");
}

TEST_F(EngineTest, StopCancelsRunningJobsAndResumeRunsOnlyWhatIsLeft) {
  const std::string trace = dir_.File("trace");
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "s"
kind = "bench.sleep"
config = { seconds = 0.1, trace = ")" + trace + R"(" }
sweep = { seeds = 30 }
)");
  EngineOptions opt;
  opt.stop_requested = [&] { return Lines(trace).size() >= 4; };
  Outcome stopped = Run(spec, 2, opt);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.ToString();
  EXPECT_TRUE(stopped.report.stopped);
  EXPECT_EQ(stopped.report.exit_code, 0);
  EXPECT_GT(stopped.report.not_run, 0);
  EXPECT_EQ(stopped.report.done + stopped.report.not_run, 30);
  const size_t done_before = Lines(trace).size();
  EXPECT_EQ(static_cast<int64_t>(done_before), stopped.report.done);
  {
    auto store = Results();
    ASSERT_TRUE(store);  // a stop leaves a complete results.h5
    int64_t done = 0, cancelled_or_pending = 0;
    for (const auto& [id, row] : JobsById(*store)) {
      if (row.status == storage::JobStatus::kDone) {
        ++done;
      } else {
        ++cancelled_or_pending;
      }
    }
    EXPECT_EQ(done, stopped.report.done);
    EXPECT_EQ(cancelled_or_pending, stopped.report.not_run);
  }
  Outcome resumed = Run(spec, 2);
  ASSERT_TRUE(resumed.status.ok());
  EXPECT_EQ(resumed.report.done, 30);
  EXPECT_EQ(resumed.report.cached, stopped.report.done);
  for (const auto& [id, n] : Executions(trace)) EXPECT_EQ(n, 1) << id << " ran twice";
  EXPECT_EQ(Executions(trace).size(), 30u);
}

TEST_F(EngineTest, SilentWorkerIsReportedAsStalledAndItsJobRunsElsewhere) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "s"
kind = "bench.sleep"
config = { seconds = 0.05 }
sweep = { seeds = 8 }
retry = { attempts = 2, backoff = 0.0 }
)");
  EngineOptions opt;
  opt.stall_timeout = std::chrono::milliseconds(1500);
  std::ostringstream log;
  opt.progress_out = &log;
  workers::WorkerOptions wopt;
  wopt.heartbeat = std::chrono::milliseconds(50);
  Outcome o = Run(spec, 3, opt, [](cluster::InProcNetwork& net) { net.Kill(2); }, wopt);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.done, 8);
  EXPECT_TRUE(o.report.workers_lost);
  EXPECT_NE(log.str().find("stalled: no heartbeat from rank 2"), std::string::npos) << log.str();
  auto store = Results();
  ASSERT_TRUE(store);
  int retried = 0;
  for (const auto& [id, row] : JobsById(*store)) {
    EXPECT_EQ(row.status, storage::JobStatus::kDone);
    retried += row.attempts == 2 ? 1 : 0;
    EXPECT_NE(row.ranks, "2");
  }
  EXPECT_GE(retried, 1);  // the job handed to the silent rank ran again elsewhere
}

TEST_F(EngineTest, ProcessIsolationTurnsACrashIntoAFailedAttempt) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "crash"
kind = "bench.fail"
config = { probability = 1.0, mode = "crash" }
resources = { isolation = "process" }

[[stage]]
name = "fine"
kind = "toy.quadratic"
resources = { isolation = "process" }
sweep = { seeds = 3 }
)");
  Outcome o = Run(spec, 2);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.failed, 1);
  EXPECT_EQ(o.report.done, 3);
  auto store = Results();
  ASSERT_TRUE(store);
  for (const auto& pj : o.plan.jobs) {
    auto row = JobsById(*store)[pj.id];
    if (pj.stage == "crash") {
      EXPECT_NE(row.error.find("job process killed by signal 6"), std::string::npos) << row.error;
    } else {
      // Metrics streamed from the child process arrive intact.
      workers::LocalJobContext local(pj.id, pj.config, static_cast<uint64_t>(pj.seed));
      ASSERT_TRUE(kinds_.Find("toy.quadratic")->run(local).ok());
      auto loss = store->ReadMetric(pj.id, "loss");
      ASSERT_TRUE(loss.ok());
      EXPECT_EQ(*loss, local.metrics().at("loss"));
    }
  }
}

TEST_F(EngineTest, TimeLimitEndsAnAttemptWithDeadlineExceeded) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "slow"
kind = "bench.sleep"
config = { seconds = 60.0 }
resources = { time_limit = "1s" }
retry = { attempts = 1 }
)");
  const auto start = std::chrono::steady_clock::now();
  Outcome o = Run(spec, 1);
  ASSERT_TRUE(o.status.ok());
  EXPECT_EQ(o.report.failed, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  auto store = Results();
  ASSERT_TRUE(store);
  auto row = JobsById(*store).begin()->second;
  EXPECT_NE(row.error.find("deadline_exceeded: time limit of 1"), std::string::npos) << row.error;
}

TEST_F(EngineTest, GangsOfTwoAndThreeReduceCorrectlyBesideOtherJobs) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "pair"
kind = "bench.allreduce"
config = { elements = 1000, iterations = 5 }
resources = { ranks = 2 }
sweep = { seeds = 3 }

[[stage]]
name = "trio"
kind = "bench.allreduce"
config = { elements = 1000, iterations = 5 }
resources = { ranks = 3 }
sweep = { seeds = 2 }

[[stage]]
name = "other"
kind = "bench.sleep"
config = { seconds = 0.01 }
sweep = { seeds = 20 }
)");
  Outcome o = Run(spec, 5);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.done, 25);
  auto store = Results();
  ASSERT_TRUE(store);
  for (const auto& pj : o.plan.jobs) {
    if (pj.kind != "bench.allreduce") continue;
    const double n = static_cast<double>(pj.resources.ranks);
    auto size = store->ReadMetric(pj.id, "gang_size");
    auto sum = store->ReadMetric(pj.id, "checked_sum");
    ASSERT_TRUE(size.ok() && sum.ok());
    EXPECT_EQ(size->front().value, n);
    EXPECT_EQ(sum->front().value, n * (n + 1) / 2 * 2);
  }
}

// Gangs on as few hosts as possible: workers 1..4 on hosts a, b, b, c. A
// pair fits on b alone; a trio fits on no host and takes b's two and one
// more. (Each worker first runs one warm-up job, so that every host is known.)
TEST_F(EngineTest, GangsGoToAsFewHostsAsPossible) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "warmup"
kind = "bench.sleep"
config = { seconds = 0.05 }
sweep = { seeds = 4 }

[[stage]]
name = "pair"
kind = "bench.allreduce"
depends_on = ["warmup"]
resources = { ranks = 2 }

[[stage]]
name = "trio"
kind = "bench.allreduce"
depends_on = ["pair"]
resources = { ranks = 3 }
)");
  Outcome o = Run(spec, 4, {}, {}, {}, {"a", "b", "b", "c"});
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.done, 6);
  auto store = Results();
  ASSERT_TRUE(store);
  for (const auto& [id, job] : JobsById(*store)) {
    if (job.stage == "pair") {
      EXPECT_EQ(job.ranks, "2,3");
      EXPECT_EQ(job.host, "b");
    }
    if (job.stage == "trio") {
      EXPECT_EQ(job.ranks, "1,2,3");  // b's two, then a (the first host of those left)
    }
  }
}

TEST_F(EngineTest, GangLargerThanTheWorkersIsABadInputBeforeAnythingRuns) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "wide"
kind = "bench.allreduce"
resources = { ranks = 4 }
)");
  Outcome o = Run(spec, 2);
  EXPECT_EQ(o.status.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(o.status.message().find("--ranks 5"), std::string::npos) << o.status.message();
}

TEST_F(EngineTest, TornJournalTailIsDroppedAndTheRunGoesOn) {
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "s"
kind = "bench.noop"
sweep = { seeds = 6 }
)");
  ASSERT_TRUE(Run(spec, 2).status.ok());
  {
    std::ofstream j(JournalPath(dir_.File("run")), std::ios::app | std::ios::binary);
    j << "\x30\x00\x00\x00garbage-that-was-cut-short";
  }
  auto st = ReplayJournal(JournalPath(dir_.File("run")));
  ASSERT_TRUE(st.ok());
  EXPECT_GT(st->torn_bytes, 0);
  Outcome again = Run(spec, 2);
  ASSERT_TRUE(again.status.ok()) << again.status.ToString();
  EXPECT_EQ(again.report.cached, 6);
  auto after = ReplayJournal(JournalPath(dir_.File("run")));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->torn_bytes, 0);
}

TEST_F(EngineTest, ArtifactsReachTheNextAttemptAndDownstreamJobsAndResultsH5) {
  const std::string trace = dir_.File("trace");
  ExperimentSpec spec = Spec(R"(
[[stage]]
name = "train"
kind = "test.artifact"
config = { fail_first = true, trace = ")" + trace + R"(" }
retry = { attempts = 2, backoff = 0.0 }
sweep = { seeds = 2 }

[[stage]]
name = "eval"
kind = "test.artifact"
depends_on = ["train"]
config = { trace = ")" + trace + R"(" }
sweep = { over = ["train"] }
)");
  Outcome o = Run(spec, 2);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.report.done, 4);
  std::map<std::string, std::string> line_of;  // "<id> <attempt>" -> rest
  for (const auto& l : Lines(trace)) {
    const size_t second = l.find(' ', l.find(' ') + 1);
    line_of[l.substr(0, second)] = l.substr(second + 1);
  }
  ASSERT_EQ(line_of.size(), 6u);  // 2 train jobs x 2 attempts + 2 eval jobs
  auto results = Results();
  ASSERT_NE(results, nullptr);
  for (const auto& pj : o.plan.jobs) {
    if (pj.stage == "train") {
      EXPECT_EQ(line_of[pj.id + " 1"], "prev=- inputs=");
      EXPECT_EQ(line_of[pj.id + " 2"], "prev=" + pj.id + "@1 inputs=");  // the failed attempt's file
    } else {
      ASSERT_EQ(pj.inputs.size(), 1u);
      EXPECT_EQ(line_of[pj.id + " 1"], "prev=- inputs=model:" + pj.inputs[0] + "@2,");  // upstream's final file
    }
    auto run = results->ReadRun(pj.id);
    ASSERT_TRUE(run.ok()) << pj.id << ": " << run.status().ToString();
    ASSERT_EQ(run->artifacts.count("model"), 1u);
    const std::string rel = run->artifacts.at("model");
    EXPECT_EQ(rel.rfind("checkpoints/", 0), 0u) << rel;  // relative to the run directory
    auto bytes = storage::ReadVerified(dir_.File("run") + "/" + rel);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(*bytes, pj.id + "@" + (pj.stage == "train" ? "2" : "1"));
  }

  // A resume memoizes everything; deleting a done job's checkpoint makes it run again.
  Outcome again = Run(spec, 2);
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.report.cached, 4);
  const PlannedJob* eval = nullptr;
  for (const auto& pj : o.plan.jobs) if (pj.stage == "eval") eval = &pj;
  ASSERT_NE(eval, nullptr);
  std::filesystem::remove(dir_.File("run") + "/" + results->ReadRun(eval->id)->artifacts.at("model"));
  results.reset();
  Outcome third = Run(spec, 2);
  ASSERT_TRUE(third.status.ok());
  EXPECT_EQ(third.report.cached, 3);
  EXPECT_EQ(third.report.done, 4);
}

}  // namespace
}  // namespace shammie::orchestrator

namespace shammie::orchestrator {
namespace {

// Adaptive sweeps (orchestrator/adaptive.hpp): the controller proposes
// rounds from the results, stops at the budget, and a second run in the same
// directory proposes the same points again and finds them all done.
TEST_F(EngineTest, AdaptiveSweepProposesRoundsWithinBudgetAndResumes) {
  workers::JobKind bowl;
  bowl.name = "test.bowl";
  bowl.doc = "Reports loss = (x - 0.7)^2 + (y - 0.2)^2 and cost = x.";
  bowl.config = common::Schema(bowl.name, bowl.doc);
  bowl.config.Float("x").Default(0.0).Doc("x");
  bowl.config.Float("y").Default(0.0).Doc("y");
  bowl.run = [](workers::JobContext& ctx) -> common::Status {
    const double x = ctx.config()["x"].get<double>(), y = ctx.config()["y"].get<double>();
    ctx.ReportMetric("loss", 0, (x - 0.7) * (x - 0.7) + (y - 0.2) * (y - 0.2));
    ctx.ReportMetric("cost", 0, x);
    return common::Status::Ok();
  };
  ASSERT_TRUE(kinds_.Register(std::move(bowl)).ok());
  auto search = [&](const std::string& objective, int batch) {
    return Spec(R"(
[[stage]]
name = "search"
kind = "test.bowl"
[stage.sweep]
strategy = "bo"
budget = 16
batch = )" + std::to_string(batch) + R"(
objectives = [")" + objective + R"("]
random = { samples = 4, x = { uniform = [0.0, 1.0] }, y = { uniform = [0.0, 1.0] } }
)");
  };
  ExperimentSpec spec = search("loss", 3);
  std::ostringstream progress;
  EngineOptions opt;
  opt.progress = ProgressMode::kPlain;
  opt.progress_out = &progress;
  Outcome o = Run(spec, 2, opt);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.plan.jobs.size(), 4u);  // the plan holds the initial design
  EXPECT_EQ(o.report.total, 16);      // the controller added the rest
  EXPECT_EQ(o.report.done, 16);
  EXPECT_EQ(o.report.attempts, 16);
  EXPECT_NE(progress.str().find("stage search round 4: 3 new points"), std::string::npos) << progress.str();
  EXPECT_EQ(progress.str().find("round 5"), std::string::npos) << progress.str();

  auto store = Results();
  ASSERT_TRUE(store);
  auto jobs = store->ReadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 16u);
  std::set<std::string> initial;
  for (const auto& pj : o.plan.jobs) initial.insert(pj.id);
  double best_initial = 1e9, best = 1e9;
  for (const auto& j : *jobs) {
    EXPECT_EQ(j.status, storage::JobStatus::kDone);
    auto loss = store->ReadMetric(j.id, "loss");
    ASSERT_TRUE(loss.ok());
    const double v = loss->back().value;
    best = std::min(best, v);
    if (initial.count(j.id)) best_initial = std::min(best_initial, v);
    // Proposals stay inside the declared ranges.
    const auto config = nlohmann::json::parse(j.config_json);
    EXPECT_GE(config["x"].get<double>(), 0.0);
    EXPECT_LE(config["x"].get<double>(), 1.0);
  }
  // The search beats its own random start by far (measured: 0.03 -> 2e-5).
  EXPECT_LT(best, 0.003);
  EXPECT_LT(best, best_initial / 5);
  store.reset();

  // The same results give the same proposals: nothing runs again.
  Outcome again = Run(spec, 2);
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.report.total, 16);
  EXPECT_EQ(again.report.cached, 16);
  EXPECT_EQ(again.report.attempts, 0);

  // A misspelt objective stops the search after the initial design, saying why.
  ExperimentSpec typo = search("los", 1);
  std::ostringstream said;
  EngineOptions quiet;
  quiet.run_dir = dir_.File("typo");
  quiet.progress_out = &said;
  Outcome t = Run(typo, 2, quiet);
  ASSERT_TRUE(t.status.ok());
  EXPECT_EQ(t.report.total, 4);
  EXPECT_NE(said.str().find("reported no metric \"los\" (it reported: cost, loss); check sweep.objectives"),
            std::string::npos)
      << said.str();
}

}  // namespace
}  // namespace shammie::orchestrator
