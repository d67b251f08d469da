#include "workers/lm_kinds.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "common/blas_core.hpp"
#include "common/schema.hpp"
#include "workers/tasks.hpp"

namespace shammie::workers {

namespace {

using EntryPoint = common::Status* (*)(JobContext*);

struct Plugin {
  void* handle = nullptr;
  std::string error;
};

const Plugin& LoadPlugin() {
  static Plugin plugin;
  static std::once_flag once;
  std::call_once(once, [] {
    // LibTorch brings OpenBLAS with it: name its kernels before it loads
    // (common/blas_core.hpp).
    common::PreferOpenBlasCore();
    std::vector<std::string> candidates;
    if (const char* dir = std::getenv("SHAMMIE_PLUGIN_DIR")) candidates.push_back(std::string(dir) + "/libshammie_lm.so");
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libshammie_lm.so").string());
    for (const auto& path : candidates) {
      if (!std::filesystem::exists(path)) continue;
      plugin.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (plugin.handle) return;
      plugin.error = path + ": " + ::dlerror();
      return;
    }
    plugin.error = "libshammie_lm.so not found (looked in $SHAMMIE_PLUGIN_DIR and next to the shammie executable)";
  });
  return plugin;
}

common::Status CallPlugin(const char* symbol, JobContext& ctx) {
  const Plugin& plugin = LoadPlugin();
  if (!plugin.handle) {
    return common::Internal("the LibTorch runtime plugin cannot be loaded: " + plugin.error);
  }
  auto entry = reinterpret_cast<EntryPoint>(::dlsym(plugin.handle, symbol));
  if (!entry) return common::Internal(std::string("the LibTorch runtime plugin lacks ") + symbol);
  std::unique_ptr<common::Status> status(entry(&ctx));
  return *status;
}

}  // namespace

namespace {

void DeclareModelKeys(common::Schema& s) {
  s.Int("d_model").Default(64).Range(8, 4096).Doc("Model width.");
  s.Int("layers").Default(2).Range(1, 64).Doc("Transformer blocks.");
  s.Int("heads").Default(4).Range(1, 64).Doc("Attention heads (d_model / heads must be even).");
  s.Int("max_len").Default(64).Range(8, 8192).Doc("Longest sequence (rotary table size).");
  s.Bool("tied_embeddings").Default(true).Doc("Output projection tied to the token embedding.");
}

void DeclareUpstreamTaskKeys(common::Schema& s) {
  s.Bool("trained_task").Default(true)
      .Doc("Use the task the upstream model was trained on; false: the task keys of this job (setting task keys "
           "while this is true is an error).");
  DeclareTaskKeys(s);
  s.Enum("split", {"train", "validation", "test"}).Default("test").Doc("Which split's prompts.");
}

void Register(KindRegistry& registry, JobKind k) {
  common::Status s = registry.Register(std::move(k));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

}  // namespace

void RegisterLmKinds(KindRegistry& registry) {
  {
    JobKind k;
    k.name = "lm.train";
    k.doc = "Trains a small decoder-only transformer on a synthetic task (data-parallel over resources.ranks), or "
            "fine-tunes the upstream job's model; reports loss, lr, val_loss, val_accuracy, test_accuracy (exact "
            "match) and records the checkpoint as artifact \"model\" and its scores as artifact \"summary\". A stopped "
            "job resumes from its checkpoint.";
    k.config = common::Schema(k.name, k.doc);
    DeclareTaskKeys(k.config);
    k.config.Add("data", common::ValueType::kStringList).Default(nlohmann::json::array())
        .Doc("Token shards of real data (NAME.bin + NAME.json, see docs/runtime.md; paths absolute or relative to "
             "where shammie runs) to train on instead of the task: next-token loss on windows, 10% of documents for "
             "validation and 10% for test.");
    k.config.Int("window").Default(64).Range(1, 1 << 20).Doc("With data: tokens per training window (<= max_len).");
    DeclareModelKeys(k.config);
    k.config.Int("steps").Default(300).Range(0, 10000000)
        .Doc("Optimizer steps; 0 evaluates the starting model only (e.g. a zero-shot score of an upstream model).");
    k.config.Int("train_examples").Default(0).Range(0, 1000000000)
        .Doc("Train on a fixed pool of this many distinct training examples of the task, drawn from the seed (the "
             "few-shot regime); 0 = a fresh draw from the whole training split every step.");
    k.config.Float("step_noise").Default(0.0).Min(0).Max(1, true)
        .Doc("arith only: the probability that each step of a training answer is written with a wrong value (one "
             "of the other residues, uniformly), which later steps carry on; validation and test answers stay "
             "exact. 0 = clean answers.");
    k.config.Bool("save_model").Default(true)
        .Doc("Record the final checkpoint (as artifact \"model\", or record_as); false for probe fine-tunes that only "
             "report scores (artifact \"summary\" is always recorded).");
    k.config.Enum("record_as", {"model", "prover"})
        .Doc("The checkpoint's artifact name (absent: \"model\"). \"prover\": a second policy, which pav.rollouts "
             "completes the policy's prefixes with (PAPERS.md §2); a job that depends on both tells them apart by "
             "name.");
    k.config.Int("batch").Default(32).Range(1, 1 << 20).Doc("Global batch: examples per step over all ranks.");
    k.config.Int("accumulation").Default(1).Range(1, 1024).Doc("Micro-batches per step.");
    k.config.Float("learning_rate").Default(3e-3).Min(0, true).Max(10).Doc("Peak learning rate.");
    k.config.Enum("optimizer", {"adamw", "sgd"}).Default("adamw")
        .Doc("adamw (betas 0.9, 0.95; decoupled weight decay) or sgd (momentum 0.9).");
    k.config.Int("warmup").Default(20).Range(0, 10000000).Doc("Linear warmup steps; then cosine decay to 10%.");
    k.config.Float("weight_decay").Default(0.01).Min(0).Doc("Weight decay.");
    k.config.Float("clip").Default(1.0).Min(0).Doc("Gradient-norm clip; 0 = off.");
    k.config.Float("exit_loss").Default(0.0).Min(0).Max(100)
        .Doc("Early-exit training: add this weight x the mean loss read from every earlier block (a recursive model: "
             "every earlier loop end) through the final norm and LM head (so lm.early_exit can stop there); 0 = off.");
    k.config.String("weights")
        .Doc("Llama-style safetensors (model.layers.N.self_attn.q_proj.weight, ...; see docs/runtime.md) to start "
             "from instead of an upstream model, e.g. weights trained elsewhere; with loops / lora_rank the imported "
             "model is converted. Path absolute or relative to where shammie runs. Unset: none.");
    k.config.Int("loops").Range(1, 64)
        .Doc("Recursive transformer: layers / loops shared blocks run loops times (must divide layers); 1 = "
             "vanilla. From a vanilla upstream model of the same dimensions, the job converts it (recursive_init, "
             "lora_init) and uptrains. Unset: 1.");
    k.config.Enum("tying", {"cycle", "sequence"})
        .Doc("cycle: position l runs shared block l mod K (the stack looped); sequence: block l / loops (each "
             "block repeated in a row). Unset: cycle.");
    k.config.Int("lora_rank").Range(0, 4096)
        .Doc("Relaxed recursion: a rank-r LoRA on every projection at every position (plus norm-weight deltas); "
             "at most d_model (full rank); 0 or unset = none.");
    k.config.Enum("recursive_init", {"stepwise", "average", "lower"})
        .Doc("Converting a vanilla model: shared block k starts from original layer round(linspace(0, L-1, K))[k] "
             "(stepwise), the mean of the layers tied to it (average), or layer k (lower). Unset: stepwise.");
    k.config.Enum("lora_init", {"svd", "zero"})
        .Doc("Converting with LoRA: svd = truncated SVD of each position's residual from its shared block (full "
             "rank reproduces the vanilla model); zero = B starts at 0. Unset: svd.");
    k.config.Float("distill").Min(0).Max(1)
        .Doc("Knowledge distillation from the upstream model: loss (1 - distill) CE + distill KL(teacher || "
             "student) on answer tokens; 0 or unset = off.");
    k.config.Int("block_length").Range(0, 64)
        .Doc("Block Transformer (PAPERS.md §4, docs/experiments/block-transformer.md): tokens per block; the "
             "d_model / layers stack becomes the token decoder, under a block decoder of block_d_model / "
             "block_layers. 0 or unset = vanilla.");
    k.config.Int("block_d_model").Range(1, 1 << 16)
        .Doc("With block_length: the block decoder's width (a multiple of block_length and of heads; each token "
             "embeds into block_d_model / block_length).");
    k.config.Int("block_layers").Range(1, 1024).Doc("With block_length: the block decoder's layers.");
    k.config.Int("prefix").Range(1, 64)
        .Doc("With block_length: prefix vectors the context embedding expands into for the token decoder. Unset: 2.");
    k.config.Bool("packed")
        .Doc("Language modelling on the task's examples (BOS prompt answer) packed back to back: next-token loss on "
             "every position of windows of `window` tokens; val/test accuracy is next-token accuracy. Unset: false "
             "(loss on answer tokens of single examples).");
    k.config.Int("eval_every").Default(50).Range(1, 10000000).Doc("Steps between validation evaluations.");
    k.config.Int("eval_examples").Default(256).Range(1, 1000000)
        .Doc("Validation/test examples when a split is too big to enumerate.");
    k.config.Int("patience").Default(0).Range(0, 1000000)
        .Doc("Evaluations without improvement before stopping early; 0 = off.");
    k.config.Int("checkpoint_every").Default(0).Range(0, 10000000)
        .Doc("Steps between checkpoints (a crash resumes from the last); 0 = at the end and when stopped only.");
    k.config.Enum("init", {"auto", "upstream", "scratch"}).Default("auto")
        .Doc("auto: start from the upstream job's model when there is one; upstream: require it; scratch: never.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads per rank.");
    k.config.Enum("device", {"cpu", "cuda"}).Default("cpu")
        .Doc("cuda: train on this rank's GPU (local rank modulo the visible devices), gradients summed over the gang "
             "with NCCL; needs a CUDA build of LibTorch; never falls back to the CPU.");
    k.config.Enum("precision", {"fp32", "bf16"}).Default("fp32").Doc("bf16: autocast to bfloat16 (device = cuda).");
    k.check = [](const nlohmann::json& c) {
      std::vector<ConfigProblem> problems;
      // The recursion keys have no defaults (absent unless set), so that adding
      // them left every existing lm.train job's id as it was.
      const int64_t layers = c["layers"].get<int64_t>(), loops = c.value("loops", int64_t{1});
      if (layers % loops != 0) {
        problems.push_back({"loops", "must divide layers (" + std::to_string(layers) + ")"});
      }
      if (c.value("lora_rank", int64_t{0}) > c["d_model"].get<int64_t>()) {
        problems.push_back({"lora_rank", "exceeds d_model (" + std::to_string(c["d_model"].get<int64_t>()) +
                                             "), the full rank of every projection's residual"});
      }
      if (c.value("block_length", int64_t{0}) > 0) {
        const int64_t len = c["block_length"].get<int64_t>(), heads = c["heads"].get<int64_t>();
        if (!c.contains("block_d_model") || !c.contains("block_layers")) {
          problems.push_back({"block_length", "a Block Transformer needs block_d_model and block_layers too"});
        } else {
          const int64_t width = c["block_d_model"].get<int64_t>();
          if (width % len != 0) {
            problems.push_back({"block_d_model", "must be a multiple of block_length (" + std::to_string(len) + ")"});
          }
          if (width % heads != 0 || (width / heads) % 2 != 0) {
            problems.push_back({"block_d_model", "must be a multiple of heads (" + std::to_string(heads) +
                                                     ") with an even head dimension"});
          }
        }
        if (c.value("loops", int64_t{1}) != 1 || c.value("lora_rank", int64_t{0}) != 0) {
          problems.push_back({"block_length", "a Block Transformer takes no loops or lora_rank"});
        }
        if (len + c.value("prefix", int64_t{2}) > c["max_len"].get<int64_t>()) {
          problems.push_back({"block_length", "block_length + prefix exceeds max_len (" +
                                                  std::to_string(c["max_len"].get<int64_t>()) + ")"});
        }
      } else if (!c.contains("block_length")) {  // block_length = 0 with them: a vanilla row of a zip sweep
        for (const char* key : {"block_d_model", "block_layers", "prefix"}) {
          if (c.contains(key)) problems.push_back({key, "applies to a Block Transformer; set block_length too"});
        }
      }
      if (c.value("packed", false) && c.contains("data") && !c["data"].empty()) {
        problems.push_back({"packed", "lays out the task's examples; it does not apply to data"});
      }
      if (c.value("task", std::string()) == "text" && !c.value("packed", false) &&
          (!c.contains("data") || c["data"].empty())) {
        problems.push_back({"task", "text is prose without answers: train a language model of it with packed = true"});
      }
      return problems;
    };
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_train", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "lm.loop_decode";
    k.doc = "Greedy decoding of the upstream model (a recursive model with CYCLE tying, or a vanilla one as a "
            "single loop) on a split's prompts with early exits at loop boundaries, under static, continuous "
            "sequence-wise and continuous depth-wise batching (docs/experiments/recursive.md). Metrics per policy P: "
            "P_tokens_per_second (the fastest of `repeats` runs, prefill included), P_decode_tokens_per_second "
            "(prefill excluded: the policies prefill at different times and batch sizes), P_prefill_seconds, "
            "P_tokens_per_call, P_stages_per_token, "
            "P_utilization, P_calls, P_accuracy; exit_rate, policies_agree (1 when every policy decoded the same "
            "tokens).";
    k.config = common::Schema(k.name, k.doc);
    DeclareUpstreamTaskKeys(k.config);
    k.config.Add("batching", common::ValueType::kStringList)
        .Default(nlohmann::json::array({"static", "sequence", "depth"}))
        .Doc("Policies to measure, one after another in this job: static, sequence, depth.");
    k.config.Int("prompts").Default(256).Range(1, 1000000)
        .Doc("Prompts of the split: the same fixed evaluation set lm.eval draws (all of a small split).");
    k.config.Int("batch").Default(16).Range(1, 4096).Doc("Rows per call of the shared block.");
    k.config.Float("exit_threshold").Default(0.9).Min(0)
        .Doc("A token exits after an earlier loop when its top next-token probability reaches this; > 1: never.");
    k.config.Int("max_new_tokens").Default(0).Range(0, 8192)
        .Doc("Tokens per prompt at most; 0: the longest answer of the prompts (EOS included).");
    k.config.Int("prompt_length").Range(2, 8192)
        .Doc("Unset: the split's examples are the prompts. Set: `prompts` windows of this many tokens of the "
             "split's packed stream (prose without answers, task = text; no accuracy); needs max_new_tokens.");
    k.config.Int("repeats").Default(3).Range(1, 100)
        .Doc("Rounds over the policies (round robin, so load drift hits each alike); each reports its fastest.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.check = [](const nlohmann::json& c) {
      std::vector<ConfigProblem> problems;
      std::set<std::string> seen;
      for (const auto& p : c["batching"]) {
        if (p != "static" && p != "sequence" && p != "depth") {
          problems.push_back({"batching", "unknown policy " + p.dump() + " (static, sequence, depth)"});
        } else if (!seen.insert(p.get<std::string>()).second) {
          problems.push_back({"batching", "names " + p.dump() + " twice"});
        }
      }
      if (c["batching"].empty()) problems.push_back({"batching", "name at least one policy"});
      if (c.contains("prompt_length") && c["max_new_tokens"].get<int64_t>() == 0) {
        problems.push_back({"max_new_tokens", "must be set with prompt_length: windows of prose have no answers"});
      }
      return problems;
    };
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_loop_decode", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "lm.block_decode";
    k.doc = "Greedy KV-cached decoding of the upstream model, a Block Transformer or a vanilla one "
            "(docs/experiments/block-transformer.md): `rounds` batches of `batch` prompts of `prompt_length` tokens "
            "from the packed stream of its task's split, `new_tokens` each. Metrics: tokens_per_second (the "
            "fastest of `repeats`, prefill included), decode_tokens_per_second, prefill_seconds, seconds, "
            "kv_bytes_per_sample (allocated float32 caches at the end; a Block Transformer's block and token "
            "parts also apart), kv_bytes_formula (PAPERS.md §4(f) at prompt + new tokens), kv_reads_per_token "
            "(key/value elements attention read per generated token), parameters, non_embedding_parameters.";
    k.config = common::Schema(k.name, k.doc);
    DeclareUpstreamTaskKeys(k.config);
    k.config.Int("batch").Default(16).Range(1, 4096).Doc("Rows decoded together.");
    k.config.Int("prompt_length").Default(128).Range(1, 1 << 20).Doc("Tokens per prompt (BOS counted when drawn).");
    k.config.Int("new_tokens").Default(64).Range(1, 1 << 20).Doc("Tokens generated per row (no stop token).");
    k.config.Int("rounds").Default(1).Range(1, 10000).Doc("Batches per timed run.");
    k.config.Int("repeats").Default(3).Range(1, 100).Doc("Timed runs; the fastest is reported.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_block_decode", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "lm.eval";
    k.doc = "Evaluates the upstream job's model on a split: teacher-forced loss, greedy-generation accuracy (the "
            "task's metric) and a per-example table \"predictions\" (prompt, answer, generated, correct, "
            "answer_logprob).";
    k.config = common::Schema(k.name, k.doc);
    DeclareUpstreamTaskKeys(k.config);
    k.config.Int("examples").Default(256).Range(1, 10000000)
        .Doc("Examples when the split is too big to enumerate (small splits are used whole); with lm.train's eval_examples, the trainer's test set.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_eval", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "lm.sample";
    k.doc = "Samples continuations of a split's prompts from the upstream job's model (batched, KV cache) and "
            "stores them with the model's log-probabilities as table \"samples\"; reports accuracy (the task's "
            "metric) and generation tokens/s.";
    k.config = common::Schema(k.name, k.doc);
    DeclareUpstreamTaskKeys(k.config);
    k.config.Int("prompts").Default(64).Range(1, 10000000).Doc("Prompts to sample from.");
    k.config.Int("samples").Default(4).Range(1, 100000).Doc("Samples per prompt.");
    k.config.Float("temperature").Default(1.0).Min(0).Max(100).Doc("Softmax temperature; 0 = greedy.");
    k.config.Int("top_k").Default(0).Range(0, 1000000).Doc("Keep the k most likely tokens; 0 = all.");
    k.config.Float("top_p").Default(1.0).Min(0, true).Max(1).Doc("Nucleus: the smallest set with this mass.");
    k.config.Int("max_new_tokens").Default(32).Range(1, 100000).Doc("Longest continuation.");
    k.config.Int("batch").Default(256).Range(1, 1 << 20).Doc("Rows decoded together.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_sample", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "lm.early_exit";
    k.doc = "Runs the upstream job's model with early exits and pruned MLP units on a one-token-answer task: each "
            "example stops at the first block whose prediction (final norm + LM head) has probability >= threshold; "
            "the `prune` share of each block's SwiGLU units with the smallest weight norms is removed. Table "
            "\"losses\" per example of the validation split and of a calibration part (the test split): loss = 1 "
            "when the answer differs from the full model's, cost = share of the full model's weight FLOPs. Metrics "
            "val_/cal_ risk, cost, accuracy, full_accuracy.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Bool("trained_task").Default(true)
        .Doc("Use the task the upstream model was trained on; false: the task keys of this job.");
    DeclareTaskKeys(k.config);
    k.config.Float("threshold").Default(1.0).Min(0).Max(1).Doc("Exit confidence: stop at the first block whose top probability reaches it; 1 = never exit early.");
    k.config.Float("prune").Default(0.0).Min(0).Max(0.99).Doc("Share of each block's MLP units removed (smallest weight norms first).");
    k.config.Int("validation_examples").Default(1000).Range(1, 10000000).Doc("Examples of the validation split.");
    k.config.Int("calibration_examples").Default(2000).Range(1, 10000000).Doc("Examples of the test split, the calibration part.");
    k.config.Int("batch").Default(512).Range(1, 1 << 20).Doc("Examples per forward pass.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_early_exit", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pav.didactic";
    k.doc = "Process advantage verifiers on the planted-subsequence task (PAPERS.md §2(e)): a sequence succeeds when "
            "the target occurs in it. A MADE-style MLP policy is fine-tuned on samples of the init_gamma prover, then "
            "trained by REINFORCE with the per-step effective reward Q^pi + alpha A^mu of the prover_gamma prover "
            "(A^mu exact by dynamic programming; alpha = 0 is outcome-only RL). Metrics success (per eval_every "
            "iterations), train_success, advantage, entropy (mean per state, of the training batch), final_success, "
            "reached_target, samples_to_target, pass_at (step = N), path_probability (step = k: the policy's "
            "probability of target[k] after target[0..k)); table \"samples\".";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("vocab").Default(13).Range(2, 1000).Doc("Tokens 1..vocab.");
    k.config.Int("length").Default(10).Range(1, 1000).Doc("Tokens per sequence.");
    k.config.Add("target", common::ValueType::kIntList).Default(nlohmann::json::array({3, 7, 1, 9}))
        .Doc("The planted subsequence (tokens in 1..vocab).");
    k.config.Float("init_gamma").Default(5.0).Min(0, true).Max(1e6)
        .Doc("The prover whose samples the policy is fine-tuned on first.");
    k.config.Int("sft_samples").Default(3200).Range(1, 10000000).Doc("Samples of the init_gamma prover.");
    k.config.Int("sft_iterations").Default(1000).Range(0, 10000000)
        .Doc("Fine-tuning steps (batch examples each); 1000 brings the policy to the init_gamma prover's per-step "
             "probabilities (the paper's 50 leave this MLP near uniform).");
    k.config.Float("prover_gamma").Default(10.0).Min(0, true).Max(1e6)
        .Doc("The prover mu whose advantages form the dense reward (1 = uniform; large = nearly always advances).");
    k.config.Float("alpha").Default(1.0).Min(0).Max(1000).Doc("Weight of A^mu; 0 = outcome-only RL.");
    k.config.Int("iterations").Default(1000).Range(0, 10000000).Doc("RL steps.");
    k.config.Int("batch").Default(64).Range(1, 1 << 20).Doc("Sequences per step (SFT and RL).");
    k.config.Float("learning_rate").Default(1e-3).Min(0, true).Max(10).Doc("Adam step size.");
    k.config.Float("entropy").Min(0).Max(100)
        .Doc("Weight of an entropy bonus in RL: the loss subtracts entropy x the policy's entropy at the batch's "
             "states (summed over positions, averaged over sequences). Not in the paper. Unset: 0, off.");
    k.config.Int("hidden").Default(128).Range(1, 1 << 16).Doc("Hidden units of each of the 3 layers.");
    k.config.Int("eval_every").Default(50).Range(1, 10000000).Doc("Iterations between evaluations.");
    k.config.Int("eval_samples").Default(1000).Range(1, 10000000).Doc("Policy samples per evaluation.");
    k.config.Float("success_target").Default(0.5).Min(0).Max(1)
        .Doc("samples_to_target: RL samples drawn when the evaluated success first reached this (reported only then; "
             "reached_target says whether it did).");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_pav_didactic", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pav.rollouts";
    k.doc = "Monte-Carlo value data for process verifiers (PAPERS.md §2): the upstream policy (an lm.train job on "
            "task = \"arith\") solves `prompts` training prompts `rollouts` times; from every step prefix of every "
            "solution (a step ends with '=') it samples `mc` completions, and Q-hat is their share of right final "
            "answers (complete solutions: the exact outcome). Table \"values\" and artifact \"values\" for "
            "pav.verifier; metrics policy_accuracy, completer_accuracy (the completions from the empty prefix), "
            "rollouts_per_second, tokens_per_second. With an upstream prover (an lm.train job with record_as = "
            "\"prover\") the policy writes the prefixes and the prover completes them: Q-hat is then Q^mu, and a "
            "pav.verifier on these values records a \"prover_verifier\". Fan out with a sweep over seeds: each job "
            "draws its own prompts.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("prompts").Default(200).Range(1, 10000000).Doc("Training prompts this job solves.");
    k.config.Int("rollouts").Default(4).Range(1, 100000).Doc("Solutions sampled per prompt (n_cov).");
    k.config.Int("mc").Default(8).Range(1, 100000).Doc("Completions per step prefix (n_mc).");
    k.config.Float("temperature").Default(1.0).Min(0).Max(100).Doc("Sampling temperature of the policy.");
    k.config.Int("max_new_tokens").Default(32).Range(1, 100000).Doc("Longest solution.");
    k.config.Int("batch").Default(1024).Range(1, 1 << 20).Doc("Rows decoded together.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_pav_rollouts", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pav.verifier";
    k.doc = "Trains a process verifier: the upstream policy's transformer with its scalar head, fine-tuned to predict "
            "Q^pi of (prompt, answer prefix) from the \"values\" of upstream pav.rollouts jobs (cross-entropy on "
            "soft labels; a tenth of the prompts held out). Serves as ORM (complete answers), PRM (Q^pi per step) and, "
            "with Q^{BoK} = 1 - (1 - Q^pi)^K, PAV. Artifact \"verifier\", or \"prover_verifier\" when the values "
            "are a trained prover's Q^mu (rollouts completed by it; values of both kinds are refused); metrics loss, "
            "val_loss, val_mae, val_final_auc (held-out complete answers), train_label_mean, completer_accuracy (the "
            "mean Q-hat of empty prefixes: the accuracy of the model that completed the rollouts).";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("steps").Default(600).Range(1, 10000000).Doc("Optimizer steps.");
    k.config.Int("batch").Default(64).Range(1, 1 << 20).Doc("Prefixes per step.");
    k.config.Float("learning_rate").Default(1e-3).Min(0, true).Max(10).Doc("Peak AdamW step size (warmup, cosine).");
    k.config.Int("eval_every").Default(100).Range(1, 10000000).Doc("Steps between validation evaluations.");
    k.config.Enum("targets", {"prefix", "steps"})
        .Default("prefix")
        .Doc("prefix: one (prefix, Q) row per sequence; steps: each rollout once, with its Q at every step boundary "
             "(the score head at each position; the same rows, read by a causal model in one pass).");
    k.config.Enum("score", {"head", "likelihood"})
        .Default("head")
        .Doc("head: the scalar head on the last hidden state; likelihood: that plus the log-likelihood the verifier's "
             "own language model (at first the policy's) gives the answer's tokens so far, so that a step the policy "
             "would not have written lowers the score without the head having to recompute it. Saved with the "
             "verifier: pav.search and pav.rl score the same way.");
    k.config.Enum("labels", {"rollouts", "exact"})
        .Default("rollouts")
        .Doc("rollouts: the Monte-Carlo Q-hat of each prefix; exact: 1 if every step written so far is right, else 0 "
             "(complete answers: their outcome) -- noise-free labels from the task, an upper bound on what the "
             "rollouts can teach.");
    k.config.Int("extra_layers")
        .Default(0)
        .Range(0, 64)
        .Doc("Transformer layers appended above the policy's (output projections zero, so training starts from the "
             "policy itself): checking a written step takes more depth than writing it.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_pav_verifier", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pav.search";
    k.doc = "Test-time search with the upstream policy and pav.verifier on test prompts: best-of-n (the verifier "
            "picks among n sampled solutions, an ORM; metrics accuracy_at_n, tokens_at_n, pass_at_n for n = 1, 2, 4, "
            "...) or beam (width `beam`, `candidates` sampled next steps per beam, scored by Q^pi + alpha (Q^mu(s') "
            "- Q^mu(s)) with mu = Best-of-prover_k of the policy or, with prover = \"trained\", the prover whose "
            "Q^mu an upstream prover_verifier predicts; the answer is the finished beam with the highest Q^pi). "
            "Metrics accuracy, tokens (sampled per prompt), accuracy_by_tokens, prover_accuracy (a trained prover's, "
            "to group `over` jobs by); table \"search\".";
    k.config = common::Schema(k.name, k.doc);
    k.config.Enum("method", {"best-of-n", "beam"}).Default("beam").Doc("Search method.");
    k.config.Int("prompts").Default(300).Range(1, 10000000).Doc("Test prompts.");
    k.config.Int("n").Default(16).Range(1, 100000).Doc("best-of-n: samples per prompt (curves at every power of 2).");
    k.config.Int("beam").Default(4).Range(1, 1000).Doc("beam: width B.");
    k.config.Int("candidates").Default(3).Range(1, 1000).Doc("beam: next steps sampled per beam (C).");
    k.config.Float("alpha").Default(0.5).Min(0).Max(100).Doc("beam: weight of the prover's advantage; 0 = Q^pi only.");
    k.config.Float("prover_k").Default(4.0).Min(1).Max(1e6).Doc("beam: the prover is Best-of-K of the policy.");
    k.config.Enum("prover", {"best-of-k", "trained"})
        .Doc("beam: best-of-k (absent): mu is Best-of-prover_k of the policy; trained: mu is a separately trained "
             "policy, its Q^mu read from the upstream \"prover_verifier\" (prover_k unused; required with either "
             "method, which reports the prover's accuracy).");
    k.config.Int("max_steps").Default(12).Range(1, 1000).Doc("beam: most expansion rounds.");
    k.config.Float("temperature").Default(1.0).Min(0).Max(100).Doc("Sampling temperature.");
    k.config.Int("max_new_tokens").Default(32).Range(1, 100000).Doc("Longest solution.");
    k.config.Int("batch").Default(1024).Range(1, 1 << 20).Doc("Rows decoded or scored together.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_pav_search", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pav.rl";
    k.doc = "Online RL of the upstream policy on training prompts (REINFORCE, `samples` per prompt, the outcome "
            "measured against the mean of the prompt's other samples) with the per-step effective reward: every token "
            "of step h is weighted by that outcome term + alpha (Q^mu(s_h+1) - Q^mu(s_h)), Q^mu = 1 - (1 - Q^pi)^K from "
            "the upstream pav.verifier, or (prover = \"trained\") from the upstream prover_verifier alone. alpha = 0 "
            "is outcome-only RL (no verifier needed). Metrics accuracy (one "
            "sample per test prompt; step = RL samples drawn), train_accuracy, prover_advantage_abs (the mean "
            "|A^mu| of the update's steps; alpha > 0), prover_accuracy (a trained prover's), pass_at_n of the final "
            "policy.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("iterations").Default(150).Range(1, 10000000).Doc("Policy updates.");
    k.config.Int("batch").Default(16).Range(1, 1 << 20).Doc("Training prompts per update.");
    k.config.Int("samples").Default(4).Range(1, 1024).Doc("Samples per prompt (the baseline is the others' mean).");
    k.config.Float("alpha").Default(0.5).Min(0).Max(100).Doc("Weight of the prover's advantage; 0 = outcome only.");
    k.config.Float("prover_k").Default(4.0).Min(1).Max(1e6).Doc("The prover is Best-of-K of the policy.");
    k.config.Enum("prover", {"best-of-k", "trained"})
        .Doc("best-of-k (absent): mu is Best-of-prover_k of the policy; trained: mu is a separately trained policy, "
             "its Q^mu read from the upstream \"prover_verifier\" (required, also at alpha = 0; prover_k unused; no "
             "policy verifier needed).");
    k.config.Float("learning_rate").Default(1e-4).Min(0, true).Max(10).Doc("AdamW step size.");
    k.config.Int("eval_every").Default(10).Range(1, 10000000).Doc("Updates between evaluations.");
    k.config.Int("eval_prompts").Default(300).Range(1, 10000000).Doc("Test prompts of each evaluation.");
    k.config.Int("pass_samples").Default(16).Range(1, 4096).Doc("Samples per test prompt for the final pass@N.");
    k.config.Int("max_new_tokens").Default(32).Range(1, 100000).Doc("Longest solution.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_pav_rl", ctx); };
    Register(registry, std::move(k));
  }
  // Reward-model ensembles (workers/lm_rm.cpp, PAPERS.md §7,
  // docs/experiments/reward-ensembles.md).
  auto ensemble_keys = [](common::Schema& schema) {
    schema.Enum("ensemble", {"single", "finetune", "pretrain"}).Default("pretrain")
        .Doc("Which upstream reward models: single = the first of backbone `pick`; finetune = every one of backbone "
             "`pick` (one pretraining, several fine-tunes); pretrain = the `pick`-th of every backbone.");
    schema.Int("pick").Default(0).Range(0, 1000000).Doc("Which backbone (single, finetune) or which fine-tune (pretrain).");
    schema.Float("std_weight").Default(1.0).Min(0).Max(1000).Doc("lambda of the mean_minus_std aggregation.");
    schema.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
  };
  {
    JobKind k;
    k.name = "rm.prefs";
    k.doc = "Preference pairs for reward models: two samples of the upstream policy (an lm.train job on task = "
            "\"distinct\") per training prompt, labelled by Bradley-Terry on quality_scale x gold + length_bias x "
            "length (gold = the letter F1; the length bias is the spurious feature). Identical pairs are dropped. "
            "Artifact \"prefs\"; table \"pairs\"; metrics labels_agree_with_gold, longer_wins, sft_gold, sft_length.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("prompts").Default(4000).Range(1, 10000000).Doc("Training prompts (one pair each).");
    k.config.Float("temperature").Default(1.0).Min(0).Max(10).Doc("Sampling temperature.");
    k.config.Int("max_new_tokens").Default(16).Range(1, 100000).Doc("Longest response.");
    k.config.Float("quality_scale").Default(5.0).Min(0).Max(1000).Doc("Bradley-Terry weight of the gold reward.");
    k.config.Float("length_bias").Default(0.5).Range(-100, 100).Doc("Bradley-Terry weight per letter of length.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_rm_prefs", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "rm.train";
    k.doc = "A reward model: the upstream lm.train job's transformer (the pretraining) with a fresh scalar head drawn "
            "from this job's seed, fine-tuned on the upstream rm.prefs pairs by Bradley-Terry + eta (r+ + r-)^2; keeps "
            "the best validation loss (a tenth of the prompts held out). Artifact \"reward_model\" (role member) or "
            "\"eval_model\" (role eval); metrics val_loss, val_accuracy, val_gold_accuracy, val_prefers_longer.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("steps").Default(600).Range(1, 10000000).Doc("AdamW steps.");
    k.config.Int("batch").Default(64).Range(1, 1 << 20).Doc("Pairs per step.");
    k.config.Float("learning_rate").Default(1e-3).Min(0, true).Max(10).Doc("Peak step size (cosine to 10%).");
    k.config.Float("eta").Default(0.01).Min(0).Max(100).Doc("Centering regularizer weight.");
    k.config.Enum("role", {"member", "eval"}).Default("member")
        .Doc("member: an ensemble member; eval: the held-out evaluation reward model.");
    k.config.Int("eval_every").Default(100).Range(1, 10000000).Doc("Steps between validations.");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.config.Int("tune_layers").Range(0, 1024)
        .Doc("Fine-tune only the score head, the final norm and the last tune_layers transformer blocks; the rest "
             "of the backbone stays frozen (0: the head and final norm only, a probe of the pretrained features). "
             "Unset: every parameter.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_rm_train", ctx); };
    Register(registry, std::move(k));
  }
  // The best-of-n pool's sampling keys: rm.score's, and rm.bon's when it samples.
  auto pool_keys = [](common::Schema& schema, const std::string& unset) {
    schema.Int("prompts").Range(1, 10000000).Doc("Test prompts." + unset + "200.");
    schema.Int("n").Range(1, 100000).Doc("Samples per prompt (the largest n)." + unset + "64.");
    schema.Float("temperature").Min(0).Max(10).Doc("Sampling temperature." + unset + "1.");
    schema.Int("max_new_tokens").Range(1, 100000).Doc("Longest response." + unset + "16.");
  };
  {
    JobKind k;
    k.name = "rm.score";
    k.doc = "A best-of-n pool for rm.bon jobs to share: n samples of the upstream policy per test prompt, scored "
            "once by every upstream reward model (rm.train, role member) and the eval reward model. Artifact "
            "\"bon_pool\"; table \"samples\" (member_<i> columns by backbone, then job id); metrics samples, "
            "reward_models, sft_gold, sft_length.";
    k.config = common::Schema(k.name, k.doc);
    pool_keys(k.config, " Unset: ");
    k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_rm_score", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "rm.bon";
    k.doc = "Best-of-n reranking: n samples of the upstream policy per test prompt, scored by the chosen ensemble "
            "of upstream reward models and the eval reward model; for every aggregation (mean, median, min, "
            "mean_minus_std) and n = 1, 2, 4, ..., the pick's <agg>_gold, _proxy, _eval, _length, _hack (longer than "
            "the right answer), _win_rate (gold, vs a policy sample), _member_spread (step = n); member_spread_sft. "
            "With an upstream rm.score job (and no policy or reward models) it reranks that job's pool instead of "
            "sampling and scoring its own, so that jobs over several ensembles score each sample once. Table "
            "\"samples\" when it samples.";
    k.config = common::Schema(k.name, k.doc);
    ensemble_keys(k.config);
    k.config.Bool("every_ensemble")
        .Doc("true: ignore `pick` and average every metric over every ensemble of the type the upstream reward "
             "models allow (single: each model; finetune: each backbone; pretrain: each choice of one fine-tune per "
             "backbone, up to max_ensembles drawn by the seed of the job that sampled the pool), on the same "
             "samples; adds <agg>_gold_sd, the spread over ensembles. Unset: the one ensemble `pick` names.");
    k.config.Int("max_ensembles").Range(1, 1000000)
        .Doc("With every_ensemble: the most pretrain ensembles averaged. Unset: 256.");
    pool_keys(k.config, " With an upstream rm.score job: that job's (a different value is an error). Unset: ");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_rm_bon", ctx); };
    Register(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "rm.rl";
    k.doc = "KL-regularized policy-gradient RL (REINFORCE, leave-one-out baseline) of the upstream policy against "
            "the aggregated reward of the chosen ensemble minus kl x log(pi / pi_sft). Metrics per eval_every: gold, "
            "proxy, eval_reward, kl, length, hack, member_spread; at the end eval_reward_decreases (share of "
            "evaluations where the eval reward model's reward fell), best_gold, best_gold_step.";
    k.config = common::Schema(k.name, k.doc);
    ensemble_keys(k.config);
    k.config.Enum("aggregation", {"mean", "median", "min", "mean_minus_std"}).Default("mean").Doc("How members combine.");
    k.config.Float("kl").Default(0.05).Min(0).Max(1000).Doc("Weight of the KL penalty log(pi / pi_sft).");
    k.config.Int("iterations").Default(200).Range(1, 10000000).Doc("Policy updates.");
    k.config.Int("batch").Default(16).Range(1, 1 << 20).Doc("Training prompts per update.");
    k.config.Int("samples").Default(4).Range(1, 1024).Doc("Samples per prompt.");
    k.config.Float("learning_rate").Default(1e-4).Min(0, true).Max(10).Doc("AdamW step size.");
    k.config.Int("eval_every").Default(20).Range(1, 10000000).Doc("Updates between evaluations.");
    k.config.Int("eval_prompts").Default(200).Range(1, 10000000).Doc("Test prompts of each evaluation.");
    k.config.Int("max_new_tokens").Default(16).Range(1, 100000).Doc("Longest response.");
    k.run = [](JobContext& ctx) { return CallPlugin("shammie_rm_rl", ctx); };
    Register(registry, std::move(k));
  }
}

}  // namespace shammie::workers
