#include "workers/preference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/random.hpp"

namespace shammie::workers::pref {

namespace {

double Sigmoid(double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }

// Adam over a flat parameter vector (Kingma & Ba; beta1 0.9, beta2 0.999).
class Adam {
 public:
  Adam(size_t n, double learning_rate) : lr_(learning_rate), m_(n, 0.0), v_(n, 0.0) {}
  void set_learning_rate(double lr) { lr_ = lr; }
  void Step(std::vector<double>& params, const std::vector<double>& grad) {
    ++t_;
    const double c1 = 1 - std::pow(0.9, t_), c2 = 1 - std::pow(0.999, t_);
    for (size_t i = 0; i < params.size(); ++i) {
      m_[i] = 0.9 * m_[i] + 0.1 * grad[i];
      v_[i] = 0.999 * v_[i] + 0.001 * grad[i] * grad[i];
      params[i] -= lr_ * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + 1e-8);
    }
  }

 private:
  double lr_;
  int t_ = 0;
  std::vector<double> m_, v_;
};

}  // namespace

double LogSigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

double BradleyTerryLoss(double r_pos, double r_neg) { return -LogSigmoid(r_pos - r_neg); }

double CenteringPenalty(double r_pos, double r_neg, double eta) { return eta * (r_pos + r_neg) * (r_pos + r_neg); }

double DpoLoss(double beta, double logratio_w, double logratio_l) { return -LogSigmoid(beta * (logratio_w - logratio_l)); }

double DistillLoss(double beta, double rm_margin, double logratio_1, double logratio_2) {
  const double e = rm_margin - beta * (logratio_1 - logratio_2);
  return e * e;
}

std::vector<double> LogSoftmax(std::span<const double> logits) {
  const double top = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (double v : logits) z += std::exp(v - top);
  const double log_z = top + std::log(z);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_z;
  return out;
}

std::vector<double> OptimalPolicy(std::span<const double> ref_logp, std::span<const double> reward, double beta) {
  std::vector<double> logits(ref_logp.size());
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = ref_logp[i] + reward[i] / beta;
  std::vector<double> p = LogSoftmax(logits);
  for (double& v : p) v = std::exp(v);
  return p;
}

double KlDivergence(std::span<const double> logp, std::span<const double> logq) {
  double kl = 0;
  for (size_t i = 0; i < logp.size(); ++i) {
    const double p = std::exp(logp[i]);
    if (p > 0) kl += p * (logp[i] - logq[i]);
  }
  return kl;
}

common::Status ValidateBanditSpec(const BanditSpec& spec) {
  if (spec.prompts < 1) return common::InvalidArgument("prompts: must be at least 1");
  if (spec.responses < 2) return common::InvalidArgument("responses: must be at least 2");
  if (!(spec.coverage > 0 && spec.coverage <= 1)) return common::InvalidArgument("coverage: must be in (0, 1]");
  if (spec.pairs_per_prompt < 1) return common::InvalidArgument("pairs: must be at least 1");
  if (spec.bias.empty()) return common::InvalidArgument("bias: give one value per annotator pool");
  if (!(spec.ref_spread >= 0)) return common::InvalidArgument("ref_spread: must be >= 0");
  return common::Status::Ok();
}

std::vector<char> Bandit::InData() const {
  std::vector<char> in(quality.size(), 0);
  for (const Pair& p : pairs) in[At(p.prompt, p.winner)] = in[At(p.prompt, p.loser)] = 1;
  return in;
}

