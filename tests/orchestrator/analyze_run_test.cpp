// `shammie analyze DIR` on a results.h5 laid out as the engine writes it:
// the canonical spec in the root attributes, one run per planned job, and
// the per-example table each sim.llm_eval job produces.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "analysis/ltt.hpp"
#include "orchestrator/cli.hpp"
#include "orchestrator/plan.hpp"
#include "orchestrator/spec_loader.hpp"
#include "storage/result_store.hpp"
#include "tests/test_util.hpp"
#include "workers/sim_llm_eval.hpp"

namespace shammie::orchestrator {
namespace {

struct CliRun {
  int code;
  std::string out, err;
};

CliRun Shammie(std::vector<std::string> args, const workers::KindRegistry& kinds) {
  args.insert(args.begin(), "shammie");
  std::ostringstream out, err;
  int code = RunCli(args, kinds, out, err);
  return {code, out.str(), err.str()};
}

// Writes DIR/results.h5 for `config_path` with every job's simulated table.
void WriteRun(const std::string& config_path, const std::string& dir, const workers::KindRegistry& kinds) {
  auto loaded = LoadExperiment(config_path, kinds);
  ASSERT_TRUE(loaded.ok());
  auto plan = BuildPlan(*loaded.spec);
  ASSERT_TRUE(plan.ok());
  storage::ExperimentInfo info;
  info.experiment = loaded.spec->name;
  info.spec_text = loaded.spec->canonical_text;
  info.spec_hash = loaded.spec->spec_hash;
  auto store = storage::ResultStore::Create(dir + "/results.h5", info);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (const auto& job : plan->jobs) {
    ASSERT_TRUE((*store)->BeginRun({job.id, job.stage, job.kind, job.config.dump(), job.seed, job.inputs}).ok());
    auto table = workers::SimulateLlmEval(job.config, static_cast<uint64_t>(job.seed));
    ASSERT_TRUE(table.ok());
    ASSERT_TRUE((*store)->AppendTable(job.id, "labels", *table).ok());
  }
  ASSERT_TRUE((*store)->Close().ok());
}

// An empty results.h5 at `path` for the experiment `spec_text` (its runs
// are then written by hand); nullptr after a failed assertion.
std::unique_ptr<storage::ResultStore> CreateStoreFor(const std::string& spec_text, const std::string& path,
                                                     const workers::KindRegistry& kinds) {
  auto loaded = LoadExperimentFromString(spec_text, "spec.toml", kinds);
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].ToString());
  if (!loaded.ok()) return nullptr;
  storage::ExperimentInfo info;
  info.experiment = loaded.spec->name;
  info.spec_text = loaded.spec->canonical_text;
  auto store = storage::ResultStore::Create(path, info);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(*store) : nullptr;
}

TEST(AnalyzeRunTest, RunsDeclaredAnalysesStoresAndReports) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-run");
  WriteRun(SHAMMIE_SOURCE_DIR "/experiments/configs/llm-eval-ppi.toml", dir.path().string(), kinds);
  const std::string report = dir.File("report");
  auto r = Shammie({"analyze", dir.path().string(), "--report", report}, kinds);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"analysis answer-quality ", "classical", "ppi++", "stratppi", "bayes-chain-rule", "bayes-binned",
                        "400 labeled, 19600 unlabeled, 4 strata", "labels_for_target"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  }
  // Stored under /analysis/<name>/ with parameters.
  auto store = storage::ResultStore::Open(dir.File("results.h5"), storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto names = (*store)->ListAnalyses();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"answer-quality", "answer-quality-scores"}));
  auto stored = (*store)->ReadAnalysis("answer-quality");
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(nlohmann::json::parse(stored->first)["strata"], "domain");
  const auto& methods = std::get<std::vector<std::string>>(stored->second.columns[0].values);
  EXPECT_EQ(methods, (std::vector<std::string>{"classical", "ppi", "ppi++", "stratppi", "bayes-chain-rule"}));
  const auto& width = std::get<std::vector<double>>(stored->second.columns[4].values);
  // The study's claim: the judge helps, and stratifying by domain helps more.
  EXPECT_LT(width[2], width[0]) << "PPI++ narrower than classical";
  EXPECT_LT(width[3], width[2]) << "StratPPI narrower than PPI++ when judge accuracy varies by domain";
  // Report: JSON summary and real PNG files.
  auto summary = nlohmann::json::parse(testing::ReadFileText(report + "/summary.json"));
  EXPECT_EQ(summary["experiment"], "llm-eval-ppi");
  EXPECT_EQ(summary["analyses"]["answer-quality"]["result"]["methods"].size(), 5u);
  for (const char* png : {"answer-quality.png", "answer-quality-labels.png", "answer-quality-scores.png"}) {
    const std::string bytes = testing::ReadFileText(report + "/" + png);
    ASSERT_GT(bytes.size(), 1000u) << png;
    EXPECT_EQ(bytes.substr(1, 3), "PNG") << png;
  }
  // Running it again replaces the stored results instead of failing.
  store->reset();
  auto again = Shammie({"analyze", dir.path().string()}, kinds);
  EXPECT_EQ(again.code, 0) << again.err;
}

