// The floor of any dispatch protocol: the round trip of a small message
// between two MPI ranks, as shammie's ranks are launched (same mpirun flags).
// Usage: mpirun -np 2 mpi_pingpong [iterations] [bytes]
#include <cstdio>
#include <cstdlib>

#include "cluster/mpi_channel.hpp"

int main(int argc, char** argv) {
  auto mpi = shammie::cluster::MpiRuntime::Init(&argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s\n", mpi.status().ToString().c_str());
    return 3;
  }
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int bytes = argc > 2 ? std::atoi(argv[2]) : 64;
  shammie::cluster::MpiPingPongMicros(iterations / 10, bytes);  // warm-up
  const double us = shammie::cluster::MpiPingPongMicros(iterations, bytes);
  if ((*mpi)->rank() == 0) std::printf("round_trip_us %.3f\n", us);
  return 0;
}
