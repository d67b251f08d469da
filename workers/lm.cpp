// The LibTorch runtime: model, batches, training loop, data parallelism, and
// the lm.* job kinds. The only translation unit that includes torch.
#include "workers/lm.hpp"

#include <torch/torch.h>
#include <ATen/autocast_mode.h>
#include <ATen/Version.h>
#include <dlfcn.h>
#include <malloc.h>

#include <filesystem>
#include <iostream>
#include <optional>
#include <set>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/hash.hpp"
#include "common/random.hpp"
#include "cluster/nccl_collectives.hpp"
#include "cluster/launch_env.hpp"
#include "common/schema.hpp"
#include "storage/checkpoint_store.hpp"
#include "workers/dataset.hpp"
#include "workers/lm_torch.hpp"
#include "workers/recursive.hpp"

namespace shammie::workers {

namespace {

using torch::Tensor;
using lm::OpenUpstream;
using lm::Transformer;
using lm::UpstreamWork;

// --- batches ---

struct Batch {
  Tensor input;    // [B, T] int64: BOS prompt answer[:-1]
  Tensor target;   // [B, T] int64
  Tensor mask;     // [B, T] float: 1 on answer positions
  int64_t answer_tokens = 0;
};

Batch MakeBatch(const std::vector<Example>& examples) {
  int64_t t = 0;
  for (const auto& e : examples) t = std::max<int64_t>(t, static_cast<int64_t>(e.prompt.size() + e.answer.size()));
  const auto b = static_cast<int64_t>(examples.size());
  Tensor input = torch::full({b, t}, Tokenizer::kPad, torch::kInt64);
  Tensor target = torch::full({b, t}, Tokenizer::kPad, torch::kInt64);
  Tensor mask = torch::zeros({b, t}, torch::kFloat32);
  auto in = input.accessor<int64_t, 2>();
  auto tg = target.accessor<int64_t, 2>();
  auto mk = mask.accessor<float, 2>();
  Batch batch;
  for (int64_t i = 0; i < b; ++i) {
    std::vector<int> seq = {Tokenizer::kBos};
    const Example& e = examples[static_cast<size_t>(i)];
    seq.insert(seq.end(), e.prompt.begin(), e.prompt.end());
    seq.insert(seq.end(), e.answer.begin(), e.answer.end());
    for (size_t j = 0; j + 1 < seq.size(); ++j) {
      in[i][static_cast<int64_t>(j)] = seq[j];
      tg[i][static_cast<int64_t>(j)] = seq[j + 1];
      if (j >= e.prompt.size()) {
        mk[i][static_cast<int64_t>(j)] = 1;
        ++batch.answer_tokens;
      }
    }
  }
  batch.input = input;
  batch.target = target;
  batch.mask = mask;
  return batch;
}

// Sum of per-token cross-entropy on answer positions, and per example
// whether every answer token is the argmax (= greedy decoding reproduces the
// answer exactly, EOS included).
struct Scored {
  Tensor loss_sum;
  Tensor example_loss;  // [B] summed over each example's answer tokens
  Tensor exact;  // [B] bool
  Tensor correct_tokens;  // scalar: answer positions whose argmax is the target
};

Scored Score(Transformer& model, const Batch& host, bool loss_only = false) {
  const torch::Device device = model->embed->weight.device();
  Batch batch = host;
  if (!device.is_cpu()) {
    batch.input = host.input.to(device);
    batch.target = host.target.to(device);
    batch.mask = host.mask.to(device);
  }
  Tensor logits = model->Logits(model->forward(batch.input)).to(torch::kFloat32);
  Tensor ce = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), batch.target.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  Tensor m = batch.mask.reshape({-1});
  Scored s;
  s.loss_sum = (ce * m).sum();
  if (loss_only) return s;  // a training step needs nothing else
  s.example_loss = (ce * m).view({batch.mask.size(0), -1}).sum(-1);
  Tensor wrong = (logits.argmax(-1) != batch.target).to(torch::kFloat32) * batch.mask;
  s.exact = wrong.sum(-1) == 0;
  s.correct_tokens = batch.mask.sum() - wrong.sum();
  return s;
}

// Summed answer-token loss of the final block plus `weight` x the mean over
// the earlier exits (every block; a recursive model's loop ends) of the same
// loss read through the final norm and head. With a `teacher`, each loss is
// (1 - distill) CE + distill KL(teacher || model) on the same tokens.
Tensor TrainLossSum(Transformer& model, const Batch& host, double weight, Transformer* teacher, double distill) {
  namespace F = torch::nn::functional;
  const torch::Device device = model->embed->weight.device();
  Tensor input = host.input.to(device), target = host.target.reshape({-1}).to(device);
  Tensor m = host.mask.reshape({-1}).to(device);
  std::vector<Tensor> hidden;
  if (weight > 0) {
    const std::vector<Tensor> every = model->ForwardLayers(input);
    const size_t step = static_cast<size_t>(model->config.layers / model->config.loops);
    const size_t stride = model->config.loops > 1 ? step : 1;
    for (size_t l = stride - 1; l < every.size(); l += stride) hidden.push_back(every[l]);
  } else {
    hidden.push_back(model->forward(input));
  }
  Tensor teacher_logp;
  if (teacher) {
    torch::NoGradGuard guard;
    Tensor t = (*teacher)->Logits((*teacher)->forward(input)).to(torch::kFloat32);
    teacher_logp = torch::log_softmax(t.reshape({-1, t.size(-1)}), -1);
  }
  Tensor total;
  for (size_t l = 0; l < hidden.size(); ++l) {
    Tensor logits = model->Logits(hidden[l]).to(torch::kFloat32).reshape({-1, model->vocab});
    Tensor ce = F::cross_entropy(logits, target, F::CrossEntropyFuncOptions().reduction(torch::kNone));
    Tensor sum = (ce * m).sum();
    if (teacher) {
      Tensor kl = (teacher_logp.exp() * (teacher_logp - torch::log_softmax(logits, -1))).sum(-1);
      sum = (1 - distill) * sum + distill * (kl * m).sum();
    }
    if (l + 1 < hidden.size()) sum = sum * (weight / static_cast<double>(hidden.size() - 1));
    total = total.defined() ? total + sum : sum;
  }
  return total;
}

// --- data parallelism ---

std::vector<Tensor> Parameters(Transformer& model) { return model->parameters(); }

common::Status BroadcastParameters(Transformer& model, cluster::Collectives& gang) {
  if (gang.size() == 1) return common::Status::Ok();
  torch::NoGradGuard guard;
  std::string bytes;
  for (auto& p : Parameters(model)) {
    Tensor c = p.contiguous();
    bytes.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * sizeof(float));
  }
  SHAMMIE_RETURN_IF_ERROR(gang.Broadcast(bytes, 0));
  size_t offset = 0;
  for (auto& p : Parameters(model)) {
    const size_t n = static_cast<size_t>(p.numel()) * sizeof(float);
    if (offset + n > bytes.size()) return common::Internal("parameter broadcast: size mismatch across the gang");
    std::memcpy(p.data_ptr(), bytes.data() + offset, n);
    offset += n;
  }
  return common::Status::Ok();
}

// Sums gradients across the gang in buckets of up to 1M floats.
common::Status AllreduceGradients(Transformer& model, cluster::Collectives& gang) {
  if (gang.size() == 1) return common::Status::Ok();
  constexpr size_t kBucket = 1 << 20;
  std::vector<float> buffer;
  std::vector<Tensor> pending;
  auto flush = [&]() -> common::Status {
    if (buffer.empty()) return common::Status::Ok();
    SHAMMIE_RETURN_IF_ERROR(gang.AllreduceSum(std::span<float>(buffer)));
    size_t offset = 0;
    for (auto& g : pending) {
      std::memcpy(g.data_ptr(), buffer.data() + offset, static_cast<size_t>(g.numel()) * sizeof(float));
      offset += static_cast<size_t>(g.numel());
    }
    buffer.clear();
    pending.clear();
    return common::Status::Ok();
  };
  for (auto& p : Parameters(model)) {
    // Unused parameters (the score head in LM training) have no gradient on
    // any rank: leave them so, as one rank would (an optimizer skips them).
    if (!p.grad().defined()) continue;
    Tensor g = p.grad();
    SHAMMIE_CHECK(g.is_contiguous());
    const auto* data = static_cast<const float*>(g.data_ptr());
    buffer.insert(buffer.end(), data, data + g.numel());
    pending.push_back(g);
    if (buffer.size() >= kBucket) SHAMMIE_RETURN_IF_ERROR(flush());
  }
  return flush();
}

