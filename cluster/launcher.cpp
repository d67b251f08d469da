#include "cluster/launcher.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace shammie::cluster {

namespace {

std::atomic<int> g_signals{0};
std::atomic<int> g_last_signal{0};
void OnSignal(int sig) {
  g_last_signal.store(sig);
  g_signals.fetch_add(1);
}

}  // namespace

std::vector<std::string> MpirunCommand(const MpirunLaunch& launch) {
  std::vector<std::string> cmd = {launch.mpirun, "-np", std::to_string(launch.ranks), "--oversubscribe",
                                  "--bind-to", "none"};
  if (launch.as_root) cmd.push_back("--allow-run-as-root");
  for (const auto& [k, v] : launch.env) {
    cmd.push_back("-x");
    cmd.push_back(k + "=" + v);
  }
  cmd.insert(cmd.end(), launch.program.begin(), launch.program.end());
  return cmd;
}

std::optional<std::string> FindOnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return ::access(name.c_str(), X_OK) == 0 ? std::optional<std::string>(name) : std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    const size_t end = std::min(p.find(':', start), p.size());
    std::string candidate = p.substr(start, end - start) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return std::nullopt;
}

std::string SelfExecutable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("shammie") : p.string();
}

common::Result<int> RunMpirun(const MpirunLaunch& launch) {
  const std::vector<std::string> cmd = MpirunCommand(launch);
  std::vector<char*> argv;
  for (const auto& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  const pid_t pid = ::fork();
  if (pid < 0) return common::Internal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);  // Ctrl-C at the terminal reaches the launcher, not mpirun
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    for (const auto& [k, v] : launch.env) ::setenv(k.c_str(), v.c_str(), 1);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "shammie: cannot run %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  int handled = 0;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return common::Internal(std::string("waitpid: ") + std::strerror(errno));
    const int seen = g_signals.load();
    while (handled < seen) {
      ++handled;
      if (handled == 1) {
        std::fprintf(stderr, "\nshammie: stopping: running jobs are asked to stop; results so far are kept "
                             "(interrupt again to abort)\n");
        ::kill(pid, SIGUSR1);
      } else {
        std::fprintf(stderr, "\nshammie: aborting\n");
        ::kill(pid, SIGTERM);
      }
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace shammie::cluster
