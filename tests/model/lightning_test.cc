// Lightning attention (model/lightning_ops.h, LightningAttentionImpl) against independent
// oracles (hybrid_model.md §9 test plan):
//   - the fp64 parallel form with a materialised decay matrix and a scalar-loop recurrence
//     (tests/model/reference/lightning_reference.cc);
//   - autograd through the fp64 parallel form for the custom chunked backward;
//   - the spec's slope numbers, computed here from the closed form 2^{-8(h+1)/H};
//   - a straightforward fp64 layer (explicit per-head weight slices, explicit norm and gate).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "model/layers.h"
#include "model/lightning_ops.h"
#include "tests/model/reference/lightning_reference.h"

namespace lightrl::model {
namespace {

using torch::Tensor;

constexpr auto kF64 = torch::kFloat64;
constexpr auto kF32 = torch::kFloat32;

// SiLU outputs like the layer feeds the op (>= -0.28, can be negative).
Tensor SiluInput(std::vector<int64_t> shape, torch::Dtype dtype, double scale = 1.0) {
  return torch::silu(torch::randn(shape, torch::TensorOptions().dtype(kF64)) * scale).to(dtype);
}

// Heads with fast (0.9: half-life < 1 token; λ^m underflows for m = 64), medium and very slow
// (layer-78-like) decays.
Tensor MixedSlopes(int64_t H) {
  const std::vector<double> pool = {0.9, 0.3, 0.05, 0.002, 4.9e-5, 0.6};
  std::vector<double> s;
  for (int64_t h = 0; h < H; ++h) s.push_back(pool[static_cast<size_t>(h) % pool.size()]);
  return torch::tensor(s, kF64);
}

double MaxAbs(const Tensor& t) { return t.abs().max().item<double>(); }

// max |a - b| / max(1, max |b|)
double RelMaxErr(const Tensor& a, const Tensor& b) {
  return MaxAbs(a.to(kF64) - b.to(kF64)) / std::max(1.0, MaxAbs(b.to(kF64)));
}

// FLA-style relative RMS error ||a - b||_2 / ||b||_2.
double RelRms(const Tensor& a, const Tensor& b) {
  return (a.to(kF64) - b.to(kF64)).norm().item<double>() / b.to(kF64).norm().item<double>();
}

LightningResult Chunked(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& s, const Tensor& s0,
                        int64_t block, std::vector<int64_t> cu = {}) {
  LightningOptions o;
  o.block_size = block;
  o.cu_seqlens = std::move(cu);
  return LightningAttentionChunked(q, k, v, s, s0, o);
}

class LightningTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(1234); }
};

// ---- slopes (§3.2) -------------------------------------------------------------------------

TEST_F(LightningTest, AlibiSlopesMatchClosedFormAndSpecLists) {
  for (int64_t H : {1, 2, 4, 8, 16, 64}) {
    const std::vector<double> s = AlibiSlopes(H);
    ASSERT_EQ(static_cast<int64_t>(s.size()), H);
    for (int64_t h = 0; h < H; ++h) {
      EXPECT_NEAR(s[h], std::exp2(-8.0 * static_cast<double>(h + 1) / static_cast<double>(H)), 1e-15)
          << "H=" << H << " h=" << h;
    }
  }
  // H = 64 range from the spec: [2^-1/8 = 0.917, 2^-8 = 0.0039].
  EXPECT_NEAR(AlibiSlopes(64).front(), 0.917, 1e-3);
  EXPECT_NEAR(AlibiSlopes(64).back(), 1.0 / 256, 1e-17);
  // Non-power-of-two: pow2(4) followed by get_slopes(8)[0::2][:2] = 2^-1, 2^-3.
  const std::vector<double> six = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  const std::vector<double> got6 = AlibiSlopes(6);
  ASSERT_EQ(got6.size(), six.size());
  for (size_t i = 0; i < six.size(); ++i) EXPECT_NEAR(got6[i], six[i], 1e-16) << i;
  // 12 heads: pow2(8) = 2^-(h+1), then get_slopes(16)[0::2][:4] = 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  const std::vector<double> got12 = AlibiSlopes(12);
  ASSERT_EQ(got12.size(), 12u);
  for (int h = 0; h < 8; ++h) EXPECT_NEAR(got12[h], std::exp2(-(h + 1.0)), 1e-16);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(got12[8 + i], std::exp2(-(2.0 * i + 1.0) / 2.0), 1e-15);
}

