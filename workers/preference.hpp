// Preference optimization by reward-model distillation (PAPERS.md §5, Fisch et
// al. 2025) on an exact preference bandit: the losses, the task, linear
// Bradley-Terry reward models and tabular policies, without LibTorch.
//
// The bandit: `prompts` prompts x `responses` responses. Response y of prompt
// x has a quality q (the gold reward, r* = q) and a length l, both N(0, 1);
// the reference policy pi_ref(.|x) is a softmax of N(0, ref_spread^2) logits.
// Preference pairs are drawn from pi_ref restricted to a random `coverage`
// share of each prompt's response pairs (the rest are never compared). Each
// pair is labelled by one of several annotator pools, pool k by Bradley-Terry
// on q + bias[k] * l: a length bias present in training and absent from the
// evaluation (which scores q alone).
//
// A policy is a table of logits theta[x][y], pi = softmax(theta[x]); with it
// every expectation is exact (no sampling). Its implicit reward is
// h(y) = log pi(y|x) - log pi_ref(y|x) and its margin on a pair is
// beta (h(y1) - h(y2)), in which the softmax normalizer cancels.
//
// Objectives (per pair, averaged over the training pairs; gamma * forward KL,
// averaged over prompts, added to any of them):
// - DPO:      -log sigma(beta (h(y_w) - h(y_l)))
// - distill:  (r(y1) - r(y2) - beta (h(y1) - h(y2)))^2, r the mean of the
//             reward family; labels unused. With every pair of a prompt
//             connected, its minimizer is pi_ref exp(r / beta) / Z.
// - pessimistic: min over the family's members r_j of the distillation loss,
//             + gamma KL(pi_ref || pi). The pessimistic objective
//             max_pi min_j E_pi[r_j] - E_ref[r_j] - beta KL(pi || pi_ref)
//             has, for a fixed r, the value beta KL(pi_ref || pi_r) (pi_r the
//             optimum above); so among policies whose implicit reward is in
//             the family it prefers the one nearest pi_ref in forward KL.
//             With gamma > 0 that is the global minimum of this loss (every
//             member's optimum has distillation loss 0); gradient descent
//             from pi_ref may still settle on another member. With gamma = 0
//             every member's optimum is a minimum, and the one reached is
//             the member whose loss is smallest from pi_ref: the smallest
//             margins on the training pairs. This Lagrangian form is derived
//             in PAPERS.md §5(b), not checked against the paper's text
//             (docs/experiments/dpo-distill.md).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

