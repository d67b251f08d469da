#include "orchestrator/stage_tables.hpp"

#include "common/text.hpp"

namespace shammie::orchestrator {

common::Result<std::vector<double>> NumericColumn(const storage::Table& t, const std::string& name,
                                                  const std::string& where) {
  for (const auto& c : t.columns) {
    if (c.name != name) continue;
    if (const auto* d = std::get_if<std::vector<double>>(&c.values)) return *d;
    if (const auto* i = std::get_if<std::vector<int64_t>>(&c.values)) return std::vector<double>(i->begin(), i->end());
    return common::InvalidArgument(where + ": column " + name + " holds strings, not numbers");
  }
  std::vector<std::string> names;
  for (const auto& c : t.columns) names.push_back(c.name);
  return common::InvalidArgument(where + ": no column " + name + "; columns: " + common::QuotedList(names));
}

common::Result<std::vector<std::string>> TextColumn(const storage::Table& t, const std::string& name,
                                                    const std::string& where) {
  for (const auto& c : t.columns) {
    if (c.name != name) continue;
    if (const auto* s = std::get_if<std::vector<std::string>>(&c.values)) return *s;
    std::vector<std::string> out;
    if (const auto* i = std::get_if<std::vector<int64_t>>(&c.values)) {
      for (int64_t v : *i) out.push_back(std::to_string(v));
      return out;
    }
    return common::InvalidArgument(where + ": column " + name + " holds floats; strata need strings or integers");
  }
  return common::InvalidArgument(where + ": no column " + name);
}

common::Status ForEachStageTable(storage::ResultStore& store, const AnalysisSpec& a,
                                 const std::function<common::Status(const storage::Table&, const std::string&)>& visit) {
  SHAMMIE_ASSIGN_OR_RETURN(auto runs, store.ListRuns());
  size_t used = 0;
  for (const auto& run : runs) {
    if (run.stage != a.stage) continue;
    auto table = store.ReadTable(run.job_id, a.table);
    if (!table.ok()) {
      if (table.status().code() == common::StatusCode::kNotFound) continue;
      return table.status();
    }
    SHAMMIE_RETURN_IF_ERROR(visit(*table, "run " + run.job_id + " table " + a.table));
    ++used;
  }
  if (used == 0) {
    return common::FailedPrecondition("no run of stage " + a.stage + " has a table " + a.table +
                                      " (have its jobs run? see `shammie status`)");
  }
  return common::Status::Ok();
}

}  // namespace shammie::orchestrator
