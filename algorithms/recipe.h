// Recipe: an algorithm as configuration (style.md §6) — an advantage estimator, a policy loss,
// a loss aggregation and the step-level knobs around them, parsed from the `algorithm:` block
// of a training config (recipes in configs/algo/*.yaml). Every key is validated; errors name
// the full key path ("algorithm.policy_loss.eps_high: expected a finite number > 0, got -1").
//
// Schema (defaults in brackets; see configs/algo/cispo.yaml for a commented example):
//   algorithm:
//     name: <label for logs>                          [custom]
//     advantage:                                      [{estimator: grpo}]
//       estimator: grpo | rloo | reinforce_pp | gae   (+ the estimator's own keys, advantages.h)
//     policy_loss:                                    (required)
//       name: cispo | ppo_clip | gspo | reinforce     (+ the loss's own keys, losses.h)
//     loss_aggregation: token_mean_global | seq_mean_token_mean | seq_mean_token_sum
//                       | seq_mean_token_sum_norm     [token_mean_global]
//       or {mode: <one of those>, norm_constant: C}   (norm_constant required for *_sum_norm)
//     updates_per_rollout: int >= 1                   [16]   (M1: 16 off-policy rounds)
//     old_logprob_source: recompute | rollout         [recompute]
//     is_correction: {level: token|sequence, mode: truncate|mask, cap: >0}   [absent = off]
//                                                     (an error with old_logprob_source: rollout)
//     dynamic_sampling: {enabled: bool [false], max_gen_batches: int >= 0 [10], 0 = unbounded}
//     entropy_coef: finite >= 0                       [0]
//     kl: {coef: >= 0 [0], estimator: k1|k2|k3 [k3], in_reward: bool [false]}
//     critic: {value_clip: > 0 [0.5], lr: > 0 [1e-5], init: policy|fresh [policy]}
//                                                     (required when the estimator needs values)
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "algorithms/advantage.h"
#include "algorithms/aggregation.h"
#include "algorithms/losses.h"
#include "algorithms/policy_loss.h"
#include "core/status.h"

namespace lightrl::algorithms {

enum class OldLogprobSource {
  kRecompute,  // trainer forward after rollout (one extra pass; the usual default)
  kRollout,    // the rollout engine's log-probs (train/infer mismatch goes straight into r)
};
const char* OldLogprobSourceName(OldLogprobSource s);

struct KlConfig {
  double coef = 0;  // 0 = off (CISPO, DAPO: no KL)
  KlEstimator estimator = KlEstimator::kK3;
  bool in_reward = false;  // true: reward penalty (k1 style); false: loss term
};

struct DynamicSamplingConfig {
  bool enabled = false;
  int64_t max_gen_batches = 10;  // generation rounds per step before failing (0 = unbounded)
};

struct CriticConfig {
  double value_clip = 0.5;
  double lr = 1e-5;
  // init: policy = the value model starts from the policy's weights (every tensor but lm_head;
  // the value head is freshly initialised), fresh = an independently initialised model.
  bool init_from_policy = true;
};

struct Recipe {
  std::string name = "custom";
  std::string advantage_name;
  std::shared_ptr<const AdvantageEstimator> advantage;
  std::string policy_loss_name;
  std::shared_ptr<const PolicyLoss> policy_loss;
  AggregationConfig aggregation;
  int64_t updates_per_rollout = 16;
  OldLogprobSource old_logprob_source = OldLogprobSource::kRecompute;
  std::optional<IsCorrectionConfig> is_correction;
  DynamicSamplingConfig dynamic_sampling;
  double entropy_coef = 0;
  KlConfig kl;
  std::optional<CriticConfig> critic;

  // One line with every resolved knob, in particular the clamp [lo, hi], the normaliser and
  // the old-log-prob source (logged once at start-up and stored with checkpoints).
  std::string Describe() const;
};

// Parses and validates an `algorithm:` block. InvalidArgument naming the key on any error.
StatusOr<Recipe> ParseRecipe(const YAML::Node& algorithm_block, const std::string& path = "algorithm");

}  // namespace lightrl::algorithms
