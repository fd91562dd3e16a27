// Helpers shared by the algorithms tests: conversions between reference batches
// (std::vector<double>) and tensors, seeded random batches, and error-text capture.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "tests/algorithms/reference.h"

namespace lightrl::algorithms::testing {

inline torch::Tensor Dbl(const std::vector<double>& v, std::vector<int64_t> shape) {
  return torch::tensor(v, torch::TensorOptions().dtype(torch::kDouble)).view(shape).clone();
}

inline torch::Tensor Mask(const std::vector<int>& m, std::vector<int64_t> shape) {
  std::vector<int64_t> v(m.begin(), m.end());
  return torch::tensor(v, torch::TensorOptions().dtype(torch::kLong)).view(shape).to(torch::kBool);
}

inline std::vector<double> Vec(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kDouble).contiguous().flatten();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

inline void ExpectAllNear(const std::vector<double>& got, const std::vector<double>& want, double tol,
                          const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], tol * (1.0 + std::fabs(want[i]))) << what << " at flat index " << i;
  }
}

// A random [B, T] batch: prefix masks of random length (>= 1), one row with an interior hole,
// log-ratios spread over ~[-1.5, 1.5] so that both clip sides are hit, advantages +-, some 0.
inline ref::Batch RandomBatch(int B, int T, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> n01(0.0, 1.0);
  ref::Batch b;
  b.B = B;
  b.T = T;
  b.logp.resize(B * T);
  b.old_logp.resize(B * T);
  b.rollout_logp.resize(B * T);
  b.adv.resize(B * T);
  b.mask.resize(B * T);
  for (int r = 0; r < B; ++r) {
    const int len = 1 + static_cast<int>(u(gen) * T) % T;
    const double A = (r % 5 == 4) ? 0.0 : n01(gen);
    for (int t = 0; t < T; ++t) {
      const int i = r * T + t;
      b.logp[i] = -0.05 - 3.0 * u(gen);
      b.old_logp[i] = b.logp[i] + 0.6 * n01(gen);
      b.rollout_logp[i] = b.old_logp[i] + 0.4 * n01(gen);
      b.adv[i] = A;
      b.mask[i] = t < len ? 1 : 0;
    }
    if (r == 1 && len >= 3) b.mask[r * T + 1] = 0;  // interior hole (e.g. an observation token)
  }
  return b;
}

// The what() of the exception `f` throws ("" if none).
template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline YAML::Node Yaml(const std::string& text) { return YAML::Load(text); }

}  // namespace lightrl::algorithms::testing
