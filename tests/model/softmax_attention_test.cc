// Softmax attention (hybrid_model.md §4) against an independent fp64 oracle:
//   - RoPE as explicit per-position rotation matrices built with scalar loops (pairs (i, i+r/2)
//     on the first rotary_dim dims, identity elsewhere);
//   - attention as one plain materialised softmax per (row, head), with the mask written out as
//     a predicate, and autograd through it for the gradients.
// Covered: partial NeoX RoPE, GQA, causal/cached-prefix/packed masks, the blockwise path (values
// and custom backward) at several tile sizes, the layer with and without KV cache (uniform and
// ragged row lengths, decode and continuing prefill), packed documents vs separate runs, and the
// decode fast path (CachedAttention and the layer's no-grad T <= 8 path: ragged rows, several
// key chunks, a cache that grows, fp64 and fp32 with the vectorised head dims).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/check.h"
#include "model/layers.h"

namespace lightrl::model {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// ---- oracle ------------------------------------------------------------------------------------

// Rotation matrix of one position: [D, D] fp64, y = R x.
torch::Tensor RotationMatrix(int64_t pos, int64_t D, int64_t r, double theta) {
  torch::Tensor R = torch::eye(D, kF64);
  auto a = R.accessor<double, 2>();
  const int64_t h = r / 2;
  for (int64_t i = 0; i < h; ++i) {
    const double freq = 1.0 / std::pow(theta, (2.0 * i) / r);
    const double ang = static_cast<double>(pos) * freq;
    a[i][i] = std::cos(ang);
    a[i][i + h] = -std::sin(ang);
    a[i + h][i + h] = std::cos(ang);
    a[i + h][i] = std::sin(ang);
  }
  return R;
}

// x: [B, Hx, T, D] fp64; pos[b][t]. Differentiable in x.
torch::Tensor RefRope(const torch::Tensor& x, const std::vector<std::vector<int64_t>>& pos, int64_t r,
                      double theta) {
  const int64_t B = x.size(0), T = x.size(2), D = x.size(3);
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<torch::Tensor> mats;
    for (int64_t t = 0; t < T; ++t) mats.push_back(RotationMatrix(pos[b][t], D, r, theta));
    torch::Tensor R = torch::stack(mats);  // [T, D, D]
    // y[h, t, i] = sum_j R[t, i, j] x[h, t, j]
    rows.push_back(torch::einsum("tij,htj->hti", {R, x[b]}));
  }
  return torch::stack(rows);
}

using AllowFn = std::function<bool(int64_t b, int64_t t, int64_t j)>;

// q: [B, H, Tq, D], k/v: [B, Hkv, Tk, D]; query head h uses kv head h / (H / Hkv).
torch::Tensor RefAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                           const AllowFn& allow) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Hkv = k.size(1), Tk = k.size(2);
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    torch::Tensor bias = torch::zeros({Tq, Tk}, kF64);
    auto a = bias.accessor<double, 2>();
    for (int64_t t = 0; t < Tq; ++t) {
      for (int64_t j = 0; j < Tk; ++j) {
        if (!allow(b, t, j)) a[t][j] = -std::numeric_limits<double>::infinity();
      }
    }
    std::vector<torch::Tensor> heads;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv);
      torch::Tensor s = torch::matmul(q[b][h], k[b][kvh].t()) * scale + bias;
      heads.push_back(torch::matmul(torch::softmax(s, -1), v[b][kvh]));
    }
    rows.push_back(torch::stack(heads));
  }
  return torch::stack(rows);
}

AllowFn CausalFrom(int64_t offset) {
  return [offset](int64_t, int64_t t, int64_t j) { return j <= offset + t; };
}

AllowFn PackedCausal(const std::vector<int64_t>& cu) {
  return [cu](int64_t, int64_t t, int64_t j) {
    if (j > t) return false;
    for (size_t d = 0; d + 1 < cu.size(); ++d) {
      if (t >= cu[d] && t < cu[d + 1]) return j >= cu[d];
    }
    return false;
  };
}

// ---- RoPE --------------------------------------------------------------------------------------

