// The Block Transformer in the LibTorch runtime (PAPERS.md §4(f)): the
// forward pass is causal across and within blocks, the random first-block
// padding is a shift the model sees, cached generation (block decoder
// prefill, local token-decoder caches, masked blocks of padding) equals the
// full forward pass, the allocated KV caches hold exactly the entries the
// layout implies, and lm.train / lm.block_decode train, save, reload and
// measure one.
#include <gtest/gtest.h>

#include <map>

#include "tests/test_util.hpp"
#include "tests/workers/kind_config.hpp"
#include "workers/local_context.hpp"
#include "workers/lm_torch.hpp"

namespace shammie::workers::lm {
namespace {

ModelConfig BlockConfig(int64_t block_length = 4, int64_t prefix = 2) {
  ModelConfig c;
  c.d_model = 32;
  c.layers = 2;
  c.heads = 4;
  c.max_len = 64;
  c.block_length = block_length;
  c.block_d_model = 48;
  c.block_layers = 2;
  c.prefix = prefix;
  return c;
}

// A model with weights well away from the 0.02 initialisation.
Transformer Perturbed(const ModelConfig& c, uint64_t seed) {
  Transformer m(c, Tokenizer::VocabSize(), seed);
  torch::NoGradGuard g;
  at::Generator gen = at::detail::createCPUGenerator(seed + 100);
  for (auto& p : m->parameters()) p.add_(torch::randn(p.sizes(), gen) * 0.15);
  m->eval();
  return m;
}

Tensor Hidden(Transformer& m, const std::vector<int64_t>& seq, int64_t pad) {
  torch::NoGradGuard g;
  return BlockForward(*m, torch::tensor(seq).unsqueeze(0), torch::tensor({pad})).squeeze(0);
}

double MaxAbs(const Tensor& t) { return t.numel() == 0 ? 0.0 : t.abs().max().item<double>(); }

const std::vector<int64_t> kSeq = {1, 5, 9, 7, 12, 3, 8, 8, 10, 4, 6, 11, 13};

TEST(BlockTransformerTest, PredictionsDependOnEarlierTokensOnly) {
  for (int64_t len : {1, 2, 4}) {
    Transformer m = Perturbed(BlockConfig(len), 1);
    for (int64_t pad = 0; pad < len; ++pad) {
      const Tensor h = Hidden(m, kSeq, pad);
      ASSERT_EQ(h.size(0), static_cast<int64_t>(kSeq.size()));
      for (size_t t0 : {1u, 4u, 6u, 12u}) {
        std::vector<int64_t> changed = kSeq;
        changed[t0] = 14;
        const Tensor g = Hidden(m, changed, pad);
        const auto at = static_cast<int64_t>(t0);
        EXPECT_LT(MaxAbs(g.narrow(0, 0, at) - h.narrow(0, 0, at)), 1e-6) << len << " " << pad << " " << t0;
        // The changed token itself is read by its own position's prediction.
        EXPECT_GT(MaxAbs(g.narrow(0, at, h.size(0) - at) - h.narrow(0, at, h.size(0) - at)), 1e-4);
      }
    }
  }
}

TEST(BlockTransformerTest, EarlierBlocksReachABlockOnlyThroughItsContext) {
  Transformer m = Perturbed(BlockConfig(4), 2);
  torch::NoGradGuard g;
  // Two rows that differ in block 0 only; block 2 is decoded from row 0's
  // context with row 1's tokens, and must equal row 0's own prediction.
  std::vector<int64_t> a(kSeq.begin(), kSeq.begin() + 12), b = a;
  b[1] = 14;
  b[3] = 2;
  const Tensor y = torch::stack({torch::tensor(a), torch::tensor(b)});
  const Tensor contexts = BlockContexts(*m, y);  // [2, 3, block_d_model]
  ASSERT_EQ(contexts.sizes(), (std::vector<int64_t>{2, 3, 48}));
  EXPECT_GT(MaxAbs(contexts[0][2] - contexts[1][2]), 1e-4);
  EXPECT_LT(MaxAbs(contexts[0][0] - contexts[1][0]), 1e-9);  // block 0's context is the learned start
  const Tensor prefix = m->expand(contexts.select(1, 2)).view({2, m->config.prefix, m->config.d_model});
  EXPECT_EQ(prefix.sizes(), (std::vector<int64_t>{2, 2, 32}));
  const Tensor from_a = DecodeBlocks(*m, contexts[0][2].unsqueeze(0), y[1].narrow(0, 8, 4).unsqueeze(0));
  const Tensor full = BlockForward(*m, y, Tensor());
  // Row 0's positions 7..10 predict slots 8..11 (block 2).
  EXPECT_LT(MaxAbs(from_a.squeeze(0) - full[0].narrow(0, 7, 4)), 1e-5);  // another batch shape: float rounding
  EXPECT_GT(MaxAbs(from_a.squeeze(0) - full[1].narrow(0, 7, 4)), 1e-4);
}

TEST(BlockTransformerTest, TrainingPaddingIsDeterministicAndCoversEveryShift) {
  const Tensor tokens = torch::randint(3, 20, {256, 9}, torch::kInt64);
  const Tensor pad = TrainingBlockPad(tokens, 4);
  EXPECT_TRUE(torch::equal(pad, TrainingBlockPad(tokens, 4)));
  EXPECT_EQ(pad.min().item<int64_t>(), 0);
  EXPECT_EQ(pad.max().item<int64_t>(), 3);
  // Padding shifts the block boundaries, so it changes the prediction.
  Transformer m = Perturbed(BlockConfig(4), 3);
  EXPECT_GT(MaxAbs(Hidden(m, kSeq, 0) - Hidden(m, kSeq, 1)), 1e-4);
  // forward() pads in training mode only.
  torch::NoGradGuard g;
  const Tensor rows = torch::tensor(kSeq).unsqueeze(0);
  EXPECT_LT(MaxAbs(m->forward(rows).squeeze(0) - Hidden(m, kSeq, 0)), 1e-9);
  m->train();
  const int64_t r = TrainingBlockPad(rows, 4).item<int64_t>();
  EXPECT_LT(MaxAbs(m->forward(rows).squeeze(0) - Hidden(m, kSeq, r)), 1e-9);
}

TEST(BlockTransformerTest, CachedGenerationEqualsTheFullForwardPass) {
  for (int64_t len : {1, 3, 4}) {
    Transformer m = Perturbed(BlockConfig(len, len == 3 ? 1 : 2), 4);
    // Lengths 5, 8 and 11: different first-block padding, and whole blocks
    // of padding masked in the shorter rows.
    const std::vector<std::vector<int>> prompts = {
        {1, 5, 9, 7, 12}, {1, 3, 8, 8, 10, 4, 6, 11}, {1, 9, 9, 4, 5, 6, 7, 12, 13, 3, 10}};
    SampleOptions o;
    o.temperature = 0;
    o.max_new_tokens = 10;  // crosses several blocks
    GenerationStats stats;
    const std::vector<Sampled> out = Generate(m, prompts, o, &stats);
    ASSERT_EQ(out.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(out[i].tokens.size(), 10u);
      std::vector<int64_t> seq(prompts[i].begin(), prompts[i].end());
      seq.insert(seq.end(), out[i].tokens.begin(), out[i].tokens.end() - 1);
      const auto p = static_cast<int64_t>(prompts[i].size());
      const int64_t pad = (len - p % len) % len;
      torch::NoGradGuard g;
      const Tensor logp = torch::log_softmax(m->Logits(Hidden(m, seq, pad)).to(torch::kFloat64), -1);
      for (int64_t j = 0; j < 10; ++j) {
        const int tok = out[i].tokens[static_cast<size_t>(j)];
        EXPECT_EQ(logp[p - 1 + j].argmax().item<int64_t>(), tok) << len << " row " << i << " token " << j;
        EXPECT_NEAR(logp[p - 1 + j][tok].item<double>(), out[i].logprobs[static_cast<size_t>(j)], 1e-5);
      }
    }
    // The caches: the block decoder holds the prompt blocks (padded rows
    // included) and every finished block but the last; the token decoder's
    // local cache the prefix and the block's tokens but its last.
    const int64_t blocks = (11 + len - 1) / len + (10 - 1) / len;
    const ModelConfig& c = m->config;
    EXPECT_EQ(stats.block_kv_entries, c.block_layers * blocks * 2 * c.block_d_model) << len;
    EXPECT_EQ(stats.token_kv_entries, c.layers * (c.prefix + std::min<int64_t>(len, 10) - 1) * 2 * c.d_model) << len;
    EXPECT_EQ(stats.kv_entries, stats.block_kv_entries + stats.token_kv_entries);
  }
}

TEST(BlockTransformerTest, ResponseLogProbScoresSamplesInTheirGenerationLayout) {
  // What RL kinds (rm.rl, pav.rl) compare: the sampler's log-probabilities
  // and the teacher-forced ones, in training mode (with gradients) too.
  Transformer m = Perturbed(BlockConfig(4), 6);
  const std::vector<std::vector<int>> prompts = {{1, 5, 9, 7, 12}, {1, 3, 8}, {1, 9, 9, 4, 5, 6, 7, 12}};
  SampleOptions o;
  o.temperature = 1.0;
  o.max_new_tokens = 9;
  o.stop_tokens = {Tokenizer::kEos, 7};
  o.seed = 3;
  const std::vector<Sampled> out = Generate(m, prompts, o);
  for (bool training : {false, true}) {
    training ? m->train() : m->eval();
    const Tensor scored = ResponseLogProb(m, prompts, out);
    for (size_t i = 0; i < prompts.size(); ++i) {
      double sampled = 0;
      for (double lp : out[i].logprobs) sampled += lp;
      EXPECT_NEAR(scored[static_cast<int64_t>(i)].item<double>(), sampled, 1e-4) << training << " row " << i;
      if (out[i].stopped) {
        EXPECT_TRUE(out[i].tokens.back() == Tokenizer::kEos || out[i].tokens.back() == 7);
      }
    }
  }
}

// As in the token-by-token path, a row near max_len does not cut the
// others short: each writes min(max_new_tokens, max_len - its length), the
// tokens it writes alone.
TEST(BlockTransformerTest, EachRowHasItsOwnTokenBudget) {
  Transformer m = Perturbed(BlockConfig(4), 7);  // max_len 64
  std::vector<int> longest = {1};
  for (int t = 0; t < 59; ++t) longest.push_back(3 + t % 11);  // 60 tokens: room for 4
  const std::vector<std::vector<int>> prompts = {{1, 5, 9, 7, 12}, longest, {1, 3, 8}};
  SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = 20;
  const std::vector<Sampled> out = Generate(m, prompts, o);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].tokens.size(), 20u);
  EXPECT_EQ(out[1].tokens.size(), 4u);
  EXPECT_EQ(out[2].tokens.size(), 20u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_FALSE(out[i].stopped);
    EXPECT_EQ(Generate(m, {prompts[i]}, o)[0].tokens, out[i].tokens) << "row " << i;
  }
}