TEST(AnalyzeRunTest, MissingDataAndBadUsage) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-run-missing");
  // A store whose spec declares an analysis but holds no tables yet.
  auto loaded = LoadExperiment(SHAMMIE_SOURCE_DIR "/experiments/configs/llm-eval-ppi.toml", kinds);
  ASSERT_TRUE(loaded.ok());
  storage::ExperimentInfo info;
  info.experiment = "llm-eval-ppi";
  info.spec_text = loaded.spec->canonical_text;
  ASSERT_TRUE(storage::ResultStore::Create(dir.File("results.h5"), info).ok());
  auto r = Shammie({"analyze", dir.path().string()}, kinds);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no run of stage simulate has a table labels"), std::string::npos) << r.err;
  EXPECT_EQ(Shammie({"analyze"}, kinds).code, 2);
  EXPECT_EQ(Shammie({"analyze", dir.path().string(), "--label", "x"}, kinds).code, 2);
  EXPECT_EQ(Shammie({"analyze", dir.File("nope")}, kinds).code, 2);
}

TEST(AnalyzeRunTest, LearnThenTestOverConfigurations) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-ltt");
  const std::string spec_text = R"([experiment]
name = "thresholds"
[[stage]]
name = "calibrate"
kind = "bench.noop"
[[analysis]]
name = "safe-thresholds"
methods = ["ltt"]
stage = "calibrate"
table = "calibration"
config = "threshold"
loss = "error"
alpha = 0.1
delta = 0.1
bound = "binomial"
)";
  auto store = CreateStoreFor(spec_text, dir.File("results.h5"), kinds);
  ASSERT_NE(store, nullptr);
  // Two runs (e.g. two calibration shards); threshold t has error rate t / 2.
  std::vector<std::vector<double>> expected_losses(10);
  for (int run = 0; run < 2; ++run) {
    const std::string id = "run" + std::to_string(run);
    ASSERT_TRUE(store->BeginRun({id, "calibrate", "bench.noop", "{}", run, {}}).ok());
    std::vector<double> threshold, error;
    for (int t = 0; t < 10; ++t) {
      for (int i = 0; i < 500; ++i) {
        const double rate = 0.02 * t;  // 0, 0.02, ..., 0.18
        const double e = (i % 100) < rate * 100 ? 1 : 0;
        threshold.push_back(0.1 * t);
        error.push_back(e);
        expected_losses[static_cast<size_t>(t)].push_back(e);
      }
    }
    storage::Table table;
    table.columns = {{"threshold", threshold}, {"error", error}};
    ASSERT_TRUE(store->AppendTable(id, "calibration", table).ok());
  }
  ASSERT_TRUE(store->Close().ok());
  auto r = Shammie({"analyze", dir.path().string(), "--report", dir.File("report")}, kinds);
  ASSERT_EQ(r.code, 0) << r.err;
  auto direct = analysis::LearnThenTest(expected_losses, 0.1, 0.1, analysis::PValueBound::kBinomial,
                                        analysis::FwerProcedure::kFixedSequence);
  ASSERT_TRUE(direct.ok());
  EXPECT_NE(r.out.find(std::to_string(direct->valid.size()) + " of 10 configurations certified"), std::string::npos)
      << r.out;
  EXPECT_GE(direct->valid.size(), 3u);
  EXPECT_LE(direct->valid.size(), 5u) << "error rates 0.10 and above cannot be certified at alpha = 0.1";
  auto reread = storage::ResultStore::Open(dir.File("results.h5"), storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(reread.ok());
  auto stored = (*reread)->ReadAnalysis("safe-thresholds");
  ASSERT_TRUE(stored.ok());
  const auto& configs = std::get<std::vector<std::string>>(stored->second.columns[0].values);
  EXPECT_EQ(configs[2], "0.20000000000000001") << "numeric testing order";
  const auto& p = std::get<std::vector<double>>(stored->second.columns[3].values);
  for (size_t c = 0; c < 10; ++c) EXPECT_DOUBLE_EQ(p[c], direct->p_values[c]);
  EXPECT_GT(testing::ReadFileText(dir.File("report/safe-thresholds.png")).size(), 1000u);
}

