#include "workers/fused_cpu.hpp"

#include <cmath>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <string>
#include <limits>
#include <vector>

// The 16-lane vector helpers below are always inlined, so the ABI note GCC
// gives for passing 64-byte vectors never applies.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace shammie::workers::fused {

#define SHAMMIE_INLINE inline __attribute__((always_inline))

namespace {

constexpr int kLanes = 16;  // independent partial sums: vectorizable, and a fixed order

SHAMMIE_INLINE float ExpInline(float x) {
  // e^x = 2^n e^r with n = round(x log2 e), r = x - n ln 2 (ln 2 in two
  // parts so r is exact), e^r by Cephes' expf polynomial on |r| <= ln2 / 2.
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.0f ? 88.0f : x;
  // Round to nearest by the 1.5 * 2^23 trick: the low mantissa bits of `t`
  // then hold n, which vectorizes on every x86 level (no floor instruction).
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  // 2^n: n + 127 into the exponent field (n lies in [-126, 127]).
  const int32_t e = ((bits - 0x4B400000) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale;
}

// 16 floats as one GCC vector: lowered to one AVX-512 register, two AVX2
// or four SSE ones by each clone.
typedef float V16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));
constexpr int64_t kV = 16;

SHAMMIE_INLINE V16 Load(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
SHAMMIE_INLINE void Store(float* p, V16 v) { std::memcpy(p, &v, sizeof v); }
SHAMMIE_INLINE V16 Splat(float x) { return V16{} + x; }

// ExpInline on 16 lanes, the same operations in the same order.
SHAMMIE_INLINE V16 ExpV(V16 x) {
  x = x < Splat(-87.33654f) ? Splat(-87.33654f) : x;
  x = x > Splat(88.0f) ? Splat(88.0f) : x;
  const V16 t = x * 1.44269504088896341f + 12582912.0f;
  const V16 n = t - 12582912.0f;
  V16 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V16 p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I16 e = ((std::bit_cast<I16>(t) - 0x4B400000) + 127) << 23;
  return p * std::bit_cast<V16>(e);
}

// Sum over j < d of term(j), in kLanes partial sums: vectorizable, and the
// same order on every call.
template <typename Term>
SHAMMIE_INLINE float LaneSum(int64_t d, Term term) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += term(j + k);
  }
  for (int k = 0; j < d; ++j, ++k) acc[k] += term(j);
  float s = 0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

SHAMMIE_INLINE float SumSquares(const float* x, int64_t d) {
  return LaneSum(d, [x](int64_t j) { return x[j] * x[j]; });
}

SHAMMIE_INLINE float Dot(const float* a, const float* b, int64_t d) {
  return LaneSum(d, [a, b](int64_t j) { return a[j] * b[j]; });
}

SHAMMIE_INLINE float DotWeighted(const float* a, const float* w, const float* b, int64_t d) {
  return LaneSum(d, [a, w, b](int64_t j) { return a[j] * w[j] * b[j]; });
}

SHAMMIE_INLINE float Max(const float* x, int64_t n) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float acc[kLanes];
  for (float& a : acc) a = kNegInf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] = x[j + k] > acc[k] ? x[j + k] : acc[k];
  }
  for (int k = 0; j < n; ++j, ++k) acc[k] = x[j] > acc[k] ? x[j] : acc[k];
  float m = kNegInf;
  for (int k = 0; k < kLanes; ++k) m = acc[k] > m ? acc[k] : m;
  return m;
}

}  // namespace

float Exp(float x) { return ExpInline(x); }

SHAMMIE_INLINE void RmsNormForwardImpl(const float* x, const float* w, float eps, int64_t d, int64_t begin,
                                         int64_t end, float* y, float* r) {
  for (int64_t i = begin; i < end; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    const float ri = 1.0f / std::sqrt(SumSquares(xi, d) / static_cast<float>(d) + eps);
    r[i] = ri;
    for (int64_t j = 0; j < d; ++j) yi[j] = xi[j] * ri * w[j];
  }
}

