#include "orchestrator/engine.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <iostream>
#include <map>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "common/build_info.hpp"
#include "common/hash.hpp"
#include "common/wire.hpp"
#include "orchestrator/adaptive.hpp"
#include "orchestrator/run_journal.hpp"
#include "storage/journal.hpp"
#include "storage/result_store.hpp"
#include "workers/protocol.hpp"

namespace shammie::orchestrator {

using common::Status;
using common::StatusCode;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double WallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// CPU time of this process (all threads), user + system.
double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

std::string IsoTime(double epoch_s) {
  const auto t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string JoinRanks(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ",") + std::to_string(r);
  return s;
}

Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return common::Internal("cannot open " + path + " to fsync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : common::Internal("fsync " + path + " failed");
}

std::string PlanHash(const Plan& plan) {
  std::string ids;
  ids.reserve(plan.jobs.size() * 33);
  for (const auto& j : plan.jobs) ids += j.id + ",";
  return common::Hash128Hex(ids);
}

enum class State : uint8_t { kWaiting, kReady, kDelayed, kRunning, kDone, kFailed, kSkipped, kCancelled };

struct JobRt {
  State state = State::kWaiting;
  bool cached = false;
  int waiting = 0;             // inputs not done yet
  uint32_t attempt = 0;        // highest attempt number so far (all runs)
  int failures = 0;            // failed attempts in this run
  uint64_t task = 0;           // current attempt's task id
  std::vector<int> ranks;
  int members_done = 0;
  Status first_error;
  Clock::time_point started, not_before;
  std::string config_json;     // filled at first dispatch
  std::map<std::string, std::string> artifacts;  // name -> path as journaled (latest of any attempt)
};

struct WorkerRt {
  bool lost = false;
  std::deque<uint64_t> tasks;  // outstanding, in assignment order
  Clock::time_point last_heard;
  std::string host;
};

struct StageStats {
  double seconds = 0;
  int64_t count = 0;
};

class Controller {
 public:
  Controller(cluster::ControlChannel& ch, const ExperimentSpec& spec, const Plan& plan, const EngineOptions& opt)
      : ch_(ch), spec_(spec), plan_(plan), opt_(opt),
        progress_(opt.progress, opt.progress_out ? *opt.progress_out : std::cerr, opt.plain_progress_every) {}

  common::Result<EngineReport> Run() {
    start_ = Clock::now();
    std::error_code ec;
    fs::create_directories(opt_.run_dir, ec);
    if (ec) return common::InvalidArgument("cannot create run directory " + opt_.run_dir + ": " + ec.message());
    SHAMMIE_ASSIGN_OR_RETURN(history_, ReplayJournal(JournalPath(opt_.run_dir)));
    SHAMMIE_RETURN_IF_ERROR(LoadAdaptiveHistory());
    SHAMMIE_ASSIGN_OR_RETURN(journal_, storage::JournalWriter::Open(JournalPath(opt_.run_dir), opt_.journal_sync));
    SHAMMIE_RETURN_IF_ERROR(CheckGangsFit());
    Init();

    RunBegin begin{WallNow(), spec_.name, spec_.spec_hash, opt_.command_line, spec_.canonical_text,
                   static_cast<int64_t>(plan_.jobs.size())};
    journal_->Append(static_cast<uint8_t>(RecordType::kRunBegin), EncodeRunBegin(begin));
    // Adaptive sweeps whose rounds are settled (or done in the journal)
    // propose now; the plan record follows, with their jobs.
    for (auto& [name, state] : adaptive_) Extend(state);
    JournalPlan(history_.plan_hash);
    SHAMMIE_RETURN_IF_ERROR(journal_->Sync());

    const Clock::time_point loop_start = Clock::now();
    const double cpu_start = CpuSeconds();
    Status loop = Loop();
    jobs_seconds_ = std::chrono::duration<double>(Clock::now() - loop_start).count();
    loop_cpu_seconds_ = CpuSeconds() - cpu_start;
    // Whatever happened, tell the workers and make the journal durable.
    ShutdownWorkers();
    journal_->Append(static_cast<uint8_t>(RecordType::kRunEnd),
                     EncodeRunEnd(WallNow(), stopping_ ? "stopped" : (loop.ok() ? "finished" : loop.message())));
    Status synced = journal_->Sync();
    progress_.Update(Snapshot(), /*force=*/true);
    progress_.Finish();
    if (!loop.ok()) return loop;
    SHAMMIE_RETURN_IF_ERROR(synced);
    journal_.reset();
    const Clock::time_point results_start = Clock::now();
    SHAMMIE_RETURN_IF_ERROR(WriteResultsFile(opt_.run_dir, spec_, plan_, opt_.command_line));
    results_seconds_ = std::chrono::duration<double>(Clock::now() - results_start).count();
    return MakeReport();
  }

  // Tells every worker to exit, once.
  void ShutdownWorkers() {
    if (shutdown_sent_) return;
    shutdown_sent_ = true;
    for (int r = 1; r < ch_.size(); ++r) (void)ch_.Send(r, workers::kTagControl, workers::EncodeShutdown());
    (void)ch_.FlushSends(std::chrono::seconds(10));
  }

 private:
  int workers() const { return ch_.size() - 1; }

