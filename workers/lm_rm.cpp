// Reward-model ensembles and reward hacking (PAPERS.md §7, Eisenstein et al.
// 2024) on LibTorch: the rm.* job kinds. The task is the task library's
// "distinct" family ("abca>" -> "abc"), whose gold reward is the letter F1 of
// workers/preference.hpp; annotators prefer by Bradley-Terry on the gold
// reward plus a length bias (the spurious feature).
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <numbers>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/hash.hpp"
#include "common/random.hpp"
#include "storage/checkpoint_store.hpp"
#include "workers/lm.hpp"
#include "workers/lm_torch.hpp"
#include "workers/preference.hpp"

namespace shammie::workers {

namespace {

using lm::Tensor;
using lm::Transformer;

constexpr size_t kBatch = 1024;  // rows per generation / scoring call

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

common::Result<std::unique_ptr<SyntheticTask>> DistinctTask(const lm::LoadedModel& model, const std::string& kind) {
  SHAMMIE_ASSIGN_OR_RETURN(TaskSpec spec, TaskSpecFromConfig(model.checkpoint.job_config));
  if (spec.family != "distinct") {
    return common::InvalidArgument(kind + " works on the \"distinct\" task (its gold reward is the letter F1); the "
                                   "upstream model was trained on \"" + spec.family + "\"");
  }
  return SyntheticTask::Make(spec);
}

// The policy an rm kind samples from: the one upstream "model" (an lm.train
// job on task = "distinct").
struct Policy {
  lm::LoadedModel model;
  std::unique_ptr<SyntheticTask> task;
};
common::Result<Policy> OpenPolicy(const JobContext& ctx, const std::string& kind) {
  torch::set_num_threads(static_cast<int>(ctx.config()["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, lm::UpstreamModel(ctx, true, kind));
  Policy p;
  SHAMMIE_ASSIGN_OR_RETURN(p.model, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(p.task, DistinctTask(p.model, kind));
  return p;
}

// What a reward model reads: BOS, the prompt, the response and its EOS,
// within the model's max_len (a response cut off at max_len loses its last
// tokens to make room for the EOS).
std::vector<int> RmInput(const std::vector<int>& prompt, const std::vector<int>& response, int64_t max_len) {
  std::vector<int> answer = lm::WithoutEos(response);
  while (!answer.empty() && static_cast<int64_t>(prompt.size() + answer.size()) + 2 > max_len) answer.pop_back();
  answer.push_back(Tokenizer::kEos);
  return lm::WithBos(prompt, answer);
}

// Raw scores of `seqs`, in batches, without gradients.
std::vector<double> Scores(Transformer& rm, const std::vector<std::vector<int>>& seqs) {
  torch::NoGradGuard guard;
  rm->eval();
  std::vector<double> out;
  out.reserve(seqs.size());
  for (size_t i = 0; i < seqs.size(); i += kBatch) {
    const lm::Padded p = lm::RightPadded(seqs, i, std::min(seqs.size(), i + kBatch));
    Tensor s = rm->Score(rm->forward(p.input), p.last).to(torch::kFloat64).contiguous();
    out.insert(out.end(), s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  }
  return out;
}

std::string Text(const std::vector<int>& generated) { return SyntheticTask::GeneratedText(generated); }

// --- the ensemble a job reads ---

struct Member {
  std::string job, backbone;
  lm::LoadedModel model;
};

// The upstream "reward_model"s an rm.bon / rm.rl job uses, by `ensemble`:
// - single: the first reward model (by job id) of backbone `pick`;
// - finetune: every reward model of backbone `pick` (same pretraining);
// - pretrain: the `pick`-th reward model of every backbone.
// Backbones are ordered by job id.
// Every upstream "reward_model", grouped by backbone (both ordered by job id).
common::Result<std::map<std::string, std::vector<Member>>> OpenRewardModels(const JobContext& ctx, const std::string& kind) {
  std::map<std::string, std::vector<Member>> by_backbone;
  for (const auto& a : ctx.inputs()) {
    if (a.name != "reward_model") continue;
    SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel m, lm::LoadModelFile(a.path));
    const std::string backbone = m.checkpoint.job_config.value("rm_backbone", std::string());
    by_backbone[backbone].push_back({a.job_id, backbone, std::move(m)});
  }
  if (by_backbone.empty()) {
    return common::InvalidArgument(kind + " needs upstream rm.train jobs (role = \"member\"); job " + ctx.job_id() + " has none");
  }
  for (auto& [b, ms] : by_backbone) {
    std::sort(ms.begin(), ms.end(), [](const Member& x, const Member& y) { return x.job < y.job; });
  }
  return by_backbone;
}

// The ensemble `ensemble` and `pick` name, as indices into reward models
// grouped by backbone (`groups`, flattened in order; `backbones` their names).
common::Result<std::vector<size_t>> PickEnsemble(const std::string& ensemble, size_t pick,
                                                 const std::vector<std::vector<size_t>>& groups,
                                                 const std::vector<std::string>& backbones) {
  std::vector<size_t> out;
  if (ensemble == "pretrain") {
    for (size_t b = 0; b < groups.size(); ++b) {
      if (pick >= groups[b].size()) {
        return common::InvalidArgument("pick " + std::to_string(pick) + ": backbone " + backbones[b] + " has " +
                                       std::to_string(groups[b].size()) + " reward models");
      }
      out.push_back(groups[b][pick]);
    }
    return out;
  }
  if (pick >= groups.size()) {
    return common::InvalidArgument("pick " + std::to_string(pick) + ": the upstream reward models have " +
                                   std::to_string(groups.size()) + " backbones");
  }
  if (ensemble == "single") return std::vector<size_t>{groups[pick].front()};
  return groups[pick];
}

// Every upstream reward model, flattened by backbone, with the groups.
struct RewardModels {
  std::vector<Member> members;
  std::vector<std::vector<size_t>> groups;
  std::vector<std::string> backbones;
};
common::Result<RewardModels> OpenAllRewardModels(const JobContext& ctx, const std::string& kind) {
  SHAMMIE_ASSIGN_OR_RETURN(auto by_backbone, OpenRewardModels(ctx, kind));
  RewardModels out;
  for (auto& [b, ms] : by_backbone) {
    out.backbones.push_back(b);
    out.groups.emplace_back();
    for (auto& m : ms) {
      out.groups.back().push_back(out.members.size());
      out.members.push_back(std::move(m));
    }
  }
  return out;
}

common::Result<std::vector<Member>> OpenEnsemble(const JobContext& ctx, const std::string& kind) {
  SHAMMIE_ASSIGN_OR_RETURN(RewardModels all, OpenAllRewardModels(ctx, kind));
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<size_t> picked,
                           PickEnsemble(ctx.config()["ensemble"].get<std::string>(),
                                        static_cast<size_t>(ctx.config()["pick"].get<int64_t>()), all.groups,
                                        all.backbones));
  std::vector<Member> out;
  for (size_t m : picked) out.push_back(std::move(all.members[m]));
  return out;
}

common::Result<lm::LoadedModel> OpenEvalModel(const JobContext& ctx, const std::string& kind) {
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* a,
                           lm::OneInput(ctx, "eval_model", kind, "an rm.train stage with role = \"eval\" in depends_on"));
  return lm::LoadModelFile(a->path);
}

// Every member's scores of `seqs`: [member][row].
common::Result<std::vector<std::vector<double>>> MemberScores(std::vector<Member>& members,
                                                               const std::vector<std::vector<int>>& seqs,
                                                               const JobContext& ctx) {
  std::vector<std::vector<double>> out;
  for (auto& m : members) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped while scoring");
    out.push_back(Scores(m.model.model, seqs));
  }
  return out;
}

double Aggregated(const std::vector<std::vector<double>>& scores, size_t row, pref::Aggregation a, double lambda) {
  std::vector<double> v(scores.size());
  for (size_t m = 0; m < scores.size(); ++m) v[m] = scores[m][row];
  return pref::Aggregate(v, a, lambda);
}

// Disagreement of the members on `rows`: the mean over rows of the members'
// std, each member's scores centered by its mean over `reference` rows (the
// SFT samples), since Bradley-Terry rewards are defined up to a shift.
double MemberSpread(const std::vector<std::vector<double>>& scores, const std::vector<size_t>& rows,
                    const std::vector<double>& centers) {
  if (scores.size() < 2 || rows.empty()) return 0;
  double total = 0;
  for (size_t r : rows) {
    double mean = 0, sq = 0;
    for (size_t m = 0; m < scores.size(); ++m) mean += (scores[m][r] - centers[m]) / static_cast<double>(scores.size());
    for (size_t m = 0; m < scores.size(); ++m) {
      const double d = scores[m][r] - centers[m] - mean;
      sq += d * d / static_cast<double>(scores.size());
    }
    total += std::sqrt(sq);
  }
  return total / static_cast<double>(rows.size());
}

std::vector<double> Centers(const std::vector<std::vector<double>>& scores) {
  std::vector<double> c;
  for (const auto& s : scores) {
    double mean = 0;
    for (double v : s) mean += v / static_cast<double>(std::max<size_t>(1, s.size()));
    c.push_back(mean);
  }
  return c;
}

common::Status Save(JobContext& ctx, Transformer& model, nlohmann::json job_config, int64_t step, const std::string& name) {
  if (ctx.artifact_dir().empty()) return common::Status::Ok();
  lm::Checkpoint ck;
  ck.model = model->config;
  ck.vocab = model->vocab;
  ck.job_config = std::move(job_config);
  ck.model_bytes = lm::SaveModule(*model);
  ck.state.finished = true;
  ck.state.step = step;
  SHAMMIE_ASSIGN_OR_RETURN(std::string path,
                           storage::WriteContentAddressed(ctx.artifact_dir(), lm::SerializeCheckpoint(ck), "ckpt"));
  return ctx.RecordArtifact(name, path);
}

struct PrefPair {
  std::string prompt, answer, y1, y2;
  bool first_wins = false;
};

}  // namespace

common::Status RunRmPrefs(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(Policy policy, OpenPolicy(ctx, "rm.prefs"));
  const int64_t prompts = c["prompts"].get<int64_t>();
  const double scale = c["quality_scale"].get<double>(), bias = c["length_bias"].get<double>();
  lm::SampleOptions o;
  o.temperature = c["temperature"].get<double>();
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>();
  o.stop_tokens = {Tokenizer::kEos};
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "rm.prefs", 0));
  std::vector<Example> examples;
  std::vector<std::vector<int>> rows;
  for (int64_t p = 0; p < prompts; ++p) {
    examples.push_back(policy.task->Sample(Split::kTrain, rng));
    rows.push_back(lm::WithBos(examples.back().prompt));
    rows.push_back(lm::WithBos(examples.back().prompt));
  }
  common::Status status;
  const auto out = lm::SampleChunked(policy.model.model, rows, o, kBatch, common::DeriveSeed(ctx.seed(), "pairs", 0), ctx, status);
  SHAMMIE_RETURN_IF_ERROR(status);
  nlohmann::json data = nlohmann::json::array();
  std::vector<std::string> prompt_col, y1_col, y2_col;
  std::vector<double> g1_col, g2_col;
  std::vector<int64_t> l1_col, l2_col, win_col;
  double agree = 0, decided = 0, longer = 0, differ = 0, gold = 0, length = 0;
  int64_t identical = 0;
  for (size_t i = 0; i < examples.size(); ++i) {
    const std::string y1 = Text(out[2 * i].tokens), y2 = Text(out[2 * i + 1].tokens);
    const double g1 = pref::LetterF1(y1, examples[i].answer_text), g2 = pref::LetterF1(y2, examples[i].answer_text);
    gold += (g1 + g2) / 2;
    length += static_cast<double>(y1.size() + y2.size()) / 2;
    if (y1 == y2) {
      ++identical;  // no preference to learn
      continue;
    }
    const auto l1 = static_cast<int64_t>(y1.size()), l2 = static_cast<int64_t>(y2.size());
    const bool first = rng.NextDouble() < Sigmoid(scale * (g1 - g2) + bias * static_cast<double>(l1 - l2));
    if (g1 != g2) {
      decided += 1;
      agree += (first == (g1 > g2)) ? 1 : 0;
    }
    if (l1 != l2) {
      differ += 1;
      longer += (first == (l1 > l2)) ? 1 : 0;
    }
    data.push_back({{"prompt", examples[i].prompt_text}, {"answer", examples[i].answer_text}, {"y1", y1}, {"y2", y2},
                    {"first_wins", first}});
    prompt_col.push_back(examples[i].prompt_text);
    y1_col.push_back(y1);
    y2_col.push_back(y2);
    g1_col.push_back(g1);
    g2_col.push_back(g2);
    l1_col.push_back(l1);
    l2_col.push_back(l2);
    win_col.push_back(first ? 1 : 0);
  }
  const double n = static_cast<double>(std::max<size_t>(1, examples.size()));
  ctx.ReportMetric("pairs", 0, static_cast<double>(data.size()));
  ctx.ReportMetric("identical_pairs", 0, static_cast<double>(identical));
  ctx.ReportMetric("sft_gold", 0, gold / n);
  ctx.ReportMetric("sft_length", 0, length / n);
  if (decided > 0) ctx.ReportMetric("labels_agree_with_gold", 0, agree / decided);
  if (differ > 0) ctx.ReportMetric("longer_wins", 0, longer / differ);
  storage::Table table;
  table.columns = {{"prompt", prompt_col}, {"response_1", y1_col}, {"response_2", y2_col}, {"gold_1", g1_col},
                   {"gold_2", g2_col},     {"length_1", l1_col},   {"length_2", l2_col},   {"first_wins", win_col}};
  SHAMMIE_RETURN_IF_ERROR(ctx.WriteTable("pairs", table));
  if (ctx.artifact_dir().empty()) return common::Status::Ok();
  SHAMMIE_ASSIGN_OR_RETURN(std::string path, storage::WriteContentAddressed(ctx.artifact_dir(), data.dump() + "\n", "json"));
  return ctx.RecordArtifact("prefs", path);
}

