// A diagnostic for a GPU machine (bench/gpu_check.sh runs it): prints
// CudaRuntimeSummary() and tries to make a one-rank NCCL communicator.
// Exit 0: the communicator was made; 2: unavailable (no CUDA build or no
// device), with the reason on stderr; 3: any other failure.
// Usage: cuda_check [device]
#include <cstdio>
#include <cstdlib>

#include "cluster/nccl_collectives.hpp"

int main(int argc, char** argv) {
  using namespace shammie;
  std::printf("%s", cluster::CudaRuntimeSummary().c_str());
  std::fflush(stdout);  // the summary before any error, when both go to one log
  auto solo = cluster::MakeSoloCollectives();
  cluster::NcclOptions options;
  options.device = argc > 1 ? std::atoi(argv[1]) : 0;
  options.timeout = std::chrono::seconds(60);
  auto made = cluster::MakeNcclCollectives(*solo, options);
  if (!made.ok()) {
    std::fprintf(stderr, "one-rank NCCL communicator: %s\n", made.status().ToString().c_str());
    return made.status().code() == common::StatusCode::kUnavailable ? 2 : 3;
  }
  std::printf("one-rank NCCL communicator: made on CUDA device %d (backend %s)\n", (*made)->device(),
              std::string((*made)->backend()).c_str());
  return 0;
}