SHAMMIE_INLINE void RmsNormBackwardInputImpl(const float* x, const float* w, const float* r, const float* dy,
                                               int64_t d, int64_t begin, int64_t end, float* dx) {
  for (int64_t i = begin; i < end; ++i) {
    const float* xi = x + i * d;
    const float* dyi = dy + i * d;
    float* dxi = dx + i * d;
    const float ri = r[i];
    // d y_j / d x_k = r w_j [j = k] - w_j x_j r^3 x_k / d
    const float c = DotWeighted(dyi, w, xi, d) * ri * ri * ri / static_cast<float>(d);
    for (int64_t j = 0; j < d; ++j) dxi[j] = ri * dyi[j] * w[j] - c * xi[j];
  }
}

SHAMMIE_INLINE void RmsNormBackwardWeightImpl(const float* x, const float* r, const float* dy, int64_t rows,
                                                int64_t d, float* dw) {
  for (int64_t j = 0; j < d; ++j) dw[j] = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* xi = x + i * d;
    const float* dyi = dy + i * d;
    const float ri = r[i];
    for (int64_t j = 0; j < d; ++j) dw[j] += dyi[j] * xi[j] * ri;
  }
}

namespace {

// Positions (b, t) of rows [begin, end): the x row, the heads-layout base and
// the cos/sin row of each.
template <typename F>
SHAMMIE_INLINE void ForPositions(const RopeShape& s, int64_t begin, int64_t end, F&& f) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t bi = row / s.t, ti = row % s.t;
    f(row * s.x_row, (bi * s.heads * s.t + ti) * s.hd, bi * s.cs_batch + ti * (s.hd / 2));
  }
}

}  // namespace

SHAMMIE_INLINE void RopeToHeadsImpl(const float* x, const float* cos, const float* sin, const RopeShape& s,
                                      int64_t begin, int64_t end, float* y) {
  const int64_t half = s.hd / 2, head_step = s.t * s.hd;
  ForPositions(s, begin, end, [&](int64_t xo, int64_t yo, int64_t co) {
    const float* c = cos + co;
    const float* sn = sin + co;
    for (int64_t h = 0; h < s.heads; ++h) {
      const float* x1 = x + xo + h * s.hd;
      const float* x2 = x1 + half;
      float* y1 = y + yo + h * head_step;
      float* y2 = y1 + half;
      for (int64_t j = 0; j < half; ++j) {
        y1[j] = x1[j] * c[j] - x2[j] * sn[j];
        y2[j] = x1[j] * sn[j] + x2[j] * c[j];
      }
    }
  });
}

SHAMMIE_INLINE void RopeFromHeadsImpl(const float* dy, const float* cos, const float* sin, const RopeShape& s,
                                        int64_t begin, int64_t end, float* dx) {
  const int64_t half = s.hd / 2, head_step = s.t * s.hd;
  ForPositions(s, begin, end, [&](int64_t xo, int64_t yo, int64_t co) {
    const float* c = cos + co;
    const float* sn = sin + co;
    for (int64_t h = 0; h < s.heads; ++h) {
      const float* dy1 = dy + yo + h * head_step;
      const float* dy2 = dy1 + half;
      float* dx1 = dx + xo + h * s.hd;
      float* dx2 = dx1 + half;
      for (int64_t j = 0; j < half; ++j) {
        dx1[j] = dy1[j] * c[j] + dy2[j] * sn[j];
        dx2[j] = dy2[j] * c[j] - dy1[j] * sn[j];
      }
    }
  });
}

SHAMMIE_INLINE void ToHeadsImpl(const float* x, const RopeShape& s, int64_t begin, int64_t end, float* y) {
  const int64_t head_step = s.t * s.hd;
  ForPositions(s, begin, end, [&](int64_t xo, int64_t yo, int64_t) {
    for (int64_t h = 0; h < s.heads; ++h) std::memcpy(y + yo + h * head_step, x + xo + h * s.hd, s.hd * sizeof(float));
  });
}

