// Policy losses, importance correction, aggregation, KL, entropy and value loss against the
// loop references in reference.h (values and autograd gradients, fp64), plus the properties
// of algorithms.md §1.2 and the config/bad-input errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "algorithms/aggregation.h"
#include "algorithms/losses.h"
#include "algorithms/policy_loss.h"
#include "tests/algorithms/reference.h"
#include "tests/algorithms/test_util.h"

namespace lightrl::algorithms {
namespace {

using testing::Dbl;
using testing::ErrorOf;
using testing::ExpectAllNear;
using testing::Mask;
using testing::RandomBatch;
using testing::Vec;
using testing::Yaml;

struct Tensors {
  torch::Tensor logp, old_logp, adv, mask, rollout;
};

Tensors ToTensors(const ref::Batch& b) {
  Tensors t;
  t.logp = Dbl(b.logp, {b.B, b.T}).requires_grad_(true);
  t.old_logp = Dbl(b.old_logp, {b.B, b.T});
  t.adv = Dbl(b.adv, {b.B, b.T});
  t.rollout = Dbl(b.rollout_logp, {b.B, b.T});
  t.mask = Mask(b.mask, {b.B, b.T});
  return t;
}

std::unique_ptr<PolicyLoss> MakeLoss(const std::string& yaml) {
  auto loss = PolicyLossRegistry().CreateFromBlock(Yaml(yaml), "algorithm.policy_loss");
  EXPECT_TRUE(loss.ok()) << loss.status().ToString();
  return std::move(loss).value();
}

double CountTokens(const ref::Batch& b) {
  double n = 0;
  for (int m : b.mask) n += m;
  return n;
}

// Runs `loss` on `b` with token_mean_global over `global_tokens`, and checks per-token values,
// the aggregated value and d(loss)/d(logp) against the reference.
void CheckAgainstReference(const PolicyLoss& loss, const ref::Batch& b, const ref::PerToken& want,
                           const std::string& what, const std::vector<double>* is_weights = nullptr) {
  Tensors t = ToTensors(b);
  PolicyLossInputs in{t.logp, t.old_logp, t.adv, t.mask, std::nullopt};
  if (is_weights) in.is_weights = Dbl(*is_weights, {b.B, b.T});
  PolicyLossOutput out = loss.Compute(in);
  ExpectAllNear(Vec(out.per_token_loss), want.loss, 1e-12, what + " per-token loss");
  const double N = CountTokens(b) + 7;  // pretend other ranks hold 7 more tokens
  torch::Tensor total = Aggregate(out.per_token_loss, t.mask, {}, {N, 1.0});
  total.backward();
  const std::vector<double> w = ref::AggWeights(b, ref::Agg::kTokenMeanGlobal, N, 1.0);
  EXPECT_NEAR(total.item<double>(), ref::Dot(w, want.loss), 1e-12) << what;
  std::vector<double> grad(b.B * b.T);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = w[i] * want.grad[i];
  ExpectAllNear(Vec(t.logp.grad()), grad, 1e-12, what + " gradient");
}

TEST(CispoLossTest, MatchesReferenceDeltaConventionBothSidesClipped) {
  auto loss = MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2}");
  for (uint32_t seed : {1u, 2u, 3u}) {
    ref::Batch b = RandomBatch(6, 9, seed);
    CheckAgainstReference(*loss, b, ref::Cispo(b, 0.8, 1.28, false), "cispo delta seed " + std::to_string(seed));
    // The batch must actually exercise both bounds.
    int above = 0, below = 0;
    for (int i = 0; i < b.B * b.T; ++i) {
      if (!b.mask[i]) continue;
      const double r = std::exp(b.logp[i] - b.old_logp[i]);
      above += r > 1.28;
      below += r < 0.8;
    }
    EXPECT_GT(above, 0);
    EXPECT_GT(below, 0);
  }
}

TEST(CispoLossTest, MatchesReferenceAbsoluteConventionAndNoLowerBound) {
  auto abs_loss = MakeLoss("{name: cispo, eps_high: 1.3, eps_low: 0.75, clip_convention: absolute}");
  auto paper = MakeLoss("{name: cispo, eps_high: 0.3}");  // no lower bound: [0, 1.3]
  ref::Batch b = RandomBatch(5, 8, 11);
  CheckAgainstReference(*abs_loss, b, ref::Cispo(b, 0.75, 1.3, false), "cispo absolute");
  CheckAgainstReference(*paper, b, ref::Cispo(b, 0.0, 1.3, false), "cispo no lower bound");
  // Delta vs absolute of the same number are different clamps.
  auto delta = MakeLoss("{name: cispo, eps_high: 1.3}");
  EXPECT_NE(delta->Describe(), abs_loss->Describe());
  EXPECT_NE(delta->Describe().find("clip(r, 0, 2.3)"), std::string::npos) << delta->Describe();
  EXPECT_NE(abs_loss->Describe().find("clip(r, 0.75, 1.3)"), std::string::npos) << abs_loss->Describe();
}

TEST(CispoLossTest, UnifiedMaskZeroesExactlyTheTokensOfEq7) {
  // lo = 0.8, hi = 1.28. Tokens: (A>0, r>hi) drop; (A<0, r<lo) drop; (A>0, r<lo) keep;
  // (A<0, r>hi) keep; (A>0, inside) keep; (A<0, inside) keep.
  const std::vector<double> r = {1.6, 0.5, 0.5, 1.6, 1.1, 0.95};
  const std::vector<double> A = {1.0, -1.0, 0.7, -0.4, 0.3, -2.0};
  const std::vector<bool> dropped = {true, true, false, false, false, false};
  ref::Batch b;
  b.B = 1;
  b.T = 6;
  for (int i = 0; i < 6; ++i) {
    b.logp.push_back(-1.0 - 0.1 * i);
    b.old_logp.push_back(b.logp.back() - std::log(r[i]));
    b.adv.push_back(A[i]);
    b.rollout_logp.push_back(b.old_logp.back());
    b.mask.push_back(1);
  }
  auto loss = MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2, unified_mask: true}");
  Tensors t = ToTensors(b);
  PolicyLossOutput out = loss->Compute({t.logp, t.old_logp, t.adv, t.mask, std::nullopt});
  Aggregate(out.per_token_loss, t.mask, {}, {6, 1}).backward();
  const std::vector<double> per = Vec(out.per_token_loss), grad = Vec(t.logp.grad());
  for (int i = 0; i < 6; ++i) {
    if (dropped[i]) {
      EXPECT_EQ(per[i], 0.0) << i;
      EXPECT_EQ(grad[i], 0.0) << i;
    } else {
      EXPECT_NE(per[i], 0.0) << i;
      EXPECT_NE(grad[i], 0.0) << i;
    }
  }
  EXPECT_DOUBLE_EQ(out.sums.at("actor/unified_mask_frac").item<double>(), 2.0);
  CheckAgainstReference(*loss, b, ref::Cispo(b, 0.8, 1.28, true), "unified mask");
  // Without the mask no token is dropped.
  auto plain = MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2}");
  Tensors t2 = ToTensors(b);
  const std::vector<double> per2 = Vec(plain->Compute({t2.logp, t2.old_logp, t2.adv, t2.mask, std::nullopt}).per_token_loss);
  for (int i = 0; i < 6; ++i) EXPECT_NE(per2[i], 0.0) << i;
}

