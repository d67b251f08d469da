// The transformer's generation path against its plain forward pass: the KV
// cache, left padding and per-row positions change nothing; sampling follows
// the softmax; checkpoints reload to the same logits.
#include "workers/lm_torch.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "common/random.hpp"
#include "storage/checkpoint_store.hpp"
#include "tests/test_util.hpp"
#include "workers/fused_cpu.hpp"

namespace shammie::workers::lm {
namespace {

Transformer RandomModel(uint64_t seed, int64_t classes = 0) {
  ModelConfig c;
  c.d_model = 32;
  c.layers = 2;
  c.heads = 4;
  c.max_len = 40;
  c.classes = classes;
  Transformer m(c, Tokenizer::VocabSize(), seed);
  // Larger weights than the 0.02 initialisation, so logits are far from uniform.
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.mul_(8.0);
  m->eval();
  return m;
}

// log-softmax of the plain forward pass over one unpadded sequence.
Tensor FullLogProbs(Transformer& m, const std::vector<int>& seq) {
  torch::NoGradGuard g;
  Tensor t = torch::tensor(std::vector<int64_t>(seq.begin(), seq.end())).unsqueeze(0);
  return torch::log_softmax(m->Logits(m->forward(t)).to(torch::kFloat64), -1).squeeze(0);
}

TEST(LmModelTest, CachedBatchedGenerationEqualsThePlainForwardPassPerRow) {
  Transformer m = RandomModel(3);
  const std::vector<std::vector<int>> prompts = {{1, 5, 6, 7, 8, 9, 10}, {1, 11}, {1, 12, 13, 14}};
  SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = 12;
  const auto out = Generate(m, prompts, o);
  ASSERT_EQ(out.size(), prompts.size());
  for (size_t r = 0; r < prompts.size(); ++r) {
    ASSERT_EQ(out[r].tokens.size(), 12u);
    std::vector<int> seq = prompts[r];
    seq.insert(seq.end(), out[r].tokens.begin(), out[r].tokens.end());
    Tensor lp = FullLogProbs(m, seq);
    for (size_t j = 0; j < out[r].tokens.size(); ++j) {
      const int64_t pos = static_cast<int64_t>(prompts[r].size() + j) - 1;  // predicts token pos + 1
      EXPECT_EQ(lp[pos].argmax().item<int64_t>(), out[r].tokens[j]) << "row " << r << " token " << j;
      EXPECT_NEAR(lp[pos][out[r].tokens[j]].item<double>(), out[r].logprobs[j], 1e-4) << "row " << r;
    }
  }
  // Alone in a batch, a row generates the same tokens.
  const auto alone = Generate(m, {prompts[1]}, o);
  EXPECT_EQ(alone[0].tokens, out[1].tokens);
}

// A row near max_len in the batch does not cut the others short: each row
// writes min(max_new_tokens, max_len - its length) tokens, the same ones as
// alone. (The batch once shared the longest row's budget, so Monte-Carlo
// completions of short prefixes, batched with long ones, were truncated.)
TEST(LmModelTest, EachRowHasItsOwnTokenBudget) {
  Transformer m = RandomModel(5);  // max_len 40
  std::vector<int> longest = {1};
  for (int t = 0; t < 33; ++t) longest.push_back(5 + t % 20);  // 34 tokens: room for 6
  const std::vector<std::vector<int>> prompts = {{1, 12, 13}, longest, {1, 7, 8, 9, 10}};
  SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = 20;
  const auto out = Generate(m, prompts, o);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].tokens.size(), 20u);
  EXPECT_EQ(out[1].tokens.size(), 6u);
  EXPECT_EQ(out[2].tokens.size(), 20u);
  for (size_t r = 0; r < prompts.size(); ++r) {
    EXPECT_FALSE(out[r].stopped);
    EXPECT_EQ(Generate(m, {prompts[r]}, o)[0].tokens, out[r].tokens) << "row " << r;
    std::vector<int> seq = prompts[r];
    seq.insert(seq.end(), out[r].tokens.begin(), out[r].tokens.end());
    Tensor lp = FullLogProbs(m, seq);
    for (size_t j = 0; j < out[r].tokens.size(); ++j) {
      EXPECT_EQ(lp[static_cast<int64_t>(prompts[r].size() + j) - 1].argmax().item<int64_t>(), out[r].tokens[j])
          << "row " << r << " token " << j;
    }
  }
  o.max_new_tokens = 3;  // the option still bounds every row
  for (const auto& s : Generate(m, prompts, o)) EXPECT_EQ(s.tokens.size(), 3u);
}

