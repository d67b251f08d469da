// The transformer itself, its KV-cache generation and its files. INTERNAL to
// the LibTorch runtime: included only by the torch translation units
// (workers/lm*.cpp), never by code that must build without compiling torch
// headers (workers/lm.hpp is the public face).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/random.hpp"
#include "common/status.hpp"
#include "workers/lm.hpp"

namespace shammie::workers::lm {

using torch::Tensor;

struct RMSNormImpl : torch::nn::Module {
  explicit RMSNormImpl(int64_t d);
  Tensor forward(const Tensor& x);
  Tensor WithDelta(const Tensor& x, const Tensor& weight_delta);  // with weight + delta (undefined: none)
  Tensor weight;
};
TORCH_MODULE(RMSNorm);

// Rotary positions, Llama's "rotate half" form: the head dimension's two
// halves of x are the real and imaginary parts; cos/sin broadcast against
// either half.
Tensor Rope(const Tensor& x, const Tensor& cos, const Tensor& sin);

// The fused CPU float32 layers the blocks use (workers/fused_cpu.hpp), as
// autograd functions; exposed for tests that compare them with the
// composite ops. SHAMMIE_FUSED=0 makes the model use the composite ops.
// RMSNorm (eps 1e-6) over the last axis.
Tensor FusedRmsNorm(const Tensor& x, const Tensor& weight);
// q, k (rotary applied) and v as [b, heads, t, hd] from the packed
// projection qkv [b, t, 3d]; cos/sin [cb, 1, t, hd / 2] with cb 1 or b.
std::vector<Tensor> FusedQkvHeads(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int64_t heads);
// softmax(scale * scores) over the last axis of [b, h, t, s] scores, with
// entries where `mask` (bool, broadcast to the scores) is true taking no
// weight; an undefined mask masks nothing.
Tensor FusedMaskedSoftmax(const Tensor& scores, const Tensor& mask, double scale);
// silu(a) * g over h = [a, g] along the last axis: [..., 2f] -> [..., f].
Tensor FusedSwiGlu(const Tensor& h);

// Per layer, keys (rotary applied) and values of the positions seen so far:
// [B, heads, T, head_dim].
struct KvCache {
  std::vector<Tensor> k, v;
  Tensor key_pad;  // [B, T] bool: true at left-padding positions (never attended to)
  int64_t length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
};
// Key and value elements a cache holds, all rows and layers together.
inline int64_t CacheEntries(const KvCache& cache) {
  int64_t n = 0;
  for (size_t l = 0; l < cache.k.size(); ++l) n += cache.k[l].defined() ? cache.k[l].numel() + cache.v[l].numel() : 0;
  return n;
}

// What a cached step of a stack of `layers` blocks attends with: the mask
// (query i at slot past + i sees non-padding slots <= past + i; padding
// queries see earlier padding too, so no softmax row is empty) and the
// rotary angles of per-row `positions` [B, T] from the tables. Sizes the
// cache's layers and extends its key_pad by `pad` [B, T].
struct CachedStep {
  Tensor mask, cos, sin;
};
CachedStep PrepareCachedStep(const Tensor& positions, const Tensor& pad, KvCache& cache, size_t layers,
                             const Tensor& rope_cos, const Tensor& rope_sin);

// A relaxed recursive model's per-position parameters (depth-wise LoRA):
// W + b[i] a[i] for projection i in kLoraProjections order, and deltas
// added to the two norm weights.
inline constexpr const char* kLoraProjections[7] = {"wq", "wk", "wv", "wo", "w1", "w3", "w2"};
struct BlockLora {
  Tensor a[7], b[7];  // a [r, d_in], b [d_out, r]
  Tensor attn_norm, mlp_norm;
};

struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t d, int64_t heads, int64_t ff);
  // x [B, T, d]; cos/sin [B, 1, T, head_dim/2] (per-row positions); `mask`
  // [B, 1, T, S] bool, true where attention is forbidden. With a cache,
  // appends this step's keys/values to layer `layer` of it and attends over
  // everything cached.
  Tensor forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& mask, KvCache* cache,
                 size_t layer, const BlockLora* lora = nullptr);
  // The projection's weight [out, in] by kLoraProjections index.
  torch::nn::Linear& Projection(int i);
  // forward() through the fused CPU layers (CPU float32).
  Tensor FusedForward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& mask, KvCache* cache,
                      size_t layer, const BlockLora* lora);
  int64_t heads_, head_dim_;
  RMSNorm attn_norm{nullptr}, mlp_norm{nullptr};
  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr}, w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(Block);