common::Status RunRmTrain(JobContext& ctx) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* up, lm::UpstreamModel(ctx, true, "rm.train"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel backbone, lm::LoadModelFile(up->path));
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* prefs_file, lm::OneInput(ctx, "prefs", "rm.train", "an rm.prefs stage in depends_on"));
  SHAMMIE_ASSIGN_OR_RETURN(std::string text, storage::ReadVerified(prefs_file->path));
  const nlohmann::json data = nlohmann::json::parse(text, nullptr, false);
  if (data.is_discarded() || !data.is_array()) return common::DataLoss(prefs_file->path + ": not a JSON array of pairs");
  // Winner and loser inputs; a tenth of the prompts (by hash) held out.
  struct Row {
    std::vector<int> winner, loser;
    double gold_margin = 0;  // gold(winner) - gold(loser)
    int64_t length_margin = 0;
  };
  std::vector<Row> train, val;
  const int64_t max_len = backbone.model->config.max_len;
  for (const auto& d : data) {
    PrefPair p{d.at("prompt").get<std::string>(), d.at("answer").get<std::string>(), d.at("y1").get<std::string>(),
               d.at("y2").get<std::string>(), d.at("first_wins").get<bool>()};
    if (!p.first_wins) std::swap(p.y1, p.y2);
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<int> prompt, Tokenizer::Encode(p.prompt));
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<int> w, Tokenizer::Encode(p.y1));
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<int> l, Tokenizer::Encode(p.y2));
    Row r{RmInput(prompt, w, max_len), RmInput(prompt, l, max_len),
          pref::LetterF1(p.y1, p.answer) - pref::LetterF1(p.y2, p.answer),
          static_cast<int64_t>(p.y1.size()) - static_cast<int64_t>(p.y2.size())};
    (common::Hash64(p.prompt) % 10 == 0 ? val : train).push_back(std::move(r));
  }
  if (train.empty()) return common::InvalidArgument("rm.train: the upstream prefs hold no training pairs");
  Transformer& rm = backbone.model;
  // Each fine-tune draws its own score head and batches from its seed. A
  // sweep gives fine-tune k of every backbone the same seed (the seed comes
  // from the stage and the replicate), as when every pretrained model is
  // fine-tuned with the same seeds: pretrain-ensemble members then differ
  // only in their pretraining.
  torch::manual_seed(common::DeriveSeed(ctx.seed(), "rm.train.head", 0));
  rm->score_head->reset_parameters();
  const int64_t steps = c["steps"].get<int64_t>(), batch = c["batch"].get<int64_t>(), every = c["eval_every"].get<int64_t>();
  const double lr = c["learning_rate"].get<double>(), eta = c["eta"].get<double>();
  // Every parameter, or (tune_layers) the head, the final norm and the last
  // blocks: the rest of the backbone is frozen and shared by every fine-tune.
  std::vector<Tensor> tuned = rm->parameters();
  if (c.contains("tune_layers")) {
    const int64_t n = c["tune_layers"].get<int64_t>(), layers = static_cast<int64_t>(rm->blocks.size());
    if (n > layers) {
      return common::InvalidArgument("rm.train: tune_layers = " + std::to_string(n) + " but the backbone has " +
                                     std::to_string(layers) + " blocks");
    }
    if (rm->config.lora_rank > 0 || rm->config.block_length > 0) {
      return common::InvalidArgument("rm.train: tune_layers needs a plain transformer backbone (no LoRA, no blocks)");
    }
    for (auto& p : rm->parameters()) p.set_requires_grad(false);
    tuned.clear();
    auto take = [&](torch::nn::Module& m) {
      for (auto& p : m.parameters()) {
        p.set_requires_grad(true);
        tuned.push_back(p);
      }
    };
    take(*rm->score_head);
    take(*rm->norm);
    for (int64_t i = layers - n; i < layers; ++i) take(*rm->blocks[static_cast<size_t>(i)]);
  }
  torch::optim::AdamW optimizer(tuned, torch::optim::AdamWOptions(lr).weight_decay(0.01).betas({0.9, 0.95}));
  common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "rm.train.batches", 0));
  // Loss, accuracy against the labels and against the gold order, and how
  // often the longer response scores higher, on a set of rows.
  auto evaluate = [&](const std::vector<Row>& rows, int64_t step, const std::string& prefix) {
    std::vector<std::vector<int>> seqs;
    for (const auto& r : rows) {
      seqs.push_back(r.winner);
      seqs.push_back(r.loser);
    }
    const std::vector<double> s = Scores(rm, seqs);
    double loss = 0, acc = 0, gold = 0, gold_n = 0, longer = 0, longer_n = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const double m = s[2 * i] - s[2 * i + 1];
      loss += pref::BradleyTerryLoss(s[2 * i], s[2 * i + 1]) + pref::CenteringPenalty(s[2 * i], s[2 * i + 1], eta);
      acc += m > 0 ? 1 : 0;
      if (rows[i].gold_margin != 0) {
        gold_n += 1;
        gold += (m > 0) == (rows[i].gold_margin > 0) ? 1 : 0;
      }
      if (rows[i].length_margin != 0) {
        longer_n += 1;
        longer += (m > 0) == (rows[i].length_margin > 0) ? 1 : 0;
      }
    }
    const double n = static_cast<double>(std::max<size_t>(1, rows.size()));
    ctx.ReportMetric(prefix + "loss", step, loss / n);
    ctx.ReportMetric(prefix + "accuracy", step, acc / n);
    if (gold_n > 0) ctx.ReportMetric(prefix + "gold_accuracy", step, gold / gold_n);
    if (longer_n > 0) ctx.ReportMetric(prefix + "prefers_longer", step, longer / longer_n);
    rm->train();
    return loss / n;
  };
  std::string best_bytes;
  double best_val = std::numeric_limits<double>::infinity();
  int64_t best_step = 0;
  rm->train();
  for (int64_t step = 0; step < steps; ++step) {
    if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "stopped while training the reward model");
    const double cosine = 0.55 + 0.45 * std::cos(std::numbers::pi * static_cast<double>(step) / static_cast<double>(steps));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr * cosine);
    std::vector<std::vector<int>> seqs;
    for (int64_t b = 0; b < batch; ++b) {
      const Row& r = train[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(train.size()) - 1))];
      seqs.push_back(r.winner);
      seqs.push_back(r.loser);
    }
    const lm::Padded p = lm::RightPadded(seqs, 0, seqs.size());
    Tensor s = rm->Score(rm->forward(p.input), p.last).view({batch, 2});
    Tensor w = s.select(1, 0), l = s.select(1, 1);
    Tensor loss = (-torch::log_sigmoid(w - l) + eta * (w + l).pow(2)).mean();
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(tuned, 1.0);
    optimizer.step();
    if ((step + 1) % every == 0 || step + 1 == steps) {
      ctx.ReportMetric("train_loss", step + 1, loss.item<double>());
      const double v = val.empty() ? 0 : evaluate(val, step + 1, "val_");
      if (val.empty() || v < best_val) {
        best_val = v;
        best_step = step + 1;
        best_bytes = lm::SaveModule(*rm);
      }
    }
  }
  if (!best_bytes.empty()) SHAMMIE_RETURN_IF_ERROR(lm::LoadModule(*rm, best_bytes, "the best reward model"));
  ctx.ReportMetric("best_step", 0, static_cast<double>(best_step));
  ctx.ReportMetric("train_pairs", 0, static_cast<double>(train.size()));
  ctx.ReportMetric("val_pairs", 0, static_cast<double>(val.size()));
  int64_t tuned_count = 0;
  for (const auto& p : tuned) tuned_count += p.numel();
  ctx.ReportMetric("tuned_parameters", 0, static_cast<double>(tuned_count));
  nlohmann::json job_config = backbone.checkpoint.job_config;  // the backbone's: says which task
  job_config["rm_backbone"] = up->job_id;
  const std::string role = c["role"].get<std::string>();
  return Save(ctx, rm, job_config, best_step, role == "eval" ? "eval_model" : "reward_model");
}

