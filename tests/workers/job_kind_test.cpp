#include "workers/job_kind.hpp"

#include <cmath>
#include <map>

#include "workers/sim_llm_eval.hpp"

#include <gtest/gtest.h>

namespace shammie::workers {
namespace {

TEST(KindRegistryTest, BuiltinsAreRegisteredWithSchemas) {
  KindRegistry r;
  RegisterBuiltinKinds(r);
  EXPECT_EQ(r.Names(),
            (std::vector<std::string>{"bench.allreduce", "bench.fail", "bench.noop", "bench.sleep", "continual.select",
                                      "lm.block_decode", "lm.early_exit", "lm.eval", "lm.loop_decode", "lm.sample", "lm.train", "pav.didactic",
                                      "pav.rl", "pav.rollouts", "pav.search", "pav.verifier", "pref.align",
                                      "pref.bandit", "pref.rm", "rec.batching", "rm.bon", "rm.prefs", "rm.rl", "rm.score", "rm.train",
                                      "sim.llm_eval", "toy.quadratic"}));
  const JobKind* q = r.Find("toy.quadratic");
  ASSERT_NE(q, nullptr);
  ASSERT_NE(q->config.Find("learning_rate"), nullptr);
  EXPECT_EQ(q->config.Find("learning_rate")->default_value, 0.1);
  EXPECT_EQ(r.Find("bench.fail")->config.Find("mode")->choices,
            (std::vector<std::string>{"error", "invalid", "crash", "hang"}));
  EXPECT_TRUE(r.Find("bench.noop")->config.keys().empty());
  EXPECT_EQ(r.Find("toy.nope"), nullptr);
}

JobKind Named(const std::string& name) {
  JobKind k;
  k.name = name;
  return k;
}

TEST(KindRegistryTest, RejectsDuplicatesAndBadNames) {
  KindRegistry r;
  EXPECT_TRUE(r.Register(Named("my.kind")).ok());
  EXPECT_EQ(r.Register(Named("my.kind")).code(), common::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.Register(Named("nodot")).code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Register(Named("bad/name.x")).code(), common::StatusCode::kInvalidArgument);
}

nlohmann::json DefaultConfig(const KindRegistry& r, const std::string& kind) {
  nlohmann::json config = nlohmann::json::object();
  for (const auto& key : r.Find(kind)->config.keys()) config[key.name] = key.default_value;
  return config;
}

TEST(SimLlmEvalTest, DeterministicAndShapedAsDeclared) {
  KindRegistry r;
  RegisterBuiltinKinds(r);
  nlohmann::json config = DefaultConfig(r, "sim.llm_eval");
  config["items"] = 20000;
  config["labeled"] = 500;
  auto a = SimulateLlmEval(config, 7), b = SimulateLlmEval(config, 7), c = SimulateLlmEval(config, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  // NaN marks unlabeled rows and NaN != NaN: compare with NaN replaced.
  auto comparable = [](storage::Table t) {
    for (double& v : std::get<std::vector<double>>(t.columns[2].values)) v = std::isnan(v) ? -1 : v;
    return t;
  };
  EXPECT_EQ(comparable(*a), comparable(*b));
  EXPECT_NE(comparable(*a), comparable(*c));
  ASSERT_EQ(a->num_rows(), 20000u);
  const auto& domain = std::get<std::vector<std::string>>(a->columns[1].values);
  const auto& human = std::get<std::vector<double>>(a->columns[2].values);
  const auto& judge = std::get<std::vector<int64_t>>(a->columns[3].values);
  size_t labeled = 0;
  std::map<std::string, std::pair<double, double>> agree;  // domain -> (agreements, labeled)
  for (size_t i = 0; i < human.size(); ++i) {
    if (std::isnan(human[i])) continue;
    ++labeled;
    agree[domain[i]].first += human[i] == static_cast<double>(judge[i]);
    agree[domain[i]].second += 1;
  }
  EXPECT_EQ(labeled, 500u);
  // Judge accuracy per domain near the declared 0.97 / 0.75 / 0.92 / 0.6 (about 125 labels each: sd <= 0.045).
  const std::map<std::string, double> declared = {{"math", 0.97}, {"code", 0.75}, {"chat", 0.92}, {"safety", 0.6}};
  for (const auto& [d, acc] : declared) {
    ASSERT_GT(agree[d].second, 80) << d;
    EXPECT_NEAR(agree[d].first / agree[d].second, acc, 0.15) << d;
  }
}

TEST(SimLlmEvalTest, CrossKeyCheckNamesTheKey) {
  KindRegistry r;
  RegisterBuiltinKinds(r);
  nlohmann::json config = DefaultConfig(r, "sim.llm_eval");
  config["prevalence"] = {0.5, 0.5};
  auto problems = r.Find("sim.llm_eval")->check(config);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].key, "prevalence");
  EXPECT_EQ(problems[0].message, "has 2 values but `domains` has 4; give one per domain");
  EXPECT_EQ(SimulateLlmEval(config, 1).status().code(), common::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shammie::workers