// Decoder-only transformer with three heads on the final hidden states:
// next-token logits (tied to the embedding unless configured otherwise), a
// scalar score (reward model, value, verifier) and `classes` class logits.
// Score and class heads read the hidden state of each sequence's last real
// token. A recursive model (config.loops > 1) holds layers / loops blocks
// and runs block layer_map[l] at position l; with config.lora_rank > 0
// position l adds lora[l]. The KV cache has one entry per position.
// A Block Transformer (config.block_length > 0; lm_block.cpp) adds the
// embedder (block_embed), the block decoder (block_blocks, block_norm,
// block_rope_*), the first block's context (block_start) and the prefix
// map (expand); embed / blocks / norm / the LM head are its token decoder,
// and forward() returns hidden states aligned as a vanilla model's are
// (position t predicts token t + 1).
struct TransformerImpl : torch::nn::Module {
  TransformerImpl(const ModelConfig& c, int64_t vocab, uint64_t seed);
  // Hidden states [B, T, d] of right-padded tokens [B, T] (positions 0..T-1).
  Tensor forward(const Tensor& tokens);
  // The normed hidden states after every position (the last one equals
  // forward()): what early exits and their training losses read.
  std::vector<Tensor> ForwardLayers(const Tensor& tokens);
  // Hidden states of `tokens` [B, T] at per-row `positions` [B, T], attending
  // to the cache (extended in place) and causally within the step. Padding
  // keys (cache.key_pad, extended by `pad` [B, T]) are never attended to.
  Tensor ForwardCached(const Tensor& tokens, const Tensor& positions, const Tensor& pad, KvCache& cache);
  Tensor Logits(const Tensor& hidden);
  Tensor Score(const Tensor& hidden, const Tensor& last_index);       // [B]
  Tensor ClassLogits(const Tensor& hidden, const Tensor& last_index);  // [B, classes]
  ModelConfig config;
  int64_t vocab;
  torch::nn::Embedding embed{nullptr};
  std::vector<Block> blocks;
  std::vector<int64_t> layer_map;  // position -> block (the identity for a vanilla model)
  std::vector<BlockLora> lora;     // per position, when config.lora_rank > 0
  RMSNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr}, score_head{nullptr}, class_head{nullptr};
  Tensor rope_cos, rope_sin;  // [max_len, head_dim/2]: rotary tables of every position
  torch::nn::Embedding block_embed{nullptr};
  std::vector<Block> block_blocks;
  RMSNorm block_norm{nullptr};
  Tensor block_start;  // [block_d_model]
  torch::nn::Linear expand{nullptr};
  Tensor block_rope_cos, block_rope_sin;  // [max_len / block_length + 2, block head_dim / 2]
};
TORCH_MODULE(Transformer);

// --- the Block Transformer (workers/lm_block.cpp, PAPERS.md §4) ---

// Hidden states [B, T, d_model] of tokens [B, T], aligned like a vanilla
// model's: position t predicts token t + 1 from tokens 0..t. Row i is laid
// out after left_pad[i] < block_length padding tokens (the first block's
// random-length padding; undefined: none), cut into blocks; the context of
// block j is the block decoder's output for block j - 1 (block_start for
// block 0); the token decoder reads [prefix(context), block j's tokens].
Tensor BlockForward(TransformerImpl& model, const Tensor& tokens, const Tensor& left_pad);
// Training's random-length first-block padding: per row, a hash of its
// tokens mod block_length (deterministic, the same on every rank).
Tensor TrainingBlockPad(const Tensor& tokens, int64_t block_length);
// The contexts [B, nb, block_d_model] of padded tokens y [B, nb * block_length]:
// block_start, then the block decoder's output for blocks 0..nb-2.
Tensor BlockContexts(TransformerImpl& model, const Tensor& y);
// The token decoder: contexts [N, block_d_model] and block tokens [N, L];
// hidden [N, L, d_model], position j predicting tokens[:, j] from the
// context and tokens[:, :j]. The prefix is [N, prefix, d_model].
Tensor DecodeBlocks(TransformerImpl& model, const Tensor& contexts, const Tensor& tokens);

// Position l's effective weight of projection i (kLoraProjections order):
// its block's weight plus its LoRA; [out, in].
Tensor EffectiveWeight(TransformerImpl& model, size_t position, int projection);

