#include "model/hybrid_model.h"

#include <algorithm>

#include "core/check.h"
#include "model/fused_decode.h"

namespace lightrl::model {

namespace {

int64_t TensorBytes(const torch::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

torch::Tensor SelectIfDefined(const torch::Tensor& t, const torch::Tensor& rows) {
  return t.defined() ? t.index_select(0, rows.to(t.device())) : t;
}

// `like` with its first dim replaced by `rows` (shape of an undefined side, materialised).
std::vector<int64_t> RowsLike(const torch::Tensor& like, int64_t rows) {
  std::vector<int64_t> shape = like.sizes().vec();
  shape[0] = rows;
  return shape;
}

// Pads a KV tensor [B, Hkv, cap, D] with zeros along dim 2 to `capacity` (>= cap).
torch::Tensor PadCapacity(const torch::Tensor& kv, int64_t capacity) {
  const int64_t extra = capacity - kv.size(2);
  return extra > 0 ? torch::constant_pad_nd(kv, {0, 0, 0, extra}) : kv;
}

// Row-concatenation of a [na, ...] and b [nb, ...] where either may be undefined (= zeros).
torch::Tensor CatRows(const torch::Tensor& a, int64_t na, const torch::Tensor& b, int64_t nb) {
  if (!a.defined() && !b.defined()) return a;
  torch::Tensor x = a.defined() ? a : torch::zeros(RowsLike(b, na), b.options());
  torch::Tensor y = b.defined() ? b : torch::zeros(RowsLike(a, nb), a.options());
  return torch::cat({x, y}, 0);
}

// Same for KV caches [n, Hkv, cap, D] whose capacities may differ.
torch::Tensor CatKv(const torch::Tensor& a, int64_t na, const torch::Tensor& b, int64_t nb) {
  if (!a.defined() && !b.defined()) return a;
  torch::Tensor x = a.defined() ? a : torch::zeros(RowsLike(b, na), b.options());
  torch::Tensor y = b.defined() ? b : torch::zeros(RowsLike(a, nb), a.options());
  const int64_t capacity = std::max(x.size(2), y.size(2));
  return torch::cat({PadCapacity(x, capacity), PadCapacity(y, capacity)}, 0);
}

torch::Tensor LengthsOrZeros(const torch::Tensor& lengths, int64_t rows) {
  return lengths.defined() ? lengths : torch::zeros({rows}, torch::kLong);
}

}  // namespace

// ---- ModelCache ------------------------------------------------------------------------------

int64_t ModelCache::bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers) {
    total += TensorBytes(layer.lightning.state) + TensorBytes(layer.softmax.k) +
             TensorBytes(layer.softmax.v) + TensorBytes(layer.softmax.lengths);
  }
  return total;
}

void ModelCache::SelectRows(const torch::Tensor& rows) {
  LR_CHECK(rows.dim() == 1 && rows.scalar_type() == torch::kLong, "ModelCache::SelectRows: rows must be [R] int64");
  for (auto& layer : layers) {
    layer.lightning.state = SelectIfDefined(layer.lightning.state, rows);
    layer.softmax.k = SelectIfDefined(layer.softmax.k, rows);
    layer.softmax.v = SelectIfDefined(layer.softmax.v, rows);
    layer.softmax.lengths = SelectIfDefined(layer.softmax.lengths, rows);
  }
  batch = rows.size(0);
}

void ModelCache::AppendRows(const ModelCache& other) {
  if (other.batch == 0) return;
  if (batch == 0) {
    // Take copies so that later in-place updates of this cache never reach `other`.
    *this = other;
    SelectRows(torch::arange(other.batch, torch::kLong));
    return;
  }
  LR_CHECK(layers.size() == other.layers.size(), "ModelCache::AppendRows: caches have ", layers.size(), " and ",
           other.layers.size(), " layers");
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerCache& a = layers[l];
    const LayerCache& b = other.layers[l];
    a.lightning.state = CatRows(a.lightning.state, batch, b.lightning.state, other.batch);
    a.softmax.k = CatKv(a.softmax.k, batch, b.softmax.k, other.batch);
    a.softmax.v = CatKv(a.softmax.v, batch, b.softmax.v, other.batch);
    if (a.softmax.lengths.defined() || b.softmax.lengths.defined()) {
      a.softmax.lengths = torch::cat(
          {LengthsOrZeros(a.softmax.lengths, batch), LengthsOrZeros(b.softmax.lengths, other.batch)}, 0);
    }
  }
  batch += other.batch;
  tokens = std::max(tokens, other.tokens);
}

