// Advantage estimators and GAE (algorithms/advantages.h).
#include "algorithms/advantages.h"

#include <cmath>
#include <map>
#include <vector>

#include "core/check.h"

namespace lightrl::algorithms {

namespace {

std::string ShapeString(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

// Per-sample group statistics in fp64. Singleton groups get mean 0 and std 1 (verl).
struct GroupStats {
  torch::Tensor mean;   // [B] fp64: the mean of the sample's group
  torch::Tensor std;    // [B] fp64: unbiased std of the sample's group
  torch::Tensor count;  // [B] fp64: size of the sample's group
};

GroupStats ComputeGroupStats(const torch::Tensor& scores, const torch::Tensor& group_index) {
  const torch::Tensor x = scores.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const torch::Tensor g = group_index.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t B = x.size(0);
  const double* xs = x.data_ptr<double>();
  const int64_t* gs = g.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> members;
  for (int64_t i = 0; i < B; ++i) members[gs[i]].push_back(i);
  std::vector<double> mean(B), stdv(B), count(B);
  for (const auto& [id, idx] : members) {
    const double n = static_cast<double>(idx.size());
    double m = 0, s = 1;
    if (idx.size() >= 2) {
      for (int64_t i : idx) m += xs[i];
      m /= n;
      double ss = 0;
      for (int64_t i : idx) ss += (xs[i] - m) * (xs[i] - m);
      s = std::sqrt(ss / (n - 1));
    }
    for (int64_t i : idx) {
      mean[i] = m;
      stdv[i] = s;
      count[i] = n;
    }
  }
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  return {torch::tensor(mean, opts), torch::tensor(stdv, opts), torch::tensor(count, opts)};
}

// Unbiased std over the whole batch (1 for a batch of one).
double BatchStd(const torch::Tensor& x) {
  if (x.numel() < 2) return 1.0;
  return x.to(torch::kDouble).std(/*unbiased=*/true).item<double>();
}

// a [B] (fp64) -> [B, T] in the scores' dtype/device, 0 outside the mask.
torch::Tensor Broadcast(const torch::Tensor& a, const AdvantageInputs& in) {
  const torch::Tensor v = a.to(in.scores.device(), in.scores.scalar_type()).unsqueeze(-1).expand(in.response_mask.sizes());
  return torch::where(in.response_mask, v, torch::zeros({}, v.options()));
}

double GetStdEps(ConfigReader& config) {
  const double eps = config.Get<double>("std_eps", 1e-6);
  if (!std::isfinite(eps) || eps < 0) config.Fail("std_eps", StrCat("expected a finite number >= 0, got ", eps));
  return eps;
}

}  // namespace

void CheckAdvantageInputs(const AdvantageInputs& in, const char* who) {
  LR_CHECK(in.scores.defined() && in.scores.dim() == 1, who, ": scores must be [B], got ",
           in.scores.defined() ? ShapeString(in.scores) : std::string("undefined"));
  LR_CHECK(in.scores.is_floating_point(), who, ": scores must be floating point, got ", in.scores.scalar_type());
  const int64_t B = in.scores.size(0);
  LR_CHECK(in.group_index.defined() && in.group_index.dim() == 1 && in.group_index.size(0) == B, who,
           ": group_index must be [B] = [", B, "], got ",
           in.group_index.defined() ? ShapeString(in.group_index) : std::string("undefined"));
  LR_CHECK(in.group_index.scalar_type() == torch::kLong, who, ": group_index must be int64, got ",
           in.group_index.scalar_type());
  LR_CHECK(in.response_mask.defined() && in.response_mask.dim() == 2 && in.response_mask.size(0) == B, who,
           ": response_mask must be [B, T] with B = ", B, ", got ",
           in.response_mask.defined() ? ShapeString(in.response_mask) : std::string("undefined"));
  LR_CHECK(in.response_mask.scalar_type() == torch::kBool, who, ": response_mask must be bool");
  const torch::Tensor bad = torch::logical_not(torch::isfinite(in.scores.detach()));
  if (bad.any().item<bool>()) {
    const int64_t i = torch::nonzero(bad)[0][0].item<int64_t>();
    LR_FAIL(who, ": score of sample ", i, " is ", in.scores[i].item<double>(),
            " (rewards must be finite; a failed verifier must mask the sample instead)");
  }
}

const char* AdvantageNormName(AdvantageNorm n) {
  switch (n) {
    case AdvantageNorm::kGroupStd: return "group_std";
    case AdvantageNorm::kBatchStd: return "batch_std";
    case AdvantageNorm::kNone: return "none";
  }
  return "?";
}

// ---- GRPO ----------------------------------------------------------------------------------------

GrpoAdvantage::GrpoAdvantage(AdvantageNorm norm, double std_eps) : norm_(norm), std_eps_(std_eps) {
  LR_CHECK(std_eps_ >= 0, "grpo: std_eps must be >= 0");
}

std::unique_ptr<AdvantageEstimator> GrpoAdvantage::FromConfig(ConfigReader& config) {
  const std::string norm = config.Get<std::string>("norm", "group_std");
  AdvantageNorm n = AdvantageNorm::kGroupStd;
  if (norm == "group_std") {
    n = AdvantageNorm::kGroupStd;
  } else if (norm == "batch_std") {
    n = AdvantageNorm::kBatchStd;
  } else if (norm == "none") {
    n = AdvantageNorm::kNone;
  } else {
    config.Fail("norm", StrCat("expected group_std, batch_std or none (Dr.GRPO), got '", norm, "'"));
  }
  return std::make_unique<GrpoAdvantage>(n, GetStdEps(config));
}

AdvantageOutput GrpoAdvantage::Compute(const AdvantageInputs& in) const {
  CheckAdvantageInputs(in, "grpo");
  const GroupStats st = ComputeGroupStats(in.scores, in.group_index);
  const torch::Tensor x = in.scores.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor centered = x - st.mean;
  torch::Tensor a;
  switch (norm_) {
    case AdvantageNorm::kGroupStd: a = centered / (st.std + std_eps_); break;
    // ScaleRL / TRL scale_rewards="batch": group-centred, divided by the batch std of the rewards.
    case AdvantageNorm::kBatchStd: a = centered / (BatchStd(x) + std_eps_); break;
    case AdvantageNorm::kNone: a = centered; break;
  }
  return {Broadcast(a, in), torch::Tensor()};
}

std::string GrpoAdvantage::Describe() const {
  return StrCat("grpo: (R - group mean)", norm_ == AdvantageNorm::kNone ? std::string("")
                : StrCat(" / (", norm_ == AdvantageNorm::kGroupStd ? "group" : "batch", " std + ", std_eps_, ")"),
                " [norm=", AdvantageNormName(norm_), ", unbiased std, singleton groups: mean 0, std 1]");
}

// ---- RLOO ----------------------------------------------------------------------------------------

std::unique_ptr<AdvantageEstimator> RlooAdvantage::FromConfig(ConfigReader&) {
  return std::make_unique<RlooAdvantage>();
}

AdvantageOutput RlooAdvantage::Compute(const AdvantageInputs& in) const {
  CheckAdvantageInputs(in, "rloo");
  const GroupStats st = ComputeGroupStats(in.scores, in.group_index);
  const torch::Tensor x = in.scores.detach().to(torch::kCPU, torch::kDouble);
  // G/(G-1) (R - mean) == R - mean of the others; singletons keep the raw score (verl).
  const torch::Tensor scale = torch::where(st.count > 1, st.count / (st.count - 1).clamp_min(1), torch::ones_like(x));
  return {Broadcast(scale * (x - st.mean), in), torch::Tensor()};
}

std::string RlooAdvantage::Describe() const { return "rloo: R_i - mean of the other samples of the group"; }

// ---- REINFORCE++ ---------------------------------------------------------------------------------

ReinforcePlusPlusAdvantage::ReinforcePlusPlusAdvantage(bool group_baseline) : group_baseline_(group_baseline) {}

std::unique_ptr<AdvantageEstimator> ReinforcePlusPlusAdvantage::FromConfig(ConfigReader& config) {
  const std::string baseline = config.Get<std::string>("baseline", "none");
  if (baseline != "none" && baseline != "group") {
    config.Fail("baseline", StrCat("expected 'none' or 'group', got '", baseline, "'"));
  }
  return std::make_unique<ReinforcePlusPlusAdvantage>(baseline == "group");
}

AdvantageOutput ReinforcePlusPlusAdvantage::Compute(const AdvantageInputs& in) const {
  CheckAdvantageInputs(in, "reinforce_pp");
  torch::Tensor x = in.scores.detach().to(torch::kCPU, torch::kDouble);
  if (group_baseline_) x = x - ComputeGroupStats(in.scores, in.group_index).mean;
  // Whitened over the response TOKENS of the batch (verl / OpenRLHF), so longer responses weigh more.
  const torch::Tensor mask = in.response_mask.to(torch::kCPU);
  const torch::Tensor tok = x.unsqueeze(-1).expand(mask.sizes());
  const torch::Tensor a = MaskedWhiten(tok, mask);
  return {a.to(in.scores.device(), in.scores.scalar_type()), torch::Tensor()};
}

std::string ReinforcePlusPlusAdvantage::Describe() const {
  return StrCat("reinforce_pp: ", group_baseline_ ? "(R - group mean)" : "R", " whitened over the batch's tokens");
}

// ---- GAE -----------------------------------------------------------------------------------------

torch::Tensor MaskedWhiten(const torch::Tensor& x, const torch::Tensor& mask) {
  LR_CHECK(x.sizes() == mask.sizes(), "MaskedWhiten: x ", ShapeString(x), " vs mask ", ShapeString(mask));
  const torch::Tensor m = mask.to(x.scalar_type());
  const torch::Tensor zero = torch::zeros({}, x.options());
  const torch::Tensor xm = torch::where(mask, x, zero);
  const double n = m.sum().item<double>();
  if (n < 1) return torch::zeros_like(x);
  const torch::Tensor mean = xm.sum() / n;
  torch::Tensor var = (torch::where(mask, x - mean, zero).pow(2)).sum() / n;
  if (n >= 2) var = var * (n / (n - 1));  // unbiased (verl masked_var)
  return torch::where(mask, (x - mean) * torch::rsqrt(var + 1e-8), zero);
}

GaeOutput ComputeGae(const torch::Tensor& token_rewards, const torch::Tensor& values, const torch::Tensor& mask,
                     double gamma, double lam) {
  LR_CHECK(values.defined() && values.dim() == 2, "ComputeGae: values must be [B, T]");
  LR_CHECK(token_rewards.sizes() == values.sizes(), "ComputeGae: token_rewards ", ShapeString(token_rewards),
           " vs values ", ShapeString(values));
  LR_CHECK(mask.sizes() == values.sizes() && mask.scalar_type() == torch::kBool,
           "ComputeGae: mask must be bool with the shape of values ", ShapeString(values));
  const torch::Tensor zero = torch::zeros({}, values.options());
  const torch::Tensor bad = torch::logical_and(
      mask, torch::logical_not(torch::logical_and(torch::isfinite(values), torch::isfinite(token_rewards))));
  LR_CHECK(!bad.any().item<bool>(), "ComputeGae: non-finite values or token_rewards on ", bad.sum().item<int64_t>(),
           " response token(s)");
  const torch::Tensor v = torch::where(mask, values.detach(), zero);
  const torch::Tensor r = torch::where(mask, token_rewards.detach().to(values.scalar_type()), zero);
  const torch::Tensor m = mask.to(values.scalar_type());
  const int64_t B = values.size(0), T = values.size(1);
  torch::Tensor next_v = torch::zeros({B}, values.options());
  torch::Tensor last = torch::zeros({B}, values.options());
  std::vector<torch::Tensor> cols(T);
  for (int64_t t = T - 1; t >= 0; --t) {
    const torch::Tensor mt = m.select(1, t), vt = v.select(1, t);
    const torch::Tensor delta = r.select(1, t) + gamma * next_v - vt;
    const torch::Tensor cand = delta + gamma * lam * last;
    // Masked positions (padding, or observation tokens between turns) carry V and A through.
    next_v = vt * mt + (1 - mt) * next_v;
    last = cand * mt + (1 - mt) * last;
    cols[t] = last;
  }
  const torch::Tensor adv = T > 0 ? torch::stack(cols, 1) : torch::zeros_like(v);
  GaeOutput out;
  out.advantages = torch::where(mask, adv, zero);
  out.returns = torch::where(mask, adv + v, zero);
  return out;
}

GaeAdvantage::GaeAdvantage(double gamma, double lam, bool whiten) : gamma_(gamma), lam_(lam), whiten_(whiten) {}

std::unique_ptr<AdvantageEstimator> GaeAdvantage::FromConfig(ConfigReader& config) {
  const double gamma = config.Get<double>("gamma", 1.0);
  if (!(gamma >= 0 && gamma <= 1)) config.Fail("gamma", StrCat("expected a number in [0, 1], got ", gamma));
  const double lam = config.Get<double>("lam", 1.0);
  if (!(lam >= 0 && lam <= 1)) config.Fail("lam", StrCat("expected a number in [0, 1], got ", lam));
  const bool whiten = config.Get<bool>("whiten", true);
  return std::make_unique<GaeAdvantage>(gamma, lam, whiten);
}

AdvantageOutput GaeAdvantage::Compute(const AdvantageInputs& in) const {
  CheckAdvantageInputs(in, "gae");
  LR_CHECK(in.values.has_value() && in.values->defined(), "gae: needs critic values (AdvantageInputs::values)");
  const torch::Tensor& values = *in.values;
  LR_CHECK(values.sizes() == in.response_mask.sizes(), "gae: values ", ShapeString(values),
           " must have the shape of response_mask ", ShapeString(in.response_mask));
  torch::Tensor rewards;
  if (in.token_rewards) {
    rewards = *in.token_rewards;
  } else {
    // Outcome reward on the last response token of each row.
    const int64_t T = in.response_mask.size(1);
    const torch::Tensor pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(values.device()));
    const torch::Tensor last = torch::where(in.response_mask, pos, torch::full({}, -1L, pos.options())).amax(-1);
    const torch::Tensor has = last >= 0;
    const torch::Tensor onehot = torch::logical_and(pos.unsqueeze(0) == last.unsqueeze(-1), has.unsqueeze(-1));
    rewards = onehot.to(values.scalar_type()) * in.scores.to(values.scalar_type()).unsqueeze(-1);
  }
  GaeOutput g = ComputeGae(rewards, values, in.response_mask, gamma_, lam_);
  AdvantageOutput out;
  out.returns = g.returns;
  out.advantages = whiten_ ? MaskedWhiten(g.advantages, in.response_mask) : g.advantages;
  return out;
}

std::string GaeAdvantage::Describe() const {
  return StrCat("gae: gamma=", gamma_, ", lam=", lam_, ", whiten=", whiten_ ? "on" : "off");
}

}  // namespace lightrl::algorithms
