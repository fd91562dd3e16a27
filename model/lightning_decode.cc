// LightningDecodeStep (model/lightning_ops.h): the recurrent decode step of lightning attention,
// S' = λ S + kᵀ v, o = q S' (hybrid_model.md §3.5).
//
// Two implementations of the same math:
//   * no autograd needed (serving), CPU, fp32/fp64: one pass of plain loops per (row, head):
//     each state row S[d, :] is read once, decayed, updated with k[d] v and written to the new
//     state, and q[d] S'[d, :] accumulates into o. The libtorch version costs a [B, H, D, D]
//     temporary for kᵀ v, an addcmul, and a batched matmul of B*H products of 1 x D by D x D
//     (one BLAS call each: at B = 64, H = 4 that is 256 calls per layer per token).
//     Work is split over (row, head) with at::parallel_for only when it is large (M1 sizes):
//     for the tiny model at B = 64 a whole step is tens of microseconds, less than waking a
//     second thread costs on a loaded machine.
//   * otherwise the plain tensor ops (autograd flows through them).
// λ = exp(-slope) is formed with the same libtorch op in both, so the decay factors are equal.
// The fp32 loops (DecodeRowsF32, shared with the fused step through LightningDecodeRowsF32) are
// compiled once per ISA (AVX-512 / AVX2+FMA / baseline); the file is -O3 (model/CMakeLists.txt).
// Also here: LightningPrefillBlockF32, the one-block chunked algorithm as loops (fused prefill).
#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "model/decode_kernels.h"
#include "model/lightning_ops.h"

