// The built-in policy losses and the per-token terms that are combined with them: the
// train/inference importance correction, KL estimators, entropy and the clipped value loss.
// Formulas and sources: /work/shared/spec/algorithms.md §1-§5 (MiniMax-M1, DAPO, verl).
//
// Notation: r_t = exp(clamp(logp_t - old_logp_t, -20, 20)) is the per-token IS ratio (the
// log-ratio is clamped BEFORE exp so that a stale old_logp cannot overflow); A is the advantage;
// sg() is stop-gradient. All per-token outputs are exactly 0 where response_mask is false.
//
// Stats (PolicyLossOutput::sums) reported by the losses, as token sums:
//   actor/ratio_mean       r                      actor/clip_frac_high   [r > hi]
//   actor/clip_frac_low    [r < lo]               actor/clip_frac        PPO/GSPO: [clipped branch active]
//   actor/unified_mask_frac  CISPO: [token dropped by Eq. 7]   actor/dual_clip_frac  PPO: [dual clip active]
// maxima: actor/ratio_max. (The importance-correction factor's own stats are the caller's:
// trainer/algorithm_hooks.cc reports actor/is_weight_mean and actor/is_zeroed_frac.)
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/policy_loss.h"
#include "core/config/config.h"

namespace lightrl::algorithms {

// Log-ratio clamp applied before exp() in every ratio (same bound as verl and SkyRL).
inline constexpr double kLogRatioClamp = 20.0;

// How CISPO's eps_low / eps_high map to the clamp [lo, hi] on r (algorithms.md §1.3).
enum class ClipConvention {
  kDelta,     // [1 - eps_low, 1 + eps_high] (M1 paper, verl, slime, NeMo-RL, SkyRL, ROLL)
  kAbsolute,  // [eps_low, eps_high]: the configured numbers ARE the bounds (TRL's epsilon_high)
};
const char* ClipConventionName(ClipConvention c);

// ---- CISPO (MiniMax-M1 Eq. 4-7) ------------------------------------------------------------
//   loss_t = -M_t * c_t * sg(clip(r_t, lo, hi)) * A * logp_t
// The clipped weight is detached, so the gradient w.r.t. logp_t is -M*c*clip(r,lo,hi)*A: tokens
// outside the bounds are scaled by the bound, NOT dropped (unlike PPO-clip). Inside the bounds
// it equals the unclipped PPO-surrogate gradient (-r*A*dlogp).
// M_t (unified mask, Eq. 7, optional): 0 if (A > 0 and r > hi) or (A < 0 and r < lo), else 1.
//
// Config (algorithm.policy_loss):
//   eps_high         required, finite > 0; the resolved cap hi must be > 1
//   eps_low          optional; absent = no lower bound (lo = 0), the paper's choice.
//                    delta: lo = max(0, 1 - eps_low), eps_low >= 0; absolute: lo = eps_low in [0, 1)
//   clip_convention  delta (default) | absolute
//   unified_mask     false (default) | true
struct CispoOptions {
  double lo = 0.0;
  double hi = 5.0;
  bool unified_mask = false;
  ClipConvention convention = ClipConvention::kDelta;
  double eps_high = 4.0;
  std::optional<double> eps_low;
};

class CispoLoss final : public PolicyLoss {
 public:
  explicit CispoLoss(CispoOptions options);
  static std::unique_ptr<PolicyLoss> FromConfig(ConfigReader& config);
  PolicyLossOutput Compute(const PolicyLossInputs& in) const override;
  std::vector<std::string> SumNames() const override;
  std::string Describe() const override;
  const CispoOptions& options() const { return options_; }

 private:
  CispoOptions options_;
};

// ---- PPO clipped surrogate (verl compute_policy_loss_vanilla; DAPO clip-higher) --------------
//   l1 = -A * r,  l2 = -A * clip(r, 1 - eps_low, 1 + eps_high),  loss = c * max(l1, l2)
//   dual clip (A < 0 only): loss = c * min(max(l1, l2), -A * dual_clip_c)
// Config: eps_low (default 0.2, in (0, 1]), eps_high (default 0.2, > 0), dual_clip_c (optional, > 1).
struct PpoClipOptions {
  double eps_low = 0.2;
  double eps_high = 0.2;
  std::optional<double> dual_clip_c;
};

class PpoClipLoss final : public PolicyLoss {
 public:
  explicit PpoClipLoss(PpoClipOptions options);
  static std::unique_ptr<PolicyLoss> FromConfig(ConfigReader& config);
  PolicyLossOutput Compute(const PolicyLossInputs& in) const override;
  std::vector<std::string> SumNames() const override;
  std::string Describe() const override;