TEST(AnalyzeRunTest, AnalysisFamiliesDoNotMix) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  auto r = LoadExperimentFromString(R"([experiment]
name = "x"
[[stage]]
name = "s"
kind = "bench.noop"
[[analysis]]
name = "a"
methods = ["ltt", "ppi++"]
stage = "s"
table = "t"
[[analysis]]
name = "b"
methods = ["ltt"]
stage = "s"
table = "t"
config = "c"
label = "h"
[[analysis]]
name = "c"
methods = ["clm"]
stage = "s"
table = "samples"
epsilons = [0.2, 1.5]
alpha = 0.1
[[analysis]]
name = "d"
methods = ["clm", "ltt"]
stage = "s"
table = "samples"
[[analysis]]
name = "e"
methods = ["ppi"]
stage = "s"
table = "t"
label = "h"
prediction = "p"
trials = 5
)", "x.toml", kinds);
  std::vector<std::string> lines;
  for (const auto& d : r.errors) lines.push_back(d.ToString());
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "x.toml:8:11: analysis.a.methods: ltt runs alone: put the other methods in another [[analysis]]",
                       "x.toml:11:1: analysis.b.loss: missing required key",
                       "x.toml:17:1: analysis.b.label: does not apply to ltt (methods = `ltt`)",
                       "x.toml:23:18: analysis.c.epsilons: every epsilon must be in (0, 1)",
                       "x.toml:24:1: analysis.c.alpha: does not apply to clm (methods = `clm`)",
                       "x.toml:27:11: analysis.d.methods: ltt runs alone: put the other methods in another [[analysis]]",
                       "x.toml:37:1: analysis.e.trials: does not apply to mean estimators (methods = `ppi`)",
                   }));
}

// `methods = ["curves"]`: a metric's curve per group of runs that share the
// `by` keys, averaged over the group's runs with a Student-t interval.
TEST(AnalyzeRunTest, CurvesAverageEachGroupsRunsPerStep) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-curves");
  const std::string spec_text = R"([experiment]
