// Plain-loop helpers shared by the decode paths of the softmax layer (softmax_attention.cc) and
// the fused decode step (fused_decode.cc). Internal to model/.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace lightrl::model::detail {

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
