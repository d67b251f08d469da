// Choosing OpenBLAS's kernels before it loads.
//
// OpenBLAS (DYNAMIC_ARCH, as Debian builds it) picks its kernels from the
// CPU's family and model number when the library loads. A CPU newer than the
// library is not in its table and gets the generic fallback: Debian 12's
// OpenBLAS 0.3.21 runs SSE3 ("Prescott") kernels on an Emerald Rapids Xeon
// (family 6, model 0xCF) that has AVX-512, and float32 GEMM runs 4.5x slower
// than with its AVX-512 ("SkylakeX") kernels (docs/benchmarks.md). LibTorch
// trains through that GEMM, so shammie names the kernel family from the
// instruction sets the CPU and the OS actually support, through the
// OPENBLAS_CORETYPE variable OpenBLAS reads when it loads.
//
// A user's own OPENBLAS_CORETYPE always wins, and SHAMMIE_BLAS_CORE=keep
// leaves OpenBLAS's detection alone (docs/runtime.md).
#pragma once

#include <string>

namespace shammie::common {

// The OpenBLAS kernel family for this CPU's usable instruction sets:
// "SkylakeX" when AVX-512 F, CD, BW, DQ and VL are usable (the CPU has them
// and the OS saves their registers), "Haswell" for AVX2 + FMA, and "" where
// nothing better than OpenBLAS's own detection can be said (older x86, other
// architectures).
std::string OpenBlasCoreForThisCpu();

// What PreferOpenBlasCore decided.
struct BlasCoreChoice {
  std::string core;    // the value of OPENBLAS_CORETYPE after the call ("" if unset)
  bool set_now = false;  // true when this call set it
  std::string reason;  // one line for the log
};

// Sets OPENBLAS_CORETYPE to OpenBlasCoreForThisCpu() unless it is already set
// or SHAMMIE_BLAS_CORE is "keep". Call it before OpenBLAS loads (before the
// LibTorch plugin is opened); once loaded, OpenBLAS keeps the kernels it chose.
BlasCoreChoice PreferOpenBlasCore();

}  // namespace shammie::common
