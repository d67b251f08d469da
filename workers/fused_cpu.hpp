// Fused float32 CPU kernels of the transformer's element-wise layers
// (RMSNorm, rotary positions, masked softmax, SwiGLU), forward and backward.
//
// LibTorch runs each of these layers as 5-12 separate ops, each a pass over
// memory with its own dispatch, allocation and broadcasting; PyTorch eager
// does the same. Here each layer is one pass per direction over rows that
// fit in cache. workers/lm_model.cpp wraps them in autograd functions for CPU
// float32 tensors (other devices and dtypes keep the composite ops), and
// tests/workers/fused_cpu_test.cpp checks them against the composite ops in
// float64, forward and backward.
//
// No LibTorch here: plain loops over rows [begin, end), so the caller can
// split rows over threads; within a row the order of operations is fixed,
// so results do not depend on the split. Every function is compiled for
// AVX-512, AVX2+FMA and baseline x86-64 and picks one at load time from the
// CPU's features, like ATen's own kernels, and ATEN_CPU_CAPABILITY caps it
// as it caps ATen's ("default": baseline, "avx2"). The families round
// differently (README, "kernel families").
#pragma once

#include <cstdint>

namespace shammie::workers::fused {

// e^x for float x: Cody-Waite range reduction and a degree-6 polynomial;
// relative error below 3e-7 for x in [-87, 88]. Inputs are clamped to
// [-87.34, 88] first: below, the result is about the smallest normal float
// (1.2e-38) instead of a denormal or zero; above, e^88 = 1.65e38 instead of
// the true value or infinity. Exposed for the tests.
float Exp(float x);

// RMSNorm of `rows` rows of length d: y = x * r * w with
// r = 1 / sqrt(mean(x^2) + eps). Writes y [rows, d] and r [rows].
void RmsNormForward(const float* x, const float* w, float eps, int64_t d, int64_t begin, int64_t end, float* y,
                    float* r);
// dx = r * g - x * r^3 * mean(g * x), g = dy * w, for rows [begin, end).
void RmsNormBackwardInput(const float* x, const float* w, const float* r, const float* dy, int64_t d, int64_t begin,
                          int64_t end, float* dx);
// dw = sum over rows of dy * x * r (all rows, in row order).
void RmsNormBackwardWeight(const float* x, const float* r, const float* dy, int64_t rows, int64_t d, float* dw);

// Rotary positions in the rotate-half layout over x [b, t, heads, hd] with
// row stride `x_row` between consecutive (b, t) positions (so q and k can be
// read from a packed [b, t, 3d] projection) into y [b, heads, t, hd]
// (contiguous): y1 = x1 c - x2 s, y2 = x1 s + x2 c for the halves of each
// head, with c, s from cos/sin [cb, t, hd/2] (cb = 1: every row uses the
// same positions; cb = b: per row). `inverse` rotates the other way (the
// backward pass, from dy in [b, heads, t, hd] layout back into the x layout).
// Rows are the b * t positions; [begin, end) splits them.
struct RopeShape {
  int64_t b, t, heads, hd;
  int64_t x_row;      // floats between (b, t) and (b, t + 1) in the x layout
  int64_t cs_batch;   // floats between rows of cos/sin: 0 (shared) or t * hd / 2
};
void RopeToHeads(const float* x, const float* cos, const float* sin, const RopeShape& s, int64_t begin, int64_t end,
                 float* y);
void RopeFromHeads(const float* dy, const float* cos, const float* sin, const RopeShape& s, int64_t begin,
                   int64_t end, float* dx);
// The plain relayout of v: x [b, t, heads, hd] (row stride x_row) into
// y [b, heads, t, hd], and back.
void ToHeads(const float* x, const RopeShape& s, int64_t begin, int64_t end, float* y);
void FromHeads(const float* dy, const RopeShape& s, int64_t begin, int64_t end, float* dx);

// Softmax over the last axis of scale * s with masked entries (mask != 0)
// taking no weight: p = exp(scale s - max) / sum, over rows of length n. A
// row with every entry masked becomes NaN, as torch's softmax of a row of
// -inf does. The mask is read through strides (broadcast dims have stride 0):
// row i of the [rows, n] scores is (i0, i1, i2) of dims {d0, d1, d2}.
struct MaskLayout {
  const uint8_t* mask;        // nullptr: nothing masked
  int64_t d1, d2;             // the scores' second and third dims (rows = d0 * d1 * d2)
  int64_t stride[4];          // the mask's strides over (d0, d1, d2, n), in elements
};
void MaskedSoftmaxForward(const float* s, const MaskLayout& m, float scale, int64_t n, int64_t begin, int64_t end,
                          float* p);
// ds = scale * p * (dp - sum(dp * p)) for rows [begin, end).
void MaskedSoftmaxBackward(const float* p, const float* dp, float scale, int64_t n, int64_t begin, int64_t end,
                           float* ds);

// SwiGLU over h [rows, 2f] (the w1 and w3 projections side by side):
// y = silu(a) * g with a = h[:, :f], g = h[:, f:]; y is [rows, f].
void SwiGluForward(const float* h, int64_t f, int64_t begin, int64_t end, float* y);
// dh [rows, 2f]: da = dy g silu'(a), dg = dy silu(a).
void SwiGluBackward(const float* h, const float* dy, int64_t f, int64_t begin, int64_t end, float* dh);

// One AdamW step over n elements, in the order of operations of LibTorch
// 1.13's AdamW (torch/csrc/api/src/optim/adamw.cpp) with the gradient scaled
// by `grad_scale` first (the global-norm clip):
//   p = p (1 - lr wd); g = g grad_scale
//   m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
//   p = p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
// with bc1 = 1 - b1^step and bc2 = 1 - b2^step. Elements are independent, so
// [begin, end) may split them over threads.
struct AdamWScalars {
  float decay;         // 1 - lr wd
  float grad_scale;    // 1 when not clipped
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float sqrt_bc2;      // sqrt(1 - b2^step)
  float step_size;     // lr / (1 - b1^step)
  float eps;
};
void AdamWUpdate(float* p, const float* g, float* m, float* v, const AdamWScalars& s, int64_t begin, int64_t end);

// Sum of squares of x[begin, end) in double, in a fixed order.
double SumSquaresDouble(const float* x, int64_t begin, int64_t end);

}  // namespace shammie::workers::fused