TEST(CispoLossTest, UnitRatioGradientEqualsReinforce) {
  ref::Batch b = RandomBatch(4, 7, 5);
  b.old_logp = b.logp;  // on-policy: r == 1
  auto cispo = MakeLoss("{name: cispo, eps_high: 4.0}");
  auto reinforce = MakeLoss("{name: reinforce}");
  std::vector<std::vector<double>> grads;
  for (const PolicyLoss* l : {cispo.get(), reinforce.get()}) {
    Tensors t = ToTensors(b);
    Aggregate(l->Compute({t.logp, t.old_logp, t.adv, t.mask, std::nullopt}).per_token_loss, t.mask, {}, {30, 1})
        .backward();
    grads.push_back(Vec(t.logp.grad()));
  }
  ExpectAllNear(grads[0], grads[1], 1e-14, "cispo(r=1) vs reinforce");
  double norm = 0;
  for (double g : grads[0]) norm += std::fabs(g);
  EXPECT_GT(norm, 0.1);
}

TEST(CispoLossTest, TokenClippedAboveKeepsScaledGradientWhilePpoClipGivesNone) {
  // One token, A > 0, r = 2 > hi = 1.28. Logits z of a 5-token vocabulary, target o = 2.
  const double A = 0.9, hi = 1.28;
  torch::Tensor z = torch::tensor({0.3, -1.2, 0.8, 0.1, -0.4}, torch::kDouble).requires_grad_(true);
  const int64_t o = 2;
  auto logp_of = [&](const torch::Tensor& zz) { return torch::log_softmax(zz, 0)[o].view({1, 1}); };
  const double logp0 = logp_of(z).item<double>();
  torch::Tensor old = torch::full({1, 1}, logp0 - std::log(2.0), torch::kDouble);
  torch::Tensor adv = torch::full({1, 1}, A, torch::kDouble);
  torch::Tensor mask = torch::ones({1, 1}, torch::kBool);
  const torch::Tensor softmax = torch::softmax(z.detach(), 0);
  torch::Tensor onehot = torch::zeros({5}, torch::kDouble);
  onehot[o] = 1.0;

  auto cispo = MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2}");
  Aggregate(cispo->Compute({logp_of(z), old, adv, mask, std::nullopt}).per_token_loss, mask, {}, {1, 1}).backward();
  // d loss / d z = -(hi * A) * (onehot - softmax)  (algorithms.md §1.2, N_tok = 1)
  ExpectAllNear(Vec(z.grad()), Vec(-(hi * A) * (onehot - softmax)), 1e-12, "cispo dz");

  z.mutable_grad().zero_();
  auto ppo = MakeLoss("{name: ppo_clip, eps_low: 0.2, eps_high: 0.28}");
  Aggregate(ppo->Compute({logp_of(z), old, adv, mask, std::nullopt}).per_token_loss, mask, {}, {1, 1}).backward();
  for (double g : Vec(z.grad())) EXPECT_EQ(g, 0.0);
}