 private:
  PpoClipOptions options_;
};

// ---- GSPO (Zheng et al. 2025; verl compute_policy_loss_gspo) -------------------------------
//   log s_i = mean_t (logp_it - old_logp_it) over the response tokens of sample i, clamped <= 10
//   s_it = sg(s_i) * exp(logp_it - sg(logp_it))      (value s_i, gradient s_i * dlogp_it)
//   loss_it = c * max(-A * s_it, -A * clip(s_it, 1 - eps_low, 1 + eps_high))
// verl pairs it with seq_mean_token_mean aggregation; that is the recipe's choice here.
// Config: eps_low (default 3e-4, > 0), eps_high (default 4e-4, > 0) — the GSPO paper's values.
struct GspoOptions {
  double eps_low = 3e-4;
  double eps_high = 4e-4;
};

class GspoLoss final : public PolicyLoss {
 public:
  explicit GspoLoss(GspoOptions options);
  static std::unique_ptr<PolicyLoss> FromConfig(ConfigReader& config);
  PolicyLossOutput Compute(const PolicyLossInputs& in) const override;
  std::vector<std::string> SumNames() const override;
  std::string Describe() const override;

 private:
  GspoOptions options_;
};

// ---- REINFORCE (no ratio) ------------------------------------------------------------------
//   loss_t = -c * A * logp_t.  On-policy policy gradient; old_logp only feeds the ratio metric.
// Config: none.
class ReinforceLoss final : public PolicyLoss {
 public:
  static std::unique_ptr<PolicyLoss> FromConfig(ConfigReader& config);
  PolicyLossOutput Compute(const PolicyLossInputs& in) const override;
  std::vector<std::string> SumNames() const override;
  std::string Describe() const override;
};

// ---- train/inference importance correction (a separate factor c) ---------------------------
// w compares the policy the trainer computes (old_logp) with the policy the rollout engine
// sampled from (rollout_logp): token level w_t = exp(old_logp_t - rollout_logp_t); sequence
// level w_i = exp(sum_t (old_logp_it - rollout_logp_it)) broadcast over the tokens of sample i
// (log clamped to +-20 before exp).
//   truncate:  c = min(w, cap)            (TIS)
//   mask:      c = w if w <= cap else 0   (TRL token_mask / sequence_mask)
// Config block (algorithm.is_correction): level token|sequence (default token), mode
// truncate|mask (default truncate), cap (required, finite > 0). ParseIsCorrectionConfig reads
// the block and calls config.Finish() (unknown keys are errors).
enum class IsLevel { kToken, kSequence };
enum class IsMode { kTruncate, kMask };
struct IsCorrectionConfig {
  IsLevel level = IsLevel::kToken;
  IsMode mode = IsMode::kTruncate;
  double cap = 2.0;
};
IsCorrectionConfig ParseIsCorrectionConfig(ConfigReader& config);  // throws ConfigError
std::string DescribeIsCorrection(const IsCorrectionConfig& config);

// old_logp, rollout_logp [B, T], mask [B, T] bool -> c [B, T] detached, 0 outside the mask.
torch::Tensor ComputeIsWeights(const torch::Tensor& old_logp, const torch::Tensor& rollout_logp,
                               const torch::Tensor& mask, const IsCorrectionConfig& config);

// ---- KL estimators (verl kl_penalty_forward) -----------------------------------------------
// Per token, with d = logp - ref_logp:
//   k1 = d;   k2 = 0.5 * d^2;   k3 = exp(-d) - (-d) - 1 = exp(ref - logp) - (ref - logp) - 1,
//   clamped to [-10, 10] (k3 only).
// Used as a loss term (kl.coef * KL added to the per-token loss) or as a reward penalty
// (token reward -= kl.coef * KL with k1, detached). Default: off.
enum class KlEstimator { kK1, kK2, kK3 };
StatusOr<KlEstimator> ParseKlEstimator(std::string_view name, const std::string& key_path);
const char* KlEstimatorName(KlEstimator e);
// logp, ref_logp [B, T] (or any equal shapes) -> per-token KL, differentiable w.r.t. logp.
torch::Tensor KlPenalty(const torch::Tensor& logp, const torch::Tensor& ref_logp, KlEstimator estimator);

// ---- entropy ---------------------------------------------------------------------------------
// logits [..., V] -> entropy of softmax(logits) [...], differentiable, computed in the logits'
// dtype via log_softmax (stable for large logits).
torch::Tensor TokenEntropy(const torch::Tensor& logits);

// ---- clipped value loss (verl compute_value_loss; PPO with a critic) ------------------------
//   v_clip = old_values + clamp(values - old_values, -clip, clip)
//   loss_t = 0.5 * max((values - returns)^2, (v_clip - returns)^2)
// values [B, T] (requires grad), old_values and returns [B, T] detached. Per-token, 0 outside
// mask; reduce with Aggregate(). clip_frac_sum counts tokens where the clipped branch is larger.
struct ValueLossOutput {
  torch::Tensor per_token_loss;  // [B, T]
  torch::Tensor clip_frac_sum;   // 0-d
};
ValueLossOutput ClippedValueLoss(const torch::Tensor& values, const torch::Tensor& old_values,
                                 const torch::Tensor& returns, const torch::Tensor& mask, double clip);

}  // namespace lightrl::algorithms
