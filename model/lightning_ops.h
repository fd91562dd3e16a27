// Lightning attention as functional ops (hybrid_model.md §3.2-§3.8): the per-layer decay slope
// table, the block-chunked causal forward with a custom (chunked) backward, packed documents,
// and the recurrent decode step. LightningAttentionImpl (model/layers.h) wraps these with the
// projections, SiLU, output norm and gate; the trainer and the rollout engine both reach the
// math only through here, so their numerics are identical.
//
// The math (one batch row, one head; decay λ = exp(-s), row vectors q_t, k_t, v_t ∈ R^{1×D}):
//   S_t = λ·S_{t-1} + k_tᵀ v_t        (S_{-1} = S₀, the initial state; zeros if not given)
//   o_t = q_t S_t = Σ_{j≤t} λ^{t-j} (q_t·k_j) v_j + λ^{t+1} q_t S₀
// i.e. the current token counts with weight 1 and the decay is applied before it is added
// ("true-state" convention of M1-MOD; NOT vLLM's prefill q_decay, hybrid_model.md §3.4).
// No 1/sqrt(D) scale, no normalisation: the caller's RMSNorm provides that.
//
// Chunked algorithm (block size m, local indices i, j < m; the last block may be partial):
//   a_i = λ^{i+1},  c_j = λ^{m-1-j},  Dm_ij = λ^{i-j}·[i ≥ j]
//   O_b = (Q_b ⊙ a) S_{b-1} + [(Q_b K_bᵀ) ⊙ Dm] V_b
//   S_b = λ^m S_{b-1} + (K_b ⊙ c)ᵀ V_b
// The intra-block products are batched over blocks (bmm); the only sequential part is the
// state scan, a loop over blocks (not tokens). The backward follows hybrid_model.md §3.7 with a
// reverse scan of dS over blocks. Memory is linear in T: no T×T matrix and no per-token state;
// the autograd path keeps one D×D state per block (T/m of them) for the backward.
//
// Precision: every decay (λ^n, exp(-s·n)) is formed directly from the slope in the working
// dtype (fp32, or fp64 for tests), never as λ^{-n} (which overflows), and never in bf16.
// The working dtype is the dtype of q (fp32 or fp64); the state has the same dtype.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace lightrl::model {

// ---- decay slopes (hybrid_model.md §3.2) -------------------------------------------------

// ALiBi slopes s_h of M1-MOD's get_slopes(num_heads), in fp64 exactly as Python computes them
// (before the fp32 cast). Power-of-two H: s_h = 2^{-8(h+1)/H}; otherwise the first 2^⌊log2 H⌋
// of those plus every other slope of get_slopes(2·2^⌊log2 H⌋). REQUIRES: num_heads >= 1.
std::vector<double> AlibiSlopes(int64_t num_heads);

// Per-layer factor f(l) = 1 - l/(L-1) + 1e-5 with l the GLOBAL layer index (softmax layers
// count). For L == 1 the (undefined in M1-MOD) ratio l/(L-1) is taken as 0.
// REQUIRES: 0 <= layer_idx < num_layers.
double LightningLayerFactor(int64_t layer_idx, int64_t num_layers);

// The per-layer decay rates [H] fp32: fp32(s_h) * fp32(f(l)) rounded to fp32, exactly what
// M1-MOD's `slopes(fp32 tensor) * python_float` produces. λ_h = exp(-slope_h).
torch::Tensor LightningSlopes(int64_t num_heads, int64_t layer_idx, int64_t num_layers);

// ---- chunked forward + custom backward ---------------------------------------------------

struct LightningOptions {
  // Chunk size m of the block algorithm (any m >= 1 gives the same result up to rounding;
  // ModelConfig::lightning_block_size, default 256). Clamped to T internally.
  int64_t block_size = 256;
  // Packed documents along T (REQUIRES B == 1): cumulative lengths [num_docs + 1] starting at 0,
  // ending at T, non-decreasing (empty documents are allowed and get a zero final state). The
  // state resets at each boundary: no token attends across documents. Empty = one sequence
  // per batch row. Not combinable with an initial state.
  std::vector<int64_t> cu_seqlens;
  // Compute the final state (the cache for a following decode). When false, result.state is
  // undefined and the forward skips that work.
  bool output_final_state = true;
};