TEST(CispoLossTest, NoGradientFlowsIntoOldLogpOrWeights) {
  ref::Batch b = RandomBatch(3, 5, 8);
  Tensors t = ToTensors(b);
  torch::Tensor old = t.old_logp.clone().requires_grad_(true);
  torch::Tensor adv = t.adv.clone().requires_grad_(true);
  auto loss = MakeLoss("{name: cispo, eps_high: 0.28}");
  loss->Compute({t.logp, old, adv, t.mask, std::nullopt}).per_token_loss.sum().backward();
  EXPECT_TRUE(!old.grad().defined() || old.grad().abs().sum().item<double>() == 0.0);
  EXPECT_TRUE(!adv.grad().defined() || adv.grad().abs().sum().item<double>() == 0.0);
  EXPECT_TRUE(t.logp.grad().defined());
}

TEST(CispoLossTest, StatsAreTokenSums) {
  ref::Batch b = RandomBatch(6, 9, 21);
  Tensors t = ToTensors(b);
  auto loss = MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2}");
  PolicyLossOutput out = loss->Compute({t.logp, t.old_logp, t.adv, t.mask, std::nullopt});
  double above = 0, below = 0, rsum = 0, rmax = -1;
  for (int i = 0; i < b.B * b.T; ++i) {
    if (!b.mask[i]) continue;
    const double r = std::exp(b.logp[i] - b.old_logp[i]);
    above += r > 1.28;
    below += r < 0.8;
    rsum += r;
    rmax = std::max(rmax, r);
  }
  EXPECT_DOUBLE_EQ(out.sums.at("actor/clip_frac_high").item<double>(), above);
  EXPECT_DOUBLE_EQ(out.sums.at("actor/clip_frac_low").item<double>(), below);
  EXPECT_NEAR(out.sums.at("actor/ratio_mean").item<double>(), rsum, 1e-12);
  EXPECT_NEAR(out.maxima.at("actor/ratio_max").item<double>(), rmax, 1e-12);
  for (const auto& name : loss->SumNames()) EXPECT_TRUE(out.sums.count(name)) << name;
}

