// ControlChannel and Collectives over threads in one process: N "ranks" are N
// threads sharing an InProcNetwork. For fast, deterministic tests of the
// controller and workers, with fault injection (dropped messages, dead ranks).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cluster/channel.hpp"

namespace shammie::cluster {

class InProcNetwork : public std::enable_shared_from_this<InProcNetwork> {
 public:
  explicit InProcNetwork(int size);
  int size() const { return static_cast<int>(boxes_.size()); }

  std::unique_ptr<ControlChannel> Channel(int rank);

  // Fault injection. A filter returning false drops the message silently.
  using Filter = std::function<bool(int source, int dest, int tag, std::string_view payload)>;
  void SetFilter(Filter filter);
  // A dead rank's sends vanish and nothing reaches it (a hung or lost process).
  void Kill(int rank);
  void Revive(int rank);
  bool dead(int rank) const;
  int64_t messages_sent() const { return sent_.load(); }

 private:
  friend class InProcChannel;
  friend class InProcCollectives;
  struct Box {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Message> queue;
  };
  struct Gang {
    std::mutex mu;
    std::condition_variable cv;
    int size = 0;
    int joined = 0;
    int arrived = 0;
    uint64_t generation = 0;
    std::vector<double> acc, result;
    std::string bcast;
  };
  void Deliver(int source, int dest, int tag, std::string_view payload);
  std::shared_ptr<Gang> GangFor(uint64_t id, int size);

  std::vector<std::unique_ptr<Box>> boxes_;
  std::unique_ptr<std::atomic<bool>[]> dead_;
  std::mutex filter_mu_;
  Filter filter_;
  std::mutex gangs_mu_;
  std::map<uint64_t, std::shared_ptr<Gang>> gangs_;
  std::atomic<int64_t> sent_{0};
};

}  // namespace shammie::cluster
