// A job kind's resolved config for tests that call job code directly: the
// defaults of the kind's keys with `overrides` applied (an override of an
// unknown key fails the test). Keys without a default are absent unless
// overridden, as in the spec loader's resolved configs.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "workers/job_kind.hpp"

namespace shammie::testing {

inline nlohmann::json KindConfig(const std::string& kind, const nlohmann::json& overrides) {
  workers::KindRegistry registry;
  workers::RegisterBuiltinKinds(registry);
  const workers::JobKind* k = registry.Find(kind);
  EXPECT_NE(k, nullptr) << kind;
  nlohmann::json c = nlohmann::json::object();
  if (!k) return c;
  for (const auto& key : k->config.keys()) {
    if (!key.default_value.is_null()) c[key.name] = key.default_value;
  }
  for (const auto& [key, value] : overrides.items()) {
    EXPECT_NE(k->config.Find(key), nullptr) << key;
    c[key] = value;
  }
  return c;
}

}  // namespace shammie::testing