TEST(PpoClipLossTest, MatchesReferenceWithClipHigherAndDualClip) {
  auto dapo = MakeLoss("{name: ppo_clip, eps_low: 0.2, eps_high: 0.28}");
  auto dual = MakeLoss("{name: ppo_clip, eps_low: 0.2, eps_high: 0.28, dual_clip_c: 1.5}");
  for (uint32_t seed : {4u, 6u}) {
    ref::Batch b = RandomBatch(6, 9, seed);
    CheckAgainstReference(*dapo, b, ref::PpoClip(b, 0.2, 0.28, std::nullopt), "ppo_clip");
    CheckAgainstReference(*dual, b, ref::PpoClip(b, 0.2, 0.28, 1.5), "ppo_clip dual");
  }
  // The dual clip must bind on some token of this batch (A < 0, r > 1.5).
  ref::Batch b = RandomBatch(6, 9, 4);
  Tensors t = ToTensors(b);
  PolicyLossOutput out = dual->Compute({t.logp, t.old_logp, t.adv, t.mask, std::nullopt});
  double expected = 0;
  for (int i = 0; i < b.B * b.T; ++i) {
    if (!b.mask[i] || b.adv[i] >= 0) continue;
    const double r = std::exp(b.logp[i] - b.old_logp[i]);
    expected += std::max(-b.adv[i] * r, -b.adv[i] * ref::Clamp(r, 0.8, 1.28)) > -b.adv[i] * 1.5;
  }
  EXPECT_DOUBLE_EQ(out.sums.at("actor/dual_clip_frac").item<double>(), expected);
}

TEST(GspoLossTest, MatchesReference) {
  auto gspo = MakeLoss("{name: gspo, eps_low: 0.05, eps_high: 0.08}");
  for (uint32_t seed : {7u, 9u}) {
    ref::Batch b = RandomBatch(6, 8, seed);
    CheckAgainstReference(*gspo, b, ref::Gspo(b, 0.05, 0.08), "gspo");
  }
}

TEST(ReinforceLossTest, MatchesReference) {
  auto loss = MakeLoss("{name: reinforce}");
  ref::Batch b = RandomBatch(5, 6, 12);
  CheckAgainstReference(*loss, b, ref::Reinforce(b), "reinforce");
}

TEST(IsCorrectionTest, WeightsMatchReferenceAndMultiplyEveryLoss) {
  ref::Batch b = RandomBatch(6, 7, 13);
  Tensors t = ToTensors(b);
  for (bool sequence : {false, true}) {
    for (bool mask_mode : {false, true}) {
      IsCorrectionConfig cfg;
      cfg.level = sequence ? IsLevel::kSequence : IsLevel::kToken;
      cfg.mode = mask_mode ? IsMode::kMask : IsMode::kTruncate;
      cfg.cap = 1.5;
      const std::vector<double> want = ref::IsWeights(b, sequence, mask_mode, 1.5);
      const std::string what = std::string(sequence ? "sequence" : "token") + (mask_mode ? " mask" : " truncate");
      ExpectAllNear(Vec(ComputeIsWeights(t.old_logp, t.rollout, t.mask, cfg)), want, 1e-12, what);
      if (!sequence && !mask_mode) {
        CheckAgainstReference(*MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2}"), b,
                              ref::Cispo(b, 0.8, 1.28, false, &want), "cispo x is", &want);
        CheckAgainstReference(*MakeLoss("{name: ppo_clip}"), b, ref::PpoClip(b, 0.2, 0.2, std::nullopt, &want),
                              "ppo x is", &want);
        CheckAgainstReference(*MakeLoss("{name: reinforce}"), b, ref::Reinforce(b, &want), "reinforce x is", &want);
      }
    }
  }
}

