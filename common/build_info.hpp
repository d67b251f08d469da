// What this binary is: version, git commit, build options. Recorded with
// every result (STYLE.md 17).
#pragma once

#include <string_view>

namespace shammie::common {

std::string_view Version();        // "0.1.0"
std::string_view GitCommit();      // commit at configure time, "+dirty" when the tree had changes, or "unknown"
std::string_view BuildOptions();   // "build_type=RelWithDebInfo sanitize=OFF cuda=ON compiler=GNU-12.2.0"

}  // namespace shammie::common
