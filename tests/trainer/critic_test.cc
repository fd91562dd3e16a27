// PPO's critic (trainer/critic.h): per-token values against a direct unpacked forward, one
// Update step against a slow loop reference of the clipped value loss + autograd, GAE
// advantages written into samples against a reverse-loop reference, checkpoint round trip,
// and an in-process 2-step PPO Trainer run whose value loss decreases on a fixed batch.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "trainer/algorithm_hooks.h"
#include "trainer/critic.h"
#include "trainer/trainer.h"

#include "tests/trainer/small_model.h"

namespace lightrl::trainer {
namespace {

model::ModelConfig SmallConfig() { return SmallModelConfig(4); }

model::HybridModel MakePolicy() {
  model::HybridModel m(SmallConfig());
  m->InitWeights(7);
  return m;
}

std::vector<Sample> MakeSamples(int64_t vocab, int n) {
  std::vector<Sample> samples;
  auto gen = at::detail::createCPUGenerator(5);
  for (int i = 0; i < n; ++i) {
    Sample s;
    s.sample_id = i;
    s.group = i / 2;
    const int64_t P = 2 + i % 3, R = 1 + (i * 3) % 6;
    torch::Tensor ids = at::randint(vocab, {P + R}, gen, torch::kLong);
    for (int64_t k = 0; k < P; ++k) s.prompt_ids.push_back(ids[k].item<int64_t>());
    for (int64_t k = P; k < P + R; ++k) s.response_ids.push_back(ids[k].item<int64_t>());
    s.reward = (i % 3 == 0) ? 1.0 : (i % 3 == 1 ? 0.0 : -0.5);
    samples.push_back(s);
  }
  return samples;
}

// Oracle: the value model on one unpacked sequence; values at the positions P-1 .. P+R-2 (the
// positions whose next token is a response token). Differentiable.
torch::Tensor DirectValues(model::HybridModel& m, const Sample& s) {
  std::vector<int64_t> ids = s.prompt_ids;
  ids.insert(ids.end(), s.response_ids.begin(), s.response_ids.end());
  torch::Tensor input = torch::tensor(ids, torch::kLong).unsqueeze(0);  // [1, T]
  torch::Tensor v = m->forward(input).logits[0];                         // [T] fp32
  const int64_t P = static_cast<int64_t>(s.prompt_ids.size()), R = static_cast<int64_t>(s.response_ids.size());
  return v.narrow(0, P - 1, R);  // [R]
}

TEST(CriticTest, ValueModelInitialisedFromThePolicyOrFresh) {
  model::HybridModel policy = MakePolicy();
  model::HybridModel from_policy = MakeValueModel(policy, /*init_from_policy=*/true, 3);
  model::HybridModel fresh = MakeValueModel(policy, /*init_from_policy=*/false, 3);
  EXPECT_EQ(from_policy->head_type(), model::HeadType::kValue);
  const auto pp = policy->named_parameters();
  const auto fp = fresh->named_parameters();
  int copied = 0, differ = 0;
  for (const auto& item : from_policy->named_parameters()) {
    const torch::Tensor* p = pp.find(item.key());
    if (item.key().rfind("value_head.", 0) == 0) {
      EXPECT_EQ(p, nullptr);
      EXPECT_GT(item.value().abs().sum().item<double>(), 0) << "value head left at zero";
      continue;
    }
    ASSERT_NE(p, nullptr) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), *p)) << item.key();
    ++copied;
    if (!torch::equal(fp[item.key()], *p)) ++differ;
  }
  EXPECT_EQ(copied + 1, static_cast<int>(from_policy->named_parameters().size()));
  EXPECT_EQ(pp.find("lm_head.weight") != nullptr, true);
  EXPECT_GT(differ, 0) << "init: fresh must not copy the policy";
}

TEST(CriticTest, ValuesEqualADirectForwardAtThePredictingPositions) {
  model::HybridModel policy = MakePolicy();
  LocalCollective collective;
  OptimConfig optim;
  Critic critic(MakeValueModel(policy, true, 3), optim, 10, 0.5, &collective);
  std::vector<Sample> samples = MakeSamples(SmallConfig().vocab_size, 7);
  std::vector<int64_t> indices = {0, 2, 3, 5, 6};
  // A small budget: several packed micro-batches.
  const int64_t tokens = critic.ComputeValues(samples, indices, /*micro_batch_tokens=*/12);
  int64_t expected_tokens = 0;
  torch::NoGradGuard no_grad;
  for (int64_t i : indices) {
    const Sample& s = samples[i];
    expected_tokens += static_cast<int64_t>(s.response_ids.size());
    ASSERT_EQ(s.values.size(), s.response_ids.size()) << "sample " << i;
    torch::Tensor want = DirectValues(critic.model(), s);
    for (size_t t = 0; t < s.values.size(); ++t)
      EXPECT_NEAR(s.values[t], want[t].item<float>(), 1e-5) << "sample " << i << " token " << t;
  }
  EXPECT_EQ(tokens, expected_tokens);
  EXPECT_TRUE(samples[1].values.empty());  // not in indices
}