TEST_F(LightningTest, LayerFactorAndSlopeTableMatchSpec) {
  EXPECT_DOUBLE_EQ(LightningLayerFactor(0, 80), 1.00001);
  EXPECT_NEAR(LightningLayerFactor(38, 80), 0.519, 5e-4);
  EXPECT_NEAR(LightningLayerFactor(70, 80), 0.114, 5e-4);
  EXPECT_NEAR(LightningLayerFactor(78, 80), 0.012668, 1e-6);
  EXPECT_NEAR(LightningLayerFactor(79, 80), 1e-5, 1e-15);
  EXPECT_DOUBLE_EQ(LightningLayerFactor(0, 1), 1.00001);

  // The fp32 table: fp32(s_h) * fp32(f(l)) in fp32, as torch computes `slopes * python_float`.
  for (int64_t layer : {0, 38, 70, 78}) {
    const Tensor t = LightningSlopes(64, layer, 80);
    ASSERT_EQ(t.scalar_type(), kF32);
    ASSERT_EQ(t.numel(), 64);
    const float f = static_cast<float>(1.0 - static_cast<double>(layer) / 79.0 + 1e-5);
    for (int64_t h = 0; h < 64; ++h) {
      const float expect = static_cast<float>(std::exp2(-(h + 1.0) / 8.0)) * f;
      EXPECT_EQ(t[h].item<float>(), expect) << "layer " << layer << " head " << h;
    }
  }
  // Spec table rows (hybrid_model.md §3.2): s_max / s_min and the slowest decay.
  const Tensor l78 = LightningSlopes(64, 78, 80);
  EXPECT_NEAR(l78[0].item<float>(), 0.0116, 1e-4);
  EXPECT_NEAR(l78[63].item<float>(), 4.9e-5, 1e-6);
  EXPECT_NEAR(std::exp(-static_cast<double>(l78[63].item<float>())), 0.9999505, 1e-7);
  const Tensor l70 = LightningSlopes(64, 70, 80);
  EXPECT_NEAR(l70[0].item<float>(), 0.105, 1e-3);
  EXPECT_NEAR(l70[63].item<float>(), 4.5e-4, 1e-5);
  const Tensor l0 = LightningSlopes(64, 0, 80);
  EXPECT_NEAR(std::exp(-static_cast<double>(l0[63].item<float>())), 0.996101, 1e-6);
}

// ---- forward forms agree (§9 step 1) --------------------------------------------------------

TEST_F(LightningTest, ChunkedMatchesParallelAndRecurrentInFp64) {
  const int64_t B = 2, H = 6, T = 37, D = 8;
  const Tensor q = SiluInput({B, H, T, D}, kF64), k = SiluInput({B, H, T, D}, kF64),
               v = SiluInput({B, H, T, D}, kF64);
  const Tensor s = MixedSlopes(H);
  const Tensor s0 = torch::randn({B, H, D, D}, kF64);
  for (bool with_s0 : {false, true}) {
    const Tensor init = with_s0 ? s0 : Tensor();
    const auto par = reference::ParallelLightning(q, k, v, s, init);
    const auto rec = reference::RecurrentLightning(q, k, v, s, init);
    EXPECT_LT(RelMaxErr(rec.out, par.out), 1e-12);
    EXPECT_LT(RelMaxErr(rec.state, par.state), 1e-12);
    for (int64_t block : {1, 3, 5, 8, 16, 36, 37, 64, 256}) {  // 37 % 5, 8, 16, 36 != 0: partial last block
      const auto got = Chunked(q, k, v, s, init, block);
      EXPECT_EQ(got.out.sizes(), q.sizes());
      EXPECT_LT(RelMaxErr(got.out, par.out), 1e-12) << "block " << block << " s0 " << with_s0;
      EXPECT_LT(RelMaxErr(got.state, par.state), 1e-12) << "block " << block << " s0 " << with_s0;
    }
  }
}

