// The trainer adapter (trainer/algorithm_hooks.h): the recipes in configs/algo/ parse and build
// (or fail with Unimplemented where the trainer lacks a part), the hooks' loss on hand-built
// LossInputs equals the loop reference divided by the GLOBAL count, micro-batch splits sum to
// the whole, and bad inputs / configs fail naming the field or key.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "core/config/config.h"
#include "tests/algorithms/reference.h"
#include "tests/algorithms/test_util.h"
#include "trainer/algorithm_hooks.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {
namespace {

namespace ref = algorithms::ref;
using algorithms::testing::ErrorOf;
using algorithms::testing::ExpectAllNear;
using algorithms::testing::Vec;
using algorithms::testing::Yaml;

std::string SourceDir() {
  const char* dir = std::getenv("LIGHTRL_SOURCE_DIR");
  return dir ? dir : ".";
}

AlgorithmHooks Hooks(const std::string& yaml) {
  auto h = BuildAlgorithmHooks(Yaml(yaml));
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return std::move(h).value();
}

// A micro-batch of samples with the given lengths, in the trainer's packed layout, and the
// same data as a padded reference batch.
struct Packed {
  std::vector<int64_t> lengths;
  std::vector<double> logp, old_logp, rollout_logp, adv;  // [N]
  std::vector<int64_t> token_sample;                      // [N]
  torch::Tensor logp_leaf;                                // [N] fp64, requires grad
  torch::Tensor logits;                                   // [N, V] fp64, requires grad

  LossInputs Inputs(double global_tokens, double global_samples, int64_t first = 0, int64_t count = -1) const {
    if (count < 0) count = static_cast<int64_t>(lengths.size()) - first;
    int64_t begin = 0;
    for (int64_t s = 0; s < first; ++s) begin += lengths[s];
    int64_t n_tok = 0;
    for (int64_t s = first; s < first + count; ++s) n_tok += lengths[s];
    auto d = [&](const std::vector<double>& v) {
      return torch::tensor(std::vector<double>(v.begin() + begin, v.begin() + begin + n_tok), torch::kDouble);
    };
    LossInputs in;
    in.logp = logp_leaf.narrow(0, begin, n_tok);
    in.old_logp = d(old_logp);
    in.rollout_logp = d(rollout_logp);
    in.advantages = d(adv);
    std::vector<int64_t> ts(token_sample.begin() + begin, token_sample.begin() + begin + n_tok);
    for (auto& t : ts) t -= first;
    in.token_sample = torch::tensor(ts, torch::kLong);
    in.sample_lengths =
        torch::tensor(std::vector<int64_t>(lengths.begin() + first, lengths.begin() + first + count), torch::kLong);
    in.logits = logits.narrow(0, begin, n_tok);
    in.global_tokens = global_tokens;
    in.global_samples = global_samples;
    return in;
  }