TEST(RopeTest, MatchesRotationMatricesOnFirstRotaryDims) {
  torch::manual_seed(1);
  const int64_t B = 2, Hx = 3, T = 5, D = 10, r = 6;
  const double theta = 1e4;
  torch::Tensor x = torch::randn({B, Hx, T, D}, kF64);
  std::vector<std::vector<int64_t>> pos = {{0, 1, 2, 7, 100000}, {3, 3, 50, 9, 65535}};
  torch::Tensor p = torch::tensor(std::vector<int64_t>{0, 1, 2, 7, 100000, 3, 3, 50, 9, 65535}).view({B, T});
  torch::Tensor got = ApplyRope(x, p, r, theta);
  // Angles up to 1e5 rad carry ~1e-11 of fp64 rounding, whichever way they are formed.
  EXPECT_LT(MaxAbsDiff(got, RefRope(x, pos, r, theta)), 1e-10);
  // Dims past rotary_dim pass through bit-exactly.
  EXPECT_TRUE(torch::equal(got.narrow(-1, r, D - r), x.narrow(-1, r, D - r)));
  // Position 0 is the identity.
  EXPECT_TRUE(torch::allclose(got[0].select(1, 0), x[0].select(1, 0), 0, 0));
  // fp32 input: computed in fp32, close to the fp64 oracle.
  torch::Tensor got32 = ApplyRope(x.to(torch::kFloat), p, r, theta);
  EXPECT_EQ(got32.scalar_type(), torch::kFloat);
  EXPECT_LT(MaxAbsDiff(got32, RefRope(x, pos, r, theta)), 1e-5);
  // rotary_dim == 0 is the identity; full-width rotation also matches.
  EXPECT_TRUE(torch::equal(ApplyRope(x, p, 0, theta), x));
  EXPECT_LT(MaxAbsDiff(ApplyRope(x, p, D, theta), RefRope(x, pos, D, theta)), 1e-10);
}

TEST(RopeTest, DotProductDependsOnlyOnRelativePosition) {
  torch::manual_seed(2);
  const int64_t D = 8;
  torch::Tensor q = torch::randn({1, 1, 1, D}, kF64), k = torch::randn({1, 1, 1, D}, kF64);
  auto dot = [&](int64_t pq, int64_t pk) {
    torch::Tensor a = ApplyRope(q, torch::tensor(std::vector<int64_t>{pq}), D, 1e7);
    torch::Tensor b = ApplyRope(k, torch::tensor(std::vector<int64_t>{pk}), D, 1e7);
    return (a * b).sum().item<double>();
  };
  EXPECT_NEAR(dot(10, 3), dot(1010, 1003), 1e-10);
  EXPECT_NEAR(dot(5, 5), dot(0, 0), 1e-12);
  EXPECT_GT(std::abs(dot(10, 3) - dot(3, 10)), 1e-6);  // not symmetric: it is a rotation
}

TEST(RopeTest, PositionsRestartPerDocumentAndContinueAtOffsets) {
  torch::Tensor p = RopePositions(1, 9, {0, 3, 5, 9});
  EXPECT_TRUE(torch::equal(p, torch::tensor(std::vector<int64_t>{0, 1, 2, 0, 1, 0, 1, 2, 3}).view({1, 9})));
  torch::Tensor o = RopePositions(2, 3, {}, {4, 0});
  EXPECT_TRUE(torch::equal(o, torch::tensor(std::vector<int64_t>{4, 5, 6, 0, 1, 2}).view({2, 3})));
  EXPECT_THROW(RopePositions(2, 3, {0, 3}), Error);
  EXPECT_THROW(RopePositions(1, 9, {0, 3, 8}), Error);  // does not end at T
}

// ---- attention core ----------------------------------------------------------------------------

struct CoreCase {
  int64_t B, H, Hkv, Tq, Tk, D, block;
};

class CoreTest : public ::testing::TestWithParam<CoreCase> {};

