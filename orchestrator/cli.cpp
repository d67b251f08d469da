#include "orchestrator/cli.hpp"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/export.hpp"
#include "common/build_info.hpp"
#include "storage/result_store.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/spec_loader.hpp"

namespace shammie::orchestrator {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitBadInput = 2;

std::string VersionText() {
  return "shammie " + std::string(common::Version()) + " (commit " + std::string(common::GitCommit()) + "; " +
         std::string(common::BuildOptions()) + ")";
}

// Loads a spec; prints every diagnostic to `err`. Returns nullopt on errors.
std::optional<ExperimentSpec> LoadOrReport(const std::string& path, const workers::KindRegistry& kinds,
                                           std::ostream& err) {
  LoadResult loaded = LoadExperiment(path, kinds);
  for (const auto& d : loaded.errors) err << d.ToString() << "\n";
  if (!loaded.ok()) {
    err << "shammie: " << loaded.errors.size() << " error" << (loaded.errors.size() == 1 ? "" : "s") << " in " << path
        << "\n";
    return std::nullopt;
  }
  return std::move(loaded.spec);
}

int Explain(const std::string& kind_name, const workers::KindRegistry& kinds, std::ostream& out, std::ostream& err) {
  if (!kind_name.empty()) {
    const workers::JobKind* kind = kinds.Find(kind_name);
    if (!kind) {
      err << "shammie: unknown job kind \"" << kind_name << "\"; kinds: ";
      for (const auto& n : kinds.Names()) err << n << " ";
      err << "\n";
      return kExitBadInput;
    }
    out << kind->config.Explain("stage.config  for kind = \"" + kind->name + "\"");
    return kExitOk;
  }
  out << ExplainSpec() << "\nJob kinds (keys of [stage.config]):\n\n";
  for (const auto& name : kinds.Names()) {
    out << kinds.Find(name)->config.Explain("stage.config  for kind = \"" + name + "\"") << "\n";
  }
  return kExitOk;
}

// `shammie export`: DIR is a run directory (holding results.h5) or the file.
int Export(const std::string& target, const std::string& format, const std::string& output, std::ostream& out,
           std::ostream& err) {
  namespace fs = std::filesystem;
  std::string path = target;
  std::error_code ec;
  if (fs::is_directory(target, ec)) path = (fs::path(target) / "results.h5").string();
  auto store = storage::ResultStore::Open(path, storage::ResultStore::Mode::kReadOnly);
  if (!store.ok()) {
    err << "shammie export: " << store.status().ToString() << "\n";
    return common::ExitCodeFor(store.status().code());
  }
  // Export into memory first: a failure half-way writes nothing.
  std::ostringstream text;
  common::Status s = format == "csv" ? analysis::ExportMetricsCsv(**store, text) : analysis::ExportJson(**store, text);
  if (!s.ok()) {
    err << "shammie export: " << path << ": " << s.ToString() << "\n";
    return common::ExitCodeFor(s.code());
  }
  if (output.empty() || output == "-") {
    out << text.str();
    return kExitOk;
  }
  const std::string tmp = output + ".tmp";
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    file << text.str();
    if (!file.flush()) {
      err << "shammie export: cannot write " << tmp << "\n";
      fs::remove(tmp, ec);
      return 3;
    }
  }
  fs::rename(tmp, output, ec);
  if (ec) {
    err << "shammie export: cannot rename " << tmp << " to " << output << ": " << ec.message() << "\n";
    return 3;
  }
  return kExitOk;
}

}  // namespace

int RunCli(const std::vector<std::string>& args, const workers::KindRegistry& kinds, std::ostream& out,
           std::ostream& err) {
  CLI::App app{"shammie: run machine-learning research experiments written as TOML files.\n"
               "Experiments expand into a DAG of jobs; results and their provenance go to results.h5.",
               "shammie"};
  app.set_version_flag("--version", VersionText());
  app.require_subcommand(1);
  app.fallthrough(false);

  std::vector<std::string> validate_files;
  std::string explain_kind;
  CLI::App* validate = app.add_subcommand(
      "validate", "Parse and validate experiment files; print every error as file:line:col: key: message (exit 2).");
  validate->add_option("files", validate_files, "Experiment TOML files")->check(CLI::ExistingFile);
  CLI::Option* explain = validate->add_option(
      "--explain", explain_kind, "Print every key of the spec and of each job kind (or only of KIND) and exit");
  explain->expected(0, 1);

  std::string plan_file;
  bool plan_json = false;
  CLI::App* plan = app.add_subcommand(
      "plan", "Expand sweeps and print the job DAG: job ids, kinds, dependencies, resources, resolved configs.");
  plan->add_option("file", plan_file, "Experiment TOML file")->required()->check(CLI::ExistingFile);
  plan->add_flag("--json", plan_json, "Print the plan as JSON (full ids and configs)");

  std::string export_target, export_format = "csv", export_output;
  CLI::App* export_cmd = app.add_subcommand(
      "export", "Flat export of a run's results for other tools: metrics as CSV rows, or runs, configs and metrics as JSON.");
  export_cmd->add_option("dir", export_target, "Run directory (holding results.h5) or a results.h5 file")->required();
  export_cmd->add_option("--format", export_format, "csv (one row per metric point) or json")
      ->check(CLI::IsMember({"csv", "json"}));
  export_cmd->add_option("-o,--output", export_output, "Write to this file (atomically) instead of stdout");

  std::vector<std::string> reversed(args.rbegin(), args.rend() - 1);  // CLI11 wants them reversed, minus argv[0]
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e, out, err);
    return code == 0 ? kExitOk : kExitBadInput;
  }

  if (validate->parsed()) {
    if (explain->count() > 0) return Explain(explain_kind, kinds, out, err);
    if (validate_files.empty()) {
      err << "shammie validate: give at least one experiment file (or --explain)\n";
      return kExitBadInput;
    }
    int rc = kExitOk;
    for (const auto& file : validate_files) {
      auto spec = LoadOrReport(file, kinds, err);
      if (!spec) {
        rc = kExitBadInput;
        continue;
      }
      auto planned = BuildPlan(*spec);
      if (!planned.ok()) {
        err << file << ": " << planned.status().message() << "\n";
        rc = kExitBadInput;
        continue;
      }
      out << file << ": ok (experiment " << spec->name << ", " << spec->stages.size() << " stage"
          << (spec->stages.size() == 1 ? "" : "s") << ", " << planned->jobs.size() << " job"
          << (planned->jobs.size() == 1 ? "" : "s") << ")\n";
    }
    return rc;
  }

  if (plan->parsed()) {
    auto spec = LoadOrReport(plan_file, kinds, err);
    if (!spec) return kExitBadInput;
    auto planned = BuildPlan(*spec);
    if (!planned.ok()) {
      err << plan_file << ": " << planned.status().message() << "\n";
      return common::ExitCodeFor(planned.status().code());
    }
    if (plan_json) {
      out << planned->ToJson().dump(2) << "\n";
    } else {
      out << planned->ToText();
    }
    return kExitOk;
  }
  if (export_cmd->parsed()) return Export(export_target, export_format, export_output, out, err);
  return kExitBadInput;
}

}  // namespace shammie::orchestrator
