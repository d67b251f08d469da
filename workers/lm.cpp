// The LibTorch runtime: model, batches, training loop, data parallelism, and
// the lm.* job kinds. The only translation unit that includes torch.
#include "workers/lm.hpp"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/random.hpp"

namespace shammie::workers {

namespace {

using torch::Tensor;
namespace nn = torch::nn;

// --- model ---

struct RMSNormImpl : nn::Module {
  explicit RMSNormImpl(int64_t d) { weight = register_parameter("weight", torch::ones({d})); }
  Tensor forward(const Tensor& x) { return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * weight; }
  Tensor weight;
};
TORCH_MODULE(RMSNorm);

nn::Linear MakeLinear(int64_t in, int64_t out) { return nn::Linear(nn::LinearOptions(in, out).bias(false)); }

// Rotary positions, Llama's "rotate half" form: the head dimension's two
// halves are the real and imaginary parts.
Tensor Rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

struct BlockImpl : nn::Module {
  BlockImpl(int64_t d, int64_t heads, int64_t ff) : heads_(heads), head_dim_(d / heads) {
    attn_norm = register_module("attn_norm", RMSNorm(d));
    wq = register_module("wq", MakeLinear(d, d));
    wk = register_module("wk", MakeLinear(d, d));
    wv = register_module("wv", MakeLinear(d, d));
    wo = register_module("wo", MakeLinear(d, d));
    mlp_norm = register_module("mlp_norm", RMSNorm(d));
    w1 = register_module("w1", MakeLinear(d, ff));
    w3 = register_module("w3", MakeLinear(d, ff));
    w2 = register_module("w2", MakeLinear(ff, d));
  }
  Tensor forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& mask) {
    const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
    Tensor h = attn_norm(x);
    auto split = [&](const Tensor& y) { return y.view({b, t, heads_, head_dim_}).transpose(1, 2); };
    Tensor q = Rope(split(wq(h)), cos, sin), k = Rope(split(wk(h)), cos, sin), v = split(wv(h));
    Tensor att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
    att = torch::softmax(att.masked_fill(mask, -std::numeric_limits<float>::infinity()), -1);
    Tensor y = torch::matmul(att, v).transpose(1, 2).reshape({b, t, d});
    Tensor out = x + wo(y);
    Tensor m = mlp_norm(out);
    return out + w2(torch::silu(w1(m)) * w3(m));
  }
  int64_t heads_, head_dim_;
  RMSNorm attn_norm{nullptr}, mlp_norm{nullptr};
  nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr}, w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(Block);

struct TransformerImpl : nn::Module {
  TransformerImpl(const ModelConfig& c, int64_t vocab, uint64_t seed) : config(c) {
    const int64_t d = c.d_model;
    int64_t ff = c.d_ff;
    if (ff <= 0) ff = ((8 * d / 3) + 7) / 8 * 8;
    embed = register_module("embed", nn::Embedding(vocab, d));
    for (int64_t i = 0; i < c.layers; ++i) blocks.push_back(register_module("block" + std::to_string(i), Block(d, c.heads, ff)));
    norm = register_module("norm", RMSNorm(d));
    if (!c.tied_embeddings) lm_head = register_module("lm_head", MakeLinear(d, vocab));
    score_head = register_module("score_head", nn::Linear(d, 1));
    // Explicit initialisation (the defaults differ across LibTorch versions),
    // from a generator of our own: the global one is shared by every thread.
    torch::NoGradGuard guard;
    at::Generator gen = at::detail::createCPUGenerator(seed);
    for (auto& p : named_parameters()) {
      if (p.key().find("norm") != std::string::npos) continue;
      if (p.key().find("bias") != std::string::npos) {
        p.value().zero_();
      } else {
        p.value().normal_(0.0, 0.02, gen);
      }
    }
    const int64_t half = d / c.heads / 2;
    Tensor inv = 1.0 / torch::pow(10000.0, torch::arange(0, half, torch::kFloat64) / static_cast<double>(half));
    Tensor angles = torch::outer(torch::arange(0, c.max_len, torch::kFloat64), inv);
    cos_ = register_buffer("rope_cos", angles.cos().to(torch::kFloat32));
    sin_ = register_buffer("rope_sin", angles.sin().to(torch::kFloat32));
  }
  // Hidden states [B, T, d] of tokens [B, T].
  Tensor forward(const Tensor& tokens) {
    const int64_t t = tokens.size(1);
    Tensor mask = torch::ones({t, t}, torch::kBool).triu(1);
    Tensor cos = cos_.narrow(0, 0, t), sin = sin_.narrow(0, 0, t);
    Tensor x = embed(tokens);
    for (auto& b : blocks) x = b(x, cos, sin, mask);
    return norm(x);
  }
  Tensor Logits(const Tensor& hidden) {
    return config.tied_embeddings ? torch::matmul(hidden, embed->weight.t()) : lm_head(hidden);
  }
  ModelConfig config;
  nn::Embedding embed{nullptr};
  std::vector<Block> blocks;
  RMSNorm norm{nullptr};
  nn::Linear lm_head{nullptr}, score_head{nullptr};
  Tensor cos_, sin_;
};
TORCH_MODULE(Transformer);

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
  Tensor exact;  // [B] bool
};