double LearningRate(const TrainConfig& c, int64_t step) {  // step is 0-based
  if (c.warmup > 0 && step < c.warmup) return c.learning_rate * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, c.steps - c.warmup));
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup) / span);
  const double floor = c.learning_rate * c.min_lr_ratio;
  return floor + (c.learning_rate - floor) * 0.5 * (1 + std::cos(M_PI * progress));
}

}  // namespace

namespace lm {

// A fixed evaluation set of a split: every example when the task is small,
// else `n` drawn with a seed derived from the task's prompt distribution (not
// from the job: every job of a sweep, and every variant of a task family, is
// scored on the same prompts).
std::vector<Example> EvalSet(const SyntheticTask& task, Split split, int64_t n) {
  std::vector<Example> all = task.Enumerate(split, 4096);
  if (!all.empty()) return all;
  const TaskSpec& t = task.spec();
  const std::string key = t.family + "/" + std::to_string(t.modulus) + "/" + std::to_string(t.length) + "/" +
                          std::to_string(t.alphabet) + "/" + std::to_string(t.operations) + "/" + t.rule;
  common::SplitMix64 rng(common::DeriveSeed(common::Hash64(key), "eval", static_cast<uint64_t>(split)));
  for (int64_t i = 0; i < n; ++i) all.push_back(task.Sample(split, rng));
  return all;
}

}  // namespace lm

namespace {

using lm::EvalSet;

// `n` distinct training examples drawn from `seed` (in draw order); fewer
// only when the training split has fewer (InvalidArgument then). A task that
// cannot enumerate its split is sampled until a long run of draws finds
// nothing new: max(10000, 50 k) misses in a row after k distinct examples.
// The cost of a refusal then depends on the split's size, not on `n`, and a
// split that does hold `n` (uniform draws) is refused falsely with
// probability about e^-50 even when it holds exactly `n`.
common::Result<std::vector<Example>> TrainPool(const SyntheticTask& task, int64_t n, uint64_t seed) {
  const auto too_few = [n](size_t found) {
    return common::InvalidArgument("train_examples = " + std::to_string(n) + " but the training split has only " +
                                   std::to_string(found) + " distinct examples");
  };
  if (const auto all = task.Enumerate(Split::kTrain, static_cast<size_t>(n));
      !all.empty() && static_cast<int64_t>(all.size()) < n) {
    return too_few(all.size());
  }
  common::SplitMix64 rng(common::DeriveSeed(seed, "train_pool", 0));
  std::vector<Example> pool;
  std::set<std::string> seen;
  for (int64_t misses = 0; static_cast<int64_t>(pool.size()) < n;) {
    if (misses > std::max<int64_t>(10000, 50 * static_cast<int64_t>(pool.size()))) return too_few(pool.size());
    Example e = task.Sample(Split::kTrain, rng);
    if (seen.insert(e.prompt_text).second) {
      pool.push_back(std::move(e));
      misses = 0;
    } else {
      ++misses;
    }
  }
  return pool;
}

struct Evaluation {
  double loss = 0, accuracy = 0;
};

Evaluation Evaluate(Transformer& model, const std::vector<Example>& set) {
  torch::NoGradGuard guard;
  model->eval();
  double loss = 0, exact = 0, tokens = 0;
  for (size_t i = 0; i < set.size(); i += 256) {
    std::vector<Example> chunk(set.begin() + static_cast<std::ptrdiff_t>(i),
                               set.begin() + static_cast<std::ptrdiff_t>(std::min(set.size(), i + 256)));
    Batch b = MakeBatch(chunk);
    Scored s = Score(model, b);
    loss += s.loss_sum.item<double>();
    exact += s.exact.sum().item<double>();
    tokens += static_cast<double>(b.answer_tokens);
  }
  model->train();
  Evaluation e;
  e.loss = tokens > 0 ? loss / tokens : 0;
  e.accuracy = set.empty() ? 0 : exact / static_cast<double>(set.size());
  return e;
}

// Windows of token shards: predict tokens 1..n from 0..n-1, every position counts.
Batch MakeWindowBatch(const std::vector<std::vector<int32_t>>& windows) {
  const auto b = static_cast<int64_t>(windows.size());
  const auto t = static_cast<int64_t>(windows.empty() ? 0 : windows[0].size() - 1);
  Tensor all = torch::empty({b, t + 1}, torch::kInt64);
  auto a = all.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j <= t; ++j) a[i][j] = windows[static_cast<size_t>(i)][static_cast<size_t>(j)];
  }
  Batch batch;
  batch.input = all.narrow(1, 0, t).contiguous();
  batch.target = all.narrow(1, 1, t).contiguous();
  batch.mask = torch::ones({b, t}, torch::kFloat32);
  batch.answer_tokens = b * t;
  return batch;
}

// Loss per token and next-token accuracy over windows.
Evaluation EvaluateWindows(Transformer& model, const std::vector<std::vector<int32_t>>& set) {
  torch::NoGradGuard guard;
  model->eval();
  double loss = 0, correct = 0, tokens = 0;
  for (size_t i = 0; i < set.size(); i += 64) {
    std::vector<std::vector<int32_t>> chunk(set.begin() + static_cast<std::ptrdiff_t>(i),
                                            set.begin() + static_cast<std::ptrdiff_t>(std::min(set.size(), i + 64)));
    Batch b = MakeWindowBatch(chunk);
    Scored s = Score(model, b);
    loss += s.loss_sum.item<double>();
    correct += s.correct_tokens.item<double>();
    tokens += static_cast<double>(b.answer_tokens);
  }
  model->train();
  Evaluation e;
  e.loss = tokens > 0 ? loss / tokens : 0;
  e.accuracy = tokens > 0 ? correct / tokens : 0;
  return e;
}

}  // namespace

namespace lm {
std::vector<int32_t> PackedWindow(const SyntheticTask& task, Split split, int64_t window, common::SplitMix64& rng) {
  std::vector<int32_t> out;
  for (bool first = true; static_cast<int64_t>(out.size()) < window + 1; first = false) {
    const Example e = task.Sample(split, rng);
    const std::vector<int> seq = lm::WithBos(e.prompt, e.answer);
    const int64_t from = first ? rng.NextInt(0, static_cast<int64_t>(seq.size()) - 1) : 0;
    out.insert(out.end(), seq.begin() + from, seq.end());
  }
  out.resize(static_cast<size_t>(window + 1));
  return out;
}

std::vector<std::vector<int>> PackedPrompts(const SyntheticTask& task, Split split, int64_t length, int64_t n,
                                            std::string_view label) {
  common::SplitMix64 rng(common::DeriveSeed(0, label, 0));
  std::vector<std::vector<int>> out;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int32_t> w = PackedWindow(task, split, length - 1, rng);
    out.emplace_back(w.begin(), w.end());
  }
  return out;
}
}  // namespace lm

