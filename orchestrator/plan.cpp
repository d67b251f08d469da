#include "orchestrator/plan.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "common/hash.hpp"
#include "common/random.hpp"
#include "orchestrator/continual.hpp"
#include "orchestrator/spec_schema.hpp"

namespace shammie::orchestrator {

using nlohmann::json;

std::string JobId(const std::string& kind, const json& config, int64_t seed,
                  const std::vector<std::string>& sorted_inputs) {
  json doc = {{"v", 1}, {"kind", kind}, {"config", config}, {"seed", seed}, {"inputs", sorted_inputs}};
  return common::Hash128Hex(common::CanonicalJson(doc));
}

std::string PlannedJob::Label() const {
  std::string out = stage + "[";
  bool first = true;
  for (const auto& [key, value] : point.items()) {
    out += (first ? "" : " ") + key + "=" + (value.is_string() ? value.get<std::string>() : value.dump());
    first = false;
  }
  out += (first ? "#" : " #") + std::to_string(replicate) + "]";
  return out;
}

namespace {

// Every point of a stage's own sweep (without `over`), as key -> value maps,
// in a fixed order: grid (last key fastest) x zip rows x random samples.
std::vector<json> SweepPoints(const ExperimentSpec& spec, const Stage& stage) {
  std::vector<json> points = {json::object()};
  for (const auto& axis : stage.sweep.grid) {
    std::vector<json> next;
    for (const auto& p : points) {
      for (const auto& v : axis.values) {
        json q = p;
        q[axis.key] = v;
        next.push_back(std::move(q));
      }
    }
    points = std::move(next);
  }
  if (!stage.sweep.zip.empty()) {
    std::vector<json> next;
    for (const auto& p : points) {
      for (size_t row = 0; row < stage.sweep.zip.front().values.size(); ++row) {
        json q = p;
        for (const auto& axis : stage.sweep.zip) q[axis.key] = axis.values[row];
        next.push_back(std::move(q));
      }
    }
    points = std::move(next);
  }
  if (stage.sweep.random_samples > 0) {
    common::SplitMix64 rng(common::DeriveSeed(static_cast<uint64_t>(spec.seed), "sweep.random:" + stage.name, 0));
    std::vector<json> samples;
    for (int64_t s = 0; s < stage.sweep.random_samples; ++s) {
      json sample = json::object();
      for (const auto& axis : stage.sweep.random) {  // sorted by key
        using D = RandomAxis::Distribution;
        switch (axis.distribution) {
          case D::kUniform: sample[axis.key] = axis.lo + rng.NextDouble() * (axis.hi - axis.lo); break;
          case D::kLogUniform:
            sample[axis.key] = std::exp(std::log(axis.lo) + rng.NextDouble() * (std::log(axis.hi) - std::log(axis.lo)));
            break;
          case D::kIntUniform:
            sample[axis.key] = rng.NextInt(static_cast<int64_t>(axis.lo), static_cast<int64_t>(axis.hi));
            break;
          case D::kChoice:
            sample[axis.key] = axis.choices[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(axis.choices.size()) - 1))];
            break;
        }
      }
      samples.push_back(std::move(sample));
    }
    std::vector<json> next;
    for (const auto& p : points) {
      for (const auto& sample : samples) {
        json q = p;
        q.update(sample);
        next.push_back(std::move(q));
      }
    }
    points = std::move(next);
  }
  return points;
}

}  // namespace

