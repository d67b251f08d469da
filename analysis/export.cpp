#include "analysis/export.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace shammie::analysis {

namespace {

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

common::Status ExportMetricsCsv(storage::ResultStore& store, std::ostream& out) {
  SHAMMIE_ASSIGN_OR_RETURN(auto runs, store.ListRuns());
  out << "job_id,stage,kind,seed,metric,step,value\n";
  for (const auto& run : runs) {
    SHAMMIE_ASSIGN_OR_RETURN(auto names, store.ListMetrics(run.job_id));
    const std::string prefix = CsvField(run.job_id) + "," + CsvField(run.stage) + "," + CsvField(run.kind) + "," +
                               std::to_string(run.seed) + ",";
    for (const auto& name : names) {
      SHAMMIE_ASSIGN_OR_RETURN(auto points, store.ReadMetric(run.job_id, name));
      for (const auto& p : points) out << prefix << CsvField(name) << "," << p.step << "," << Number(p.value) << "\n";
    }
  }
  if (!out) return common::Unavailable("cannot write the export (output stream failed)");
  return common::Status::Ok();
}

common::Status ExportJson(storage::ResultStore& store, std::ostream& out) {
  using nlohmann::json;
  const auto& info = store.info();
  json doc = {{"experiment", info.experiment},          {"spec_hash", info.spec_hash},
              {"shammie_version", info.shammie_version}, {"git_commit", info.git_commit},
              {"start_time", info.start_time},           {"end_time", info.end_time}};
  SHAMMIE_ASSIGN_OR_RETURN(auto jobs, store.ReadJobs());
  doc["jobs"] = json::array();
  for (const auto& j : jobs) {
    doc["jobs"].push_back({{"id", j.id}, {"stage", j.stage}, {"kind", j.kind},
                           {"status", std::string(storage::JobStatusName(j.status))}, {"attempts", j.attempts},
                           {"ranks", j.ranks}, {"host", j.host}, {"start_time", j.start_time},
                           {"end_time", j.end_time}, {"error", j.error}});
  }
  SHAMMIE_ASSIGN_OR_RETURN(auto runs, store.ListRuns());
  doc["runs"] = json::array();
  for (const auto& run : runs) {
    json config = json::parse(run.config_json, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) return common::DataLoss("run " + run.job_id + " has a config that is not JSON");
    json metrics = json::object();
    SHAMMIE_ASSIGN_OR_RETURN(auto names, store.ListMetrics(run.job_id));
    for (const auto& name : names) {
      SHAMMIE_ASSIGN_OR_RETURN(auto points, store.ReadMetric(run.job_id, name));
      json series = json::array();
      for (const auto& p : points) series.push_back({p.step, p.value});
      metrics[name] = std::move(series);
    }
    doc["runs"].push_back({{"job_id", run.job_id}, {"stage", run.stage}, {"kind", run.kind}, {"seed", run.seed},
                           {"inputs", run.inputs}, {"config", config}, {"metrics", metrics}});
  }
  out << doc.dump(2) << "\n";
  if (!out) return common::Unavailable("cannot write the export (output stream failed)");
  return common::Status::Ok();
}

}  // namespace shammie::analysis
