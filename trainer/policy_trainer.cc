#include "trainer/policy_trainer.h"

#include "core/check.h"

namespace lightrl::trainer {

PolicyTrainer::PolicyTrainer(model::HybridModel model, const OptimConfig& optim, int64_t total_optimizer_steps,
                             Collective* collective)
    : model_(std::move(model)),
      optimizer_(model_->named_parameters(), optim, total_optimizer_steps),
      collective_(collective) {
  LR_CHECK(collective_ != nullptr, "PolicyTrainer: collective must not be null");
  for (auto& p : model_->parameters()) params_.push_back(p);
}

torch::Tensor TargetLogits(model::HybridModel& model, const MicroBatch& mb, torch::Tensor* aux_loss) {
  model::ForwardContext ctx;
  ctx.cu_seqlens = mb.cu_seqlens;
  model::ForwardOptions opts;
  opts.skip_head = true;
  opts.compute_aux_loss = aux_loss != nullptr;
  model::ModelOutput out = model->forward(mb.input_ids, ctx, nullptr, opts);
  if (aux_loss) *aux_loss = out.aux_loss;
  torch::Tensor h = out.hidden[0].index_select(0, mb.target_positions);  // [N, C]
  return model->Head(h);                                                 // [N, V] fp32
}

int64_t ResponseLogProbs(model::HybridModel& model, std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                         int64_t micro_batch_tokens, double temperature,
                         const std::function<void(Sample&, std::vector<float>)>& write) {
  torch::NoGradGuard no_grad;
  int64_t tokens = 0;
  for (const MicroBatch& mb : PackMicroBatches(samples, indices, micro_batch_tokens)) {
    torch::Tensor logits = TargetLogits(model, mb);  // [N, V] fp32
    torch::Tensor logp =
        model::TokenLogProbs(logits.unsqueeze(0), mb.targets.unsqueeze(0), temperature)[0].contiguous();  // [N]
    const float* lp = logp.data_ptr<float>();
    int64_t offset = 0;
    for (int64_t idx : mb.sample_indices) {
      Sample& s = samples[idx];
      const int64_t R = static_cast<int64_t>(s.response_ids.size());
      write(s, std::vector<float>(lp + offset, lp + offset + R));
      offset += R;
    }
    tokens += mb.response_tokens;
  }
  return tokens;
}

int64_t PolicyTrainer::ComputeLogProbs(std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                                       const UpdateOptions& options, bool write_old) {
  return ResponseLogProbs(model_, samples, indices, options.micro_batch_tokens, options.temperature,
                          [write_old](Sample& s, std::vector<float> values) {
                            if (write_old) s.old_logprobs = std::move(values);
                          });
}

StepMetrics PolicyTrainer::Update(std::vector<Sample>& samples, const std::vector<int64_t>& global_order,
                                  const UpdateOptions& options, const LossFn& loss_fn) {
  LR_CHECK(options.updates_per_rollout >= 1, "updates_per_rollout must be >= 1");
  const int rank = collective_->rank(), world = collective_->size();
  const int64_t total = static_cast<int64_t>(global_order.size());
  const int64_t updates = std::min<int64_t>(options.updates_per_rollout, std::max<int64_t>(1, total));
  model_->train();
  std::map<std::string, double> metric_sums;
  double loss_sum = 0, grad_norm_sum = 0, token_sum = 0;
  for (int64_t m = 0; m < updates; ++m) {
    std::vector<int64_t> mine;
    double local_tokens = 0, local_samples = 0;
    for (int64_t idx : MiniBatchShard(global_order, updates, m, rank, world)) {
      const Sample& s = samples[idx];
      if (s.response_ids.empty()) continue;
      mine.push_back(idx);
      local_tokens += static_cast<double>(s.response_ids.size());
      local_samples += 1;
    }
    std::vector<double> counts = collective_->AllReduceSum({local_tokens, local_samples});
    optimizer_.ZeroGrad();
    double local_loss = 0;
    for (const MicroBatch& mb : PackMicroBatches(samples, mine, options.micro_batch_tokens)) {
      std::vector<float> old_lp, roll_lp, adv, ref_lp;
      std::vector<int64_t> lengths;
      const bool with_ref = !samples[mb.sample_indices.front()].ref_logprobs.empty();
      for (int64_t idx : mb.sample_indices) {
        const Sample& s = samples[idx];
        if (with_ref) {
          LR_CHECK(s.ref_logprobs.size() == s.response_ids.size(), "sample ", s.sample_id, ": ref_logprobs has ",
                   s.ref_logprobs.size(), " entries, response has ", s.response_ids.size());
          ref_lp.insert(ref_lp.end(), s.ref_logprobs.begin(), s.ref_logprobs.end());
        }
        LR_CHECK(s.old_logprobs.size() == s.response_ids.size(), "sample ", s.sample_id,
                 ": old_logprobs has ", s.old_logprobs.size(), " entries, response has ", s.response_ids.size());
        LR_CHECK(s.advantages.size() == s.response_ids.size(), "sample ", s.sample_id, ": advantages has ",
                 s.advantages.size(), " entries, response has ", s.response_ids.size());
        LR_CHECK(s.rollout_logprobs.size() == s.response_ids.size(), "sample ", s.sample_id,
                 ": rollout_logprobs has ", s.rollout_logprobs.size(), " entries, response has ",
                 s.response_ids.size());
        old_lp.insert(old_lp.end(), s.old_logprobs.begin(), s.old_logprobs.end());
        roll_lp.insert(roll_lp.end(), s.rollout_logprobs.begin(), s.rollout_logprobs.end());
        adv.insert(adv.end(), s.advantages.begin(), s.advantages.end());
        lengths.push_back(static_cast<int64_t>(s.response_ids.size()));
      }
      LossInputs in;
      torch::Tensor aux;  // 0-d fp32: router_aux_loss_coef * load-balancing loss of this micro-batch
      in.logits = TargetLogits(model_, mb, options.moe_aux_loss ? &aux : nullptr);
      in.logp = model::TokenLogProbs(in.logits.unsqueeze(0), mb.targets.unsqueeze(0), options.temperature)[0];
      in.old_logp = torch::tensor(old_lp);
      in.rollout_logp = torch::tensor(roll_lp);
      if (with_ref) in.ref_logp = torch::tensor(ref_lp);
      in.advantages = torch::tensor(adv);
      in.token_sample = mb.token_sample;
      in.sample_lengths = torch::tensor(lengths, torch::kLong);
      in.global_tokens = counts[0];
      in.global_samples = counts[1];
      torch::Tensor loss = loss_fn(in, &metric_sums);
      LR_CHECK(loss.dim() == 0, "loss function must return a 0-d tensor");
      if (aux.defined()) {
        // Token-weighted share of the mini-batch, like the policy loss's global normaliser.
        const double share = static_cast<double>(mb.response_tokens) / std::max(1.0, counts[0]);
        metric_sums["loss/moe_aux"] += aux.item<double>() * static_cast<double>(mb.response_tokens);
        loss = loss + aux * share;
      }
      loss.backward();
      local_loss += loss.item<double>();
    }
    // Parameters that got no gradient on this rank (e.g. an idle expert) still take part.
    std::vector<torch::Tensor> grads;
    for (auto& p : params_) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.mutable_grad());
    }
    collective_->AllReduceSum(grads);
    const double global_loss = collective_->AllReduceSum({local_loss})[0];
    grad_norm_sum += optimizer_.Step();
    loss_sum += global_loss;
    token_sum += counts[0];
  }
  // Metric sums are per-rank; make them global.
  const std::vector<std::string>& keys = options.metric_names;
  std::vector<double> values;
  for (const auto& k : keys) {
    auto it = metric_sums.find(k);
    values.push_back(it == metric_sums.end() ? 0.0 : it->second);
  }
  if (!values.empty()) values = collective_->AllReduceSum(values);
  StepMetrics out;
  for (size_t i = 0; i < keys.size(); ++i) out[keys[i]] = token_sum > 0 ? values[i] / token_sum : 0.0;
  if (options.moe_aux_loss) {
    const double aux = collective_->AllReduceSum({metric_sums["loss/moe_aux"]})[0];
    out["loss/moe_aux"] = token_sum > 0 ? aux / token_sum : 0.0;
  }
  out["loss/policy"] = loss_sum / static_cast<double>(updates);
  out["optim/grad_norm"] = grad_norm_sum / static_cast<double>(updates);
  out["optim/lr"] = optimizer_.current_lr();
  out["optim/updates"] = static_cast<double>(updates);
  return out;
}

}  // namespace lightrl::trainer
