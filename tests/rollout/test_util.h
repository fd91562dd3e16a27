// Shared helpers for the rollout tests: a model small enough for fast tests (the tiny
// architecture shrunk: 7 lightning layers + 1 softmax layer, hidden 32, vocab 64), a printable
// detokenizer for it, and weights that force one token.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

namespace lightrl::rollout::testing {

inline model::ModelConfig TestConfig() {
  model::ModelConfig c;
  c.hidden_size = 32;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 4;
  c.head_dim = 8;
  c.num_key_value_heads = 2;
  c.vocab_size = 64;
  c.intermediate_size = 32;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.rotary_dim = 4;
  c.attn_type_list = {0, 0, 0, 0, 0, 0, 0, 1};
  c.layernorm_full_attention_alpha = c.layernorm_linear_attention_alpha = c.layernorm_mlp_alpha = 2.0;
  c.lightning_block_size = 8;  // prompts span several chunks
  c.softmax_block_size = 16;
  c.initializer_range = 0.2;   // peaked enough that sampled text is not uniform noise
  c.max_position_embeddings = 4096;
  return c;
}

inline model::HybridModel MakeModel(uint64_t seed = 7, const model::ModelConfig& c = TestConfig()) {
  model::HybridModel m(c);
  m->InitWeights(seed);
  m->eval();
  return m;
}

// Token id -> one printable ASCII character (id 0 = ' ', 33 = 'A', ...).
inline std::string Detok(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s.push_back(static_cast<char>(32 + id));
  return s;
}

// A Tokenizer for the 64-token test vocabulary: byte c <-> id c - 32 (printable ASCII ' '..'_'),
// no specials; id 63 ('_') is the stop token.
class PrintableTokenizer : public model::Tokenizer {
 public:
  std::vector<int64_t> Encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    for (char c : text) ids.push_back((static_cast<unsigned char>(c) - 32) & 63);
    return ids;
  }
  std::vector<int64_t> EncodeOrdinary(const std::string& text) const override { return Encode(text); }
  std::string Decode(const std::vector<int64_t>& ids) const override { return Detok(ids); }
  int64_t vocab_size() const override { return 64; }
  std::vector<int64_t> stop_token_ids() const override { return {63}; }
  std::optional<int64_t> TokenId(const std::string& s) const override {
    if (s == "_") return 63;
    return std::nullopt;
  }
  std::string type() const override { return "printable"; }
};

inline std::vector<int64_t> Prompt(int64_t n, uint64_t seed, int64_t vocab = 64) {
  auto gen = at::detail::createCPUGenerator(seed);
  torch::Tensor t = at::randint(vocab, {n}, gen, torch::kLong);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

inline model::NamedTensors CopyWeights(model::HybridModel& m) {
  model::NamedTensors w;
  for (const auto& item : m->named_parameters(true)) w[item.key()] = item.value().detach().clone();
  return w;
}

// Weights under which every position gives `token` the logit `logit` and every other token 0
// (default 20: p > 1 - 1e-6): attention and expert outputs are zero (out_proj / o_proj / w2 = 0),
// so the stream is RMSNorm(embedding) = ones (all embeddings = 1), and lm_head row `token` =
// logit / C.
inline model::NamedTensors ForcedTokenWeights(model::HybridModel& m, int64_t token, double logit = 20.0) {
  model::NamedTensors w = CopyWeights(m);
  const int64_t C = m->config().hidden_size;
  for (auto& [name, t] : w) {
    const bool zero = name.find("out_proj") != std::string::npos || name.find("o_proj") != std::string::npos ||
                      name.find(".w2.") != std::string::npos;
    if (zero) t.zero_();
  }
  w["model.embed_tokens.weight"].fill_(1.0);
  w["lm_head.weight"].zero_();
  w["lm_head.weight"][token].fill_(logit / C);
  return w;
}

}  // namespace lightrl::rollout::testing