SHAMMIE_INLINE void FromHeadsImpl(const float* dy, const RopeShape& s, int64_t begin, int64_t end, float* dx) {
  const int64_t head_step = s.t * s.hd;
  ForPositions(s, begin, end, [&](int64_t xo, int64_t yo, int64_t) {
    for (int64_t h = 0; h < s.heads; ++h) {
      std::memcpy(dx + xo + h * s.hd, dy + yo + h * head_step, s.hd * sizeof(float));
    }
  });
}

SHAMMIE_INLINE void MaskedSoftmaxForwardImpl(const float* s, const MaskLayout& m, float scale, int64_t n,
                                               int64_t begin, int64_t end, float* p) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t i = begin; i < end; ++i) {
    const float* si = s + i * n;
    float* pi = p + i * n;
    if (m.mask) {
      const int64_t i2 = i % m.d2, i1 = (i / m.d2) % m.d1, i0 = i / (m.d2 * m.d1);
      const uint8_t* mi = m.mask + i0 * m.stride[0] + i1 * m.stride[1] + i2 * m.stride[2];
      const int64_t ms = m.stride[3];
      if (ms == 1) {
        for (int64_t j = 0; j < n; ++j) pi[j] = mi[j] ? kNegInf : si[j] * scale;
      } else {
        for (int64_t j = 0; j < n; ++j) pi[j] = mi[j * ms] ? kNegInf : si[j] * scale;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) pi[j] = si[j] * scale;
    }
    const float top = Max(pi, n);
    if (top == kNegInf) {  // every entry masked: torch's softmax gives NaN
      for (int64_t j = 0; j < n; ++j) pi[j] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const V16 neg_inf = Splat(kNegInf), zero = Splat(0.0f), vtop = Splat(top);
    V16 vacc = zero;
    int64_t j = 0;
    for (; j + kV <= n; j += kV) {
      const V16 v = Load(pi + j);
      const V16 e = v == neg_inf ? zero : ExpV(v - vtop);
      Store(pi + j, e);
      vacc += e;
    }
    float acc[kV];
    std::memcpy(acc, &vacc, sizeof acc);
    for (int k = 0; j < n; ++j, ++k) {
      const float v = pi[j];
      const float e = v == kNegInf ? 0.0f : ExpInline(v - top);
      pi[j] = e;
      acc[k] += e;
    }
    float sum = 0;
    for (int k = 0; k < kV; ++k) sum += acc[k];
    const float inv = 1.0f / sum;
    for (j = 0; j < n; ++j) pi[j] *= inv;
  }
}

SHAMMIE_INLINE void MaskedSoftmaxBackwardImpl(const float* p, const float* dp, float scale, int64_t n, int64_t begin,
                                                int64_t end, float* ds) {
  for (int64_t i = begin; i < end; ++i) {
    const float* pi = p + i * n;
    const float* dpi = dp + i * n;
    float* dsi = ds + i * n;
    const float dot = Dot(pi, dpi, n);
    for (int64_t j = 0; j < n; ++j) dsi[j] = scale * pi[j] * (dpi[j] - dot);
  }
}

SHAMMIE_INLINE void SwiGluForwardImpl(const float* h, int64_t f, int64_t begin, int64_t end, float* y) {
  for (int64_t i = begin; i < end; ++i) {
    const float* a = h + i * 2 * f;
    const float* g = a + f;
    float* yi = y + i * f;
    int64_t j = 0;
    for (; j + kV <= f; j += kV) {
      const V16 av = Load(a + j);
      Store(yi + j, av / (1.0f + ExpV(-av)) * Load(g + j));
    }
    for (; j < f; ++j) yi[j] = a[j] / (1.0f + ExpInline(-a[j])) * g[j];
  }
}