namespace lightrl::model {

namespace {

// Elements of B*H*D*D below which the step runs on the calling thread.
constexpr int64_t kParallelStateElements = int64_t{1} << 22;

// Rows (b, h) in [begin, end): q/k/v row at q + bh * qs_bh (unit stride in D); state (nullptr =
// zeros) and next [BH, D, D], next may be state (in place: each state row is read, decayed,
// updated and written back through one pointer, so the loops vectorise without an aliasing
// fallback); out [BH, D]. Any D (the fp64 instantiation for tests, and fp32 head sizes without a
// fixed-size version below).
template <typename S>
LIGHTRL_ALWAYS_INLINE void DecodeRows(const S* q, const S* k, const S* v, int64_t qs_bh, const S* state,
                                      const S* lambda, int64_t H, int64_t D, S* next, S* out, int64_t begin,
                                      int64_t end) {
  for (int64_t bh = begin; bh < end; ++bh) {
    const S* __restrict qr = q + bh * qs_bh;
    const S* __restrict kr = k + bh * qs_bh;
    const S* __restrict vr = v + bh * qs_bh;
    const S lam = lambda[bh % H];
    S* __restrict o = out + bh * D;
    for (int64_t e = 0; e < D; ++e) o[e] = 0;
    for (int64_t d = 0; d < D; ++d) {
      const S kd = kr[d], qd = qr[d];
      S* __restrict nrow = next + (bh * D + d) * D;
      if (state == next) {
        for (int64_t e = 0; e < D; ++e) nrow[e] = nrow[e] * lam + kd * vr[e];
      } else if (state != nullptr) {
        const S* __restrict srow = state + (bh * D + d) * D;
        for (int64_t e = 0; e < D; ++e) nrow[e] = srow[e] * lam + kd * vr[e];
      } else {
        for (int64_t e = 0; e < D; ++e) nrow[e] = kd * vr[e];
      }
      for (int64_t e = 0; e < D; ++e) o[e] += qd * nrow[e];
    }
  }
}

// The same for a head size fixed at compile time, one state source per instantiation: the row
// loops are a few whole vectors, v and the output row stay in registers, and no aliasing or
// trip-count checks run per state row (with D = 32 the generic loops spent most of their time
// on those). The same expressions in the same order as DecodeRows, so the same results.
enum class StateSource { kInPlace, kOld, kZeros };
constexpr int64_t kStateAhead = 2;
template <typename S, int kD, StateSource kSource>
LIGHTRL_ALWAYS_INLINE void DecodeRowsFixed(const S* q, const S* k, const S* v, int64_t qs_bh, const S* state,
                                           const S* lambda, int64_t H, S* next, S* out, int64_t begin, int64_t end) {
  int64_t h = begin % H;
  for (int64_t bh = begin; bh < end; ++bh) {
    const S* __restrict qr = q + bh * qs_bh;
    const S* __restrict kr = k + bh * qs_bh;
    const S lam = lambda[h];
    h = h + 1 == H ? 0 : h + 1;
    S vv[kD], o[kD];
    for (int e = 0; e < kD; ++e) {
      vv[e] = v[bh * qs_bh + e];
      o[e] = 0;
    }
    S* __restrict nb = next + bh * kD * kD;
    const S* __restrict sb = kSource == StateSource::kOld ? state + bh * kD * kD : nullptr;
    // The state block kStateAhead rows on, one state row per d (its lines arrive while this
    // block computes; at B = 64 a step's states do not stay in the L2).
    const S* ahead = kSource == StateSource::kZeros || bh + kStateAhead >= end ? nullptr
                                                                               : state + (bh + kStateAhead) * kD * kD;
    for (int d = 0; d < kD; ++d) {
      const S kd = kr[d], qd = qr[d];
      if (ahead != nullptr) {
        for (int e = 0; e < kD; e += 64 / static_cast<int>(sizeof(S))) __builtin_prefetch(ahead + d * kD + e, 1, 3);
      }
      S* __restrict nrow = nb + d * kD;
      for (int e = 0; e < kD; ++e) {
        S n;
        if constexpr (kSource == StateSource::kInPlace) {
          n = nrow[e] * lam + kd * vv[e];
        } else if constexpr (kSource == StateSource::kOld) {
          n = sb[d * kD + e] * lam + kd * vv[e];
        } else {
          n = kd * vv[e];
        }
        nrow[e] = n;
        o[e] += qd * n;
      }
    }
    for (int e = 0; e < kD; ++e) out[bh * kD + e] = o[e];
  }
}

template <typename S, int kD>
LIGHTRL_ALWAYS_INLINE void DecodeRowsFixedAnySource(const S* q, const S* k, const S* v, int64_t qs_bh,
                                                    const S* state, const S* lambda, int64_t H, S* next, S* out,
                                                    int64_t begin, int64_t end) {
  if (state == next) {
    DecodeRowsFixed<S, kD, StateSource::kInPlace>(q, k, v, qs_bh, state, lambda, H, next, out, begin, end);
  } else if (state != nullptr) {
    DecodeRowsFixed<S, kD, StateSource::kOld>(q, k, v, qs_bh, state, lambda, H, next, out, begin, end);
  } else {
    DecodeRowsFixed<S, kD, StateSource::kZeros>(q, k, v, qs_bh, state, lambda, H, next, out, begin, end);
  }
}

// DecodeRows for fp32, one clone per ISA (the fp64 instantiation, for tests, stays baseline), with
// fixed-size loops for the common head sizes.
LIGHTRL_VECTOR_CLONES void DecodeRowsF32(const float* q, const float* k, const float* v, int64_t qs_bh,
                                         const float* state, const float* lambda, int64_t H, int64_t D, float* next,
                                         float* out, int64_t begin, int64_t end) {
  switch (D) {
    case 32: return DecodeRowsFixedAnySource<float, 32>(q, k, v, qs_bh, state, lambda, H, next, out, begin, end);
    case 64: return DecodeRowsFixedAnySource<float, 64>(q, k, v, qs_bh, state, lambda, H, next, out, begin, end);
    case 128: return DecodeRowsFixedAnySource<float, 128>(q, k, v, qs_bh, state, lambda, H, next, out, begin, end);
    default: return DecodeRows<float>(q, k, v, qs_bh, state, lambda, H, D, next, out, begin, end);
  }
}

// LightningDecodeStep's loops by dtype: fp32 takes the per-ISA clones.
void RunDecodeRows(const float* q, const float* k, const float* v, int64_t qs_bh, const float* state,
                   const float* lambda, int64_t H, int64_t D, float* next, float* out, int64_t begin, int64_t end) {
  DecodeRowsF32(q, k, v, qs_bh, state, lambda, H, D, next, out, begin, end);
}
void RunDecodeRows(const double* q, const double* k, const double* v, int64_t qs_bh, const double* state,
                   const double* lambda, int64_t H, int64_t D, double* next, double* out, int64_t begin,
                   int64_t end) {
  DecodeRows<double>(q, k, v, qs_bh, state, lambda, H, D, next, out, begin, end);
}

// The block algorithm (hybrid_model.md §3.4) for T <= one block of new tokens of one head, from
// state S0 (nullptr = zeros), as loops: with λ = exp(-s),
//   o_t = λ^{t+1} q_t S0 + sum_{j<=t} λ^{t-j} (q_t . k_j) v_j,    S' = λ^T S0 + sum_j λ^{T-1-j} k_jᵀ v_j
// q/k/v rows t at q + t * ts (unit stride along D); o rows at o + t * os; S0/S' [D, D] (S' may be
// S0: it is written after every o_t has read S0). Decay powers exp(-s * n) in fp32, as the
// chunked op forms them.
LIGHTRL_VECTOR_CLONES void PrefillBlockF32(const float* q, const float* k, const float* v, int64_t ts, int64_t T,
                                           int64_t D, float slope, const float* S0, float* S, float* o, int64_t os) {
  for (int64_t t = 0; t < T; ++t) {
    const float* __restrict qt = q + t * ts;
    float* __restrict ot = o + t * os;
    for (int64_t e = 0; e < D; ++e) ot[e] = 0;
    if (S0 != nullptr) {
      const float w = std::exp(-slope * static_cast<float>(t + 1));
      for (int64_t d = 0; d < D; ++d) {
        const float qd = qt[d] * w;
        const float* __restrict srow = S0 + d * D;
        for (int64_t e = 0; e < D; ++e) ot[e] += qd * srow[e];
      }
    }
    for (int64_t j = 0; j <= t; ++j) {
      const float* __restrict kj = k + j * ts;
      const float* __restrict vj = v + j * ts;
      float dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += qt[d] * kj[d];
      const float a = dot * std::exp(-slope * static_cast<float>(t - j));
      for (int64_t e = 0; e < D; ++e) ot[e] += a * vj[e];
    }
  }
  const float bd = std::exp(-slope * static_cast<float>(T));
  for (int64_t d = 0; d < D; ++d) {
    float* __restrict row = S + d * D;
    if (S0 == S) {
      for (int64_t e = 0; e < D; ++e) row[e] *= bd;  // in place
    } else if (S0 != nullptr) {
      const float* __restrict s0 = S0 + d * D;
      for (int64_t e = 0; e < D; ++e) row[e] = bd * s0[e];
    } else {
      for (int64_t e = 0; e < D; ++e) row[e] = 0;
    }
    for (int64_t j = 0; j < T; ++j) {
      const float kd = k[j * ts + d] * std::exp(-slope * static_cast<float>(T - 1 - j));
      const float* __restrict vj = v + j * ts;
      for (int64_t e = 0; e < D; ++e) row[e] += kd * vj[e];
    }
  }
}

}  // namespace

void LightningPrefillBlockF32(const float* q, const float* k, const float* v, int64_t row_stride, int64_t T,
                              int64_t H, int64_t D, const float* slopes, const float* state, float* next_state,
                              float* out, int64_t out_stride) {
  for (int64_t h = 0; h < H; ++h) {
    const int64_t off = h * 3 * D;  // per-head interleaved q | k | v columns
    PrefillBlockF32(q + off, k + off, v + off, row_stride, T, D, slopes[h], state ? state + h * D * D : nullptr,
                    next_state + h * D * D, out + h * D, out_stride);
  }
}

void LightningDecodeRowsF32(const float* q, const float* k, const float* v, int64_t row_stride, const float* state,
                            const float* decay, int64_t rows, int64_t H, int64_t D, float* next_state, float* out) {
  DecodeRowsF32(q, k, v, row_stride, state, decay, H, D, next_state, out, 0, rows);
}

LightningResult LightningDecodeStep(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    const torch::Tensor& slopes, const torch::Tensor& state) {
  LR_CHECK(q.defined() && q.dim() == 4 && q.size(2) == 1,
           "LightningDecodeStep: q must be [B, H, 1, D], got ", q.defined() ? q.sizes() : torch::IntArrayRef{});
  LR_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "LightningDecodeStep: q, k, v shapes differ: ",
           q.sizes(), " ", k.sizes(), " ", v.sizes());
  const auto dt = q.scalar_type();
  LR_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64, "LightningDecodeStep: q must be fp32 or fp64, got ", dt);
  LR_CHECK(k.scalar_type() == dt && v.scalar_type() == dt, "LightningDecodeStep: k and v must be ", dt);
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3);
  LR_CHECK(slopes.defined() && slopes.numel() == H, "LightningDecodeStep: slopes must be [H = ", H, "]");
  if (state.defined()) {
    LR_CHECK(state.dim() == 4 && state.size(0) == B && state.size(1) == H && state.size(2) == D &&
                 state.size(3) == D,
             "LightningDecodeStep: state must be [B, H, D, D] = [", B, ", ", H, ", ", D, ", ", D, "], got ",
             state.sizes());
    LR_CHECK(state.scalar_type() == dt, "LightningDecodeStep: state dtype ", state.scalar_type(),
             " differs from q's ", dt);
  }
  const torch::Tensor lambda = torch::exp(-slopes.reshape({H}).to(q.device(), dt));  // [H] λ = exp(-s)
  const bool grad = torch::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                                                      (state.defined() && state.requires_grad()));
  const bool cpu = q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu() &&
                   (!state.defined() || state.device().is_cpu());
  LightningResult r;
  if (grad || !cpu) {
    const torch::Tensor kv = k.transpose(2, 3) * v;  // [B, H, D, D] = k_tᵀ v_t
    const torch::Tensor next = state.defined() ? torch::addcmul(kv, state, lambda.reshape({1, H, 1, 1})) : kv;
    r.out = torch::matmul(q, next);  // [B, H, 1, D]
    r.state = next;
    return r;
  }
  // Plain-loop path. q/k/v rows may be strided views of one qkv tensor: the loops need unit
  // stride in D and one stride between (b, h) rows shared by q, k and v.
  torch::Tensor qc = q, kc = k, vc = v;
  auto rows_ok = [&](const torch::Tensor& t) {
    return t.stride(3) == 1 && (H == 1 || t.stride(0) == H * t.stride(1)) && t.stride(1) == q.stride(1) &&
           t.stride(0) == q.stride(0);
  };
  if (!rows_ok(q) || !rows_ok(k) || !rows_ok(v)) {
    qc = q.contiguous();
    kc = k.contiguous();
    vc = v.contiguous();
  }
  const int64_t qs_bh = H == 1 ? qc.stride(0) : qc.stride(1);
  const torch::Tensor sc = state.defined() ? state.contiguous() : torch::Tensor();  // [B, H, D, D]
  torch::Tensor next = torch::empty({B, H, D, D}, q.options());                   // [B, H, D, D]
  torch::Tensor out = torch::empty({B, H, 1, D}, q.options());                    // [B, H, 1, D]
  AT_DISPATCH_FLOATING_TYPES(dt, "LightningDecodeStep", [&] {
    const scalar_t* sp = sc.defined() ? sc.data_ptr<scalar_t>() : nullptr;
    auto run = [&](int64_t begin, int64_t end) {
      RunDecodeRows(qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(), qs_bh, sp,
                    lambda.data_ptr<scalar_t>(), H, D, next.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), begin,
                    end);
    };
    if (B * H * D * D < kParallelStateElements) {
      run(0, B * H);
    } else {
      at::parallel_for(0, B * H, 1, run);
    }
  });
  r.out = out;
  r.state = next;
  return r;
}

}  // namespace lightrl::model