namespace {
using lm::PackedWindow;

// n packed windows of a split, from a fixed seed (the same evaluation set for every job).
std::vector<std::vector<int32_t>> PackedEvalWindows(const SyntheticTask& task, Split split, int64_t window, int64_t n) {
  common::SplitMix64 rng(common::DeriveSeed(0, "packed_eval", static_cast<uint64_t>(split)));
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(PackedWindow(task, split, window, rng));
  return out;
}

// Up to n windows of a split, in stream order (a fixed evaluation set).
std::vector<std::vector<int32_t>> EvalWindows(const TokenDataset& data, Split split, int64_t n) {
  std::vector<std::vector<int32_t>> out;
  const int64_t count = std::min(n, data.WindowCount(split));
  for (int64_t i = 0; i < count; ++i) out.push_back(data.Window(split, i));
  return out;
}

common::Status Validate(const TrainConfig& c, int gang_size) {
  if (c.model.d_model % c.model.heads != 0 || (c.model.d_model / c.model.heads) % 2 != 0) {
    return common::InvalidArgument("d_model must be a multiple of heads, with an even head dimension");
  }
  if (c.optimizer != "adamw" && c.optimizer != "sgd") {
    return common::InvalidArgument("optimizer must be adamw or sgd, not \"" + c.optimizer + "\"");
  }
  if (c.device != "cpu" && c.device != "cuda") return common::InvalidArgument("device must be cpu or cuda");
  SHAMMIE_RETURN_IF_ERROR(rec::CheckLoops(c.model.layers, c.model.loops));
  SHAMMIE_RETURN_IF_ERROR(rec::ParseTying(c.model.tying).status());
  SHAMMIE_RETURN_IF_ERROR(rec::ParseInit(c.recursive_init).status());
  if (c.model.lora_rank < 0 || c.model.lora_rank > c.model.d_model) {
    return common::InvalidArgument("lora_rank must lie in [0, d_model]: a full-rank LoRA has rank d_model");
  }
  if (c.lora_init != "svd" && c.lora_init != "zero") return common::InvalidArgument("lora_init must be svd or zero");
  if (c.distill < 0 || c.distill > 1) return common::InvalidArgument("distill must lie in [0, 1]");
  if (c.precision != "fp32" && c.precision != "bf16") return common::InvalidArgument("precision must be fp32 or bf16");
  if (c.precision == "bf16" && c.device != "cuda") {
    return common::InvalidArgument("precision = \"bf16\" is autocast on CUDA; use it with device = \"cuda\"");
  }
  if (c.model.block_length > 0) {
    const ModelConfig& m = c.model;
    if (m.block_d_model <= 0 || m.block_layers <= 0 || m.prefix <= 0) {
      return common::InvalidArgument("a Block Transformer needs block_d_model, block_layers and prefix > 0");
    }
    if (m.block_d_model % m.block_length != 0) {
      return common::InvalidArgument("block_d_model must be a multiple of block_length: the embedder concatenates "
                                     "block_length token embeddings of block_d_model / block_length each");
    }
    if (m.block_d_model % m.heads != 0 || (m.block_d_model / m.heads) % 2 != 0) {
      return common::InvalidArgument("block_d_model must be a multiple of heads, with an even head dimension");
    }
    if (m.loops != 1 || m.lora_rank != 0 || m.classes != 0) {
      return common::InvalidArgument("a Block Transformer takes no loops, lora_rank or classes");
    }
    if (m.prefix + m.block_length > m.max_len) {
      return common::InvalidArgument("prefix + block_length (" + std::to_string(m.prefix + m.block_length) +
                                     ") exceeds max_len (" + std::to_string(m.max_len) +
                                     "): the token decoder's positions");
    }
    if (c.exit_loss > 0 || c.distill > 0 || !c.weights.empty()) {
      return common::InvalidArgument("a Block Transformer trains without exit_loss, distill or weights");
    }
  }
  if (c.packed && !c.data.empty()) return common::InvalidArgument("packed lays out a synthetic task's examples; "
                                                                  "it does not apply to data");
  if (c.packed && c.train_examples > 0) return common::InvalidArgument("packed draws fresh examples; it does not take "
                                                                       "train_examples");
  if (c.step_noise > 0 && (c.task.family != "arith" || !c.data.empty() || c.packed)) {
    return common::InvalidArgument("step_noise writes slips into the steps of arith answers; it needs task = \"arith\" "
                                   "without data or packed");
  }
  if (c.train_examples > 0 && !c.data.empty()) {
    return common::InvalidArgument("train_examples limits a synthetic task's training pool; it does not apply to data");
  }
  if (c.batch % (static_cast<int64_t>(gang_size) * c.accumulation) != 0) {
    return common::InvalidArgument("batch (" + std::to_string(c.batch) + ") must divide evenly into ranks (" +
                                   std::to_string(gang_size) + ") x accumulation (" + std::to_string(c.accumulation) +
                                   ")");
  }
  return common::Status::Ok();
}

int64_t ResolvedFf(const ModelConfig& m) { return m.d_ff > 0 ? m.d_ff : ((8 * m.d_model / 3) + 7) / 8 * 8; }

bool SameArchitecture(const ModelConfig& a, const ModelConfig& b) {
  ModelConfig x = a, y = b;
  x.d_ff = ResolvedFf(a);
  y.d_ff = ResolvedFf(b);
  for (ModelConfig* m : {&x, &y}) {
    if (m->loops == 1) m->tying = "cycle";  // one loop: the tying means nothing (and is not saved)
  }
  return x == y;
}

std::string Describe(const ModelConfig& m) {
  std::string out = "d_model " + std::to_string(m.d_model) + ", layers " + std::to_string(m.layers) + ", heads " +
                    std::to_string(m.heads) + ", d_ff " + std::to_string(ResolvedFf(m)) + ", max_len " +
                    std::to_string(m.max_len) + (m.tied_embeddings ? ", tied" : ", untied") + ", classes " +
                    std::to_string(m.classes);
  if (m.loops != 1) out += ", loops " + std::to_string(m.loops) + " (" + m.tying + ")";
  if (m.lora_rank != 0) out += ", lora_rank " + std::to_string(m.lora_rank);
  if (m.block_length != 0) {
    out += ", block_length " + std::to_string(m.block_length) + ", block_d_model " + std::to_string(m.block_d_model) +
           ", block_layers " + std::to_string(m.block_layers) + ", prefix " + std::to_string(m.prefix);
  }
  return out;
}

// `to` is a recursive (or relaxed) version of the vanilla `from`.
bool ConvertsTo(const ModelConfig& from, const ModelConfig& to) {
  if (from.loops != 1 || from.lora_rank != 0 || (to.loops == 1 && to.lora_rank == 0)) return false;
  return SameArchitecture(from, WithoutRecursion(to));
}

// `to` is the vanilla model a recursive (or relaxed) `from` unrolls into.
bool UnrollsTo(const ModelConfig& from, const ModelConfig& to) {
  if ((from.loops == 1 && from.lora_rank == 0) || to.loops != 1 || to.lora_rank != 0) return false;
  return SameArchitecture(WithoutRecursion(from), to);
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainConfig& config, Transformer& model) {
  if (config.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        model->parameters(),
        torch::optim::SGDOptions(config.learning_rate).momentum(0.9).weight_decay(config.weight_decay));
  }
  return std::make_unique<torch::optim::AdamW>(
      model->parameters(),
      torch::optim::AdamWOptions(config.learning_rate).weight_decay(config.weight_decay).betas({0.9, 0.95}));
}

// The one upstream model a job reads (lm.eval, lm.sample, lm.train with init
// = "upstream"); nullptr when there is none and `required` is false.
}  // namespace

namespace lm {

common::Result<const Artifact*> UpstreamModel(const JobContext& ctx, bool required, const std::string& kind) {
  std::vector<const Artifact*> models;
  for (const auto& a : ctx.inputs()) {
    if (a.name == "model") models.push_back(&a);
  }
  if (models.size() > 1) {
    std::string ids;
    for (const auto* m : models) ids += (ids.empty() ? "" : ", ") + m->job_id;
    return common::InvalidArgument(kind + " reads one upstream model but job " + ctx.job_id() + " has " +
                                   std::to_string(models.size()) + " (from " + ids +
                                   "); depend on one training job per " + kind + " job (sweep.over)");
  }
  if (models.empty()) {
    if (!required) return static_cast<const Artifact*>(nullptr);
    return common::InvalidArgument(kind + " needs an upstream job that recorded a model (an lm.train stage in "
                                   "depends_on); job " + ctx.job_id() + " has none");
  }
  return models.front();
}

}  // namespace lm

namespace {

using lm::UpstreamModel;

// Writes the model and training state (gang rank 0) and records it as the
// job's "model" (or config.record_as). No-op in a context that keeps no files.
common::Status SaveCheckpoint(JobContext& ctx, Transformer& model, torch::optim::Optimizer& optimizer,
                              const TrainConfig& config, const lm::TrainState& state) {
  if (ctx.collectives().rank() != 0 || ctx.artifact_dir().empty()) return common::Status::Ok();
  lm::Checkpoint c;
  c.model = model->config;
  c.vocab = model->vocab;
  c.job_config = ctx.config();
  c.optimizer = config.optimizer;
  c.model_bytes = lm::SaveModule(*model);
  c.optimizer_bytes = lm::SaveOptimizer(optimizer);
  c.state = state;
  SHAMMIE_ASSIGN_OR_RETURN(std::string path,
                           storage::WriteContentAddressed(ctx.artifact_dir(), lm::SerializeCheckpoint(c), "ckpt"));
  return ctx.RecordArtifact(config.record_as, path);
}

// bf16 autocast on CUDA for the scope (thread-local in LibTorch).
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    previous_ = at::autocast::is_enabled();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  }
  ~AutocastScope() {
    if (!on_) return;
    at::autocast::set_enabled(previous_);
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_;
  bool previous_ = false;
};

// The device a job trains on: the CPU, or the CUDA device of this rank's
// local rank. Never falls back to the CPU when CUDA was asked for.
common::Result<torch::Device> TrainingDevice(const TrainConfig& c) {
  if (c.device == "cpu") return torch::Device(torch::kCPU);
  if (!torch::cuda::is_available()) {
    return common::Unavailable(
        "device = \"cuda\" but this LibTorch has no CUDA or no GPU is visible (torch::cuda::is_available() is "
        "false); not falling back to the CPU");
  }
  const int local = cluster::DetectLaunchEnvironment(cluster::ProcessEnvironment()).local_rank;
  const auto count = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local % std::max(1, count)));
}

