// Where this process was started: under mpirun/srun or alone, inside a Slurm
// allocation or not, and how many cores it may use. Read once by main() and
// passed down (no globals). The engine uses it to decide whether to launch
// itself under mpirun; `shammie plan` shows the default rank count.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace shammie::cluster {

// Looks up an environment variable; injectable so tests need not touch the
// process environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup ProcessEnvironment();

struct LaunchEnvironment {
  bool inside_mpi = false;   // started by mpirun/srun with a world size
  int world_size = 1;
  int world_rank = 0;
  // This process's rank among the job's processes on its node
  // (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID); 0 alone.
  // Picks a GPU when a job does not name one (cluster/nccl_collectives.hpp).
  int local_rank = 0;
  bool inside_slurm = false;  // SLURM_JOB_ID is set
  std::string slurm_job_id;
  int usable_cores = 1;       // SLURM_CPUS_ON_NODE, else the CPU affinity mask, else hardware threads
  int slurm_tasks = 0;        // SLURM_NTASKS: the allocation's tasks (sbatch -n / --ntasks-per-node); 0 = unknown

  // Ranks `shammie run` launches with mpirun by default: inside a Slurm
  // allocation of at least 2 tasks, one rank per task (mpirun places them on
  // the allocation's nodes); otherwise one worker per usable core plus the
  // controller.
  int DefaultLocalRanks() const { return inside_slurm && slurm_tasks >= 2 ? slurm_tasks : usable_cores + 1; }
};

LaunchEnvironment DetectLaunchEnvironment(const EnvLookup& env);

}  // namespace shammie::cluster
