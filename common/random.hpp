// Portable, seeded random numbers. The standard library's distributions are
// implementation-defined, so anything that must give the same numbers on
// every machine (sweep sampling, seed derivation) uses these instead.
#pragma once

#include <cstdint>
#include <string_view>

namespace shammie::common {

// SplitMix64 (Steele, Lea, Flood 2014): a full-period 64-bit generator.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble();
  // Uniform integer in [lo, hi] (inclusive), without modulo bias.
  int64_t NextInt(int64_t lo, int64_t hi);
  // Standard normal (Box-Muller; one variate per call, portable).
  double NextNormal();

 private:
  uint64_t state_;
};

// Derives a child seed from a parent seed and a label (e.g. a stage name) and
// an index (e.g. a replicate number). Deterministic and well mixed.
uint64_t DeriveSeed(uint64_t parent, std::string_view label, uint64_t index);

}  // namespace shammie::common
