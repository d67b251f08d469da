#include "cluster/slurm.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <algorithm>
#include <map>
#include <sstream>

#include "cluster/launcher.hpp"

namespace shammie::cluster {

namespace {

std::optional<int64_t> ParseNonNegative(std::string_view s) {
  if (s.empty()) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    const size_t end = s.find(sep, start);
    parts.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

}  // namespace

std::string ShellQuote(const std::string& word) {
  static constexpr std::string_view kSafe =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%";
  if (!word.empty() && word.find_first_not_of(kSafe) == std::string::npos) return word;
  std::string q = "'";
  for (char c : word) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::optional<std::string> SbatchValueProblem(const std::string& value) {
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) return "control characters (newlines, tabs) cannot go into an #SBATCH line";
  }
  return std::nullopt;
}

std::string SbatchQuote(const std::string& value) {
  static constexpr std::string_view kSafe =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%";
  if (!value.empty() && value.find_first_not_of(kSafe) == std::string::npos) return value;
  std::string q = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

std::optional<std::string> SlurmTimeProblem(const std::string& text, int64_t* seconds) {
  const std::string expected =
      "expected a Slurm time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. \"02:00:00\")";
  if (text.empty()) return expected;
  int64_t days = 0;
  std::string_view rest = text;
  const bool has_days = rest.find('-') != std::string_view::npos;
  if (has_days) {
    const size_t dash = rest.find('-');
    auto d = ParseNonNegative(rest.substr(0, dash));
    if (!d) return expected;
    days = *d;
    rest = rest.substr(dash + 1);
  }
  auto parts = Split(rest, ':');
  if (parts.size() > 3) return expected;
  std::vector<int64_t> v;
  for (auto p : parts) {
    auto n = ParseNonNegative(p);
    if (!n) return expected;
    v.push_back(*n);
  }
  int64_t total = 0;
  if (has_days) {  // D-HH[:MM[:SS]]
    total = days * 86400 + v[0] * 3600 + (v.size() > 1 ? v[1] * 60 : 0) + (v.size() > 2 ? v[2] : 0);
  } else if (v.size() == 1) {  // minutes
    total = v[0] * 60;
  } else if (v.size() == 2) {  // MM:SS
    total = v[0] * 60 + v[1];
  } else {  // HH:MM:SS
    total = v[0] * 3600 + v[1] * 60 + v[2];
  }
  if (total <= 0) return "the time limit must be positive";
  if (total > 366LL * 86400) return "the time limit is longer than a year";
  if (seconds) *seconds = total;
  return std::nullopt;
}

common::Status CheckResources(const SlurmResources& r) {
  auto bad = [](const std::string& key, const std::string& msg) { return common::InvalidArgument(key + ": " + msg); };
  if (r.nodes < 1 || r.nodes > 100000) return bad("nodes", "must be between 1 and 100000");
  if (r.ntasks_per_node < 1 || r.ntasks_per_node > 4096) return bad("ntasks_per_node", "must be between 1 and 4096");
  if (r.gpus_per_node < 0 || r.gpus_per_node > 64) return bad("gpus_per_node", "must be between 0 and 64");
  if (r.cpus_per_task < 1 || r.cpus_per_task > 4096) return bad("cpus_per_task", "must be between 1 and 4096");
  if (r.nodes * r.ntasks_per_node < 2) {
    return bad("ntasks_per_node", "the job has " + std::to_string(r.nodes * r.ntasks_per_node) +
                                      " rank; shammie needs at least 2 (a controller and a worker): use --nodes 2 "
                                      "or --ntasks-per-node 2");
  }
  if (r.grace_s < 1 || r.grace_s > 86400) return bad("grace", "must be between 1 and 86400 seconds");
  if (r.max_requeues < 0 || r.max_requeues > 1000) return bad("max_requeues", "must be between 0 and 1000");
  if (r.time) {
    int64_t limit = 0;
    if (auto p = SlurmTimeProblem(*r.time, &limit)) return bad("time", "\"" + *r.time + "\": " + *p);
    if (r.grace_s >= limit) {
      return bad("grace", std::to_string(r.grace_s) + " s is not shorter than the time limit " + *r.time +
                              " (" + std::to_string(limit) + " s): the warning signal would come before the start");
    }
  }
  const std::pair<const char*, const std::optional<std::string>*> named[] = {
      {"partition", &r.partition}, {"account", &r.account}, {"qos", &r.qos}, {"memory_per_cpu", &r.memory_per_cpu}};
  for (const auto& [key, value] : named) {
    if (!*value) continue;
    if ((*value)->empty()) return bad(key, "must not be empty");
    if (auto p = SbatchValueProblem(**value)) return bad(key, *p);
  }
  if (r.job_name.empty()) return bad("job_name", "must not be empty");
  if (auto p = SbatchValueProblem(r.job_name)) return bad("job_name", *p);
  return common::Status::Ok();
}

std::string RenderBatchScript(const BatchScript& s) {
  const SlurmResources& r = s.resources;
  const bool array = s.array_tasks > 0;
  std::ostringstream o;
  o << "#!/bin/bash\n";
  o << "# Written by `shammie submit`; submit it again by hand with: sbatch " << ShellQuote(s.run_dir + "/slurm/job.sbatch")
    << "\n";
  std::istringstream prov(s.provenance);
  for (std::string line; std::getline(prov, line);) o << "# " << line << "\n";
  o << "#\n";
  o << "# On SIGUSR1 (" << r.grace_s << " s before the time limit, or a preemption notice) shammie stops\n"
       "# dispatching, running jobs checkpoint, results are flushed, and this script requeues\n"
       "# the job (at most " << r.max_requeues << " times); the next start resumes (--resume).\n";
  auto directive = [&](const std::string& key, const std::string& value) {
    o << "#SBATCH --" << key << "=" << SbatchQuote(value) << "\n";
  };
  directive("job-name", r.job_name);
  directive("nodes", std::to_string(r.nodes));
  directive("ntasks-per-node", std::to_string(r.ntasks_per_node));
  directive("cpus-per-task", std::to_string(r.cpus_per_task));
  if (r.gpus_per_node > 0) directive("gpus-per-node", std::to_string(r.gpus_per_node));
  if (r.memory_per_cpu) directive("mem-per-cpu", *r.memory_per_cpu);
  if (r.time) directive("time", *r.time);
  if (r.partition) directive("partition", *r.partition);
  if (r.account) directive("account", *r.account);
  if (r.qos) directive("qos", *r.qos);
  if (array) directive("array", "0-" + std::to_string(s.array_tasks - 1));
  directive("signal", "B:USR1@" + std::to_string(r.grace_s));
  o << "#SBATCH --requeue\n";
  directive("open-mode", "append");
  directive("output", s.output_pattern);
  o << "\n";
  o << "set -uo pipefail\n";
  o << "run_dir=" << ShellQuote(s.run_dir) << "\n";
  o << "max_requeues=" << r.max_requeues << "\n";
  o << "cd " << ShellQuote(s.workdir) << " || exit 3\n\n";
  o << "# The environment at submission (sbatch also passes the rest of it on).\n";
  for (const auto& [k, v] : s.env) o << "export " << k << "=" << ShellQuote(v) << "\n";
  o << "\n";
  o << "restarts=${SLURM_RESTART_COUNT:-0}\n";
  if (array) {
    o << "shard=${SLURM_ARRAY_TASK_ID:?this script runs as a job array (sbatch reads its --array line)}\n";
    o << "shard_dir=\"$run_dir/shards/$shard\"\n";
    o << "mkdir -p \"$shard_dir\"\n";
  }
  o << "stop_file=\"$run_dir/slurm/stopped.$SLURM_JOB_ID\"\n";
  o << "rm -f \"$stop_file\"\n";
  o << "export SHAMMIE_STOP_FILE=\"$stop_file\"\n";
  o << "echo \"shammie: Slurm job $SLURM_JOB_ID" << (array ? " (array task $shard)" : "")
    << ", start $((restarts + 1)), on $SLURM_JOB_NODELIST at $(date -Is)\"\n\n";
  o << "# With B: Slurm signals this shell only: pass SIGUSR1 on to srun, which hands it to every rank.\n";
  o << "forward_usr1() {\n"
       "  echo \"shammie: SIGUSR1 at $(date -Is): stopping and checkpointing\"\n"
       "  kill -USR1 \"$srun_pid\" 2>/dev/null\n"
       "}\n"
       "trap forward_usr1 USR1\n\n";
  o << "srun --mpi=pmix --kill-on-bad-exit=1 \\\n   ";
  for (const auto& word : s.program) {
    o << " ";
    // Literal pieces quoted, placeholders as quoted expansions, concatenated.
    std::string rest = word;
    bool any = false;
    while (!rest.empty()) {
      const size_t a = rest.find(kShardIndexWord), b = rest.find(kShardDirWord);
      const size_t at = std::min(a, b);
      if (at == std::string::npos) {
        o << ShellQuote(rest);
        any = true;
        break;
      }
      if (at > 0) o << ShellQuote(rest.substr(0, at));
      const bool index = at == a;
      o << (index ? "\"$shard\"" : "\"$shard_dir\"");
      rest = rest.substr(at + std::string_view(index ? kShardIndexWord : kShardDirWord).size());
      any = true;
    }
    if (!any) o << "''";
  }
  o << " &\n";
  o << "srun_pid=$!\n";
  o << "# `wait` returns early when a trapped signal arrives: wait again until srun is gone.\n";
  o << "while :; do\n"
       "  wait \"$srun_pid\"\n"
       "  rc=$?\n"
       "  kill -0 \"$srun_pid\" 2>/dev/null || break\n"
       "done\n\n";
  o << "if [ -e \"$stop_file\" ]; then\n"
       "  if [ \"$restarts\" -lt \"$max_requeues\" ]; then\n"
       "    echo \"shammie: stopped with $(cat \"$stop_file\"); requeueing job $SLURM_JOB_ID (requeue $((restarts + 1)) "
       "of at most $max_requeues)\"\n"
       "    scontrol requeue \"$SLURM_JOB_ID\"\n"
       "    exit 0\n"
       "  fi\n"
       "  echo \"shammie: stopped with $(cat \"$stop_file\") after $restarts requeues (max_requeues = $max_requeues): "
       "not requeued; submit again to continue\"\n"
       "  exit 1\n"
       "fi\n"
       "echo \"shammie: srun exit status $rc at $(date -Is)\"\n"
       "exit \"$rc\"\n";
  return o.str();
}

common::Result<CommandOutput> RunProgram(const std::vector<std::string>& argv, std::chrono::milliseconds deadline) {
  if (argv.empty()) return common::Internal("RunProgram: empty argv");
  auto path = FindOnPath(argv[0]);
  if (!path) return common::Unavailable(argv[0] + " not found on PATH");
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return common::Internal(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return common::Internal(std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return common::Internal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execv(path->c_str(), cargv.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  CommandOutput result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buf[4096];
  const auto until = std::chrono::steady_clock::now() + deadline;
  bool timed_out = false;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000))) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return common::Unavailable(argv[0] + " did not finish within " + std::to_string(deadline.count() / 1000) +
                               " s (is slurmctld reachable?)");
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

common::Result<std::string> SubmitBatchScript(const std::string& script_path) {
  SHAMMIE_ASSIGN_OR_RETURN(CommandOutput r, RunProgram({"sbatch", "--parsable", script_path}));
  if (r.exit_code != 0) {
    return common::Unavailable("sbatch " + script_path + " failed (exit status " + std::to_string(r.exit_code) +
                               "): " + Trim(r.err + r.out));
  }
  // --parsable prints "jobid" or "jobid;cluster".
  std::string id = Trim(r.out);
  if (auto semi = id.find(';'); semi != std::string::npos) id.resize(semi);
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
    return common::Unavailable("sbatch printed no job id: \"" + Trim(r.out) + "\"");
  }
  return id;
}

std::vector<SlurmJobState> QueryJobStates(const std::vector<std::string>& job_ids) {
  std::vector<SlurmJobState> out;
  if (job_ids.empty()) return out;
  std::string list;
  for (const auto& id : job_ids) list += (list.empty() ? "" : ",") + id;
  std::map<std::string, SlurmJobState> seen;  // by id, in the order they come
  std::vector<std::string> order;
  auto add = [&](SlurmJobState st) {
    if (!seen.count(st.id)) order.push_back(st.id);
    seen[st.id] = std::move(st);
  };
  // 1. squeue: pending and running jobs (array tasks one per line).
  auto sq = RunProgram({"squeue", "-h", "-r", "-j", list, "-o", "%i|%T|%M|%R"});
  if (sq.ok() && sq->exit_code == 0) {
    std::istringstream in(sq->out);
    for (std::string line; std::getline(in, line);) {
      auto f = Split(line, '|');
      if (f.size() < 4) continue;
      add({std::string(f[0]), std::string(f[1]), std::string(f[3]), std::string(f[2]), -1});
    }
  }
  // 2. scontrol: everything slurmctld still remembers, with restarts.
  for (const auto& id : job_ids) {
    auto sc = RunProgram({"scontrol", "-o", "show", "job", id});
    if (!sc.ok() || sc->exit_code != 0) continue;
    std::istringstream in(sc->out);
    for (std::string line; std::getline(in, line);) {
      std::map<std::string, std::string> kv;
      std::istringstream words(line);
      for (std::string w; words >> w;) {
        if (auto eq = w.find('='); eq != std::string::npos) kv.emplace(w.substr(0, eq), w.substr(eq + 1));
      }
      SlurmJobState st;
      if (kv.count("ArrayJobId") && kv.count("ArrayTaskId")) {
        st.id = kv["ArrayJobId"] + "_" + kv["ArrayTaskId"];
      } else {
        st.id = kv["JobId"];
      }
      if (st.id.empty()) continue;
      st.state = kv["JobState"];
      st.reason = kv.count("ExitCode") ? "exit " + kv["ExitCode"] : "";
      if (kv.count("Reason") && kv["Reason"] != "None") st.reason = kv["Reason"];
      st.elapsed = kv["RunTime"];
      if (auto n = ParseNonNegative(kv["Restarts"])) st.restarts = *n;
      if (seen.count(st.id) && st.restarts < 0) st.restarts = seen[st.id].restarts;
      add(std::move(st));
    }
  }
  // 3. sacct (-c: the jobcomp log) for jobs slurmctld has forgotten.
  std::vector<std::string> unknown;
  for (const auto& id : job_ids) {
    bool any = false;
    for (const auto& k : order) any = any || k == id || k.rfind(id + "_", 0) == 0;
    if (!any) unknown.push_back(id);
  }
  for (const auto& id : unknown) {
    for (const std::vector<std::string>& cmd :
         {std::vector<std::string>{"sacct", "-n", "-P", "-X", "-j", id, "-o", "JobID,State,Elapsed,ExitCode"},
          std::vector<std::string>{"sacct", "-c", "-n", "-P", "-j", id, "-o", "jobid,state,elapsed,exitcode"}}) {
      auto sa = RunProgram(cmd);
      if (!sa.ok() || sa->exit_code != 0 || Trim(sa->out).empty()) continue;
      std::istringstream in(sa->out);
      for (std::string line; std::getline(in, line);) {
        auto f = Split(line, '|');
        if (f.size() < 4 || f[0].empty()) continue;
        add({std::string(f[0]), std::string(f[1]), "exit " + std::string(f[3]), std::string(f[2]), -1});
      }
      break;
    }
  }
  for (const auto& id : job_ids) {
    bool any = false;
    for (const auto& k : order) any = any || k == id || k.rfind(id + "_", 0) == 0;
    if (!any) add({id, "UNKNOWN", "no longer known to squeue, scontrol or sacct", "", -1});
  }
  for (const auto& id : order) out.push_back(seen[id]);
  return out;
}

}  // namespace shammie::cluster
