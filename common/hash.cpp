#include "common/hash.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>
#include <xxhash.h>

namespace shammie::common {

std::string Hash128Hex(std::string_view bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return std::string(buf, 32);
}

uint64_t Hash64(std::string_view bytes, uint64_t seed) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

std::string CanonicalJson(const nlohmann::json& value) {
  // nlohmann::json stores objects in a std::map, so keys are already sorted;
  // dump() without indent emits no whitespace and shortest round-trip floats.
  return value.dump(-1, ' ', /*ensure_ascii=*/true);
}

}  // namespace shammie::common
