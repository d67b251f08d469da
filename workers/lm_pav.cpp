// Process advantage verifiers (PAPERS.md §2) on LibTorch: the pav.* job
// kinds. The exact values they use live in workers/pav.hpp (no torch).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/random.hpp"
#include "storage/checkpoint_store.hpp"
#include "workers/lm.hpp"
#include "workers/lm_torch.hpp"
#include "workers/pav.hpp"

namespace shammie::workers {

// Shared with the other torch kinds (declared in workers/lm_torch.hpp).
namespace lm {

std::vector<int64_t> Doublings(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t k = 1; k < n; k *= 2) out.push_back(k);
  out.push_back(n);
  return out;
}

std::vector<int> WithBos(const std::vector<int>& prompt, const std::vector<int>& answer) {
  std::vector<int> s = {Tokenizer::kBos};
  s.insert(s.end(), prompt.begin(), prompt.end());
  s.insert(s.end(), answer.begin(), answer.end());
  return s;
}

std::vector<int> WithoutEos(const std::vector<int>& answer) {
  std::vector<int> out;
  for (int t : answer) {
    if (t == Tokenizer::kEos) break;
    out.push_back(t);
  }
  return out;
}

Padded RightPadded(const std::vector<std::vector<int>>& seqs, size_t first, size_t end) {
  size_t longest = 1;
  for (size_t k = first; k < end; ++k) longest = std::max(longest, seqs[k].size());
  Padded p{torch::full({static_cast<int64_t>(end - first), static_cast<int64_t>(longest)}, Tokenizer::kPad, torch::kLong),
           torch::zeros({static_cast<int64_t>(end - first)}, torch::kLong)};
  auto in = p.input.accessor<int64_t, 2>();
  auto last = p.last.accessor<int64_t, 1>();
  for (size_t k = first; k < end; ++k) {
    for (size_t j = 0; j < seqs[k].size(); ++j) in[static_cast<int64_t>(k - first)][static_cast<int64_t>(j)] = seqs[k][j];
    last[static_cast<int64_t>(k - first)] = static_cast<int64_t>(seqs[k].size()) - 1;
  }
  return p;
}

std::vector<Sampled> SampleChunked(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                   SampleOptions options, size_t batch, uint64_t seed, const JobContext& ctx,
                                   common::Status& status) {
  std::vector<Sampled> out;
  out.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); i += batch) {
    if (ctx.cancelled()) {
      status = common::Status(common::StatusCode::kCancelled, "stopped while sampling");
      return out;
    }
    const size_t end = std::min(prompts.size(), i + batch);
    std::vector<std::vector<int>> chunk(prompts.begin() + static_cast<std::ptrdiff_t>(i),
                                        prompts.begin() + static_cast<std::ptrdiff_t>(end));
    options.seed = common::DeriveSeed(seed, "chunk", i);
    std::vector<Sampled> part = Generate(model, chunk, options);
    for (auto& p : part) out.push_back(std::move(p));
  }
  return out;
}

std::vector<double> LeaveOneOut(const std::vector<double>& reward, int64_t group) {
  const auto g = static_cast<size_t>(group);
  std::vector<double> out(reward.size());
  for (size_t r = 0; r < reward.size(); ++r) {
    const size_t first = r / g * g;
    double others = 0;
    for (size_t j = first; j < first + g && j < reward.size(); ++j) others += j == r ? 0 : reward[j];
    out[r] = reward[r] - (g > 1 ? others / static_cast<double>(g - 1) : 0);
  }
  return out;
}

Tensor ResponseLogProb(Transformer& model, const std::vector<std::vector<int>>& prompts,
                       const std::vector<Sampled>& responses, const std::vector<std::vector<double>>* weights) {
  size_t longest = 1;
  for (size_t r = 0; r < prompts.size(); ++r) longest = std::max(longest, prompts[r].size() + responses[r].tokens.size());
  const auto n = static_cast<int64_t>(prompts.size());
  Tensor input = torch::full({n, static_cast<int64_t>(longest)}, Tokenizer::kPad, torch::kLong);
  Tensor target = torch::zeros({n, static_cast<int64_t>(longest)}, torch::kLong);
  Tensor weight = torch::zeros({n, static_cast<int64_t>(longest)}, torch::kFloat32);
  auto in = input.accessor<int64_t, 2>();
  auto tg = target.accessor<int64_t, 2>();
  auto w = weight.accessor<float, 2>();
  for (int64_t r = 0; r < n; ++r) {
    const auto row = static_cast<size_t>(r);
    std::vector<int> seq = prompts[row];
    const size_t prompt_len = seq.size();
    seq.insert(seq.end(), responses[row].tokens.begin(), responses[row].tokens.end());
    for (size_t j = 0; j + 1 < seq.size(); ++j) {
      in[r][static_cast<int64_t>(j)] = seq[j];
      tg[r][static_cast<int64_t>(j)] = seq[j + 1];
      if (j + 1 >= prompt_len) {
        w[r][static_cast<int64_t>(j)] = weights ? static_cast<float>((*weights)[row][j + 1 - prompt_len]) : 1.0f;
      }
    }
  }
  // A Block Transformer scores a response in the layout it generated it in
  // (GenerateBlocks: the prompt ends at a block boundary), whatever the mode.
  Tensor hidden;
  if (const int64_t len = model->config.block_length; len > 0) {
    Tensor pad = torch::empty({n}, torch::kLong);
    for (int64_t r = 0; r < n; ++r) pad[r] = (len - static_cast<int64_t>(prompts[static_cast<size_t>(r)].size()) % len) % len;
    hidden = BlockForward(*model, input.to(model->embed->weight.device()), pad);
  } else {
    hidden = model->forward(input);
  }
  Tensor logp = torch::log_softmax(model->Logits(hidden), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1);
  return (logp * weight).sum(1);
}

common::Result<const Artifact*> OptionalInput(const JobContext& ctx, const std::string& name, const std::string& kind,
                                              const std::string& hint) {
  const Artifact* found = nullptr;
  for (const auto& a : ctx.inputs()) {
    if (a.name != name) continue;
    if (found) return common::InvalidArgument(kind + " reads one upstream \"" + name + "\" but has several; " + hint);
    found = &a;
  }
  return found;
}

common::Result<const Artifact*> OneInput(const JobContext& ctx, const std::string& name, const std::string& kind,
                                         const std::string& hint) {
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* found, OptionalInput(ctx, name, kind, hint));
  if (!found) return common::InvalidArgument(kind + " needs an upstream \"" + name + "\": " + hint);
  return found;
}

}  // namespace lm

using lm::Doublings;
using lm::OneInput;
using lm::OptionalInput;
using lm::Padded;
using lm::RightPadded;
using lm::SampleChunked;
using lm::WithBos;
using lm::WithoutEos;

