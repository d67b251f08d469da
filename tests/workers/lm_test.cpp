// The LibTorch runtime: it learns, it is bit-for-bit reproducible, and k-rank
// data parallelism computes the same parameters as one rank on the whole batch.
#include "workers/lm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <thread>

#include "cluster/inproc_channel.hpp"
#include "storage/checkpoint_store.hpp"
#include "tests/test_util.hpp"
#include "workers/dataset.hpp"
#include "workers/lm_kinds.hpp"
#include "workers/local_context.hpp"
#include "tests/workers/kind_config.hpp"

namespace shammie::workers {
namespace {

// A job context with a given gang (an in-process one for data parallelism).
class GangContext final : public JobContext {
 public:
  explicit GangContext(std::unique_ptr<cluster::Collectives> gang) : gang_(std::move(gang)) {}
  const std::string& job_id() const override { return id_; }
  const nlohmann::json& config() const override { return config_; }
  uint64_t seed() const override { return 1; }
  int attempt() const override { return 1; }
  void ReportMetric(std::string_view name, int64_t step, double value) override {
    if (name == "loss") losses.push_back({step, value});
  }
  common::Status WriteTable(std::string_view, const storage::Table&) override { return common::Status::Ok(); }
  bool cancelled() const override { return cancel_after > 0 && static_cast<int64_t>(losses.size()) >= cancel_after; }
  cluster::Collectives& collectives() override { return *gang_; }
  const std::string& artifact_dir() const override { return dir; }
  const std::vector<Artifact>& inputs() const override { return upstream; }
  const std::vector<Artifact>& previous_artifacts() const override { return previous; }
  common::Status RecordArtifact(std::string_view name, const std::string& path) override {
    recorded.push_back({id_, std::string(name), path});
    return common::Status::Ok();
  }
  std::vector<storage::MetricPoint> losses;
  int64_t cancel_after = 0;  // cancelled() turns true once this many losses were reported; 0 = never
  std::string dir;           // artifact directory; "" keeps no files
  std::vector<Artifact> upstream, previous, recorded;

 private:
  std::string id_ = "test";
  nlohmann::json config_ = nlohmann::json::object();
  std::unique_ptr<cluster::Collectives> gang_;
};

TrainConfig Small(int64_t steps) {
  TrainConfig c;
  c.task.family = "reverse";
  c.task.length = 4;
  c.task.alphabet = 5;
  c.model.d_model = 32;
  c.model.layers = 2;
  c.model.heads = 2;
  c.model.max_len = 16;
  c.steps = steps;
  c.batch = 16;
  c.warmup = 5;
  c.eval_every = steps;
  c.eval_examples = 64;
  c.log_every = 1;
  c.seed = 11;
  return c;
}

TEST(LmTest, TheSameSeedGivesTheSameParametersBitForBit) {
  GangContext a(cluster::MakeSoloCollectives()), b(cluster::MakeSoloCollectives());
  auto ra = TrainLanguageModel(Small(10), a);
  auto rb = TrainLanguageModel(Small(10), b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(ra->flat_parameters, rb->flat_parameters);
  EXPECT_EQ(a.losses, b.losses);
}

// Trains `config` on a gang of `ranks` threads; every rank's result.
std::vector<TrainResult> TrainOnGang(const TrainConfig& config, int ranks) {
  auto net = std::make_shared<cluster::InProcNetwork>(ranks);
  std::vector<common::Result<TrainResult>> results(static_cast<size_t>(ranks), common::Internal("not run"));
  std::vector<int> members;
  for (int r = 0; r < ranks; ++r) members.push_back(r);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      auto ch = net->Channel(r);
      auto gang = ch->JoinGang(7, members, std::chrono::seconds(60));
      if (!gang.ok()) return;
      GangContext ctx(std::move(*gang));
      results[static_cast<size_t>(r)] = TrainLanguageModel(config, ctx);
    });
  }
  for (auto& t : threads) t.join();
  std::vector<TrainResult> out;
  for (auto& r : results) {
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) out.push_back(*r);
  }
  return out;
}

double WorstDifference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return worst;
}