TEST(AggregationTest, EveryModeMatchesReferenceWeights) {
  ref::Batch b = RandomBatch(6, 8, 14);
  struct Case {
    LossAggregation mode;
    ref::Agg agg;
  };
  for (const Case& c : {Case{LossAggregation::kTokenMeanGlobal, ref::Agg::kTokenMeanGlobal},
                        Case{LossAggregation::kSeqMeanTokenMean, ref::Agg::kSeqMeanTokenMean},
                        Case{LossAggregation::kSeqMeanTokenSum, ref::Agg::kSeqMeanTokenSum},
                        Case{LossAggregation::kSeqMeanTokenSumNorm, ref::Agg::kSeqMeanTokenSumNorm}}) {
    Tensors t = ToTensors(b);
    // Use logp itself as the "per-token loss" so d(agg)/d(logp) is the aggregation weight.
    torch::Tensor agg = Aggregate(t.logp, t.mask, {c.mode, 16.0}, {61.0, 9.0});
    agg.backward();
    const std::vector<double> w = ref::AggWeights(b, c.agg, 61.0, 9.0, 16.0);
    EXPECT_NEAR(agg.item<double>(), ref::Dot(w, b.logp), 1e-12) << LossAggregationName(c.mode);
    ExpectAllNear(Vec(t.logp.grad()), w, 1e-14, LossAggregationName(c.mode));
  }
}

// Splitting a mini-batch over k simulated ranks (rows) with the GLOBAL counts gives exactly the
// single-rank gradient, for every aggregation mode.
TEST(AggregationTest, SplitOverRanksWithGlobalCountsGivesSingleRankGradient) {
  ref::Batch b = RandomBatch(7, 9, 15);
  auto loss = MakeLoss("{name: cispo, eps_high: 0.28, eps_low: 0.2}");
  const double tokens = CountTokens(b), samples = b.B;
  const std::vector<std::vector<int64_t>> ranks = {{0, 1}, {2, 3, 4}, {5, 6}};
  for (LossAggregation mode : {LossAggregation::kTokenMeanGlobal, LossAggregation::kSeqMeanTokenMean,
                               LossAggregation::kSeqMeanTokenSum, LossAggregation::kSeqMeanTokenSumNorm}) {
    const AggregationConfig cfg{mode, 9.0};
    Tensors whole = ToTensors(b);
    torch::Tensor single =
        Aggregate(loss->Compute({whole.logp, whole.old_logp, whole.adv, whole.mask, std::nullopt}).per_token_loss,
                  whole.mask, cfg, {tokens, samples});
    single.backward();
    Tensors split = ToTensors(b);
    double sum = 0;
    for (const auto& rows : ranks) {
      torch::Tensor idx = torch::tensor(rows, torch::kLong);
      PolicyLossInputs in{split.logp.index_select(0, idx), split.old_logp.index_select(0, idx),
                          split.adv.index_select(0, idx), split.mask.index_select(0, idx), std::nullopt};
      torch::Tensor part = Aggregate(loss->Compute(in).per_token_loss, in.response_mask, cfg, {tokens, samples});
      part.backward();  // gradients accumulate in the shared leaf, as an all-reduce sum would
      sum += part.item<double>();
    }
    EXPECT_NEAR(sum, single.item<double>(), 1e-14) << LossAggregationName(mode);
    ExpectAllNear(Vec(split.logp.grad()), Vec(whole.logp.grad()), 1e-14, LossAggregationName(mode));
  }
}

TEST(AggregationTest, NamesParseAndUnknownListsValid) {
  EXPECT_EQ(*ParseLossAggregation("constant_norm", "k"), LossAggregation::kSeqMeanTokenSumNorm);
  for (const auto& n : LossAggregationNames()) {
    auto m = ParseLossAggregation(n, "k");
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(LossAggregationName(*m), n);
  }
  auto bad = ParseLossAggregation("token_mean", "algorithm.loss_aggregation");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("algorithm.loss_aggregation: unknown loss aggregation 'token_mean'; known: "
                                        "token_mean_global"),
            std::string::npos)
      << bad.status().message();
  EXPECT_NE(ErrorOf([] {
              Aggregate(torch::zeros({2, 2}), torch::ones({2, 2}, torch::kBool), {}, {0.0, 1.0});
            }).find("global token count > 0"),
            std::string::npos);
}