TEST(LmModelTest, StopTokensEndARowAndAreKept) {
  Transformer m = RandomModel(4);
  SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = 10;
  const auto free_run = Generate(m, {{1, 5, 6}}, o);
  ASSERT_GE(free_run[0].tokens.size(), 3u);
  o.stop_tokens = {free_run[0].tokens[2]};
  const auto stopped = Generate(m, {{1, 5, 6}}, o);
  ASSERT_TRUE(stopped[0].stopped);
  EXPECT_EQ(stopped[0].tokens.back(), free_run[0].tokens[2]);
  EXPECT_LE(stopped[0].tokens.size(), 3u);
}

// The first sampled token's frequencies over 4000 rows follow softmax(logits / T)
// restricted to the top-k (a chi-square bound with a large margin), and the
// reported log-prob is the unmodified model's.
TEST(LmModelTest, SamplingFollowsTheTemperedTopKDistribution) {
  torch::NoGradGuard g;
  ModelConfig c;
  c.d_model = 16;
  c.layers = 1;
  c.heads = 2;
  c.max_len = 8;
  Transformer m(c, Tokenizer::VocabSize(), 9);
  for (auto& p : m->parameters()) p.mul_(20.0);
  m->eval();
  const std::vector<int> prompt = {1, 7};
  Tensor lp = FullLogProbs(m, prompt)[1];
  const double temperature = 1.5;
  const int64_t top_k = 5;
  Tensor scaled = torch::softmax(lp / temperature, -1);
  auto top = scaled.topk(top_k);
  Tensor keep_p = std::get<0>(top) / std::get<0>(top).sum();
  Tensor keep_i = std::get<1>(top);
  SampleOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.max_new_tokens = 1;
  o.seed = 17;
  const int n = 4000;
  const auto out = Generate(m, std::vector<std::vector<int>>(n, prompt), o);
  std::map<int, int> count;
  for (const auto& s : out) {
    ++count[s.tokens[0]];
    EXPECT_NEAR(s.logprobs[0], lp[s.tokens[0]].item<double>(), 1e-4);
  }
  double chi2 = 0;
  int seen = 0;
  for (int64_t i = 0; i < top_k; ++i) {
    const int tok = static_cast<int>(keep_i[i].item<int64_t>());
    const double expected = n * keep_p[i].item<double>();
    chi2 += std::pow(count[tok] - expected, 2) / expected;
    seen += count[tok];
  }
  EXPECT_EQ(seen, n);  // nothing outside the top k
  EXPECT_LT(chi2, 25.0);  // 4 degrees of freedom: P(chi2 > 25) < 1e-4
  // top_p = tiny keeps only the most likely token: greedy.
  o.top_k = 0;
  o.top_p = 1e-9;
  for (const auto& s : Generate(m, {prompt, prompt}, o)) EXPECT_EQ(s.tokens[0], lp.argmax().item<int64_t>());
}

