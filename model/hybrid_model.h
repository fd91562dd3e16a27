// HybridModel: the MiniMax-M1 decoder (hybrid_model.md §1-§2) used by BOTH the trainer and the
// rollout engine, so rollout log-probs and trainer log-probs come from the same code.
//
//   input_ids [B, T] int64
//     -> model.embed_tokens (no scaling)
//     -> L x DecoderLayer (DeepNorm post-norm: u <- RMSNorm(alpha*u + F(u)), see below)
//     -> model.norm (final RMSNorm)
//     -> lm_head in FP32 (weight held in fp32 whatever the body dtype is)  -> logits [B, T, V] fp32
//
// Parameter names (named_parameters()) are exactly the released checkpoint's
// ("model.layers.3.self_attn.qkv_proj.weight", "lm_head.weight", ...), so safetensors files in
// the MiniMax-M1 layout load directly (model/safetensors.h).
//
// Start here for the model: HybridModel::forward. Building blocks: model/layers.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/layers.h"

namespace lightrl::model {

// Decode-time state of one layer for the B rows of a call: exactly one of the two is used,
// according to the layer's attn_type.
struct LayerCache {
  LightningLayerCache lightning;  // attn_type 0: fp32 state [B, H, D, D] (O(1) in context)
  SoftmaxLayerCache softmax;      // attn_type 1: KV cache (grows with context)
};

// Decode-time state of the whole model for B rows. Default-constructed = empty (all rows at
// position 0); pass the same object to successive forward() calls to continue the sequences.
// forward() may update the cache tensors in place (KV slots always; lightning states in the fused
// decode step), so a shallow copy (struct copy) shares them: to fork a cache, SelectRows it.
struct ModelCache {
  std::vector<LayerCache> layers;  // [L]; sized on first use
  int64_t batch = 0;               // rows this cache holds (0 = not yet used)
  int64_t tokens = 0;              // tokens consumed so far by every row (uniform-length calls)

  // Bytes held by the cache tensors (lightning states + KV caches incl. spare capacity).
  int64_t bytes() const;
  // Keeps only rows `rows` (in that order); for dropping finished sequences. rows: [R] int64.
  // Rows may repeat (replicates a row, e.g. one prefill shared by G samples). The result holds
  // freshly allocated tensors (index_select), so it shares no storage with the old cache.
  void SelectRows(const torch::Tensor& rows);

  // Appends `other`'s rows after this cache's rows (admitting new sequences into a batch).
  // Rows may hold different lengths: softmax KV caches are padded along capacity (dim 2) to the
  // larger capacity (padding is never read: lengths are per row); an undefined lightning state or
  // KV cache on one side is materialised as zeros / empty. An empty cache (batch == 0) takes
  // copies of other's tensors. tokens becomes max(tokens, other.tokens) (not meaningful once
  // rows of different lengths are merged). REQUIRES: same layer count and model.
  void AppendRows(const ModelCache& other);
  // The same for a cache the caller gives up: an empty cache takes its tensors without copying.
  void AppendRows(ModelCache&& other);

  // Overwrites rows dst_rows[i] of this cache with rows src_rows[i] of `src`, in place (reusing
  // the slot of a finished sequence for a new one without copying the other rows). Grows this
  // cache's KV capacity if a copied row needs more. src_rows, dst_rows: [R] int64, dst_rows
  // distinct. REQUIRES: this cache was produced by forward()/SelectRows/AppendRows (it owns its
  // tensors: a shallow copy of another cache would be modified too).
  void CopyRowsFrom(const ModelCache& src, const torch::Tensor& src_rows, const torch::Tensor& dst_rows);
};

// DeepNorm post-norm decoder layer (hybrid_model.md §2):
//   h1 = RMSNorm_in(x);  y = (postnorm ? h1 : x) * alpha_attn + Attn(h1) * beta_attn
//   h2 = RMSNorm_post(y); out = (postnorm ? h2 : y) * alpha_mlp + MoE(h2) * beta_mlp
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, int64_t layer_idx);
  // x: [B, T, C] -> [B, T, C]. router_logits (if non-null) receives this layer's [B*T, E] fp32.
  torch::Tensor forward(const torch::Tensor& x, const ForwardContext& ctx, LayerCache* cache,
                        std::vector<torch::Tensor>* router_logits);

  AttnType attn_type() const { return attn_type_; }
  bool postnorm() const { return postnorm_; }
  double alpha_attn() const { return alpha_attn_; }
  double beta_attn() const { return beta_attn_; }
  double alpha_mlp() const { return alpha_mlp_; }
  double beta_mlp() const { return beta_mlp_; }

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LightningAttention lightning{nullptr};  // registered as "self_attn" when attn_type == 0
  SoftmaxAttention softmax{nullptr};      // registered as "self_attn" when attn_type == 1
  Moe block_sparse_moe{nullptr};

 private:
  AttnType attn_type_;
  bool postnorm_;
  double alpha_attn_, beta_attn_, alpha_mlp_, beta_mlp_;
};
TORCH_MODULE(DecoderLayer);