// Pearson correlation of two equally long series (0 when one is constant).
double Correlation(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mx += x[i] / n;
    my += y[i] / n;
  }
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0;
}

// Every ensemble of a type over reward models grouped by backbone (indices
// into the flattened groups): single = each model; finetune = each backbone's
// models; pretrain = each choice of one model per backbone, or max_ensembles
// distinct choices drawn with `seed` when there are more.
std::vector<std::vector<size_t>> EveryEnsemble(const std::string& type, const std::vector<std::vector<size_t>>& groups,
                                               int64_t max_ensembles, uint64_t seed) {
  std::vector<std::vector<size_t>> out;
  if (type == "single") {
    for (const auto& g : groups) {
      for (size_t m : g) out.push_back({m});
    }
    return out;
  }
  if (type == "finetune") return groups;
  double combinations = 1;
  for (const auto& g : groups) combinations *= static_cast<double>(g.size());
  if (combinations <= static_cast<double>(max_ensembles)) {
    std::vector<size_t> digit(groups.size(), 0);  // a mixed-radix counter
    for (;;) {
      std::vector<size_t> e;
      for (size_t b = 0; b < groups.size(); ++b) e.push_back(groups[b][digit[b]]);
      out.push_back(std::move(e));
      size_t b = 0;
      while (b < groups.size() && ++digit[b] == groups[b].size()) digit[b++] = 0;
      if (b == groups.size()) return out;
    }
  }
  common::SplitMix64 rng(seed);
  std::set<std::vector<size_t>> seen;
  while (static_cast<int64_t>(out.size()) < max_ensembles) {
    std::vector<size_t> e;
    for (const auto& g : groups) e.push_back(g[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(g.size()) - 1))]);
    if (seen.insert(e).second) out.push_back(std::move(e));
  }
  return out;
}

