#include "orchestrator/cli.hpp"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <optional>

#include "common/build_info.hpp"
#include "orchestrator/commands.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/spec_loader.hpp"

namespace shammie::orchestrator {

namespace {

std::string VersionText() {
  return "shammie " + std::string(common::Version()) + " (commit " + std::string(common::GitCommit()) + "; " +
         std::string(common::BuildOptions()) + ")";
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

}  // namespace

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

  AnalyzeArgs analyze_args;
  CLI::App* analyze = app.add_subcommand(
      "analyze", "Statistics on results: estimate a mean from few human labels and many autorater predictions "
                 "(classical, PPI, PPI++, stratified PPI, Bayesian PPI) from a CSV file.");
  analyze->add_option("dir", analyze_args.dir,
                      "Run directory (or results.h5): run the experiment's [[analysis]] tables, store the results "
                      "under /analysis/<name>/, print tables");
  analyze->add_option("--report", analyze_args.report, "With DIR: also write PNG plots and summary.json here");
  analyze->add_option("--csv", analyze_args.csv, "Standalone: a CSV file with a header row")->check(CLI::ExistingFile);
  analyze->add_option("--label", analyze_args.label, "Column of human labels (empty cell = unlabeled)");
  analyze->add_option("--pred", analyze_args.pred, "Column of autorater predictions (every row)");
  analyze->add_option("--strata", analyze_args.strata, "Column of strata; weights are the strata's shares of all rows");
  analyze->add_option("--method", analyze_args.methods,
                      "classical, ppi, ppi++, stratppi, bayes-ppi (repeat or comma-separate; default classical,ppi++)");
  analyze->add_option("--alpha", analyze_args.alpha, "Miscoverage: intervals have level 1 - alpha")
      ->check(CLI::Range(1e-6, 0.999999));
  analyze->add_option("--lambda", analyze_args.lambda, "Weight of the autorater for `ppi` (1 = plain PPI)");
  analyze->add_flag("--clt-free", analyze_args.clt_free,
                    "Hoeffding intervals (labels and predictions in [0, 1]; classical and ppi only)");
  analyze->add_option("--bins", analyze_args.bins, "Bins of a continuous prediction for bayes-ppi")->check(CLI::Range(1, 1000));
  analyze->add_option("--target-width", analyze_args.target_width, "Also print the labels each method needs for this width");
  analyze->add_option("--seed", analyze_args.seed, "Seed of Monte-Carlo draws (bayes-ppi)");
  analyze->add_flag("--json", analyze_args.json, "Print JSON instead of a table");

  RunArgs run_args;
  run_args.argv = args;
  CLI::App* run = app.add_subcommand(
      "run", "Run an experiment's job DAG on MPI ranks (launching mpirun itself when not inside one); results in "
             "DIR/results.h5. Re-running into the same DIR skips every job already done.");
  run->add_option("file", run_args.spec, "Experiment TOML file")->required()->check(CLI::ExistingFile);
  run->add_option("--out", run_args.out, "Run directory (default: the spec's experiment.output, runs/<name>)");
  run->add_option("--ranks", run_args.ranks, "MPI ranks to launch: 1 controller + workers (default: cores + 1)")
      ->check(CLI::Range(1, 100000));
  run->add_flag("--resume", run_args.resume,
                "Continue the run in DIR after a crash, kill or stop: done jobs are kept, the rest run");
  run->add_option("--progress", run_args.progress, "auto (tty if stderr is a terminal), tty, plain or none")
      ->check(CLI::IsMember({"auto", "tty", "plain", "none"}));
  run->add_option("--stall-timeout", run_args.stall_timeout_s,
                  "Seconds without a heartbeat before a busy worker is declared stalled")
      ->check(CLI::Range(1.0, 1e6));
  run->add_option("--shard", run_args.shard,
                  "I/N: run only shard I (0-based) of N of the DAG's independent parts (job arrays; docs/slurm.md)");

