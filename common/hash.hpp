// Content hashing and canonical JSON: the basis of job ids and spec hashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace shammie::common {

// 128-bit XXH3 of the bytes, as 32 lowercase hex digits. Stable across
// platforms and versions of libxxhash (XXH3 is a frozen format since 0.8).
std::string Hash128Hex(std::string_view bytes);
// 64-bit XXH3 of the bytes with a seed.
uint64_t Hash64(std::string_view bytes, uint64_t seed = 0);

// Canonical JSON: objects with keys sorted, no whitespace, numbers in the
// shortest form that round-trips. Two equal values always give equal text.
std::string CanonicalJson(const nlohmann::json& value);

}  // namespace shammie::common
