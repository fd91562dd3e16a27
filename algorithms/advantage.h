// Advantage estimators behind one interface and registry.
//
// Built-ins (algorithms/advantages.h, registered in algorithms/builtin.cc):
//   grpo          group-relative (M1 Eq. 2): (R - group mean) / (std + eps); norm: group_std |
//                 batch_std (group mean, batch std: ScaleRL / REINFORCE++-baseline) | none (Dr.GRPO)
//   rloo          leave-one-out baseline: R_i - mean_{j != i} R_j
//   reinforce_pp  REINFORCE++: scores whitened over the whole batch (optionally group mean first)
//   gae           GAE with returns, for PPO with a critic (needs values)
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

#include "algorithms/registry.h"

namespace lightrl::algorithms {

// B samples padded to T tokens.
struct AdvantageInputs {
  torch::Tensor scores;         // [B] fp32/fp64: outcome reward of each sample
  torch::Tensor group_index;    // [B] int64: prompt group of each sample (any ids)
  torch::Tensor response_mask;  // [B, T] bool: response tokens (T >= 1)
  // GAE only.
  std::optional<torch::Tensor> values;         // [B, T] critic values V(s_t), detached
  std::optional<torch::Tensor> token_rewards;  // [B, T] per-token rewards; default: the score
                                               // on the last response token of each row
};

struct AdvantageOutput {
  torch::Tensor advantages;  // [B, T] scores' dtype, 0 outside the mask, detached
  torch::Tensor returns;     // [B, T] (GAE: advantages before whitening + values), else undefined
};

// Stateless and thread-safe; configuration fixed at construction.
class AdvantageEstimator {
 public:
  virtual ~AdvantageEstimator() = default;
  // REQUIRES: shapes as above, finite scores (checked; a NaN/inf reward is an error naming the
  // sample index, never silently propagated).
  virtual AdvantageOutput Compute(const AdvantageInputs& in) const = 0;
  // True when Compute() needs in.values (a critic).
  virtual bool needs_values() const { return false; }
  virtual std::string Describe() const = 0;
};

// The process-wide advantage-estimator registry with the built-ins (algorithms/builtin.cc).
Registry<AdvantageEstimator>& AdvantageRegistry();

// Shared input checks of the outcome estimators; throws lightrl::Error naming the field.
void CheckAdvantageInputs(const AdvantageInputs& in, const char* estimator);

}  // namespace lightrl::algorithms