TEST_F(LightningTest, Fp32ChunkedIsCloseToFp64Reference) {
  const int64_t B = 1, H = 4, T = 300, D = 16;
  const Tensor q = SiluInput({B, H, T, D}, kF64), k = SiluInput({B, H, T, D}, kF64),
               v = SiluInput({B, H, T, D}, kF64);
  const Tensor s = LightningSlopes(H, 3, 8);  // fp32 table, as in the model
  const Tensor s0 = torch::randn({B, H, D, D}, kF64);
  const auto ref = reference::ParallelLightning(q, k, v, s, s0);
  for (int64_t block : {64, 256}) {  // 300 = 4*64 + 44: partial last block
    const auto got = Chunked(q.to(kF32), k.to(kF32), v.to(kF32), s, s0.to(kF32), block);
    EXPECT_EQ(got.out.scalar_type(), kF32);
    EXPECT_EQ(got.state.scalar_type(), kF32);
    EXPECT_LT(RelRms(got.out, ref.out), 1e-5) << block;
    EXPECT_LT(RelRms(got.state, ref.state), 1e-5) << block;
  }
}

// ---- custom backward (§3.7, §9 step 2) ------------------------------------------------------

struct Grads {
  Tensor out, state, dq, dk, dv, ds0;
};

// loss = <out, W1> + <state, W2>; the same loss through the op and through the parallel form.
Grads RunBackward(bool use_op, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& s,
                  const Tensor& s00, const Tensor& w1, const Tensor& w2, int64_t block) {
  Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
         v = v0.clone().requires_grad_(true);
  Tensor s0 = s00.defined() ? s00.clone().requires_grad_(true) : Tensor();
  Tensor out, state;
  if (use_op) {
    auto r = Chunked(q, k, v, s, s0, block);
    out = r.out, state = r.state;
    EXPECT_NE(out.grad_fn()->name().find("LightningFunction"), std::string::npos) << out.grad_fn()->name();
  } else {
    auto r = reference::ParallelLightning(q, k, v, s, s0);
    out = r.out, state = r.state;
  }
  Tensor loss = (out * w1).sum();
  if (w2.defined()) loss = loss + (state * w2).sum();
  loss.backward();
  return {out.detach(), state.detach(), q.grad(), k.grad(), v.grad(), s0.defined() ? s0.grad() : Tensor()};
}

TEST_F(LightningTest, CustomBackwardMatchesAutogradThroughParallelForm) {
  const int64_t B = 2, H = 6, T = 29, D = 6;
  const Tensor q = SiluInput({B, H, T, D}, kF64), k = SiluInput({B, H, T, D}, kF64),
               v = SiluInput({B, H, T, D}, kF64);
  const Tensor s = MixedSlopes(H);
  const Tensor w1 = torch::randn({B, H, T, D}, kF64), w2 = torch::randn({B, H, D, D}, kF64);
  const Tensor s0 = torch::randn({B, H, D, D}, kF64);
  for (int64_t block : {1, 4, 8, 29, 64}) {
    for (int variant = 0; variant < 3; ++variant) {
      const Tensor init = variant == 0 ? Tensor() : s0;
      const Tensor sw = variant == 2 ? Tensor() : w2;  // variant 2: final state unused
      const Grads want = RunBackward(false, q, k, v, s, init, w1, sw, block);
      const Grads got = RunBackward(true, q, k, v, s, init, w1, sw, block);
      const std::string where = "block " + std::to_string(block) + " variant " + std::to_string(variant);
      EXPECT_LT(RelMaxErr(got.dq, want.dq), 1e-11) << where;
      EXPECT_LT(RelMaxErr(got.dk, want.dk), 1e-11) << where;
      EXPECT_LT(RelMaxErr(got.dv, want.dv), 1e-11) << where;
      if (init.defined()) EXPECT_LT(RelMaxErr(got.ds0, want.ds0), 1e-11) << where;
    }
  }
}

TEST_F(LightningTest, GradientOnlyThroughFinalState) {
  const int64_t B = 1, H = 2, T = 19, D = 4;
  const Tensor q = SiluInput({B, H, T, D}, kF64), k = SiluInput({B, H, T, D}, kF64),
               v = SiluInput({B, H, T, D}, kF64);
  const Tensor s = MixedSlopes(H), s0 = torch::randn({B, H, D, D}, kF64);
  const Tensor w2 = torch::randn({B, H, D, D}, kF64);
  const Tensor zero = torch::zeros({B, H, T, D}, kF64);
  const Grads want = RunBackward(false, q, k, v, s, s0, zero, w2, 8);
  // Through the op, with the output unused entirely.
  Tensor qq = q.clone().requires_grad_(true), kk = k.clone().requires_grad_(true),
         vv = v.clone().requires_grad_(true), ss = s0.clone().requires_grad_(true);
  auto r = Chunked(qq, kk, vv, s, ss, 8);
  (r.state * w2).sum().backward();
  EXPECT_LT(RelMaxErr(kk.grad(), want.dk), 1e-11);
  EXPECT_LT(RelMaxErr(vv.grad(), want.dv), 1e-11);
  EXPECT_LT(RelMaxErr(ss.grad(), want.ds0), 1e-11);
  EXPECT_EQ(MaxAbs(qq.grad()), 0.0);  // the final state does not depend on q
}

