// The continual-learning study for real: `shammie run` under mpirun trains
// every learner's models with LibTorch, `shammie analyze` reads results.h5.
// - The smoke study (experiments/configs/continual-smoke.toml, one fixed
//   seed) reproduces the qualitative claims of PAPERS.md §9 with margins
//   checked on other seeds (docs/experiments/continual.md).
// - The test oracles of §9(f): a selective learner whose pool holds only the
//   base is independent fine-tuning bit for bit, and one forced to take the
//   latest checkpoint is sequential fine-tuning bit for bit (the checkpoints
//   are content-addressed: equal files have equal names); a source trained
//   on flipped labels starts the target below the base (negative step-0
//   transfer).
// Label `mpi`.
#include <gtest/gtest.h>

#include <iostream>
#include <map>

#include "storage/result_store.hpp"
#include "tests/table_column.hpp"
#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

using testing::Column;
using testing::ScratchDir;

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";


// Runs and analyzes `spec` into `dir`; returns the analysis tables.
std::map<std::string, storage::Table> RunStudy(const std::string& spec, const std::string& dir,
                                               std::string* run_output = nullptr) {
  auto run = testing::RunCommand(kShammie + " run " + spec + " --out " + dir + " --progress none");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  if (run_output) *run_output = run.output;
  auto analyze = testing::RunCommand(kShammie + " analyze " + dir);
  EXPECT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  std::map<std::string, storage::Table> out;
  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  EXPECT_TRUE(store.ok());
  if (!store.ok()) return out;
  for (const std::string name : {"continual-tasks", "continual-summary", "continual-transfer"}) {
    auto a = (*store)->ReadAnalysis(name);
    EXPECT_TRUE(a.ok()) << name;
    if (a.ok()) out[name] = a->second;
  }
  return out;
}

TEST(ContinualRunTest, SmokeStudyReproducesTheQualitativeOrdering) {
  ScratchDir scratch("continual-smoke");
  auto tables = RunStudy(SHAMMIE_SOURCE_DIR "/experiments/configs/continual-smoke.toml", scratch.File("run"));
  const storage::Table& summary = tables["continual-summary"];
  std::map<std::pair<std::string, std::string>, double> rel;  // (regime, learner) -> accuracy - independent's
  const auto& regime = Column<std::string>(summary, "regime");
  const auto& learner = Column<std::string>(summary, "learner");
  const auto& relative = Column<double>(summary, "relative");
  for (size_t i = 0; i < regime.size(); ++i) rel[{regime[i], learner[i]}] = relative[i];
  ASSERT_EQ(rel.size(), 16u);
  auto r = [&](const std::string& regime_name, const std::string& learner_name) { return rel[{regime_name, learner_name}]; };
  // Margins: the smallest gaps over experiment seeds 1, 2, 3 and 2026 (the
  // fixed one here) were +0.17 / -0.07 / -0.035 / -0.024 / +0.00 / +0.10
  // (docs/experiments/continual.md).
  // Sequential helps on positive sequences and hurts on negative ones.
  EXPECT_GT(r("positive", "sequential"), 0.10);
  EXPECT_LT(r("negative", "sequential"), -0.05);
  // Selective matches sequential on positive, does no harm on negative, and
  // is the best non-oracle learner on mixed sequences.
  EXPECT_GT(r("positive", "selective"), r("positive", "sequential") - 0.05);
  EXPECT_GE(r("negative", "selective"), -0.05);
  EXPECT_GE(r("mixed", "selective"), r("mixed", "sequential") - 0.01);
  EXPECT_GT(r("mixed", "selective"), 0.05);
  // Negative step-0 transfer (PAPERS.md §9(f)): right after a source
  // trained on flipped labels, sequential starts the target at about 1 - the
  // source's accuracy on its own validation set (the same prompts, the
  // opposite labels), far below the base's start.
  const storage::Table& tasks = tables["continual-tasks"];
  const auto& seq = Column<std::string>(tasks, "sequence");
  const auto& who = Column<std::string>(tasks, "learner");
  const auto& position = Column<int64_t>(tasks, "position");
  const auto& step0 = Column<double>(tasks, "step0_accuracy");
  const auto& job = Column<std::string>(tasks, "job");
  double base_start = -1, flipped_start = -1;
  std::string flip_source;
  for (size_t i = 0; i < seq.size(); ++i) {
    if (seq[i] != "negative") continue;
    if (position[i] == 3 && who[i] == "independent") base_start = step0[i];
    if (position[i] == 3 && who[i] == "sequential") flipped_start = step0[i];
    if (position[i] == 2 && who[i] == "sequential") flip_source = job[i];
  }
  ASSERT_GE(base_start, 0);
  EXPECT_LT(flipped_start, base_start - 0.3) << "base " << base_start << ", after the flipped source " << flipped_start;
  auto store = storage::ResultStore::Open(scratch.File("run") + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto source_val = (*store)->ReadMetric(flip_source, "val_accuracy");
  ASSERT_TRUE(source_val.ok() && !source_val->empty());
  // On one prompt at most one of two opposite labels is right: the two
  // accuracies of one model on the same prompts sum to at most 1, and to 1
  // when every answer is a well-formed label.
  EXPECT_LE(flipped_start + source_val->back().value, 1.0 + 1e-9);
  EXPECT_GT(flipped_start + source_val->back().value, 0.9);
  // The oracle's transfer matrix is stored (its values: docs/experiments/continual.md).
  EXPECT_FALSE(Column<double>(tables["continual-transfer"], "transfer").empty());
}

std::string TinyStudy(const std::string& options) {
  return R"([experiment]
name = "tiny"
seed = 11

[continual]
learners = ["independent", "sequential", "selective"]
seeds = 1
probe_steps = 2
source_steps = 12
)" + options + R"(

[continual.base]
task = "grammar"
rule = "contains"
train_examples = 16
d_model = 32
max_len = 16
steps = 20
eval_examples = 32

[continual.finetune]
task = "grammar"
rule = "contains"
steps = 6
eval_examples = 32
eval_every = 100

[[continual.sequence]]
name = "s"
regime = "mixed"
tasks = [{ role = "source", variant = "flip" }, { }, { role = "source" }, { }]
)";
}

