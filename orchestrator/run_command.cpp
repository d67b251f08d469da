// `shammie run` and `shammie status`.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "analysis/metric_summary.hpp"
#include "common/hash.hpp"
#include "cluster/launch_env.hpp"
#include "cluster/launcher.hpp"
#include "cluster/mpi_channel.hpp"
#include "orchestrator/commands.hpp"
#include "orchestrator/engine.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/run_journal.hpp"
#include "orchestrator/shard.hpp"
#include "cluster/slurm.hpp"
#include "orchestrator/spec_loader.hpp"
#include "workers/protocol.hpp"
#include "workers/worker.hpp"

namespace shammie::orchestrator {

namespace fs = std::filesystem;

namespace {

// Set by the environment of ranks that `shammie run` launched: the controller
// writes its exit code there (and exits 0, so mpirun adds no noise).
constexpr const char* kExitFileEnv = "SHAMMIE_EXIT_FILE";
constexpr const char* kProgressEnv = "SHAMMIE_PROGRESS";

std::atomic<int> g_stop_signals{0};
void OnStopSignal(int sig) {
  if (sig == SIGINT && g_stop_signals.load() > 0) {
    static const char msg[] = "\nshammie: second interrupt: aborting\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(130);
  }
  g_stop_signals.fetch_add(1);
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+") ==
                        std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string JoinArgs(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + ShellQuote(a);
  return s;
}

struct Loaded {
  ExperimentSpec spec;
  Plan plan;
  std::string dir;
};

// Loads and plans the spec; prints errors. nullopt = bad input.
std::optional<Loaded> LoadForRun(const RunArgs& args, const workers::KindRegistry& kinds, std::ostream& err) {
  std::optional<ExperimentSpec> spec = LoadOrReport(args.spec, kinds, err);
  if (!spec) return std::nullopt;
  auto plan = BuildPlan(*spec);
  if (!plan.ok()) {
    err << args.spec << ": " << plan.status().message() << "\n";
    return std::nullopt;
  }
  for (const auto& stage : spec->stages) {
    const workers::JobKind* kind = kinds.Find(stage.kind);
    if (!kind || !kind->run) {
      err << args.spec << ":" << stage.location.line << ":" << stage.location.column << ": stage.kind: job kind \""
          << stage.kind << "\" has no code in this build of shammie (it can be validated, not run)\n";
      return std::nullopt;
    }
  }
  if (!args.shard.empty()) {
    auto shard = ParseShard(args.shard);
    if (!shard.ok()) {
      err << "shammie run: " << shard.status().message() << "\n";
      return std::nullopt;
    }
    *plan = ShardOf(*plan, shard->index, shard->count);
  }
  Loaded l{std::move(*spec), std::move(*plan), args.out};
  if (l.dir.empty()) l.dir = l.spec.output;
  return l;
}

cluster::LaunchEnvironment Env() { return cluster::DetectLaunchEnvironment(cluster::ProcessEnvironment()); }

std::string ResumeHint(const RunArgs& args, const std::string& dir) {
  return "shammie run " + ShellQuote(args.spec) + " --out " + ShellQuote(dir) + " --resume";
}

// "learning_rate=0.1 noise=0.5" from a plan point.
std::string PointText(const nlohmann::json& point) {
  std::string s;
  for (auto it = point.begin(); it != point.end(); ++it) {
    s += (s.empty() ? "" : " ") + it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump());
  }
  return s.empty() ? "(no swept keys)" : s;
}

// For stages whose runs report `loss`: sweep points ranked by final loss,
// averaged over seeds. The run's "best configuration" table.
void PrintBestConfigurations(const Loaded& l, std::ostream& out) {
  auto store = storage::ResultStore::Open(l.dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  if (!store.ok()) return;
  for (const auto& stage : l.spec.stages) {
    auto rows = analysis::SummarizeMetric(**store, "loss", stage.name);
    if (!rows.ok() || rows->empty()) continue;
    auto groups = analysis::SummarizeOverSeeds(*rows, 0.1);
    if (!groups.ok() || groups->empty()) continue;
    std::map<std::string, std::string> point_of;  // canonical config -> swept values
    for (const auto& j : l.plan.jobs) {
      if (j.stage == stage.name) point_of.emplace(common::CanonicalJson(j.config), PointText(j.point));
    }
    std::vector<analysis::ConfigSummary> sorted = *groups;
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
      const double x = std::isnan(a.mean) ? INFINITY : a.mean, y = std::isnan(b.mean) ? INFINITY : b.mean;
      return x < y;
    });
    out << "\nstage \"" << stage.name << "\": final loss by configuration, mean over seeds with a 90% t-interval "
        << "(best first)\n";
    char line[512];
    std::snprintf(line, sizeof line, "  %-44s %5s %12s %27s\n", "configuration", "seeds", "loss", "90% interval");
    out << line;
    for (size_t i = 0; i < sorted.size() && i < 10; ++i) {
      const auto& g = sorted[i];
      auto it = point_of.find(g.config_json);
      const std::string label = it == point_of.end() ? "?" : it->second;
      char interval[64] = "";
      if (g.seeds > 1) std::snprintf(interval, sizeof interval, "[%.4g, %.4g]", g.lower, g.upper);
      std::snprintf(line, sizeof line, "  %-44s %5zu %12.4g %27s\n", label.substr(0, 44).c_str(), g.seeds, g.mean,
                    interval);
      out << line;
    }
    if (sorted.size() > 10) out << "  ... " << (sorted.size() - 10) << " more\n";
  }
}

int Launch(const RunArgs& args, const workers::KindRegistry& kinds, const cluster::LaunchEnvironment& env,
           std::ostream& out, std::ostream& err) {
  auto loaded = LoadForRun(args, kinds, err);
  if (!loaded) return kExitBadInput;
  const int ranks = args.ranks > 0 ? args.ranks : env.DefaultLocalRanks();
  if (ranks < 2) {
    err << "shammie run: --ranks " << ranks << ": a run needs at least 2 ranks (the controller and one worker)\n";
    return kExitBadInput;
  }
  if (args.resume && !fs::exists(JournalPath(loaded->dir))) {
    err << "shammie run: --resume: " << loaded->dir << " holds no earlier run (no journal.bin); run without --resume\n";
    return kExitBadInput;
  }
  auto mpirun = cluster::FindOnPath("mpirun");
  if (!mpirun) {
    err << "shammie run: mpirun not found on PATH: install Open MPI (Debian: openmpi-bin; scripts/setup.sh does)\n";
    return kExitInternal;
  }
  std::error_code ec;
  fs::create_directories(loaded->dir, ec);
  if (ec) {
    err << "shammie run: cannot create " << loaded->dir << ": " << ec.message() << "\n";
    return kExitBadInput;
  }
  const std::string exit_file = loaded->dir + "/.controller-exit";
  fs::remove(exit_file, ec);
  std::string progress = args.progress;
  if (progress == "auto") progress = ::isatty(2) ? "tty" : "plain";

  cluster::MpirunLaunch launch;
  launch.mpirun = *mpirun;
  launch.ranks = ranks;
  launch.as_root = ::geteuid() == 0;
  launch.program = {cluster::SelfExecutable(), "run", args.spec, "--out", loaded->dir,
                    "--stall-timeout", std::to_string(args.stall_timeout_s)};
  if (!args.shard.empty()) {
    launch.program.push_back("--shard");
    launch.program.push_back(args.shard);
  }
  launch.env = {{kExitFileEnv, exit_file},
                {kProgressEnv, progress},
                {"SHAMMIE_COMMAND_LINE", JoinArgs(args.argv)},
                {"OMP_NUM_THREADS", "1"},
                {"OMPI_MCA_mpi_yield_when_idle", "1"}};
  if (launch.as_root) {
    launch.env.push_back({"OMPI_ALLOW_RUN_AS_ROOT", "1"});
    launch.env.push_back({"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"});
  }
  out << std::flush;
  auto rc = cluster::RunMpirun(launch);
  if (!rc.ok()) {
    err << "shammie run: " << rc.status().message() << "\n";
    return kExitInternal;
  }
  std::ifstream in(exit_file);
  int code = -1;
  if (in >> code) {
    fs::remove(exit_file, ec);
    return code;
  }
  err << "shammie run: the MPI job ended without a result (mpirun exit status " << *rc
      << "); finished jobs are kept in " << loaded->dir << "/journal.bin. Resume with: "
      << ResumeHint(args, loaded->dir) << "\n";
  return kExitInternal;
}

int Controller(const RunArgs& args, const workers::KindRegistry& kinds, cluster::MpiRuntime& mpi,
               cluster::ControlChannel& channel, std::ostream& out, std::ostream& err) {
  auto shutdown_workers = [&] {
    for (int r = 1; r < channel.size(); ++r) (void)channel.Send(r, workers::kTagControl, workers::EncodeShutdown());
    (void)channel.FlushSends(std::chrono::seconds(10));
  };
  auto loaded = LoadForRun(args, kinds, err);
  if (!loaded) {
    shutdown_workers();
    return kExitBadInput;
  }
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);