  // Padded [n, T] reference batch and the flat index of each packed token in it.
  ref::Batch Reference(std::vector<int>* flat) const {
    ref::Batch b;
    b.B = static_cast<int>(lengths.size());
    b.T = static_cast<int>(*std::max_element(lengths.begin(), lengths.end()));
    b.logp.assign(b.B * b.T, 0.0);
    b.old_logp.assign(b.B * b.T, 0.0);
    b.rollout_logp.assign(b.B * b.T, 0.0);
    b.adv.assign(b.B * b.T, 0.0);
    b.mask.assign(b.B * b.T, 0);
    flat->clear();
    int k = 0;
    for (int s = 0; s < b.B; ++s) {
      for (int p = 0; p < lengths[s]; ++p, ++k) {
        const int i = b.at(s, p);
        b.logp[i] = logp[k];
        b.old_logp[i] = old_logp[k];
        b.rollout_logp[i] = rollout_logp[k];
        b.adv[i] = adv[k];
        b.mask[i] = 1;
        flat->push_back(i);
      }
    }
    return b;
  }
};

Packed MakePacked(std::vector<int64_t> lengths, uint32_t seed, int64_t V = 6) {
  Packed p;
  p.lengths = lengths;
  std::mt19937 gen(seed);
  std::normal_distribution<double> n01(0, 1);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> logits;
  for (size_t s = 0; s < lengths.size(); ++s) {
    const double A = n01(gen);
    for (int64_t t = 0; t < lengths[s]; ++t) {
      const double lp = -0.1 - 2.5 * u(gen);
      p.logp.push_back(lp);
      p.old_logp.push_back(lp + 0.6 * n01(gen));
      p.rollout_logp.push_back(p.old_logp.back() + 0.5 * n01(gen));
      p.adv.push_back(A);
      p.token_sample.push_back(static_cast<int64_t>(s));
      for (int64_t v = 0; v < V; ++v) logits.push_back(2 * n01(gen));
    }
  }
  const int64_t N = static_cast<int64_t>(p.logp.size());
  p.logp_leaf = torch::tensor(p.logp, torch::kDouble).requires_grad_(true);
  p.logits = torch::tensor(logits, torch::kDouble).view({N, V}).clone().requires_grad_(true);
  return p;
}

std::vector<double> Gather(const std::vector<double>& padded, const std::vector<int>& flat) {
  std::vector<double> out;
  for (int i : flat) out.push_back(padded[i]);
  return out;
}

// ---- recipes ---------------------------------------------------------------------------------

TEST(AlgorithmRecipesTest, EveryRecipeParsesAndBuilds) {
  for (const std::string name : {"cispo", "dapo", "grpo", "ppo"}) {
    const std::string path = SourceDir() + "/configs/algo/" + name + ".yaml";
    auto root = LoadConfigFile(path);
    ASSERT_TRUE(root.ok()) << root.status().ToString();
    ASSERT_TRUE((*root)["algorithm"].IsMap()) << path << ": top level must be `algorithm:`";
    auto recipe = algorithms::ParseRecipe((*root)["algorithm"]);
    ASSERT_TRUE(recipe.ok()) << path << ": " << recipe.status().ToString();
    EXPECT_EQ(recipe->name, name);
    auto hooks = BuildAlgorithmHooks((*root)["algorithm"]);
    if (name == "ppo") {
      // PPO requests a critic: per-token advantages from values, the recipe's critic knobs.
      ASSERT_TRUE(hooks.ok()) << path << ": " << hooks.status().ToString();
      EXPECT_TRUE(hooks->needs_critic);
      EXPECT_TRUE(hooks->loss && hooks->token_advantages);
      EXPECT_FALSE(hooks->advantages);
      EXPECT_DOUBLE_EQ(hooks->critic_value_clip, 0.5);
      EXPECT_DOUBLE_EQ(hooks->critic_lr, 1e-5);
      EXPECT_TRUE(hooks->critic_init_from_policy);
      EXPECT_EQ(hooks->name, name);
    } else {
      EXPECT_FALSE(hooks->needs_critic);
      ASSERT_TRUE(hooks.ok()) << path << ": " << hooks.status().ToString();
      EXPECT_TRUE(hooks->loss && hooks->advantages);
      EXPECT_EQ(hooks->name, name);
    }
    // Besides `algorithm:`, a recipe may only carry the rollout/reward settings its algorithm is
    // defined with (DAPO's lengths and overlong shaping), in the trainer's key names.
    for (const auto& kv : *root) {
      const std::string key = kv.first.as<std::string>();
      EXPECT_TRUE(key == "algorithm" || key == "rollout" || key == "reward") << path << ": top-level key " << key;
    }
    if (name == "dapo") {
      EXPECT_EQ((*root)["rollout"]["max_response_len"].as<int64_t>(), 20480);
      EXPECT_EQ((*root)["reward"]["overlong"]["buffer_len"].as<int64_t>(), 4096);
      EXPECT_EQ((*root)["reward"]["overlong"]["penalty_factor"].as<double>(), 1.0);
      EXPECT_FALSE((*root)["reward"]["overlong"]["filter"].as<bool>());
    }
  }
}

TEST(AlgorithmRecipesTest, CispoRecipeIsPaperFaithful) {
  auto root = LoadConfigFile(SourceDir() + "/configs/algo/cispo.yaml");
  ASSERT_TRUE(root.ok());
  auto recipe = algorithms::ParseRecipe((*root)["algorithm"]);
  ASSERT_TRUE(recipe.ok()) << recipe.status().ToString();
  EXPECT_EQ(recipe->policy_loss_name, "cispo");
  auto* cispo = dynamic_cast<const algorithms::CispoLoss*>(recipe->policy_loss.get());
  ASSERT_NE(cispo, nullptr);
  EXPECT_EQ(cispo->options().lo, 0.0);  // no lower bound
  EXPECT_EQ(cispo->options().hi, 5.0);
  EXPECT_FALSE(cispo->options().eps_low.has_value());
  EXPECT_EQ(recipe->aggregation.mode, algorithms::LossAggregation::kTokenMeanGlobal);
  EXPECT_EQ(recipe->kl.coef, 0.0);
  EXPECT_EQ(recipe->advantage_name, "grpo");
  AlgorithmHooks h = *BuildAlgorithmHooks((*root)["algorithm"]);
  EXPECT_TRUE(h.recompute_old_logprobs);
  EXPECT_TRUE(h.dynamic_sampling);
  EXPECT_EQ(h.max_gen_batches, 10);
  EXPECT_EQ(h.updates_per_rollout, 16);
  // The start-up description states the resolved clamp, normaliser and old-logp source.
  EXPECT_NE(h.description.find("clip(r, 0, 5)"), std::string::npos) << h.description;
  EXPECT_NE(h.description.find("token_mean_global"), std::string::npos);
  EXPECT_NE(h.description.find("old_logprob_source = recompute"), std::string::npos);
}

// ---- the loss adapter --------------------------------------------------------------------------

TEST(AlgorithmHooksLossTest, EqualsReferenceOverGlobalCountWithMetricSums) {
  AlgorithmHooks h = Hooks("{policy_loss: {name: cispo, eps_high: 0.28, eps_low: 0.2}}");
  Packed p = MakePacked({3, 1, 4, 2}, 3);
  const double global_tokens = 23, global_samples = 9;  // the other ranks hold the rest
  std::map<std::string, double> sums;
  torch::Tensor loss = h.loss(p.Inputs(global_tokens, global_samples), &sums);
  ASSERT_EQ(loss.dim(), 0);
  loss.backward();
  std::vector<int> flat;
  ref::Batch b = p.Reference(&flat);
  ref::PerToken want = ref::Cispo(b, 0.8, 1.28, false);
  double total = 0;
  for (double l : want.loss) total += l;
  EXPECT_NEAR(loss.item<double>(), total / global_tokens, 1e-12);
  std::vector<double> grad = Gather(want.grad, flat);
  for (double& g : grad) g /= global_tokens;
  ExpectAllNear(Vec(p.logp_leaf.grad()), grad, 1e-12, "d loss / d logp");
  // Metric token sums under the declared names.
  double above = 0, below = 0, entropy = 0;
  for (size_t k = 0; k < p.logp.size(); ++k) {
    const double r = std::exp(p.logp[k] - p.old_logp[k]);
    above += r > 1.28;
    below += r < 0.8;
    const torch::Tensor row = p.logits[k].detach();
    entropy += ref::Entropy(Vec(row));
  }
  EXPECT_DOUBLE_EQ(sums.at("actor/clip_frac_high"), above);
  EXPECT_DOUBLE_EQ(sums.at("actor/clip_frac_low"), below);
  EXPECT_NEAR(sums.at("actor/entropy"), entropy, 1e-9);
  for (const auto& [name, v] : sums) {
    EXPECT_NE(std::find(h.metric_names.begin(), h.metric_names.end(), name), h.metric_names.end()) << name;
  }
  // A second micro-batch adds to the sums.
  h.loss(p.Inputs(global_tokens, global_samples), &sums);
  EXPECT_DOUBLE_EQ(sums.at("actor/clip_frac_high"), 2 * above);
}

TEST(AlgorithmHooksLossTest, EntropyMetricOverMoreTokensThanOneChunk) {
  AlgorithmHooks h = Hooks("{policy_loss: {name: reinforce}}");
  Packed p = MakePacked({700, 650, 3}, 4);  // N = 1353 > the 1024-row chunk
  std::map<std::string, double> sums;
  h.loss(p.Inputs(1353, 3), &sums);
  double entropy = 0;
  for (int64_t k = 0; k < 1353; ++k) entropy += ref::Entropy(Vec(p.logits[k].detach()));
  EXPECT_NEAR(sums.at("actor/entropy"), entropy, 1e-8 * entropy);
}

TEST(AlgorithmHooksLossTest, MicroBatchesSumToTheWholeForEveryAggregation) {
  for (const std::string agg :
       {"token_mean_global", "seq_mean_token_mean", "seq_mean_token_sum",
        "{mode: seq_mean_token_sum_norm, norm_constant: 8}"}) {
    AlgorithmHooks h = Hooks("{policy_loss: {name: ppo_clip, eps_low: 0.2, eps_high: 0.28}, loss_aggregation: " +
                             agg + ", entropy_coef: 0.01, is_correction: {level: sequence, mode: truncate, cap: 2}}");
    Packed whole = MakePacked({3, 5, 1, 4, 2}, 5);
    Packed split = MakePacked({3, 5, 1, 4, 2}, 5);
    const double T = 15 + 6, S = 7;
    torch::Tensor single = h.loss(whole.Inputs(T, S), nullptr);
    single.backward();
    double sum = 0;
    for (auto [first, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 2}, {4, 1}}) {
      torch::Tensor part = h.loss(split.Inputs(T, S, first, count), nullptr);
      part.backward();
      sum += part.item<double>();
    }
    EXPECT_NEAR(sum, single.item<double>(), 1e-14) << agg;
    ExpectAllNear(Vec(split.logp_leaf.grad()), Vec(whole.logp_leaf.grad()), 1e-13, agg + " logp grad");
    ExpectAllNear(Vec(split.logits.grad()), Vec(whole.logits.grad()), 1e-13, agg + " logits grad");
  }
}

