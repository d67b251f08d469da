#include "orchestrator/pareto_testing.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>

#include "analysis/risk_control.hpp"
#include "common/random.hpp"
#include "orchestrator/stage_tables.hpp"

namespace shammie::orchestrator {

namespace {

struct Config {
  std::string job_id;
  std::string label;  // the swept keys' values
  std::vector<double> val_loss, val_cost, cal_loss, cal_cost;
};

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

std::string LabelOf(const Stage* stage, const std::string& config_json) {
  if (!stage) return "";
  const nlohmann::json config = nlohmann::json::parse(config_json, nullptr, false);
  std::vector<std::string> keys;
  for (const auto& axis : stage->sweep.grid) keys.push_back(axis.key);
  for (const auto& axis : stage->sweep.zip) keys.push_back(axis.key);
  for (const auto& axis : stage->sweep.random) keys.push_back(axis.key);
  std::string out;
  for (const auto& k : keys) {
    if (!config.is_object() || !config.contains(k)) continue;
    char buf[64];
    if (config[k].is_number_float()) {
      std::snprintf(buf, sizeof buf, "%s=%.4g", k.c_str(), config[k].get<double>());
    } else {
      std::snprintf(buf, sizeof buf, "%s=%s", k.c_str(), config[k].dump().c_str());
    }
    out += (out.empty() ? "" : " ") + std::string(buf);
  }
  return out;
}

common::Result<std::vector<Config>> Gather(storage::ResultStore& store, const ExperimentSpec& spec, const AnalysisSpec& a) {
  const Stage* stage = spec.FindStage(a.stage);
  std::vector<Config> configs;
  SHAMMIE_ASSIGN_OR_RETURN(auto runs, store.ListRuns());
  for (const auto& run : runs) {
    if (run.stage != a.stage) continue;
    auto table = store.ReadTable(run.job_id, a.table);
    if (!table.ok()) {
      if (table.status().code() == common::StatusCode::kNotFound) continue;
      return table.status();
    }
    const std::string where = "run " + run.job_id + " table " + a.table;
    SHAMMIE_ASSIGN_OR_RETURN(auto split, TextColumn(*table, "split", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto loss, NumericColumn(*table, "loss", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto cost, NumericColumn(*table, "cost", where));
    Config c;
    c.job_id = run.job_id;
    c.label = LabelOf(stage, run.config_json);
    for (size_t i = 0; i < split.size(); ++i) {
      if (!(loss[i] >= 0 && loss[i] <= 1)) return common::InvalidArgument(where + ": loss must be in [0, 1]");
      if (split[i] == "validation") {
        c.val_loss.push_back(loss[i]);
        c.val_cost.push_back(cost[i]);
      } else if (split[i] == "calibration") {
        c.cal_loss.push_back(loss[i]);
        c.cal_cost.push_back(cost[i]);
      } else {
        return common::InvalidArgument(where + ": split must be \"validation\" or \"calibration\", not \"" + split[i] + "\"");
      }
    }
    if (c.val_loss.empty() || c.cal_loss.size() < 2) {
      return common::InvalidArgument(where + ": needs validation rows and at least 2 calibration rows");
    }
    if (!configs.empty() && (c.cal_loss.size() != configs.front().cal_loss.size() ||
                             c.val_loss.size() != configs.front().val_loss.size())) {
      return common::InvalidArgument(where + ": " + std::to_string(c.val_loss.size()) + " validation and " +
                                     std::to_string(c.cal_loss.size()) + " calibration rows, but run " +
                                     configs.front().job_id + " has " + std::to_string(configs.front().val_loss.size()) +
                                     " and " + std::to_string(configs.front().cal_loss.size()) +
                                     " (the examples must be the same for every configuration)");
    }
    configs.push_back(std::move(c));
  }
  if (configs.empty()) {
    return common::FailedPrecondition("no run of stage " + a.stage + " has a table " + a.table +
                                      " (have its jobs run? see `shammie status`)");
  }
  return configs;
}

analysis::SplitLosses Losses(const std::vector<Config>& configs, bool validation, const std::vector<size_t>* rows) {
  analysis::SplitLosses s;
  s.constraint.resize(1);
  for (const auto& c : configs) {
    const auto& loss = validation ? c.val_loss : c.cal_loss;
    const auto& cost = validation ? c.val_cost : c.cal_cost;
    std::vector<double> l, k;
    if (rows) {
      for (size_t r : *rows) {
        l.push_back(loss[r]);
        k.push_back(cost[r]);
      }
    } else {
      l = loss;
      k = cost;
    }
    s.constraint[0].push_back(std::move(l));
    s.free_objective.push_back(std::move(k));
  }
  return s;
}

}  // namespace

common::Result<nlohmann::json> AnalyzeParetoTesting(storage::ResultStore& store, const ExperimentSpec& spec,
                                                    const AnalysisSpec& a, std::ostream& out) {
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<Config> configs, Gather(store, spec, a));
  analysis::RiskControlOptions o;
  o.alphas = {a.alpha};
  o.delta = a.delta;
  o.binary = a.bound == "binomial";
  const analysis::SplitLosses validation = Losses(configs, true, nullptr);
  SHAMMIE_ASSIGN_OR_RETURN(analysis::RiskControlResult r,
                           analysis::SelectRiskControlled(validation, Losses(configs, false, nullptr), o));
  const size_t n_val = configs.front().val_loss.size(), n_cal = configs.front().cal_loss.size();
  out << configs.size() << " configurations; " << n_val << " validation and " << n_cal
      << " calibration examples each; alpha = " << a.alpha << ", delta = " << a.delta << " ("
      << (o.binary ? "binomial" : "hoeffding-bentkus") << " p-values)\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-4s %-40s %9s %9s %9s %9s %11s %8s\n", "", "configuration", "val_risk", "val_cost",
                "cal_risk", "cal_cost", "p_value", "accepted");
  out << line;
  storage::Table table;
  std::vector<std::string> job, label;
  std::vector<double> val_risk, val_cost, cal_risk, cal_cost, p_value;
  std::vector<int64_t> accepted, chosen;
  nlohmann::json tested = nlohmann::json::array();
  for (size_t t = 0; t < r.tested.size(); ++t) {
    const Config& c = configs[r.tested[t]];
    const bool ok = std::find(r.accepted.begin(), r.accepted.end(), r.tested[t]) != r.accepted.end();
    const bool pick = r.chosen && *r.chosen == r.tested[t];
    std::snprintf(line, sizeof line, "%-4s %-40s %9.4f %9.4f %9.4f %9.4f %11.4g %8s\n", pick ? "=>" : "", c.label.c_str(),
                  Mean(c.val_loss), Mean(c.val_cost), Mean(c.cal_loss), Mean(c.cal_cost), r.calibration_p_values[t],
                  ok ? "yes" : "no");
    out << line;
    job.push_back(c.job_id);
    label.push_back(c.label);
    val_risk.push_back(Mean(c.val_loss));
    val_cost.push_back(Mean(c.val_cost));
    cal_risk.push_back(Mean(c.cal_loss));
    cal_cost.push_back(Mean(c.cal_cost));
    p_value.push_back(r.calibration_p_values[t]);
    accepted.push_back(ok ? 1 : 0);
    chosen.push_back(pick ? 1 : 0);
    tested.push_back({{"job", c.job_id}, {"configuration", c.label}, {"val_risk", val_risk.back()},
                      {"val_cost", val_cost.back()}, {"cal_risk", cal_risk.back()}, {"cal_cost", cal_cost.back()},
                      {"p_value", p_value.back()}, {"accepted", ok}});
  }
  nlohmann::json result = {{"configurations", configs.size()}, {"tested", tested}};
  if (r.chosen) {
    const Config& c = configs[*r.chosen];
    out << "selected: " << c.label << " (job " << c.job_id << "): cost " << Mean(c.cal_cost) << " on calibration; risk <= "
        << a.alpha << " with probability >= " << 1 - a.delta << "\n";
    result["selected"] = {{"job", c.job_id}, {"configuration", c.label}, {"cal_cost", Mean(c.cal_cost)},
                          {"cal_risk", Mean(c.cal_loss)}, {"val_cost", Mean(c.val_cost)}};
  } else {
    out << "selected: none: no configuration on the front could be certified at alpha = " << a.alpha << "\n";
    result["selected"] = nullptr;
  }
  table.columns = {{"job", job},           {"configuration", label}, {"val_risk", val_risk}, {"val_cost", val_cost},
                   {"cal_risk", cal_risk}, {"cal_cost", cal_cost},   {"p_value", p_value},   {"accepted", accepted},
                   {"chosen", chosen}};
  SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis(a.name, a.parameters.dump(), table));