TEST(KlEntropyValueTest, MatchReferences) {
  ref::Batch b = RandomBatch(3, 4, 16);
  Tensors t = ToTensors(b);
  for (int e : {1, 2, 3}) {
    const KlEstimator est = e == 1 ? KlEstimator::kK1 : e == 2 ? KlEstimator::kK2 : KlEstimator::kK3;
    std::vector<double> want;
    for (int i = 0; i < b.B * b.T; ++i) want.push_back(ref::Kl(b.logp[i], b.old_logp[i], e));
    ExpectAllNear(Vec(KlPenalty(t.logp, t.old_logp, est)), want, 1e-12, KlEstimatorName(est));
  }
  // k3 is clamped at 10.
  EXPECT_DOUBLE_EQ(KlPenalty(torch::tensor({-30.0}, torch::kDouble), torch::tensor({0.0}, torch::kDouble),
                             KlEstimator::kK3).item<double>(), 10.0);
  EXPECT_FALSE(ParseKlEstimator("k4", "algorithm.kl.estimator").ok());

  torch::Tensor logits = Dbl({0.1, 2.0, -1.0, 0.5, 30.0, 29.0, -5.0, 0.0}, {2, 4});
  const std::vector<double> h = Vec(TokenEntropy(logits));
  EXPECT_NEAR(h[0], ref::Entropy({0.1, 2.0, -1.0, 0.5}), 1e-12);
  EXPECT_NEAR(h[1], ref::Entropy({30.0, 29.0, -5.0, 0.0}), 1e-12);

  const std::vector<double> v = {0.5, 1.2, -0.3, 2.0}, old_v = {0.4, 0.1, -0.2, 2.6}, ret = {1.0, 0.0, 0.5, 2.2};
  torch::Tensor values = Dbl(v, {1, 4}).requires_grad_(true);
  torch::Tensor mask = torch::ones({1, 4}, torch::kBool);
  ValueLossOutput out = ClippedValueLoss(values, Dbl(old_v, {1, 4}), Dbl(ret, {1, 4}), mask, 0.5);
  out.per_token_loss.sum().backward();
  std::vector<double> want_loss, want_grad;
  for (int i = 0; i < 4; ++i) {
    double g = 0;
    want_loss.push_back(ref::ValueLoss(v[i], old_v[i], ret[i], 0.5, &g));
    want_grad.push_back(g);
  }
  ExpectAllNear(Vec(out.per_token_loss), want_loss, 1e-12, "value loss");
  ExpectAllNear(Vec(values.grad()), want_grad, 1e-12, "value loss grad");
}

TEST(PolicyLossInputTest, BadInputsFailNamingTheField) {
  ref::Batch b = RandomBatch(3, 4, 17);
  Tensors t = ToTensors(b);
  auto loss = MakeLoss("{name: cispo, eps_high: 0.28}");
  EXPECT_NE(ErrorOf([&] { loss->Compute({t.logp, t.old_logp.narrow(1, 0, 3), t.adv, t.mask, std::nullopt}); })
                .find("cispo: old_logp has shape [3, 3], expected [3, 4]"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { loss->Compute({t.logp, t.old_logp, t.adv, t.mask.to(torch::kLong), std::nullopt}); })
                .find("response_mask must be bool"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { loss->Compute({t.logp, t.old_logp.to(torch::kFloat), t.adv, t.mask, std::nullopt}); })
                .find("old_logp dtype"),
            std::string::npos);
  // NaN / inf on a response token is an error ...
  torch::Tensor bad_old = t.old_logp.clone();
  bad_old[0][0] = std::nan("");
  EXPECT_NE(ErrorOf([&] { loss->Compute({t.logp, bad_old, t.adv, t.mask, std::nullopt}); })
                .find("old_logp has 1 non-finite value(s) on response tokens"),
            std::string::npos);
  torch::Tensor bad_adv = t.adv.clone();
  bad_adv[0][0] = std::numeric_limits<double>::infinity();
  EXPECT_NE(ErrorOf([&] { loss->Compute({t.logp, t.old_logp, bad_adv, t.mask, std::nullopt}); })
                .find("advantages has 1 non-finite"),
            std::string::npos);
  // ... while garbage in padding neither errors nor leaks into values or gradients.
  torch::Tensor pad_old = t.old_logp.clone(), pad_adv = t.adv.clone();
  pad_old.masked_fill_(t.mask.logical_not(), std::nan(""));
  pad_adv.masked_fill_(t.mask.logical_not(), std::numeric_limits<double>::infinity());
  PolicyLossOutput out = loss->Compute({t.logp, pad_old, pad_adv, t.mask, std::nullopt});
  Aggregate(out.per_token_loss, t.mask, {}, {20, 1}).backward();
  EXPECT_TRUE(torch::isfinite(out.per_token_loss).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(t.logp.grad()).all().item<bool>());
}