TEST(AlgorithmHooksLossTest, SeqMeanTokenMeanAndEntropyBonusMatchReference) {
  AlgorithmHooks h = Hooks(
      "{policy_loss: {name: reinforce}, loss_aggregation: seq_mean_token_mean, entropy_coef: 0.05}");
  Packed p = MakePacked({2, 4, 3}, 8);
  const double S = 5;
  torch::Tensor loss = h.loss(p.Inputs(30, S), nullptr);
  std::vector<int> flat;
  ref::Batch b = p.Reference(&flat);
  ref::PerToken pg = ref::Reinforce(b);
  const std::vector<double> w = ref::AggWeights(b, ref::Agg::kSeqMeanTokenMean, 30, S);
  double want = ref::Dot(w, pg.loss);
  for (size_t k = 0; k < flat.size(); ++k) want -= 0.05 * w[flat[k]] * ref::Entropy(Vec(p.logits[k].detach()));
  EXPECT_NEAR(loss.item<double>(), want, 1e-12);
}

TEST(AlgorithmHooksLossTest, ImportanceCorrectionIsApplied) {
  AlgorithmHooks h = Hooks(
      "{policy_loss: {name: cispo, eps_high: 4}, is_correction: {level: token, mode: mask, cap: 1.5}}");
  Packed p = MakePacked({4, 3}, 9);
  std::map<std::string, double> sums;
  torch::Tensor loss = h.loss(p.Inputs(7, 2), &sums);
  std::vector<int> flat;
  ref::Batch b = p.Reference(&flat);
  const std::vector<double> c = ref::IsWeights(b, false, true, 1.5);
  ref::PerToken want = ref::Cispo(b, 0.0, 5.0, false, &c);
  double total = 0, csum = 0, zeroed = 0;
  for (double l : want.loss) total += l;
  for (int i : flat) {
    csum += c[i];
    zeroed += c[i] == 0.0;
  }
  EXPECT_NEAR(loss.item<double>(), total / 7, 1e-12);
  EXPECT_NEAR(sums.at("actor/is_weight_mean"), csum, 1e-12);
  EXPECT_DOUBLE_EQ(sums.at("actor/is_zeroed_frac"), zeroed);
  EXPECT_GT(zeroed, 0);
}