Bandit MakeBandit(const BanditSpec& spec, uint64_t seed) {
  Bandit b;
  b.prompts = spec.prompts;
  b.responses = spec.responses;
  b.pools = static_cast<int>(spec.bias.size());
  const size_t n = static_cast<size_t>(spec.prompts) * static_cast<size_t>(spec.responses);
  b.quality.resize(n);
  b.length.resize(n);
  b.ref_logp.resize(n);
  common::SplitMix64 rng(common::DeriveSeed(seed, "pref.bandit", 0));
  for (size_t i = 0; i < n; ++i) {
    b.quality[i] = rng.NextNormal();
    b.length[i] = rng.NextNormal();
    b.ref_logp[i] = spec.ref_spread * rng.NextNormal();
  }
  const int k = spec.responses;
  for (int x = 0; x < spec.prompts; ++x) {
    const std::vector<double> logp = LogSoftmax(b.Row(b.ref_logp, x));
    std::copy(logp.begin(), logp.end(), b.ref_logp.begin() + static_cast<std::ptrdiff_t>(b.At(x, 0)));
    // The comparable pairs: a uniform random `coverage` share of all of them.
    std::vector<std::pair<int, int>> all;
    for (int i = 0; i < k; ++i) {
      for (int j = i + 1; j < k; ++j) all.emplace_back(i, j);
    }
    for (size_t i = all.size() - 1; i > 0; --i) {
      std::swap(all[i], all[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(i)))]);
    }
    const auto keep = std::clamp<size_t>(static_cast<size_t>(std::llround(spec.coverage * static_cast<double>(all.size()))),
                                         1, all.size());
    all.resize(keep);
    // Drawn from pi_ref restricted to them: weight pi_ref(a) pi_ref(b).
    std::vector<double> cumulative(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) {
      total += std::exp(logp[static_cast<size_t>(all[i].first)] + logp[static_cast<size_t>(all[i].second)]);
      cumulative[i] = total;
    }
    for (int d = 0; d < spec.pairs_per_prompt; ++d) {
      const double u = rng.NextDouble() * total;
      const size_t i = std::min<size_t>(
          static_cast<size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin()), keep - 1);
      auto [y1, y2] = all[i];
      if (rng.NextDouble() < 0.5) std::swap(y1, y2);
      const int pool = static_cast<int>(rng.NextInt(0, b.pools - 1));
      const double bias = spec.bias[static_cast<size_t>(pool)];
      const double s = (b.quality[b.At(x, y1)] + bias * b.length[b.At(x, y1)]) -
                       (b.quality[b.At(x, y2)] + bias * b.length[b.At(x, y2)]);
      if (rng.NextDouble() < Sigmoid(s)) {
        b.pairs.push_back({x, y1, y2, pool});
      } else {
        b.pairs.push_back({x, y2, y1, pool});
      }
    }
  }
  return b;
}

std::string BanditToJson(const Bandit& b) {
  nlohmann::json pairs = nlohmann::json::array();
  for (const Pair& p : b.pairs) pairs.push_back({p.prompt, p.winner, p.loser, p.pool});
  nlohmann::json j = {{"prompts", b.prompts}, {"responses", b.responses}, {"pools", b.pools},
                      {"quality", b.quality}, {"length", b.length},       {"ref_logp", b.ref_logp},
                      {"pairs", pairs}};
  return j.dump();
}