  Status CheckGangsFit() {
    if (workers() < 1) return common::InvalidArgument("a run needs at least 2 ranks: the controller and a worker");
    for (const auto& j : plan_.jobs) {
      if (j.resources.ranks > workers()) {
        return common::InvalidArgument("stage \"" + j.stage + "\" needs resources.ranks = " +
                                       std::to_string(j.resources.ranks) + " but this run has " +
                                       std::to_string(workers()) + " worker ranks (run with --ranks " +
                                       std::to_string(j.resources.ranks + 1) + " or more)");
      }
    }
    return Status::Ok();
  }

  // An artifact's absolute path (journaled paths are relative to the run directory).
  std::string AbsoluteArtifact(const std::string& path) const {
    return !path.empty() && path.front() == '/' ? path : run_dir_abs_ + "/" + path;
  }
  std::string RelativeArtifact(const std::string& path) const {
    const std::string prefix = run_dir_abs_ + "/";
    return path.compare(0, prefix.size(), prefix) == 0 ? path.substr(prefix.size()) : path;
  }
  // The first recorded artifact whose file is gone (a done job whose
  // checkpoint was deleted runs again), or "".
  std::string MissingArtifact(const JobRt& j) const {
    std::error_code ec;
    for (const auto& [name, path] : j.artifacts) {
      if (!fs::exists(AbsoluteArtifact(path), ec)) return AbsoluteArtifact(path);
    }
    return "";
  }
  std::vector<workers::Artifact> ArtifactsOf(const PlannedJob& pj, const JobRt& j) const {
    std::vector<workers::Artifact> out;
    std::error_code ec;
    for (const auto& [name, path] : j.artifacts) {
      std::string abs = AbsoluteArtifact(path);
      if (fs::exists(abs, ec)) out.push_back({pj.id, name, std::move(abs)});
    }
    return out;
  }

  // Job i (already in plan_, jobs_, dependents_ and index_): its history
  // (done in the journal with its files still there = cached) and its edges.
  void Admit(int i) {
    const PlannedJob& pj = plan_.jobs[static_cast<size_t>(i)];
    JobRt& j = jobs_[static_cast<size_t>(i)];
    if (auto it = history_.jobs.find(pj.id); it != history_.jobs.end()) {
      j.attempt = it->second.attempts;
      j.artifacts = it->second.artifacts;
      if (it->second.done_attempt > 0 && MissingArtifact(j).empty()) {
        j.state = State::kDone;
        j.cached = true;
        ++cached_;
        ++done_;
      }
    }
    for (const auto& in : pj.inputs) {
      const int k = index_.at(in);
      dependents_[static_cast<size_t>(k)].push_back(i);
      if (jobs_[static_cast<size_t>(k)].state != State::kDone) ++j.waiting;
    }
  }

  void Init() {
    run_dir_abs_ = fs::absolute(opt_.run_dir).lexically_normal().string();
    while (run_dir_abs_.size() > 1 && run_dir_abs_.back() == '/') run_dir_abs_.pop_back();
    const size_t n = plan_.jobs.size();
    jobs_.resize(n);
    dependents_.resize(n);
    index_.reserve(n);
    for (size_t i = 0; i < n; ++i) index_[plan_.jobs[i].id] = static_cast<int>(i);
    for (size_t i = 0; i < n; ++i) Admit(static_cast<int>(i));
    for (size_t i = 0; i < n; ++i) {
      if (jobs_[i].state == State::kWaiting && jobs_[i].waiting == 0) MakeReady(static_cast<int>(i));
    }
    for (const Stage& stage : spec_.stages) {
      if (!stage.sweep.adaptive.adaptive()) continue;
      AdaptiveState& a = adaptive_[stage.name];
      a.stage = &stage;
      for (size_t i = 0; i < n; ++i) {
        if (plan_.jobs[i].stage == stage.name) a.jobs.push_back(static_cast<int>(i));
      }
    }
    workers_.resize(static_cast<size_t>(ch_.size()));
    for (auto& w : workers_) w.last_heard = Clock::now();
  }

  // --- adaptive sweeps (orchestrator/adaptive.hpp) ---
  struct AdaptiveState {
    const Stage* stage = nullptr;
    std::vector<int> jobs;  // plan indices, in proposal order
    int64_t round = 0;
    bool exhausted = false;  // no more proposals (budget spent, an error, or nothing new)
  };

  // The last values of the adaptive stages' metrics of done jobs in the journal.
  Status LoadAdaptiveHistory() {
    bool any = false;
    for (const Stage& s : spec_.stages) any |= s.sweep.adaptive.adaptive();
    if (!any) return Status::Ok();
    std::unordered_map<std::string, uint32_t> done;
    for (const auto& [id, h] : history_.jobs) {
      if (h.done_attempt > 0) done[id] = h.done_attempt;
    }
    ResultVisitor visitor;
    visitor.metrics = [&](const std::string& id, const std::string& name, std::span<const storage::MetricPoint> points) {
      if (!points.empty()) last_metric_[id][name] = points.back().value;
      return Status::Ok();
    };
    visitor.table = [](const std::string&, const std::string&, const storage::Table&) { return Status::Ok(); };
    return VisitResults(JournalPath(opt_.run_dir), done, visitor);
  }

  // Appends the plan record when the plan changed since `previous_hash`.
  void JournalPlan(const std::string& previous_hash) {
    const std::string plan_hash = PlanHash(plan_);
    journaled_plan_hash_ = plan_hash;
    if (plan_hash == previous_hash) return;
    std::vector<PlanEntry> entries;
    entries.reserve(plan_.jobs.size());
    for (const auto& j : plan_.jobs) entries.push_back({j.id, j.stage, j.kind, j.Label(), j.inputs});
    journal_->Append(static_cast<uint8_t>(RecordType::kPlan), EncodePlan(plan_hash, entries));
  }