// Sums gradients in device memory across the gang with NCCL, in buckets of
// up to 16M floats.
common::Status AllreduceGradientsOnDevice(Transformer& model, cluster::DeviceCollectives& nccl) {
  constexpr int64_t kBucket = 1 << 24;
  std::vector<Tensor> grads;
  int64_t pending = 0;
  auto flush = [&]() -> common::Status {
    if (grads.empty()) return common::Status::Ok();
    std::vector<Tensor> flat_parts;
    for (auto& g : grads) flat_parts.push_back(g.reshape({-1}));
    Tensor flat = torch::cat(flat_parts).contiguous();
    SHAMMIE_RETURN_IF_ERROR(
        nccl.AllreduceSum(flat.data_ptr(), static_cast<size_t>(flat.numel()), cluster::DeviceDType::kFloat32));
    int64_t offset = 0;
    for (auto& g : grads) {
      g.copy_(flat.narrow(0, offset, g.numel()).view(g.sizes()));
      offset += g.numel();
    }
    grads.clear();
    pending = 0;
    return common::Status::Ok();
  };
  torch::NoGradGuard guard;
  for (auto& p : model->parameters()) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    pending += p.grad().numel();
    if (pending >= kBucket) SHAMMIE_RETURN_IF_ERROR(flush());
  }
  return flush();
}

}  // namespace

namespace {

// glibc hands tensors above its mmap threshold their own mappings and gives
// free memory at the top of the heap back to the OS past the trim
// threshold, so every training step faulted in and zeroed fresh pages for
// its activations (~15,000 page faults a step for the small benchmark
// model; docs/benchmarks.md). Tensors up to 32 MB now come from the heap
// and freed memory stays mapped for the next step, as a caching allocator
// would keep it: a process keeps up to its peak footprint.
void KeepFreedMemoryMapped() {
  static const bool once = [] {
    ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
    ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)once;
}

}  // namespace

