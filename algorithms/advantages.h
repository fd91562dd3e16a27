// The built-in advantage estimators and GAE (algorithms.md §1.1 Eq. 2, §3, §4; verl
// core_algos compute_grpo_outcome_advantage / compute_rloo_outcome_advantage /
// compute_reinforce_plus_plus_baseline_outcome_advantage / compute_gae_advantage_return).
//
// Outcome estimators produce one scalar per sample and broadcast it over the sample's response
// tokens. Standard deviations are UNBIASED (torch.std, as verl). Groups of one sample follow
// verl: mean 0 and std 1 (the advantage is the raw score; RLOO likewise returns the raw score),
// documented because it differs from "no baseline -> 0". A group whose scores are all equal
// gets advantage 0 (std 0, divided by std + eps).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "algorithms/advantage.h"
#include "core/config/config.h"

namespace lightrl::algorithms {

enum class AdvantageNorm {
  kGroupStd,  // (R - group mean) / (group std + eps)            GRPO, M1 Eq. 2
  kBatchStd,  // (R - group mean) / (std over the batch of (R - group mean) + eps)   ScaleRL
  kNone,      // R - group mean                                   Dr.GRPO
};
const char* AdvantageNormName(AdvantageNorm n);

// Config (algorithm.advantage): norm group_std|batch_std|none (default group_std),
// std_eps (default 1e-6, >= 0).
class GrpoAdvantage final : public AdvantageEstimator {
 public:
  GrpoAdvantage(AdvantageNorm norm, double std_eps);
  static std::unique_ptr<AdvantageEstimator> FromConfig(ConfigReader& config);
  AdvantageOutput Compute(const AdvantageInputs& in) const override;
  std::string Describe() const override;

 private:
  AdvantageNorm norm_;
  double std_eps_;
};

// RLOO: A_i = R_i - mean_{j != i} R_j = G/(G-1) * (R_i - mean_g). Config: none.
class RlooAdvantage final : public AdvantageEstimator {
 public:
  static std::unique_ptr<AdvantageEstimator> FromConfig(ConfigReader& config);
  AdvantageOutput Compute(const AdvantageInputs& in) const override;
  std::string Describe() const override;
};

// REINFORCE++ (Hu 2025, OpenRLHF; verl compute_reinforce_plus_plus_baseline_outcome_advantage):
// R' = R (baseline: none) or R - group mean (baseline: group, "REINFORCE++-baseline"), broadcast
// over the response tokens and whitened over all masked tokens of the batch (MaskedWhiten), so
// longer responses weigh more in the batch statistics.
// Config: baseline none|group (default none).
class ReinforcePlusPlusAdvantage final : public AdvantageEstimator {
 public:
  explicit ReinforcePlusPlusAdvantage(bool group_baseline);
  static std::unique_ptr<AdvantageEstimator> FromConfig(ConfigReader& config);
  AdvantageOutput Compute(const AdvantageInputs& in) const override;
  std::string Describe() const override;

 private:
  bool group_baseline_;
};

// GAE (verl compute_gae_advantage_return), reverse scan over t with masked positions carrying
// the next value and advantage through:
//   delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1}
//   returns = A + V  (before whitening); advantages whitened over the masked batch if `whiten`.
// token_rewards, values [B, T], mask [B, T] bool.
struct GaeOutput {
  torch::Tensor advantages;  // [B, T]
  torch::Tensor returns;     // [B, T]
};
GaeOutput ComputeGae(const torch::Tensor& token_rewards, const torch::Tensor& values, const torch::Tensor& mask,
                     double gamma, double lam);

// (x - masked mean) / sqrt(masked unbiased var + 1e-8), 0 outside the mask (verl masked_whiten).
torch::Tensor MaskedWhiten(const torch::Tensor& x, const torch::Tensor& mask);

// Config (algorithm.advantage): gamma (default 1.0, in [0, 1]), lam (default 1.0, in [0, 1]),
// whiten (default true).
class GaeAdvantage final : public AdvantageEstimator {
 public:
  GaeAdvantage(double gamma, double lam, bool whiten);
  static std::unique_ptr<AdvantageEstimator> FromConfig(ConfigReader& config);
  AdvantageOutput Compute(const AdvantageInputs& in) const override;
  bool needs_values() const override { return true; }
  std::string Describe() const override;

 private:
  double gamma_, lam_;
  bool whiten_;
};

}  // namespace lightrl::algorithms
