#include "orchestrator/clm_analysis.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <thread>
#include <utility>

#include "analysis/clm_study.hpp"
#include "analysis/report.hpp"
#include "orchestrator/stage_tables.hpp"

namespace shammie::orchestrator {

namespace {

std::vector<std::string> Split(const std::string& text, const std::string& separator) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t at = separator.empty() ? std::string::npos : text.find(separator, start);
    if (at == std::string::npos) {
      out.push_back(text.substr(start));
      return out;
    }
    out.push_back(text.substr(start, at - start));
    start = at + separator.size();
  }
}

std::vector<double> ParseLogprobs(const std::string& text) {
  std::vector<double> out;
  std::istringstream in(text);
  for (double v; in >> v;) out.push_back(v);
  return out;
}

// The samples of one prompt, in sample order.
struct Sampled {
  std::string text, answer, token_logprobs;
  double quality = 0;
  int correct = 0;
};

struct Gathered {
  std::vector<analysis::ClmPrompt> prompts;
  std::vector<analysis::ComponentPrompt> components;
  size_t kmax = 0;
  double first_accuracy = 0;  // share of prompts whose first sample is admissible
  double any_accuracy = 0;    // share with an admissible sample among all kmax (1 - the least reachable risk)
  double component_correct = 0;  // share of correct components of the first samples
  size_t component_count = 0;
};

