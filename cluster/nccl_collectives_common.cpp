// What both builds of the device collectives share (the real backend and the
// stub): names and sizes of the element types.
#include "cluster/nccl_collectives.hpp"

namespace shammie::cluster {

std::string_view DeviceDTypeName(DeviceDType dtype) {
  switch (dtype) {
    case DeviceDType::kFloat32: return "float32";
    case DeviceDType::kBFloat16: return "bfloat16";
    case DeviceDType::kFloat64: return "float64";
    case DeviceDType::kUint8: return "uint8";
  }
  return "unknown";
}

size_t DeviceDTypeSize(DeviceDType dtype) {
  switch (dtype) {
    case DeviceDType::kFloat32: return 4;
    case DeviceDType::kBFloat16: return 2;
    case DeviceDType::kFloat64: return 8;
    case DeviceDType::kUint8: return 1;
  }
  return 0;
}

}  // namespace shammie::cluster
