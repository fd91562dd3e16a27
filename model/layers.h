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

  torch::nn::Linear qkv_proj{nullptr}, output_gate{nullptr}, out_proj{nullptr};
  RMSNorm norm{nullptr};

 private:
  int64_t num_heads_, head_dim_, block_size_;
  torch::Tensor slopes_;
};
TORCH_MODULE(LightningAttention);

// ---- softmax attention layer (attn_type 1), hybrid_model.md §4 -----------------------------
// Parameters: q_proj.weight [H*D, C], k_proj.weight [Hkv*D, C], v_proj.weight [Hkv*D, C],
// o_proj.weight [C, H*D]. Partial NeoX RoPE on the first rotary_dim dims, GQA, causal,
// scale 1/sqrt(D). Long sequences use a blockwise online-softmax path (no T x T matrix).
class SoftmaxAttentionImpl : public torch::nn::Module {
 public:
  SoftmaxAttentionImpl(const ModelConfig& config, int64_t layer_idx);
  // x: [B, T, C] -> [B, T, C]. With cache, positions continue at cache->lengths[b].
  torch::Tensor forward(const torch::Tensor& x, const ForwardContext& ctx,
                        SoftmaxLayerCache* cache = nullptr);

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_, rotary_dim_, block_size_;
  double rope_theta_;
};
TORCH_MODULE(SoftmaxAttention);

// ---- MoE block, hybrid_model.md §5 ---------------------------------------------------------
// Parameters: gate.weight [E, C] (fp32 router), experts.E.w1.weight [I, C] (gate proj),
// experts.E.w3.weight [I, C] (up proj), experts.E.w2.weight [C, I] (down proj).
struct MoeOutput {
  torch::Tensor out;            // [B, T, C]
  torch::Tensor router_logits;  // [B*T, E] fp32 (for the aux loss)
};

class MoeImpl : public torch::nn::Module {
 public:
  explicit MoeImpl(const ModelConfig& config);
  // Softmax router in fp32, top-k with renormalisation, SwiGLU experts, tokens grouped per
  // expert (dispatch by expert, not a per-token loop). x: [B, T, C].
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
torch::Tensor LoadBalancingLoss(const torch::Tensor& router_logits, int64_t top_k,
                                const torch::Tensor& token_mask = {});

}  // namespace lightrl::model
