// The building blocks of the MiniMax-M1 decoder (hybrid_model.md §2-§5), shared by the trainer
// and the rollout engine. Every module's parameter names match the released checkpoint under
// `model.layers.N.self_attn.` / `model.layers.N.block_sparse_moe.` (hybrid_model.md §1).
//
// Shapes: B = batch rows, T = tokens per row, C = hidden_size, H = heads, Hkv = kv heads,
// D = head_dim, E = experts. All activations fp32 on CPU builds.
//
// Implementations: lightning_attention.cc, softmax_attention.cc, moe.cc, layers.cc (RmsNorm).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace lightrl::model {

// ---- per-call context --------------------------------------------------------------------
struct ForwardContext {
  // Packed documents along T (REQUIRES B == 1): cumulative lengths [num_docs + 1], first 0 and
  // last T. Lightning states reset and softmax attention is block-diagonal causal at each
  // boundary; RoPE positions restart at 0 in each document. Empty = each row is one sequence.
  std::vector<int64_t> cu_seqlens;
};

// Lightning layer cache for the B rows of a call (hybrid_model.md §3.5).
struct LightningLayerCache {
  torch::Tensor state;  // [B, H, D, D] fp32, indexed [d_k, d_v]; undefined = zeros (new sequences)
};

// Softmax layer KV cache for the B rows of a call. Row b holds lengths[b] valid positions at
// the front of k/v; a call with T new tokens writes them at [lengths[b], lengths[b] + T), attends
// causally over the prefix, and advances lengths by T. Capacity grows (amortised doubling).
struct SoftmaxLayerCache {
  torch::Tensor k;        // [B, Hkv, capacity, D] fp32 (post-RoPE keys); undefined = empty
  torch::Tensor v;        // [B, Hkv, capacity, D] fp32
  torch::Tensor lengths;  // [B] int64 (CPU); undefined = zeros
};

// RMSNorm with M1-MOD semantics: x * rsqrt(mean(x^2) + eps) computed in fp32, cast back to
// x's dtype, then multiplied by weight. x: [..., N]; weight: [N].
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // [..., dim] -> [..., dim]
  torch::Tensor weight;                            // [dim], init 1
  double eps;
};
TORCH_MODULE(RMSNorm);

