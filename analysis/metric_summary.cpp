#include "analysis/metric_summary.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "analysis/bootstrap.hpp"

namespace shammie::analysis {

common::Result<std::vector<MetricSummaryRow>> SummarizeMetric(storage::ResultStore& store, const std::string& name,
                                                              const std::optional<std::string>& stage) {
  SHAMMIE_ASSIGN_OR_RETURN(auto runs, store.ListRuns());
  std::vector<MetricSummaryRow> rows;
  for (const auto& run : runs) {
    if (stage && run.stage != *stage) continue;
    SHAMMIE_ASSIGN_OR_RETURN(auto metrics, store.ListMetrics(run.job_id));
    if (std::find(metrics.begin(), metrics.end(), name) == metrics.end()) continue;
    SHAMMIE_ASSIGN_OR_RETURN(auto points, store.ReadMetric(run.job_id, name));
    if (points.empty()) continue;
    MetricSummaryRow row;
    row.job_id = run.job_id;
    row.stage = run.stage;
    row.config_json = run.config_json;
    row.seed = run.seed;
    row.points = static_cast<int64_t>(points.size());
    row.last_step = points.back().step;
    row.last_value = points.back().value;
    row.min_value = row.max_value = points.front().value;
    for (const auto& p : points) {
      if (std::isnan(p.value)) {
        return common::DataLoss("metric " + name + " of job " + run.job_id + " holds NaN at step " +
                                std::to_string(p.step));
      }
      row.min_value = std::min(row.min_value, p.value);
      row.max_value = std::max(row.max_value, p.value);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

common::Result<std::vector<ConfigSummary>> SummarizeOverSeeds(const std::vector<MetricSummaryRow>& rows, double alpha) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> values;
  for (const auto& r : rows) {
    if (!values.count(r.config_json)) order.push_back(r.config_json);
    values[r.config_json].push_back(r.last_value);
  }
  std::vector<ConfigSummary> out;
  for (const auto& config : order) {
    SHAMMIE_ASSIGN_OR_RETURN(SeedSummary s, SummarizeSeeds(values[config], alpha));
    out.push_back({config, s.count, s.mean, s.lower, s.upper, s.std_dev});
  }
  return out;
}

std::optional<MetricSummaryRow> BestByLastValue(const std::vector<MetricSummaryRow>& rows, bool minimize) {
  if (rows.empty()) return std::nullopt;
  auto better = [minimize](const MetricSummaryRow& a, const MetricSummaryRow& b) {
    return minimize ? a.last_value < b.last_value : a.last_value > b.last_value;
  };
  return *std::min_element(rows.begin(), rows.end(), better);
}

}  // namespace shammie::analysis