// Summed gradients of the slices equal the whole batch's gradient up to float
// summation order, so with SGD the parameters agree to 1e-6 after many steps.
TEST(LmTest, DataParallelOverTwoAndFourRanksMatchesOneRankOnTheWholeBatch) {
  TrainConfig c = Small(20);
  c.optimizer = "sgd";
  c.learning_rate = 0.05;
  GangContext solo(cluster::MakeSoloCollectives());
  auto one = TrainLanguageModel(c, solo);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  for (int ranks : {2, 4}) {
    auto gang = TrainOnGang(c, ranks);
    ASSERT_EQ(gang.size(), static_cast<size_t>(ranks));
    for (const auto& r : gang) EXPECT_EQ(r.flat_parameters, gang[0].flat_parameters);  // the ranks agree exactly
    EXPECT_LT(WorstDifference(gang[0].flat_parameters, one->flat_parameters), 1e-6) << ranks << " ranks";
    EXPECT_NEAR(gang[0].train_loss, one->train_loss, 1e-6);
  }
}

// Adam's update is m / sqrt(v): where the running mean m nearly cancels, float
// summation-order differences are amplified, so AdamW agrees to a fraction of
// one learning-rate step (measured: 2.4e-6 after 6 steps at lr 3e-3) instead
// of 1e-6. SGD above shows the gradients themselves agree to float precision.
TEST(LmTest, DataParallelAdamWStaysWithinAFractionOfOneStep) {
  TrainConfig c = Small(6);
  GangContext solo(cluster::MakeSoloCollectives());
  auto one = TrainLanguageModel(c, solo);
  ASSERT_TRUE(one.ok());
  auto gang = TrainOnGang(c, 2);
  ASSERT_EQ(gang.size(), 2u);
  EXPECT_EQ(gang[0].flat_parameters, gang[1].flat_parameters);
  EXPECT_LT(WorstDifference(gang[0].flat_parameters, one->flat_parameters), 0.01 * c.learning_rate);
  EXPECT_NEAR(gang[0].train_loss, one->train_loss, 1e-4);
}

// Label `slow` (a few seconds here, much longer under sanitizers).
TEST(LmLearningTest, LearnsToReverseStrings) {
  TrainConfig c = Small(300);
  c.model.d_model = 64;
  c.model.heads = 4;
  c.batch = 32;
  c.learning_rate = 3e-3;
  GangContext ctx(cluster::MakeSoloCollectives());
  auto r = TrainLanguageModel(c, ctx);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->test_accuracy, 0.9);  // exact match on held-out strings
  EXPECT_LT(ctx.losses.back().value, ctx.losses.front().value / 10);
}

TEST(LmTest, BadShapesAreInvalidArgument) {
  GangContext ctx(cluster::MakeSoloCollectives());
  TrainConfig c = Small(1);
  c.model.heads = 3;
  EXPECT_EQ(TrainLanguageModel(c, ctx).status().code(), common::StatusCode::kInvalidArgument);
  c = Small(1);
  c.batch = 15;
  c.accumulation = 2;
  EXPECT_EQ(TrainLanguageModel(c, ctx).status().code(), common::StatusCode::kInvalidArgument);
}