Scored Score(Transformer& model, const Batch& batch) {
  Tensor logits = model->Logits(model->forward(batch.input));
  Tensor ce = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), batch.target.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  Tensor m = batch.mask.reshape({-1});
  Scored s;
  s.loss_sum = (ce * m).sum();
  Tensor wrong = (logits.argmax(-1) != batch.target).to(torch::kFloat32) * batch.mask;
  s.exact = wrong.sum(-1) == 0;
  return s;
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

// A fixed evaluation set of a split: every example when the task is small,
// else `n` drawn with a seed derived from the task (the same for every run).
std::vector<Example> EvalSet(const SyntheticTask& task, Split split, int64_t n, uint64_t seed) {
  std::vector<Example> all = task.Enumerate(split, 4096);
  if (!all.empty()) return all;
  common::SplitMix64 rng(common::DeriveSeed(seed, "eval", static_cast<uint64_t>(split)));
  for (int64_t i = 0; i < n; ++i) all.push_back(task.Sample(split, rng));
  return all;
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

common::Status Validate(const TrainConfig& c, int gang_size) {
  if (c.model.d_model % c.model.heads != 0 || (c.model.d_model / c.model.heads) % 2 != 0) {
    return common::InvalidArgument("d_model must be a multiple of heads, with an even head dimension");
  }
  if (c.optimizer != "adamw" && c.optimizer != "sgd") {
    return common::InvalidArgument("optimizer must be adamw or sgd, not \"" + c.optimizer + "\"");
  }
  if (c.batch % (static_cast<int64_t>(gang_size) * c.accumulation) != 0) {
    return common::InvalidArgument("batch (" + std::to_string(c.batch) + ") must divide evenly into ranks (" +
                                   std::to_string(gang_size) + ") x accumulation (" + std::to_string(c.accumulation) +
                                   ")");
  }
  return common::Status::Ok();
}

}  // namespace

