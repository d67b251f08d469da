// Result queries over a results store: one row per run with the last and the
// best value of a metric. The base of run summaries ("best configuration")
// and of the statistics that later read per-run numbers.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.hpp"
#include "storage/result_store.hpp"

namespace shammie::analysis {

struct MetricSummaryRow {
  std::string job_id;
  std::string stage;
  std::string config_json;
  int64_t seed = 0;
  int64_t points = 0;       // how many (step, value) pairs
  int64_t last_step = 0;
  double last_value = 0;
  double min_value = 0;
  double max_value = 0;
};

// Rows for every run (optionally only of `stage`) that has metric `name`;
// runs without it are skipped. Rows are in job-id order.
common::Result<std::vector<MetricSummaryRow>> SummarizeMetric(storage::ResultStore& store, const std::string& name,
                                                              const std::optional<std::string>& stage = std::nullopt);

// The row with the smallest (or largest) last value; nullopt for no rows.
std::optional<MetricSummaryRow> BestByLastValue(const std::vector<MetricSummaryRow>& rows, bool minimize);

// One sweep point (a resolved config) summarized over its replicates (seeds):
// mean of the runs' last values with a Student-t interval.
struct ConfigSummary {
  std::string config_json;
  size_t seeds = 0;
  double mean = 0, lower = 0, upper = 0, std_dev = 0;
};

// Groups `rows` by config (runs that differ only in seed) and summarizes
// each group; groups in order of first appearance.
common::Result<std::vector<ConfigSummary>> SummarizeOverSeeds(const std::vector<MetricSummaryRow>& rows, double alpha);

}  // namespace shammie::analysis
