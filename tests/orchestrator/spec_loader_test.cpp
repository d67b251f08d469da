#include "orchestrator/spec_loader.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

using nlohmann::json;

class SpecLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override { workers::RegisterBuiltinKinds(kinds_); }
  LoadResult Load(const std::string& text, const std::string& path = "exp.toml") {
    return LoadExperimentFromString(text, path, kinds_);
  }
  static std::vector<std::string> Lines(const LoadResult& r) {
    std::vector<std::string> out;
    for (const auto& d : r.errors) out.push_back(d.ToString());
    return out;
  }
  workers::KindRegistry kinds_;
};

constexpr const char* kMinimal = R"(
[experiment]
name = "demo"

[[stage]]
name = "train"
kind = "toy.quadratic"
)";

TEST_F(SpecLoaderTest, MinimalFileGetsDefaults) {
  auto r = Load(kMinimal);
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(Lines(r));
  const ExperimentSpec& spec = *r.spec;
  EXPECT_EQ(spec.name, "demo");
  EXPECT_EQ(spec.seed, 0);
  EXPECT_EQ(spec.output, "runs/demo");
  ASSERT_EQ(spec.stages.size(), 1u);
  const Stage& s = spec.stages[0];
  EXPECT_EQ(s.config["learning_rate"], 0.1);
  EXPECT_EQ(s.config["steps"], 100);
  EXPECT_EQ(s.resources.ranks, 1);
  EXPECT_FALSE(s.resources.time_limit_s.has_value());
  EXPECT_EQ(s.retry.attempts, 1);
  EXPECT_EQ(s.retry.on.size(), 4u);
  EXPECT_EQ(s.sweep.seeds, 1);
  EXPECT_EQ(s.location.line, 5);
  EXPECT_EQ(spec.spec_hash.size(), 32u);
}

TEST_F(SpecLoaderTest, CanonicalTextIgnoresFormattingAndComments) {
  auto a = Load(kMinimal);
  auto b = Load("# a comment\n[experiment]\nname='demo'   # trailing\n[[stage]]\nkind = \"toy.quadratic\"\nname = \"train\"\n");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a.spec->canonical_text, b.spec->canonical_text);
  EXPECT_EQ(a.spec->spec_hash, b.spec->spec_hash);
  auto c = Load(std::string(kMinimal) + "[stage.config]\nsteps = 5\n");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a.spec->spec_hash, c.spec->spec_hash);
}

TEST_F(SpecLoaderTest, ResourcesRetryAndSweepAreTyped) {
  auto r = Load(std::string(kMinimal) + R"(
[stage.resources]
ranks = 4
gpus = 1
time_limit = "1h30m"
memory = "4G"
[stage.retry]
attempts = 3
backoff = 0.5
on = ["aborted"]
[stage.sweep]
seeds = 2
[stage.sweep.grid]
learning_rate = [0.1, 1]
[stage.sweep.zip]
x0 = [1.0, 2.0, 3.0]
target = [0.0, 0.5, 1.0]
[stage.sweep.random]
samples = 4
curvature = { log_uniform = [0.1, 10] }
steps = { int_uniform = [10, 20] }
)");
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(Lines(r));
  const Stage& s = r.spec->stages[0];
  EXPECT_EQ(s.resources.ranks, 4);
  EXPECT_EQ(s.resources.gpus, 1);
  EXPECT_EQ(s.resources.time_limit_s, 5400);
  EXPECT_EQ(s.resources.memory_bytes, 4LL << 30);
  EXPECT_EQ(s.retry.attempts, 3);
  EXPECT_EQ(s.retry.on, std::vector<common::StatusCode>{common::StatusCode::kAborted});
  ASSERT_EQ(s.sweep.grid.size(), 1u);
  EXPECT_EQ(s.sweep.grid[0].values, (std::vector<json>{json(0.1), json(1.0)})) << "ints become floats for float keys";
  ASSERT_EQ(s.sweep.zip.size(), 2u);
  EXPECT_EQ(s.sweep.zip[0].key, "target") << "axes sorted by key";
  EXPECT_EQ(s.sweep.random_samples, 4);
  ASSERT_EQ(s.sweep.random.size(), 2u);
  EXPECT_EQ(s.sweep.PointsPerUpstream(), 2 * 3 * 4 * 2);
}

TEST_F(SpecLoaderTest, ReportsEveryErrorInFileOrder) {
  auto r = Load(R"([experiment]
name = "demo"
sede = 3

[[stage]]
name = "train"
kind = "toy.quadratic"
[stage.config]
learnig_rate = 0.1
steps = "many"
)");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Lines(r), (std::vector<std::string>{
                          "exp.toml:3:1: experiment.sede: unknown key (did you mean `seed`?)",
                          "exp.toml:9:1: stage.train.config.learnig_rate: unknown key (did you mean `learning_rate`?)",
                          "exp.toml:10:9: stage.train.config.steps: expected an integer, got string \"many\"",
                      }));
}