TEST_P(CoreTest, BothPathsMatchReferenceValuesAndGradients) {
  const CoreCase c = GetParam();
  torch::manual_seed(3 + c.block);
  torch::Tensor q = torch::randn({c.B, c.H, c.Tq, c.D}, kF64).requires_grad_(true);
  torch::Tensor k = torch::randn({c.B, c.Hkv, c.Tk, c.D}, kF64).requires_grad_(true);
  torch::Tensor v = torch::randn({c.B, c.Hkv, c.Tk, c.D}, kF64).requires_grad_(true);
  torch::Tensor w = torch::randn({c.B, c.H, c.Tq, c.D}, kF64);  // random cotangent
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));

  torch::Tensor ref = RefAttention(q, k, v, scale, CausalFrom(c.Tk - c.Tq));
  auto ref_grads = torch::autograd::grad({(ref * w).sum()}, {q, k, v});

  for (AttentionPath path : {AttentionPath::kBlockwise, AttentionPath::kMaterialized}) {
    SCOPED_TRACE(path == AttentionPath::kBlockwise ? "blockwise" : "materialized");
    torch::Tensor out = CausalSoftmaxAttention(q, k, v, scale, c.block, {}, path);
    EXPECT_EQ(out.sizes(), ref.sizes());
    EXPECT_LT(MaxAbsDiff(out, ref), 1e-12);
    auto grads = torch::autograd::grad({(out * w).sum()}, {q, k, v});
    for (int i = 0; i < 3; ++i) EXPECT_LT(MaxAbsDiff(grads[i], ref_grads[i]), 1e-11) << "grad " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CoreTest,
    ::testing::Values(CoreCase{2, 4, 2, 13, 13, 8, 4},    // GQA G=2, partial last tiles
                      CoreCase{1, 4, 1, 11, 11, 6, 3},    // G=4 > block: one query per tile
                      CoreCase{2, 2, 2, 9, 9, 5, 1},      // 1x1 tiles
                      CoreCase{1, 6, 3, 10, 10, 4, 64},   // a single tile
                      CoreCase{2, 4, 2, 5, 17, 8, 4},     // cached prefix: queries at 12..16
                      CoreCase{1, 3, 1, 1, 9, 4, 2}));    // one query (decode shape)

TEST(CoreAttention, PackedDocumentsAreBlockDiagonal) {
  torch::manual_seed(4);
  const std::vector<int64_t> cu = {0, 5, 6, 14, 20};  // includes a one-token document
  const int64_t H = 4, Hkv = 2, T = 20, D = 6;
  torch::Tensor q = torch::randn({1, H, T, D}, kF64).requires_grad_(true);
  torch::Tensor k = torch::randn({1, Hkv, T, D}, kF64).requires_grad_(true);
  torch::Tensor v = torch::randn({1, Hkv, T, D}, kF64).requires_grad_(true);
  torch::Tensor w = torch::randn({1, H, T, D}, kF64);
  torch::Tensor ref = RefAttention(q, k, v, 0.3, PackedCausal(cu));
  auto ref_grads = torch::autograd::grad({(ref * w).sum()}, {q, k, v});
  for (int64_t block : {3, 4, 8, 64}) {
    for (AttentionPath path : {AttentionPath::kBlockwise, AttentionPath::kMaterialized}) {
      SCOPED_TRACE(::testing::Message() << "block " << block << " path " << static_cast<int>(path));
      torch::Tensor out = CausalSoftmaxAttention(q, k, v, 0.3, block, cu, path);
      EXPECT_LT(MaxAbsDiff(out, ref), 1e-12);
      auto grads = torch::autograd::grad({(out * w).sum()}, {q, k, v});
      for (int i = 0; i < 3; ++i) EXPECT_LT(MaxAbsDiff(grads[i], ref_grads[i]), 1e-11) << "grad " << i;
    }
  }
  // The one-token document attends only itself: its output is its own value row.
  torch::Tensor out = CausalSoftmaxAttention(q, k, v, 0.3, 4, cu, AttentionPath::kBlockwise);
  EXPECT_LT(MaxAbsDiff(out[0][0][5], v[0][0][5]), 1e-14);
}

TEST(CoreAttention, Fp32InputsComputeInFp32) {
  torch::manual_seed(5);
  torch::Tensor q = torch::randn({1, 4, 40, 8}, kF64), k = torch::randn({1, 2, 40, 8}, kF64),
                v = torch::randn({1, 2, 40, 8}, kF64);
  torch::Tensor ref = RefAttention(q, k, v, 0.35, CausalFrom(0));
  torch::Tensor out = CausalSoftmaxAttention(q.to(torch::kFloat), k.to(torch::kFloat), v.to(torch::kFloat), 0.35,
                                             8, {}, AttentionPath::kBlockwise);
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_LT(MaxAbsDiff(out, ref), 2e-5);
}