TEST(PolicyLossRegistryTest, UnknownNameListsKnownNames) {
  auto r = PolicyLossRegistry().CreateFromBlock(Yaml("{name: cispoo}"), "algorithm.policy_loss");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "algorithm.policy_loss.name: unknown policy_loss 'cispoo'; known: cispo, gspo, ppo_clip, reinforce");
  auto missing = PolicyLossRegistry().CreateFromBlock(Yaml("{eps_high: 1}"), "algorithm.policy_loss");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("algorithm.policy_loss.name: missing required key"), std::string::npos);
}

TEST(PolicyLossRegistryTest, EachLossValidatesItsOwnKnobsNamingTheKey) {
  auto err = [](const std::string& yaml) {
    auto r = PolicyLossRegistry().CreateFromBlock(Yaml(yaml), "algorithm.policy_loss");
    return r.ok() ? std::string("OK") : r.status().message();
  };
  EXPECT_EQ(err("{name: cispo, eps_high: 0}"), "algorithm.policy_loss.eps_high: expected a finite number > 0, got 0");
  EXPECT_EQ(err("{name: cispo, eps_high: -1}"), "algorithm.policy_loss.eps_high: expected a finite number > 0, got -1");
  EXPECT_NE(err("{name: cispo, eps_high: nan}").find("algorithm.policy_loss.eps_high: expected a finite number > 0"),
            std::string::npos);
  EXPECT_NE(err("{name: cispo, eps_high: .inf}").find("algorithm.policy_loss.eps_high"), std::string::npos);
  EXPECT_EQ(err("{name: cispo}"), "algorithm.policy_loss.eps_high: missing required key");
  EXPECT_NE(err("{name: cispo, eps_high: 0.2, clip_convention: absolute}")
                .find("algorithm.policy_loss.eps_high: with clip_convention: absolute, eps_high IS the cap"),
            std::string::npos);
  EXPECT_NE(err("{name: cispo, eps_high: 4, clip_convention: relative}").find("algorithm.policy_loss.clip_convention"),
            std::string::npos);
  EXPECT_NE(err("{name: cispo, eps_high: 4, eps_low: -0.1}").find("algorithm.policy_loss.eps_low"), std::string::npos);
  EXPECT_NE(err("{name: cispo, eps_hgih: 4, eps_high: 4}").find("algorithm.policy_loss.eps_hgih: unknown key"),
            std::string::npos);
  // CISPO's knobs are not PPO's and vice versa.
  EXPECT_NE(err("{name: ppo_clip, unified_mask: true}").find("algorithm.policy_loss.unified_mask: unknown key"),
            std::string::npos);
  EXPECT_NE(err("{name: cispo, eps_high: 4, dual_clip_c: 3}").find("algorithm.policy_loss.dual_clip_c: unknown key"),
            std::string::npos);
  EXPECT_NE(err("{name: ppo_clip, eps_high: 0}").find("algorithm.policy_loss.eps_high"), std::string::npos);
  EXPECT_NE(err("{name: ppo_clip, dual_clip_c: 0.5}").find("algorithm.policy_loss.dual_clip_c: expected a finite "
                                                           "number > 1"),
            std::string::npos);
  EXPECT_NE(err("{name: gspo, eps_low: 0}").find("algorithm.policy_loss.eps_low"), std::string::npos);
  EXPECT_EQ(err("{name: ppo_clip, eps_low: 0.2, eps_high: 0.28, dual_clip_c: 3}"), "OK");
}

TEST(PolicyLossRegistryTest, DuplicateRegistrationIsAProgrammingError) {
  Registry<PolicyLoss> r("policy_loss");
  r.Register("cispo", &CispoLoss::FromConfig);
  EXPECT_NE(ErrorOf([&] { r.Register("cispo", &CispoLoss::FromConfig); }).find("registered twice"), std::string::npos);
  EXPECT_EQ(r.Names(), std::vector<std::string>{"cispo"});
  EXPECT_EQ(PolicyLossRegistry().Names(), (std::vector<std::string>{"cispo", "gspo", "ppo_clip", "reinforce"}));
}

}  // namespace
}  // namespace lightrl::algorithms