  EngineOptions opt;
  opt.run_dir = loaded->dir;
  const char* cmdline = std::getenv("SHAMMIE_COMMAND_LINE");
  opt.command_line = cmdline ? cmdline : JoinArgs(args.argv);
  opt.stall_timeout = std::chrono::milliseconds(static_cast<int64_t>(args.stall_timeout_s * 1000));
  std::string progress = args.progress;
  if (const char* p = std::getenv(kProgressEnv)) progress = p;
  if (progress == "auto") progress = ::isatty(2) ? "tty" : "plain";
  opt.progress = progress == "tty" ? ProgressMode::kTty : progress == "none" ? ProgressMode::kNone : ProgressMode::kPlain;
  opt.progress_out = &err;
  opt.stop_requested = [] { return g_stop_signals.load() > 0; };

  out << "shammie: running " << loaded->spec.name << ": " << loaded->plan.jobs.size() << " jobs on "
      << (channel.size() - 1) << " worker rank" << (channel.size() == 2 ? "" : "s") << "; results in " << loaded->dir
      << "/results.h5\n"
      << std::flush;
  auto report = RunController(channel, loaded->spec, loaded->plan, opt);
  if (!report.ok()) {
    err << "shammie run: " << report.status().ToString() << "\n";
    return common::ExitCodeFor(report.status().code());
  }
  const EngineReport& r = *report;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f", r.seconds);
  out << "shammie: " << r.total << " jobs: " << r.done << " done";
  if (r.cached > 0) out << " (" << r.cached << " stored by an earlier run, not rerun)";
  out << ", " << r.failed << " failed, " << r.skipped << " skipped, " << r.not_run << " not run; " << r.attempts
      << " attempts in " << secs << " s\n";
  std::snprintf(secs, sizeof secs, "%.3f s, results.h5 %.3f s", r.jobs_seconds, r.results_seconds);
  out << "shammie: timing: jobs " << secs << "; " << r.metric_points << " metric points; controller CPU while jobs ran "
      << r.controller_cpu_seconds << " s\n";
  if (!r.stopped) PrintBestConfigurations(*loaded, out);
  if (r.failed > 0 || r.skipped > 0) {
    out << "shammie: see the errors with: shammie status " << ShellQuote(loaded->dir) << "\n";
  }
  if (r.stopped || r.not_run > 0) {
    out << "shammie: stopped with " << r.not_run << " jobs not run; resume with: " << ResumeHint(args, loaded->dir)
        << "\n";
  }
  // Under `shammie submit`'s script: tell it that work is left, so that it
  // requeues the Slurm job (cluster/slurm.hpp, the protocol's step 2).
  if (const char* stop_file = std::getenv("SHAMMIE_STOP_FILE"); stop_file && *stop_file && r.stopped && r.not_run > 0) {
    std::ofstream(stop_file) << r.not_run << " of " << r.total << " jobs left\n";
  }
  out << std::flush;
  if (r.workers_lost) {
    // A rank is stuck in job code: MPI_Finalize would wait for it forever.
    err << "shammie: ending the MPI job with MPI_Abort because a worker rank is stuck\n";
    if (const char* f = std::getenv(kExitFileEnv)) std::ofstream(f) << r.exit_code << "\n";
    mpi.Abort(r.exit_code == 0 ? 1 : r.exit_code);
  }
  return r.exit_code;
}

}  // namespace

