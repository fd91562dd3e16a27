#include "trainer/optimizer.h"

#include <cmath>

#include "core/check.h"

namespace lightrl::trainer {

OptimConfig ParseOptimConfig(ConfigReader& r) {
  OptimConfig c;
  c.lr = r.Get<double>("lr", c.lr);
  c.warmup_steps = r.Get<int64_t>("warmup_steps", c.warmup_steps);
  c.schedule = r.Get<std::string>("schedule", c.schedule);
  c.cosine_steps = r.Get<int64_t>("cosine_steps", c.cosine_steps);
  c.min_lr_ratio = r.Get<double>("min_lr_ratio", c.min_lr_ratio);
  c.weight_decay = r.Get<double>("weight_decay", c.weight_decay);
  c.grad_clip = r.Get<double>("grad_clip", c.grad_clip);
  c.beta1 = r.Get<double>("beta1", c.beta1);
  c.beta2 = r.Get<double>("beta2", c.beta2);
  c.eps = r.Get<double>("eps", c.eps);
  if (!(c.lr > 0)) r.Fail("lr", "expected a positive learning rate");
  if (c.warmup_steps < 0) r.Fail("warmup_steps", "expected >= 0");
  if (c.schedule != "constant" && c.schedule != "cosine") r.Fail("schedule", "expected 'constant' or 'cosine'");
  if (c.min_lr_ratio < 0 || c.min_lr_ratio > 1) r.Fail("min_lr_ratio", "expected a value in [0, 1]");
  if (c.weight_decay < 0) r.Fail("weight_decay", "expected >= 0");
  if (!(c.beta1 >= 0 && c.beta1 < 1)) r.Fail("beta1", "expected a value in [0, 1)");
  if (!(c.beta2 >= 0 && c.beta2 < 1)) r.Fail("beta2", "expected a value in [0, 1)");
  if (!(c.eps > 0)) r.Fail("eps", "expected > 0");
  r.Finish();
  return c;
}

double ScheduledLr(const OptimConfig& c, int64_t step, int64_t total_steps) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) {
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.schedule == "constant") return c.lr;
  const int64_t horizon = std::max<int64_t>(1, (c.cosine_steps > 0 ? c.cosine_steps : total_steps) - c.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / static_cast<double>(horizon));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * cosine);
}

Optimizer::Optimizer(const torch::OrderedDict<std::string, torch::Tensor>& params, const OptimConfig& config,
                     int64_t total_steps)
    : config_(config), total_steps_(total_steps) {
  for (const auto& item : params) {
    names_.push_back(item.key());
    params_.push_back(item.value());
    // No decay on norms (1-D gains); everything else (matrices, embeddings) decays.
    decay_.push_back(item.value().dim() >= 2);
    exp_avg_.push_back(torch::zeros_like(item.value(), torch::kFloat32));
    exp_avg_sq_.push_back(torch::zeros_like(item.value(), torch::kFloat32));
  }
}

void Optimizer::ZeroGrad() {
  for (auto& p : params_) {
    if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
}

double Optimizer::Step() {
  torch::NoGradGuard no_grad;
  // Global L2 norm over all gradients (already all-reduced across ranks).
  double sq = 0;
  for (auto& p : params_)
    if (p.grad().defined()) sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  LR_CHECK(std::isfinite(norm), "Optimizer::Step: gradient norm is ", norm,
           " (NaN/inf in the gradients; check the loss inputs)");
  const double clip = (config_.grad_clip > 0 && norm > config_.grad_clip) ? config_.grad_clip / (norm + 1e-12) : 1.0;
  const double lr = ScheduledLr(config_, step_, total_steps_);
  ++step_;
  const double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(step_));
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.grad().to(torch::kFloat32);
    if (clip != 1.0) g = g * clip;
    if (decay_[i] && config_.weight_decay > 0) p.mul_(1.0 - lr * config_.weight_decay);
    exp_avg_[i].mul_(config_.beta1).add_(g, 1.0 - config_.beta1);
    exp_avg_sq_[i].mul_(config_.beta2).addcmul_(g, g, 1.0 - config_.beta2);
    torch::Tensor denom = (exp_avg_sq_[i] / bc2).sqrt_().add_(config_.eps);
    p.addcdiv_(exp_avg_[i], denom, -lr / bc1);
  }
  return norm;
}

std::map<std::string, torch::Tensor> Optimizer::ExportState() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < names_.size(); ++i) {
    out["exp_avg/" + names_[i]] = exp_avg_[i];
    out["exp_avg_sq/" + names_[i]] = exp_avg_sq_[i];
  }
  return out;
}

Status Optimizer::ImportState(const std::map<std::string, torch::Tensor>& state, int64_t step) {
  if (step < 0) return InvalidArgument(StrCat("optimizer step must be >= 0, got ", step));
  for (size_t i = 0; i < names_.size(); ++i) {
    for (const char* kind : {"exp_avg/", "exp_avg_sq/"}) {
      auto it = state.find(kind + names_[i]);
      if (it == state.end()) return InvalidArgument(StrCat("optimizer state: missing '", kind, names_[i], "'"));
      if (it->second.sizes() != params_[i].sizes()) {
        return InvalidArgument(StrCat("optimizer state: '", kind, names_[i], "' has shape ", it->second.sizes(),
                                      ", parameter has ", params_[i].sizes()));
      }
    }
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < names_.size(); ++i) {
    exp_avg_[i].copy_(state.at("exp_avg/" + names_[i]));
    exp_avg_sq_[i].copy_(state.at("exp_avg_sq/" + names_[i]));
  }
  step_ = step;
  return Status::Ok();
}

}  // namespace lightrl::trainer