  void ExtendAndJournal(AdaptiveState& a) {
    if (Extend(a)) JournalPlan(journaled_plan_hash_);
  }

  // When every job of the sweep has settled and budget is left, proposes the
  // next round and adds its jobs (those the journal holds as done count at
  // once, and the next round follows). Returns whether jobs were added.
  bool Extend(AdaptiveState& a) {
    const AdaptiveSweep& spec = a.stage->sweep.adaptive;
    bool added_any = false;
    while (!a.exhausted && !stopping_ && !a.jobs.empty()) {
      for (int i : a.jobs) {
        const State s = jobs_[static_cast<size_t>(i)].state;
        if (s == State::kWaiting || s == State::kReady || s == State::kDelayed || s == State::kRunning) return added_any;
        if (s == State::kSkipped || s == State::kCancelled) {
          a.exhausted = true;  // its inputs failed, or a stop: proposing more is pointless
          return added_any;
        }
      }
      const int64_t left = spec.budget - static_cast<int64_t>(a.jobs.size());
      if (left <= 0) {
        a.exhausted = true;
        return added_any;
      }
      std::ostream& out = opt_.progress_out ? *opt_.progress_out : std::cerr;
      std::vector<AdaptiveObservation> observed;
      for (int i : a.jobs) {
        const PlannedJob& pj = plan_.jobs[static_cast<size_t>(i)];
        AdaptiveObservation o;
        o.point = pj.point;
        if (jobs_[static_cast<size_t>(i)].state == State::kDone) {
          auto it = last_metric_.find(pj.id);
          std::vector<double> values;
          for (const auto& name : spec.objectives) {
            if (it == last_metric_.end() || !it->second.count(name)) {
              // A misspelt objective would silently turn the search into
              // random proposals: stop and say which metrics there are.
              std::string reported;
              if (it != last_metric_.end()) {
                for (const auto& [metric, value] : it->second) reported += (reported.empty() ? "" : ", ") + metric;
              }
              a.exhausted = true;
              progress_.Finish();
              out << "shammie: stage " << a.stage->name << ": job " << pj.Label() << " reported no metric \"" << name
                  << "\" (it reported: " << (reported.empty() ? "none" : reported)
                  << "); check sweep.objectives. No more proposals.\n";
              return added_any;
            }
            values.push_back(it->second.at(name));
          }
          o.objectives = std::move(values);
        }
        observed.push_back(std::move(o));
      }
      ++a.round;
      auto round = ProposeRound(spec_, *a.stage, observed, static_cast<size_t>(std::min<int64_t>(left, spec.batch)), a.round);
      if (!round.ok()) {
        a.exhausted = true;
        progress_.Finish();
        out << "shammie: stage " << a.stage->name << ": no more proposals: " << round.status().ToString() << "\n";
        return added_any;
      }
      const PlannedJob like = plan_.jobs[static_cast<size_t>(a.jobs.front())];
      size_t added = 0, fresh = 0;
      for (const auto& point : round->points) {
        PlannedJob job = AdaptiveJob(like, point);
        if (index_.count(job.id)) continue;  // an integer axis rounded onto an evaluated point
        const int i = static_cast<int>(plan_.jobs.size());
        index_[job.id] = i;
        plan_.jobs.push_back(std::move(job));
        jobs_.emplace_back();
        dependents_.emplace_back();
        a.jobs.push_back(i);
        ++added;
        Admit(i);
        const JobRt& j = jobs_.back();
        if (j.state == State::kWaiting && j.waiting == 0) MakeReady(i);
        if (j.state != State::kDone) ++fresh;
      }
      if (opt_.progress != ProgressMode::kNone && fresh > 0) {
        progress_.Finish();
        out << "shammie: stage " << a.stage->name << " round " << a.round << ": " << fresh << " new point"
            << (fresh == 1 ? "" : "s") << " (" << round->criterion << "), " << a.jobs.size() << " of " << spec.budget
            << " evaluations\n";
      }
      if (added == 0) {
        a.exhausted = true;  // nothing new to try
        return added_any;
      }
      added_any = true;
      if (fresh > 0) return true;  // wait for this round's results
    }
    return added_any;
  }

  // --- the main loop ---
  Status Loop() {
    Clock::time_point last_stall_check = Clock::now();
    for (;;) {
      if (!stopping_ && opt_.stop_requested && opt_.stop_requested()) BeginStop();
      if (Settled()) return Status::Ok();
      if (!stopping_) {
        PromoteDelayed();
        SHAMMIE_RETURN_IF_ERROR(Dispatch());
      }
      // Wait for the next message (bounded, so timers and signals are seen).
      auto wait = std::chrono::milliseconds(50);
      if (!delayed_.empty()) {
        const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(NextDelayed() - Clock::now());
        wait = std::clamp(until, std::chrono::milliseconds(0), wait);
      }
      SHAMMIE_ASSIGN_OR_RETURN(auto msg, ch_.Receive(wait, workers::kTagReport));
      int handled = 0;
      while (msg) {
        SHAMMIE_RETURN_IF_ERROR(Handle(*msg));
        if (++handled >= 512) break;
        SHAMMIE_ASSIGN_OR_RETURN(msg, ch_.Receive(cluster::Micros(0), workers::kTagReport));
      }
      SHAMMIE_RETURN_IF_ERROR(journal_->Write());
      if (Clock::now() - last_stall_check > std::chrono::milliseconds(200)) {
        CheckStalls();
        last_stall_check = Clock::now();
      }
      if (progress_.Due()) progress_.Update(Snapshot());
    }
  }

