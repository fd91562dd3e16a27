// The small hybrid model config the trainer tests use: `layers` layers (the last one softmax,
// the rest lightning), hidden 32, 4 heads of 8, 4 experts top-2, vocabulary 40.
#pragma once

#include "model/config.h"

namespace lightrl::trainer {

inline model::ModelConfig SmallModelConfig(int layers) {
  model::ModelConfig c;
  c.hidden_size = 32;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 4;
  c.head_dim = 8;
  c.num_key_value_heads = 2;
  c.vocab_size = 40;
  c.intermediate_size = 16;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.rotary_dim = 4;
  c.attn_type_list.assign(static_cast<size_t>(layers), 0);
  c.attn_type_list.back() = 1;
  c.lightning_block_size = 8;
  c.initializer_range = 0.1;
  return c;
}

}  // namespace lightrl::trainer
