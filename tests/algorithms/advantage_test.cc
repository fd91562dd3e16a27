// Advantage estimators against hand-computed tables and loop references, GAE against a
// reverse-loop reference, DAPO filters, and the estimator registry's errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "algorithms/advantage.h"
#include "algorithms/advantages.h"
#include "algorithms/filters.h"
#include "tests/algorithms/reference.h"
#include "tests/algorithms/test_util.h"

namespace lightrl::algorithms {
namespace {

using testing::Dbl;
using testing::ErrorOf;
using testing::ExpectAllNear;
using testing::Mask;
using testing::Vec;
using testing::Yaml;

std::unique_ptr<AdvantageEstimator> Make(const std::string& yaml) {
  auto e = AdvantageRegistry().CreateFromBlock(Yaml(yaml), "algorithm.advantage", "estimator");
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

// Per-sample advantages (T = 1 column).
std::vector<double> PerSample(const AdvantageEstimator& est, const std::vector<double>& scores,
                              const std::vector<int64_t>& groups) {
  AdvantageInputs in;
  in.scores = Dbl(scores, {static_cast<int64_t>(scores.size())});
  in.group_index = torch::tensor(groups, torch::kLong);
  in.response_mask = torch::ones({static_cast<int64_t>(scores.size()), 1}, torch::kBool);
  return Vec(est.Compute(in).advantages);
}

// Group 7: {1, 0, 1, 0}; group 3: {1, 1, 1} (zero variance); group 9: {0.5} (singleton);
// group 4: {2, 0, 1}.
const std::vector<double> kScores = {1, 0, 1, 1, 0.5, 1, 2, 0, 0, 1, 1};
const std::vector<int64_t> kGroups = {7, 7, 3, 3, 9, 7, 4, 4, 7, 3, 4};

TEST(GrpoAdvantageTest, HandComputedTable) {
  // Group 7: mean 0.5, unbiased std sqrt(1/3); group 4: mean 1, unbiased std 1.
  const double s7 = std::sqrt(1.0 / 3.0), eps = 1e-6;
  const std::vector<double> want = {0.5 / (s7 + eps),  -0.5 / (s7 + eps), 0, 0, 0.5 / (1 + eps), 0.5 / (s7 + eps),
                                    1 / (1 + eps),     -1 / (1 + eps),    -0.5 / (s7 + eps), 0, 0};
  ExpectAllNear(PerSample(*Make("{estimator: grpo}"), kScores, kGroups), want, 1e-12, "grpo");
  // The singleton follows verl (mean 0, std 1): its raw score / (1 + eps).
  EXPECT_NEAR(want[4], 0.4999995, 1e-7);
}

TEST(GrpoAdvantageTest, DrGrpoDoesNotDivideByStd) {
  const std::vector<double> want = {0.5, -0.5, 0, 0, 0.5, 0.5, 1, -1, -0.5, 0, 0};
  ExpectAllNear(PerSample(*Make("{estimator: grpo, norm: none}"), kScores, kGroups), want, 1e-12, "dr grpo");
}

TEST(GrpoAdvantageTest, BatchStdAndLoopReference) {
  // Batch std of the raw scores (unbiased).
  double mean = 0;
  for (double x : kScores) mean += x;
  mean /= kScores.size();
  double ss = 0;
  for (double x : kScores) ss += (x - mean) * (x - mean);
  const double sd = std::sqrt(ss / (kScores.size() - 1));
  std::vector<double> want = ref::Grpo(kScores, kGroups, false, 0);
  for (double& a : want) a /= sd + 1e-4;
  ExpectAllNear(PerSample(*Make("{estimator: grpo, norm: batch_std, std_eps: 1.0e-4}"), kScores, kGroups), want,
                1e-12, "batch_std");
  // Random groups against the loop reference.
  std::mt19937 gen(3);
  std::vector<double> x;
  std::vector<int64_t> g;
  for (int i = 0; i < 40; ++i) {
    x.push_back(std::uniform_real_distribution<double>(-1, 2)(gen));
    g.push_back(i % 6);
  }
  ExpectAllNear(PerSample(*Make("{estimator: grpo}"), x, g), ref::Grpo(x, g, true, 1e-6), 1e-12, "grpo random");
}

TEST(GrpoAdvantageTest, BroadcastsOverResponseTokensOnly) {
  AdvantageInputs in;
  in.scores = Dbl({1, 0}, {2});
  in.group_index = torch::tensor(std::vector<int64_t>{0, 0}, torch::kLong);
  in.response_mask = Mask({1, 1, 0, 1, 0, 0}, {2, 3});
  const std::vector<double> a = Vec(Make("{estimator: grpo, norm: none}")->Compute(in).advantages);
  ExpectAllNear(a, {0.5, 0.5, 0, -0.5, 0, 0}, 1e-15, "broadcast");
}

TEST(RlooAdvantageTest, HandComputedTableAndLeaveOneOutDefinition) {
  // Group {1, 0, 0, 1}: a 1 sees the others' mean 1/3, a 0 sees 2/3.
  ExpectAllNear(PerSample(*Make("{estimator: rloo}"), {1, 0, 0, 1}, {5, 5, 5, 5}),
                {2.0 / 3, -2.0 / 3, -2.0 / 3, 2.0 / 3}, 1e-12, "rloo table");
  ExpectAllNear(PerSample(*Make("{estimator: rloo}"), kScores, kGroups), ref::Rloo(kScores, kGroups), 1e-12,
                "rloo vs definition");
}

TEST(ReinforcePlusPlusAdvantageTest, TokenWhitenedBatchMatchesReference) {
  const std::vector<double> scores = {1, 0, 0.5, 2, -1};
  const std::vector<int64_t> groups = {0, 0, 1, 1, 1};
  const std::vector<int> mask = {1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0};  // [5, 3]
  AdvantageInputs in;
  in.scores = Dbl(scores, {5});
  in.group_index = torch::tensor(groups, torch::kLong);
  in.response_mask = Mask(mask, {5, 3});
  for (bool baseline : {false, true}) {
    std::vector<double> base = baseline ? ref::Grpo(scores, groups, false, 0) : scores;
    std::vector<double> tok(15);
    for (int i = 0; i < 15; ++i) tok[i] = base[i / 3];
    auto est = Make(baseline ? "{estimator: reinforce_pp, baseline: group}" : "{estimator: reinforce_pp}");
    ExpectAllNear(Vec(est->Compute(in).advantages), ref::Whiten(tok, mask), 1e-12, "reinforce++");
  }
}

TEST(GaeTest, HandComputedSmallCase) {
  // gamma = lam = 1, rewards [0, 0, 1], values [.5, .6, .7]:
  // A2 = 1 - .7 = .3; A1 = (0 + .7 - .6) + .3 = .4; A0 = (0 + .6 - .5) + .4 = .5; returns = 1.
  GaeOutput g = ComputeGae(Dbl({0, 0, 1}, {1, 3}), Dbl({0.5, 0.6, 0.7}, {1, 3}), torch::ones({1, 3}, torch::kBool),
                           1.0, 1.0);
  ExpectAllNear(Vec(g.advantages), {0.5, 0.4, 0.3}, 1e-12, "gae adv");
  ExpectAllNear(Vec(g.returns), {1, 1, 1}, 1e-12, "gae returns");
}

TEST(GaeTest, MatchesReverseLoopReferenceWithMasks) {
  const int B = 4, T = 7;
  std::mt19937 gen(9);
  std::normal_distribution<double> n01(0, 1);
  std::vector<double> rewards(B * T), values(B * T);
  std::vector<int> mask(B * T);
  for (int i = 0; i < B * T; ++i) {
    rewards[i] = n01(gen);
    values[i] = n01(gen);
    const int t = i % T, b = i / T;
    mask[i] = t < T - b ? 1 : 0;
  }
  mask[1 * T + 2] = 0;  // interior observation tokens carry V and A through
  mask[2 * T + 1] = 0;
  std::vector<double> want_adv, want_ret;
  ref::Gae(B, T, rewards, values, mask, 0.9, 0.95, &want_adv, &want_ret);
  GaeOutput g = ComputeGae(Dbl(rewards, {B, T}), Dbl(values, {B, T}), Mask(mask, {B, T}), 0.9, 0.95);
  ExpectAllNear(Vec(g.advantages), want_adv, 1e-12, "gae adv");
  ExpectAllNear(Vec(g.returns), want_ret, 1e-12, "gae returns");

  // The estimator: outcome score on the last response token, then whitening over the mask.
  AdvantageInputs in;
  std::vector<double> scores = {1, -1, 0.5, 2};
  in.scores = Dbl(scores, {B});
  in.group_index = torch::zeros({B}, torch::kLong);
  in.response_mask = Mask(mask, {B, T});
  in.values = Dbl(values, {B, T});
  std::vector<double> outcome(B * T, 0.0);
  for (int b = 0; b < B; ++b) {
    int last = -1;
    for (int t = 0; t < T; ++t)
      if (mask[b * T + t]) last = t;
    outcome[b * T + last] = scores[b];
  }
  ref::Gae(B, T, outcome, values, mask, 1.0, 1.0, &want_adv, &want_ret);
  AdvantageOutput out = Make("{estimator: gae}")->Compute(in);
  ExpectAllNear(Vec(out.advantages), ref::Whiten(want_adv, mask), 1e-10, "gae estimator");
  ExpectAllNear(Vec(out.returns), want_ret, 1e-12, "gae estimator returns");
  EXPECT_TRUE(Make("{estimator: gae}")->needs_values());
  EXPECT_NE(ErrorOf([&] {
              AdvantageInputs no_values = in;
              no_values.values.reset();
              Make("{estimator: gae}")->Compute(no_values);
            }).find("gae: needs critic values"),
            std::string::npos);
}

TEST(AdvantageInputTest, BadInputsFailClearly) {
  auto est = Make("{estimator: grpo}");
  AdvantageInputs in;
  in.scores = Dbl({1, std::nan(""), 0}, {3});
  in.group_index = torch::zeros({3}, torch::kLong);
  in.response_mask = torch::ones({3, 1}, torch::kBool);
  EXPECT_NE(ErrorOf([&] { est->Compute(in); }).find("grpo: score of sample 1 is nan"), std::string::npos);
  in.scores = Dbl({1, std::numeric_limits<double>::infinity(), 0}, {3});
  EXPECT_NE(ErrorOf([&] { est->Compute(in); }).find("score of sample 1 is inf"), std::string::npos);
  in.scores = Dbl({1, 0, 0}, {3});
  in.group_index = torch::zeros({2}, torch::kLong);
  EXPECT_NE(ErrorOf([&] { est->Compute(in); }).find("group_index must be [B] = [3], got [2]"), std::string::npos);
  in.group_index = torch::zeros({3}, torch::kInt);
  EXPECT_NE(ErrorOf([&] { est->Compute(in); }).find("group_index must be int64"), std::string::npos);
  in.group_index = torch::zeros({3}, torch::kLong);
  in.response_mask = torch::ones({2, 1}, torch::kBool);
  EXPECT_NE(ErrorOf([&] { est->Compute(in); }).find("response_mask must be [B, T] with B = 3"), std::string::npos);
}

TEST(AdvantageRegistryTest, UnknownNamesAndBadKnobsNameTheKey) {
  auto err = [](const std::string& yaml) {
    auto r = AdvantageRegistry().CreateFromBlock(Yaml(yaml), "algorithm.advantage", "estimator");
    return r.ok() ? std::string("OK") : r.status().message();
  };
  EXPECT_EQ(err("{estimator: gpro}"),
            "algorithm.advantage.estimator: unknown advantage estimator 'gpro'; known: gae, grpo, reinforce_pp, rloo");
  EXPECT_NE(err("{estimator: grpo, norm: group}").find("algorithm.advantage.norm: expected group_std, batch_std or none"),
            std::string::npos);
  EXPECT_NE(err("{estimator: grpo, std_eps: -1}").find("algorithm.advantage.std_eps"), std::string::npos);
  EXPECT_NE(err("{estimator: gae, gamma: 1.5}").find("algorithm.advantage.gamma: expected a number in [0, 1]"),
            std::string::npos);
  EXPECT_NE(err("{estimator: rloo, norm: none}").find("algorithm.advantage.norm: unknown key"), std::string::npos);
  EXPECT_NE(err("{estimator: reinforce_pp, baseline: batch}").find("algorithm.advantage.baseline"), std::string::npos);
  EXPECT_EQ(err("{estimator: gae, gamma: 0.99, lam: 0.95, whiten: false}"), "OK");
}

TEST(DynamicSamplingFilterTest, DropsExactlyTheZeroVarianceGroups) {
  GroupFilterResult r = FilterZeroVarianceGroups(kScores, kGroups);
  EXPECT_EQ(r.kept_groups, (std::vector<int64_t>{7, 4}));
  EXPECT_EQ(r.dropped_groups, (std::vector<int64_t>{3, 9}));  // all-equal; singleton
  const std::vector<bool> keep = {true, true, false, false, false, true, true, true, true, false, true};
  EXPECT_EQ(r.keep_sample, keep);
  // A singleton counts as kept only when min_group_size allows it... and it still has zero variance.
  EXPECT_EQ(FilterZeroVarianceGroups({1.0}, {0}, 1).kept_groups, std::vector<int64_t>{});
  EXPECT_NE(ErrorOf([] { FilterZeroVarianceGroups({1.0, std::nan("")}, {0, 0}); }).find("reward[1]"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { FilterZeroVarianceGroups({1.0}, {0, 0}); }).find("1 rewards but 2 group ids"),
            std::string::npos);
}

TEST(OverlongTest, SoftPunishmentFollowsDapoEq13) {
  // L_max 20480, L_cache 4096 (DAPO §4.1).
  EXPECT_EQ(SoftOverlongPenalty(100, 20480, 4096), 0.0);
  EXPECT_EQ(SoftOverlongPenalty(16384, 20480, 4096), 0.0);
  EXPECT_DOUBLE_EQ(SoftOverlongPenalty(16385, 20480, 4096), -1.0 / 4096);
  EXPECT_DOUBLE_EQ(SoftOverlongPenalty(18432, 20480, 4096), -0.5);
  EXPECT_DOUBLE_EQ(SoftOverlongPenalty(20480, 20480, 4096), -1.0);
  EXPECT_DOUBLE_EQ(SoftOverlongPenalty(20481, 20480, 4096), -1.0);
  EXPECT_DOUBLE_EQ(SoftOverlongPenalty(18432, 20480, 4096, 0.5), -0.25);
  EXPECT_EQ(SoftOverlongPenalty(20480, 20480, 0), 0.0);
  EXPECT_NE(ErrorOf([] { SoftOverlongPenalty(10, 100, 200); }).find("buffer_len must be in [0, max_len = 100]"),
            std::string::npos);
  EXPECT_TRUE(OverlongFiltered(true, true));
  EXPECT_FALSE(OverlongFiltered(true, false));
  EXPECT_FALSE(OverlongFiltered(false, true));
}

}  // namespace
}  // namespace lightrl::algorithms