  bool Settled() const {
    if (running_ > 0) return false;
    if (stopping_) return true;
    if (!ready_.empty() || !delayed_.empty()) {
      return AliveWorkers() == 0;  // nobody left to run them
    }
    return true;
  }

  int AliveWorkers() const {
    int alive = 0;
    for (int r = 1; r < ch_.size(); ++r) alive += workers_[static_cast<size_t>(r)].lost ? 0 : 1;
    return alive;
  }

  void BeginStop() {
    stopping_ = true;
    for (int r = 1; r < ch_.size(); ++r) {
      if (!workers_[static_cast<size_t>(r)].tasks.empty()) {
        (void)ch_.Send(r, workers::kTagCancel, workers::EncodeCancel());
      }
    }
  }

  // --- scheduling ---
  struct ReadyOrder {
    const std::vector<PlannedJob>* plan;
    bool operator()(int a, int b) const {  // true: a after b
      const auto& ja = (*plan)[static_cast<size_t>(a)];
      const auto& jb = (*plan)[static_cast<size_t>(b)];
      if (ja.critical_path != jb.critical_path) return ja.critical_path < jb.critical_path;
      return a > b;
    }
  };

  void MakeReady(int i) {
    jobs_[static_cast<size_t>(i)].state = State::kReady;
    ready_.push(i);
  }

  Clock::time_point NextDelayed() const {
    Clock::time_point t = Clock::time_point::max();
    for (int i : delayed_) t = std::min(t, jobs_[static_cast<size_t>(i)].not_before);
    return t;
  }

  void PromoteDelayed() {
    if (delayed_.empty()) return;
    const auto now = Clock::now();
    for (auto it = delayed_.begin(); it != delayed_.end();) {
      if (jobs_[static_cast<size_t>(*it)].not_before <= now) {
        MakeReady(*it);
        it = delayed_.erase(it);
      } else {
        ++it;
      }
    }
  }

  int PrefetchFor(const std::string& stage) const {
    auto it = stage_stats_.find(stage);
    if (it == stage_stats_.end() || it->second.count < 2) return 1;
    const double mean = it->second.seconds / static_cast<double>(it->second.count);
    // Keep about 5 ms of work queued per worker: enough to hide the round trip.
    const double depth = 0.005 / std::max(mean, 1e-7);
    return static_cast<int>(std::clamp(depth, 1.0, static_cast<double>(opt_.max_prefetch)));
  }

  // k idle workers on as few hosts as possible (hosts as the workers named
  // them: the Slurm node, else the MPI processor name): the host with the
  // fewest idle workers that still holds the whole gang, else hosts with the
  // most idle workers first. Ranks ascending (gang rank 0 = lowest). Empty
  // when fewer than k workers are idle.
  std::vector<int> ChooseGang(int64_t k) const {
    std::vector<std::pair<std::string, std::vector<int>>> hosts;  // in order of their lowest idle rank
    int64_t idle = 0;
    for (int r = 1; r < ch_.size(); ++r) {
      const WorkerRt& w = workers_[static_cast<size_t>(r)];
      if (w.lost || !w.tasks.empty()) continue;
      auto it = std::find_if(hosts.begin(), hosts.end(), [&](const auto& h) { return h.first == w.host; });
      if (it == hosts.end()) it = hosts.insert(hosts.end(), {w.host, {}});
      it->second.push_back(r);
      ++idle;
    }
    if (idle < k) return {};
    std::vector<int> gang;
    const auto fits = [&](const auto& h) { return static_cast<int64_t>(h.second.size()) >= k; };
    auto best = hosts.end();
    for (auto it = hosts.begin(); it != hosts.end(); ++it) {
      if (fits(*it) && (best == hosts.end() || it->second.size() < best->second.size())) best = it;
    }
    if (best != hosts.end()) {
      gang.assign(best->second.begin(), best->second.begin() + k);
      return gang;
    }
    std::stable_sort(hosts.begin(), hosts.end(), [](const auto& a, const auto& b) { return a.second.size() > b.second.size(); });
    for (const auto& h : hosts) {
      for (int r : h.second) {
        if (static_cast<int64_t>(gang.size()) < k) gang.push_back(r);
      }
    }
    std::sort(gang.begin(), gang.end());
    return gang;
  }

  Status Dispatch() {
    std::unordered_map<int, std::vector<workers::Task>> batches;
    while (!ready_.empty()) {
      const int i = ready_.top();
      const PlannedJob& pj = plan_.jobs[static_cast<size_t>(i)];
      std::vector<int> gang;
      if (pj.resources.ranks > 1) {
        gang = ChooseGang(pj.resources.ranks);
        if (gang.empty()) break;  // wait for idle workers
      } else {
        int best = -1;
        size_t best_load = 0;
        for (int r = 1; r < ch_.size(); ++r) {
          const WorkerRt& w = workers_[static_cast<size_t>(r)];
          if (w.lost) continue;
          if (best < 0 || w.tasks.size() < best_load) {
            best = r;
            best_load = w.tasks.size();
          }
        }
        if (best < 0 || best_load >= static_cast<size_t>(PrefetchFor(pj.stage))) break;
        gang.push_back(best);
      }
      ready_.pop();
      const workers::Task task = StartAttempt(i, gang);
      for (int r : gang) batches[r].push_back(task);
    }
    for (auto& [rank, tasks] : batches) {
      if (tasks.empty()) continue;
      SHAMMIE_RETURN_IF_ERROR(ch_.Send(rank, workers::kTagControl, workers::EncodeAssign(tasks)));
    }
    return Status::Ok();
  }

