#include "workers/sim_llm_eval.hpp"

#include <cmath>
#include <limits>
#include <numeric>

#include "common/random.hpp"
#include "workers/job_kind.hpp"

namespace shammie::workers {

namespace {

std::vector<ConfigProblem> CheckSimConfig(const nlohmann::json& config) {
  std::vector<ConfigProblem> problems;
  const size_t domains = config["domains"].size();
  for (const char* key : {"prevalence", "judge_accuracy"}) {
    if (config[key].size() != domains) {
      problems.push_back({key, "has " + std::to_string(config[key].size()) + " values but `domains` has " +
                                   std::to_string(domains) + "; give one per domain"});
    }
  }
  if (config["labeled"].get<int64_t>() > config["items"].get<int64_t>()) {
    problems.push_back({"labeled", "cannot exceed `items` (" + std::to_string(config["items"].get<int64_t>()) + ")"});
  }
  return problems;
}

}  // namespace

common::Result<storage::Table> SimulateLlmEval(const nlohmann::json& config, uint64_t seed) {
  if (auto problems = CheckSimConfig(config); !problems.empty()) {
    return common::InvalidArgument(problems.front().key + ": " + problems.front().message);
  }
  const auto domains = config["domains"].get<std::vector<std::string>>();
  const auto prevalence = config["prevalence"].get<std::vector<double>>();
  const auto accuracy = config["judge_accuracy"].get<std::vector<double>>();
  const size_t items = config["items"].get<size_t>(), labeled = config["labeled"].get<size_t>();
  common::SplitMix64 rng(seed ^ 0x510e527fade682d1ULL);
  // Which items get a human label: a uniform random subset.
  std::vector<size_t> order(items);
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = 0; i < labeled; ++i) {
    std::swap(order[i], order[i + static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(items - i) - 1))]);
  }
  std::vector<char> has_label(items, 0);
  for (size_t i = 0; i < labeled; ++i) has_label[order[i]] = 1;

  std::vector<int64_t> item(items), judge(items);
  std::vector<std::string> domain(items);
  std::vector<double> human(items), score(items);
  for (size_t i = 0; i < items; ++i) {
    const size_t d = static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(domains.size()) - 1));
    const int h = rng.NextDouble() < prevalence[d] ? 1 : 0;
    const int vote = rng.NextDouble() < accuracy[d] ? h : 1 - h;
    // Confidence: higher when the judge is right more often in this domain.
    const double logit = (2 * vote - 1) * (4 * (accuracy[d] - 0.5) + 0.5 * rng.NextNormal());
    item[i] = static_cast<int64_t>(i);
    domain[i] = domains[d];
    human[i] = has_label[i] ? h : std::numeric_limits<double>::quiet_NaN();
    judge[i] = vote;
    score[i] = 1 / (1 + std::exp(-logit));
  }
  storage::Table t;
  t.columns.push_back({"item", std::move(item)});
  t.columns.push_back({"domain", std::move(domain)});
  t.columns.push_back({"human", std::move(human)});
  t.columns.push_back({"judge", std::move(judge)});
  t.columns.push_back({"judge_score", std::move(score)});
  return t;
}

void RegisterSimKinds(KindRegistry& registry) {
  JobKind k;
  k.name = "sim.llm_eval";
  k.doc = "Simulated LLM-evaluation data: human labels on a few items, an autorater on all, accuracy varying by "
          "domain. Writes table `labels` (item, domain, human [NaN = unlabeled], judge, judge_score).";
  k.check = CheckSimConfig;
  k.run = [](JobContext& ctx) -> common::Status {
    SHAMMIE_ASSIGN_OR_RETURN(storage::Table table, SimulateLlmEval(ctx.config(), ctx.seed()));
    return ctx.WriteTable("labels", table);
  };
  k.config = common::Schema("sim.llm_eval", k.doc);
  k.config.Int("items").Default(20000).Range(10, 10000000).Doc("Items evaluated by the autorater.");
  k.config.Int("labeled").Default(400).Range(2, 10000000).Doc("Items that also get a human label.");
  k.config.Add("domains", common::ValueType::kStringList)
      .Default(nlohmann::json::array({"math", "code", "chat", "safety"})).MinItems(1)
      .Doc("Domains (strata); items are spread evenly.");
  k.config.Add("prevalence", common::ValueType::kFloatList).Default(nlohmann::json::array({0.35, 0.6, 0.8, 0.5}))
      .Range(0, 1).MinItems(1).Doc("P(human label = 1) in each domain.");
  k.config.Add("judge_accuracy", common::ValueType::kFloatList)
      .Default(nlohmann::json::array({0.97, 0.75, 0.92, 0.6})).Range(0, 1).MinItems(1)
      .Doc("P(judge agrees with the human) in each domain.");
  common::Status s = registry.Register(std::move(k));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

}  // namespace shammie::workers