// ---- lightning attention layer (attn_type 0), hybrid_model.md §3 ---------------------------
// Parameters: qkv_proj.weight [3*H*D, C] (per-head interleaved q|k|v), output_gate.weight
// [H*D, C], norm.weight [H*D], out_proj.weight [C, H*D]. Slopes are constants (not parameters).
// Computation: qkv = silu(x W_qkvᵀ) in fp32 (per head h: columns [3Dh, 3Dh+D) = q, then k, v);
// o = lightning attention (model/lightning_ops.h: chunked forward + custom backward, or the
// recurrent decode step); y = out_proj((RMSNorm_{H*D}(o) with lightning_norm_eps) *
// sigmoid(output_gate(x))). Attention, norm and gate run in fp32 (fp64 if x is fp64); the
// result is cast back to x's dtype before out_proj. ctx.cu_seqlens (packed documents) resets
// the state at each boundary and cannot be combined with a cache.
class LightningAttentionImpl : public torch::nn::Module {
 public:
  LightningAttentionImpl(const ModelConfig& config, int64_t layer_idx);
  // x: [B, T, C] (the normalised layer input) -> [B, T, C].
  // cache == nullptr: training/full forward with zero initial state (chunked + custom backward).
  // cache != nullptr: starts from cache->state (zeros if undefined) and stores the final state;
  //   T == 1 uses the recurrent decode step, T > 1 the chunked path.
  torch::Tensor forward(const torch::Tensor& x, const ForwardContext& ctx,
                        LightningLayerCache* cache = nullptr);
  torch::Tensor slopes() const { return slopes_; }  // [H] fp32, per-layer decay rates s_h*f(l)
  // [H] fp32 λ = exp(-slopes), formed by the same op as LightningDecodeStep's (equal bits).
  torch::Tensor decay() const { return decay_; }
  int64_t num_heads() const { return num_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t block_size() const { return block_size_; }
  // Throws unless `state` (if defined) is a cached state for B rows: [B, H, D, D] in `dtype`.
  void CheckCachedState(const torch::Tensor& state, int64_t B, torch::ScalarType dtype) const;

  torch::nn::Linear qkv_proj{nullptr}, output_gate{nullptr}, out_proj{nullptr};
  RMSNorm norm{nullptr};

 private:
  int64_t num_heads_, head_dim_, block_size_;
  torch::Tensor slopes_, decay_;
};
TORCH_MODULE(LightningAttention);

// ---- softmax attention layer (attn_type 1), hybrid_model.md §4 -----------------------------
// Implementation: softmax_attention.cc.
//
// Compute dtype: fp64 inputs are computed in fp64 (tests); everything else (fp32, bf16, fp16)
// is computed in fp32 and the result cast back to the input dtype.

// Partial NeoX ("rotate-half") RoPE, hybrid_model.md §4, M1-MOD / vLLM semantics:
//   inv_freq[i] = theta^(-2i/rotary_dim), i < rotary_dim/2;  angle = position * inv_freq[i]
//   for i < rotary_dim/2 (h = rotary_dim/2):
//     y[i]     = x[i]     * cos(angle_i) - x[i + h] * sin(angle_i)
//     y[i + h] = x[i + h] * cos(angle_i) + x[i]     * sin(angle_i)
//   dims >= rotary_dim pass through unchanged.
// Angles are formed in fp64 and cos/sin computed on the fly (no max_position-sized cache), then
// rounded to the compute dtype. Differentiable (plain autograd ops).
// x: [B, Hx, T, D]; positions: [B, T] or [T] int64 (any device). rotary_dim even, <= D;
// rotary_dim == 0 returns x. Returns [B, Hx, T, D] in x's dtype.
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& positions, int64_t rotary_dim,
                        double theta);

// RoPE positions for one call: [B, T] int64 (CPU).
//   cu_seqlens non-empty (REQUIRES B == 1): t - start of t's document (restart per document);
//   offsets non-empty ([B] values): offsets[b] + t (continuing a cache);
//   otherwise t.
torch::Tensor RopePositions(int64_t B, int64_t T, const std::vector<int64_t>& cu_seqlens,
                            const std::vector<int64_t>& offsets = {});

enum class AttentionPath {
  kAuto,          // materialised when Tq == 1 or Tq*Tk <= block_size^2, else blockwise
  kMaterialized,  // plain [B, H, Tq, Tk] scores, softmax, standard autograd (memory O(Tq*Tk))
  kBlockwise,     // FlashAttention-2 style online softmax, custom backward (memory O(T))
};

// Causal multi-head softmax attention with GQA (the core of the softmax layer):
//   out[b, h, t] = sum_j softmax_j(scale * q[b,h,t] . k[b,h/G,j]) v[b,h/G,j]   over allowed j
// q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] with H % Hkv == 0, G = H / Hkv (query head h uses kv
// head h / G) and Tk >= Tq. Query t sits at absolute position Tk - Tq + t ("bottom-right"
// aligned: the last Tq keys are the queries' own tokens, the first Tk - Tq a cached prefix) and
// attends keys j <= Tk - Tq + t.
// cu_seqlens (packed documents; REQUIRES B == 1 and Tq == Tk): cumulative document lengths
//   [num_docs + 1], first 0, last T; attention is block-diagonal causal (j in t's document only).
// block_size: tile edge of the blockwise path (keys per tile; queries per tile = block_size/G).
// Blockwise path: forward keeps only out and the per-row log-sum-exp ([B, H, Tq]); backward
//   recomputes each tile's probabilities (no Tq x Tk matrix is ever held); tiles that the mask
//   removes entirely are skipped, so cost is ~half of the full square for causal, less for
//   packed documents. Not twice differentiable.
// Returns [B, H, Tq, D] in q's dtype. Every row attends at least its own token, so no row is
// empty; the output is differentiable w.r.t. q, k and v on every path.
torch::Tensor CausalSoftmaxAttention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, double scale, int64_t block_size,
                                     const std::vector<int64_t>& cu_seqlens = {},
                                     AttentionPath path = AttentionPath::kAuto);

