#include "orchestrator/continual.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "common/hash.hpp"
#include "common/random.hpp"

namespace shammie::orchestrator {

using nlohmann::json;

std::string DescribeTask(const json& c) {
  const std::string family = c.value("task", std::string("?"));
  std::string out = family;
  if (family == "grammar") {
    out += "/" + c.value("rule", std::string("?"));
  } else if (family == "modadd") {
    out += "/" + std::to_string(c.value("modulus", int64_t{0}));
    if (c.value("shift", int64_t{0}) != 0) out += "+" + std::to_string(c.value("shift", int64_t{0}));
  } else if (family == "rotate") {
    out += "/" + std::to_string(c.value("shift", int64_t{0}));
  }
  const std::string variant = c.value("variant", std::string("share"));
  if (variant != "share") {
    out += "/" + variant;
    if (variant == "permute") out += std::to_string(c.value("variant_seed", int64_t{1}));
  }
  return out;
}

namespace {

class JobList {
 public:
  explicit JobList(ContinualLayout& layout, const Resources& resources) : layout_(layout), resources_(resources) {}

  std::string Add(const std::string& stage, const std::string& kind, json config, int64_t seed,
                  std::vector<std::string> inputs, json point, int64_t replicate) {
    std::sort(inputs.begin(), inputs.end());
    inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());
    PlannedJob job;
    job.stage = stage;
    job.kind = kind;
    job.config = std::move(config);
    job.point = std::move(point);
    job.replicate = replicate;
    job.seed = seed;
    job.inputs = std::move(inputs);
    job.resources = kind == "lm.train" ? resources_ : Resources{};
    job.id = JobId(job.kind, job.config, job.seed, job.inputs);
    if (by_id_.count(job.id)) {
      ++layout_.duplicates_merged;
      return job.id;
    }
    by_id_.insert(job.id);
    layout_.jobs.push_back(std::move(job));
    return layout_.jobs.back().id;
  }

 private:
  ContinualLayout& layout_;
  Resources resources_;
  std::set<std::string> by_id_;
};

int64_t NonNegativeSeed(uint64_t s) { return static_cast<int64_t>(s >> 1); }

}  // namespace

ContinualLayout LayOutContinual(const ExperimentSpec& spec) {
  ContinualLayout layout;
  if (!spec.continual) return layout;
  const ContinualSpec& c = *spec.continual;
  JobList jobs(layout, c.resources);
  const uint64_t root = static_cast<uint64_t>(spec.seed);
  layout.base_job = jobs.Add("continual.base", "lm.train", c.base,
                             NonNegativeSeed(common::DeriveSeed(root, "continual.base", 0)), {}, json::object(), 0);

  for (const ContinualSequence& q : c.sequences) {
    for (int64_t r = 0; r < c.seeds; ++r) {
      std::string sequential_prev = layout.base_job;
      std::vector<std::string> selective_pool = {layout.base_job}, oracle_pool = {layout.base_job};
      std::vector<int64_t> selective_positions = {-1}, oracle_positions = {-1};
      std::map<std::string, int64_t> occurrences;  // task config -> times seen so far in this sequence
      for (size_t t = 0; t < q.tasks.size(); ++t) {
        const ContinualTask& task = q.tasks[t];
        const std::string key = common::CanonicalJson(task.config);
        const int64_t occurrence = occurrences[key]++;
        const int64_t seed = NonNegativeSeed(common::DeriveSeed(
            root, "continual.task:" + common::Hash128Hex(key) + ":" + std::to_string(occurrence), static_cast<uint64_t>(r)));
        const int64_t steps = task.config["steps"].get<int64_t>();
        auto point = [&](const std::string& learner) {
          return json{{"sequence", q.name}, {"position", static_cast<int64_t>(t)}, {"learner", learner}};
        };
        auto finetune = [&](const std::string& learner, const std::string& from) {
          return jobs.Add("continual." + learner, "lm.train", task.config, seed, {from}, point(learner), r);
        };
        auto new_cell = [&](const std::string& learner) {
          ContinualCell made;
          made.sequence = q.name;
          made.regime = q.regime;
          made.learner = learner;
          made.replicate = r;
          made.position = static_cast<int64_t>(t);
          made.role = task.role;
          made.task = DescribeTask(task.config);
          made.config = task.config;
          return made;
        };
        for (const std::string& learner : c.learners) {
          ContinualCell out = new_cell(learner);
          if (learner == "independent") {
            out.result_job = finetune(learner, layout.base_job);
            out.finetune_steps = steps;
          } else if (learner == "sequential") {
            out.result_job = finetune(learner, sequential_prev);
            out.finetune_steps = steps;
            sequential_prev = out.result_job;
          } else if (learner == "selective") {
            const std::vector<std::string>& pool =
                c.pool == "base" ? std::vector<std::string>{layout.base_job} : selective_pool;
            const std::vector<int64_t>& positions = c.pool == "base" ? std::vector<int64_t>{-1} : selective_positions;
            json probe = task.config;
            probe["steps"] = c.selection == "probe" ? c.probe_steps : 0;
            probe["save_model"] = false;
            probe["checkpoint_every"] = 0;  // a probe's only model is its candidate
            std::vector<std::string> probes;
            for (size_t k = 0; k < pool.size(); ++k) {
              json p = point(learner);
              p["candidate"] = static_cast<int64_t>(k);
              probes.push_back(jobs.Add("continual.selective.probe", "lm.train", probe, seed, {pool[k]}, p, r));
            }
            json select = {{"candidates", pool},
                           {"score", c.selection == "probe" ? "val_accuracy" : "step0_val_loss"},
                           {"pick", "init"},
                           {"rule", c.rule}};
            out.select_job = jobs.Add("continual.selective.select", "continual.select", select, 0, probes, point(learner), r);
            out.result_job = finetune(learner, out.select_job);
            out.candidates = pool;
            out.candidate_positions = positions;
            out.candidate_jobs = probes;
            out.finetune_steps = steps;
            out.probe_steps = static_cast<int64_t>(pool.size()) * probe["steps"].get<int64_t>();
            selective_pool.push_back(out.result_job);
            selective_positions.push_back(static_cast<int64_t>(t));
          } else if (learner == "oracle") {
            std::vector<std::string> fts;
            for (const auto& from : oracle_pool) fts.push_back(finetune(learner, from));
            json select = {{"candidates", fts}, {"score", "test_accuracy"}, {"pick", "model"}, {"rule", "best"}};
            out.select_job = jobs.Add("continual.oracle.select", "continual.select", select, 0, fts, point(learner), r);
            out.result_job = out.select_job;
            out.candidates = oracle_pool;
            out.candidate_positions = oracle_positions;
            out.candidate_jobs = fts;
            out.finetune_steps = static_cast<int64_t>(fts.size()) * steps;
            oracle_pool.push_back(out.select_job);
            oracle_positions.push_back(static_cast<int64_t>(t));
          }
          layout.cells.push_back(std::move(out));
        }
      }
    }
  }
  return layout;
}

}  // namespace shammie::orchestrator
