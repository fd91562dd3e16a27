// DecodeScalingSection (used by `lightrl-bench attention` and `lightrl-bench rollout`): decode
// time per token vs context length, the tiny hybrid model (configs/model/tiny.yaml: 7 lightning
// layers + 1 softmax layer) vs its all-softmax variant (same shapes, attn_type 1 everywhere).
//
// Method: one sequence (B = 1) whose cache already holds C tokens is advanced by one token per
// step (HybridModel::forward of [1, 1] with the cache: the recurrent lightning step and KV-cached
// softmax attention). The cache is filled synthetically (random fp32 lightning states and K/V of
// C positions, with spare capacity so no step reallocates) instead of by a prefill: the decode
// cost depends only on the cache sizes, and a 32K all-softmax prefill would dominate the run.
// Reported: the fastest of `reps` steps after warm-up, taken over 3 round-robin passes over the
// lengths (the minimum, not the median: on a shared machine other load only ever adds time, and
// the ratios compare costs, not luck). Lengths 1K, 2K, 4K, 8K, 16K, 32K
// (quick: 1K, 4K, 8K). Target: hybrid t(longest)/t(1K) <= 1.5.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "bench/bench.h"
#include "core/check.h"
#include "model/config.h"
#include "model/hybrid_model.h"

namespace lightrl::bench {

namespace {

std::string Tokens(int64_t T) { return T % 1024 == 0 ? std::to_string(T / 1024) + "K" : std::to_string(T); }

// configs/model/tiny.yaml, looked up from the working directory, $LIGHTRL_SOURCE_DIR, or this
// source file's checkout.
model::ModelConfig TinyConfig() {
  std::vector<std::filesystem::path> candidates = {"configs/model/tiny.yaml"};
  if (const char* src = std::getenv("LIGHTRL_SOURCE_DIR")) candidates.emplace_back(std::filesystem::path(src) / "configs/model/tiny.yaml");
  candidates.push_back(std::filesystem::path(__FILE__).parent_path().parent_path() / "configs/model/tiny.yaml");
  for (const auto& p : candidates) {
    if (!std::filesystem::exists(p)) continue;
    auto c = model::LoadModelConfig(p.string());
    LR_CHECK(c.ok(), "decode bench: ", c.status().ToString());
    return *c;
  }
  LR_FAIL("decode bench: configs/model/tiny.yaml not found (run from the source root or set LIGHTRL_SOURCE_DIR)");
}

// A cache of B rows each holding C tokens, with capacity for `spare` more (random contents).
model::ModelCache SyntheticCache(const model::ModelConfig& c, int64_t B, int64_t C, int64_t spare) {
  model::ModelCache cache;
  cache.layers.resize(c.num_hidden_layers);
  cache.batch = B;
  cache.tokens = C;
  const int64_t H = c.num_attention_heads, D = c.head_dim, Hkv = c.num_key_value_heads;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.attn_type_list[l] == 0) {
      cache.layers[l].lightning.state = torch::randn({B, H, D, D}) * 0.01;  // [B, H, D, D] fp32
    } else {
      auto& s = cache.layers[l].softmax;
      s.k = torch::randn({B, Hkv, C + spare, D});  // [B, Hkv, cap, D] fp32
      s.v = torch::randn({B, Hkv, C + spare, D});
      s.lengths = torch::full({B}, C, torch::kLong);  // [B] int64
    }
  }
  return cache;
}

}  // namespace

// Seconds of one decode step of B rows at context C, the fastest of `reps` (exported for the
// rollout suite via the declaration there).
double DecodeStepSeconds(model::HybridModel& m, int64_t B, int64_t C, int reps,
                         model::ForwardOptions::FusedSplit split = model::ForwardOptions::FusedSplit::kAuto) {
  torch::NoGradGuard no_grad;
  const int warmup = 3;
  model::ModelCache cache = SyntheticCache(m->config(), B, C, warmup + reps + 8);
  model::ForwardOptions fo;
  fo.last_position_only = true;
  fo.fused_split = split;
  torch::Tensor ids = torch::randint(m->config().vocab_size, {B, 1}, torch::kLong);  // [B, 1]
  std::vector<double> times;
  for (int i = 0; i < warmup + reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor logits = m->forward(ids, {}, &cache, fo).logits;  // [B, 1, V] fp32
    ids = logits.argmax(-1);                                        // [B, 1]
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) times.push_back(s);
  }
  return *std::min_element(times.begin(), times.end());
}

model::ModelConfig TinyModelConfig() { return TinyConfig(); }

model::ModelConfig AllSoftmaxVariant(model::ModelConfig c) {
  std::fill(c.attn_type_list.begin(), c.attn_type_list.end(), 1);
  return c;
}

void DecodeScalingSection(const BenchOptions& options, std::vector<Target>* targets) {
  const model::ModelConfig hybrid_cfg = TinyConfig();
  const model::ModelConfig softmax_cfg = AllSoftmaxVariant(hybrid_cfg);
  const std::vector<int64_t> lengths = options.quick ? std::vector<int64_t>{1024, 4096, 8192}
                                                     : std::vector<int64_t>{1024, 2048, 4096, 8192, 16384, 32768};
  const int reps = options.quick ? 9 : 21;
  model::HybridModel hybrid(hybrid_cfg), softmax(softmax_cfg);
  hybrid->InitWeights(1);
  softmax->InitWeights(1);
  hybrid->eval();
  softmax->eval();
  std::printf("\ndecode time per token vs context (B = 1, tiny model: hidden %lld, %lld layers; hybrid = %lld "
              "softmax layer(s), all-softmax = %lld; synthetic cache, fastest of %d steps)\n",
              static_cast<long long>(hybrid_cfg.hidden_size), static_cast<long long>(hybrid_cfg.num_hidden_layers),
              static_cast<long long>(std::count(hybrid_cfg.attn_type_list.begin(), hybrid_cfg.attn_type_list.end(), 1)),
              static_cast<long long>(softmax_cfg.num_hidden_layers), reps);
  Table table("decode step time vs context",
              {"context", "hybrid", "all-softmax", "softmax/hybrid", "hybrid t/t(1K)", "softmax t/t(1K)"});
  // Round-robin over the lengths (3 rounds, the fastest per length kept), so a change of the
  // machine's load during the run does not bias the long contexts against the short ones.
  const int rounds = 3;
  std::vector<double> th(lengths.size(), 1e30), ts(lengths.size(), 1e30);
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < lengths.size(); ++i) {
      th[i] = std::min(th[i], DecodeStepSeconds(hybrid, 1, lengths[i], reps / rounds));
      ts[i] = std::min(ts[i], DecodeStepSeconds(softmax, 1, lengths[i], reps / rounds));
    }
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    table.AddRow({Tokens(lengths[i]), Fmt(th[i] * 1e3, 3) + " ms", Fmt(ts[i] * 1e3, 3) + " ms",
                  Fmt(ts[i] / th[i], 2) + "x", Fmt(th[i] / th[0], 2), Fmt(ts[i] / ts[0], 2)});
  }
  table.Print();
  const std::string name = "decode.hybrid_t" + Tokens(lengths.back()) + "_over_t" + Tokens(lengths.front());
  targets->push_back({name, th.back() / th.front(), "<=", 1.5});
}

}  // namespace lightrl::bench
