// Estimating a mean from a few human labels and many autorater predictions,
// with every method side by side: the engine behind `shammie analyze` (CSV
// and results.h5 alike).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.hpp"

namespace shammie::analysis {

// One row per item: the human label (absent = unlabeled), the autorater's
// prediction, and optionally a stratum.
struct MeanInputs {
  std::vector<std::optional<double>> label;
  std::vector<double> prediction;
  std::vector<std::string> stratum;  // empty, or one per item
};

enum class MeanMethod { kClassical, kPpi, kPpiPlusPlus, kStratPpi, kBayesPpi };
std::string MeanMethodName(MeanMethod method);
common::Result<MeanMethod> MeanMethodFromName(const std::string& name);  // classical|ppi|ppi++|stratppi|bayes-ppi

struct MeanAnalysisOptions {
  double alpha = 0.1;
  double lambda = 1.0;        // for `ppi`
  bool clt_free = false;      // Hoeffding intervals for classical and ppi (values in [0, 1])
  size_t bins = 10;           // bayes-ppi with a continuous prediction
  size_t draws = 100000;      // bayes-ppi Monte-Carlo draws
  uint64_t seed = 0;
  std::optional<double> target_width;  // also report the labels each method needs for this width
};

struct MethodRow {
  std::string method;
  double estimate = 0, lower = 0, upper = 0;
  double effective_n = 0;           // classical-equivalent labels (0 if not defined)
  std::optional<size_t> labels_for_target;  // labels needed for target_width (width ~ 1/sqrt(n))
  std::vector<std::string> notes;
  double width() const { return upper - lower; }
};

struct MeanAnalysis {
  size_t labeled = 0, unlabeled = 0, strata = 0;
  std::vector<MethodRow> rows;
  nlohmann::json ToJson() const;
  std::string ToText() const;  // aligned table, 4+ decimals
};

common::Result<MeanAnalysis> AnalyzeMean(const MeanInputs& inputs, const std::vector<MeanMethod>& methods,
                                         const MeanAnalysisOptions& options);

}  // namespace shammie::analysis