namespace {

using torch::Tensor;


// --- the didactic planted-subsequence task (pav.didactic) ---

// The paper's MADE-style autoregressive MLP: the logits of position h read
// the one-hot tokens before h (later ones masked to zero) and a one-hot of h.
struct DidacticPolicyImpl : torch::nn::Module {
  DidacticPolicyImpl(int vocab_size, int positions, int64_t hidden) : vocab(vocab_size), length(positions) {
    const int64_t in = static_cast<int64_t>(length) * (vocab + 1);
    net = register_module("net", torch::nn::Sequential(torch::nn::Linear(in, hidden), torch::nn::ReLU(),
                                                       torch::nn::Linear(hidden, hidden), torch::nn::ReLU(),
                                                       torch::nn::Linear(hidden, hidden), torch::nn::ReLU(),
                                                       torch::nn::Linear(hidden, vocab)));
    // mask[h] keeps the one-hot slots of positions < h.
    mask = torch::zeros({length, static_cast<int64_t>(length) * vocab});
    for (int h = 0; h < length; ++h) mask[h].slice(0, 0, static_cast<int64_t>(h) * vocab).fill_(1);
    position = torch::eye(length);
  }
  // tokens [B, L] in 1..vocab (0 = not yet drawn) -> logits [B, L, vocab].
  Tensor forward(const Tensor& tokens) {
    const int64_t b = tokens.size(0);
    Tensor onehot = torch::one_hot(tokens.clamp_min(1) - 1, vocab).to(torch::kFloat32);
    onehot = onehot * (tokens > 0).unsqueeze(-1).to(torch::kFloat32);
    Tensor flat = onehot.reshape({b, 1, -1}) * mask.unsqueeze(0);  // [B, L, L*V]
    Tensor input = torch::cat({flat, position.unsqueeze(0).expand({b, length, length})}, -1);
    return net->forward(input);
  }
  int vocab, length;
  torch::nn::Sequential net{nullptr};
  Tensor mask, position;
};
TORCH_MODULE(DidacticPolicy);

// Draws `n` sequences from the policy, position by position.
std::vector<std::vector<int>> SamplePolicy(DidacticPolicy& policy, int64_t n, common::SplitMix64& rng) {
  torch::NoGradGuard guard;
  const int length = policy->length, vocab = policy->vocab;
  Tensor tokens = torch::zeros({n, length}, torch::kLong);
  for (int h = 0; h < length; ++h) {
    Tensor probs = torch::softmax(policy->forward(tokens).select(1, h).to(torch::kFloat64), -1).contiguous();
    const double* p = probs.data_ptr<double>();
    auto tok = tokens.accessor<int64_t, 2>();
    for (int64_t i = 0; i < n; ++i) {
      double u = rng.NextDouble();
      int pick = vocab;
      for (int a = 0; a < vocab; ++a) {
        u -= p[i * vocab + a];
        if (u < 0) {
          pick = a + 1;
          break;
        }
      }
      tok[i][h] = pick;
    }
  }
  std::vector<std::vector<int>> out(static_cast<size_t>(n), std::vector<int>(static_cast<size_t>(length)));
  auto tok = tokens.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int h = 0; h < length; ++h) out[static_cast<size_t>(i)][static_cast<size_t>(h)] = static_cast<int>(tok[i][h]);
  }
  return out;
}

Tensor ToTensor(const std::vector<std::vector<int>>& seqs) {
  const auto n = static_cast<int64_t>(seqs.size());
  const auto l = static_cast<int64_t>(seqs.empty() ? 0 : seqs[0].size());
  Tensor t = torch::zeros({n, l}, torch::kLong);
  auto a = t.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < l; ++h) a[i][h] = seqs[static_cast<size_t>(i)][static_cast<size_t>(h)];
  }
  return t;
}

}  // namespace

common::Status RunPavDidactic(JobContext& ctx) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  pav::PlantedTask task;
  task.vocab = static_cast<int>(c["vocab"].get<int64_t>());
  task.length = static_cast<int>(c["length"].get<int64_t>());
  task.target.clear();
  for (const auto& t : c["target"]) task.target.push_back(static_cast<int>(t.get<int64_t>()));
  SHAMMIE_RETURN_IF_ERROR(pav::ValidatePlantedTask(task));
  const pav::ProverValues sft_prover(task, c["init_gamma"].get<double>());
  const pav::ProverValues prover(task, c["prover_gamma"].get<double>());
  const double alpha = c["alpha"].get<double>();
  const int64_t iterations = c["iterations"].get<int64_t>();
  const int64_t batch = c["batch"].get<int64_t>();
  const int64_t eval_every = c["eval_every"].get<int64_t>();
  const int64_t eval_samples = c["eval_samples"].get<int64_t>();
  const double success_target = c["success_target"].get<double>();
  const double lr = c["learning_rate"].get<double>();
  const double entropy_coef = c.value("entropy", 0.0);

  torch::manual_seed(common::DeriveSeed(ctx.seed(), "init", 0));
  DidacticPolicy policy(task.vocab, task.length, c["hidden"].get<int64_t>());
  const pav::PlantedAutomaton& automaton = prover.automaton();
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "samples", 0));

  // SFT: imitate the initial prover's samples (cross-entropy on every token).
  {
    std::vector<std::vector<int>> data;
    const int64_t n = c["sft_samples"].get<int64_t>();
    for (int64_t i = 0; i < n; ++i) data.push_back(sft_prover.Sample(rng));
    torch::optim::Adam sft(policy->parameters(), torch::optim::AdamOptions(lr));
    for (int64_t it = 0; it < c["sft_iterations"].get<int64_t>(); ++it) {
      std::vector<std::vector<int>> mb;
      for (int64_t i = 0; i < batch; ++i) mb.push_back(data[static_cast<size_t>(rng.NextInt(0, n - 1))]);
      Tensor tokens = ToTensor(mb);
      Tensor logits = policy->forward(tokens);
      Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, task.vocab}), (tokens - 1).reshape({-1}));
      sft.zero_grad();
      loss.backward();
      sft.step();
    }
  }

  torch::optim::Adam optimizer(policy->parameters(), torch::optim::AdamOptions(lr));
  int64_t reached_at = -1;  // samples drawn when the evaluated success first reached success_target
  double success = 0;
  int64_t eval_hits = 0;  // successes among the last evaluation's samples
  std::vector<std::vector<int>> eval;
  auto evaluate = [&](int64_t it) {
    common::SplitMix64 eval_rng(common::DeriveSeed(ctx.seed(), "eval", static_cast<uint64_t>(it)));
    eval = SamplePolicy(policy, eval_samples, eval_rng);
    eval_hits = 0;
    for (const auto& s : eval) eval_hits += pav::Succeeds(automaton, s) ? 1 : 0;
    success = static_cast<double>(eval_hits) / static_cast<double>(eval_samples);
    ctx.ReportMetric("success", it, success);
    if (reached_at < 0 && success >= success_target) reached_at = it * batch;
  };
  evaluate(0);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t it = 1; it <= iterations; ++it) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped during RL");
    const std::vector<std::vector<int>> seqs = SamplePolicy(policy, batch, rng);
    // Per-step effective reward: the trajectory's outcome (a Monte-Carlo
    // estimate of Q^pi of the step taken) minus a leave-one-out baseline,
    // plus alpha times the prover's exact advantage of the step.
    std::vector<double> reward(static_cast<size_t>(batch));
    double total = 0;
    for (int64_t i = 0; i < batch; ++i) {
      reward[static_cast<size_t>(i)] = pav::Succeeds(automaton, seqs[static_cast<size_t>(i)]) ? 1 : 0;
      total += reward[static_cast<size_t>(i)];
    }
    Tensor weight = torch::zeros({batch, task.length}, torch::kFloat32);
    auto w = weight.accessor<float, 2>();
    double mean_advantage = 0;
    for (int64_t i = 0; i < batch; ++i) {
      const double r = reward[static_cast<size_t>(i)];
      const double baseline = batch > 1 ? (total - r) / static_cast<double>(batch - 1) : 0;
      const std::vector<double> adv = prover.Advantages(seqs[static_cast<size_t>(i)]);
      for (int h = 0; h < task.length; ++h) {
        w[i][h] = static_cast<float>(pav::EffectiveReward(r - baseline, adv[static_cast<size_t>(h)], alpha));
        mean_advantage += adv[static_cast<size_t>(h)];
      }
    }
    Tensor tokens = ToTensor(seqs);
    Tensor all_logp = torch::log_softmax(policy->forward(tokens), -1);
    Tensor logp = all_logp.gather(-1, (tokens - 1).unsqueeze(-1)).squeeze(-1);
    // The policy's entropy at every state of the batch, summed over positions
    // like the policy-gradient term (the bonus is off at entropy = 0).
    Tensor entropy = -(all_logp.exp() * all_logp).sum(-1);
    Tensor loss = -(logp * weight).sum() / static_cast<double>(batch);
    if (entropy_coef > 0) loss = loss - entropy_coef * entropy.sum() / static_cast<double>(batch);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (it % eval_every == 0 || it == iterations) {
      ctx.ReportMetric("train_success", it, total / static_cast<double>(batch));
      ctx.ReportMetric("advantage", it, mean_advantage / static_cast<double>(batch * task.length));
      ctx.ReportMetric("entropy", it, entropy.detach().mean().item<double>());
      evaluate(it);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx.ReportMetric("final_success", 0, success);
  ctx.ReportMetric("reached_target", 0, reached_at >= 0 ? 1.0 : 0.0);
  if (reached_at >= 0) ctx.ReportMetric("samples_to_target", 0, static_cast<double>(reached_at));
  ctx.ReportMetric("iterations_per_second", 0, seconds > 0 ? static_cast<double>(iterations) / seconds : 0);
  ctx.ReportMetric("prover_value", 0, prover.Value(0, task.length));
  {  // The policy's probability of writing target[k] right after target[0..k) at the start.
    torch::NoGradGuard guard;
    const auto m = static_cast<int64_t>(task.target.size());
    Tensor path = torch::zeros({m, task.length}, torch::kLong);
    for (int64_t k = 0; k < m; ++k) {
      for (int64_t j = 0; j < k; ++j) path[k][j] = task.target[static_cast<size_t>(j)];
    }
    Tensor probs = torch::softmax(policy->forward(path).to(torch::kFloat64), -1);
    for (int64_t k = 0; k < m; ++k) {
      ctx.ReportMetric("path_probability", k, probs[k][k][task.target[static_cast<size_t>(k)] - 1].item<double>());
    }
  }
  for (int64_t n : Doublings(std::min<int64_t>(64, eval_samples))) {
    ctx.ReportMetric("pass_at", n, pav::PassAtN(eval_samples, eval_hits, n));
  }
  // The final evaluation's samples.
  storage::Table table;
  std::vector<int64_t> index, found, state;
  std::vector<std::string> text;
  std::vector<double> advantage_sum;
  for (size_t i = 0; i < eval.size(); ++i) {
    index.push_back(static_cast<int64_t>(i));
    std::string t;
    for (int a : eval[i]) t += (t.empty() ? "" : " ") + std::to_string(a);
    text.push_back(t);
    found.push_back(pav::Succeeds(automaton, eval[i]) ? 1 : 0);
    state.push_back(automaton.Run(eval[i]));
    double sum = 0;
    for (double a : prover.Advantages(eval[i])) sum += a;
    advantage_sum.push_back(sum);
  }
  table.columns = {{"sample", index}, {"tokens", text}, {"success", found}, {"match_state", state},
                   {"prover_advantage_sum", advantage_sum}};
  return ctx.WriteTable("samples", table);
}

