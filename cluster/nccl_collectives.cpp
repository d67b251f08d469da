// The NCCL backend of DeviceCollectives (cluster/nccl_collectives.hpp). The
// only translation unit that includes <cuda_runtime.h> and <nccl.h>
// (scripts/check_layers.sh); built when CMake found CUDA and NCCL
// (SHAMMIE_WITH_CUDA). Every CUDA and NCCL call goes through one of the
// checking macros below, which turn a failure into a Status naming the call,
// file:line, the gang rank and the library's error text (STYLE.md 11).
//
// Nothing here blocks without a deadline (STYLE.md 6): the communicator is
// non-blocking (ncclConfig_t::blocking = 0), so creation and enqueueing return
// ncclInProgress instead of waiting for peers, and completion is found by
// polling a CUDA event and ncclCommGetAsyncError until the deadline.
#include "cluster/nccl_collectives.hpp"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

namespace shammie::cluster {
namespace {

using common::Status;
using common::StatusCode;
using Clock = std::chrono::steady_clock;

const char* Basename(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

std::string Prefix(int rank) { return "NCCL device collectives (gang rank " + std::to_string(rank) + ")"; }

// "ncclAllReduce(...) at nccl_collectives.cpp:123 (gang rank 1)"
std::string Site(const char* call, const char* file, int line, int rank) {
  return std::string(call) + " at " + Basename(file) + ":" + std::to_string(line) + " (gang rank " +
         std::to_string(rank) + ")";
}

std::string Seconds(Micros d) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g s", static_cast<double>(d.count()) / 1e6);
  return text;
}

StatusCode CodeForCuda(cudaError_t rc) {
  switch (rc) {
    case cudaErrorMemoryAllocation: return StatusCode::kResourceExhausted;
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice: return StatusCode::kUnavailable;
    default: return StatusCode::kInternal;
  }
}

Status CudaFailure(cudaError_t rc, const char* call, const char* file, int line, int rank) {
  // Clears the error if it is not sticky, so it does not resurface in an
  // unrelated later call.
  (void)cudaGetLastError();
  return Status(CodeForCuda(rc), Site(call, file, line, rank) + ": " + cudaGetErrorString(rc) + " (" +
                                     cudaGetErrorName(rc) + ")");
}

// A lost peer or a broken network means the job may succeed when rerun; bad
// arguments never will.
StatusCode CodeForNccl(ncclResult_t rc) {
  switch (rc) {
    case ncclRemoteError:
    case ncclSystemError: return StatusCode::kAborted;
    case ncclInvalidArgument:
    case ncclInvalidUsage: return StatusCode::kInvalidArgument;
    default: return StatusCode::kInternal;
  }
}

Status NcclFailure(ncclResult_t rc, ncclComm_t comm, const char* call, const char* file, int line, int rank) {
  std::string message = Site(call, file, line, rank) + ": " + ncclGetErrorString(rc);
  if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') {
    message += std::string(" (last NCCL error: ") + last + ")";
  }
  return Status(CodeForNccl(rc), std::move(message));
}

#define SHAMMIE_CUDA_RETURN_IF_ERROR(rank, call)                                       \
  do {                                                                                 \
    const cudaError_t shammie_cuda_rc_ = (call);                                       \
    if (shammie_cuda_rc_ != cudaSuccess) {                                             \
      return CudaFailure(shammie_cuda_rc_, #call, __FILE__, __LINE__, (rank));         \
    }                                                                                  \
  } while (false)

// For calls on a non-blocking communicator: ncclInProgress is not an error,
// the caller then waits with WaitForComm().
#define SHAMMIE_NCCL_RETURN_IF_ERROR(rank, comm, call)                                 \
  do {                                                                                 \
    const ncclResult_t shammie_nccl_rc_ = (call);                                      \
    if (shammie_nccl_rc_ != ncclSuccess && shammie_nccl_rc_ != ncclInProgress) {       \
      return NcclFailure(shammie_nccl_rc_, (comm), #call, __FILE__, __LINE__, (rank)); \
    }                                                                                  \
  } while (false)

// Polling: yields first (a collective on one node takes microseconds), then
// sleeps growing to 200 us (a long allreduce costs a core nothing).
class Poller {
 public:
  explicit Poller(Clock::time_point deadline) : deadline_(deadline) {}
  // False once the deadline has passed.
  bool Wait() {
    if (Clock::now() >= deadline_) return false;
    if (++round_ < 64) {
      sched_yield();
      return true;
    }
    sleep_us_ = std::min(sleep_us_ == 0 ? 10 : sleep_us_ * 2, 200);
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    return true;
  }

 private:
  Clock::time_point deadline_;
  int round_ = 0;
  int sleep_us_ = 0;
};

// Waits until the communicator's state leaves ncclInProgress (after a call
// on it returned ncclInProgress). `what` names that call for the messages.
Status WaitForComm(ncclComm_t comm, Clock::time_point deadline, Micros timeout, const std::string& what, int rank) {
  Poller poller(deadline);
  for (;;) {
    ncclResult_t state = ncclInProgress;
    SHAMMIE_NCCL_RETURN_IF_ERROR(rank, comm, ncclCommGetAsyncError(comm, &state));
    if (state == ncclSuccess) return Status::Ok();
    if (state != ncclInProgress) {
      std::string message = what + " (gang rank " + std::to_string(rank) + "): " + ncclGetErrorString(state);
      if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') {
        message += std::string(" (last NCCL error: ") + last + ")";
      }
      return Status(CodeForNccl(state), std::move(message));
    }
    if (!poller.Wait()) {
      return Status(StatusCode::kDeadlineExceeded,
                    what + " (gang rank " + std::to_string(rank) + "): not done after " + Seconds(timeout) +
                        ": another rank of the gang did not take part (it died, hangs, or called something else); "
                        "the communicator was aborted");
    }
  }
}

ncclDataType_t NcclType(DeviceDType dtype) {
  switch (dtype) {
    case DeviceDType::kFloat32: return ncclFloat32;
    case DeviceDType::kBFloat16: return ncclBfloat16;
    case DeviceDType::kFloat64: return ncclFloat64;
    case DeviceDType::kUint8: return ncclUint8;
  }
  return ncclUint8;
}

// Owns a communicator until it is handed to NcclCollectives: any early
// return during creation aborts it, so no rank keeps waiting in NCCL.
struct CommAborter {
  void operator()(ncclComm_t comm) const {
    if (comm != nullptr) (void)ncclCommAbort(comm);
  }
};
using CommHandle = std::unique_ptr<ncclComm, CommAborter>;

struct EventDestroyer {
  void operator()(cudaEvent_t event) const {
    if (event != nullptr) (void)cudaEventDestroy(event);
  }
};
using EventHandle = std::unique_ptr<CUevent_st, EventDestroyer>;

class NcclCollectives final : public DeviceCollectives {
 public:
  NcclCollectives(CommHandle comm, EventHandle done, int rank, int size, int device, Micros timeout)
      : comm_(std::move(comm)), done_(std::move(done)), rank_(rank), size_(size), device_(device), timeout_(timeout) {}

  // A healthy communicator is finalized (all ranks flush, bounded by the
  // timeout) and destroyed; one that failed, or does not finalize in time, is
  // aborted (comm_'s deleter).
  ~NcclCollectives() override {
    (void)cudaSetDevice(device_);
    done_.reset();
    if (failed_ || comm_ == nullptr) return;
    const auto deadline = Clock::now() + timeout_;
    const ncclResult_t rc = ncclCommFinalize(comm_.get());
    if (rc != ncclSuccess && rc != ncclInProgress) return;
    if (!WaitForComm(comm_.get(), deadline, timeout_, "ncclCommFinalize", rank_).ok()) return;
    (void)ncclCommDestroy(comm_.release());
  }
  NcclCollectives(const NcclCollectives&) = delete;
  NcclCollectives& operator=(const NcclCollectives&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int device() const override { return device_; }
  std::string_view backend() const override { return "nccl"; }

  Status AllreduceSum(void* data, size_t count, DeviceDType dtype, void* stream) override {
    if (dtype == DeviceDType::kUint8) {
      return common::InvalidArgument(Prefix(rank_) + ": AllreduceSum takes float32, bfloat16 or float64, not " +
                                     std::string(DeviceDTypeName(dtype)));
    }
    return Run("ncclAllReduce", data, count, stream, [&](cudaStream_t s) {
      return ncclAllReduce(data, data, count, NcclType(dtype), ncclSum, comm_.get(), s);
    });
  }

  Status Broadcast(void* data, size_t count, DeviceDType dtype, int root, void* stream) override {
    if (root < 0 || root >= size_) {
      return common::InvalidArgument(Prefix(rank_) + ": Broadcast root " + std::to_string(root) +
                                     " is not a gang rank (0.." + std::to_string(size_ - 1) + ")");
    }
    return Run("ncclBroadcast", data, count, stream, [&](cudaStream_t s) {
      return ncclBroadcast(data, data, count, NcclType(dtype), root, comm_.get(), s);
    });
  }

 private:
  // Enqueues one operation and waits for it; on any failure the
  // communicator is aborted and every later call fails with the first error.
  template <typename Enqueue>
  Status Run(const char* call, const void* data, size_t count, void* stream, Enqueue enqueue) {
    if (failed_) {
      return common::FailedPrecondition(Prefix(rank_) + ": " + call +
                                        ": the communicator was aborted after an earlier error (" +
                                        first_error_.ToString() + "); make a new one");
    }
    if (count == 0) return Status::Ok();
    if (data == nullptr) return common::InvalidArgument(Prefix(rank_) + ": " + call + " on a null buffer");
    Status status = EnqueueAndWait(call, stream, enqueue);
    if (!status.ok()) {
      failed_ = true;
      first_error_ = status;
      comm_.reset();  // ncclCommAbort: unblocks this rank's kernel; peers see a remote error or time out
    }
    return status;
  }

  template <typename Enqueue>
  Status EnqueueAndWait(const char* call, void* stream_arg, Enqueue enqueue) {
    const auto deadline = Clock::now() + timeout_;
    auto stream = static_cast<cudaStream_t>(stream_arg);
    SHAMMIE_CUDA_RETURN_IF_ERROR(rank_, cudaSetDevice(device_));
    const ncclResult_t rc = enqueue(stream);
    if (rc == ncclInProgress) {
      SHAMMIE_RETURN_IF_ERROR(WaitForComm(comm_.get(), deadline, timeout_, call, rank_));
    } else if (rc != ncclSuccess) {
      return NcclFailure(rc, comm_.get(), call, __FILE__, __LINE__, rank_);
    }
    SHAMMIE_CUDA_RETURN_IF_ERROR(rank_, cudaEventRecord(done_.get(), stream));
    Poller poller(deadline);
    for (;;) {
      const cudaError_t query = cudaEventQuery(done_.get());
      if (query == cudaSuccess) return Status::Ok();
      if (query != cudaErrorNotReady) {
        return CudaFailure(query, (std::string("cudaEventQuery (after ") + call + ")").c_str(), __FILE__, __LINE__,
                           rank_);
      }
      ncclResult_t state = ncclSuccess;
      SHAMMIE_NCCL_RETURN_IF_ERROR(rank_, comm_.get(), ncclCommGetAsyncError(comm_.get(), &state));
      if (state != ncclSuccess && state != ncclInProgress) {
        return NcclFailure(state, comm_.get(), call, __FILE__, __LINE__, rank_);
      }
      if (!poller.Wait()) {
        return Status(StatusCode::kDeadlineExceeded,
                      std::string(call) + " (gang rank " + std::to_string(rank_) + "): not done after " +
                          Seconds(timeout_) +
                          ": another rank of the gang did not take part (it died, hangs, or called something "
                          "else); the communicator was aborted");
      }
    }
  }

  CommHandle comm_;
  EventHandle done_;
  int rank_, size_, device_;
  Micros timeout_;
  bool failed_ = false;
  Status first_error_;
};

// Step 1 of MakeNcclCollectives on this rank: a visible device, in range,
// made current.
common::Result<int> PickDevice(const NcclOptions& options, int rank) {
  int count = 0;  // left unwritten when there is no driver (ENVIRONMENT.md)
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count <= 0) {
    (void)cudaGetLastError();
    const std::string why = rc == cudaSuccess ? std::string("cudaGetDeviceCount returned 0")
                                              : std::string("cudaGetDeviceCount: ") + cudaGetErrorString(rc) +
                                                    " (" + cudaGetErrorName(rc) + ")";
    return common::Unavailable(Prefix(rank) + ": no CUDA device is visible to this process (" + why +
                               "); run the job where a GPU and its driver are (check nvidia-smi and "
                               "CUDA_VISIBLE_DEVICES), or run it on CPU ranks with the MPI collectives");
  }
  if (options.device < -1 || options.local_rank < 0) {
    return common::InvalidArgument(Prefix(rank) + ": device " + std::to_string(options.device) + " / local rank " +
                                   std::to_string(options.local_rank) + " are out of range");
  }
  const int device = options.device >= 0 ? options.device : options.local_rank % count;
  if (device >= count) {
    return common::InvalidArgument(Prefix(rank) + ": CUDA device " + std::to_string(device) + " was asked for, but " +
                                   std::to_string(count) + " are visible (0.." + std::to_string(count - 1) + ")");
  }
  SHAMMIE_CUDA_RETURN_IF_ERROR(rank, cudaSetDevice(device));
  return device;
}

constexpr char kIdOk = 'I';
constexpr char kIdFailed = 'E';

std::string VersionText(int major, int minor) { return std::to_string(major) + "." + std::to_string(minor); }

}  // namespace

common::Result<std::unique_ptr<DeviceCollectives>> MakeNcclCollectives(Collectives& gang, const NcclOptions& options) {
  const int rank = gang.rank();
  const int size = gang.size();
  const auto deadline = Clock::now() + options.timeout;

  // 1. Every rank checks its device; one allreduce tells all whether any
  //    failed, so nobody goes on into NCCL alone.
  common::Result<int> device = PickDevice(options, rank);
  std::vector<double> failures{device.ok() ? 0.0 : 1.0};
  SHAMMIE_RETURN_IF_ERROR(gang.AllreduceSum(std::span<double>(failures))
                              .WithContext(Prefix(rank) + ": agreeing on devices over the gang's collectives"));
  if (!device.ok()) return device.status();
  if (failures[0] > 0) {
    return common::Unavailable(Prefix(rank) + ": " + std::to_string(static_cast<int>(failures[0])) + " of the gang's " +
                               std::to_string(size) +
                               " ranks have no usable CUDA device (their errors say why); no communicator was made");
  }

  // 2. Gang rank 0 makes the unique id and broadcasts it (or its error).
  std::string payload;
  if (rank == 0) {
    ncclUniqueId id;
    const ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc == ncclSuccess) {
      payload = kIdOk + std::string(id.internal, sizeof(id.internal));
    } else {
      payload = kIdFailed + NcclFailure(rc, nullptr, "ncclGetUniqueId(&id)", __FILE__, __LINE__, rank).message();
    }
  }
  SHAMMIE_RETURN_IF_ERROR(
      gang.Broadcast(payload, 0).WithContext(Prefix(rank) + ": broadcasting the NCCL unique id over the gang"));
  if (!payload.empty() && payload[0] == kIdFailed) {
    return common::Internal(Prefix(rank) + ": gang rank 0 could not make the NCCL unique id: " + payload.substr(1));
  }
  ncclUniqueId id;
  if (payload.size() != 1 + sizeof(id.internal) || payload[0] != kIdOk) {
    return common::Internal(Prefix(rank) + ": the NCCL unique id from gang rank 0 is " +
                            std::to_string(payload.size()) + " bytes, expected " +
                            std::to_string(1 + sizeof(id.internal)));
  }
  std::memcpy(id.internal, payload.data() + 1, sizeof(id.internal));

