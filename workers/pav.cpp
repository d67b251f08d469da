#include "workers/pav.hpp"

#include <cmath>
#include <string>

#include "common/status.hpp"

namespace shammie::workers::pav {

common::Status ValidatePlantedTask(const PlantedTask& task) {
  if (task.vocab < 2) return common::InvalidArgument("vocab must be at least 2, not " + std::to_string(task.vocab));
  if (task.target.empty() || static_cast<int>(task.target.size()) > task.length) {
    return common::InvalidArgument("target needs 1 to length (" + std::to_string(task.length) + ") tokens, not " +
                                   std::to_string(task.target.size()));
  }
  for (int t : task.target) {
    if (t < 1 || t > task.vocab) {
      return common::InvalidArgument("target token " + std::to_string(t) + " is outside 1.." +
                                     std::to_string(task.vocab));
    }
  }
  return common::Status::Ok();
}

PlantedAutomaton::PlantedAutomaton(const PlantedTask& task) : target_(task.target) {
  SHAMMIE_CHECK(ValidatePlantedTask(task).ok());
  const size_t m = target_.size();
  // KMP failure function: fail[k] = the longest proper border of target[0..k).
  std::vector<size_t> fail(m + 1, 0);
  for (size_t k = 2; k <= m; ++k) {
    size_t j = fail[k - 1];
    while (j > 0 && target_[j] != target_[k - 1]) j = fail[j];
    if (target_[j] == target_[k - 1]) ++j;
    fail[k] = j;
  }
  next_.assign(m + 1, std::vector<int>(static_cast<size_t>(task.vocab) + 1, 0));
  for (size_t k = 0; k <= m; ++k) {
    for (int a = 1; a <= task.vocab; ++a) {
      if (k == m) {
        next_[k][static_cast<size_t>(a)] = static_cast<int>(m);  // found stays found
        continue;
      }
      size_t j = k;
      while (j > 0 && target_[j] != a) j = fail[j];
      if (target_[j] == a) ++j;
      next_[k][static_cast<size_t>(a)] = static_cast<int>(j);
    }
  }
}

int PlantedAutomaton::Run(const std::vector<int>& tokens) const {
  int s = 0;
  for (int t : tokens) s = Next(s, t);
  return s;
}

bool Succeeds(const PlantedAutomaton& automaton, const std::vector<int>& tokens) {
  return automaton.Run(tokens) == automaton.found();
}

ProverValues::ProverValues(const PlantedTask& task, double gamma)
    : task_(task), automaton_(task), gamma_(gamma) {
  SHAMMIE_CHECK(gamma > 0);
  const int m = automaton_.found();
  value_.assign(static_cast<size_t>(task.length) + 1, std::vector<double>(static_cast<size_t>(m) + 1, 0.0));
  value_[0][static_cast<size_t>(m)] = 1;
  for (int t = 1; t <= task.length; ++t) {
    for (int k = 0; k <= m; ++k) {
      double v = 0;
      for (int a = 1; a <= task.vocab; ++a) {
        v += Probability(k, a) * value_[static_cast<size_t>(t - 1)][static_cast<size_t>(automaton_.Next(k, a))];
      }
      value_[static_cast<size_t>(t)][static_cast<size_t>(k)] = v;
    }
  }
}

double ProverValues::Probability(int state, int token) const {
  if (state == automaton_.found()) return 1.0 / task_.vocab;
  const double total = gamma_ + (task_.vocab - 1);
  return (token == automaton_.Advancing(state) ? gamma_ : 1.0) / total;
}

double ProverValues::Value(int state, int remaining) const {
  return value_[static_cast<size_t>(remaining)][static_cast<size_t>(state)];
}

double ProverValues::Advantage(int state, int remaining, int token) const {
  SHAMMIE_CHECK(remaining >= 1);
  return Value(automaton_.Next(state, token), remaining - 1) - Value(state, remaining);
}

std::vector<double> ProverValues::Advantages(const std::vector<int>& tokens) const {
  SHAMMIE_CHECK(static_cast<int>(tokens.size()) <= task_.length);
  std::vector<double> out;
  int s = 0;
  for (size_t h = 0; h < tokens.size(); ++h) {
    out.push_back(Advantage(s, task_.length - static_cast<int>(h), tokens[h]));
    s = automaton_.Next(s, tokens[h]);
  }
  return out;
}

std::vector<int> ProverValues::Sample(common::SplitMix64& rng) const {
  std::vector<int> out;
  int s = 0;
  for (int h = 0; h < task_.length; ++h) {
    double u = rng.NextDouble();
    int pick = task_.vocab;
    for (int a = 1; a <= task_.vocab; ++a) {
      u -= Probability(s, a);
      if (u < 0) {
        pick = a;
        break;
      }
    }
    out.push_back(pick);
    s = automaton_.Next(s, pick);
  }
  return out;
}

double BestOfK(double q, double k) { return 1 - std::pow(1 - q, k); }

double PassAtN(int64_t n, int64_t c, int64_t big_n) {
  SHAMMIE_CHECK(big_n >= 1 && big_n <= n && c >= 0 && c <= n);
  if (n - c < big_n) return 1.0;
  // C(n - c, N) / C(n, N) = prod_{i=0}^{N-1} (n - c - i) / (n - i)
  double fail = 1;
  for (int64_t i = 0; i < big_n; ++i) fail *= static_cast<double>(n - c - i) / static_cast<double>(n - i);
  return 1 - fail;
}

}  // namespace shammie::workers::pav