// ---- prefill + decode (§9 step 4) ----------------------------------------------------------

TEST_F(LightningTest, PrefillThenDecodeEqualsLongPrefill) {
  const int64_t B = 3, H = 4, N = 45, M = 7, D = 8;
  const Tensor q = SiluInput({B, H, N + M, D}, kF32), k = SiluInput({B, H, N + M, D}, kF32),
               v = SiluInput({B, H, N + M, D}, kF32);
  const Tensor s = LightningSlopes(H, 1, 8);
  const auto full = Chunked(q, k, v, s, {}, 16);
  auto pre = Chunked(q.narrow(2, 0, N), k.narrow(2, 0, N), v.narrow(2, 0, N), s, {}, 16);
  EXPECT_LT(RelMaxErr(pre.out, full.out.narrow(2, 0, N)), 1e-6);
  Tensor state = pre.state;
  ASSERT_EQ(state.scalar_type(), kF32);
  for (int64_t t = N; t < N + M; ++t) {
    auto step = LightningDecodeStep(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1), s, state);
    EXPECT_LT(RelMaxErr(step.out, full.out.narrow(2, t, 1)), 1e-5) << "t " << t;
    state = step.state;
  }
  EXPECT_LT(RelMaxErr(state, full.state), 1e-5);
  // Chunked continuation from a cached state (chunked prefill): 45 = 20 + 25.
  auto a = Chunked(q.narrow(2, 0, 20), k.narrow(2, 0, 20), v.narrow(2, 0, 20), s, {}, 16);
  auto b = Chunked(q.narrow(2, 20, 25), k.narrow(2, 20, 25), v.narrow(2, 20, 25), s, a.state, 16);
  EXPECT_LT(RelMaxErr(b.out, full.out.narrow(2, 20, 25)), 1e-5);
  EXPECT_LT(RelMaxErr(b.state, pre.state), 1e-5);
  // Decode from an empty state equals the chunked form on one token.
  auto first = LightningDecodeStep(q.narrow(2, 0, 1), k.narrow(2, 0, 1), v.narrow(2, 0, 1), s, {});
  EXPECT_LT(RelMaxErr(first.out, full.out.narrow(2, 0, 1)), 1e-6);
}

