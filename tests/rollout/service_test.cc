// RolloutService: protocol request -> trajectories. Oracles: the contract's counts/ids/order,
// the same sample generated in a different grouping (sample-id seeding), the Engine run
// directly with protocol::SampleSeed, forced-token weights for finish reasons, and the training
// forward for log-probs.
#include "rollout/service.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/rollout/test_util.h"

namespace lightrl::rollout {
namespace {

using testing::MakeModel;
using testing::Prompt;

protocol::PromptSpec Spec(uint64_t prompt_id, uint64_t first_sample_id, int64_t len) {
  protocol::PromptSpec p;
  p.prompt_id = prompt_id;
  p.group_id = 1000 + prompt_id;
  p.first_sample_id = first_sample_id;
  p.task_id = "test";
  for (int64_t id : Prompt(len, prompt_id)) p.token_ids.push_back(static_cast<int32_t>(id));
  return p;
}

protocol::RolloutRequest MakeRequest(std::vector<protocol::PromptSpec> prompts, int G, int max_new = 12) {
  protocol::RolloutRequest r;
  r.request_id = 77;
  r.prompts = std::move(prompts);
  r.samples_per_prompt = G;
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.95f;
  r.sampling.max_new_tokens = max_new;
  r.sampling.stop_token_ids = {63};
  r.seed = 5;
  return r;
}

EngineOptions Invariant() {
  EngineOptions o;
  o.batch_invariant = true;
  return o;
}

TEST(RolloutServiceTest, TrajectoriesFollowTheContract) {
  testing::PrintableTokenizer tok;
  model::HybridModel m = MakeModel();
  RolloutService service(m, Invariant(), &tok);
  ASSERT_TRUE(service.LoadWeights(testing::CopyWeights(m), 4).ok());
  auto result = service.Generate(MakeRequest({Spec(1, 100, 7), Spec(2, 200, 13)}, 3));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->request_id, 77u);
  ASSERT_EQ(result->trajectories.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const protocol::Trajectory& t = result->trajectories[i];
    const uint64_t prompt = i < 3 ? 1 : 2;
    EXPECT_EQ(t.prompt_id, prompt);
    EXPECT_EQ(t.group_id, 1000 + prompt);
    EXPECT_EQ(t.sample_index, static_cast<int>(i % 3));
    EXPECT_EQ(t.sample_id, (prompt == 1 ? 100u : 200u) + i % 3);
    EXPECT_EQ(t.weights_version, 4u);
    EXPECT_EQ(t.logprobs.size(), t.token_ids.size());
    ASSERT_FALSE(t.token_ids.empty());
    EXPECT_LE(t.token_ids.size(), 12u);
    std::vector<int64_t> ids(t.token_ids.begin(), t.token_ids.end());
    if (t.finish_reason == protocol::FinishReason::kStop) {
      EXPECT_EQ(ids.back(), 63);
      ids.pop_back();  // the text leaves the stop token out
    } else {
      EXPECT_EQ(t.finish_reason, protocol::FinishReason::kLength);
      EXPECT_EQ(t.token_ids.size(), 12u);
    }
    EXPECT_EQ(t.text, testing::Detok(ids));
    EXPECT_GT(t.timings.prefill_s, 0);
    EXPECT_GT(t.timings.decode_s, 0);
  }
}

TEST(RolloutServiceTest, ASampleDependsOnlyOnItsIdNotOnItsGrouping) {
  RolloutService service(MakeModel(), Invariant(), nullptr);
  auto together = service.Generate(MakeRequest({Spec(1, 100, 7), Spec(2, 200, 13)}, 3));
  // Prompt 2 alone, starting one sample later (ids 201, 202), and in the other order.
  auto alone = service.Generate(MakeRequest({Spec(2, 201, 13)}, 2));
  auto swapped = service.Generate(MakeRequest({Spec(2, 200, 13), Spec(1, 100, 7)}, 3));
  ASSERT_TRUE(together.ok() && alone.ok() && swapped.ok());
  for (int j = 0; j < 2; ++j) {
    EXPECT_EQ(together->trajectories[4 + j].token_ids, alone->trajectories[j].token_ids);
    EXPECT_EQ(together->trajectories[4 + j].logprobs, alone->trajectories[j].logprobs);
  }
  for (int j = 0; j < 3; ++j) EXPECT_EQ(together->trajectories[j].token_ids, swapped->trajectories[3 + j].token_ids);
  EXPECT_TRUE(alone->trajectories[0].text.empty());  // no tokenizer
  // Oracle: the engine itself with sample seed protocol::SampleSeed(seed, sample_id).
  Engine engine(MakeModel(), Invariant());
  Request r;
  r.prompt_ids = Prompt(13, 2);
  r.params.temperature = 1.0f;
  r.params.top_p = 0.95f;
  r.params.max_new_tokens = 12;
  r.params.stop_token_ids = {63};
  r.params.repetition_truncation = false;
  r.sample_seeds = {protocol::SampleSeed(5, 202)};
  Completion c = engine.Generate({r})[0];
  const auto& t = alone->trajectories[1];
  EXPECT_EQ(std::vector<int64_t>(t.token_ids.begin(), t.token_ids.end()), c.token_ids);
}

TEST(RolloutServiceTest, LogProbsMatchTheTrainingForward) {
  model::HybridModel m = MakeModel();
  RolloutService service(m, {}, nullptr);
  auto req = MakeRequest({Spec(1, 0, 9), Spec(2, 10, 20)}, 2, 24);
  req.sampling.temperature = 0.8f;
  auto result = service.Generate(req);
  ASSERT_TRUE(result.ok());
  torch::NoGradGuard no_grad;
  double max_diff = 0;
  for (const auto& t : result->trajectories) {
    const auto& prompt = req.prompts[t.prompt_id - 1].token_ids;
    std::vector<int64_t> ids(prompt.begin(), prompt.end());
    ids.insert(ids.end(), t.token_ids.begin(), t.token_ids.end());
    const int64_t P = prompt.size(), n = t.token_ids.size();
    torch::Tensor logits = m->forward(torch::tensor(ids).view({1, -1})).logits.narrow(1, P - 1, n);
    std::vector<int64_t> targets(t.token_ids.begin(), t.token_ids.end());
    torch::Tensor ref = model::TokenLogProbs(logits, torch::tensor(targets).view({1, n}), 0.8).reshape({-1});
    max_diff = std::max(max_diff, (ref - torch::tensor(t.logprobs)).abs().max().item<double>());
  }
  std::printf("service: train/infer max |logprob delta| = %.3g\n", max_diff);
  EXPECT_LT(max_diff, 1e-4);
}

TEST(RolloutServiceTest, EarlyTruncationWindowZeroIsOff) {
  model::HybridModel m = MakeModel();
  RolloutService service(m, {}, nullptr);
  ASSERT_TRUE(service.LoadWeights(testing::ForcedTokenWeights(m, 33), 2).ok());
  auto req = MakeRequest({Spec(1, 0, 5)}, 1, 20);
  req.sampling.stop_token_ids.clear();
  req.sampling.early_truncation_window = 0;
  auto off = service.Generate(req);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->trajectories[0].finish_reason, protocol::FinishReason::kLength);
  EXPECT_EQ(off->trajectories[0].token_ids.size(), 20u);
  req.sampling.early_truncation_window = 4;
  auto on = service.Generate(req);
  ASSERT_TRUE(on.ok());
  EXPECT_EQ(on->trajectories[0].finish_reason, protocol::FinishReason::kRepetition);
  EXPECT_EQ(on->trajectories[0].token_ids.size(), 4u);
  req.sampling.stop_token_ids = {33};
  EXPECT_EQ(service.Generate(req)->trajectories[0].finish_reason, protocol::FinishReason::kStop);
}

