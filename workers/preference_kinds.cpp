// Job kinds of the preference-optimization study (workers/preference.hpp,
// docs/experiments/dpo-distill.md): pref.bandit -> pref.rm (one per family
// member) -> pref.align (fan-in: the whole family).
#include <algorithm>
#include <cmath>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/random.hpp"
#include "storage/checkpoint_store.hpp"
#include "workers/job_kind.hpp"
#include "workers/preference.hpp"

namespace shammie::workers {

namespace {

using pref::Bandit;
using pref::LinearReward;

common::Status Record(JobContext& ctx, std::string_view name, const std::string& json) {
  if (ctx.artifact_dir().empty()) return common::Status::Ok();
  SHAMMIE_ASSIGN_OR_RETURN(std::string path, storage::WriteContentAddressed(ctx.artifact_dir(), json + "\n", "json"));
  return ctx.RecordArtifact(name, path);
}

common::Result<Bandit> UpstreamBandit(JobContext& ctx, std::string_view kind) {
  const Artifact* found = nullptr;
  for (const auto& a : ctx.inputs()) {
    if (a.name != "bandit") continue;
    if (found) return common::InvalidArgument(std::string(kind) + " needs exactly one upstream pref.bandit job; job " + ctx.job_id() + " has several");
    found = &a;
  }
  if (!found) return common::InvalidArgument(std::string(kind) + " needs an upstream pref.bandit job; job " + ctx.job_id() + " has none");
  SHAMMIE_ASSIGN_OR_RETURN(std::string text, storage::ReadVerified(found->path));
  common::Result<Bandit> b = pref::BanditFromJson(text);
  if (!b.ok()) return common::DataLoss(found->path + ": " + b.status().message());
  return b;
}

// One row per (prompt, response): prompt, response, quality, length,
// in_data, ref_prob, then `extra` (columns in the same row order).
storage::Table ResponseTable(const Bandit& b, std::vector<storage::Column> extra) {
  std::vector<int64_t> prompt, response, in_col;
  std::vector<double> quality, length, ref_prob;
  const std::vector<char> in_data = b.InData();
  for (int x = 0; x < b.prompts; ++x) {
    for (int y = 0; y < b.responses; ++y) {
      const size_t at = b.At(x, y);
      prompt.push_back(x);
      response.push_back(y);
      quality.push_back(b.quality[at]);
      length.push_back(b.length[at]);
      in_col.push_back(in_data[at]);
      ref_prob.push_back(std::exp(b.ref_logp[at]));
    }
  }
  storage::Table t;
  t.columns = {{"prompt", prompt}, {"response", response}, {"quality", quality},
               {"length", length}, {"in_data", in_col},    {"ref_prob", ref_prob}};
  for (auto& c : extra) t.columns.push_back(std::move(c));
  return t;
}

// Share of each prompt's response pairs (all of them, compared or not) that
// `score` orders as the gold quality does.
double GoldAgreement(const Bandit& b, const std::function<double(size_t)>& score) {
  double agree = 0, total = 0;
  for (int x = 0; x < b.prompts; ++x) {
    for (int i = 0; i < b.responses; ++i) {
      for (int j = i + 1; j < b.responses; ++j) {
        const size_t a = b.At(x, i), c = b.At(x, j);
        agree += ((score(a) - score(c)) * (b.quality[a] - b.quality[c]) > 0) ? 1 : 0;
        total += 1;
      }
    }
  }
  return total > 0 ? agree / total : 0;
}

common::Status RunBandit(JobContext& ctx) {
  const auto& c = ctx.config();
  pref::BanditSpec spec;
  spec.prompts = c["prompts"].get<int>();
  spec.responses = c["responses"].get<int>();
  spec.coverage = c["coverage"].get<double>();
  spec.pairs_per_prompt = c["pairs"].get<int>();
  spec.bias = c["bias"].get<std::vector<double>>();
  spec.ref_spread = c["ref_spread"].get<double>();
  SHAMMIE_RETURN_IF_ERROR(pref::ValidateBanditSpec(spec));
  const Bandit b = pref::MakeBandit(spec, ctx.seed());

  const std::vector<char> in_data = b.InData();
  SHAMMIE_RETURN_IF_ERROR(ctx.WriteTable("responses", ResponseTable(b, {})));

  std::vector<int64_t> pp, pw, pl, ppool;
  double gold_agree = 0, longer_wins = 0;
  for (const auto& p : b.pairs) {
    pp.push_back(p.prompt);
    pw.push_back(p.winner);
    pl.push_back(p.loser);
    ppool.push_back(p.pool);
    gold_agree += b.quality[b.At(p.prompt, p.winner)] > b.quality[b.At(p.prompt, p.loser)] ? 1 : 0;
    longer_wins += b.length[b.At(p.prompt, p.winner)] > b.length[b.At(p.prompt, p.loser)] ? 1 : 0;
  }
  storage::Table pairs;
  pairs.columns = {{"prompt", pp}, {"winner", pw}, {"loser", pl}, {"pool", ppool}};
  SHAMMIE_RETURN_IF_ERROR(ctx.WriteTable("pairs", pairs));
  const double n = static_cast<double>(b.pairs.size());
  ctx.ReportMetric("pairs", 0, n);
  ctx.ReportMetric("labels_agree_with_gold", 0, gold_agree / n);
  ctx.ReportMetric("longer_wins", 0, longer_wins / n);
  ctx.ReportMetric("responses_in_data", 0,
                   static_cast<double>(std::count(in_data.begin(), in_data.end(), 1)) / static_cast<double>(in_data.size()));
  return Record(ctx, "bandit", pref::BanditToJson(b));
}

common::Status RunRewardModel(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(Bandit b, UpstreamBandit(ctx, "pref.rm"));
  const int pool = c["pool"].get<int>();
  if (pool >= b.pools) {
    return common::InvalidArgument("pool " + std::to_string(pool) + ": the bandit has " + std::to_string(b.pools) +
                                   " annotator pools (0.." + std::to_string(b.pools - 1) + ", or -1 for all)");
  }
  std::vector<size_t> chosen;
  for (size_t i = 0; i < b.pairs.size(); ++i) {
    if (pool < 0 || b.pairs[i].pool == pool) chosen.push_back(i);
  }
  if (chosen.empty()) return common::InvalidArgument("pool " + std::to_string(pool) + " labelled no pairs");
  if (c["bootstrap"].get<bool>()) {
    common::SplitMix64 rng(common::DeriveSeed(ctx.seed(), "pref.rm.bootstrap", 0));
    std::vector<size_t> resampled(chosen.size());
    for (size_t& i : resampled) i = chosen[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(chosen.size()) - 1))];
    chosen = std::move(resampled);
  }
  const pref::RewardFit fit = pref::FitReward(b, chosen, c["eta"].get<double>(), c["steps"].get<int>(),
                                              c["learning_rate"].get<double>());
  ctx.ReportMetric("pairs", 0, static_cast<double>(chosen.size()));
  ctx.ReportMetric("w_quality", 0, fit.reward.w_quality);
  ctx.ReportMetric("w_length", 0, fit.reward.w_length);
  ctx.ReportMetric("train_loss", 0, fit.loss);
  ctx.ReportMetric("train_accuracy", 0, fit.accuracy);
  ctx.ReportMetric("gold_agreement", 0, GoldAgreement(b, [&](size_t at) { return fit.reward(b, at); }));
  const nlohmann::json j = {{"w_quality", fit.reward.w_quality}, {"w_length", fit.reward.w_length}, {"pool", pool}};
  return Record(ctx, "reward", j.dump());
}