void ModelCache::AppendRows(ModelCache&& other) {
  if (batch == 0 && other.batch > 0) {
    *this = std::move(other);
    return;
  }
  AppendRows(static_cast<const ModelCache&>(other));
}

void ModelCache::CopyRowsFrom(const ModelCache& src, const torch::Tensor& src_rows, const torch::Tensor& dst_rows) {
  LR_CHECK(src_rows.dim() == 1 && dst_rows.dim() == 1 && src_rows.scalar_type() == torch::kLong &&
               dst_rows.scalar_type() == torch::kLong && src_rows.size(0) == dst_rows.size(0),
           "ModelCache::CopyRowsFrom: src_rows and dst_rows must be [R] int64 of equal length");
  LR_CHECK(batch > 0 && layers.size() == src.layers.size(), "ModelCache::CopyRowsFrom: destination holds ", batch,
           " rows and ", layers.size(), " layers, source ", src.layers.size(), " layers");
  if (src_rows.size(0) == 0) return;
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerCache& d = layers[l];
    const LayerCache& s = src.layers[l];
    // Lightning state: undefined source rows are zeros.
    if (s.lightning.state.defined()) {
      if (!d.lightning.state.defined()) d.lightning.state = torch::zeros(RowsLike(s.lightning.state, batch),
                                                                         s.lightning.state.options());
      const torch::Tensor dr = dst_rows.to(d.lightning.state.device());
      d.lightning.state.index_copy_(0, dr, s.lightning.state.index_select(0, src_rows.to(s.lightning.state.device())));
    } else if (d.lightning.state.defined()) {
      d.lightning.state.index_fill_(0, dst_rows.to(d.lightning.state.device()), 0);
    }
    // Softmax KV cache: copy the rows' valid prefixes; grow capacity if needed.
    if (s.softmax.k.defined()) {
      const torch::Tensor src_len = LengthsOrZeros(s.softmax.lengths, src.batch).index_select(0, src_rows.cpu());
      const int64_t needed = src_len.numel() ? src_len.max().item<int64_t>() : 0;
      if (!d.softmax.k.defined()) {
        d.softmax.k = torch::zeros(RowsLike(s.softmax.k, batch), s.softmax.k.options());
        d.softmax.v = torch::zeros(RowsLike(s.softmax.v, batch), s.softmax.v.options());
      }
      if (d.softmax.k.size(2) < needed) {
        d.softmax.k = PadCapacity(d.softmax.k, needed);
        d.softmax.v = PadCapacity(d.softmax.v, needed);
      }
      const int64_t n = std::min(d.softmax.k.size(2), s.softmax.k.size(2));
      const torch::Tensor sr = src_rows.to(s.softmax.k.device()), dr = dst_rows.to(d.softmax.k.device());
      d.softmax.k.narrow(2, 0, n).index_copy_(0, dr, s.softmax.k.index_select(0, sr).narrow(2, 0, n));
      d.softmax.v.narrow(2, 0, n).index_copy_(0, dr, s.softmax.v.index_select(0, sr).narrow(2, 0, n));
      if (!d.softmax.lengths.defined()) d.softmax.lengths = torch::zeros({batch}, torch::kLong);
      d.softmax.lengths.index_copy_(0, dst_rows.cpu(), src_len);
    } else if (d.softmax.lengths.defined()) {
      d.softmax.lengths.index_fill_(0, dst_rows.cpu(), 0);
    }
  }
  tokens = std::max(tokens, src.tokens);
}

