// Policy losses: per-token policy-gradient surrogates behind one interface and registry.
//
// A loss returns the UNREDUCED per-token loss; reduction (token_mean_global, ...) is a separate
// step (algorithms/aggregation.h), as in verl's agg_loss. Metrics stay tensors.
//
// Built-in losses (algorithms/losses.h, registered in algorithms/builtin.cc):
//   cispo      MiniMax-M1 Eq. 4-5 (+ the unified mask of Eq. 6-7 as an option)
//   ppo_clip   PPO clipped surrogate, asymmetric eps (DAPO clip-higher), optional dual clip
//   gspo       GSPO sequence-level ratio with PPO clipping
//   reinforce  -A * logp (no ratio)
#pragma once

#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>

#include "algorithms/registry.h"

namespace lightrl::algorithms {

// Inputs shared by every policy loss. All tensors are [B, T] on one device (B samples padded
// to T tokens; padding and prompt positions have response_mask == false).
struct PolicyLossInputs {
  torch::Tensor logp;           // [B, T] fp32/fp64, requires grad: log pi_theta(o_t)
  torch::Tensor old_logp;       // [B, T] same dtype, treated as detached: log pi_old(o_t)
  torch::Tensor advantages;     // [B, T] same dtype, treated as detached: A_i broadcast over tokens
  torch::Tensor response_mask;  // [B, T] bool: true on response tokens
  // [B, T] same dtype, detached: an optional train/inference importance correction factor
  // (ComputeIsWeights in algorithms/losses.h), multiplied into every token's loss.
  std::optional<torch::Tensor> is_weights;
};

struct PolicyLossOutput {
  // [B, T]: NOT reduced (see Aggregate()); exactly 0 where response_mask is false.
  torch::Tensor per_token_loss;
  // Token SUMS of per-token indicators/values over the masked tokens, as 0-d tensors
  // ("actor/clip_frac_high" = number of tokens with r > hi). Divide by the (all-reduced)
  // token count to get a mean; sums are what reduce correctly over micro-batches and ranks.
  std::map<std::string, torch::Tensor> sums;
  // Maxima over the masked tokens (0-d tensors; -inf when there are no tokens), reduce by max.
  std::map<std::string, torch::Tensor> maxima;
};

// A per-token policy-gradient surrogate. Implementations are stateless and thread-safe;
// configuration is fixed at construction (FromConfig validates every knob).
class PolicyLoss {
 public:
  virtual ~PolicyLoss() = default;
  // REQUIRES: all tensors of `in` have the same [B, T] shape (checked, LR_CHECK), finite
  // old_logp/advantages on masked tokens (checked).
  virtual PolicyLossOutput Compute(const PolicyLossInputs& in) const = 0;
  // The names of `sums` this loss reports (fixed per instance), for metric layouts.
  virtual std::vector<std::string> SumNames() const = 0;
  // Resolved knobs for the start-up log, e.g. "cispo: r clamp [0, 5] (delta, eps_high=4), ...".
  virtual std::string Describe() const = 0;
};

// The process-wide policy-loss registry with the built-ins registered (algorithms/builtin.cc).
Registry<PolicyLoss>& PolicyLossRegistry();

// Checks the shared input contract (same shapes, dtypes, bool mask, finite detached inputs on
// masked tokens); throws lightrl::Error naming the offending field.
void CheckPolicyLossInputs(const PolicyLossInputs& in, const char* loss_name);

}  // namespace lightrl::algorithms
