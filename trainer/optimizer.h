// AdamW with M1's settings (β = (0.9, 0.95), eps = 1e-15: the gradients are tiny, algorithms.md
// §6.2), decoupled weight decay (not applied to norms), a warm-up-then-constant or cosine LR
// schedule, and global gradient-norm clipping. State is exported by parameter NAME so a
// checkpoint is independent of world size and parameter order.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/status.h"

namespace lightrl::trainer {

struct OptimConfig {
  double lr = 1e-6;
  int64_t warmup_steps = 20;       // linear warm-up from lr/warmup_steps to lr
  std::string schedule = "constant";  // constant | cosine
  int64_t cosine_steps = 0;        // cosine horizon in optimizer steps (0 = from the run length)
  double min_lr_ratio = 0.1;       // cosine floor as a fraction of lr
  double weight_decay = 0.0;       // M1 gives none; verl's DAPO recipe uses 0.1
  double grad_clip = 1.0;          // max global L2 norm (<= 0 disables)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-15;
};

// Parses an `optim:` block (unknown keys rejected, errors name the key).
OptimConfig ParseOptimConfig(ConfigReader& reader);

// LR for optimizer step `step` (0-based: the LR used by the (step+1)-th update).
double ScheduledLr(const OptimConfig& config, int64_t step, int64_t total_steps);

class Optimizer {
 public:
  // params: the model's named parameters (fp32 master weights). total_steps: optimizer steps
  // of the whole run (for the cosine horizon).
  Optimizer(const torch::OrderedDict<std::string, torch::Tensor>& params, const OptimConfig& config,
            int64_t total_steps);

  // Clips the global gradient norm (after the data-parallel all-reduce), sets the scheduled LR
  // and applies one AdamW update. Returns the pre-clip gradient norm.
  double Step();
  void ZeroGrad();

  int64_t step() const { return step_; }
  double current_lr() const { return ScheduledLr(config_, step_, total_steps_); }

  // State by parameter name: "exp_avg/<name>", "exp_avg_sq/<name>" fp32 tensors; step counter.
  std::map<std::string, torch::Tensor> ExportState() const;
  // Restores ExportState's output; every parameter must be present with its shape (errors
  // name the tensor). An empty map with step 0 is a fresh optimizer.
  Status ImportState(const std::map<std::string, torch::Tensor>& state, int64_t step);

 private:
  OptimConfig config_;
  int64_t total_steps_;
  int64_t step_ = 0;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_;
  std::vector<bool> decay_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;  // [param shape] fp32 each
};

}  // namespace lightrl::trainer