  workers::Task StartAttempt(int i, const std::vector<int>& gang) {
    JobRt& j = jobs_[static_cast<size_t>(i)];
    const PlannedJob& pj = plan_.jobs[static_cast<size_t>(i)];
    if (j.config_json.empty()) j.config_json = pj.config.dump();
    j.state = State::kRunning;
    j.attempt += 1;
    j.task = ++next_task_;
    j.ranks = gang;
    j.members_done = 0;
    j.first_error = Status::Ok();
    j.started = Clock::now();
    task_job_[j.task] = i;
    ++running_;
    ++attempts_;
    const std::string ranks = JoinRanks(gang);
    const std::string& host = workers_[static_cast<size_t>(gang[0])].host;
    journal_->Append(static_cast<uint8_t>(RecordType::kStart), EncodeStart(pj.id, j.attempt, ranks, host, WallNow()));
    workers::Task t;
    t.task = j.task;
    t.job_id = pj.id;
    t.kind = pj.kind;
    t.config_json = j.config_json;
    t.seed = static_cast<uint64_t>(pj.seed);
    t.attempt = j.attempt;
    t.gang_id = j.task;
    t.gang = gang;
    t.isolation = pj.resources.isolation == "process" ? workers::Isolation::kProcess : workers::Isolation::kThread;
    t.time_limit_ms = pj.resources.time_limit_s ? *pj.resources.time_limit_s * 1000 : 0;
    t.artifact_dir = run_dir_abs_ + "/checkpoints";
    for (const auto& in : pj.inputs) {
      const int k = index_.at(in);
      auto a = ArtifactsOf(plan_.jobs[static_cast<size_t>(k)], jobs_[static_cast<size_t>(k)]);
      t.inputs.insert(t.inputs.end(), a.begin(), a.end());
    }
    t.previous = ArtifactsOf(pj, j);
    for (int r : gang) workers_[static_cast<size_t>(r)].tasks.push_back(j.task);
    return t;
  }

  // --- messages ---
  Status Handle(const cluster::Message& msg) {
    if (msg.source <= 0 || msg.source >= ch_.size()) return Status::Ok();
    WorkerRt& w = workers_[static_cast<size_t>(msg.source)];
    w.last_heard = Clock::now();
    auto type = workers::PeekType(msg.payload);
    if (!type.ok()) return type.status().WithContext("message from rank " + std::to_string(msg.source));
    switch (*type) {
      case workers::MsgType::kHello: {
        SHAMMIE_ASSIGN_OR_RETURN(auto hello, workers::DecodeHello(msg.payload));
        w.host = hello.host;
        return Status::Ok();
      }
      case workers::MsgType::kHeartbeat:
        return Status::Ok();
      case workers::MsgType::kMetrics: {
        SHAMMIE_ASSIGN_OR_RETURN(auto m, workers::DecodeMetrics(msg.payload));
        const int i = CurrentJob(m.task);
        if (i < 0) return Status::Ok();  // a late report of an attempt already settled
        const PlannedJob& pj = plan_.jobs[static_cast<size_t>(i)];
        const uint32_t attempt = jobs_[static_cast<size_t>(i)].attempt;
        if (adaptive_.count(pj.stage)) {
          for (const auto& s : m.series) {
            if (!s.points.empty()) last_metric_[pj.id][s.name] = s.points.back().value;
          }
        }
        for (const auto& s : m.series) {
          const std::string header = EncodeMetricsHeader(pj.id, attempt, s.name, s.points.size());
          const std::string_view raw(reinterpret_cast<const char*>(s.points.data()), s.points.size() * 16);
          journal_->Append(static_cast<uint8_t>(RecordType::kMetrics), {header, raw});
          metric_points_ += static_cast<int64_t>(s.points.size());
        }
        return Status::Ok();
      }
      case workers::MsgType::kTable: {
        SHAMMIE_ASSIGN_OR_RETURN(auto t, workers::DecodeTable(msg.payload));
        const int i = CurrentJob(t.task);
        if (i < 0) return Status::Ok();
        journal_->Append(static_cast<uint8_t>(RecordType::kTable),
                         EncodeTableRecord(plan_.jobs[static_cast<size_t>(i)].id,
                                           jobs_[static_cast<size_t>(i)].attempt, t.name, t.table));
        return Status::Ok();
      }
      case workers::MsgType::kArtifact: {
        SHAMMIE_ASSIGN_OR_RETURN(auto a, workers::DecodeArtifact(msg.payload));
        const int i = CurrentJob(a.task);
        if (i < 0) return Status::Ok();
        JobRt& j = jobs_[static_cast<size_t>(i)];
        const std::string path = RelativeArtifact(a.path);
        journal_->Append(static_cast<uint8_t>(RecordType::kArtifact),
                         EncodeArtifactRecord(plan_.jobs[static_cast<size_t>(i)].id, j.attempt, a.name, path));
        j.artifacts[a.name] = path;
        return Status::Ok();
      }
      case workers::MsgType::kDone: {
        SHAMMIE_ASSIGN_OR_RETURN(auto results, workers::DecodeDone(msg.payload));
        for (const auto& r : results) OnDone(msg.source, r);
        return Status::Ok();
      }
      default:
        return common::DataLoss("unexpected message type from rank " + std::to_string(msg.source));
    }
  }

