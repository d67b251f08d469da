// Device (GPU) collectives of one gang over NCCL: the data plane for tensors
// in GPU memory (DESIGN.md §3). The gang's CPU `Collectives` (MPI or
// in-process) is used once, at creation, to agree and to broadcast the NCCL
// unique id; every later call moves bytes over NCCL only.
//
// This header names no CUDA or NCCL type, so code built without CUDA can
// include it: device pointers are `void*`, streams are a `cudaStream_t` passed
// as `void*`. Which implementation is linked is decided by CMake
// (SHAMMIE_WITH_CUDA, cmake/ShammieDependencies.cmake):
// - cluster/nccl_collectives.cpp: the real one (cudart + NCCL);
// - cluster/nccl_collectives_stub.cpp: MakeNcclCollectives() answers
//   Unavailable ("built without CUDA"). Never a silent fallback to the CPU.
// Targets that link shammie::nccl_collectives see SHAMMIE_WITH_CUDA=1 or 0.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "cluster/channel.hpp"
#include "common/status.hpp"

namespace shammie::cluster {

// Element types of device buffers. kUint8 is raw bytes (for Broadcast).
enum class DeviceDType { kFloat32, kBFloat16, kFloat64, kUint8 };
std::string_view DeviceDTypeName(DeviceDType dtype);  // "float32", ...
size_t DeviceDTypeSize(DeviceDType dtype);            // bytes per element

// The device data plane of one gang. Calls are collective: every member
// makes the same calls in the same order, with the same count and dtype.
// Not thread-safe: one thread at a time per object (each call first makes the
// object's device current on the calling thread).
//
// Every call enqueues its NCCL operation on `stream` (a cudaStream_t as
// void*; nullptr is the legacy default stream) and then waits, polling, until
// the operation has finished on the device, the communicator reports an
// asynchronous error, or the timeout the object was made with passes. Only the
// operation is waited for, not later work on the stream.
//
// Errors (every CUDA and NCCL call is checked, and the message names the call,
// the library's error text and the gang rank):
// - DeadlineExceeded: the gang did not complete the operation in time (a
//   peer died, hangs, or called something else);
// - Aborted: NCCL reported a remote or system error (a lost peer, a network
//   failure): rerun the job;
// - InvalidArgument: a bad argument refused before NCCL (null buffer, root
//   out of range, a dtype the call does not take; the communicator stays
//   usable), or NCCL's invalid-argument/usage errors;
// - ResourceExhausted: CUDA ran out of memory;
// - Internal: any other CUDA/NCCL failure.
// After any CUDA/NCCL error or timeout the communicator is aborted
// (ncclCommAbort), so no rank waits on it forever, and every later call fails
// with FailedPrecondition naming the first error. Destruction of a healthy object finalizes the
// communicator (collective, bounded by the timeout, then aborted).
class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual int rank() const = 0;    // 0 .. size()-1: the gang rank it was made with
  virtual int size() const = 0;
  virtual int device() const = 0;  // the CUDA device index this rank uses
  virtual std::string_view backend() const = 0;  // "nccl"

  // In place: `data` (device memory, `count` elements) becomes the sum over
  // the gang. Takes kFloat32, kBFloat16 and kFloat64.
  virtual common::Status AllreduceSum(void* data, size_t count, DeviceDType dtype, void* stream = nullptr) = 0;
  // In place: `data` on every rank becomes gang rank `root`'s `data`.
  virtual common::Status Broadcast(void* data, size_t count, DeviceDType dtype, int root, void* stream = nullptr) = 0;
};

struct NcclOptions {
  // The CUDA device this rank uses. -1: local_rank % (visible devices).
  int device = -1;
  // This process's rank among the processes on its node
  // (LaunchEnvironment::local_rank); only used when device is -1.
  int local_rank = 0;
  // Bounds creation and every later call.
  Micros timeout = std::chrono::minutes(5);
};

// Collective over `gang` (every member calls it; the gang's CPU collectives
// must be idle). Steps:
//  1. each rank checks its device (visible devices > 0, index in range,
//     cudaSetDevice) and the gang agrees with one AllreduceSum: if any rank
//     failed, every rank returns (Unavailable), none waits in NCCL;
//  2. gang rank 0 calls ncclGetUniqueId and sends the 128 bytes with
//     Collectives::Broadcast (or its error, which every rank returns);
//  3. every rank calls ncclCommInitRankConfig (non-blocking) with its gang
//     rank and polls until the communicator is ready or the timeout passes
//     (DeadlineExceeded; the communicator is aborted).
// Steps 1 and 2 are bounded by the gang's own collective timeout, step 3 by
// options.timeout.
// Returns Unavailable, with the reason and what to do, when shammie was built
// without CUDA or when this process sees no usable CUDA device; it never falls
// back to the CPU (use the gang's Collectives for host memory).
common::Result<std::unique_ptr<DeviceCollectives>> MakeNcclCollectives(Collectives& gang,
                                                                      const NcclOptions& options = {});

// Whether this binary was built with the NCCL backend (SHAMMIE_WITH_CUDA).
bool BuiltWithCuda();

// CUDA devices this process can use: 0 when built without CUDA, without a
// driver, or without a device (cudaGetDeviceCount failing counts as 0).
int VisibleCudaDeviceCount();

// Several lines for a diagnostic (`shammie` doctor-style output, logs):
// whether CUDA was built in, CUDA runtime and driver versions, the visible
// devices (index, name, compute capability, memory) or why none is visible,
// and the NCCL version (library and header). Never fails; touches no device
// beyond querying its properties.
std::string CudaRuntimeSummary();

}  // namespace shammie::cluster
