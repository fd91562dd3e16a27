// PolicyTrainer: the data-parallel update of one trainer rank. Holds the policy (fp32 master
// weights), its AdamW state, and runs
//   * ComputeLogProbs: the training forward (packed micro-batches, FP32 head) without grad,
//     giving per-token log-probs of response tokens — the same quantity the rollout engine
//     reports (model::TokenLogProbs of logits / temperature over the full vocabulary);
//   * Update: several off-policy mini-batch updates per rollout batch; in each, every rank
//     runs its shard, the caller's loss is normalised by GLOBAL counts (all-reduced token and
//     sequence counts), gradients are all-reduced (summed) and one optimizer step is taken.
//
// Splitting a mini-batch over k ranks gives the same update as one rank with the whole
// mini-batch (up to floating-point summation order), because the normaliser is global.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/hybrid_model.h"
#include "trainer/batch.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"

namespace lightrl::trainer {

// Collectives over the trainer ranks (MPI on CPU: MpiCollective; an NCCL implementation for
// GPU training is not written yet). A single-rank job uses
// LocalCollective.
class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place element-wise sum over ranks of every tensor (contiguous fp32).
  virtual void AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
  // Sum over ranks of each value.
  virtual std::vector<double> AllReduceSum(const std::vector<double>& values) = 0;
  // Max over ranks of each value.
  virtual std::vector<double> AllReduceMax(const std::vector<double>& values) = 0;
};

class LocalCollective : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void AllReduceSum(std::vector<torch::Tensor>&) override {}
  std::vector<double> AllReduceSum(const std::vector<double>& values) override { return values; }
  std::vector<double> AllReduceMax(const std::vector<double>& values) override { return values; }
};

// What the loss sees for one micro-batch of N response tokens from n samples.
struct LossInputs {
  torch::Tensor logp;          // [N] fp32, requires grad (current policy)
  torch::Tensor old_logp;      // [N] fp32 (the policy that generated, or recomputed)
  torch::Tensor rollout_logp;  // [N] fp32 (as reported by the rollout engine)
  torch::Tensor ref_logp;      // [N] fp32 under the reference policy; defined iff the samples carry
                               // ref_logprobs (algorithm.kl.coef > 0 as a loss term)
  torch::Tensor advantages;    // [N] fp32
  torch::Tensor token_sample;  // [N] int64 in [0, n): which sample of the micro-batch
  torch::Tensor sample_lengths;  // [n] int64: response tokens of each sample
  torch::Tensor logits;        // [N, V] fp32 (for entropy), requires grad
  double global_tokens = 0;    // response tokens of the whole mini-batch over all ranks
  double global_samples = 0;   // samples of the whole mini-batch over all ranks
};

// Returns the micro-batch's contribution to the mini-batch loss (a 0-d tensor already divided
// by the global normaliser, so contributions sum over micro-batches and ranks), and adds
// metric sums (value * count pairs) to `metrics` under names of its choice.
using LossFn = std::function<torch::Tensor(const LossInputs&, std::map<std::string, double>* metric_sums)>;

struct UpdateOptions {
  int64_t updates_per_rollout = 1;   // mini-batches (optimizer steps) per rollout batch
  int64_t micro_batch_tokens = 4096; // packing budget of one forward/backward
  double temperature = 1.0;          // log-probs of logits / temperature (as the rollout engine)
  // Names of the metric sums the loss function reports; the same list on every rank (it fixes
  // the all-reduce layout). Reported as sum / global token count.
  std::vector<std::string> metric_names;
  // Add the MoE load-balancing loss (router_aux_loss_coef * aux, per micro-batch, weighted by
  // its share of the mini-batch's response tokens). Off keeps an update exactly independent of
  // how the mini-batch is split into micro-batches and ranks (the aux loss is a per-batch
  // statistic); reported as "loss/moe_aux".
  bool moe_aux_loss = false;
};

// Logits [N, V] fp32 (FP32 head) of `model` at the micro-batch's target positions (training
// forward over the packed row). aux_loss (if non-null) receives the MoE aux loss (0-d fp32).
torch::Tensor TargetLogits(model::HybridModel& model, const MicroBatch& mb, torch::Tensor* aux_loss = nullptr);

// Per-token log-probs [R] fp32 of the response tokens of samples[indices] under `model`, without
// grad, in packed micro-batches of at most micro_batch_tokens (logits / temperature over the full
// vocabulary, the rollout engine's quantity). Calls write(sample, log-probs) for each; returns the
// number of tokens processed.
int64_t ResponseLogProbs(model::HybridModel& model, std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                         int64_t micro_batch_tokens, double temperature,
                         const std::function<void(Sample&, std::vector<float>)>& write);

class PolicyTrainer {
 public:
  PolicyTrainer(model::HybridModel model, const OptimConfig& optim, int64_t total_optimizer_steps,
                Collective* collective);

  // Per-token log-probs of the response tokens of samples[indices] (no grad), written into
  // each sample's old_logprobs. Returns the number of tokens processed.
  int64_t ComputeLogProbs(std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                          const UpdateOptions& options, bool write_old);

  // Runs options.updates_per_rollout mini-batch updates. `global_order` lists every unmasked
  // sample of the step on EVERY rank in the same order; mini-batch m is the m-th contiguous
  // slice and this rank trains the entries i with i % size == rank. Returns averaged metrics
  // ("loss/policy", "grad_norm", "lr", plus the loss function's metric sums / token count).
  StepMetrics Update(std::vector<Sample>& samples, const std::vector<int64_t>& global_order,
                     const UpdateOptions& options, const LossFn& loss);

  model::HybridModel& model() { return model_; }
  Optimizer& optimizer() { return optimizer_; }

 private:
  model::HybridModel model_;
  Optimizer optimizer_;
  Collective* collective_;
  std::vector<torch::Tensor> params_;
};

}  // namespace lightrl::trainer
