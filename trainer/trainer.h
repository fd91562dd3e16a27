// Trainer: the RL step loop of one trainer rank (all trainer ranks run it in lockstep; rank 0
// of the trainer group drives rollouts and rewards through the ports and shares the batch).
//
//   SamplePrompts -> Rollouts (G per prompt) -> Rewards -> DynamicSampling (bounded refill)
//   -> OldLogProbs (recompute | rollout) -> Advantages -> Update (mini-batches, all-reduce)
//   -> PublishWeights -> Metrics -> Checkpoint
//
// One private method per phase, each timed ("time/<phase>_s" in the metrics). Every source of
// randomness is derived from trainer.seed and the step index, so a run is deterministic on CPU
// and a resumed run replays exactly.
//
// Async pipeline (rollout.max_staleness = 1). The driver's generation phases (SamplePrompts ..
// DynamicSampling, which only talk to the ports) of step t+1 run on a background thread while
// step t computes advantages, old log-probs and the update; the thread is joined before the
// weight publish, so the rollout side is idle whenever weights move, and the batch of step t+1
// was generated with the weights step t started from (staleness 1, checked per sample when it
// is trained on; the importance correction of the recipe sees rollout vs recomputed log-probs).
// Only the main thread makes MPI calls. A checkpoint taken after step t holds the prefetched
// batch of step t+1 (PendingBatchState), so a resumed async run replays exactly as well.
#pragma once

#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/losses.h"
#include "trainer/interfaces.h"
#include "trainer/metrics.h"
#include "trainer/policy_trainer.h"
#include "trainer/train_config.h"

namespace lightrl::trainer {

// The algorithm as the loop needs it, built from the `algorithm:` block (algorithm_hooks.cc).
struct AlgorithmHooks {
  std::string name;                  // recipe name for logs
  int64_t updates_per_rollout = 1;
  bool recompute_old_logprobs = true;  // old_logprob_source: recompute | rollout
  bool dynamic_sampling = false;
  int64_t max_gen_batches = 0;       // dynamic-sampling refill cap (0 = unbounded)
  // rewards [n] of the unmasked samples, group ids [n] -> advantages [n] (scalar per sample).
  std::function<std::vector<double>(const std::vector<double>& rewards, const std::vector<int64_t>& groups)>
      advantages;
  LossFn loss;
  // PPO with a critic (algorithm.advantage.estimator: gae): the step computes the critic's old
  // values, then per-token advantages and returns with token_advantages (instead of
  // `advantages`), and trains the critic after the policy (trainer/critic.h).
  bool needs_critic = false;
  double critic_value_clip = 0.5;   // algorithm.critic.value_clip
  double critic_lr = 1e-5;          // algorithm.critic.lr (replaces optim.lr for the critic)
  bool critic_init_from_policy = true;  // algorithm.critic.init: policy | fresh
  // rewards [n] (outcome reward of each sample, placed on its last response token), values
  // [n][R_i] (old values; R_i >= 1 response tokens: the mask) -> advantages and returns [n][R_i].
  struct TokenAdvantages {
    std::vector<std::vector<float>> advantages, returns;
  };
  // token_penalties: empty, or [n][R_i] per-token reward terms added to the token rewards (the KL
  // reward penalty, -kl.coef * KL_t).
  std::function<TokenAdvantages(const std::vector<double>& rewards, const std::vector<std::vector<float>>& values,
                                const std::vector<std::vector<float>>& token_penalties)>
      token_advantages;
  // KL to a frozen reference policy (algorithm.kl; the reference is the policy the run starts
  // from: trainer.init_from, else the seeded initialisation). kl_coef > 0 turns it on: as a loss
  // term (the loss closure adds kl_coef * KL(logp, ref_logp) per token and reports "actor/kl"),
  // or with kl_in_reward as a reward penalty computed from the rollout log-probs before the
  // advantages (sequence sum subtracted from the reward; per token for GAE).
  double kl_coef = 0;
  bool kl_in_reward = false;
  algorithms::KlEstimator kl_estimator = algorithms::KlEstimator::kK3;
  std::vector<std::string> metric_names;  // names the loss reports (same on every rank)
  std::string description;           // resolved knobs, logged once at start-up
};

// Trainer-group collective used to share the driver's batch (serialised samples).
class BatchChannel {
 public:
  virtual ~BatchChannel() = default;
  // Rank 0's bytes are delivered to every trainer rank (in-place on the others).
  virtual void Broadcast(std::string* bytes) = 0;
};

struct TrainerPorts {
  TaskFeed* tasks = nullptr;      // rank 0 only
  RolloutPort* rollout = nullptr; // rank 0 only
  RewardPort* reward = nullptr;   // rank 0 only
  Collective* collective = nullptr;
  BatchChannel* batch_channel = nullptr;  // null when there is one trainer rank
};

class Critic;  // trainer/critic.h

// The driver's generated and scored samples of one step (the output of its generation phases).
struct GeneratedBatch {
  int64_t step = 0;
  std::vector<Sample> samples;
  StepMetrics metrics;          // time/sample_prompts_s, time/rollout_s, time/reward_s, dynamic_sampling/*
  Status status = Status::Ok(); // the first failure of a generation phase (samples empty then)
};

class Trainer {
 public:
  Trainer(TrainConfig config, AlgorithmHooks hooks, model::HybridModel policy, TrainerPorts ports,
          std::string run_dir);
  ~Trainer();

