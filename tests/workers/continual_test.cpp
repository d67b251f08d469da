// continual.select (the checkpoint choice of the selective learner and the
// oracle) and TaskRelation, without LibTorch: the summaries are files this
// test writes the way lm.train does.
#include "workers/continual.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "storage/checkpoint_store.hpp"
#include "tests/test_util.hpp"
#include "workers/local_context.hpp"

namespace shammie::workers {
namespace {

struct Probe {
  std::string candidate;  // job id of the candidate checkpoint it started from
  double val_accuracy, val_loss, test_accuracy;
};

class SelectTest : public ::testing::Test {
 protected:
  void SetUp() override { RegisterBuiltinKinds(kinds_); }

  // A candidate checkpoint file per candidate job, and a probe summary each.
  std::vector<Artifact> Inputs(const std::vector<Probe>& probes, bool with_models = false) {
    std::vector<Artifact> inputs;
    int i = 0;
    for (const auto& p : probes) {
      const std::string model = Write("model of " + p.candidate, "ckpt");
      models_[p.candidate] = model;
      const std::string probe_job = "probe" + std::to_string(i++);
      nlohmann::json s = {{"job", probe_job},           {"steps", 4},
                          {"val_accuracy", p.val_accuracy}, {"val_loss", p.val_loss},
                          {"step0_val_accuracy", 0.5},  {"step0_val_loss", p.val_loss + 1},
                          {"test_accuracy", p.test_accuracy}, {"initialized_from", p.candidate},
                          {"init_model", model}};
      inputs.push_back({probe_job, "summary", Write(s.dump(), "json")});
      if (with_models) {
        const std::string own = Write("fine-tuned " + probe_job, "ckpt");
        models_[probe_job] = own;
        inputs.push_back({probe_job, "model", own});
      }
    }
    return inputs;
  }
  std::string Write(const std::string& bytes, const std::string& ext) {
    auto path = storage::WriteContentAddressed(dir_.path().string(), bytes, ext);
    EXPECT_TRUE(path.ok());
    return *path;
  }
  common::Result<std::string> Select(nlohmann::json config, std::vector<Artifact> inputs,
                                     LocalJobContext** out_ctx = nullptr) {
    const JobKind* kind = kinds_.Find("continual.select");
    EXPECT_NE(kind, nullptr);
    for (const auto& k : kind->config.keys()) {
      if (!config.contains(k.name) && !k.default_value.is_null()) config[k.name] = k.default_value;
    }
    ctx_ = std::make_unique<LocalJobContext>("select", config, 1);
    ctx_->set_artifact_dir(dir_.path().string());
    ctx_->set_inputs(std::move(inputs));
    if (out_ctx) *out_ctx = ctx_.get();
    common::Status s = kind->run(*ctx_);
    if (!s.ok()) return s;
    EXPECT_EQ(ctx_->recorded().size(), 1u);
    return ctx_->recorded().front().path;
  }