common::Result<Plan> BuildPlan(const ExperimentSpec& spec) {
  Plan plan;
  plan.experiment = spec.name;
  plan.spec_hash = spec.spec_hash;
  std::map<std::string, std::vector<size_t>> stage_jobs;  // stage -> indices into plan.jobs
  std::map<std::string, size_t> by_id;
  // For per-lineage fan-in: each stage's upstream stages, and each job's
  // upstream jobs of `over` stages (indices into plan.jobs), transitively.
  std::map<std::string, std::set<std::string>> stage_ancestors;
  std::map<size_t, std::set<size_t>> job_ancestors;
  bool lineage = false;  // whether some stage needs job_ancestors
  std::set<std::string> over_stages;  // job_ancestors keeps only their jobs
  for (const Stage& stage : spec.stages) {
    over_stages.insert(stage.sweep.over.begin(), stage.sweep.over.end());
    for (const auto& dep : stage.depends_on) {
      stage_ancestors[stage.name].insert(dep);
      stage_ancestors[stage.name].insert(stage_ancestors[dep].begin(), stage_ancestors[dep].end());
      for (const auto& over : stage.sweep.over) lineage = lineage || (over != dep && stage_ancestors[dep].count(over));
    }
  }
  const int64_t kMaxJobs = kMaxJobsPerStage * 10;

  for (const Stage& stage : spec.stages) {
    if (stage.sweep.adaptive.adaptive()) plan.unsplit_stages.push_back(stage.name);
    // Upstream combinations for `over`: the cartesian product of their jobs.
    std::vector<std::vector<size_t>> combos = {{}};
    for (const auto& over : stage.sweep.over) {
      std::vector<std::vector<size_t>> next;
      for (const auto& c : combos) {
        for (size_t j : stage_jobs[over]) {
          auto d = c;
          d.push_back(j);
          next.push_back(std::move(d));
        }
      }
      combos = std::move(next);
    }
    // Non-`over` dependencies are fan-in: every job of theirs, except that a
    // stage downstream of an `over` stage gives each combination only the
    // jobs descending from that combination's job of it (per-lineage fan-in).
    auto fan_in = [&](const std::vector<size_t>& combo) {
      std::vector<std::string> inputs;
      for (const auto& dep : stage.depends_on) {
        if (std::find(stage.sweep.over.begin(), stage.sweep.over.end(), dep) != stage.sweep.over.end()) continue;
        for (size_t j : stage_jobs[dep]) {
          bool same_lineage = true;
          for (size_t o = 0; o < combo.size() && same_lineage; ++o) {
            if (stage_ancestors[dep].count(stage.sweep.over[o])) same_lineage = job_ancestors[j].count(combo[o]) > 0;
          }
          if (same_lineage) inputs.push_back(plan.jobs[j].id);
        }
      }
      return inputs;
    };
    const std::vector<json> points = SweepPoints(spec, stage);
    const int64_t count = static_cast<int64_t>(combos.size() * points.size()) * stage.sweep.seeds;
    if (count + static_cast<int64_t>(plan.jobs.size()) > kMaxJobs) {
      return common::InvalidArgument("stage " + stage.name + " would bring the plan above " +
                                     std::to_string(kMaxJobs) + " jobs; shrink the sweep");
    }
    auto& mine = stage_jobs[stage.name];
    for (const auto& combo : combos) {
      std::vector<std::string> inputs = fan_in(combo);
      for (size_t j : combo) inputs.push_back(plan.jobs[j].id);
      std::sort(inputs.begin(), inputs.end());
      inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());
      for (const auto& point : points) {
        for (int64_t r = 0; r < stage.sweep.seeds; ++r) {
          PlannedJob job;
          job.stage = stage.name;
          job.kind = stage.kind;
          job.config = stage.config;
          job.config.update(point);
          job.point = point;
          job.replicate = r;
          job.seed = static_cast<int64_t>(common::DeriveSeed(static_cast<uint64_t>(spec.seed), stage.name,
                                                             static_cast<uint64_t>(r)));
          job.inputs = inputs;
          job.resources = stage.resources;
          job.retry = stage.retry;
          job.id = JobId(job.kind, job.config, job.seed, job.inputs);
          if (auto it = by_id.find(job.id); it != by_id.end()) {
            ++plan.duplicates_merged;
            mine.push_back(it->second);
            continue;
          }
          if (lineage) {
            std::set<size_t>& ancestors = job_ancestors[plan.jobs.size()];
            for (const auto& in : job.inputs) {
              const size_t i = by_id.at(in);
              if (over_stages.count(plan.jobs[i].stage)) ancestors.insert(i);
              ancestors.insert(job_ancestors[i].begin(), job_ancestors[i].end());
            }
          }
          by_id[job.id] = plan.jobs.size();
          mine.push_back(plan.jobs.size());
          plan.jobs.push_back(std::move(job));
        }
      }
    }
    std::sort(mine.begin(), mine.end());
    mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
  }

  if (spec.continual) {
    ContinualLayout layout = LayOutContinual(spec);
    if (static_cast<int64_t>(layout.jobs.size() + plan.jobs.size()) > kMaxJobs) {
      return common::InvalidArgument("the [continual] study would bring the plan above " + std::to_string(kMaxJobs) +
                                     " jobs; use fewer sequences, tasks or seeds");
    }
    plan.duplicates_merged += layout.duplicates_merged;
    for (auto& job : layout.jobs) {
      if (by_id.count(job.id)) {
        ++plan.duplicates_merged;
        continue;
      }
      by_id[job.id] = plan.jobs.size();
      plan.jobs.push_back(std::move(job));
    }
  }

  // Critical path (in jobs) from each job to a sink: dependents come later in
  // plan order, so one backward pass suffices.
  for (size_t i = plan.jobs.size(); i-- > 0;) {
    for (const auto& input : plan.jobs[i].inputs) {
      PlannedJob& up = plan.jobs[by_id[input]];
      up.critical_path = std::max(up.critical_path, plan.jobs[i].critical_path + 1);
    }
  }
  return plan;
}

