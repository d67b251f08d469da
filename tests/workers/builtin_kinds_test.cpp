// The built-in kinds' code, run in-process through LocalJobContext, against
// closed forms and their declared behaviour.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "workers/job_kind.hpp"
#include "workers/local_context.hpp"

namespace shammie::workers {
namespace {

class BuiltinKindsTest : public ::testing::Test {
 protected:
  void SetUp() override { RegisterBuiltinKinds(kinds_); }
  // The kind's defaults, overridden by `overrides`.
  nlohmann::json Config(const std::string& kind, const nlohmann::json& overrides = nlohmann::json::object()) {
    nlohmann::json config = nlohmann::json::object();
    for (const auto& key : kinds_.Find(kind)->config.keys()) config[key.name] = key.default_value;
    config.update(overrides);
    return config;
  }
  common::Status Run(const std::string& kind, LocalJobContext& ctx) { return kinds_.Find(kind)->run(ctx); }
  KindRegistry kinds_;
};

TEST_F(BuiltinKindsTest, EveryBuiltinKindHasCode) {
  for (const auto& name : kinds_.Names()) EXPECT_TRUE(static_cast<bool>(kinds_.Find(name)->run)) << name;
}

TEST_F(BuiltinKindsTest, QuadraticMatchesTheClosedForm) {
  // Without noise: x_k - t = (1 - lr c)^k (x0 - t), loss_k = c/2 (x_k - t)^2.
  const double lr = 0.3, c = 2.0, x0 = 5.0, t = 1.0;
  LocalJobContext ctx("j", Config("toy.quadratic", {{"learning_rate", lr}, {"curvature", c}, {"x0", x0},
                                                    {"target", t}, {"steps", 25}, {"eval_every", 5}}),
                      7);
  ASSERT_TRUE(Run("toy.quadratic", ctx).ok());
  const auto& loss = ctx.metrics().at("loss");
  ASSERT_EQ(loss.size(), 6u) << "steps 0, 5, 10, 15, 20, 25";
  for (const auto& p : loss) {
    const double d = std::pow(1 - lr * c, static_cast<double>(p.step)) * (x0 - t);
    EXPECT_NEAR(p.value, 0.5 * c * d * d, 1e-12 * std::max(1.0, 0.5 * c * d * d)) << "step " << p.step;
  }
  EXPECT_EQ(ctx.metrics().at("diverged").back().value, 0);
}

TEST_F(BuiltinKindsTest, QuadraticDivergenceIsAResult) {
  LocalJobContext ctx("j", Config("toy.quadratic", {{"learning_rate", 5.0}, {"steps", 100000}}), 7);
  ASSERT_TRUE(Run("toy.quadratic", ctx).ok());
  EXPECT_TRUE(std::isinf(ctx.metrics().at("loss").back().value));
  EXPECT_EQ(ctx.metrics().at("diverged").back().value, 1);
}

TEST_F(BuiltinKindsTest, QuadraticNoiseIsSeeded) {
  auto final_loss = [&](uint64_t seed) {
    LocalJobContext ctx("j", Config("toy.quadratic", {{"noise", 0.5}}), seed);
    EXPECT_TRUE(Run("toy.quadratic", ctx).ok());
    return ctx.metrics().at("loss").back().value;
  };
  EXPECT_EQ(final_loss(1), final_loss(1));
  EXPECT_NE(final_loss(1), final_loss(2));
}

TEST_F(BuiltinKindsTest, FailIsDeterministicPerAttemptAndHasTheDeclaredRate) {
  int failures = 0;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    LocalJobContext a("j", Config("bench.fail", {{"probability", 0.3}}), seed, 1);
    LocalJobContext b("j", Config("bench.fail", {{"probability", 0.3}}), seed, 1);
    common::Status sa = Run("bench.fail", a), sb = Run("bench.fail", b);
    EXPECT_EQ(sa.code(), sb.code());
    if (!sa.ok()) {
      EXPECT_EQ(sa.code(), common::StatusCode::kAborted);
      ++failures;
    }
  }
  // Binomial(2000, 0.3): sd = 20.5.
  EXPECT_NEAR(failures, 600, 90);
  LocalJobContext always("j", Config("bench.fail", {{"mode", "invalid"}}), 1);
  EXPECT_EQ(Run("bench.fail", always).code(), common::StatusCode::kInvalidArgument);
  LocalJobContext never("j", Config("bench.fail", {{"probability", 0.0}}), 1);
  EXPECT_TRUE(Run("bench.fail", never).ok());
}

TEST_F(BuiltinKindsTest, CancellationStopsSleepAndHang) {
  LocalJobContext sleeping("j", Config("bench.sleep", {{"seconds", 3600.0}}), 1);
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    sleeping.Cancel();
  });
  EXPECT_EQ(Run("bench.sleep", sleeping).code(), common::StatusCode::kCancelled);
  canceller.join();
  LocalJobContext hanging("j", Config("bench.fail", {{"mode", "hang"}}), 1);
  hanging.Cancel();
  EXPECT_EQ(Run("bench.fail", hanging).code(), common::StatusCode::kCancelled);
  LocalJobContext quick("j", Config("bench.sleep", {{"seconds", 0.0}}), 1);
  EXPECT_TRUE(Run("bench.sleep", quick).ok());
}

TEST_F(BuiltinKindsTest, CrashModeKillsTheProcess) {
  LocalJobContext ctx("j", Config("bench.fail", {{"mode", "crash"}}), 1);
  EXPECT_DEATH((void)Run("bench.fail", ctx), "crashing the process on purpose");
}

TEST_F(BuiltinKindsTest, SimulationWritesItsTable) {
  LocalJobContext ctx("j", Config("sim.llm_eval", {{"items", 1000}, {"labeled", 50}}), 3);
  ASSERT_TRUE(Run("sim.llm_eval", ctx).ok());
  ASSERT_EQ(ctx.tables().count("labels"), 1u);
  EXPECT_EQ(ctx.tables().at("labels").num_rows(), 1000u);
}

}  // namespace
}  // namespace shammie::workers