name = "curves"
[[stage]]
name = "rl"
kind = "bench.noop"
[[analysis]]
name = "success"
methods = ["curves"]
stage = "rl"
metric = "success"
by = ["alpha"]
alpha = 0.05
)";
  auto store = CreateStoreFor(spec_text, dir.File("results.h5"), kinds);
  ASSERT_NE(store, nullptr);
  // alpha = 0: two seeds; alpha = 1: one seed. The seed is not a `by` key.
  struct R { const char* id; const char* config; std::vector<storage::MetricPoint> points; };
  const std::vector<R> runs = {
      {"a", R"({"alpha":0.0,"gamma":10})", {{0, 0.0}, {10, 0.2}, {20, 0.4}}},
      {"b", R"({"alpha":0.0,"gamma":10})", {{0, 0.0}, {10, 0.4}, {20, 0.8}}},
      {"c", R"({"alpha":1.0,"gamma":10})", {{0, 0.1}, {10, 0.9}}},
  };
  int64_t seed = 0;
  for (const auto& run : runs) {
    ASSERT_TRUE(store->BeginRun({run.id, "rl", "bench.noop", run.config, seed++, {}}).ok());
    ASSERT_TRUE(store->AppendMetrics(run.id, "success", run.points).ok());
  }
  ASSERT_TRUE(store->BeginRun({"other-stage", "elsewhere", "bench.noop", "{}", 9, {}}).ok());
  ASSERT_TRUE(store->Close().ok());
  auto r = Shammie({"analyze", dir.path().string(), "--report", dir.File("report")}, kinds);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("alpha=0.0"), std::string::npos) << r.out;
  auto reread = storage::ResultStore::Open(dir.File("results.h5"), storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(reread.ok());
  auto stored = (*reread)->ReadAnalysis("success");
  ASSERT_TRUE(stored.ok());
  const auto& t = stored->second;
  const auto& group = std::get<std::vector<std::string>>(t.columns[0].values);
  const auto& step = std::get<std::vector<int64_t>>(t.columns[1].values);
  const auto& n = std::get<std::vector<int64_t>>(t.columns[2].values);
  const auto& mean = std::get<std::vector<double>>(t.columns[3].values);
  const auto& lower = std::get<std::vector<double>>(t.columns[4].values);
  const auto& upper = std::get<std::vector<double>>(t.columns[5].values);
  ASSERT_EQ(group.size(), 5u);
  // alpha=0 at step 20: values 0.4 and 0.8, mean 0.6, sd 0.2828; the 95%
  // Student-t interval with 1 degree of freedom: 0.6 +- 12.7062 * 0.2828 / sqrt(2).
  size_t row = 0;
  while (row < group.size() && !(group[row] == "alpha=0.0" && step[row] == 20)) ++row;
  ASSERT_LT(row, group.size());
  EXPECT_EQ(n[row], 2);
  EXPECT_NEAR(mean[row], 0.6, 1e-12);
  EXPECT_NEAR(upper[row] - mean[row], 12.706204736 * 0.2 , 1e-6);
  EXPECT_NEAR(mean[row] - lower[row], 12.706204736 * 0.2, 1e-6);
  row = 0;
  while (row < group.size() && !(group[row] == "alpha=1.0" && step[row] == 10)) ++row;
  ASSERT_LT(row, group.size());
  EXPECT_EQ(n[row], 1);
  EXPECT_NEAR(mean[row], 0.9, 1e-12);
  EXPECT_GT(testing::ReadFileText(dir.File("report/success.png")).size(), 1000u);
}

// Groups are told apart by their exact values, even when their printed
// names (shortened JSON) coincide.
TEST(AnalyzeRunTest, CurvesKeepGroupsWithLongEqualPrefixesApart) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-curves-long");
  auto store = CreateStoreFor(R"([experiment]
name = "long"
[[stage]]
name = "rl"
kind = "bench.noop"
[[analysis]]
name = "c"
methods = ["curves"]
stage = "rl"
metric = "m"
by = ["target"]
)", dir.File("results.h5"), kinds);
  ASSERT_NE(store, nullptr);
  const std::string a = R"({"target":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]})";
  const std::string b = R"({"target":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,21]})";
  ASSERT_TRUE(store->BeginRun({"a", "rl", "bench.noop", a, 0, {}}).ok());
  ASSERT_TRUE(store->AppendMetrics("a", "m", std::vector<storage::MetricPoint>{{0, 1.0}}).ok());
  ASSERT_TRUE(store->BeginRun({"b", "rl", "bench.noop", b, 1, {}}).ok());
  ASSERT_TRUE(store->AppendMetrics("b", "m", std::vector<storage::MetricPoint>{{0, 3.0}}).ok());
  ASSERT_TRUE(store->Close().ok());
  auto r = Shammie({"analyze", dir.path().string()}, kinds);
  ASSERT_EQ(r.code, 0) << r.err;
  auto reread = storage::ResultStore::Open(dir.File("results.h5"), storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(reread.ok());
  auto stored = (*reread)->ReadAnalysis("c");
  ASSERT_TRUE(stored.ok());
  const auto& mean = std::get<std::vector<double>>(stored->second.columns[3].values);
  EXPECT_EQ(mean, (std::vector<double>{1.0, 3.0})) << "two groups, not one averaged to 2";
}

TEST(AnalyzeRunTest, CurvesNeedAMetricAndTakeNoTable) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  auto r = LoadExperimentFromString(R"([experiment]
name = "x"
[[stage]]
name = "s"
kind = "bench.noop"
[[analysis]]
name = "a"
methods = ["curves"]
stage = "s"
table = "t"
[[analysis]]
name = "b"
methods = ["ltt"]
stage = "s"
config = "c"
loss = "l"
metric = "m"
x = "q"
)", "x.toml", kinds);
  std::vector<std::string> lines;
  for (const auto& d : r.errors) lines.push_back(d.ToString());
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "x.toml:6:1: analysis.a.metric: missing required key",
                       "x.toml:10:1: analysis.a.table: does not apply to curves (methods = `curves`)",
                       "x.toml:11:1: analysis.b.table: missing required key",
                       "x.toml:17:1: analysis.b.metric: does not apply to ltt (methods = `ltt`)",
                       "x.toml:18:1: analysis.b.x: does not apply to ltt (methods = `ltt`)",
                   }));
}