// --- arithmetic chains with a policy and a verifier (pav.rollouts, pav.verifier, pav.search) ---

namespace {

int EqualsToken() {
  static const int id = Tokenizer::Encode("=").value().at(0);
  return id;
}

}  // namespace

namespace lm {

// The verifier's score (a logit of Q^pi) at every position of `input` (BOS
// prompt answer, right-padded): its scalar head on the hidden state, plus,
// with `likelihood`, the log-likelihood its own language model gives the
// answer's tokens up to that position. The answer starts after the prompt's
// '=' (the first one). A verifier fine-tuned from the policy starts with the
// policy's likelihood: a written value the policy would not write (a slip) is
// a token of low probability, which the head alone would have to learn to
// recompute and compare.
torch::Tensor VerifierScores(Transformer& verifier, const torch::Tensor& input, bool likelihood) {
  using torch::Tensor;
  const Tensor hidden = verifier->forward(input);
  Tensor score = verifier->score_head(hidden).squeeze(-1);  // [B, T]
  if (!likelihood || input.size(1) < 2) return score;
  const Tensor next = input.slice(1, 1);                    // the token each position predicts
  const Tensor lp = torch::log_softmax(verifier->Logits(hidden).slice(1, 0, -1), -1)
                        .gather(-1, next.unsqueeze(-1))
                        .squeeze(-1);                         // [B, T-1]
  const Tensor eq = input.eq(static_cast<int64_t>(EqualsToken())).to(torch::kLong);
  const Tensor in_answer = (eq.cumsum(1) - eq).gt(0).slice(1, 1);  // a '=' strictly before the token
  const Tensor cum = torch::cumsum(torch::where(in_answer, lp, torch::zeros_like(lp)), 1);
  return score + torch::cat({torch::zeros({input.size(0), 1}, cum.options()), cum}, 1).to(score.scalar_type());
}

}  // namespace lm

namespace {

using lm::Transformer;
using lm::VerifierScores;




// Step prefixes of an answer: the lengths after each '=' before the first
// EOS, starting with the empty prefix. A step is one line of the chain.
std::vector<size_t> StepPrefixes(const std::vector<int>& answer) {
  std::vector<size_t> ends = {0};
  for (size_t i = 0; i < answer.size() && answer[i] != Tokenizer::kEos; ++i) {
    if (answer[i] == EqualsToken()) ends.push_back(i + 1);
  }
  return ends;
}


// Whether a pav.verifier checkpoint scores with its likelihood: its job
// config's "verifier_score", "head" or "likelihood" (older checkpoints have
// none: the head alone). Anything else is refused, not read as the head.
common::Result<bool> ScoresLikelihood(const lm::LoadedModel& verifier, const std::string& path) {
  const nlohmann::json& c = verifier.checkpoint.job_config;
  if (!c.is_object() || !c.contains("verifier_score")) return false;
  const nlohmann::json& v = c.at("verifier_score");
  if (v.is_string() && (v.get<std::string>() == "head" || v.get<std::string>() == "likelihood")) {
    return v.get<std::string>() == "likelihood";
  }
  return common::DataLoss(path + ": verifier_score must be \"head\" or \"likelihood\", got " + v.dump());
}

// The verifier's Q^pi estimate sigmoid(score) of each sequence (BOS prompt
// answer-prefix), in batches.
std::vector<double> VerifierValues(Transformer& verifier, bool likelihood, const std::vector<std::vector<int>>& seqs,
                                   size_t batch) {
  torch::NoGradGuard guard;
  std::vector<double> out;
  out.reserve(seqs.size());
  for (size_t i = 0; i < seqs.size(); i += batch) {
    const Padded p = RightPadded(seqs, i, std::min(seqs.size(), i + batch));
    // In double before the sigmoid: float32 rounds every logit above ~17 to
    // exactly 1, and ties would decide best-of-N and beam picks by position.
    Tensor q = torch::sigmoid(
                   VerifierScores(verifier, p.input, likelihood).gather(1, p.last.unsqueeze(1)).squeeze(1).to(torch::kFloat64))
                   .contiguous();
    out.insert(out.end(), q.data_ptr<double>(), q.data_ptr<double>() + q.numel());
  }
  return out;
}

// The prover mu of the beam score and of RL's dense reward. Best-of-K of the
// policy: Q^mu = 1 - (1 - Q^pi)^K from the verifier's Q^pi (no extra model).
// prover = "trained": a separately trained policy, whose Q^mu of the
// policy's prefixes an upstream "prover_verifier" predicts (a pav.verifier
// on pav.rollouts that the prover completed).
struct ProverScorer {
  double k = 1;
  std::optional<lm::LoadedModel> verifier;
  bool likelihood = false;
  std::optional<double> accuracy;  // a trained prover's, from its rollouts
  // Q^mu of each sequence, given its Q^pi.
  std::vector<double> Of(const std::vector<double>& q_pi, const std::vector<std::vector<int>>& seqs, size_t batch) {
    if (verifier) return VerifierValues(verifier->model, likelihood, seqs, batch);
    std::vector<double> out(q_pi.size());
    for (size_t i = 0; i < q_pi.size(); ++i) out[i] = pav::BestOfK(q_pi[i], k);
    return out;
  }
};
// A trained prover's verifier is required even where alpha = 0 leaves it
// unused: its accuracy labels the job, so that an analysis can group a sweep
// over provers (alpha = 0 jobs included) by it.
common::Result<ProverScorer> OpenProverScorer(const JobContext& ctx, const std::string& kind) {
  const auto& c = ctx.config();
  const bool trained = c.value("prover", std::string("best-of-k")) == "trained";
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* pv, OptionalInput(ctx, "prover_verifier", kind, "depend on one prover's "
                                                             "verifier per job (sweep.over)"));
  if (pv && !trained) {
    return common::InvalidArgument(kind + ": job " + ctx.job_id() + " has an upstream prover_verifier (from job " +
                                   pv->job_id + ") but prover is Best-of-K; set prover = \"trained\" to score with "
                                   "it, or take it out of depends_on");
  }
  ProverScorer out;
  out.k = c["prover_k"].get<double>();
  if (!trained) return out;
  if (!pv) {
    return common::InvalidArgument(kind + " with prover = \"trained\" needs an upstream \"prover_verifier\": a "
                                   "pav.verifier trained on pav.rollouts that the prover (an lm.train job with "
                                   "record_as = \"prover\") completed");
  }
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(pv->path));
  SHAMMIE_ASSIGN_OR_RETURN(out.likelihood, ScoresLikelihood(loaded, pv->path));
  // Which prover: its accuracy, measured by its rollouts (an analysis can
  // group `over` jobs by it).
  const nlohmann::json& jc = loaded.checkpoint.job_config;
  if (jc.contains("completer_accuracy") && jc["completer_accuracy"].is_number()) {
    out.accuracy = jc["completer_accuracy"].get<double>();
  }
  out.verifier = std::move(loaded);
  return out;
}

