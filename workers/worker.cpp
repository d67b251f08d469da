#include "workers/worker.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "common/wire.hpp"
#include "workers/protocol.hpp"

namespace shammie::workers {

using common::Status;
using common::StatusCode;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMetricBatch = 8192;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string SignalName(int sig) {
  const char* d = strsignal(sig);
  return "signal " + std::to_string(sig) + (d ? std::string(" (") + d + ")" : "");
}

// Cancellation flag of a job running in a forked child (set by SIGTERM).
volatile std::sig_atomic_t g_child_cancelled = 0;
void OnChildTerm(int) { g_child_cancelled = 1; }

bool WriteFrame(int fd, std::string_view payload) {
  const auto len = static_cast<uint32_t>(payload.size());
  std::string frame(reinterpret_cast<const char*>(&len), 4);
  frame.append(payload);
  std::string_view rest = frame;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

Status CheckArtifact(std::string_view name, const std::string& path) {
  if (name.empty()) return common::InvalidArgument("an artifact needs a name");
  if (path.empty() || path.front() != '/') return common::InvalidArgument("artifact path must be absolute: " + path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return common::InvalidArgument("artifact " + std::string(name) + ": no such file " + path);
  }
  return Status::Ok();
}

// Buffers metric points per name; Take() hands them over as one message.
class MetricBuffer {
 public:
  void Add(std::string_view name, int64_t step, double value) {
    if (count_ == 0) first_ = Clock::now();
    auto it = series_.find(name);
    if (it == series_.end()) it = series_.emplace(std::string(name), std::vector<storage::MetricPoint>{}).first;
    it->second.push_back({step, value});
    ++count_;
  }
  size_t count() const { return count_; }
  Clock::time_point first() const { return first_; }
  std::string Take(uint64_t task) {
    MetricsMsg m;
    m.task = task;
    for (auto& [name, points] : series_) {
      if (!points.empty()) m.series.push_back({name, std::move(points)});
      points.clear();
    }
    count_ = 0;
    return EncodeMetrics(m);
  }

 private:
  std::map<std::string, std::vector<storage::MetricPoint>, std::less<>> series_;
  size_t count_ = 0;
  Clock::time_point first_;
};

class Worker;

// The context of a job run on the worker's own thread.
class EngineContext final : public JobContext {
 public:
  EngineContext(Worker& worker, const Task& task, nlohmann::json config, cluster::Collectives& collectives)
      : worker_(worker), task_(task), config_(std::move(config)), collectives_(collectives) {}
  const std::string& job_id() const override { return task_.job_id; }
  const nlohmann::json& config() const override { return config_; }
  uint64_t seed() const override { return task_.seed; }
  int attempt() const override { return static_cast<int>(task_.attempt); }
  void ReportMetric(std::string_view name, int64_t step, double value) override;
  Status WriteTable(std::string_view name, const storage::Table& table) override;
  bool cancelled() const override;
  cluster::Collectives& collectives() override { return collectives_; }
  const std::string& artifact_dir() const override { return task_.artifact_dir; }
  const std::vector<Artifact>& inputs() const override { return task_.inputs; }
  const std::vector<Artifact>& previous_artifacts() const override { return task_.previous; }
  Status RecordArtifact(std::string_view name, const std::string& path) override;

 private:
  Worker& worker_;
  const Task& task_;
  nlohmann::json config_;
  cluster::Collectives& collectives_;
};

// The context of a job in a forked child: everything goes down a pipe.
class ChildContext final : public JobContext {
 public:
  ChildContext(int fd, const Task& task, nlohmann::json config)
      : fd_(fd), task_(task), config_(std::move(config)), solo_(cluster::MakeSoloCollectives()) {}
  const std::string& job_id() const override { return task_.job_id; }
  const nlohmann::json& config() const override { return config_; }
  uint64_t seed() const override { return task_.seed; }
  int attempt() const override { return static_cast<int>(task_.attempt); }
  void ReportMetric(std::string_view name, int64_t step, double value) override {
    buffer_.Add(name, step, value);
    if (buffer_.count() >= kMetricBatch || Clock::now() - buffer_.first() > std::chrono::milliseconds(250)) Flush();
  }
  Status WriteTable(std::string_view name, const storage::Table& table) override {
    SHAMMIE_RETURN_IF_ERROR(table.Validate());
    Flush();
    if (!WriteFrame(fd_, EncodeTable(TableMsg{task_.task, std::string(name), table}))) {
      return common::Internal("job process: cannot write to the worker");
    }
    return Status::Ok();
  }
  bool cancelled() const override { return g_child_cancelled != 0; }
  cluster::Collectives& collectives() override { return *solo_; }
  const std::string& artifact_dir() const override { return task_.artifact_dir; }
  const std::vector<Artifact>& inputs() const override { return task_.inputs; }
  const std::vector<Artifact>& previous_artifacts() const override { return task_.previous; }
  Status RecordArtifact(std::string_view name, const std::string& path) override {
    SHAMMIE_RETURN_IF_ERROR(CheckArtifact(name, path));
    Flush();
    if (!WriteFrame(fd_, EncodeArtifact(ArtifactMsg{task_.task, std::string(name), path}))) {
      return common::Internal("job process: cannot write to the worker");
    }
    return Status::Ok();
  }
  void Flush() {
    if (buffer_.count() > 0) WriteFrame(fd_, buffer_.Take(task_.task));
  }

 private:
  int fd_;
  const Task& task_;
  nlohmann::json config_;
  std::unique_ptr<cluster::Collectives> solo_;
  MetricBuffer buffer_;
};

Status RunJobCode(const JobKind& kind, JobContext& ctx) {
  try {
    return kind.run(ctx);
  } catch (const std::exception& e) {
    return common::Internal(std::string("uncaught exception: ") + e.what());
  } catch (...) {
    return common::Internal("uncaught exception of unknown type");
  }
}

class Worker {
 public:
  Worker(cluster::ControlChannel& channel, const KindRegistry& kinds, const WorkerOptions& options)
      : ch_(channel), kinds_(kinds), opt_(options) {}

  Status Run() {
    SHAMMIE_RETURN_IF_ERROR(
        ch_.Send(opt_.controller, kTagReport, EncodeHello(Hello{ch_.rank(), opt_.host, static_cast<int64_t>(::getpid())})));
    monitor_ = std::thread([this] { MonitorLoop(); });
    Status s = MainLoop();
    {
      std::lock_guard lock(monitor_mu_);
      stop_monitor_ = true;
    }
    monitor_cv_.notify_all();
    monitor_.join();
    Status flushed = ch_.FlushSends(std::chrono::seconds(30));
    return s.ok() ? flushed : s;
  }

  // --- called from job contexts ---
  void AddMetric(std::string_view name, int64_t step, double value) {
    if (!record_) return;
    std::lock_guard lock(out_mu_);
    metrics_.Add(name, step, value);
    if (metrics_.count() >= kMetricBatch) FlushMetricsLocked();
  }
  Status SendTable(std::string_view name, const storage::Table& table) {
    SHAMMIE_RETURN_IF_ERROR(table.Validate());
    if (!record_) return Status::Ok();
    std::lock_guard lock(out_mu_);
    FlushMetricsLocked();
    return ch_.Send(opt_.controller, kTagReport, EncodeTable(TableMsg{running_.load(), std::string(name), table}));
  }
  Status SendArtifact(std::string_view name, const std::string& path) {
    SHAMMIE_RETURN_IF_ERROR(CheckArtifact(name, path));
    if (!record_) return Status::Ok();
    std::lock_guard lock(out_mu_);
    FlushMetricsLocked();
    return ch_.Send(opt_.controller, kTagReport, EncodeArtifact(ArtifactMsg{running_.load(), std::string(name), path}));
  }
  bool Cancelled() const { return cancel_all_.load() || cancel_current_.load(); }

 private:
  Status MainLoop() {
    std::deque<Task> queue;
    std::vector<TaskResult> done;
    Clock::time_point first_done;
    for (;;) {
      // Ask for messages: wait when there is nothing to do, else just peek.
      const bool idle = queue.empty();
      if (idle && !done.empty()) SHAMMIE_RETURN_IF_ERROR(SendDone(done));
      SHAMMIE_ASSIGN_OR_RETURN(auto msg,
                               ch_.Receive(idle ? std::chrono::milliseconds(100) : cluster::Micros(0), kTagControl));
      if (msg) {
        SHAMMIE_ASSIGN_OR_RETURN(MsgType type, PeekType(msg->payload));
        if (type == MsgType::kShutdown) {
          if (!done.empty()) SHAMMIE_RETURN_IF_ERROR(SendDone(done));
          return Status::Ok();
        }
        if (type == MsgType::kAssign) {
          SHAMMIE_ASSIGN_OR_RETURN(std::vector<Task> tasks, DecodeAssign(msg->payload));
          for (auto& t : tasks) queue.push_back(std::move(t));
        }
        continue;  // drain every pending message before running the next job
      }
      if (queue.empty()) continue;
      Task task = std::move(queue.front());
      queue.pop_front();
      TaskResult result = Execute(task);
      if (wedged_.load()) continue;  // the monitor reported this job as stalled already
      if (done.empty()) first_done = Clock::now();
      done.push_back(std::move(result));
      if (done.size() >= 256 || Clock::now() - first_done > std::chrono::milliseconds(2)) {
        SHAMMIE_RETURN_IF_ERROR(SendDone(done));
      }
    }
  }

  Status SendDone(std::vector<TaskResult>& done) {
    std::lock_guard lock(out_mu_);
    Status s = ch_.Send(opt_.controller, kTagReport, EncodeDone(done));
    done.clear();
    return s;
  }

  TaskResult Execute(const Task& task) {
    TaskResult result;
    result.task = task.task;
    const Clock::time_point start = Clock::now();
    Status s = ExecuteStatus(task, start);
    result.seconds = SecondsSince(start);
    result.code = s.code();
    result.message = s.message();
    return result;
  }

  Status ExecuteStatus(const Task& task, Clock::time_point start) {
    if (cancel_all_.load()) return Status(StatusCode::kCancelled, "stopped before it started");
    const JobKind* kind = kinds_.Find(task.kind);
    if (!kind || !kind->run) {
      return common::Internal("job kind \"" + task.kind + "\" has no code on rank " + std::to_string(ch_.rank()) +
                              " (a different shammie build?)");
    }
    nlohmann::json config = nlohmann::json::parse(task.config_json, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) return common::DataLoss("the job's config is not valid JSON");
    const bool member = std::find(task.gang.begin(), task.gang.end(), ch_.rank()) != task.gang.end();
    if (!member) return common::Internal("assigned a gang this rank is not a member of");
    record_ = task.gang.empty() || task.gang.front() == ch_.rank();

    {
      std::lock_guard lock(run_mu_);
      cancel_current_ = false;
      deadline_hit_ = false;
      started_ = start;
      limit_ = task.time_limit_ms > 0 ? std::chrono::milliseconds(task.time_limit_ms) : std::chrono::milliseconds(0);
      running_ = task.task;
    }
    Status s;
    if (task.isolation == Isolation::kProcess) {
      s = RunIsolated(*kind, task, std::move(config));
    } else {
      const auto timeout = limit_.count() > 0 ? limit_ : opt_.collective_timeout;
      auto gang = ch_.JoinGang(task.gang_id, task.gang, timeout);
      if (!gang.ok()) {
        s = gang.status().WithContext("forming the job's gang");
      } else {
        EngineContext ctx(*this, task, std::move(config), **gang);
        s = RunJobCode(*kind, ctx);
      }
    }
    {
      std::lock_guard lock(out_mu_);
      FlushMetricsLocked();
    }
    {
      std::lock_guard lock(run_mu_);
      running_ = 0;
    }
    if (deadline_hit_.load() && !s.ok()) {
      return Status(StatusCode::kDeadlineExceeded,
                    "time limit of " + std::to_string(task.time_limit_ms / 1000.0) + " s reached (" + s.message() + ")");
    }
    if (!s.ok() && s.code() == StatusCode::kOk) return common::Internal("job returned an empty error");
    return s;
  }

  Status RunIsolated(const JobKind& kind, const Task& task, nlohmann::json config) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return common::Internal(std::string("pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return common::Status(StatusCode::kResourceExhausted, std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {  // child: run the job, report through the pipe, never return
      ::close(fds[0]);
      std::signal(SIGTERM, OnChildTerm);
      std::signal(SIGINT, SIG_IGN);
      std::signal(SIGUSR1, SIG_IGN);
      ChildContext ctx(fds[1], task, std::move(config));
      Status s = RunJobCode(kind, ctx);
      ctx.Flush();
      TaskResult r{task.task, s.code(), s.message(), 0, false};
      WriteFrame(fds[1], EncodeDone({r}));
      ::_exit(0);
    }
    ::close(fds[1]);
    std::string buf;
    std::optional<Status> reported;
    bool terminated = false, killed = false;
    Clock::time_point term_at;
    for (;;) {
      pollfd p{fds[0], POLLIN, 0};
      const int rc = ::poll(&p, 1, 50);
      if (rc > 0) {
        char chunk[65536];
        const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
        if (n == 0) break;  // child closed the pipe: it exited
        if (n > 0) buf.append(chunk, static_cast<size_t>(n));
        while (buf.size() >= 4) {
          uint32_t len = 0;
          std::memcpy(&len, buf.data(), 4);
          if (buf.size() < 4 + static_cast<size_t>(len)) break;
          std::string payload = buf.substr(4, len);
          buf.erase(0, 4 + static_cast<size_t>(len));
          auto type = PeekType(payload);
          if (type.ok() && *type == MsgType::kDone) {
            auto results = DecodeDone(payload);
            if (results.ok() && results->size() == 1) {
              reported = results->front().code == StatusCode::kOk
                             ? Status::Ok()
                             : Status(results->front().code, results->front().message);
            }
          } else if (type.ok()) {
            std::lock_guard lock(out_mu_);
            FlushMetricsLocked();
            (void)ch_.Send(opt_.controller, kTagReport, payload);
          }
        }
      }
      if (Cancelled() && !terminated) {
        ::kill(pid, SIGTERM);
        terminated = true;
        term_at = Clock::now();
      }
      if (terminated && !killed && Clock::now() - term_at > opt_.stop_grace) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
    ::close(fds[0]);
    int wstatus = 0;
    while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(wstatus)) {
      const int sig = WTERMSIG(wstatus);
      if (killed) return Status(StatusCode::kCancelled, "job process did not stop when asked; killed");
      return common::Internal("job process killed by " + SignalName(sig));
    }
    if (reported) return *reported;
    return common::Internal("job process exited with code " + std::to_string(WEXITSTATUS(wstatus)) +
                            " without reporting a result");
  }

  void FlushMetricsLocked() {
    if (metrics_.count() == 0) return;
    (void)ch_.Send(opt_.controller, kTagReport, metrics_.Take(running_.load()));
  }

  void MonitorLoop() {
    Clock::time_point last_beat = Clock::now();
    std::unique_lock lock(monitor_mu_);
    while (!stop_monitor_) {
      monitor_cv_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stop_monitor_; });
      if (stop_monitor_) break;
      // Cancel requests (a stop at the controller).
      for (;;) {
        auto msg = ch_.Receive(cluster::Micros(0), kTagCancel);
        if (!msg.ok() || !*msg) break;
        cancel_all_ = true;
      }
      uint64_t running = 0;
      {
        std::lock_guard rl(run_mu_);
        running = running_.load();
        if (running && limit_.count() > 0 && Clock::now() - started_ > limit_) {
          deadline_hit_ = true;
          cancel_current_ = true;
          if (!wedged_ && Clock::now() - started_ > limit_ + opt_.stop_grace) {
            // The job ignores cancellation: report it and take no more work.
            wedged_ = true;
            TaskResult r{running, StatusCode::kDeadlineExceeded,
                         "stalled: still running " + std::to_string(opt_.stop_grace.count() / 1000) +
                             " s after its time limit and not stopping; rank " + std::to_string(ch_.rank()) +
                             " takes no more work",
                         SecondsSince(started_), true};
            std::lock_guard ol(out_mu_);
            (void)ch_.Send(opt_.controller, kTagReport, EncodeDone({r}));
          }
        }
      }
      std::lock_guard ol(out_mu_);
      if (metrics_.count() > 0 && Clock::now() - metrics_.first() > opt_.metric_flush) FlushMetricsLocked();
      if (Clock::now() - last_beat >= opt_.heartbeat) {
        (void)ch_.Send(opt_.controller, kTagReport, EncodeHeartbeat(Heartbeat{running}));
        last_beat = Clock::now();
      }
    }
  }

