#include "common/blas_core.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>

namespace shammie::common {
namespace {

// The kernel family from the kernel's own view of the CPU (/proc/cpuinfo
// lists a feature only when the OS enables its registers): the oracle for
// OpenBlasCoreForThisCpu, which reads CPUID and XCR0 instead.
std::string CoreFromProcCpuinfo() {
  std::ifstream in("/proc/cpuinfo");
  std::set<std::string> flags;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) flags.insert(w);
    break;
  }
  auto has = [&](const char* f) { return flags.count(f) > 0; };
  if (has("avx512f") && has("avx512cd") && has("avx512bw") && has("avx512dq") && has("avx512vl")) return "SkylakeX";
  if (has("avx2") && has("fma")) return "Haswell";
  return "";
}

// Sets or clears environment variables for one test and puts them back.
class EnvGuard {
 public:
  explicit EnvGuard(const char* name) : name_(name) {
    if (const char* v = ::getenv(name)) old_ = v;
  }
  ~EnvGuard() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  void Set(const char* value) { ::setenv(name_, value, 1); }
  void Clear() { ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(BlasCoreTest, FamilyMatchesTheKernelsViewOfTheCpu) {
#if defined(__x86_64__)
  EXPECT_EQ(OpenBlasCoreForThisCpu(), CoreFromProcCpuinfo());
#else
  EXPECT_EQ(OpenBlasCoreForThisCpu(), "");
#endif
}

TEST(BlasCoreTest, SetsTheVariableWhenNobodyDid) {
  EnvGuard core("OPENBLAS_CORETYPE"), keep("SHAMMIE_BLAS_CORE");
  core.Clear();
  keep.Clear();
  const BlasCoreChoice c = PreferOpenBlasCore();
  const std::string expected = OpenBlasCoreForThisCpu();
  EXPECT_EQ(c.core, expected);
  EXPECT_EQ(c.set_now, !expected.empty());
  const char* now = ::getenv("OPENBLAS_CORETYPE");
  EXPECT_EQ(now ? std::string(now) : "", expected);
  // A second call finds it set and changes nothing.
  const BlasCoreChoice again = PreferOpenBlasCore();
  EXPECT_FALSE(again.set_now);
  EXPECT_EQ(again.core, expected);
}

TEST(BlasCoreTest, TheUsersChoiceWins) {
  EnvGuard core("OPENBLAS_CORETYPE"), keep("SHAMMIE_BLAS_CORE");
  core.Set("Nehalem");
  keep.Clear();
  const BlasCoreChoice c = PreferOpenBlasCore();
  EXPECT_FALSE(c.set_now);
  EXPECT_EQ(c.core, "Nehalem");
  EXPECT_STREQ(::getenv("OPENBLAS_CORETYPE"), "Nehalem");
}

TEST(BlasCoreTest, KeepLeavesOpenBlasToDetectItself) {
  EnvGuard core("OPENBLAS_CORETYPE"), keep("SHAMMIE_BLAS_CORE");
  core.Clear();
  keep.Set("keep");
  const BlasCoreChoice c = PreferOpenBlasCore();
  EXPECT_FALSE(c.set_now);
  EXPECT_EQ(c.core, "");
  EXPECT_EQ(::getenv("OPENBLAS_CORETYPE"), nullptr);
}

}  // namespace
}  // namespace shammie::common
