// `shammie analyze` of a continual-learning study (orchestrator/continual.hpp).
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "analysis/bootstrap.hpp"
#include "analysis/report.hpp"
#include "orchestrator/continual.hpp"
#include "storage/result_store.hpp"
#include "workers/continual.hpp"

namespace shammie::orchestrator {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::optional<double> LastMetric(storage::ResultStore& store, const std::string& job, const std::string& name) {
  auto points = store.ReadMetric(job, name);
  if (!points.ok() || points->empty()) return std::nullopt;
  return points->back().value;
}

std::optional<double> MetricAtStep(storage::ResultStore& store, const std::string& job, const std::string& name,
                                   int64_t step) {
  auto points = store.ReadMetric(job, name);
  if (!points.ok()) return std::nullopt;
  for (const auto& p : *points) {
    if (p.step == step) return p.value;
  }
  return std::nullopt;
}

std::string Signed(double v) {
  if (!std::isfinite(v)) return "   n/a";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%+.3f", v);
  return buf;
}

std::string Fixed(double v) {
  if (!std::isfinite(v)) return "  n/a";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  return buf;
}

std::string Pad(std::string s, size_t width) {
  if (s.size() < width) s += std::string(width - s.size(), ' ');
  return s;
}

struct Row {
  const ContinualCell* cell = nullptr;
  double accuracy = kNaN, independent = kNaN, step0 = kNaN;
  int64_t selected = -2;  // task position; -1 the base; -2 no selection
  std::string selected_task, relation;
};

}  // namespace

