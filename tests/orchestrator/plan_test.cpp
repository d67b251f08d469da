#include "orchestrator/plan.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "common/hash.hpp"
#include "orchestrator/spec_loader.hpp"

namespace shammie::orchestrator {
namespace {

using nlohmann::json;

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override { workers::RegisterBuiltinKinds(kinds_); }
  Plan PlanOf(const std::string& text) {
    auto loaded = LoadExperimentFromString(text, "exp.toml", kinds_);
    EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].ToString());
    auto plan = BuildPlan(*loaded.spec);
    EXPECT_TRUE(plan.ok());
    return *plan;
  }
  static std::map<std::string, std::set<std::string>> IdsByStage(const Plan& p) {
    std::map<std::string, std::set<std::string>> out;
    for (const auto& j : p.jobs) out[j.stage].insert(j.id);
    return out;
  }
  workers::KindRegistry kinds_;
};

// A -(over)-> B -(all)-> C, and an independent D.
std::string Pipeline(const std::string& a_x0 = "1.0", const std::string& b_steps = "10",
                     const std::string& d_seconds = "0.5") {
  return R"([experiment]
name = "pipe"
seed = 3
[[stage]]
name = "A"
kind = "toy.quadratic"
config = { x0 = )" + a_x0 + R"( }
sweep = { grid = { learning_rate = [0.1, 0.5] } }
[[stage]]
name = "B"
kind = "toy.quadratic"
depends_on = ["A"]
config = { steps = )" + b_steps + R"( }
sweep = { over = ["A"], seeds = 2 }
[[stage]]
name = "C"
kind = "bench.sleep"
depends_on = ["B"]
[[stage]]
name = "D"
kind = "bench.sleep"
config = { seconds = )" + d_seconds + R"( }
)";
}

TEST_F(PlanTest, ExpansionShapeAndDependencies) {
  Plan p = PlanOf(Pipeline());
  auto ids = IdsByStage(p);
  ASSERT_EQ(ids["A"].size(), 2u);
  ASSERT_EQ(ids["B"].size(), 4u);
  ASSERT_EQ(ids["C"].size(), 1u);
  ASSERT_EQ(ids["D"].size(), 1u);
  std::map<std::string, int> children;
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < p.jobs.size(); ++i) position[p.jobs[i].id] = i;
  for (const auto& j : p.jobs) {
    for (const auto& in : j.inputs) {
      ASSERT_LT(position.at(in), position.at(j.id)) << "inputs come first";
    }
    if (j.stage == "B") {
      ASSERT_EQ(j.inputs.size(), 1u) << "fan-out: one upstream job each";
      ASSERT_TRUE(ids["A"].count(j.inputs[0]));
      children[j.inputs[0]]++;
    }
    if (j.stage == "C") {
      EXPECT_EQ(std::set<std::string>(j.inputs.begin(), j.inputs.end()), ids["B"]);
    }
    if (j.stage == "A" || j.stage == "D") {
      EXPECT_TRUE(j.inputs.empty());
    }
  }
  for (const auto& a : ids["A"]) EXPECT_EQ(children[a], 2) << "seeds = 2 per upstream job";
  for (const auto& j : p.jobs) {
    const int64_t want = j.stage == "A" ? 3 : j.stage == "B" ? 2 : 1;
    EXPECT_EQ(j.critical_path, want) << j.Label();
  }
}

// over = ["data"] with depends_on = ["data", "family", "other"]: each job gets
// its own data job, the family jobs fitted to that data job only (family
// descends from data), and every job of `other` (which does not).
TEST_F(PlanTest, OverScopesFanInOfDescendantStagesToTheSameLineage) {
  Plan p = PlanOf(R"(
[experiment]
name = "lineage"
seed = 5
[[stage]]
name = "data"
kind = "toy.quadratic"
sweep = { seeds = 3 }
[[stage]]
name = "family"
kind = "toy.quadratic"
depends_on = ["data"]
sweep = { over = ["data"], seeds = 2 }
[[stage]]
name = "other"
kind = "bench.sleep"
sweep = { grid = { seconds = [0.1, 0.2] } }
[[stage]]
name = "align"
kind = "bench.sleep"
depends_on = ["data", "family", "other"]
sweep = { over = ["data"] }
[[stage]]
name = "all"
kind = "bench.sleep"
depends_on = ["family"]
)");
  auto ids = IdsByStage(p);
  ASSERT_EQ(ids["data"].size(), 3u);
  ASSERT_EQ(ids["family"].size(), 6u);
  ASSERT_EQ(ids["align"].size(), 3u);
  std::map<std::string, std::string> parent;  // family job -> its data job
  for (const auto& j : p.jobs) {
    if (j.stage == "family") parent[j.id] = j.inputs.at(0);
  }
  std::set<std::string> data_seen;
  for (const auto& j : p.jobs) {
    if (j.stage == "all") {
      EXPECT_EQ(j.inputs.size(), 6u) << "without over, fan-in takes every job";
    }
    if (j.stage != "align") continue;
    std::string data;
    int family = 0, other = 0;
    for (const auto& in : j.inputs) {
      if (ids["data"].count(in)) data = in;
    }
    ASSERT_FALSE(data.empty());
    data_seen.insert(data);
    for (const auto& in : j.inputs) {
      if (ids["family"].count(in)) {
        ++family;
        EXPECT_EQ(parent[in], data) << "a family job of another data job";
      }
      if (ids["other"].count(in)) ++other;
    }
    EXPECT_EQ(family, 2);
    EXPECT_EQ(other, 2);
    EXPECT_EQ(j.inputs.size(), 5u);
  }
  EXPECT_EQ(data_seen.size(), 3u);
}

