#include "cluster/mpi_channel.hpp"

#include <mpi.h>
#include <sched.h>
#include <sys/prctl.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <mutex>
#include <thread>

namespace shammie::cluster {

using common::Status;
using Clock = std::chrono::steady_clock;

namespace {

std::string MpiError(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

// Polite waiting: a few immediate retries, then yields, then sleeps growing
// to `max_sleep_us`. Returns false once `deadline` has passed.
class Backoff {
 public:
  explicit Backoff(Clock::time_point deadline, int max_sleep_us = 1000)
      : deadline_(deadline), max_sleep_us_(max_sleep_us) {}
  bool Wait() {
    if (Clock::now() >= deadline_) return false;
    ++round_;
    if (round_ < 16) return true;
    if (round_ < 64) {
      sched_yield();
      return true;
    }
    sleep_us_ = std::min(sleep_us_ == 0 ? 20 : sleep_us_ * 2, max_sleep_us_);
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::microseconds(sleep_us_),
                                                          std::max<Clock::duration>(deadline_ - Clock::now(), {})));
    return true;
  }

 private:
  Clock::time_point deadline_;
  int max_sleep_us_;
  int round_ = 0;
  int sleep_us_ = 0;
};

// A rank that talked within the last 100 ms polls at least every 100 us (a
// reply is likely soon); an idle one backs off to 1 ms (cheap on shared cores).
constexpr auto kActiveWindow = std::chrono::milliseconds(100);
constexpr int kActiveSleepUs = 100;
constexpr int kIdleSleepUs = 1000;

// Waits for `request` with a deadline; cancels nothing (MPI cannot cancel a
// collective): on timeout the caller reports the stall and the job fails.
Status WaitRequest(MPI_Request& request, Clock::time_point deadline, const char* what) {
  Backoff backoff(deadline);
  for (;;) {
    int done = 0;
    const int rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return common::Internal(std::string(what) + ": " + MpiError(rc));
    if (done) return Status::Ok();
    if (!backoff.Wait()) {
      return Status(common::StatusCode::kDeadlineExceeded,
                    std::string(what) + ": the gang did not complete the collective within the timeout");
    }
  }
}

class MpiCollectives final : public Collectives {
 public:
  MpiCollectives(MPI_Comm comm, Micros timeout) : comm_(comm), timeout_(timeout) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCollectives() override { MPI_Comm_free(&comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Status AllreduceSum(std::span<double> data) override { return Allreduce(data.data(), data.size(), MPI_DOUBLE); }
  Status AllreduceSum(std::span<float> data) override { return Allreduce(data.data(), data.size(), MPI_FLOAT); }
  Status Broadcast(std::string& bytes, int root) override {
    uint64_t n = bytes.size();
    MPI_Request r;
    MPI_Ibcast(&n, 1, MPI_UINT64_T, root, comm_, &r);
    SHAMMIE_RETURN_IF_ERROR(WaitRequest(r, Deadline(), "broadcast"));
    bytes.resize(n);
    if (n > static_cast<uint64_t>(INT32_MAX)) return common::InvalidArgument("broadcast: more than 2 GiB");
    MPI_Ibcast(bytes.data(), static_cast<int>(n), MPI_BYTE, root, comm_, &r);
    return WaitRequest(r, Deadline(), "broadcast");
  }
  Status Barrier() override {
    MPI_Request r;
    MPI_Ibarrier(comm_, &r);
    return WaitRequest(r, Deadline(), "barrier");
  }

 private:
  Clock::time_point Deadline() const { return Clock::now() + timeout_; }
  Status Allreduce(void* data, size_t n, MPI_Datatype type) {
    if (n > static_cast<size_t>(INT32_MAX)) return common::InvalidArgument("allreduce: too many elements");
    MPI_Request r;
    const int rc = MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), type, MPI_SUM, comm_, &r);
    if (rc != MPI_SUCCESS) return common::Internal("allreduce: " + MpiError(rc));
    return WaitRequest(r, Deadline(), "allreduce");
  }
  MPI_Comm comm_;
  Micros timeout_;
  int rank_ = 0, size_ = 1;
};

class MpiChannel final : public ControlChannel {
 public:
  MpiChannel() {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_dup(MPI_COMM_WORLD, &gang_comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiChannel() override {
    (void)FlushSends(std::chrono::seconds(5));
    MPI_Comm_free(&gang_comm_);
    MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status Send(int dest, int tag, std::string_view payload) override {
    if (dest < 0 || dest >= size_) return common::InvalidArgument("send: no rank " + std::to_string(dest));
    if (payload.size() > static_cast<size_t>(INT32_MAX)) return common::InvalidArgument("send: message over 2 GiB");
    std::lock_guard lock(send_mu_);
    pending_.push_back(Pending{std::string(payload), MPI_REQUEST_NULL});
    Pending& p = pending_.back();
    const int rc = MPI_Isend(p.data.data(), static_cast<int>(p.data.size()), MPI_BYTE, dest, tag, comm_, &p.request);
    if (rc != MPI_SUCCESS) {
      pending_.pop_back();
      return common::Internal("MPI_Isend to rank " + std::to_string(dest) + ": " + MpiError(rc));
    }
    ReapLocked();
    last_activity_.store(Clock::now().time_since_epoch().count());
    return Status::Ok();
  }

  common::Result<std::optional<Message>> Receive(Micros timeout, int tag) override {
    const Clock::time_point now = Clock::now();
    const bool active = now - Clock::time_point(Clock::duration(last_activity_.load())) < kActiveWindow;
    Backoff backoff(now + timeout, active ? kActiveSleepUs : kIdleSleepUs);
    for (;;) {
      {
        std::lock_guard lock(send_mu_);
        ReapLocked();
      }
      int flag = 0;
      MPI_Message handle;
      MPI_Status status;
      const int rc = MPI_Improbe(MPI_ANY_SOURCE, tag == kAnyTag ? MPI_ANY_TAG : tag, comm_, &flag, &handle, &status);
      if (rc != MPI_SUCCESS) return common::Internal("MPI_Improbe: " + MpiError(rc));
      if (flag) {
        int count = 0;
        MPI_Get_count(&status, MPI_BYTE, &count);
        Message m;
        m.source = status.MPI_SOURCE;
        m.tag = status.MPI_TAG;
        m.payload.resize(static_cast<size_t>(count));
        const int rc2 = MPI_Mrecv(m.payload.data(), count, MPI_BYTE, &handle, MPI_STATUS_IGNORE);
        if (rc2 != MPI_SUCCESS) return common::Internal("MPI_Mrecv: " + MpiError(rc2));
        last_activity_.store(Clock::now().time_since_epoch().count());
        return std::optional<Message>(std::move(m));
      }
      if (!backoff.Wait()) return std::optional<Message>();
    }
  }

  Status FlushSends(Micros timeout) override {
    Backoff backoff(Clock::now() + timeout);
    for (;;) {
      {
        std::lock_guard lock(send_mu_);
        ReapLocked();
        if (pending_.empty()) return Status::Ok();
      }
      if (!backoff.Wait()) {
        return Status(common::StatusCode::kDeadlineExceeded, "messages not delivered within the timeout");
      }
    }
  }

  common::Result<std::unique_ptr<Collectives>> JoinGang(uint64_t gang_id, const std::vector<int>& world_ranks,
                                                        Micros timeout) override {
    if (std::find(world_ranks.begin(), world_ranks.end(), rank_) == world_ranks.end()) {
      return common::InvalidArgument("JoinGang: this rank is not a member");
    }
    if (world_ranks.size() == 1) return MakeSoloCollectives();
    // MPI_Comm_create_group blocks without a deadline, so first make sure
    // every member has arrived: a non-blocking handshake on a separate
    // communicator, waited on with the deadline.
    SHAMMIE_RETURN_IF_ERROR(Handshake(gang_id, world_ranks, timeout));
    MPI_Group world_group, gang_group;
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    MPI_Group_incl(world_group, static_cast<int>(world_ranks.size()), world_ranks.data(), &gang_group);
    MPI_Comm comm = MPI_COMM_NULL;
    // Only the members call this; the tag keeps gangs formed at once apart.
    const int rc = MPI_Comm_create_group(MPI_COMM_WORLD, gang_group, static_cast<int>(gang_id % 30000), &comm);
    MPI_Group_free(&gang_group);
    MPI_Group_free(&world_group);
    if (rc != MPI_SUCCESS) return common::Internal("MPI_Comm_create_group: " + MpiError(rc));
    return std::unique_ptr<Collectives>(std::make_unique<MpiCollectives>(comm, timeout));
  }

 private:
  Status Handshake(uint64_t gang_id, const std::vector<int>& members, Micros timeout) {
    const int tag = static_cast<int>(gang_id % 30000);
    std::vector<MPI_Request> requests;
    std::vector<uint64_t> got(members.size(), 0);
    std::vector<int> peers;
    for (size_t i = 0; i < members.size(); ++i) {
      if (members[i] == rank_) continue;
      peers.push_back(members[i]);
      requests.emplace_back();
      MPI_Irecv(&got[i], 1, MPI_UINT64_T, members[i], tag, gang_comm_, &requests.back());
    }
    const size_t receives = requests.size();
    for (int peer : peers) {
      requests.emplace_back();
      MPI_Isend(&gang_id, 1, MPI_UINT64_T, peer, tag, gang_comm_, &requests.back());
    }
    Backoff backoff(Clock::now() + timeout);
    for (;;) {
      int done = 0;
      MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
      if (done) break;
      if (!backoff.Wait()) {
        std::string missing;
        for (size_t i = 0; i < receives; ++i) {
          int flag = 0;
          MPI_Test(&requests[i], &flag, MPI_STATUS_IGNORE);
          if (!flag) {
            MPI_Cancel(&requests[i]);
            MPI_Request_free(&requests[i]);
            missing += (missing.empty() ? "" : ", ") + std::to_string(peers[i]);
          }
        }
        return Status(common::StatusCode::kDeadlineExceeded,
                      "forming a gang: rank(s) " + missing + " did not arrive within the timeout");
      }
    }
    for (size_t i = 0; i < members.size(); ++i) {
      if (members[i] != rank_ && got[i] != gang_id) {
        return common::Internal("forming a gang: rank " + std::to_string(members[i]) + " is forming another gang");
      }
    }
    return Status::Ok();
  }

  struct Pending {
    std::string data;
    MPI_Request request;
  };
  void ReapLocked() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done ? pending_.erase(it) : std::next(it);
    }
  }
  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm gang_comm_ = MPI_COMM_NULL;  // gang handshakes only
  int rank_ = 0, size_ = 1;
  std::atomic<Clock::rep> last_activity_{0};  // last send or receive
  std::mutex send_mu_;
  std::list<Pending> pending_;  // stable addresses while MPI owns the buffers
};

}  // namespace

common::Result<std::unique_ptr<MpiRuntime>> MpiRuntime::Init(int* argc, char*** argv) {
  int provided = 0;
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return common::Internal("MPI_Init_thread failed: " + MpiError(rc));
  if (provided < MPI_THREAD_MULTIPLE) {
    MPI_Finalize();
    return common::Internal("this MPI does not provide MPI_THREAD_MULTIPLE, which shammie's workers need");
  }
  // Short sleeps in polling loops: the default 50 us timer slack would
  // stretch every 20 us wait.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  std::unique_ptr<MpiRuntime> rt(new MpiRuntime());
  MPI_Comm_rank(MPI_COMM_WORLD, &rt->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &rt->size_);
  return rt;
}

MpiRuntime::~MpiRuntime() { MPI_Finalize(); }

std::string MpiRuntime::processor_name() const {
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  return std::string(name, static_cast<size_t>(len));
}

std::unique_ptr<ControlChannel> MpiRuntime::WorldChannel() { return std::make_unique<MpiChannel>(); }

void MpiRuntime::Abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();
}

double MpiPingPongMicros(int iterations, int bytes) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) return 0;
  std::string buf(static_cast<size_t>(bytes), 'x');
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    if (rank == 0) {
      MPI_Send(buf.data(), bytes, MPI_BYTE, 1, 7, MPI_COMM_WORLD);
      MPI_Recv(buf.data(), bytes, MPI_BYTE, 1, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (rank == 1) {
      MPI_Recv(buf.data(), bytes, MPI_BYTE, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buf.data(), bytes, MPI_BYTE, 0, 7, MPI_COMM_WORLD);
    }
  }
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  MPI_Barrier(MPI_COMM_WORLD);
  return rank == 0 ? us / iterations : 0;
}

}  // namespace shammie::cluster