  KindRegistry kinds_;
  testing::ScratchDir dir_{"continual_select"};
  std::map<std::string, std::string> models_;
  std::unique_ptr<LocalJobContext> ctx_;
};

TEST_F(SelectTest, PicksTheCandidateWithTheBestProbeAndRecordsItsCheckpoint) {
  auto inputs = Inputs({{"base", 0.70, 0.6, 0}, {"t0", 0.90, 0.3, 0}, {"t1", 0.40, 1.2, 0}});
  LocalJobContext* ctx = nullptr;
  auto chosen = Select({{"candidates", {"base", "t0", "t1"}}}, inputs, &ctx);
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  EXPECT_EQ(*chosen, models_["t0"]);  // the candidate itself, not the probe's model
  EXPECT_EQ(ctx->metrics().at("selected_index").back().value, 1);
  const auto& table = ctx->tables().at("scores");
  EXPECT_EQ(std::get<std::vector<int64_t>>(table.columns[3].values), (std::vector<int64_t>{0, 1, 0}));
}

TEST_F(SelectTest, TiesGoToTheLowerLossThenToTheBase) {
  auto inputs = Inputs({{"base", 0.90, 0.5, 0}, {"t0", 0.90, 0.3, 0}});
  EXPECT_EQ(*Select({{"candidates", {"base", "t0"}}}, inputs), models_["t0"]);
  inputs = Inputs({{"base", 0.90, 0.3, 0}, {"t0", 0.90, 0.3, 0}});
  EXPECT_EQ(*Select({{"candidates", {"base", "t0"}}}, inputs), models_["base"]);
}

TEST_F(SelectTest, LossScoresAreMinimisedAndRulesForceAChoice) {
  auto inputs = Inputs({{"base", 0.1, 0.2, 0}, {"t0", 0.9, 0.9, 0}, {"t1", 0.5, 0.5, 0}});
  EXPECT_EQ(*Select({{"candidates", {"base", "t0", "t1"}}, {"score", "val_loss"}}, inputs), models_["base"]);
  EXPECT_EQ(*Select({{"candidates", {"base", "t0", "t1"}}, {"rule", "last"}}, inputs), models_["t1"]);
  EXPECT_EQ(*Select({{"candidates", {"base", "t0", "t1"}}, {"rule", "first"}}, inputs), models_["base"]);
  // The pool order decides what "last" means, not the order of the inputs.
  EXPECT_EQ(*Select({{"candidates", {"t1", "base", "t0"}}, {"rule", "last"}}, inputs), models_["t0"]);
}

TEST_F(SelectTest, ADivergedProbeIsTheWorstCandidateNotAnError) {
  auto inputs = Inputs({{"base", 0.6, 0.7, 0}, {"t0", 0.9, 0.3, 0}});
  nlohmann::json diverged = {{"job", "p9"},           {"steps", 4},          {"val_accuracy", nullptr},
                             {"val_loss", nullptr},   {"step0_val_accuracy", 0.5}, {"step0_val_loss", 1.0},
                             {"test_accuracy", 0.0},  {"initialized_from", "t1"}, {"init_model", Write("t1", "ckpt")}};
  inputs.push_back({"p9", "summary", Write(diverged.dump(), "json")});
  auto chosen = Select({{"candidates", {"base", "t0", "t1"}}}, inputs);
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  EXPECT_EQ(*chosen, models_["t0"]);
}

TEST_F(SelectTest, OraclePicksTheBestFineTunedModelOnTest) {
  auto inputs = Inputs({{"base", 0.9, 0.1, 0.60}, {"t0", 0.1, 0.9, 0.95}}, /*with_models=*/true);
  auto chosen = Select({{"candidates", {"probe0", "probe1"}}, {"score", "test_accuracy"}, {"pick", "model"}}, inputs);
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  EXPECT_EQ(*chosen, models_["probe1"]);
}

TEST_F(SelectTest, InputsThatDoNotMatchThePoolAreErrors) {
  auto inputs = Inputs({{"base", 0.7, 0.6, 0}, {"t0", 0.9, 0.3, 0}});
  auto missing = Select({{"candidates", {"base", "t0", "t1"}}}, inputs);
  EXPECT_EQ(missing.status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("no input scores candidate t1"), std::string::npos);
  auto stranger = Select({{"candidates", {"base"}}}, inputs);
  EXPECT_NE(stranger.status().message().find("not a candidate"), std::string::npos);
  auto no_models = Select({{"candidates", {"probe0", "probe1"}}, {"pick", "model"}}, inputs);
  EXPECT_NE(no_models.status().message().find("recorded no \"model\""), std::string::npos);
  // A damaged summary is data loss, not a choice.
  std::vector<Artifact> bad = {{"p", "summary", Write("not json", "json")}};
  EXPECT_EQ(Select({{"candidates", {"base"}}}, bad).status().code(), common::StatusCode::kDataLoss);
}

TEST(TaskRelationTest, SharedRulesArePositiveContradictionsOnTheSameInputsNegativeTheRestNeutral) {
  TaskSpec contains;
  contains.family = "grammar";
  contains.rule = "contains";
  TaskSpec flip = contains, permute = contains, ignore = contains, majority = contains, longer = contains;
  flip.variant = "flip";
  permute.variant = "permute";
  ignore.variant = "ignore";
  majority.rule = "majority";
  longer.length = 9;
  EXPECT_EQ(TaskRelation(contains, contains), "positive");
  EXPECT_EQ(TaskRelation(flip, contains), "negative");
  EXPECT_EQ(TaskRelation(contains, flip), "negative");
  EXPECT_EQ(TaskRelation(flip, flip), "positive");
  EXPECT_EQ(TaskRelation(permute, contains), "negative");
  EXPECT_EQ(TaskRelation(ignore, contains), "negative");  // a permuted rule on the same inputs
  EXPECT_EQ(TaskRelation(ignore, ignore), "positive");
  EXPECT_EQ(TaskRelation(majority, contains), "negative");  // another rule on the same inputs
  EXPECT_EQ(TaskRelation(permute, flip), "positive");       // for two classes the only derangement is flip
  EXPECT_EQ(TaskRelation(longer, contains), "neutral");
  TaskSpec p1 = majority, p2 = majority;
  p1.variant = p2.variant = "permute";
  p2.variant_seed = 2;
  EXPECT_EQ(TaskRelation(p1, p2), "negative");
  TaskSpec add, shifted, reverse;
  shifted.shift = 3;
  reverse.family = "reverse";
  EXPECT_EQ(TaskRelation(shifted, add), "negative");
  EXPECT_EQ(TaskRelation(reverse, add), "neutral");
  TaskSpec add_flip, add_one;
  add_flip.variant = "flip";  // (a + b + 1) mod p
  add_one.shift = 1;
  EXPECT_EQ(TaskRelation(add_flip, add_one), "positive");
}

}  // namespace
}  // namespace shammie::workers
