// `shammie submit` on a real Slurm cluster: munged, slurmctld and two slurmd
// (nodes n1, n2) on this machine, brought up by tests/slurm/cluster.sh as a
// ctest fixture that sets SLURM_CONF. Label `slurm`. Nothing is faked: real
// sbatch, srun --mpi=pmix, signals and requeues; results read back from
// results.h5 and the journal. Waits are polls with a hang guard, never timed
// assertions.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "orchestrator/plan.hpp"
#include "orchestrator/run_journal.hpp"
#include "orchestrator/spec_loader.hpp"
#include "storage/result_store.hpp"
#include "tests/test_util.hpp"
#include "workers/job_kind.hpp"

namespace shammie::orchestrator {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";
const std::string kData = std::string(SHAMMIE_SOURCE_DIR) + "/tests/data/slurm/";
// A hang guard for polls: far above what any case needs on 2 busy cores.
constexpr auto kHangGuard = std::chrono::minutes(4);

std::string Q(const std::string& s) {  // single-quote for the test's own shell commands
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class SlurmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* conf = std::getenv("SLURM_CONF");
    ASSERT_TRUE(conf && fs::exists(conf))
        << "SLURM_CONF must name the test cluster's slurm.conf: run through ctest (fixture slurm_cluster, "
           "tests/slurm/cluster.sh)";
    auto sinfo = testing::RunCommand("sinfo -h -N -o '%N %t'");
    ASSERT_EQ(sinfo.exit_code, 0) << sinfo.output;
  }

  // `shammie submit ARGS` run from `cwd`; returns the Slurm job id.
  std::string Submit(const std::string& cwd, const std::string& args) {
    auto r = testing::RunCommand("cd " + Q(cwd) + " && " + kShammie + " submit " + args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::smatch m;
    const bool found = std::regex_search(r.output, m, std::regex("Submitted batch job ([0-9]+)"));
    EXPECT_TRUE(found) << r.output;
    return found ? m[1].str() : "";
  }

  // JobState (and the rest) of every line `scontrol show job ID` prints (one per array task).
  static std::vector<std::map<std::string, std::string>> ShowJob(const std::string& id) {
    auto r = testing::RunCommand("scontrol -o show job " + id);
    std::vector<std::map<std::string, std::string>> jobs;
    std::istringstream lines(r.output);
    for (std::string line; std::getline(lines, line);) {
      std::map<std::string, std::string> kv;
      // JobName may hold spaces: take it from its key to the next " JobId"-style key.
      std::regex pair("([A-Za-z:/]+)=");
      std::vector<std::pair<std::string, size_t>> keys;
      for (auto it = std::sregex_iterator(line.begin(), line.end(), pair); it != std::sregex_iterator(); ++it) {
        const size_t pos = static_cast<size_t>(it->position(0));
        if (pos == 0 || line[pos - 1] == ' ') keys.emplace_back((*it)[1].str(), pos);
      }
      for (size_t i = 0; i < keys.size(); ++i) {
        const size_t start = keys[i].second + keys[i].first.size() + 1;
        const size_t end = i + 1 < keys.size() ? keys[i + 1].second - 1 : line.size();
        kv.emplace(keys[i].first, line.substr(start, end - start));
      }
      if (!kv.empty()) jobs.push_back(std::move(kv));
    }
    return jobs;
  }

  static bool Terminal(const std::string& state) {
    static const std::set<std::string> kDone = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                                "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"};
    return kDone.count(state) > 0;
  }