// The decode step's two implementations (plain loops without autograd, tensor ops with it)
// against the recurrence written out per (row, head) in fp64, on strided views of one qkv
// tensor (the layout the layer passes) and with head dims that are and are not vector widths.
TEST_F(LightningTest, DecodeStepPlainLoopsAndTensorOpsMatchTheRecurrence) {
  // 32, 64 and 128 take the fp32 loops' fixed-size versions, 5 the generic one.
  for (int64_t D : {5, 32, 64, 128}) {
    SCOPED_TRACE(::testing::Message() << "D " << D);
    const int64_t B = 3, H = 4;
    const Tensor qkv = SiluInput({B, 1, H, 3 * D}, kF64);
    const Tensor q = qkv.narrow(3, 0, D).transpose(1, 2), k = qkv.narrow(3, D, D).transpose(1, 2),
                 v = qkv.narrow(3, 2 * D, D).transpose(1, 2);  // [B, H, 1, D] strided views
    const Tensor s = LightningSlopes(H, 2, 8);
    const Tensor state = SiluInput({B, H, D, D}, kF64, 0.5);
    // Oracle: S' = exp(-s) S + k^T v, o = q S', one (row, head) at a time.
    Tensor want_state = torch::empty({B, H, D, D}, kF64), want_out = torch::empty({B, H, 1, D}, kF64);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const double lam = std::exp(-s[h].item<double>());
        Tensor next = state[b][h] * lam + torch::outer(k[b][h][0], v[b][h][0]);
        want_state[b][h].copy_(next);
        want_out[b][h].copy_(torch::matmul(q[b][h], next));
      }
    }
    {
      torch::NoGradGuard no_grad;  // plain loops
      auto r = LightningDecodeStep(q, k, v, s, state);
      EXPECT_LT(RelMaxErr(r.out, want_out), 1e-12);
      EXPECT_LT(RelMaxErr(r.state, want_state), 1e-12);
      auto r0 = LightningDecodeStep(q, k, v, s, {});  // empty state = zeros
      EXPECT_LT(RelMaxErr(r0.state, torch::matmul(k.transpose(2, 3), v)), 1e-12);  // k^T v
      const Tensor q32 = q.to(kF32), k32 = k.to(kF32), v32 = v.to(kF32);
      auto r32 = LightningDecodeStep(q32, k32, v32, s, state.to(kF32));
      EXPECT_LT(RelMaxErr(r32.out, want_out), 1e-5);
      EXPECT_LT(RelMaxErr(r32.state, want_state), 1e-5);
      auto z32 = LightningDecodeStep(q32, k32, v32, s, {});
      EXPECT_LT(RelMaxErr(z32.state, torch::matmul(k.transpose(2, 3), v)), 1e-5);
      // In place (the fused step's way): state and next_state one buffer, per-head interleaved
      // q | k | v rows as the layer's projection lays them out.
      const Tensor rows = qkv.to(kF32).reshape({B * H, 3 * D}).contiguous();  // [B*H, 3D]
      Tensor inplace = state.to(kF32).contiguous();
      Tensor out = torch::empty({B * H, D}, kF32);
      const Tensor decay = torch::exp(-s.to(kF32)).contiguous();
      LightningDecodeRowsF32(rows.data_ptr<float>(), rows.data_ptr<float>() + D, rows.data_ptr<float>() + 2 * D,
                             3 * D, inplace.data_ptr<float>(), decay.data_ptr<float>(), B * H, H, D,
                             inplace.data_ptr<float>(), out.data_ptr<float>());
      EXPECT_LT(RelMaxErr(inplace, want_state), 1e-5);
      EXPECT_LT(RelMaxErr(out.view({B, H, 1, D}), want_out), 1e-5);
    }
    Tensor qg = q.clone().requires_grad_(true);  // tensor ops, differentiable
    auto rg = LightningDecodeStep(qg, k, v, s, state);
    EXPECT_LT(RelMaxErr(rg.out.detach(), want_out), 1e-12);
    rg.out.sum().backward();
    EXPECT_LT(RelMaxErr(qg.grad(), want_state.sum(-1).unsqueeze(2)), 1e-12);  // d(sum q S')/dq = rowsum S'
  }
}

// ---- packed documents (§3.8) ---------------------------------------------------------------

