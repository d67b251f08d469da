#include "orchestrator/spec_schema.hpp"

namespace shammie::orchestrator {

using common::Schema;
using common::ValueType;

const Schema& ExperimentSchema() {
  static const Schema schema = [] {
    Schema s("experiment", "What the experiment is called and where its results go.");
    s.Add("name", ValueType::kName).Required().Doc("Name of the experiment; used in the default run directory.");
    s.String("description").Default("").Doc("Free text kept with the results.");
    s.Int("seed").Default(0).Min(0).Doc("Root seed; every job's seed is derived from it.");
    s.Add("output", ValueType::kPath).Doc("Run directory (default runs/<name>); `..` is not allowed.");
    return s;
  }();
  return schema;
}

const Schema& StageSchema() {
  static const Schema schema = [] {
    Schema s("stage", "One stage = one job kind; a sweep turns it into many jobs. Sub-tables: "
                      "config, resources, retry, sweep.");
    s.Add("name", ValueType::kName).Required().Doc("Unique within the file.");
    s.String("kind").Required().Doc("A registered job kind (`shammie validate --explain` lists them).");
    s.String("description").Default("").Doc("Free text.");
    s.Add("depends_on", ValueType::kNameList).Default(nlohmann::json::array())
        .Doc("Stages whose jobs must finish first; by default each job of this stage depends on all of their jobs.");
    return s;
  }();
  return schema;
}

const Schema& ResourcesSchema() {
  static const Schema schema = [] {
    Schema s("stage.resources", "What each job of the stage needs. Not part of the job id.");
    s.Int("ranks").Default(1).Range(1, 65536).Doc("MPI ranks in the job's gang (data-parallel width).");
    s.Int("gpus").Default(0).Range(0, 64).Doc("GPUs per rank.");
    s.Add("time_limit", ValueType::kDuration).Min(1).Doc("Wall-clock limit per attempt, e.g. \"30m\" or \"02:00:00\".");
    s.Add("memory", ValueType::kSize).Min(1).Doc("Memory per rank, e.g. \"4G\".");
    s.Enum("isolation", {"thread", "process"}).Default("thread")
        .Doc("`thread`: the job runs inside the worker rank (fastest). `process`: in a forked child, so a "
             "segfault, abort or hang in job code is a failed attempt instead of the end of the MPI job "
             "(single-rank jobs only).");
    return s;
  }();
  return schema;
}

const Schema& RetrySchema() {
  static const Schema schema = [] {
    Schema s("stage.retry", "When a failed job is tried again.");
    s.Int("attempts").Default(1).Range(1, 100).Doc("Total attempts per job; 1 means no retry.");
    s.Float("backoff").Default(1.0).Range(0, 86400).Doc("Seconds before the 2nd attempt; doubles after each failure.");
    s.Add("on", ValueType::kStringList)
        .Default(nlohmann::json::array({"unavailable", "aborted", "deadline_exceeded", "cancelled"}))
        .Doc("Error codes that allow another attempt: unavailable, aborted, deadline_exceeded, cancelled, "
             "resource_exhausted, internal, data_loss.");
    return s;
  }();
  return schema;
}

const Schema& SweepSchema() {
  static const Schema schema = [] {
    Schema s("stage.sweep",
             "Turns a stage into many jobs: over x grid x zip x random x seeds. Sub-tables: "
             "grid (key = [values], cartesian), zip (key = [values], paired; equal lengths), "
             "random (samples = N; key = { uniform = [lo, hi] } | { log_uniform = [lo, hi] } | "
             "{ int_uniform = [lo, hi] } | { choice = [values] }).");
    s.Int("seeds").Default(1).Range(1, 100000).Doc("Replicates of every point, each with its own derived seed.");
    s.Add("over", ValueType::kNameList).Default(nlohmann::json::array())
        .Doc("Stages from depends_on to fan out over: one job per upstream job (and point), depending on that job only.");
    s.Enum("strategy", {"grid", "bo", "risk-bo"}).Default("grid")
        .Doc("grid: the jobs above, fixed before the run. bo / risk-bo: adaptive (docs/adaptive-sweeps.md): the random "
             "axes are the search space, random.samples the initial design, and the controller proposes the rest "
             "from the results by multi-objective Bayesian optimization; risk-bo focuses it on the region a "
             "risk-controlling test can certify.");
    s.Int("budget").Range(1, 100000).Doc("bo, risk-bo (required): evaluations in all, the initial design included.");
    s.Int("batch").Default(1).Range(1, 1024).Doc("bo, risk-bo: proposals per round, run together.");
    s.Add("objectives", ValueType::kNameList).MinItems(1)
        .Doc("bo, risk-bo (required): metrics the jobs report; the last value of each is minimized.");
    s.Add("maximize", ValueType::kNameList).Default(nlohmann::json::array())
        .Doc("bo, risk-bo: objectives to maximize instead.");
    s.Add("reference", ValueType::kFloatList)
        .Doc("bo: hypervolume reference point, one value per objective (default: the worst value seen plus 10% of "
             "the range).");
    s.Add("constraint", ValueType::kName).Doc("risk-bo (required): the objective that is a risk in [0, 1] to keep <= alpha.");
    s.Float("alpha").Default(0.1).Min(0, true).Max(1, true).Doc("risk-bo: risk limit.");
    s.Float("delta").Default(0.1).Min(0, true).Max(1, true).Doc("risk-bo: the final test errs with probability <= delta.");
    s.Int("validation_size").Range(1, 1000000000)
        .Doc("risk-bo (required): examples behind each job's constraint metric.");
    s.Int("calibration_size").Range(1, 1000000000)
        .Doc("risk-bo (required): calibration examples the final Learn-then-Test step will use.");
    s.Bool("binary").Default(false).Doc("risk-bo: the risk is a mean of 0/1 losses (exact binomial p-values).");
    return s;
  }();
  return schema;
}

const Schema& RandomSweepSchema() {
  static const Schema schema = [] {
    Schema s("stage.sweep.random", "Random search: `samples` points drawn with a seed derived from experiment.seed.");
    s.Int("samples").Required().Range(1, kMaxJobsPerStage).Doc("How many points to draw.");
    return s;
  }();
  return schema;
}

const Schema& AnalysisSchema() {
  static const Schema schema = [] {
    Schema s("analysis", "Statistics that `shammie analyze DIR` runs on the results: a mean estimated from few human "
                         "labels and many autorater predictions, by several methods side by side; Learn-then-Test "
                         "over per-example losses of configurations; conformal language modeling over sampled "
                         "candidates; Pareto Testing: the cheapest configuration with certified risk; or a metric's curves averaged "
                         "over runs.");
    s.Add("name", ValueType::kName).Required().Doc("Unique; results go to /analysis/<name>/ in results.h5.");
    s.Add("methods", ValueType::kStringList).Required().MinItems(1)
        .Doc("Mean estimators side by side (classical, ppi, ppi++, stratppi, bayes-ppi), or [\"ltt\"]: "
             "Learn-then-Test, which configurations have risk <= alpha with probability >= 1 - delta; or [\"clm\"]: "
             "conformal language modeling over lm.sample tables, calibrated and tested on many random splits; or "
             "[\"pareto-testing\"]: the cheapest run whose risk is certified <= alpha (tables with columns split, "
             "loss, cost), also over random splits of the calibration rows; or [\"curves\"]: a metric's curve over steps, "
             "averaged over the runs that share the values of the `by` keys, with Student-t intervals.");
    s.Add("stage", ValueType::kName).Required().Doc("The stage whose runs hold the data.");
    s.Add("table", ValueType::kName)
        .Doc("Per-example table (tables/<table>) in each run; rows are concatenated. Required by every family but curves.");
    s.Add("metric", ValueType::kName).Doc("curves (required): the metric whose curve is averaged.");
    s.Add("by", ValueType::kStringList).Default(nlohmann::json::array())
        .Doc("curves: config keys whose values form the groups (one curve each); [] = one curve over all runs.");
    s.Add("x", ValueType::kName)
        .Doc("curves: the x axis instead of the step: a numeric config key of the stage, or a metric (its last value); "
             "each run then gives one point, its `metric`'s last value at its x (e.g. loss against parameters, "
             "throughput against batch).");
    s.Add("x_metric", ValueType::kName)
        .Doc("curves: a metric as the x axis, paired with `metric` step by step (e.g. gold reward against KL during "
             "RL): each group's curve goes through, at every step where its runs report both, the mean of each over "
             "the runs. Not with `x`.");
    s.Add("label", ValueType::kName).Doc("Mean methods (required): column of human labels; NaN marks an unlabeled row.");
    s.Add("prediction", ValueType::kName).Doc("Mean methods (required): column of autorater predictions.");
    s.Add("config", ValueType::kName)
        .Doc("ltt (required): column naming each row's configuration; configurations are tested in ascending order of "
             "this column (numeric when every value is a number).");
    s.Add("loss", ValueType::kName).Doc("ltt (required): column of per-example losses in [0, 1].");
    s.Float("delta").Default(0.1).Min(0, true).Max(1, true)
        .Doc("ltt: family-wise error level; clm: the guarantee holds with probability >= 1 - delta over calibration.");
    s.Add("epsilons", ValueType::kFloatList).MinItems(1)
        .Default(nlohmann::json::array({0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5}))
        .Doc("clm: risk levels; the returned set misses every acceptable answer with probability <= epsilon.");
    s.Int("trials").Default(100).Range(1, 100000).Doc("clm, pareto-testing: random calibration/test splits.");
    s.Float("calibration").Default(0.5).Min(0, true).Max(1, true)
        .Doc("clm: share of prompts that calibrate, the rest test; pareto-testing: share of the calibration rows that "
             "choose in the repeated splits, the rest test.");
    s.Int("grid_points").Default(10).Range(1, 100).Doc("clm: quantiles of each score searched per threshold (plus +-inf).");
    s.Enum("components", {"none", "frequency", "confidence"}).Default("none")
        .Doc("clm: also the component-level guarantee over the steps of each prompt's first sample, scored by how many "
             "of the prompt's samples share the step (frequency) or by its least likely token (confidence).");
    s.Add("separator", ValueType::kString).Default("=").Doc("clm: splits an answer into components (steps).");
    s.Enum("bound", {"hoeffding-bentkus", "hoeffding", "bentkus", "binomial"}).Default("hoeffding-bentkus")
        .Doc("ltt: p-value of the null `risk > alpha` (binomial: exact, for 0/1 losses).");
    s.Enum("procedure", {"fixed-sequence", "bonferroni"}).Default("fixed-sequence").Doc("ltt: family-wise error control.");
    s.Add("strata", ValueType::kName).Doc("Column of strata (for stratppi); weights are the strata's shares of all rows.");
    s.Float("alpha").Default(0.1).Min(0, true).Max(1, true)
        .Doc("Mean methods: intervals have level 1 - alpha; ltt, pareto-testing: the risk limit.");
    s.Float("lambda").Default(1.0).Doc("Autorater weight of `ppi` (1 = plain PPI).");
    s.Bool("clt_free").Default(false).Doc("Hoeffding intervals for classical and ppi (values in [0, 1]).");
    s.Int("bins").Default(10).Range(1, 1000).Doc("Bins of a continuous prediction for bayes-ppi.");
    s.Float("target_width").Min(0, true).Doc("Also report the labels each method needs for this interval width.");
    s.Int("seed").Default(0).Min(0).Doc("Seed of Monte-Carlo draws (bayes-ppi).");
    return s;
  }();
  return schema;
}

const Schema& SlurmSchema() {
  static const Schema schema = [] {
    Schema s("slurm", "How `shammie submit` runs the experiment as a Slurm batch job (docs/slurm.md). Every key "
                      "can be given on the command line too (--nodes, --ntasks-per-node, ...), which wins. Not part "
                      "of any job id.");
    s.Int("nodes").Range(1, 100000).Doc("Nodes of the allocation (#SBATCH --nodes; default 1).");
    s.Int("ntasks_per_node").Range(1, 4096)
        .Doc("MPI ranks per node; rank 0 is the controller (default: gpus_per_node, else 2 on one node, 1 on more).");
    s.Int("gpus_per_node").Range(0, 64).Doc("GPUs per node (#SBATCH --gpus-per-node); ranks use one each, by SLURM_LOCALID.");
    s.Int("cpus_per_task").Range(1, 4096).Doc("Cores per rank; also OMP_NUM_THREADS (default 1: one intra-op thread per rank).");
    s.Add("time", ValueType::kDuration).Min(60).Doc("Time limit, e.g. \"02:00:00\" or \"90m\" (#SBATCH --time).");
    s.String("partition").Doc("#SBATCH --partition.");
    s.String("account").Doc("#SBATCH --account.");
    s.String("qos").Doc("#SBATCH --qos.");
    s.String("job_name").Doc("#SBATCH --job-name (default: the experiment's name).");
    s.Add("mem_per_cpu", ValueType::kSize).Min(1).Doc("#SBATCH --mem-per-cpu, e.g. \"2G\" (rounded up to whole MiB).");
    s.Add("grace", ValueType::kDuration).Min(1)
        .Doc("Seconds of warning before the time limit: SIGUSR1 then, to checkpoint and requeue (default 120).");
    s.Int("max_requeues").Range(0, 1000).Doc("Times the job requeues itself after a stop with work left (default 3).");
    s.Int("array").Range(1, 100000)
        .Doc("Split the independent parts of the DAG into a job array of this many tasks (shammie merge joins them).");
    return s;
  }();
  return schema;
}

const Schema& ContinualSchema() {
  static const Schema schema = [] {
    Schema s("continual",
             "A continual-learning study (docs/experiments/continual.md): sequences of tasks, each fine-tuned from a "
             "checkpoint chosen among the past ones by each learner. Sub-tables: [continual.base] (lm.train keys of "
             "the base model), [continual.finetune] (lm.train keys of every fine-tune; task keys here are defaults "
             "for the tasks), [continual.resources], [[continual.sequence]].");
    s.Add("learners", ValueType::kStringList)
        .Default(nlohmann::json::array({"independent", "sequential", "selective", "oracle"}))
        .MinItems(1)
        .Doc("Strategies compared: independent (from the base), sequential (from the previous task), selective (the "
             "best of base + past checkpoints on the new task's validation data after a probe fine-tune), oracle "
             "(fine-tune from every candidate, keep the best on test: an upper bound).");
    s.Int("seeds").Default(3).Range(1, 1000).Doc("Replicates of every sequence (fine-tune seeds and data pools).");
    s.Enum("selection", {"probe", "zero-shot"}).Default("probe")
        .Doc("selective's score: probe = validation accuracy after probe_steps of fine-tuning (ties: lower loss); "
             "zero-shot = validation loss of the candidate as it is.");
    s.Int("probe_steps").Default(20).Range(1, 1000000).Doc("Fine-tuning steps of a probe.");
    s.Enum("rule", {"best", "first", "last"}).Default("best")
        .Doc("selective's choice: best score; first / last forces the base / the latest checkpoint (tests, ablations).");
    s.Enum("pool", {"all", "base"}).Default("all")
        .Doc("selective's candidates: all = base + every past checkpoint of the learner; base = the base only.");
    s.Int("source_examples").Default(0).Range(0, 1000000000)
        .Doc("train_examples of tasks with role = \"source\" (0 = the whole training split).");
    s.Int("source_steps").Default(0).Range(0, 10000000)
        .Doc("steps of tasks with role = \"source\"; 0 = [continual.finetune]'s steps.");
    s.Int("target_examples").Default(32).Range(0, 1000000000)
        .Doc("train_examples of tasks with role = \"target\" (few-shot).");
    return s;
  }();
  return schema;
}

const Schema& ContinualSequenceSchema() {
  static const Schema schema = [] {
    Schema s("continual.sequence", "One benchmark sequence: tasks in the order the learners meet them.");
    s.Add("name", ValueType::kName).Required().Doc("Unique name.");
    s.Enum("regime", {"positive", "negative", "neutral", "mixed"}).Required()
        .Doc("The transfer regime the sequence targets (the tables group by it).");
    return s;
  }();
  return schema;
}

}  // namespace shammie::orchestrator