  cluster::ControlChannel& ch_;
  const KindRegistry& kinds_;
  WorkerOptions opt_;

  std::mutex out_mu_;  // serializes sends of metrics, tables and results (their order matters)
  MetricBuffer metrics_;
  std::atomic<bool> record_{true};

  std::mutex run_mu_;
  std::atomic<uint64_t> running_{0};
  Clock::time_point started_;
  std::chrono::milliseconds limit_{0};
  std::atomic<bool> cancel_all_{false}, cancel_current_{false}, deadline_hit_{false}, wedged_{false};

  std::thread monitor_;
  std::mutex monitor_mu_;
  std::condition_variable monitor_cv_;
  bool stop_monitor_ = false;
};

void EngineContext::ReportMetric(std::string_view name, int64_t step, double value) {
  worker_.AddMetric(name, step, value);
}
Status EngineContext::WriteTable(std::string_view name, const storage::Table& table) {
  return worker_.SendTable(name, table);
}
Status EngineContext::RecordArtifact(std::string_view name, const std::string& path) {
  return worker_.SendArtifact(name, path);
}
bool EngineContext::cancelled() const { return worker_.Cancelled(); }

}  // namespace

Status RunWorker(cluster::ControlChannel& channel, const KindRegistry& kinds, const WorkerOptions& options) {
  Worker worker(channel, kinds, options);
  return worker.Run();
}

}  // namespace shammie::workers
