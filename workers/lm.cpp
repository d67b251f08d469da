// The LibTorch runtime: model, batches, training loop, data parallelism, and
// the lm.* job kinds. The only translation unit that includes torch.
#include "workers/lm.hpp"

#include <torch/torch.h>

#include <iostream>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/hash.hpp"
#include "common/random.hpp"
#include "common/schema.hpp"
#include "storage/checkpoint_store.hpp"
#include "workers/lm_model.hpp"

namespace shammie::workers {

namespace {

using torch::Tensor;
using lm::Transformer;

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
};

Scored Score(Transformer& model, const Batch& batch) {
  Tensor logits = model->Logits(model->forward(batch.input));
  Tensor ce = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), batch.target.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  Tensor m = batch.mask.reshape({-1});
  Scored s;
  s.loss_sum = (ce * m).sum();
  s.example_loss = (ce * m).view({batch.mask.size(0), -1}).sum(-1);
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

int64_t ResolvedFf(const ModelConfig& m) { return m.d_ff > 0 ? m.d_ff : ((8 * m.d_model / 3) + 7) / 8 * 8; }

bool SameArchitecture(const ModelConfig& a, const ModelConfig& b) {
  ModelConfig x = a, y = b;
  x.d_ff = ResolvedFf(a);
  y.d_ff = ResolvedFf(b);
  return x == y;
}

std::string Describe(const ModelConfig& m) {
  return "d_model " + std::to_string(m.d_model) + ", layers " + std::to_string(m.layers) + ", heads " +
         std::to_string(m.heads) + ", d_ff " + std::to_string(ResolvedFf(m)) + ", max_len " +
         std::to_string(m.max_len) + (m.tied_embeddings ? ", tied" : ", untied") + ", classes " +
         std::to_string(m.classes);
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

// Writes the model and training state (gang rank 0) and records it as the
// job's "model". No-op in a context that keeps no files.
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
  return ctx.RecordArtifact("model", path);
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
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(config, model);
  lm::TrainState st;
  st.best_val = std::numeric_limits<double>::infinity();

  // Where to start: this job's own last checkpoint (a resumed or retried
  // attempt), else the upstream model (fine-tuning), else the seed.
  bool resumed = false;
  TrainResult result;
  if (const Artifact* prev = ctx.PreviousArtifact("model")) {
    auto bytes = storage::ReadVerified(prev->path);
    common::Result<lm::Checkpoint> ck = bytes.ok() ? lm::ParseCheckpoint(*bytes, prev->path)
                                                   : common::Result<lm::Checkpoint>(bytes.status());
    if (!ck.ok()) return ck.status().WithContext("resuming from this job's checkpoint");
    if (!SameArchitecture(ck->model, config.model) || ck->optimizer != config.optimizer ||
        ck->job_config != ctx.config()) {
      return common::FailedPrecondition(prev->path + " was written by a different configuration; not resuming");
    }
    SHAMMIE_RETURN_IF_ERROR(lm::LoadModule(*model, ck->model_bytes, prev->path));
    SHAMMIE_RETURN_IF_ERROR(lm::LoadOptimizer(*optimizer, ck->optimizer_bytes, prev->path));
    st = ck->state;
    resumed = true;
    result.resumed_from = st.step;
  }
  if (!resumed && config.init != "scratch") {
    SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, UpstreamModel(ctx, config.init == "upstream", "lm.train"));
    if (up) {
      SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(up->path));
      if (!SameArchitecture(loaded.checkpoint.model, config.model)) {
        return common::InvalidArgument("the upstream model (" + Describe(loaded.checkpoint.model) +
                                       ") does not match this job's architecture (" + Describe(config.model) +
                                       "); use the same model keys, or init = \"scratch\"");
      }
      SHAMMIE_RETURN_IF_ERROR(lm::LoadModule(*model, loaded.checkpoint.model_bytes, up->path));
      result.initialized_from = up->job_id;
    }
  }
  if (!resumed) SHAMMIE_RETURN_IF_ERROR(BroadcastParameters(model, gang));
  model->train();
  // A resumed attempt reports the curve so far again: results.h5 keeps the
  // metrics of the attempt that succeeds, and that curve must be whole.
  for (const auto& [name, step, value] : st.metrics) ctx.ReportMetric(name, step, value);
  auto report = [&](const std::string& name, int64_t step, double value) {
    st.metrics.emplace_back(name, step, value);
    ctx.ReportMetric(name, step, value);
  };

  const std::vector<Example> val = EvalSet(*task, Split::kValidation, config.eval_examples);
  const std::vector<Example> test = EvalSet(*task, Split::kTest, config.eval_examples);
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
      const Evaluation e = Evaluate(model, val);
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
  SHAMMIE_RETURN_IF_ERROR(SaveCheckpoint(ctx, model, *optimizer, config, st));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.steps = st.step;
  bool have_loss = false, have_val = false;
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
    if (name == "val_accuracy" && result.val_accuracy == 0) result.val_accuracy = value;
  }
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
  for (const auto& m : st.metrics) result.metrics.push_back(m);
  return result;
}