  int CurrentJob(uint64_t task) const {
    auto it = task_job_.find(task);
    if (it == task_job_.end()) return -1;
    const JobRt& j = jobs_[static_cast<size_t>(it->second)];
    return (j.state == State::kRunning && j.task == task) ? it->second : -1;
  }

  void OnDone(int rank, const workers::TaskResult& r) {
    WorkerRt& w = workers_[static_cast<size_t>(rank)];
    if (auto it = std::find(w.tasks.begin(), w.tasks.end(), r.task); it != w.tasks.end()) w.tasks.erase(it);
    if (r.worker_lost) LoseWorker(rank, r.message, /*fail_tasks=*/false);
    const int i = CurrentJob(r.task);
    if (i < 0) return;
    JobRt& j = jobs_[static_cast<size_t>(i)];
    if (r.code != StatusCode::kOk && j.first_error.ok()) {
      std::string message = r.message;
      if (j.ranks.size() > 1) message = "rank " + std::to_string(rank) + ": " + message;
      j.first_error = Status(r.code, message);
    }
    if (++j.members_done < static_cast<int>(j.ranks.size())) return;
    if (r.code == StatusCode::kOk || j.first_error.ok()) {
      StageStats& st = stage_stats_[plan_.jobs[static_cast<size_t>(i)].stage];
      st.seconds += r.seconds;
      st.count += 1;
    }
    Settle(i, j.first_error, r.seconds);
  }

