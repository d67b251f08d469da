#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "analysis/csv.hpp"
#include "analysis/ltt.hpp"
#include "analysis/mean_analysis.hpp"
#include "analysis/report.hpp"
#include "common/text.hpp"
#include "orchestrator/clm_analysis.hpp"
#include "orchestrator/curves_analysis.hpp"
#include "orchestrator/commands.hpp"
#include "orchestrator/pareto_testing.hpp"
#include "orchestrator/continual.hpp"
#include "orchestrator/spec_loader.hpp"
#include "orchestrator/stage_tables.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

namespace {

std::optional<double> ParseNumber(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

int AnalyzeCsvCommand(const AnalyzeArgs& a, std::ostream& out, std::ostream& err) {
  auto bad = [&](const std::string& message) {
    err << "shammie analyze: " << message << "\n";
    return kExitBadInput;
  };
  if (a.label.empty() || a.pred.empty()) return bad("--csv needs --label COL and --pred COL");
  auto table = analysis::ReadCsvFile(a.csv);
  if (!table.ok()) return bad(table.status().message());
  auto label_col = table->Column(a.label);
  if (!label_col.ok()) return bad("--label: " + label_col.status().message());
  auto pred_col = table->Column(a.pred);
  if (!pred_col.ok()) return bad("--pred: " + pred_col.status().message());
  std::optional<size_t> strata_col;
  if (!a.strata.empty()) {
    auto c = table->Column(a.strata);
    if (!c.ok()) return bad("--strata: " + c.status().message());
    strata_col = *c;
  }
  analysis::MeanInputs inputs;
  for (size_t r = 0; r < table->rows.size(); ++r) {
    const auto& row = table->rows[r];
    const std::string where = a.csv + ": data row " + std::to_string(r + 1) + ": ";
    auto pred = ParseNumber(row[*pred_col]);
    if (!pred) return bad(where + "prediction \"" + row[*pred_col] + "\" is not a number");
    inputs.prediction.push_back(*pred);
    if (row[*label_col].empty()) {
      inputs.label.push_back(std::nullopt);
    } else {
      auto label = ParseNumber(row[*label_col]);
      if (!label) return bad(where + "label \"" + row[*label_col] + "\" is not a number (leave it empty for unlabeled)");
      inputs.label.push_back(*label);
    }
    if (strata_col) inputs.stratum.push_back(row[*strata_col]);
  }
  std::vector<analysis::MeanMethod> methods;
  for (const auto& list : a.methods) {
    std::stringstream ss(list);
    std::string name;
    while (std::getline(ss, name, ',')) {
      auto m = analysis::MeanMethodFromName(name);
      if (!m.ok()) return bad(m.status().message());
      methods.push_back(*m);
    }
  }
  if (methods.empty()) methods = {analysis::MeanMethod::kClassical, analysis::MeanMethod::kPpiPlusPlus};
  analysis::MeanAnalysisOptions o;
  o.alpha = a.alpha;
  o.lambda = a.lambda;
  o.clt_free = a.clt_free;
  o.bins = a.bins;
  o.seed = a.seed;
  if (a.target_width > 0) o.target_width = a.target_width;
  auto result = analysis::AnalyzeMean(inputs, methods, o);
  if (!result.ok()) {
    err << "shammie analyze: " << a.csv << ": " << result.status().message() << "\n";
    return common::ExitCodeFor(result.status().code());
  }
  if (a.json) {
    out << result->ToJson().dump(2) << "\n";
  } else {
    out << result->ToText();
  }
  return kExitOk;
}

namespace {

// Gathers the rows an [[analysis]] of the mean family reads.
common::Result<analysis::MeanInputs> GatherInputs(storage::ResultStore& store, const AnalysisSpec& a) {
  analysis::MeanInputs in;
  SHAMMIE_RETURN_IF_ERROR(ForEachStageTable(store, a, [&](const storage::Table& table, const std::string& where) {
    SHAMMIE_ASSIGN_OR_RETURN(auto label, NumericColumn(table, a.label, where));
    SHAMMIE_ASSIGN_OR_RETURN(auto pred, NumericColumn(table, a.prediction, where));
    for (size_t i = 0; i < label.size(); ++i) {
      in.label.push_back(std::isnan(label[i]) ? std::nullopt : std::optional<double>(label[i]));
      in.prediction.push_back(pred[i]);
    }
    if (!a.strata.empty()) {
      SHAMMIE_ASSIGN_OR_RETURN(auto strata, TextColumn(table, a.strata, where));
      in.stratum.insert(in.stratum.end(), strata.begin(), strata.end());
    }
    return common::Status::Ok();
  }));
  return in;
}

// Learn-then-Test over the (config, loss) rows of a stage's tables. Returns
// the summary JSON of the analysis, or an exit code through `code`.
struct LttOutcome {
  storage::Table table;
  nlohmann::json json;
  std::vector<std::string> configs;
  std::vector<double> risks;
  std::vector<bool> valid;
};

common::Result<LttOutcome> RunLtt(storage::ResultStore& store, const AnalysisSpec& a, std::ostream& out) {
  std::map<std::string, std::vector<double>> by_config;
  SHAMMIE_RETURN_IF_ERROR(ForEachStageTable(store, a, [&](const storage::Table& table, const std::string& where) {
    std::vector<std::string> configs;
    if (auto text = TextColumn(table, a.config, where); text.ok()) {
      configs = *text;
    } else {
      SHAMMIE_ASSIGN_OR_RETURN(auto numbers, NumericColumn(table, a.config, where));
      for (double v : numbers) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.17g", v);
        configs.push_back(buf);
      }
    }
    SHAMMIE_ASSIGN_OR_RETURN(auto loss, NumericColumn(table, a.loss, where));
    for (size_t i = 0; i < loss.size(); ++i) by_config[configs[i]].push_back(loss[i]);
    return common::Status::Ok();
  }));
  // Testing order: ascending config, numerically when every name is a number.
  LttOutcome o;
  for (const auto& [config, losses] : by_config) o.configs.push_back(config);
  const bool numeric = std::all_of(o.configs.begin(), o.configs.end(),
                                   [](const std::string& c) { return ParseNumber(c).has_value(); });
  if (numeric) {
    std::stable_sort(o.configs.begin(), o.configs.end(),
                     [](const std::string& x, const std::string& y) { return *ParseNumber(x) < *ParseNumber(y); });
  }
  std::vector<std::vector<double>> losses;
  for (const auto& c : o.configs) losses.push_back(by_config[c]);
  const analysis::PValueBound bound = a.bound == "hoeffding"  ? analysis::PValueBound::kHoeffding
                                      : a.bound == "bentkus"  ? analysis::PValueBound::kBentkus
                                      : a.bound == "binomial" ? analysis::PValueBound::kBinomial
                                                              : analysis::PValueBound::kHoeffdingBentkus;
  const analysis::FwerProcedure procedure =
      a.procedure == "bonferroni" ? analysis::FwerProcedure::kBonferroni : analysis::FwerProcedure::kFixedSequence;
  SHAMMIE_ASSIGN_OR_RETURN(analysis::LttResult r, analysis::LearnThenTest(losses, a.alpha, a.delta, bound, procedure));
  o.valid.assign(o.configs.size(), false);
  for (size_t v : r.valid) o.valid[v] = true;
  o.risks = r.risks;
  std::vector<int64_t> n, valid;
  char line[256];
  std::snprintf(line, sizeof(line), "%-24s %8s %10s %12s %6s\n", "config", "n", "risk", "p_value", "valid");
  out << line;
  nlohmann::json rows = nlohmann::json::array();
  for (size_t c = 0; c < o.configs.size(); ++c) {
    n.push_back(static_cast<int64_t>(losses[c].size()));
    valid.push_back(o.valid[c] ? 1 : 0);
    std::snprintf(line, sizeof(line), "%-24s %8zu %10.4f %12.4g %6s\n", o.configs[c].c_str(), losses[c].size(),
                  r.risks[c], r.p_values[c], o.valid[c] ? "yes" : "no");
    out << line;
    rows.push_back({{"config", o.configs[c]}, {"n", losses[c].size()}, {"risk", r.risks[c]},
                    {"p_value", r.p_values[c]}, {"valid", o.valid[c]}});
  }
  out << r.valid.size() << " of " << o.configs.size() << " configurations certified: risk <= " << a.alpha
      << " with probability >= " << 1 - a.delta << " (" << a.bound << ", " << a.procedure << ")\n";
  o.table.columns = {{"config", o.configs}, {"n", n}, {"risk", r.risks}, {"p_value", r.p_values}, {"valid", valid}};
  o.json = {{"configurations", rows}, {"certified", r.valid.size()}};
  return o;
}

}  // namespace

int AnalyzeRunCommand(const AnalyzeArgs& args, const workers::KindRegistry& kinds, std::ostream& out, std::ostream& err) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string path = ResultsFilePath(args.dir);
  auto store = storage::ResultStore::Open(path, storage::ResultStore::Mode::kReadWrite);
  if (!store.ok()) {
    err << "shammie analyze: " << store.status().ToString() << "\n";
    return common::ExitCodeFor(store.status().code());
  }
  LoadResult loaded = LoadExperimentFromString((*store)->info().spec_text, path + ":spec", kinds);
  for (const auto& d : loaded.errors) err << d.ToString() << "\n";
  if (!loaded.ok()) {
    err << "shammie analyze: the experiment stored in " << path << " does not validate with this build\n";
    return kExitBadInput;
  }
  const ExperimentSpec& spec = *loaded.spec;
  if (spec.analyses.empty() && !spec.continual) {
    out << "experiment " << spec.name << " declares no [[analysis]] tables; nothing to do\n";
    return kExitOk;
  }
  nlohmann::json summary = {{"experiment", spec.name}, {"spec_hash", spec.spec_hash}, {"analyses", nlohmann::json::object()}};
  if (spec.continual) {
    auto continual = AnalyzeContinual(spec, **store, args.alpha, args.report, out);
    if (!continual.ok()) {
      err << "shammie analyze: continual: " << continual.status().message() << "\n";
      return common::ExitCodeFor(continual.status().code());
    }
    summary["continual"] = *continual;
    out << "\n";
  }
  for (const AnalysisSpec& a : spec.analyses) {
    if (a.methods == std::vector<std::string>{"clm"}) {
      out << "analysis " << a.name << " (conformal language modeling on stage " << a.stage << ", table " << a.table
          << ")\n";
      auto clm = AnalyzeClm(**store, a, args.report, spec.name + ": " + a.name, out);
      if (!clm.ok()) {
        err << "shammie analyze: " << a.name << ": " << clm.status().message() << "\n";
        return common::ExitCodeFor(clm.status().code());
      }
      out << "\n";
      summary["analyses"][a.name] = {{"parameters", a.parameters}, {"result", *clm}};
      continue;
    }
    if (a.methods == std::vector<std::string>{"curves"}) {
      out << "analysis " << a.name << " (curves of " << a.metric << " on stage " << a.stage << ")\n";
      auto curves = AnalyzeCurves(**store, a, args.report, spec.name + ": " + a.name, out);
      if (!curves.ok()) {
        err << "shammie analyze: " << a.name << ": " << curves.status().message() << "\n";
        return common::ExitCodeFor(curves.status().code());
      }
      out << "\n";
      summary["analyses"][a.name] = {{"parameters", a.parameters}, {"result", *curves}};
      continue;
    }
    if (a.methods == std::vector<std::string>{"pareto-testing"}) {
      out << "analysis " << a.name << " (Pareto Testing on stage " << a.stage << ", table " << a.table << ")\n";
      auto chosen = AnalyzeParetoTesting(**store, spec, a, out);
      if (!chosen.ok()) {
        err << "shammie analyze: " << a.name << ": " << chosen.status().message() << "\n";
        return common::ExitCodeFor(chosen.status().code());
      }
      out << "\n";
      summary["analyses"][a.name] = {{"parameters", a.parameters}, {"result", *chosen}};
      continue;
    }
    if (a.methods == std::vector<std::string>{"ltt"}) {
      out << "analysis " << a.name << " (Learn-then-Test on stage " << a.stage << ", table " << a.table << ", "
          << a.loss << " by " << a.config << ")\n";
      auto ltt = RunLtt(**store, a, out);
      if (!ltt.ok()) {
        err << "shammie analyze: " << a.name << ": " << ltt.status().message() << "\n";
        return common::ExitCodeFor(ltt.status().code());
      }
      out << "\n";
      common::Status written = (*store)->WriteAnalysis(a.name, a.parameters.dump(), ltt->table);
      if (!written.ok()) {
        err << "shammie analyze: " << written.ToString() << "\n";
        return common::ExitCodeFor(written.code());
      }
      summary["analyses"][a.name] = {{"parameters", a.parameters}, {"result", ltt->json}};
      if (!args.report.empty()) {
        common::Status plotted = analysis::PlotLtt(ltt->configs, ltt->risks, ltt->valid, a.alpha, a.name,
                                                   spec.name + ": " + a.name, args.report);
        if (!plotted.ok()) {
          err << "shammie analyze: " << plotted.ToString() << "\n";
          return common::ExitCodeFor(plotted.code());
        }
      }
      continue;
    }
    auto inputs = GatherInputs(**store, a);
    if (!inputs.ok()) {
      err << "shammie analyze: " << a.name << ": " << inputs.status().message() << "\n";
      return common::ExitCodeFor(inputs.status().code());
    }
    std::vector<analysis::MeanMethod> methods;
    for (const auto& m : a.methods) methods.push_back(*analysis::MeanMethodFromName(m));
    analysis::MeanAnalysisOptions o;
    o.alpha = a.alpha;
    o.lambda = a.lambda;
    o.clt_free = a.clt_free;
    o.bins = static_cast<size_t>(a.bins);
    o.seed = static_cast<uint64_t>(a.seed);
    o.target_width = a.target_width;
    auto result = analysis::AnalyzeMean(*inputs, methods, o);
    if (!result.ok()) {
      err << "shammie analyze: " << a.name << ": " << result.status().message() << "\n";
      return common::ExitCodeFor(result.status().code());
    }
    out << "analysis " << a.name << " (stage " << a.stage << ", table " << a.table << ", " << a.label << " vs "
        << a.prediction << ", " << 100 * (1 - a.alpha) << "% intervals)\n"
        << result->ToText() << "\n";
    storage::Table table;
    std::vector<std::string> method;
    std::vector<double> estimate, lower, upper, width, effective_n;
    std::vector<int64_t> labels;
    for (const auto& r : result->rows) {
      method.push_back(r.method);
      estimate.push_back(r.estimate);
      lower.push_back(r.lower);
      upper.push_back(r.upper);
      width.push_back(r.width());
      effective_n.push_back(r.effective_n);
      labels.push_back(r.labels_for_target ? static_cast<int64_t>(*r.labels_for_target) : -1);
    }
    table.columns = {{"method", method}, {"estimate", estimate}, {"lower", lower}, {"upper", upper},
                     {"width", width},   {"effective_n", effective_n}, {"labels_for_target", labels}};
    common::Status written = (*store)->WriteAnalysis(a.name, a.parameters.dump(), table);
    if (!written.ok()) {
      err << "shammie analyze: " << written.ToString() << "\n";
      return common::ExitCodeFor(written.code());
    }
    summary["analyses"][a.name] = {{"parameters", a.parameters}, {"result", result->ToJson()}};
    if (!args.report.empty()) {
      common::Status plotted = analysis::PlotMeanAnalysis(*result, a.name, spec.name + ": " + a.name, args.report);
      if (!plotted.ok()) {
        err << "shammie analyze: " << plotted.ToString() << "\n";
        return common::ExitCodeFor(plotted.code());
      }
    }
  }
  common::Status closed = (*store)->Close();
  if (!closed.ok()) {
    err << "shammie analyze: " << closed.ToString() << "\n";
    return common::ExitCodeFor(closed.code());
  }
  if (!args.report.empty()) {
    fs::create_directories(args.report, ec);  // analyses without plots have not made it
    const std::string json_path = (fs::path(args.report) / "summary.json").string();
    std::ofstream file(json_path + ".tmp");
    file << summary.dump(2) << "\n";
    file.close();
    fs::rename(json_path + ".tmp", json_path, ec);
    if (!file || ec) {
      err << "shammie analyze: cannot write " << json_path << "\n";
      return 3;
    }
    out << "report: " << args.report << " (summary.json and one PNG per analysis)\n";
  }
  return kExitOk;
}

}  // namespace shammie::orchestrator