common::Result<Gathered> Gather(storage::ResultStore& store, const AnalysisSpec& a) {
  std::map<std::pair<std::string, int64_t>, std::map<int64_t, Sampled>> by_prompt;
  const bool components = a.components != "none";
  SHAMMIE_RETURN_IF_ERROR(ForEachStageTable(store, a, [&](const storage::Table& table, const std::string& where) {
    SHAMMIE_ASSIGN_OR_RETURN(auto prompt, NumericColumn(table, "prompt_index", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto sample, NumericColumn(table, "sample_index", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto correct, NumericColumn(table, "correct", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto logprob, NumericColumn(table, "logprob", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto tokens, NumericColumn(table, "tokens", where));
    SHAMMIE_ASSIGN_OR_RETURN(auto text, TextColumn(table, "text", where));
    std::vector<std::string> answer, token_logprobs;
    if (components) {
      auto ans = TextColumn(table, "answer", where);
      if (!ans.ok()) {
        return common::InvalidArgument(ans.status().message() +
                                       " (components need the reference answers that lm.sample stores since this "
                                       "version: run the sample stage again)");
      }
      answer = *ans;
      SHAMMIE_ASSIGN_OR_RETURN(token_logprobs, TextColumn(table, "token_logprobs", where));
    }
    for (size_t r = 0; r < prompt.size(); ++r) {
      if (!(correct[r] == 0 || correct[r] == 1)) return common::InvalidArgument(where + ": column correct must be 0 or 1");
      Sampled s;
      s.text = text[r];
      s.quality = logprob[r] / std::max(1.0, tokens[r]);
      s.correct = static_cast<int>(correct[r]);
      if (components) {
        s.answer = answer[r];
        s.token_logprobs = token_logprobs[r];
      }
      auto& slot = by_prompt[{where, static_cast<int64_t>(prompt[r])}];
      if (!slot.emplace(static_cast<int64_t>(sample[r]), std::move(s)).second) {
        return common::InvalidArgument(where + ": prompt " + std::to_string(static_cast<int64_t>(prompt[r])) +
                                       " has sample " + std::to_string(static_cast<int64_t>(sample[r])) + " twice");
      }
    }
    return common::Status::Ok();
  }));
  Gathered g;
  g.kmax = by_prompt.begin()->second.size();
  size_t correct_components = 0;
  for (const auto& [key, samples] : by_prompt) {
    if (samples.size() != g.kmax) {
      return common::InvalidArgument(key.first + ": prompt " + std::to_string(key.second) + " has " +
                                     std::to_string(samples.size()) + " samples, others " + std::to_string(g.kmax) +
                                     " (every prompt needs the same number)");
    }
    std::vector<const Sampled*> s;
    for (const auto& [index, one] : samples) s.push_back(&one);
    analysis::ClmPrompt p;
    p.similarity.assign(g.kmax, std::vector<double>(g.kmax, 1.0));
    for (size_t i = 0; i < g.kmax; ++i) {
      p.quality.push_back(s[i]->quality);
      p.admissible.push_back(s[i]->correct);
      for (size_t j = 0; j < i; ++j) p.similarity[i][j] = p.similarity[j][i] = analysis::RougeL(s[i]->text, s[j]->text);
    }
    g.first_accuracy += p.admissible.front();
    g.any_accuracy += std::any_of(p.admissible.begin(), p.admissible.end(), [](int v) { return v == 1; }) ? 1 : 0;
    g.prompts.push_back(std::move(p));
    if (!components) continue;
    // Components: the steps of the first sample, checked against the
    // reference answer's steps at the same position.
    const std::vector<std::string> steps = Split(s[0]->text, a.separator);
    const std::vector<std::string> reference = Split(s[0]->answer, a.separator);
    std::vector<std::vector<std::string>> others;
    for (const Sampled* x : s) others.push_back(Split(x->text, a.separator));
    const std::vector<double> lps = ParseLogprobs(s[0]->token_logprobs);
    analysis::ComponentPrompt c;
    size_t offset = 0;  // character (= token) offset of the step in the first sample
    for (size_t j = 0; j < steps.size(); ++j) {
      c.correct.push_back(j < reference.size() && steps[j] == reference[j] ? 1 : 0);
      correct_components += static_cast<size_t>(c.correct.back());
      if (a.components == "frequency") {
        size_t agree = 0;
        for (const auto& o : others) agree += j < o.size() && o[j] == steps[j] ? 1 : 0;
        c.score.push_back(static_cast<double>(agree) / static_cast<double>(g.kmax));
      } else {
        // The least likely token of the step (the separator after it included,
        // as it closes the step); one token per character.
        double lowest = 0;
        const size_t end = std::min(lps.size(), offset + steps[j].size() + a.separator.size());
        for (size_t t = offset; t < end; ++t) lowest = std::min(lowest, lps[t]);
        c.score.push_back(lowest);
      }
      offset += steps[j].size() + a.separator.size();
    }
    g.component_count += steps.size();
    g.components.push_back(std::move(c));
  }
  const double n = static_cast<double>(g.prompts.size());
  g.first_accuracy /= n;
  g.any_accuracy /= n;
  g.component_correct = g.component_count ? static_cast<double>(correct_components) / static_cast<double>(g.component_count) : 0;
  return g;
}

std::string Fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

common::Result<nlohmann::json> AnalyzeClm(storage::ResultStore& store, const AnalysisSpec& a,
                                          const std::string& report_dir, const std::string& title, std::ostream& out) {
  SHAMMIE_ASSIGN_OR_RETURN(Gathered g, Gather(store, a));
  analysis::ClmTrialOptions o;
  o.epsilons = a.epsilons;
  o.delta = a.delta;
  o.trials = static_cast<size_t>(a.trials);
  o.calibration_fraction = a.calibration;
  o.grid_points = static_cast<size_t>(a.grid_points);
  o.seed = static_cast<uint64_t>(a.seed);
  o.threads = std::max(1u, std::thread::hardware_concurrency());
  SHAMMIE_ASSIGN_OR_RETURN(std::vector<analysis::ClmTrialRow> rows, analysis::RunClmTrials(g.prompts, o));

  char line[256];
  out << g.prompts.size() << " prompts x " << g.kmax << " samples; first sample acceptable " << Fixed(g.first_accuracy, 3)
      << ", some sample acceptable " << Fixed(g.any_accuracy, 3) << " (no epsilon below " << Fixed(1 - g.any_accuracy, 3)
      << " is reachable)\n"
      << a.trials << " random splits, " << Fixed(a.calibration, 2) << " of the prompts calibrate; delta = " << a.delta
      << "; violation = share of splits whose test risk exceeds epsilon\n";
  // The test part's own sampling noise: a configuration whose true risk sits
  // just below epsilon shows a test risk above it about half the time, and
  // splits of one pool are not independent draws (a lucky calibration part
  // leaves an unlucky test part). The guarantee itself is checked on fresh
  // data in tests/analysis/clm_study_test.cpp.
  const double n_test = std::floor(static_cast<double>(g.prompts.size()) * (1 - a.calibration));
  const double e_mid = a.epsilons[a.epsilons.size() / 2];
  out << "test parts of " << n_test << " prompts: a test risk has standard error "
      << Fixed(std::sqrt(e_mid * (1 - e_mid) / std::max(1.0, n_test)), 4) << " at epsilon = " << e_mid
      << ", so violation shares slightly above delta can be test noise\n";
  std::snprintf(line, sizeof line, "%-16s %8s %10s %10s %8s %8s %9s\n", "method", "epsilon", "certified", "violation",
                "risk", "samples", "set_size");
  out << line;
  storage::Table table;
  std::vector<std::string> method;
  std::vector<double> epsilon, violation, risk, samples, set_size;
  std::vector<int64_t> certified;
  nlohmann::json json_rows = nlohmann::json::array();
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%-16s %8.3f %6zu/%-3zu %10.3f %8.3f %8.2f %9.2f\n", r.method.c_str(), r.epsilon,
                  r.certified, r.trials, r.violation_rate, r.risk, r.samples, r.set_size);
    out << line;
    method.push_back(r.method);
    epsilon.push_back(r.epsilon);
    certified.push_back(static_cast<int64_t>(r.certified));
    violation.push_back(r.violation_rate);
    risk.push_back(r.risk);
    samples.push_back(r.samples);
    set_size.push_back(r.set_size);
    json_rows.push_back({{"method", r.method}, {"epsilon", r.epsilon}, {"trials", r.trials}, {"certified", r.certified},
                         {"violation_rate", r.violation_rate}, {"risk", r.risk}, {"samples", r.samples},
                         {"set_size", r.set_size}});
  }
  table.columns = {{"method", method},       {"epsilon", epsilon}, {"certified", certified}, {"violation_rate", violation},
                   {"risk", risk},           {"samples", samples}, {"set_size", set_size}};
  SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis(a.name, a.parameters.dump(), table));
  nlohmann::json result = {{"prompts", g.prompts.size()}, {"kmax", g.kmax}, {"first_accuracy", g.first_accuracy},
                           {"any_accuracy", g.any_accuracy}, {"rows", json_rows}};

  std::vector<analysis::ComponentTrialRow> component_rows;
  if (a.components != "none") {
    SHAMMIE_ASSIGN_OR_RETURN(component_rows, analysis::RunComponentTrials(g.components, o));
    out << "\ncomponents (steps split at \"" << a.separator << "\" of each prompt's first sample, scored by "
        << a.components << "): " << g.component_count << " steps, " << Fixed(g.component_correct, 3)
        << " correct; risk = share of prompts with a kept incorrect step\n";
    std::snprintf(line, sizeof line, "%8s %10s %10s %8s %8s\n", "epsilon", "certified", "violation", "risk", "recall");
    out << line;
    std::vector<double> c_eps, c_violation, c_risk, c_recall;
    std::vector<int64_t> c_certified;
    nlohmann::json c_json = nlohmann::json::array();
    for (const auto& r : component_rows) {
      std::snprintf(line, sizeof line, "%8.3f %6zu/%-3zu %10.3f %8.3f %8.3f\n", r.epsilon, r.certified, r.trials,
                    r.violation_rate, r.risk, r.recall);
      out << line;
      c_eps.push_back(r.epsilon);
      c_certified.push_back(static_cast<int64_t>(r.certified));
      c_violation.push_back(r.violation_rate);
      c_risk.push_back(r.risk);
      c_recall.push_back(r.recall);
      c_json.push_back({{"epsilon", r.epsilon}, {"trials", r.trials}, {"certified", r.certified},
                        {"violation_rate", r.violation_rate}, {"risk", r.risk}, {"recall", r.recall}});
    }
    storage::Table ct;
    ct.columns = {{"epsilon", c_eps}, {"certified", c_certified}, {"violation_rate", c_violation}, {"risk", c_risk},
                  {"recall", c_recall}};
    SHAMMIE_RETURN_IF_ERROR(store.WriteAnalysis(a.name + "-components", a.parameters.dump(), ct));
    result["components"] = {{"steps", g.component_count}, {"correct", g.component_correct}, {"rows", c_json}};
  }

  if (!report_dir.empty()) {
    std::vector<std::string> x;
    for (double e : a.epsilons) x.push_back(Fixed(e, 2));
    auto series_of = [&](double analysis::ClmTrialRow::*field) {
      std::vector<std::pair<std::string, std::vector<double>>> series;
      for (const auto& m : analysis::ClmMethods()) {
        std::vector<double> ys;
        for (const auto& r : rows) {
          if (r.method == m.name) ys.push_back(r.certified ? r.*field : std::nan(""));
        }
        series.emplace_back(m.name, std::move(ys));
      }
      return series;
    };
    auto risk_series = series_of(&analysis::ClmTrialRow::risk);
    risk_series.emplace_back("epsilon", a.epsilons);
    SHAMMIE_RETURN_IF_ERROR(analysis::PlotCurves(x, risk_series, "test risk", a.name + "-risk", title + ": risk vs epsilon", report_dir));
    SHAMMIE_RETURN_IF_ERROR(analysis::PlotCurves(x, series_of(&analysis::ClmTrialRow::set_size), "set size",
                                                 a.name + "-set-size", title + ": set size vs epsilon", report_dir));
    SHAMMIE_RETURN_IF_ERROR(analysis::PlotCurves(x, series_of(&analysis::ClmTrialRow::samples), "samples drawn",
                                                 a.name + "-samples", title + ": samples vs epsilon", report_dir));
    if (!component_rows.empty()) {
      std::vector<double> r_risk, r_recall;
      for (const auto& r : component_rows) {
        r_risk.push_back(r.certified ? r.risk : std::nan(""));
        r_recall.push_back(r.certified ? r.recall : std::nan(""));
      }
      SHAMMIE_RETURN_IF_ERROR(analysis::PlotCurves(
          x, {{"risk", r_risk}, {"recall", r_recall}, {"epsilon", a.epsilons}}, "share",
          a.name + "-components", title + ": components vs epsilon", report_dir));
    }
  }
  return result;
}

}  // namespace shammie::orchestrator