common::Result<TrainResult> TrainLanguageModel(const TrainConfig& config, JobContext& ctx) {
  cluster::Collectives& gang = ctx.collectives();
  SHAMMIE_RETURN_IF_ERROR(Validate(config, gang.size()));
  SHAMMIE_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTask> task, SyntheticTask::Make(config.task));
  if (task->MaxTokens() + 1 > config.model.max_len) {
    return common::InvalidArgument("examples of this task need " + std::to_string(task->MaxTokens() + 1) +
                                   " positions; raise max_len");
  }
  torch::set_num_threads(static_cast<int>(config.threads));
  Transformer model(config.model, Tokenizer::VocabSize(), common::DeriveSeed(config.seed, "init", 0));
  SHAMMIE_RETURN_IF_ERROR(BroadcastParameters(model, gang));
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (config.optimizer == "sgd") {
    optimizer = std::make_unique<torch::optim::SGD>(
        model->parameters(),
        torch::optim::SGDOptions(config.learning_rate).momentum(0.9).weight_decay(config.weight_decay));
  } else {
    optimizer = std::make_unique<torch::optim::AdamW>(
        model->parameters(),
        torch::optim::AdamWOptions(config.learning_rate).weight_decay(config.weight_decay).betas({0.9, 0.95}));
  }
  const std::vector<Example> val = EvalSet(*task, Split::kValidation, config.eval_examples, config.seed);
  const std::vector<Example> test = EvalSet(*task, Split::kTest, config.eval_examples, config.seed);

  TrainResult result;
  for (const auto& p : model->parameters()) result.parameters += p.numel();
  const int64_t per_rank = config.batch / gang.size();
  const int64_t micro = per_rank / config.accumulation;
  double best_val = std::numeric_limits<double>::infinity();
  int64_t bad_evals = 0;
  double window_loss = 0;
  int64_t window_steps = 0;
  int64_t tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < config.steps; ++step) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "cancelled at step " + std::to_string(step));
    // The global batch of this step, the same on every rank; rank r takes its slice.
    common::SplitMix64 rng(common::DeriveSeed(config.seed, "batch", static_cast<uint64_t>(step)));
    std::vector<Example> global;
    global.reserve(static_cast<size_t>(config.batch));
    int64_t global_tokens = 0;
    for (int64_t i = 0; i < config.batch; ++i) {
      global.push_back(task->Sample(Split::kTrain, rng));
      global_tokens += static_cast<int64_t>(global.back().answer.size());
    }
    const double lr = LearningRate(config, step);
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    optimizer->zero_grad();
    double step_loss = 0;
    for (int64_t m = 0; m < config.accumulation; ++m) {
      const auto first = global.begin() + static_cast<std::ptrdiff_t>(gang.rank() * per_rank + m * micro);
      Batch b = MakeBatch(std::vector<Example>(first, first + static_cast<std::ptrdiff_t>(micro)));
      // Normalised by the global batch's answer tokens: the gang's summed
      // gradient is the gradient of the whole batch's mean loss.
      Tensor loss = Score(model, b).loss_sum / static_cast<double>(global_tokens);
      loss.backward();
      step_loss += loss.item<double>();
      tokens += b.input.numel();
    }
    SHAMMIE_RETURN_IF_ERROR(AllreduceGradients(model, gang));
    if (config.clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), config.clip);
    optimizer->step();
    std::vector<double> loss_sum = {step_loss};
    SHAMMIE_RETURN_IF_ERROR(gang.AllreduceSum(std::span<double>(loss_sum)));
    window_loss += loss_sum[0];
    ++window_steps;
    result.steps = step + 1;
    if ((step + 1) % config.log_every == 0 || step + 1 == config.steps) {
      result.train_loss = window_loss / static_cast<double>(window_steps);
      ctx.ReportMetric("loss", step + 1, result.train_loss);
      ctx.ReportMetric("lr", step + 1, lr);
      window_loss = 0;
      window_steps = 0;
    }
    if ((step + 1) % config.eval_every == 0 || step + 1 == config.steps) {
      const Evaluation e = Evaluate(model, val);
      result.val_loss = e.loss;
      result.val_accuracy = e.accuracy;
      ctx.ReportMetric("val_loss", step + 1, e.loss);
      ctx.ReportMetric("val_accuracy", step + 1, e.accuracy);
      if (e.loss < best_val - 1e-6) {
        best_val = e.loss;
        bad_evals = 0;
      } else if (config.patience > 0 && ++bad_evals >= config.patience) {
        ctx.ReportMetric("early_stop", step + 1, 1);
        break;
      }
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.tokens_per_second = seconds > 0 ? static_cast<double>(tokens * gang.size()) / seconds : 0;
  result.test_accuracy = Evaluate(model, test).accuracy;
  ctx.ReportMetric("test_accuracy", result.steps, result.test_accuracy);
  ctx.ReportMetric("tokens_per_second", result.steps, result.tokens_per_second);
  ctx.ReportMetric("parameters", 0, static_cast<double>(result.parameters));
  for (auto& p : model->parameters()) {
    Tensor c = p.detach().contiguous();
    const auto* data = static_cast<const float*>(c.data_ptr());
    result.flat_parameters.insert(result.flat_parameters.end(), data, data + c.numel());
  }
  return result;
}

common::Status RunLmTrain(JobContext& ctx) {
  const auto& c = ctx.config();
  TrainConfig t;
  t.task.family = c["task"].get<std::string>();
  t.task.modulus = c["modulus"].get<int64_t>();
  t.task.shift = c["shift"].get<int64_t>();
  t.task.length = c["length"].get<int64_t>();
  t.task.alphabet = c["alphabet"].get<int64_t>();
  t.model.d_model = c["d_model"].get<int64_t>();
  t.model.layers = c["layers"].get<int64_t>();
  t.model.heads = c["heads"].get<int64_t>();
  t.model.max_len = c["max_len"].get<int64_t>();
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
  t.seed = ctx.seed();
  auto r = TrainLanguageModel(t, ctx);
  return r.ok() ? common::Status::Ok() : r.status();
}

}  // namespace shammie::workers
