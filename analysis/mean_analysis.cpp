#include "analysis/mean_analysis.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "analysis/bayes_ppi.hpp"
#include "analysis/ppi.hpp"

namespace shammie::analysis {

std::string MeanMethodName(MeanMethod method) {
  switch (method) {
    case MeanMethod::kClassical: return "classical";
    case MeanMethod::kPpi: return "ppi";
    case MeanMethod::kPpiPlusPlus: return "ppi++";
    case MeanMethod::kStratPpi: return "stratppi";
    case MeanMethod::kBayesPpi: return "bayes-ppi";
  }
  return "?";
}

common::Result<MeanMethod> MeanMethodFromName(const std::string& name) {
  for (MeanMethod m : {MeanMethod::kClassical, MeanMethod::kPpi, MeanMethod::kPpiPlusPlus, MeanMethod::kStratPpi,
                       MeanMethod::kBayesPpi}) {
    if (MeanMethodName(m) == name) return m;
  }
  return common::InvalidArgument("unknown method \"" + name + "\"; use classical, ppi, ppi++, stratppi or bayes-ppi");
}

namespace {

MethodRow FromEstimate(const MeanEstimate& e) {
  MethodRow r;
  r.method = e.method;
  r.estimate = e.estimate;
  r.lower = e.lower;
  r.upper = e.upper;
  r.effective_n = e.effective_n;
  r.notes = e.notes;
  return r;
}

bool AllIntegers(const std::vector<double>& v) {
  for (double x : v) {
    if (x != std::floor(x) || std::abs(x) > 1e15) return false;
  }
  return true;
}

}  // namespace

common::Result<MeanAnalysis> AnalyzeMean(const MeanInputs& inputs, const std::vector<MeanMethod>& methods,
                                         const MeanAnalysisOptions& options) {
  if (inputs.label.size() != inputs.prediction.size()) {
    return common::InvalidArgument("labels and predictions differ in length");
  }
  if (!inputs.stratum.empty() && inputs.stratum.size() != inputs.label.size()) {
    return common::InvalidArgument("strata and predictions differ in length");
  }
  if (methods.empty()) return common::InvalidArgument("no method to run");
  SHAMMIE_RETURN_IF_ERROR(CheckFinite(inputs.prediction, "predictions"));
  if (options.target_width && !(*options.target_width > 0)) return common::InvalidArgument("target width must be > 0");
  std::vector<double> y, f, fu;
  std::map<std::string, Stratum> by_stratum;
  for (size_t i = 0; i < inputs.label.size(); ++i) {
    Stratum* s = nullptr;
    if (!inputs.stratum.empty()) {
      s = &by_stratum[inputs.stratum[i]];
      s->name = inputs.stratum[i];
      s->weight += 1;
    }
    if (inputs.label[i]) {
      y.push_back(*inputs.label[i]);
      f.push_back(inputs.prediction[i]);
      if (s) {
        s->y.push_back(*inputs.label[i]);
        s->f.push_back(inputs.prediction[i]);
      }
    } else {
      fu.push_back(inputs.prediction[i]);
      if (s) s->f_unlabeled.push_back(inputs.prediction[i]);
    }
  }
  MeanAnalysis out;
  out.labeled = y.size();
  out.unlabeled = fu.size();
  out.strata = by_stratum.size();
  const IntervalKind interval = options.clt_free ? IntervalKind::kHoeffding : IntervalKind::kNormal;
  for (MeanMethod method : methods) {
    const std::string name = MeanMethodName(method);
    MethodRow row;
    switch (method) {
      case MeanMethod::kClassical: {
        auto e = ClassicalMean(y, options.alpha, interval);
        if (!e.ok()) return e.status().WithContext(name);
        row = FromEstimate(*e);
        break;
      }
      case MeanMethod::kPpi:
      case MeanMethod::kPpiPlusPlus: {
        PpiOptions o;
        o.lambda_mode = method == MeanMethod::kPpi ? LambdaMode::kFixed : LambdaMode::kTunedClip;
        o.lambda = options.lambda;
        o.interval = interval;
        auto e = PpiMean(y, f, fu, options.alpha, o);
        if (!e.ok()) return e.status().WithContext(name);
        row = FromEstimate(*e);
        break;
      }
      case MeanMethod::kStratPpi: {
        if (by_stratum.empty()) return common::InvalidArgument("stratppi needs strata (a strata column)");
        if (options.clt_free) return common::InvalidArgument("stratppi has no CLT-free interval");
        std::vector<Stratum> strata;
        for (auto& [key, s] : by_stratum) {
          Stratum copy = s;
          copy.weight = s.weight / static_cast<double>(inputs.label.size());
          strata.push_back(std::move(copy));
        }
        // Shares of all rows: renormalize so rounding cannot break the sum-to-one check.
        double total = 0;
        for (const auto& s : strata) total += s.weight;
        for (auto& s : strata) s.weight /= total;
        auto e = StratifiedPpiMean(strata, options.alpha);
        if (!e.ok()) return e.status().WithContext(name);
        row = FromEstimate(e->combined);
        break;
      }
      case MeanMethod::kBayesPpi: {
        BayesOptions o;
        o.draws = options.draws;
        o.seed = options.seed;
        common::Result<BayesEstimate> e = common::Internal("unset");
        if (AllIntegers(f) && AllIntegers(fu)) {
          std::vector<int64_t> a(f.begin(), f.end()), au(fu.begin(), fu.end());
          e = ChainRuleMean(a, y, au, options.alpha, o);
        } else {
          e = BinnedChainRuleMean(f, y, fu, options.bins, options.alpha, o);
        }
        if (!e.ok()) return e.status().WithContext(name);
        row.method = e->method;
        row.estimate = e->posterior_mean;
        row.lower = e->lower;
        row.upper = e->upper;
        row.notes = e->notes;
        double var_y = 0, mean_y = 0;
        for (double v : y) mean_y += v / static_cast<double>(y.size());
        for (double v : y) var_y += (v - mean_y) * (v - mean_y) / static_cast<double>(y.size() - 1);
        row.effective_n = e->posterior_sd > 0 ? var_y / (e->posterior_sd * e->posterior_sd) : 0;
        break;
      }
    }
    if (options.target_width && row.width() > 0) {
      row.labels_for_target = static_cast<size_t>(
          std::ceil(static_cast<double>(y.size()) * std::pow(row.width() / *options.target_width, 2)));
    }
    out.rows.push_back(std::move(row));
  }
  return out;
}

nlohmann::json MeanAnalysis::ToJson() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json j = {{"method", r.method}, {"estimate", r.estimate}, {"lower", r.lower},
                        {"upper", r.upper},   {"width", r.width()},     {"effective_n", r.effective_n},
                        {"notes", r.notes}};
    j["labels_for_target_width"] = r.labels_for_target ? nlohmann::json(*r.labels_for_target) : nlohmann::json(nullptr);
    rows_json.push_back(j);
  }
  return {{"labeled", labeled}, {"unlabeled", unlabeled}, {"strata", strata}, {"methods", rows_json}};
}

std::string MeanAnalysis::ToText() const {
  std::ostringstream os;
  os << labeled << " labeled, " << unlabeled << " unlabeled";
  if (strata > 0) os << ", " << strata << " strata";
  os << "\n";
  const bool budget = !rows.empty() && rows.front().labels_for_target.has_value();
  char line[256];
  std::snprintf(line, sizeof(line), "%-20s %10s %10s %10s %10s %12s%s\n", "method", "estimate", "lower", "upper", "width",
                "effective_n", budget ? "  labels_for_target" : "");
  os << line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof(line), "%-20s %10.4f %10.4f %10.4f %10.4f %12.1f", r.method.c_str(), r.estimate, r.lower,
                  r.upper, r.width(), r.effective_n);
    os << line;
    if (r.labels_for_target) os << "  " << *r.labels_for_target;
    os << "\n";
  }
  for (const auto& r : rows) {
    for (const auto& note : r.notes) os << "note: " << r.method << ": " << note << "\n";
  }
  return os.str();
}

}  // namespace shammie::analysis