common::Status RunAlign(JobContext& ctx) {
  const auto& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(Bandit b, UpstreamBandit(ctx, "pref.align"));
  std::vector<LinearReward> family;
  std::vector<double> family_pool;  // the annotator pool each member was fitted to (-1 = all)
  for (const auto& a : ctx.inputs()) {
    if (a.name != "reward") continue;
    SHAMMIE_ASSIGN_OR_RETURN(std::string text, storage::ReadVerified(a.path));
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("w_quality") || !j.contains("w_length")) {
      return common::DataLoss(a.path + ": not a pref.rm reward");
    }
    family.push_back({j["w_quality"].get<double>(), j["w_length"].get<double>()});
    family_pool.push_back(j.value("pool", -1));
  }
  pref::AlignSpec spec;
  SHAMMIE_ASSIGN_OR_RETURN(spec.method, pref::ParseMethod(c["method"].get<std::string>()));
  spec.beta = c["beta"].get<double>();
  spec.gamma = c["gamma"].get<double>();
  spec.steps = c["steps"].get<int>();
  spec.learning_rate = c["learning_rate"].get<double>();
  spec.cosine = c["schedule"].get<std::string>() == "cosine";
  if (spec.method != pref::Method::kDpo && family.empty()) {
    return common::InvalidArgument("method \"" + c["method"].get<std::string>() +
                                   "\" distills reward models: give the stage an upstream pref.rm stage");
  }
  auto report = [&](int step, const std::vector<double>& logits, double objective, int member) {
    const pref::PolicyReport r = pref::Evaluate(b, logits, spec.beta);
    ctx.ReportMetric("objective", step, objective);
    ctx.ReportMetric("gold", step, r.gold);
    ctx.ReportMetric("gold_win_rate", step, r.gold_win_rate);
    ctx.ReportMetric("length", step, r.length);
    ctx.ReportMetric("kl", step, r.kl);
    ctx.ReportMetric("forward_kl", step, r.forward_kl);
    ctx.ReportMetric("margin_mean", step, r.margin_mean);
    ctx.ReportMetric("margin_max", step, r.margin_max);
    ctx.ReportMetric("winner_logratio", step, r.winner_logratio);
    ctx.ReportMetric("winners_below_ref", step, r.winners_below_ref);
    ctx.ReportMetric("unseen_mass", step, r.unseen_mass);
    if (member >= 0) ctx.ReportMetric("member_pool", step, family_pool[static_cast<size_t>(member)]);
    return !ctx.cancelled();
  };
  SHAMMIE_ASSIGN_OR_RETURN(pref::AlignResult result,
                           pref::Align(b, family, spec, c["eval_every"].get<int>(), report));

  // Where the family disagrees: the spread of its members' rewards (each
  // centered under pi_ref), against how far the policy moved from pi_ref.
  const auto centered = pref::CenteredRewards(b, family);
  const size_t n = b.quality.size();
  std::vector<double> disagreement(n, 0.0), logratio(n), prob(n);
  for (size_t at = 0; at < n && family.size() > 1; ++at) {
    double mean = 0, sq = 0;
    for (const auto& r : centered) mean += r[at] / static_cast<double>(family.size());
    for (const auto& r : centered) sq += (r[at] - mean) * (r[at] - mean);
    disagreement[at] = std::sqrt(sq / static_cast<double>(family.size()));
  }
  // The closed form the distillation targets: pi_ref exp(r / beta), r the
  // family mean (distill) or the member the pessimistic min settled on.
  double gap = 0;
  std::vector<double> target_reward(n, 0.0);
  for (size_t j = 0; j < family.size(); ++j) {
    if (spec.method == pref::Method::kPessimistic && static_cast<int>(j) != result.member) continue;
    const double share = spec.method == pref::Method::kPessimistic ? 1.0 : 1.0 / static_cast<double>(family.size());
    for (size_t at = 0; at < n; ++at) target_reward[at] += share * family[j](b, at);
  }
  for (int x = 0; x < b.prompts; ++x) {
    const size_t at0 = b.At(x, 0);
    const auto k = static_cast<size_t>(b.responses);
    const std::vector<double> lp = pref::LogSoftmax(std::span<const double>(result.logits).subspan(at0, k));
    const std::vector<double> star =
        pref::OptimalPolicy(b.Row(b.ref_logp, x), std::span<const double>(target_reward).subspan(at0, k), spec.beta);
    for (size_t y = 0; y < k; ++y) {
      prob[at0 + y] = std::exp(lp[y]);
      logratio[at0 + y] = lp[y] - b.ref_logp[at0 + y];
      gap = std::max(gap, std::abs(prob[at0 + y] - star[y]));
    }
  }
  ctx.ReportMetric("family_size", result.steps_done, static_cast<double>(family.size()));
  // The closed form is the optimum only without the forward-KL term.
  if (spec.method != pref::Method::kDpo && spec.gamma == 0) ctx.ReportMetric("gap_to_closed_form", result.steps_done, gap);
  if (family.size() > 1 && *std::max_element(disagreement.begin(), disagreement.end()) > 0) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t c2) { return disagreement[a] < disagreement[c2]; });
    double low = 0, high = 0;
    for (size_t i = 0; i < n; ++i) (i < n / 2 ? low : high) += std::abs(logratio[order[i]]);
    ctx.ReportMetric("logratio_where_agree", result.steps_done, low / static_cast<double>(n / 2));
    ctx.ReportMetric("logratio_where_disagree", result.steps_done, high / static_cast<double>(n - n / 2));
  }
  return ctx.WriteTable("policy", ResponseTable(b, {{"prob", prob}, {"logratio", logratio}, {"disagreement", disagreement}}));
}

