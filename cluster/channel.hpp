// How ranks talk (DESIGN.md §3). Two interfaces, never mixed:
// - ControlChannel: the controller<->worker control plane. Small tagged
//   messages between world ranks; sends never wait for the receiver; every
//   receive has a deadline.
// - Collectives: the data plane inside one multi-rank job (its gang):
//   allreduce and broadcast among the gang's members only.
// Real implementations use MPI (cluster/mpi_channel.hpp); tests use threads
// (cluster/inproc_channel.hpp), with fault injection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

namespace shammie::cluster {

using Micros = std::chrono::microseconds;

inline constexpr int kAnyTag = -1;

struct Message {
  int source = -1;
  int tag = 0;
  std::string payload;
};

// The data plane of one gang. Calls are collective: every member calls them
// in the same order. Each call fails with DeadlineExceeded if the gang does
// not complete it within the timeout it was created with.
class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;  // 0 .. size()-1 within the gang
  virtual int size() const = 0;
  virtual common::Status AllreduceSum(std::span<double> data) = 0;
  virtual common::Status AllreduceSum(std::span<float> data) = 0;
  // `bytes` on the root is sent; on the others it is replaced by the root's.
  virtual common::Status Broadcast(std::string& bytes, int root) = 0;
  virtual common::Status Barrier() = 0;
};

// A Collectives of one member (single-rank jobs): every call is a no-op.
std::unique_ptr<Collectives> MakeSoloCollectives();

class ControlChannel {
 public:
  virtual ~ControlChannel() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Queues `payload` for `dest` and returns without waiting for it to be
  // received. Messages from one sender to one receiver with one tag arrive in
  // the order they were sent. Thread-safe.
  virtual common::Status Send(int dest, int tag, std::string_view payload) = 0;
  // The next message with `tag` (or any tag) from any source; nullopt when
  // none arrives within `timeout`. Thread-safe for distinct tags.
  virtual common::Result<std::optional<Message>> Receive(Micros timeout, int tag = kAnyTag) = 0;
  // Waits until every queued send has left this process (or the deadline).
  virtual common::Status FlushSends(Micros timeout) = 0;
  // Collective over `world_ranks` (sorted, containing rank()) only: every
  // member calls it with the same ranks and gang id. No other rank takes part.
  virtual common::Result<std::unique_ptr<Collectives>> JoinGang(uint64_t gang_id, const std::vector<int>& world_ranks,
                                                                Micros timeout) = 0;
};

}  // namespace shammie::cluster