  // Runs steps [start_step + 1, total_steps]. Returns non-OK on an unrecoverable error.
  Status Run();

  // One step (exposed for tests). Returns its metrics (on every trainer rank).
  StatusOr<StepMetrics> Step(int64_t step);

  PolicyTrainer& policy() { return *policy_; }
  // The value model when hooks.needs_critic, else null.
  Critic* critic() { return critic_.get(); }
  int64_t step() const { return step_; }
  uint64_t weights_version() const { return weights_version_; }
  // Restores counters after a checkpoint load (trainer/checkpoint.h).
  void SetCounters(int64_t step, uint64_t weights_version, int64_t consumed_prompts, int64_t consumed_samples);
  int64_t consumed_prompts() const { return consumed_prompts_; }
  int64_t consumed_samples() const { return consumed_samples_; }
  // Id of the next RewardBatch (checkpointed so batch ids stay unique across a resume).
  uint64_t next_reward_batch() const { return next_reward_batch_; }
  void SetNextRewardBatch(uint64_t id) { next_reward_batch_ = id; }

  // The prefetched batch of step step()+1 held between steps in async mode (null when none), for
  // checkpoints; RestorePendingBatch puts it back on a resumed driver (an error names the field
  // that is malformed). Both are driver-only and called between steps.
  nlohmann::json PendingBatchState() const;
  Status RestorePendingBatch(const nlohmann::json& state);

  // Token ids that end a response (the tokenizer's EOS / end-of-turn).
  void SetStopTokens(std::vector<int32_t> ids) { stop_token_ids_ = std::move(ids); }

  // Called after each step's metrics (checkpoint hook; may be empty). A non-OK status ends Run()
  // with it (kCancelled: stop requested, the caller treats it as a clean stop).
  std::function<Status(int64_t step)> after_step;