// Scoping reaches grandchildren: `scored` descends from `data` through
// `family`, so each align job gets the 2 x 2 scored jobs of its own data job.
TEST_F(PlanTest, OverScopesFanInThroughIntermediateStages) {
  Plan p = PlanOf(R"(
[experiment]
name = "lineage2"
seed = 5
[[stage]]
name = "data"
kind = "toy.quadratic"
sweep = { seeds = 2 }
[[stage]]
name = "family"
kind = "toy.quadratic"
depends_on = ["data"]
sweep = { over = ["data"], seeds = 2 }
[[stage]]
name = "scored"
kind = "bench.sleep"
depends_on = ["family"]
sweep = { over = ["family"], grid = { seconds = [0.1, 0.2] } }
[[stage]]
name = "align"
kind = "bench.sleep"
depends_on = ["data", "scored"]
sweep = { over = ["data"] }
)");
  auto ids = IdsByStage(p);
  ASSERT_EQ(ids["scored"].size(), 8u);
  std::map<std::string, std::string> parent;  // family or scored job -> its upstream job
  for (const auto& j : p.jobs) {
    if (j.stage == "family" || j.stage == "scored") parent[j.id] = j.inputs.at(0);
  }
  int aligns = 0;
  for (const auto& j : p.jobs) {
    if (j.stage != "align") continue;
    ++aligns;
    std::string data;
    for (const auto& in : j.inputs) {
      if (ids["data"].count(in)) data = in;
    }
    ASSERT_FALSE(data.empty());
    int scored = 0;
    for (const auto& in : j.inputs) {
      if (!ids["scored"].count(in)) continue;
      ++scored;
      EXPECT_EQ(parent[parent[in]], data) << "a scored job of another data job";
    }
    EXPECT_EQ(scored, 4);
  }
  EXPECT_EQ(aligns, 2);
}

TEST_F(PlanTest, SameFileSameIds) {
  Plan a = PlanOf(Pipeline()), b = PlanOf(Pipeline());
  ASSERT_EQ(a.jobs.size(), b.jobs.size());
  for (size_t i = 0; i < a.jobs.size(); ++i) EXPECT_EQ(a.jobs[i].id, b.jobs[i].id);
  EXPECT_EQ(a.ToJson(), b.ToJson());
}

TEST_F(PlanTest, ChangingOneValueChangesExactlyTheDependentIds) {
  auto base = IdsByStage(PlanOf(Pipeline()));
  auto count_changed = [&](const std::map<std::string, std::set<std::string>>& other) {
    std::map<std::string, size_t> changed;
    for (const auto& [stage, ids] : base) {
      for (const auto& id : other.at(stage)) changed[stage] += ids.count(id) ? 0 : 1;
    }
    return changed;
  };
  // Upstream change: A, and everything downstream of it, changes; D does not.
  auto a = count_changed(IdsByStage(PlanOf(Pipeline("2.0"))));
  EXPECT_EQ(a, (std::map<std::string, size_t>{{"A", 2}, {"B", 4}, {"C", 1}, {"D", 0}}));
  // Middle change: B and C change.
  auto b = count_changed(IdsByStage(PlanOf(Pipeline("1.0", "11"))));
  EXPECT_EQ(b, (std::map<std::string, size_t>{{"A", 0}, {"B", 4}, {"C", 1}, {"D", 0}}));
  // Independent change: only D.
  auto d = count_changed(IdsByStage(PlanOf(Pipeline("1.0", "10", "0.25"))));
  EXPECT_EQ(d, (std::map<std::string, size_t>{{"A", 0}, {"B", 0}, {"C", 0}, {"D", 1}}));
  // Writing 1 instead of 1.0 for a float key is the same job.
  EXPECT_EQ(IdsByStage(PlanOf(Pipeline("1"))), base);
}