TEST(LmModelTest, ScoreAndClassHeadsReadTheLastRealToken) {
  Transformer m = RandomModel(5, /*classes=*/3);
  torch::NoGradGuard g;
  Tensor a = torch::tensor(std::vector<int64_t>{1, 5, 6, 7}).unsqueeze(0);
  Tensor padded = torch::tensor(std::vector<int64_t>{1, 5, 6, 7, 0, 0}).unsqueeze(0);
  Tensor last = torch::tensor(std::vector<int64_t>{3});
  Tensor s1 = m->Score(m->forward(a), last), s2 = m->Score(m->forward(padded), last);
  ASSERT_EQ(s1.sizes(), (std::vector<int64_t>{1}));
  EXPECT_NEAR(s1.item<double>(), s2.item<double>(), 1e-5);  // causal: right padding changes nothing
  Tensor c = m->ClassLogits(m->forward(padded), last);
  EXPECT_EQ(c.sizes(), (std::vector<int64_t>{1, 3}));
}

// A likelihood verifier's score is the head's plus the log-likelihood of the
// answer's tokens so far; the oracle is the cached generator's own log-prob
// of each token it sampled (another code path), and the prompt's tokens,
// before its '=', add nothing.
TEST(LmModelTest, LikelihoodVerifierAddsTheSampledAnswersLogProbsToTheHead) {
  Transformer m = RandomModel(9);
  std::vector<std::vector<int>> prompts;
  for (const char* text : {"3+4*2=", "1=", "10-7+2*3="}) prompts.push_back(WithBos(Tokenizer::Encode(text).value()));
  SampleOptions o;
  o.temperature = 1;
  o.max_new_tokens = 9;
  o.seed = 4;
  const auto out = Generate(m, prompts, o);
  std::vector<std::vector<int>> seqs;
  for (size_t r = 0; r < prompts.size(); ++r) {
    seqs.push_back(prompts[r]);
    seqs.back().insert(seqs.back().end(), out[r].tokens.begin(), out[r].tokens.end());
  }
  torch::NoGradGuard g;
  const Padded p = RightPadded(seqs, 0, seqs.size());
  const Tensor head = VerifierScores(m, p.input, false).to(torch::kFloat64);
  const Tensor with = VerifierScores(m, p.input, true).to(torch::kFloat64);
  ASSERT_EQ(head.sizes(), with.sizes());
  for (size_t r = 0; r < seqs.size(); ++r) {
    ASSERT_GT(out[r].tokens.size(), 0u);
    double sum = 0;
    for (size_t j = 0; j < seqs[r].size(); ++j) {
      const auto pos = static_cast<int64_t>(j), row = static_cast<int64_t>(r);
      if (j >= prompts[r].size()) sum += out[r].logprobs[j - prompts[r].size()];
      EXPECT_NEAR(with[row][pos].item<double>() - head[row][pos].item<double>(), sum, 1e-4) << "row " << r << " position " << j;
    }
    EXPECT_LT(sum, -0.5) << "row " << r << ": the answer has an improbable token (the test must see a nonzero sum)";
  }
}

TEST(LmModelTest, CheckpointsReloadToTheSameLogitsAndDamageIsDetected) {
  testing::ScratchDir dir("lm-ckpt");
  Transformer m = RandomModel(6);
  Checkpoint c;
  c.model = m->config;
  c.vocab = m->vocab;
  c.job_config = {{"task", "copy"}};
  c.model_bytes = SaveModule(*m);
  c.state.step = 7;
  c.state.best_val = std::numeric_limits<double>::infinity();
  c.state.metrics = {{"loss", 1, 2.5}, {"loss", 2, std::nan("")}};
  auto path = storage::WriteContentAddressed(dir.path().string(), SerializeCheckpoint(c), "ckpt");
  ASSERT_TRUE(path.ok());
  auto loaded = LoadModelFile(*path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->checkpoint.state.step, 7);
  EXPECT_TRUE(std::isinf(loaded->checkpoint.state.best_val));
  EXPECT_EQ(loaded->checkpoint.job_config, c.job_config);
  ASSERT_EQ(loaded->checkpoint.state.metrics.size(), 2u);
  EXPECT_TRUE(std::isnan(std::get<2>(loaded->checkpoint.state.metrics[1])));
  torch::NoGradGuard g;
  Tensor t = torch::tensor(std::vector<int64_t>{1, 5, 6, 7}).unsqueeze(0);
  EXPECT_TRUE(torch::equal(m->Logits(m->forward(t)), loaded->model->Logits(loaded->model->forward(t))));
  // Truncated container: DataLoss naming the file, whatever the cut.
  const std::string bytes = SerializeCheckpoint(c);
  for (size_t cut : {size_t{3}, size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    auto r = ParseCheckpoint(std::string_view(bytes).substr(0, cut), "x.ckpt");
    EXPECT_EQ(r.status().code(), common::StatusCode::kDataLoss) << cut;
  }
}

}  // namespace
}  // namespace shammie::workers::lm