 private:
  bool is_driver() const;
  // The generation phases of one step (driver only; runs on the prefetch thread in async mode,
  // so it touches only the ports, the config and the generation counters).
  GeneratedBatch GenerateBatch(int64_t step);
  // The batch of `step`: the prefetched one if there is one, else generated now.
  GeneratedBatch TakeBatch(int64_t step, StepMetrics* metrics);
  // Every sample's weights version is within rollout.max_staleness of the current version.
  Status CheckStaleness(const std::vector<Sample>& samples, StepMetrics* metrics) const;
  Status SamplePrompts(int64_t step, int64_t count, std::vector<PromptTask>* tasks);
  Status Rollouts(int64_t step, const std::vector<PromptTask>& tasks, int64_t group_offset,
                  std::vector<Sample>* samples);
  Status Rewards(const std::vector<PromptTask>& tasks, std::vector<Sample>* samples);
  Status DynamicSampling(int64_t step, std::vector<PromptTask>* tasks, std::vector<Sample>* samples,
                         StepMetrics* metrics);
  void ShareBatch(std::vector<Sample>* samples);
  void OldLogProbs(std::vector<Sample>* samples, const std::vector<int64_t>& order, StepMetrics* metrics);
  void Advantages(std::vector<Sample>* samples, StepMetrics* metrics);
  // Critic path: old values of every sample of `order` (each rank computes its shard, then the
  // values are summed over ranks into every rank's samples), GAE advantages and returns.
  void CriticAdvantages(std::vector<Sample>* samples, const std::vector<int64_t>& order, StepMetrics* metrics);
  StepMetrics Update(std::vector<Sample>* samples, const std::vector<int64_t>& order);
  // Reference log-probs (hooks.kl_coef > 0) of the samples this rank needs: its update shard for
  // the loss term; for the reward penalty every rank computes a shard and the per-token penalties
  // are summed over ranks, then subtracted from the rewards (scalar estimators) or kept per
  // token (GAE, in kl_token_penalties_).
  void RefLogProbs(std::vector<Sample>* samples, const std::vector<int64_t>& order, StepMetrics* metrics);
  // Per-token rows [order.size()][R] of every sample of `order` on every rank: compute(shard)
  // fills this rank's round-robin shard, row(sample) reads a sample of it; the rows are then
  // summed over ranks (bit-identical everywhere).
  std::vector<std::vector<float>> ShardedTokenRows(const std::vector<Sample>& samples,
                                                   const std::vector<int64_t>& order,
                                                   const std::function<void(const std::vector<int64_t>& shard)>& compute,
                                                   const std::function<std::vector<float>(const Sample&)>& row);
  // The samples of `order` this rank trains (the assignment of PolicyTrainer::Update).
  std::vector<int64_t> UpdateShard(const std::vector<int64_t>& order) const;
  // Sends the policy to the rollout side, as a new version or (resume) as the current one.
  Status PublishWeights(bool new_version);
  void SampleMetrics(const std::vector<Sample>& samples, StepMetrics* metrics);

  TrainConfig config_;
  AlgorithmHooks hooks_;
  TrainerPorts ports_;
  std::string run_dir_;
  std::unique_ptr<PolicyTrainer> policy_;
  std::unique_ptr<Critic> critic_;
  model::HybridModel reference_{nullptr};  // frozen initial policy (hooks_.kl_coef > 0), else null
  std::vector<std::vector<float>> kl_token_penalties_;  // [order][R] (GAE + kl_in_reward), per step
  std::unique_ptr<MetricsLogger> metrics_;
  int64_t step_ = 0;
  uint64_t weights_version_ = 0;
  int64_t consumed_prompts_ = 0;
  int64_t consumed_samples_ = 0;
  uint64_t next_reward_batch_ = 1;
  std::vector<int32_t> stop_token_ids_;  // EOS etc. (SetStopTokens)
  // Async pipeline (driver only): the generation of the next step while this one trains, and
  // its result once joined.
  std::future<GeneratedBatch> inflight_;
  std::optional<GeneratedBatch> pending_;
};

// JSON form of samples (the fields the update needs; used for the pending batch in checkpoints).
nlohmann::json SamplesToJson(const std::vector<Sample>& samples);
StatusOr<std::vector<Sample>> SamplesFromJson(const nlohmann::json& j, const std::string& what);

// Serialisation of samples for BatchChannel (msgpack via nlohmann::json).
std::string EncodeSamples(const std::vector<Sample>& samples);
std::vector<Sample> DecodeSamples(const std::string& bytes);

}  // namespace lightrl::trainer
