// Shards of a plan for job arrays (orchestrator/shard.hpp): disjoint, whole,
// never cutting a dependency, balanced, deterministic.
#include "orchestrator/shard.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "orchestrator/spec_loader.hpp"

namespace shammie::orchestrator {
namespace {

Plan PlanOf(const std::string& text) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  auto loaded = LoadExperimentFromString(text, "exp.toml", kinds);
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].ToString());
  auto plan = BuildPlan(*loaded.spec);
  EXPECT_TRUE(plan.ok());
  return *plan;
}

// 12 independent sweep points, and 3 chains train -> eval (fan-out with `over`).
const char* kSpec = R"([experiment]
name = "s"

[[stage]]
name = "sweep"
kind = "toy.quadratic"
sweep = { grid = { learning_rate = [0.1, 0.2, 0.3, 0.4] }, seeds = 3 }

[[stage]]
name = "train"
kind = "toy.quadratic"
config = { steps = 7 }
sweep = { seeds = 3 }

[[stage]]
name = "eval"
kind = "bench.noop"
depends_on = ["train"]
sweep = { over = ["train"], seeds = 2 }
)";

TEST(ShardTest, ShardsPartitionThePlanWithoutCuttingDependencies) {
  const Plan plan = PlanOf(kSpec);
  ASSERT_EQ(plan.jobs.size(), 12u + 3u + 6u);
  EXPECT_EQ(IndependentParts(plan), 12 + 3);
  for (int64_t count : {1, 2, 4, 7, 15, 20}) {
    std::map<std::string, int64_t> shard_of;
    std::vector<size_t> sizes;
    for (int64_t i = 0; i < count; ++i) {
      const Plan shard = ShardOf(plan, i, count);
      sizes.push_back(shard.jobs.size());
      std::set<std::string> here;
      for (const auto& j : shard.jobs) {
        EXPECT_TRUE(shard_of.emplace(j.id, i).second) << j.id << " in two shards";
        here.insert(j.id);
      }
      for (const auto& j : shard.jobs) {
        for (const auto& in : j.inputs) EXPECT_TRUE(here.count(in)) << "input of " << j.Label() << " in another shard";
      }
    }
    EXPECT_EQ(shard_of.size(), plan.jobs.size()) << count;
    // Balanced: components are 1 or 3 jobs, so no shard exceeds another by more than 3.
    const auto [lo, hi] = std::minmax_element(sizes.begin(), sizes.end());
    if (count <= 15) {
      EXPECT_LE(*hi - *lo, 3u) << count;
    }
  }
  // Deterministic.
  EXPECT_EQ(ShardOf(plan, 2, 4).jobs.size(), ShardOf(plan, 2, 4).jobs.size());
  EXPECT_EQ(ShardOf(plan, 2, 4).jobs.front().id, ShardOf(plan, 2, 4).jobs.front().id);
}

// An adaptive sweep's controller proposes from all of its results: its
// initial design stays in one shard even without dependencies.
TEST(ShardTest, AdaptiveSweepsStayInOneShard) {
  const Plan plan = PlanOf(R"([experiment]
name = "s"

[[stage]]
name = "search"
kind = "toy.quadratic"
[stage.sweep]
strategy = "bo"
budget = 20
objectives = ["loss"]
random = { samples = 6, x0 = { uniform = [0.0, 1.0] } }

[[stage]]
name = "sweep"
kind = "toy.quadratic"
sweep = { grid = { learning_rate = [0.1, 0.2, 0.3] } }
)");
  ASSERT_EQ(plan.jobs.size(), 9u);
  EXPECT_EQ(IndependentParts(plan), 1 + 3);
  size_t holding = 0;
  for (int64_t i = 0; i < 4; ++i) {
    const Plan shard = ShardOf(plan, i, 4);
    const auto n = std::count_if(shard.jobs.begin(), shard.jobs.end(), [](const PlannedJob& j) { return j.stage == "search"; });
    EXPECT_TRUE(n == 0 || n == 6) << n;
    holding += n == 6 ? 1 : 0;
    EXPECT_EQ(shard.unsplit_stages, std::vector<std::string>{"search"});
  }
  EXPECT_EQ(holding, 1u);
}

TEST(ShardTest, ParseShard) {
  auto s = ParseShard("3/8");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->index, 3);
  EXPECT_EQ(s->count, 8);
  for (const char* bad : {"8/8", "-1/4", "1", "a/b", "1/0", "", "1/2/3", "1/"}) {
    EXPECT_FALSE(ParseShard(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace shammie::orchestrator
