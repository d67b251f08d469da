// The [continual] study: its spec checks and the DAG it expands into
// (orchestrator/continual.hpp), without running anything.
#include "orchestrator/continual.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "orchestrator/spec_loader.hpp"
#include "workers/job_kind.hpp"

namespace shammie::orchestrator {
namespace {

std::string Study(const std::string& continual_keys, const std::string& tasks = R"(
  { role = "source", variant = "flip" }, { }, { role = "source" })") {
  return R"([experiment]
name = "cl"
seed = 5

[continual]
)" + continual_keys + R"(

[continual.base]
task = "grammar"
steps = 10
d_model = 32
max_len = 24

[continual.finetune]
task = "grammar"
rule = "contains"
steps = 6

[[continual.sequence]]
name = "s"
regime = "mixed"
tasks = [)" + tasks + R"(
]
)";
}

class ContinualPlanTest : public ::testing::Test {
 protected:
  void SetUp() override { workers::RegisterBuiltinKinds(kinds_); }
  LoadResult Load(const std::string& text) { return LoadExperimentFromString(text, "exp.toml", kinds_); }
  ExperimentSpec Spec(const std::string& text) {
    auto loaded = Load(text);
    EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].ToString());
    return *loaded.spec;
  }
  const ContinualCell& Cell(const ContinualLayout& l, const std::string& learner, int64_t position, int64_t replicate = 0) {
    for (const auto& c : l.cells) {
      if (c.learner == learner && c.position == position && c.replicate == replicate) return c;
    }
    ADD_FAILURE() << "no cell " << learner << " " << position;
    return l.cells.front();
  }
  workers::KindRegistry kinds_;
};

TEST_F(ContinualPlanTest, LearnersShareEveryIdenticalJobAndPairTheirSeeds) {
  const ExperimentSpec spec = Spec(Study("seeds = 2\nprobe_steps = 3"));
  const ContinualLayout l = LayOutContinual(spec);
  ASSERT_EQ(l.cells.size(), 1u * 2 * 3 * 4);
  std::map<std::string, const PlannedJob*> jobs;
  for (const auto& j : l.jobs) {
    for (const auto& in : j.inputs) EXPECT_TRUE(jobs.count(in)) << "input after its job";
    EXPECT_TRUE(jobs.emplace(j.id, &j).second) << "id twice";
  }
  for (int64_t r = 0; r < 2; ++r) {
    // Everyone's first task from the base is one job; so is the oracle's base candidate.
    EXPECT_EQ(Cell(l, "independent", 0, r).result_job, Cell(l, "sequential", 0, r).result_job);
    for (int64_t t = 0; t < 3; ++t) {
      const ContinualCell& indep = Cell(l, "independent", t, r);
      const ContinualCell& sel = Cell(l, "selective", t, r);
      const ContinualCell& oracle = Cell(l, "oracle", t, r);
      EXPECT_EQ(oracle.candidate_jobs.front(), indep.result_job);
      EXPECT_EQ(jobs.at(indep.result_job)->inputs, std::vector<std::string>{l.base_job});
      // The selective pool: base + its own past fine-tunes, one probe each.
      ASSERT_EQ(sel.candidates.size(), static_cast<size_t>(t + 1));
      EXPECT_EQ(sel.candidates.front(), l.base_job);
      for (int64_t k = 1; k <= t; ++k) EXPECT_EQ(sel.candidates[k], Cell(l, "selective", k - 1, r).result_job);
      EXPECT_EQ(sel.candidate_positions.front(), -1);
      ASSERT_EQ(sel.candidate_jobs.size(), sel.candidates.size());
      for (size_t k = 0; k < sel.candidates.size(); ++k) {
        const PlannedJob& probe = *jobs.at(sel.candidate_jobs[k]);
        EXPECT_EQ(probe.inputs, std::vector<std::string>{sel.candidates[k]});
        EXPECT_EQ(probe.config["steps"], 3);
        EXPECT_EQ(probe.config["save_model"], false);
        EXPECT_EQ(probe.seed, jobs.at(indep.result_job)->seed);  // paired with the fine-tunes
      }
      const PlannedJob& select = *jobs.at(sel.select_job);
      EXPECT_EQ(select.kind, "continual.select");
      EXPECT_EQ(select.config["candidates"], nlohmann::json(sel.candidates));
      EXPECT_EQ(jobs.at(sel.result_job)->inputs, std::vector<std::string>{sel.select_job});
      // The oracle: a full fine-tune per candidate of its own chain.
      ASSERT_EQ(oracle.candidates.size(), static_cast<size_t>(t + 1));
      for (int64_t k = 1; k <= t; ++k) EXPECT_EQ(oracle.candidates[k], Cell(l, "oracle", k - 1, r).select_job);
      EXPECT_EQ(oracle.finetune_steps, 6 * (t + 1));
      // Learners see the same seed for a task; replicates differ.
      EXPECT_EQ(jobs.at(Cell(l, "sequential", t, r).result_job)->seed, jobs.at(indep.result_job)->seed);
      EXPECT_NE(jobs.at(indep.result_job)->seed, jobs.at(Cell(l, "independent", t, 1 - r).result_job)->seed);
    }
  }
  // Roles set the data: the source has the whole training split, the targets 32 examples.
  EXPECT_EQ(jobs.at(Cell(l, "independent", 0).result_job)->config["train_examples"], 0);
  EXPECT_EQ(jobs.at(Cell(l, "independent", 1).result_job)->config["train_examples"], 32);
  EXPECT_EQ(jobs.at(Cell(l, "independent", 0).result_job)->config["variant"], "flip");
  // The plan holds each job once, the stages' jobs and the study's together.
  auto plan = BuildPlan(spec);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->jobs.size(), l.jobs.size());
  EXPECT_GT(plan->duplicates_merged, 0);
}

