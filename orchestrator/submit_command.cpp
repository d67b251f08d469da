// `shammie submit`: the experiment as a Slurm batch job (docs/slurm.md).
// The script's text and its signal/requeue protocol live in cluster/slurm.hpp;
// here: the [slurm] table merged with the command line, the checks, and the
// files under RUN_DIR/slurm/.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cluster/launcher.hpp"
#include "cluster/slurm.hpp"
#include "orchestrator/commands.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/shard.hpp"

namespace shammie::orchestrator {

namespace fs = std::filesystem;

namespace {

// Seconds as a Slurm time limit: HH:MM:SS, or D-HH:MM:SS from a day on.
std::string SlurmTime(int64_t s) {
  char buf[64];
  if (s >= 86400) {
    std::snprintf(buf, sizeof buf, "%lld-%02lld:%02lld:%02lld", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600), static_cast<long long>(s % 3600 / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60), static_cast<long long>(s % 60));
  }
  return buf;
}

std::string NowIso() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string JoinQuoted(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + cluster::ShellQuote(a);
  return s;
}

// Writes `text` to `path` atomically (temporary file, rename).
bool WriteAtomically(const std::string& path, const std::string& text, mode_t mode, std::string* error) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) {
      *error = "cannot write " + tmp;
      return false;
    }
  }
  ::chmod(tmp.c_str(), mode);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    *error = "cannot rename " + tmp + ": " + ec.message();
    return false;
  }
  return true;
}

}  // namespace

