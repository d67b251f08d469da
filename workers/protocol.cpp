#include "workers/protocol.hpp"

#include "common/wire.hpp"

namespace shammie::workers {

using common::WireReader;
using common::WireWriter;

namespace {

WireWriter Begin(MsgType type) {
  WireWriter w;
  w.U8(kProtocolVersion);
  w.U8(static_cast<uint8_t>(type));
  return w;
}

common::Status Malformed(const char* what) {
  return common::DataLoss(std::string("malformed ") + what + " message (protocol version " +
                          std::to_string(kProtocolVersion) + ")");
}

// Skips the header of a message of the expected type.
bool Open(WireReader& r, MsgType type) {
  uint8_t v = 0, t = 0;
  return r.U8(v) && r.U8(t) && v == kProtocolVersion && t == static_cast<uint8_t>(type);
}

void PutPoints(WireWriter& w, const std::vector<storage::MetricPoint>& points) {
  w.Var(points.size());
  for (const auto& p : points) {
    w.I64(p.step);
    w.F64(p.value);
  }
}

bool GetPoints(WireReader& r, std::vector<storage::MetricPoint>& points) {
  uint64_t n = 0;
  if (!r.Var(n) || n > r.remaining() / 16) return false;
  points.resize(n);
  for (auto& p : points) {
    if (!r.I64(p.step) || !r.F64(p.value)) return false;
  }
  return true;
}

void PutArtifacts(WireWriter& w, const std::vector<Artifact>& artifacts) {
  w.Var(artifacts.size());
  for (const auto& a : artifacts) {
    w.Str(a.job_id);
    w.Str(a.name);
    w.Str(a.path);
  }
}

bool GetArtifacts(WireReader& r, std::vector<Artifact>& artifacts) {
  uint64_t n = 0;
  if (!r.Var(n) || n > r.remaining()) return false;
  artifacts.resize(n);
  for (auto& a : artifacts) {
    if (!r.Str(a.job_id) || !r.Str(a.name) || !r.Str(a.path)) return false;
  }
  return true;
}

}  // namespace

std::string EncodeHello(const Hello& m) {
  WireWriter w = Begin(MsgType::kHello);
  w.Var(static_cast<uint64_t>(m.rank));
  w.Str(m.host);
  w.I64(m.pid);
  return w.Take();
}

std::string EncodeAssign(const std::vector<Task>& tasks) {
  WireWriter w = Begin(MsgType::kAssign);
  w.Var(tasks.size());
  for (const Task& t : tasks) {
    w.U64(t.task);
    w.Str(t.job_id);
    w.Str(t.kind);
    w.Str(t.config_json);
    w.U64(t.seed);
    w.U32(t.attempt);
    w.U64(t.gang_id);
    w.Var(t.gang.size());
    for (int r : t.gang) w.Var(static_cast<uint64_t>(r));
    w.U8(static_cast<uint8_t>(t.isolation));
    w.I64(t.time_limit_ms);
    w.Str(t.artifact_dir);
    PutArtifacts(w, t.inputs);
    PutArtifacts(w, t.previous);
  }
  return w.Take();
}

std::string EncodeShutdown() { return Begin(MsgType::kShutdown).Take(); }
std::string EncodeCancel() { return Begin(MsgType::kCancel).Take(); }

std::string EncodeMetrics(const MetricsMsg& m) {
  WireWriter w = Begin(MsgType::kMetrics);
  w.U64(m.task);
  w.Var(m.series.size());
  for (const auto& s : m.series) {
    w.Str(s.name);
    PutPoints(w, s.points);
  }
  return w.Take();
}

void AppendTableBytes(const storage::Table& table, std::string& out) {
  WireWriter w;
  w.Var(table.columns.size());
  w.Var(table.num_rows());
  for (const auto& c : table.columns) {
    w.Str(c.name);
    if (auto* d = std::get_if<std::vector<double>>(&c.values)) {
      w.U8(0);
      for (double v : *d) w.F64(v);
    } else if (auto* i = std::get_if<std::vector<int64_t>>(&c.values)) {
      w.U8(1);
      for (int64_t v : *i) w.I64(v);
    } else {
      w.U8(2);
      for (const auto& s : std::get<std::vector<std::string>>(c.values)) w.Str(s);
    }
  }
  out += w.buffer();
}

common::Result<storage::Table> ParseTableBytes(std::string_view bytes) {
  WireReader r(bytes);
  uint64_t ncols = 0, nrows = 0;
  storage::Table t;
  if (!r.Var(ncols) || !r.Var(nrows) || ncols > r.remaining() || nrows > r.remaining()) return Malformed("table");
  for (uint64_t c = 0; c < ncols; ++c) {
    storage::Column col;
    uint8_t type = 0;
    if (!r.Str(col.name) || !r.U8(type)) return Malformed("table");
    if (type == 0) {
      std::vector<double> v(nrows);
      for (auto& x : v) r.F64(x);
      col.values = std::move(v);
    } else if (type == 1) {
      std::vector<int64_t> v(nrows);
      for (auto& x : v) r.I64(x);
      col.values = std::move(v);
    } else if (type == 2) {
      std::vector<std::string> v(nrows);
      for (auto& x : v) r.Str(x);
      col.values = std::move(v);
    } else {
      return Malformed("table");
    }
    if (!r.ok()) return Malformed("table");
    t.columns.push_back(std::move(col));
  }
  if (!r.done()) return Malformed("table");
  return t;
}

std::string EncodeTable(const TableMsg& m) {
  WireWriter w = Begin(MsgType::kTable);
  w.U64(m.task);
  w.Str(m.name);
  std::string out = w.Take();
  AppendTableBytes(m.table, out);
  return out;
}

std::string EncodeDone(const std::vector<TaskResult>& results) {
  WireWriter w = Begin(MsgType::kDone);
  w.Var(results.size());
  for (const auto& r : results) {
    w.U64(r.task);
    w.U8(static_cast<uint8_t>(r.code));
    w.Str(r.message);
    w.F64(r.seconds);
    w.U8(r.worker_lost ? 1 : 0);
  }
  return w.Take();
}

std::string EncodeHeartbeat(const Heartbeat& m) {
  WireWriter w = Begin(MsgType::kHeartbeat);
  w.U64(m.task);
  return w.Take();
}

std::string EncodeArtifact(const ArtifactMsg& m) {
  WireWriter w = Begin(MsgType::kArtifact);
  w.U64(m.task);
  w.Str(m.name);
  w.Str(m.path);
  return w.Take();
}

common::Result<MsgType> PeekType(std::string_view payload) {
  if (payload.size() < 2) return common::DataLoss("message too short for a header");
  const auto v = static_cast<uint8_t>(payload[0]);
  if (v != kProtocolVersion) {
    return common::DataLoss("message of protocol version " + std::to_string(v) + "; this build speaks " +
                            std::to_string(kProtocolVersion) + " (mixed shammie versions in one job?)");
  }
  const auto t = static_cast<uint8_t>(payload[1]);
  if (t < 1 || t > static_cast<uint8_t>(MsgType::kArtifact)) return common::DataLoss("unknown message type");
  return static_cast<MsgType>(t);
}

common::Result<Hello> DecodeHello(std::string_view payload) {
  WireReader r(payload);
  Hello m;
  uint64_t rank = 0;
  if (!Open(r, MsgType::kHello) || !r.Var(rank) || !r.Str(m.host) || !r.I64(m.pid) || !r.done()) {
    return Malformed("hello");
  }
  m.rank = static_cast<int>(rank);
  return m;
}

common::Result<std::vector<Task>> DecodeAssign(std::string_view payload) {
  WireReader r(payload);
  uint64_t n = 0;
  if (!Open(r, MsgType::kAssign) || !r.Var(n) || n > r.remaining()) return Malformed("assign");
  std::vector<Task> tasks(n);
  for (Task& t : tasks) {
    uint64_t gang = 0;
    uint8_t iso = 0;
    if (!r.U64(t.task) || !r.Str(t.job_id) || !r.Str(t.kind) || !r.Str(t.config_json) || !r.U64(t.seed) ||
        !r.U32(t.attempt) || !r.U64(t.gang_id) || !r.Var(gang) || gang > r.remaining()) {
      return Malformed("assign");
    }
    t.gang.resize(gang);
    for (int& g : t.gang) {
      uint64_t v = 0;
      r.Var(v);
      g = static_cast<int>(v);
    }
    if (!r.U8(iso) || iso > 1 || !r.I64(t.time_limit_ms) || !r.Str(t.artifact_dir) || !GetArtifacts(r, t.inputs) ||
        !GetArtifacts(r, t.previous)) {
      return Malformed("assign");
    }
    t.isolation = static_cast<Isolation>(iso);
  }
  if (!r.done()) return Malformed("assign");
  return tasks;
}

common::Result<MetricsMsg> DecodeMetrics(std::string_view payload) {
  WireReader r(payload);
  MetricsMsg m;
  uint64_t n = 0;
  if (!Open(r, MsgType::kMetrics) || !r.U64(m.task) || !r.Var(n) || n > r.remaining()) return Malformed("metrics");
  m.series.resize(n);
  for (auto& s : m.series) {
    if (!r.Str(s.name) || !GetPoints(r, s.points)) return Malformed("metrics");
  }
  if (!r.done()) return Malformed("metrics");
  return m;
}

common::Result<TableMsg> DecodeTable(std::string_view payload) {
  WireReader r(payload);
  TableMsg m;
  if (!Open(r, MsgType::kTable) || !r.U64(m.task) || !r.Str(m.name)) return Malformed("table");
  std::string_view rest;
  r.Bytes(r.remaining(), rest);
  SHAMMIE_ASSIGN_OR_RETURN(m.table, ParseTableBytes(rest));
  return m;
}

common::Result<std::vector<TaskResult>> DecodeDone(std::string_view payload) {
  WireReader r(payload);
  uint64_t n = 0;
  if (!Open(r, MsgType::kDone) || !r.Var(n) || n > r.remaining()) return Malformed("done");
  std::vector<TaskResult> out(n);
  for (auto& t : out) {
    uint8_t code = 0, lost = 0;
    if (!r.U64(t.task) || !r.U8(code) || !r.Str(t.message) || !r.F64(t.seconds) || !r.U8(lost) ||
        code > static_cast<uint8_t>(common::StatusCode::kInternal)) {
      return Malformed("done");
    }
    t.code = static_cast<common::StatusCode>(code);
    t.worker_lost = lost != 0;
  }
  if (!r.done()) return Malformed("done");
  return out;
}

common::Result<Heartbeat> DecodeHeartbeat(std::string_view payload) {
  WireReader r(payload);
  Heartbeat m;
  if (!Open(r, MsgType::kHeartbeat) || !r.U64(m.task) || !r.done()) return Malformed("heartbeat");
  return m;
}

common::Result<ArtifactMsg> DecodeArtifact(std::string_view payload) {
  WireReader r(payload);
  ArtifactMsg m;
  if (!Open(r, MsgType::kArtifact) || !r.U64(m.task) || !r.Str(m.name) || !r.Str(m.path) || !r.done()) {
    return Malformed("artifact");
  }
  return m;
}

}  // namespace shammie::workers