common::Result<TrainResult> TrainLanguageModel(const TrainConfig& config, JobContext& ctx) {
  KeepFreedMemoryMapped();
  cluster::Collectives& gang = ctx.collectives();
  SHAMMIE_RETURN_IF_ERROR(Validate(config, gang.size()));
  std::unique_ptr<SyntheticTask> task;
  std::optional<TokenDataset> data;
  int64_t vocab = Tokenizer::VocabSize();
  if (config.data.empty()) {
    SHAMMIE_ASSIGN_OR_RETURN(task, SyntheticTask::Make(config.task));
    if (config.packed && config.window > config.model.max_len) {
      return common::InvalidArgument("window (" + std::to_string(config.window) + ") exceeds max_len (" +
                                     std::to_string(config.model.max_len) + ")");
    }
    if (!config.packed && task->MaxTokens() + 1 > config.model.max_len) {
      return common::InvalidArgument("examples of this task need " + std::to_string(task->MaxTokens() + 1) +
                                     " positions; raise max_len");
    }
  } else {
    TokenDatasetOptions options;
    options.window = config.window;
    options.validation_fraction = 0.1;
    options.test_fraction = 0.1;
    SHAMMIE_ASSIGN_OR_RETURN(TokenDataset opened, TokenDataset::Open(config.data, options));
    data.emplace(std::move(opened));
    for (Split split : {Split::kTrain, Split::kValidation, Split::kTest}) SHAMMIE_RETURN_IF_ERROR(data->CheckSplit(split));
    if (config.window > config.model.max_len) {
      return common::InvalidArgument("window (" + std::to_string(config.window) + ") exceeds max_len (" +
                                     std::to_string(config.model.max_len) + ")");
    }
    vocab = data->vocab_size();
  }
  torch::set_num_threads(static_cast<int>(config.threads));
  SHAMMIE_ASSIGN_OR_RETURN(const torch::Device device, TrainingDevice(config));
  Transformer model(config.model, vocab, common::DeriveSeed(config.seed, "init", 0));
  std::string optimizer_bytes;  // a resumed job's optimizer state, loaded once the model is on its device
  lm::TrainState st;
  st.best_val = std::numeric_limits<double>::infinity();

  // Where to start: this job's own last checkpoint (a resumed or retried
  // attempt), else the upstream model (fine-tuning), else the seed.
  bool resumed = false;
  TrainResult result;
  if (const Artifact* prev = ctx.PreviousArtifact(config.record_as)) {
    auto bytes = storage::ReadVerified(prev->path);
    common::Result<lm::Checkpoint> ck = bytes.ok() ? lm::ParseCheckpoint(*bytes, prev->path)
                                                   : common::Result<lm::Checkpoint>(bytes.status());
    if (!ck.ok()) return ck.status().WithContext("resuming from this job's checkpoint");
    if (!SameArchitecture(ck->model, config.model) || ck->optimizer != config.optimizer ||
        ck->job_config != ctx.config()) {
      return common::FailedPrecondition(prev->path + " was written by a different configuration; not resuming");
    }
    SHAMMIE_RETURN_IF_ERROR(lm::LoadModule(*model, ck->model_bytes, prev->path));
    optimizer_bytes = std::move(ck->optimizer_bytes);
    st = ck->state;
    resumed = true;
    result.resumed_from = st.step;
  }
  // The upstream model (fine-tuning); looked up on a resumed attempt too, for
  // the summary's record of where training started.
  const Artifact* up = nullptr;
  if (config.init != "scratch") {
    SHAMMIE_ASSIGN_OR_RETURN(up, UpstreamModel(ctx, config.init == "upstream", "lm.train"));
  }
  // The starting point: the upstream model, or Llama safetensors (`weights`).
  // Knowledge distillation's teacher is that model, frozen.
  if (!config.weights.empty() && up) {
    return common::InvalidArgument("weights and the upstream model are two starting points; give one (init = "
                                   "\"scratch\" ignores the upstream job)");
  }
  if (config.distill > 0 && !up && config.weights.empty()) {
    return common::InvalidArgument("distill needs a teacher: an upstream lm.train job or weights; this job has neither");
  }
  Transformer teacher{nullptr};
  if ((up || !config.weights.empty()) && (!resumed || config.distill > 0)) {
    Transformer source{nullptr};
    std::string source_bytes;  // the upstream checkpoint's parameters
    ModelConfig source_config;
    if (up) {
      SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(up->path));
      source = loaded.model;
      source_config = loaded.checkpoint.model;
      source_bytes = std::move(loaded.checkpoint.model_bytes);
    } else {
      source_config = WithoutRecursion(config.model);  // the file's model is vanilla; this job's may be recursive
      // Heads the file lacks (score, class) keep this job's initialisation.
      source = Transformer(source_config, vocab, common::DeriveSeed(config.seed, "init", 0));
      SHAMMIE_RETURN_IF_ERROR(lm::ImportSafetensors(source, config.weights));
      source->eval();
      source_bytes = lm::SaveModule(*source);
    }
    const std::string source_name = up ? "the upstream model" : config.weights;
    if (!resumed) {
      if (SameArchitecture(source_config, config.model)) {
        SHAMMIE_RETURN_IF_ERROR(lm::LoadModule(*model, source_bytes, up ? up->path : config.weights));
      } else if (ConvertsTo(source_config, config.model)) {
        // A vanilla model becomes this job's recursive one.
        SHAMMIE_RETURN_IF_ERROR(lm::ConvertToRecursive(*source, *model, config.recursive_init, config.lora_init));
      } else if (UnrollsTo(source_config, config.model)) {
        // A recursive model becomes a vanilla one computing the same function.
        SHAMMIE_RETURN_IF_ERROR(lm::UnrollToVanilla(*source, *model));
      } else {
        return common::InvalidArgument(source_name + " (" + Describe(source_config) +
                                       ") does not match this job's architecture (" + Describe(config.model) +
                                       "); use the same model keys, a recursive version of a vanilla model (loops / "
                                       "tying / lora_rank), a vanilla version of a recursive one (unrolled), or "
                                       "init = \"scratch\"");
      }
      if (up) result.initialized_from = up->job_id;
    }
    if (config.distill > 0) {
      teacher = source;
      teacher->eval();
      for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    }
  }
  if (!resumed) SHAMMIE_RETURN_IF_ERROR(BroadcastParameters(model, gang));
  model->to(device);
  if (teacher) teacher->to(device);
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(config, model);
  if (resumed) SHAMMIE_RETURN_IF_ERROR(lm::LoadOptimizer(*optimizer, optimizer_bytes, "the checkpoint", device));
  std::unique_ptr<cluster::DeviceCollectives> nccl;
  if (device.is_cuda() && gang.size() > 1) {
    cluster::NcclOptions nccl_options;
    nccl_options.device = device.index();
    SHAMMIE_ASSIGN_OR_RETURN(nccl, cluster::MakeNcclCollectives(gang, nccl_options));
  }
  const bool bf16 = config.precision == "bf16";
  model->train();
  // A resumed attempt reports the curve so far again: results.h5 keeps the
  // metrics of the attempt that succeeds, and that curve must be whole.
  for (const auto& [name, step, value] : st.metrics) ctx.ReportMetric(name, step, value);
  if (resumed) ctx.ReportMetric("resumed_from", st.step, static_cast<double>(st.step));  // provenance
  auto report = [&](const std::string& name, int64_t step, double value) {
    st.metrics.emplace_back(name, step, value);
    ctx.ReportMetric(name, step, value);
  };

  std::vector<Example> val, test;
  std::vector<std::vector<int32_t>> val_windows, test_windows;
  if (task && config.packed) {
    val_windows = PackedEvalWindows(*task, Split::kValidation, config.window, config.eval_examples);
    test_windows = PackedEvalWindows(*task, Split::kTest, config.window, config.eval_examples);
  } else if (task) {
    val = EvalSet(*task, Split::kValidation, config.eval_examples);
    test = EvalSet(*task, Split::kTest, config.eval_examples);
  } else {
    val_windows = EvalWindows(*data, Split::kValidation, config.eval_examples);
    test_windows = EvalWindows(*data, Split::kTest, config.eval_examples);
  }
  auto evaluate = [&](bool on_test) {
    return task && !config.packed ? Evaluate(model, on_test ? test : val)
                                  : EvaluateWindows(model, on_test ? test_windows : val_windows);
  };
  // The few-shot regime: a fixed pool of distinct training examples.
  std::vector<Example> pool;
  if (task && config.train_examples > 0) {
    SHAMMIE_ASSIGN_OR_RETURN(pool, TrainPool(*task, config.train_examples, config.seed));
  }
  const std::string init_job = up ? up->job_id : "", init_model = up ? up->path : config.weights;
  // The starting model's validation scores: step-0 transfer from an upstream
  // model, and the zero-shot score that checkpoint selection can use.
  if (!resumed) {
    const Evaluation e0 = evaluate(false);
    report("val_loss", 0, e0.loss);
    report("val_accuracy", 0, e0.accuracy);
  }
  for (const auto& p : model->parameters()) result.parameters += p.numel();
  const int64_t per_rank = config.batch / gang.size();
  const int64_t micro = per_rank / config.accumulation;
  int64_t tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  while (!st.finished && st.step < config.steps) {
    const int64_t step = st.step;
    // The global batch of this step, the same on every rank; rank r takes its slice.
    common::SplitMix64 rng(common::DeriveSeed(config.seed, "batch", static_cast<uint64_t>(step)));
    std::vector<Example> global;
    std::vector<std::vector<int32_t>> global_windows;
    int64_t global_tokens = 0;
    for (int64_t i = 0; i < config.batch; ++i) {
      if (!pool.empty()) {
        global.push_back(pool[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(pool.size()) - 1))]);
        if (config.step_noise > 0) global.back() = task->WithSlips(global.back(), config.step_noise, rng);
        global_tokens += static_cast<int64_t>(global.back().answer.size());
      } else if (task && config.packed) {
        global_windows.push_back(PackedWindow(*task, Split::kTrain, config.window, rng));
        global_tokens += config.window;
      } else if (task) {
        global.push_back(task->Sample(Split::kTrain, rng));
        if (config.step_noise > 0) global.back() = task->WithSlips(global.back(), config.step_noise, rng);
        global_tokens += static_cast<int64_t>(global.back().answer.size());
      } else {
        global_windows.push_back(data->SampleWindow(Split::kTrain, rng));
        global_tokens += config.window;
      }
    }
    const double lr = LearningRate(config, step);
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    if (lm::FusedKernelsEnabled() && device.is_cpu()) {
      // No gradients rather than zeroed ones: the first backward pass then
      // hands each parameter its gradient buffer instead of adding it to
      // zeros (a memset and an add per parameter per step).
      for (auto& p : model->parameters()) p.mutable_grad() = Tensor();
    } else {
      optimizer->zero_grad();
    }
    double step_loss = 0;
    for (int64_t m = 0; m < config.accumulation; ++m) {
      const auto first = static_cast<std::ptrdiff_t>(gang.rank() * per_rank + m * micro);
      Batch b = global_windows.empty() ? MakeBatch(std::vector<Example>(global.begin() + first,
                                                      global.begin() + first + static_cast<std::ptrdiff_t>(micro)))
                     : MakeWindowBatch(std::vector<std::vector<int32_t>>(
                           global_windows.begin() + first, global_windows.begin() + first + static_cast<std::ptrdiff_t>(micro)));
      // Normalised by the global batch's answer tokens: the gang's summed
      // gradient is the gradient of the whole batch's mean loss.
      Tensor loss;
      {
        AutocastScope autocast(bf16);
        loss = (config.exit_loss > 0 || teacher
                    ? TrainLossSum(model, b, config.exit_loss, teacher ? &teacher : nullptr, config.distill)
                    : Score(model, b, /*loss_only=*/true).loss_sum) /
               static_cast<double>(global_tokens);
      }
      loss.backward();
      step_loss += loss.item<double>();
      tokens += b.input.numel();
    }
    SHAMMIE_RETURN_IF_ERROR(nccl ? AllreduceGradientsOnDevice(model, *nccl) : AllreduceGradients(model, gang));
    auto* adamw = dynamic_cast<torch::optim::AdamW*>(optimizer.get());
    if (!adamw || !lm::FusedAdamWStep(*adamw, config.clip)) {
      if (config.clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), config.clip);
      optimizer->step();
    }
    // The loss and the stop decision travel together: every member of the
    // gang stops after the same step.
    std::vector<double> shared = {step_loss, ctx.cancelled() ? 1.0 : 0.0};
    SHAMMIE_RETURN_IF_ERROR(gang.AllreduceSum(std::span<double>(shared)));
    st.window_loss += shared[0];
    ++st.window_steps;
    st.tokens += static_cast<int64_t>(global_tokens);
    st.step = step + 1;
    if (st.step % config.log_every == 0 || st.step == config.steps) {
      report("loss", st.step, st.window_loss / static_cast<double>(st.window_steps));
      report("lr", st.step, lr);
      st.window_loss = 0;
      st.window_steps = 0;
    }
    if (st.step % config.eval_every == 0 || st.step == config.steps) {
      const Evaluation e = evaluate(false);
      report("val_loss", st.step, e.loss);
      report("val_accuracy", st.step, e.accuracy);
      if (e.loss < st.best_val - 1e-6) {
        st.best_val = e.loss;
        st.bad_evals = 0;
      } else if (config.patience > 0 && ++st.bad_evals >= config.patience) {
        report("early_stop", st.step, 1);
        st.finished = true;
      }
    }
    if (shared[1] > 0 && !st.finished && st.step < config.steps) {
      SHAMMIE_RETURN_IF_ERROR(SaveCheckpoint(ctx, model, *optimizer, config, st));
      return common::Status(common::StatusCode::kCancelled,
                            "stopped after step " + std::to_string(st.step) + "; checkpoint saved, a resume continues");
    }
    if (config.checkpoint_every > 0 && st.step % config.checkpoint_every == 0 && st.step < config.steps) {
      SHAMMIE_RETURN_IF_ERROR(SaveCheckpoint(ctx, model, *optimizer, config, st));
    }
  }
  st.finished = true;
  if (config.save_model) SHAMMIE_RETURN_IF_ERROR(SaveCheckpoint(ctx, model, *optimizer, config, st));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.steps = st.step;
  bool have_loss = false, have_val = false, have_val_accuracy = false;
  for (auto it = st.metrics.rbegin(); it != st.metrics.rend(); ++it) {  // the latest of each
    const auto& [name, step, value] = *it;
    if (name == "loss" && !have_loss) {
      result.train_loss = value;
      have_loss = true;
    }
    if (name == "val_loss" && !have_val) {
      result.val_loss = value;
      have_val = true;
    }
    if (name == "val_accuracy" && !have_val_accuracy) {
      result.val_accuracy = value;
      have_val_accuracy = true;
    }
  }
  result.tokens_per_second = seconds > 0 ? static_cast<double>(tokens * gang.size()) / seconds : 0;
  result.test_accuracy = evaluate(true).accuracy;
  ctx.ReportMetric("test_accuracy", result.steps, result.test_accuracy);
  ctx.ReportMetric("tokens_per_second", result.steps, result.tokens_per_second);
  ctx.ReportMetric("parameters", 0, static_cast<double>(result.parameters));
  for (auto& p : model->parameters()) {
    Tensor c = p.detach().to(torch::kCPU).contiguous();
    const auto* values = static_cast<const float*>(c.data_ptr());
    result.flat_parameters.insert(result.flat_parameters.end(), values, values + c.numel());
  }
  for (const auto& m : st.metrics) result.metrics.push_back(m);
  for (const auto& [name, step, value] : st.metrics) {  // the first evaluation, before any step
    if (step != 0) continue;
    if (name == "val_loss") result.step0_val_loss = value;
    if (name == "val_accuracy") result.step0_val_accuracy = value;
  }
  if (config.steps == 0) {
    result.val_loss = result.step0_val_loss;
    result.val_accuracy = result.step0_val_accuracy;
  }
  result.initialized_from = init_job;
  if (ctx.collectives().rank() == 0 && !ctx.artifact_dir().empty()) {
    const nlohmann::json summary = {{"job", ctx.job_id()},
                                    {"steps", result.steps},
                                    {"train_examples", config.train_examples},
                                    {"val_loss", result.val_loss},
                                    {"val_accuracy", result.val_accuracy},
                                    {"step0_val_loss", result.step0_val_loss},
                                    {"step0_val_accuracy", result.step0_val_accuracy},
                                    {"test_accuracy", result.test_accuracy},
                                    {"initialized_from", init_job},
                                    {"init_model", init_model}};
    SHAMMIE_ASSIGN_OR_RETURN(std::string path,
                             storage::WriteContentAddressed(ctx.artifact_dir(), summary.dump(2) + "\n", "json"));
    SHAMMIE_RETURN_IF_ERROR(ctx.RecordArtifact("summary", path));
  }
  return result;
}