TEST(CoreAttention, LargeLogitsStayFinite) {
  // Scores of order 1e3 overflow exp() without the running-max subtraction.
  torch::manual_seed(6);
  torch::Tensor q = torch::randn({1, 2, 24, 4}, kF64) * 30, k = torch::randn({1, 2, 24, 4}, kF64) * 30,
                v = torch::randn({1, 2, 24, 4}, kF64);
  torch::Tensor ref = RefAttention(q, k, v, 1.0, CausalFrom(0));
  torch::Tensor out = CausalSoftmaxAttention(q.to(torch::kFloat), k.to(torch::kFloat), v.to(torch::kFloat), 1.0, 5,
                                             {}, AttentionPath::kBlockwise);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  EXPECT_LT(MaxAbsDiff(out, ref), 1e-4);
}

TEST(CoreAttention, RejectsBadShapes) {
  torch::Tensor q = torch::randn({1, 3, 4, 8}), k = torch::randn({1, 2, 4, 8});
  EXPECT_THROW(CausalSoftmaxAttention(q, k, k, 1.0, 4), Error);  // 3 heads, 2 kv heads
  torch::Tensor q2 = torch::randn({1, 2, 5, 8});
  EXPECT_THROW(CausalSoftmaxAttention(q2, k, k, 1.0, 4), Error);  // Tq > Tk
  torch::Tensor q3 = torch::randn({2, 2, 4, 8}), k3 = torch::randn({2, 2, 4, 8});
  EXPECT_THROW(CausalSoftmaxAttention(q3, k3, k3, 1.0, 4, {0, 4}), Error);  // packed needs B == 1
}

// ---- layer -------------------------------------------------------------------------------------

ModelConfig LayerConfig(int64_t block) {
  ModelConfig c;
  c.hidden_size = 12;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 6;
  c.rotary_dim = 4;
  c.rope_theta = 100.0;  // small theta: rotations are large at these short lengths
  c.softmax_block_size = block;
  return c;
}

SoftmaxAttention MakeLayer(int64_t block, uint64_t seed) {
  torch::manual_seed(seed);
  SoftmaxAttention layer(LayerConfig(block), 7);
  layer->to(torch::kDouble);
  return layer;
}

// The layer written out from its weights with the oracle pieces.
torch::Tensor RefLayer(SoftmaxAttention& layer, const torch::Tensor& x, const std::vector<std::vector<int64_t>>& pos,
                       const AllowFn& allow) {
  const ModelConfig c = LayerConfig(1);
  const int64_t B = x.size(0), T = x.size(1), H = c.num_attention_heads, Hkv = c.num_key_value_heads,
                D = c.head_dim;
  torch::Tensor q = torch::matmul(x, layer->q_proj->weight.t()).view({B, T, H, D}).transpose(1, 2);
  torch::Tensor k = torch::matmul(x, layer->k_proj->weight.t()).view({B, T, Hkv, D}).transpose(1, 2);
  torch::Tensor v = torch::matmul(x, layer->v_proj->weight.t()).view({B, T, Hkv, D}).transpose(1, 2);
  q = RefRope(q, pos, c.rotary_dim, c.rope_theta);
  k = RefRope(k, pos, c.rotary_dim, c.rope_theta);
  torch::Tensor o = RefAttention(q, k, v, 1.0 / std::sqrt(static_cast<double>(D)), allow);
  return torch::matmul(o.transpose(1, 2).reshape({B, T, H * D}), layer->o_proj->weight.t());
}

std::vector<std::vector<int64_t>> Iota(int64_t B, int64_t T) {
  std::vector<std::vector<int64_t>> p(B, std::vector<int64_t>(T));
  for (auto& row : p) {
    for (int64_t t = 0; t < T; ++t) row[t] = t;
  }
  return p;
}

