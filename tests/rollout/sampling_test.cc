// Sampling: the top-k / top-p candidate sets against an independent libtorch reference (fp64
// softmax, sort, cumsum), draw frequencies against the renormalised probabilities, greedy,
// random streams, and parameter validation.
#include "rollout/sampling.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

namespace lightrl::rollout {
namespace {

std::vector<float> RandomLogits(int64_t V, uint64_t seed, double scale = 2.0) {
  auto gen = at::detail::createCPUGenerator(seed);
  torch::Tensor t = (at::randn({V}, gen, torch::kFloat32) * scale).contiguous();
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + V);
}

// Reference: the kept set {id: renormalised prob} computed with tensor ops, no shared code.
std::map<int64_t, double> ReferenceSupport(const std::vector<float>& logits, double T, int top_k, double top_p) {
  torch::Tensor z = torch::tensor(logits, torch::kFloat64) / T;
  torch::Tensor p = torch::softmax(z, 0);
  auto [sorted, idx] = p.sort(0, /*descending=*/true);
  int64_t keep = p.size(0);
  if (top_k > 0) keep = std::min<int64_t>(keep, top_k);
  torch::Tensor kept = sorted.narrow(0, 0, keep);
  kept = kept / kept.sum();
  if (top_p < 1.0) {
    torch::Tensor cum = kept.cumsum(0);
    // Tokens whose preceding mass is below top_p stay (the first one always does).
    torch::Tensor before = cum - kept;
    int64_t n = (before < top_p).sum().item<int64_t>();
    kept = kept.narrow(0, 0, n);
    kept = kept / kept.sum();
    keep = n;
  }
  std::map<int64_t, double> out;
  for (int64_t i = 0; i < keep; ++i) out[idx[i].item<int64_t>()] = kept[i].item<double>();
  return out;
}

TEST(SamplingTest, CandidateSetsMatchTheReference) {
  const int64_t V = 97;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    std::vector<float> logits = RandomLogits(V, seed);
    for (double T : {0.5, 1.0, 1.7}) {
      for (int k : {0, 1, 5, 40, 200}) {
        for (double p : {1.0, 0.95, 0.6, 0.1, 1e-9}) {
          Candidates c = SamplingCandidates(logits.data(), V, T, k, p);
          std::map<int64_t, double> ref = ReferenceSupport(logits, T, k, p);
          ASSERT_EQ(c.ids.size(), ref.size()) << "seed " << seed << " T " << T << " k " << k << " p " << p;
          double sum = 0;
          for (size_t i = 0; i < c.ids.size(); ++i) {
            ASSERT_TRUE(ref.count(c.ids[i])) << c.ids[i];
            EXPECT_NEAR(c.probs[i], ref[c.ids[i]], 1e-12);
            sum += c.probs[i];
          }
          EXPECT_NEAR(sum, 1.0, 1e-12);
        }
      }
    }
  }
}

TEST(SamplingTest, TopKKeepsTheKLargestAndTopPTheSmallestSufficientPrefix) {
  // Hand-made distribution: probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625.
  std::vector<float> logits = {std::log(0.0625f), std::log(0.5f), std::log(0.125f), std::log(0.25f), std::log(0.0625f)};
  Candidates k2 = SamplingCandidates(logits.data(), 5, 1.0, 2, 1.0);
  EXPECT_EQ(k2.ids, (std::vector<int64_t>{1, 3}));
  EXPECT_NEAR(k2.probs[0], 2.0 / 3, 1e-6);
  Candidates p75 = SamplingCandidates(logits.data(), 5, 1.0, 0, 0.74);
  EXPECT_EQ(p75.ids, (std::vector<int64_t>{1, 3}));  // 0.5 + 0.25 reaches 0.74
  Candidates p76 = SamplingCandidates(logits.data(), 5, 1.0, 0, 0.76);
  EXPECT_EQ(p76.ids, (std::vector<int64_t>{1, 3, 2}));
  // Ties at the boundary go to the lower id.
  Candidates k4 = SamplingCandidates(logits.data(), 5, 1.0, 4, 1.0);
  EXPECT_EQ(k4.ids, (std::vector<int64_t>{1, 3, 2, 0}));
  // top-p after top-k uses the top-k-renormalised mass: within {1, 3}, 1 alone has 2/3.
  EXPECT_EQ(SamplingCandidates(logits.data(), 5, 1.0, 2, 0.6).ids, (std::vector<int64_t>{1}));
}