// A stop mid-training saves a checkpoint; the next attempt continues from it
// and ends with the same parameters and the same loss curve, bit for bit, as
// a run never stopped.
TEST(LmTest, ResumeAfterAStopGivesTheUninterruptedRunBitForBit) {
  testing::ScratchDir dir("lm-resume");
  TrainConfig c = Small(24);
  c.eval_every = 8;
  GangContext straight(cluster::MakeSoloCollectives());
  auto whole = TrainLanguageModel(c, straight);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();

  GangContext first(cluster::MakeSoloCollectives());
  first.dir = dir.File("ckpt");
  first.cancel_after = 11;  // cancelled() from step 12 on: it stops after step 12, between evaluations
  auto stopped = TrainLanguageModel(c, first);
  ASSERT_EQ(stopped.status().code(), common::StatusCode::kCancelled) << stopped.status().ToString();
  ASSERT_EQ(first.recorded.size(), 1u);
  EXPECT_EQ(first.recorded[0].name, "model");

  GangContext second(cluster::MakeSoloCollectives());
  second.dir = dir.File("ckpt");
  second.previous = first.recorded;
  auto resumed = TrainLanguageModel(c, second);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->resumed_from, 12);  // the stop is seen in step 12's shared flag
  EXPECT_EQ(resumed->flat_parameters, whole->flat_parameters);
  EXPECT_EQ(resumed->metrics, whole->metrics);  // loss, lr, val_* at every step, re-reported then continued
  EXPECT_EQ(second.losses, straight.losses);
  EXPECT_EQ(resumed->test_accuracy, whole->test_accuracy);
  ASSERT_EQ(second.recorded.size(), 2u);  // the final checkpoint and the summary
  EXPECT_EQ(second.recorded[0].name, "model");
  EXPECT_EQ(second.recorded[1].name, "summary");
  // The same training state is the same file: an uninterrupted run that keeps
  // files writes the very checkpoint the resumed one wrote (content-addressed).
  GangContext again(cluster::MakeSoloCollectives());
  again.dir = dir.File("ckpt");
  ASSERT_TRUE(TrainLanguageModel(c, again).ok());
  EXPECT_EQ(again.recorded[0].path, second.recorded[0].path);

  // record_as = "prover": the checkpoint is artifact "prover", and a resumed
  // attempt finds its own checkpoint under that name.
  {
    TrainConfig p = c;
    p.record_as = "prover";
    GangContext stop(cluster::MakeSoloCollectives());
    stop.dir = dir.File("ckpt");
    stop.cancel_after = 11;
    ASSERT_EQ(TrainLanguageModel(p, stop).status().code(), common::StatusCode::kCancelled);
    ASSERT_EQ(stop.recorded.size(), 1u);
    EXPECT_EQ(stop.recorded[0].name, "prover");
    EXPECT_EQ(stop.recorded[0].path, first.recorded[0].path) << "the same state, the same file";
    GangContext resume(cluster::MakeSoloCollectives());
    resume.dir = dir.File("ckpt");
    resume.previous = stop.recorded;
    auto done = TrainLanguageModel(p, resume);
    ASSERT_TRUE(done.ok()) << done.status().ToString();
    EXPECT_EQ(done->resumed_from, 12);
    EXPECT_EQ(done->flat_parameters, whole->flat_parameters);
    ASSERT_EQ(resume.recorded.size(), 2u);
    EXPECT_EQ(resume.recorded[0].name, "prover");
    // A "model" of an earlier attempt is not this job's checkpoint.
    GangContext fresh(cluster::MakeSoloCollectives());
    fresh.previous = first.recorded;
    auto scratch = TrainLanguageModel(p, fresh);
    ASSERT_TRUE(scratch.ok()) << scratch.status().ToString();
    EXPECT_EQ(scratch->resumed_from, 0);
  }

  // A checkpoint of another configuration is refused, not silently used.
  TrainConfig other = c;
  other.model.d_model = 64;
  other.model.heads = 4;
  GangContext wrong(cluster::MakeSoloCollectives());
  wrong.previous = first.recorded;
  EXPECT_EQ(TrainLanguageModel(other, wrong).status().code(), common::StatusCode::kFailedPrecondition);
}

using testing::KindConfig;