namespace {

common::Result<TaskSpec> TaskFromConfig(const nlohmann::json& c) { return TaskSpecFromConfig(c); }

common::Result<Split> SplitFromName(const std::string& name) {
  if (name == "train") return Split::kTrain;
  if (name == "validation") return Split::kValidation;
  if (name == "test") return Split::kTest;
  return common::InvalidArgument("split must be train, validation or test, not \"" + name + "\"");
}

// The task an lm.eval / lm.sample job works on: the one the model was trained
// on (task = "trained"), or the one its own keys describe.
common::Result<std::unique_ptr<SyntheticTask>> TaskFor(const JobContext& ctx, const lm::Checkpoint& trained) {
  const nlohmann::json& c = ctx.config();
  const bool same = c.value("trained_task", true);
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

std::vector<int> PromptTokens(const Example& e) {
  std::vector<int> p = {Tokenizer::kBos};
  p.insert(p.end(), e.prompt.begin(), e.prompt.end());
  return p;
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
  t.init = c.value("init", std::string("auto"));
  t.seed = ctx.seed();
  auto r = TrainLanguageModel(t, ctx);
  return r.ok() ? common::Status::Ok() : r.status();
}

common::Status RunLmEval(JobContext& ctx) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, UpstreamModel(ctx, true, "lm.eval"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTask> task, TaskFor(ctx, loaded.checkpoint));
  SHAMMIE_ASSIGN_OR_RETURN(Split split, SplitFromName(c["split"].get<std::string>()));
  Transformer& model = loaded.model;
  if (task->MaxTokens() + 1 > model->config.max_len) {
    return common::InvalidArgument("examples of this task need " + std::to_string(task->MaxTokens() + 1) +
                                   " positions; the model has max_len " + std::to_string(model->config.max_len));
  }
  const std::vector<Example> set = EvalSet(*task, split, c["examples"].get<int64_t>());
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
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, UpstreamModel(ctx, true, "lm.sample"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTask> task, TaskFor(ctx, loaded.checkpoint));
  SHAMMIE_ASSIGN_OR_RETURN(Split split, SplitFromName(c["split"].get<std::string>()));
  const std::vector<Example> prompts_set = EvalSet(*task, split, c["prompts"].get<int64_t>());
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
  std::vector<std::string> text(rows.size()), prompt(rows.size());
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
    const std::vector<lm::Sampled> out = lm::Generate(loaded.model, chunk, chunk_options);
    for (size_t k = 0; k < out.size(); ++k) {
      const size_t r = i + k;
      text[r] = Tokenizer::Decode(out[k].tokens);
      prompt[r] = row_example[r]->prompt_text;
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
  table.columns.push_back({"text", std::move(text)});
  table.columns.push_back({"tokens", std::move(ntokens)});
  table.columns.push_back({"stopped", std::move(stopped)});
  table.columns.push_back({"correct", std::move(correct)});
  table.columns.push_back({"logprob", std::move(logprob)});
  table.columns.push_back({"token_logprobs", std::move(token_logprobs)});
  return ctx.WriteTable("samples", table);
}

}  // namespace shammie::workers
