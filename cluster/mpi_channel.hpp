// The MPI implementations of ControlChannel and Collectives. The only place
// that includes <mpi.h> (DESIGN.md §2).
//
// - MpiRuntime initialises MPI with MPI_THREAD_MULTIPLE (a worker's monitor
//   thread and its job thread both talk) and finalises it.
// - The control channel runs on its own duplicate of MPI_COMM_WORLD. Sends are
//   MPI_Isend kept until complete, so a sender never blocks on a busy
//   receiver. Receives poll politely (MPI_Improbe, then yield, then sleeps
//   growing to 1 ms): idle ranks leave the cores to the ranks doing work, which
//   matters when there are more ranks than cores.
// - A gang's collectives run on a communicator made with
//   MPI_Comm_create_group by the gang's members only; each collective is a
//   non-blocking MPI call waited on with a deadline.
#pragma once

#include <memory>
#include <string>

#include "cluster/channel.hpp"

namespace shammie::cluster {

class MpiRuntime {
 public:
  // MPI_Init_thread; fails (Internal) if MPI_THREAD_MULTIPLE is not provided.
  static common::Result<std::unique_ptr<MpiRuntime>> Init(int* argc, char*** argv);
  ~MpiRuntime();  // MPI_Finalize
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  std::string processor_name() const;
  std::unique_ptr<ControlChannel> WorldChannel();
  // Ends every rank of the job now (after a fatal error on one rank).
  [[noreturn]] void Abort(int code);

 private:
  MpiRuntime() = default;
  int rank_ = 0, size_ = 1;
};

// Round-trip time of `bytes`-byte ping-pongs between world ranks 0 and 1
// (the floor of any dispatch protocol). Collective over the world; returns
// microseconds per round trip on rank 0, 0 elsewhere.
double MpiPingPongMicros(int iterations, int bytes);

}  // namespace shammie::cluster
