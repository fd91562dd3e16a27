// safetensors: byte-level format checked by an independent hand-written parser/writer, model
// directory round trips (single file, shards, bf16), and clear errors on bad files.
#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace lightrl::model {
namespace {

namespace fs = std::filesystem;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 16;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 2;
  c.head_dim = 8;
  c.num_key_value_heads = 1;
  c.vocab_size = 30;
  c.intermediate_size = 12;
  c.num_local_experts = 2;
  c.num_experts_per_tok = 2;
  c.rotary_dim = 4;
  c.attn_type_list = {0, 0, 0, 0, 0, 0, 0, 1};
  c.lightning_block_size = 4;
  c.initializer_range = 0.1;
  return c;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lightrl_st_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::string ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(SafetensorsTest, WrittenBytesFollowTheFormat) {
  NamedTensors t;
  t["b"] = torch::tensor({1.5f, -2.0f, 3.25f});
  t["a"] = torch::tensor({7, 8}, torch::kLong).reshape({1, 2});
  ASSERT_TRUE(WriteSafetensors((dir_ / "x.safetensors").string(), t, {{"k", "v"}}).ok());
  std::string bytes = ReadBytes(dir_ / "x.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["k"], "v");
  EXPECT_EQ(header["b"]["dtype"], "F32");
  EXPECT_EQ(header["b"]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(header["a"]["dtype"], "I64");
  EXPECT_EQ(header["a"]["shape"], nlohmann::json::array({1, 2}));
  auto off = header["b"]["data_offsets"];
  float values[3];
  std::memcpy(values, bytes.data() + 8 + n + off[0].get<int64_t>(), 12);
  EXPECT_EQ(values[0], 1.5f);
  EXPECT_EQ(values[1], -2.0f);
  EXPECT_EQ(values[2], 3.25f);
  EXPECT_EQ(bytes.size(), 8 + n + 12 + 16);
}

TEST_F(SafetensorsTest, ReadsAHandWrittenFile) {
  // Built byte by byte, independent of WriteSafetensors: one BF16 [2] tensor.
  std::string header = R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header;
  // bf16 1.0 = 0x3F80, -2.0 = 0xC000 (little-endian)
  bytes += std::string("\x80\x3f\x00\xc0", 4);
  std::ofstream(dir_ / "h.safetensors", std::ios::binary) << bytes;
  auto read = ReadSafetensors((dir_ / "h.safetensors").string());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  torch::Tensor w = read->at("w");
  EXPECT_EQ(w.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(w.to(torch::kFloat32)[0].item<float>(), 1.0f);
  EXPECT_EQ(w.to(torch::kFloat32)[1].item<float>(), -2.0f);
}

TEST_F(SafetensorsTest, ModelDirectoryRoundTripGivesIdenticalLogits) {
  torch::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  HybridModel a(c);
  a->InitWeights(1);
  ASSERT_TRUE(SaveModelDirectory(a, dir_.string()).ok());
  EXPECT_TRUE(fs::exists(dir_ / "config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "model.safetensors"));
  auto b = LoadModelDirectory(dir_.string());
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  torch::Tensor ids = torch::randint(c.vocab_size, {1, 11}, torch::kLong);
  EXPECT_TRUE(torch::equal(a->forward(ids).logits, (*b)->forward(ids).logits));
}

TEST_F(SafetensorsTest, ShardedAndBf16RoundTrips) {
  torch::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  HybridModel a(c);
  a->InitWeights(2);
  ASSERT_TRUE(SaveModelDirectory(a, dir_.string(), torch::kFloat32, /*max_shard_bytes=*/8192).ok());
  ASSERT_TRUE(fs::exists(dir_ / "model.safetensors.index.json"));
  HybridModel b(c);
  b->InitWeights(3);
  ASSERT_TRUE(LoadModelWeights(b, dir_.string()).ok());
  for (const auto& item : a->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), b->named_parameters()[item.key()])) << item.key();

  fs::path bf = dir_ / "bf16";
  ASSERT_TRUE(SaveModelDirectory(a, bf.string(), torch::kBFloat16).ok());
  HybridModel d(c);
  ASSERT_TRUE(LoadModelWeights(d, bf.string()).ok());
  torch::Tensor w = a->named_parameters()["model.layers.0.self_attn.qkv_proj.weight"];
  EXPECT_TRUE(torch::equal(d->named_parameters()["model.layers.0.self_attn.qkv_proj.weight"],
                           w.to(torch::kBFloat16).to(torch::kFloat32)));
}

TEST_F(SafetensorsTest, WrongShapeMissingAndUnexpectedTensorsAreNamed) {
  ModelConfig c = SmallConfig();
  HybridModel a(c);
  NamedTensors t;
  for (const auto& item : a->named_parameters()) t[item.key()] = item.value().detach();
  const std::string name = "model.layers.7.self_attn.k_proj.weight";

  NamedTensors wrong = t;
  wrong[name] = torch::zeros({3, 16});
  ASSERT_TRUE(WriteSafetensors((dir_ / "wrong.safetensors").string(), wrong).ok());
  Status s = LoadModelWeights(a, (dir_ / "wrong.safetensors").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(name), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[3, 16]"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[8, 16]"), std::string::npos) << s.message();

  NamedTensors missing = t;
  missing.erase(name);
  ASSERT_TRUE(WriteSafetensors((dir_ / "missing.safetensors").string(), missing).ok());
  s = LoadModelWeights(a, (dir_ / "missing.safetensors").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing tensor '" + name), std::string::npos) << s.message();

  NamedTensors extra = t;
  extra["model.layers.0.self_attn.bias"] = torch::zeros({2});
  ASSERT_TRUE(WriteSafetensors((dir_ / "extra.safetensors").string(), extra).ok());
  s = LoadModelWeights(a, (dir_ / "extra.safetensors").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.layers.0.self_attn.bias"), std::string::npos) << s.message();
}

TEST_F(SafetensorsTest, TruncatedAndCorruptFilesAreDataLoss) {
  NamedTensors t;
  t["first"] = torch::ones({4});
  t["second"] = torch::ones({1000});
  fs::path p = dir_ / "t.safetensors";
  ASSERT_TRUE(WriteSafetensors(p.string(), t).ok());
  fs::resize_file(p, fs::file_size(p) - 100);
  auto r = ReadSafetensors(p.string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("second"), std::string::npos) << r.status().message();

  std::ofstream(dir_ / "garbage.safetensors", std::ios::binary) << std::string("\x10\0\0\0\0\0\0\0{not json}xxxxx", 23);
  r = ReadSafetensors((dir_ / "garbage.safetensors").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);

  std::ofstream(dir_ / "huge.safetensors", std::ios::binary) << std::string("\xff\xff\xff\0\0\0\0\0{}", 10);
  r = ReadSafetensors((dir_ / "huge.safetensors").string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("header length"), std::string::npos);

  r = ReadSafetensors((dir_ / "absent.safetensors").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace lightrl::model
