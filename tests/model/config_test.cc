// ModelConfig: presets, config.json round trip, key-named errors, and the M1 parameter counts
// against the spec's independent enumeration (hybrid_model.md §1 "Parameter count").
#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace lightrl::model {
namespace {

std::string Source(const std::string& rel) {
  const char* root = std::getenv("LIGHTRL_SOURCE_DIR");
  return std::string(root ? root : ".") + "/" + rel;
}

std::string Tiny(const std::string& extra_replace_from = "", const std::string& to = "") {
  std::string text = R"(model:
  hidden_size: 64
  num_hidden_layers: 8
  num_attention_heads: 4
  head_dim: 16
  num_key_value_heads: 2
  vocab_size: 100
  intermediate_size: 32
  num_local_experts: 4
  attn_type_list: [0, 0, 0, 0, 0, 0, 0, 1]
)";
  if (!extra_replace_from.empty()) {
    auto pos = text.find(extra_replace_from);
    EXPECT_NE(pos, std::string::npos);
    text.replace(pos, extra_replace_from.size(), to);
  }
  return text;
}

StatusOr<ModelConfig> FromText(const std::string& text) {
  auto node = LoadConfigString(text);
  EXPECT_TRUE(node.ok());
  return ParseModelConfigNode((*node)["model"], "model");
}

TEST(ModelConfigTest, M1PresetMatchesPublishedParameterCounts) {
  auto config = LoadModelConfig(Source("configs/model/minimax_m1.yaml"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->num_softmax_layers(), 10);
  EXPECT_EQ(config->num_lightning_layers(), 70);
  for (int l = 0; l < 80; ++l) EXPECT_EQ(config->attn_type_list[l], l % 8 == 7 ? 1 : 0) << l;

  // Independent enumeration from the spec (experts, 70 lightning x 251.7M, 10 softmax x 113.2M,
  // embedding + lm_head), which is how the published 456.07B / 45.93B are counted.
  const double C = 6144, inner = 64 * 128, kv = 8 * 128, I = 9216, V = 200064;
  const double experts_all = 80.0 * 32 * 3 * C * I;
  const double lightning = 5 * inner * C + inner;  // qkv (3) + gate + out, plus the 8192-wide norm
  const double softmax = 2 * inner * C + 2 * kv * C;
  const double published_total = experts_all + 70 * lightning + 10 * softmax + 2 * V * C;
  const double published_active = 80.0 * 2 * 3 * C * I + 70 * lightning + 10 * softmax;
  EXPECT_NEAR(published_total / 1e9, 456.07, 0.005);
  EXPECT_NEAR(published_active / 1e9, 45.93, 0.005);

  ParameterCounts counts = CountParameters(*config);
  // lightrl counts routers and norms too; the published figures leave them out.
  EXPECT_EQ(counts.router, 80 * 32 * 6144);
  EXPECT_DOUBLE_EQ(static_cast<double>(counts.total - counts.router - counts.norms + 70 * 8192),
                   published_total);
  EXPECT_DOUBLE_EQ(static_cast<double>(counts.active_non_embedding - counts.router - counts.norms + 70 * 8192),
                   published_active);
  EXPECT_EQ(counts.embedding, 2 * 200064LL * 6144);
  EXPECT_NEAR(config->layernorm_mlp_alpha, std::pow(160.0, 0.25), 1e-12);
}

TEST(ModelConfigTest, TinyPresetKeepsTheHybridPattern) {
  auto config = LoadModelConfig(Source("configs/model/tiny.yaml"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->num_hidden_layers % 8, 0);
  for (int l = 0; l < config->num_hidden_layers; ++l)
    EXPECT_EQ(config->attn_type_list[l], l % 8 == 7 ? 1 : 0);
  EXPECT_FALSE(config->tie_word_embeddings);
}

TEST(ModelConfigTest, DeepNormAlphaDefaultsToFourthRootOfTwoN) {
  auto c = FromText(Tiny());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_DOUBLE_EQ(c->layernorm_linear_attention_alpha, std::pow(16.0, 0.25));
  EXPECT_DOUBLE_EQ(c->layernorm_mlp_beta, 1.0);
  EXPECT_EQ(c->rotary_dim, 8);  // head_dim / 2 when absent
}

TEST(ModelConfigTest, JsonRoundTripIsExact) {
  auto c = FromText(Tiny());
  ASSERT_TRUE(c.ok());
  auto dir = std::filesystem::temp_directory_path() / "lightrl_model_config_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << ModelConfigToJson(*c);
  auto back = LoadModelConfig((dir / "config.json").string());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(ModelConfigToJson(*back), ModelConfigToJson(*c));
  std::filesystem::remove_all(dir);
}

TEST(ModelConfigTest, ErrorsNameTheKey) {
  auto wrong_len = FromText(Tiny("[0, 0, 0, 0, 0, 0, 0, 1]", "[0, 0, 0, 0, 0, 0, 1]"));
  ASSERT_FALSE(wrong_len.ok());
  EXPECT_NE(wrong_len.status().message().find("model.attn_type_list"), std::string::npos);
  EXPECT_NE(wrong_len.status().message().find("7 entries"), std::string::npos);

  auto missing = FromText(Tiny("  vocab_size: 100\n", ""));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("model.vocab_size"), std::string::npos);

  auto gqa = FromText(Tiny("num_key_value_heads: 2", "num_key_value_heads: 3"));
  ASSERT_FALSE(gqa.ok());
  EXPECT_NE(gqa.status().message().find("model.num_key_value_heads"), std::string::npos);

  auto unknown = FromText(Tiny("  vocab_size: 100\n", "  vocab_size: 100\n  hiden_size: 3\n"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("hiden_size"), std::string::npos);

  auto bad_type = FromText(Tiny("hidden_size: 64", "hidden_size: sixty"));
  ASSERT_FALSE(bad_type.ok());
  EXPECT_NE(bad_type.status().message().find("model.hidden_size"), std::string::npos);

  auto bad_attn = FromText(Tiny("[0, 0, 0, 0, 0, 0, 0, 1]", "[0, 0, 0, 0, 0, 0, 0, 2]"));
  ASSERT_FALSE(bad_attn.ok());
  EXPECT_NE(bad_attn.status().message().find("attn_type_list[7]"), std::string::npos);

  auto rotary = FromText(Tiny("  vocab_size: 100\n", "  vocab_size: 100\n  rotary_dim: 7\n"));
  ASSERT_FALSE(rotary.ok());
  EXPECT_NE(rotary.status().message().find("model.rotary_dim"), std::string::npos);

  auto shared = FromText(Tiny("  vocab_size: 100\n", "  vocab_size: 100\n  shared_intermediate_size: 128\n"));
  ASSERT_FALSE(shared.ok());
  EXPECT_NE(shared.status().message().find("shared_intermediate_size"), std::string::npos);
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  auto c = LoadModelConfig("/nonexistent/lightrl/model.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/nonexistent/lightrl/model.yaml"), std::string::npos);
}

}  // namespace
}  // namespace lightrl::model
