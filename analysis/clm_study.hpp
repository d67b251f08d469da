// Conformal language modeling as an experiment (Quach et al., ICLR 2024;
// PAPERS.md §10(e)): calibrate on one random part of the prompts, measure on
// the rest, and repeat over many random splits, so the guarantee
//   P_cal( risk of the calibrated configuration <= epsilon ) >= 1 - delta
// can be checked by simulation: the share of splits whose test risk exceeds
// epsilon must stay near or below delta. Per epsilon and per method (set
// score First-K / Max / Sum, without and with rejection) the study reports
// that share, the realised risk, the samples drawn and the set size.
//
// The component-level variant does the same for CalibrateComponents: the
// returned components of one output are all correct with probability
// >= 1 - epsilon.
//
// Also the builders the sampled text needs: a ROUGE-L similarity between two
// samples and the per-component view of a multi-step answer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/conformal.hpp"
#include "common/status.hpp"

namespace shammie::analysis {

struct ClmMethod {
  std::string name;  // e.g. "max+reject"
  SetScore score = SetScore::kFirstK;
  bool reject = false;
};
// First-K, Max and Sum, each without and with rejection.
const std::vector<ClmMethod>& ClmMethods();

struct ClmTrialOptions {
  std::vector<double> epsilons;      // each in (0, 1)
  double delta = 0.05;
  size_t trials = 100;               // random calibration/test splits
  double calibration_fraction = 0.5; // share of prompts that calibrate; the rest test
  double opt_fraction = 0.3;         // of the calibration prompts, to build the Pareto front
  size_t grid_points = 10;
  uint64_t seed = 0;
  size_t threads = 1;                // trials run in parallel (results do not depend on it)
};

struct ClmTrialRow {
  std::string method;
  double epsilon = 0;
  size_t trials = 0;
  size_t certified = 0;         // trials where some configuration passed the test
  double violation_rate = 0;    // share of trials: certified and test risk > epsilon
  double risk = 0;              // mean test risk over certified trials
  double samples = 0;           // mean candidates drawn per test prompt (certified trials)
  double set_size = 0;          // mean returned set size (certified trials)
};

// Rows ordered by method (ClmMethods() order), then epsilon.
common::Result<std::vector<ClmTrialRow>> RunClmTrials(const std::vector<ClmPrompt>& prompts,
                                                      const ClmTrialOptions& options);

struct ComponentTrialRow {
  double epsilon = 0;
  size_t trials = 0;
  size_t certified = 0;
  double violation_rate = 0;    // share of trials: certified and test risk > epsilon
  double risk = 0;              // share of test prompts with a kept incorrect component (certified trials)
  double recall = 0;            // share of correct components kept (certified trials)
};

// Uses calibration_fraction, delta, trials, seed and threads of `options`.
common::Result<std::vector<ComponentTrialRow>> RunComponentTrials(const std::vector<ComponentPrompt>& prompts,
                                                                  const ClmTrialOptions& options);

// ROUGE-L F-measure of two strings over characters: with l the length of
// their longest common subsequence, 2l / (|a| + |b|); 1 for two empty strings.
double RougeL(std::string_view a, std::string_view b);

}  // namespace shammie::analysis