TEST(RolloutServiceTest, ErrorsNameTheFieldAndStalenessIsRefused) {
  RolloutService service(MakeModel(), {}, nullptr);
  auto base = MakeRequest({Spec(1, 0, 5), Spec(2, 10, 5)}, 2);
  auto msg = [&](const protocol::RolloutRequest& r) {
    auto s = service.Generate(r);
    EXPECT_FALSE(s.ok());
    return s.ok() ? std::string() : s.status().ToString();
  };
  auto r = base;
  r.prompts[1].token_ids[2] = 64;
  EXPECT_NE(msg(r).find("request.prompts[1].token_ids[2]"), std::string::npos) << msg(r);
  r = base;
  r.prompts[0].token_ids.clear();
  EXPECT_NE(msg(r).find("request.prompts[0].token_ids"), std::string::npos);
  r = base;
  r.sampling.temperature = 0;
  EXPECT_NE(msg(r).find("request.sampling.temperature"), std::string::npos);
  r = base;
  r.sampling.top_p = 1.5f;
  EXPECT_NE(msg(r).find("request.sampling.top_p"), std::string::npos);
  r = base;
  r.sampling.max_new_tokens = 0;
  EXPECT_NE(msg(r).find("request.sampling.max_new_tokens"), std::string::npos);
  r = base;
  r.sampling.early_truncation_window = 5;
  r.sampling.early_truncation_prob = 1.5f;
  EXPECT_NE(msg(r).find("request.sampling.early_truncation_prob"), std::string::npos) << msg(r);
  r = base;
  r.samples_per_prompt = 0;
  EXPECT_NE(msg(r).find("request.samples_per_prompt"), std::string::npos);
  r = base;
  r.min_weights_version = 3;
  auto stale = service.Generate(r);
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.status().message().find("min_weights_version"), std::string::npos);
  ASSERT_TRUE(service.LoadWeights(testing::CopyWeights(service.engine().model()), 3).ok());
  auto fresh = service.Generate(r);
  ASSERT_TRUE(fresh.ok());
  for (const auto& t : fresh->trajectories) EXPECT_EQ(t.weights_version, 3u);
  EXPECT_TRUE(service.engine().idle());
}

}  // namespace
}  // namespace lightrl::rollout