// The `model.` prefix of the checkpoint: embeddings, layers, final norm.
class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const ModelConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};  // weight [V, C]
  torch::nn::ModuleList layers{nullptr};       // [L] DecoderLayer
  RMSNorm norm{nullptr};                       // [C]
};
TORCH_MODULE(Decoder);

enum class HeadType {
  kLanguageModel,  // lm_head [V, C] fp32 -> logits
  kValue,          // value_head [1, C] fp32 -> per-token scalar values (PPO critic)
};

struct ForwardOptions {
  // Compute the head on the last position of each row only (decode / sampling): logits [B, 1, V].
  bool last_position_only = false;
  // Skip the head entirely (output.logits undefined); e.g. callers that chunk the LM head.
  bool skip_head = false;
  // Collect router logits and compute the load-balancing aux loss (training).
  bool compute_aux_loss = false;
  // [B, T] bool; tokens that count for the aux loss (padding excluded). Undefined = all.
  torch::Tensor aux_token_mask;
  // Let a call that qualifies run fused (model/fused_decode.h: CPU, fp32, a cache, 1 <= T <=
  // kFusedMaxTokens, no autograd): decode steps and short prefills. false = the module-by-module
  // path (tests compare the two).
  bool fused_decode = true;
  // How the fused step splits its work over the intra-op threads (model/fused_decode.h): kAuto
  // picks by the number of token rows; kRows / kColumns force one (tests, benchmarks), kColumns
  // only where it can run (2+ threads; head_dim % 16 == 0 with PackedGemm), else rows
  // (FusedColumnSplit says which). The modes give bitwise equal results where PackedGemm runs.
  enum class FusedSplit { kAuto, kRows, kColumns };
  FusedSplit fused_split = FusedSplit::kAuto;
};

struct ModelOutput {
  torch::Tensor hidden;    // [B, T, C] final-normed hidden states (body dtype)
  torch::Tensor logits;    // kLanguageModel: [B, T or 1, V] fp32; kValue: values [B, T or 1] fp32
  torch::Tensor aux_loss;  // 0-d fp32 = router_aux_loss_coef * LoadBalancingLoss (if requested)
};

struct FusedDecodePack;  // model/fused_decode.h

class HybridModelImpl : public torch::nn::Module {
 public:
  explicit HybridModelImpl(const ModelConfig& config, HeadType head = HeadType::kLanguageModel);

  // input_ids: [B, T] int64. With ctx.cu_seqlens the T tokens of row 0 (B == 1) are packed
  // documents: lightning states reset, softmax attention is block-diagonal, RoPE positions
  // restart at each boundary. With `cache`, the call continues the cached rows (prefill when
  // T > 1, recurrent decode step when T == 1) and updates the cache.
  ModelOutput forward(const torch::Tensor& input_ids, const ForwardContext& ctx = {},
                      ModelCache* cache = nullptr, const ForwardOptions& options = {});

  // FP32 head on hidden [..., C] -> logits [..., V] fp32 (or values [...] for kValue).
  torch::Tensor Head(const torch::Tensor& hidden);

  // Fresh weights: normal(0, initializer_range) for Linear/Embedding, ones for norms.
  void InitWeights(uint64_t seed);
  // Casts the body to `dtype` (e.g. bf16 on GPU); the LM/value head and the routers stay fp32.
  void SetBodyDtype(torch::Dtype dtype);

  const ModelConfig& config() const { return config_; }
  HeadType head_type() const { return head_type_; }

  Decoder model{nullptr};
  torch::nn::Linear lm_head{nullptr};     // [V, C] fp32 (kLanguageModel)
  torch::nn::Linear value_head{nullptr};  // [1, C] fp32 (kValue)
  // Internal to the fused decode step (model/fused_decode.h): its packed weights, rebuilt when a
  // parameter changes.
  std::shared_ptr<FusedDecodePack> fused_decode_pack;

 private:
  ModelConfig config_;
  HeadType head_type_;
};
TORCH_MODULE(HybridModel);

// log p(target) under logits/temperature with the full-vocabulary softmax in fp32:
// logits [B, T, V] fp32, targets [B, T] int64 -> [B, T] fp32. temperature > 0.
torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& targets,
                            double temperature = 1.0);

// Entropy of softmax(logits/temperature) per position: [B, T, V] -> [B, T] fp32.
torch::Tensor TokenEntropy(const torch::Tensor& logits, double temperature = 1.0);

}  // namespace lightrl::model