TEST_F(PlanTest, JobIdFollowsTheDocumentedFormula) {
  Plan p = PlanOf(Pipeline());
  const PlannedJob& j = p.jobs.back();
  // Independent of JobId(): the documented canonical text, hashed.
  std::string canonical = R"({"config":)" + j.config.dump() + R"(,"inputs":[],"kind":")" + j.kind +
                          R"(","seed":)" + std::to_string(j.seed) + R"(,"v":1})";
  EXPECT_EQ(j.id, common::Hash128Hex(canonical));
}

TEST_F(PlanTest, GridZipSeedsCount) {
  Plan p = PlanOf(R"([experiment]
name = "s"
[[stage]]
name = "t"
kind = "toy.quadratic"
[stage.sweep]
seeds = 3
grid = { learning_rate = [0.1, 0.2], curvature = [1.0, 2.0, 3.0] }
zip = { x0 = [1.0, 2.0], target = [0.5, 0.25] }
)");
  ASSERT_EQ(p.jobs.size(), 2u * 3 * 2 * 3);
  std::set<std::string> ids;
  std::set<std::tuple<double, double, double, double>> points;
  std::set<int64_t> seeds;
  for (const auto& j : p.jobs) {
    ids.insert(j.id);
    seeds.insert(j.seed);
    points.insert({j.config["learning_rate"].get<double>(), j.config["curvature"].get<double>(),
                   j.config["x0"].get<double>(), j.config["target"].get<double>()});
    EXPECT_EQ(j.config["x0"].get<double>() == 1.0, j.config["target"].get<double>() == 0.5) << "zip pairs values";
  }
  EXPECT_EQ(ids.size(), p.jobs.size());
  EXPECT_EQ(points.size(), 12u);
  EXPECT_EQ(seeds.size(), 3u) << "replicate seeds are shared across points (paired comparisons)";
}

TEST_F(PlanTest, RandomSweepIsSeededAndInBounds) {
  auto text = [](int seed) {
    return R"([experiment]
name = "r"
seed = )" + std::to_string(seed) + R"(
[[stage]]
name = "t"
kind = "toy.quadratic"
[stage.sweep.random]
samples = 200
learning_rate = { log_uniform = [0.001, 1.0] }
steps = { int_uniform = [5, 9] }
x0 = { uniform = [-1, 1] }
target = { choice = [0.0, 10.0] }
)";
  };
  Plan a = PlanOf(text(1)), b = PlanOf(text(1)), c = PlanOf(text(2));
  ASSERT_EQ(a.jobs.size(), 200u);
  int below_001 = 0;
  std::set<int64_t> steps;
  std::set<double> targets;
  for (size_t i = 0; i < a.jobs.size(); ++i) {
    EXPECT_EQ(a.jobs[i].config, b.jobs[i].config);
    double lr = a.jobs[i].config["learning_rate"];
    EXPECT_GE(lr, 0.001);
    EXPECT_LE(lr, 1.0);
    below_001 += lr < 0.01;
    steps.insert(a.jobs[i].config["steps"].get<int64_t>());
    double x0 = a.jobs[i].config["x0"];
    EXPECT_GE(x0, -1);
    EXPECT_LT(x0, 1);
    targets.insert(a.jobs[i].config["target"].get<double>());
  }
  EXPECT_EQ(steps, (std::set<int64_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(targets, (std::set<double>{0.0, 10.0}));
  // Log-uniform on [1e-3, 1]: P(lr < 1e-2) = 1/3; 200 draws, sd ~ 6.7.
  EXPECT_NEAR(below_001, 200.0 / 3, 30);
  EXPECT_NE(a.jobs[0].config, c.jobs[0].config) << "experiment seed changes the samples";
}

TEST_F(PlanTest, TextAndJsonShowWhatRuns) {
  Plan p = PlanOf(Pipeline());
  std::string text = p.ToText();
  EXPECT_NE(text.find("experiment pipe"), std::string::npos);
  EXPECT_NE(text.find("8 jobs in 4 stages"), std::string::npos) << text;
  EXPECT_NE(text.find(p.jobs[0].id.substr(0, 12)), std::string::npos);
  EXPECT_NE(text.find("config {"), std::string::npos);
  json j = p.ToJson();
  ASSERT_EQ(j["jobs"].size(), 8u);
  EXPECT_EQ(j["jobs"][0]["id"].get<std::string>().size(), 32u);
  EXPECT_TRUE(j["jobs"][0]["config"].is_object());
  EXPECT_EQ(j["jobs"][0]["resources"]["ranks"], 1);
}

}  // namespace
}  // namespace shammie::orchestrator
