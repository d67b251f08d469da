// `shammie analyze DIR` on a results.h5 laid out as the engine writes it:
// the canonical spec in the root attributes, one run per planned job, and
// the per-example table each sim.llm_eval job produces.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

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

}  // namespace
}  // namespace shammie::orchestrator
