#include "cluster/inproc_channel.hpp"

#include <algorithm>

namespace shammie::cluster {

using common::Status;

namespace {

class SoloCollectives final : public Collectives {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status AllreduceSum(std::span<double>) override { return Status::Ok(); }
  Status AllreduceSum(std::span<float>) override { return Status::Ok(); }
  Status Broadcast(std::string&, int) override { return Status::Ok(); }
  Status Barrier() override { return Status::Ok(); }
};

}  // namespace

std::unique_ptr<Collectives> MakeSoloCollectives() { return std::make_unique<SoloCollectives>(); }

class InProcCollectives final : public Collectives {
 public:
  InProcCollectives(std::shared_ptr<InProcNetwork::Gang> gang, int rank, Micros timeout)
      : gang_(std::move(gang)), rank_(rank), timeout_(timeout) {}
  int rank() const override { return rank_; }
  int size() const override { return gang_->size; }

  Status AllreduceSum(std::span<double> data) override {
    return Round([&](InProcNetwork::Gang& g, bool first) {
      if (first) g.acc.assign(data.size(), 0.0);
      if (g.acc.size() != data.size()) return false;
      for (size_t i = 0; i < data.size(); ++i) g.acc[i] += data[i];
      return true;
    }, [&](InProcNetwork::Gang& g) { std::copy(g.result.begin(), g.result.end(), data.begin()); });
  }
  Status AllreduceSum(std::span<float> data) override {
    std::vector<double> wide(data.begin(), data.end());
    SHAMMIE_RETURN_IF_ERROR(AllreduceSum(std::span<double>(wide)));
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(wide[i]);
    return Status::Ok();
  }
  Status Broadcast(std::string& bytes, int root) override {
    return Round([&](InProcNetwork::Gang& g, bool) {
      if (rank_ == root) g.bcast = bytes;
      return true;
    }, [&](InProcNetwork::Gang& g) { bytes = g.bcast; });
  }
  Status Barrier() override {
    return Round([](InProcNetwork::Gang&, bool) { return true; }, [](InProcNetwork::Gang&) {});
  }

 private:
  // One collective round: everyone contributes; the last to arrive publishes.
  template <typename Contribute, typename Collect>
  Status Round(Contribute contribute, Collect collect) {
    InProcNetwork::Gang& g = *gang_;
    std::unique_lock lock(g.mu);
    if (!contribute(g, g.arrived == 0)) return common::InvalidArgument("collective: members passed different sizes");
    const uint64_t generation = g.generation;
    if (++g.arrived == g.size) {
      g.result = g.acc;
      g.arrived = 0;
      ++g.generation;
      g.cv.notify_all();
    } else if (!g.cv.wait_for(lock, timeout_, [&] { return g.generation != generation; })) {
      return Status(common::StatusCode::kDeadlineExceeded, "collective: the gang did not complete within the timeout");
    }
    collect(g);
    return Status::Ok();
  }
  std::shared_ptr<InProcNetwork::Gang> gang_;
  int rank_;
  Micros timeout_;
};

class InProcChannel final : public ControlChannel {
 public:
  InProcChannel(std::shared_ptr<InProcNetwork> net, int rank) : net_(std::move(net)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return net_->size(); }
  Status Send(int dest, int tag, std::string_view payload) override {
    if (dest < 0 || dest >= size()) return common::InvalidArgument("send: no rank " + std::to_string(dest));
    net_->Deliver(rank_, dest, tag, payload);
    return Status::Ok();
  }
  common::Result<std::optional<Message>> Receive(Micros timeout, int tag) override {
    InProcNetwork::Box& box = *net_->boxes_[static_cast<size_t>(rank_)];
    std::unique_lock lock(box.mu);
    std::optional<Message> out;
    auto take = [&] {
      for (auto it = box.queue.begin(); it != box.queue.end(); ++it) {
        if (tag == kAnyTag || it->tag == tag) {
          out = std::move(*it);
          box.queue.erase(it);
          return true;
        }
      }
      return false;
    };
    box.cv.wait_for(lock, timeout, take);
    return out;
  }
  Status FlushSends(Micros) override { return Status::Ok(); }
  common::Result<std::unique_ptr<Collectives>> JoinGang(uint64_t gang_id, const std::vector<int>& world_ranks,
                                                        Micros timeout) override {
    auto it = std::find(world_ranks.begin(), world_ranks.end(), rank_);
    if (it == world_ranks.end()) return common::InvalidArgument("JoinGang: this rank is not a member");
    if (world_ranks.size() == 1) return MakeSoloCollectives();
    auto gang = net_->GangFor(gang_id, static_cast<int>(world_ranks.size()));
    std::unique_ptr<Collectives> c =
        std::make_unique<InProcCollectives>(gang, static_cast<int>(it - world_ranks.begin()), timeout);
    SHAMMIE_RETURN_IF_ERROR(c->Barrier());  // like MPI_Comm_create_group: returns when all joined
    return c;
  }

 private:
  std::shared_ptr<InProcNetwork> net_;
  int rank_;
};

InProcNetwork::InProcNetwork(int size) : dead_(new std::atomic<bool>[static_cast<size_t>(size)]) {
  for (int i = 0; i < size; ++i) {
    boxes_.push_back(std::make_unique<Box>());
    dead_[static_cast<size_t>(i)].store(false);
  }
}

std::unique_ptr<ControlChannel> InProcNetwork::Channel(int rank) {
  SHAMMIE_CHECK(rank >= 0 && rank < size());
  return std::make_unique<InProcChannel>(shared_from_this(), rank);
}

void InProcNetwork::SetFilter(Filter filter) {
  std::lock_guard lock(filter_mu_);
  filter_ = std::move(filter);
}

void InProcNetwork::Kill(int rank) { dead_[static_cast<size_t>(rank)].store(true); }
void InProcNetwork::Revive(int rank) { dead_[static_cast<size_t>(rank)].store(false); }
bool InProcNetwork::dead(int rank) const { return dead_[static_cast<size_t>(rank)].load(); }

void InProcNetwork::Deliver(int source, int dest, int tag, std::string_view payload) {
  if (dead(source) || dead(dest)) return;
  {
    std::lock_guard lock(filter_mu_);
    if (filter_ && !filter_(source, dest, tag, payload)) return;
  }
  ++sent_;
  Box& box = *boxes_[static_cast<size_t>(dest)];
  {
    std::lock_guard lock(box.mu);
    box.queue.push_back(Message{source, tag, std::string(payload)});
  }
  box.cv.notify_all();
}

std::shared_ptr<InProcNetwork::Gang> InProcNetwork::GangFor(uint64_t id, int size) {
  std::lock_guard lock(gangs_mu_);
  auto& g = gangs_[id];
  if (!g) {
    g = std::make_shared<Gang>();
    g->size = size;
  }
  return g;
}

}  // namespace shammie::cluster