TEST(AlgorithmHooksLossTest, BadLossInputsFailNamingTheField) {
  AlgorithmHooks h = Hooks("{policy_loss: {name: cispo, eps_high: 4}}");
  Packed p = MakePacked({3, 2}, 10);
  LossInputs in = p.Inputs(5, 2);
  in.sample_lengths = torch::tensor(std::vector<int64_t>{3, 3}, torch::kLong);
  EXPECT_NE(ErrorOf([&] { h.loss(in, nullptr); }).find("sample_lengths sum to 6 but there are N = 5 tokens"),
            std::string::npos);
  in = p.Inputs(5, 2);
  in.token_sample = torch::tensor(std::vector<int64_t>{0, 0, 0, 0, 1}, torch::kLong);
  EXPECT_NE(ErrorOf([&] { h.loss(in, nullptr); }).find("differ from sample_lengths"), std::string::npos);
  in = p.Inputs(5, 2);
  in.token_sample = torch::tensor(std::vector<int64_t>{0, 1, 0, 0, 1}, torch::kLong);
  EXPECT_NE(ErrorOf([&] { h.loss(in, nullptr); }).find("must be contiguous"), std::string::npos);
  in = p.Inputs(5, 2);
  in.old_logp = in.old_logp.narrow(0, 0, 4);
  EXPECT_NE(ErrorOf([&] { h.loss(in, nullptr); }).find("LossInputs.old_logp must be [N] = [5], got [4]"),
            std::string::npos);
  in = p.Inputs(4, 2);  // a global count smaller than the micro-batch is a caller bug
  EXPECT_NE(ErrorOf([&] { h.loss(in, nullptr); }).find("global_tokens = 4"), std::string::npos);
  in = p.Inputs(5, 2);
  in.advantages = in.advantages.clone();
  in.advantages[1] = std::nan("");
  EXPECT_NE(ErrorOf([&] { h.loss(in, nullptr); }).find("advantages has 1 non-finite"), std::string::npos);
}

