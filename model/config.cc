#include "model/config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

namespace lightrl::model {

int64_t ModelConfig::num_lightning_layers() const {
  int64_t n = 0;
  for (int t : attn_type_list) n += (t == 0);
  return n;
}

int64_t ModelConfig::num_softmax_layers() const {
  return static_cast<int64_t>(attn_type_list.size()) - num_lightning_layers();
}

Status ModelConfig::Validate(const std::string& path) const {
  auto key = [&](const char* k) { return path.empty() ? std::string(k) : path + "." + k; };
  auto positive = [&](int64_t v, const char* k) -> Status {
    if (v <= 0) return InvalidArgument(key(k) + ": expected a positive integer, got " + std::to_string(v));
    return Status::Ok();
  };
  LR_RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  LR_RETURN_IF_ERROR(positive(num_hidden_layers, "num_hidden_layers"));
  LR_RETURN_IF_ERROR(positive(num_attention_heads, "num_attention_heads"));
  LR_RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  LR_RETURN_IF_ERROR(positive(num_key_value_heads, "num_key_value_heads"));
  LR_RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  LR_RETURN_IF_ERROR(positive(intermediate_size, "intermediate_size"));
  LR_RETURN_IF_ERROR(positive(num_local_experts, "num_local_experts"));
  LR_RETURN_IF_ERROR(positive(num_experts_per_tok, "num_experts_per_tok"));
  LR_RETURN_IF_ERROR(positive(lightning_block_size, "lightning_block_size"));
  LR_RETURN_IF_ERROR(positive(softmax_block_size, "softmax_block_size"));
  if (num_attention_heads % num_key_value_heads != 0) {
    return InvalidArgument(key("num_key_value_heads") + ": must divide num_attention_heads (" +
                           std::to_string(num_attention_heads) + "), got " +
                           std::to_string(num_key_value_heads));
  }
  if (num_experts_per_tok > num_local_experts) {
    return InvalidArgument(key("num_experts_per_tok") + ": must be <= num_local_experts (" +
                           std::to_string(num_local_experts) + "), got " +
                           std::to_string(num_experts_per_tok));
  }
  if (rotary_dim < 0 || rotary_dim > head_dim || rotary_dim % 2 != 0) {
    return InvalidArgument(key("rotary_dim") + ": expected an even integer in [0, head_dim=" +
                           std::to_string(head_dim) + "], got " + std::to_string(rotary_dim));
  }
  if (static_cast<int64_t>(attn_type_list.size()) != num_hidden_layers) {
    return InvalidArgument(key("attn_type_list") + ": has " + std::to_string(attn_type_list.size()) +
                           " entries, expected num_hidden_layers = " + std::to_string(num_hidden_layers));
  }
  for (size_t i = 0; i < attn_type_list.size(); ++i) {
    if (attn_type_list[i] != 0 && attn_type_list[i] != 1) {
      return InvalidArgument(key("attn_type_list") + "[" + std::to_string(i) +
                             "]: expected 0 (lightning) or 1 (softmax), got " +
                             std::to_string(attn_type_list[i]));
    }
  }
  if (!(rms_norm_eps > 0) || !(lightning_norm_eps > 0)) {
    return InvalidArgument(key("rms_norm_eps") + ": norm eps values must be > 0");
  }
  if (!(rope_theta > 0)) return InvalidArgument(key("rope_theta") + ": must be > 0");
  if (!(initializer_range > 0)) return InvalidArgument(key("initializer_range") + ": must be > 0");
  return Status::Ok();
}

ModelConfig ParseModelConfig(ConfigReader& r) {
  ModelConfig c;
  c.hidden_size = r.Get<int64_t>("hidden_size");
  c.num_hidden_layers = r.Get<int64_t>("num_hidden_layers");
  c.num_attention_heads = r.Get<int64_t>("num_attention_heads");
  c.head_dim = r.Get<int64_t>("head_dim");
  c.num_key_value_heads = r.Get<int64_t>("num_key_value_heads");
  c.vocab_size = r.Get<int64_t>("vocab_size");
  c.intermediate_size = r.Get<int64_t>("intermediate_size");
  c.num_local_experts = r.Get<int64_t>("num_local_experts");
  c.num_experts_per_tok = r.Get<int64_t>("num_experts_per_tok", c.num_experts_per_tok);
  c.rope_theta = r.Get<double>("rope_theta", c.rope_theta);
  c.rotary_dim = r.Get<int64_t>("rotary_dim", c.head_dim / 2);
  c.rms_norm_eps = r.Get<double>("rms_norm_eps", c.rms_norm_eps);
  c.postnorm = r.Get<bool>("postnorm", c.postnorm);
  // DeepNorm default alpha = (2N)^(1/4) when the field is absent.
  const double deepnorm = std::pow(2.0 * static_cast<double>(c.num_hidden_layers), 0.25);
  c.layernorm_full_attention_alpha = r.Get<double>("layernorm_full_attention_alpha", deepnorm);
  c.layernorm_full_attention_beta = r.Get<double>("layernorm_full_attention_beta", 1.0);
  c.layernorm_linear_attention_alpha = r.Get<double>("layernorm_linear_attention_alpha", deepnorm);
  c.layernorm_linear_attention_beta = r.Get<double>("layernorm_linear_attention_beta", 1.0);
  c.layernorm_mlp_alpha = r.Get<double>("layernorm_mlp_alpha", deepnorm);
  c.layernorm_mlp_beta = r.Get<double>("layernorm_mlp_beta", 1.0);
  c.attn_type_list = r.Get<std::vector<int>>("attn_type_list");
  c.tie_word_embeddings = r.Get<bool>("tie_word_embeddings", c.tie_word_embeddings);
  c.router_aux_loss_coef = r.Get<double>("router_aux_loss_coef", c.router_aux_loss_coef);
  c.max_position_embeddings = r.Get<int64_t>("max_position_embeddings", c.max_position_embeddings);
  c.initializer_range = r.Get<double>("initializer_range", c.initializer_range);
  c.lightning_block_size = r.Get<int64_t>("lightning_block_size", c.lightning_block_size);
  c.lightning_norm_eps = r.Get<double>("lightning_norm_eps", c.lightning_norm_eps);
  c.softmax_block_size = r.Get<int64_t>("softmax_block_size", c.softmax_block_size);

  // Fields of the released config.json that must hold the values lightrl implements.
  if (r.Has("shared_intermediate_size") && r.Get<int64_t>("shared_intermediate_size") != 0) {
    r.Fail("shared_intermediate_size", "shared experts are not implemented; expected 0");
  }
  r.MarkUsed("shared_intermediate_size");
  if (r.Has("hidden_act") && r.Get<std::string>("hidden_act") != "silu") {
    r.Fail("hidden_act", "expected 'silu' (the only activation of MiniMax-M1)");
  }
  r.MarkUsed("hidden_act");
  if (r.Has("sliding_window") ) r.Fail("sliding_window", "sliding-window attention is not implemented; expected null");
  r.MarkUsed("sliding_window");
  if (r.Has("router_jitter_noise") && r.Get<double>("router_jitter_noise") != 0.0) {
    r.Fail("router_jitter_noise", "router jitter is not implemented; expected 0.0");
  }
  r.MarkUsed("router_jitter_noise");
  // HF metadata with no effect on the computation.
  for (const char* k : {"architectures", "auto_map", "model_type", "torch_dtype", "transformers_version",
                        "bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "output_router_logits",
                        "attention_dropout", "layernorm_full_attention_alpha_", "shared_moe_mode",
                        "num_attention_heads_kv", "attn_window_size", "rope_scaling", "quantization_config",
                        "_name_or_path", "name"}) {
    r.MarkUsed(k);
  }
  r.Finish();
  return c;
}

StatusOr<ModelConfig> ParseModelConfigNode(const YAML::Node& node, const std::string& path) {
  StatusOr<ModelConfig> parsed = ParseConfig<ModelConfig>([&] {
    ConfigReader r(node, path);
    return ParseModelConfig(r);
  });
  if (!parsed.ok()) return parsed.status();
  LR_RETURN_IF_ERROR(parsed->Validate(path));
  return parsed;
}

StatusOr<ModelConfig> LoadModelConfig(const std::string& file) {
  LR_ASSIGN_OR_RETURN(YAML::Node node, LoadConfigFile(file));
  const bool nested = static_cast<bool>(node["model"]);
  auto r = ParseModelConfigNode(nested ? node["model"] : node, nested ? "model" : "");
  if (!r.ok()) return r.status().WithContext(file);
  return r;
}

std::string ModelConfigToJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {"MiniMaxM1ForCausalLM"};
  j["model_type"] = "minimax_m1";
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["head_dim"] = c.head_dim;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["vocab_size"] = c.vocab_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_local_experts"] = c.num_local_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["shared_intermediate_size"] = 0;
  j["hidden_act"] = "silu";
  j["rope_theta"] = c.rope_theta;
  j["rotary_dim"] = c.rotary_dim;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["postnorm"] = c.postnorm;
  j["layernorm_full_attention_alpha"] = c.layernorm_full_attention_alpha;
  j["layernorm_full_attention_beta"] = c.layernorm_full_attention_beta;
  j["layernorm_linear_attention_alpha"] = c.layernorm_linear_attention_alpha;
  j["layernorm_linear_attention_beta"] = c.layernorm_linear_attention_beta;
  j["layernorm_mlp_alpha"] = c.layernorm_mlp_alpha;
  j["layernorm_mlp_beta"] = c.layernorm_mlp_beta;
  j["attn_type_list"] = c.attn_type_list;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["router_aux_loss_coef"] = c.router_aux_loss_coef;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["lightning_block_size"] = c.lightning_block_size;
  j["lightning_norm_eps"] = c.lightning_norm_eps;
  j["softmax_block_size"] = c.softmax_block_size;
  return j.dump(2);
}