// ---- DecoderLayer ----------------------------------------------------------------------------

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& config, int64_t layer_idx)
    : attn_type_(config.layer_type(layer_idx)), postnorm_(config.postnorm) {
  input_layernorm = register_module("input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps));
  if (attn_type_ == AttnType::kLightning) {
    lightning = register_module("self_attn", LightningAttention(config, layer_idx));
    alpha_attn_ = config.layernorm_linear_attention_alpha;
    beta_attn_ = config.layernorm_linear_attention_beta;
  } else {
    softmax = register_module("self_attn", SoftmaxAttention(config, layer_idx));
    alpha_attn_ = config.layernorm_full_attention_alpha;
    beta_attn_ = config.layernorm_full_attention_beta;
  }
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps));
  block_sparse_moe = register_module("block_sparse_moe", Moe(config));
  alpha_mlp_ = config.layernorm_mlp_alpha;
  beta_mlp_ = config.layernorm_mlp_beta;
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const ForwardContext& ctx,
                                        LayerCache* cache, std::vector<torch::Tensor>* router_logits) {
  torch::Tensor h1 = input_layernorm->forward(x);  // [B, T, C]
  torch::Tensor a = attn_type_ == AttnType::kLightning
                        ? lightning->forward(h1, ctx, cache ? &cache->lightning : nullptr)
                        : softmax->forward(h1, ctx, cache ? &cache->softmax : nullptr);
  torch::Tensor y = (postnorm_ ? h1 : x) * alpha_attn_ + a * beta_attn_;
  torch::Tensor h2 = post_attention_layernorm->forward(y);
  MoeOutput moe = block_sparse_moe->forward(h2);
  if (router_logits) router_logits->push_back(moe.router_logits);
  return (postnorm_ ? h2 : y) * alpha_mlp_ + moe.out * beta_mlp_;
}

// ---- Decoder ---------------------------------------------------------------------------------

DecoderImpl::DecoderImpl(const ModelConfig& config) {
  embed_tokens = register_module(
      "embed_tokens", torch::nn::Embedding(torch::nn::EmbeddingOptions(config.vocab_size, config.hidden_size)));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) layers->push_back(DecoderLayer(config, l));
  norm = register_module("norm", RMSNorm(config.hidden_size, config.rms_norm_eps));
}

// ---- HybridModel -----------------------------------------------------------------------------

HybridModelImpl::HybridModelImpl(const ModelConfig& config, HeadType head)
    : fused_decode_pack(std::make_shared<FusedDecodePack>()), config_(config), head_type_(head) {
  Status valid = config.Validate();
  LR_CHECK(valid.ok(), valid.ToString());
  model = register_module("model", Decoder(config));
  if (head == HeadType::kLanguageModel) {
    LR_CHECK(!config.tie_word_embeddings,
             "model.tie_word_embeddings: tied embeddings are not supported (the LM head is held in fp32 "
             "separately from the body); set it to false");
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size, config.vocab_size).bias(false)));
  } else {
    value_head = register_module(
        "value_head", torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size, 1).bias(false)));
  }
  InitWeights(0);
}

void HybridModelImpl::InitWeights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor p = item.value();
    const bool is_norm = name.size() >= 11 && (name.find("norm.weight") != std::string::npos);
    if (is_norm) {
      p.fill_(1.0);
    } else {
      torch::Tensor fresh = at::normal(0.0, config_.initializer_range, p.sizes(), gen, torch::kFloat32);
      p.copy_(fresh);
    }
  }
}

void HybridModelImpl::SetBodyDtype(torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const bool keep_fp32 = name.rfind("lm_head.", 0) == 0 || name.rfind("value_head.", 0) == 0 ||
                           name.find("block_sparse_moe.gate.") != std::string::npos;
    torch::Tensor p = item.value();
    p.set_data(p.to(keep_fp32 ? torch::kFloat32 : dtype));
  }
}

torch::Tensor HybridModelImpl::Head(const torch::Tensor& hidden) {
  torch::Tensor h = hidden.to(torch::kFloat32);
  if (head_type_ == HeadType::kLanguageModel) return lm_head->forward(h);  // [..., V] fp32
  return value_head->forward(h).squeeze(-1);                              // [...] fp32
}