TEST_F(LightningTest, PackedDocumentsEqualSeparateRuns) {
  const int64_t H = 4, D = 6;
  // Documents: crossing blocks, an empty one, ending exactly at block ends (32, 64), one token.
  const std::vector<int64_t> cu = {0, 5, 5, 21, 32, 33, 64, 70};
  const int64_t T = cu.back();
  const Tensor q = SiluInput({1, H, T, D}, kF64), k = SiluInput({1, H, T, D}, kF64),
               v = SiluInput({1, H, T, D}, kF64);
  const Tensor s = MixedSlopes(H);
  const Tensor w = torch::randn({1, H, T, D}, kF64);
  for (int64_t block : {1, 4, 16, 30, 128}) {
    Tensor qp = q.clone().requires_grad_(true), kp = k.clone().requires_grad_(true),
           vp = v.clone().requires_grad_(true);
    auto packed = Chunked(qp, kp, vp, s, {}, block, cu);
    ASSERT_EQ(packed.state.size(0), static_cast<int64_t>(cu.size()) - 1);
    (packed.out * w).sum().backward();
    for (size_t d = 0; d + 1 < cu.size(); ++d) {
      const int64_t a = cu[d], len = cu[d + 1] - cu[d];
      const std::string where = "block " + std::to_string(block) + " doc " + std::to_string(d);
      if (len == 0) {
        EXPECT_EQ(MaxAbs(packed.state[d]), 0.0) << where;
        continue;
      }
      Tensor qs = q.narrow(2, a, len).clone().requires_grad_(true), ks = k.narrow(2, a, len).clone().requires_grad_(true),
             vs = v.narrow(2, a, len).clone().requires_grad_(true);
      auto sep = Chunked(qs, ks, vs, s, {}, block);
      (sep.out * w.narrow(2, a, len)).sum().backward();
      const auto ref = reference::ParallelLightning(q.narrow(2, a, len), k.narrow(2, a, len), v.narrow(2, a, len), s);
      EXPECT_LT(RelMaxErr(packed.out.narrow(2, a, len), ref.out), 1e-12) << where;
      EXPECT_LT(RelMaxErr(sep.out, ref.out), 1e-12) << where;
      EXPECT_LT(RelMaxErr(packed.state[d], ref.state[0]), 1e-12) << where;
      EXPECT_LT(RelMaxErr(qp.grad().narrow(2, a, len), qs.grad()), 1e-12) << where;
      EXPECT_LT(RelMaxErr(kp.grad().narrow(2, a, len), ks.grad()), 1e-12) << where;
      EXPECT_LT(RelMaxErr(vp.grad().narrow(2, a, len), vs.grad()), 1e-12) << where;
    }
    // The masked reference over the whole packed row agrees as well (no leak across documents).
    const auto masked = reference::ParallelLightning(q, k, v, s, {}, cu);
    EXPECT_LT(RelMaxErr(packed.out, masked.out), 1e-12) << block;
    EXPECT_LT(RelMaxErr(packed.state, masked.state), 1e-12) << block;
  }
  // Inference path (no grad) gives the same per-document states.
  torch::NoGradGuard no_grad;
  auto inf = Chunked(q, k, v, s, {}, 16, cu);
  EXPECT_LT(RelMaxErr(inf.state, reference::ParallelLightning(q, k, v, s, {}, cu).state), 1e-12);
}

// ---- the layer (§3.1, §3.6, §9 step 5) -----------------------------------------------------

ModelConfig LayerConfig(int64_t H, int64_t D, int64_t block) {
  ModelConfig c;
  c.hidden_size = 20;
  c.num_hidden_layers = 4;
  c.num_attention_heads = H;
  c.head_dim = D;
  c.num_key_value_heads = 1;
  c.vocab_size = 10;
  c.intermediate_size = 8;
  c.num_local_experts = 2;
  c.attn_type_list = {0, 0, 0, 1};
  c.lightning_block_size = block;
  c.lightning_norm_eps = 1e-6;
  return c;
}

void RandomizeLayer(LightningAttention& layer) {
  torch::NoGradGuard no_grad;
  for (auto& p : layer->parameters()) p.copy_(torch::randn(p.sizes(), p.options()) * 0.3);
}

Tensor LayerReference(LightningAttention& layer, const Tensor& x, int64_t D, double eps,
                      const std::vector<int64_t>& cu = {}) {
  return reference::ReferenceLightningLayer(x, layer->qkv_proj->weight, layer->output_gate->weight,
                                            layer->norm->weight, layer->out_proj->weight, layer->slopes(), D, eps,
                                            cu);
}

TEST_F(LightningTest, LayerMatchesStraightforwardReference) {
  const int64_t H = 3, D = 4, B = 2, T = 11;
  const ModelConfig cfg = LayerConfig(H, D, 4);
  LightningAttention layer(cfg, /*layer_idx=*/1);
  RandomizeLayer(layer);
  // Slopes: the per-layer fp32 table for a non-power-of-two head count.
  ASSERT_TRUE(torch::equal(layer->slopes(), LightningSlopes(H, 1, 4)));
  const Tensor x = torch::randn({B, T, cfg.hidden_size});
  const Tensor want = LayerReference(layer, x, D, cfg.lightning_norm_eps);
  const Tensor got = layer->forward(x, {});
  EXPECT_EQ(got.scalar_type(), kF32);
  EXPECT_EQ(got.sizes(), (std::vector<int64_t>{B, T, cfg.hidden_size}));
  EXPECT_LT(RelRms(got, want), 1e-5);

  // fp64 layer: tight forward agreement and parameter gradients vs autograd of the reference.
  layer->to(kF64);
  ASSERT_EQ(layer->slopes().scalar_type(), kF32);  // never cast with the module
  const Tensor x64 = x.to(kF64).requires_grad_(true);
  const Tensor w = torch::randn({B, T, cfg.hidden_size}, kF64);
  (layer->forward(x64, {}) * w).sum().backward();
  std::vector<Tensor> got_grads;
  for (auto& p : layer->parameters()) got_grads.push_back(p.grad().clone());
  const Tensor got_dx = x64.grad().clone();
  std::vector<Tensor> ref_params;
  for (auto& p : layer->parameters()) ref_params.push_back(p.detach().clone().requires_grad_(true));
  const Tensor x64r = x.to(kF64).requires_grad_(true);
  // parameters() order: qkv_proj, output_gate, norm, out_proj (registration order).
  const Tensor ref_out = reference::ReferenceLightningLayer(x64r, ref_params[0], ref_params[1], ref_params[2],
                                                            ref_params[3], layer->slopes(), D, cfg.lightning_norm_eps);
  EXPECT_LT(RelMaxErr(layer->forward(x.to(kF64), {}), ref_out), 1e-12);
  (ref_out * w).sum().backward();
  for (size_t i = 0; i < ref_params.size(); ++i) {
    EXPECT_LT(RelMaxErr(got_grads[i], ref_params[i].grad()), 1e-10) << "param " << i;
  }
  EXPECT_LT(RelMaxErr(got_dx, x64r.grad()), 1e-10);
}