int RunCommand(const RunArgs& args, const workers::KindRegistry& kinds, std::ostream& out, std::ostream& err) {
  const cluster::LaunchEnvironment env = Env();
  if (!env.inside_mpi) return Launch(args, kinds, env, out, err);

  auto mpi = cluster::MpiRuntime::Init(nullptr, nullptr);
  if (!mpi.ok()) {
    err << "shammie run: " << mpi.status().message() << "\n";
    return kExitInternal;
  }
  int code = 0;
  {
    std::unique_ptr<cluster::ControlChannel> channel = (*mpi)->WorldChannel();
    if ((*mpi)->rank() != 0) {
      signal(SIGINT, SIG_IGN);  // the controller decides; workers hear it as a cancel message
      signal(SIGUSR1, SIG_IGN);
      // Under srun, Slurm's own stop (time limit, preemption, scancel) sends
      // SIGTERM to every task: the controller decides here too, so running
      // jobs are cancelled and checkpoint before Slurm's SIGKILL (KillWait).
      // Under mpirun SIGTERM stays an abort (the launcher's second Ctrl-C).
      if (env.inside_slurm && !std::getenv("OMPI_COMM_WORLD_SIZE")) signal(SIGTERM, SIG_IGN);
      workers::WorkerOptions wopt;
      // Under Slurm the node's name (several slurmd may share a host); gangs are placed by it.
      const char* node = std::getenv("SLURMD_NODENAME");
      wopt.host = node && *node ? std::string(node) : (*mpi)->processor_name();
      common::Status s = workers::RunWorker(*channel, kinds, wopt);
      if (!s.ok()) {
        err << "shammie worker rank " << (*mpi)->rank() << ": " << s.ToString() << "\n";
        code = kExitInternal;
      }
    } else if (channel->size() < 2) {
      err << "shammie run: this MPI job has 1 rank; shammie needs at least 2 (the controller and a worker)\n";
      code = kExitBadInput;
    } else {
      code = Controller(args, kinds, **mpi, *channel, out, err);
      if (const char* f = std::getenv(kExitFileEnv)) {
        std::ofstream(f) << code << "\n";
        code = 0;
      }
    }
  }
  return code;
}