common::Result<nlohmann::json> AnalyzeContinual(const ExperimentSpec& spec, storage::ResultStore& store, double alpha,
                                                const std::string& report_dir, std::ostream& out) {
  if (!spec.continual) return common::InvalidArgument("the experiment has no [continual] study");
  const ContinualSpec& c = *spec.continual;
  const ContinualLayout layout = LayOutContinual(spec);

  // Per cell: the learner's accuracy and what it chose.
  std::vector<Row> rows;
  std::map<std::tuple<std::string, int64_t, int64_t>, double> independent;  // (sequence, replicate, position)
  int64_t missing = 0;
  std::map<std::pair<std::string, std::string>, std::string> relations;  // TaskRelation is measured: cache it
  auto relation_of = [&](const nlohmann::json& from, const nlohmann::json& to) {
    auto key = std::make_pair(from.dump(), to.dump());
    auto it = relations.find(key);
    if (it != relations.end()) return it->second;
    auto source = workers::TaskSpecFromConfig(from);
    auto target = workers::TaskSpecFromConfig(to);
    std::string r = source.ok() && target.ok() ? workers::TaskRelation(*source, *target) : "";
    relations[key] = r;
    return r;
  };
  // The task a learner started `cell` from: -1 the base, else a position.
  auto set_source = [&](Row& row, const ContinualCell& cell, int64_t position) {
    row.selected = position;
    if (position < 0) {
      row.selected_task = row.relation = "base";
      return;
    }
    for (const ContinualCell& other : layout.cells) {
      if (other.sequence == cell.sequence && other.replicate == cell.replicate && other.position == position &&
          other.learner == cell.learner) {
        row.selected_task = other.task;
        row.relation = relation_of(other.config, cell.config);
        return;
      }
    }
  };
  for (const ContinualCell& cell : layout.cells) {
    Row row;
    row.cell = &cell;
    const bool oracle = cell.learner == "oracle";
    auto acc = LastMetric(store, cell.result_job, oracle ? "selected_score" : "test_accuracy");
    if (acc) row.accuracy = *acc; else ++missing;
    if (!oracle) {
      if (auto s0 = MetricAtStep(store, cell.result_job, "val_accuracy", 0)) row.step0 = *s0;
    }
    if (!cell.select_job.empty()) {
      if (auto idx = LastMetric(store, cell.select_job, "selected_index")) {
        const auto k = static_cast<size_t>(*idx);
        if (k < cell.candidate_positions.size()) set_source(row, cell, cell.candidate_positions[k]);
      }
    }
    // Where independent and sequential start: the base, and the previous task.
    if (cell.learner == "independent") set_source(row, cell, -1);
    if (cell.learner == "sequential") set_source(row, cell, cell.position - 1);
    if (cell.learner == "independent") independent[{cell.sequence, cell.replicate, cell.position}] = row.accuracy;
    rows.push_back(row);
  }
  for (Row& row : rows) {
    auto it = independent.find({row.cell->sequence, row.cell->replicate, row.cell->position});
    if (it != independent.end()) row.independent = it->second;
  }

  // Table: one row per cell.
  {
    std::vector<std::string> sequence, regime, learner, role, task, selected_task, relation, job;
    std::vector<int64_t> replicate, position, selected, finetune_steps, probe_steps;
    std::vector<double> accuracy, indep, transfer, step0;
    for (const Row& r : rows) {
      sequence.push_back(r.cell->sequence);
      regime.push_back(r.cell->regime);
      learner.push_back(r.cell->learner);
      role.push_back(r.cell->role);
      task.push_back(r.cell->task);
      selected_task.push_back(r.selected_task);
      relation.push_back(r.relation);
      job.push_back(r.cell->result_job);
      replicate.push_back(r.cell->replicate);
      position.push_back(r.cell->position);
      selected.push_back(r.selected);
      finetune_steps.push_back(r.cell->finetune_steps);
      probe_steps.push_back(r.cell->probe_steps);
      accuracy.push_back(r.accuracy);
      indep.push_back(r.independent);
      transfer.push_back(r.accuracy - r.independent);
      step0.push_back(r.step0);
    }
    storage::Table t;
    t.columns = {{"sequence", sequence},       {"regime", regime},           {"learner", learner},
                 {"replicate", replicate},     {"position", position},       {"role", role},
                 {"task", task},               {"accuracy", accuracy},       {"independent", indep},
                 {"transfer", transfer},       {"step0_accuracy", step0},    {"selected", selected},
                 {"selected_task", selected_task}, {"relation", relation}, {"finetune_steps", finetune_steps},
                 {"probe_steps", probe_steps}, {"job", job}};
    SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis("continual-tasks", "{}", t));
  }

  // Summary per regime and learner, over the target tasks: a value per
  // replicate (the mean over the regime's target tasks), then the mean and a
  // bootstrap interval over replicates.
  std::vector<std::string> regimes;
  for (const auto& q : c.sequences) {
    if (std::find(regimes.begin(), regimes.end(), q.regime) == regimes.end()) regimes.push_back(q.regime);
  }
  struct Cell {
    double accuracy = kNaN, relative = kNaN, lower = kNaN, upper = kNaN, negative_rate = kNaN;
    double finetune_steps = 0, probe_steps = 0;
    int64_t tasks = 0;
  };
  std::map<std::pair<std::string, std::string>, Cell> summary;  // (regime, learner)
  nlohmann::json json_summary = nlohmann::json::object();
  for (const auto& regime : regimes) {
    for (const auto& learner : c.learners) {
      std::map<int64_t, std::pair<double, int64_t>> per_replicate;  // replicate -> (sum of transfer, count)
      double acc_sum = 0, ft = 0, probe = 0;
      int64_t n = 0, negative = 0;
      for (const Row& r : rows) {
        if (r.cell->regime != regime || r.cell->learner != learner || r.cell->role != "target") continue;
        const double d = r.accuracy - r.independent;
        if (!std::isfinite(d)) continue;
        per_replicate[r.cell->replicate].first += d;
        per_replicate[r.cell->replicate].second += 1;
        acc_sum += r.accuracy;
        ft += static_cast<double>(r.cell->finetune_steps);
        probe += static_cast<double>(r.cell->probe_steps);
        negative += d < 0 ? 1 : 0;
        ++n;
      }
      Cell s;
      s.tasks = n;
      if (n > 0) {
        std::vector<double> values;
        for (const auto& [rep, sc] : per_replicate) values.push_back(sc.first / static_cast<double>(sc.second));
        s.accuracy = acc_sum / static_cast<double>(n);
        s.relative = analysis::MeanOf(values);
        s.lower = s.upper = s.relative;
        if (values.size() >= 2) {
          analysis::BootstrapOptions o;
          o.resamples = 4000;
          o.seed = 7;
          o.method = analysis::BootstrapMethod::kPercentile;
          auto ci = analysis::BootstrapInterval(values, alpha, o);
          if (ci.ok()) {
            s.lower = ci->lower;
            s.upper = ci->upper;
          }
        }
        s.negative_rate = static_cast<double>(negative) / static_cast<double>(n);
        s.finetune_steps = ft / static_cast<double>(n);
        s.probe_steps = probe / static_cast<double>(n);
      }
      summary[{regime, learner}] = s;
      json_summary[regime][learner] = {{"accuracy", s.accuracy},         {"relative", s.relative},
                                       {"lower", s.lower},               {"upper", s.upper},
                                       {"negative_rate", s.negative_rate}, {"finetune_steps", s.finetune_steps},
                                       {"probe_steps", s.probe_steps},   {"tasks", s.tasks}};
    }
  }
  {
    std::vector<std::string> regime, learner;
    std::vector<double> accuracy, relative, lower, upper, negative_rate, ft, probe;
    std::vector<int64_t> tasks;
    for (const auto& [key, s] : summary) {
      regime.push_back(key.first);
      learner.push_back(key.second);
      accuracy.push_back(s.accuracy);
      relative.push_back(s.relative);
      lower.push_back(s.lower);
      upper.push_back(s.upper);
      negative_rate.push_back(s.negative_rate);
      ft.push_back(s.finetune_steps);
      probe.push_back(s.probe_steps);
      tasks.push_back(s.tasks);
    }
    storage::Table t;
    t.columns = {{"regime", regime},   {"learner", learner},   {"tasks", tasks},
                 {"accuracy", accuracy}, {"relative", relative}, {"lower", lower},
                 {"upper", upper},     {"negative_rate", negative_rate}, {"finetune_steps", ft},
                 {"probe_steps", probe}};
    nlohmann::json parameters = {{"alpha", alpha}, {"over", "target tasks"}, {"interval", "bootstrap percentile over seeds"}};
    SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis("continual-summary", parameters.dump(), t));
  }

  char line[512];
  out << "continual study " << spec.name << ": " << c.sequences.size() << " sequences x " << c.seeds << " seeds, "
      << layout.cells.size() / std::max<size_t>(1, c.learners.size()) << " task fine-tunings per learner";
  if (missing == static_cast<int64_t>(layout.cells.size())) {
    out << " (no result found for any of them: the run has not finished a fine-tune yet, or it was made by a "
           "build whose lm.train keys differ, which changes every job id)";
  } else if (missing > 0) {
    out << " (" << missing << " results missing: run or --resume the experiment first)";
  }
  out << "\n\ntarget tasks: accuracy relative to independent, mean over seeds [" << 100 * (1 - alpha)
      << "% bootstrap interval]\n";
  out << Pad("learner", 13);
  for (const auto& regime : regimes) out << Pad(regime, 26);
  out << "\n";
  for (const auto& learner : c.learners) {
    out << Pad(learner, 13);
    for (const auto& regime : regimes) {
      const Cell& s = summary[{regime, learner}];
      out << Pad(Signed(s.relative) + " [" + Signed(s.lower) + "," + Signed(s.upper) + "]", 26);
    }
    out << "\n";
  }
  out << "\ntarget tasks: mean accuracy | negative-transfer rate | fine-tune + probe steps per task\n";
  out << Pad("learner", 13);
  for (const auto& regime : regimes) out << Pad(regime, 26);
  out << "\n";
  for (const auto& learner : c.learners) {
    out << Pad(learner, 13);
    for (const auto& regime : regimes) {
      const Cell& s = summary[{regime, learner}];
      std::snprintf(line, sizeof(line), "%s | %s | %.0f+%.0f", Fixed(s.accuracy).c_str(), Fixed(s.negative_rate).c_str(),
                    s.finetune_steps, s.probe_steps);
      out << Pad(line, 26);
    }
    out << "\n";
  }
  if (summary.count({regimes.front(), "oracle"}) && summary.count({regimes.front(), "selective"})) {
    out << "\noracle gap (oracle - selective, relative accuracy):";
    for (const auto& regime : regimes) {
      out << "  " << regime << " " << Signed(summary[{regime, "oracle"}].relative - summary[{regime, "selective"}].relative);
    }
    out << "\n";
  }

  // The oracle's transfer matrix: T(s -> t) = acc_t(init from the oracle's
  // checkpoint of task s) - acc_t(init from the base), mean over seeds.
  std::vector<std::string> t_sequence, t_source_task, t_target_task, t_relation;
  std::vector<int64_t> t_source, t_target, t_replicates;
  std::vector<double> t_transfer;
  nlohmann::json json_transfer = nlohmann::json::object();
  for (const auto& q : c.sequences) {
    const size_t n = q.tasks.size();
    std::vector<std::vector<double>> sum(n, std::vector<double>(n, 0.0));
    std::vector<std::vector<int64_t>> count(n, std::vector<int64_t>(n, 0));
    std::vector<std::string> names(n);
    for (const ContinualCell& cell : layout.cells) {
      if (cell.sequence != q.name || cell.learner != "oracle") continue;
      names[static_cast<size_t>(cell.position)] = cell.task;
      auto base = LastMetric(store, cell.candidate_jobs.front(), "test_accuracy");
      if (!base) continue;
      for (size_t k = 1; k < cell.candidate_jobs.size(); ++k) {
        auto acc = LastMetric(store, cell.candidate_jobs[k], "test_accuracy");
        if (!acc) continue;
        const auto s = static_cast<size_t>(cell.candidate_positions[k]);
        sum[s][static_cast<size_t>(cell.position)] += *acc - *base;
        count[s][static_cast<size_t>(cell.position)] += 1;
      }
    }
    std::vector<std::vector<double>> matrix(n, std::vector<double>(n, kNaN));
    bool any = false;
    for (size_t s = 0; s < n; ++s) {
      for (size_t t = 0; t < n; ++t) {
        if (count[s][t] == 0) continue;
        any = true;
        matrix[s][t] = sum[s][t] / static_cast<double>(count[s][t]);
        t_sequence.push_back(q.name);
        t_source.push_back(static_cast<int64_t>(s));
        t_target.push_back(static_cast<int64_t>(t));
        t_source_task.push_back(DescribeTask(q.tasks[s].config));
        t_target_task.push_back(DescribeTask(q.tasks[t].config));
        t_relation.push_back(relation_of(q.tasks[s].config, q.tasks[t].config));
        t_transfer.push_back(matrix[s][t]);
        t_replicates.push_back(count[s][t]);
      }
    }
    if (!any) continue;
    json_transfer[q.name] = matrix;
    out << "\ntransfer matrix, sequence " << q.name << " (" << q.regime
        << "): row = source task (oracle checkpoint), column = target; acc(from source) - acc(from base)\n";
    out << Pad("", 28);
    for (size_t t = 0; t < n; ++t) out << Pad(std::to_string(t), 7);
    out << "\n";
    for (size_t s = 0; s + 1 < n; ++s) {
      out << Pad(std::to_string(s) + " " + names[s], 28);
      for (size_t t = 0; t < n; ++t) out << Pad(t > s && std::isfinite(matrix[s][t]) ? Signed(matrix[s][t]) : "  .", 7);
      out << "\n";
    }
    if (!report_dir.empty()) {
      std::vector<std::string> labels;
      for (size_t i = 0; i < n; ++i) labels.push_back(std::to_string(i) + " " + names[i]);
      SHAMMIE_RETURN_IF_ERROR(analysis::PlotHeatmap(matrix, labels, labels, "continual-" + q.name + "-transfer",
                                                    spec.name + ": transfer matrix, " + q.name + " (" + q.regime + ")",
                                                    report_dir));
    }
  }
  {
    storage::Table t;
    t.columns = {{"sequence", t_sequence},       {"source", t_source},   {"target", t_target},
                 {"source_task", t_source_task}, {"target_task", t_target_task}, {"relation", t_relation},
                 {"transfer", t_transfer},       {"replicates", t_replicates}};
    SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis("continual-transfer", "{}", t));
  }

  // Accuracy curves per sequence: mean over seeds, per learner.
  if (!report_dir.empty()) {
    for (const auto& q : c.sequences) {
      std::vector<std::string> x;
      for (size_t t = 0; t < q.tasks.size(); ++t) {
        x.push_back(std::to_string(t) + " " + DescribeTask(q.tasks[t].config) + (q.tasks[t].role == "source" ? " (S)" : ""));
      }
      std::vector<std::pair<std::string, std::vector<double>>> series;
      for (const auto& learner : c.learners) {
        std::vector<double> sum(q.tasks.size(), 0.0), n(q.tasks.size(), 0.0);
        for (const Row& r : rows) {
          if (r.cell->sequence != q.name || r.cell->learner != learner || !std::isfinite(r.accuracy)) continue;
          sum[static_cast<size_t>(r.cell->position)] += r.accuracy;
          n[static_cast<size_t>(r.cell->position)] += 1;
        }
        std::vector<double> mean(q.tasks.size(), kNaN);
        for (size_t t = 0; t < q.tasks.size(); ++t) if (n[t] > 0) mean[t] = sum[t] / n[t];
        series.emplace_back(learner, mean);
      }
      SHAMMIE_RETURN_IF_ERROR(analysis::PlotCurves(x, series, "test accuracy", "continual-" + q.name + "-accuracy",
                                                   spec.name + ": accuracy per task, " + q.name + " (" + q.regime + ")",
                                                   report_dir));
    }
  }
  return nlohmann::json{{"summary", json_summary}, {"transfer", json_transfer}, {"missing", missing}};
}

}  // namespace shammie::orchestrator