  // Polls until every task of job `id` has ended; returns their final records.
  std::vector<std::map<std::string, std::string>> WaitForEnd(const std::string& id) {
    const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
    for (;;) {
      auto jobs = ShowJob(id);
      bool all = !jobs.empty();
      for (auto& j : jobs) all = all && Terminal(j["JobState"]);
      if (all) return jobs;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "Slurm job " << id << " has not ended; scontrol says:\n"
                      << testing::RunCommand("scontrol show job " + id).output;
        return jobs;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
};

// 1. A small experiment on both nodes: 4 ranks, a 3-rank gang that spans
//    n1 and n2, a 2-rank gang placed on one node; the job name from the [slurm] table holds shell syntax that
//    must stay a name; the run directory's name too.
TEST_F(SlurmTest, SubmitRunsOnTwoNodesAndStoresResults) {
  ScratchDir scratch("slurm-submit");
  const std::string spec = scratch.File("exp.toml");
  testing::WriteFile(spec, "extends = \"" + kData + "small.toml\"\n[slurm]\nnodes = 2\nntasks_per_node = 2\ntime = \"00:05:00\"\n"
                               "job_name = \"x; rm -rf ~/.shammie-canary; touch canary-name $(touch canary-subst)\"\n");
  const std::string out = scratch.File("run 1; touch canary-dir");
  const std::string id = Submit(scratch.path().string(), Q(spec) + " --out " + Q(out) + " --grace 30");
  ASSERT_FALSE(id.empty());
  auto jobs = WaitForEnd(id);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["JobState"], "COMPLETED") << testing::ReadFileText(out + "/slurm/" + id + ".out");
  EXPECT_EQ(jobs[0]["NodeList"], "n[1-2]");
  EXPECT_EQ(jobs[0]["JobName"], "x; rm -rf ~/.shammie-canary; touch canary-name $(touch canary-subst)");
  for (const char* canary : {"canary-name", "canary-subst", "canary-dir"}) {
    EXPECT_FALSE(fs::exists(scratch.File(canary))) << canary << ": a value reached a shell unquoted";
  }

  auto store = storage::ResultStore::Open(out + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status().ToString() << "\n" << testing::ReadFileText(out + "/slurm/" + id + ".out");
  auto rows = (*store)->ReadJobs();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 7u);
  for (const auto& row : *rows) {
    EXPECT_EQ(row.status, storage::JobStatus::kDone) << row.stage << ": " << row.error;
    if (row.stage == "gang") {
      EXPECT_EQ(row.ranks, "1,2,3");  // rank 1 on n1, ranks 2 and 3 on n2
      EXPECT_EQ(row.host, "n1");      // gang rank 0's node
    }
    if (row.stage == "pair") {
      EXPECT_EQ(row.ranks, "2,3");  // both on n2: one node, not two
      EXPECT_EQ(row.host, "n2");
    }
  }
  // `shammie status` shows the Slurm job next to the job table.
  auto status = testing::RunCommand(kShammie + " status " + Q(out));
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find(id), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("COMPLETED"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("7 jobs: 7 done"), std::string::npos) << status.output;
  auto status_json = testing::RunCommand(kShammie + " status --json " + Q(out));
  ASSERT_EQ(status_json.exit_code, 0) << status_json.output;
  const auto j = nlohmann::json::parse(status_json.output.substr(status_json.output.find('{')), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << status_json.output;
  ASSERT_EQ(j["slurm"].size(), 1u) << status_json.output;
  EXPECT_EQ(j["slurm"][0]["job"], id);
  EXPECT_EQ(j["slurm"][0]["state"], "COMPLETED");
  EXPECT_EQ(j["jobs"]["done"], 7);
}

// 2. Preemption: SIGUSR1 to the batch shell (what --signal=B:USR1@GRACE
//    sends) once training has journaled a checkpoint. The job stops, requeues
//    itself, starts again with --resume, and finishes: training continues
//    from its checkpoint, and no job that was done runs again.
TEST_F(SlurmTest, PreemptionRequeuesAndTrainingResumes) {
  ScratchDir scratch("slurm-preempt");
  const std::string out = scratch.File("run");
  const std::string id =
      Submit(scratch.path().string(), Q(kData + "lm-preempt.toml") +
                                          " --out " + Q(out) + " --nodes 2 --ntasks-per-node 2 --time 10:00 --grace 60");
  ASSERT_FALSE(id.empty());

  // Wait for the training job's first checkpoint in the journal (a poll, not a timer).
  const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  bool checkpointed = false;
  while (!checkpointed && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!fs::exists(out + "/journal.bin")) continue;
    auto st = ReplayJournal(JournalPath(out));
    if (!st.ok()) continue;
    for (const auto& e : st->plan) {
      auto it = st->jobs.find(e.id);
      if (e.stage == "train" && it != st->jobs.end() && !it->second.artifacts.empty()) {
        checkpointed = it->second.done_attempt == 0;  // still training
        if (it->second.done_attempt > 0) FAIL() << "training finished before the signal; make it longer";
      }
    }
  }
  ASSERT_TRUE(checkpointed) << testing::ReadFileText(out + "/slurm/" + id + ".out");
  auto sig = testing::RunCommand("scancel --signal=USR1 --batch " + id);
  ASSERT_EQ(sig.exit_code, 0) << sig.output;

  auto jobs = WaitForEnd(id);
  const std::string log = testing::ReadFileText(out + "/slurm/" + id + ".out");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["JobState"], "COMPLETED") << log;
  EXPECT_EQ(jobs[0]["Restarts"], "1") << log;
  EXPECT_NE(log.find("SIGUSR1"), std::string::npos) << log;
  EXPECT_NE(log.find("requeueing job " + id + " (requeue 1 of at most 3)"), std::string::npos) << log;
  EXPECT_NE(log.find("start 2"), std::string::npos) << log;