namespace lm {
common::Result<Split> SplitFromName(const std::string& name) {
  if (name == "train") return Split::kTrain;
  if (name == "validation") return Split::kValidation;
  if (name == "test") return Split::kTest;
  return common::InvalidArgument("split must be train, validation or test, not \"" + name + "\"");
}
}  // namespace lm

namespace {

using lm::SplitFromName;

common::Result<TaskSpec> TaskFromConfig(const nlohmann::json& c) { return TaskSpecFromConfig(c); }

// The task an lm.eval / lm.sample job works on: the one the model was trained
// on (task = "trained"), or the one its own keys describe.
common::Result<std::unique_ptr<SyntheticTask>> TaskFor(const JobContext& ctx, const lm::Checkpoint& trained) {
  const nlohmann::json& c = ctx.config();
  const bool same = c.value("trained_task", true);
  if (same && trained.job_config.contains("data") && !trained.job_config["data"].empty()) {
    return common::InvalidArgument("the upstream model was trained on token shards (data), not a synthetic task; "
                                   "set trained_task = false and name a task");
  }
  if (same) {  // task keys set while they are ignored would be a silent surprise
    common::Schema keys;
    DeclareTaskKeys(keys);
    for (const auto& k : keys.keys()) {
      if (c.contains(k.name) && c[k.name] != k.default_value) {
        return common::InvalidArgument("task key `" + k.name + "` is set but trained_task = true uses the upstream "
                                       "model's task; set trained_task = false to evaluate on another task");
      }
    }
  }
  SHAMMIE_ASSIGN_OR_RETURN(TaskSpec spec, TaskFromConfig(same ? trained.job_config : c));
  return SyntheticTask::Make(spec);
}

}  // namespace

namespace lm {

common::Result<UpstreamWork> OpenUpstream(const JobContext& ctx, const std::string& kind, int64_t n) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, UpstreamModel(ctx, true, kind));
  UpstreamWork work;
  SHAMMIE_ASSIGN_OR_RETURN(work.loaded, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(work.task, TaskFor(ctx, work.loaded.checkpoint));
  SHAMMIE_ASSIGN_OR_RETURN(Split split, SplitFromName(c["split"].get<std::string>()));
  if (n == 0) return work;
  const int64_t max_len = work.loaded.model->config.max_len;
  if (work.task->MaxTokens() + 1 > max_len) {
    return common::InvalidArgument("examples of this task need " + std::to_string(work.task->MaxTokens() + 1) +
                                   " positions; the model has max_len " + std::to_string(max_len));
  }
  work.examples = EvalSet(*work.task, split, n);
  return work;
}

}  // namespace lm

namespace {

std::vector<int> PromptTokens(const Example& e) {
  std::vector<int> p = {Tokenizer::kBos};
  p.insert(p.end(), e.prompt.begin(), e.prompt.end());
  return p;
}

}  // namespace

namespace {

// What decides a trained model's bits besides the seed (README, "kernel
// families"): the LibTorch build, ATen's vector kernels, the BLAS library and
// OpenBLAS's kernel family (common/blas_core.hpp), and the thread count.
storage::Table RuntimeTable(int64_t threads, const std::string& device) {
  // ATen's vector kernels as its configuration report names them ("CPU
  // capability usage: AVX2"); the getter itself is not exported.
  std::string capability = "unknown";
  const std::string config = at::show_config();
  const std::string key = "CPU capability usage: ";
  if (const size_t at = config.find(key); at != std::string::npos) {
    capability = config.substr(at + key.size(), config.find('\n', at) - at - key.size());
  }
  using CoreName = char* (*)();
  auto core_name = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  std::string blas = "unknown";
  Dl_info info{};
  if (void* sgemm = ::dlsym(RTLD_DEFAULT, "sgemm_"); sgemm && ::dladdr(sgemm, &info) && info.dli_fname) {
    std::error_code ec;  // the library behind Debian's alternatives links
    const auto real = std::filesystem::canonical(info.dli_fname, ec);
    blas = ec ? info.dli_fname : real.string();
  }
  storage::Table t;
  t.columns.push_back({"torch_version", std::vector<std::string>{TORCH_VERSION}});
  t.columns.push_back({"aten_cpu_capability", std::vector<std::string>{capability}});
  t.columns.push_back({"blas_library", std::vector<std::string>{blas}});
  t.columns.push_back({"openblas_core", std::vector<std::string>{core_name ? core_name() : ""}});
  t.columns.push_back({"threads", std::vector<int64_t>{threads}});
  t.columns.push_back({"device", std::vector<std::string>{device}});
  return t;
}

}  // namespace

common::Status RunLmTrain(JobContext& ctx) {
  const auto& c = ctx.config();
  TrainConfig t;
  SHAMMIE_ASSIGN_OR_RETURN(t.task, TaskFromConfig(c));
  t.model.d_model = c["d_model"].get<int64_t>();
  t.model.layers = c["layers"].get<int64_t>();
  t.model.heads = c["heads"].get<int64_t>();
  t.model.max_len = c["max_len"].get<int64_t>();
  t.model.tied_embeddings = c.value("tied_embeddings", true);
  t.steps = c["steps"].get<int64_t>();
  t.batch = c["batch"].get<int64_t>();
  t.accumulation = c["accumulation"].get<int64_t>();
  t.learning_rate = c["learning_rate"].get<double>();
  t.optimizer = c["optimizer"].get<std::string>();
  t.warmup = c["warmup"].get<int64_t>();
  t.weight_decay = c["weight_decay"].get<double>();
  t.clip = c["clip"].get<double>();
  t.eval_every = c["eval_every"].get<int64_t>();
  t.eval_examples = c["eval_examples"].get<int64_t>();
  t.patience = c["patience"].get<int64_t>();
  t.threads = c["threads"].get<int64_t>();
  t.checkpoint_every = c.value("checkpoint_every", int64_t{0});
  t.device = c.value("device", std::string("cpu"));
  if (c.contains("data") && c["data"].is_array()) t.data = c["data"].get<std::vector<std::string>>();
  t.window = c.value("window", int64_t{64});
  t.precision = c.value("precision", std::string("fp32"));
  t.init = c.value("init", std::string("auto"));
  t.train_examples = c.value("train_examples", int64_t{0});
  t.step_noise = c.value("step_noise", 0.0);
  t.save_model = c.value("save_model", true);
  t.record_as = c.value("record_as", std::string("model"));
  t.exit_loss = c.value("exit_loss", 0.0);
  t.model.loops = c.value("loops", int64_t{1});
  t.model.tying = c.value("tying", std::string("cycle"));
  if (t.model.loops == 1) t.model.tying = "cycle";  // what a vanilla checkpoint records
  t.model.lora_rank = c.value("lora_rank", int64_t{0});
  t.recursive_init = c.value("recursive_init", std::string("stepwise"));
  t.lora_init = c.value("lora_init", std::string("svd"));
  t.distill = c.value("distill", 0.0);
  t.weights = c.value("weights", std::string());
  t.packed = c.value("packed", false);
  t.model.block_length = c.value("block_length", int64_t{0});
  t.model.block_d_model = c.value("block_d_model", int64_t{0});
  t.model.block_layers = c.value("block_layers", int64_t{0});
  t.model.prefix = c.value("prefix", int64_t{2});
  if (t.model.block_length == 0) {  // a vanilla model (a zip sweep's vanilla row may carry block keys)
    const ModelConfig vanilla;
    t.model.block_d_model = vanilla.block_d_model;
    t.model.block_layers = vanilla.block_layers;
    t.model.prefix = vanilla.prefix;
  }
  t.seed = ctx.seed();
  auto r = TrainLanguageModel(t, ctx);
  if (!r.ok()) return r.status();
  if (ctx.collectives().rank() != 0) return common::Status::Ok();
  return ctx.WriteTable("runtime", RuntimeTable(t.threads, t.device));
}

