// PackedGemm (model/packed_gemm.h) against an fp64 matmul, over shapes that exercise every row
// tail (n % 8), both panel widths and partial last panels (N % 16), odd K and strided inputs and
// outputs; its batch invariance (a row's bits do not depend on the other rows); the panel layout.
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

}  // namespace
}  // namespace lightrl::model
