// ModelConfig: every field of the MiniMax-M1 `config.json` that changes the computation
// (hybrid_model.md §1), with the released names, plus lightrl's kernel knobs.
//
// Loaded from YAML (configs/model/*.yaml, the `model:` block of a recipe) or from an HF-style
// config.json (yaml-cpp reads JSON). Validate() rejects inconsistent configs with the key name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/status.h"

namespace lightrl::model {

enum class AttnType : int { kLightning = 0, kSoftmax = 1 };

struct ModelConfig {
  int64_t hidden_size = 0;             // C
  int64_t num_hidden_layers = 0;       // L
  int64_t num_attention_heads = 0;     // H (lightning and softmax query heads)
  int64_t head_dim = 0;                // D (H*D need not equal C)
  int64_t num_key_value_heads = 0;     // Hkv (softmax layers; GQA group = H / Hkv)
  int64_t vocab_size = 0;              // V
  int64_t intermediate_size = 0;       // per-expert SwiGLU hidden size
  int64_t num_local_experts = 0;       // E
  int64_t num_experts_per_tok = 2;     // top-k
  double rope_theta = 10000000.0;
  int64_t rotary_dim = 0;              // partial NeoX RoPE on the first rotary_dim dims
  double rms_norm_eps = 1e-5;          // decoder-layer and final RMSNorm
  bool postnorm = true;                // DeepNorm post-norm residual (hybrid_model.md §2)
  double layernorm_full_attention_alpha = 1.0;
  double layernorm_full_attention_beta = 1.0;
  double layernorm_linear_attention_alpha = 1.0;
  double layernorm_linear_attention_beta = 1.0;
  double layernorm_mlp_alpha = 1.0;
  double layernorm_mlp_beta = 1.0;
  std::vector<int> attn_type_list;     // [L]: 0 = lightning, 1 = softmax
  bool tie_word_embeddings = false;
  double router_aux_loss_coef = 0.001;
  int64_t max_position_embeddings = 10240000;
  double initializer_range = 0.02;     // std of the normal init for fresh (untrained) weights

  // lightrl kernel knobs (not in the released config.json; they do not change the math).
  int64_t lightning_block_size = 256;  // chunk size of the lightning forward/backward
  double lightning_norm_eps = 1e-6;    // eps of the 8192-wide output RMSNorm (M1-MOD default)
  int64_t softmax_block_size = 1024;   // KV block of the online-softmax path for long sequences

  AttnType layer_type(int64_t layer) const { return static_cast<AttnType>(attn_type_list.at(layer)); }
  int64_t num_lightning_layers() const;
  int64_t num_softmax_layers() const;

  // Cross-field checks; the message names the offending key (e.g. "model.attn_type_list: has
  // 7 entries, expected num_hidden_layers = 8").
  Status Validate(const std::string& path = "model") const;
};

// Parses a `model:` map (YAML or config.json). Unknown keys are errors, except the HF
// metadata keys config.json carries that do not affect the computation (architectures,
// auto_map, model_type, torch_dtype, transformers_version, ...), which are accepted and ignored.
// Throws ConfigError; use LoadModelConfig / ParseModelConfigNode for a Status.
ModelConfig ParseModelConfig(ConfigReader& reader);
StatusOr<ModelConfig> ParseModelConfigNode(const YAML::Node& node, const std::string& path = "model");
// Reads a YAML file whose top level is either the fields or a `model:` block, or a config.json.
StatusOr<ModelConfig> LoadModelConfig(const std::string& file);

// HF-style config.json text with the released field names (export / safetensors directories).
std::string ModelConfigToJson(const ModelConfig& config);

// Analytic parameter counts (no allocation), for presets as large as M1.
struct ParameterCounts {
  int64_t total = 0;                    // every weight, embeddings and LM head included
  int64_t embedding = 0;                // embed_tokens + lm_head (one if tied)
  int64_t active_non_embedding = 0;     // per-token active weights: attention, norms, router,
                                        // top-k experts; embeddings and LM head excluded
  int64_t router = 0;                   // all layers' router weights (in total and active)
  int64_t norms = 0;                    // all RMSNorm weights (in total and active)
  // The published M1 figures (456.07B / 45.93B, hybrid_model.md §1) count attention, experts
  // and embeddings only; subtract router + norms (~0.017B for M1) to compare with them.
};
ParameterCounts CountParameters(const ModelConfig& config);

}  // namespace lightrl::model
