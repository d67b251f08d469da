// The pav.* job kinds through their job code (workers/lm_pav.cpp): what
// follows from the method whatever the model learns. alpha = 0 makes the
// prover irrelevant (outcome RL; beam search on Q^pi alone); Monte-Carlo
// values are shares of completions and complete answers carry their exact
// outcome; best-of-N's oracle pass@N never falls with N.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>

#include "common/random.hpp"
#include "tests/table_column.hpp"
#include "tests/test_util.hpp"
#include "tests/workers/kind_config.hpp"
#include "workers/lm.hpp"
#include "workers/local_context.hpp"

namespace shammie::workers {
namespace {

using testing::KindConfig;
using testing::Column;


nlohmann::json Didactic(double alpha, double gamma) {
  return KindConfig("pav.didactic", {{"iterations", 40}, {"eval_every", 20}, {"eval_samples", 200},
                                     {"sft_iterations", 100}, {"alpha", alpha}, {"prover_gamma", gamma}});
}

TEST(PavKindsTest, DidacticRlIsReproducibleAndAlphaZeroIgnoresTheProver) {
  LocalJobContext a("a", Didactic(0, 5), 3), b("b", Didactic(0, 100), 3), c("c", Didactic(1, 100), 3),
      again("d", Didactic(1, 100), 3);
  for (LocalJobContext* ctx : {&a, &b, &c, &again}) {
    common::Status s = RunPavDidactic(*ctx);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  // Outcome-only RL: the prover's strength changes nothing, bit for bit.
  EXPECT_EQ(a.metrics().at("success"), b.metrics().at("success"));
  EXPECT_EQ(Column<std::string>(a.tables().at("samples"), "tokens"), Column<std::string>(b.tables().at("samples"), "tokens"));
  // With alpha = 1 the prover's advantages steer the updates.
  EXPECT_NE(Column<std::string>(b.tables().at("samples"), "tokens"), Column<std::string>(c.tables().at("samples"), "tokens"));
  EXPECT_EQ(c.metrics().at("success"), again.metrics().at("success"));
  // The table agrees with the metric, and the advantages of every sample
  // telescope to its outcome minus V^mu of the empty prefix.
  const auto& success = Column<int64_t>(c.tables().at("samples"), "success");
  const auto& sum = Column<double>(c.tables().at("samples"), "prover_advantage_sum");
  const double v0 = c.metrics().at("prover_value").back().value;
  double hits = 0;
  for (size_t i = 0; i < success.size(); ++i) {
    hits += static_cast<double>(success[i]);
    EXPECT_NEAR(sum[i], static_cast<double>(success[i]) - v0, 1e-12);
  }
  EXPECT_DOUBLE_EQ(hits / static_cast<double>(success.size()), c.metrics().at("final_success").back().value);
}

// The entropy bonus (not in the paper) keeps the policy less certain than the
// plain objective does (measured: 0.70 without, 2.56 with, of ln 13 = 2.565
// at most); unset and 0 are the plain objective, bit for bit.
TEST(PavKindsTest, DidacticEntropyBonusKeepsThePolicyUncertain) {
  nlohmann::json zero = Didactic(1, 10), bonus = Didactic(1, 10);
  zero["entropy"] = 0.0;
  bonus["entropy"] = 0.1;
  LocalJobContext plain("plain", Didactic(1, 10), 3), off("off", zero, 3), on("on", bonus, 3);
  for (LocalJobContext* ctx : {&plain, &off, &on}) {
    common::Status s = RunPavDidactic(*ctx);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(plain.metrics().at("success"), off.metrics().at("success"));
  EXPECT_EQ(plain.metrics().at("entropy"), off.metrics().at("entropy"));
  const double h_plain = plain.metrics().at("entropy").back().value, h_on = on.metrics().at("entropy").back().value;
  EXPECT_GT(h_plain, 0);
  EXPECT_LE(h_on, std::log(13.0) + 1e-9) << "at most the uniform policy's, ln(vocab)";
  EXPECT_GT(h_on, h_plain + 1.0) << "plain " << h_plain << ", with the bonus " << h_on;
}

TEST(PavKindsTest, BadTargetsAreRefused) {
  LocalJobContext ctx("x", KindConfig("pav.didactic", {{"target", {3, 14}}}), 1);
  EXPECT_EQ(RunPavDidactic(ctx).code(), common::StatusCode::kInvalidArgument);
}

// policy -> rollouts -> verifier -> search, with checkpoints on disk.
TEST(PavKindsTest, RolloutsVerifierAndSearchOnArithmeticChains) {
  testing::ScratchDir dir("pav-lm");
  LocalJobContext policy("policy", KindConfig("lm.train", {{"task", "arith"}, {"modulus", 5}, {"operations", 2},
                                                           {"d_model", 32}, {"heads", 2}, {"steps", 150},
                                                           {"eval_every", 150}, {"eval_examples", 64}}), 5);
  policy.set_artifact_dir(dir.File("artifacts"));
  ASSERT_TRUE(RunLmTrain(policy).ok());

  LocalJobContext rollouts("rollouts", KindConfig("pav.rollouts", {{"prompts", 12}, {"rollouts", 2}, {"mc", 4}}), 6);
  rollouts.set_artifact_dir(dir.File("artifacts"));
  rollouts.set_inputs(policy.recorded());
  common::Status s = RunPavRollouts(rollouts);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const storage::Table& values = rollouts.tables().at("values");
  const auto& step = Column<int64_t>(values, "step");
  const auto& final = Column<int64_t>(values, "final");
  const auto& q = Column<double>(values, "q");
  const auto& prefix = Column<std::string>(values, "prefix");
  int64_t empty = 0, finals = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (final[i]) {
      ++finals;
      EXPECT_TRUE(q[i] == 0 || q[i] == 1) << "a complete answer's value is its outcome";
    } else {
      EXPECT_DOUBLE_EQ(q[i] * 4, std::round(q[i] * 4)) << "a share of 4 completions";
      if (step[i] == 0) {
        ++empty;
        EXPECT_EQ(prefix[i], "");
      } else {
        EXPECT_EQ(prefix[i].back(), '=') << "prefixes end with a step";
      }
    }
  }
  EXPECT_EQ(empty, 12 * 2);
  EXPECT_EQ(finals, 12 * 2);
  ASSERT_EQ(rollouts.recorded().size(), 1u);
  EXPECT_EQ(rollouts.recorded()[0].name, "values");

  LocalJobContext verifier("verifier", KindConfig("pav.verifier", {{"steps", 30}, {"eval_every", 30}}), 7);
  verifier.set_artifact_dir(dir.File("artifacts"));
  std::vector<Artifact> inputs = policy.recorded();
  inputs.insert(inputs.end(), rollouts.recorded().begin(), rollouts.recorded().end());
  verifier.set_inputs(inputs);
  s = RunPavVerifier(verifier);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(verifier.recorded().size(), 1u);
  EXPECT_EQ(verifier.recorded()[0].name, "verifier");

  // extra_layers grows the policy by blocks that start as the identity: at a
  // step size of 1e-12 the grown verifier's training losses are the plain
  // one's (a grown block with nonzero output would change every loss).
  auto losses = [&](int64_t extra) {
    LocalJobContext ctx("grown", KindConfig("pav.verifier", {{"steps", 20}, {"eval_every", 20}, {"learning_rate", 1e-12},
                                                             {"extra_layers", extra}}), 7);
    ctx.set_inputs(inputs);
    common::Status st = RunPavVerifier(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return ctx.metrics().at("loss");
  };
  const auto plain = losses(0), grown = losses(2);
  ASSERT_EQ(plain.size(), 2u);
  ASSERT_EQ(grown.size(), 2u);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(grown[i].value, plain[i].value, 1e-5) << "step " << plain[i].step;
  EXPECT_NE(plain[0].value, plain[1].value) << "two different batches";

  // targets = "steps" reads each training rollout once: as many sequences as
  // the training prompts (held out by the same hash as the verifier's) have
  // empty prefixes, and every row of them still a target.
  {
    LocalJobContext ctx("steps", KindConfig("pav.verifier", {{"steps", 20}, {"eval_every", 20}, {"targets", "steps"}}), 7);
    ctx.set_inputs(inputs);
    common::Status st = RunPavVerifier(ctx);
    ASSERT_TRUE(st.ok()) << st.ToString();
    const auto& prompt = Column<std::string>(values, "prompt");
    int64_t train_rows = 0, train_rollouts = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      if (common::DeriveSeed(0, prompt[i], 0) % 10 == 0) continue;
      ++train_rows;
      if (step[i] == 0) ++train_rollouts;
    }
    ASSERT_GT(train_rollouts, 0);
    EXPECT_EQ(ctx.metrics().at("train_rollouts").back().value, static_cast<double>(train_rollouts));
    EXPECT_EQ(ctx.metrics().at("train_rows").back().value, static_cast<double>(train_rows));
    for (const auto& point : ctx.metrics().at("loss")) EXPECT_TRUE(std::isfinite(point.value));
  }

  // labels = "exact": a step prefix is labelled 1 if every step written so
  // far is right, complete answers keep their outcome. The right chain comes
  // from this test's own solver (mod 5: the leftmost '*' first, then left to right).
  {
    auto solve = [](const std::string& prompt) {
      std::vector<int64_t> nums;
      std::string ops, digits;
      for (char ch : prompt) {
        if (std::isdigit(static_cast<unsigned char>(ch))) {
          digits += ch;
          continue;
        }
        nums.push_back(std::stoll(digits));
        digits.clear();
        if (ch != '=') ops += ch;
      }
      std::string chain;
      while (!ops.empty()) {
        const size_t i = ops.find('*') == std::string::npos ? 0 : ops.find('*');
        const int64_t v = ops[i] == '*' ? nums[i] * nums[i + 1] : ops[i] == '+' ? nums[i] + nums[i + 1] : nums[i] - nums[i + 1];
        nums[i] = ((v % 5) + 5) % 5;
        nums.erase(nums.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        ops.erase(i, 1);
        if (!chain.empty()) chain += '=';
        chain += std::to_string(nums[0]);
        for (size_t k = 0; k < ops.size(); ++k) chain += ops[k] + std::to_string(nums[k + 1]);
      }
      return chain;
    };
    const auto& prompt = Column<std::string>(values, "prompt");
    double sum = 0, rows = 0;
    int64_t wrong_outcomes = 0;
    auto last_value = [](const std::string& chain) { return chain.substr(chain.rfind('=') + 1); };
    for (size_t i = 0; i < q.size(); ++i) {
      if (common::DeriveSeed(0, prompt[i], 0) % 10 == 0) continue;
      const std::string right = solve(prompt[i]);
      // A complete answer's outcome is its last value's (a slip can be undone by a later one).
      if (final[i] && (q[i] == 1.0) != (last_value(prefix[i]) == last_value(right))) ++wrong_outcomes;
      sum += final[i] ? q[i] : (right.starts_with(prefix[i]) ? 1.0 : 0.0);
      ++rows;
    }
    EXPECT_EQ(wrong_outcomes, 0);
    LocalJobContext ctx("exact", KindConfig("pav.verifier", {{"steps", 10}, {"eval_every", 10}, {"labels", "exact"}}), 7);
    ctx.set_inputs(inputs);
    common::Status st = RunPavVerifier(ctx);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_GT(rows, 0);
    EXPECT_NEAR(ctx.metrics().at("train_label_mean").back().value, sum / rows, 1e-12);
    LocalJobContext mc("mc", KindConfig("pav.verifier", {{"steps", 10}, {"eval_every", 10}}), 7);
    mc.set_inputs(inputs);
    ASSERT_TRUE(RunPavVerifier(mc).ok());
    EXPECT_NE(mc.metrics().at("train_label_mean").back().value, sum / rows) << "Monte-Carlo labels are not the exact ones";
  }

  // score = "likelihood" travels with the verifier: search reads it from the
  // checkpoint. With unchanged parameters (step size 1e-12) and one sample per
  // prompt, the likelihood verifier rates every answer below the head alone
  // (it adds the answer's log-likelihood, which is negative).
  {
    std::map<std::string, std::vector<double>> chosen;
    for (const char* score : {"head", "likelihood"}) {
      LocalJobContext v(score, KindConfig("pav.verifier", {{"steps", 1}, {"eval_every", 1}, {"learning_rate", 1e-12},
                                                           {"score", score}}), 7);
      v.set_artifact_dir(dir.File("artifacts"));
      v.set_inputs(inputs);
      common::Status st = RunPavVerifier(v);
      ASSERT_TRUE(st.ok()) << st.ToString();
      std::vector<Artifact> in = policy.recorded();
      in.push_back(v.recorded().at(0));
      LocalJobContext one("one", KindConfig("pav.search", {{"method", "best-of-n"}, {"n", 1}, {"prompts", 10}}), 8);
      one.set_inputs(in);
      st = RunPavSearch(one);
      ASSERT_TRUE(st.ok()) << st.ToString();
      chosen[score] = Column<double>(one.tables().at("search"), "verifier_q");
    }
    ASSERT_EQ(chosen["head"].size(), 10u);
    ASSERT_EQ(chosen["likelihood"].size(), 10u);
    for (size_t i = 0; i < 10; ++i) EXPECT_LT(chosen["likelihood"][i], chosen["head"][i]) << "prompt " << i;
  }

  std::vector<Artifact> search_inputs = policy.recorded();
  search_inputs.push_back(verifier.recorded()[0]);
  LocalJobContext bon("bon", KindConfig("pav.search", {{"method", "best-of-n"}, {"n", 8}, {"prompts", 20}}), 8);
  bon.set_inputs(search_inputs);
  s = RunPavSearch(bon);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const auto& pass = bon.metrics().at("pass_at_n");
  ASSERT_EQ(pass.size(), 4u);  // N = 1, 2, 4, 8
  for (size_t i = 1; i < pass.size(); ++i) EXPECT_GE(pass[i].value, pass[i - 1].value);
  const auto& acc = bon.metrics().at("accuracy_at_n");
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_LE(acc[i].value, pass[i].value);
  EXPECT_DOUBLE_EQ(acc[0].value, pass[0].value) << "one sample: nothing to choose";

  // Beam search with alpha = 0 ranks by Q^pi alone: the prover's K is inert.
  auto beam = [&](double alpha, double k) {
    LocalJobContext ctx("beam", KindConfig("pav.search", {{"method", "beam"}, {"beam", 2}, {"prompts", 20},
                                                          {"alpha", alpha}, {"prover_k", k}}), 9);
    ctx.set_inputs(search_inputs);
    common::Status st = RunPavSearch(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return Column<std::string>(ctx.tables().at("search"), "generated");
  };
  EXPECT_EQ(beam(0, 1), beam(0, 32));
  // Missing inputs are named.
  LocalJobContext lonely("lonely", KindConfig("pav.search", {}), 1);
  lonely.set_inputs(policy.recorded());
  s = RunPavSearch(lonely);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("verifier"), std::string::npos) << s.ToString();
}

// A separately trained prover (an lm.train job with record_as = "prover"):
// the policy writes the prefixes and the prover completes them, a verifier on
// those values records a "prover_verifier", and search and RL read Q^mu from
// it with prover = "trained".
// Q-hat is a martingale along the policy's own rollouts: the mean value of
// the empty prefixes, and of the one-step prefixes, estimates the same
// success rate as the rollouts' exact outcomes. With max_len tight to the
// task (a 2-operation chain mod 5 and its answer fill 13 positions), a
// completion batched with longer prefixes must still get its full budget
// (it once got the longest row's, and empty prefixes scored about 0).
TEST(PavKindsTest, RolloutValuesAgreeWithTheOutcomesAtEveryDepth) {
  testing::ScratchDir dir("pav-martingale");
  LocalJobContext policy("policy", KindConfig("lm.train", {{"task", "arith"}, {"modulus", 5}, {"operations", 2},
                                                           {"d_model", 32}, {"heads", 2}, {"steps", 1500},
                                                           {"eval_every", 1500}, {"eval_examples", 64},
                                                           {"max_len", 13}}), 5);
  policy.set_artifact_dir(dir.File("artifacts"));
  ASSERT_TRUE(RunLmTrain(policy).ok());
  LocalJobContext rollouts("rollouts", KindConfig("pav.rollouts", {{"prompts", 200}, {"rollouts", 2}, {"mc", 4}}), 6);
  rollouts.set_artifact_dir(dir.File("artifacts"));
  rollouts.set_inputs(policy.recorded());
  const common::Status s = RunPavRollouts(rollouts);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const storage::Table& values = rollouts.tables().at("values");
  const auto& step = Column<int64_t>(values, "step");
  const auto& final = Column<int64_t>(values, "final");
  const auto& q = Column<double>(values, "q");
  double outcome = 0, n_outcome = 0;
  std::map<int64_t, std::pair<double, double>> by_depth;  // step -> (sum of q, rows)
  for (size_t i = 0; i < q.size(); ++i) {
    if (final[i]) {
      outcome += q[i];
      n_outcome += 1;
    } else {
      by_depth[step[i]].first += q[i];
      by_depth[step[i]].second += 1;
    }
  }
  const double p = outcome / n_outcome;
  ASSERT_EQ(n_outcome, 400);
  ASSERT_GT(p, 0.3) << "the policy must succeed often enough for the comparison to mean something";
  ASSERT_LT(p, 0.95);
  EXPECT_DOUBLE_EQ(rollouts.metrics().at("policy_accuracy").back().value, p);
  for (int64_t depth : {0, 1}) {
    ASSERT_GT(by_depth[depth].second, 300) << depth;
    const double mean = by_depth[depth].first / by_depth[depth].second;
    // Standard error of the difference: the outcomes' (400 draws) and the
    // values' (at least 1,200 completions); 5 of them.
    const double se = std::sqrt(p * (1 - p) * (1 / n_outcome + 1 / (4 * by_depth[depth].second)));
    EXPECT_NEAR(mean, p, 5 * se) << "depth " << depth;
  }
  EXPECT_NEAR(rollouts.metrics().at("completer_accuracy").back().value, by_depth[0].first / by_depth[0].second, 1e-12);
}

TEST(PavKindsTest, TrainedProverCompletesThePolicysPrefixes) {
  testing::ScratchDir dir("pav-prover");
  auto train = [&](const std::string& id, int64_t steps, int64_t modulus, bool prover) {
    nlohmann::json extra = {{"task", "arith"}, {"modulus", modulus}, {"operations", 2}, {"d_model", 32}, {"heads", 2},
                            {"steps", steps}, {"eval_every", steps}, {"eval_examples", 64}};
    if (prover) extra["record_as"] = "prover";
    auto ctx = std::make_unique<LocalJobContext>(id, KindConfig("lm.train", extra), 5);
    ctx->set_artifact_dir(dir.File("artifacts"));
    common::Status st = RunLmTrain(*ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return ctx;
  };
  const auto policy = train("policy", 150, 5, false);
  // One optimizer step: a prover that cannot yet write the chains.
  const auto weak = train("weak", 1, 5, true);
  ASSERT_EQ(policy->recorded().size(), 2u);  // model, summary
  ASSERT_EQ(weak->recorded().size(), 2u);
  const Artifact model = policy->recorded()[0], weak_prover = weak->recorded()[0];
  ASSERT_EQ(model.name, "model");
  ASSERT_EQ(weak_prover.name, "prover");

  struct Rollouts {
    std::unique_ptr<LocalJobContext> ctx;
    std::vector<double> q;
    std::vector<std::string> prefix;
    std::vector<int64_t> final;
  };
  auto rollouts = [&](const std::string& id, std::vector<Artifact> in) {
    Rollouts r;
    r.ctx = std::make_unique<LocalJobContext>(id, KindConfig("pav.rollouts", {{"prompts", 12}, {"rollouts", 2}, {"mc", 4}}), 6);
    r.ctx->set_artifact_dir(dir.File("artifacts"));
    r.ctx->set_inputs(std::move(in));
    common::Status st = RunPavRollouts(*r.ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    const storage::Table& values = r.ctx->tables().at("values");
    r.q = Column<double>(values, "q");
    r.prefix = Column<std::string>(values, "prefix");
    r.final = Column<int64_t>(values, "final");
    return r;
  };
  const Rollouts own = rollouts("own", {model});
  // The policy's own checkpoint as its prover: the same completions, bit for bit.
  Artifact same = model;
  same.name = "prover";
  const Rollouts self = rollouts("self", {model, same});
  EXPECT_EQ(self.q, own.q);
  EXPECT_EQ(self.prefix, own.prefix);
  // The weak prover completes the policy's prefixes: the same prefixes and
  // outcomes of complete answers, other Monte-Carlo values, and fewer right
  // completions from the empty prefix.
  const Rollouts mu = rollouts("mu", {model, weak_prover});
  EXPECT_EQ(mu.prefix, own.prefix);
  EXPECT_EQ(mu.final, own.final);
  double differ = 0;
  for (size_t i = 0; i < own.q.size(); ++i) {
    if (own.final[i]) EXPECT_EQ(mu.q[i], own.q[i]);
    else differ += mu.q[i] != own.q[i] ? 1 : 0;
  }
  EXPECT_GT(differ, 0);
  EXPECT_EQ(mu.ctx->metrics().at("policy_accuracy"), own.ctx->metrics().at("policy_accuracy"));
  EXPECT_LT(mu.ctx->metrics().at("completer_accuracy").back().value,
            own.ctx->metrics().at("completer_accuracy").back().value);
  // A prover of another task is refused.
  {
    const auto other = train("other", 1, 7, true);
    LocalJobContext ctx("x", KindConfig("pav.rollouts", {{"prompts", 2}}), 6);
    ctx.set_inputs({model, other->recorded()[0]});
    const common::Status st = RunPavRollouts(ctx);
    EXPECT_EQ(st.code(), common::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("mod 7"), std::string::npos) << st.ToString();
  }

  // Verifiers: of the policy's values a "verifier", of the prover's a
  // "prover_verifier"; both kinds at once are refused.
  auto verify = [&](const std::string& id, std::vector<Artifact> in) {
    auto ctx = std::make_unique<LocalJobContext>(id, KindConfig("pav.verifier", {{"steps", 20}, {"eval_every", 20}}), 7);
    ctx->set_artifact_dir(dir.File("artifacts"));
    ctx->set_inputs(std::move(in));
    return std::make_pair(RunPavVerifier(*ctx), std::move(ctx));
  };
  auto [vs, v] = verify("v", {model, own.ctx->recorded().at(0)});
  ASSERT_TRUE(vs.ok()) << vs.ToString();
  auto [pvs, pv] = verify("pv", {model, weak_prover, mu.ctx->recorded().at(0)});
  ASSERT_TRUE(pvs.ok()) << pvs.ToString();
  ASSERT_EQ(v->recorded().size(), 1u);
  ASSERT_EQ(pv->recorded().size(), 1u);
  EXPECT_EQ(v->recorded()[0].name, "verifier");
  EXPECT_EQ(pv->recorded()[0].name, "prover_verifier");
  auto [mixed, unused] = verify("mixed", {model, own.ctx->recorded().at(0), mu.ctx->recorded().at(0)});
  EXPECT_EQ(mixed.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(mixed.message().find("Q of the prover"), std::string::npos) << mixed.ToString();
  // Two provers' values are refused as well (one verifier per prover: sweep.over).
  Artifact self_values = self.ctx->recorded().at(0);
  auto [two, unused2] = verify("two", {model, self_values, mu.ctx->recorded().at(0)});
  EXPECT_EQ(two.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(two.message().find("sweep.over"), std::string::npos) << two.ToString();
  // Exact labels do not depend on who completes the prefixes.
  {
    LocalJobContext ctx("exact", KindConfig("pav.verifier", {{"steps", 2}, {"eval_every", 2}, {"labels", "exact"}}), 7);
    ctx.set_inputs({model, mu.ctx->recorded().at(0)});
    const common::Status st = RunPavVerifier(ctx);
    EXPECT_EQ(st.code(), common::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("rollouts"), std::string::npos) << st.ToString();
  }

  // prover = "trained" needs a prover_verifier; one that is not asked for is refused.
  const Artifact verifier = v->recorded()[0], prover_verifier = pv->recorded()[0];
  {
    for (const char* method : {"beam", "best-of-n"}) {
      LocalJobContext need("need", KindConfig("pav.search", {{"prompts", 2}, {"prover", "trained"}, {"method", method},
                                                             {"alpha", 0.0}}), 8);
      need.set_inputs({model, verifier});
      common::Status st = RunPavSearch(need);
      EXPECT_EQ(st.code(), common::StatusCode::kInvalidArgument) << method;
      EXPECT_NE(st.message().find("prover_verifier"), std::string::npos) << st.ToString();
    }
    LocalJobContext stray("stray", KindConfig("pav.rl", {{"iterations", 1}}), 8);
    stray.set_inputs({model, verifier, prover_verifier});
    common::Status st = RunPavRl(stray);
    EXPECT_EQ(st.code(), common::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("prover = \"trained\""), std::string::npos) << st.ToString();
  }
  // A trained prover whose verifier is the policy's verifier is Best-of-1 of
  // the policy (Q^mu = Q^pi, up to the rounding of 1 - (1 - q)): the same
  // beams and the same RL updates, whatever prover_k says; Best-of-32 is
  // another prover.
  Artifact as_prover = verifier;
  as_prover.name = "prover_verifier";
  auto search = [&](std::vector<Artifact> in, nlohmann::json extra) {
    extra.update({{"method", "beam"}, {"beam", 2}, {"prompts", 20}, {"alpha", 0.7}});
    LocalJobContext ctx("beam", KindConfig("pav.search", extra), 9);
    ctx.set_inputs(std::move(in));
    common::Status st = RunPavSearch(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return std::make_pair(Column<std::string>(ctx.tables().at("search"), "generated"),
                          Column<int64_t>(ctx.tables().at("search"), "tokens"));
  };
  EXPECT_EQ(search({model, verifier, as_prover}, {{"prover", "trained"}, {"prover_k", 32.0}}),
            search({model, verifier}, {{"prover_k", 1.0}}));
  EXPECT_EQ(search({model, verifier, prover_verifier}, {{"prover", "trained"}}).first.size(), 20u);
  // Jobs with a trained prover report its accuracy (from its rollouts'
  // completions of empty prefixes), even at alpha = 0: an analysis groups by it.
  {
    const double prover_accuracy = mu.ctx->metrics().at("completer_accuracy").back().value;
    EXPECT_NEAR(pv->metrics().at("completer_accuracy").back().value, prover_accuracy, 1e-12);
    LocalJobContext ctx("label", KindConfig("pav.search", {{"prompts", 2}, {"alpha", 0.0}, {"prover", "trained"}}), 9);
    ctx.set_inputs({model, verifier, prover_verifier});
    ASSERT_TRUE(RunPavSearch(ctx).ok());
    EXPECT_NEAR(ctx.metrics().at("prover_accuracy").back().value, prover_accuracy, 1e-12);
  }
  auto rl = [&](std::vector<Artifact> in, nlohmann::json extra) {
    extra.update({{"iterations", 4}, {"batch", 4}, {"samples", 2}, {"eval_every", 2}, {"eval_prompts", 30},
                  {"pass_samples", 2}, {"alpha", 1.0}, {"learning_rate", 1e-3}});
    LocalJobContext ctx("rl", KindConfig("pav.rl", extra), 10);
    ctx.set_inputs(std::move(in));
    common::Status st = RunPavRl(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    std::vector<double> series;
    for (const char* metric : {"prover_advantage_abs", "accuracy", "pass_at_n"}) {
      for (const auto& point : ctx.metrics().at(metric)) series.push_back(point.value);
    }
    return series;
  };
  const std::vector<double> best_of_1 = rl({model, verifier}, {{"prover_k", 1.0}});
  ASSERT_EQ(best_of_1.size(), 4u + 3u + 2u);
  // The policy's verifier is not needed with a trained prover.
  const std::vector<double> trained = rl({model, as_prover}, {{"prover", "trained"}, {"prover_k", 32.0}});
  const std::vector<double> best_of_32 = rl({model, verifier}, {{"prover_k", 32.0}});
  ASSERT_EQ(trained.size(), best_of_1.size());
  ASSERT_EQ(best_of_32.size(), best_of_1.size());
  double furthest = 0;
  for (size_t i = 0; i < best_of_1.size(); ++i) {
    EXPECT_NEAR(trained[i], best_of_1[i], 1e-12) << "metric point " << i;
    furthest = std::max(furthest, std::abs(best_of_32[i] - best_of_1[i]));
  }
  EXPECT_GT(furthest, 1e-3) << "Best-of-32's advantages are not Best-of-1's";
  // The prover's own verifier gives its own advantages.
  const std::vector<double> own_prover = rl({model, prover_verifier}, {{"prover", "trained"}});
  ASSERT_EQ(own_prover.size(), best_of_1.size());
  EXPECT_GT(std::abs(own_prover[0] - best_of_1[0]), 1e-3) << "first update's mean |A^mu|";
}

}  // namespace
}  // namespace shammie::workers