// Converts the vanilla model `from` into `to`, a recursive model of the
// same dimensions (workers/recursive.hpp): shared block k starts as the
// mean of its InitSources; with LoRA, "svd" sets position l's LoRA to the
// rank-r truncated SVD of W_l - W_shared (Eckart-Young) and its norm deltas
// to the norms' residuals, "zero" sets b = 0 and zero deltas (a keeps its
// random start). Embedding, final norm and heads are copied.
common::Status ConvertToRecursive(TransformerImpl& from, TransformerImpl& to, const std::string& init,
                                  const std::string& lora_init);

// The inverse direction: `to` is a vanilla model of `from`'s dimensions and
// position l gets `from`'s effective weights there (shared block plus LoRA
// and norm deltas), so both compute the same function; embedding, final norm
// and heads are copied. What the unrolled safetensors export writes, kept
// in memory.
common::Status UnrollToVanilla(TransformerImpl& from, TransformerImpl& to);

// --- generation ---

// Greedy decoding with early exits at loop boundaries for a recursive model
// with CYCLE tying (workers/lm_recursive.cpp; a vanilla model is one loop):
// after loop j < loops a token exits when its top next-token probability
// (final norm + LM head at that depth) reaches `exit_threshold`; the keys
// and values of the positions it skipped are computed from its exit hidden
// state (CALM's state copying), so later tokens attend to every position.
// `batch` rows share each call of the shared block, scheduled by
// `batching`: "static" (groups of `batch` prompts in lockstep, the next
// group when the whole group is done), "sequence" (continuous
// sequence-wise: a finished sequence's row takes the next prompt at the
// next decode step; each decode step still runs loop by loop until every
// row's token is done) or "depth" (continuous depth-wise: each call runs
// every occupied row at its own loop; a row whose token is done starts the
// next token, or the next prompt, in the next call). A row's tokens depend
// on its prompt only, never on the policy or the other rows.
struct LoopDecodeOptions {
  std::string batching = "depth";
  int64_t batch = 16;
  int64_t max_new_tokens = 32;
  double exit_threshold = 1.0;  // > 1: never exit early (every token runs all loops)
  std::vector<int> stop_tokens;
};
struct LoopDecodeResult {
  std::vector<std::vector<int>> tokens;  // per prompt, the stop token included when reached
  int64_t calls = 0;                     // calls of the shared block (prefill not counted)
  int64_t row_slots = 0;                 // batch x calls
  int64_t tokens_decoded = 0;
  int64_t stages = 0;                    // loops run, summed over tokens
  std::vector<int64_t> exits;            // tokens done after loop 1, 2, ..., loops
  double seconds = 0;                    // wall time, prefill included
  double prefill_seconds = 0;            // of which prefill (each policy admits prompts at its own times)
};
common::Result<LoopDecodeResult> DecodeWithExits(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                                 const LoopDecodeOptions& options);

struct SampleOptions {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: all tokens
  double top_p = 1.0;        // nucleus: smallest set with probability >= top_p
  int64_t max_new_tokens = 32;
  std::vector<int> stop_tokens;  // generation of a row ends after one of these (included)
  uint64_t seed = 0;             // row i draws from its own stream DeriveSeed(seed, "sample", i)
};

struct Sampled {
  std::vector<int> tokens;       // generated, stop token included when reached
  std::vector<double> logprobs;  // the model's log p(token | context), at temperature 1, unfiltered
  bool stopped = false;          // ended on a stop token (not max_new_tokens)
};

// What a generation cost, for throughput studies.
struct GenerationStats {
  double seconds = 0, prefill_seconds = 0;
  // Key and value elements in the KV caches per row when generation ended
  // (a Block Transformer: the block decoder's cache plus the largest local
  // cache of the token decoder), and read by attention over all decode
  // steps per row (prefill excluded).
  int64_t kv_entries = 0;
  double kv_reads = 0;
  int64_t block_kv_entries = 0, token_kv_entries = 0;  // a Block Transformer's two parts
};

// The token drawn from one row of `vocab` logits under the options.
int DrawToken(const float* logits, int64_t vocab, const SampleOptions& o, common::SplitMix64& rng);
// Each row's budget of new tokens: up to `max_new_tokens`, and no further
// than `max_len` (a long row in the batch does not cut the others short).
std::vector<size_t> RowBudgets(const std::vector<std::vector<int>>& prompts, int64_t max_new_tokens, int64_t max_len);
// One decode step: draws the token of every row not yet `done` (nor out of
// its `budget`) from `logits` [rows, vocab] (any device and float type) with
// its own stream, appends it and its log-probability (temperature 1) to
// `out`, calls `drawn(row, token)`, and marks rows that drew a stop token or
// spent their budget done. True when some row goes on.
bool DrawStep(const Tensor& logits, const SampleOptions& options, const std::vector<size_t>& budget,
              std::vector<common::SplitMix64>& rngs, std::vector<bool>& done, std::vector<Sampled>& out,
              const std::function<void(int64_t, int)>& drawn);

