// Whole-model tests (hybrid_model.md "Tests"): checkpoint names, packed == separate, decode ==
// full forward, batch rows independent, FP32 head, aux loss on a uniform router, gradients.
#include "model/hybrid_model.h"

#include <gtest/gtest.h>

#include <set>

namespace lightrl::model {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 32;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 4;
  c.head_dim = 8;
  c.num_key_value_heads = 2;
  c.vocab_size = 50;
  c.intermediate_size = 24;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.rotary_dim = 4;
  c.attn_type_list = {0, 0, 0, 0, 0, 0, 0, 1};
  c.layernorm_full_attention_alpha = c.layernorm_linear_attention_alpha = c.layernorm_mlp_alpha = 2.0;
  c.lightning_block_size = 8;  // several blocks + partial last block in these tests
  c.softmax_block_size = 8;
  c.initializer_range = 0.1;
  return c;
}

HybridModel MakeModel(const ModelConfig& c, uint64_t seed = 3) {
  HybridModel m(c);
  m->InitWeights(seed);
  m->eval();
  return m;
}

torch::Tensor RandomIds(int64_t vocab, int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(vocab, {1, n}, gen, torch::kLong);
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(HybridModelTest, ParameterNamesFollowTheReleasedCheckpoint) {
  ModelConfig c = SmallConfig();
  HybridModel m(c);
  std::set<std::string> expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
  for (int l = 0; l < 8; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    expected.insert(p + "input_layernorm.weight");
    expected.insert(p + "post_attention_layernorm.weight");
    if (c.attn_type_list[l] == 0) {
      for (const char* n : {"qkv_proj", "output_gate", "norm", "out_proj"}) expected.insert(p + "self_attn." + n + ".weight");
    } else {
      for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"}) expected.insert(p + "self_attn." + n + ".weight");
    }
    expected.insert(p + "block_sparse_moe.gate.weight");
    for (int e = 0; e < 4; ++e)
      for (const char* w : {"w1", "w2", "w3"})
        expected.insert(p + "block_sparse_moe.experts." + std::to_string(e) + "." + w + ".weight");
  }
  std::set<std::string> actual;
  int64_t numel = 0;
  for (const auto& item : m->named_parameters()) {
    actual.insert(item.key());
    numel += item.value().numel();
  }
  EXPECT_EQ(actual, expected);
  EXPECT_EQ(numel, CountParameters(c).total);
  auto params = m->named_parameters();
  EXPECT_EQ(params["model.layers.0.self_attn.qkv_proj.weight"].sizes(), (std::vector<int64_t>{3 * 4 * 8, 32}));
  EXPECT_EQ(params["model.layers.7.self_attn.k_proj.weight"].sizes(), (std::vector<int64_t>{2 * 8, 32}));
  EXPECT_EQ(params["model.layers.3.block_sparse_moe.experts.1.w2.weight"].sizes(), (std::vector<int64_t>{32, 24}));
}

TEST(HybridModelTest, PackedDocumentsEqualSeparateRuns) {
  torch::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  std::vector<int64_t> lens = {5, 17, 9};
  std::vector<torch::Tensor> docs;
  std::vector<int64_t> cu = {0};
  for (size_t i = 0; i < lens.size(); ++i) {
    docs.push_back(RandomIds(c.vocab_size, lens[i], 10 + i));
    cu.push_back(cu.back() + lens[i]);
  }
  ForwardContext ctx;
  ctx.cu_seqlens = cu;
  torch::Tensor packed = m->forward(torch::cat(docs, 1), ctx).logits;  // [1, 31, V]
  for (size_t i = 0; i < docs.size(); ++i) {
    torch::Tensor alone = m->forward(docs[i]).logits;  // [1, len, V]
    EXPECT_LT(MaxDiff(packed.narrow(1, cu[i], lens[i]), alone), 1e-4) << "document " << i;
  }
}

TEST(HybridModelTest, CachedPrefillAndDecodeEqualFullForward) {
  torch::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  const int64_t N = 21, M = 11, K = 6;
  torch::Tensor ids = RandomIds(c.vocab_size, N + M + K, 7);
  torch::Tensor full = m->forward(ids).logits;  // [1, N+M+K, V]

  ModelCache cache;
  torch::Tensor pre = m->forward(ids.narrow(1, 0, N), {}, &cache).logits;
  EXPECT_LT(MaxDiff(pre, full.narrow(1, 0, N)), 1e-4);
  for (int64_t t = N; t < N + M; ++t) {  // recurrent decode steps
    torch::Tensor step = m->forward(ids.narrow(1, t, 1), {}, &cache).logits;
    EXPECT_LT(MaxDiff(step, full.narrow(1, t, 1)), 1e-4) << "decode position " << t;
  }
  // A second chunked prefill continuing from the cached state.
  torch::Tensor chunk = m->forward(ids.narrow(1, N + M, K), {}, &cache).logits;
  EXPECT_LT(MaxDiff(chunk, full.narrow(1, N + M, K)), 1e-4);
  EXPECT_EQ(cache.tokens, N + M + K);
  EXPECT_GT(cache.bytes(), 0);
}

TEST(HybridModelTest, BatchRowsAreIndependent) {
  torch::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  torch::Tensor a = RandomIds(c.vocab_size, 13, 1), b = RandomIds(c.vocab_size, 13, 2);
  torch::Tensor both = m->forward(torch::cat({a, b}, 0)).logits;
  EXPECT_LT(MaxDiff(both[0], m->forward(a).logits[0]), 1e-4);
  EXPECT_LT(MaxDiff(both[1], m->forward(b).logits[0]), 1e-4);

  // SelectRows keeps the chosen rows' caches: decode of row b alone continues correctly.
  ModelCache cache;
  m->forward(torch::cat({a, b}, 0).narrow(1, 0, 12), {}, &cache);
  cache.SelectRows(torch::tensor({1}, torch::kLong));
  torch::Tensor step = m->forward(b.narrow(1, 12, 1), {}, &cache).logits;
  EXPECT_LT(MaxDiff(step[0][0], both[1][12]), 1e-4);
}

TEST(HybridModelTest, HeadStaysFp32WhenTheBodyIsCast) {
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  m->SetBodyDtype(torch::kBFloat16);
  auto params = m->named_parameters();
  EXPECT_EQ(params["lm_head.weight"].scalar_type(), torch::kFloat32);
  EXPECT_EQ(params["model.layers.2.block_sparse_moe.gate.weight"].scalar_type(), torch::kFloat32);
  EXPECT_EQ(params["model.layers.2.self_attn.qkv_proj.weight"].scalar_type(), torch::kBFloat16);
  torch::Tensor logits = m->Head(torch::randn({2, 3, c.hidden_size}).to(torch::kBFloat16));
  EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3, c.vocab_size}));
}

