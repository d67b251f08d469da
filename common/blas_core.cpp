#include "common/blas_core.hpp"

#include <cstdlib>

namespace shammie::common {

std::string OpenBlasCoreForThisCpu() {
#if defined(__x86_64__) || defined(__i386__)
  // GCC's cpu model (libgcc) counts a feature only when CPUID reports it and
  // XCR0 shows the OS saves its registers (YMM for AVX2, ZMM and opmask for
  // AVX-512), which is the check OpenBLAS itself makes.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

BlasCoreChoice PreferOpenBlasCore() {
  BlasCoreChoice choice;
  if (const char* user = std::getenv("OPENBLAS_CORETYPE"); user && *user) {
    choice.core = user;
    choice.reason = std::string("OPENBLAS_CORETYPE=") + user + " (set before shammie started)";
    return choice;
  }
  if (const char* keep = std::getenv("SHAMMIE_BLAS_CORE"); keep && std::string(keep) == "keep") {
    choice.reason = "SHAMMIE_BLAS_CORE=keep: OpenBLAS detects its kernels itself";
    return choice;
  }
  const std::string core = OpenBlasCoreForThisCpu();
  if (core.empty()) {
    choice.reason = "no AVX2/AVX-512 kernel family applies: OpenBLAS detects its kernels itself";
    return choice;
  }
  ::setenv("OPENBLAS_CORETYPE", core.c_str(), 0);
  choice.core = core;
  choice.set_now = true;
  choice.reason = "OPENBLAS_CORETYPE=" + core + " from the CPU's usable instruction sets";
  return choice;
}

}  // namespace shammie::common
