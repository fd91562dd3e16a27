// Plain-loop helpers shared by the decode kernels (softmax_attention.cc, softmax_decode.cc,
// lightning_decode.cc) and the fused decode step (fused_decode.cc): RoPE tables and writes, the
// fp32 polynomial exp (the inline and per-ISA-clone attributes come from core/vectorize.h).
// Internal to model/.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/vectorize.h"

namespace lightrl::model::detail {

// exp(x) for x <= 0 (x - running max), fp32. Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
// the Cephes expf polynomial for e^r, and 2^n from the exponent bits. Pure arithmetic, so loops
// calling it vectorise. The steps shared by the scalar and vector versions (T = float or an
// 8-lane vector, so both give the same bits per element): x (already clamped) -> n (the power of
// 2, as a float) and e^r.
template <class T>
LIGHTRL_ALWAYS_INLINE T ExpReduced(T x, T* n_out) {
  const T t = x * 1.44269504088896341f;
  const T n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
  const T r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  T p = T{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  *n_out = n;
  return p * (r * r) + r + 1.0f;
}

// e^x for x <= 0 in fp32, rel. error ~1e-7. Inputs below -87 give ~1e-38 instead of 0 (harmless
// where they only ever add to a sum that holds a 1, or scale a value).
LIGHTRL_ALWAYS_INLINE float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  float n;
  const float p = ExpReduced(x, &n);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// cos/sin of the RoPE angles of positions prefix[b] + t, exactly as ApplyRope forms them (fp64
// angle and cos/sin, rounded to S). Returns [B * T * half] each.
template <typename S>
inline void RopeTables(const std::vector<int64_t>& prefix, int64_t T, int64_t rotary_dim, double theta,
                       std::vector<S>* cos, std::vector<S>* sin) {
  const int64_t B = static_cast<int64_t>(prefix.size()), half = rotary_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -static_cast<double>(2 * i) / rotary_dim);
  cos->resize(B * T * half);
  sin->resize(B * T * half);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const double p = static_cast<double>(prefix[b] + t);
      for (int64_t i = 0; i < half; ++i) {
        const double angle = p * inv_freq[i];
        (*cos)[(b * T + t) * half + i] = static_cast<S>(std::cos(angle));
        (*sin)[(b * T + t) * half + i] = static_cast<S>(std::sin(angle));
      }
    }
  }
}

// dst row (b, h, t) = RoPE_{(b, t)}(x[b, h, t]) for x: [B, Hx, T, D] of S with unit stride in D.
// dst row (b, h, t) starts at dst + b * db + h * dh + (t0[b] + t) * dt (t0 empty = 0): a fresh
// [B, Hx, T, D] buffer or the cache slots [lengths[b], lengths[b] + T). half == 0 copies x.
// Same arithmetic as ApplyRope: (x1 * cos) - (x2 * sin), (x2 * cos) + (x1 * sin), no FMA.
template <typename S>
inline void RopeInto(const at::Tensor& x, const std::vector<S>& cos, const std::vector<S>& sin, int64_t half,
                     int64_t rotary_dim, S* dst, int64_t db, int64_t dh, int64_t dt, const std::vector<int64_t>& t0) {
  const int64_t B = x.size(0), Hx = x.size(1), T = x.size(2), D = x.size(3);
  const at::Tensor xs = x.stride(3) == 1 ? x : x.contiguous();
  const S* base = xs.data_ptr<S>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hx; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const S* xr = base + b * xs.stride(0) + h * xs.stride(1) + t * xs.stride(2);
        S* y = dst + b * db + h * dh + ((t0.empty() ? 0 : t0[b]) + t) * dt;
        const S* c = cos.data() + (b * T + t) * half;
        const S* s = sin.data() + (b * T + t) * half;
        for (int64_t i = 0; i < half; ++i) {
          const S x1 = xr[i], x2 = xr[i + half];
          const S a = x1 * c[i], bb = x2 * s[i], e = x2 * c[i], f = x1 * s[i];
          y[i] = a - bb;
          y[i + half] = e + f;
        }
        for (int64_t d = rotary_dim; d < D; ++d) y[d] = xr[d];
      }
    }
  }
}

}  // namespace lightrl::model::detail