  // 3. Every rank joins the communicator, without blocking, until the deadline.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t raw = nullptr;
  const ncclResult_t rc = ncclCommInitRankConfig(&raw, size, id, rank, &config);
  CommHandle comm(raw);
  if (rc != ncclSuccess && rc != ncclInProgress) {
    return NcclFailure(rc, raw, "ncclCommInitRankConfig(&comm, size, id, rank, &config)", __FILE__, __LINE__, rank);
  }
  SHAMMIE_RETURN_IF_ERROR(WaitForComm(comm.get(), deadline, options.timeout,
                                      "ncclCommInitRankConfig (" + std::to_string(size) + " ranks, CUDA device " +
                                          std::to_string(device.value()) + ")",
                                      rank));
  cudaEvent_t event = nullptr;
  SHAMMIE_CUDA_RETURN_IF_ERROR(rank, cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return std::unique_ptr<DeviceCollectives>(std::make_unique<NcclCollectives>(
      std::move(comm), EventHandle(event), rank, size, device.value(), options.timeout));
}

bool BuiltWithCuda() { return true; }

int VisibleCudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return std::max(count, 0);
}

std::string CudaRuntimeSummary() {
  std::string out = "CUDA: built in (headers: CUDA " + VersionText(CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10) +
                    ", NCCL " + std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) + "." +
                    std::to_string(NCCL_PATCH) + ")\n";
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) {
    out += "CUDA runtime: " + VersionText(runtime / 1000, runtime % 1000 / 10) + "\n";
  } else {
    (void)cudaGetLastError();
    out += "CUDA runtime: unknown (cudaRuntimeGetVersion failed)\n";
  }
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) {
    out += "CUDA driver: supports CUDA " + VersionText(driver / 1000, driver % 1000 / 10) + "\n";
  } else {
    (void)cudaGetLastError();
    out += "CUDA driver: none found (no libcuda.so.1)\n";
  }
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    out += std::string("devices: 0 (cudaGetDeviceCount: ") + cudaGetErrorString(rc) + " (" + cudaGetErrorName(rc) +
           "))\n";
  } else {
    out += "devices: " + std::to_string(count) + "\n";
    for (int i = 0; i < count; ++i) {
      cudaDeviceProp prop;
      const cudaError_t prc = cudaGetDeviceProperties(&prop, i);
      if (prc != cudaSuccess) {
        (void)cudaGetLastError();
        out += "  device " + std::to_string(i) + ": cudaGetDeviceProperties: " + cudaGetErrorString(prc) + "\n";
        continue;
      }
      char line[512];
      std::snprintf(line, sizeof(line), "  device %d: %s, compute capability %d.%d, %.1f GiB, PCI %04x:%02x:%02x\n", i,
                    prop.name, prop.major, prop.minor,
                    static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                    static_cast<unsigned>(prop.pciDomainID), static_cast<unsigned>(prop.pciBusID),
                    static_cast<unsigned>(prop.pciDeviceID));
      out += line;
    }
  }
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  out += std::string("CUDA_VISIBLE_DEVICES: ") + (visible ? visible : "(unset)") + "\n";
  int nccl = 0;
  if (ncclGetVersion(&nccl) == ncclSuccess) {
    out += "NCCL: library " + std::to_string(nccl / 10000) + "." + std::to_string(nccl % 10000 / 100) + "." +
           std::to_string(nccl % 100) + "\n";
  } else {
    out += "NCCL: library version unknown (ncclGetVersion failed)\n";
  }
  return out;
}

}  // namespace shammie::cluster