  // Repeated random halvings of the calibration rows: choose on one part,
  // test on the other.
  const size_t n_part = static_cast<size_t>(std::floor(a.calibration * static_cast<double>(n_cal)));
  if (n_part < 1 || n_part >= n_cal) return common::InvalidArgument("calibration must leave rows on both sides");
  size_t certified = 0, violations = 0;
  double test_cost = 0, test_risk = 0;
  // The baseline without a guarantee: the cheapest configuration whose
  // empirical risk on the choosing half is <= alpha.
  size_t naive_chosen = 0, naive_violations = 0;
  double naive_cost = 0;
  for (int64_t t = 0; t < a.trials; ++t) {
    std::vector<size_t> order(n_cal);
    std::iota(order.begin(), order.end(), 0);
    common::SplitMix64 rng(common::DeriveSeed(static_cast<uint64_t>(a.seed), "pareto-testing", static_cast<uint64_t>(t)));
    for (size_t i = n_cal; i > 1; --i) std::swap(order[i - 1], order[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(i) - 1))]);
    const std::vector<size_t> cal_rows(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n_part));
    const std::vector<size_t> test_rows(order.begin() + static_cast<std::ptrdiff_t>(n_part), order.end());
    auto mean_over = [](const std::vector<double>& v, const std::vector<size_t>& rows) {
      double sum = 0;
      for (size_t row : rows) sum += v[row];
      return sum / static_cast<double>(rows.size());
    };
    std::optional<size_t> naive;
    for (size_t k = 0; k < configs.size(); ++k) {
      if (mean_over(configs[k].cal_loss, cal_rows) > a.alpha) continue;
      if (!naive || mean_over(configs[k].cal_cost, cal_rows) < mean_over(configs[*naive].cal_cost, cal_rows)) naive = k;
    }
    if (naive) {
      ++naive_chosen;
      naive_violations += mean_over(configs[*naive].cal_loss, test_rows) > a.alpha ? 1 : 0;
      naive_cost += mean_over(configs[*naive].cal_cost, test_rows);
    }
    SHAMMIE_ASSIGN_OR_RETURN(analysis::RiskControlResult rt,
                             analysis::SelectRiskControlled(validation, Losses(configs, false, &cal_rows), o));
    if (!rt.chosen) continue;
    ++certified;
    const Config& c = configs[*rt.chosen];
    double risk = 0, cost = 0;
    for (size_t row : test_rows) {
      risk += c.cal_loss[row];
      cost += c.cal_cost[row];
    }
    risk /= static_cast<double>(test_rows.size());
    cost /= static_cast<double>(test_rows.size());
    violations += risk > a.alpha ? 1 : 0;
    test_risk += risk;
    test_cost += cost;
  }
  const double trials = static_cast<double>(a.trials);
  const double k = static_cast<double>(std::max<size_t>(1, certified));
  out << a.trials << " random splits of the calibration rows (" << n_part << " choose, " << n_cal - n_part
      << " test): certified " << certified << ", violation rate " << static_cast<double>(violations) / trials
      << " (delta = " << a.delta << "), mean test risk " << test_risk / k << ", mean test cost " << test_cost / k << "\n";
  const double kn = static_cast<double>(std::max<size_t>(1, naive_chosen));
  out << "  without a guarantee (the cheapest with empirical risk <= alpha on the choosing half): violation rate "
      << static_cast<double>(naive_violations) / trials << ", mean test cost " << naive_cost / kn << "\n";
  result["trials"] = {{"trials", a.trials},
                      {"certified", certified},
                      {"violation_rate", static_cast<double>(violations) / trials},
                      {"test_risk", test_risk / k},
                      {"test_cost", test_cost / k},
                      {"naive_violation_rate", static_cast<double>(naive_violations) / trials},
                      {"naive_test_cost", naive_cost / kn}};
  return result;
}

}  // namespace shammie::orchestrator