// What every arithmetic pav kind starts from: the job's thread count set,
// the upstream policy (an lm.train job on task = "arith") and its task.
struct PolicyWork {
  lm::LoadedModel policy;
  TaskSpec spec;
  std::unique_ptr<SyntheticTask> task;
};
common::Result<PolicyWork> OpenPolicy(const JobContext& ctx, const std::string& kind) {
  torch::set_num_threads(static_cast<int>(ctx.config()["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, lm::UpstreamModel(ctx, true, kind));
  PolicyWork work;
  SHAMMIE_ASSIGN_OR_RETURN(work.policy, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(work.spec, TaskSpecFromConfig(work.policy.checkpoint.job_config));
  if (work.spec.family != "arith") {
    return common::InvalidArgument("the PAV kinds work on step-by-step arithmetic chains (task = \"arith\"); the "
                                   "upstream policy was trained on \"" + work.spec.family + "\"");
  }
  SHAMMIE_ASSIGN_OR_RETURN(work.task, SyntheticTask::Make(work.spec));
  return work;
}

// A separately trained prover: the upstream lm.train job with record_as =
// "prover", if there is one. It must write the policy's chains (the same
// task, modulus and operations).
struct TrainedProver {
  lm::LoadedModel model;
  std::string job_id;  // which prover: a verifier learns one prover's Q^mu
};
common::Result<std::optional<TrainedProver>> OpenTrainedProver(const JobContext& ctx, const std::string& kind,
                                                               const TaskSpec& policy_spec) {
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, OptionalInput(ctx, "prover", kind, "depend on one prover job per "
                                                             "job (sweep.over)"));
  if (!up) return std::optional<TrainedProver>();
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel prover, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(TaskSpec spec, TaskSpecFromConfig(prover.checkpoint.job_config));
  if (spec.family != policy_spec.family || spec.modulus != policy_spec.modulus ||
      spec.operations != policy_spec.operations) {
    return common::InvalidArgument(kind + ": the prover (job " + up->job_id + ") was trained on " + spec.family +
                                   " mod " + std::to_string(spec.modulus) + " with " + std::to_string(spec.operations) +
                                   " operations, the policy on " + policy_spec.family + " mod " +
                                   std::to_string(policy_spec.modulus) + " with " +
                                   std::to_string(policy_spec.operations) + ": it must write the policy's chains");
  }
  return std::optional<TrainedProver>(TrainedProver{std::move(prover), up->job_id});
}


struct ValueRow {
  std::string prompt, prefix;  // texts: the prompt and the answer prefix
  double q = 0;
  bool final = false;  // a complete answer: q is its exact outcome
};

// The probability that a random positive scores above a random negative
// (ties count half); NaN without both classes.
double Auc(const std::vector<double>& score, const std::vector<bool>& positive) {
  std::vector<size_t> order(score.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  double rank_sum = 0, pos = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && score[order[j]] == score[order[i]]) ++j;
    const double mid = (static_cast<double>(i) + static_cast<double>(j) + 1) / 2;  // 1-based mean rank
    for (size_t t = i; t < j; ++t) {
      if (positive[order[t]]) {
        rank_sum += mid;
        pos += 1;
      }
    }
    i = j;
  }
  const double neg = static_cast<double>(score.size()) - pos;
  if (pos == 0 || neg == 0) return std::nan("");
  return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

}  // namespace

common::Status RunPavRollouts(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(PolicyWork work, OpenPolicy(ctx, "pav.rollouts"));
  lm::LoadedModel& policy = work.policy;
  const std::unique_ptr<SyntheticTask>& task = work.task;
  // With a trained prover mu the policy writes the prefixes and mu completes
  // them: Q-hat then estimates Q^mu of the policy's prefixes.
  SHAMMIE_ASSIGN_OR_RETURN(std::optional<TrainedProver> prover, OpenTrainedProver(ctx, "pav.rollouts", work.spec));
  Transformer& completer = prover ? prover->model.model : policy.model;
  const int64_t n_prompts = c["prompts"].get<int64_t>(), n_cov = c["rollouts"].get<int64_t>(),
                n_mc = c["mc"].get<int64_t>();
  const size_t batch = static_cast<size_t>(c["batch"].get<int64_t>());
  lm::SampleOptions o;
  o.temperature = c["temperature"].get<double>();
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>();
  o.stop_tokens = {Tokenizer::kEos};
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "prompts", 0));
  std::vector<Example> prompts;
  for (int64_t i = 0; i < n_prompts; ++i) prompts.push_back(task->Sample(Split::kTrain, rng));
  const auto start = std::chrono::steady_clock::now();
  // Seed rollouts: n_cov per prompt.
  std::vector<std::vector<int>> rows;
  for (const auto& e : prompts) {
    for (int64_t r = 0; r < n_cov; ++r) rows.push_back(WithBos(e.prompt));
  }
  common::Status status;
  const std::vector<lm::Sampled> seeds = SampleChunked(policy.model, rows, o, batch, common::DeriveSeed(ctx.seed(), "rollouts", 0), ctx, status);
  SHAMMIE_RETURN_IF_ERROR(status);
  // Every step prefix of every rollout (but the complete answer) gets n_mc completions.
  struct Prefix {
    size_t rollout;
    size_t step, steps;
    std::vector<int> answer;
  };
  std::vector<Prefix> prefixes;
  std::vector<std::vector<int>> mc_rows;
  int64_t generated_tokens = 0;
  for (size_t r = 0; r < seeds.size(); ++r) {
    generated_tokens += static_cast<int64_t>(seeds[r].tokens.size());
    std::vector<size_t> ends = StepPrefixes(seeds[r].tokens);
    // A solution cut off right after a '=' is its own last prefix: keep only
    // the complete-answer row (its exact outcome), not a Monte-Carlo one too.
    if (ends.size() > 1 && ends.back() == WithoutEos(seeds[r].tokens).size()) ends.pop_back();
    for (size_t h = 0; h < ends.size(); ++h) {
      std::vector<int> answer(seeds[r].tokens.begin(), seeds[r].tokens.begin() + static_cast<std::ptrdiff_t>(ends[h]));
      prefixes.push_back({r, h, ends.size(), answer});
      for (int64_t k = 0; k < n_mc; ++k) mc_rows.push_back(WithBos(prompts[r / static_cast<size_t>(n_cov)].prompt, answer));
    }
  }
  const std::vector<lm::Sampled> mc = SampleChunked(completer, mc_rows, o, batch, common::DeriveSeed(ctx.seed(), "mc", 0), ctx, status);
  SHAMMIE_RETURN_IF_ERROR(status);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<int64_t> prompt_col, rollout_col, step_col, steps_col, final_col, n_col;
  std::vector<std::string> prompt_text, prefix_text;
  std::vector<double> q_col;
  nlohmann::json data = nlohmann::json::array();
  auto add = [&](size_t r, int64_t step, int64_t steps, const std::vector<int>& answer, double q, int64_t n, bool final) {
    const Example& e = prompts[r / static_cast<size_t>(n_cov)];
    prompt_col.push_back(static_cast<int64_t>(r / static_cast<size_t>(n_cov)));
    rollout_col.push_back(static_cast<int64_t>(r));
    step_col.push_back(step);
    steps_col.push_back(steps);
    final_col.push_back(final ? 1 : 0);
    n_col.push_back(n);
    prompt_text.push_back(e.prompt_text);
    prefix_text.push_back(Tokenizer::Decode(answer));
    q_col.push_back(q);
    data.push_back({{"prompt", e.prompt_text}, {"prefix", prefix_text.back()}, {"q", q}, {"final", final}});
    if (prover) {  // absent: the policy's
      data.back()["q_of"] = "prover";
      data.back()["prover_job"] = prover->job_id;
    }
  };
  double correct = 0, root_q = 0, roots = 0;
  for (size_t p = 0; p < prefixes.size(); ++p) {
    const Prefix& pre = prefixes[p];
    const Example& e = prompts[pre.rollout / static_cast<size_t>(n_cov)];
    int64_t hits = 0;
    for (int64_t k = 0; k < n_mc; ++k) {
      const lm::Sampled& s = mc[p * static_cast<size_t>(n_mc) + static_cast<size_t>(k)];
      generated_tokens += static_cast<int64_t>(s.tokens.size());
      std::vector<int> full = pre.answer;
      full.insert(full.end(), s.tokens.begin(), s.tokens.end());
      hits += task->Correct(e, full) ? 1 : 0;
    }
    const double q = static_cast<double>(hits) / static_cast<double>(std::max<int64_t>(1, n_mc));
    if (pre.step == 0) {
      root_q += q;
      roots += 1;
    }
    add(pre.rollout, static_cast<int64_t>(pre.step), static_cast<int64_t>(pre.steps), pre.answer, q, n_mc, false);
    if (pre.step + 1 == pre.steps) {  // the complete answer: its outcome is exact
      const bool ok = task->Correct(e, seeds[pre.rollout].tokens);
      correct += ok ? 1 : 0;
      add(pre.rollout, static_cast<int64_t>(pre.steps), static_cast<int64_t>(pre.steps), WithoutEos(seeds[pre.rollout].tokens),
          ok ? 1.0 : 0.0, 1, true);
    }
  }
  ctx.ReportMetric("policy_accuracy", 0, correct / static_cast<double>(std::max<size_t>(1, seeds.size())));
  // The completions from the empty prefix are plain samples of the model
  // that completes (the policy's, or the prover's accuracy).
  ctx.ReportMetric("completer_accuracy", 0, root_q / std::max(1.0, roots));
  ctx.ReportMetric("prefixes", 0, static_cast<double>(prefixes.size()));
  ctx.ReportMetric("rollouts_per_second", 0, seconds > 0 ? static_cast<double>(seeds.size() + mc.size()) / seconds : 0);
  ctx.ReportMetric("tokens_per_second", 0, seconds > 0 ? static_cast<double>(generated_tokens) / seconds : 0);
  storage::Table table;
  table.columns = {{"prompt_index", prompt_col}, {"rollout", rollout_col}, {"step", step_col}, {"steps", steps_col},
                   {"final", final_col},         {"completions", n_col},   {"prompt", prompt_text},
                   {"prefix", prefix_text},      {"q", q_col}};
  SHAMMIE_RETURN_IF_ERROR(ctx.WriteTable("values", table));
  if (!ctx.artifact_dir().empty()) {
    SHAMMIE_ASSIGN_OR_RETURN(std::string path, storage::WriteContentAddressed(ctx.artifact_dir(), data.dump() + "\n", "json"));
    SHAMMIE_RETURN_IF_ERROR(ctx.RecordArtifact("values", path));
  }
  return common::Status::Ok();
}

