// PackedGemm (model/packed_gemm.h) against an fp64 matmul, over shapes that exercise every row
// tail (n % 8), both panel widths and partial last panels (N % 16), odd K and strided inputs and
// outputs; its batch invariance (a row's bits do not depend on the other rows); the panel layout;
// the SiLU and multiply epilogues.
#include "model/packed_gemm.h"

#include <gtest/gtest.h>

#include <string>

namespace lightrl::model {
namespace {

TEST(PackedGemmTest, PanelLayoutHoldsColumnJAtPanelJ16LaneJ16AndZeroPadding) {
  const at::Tensor w = at::arange(5 * 3, at::kFloat).view({5, 3});  // w[j][k] = 3j + k
  const at::Tensor p = PackLinearWeight(w.t().contiguous().t());     // strided input is fine
  ASSERT_EQ(p.sizes(), (at::IntArrayRef{1, 3, 16}));
  for (int64_t k = 0; k < 3; ++k) {
    for (int64_t lane = 0; lane < 16; ++lane) {
      const float expect = lane < 5 ? static_cast<float>(3 * lane + k) : 0.0f;
      EXPECT_EQ(p[0][k][lane].item<float>(), expect) << "k " << k << " lane " << lane;
    }
  }
  EXPECT_EQ(PackLinearWeight(at::zeros({33, 2})).size(0), 3);
  EXPECT_THROW(PackLinearWeight(at::zeros({4, 4}, at::kDouble)), std::exception);
}

TEST(PackedGemmTest, MatchesAnFp64MatmulOnEveryTail) {
  if (!PackedGemmAvailable()) {
    // No AVX-512F here: the kernel must refuse clearly (callers fall back to libtorch).
    const at::Tensor p = PackLinearWeight(at::ones({16, 4}));
    float x[4] = {1, 2, 3, 4}, out[16];
    EXPECT_THROW(PackedGemm(x, 4, 1, 4, p.data_ptr<float>(), 16, out, 16), std::exception);
    return;
  }
  auto gen = at::detail::createCPUGenerator(3);
  for (int64_t n : {1, 2, 7, 8, 9, 16, 21}) {
    for (int64_t K : {1, 5, 64, 131}) {
      for (int64_t N : {1, 4, 15, 16, 17, 32, 33, 70}) {
        const at::Tensor x = at::randn({n, K + 3}, gen).narrow(1, 1, K);  // row stride K + 3
        const at::Tensor w = at::randn({N, K}, gen);
        const at::Tensor panels = PackLinearWeight(w);
        at::Tensor out = at::full({n, N + 2}, 7.0f);  // row stride N + 2; the 2 extra columns stay 7
        PackedGemm(x.data_ptr<float>(), x.stride(0), n, K, panels.data_ptr<float>(), N, out.data_ptr<float>(),
                   out.stride(0));
        const at::Tensor ref = at::mm(x.to(at::kDouble), w.to(at::kDouble).t());
        const std::string shape = "n " + std::to_string(n) + " K " + std::to_string(K) + " N " + std::to_string(N);
        const double err = (out.narrow(1, 0, N).to(at::kDouble) - ref).abs().max().item<double>();
        EXPECT_LT(err, 1e-5 * std::sqrt(static_cast<double>(K)) * (1 + ref.abs().max().item<double>())) << shape;
        EXPECT_TRUE(at::all(out.narrow(1, N, 2) == 7.0f).item<bool>()) << shape << ": wrote past N";
      }
    }
  }
}

TEST(PackedGemmTest, ARowsResultIsBitwiseIndependentOfTheOtherRows) {
  if (!PackedGemmAvailable()) {
    EXPECT_FALSE(PackedGemmAvailable());  // the libtorch fallback makes no such promise
    return;
  }
  auto gen = at::detail::createCPUGenerator(4);
  const int64_t n = 19, K = 96, N = 50;
  const at::Tensor x = at::randn({n, K}, gen), w = at::randn({N, K}, gen);
  const at::Tensor panels = PackLinearWeight(w);
  at::Tensor all = at::empty({n, N});
  PackedGemm(x.data_ptr<float>(), K, n, K, panels.data_ptr<float>(), N, all.data_ptr<float>(), N);
  for (int64_t r = 0; r < n; ++r) {
    at::Tensor one = at::empty({1, N});
    PackedGemm(x[r].data_ptr<float>(), K, 1, K, panels.data_ptr<float>(), N, one.data_ptr<float>(), N);
    EXPECT_TRUE(at::equal(one[0], all[r])) << "row " << r;
  }
}

// The epilogues against fp64: silu(x·Wᵀ) (with inputs of both signs far into the tails of the
// sigmoid), and (x·Wᵀ) * m, with m a separate buffer and m the output itself (in place), on
// row tails, partial panels and strided outputs; the prefetch hint changes nothing.
TEST(PackedGemmTest, EpiloguesMatchFp64) {
  if (!PackedGemmAvailable()) {
    EXPECT_FALSE(PackedGemmAvailable());  // only the kernel has epilogues; callers apply them otherwise
    return;
  }
  auto gen = at::detail::createCPUGenerator(5);
  for (int64_t n : {1, 3, 8, 13}) {
    for (int64_t N : {5, 16, 40}) {
      const int64_t K = 24;
      const std::string shape = "n " + std::to_string(n) + " N " + std::to_string(N);
      const at::Tensor x = at::randn({n, K}, gen) * 3.0, w = at::randn({N, K}, gen) * 3.0;  // |y| up to ~100
      const at::Tensor panels = PackLinearWeight(w), next = PackLinearWeight(at::randn({16, K}, gen));
      const at::Tensor y = at::mm(x.to(at::kDouble), w.to(at::kDouble).t());
      const double scale = 1 + y.abs().max().item<double>();
      at::Tensor out = at::full({n, N + 1}, 7.0f);  // row stride N + 1
      PackedGemm(x.data_ptr<float>(), K, n, K, panels.data_ptr<float>(), N, out.data_ptr<float>(), N + 1,
                 PackedNext{next.data_ptr<float>(), K}, PackedEpilogue{PackedEpilogue::Kind::kSilu, nullptr, 0});
      const at::Tensor silu = y * at::sigmoid(y);
      EXPECT_LT((out.narrow(1, 0, N).to(at::kDouble) - silu).abs().max().item<double>(), 1e-5 * scale) << shape;
      EXPECT_TRUE(at::all(out.narrow(1, N, 1) == 7.0f).item<bool>()) << shape << ": wrote past N";

      const at::Tensor m = at::randn({n, N + 2}, gen);  // row stride N + 2
      at::Tensor prod = at::empty({n, N});
      PackedGemm(x.data_ptr<float>(), K, n, K, panels.data_ptr<float>(), N, prod.data_ptr<float>(), N, {},
                 PackedEpilogue{PackedEpilogue::Kind::kMul, m.data_ptr<float>(), N + 2});
      const at::Tensor want = y * m.narrow(1, 0, N).to(at::kDouble);
      EXPECT_LT((prod.to(at::kDouble) - want).abs().max().item<double>(), 1e-5 * scale * 4) << shape;
      at::Tensor inplace = m.narrow(1, 0, N).contiguous();
      PackedGemm(x.data_ptr<float>(), K, n, K, panels.data_ptr<float>(), N, inplace.data_ptr<float>(), N, {},
                 PackedEpilogue{PackedEpilogue::Kind::kMul, inplace.data_ptr<float>(), N});
      EXPECT_TRUE(at::equal(inplace, prod)) << shape << ": in place differs from a separate multiplier";
    }
  }
  float x[1] = {1}, out[16];
  const at::Tensor p = PackLinearWeight(at::ones({16, 1}));
  EXPECT_THROW(PackedGemm(x, 1, 1, 1, p.data_ptr<float>(), 16, out, 16, {},
                          PackedEpilogue{PackedEpilogue::Kind::kMul, nullptr, 0}),
               std::exception);
}

}  // namespace
}  // namespace lightrl::model