TEST(SoftmaxLayer, MatchesReferenceIncludingParameterGradients) {
  for (int64_t block : {4, 64}) {  // blockwise (T*T > block^2) and materialised
    SCOPED_TRACE(::testing::Message() << "block " << block);
    SoftmaxAttention layer = MakeLayer(block, 10);
    torch::manual_seed(11);
    const int64_t B = 2, T = 11;
    torch::Tensor x = torch::randn({B, T, 12}, kF64);
    torch::Tensor w = torch::randn({B, T, 12}, kF64);
    torch::Tensor out = layer->forward(x, {});
    torch::Tensor ref = RefLayer(layer, x, Iota(B, T), CausalFrom(0));
    EXPECT_LT(MaxAbsDiff(out, ref), 1e-12);

    std::vector<torch::Tensor> params = layer->parameters();
    auto grads = torch::autograd::grad({(out * w).sum()}, params);
    auto ref_grads = torch::autograd::grad({(ref * w).sum()}, params);
    for (size_t i = 0; i < params.size(); ++i) EXPECT_LT(MaxAbsDiff(grads[i], ref_grads[i]), 1e-11) << i;
  }
}

TEST(SoftmaxLayer, Fp32LayerIsCloseToFp64Reference) {
  SoftmaxAttention layer = MakeLayer(4, 12);
  torch::manual_seed(13);
  torch::Tensor x = torch::randn({2, 9, 12}, kF64);
  torch::Tensor ref = RefLayer(layer, x, Iota(2, 9), CausalFrom(0));
  layer->to(torch::kFloat);
  torch::Tensor out = layer->forward(x.to(torch::kFloat), {});
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_LT(MaxAbsDiff(out, ref), 1e-5);
}

TEST(SoftmaxLayer, PackedDocumentsEqualSeparateRuns) {
  SoftmaxAttention layer = MakeLayer(4, 14);
  torch::manual_seed(15);
  const std::vector<int64_t> cu = {0, 6, 7, 16, 21};
  torch::Tensor x = torch::randn({1, 21, 12}, kF64);
  ForwardContext ctx;
  ctx.cu_seqlens = cu;
  torch::Tensor packed = layer->forward(x, ctx);
  for (size_t d = 0; d + 1 < cu.size(); ++d) {
    const int64_t len = cu[d + 1] - cu[d];
    torch::Tensor alone = layer->forward(x.narrow(1, cu[d], len), {});
    EXPECT_LT(MaxAbsDiff(packed.narrow(1, cu[d], len), alone), 1e-12) << "document " << d;
  }
  // And against the oracle with restarted positions.
  std::vector<std::vector<int64_t>> pos(1);
  for (size_t d = 0; d + 1 < cu.size(); ++d) {
    for (int64_t t = cu[d]; t < cu[d + 1]; ++t) pos[0].push_back(t - cu[d]);
  }
  EXPECT_LT(MaxAbsDiff(packed, RefLayer(layer, x, pos, PackedCausal(cu))), 1e-12);
}

TEST(SoftmaxLayer, CachedPrefillAndDecodeEqualFullForward) {
  SoftmaxAttention layer = MakeLayer(4, 16);
  torch::manual_seed(17);
  const int64_t B = 2, T = 14;
  torch::Tensor x = torch::randn({B, T, 12}, kF64);
  torch::Tensor full = layer->forward(x, {});

  torch::NoGradGuard no_grad;
  SoftmaxLayerCache cache;
  std::vector<torch::Tensor> pieces;
  // prefill 5, decode 4 x 1 token, continue prefill with 3 (blockwise: 3*12 > 4^2), decode 2.
  const std::vector<int64_t> steps = {5, 1, 1, 1, 1, 3, 1, 1};
  int64_t t0 = 0;
  for (int64_t n : steps) {
    pieces.push_back(layer->forward(x.narrow(1, t0, n), {}, &cache));
    t0 += n;
    ASSERT_TRUE(cache.lengths.defined());
    EXPECT_TRUE(torch::equal(cache.lengths, torch::full({B}, t0, torch::TensorOptions().dtype(torch::kLong))));
    EXPECT_GE(cache.k.size(2), t0);
    EXPECT_LE(cache.k.size(2), 2 * t0);  // amortised doubling, not per-token growth
    EXPECT_EQ(cache.k.scalar_type(), torch::kDouble);
  }
  ASSERT_EQ(t0, T);
  EXPECT_LT(MaxAbsDiff(torch::cat(pieces, 1), full), 1e-12);
}

