// BuildAlgorithmHooks: the adapter between the `algorithm:` block (an algorithms::Recipe, see
// algorithms/recipe.h for the schema) and the step loop's AlgorithmHooks (trainer/trainer.h).
//
//   * advantages(rewards, groups): the recipe's advantage estimator on per-sample outcome
//     rewards (one scalar per sample; the trainer broadcasts it over the response tokens).
//     NOTE: the trainer passes no response lengths, so reinforce_pp whitens per sample here.
//   * loss(LossInputs, metric_sums): converts the trainer's flattened micro-batch (N tokens of
//     n samples, token_sample -> sample) to the padded [n, T] layout, applies the optional
//     train/inference importance correction (old vs rollout log-probs), the policy loss, the
//     entropy bonus (entropy of softmax(logits), i.e. at temperature 1 of the logits passed),
//     and the aggregation with the GLOBAL normaliser (global_tokens / global_samples), so the
//     returned 0-d tensor sums over micro-batches and ranks to the mini-batch loss. Metric
//     token-sums are added to metric_sums under metric_names (the trainer reports them as
//     sum / global token count).
//
//   * needs_critic + token_advantages(rewards, values): for an estimator that needs values
//     (gae): per-token advantages and returns from the critic's old values with the outcome
//     reward on each sample's last response token; the trainer then trains a critic
//     (trainer/critic.h) with algorithm.critic's value_clip, lr and init.
//
// Parts the trainer cannot feed yet fail at build time with Unimplemented naming the key:
//   algorithm.kl.coef > 0 (needs a reference policy, as a loss term or as a reward penalty).
#pragma once

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <string>

#include "algorithms/recipe.h"
#include "core/status.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

// Parses `algorithm_block` (key path `path`) and builds the hooks. InvalidArgument naming the key
// for bad config, Unimplemented for parts not wired into the trainer.
StatusOr<AlgorithmHooks> BuildAlgorithmHooks(const YAML::Node& algorithm_block, const std::string& path = "algorithm");

// Same, from an already parsed recipe (tests, experiments that build recipes in code).
StatusOr<AlgorithmHooks> BuildAlgorithmHooksFromRecipe(const algorithms::Recipe& recipe,
                                                       const std::string& path = "algorithm");

// The packed -> padded mapping used by the loss adapter (exposed for tests).
struct PaddedLayout {
  int64_t samples = 0;      // n
  int64_t max_len = 0;      // T = max sample length (>= 1)
  torch::Tensor flat_index; // [N] int64: sample * T + position within the sample
  torch::Tensor mask;       // [n, T] bool: true on the N real tokens
};
// token_sample [N] int64 in [0, n), sample_lengths [n] int64. REQUIRES (LR_CHECK with a clear
// message): lengths match the token counts and each sample's tokens are contiguous and in order.
PaddedLayout MakePaddedLayout(const torch::Tensor& token_sample, const torch::Tensor& sample_lengths);
// x [N] -> [n, T] (0 on padding), differentiable w.r.t. x.
torch::Tensor ToPadded(const torch::Tensor& x, const PaddedLayout& layout);

}  // namespace lightrl::trainer
