// ResultStore: one results.h5 per run directory (layout: docs/results-format.md).
//
// Contract:
// - Single writer. Only the controller (rank 0) opens a store for writing;
//   analysis and `shammie status` open it read-only. HDF5 is built serial here.
// - Metrics are buffered in memory and written in chunks; they reach the file at
//   Flush() (explicit flush point), when a buffer holds kMetricChunk points, and at
//   Close(). Reads of a writable store flush first, so they see everything appended.
// - Every call returns a Status; HDF5's automatic error printing is off and its
//   error stack is part of the message. Nothing here aborts on bad files.
// - Opening a file written by a newer layout, a truncated file or a non-HDF5 file
//   fails with FailedPrecondition, DataLoss or InvalidArgument respectively.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/status.hpp"

namespace shammie::storage {

using common::Result;
using common::Status;

// Version of the on-disk layout this build writes and the newest it reads.
inline constexpr int64_t kLayoutVersion = 1;
// Points per metric chunk; also the buffer size that triggers a write.
inline constexpr size_t kMetricChunk = 4096;

// Root attributes of results.h5.
struct ExperimentInfo {
  std::string experiment;      // experiment.name
  std::string spec_text;       // canonical TOML of the resolved spec (extends merged)
  std::string spec_hash;       // Hash128Hex(spec_text)
  std::string shammie_version;
  std::string git_commit;
  std::string build_options;
  std::string command_line;
  std::string start_time;      // ISO 8601 UTC
  std::string end_time;        // ISO 8601 UTC; empty while running
  int64_t layout_version = kLayoutVersion;
};

// kCancelled: stopped by a signal (reruns on resume); kSkipped: an input failed.
enum class JobStatus { kPending, kRunning, kDone, kFailed, kCancelled, kSkipped };
std::string_view JobStatusName(JobStatus status);
std::optional<JobStatus> JobStatusFromName(std::string_view name);

// One row of /jobs.
struct JobRecord {
  std::string id;
  std::string stage;
  std::string kind;
  JobStatus status = JobStatus::kPending;
  int32_t attempts = 0;
  std::string ranks;      // e.g. "1" or "2,3,4"
  std::string host;
  double start_time = 0;  // seconds since the Unix epoch; 0 when not started
  double end_time = 0;
  std::string error;      // last error message, empty when none
  int64_t seed = 0;
  std::string config_json;  // canonical JSON of the resolved config
  bool operator==(const JobRecord&) const = default;
};

// Attributes of /runs/<job_id>.
struct RunRecord {
  std::string job_id;
  std::string stage;
  std::string kind;
  std::string config_json;          // canonical JSON of the resolved config
  int64_t seed = 0;
  std::vector<std::string> inputs;  // ids of upstream jobs
  // Files the job recorded, e.g. {"model": "checkpoints/<hash>.ckpt"}; paths
  // relative to the run directory (the directory holding results.h5).
  std::map<std::string, std::string> artifacts = {};
  bool operator==(const RunRecord&) const = default;
};

struct MetricPoint {
  int64_t step = 0;
  double value = 0;
  bool operator==(const MetricPoint&) const = default;
};

// A per-example table, stored column-typed: float64, int64 or UTF-8 string.
struct Column {
  std::string name;
  std::variant<std::vector<double>, std::vector<int64_t>, std::vector<std::string>> values;
  size_t size() const;
  bool operator==(const Column&) const = default;
};

struct Table {
  std::vector<Column> columns;
  size_t num_rows() const { return columns.empty() ? 0 : columns.front().size(); }
  // Non-empty, unique safe column names, equal lengths.
  Status Validate() const;
  bool operator==(const Table&) const = default;
};

class ResultStore {
 public:
  enum class Mode { kReadOnly, kReadWrite };

  // Creates a new file; fails with AlreadyExists if `path` exists (nothing is
  // overwritten). The parent directory must exist.
  static Result<std::unique_ptr<ResultStore>> Create(const std::string& path, const ExperimentInfo& info);
  // Opens an existing file; checks that it is a shammie results file of a
  // layout this build understands.
  static Result<std::unique_ptr<ResultStore>> Open(const std::string& path, Mode mode);

  ~ResultStore();  // closes handles; unflushed metrics are lost unless Close()/Flush() was called
  ResultStore(const ResultStore&) = delete;
  ResultStore& operator=(const ResultStore&) = delete;

  const ExperimentInfo& info() const { return info_; }
  const std::string& path() const { return path_; }

  // --- writing (Mode::kReadWrite) ---
  // Inserts or replaces the /jobs row with this id.
  Status UpsertJob(const JobRecord& job);
  // Appends rows for jobs not yet in /jobs, in one write (AlreadyExists otherwise).
  Status InsertJobs(std::span<const JobRecord> jobs);
  // Creates /runs/<job_id> with its attributes. Calling it again with an
  // identical record is a no-op; with a different one, FailedPrecondition.
  Status BeginRun(const RunRecord& run);
  // Buffers (step, value) points for metric `name` of run `job_id`.
  Status AppendMetrics(std::string_view job_id, std::string_view name, std::span<const MetricPoint> points);
  // Creates or extends /runs/<job_id>/tables/<name>; columns must match on append.
  Status AppendTable(std::string_view job_id, std::string_view name, const Table& table);
  // Creates or replaces /analysis/<name>: attribute `parameters` (JSON) and
  // table `results`.
  Status WriteAnalysis(std::string_view name, const std::string& parameters_json, const Table& results);
  // Sets the root end_time attribute.
  Status SetEndTime(const std::string& iso_time);
  // Writes buffered metrics and flushes HDF5's caches to the file.
  Status Flush();
  // Flush() and close the file; afterwards every call fails.
  Status Close();

  // --- reading ---
  Result<std::vector<JobRecord>> ReadJobs();
  Result<std::vector<RunRecord>> ListRuns();
  Result<RunRecord> ReadRun(std::string_view job_id);
  Result<std::vector<std::string>> ListMetrics(std::string_view job_id);
  Result<std::vector<MetricPoint>> ReadMetric(std::string_view job_id, std::string_view name);
  Result<std::vector<std::string>> ListTables(std::string_view job_id);
  Result<Table> ReadTable(std::string_view job_id, std::string_view name);
  Result<std::vector<std::string>> ListAnalyses();
  // The parameters (JSON text) and results table of /analysis/<name>.
  Result<std::pair<std::string, Table>> ReadAnalysis(std::string_view name);

  struct Impl;  // HDF5 handles; defined in result_store.cpp

 private:
  explicit ResultStore(std::unique_ptr<Impl> impl);
  Status WriteTableAt(const std::string& path, const Table& table, const std::string& context);
  Result<Table> ReadTableAt(const std::string& path, const std::string& context);
  Status WriteMetricBuffer(const std::string& job_id, const std::string& name, std::vector<MetricPoint>& points);

  std::unique_ptr<Impl> impl_;
  std::string path_;
  ExperimentInfo info_;
  Mode mode_ = Mode::kReadOnly;
  std::map<std::string, int64_t> job_rows_;  // job id -> row in /jobs
  std::map<std::pair<std::string, std::string>, std::vector<MetricPoint>> metric_buffers_;
};

}  // namespace shammie::storage