  // Each job done exactly once: the second start ran only what the first left.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m,
                                std::regex("7 jobs: 7 done \\(([0-9]+) stored by an earlier run, not rerun\\), 0 "
                                           "failed, 0 skipped, 0 not run; ([0-9]+) attempts")))
      << log;
  const int cached = std::stoi(m[1].str()), attempts = std::stoi(m[2].str());
  EXPECT_GE(cached, 1) << log;
  EXPECT_EQ(cached + attempts, 7) << log;

  auto store = storage::ResultStore::Open(out + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status().ToString() << "\n" << log;
  auto rows = (*store)->ReadJobs();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 7u);
  std::string train_id;
  for (const auto& row : *rows) {
    EXPECT_EQ(row.status, storage::JobStatus::kDone) << row.stage << ": " << row.error;
    EXPECT_LE(row.attempts, 2) << row.stage;
    if (row.stage == "train") {
      train_id = row.id;
      EXPECT_EQ(row.attempts, 2);  // stopped once, then finished
    }
  }
  ASSERT_FALSE(train_id.empty());
  auto resumed = (*store)->ReadMetric(train_id, "resumed_from");
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  ASSERT_EQ(resumed->size(), 1u);
  EXPECT_GE(resumed->front().value, 50);  // at least the first checkpoint's step
  EXPECT_LT(resumed->front().value, 1000);
  auto loss = (*store)->ReadMetric(train_id, "loss");
  ASSERT_TRUE(loss.ok());
  ASSERT_FALSE(loss->empty());
  EXPECT_EQ(loss->back().step, 1000);  // the curve goes on to the last step, not restarted
  for (size_t i = 1; i < loss->size(); ++i) ASSERT_LT((*loss)[i - 1].step, (*loss)[i].step) << "step " << i;
}

// 2b. SIGTERM to every task (what Slurm sends at a time limit or preemption
//     without the warning, here `scancel --signal=TERM`, which spares the
//     batch shell): workers leave it to the controller, which stops cleanly;
//     the script requeues, and the second start runs only what was left.
TEST_F(SlurmTest, SigtermToTheTasksStopsCleanlyAndRequeues) {
  ScratchDir scratch("slurm-sigterm");
  const std::string out = scratch.File("run");
  const std::string id = Submit(scratch.path().string(), Q(kData + "naps.toml") + " --out " + Q(out) +
                                                             " --nodes 2 --ntasks-per-node 2 --time 10:00 --grace 60");
  ASSERT_FALSE(id.empty());
  // A second submission into the same directory while the job is queued or running is refused.
  auto again = testing::RunCommand(kShammie + " submit " + Q(kData + "naps.toml") + " --out " + Q(out) +
                                   " --nodes 2 --ntasks-per-node 2");
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("Slurm job " + id), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("already runs in"), std::string::npos) << again.output;
  // Wait until one nap is done (so there is something not to rerun).
  const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  bool one_done = false;
  while (!one_done && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!fs::exists(out + "/journal.bin")) continue;
    auto st = ReplayJournal(JournalPath(out));
    if (!st.ok()) continue;
    int64_t done = 0;
    for (const auto& [job, h] : st->jobs) done += h.done_attempt > 0 ? 1 : 0;
    one_done = done >= 1 && done < 6;
    if (done == 6) FAIL() << "every nap finished before the signal";
  }
  ASSERT_TRUE(one_done) << testing::ReadFileText(out + "/slurm/" + id + ".out");
  auto sig = testing::RunCommand("scancel --signal=TERM " + id);
  ASSERT_EQ(sig.exit_code, 0) << sig.output;

  auto jobs = WaitForEnd(id);
  const std::string log = testing::ReadFileText(out + "/slurm/" + id + ".out");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["JobState"], "COMPLETED") << log;
  EXPECT_EQ(jobs[0]["Restarts"], "1") << log;
  EXPECT_NE(log.find("requeueing job " + id), std::string::npos) << log;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m,
                                std::regex("6 jobs: 6 done \\(([0-9]+) stored by an earlier run, not rerun\\), 0 "
                                           "failed, 0 skipped, 0 not run; ([0-9]+) attempts")))
      << log;
  EXPECT_GE(std::stoi(m[1].str()), 1) << log;
  EXPECT_EQ(std::stoi(m[1].str()) + std::stoi(m[2].str()), 6) << log;
}