TEST_F(ContinualPlanTest, PoolRuleAndZeroShotSelectionAreOptions) {
  const ContinualLayout base_only = LayOutContinual(Spec(Study("pool = \"base\"\nrule = \"last\"")));
  for (const auto& c : base_only.cells) {
    if (c.learner == "selective") {
      EXPECT_EQ(c.candidates, std::vector<std::string>{base_only.base_job});
    }
  }
  const ContinualLayout zero = LayOutContinual(Spec(Study("selection = \"zero-shot\"\nlearners = [\"independent\", \"selective\"]")));
  std::map<std::string, const PlannedJob*> jobs;
  for (const auto& j : zero.jobs) jobs[j.id] = &j;
  for (const auto& c : zero.cells) {
    ASSERT_NE(c.learner, "oracle");
    if (c.learner != "selective") continue;
    EXPECT_EQ(jobs.at(c.select_job)->config["score"], "step0_val_loss");
    for (const auto& p : c.candidate_jobs) EXPECT_EQ(jobs.at(p)->config["steps"], 0);
    EXPECT_EQ(c.probe_steps, 0);
  }
}

TEST_F(ContinualPlanTest, MistakesAreReportedWhereTheyWereWritten) {
  auto errors = [&](const std::string& text) {
    std::string all;
    for (const auto& d : Load(text).errors) all += d.ToString() + "\n";
    return all;
  };
  EXPECT_NE(errors(Study("learners = [\"independent\", \"selectiv\"]")).find("exp.toml:6:28: continual.learners: unknown learner \"selectiv\" (did you mean `selective`?)"), std::string::npos)
      << errors(Study("learners = [\"independent\", \"selectiv\"]"));
  EXPECT_NE(errors(Study("learners = [\"sequential\"]")).find("continual.learners: include \"independent\""), std::string::npos);
  EXPECT_NE(errors(Study("seeds = 0")).find("exp.toml:6:9: continual.seeds: "), std::string::npos);
  const std::string model_key = Study("").replace(Study("").find("steps = 6"), 9, "steps = 6\nd_model = 64");
  EXPECT_NE(errors(model_key).find("continual.finetune.d_model: model keys come from [continual.base]"), std::string::npos)
      << errors(model_key);
  const std::string bad_task = errors(Study("", "\n  { rule = \"nope\" }, { role = \"sink\" }"));
  EXPECT_NE(bad_task.find("exp.toml:23:12: continual.sequence.s.tasks[0].rule: "), std::string::npos) << bad_task;
  EXPECT_NE(bad_task.find("continual.sequence.s.tasks[1].role: "), std::string::npos) << bad_task;
  EXPECT_NE(errors(Study("", "{ }")).find("a sequence needs at least 2 tasks"), std::string::npos);
  EXPECT_NE(errors(Study("", "{ lenght = 3 }, { }")).find("exp.toml:22:12: continual.sequence.s.tasks[0].lenght: unknown key (did you mean `length`?)"),
            std::string::npos)
      << errors(Study("", "{ lenght = 3 }, { }"));
}

TEST_F(ContinualPlanTest, TheShippedStudiesLoadWithEveryRegimeAndLongSequences) {
  for (const std::string file : {"continual.toml", "continual-smoke.toml"}) {
    auto loaded = LoadExperiment(SHAMMIE_SOURCE_DIR "/experiments/configs/" + file, kinds_);
    ASSERT_TRUE(loaded.ok()) << file << ": " << (loaded.errors.empty() ? "" : loaded.errors[0].ToString());
    ASSERT_TRUE(loaded.spec->continual.has_value());
    std::set<std::string> regimes;
    for (const auto& q : loaded.spec->continual->sequences) {
      regimes.insert(q.regime);
      if (file == "continual.toml") {
        EXPECT_GE(q.tasks.size(), 8u) << q.name;
      }
    }
    EXPECT_EQ(regimes, (std::set<std::string>{"positive", "negative", "neutral", "mixed"})) << file;
    EXPECT_TRUE(BuildPlan(*loaded.spec).ok());
  }
}

}  // namespace
}  // namespace shammie::orchestrator