TEST(SoftmaxLayer, RowsWithDifferentCacheLengths) {
  // Row 0 has a 4-token prefix, row 1 a 7-token prefix; both then take new tokens in one call.
  for (int64_t block : {2, 64}) {  // per-row blockwise and ragged materialised continuation
    SCOPED_TRACE(::testing::Message() << "block " << block);
    SoftmaxAttention layer = MakeLayer(block, 18);
    torch::manual_seed(19);
    const std::vector<int64_t> prefix = {4, 7};
    torch::Tensor seq0 = torch::randn({1, 4 + 4, 12}, kF64), seq1 = torch::randn({1, 7 + 4, 12}, kF64);
    const std::vector<torch::Tensor> seqs = {seq0, seq1};
    torch::NoGradGuard no_grad;

    // Build each row's cache separately, then merge into one B = 2 cache.
    SoftmaxLayerCache merged;
    merged.k = torch::zeros({2, 2, 9, 6}, kF64);  // capacity 9 >= 7
    merged.v = torch::zeros({2, 2, 9, 6}, kF64);
    for (int64_t b = 0; b < 2; ++b) {
      SoftmaxLayerCache row;
      layer->forward(seqs[b].narrow(1, 0, prefix[b]), {}, &row);
      merged.k[b].narrow(1, 0, prefix[b]).copy_(row.k[0].narrow(1, 0, prefix[b]));
      merged.v[b].narrow(1, 0, prefix[b]).copy_(row.v[0].narrow(1, 0, prefix[b]));
    }
    merged.lengths = torch::tensor(prefix);

    // One decode step (T == 1), then 3 more tokens in one call (T > 1, ragged).
    torch::Tensor step1 = torch::cat({seq0.narrow(1, 4, 1), seq1.narrow(1, 7, 1)}, 0);
    torch::Tensor out1 = layer->forward(step1, {}, &merged);
    torch::Tensor step2 = torch::cat({seq0.narrow(1, 5, 3), seq1.narrow(1, 8, 3)}, 0);
    torch::Tensor out2 = layer->forward(step2, {}, &merged);
    EXPECT_TRUE(torch::equal(merged.lengths, torch::tensor(std::vector<int64_t>{8, 11})));

    for (int64_t b = 0; b < 2; ++b) {
      torch::Tensor full = layer->forward(seqs[b], {});
      EXPECT_LT(MaxAbsDiff(out1[b][0], full[0][prefix[b]]), 1e-12) << "row " << b;
      EXPECT_LT(MaxAbsDiff(out2[b], full[0].narrow(0, prefix[b] + 1, 3)), 1e-12) << "row " << b;
    }
  }
}

TEST(SoftmaxLayer, GradientsFlowThroughCachedCallToNewTokens) {
  // With a constant cached prefix, d(out_last)/d(x_last) of a decode step equals the full
  // forward's, whose other inputs are held fixed.
  SoftmaxAttention layer = MakeLayer(4, 20);
  torch::manual_seed(21);
  torch::Tensor x = torch::randn({1, 9, 12}, kF64);
  torch::Tensor w = torch::randn({1, 1, 12}, kF64);

  torch::Tensor last = x.narrow(1, 8, 1).clone().requires_grad_(true);
  torch::Tensor full_in = torch::cat({x.narrow(1, 0, 8), last}, 1);
  torch::Tensor full = layer->forward(full_in, {});
  auto ref = torch::autograd::grad({(full.narrow(1, 8, 1) * w).sum()}, {last});

  SoftmaxLayerCache cache;
  {
    torch::NoGradGuard no_grad;
    layer->forward(x.narrow(1, 0, 8), {}, &cache);
  }
  torch::Tensor last2 = x.narrow(1, 8, 1).clone().requires_grad_(true);
  torch::Tensor out = layer->forward(last2, {}, &cache);
  auto got = torch::autograd::grad({(out * w).sum()}, {last2});
  EXPECT_LT(MaxAbsDiff(got[0], ref[0]), 1e-12);
  EXPECT_FALSE(cache.k.requires_grad());  // the cache holds no graph
}

// ---- decode fast path ----------------------------------------------------------------------------

