// The Job API (DESIGN.md §3): what a job's code sees while it runs, on the
// worker rank that runs it. The engine provides the MPI-backed context;
// LocalJobContext (workers/local_context.hpp) runs a job in-process for
// tests and tools.
//
// Contract for job code:
// - return OK on success, or a Status whose code says whether a retry can
//   help (common/status.hpp); exceptions escaping a job are caught by the
//   engine at the job boundary and become kInternal;
// - poll cancelled() at least every ~100 ms in long loops and return
//   kCancelled when it is set (SIGTERM/SIGUSR1 at the controller);
// - report metrics freely: contexts buffer them and send them in batches;
// - in a gang, every member calls the same collectives in the same order.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cluster/channel.hpp"
#include "common/status.hpp"
#include "storage/result_store.hpp"

namespace shammie::workers {

class JobContext {
 public:
  virtual ~JobContext() = default;
  virtual const std::string& job_id() const = 0;
  virtual const nlohmann::json& config() const = 0;  // resolved: defaults filled, sweep values applied
  virtual uint64_t seed() const = 0;
  virtual int attempt() const = 0;  // 1 for the first attempt
  virtual void ReportMetric(std::string_view name, int64_t step, double value) = 0;
  // A per-example table (e.g. labels and predictions) stored with the run.
  virtual common::Status WriteTable(std::string_view name, const storage::Table& table) = 0;
  virtual bool cancelled() const = 0;
  // The job's gang (resources.ranks > 1): allreduce/broadcast among its ranks
  // only. A single-rank job gets a gang of one. Only gang rank 0's metrics and
  // tables are stored.
  virtual cluster::Collectives& collectives() = 0;
};

using JobFunction = std::function<common::Status(JobContext&)>;

}  // namespace shammie::workers