// lm.train -> lm.eval and lm.sample through their job code, with checkpoints
// on disk: the eval job's accuracy is the fraction of "correct" rows of its
// table, and generated text equals the reference exactly where correct = 1.
TEST(LmLearningTest, TrainThenEvaluateAndSampleFromTheCheckpoint) {
  testing::ScratchDir dir("lm-eval");
  nlohmann::json train_cfg = KindConfig("lm.train", {{"task", "reverse"}, {"length", 4}, {"alphabet", 5},
                                                     {"d_model", 32}, {"heads", 2}, {"max_len", 16},
                                                     {"steps", 250}, {"eval_every", 250}});
  LocalJobContext train("t1", train_cfg, 5);
  train.set_artifact_dir(dir.File("ckpt"));
  ASSERT_TRUE(RunLmTrain(train).ok());
  ASSERT_EQ(train.recorded().size(), 2u);  // "model" and "summary"
  EXPECT_EQ(train.recorded()[0].name, "model");
  EXPECT_EQ(train.recorded()[1].name, "summary");
  const double test_accuracy = train.metrics().at("test_accuracy").back().value;

  LocalJobContext eval("e1", KindConfig("lm.eval", {{"examples", 256}}), 6);  // the trainer's test set
  eval.set_inputs(train.recorded());
  common::Status s = RunLmEval(eval);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const storage::Table& t = eval.tables().at("predictions");
  const auto& correct = std::get<std::vector<int64_t>>(t.columns[4].values);
  const auto& answer = std::get<std::vector<std::string>>(t.columns[2].values);
  const auto& generated = std::get<std::vector<std::string>>(t.columns[3].values);
  const auto& logprob = std::get<std::vector<double>>(t.columns[5].values);
  double right = 0;
  for (size_t i = 0; i < correct.size(); ++i) {
    right += static_cast<double>(correct[i]);
    if (correct[i]) {
      EXPECT_EQ(generated[i], answer[i]) << i;
    }
    EXPECT_LE(logprob[i], 0.0);
  }
  const double accuracy = eval.metrics().at("accuracy")[0].value;
  EXPECT_DOUBLE_EQ(accuracy, right / static_cast<double>(correct.size()));
  // Greedy decoding agrees with the teacher-forced exact match the trainer reports.
  EXPECT_NEAR(accuracy, test_accuracy, 1e-9);
  EXPECT_GT(accuracy, 0.5);

  LocalJobContext sample("s1", KindConfig("lm.sample", {{"prompts", 16}, {"samples", 4}, {"temperature", 0.0}}), 7);
  sample.set_inputs(train.recorded());
  s = RunLmSample(sample);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const storage::Table& st = sample.tables().at("samples");
  EXPECT_EQ(st.num_rows(), 64u);
  // Greedy: the 4 samples of a prompt are identical.
  const auto& text = std::get<std::vector<std::string>>(st.columns[3].values);
  for (size_t i = 0; i < text.size(); i += 4) EXPECT_EQ(text[i], text[i + 3]);

  // Fine-tuning on another task starts from the model; a different architecture is refused.
  nlohmann::json tune_cfg = train_cfg;
  tune_cfg["task"] = "copy";
  tune_cfg["steps"] = 5;
  tune_cfg["init"] = "upstream";
  LocalJobContext tune("t2", tune_cfg, 8);
  tune.set_inputs(train.recorded());
  EXPECT_TRUE(RunLmTrain(tune).ok());
  tune_cfg["d_model"] = 64;
  tune_cfg["heads"] = 4;
  LocalJobContext bad("t3", tune_cfg, 8);
  bad.set_inputs(train.recorded());
  s = RunLmTrain(bad);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("architecture"), std::string::npos) << s.ToString();
  // Task keys while trained_task = true are an error, not ignored.
  LocalJobContext confused("e2", KindConfig("lm.eval", {{"task", "copy"}}), 6);
  confused.set_inputs(train.recorded());
  EXPECT_EQ(RunLmEval(confused).code(), common::StatusCode::kInvalidArgument);
}

