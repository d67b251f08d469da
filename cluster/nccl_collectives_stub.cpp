// The device collectives when shammie is built without CUDA
// (SHAMMIE_WITH_CUDA=OFF, or AUTO without a CUDA toolkit and NCCL): the
// factory answers Unavailable, so a job that asked for GPUs fails loudly
// instead of running on the CPU.
#include "cluster/nccl_collectives.hpp"

namespace shammie::cluster {

common::Result<std::unique_ptr<DeviceCollectives>> MakeNcclCollectives(Collectives& gang, const NcclOptions&) {
  return common::Unavailable("NCCL device collectives (gang rank " + std::to_string(gang.rank()) +
                             "): this shammie was built without CUDA (SHAMMIE_WITH_CUDA=OFF, or AUTO found no "
                             "CUDA toolkit and NCCL); rebuild with -DSHAMMIE_WITH_CUDA=ON on a machine with CUDA, "
                             "or run the job on CPU ranks");
}

bool BuiltWithCuda() { return false; }

int VisibleCudaDeviceCount() { return 0; }

std::string CudaRuntimeSummary() { return "CUDA: not built in (SHAMMIE_WITH_CUDA=OFF or not found at configure time)\n"; }

}  // namespace shammie::cluster