// Attention of a few new tokens per row over the rows' KV caches: the decode kernel of the
// softmax layer (implementation: softmax_decode.cc; plain loops, split-K over key chunks with a
// log-sum-exp merge, threads via at::parallel_for).
//   out[b, h, t] = sum_j softmax_j(scale * q[b,h,t] . k_cache[b,h/G,j]) v_cache[b,h/G,j]
//                  over j in [0, prefix[b] + t]
// q: [B, H, T, D] (post-RoPE); k_cache, v_cache: [B, Hkv, capacity, D], H % Hkv == 0, G = H/Hkv;
// all CPU, one dtype, fp32 or fp64; any strides (a cache without unit stride along D is copied).
// Row b's keys [0, prefix[b] + T) must be valid: its T new tokens are already written at
// [prefix[b], prefix[b] + T). prefix: [B] values >= 0 with prefix[b] + T <= capacity. Slots past
// a row's last key are never read. Scores, softmax and the weighted sum run in q's dtype (fp32
// for serving), with a polynomial fp32 exp (rel. error ~1e-7).
// A row's result is bitwise independent of the other rows and of the thread count (fixed key
// chunks, fixed merge order). Not differentiable: REQUIRES no autograd (GradMode off, or no
// input requiring grad). Returns [B, H, T, D] in q's dtype (a transposed view of a contiguous
// [B, T, H, D] buffer, so .transpose(1, 2) is free).
torch::Tensor CachedAttention(const torch::Tensor& q, const torch::Tensor& k_cache,
                              const torch::Tensor& v_cache, const std::vector<int64_t>& prefix,
                              double scale);

// Parameters: q_proj.weight [H*D, C], k_proj.weight [Hkv*D, C], v_proj.weight [Hkv*D, C],
// o_proj.weight [C, H*D]. Partial NeoX RoPE on the first rotary_dim dims, GQA, causal,
// scale 1/sqrt(D). Long sequences use a blockwise online-softmax path (no T x T matrix), with
// config.softmax_block_size as the tile edge.
//
// KV cache (SoftmaxLayerCache): k/v hold post-RoPE keys and values in the compute dtype (fp32,
// or fp64 for an fp64 layer). Rows may hold different lengths. A call with T new tokens:
//   RoPE positions are lengths[b] + t; the new k/v are written at [lengths[b], lengths[b] + T);
//   query t of row b attends keys [0, lengths[b] + t] of its own row (T == 1: decode;
//   T > 1: prefill continuing the cached prefix); lengths advance by T.
// Capacity (dim 2 of k/v) grows to max(needed, 2 * old capacity) when exceeded; stale slots past
// a row's length are never read. The cached prefix is a constant for autograd (stored
// detached); gradients flow to q and to this call's new k/v.
// Decode fast path: when no gradient is needed and T <= 8, RoPE and the cache write are plain
// loops and the attention is CachedAttention (no mask, no copy of the cache, per-row lengths
// handled by each query stopping at its own last key); otherwise the libtorch paths above.
class SoftmaxAttentionImpl : public torch::nn::Module {
 public:
  SoftmaxAttentionImpl(const ModelConfig& config, int64_t layer_idx);
  // x: [B, T, C] -> [B, T, C]. With cache, positions continue at cache->lengths[b].
  // ctx.cu_seqlens (packed documents) cannot be combined with a cache.
  torch::Tensor forward(const torch::Tensor& x, const ForwardContext& ctx,
                        SoftmaxLayerCache* cache = nullptr);

