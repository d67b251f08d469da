#include "analysis/bayes_ppi.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "analysis/ppi.hpp"
#include "common/random.hpp"

namespace shammie::analysis {

namespace {

constexpr size_t kMaxLabelValues = 32;

// Gamma(shape, 1) by Marsaglia and Tsang (2000); shape < 1 via the boost
// Gamma(a) = Gamma(a + 1) * U^(1/a).
double Gamma(double shape, common::SplitMix64& rng) {
  if (shape < 1) {
    double u = rng.NextDouble();
    while (u <= 0) u = rng.NextDouble();
    return Gamma(shape + 1, rng) * std::pow(u, 1 / shape);
  }
  const double d = shape - 1.0 / 3, c = 1 / std::sqrt(9 * d);
  while (true) {
    double x, v;
    do {
      x = rng.NextNormal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = rng.NextDouble();
    if (u < 1 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0 && std::log(u) < 0.5 * x * x + d * (1 - v + std::log(v))) return d * v;
  }
}

void Dirichlet(const std::vector<double>& alphas, common::SplitMix64& rng, std::vector<double>* out) {
  out->resize(alphas.size());
  double total = 0;
  for (size_t i = 0; i < alphas.size(); ++i) total += (*out)[i] = Gamma(alphas[i], rng);
  for (double& v : *out) v /= total;
}

common::Status CheckCommon(double alpha, const BayesOptions& options) {
  if (!(alpha > 0 && alpha < 1)) return common::InvalidArgument("alpha must be in (0, 1)");
  if (!(options.prior > 0) || !std::isfinite(options.prior)) return common::InvalidArgument("prior must be > 0");
  if (options.draws < 100) return common::InvalidArgument("need at least 100 Monte-Carlo draws");
  return common::Status::Ok();
}

}  // namespace

double Quantile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const double pos = p * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

common::Result<BayesEstimate> ChainRuleMean(std::span<const int64_t> judge_labeled, std::span<const double> human,
                                            std::span<const int64_t> judge_unlabeled, double alpha,
                                            const BayesOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckCommon(alpha, options));
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(human, "human labels"));
  if (judge_labeled.size() != human.size()) {
    return common::InvalidArgument("judge outputs and human labels differ in length: " +
                                   std::to_string(judge_labeled.size()) + " vs " + std::to_string(human.size()));
  }
  if (human.empty()) return common::InvalidArgument("the chain rule needs at least 1 labeled pair");
  // Categories of the judge, and values of the human label.
  std::map<int64_t, size_t> category;
  for (int64_t a : judge_labeled) category.emplace(a, 0);
  for (int64_t a : judge_unlabeled) category.emplace(a, 0);
  size_t k = 0;
  for (auto& [a, idx] : category) idx = k++;
  std::map<double, size_t> value;
  for (double h : human) value.emplace(h, 0);
  // A 0/1 label has support {0, 1} even when only one value was observed.
  if (std::all_of(human.begin(), human.end(), [](double h) { return h == 0 || h == 1; })) {
    value.emplace(0.0, 0);
    value.emplace(1.0, 0);
  }
  if (value.size() > kMaxLabelValues) {
    return common::InvalidArgument("the chain rule needs a discrete human label (at most " +
                                   std::to_string(kMaxLabelValues) + " distinct values), got " +
                                   std::to_string(value.size()));
  }
  size_t m = 0;
  std::vector<double> values;
  for (auto& [h, idx] : value) {
    idx = m++;
    values.push_back(h);
  }
  // Counts.
  std::vector<double> judge_counts(k, 0);
  std::vector<std::vector<double>> pair_counts(k, std::vector<double>(m, 0));
  for (int64_t a : judge_labeled) judge_counts[category[a]] += 1;
  for (int64_t a : judge_unlabeled) judge_counts[category[a]] += 1;
  for (size_t i = 0; i < human.size(); ++i) pair_counts[category[judge_labeled[i]]][value[human[i]]] += 1;