TEST(CriticTest, OneUpdateEqualsTheLoopReferenceWithAutograd) {
  model::HybridModel policy = MakePolicy();
  LocalCollective collective;
  OptimConfig optim;
  optim.lr = 1e-3;
  optim.warmup_steps = 0;
  optim.grad_clip = 0;  // the gradient after Update is then the unclipped reference gradient
  const double clip = 0.05;
  Critic critic(MakeValueModel(policy, true, 3), optim, 10, clip, &collective);
  model::HybridModel reference = MakeValueModel(policy, true, 3);  // same weights
  std::vector<Sample> samples = MakeSamples(SmallConfig().vocab_size, 6);
  std::vector<int64_t> order = {0, 1, 2, 3, 4, 5};
  critic.ComputeValues(samples, order, 4096);
  // Old values shifted so that both loss branches occur; returns away from the values.
  for (auto& s : samples) {
    for (size_t t = 0; t < s.values.size(); ++t) {
      s.values[t] += (t % 2 == 0 ? 0.2f : -0.01f);
      s.returns.push_back(static_cast<float>(s.reward) + 0.1f * static_cast<float>(t));
    }
  }
  // Slow reference: per-token loop, sum / total tokens.
  torch::Tensor loss_ref = torch::zeros({});
  double tokens = 0, clipped = 0;
  for (int64_t i : order) {
    const Sample& s = samples[i];
    torch::Tensor v = DirectValues(reference, s);
    for (size_t t = 0; t < s.values.size(); ++t) {
      const double old_v = s.values[t], ret = s.returns[t];
      torch::Tensor vt = v[t];
      torch::Tensor unclipped = (vt - ret).pow(2);
      torch::Tensor vclip = torch::clamp(vt, old_v - clip, old_v + clip);
      torch::Tensor clipped_loss = (vclip - ret).pow(2);
      const bool use_clipped = clipped_loss.item<double>() > unclipped.item<double>();
      clipped += use_clipped;
      loss_ref = loss_ref + 0.5 * (use_clipped ? clipped_loss : unclipped);
      tokens += 1;
    }
  }
  loss_ref = loss_ref / tokens;
  loss_ref.backward();
  ASSERT_GT(clipped, 0);
  ASSERT_LT(clipped, tokens);

  std::map<std::string, torch::Tensor> before;
  for (const auto& item : critic.model()->named_parameters()) before[item.key()] = item.value().detach().clone();
  StepMetrics m = critic.Update(samples, order, /*updates=*/1, /*micro_batch_tokens=*/10);
  EXPECT_NEAR(m.at("critic/value_loss"), loss_ref.item<double>(), 1e-6);
  EXPECT_DOUBLE_EQ(m.at("critic/clip_frac"), clipped / tokens);
  EXPECT_DOUBLE_EQ(m.at("critic/lr"), 1e-3);
  double norm_sq = 0;
  const auto ref_params = reference->named_parameters();
  for (const auto& item : critic.model()->named_parameters()) {
    const torch::Tensor& g_ref = ref_params[item.key()].grad();
    const torch::Tensor g = item.value().grad();
    ASSERT_TRUE(g.defined()) << item.key();
    torch::Tensor want = g_ref.defined() ? g_ref : torch::zeros_like(g);
    EXPECT_TRUE(torch::allclose(g, want, 1e-4, 1e-7)) << item.key();
    norm_sq += want.pow(2).sum().item<double>();
    // First AdamW step (no weight decay): delta = -lr * g / |g| where g != 0.
    torch::Tensor delta = item.value().detach() - before[item.key()];
    torch::Tensor nz = want.abs() > 1e-9;
    torch::Tensor expect = -1e-3 * torch::sign(want);
    EXPECT_TRUE(torch::allclose(delta.masked_select(nz), expect.masked_select(nz), 1e-3, 1e-8)) << item.key();
  }
  EXPECT_NEAR(m.at("critic/grad_norm"), std::sqrt(norm_sq), 1e-5 * std::sqrt(norm_sq));
  EXPECT_EQ(critic.optimizer().step(), 1);
}

