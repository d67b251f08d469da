// One typed column of a stored per-example table, for tests that read
// results.h5 back (an unknown name or type fails the test).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include "storage/result_store.hpp"

namespace shammie::testing {

template <typename T>
const std::vector<T>& Column(const storage::Table& t, const std::string& name) {
  for (const auto& c : t.columns) {
    if (c.name != name) continue;
    if (const auto* v = std::get_if<std::vector<T>>(&c.values)) return *v;
    ADD_FAILURE() << "column " << name << " has another type";
    static const std::vector<T> kWrongType;
    return kWrongType;
  }
  ADD_FAILURE() << "no column " << name;
  static const std::vector<T> kEmpty;
  return kEmpty;
}

}  // namespace shammie::testing
