// The worker loop: what every rank except the controller runs.
//
// Threads: the worker's main thread receives tasks and runs job code; a
// monitor thread sends heartbeats, flushes buffered metrics (every
// `metric_flush` or 8192 points), reads cancel messages and enforces time
// limits. A job that ignores cancellation for `stop_grace` past its limit
// is reported as stalled and the worker takes no more work (a thread cannot
// be killed; use isolation = "process" for code that may hang or crash).
//
// Isolation::kProcess runs the job in a forked child: a segfault, abort or
// hang there becomes a failed attempt and the worker lives on. The child
// streams metrics and tables to the worker through a pipe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "cluster/channel.hpp"
#include "common/status.hpp"
#include "workers/job_kind.hpp"

namespace shammie::workers {

struct WorkerOptions {
  int controller = 0;
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds metric_flush{250};
  std::chrono::milliseconds stop_grace{10000};
  // Gang formation and collectives of jobs without a time limit.
  std::chrono::milliseconds collective_timeout{600000};
  std::string host;
};

// Runs until the controller sends Shutdown. Returns an error only when the
// channel itself fails.
common::Status RunWorker(cluster::ControlChannel& channel, const KindRegistry& kinds, const WorkerOptions& options);

}  // namespace shammie::workers