// Real data through token shards: documents that count upwards mod 11 from a
// random start. The next token is always (t + 1) mod 11, so a model that
// learns the data predicts held-out documents' next tokens exactly.
// The few-shot regime and the scores downstream jobs read: a fixed pool of
// training examples, zero steps (the starting model evaluated), and the
// "summary" artifact.
TEST(LmTest, FewShotPoolsZeroStepsAndTheSummary) {
  testing::ScratchDir dir("lm-few-shot");
  TrainConfig c = Small(12);
  GangContext whole_split(cluster::MakeSoloCollectives());
  auto a = TrainLanguageModel(c, whole_split);
  c.train_examples = 8;
  GangContext pool(cluster::MakeSoloCollectives());
  auto b = TrainLanguageModel(c, pool);
  GangContext pool_again(cluster::MakeSoloCollectives());
  auto b2 = TrainLanguageModel(c, pool_again);
  ASSERT_TRUE(a.ok() && b.ok() && b2.ok());
  EXPECT_NE(a->flat_parameters, b->flat_parameters);
  EXPECT_EQ(b->flat_parameters, b2->flat_parameters);
  // The training split of 4 letters over 5 is a subset of the 5^4 strings
  // that reverse does not enumerate: count it by brute force (200,000 draws
  // over at most 625 strings miss one with probability below 1e-130).
  auto task = SyntheticTask::Make(c.task);
  ASSERT_TRUE(task.ok());
  common::SplitMix64 rng(7);
  std::set<std::string> split;
  for (int i = 0; i < 200000; ++i) split.insert((*task)->Sample(Split::kTrain, rng).prompt_text);
  const auto held = static_cast<int64_t>(split.size());
  ASSERT_GT(held, 300);
  ASSERT_LT(held, 625);
  c.steps = 0;
  for (const int64_t asked : {held + 1, int64_t{100000}}) {  // the refusal costs draws by the split's size, not by n
    c.train_examples = asked;
    GangContext too_many(cluster::MakeSoloCollectives());
    auto refused = TrainLanguageModel(c, too_many);
    EXPECT_EQ(refused.status().code(), common::StatusCode::kInvalidArgument) << asked;
    EXPECT_NE(refused.status().message().find("has only " + std::to_string(held) + " distinct examples"),
              std::string::npos)
        << refused.status().message();
  }
  c.train_examples = held;  // exactly the split: the last example is the rarest draw, and is found
  GangContext all_of_it(cluster::MakeSoloCollectives());
  EXPECT_TRUE(TrainLanguageModel(c, all_of_it).ok());

  TrainConfig zero = Small(0);
  zero.eval_every = 1;
  GangContext none(cluster::MakeSoloCollectives());
  none.dir = dir.File("files");
  auto z = TrainLanguageModel(zero, none);
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  EXPECT_EQ(z->steps, 0);
  EXPECT_EQ(z->val_accuracy, z->step0_val_accuracy);
  EXPECT_EQ(z->val_loss, z->step0_val_loss);
  EXPECT_GT(z->val_loss, 0);
  ASSERT_EQ(none.recorded.size(), 2u);
  auto text = storage::ReadVerified(none.recorded[1].path);
  ASSERT_TRUE(text.ok());
  const auto summary = nlohmann::json::parse(*text);
  EXPECT_EQ(summary["steps"], 0);
  EXPECT_EQ(summary["val_loss"].get<double>(), z->val_loss);
  EXPECT_EQ(summary["test_accuracy"].get<double>(), z->test_accuracy);
  EXPECT_EQ(summary["initialized_from"], "");
  // save_model = false: scores only.
  zero.save_model = false;
  GangContext probe(cluster::MakeSoloCollectives());
  probe.dir = dir.File("files");
  ASSERT_TRUE(TrainLanguageModel(zero, probe).ok());
  ASSERT_EQ(probe.recorded.size(), 1u);
  EXPECT_EQ(probe.recorded[0].name, "summary");
}

TEST(LmTest, TrainsOnTokenShardsOfRealData) {
  testing::ScratchDir dir("lm-shards");
  auto writer = TokenShardWriter::Create(dir.File("count"), TokenDType::kUint16, 11);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  common::SplitMix64 rng(5);
  for (int d = 0; d < 200; ++d) {
    std::vector<int32_t> doc;
    int32_t t = static_cast<int32_t>(rng.NextInt(0, 10));
    for (int64_t i = rng.NextInt(30, 60); i > 0; --i, t = (t + 1) % 11) doc.push_back(t);
    ASSERT_TRUE(writer->Add(doc).ok());
  }
  ASSERT_TRUE(writer->Finish().ok());
  TrainConfig c = Small(120);
  c.data = {dir.File("count")};
  c.window = 12;
  c.eval_every = 60;
  c.eval_examples = 32;
  c.learning_rate = 1e-2;
  GangContext ctx(cluster::MakeSoloCollectives());
  auto r = TrainLanguageModel(c, ctx);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // Document boundaries inside a window break the rule: allow a few percent.
  EXPECT_GT(r->test_accuracy, 0.9);
  EXPECT_LT(ctx.losses.back().value, ctx.losses.front().value / 4);
  c.window = 32;  // longer than max_len
  EXPECT_EQ(TrainLanguageModel(c, ctx).status().code(), common::StatusCode::kInvalidArgument);
  c.window = 12;
  c.data = {dir.File("missing")};
  EXPECT_EQ(TrainLanguageModel(c, ctx).status().code(), common::StatusCode::kNotFound);
}

}  // namespace
}  // namespace shammie::workers