namespace {

// The job table of one run directory (its journal).
int JournalStatus(const std::string& dir, bool json, const nlohmann::json& slurm, std::ostream& out,
                  std::ostream& err) {
  const std::string path = JournalPath(dir);
  auto st = ReplayJournal(path);
  if (!st.ok()) {
    err << "shammie status: " << st.status().ToString() << "\n";
    return common::ExitCodeFor(st.status().code());
  }
  struct Counts {
    int64_t done = 0, failed = 0, skipped = 0, left = 0, interrupted = 0;
  };
  std::map<std::string, Counts> by_stage;
  std::vector<std::string> stage_order;
  Counts total;
  std::vector<const PlanEntry*> failed, skipped, left;
  for (const auto& e : st->plan) {
    if (!by_stage.count(e.stage)) stage_order.push_back(e.stage);
    Counts& c = by_stage[e.stage];
    auto it = st->jobs.find(e.id);
    const JobHistory* h = it == st->jobs.end() ? nullptr : &it->second;
    if (h && h->done_attempt > 0) {
      ++c.done, ++total.done;
    } else if (h && h->final_failure) {
      ++c.failed, ++total.failed;
      failed.push_back(&e);
    } else if (h && h->skipped) {
      ++c.skipped, ++total.skipped;
      skipped.push_back(&e);
    } else {
      ++c.left, ++total.left;
      if (h && h->running) ++c.interrupted, ++total.interrupted;
      left.push_back(&e);
    }
  }
  auto history = [&](const PlanEntry& e) -> const JobHistory* {
    auto it = st->jobs.find(e.id);
    return it == st->jobs.end() ? nullptr : &it->second;
  };
  const RunBegin* last = st->runs.empty() ? nullptr : &st->runs.back();
  const bool ended = !st->run_ended.empty() && st->run_ended.back();
  if (json) {
    nlohmann::json j;
    j["experiment"] = last ? last->experiment : "";
    j["runs"] = st->runs.size();
    j["last_run_ended_cleanly"] = ended;
    j["jobs"] = {{"total", st->plan.size()}, {"done", total.done}, {"failed", total.failed},
                 {"skipped", total.skipped}, {"left", total.left}, {"interrupted", total.interrupted}};
    j["failed"] = nlohmann::json::array();
    for (const auto* e : failed) {
      const JobHistory* h = history(*e);
      j["failed"].push_back({{"id", e->id}, {"job", e->label}, {"attempts", h->attempts}, {"error", h->error}});
    }
    j["skipped"] = nlohmann::json::array();
    for (const auto* e : skipped) j["skipped"].push_back({{"id", e->id}, {"job", e->label}, {"reason", history(*e)->error}});
    j["left"] = nlohmann::json::array();
    for (const auto* e : left) j["left"].push_back({{"id", e->id}, {"job", e->label}});
    if (!slurm.empty()) j["slurm"] = slurm;
    out << j.dump(2) << "\n";
    return kExitOk;
  }
  out << "experiment " << (last ? last->experiment : "?") << " in " << dir << ": " << st->runs.size() << " run"
      << (st->runs.size() == 1 ? "" : "s") << "; the last one "
      << (ended ? "ended (finished or stopped)" : "did not end cleanly (killed or still running)") << "\n";
  out << st->plan.size() << " jobs: " << total.done << " done, " << total.failed << " failed, " << total.skipped
      << " skipped, " << total.left << " left";
  if (total.interrupted > 0) out << " (" << total.interrupted << " were running when the run was interrupted)";
  out << "\n\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-24s %8s %8s %8s %8s\n", "stage", "done", "failed", "skipped", "left");
  out << line;
  for (const auto& name : stage_order) {
    const Counts& c = by_stage[name];
    std::snprintf(line, sizeof line, "  %-24s %8lld %8lld %8lld %8lld\n", name.c_str(), static_cast<long long>(c.done),
                  static_cast<long long>(c.failed), static_cast<long long>(c.skipped), static_cast<long long>(c.left));
    out << line;
  }
  if (!failed.empty()) {
    out << "\nfailed:\n";
    for (size_t i = 0; i < failed.size() && i < 50; ++i) {
      const JobHistory* h = history(*failed[i]);
      out << "  " << failed[i]->label << "  " << failed[i]->id << "  after " << h->attempts << " attempt"
          << (h->attempts == 1 ? "" : "s") << ": " << h->error << "\n";
    }
    if (failed.size() > 50) out << "  ... and " << failed.size() - 50 << " more (--json lists all)\n";
  }
  if (!skipped.empty()) {
    out << "\nskipped:\n";
    for (size_t i = 0; i < skipped.size() && i < 20; ++i) {
      out << "  " << skipped[i]->label << "  " << skipped[i]->id << ": " << history(*skipped[i])->error << "\n";
    }
    if (skipped.size() > 20) out << "  ... and " << skipped.size() - 20 << " more (--json lists all)\n";
  }
  if (!left.empty()) {
    out << "\nleft: " << left.size() << " jobs";
    if (last) out << "; run the same file into " << dir << " again to run them (done jobs are not rerun)";
    out << "\n";
  }
  return kExitOk;
}

