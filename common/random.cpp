#include "common/random.hpp"

#include <cmath>

#include "common/hash.hpp"

namespace shammie::common {

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SplitMix64::NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

int64_t SplitMix64::NextInt(int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
  if (span == 0) return static_cast<int64_t>(Next());  // the whole 64-bit range
  const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t x = Next();
  while (x >= limit) x = Next();
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + x % span);
}

double SplitMix64::NextNormal() {
  double u1 = NextDouble();
  while (u1 <= 0) u1 = NextDouble();
  const double u2 = NextDouble();
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * 3.14159265358979323846 * u2);
}

uint64_t DeriveSeed(uint64_t parent, std::string_view label, uint64_t index) {
  SplitMix64 mix(parent ^ Hash64(label, 0x5eed));
  uint64_t a = mix.Next();
  SplitMix64 mix2(a + index * 0x9e3779b97f4a7c15ULL);
  // Keep seeds in the non-negative int64 range so they survive TOML/JSON/HDF5.
  return mix2.Next() >> 1;
}

}  // namespace shammie::common