// ---- advantages hook ---------------------------------------------------------------------------

TEST(AlgorithmHooksAdvantageTest, GrpoTableAndDrGrpo) {
  const std::vector<double> rewards = {1, 0, 1, 0, 1, 1, 0.5};
  const std::vector<int64_t> groups = {4, 4, 4, 4, 2, 2, 9};
  const double s = std::sqrt(1.0 / 3.0);
  ExpectAllNear(Hooks("{policy_loss: {name: reinforce}}").advantages(rewards, groups),
                {0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0, 0, 0.5 / (1 + 1e-6)},
                1e-12, "grpo");
  ExpectAllNear(
      Hooks("{advantage: {estimator: grpo, norm: none}, policy_loss: {name: reinforce}}").advantages(rewards, groups),
      {0.5, -0.5, 0.5, -0.5, 0, 0, 0.5}, 1e-12, "dr grpo");
  ExpectAllNear(Hooks("{advantage: {estimator: rloo}, policy_loss: {name: reinforce}}").advantages(rewards, groups),
                ref::Rloo(rewards, groups), 1e-12, "rloo");
}

// ---- config errors -----------------------------------------------------------------------------

TEST(AlgorithmHooksConfigTest, ErrorsNameTheKey) {
  auto err = [](const std::string& yaml) {
    auto h = BuildAlgorithmHooks(Yaml(yaml));
    return h.ok() ? std::string("OK") : h.status().ToString();
  };
  // KL to the reference policy is wired (trainer.h): both forms build.
  EXPECT_EQ(err("{policy_loss: {name: cispo, eps_high: 4}, kl: {coef: 0.001}}"), "OK");
  EXPECT_EQ(err("{policy_loss: {name: cispo, eps_high: 4}, kl: {coef: 0.01, in_reward: true}}"), "OK");
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, kl: {coef: 0.01, estimator: k9}}").find("algorithm.kl.estimator"),
            std::string::npos);
  EXPECT_EQ(err("{policy_loss: {name: cispo, eps_high: 0}}"),
            "INVALID_ARGUMENT: algorithm.policy_loss.eps_high: expected a finite number > 0, got 0");
  EXPECT_EQ(err("{policy_loss: {name: ppo}}"),
            "INVALID_ARGUMENT: algorithm.policy_loss.name: unknown policy_loss 'ppo'; known: cispo, gspo, ppo_clip, "
            "reinforce");
  EXPECT_NE(err("{name: x}").find("algorithm.policy_loss: missing required section"), std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, old_logprob_source: rollout, is_correction: {cap: 2}}")
                .find("algorithm.is_correction: cannot be combined with old_logprob_source: rollout"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, old_logprob_source: engine}")
                .find("algorithm.old_logprob_source: expected 'recompute' or 'rollout'"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, loss_aggregation: token_mean}")
                .find("algorithm.loss_aggregation: unknown loss aggregation 'token_mean'"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, loss_aggregation: seq_mean_token_sum_norm}")
                .find("algorithm.loss_aggregation.norm_constant: required"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, updates_per_rollout: 0}")
                .find("algorithm.updates_per_rollout: expected >= 1"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, dynamic_sampling: {enable: true}}")
                .find("algorithm.dynamic_sampling.enable: unknown key"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, dynamic_sampling: {max_gen_batches: -1}}")
                .find("algorithm.dynamic_sampling.max_gen_batches"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, entropy_coef: nan}").find("algorithm.entropy_coef"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, kl: {estimator: k5}}").find("algorithm.kl.estimator"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, is_correction: {cap: 0}}").find("algorithm.is_correction.cap"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: cispo, eps_high: 4}, polcy: 1}").find("algorithm.polcy: unknown key"),
            std::string::npos);
  EXPECT_NE(err("{advantage: {estimator: gae}, policy_loss: {name: ppo_clip}}").find("algorithm.critic: required"),
            std::string::npos);
  EXPECT_NE(err("{policy_loss: {name: ppo_clip}, critic: {value_clip: 0.5}}").find("algorithm.critic: advantage "
                                                                                  "estimator 'grpo' does not use a "
                                                                                  "critic"),
            std::string::npos);
  EXPECT_NE(err("{advantage: {estimator: gae}, policy_loss: {name: ppo_clip}, critic: {init: warm}}")
                .find("algorithm.critic.init: expected 'policy' or 'fresh', got 'warm'"),
            std::string::npos);
  EXPECT_NE(err("[1, 2]").find("algorithm: expected a map"), std::string::npos);
  // A training config without an algorithm block (a yaml-cpp zombie node from a const lookup).
  const YAML::Node root = Yaml("{trainer: {total_steps: 1}}");
  auto missing = BuildAlgorithmHooks(root["algorithm"]);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "algorithm: missing required section");
  // No advantage block: the default grpo estimator.
  EXPECT_EQ(err("{policy_loss: {name: cispo, eps_high: 4}}"), "OK");
  EXPECT_EQ(err("{policy_loss: {name: cispo, eps_high: 4}, dynamic_sampling: {enabled: true, max_gen_batches: 0}}"),
            "OK");
}

