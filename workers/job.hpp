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
// - in a gang, every member calls the same collectives in the same order;
// - write files a later job or attempt needs (checkpoints) under
//   artifact_dir(), completely (storage/checkpoint_store.hpp writes them
//   atomically), then RecordArtifact() them: the controller journals the
//   reference durably; downstream jobs get them in inputs(), and a later
//   attempt of the same job (a retry, or a resume after a stop or crash) in
//   previous_artifacts().
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/channel.hpp"
#include "common/status.hpp"
#include "storage/result_store.hpp"

namespace shammie::workers {

// A file a job recorded, e.g. its model checkpoint.
struct Artifact {
  std::string job_id;  // the job that recorded it
  std::string name;    // e.g. "model"
  std::string path;    // absolute
  bool operator==(const Artifact&) const = default;
};

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

  // Where the job writes files it records (shared by the run's jobs; created
  // on first use). Empty when the context keeps no files.
  virtual const std::string& artifact_dir() const = 0;
  // The latest artifact of each name recorded by each upstream job, in the
  // order of the job's inputs, names sorted.
  virtual const std::vector<Artifact>& inputs() const = 0;
  // This job's own artifacts recorded by earlier attempts (latest per name).
  virtual const std::vector<Artifact>& previous_artifacts() const = 0;
  // Records `path` (an existing, complete file) as this attempt's artifact
  // `name`. Only gang rank 0's records are kept.
  virtual common::Status RecordArtifact(std::string_view name, const std::string& path) = 0;

  // The latest artifact called `name` of earlier attempts, or nullptr.
  const Artifact* PreviousArtifact(std::string_view name) const {
    for (const auto& a : previous_artifacts()) if (a.name == name) return &a;
    return nullptr;
  }
};

using JobFunction = std::function<common::Status(JobContext&)>;

}  // namespace shammie::workers