common::Status RunLmEval(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(UpstreamWork work, OpenUpstream(ctx, "lm.eval", c["examples"].get<int64_t>()));
  Transformer& model = work.loaded.model;
  const std::unique_ptr<SyntheticTask>& task = work.task;
  const std::vector<Example>& set = work.examples;
  // Teacher-forced loss per example, then greedy generation in batches.
  std::vector<double> answer_logprob(set.size());
  double loss = 0, tokens = 0, forced_exact = 0;
  std::vector<std::string> generated(set.size());
  std::vector<int64_t> correct(set.size());
  int64_t max_answer = 0;
  for (const auto& e : set) max_answer = std::max<int64_t>(max_answer, static_cast<int64_t>(e.answer.size()));
  lm::SampleOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = max_answer;
  greedy.stop_tokens = {Tokenizer::kEos};
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < set.size(); i += 256) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped during evaluation");
    const size_t end = std::min(set.size(), i + 256);
    std::vector<Example> chunk(set.begin() + static_cast<std::ptrdiff_t>(i), set.begin() + static_cast<std::ptrdiff_t>(end));
    {
      torch::NoGradGuard guard;
      Batch b = MakeBatch(chunk);
      Scored s = Score(model, b);
      loss += s.loss_sum.item<double>();
      tokens += static_cast<double>(b.answer_tokens);
      forced_exact += s.exact.sum().item<double>();
      Tensor per = s.example_loss.to(torch::kFloat64).contiguous();
      for (size_t k = 0; k < chunk.size(); ++k) answer_logprob[i + k] = -per.data_ptr<double>()[k];
    }
    std::vector<std::vector<int>> prompts;
    for (const auto& e : chunk) prompts.push_back(PromptTokens(e));
    const std::vector<lm::Sampled> out = lm::Generate(model, prompts, greedy);
    for (size_t k = 0; k < chunk.size(); ++k) {
      generated[i + k] = Tokenizer::Decode(out[k].tokens);
      correct[i + k] = task->Correct(chunk[k], out[k].tokens) ? 1 : 0;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double n = static_cast<double>(std::max<size_t>(1, set.size()));
  double accuracy = 0;
  for (int64_t v : correct) accuracy += static_cast<double>(v);
  ctx.ReportMetric("loss", 0, tokens > 0 ? loss / tokens : 0);
  ctx.ReportMetric("accuracy", 0, accuracy / n);
  ctx.ReportMetric("teacher_forced_accuracy", 0, forced_exact / n);
  ctx.ReportMetric("examples", 0, static_cast<double>(set.size()));
  ctx.ReportMetric("seconds", 0, seconds);
  storage::Table table;
  std::vector<int64_t> index(set.size());
  std::vector<std::string> prompt(set.size()), answer(set.size());
  for (size_t k = 0; k < set.size(); ++k) {
    index[k] = static_cast<int64_t>(k);
    prompt[k] = set[k].prompt_text;
    answer[k] = set[k].answer_text;
  }
  table.columns.push_back({"example", std::move(index)});
  table.columns.push_back({"prompt", std::move(prompt)});
  table.columns.push_back({"answer", std::move(answer)});
  table.columns.push_back({"generated", std::move(generated)});
  table.columns.push_back({"correct", std::move(correct)});
  table.columns.push_back({"answer_logprob", std::move(answer_logprob)});
  return ctx.WriteTable("predictions", table);
}

common::Status RunLmSample(JobContext& ctx) {
  KeepFreedMemoryMapped();
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(UpstreamWork work, OpenUpstream(ctx, "lm.sample", c["prompts"].get<int64_t>()));
  const std::unique_ptr<SyntheticTask>& task = work.task;
  const std::vector<Example>& prompts_set = work.examples;
  const size_t n_prompts = std::min(prompts_set.size(), static_cast<size_t>(c["prompts"].get<int64_t>()));
  const int64_t per_prompt = c["samples"].get<int64_t>();
  lm::SampleOptions o;
  o.temperature = c["temperature"].get<double>();
  o.top_k = c["top_k"].get<int64_t>();
  o.top_p = c["top_p"].get<double>();
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>();
  o.stop_tokens = {Tokenizer::kEos};
  // Rows: prompt-major; row r has its own random stream (seed, r).
  std::vector<std::vector<int>> rows;
  std::vector<const Example*> row_example;
  std::vector<int64_t> prompt_index, sample_index;
  for (size_t p = 0; p < n_prompts; ++p) {
    for (int64_t s = 0; s < per_prompt; ++s) {
      rows.push_back(PromptTokens(prompts_set[p]));
      row_example.push_back(&prompts_set[p]);
      prompt_index.push_back(static_cast<int64_t>(p));
      sample_index.push_back(s);
    }
  }
  std::vector<std::string> text(rows.size()), prompt(rows.size()), answer(rows.size());
  std::vector<int64_t> ntokens(rows.size()), stopped(rows.size()), correct(rows.size());
  std::vector<double> logprob(rows.size());
  std::vector<std::string> token_logprobs(rows.size());
  int64_t generated_tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  const size_t batch = static_cast<size_t>(c["batch"].get<int64_t>());
  for (size_t i = 0; i < rows.size(); i += batch) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped while sampling");
    const size_t end = std::min(rows.size(), i + batch);
    std::vector<std::vector<int>> chunk(rows.begin() + static_cast<std::ptrdiff_t>(i),
                                        rows.begin() + static_cast<std::ptrdiff_t>(end));
    lm::SampleOptions chunk_options = o;
    chunk_options.seed = common::DeriveSeed(ctx.seed(), "rows", i);
    const std::vector<lm::Sampled> out = lm::Generate(work.loaded.model, chunk, chunk_options);
    for (size_t k = 0; k < out.size(); ++k) {
      const size_t r = i + k;
      text[r] = Tokenizer::Decode(out[k].tokens);
      prompt[r] = row_example[r]->prompt_text;
      answer[r] = row_example[r]->answer_text;
      ntokens[r] = static_cast<int64_t>(out[k].tokens.size());
      stopped[r] = out[k].stopped ? 1 : 0;
      correct[r] = task->Correct(*row_example[r], out[k].tokens) ? 1 : 0;
      double sum = 0;
      std::string per;
      for (double lp : out[k].logprobs) {
        sum += lp;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%s%.17g", per.empty() ? "" : " ", lp);
        per += buf;
      }
      logprob[r] = sum;
      token_logprobs[r] = per;
      generated_tokens += ntokens[r];
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double acc = 0, mean_lp = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    acc += static_cast<double>(correct[r]);
    mean_lp += logprob[r];
  }
  const double n = static_cast<double>(std::max<size_t>(1, rows.size()));
  ctx.ReportMetric("accuracy", 0, acc / n);
  ctx.ReportMetric("mean_logprob", 0, mean_lp / n);
  ctx.ReportMetric("samples", 0, static_cast<double>(rows.size()));
  ctx.ReportMetric("tokens_per_second", 0, seconds > 0 ? static_cast<double>(generated_tokens) / seconds : 0);
  storage::Table table;
  table.columns.push_back({"prompt_index", std::move(prompt_index)});
  table.columns.push_back({"sample_index", std::move(sample_index)});
  table.columns.push_back({"prompt", std::move(prompt)});
  table.columns.push_back({"answer", std::move(answer)});
  table.columns.push_back({"text", std::move(text)});
  table.columns.push_back({"tokens", std::move(ntokens)});
  table.columns.push_back({"stopped", std::move(stopped)});
  table.columns.push_back({"correct", std::move(correct)});
  table.columns.push_back({"logprob", std::move(logprob)});
  table.columns.push_back({"token_logprobs", std::move(token_logprobs)});
  return ctx.WriteTable("samples", table);
}

// --- early exit and pruning (lm.early_exit) ---

