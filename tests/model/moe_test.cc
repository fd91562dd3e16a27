// MoE block (hybrid_model.md §5) against an independent fp64 oracle: a per-token loop that
// computes the router logits as dot products, the softmax by hand, picks the top-k by sorting
// probabilities on the host, renormalises, and sums the SwiGLU experts written out from their
// weight matrices. Gradients are checked against autograd through that loop; the aux loss
// against host-side counting; top-k renormalisation against hand-set router logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/check.h"
#include "model/layers.h"

namespace lightrl::model {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

ModelConfig MoeConfig(int64_t experts, int64_t top_k) {
  ModelConfig c;
  c.hidden_size = 6;
  c.intermediate_size = 5;
  c.num_local_experts = experts;
  c.num_experts_per_tok = top_k;
  return c;
}

Moe MakeMoe(int64_t experts, int64_t top_k, uint64_t seed) {
  torch::manual_seed(seed);
  Moe moe(MoeConfig(experts, top_k));
  moe->to(torch::kDouble);
  return moe;
}

torch::Tensor ExpertWeight(Moe& moe, int64_t e, const char* name) {
  return moe->experts->ptr<ExpertImpl>(e)->named_parameters()[std::string(name) + ".weight"];
}

// SwiGLU written out: W2 (silu(W1 x) * (W3 x)), silu(a) = a / (1 + exp(-a)). x: [C].
torch::Tensor RefExpert(Moe& moe, int64_t e, const torch::Tensor& x) {
  torch::Tensor a = torch::mv(ExpertWeight(moe, e, "w1"), x);
  torch::Tensor u = torch::mv(ExpertWeight(moe, e, "w3"), x);
  return torch::mv(ExpertWeight(moe, e, "w2"), a / (1 + torch::exp(-a)) * u);
}

struct RefMoeOut {
  torch::Tensor out;     // [N, C]
  torch::Tensor logits;  // [N, E]
};

// Per-token loop. x: [N, C] fp64.
RefMoeOut RefMoe(Moe& moe, const torch::Tensor& x, int64_t top_k) {
  const int64_t N = x.size(0);
  const torch::Tensor wg = moe->gate->weight;  // [E, C]
  const int64_t E = wg.size(0);
  std::vector<torch::Tensor> outs, logit_rows;
  for (int64_t t = 0; t < N; ++t) {
    std::vector<torch::Tensor> logit(E);
    for (int64_t e = 0; e < E; ++e) logit[e] = torch::dot(wg[e], x[t]);
    torch::Tensor lrow = torch::stack(logit);
    torch::Tensor ex = torch::exp(lrow - lrow.max().detach());
    torch::Tensor p = ex / ex.sum();
    std::vector<int64_t> ids(E);
    std::iota(ids.begin(), ids.end(), 0);
    std::vector<double> pv(E);
    for (int64_t e = 0; e < E; ++e) pv[e] = p[e].item<double>();
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return pv[a] > pv[b]; });
    torch::Tensor denom = torch::zeros({}, kF64);
    for (int64_t i = 0; i < top_k; ++i) denom = denom + p[ids[i]];
    torch::Tensor o = torch::zeros({x.size(1)}, kF64);
    for (int64_t i = 0; i < top_k; ++i) o = o + p[ids[i]] / denom * RefExpert(moe, ids[i], x[t]);
    outs.push_back(o);
    logit_rows.push_back(lrow);
  }
  return {torch::stack(outs), torch::stack(logit_rows)};
}

TEST(MoeTest, MatchesPerTokenLoop) {
  for (int64_t k : {1, 2, 3, 4}) {
    SCOPED_TRACE(::testing::Message() << "top_k " << k);
    Moe moe = MakeMoe(4, k, 30 + k);
    torch::manual_seed(40 + k);
    torch::Tensor x = torch::randn({3, 7, 6}, kF64);
    MoeOutput got = moe->forward(x);
    RefMoeOut ref = RefMoe(moe, x.view({21, 6}), k);
    EXPECT_EQ(got.out.sizes(), x.sizes());
    EXPECT_EQ(got.router_logits.sizes(), (std::vector<int64_t>{21, 4}));
    EXPECT_LT(MaxAbsDiff(got.out.view({21, 6}), ref.out), 1e-12);
    EXPECT_LT(MaxAbsDiff(got.router_logits, ref.logits), 1e-12);
  }
}

