#include "orchestrator/curves_analysis.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

#include "analysis/bootstrap.hpp"
#include "analysis/report.hpp"
#include "common/schema.hpp"
#include "common/text.hpp"

namespace shammie::orchestrator {

namespace {

// "alpha=1, prover_gamma=10" (keys in the order given); "all runs" for none.
std::string GroupName(const nlohmann::json& config, const std::vector<std::string>& keys) {
  std::string name;
  for (const auto& k : keys) {
    if (!name.empty()) name += ", ";
    name += k + "=" + (config.contains(k) ? common::ShortJson(config[k]) : std::string("(unset)"));
  }
  return name.empty() ? "all runs" : name;
}

}  // namespace

common::Result<nlohmann::json> AnalyzeCurves(storage::ResultStore& store, const AnalysisSpec& a,
                                             const std::string& report_dir, const std::string& title,
                                             std::ostream& out) {
  SHAMMIE_ASSIGN_OR_RETURN(auto runs, store.ListRuns());
  // group -> step (or x) -> one value per run
  std::map<std::string, std::map<double, std::vector<double>>> groups;
  // With x_metric: group -> step -> the x_metric value of each run (paired
  // with `groups`, same order).
  std::map<std::string, std::map<double, std::vector<double>>> x_values;
  std::map<std::string, size_t> group_runs;
  std::map<std::string, nlohmann::json> group_key;  // the `by` values, for ordering
  std::map<std::string, std::string> group_name;     // for display
  std::vector<std::string> order;
  size_t stage_runs = 0;
  for (const auto& run : runs) {
    if (run.stage != a.stage) continue;
    ++stage_runs;
    nlohmann::json config = nlohmann::json::parse(run.config_json);
    // A `by` name that is not a config key is a metric of the run (its last
    // value): e.g. what an `over` job's upstream model was.
    for (const auto& k : a.by) {
      if (config.contains(k)) continue;
      auto values = store.ReadMetric(run.job_id, k);
      if (values.ok() && !values->empty()) {
        const double v = values->back().value;  // a whole number names its group as one ("block_length=4")
        config[k] = std::abs(v) < 9e15 && v == std::floor(v) ? nlohmann::json(static_cast<int64_t>(v)) : nlohmann::json(v);
        continue;
      }
      std::vector<std::string> keys;
      for (const auto& [key, v] : config.items()) keys.push_back(key);
      return common::InvalidArgument("`by` names " + k + ", neither a config key of stage " + a.stage +
                                     " (its keys: " + common::QuotedList(keys) + ") nor a metric of its run " +
                                     run.job_id);
    }
    auto points = store.ReadMetric(run.job_id, a.metric);
    if (!points.ok()) {
      if (points.status().code() == common::StatusCode::kNotFound) continue;
      return points.status();
    }
    if (points->empty()) continue;
    // With `x_metric`: the run's x at every step where it reported both.
    std::map<int64_t, double> x_at;
    if (!a.x_metric.empty()) {
      auto xs = store.ReadMetric(run.job_id, a.x_metric);
      if (!xs.ok() || xs->empty()) {
        return common::InvalidArgument("`x_metric` names " + a.x_metric + ", not a metric of run " + run.job_id +
                                       " of stage " + a.stage);
      }
      for (const auto& p : *xs) x_at[p.step] = p.value;
    }
    // With `x`: one point per run, the metric's last value at the run's x.
    double x = 0;
    if (!a.x.empty()) {
      if (config.contains(a.x)) {
        if (!config[a.x].is_number()) {
          return common::InvalidArgument("`x` names config key " + a.x + ", which is not a number in stage " + a.stage +
                                         " (" + config[a.x].dump() + ")");
        }
        x = config[a.x].get<double>();
      } else {
        auto xs = store.ReadMetric(run.job_id, a.x);
        if (!xs.ok() || xs->empty()) {
          return common::InvalidArgument("`x` names " + a.x + ", neither a config key of stage " + a.stage +
                                         " nor a metric of its run " + run.job_id);
        }
        x = xs->back().value;
      }
    }
    nlohmann::json key = nlohmann::json::array();
    for (const auto& k : a.by) key.push_back(config[k]);
    const std::string g = key.dump();  // groups are keyed by their exact values; GroupName only displays them
    if (!group_key.count(g)) {
      order.push_back(g);
      group_key[g] = key;
      group_name[g] = GroupName(config, a.by);
    }
    ++group_runs[g];
    if (!a.x_metric.empty()) {
      for (const auto& p : *points) {
        auto it = x_at.find(p.step);
        if (it == x_at.end()) continue;
        groups[g][static_cast<double>(p.step)].push_back(p.value);
        x_values[g][static_cast<double>(p.step)].push_back(it->second);
      }
    } else if (a.x.empty()) {
      for (const auto& p : *points) groups[g][static_cast<double>(p.step)].push_back(p.value);
    } else {
      groups[g][x].push_back(points->back().value);
    }
  }
  if (groups.empty()) {
    return common::FailedPrecondition(stage_runs == 0 ? "stage " + a.stage + " has no finished runs yet"
                                                      : "no run of stage " + a.stage + " reported metric " + a.metric);
  }
  // Groups in order of their `by` values (numbers numerically).
  std::stable_sort(order.begin(), order.end(),
                   [&](const std::string& x, const std::string& y) { return group_key[x] < group_key[y]; });
  std::vector<std::string> group_col;
  std::vector<int64_t> step_col, runs_col;
  std::vector<double> x_col, x_mean_col, mean_col, lower_col, upper_col;
  std::map<std::string, analysis::XYCurve> xy;  // with x_metric: each group's (mean x, mean metric) by step
  std::set<double> all_steps;
  nlohmann::json json = nlohmann::json::object();
  std::map<std::string, std::map<double, double>> means;
  for (const auto& g : order) {
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& [step, values] : groups[g]) {
      SHAMMIE_ASSIGN_OR_RETURN(analysis::SeedSummary s, analysis::SummarizeSeeds(values, a.alpha));
      group_col.push_back(group_name[g]);
      step_col.push_back(static_cast<int64_t>(step));
      x_col.push_back(step);
      runs_col.push_back(static_cast<int64_t>(values.size()));
      mean_col.push_back(s.mean);
      lower_col.push_back(s.lower);
      upper_col.push_back(s.upper);
      all_steps.insert(step);
      means[g][step] = s.mean;
      nlohmann::json point = {{"runs", values.size()}, {"mean", s.mean}, {"lower", s.lower}, {"upper", s.upper}};
      if (a.x.empty()) {
        point["step"] = static_cast<int64_t>(step);
      } else {
        point[a.x] = step;
      }
      if (!a.x_metric.empty()) {
        double x_mean = 0;
        for (double v : x_values[g][step]) x_mean += v / static_cast<double>(x_values[g][step].size());
        x_mean_col.push_back(x_mean);
        point[a.x_metric] = x_mean;
        xy[g].name = group_name[g];
        xy[g].x.push_back(x_mean);
        xy[g].y.push_back(s.mean);
      }
      curve.push_back(point);
    }
    json[group_name[g]] = {{"runs", group_runs[g]}, {"curve", curve}};
  }
  // Text: one line per group, the mean at (up to) 8 steps spread over the curve.
  std::vector<double> steps(all_steps.begin(), all_steps.end());
  std::vector<double> shown;
  const size_t k = std::min<size_t>(8, steps.size());
  for (size_t i = 0; i < k; ++i) shown.push_back(steps[k == 1 ? 0 : i * (steps.size() - 1) / (k - 1)]);
  size_t width = 12;
  for (const auto& g : order) width = std::max(width, group_name[g].size());
  char cell[64];
  out << std::string(width, ' ') << "  runs";
  for (double s : shown) {
    std::snprintf(cell, sizeof cell, " %9.4g", s);
    out << cell;
  }
  out << "   (" << a.metric << " by " << (a.x.empty() ? "step" : a.x) << ", mean over runs"
      << (a.x_metric.empty() ? "" : "; the table pairs it with the mean " + a.x_metric) << ")\n";
  for (const auto& g : order) {
    out << group_name[g] << std::string(width - group_name[g].size(), ' ');
    std::snprintf(cell, sizeof cell, "  %4zu", group_runs[g]);
    out << cell;
    for (double s : shown) {
      auto it = means[g].find(s);
      if (it == means[g].end()) {
        out << "         -";
      } else {
        std::snprintf(cell, sizeof cell, " %9.4g", it->second);
        out << cell;
      }
    }
    out << "\n";
  }
  storage::Table table;
  table.columns = {{"group", group_col}};
  if (a.x.empty()) {
    table.columns.push_back({"step", step_col});
  } else {
    table.columns.push_back({a.x, x_col});
  }
  if (!a.x_metric.empty()) table.columns.push_back({a.x_metric, x_mean_col});
  table.columns.insert(table.columns.end(),
                       {{"runs", runs_col}, {"mean", mean_col}, {"lower", lower_col}, {"upper", upper_col}});
  SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis(a.name, a.parameters.dump(), table));
  if (!report_dir.empty() && !a.x_metric.empty()) {
    std::vector<analysis::XYCurve> curves;
    for (const auto& g : order) {
      if (!xy[g].x.empty()) curves.push_back(xy[g]);
    }
    SHAMMIE_RETURN_IF_ERROR(analysis::PlotXYCurves(curves, a.x_metric, a.metric, a.name, title, report_dir));
  } else if (!report_dir.empty()) {
    std::vector<std::string> x;
    for (double s : steps) {
      std::snprintf(cell, sizeof cell, "%.10g", s);
      x.push_back(cell);
    }
    std::vector<std::pair<std::string, std::vector<double>>> series;
    for (const auto& g : order) {
      std::vector<double> y;
      for (double s : steps) {
        auto it = means[g].find(s);
        y.push_back(it == means[g].end() ? std::numeric_limits<double>::quiet_NaN() : it->second);
      }
      series.push_back({group_name[g], y});
    }
    SHAMMIE_RETURN_IF_ERROR(
        analysis::PlotCurves(x, series, a.metric, a.name, title, report_dir, a.x.empty() ? "step" : a.x));
  }
  nlohmann::json result = {{"metric", a.metric}, {"by", a.by}, {"x", a.x.empty() ? "step" : a.x}, {"groups", json}};
  if (!a.x_metric.empty()) result["x_metric"] = a.x_metric;
  return result;
}

}  // namespace shammie::orchestrator