// With `x`, each run is one point: its metric's last value at its x, a
// numeric config key or another metric's last value; runs at the same x
// and group are averaged.
TEST(AnalyzeRunTest, CurvesAgainstAConfigKeyOrAMetric) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-curves-x");
  auto store = CreateStoreFor(R"([experiment]
name = "x"
[[stage]]
name = "s"
kind = "bench.noop"
[[analysis]]
name = "by-batch"
methods = ["curves"]
stage = "s"
metric = "speed"
x = "batch"
by = ["mode"]
[[analysis]]
name = "by-size"
methods = ["curves"]
stage = "s"
metric = "speed"
x = "size"
)", dir.File("results.h5"), kinds);
  ASSERT_NE(store, nullptr);
  struct R { const char* id; const char* config; double size, speed; };
  const R rows[] = {{"a", R"({"batch":16,"mode":"depth"})", 100, 2.0},
                    {"b", R"({"batch":16,"mode":"depth"})", 100, 4.0},
                    {"c", R"({"batch":64,"mode":"depth"})", 300, 9.0},
                    {"d", R"({"batch":16,"mode":"static"})", 200, 5.0}};
  int seed = 0;
  for (const R& row : rows) {
    ASSERT_TRUE(store->BeginRun({row.id, "s", "bench.noop", row.config, seed++, {}}).ok());
    // Earlier points of the metric do not count: its last value does.
    ASSERT_TRUE(store->AppendMetrics(row.id, "speed", std::vector<storage::MetricPoint>{{0, -1.0}, {5, row.speed}}).ok());
    ASSERT_TRUE(store->AppendMetrics(row.id, "size", std::vector<storage::MetricPoint>{{0, row.size}}).ok());
  }
  ASSERT_TRUE(store->Close().ok());
  auto r = Shammie({"analyze", dir.path().string(), "--report", dir.File("report")}, kinds);
  ASSERT_EQ(r.code, 0) << r.err;
  auto reread = storage::ResultStore::Open(dir.File("results.h5"), storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(reread.ok());
  auto batch = (*reread)->ReadAnalysis("by-batch");
  ASSERT_TRUE(batch.ok());
  const auto& t = batch->second;
  EXPECT_EQ(t.columns[1].name, "batch");
  EXPECT_EQ(std::get<std::vector<std::string>>(t.columns[0].values),
            (std::vector<std::string>{"mode=\"depth\"", "mode=\"depth\"", "mode=\"static\""}));
  EXPECT_EQ(std::get<std::vector<double>>(t.columns[1].values), (std::vector<double>{16, 64, 16}));
  EXPECT_EQ(std::get<std::vector<int64_t>>(t.columns[2].values), (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(std::get<std::vector<double>>(t.columns[3].values), (std::vector<double>{3.0, 9.0, 5.0}));
  auto size = (*reread)->ReadAnalysis("by-size");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(std::get<std::vector<double>>(size->second.columns[1].values), (std::vector<double>{100, 200, 300}));
  EXPECT_EQ(std::get<std::vector<double>>(size->second.columns[3].values), (std::vector<double>{3.0, 5.0, 9.0}));
  EXPECT_GT(testing::ReadFileText(dir.File("report/by-batch.png")).size(), 1000u);
}

// With `x_metric`, a metric is paired with another step by step (reward
// against KL during RL): each group's curve goes through the mean of each at
// every step both were reported; a config key of the same name does not get
// in the way, and steps the x metric lacks are left out.
TEST(AnalyzeRunTest, CurvesAgainstAnotherMetricStepByStep) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  testing::ScratchDir dir("analyze-curves-x-metric");
  auto store = CreateStoreFor(R"([experiment]
name = "x"
[[stage]]
name = "s"
kind = "bench.noop"
[[analysis]]
name = "gold-vs-kl"
methods = ["curves"]
stage = "s"
metric = "gold"
x_metric = "kl"
by = ["ensemble"]
)", dir.File("results.h5"), kinds);
  ASSERT_NE(store, nullptr);
  struct R { const char* id; const char* config; double kl10, kl20, gold0, gold10, gold20; };
  const R rows[] = {{"a", R"({"ensemble":"single","kl":0.5})", 1.0, 3.0, 0.4, 0.5, 0.2},
                    {"b", R"({"ensemble":"single","kl":0.5})", 2.0, 5.0, 0.4, 0.7, 0.4},
                    {"c", R"({"ensemble":"pretrain","kl":0.5})", 0.5, 1.0, 0.4, 0.6, 0.6}};
  int seed = 0;
  for (const R& row : rows) {
    ASSERT_TRUE(store->BeginRun({row.id, "s", "bench.noop", row.config, seed++, {}}).ok());
    ASSERT_TRUE(store->AppendMetrics(row.id, "gold", std::vector<storage::MetricPoint>{{0, row.gold0}, {10, row.gold10},
                                                                                        {20, row.gold20}}).ok());
    // No KL at step 0: that step has no point.
    ASSERT_TRUE(store->AppendMetrics(row.id, "kl", std::vector<storage::MetricPoint>{{10, row.kl10}, {20, row.kl20}}).ok());
  }
  ASSERT_TRUE(store->Close().ok());
  auto r = Shammie({"analyze", dir.path().string(), "--report", dir.File("report")}, kinds);
  ASSERT_EQ(r.code, 0) << r.err;
  auto reread = storage::ResultStore::Open(dir.File("results.h5"), storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(reread.ok());
  auto a = (*reread)->ReadAnalysis("gold-vs-kl");
  ASSERT_TRUE(a.ok());
  const auto& t = a->second;
  ASSERT_EQ(t.columns.size(), 7u);
  EXPECT_EQ(t.columns[1].name, "step");
  EXPECT_EQ(t.columns[2].name, "kl");
  EXPECT_EQ(std::get<std::vector<std::string>>(t.columns[0].values),
            (std::vector<std::string>{"ensemble=\"pretrain\"", "ensemble=\"pretrain\"", "ensemble=\"single\"",
                                      "ensemble=\"single\""}));
  EXPECT_EQ(std::get<std::vector<int64_t>>(t.columns[1].values), (std::vector<int64_t>{10, 20, 10, 20}));
  EXPECT_EQ(std::get<std::vector<double>>(t.columns[2].values), (std::vector<double>{0.5, 1.0, 1.5, 4.0}));
  EXPECT_EQ(std::get<std::vector<int64_t>>(t.columns[3].values), (std::vector<int64_t>{1, 1, 2, 2}));
  const auto& mean = std::get<std::vector<double>>(t.columns[4].values);
  ASSERT_EQ(mean.size(), 4u);
  EXPECT_DOUBLE_EQ(mean[0], 0.6);
  EXPECT_DOUBLE_EQ(mean[1], 0.6);
  EXPECT_DOUBLE_EQ(mean[2], 0.6);
  EXPECT_DOUBLE_EQ(mean[3], 0.3);
  EXPECT_GT(testing::ReadFileText(dir.File("report/gold-vs-kl.png")).size(), 1000u);
  // The plot's data: one block per group, (mean KL, mean gold) by step.
  EXPECT_NE(testing::ReadFileText(dir.File("report/gold-vs-kl.dat")).find("1.5 0.6\n4 0.3\n"), std::string::npos);

  auto both = LoadExperimentFromString(R"([experiment]
name = "x"
[[stage]]
name = "s"
kind = "bench.noop"
[[analysis]]
name = "a"
methods = ["curves"]
stage = "s"
metric = "gold"
x = "kl"
x_metric = "kl"
[[analysis]]
name = "b"
methods = ["ltt"]
stage = "s"
table = "t"
config = "c"
loss = "l"
x_metric = "kl"
)", "x.toml", kinds);
  std::vector<std::string> lines;
  for (const auto& d : both.errors) lines.push_back(d.ToString());
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "x.toml:12:1: analysis.a.x_metric: curves take `x` or `x_metric`, not both",
                       "x.toml:20:1: analysis.b.x_metric: does not apply to ltt (methods = `ltt`)",
                   }));
}

}  // namespace
}  // namespace shammie::orchestrator