TEST_F(LightningTest, LayerPerHeadInterleavedLayout) {
  // Zero the rows that the per-head interleaved layout assigns to head 1's q ([3D, 4D)): then
  // q_1 = silu(0) = 0, head 1's attention output is exactly 0, and so are its columns after
  // the joint norm and the gate. With a [q_all | k_all | v_all] split those rows would be
  // head 0's k instead and head 1's columns would not vanish.
  const int64_t H = 3, D = 2;
  const ModelConfig cfg = LayerConfig(H, D, 4);
  LightningAttention layer(cfg, 0);
  RandomizeLayer(layer);
  {
    torch::NoGradGuard no_grad;
    layer->qkv_proj->weight.narrow(0, 3 * D * 1, D).zero_();
    layer->out_proj->weight.zero_();
    layer->out_proj->weight.narrow(1, D, D).fill_(1.0);  // y reads head 1's columns only
  }
  torch::NoGradGuard no_grad;
  const Tensor x = torch::randn({1, 5, cfg.hidden_size});
  EXPECT_EQ(MaxAbs(layer->forward(x, {})), 0.0);
  // Control: head 0's columns are not zero.
  {
    layer->out_proj->weight.zero_();
    layer->out_proj->weight.narrow(1, 0, D).fill_(1.0);
  }
  EXPECT_GT(MaxAbs(layer->forward(x, {})), 1e-3);
}

TEST_F(LightningTest, LayerCacheDecodeAndChunkedPrefill) {
  const int64_t H = 4, D = 8, B = 2, N = 13, M = 4;
  const ModelConfig cfg = LayerConfig(H, D, 8);
  LightningAttention layer(cfg, 2);
  RandomizeLayer(layer);
  torch::NoGradGuard no_grad;
  const Tensor x = torch::randn({B, N + M, cfg.hidden_size});
  const Tensor full = layer->forward(x, {});
  LightningLayerCache cache;
  // Chunked prefill in two calls (T > 1 both), then decode one token at a time.
  const Tensor y1 = layer->forward(x.narrow(1, 0, 6), {}, &cache);
  ASSERT_TRUE(cache.state.defined());
  EXPECT_EQ(cache.state.sizes(), (std::vector<int64_t>{B, H, D, D}));
  EXPECT_EQ(cache.state.scalar_type(), kF32);
  const Tensor y2 = layer->forward(x.narrow(1, 6, N - 6), {}, &cache);
  EXPECT_LT(RelMaxErr(torch::cat({y1, y2}, 1), full.narrow(1, 0, N)), 1e-5);
  for (int64_t t = N; t < N + M; ++t) {
    const Tensor yt = layer->forward(x.narrow(1, t, 1), {}, &cache);
    EXPECT_LT(RelMaxErr(yt, full.narrow(1, t, 1)), 1e-5) << t;
  }
  // A fresh cache with a single token uses the decode step from a zero state.
  LightningLayerCache fresh;
  EXPECT_LT(RelMaxErr(layer->forward(x.narrow(1, 0, 1), {}, &fresh), full.narrow(1, 0, 1)), 1e-5);
}

