// Reading the per-example tables that a stage's runs stored, for the
// analyses of `shammie analyze` (orchestrator/analyze_command.cpp and the
// study analyses beside it).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/status.hpp"
#include "orchestrator/spec.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

// One column as doubles (float or int columns); InvalidArgument naming
// `where` and the columns there are otherwise.
common::Result<std::vector<double>> NumericColumn(const storage::Table& t, const std::string& name,
                                                  const std::string& where);
// One column as strings (string or int columns).
common::Result<std::vector<std::string>> TextColumn(const storage::Table& t, const std::string& name,
                                                    const std::string& where);
// Calls `visit(table, where)` for tables/<a.table> of every run of a.stage;
// FailedPrecondition when no run has one yet.
common::Status ForEachStageTable(
    storage::ResultStore& store, const AnalysisSpec& a,
    const std::function<common::Status(const storage::Table&, const std::string&)>& visit);

}  // namespace shammie::orchestrator