namespace {

// A best-of-n pool: n samples of the policy per test prompt with their gold
// reward, length, hack flag, the eval reward model's score and every scoring
// reward model's score. rm.score makes one for rm.bon jobs to share
// (artifact "bon_pool"); an rm.bon job without one makes its own.
struct Pool {
  uint64_t seed = 0;  // of the job that sampled it
  int64_t prompts = 0, n = 0, max_new_tokens = 0;
  double temperature = 0;
  std::vector<std::string> texts;
  std::vector<double> gold, length, hack, eval;
  std::vector<std::string> member_jobs, member_backbones;
  std::vector<std::vector<double>> scores;  // [member][sample]
};

// The pool's sampling settings: the job's keys, or the defaults.
struct PoolSettings {
  int64_t prompts = 200, n = 64, max_new_tokens = 16;
  double temperature = 1.0;
};
PoolSettings PoolSettingsOf(const nlohmann::json& c) {
  PoolSettings s;
  s.prompts = c.value("prompts", s.prompts);
  s.n = c.value("n", s.n);
  s.max_new_tokens = c.value("max_new_tokens", s.max_new_tokens);
  s.temperature = c.value("temperature", s.temperature);
  return s;
}

common::Result<Pool> SamplePool(JobContext& ctx, Policy& policy, std::vector<Member>& members, lm::LoadedModel& eval_model,
                                const PoolSettings& settings) {
  Pool pool;
  pool.seed = ctx.seed();
  pool.prompts = settings.prompts;
  pool.n = settings.n;
  pool.max_new_tokens = settings.max_new_tokens;
  pool.temperature = settings.temperature;
  const std::vector<Example> prompts = lm::EvalSet(*policy.task, Split::kTest, settings.prompts);
  lm::SampleOptions o;
  o.temperature = settings.temperature;
  o.max_new_tokens = settings.max_new_tokens;
  o.stop_tokens = {Tokenizer::kEos};
  std::vector<std::vector<int>> rows;
  for (const auto& e : prompts) {
    for (int64_t s = 0; s < settings.n; ++s) rows.push_back(lm::WithBos(e.prompt));
  }
  common::Status status;
  const auto out = lm::SampleChunked(policy.model.model, rows, o, kBatch, common::DeriveSeed(ctx.seed(), "bon", 0), ctx, status);
  SHAMMIE_RETURN_IF_ERROR(status);
  const size_t total = out.size();
  std::vector<std::vector<int>> seqs(total);
  pool.texts.resize(total);
  pool.gold.resize(total);
  pool.length.resize(total);
  pool.hack.resize(total);
  for (size_t i = 0; i < total; ++i) {
    const Example& e = prompts[i / static_cast<size_t>(settings.n)];
    pool.texts[i] = Text(out[i].tokens);
    seqs[i] = RmInput(e.prompt, out[i].tokens, policy.model.model->config.max_len);
    pool.gold[i] = pref::LetterF1(pool.texts[i], e.answer_text);
    pool.length[i] = static_cast<double>(pool.texts[i].size());
    pool.hack[i] = pool.texts[i].size() > e.answer_text.size() ? 1 : 0;  // longer than any right answer
  }
  SHAMMIE_ASSIGN_OR_RETURN(pool.scores, MemberScores(members, seqs, ctx));
  pool.eval = Scores(eval_model.model, seqs);
  for (const auto& m : members) {
    pool.member_jobs.push_back(m.job);
    pool.member_backbones.push_back(m.backbone);
  }
  return pool;
}

// Every sample of the pool: prompt, sample, response, gold, length, the eval
// reward model's score and each reward model's (member_<i>, by backbone).
storage::Table SamplesTable(const Pool& pool) {
  std::vector<int64_t> prompt_col, sample_col;
  for (size_t i = 0; i < pool.texts.size(); ++i) {
    prompt_col.push_back(static_cast<int64_t>(i / static_cast<size_t>(pool.n)));
    sample_col.push_back(static_cast<int64_t>(i % static_cast<size_t>(pool.n)));
  }
  storage::Table table;
  table.columns = {{"prompt", prompt_col}, {"sample", sample_col}, {"response", pool.texts}, {"gold", pool.gold},
                   {"length", pool.length}, {"eval_reward", pool.eval}};
  for (size_t m = 0; m < pool.scores.size(); ++m) table.columns.push_back({"member_" + std::to_string(m), pool.scores[m]});
  return table;
}

// Doubles are written with 17 significant digits: they read back exactly.
std::string SerializePool(const Pool& p) {
  nlohmann::json j;
  j["format"] = "shammie.bon_pool.v1";
  j["seed"] = p.seed;
  j["prompts"] = p.prompts;
  j["n"] = p.n;
  j["max_new_tokens"] = p.max_new_tokens;
  j["temperature"] = p.temperature;
  j["texts"] = p.texts;
  j["gold"] = p.gold;
  j["length"] = p.length;
  j["hack"] = p.hack;
  j["eval"] = p.eval;
  nlohmann::json members = nlohmann::json::array();
  for (size_t m = 0; m < p.scores.size(); ++m) {
    members.push_back({{"job", p.member_jobs[m]}, {"backbone", p.member_backbones[m]}, {"scores", p.scores[m]}});
  }
  j["members"] = std::move(members);
  return j.dump() + "\n";
}

common::Result<Pool> ReadPool(const std::string& path) {
  SHAMMIE_ASSIGN_OR_RETURN(std::string text, storage::ReadVerified(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  const auto bad = [&](const std::string& why) { return common::DataLoss("best-of-n pool " + path + ": " + why); };
  if (j.is_discarded() || !j.is_object() || j.value("format", std::string()) != "shammie.bon_pool.v1") {
    return bad("not a shammie.bon_pool.v1 file");
  }
  Pool p;
  try {
    p.seed = j.at("seed").get<uint64_t>();
    p.prompts = j.at("prompts").get<int64_t>();
    p.n = j.at("n").get<int64_t>();
    p.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
    p.temperature = j.at("temperature").get<double>();
    p.texts = j.at("texts").get<std::vector<std::string>>();
    p.gold = j.at("gold").get<std::vector<double>>();
    p.length = j.at("length").get<std::vector<double>>();
    p.hack = j.at("hack").get<std::vector<double>>();
    p.eval = j.at("eval").get<std::vector<double>>();
    for (const auto& m : j.at("members")) {
      p.member_jobs.push_back(m.at("job").get<std::string>());
      p.member_backbones.push_back(m.at("backbone").get<std::string>());
      p.scores.push_back(m.at("scores").get<std::vector<double>>());
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  const auto total = static_cast<size_t>(p.prompts * p.n);
  bool sizes = p.prompts > 0 && p.n > 0 && p.texts.size() == total && p.gold.size() == total && p.length.size() == total &&
               p.hack.size() == total && p.eval.size() == total && !p.scores.empty();
  for (const auto& s : p.scores) sizes = sizes && s.size() == total;
  if (!sizes) return bad("its columns do not hold prompts x n samples, or it has no reward models");
  return p;
}

}  // namespace

common::Status RunRmScore(JobContext& ctx) {
  SHAMMIE_ASSIGN_OR_RETURN(Policy policy, OpenPolicy(ctx, "rm.score"));
  SHAMMIE_ASSIGN_OR_RETURN(RewardModels rms, OpenAllRewardModels(ctx, "rm.score"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel eval_model, OpenEvalModel(ctx, "rm.score"));
  SHAMMIE_ASSIGN_OR_RETURN(Pool pool, SamplePool(ctx, policy, rms.members, eval_model, PoolSettingsOf(ctx.config())));
  const size_t total = pool.texts.size();
  double sft_gold = 0, sft_length = 0;
  for (size_t i = 0; i < total; ++i) {
    sft_gold += pool.gold[i] / static_cast<double>(total);
    sft_length += pool.length[i] / static_cast<double>(total);
  }
  ctx.ReportMetric("samples", 0, static_cast<double>(total));
  ctx.ReportMetric("reward_models", 0, static_cast<double>(pool.scores.size()));
  ctx.ReportMetric("sft_gold", 0, sft_gold);
  ctx.ReportMetric("sft_length", 0, sft_length);
  SHAMMIE_RETURN_IF_ERROR(ctx.WriteTable("samples", SamplesTable(pool)));
  if (ctx.artifact_dir().empty()) return common::Status::Ok();
  SHAMMIE_ASSIGN_OR_RETURN(std::string path, storage::WriteContentAddressed(ctx.artifact_dir(), SerializePool(pool), "json"));
  return ctx.RecordArtifact("bon_pool", path);
}

common::Status RunRmBestOfN(JobContext& ctx) {
  const auto& c = ctx.config();
  torch::set_num_threads(static_cast<int>(c["threads"].get<int64_t>()));
  // The samples and their scores: an upstream rm.score job's pool, or sampled
  // and scored here (by the reward models this job's ensembles use).
  Pool pool;
  std::vector<std::vector<size_t>> groups;  // the pool's reward models by backbone
  std::vector<std::string> backbones;
  SHAMMIE_ASSIGN_OR_RETURN(const Artifact* shared,
                           lm::OptionalInput(ctx, "bon_pool", "rm.bon", "an rm.score stage in depends_on"));
  const bool every = c.contains("every_ensemble") && c["every_ensemble"].get<bool>();
  if (shared) {
    for (const auto& a : ctx.inputs()) {
      if (a.name == "reward_model" || a.name == "model") {
        return common::InvalidArgument("rm.bon reads its samples and scores from the upstream rm.score job; it takes no "
                                       "upstream \"" + a.name + "\" besides (job " + a.job_id + ")");
      }
    }
    SHAMMIE_ASSIGN_OR_RETURN(pool, ReadPool(shared->path));
    const PoolSettings mine = PoolSettingsOf(c);
    const auto differs = [&](const char* key, auto theirs, auto ours) -> common::Status {
      if (c.contains(key) && theirs != ours) {
        return common::InvalidArgument(std::string("rm.bon: ") + key + " is set by the upstream rm.score job (" +
                                       nlohmann::json(theirs).dump() + "); this job says " + nlohmann::json(ours).dump() +
                                       ": drop the key");
      }
      return common::Status::Ok();
    };
    SHAMMIE_RETURN_IF_ERROR(differs("prompts", pool.prompts, mine.prompts));
    SHAMMIE_RETURN_IF_ERROR(differs("n", pool.n, mine.n));
    SHAMMIE_RETURN_IF_ERROR(differs("max_new_tokens", pool.max_new_tokens, mine.max_new_tokens));
    SHAMMIE_RETURN_IF_ERROR(differs("temperature", pool.temperature, mine.temperature));
    for (size_t m = 0; m < pool.scores.size(); ++m) {
      if (backbones.empty() || backbones.back() != pool.member_backbones[m]) {
        backbones.push_back(pool.member_backbones[m]);
        groups.emplace_back();
      }
      groups.back().push_back(m);
    }
  } else {
    SHAMMIE_ASSIGN_OR_RETURN(Policy policy, OpenPolicy(ctx, "rm.bon"));
    std::vector<Member> members;
    if (every) {
      SHAMMIE_ASSIGN_OR_RETURN(RewardModels rms, OpenAllRewardModels(ctx, "rm.bon"));
      members = std::move(rms.members);
      groups = std::move(rms.groups);
      backbones = std::move(rms.backbones);
    } else {
      SHAMMIE_ASSIGN_OR_RETURN(members, OpenEnsemble(ctx, "rm.bon"));  // score only the one ensemble
      groups.emplace_back();
      for (size_t m = 0; m < members.size(); ++m) groups.back().push_back(m);
      backbones.emplace_back();
    }
    SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel eval_model, OpenEvalModel(ctx, "rm.bon"));
    SHAMMIE_ASSIGN_OR_RETURN(pool, SamplePool(ctx, policy, members, eval_model, PoolSettingsOf(c)));
  }
  // The ensembles: the one `ensemble` and `pick` name, or (every_ensemble)
  // every ensemble of that type, as lists of indices into the pool's models.
  // Pretrain ensembles are drawn with the pool's seed: every rm.bon job of one
  // pool draws the same.
  std::vector<std::vector<size_t>> ensembles;
  if (every) {
    ensembles = EveryEnsemble(c["ensemble"].get<std::string>(), groups, c.value("max_ensembles", int64_t{256}),
                              common::DeriveSeed(pool.seed, "rm.bon.ensembles", 0));
  } else if (shared) {
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<size_t> e, PickEnsemble(c["ensemble"].get<std::string>(),
                                                                 static_cast<size_t>(c["pick"].get<int64_t>()), groups,
                                                                 backbones));
    ensembles.push_back(std::move(e));
  } else {
    ensembles.push_back(groups.front());  // the models scored are the ensemble
  }
  const int64_t n_max = pool.n;
  const double lambda = c["std_weight"].get<double>();
  const size_t total = pool.texts.size(), prompt_count = static_cast<size_t>(pool.prompts);
  const std::vector<double>&gold = pool.gold, &length = pool.length, &hack = pool.hack, &eval = pool.eval;
  const std::vector<std::vector<double>>& scores = pool.scores;
  const std::vector<double> centers = Centers(scores);
  std::vector<size_t> all(total);
  for (size_t i = 0; i < total; ++i) all[i] = i;
  double sft_gold = 0, sft_length = 0, sft_hack = 0;
  for (size_t i = 0; i < total; ++i) {
    sft_gold += gold[i] / static_cast<double>(total);
    sft_length += length[i] / static_cast<double>(total);
    sft_hack += hack[i] / static_cast<double>(total);
  }
  ctx.ReportMetric("members", 0, static_cast<double>(ensembles.front().size()));
  ctx.ReportMetric("ensembles", 0, static_cast<double>(ensembles.size()));
  ctx.ReportMetric("sft_gold", 0, sft_gold);
  ctx.ReportMetric("sft_length", 0, sft_length);
  ctx.ReportMetric("sft_hack", 0, sft_hack);
  // A sample's win rate against its prompt's samples (gold), the same for
  // every ensemble that picks it.
  std::vector<double> win_of(total);
  for (size_t i = 0; i < total; ++i) {
    const size_t base = i / static_cast<size_t>(n_max) * static_cast<size_t>(n_max);
    double w = 0;
    for (int64_t k = 0; k < n_max; ++k) {
      const double other = gold[base + static_cast<size_t>(k)];
      w += gold[i] > other ? 1 : gold[i] == other ? 0.5 : 0;
    }
    win_of[i] = w / static_cast<double>(n_max);
  }
  // Metrics average over ensembles, taken one at a time. Per aggregation and
  // n: gold, proxy, eval, length, hack, win rate, member spread, and gold
  // squared (for the gold's spread over ensembles).
  const std::vector<std::string>& names = pref::AggregationNames();
  const std::vector<int64_t> ns = lm::Doublings(n_max);
  std::vector<std::vector<std::array<double, 8>>> sums(names.size(),
                                                       std::vector<std::array<double, 8>>(ns.size(), std::array<double, 8>{}));
  const double share = 1.0 / static_cast<double>(ensembles.size());
  double spread_sft = 0, correlation = 0;
  for (const auto& e : ensembles) {
    std::vector<std::vector<double>> member_scores;
    std::vector<double> member_centers;
    for (size_t m : e) {
      member_scores.push_back(scores[m]);
      member_centers.push_back(centers[m]);
    }
    spread_sft += MemberSpread(member_scores, all, member_centers) * share;
    // How alike the members are: their mean pairwise Pearson correlation.
    double pair_sum = 0, pairs = 0;
    for (size_t i = 0; i < e.size(); ++i) {
      for (size_t j = i + 1; j < e.size(); ++j) {
        pair_sum += Correlation(scores[e[i]], scores[e[j]]);
        pairs += 1;
      }
    }
    if (pairs > 0) correlation += pair_sum / pairs * share;
    for (size_t ai = 0; ai < names.size(); ++ai) {
      SHAMMIE_ASSIGN_OR_RETURN(pref::Aggregation a, pref::ParseAggregation(names[ai]));
      std::vector<double> agg(total);
      for (size_t i = 0; i < total; ++i) agg[i] = Aggregated(member_scores, i, a, lambda);
      for (size_t ni = 0; ni < ns.size(); ++ni) {
        const int64_t n = ns[ni];
        // Every prompt's samples in n_max / n disjoint groups of n; the
        // aggregated reward picks one per group.
        double g = 0, proxy = 0, ev = 0, len = 0, hk = 0, win = 0, picks = 0;
        std::vector<size_t> chosen;
        for (size_t p = 0; p < prompt_count; ++p) {
          const size_t base = p * static_cast<size_t>(n_max);
          for (int64_t start = 0; start + n <= n_max; start += n) {
            size_t best = base + static_cast<size_t>(start);
            for (int64_t k = start; k < start + n; ++k) {
              if (agg[base + static_cast<size_t>(k)] > agg[best]) best = base + static_cast<size_t>(k);
            }
            chosen.push_back(best);
            g += gold[best];
            proxy += agg[best];
            ev += eval[best];
            len += length[best];
            hk += hack[best];
            win += win_of[best];
            picks += 1;
          }
        }
        const double spread = MemberSpread(member_scores, chosen, member_centers);
        const std::array<double, 8> point = {g / picks, proxy / picks, ev / picks, len / picks,
                                             hk / picks, win / picks, spread, (g / picks) * (g / picks)};
        for (size_t k = 0; k < point.size(); ++k) sums[ai][ni][k] += point[k] * share;
      }
    }
  }
  ctx.ReportMetric("member_spread_sft", 0, spread_sft);
  if (ensembles.front().size() > 1) ctx.ReportMetric("member_correlation_sft", 0, correlation);
  for (size_t ai = 0; ai < names.size(); ++ai) {
    const std::string& name = names[ai];
    for (size_t ni = 0; ni < ns.size(); ++ni) {
      const auto& v = sums[ai][ni];
      const int64_t n = ns[ni];
      ctx.ReportMetric(name + "_gold", n, v[0]);
      ctx.ReportMetric(name + "_proxy", n, v[1]);
      ctx.ReportMetric(name + "_eval", n, v[2]);
      ctx.ReportMetric(name + "_length", n, v[3]);
      ctx.ReportMetric(name + "_hack", n, v[4]);
      ctx.ReportMetric(name + "_win_rate", n, v[5]);
      ctx.ReportMetric(name + "_member_spread", n, v[6]);
      if (ensembles.size() > 1) {
        // The spread of the gold over ensembles (population sd).
        ctx.ReportMetric(name + "_gold_sd", n, std::sqrt(std::max(0.0, v[7] - v[0] * v[0])));
      }
    }
  }
  if (shared) return common::Status::Ok();  // the rm.score job has the samples table
  return ctx.WriteTable("samples", SamplesTable(pool));
}

common::Status RunRmRl(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(Policy policy, OpenPolicy(ctx, "rm.rl"));
  SHAMMIE_ASSIGN_OR_RETURN(Policy reference, OpenPolicy(ctx, "rm.rl"));
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<Member> members, OpenEnsemble(ctx, "rm.rl"));
  SHAMMIE_ASSIGN_OR_RETURN(lm::LoadedModel eval_model, OpenEvalModel(ctx, "rm.rl"));
  SHAMMIE_ASSIGN_OR_RETURN(pref::Aggregation aggregation, pref::ParseAggregation(c["aggregation"].get<std::string>()));
  const double lambda = c["std_weight"].get<double>(), kl_coef = c["kl"].get<double>();
  const int64_t iterations = c["iterations"].get<int64_t>(), prompts_per_step = c["batch"].get<int64_t>(),
                samples = c["samples"].get<int64_t>(), eval_every = c["eval_every"].get<int64_t>();
  lm::SampleOptions o;
  o.temperature = 1.0;
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>();
  o.stop_tokens = {Tokenizer::kEos};
  Transformer& model = policy.model.model;
  Transformer& ref = reference.model.model;
  ref->eval();
  const std::vector<Example> eval_set = lm::EvalSet(*policy.task, Split::kTest, c["eval_prompts"].get<int64_t>());
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(c["learning_rate"].get<double>())
                                                         .weight_decay(0.0).betas({0.9, 0.95}));
  common::Status status;
  std::vector<double> centers;  // each member's mean score on the SFT policy's eval samples
  double last_eval = std::numeric_limits<double>::quiet_NaN();
  int64_t decreases = 0, evals = 0;
  double best_gold = -1;
  int64_t best_gold_step = 0;
  // One sample per eval prompt (fixed seed): gold, proxy, eval-RM reward,
  // KL(pi || pi_sft) (Monte Carlo: the mean sequence log-ratio), length, hacks.
  auto evaluate = [&](int64_t step) -> common::Status {
    model->eval();
    std::vector<std::vector<int>> rows;
    for (const auto& e : eval_set) rows.push_back(lm::WithBos(e.prompt));
    const auto out = lm::SampleChunked(model, rows, o, kBatch, common::DeriveSeed(ctx.seed(), "eval", 0), ctx, status);
    SHAMMIE_RETURN_IF_ERROR(status);
    std::vector<std::vector<int>> seqs;
    double g = 0, len = 0, hk = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      const std::string t = Text(out[i].tokens);
      seqs.push_back(RmInput(eval_set[i].prompt, out[i].tokens, model->config.max_len));
      g += pref::LetterF1(t, eval_set[i].answer_text);
      len += static_cast<double>(t.size());
      hk += t.size() > eval_set[i].answer_text.size() ? 1 : 0;
    }
    SHAMMIE_ASSIGN_OR_RETURN(const auto scores, MemberScores(members, seqs, ctx));
    if (centers.empty()) centers = Centers(scores);
    const std::vector<double> ev = Scores(eval_model.model, seqs);
    double proxy = 0, eval_reward = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      proxy += Aggregated(scores, i, aggregation, lambda);
      eval_reward += ev[i];
    }
    double kl = 0;
    {
      torch::NoGradGuard guard;
      Tensor lp = lm::ResponseLogProb(model, rows, out), lr = lm::ResponseLogProb(ref, rows, out);
      kl = (lp - lr).mean().item<double>();
    }
    std::vector<size_t> all(seqs.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    const double n = static_cast<double>(std::max<size_t>(1, seqs.size()));
    ctx.ReportMetric("gold", step, g / n);
    ctx.ReportMetric("proxy", step, proxy / n);
    ctx.ReportMetric("eval_reward", step, eval_reward / n);
    ctx.ReportMetric("kl", step, kl);
    ctx.ReportMetric("length", step, len / n);
    ctx.ReportMetric("hack", step, hk / n);
    ctx.ReportMetric("member_spread", step, MemberSpread(scores, all, centers));
    if (!std::isnan(last_eval)) {
      ++evals;
      decreases += eval_reward / n < last_eval ? 1 : 0;
    }
    last_eval = eval_reward / n;
    if (g / n > best_gold) {
      best_gold = g / n;
      best_gold_step = step;
    }
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
      batch.push_back(policy.task->Sample(Split::kTrain, rng));
      for (int64_t s = 0; s < samples; ++s) rows.push_back(lm::WithBos(batch.back().prompt));
    }
    model->eval();
    const auto out = lm::SampleChunked(model, rows, o, kBatch, common::DeriveSeed(ctx.seed(), "rl", static_cast<uint64_t>(it)), ctx, status);
    SHAMMIE_RETURN_IF_ERROR(status);
    model->train();
    std::vector<std::vector<int>> seqs;
    for (size_t r = 0; r < out.size(); ++r) {
      seqs.push_back(RmInput(batch[r / static_cast<size_t>(samples)].prompt, out[r].tokens, model->config.max_len));
    }
    SHAMMIE_ASSIGN_OR_RETURN(const auto scores, MemberScores(members, seqs, ctx));
    Tensor logp = lm::ResponseLogProb(model, rows, out);
    if (it == 1) {
      // The teacher-forced log-probabilities must be the sampler's own
      // (temperature 1): a check of the response mask, reported once.
      double gap = 0;
      const Tensor forced = logp.detach().to(torch::kFloat64).contiguous();
      for (size_t r = 0; r < out.size(); ++r) {
        double sampled = 0;
        for (double v : out[r].logprobs) sampled += v;
        gap = std::max(gap, std::abs(forced.data_ptr<double>()[r] - sampled));
      }
      ctx.ReportMetric("sampler_logprob_gap", 0, gap);
    }
    Tensor ref_logp;
    {
      torch::NoGradGuard guard;
      ref_logp = lm::ResponseLogProb(ref, rows, out);
    }
    // The KL-regularized reward of each sample, r - kl (log pi - log pi_sft),
    // minus the mean of its prompt's other samples (leave-one-out baseline).
    const Tensor log_ratio = (logp.detach() - ref_logp).to(torch::kFloat64).contiguous();
    std::vector<double> reward(out.size());
    for (size_t r = 0; r < out.size(); ++r) {
      reward[r] = Aggregated(scores, r, aggregation, lambda) - kl_coef * log_ratio.data_ptr<double>()[r];
    }
    std::vector<double> advantage = lm::LeaveOneOut(reward, samples);
    Tensor adv = torch::from_blob(advantage.data(), {static_cast<int64_t>(advantage.size())}, torch::kFloat64)
                     .to(torch::kFloat32);
    Tensor loss = -(adv * logp).mean();
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    if (it % eval_every == 0 || it == iterations) SHAMMIE_RETURN_IF_ERROR(evaluate(it));
  }
  ctx.ReportMetric("members", 0, static_cast<double>(members.size()));
  ctx.ReportMetric("eval_reward_decreases", iterations, evals > 0 ? static_cast<double>(decreases) / static_cast<double>(evals) : 0);
  ctx.ReportMetric("best_gold", iterations, best_gold);
  ctx.ReportMetric("best_gold_step", iterations, static_cast<double>(best_gold_step));
  return common::Status::Ok();
}

}  // namespace shammie::workers