TEST(MoeTest, GradientsMatchAutogradThroughLoop) {
  Moe moe = MakeMoe(5, 2, 50);
  torch::manual_seed(51);
  torch::Tensor x = torch::randn({2, 6, 6}, kF64).requires_grad_(true);
  torch::Tensor w = torch::randn({2, 6, 6}, kF64);

  std::vector<torch::Tensor> inputs = {x};
  for (auto& p : moe->parameters()) inputs.push_back(p);
  MoeOutput got = moe->forward(x);
  auto g = torch::autograd::grad({(got.out * w).sum()}, inputs, {}, false, /*allow_unused=*/true);
  RefMoeOut ref = RefMoe(moe, x.view({12, 6}), 2);
  auto rg = torch::autograd::grad({(ref.out * w.view({12, 6})).sum()}, inputs, {}, false, true);
  ASSERT_EQ(g.size(), rg.size());
  int64_t router_checked = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    torch::Tensor a = g[i].defined() ? g[i] : torch::zeros_like(inputs[i]);
    torch::Tensor b = rg[i].defined() ? rg[i] : torch::zeros_like(inputs[i]);
    EXPECT_LT(MaxAbsDiff(a, b), 1e-11) << "input " << i;
    if (inputs[i].is_same(moe->gate->weight)) router_checked = b.abs().sum().item<double>() > 0;
  }
  EXPECT_EQ(router_checked, 1);  // the router gets a (non-zero) gradient through the weights
}

TEST(MoeTest, TopKWeightsAreRenormalised) {
  // One token x = e_0 and router column 0 = [2, 1, 0, -1]: logits are exactly [2, 1, 0, -1], so
  // top-2 = experts {0, 1} with renormalised weights e/(e+1) and 1/(e+1).
  Moe moe = MakeMoe(4, 2, 60);
  {
    torch::NoGradGuard no_grad;
    moe->gate->weight.zero_();
    moe->gate->weight.select(1, 0).copy_(torch::tensor(std::vector<double>{2, 1, 0, -1}, kF64));
  }
  torch::Tensor x = torch::zeros({1, 1, 6}, kF64);
  x[0][0][0] = 1.0;
  MoeOutput got = moe->forward(x);
  const double e = std::exp(1.0);
  torch::Tensor expect = e / (e + 1) * RefExpert(moe, 0, x[0][0]) + 1 / (e + 1) * RefExpert(moe, 1, x[0][0]);
  EXPECT_LT(MaxAbsDiff(got.out[0][0], expect), 1e-14);
  EXPECT_LT(MaxAbsDiff(got.router_logits[0], torch::tensor(std::vector<double>{2, 1, 0, -1}, kF64)), 1e-15);
  // The module's expert is the written-out SwiGLU.
  EXPECT_LT(MaxAbsDiff(moe->experts->ptr<ExpertImpl>(2)->forward(x[0]), RefExpert(moe, 2, x[0][0]).unsqueeze(0)),
            1e-14);
}