// ---- KL to the reference policy (trainer/algorithm_hooks.h: the loss closure's KL term) ------
// The difference to the same recipe without KL must be kl.coef * sum_t k3_t / G (token mean
// over the global token count), value and gradient, against a loop over tokens in fp64.

YAML::Node CispoBlock() {
  YAML::Node root = YAML::LoadFile(SourceDir() + "/configs/algo/cispo.yaml");
  return YAML::Clone(root["algorithm"]);
}

struct KlInputs {
  LossInputs in;
  torch::Tensor logp;  // [N] fp32 leaf
};

// Two samples of 3 and 4 tokens inside a mini-batch of 10 global tokens.
KlInputs MakeKlInputs() {
  torch::manual_seed(3);
  KlInputs x;
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

  KlInputs a = MakeKlInputs();
  std::map<std::string, double> sums;
  torch::Tensor loss_kl = kl_hooks->loss(a.in, &sums);
  loss_kl.backward();
  const torch::Tensor grad_kl = a.logp.grad().clone();
  KlInputs b = MakeKlInputs();
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
  KlInputs c = MakeKlInputs();
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
  KlInputs a = MakeKlInputs(), b = MakeKlInputs();
  EXPECT_EQ(hooks->loss(a.in, nullptr).item<double>(), plain->loss(b.in, nullptr).item<double>());
}

TEST(AlgorithmHooksTest, GaeTokenPenaltiesEnterTheReturns) {
  // PPO recipe (GAE, gamma = lam = 1): returns_t = sum_{k >= t} r_k with r_k the per-token
  // penalties plus the outcome score on the last token (loop reference below).
  YAML::Node root = YAML::LoadFile(SourceDir() + "/configs/algo/ppo.yaml");
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
