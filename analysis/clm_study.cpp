#include "analysis/clm_study.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <numeric>
#include <thread>

#include "common/random.hpp"

namespace shammie::analysis {

const std::vector<ClmMethod>& ClmMethods() {
  static const std::vector<ClmMethod> methods = {
      {"first-k", SetScore::kFirstK, false}, {"max", SetScore::kMax, false},
      {"sum", SetScore::kSum, false},        {"first-k+reject", SetScore::kFirstK, true},
      {"max+reject", SetScore::kMax, true},  {"sum+reject", SetScore::kSum, true},
  };
  return methods;
}

namespace {

common::Status CheckTrialOptions(const ClmTrialOptions& o, size_t prompts) {
  if (o.epsilons.empty()) return common::InvalidArgument("no epsilon to calibrate for");
  for (double e : o.epsilons) {
    if (!(e > 0 && e < 1)) return common::InvalidArgument("every epsilon must be in (0, 1)");
  }
  if (!(o.delta > 0 && o.delta < 1)) return common::InvalidArgument("delta must be in (0, 1)");
  if (o.trials < 1) return common::InvalidArgument("need at least one trial");
  if (!(o.calibration_fraction > 0 && o.calibration_fraction < 1)) {
    return common::InvalidArgument("calibration_fraction must be in (0, 1)");
  }
  const double n_cal = std::floor(o.calibration_fraction * static_cast<double>(prompts));
  if (n_cal < 2 || n_cal >= static_cast<double>(prompts)) {
    return common::InvalidArgument("too few prompts (" + std::to_string(prompts) +
                                   ") to split into calibration and test parts");
  }
  return common::Status::Ok();
}

// Trial t's permutation of 0..n-1 (seeded Fisher-Yates).
std::vector<size_t> TrialOrder(size_t n, uint64_t seed, size_t trial) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  common::SplitMix64 rng(common::DeriveSeed(seed, "clm-split", trial));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(i) - 1))]);
  return order;
}

// Runs body(trial) for every trial on `threads` threads; the first error wins.
common::Status ForEachTrial(size_t trials, size_t threads, const std::function<common::Status(size_t)>& body) {
  std::atomic<size_t> next{0};
  std::vector<common::Status> errors(trials, common::Status::Ok());
  auto work = [&] {
    for (size_t t; (t = next.fetch_add(1)) < trials;) errors[t] = body(t);
  };
  std::vector<std::thread> pool;
  for (size_t i = 1; i < std::max<size_t>(1, std::min(threads, trials)); ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  for (auto& e : errors) {
    if (!e.ok()) return e;
  }
  return common::Status::Ok();
}

}  // namespace

common::Result<std::vector<ClmTrialRow>> RunClmTrials(const std::vector<ClmPrompt>& prompts,
                                                      const ClmTrialOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckTrialOptions(options, prompts.size()));
  const auto& methods = ClmMethods();
  const size_t n_eps = options.epsilons.size();
  const size_t n_cal = static_cast<size_t>(std::floor(options.calibration_fraction * static_cast<double>(prompts.size())));
  // per[trial][method][epsilon]: (found, metrics on test)
  struct Cell {
    bool found = false;
    ClmMetrics test;
  };
  std::vector<std::vector<std::vector<Cell>>> per(options.trials,
                                                  std::vector<std::vector<Cell>>(methods.size(), std::vector<Cell>(n_eps)));
  SHAMMIE_RETURN_IF_ERROR(ForEachTrial(options.trials, options.threads, [&](size_t trial) -> common::Status {
    const std::vector<size_t> order = TrialOrder(prompts.size(), options.seed, trial);
    std::vector<ClmPrompt> cal, test;
    for (size_t i = 0; i < order.size(); ++i) (i < n_cal ? cal : test).push_back(prompts[order[i]]);
    for (size_t m = 0; m < methods.size(); ++m) {
      ClmOptions o;
      o.delta = options.delta;
      o.score = methods[m].score;
      o.reject = methods[m].reject;
      o.opt_fraction = options.opt_fraction;
      o.grid_points = options.grid_points;
      o.seed = common::DeriveSeed(options.seed, "clm-opt", trial);
      SHAMMIE_ASSIGN_OR_RETURN(std::vector<ClmCalibration> c, CalibrateClmMany(cal, o, options.epsilons));
      for (size_t e = 0; e < n_eps; ++e) {
        per[trial][m][e].found = c[e].found;
        if (c[e].found) per[trial][m][e].test = EvaluateClmSet(test, c[e].config, methods[m].score);
      }
    }
    return common::Status::Ok();
  }));
  std::vector<ClmTrialRow> rows;
  for (size_t m = 0; m < methods.size(); ++m) {
    for (size_t e = 0; e < n_eps; ++e) {
      ClmTrialRow r;
      r.method = methods[m].name;
      r.epsilon = options.epsilons[e];
      r.trials = options.trials;
      size_t violations = 0;
      for (size_t t = 0; t < options.trials; ++t) {
        const Cell& c = per[t][m][e];
        if (!c.found) continue;
        ++r.certified;
        violations += c.test.loss > r.epsilon ? 1 : 0;
        r.risk += c.test.loss;
        r.samples += c.test.samples;
        r.set_size += c.test.set_size;
      }
      r.violation_rate = static_cast<double>(violations) / static_cast<double>(r.trials);
      if (r.certified > 0) {
        const double k = static_cast<double>(r.certified);
        r.risk /= k;
        r.samples /= k;
        r.set_size /= k;
      }
      rows.push_back(r);
    }
  }
  return rows;
}