TEST(BlockTransformerTest, VanillaCacheHoldsEveryPositionButTheLast) {
  ModelConfig c = BlockConfig();
  c.block_length = 0;
  Transformer m = Perturbed(c, 5);
  SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = 7;
  GenerationStats stats;
  Generate(m, {{1, 5, 9, 7, 12}, {1, 3, 8}}, o, &stats);
  // Left padding of the shorter prompt included: 5 prompt slots + 6 fed tokens.
  EXPECT_EQ(stats.kv_entries, c.layers * (5 + 7 - 1) * 2 * c.d_model);
  EXPECT_EQ(stats.block_kv_entries, 0);
  EXPECT_GT(stats.kv_reads, 0);
}

TEST(BlockTransformerTest, LmTrainLearnsAPackedCorpusAndLmBlockDecodeMeasuresIt) {
  testing::ScratchDir dir("block-train");
  const nlohmann::json base = {{"task", "reverse"}, {"length", 4},     {"alphabet", 5},  {"d_model", 32},
                               {"heads", 2},        {"layers", 2},     {"max_len", 64},  {"eval_every", 30},
                               {"eval_examples", 32}, {"batch", 8},    {"warmup", 5},    {"packed", true},
                               {"window", 32},      {"steps", 60}};
  auto train = [&](nlohmann::json extra, const std::string& id) {
    nlohmann::json c = base;
    for (auto& [k, val] : extra.items()) c[k] = val;
    auto ctx = std::make_unique<LocalJobContext>(id, testing::KindConfig("lm.train", c), 4);
    ctx->set_artifact_dir(dir.File(id));
    const common::Status s = RunLmTrain(*ctx);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return ctx;
  };
  auto block = train({{"block_length", 4}, {"block_d_model", 32}, {"block_layers", 1}}, "block");
  auto vanilla = train({}, "vanilla");
  for (auto* ctx : {block.get(), vanilla.get()}) {
    const auto& curve = ctx->metrics().at("val_loss");
    EXPECT_LT(curve.back().value, curve.front().value - 0.3);  // starts near ln(vocab)
  }
  const Artifact* model = nullptr;
  for (const auto& a : block->recorded()) {
    if (a.name == "model") model = &a;
  }
  ASSERT_NE(model, nullptr);
  auto loaded = LoadModelFile(model->path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->checkpoint.model.block_length, 4);
  EXPECT_EQ(loaded->model->block_blocks.size(), 1u);

  std::map<std::string, std::unique_ptr<LocalJobContext>> decoded;
  for (auto* up : {block.get(), vanilla.get()}) {
    auto ctx = std::make_unique<LocalJobContext>(
        "d", testing::KindConfig("lm.block_decode", {{"batch", 2}, {"prompt_length", 24}, {"new_tokens", 9},
                                                     {"repeats", 1}}),
        5);
    ctx->set_inputs(up->recorded());
    const common::Status s = RunLmBlockDecode(*ctx);
    ASSERT_TRUE(s.ok()) << s.ToString();
    decoded[up == block.get() ? "block" : "vanilla"] = std::move(ctx);
  }
  auto metric = [&](const std::string& which, const std::string& name) {
    return decoded.at(which)->metrics().at(name).back().value;
  };
  // Vanilla: 2 layers x (24 + 9 - 1) positions x 2 x 32 floats.
  EXPECT_EQ(metric("vanilla", "kv_bytes_per_sample"), 4.0 * 2 * 32 * 2 * 32);
  EXPECT_EQ(metric("vanilla", "kv_bytes_formula"), 4.0 * 2 * 33 * 2 * 32);
  // Block: 1 layer x (6 prompt blocks + 2 fed) x 2 x 32, plus 2 x (2 + 3) x 2 x 32.
  EXPECT_EQ(metric("block", "block_kv_bytes_per_sample"), 4.0 * 1 * 8 * 2 * 32);
  EXPECT_EQ(metric("block", "token_kv_bytes_per_sample"), 4.0 * 2 * 5 * 2 * 32);
  EXPECT_LT(metric("block", "kv_reads_per_token"), metric("vanilla", "kv_reads_per_token"));
  EXPECT_GT(metric("block", "decode_tokens_per_second"), 0);

  // What a Block Transformer refuses.
  nlohmann::json bad = base;
  bad["block_length"] = 4;
  bad["block_d_model"] = 30;
  bad["block_layers"] = 1;
  LocalJobContext refused("bad", testing::KindConfig("lm.train", bad), 4);
  const common::Status s = RunLmTrain(refused);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << s.ToString();
  bad["block_d_model"] = 64;
  bad["block_length"] = 64;  // with prefix 2, past max_len 64
  LocalJobContext too_long("long", testing::KindConfig("lm.train", bad), 4);
  const common::Status s2 = RunLmTrain(too_long);
  EXPECT_EQ(s2.code(), common::StatusCode::kInvalidArgument) << s2.ToString();
  EXPECT_NE(s2.message().find("max_len"), std::string::npos) << s2.ToString();
  EXPECT_FALSE(ExportSafetensors(loaded->model, dir.File("x.safetensors")).ok());
}

}  // namespace
}  // namespace shammie::workers::lm