TEST(SamplingTest, GreedyIsTheArgmaxWithLowestIdOnTies) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(SampleToken(logits.data(), 4, p, 0.99), 1);
  EXPECT_EQ(SampleToken(logits.data(), 4, p, 0.0), 1);
}

TEST(SamplingTest, DrawFrequenciesMatchTheDistribution) {
  const int64_t V = 12;
  std::vector<float> logits = RandomLogits(V, 11, 1.0);
  SamplingParams p;
  p.temperature = 0.9;
  p.top_k = 8;
  p.top_p = 0.9;
  std::map<int64_t, double> ref = ReferenceSupport(logits, 0.9, 8, 0.9);
  SampleRng rng(5, 0);
  const int N = 200000;
  std::map<int64_t, int> count;
  for (int i = 0; i < N; ++i) count[SampleToken(logits.data(), V, p, rng.Uniform())]++;
  for (const auto& [id, n] : count) ASSERT_TRUE(ref.count(id)) << "token " << id << " outside the candidate set";
  for (const auto& [id, prob] : ref) {
    const double sd = std::sqrt(prob * (1 - prob) / N);
    EXPECT_NEAR(static_cast<double>(count[id]) / N, prob, 5 * sd + 1e-4) << "token " << id;
  }
}

// Neither top-k nor top-p (the engine's usual case, a path of its own in SampleToken): the drawn
// token is the inverse CDF of the fp64 softmax (tensor ops, std::exp) at u, for u swept over
// [0, 1) away from the CDF's steps by more than rounding; wide logits reach the exp's underflow.
TEST(SamplingTest, FullVocabularyDrawIsTheInverseCdf) {
  for (double scale : {1.0, 30.0, 400.0}) {
    const int64_t V = 300;
    std::vector<float> logits = RandomLogits(V, 3, scale);
    for (double T : {0.7, 1.0}) {
      torch::Tensor cdf = torch::softmax(torch::tensor(logits, torch::kFloat64) / T, 0).cumsum(0);
      const double* c = cdf.data_ptr<double>();
      SamplingParams p;
      p.temperature = T;
      for (int i = 0; i < 2000; ++i) {
        const double u = (i + 0.5) / 2000;
        int64_t want = 0;
        while (want < V - 1 && !(u < c[want])) ++want;
        bool near_step = std::fabs(u - c[want]) < 1e-9 || (want > 0 && std::fabs(u - c[want - 1]) < 1e-9);
        if (near_step) continue;
        ASSERT_EQ(SampleToken(logits.data(), V, p, u), want) << "scale " << scale << " T " << T << " u " << u;
      }
    }
    // And the same distribution as the candidate set without top-k / top-p.
    Candidates all = SamplingCandidates(logits.data(), V, 1.0, 0, 1.0);
    torch::Tensor ref = torch::softmax(torch::tensor(logits, torch::kFloat64), 0);
    for (int64_t i = 0; i < V; ++i) EXPECT_NEAR(all.probs[i], ref[i].item<double>(), 1e-12) << i;
  }
}

TEST(SamplingTest, RandomStreamsAreReproducibleAndDistinct) {
  SampleRng a(1, 0), b(1, 0), c(1, 1), d(2, 0);
  std::set<double> seen;
  for (int i = 0; i < 100; ++i) {
    const double x = a.Uniform();
    EXPECT_EQ(x, b.Uniform());
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    seen.insert(x);
    EXPECT_NE(x, c.Uniform());
    EXPECT_NE(x, d.Uniform());
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(SamplingTest, ValidationNamesTheField) {
  SamplingParams p;
  EXPECT_TRUE(ValidateSamplingParams(p).ok());
  auto field_of = [](SamplingParams q) { return ValidateSamplingParams(q, "x").message(); };
  SamplingParams q = p;
  q.top_p = 1.5;
  EXPECT_EQ(field_of(q).rfind("x.top_p:", 0), 0u);
  q = p;
  q.top_k = -1;
  EXPECT_EQ(field_of(q).rfind("x.top_k:", 0), 0u);
  q = p;
  q.max_new_tokens = 0;
  EXPECT_EQ(field_of(q).rfind("x.max_new_tokens:", 0), 0u);
  q = p;
  q.stop_strings = {"ok", ""};
  EXPECT_EQ(field_of(q).rfind("x.stop_strings[1]:", 0), 0u);
  q = p;
  q.repetition_prob = 1.0;
  EXPECT_EQ(field_of(q).rfind("x.repetition_prob:", 0), 0u);
  q = p;
  q.temperature = NAN;
  EXPECT_EQ(field_of(q).rfind("x.temperature:", 0), 0u);
}

}  // namespace
}  // namespace lightrl::rollout