TEST_F(SpecLoaderTest, StagesAreOrderedByDependencies) {
  auto r = Load(R"([experiment]
name = "dag"
[[stage]]
name = "eval"
kind = "bench.noop"
depends_on = ["train", "prep"]
[[stage]]
name = "train"
kind = "bench.noop"
depends_on = ["prep"]
[[stage]]
name = "prep"
kind = "bench.noop"
)");
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(Lines(r));
  std::vector<std::string> order;
  for (const auto& s : r.spec->stages) order.push_back(s.name);
  EXPECT_EQ(order, (std::vector<std::string>{"prep", "train", "eval"}));
}

TEST_F(SpecLoaderTest, CycleIsNamed) {
  auto r = Load(R"([experiment]
name = "dag"
[[stage]]
name = "a"
kind = "bench.noop"
depends_on = ["b"]
[[stage]]
name = "b"
kind = "bench.noop"
depends_on = ["a"]
)");
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].ToString(), "exp.toml:10:15: stage.b.depends_on: dependency cycle: a -> b -> a");
}

TEST_F(SpecLoaderTest, ExtendsMergesTablesAndStagesByName) {
  testing::ScratchDir dir("extends");
  testing::WriteFile(dir.File("base.toml"), R"([experiment]
name = "base"
seed = 1
[[stage]]
name = "train"
kind = "toy.quadratic"
[stage.config]
steps = 50
x0 = 2.0
[stage.resources]
ranks = 2
)");
  testing::WriteFile(dir.File("sub/child.toml"), R"(extends = "../base.toml"
[experiment]
name = "child"
[[stage]]
name = "train"
[stage.config]
steps = 75
[[stage]]
name = "eval"
kind = "bench.noop"
depends_on = ["train"]
)");
  auto r = LoadExperiment(dir.File("sub/child.toml"), kinds_);
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(Lines(r));
  const auto& spec = *r.spec;
  EXPECT_EQ(spec.name, "child");
  EXPECT_EQ(spec.seed, 1) << "kept from the base";
  ASSERT_EQ(spec.stages.size(), 2u);
  EXPECT_EQ(spec.stages[0].kind, "toy.quadratic") << "merged by name";
  EXPECT_EQ(spec.stages[0].config["steps"], 75) << "child overrides";
  EXPECT_EQ(spec.stages[0].config["x0"], 2.0) << "base key kept";
  EXPECT_EQ(spec.stages[0].resources.ranks, 2);
  EXPECT_EQ(spec.files.size(), 2u);
  EXPECT_EQ(spec.canonical_text.find("extends"), std::string::npos);
}

TEST_F(SpecLoaderTest, ExtendsErrorsPointIntoTheFileThatWroteTheValue) {
  testing::ScratchDir dir("extends-errors");
  testing::WriteFile(dir.File("base.toml"), "[experiment]\nname = \"base\"\nseed = \"x\"\n");
  testing::WriteFile(dir.File("child.toml"),
                     "extends = \"base.toml\"\n[[stage]]\nname = \"t\"\nkind = \"toy.quadratic\"\n"
                     "[stage.config]\nsteps = -1\n");
  auto r = LoadExperiment(dir.File("child.toml"), kinds_);
  ASSERT_EQ(r.errors.size(), 2u) << ::testing::PrintToString(Lines(r));
  EXPECT_EQ(r.errors[0].where.file, dir.File("base.toml"));
  EXPECT_EQ(r.errors[0].key, "experiment.seed");
  EXPECT_EQ(r.errors[0].where.line, 3);
  EXPECT_EQ(r.errors[1].where.file, dir.File("child.toml"));
  EXPECT_EQ(r.errors[1].where.line, 6);
}

TEST_F(SpecLoaderTest, EmptyExtendsListIsANoOp) {
  auto r = Load(std::string("extends = []\n") + kMinimal);
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(Lines(r));
  EXPECT_EQ(r.spec->canonical_text, Load(kMinimal).spec->canonical_text);
}

TEST_F(SpecLoaderTest, MissingFileIsAnError) {
  auto r = LoadExperiment("/nonexistent/exp.toml", kinds_);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].ToString(), "/nonexistent/exp.toml: cannot read experiment file: No such file or directory");
}

TEST_F(SpecLoaderTest, EveryShippedConfigIsValid) {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(SHAMMIE_SOURCE_DIR "/experiments/configs")) {
    if (entry.path().extension() != ".toml") continue;
    auto r = LoadExperiment(entry.path().string(), kinds_);
    EXPECT_TRUE(r.ok()) << entry.path() << ": " << ::testing::PrintToString(Lines(r));
    ++n;
  }
  EXPECT_GE(n, 2u);
}

}  // namespace
}  // namespace shammie::orchestrator
