// The Block Transformer end to end under mpirun
// (experiments/configs/block-transformer-smoke.toml): lm.train trains a
// vanilla and a block model on the packed corpus through the LibTorch
// plugin, lm.block_decode decodes each from the engine's artifacts, and
// `shammie analyze` groups the decode runs by their upstream model's
// reported block_length. Checks the parts that are exact whatever the small
// models learn: the allocated KV caches hold the entries the layouts imply
// (vanilla: layers x (prompt + new - 1) x 2d; block: block_layers x (prompt
// blocks + new blocks - 1) x 2D + layers x (prefix + L_B - 1) x 2d), which
// is fewer bytes than the vanilla model's at every prompt length, and both
// models learn. Label `mpi`.
#include <gtest/gtest.h>

#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "storage/result_store.hpp"
#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

const std::string kShammie = std::string(SHAMMIE_BINARY_DIR) + "/orchestrator/shammie";

TEST(BlockTransformerRunTest, SmokeStudyTrainsDecodesAndCountsTheCache) {
  testing::ScratchDir scratch("block-smoke");
  const std::string dir = scratch.File("run");
  auto run = testing::RunCommand(kShammie + " run " SHAMMIE_SOURCE_DIR
                                 "/experiments/configs/block-transformer-smoke.toml --out " + dir + " --progress none");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto analyze = testing::RunCommand(kShammie + " analyze " + dir + " --report " + dir + "/report");
  ASSERT_EQ(analyze.exit_code, 0) << analyze.output;
  std::cout << analyze.output << std::endl;
  EXPECT_NE(analyze.output.find("block_length=4, prompt_length=96"), std::string::npos) << "grouped by a metric";
  EXPECT_GT(testing::ReadFileText(dir + "/report/throughput-vs-batch.png").size(), 1000u);
  // Parameter counts plot in thousands: printed in full, the ticks ran together.
  const std::string plot = testing::ReadFileText(dir + "/report/loss-vs-parameters.gp");
  EXPECT_NE(plot.find("set xlabel 'parameters (thousands)'"), std::string::npos) << plot;
  EXPECT_NE(plot.find("using ($2/1000):3"), std::string::npos) << plot;

  auto store = storage::ResultStore::Open(dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  auto last = [&](const std::string& job, const std::string& name) {
    auto m = (*store)->ReadMetric(job, name);
    EXPECT_TRUE(m.ok() && !m->empty()) << job << " " << name;
    return m.ok() && !m->empty() ? m->back().value : 0.0;
  };
  std::map<std::string, int> per_stage;
  std::map<int64_t, double> vanilla_bytes, block_bytes;  // by prompt length
  for (const auto& r : *runs) {
    ++per_stage[r.stage];
    const nlohmann::json c = nlohmann::json::parse(r.config_json);
    if (r.stage == "train") {
      auto val = (*store)->ReadMetric(r.job_id, "val_loss");
      ASSERT_TRUE(val.ok() && val->size() >= 2);
      EXPECT_LT(val->back().value, val->front().value - 0.3) << "block_length " << c["block_length"];
    }
    if (r.stage != "decode") continue;
    const int64_t prompt = c["prompt_length"].get<int64_t>(), fresh = 16;
    const double bytes = last(r.job_id, "kv_bytes_per_sample");
    EXPECT_GT(last(r.job_id, "decode_tokens_per_second"), 0);
    if (last(r.job_id, "block_length") == 0) {
      EXPECT_EQ(bytes, 4.0 * 2 * (prompt + fresh - 1) * 2 * 32);
      vanilla_bytes[prompt] = bytes;
    } else {
      const int64_t blocks = (prompt + 3) / 4 + (fresh - 1) / 4;
      EXPECT_EQ(last(r.job_id, "block_kv_bytes_per_sample"), 4.0 * 1 * blocks * 2 * 64);
      EXPECT_EQ(last(r.job_id, "token_kv_bytes_per_sample"), 4.0 * 1 * (2 + 4 - 1) * 2 * 32);
      block_bytes[prompt] = bytes;
    }
  }
  EXPECT_EQ(per_stage["train"], 2);
  EXPECT_EQ(per_stage["decode"], 8);
  ASSERT_EQ(vanilla_bytes.size(), 2u);
  ASSERT_EQ(block_bytes.size(), 2u);
  for (const auto& [prompt, bytes] : block_bytes) EXPECT_LT(bytes, vanilla_bytes[prompt]) << prompt;
}

}  // namespace
}  // namespace shammie::orchestrator
