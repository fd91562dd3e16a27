// Slow, independent references for lightning attention (tests only). Written from the formulas of
// hybrid_model.md §3.2, §3.3 and §3.6, NOT from model/lightning_ops.cc: fp64 throughout, the decay
// matrix materialised (T x T), or a plain scalar token loop. Differentiable through standard
// autograd (ParallelLightning, ReferenceLightningLayer), so they are also the gradient oracle.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace lightrl::model::reference {

struct LightningRef {
  torch::Tensor out;    // [B, H, T, D] fp64
  torch::Tensor state;  // [B, H, D, D] fp64 (final state), or [num_docs, H, D, D] with cu_seqlens
};

// Parallel form (§3.3): O = [(Q Kᵀ) ⊙ M] V + diag(λ^{t+1}) Q S₀ with M_tj = λ^{t-j}·[t >= j]
// (·[doc(t) = doc(j)] with cu_seqlens) and S_final = λ^T S₀ + Σ_j λ^{T-1-j} k_jᵀ v_j (per document
// with cu_seqlens, B == 1, no S₀). q, k, v: [B, H, T, D] (converted to fp64); slopes [H];
// s0: [B, H, D, D] or undefined.
LightningRef ParallelLightning(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& slopes, const torch::Tensor& s0 = {},
                               const std::vector<int64_t>& cu_seqlens = {});

// Recurrence S_t = λ S_{t-1} + k_tᵀ v_t, o_t = q_t S_t, as scalar loops over fp64 buffers (no
// autograd). Same argument conventions as ParallelLightning without cu_seqlens.
LightningRef RecurrentLightning(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& slopes, const torch::Tensor& s0 = {});

// The whole lightning layer (§3.1, §3.6) from explicit weights, in fp64:
//   for head h: q_h = silu(x W_qkv[3Dh : 3Dh+D]ᵀ), k_h = rows [3Dh+D, 3Dh+2D), v_h = [3Dh+2D, 3Dh+3D)
//   o = concat_h(attention_h)  (column h*D + e);  o = o / sqrt(mean(o²) + eps) * norm_w
//   y = (o * 1/(1 + exp(-x W_gateᵀ))) W_outᵀ
// x: [B, T, C]; w_qkv [3HD, C]; w_gate [HD, C]; norm_w [HD]; w_out [C, HD]; slopes [H].
// Returns [B, T, C] fp64.
torch::Tensor ReferenceLightningLayer(const torch::Tensor& x, const torch::Tensor& w_qkv, const torch::Tensor& w_gate,
                                      const torch::Tensor& norm_w, const torch::Tensor& w_out,
                                      const torch::Tensor& slopes, int64_t head_dim, double eps,
                                      const std::vector<int64_t>& cu_seqlens = {});

}  // namespace lightrl::model::reference