struct LightningResult {
  torch::Tensor out;    // [B, H, T, D], dtype of q
  // Final state S_{T-1}, [B, H, D, D] (indexed [d_k, d_v]); with cu_seqlens one per document,
  // [num_docs, H, D, D]. Undefined when !output_final_state.
  // Differentiable (its gradient flows into q, k, v and the initial state) except with
  // cu_seqlens, where the per-document states are returned detached.
  torch::Tensor state;
};

// Causal lightning attention over q, k, v: [B, H, T, D] (fp32 or fp64, same dtype; any
// strides), slopes: [H] (any float dtype; converted to q's dtype), initial_state: [B, H, D, D]
// of q's dtype or undefined (zeros). Differentiable in q, k, v and initial_state through a
// custom chunked backward (torch::autograd::Function); the slopes are constants (no gradient).
// When no input requires grad (or grad mode is off) nothing is saved for a backward.
// Throws lightrl::Error on bad shapes/dtypes/cu_seqlens.
LightningResult LightningAttentionChunked(const torch::Tensor& q, const torch::Tensor& k,
                                          const torch::Tensor& v, const torch::Tensor& slopes,
                                          const torch::Tensor& initial_state = {},
                                          const LightningOptions& options = {});

// ---- recurrent decode step (hybrid_model.md §3.5) ------------------------------------------

// One token per row: q, k, v: [B, H, 1, D]; state: [B, H, D, D] (undefined = zeros), same
// dtype as q (fp32 in serving; the state is never kept in bf16). Computes
//   S' = λ·S + kᵀ v,   o = q S'
// and returns {o [B, H, 1, D], S' [B, H, D, D]}. Plain tensor ops (autograd works through it).
LightningResult LightningDecodeStep(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, const torch::Tensor& slopes,
                                    const torch::Tensor& state);

// The plain-loop kernel of LightningDecodeStep for fp32 callers that hold raw buffers (the fused
// decode step, model/fused_decode.h). `rows` (row, head) pairs r = b*H + h; row r's q, k and v
// start at q + r*row_stride, k + r*row_stride, v + r*row_stride (unit stride along D); state
// (nullptr = zeros) and next_state are [rows, D, D] and may be the same buffer (update in place),
// out is [rows, D]; decay: [H] λ = exp(-slope). Single-threaded; the math of LightningDecodeStep,
// vectorised for the CPU it runs on (with FMA where available, so the last bits can differ).
// The chunked block algorithm for ONE block of T new tokens of one sequence (T <= the layer's
// block size, e.g. a rollout prompt), fp32 loops for callers that hold raw buffers (the fused
// step): heads h < H with per-head interleaved rows (q of token t, head h at q + t*row_stride +
// 3*D*h; k, v likewise from their own base pointers, which the caller offsets by D and 2D), from
// state [H, D, D] (nullptr = zeros) to next_state [H, D, D] (may be state: in place); out rows
// [T, H*D] at out + t*out_stride (head-major); slopes [H]. Single-threaded; equals
// LightningAttentionChunked with block_size >= T up to rounding.
void LightningPrefillBlockF32(const float* q, const float* k, const float* v, int64_t row_stride, int64_t T,
                              int64_t H, int64_t D, const float* slopes, const float* state, float* next_state,
                              float* out, int64_t out_stride);

void LightningDecodeRowsF32(const float* q, const float* k, const float* v, int64_t row_stride, const float* state,
                            const float* decay, int64_t rows, int64_t H, int64_t D, float* next_state, float* out);

// FLOPs of one LightningAttentionChunked call as executed (forward only, B·H heads of length
// T padded to whole blocks of size m = min(block_size, T); multiply-add = 2 FLOPs):
//   per block of m rows: QKᵀ 2m²D, mask m², (·)V 2m²D, Q⊙a mD, (Q⊙a)S 2mD², K⊙c mD,
//   (K⊙c)ᵀV 2mD², scan 2D²
// The square m×m products are counted in full (that is what runs; half of QKᵀ is masked).
// Used by the attention benchmark for its FLOP-rate figure; the backward counts are in
// LightningBackwardFlops.
double LightningForwardFlops(int64_t batch_heads, int64_t T, int64_t D, int64_t block_size);
// Backward as executed: per block of m rows, QKᵀ and dO Vᵀ recomputed 4m²D + 2 masks 2m²,
// P K, Pᵀ Q, Aᵀ dO 6m²D, dO Sᵀ, V dSᵀ, (K⊙c) dS, (Q⊙a)ᵀ dO 8mD², row scalings 4mD, scan 2D².
double LightningBackwardFlops(int64_t batch_heads, int64_t T, int64_t D, int64_t block_size);

}  // namespace lightrl::model