void MustRegister(KindRegistry& registry, JobKind kind) {
  common::Status s = registry.Register(std::move(kind));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

}  // namespace

void RegisterPreferenceKinds(KindRegistry& registry) {
  {
    JobKind k;
    k.name = "pref.bandit";
    k.doc = "A preference bandit with a known gold reward (PAPERS.md §5(e)): prompts x responses with quality q (the "
            "gold reward) and length l; pairs drawn from pi_ref over a `coverage` share of response pairs, labelled "
            "by annotator pools with Bradley-Terry on q + bias[pool] * l. Artifact \"bandit\"; tables \"responses\", "
            "\"pairs\"; metrics labels_agree_with_gold, longer_wins, responses_in_data.";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("prompts").Default(40).Range(1, 100000).Doc("Prompts.");
    k.config.Int("responses").Default(20).Range(2, 1000).Doc("Candidate responses per prompt.");
    k.config.Float("coverage").Default(0.3).Min(0, true).Max(1)
        .Doc("Share of each prompt's response pairs that can be compared; the others never are.");
    k.config.Int("pairs").Default(20).Range(1, 1000000).Doc("Labelled pairs per prompt (with replacement).");
    k.config.Add("bias", common::ValueType::kFloatList).Default(nlohmann::json::array({0.0, 2.0, 2.0, 2.0}))
        .Range(-100, 100).MinItems(1)
        .Doc("Length bias of each annotator pool: pool k prefers by q + bias[k] * l. A pair's pool is uniform.");
    k.config.Float("ref_spread").Default(0.5).Range(0, 10).Doc("Std of pi_ref's logits.");
    k.run = RunBandit;
    MustRegister(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pref.rm";
    k.doc = "A linear reward model r = w_quality q + w_length l fitted to the upstream pref.bandit's pairs by "
            "Bradley-Terry + eta (r+ + r-)^2 (Adam). Artifact \"reward\"; metrics w_quality, w_length, train_loss, "
            "train_accuracy, gold_agreement (over every response pair).";
    k.config = common::Schema(k.name, k.doc);
    k.config.Int("pool").Default(-1).Range(-1, 1000).Doc("Fit only this annotator pool's pairs; -1 = all pairs.");
    k.config.Bool("bootstrap").Default(false).Doc("Resample the pairs with replacement (from the job's seed).");
    k.config.Float("eta").Default(0.01).Range(0, 100).Doc("Centering regularizer weight.");
    k.config.Int("steps").Default(2000).Range(1, 10000000).Doc("Adam steps (full batch).");
    k.config.Float("learning_rate").Default(0.05).Min(0, true).Max(10).Doc("Adam step size.");
    k.run = RunRewardModel;
    MustRegister(registry, std::move(k));
  }
  {
    JobKind k;
    k.name = "pref.align";
    k.doc = "Trains a tabular policy from pi_ref on the upstream pref.bandit's pairs by DPO, distillation of the "
            "upstream reward models' mean, or pessimistic distillation (min over the family + gamma KL(pi_ref || "
            "pi)); exact evaluation. Metrics per eval_every: gold, gold_win_rate, length, kl, forward_kl, "
            "margin_mean, margin_max, winner_logratio, winners_below_ref, unseen_mass, objective, member_pool (the "
            "annotator pool of the member the pessimistic min picks); at the end gap_to_closed_form (gamma = 0), "
            "logratio_where_agree/disagree (when the family disagrees). Table \"policy\".";
    k.config = common::Schema(k.name, k.doc);
    k.config.Enum("method", {"dpo", "distill", "pessimistic"}).Default("distill").Doc("The objective.");
    k.config.Float("beta").Default(0.5).Min(0, true).Max(1000).Doc("KL strength of the implicit reward beta log pi/pi_ref.");
    k.config.Float("gamma").Default(0.0).Range(0, 1000).Doc("Weight of the forward KL(pi_ref || pi) added to the objective.");
    k.config.Int("steps").Default(2000).Range(0, 10000000).Doc("Adam steps (full batch).");
    k.config.Float("learning_rate").Default(0.05).Min(0, true).Max(10).Doc("Adam step size on the logits.");
    k.config.Enum("schedule", {"constant", "cosine"}).Default("constant")
        .Doc("Step size over the steps: constant (shows where each objective drifts) or a half cosine to 0 (settles).");
    k.config.Int("eval_every").Default(100).Range(1, 10000000).Doc("Steps between evaluations.");
    k.run = RunAlign;
    MustRegister(registry, std::move(k));
  }
}

}  // namespace shammie::workers