common::Status RunPavVerifier(JobContext& ctx) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, lm::UpstreamModel(ctx, true, "pav.verifier"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel model, lm::LoadModelFile(up->path));
  std::vector<ValueRow> rows;
  // Whose Q the values are: the policy's, or (rollouts completed by a trained
  // prover) the prover's. One verifier learns one of them.
  std::string q_of, q_of_whose, q_of_job;
  for (const auto& a : ctx.inputs()) {
    if (a.name != "values") continue;
    SHAMMIE_ASSIGN_OR_RETURN(std::string text, storage::ReadVerified(a.path));
    nlohmann::json data = nlohmann::json::parse(text, nullptr, false);
    if (data.is_discarded() || !data.is_array()) return common::DataLoss(a.path + ": not a JSON array of values");
    for (const auto& d : data) {
      const std::string of = d.value("q_of", std::string("policy"));
      const std::string whose = of == "prover" ? "prover (job " + d.value("prover_job", std::string("?")) + ")" : of;
      if (q_of.empty()) {
        q_of = of;
        q_of_whose = whose;
        q_of_job = a.job_id;
      } else if (whose != q_of_whose) {
        return common::InvalidArgument("pav.verifier: the values of job " + q_of_job + " are Q of the " + q_of_whose +
                                       ", those of job " + a.job_id + " Q of the " + whose +
                                       "; one verifier learns one of them (depend on the rollouts of one; several "
                                       "provers: sweep.over)");
      }
      rows.push_back({d.at("prompt").get<std::string>(), d.at("prefix").get<std::string>(), d.at("q").get<double>(),
                      d.value("final", false)});
    }
  }
  if (rows.empty()) {
    return common::InvalidArgument("pav.verifier needs upstream pav.rollouts jobs (their \"values\"); job " + ctx.job_id() + " has none");
  }
  // The completions from empty prefixes are plain samples of the model that
  // completed the rollouts: their mean Q-hat is its accuracy (the prover's,
  // for a prover_verifier), which search and RL report to tell provers apart.
  // Taken before any relabelling.
  double root_q = 0, roots = 0;
  for (const ValueRow& r : rows) {
    if (r.final || !r.prefix.empty()) continue;
    root_q += r.q;
    roots += 1;
  }
  // labels = "exact": replace each step prefix's Monte-Carlo Q-hat by whether
  // every step written so far is right (the task knows the right chain), so
  // the labels are noise-free; complete answers keep their exact outcome.
  // An upper bound that tells a verifier that cannot learn to check a step
  // from one that drowns in the noise of n_mc completions.
  if (c["labels"].get<std::string>() == "exact") {
    if (q_of == "prover") {
      return common::InvalidArgument("pav.verifier: labels = \"exact\" says whether a prefix is right so far, the same "
                                     "whatever completes it; a prover_verifier learns Q^mu from the prover's rollouts "
                                     "(labels = \"rollouts\")");
    }
    SHAMMIE_ASSIGN_OR_RETURN(TaskSpec spec, TaskSpecFromConfig(model.checkpoint.job_config));
    SHAMMIE_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTask> task, SyntheticTask::Make(spec));
    for (auto& r : rows) {
      if (r.final) continue;
      SHAMMIE_ASSIGN_OR_RETURN(std::string right, task->AnswerFor(r.prompt));
      r.q = right.starts_with(r.prefix) ? 1.0 : 0.0;
    }
  }
  // Hold out a tenth of the prompts (by hash) for validation.
  std::vector<std::vector<int>> train_x, val_x;
  std::vector<double> train_q, val_q;
  std::vector<bool> val_final;
  for (const auto& r : rows) {
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<int> p, Tokenizer::Encode(r.prompt));
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<int> a, Tokenizer::Encode(r.prefix));
    const bool val = common::DeriveSeed(0, r.prompt, 0) % 10 == 0;
    (val ? val_x : train_x).push_back(WithBos(p, a));
    (val ? val_q : train_q).push_back(r.q);
    if (val) val_final.push_back(r.final);
  }
  if (train_x.empty()) return common::InvalidArgument("pav.verifier: every prompt fell into validation; run more rollouts");
  // The training targets: sequences with a Q label at one or more positions.
  // targets = "prefix": every row is its own sequence, labelled at its end.
  // targets = "steps": the rows of one rollout (its step prefixes in order,
  // then the complete answer) become one sequence with a label at the end of
  // every prefix; a causal model scores a prefix the same inside the longer
  // sequence, so these are the same targets read in one pass.
  struct Labelled {
    std::vector<int> seq;
    std::vector<int64_t> at;
    std::vector<float> q;
  };
  std::vector<Labelled> examples;
  const bool by_steps = c["targets"].get<std::string>() == "steps";
  for (size_t i = 0; i < train_x.size(); ++i) {
    const std::vector<int>& x = train_x[i];
    const bool extends = by_steps && !examples.empty() && x.size() >= examples.back().seq.size() &&
                         std::equal(examples.back().seq.begin(), examples.back().seq.end(), x.begin());
    if (!extends) examples.push_back({});
    examples.back().seq = x;
    examples.back().at.push_back(static_cast<int64_t>(x.size()) - 1);
    examples.back().q.push_back(static_cast<float>(train_q[i]));
  }
  if (const int64_t extra = c["extra_layers"].get<int64_t>(); extra > 0) {
    // Grow the policy: new blocks above its own, their output projections
    // (wo, w2) zero so each starts as the identity on the residual stream
    // and the grown model computes exactly what the policy did.
    const ModelConfig& from = model.model->config;
    if (from.loops != 1 || from.lora_rank > 0 || from.block_length > 0) {
      return common::InvalidArgument("pav.verifier: extra_layers grows a vanilla transformer; the upstream policy is recursive or a Block Transformer");
    }
    ModelConfig grown = from;
    grown.layers += extra;
    Transformer g(grown, model.model->vocab, common::DeriveSeed(ctx.seed(), "extra_layers", 0));
    torch::NoGradGuard no_grad;
    const auto source = model.model->named_parameters();
    for (auto& p : g->named_parameters()) {
      if (const Tensor* s = source.find(p.key())) {
        p.value().copy_(*s);
      } else if (p.key().ends_with(".wo.weight") || p.key().ends_with(".w2.weight")) {
        p.value().zero_();
      }
    }
    model.model = g;
  }
  Transformer& v = model.model;
  const bool likelihood = c["score"].get<std::string>() == "likelihood";
  v->train();
  const int64_t steps = c["steps"].get<int64_t>(), batch = c["batch"].get<int64_t>();
  const double lr = c["learning_rate"].get<double>();
  torch::optim::AdamW optimizer(v->parameters(), torch::optim::AdamWOptions(lr).weight_decay(0.01).betas({0.9, 0.95}));
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "batches", 0));
  auto loss_of = [&](const std::vector<std::vector<int>>& xs, const std::vector<double>& qs) {
    torch::NoGradGuard guard;
    double loss = 0, mae = 0;
    const std::vector<double> pred = VerifierValues(v, likelihood, xs, 512);
    for (size_t i = 0; i < xs.size(); ++i) {
      const double p = std::clamp(pred[i], 1e-7, 1 - 1e-7);
      loss -= qs[i] * std::log(p) + (1 - qs[i]) * std::log(1 - p);
      mae += std::abs(pred[i] - qs[i]);
    }
    const double n = static_cast<double>(std::max<size_t>(1, xs.size()));
    return std::make_pair(loss / n, mae / n);
  };
  const int64_t eval_every = c["eval_every"].get<int64_t>();
  // The parameters at the best validation loss are the ones kept (the
  // verifier overfits a small pool of prompts).
  std::string best_bytes;
  double best_val = std::numeric_limits<double>::infinity();
  int64_t best_step = 0;
  for (int64_t step = 0; step < steps; ++step) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped while training the verifier");
    const double warm = std::min(1.0, static_cast<double>(step + 1) / 20.0);
    const double cosine = 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(steps)));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr * warm * cosine);
    std::vector<const Labelled*> picked;
    std::vector<std::vector<int>> xs;
    size_t most = 1;
    for (int64_t i = 0; i < batch; ++i) {
      picked.push_back(&examples[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(examples.size()) - 1))]);
      xs.push_back(picked.back()->seq);
      most = std::max(most, picked.back()->at.size());
    }
    const auto m = static_cast<int64_t>(most);
    Tensor at = torch::zeros({batch, m}, torch::kLong), target = torch::zeros({batch, m}), weight = torch::zeros({batch, m});
    auto at_a = at.accessor<int64_t, 2>();
    auto target_a = target.accessor<float, 2>();
    auto weight_a = weight.accessor<float, 2>();
    for (int64_t i = 0; i < batch; ++i) {
      const Labelled& r = *picked[static_cast<size_t>(i)];
      for (size_t j = 0; j < r.at.size(); ++j) {
        at_a[i][static_cast<int64_t>(j)] = r.at[j];
        target_a[i][static_cast<int64_t>(j)] = r.q[j];
        weight_a[i][static_cast<int64_t>(j)] = 1;
      }
    }
    const Padded p = RightPadded(xs, 0, xs.size());
    Tensor scores = VerifierScores(v, p.input, likelihood).gather(1, at);
    Tensor loss = torch::binary_cross_entropy_with_logits(scores, target, weight, {}, at::Reduction::Sum) / weight.sum();
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(v->parameters(), 1.0);
    optimizer.step();
    if ((step + 1) % 10 == 0) ctx.ReportMetric("loss", step + 1, loss.item<double>());
    if ((step + 1) % eval_every == 0 || step + 1 == steps) {
      v->eval();
      const auto [val_loss, val_mae] = loss_of(val_x, val_q);
      v->train();
      ctx.ReportMetric("val_loss", step + 1, val_loss);
      ctx.ReportMetric("val_mae", step + 1, val_mae);
      if (val_x.empty() || val_loss < best_val) {
        best_val = val_loss;
        best_step = step + 1;
        best_bytes = lm::SaveModule(*v);
      }
    }
  }
  v->eval();
  if (!best_bytes.empty()) SHAMMIE_RETURN_IF_ERROR(lm::LoadModule(*v, best_bytes, "the best verifier"));
  ctx.ReportMetric("best_step", 0, static_cast<double>(best_step));
  {  // How well the kept verifier ranks held-out complete answers (exact labels): its use as an ORM.
    const std::vector<double> pred = VerifierValues(v, likelihood, val_x, 512);
    std::vector<double> score;
    std::vector<bool> right;
    for (size_t i = 0; i < val_x.size(); ++i) {
      if (!val_final[i]) continue;
      score.push_back(pred[i]);
      right.push_back(val_q[i] > 0.5);
    }
    const double auc = Auc(score, right);
    if (!std::isnan(auc)) ctx.ReportMetric("val_final_auc", 0, auc);
  }
  ctx.ReportMetric("train_rows", 0, static_cast<double>(train_x.size()));
  ctx.ReportMetric("train_label_mean", 0,
                   std::accumulate(train_q.begin(), train_q.end(), 0.0) / static_cast<double>(train_q.size()));
  if (by_steps) ctx.ReportMetric("train_rollouts", 0, static_cast<double>(examples.size()));
  ctx.ReportMetric("val_rows", 0, static_cast<double>(val_x.size()));
  if (roots > 0) ctx.ReportMetric("completer_accuracy", 0, root_q / roots);
  if (!ctx.artifact_dir().empty()) {
    lm::Checkpoint ck;
    ck.model = v->config;
    ck.vocab = v->vocab;
    ck.job_config = model.checkpoint.job_config;  // the policy's: says which task
    ck.job_config["verifier_score"] = c["score"].get<std::string>();  // how search and RL read it
    ck.job_config["verifier_of"] = q_of;                                // "policy" or "prover"
    if (roots > 0) ck.job_config["completer_accuracy"] = root_q / roots;
    ck.model_bytes = lm::SaveModule(*v);
    ck.state.finished = true;
    ck.state.step = best_step > 0 ? best_step : steps;  // the kept parameters' step
    SHAMMIE_ASSIGN_OR_RETURN(std::string path,
                             storage::WriteContentAddressed(ctx.artifact_dir(), lm::SerializeCheckpoint(ck), "ckpt"));
    SHAMMIE_RETURN_IF_ERROR(ctx.RecordArtifact(q_of == "prover" ? "prover_verifier" : "verifier", path));
  }
  return common::Status::Ok();
}