common::Result<std::vector<ComponentTrialRow>> RunComponentTrials(const std::vector<ComponentPrompt>& prompts,
                                                                  const ClmTrialOptions& options) {
  SHAMMIE_RETURN_IF_ERROR(CheckTrialOptions(options, prompts.size()));
  const size_t n_eps = options.epsilons.size();
  const size_t n_cal = static_cast<size_t>(std::floor(options.calibration_fraction * static_cast<double>(prompts.size())));
  struct Cell {
    bool found = false;
    double risk = 0, recall = 0;
  };
  std::vector<std::vector<Cell>> per(options.trials, std::vector<Cell>(n_eps));
  SHAMMIE_RETURN_IF_ERROR(ForEachTrial(options.trials, options.threads, [&](size_t trial) -> common::Status {
    const std::vector<size_t> order = TrialOrder(prompts.size(), options.seed, trial);
    std::vector<ComponentPrompt> cal;
    std::vector<const ComponentPrompt*> test;
    for (size_t i = 0; i < order.size(); ++i) {
      if (i < n_cal) {
        cal.push_back(prompts[order[i]]);
      } else {
        test.push_back(&prompts[order[i]]);
      }
    }
    for (size_t e = 0; e < n_eps; ++e) {
      SHAMMIE_ASSIGN_OR_RETURN(ComponentCalibration c, CalibrateComponents(cal, options.epsilons[e], options.delta));
      Cell& cell = per[trial][e];
      cell.found = c.found;
      if (!c.found) continue;
      size_t bad = 0, correct = 0, kept_correct = 0;
      for (const ComponentPrompt* p : test) {
        bool wrong = false;
        for (size_t j = 0; j < p->score.size(); ++j) {
          const bool kept = p->score[j] > c.threshold;
          wrong |= kept && p->correct[j] == 0;
          correct += static_cast<size_t>(p->correct[j]);
          kept_correct += kept && p->correct[j] == 1 ? 1 : 0;
        }
        bad += wrong ? 1 : 0;
      }
      cell.risk = static_cast<double>(bad) / static_cast<double>(test.size());
      cell.recall = correct > 0 ? static_cast<double>(kept_correct) / static_cast<double>(correct) : 0;
    }
    return common::Status::Ok();
  }));
  std::vector<ComponentTrialRow> rows;
  for (size_t e = 0; e < n_eps; ++e) {
    ComponentTrialRow r;
    r.epsilon = options.epsilons[e];
    r.trials = options.trials;
    size_t violations = 0;
    for (size_t t = 0; t < options.trials; ++t) {
      const Cell& c = per[t][e];
      if (!c.found) continue;
      ++r.certified;
      violations += c.risk > r.epsilon ? 1 : 0;
      r.risk += c.risk;
      r.recall += c.recall;
    }
    r.violation_rate = static_cast<double>(violations) / static_cast<double>(r.trials);
    if (r.certified > 0) {
      r.risk /= static_cast<double>(r.certified);
      r.recall /= static_cast<double>(r.certified);
    }
    rows.push_back(r);
  }
  return rows;
}

double RougeL(std::string_view a, std::string_view b) {
  if (a.empty() && b.empty()) return 1.0;
  if (a.empty() || b.empty()) return 0.0;
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return 2.0 * static_cast<double>(prev[b.size()]) / static_cast<double>(a.size() + b.size());
}

}  // namespace shammie::analysis