ModelOutput HybridModelImpl::forward(const torch::Tensor& input_ids, const ForwardContext& ctx,
                                     ModelCache* cache, const ForwardOptions& options) {
  LR_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == torch::kLong,
           "HybridModel::forward: input_ids must be [B, T] int64, got ", input_ids.sizes(), " ",
           input_ids.scalar_type());
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  LR_CHECK(T > 0, "HybridModel::forward: empty input (T = 0)");
  if (!ctx.cu_seqlens.empty()) {
    LR_CHECK(B == 1, "HybridModel::forward: packed documents (cu_seqlens) require B == 1, got B = ", B);
    LR_CHECK(ctx.cu_seqlens.front() == 0 && ctx.cu_seqlens.back() == T,
             "HybridModel::forward: cu_seqlens must start at 0 and end at T = ", T);
    LR_CHECK(cache == nullptr, "HybridModel::forward: packed documents cannot be combined with a cache");
  }
  const int64_t L = config_.num_hidden_layers;
  if (cache) {
    if (cache->batch == 0) {
      cache->layers.assign(L, LayerCache{});
      cache->batch = B;
    }
    LR_CHECK(cache->batch == B, "HybridModel::forward: cache holds ", cache->batch, " rows, input has ", B);
    LR_CHECK(static_cast<int64_t>(cache->layers.size()) == L, "HybridModel::forward: cache has ",
             cache->layers.size(), " layers, model has ", L);
  }
  {
    // Ids outside the vocabulary are a caller bug that Embedding would report obscurely.
    auto [lo, hi] = torch::aminmax(input_ids);
    LR_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < config_.vocab_size,
             "HybridModel::forward: token id out of range [0, ", config_.vocab_size, "): min ",
             lo.item<int64_t>(), ", max ", hi.item<int64_t>());
  }

  if (FusedDecodeApplies(*this, input_ids, ctx, cache, options)) return FusedDecodeStep(*this, input_ids, cache, options);

  std::vector<torch::Tensor> router_logits;
  torch::Tensor x = model->embed_tokens->forward(input_ids);  // [B, T, C]
  for (int64_t l = 0; l < L; ++l) {
    auto layer = model->layers->ptr<DecoderLayerImpl>(l);
    x = layer->forward(x, ctx, cache ? &cache->layers[l] : nullptr,
                       options.compute_aux_loss ? &router_logits : nullptr);
  }
  if (cache) cache->tokens += T;

  ModelOutput out;
  out.hidden = model->norm->forward(x);  // [B, T, C]
  if (!options.skip_head) {
    torch::Tensor h = options.last_position_only ? out.hidden.narrow(1, T - 1, 1) : out.hidden;
    out.logits = Head(h);
  }
  if (options.compute_aux_loss) {
    torch::Tensor all = torch::cat(router_logits, 0);  // [L*B*T, E] fp32
    torch::Tensor mask;
    if (options.aux_token_mask.defined()) {
      LR_CHECK(options.aux_token_mask.sizes() == input_ids.sizes(),
               "HybridModel::forward: aux_token_mask must be [B, T] like input_ids");
      mask = options.aux_token_mask.reshape({-1}).to(torch::kBool).repeat({L});
    }
    out.aux_loss = config_.router_aux_loss_coef *
                   LoadBalancingLoss(all, config_.num_experts_per_tok, mask);
  }
  return out;
}

// ---- log-probs -------------------------------------------------------------------------------

torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& targets, double temperature) {
  LR_CHECK(temperature > 0, "TokenLogProbs: temperature must be > 0, got ", temperature);
  LR_CHECK(logits.dim() == 3 && targets.dim() == 2 && logits.size(0) == targets.size(0) &&
               logits.size(1) == targets.size(1),
           "TokenLogProbs: logits [B, T, V] and targets [B, T] expected, got ", logits.sizes(), " and ",
           targets.sizes());
  torch::Tensor z = logits.to(torch::kFloat32);
  if (temperature != 1.0) z = z / temperature;
  torch::Tensor lse = torch::logsumexp(z, -1);                              // [B, T]
  torch::Tensor picked = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1);  // [B, T]
  return picked - lse;
}

torch::Tensor TokenEntropy(const torch::Tensor& logits, double temperature) {
  LR_CHECK(temperature > 0, "TokenEntropy: temperature must be > 0, got ", temperature);
  torch::Tensor z = logits.to(torch::kFloat32);
  if (temperature != 1.0) z = z / temperature;
  torch::Tensor logp = torch::log_softmax(z, -1);
  return -(logp.exp() * logp).sum(-1);
}

}  // namespace lightrl::model