TEST(MoeTest, RouterStaysFp32WithBf16Body) {
  torch::manual_seed(70);
  Moe moe(MoeConfig(4, 2));
  for (auto& item : moe->named_parameters()) {
    if (item.key().rfind("gate.", 0) != 0) item.value().set_data(item.value().to(torch::kBFloat16));
  }
  ASSERT_EQ(moe->gate->weight.scalar_type(), torch::kFloat);
  torch::Tensor x = torch::randn({2, 3, 6}).to(torch::kBFloat16);
  MoeOutput got = moe->forward(x);
  EXPECT_EQ(got.out.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(got.router_logits.scalar_type(), torch::kFloat);
  // fp32 GEMM of the bf16 activations upcast, not a bf16 GEMM.
  torch::Tensor expect = torch::matmul(x.view({6, 6}).to(torch::kDouble), moe->gate->weight.to(torch::kDouble).t());
  EXPECT_LT(MaxAbsDiff(got.router_logits, expect), 1e-5);
}

TEST(MoeTest, ManyTokensFp32MatchesFp64Loop) {
  // More tokens than experts, some experts idle (E = 8, k = 2, few tokens per expert).
  Moe moe = MakeMoe(8, 2, 80);
  torch::manual_seed(81);
  torch::Tensor x = torch::randn({1, 5, 6}, kF64);
  RefMoeOut ref = RefMoe(moe, x.view({5, 6}), 2);
  moe->to(torch::kFloat);
  MoeOutput got = moe->forward(x.to(torch::kFloat));
  EXPECT_LT(MaxAbsDiff(got.out.view({5, 6}), ref.out), 1e-5);
}

TEST(MoeTest, RejectsBadInput) {
  Moe moe = MakeMoe(4, 2, 90);
  EXPECT_THROW(moe->forward(torch::randn({2, 3, 5}, kF64)), Error);  // hidden 5 != 6
  EXPECT_THROW(moe->forward(torch::randn({6, 6}, kF64)), Error);     // not [B, T, C]
  EXPECT_THROW(Moe(MoeConfig(4, 5)), Error);                          // top_k > E
  torch::Tensor logits = torch::randn({5, 4});
  EXPECT_THROW(LoadBalancingLoss(logits, 0), Error);
  EXPECT_THROW(LoadBalancingLoss(logits, 5), Error);
  EXPECT_THROW(LoadBalancingLoss(logits, 2, torch::ones({4}, torch::kBool)), Error);
  EXPECT_THROW(LoadBalancingLoss(torch::randn({5}), 2), Error);
}

// ---- aux loss ------------------------------------------------------------------------------------

// Host-side counting: E * sum_{k,e} f[k,e] Pbar[e] over the tokens with mask[t].
double LoopAuxLoss(const torch::Tensor& logits, int64_t top_k, const std::vector<bool>& mask) {
  const int64_t N = logits.size(0), E = logits.size(1);
  std::vector<std::vector<double>> f(top_k, std::vector<double>(E, 0.0));
  std::vector<double> pbar(E, 0.0);
  int64_t counted = 0;
  for (int64_t t = 0; t < N; ++t) {
    if (!mask[t]) continue;
    ++counted;
    std::vector<double> p(E);
    double mx = -1e300, z = 0;
    for (int64_t e = 0; e < E; ++e) mx = std::max(mx, logits[t][e].item<double>());
    for (int64_t e = 0; e < E; ++e) z += p[e] = std::exp(logits[t][e].item<double>() - mx);
    for (int64_t e = 0; e < E; ++e) pbar[e] += p[e] / z;
    std::vector<int64_t> ids(E);
    std::iota(ids.begin(), ids.end(), 0);
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    for (int64_t k = 0; k < top_k; ++k) f[k][ids[k]] += 1;
  }
  double loss = 0;
  for (int64_t k = 0; k < top_k; ++k) {
    for (int64_t e = 0; e < E; ++e) loss += (f[k][e] / counted) * (pbar[e] / counted);
  }
  return E * loss;
}

TEST(LoadBalancingLossTest, HandComputedValue) {
  // p(token 0) = [1/4, 3/4], p(token 1) = [3/4, 1/4]; top-1 picks expert 1 then expert 0.
  // f = [1/2, 1/2], Pbar = [1/2, 1/2] -> 2 * (1/4 + 1/4) = 1.
  // Only token 0: f = [0, 1], Pbar = [1/4, 3/4] -> 2 * 3/4 = 1.5.
  const double l3 = std::log(3.0);
  torch::Tensor logits = torch::tensor(std::vector<double>{0, l3, l3, 0}, kF64).view({2, 2});
  EXPECT_NEAR(LoadBalancingLoss(logits, 1).item<double>(), 1.0, 1e-14);
  torch::Tensor mask = torch::tensor(std::vector<int64_t>{1, 0}).to(torch::kBool);
  EXPECT_NEAR(LoadBalancingLoss(logits, 1, mask).item<double>(), 1.5, 1e-14);
  // Top-2 of 2 experts: f = [[1/2, 1/2], [1/2, 1/2]] -> 2 * 2 * (1/4 + 1/4) = 2 = top_k.
  EXPECT_NEAR(LoadBalancingLoss(logits, 2).item<double>(), 2.0, 1e-14);
}

TEST(LoadBalancingLossTest, MatchesLoopCountingWithAndWithoutMask) {
  torch::manual_seed(100);
  torch::Tensor logits = torch::randn({37, 6}, kF64) * 2;
  std::vector<bool> all(37, true), some(37);
  for (int64_t t = 0; t < 37; ++t) some[t] = (t * 7) % 3 != 0;
  torch::Tensor mask = torch::zeros({37}, torch::kBool);
  for (int64_t t = 0; t < 37; ++t) mask[t] = static_cast<bool>(some[t]);
  for (int64_t k : {1, 2, 3}) {
    EXPECT_NEAR(LoadBalancingLoss(logits, k).item<double>(), LoopAuxLoss(logits, k, all), 1e-12) << k;
    EXPECT_NEAR(LoadBalancingLoss(logits, k, mask).item<double>(), LoopAuxLoss(logits, k, some), 1e-12) << k;
  }
  // fp32 input -> fp32 output, same value to fp32 precision.
  torch::Tensor l32 = LoadBalancingLoss(logits.to(torch::kFloat), 2);
  EXPECT_EQ(l32.scalar_type(), torch::kFloat);
  EXPECT_EQ(l32.dim(), 0);
  EXPECT_NEAR(l32.item<double>(), LoopAuxLoss(logits, 2, all), 1e-5);
}

TEST(LoadBalancingLossTest, GradientIsThroughMeanProbabilitiesOnly) {
  // d/dlogits of E * sum_e F[e] * Pbar[e] with F[e] = sum_k f[k,e] held constant.
  torch::manual_seed(101);
  const int64_t N = 9, E = 4, K = 2;
  torch::Tensor logits = torch::randn({N, E}, kF64).requires_grad_(true);
  torch::Tensor g = torch::autograd::grad({LoadBalancingLoss(logits, K)}, {logits})[0];

  torch::Tensor p = torch::softmax(logits.detach(), -1);
  torch::Tensor F = torch::zeros({E}, kF64);
  torch::Tensor sel = std::get<1>(p.topk(K, -1));
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t k = 0; k < K; ++k) F[sel[t][k].item<int64_t>()] += 1.0 / N;
  }
  // Pbar[e] = mean_t p[t,e]; dp[t,e]/dl[t,j] = p[t,e] (delta_ej - p[t,j]).
  torch::Tensor expect = torch::zeros({N, E}, kF64);
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t j = 0; j < E; ++j) {
      double s = 0;
      for (int64_t e = 0; e < E; ++e) {
        const double pe = p[t][e].item<double>(), pj = p[t][j].item<double>();
        s += F[e].item<double>() * pe * ((e == j) - pj);
      }
      expect[t][j] = E * s / N;
    }
  }
  EXPECT_LT(MaxAbsDiff(g, expect), 1e-13);
}

TEST(LoadBalancingLossTest, AllMaskedGivesZero) {
  torch::Tensor logits = torch::randn({4, 3}, kF64).requires_grad_(true);
  torch::Tensor loss = LoadBalancingLoss(logits, 2, torch::zeros({4}, torch::kBool));
  EXPECT_EQ(loss.item<double>(), 0.0);
  EXPECT_TRUE(loss.requires_grad());
}

}  // namespace
}  // namespace lightrl::model