  // The attempt of job i is over (all gang members reported, or it stalled).
  void Settle(int i, const Status& status, double seconds) {
    JobRt& j = jobs_[static_cast<size_t>(i)];
    const PlannedJob& pj = plan_.jobs[static_cast<size_t>(i)];
    --running_;
    task_job_.erase(j.task);
    if (status.ok()) {
      journal_->Append(static_cast<uint8_t>(RecordType::kEnd),
                       EncodeEnd(pj.id, j.attempt, StatusCode::kOk, "", WallNow(), seconds, false));
      j.state = State::kDone;
      ++done_;
      for (int d : dependents_[static_cast<size_t>(i)]) {
        JobRt& dj = jobs_[static_cast<size_t>(d)];
        if (dj.state == State::kWaiting && --dj.waiting == 0) MakeReady(d);
      }
      if (auto it = adaptive_.find(pj.stage); it != adaptive_.end()) ExtendAndJournal(it->second);
      return;
    }
    if (stopping_ && status.code() == StatusCode::kCancelled) {
      journal_->Append(static_cast<uint8_t>(RecordType::kEnd),
                       EncodeEnd(pj.id, j.attempt, status.code(), status.message(), WallNow(), seconds, false));
      j.state = State::kCancelled;
      return;
    }
    ++j.failures;
    const auto& on = pj.retry.on;
    const bool retryable = std::find(on.begin(), on.end(), status.code()) != on.end();
    const bool retry = retryable && j.failures < pj.retry.attempts && !stopping_;
    journal_->Append(static_cast<uint8_t>(RecordType::kEnd),
                     EncodeEnd(pj.id, j.attempt, status.code(), status.message(), WallNow(), seconds, !retry));
    if (retry) {
      j.state = State::kDelayed;
      const double wait = pj.retry.backoff_s * std::pow(2.0, j.failures - 1);
      j.not_before = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait));
      delayed_.push_back(i);
      return;
    }
    j.state = State::kFailed;
    ++failed_;
    if (failures_shown_ < 20 && opt_.progress != ProgressMode::kNone) {
      ++failures_shown_;
      progress_.Finish();
      (opt_.progress_out ? *opt_.progress_out : std::cerr)
          << "shammie: job " << pj.Label() << " " << pj.id << " failed after " << j.failures << " attempt"
          << (j.failures == 1 ? "" : "s") << ": " << status.ToString() << "\n";
    }
    SkipDependents(i, "input " + pj.Label() + " (" + pj.id + ") failed");
    if (auto it = adaptive_.find(pj.stage); it != adaptive_.end()) ExtendAndJournal(it->second);
  }

  void SkipDependents(int root, const std::string& reason) {
    std::vector<int> stack(dependents_[static_cast<size_t>(root)].begin(), dependents_[static_cast<size_t>(root)].end());
    while (!stack.empty()) {
      const int d = stack.back();
      stack.pop_back();
      JobRt& dj = jobs_[static_cast<size_t>(d)];
      if (dj.state != State::kWaiting) continue;
      dj.state = State::kSkipped;
      ++skipped_;
      journal_->Append(static_cast<uint8_t>(RecordType::kSkip), EncodeSkip(plan_.jobs[static_cast<size_t>(d)].id, reason));
      for (int dd : dependents_[static_cast<size_t>(d)]) stack.push_back(dd);
    }
  }

  void LoseWorker(int rank, const std::string& why, bool fail_tasks) {
    WorkerRt& w = workers_[static_cast<size_t>(rank)];
    if (w.lost) return;
    w.lost = true;
    workers_lost_ = true;
    (opt_.progress_out ? *opt_.progress_out : std::cerr) << "shammie: rank " << rank << " takes no more work: " << why
                                                         << "\n";
    if (!fail_tasks) return;
    std::deque<uint64_t> tasks;
    tasks.swap(w.tasks);
    for (uint64_t task : tasks) {
      const int i = CurrentJob(task);
      if (i < 0) continue;
      Settle(i, Status(StatusCode::kDeadlineExceeded, why), 0);
    }
  }

  void CheckStalls() {
    const auto now = Clock::now();
    for (int r = 1; r < ch_.size(); ++r) {
      WorkerRt& w = workers_[static_cast<size_t>(r)];
      if (w.lost || w.tasks.empty() || now - w.last_heard < opt_.stall_timeout) continue;
      const int i = CurrentJob(w.tasks.front());
      const std::string job = i >= 0 ? plan_.jobs[static_cast<size_t>(i)].Label() + " " + plan_.jobs[static_cast<size_t>(i)].id : "?";
      LoseWorker(r,
                 "stalled: no heartbeat from rank " + std::to_string(r) + " for " +
                     std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - w.last_heard).count()) +
                     " s while running job " + job,
                 /*fail_tasks=*/true);
    }
  }

  ProgressSnapshot Snapshot() {
    ProgressSnapshot s;
    s.total = static_cast<int64_t>(plan_.jobs.size());
    s.done = done_;
    s.cached = cached_;
    s.running = running_;
    s.failed = failed_;
    s.skipped = skipped_;
    s.retrying = static_cast<int64_t>(delayed_.size());
    s.left = s.total - done_ - failed_ - skipped_ - running_;
    s.elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
    s.stopping = stopping_;
    const auto now = Clock::now();
    // Rate over the last ~10 s, from the finished counts at earlier snapshots
    // (nothing is recorded per job: this stays off the dispatch path).
    const int64_t finished = done_ - cached_ + failed_;
    if (rate_samples_.empty()) rate_samples_.emplace_back(start_, 0);
    rate_samples_.emplace_back(now, finished);
    while (rate_samples_.size() > 2 && now - rate_samples_[1].first > std::chrono::seconds(10)) rate_samples_.pop_front();
    const double span = std::chrono::duration<double>(now - rate_samples_.front().first).count();
    s.rate = span > 0 ? static_cast<double>(finished - rate_samples_.front().second) / span : 0;
    if (opt_.progress == ProgressMode::kTty) {
      for (const auto& [task, i] : task_job_) {
        const JobRt& j = jobs_[static_cast<size_t>(i)];
        const double secs = std::chrono::duration<double>(now - j.started).count();
        if (j.state == State::kRunning && secs > 10) {
          s.long_jobs.push_back({plan_.jobs[static_cast<size_t>(i)].Label(), JoinRanks(j.ranks), secs});
        }
      }
      std::sort(s.long_jobs.begin(), s.long_jobs.end(), [](auto& a, auto& b) { return a.seconds > b.seconds; });
    }
    return s;
  }

  EngineReport MakeReport() const {
    EngineReport r;
    r.total = static_cast<int64_t>(plan_.jobs.size());
    r.done = done_;
    r.cached = cached_;
    r.failed = failed_;
    r.skipped = skipped_;
    r.not_run = r.total - done_ - failed_ - skipped_;
    r.attempts = attempts_;
    r.stopped = stopping_;
    r.workers_lost = workers_lost_;
    r.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    r.jobs_seconds = jobs_seconds_;
    r.results_seconds = results_seconds_;
    r.metric_points = metric_points_;
    r.controller_cpu_seconds = loop_cpu_seconds_;
    if (failed_ > 0 || skipped_ > 0) {
      r.exit_code = 1;
    } else if (r.not_run > 0 && !stopping_) {
      r.exit_code = 3;  // no workers left to run them
    }
    return r;
  }

  cluster::ControlChannel& ch_;
  const ExperimentSpec& spec_;
  Plan plan_;  // grows as adaptive sweeps propose jobs
  EngineOptions opt_;
  ProgressDisplay progress_;
  std::unique_ptr<storage::JournalWriter> journal_;

  std::vector<JobRt> jobs_;
  std::vector<std::vector<int>> dependents_;
  std::unordered_map<std::string, int> index_;
  JournalState history_;
  std::map<std::string, AdaptiveState> adaptive_;
  std::unordered_map<std::string, std::map<std::string, double>> last_metric_;  // adaptive stages' jobs
  std::string journaled_plan_hash_;
  std::priority_queue<int, std::vector<int>, ReadyOrder> ready_{ReadyOrder{&plan_.jobs}};
  std::vector<int> delayed_;
  std::vector<WorkerRt> workers_;
  std::unordered_map<uint64_t, int> task_job_;
  std::unordered_map<std::string, StageStats> stage_stats_;
  std::deque<std::pair<Clock::time_point, int64_t>> rate_samples_;  // (time, jobs finished by this run)

  Clock::time_point start_;
  std::string run_dir_abs_;
  uint64_t next_task_ = 0;
  int64_t running_ = 0, done_ = 0, cached_ = 0, failed_ = 0, skipped_ = 0, attempts_ = 0, metric_points_ = 0;
  int failures_shown_ = 0;
  double jobs_seconds_ = 0, results_seconds_ = 0, loop_cpu_seconds_ = 0;
  bool stopping_ = false, workers_lost_ = false, shutdown_sent_ = false;
};

storage::JobStatus FinalStatus(const JobHistory* h) {
  if (!h) return storage::JobStatus::kPending;
  if (h->done_attempt > 0) return storage::JobStatus::kDone;
  if (h->skipped) return storage::JobStatus::kSkipped;
  if (h->final_failure) return storage::JobStatus::kFailed;
  if (h->cancelled || h->running) return storage::JobStatus::kCancelled;
  return storage::JobStatus::kPending;
}

}  // namespace