// CachedAttention against the per-row oracle: row b's cache holds prefix[b] + T valid keys; the
// slots past them are poisoned with NaN (never read).
void CheckCachedAttention(torch::ScalarType dtype, int64_t D, int64_t T, double tol) {
  SCOPED_TRACE(::testing::Message() << dtype << " D " << D << " T " << T);
  torch::manual_seed(30 + D + T);
  const std::vector<int64_t> prefix = {0, 5, 700, 256 - T};  // 700 + T spans three 256-key chunks
  const int64_t B = 4, H = 4, Hkv = 2, cap = 720;
  torch::Tensor q = torch::randn({B, H, T, D}, kF64);
  torch::Tensor k = torch::randn({B, Hkv, cap, D}, kF64);
  torch::Tensor v = torch::randn({B, Hkv, cap, D}, kF64);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  torch::Tensor kp = k.clone(), vp = v.clone();
  for (int64_t b = 0; b < B; ++b) {
    kp[b].narrow(1, prefix[b] + T, cap - prefix[b] - T).fill_(std::nan(""));
    vp[b].narrow(1, prefix[b] + T, cap - prefix[b] - T).fill_(std::nan(""));
  }
  torch::NoGradGuard no_grad;
  torch::Tensor out = CachedAttention(q.to(dtype), kp.to(dtype), vp.to(dtype), prefix, scale);
  ASSERT_EQ(out.sizes(), q.sizes());
  EXPECT_EQ(out.scalar_type(), dtype);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = prefix[b] + T;
    torch::Tensor ref = RefAttention(q.narrow(0, b, 1), k.narrow(0, b, 1).narrow(2, 0, n),
                                     v.narrow(0, b, 1).narrow(2, 0, n), scale, CausalFrom(prefix[b]));
    EXPECT_LT(MaxAbsDiff(out.narrow(0, b, 1), ref), tol) << "row " << b;
  }
  // A row's result does not depend on the other rows of the batch.
  torch::Tensor alone = CachedAttention(q.narrow(0, 2, 1).to(dtype), kp.narrow(0, 2, 1).to(dtype),
                                        vp.narrow(0, 2, 1).to(dtype), {prefix[2]}, scale);
  EXPECT_TRUE(torch::equal(alone, out.narrow(0, 2, 1)));
}

TEST(CachedAttentionTest, MatchesReferenceWithRaggedRowsAcrossKeyChunks) {
  for (int64_t T : {1, 3}) {
    CheckCachedAttention(torch::kDouble, 6, T, 1e-12);  // generic head dim
    CheckCachedAttention(torch::kFloat, 6, T, 1e-5);
    CheckCachedAttention(torch::kFloat, 32, T, 1e-5);   // vectorised head dims
    CheckCachedAttention(torch::kFloat, 128, T, 1e-5);
  }
}

TEST(CachedAttentionTest, RejectsBadInput) {
  torch::NoGradGuard no_grad;
  torch::Tensor q = torch::randn({1, 4, 1, 6}), kv = torch::randn({1, 2, 8, 6});
  EXPECT_THROW(CachedAttention(q, kv, kv, {8}, 1.0), Error);       // prefix + T > capacity
  EXPECT_THROW(CachedAttention(q, kv, kv, {1, 2}, 1.0), Error);    // prefix is not [B]
  EXPECT_THROW(CachedAttention(q.to(torch::kDouble), kv, kv, {1}, 1.0), Error);  // mixed dtypes
  torch::Tensor kv3 = torch::randn({1, 3, 8, 6});
  EXPECT_THROW(CachedAttention(q, kv3, kv3, {1}, 1.0), Error);     // 4 heads, 3 kv heads
}

