#include "common/hash.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/random.hpp"

namespace shammie::common {
namespace {

TEST(HashTest, KnownXxh3Vectors) {
  // XXH3-128 of the empty input, from the xxHash reference test vectors
  // (high64 then low64).
  EXPECT_EQ(Hash128Hex(""), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(Hash128Hex("abc").size(), 32u);
  EXPECT_NE(Hash128Hex("abc"), Hash128Hex("abd"));
}

TEST(HashTest, CanonicalJsonIgnoresKeyOrder) {
  auto a = nlohmann::json::parse(R"({"b": 1, "a": [1, 2.5, "x"], "c": {"z": true, "y": null}})");
  auto b = nlohmann::json::parse(R"({"c": {"y": null, "z": true}, "a": [1, 2.5, "x"], "b": 1})");
  EXPECT_EQ(CanonicalJson(a), CanonicalJson(b));
  EXPECT_EQ(CanonicalJson(a), R"({"a":[1,2.5,"x"],"b":1,"c":{"y":null,"z":true}})");
  // Integers and floats stay distinct; floats print shortest round-trip.
  EXPECT_EQ(CanonicalJson(nlohmann::json(0.1)), "0.1");
  EXPECT_NE(CanonicalJson(nlohmann::json(1)), CanonicalJson(nlohmann::json(1.0)));
}

TEST(RandomTest, SplitMix64MatchesReference) {
  // Reference outputs of SplitMix64 seeded with 1234567 (from the C reference
  // implementation by Vigna).
  SplitMix64 rng(1234567);
  EXPECT_EQ(rng.Next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.Next(), 3203168211198807973ULL);
  EXPECT_EQ(rng.Next(), 9817491932198370423ULL);
}

TEST(RandomTest, UniformRangesAndDeterminism) {
  SplitMix64 a(7), b(7);
  for (int i = 0; i < 1000; ++i) {
    double x = a.NextDouble();
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    EXPECT_EQ(x, b.NextDouble());
    int64_t k = a.NextInt(-3, 3);
    EXPECT_GE(k, -3);
    EXPECT_LE(k, 3);
    (void)b.NextInt(-3, 3);
  }
  EXPECT_EQ(DeriveSeed(7, "train", 0), DeriveSeed(7, "train", 0));
  EXPECT_NE(DeriveSeed(7, "train", 0), DeriveSeed(7, "train", 1));
  EXPECT_NE(DeriveSeed(7, "train", 0), DeriveSeed(7, "eval", 0));
  EXPECT_NE(DeriveSeed(7, "train", 0), DeriveSeed(8, "train", 0));
  EXPECT_LT(DeriveSeed(7, "train", 0), 1ULL << 63);
}

TEST(RandomTest, IntegersAreUnbiased) {
  SplitMix64 rng(99);
  int counts[3] = {0, 0, 0};
  const int n = 30000;
  for (int i = 0; i < n; ++i) counts[rng.NextInt(0, 2)]++;
  // Each count ~ Binomial(30000, 1/3): sd ~ 82; 5 sd bounds.
  for (int c : counts) EXPECT_NEAR(c, n / 3.0, 410);
}

}  // namespace
}  // namespace shammie::common