json Plan::ToJson() const {
  json jobs_json = json::array();
  for (const auto& j : jobs) {
    json retry_on = json::array();
    for (auto code : j.retry.on) retry_on.push_back(std::string(common::StatusCodeName(code)));
    json resources = {{"ranks", j.resources.ranks}, {"gpus", j.resources.gpus}};
    resources["time_limit_s"] = j.resources.time_limit_s ? json(*j.resources.time_limit_s) : json(nullptr);
    resources["memory_bytes"] = j.resources.memory_bytes ? json(*j.resources.memory_bytes) : json(nullptr);
    resources["isolation"] = j.resources.isolation;
    jobs_json.push_back({{"id", j.id},
                         {"stage", j.stage},
                         {"kind", j.kind},
                         {"label", j.Label()},
                         {"seed", j.seed},
                         {"replicate", j.replicate},
                         {"inputs", j.inputs},
                         {"point", j.point},
                         {"config", j.config},
                         {"resources", resources},
                         {"retry", {{"attempts", j.retry.attempts}, {"backoff_s", j.retry.backoff_s}, {"on", retry_on}}},
                         {"critical_path", j.critical_path}});
  }
  return {{"experiment", experiment},
          {"spec_hash", spec_hash},
          {"duplicates_merged", duplicates_merged},
          {"jobs", jobs_json}};
}

std::string Plan::ToText() const {
  std::ostringstream os;
  std::vector<std::string> stage_order;
  std::map<std::string, std::vector<const PlannedJob*>> by_stage;
  for (const auto& j : jobs) {
    if (!by_stage.count(j.stage)) stage_order.push_back(j.stage);
    by_stage[j.stage].push_back(&j);
  }
  os << "experiment " << experiment << "  spec " << spec_hash.substr(0, 12) << "  " << jobs.size() << " job"
     << (jobs.size() == 1 ? "" : "s") << " in " << stage_order.size() << " stage" << (stage_order.size() == 1 ? "" : "s");
  if (duplicates_merged > 0) os << "  (" << duplicates_merged << " duplicate jobs merged)";
  os << "\n";
  for (const auto& stage : stage_order) {
    const auto& list = by_stage[stage];
    const PlannedJob& first = *list.front();
    os << "\nstage " << stage << "  kind " << first.kind << "  " << list.size() << " job" << (list.size() == 1 ? "" : "s")
       << "  ranks=" << first.resources.ranks << " gpus=" << first.resources.gpus;
    if (first.resources.time_limit_s) os << " time_limit=" << *first.resources.time_limit_s << "s";
    if (first.resources.memory_bytes) os << " memory=" << *first.resources.memory_bytes << "B";
    if (first.resources.isolation != "thread") os << " isolation=" << first.resources.isolation;
    os << " attempts=" << first.retry.attempts << "\n";
    for (const PlannedJob* j : list) {
      os << "  " << j->id.substr(0, 12) << "  " << j->Label() << "  seed=" << j->seed << "  priority=" << j->critical_path
         << "  after=";
      if (j->inputs.empty()) {
        os << "-";
      } else if (j->inputs.size() <= 3) {
        for (size_t i = 0; i < j->inputs.size(); ++i) os << (i ? "," : "") << j->inputs[i].substr(0, 12);
      } else {
        os << j->inputs.size() << " jobs";
      }
      os << "\n      config " << j->config.dump() << "\n";
    }
  }
  return os.str();
}

}  // namespace shammie::orchestrator
