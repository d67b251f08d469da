// The engine's records in a run directory's journal (DIR/journal.bin, see
// storage/journal.hpp), and their replay into what is known about each job.
// Every state change of the controller is one record; results.h5, `shammie
// status` and `--resume` are all rebuilt from these records.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.hpp"
#include "storage/journal.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

enum class RecordType : uint8_t {
  kRunBegin = 1,  // a controller started: time, experiment, spec, command line
  kPlan = 2,      // the plan it runs (written when it differs from the last one)
  kStart = 3,     // an attempt was handed to ranks
  kMetrics = 4,   // metric points of an attempt
  kTable = 5,     // a table of an attempt
  kEnd = 6,       // an attempt ended (status code, message)
  kSkip = 7,      // a job will not run: an input failed
  kRunEnd = 8,    // the controller finished or stopped
  kArtifact = 9,  // an attempt recorded a file (path relative to the run directory when inside it)
};

struct PlanEntry {
  std::string id, stage, kind, label;
  std::vector<std::string> inputs;
};

struct RunBegin {
  double time = 0;
  std::string experiment, spec_hash, command_line, spec_text;
  int64_t jobs = 0;
};

// What the journal says about one job.
struct JobHistory {
  uint32_t attempts = 0;       // highest attempt number started
  uint32_t done_attempt = 0;   // the attempt that succeeded; 0 if none
  uint32_t failures = 0;       // attempts that ended in an error (all runs)
  bool running = false;        // the last attempt started and never ended (a crash or kill)
  bool final_failure = false;  // the last run gave up on it
  bool skipped = false;        // the last run skipped it
  bool cancelled = false;      // the last attempt was stopped by a signal
  common::StatusCode last_code = common::StatusCode::kOk;
  std::string error;           // "code: message" of the last failure, or the skip reason
  std::string ranks, host;
  double start = 0, end = 0;
  std::map<std::string, std::string> artifacts;  // name -> path, the latest record of any attempt
};

struct JournalState {
  std::vector<RunBegin> runs;
  std::vector<bool> run_ended;  // per run: a RunEnd was written (clean finish or stop)
  std::vector<PlanEntry> plan;  // the latest plan
  std::string plan_hash;
  std::unordered_map<std::string, JobHistory> jobs;
  int64_t records = 0, torn_bytes = 0, metric_points = 0;
};

// Replays DIR's journal (a missing journal is an empty state).
common::Result<JournalState> ReplayJournal(const std::string& journal_path);

// Encoders for the controller.
std::string EncodeRunBegin(const RunBegin& r);
std::string EncodePlan(const std::string& hash, const std::vector<PlanEntry>& plan);
std::string EncodeStart(std::string_view id, uint32_t attempt, std::string_view ranks, std::string_view host,
                        double time);
// Metric record header; the body continues with n raw (int64 step, float64 value) pairs.
std::string EncodeMetricsHeader(std::string_view id, uint32_t attempt, std::string_view name, uint64_t n);
std::string EncodeTableRecord(std::string_view id, uint32_t attempt, std::string_view name,
                              const storage::Table& table);
std::string EncodeEnd(std::string_view id, uint32_t attempt, common::StatusCode code, std::string_view message,
                      double time, double seconds, bool final_failure);
std::string EncodeSkip(std::string_view id, std::string_view reason);
std::string EncodeRunEnd(double time, std::string_view reason);
std::string EncodeArtifactRecord(std::string_view id, uint32_t attempt, std::string_view name, std::string_view path);

// Visits the metrics and tables of successful attempts (job id -> attempt in
// `done`), in journal order. For results.h5.
struct ResultVisitor {
  std::function<common::Status(const std::string& id, const std::string& name,
                               std::span<const storage::MetricPoint> points)> metrics;
  std::function<common::Status(const std::string& id, const std::string& name, const storage::Table& table)> table;
};
common::Status VisitResults(const std::string& journal_path,
                            const std::unordered_map<std::string, uint32_t>& done, const ResultVisitor& visitor);

std::string JournalPath(const std::string& run_dir);

}  // namespace shammie::orchestrator