// Samples a continuation of every prompt (token ids, no padding) in one
// batch: prompts are left-padded, the prefix is encoded once, then one token
// per step through the KV cache. A row's tokens depend only on (model, its
// prompt, options, its index), never on the other rows.
// A Block Transformer generates through GenerateBlocks, with the same contract.
std::vector<Sampled> Generate(Transformer& model, const std::vector<std::vector<int>>& prompts,
                              const SampleOptions& options, GenerationStats* stats = nullptr);
// Block Transformer generation: prompts are left-padded to whole blocks
// (blocks of padding only are masked), only the block decoder prefills;
// each new block takes one cached block-decoder step and block_length
// token-decoder steps with a local cache of prefix + block_length - 1
// positions. Equals BlockForward on each row alone (with its first-block
// padding) to float rounding.
std::vector<Sampled> GenerateBlocks(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                    const SampleOptions& options, GenerationStats* stats = nullptr);

// --- files ---

// Training state saved with the model so a resumed run continues exactly.
struct TrainState {
  int64_t step = 0;               // optimizer steps done
  bool finished = false;          // training ended (all steps, or early stop)
  double best_val = 0;            // +inf before the first evaluation
  int64_t bad_evals = 0;
  double window_loss = 0;         // the current loss-logging window
  int64_t window_steps = 0;
  int64_t tokens = 0;
  std::vector<std::tuple<std::string, int64_t, double>> metrics;  // everything reported so far
};

struct Checkpoint {
  ModelConfig model;            // d_ff resolved
  nlohmann::json job_config;    // the training job's config (its task keys say what it learned)
  int64_t vocab = 0;
  std::string optimizer;          // "" when no optimizer state is stored
  std::string optimizer_bytes;    // torch archive
  std::string model_bytes;        // torch archive of the parameters and buffers
  TrainState state;
};

// Serializes / parses the checkpoint container (magic, version, JSON
// metadata, torch archives). Parse fails with DataLoss on anything malformed.
std::string SerializeCheckpoint(const Checkpoint& c);
common::Result<Checkpoint> ParseCheckpoint(std::string_view bytes, const std::string& path);
std::string SaveModule(torch::nn::Module& module);
common::Status LoadModule(torch::nn::Module& module, const std::string& bytes, const std::string& what,
                          torch::Device device = torch::kCPU);
std::string SaveOptimizer(torch::optim::Optimizer& optimizer);

// Whether the fused CPU kernels are on (SHAMMIE_FUSED is not "0").
bool FusedKernelsEnabled();
// clip_grad_norm_(max_norm = clip; none when clip <= 0) and optimizer.step()
// in one pass per parameter (fused::AdamWUpdate), on the optimizer's own
// state, so checkpoints and LibTorch's step stay interchangeable. Returns
// false, doing nothing, where it does not apply (a parameter or gradient
// off the CPU, not float32 or not contiguous; amsgrad; SHAMMIE_FUSED=0).
bool FusedAdamWStep(torch::optim::AdamW& optimizer, double clip);
common::Status LoadOptimizer(torch::optim::Optimizer& optimizer, const std::string& bytes, const std::string& what,
                             torch::Device device = torch::kCPU);

// Reads a checkpoint file (hash-verified) and builds its model.
struct LoadedModel {
  Checkpoint checkpoint;
  Transformer model{nullptr};
};
common::Result<LoadedModel> LoadModelFile(const std::string& path);

// Llama-style safetensors (model.embed_tokens.weight, model.layers.N.
// self_attn.q_proj.weight, ..., model.norm.weight, lm_head.weight).
common::Status ExportSafetensors(Transformer& model, const std::string& path);
common::Status ImportSafetensors(Transformer& model, const std::string& path);

// --- shared by the job kinds (workers/lm.cpp) ---

// A fixed evaluation set of a split: every example when the task is small,
// else `n` drawn with a seed derived from the task (the same prompts for
// every job of a sweep).
std::vector<Example> EvalSet(const SyntheticTask& task, Split split, int64_t n);
// The one upstream artifact named "model" (nullptr when there is none and it
// is not `required`); InvalidArgument naming `kind` otherwise.
common::Result<const Artifact*> UpstreamModel(const JobContext& ctx, bool required, const std::string& kind);