  BayesEstimate e;
  e.method = "bayes-chain-rule";
  e.alpha = alpha;
  e.categories = k;
  // Exact posterior mean (independent posteriors).
  std::vector<double> judge_post(k);
  const double judge_total = std::accumulate(judge_counts.begin(), judge_counts.end(), 0.0) + options.prior * static_cast<double>(k);
  std::vector<std::vector<double>> cond_post(k, std::vector<double>(m));
  for (size_t a = 0; a < k; ++a) {
    judge_post[a] = judge_counts[a] + options.prior;
    const double row = std::accumulate(pair_counts[a].begin(), pair_counts[a].end(), 0.0);
    if (row == 0) e.notes.push_back("judge category with no labeled pairs: its label distribution is the prior");
    double cond_mean = 0;
    for (size_t h = 0; h < m; ++h) {
      cond_post[a][h] = pair_counts[a][h] + options.prior;
      cond_mean += values[h] * cond_post[a][h] / (row + options.prior * static_cast<double>(m));
    }
    e.posterior_mean += judge_post[a] / judge_total * cond_mean;
  }
  std::sort(e.notes.begin(), e.notes.end());
  e.notes.erase(std::unique(e.notes.begin(), e.notes.end()), e.notes.end());
  // Monte Carlo for the interval and sd.
  common::SplitMix64 rng(options.seed ^ 0x6a09e667f3bcc909ULL);
  std::vector<double> draws(options.draws), p, q;
  double sum = 0, sum_sq = 0;
  for (size_t d = 0; d < options.draws; ++d) {
    Dirichlet(judge_post, rng, &p);
    double theta = 0;
    for (size_t a = 0; a < k; ++a) {
      Dirichlet(cond_post[a], rng, &q);
      double cond = 0;
      for (size_t h = 0; h < m; ++h) cond += values[h] * q[h];
      theta += p[a] * cond;
    }
    draws[d] = theta;
    sum += theta;
    sum_sq += theta * theta;
  }
  const double n = static_cast<double>(options.draws);
  e.posterior_sd = std::sqrt(std::max(0.0, (sum_sq - sum * sum / n) / (n - 1)));
  std::sort(draws.begin(), draws.end());
  e.lower = Quantile(draws, alpha / 2);
  e.upper = Quantile(draws, 1 - alpha / 2);
  return e;
}

common::Result<BayesEstimate> BinnedChainRuleMean(std::span<const double> score_labeled, std::span<const double> human,
                                                  std::span<const double> score_unlabeled, size_t bins, double alpha,
                                                  const BayesOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(score_labeled, "scores of labeled items"));
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(score_unlabeled, "scores of unlabeled items"));
  if (bins < 1 || bins > 1000) return common::InvalidArgument("bins must be between 1 and 1000");
  std::vector<double> all(score_labeled.begin(), score_labeled.end());
  all.insert(all.end(), score_unlabeled.begin(), score_unlabeled.end());
  if (all.empty()) return common::InvalidArgument("no scores to bin");
  std::sort(all.begin(), all.end());
  // Interior edges at the 1/K, ..., (K-1)/K quantiles; ties collapse bins.
  std::vector<double> edges;
  for (size_t b = 1; b < bins; ++b) edges.push_back(Quantile(all, static_cast<double>(b) / static_cast<double>(bins)));
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  auto bin_of = [&](double s) {
    return static_cast<int64_t>(std::upper_bound(edges.begin(), edges.end(), s) - edges.begin());
  };
  std::vector<int64_t> lab(score_labeled.size()), unl(score_unlabeled.size());
  for (size_t i = 0; i < lab.size(); ++i) lab[i] = bin_of(score_labeled[i]);
  for (size_t i = 0; i < unl.size(); ++i) unl[i] = bin_of(score_unlabeled[i]);
  auto e = ChainRuleMean(lab, human, unl, alpha, options);
  if (!e.ok()) return e.status();
  e->method = "bayes-binned";
  if (edges.size() + 1 < bins) e->notes.push_back("tied scores merged some bins: " + std::to_string(edges.size() + 1) + " bins used");
  return e;
}

common::Result<BayesEstimate> BetaBinomialMean(std::span<const double> human, double alpha, const BayesOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckCommon(alpha, options));
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(human, "human labels"));
  for (double h : human) {
    if (h != 0 && h != 1) return common::InvalidArgument("the Beta-Binomial model needs binary (0/1) labels");
  }
  // A judge with one category reduces the chain rule to Beta(prior + #1, prior + #0).
  std::vector<int64_t> one(human.size(), 0);
  std::vector<double> labels(human.begin(), human.end());
  auto e = ChainRuleMean(one, labels, {}, alpha, options);
  if (!e.ok()) return e.status();
  e->method = "bayes-labeled-only";
  return e;
}

}  // namespace shammie::analysis
