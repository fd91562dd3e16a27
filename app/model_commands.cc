#include <chrono>
#include <cstdio>

#include "app/commands.h"
#include "core/runtime.h"
#include "model/config.h"
#include "model/hybrid_model.h"

namespace lightrl::app {

void AddModelCommands(CLI::App& app, int* exit_code) {
  auto* info = app.add_subcommand("model-info", "print a model config's shape and parameter counts");
  static std::string config_path;
  info->add_option("config", config_path, "model YAML (configs/model/*.yaml) or config.json")->required();
  info->callback([exit_code] {
    auto config = model::LoadModelConfig(config_path);
    if (!config.ok()) {
      std::fprintf(stderr, "lightrl model-info: %s\n", config.status().ToString().c_str());
      *exit_code = 1;
      return;
    }
    auto counts = model::CountParameters(*config);
    std::printf("%s\n", model::ModelConfigToJson(*config).c_str());
    std::printf("parameters: total=%lld (%.2fB) embedding=%lld active_non_embedding=%lld (%.2fB)\n",
                (long long)counts.total, counts.total / 1e9, (long long)counts.embedding,
                (long long)counts.active_non_embedding, counts.active_non_embedding / 1e9);
  });

  auto* smoke = app.add_subcommand("model-smoke",
                                   "build a model, run forward + cached greedy generation, check decode == forward");
  static std::string smoke_config;
  static int prompt_len = 48, new_tokens = 32, threads = 0;
  static uint64_t seed = 1;
  smoke->add_option("config", smoke_config, "model YAML or config.json")->required();
  smoke->add_option("--prompt-len", prompt_len, "prompt tokens")->check(CLI::PositiveNumber);
  smoke->add_option("--new-tokens", new_tokens, "tokens to generate")->check(CLI::PositiveNumber);
  smoke->add_option("--seed", seed, "weight init and prompt seed");
  smoke->add_option("--threads", threads, "libtorch threads (0 = cores available)");
  smoke->callback([exit_code] {
    using clock = std::chrono::steady_clock;
    auto config = model::LoadModelConfig(smoke_config);
    if (!config.ok()) {
      std::fprintf(stderr, "lightrl model-smoke: %s\n", config.status().ToString().c_str());
      *exit_code = 1;
      return;
    }
    const int used_threads = ConfigureThreads(threads);
    torch::NoGradGuard no_grad;
    model::HybridModel m(*config);
    m->InitWeights(seed);
    m->eval();
    torch::manual_seed(seed);
    torch::Tensor prompt = torch::randint(config->vocab_size, {1, prompt_len}, torch::kLong);  // [1, P]

    auto t0 = clock::now();
    model::ModelCache cache;
    model::ForwardOptions last_only;
    last_only.last_position_only = true;
    torch::Tensor logits = m->forward(prompt, {}, &cache, last_only).logits;  // [1, 1, V]
    double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
    std::vector<int64_t> tokens(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt_len);
    std::vector<torch::Tensor> step_logits;
    t0 = clock::now();
    for (int i = 0; i < new_tokens; ++i) {
      int64_t next = logits.reshape({-1}).argmax().item<int64_t>();
      step_logits.push_back(logits.reshape({-1}));
      tokens.push_back(next);
      logits = m->forward(torch::tensor({next}, torch::kLong).reshape({1, 1}), {}, &cache).logits;
    }
    double decode_s = std::chrono::duration<double>(clock::now() - t0).count();

    // The same sequence through the full (training) forward: decode logits must match.
    torch::Tensor all = torch::tensor(tokens, torch::kLong).reshape({1, -1});
    torch::Tensor full = m->forward(all).logits[0];  // [P + N, V] fp32
    double max_diff = 0;
    for (int i = 0; i < new_tokens; ++i) {
      max_diff = std::max(max_diff, (full[prompt_len - 1 + i] - step_logits[i]).abs().max().item<double>());
    }
    auto counts = model::CountParameters(*config);
    std::printf("model-smoke: %s  params=%.2fM  threads=%d\n", smoke_config.c_str(), counts.total / 1e6, used_threads);
    std::printf("  prefill %d tokens: %.1f ms (%.0f tok/s)\n", prompt_len, prefill_s * 1e3, prompt_len / prefill_s);
    std::printf("  decode %d tokens: %.2f ms/token\n", new_tokens, decode_s * 1e3 / new_tokens);
    std::printf("  cache: %lld bytes after %lld tokens\n", (long long)cache.bytes(), (long long)cache.tokens);
    std::printf("  max |decode logits - full-forward logits| = %.3g\n", max_diff);
    std::printf("  generated ids:");
    for (int i = 0; i < new_tokens; ++i) std::printf(" %lld", (long long)tokens[prompt_len + i]);
    std::printf("\n");
    if (!(max_diff < 1e-3)) {
      std::fprintf(stderr, "lightrl model-smoke: decode/forward mismatch %.3g exceeds 1e-3\n", max_diff);
      *exit_code = 1;
    }
  });
}

}  // namespace lightrl::app