SHAMMIE_INLINE void SwiGluBackwardImpl(const float* h, const float* dy, int64_t f, int64_t begin, int64_t end,
                                         float* dh) {
  for (int64_t i = begin; i < end; ++i) {
    const float* a = h + i * 2 * f;
    const float* g = a + f;
    const float* dyi = dy + i * f;
    float* da = dh + i * 2 * f;
    float* dg = da + f;
    int64_t j = 0;
    for (; j + kV <= f; j += kV) {
      const V16 av = Load(a + j), dyv = Load(dyi + j);
      const V16 sig = 1.0f / (1.0f + ExpV(-av));
      const V16 silu = av * sig;
      Store(da + j, dyv * Load(g + j) * (sig + silu * (1.0f - sig)));
      Store(dg + j, dyv * silu);
    }
    for (; j < f; ++j) {
      const float sig = 1.0f / (1.0f + ExpInline(-a[j]));
      const float silu = a[j] * sig;
      da[j] = dyi[j] * g[j] * (sig + silu * (1.0f - sig));
      dg[j] = dyi[j] * silu;
    }
  }
}

SHAMMIE_INLINE void AdamWUpdateImpl(float* __restrict p, const float* __restrict g, float* __restrict m,
                                    float* __restrict v, const AdamWScalars& s, int64_t begin, int64_t end) {
  const float decay = s.decay, scale = s.grad_scale, b1 = s.beta1, c1 = s.one_minus_beta1, b2 = s.beta2,
              c2 = s.one_minus_beta2, sqrt_bc2 = s.sqrt_bc2, step = s.step_size, eps = s.eps;
  for (int64_t j = begin; j < end; ++j) {
    const float gj = g[j] * scale;
    const float mj = m[j] * b1 + gj * c1;
    const float vj = v[j] * b2 + gj * gj * c2;
    m[j] = mj;
    v[j] = vj;
    p[j] = p[j] * decay - step * (mj / (std::sqrt(vj) / sqrt_bc2 + eps));
  }
}

SHAMMIE_INLINE double SumSquaresDoubleImpl(const float* x, int64_t begin, int64_t end) {
  double acc[8] = {};
  int64_t j = begin;
  for (; j + 8 <= end; j += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(x[j + k]) * static_cast<double>(x[j + k]);
  }
  for (int k = 0; j < end; ++j, ++k) acc[k] += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  double s = 0;
  for (double a : acc) s += a;
  return s;
}

// --- dispatch: one compilation of each kernel per x86 family, chosen by the
// CPU's usable features (not its model: GCC's target_clones("arch=...")
// dispatches on the model and runs the baseline clone on CPUs newer than the
// compiler, as OpenBLAS does; common/blas_core.hpp).

namespace {

enum class Isa { kBase, kAvx2, kAvx512 };

Isa DetectIsa() {
  Isa isa = Isa::kBase;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    isa = Isa::kAvx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    isa = Isa::kAvx2;
  }
#endif
  // ATen's own cap on its vector kernels applies here too, so one variable
  // pins every kernel family in a run (README, "kernel families").
  if (const char* cap = std::getenv("ATEN_CPU_CAPABILITY")) {
    const std::string c = cap;
    if (c == "default") isa = Isa::kBase;
    if (c == "avx2" && isa == Isa::kAvx512) isa = Isa::kAvx2;
  }
  return isa;
}

const Isa kIsa = DetectIsa();

}  // namespace

#if defined(__x86_64__)
#define SHAMMIE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define SHAMMIE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define SHAMMIE_TARGET_AVX512
#define SHAMMIE_TARGET_AVX2
#endif

// Name(params) calls NameImpl(args) compiled for the detected family.
#define SHAMMIE_DISPATCH(Name, Params, Args)                                   \
  namespace {                                                                  \
  SHAMMIE_TARGET_AVX512 void Name##Avx512 Params { Name##Impl Args; }          \
  SHAMMIE_TARGET_AVX2 void Name##Avx2 Params { Name##Impl Args; }              \
  void Name##Base Params { Name##Impl Args; }                                  \
  }                                                                            \
  void Name Params {                                                           \
    switch (kIsa) {                                                            \
      case Isa::kAvx512: return Name##Avx512 Args;                             \
      case Isa::kAvx2: return Name##Avx2 Args;                                 \
      case Isa::kBase: break;                                                  \
    }                                                                          \
    Name##Base Args;                                                           \
  }