// Reverse-loop GAE (delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1},
// V after the last token = 0, reward on the last token), returns = A + V, then whitening over
// all tokens with the unbiased variance (verl masked_whiten).
TEST(CriticTest, GaeAdvantagesWrittenIntoSamplesEqualTheReverseLoop) {
  YAML::Node block = YAML::Load(
      "{name: ppo, advantage: {estimator: gae, gamma: 0.9, lam: 0.8, whiten: true}, policy_loss: {name: ppo_clip}, "
      "critic: {value_clip: 0.5, lr: 1.0e-4, init: fresh}}");
  auto hooks = BuildAlgorithmHooks(block);
  ASSERT_TRUE(hooks.ok()) << hooks.status().ToString();
  ASSERT_TRUE(hooks->needs_critic);
  EXPECT_FALSE(hooks->critic_init_from_policy);
  EXPECT_DOUBLE_EQ(hooks->critic_lr, 1e-4);
  std::vector<Sample> samples = MakeSamples(40, 6);
  std::vector<int64_t> order = {0, 2, 3, 4, 5};
  for (auto& s : samples)
    for (size_t t = 0; t < s.response_ids.size(); ++t) s.values.push_back(0.3f * std::sin(1.0f + s.sample_id + t));
  WriteTokenAdvantages(*hooks, &samples, order);
  const double gamma = 0.9, lam = 0.8;
  std::vector<std::vector<double>> adv, ret;
  std::vector<double> flat;
  for (int64_t i : order) {
    const Sample& s = samples[i];
    const size_t R = s.response_ids.size();
    std::vector<double> a(R), r(R);
    double next_v = 0, next_a = 0;
    for (size_t k = R; k-- > 0;) {
      const double reward = k + 1 == R ? s.reward : 0.0;
      const double delta = reward + gamma * next_v - s.values[k];
      a[k] = delta + gamma * lam * next_a;
      r[k] = a[k] + s.values[k];
      next_v = s.values[k];
      next_a = a[k];
    }
    flat.insert(flat.end(), a.begin(), a.end());
    adv.push_back(a);
    ret.push_back(r);
  }
  double mean = 0, var = 0;
  for (double x : flat) mean += x;
  mean /= flat.size();
  for (double x : flat) var += (x - mean) * (x - mean);
  var /= (flat.size() - 1);
  for (size_t k = 0; k < order.size(); ++k) {
    const Sample& s = samples[order[k]];
    ASSERT_EQ(s.advantages.size(), s.response_ids.size());
    ASSERT_EQ(s.returns.size(), s.response_ids.size());
    for (size_t t = 0; t < s.advantages.size(); ++t) {
      EXPECT_NEAR(s.advantages[t], (adv[k][t] - mean) / std::sqrt(var + 1e-8), 1e-5) << k << "," << t;
      EXPECT_NEAR(s.returns[t], ret[k][t], 1e-6) << k << "," << t;
    }
  }
  EXPECT_TRUE(samples[1].advantages.empty());
}

TEST(CriticTest, CheckpointStateRoundTrips) {
  model::HybridModel policy = MakePolicy();
  LocalCollective collective;
  OptimConfig optim;
  optim.lr = 1e-2;
  Critic a(MakeValueModel(policy, true, 3), optim, 10, 0.5, &collective);
  std::vector<Sample> samples = MakeSamples(40, 4);
  std::vector<int64_t> order = {0, 1, 2, 3};
  a.ComputeValues(samples, order, 4096);
  for (auto& s : samples) s.returns.assign(s.values.size(), 1.0f);
  a.Update(samples, order, 2, 4096);
  TrainingState state;
  CaptureCriticState(a, &state);
  EXPECT_EQ(state.extra["critic_optimizer_step"].get<int64_t>(), 2);
  Critic b(MakeValueModel(policy, false, 9), optim, 10, 0.5, &collective);
  ASSERT_TRUE(RestoreCriticState(state, b).ok());
  EXPECT_EQ(b.optimizer().step(), 2);
  const auto pa = a.model()->named_parameters();
  for (const auto& item : b.model()->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), pa[item.key()])) << item.key();
  // Same next update from both.
  StepMetrics ma = a.Update(samples, order, 1, 4096), mb = b.Update(samples, order, 1, 4096);
  EXPECT_DOUBLE_EQ(ma.at("critic/value_loss"), mb.at("critic/value_loss"));
  TrainingState empty;
  Status missing = RestoreCriticState(empty, b);
  EXPECT_EQ(missing.code(), StatusCode::kDataLoss);
  EXPECT_NE(missing.message().find("extra_models/critic"), std::string::npos) << missing.message();
}

// ---- in-process PPO Trainer run ----------------------------------------------------------------

class FixedFeed : public TaskFeed {
 public:
  std::vector<PromptTask> Next(int64_t n) override {
    std::vector<PromptTask> out;
    for (int64_t i = 0; i < n; ++i) {
      PromptTask t;
      t.task_id = "t" + std::to_string(i);
      t.source = "fixed";
      t.prompt_ids = {1 + i, 5 + i, 9};
      t.verifier = "fixed";
      out.push_back(t);
    }
    return out;
  }
  nlohmann::json State() const override { return nlohmann::json::object(); }
  Status Restore(const nlohmann::json&) override { return Status::Ok(); }
};