int SubmitCommand(const SubmitArgs& args, const workers::KindRegistry& kinds, std::ostream& out, std::ostream& err) {
  std::optional<ExperimentSpec> spec = LoadOrReport(args.spec, kinds, err);
  if (!spec) return kExitBadInput;
  auto plan = BuildPlan(*spec);
  if (!plan.ok()) {
    err << args.spec << ": " << plan.status().message() << "\n";
    return kExitBadInput;
  }
  for (const auto& stage : spec->stages) {
    const workers::JobKind* kind = kinds.Find(stage.kind);
    if (!kind || !kind->run) {
      err << args.spec << ":" << stage.location.line << ":" << stage.location.column << ": stage.kind: job kind \""
          << stage.kind << "\" has no code in this build of shammie (it can be validated, not run)\n";
      return kExitBadInput;
    }
  }
  const SlurmSpec& file = spec->slurm;
  // Where a value came from, for errors: the [slurm] table or the command line.
  auto from_file = [&](bool cli_set) { return !cli_set && file.present; };
  auto report = [&](const std::string& key, bool cli_set, const std::string& message) {
    if (from_file(cli_set)) {
      err << file.location.ToString() << ": slurm." << key << ": " << message << "\n";
    } else {
      std::string flag = key;
      for (char& c : flag) c = c == '_' ? '-' : c;
      err << "shammie submit: --" << flag << ": " << message << "\n";
    }
    return kExitBadInput;
  };

  cluster::SlurmResources r;
  r.nodes = args.nodes.value_or(file.nodes.value_or(1));
  r.gpus_per_node = args.gpus_per_node.value_or(file.gpus_per_node.value_or(0));
  r.ntasks_per_node =
      args.ntasks_per_node.value_or(file.ntasks_per_node.value_or(r.gpus_per_node > 0 ? r.gpus_per_node
                                                                                      : (r.nodes == 1 ? 2 : 1)));
  r.cpus_per_task = args.cpus_per_task.value_or(file.cpus_per_task.value_or(1));
  r.max_requeues = args.max_requeues.value_or(file.max_requeues.value_or(3));
  r.grace_s = args.grace_s.value_or(file.grace_s.value_or(120));
  r.job_name = args.job_name.value_or(file.job_name.value_or(spec->name));
  r.partition = args.partition ? args.partition : file.partition;
  r.account = args.account ? args.account : file.account;
  r.qos = args.qos ? args.qos : file.qos;
  if (args.mem_per_cpu) {
    r.memory_per_cpu = args.mem_per_cpu;
  } else if (file.mem_per_cpu_bytes) {
    r.memory_per_cpu = std::to_string((*file.mem_per_cpu_bytes + (1 << 20) - 1) >> 20) + "M";
  }
  if (args.time) {
    int64_t seconds = 0;
    if (auto problem = cluster::SlurmTimeProblem(*args.time, &seconds)) {
      return report("time", true, "\"" + *args.time + "\": " + *problem);
    }
    r.time = *args.time;
  } else if (file.time_s) {
    r.time = SlurmTime(*file.time_s);
  }
  if (common::Status ok = cluster::CheckResources(r); !ok.ok()) {
    const std::string& m = ok.message();
    const std::string key = m.substr(0, m.find(':'));
    const bool cli_set = (key == "nodes" && args.nodes) || (key == "ntasks_per_node" && args.ntasks_per_node) ||
                         (key == "gpus_per_node" && args.gpus_per_node) ||
                         (key == "cpus_per_task" && args.cpus_per_task) || (key == "grace" && args.grace_s) ||
                         (key == "max_requeues" && args.max_requeues) || (key == "time" && args.time) ||
                         (key == "partition" && args.partition) || (key == "account" && args.account) ||
                         (key == "qos" && args.qos) || (key == "job_name" && args.job_name) ||
                         (key == "memory_per_cpu" && args.mem_per_cpu);
    return report(key, cli_set, m.substr(m.find(':') + 2));
  }
  const int64_t ranks = r.nodes * r.ntasks_per_node;
  for (const auto& j : plan->jobs) {
    if (j.resources.ranks > ranks - 1) {
      err << "shammie submit: stage \"" << j.stage << "\" needs resources.ranks = " << j.resources.ranks
          << " but the job has " << ranks << " ranks (" << ranks - 1
          << " workers and the controller): raise --nodes or --ntasks-per-node\n";
      return kExitBadInput;
    }
  }
  int64_t array = args.array.value_or(file.array.value_or(0));
  const int64_t parts = IndependentParts(*plan);
  if (array > parts) {
    out << "shammie submit: the DAG has " << parts << " independent part" << (parts == 1 ? "" : "s") << "; using "
        << parts << " array task" << (parts == 1 ? "" : "s") << " instead of " << array << "\n";
    array = parts;
  }

  // Paths: everything absolute, since the job starts elsewhere.
  std::error_code ec;
  const std::string workdir = fs::current_path(ec).string();
  const std::string dir_arg = args.out.empty() ? spec->output : args.out;
  const std::string run_dir = fs::absolute(dir_arg, ec).lexically_normal().string();
  const std::string spec_path = fs::absolute(args.spec, ec).lexically_normal().string();
  const std::string slurm_dir = SlurmDir(run_dir);
  const std::string script_path = slurm_dir + "/job.sbatch";

  // A run directory with a queued or running job would get two controllers.
  if (!args.dry_run && fs::exists(SlurmJobsFile(run_dir))) {
    std::ifstream in(SlurmJobsFile(run_dir));
    std::vector<std::string> ids;
    for (std::string line; std::getline(in, line);) {
      std::istringstream words(line);
      std::string id;
      if (words >> id) ids.push_back(id);
    }
    for (const auto& s : cluster::QueryJobStates(ids)) {
      if (s.state == "PENDING" || s.state == "RUNNING" || s.state == "REQUEUED" || s.state == "CONFIGURING" ||
          s.state == "COMPLETING" || s.state == "SUSPENDED" || s.state == "REQUEUE_HOLD") {
        err << "shammie submit: Slurm job " << s.id << " (" << s.state << ") already runs in " << run_dir
            << "; wait for it or cancel it (scancel " << s.id << ") before submitting again\n";
        return kExitBadInput;
      }
    }
  }

  cluster::BatchScript script;
  script.resources = r;
  script.run_dir = run_dir;
  script.workdir = workdir;
  script.array_tasks = array;
  script.output_pattern = slurm_dir + (array > 0 ? "/%A_%a.out" : "/%j.out");
  script.program = {cluster::SelfExecutable(), "run", spec_path, "--out"};
  if (array > 0) {
    script.program.push_back(cluster::kShardDirWord);
    script.program.push_back("--shard");
    script.program.push_back(std::string(cluster::kShardIndexWord) + "/" + std::to_string(array));
  } else {
    script.program.push_back(run_dir);
  }
  script.program.push_back("--resume");
  script.program.push_back("--progress");
  script.program.push_back("plain");
  const std::string command_line = JoinQuoted(args.argv);
  script.provenance = "Submitted from " + workdir + " with:\n  " + command_line + "\nExperiment " + spec->name + " (" +
                      std::to_string(plan->jobs.size()) + " jobs; spec hash " + spec->spec_hash + ")";
  for (const char* name : {"PATH", "LD_LIBRARY_PATH", "SLURM_CONF"}) {
    if (const char* v = std::getenv(name); v && *v) script.env.emplace_back(name, v);
  }
  script.env.emplace_back("OMP_NUM_THREADS", std::to_string(r.cpus_per_task));
  script.env.emplace_back("OMPI_MCA_mpi_yield_when_idle", "1");
  script.env.emplace_back("SHAMMIE_COMMAND_LINE", command_line);
  const std::string text = cluster::RenderBatchScript(script);

  fs::create_directories(slurm_dir, ec);
  if (ec) {
    err << "shammie submit: cannot create " << slurm_dir << ": " << ec.message() << "\n";
    return kExitBadInput;
  }
  std::string error;
  if (!WriteAtomically(script_path, text, 0755, &error)) {
    err << "shammie submit: " << error << "\n";
    return kExitInternal;
  }
  if (args.dry_run) {
    out << text << std::flush;
    err << "shammie submit: wrote " << script_path << " (not submitted: --dry-run); submit it with: sbatch "
        << cluster::ShellQuote(script_path) << "\n";
    return kExitOk;
  }
  auto job = cluster::SubmitBatchScript(script_path);
  if (!job.ok()) {
    err << "shammie submit: " << job.status().message() << "; the script is " << script_path << "\n";
    return kExitInternal;
  }
  std::ofstream(SlurmJobsFile(run_dir), std::ios::app) << *job << " " << array << " " << NowIso() << "\n";
  out << "Submitted batch job " << *job << (array > 0 ? " (array of " + std::to_string(array) + " tasks)" : "")
      << "\n";
  out << "shammie: script " << script_path << "; output in " << slurm_dir << "/; watch with: shammie status "
      << cluster::ShellQuote(run_dir) << (array > 0 ? "; join the shards with: shammie merge " + cluster::ShellQuote(run_dir) : "")
      << "\n";
  return kExitOk;
}

}  // namespace shammie::orchestrator
