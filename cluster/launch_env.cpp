#include "cluster/launch_env.hpp"

#include <sched.h>

#include <charconv>
#include <cstdlib>
#include <thread>

namespace shammie::cluster {

EnvLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

namespace {
std::optional<int> PositiveInt(const std::optional<std::string>& text) {
  if (!text || text->empty()) return std::nullopt;
  int v = 0;
  auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || ptr != text->data() + text->size() || v < 0) return std::nullopt;
  return v;
}
}  // namespace

LaunchEnvironment DetectLaunchEnvironment(const EnvLookup& env) {
  LaunchEnvironment out;
  // Open MPI's mpirun, then PMIx (srun --mpi=pmix), then generic PMI.
  const char* kSizeVars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
  const char* kRankVars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
  for (int i = 0; i < 3; ++i) {
    auto size = PositiveInt(env(kSizeVars[i]));
    auto rank = PositiveInt(env(kRankVars[i]));
    if (size && *size > 0 && rank) {
      out.inside_mpi = true;
      out.world_size = *size;
      out.world_rank = *rank;
      break;
    }
  }
  // srun --mpi=pmix sets PMIX_RANK but no PMIX_SIZE: the step's size and
  // rank come from Slurm (the batch shell itself has no PMIX_RANK, so a
  // `shammie run` there still launches mpirun inside the allocation).
  if (!out.inside_mpi && env("PMIX_RANK")) {
    auto size = PositiveInt(env("SLURM_STEP_NUM_TASKS"));
    auto rank = PositiveInt(env("SLURM_PROCID"));
    if (size && *size > 0 && rank) {
      out.inside_mpi = true;
      out.world_size = *size;
      out.world_rank = *rank;
    }
  }
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    if (!out.inside_mpi) break;
    if (auto local = PositiveInt(env(name))) {
      out.local_rank = *local;
      break;
    }
  }
  if (auto job = env("SLURM_JOB_ID"); job && !job->empty()) {
    out.inside_slurm = true;
    out.slurm_job_id = *job;
  }
  if (auto tasks = PositiveInt(env("SLURM_NTASKS")); out.inside_slurm && tasks) out.slurm_tasks = *tasks;
  if (auto cpus = PositiveInt(env("SLURM_CPUS_ON_NODE")); out.inside_slurm && cpus && *cpus > 0) {
    out.usable_cores = *cpus;
  } else {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
      out.usable_cores = CPU_COUNT(&set);
    } else {
      out.usable_cores = std::max(1u, std::thread::hardware_concurrency());
    }
  }
  return out;
}

}  // namespace shammie::cluster
