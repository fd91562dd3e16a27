// LightningAttentionImpl (model/layers.h): M1-MOD's lightning layer (hybrid_model.md §3) on top of
// the functional ops in model/lightning_ops.h.
#include "core/check.h"
#include "model/layers.h"
#include "model/lightning_ops.h"

namespace lightrl::model {

LightningAttentionImpl::LightningAttentionImpl(const ModelConfig& config, int64_t layer_idx)
    : num_heads_(config.num_attention_heads),
      head_dim_(config.head_dim),
      block_size_(config.lightning_block_size) {
  LR_CHECK(num_heads_ >= 1 && head_dim_ >= 1, "LightningAttention: num_attention_heads and head_dim must be >= 1");
  LR_CHECK(block_size_ >= 1, "model.lightning_block_size: must be >= 1, got ", block_size_);
  const int64_t C = config.hidden_size, inner = num_heads_ * head_dim_;
  qkv_proj = register_module("qkv_proj", torch::nn::Linear(torch::nn::LinearOptions(C, 3 * inner).bias(false)));
  output_gate = register_module("output_gate", torch::nn::Linear(torch::nn::LinearOptions(C, inner).bias(false)));
  norm = register_module("norm", RMSNorm(inner, config.lightning_norm_eps));
  out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(inner, C).bias(false)));
  // A plain fp32 tensor, not a buffer: SetBodyDtype / module.to(bf16) must never touch it.
  slopes_ = LightningSlopes(num_heads_, layer_idx, config.num_hidden_layers);
  decay_ = torch::exp(-slopes_.reshape({num_heads_}));
}

void LightningAttentionImpl::CheckCachedState(const torch::Tensor& s0, int64_t B, torch::ScalarType dtype) const {
  if (!s0.defined()) return;
  const int64_t H = num_heads_, D = head_dim_;
  LR_CHECK(s0.dim() == 4 && s0.size(0) == B && s0.size(1) == H && s0.size(2) == D && s0.size(3) == D,
           "LightningAttention: cached state must be [B, H, D, D] = [", B, ", ", H, ", ", D, ", ", D, "], got ",
           s0.sizes());
  LR_CHECK(s0.scalar_type() == dtype, "LightningAttention: cached state must be ", dtype, ", got ", s0.scalar_type());
}

torch::Tensor LightningAttentionImpl::forward(const torch::Tensor& x, const ForwardContext& ctx,
                                              LightningLayerCache* cache) {
  LR_CHECK(x.dim() == 3, "LightningAttention: x must be [B, T, C], got ", x.sizes());
  const int64_t B = x.size(0), T = x.size(1), H = num_heads_, D = head_dim_;
  LR_CHECK(T >= 1, "LightningAttention: empty input (T = 0)");
  // Attention math runs in fp32 (fp64 when the layer itself is fp64, for tests): SiLU, the
  // state, the decays and the output norm are never low precision (hybrid_model.md §10).
  const auto work = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;

  // qkv: [B, T, 3*H*D] -> SiLU -> [B, T, H, 3D] per-head interleaved: head h owns columns
  // [3Dh, 3Dh + 3D) = q | k | v.
  const torch::Tensor qkv = torch::silu(qkv_proj->forward(x).to(work)).view({B, T, H, 3 * D});
  const torch::Tensor q = qkv.narrow(3, 0, D).transpose(1, 2);      // [B, H, T, D]
  const torch::Tensor k = qkv.narrow(3, D, D).transpose(1, 2);      // [B, H, T, D]
  const torch::Tensor v = qkv.narrow(3, 2 * D, D).transpose(1, 2);  // [B, H, T, D]

  torch::Tensor o;  // [B, H, T, D]
  if (cache != nullptr) {
    LR_CHECK(ctx.cu_seqlens.empty(), "LightningAttention: packed documents (cu_seqlens) cannot use a cache");
    torch::Tensor s0 = cache->state;
    CheckCachedState(s0, B, work);
    LightningResult r = T == 1 ? LightningDecodeStep(q, k, v, slopes_, s0)
                               : LightningAttentionChunked(q, k, v, slopes_, s0, LightningOptions{block_size_, {}, true});
    o = r.out;
    cache->state = r.state;
  } else {
    LightningOptions opts;
    opts.block_size = block_size_;
    opts.cu_seqlens = ctx.cu_seqlens;
    opts.output_final_state = false;
    o = LightningAttentionChunked(q, k, v, slopes_, {}, opts).out;
  }
  // Head-major flatten (column h*D + e), ONE RMSNorm over all H*D dims (M1-MOD semantics,
  // computed here in the work dtype so an fp64 layer stays fp64), sigmoid gate from x.
  torch::Tensor y = o.transpose(1, 2).reshape({B, T, H * D});
  y = y * torch::rsqrt(y.pow(2).mean(-1, /*keepdim=*/true) + norm->eps) * norm->weight.to(work);
  y = y * torch::sigmoid(output_gate->forward(x).to(work));
  return out_proj->forward(y.to(x.scalar_type()));
}

}  // namespace lightrl::model
