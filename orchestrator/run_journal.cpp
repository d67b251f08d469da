#include "orchestrator/run_journal.hpp"

#include <cstring>

#include "common/wire.hpp"
#include "workers/protocol.hpp"

namespace shammie::orchestrator {

static_assert(sizeof(storage::MetricPoint) == 16, "metric points are stored as raw (int64, float64) pairs");

using common::WireReader;
using common::WireWriter;

std::string JournalPath(const std::string& run_dir) { return run_dir + "/journal.bin"; }

std::string EncodeRunBegin(const RunBegin& r) {
  WireWriter w;
  w.F64(r.time);
  w.Str(r.experiment);
  w.Str(r.spec_hash);
  w.Str(r.command_line);
  w.Str(r.spec_text);
  w.I64(r.jobs);
  return w.Take();
}

std::string EncodePlan(const std::string& hash, const std::vector<PlanEntry>& plan) {
  WireWriter w;
  w.Str(hash);
  w.Var(plan.size());
  for (const auto& e : plan) {
    w.Str(e.id);
    w.Str(e.stage);
    w.Str(e.kind);
    w.Str(e.label);
    w.Var(e.inputs.size());
    for (const auto& i : e.inputs) w.Str(i);
  }
  return w.Take();
}

std::string EncodeStart(std::string_view id, uint32_t attempt, std::string_view ranks, std::string_view host,
                        double time) {
  WireWriter w;
  w.Str(id);
  w.U32(attempt);
  w.Str(ranks);
  w.Str(host);
  w.F64(time);
  return w.Take();
}

std::string EncodeMetricsHeader(std::string_view id, uint32_t attempt, std::string_view name, uint64_t n) {
  WireWriter w;
  w.Str(id);
  w.U32(attempt);
  w.Str(name);
  w.Var(n);
  return w.Take();
}

std::string EncodeTableRecord(std::string_view id, uint32_t attempt, std::string_view name,
                              const storage::Table& table) {
  WireWriter w;
  w.Str(id);
  w.U32(attempt);
  w.Str(name);
  std::string out = w.Take();
  workers::AppendTableBytes(table, out);
  return out;
}

std::string EncodeEnd(std::string_view id, uint32_t attempt, common::StatusCode code, std::string_view message,
                      double time, double seconds, bool final_failure) {
  WireWriter w;
  w.Str(id);
  w.U32(attempt);
  w.U8(static_cast<uint8_t>(code));
  w.Str(message);
  w.F64(time);
  w.F64(seconds);
  w.U8(final_failure ? 1 : 0);
  return w.Take();
}

std::string EncodeSkip(std::string_view id, std::string_view reason) {
  WireWriter w;
  w.Str(id);
  w.Str(reason);
  return w.Take();
}

std::string EncodeRunEnd(double time, std::string_view reason) {
  WireWriter w;
  w.F64(time);
  w.Str(reason);
  return w.Take();
}

std::string EncodeArtifactRecord(std::string_view id, uint32_t attempt, std::string_view name, std::string_view path) {
  WireWriter w;
  w.Str(id);
  w.U32(attempt);
  w.Str(name);
  w.Str(path);
  return w.Take();
}

common::Result<JournalState> ReplayJournal(const std::string& journal_path) {
  JournalState st;
  bool malformed = false;
  auto scan = storage::ReadJournal(journal_path, [&](uint8_t type, std::string_view body) {
    WireReader r(body);
    switch (static_cast<RecordType>(type)) {
      case RecordType::kRunBegin: {
        RunBegin b;
        r.F64(b.time), r.Str(b.experiment), r.Str(b.spec_hash), r.Str(b.command_line), r.Str(b.spec_text),
            r.I64(b.jobs);
        st.runs.push_back(std::move(b));
        st.run_ended.push_back(false);
        // A new run: per-run flags start over.
        for (auto& [id, h] : st.jobs) {
          h.skipped = false;
          h.final_failure = false;
          h.running = false;
        }
        break;
      }
      case RecordType::kPlan: {
        uint64_t n = 0;
        r.Str(st.plan_hash);
        r.Var(n);
        if (n > r.remaining()) {
          malformed = true;
          break;
        }
        st.plan.assign(n, {});
        for (auto& e : st.plan) {
          uint64_t k = 0;
          r.Str(e.id), r.Str(e.stage), r.Str(e.kind), r.Str(e.label), r.Var(k);
          if (k > r.remaining()) break;
          e.inputs.resize(k);
          for (auto& i : e.inputs) r.Str(i);
        }
        break;
      }
      case RecordType::kStart: {
        std::string id, ranks, host;
        uint32_t attempt = 0;
        double time = 0;
        if (!(r.Str(id) && r.U32(attempt) && r.Str(ranks) && r.Str(host) && r.F64(time))) break;
        JobHistory& h = st.jobs[id];
        h.attempts = std::max(h.attempts, attempt);
        h.running = true;
        h.cancelled = false;
        h.ranks = ranks;
        h.host = host;
        h.start = time;
        break;
      }
      case RecordType::kMetrics: {
        std::string id, name;
        uint32_t attempt = 0;
        uint64_t n = 0;
        if (r.Str(id) && r.U32(attempt) && r.Str(name) && r.Var(n)) st.metric_points += static_cast<int64_t>(n);
        break;
      }
      case RecordType::kTable:
        break;
      case RecordType::kEnd: {
        std::string id, message;
        uint32_t attempt = 0;
        uint8_t code = 0, final_failure = 0;
        double time = 0, seconds = 0;
        if (!(r.Str(id) && r.U32(attempt) && r.U8(code) && r.Str(message) && r.F64(time) && r.F64(seconds) &&
              r.U8(final_failure))) {
          break;
        }
        JobHistory& h = st.jobs[id];
        h.running = false;
        h.end = time;
        h.last_code = static_cast<common::StatusCode>(code);
        if (h.last_code == common::StatusCode::kOk) {
          h.done_attempt = attempt;
          h.error.clear();
          h.final_failure = false;
        } else {
          h.error = std::string(common::StatusCodeName(h.last_code)) + ": " + message;
          h.cancelled = h.last_code == common::StatusCode::kCancelled && !final_failure;
          if (!h.cancelled) ++h.failures;
          h.final_failure = final_failure != 0;
        }
        break;
      }
      case RecordType::kSkip: {
        std::string id, reason;
        if (!(r.Str(id) && r.Str(reason))) break;
        JobHistory& h = st.jobs[id];
        h.skipped = true;
        h.error = reason;
        break;
      }
      case RecordType::kArtifact: {
        std::string id, name, path;
        uint32_t attempt = 0;
        if (!(r.Str(id) && r.U32(attempt) && r.Str(name) && r.Str(path))) break;
        st.jobs[id].artifacts[name] = path;
        break;
      }
      case RecordType::kRunEnd:
        if (!st.run_ended.empty()) st.run_ended.back() = true;
        break;
      default:
        malformed = true;
    }
    if (!r.ok()) malformed = true;
  });
  if (!scan.ok()) return scan.status();
  if (malformed) return common::DataLoss(journal_path + ": a record this build cannot read (written by a newer shammie?)");
  st.records = scan->records;
  st.torn_bytes = scan->torn_bytes;
  return st;
}

common::Status VisitResults(const std::string& journal_path, const std::unordered_map<std::string, uint32_t>& done,
                            const ResultVisitor& visitor) {
  common::Status status;
  std::vector<storage::MetricPoint> points;
  auto scan = storage::ReadJournal(journal_path, [&](uint8_t type, std::string_view body) {
    if (!status.ok()) return;
    if (type != static_cast<uint8_t>(RecordType::kMetrics) && type != static_cast<uint8_t>(RecordType::kTable)) return;
    WireReader r(body);
    std::string id, name;
    uint32_t attempt = 0;
    if (!(r.Str(id) && r.U32(attempt) && r.Str(name))) return;
    auto it = done.find(id);
    if (it == done.end() || it->second != attempt) return;  // a failed or unfinished attempt
    if (type == static_cast<uint8_t>(RecordType::kMetrics)) {
      uint64_t n = 0;
      std::string_view raw;
      if (!r.Var(n) || n > r.remaining() / 16 || !r.Bytes(n * 16, raw)) return;
      points.resize(n);
      std::memcpy(points.data(), raw.data(), raw.size());
      status = visitor.metrics(id, name, points);
    } else {
      std::string_view rest;
      r.Bytes(r.remaining(), rest);
      auto table = workers::ParseTableBytes(rest);
      status = table.ok() ? visitor.table(id, name, *table) : table.status();
    }
  });
  if (!scan.ok()) return scan.status();
  return status;
}

}  // namespace shammie::orchestrator