TEST(ContinualRunTest, DegeneratePoolsAreIndependentAndSequentialBitForBit) {
  ScratchDir scratch("continual-degenerate");
  for (const std::string& variant : {std::string("pool = \"base\""), std::string("rule = \"last\"")}) {
    const std::string spec = scratch.File(variant.substr(0, 4) + ".toml");
    testing::WriteFile(spec, TinyStudy(variant));
    // Both studies into one directory: the second reuses every job the first
    // finished (the base, independent and sequential fine-tunes: same ids).
    const std::string dir = scratch.File("run");
    std::string output;
    auto tables = RunStudy(spec, dir, &output);
    if (variant[0] == 'r') {
      int jobs = 0, attempts = 0;
      const auto at = output.find(" jobs: ");
      ASSERT_NE(at, std::string::npos) << output;
      jobs = std::stoi(output.substr(output.rfind(' ', at - 1) + 1));
      attempts = std::stoi(output.substr(output.rfind(' ', output.find(" attempts") - 1) + 1));
      // Reused: the base, 4 independent and 3 more sequential fine-tunes, and
      // the 4 probes of the base (the same probe in both pools).
      EXPECT_LE(attempts, jobs - 12) << output;
    }
    const storage::Table& tasks = tables["continual-tasks"];
    const auto& who = Column<std::string>(tasks, "learner");
    const auto& position = Column<int64_t>(tasks, "position");
    const auto& accuracy = Column<double>(tasks, "accuracy");
    const auto& selected = Column<int64_t>(tasks, "selected");
    std::map<std::string, std::map<int64_t, double>> acc;
    for (size_t i = 0; i < who.size(); ++i) {
      acc[who[i]][position[i]] = accuracy[i];
      if (who[i] != "selective") continue;
      EXPECT_EQ(selected[i], variant[0] == 'p' ? -1 : position[i] - 1) << variant << " position " << position[i];
    }
    // The models themselves: the runs' "model" files, content-addressed.
    auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
    ASSERT_TRUE(store.ok());
    auto runs = (*store)->ListRuns();
    ASSERT_TRUE(runs.ok());
    std::map<std::string, std::map<std::string, std::string>> by_task;  // stage -> config -> model
    for (const auto& r : *runs) {
      if (r.kind != "lm.train" || !r.artifacts.count("model")) continue;
      by_task[r.stage][r.config_json + "#" + std::to_string(r.seed)] = r.artifacts.at("model");
    }
    const std::string twin = variant[0] == 'p' ? "continual.independent" : "continual.sequential";
    ASSERT_EQ(by_task["continual.selective"].size(), 4u) << variant;
    for (const auto& [key, model] : by_task["continual.selective"]) {
      // The first task of sequential is the independent job itself (merged), so look in both.
      std::string other;
      if (by_task[twin].count(key)) other = by_task[twin].at(key);
      else if (by_task["continual.independent"].count(key)) other = by_task["continual.independent"].at(key);
      EXPECT_EQ(model, other) << variant << ": " << key;
    }
    const std::string& learner = variant[0] == 'p' ? "independent" : "sequential";
    for (int64_t t = 0; t < 4; ++t) EXPECT_EQ(acc["selective"][t], acc[learner][t]) << variant << " position " << t;
  }
}

}  // namespace
}  // namespace shammie::orchestrator
