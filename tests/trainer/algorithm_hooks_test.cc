// The trainer's loss closure (trainer/algorithm_hooks.h) with the KL term to the reference
// policy: the difference to the same recipe without KL must be kl.coef * sum_t k3_t / G (token
// mean over the global token count), value and gradient, against a loop over tokens in fp64.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <map>
#include <string>

#include "trainer/algorithm_hooks.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {
namespace {

YAML::Node CispoBlock() {
  YAML::Node root = YAML::LoadFile(std::string(LIGHTRL_SOURCE_DIR_DEFAULT) + "/configs/algo/cispo.yaml");
  return YAML::Clone(root["algorithm"]);
}

struct Inputs {
  LossInputs in;
  torch::Tensor logp;  // [N] fp32 leaf
};

// Two samples of 3 and 4 tokens inside a mini-batch of 10 global tokens.
Inputs MakeInputs() {
  torch::manual_seed(3);
  Inputs x;
  const int64_t N = 7;
  x.logp = (-torch::rand({N}) * 2.0).requires_grad_(true);             // [N] fp32
  x.in.logp = x.logp;
  x.in.old_logp = x.logp.detach() + 0.05 * torch::randn({N});           // [N] fp32
  x.in.rollout_logp = x.in.old_logp.clone();                            // [N] fp32
  x.in.ref_logp = x.logp.detach() + 0.3 * torch::randn({N});            // [N] fp32
  x.in.advantages = torch::randn({N});                                  // [N] fp32
  x.in.token_sample = torch::tensor({0, 0, 0, 1, 1, 1, 1}, torch::kLong);  // [N] int64
  x.in.sample_lengths = torch::tensor({3, 4}, torch::kLong);              // [n] int64
  x.in.global_tokens = 10;
  x.in.global_samples = 3;
  return x;
}

TEST(AlgorithmHooksTest, KlLossTermIsCoefTimesTokenMeanOfK3WithItsGradient) {
  const double coef = 0.2;
  YAML::Node with_kl = CispoBlock();
  with_kl["kl"]["coef"] = coef;
  with_kl["kl"]["estimator"] = "k3";
  StatusOr<AlgorithmHooks> kl_hooks = BuildAlgorithmHooks(with_kl, "algorithm");
  StatusOr<AlgorithmHooks> plain_hooks = BuildAlgorithmHooks(CispoBlock(), "algorithm");
  ASSERT_TRUE(kl_hooks.ok()) << kl_hooks.status().ToString();
  ASSERT_TRUE(plain_hooks.ok()) << plain_hooks.status().ToString();
  EXPECT_EQ(kl_hooks->kl_coef, coef);
  EXPECT_FALSE(kl_hooks->kl_in_reward);

  Inputs a = MakeInputs();
  std::map<std::string, double> sums;
  torch::Tensor loss_kl = kl_hooks->loss(a.in, &sums);
  loss_kl.backward();
  const torch::Tensor grad_kl = a.logp.grad().clone();
  Inputs b = MakeInputs();
  torch::Tensor loss_plain = plain_hooks->loss(b.in, nullptr);
  loss_plain.backward();
  const torch::Tensor grad_plain = b.logp.grad().clone();

  // Loop reference in fp64: k3 = exp(ref - logp) - (ref - logp) - 1, d k3 / d logp = 1 - exp(ref - logp).
  double k3_sum = 0;
  std::vector<double> dk(7);
  for (int64_t t = 0; t < 7; ++t) {
    const double d = a.in.ref_logp[t].item<double>() - a.logp[t].item<double>();
    k3_sum += std::exp(d) - d - 1;
    dk[t] = coef * (1 - std::exp(d)) / a.in.global_tokens;
  }
  EXPECT_NEAR(loss_kl.item<double>() - loss_plain.item<double>(), coef * k3_sum / a.in.global_tokens, 1e-6);
  for (int64_t t = 0; t < 7; ++t) {
    EXPECT_NEAR((grad_kl[t] - grad_plain[t]).item<double>(), dk[t], 1e-6) << "token " << t;
  }
  ASSERT_TRUE(sums.count("actor/kl"));
  EXPECT_NEAR(sums["actor/kl"], k3_sum, 1e-5);
  bool listed = false;
  for (const auto& n : kl_hooks->metric_names) listed |= n == "actor/kl";
  EXPECT_TRUE(listed) << "actor/kl must be in metric_names (the all-reduce layout)";

  // The reference log-probs are required.
  Inputs c = MakeInputs();
  c.in.ref_logp = torch::Tensor();
  try {
    kl_hooks->loss(c.in, nullptr);
    FAIL() << "expected an error for missing ref_logp";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("ref_logp"), std::string::npos) << e.what();
  }
}

TEST(AlgorithmHooksTest, KlInRewardLeavesTheLossAlone) {
  YAML::Node in_reward = CispoBlock();
  in_reward["kl"]["coef"] = 0.5;
  in_reward["kl"]["in_reward"] = true;
  StatusOr<AlgorithmHooks> hooks = BuildAlgorithmHooks(in_reward, "algorithm");
  StatusOr<AlgorithmHooks> plain = BuildAlgorithmHooks(CispoBlock(), "algorithm");
  ASSERT_TRUE(hooks.ok()) << hooks.status().ToString();
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(hooks->kl_in_reward);
  Inputs a = MakeInputs(), b = MakeInputs();
  EXPECT_EQ(hooks->loss(a.in, nullptr).item<double>(), plain->loss(b.in, nullptr).item<double>());
}

TEST(AlgorithmHooksTest, GaeTokenPenaltiesEnterTheReturns) {
  // PPO recipe (GAE, gamma = lam = 1): returns_t = sum_{k >= t} r_k with r_k the per-token
  // penalties plus the outcome score on the last token (loop reference below).
  YAML::Node root = YAML::LoadFile(std::string(LIGHTRL_SOURCE_DIR_DEFAULT) + "/configs/algo/ppo.yaml");
  YAML::Node block = YAML::Clone(root["algorithm"]);
  block["kl"]["coef"] = 0.1;
  block["kl"]["in_reward"] = true;
  StatusOr<AlgorithmHooks> hooks = BuildAlgorithmHooks(block, "algorithm");
  ASSERT_TRUE(hooks.ok()) << hooks.status().ToString();
  ASSERT_TRUE(hooks->needs_critic);
  const std::vector<double> rewards = {1.0, 0.0};
  const std::vector<std::vector<float>> values = {{0.1f, 0.2f, 0.3f}, {0.5f, -0.5f}};
  const std::vector<std::vector<float>> penalties = {{-0.01f, -0.02f, -0.03f}, {-0.2f, 0.1f}};
  AlgorithmHooks::TokenAdvantages with = hooks->token_advantages(rewards, values, penalties);
  AlgorithmHooks::TokenAdvantages without = hooks->token_advantages(rewards, values, {});
  for (size_t i = 0; i < rewards.size(); ++i) {
    double tail = rewards[i], tail_plain = rewards[i];
    for (size_t t = values[i].size(); t-- > 0;) {
      tail += penalties[i][t];
      EXPECT_NEAR(with.returns[i][t], tail, 1e-5) << "sample " << i << " token " << t;
      EXPECT_NEAR(without.returns[i][t], tail_plain, 1e-5) << "sample " << i << " token " << t;
    }
  }
}

}  // namespace
}  // namespace lightrl::trainer