namespace shammie::workers::pref {

// --- losses and closed forms (PAPERS.md §5(f), §7(f)) ---
double LogSigmoid(double x);
// -log sigma(r_pos - r_neg).
double BradleyTerryLoss(double r_pos, double r_neg);
// eta (r_pos + r_neg)^2: pins the prompt-dependent shift BT is blind to.
double CenteringPenalty(double r_pos, double r_neg, double eta);
// -log sigma(beta (logratio_w - logratio_l)); logratio = log pi - log pi_ref.
double DpoLoss(double beta, double logratio_w, double logratio_l);
// (rm_margin - beta (logratio_1 - logratio_2))^2.
double DistillLoss(double beta, double rm_margin, double logratio_1, double logratio_2);
// pi_ref exp(r / beta) / Z, from log pi_ref and r over one prompt's responses.
std::vector<double> OptimalPolicy(std::span<const double> ref_logp, std::span<const double> reward, double beta);
// KL(p || q) of two distributions given as log-probabilities.
double KlDivergence(std::span<const double> logp, std::span<const double> logq);
// Log-softmax of logits.
std::vector<double> LogSoftmax(std::span<const double> logits);

// --- the bandit ---
struct BanditSpec {
  int prompts = 40;
  int responses = 20;
  double coverage = 0.3;        // share of each prompt's response pairs that can be compared
  int pairs_per_prompt = 20;    // drawn with replacement from the comparable pairs
  std::vector<double> bias = {0.0, 2.0, 2.0, 2.0};  // one annotator pool each
  double ref_spread = 0.5;      // std of pi_ref's logits
};
common::Status ValidateBanditSpec(const BanditSpec& spec);

struct Pair {
  int prompt = 0, winner = 0, loser = 0, pool = 0;
};

struct Bandit {
  int prompts = 0, responses = 0, pools = 0;
  // Row-major [prompt][response].
  std::vector<double> quality, length, ref_logp;
  std::vector<Pair> pairs;
  size_t At(int prompt, int response) const {
    return static_cast<size_t>(prompt) * static_cast<size_t>(responses) + static_cast<size_t>(response);
  }
  std::span<const double> Row(const std::vector<double>& v, int prompt) const {
    return std::span<const double>(v).subspan(At(prompt, 0), static_cast<size_t>(responses));
  }
  // 1 where the response occurs in some pair.
  std::vector<char> InData() const;
};
Bandit MakeBandit(const BanditSpec& spec, uint64_t seed);
// The JSON artifact form and back (DataLoss on a malformed document).
std::string BanditToJson(const Bandit& bandit);
common::Result<Bandit> BanditFromJson(const std::string& text);

// --- reward models: r(x, y) = w_quality q + w_length l ---
struct LinearReward {
  double w_quality = 0, w_length = 0;
  double operator()(const Bandit& b, size_t at) const { return w_quality * b.quality[at] + w_length * b.length[at]; }
};
struct RewardFit {
  LinearReward reward;
  double loss = 0;      // BT + centering, on the pairs it was fitted to
  double accuracy = 0;  // share of those pairs it orders as labelled
};
// Adam on the mean of BradleyTerryLoss + CenteringPenalty over `pairs`
// (indices into bandit.pairs, repeats allowed).
RewardFit FitReward(const Bandit& bandit, std::span<const size_t> pairs, double eta, int steps, double learning_rate);

// --- policies ---
enum class Method { kDpo, kDistill, kPessimistic };
common::Result<Method> ParseMethod(const std::string& name);

struct AlignSpec {
  Method method = Method::kDistill;
  double beta = 0.5;
  double gamma = 0.0;  // weight of KL(pi_ref || pi), for every method
  int steps = 2000;
  double learning_rate = 0.05;
  bool cosine = false;  // decay the step size to 0 along a half cosine (else constant)
};

// What a policy does on the bandit; every value exact.
struct PolicyReport {
  double gold = 0;            // E_pi[q], mean over prompts
  double gold_win_rate = 0;   // P(q(y) beats q(y')) under Bradley-Terry, y ~ pi, y' ~ pi_ref
  double length = 0;          // E_pi[l]
  double kl = 0;              // KL(pi || pi_ref), mean over prompts
  double forward_kl = 0;      // KL(pi_ref || pi)
  double margin_mean = 0;     // beta (h(y_w) - h(y_l)) over the training pairs
  double margin_max = 0;
  double winner_logratio = 0;     // mean h(y_w) over the training pairs
  double winners_below_ref = 0;   // share of training pairs with pi(y_w) < pi_ref(y_w)
  double unseen_mass = 0;         // pi's mass on responses in no training pair
};
PolicyReport Evaluate(const Bandit& bandit, const std::vector<double>& logits, double beta);

// Per response of every prompt: the family's rewards centered under pi_ref.
std::vector<std::vector<double>> CenteredRewards(const Bandit& bandit, std::span<const LinearReward> family);

// Trains logits from pi_ref's. `family` may be empty for DPO only.
// `on_step(step, logits, objective, member)` runs after steps 0 (the start),
// each multiple of `every`, and the last; member = the family member the
// pessimistic min picked at that step (-1 otherwise). It returns false to
// stop (cancellation).
struct AlignResult {
  std::vector<double> logits;
  int steps_done = 0;
  int member = -1;
};
common::Result<AlignResult> Align(const Bandit& bandit, std::span<const LinearReward> family, const AlignSpec& spec,
                                  int every, const std::function<bool(int, const std::vector<double>&, double, int)>& on_step);

// --- reward-model ensembles (PAPERS.md §7, Eisenstein et al. 2024) ---
enum class Aggregation { kMean, kMedian, kMin, kMeanMinusStd };
// "mean", "median", "min", "mean_minus_std", in that order.
const std::vector<std::string>& AggregationNames();
common::Result<Aggregation> ParseAggregation(const std::string& name);
// The members' rewards combined; mean_minus_std = mean - lambda * std
// (population std, ddof 0). `members` must not be empty.
double Aggregate(std::span<const double> members, Aggregation aggregation, double lambda);

// The gold reward of the "distinct" task (workers/tasks.hpp): F1 of a
// response against the answer (the prompt's distinct letters), where recall
// = answer letters present / answer letters and precision = answer letters
// present / response letters counted with repeats, so padding a response
// with repeated or wrong letters costs precision. 0 for an empty response.
double LetterF1(std::string_view response, std::string_view answer);

}  // namespace shammie::workers::pref
