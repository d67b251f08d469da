// Recursive transformers end to end under mpirun
// (experiments/configs/recursive-smoke.toml): a vanilla model trains,
// lm.train jobs convert it through the engine's artifacts and the LibTorch
// plugin, and rec.batching simulates batching. Checks the parts that are
// exact whatever the small models learn:
// - a full-rank SVD relaxation starts at the full model's final validation
//   loss (it computes the same function);
// - a zero-initialised LoRA starts at the pure recursive model's loss (same
//   shared layers, b a = 0), and pure recursion starts above the full model;
// - pure tying holds fewer parameters than the full model;
// - lm.loop_decode decodes the same tokens under every batching policy;
// - depth-wise batching reaches the mean-depth bound 1.5 and beats
//   sequence-wise and static batching in tokens per call.
// Label `mpi`.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "storage/result_store.hpp"
#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

using testing::ScratchDir;

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";

TEST(RecursiveRunTest, SmokeStudyConvertsRelaxesAndSimulates) {
  ScratchDir scratch("recursive-smoke");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " SHAMMIE_SOURCE_DIR "/experiments/configs/recursive-smoke.toml --out " +
                                 dir + " --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto analyze = testing::RunCommand(kShammie + " analyze " + dir + " --report " + dir + "/report");
  ASSERT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  EXPECT_GT(testing::ReadFileText(dir + "/report/recursive-val-loss.png").size(), 1000u);
  EXPECT_GT(testing::ReadFileText(dir + "/report/relaxed-loss-vs-parameters.png").size(), 1000u);

  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  auto metric = [&](const std::string& job, const std::string& name) {
    auto m = (*store)->ReadMetric(job, name);
    EXPECT_TRUE(m.ok() && !m->empty()) << job << " " << name;
    return m.ok() ? *m : std::vector<storage::MetricPoint>{};
  };
  // Collected in one pass (runs come in job-id order), checked after.
  std::string full_model;  // the checkpoint, relative to the run directory
  double full_val = NAN, full_params = NAN, stepwise_start = NAN, full_rank_start = NAN, zero_start = NAN;
  std::vector<double> recursive_params;
  std::map<std::string, double> tokens_per_call, stages_per_token;
  std::map<std::string, int> per_stage;
  for (const auto& r : *runs) {
    ++per_stage[r.stage];
    const nlohmann::json c = nlohmann::json::parse(r.config_json);
    if (r.stage == "full") {
      full_model = r.artifacts.count("model") ? r.artifacts.at("model") : "";
      full_val = metric(r.job_id, "val_loss").back().value;
      full_params = metric(r.job_id, "parameters").back().value;
    }
    if (r.stage == "recursive") {
      const auto val = metric(r.job_id, "val_loss");
      ASSERT_FALSE(val.empty());
      EXPECT_EQ(val.front().step, 0);
      if (c["recursive_init"] == "stepwise") stepwise_start = val.front().value;
      recursive_params.push_back(metric(r.job_id, "parameters").back().value);
      EXPECT_LT(val.back().value, val.front().value) << "uptraining improves the converted model";
    }
    if (r.stage == "relaxed") {
      const double start = metric(r.job_id, "val_loss").front().value;
      if (c["lora_rank"] == 32) full_rank_start = start;
      if (c["lora_init"] == "zero") zero_start = start;
    }
    if (r.stage == "decode") {
      EXPECT_EQ(metric(r.job_id, "policies_agree").back().value, 1.0) << "every policy decodes the same tokens";
      EXPECT_LT(metric(r.job_id, "depth_calls").back().value, metric(r.job_id, "static_calls").back().value + 1);
      // Windows of prose (prompt_length): 32 prompts x at most 24 new
      // characters, nothing to grade.
      const double calls = metric(r.job_id, "static_calls").back().value;
      EXPECT_LE(calls * metric(r.job_id, "static_tokens_per_call").back().value, 32 * 24 + 1e-6);
      auto accuracy = (*store)->ReadMetric(r.job_id, "static_accuracy");
      EXPECT_TRUE(!accuracy.ok() || accuracy->empty()) << "prose has no answers to grade";
    }
    if (r.stage == "batching") {
      const std::string policy = c["batching"].get<std::string>();
      tokens_per_call[policy] = metric(r.job_id, "tokens_per_call").back().value;
      stages_per_token[policy] = metric(r.job_id, "stages_per_token").back().value;
    }
  }
  ASSERT_TRUE(std::isfinite(full_val) && std::isfinite(full_params));
  for (double p : recursive_params) EXPECT_LT(p, full_params) << "tying shares the blocks";
  EXPECT_EQ(per_stage["decode"], 2);
  EXPECT_EQ(per_stage["recursive"], 2);
  EXPECT_EQ(per_stage["relaxed"], 3);
  EXPECT_EQ(per_stage["batching"], 3);
  EXPECT_NEAR(full_rank_start, full_val, 1e-4) << "full-rank SVD LoRA reproduces the full model";
  EXPECT_NEAR(zero_start, stepwise_start, 1e-5) << "zero LoRA = pure recursion";
  EXPECT_GT(stepwise_start, full_val);
  EXPECT_NEAR(stages_per_token["depth"], 1.5, 0.02);
  EXPECT_EQ(stages_per_token["depth"], stages_per_token["sequence"]);  // the same tokens at the same depths
  EXPECT_GT(tokens_per_call["depth"], 1.25 * tokens_per_call["sequence"]);
  EXPECT_GT(tokens_per_call["sequence"], tokens_per_call["static"]);

  // scripts/tied_residuals.py reads the full model's checkpoint: Average
  // minimises each tied group's residual energy, so it never exceeds
  // Stepwise's; the leftover after the rank-r SVD falls with r and is zero
  // at full rank (d_model = 32).
  if (testing::RunCommand("/usr/bin/python3 -c 'import torch'").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 has no torch (scripts/setup.sh installs python3-torch)";
  }
  ASSERT_FALSE(full_model.empty());
  auto tied = testing::RunCommand("/usr/bin/python3 " SHAMMIE_SOURCE_DIR "/scripts/tied_residuals.py " + dir + "/" +
                                  full_model + " --loops 2 --ranks 2,8,32 --json");
  ASSERT_EQ(tied.exit_code, 0) << tied.output;
  const size_t json_at = tied.output.find("{\"ranks\"");  // after any warning on stderr
  ASSERT_NE(json_at, std::string::npos) << tied.output;
  const nlohmann::json rows = nlohmann::json::parse(tied.output.substr(json_at))["rows"];
  ASSERT_EQ(rows.size(), 7u);
  for (const auto& row : rows) {
    const auto stepwise = row["stepwise"].get<std::vector<double>>(), average = row["average"].get<std::vector<double>>();
    ASSERT_EQ(stepwise.size(), 4u);
    EXPECT_LE(average[0], stepwise[0] + 1e-12) << row.dump();
    EXPECT_GT(stepwise[0], 0) << row.dump();
    for (const auto* left : {&stepwise, &average}) {
      for (size_t i = 1; i < left->size(); ++i) EXPECT_LE((*left)[i], (*left)[i - 1] + 1e-12) << row.dump();
      EXPECT_NEAR(left->back(), 0, 1e-9) << row.dump();
    }
    EXPECT_EQ(row["tied_cosines"].size(), 2u);  // 4 layers in 2 groups of 2
  }
  auto refused = testing::RunCommand("/usr/bin/python3 " SHAMMIE_SOURCE_DIR "/scripts/tied_residuals.py " + dir +
                                     "/results.h5 2>&1");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("not a shammie checkpoint"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace shammie::orchestrator