// 3. A 60-job sweep as a job array of 4 tasks ([slurm] array = 4), each with
//    its own results under shards/<i>/, merged into one results.h5 holding
//    every planned job exactly once.
TEST_F(SlurmTest, ArrayOf60JobsMergesIntoOneResultsFile) {
  ScratchDir scratch("slurm-array");
  const std::string out = scratch.File("run");
  const std::string id = Submit(scratch.path().string(), Q(kData + "sweep60.toml") + " --out " + Q(out));
  ASSERT_FALSE(id.empty());
  auto tasks = WaitForEnd(id);
  ASSERT_EQ(tasks.size(), 4u);
  for (auto& t : tasks) {
    EXPECT_EQ(t["JobState"], "COMPLETED") << "array task " << t["ArrayTaskId"] << ":\n"
                                          << testing::ReadFileText(out + "/slurm/" + id + "_" + t["ArrayTaskId"] +
                                                                   ".out");
  }
  auto merge = testing::RunCommand(kShammie + " merge " + Q(out));
  ASSERT_EQ(merge.exit_code, 0) << merge.output;
  EXPECT_NE(merge.output.find("4 shards"), std::string::npos) << merge.output;

  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  auto loaded = LoadExperiment(kData + "sweep60.toml", kinds);
  ASSERT_TRUE(loaded.ok());
  auto plan = BuildPlan(*loaded.spec);
  ASSERT_TRUE(plan.ok());
  std::set<std::string> planned;
  for (const auto& j : plan->jobs) planned.insert(j.id);
  ASSERT_EQ(planned.size(), 60u);

  auto store = storage::ResultStore::Open(out + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto rows = (*store)->ReadJobs();
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 60u);
  std::set<std::string> stored;
  for (const auto& row : *rows) {
    EXPECT_EQ(row.status, storage::JobStatus::kDone) << row.id << ": " << row.error;
    stored.insert(row.id);
  }
  EXPECT_EQ(stored, planned);
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ(runs->size(), 60u);
  for (const auto& run : *runs) {
    auto loss = (*store)->ReadMetric(run.job_id, "loss");
    ASSERT_TRUE(loss.ok()) << run.job_id;
    EXPECT_FALSE(loss->empty());
  }
  // Every shard ran a disjoint part: the shards' jobs add up to 60.
  auto status = testing::RunCommand(kShammie + " status " + Q(out));
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("all shards: 60 jobs: 60 done"), std::string::npos) << status.output;
  // `shammie analyze DIR` on the array's directory merges by itself.
  fs::remove(out + "/results.h5");
  auto analyze = testing::RunCommand(kShammie + " analyze " + Q(out));
  EXPECT_EQ(analyze.exit_code, 0) << analyze.output;
  EXPECT_NE(analyze.output.find("4 shards -> " + out + "/results.h5: 60 jobs (60 done), 60 runs"), std::string::npos)
      << analyze.output;
  EXPECT_TRUE(fs::exists(out + "/results.h5"));
}

// 5. `shammie run` in a batch script without srun: it launches mpirun,
//    which takes its ranks from the allocation (one per task: SLURM_NTASKS).
//    One node: mpirun across the two simulated nodes would put two hosts
//    named alike into Open MPI's shared-memory names (docs/slurm.md).
TEST_F(SlurmTest, RunInsideAnAllocationLaunchesMpirunOnItsTasks) {
  ScratchDir scratch("slurm-mpirun");
  const std::string out = scratch.File("run");
  auto sb = testing::RunCommand("cd " + Q(scratch.path().string()) +
                                " && sbatch --parsable -N1 --ntasks-per-node=2 -o " + Q(scratch.File("%j.out")) +
                                " --wrap " + Q(kShammie + " run " + Q(kData + "sweep60.toml") + " --out " + Q(out)));
  ASSERT_EQ(sb.exit_code, 0) << sb.output;
  std::string id = sb.output;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  auto jobs = WaitForEnd(id);
  const std::string log = testing::ReadFileText(scratch.File(id + ".out"));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["JobState"], "COMPLETED") << log;
  EXPECT_NE(log.find("60 jobs on 1 worker rank"), std::string::npos) << log;  // 2 tasks: controller + 1 worker
  auto store = storage::ResultStore::Open(out + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status().ToString() << "\n" << log;
  auto rows = (*store)->ReadJobs();
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 60u);
  for (const auto& row : *rows) EXPECT_EQ(row.status, storage::JobStatus::kDone) << row.error;
}

}  // namespace
}  // namespace shammie::orchestrator