TEST_F(LightningTest, LayerPackedDocumentsEqualSeparateCalls) {
  const int64_t H = 2, D = 4;
  const ModelConfig cfg = LayerConfig(H, D, 4);
  LightningAttention layer(cfg, 0);
  RandomizeLayer(layer);
  const std::vector<int64_t> cu = {0, 3, 10, 11, 17};
  const Tensor x = torch::randn({1, cu.back(), cfg.hidden_size});
  ForwardContext ctx;
  ctx.cu_seqlens = cu;
  const Tensor packed = layer->forward(x, ctx);
  EXPECT_LT(RelRms(packed, LayerReference(layer, x, D, cfg.lightning_norm_eps, cu)), 1e-5);
  for (size_t d = 0; d + 1 < cu.size(); ++d) {
    const Tensor sep = layer->forward(x.narrow(1, cu[d], cu[d + 1] - cu[d]), {});
    EXPECT_LT(RelMaxErr(packed.narrow(1, cu[d], cu[d + 1] - cu[d]), sep), 1e-5) << d;
  }
}

TEST_F(LightningTest, LayerBf16BodyKeepsFp32Math) {
  const int64_t H = 2, D = 8;
  const ModelConfig cfg = LayerConfig(H, D, 8);
  LightningAttention layer(cfg, 1);
  RandomizeLayer(layer);
  const Tensor x = torch::randn({1, 20, cfg.hidden_size});
  torch::NoGradGuard no_grad;
  const Tensor want = layer->forward(x, {});
  layer->to(torch::kBFloat16);
  EXPECT_EQ(layer->slopes().scalar_type(), kF32);
  LightningLayerCache cache;
  const Tensor got = layer->forward(x.to(torch::kBFloat16), {}, &cache);
  EXPECT_EQ(got.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(cache.state.scalar_type(), kF32);  // the state is never bf16
  EXPECT_LT(RelRms(got, want), 5e-2);
}

// ---- bad input ------------------------------------------------------------------------------

TEST_F(LightningTest, BadInputIsAClearError) {
  const Tensor q = torch::randn({1, 2, 5, 4}), s = LightningSlopes(2, 0, 2);
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const lightrl::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { Chunked(q, q, torch::randn({1, 2, 6, 4}), s, {}, 4); }, "shapes differ");
  expect_error([&] { Chunked(q.to(torch::kBFloat16), q.to(torch::kBFloat16), q.to(torch::kBFloat16), s, {}, 4); },
               "fp32 or fp64");
  expect_error([&] { Chunked(q, q, q, LightningSlopes(3, 0, 2), {}, 4); }, "slopes");
  expect_error([&] { Chunked(q, q, q, s, torch::zeros({1, 2, 4, 3}), 4); }, "initial_state");
  expect_error([&] { Chunked(q, q, q, s, {}, 0); }, "block_size");
  expect_error([&] { Chunked(q, q, q, s, {}, 4, {0, 3}); }, "end at T");
  expect_error([&] { Chunked(q, q, q, s, {}, 4, {0, 4, 2, 5}); }, "non-decreasing");
  expect_error([&] { Chunked(q, q, q, s, torch::zeros({1, 2, 4, 4}), 4, {0, 2, 5}); }, "initial state");
  const Tensor q2 = torch::randn({2, 2, 5, 4});
  expect_error([&] { Chunked(q2, q2, q2, s, {}, 4, {0, 2, 5}); }, "B == 1");
  expect_error([&] { LightningDecodeStep(q, q, q, s, {}); }, "[B, H, 1, D]");
  const Tensor q1 = torch::randn({1, 2, 1, 4});
  expect_error([&] { LightningDecodeStep(q1, q1, q1, s, torch::zeros({1, 2, 4, 4}, kF64)); }, "dtype");

  LightningAttention layer(LayerConfig(2, 4, 4), 0);
  LightningLayerCache cache;
  cache.state = torch::zeros({3, 2, 4, 4});
  expect_error([&] { layer->forward(torch::randn({1, 3, 20}), {}, &cache); }, "cached state");
  ForwardContext ctx;
  ctx.cu_seqlens = {0, 3};
  LightningLayerCache empty;
  expect_error([&] { layer->forward(torch::randn({1, 3, 20}), ctx, &empty); }, "cu_seqlens");
}

}  // namespace
}  // namespace lightrl::model