namespace shammie::workers::lm {
namespace {

constexpr const char* kPython = "/usr/bin/python3";
constexpr const char* kLlama = SHAMMIE_SOURCE_DIR "/tests/workers/llama_oracle.py";

nlohmann::json LlamaConfig(const ModelConfig& c, int64_t vocab) {
  return {{"hidden_size", c.d_model},    {"num_hidden_layers", c.layers}, {"num_attention_heads", c.heads},
          {"intermediate_size", c.d_ff}, {"vocab_size", vocab},           {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},       {"tie_word_embeddings", c.tied_embeddings}};
}

std::vector<std::vector<double>> PythonLogits(const std::string& file, const nlohmann::json& config,
                                              const std::vector<int64_t>& tokens) {
  auto r = testing::RunCommand(std::string(kPython) + " " + kLlama + " forward " + file + " '" + config.dump() +
                               "' '" + nlohmann::json(tokens).dump() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  EXPECT_TRUE(j.is_array()) << r.output;
  return j.is_array() ? j.get<std::vector<std::vector<double>>>() : std::vector<std::vector<double>>{};
}

void ExpectSameLogits(Transformer& m, const std::vector<std::vector<double>>& want, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard g;
  Tensor got = m->Logits(m->forward(torch::tensor(tokens).unsqueeze(0))).squeeze(0).to(torch::kFloat64);
  ASSERT_EQ(static_cast<int64_t>(want.size()), got.size(0));
  double worst = 0;
  for (size_t t = 0; t < want.size(); ++t) {
    for (size_t v = 0; v < want[t].size(); ++v) {
      worst = std::max(worst, std::abs(want[t][v] - got[static_cast<int64_t>(t)][static_cast<int64_t>(v)].item<double>()));
    }
  }
  EXPECT_LT(worst, 1e-4);
}

// Both directions against an independent PyTorch Llama: weights exported by
// shammie give PyTorch the same logits; weights written by PyTorch, imported
// into shammie, give shammie PyTorch's logits.
TEST(LmModelOracleTest, LlamaSafetensorsMatchAnIndependentPyTorchForward) {
  if (testing::RunCommand(std::string(kPython) + " -c 'import torch'").exit_code != 0) {
    GTEST_SKIP() << kPython << " has no torch (scripts/setup.sh installs python3-torch)";
  }
  testing::ScratchDir dir("llama");
  const std::vector<int64_t> tokens = {1, 5, 9, 13, 20, 3, 7, 30};
  {
    Transformer m = RandomModel(12);  // tied embeddings
    ASSERT_TRUE(ExportSafetensors(m, dir.File("ours.safetensors")).ok());
    ExpectSameLogits(m, PythonLogits(dir.File("ours.safetensors"), LlamaConfig(m->config, m->vocab), tokens), tokens);
  }
  ModelConfig c;
  c.d_model = 32;
  c.layers = 2;
  c.heads = 4;
  c.d_ff = 48;
  c.max_len = 16;
  c.tied_embeddings = false;
  Transformer m(c, Tokenizer::VocabSize(), 1);
  const nlohmann::json config = LlamaConfig(m->config, m->vocab);
  auto made = testing::RunCommand(std::string(kPython) + " " + kLlama + " make " + dir.File("theirs.safetensors") +
                                  " '" + config.dump() + "' 4");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  common::Status s = ImportSafetensors(m, dir.File("theirs.safetensors"));
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectSameLogits(m, PythonLogits(dir.File("theirs.safetensors"), config, tokens), tokens);
  // A model of another shape refuses the file with the tensor named.
  ModelConfig wider = c;
  wider.d_model = 64;
  Transformer w(wider, Tokenizer::VocabSize(), 1);
  s = ImportSafetensors(w, dir.File("theirs.safetensors"));
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("has shape"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace shammie::workers::lm

#include "workers/local_context.hpp"

namespace shammie::workers::lm {
namespace {

// CUDA is asked for and absent: a clear error, never a quiet CPU run. (On a
// machine with a CUDA LibTorch and a GPU this test skips; the CUDA training
// path has not run on a GPU yet: no device was lent.)
TEST(LmDeviceTest, CudaWithoutCudaIsUnavailableNotAFallback) {
  TrainConfig c;
  c.task.family = "copy";
  c.task.length = 3;
  c.model.d_model = 16;
  c.model.heads = 2;
  c.model.max_len = 16;
  c.steps = 1;
  c.batch = 4;
  c.device = "cuda";
  LocalJobContext ctx("cuda", nlohmann::json::object(), 1);
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is visible: this test checks the error without one";
  auto r = TrainLanguageModel(c, ctx);
  EXPECT_EQ(r.status().code(), common::StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("not falling back"), std::string::npos) << r.status().ToString();
  c.device = "cpu";
  c.precision = "bf16";
  EXPECT_EQ(TrainLanguageModel(c, ctx).status().code(), common::StatusCode::kInvalidArgument);
}

// --- the fused CPU layers against the composite ops, in float64 ---

// Gradients of sum(out * g) with respect to `inputs` (those defined).
std::vector<Tensor> GradsOf(const Tensor& out, const Tensor& g, const std::vector<Tensor>& inputs) {
  return torch::autograd::grad({(out * g).sum()}, inputs, {}, /*retain_graph=*/false, false, /*allow_unused=*/true);
}

void ExpectClose(const Tensor& fused, const Tensor& reference, double tol, const std::string& what) {
  ASSERT_EQ(fused.sizes(), reference.sizes()) << what;
  const double err = (fused.to(torch::kFloat64) - reference).abs().max().item<double>();
  const double scale = std::max(1.0, reference.abs().max().item<double>());
  EXPECT_LT(err, tol * scale) << what << ": max abs error " << err;
}

Tensor Leaf(Tensor t) { return t.detach().requires_grad_(true); }

TEST(LmFusedTest, ExpMatchesTheLibraryToAFewUlp) {
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f + 175.0f * static_cast<float>(i) / 200000.0f;
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(static_cast<double>(fused::Exp(x)) - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(fused::Exp(0.0f), 1.0f);
  EXPECT_GT(fused::Exp(-1000.0f), 0.0f);
  EXPECT_LT(fused::Exp(-1000.0f), 2e-38f);
  EXPECT_TRUE(std::isfinite(fused::Exp(1000.0f)));
}

TEST(LmFusedTest, RmsNormMatchesTheCompositeFormula) {
  torch::manual_seed(1);
  for (int64_t d : {7, 24, 130}) {
    Tensor x = Leaf(torch::randn({3, 5, d}) * 3), w = Leaf(torch::randn({d}));
    Tensor xd = Leaf(x.to(torch::kFloat64)), wd = Leaf(w.to(torch::kFloat64));
    Tensor g = torch::randn({3, 5, d});
    Tensor y = FusedRmsNorm(x, w);
    Tensor ref = xd * torch::rsqrt(xd.pow(2).mean(-1, true) + 1e-6) * wd;
    ExpectClose(y, ref, 1e-6, "forward d=" + std::to_string(d));
    auto got = GradsOf(y, g, {x, w});
    auto want = GradsOf(ref, g.to(torch::kFloat64), {xd, wd});
    ExpectClose(got[0], want[0], 1e-5, "dx d=" + std::to_string(d));
    ExpectClose(got[1], want[1], 1e-5, "dw d=" + std::to_string(d));
  }
}

TEST(LmFusedTest, PackedRotaryHeadsMatchRopeOnEachProjection) {
  torch::manual_seed(2);
  const int64_t b = 2, t = 5, heads = 3, hd = 8, d = heads * hd;
  for (int64_t cb : {int64_t{1}, b}) {  // shared positions (training), per-row positions (cached decoding)
    Tensor angles = torch::rand({cb, 1, t, hd / 2}, torch::kFloat64) * 6;
    Tensor cos = angles.cos().to(torch::kFloat32), sin = angles.sin().to(torch::kFloat32);
    Tensor qkv = Leaf(torch::randn({b, t, 3 * d}));
    Tensor qkvd = Leaf(qkv.to(torch::kFloat64));
    std::vector<Tensor> got = FusedQkvHeads(qkv, cos, sin, heads);
    auto split = [&](const Tensor& y, int i) { return y.narrow(-1, i * d, d).view({b, t, heads, hd}).transpose(1, 2); };
    Tensor cd = cos.to(torch::kFloat64), sd = sin.to(torch::kFloat64);
    std::vector<Tensor> want = {Rope(split(qkvd, 0), cd, sd), Rope(split(qkvd, 1), cd, sd), split(qkvd, 2)};
    Tensor gsum, gsum_ref;
    for (int i = 0; i < 3; ++i) {
      ExpectClose(got[i], want[i], 1e-6, "output " + std::to_string(i) + " cb=" + std::to_string(cb));
      Tensor g = torch::randn({b, heads, t, hd});
      gsum = i == 0 ? (got[i] * g).sum() : gsum + (got[i] * g).sum();
      gsum_ref = i == 0 ? (want[i] * g.to(torch::kFloat64)).sum() : gsum_ref + (want[i] * g.to(torch::kFloat64)).sum();
    }
    Tensor dq = torch::autograd::grad({gsum}, {qkv})[0];
    Tensor dq_ref = torch::autograd::grad({gsum_ref}, {qkvd})[0];
    ExpectClose(dq, dq_ref, 1e-5, "d qkv cb=" + std::to_string(cb));
  }
}

TEST(LmFusedTest, MaskedSoftmaxMatchesSoftmaxOfMaskedFill) {
  torch::manual_seed(3);
  const int64_t b = 2, h = 3, t = 4, s = 21;
  const double scale = 0.35;
  Tensor causal = torch::ones({t, s}, torch::kBool).triu(s - t + 1);
  Tensor per_row = torch::rand({b, 1, t, s}) < 0.4;
  per_row.select(-1, 0).fill_(false);  // no empty row
  for (const Tensor& mask : {causal, per_row, Tensor()}) {
    Tensor x = Leaf(torch::randn({b, h, t, s}) * 4);
    Tensor xd = Leaf(x.to(torch::kFloat64));
    Tensor p = FusedMaskedSoftmax(x, mask, scale);
    Tensor ref = mask.defined()
                     ? torch::softmax((xd * scale).masked_fill(mask, -std::numeric_limits<double>::infinity()), -1)
                     : torch::softmax(xd * scale, -1);
    ExpectClose(p, ref, 1e-6, "forward");
    if (mask.defined()) {
      EXPECT_EQ(p.masked_select(mask.expand(p.sizes())).abs().max().item<float>(), 0.0f);
    }
    Tensor g = torch::randn({b, h, t, s});
    ExpectClose(GradsOf(p, g, {x})[0], GradsOf(ref, g.to(torch::kFloat64), {xd})[0], 1e-5, "backward");
  }
  // A row with every entry masked is NaN, as torch's softmax makes it.
  Tensor all = torch::zeros({1, 1, 2, 3}, torch::kBool);
  all[0][0][1].fill_(true);
  Tensor p = FusedMaskedSoftmax(torch::randn({1, 1, 2, 3}), all, 1.0);
  EXPECT_FALSE(torch::isnan(p[0][0][0]).any().item<bool>());
  EXPECT_TRUE(torch::isnan(p[0][0][1]).all().item<bool>());
}

TEST(LmFusedTest, SwiGluMatchesSiluTimesGate) {
  torch::manual_seed(4);
  for (int64_t f : {5, 40}) {
    Tensor hx = Leaf(torch::randn({3, 7, 2 * f}) * 5);
    Tensor hd = Leaf(hx.to(torch::kFloat64));
    Tensor y = FusedSwiGlu(hx);
    Tensor ref = torch::silu(hd.narrow(-1, 0, f)) * hd.narrow(-1, f, f);
    ExpectClose(y, ref, 1e-6, "forward f=" + std::to_string(f));
    Tensor g = torch::randn({3, 7, f});
    ExpectClose(GradsOf(y, g, {hx})[0], GradsOf(ref, g.to(torch::kFloat64), {hd})[0], 1e-5, "backward");
  }
}

// The whole model: float32 runs the fused layers (one GEMM for q, k, v and
// one for w1, w3 when training), float64 the composite ops. Logits, the
// cached decoding path and every parameter's gradient agree.
TEST(LmFusedTest, FusedModelMatchesTheCompositeModelInFloat64) {
  ModelConfig c;
  c.d_model = 48;
  c.layers = 2;
  c.heads = 4;
  c.max_len = 24;
  Transformer m(c, Tokenizer::VocabSize(), 7);
  {
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.mul_(6.0);  // far from the initialisation's near-uniform outputs
  }
  Transformer md(c, Tokenizer::VocabSize(), 7);
  {
    torch::NoGradGuard ng;
    auto src = m->parameters();
    auto dst = md->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  md->to(torch::kFloat64);
  Tensor tokens = torch::randint(3, Tokenizer::VocabSize(), {3, 17}, torch::kInt64);
  Tensor logits = m->Logits(m->forward(tokens));
  Tensor logits_d = md->Logits(md->forward(tokens));
  ExpectClose(logits, logits_d, 2e-5, "training-mode logits");
  Tensor g = torch::randn(logits.sizes());
  (logits * g).sum().backward();
  (logits_d * g.to(torch::kFloat64)).sum().backward();
  auto named = m->named_parameters();
  auto named_d = md->named_parameters();
  for (const auto& p : named) {
    const Tensor& grad = p.value().grad();
    const Tensor& grad_d = named_d[p.key()].grad();
    if (!grad_d.defined()) {
      EXPECT_FALSE(grad.defined()) << p.key();
      continue;
    }
    ASSERT_TRUE(grad.defined()) << p.key();
    ExpectClose(grad, grad_d, 5e-5, "grad " + p.key());
  }
  // Without gradients (the stacked-outputs path) and through the KV cache.
  torch::NoGradGuard ng;
  ExpectClose(m->Logits(m->forward(tokens)), logits_d.detach(), 2e-5, "no-grad logits");
  KvCache cache;
  Tensor positions = torch::arange(17, torch::kInt64).unsqueeze(0).expand({3, 17}).contiguous();
  Tensor pad = torch::zeros({3, 17}, torch::kBool);
  Tensor first = m->ForwardCached(tokens.narrow(1, 0, 10), positions.narrow(1, 0, 10), pad.narrow(1, 0, 10), cache);
  Tensor rest = m->ForwardCached(tokens.narrow(1, 10, 7), positions.narrow(1, 10, 7), pad.narrow(1, 10, 7), cache);
  ExpectClose(m->Logits(torch::cat({first, rest}, 1)), logits_d.detach(), 2e-5, "cached logits");
}

}  // namespace
}  // namespace shammie::workers::lm