namespace {

// Per example and block: the first answer token the block predicts (through
// the final norm and LM head) and the softmax probability it gives it.
struct LayerPredictions {
  std::vector<std::vector<int>> token;  // [example][block]
  std::vector<std::vector<double>> confidence;
};

common::Result<LayerPredictions> PredictEveryBlock(Transformer& model, const std::vector<Example>& examples,
                                                   size_t batch, const JobContext& ctx) {
  LayerPredictions out;
  for (size_t i = 0; i < examples.size(); i += batch) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped while evaluating");
    const size_t end = std::min(examples.size(), i + batch);
    size_t longest = 0;
    for (size_t k = i; k < end; ++k) longest = std::max(longest, examples[k].prompt.size() + 1);
    Tensor input = torch::full({static_cast<int64_t>(end - i), static_cast<int64_t>(longest)}, Tokenizer::kPad, torch::kLong);
    Tensor last = torch::zeros({static_cast<int64_t>(end - i)}, torch::kLong);
    auto in = input.accessor<int64_t, 2>();
    for (size_t k = i; k < end; ++k) {
      const std::vector<int> p = PromptTokens(examples[k]);
      for (size_t j = 0; j < p.size(); ++j) in[static_cast<int64_t>(k - i)][static_cast<int64_t>(j)] = p[j];
      last[static_cast<int64_t>(k - i)] = static_cast<int64_t>(p.size() - 1);
    }
    const std::vector<Tensor> hidden = model->ForwardLayers(input);
    std::vector<Tensor> tokens, confidences;
    for (const Tensor& h : hidden) {
      const int64_t b = h.size(0), d = h.size(2);
      Tensor at = h.gather(1, last.view({b, 1, 1}).expand({b, 1, d})).squeeze(1);
      Tensor probs = torch::softmax(model->Logits(at).to(torch::kFloat64), -1);
      auto [conf, token] = probs.max(-1);
      tokens.push_back(token);
      confidences.push_back(conf);
    }
    for (size_t k = i; k < end; ++k) {
      std::vector<int> t;
      std::vector<double> c;
      for (size_t l = 0; l < hidden.size(); ++l) {
        t.push_back(static_cast<int>(tokens[l][static_cast<int64_t>(k - i)].item<int64_t>()));
        c.push_back(confidences[l][static_cast<int64_t>(k - i)].item<double>());
      }
      out.token.push_back(std::move(t));
      out.confidence.push_back(std::move(c));
    }
  }
  return out;
}

// Zeroes the `fraction` of each block's SwiGLU units with the smallest
// |w1_i| |w3_i| |w2_:,i| (ties: lower index first kept); returns units removed per block.
int64_t PruneMlpUnits(Transformer& model, double fraction) {
  int64_t removed = 0;
  for (auto& b : model->blocks) {
    Tensor w1 = b->w1->weight, w3 = b->w3->weight, w2 = b->w2->weight;  // [ff, d], [ff, d], [d, ff]
    const int64_t ff = w1.size(0);
    removed = static_cast<int64_t>(std::floor(fraction * static_cast<double>(ff)));
    if (removed <= 0) continue;
    Tensor importance = (w1.norm(2, 1) * w3.norm(2, 1) * w2.norm(2, 0)).to(torch::kFloat64);
    std::vector<std::pair<double, int64_t>> order;
    auto imp = importance.accessor<double, 1>();
    for (int64_t u = 0; u < ff; ++u) order.emplace_back(imp[u], u);
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& c) { return a.first < c.first; });
    for (int64_t k = 0; k < removed; ++k) {
      const int64_t u = order[static_cast<size_t>(k)].second;
      w1[u].zero_();
      w3[u].zero_();
      w2.select(1, u).zero_();
    }
  }
  return removed;
}

}  // namespace

common::Status RunLmEarlyExit(JobContext& ctx) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, UpstreamModel(ctx, true, "lm.early_exit"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTask> task, TaskFor(ctx, loaded.checkpoint));
  Transformer& model = loaded.model;
  if (task->MaxTokens() + 1 > model->config.max_len) {
    return common::InvalidArgument("examples of this task need " + std::to_string(task->MaxTokens() + 1) +
                                   " positions; the model has max_len " + std::to_string(model->config.max_len));
  }
  if (model->config.block_length > 0) {
    return common::InvalidArgument("lm.early_exit reads every layer's output; a Block Transformer has two stacks");
  }
  const double threshold = c["threshold"].get<double>();
  const double prune = c["prune"].get<double>();
  if (prune > 0 && model->config.lora_rank > 0) {
    return common::InvalidArgument("prune removes units of the shared blocks, but this relaxed recursive model's "
                                   "per-position LoRA would still write to them; prune a model without LoRA");
  }
  const size_t batch = static_cast<size_t>(c["batch"].get<int64_t>());
  struct Part {
    std::string name, prefix;
    std::vector<Example> examples;
  };
  std::vector<Part> parts = {
      {"validation", "val", EvalSet(*task, Split::kValidation, c["validation_examples"].get<int64_t>())},
      {"calibration", "cal", EvalSet(*task, Split::kTest, c["calibration_examples"].get<int64_t>())}};
  for (const Part& part : parts) {
    for (const Example& e : part.examples) {
      if (e.answer.size() != 2) {
        return common::InvalidArgument("lm.early_exit needs a task whose answers are one token (e.g. grammar); \"" +
                                       e.answer_text + "\" is not");
      }
    }
  }
  model->eval();
  torch::NoGradGuard no_grad;
  // The full model's answers, then the pruned model's at every block.
  std::vector<LayerPredictions> full, pruned;
  for (const Part& part : parts) {
    SHAMMIE_ASSIGN_OR_RETURN(LayerPredictions p, PredictEveryBlock(model, part.examples, batch, ctx));
    full.push_back(std::move(p));
  }
  const int64_t removed = PruneMlpUnits(model, prune);
  for (const Part& part : parts) {
    SHAMMIE_ASSIGN_OR_RETURN(LayerPredictions p, PredictEveryBlock(model, part.examples, batch, ctx));
    pruned.push_back(std::move(p));
  }
  // Cost: the share of the full model's weight FLOPs per token (attention
  // projections 4 d^2, SwiGLU 3 d ff per block; attention scores and the exit
  // heads left out), for the blocks run up to the exit.
  const double d = static_cast<double>(model->config.d_model);
  const double ff = static_cast<double>(model->blocks.front()->w1->weight.size(0));
  const double block_full = 4 * d * d + 3 * d * ff;
  const double block_pruned = 4 * d * d + 3 * d * (ff - static_cast<double>(removed));
  const size_t layers = model->layer_map.size();  // positions (a recursive model loops its blocks)

  std::vector<std::string> split;
  std::vector<int64_t> example, loss, correct, exit_layer;
  std::vector<double> cost;
  for (size_t s = 0; s < parts.size(); ++s) {
    double risk = 0, total_cost = 0, acc = 0, full_acc = 0;
    const auto& ex = parts[s].examples;
    for (size_t i = 0; i < ex.size(); ++i) {
      size_t e = layers - 1;
      for (size_t l = 0; l < layers; ++l) {
        if (threshold < 1 && pruned[s].confidence[i][l] >= threshold) {
          e = l;
          break;
        }
      }
      const int answer = ex[i].answer.front();
      const int prediction = pruned[s].token[i][e];
      const int reference = full[s].token[i][layers - 1];
      split.push_back(parts[s].name);
      example.push_back(static_cast<int64_t>(i));
      loss.push_back(prediction != reference ? 1 : 0);
      correct.push_back(prediction == answer ? 1 : 0);
      exit_layer.push_back(static_cast<int64_t>(e + 1));
      cost.push_back(static_cast<double>(e + 1) * block_pruned / (static_cast<double>(layers) * block_full));
      risk += static_cast<double>(loss.back());
      total_cost += cost.back();
      acc += static_cast<double>(correct.back());
      full_acc += reference == answer ? 1 : 0;
    }
    const double n = static_cast<double>(std::max<size_t>(1, ex.size()));
    ctx.ReportMetric(parts[s].prefix + "_risk", 0, risk / n);
    ctx.ReportMetric(parts[s].prefix + "_cost", 0, total_cost / n);
    ctx.ReportMetric(parts[s].prefix + "_accuracy", 0, acc / n);
    ctx.ReportMetric(parts[s].prefix + "_full_accuracy", 0, full_acc / n);
  }
  storage::Table table;
  table.columns.push_back({"split", std::move(split)});
  table.columns.push_back({"example", std::move(example)});
  table.columns.push_back({"loss", std::move(loss)});
  table.columns.push_back({"cost", std::move(cost)});
  table.columns.push_back({"correct", std::move(correct)});
  table.columns.push_back({"exit_layer", std::move(exit_layer)});
  return ctx.WriteTable("losses", table);
}

}  // namespace shammie::workers
