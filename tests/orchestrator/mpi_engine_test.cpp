// `shammie run` for real: the launcher starts mpirun, rank 0 is the
// controller, the others are workers over MPI. Kills (-9) at random moments
// and resumes; SIGINT and resume; gangs of 2 and 3 ranks next to other jobs;
// injected failures and exit codes. Label `mpi`.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "orchestrator/plan.hpp"
#include "orchestrator/run_journal.hpp"
#include "orchestrator/spec_loader.hpp"
#include "common/blas_core.hpp"
#include "storage/result_store.hpp"
#include "tests/table_column.hpp"
#include "tests/test_util.hpp"

extern char** environ;

namespace shammie::orchestrator {
namespace {

using testing::ScratchDir;

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// Starts `shammie ARGS...` with output to `log`; returns its pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {kShammie};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, kShammie.c_str(), &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0);
  return pid;
}

int Wait(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// kill -9 of every process of the run (launcher, mpirun, ranks): all name DIR.
void KillRun(const std::string& dir, pid_t launcher) {
  // "[-]-out" matches "--out" but not the shell running pkill/pgrep itself.
  testing::RunCommand("pkill -9 -f -- '[-]-out " + dir + "'");
  Wait(launcher);
  for (int i = 0; i < 100 && testing::RunCommand("pgrep -f -- '[-]-out " + dir + "'").exit_code == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::set<std::string> DoneIds(const std::string& dir) {
  std::set<std::string> done;
  auto st = ReplayJournal(JournalPath(dir));
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  if (!st.ok()) return done;
  for (const auto& [id, h] : st->jobs) {
    if (h.done_attempt > 0) done.insert(id);
  }
  return done;
}

std::string Dag200(const std::string& trace) {
  return R"([experiment]
name = "dag200"
seed = 3

[[stage]]
name = "prep"
kind = "bench.sleep"
config = { seconds = 0.005, trace = ")" + trace + R"(" }
sweep = { seeds = 40 }

[[stage]]
name = "train"
kind = "toy.quadratic"
depends_on = ["prep"]
config = { steps = 3000, noise = 0.1, eval_every = 10 }
sweep = { grid = { learning_rate = [0.01, 0.05, 0.1, 0.2] }, seeds = 10 }

[[stage]]
name = "eval"
kind = "bench.sleep"
depends_on = ["train"]
config = { seconds = 0.03, trace = ")" + trace + R"(" }
sweep = { over = ["train"], seeds = 2 }

[[stage]]
name = "gang"
kind = "bench.allreduce"
depends_on = ["prep"]
resources = { ranks = 2 }
sweep = { seeds = 2 }

[[stage]]
name = "noop"
kind = "bench.noop"
sweep = { seeds = 38 }
)";
}

TEST(MpiEngineTest, KilledRepeatedlyAndResumedGivesTheUninterruptedResults) {
  ScratchDir scratch("mpi-kill");
  const std::string trace = scratch.File("trace");
  const std::string spec = scratch.File("dag200.toml");
  testing::WriteFile(spec, Dag200(trace));
  const std::string dir = scratch.File("run");
  const unsigned seed = static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count());
  std::mt19937 rng(seed);
  SCOPED_TRACE("kill times drawn with seed " + std::to_string(seed));

  int kills = 0;
  for (int round = 0; round < 4; ++round) {
    const size_t traced_before = Lines(trace).size();
    const std::set<std::string> done_before = DoneIds(dir);
    const pid_t pid = Spawn({"run", spec, "--out", dir, "--ranks", "3", "--progress", "none"}, scratch.File("log"));
    // Kill at a random moment after the controller has started (its journal
    // exists from the first round on), so that the kills land in the run.
    for (int i = 0; i < 500 && round == 0 && !std::filesystem::exists(JournalPath(dir)); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const int ms = std::uniform_int_distribution<int>(round == 0 ? 0 : 300, 1500)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    KillRun(dir, pid);
    ++kills;
    // No job that was durably done before this round ran again in it.
    const auto lines = Lines(trace);
    for (size_t i = traced_before; i < lines.size(); ++i) {
      const std::string id = lines[i].substr(0, lines[i].find(' '));
      EXPECT_EQ(done_before.count(id), 0u) << "job " << id << " was done before round " << round << " and ran again";
    }
    // results.h5, where it exists, is always a complete file.
    if (std::filesystem::exists(dir + "/results.h5")) {
      auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
      EXPECT_TRUE(store.ok()) << store.status().ToString();
    }
    // A kill before the controller started leaves no journal: status says so.
    auto status = testing::RunCommand(kShammie + " status " + dir);
    EXPECT_EQ(status.exit_code, std::filesystem::exists(JournalPath(dir)) ? 0 : 2) << status.output;
  }
  const size_t traced_before = Lines(trace).size();
  const std::set<std::string> done_before = DoneIds(dir);
  auto final_run = testing::RunCommand(kShammie + " run " + spec + " --out " + dir + " --ranks 3 --resume --progress plain");
  ASSERT_EQ(final_run.exit_code, 0) << final_run.output << testing::ReadFileText(scratch.File("log"));
  const auto lines = Lines(trace);
  for (size_t i = traced_before; i < lines.size(); ++i) {
    EXPECT_EQ(done_before.count(lines[i].substr(0, lines[i].find(' '))), 0u) << lines[i];
  }

  // The same spec, uninterrupted, into another directory.
  const std::string clean_trace = scratch.File("clean-trace");
  const std::string clean_spec = scratch.File("clean.toml");
  testing::WriteFile(clean_spec, Dag200(trace));  // same text, same job ids
  const std::string clean = scratch.File("clean");
  auto clean_run = testing::RunCommand(kShammie + " run " + clean_spec + " --out " + clean + " --ranks 3 --progress none");
  ASSERT_EQ(clean_run.exit_code, 0) << clean_run.output;

  auto a = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  auto b = storage::ResultStore::Open(clean + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(a.ok() && b.ok());
  auto ja = (*a)->ReadJobs();
  auto jb = (*b)->ReadJobs();
  ASSERT_TRUE(ja.ok() && jb.ok());
  ASSERT_EQ(ja->size(), 200u);
  ASSERT_EQ(jb->size(), 200u);
  for (size_t i = 0; i < ja->size(); ++i) {
    EXPECT_EQ((*ja)[i].id, (*jb)[i].id);
    EXPECT_EQ((*ja)[i].status, storage::JobStatus::kDone) << (*ja)[i].id;
    EXPECT_EQ((*ja)[i].config_json, (*jb)[i].config_json);
    EXPECT_EQ((*ja)[i].seed, (*jb)[i].seed);
    auto names = (*b)->ListMetrics((*jb)[i].id);
    // Jobs that stored nothing have no /runs group, in both files alike.
    EXPECT_EQ(names.ok(), (*a)->ListMetrics((*ja)[i].id).ok()) << (*ja)[i].id;
    if (!names.ok()) continue;
    for (const auto& name : *names) {
      auto ma = (*a)->ReadMetric((*ja)[i].id, name);
      auto mb = (*b)->ReadMetric((*jb)[i].id, name);
      ASSERT_TRUE(ma.ok() && mb.ok());
      if (name == "allreduce_us") continue;  // a timing
      EXPECT_EQ(*ma, *mb) << (*ja)[i].id << " " << name;
    }
  }
  EXPECT_EQ(kills, 4);
}

TEST(MpiEngineTest, InterruptStopsCleanlyAndResumeFinishes) {
  ScratchDir scratch("mpi-sigint");
  const std::string trace = scratch.File("trace");
  const std::string spec = scratch.File("sleepy.toml");
  testing::WriteFile(spec, R"([experiment]
name = "sleepy"

[[stage]]
name = "s"
kind = "bench.sleep"
config = { seconds = 0.15, trace = ")" + trace + R"(" }
sweep = { seeds = 24 }
)");
  const std::string dir = scratch.File("run");
  const std::string log = scratch.File("log");
  const pid_t pid = Spawn({"run", spec, "--out", dir, "--ranks", "2", "--progress", "plain"}, log);
  for (int i = 0; i < 200 && Lines(trace).size() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGINT);
  const int code = Wait(pid);
  const std::string out = testing::ReadFileText(log);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("resume with: shammie run"), std::string::npos) << out;
  const size_t done = DoneIds(dir).size();
  EXPECT_GT(done, 0u);
  EXPECT_LT(done, 24u);
  auto resumed = testing::RunCommand(kShammie + " run " + spec + " --out " + dir + " --ranks 2 --resume --progress none");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("(" + std::to_string(done) + " stored by an earlier run, not rerun)"), std::string::npos)
      << resumed.output;
  std::map<std::string, int> runs;
  for (const auto& l : Lines(trace)) ++runs[l.substr(0, l.find(' '))];
  EXPECT_EQ(runs.size(), 24u);
  for (const auto& [id, n] : runs) EXPECT_EQ(n, 1) << id;
}

TEST(MpiEngineTest, GangsIsolationAndFailuresUnderMpirun) {
  ScratchDir scratch("mpi-gangs");
  const std::string spec = scratch.File("gangs.toml");
  testing::WriteFile(spec, R"([experiment]
name = "gangs"

[[stage]]
name = "pair"
kind = "bench.allreduce"
config = { elements = 100000, iterations = 3 }
resources = { ranks = 2 }
sweep = { seeds = 3 }

[[stage]]
name = "trio"
kind = "bench.allreduce"
config = { elements = 100000, iterations = 3 }
resources = { ranks = 3 }
sweep = { seeds = 2 }

[[stage]]
name = "other"
kind = "toy.quadratic"
sweep = { seeds = 10 }

[[stage]]
name = "crash"
kind = "bench.fail"
config = { mode = "crash" }
resources = { isolation = "process" }

[[stage]]
name = "flaky"
kind = "bench.fail"
config = { mode = "error" }
retry = { attempts = 2, backoff = 0.0 }

[[stage]]
name = "after_flaky"
kind = "bench.noop"
depends_on = ["flaky"]
)");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " + spec + " --out " + dir + " --ranks 4 --progress none");
  EXPECT_EQ(run.exit_code, 1) << run.output;  // some jobs failed
  EXPECT_NE(run.output.find("15 done, 2 failed, 1 skipped"), std::string::npos) << run.output;

  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->ReadJobs();
  ASSERT_TRUE(jobs.ok());
  for (const auto& j : *jobs) {
    if (j.kind == "bench.allreduce") {
      const double n = j.stage == "pair" ? 2 : 3;
      EXPECT_EQ(j.status, storage::JobStatus::kDone);
      EXPECT_EQ(static_cast<double>(std::count(j.ranks.begin(), j.ranks.end(), ',') + 1), n) << j.ranks;
      auto sum = (*store)->ReadMetric(j.id, "checked_sum");
      ASSERT_TRUE(sum.ok());
      EXPECT_EQ(sum->front().value, n * (n + 1) / 2 * 2);
    } else if (j.stage == "crash") {
      EXPECT_EQ(j.status, storage::JobStatus::kFailed);
      EXPECT_NE(j.error.find("job process killed by signal 6"), std::string::npos) << j.error;
    } else if (j.stage == "flaky") {
      EXPECT_EQ(j.attempts, 2);
      EXPECT_EQ(j.status, storage::JobStatus::kFailed);
    } else if (j.stage == "after_flaky") {
      EXPECT_EQ(j.status, storage::JobStatus::kSkipped);
    } else {
      EXPECT_EQ(j.status, storage::JobStatus::kDone);
    }
  }
  auto status = testing::RunCommand(kShammie + " status " + dir);
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_NE(status.output.find("after 2 attempts: aborted: bench.fail: injected failure (attempt 2)"), std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find("skipped:"), std::string::npos) << status.output;
}

// lm.train through the whole stack: the plugin loaded on the workers, a
// data-parallel gang of 2 over MPI, metrics streamed into results.h5.
TEST(MpiEngineTest, DataParallelLanguageModelTrainingUnderMpirun) {
  ScratchDir scratch("mpi-lm");
  const std::string spec = scratch.File("lm.toml");
  testing::WriteFile(spec, R"([experiment]
name = "lm"

[[stage]]
name = "pair"
kind = "lm.train"
config = { task = "copy", length = 4, alphabet = 4, d_model = 32, heads = 2, max_len = 16, steps = 40, batch = 16, eval_every = 20, eval_examples = 32 }
resources = { ranks = 2 }
)");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " + spec + " --out " + dir + " --ranks 3 --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->ReadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ(jobs->front().ranks, "1,2");
  auto loss = (*store)->ReadMetric(jobs->front().id, "loss");
  ASSERT_TRUE(loss.ok());
  ASSERT_EQ(loss->size(), 4u);  // every 10 steps
  EXPECT_LT(loss->back().value, loss->front().value);
  auto acc = (*store)->ReadMetric(jobs->front().id, "val_accuracy");
  ASSERT_TRUE(acc.ok());
  EXPECT_EQ(acc->size(), 3u);  // the starting model, then every 20 steps
  EXPECT_EQ(acc->front().step, 0);
  // Rank 0 of the gang records what decides the trained bits, with the
  // OpenBLAS kernels the plugin loaded under (common/blas_core.hpp): the
  // caller's OPENBLAS_CORETYPE, else the family the CPU supports.
  auto runtime = (*store)->ReadTable(jobs->front().id, "runtime");
  ASSERT_TRUE(runtime.ok()) << runtime.status().ToString();
  ASSERT_EQ(runtime->num_rows(), 1u);
  const std::string core = testing::Column<std::string>(*runtime, "openblas_core").at(0);
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  const std::string wanted = user && *user ? user : common::OpenBlasCoreForThisCpu();
  if (testing::Column<std::string>(*runtime, "blas_library").at(0).find("openblas") != std::string::npos &&
      !wanted.empty()) {
    EXPECT_TRUE(strcasecmp(core.c_str(), wanted.c_str()) == 0) << core << " vs " << wanted;
  }
  EXPECT_EQ(testing::Column<int64_t>(*runtime, "threads").at(0), 1);
  EXPECT_EQ(testing::Column<std::string>(*runtime, "device").at(0), "cpu");
}

// Ctrl-C in the middle of a data-parallel training job: the gang stops after
// the same step, rank 0 saves a checkpoint, and --resume continues from it.
// The stored loss curve equals an uninterrupted run's, point for point, and
// the evaluation job downstream reads the final checkpoint.
TEST(MpiEngineTest, StoppedTrainingResumesFromItsCheckpointWithTheSameCurve) {
  ScratchDir scratch("mpi-lm-resume");
  const std::string spec = scratch.File("lm.toml");
  testing::WriteFile(spec, R"([experiment]
name = "lmresume"

[[stage]]
name = "train"
kind = "lm.train"
config = { task = "copy", length = 4, alphabet = 4, d_model = 32, heads = 2, max_len = 16, steps = 600, batch = 16, eval_every = 200, eval_examples = 32 }
resources = { ranks = 2 }

[[stage]]
name = "eval"
kind = "lm.eval"
depends_on = ["train"]
sweep = { over = ["train"] }
)");
  const std::string straight = scratch.File("straight");
  auto run = testing::RunCommand(kShammie + " run " + spec + " --out " + straight + " --ranks 3 --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;

  const std::string dir = scratch.File("stopped");
  const std::string log = scratch.File("log");
  const pid_t pid = Spawn({"run", spec, "--out", dir, "--ranks", "3", "--progress", "plain"}, log);
  for (int i = 0; i < 1000; ++i) {  // until training reports its first metrics
    auto st = ReplayJournal(JournalPath(dir));
    if (st.ok() && st->metric_points > 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGINT);
  ASSERT_EQ(Wait(pid), 0) << testing::ReadFileText(log);
  auto stopped = ReplayJournal(JournalPath(dir));
  ASSERT_TRUE(stopped.ok());
  ASSERT_EQ(DoneIds(dir).size(), 0u) << "training finished before the stop; the test needs more steps";
  std::string train_id;
  for (const auto& [id, h] : stopped->jobs) {
    if (h.attempts > 0) train_id = id;
  }
  ASSERT_FALSE(train_id.empty());
  ASSERT_EQ(stopped->jobs.at(train_id).artifacts.count("model"), 1u) << testing::ReadFileText(log);
  EXPECT_NE(stopped->jobs.at(train_id).error.find("checkpoint saved"), std::string::npos)
      << stopped->jobs.at(train_id).error;

  auto resumed = testing::RunCommand(kShammie + " run " + spec + " --out " + dir + " --ranks 3 --resume --progress none");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  auto a = storage::ResultStore::Open(straight + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  auto b = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const char* metric : {"loss", "lr", "val_loss", "val_accuracy", "test_accuracy"}) {
    auto ma = (*a)->ReadMetric(train_id, metric), mb = (*b)->ReadMetric(train_id, metric);
    ASSERT_TRUE(ma.ok() && mb.ok()) << metric;
    EXPECT_EQ(*ma, *mb) << metric;
  }
  auto loss = (*b)->ReadMetric(train_id, "loss");
  EXPECT_EQ(loss->size(), 60u);
  // It continued from the checkpoint (a restart from scratch would give the same curve too).
  auto from = (*b)->ReadMetric(train_id, "resumed_from");
  ASSERT_TRUE(from.ok()) << from.status().ToString();
  ASSERT_EQ(from->size(), 1u);
  EXPECT_GT(from->front().value, 0);
  EXPECT_LT(from->front().value, 600);
  EXPECT_FALSE((*a)->ReadMetric(train_id, "resumed_from").ok());
  auto jobs = (*b)->ReadJobs();
  ASSERT_TRUE(jobs.ok());
  for (const auto& j : *jobs) {
    EXPECT_EQ(j.status, storage::JobStatus::kDone) << j.id << " " << j.error;
    if (j.stage == "eval") {
      auto acc = (*b)->ReadMetric(j.id, "accuracy"), want = (*a)->ReadMetric(j.id, "accuracy");
      ASSERT_TRUE(acc.ok() && want.ok());
      EXPECT_EQ(*acc, *want);  // the same final model
    }
  }
}

TEST(MpiEngineTest, BadSpecIsExitTwoAndLaunchesNothing) {
  ScratchDir scratch("mpi-bad");
  const std::string spec = scratch.File("bad.toml");
  testing::WriteFile(spec, "[experiment]\nname = \"bad\"\n\n[[stage]]\nname = \"a\"\nkind = \"toy.quadratic\"\nconfig = { learning_rate = -1.0 }\n");
  auto run = testing::RunCommand(kShammie + " run " + spec + " --out " + scratch.File("run"));
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("bad.toml:7:"), std::string::npos) << run.output;
  EXPECT_FALSE(std::filesystem::exists(scratch.File("run")));
}

}  // namespace
}  // namespace shammie::orchestrator
