// Adaptive sweeps' proposals (orchestrator/adaptive.hpp): the unit-cube
// mapping of the search axes, determinism, the random start, and risk-bo's
// reference point from the region of interest.
#include <gtest/gtest.h>

#include <cmath>

#include "analysis/risk_control.hpp"
#include "orchestrator/adaptive.hpp"
#include "orchestrator/spec_loader.hpp"
#include "workers/job_kind.hpp"

namespace shammie::orchestrator {
namespace {

ExperimentSpec Load(const std::string& sweep) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  LoadResult r = LoadExperimentFromString("[experiment]\nname = \"a\"\nseed = 3\n[[stage]]\nname = \"s\"\n"
                                          "kind = \"toy.quadratic\"\n[stage.sweep]\n" + sweep,
                                          "a.toml", kinds);
  for (const auto& d : r.errors) ADD_FAILURE() << d.ToString();
  return r.ok() ? *r.spec : ExperimentSpec{};
}

const char* kBo = R"(strategy = "bo"
budget = 10
objectives = ["loss"]
random = { samples = 3, learning_rate = { log_uniform = [0.001, 1.0] }, steps = { int_uniform = [10, 20] }, x0 = { uniform = [-1.0, 3.0] } }
)";

TEST(AdaptiveTest, UnitCubeMapsEachAxisKind) {
  const ExperimentSpec spec = Load(kBo);
  ASSERT_EQ(spec.stages.size(), 1u);
  const Stage& s = spec.stages[0];
  // Axes sorted by key: learning_rate (log), steps (int), x0 (linear).
  const nlohmann::json p = UnitToPoint(s, {0.5, 0.5, 0.25});
  EXPECT_NEAR(p["learning_rate"].get<double>(), std::sqrt(0.001), 1e-12);
  EXPECT_EQ(p["steps"].get<int64_t>(), 15);
  EXPECT_DOUBLE_EQ(p["x0"].get<double>(), 0.0);
  const std::vector<double> u = PointToUnit(s, p);
  EXPECT_NEAR(u[0], 0.5, 1e-12);
  EXPECT_NEAR(u[1], 0.5, 1e-12);
  EXPECT_NEAR(u[2], 0.25, 1e-12);
  // Out of range clamps to the box.
  EXPECT_DOUBLE_EQ(PointToUnit(s, {{"learning_rate", 5.0}, {"steps", 10}, {"x0", -7.0}})[2], 0.0);
}

std::vector<AdaptiveObservation> Bowl(const Stage& s, size_t n) {
  std::vector<AdaptiveObservation> out;
  for (size_t i = 0; i < n; ++i) {
    const double t = (static_cast<double>(i) + 0.5) / static_cast<double>(n);
    AdaptiveObservation o;
    o.point = UnitToPoint(s, {t, 1 - t, std::fmod(3 * t, 1.0)});
    const auto u = PointToUnit(s, o.point);
    o.objectives = std::vector<double>{(u[0] - 0.3) * (u[0] - 0.3) + (u[2] - 0.6) * (u[2] - 0.6), u[1]};
    out.push_back(std::move(o));
  }
  return out;
}

TEST(AdaptiveTest, ProposalsAreDeterministicAndNew) {
  ExperimentSpec spec = Load(R"(strategy = "bo"
budget = 10
objectives = ["loss", "cost"]
random = { samples = 3, learning_rate = { log_uniform = [0.001, 1.0] }, steps = { int_uniform = [10, 20] }, x0 = { uniform = [-1.0, 3.0] } }
)");
  const Stage& s = spec.stages[0];
  const auto observed = Bowl(s, 6);
  auto a = ProposeRound(spec, s, observed, 3, 1);
  auto b = ProposeRound(spec, s, observed, 3, 1);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(a->points.size(), 3u);
  EXPECT_EQ(a->points, b->points);
  EXPECT_EQ(a->reference.size(), 2u);
  for (const auto& p : a->points) {
    for (const auto& o : observed) EXPECT_NE(p, o.point);
  }
  EXPECT_NE(a->points[0], a->points[1]);
  // Fewer than two results: seeded random points, still deterministic.
  auto r1 = ProposeRound(spec, s, {observed[0]}, 2, 1);
  auto r2 = ProposeRound(spec, s, {observed[0]}, 2, 1);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->points, r2->points);
  EXPECT_NE(r1->criterion.find("random"), std::string::npos);
  // Maximized objectives are negated: the reference is on the minimized scale.
  spec.stages[0].sweep.adaptive.maximize = {"cost"};
  auto m = ProposeRound(spec, spec.stages[0], observed, 1, 1);
  ASSERT_TRUE(m.ok());
  EXPECT_LT(m->reference[1], 0.0);
}

TEST(AdaptiveTest, RiskBoTakesTheReferenceFromTheRegionOfInterest) {
  const ExperimentSpec spec = Load(R"(strategy = "risk-bo"
budget = 10
objectives = ["risk", "cost"]
constraint = "risk"
alpha = 0.1
delta = 0.1
validation_size = 2500
calibration_size = 2500
random = { samples = 3, target = { uniform = [0.0, 1.0] } }
)");
  const Stage& s = spec.stages[0];
  std::vector<AdaptiveObservation> observed;
  for (int i = 0; i < 8; ++i) {
    const double t = (i + 0.5) / 8;
    AdaptiveObservation o;
    o.point = UnitToPoint(s, {t});
    o.objectives = std::vector<double>{0.2 * t, 1 - t};  // risk rises, cost falls with the first axis
    observed.push_back(std::move(o));
  }
  auto r = ProposeRound(spec, s, observed, 2, 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // PAPERS.md §8(f): (alpha 0.1, delta 0.1, n 2500, 2500) -> upper 0.10447.
  const analysis::RegionOfInterest roi = analysis::ComputeRegionOfInterest(0.1, 0.1, 2500, 2500, 0.01, false);
  EXPECT_NEAR(roi.upper, 0.10447, 1e-4);
  EXPECT_DOUBLE_EQ(r->reference[0], roi.upper);
  // The free coordinate: the cost predicted where the risk is predicted at
  // `lower` (0.0736): t = 0.368, cost 0.632.
  EXPECT_NEAR(r->reference[1], 1 - roi.lower / 0.2, 0.02);
}

}  // namespace
}  // namespace shammie::orchestrator