common::Result<Bandit> BanditFromJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  auto bad = [](const std::string& why) { return common::DataLoss("not a preference bandit: " + why); };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  Bandit b;
  try {
    b.prompts = j.at("prompts").get<int>();
    b.responses = j.at("responses").get<int>();
    b.pools = j.at("pools").get<int>();
    b.quality = j.at("quality").get<std::vector<double>>();
    b.length = j.at("length").get<std::vector<double>>();
    b.ref_logp = j.at("ref_logp").get<std::vector<double>>();
    for (const auto& p : j.at("pairs")) {
      b.pairs.push_back({p.at(0).get<int>(), p.at(1).get<int>(), p.at(2).get<int>(), p.at(3).get<int>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  const size_t n = static_cast<size_t>(std::max(0, b.prompts)) * static_cast<size_t>(std::max(0, b.responses));
  if (b.prompts < 1 || b.responses < 2 || b.pools < 1) return bad("needs prompts >= 1, responses >= 2, pools >= 1");
  if (b.quality.size() != n || b.length.size() != n || b.ref_logp.size() != n) return bad("arrays of the wrong size");
  for (const Pair& p : b.pairs) {
    if (p.prompt < 0 || p.prompt >= b.prompts || p.winner < 0 || p.winner >= b.responses || p.loser < 0 ||
        p.loser >= b.responses || p.winner == p.loser || p.pool < 0 || p.pool >= b.pools) {
      return bad("a pair out of range");
    }
  }
  return b;
}

RewardFit FitReward(const Bandit& b, std::span<const size_t> pairs, double eta, int steps, double learning_rate) {
  std::vector<double> w = {0.0, 0.0}, grad(2);
  Adam adam(2, learning_rate);
  const double n = static_cast<double>(std::max<size_t>(1, pairs.size()));
  auto features = [&](const Pair& p, double sign_l) {
    const size_t a = b.At(p.prompt, p.winner), c = b.At(p.prompt, p.loser);
    return std::pair<double, double>{b.quality[a] + sign_l * b.quality[c], b.length[a] + sign_l * b.length[c]};
  };
  for (int step = 0; step < steps; ++step) {
    grad = {0.0, 0.0};
    for (size_t i : pairs) {
      const auto [dq, dl] = features(b.pairs[i], -1);  // winner - loser
      const auto [sq, sl] = features(b.pairs[i], +1);  // winner + loser
      const double s = Sigmoid(-(w[0] * dq + w[1] * dl));
      const double c = 2 * eta * (w[0] * sq + w[1] * sl);
      grad[0] += -s * dq + c * sq;
      grad[1] += -s * dl + c * sl;
    }
    grad[0] /= n;
    grad[1] /= n;
    adam.Step(w, grad);
  }
  RewardFit fit;
  fit.reward = {w[0], w[1]};
  for (size_t i : pairs) {
    const Pair& p = b.pairs[i];
    const double rw = fit.reward(b, b.At(p.prompt, p.winner)), rl = fit.reward(b, b.At(p.prompt, p.loser));
    fit.loss += BradleyTerryLoss(rw, rl) + CenteringPenalty(rw, rl, eta);
    fit.accuracy += rw > rl ? 1 : 0;
  }
  fit.loss /= n;
  fit.accuracy /= n;
  return fit;
}

common::Result<Method> ParseMethod(const std::string& name) {
  if (name == "dpo") return Method::kDpo;
  if (name == "distill") return Method::kDistill;
  if (name == "pessimistic") return Method::kPessimistic;
  return common::InvalidArgument("method: unknown \"" + name + "\" (dpo, distill or pessimistic)");
}

PolicyReport Evaluate(const Bandit& b, const std::vector<double>& logits, double beta) {
  PolicyReport r;
  const std::vector<char> in_data = b.InData();
  std::vector<double> logp(logits.size());
  for (int x = 0; x < b.prompts; ++x) {
    const std::vector<double> lp = LogSoftmax(std::span<const double>(logits).subspan(b.At(x, 0), static_cast<size_t>(b.responses)));
    std::copy(lp.begin(), lp.end(), logp.begin() + static_cast<std::ptrdiff_t>(b.At(x, 0)));
    const auto ref = b.Row(b.ref_logp, x);
    r.kl += KlDivergence(lp, ref);
    r.forward_kl += KlDivergence(ref, lp);
    for (int y = 0; y < b.responses; ++y) {
      const size_t at = b.At(x, y);
      const double p = std::exp(lp[static_cast<size_t>(y)]);
      r.gold += p * b.quality[at];
      r.length += p * b.length[at];
      if (!in_data[at]) r.unseen_mass += p;
      for (int z = 0; z < b.responses; ++z) {
        r.gold_win_rate += p * std::exp(ref[static_cast<size_t>(z)]) * Sigmoid(b.quality[at] - b.quality[b.At(x, z)]);
      }
    }
  }
  const double prompts = b.prompts;
  for (double* v : {&r.gold, &r.gold_win_rate, &r.length, &r.kl, &r.forward_kl, &r.unseen_mass}) *v /= prompts;
  r.margin_max = b.pairs.empty() ? 0 : -std::numeric_limits<double>::infinity();
  for (const Pair& p : b.pairs) {
    const size_t w = b.At(p.prompt, p.winner), l = b.At(p.prompt, p.loser);
    const double hw = logp[w] - b.ref_logp[w], hl = logp[l] - b.ref_logp[l];
    const double m = beta * (hw - hl);
    r.margin_mean += m;
    r.margin_max = std::max(r.margin_max, m);
    r.winner_logratio += hw;
    r.winners_below_ref += hw < 0 ? 1 : 0;
  }
  const double pairs = static_cast<double>(std::max<size_t>(1, b.pairs.size()));
  r.margin_mean /= pairs;
  r.winner_logratio /= pairs;
  r.winners_below_ref /= pairs;
  return r;
}

std::vector<std::vector<double>> CenteredRewards(const Bandit& b, std::span<const LinearReward> family) {
  std::vector<std::vector<double>> out;
  for (const LinearReward& rm : family) {
    std::vector<double> r(b.quality.size());
    for (int x = 0; x < b.prompts; ++x) {
      double mean = 0;
      for (int y = 0; y < b.responses; ++y) mean += std::exp(b.ref_logp[b.At(x, y)]) * rm(b, b.At(x, y));
      for (int y = 0; y < b.responses; ++y) r[b.At(x, y)] = rm(b, b.At(x, y)) - mean;
    }
    out.push_back(std::move(r));
  }
  return out;
}

common::Result<AlignResult> Align(const Bandit& b, std::span<const LinearReward> family, const AlignSpec& spec, int every,
                                  const std::function<bool(int, const std::vector<double>&, double, int)>& on_step) {
  if (spec.method != Method::kDpo && family.empty()) {
    return common::InvalidArgument("distillation needs at least one reward model upstream");
  }
  if (b.pairs.empty()) return common::InvalidArgument("the bandit has no preference pairs");
  // Each member's reward margin on every pair; distill uses their mean.
  const size_t members = family.size(), pairs = b.pairs.size();
  std::vector<std::vector<double>> margins(members, std::vector<double>(pairs));
  for (size_t j = 0; j < members; ++j) {
    for (size_t i = 0; i < pairs; ++i) {
      const Pair& p = b.pairs[i];
      margins[j][i] = family[j](b, b.At(p.prompt, p.winner)) - family[j](b, b.At(p.prompt, p.loser));
    }
  }
  std::vector<double> mean_margin(pairs, 0.0);
  for (const auto& m : margins) {
    for (size_t i = 0; i < pairs; ++i) mean_margin[i] += m[i] / static_cast<double>(members);
  }

  AlignResult result;
  result.logits = b.ref_logp;
  std::vector<double> grad(result.logits.size()), implicit(pairs), residual(pairs);
  Adam adam(result.logits.size(), spec.learning_rate);
  const double n = static_cast<double>(pairs);
  for (int step = 0;; ++step) {
    std::fill(grad.begin(), grad.end(), 0.0);
    for (size_t i = 0; i < pairs; ++i) {
      const Pair& p = b.pairs[i];
      const size_t w = b.At(p.prompt, p.winner), l = b.At(p.prompt, p.loser);
      implicit[i] = spec.beta * ((result.logits[w] - b.ref_logp[w]) - (result.logits[l] - b.ref_logp[l]));
    }
    // d objective / d implicit margin, per pair.
    double objective = 0;
    int member = -1;
    const std::vector<double>* target = &mean_margin;
    if (spec.method == Method::kPessimistic) {
      double best = std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < members; ++j) {
        double loss = 0;
        for (size_t i = 0; i < pairs; ++i) loss += (margins[j][i] - implicit[i]) * (margins[j][i] - implicit[i]);
        if (loss < best) {
          best = loss;
          member = static_cast<int>(j);
        }
      }
      target = &margins[static_cast<size_t>(member)];
    }
    for (size_t i = 0; i < pairs; ++i) {
      if (spec.method == Method::kDpo) {
        objective += -LogSigmoid(implicit[i]);
        residual[i] = -Sigmoid(-implicit[i]);
      } else {
        const double e = implicit[i] - (*target)[i];
        objective += e * e;
        residual[i] = 2 * e;
      }
      const Pair& p = b.pairs[i];
      grad[b.At(p.prompt, p.winner)] += spec.beta * residual[i] / n;
      grad[b.At(p.prompt, p.loser)] -= spec.beta * residual[i] / n;
    }
    objective /= n;
    if (spec.gamma > 0) {
      for (int x = 0; x < b.prompts; ++x) {
        const size_t at = b.At(x, 0);
        const auto ref = b.Row(b.ref_logp, x);
        const std::vector<double> lp =
            LogSoftmax(std::span<const double>(result.logits).subspan(at, static_cast<size_t>(b.responses)));
        objective += spec.gamma * KlDivergence(ref, lp) / b.prompts;
        for (size_t y = 0; y < lp.size(); ++y) grad[at + y] += spec.gamma * (std::exp(lp[y]) - std::exp(ref[y])) / b.prompts;
      }
    }
    result.member = member;
    result.steps_done = step;
    if ((step % every == 0 || step == spec.steps) && !on_step(step, result.logits, objective, member)) {
      return common::Status(common::StatusCode::kCancelled, "cancelled at step " + std::to_string(step));
    }
    if (step == spec.steps) break;
    if (spec.cosine) {
      adam.set_learning_rate(spec.learning_rate * 0.5 * (1 + std::cos(std::numbers::pi * step / spec.steps)));
    }
    adam.Step(result.logits, grad);
  }
  return result;
}

const std::vector<std::string>& AggregationNames() {
  static const std::vector<std::string> kNames = {"mean", "median", "min", "mean_minus_std"};
  return kNames;
}

common::Result<Aggregation> ParseAggregation(const std::string& name) {
  const auto& names = AggregationNames();
  const auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) {
    return common::InvalidArgument("aggregation: unknown \"" + name + "\" (mean, median, min or mean_minus_std)");
  }
  return static_cast<Aggregation>(it - names.begin());
}

double Aggregate(std::span<const double> members, Aggregation aggregation, double lambda) {
  SHAMMIE_CHECK_MSG(!members.empty(), "Aggregate: no members");
  const double n = static_cast<double>(members.size());
  double mean = 0;
  for (double v : members) mean += v / n;
  switch (aggregation) {
    case Aggregation::kMean:
      return mean;
    case Aggregation::kMedian: {
      std::vector<double> v(members.begin(), members.end());
      std::sort(v.begin(), v.end());
      const size_t h = v.size() / 2;
      return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
    }
    case Aggregation::kMin:
      return *std::min_element(members.begin(), members.end());
    case Aggregation::kMeanMinusStd: {
      double sq = 0;
      for (double v : members) sq += (v - mean) * (v - mean) / n;
      return mean - lambda * std::sqrt(sq);
    }
  }
  return mean;
}

double LetterF1(std::string_view response, std::string_view answer) {
  if (response.empty() || answer.empty()) return 0;
  std::string wanted(answer);
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  double found = 0;
  for (char c : wanted) found += response.find(c) != std::string_view::npos ? 1 : 0;
  if (found == 0) return 0;
  const double recall = found / static_cast<double>(wanted.size());
  const double precision = found / static_cast<double>(response.size());
  return 2 * precision * recall / (precision + recall);
}

}  // namespace shammie::workers::pref