struct Submission {
  std::string job_id;
  int64_t array_tasks = 0;
  std::string time;
};

std::vector<Submission> ReadSubmissions(const std::string& dir) {
  std::vector<Submission> subs;
  std::ifstream in(SlurmJobsFile(dir));
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    Submission s;
    if (words >> s.job_id >> s.array_tasks >> s.time) subs.push_back(s);
  }
  return subs;
}

// Done / failed / skipped / left over a journal's plan.
struct ShardCounts {
  int64_t total = 0, done = 0, failed = 0, skipped = 0, left = 0;
  bool ended = false;
};
common::Result<ShardCounts> CountJournal(const std::string& dir) {
  SHAMMIE_ASSIGN_OR_RETURN(JournalState st, ReplayJournal(JournalPath(dir)));
  ShardCounts c;
  c.total = static_cast<int64_t>(st.plan.size());
  for (const auto& e : st.plan) {
    auto it = st.jobs.find(e.id);
    const JobHistory* h = it == st.jobs.end() ? nullptr : &it->second;
    if (h && h->done_attempt > 0) {
      ++c.done;
    } else if (h && h->final_failure) {
      ++c.failed;
    } else if (h && h->skipped) {
      ++c.skipped;
    } else {
      ++c.left;
    }
  }
  c.ended = !st.run_ended.empty() && st.run_ended.back();
  return c;
}

// Shard directories DIR/shards/<index>, by index.
std::vector<std::pair<int64_t, std::string>> ShardDirs(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> shards;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir + "/shards", ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    shards.emplace_back(std::stoll(name), entry.path().string());
  }
  std::sort(shards.begin(), shards.end());
  return shards;
}

}  // namespace

std::string SlurmDir(const std::string& run_dir) { return run_dir + "/slurm"; }
std::string SlurmJobsFile(const std::string& run_dir) { return SlurmDir(run_dir) + "/jobs.txt"; }

