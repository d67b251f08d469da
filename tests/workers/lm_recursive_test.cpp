// Recursive and relaxed recursive transformers in the LibTorch runtime
// (PAPERS.md §1(f)): conversion takes the right layers, pure tying divides
// the blocks' parameters by the loop count, the truncated SVD LoRA meets
// Eckart-Young and at full rank reproduces the vanilla model's logits, the
// KV cache, the unrolled safetensors export and the unrolled vanilla model
// compute the same function, and lm.train converts and uptrains (with
// distillation) from an upstream job, and unrolls a recursive one.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "tests/test_util.hpp"
#include "tests/workers/kind_config.hpp"
#include "workers/local_context.hpp"
#include "workers/lm_torch.hpp"
#include "workers/recursive.hpp"

namespace shammie::workers::lm {
namespace {

ModelConfig Config(int64_t layers, int64_t loops = 1, const std::string& tying = "cycle", int64_t rank = 0) {
  ModelConfig c;
  c.d_model = 32;
  c.layers = layers;
  c.heads = 4;
  c.max_len = 40;
  c.loops = loops;
  c.tying = tying;
  c.lora_rank = rank;
  return c;
}

// A vanilla model with weights well away from the 0.02 initialisation.
Transformer Vanilla(int64_t layers, uint64_t seed) {
  Transformer m(Config(layers), Tokenizer::VocabSize(), seed);
  torch::NoGradGuard g;
  at::Generator gen = at::detail::createCPUGenerator(seed + 100);
  for (auto& p : m->parameters()) p.add_(torch::randn(p.sizes(), gen) * 0.15);
  m->eval();
  return m;
}

Transformer Converted(Transformer& from, const ModelConfig& c, const std::string& init, const std::string& lora_init) {
  Transformer to(c, Tokenizer::VocabSize(), 99);
  const common::Status s = ConvertToRecursive(*from, *to, init, lora_init);
  EXPECT_TRUE(s.ok()) << s.ToString();
  to->eval();
  return to;
}

Tensor Logits(Transformer& m, const std::vector<int64_t>& seq) {
  torch::NoGradGuard g;
  return m->Logits(m->forward(torch::tensor(seq).unsqueeze(0))).squeeze(0).to(torch::kFloat64);
}

const std::vector<int64_t> kSeq = {1, 5, 9, 7, 12, 3, 8, 8, 10, 4, 6, 11};

int64_t BlockParameters(Transformer& m) {
  int64_t n = 0;
  for (auto& b : m->blocks) {
    for (auto& p : b->parameters()) n += p.numel();
  }
  return n;
}

double MaxAbs(const Tensor& t) { return t.abs().max().item<double>(); }

TEST(RecursiveModelTest, ConversionTakesTheSourceLayersAndTyingDividesTheParameters) {
  Transformer v = Vanilla(6, 1);
  Transformer step = Converted(v, Config(6, 2, "cycle"), "stepwise", "svd");  // sources 0, 2, 5
  ASSERT_EQ(step->blocks.size(), 3u);
  EXPECT_EQ(step->layer_map, (std::vector<int64_t>{0, 1, 2, 0, 1, 2}));
  const int64_t picked[3] = {0, 2, 5};
  for (int k = 0; k < 3; ++k) {
    for (int i = 0; i < 7; ++i) {
      EXPECT_TRUE(torch::equal(step->blocks[static_cast<size_t>(k)]->Projection(i)->weight,
                               v->blocks[static_cast<size_t>(picked[k])]->Projection(i)->weight))
          << k << " " << i;
    }
  }
  Transformer avg = Converted(v, Config(6, 3, "sequence"), "average", "svd");  // groups {0,1,2}, {3,4,5}
  Tensor mean = (v->blocks[3]->w1->weight + v->blocks[4]->w1->weight + v->blocks[5]->w1->weight) / 3.0;
  EXPECT_LT(MaxAbs(avg->blocks[1]->w1->weight - mean), 1e-6);
  Tensor norm_mean = (v->blocks[0]->attn_norm->weight + v->blocks[1]->attn_norm->weight + v->blocks[2]->attn_norm->weight) / 3.0;
  EXPECT_LT(MaxAbs(avg->blocks[0]->attn_norm->weight - norm_mean), 1e-6);
  // Lower: the first K layers; embedding and final norm copied.
  Transformer low = Converted(v, Config(6, 2, "sequence"), "lower", "svd");
  EXPECT_TRUE(torch::equal(low->blocks[2]->wv->weight, v->blocks[2]->wv->weight));
  EXPECT_TRUE(torch::equal(low->embed->weight, v->embed->weight));
  EXPECT_TRUE(torch::equal(low->norm->weight, v->norm->weight));

  // Pure tying divides the blocks' parameters by exactly B; LoRA adds
  // r (d_in + d_out) per projection per position (+ 2 d norm deltas).
  EXPECT_EQ(BlockParameters(v), 2 * BlockParameters(step));
  EXPECT_EQ(BlockParameters(v), 3 * BlockParameters(avg));
  const int64_t d = 32, ff = v->config.d_ff, r = 4;
  Transformer relaxed(Config(6, 2, "cycle", r), Tokenizer::VocabSize(), 3);
  int64_t lora = 0;
  for (auto& p : relaxed->named_parameters()) {
    if (p.key().rfind("lora", 0) == 0) lora += p.value().numel();
  }
  const int64_t per_position = 4 * rec::LoraParameters(r, d, d) + 2 * rec::LoraParameters(r, d, ff) +
                               rec::LoraParameters(r, ff, d) + 2 * d;
  EXPECT_EQ(lora, 6 * per_position);

  // Mismatched dimensions and non-vanilla sources are refused.
  Transformer wide(Config(6, 2), Tokenizer::VocabSize() + 1, 5);
  EXPECT_FALSE(ConvertToRecursive(*v, *wide, "stepwise", "svd").ok());
  EXPECT_FALSE(ConvertToRecursive(*step, *avg, "stepwise", "svd").ok());
  EXPECT_FALSE(ConvertToRecursive(*v, *low, "upper", "svd").ok());
}

TEST(RecursiveModelTest, SvdLoraMeetsEckartYoungAndFullRankReproducesTheModel) {
  Transformer v = Vanilla(6, 2);
  const Tensor original = Logits(v, kSeq);
  double previous = std::numeric_limits<double>::infinity();
  for (int64_t r : {1, 4, 16, 32}) {
    Transformer m = Converted(v, Config(6, 2, "cycle", r), "average", "svd");
    torch::NoGradGuard g;
    // ||W_l - W_eff||_F^2 equals the residual's tail singular values squared.
    for (size_t l : {size_t{0}, size_t{4}}) {
      for (int i : {0, 4, 6}) {
        Tensor w = v->blocks[l]->Projection(i)->weight.to(torch::kFloat64);
        Tensor residual = w - m->blocks[static_cast<size_t>(m->layer_map[l])]->Projection(i)->weight.to(torch::kFloat64);
        Tensor sv = torch::linalg_svdvals(residual);
        const double tail = sv.narrow(0, r, sv.size(0) - r).pow(2).sum().item<double>();
        const double err = (w - EffectiveWeight(*m, l, i).to(torch::kFloat64)).pow(2).sum().item<double>();
        EXPECT_NEAR(err, tail, 1e-5 * (1 + tail)) << "rank " << r << " position " << l << " projection " << i;
      }
    }
    // The weights approach the original's with rank (the function need not,
    // monotonically: the network is not linear in them); full rank is exact.
    const double weight_gap = (v->blocks[4]->w2->weight - EffectiveWeight(*m, 4, 6)).pow(2).sum().item<double>();
    EXPECT_LT(weight_gap, previous + 1e-9) << "rank " << r;
    previous = weight_gap;
    if (r == 32) {
      EXPECT_LT(MaxAbs(Logits(m, kSeq) - original), 1e-5) << "full rank";
    }
  }
  // A zero-initialised LoRA computes the pure recursive model's function.
  Transformer pure = Converted(v, Config(6, 3, "sequence"), "stepwise", "svd");
  Transformer zero = Converted(v, Config(6, 3, "sequence", 8), "stepwise", "zero");
  EXPECT_LT(MaxAbs(Logits(zero, kSeq) - Logits(pure, kSeq)), 1e-6);
  EXPECT_GT(MaxAbs(Logits(pure, kSeq) - original), 1e-2);  // and that one differs from the original
}

TEST(RecursiveModelTest, CachedGenerationAndTheUnrolledExportComputeTheSameFunction) {
  Transformer v = Vanilla(4, 3);
  Transformer m = Converted(v, Config(4, 2, "sequence", 3), "average", "svd");
  {  // nudge the LoRA so it is not the original function
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters()) {
      if (p.key().rfind("lora", 0) == 0) p.value().add_(0.05);
    }
  }
  SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = 10;
  const std::vector<std::vector<int>> prompts = {{1, 5, 6, 7, 8}, {1, 11}};
  const auto out = Generate(m, prompts, o);
  for (size_t r = 0; r < prompts.size(); ++r) {
    std::vector<int64_t> seq(prompts[r].begin(), prompts[r].end());
    seq.insert(seq.end(), out[r].tokens.begin(), out[r].tokens.end());
    Tensor lp = torch::log_softmax(Logits(m, seq), -1);
    for (size_t j = 0; j < out[r].tokens.size(); ++j) {
      const int64_t pos = static_cast<int64_t>(prompts[r].size() + j) - 1;
      EXPECT_EQ(lp[pos].argmax().item<int64_t>(), out[r].tokens[j]) << r << " " << j;
      EXPECT_NEAR(lp[pos][out[r].tokens[j]].item<double>(), out[r].logprobs[j], 1e-4);
    }
  }
  testing::ScratchDir dir("recursive-export");
  const std::string path = dir.File("unrolled.safetensors");
  ASSERT_TRUE(ExportSafetensors(m, path).ok());
  Transformer plain(Config(4), Tokenizer::VocabSize(), 7);
  const common::Status s = ImportSafetensors(plain, path);
  ASSERT_TRUE(s.ok()) << s.ToString();
  plain->eval();
  EXPECT_LT(MaxAbs(Logits(plain, kSeq) - Logits(m, kSeq)), 1e-4);
  EXPECT_EQ(ImportSafetensors(m, path).code(), common::StatusCode::kInvalidArgument);  // import into vanilla only
  // Unrolled in memory: the same function again, and the weights the file holds.
  Transformer unrolled(Config(4), Tokenizer::VocabSize(), 8);
  const common::Status u = UnrollToVanilla(*m, *unrolled);
  ASSERT_TRUE(u.ok()) << u.ToString();
  unrolled->eval();
  EXPECT_LT(MaxAbs(Logits(unrolled, kSeq) - Logits(m, kSeq)), 1e-4);
  auto from_file = plain->named_parameters();
  for (const auto& p : unrolled->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), from_file[p.key()])) << p.key();
  }
  EXPECT_FALSE(UnrollToVanilla(*plain, *unrolled).ok());  // a vanilla model does not unroll
  Transformer wide(Config(6), Tokenizer::VocabSize(), 9);
  EXPECT_FALSE(UnrollToVanilla(*m, *wide).ok());  // nor into other dimensions
}

