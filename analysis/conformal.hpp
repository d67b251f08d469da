// Conformal language modeling (Quach et al., ICLR 2024): calibrate when a
// sampling loop stops and which samples it rejects, so that the returned set
// contains an acceptable answer with probability >= 1 - epsilon, with
// probability >= 1 - delta over the calibration data. And the
// component-level variant: a threshold on component (e.g. sentence) scores
// such that all kept components are correct with the same guarantee.
//
// For one prompt, candidates y_1..y_kmax are sampled in order, each with a
// quality score Q, an admission label A (acceptable or not) and pairwise
// similarities S. A configuration (lambda1, lambda2, lambda3):
//   1. rejection: drop y_k if Q(y_k) < lambda2, or if max over earlier KEPT
//      y_j of max(S(y_k, y_j), S(y_j, y_k)) > lambda1;
//   2. set confidence F_k after k draws over the kept items: First-K = how
//      many kept, Max = max Q, Sum = sum of Q (rejected items do not count;
//      the reference code counts them as Q = 0, which differs only for
//      negative scores);
//   3. stop at the first k where max_{j<=k} F_j >= lambda3 (all kmax if never);
//   4. loss = 1 if no kept item up to the stop is admissible.
// Calibration (Learn-then-Test + Pareto Testing): split the calibration
// prompts into opt (30%) and cal; on opt, take the Pareto front of (mean
// loss, mean samples + mean set size) over a grid of configurations (each
// lambda at quantiles of its score (linspace(0, 1, grid_points), nearest
// value) plus -inf and +inf), order it by loss; on cal,
// fixed-sequence test with the exact binomial p-value BinomCDF(n L; n, eps)
// and keep the last configuration accepted before the first failure.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace shammie::analysis {

struct ClmPrompt {
  std::vector<double> quality;                  // Q of each sampled candidate, in sampling order
  std::vector<int> admissible;                  // 1 if the candidate is acceptable
  std::vector<std::vector<double>> similarity;  // symmetric kmax x kmax (may be empty: no similarity rejection)
};

enum class SetScore { kFirstK, kMax, kSum };
std::string SetScoreName(SetScore score);

struct ClmConfig {
  double similarity_threshold = std::numeric_limits<double>::infinity();  // lambda1 (+inf: off)
  double quality_threshold = -std::numeric_limits<double>::infinity();    // lambda2 (-inf: off)
  double confidence_threshold = std::numeric_limits<double>::infinity();  // lambda3 (+inf: take all)
};

struct ClmOutcome {
  int loss = 0;         // 1: no admissible item in the returned set
  size_t samples = 0;   // candidates drawn (stop index + 1)
  size_t set_size = 0;  // kept candidates returned
};

ClmOutcome EvaluateClm(const ClmPrompt& prompt, const ClmConfig& config, SetScore score);

struct ClmMetrics {
  double loss = 0;      // mean over prompts
  double samples = 0;   // mean candidates drawn
  double set_size = 0;  // mean returned set size
};
ClmMetrics EvaluateClmSet(const std::vector<ClmPrompt>& prompts, const ClmConfig& config, SetScore score);

struct ClmOptions {
  double epsilon = 0.1;
  double delta = 0.05;
  SetScore score = SetScore::kMax;
  bool reject = true;           // search lambda1 and lambda2; false: First-K style, no rejection
  double opt_fraction = 0.3;    // share of calibration prompts used to build the front
  size_t grid_points = 10;      // quantiles per lambda (plus the infinities)
  uint64_t seed = 0;            // for the opt/cal split
};

struct ClmCalibration {
  bool found = false;           // false: no configuration could be certified at (epsilon, delta)
  ClmConfig config;
  ClmMetrics cal_metrics;       // on the cal part of the calibration data
  size_t candidates = 0;        // configurations on the Pareto front that were tested
  size_t accepted = 0;
};

// Prompts must all have the same kmax >= 1; qualities finite; admissible 0/1.
common::Result<ClmCalibration> CalibrateClm(const std::vector<ClmPrompt>& calibration, const ClmOptions& options);
// The same for several epsilons at once (options.epsilon is ignored): the
// opt/cal split, the Pareto front and its losses on cal do not depend on
// epsilon, so they are computed once; only the testing differs. Element e
// equals CalibrateClm with epsilon = epsilons[e].
common::Result<std::vector<ClmCalibration>> CalibrateClmMany(const std::vector<ClmPrompt>& calibration,
                                                             const ClmOptions& options,
                                                             const std::vector<double>& epsilons);

// ---- Component level ----

struct ComponentPrompt {
  std::vector<double> score;  // one per component (e.g. sentence)
  std::vector<int> correct;   // 1 if the component is correct (not hallucinated)
};

struct ComponentCalibration {
  bool found = false;
  double threshold = std::numeric_limits<double>::infinity();  // keep components with score > threshold
  double cal_loss = 0;     // share of prompts with a kept incorrect component
  double recall = 0;       // share of correct components kept
};

// Scans thresholds from high to low (+inf, the distinct scores, -inf), fixed-sequence
// testing with the binomial p-value of the loss 1{a kept component is
// incorrect}; returns the lowest threshold accepted before the first failure.
common::Result<ComponentCalibration> CalibrateComponents(const std::vector<ComponentPrompt>& calibration,
                                                         double epsilon, double delta);

}  // namespace shammie::analysis
