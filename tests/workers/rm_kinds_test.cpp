// The rm.* job kinds through their job code (workers/lm_rm.cpp) at toy size:
// which reward models an ensemble takes, what each kind refuses, and that a
// fine-tune's seed alone changes its reward model.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "tests/table_column.hpp"
#include "tests/test_util.hpp"
#include "tests/workers/kind_config.hpp"
#include "workers/lm.hpp"
#include "workers/lm_torch.hpp"
#include "workers/local_context.hpp"
#include "workers/preference.hpp"

namespace shammie::workers {
namespace {

using testing::Column;
using testing::KindConfig;

class RmKindsTest : public ::testing::Test {
 protected:
  static nlohmann::json Lm(const std::string& task) {
    return KindConfig("lm.train", {{"task", task}, {"length", 6}, {"alphabet", 8}, {"d_model", 32}, {"layers", 1},
                                   {"heads", 2}, {"steps", 20}, {"eval_every", 20}, {"eval_examples", 16}});
  }
  // Runs `run` on a fresh context with these inputs; keeps the context.
  LocalJobContext& Job(const std::string& id, nlohmann::json config, uint64_t seed, std::vector<Artifact> inputs,
                       common::Status (*run)(JobContext&), common::Status* status = nullptr) {
    jobs_.push_back(std::make_unique<LocalJobContext>(id, std::move(config), seed));
    LocalJobContext& ctx = *jobs_.back();
    ctx.set_artifact_dir(dir_.File("artifacts"));
    ctx.set_inputs(std::move(inputs));
    const common::Status s = run(ctx);
    if (status) {
      *status = s;
    } else {
      EXPECT_TRUE(s.ok()) << id << ": " << s.ToString();
    }
    return ctx;
  }
  static std::vector<Artifact> Join(std::initializer_list<const LocalJobContext*> jobs) {
    std::vector<Artifact> out;
    for (const auto* j : jobs) out.insert(out.end(), j->recorded().begin(), j->recorded().end());
    return out;
  }
  testing::ScratchDir dir_{"rm-kinds"};
  std::vector<std::unique_ptr<LocalJobContext>> jobs_;
};

TEST_F(RmKindsTest, EnsemblesTakeTheDocumentedMembersAndBadInputsAreRefused) {
  const LocalJobContext& policy = Job("policy", Lm("distinct"), 1, {}, RunLmTrain);
  const LocalJobContext& backbone_a = Job("backbone-a", Lm("distinct"), 2, {}, RunLmTrain);
  const LocalJobContext& backbone_b = Job("backbone-b", Lm("distinct"), 3, {}, RunLmTrain);
  const LocalJobContext& prefs = Job("prefs", KindConfig("rm.prefs", {{"prompts", 120}}), 4, Join({&policy}), RunRmPrefs);
  ASSERT_EQ(prefs.recorded().size(), 1u);
  const storage::Table& pairs = prefs.tables().at("pairs");
  const auto& gold_1 = Column<double>(pairs, "gold_1");
  const auto& y1 = Column<std::string>(pairs, "response_1");
  const auto& prompt = Column<std::string>(pairs, "prompt");
  for (size_t i = 0; i < y1.size(); ++i) {
    auto task = SyntheticTask::Make(*TaskSpecFromConfig(Lm("distinct")));
    EXPECT_DOUBLE_EQ(gold_1[i], pref::LetterF1(y1[i], *(*task)->AnswerFor(prompt[i])));
  }
  const nlohmann::json rm = KindConfig("rm.train", {{"steps", 10}, {"eval_every", 5}, {"batch", 8}});
  const LocalJobContext& a1 = Job("rm-a1", rm, 10, Join({&backbone_a, &prefs}), RunRmTrain);
  const LocalJobContext& a2 = Job("rm-a2", rm, 11, Join({&backbone_a, &prefs}), RunRmTrain);
  const LocalJobContext& a1_again = Job("rm-a1-again", rm, 10, Join({&backbone_a, &prefs}), RunRmTrain);
  const LocalJobContext& b1 = Job("rm-b1", rm, 10, Join({&backbone_b, &prefs}), RunRmTrain);
  nlohmann::json eval_rm = rm;
  eval_rm["role"] = "eval";
  const LocalJobContext& evaluator = Job("eval", eval_rm, 12, Join({&backbone_b, &prefs}), RunRmTrain);
  ASSERT_EQ(evaluator.recorded().at(0).name, "eval_model");
  ASSERT_EQ(a1.recorded().at(0).name, "reward_model");
  EXPECT_EQ(a1.metrics().at("val_loss"), a1_again.metrics().at("val_loss")) << "same seed, same reward model";
  EXPECT_NE(a1.metrics().at("val_loss"), a2.metrics().at("val_loss")) << "the seed draws the head and the batches";

  const std::vector<Artifact> upstream = Join({&policy, &a1, &a2, &b1, &evaluator});
  auto bon = [&](const std::string& ensemble, int pick, common::Status* s) -> LocalJobContext& {
    return Job("bon-" + ensemble + std::to_string(pick),
               KindConfig("rm.bon", {{"ensemble", ensemble}, {"pick", pick}, {"prompts", 6}, {"n", 4}}), 20, upstream,
               RunRmBestOfN, s);
  };
  common::Status s;
  // Backbones in job-id order: backbone-a (rm-a1, rm-a2), backbone-b (rm-b1).
  EXPECT_EQ(bon("single", 0, &s).metrics().at("members").back().value, 1);
  EXPECT_EQ(bon("finetune", 0, &s).metrics().at("members").back().value, 2);
  EXPECT_EQ(bon("finetune", 1, &s).metrics().at("members").back().value, 1);
  EXPECT_EQ(bon("pretrain", 0, &s).metrics().at("members").back().value, 2);
  bon("pretrain", 1, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "backbone-b has one reward model";
  bon("finetune", 2, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "there are two backbones";
  // every_ensemble: the same samples (same seed), metrics averaged over
  // every ensemble. Finetune: the mean of the two per-backbone jobs.
  auto every = [&](const std::string& ensemble, nlohmann::json extra = nlohmann::json::object()) -> LocalJobContext& {
    nlohmann::json cfg = {{"ensemble", ensemble}, {"every_ensemble", true}, {"prompts", 6}, {"n", 4}};
    cfg.update(extra);
    return Job("every-" + ensemble + extra.dump(), KindConfig("rm.bon", cfg), 20, upstream, RunRmBestOfN);
  };
  const LocalJobContext& every_finetune = every("finetune");
  EXPECT_EQ(every_finetune.metrics().at("ensembles").back().value, 2);
  for (const std::string agg : {"mean", "min"}) {
    const auto& f0 = bon("finetune", 0, &s).metrics().at(agg + "_gold");
    const auto& f1 = bon("finetune", 1, &s).metrics().at(agg + "_gold");
    const auto& both = every_finetune.metrics().at(agg + "_gold");
    ASSERT_EQ(both.size(), f0.size());
    for (size_t i = 0; i < both.size(); ++i) EXPECT_NEAR(both[i].value, (f0[i].value + f1[i].value) / 2, 1e-12) << agg;
  }
  EXPECT_EQ(every("single").metrics().at("ensembles").back().value, 3);
  EXPECT_EQ(every("pretrain", {{"max_ensembles", 1}}).metrics().at("ensembles").back().value, 1);
  // Pretrain: {a1, b1} and {a2, b1}; best-of-n recomputed from the table's
  // member scores (members in backbone, then job-id order: a1, a2, b1).
  const LocalJobContext& every_pretrain = every("pretrain");
  EXPECT_EQ(every_pretrain.metrics().at("ensembles").back().value, 2);
  const storage::Table& t = every_pretrain.tables().at("samples");
  const auto& gold = Column<double>(t, "gold");
  const auto& m0 = Column<double>(t, "member_0");
  const auto& m1 = Column<double>(t, "member_1");
  const auto& m2 = Column<double>(t, "member_2");
  for (const auto& [n, measured] : {std::pair{1, 0}, std::pair{2, 1}, std::pair{4, 2}}) {
    double expected = 0;
    for (const auto* other : {&m0, &m1}) {
      double g = 0, picks = 0;
      for (size_t start = 0; start < gold.size(); start += static_cast<size_t>(n)) {
        size_t best = start;
        for (size_t k = start; k < start + static_cast<size_t>(n); ++k) {
          if ((*other)[k] + m2[k] > (*other)[best] + m2[best]) best = k;
        }
        g += gold[best];
        picks += 1;
      }
      expected += g / picks / 2;
    }
    EXPECT_NEAR(every_pretrain.metrics().at("mean_gold")[static_cast<size_t>(measured)].value, expected, 1e-12) << n;
  }
  // The members' correlation: the mean of corr(a1, b1) and corr(a2, b1).
  auto corr = [](const std::vector<double>& x, const std::vector<double>& y) {
    const double n = static_cast<double>(x.size());
    const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
    double sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      sxy += (x[i] - mx) * (y[i] - my);
      sxx += (x[i] - mx) * (x[i] - mx);
      syy += (y[i] - my) * (y[i] - my);
    }
    return sxy / std::sqrt(sxx * syy);
  };
  EXPECT_NEAR(every_pretrain.metrics().at("member_correlation_sft").back().value,
              (corr(m0, m2) + corr(m1, m2)) / 2, 1e-9);
  EXPECT_EQ(every("single").metrics().count("member_correlation_sft"), 0u) << "one member has no pairs";
  // A shared pool (rm.score, same seed): every rm.bon over it reports what
  // the job that samples and scores for itself reports, bit for bit.
  const LocalJobContext& pool = Job("pool", KindConfig("rm.score", {{"prompts", 6}, {"n", 4}}), 20, upstream, RunRmScore);
  ASSERT_EQ(pool.recorded().size(), 1u);
  EXPECT_EQ(pool.recorded().at(0).name, "bon_pool");
  EXPECT_EQ(pool.metrics().at("reward_models").back().value, 3);
  EXPECT_EQ(Column<double>(pool.tables().at("samples"), "member_2"), m2) << "members in backbone, then job-id order";
  const std::vector<Artifact> shared = Join({&pool});
  auto same_metrics = [](const LocalJobContext& x, const LocalJobContext& y, const std::string& what) {
    ASSERT_EQ(x.metrics().size(), y.metrics().size()) << what;
    for (const auto& [name, series] : y.metrics()) {
      ASSERT_EQ(x.metrics().count(name), 1u) << what << " " << name;
      const auto& other = x.metrics().at(name);
      ASSERT_EQ(other.size(), series.size()) << what << " " << name;
      for (size_t i = 0; i < series.size(); ++i) {
        EXPECT_EQ(other[i].step, series[i].step) << what << " " << name;
        EXPECT_EQ(other[i].value, series[i].value) << what << " " << name << " at step " << series[i].step;
      }
    }
  };
  for (const auto& [ensemble, pick] : {std::pair{"single", 0}, std::pair{"finetune", 1}, std::pair{"pretrain", 0}}) {
    const LocalJobContext& reranked =
        Job(std::string("pooled-") + ensemble, KindConfig("rm.bon", {{"ensemble", ensemble}, {"pick", pick}}), 99,
            shared, RunRmBestOfN);
    same_metrics(reranked, bon(ensemble, pick, &s), ensemble);
    EXPECT_EQ(reranked.tables().count("samples"), 0u) << "the pool's job has the table";
  }
  for (const std::string ensemble : {"single", "finetune", "pretrain"}) {
    const nlohmann::json cfg = {{"ensemble", ensemble}, {"every_ensemble", true}, {"max_ensembles", 1}, {"n", 4}};
    const LocalJobContext& reranked = Job("pooled-every-" + ensemble, KindConfig("rm.bon", cfg), 99, shared, RunRmBestOfN);
    same_metrics(reranked, every(ensemble, {{"max_ensembles", 1}}), "every " + ensemble);
  }
  Job("pool-and-models", KindConfig("rm.bon", {}), 20, Join({&pool, &a1}), RunRmBestOfN, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "a pool and reward models: which scores?";
  Job("pool-other-n", KindConfig("rm.bon", {{"n", 8}}), 20, shared, RunRmBestOfN, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "n is the pool's";
  EXPECT_NE(s.message().find("rm.score"), std::string::npos) << s.message();
  Job("pool-other-index", KindConfig("rm.bon", {{"ensemble", "finetune"}, {"pick", 2}}), 20, shared, RunRmBestOfN, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "there are two backbones";
  Job("no-eval", KindConfig("rm.bon", {{"prompts", 6}, {"n", 4}}), 20, Join({&policy, &a1}), RunRmBestOfN, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "no eval reward model upstream";
  EXPECT_NE(s.message().find("role = \"eval\""), std::string::npos) << s.message();
  Job("no-prefs", rm, 10, Join({&backbone_a}), RunRmTrain, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  const LocalJobContext& sorter = Job("sorter", Lm("sort"), 5, {}, RunLmTrain);
  Job("wrong-task", KindConfig("rm.prefs", {{"prompts", 4}}), 4, Join({&sorter}), RunRmPrefs, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << "the gold reward is defined on the distinct task";

  // RL starts at the SFT policy (KL 0 at step 0) and moves away from it.
  const LocalJobContext& rl = Job("rl", KindConfig("rm.rl", {{"ensemble", "finetune"}, {"iterations", 2}, {"eval_every", 1},
                                                              {"eval_prompts", 6}, {"batch", 2}, {"samples", 2}}),
                                  30, upstream, RunRmRl);
  EXPECT_NEAR(rl.metrics().at("kl").front().value, 0, 1e-5);
  EXPECT_NE(rl.metrics().at("kl").back().value, 0) << "two updates change the policy";
  EXPECT_LT(rl.metrics().at("sampler_logprob_gap").back().value, 1e-3)
      << "the update's log-probabilities are the sampled responses' own";
  EXPECT_EQ(rl.metrics().at("gold").size(), 3u);
}

// tune_layers = 1 on a two-block backbone: the embedding and the first block
// are the backbone's, bit for bit; the last block, the final norm and the
// head are trained; more blocks than the backbone has is refused.
TEST_F(RmKindsTest, TuneLayersFreezesTheLowerBackbone) {
  nlohmann::json lm = Lm("distinct");
  lm["layers"] = 2;
  const LocalJobContext& policy = Job("policy", Lm("distinct"), 1, {}, RunLmTrain);
  const LocalJobContext& backbone = Job("backbone", lm, 2, {}, RunLmTrain);
  const LocalJobContext& prefs = Job("prefs", KindConfig("rm.prefs", {{"prompts", 60}}), 4, Join({&policy}), RunRmPrefs);
  const LocalJobContext& rm = Job("rm", KindConfig("rm.train", {{"steps", 6}, {"eval_every", 3}, {"batch", 8}, {"tune_layers", 1}}),
                                  10, Join({&backbone, &prefs}), RunRmTrain);
  auto before = lm::LoadModelFile(backbone.recorded().at(0).path);
  auto after = lm::LoadModelFile(rm.recorded().at(0).path);
  ASSERT_TRUE(before.ok() && after.ok());
  auto old_params = before->model->named_parameters();
  int64_t tuned = 0;
  for (const auto& p : after->model->named_parameters()) {
    const std::string& name = p.key();
    const bool trained = name.rfind("block1.", 0) == 0 || name.rfind("norm.", 0) == 0 || name.rfind("score_head.", 0) == 0;
    if (name.rfind("score_head.", 0) == 0) {
      tuned += p.value().numel();
      continue;  // a fresh head: nothing to compare with
    }
    ASSERT_NE(old_params.find(name), nullptr) << name;
    const bool same = torch::equal(p.value(), old_params[name]);
    if (trained) {
      tuned += p.value().numel();
      EXPECT_FALSE(same) << name << " should be fine-tuned";
    } else {
      EXPECT_TRUE(same) << name << " should stay frozen";
    }
  }
  EXPECT_EQ(rm.metrics().at("tuned_parameters").back().value, static_cast<double>(tuned));
  common::Status s;
  Job("too-deep", KindConfig("rm.train", {{"steps", 2}, {"tune_layers", 3}}), 10, Join({&backbone, &prefs}), RunRmTrain, &s);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("2 blocks"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace shammie::workers
