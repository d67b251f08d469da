// Recursive transformers' bookkeeping (workers/recursive.hpp) against the
// oracles of PAPERS.md §1(f): layer maps, Stepwise's Python rounding, the
// Average groups, and the batching simulator's mean depth 1 + (1 - p)(B - 1).
#include <gtest/gtest.h>

#include "workers/recursive.hpp"

namespace shammie::workers::rec {
namespace {

using V = std::vector<int64_t>;

TEST(RecursiveMaps, CycleAndSequence) {
  EXPECT_EQ(LayerMap(6, 3, Tying::kCycle), (V{0, 1, 0, 1, 0, 1}));
  EXPECT_EQ(LayerMap(6, 3, Tying::kSequence), (V{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(LayerMap(6, 2, Tying::kCycle), (V{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(LayerMap(6, 2, Tying::kSequence), (V{0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(LayerMap(4, 1, Tying::kCycle), (V{0, 1, 2, 3}));
  EXPECT_TRUE(CheckLoops(6, 3).ok());
  EXPECT_FALSE(CheckLoops(6, 4).ok());
  EXPECT_FALSE(CheckLoops(6, 0).ok());
  EXPECT_FALSE(CheckLoops(2, 3).ok());
}

TEST(RecursiveMaps, StepwiseRoundsHalvesToEven) {
  EXPECT_EQ(StepwiseLayers(6, 2), (V{0, 5}));
  EXPECT_EQ(StepwiseLayers(6, 3), (V{0, 2, 5}));  // 2.5 -> 2
  EXPECT_EQ(StepwiseLayers(18, 9), (V{0, 2, 4, 6, 8, 11, 13, 15, 17}));  // 8.5 -> 8, not std::round's 9
  EXPECT_EQ(StepwiseLayers(4, 1), (V{0}));
}

TEST(RecursiveMaps, InitSources) {
  using G = std::vector<V>;
  EXPECT_EQ(InitSources(6, 3, Tying::kCycle, Init::kStepwise), (G{{0}, {5}}));
  EXPECT_EQ(InitSources(6, 3, Tying::kCycle, Init::kLower), (G{{0}, {1}}));
  EXPECT_EQ(InitSources(6, 3, Tying::kCycle, Init::kAverage), (G{{0, 2, 4}, {1, 3, 5}}));
  EXPECT_EQ(InitSources(6, 3, Tying::kSequence, Init::kAverage), (G{{0, 1, 2}, {3, 4, 5}}));
  EXPECT_EQ(InitSources(6, 2, Tying::kSequence, Init::kStepwise), (G{{0}, {2}, {5}}));
}

TEST(RecursiveMaps, ParsesNames) {
  EXPECT_EQ(*ParseTying("sequence"), Tying::kSequence);
  EXPECT_EQ(*ParseInit("average"), Init::kAverage);
  EXPECT_EQ(*ParseBatching("depth"), Batching::kDepth);
  EXPECT_FALSE(ParseTying("loop").ok());
  EXPECT_FALSE(ParseInit("upper").ok());
  EXPECT_FALSE(ParseBatching("dynamic").ok());
  EXPECT_EQ(LoraParameters(8, 64, 176), 8 * 240);
}

TEST(BatchingSimulator, ExpectedDepthIsThePapersFormulaForTwoLoops) {
  EXPECT_DOUBLE_EQ(ExpectedDepth(2, 0.5), 1.5);
  EXPECT_DOUBLE_EQ(ExpectedDepth(2, 0.3), 1 + 0.7);
  EXPECT_DOUBLE_EQ(ExpectedDepth(3, 0.5), 1 + 0.5 + 0.25);
  EXPECT_DOUBLE_EQ(ExpectedDepth(4, 0.0), 4);
  EXPECT_DOUBLE_EQ(ExpectedDepth(4, 1.0), 1);
}

TEST(BatchingSimulator, DepthWiseBatchingConvergesToTheMeanDepth) {
  BatchingOptions o;
  o.requests = 4000;
  o.batch = 32;
  o.loops = 2;
  o.exit_prob = 0.5;
  o.min_tokens = 16;
  o.max_tokens = 64;
  const BatchingResult cdb = SimulateBatching(o, Batching::kDepth);
  // 160k tokens: the mean depth's standard error is 0.5 / 400.
  EXPECT_NEAR(cdb.stages_per_token(), 1.5, 0.006);
  EXPECT_GT(cdb.utilization(), 0.98);  // full until the queue runs dry (the drain costs ~0.7% here)
  EXPECT_NEAR(cdb.tokens_per_call(), 32 / 1.5, 0.02 * 32 / 1.5);

  // Without early exit every token runs both loops: M / B tokens per call
  // under either continuous batching. Exits give CDB B / 1.5 = 4/3 of that
  // and sequence-wise batching almost nothing (a step waits for its deepest
  // token: with 32 rows, almost surely 2).
  BatchingOptions full = o;
  full.early_exit = false;
  const BatchingResult seq_full = SimulateBatching(full, Batching::kSequence);
  const BatchingResult cdb_full = SimulateBatching(full, Batching::kDepth);
  EXPECT_NEAR(seq_full.tokens_per_call(), 16, 0.2);
  EXPECT_NEAR(cdb_full.tokens_per_call(), 16, 0.2);
  EXPECT_EQ(seq_full.tokens, cdb.tokens);
  const BatchingResult seq = SimulateBatching(o, Batching::kSequence);
  EXPECT_NEAR(seq.tokens_per_call() / seq_full.tokens_per_call(), 1.0, 0.01);
  EXPECT_NEAR(cdb.tokens_per_call() / cdb_full.tokens_per_call(), 4.0 / 3.0, 0.03);
  EXPECT_EQ(seq.stages, cdb.stages);  // the same tokens at the same depths

  // Static batching also waits for each group's longest sequence.
  const BatchingResult st = SimulateBatching(o, Batching::kStatic);
  EXPECT_LT(st.tokens_per_call(), seq.tokens_per_call());
  EXPECT_EQ(st.tokens, seq.tokens);
}

TEST(BatchingSimulator, DeeperLoopsAndOneRow) {
  BatchingOptions o;
  o.requests = 3000;
  o.batch = 8;
  o.loops = 3;
  o.exit_prob = 0.4;
  const BatchingResult cdb = SimulateBatching(o, Batching::kDepth);
  EXPECT_NEAR(cdb.stages_per_token(), ExpectedDepth(3, 0.4), 0.01);
  // One row: every policy runs each token's own depth, call by call.
  o.batch = 1;
  o.requests = 50;
  const BatchingResult a = SimulateBatching(o, Batching::kStatic), b = SimulateBatching(o, Batching::kSequence),
                       c = SimulateBatching(o, Batching::kDepth);
  EXPECT_EQ(a.calls, a.stages);
  EXPECT_EQ(b.calls, a.calls);
  EXPECT_EQ(c.calls, a.calls);
  EXPECT_DOUBLE_EQ(c.utilization(), 1.0);
}

TEST(BatchingSimulator, RejectsBadOptions) {
  BatchingOptions o;
  EXPECT_TRUE(CheckBatchingOptions(o).ok());
  o.exit_prob = 1.5;
  EXPECT_FALSE(CheckBatchingOptions(o).ok());
  o = {};
  o.max_tokens = 3;
  o.min_tokens = 4;
  EXPECT_FALSE(CheckBatchingOptions(o).ok());
  o = {};
  o.batch = 0;
  EXPECT_FALSE(CheckBatchingOptions(o).ok());
}

}  // namespace
}  // namespace shammie::workers::rec