common::Status RunPavSearch(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(PolicyWork work, OpenPolicy(ctx, "pav.search"));
  lm::LoadedModel& policy = work.policy;
  const std::unique_ptr<SyntheticTask>& task = work.task;
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* vf, OneInput(ctx, "verifier", "pav.search", "a pav.verifier stage in depends_on"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel verifier, lm::LoadModelFile(vf->path));
  SHAMMIE_ASSIGN_OR_RETURN(const bool likelihood, ScoresLikelihood(verifier, vf->path));
  const std::vector<Example> set = lm::EvalSet(*task, Split::kTest, c["prompts"].get<int64_t>());
  const size_t n_prompts = std::min(set.size(), static_cast<size_t>(c["prompts"].get<int64_t>()));
  const size_t batch = static_cast<size_t>(c["batch"].get<int64_t>());
  const std::string method = c["method"].get<std::string>();
  SHAMMIE_ASSIGN_OR_RETURN(ProverScorer prover, OpenProverScorer(ctx, "pav.search"));  // beam's; checked for both
  if (prover.accuracy) ctx.ReportMetric("prover_accuracy", 0, *prover.accuracy);
  lm::SampleOptions o;
  o.temperature = c["temperature"].get<double>();
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>();
  o.stop_tokens = {Tokenizer::kEos};
  common::Status status;
  std::vector<std::string> generated(n_prompts);
  std::vector<int64_t> correct(n_prompts), tokens(n_prompts);
  std::vector<double> chosen_q(n_prompts);
  const auto start = std::chrono::steady_clock::now();
  if (method == "best-of-n") {
    const auto n = static_cast<size_t>(c["n"].get<int64_t>());
    std::vector<std::vector<int>> rows;
    for (size_t p = 0; p < n_prompts; ++p) {
      for (size_t k = 0; k < n; ++k) rows.push_back(WithBos(set[p].prompt));
    }
    const std::vector<lm::Sampled> out = SampleChunked(policy.model, rows, o, batch, common::DeriveSeed(ctx.seed(), "best-of-n", 0), ctx, status);
    SHAMMIE_RETURN_IF_ERROR(status);
    std::vector<std::vector<int>> scored;
    for (size_t r = 0; r < out.size(); ++r) scored.push_back(WithBos(set[r / n].prompt, WithoutEos(out[r].tokens)));
    const std::vector<double> q = VerifierValues(verifier.model, likelihood, scored, batch);
    std::vector<bool> right(out.size());
    for (size_t r = 0; r < out.size(); ++r) right[r] = task->Correct(set[r / n], out[r].tokens);
    // The verifier as an outcome reward model over the first N samples, N = 1, 2, 4, ..., n.
    for (const int64_t doubling : Doublings(static_cast<int64_t>(n))) {
      const auto big_n = static_cast<size_t>(doubling);
      double acc = 0, any = 0, spent = 0;
      for (size_t p = 0; p < n_prompts; ++p) {
        size_t best = p * n;
        bool hit = false;
        for (size_t k = 0; k < big_n; ++k) {
          const size_t r = p * n + k;
          if (q[r] > q[best]) best = r;
          hit = hit || right[r];
          spent += static_cast<double>(out[r].tokens.size());
        }
        const bool ok = right[best];
        acc += ok ? 1 : 0;
        any += hit ? 1 : 0;
        if (big_n == n) {
          generated[p] = Tokenizer::Decode(out[best].tokens);
          correct[p] = ok ? 1 : 0;
          chosen_q[p] = q[best];
          tokens[p] = 0;
          for (size_t k = 0; k < n; ++k) tokens[p] += static_cast<int64_t>(out[p * n + k].tokens.size());
        }
      }
      const double np = static_cast<double>(std::max<size_t>(1, n_prompts));
      ctx.ReportMetric("accuracy_at_n", static_cast<int64_t>(big_n), acc / np);
      ctx.ReportMetric("tokens_at_n", static_cast<int64_t>(big_n), spent / np);
      ctx.ReportMetric("pass_at_n", static_cast<int64_t>(big_n), any / np);
      ctx.ReportMetric("accuracy_by_tokens", static_cast<int64_t>(std::lround(spent / np)), acc / np);
    }
  } else {  // beam search scored by Q^pi + alpha * A^mu (mu: Best-of-K of pi, or a trained prover)
    const auto width = static_cast<size_t>(c["beam"].get<int64_t>());
    const auto candidates = static_cast<size_t>(c["candidates"].get<int64_t>());
    const double alpha = c["alpha"].get<double>();
    const int64_t max_steps = c["max_steps"].get<int64_t>();
    lm::SampleOptions step_options = o;
    step_options.stop_tokens = {Tokenizer::kEos, EqualsToken()};
    struct Beam {
      std::vector<int> answer;  // generated so far (EOS included when done)
      double q = 0, mu = 0, score = 0;  // Q^pi, Q^mu
      bool done = false;
    };
    std::vector<std::vector<Beam>> beams(n_prompts);
    {
      std::vector<std::vector<int>> roots;
      for (size_t p = 0; p < n_prompts; ++p) roots.push_back(WithBos(set[p].prompt));
      const std::vector<double> q = VerifierValues(verifier.model, likelihood, roots, batch);
      const std::vector<double> mu = alpha > 0 ? prover.Of(q, roots, batch) : std::vector<double>(q.size(), 0.0);
      for (size_t p = 0; p < n_prompts; ++p) beams[p] = {Beam{{}, q[p], mu[p], q[p], false}};
    }
    for (int64_t step = 0; step < max_steps; ++step) {
      // Expand every open beam: C samples each (width x C from the root).
      std::vector<std::vector<int>> rows;
      std::vector<std::pair<size_t, size_t>> parent;  // (prompt, beam)
      for (size_t p = 0; p < n_prompts; ++p) {
        for (size_t b = 0; b < beams[p].size(); ++b) {
          if (beams[p][b].done) continue;
          const size_t draws = step == 0 ? width * candidates : candidates;
          for (size_t d = 0; d < draws; ++d) {
            rows.push_back(WithBos(set[p].prompt, beams[p][b].answer));
            parent.push_back({p, b});
          }
        }
      }
      if (rows.empty()) break;
      const std::vector<lm::Sampled> out =
          SampleChunked(policy.model, rows, step_options, batch, common::DeriveSeed(ctx.seed(), "beam", static_cast<uint64_t>(step)), ctx, status);
      SHAMMIE_RETURN_IF_ERROR(status);
      std::vector<Beam> fresh(out.size());
      std::vector<std::vector<int>> scored;
      for (size_t r = 0; r < out.size(); ++r) {
        const auto [p, b] = parent[r];
        tokens[p] += static_cast<int64_t>(out[r].tokens.size());
        fresh[r].answer = beams[p][b].answer;
        fresh[r].answer.insert(fresh[r].answer.end(), out[r].tokens.begin(), out[r].tokens.end());
        // Done: an EOS, or no room left (max_new_tokens, or the model's max_len).
        fresh[r].done = out[r].tokens.empty() || !out[r].stopped || out[r].tokens.back() == Tokenizer::kEos ||
                        static_cast<int64_t>(fresh[r].answer.size()) >= o.max_new_tokens;
        scored.push_back(WithBos(set[p].prompt, WithoutEos(fresh[r].answer)));
      }
      const std::vector<double> q = VerifierValues(verifier.model, likelihood, scored, batch);
      const std::vector<double> mu = alpha > 0 ? prover.Of(q, scored, batch) : std::vector<double>(q.size(), 0.0);
      std::vector<std::vector<Beam>> next(n_prompts);
      for (size_t p = 0; p < n_prompts; ++p) {
        for (const Beam& b : beams[p]) {
          if (b.done) next[p].push_back(b);
        }
      }
      for (size_t r = 0; r < out.size(); ++r) {
        const auto [p, b] = parent[r];
        fresh[r].q = q[r];
        fresh[r].mu = mu[r];
        fresh[r].score = pav::EffectiveReward(q[r], mu[r] - beams[p][b].mu, alpha);
        next[p].push_back(std::move(fresh[r]));
      }
      for (size_t p = 0; p < n_prompts; ++p) {
        std::stable_sort(next[p].begin(), next[p].end(), [](const Beam& x, const Beam& y) { return x.score > y.score; });
        if (next[p].size() > width) next[p].resize(width);
      }
      beams = std::move(next);
    }
    for (size_t p = 0; p < n_prompts; ++p) {
      // The answer: the finished beam the verifier rates highest (as an ORM).
      const Beam* best = nullptr;
      for (const Beam& b : beams[p]) {
        if (!best || (b.done && !best->done) || (b.done == best->done && b.q > best->q)) best = &b;
      }
      generated[p] = Tokenizer::Decode(best->answer);
      correct[p] = task->Correct(set[p], best->answer) ? 1 : 0;
      chosen_q[p] = best->q;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double acc = 0, spent = 0;
  for (size_t p = 0; p < n_prompts; ++p) {
    acc += static_cast<double>(correct[p]);
    spent += static_cast<double>(tokens[p]);
  }
  const double np = static_cast<double>(std::max<size_t>(1, n_prompts));
  ctx.ReportMetric("accuracy", 0, acc / np);
  ctx.ReportMetric("tokens", 0, spent / np);
  ctx.ReportMetric("seconds", 0, seconds);
  if (method != "best-of-n") ctx.ReportMetric("accuracy_by_tokens", std::lround(spent / np), acc / np);
  storage::Table table;
  std::vector<int64_t> index(n_prompts);
  std::vector<std::string> prompt(n_prompts), answer(n_prompts);
  for (size_t p = 0; p < n_prompts; ++p) {
    index[p] = static_cast<int64_t>(p);
    prompt[p] = set[p].prompt_text;
    answer[p] = set[p].answer_text;
  }
  table.columns = {{"example", index},   {"prompt", prompt},       {"answer", answer}, {"generated", generated},
                   {"correct", correct}, {"verifier_q", chosen_q}, {"tokens", tokens}};
  return ctx.WriteTable("search", table);
}

common::Status RunPavRl(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(PolicyWork work, OpenPolicy(ctx, "pav.rl"));
  lm::LoadedModel& policy = work.policy;
  const std::unique_ptr<SyntheticTask>& task = work.task;
  const double alpha = c["alpha"].get<double>();
  SHAMMIE_ASSIGN_OR_RETURN(ProverScorer prover, OpenProverScorer(ctx, "pav.rl"));
  if (prover.accuracy) ctx.ReportMetric("prover_accuracy", 0, *prover.accuracy);
  const bool dense = alpha > 0;
  // The policy's verifier: Q^pi for a Best-of-K prover (a trained prover's
  // Q^mu comes from its own verifier; the outcome term needs neither).
  std::optional<lm::LoadedModel> verifier;
  bool likelihood = false;
  if (dense && !prover.verifier) {
    SHAMMIE_ASSIGN_OR_RETURN(const Artifact* vf, OneInput(ctx, "verifier", "pav.rl", "a pav.verifier stage in depends_on (alpha > 0 with a Best-of-K prover)"));
    SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel loaded, lm::LoadModelFile(vf->path));
    SHAMMIE_ASSIGN_OR_RETURN(likelihood, ScoresLikelihood(loaded, vf->path));
    verifier = std::move(loaded);
  }
  const int64_t iterations = c["iterations"].get<int64_t>(), prompts_per_step = c["batch"].get<int64_t>(),
                samples = c["samples"].get<int64_t>(), eval_every = c["eval_every"].get<int64_t>();
  const size_t gen_batch = 1024;
  lm::SampleOptions o;
  o.temperature = 1.0;
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>();
  o.stop_tokens = {Tokenizer::kEos};
  const std::vector<Example> eval_set = lm::EvalSet(*task, Split::kTest, c["eval_prompts"].get<int64_t>());
  Transformer& model = policy.model;
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(c["learning_rate"].get<double>())
                                                         .weight_decay(0.0).betas({0.9, 0.95}));
  common::Status status;
  // Accuracy of one sample at temperature 1 per test prompt (the RL objective), with a fixed seed.
  auto evaluate = [&](int64_t drawn) -> common::Status {
    model->eval();
    std::vector<std::vector<int>> rows;
    for (const auto& e : eval_set) rows.push_back(WithBos(e.prompt));
    const auto out = SampleChunked(model, rows, o, gen_batch, common::DeriveSeed(ctx.seed(), "eval", 0), ctx, status);
    SHAMMIE_RETURN_IF_ERROR(status);
    double hits = 0;
    for (size_t i = 0; i < out.size(); ++i) hits += task->Correct(eval_set[i], out[i].tokens) ? 1 : 0;
    ctx.ReportMetric("accuracy", drawn, hits / static_cast<double>(std::max<size_t>(1, out.size())));
    model->train();
    return common::Status::Ok();
  };
  SHAMMIE_RETURN_IF_ERROR(evaluate(0));
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "prompts", 0));
  for (int64_t it = 1; it <= iterations; ++it) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped during RL");
    std::vector<Example> batch;
    std::vector<std::vector<int>> rows;
    for (int64_t p = 0; p < prompts_per_step; ++p) {
      batch.push_back(task->Sample(Split::kTrain, rng));
      for (int64_t s = 0; s < samples; ++s) rows.push_back(WithBos(batch.back().prompt));
    }
    model->eval();
    const auto out = SampleChunked(model, rows, o, gen_batch, common::DeriveSeed(ctx.seed(), "rl", static_cast<uint64_t>(it)), ctx, status);
    SHAMMIE_RETURN_IF_ERROR(status);
    model->train();
    // Outcome term: the sample's outcome minus the mean of its prompt's other samples.
    std::vector<double> reward(out.size());
    for (size_t r = 0; r < out.size(); ++r) reward[r] = task->Correct(batch[r / static_cast<size_t>(samples)], out[r].tokens) ? 1 : 0;
    const std::vector<double> outcome = lm::LeaveOneOut(reward, samples);
    // Dense term: alpha (Q^mu after the step - Q^mu before it); Q^mu = 1 - (1 - Q^pi)^K with Q^pi from the
    // verifier, or a trained prover's from its verifier.
    std::vector<std::vector<double>> token_weight(out.size());
    std::vector<std::vector<size_t>> ends(out.size());
    std::vector<std::vector<int>> scored;
    for (size_t r = 0; r < out.size(); ++r) {
      ends[r] = StepPrefixes(out[r].tokens);
      const size_t full = WithoutEos(out[r].tokens).size();
      if (ends[r].back() != full) ends[r].push_back(full);  // the last step: the final value
      if (dense) {
        for (size_t e : ends[r]) {
          scored.push_back(WithBos(batch[r / static_cast<size_t>(samples)].prompt,
                                   std::vector<int>(out[r].tokens.begin(), out[r].tokens.begin() + static_cast<std::ptrdiff_t>(e))));
        }
      }
    }
    std::vector<double> q, mu;
    if (dense) {
      if (verifier) q = VerifierValues(verifier->model, likelihood, scored, gen_batch);
      mu = prover.Of(q, scored, gen_batch);
    }
    size_t qi = 0;
    double abs_advantage = 0, steps_scored = 0;
    for (size_t r = 0; r < out.size(); ++r) {
      token_weight[r].assign(out[r].tokens.size(), outcome[r]);
      if (!dense) continue;
      const double* mur = mu.data() + qi;  // Q^mu at this sample's step ends
      qi += ends[r].size();
      for (size_t h = 0; h + 1 < ends[r].size(); ++h) {
        const double advantage = mur[h + 1] - mur[h];
        abs_advantage += std::abs(advantage);
        steps_scored += 1;
        for (size_t t = ends[r][h]; t < ends[r][h + 1] && t < token_weight[r].size(); ++t) {
          token_weight[r][t] = pav::EffectiveReward(outcome[r], advantage, alpha);
        }
      }
    }
    // REINFORCE: - sum over answer tokens of weight x log pi(token | context), per sample.
    const auto n = static_cast<int64_t>(out.size());
    Tensor loss = -lm::ResponseLogProb(model, rows, out, &token_weight).sum() / static_cast<double>(n);
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    double mean_reward = 0;
    for (double v : reward) mean_reward += v;
    ctx.ReportMetric("train_accuracy", it, mean_reward / static_cast<double>(std::max<int64_t>(1, n)));
    if (dense) ctx.ReportMetric("prover_advantage_abs", it, abs_advantage / std::max(1.0, steps_scored));
    if (it % eval_every == 0 || it == iterations) SHAMMIE_RETURN_IF_ERROR(evaluate(it * n));
  }
  // Pass@N of the final policy: N samples per test prompt.
  model->eval();
  const int64_t big_n = c["pass_samples"].get<int64_t>();
  std::vector<std::vector<int>> rows;
  for (const auto& e : eval_set) {
    for (int64_t s = 0; s < big_n; ++s) rows.push_back(WithBos(e.prompt));
  }
  const auto out = SampleChunked(model, rows, o, gen_batch, common::DeriveSeed(ctx.seed(), "pass", 0), ctx, status);
  SHAMMIE_RETURN_IF_ERROR(status);
  std::vector<int64_t> hits(eval_set.size(), 0);  // right samples per test prompt
  for (size_t r = 0; r < out.size(); ++r) {
    const size_t p = r / static_cast<size_t>(big_n);
    hits[p] += task->Correct(eval_set[p], out[r].tokens) ? 1 : 0;
  }
  for (int64_t m : Doublings(big_n)) {
    double sum = 0;
    for (int64_t h : hits) sum += pav::PassAtN(big_n, h, m);
    ctx.ReportMetric("pass_at_n", m, sum / static_cast<double>(std::max<size_t>(1, eval_set.size())));
  }
  return common::Status::Ok();
}

}  // namespace shammie::workers