// The layer's no-grad decode path (T <= 8) against the oracle layer over each row's whole
// sequence: rows with different cached lengths in one batch (one of them empty, one longer than
// a key chunk), a cache whose capacity is exactly the longest prefix (so the first step must
// grow it), steps of 1 to 3 tokens.
TEST(SoftmaxLayer, DecodeFastPathMatchesReferenceWithRaggedRowsAndGrowingCache) {
  SoftmaxAttention ref_layer = MakeLayer(64, 24);
  torch::manual_seed(25);
  const std::vector<int64_t> prefix = {0, 4, 300};
  const std::vector<int64_t> steps = {1, 1, 2, 1, 3, 1};
  int64_t added = 0;
  for (int64_t n : steps) added += n;
  const int64_t B = 3, Hkv = 2, D = 6;
  std::vector<torch::Tensor> seqs;  // [1, prefix + added, 12] fp64 each
  for (int64_t b = 0; b < B; ++b) seqs.push_back(torch::randn({1, prefix[b] + added, 12}, kF64));
  std::vector<torch::Tensor> refs;  // [1, L, 12]: the oracle layer over the whole sequence
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = seqs[b].size(1);
    refs.push_back(RefLayer(ref_layer, seqs[b], Iota(1, L), CausalFrom(0)).detach());
  }

  for (torch::ScalarType dtype : {torch::kDouble, torch::kFloat}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const double tol = dtype == torch::kDouble ? 1e-12 : 2e-5;
    SoftmaxAttention layer = MakeLayer(64, 24);  // same weights as ref_layer
    layer->to(dtype);
    torch::NoGradGuard no_grad;
    SoftmaxLayerCache cache;
    const int64_t cap = prefix.back();
    cache.k = torch::zeros({B, Hkv, cap, D}, torch::TensorOptions().dtype(dtype));
    cache.v = torch::zeros({B, Hkv, cap, D}, torch::TensorOptions().dtype(dtype));
    for (int64_t b = 0; b < B; ++b) {
      if (prefix[b] == 0) continue;
      SoftmaxLayerCache row;  // prefill alone (T > 8: the general path)
      layer->forward(seqs[b].narrow(1, 0, prefix[b]).to(dtype), {}, &row);
      cache.k[b].narrow(1, 0, prefix[b]).copy_(row.k[0].narrow(1, 0, prefix[b]));
      cache.v[b].narrow(1, 0, prefix[b]).copy_(row.v[0].narrow(1, 0, prefix[b]));
    }
    cache.lengths = torch::tensor(prefix);

    int64_t done = 0;
    for (int64_t n : steps) {
      std::vector<torch::Tensor> xs;
      for (int64_t b = 0; b < B; ++b) xs.push_back(seqs[b].narrow(1, prefix[b] + done, n));
      torch::Tensor out = layer->forward(torch::cat(xs, 0).to(dtype), {}, &cache);  // [B, n, 12]
      EXPECT_EQ(out.scalar_type(), dtype);
      for (int64_t b = 0; b < B; ++b) {
        EXPECT_LT(MaxAbsDiff(out[b], refs[b][0].narrow(0, prefix[b] + done, n)), tol)
            << "row " << b << " tokens [" << prefix[b] + done << ", " << prefix[b] + done + n << ")";
      }
      done += n;
      std::vector<int64_t> want(prefix);
      for (auto& l : want) l += done;
      EXPECT_TRUE(torch::equal(cache.lengths, torch::tensor(want)));
    }
    EXPECT_GE(cache.k.size(2), prefix.back() + added);  // grew (amortised doubling)
    EXPECT_LE(cache.k.size(2), 2 * cap);
    EXPECT_EQ(cache.k.scalar_type(), dtype);
  }
}

TEST(SoftmaxLayer, RejectsBadInput) {
  SoftmaxAttention layer = MakeLayer(4, 22);
  torch::Tensor x = torch::randn({1, 5, 12}, kF64);
  SoftmaxLayerCache cache;
  ForwardContext packed;
  packed.cu_seqlens = {0, 2, 5};
  EXPECT_THROW(layer->forward(x, packed, &cache), Error);  // packed + cache
  SoftmaxLayerCache wrong;
  wrong.k = torch::zeros({1, 2, 8, 6}, torch::kFloat);  // fp32 cache for an fp64 layer
  wrong.v = torch::zeros({1, 2, 8, 6}, torch::kFloat);
  wrong.lengths = torch::tensor(std::vector<int64_t>{3});
  EXPECT_THROW(layer->forward(x, {}, &wrong), Error);
  ModelConfig bad = LayerConfig(4);
  bad.num_key_value_heads = 3;  // 4 heads not a multiple of 3
  EXPECT_THROW(SoftmaxAttention(bad, 0), Error);
  bad = LayerConfig(4);
  bad.rotary_dim = 5;
  EXPECT_THROW(SoftmaxAttention(bad, 0), Error);
}

}  // namespace
}  // namespace lightrl::model
