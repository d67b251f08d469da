// Process advantage verifiers (PAPERS.md §2, Setlur et al. 2024): the exact
// parts, without LibTorch.
//
// - The didactic planted-subsequence task of the paper's appendix B: a
//   sequence of `length` tokens from {1..vocab} succeeds (outcome reward 1)
//   when the planted `target` occurs in it as a contiguous run. Prefixes are
//   tracked with the KMP automaton of the target: state k = the longest
//   prefix of the target that the prefix ends with; state m = |target| means
//   found (absorbing).
// - The procedural prover mu_gamma: in state k < m it gives the next target
//   token weight gamma and every other token weight 1. Its values are exact
//   by dynamic programming over (state, steps remaining):
//     V(m, t) = 1;  V(k, 0) = 0 (k < m);
//     V(k, t) = sum_a mu(a | k) V(next(k, a), t - 1).
//   The advantage of token a in state k with t steps left (the deterministic
//   dynamics make Q(s, a) the value of the next state):
//     A(k, t, a) = V(next(k, a), t - 1) - V(k, t),
//   so A summed along any trajectory telescopes to V(final) - V(start).
// - Best-of-K provers over a policy pi need no model of their own:
//   Q^{BoK(pi)} = 1 - (1 - Q^pi)^K.
#pragma once

#include <cstdint>
#include <vector>

#include "common/random.hpp"
#include "common/status.hpp"

namespace shammie::workers::pav {

struct PlantedTask {
  int vocab = 13;                       // tokens 1..vocab
  int length = 10;                      // tokens per sequence
  std::vector<int> target = {3, 7, 1, 9};
};

// InvalidArgument unless 2 <= vocab, 1 <= |target| <= length and every
// target token is in 1..vocab.
common::Status ValidatePlantedTask(const PlantedTask& task);

class PlantedAutomaton {
 public:
  explicit PlantedAutomaton(const PlantedTask& task);  // the task must validate
  int states() const { return static_cast<int>(target_.size()) + 1; }
  int found() const { return static_cast<int>(target_.size()); }
  // The state after reading `token` (1..vocab) in `state`.
  int Next(int state, int token) const { return next_[static_cast<size_t>(state)][static_cast<size_t>(token)]; }
  // The state after every token of `tokens`, starting from 0.
  int Run(const std::vector<int>& tokens) const;
  // The target token that advances `state` (< found()).
  int Advancing(int state) const { return target_[static_cast<size_t>(state)]; }

 private:
  std::vector<int> target_;
  std::vector<std::vector<int>> next_;  // [state][token]
};

// The exact values of the prover mu_gamma on a task.
class ProverValues {
 public:
  ProverValues(const PlantedTask& task, double gamma);
  const PlantedAutomaton& automaton() const { return automaton_; }
  double gamma() const { return gamma_; }
  // mu(token | state); in the found state every token is equally likely.
  double Probability(int state, int token) const;
  // V(state, remaining), remaining in 0..length.
  double Value(int state, int remaining) const;
  // A(state, remaining, token) = V(Next(state, token), remaining - 1) - V(state, remaining); remaining >= 1.
  double Advantage(int state, int remaining, int token) const;
  // Per position h of a full or partial sequence: A of its h-th token from
  // the state its prefix reached, with length - h steps remaining.
  std::vector<double> Advantages(const std::vector<int>& tokens) const;
  // A sequence drawn from mu_gamma itself.
  std::vector<int> Sample(common::SplitMix64& rng) const;

 private:
  PlantedTask task_;
  PlantedAutomaton automaton_;
  double gamma_;
  std::vector<std::vector<double>> value_;  // [remaining][state]
};

// The outcome reward: 1 when the target occurs in `tokens`.
bool Succeeds(const PlantedAutomaton& automaton, const std::vector<int>& tokens);

// Q of the Best-of-K prover of a policy whose Q is q: 1 - (1 - q)^K.
double BestOfK(double q, double k);

// The per-step effective reward of PAV-RL: Q^pi + alpha * A^mu.
inline double EffectiveReward(double q_pi, double advantage_mu, double alpha) { return q_pi + alpha * advantage_mu; }

// The unbiased pass@N estimate from n samples of which c succeeded
// (1 - C(n - c, N) / C(n, N)); N <= n.
double PassAtN(int64_t n, int64_t c, int64_t big_n);

}  // namespace shammie::workers::pav