SHAMMIE_DISPATCH(RmsNormForward,
                 (const float* x, const float* w, float eps, int64_t d, int64_t begin, int64_t end, float* y, float* r),
                 (x, w, eps, d, begin, end, y, r))
SHAMMIE_DISPATCH(RmsNormBackwardInput,
                 (const float* x, const float* w, const float* r, const float* dy, int64_t d, int64_t begin,
                  int64_t end, float* dx),
                 (x, w, r, dy, d, begin, end, dx))
SHAMMIE_DISPATCH(RmsNormBackwardWeight,
                 (const float* x, const float* r, const float* dy, int64_t rows, int64_t d, float* dw),
                 (x, r, dy, rows, d, dw))
SHAMMIE_DISPATCH(RopeToHeads,
                 (const float* x, const float* cos, const float* sin, const RopeShape& s, int64_t begin, int64_t end,
                  float* y),
                 (x, cos, sin, s, begin, end, y))
SHAMMIE_DISPATCH(RopeFromHeads,
                 (const float* dy, const float* cos, const float* sin, const RopeShape& s, int64_t begin, int64_t end,
                  float* dx),
                 (dy, cos, sin, s, begin, end, dx))
SHAMMIE_DISPATCH(ToHeads, (const float* x, const RopeShape& s, int64_t begin, int64_t end, float* y),
                 (x, s, begin, end, y))
SHAMMIE_DISPATCH(FromHeads, (const float* dy, const RopeShape& s, int64_t begin, int64_t end, float* dx),
                 (dy, s, begin, end, dx))
SHAMMIE_DISPATCH(MaskedSoftmaxForward,
                 (const float* s, const MaskLayout& m, float scale, int64_t n, int64_t begin, int64_t end, float* p),
                 (s, m, scale, n, begin, end, p))
SHAMMIE_DISPATCH(MaskedSoftmaxBackward,
                 (const float* p, const float* dp, float scale, int64_t n, int64_t begin, int64_t end, float* ds),
                 (p, dp, scale, n, begin, end, ds))
SHAMMIE_DISPATCH(SwiGluForward, (const float* h, int64_t f, int64_t begin, int64_t end, float* y),
                 (h, f, begin, end, y))
SHAMMIE_DISPATCH(SwiGluBackward,
                 (const float* h, const float* dy, int64_t f, int64_t begin, int64_t end, float* dh),
                 (h, dy, f, begin, end, dh))

namespace {
SHAMMIE_TARGET_AVX512 double SumSquaresDoubleAvx512(const float* x, int64_t b, int64_t e) {
  return SumSquaresDoubleImpl(x, b, e);
}
SHAMMIE_TARGET_AVX2 double SumSquaresDoubleAvx2(const float* x, int64_t b, int64_t e) {
  return SumSquaresDoubleImpl(x, b, e);
}
double SumSquaresDoubleBase(const float* x, int64_t b, int64_t e) { return SumSquaresDoubleImpl(x, b, e); }
}  // namespace

SHAMMIE_DISPATCH(AdamWUpdate,
                 (float* p, const float* g, float* m, float* v, const AdamWScalars& s, int64_t begin, int64_t end),
                 (p, g, m, v, s, begin, end))

double SumSquaresDouble(const float* x, int64_t begin, int64_t end) {
  switch (kIsa) {
    case Isa::kAvx512: return SumSquaresDoubleAvx512(x, begin, end);
    case Isa::kAvx2: return SumSquaresDoubleAvx2(x, begin, end);
    case Isa::kBase: break;
  }
  return SumSquaresDoubleBase(x, begin, end);
}

}  // namespace shammie::workers::fused