common::Result<EngineReport> RunController(cluster::ControlChannel& channel, const ExperimentSpec& spec,
                                           const Plan& plan, const EngineOptions& options) {
  Controller c(channel, spec, plan, options);
  auto report = c.Run();
  c.ShutdownWorkers();  // when Run failed before it told them
  return report;
}

Status WriteResultsFile(const std::string& run_dir, const ExperimentSpec& spec, const Plan& plan,
                        const std::string& command_line) {
  const std::string journal = JournalPath(run_dir);
  SHAMMIE_ASSIGN_OR_RETURN(JournalState st, ReplayJournal(journal));
  const std::string final_path = run_dir + "/results.h5";
  const std::string tmp = run_dir + "/results.h5.tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  storage::ExperimentInfo info;
  info.experiment = spec.name;
  info.spec_text = spec.canonical_text;
  info.spec_hash = spec.spec_hash;
  info.shammie_version = std::string(common::Version());
  info.git_commit = std::string(common::GitCommit());
  info.build_options = std::string(common::BuildOptions());
  info.command_line = command_line;
  info.start_time = st.runs.empty() ? IsoTime(WallNow()) : IsoTime(st.runs.front().time);
  SHAMMIE_ASSIGN_OR_RETURN(auto store, storage::ResultStore::Create(tmp, info));

  std::vector<storage::JobRecord> rows;
  rows.reserve(plan.jobs.size());
  std::unordered_map<std::string, uint32_t> done;
  for (const auto& pj : plan.jobs) {
    auto it = st.jobs.find(pj.id);
    const JobHistory* h = it == st.jobs.end() ? nullptr : &it->second;
    storage::JobRecord row;
    row.id = pj.id;
    row.stage = pj.stage;
    row.kind = pj.kind;
    row.status = FinalStatus(h);
    row.seed = pj.seed;
    row.config_json = common::CanonicalJson(pj.config);
    if (h) {
      row.attempts = static_cast<int32_t>(h->attempts);
      row.ranks = h->ranks;
      row.host = h->host;
      row.start_time = h->start;
      row.end_time = h->end;
      if (row.status != storage::JobStatus::kDone) row.error = h->error;
      if (h->done_attempt > 0) done[pj.id] = h->done_attempt;
    }
    rows.push_back(std::move(row));
  }
  SHAMMIE_RETURN_IF_ERROR(store->InsertJobs(rows));
  // /runs/<id> for jobs that stored metrics or tables (HDF5 groups cost
  // ~100 us each; /jobs already holds every job's config and seed).
  std::unordered_map<std::string, const PlannedJob*> by_id;
  for (const auto& pj : plan.jobs) by_id.emplace(pj.id, &pj);
  std::unordered_set<std::string> begun;
  auto begin_run = [&](const std::string& id) -> Status {
    if (begun.count(id)) return Status::Ok();
    begun.insert(id);
    const PlannedJob& pj = *by_id.at(id);
    storage::RunRecord run{pj.id, pj.stage, pj.kind, common::CanonicalJson(pj.config), pj.seed, pj.inputs, {}};
    if (auto it = st.jobs.find(id); it != st.jobs.end()) run.artifacts = it->second.artifacts;
    return store->BeginRun(run);
  };
  ResultVisitor visitor;
  visitor.metrics = [&](const std::string& id, const std::string& name, std::span<const storage::MetricPoint> points) {
    SHAMMIE_RETURN_IF_ERROR(begin_run(id));
    return store->AppendMetrics(id, name, points);
  };
  visitor.table = [&](const std::string& id, const std::string& name, const storage::Table& table) {
    SHAMMIE_RETURN_IF_ERROR(begin_run(id));
    return store->AppendTable(id, name, table);
  };
  SHAMMIE_RETURN_IF_ERROR(VisitResults(journal, done, visitor));
  for (const auto& pj : plan.jobs) {  // done jobs that recorded files but no metrics
    auto it = st.jobs.find(pj.id);
    if (it != st.jobs.end() && it->second.done_attempt > 0 && !it->second.artifacts.empty()) {
      SHAMMIE_RETURN_IF_ERROR(begin_run(pj.id));
    }
  }
  // Analyses computed on the previous file of the same experiment stay.
  if (fs::exists(final_path)) {
    auto old = storage::ResultStore::Open(final_path, storage::ResultStore::Mode::kReadOnly);
    if (old.ok() && (*old)->info().spec_hash == spec.spec_hash) {
      auto names = (*old)->ListAnalyses();
      for (const auto& name : names.ok() ? *names : std::vector<std::string>{}) {
        auto a = (*old)->ReadAnalysis(name);
        if (a.ok()) SHAMMIE_RETURN_IF_ERROR(store->WriteAnalysis(name, a->first, a->second));
      }
    }
  }
  SHAMMIE_RETURN_IF_ERROR(store->SetEndTime(IsoTime(WallNow())));
  SHAMMIE_RETURN_IF_ERROR(store->Close());
  store.reset();
  SHAMMIE_RETURN_IF_ERROR(FsyncPath(tmp, false));
  fs::rename(tmp, final_path, ec);
  if (ec) return common::Internal("cannot rename " + tmp + " to " + final_path + ": " + ec.message());
  return FsyncPath(run_dir, true);
}

}  // namespace shammie::orchestrator