  SubmitArgs submit_args;
  submit_args.argv = args;
  CLI::App* submit = app.add_subcommand(
      "submit", "Write DIR/slurm/job.sbatch (all #SBATCH lines, the srun line, the environment) and submit it with "
                "sbatch; on SIGUSR1 before the time limit or a preemption the job checkpoints and requeues itself. "
                "Defaults come from the experiment's [slurm] table; options here win.");
  submit->add_option("file", submit_args.spec, "Experiment TOML file")->required()->check(CLI::ExistingFile);
  submit->add_option("--out", submit_args.out, "Run directory (default: the spec's experiment.output, runs/<name>)");
  submit->add_option("-N,--nodes", submit_args.nodes, "Nodes (default 1)")->check(CLI::Range(1, 100000));
  submit->add_option("--ntasks-per-node", submit_args.ntasks_per_node,
                     "MPI ranks per node; rank 0 is the controller (default: --gpus-per-node, else 2 on one node, 1 on "
                     "more)")
      ->check(CLI::Range(1, 4096));
  submit->add_option("--gpus-per-node", submit_args.gpus_per_node, "GPUs per node; one per rank, by SLURM_LOCALID")
      ->check(CLI::Range(0, 64));
  submit->add_option("-c,--cpus-per-task", submit_args.cpus_per_task,
                     "Cores per rank, and OMP_NUM_THREADS (default 1)")
      ->check(CLI::Range(1, 4096));
  submit->add_option("-t,--time", submit_args.time, "Time limit: HH:MM:SS, D-HH:MM:SS, MM:SS or minutes");
  submit->add_option("-p,--partition", submit_args.partition, "Partition");
  submit->add_option("-A,--account", submit_args.account, "Account");
  submit->add_option("-q,--qos", submit_args.qos, "Quality of service");
  submit->add_option("-J,--job-name", submit_args.job_name, "Job name (default: the experiment's name)");
  submit->add_option("--mem-per-cpu", submit_args.mem_per_cpu, "Memory per core, in Slurm's units (e.g. 2G)");
  submit->add_option("--grace", submit_args.grace_s,
                     "Seconds before the time limit at which Slurm sends SIGUSR1: checkpoint and requeue (default 120)")
      ->check(CLI::Range(1, 86400));
  submit->add_option("--max-requeues", submit_args.max_requeues,
                     "Times the job requeues itself after such a stop (default 3)")
      ->check(CLI::Range(0, 1000));
  submit->add_option("--array", submit_args.array,
                     "Split the DAG's independent parts into a job array of N tasks, each with its own results under "
                     "DIR/shards/<i>/ (join them with `shammie merge DIR`)")
      ->check(CLI::Range(1, 100000));
  submit->add_flag("--dry-run", submit_args.dry_run, "Write and print the script; do not submit it");

  std::string merge_dir;
  CLI::App* merge = app.add_subcommand(
      "merge", "Join the shards of a job array (DIR/shards/*/results.h5) into DIR/results.h5, every job once.");
  merge->add_option("dir", merge_dir, "Run directory of `shammie submit --array`")->required();

  std::string status_dir;
  bool status_json = false;
  CLI::App* status = app.add_subcommand("status", "What finished, what failed (with the error and attempts), what is left.");
  status->add_option("dir", status_dir, "Run directory")->required();
  status->add_flag("--json", status_json, "Print JSON");

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
  if (run->parsed()) return RunCommand(run_args, kinds, out, err);
  if (status->parsed()) return StatusCommand(status_dir, status_json, out, err);
  if (submit->parsed()) return SubmitCommand(submit_args, kinds, out, err);
  if (merge->parsed()) return MergeCommand(merge_dir, out, err);
  if (export_cmd->parsed()) return ExportCommand(export_target, export_format, export_output, out, err);
  if (analyze->parsed()) {
    if (analyze_args.dir.empty() == analyze_args.csv.empty()) {
      err << "shammie analyze: give a run directory, or --csv FILE with --label and --pred\n";
      return kExitBadInput;
    }
    if (!analyze_args.csv.empty()) return AnalyzeCsvCommand(analyze_args, out, err);
    if (!analyze_args.label.empty() || !analyze_args.pred.empty() || !analyze_args.methods.empty()) {
      err << "shammie analyze: --label, --pred and --method go with --csv; a run directory's analyses are declared in "
             "its experiment's [[analysis]] tables\n";
      return kExitBadInput;
    }
    // A job array's run directory: join the shards first (docs/slurm.md).
    if (std::error_code ec; std::filesystem::is_directory(analyze_args.dir + "/shards", ec)) {
      if (int rc = MergeCommand(analyze_args.dir, err, err); rc != kExitOk) return rc;
    }
    return AnalyzeRunCommand(analyze_args, kinds, out, err);
  }
  return kExitBadInput;
}

}  // namespace shammie::orchestrator
