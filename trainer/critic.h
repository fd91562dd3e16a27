// Critic: PPO's value model on one trainer rank (algorithm.critic, algorithms/recipe.h).
//
// A HybridModel with HeadType::kValue (the policy's architecture, value_head [1, C] fp32 instead
// of lm_head), its own AdamW state (trainer/optimizer.h; the run's optim: block with lr replaced
// by algorithm.critic.lr), trained data-parallel exactly like PolicyTrainer::Update:
//   * ComputeValues: no-grad forward over packed micro-batches; the value of response token t is
//     the value head at the position whose logits predict token t (PackMicroBatches'
//     target_positions), i.e. V(prompt + response[:t]);
//   * Update: the same mini-batches as the policy (mini-batch m = m-th contiguous slice of
//     global_order, this rank trains the entries i with (i - begin) % size == rank), the clipped
//     value loss (algorithms::ClippedValueLoss against Sample::values as old values and
//     Sample::returns) summed over tokens and divided by the GLOBAL token count of the
//     mini-batch, gradients all-reduced (summed) through the Collective, one optimizer step per
//     mini-batch. So splitting over ranks gives the single-rank update up to summation order.
//
// Checkpoints (trainer/checkpoint.h): CaptureCriticState / RestoreCriticState store the
// parameters as extra_models["critic"], the optimizer state as extra_models["critic_optim"] and
// its step as extra["critic_optimizer_step"].
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/hybrid_model.h"
#include "trainer/batch.h"
#include "trainer/checkpoint.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/policy_trainer.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

// A value model for `policy`'s architecture: InitWeights(seed), then, if init_from_policy,
// every parameter the policy has under the same name (all but lm_head) copied from it.
model::HybridModel MakeValueModel(model::HybridModel& policy, bool init_from_policy, uint64_t seed);

class Critic {
 public:
  // value_model must have HeadType::kValue. total_optimizer_steps: for the LR schedule.
  Critic(model::HybridModel value_model, const OptimConfig& optim, int64_t total_optimizer_steps, double value_clip,
         Collective* collective);

  // Per-token values of the response tokens of samples[indices] (no grad), written into each
  // sample's `values` ([R] fp32). Returns the number of tokens processed.
  int64_t ComputeValues(std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                        int64_t micro_batch_tokens);

  // updates mini-batch steps of the clipped value loss. Every sample of global_order needs
  // `values` (old values) and `returns`, both [R]. Returns "critic/value_loss" (mini-batch loss,
  // averaged over the updates), "critic/clip_frac" (tokens where the clipped branch is larger /
  // tokens), "critic/grad_norm" (pre-clip, averaged), "critic/lr".
  StepMetrics Update(std::vector<Sample>& samples, const std::vector<int64_t>& global_order, int64_t updates,
                     int64_t micro_batch_tokens);

  model::HybridModel& model() { return model_; }
  Optimizer& optimizer() { return optimizer_; }
  double value_clip() const { return value_clip_; }

 private:
  // values [N] fp32 at the micro-batch's target positions (differentiable unless no-grad).
  torch::Tensor TargetValues(const MicroBatch& mb);

  model::HybridModel model_;
  Optimizer optimizer_;
  double value_clip_;
  Collective* collective_;
  std::vector<torch::Tensor> params_;
};

// Runs hooks.token_advantages on samples[order] (their scalar `reward` and `values`) and writes
// each sample's per-token `advantages` and `returns` ([R] fp32). REQUIRES: hooks.needs_critic,
// every sample of order has R >= 1 response tokens and values of that length (LR_CHECK).
// token_penalties: empty, or [order.size()][R] per-token reward terms (the KL reward penalty).
void WriteTokenAdvantages(const AlgorithmHooks& hooks, std::vector<Sample>* samples, const std::vector<int64_t>& order,
                          const std::vector<std::vector<float>>& token_penalties = {});

// 1 - Var(returns - values) / Var(returns) over the response tokens of samples[indices]
// (population variances; 0 when Var(returns) is 0). The fraction of the returns' variance the
// old values explain (verl critic/vf_explained_var).
double ExplainedVariance(const std::vector<Sample>& samples, const std::vector<int64_t>& indices);

// Adds the critic's parameters, optimizer state and optimizer step to a checkpoint state.
void CaptureCriticState(Critic& critic, TrainingState* state);
// Restores them; DataLoss naming the missing entry when the checkpoint has no critic (e.g. it
// was written by a run without one).
Status RestoreCriticState(const TrainingState& state, Critic& critic);

}  // namespace lightrl::trainer