ParameterCounts CountParameters(const ModelConfig& c) {
  const int64_t C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim;
  const int64_t inner = H * D, kv = c.num_key_value_heads * D;
  const int64_t lightning = 3 * inner * C + inner * C /*gate*/ + inner /*norm*/ + C * inner /*out*/;
  const int64_t softmax = inner * C + 2 * kv * C + C * inner;
  const int64_t expert = 3 * C * c.intermediate_size;
  const int64_t router = c.num_local_experts * C;
  const int64_t norms = 2 * C;
  ParameterCounts p;
  p.embedding = c.vocab_size * C * (c.tie_word_embeddings ? 1 : 2);
  int64_t total = p.embedding + C /*final norm*/;
  int64_t active = C;
  for (int t : c.attn_type_list) {
    const int64_t attn = t == 0 ? lightning : softmax;
    total += attn + norms + router + c.num_local_experts * expert;
    active += attn + norms + router + c.num_experts_per_tok * expert;
  }
  p.router = router * static_cast<int64_t>(c.attn_type_list.size());
  p.norms = C + static_cast<int64_t>(c.attn_type_list.size()) * norms;
  for (int t : c.attn_type_list) p.norms += t == 0 ? inner : 0;
  p.total = total;
  p.active_non_embedding = active;
  return p;
}

}  // namespace lightrl::model