std::vector<std::vector<int>> Prompts() {
  return {{1, 5, 6, 7, 8}, {1, 11}, {1, 12, 13, 14}, {1, 9, 9}, {1, 20, 21, 22, 23, 24}, {1, 7}, {1, 30, 8}};
}

TEST(RecursiveModelTest, LoopDecodingWithoutExitsIsGreedyGenerationUnderEveryPolicy) {
  Transformer v = Vanilla(4, 5);
  Transformer m = Converted(v, Config(4, 2, "cycle", 3), "average", "svd");
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters()) {
      if (p.key().rfind("lora", 0) == 0) p.value().add_(0.05);
    }
  }
  SampleOptions so;
  so.temperature = 0;
  so.max_new_tokens = 9;
  so.stop_tokens = {Tokenizer::kEos};
  std::vector<std::vector<int>> expected;
  for (const auto& p : Prompts()) expected.push_back(Generate(m, {p}, so)[0].tokens);
  LoopDecodeOptions o;
  o.batch = 3;  // 7 prompts: rows are refilled
  o.max_new_tokens = 9;
  o.exit_threshold = 2;  // never early
  o.stop_tokens = {Tokenizer::kEos};
  for (const std::string policy : {"static", "sequence", "depth"}) {
    o.batching = policy;
    auto r = DecodeWithExits(m, Prompts(), o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->tokens, expected) << policy;
    EXPECT_EQ(r->stages, 2 * r->tokens_decoded) << policy;
    EXPECT_EQ(r->exits[0], 0) << policy;
    EXPECT_LE(r->stages, r->row_slots) << policy;
  }
  // A vanilla model decodes as one loop.
  Transformer plain = Vanilla(2, 6);
  o.batching = "depth";
  auto r = DecodeWithExits(plain, Prompts(), o);
  ASSERT_TRUE(r.ok());
  for (size_t i = 0; i < Prompts().size(); ++i) EXPECT_EQ(r->tokens[i], Generate(plain, {Prompts()[i]}, so)[0].tokens);
  // SEQUENCE tying has no loop boundary to exit at.
  Transformer seq = Converted(v, Config(4, 2, "sequence"), "average", "svd");
  EXPECT_EQ(DecodeWithExits(seq, Prompts(), o).status().code(), common::StatusCode::kInvalidArgument);
}