TEST(HybridModelTest, AuxLossOfAUniformRouterIsCoefTimesTopK) {
  // With all router weights zero, every expert has probability 1/E, so
  // E * sum_{k,e} f[k,e] * (1/E) = sum_{k,e} f[k,e] = top_k, whatever experts top-k picks.
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : m->named_parameters())
      if (item.key().find("block_sparse_moe.gate.") != std::string::npos) item.value().zero_();
  }
  ForwardOptions opts;
  opts.compute_aux_loss = true;
  ModelOutput out = m->forward(RandomIds(c.vocab_size, 9, 4), {}, nullptr, opts);
  ASSERT_TRUE(out.aux_loss.defined());
  EXPECT_NEAR(out.aux_loss.item<double>(), c.router_aux_loss_coef * c.num_experts_per_tok, 1e-7);
}

TEST(HybridModelTest, EveryParameterReceivesAGradient) {
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  m->train();
  ForwardOptions opts;
  opts.compute_aux_loss = true;
  torch::Tensor ids = RandomIds(c.vocab_size, 19, 5);
  ModelOutput out = m->forward(ids, {}, nullptr, opts);
  torch::Tensor logp = TokenLogProbs(out.logits.narrow(1, 0, 18), ids.narrow(1, 1, 18));
  (-logp.mean() + out.aux_loss).backward();
  for (const auto& item : m->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    if (item.key().find("experts") == std::string::npos)  // an expert may receive no token
      EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
  }
}

TEST(HybridModelTest, TokenLogProbsMatchAScalarLoop) {
  torch::Tensor logits = torch::randn({2, 3, 7}, torch::kFloat64).to(torch::kFloat32);
  torch::Tensor targets = torch::randint(7, {2, 3}, torch::kLong);
  for (double temp : {1.0, 0.7}) {
    torch::Tensor got = TokenLogProbs(logits, targets, temp);
    for (int b = 0; b < 2; ++b)
      for (int t = 0; t < 3; ++t) {
        double mx = -1e300, sum = 0;
        for (int v = 0; v < 7; ++v) mx = std::max(mx, logits[b][t][v].item<double>() / temp);
        for (int v = 0; v < 7; ++v) sum += std::exp(logits[b][t][v].item<double>() / temp - mx);
        double want = logits[b][t][targets[b][t].item<int64_t>()].item<double>() / temp - mx - std::log(sum);
        EXPECT_NEAR(got[b][t].item<double>(), want, 1e-5);
      }
  }
}

TEST(HybridModelTest, ValueHeadGivesOneScalarPerToken) {
  torch::NoGradGuard no_grad;
  ModelConfig c = SmallConfig();
  HybridModel critic(c, HeadType::kValue);
  torch::Tensor values = critic->forward(RandomIds(c.vocab_size, 6, 9)).logits;
  EXPECT_EQ(values.sizes(), (std::vector<int64_t>{1, 6}));
  EXPECT_EQ(values.scalar_type(), torch::kFloat32);
}

TEST(HybridModelTest, BadInputIsRejected) {
  ModelConfig c = SmallConfig();
  HybridModel m = MakeModel(c);
  EXPECT_THROW(m->forward(torch::full({1, 3}, c.vocab_size, torch::kLong)), std::exception);
  EXPECT_THROW(m->forward(torch::zeros({1, 3}, torch::kInt)), std::exception);
  ModelConfig bad = c;
  bad.attn_type_list.pop_back();
  EXPECT_THROW(HybridModel{bad}, std::exception);
}

}  // namespace
}  // namespace lightrl::model