// The same responses every step (a fixed batch): sample j of prompt p has 2 + (p + j) % 4 tokens.
class FixedRollout : public RolloutPort {
 public:
  StatusOr<protocol::RolloutResult> Generate(const protocol::RolloutRequest& request) override {
    protocol::RolloutResult result;
    result.request_id = request.request_id;
    for (const auto& p : request.prompts) {
      for (int j = 0; j < request.samples_per_prompt; ++j) {
        protocol::Trajectory tr;
        tr.sample_id = p.first_sample_id + j;
        tr.prompt_id = p.prompt_id;
        tr.group_id = p.group_id;
        tr.sample_index = j;
        tr.weights_version = request.min_weights_version;
        const int len = 2 + static_cast<int>((p.prompt_id + j) % 4);
        for (int t = 0; t < len; ++t) tr.token_ids.push_back(static_cast<int32_t>((p.prompt_id * 7 + j * 3 + t) % 40));
        tr.logprobs.assign(len, -1.0f);
        tr.finish_reason = protocol::FinishReason::kStop;
        result.trajectories.push_back(tr);
      }
    }
    return result;
  }
  Status PublishWeights(const model::NamedTensors& weights, uint64_t version) override {
    published = version;
    EXPECT_TRUE(weights.count("lm_head.weight"));  // the policy, not the critic
    return Status::Ok();
  }
  uint64_t published = 0;
};

// Reward 1 for responses of even length, else 0.
class LengthReward : public RewardPort {
 public:
  std::vector<RewardResult> Score(const protocol::RewardBatch& batch) override {
    std::vector<RewardResult> out;
    for (const auto& r : batch.requests) {
      const bool even = r.response_tokens % 2 == 0;
      out.push_back(RewardResult::Scored(r.sample_id, even ? 1.0 : 0.0, even ? Verdict::kCorrect : Verdict::kWrong));
    }
    return out;
  }
};

TEST(CriticTest, TwoStepPpoTrainerRunTrainsTheCritic) {
  TrainConfig config;
  config.model = SmallConfig();
  config.trainer.total_steps = 2;
  config.trainer.micro_batch_tokens = 32;
  config.rollout.prompts_per_step = 2;
  config.rollout.samples_per_prompt = 4;
  config.rollout.max_response_len = 8;
  config.optim.lr = 1e-3;
  config.optim.warmup_steps = 0;
  auto hooks = BuildAlgorithmHooks(YAML::Load(
      "{name: ppo, advantage: {estimator: gae}, policy_loss: {name: ppo_clip}, updates_per_rollout: 2, "
      "critic: {value_clip: 0.5, lr: 3.0e-3}}"));
  ASSERT_TRUE(hooks.ok()) << hooks.status().ToString();
  FixedFeed feed;
  FixedRollout rollout;
  LengthReward reward;
  LocalCollective collective;
  TrainerPorts ports;
  ports.tasks = &feed;
  ports.rollout = &rollout;
  ports.reward = &reward;
  ports.collective = &collective;
  Trainer trainer(config, std::move(*hooks), MakePolicy(), ports, ::testing::TempDir());
  ASSERT_NE(trainer.critic(), nullptr);
  std::vector<StepMetrics> steps;
  for (int64_t step = 1; step <= 2; ++step) {
    auto m = trainer.Step(step);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    steps.push_back(*m);
  }
  for (const auto& m : steps) {
    for (const char* key : {"critic/value_loss", "critic/clip_frac", "critic/explained_var", "critic/grad_norm",
                            "loss/policy", "advantage/abs_mean"}) {
      ASSERT_TRUE(m.count(key)) << key;
      EXPECT_TRUE(std::isfinite(m.at(key))) << key;
    }
    EXPECT_GT(m.at("critic/grad_norm"), 0);
    EXPECT_GT(m.at("advantage/abs_mean"), 0);
  }
  // gamma = lam = 1: the returns are the (fixed) outcome rewards, so the value loss on the
  // fixed batch must go down.
  EXPECT_LT(steps[1].at("critic/value_loss"), steps[0].at("critic/value_loss"));
  EXPECT_EQ(trainer.critic()->optimizer().step(), 4);
  EXPECT_EQ(trainer.policy().optimizer().step(), 4);
}

TEST(CriticTest, NonCriticRecipesBuildNoCritic) {
  auto hooks = BuildAlgorithmHooks(YAML::Load("{name: grpo, policy_loss: {name: ppo_clip}}"));
  ASSERT_TRUE(hooks.ok()) << hooks.status().ToString();
  EXPECT_FALSE(hooks->needs_critic);
  EXPECT_FALSE(hooks->token_advantages);
  EXPECT_TRUE(hooks->advantages);
}

}  // namespace
}  // namespace lightrl::trainer