TEST(RecursiveModelTest, LoopDecodingWithExitsAgreesAcrossPoliciesAndExitingAtOnceIsTheFirstLoop) {
  Transformer v = Vanilla(6, 8);
  Transformer m = Converted(v, Config(6, 3, "cycle"), "stepwise", "svd");  // 2 shared layers x 3 loops
  LoopDecodeOptions o;
  o.batch = 3;
  o.max_new_tokens = 8;
  // A threshold at which some tokens exit early and some do not (the random
  // model's confidence decides which).
  bool mixed = false;
  for (double threshold : {0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05}) {
    o.exit_threshold = threshold;
    auto r = DecodeWithExits(m, Prompts(), o);
    ASSERT_TRUE(r.ok());
    if (r->exits[2] > 0 && r->exits[2] < r->tokens_decoded) {
      mixed = true;
      break;
    }
  }
  ASSERT_TRUE(mixed);
  std::map<std::string, LoopDecodeResult> by;
  for (const std::string policy : {"static", "sequence", "depth"}) {
    o.batching = policy;
    auto r = DecodeWithExits(m, Prompts(), o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    by[policy] = *r;
  }
  EXPECT_EQ(by["static"].tokens, by["depth"].tokens);
  EXPECT_EQ(by["sequence"].tokens, by["depth"].tokens);
  const LoopDecodeResult& d = by["depth"];
  EXPECT_EQ(d.exits[0] + d.exits[1] + d.exits[2], d.tokens_decoded);
  EXPECT_EQ(d.stages, d.exits[0] + 2 * d.exits[1] + 3 * d.exits[2]);
  EXPECT_GT(d.exits[0] + d.exits[1], 0) << "some tokens exit early at this threshold";
  EXPECT_GT(d.exits[2], 0) << "and some do not";
  EXPECT_LE(d.calls, by["sequence"].calls);
  EXPECT_LE(by["sequence"].calls, by["static"].calls);

  // Threshold 0: every token exits after the first loop, so decoding is
  // greedy generation by the first loop's layers alone.
  o.exit_threshold = 0;
  auto first = DecodeWithExits(m, Prompts(), o);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->exits[0], first->tokens_decoded);
  Transformer one(Config(2), Tokenizer::VocabSize(), 1);
  {
    torch::NoGradGuard g;
    auto to = one->named_parameters();
    for (auto& p : m->named_parameters()) {
      if (to.contains(p.key())) to[p.key()].copy_(p.value());
    }
  }
  one->eval();
  SampleOptions so;
  so.temperature = 0;
  so.max_new_tokens = 8;
  for (size_t i = 0; i < Prompts().size(); ++i) {
    EXPECT_EQ(first->tokens[i], Generate(one, {Prompts()[i]}, so)[0].tokens) << i;
  }
}

