// In-process implementations of the trainer's ports (trainer/interfaces.h): the colocated mode
// (trainer rank 0 also generates and scores), split mode without reward ranks, and tests.
//
//   EnvTaskFeed       envs::TaskSource + tokenizer + chat template -> PromptTask
//   LocalRolloutPort  rollout::RolloutService on this process (its own model copy)
//   LocalRewardPort   reward::RewardWorker on this process
#pragma once

#include <memory>
#include <vector>

#include "envs/task_source.h"
#include "model/tokenizer.h"
#include "reward/reward_worker.h"
#include "rollout/service.h"
#include "trainer/interfaces.h"

namespace lightrl::trainer {

class EnvTaskFeed : public TaskFeed {
 public:
  // `tokenizer` must outlive the feed.
  EnvTaskFeed(std::unique_ptr<envs::TaskSource> source, const model::Tokenizer* tokenizer,
              model::ChatTemplate chat_template);
  // Renders each task's prompt with the chat template and tokenises it.
  std::vector<PromptTask> Next(int64_t n) override;
  nlohmann::json State() const override { return source_->State(); }
  Status Restore(const nlohmann::json& state) override { return source_->Restore(state); }

 private:
  std::unique_ptr<envs::TaskSource> source_;
  const model::Tokenizer* tokenizer_;
  model::ChatTemplate chat_template_;
};

class LocalRolloutPort : public RolloutPort {
 public:
  explicit LocalRolloutPort(rollout::RolloutService* service) : service_(service) {}
  StatusOr<protocol::RolloutResult> Generate(const protocol::RolloutRequest& request) override;
  Status PublishWeights(const model::NamedTensors& weights, uint64_t version) override;

 private:
  rollout::RolloutService* service_;
};

class LocalRewardPort : public RewardPort {
 public:
  explicit LocalRewardPort(reward::RewardWorker* worker) : worker_(worker) {}
  std::vector<RewardResult> Score(const protocol::RewardBatch& batch) override;

 private:
  reward::RewardWorker* worker_;
};

}  // namespace lightrl::trainer