int StatusCommand(const std::string& dir, bool json, std::ostream& out, std::ostream& err) {
  const std::vector<Submission> subs = ReadSubmissions(dir);
  const bool has_journal = fs::exists(JournalPath(dir));
  const auto shards = ShardDirs(dir);
  if (!has_journal && shards.empty() && subs.empty()) {
    err << "shammie status: " << dir << " holds no run (no journal.bin) and no Slurm submission\n";
    return kExitBadInput;
  }
  nlohmann::json slurm = nlohmann::json::array();
  if (!subs.empty()) {
    std::vector<std::string> ids;
    for (const auto& s : subs) ids.push_back(s.job_id);
    for (const auto& s : cluster::QueryJobStates(ids)) {
      slurm.push_back({{"job", s.id}, {"state", s.state}, {"reason", s.reason}, {"elapsed", s.elapsed},
                       {"restarts", s.restarts}});
    }
    if (!json) {
      out << "Slurm: " << subs.size() << " submission" << (subs.size() == 1 ? "" : "s") << " (" << SlurmJobsFile(dir)
          << "); script " << SlurmDir(dir) << "/job.sbatch\n";
      char line[256];
      std::snprintf(line, sizeof line, "  %-14s %-12s %-10s %-8s %s\n", "job", "state", "elapsed", "restarts",
                    "reason");
      out << line;
      for (const auto& s : slurm) {
        const int64_t restarts = s["restarts"].get<int64_t>();
        std::snprintf(line, sizeof line, "  %-14s %-12s %-10s %-8s %s\n", s["job"].get<std::string>().c_str(),
                      s["state"].get<std::string>().c_str(), s["elapsed"].get<std::string>().c_str(),
                      restarts < 0 ? "-" : std::to_string(restarts).c_str(), s["reason"].get<std::string>().c_str());
        out << line;
      }
      out << "\n";
    }
  }
  if (has_journal) return JournalStatus(dir, json, slurm, out, err);
  if (shards.empty()) {
    if (json) {
      out << nlohmann::json{{"slurm", slurm}, {"jobs", nullptr}}.dump(2) << "\n";
    } else {
      out << "no job has started yet in " << dir << "\n";
    }
    return kExitOk;
  }
  // A job array: one run directory per shard.
  nlohmann::json j = {{"slurm", slurm}, {"shards", nlohmann::json::array()}};
  ShardCounts total;
  char line[256];
  if (!json) {
    std::snprintf(line, sizeof line, "  %-8s %8s %8s %8s %8s %8s  %s\n", "shard", "jobs", "done", "failed", "skipped",
                  "left", "last run");
    out << "job array: " << shards.size() << " shard directories under " << dir << "/shards\n" << line;
  }
  for (const auto& [index, shard_dir] : shards) {
    if (!fs::exists(JournalPath(shard_dir))) {
      j["shards"].push_back({{"shard", index}, {"started", false}});
      if (!json) out << "  " << index << ": not started\n";
      continue;
    }
    auto c = CountJournal(shard_dir);
    if (!c.ok()) {
      err << "shammie status: " << shard_dir << ": " << c.status().ToString() << "\n";
      return common::ExitCodeFor(c.status().code());
    }
    total.total += c->total, total.done += c->done, total.failed += c->failed, total.skipped += c->skipped,
        total.left += c->left;
    j["shards"].push_back({{"shard", index}, {"started", true}, {"total", c->total}, {"done", c->done},
                           {"failed", c->failed}, {"skipped", c->skipped}, {"left", c->left}, {"ended", c->ended}});
    if (!json) {
      std::snprintf(line, sizeof line, "  %-8lld %8lld %8lld %8lld %8lld %8lld  %s\n", static_cast<long long>(index),
                    static_cast<long long>(c->total), static_cast<long long>(c->done),
                    static_cast<long long>(c->failed), static_cast<long long>(c->skipped),
                    static_cast<long long>(c->left), c->ended ? "ended" : "running or killed");
      out << line;
    }
  }
  j["jobs"] = {{"total", total.total}, {"done", total.done}, {"failed", total.failed}, {"skipped", total.skipped},
               {"left", total.left}};
  if (json) {
    out << j.dump(2) << "\n";
  } else {
    out << "all shards: " << total.total << " jobs: " << total.done << " done, " << total.failed << " failed, "
        << total.skipped << " skipped, " << total.left << " left; details: shammie status " << ShellQuote(dir)
        << "/shards/N; one results.h5: shammie merge " << ShellQuote(dir) << "\n";
  }
  return kExitOk;
}

}  // namespace shammie::orchestrator
