// The controller<->worker wire format (DESIGN.md §1: workers receive a
// canonical, serialized job spec, never TOML). Every message starts with
// [u8 protocol version][u8 type]; a rank that receives another version or a
// malformed body reports DataLoss instead of guessing.
//
// Messages are batched: one Assign carries every task the controller hands a
// worker in one scheduling round; one Done carries every result a worker has
// finished since its last report; one Metrics carries many series.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "storage/result_store.hpp"
#include "workers/job.hpp"

namespace shammie::workers {

inline constexpr uint8_t kProtocolVersion = 2;  // 2: artifacts

// Tags on the control channel.
inline constexpr int kTagControl = 1;  // controller -> worker: Assign, Shutdown
inline constexpr int kTagCancel = 2;   // controller -> worker: Cancel (read by the worker's monitor thread)
inline constexpr int kTagReport = 3;   // worker -> controller: everything

enum class MsgType : uint8_t {
  kHello = 1,
  kAssign = 2,
  kShutdown = 3,
  kCancel = 4,
  kMetrics = 5,
  kTable = 6,
  kDone = 7,
  kHeartbeat = 8,
  kArtifact = 9,
};

enum class Isolation : uint8_t { kThread = 0, kProcess = 1 };

// One attempt of one job on one rank (a gang job is one Task per member).
struct Task {
  uint64_t task = 0;  // unique per attempt within a controller's life
  std::string job_id;
  std::string kind;
  std::string config_json;
  uint64_t seed = 0;
  uint32_t attempt = 1;
  uint64_t gang_id = 0;
  std::vector<int> gang;  // world ranks of the gang, sorted; one entry for a single-rank job
  Isolation isolation = Isolation::kThread;
  int64_t time_limit_ms = 0;  // 0: none
  std::string artifact_dir = {};     // absolute
  std::vector<Artifact> inputs = {};    // upstream jobs' artifacts
  std::vector<Artifact> previous = {};  // this job's, from earlier attempts
};

struct Hello {
  int rank = 0;
  std::string host;
  int64_t pid = 0;
};

struct MetricSeries {
  std::string name;
  std::vector<storage::MetricPoint> points;
};

struct MetricsMsg {
  uint64_t task = 0;
  std::vector<MetricSeries> series;
};

struct TableMsg {
  uint64_t task = 0;
  std::string name;
  storage::Table table;
};

struct ArtifactMsg {
  uint64_t task = 0;
  std::string name;
  std::string path;
};

struct TaskResult {
  uint64_t task = 0;
  common::StatusCode code = common::StatusCode::kOk;
  std::string message;
  double seconds = 0;
  bool worker_lost = false;  // the job would not stop: this worker takes no more work
};

struct Heartbeat {
  uint64_t task = 0;  // running task, 0 when idle
};

std::string EncodeHello(const Hello& m);
std::string EncodeAssign(const std::vector<Task>& tasks);
std::string EncodeShutdown();
std::string EncodeCancel();
std::string EncodeMetrics(const MetricsMsg& m);
std::string EncodeTable(const TableMsg& m);
std::string EncodeDone(const std::vector<TaskResult>& results);
std::string EncodeHeartbeat(const Heartbeat& m);
std::string EncodeArtifact(const ArtifactMsg& m);

// The type of a message after checking its version (DataLoss otherwise).
common::Result<MsgType> PeekType(std::string_view payload);
common::Result<Hello> DecodeHello(std::string_view payload);
common::Result<std::vector<Task>> DecodeAssign(std::string_view payload);
common::Result<MetricsMsg> DecodeMetrics(std::string_view payload);
common::Result<TableMsg> DecodeTable(std::string_view payload);
common::Result<std::vector<TaskResult>> DecodeDone(std::string_view payload);
common::Result<Heartbeat> DecodeHeartbeat(std::string_view payload);
common::Result<ArtifactMsg> DecodeArtifact(std::string_view payload);

// Tables alone (also used by the journal).
void AppendTableBytes(const storage::Table& table, std::string& out);
common::Result<storage::Table> ParseTableBytes(std::string_view bytes);

}  // namespace shammie::workers
