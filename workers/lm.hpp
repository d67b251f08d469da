// The LibTorch training runtime's public face. No LibTorch types here: the
// orchestrator and tests include this without compiling torch headers
// (DESIGN.md §2); everything torch lives in workers/lm.cpp.
//
// Model: a decoder-only transformer (RMSNorm, rotary positions, SwiGLU MLP,
// causal attention, tied embeddings by default) with a next-token LM head and
// a scalar score head. Training: AdamW with decoupled weight decay, linear
// warmup then cosine decay, gradient clipping, accumulation, periodic
// evaluation with early stopping; loss on answer tokens only. Data-parallel
// across the job's gang: parameters broadcast from gang rank 0, gradients
// summed by bucketed allreduce, each rank taking its slice of the global batch,
// so k ranks compute the same step as one rank on the whole batch.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.hpp"
#include "workers/job.hpp"
#include "workers/tasks.hpp"

namespace shammie::workers {

struct ModelConfig {
  int64_t d_model = 64;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t d_ff = 0;  // 0: the SwiGLU default, 8/3 d_model rounded up to a multiple of 8
  int64_t max_len = 128;
  bool tied_embeddings = true;
  int64_t classes = 0;  // classification head width; 0 = none
  // Recursive transformer (workers/recursive.hpp, PAPERS.md §1): the
  // `layers` positions run layers / loops shared blocks, looped `loops`
  // times with `tying` "cycle" (position l runs block l mod K) or
  // "sequence" (block l / loops). 1 = a vanilla model.
  int64_t loops = 1;
  std::string tying = "cycle";
  // Relaxed recursion: at every position, a rank-r LoRA B A on each of the
  // seven projections and a delta on each of the two norm weights; 0 = none.
  int64_t lora_rank = 0;
  // Block Transformer (workers/lm_block.cpp, PAPERS.md §4), 0 = vanilla:
  // tokens are grouped in blocks of block_length; an embedder concatenates
  // each block's token embeddings (block_d_model / block_length each) into
  // one block embedding; a causal block decoder of block_layers layers,
  // block_d_model wide, reads them; a linear map turns its output for block
  // i into `prefix` vectors from which the token decoder (the d_model /
  // layers / heads stack above, with the embedding and LM head) decodes
  // block i + 1 attending only within that block.
  int64_t block_length = 0;
  int64_t block_d_model = 0;
  int64_t block_layers = 0;
  int64_t prefix = 2;
  bool operator==(const ModelConfig&) const = default;
};

// The vanilla model of `c`'s dimensions: the recursion (loops, tying, LoRA)
// taken out. What a recursive model converts from and unrolls into.
inline ModelConfig WithoutRecursion(ModelConfig c) {
  c.loops = 1;
  c.lora_rank = 0;
  c.tying = "cycle";
  return c;
}

struct TrainConfig {
  TaskSpec task;
  // Token shards of real data (workers/dataset.hpp) instead of `task`:
  // next-token loss on windows of `window` tokens; val/test accuracy is
  // next-token accuracy. Empty: the synthetic task.
  std::vector<std::string> data;
  int64_t window = 64;
  // With the task and packed: next-token loss on windows of `window` tokens
  // cut from the task's examples (BOS prompt answer) laid back to back, a
  // language-modelling corpus; val/test accuracy is next-token accuracy.
  bool packed = false;
  // With the task: train on a fixed pool of this many distinct training
  // examples (drawn from the seed), the few-shot regime; 0: a fresh draw
  // from the whole training split every step.
  int64_t train_examples = 0;
  // With an arith task: each step of a training answer is, with this
  // probability, written with a wrong value that later steps carry on
  // (SyntheticTask::WithSlips); validation and test answers stay exact. The
  // noisy-SFT policy of the PAV study: trained to convergence, it keeps
  // making slips at about this rate, on any CPU.
  double step_noise = 0;
  ModelConfig model;
  int64_t steps = 200;          // 0: evaluate the starting model only
  int64_t batch = 32;         // global batch (examples per optimizer step, all ranks together)
  int64_t accumulation = 1;   // micro-batches per step (batch must divide evenly)
  double learning_rate = 3e-3;
  std::string optimizer = "adamw";  // or "sgd" (momentum 0.9)
  int64_t warmup = 20;        // steps of linear warmup
  double min_lr_ratio = 0.1;  // cosine decays to this fraction of learning_rate
  double weight_decay = 0.01;
  double clip = 1.0;          // global gradient-norm clip; 0 = off
  // Early-exit training: the loss adds exit_loss x the mean next-token loss
  // read from every earlier block (a recursive model: every earlier loop's
  // end) through the final norm and the LM head; 0 = off (the plain loss,
  // bit for bit).
  double exit_loss = 0;
  // Converting an upstream vanilla model into this job's recursive one
  // (model.loops > 1 or model.lora_rank > 0, the other model keys equal):
  // which original layers start each shared block ("stepwise", "average",
  // "lower"), and how the LoRA starts: "svd" (the truncated SVD of each
  // position's residual from its shared block; at full rank the converted
  // model computes the original's function) or "zero" (B = 0).
  std::string recursive_init = "stepwise";
  std::string lora_init = "svd";
  // Knowledge distillation from the upstream model: the answer-token loss
  // is (1 - distill) CE + distill KL(teacher || student); 0 = off.
  double distill = 0;
  int64_t eval_every = 50;
  int64_t eval_examples = 256;
  int64_t patience = 0;       // evaluations without a better validation loss before stopping; 0 = off
  int64_t log_every = 10;
  int64_t threads = 1;        // intra-op threads per rank
  std::string device = "cpu";      // or "cuda": needs a CUDA LibTorch and a visible GPU (no fallback)
  std::string precision = "fp32";  // or "bf16": autocast to bfloat16 on CUDA
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0: only at the end and when stopped
  // "auto": start from the upstream job's model when there is one;
  // "upstream": require one; "scratch": never.
  std::string init = "auto";
  // Llama-style safetensors (ImportSafetensors) to start from instead of an
  // upstream model; with recursion keys, the imported (vanilla) model is
  // converted. "": none.
  std::string weights;
  // false: record no final checkpoint (a probe fine-tune that only reports
  // scores); a stopped job still checkpoints so that a resume continues.
  bool save_model = true;
  // The artifact name of the checkpoint: "model", or "prover" for a second
  // policy the pav kinds complete prefixes with (a job depending on a policy
  // and a prover can tell them apart).
  std::string record_as = "model";
  uint64_t seed = 0;
};

struct TrainResult {
  int64_t steps = 0;              // optimizer steps taken (< config.steps when stopped early)
  double train_loss = 0;          // mean over the last logged window
  double val_loss = 0, val_accuracy = 0;
  double step0_val_loss = 0, step0_val_accuracy = 0;  // the starting model (before any step)
  double test_accuracy = 0;
  double tokens_per_second = 0;   // training tokens (all ranks) per wall second
  int64_t parameters = 0;
  std::vector<float> flat_parameters;  // every parameter, in registration order (for tests)
  int64_t resumed_from = 0;            // step of this job's checkpoint it continued from; 0 = fresh
  std::string initialized_from;        // upstream job whose model it started from
  std::vector<std::tuple<std::string, int64_t, double>> metrics;  // the whole curve, in report order
};

// Trains a fresh model on `config.task`, reporting metrics through `ctx`
// (loss, lr, val_loss, val_accuracy, test_accuracy). Data-parallel over
// ctx.collectives() when the gang has several ranks (batch must divide by
// ranks * accumulation).
common::Result<TrainResult> TrainLanguageModel(const TrainConfig& config, JobContext& ctx);

// The job kinds' code (keys declared in workers/lm_kinds.cpp):
// - lm.train: TrainLanguageModel from the job's config; records the final
//   checkpoint as artifact "model" (and one when stopped, which a resume
//   continues from with the same loss curve), and artifact "summary": a JSON
//   object with the final scores (steps, val_loss, val_accuracy,
//   step0_val_loss, step0_val_accuracy, test_accuracy) and where the model
//   started (initialized_from: the upstream job, init_model: its file), which
//   downstream jobs such as continual.select read.
// - lm.eval: the upstream model on a split of a task: teacher-forced loss,
//   greedy-generation exact match, and a per-example table "predictions".
// - lm.sample: samples with temperature/top-k/top-p from the upstream model
//   and stores them with their log-probabilities as table "samples".
common::Status RunLmTrain(JobContext& ctx);
common::Status RunLmEval(JobContext& ctx);
common::Status RunLmSample(JobContext& ctx);
common::Status RunLmEarlyExit(JobContext& ctx);

// - lm.loop_decode (workers/lm_recursive.cpp): greedy decoding of the
//   upstream (recursive, CYCLE) model with early exits at loop boundaries
//   under each batching policy (static, continuous sequence-wise,
//   continuous depth-wise); tokens/s, tokens per call, accuracy.
common::Status RunLmLoopDecode(JobContext& ctx);
// - lm.block_decode (workers/lm_block.cpp): greedy KV-cached decoding of the
//   upstream Block Transformer or vanilla model from prompts of the packed
//   corpus; tokens/s, KV-cache bytes per sample (measured and by formula),
//   KV entries read per token.
common::Status RunLmBlockDecode(JobContext& ctx);

// Process advantage verifiers (workers/lm_pav.cpp, PAPERS.md §2):
// - pav.didactic: the planted-subsequence task. A MADE-style MLP policy is
//   fine-tuned on samples of a gamma prover, then trained by REINFORCE with
//   the per-step effective reward Q^pi + alpha A^mu, Q^pi estimated by the
//   trajectory's outcome (leave-one-out baseline) and A^mu exact
//   (workers/pav.hpp). alpha = 0 is outcome-only RL.
common::Status RunPavDidactic(JobContext& ctx);
// - pav.rollouts: Monte-Carlo values Q^pi of the step prefixes of the
//   upstream policy's own solutions (arith chains, one step per '=').
// - pav.verifier: fine-tunes the policy's score head and body to predict
//   those values (cross-entropy on soft labels); artifact "verifier".
// - pav.search: best-of-N against the verifier as an outcome reward model, or
//   step-level beam search scored by Q^pi + alpha A^mu with mu = Best-of-K.
common::Status RunPavRollouts(JobContext& ctx);
common::Status RunPavVerifier(JobContext& ctx);
common::Status RunPavSearch(JobContext& ctx);
// - pav.rl: online REINFORCE of the upstream policy on training prompts with
//   the per-step effective reward (outcome - baseline) + alpha A^mu, A^mu
//   from the verifier and mu = Best-of-K; alpha = 0 is outcome-only RL.
common::Status RunPavRl(JobContext& ctx);
// Reward-model ensembles (workers/lm_rm.cpp, PAPERS.md §7) on the "distinct"
// task: rm.prefs (length-biased preference pairs of policy samples),
// rm.train (a reward model fine-tuned from a pretrained backbone),
// rm.score (a best-of-n pool: policy samples scored by every reward model),
// rm.bon (best-of-n under each aggregation of an ensemble), rm.rl
// (KL-regularized REINFORCE against an aggregated reward).
common::Status RunRmPrefs(JobContext& ctx);
common::Status RunRmTrain(JobContext& ctx);
common::Status RunRmScore(JobContext& ctx);
common::Status RunRmBestOfN(JobContext& ctx);
common::Status RunRmRl(JobContext& ctx);

}  // namespace shammie::workers