// 1, 2, 4, ..., n (n itself last even when it is not a power of two): the N
// of the pass@N and best-of-N curves.
std::vector<int64_t> Doublings(int64_t n);
// BOS, the prompt, then `answer`.
std::vector<int> WithBos(const std::vector<int>& prompt, const std::vector<int>& answer = {});
// Answer tokens up to (not including) the first EOS.
std::vector<int> WithoutEos(const std::vector<int>& answer);
// Sequences [first, end) of `seqs` right-padded into [n, longest] tokens,
// with each one's last real position (what the score head reads).
struct Padded {
  Tensor input, last;
};
Padded RightPadded(const std::vector<std::vector<int>>& seqs, size_t first, size_t end);
// A pav.verifier's score (the logit of its Q^pi) at every position of
// `input` (BOS prompt answer, right-padded): the scalar head, plus with
// `likelihood` the model's own log-likelihood of the answer's tokens up to
// there (the answer: the tokens after the first '=', which ends the prompt).
Tensor VerifierScores(Transformer& verifier, const Tensor& input, bool likelihood);
// Samples continuations of `prompts` in chunks of `batch` (chunk c draws
// from DeriveSeed(seed, "chunk", c's first row)). Deterministic for a given
// batch size; another batch size gives other (equally valid) samples, and a
// chunk's longest prompt caps its rows' new tokens at the model's max_len.
// Sets `status` (kCancelled) and returns early when the job is cancelled.
std::vector<Sampled> SampleChunked(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                   SampleOptions options, size_t batch, uint64_t seed, const JobContext& ctx,
                                   common::Status& status);
// REINFORCE's leave-one-out baseline: rows come in consecutive groups of
// `group` samples of one prompt; each reward minus the mean of its group's
// other rewards (the reward itself when group = 1).
std::vector<double> LeaveOneOut(const std::vector<double>& reward, int64_t group);
// Teacher-forced sum over each response's tokens (those after its prompt,
// EOS included when generated) of w_t log p(token_t | context) under
// `model`: [rows]. w_t = weights[row][t], or 1 without weights. With
// gradients unless the caller holds a NoGradGuard. A Block Transformer
// scores in its generation layout (each prompt ending at a block boundary),
// so the result matches the sampler's log-probabilities in either mode.
Tensor ResponseLogProb(Transformer& model, const std::vector<std::vector<int>>& prompts,
                       const std::vector<Sampled>& responses,
                       const std::vector<std::vector<double>>* weights = nullptr);
// "train", "validation" or "test"; InvalidArgument otherwise.
common::Result<Split> SplitFromName(const std::string& name);
// A window (`window` + 1 tokens) of the packed stream of `split`: its
// examples (BOS prompt answer) back to back, from a random point of the
// first (lm.train's `packed` corpus).
std::vector<int32_t> PackedWindow(const SyntheticTask& task, Split split, int64_t window, common::SplitMix64& rng);
// Decode prompts: n windows of `length` tokens of the packed stream of
// `split`, from a fixed seed named `label`, so every model measured under the
// label gets the same prompts (lm.block_decode, lm.loop_decode).
std::vector<std::vector<int>> PackedPrompts(const SyntheticTask& task, Split split, int64_t length, int64_t n,
                                            std::string_view label);
// What lm.eval, lm.sample and lm.loop_decode start from: the upstream
// model, the task (the one it was trained on unless the job's
// trained_task = false) and up to `n` examples of the job's `split`; sets
// the job's `threads`. The examples must fit the model's max_len; n = 0
// (lm.block_decode, which reads packed windows) draws none and skips that
// check.
struct UpstreamWork {
  LoadedModel loaded;
  std::unique_ptr<SyntheticTask> task;
  std::vector<Example> examples;
};
common::Result<UpstreamWork> OpenUpstream(const JobContext& ctx, const std::string& kind, int64_t n);
// The one upstream artifact called `name`; InvalidArgument naming `kind`
// and `hint` (what to put in depends_on) when there is none or several.
common::Result<const Artifact*> OneInput(const JobContext& ctx, const std::string& name, const std::string& kind,
                                         const std::string& hint);
// The same for an artifact that may be absent (nullptr); several are refused.
common::Result<const Artifact*> OptionalInput(const JobContext& ctx, const std::string& name, const std::string& kind,
                                              const std::string& hint);

}  // namespace shammie::workers::lm
