// Policy losses, the importance correction, KL, entropy, value loss and loss aggregation
// (algorithms/losses.h, algorithms/aggregation.h). One translation unit on purpose: every file
// that includes libtorch costs ~20 s to compile.
#include "algorithms/losses.h"

#include <cmath>
#include <limits>

#include "algorithms/aggregation.h"
#include "core/check.h"
#include "core/logging.h"

namespace lightrl::algorithms {

namespace {

std::string ShapeString(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

// Throws unless `t` has no NaN/inf where `mask` is true.
void CheckFiniteOnMask(const torch::Tensor& t, const torch::Tensor& mask, const char* who, const char* field) {
  const torch::Tensor bad = torch::logical_and(mask, torch::logical_not(torch::isfinite(t)));
  if (bad.any().item<bool>()) {
    const int64_t n = bad.sum().item<int64_t>();
    const int64_t first = torch::nonzero(bad.flatten())[0][0].item<int64_t>();
    LR_FAIL(who, ": ", field, " has ", n, " non-finite value(s) on response tokens (first at flat index ", first,
            ", value ", t.flatten()[first].item<double>(), ")");
  }
}

void CheckSameShape(const torch::Tensor& t, const torch::Tensor& ref, const char* who, const char* field,
                    const char* ref_field) {
  LR_CHECK(t.defined(), who, ": ", field, " is undefined");
  LR_CHECK(t.sizes() == ref.sizes(), who, ": ", field, " has shape ", ShapeString(t), ", expected ",
           ShapeString(ref), " (the shape of ", ref_field, ")");
}

// A 0-d tensor of `like`'s dtype/device holding the sum of `x` over `mask`.
torch::Tensor MaskedSum(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& like) {
  return torch::where(mask, x.to(like.scalar_type()), torch::zeros({}, like.options())).sum().detach();
}

torch::Tensor MaskedMax(const torch::Tensor& x, const torch::Tensor& mask) {
  const auto ninf = torch::full({}, -std::numeric_limits<double>::infinity(), x.options());
  if (x.numel() == 0) return ninf;
  return torch::where(mask, x, ninf).max().detach();
}

// Inputs with the padding neutralised: outside the mask old_logp := logp.detach() and A := 0,
// so no NaN/inf in padding can leak into values or gradients (NaN * 0 is NaN).
struct Clean {
  torch::Tensor logp, old_logp, adv, mask, is_weights;  // is_weights undefined when absent
};

Clean Sanitize(const PolicyLossInputs& in, const char* who) {
  CheckPolicyLossInputs(in, who);
  Clean c;
  c.mask = in.response_mask;
  c.logp = in.logp;
  const torch::Tensor zero = torch::zeros({}, in.logp.options());
  c.old_logp = torch::where(c.mask, in.old_logp.detach(), in.logp.detach());
  c.adv = torch::where(c.mask, in.advantages.detach(), zero);
  if (in.is_weights) c.is_weights = torch::where(c.mask, in.is_weights->detach(), zero);
  return c;
}

torch::Tensor ClampedRatio(const torch::Tensor& logp, const torch::Tensor& old_logp) {
  // Clamp the log-ratio before exp() so a stale old_logp cannot overflow (verl, SkyRL: +-20).
  return (logp - old_logp).clamp(-kLogRatioClamp, kLogRatioClamp).exp();
}

torch::Tensor Finalize(torch::Tensor per_token, const Clean& c) {
  if (c.is_weights.defined()) per_token = per_token * c.is_weights;
  return torch::where(c.mask, per_token, torch::zeros({}, per_token.options()));
}

double GetFinite(ConfigReader& config, const std::string& key, double default_value) {
  const double v = config.Get<double>(key, default_value);
  if (!std::isfinite(v)) config.Fail(key, StrCat("expected a finite number, got ", v));
  return v;
}

}  // namespace

void CheckPolicyLossInputs(const PolicyLossInputs& in, const char* who) {
  LR_CHECK(in.logp.defined(), who, ": logp is undefined");
  LR_CHECK(in.logp.dim() == 2, who, ": logp must be [B, T], got shape ", ShapeString(in.logp));
  LR_CHECK(in.logp.is_floating_point(), who, ": logp must be floating point, got ", in.logp.scalar_type());
  CheckSameShape(in.old_logp, in.logp, who, "old_logp", "logp");
  CheckSameShape(in.advantages, in.logp, who, "advantages", "logp");
  CheckSameShape(in.response_mask, in.logp, who, "response_mask", "logp");
  LR_CHECK(in.response_mask.scalar_type() == torch::kBool, who, ": response_mask must be bool, got ",
           in.response_mask.scalar_type());
  LR_CHECK(in.old_logp.scalar_type() == in.logp.scalar_type(), who, ": old_logp dtype ", in.old_logp.scalar_type(),
           " differs from logp dtype ", in.logp.scalar_type());
  LR_CHECK(in.advantages.scalar_type() == in.logp.scalar_type(), who, ": advantages dtype ",
           in.advantages.scalar_type(), " differs from logp dtype ", in.logp.scalar_type());
  const torch::Tensor& mask = in.response_mask;
  CheckFiniteOnMask(in.logp.detach(), mask, who, "logp");
  CheckFiniteOnMask(in.old_logp.detach(), mask, who, "old_logp");
  CheckFiniteOnMask(in.advantages.detach(), mask, who, "advantages");
  if (in.is_weights) {
    CheckSameShape(*in.is_weights, in.logp, who, "is_weights", "logp");
    CheckFiniteOnMask(in.is_weights->detach(), mask, who, "is_weights");
  }
}

const char* ClipConventionName(ClipConvention c) { return c == ClipConvention::kDelta ? "delta" : "absolute"; }

// ---- CISPO ---------------------------------------------------------------------------------------

CispoLoss::CispoLoss(CispoOptions options) : options_(std::move(options)) {
  LR_CHECK(options_.hi > 1.0, "cispo: the cap on r must be > 1, got ", options_.hi);
  LR_CHECK(options_.lo >= 0.0 && options_.lo < 1.0, "cispo: the lower bound on r must be in [0, 1), got ",
           options_.lo);
}

std::unique_ptr<PolicyLoss> CispoLoss::FromConfig(ConfigReader& config) {
  CispoOptions o;
  const std::string conv = config.Get<std::string>("clip_convention", "delta");
  if (conv == "delta") {
    o.convention = ClipConvention::kDelta;
  } else if (conv == "absolute") {
    o.convention = ClipConvention::kAbsolute;
  } else {
    config.Fail("clip_convention", StrCat("expected 'delta' or 'absolute', got '", conv, "'"));
  }
  o.eps_high = config.Get<double>("eps_high");
  if (!std::isfinite(o.eps_high) || !(o.eps_high > 0)) {
    config.Fail("eps_high", StrCat("expected a finite number > 0, got ", o.eps_high));
  }
  o.eps_low = config.GetOptional<double>("eps_low");
  if (o.eps_low && (!std::isfinite(*o.eps_low) || *o.eps_low < 0)) {
    config.Fail("eps_low", StrCat("expected a finite number >= 0 (or absent for no lower bound), got ", *o.eps_low));
  }
  if (o.convention == ClipConvention::kDelta) {
    o.hi = 1.0 + o.eps_high;
    o.lo = o.eps_low ? std::max(0.0, 1.0 - *o.eps_low) : 0.0;
  } else {
    o.hi = o.eps_high;
    if (!(o.hi > 1.0)) {
      // TRL's trap: epsilon_high silently defaulting to 0.2 caps every ratio at 0.2.
      config.Fail("eps_high", StrCat("with clip_convention: absolute, eps_high IS the cap on r and must be > 1, got ",
                                     o.eps_high, " (for a cap of 1 + ", o.eps_high, " use clip_convention: delta)"));
    }
    o.lo = o.eps_low ? *o.eps_low : 0.0;
    if (o.lo >= 1.0) {
      config.Fail("eps_low", StrCat("with clip_convention: absolute, eps_low IS the lower bound on r and must be in "
                                    "[0, 1), got ", o.lo));
    }
  }
  o.unified_mask = config.Get<bool>("unified_mask", false);
  if (o.lo > 0) {
    Logger("algorithms")->warn("{}: CISPO with a lower bound {} on the IS weight; the paper uses none (CISPO is "
                               "canonically single-sided: omit eps_low)", config.path(), o.lo);
  }
  return std::make_unique<CispoLoss>(o);
}

PolicyLossOutput CispoLoss::Compute(const PolicyLossInputs& in) const {
  const Clean c = Sanitize(in, "cispo");
  const double lo = options_.lo, hi = options_.hi;
  // The weight is a constant (sg), so the ratio itself is computed without grad.
  const torch::Tensor r = ClampedRatio(c.logp.detach(), c.old_logp);  // [B, T]
  const torch::Tensor w = r.clamp(lo, hi);
  torch::Tensor per_token = -(w * c.adv) * c.logp;
  torch::Tensor dropped;
  if (options_.unified_mask) {
    // M1 Eq. 7: the PPO trust-region mask; the token is dropped, not scaled.
    dropped = torch::logical_or(torch::logical_and(c.adv > 0, r > hi), torch::logical_and(c.adv < 0, r < lo));
    per_token = torch::where(dropped, torch::zeros({}, per_token.options()), per_token);
  }
  PolicyLossOutput out;
  out.per_token_loss = Finalize(per_token, c);
  out.sums["actor/ratio_mean"] = MaskedSum(r, c.mask, c.logp);
  out.sums["actor/clip_frac_high"] = MaskedSum(r > hi, c.mask, c.logp);
  out.sums["actor/clip_frac_low"] = MaskedSum(r < lo, c.mask, c.logp);
  if (options_.unified_mask) out.sums["actor/unified_mask_frac"] = MaskedSum(dropped, c.mask, c.logp);
  out.maxima["actor/ratio_max"] = MaskedMax(r, c.mask);
  return out;
}

std::vector<std::string> CispoLoss::SumNames() const {
  std::vector<std::string> names = {"actor/ratio_mean", "actor/clip_frac_high", "actor/clip_frac_low"};
  if (options_.unified_mask) names.push_back("actor/unified_mask_frac");
  return names;
}

std::string CispoLoss::Describe() const {
  std::string bounds = options_.convention == ClipConvention::kDelta
                           ? StrCat("delta: [1 - eps_low, 1 + eps_high], eps_high=", options_.eps_high)
                           : StrCat("absolute: [eps_low, eps_high], eps_high=", options_.eps_high);
  bounds += options_.eps_low ? StrCat(", eps_low=", *options_.eps_low) : std::string(", no lower bound");
  return StrCat("cispo: w = sg(clip(r, ", options_.lo, ", ", options_.hi, ")) (", bounds,
                "), unified_mask=", options_.unified_mask ? "on" : "off");
}

// ---- PPO clip ------------------------------------------------------------------------------------

PpoClipLoss::PpoClipLoss(PpoClipOptions options) : options_(std::move(options)) {
  LR_CHECK(options_.eps_low > 0 && options_.eps_low <= 1, "ppo_clip: eps_low must be in (0, 1]");
  LR_CHECK(options_.eps_high > 0, "ppo_clip: eps_high must be > 0");
  LR_CHECK(!options_.dual_clip_c || *options_.dual_clip_c > 1, "ppo_clip: dual_clip_c must be > 1");
}

std::unique_ptr<PolicyLoss> PpoClipLoss::FromConfig(ConfigReader& config) {
  PpoClipOptions o;
  o.eps_low = GetFinite(config, "eps_low", 0.2);
  if (!(o.eps_low > 0 && o.eps_low <= 1)) config.Fail("eps_low", StrCat("expected a number in (0, 1], got ", o.eps_low));
  o.eps_high = GetFinite(config, "eps_high", 0.2);
  if (!(o.eps_high > 0)) config.Fail("eps_high", StrCat("expected a finite number > 0, got ", o.eps_high));
  o.dual_clip_c = config.GetOptional<double>("dual_clip_c");
  if (o.dual_clip_c && !(std::isfinite(*o.dual_clip_c) && *o.dual_clip_c > 1)) {
    config.Fail("dual_clip_c", StrCat("expected a finite number > 1 (verl uses 3.0), got ", *o.dual_clip_c));
  }
  return std::make_unique<PpoClipLoss>(o);
}

PolicyLossOutput PpoClipLoss::Compute(const PolicyLossInputs& in) const {
  const Clean c = Sanitize(in, "ppo_clip");
  const double lo = 1.0 - options_.eps_low, hi = 1.0 + options_.eps_high;
  const torch::Tensor r = ClampedRatio(c.logp, c.old_logp);  // [B, T], differentiable
  const torch::Tensor l1 = -c.adv * r;
  const torch::Tensor l2 = -c.adv * r.clamp(lo, hi);
  // max(l1, l2) written with where() so that a tie (r inside the bounds) takes l1's gradient
  // exactly; when the clipped branch wins, its value is constant in theta (zero gradient).
  const torch::Tensor clipped = l2 > l1;
  torch::Tensor per_token = torch::where(clipped, l2, l1);
  torch::Tensor dual;
  if (options_.dual_clip_c) {
    const torch::Tensor l3 = -c.adv * *options_.dual_clip_c;
    dual = torch::logical_and(c.adv < 0, per_token > l3);
    per_token = torch::where(dual, l3, per_token);
  }
  PolicyLossOutput out;
  out.per_token_loss = Finalize(per_token, c);
  const torch::Tensor rd = r.detach();
  out.sums["actor/ratio_mean"] = MaskedSum(rd, c.mask, c.logp);
  out.sums["actor/clip_frac_high"] = MaskedSum(rd > hi, c.mask, c.logp);
  out.sums["actor/clip_frac_low"] = MaskedSum(rd < lo, c.mask, c.logp);
  out.sums["actor/clip_frac"] = MaskedSum(clipped, c.mask, c.logp);
  if (options_.dual_clip_c) out.sums["actor/dual_clip_frac"] = MaskedSum(dual, c.mask, c.logp);
  out.maxima["actor/ratio_max"] = MaskedMax(rd, c.mask);
  return out;
}

std::vector<std::string> PpoClipLoss::SumNames() const {
  std::vector<std::string> names = {"actor/ratio_mean", "actor/clip_frac_high", "actor/clip_frac_low",
                                    "actor/clip_frac"};
  if (options_.dual_clip_c) names.push_back("actor/dual_clip_frac");
  return names;
}

std::string PpoClipLoss::Describe() const {
  return StrCat("ppo_clip: clip(r, ", 1.0 - options_.eps_low, ", ", 1.0 + options_.eps_high, ") (eps_low=",
                options_.eps_low, ", eps_high=", options_.eps_high, "), dual_clip_c=",
                options_.dual_clip_c ? StrCat(*options_.dual_clip_c) : std::string("off"));
}

// ---- GSPO ----------------------------------------------------------------------------------------

GspoLoss::GspoLoss(GspoOptions options) : options_(options) {
  LR_CHECK(options_.eps_low > 0 && options_.eps_low <= 1 && options_.eps_high > 0, "gspo: bad eps");
}

std::unique_ptr<PolicyLoss> GspoLoss::FromConfig(ConfigReader& config) {
  GspoOptions o;
  o.eps_low = GetFinite(config, "eps_low", o.eps_low);
  if (!(o.eps_low > 0 && o.eps_low <= 1)) config.Fail("eps_low", StrCat("expected a number in (0, 1], got ", o.eps_low));
  o.eps_high = GetFinite(config, "eps_high", o.eps_high);
  if (!(o.eps_high > 0)) config.Fail("eps_high", StrCat("expected a finite number > 0, got ", o.eps_high));
  return std::make_unique<GspoLoss>(o);
}

PolicyLossOutput GspoLoss::Compute(const PolicyLossInputs& in) const {
  const Clean c = Sanitize(in, "gspo");
  const double lo = 1.0 - options_.eps_low, hi = 1.0 + options_.eps_high;
  const torch::Tensor maskf = c.mask.to(c.logp.scalar_type());
  const torch::Tensor len = maskf.sum(-1).clamp_min(1);                                   // [B]
  const torch::Tensor seq_log = ((c.logp.detach() - c.old_logp) * maskf).sum(-1) / len;   // [B]
  // Token surrogate with the sequence ratio's value and gradient s_i * dlogp_it (verl),
  // clamped at log s <= 10.
  const torch::Tensor log_s = (c.logp - c.logp.detach() + seq_log.unsqueeze(-1)).clamp_max(10.0);
  const torch::Tensor s = log_s.exp();  // [B, T]
  const torch::Tensor l1 = -c.adv * s;
  const torch::Tensor l2 = -c.adv * s.clamp(lo, hi);
  const torch::Tensor clipped = l2 > l1;
  PolicyLossOutput out;
  out.per_token_loss = Finalize(torch::where(clipped, l2, l1), c);
  const torch::Tensor sd = s.detach();
  out.sums["actor/ratio_mean"] = MaskedSum(sd, c.mask, c.logp);
  out.sums["actor/clip_frac_high"] = MaskedSum(sd > hi, c.mask, c.logp);
  out.sums["actor/clip_frac_low"] = MaskedSum(sd < lo, c.mask, c.logp);
  out.sums["actor/clip_frac"] = MaskedSum(clipped, c.mask, c.logp);
  out.maxima["actor/ratio_max"] = MaskedMax(sd, c.mask);
  return out;
}

std::vector<std::string> GspoLoss::SumNames() const {
  return {"actor/ratio_mean", "actor/clip_frac_high", "actor/clip_frac_low", "actor/clip_frac"};
}

std::string GspoLoss::Describe() const {
  return StrCat("gspo: sequence ratio, clip(s, ", 1.0 - options_.eps_low, ", ", 1.0 + options_.eps_high, ")");
}

// ---- REINFORCE -----------------------------------------------------------------------------------

std::unique_ptr<PolicyLoss> ReinforceLoss::FromConfig(ConfigReader&) { return std::make_unique<ReinforceLoss>(); }

PolicyLossOutput ReinforceLoss::Compute(const PolicyLossInputs& in) const {
  const Clean c = Sanitize(in, "reinforce");
  PolicyLossOutput out;
  out.per_token_loss = Finalize(-c.adv * c.logp, c);
  const torch::Tensor r = ClampedRatio(c.logp.detach(), c.old_logp);  // monitoring only
  out.sums["actor/ratio_mean"] = MaskedSum(r, c.mask, c.logp);
  out.maxima["actor/ratio_max"] = MaskedMax(r, c.mask);
  return out;
}

std::vector<std::string> ReinforceLoss::SumNames() const { return {"actor/ratio_mean"}; }

std::string ReinforceLoss::Describe() const { return "reinforce: -A * logp (no ratio)"; }

// ---- importance correction -----------------------------------------------------------------------

IsCorrectionConfig ParseIsCorrectionConfig(ConfigReader& config) {
  IsCorrectionConfig c;
  const std::string level = config.Get<std::string>("level", "token");
  if (level == "token") {
    c.level = IsLevel::kToken;
  } else if (level == "sequence") {
    c.level = IsLevel::kSequence;
  } else {
    config.Fail("level", StrCat("expected 'token' or 'sequence', got '", level, "'"));
  }
  const std::string mode = config.Get<std::string>("mode", "truncate");
  if (mode == "truncate") {
    c.mode = IsMode::kTruncate;
  } else if (mode == "mask") {
    c.mode = IsMode::kMask;
  } else {
    config.Fail("mode", StrCat("expected 'truncate' or 'mask', got '", mode, "'"));
  }
  c.cap = config.Get<double>("cap");
  if (!std::isfinite(c.cap) || !(c.cap > 0)) config.Fail("cap", StrCat("expected a finite number > 0, got ", c.cap));
  config.Finish();
  return c;
}

std::string DescribeIsCorrection(const IsCorrectionConfig& c) {
  return StrCat(c.level == IsLevel::kToken ? "token" : "sequence", "-level ",
                c.mode == IsMode::kTruncate ? "truncate" : "mask", " at cap ", c.cap,
                " (w = pi_old / pi_rollout)");
}

torch::Tensor ComputeIsWeights(const torch::Tensor& old_logp, const torch::Tensor& rollout_logp,
                               const torch::Tensor& mask, const IsCorrectionConfig& config) {
  const char* who = "is_correction";
  LR_CHECK(old_logp.defined() && old_logp.dim() == 2, who, ": old_logp must be [B, T]");
  CheckSameShape(rollout_logp, old_logp, who, "rollout_logp", "old_logp");
  CheckSameShape(mask, old_logp, who, "mask", "old_logp");
  LR_CHECK(mask.scalar_type() == torch::kBool, who, ": mask must be bool");
  CheckFiniteOnMask(old_logp, mask, who, "old_logp");
  CheckFiniteOnMask(rollout_logp, mask, who, "rollout_logp");
  const torch::Tensor zero = torch::zeros({}, old_logp.options());
  torch::Tensor diff = torch::where(mask, (old_logp - rollout_logp.to(old_logp.scalar_type())).detach(), zero);
  if (config.level == IsLevel::kSequence) diff = diff.sum(-1, /*keepdim=*/true).expand_as(diff);
  const torch::Tensor w = diff.clamp(-kLogRatioClamp, kLogRatioClamp).exp();
  torch::Tensor c = config.mode == IsMode::kTruncate ? w.clamp_max(config.cap) : torch::where(w <= config.cap, w, zero);
  return torch::where(mask, c, zero);
}

// ---- KL, entropy, value loss ---------------------------------------------------------------------

StatusOr<KlEstimator> ParseKlEstimator(std::string_view name, const std::string& key_path) {
  if (name == "k1") return KlEstimator::kK1;
  if (name == "k2") return KlEstimator::kK2;
  if (name == "k3") return KlEstimator::kK3;
  return InvalidArgument(StrCat(key_path, ": unknown KL estimator '", name, "'; known: k1, k2, k3"));
}

const char* KlEstimatorName(KlEstimator e) {
  switch (e) {
    case KlEstimator::kK1: return "k1";
    case KlEstimator::kK2: return "k2";
    case KlEstimator::kK3: return "k3";
  }
  return "?";
}

torch::Tensor KlPenalty(const torch::Tensor& logp, const torch::Tensor& ref_logp, KlEstimator estimator) {
  CheckSameShape(ref_logp, logp, "KlPenalty", "ref_logp", "logp");
  const torch::Tensor d = logp - ref_logp.detach();
  switch (estimator) {
    case KlEstimator::kK1: return d;
    case KlEstimator::kK2: return 0.5 * d * d;
    case KlEstimator::kK3: {
      const torch::Tensor kl = -d;  // ref - logp
      return (kl.exp() - kl - 1).clamp(-10.0, 10.0);
    }
  }
  LR_FAIL("KlPenalty: bad estimator");
}

torch::Tensor TokenEntropy(const torch::Tensor& logits) {
  LR_CHECK(logits.defined() && logits.dim() >= 1 && logits.size(-1) >= 1, "TokenEntropy: logits must be [..., V]");
  const torch::Tensor lsm = torch::log_softmax(logits, -1);
  return -(lsm.exp() * lsm).sum(-1);
}

ValueLossOutput ClippedValueLoss(const torch::Tensor& values, const torch::Tensor& old_values,
                                 const torch::Tensor& returns, const torch::Tensor& mask, double clip) {
  const char* who = "ClippedValueLoss";
  LR_CHECK(values.defined() && values.dim() == 2, who, ": values must be [B, T]");
  CheckSameShape(old_values, values, who, "old_values", "values");
  CheckSameShape(returns, values, who, "returns", "values");
  CheckSameShape(mask, values, who, "mask", "values");
  LR_CHECK(mask.scalar_type() == torch::kBool, who, ": mask must be bool");
  LR_CHECK(std::isfinite(clip) && clip > 0, who, ": clip must be a finite number > 0, got ", clip);
  CheckFiniteOnMask(values.detach(), mask, who, "values");
  CheckFiniteOnMask(old_values, mask, who, "old_values");
  CheckFiniteOnMask(returns, mask, who, "returns");
  const torch::Tensor zero = torch::zeros({}, values.options());
  const torch::Tensor old_v = torch::where(mask, old_values.detach(), values.detach());
  const torch::Tensor ret = torch::where(mask, returns.detach(), values.detach());
  const torch::Tensor v_clip = old_v + (values - old_v).clamp(-clip, clip);
  const torch::Tensor l1 = (values - ret).pow(2);
  const torch::Tensor l2 = (v_clip - ret).pow(2);
  const torch::Tensor clipped = l2 > l1;
  ValueLossOutput out;
  out.per_token_loss = torch::where(mask, 0.5 * torch::where(clipped, l2, l1), zero);
  out.clip_frac_sum = MaskedSum(clipped, mask, values);
  return out;
}

// ---- aggregation ---------------------------------------------------------------------------------

const char* LossAggregationName(LossAggregation mode) {
  switch (mode) {
    case LossAggregation::kTokenMeanGlobal: return "token_mean_global";
    case LossAggregation::kSeqMeanTokenMean: return "seq_mean_token_mean";
    case LossAggregation::kSeqMeanTokenSum: return "seq_mean_token_sum";
    case LossAggregation::kSeqMeanTokenSumNorm: return "seq_mean_token_sum_norm";
  }
  return "?";
}

std::vector<std::string> LossAggregationNames() {
  return {"token_mean_global", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"};
}

StatusOr<LossAggregation> ParseLossAggregation(std::string_view name, const std::string& key_path) {
  if (name == "token_mean_global") return LossAggregation::kTokenMeanGlobal;
  if (name == "seq_mean_token_mean") return LossAggregation::kSeqMeanTokenMean;
  if (name == "seq_mean_token_sum") return LossAggregation::kSeqMeanTokenSum;
  if (name == "seq_mean_token_sum_norm" || name == "constant_norm") return LossAggregation::kSeqMeanTokenSumNorm;
  return InvalidArgument(StrCat(key_path, ": unknown loss aggregation '", name,
                                "'; known: token_mean_global, seq_mean_token_mean, seq_mean_token_sum, "
                                "seq_mean_token_sum_norm (alias constant_norm)"));
}

torch::Tensor Aggregate(const torch::Tensor& per_token_loss, const torch::Tensor& mask, const AggregationConfig& config,
                        const GlobalCounts& counts) {
  const char* who = "Aggregate";
  LR_CHECK(per_token_loss.defined() && per_token_loss.dim() == 2, who, ": per_token_loss must be [B, T], got ",
           per_token_loss.defined() ? ShapeString(per_token_loss) : std::string("undefined"));
  CheckSameShape(mask, per_token_loss, who, "mask", "per_token_loss");
  LR_CHECK(mask.scalar_type() == torch::kBool, who, ": mask must be bool");
  const torch::Tensor lm = torch::where(mask, per_token_loss, torch::zeros({}, per_token_loss.options()));
  switch (config.mode) {
    case LossAggregation::kTokenMeanGlobal:
      LR_CHECK(counts.tokens > 0 && std::isfinite(counts.tokens), who,
               ": token_mean_global needs the global token count > 0, got ", counts.tokens);
      return lm.sum() / counts.tokens;
    case LossAggregation::kSeqMeanTokenMean: {
      LR_CHECK(counts.samples > 0 && std::isfinite(counts.samples), who,
               ": seq_mean_token_mean needs the global sample count > 0, got ", counts.samples);
      const torch::Tensor len = mask.to(per_token_loss.scalar_type()).sum(-1).clamp_min(1);
      return (lm.sum(-1) / len).sum() / counts.samples;
    }
    case LossAggregation::kSeqMeanTokenSum:
      LR_CHECK(counts.samples > 0 && std::isfinite(counts.samples), who,
               ": seq_mean_token_sum needs the global sample count > 0, got ", counts.samples);
      return lm.sum() / counts.samples;
    case LossAggregation::kSeqMeanTokenSumNorm:
      LR_CHECK(counts.samples > 0 && std::isfinite(counts.samples), who,
               ": seq_mean_token_sum_norm needs the global sample count > 0, got ", counts.samples);
      LR_CHECK(config.norm_constant > 0 && std::isfinite(config.norm_constant), who,
               ": seq_mean_token_sum_norm needs norm_constant > 0, got ", config.norm_constant);
      return lm.sum() / (counts.samples * config.norm_constant);
  }
  LR_FAIL("Aggregate: bad mode");
}

}  // namespace lightrl::algorithms