TEST(RecursiveModelTest, LmTrainConvertsUptrainsAndDistills) {
  testing::ScratchDir dir("recursive-train");
  const nlohmann::json base = {{"task", "reverse"}, {"length", 4},  {"alphabet", 5},     {"d_model", 32},
                               {"heads", 2},        {"layers", 4},  {"max_len", 16},     {"eval_every", 20},
                               {"eval_examples", 64}, {"batch", 16}, {"warmup", 5}};
  nlohmann::json cfg = base;
  cfg["steps"] = 40;
  LocalJobContext vanilla("v", testing::KindConfig("lm.train", cfg), 3);
  vanilla.set_artifact_dir(dir.File("v"));
  ASSERT_TRUE(RunLmTrain(vanilla).ok());
  const double vanilla_val = vanilla.metrics().at("val_loss").back().value;

  auto run = [&](nlohmann::json extra, const std::string& id) {
    nlohmann::json c = base;
    for (auto& [k, val] : extra.items()) c[k] = val;
    auto ctx = std::make_unique<LocalJobContext>(id, testing::KindConfig("lm.train", c), 4);
    ctx->set_artifact_dir(dir.File(id));
    ctx->set_inputs(vanilla.recorded());
    const common::Status s = RunLmTrain(*ctx);
    return std::make_pair(s, std::move(ctx));
  };
  // Full-rank SVD conversion: the step-0 evaluation is the vanilla model's.
  auto [full_status, full] = run({{"steps", 0}, {"loops", 2}, {"lora_rank", 32}, {"recursive_init", "average"}}, "full");
  ASSERT_TRUE(full_status.ok()) << full_status.ToString();
  EXPECT_NEAR(full->metrics().at("val_loss").front().value, vanilla_val, 1e-4);
  // Pure recursion starts worse, and uptraining with distillation improves it.
  auto [pure_status, pure] = run({{"steps", 30}, {"loops", 2}, {"distill", 0.5}, {"exit_loss", 0.1}}, "pure");
  ASSERT_TRUE(pure_status.ok()) << pure_status.ToString();
  const auto& curve = pure->metrics().at("val_loss");
  EXPECT_GT(curve.front().value, vanilla_val);
  EXPECT_LT(curve.back().value, curve.front().value);
  // The converted model's checkpoint reloads as the recursive model.
  const Artifact* model = nullptr;
  for (const auto& a : pure->recorded()) {
    if (a.name == "model") model = &a;
  }
  ASSERT_NE(model, nullptr);
  auto loaded = LoadModelFile(model->path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->model->blocks.size(), 2u);
  EXPECT_EQ(loaded->checkpoint.model.loops, 2);
  // Downstream of the recursive job, a vanilla job starts from the unrolled
  // model: the same function, so the same validation loss.
  {
    LocalJobContext unrolled("unrolled", testing::KindConfig("lm.train", [&] {
                               nlohmann::json c = base;
                               c["steps"] = 0;
                               return c;
                             }()),
                             4);
    unrolled.set_inputs(pure->recorded());
    const common::Status s = RunLmTrain(unrolled);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(unrolled.metrics().at("val_loss").front().step, 0);
    EXPECT_NEAR(unrolled.metrics().at("val_loss").front().value, curve.back().value, 1e-5);
  }

  // Weights from elsewhere: the vanilla model as Llama safetensors, imported
  // as it is or converted on import.
  const Artifact* vanilla_model = nullptr;
  for (const auto& a : vanilla.recorded()) {
    if (a.name == "model") vanilla_model = &a;
  }
  ASSERT_NE(vanilla_model, nullptr);
  auto source = LoadModelFile(vanilla_model->path);
  ASSERT_TRUE(source.ok());
  const std::string file = dir.File("vanilla.safetensors");
  ASSERT_TRUE(ExportSafetensors(source->model, file).ok());
  auto from_file = [&](nlohmann::json extra, const std::string& id) {
    nlohmann::json c = base;
    for (auto& [k, val] : extra.items()) c[k] = val;
    c["weights"] = file;
    LocalJobContext ctx(id, testing::KindConfig("lm.train", c), 4);
    const common::Status s = RunLmTrain(ctx);
    EXPECT_TRUE(s.ok()) << id << ": " << s.ToString();
    return s.ok() ? ctx.metrics().at("val_loss").front().value : NAN;
  };
  EXPECT_NEAR(from_file({{"steps", 0}}, "imported"), vanilla_val, 1e-5);
  EXPECT_NEAR(from_file({{"steps", 0}, {"loops", 2}, {"lora_rank", 32}}, "imported-relaxed"), vanilla_val, 1e-4);
  EXPECT_NEAR(from_file({{"steps", 0}, {"loops", 2}}, "imported-recursive"),
              pure->metrics().at("val_loss").front().value, 1e-5);
  auto [both, c0] = run({{"steps", 0}, {"weights", file}}, "both");
  EXPECT_EQ(both.code(), common::StatusCode::kInvalidArgument) << both.ToString();

  auto [bad_loops, c1] = run({{"steps", 0}, {"loops", 3}}, "bad-loops");
  EXPECT_EQ(bad_loops.code(), common::StatusCode::kInvalidArgument) << bad_loops.ToString();
  auto [bad_rank, c2] = run({{"steps", 0}, {"lora_rank", 33}}, "bad-rank");
  EXPECT_EQ(bad_rank.code(), common::StatusCode::kInvalidArgument) << bad_rank.ToString();
  nlohmann::json lonely = base;
  lonely["distill"] = 0.5;
  lonely["steps"] = 1;
  LocalJobContext alone("alone", testing::KindConfig("lm.train", lonely), 5);
  const common::Status s = RunLmTrain(alone);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("distill"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace shammie::workers::lm
