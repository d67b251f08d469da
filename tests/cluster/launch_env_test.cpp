#include "cluster/launch_env.hpp"

#include <gtest/gtest.h>

#include <map>

namespace shammie::cluster {
namespace {

EnvLookup Fake(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(LaunchEnvTest, AloneOnALaptop) {
  auto env = DetectLaunchEnvironment(Fake({}));
  EXPECT_FALSE(env.inside_mpi);
  EXPECT_FALSE(env.inside_slurm);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_GE(env.usable_cores, 1);
  EXPECT_EQ(env.DefaultLocalRanks(), env.usable_cores + 1);
}

TEST(LaunchEnvTest, UnderMpirun) {
  auto env = DetectLaunchEnvironment(Fake({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "2"}}));
  EXPECT_TRUE(env.inside_mpi);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.world_rank, 2);
}

TEST(LaunchEnvTest, UnderSrunWithPmix) {
  auto env = DetectLaunchEnvironment(Fake({{"PMIX_SIZE", "8"}, {"PMIX_RANK", "0"}, {"SLURM_JOB_ID", "1234"},
                                           {"SLURM_CPUS_ON_NODE", "16"}}));
  EXPECT_TRUE(env.inside_mpi);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_TRUE(env.inside_slurm);
  EXPECT_EQ(env.slurm_job_id, "1234");
  EXPECT_EQ(env.usable_cores, 16);
}

// What Slurm 22.05's srun --mpi=pmix really sets (no PMIX_SIZE; checked on
// the test cluster, tests/slurm/).
TEST(LaunchEnvTest, UnderRealSrunWithPmix) {
  auto env = DetectLaunchEnvironment(Fake({{"PMIX_RANK", "3"}, {"PMIX_NAMESPACE", "slurm.pmix.5.0"},
                                           {"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_NTASKS", "4"},
                                           {"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "1"}, {"SLURM_JOB_ID", "5"}}));
  EXPECT_TRUE(env.inside_mpi);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.world_rank, 3);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_TRUE(env.inside_slurm);
}

// The batch shell of an allocation is not an MPI job: `shammie run` there
// launches mpirun inside the allocation.
TEST(LaunchEnvTest, BatchShellIsNotAnMpiJob) {
  auto env = DetectLaunchEnvironment(Fake({{"SLURM_JOB_ID", "5"}, {"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "0"},
                                           {"SLURM_LOCALID", "0"}, {"SLURM_CPUS_ON_NODE", "2"}}));
  EXPECT_FALSE(env.inside_mpi);
  EXPECT_TRUE(env.inside_slurm);
  EXPECT_EQ(env.usable_cores, 2);
  EXPECT_EQ(env.slurm_tasks, 4);
  EXPECT_EQ(env.DefaultLocalRanks(), 4);  // one rank per task of the allocation, not cores + 1
}

TEST(LaunchEnvTest, LocalRank) {
  EXPECT_EQ(DetectLaunchEnvironment(Fake({})).local_rank, 0);
  auto mpirun = DetectLaunchEnvironment(Fake({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"},
                                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}));
  EXPECT_EQ(mpirun.local_rank, 1);
  auto srun = DetectLaunchEnvironment(Fake({{"PMIX_SIZE", "8"}, {"PMIX_RANK", "7"}, {"SLURM_LOCALID", "3"}}));
  EXPECT_EQ(srun.local_rank, 3);
  // Outside an MPI job a stray variable means nothing.
  EXPECT_EQ(DetectLaunchEnvironment(Fake({{"SLURM_LOCALID", "2"}})).local_rank, 0);
}

TEST(LaunchEnvTest, GarbageIsIgnored) {
  auto env = DetectLaunchEnvironment(Fake({{"OMPI_COMM_WORLD_SIZE", "four"}, {"OMPI_COMM_WORLD_RANK", "0"}}));
  EXPECT_FALSE(env.inside_mpi);
}

}  // namespace
}  // namespace shammie::cluster