  // The cache bookkeeping of a call with T new tokens per row (used by forward and by the fused
  // decode step, model/fused_decode.h): checks that `cache` holds B rows of [B, Hkv, capacity, D]
  // in `dtype` (or is empty), grows the capacity to hold the longest row plus T (amortised
  // doubling; new slots zero), makes k/v contiguous when `contiguous`, and returns the row
  // lengths before the call ([B]). Does not advance the lengths.
  std::vector<int64_t> ReserveCache(SoftmaxLayerCache* cache, int64_t B, int64_t T, torch::ScalarType dtype,
                                    const torch::Device& device, bool contiguous) const;

  int64_t num_heads() const { return num_heads_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t rotary_dim() const { return rotary_dim_; }
  double rope_theta() const { return rope_theta_; }

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_, rotary_dim_, block_size_;
  double rope_theta_;
};
TORCH_MODULE(SoftmaxAttention);

// ---- MoE block, hybrid_model.md §5 ---------------------------------------------------------
// Implementation: moe.cc.
// Parameters: gate.weight [E, C] (fp32 router), experts.E.w1.weight [I, C] (gate proj),
// experts.E.w3.weight [I, C] (up proj), experts.E.w2.weight [C, I] (down proj).

// One SwiGLU expert: w2( silu(w1 x) * w3 x ). No biases. x: [N, C] -> [N, C] (x's dtype).
class ExpertImpl : public torch::nn::Module {
 public:
  ExpertImpl(int64_t hidden_size, int64_t intermediate_size);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear w1{nullptr};  // [I, C] gate proj
  torch::nn::Linear w3{nullptr};  // [I, C] up proj
  torch::nn::Linear w2{nullptr};  // [C, I] down proj
};
TORCH_MODULE(Expert);

struct MoeOutput {
  torch::Tensor out;            // [B, T, C] (x's dtype)
  torch::Tensor router_logits;  // [B*T, E] fp32 (fp64 when x is fp64), for the aux loss
};

class MoeImpl : public torch::nn::Module {
 public:
  explicit MoeImpl(const ModelConfig& config);
  // Softmax router in fp32, top-k with renormalisation, SwiGLU experts, tokens grouped per
  // expert (dispatch by expert, not a per-token loop). x: [B, T, C].
  //   logits = x.float() @ gate.weight.float()^T            [B*T, E] (fp64 if x is fp64)
  //   p = softmax(logits); (w, idx) = topk(p, k); w /= sum(w)  (ties: torch::topk's order)
  //   out[t] = sum_k w[t,k] * expert_{idx[t,k]}(x[t])        (w cast to x's dtype)
  // Gradients flow to x, the experts that received tokens and (through w) the router; an
  // expert that received no token gets no gradient in this call (its .grad stays undefined
  // or unchanged). No capacity limit, no token dropping, no jitter.
  MoeOutput forward(const torch::Tensor& x);

  torch::nn::Linear gate{nullptr};
  torch::nn::ModuleList experts{nullptr};  // each an Expert with w1, w2, w3

 private:
  int64_t num_experts_, top_k_;
};
TORCH_MODULE(Moe);

// Mixtral/M1 load-balancing loss (hybrid_model.md §5): router logits of all layers concatenated
// along tokens, [N, E] fp32; returns E * sum_{k,e} f[k,e] * Pbar[e] (0-d fp32).
// token_mask: optional [N] bool selecting the tokens that count (padding excluded).
//   P = softmax(router_logits) [N, E]; sel = topk(P, top_k) indices [N, k]
//   f[k, e] = (# counted tokens whose k-th choice is e) / (# counted tokens)
//   Pbar[e] = mean of P[:, e] over counted tokens
// Differentiable through Pbar only (the selection is discrete). Perfect balance gives top_k.
// A mask selecting no token gives 0 (still attached to the graph). REQUIRES 1 <= top_k <= E.
// Computed in fp32 (fp64 if router_logits is fp64).
torch::Tensor LoadBalancingLoss(const torch::Tensor& router_logits, int64_t top_k,
                                const torch::Tensor& token_mask = {});

}  // namespace lightrl::model
