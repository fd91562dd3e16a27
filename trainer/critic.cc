#include "trainer/critic.h"

#include <algorithm>
#include <cmath>

#include "algorithms/losses.h"
#include "core/check.h"

namespace lightrl::trainer {

model::HybridModel MakeValueModel(model::HybridModel& policy, bool init_from_policy, uint64_t seed) {
  model::HybridModel critic(policy->config(), model::HeadType::kValue);
  critic->InitWeights(seed);
  if (init_from_policy) {
    torch::NoGradGuard no_grad;
    const auto source = policy->named_parameters();
    for (auto& item : critic->named_parameters()) {
      const torch::Tensor* p = source.find(item.key());
      if (p == nullptr) continue;  // value_head (the policy has lm_head instead)
      LR_CHECK(p->sizes() == item.value().sizes(), "MakeValueModel: parameter ", item.key(), " has shape ",
               item.value().sizes(), " in the value model but ", p->sizes(), " in the policy");
      item.value().copy_(*p);
    }
  }
  return critic;
}

Critic::Critic(model::HybridModel value_model, const OptimConfig& optim, int64_t total_optimizer_steps,
               double value_clip, Collective* collective)
    : model_(std::move(value_model)),
      optimizer_(model_->named_parameters(), optim, total_optimizer_steps),
      value_clip_(value_clip),
      collective_(collective) {
  LR_CHECK(collective_ != nullptr, "Critic: collective must not be null");
  LR_CHECK(model_->head_type() == model::HeadType::kValue, "Critic: the model must have a value head");
  LR_CHECK(std::isfinite(value_clip_) && value_clip_ > 0, "Critic: value_clip must be > 0, got ", value_clip_);
  for (auto& p : model_->parameters()) params_.push_back(p);
}

torch::Tensor Critic::TargetValues(const MicroBatch& mb) {
  model::ForwardContext ctx;
  ctx.cu_seqlens = mb.cu_seqlens;
  model::ForwardOptions opts;
  opts.skip_head = true;
  model::ModelOutput out = model_->forward(mb.input_ids, ctx, nullptr, opts);
  torch::Tensor h = out.hidden[0].index_select(0, mb.target_positions);  // [N, C]
  return model_->Head(h);                                                // [N] fp32
}

int64_t Critic::ComputeValues(std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                              int64_t micro_batch_tokens) {
  torch::NoGradGuard no_grad;
  int64_t tokens = 0;
  for (const MicroBatch& mb : PackMicroBatches(samples, indices, micro_batch_tokens)) {
    const torch::Tensor v = TargetValues(mb).contiguous();  // [N] fp32
    const float* p = v.data_ptr<float>();
    int64_t offset = 0;
    for (int64_t idx : mb.sample_indices) {
      Sample& s = samples[idx];
      const int64_t R = static_cast<int64_t>(s.response_ids.size());
      s.values.assign(p + offset, p + offset + R);
      offset += R;
    }
    tokens += mb.response_tokens;
  }
  return tokens;
}

StepMetrics Critic::Update(std::vector<Sample>& samples, const std::vector<int64_t>& global_order, int64_t updates,
                           int64_t micro_batch_tokens) {
  LR_CHECK(updates >= 1, "Critic::Update: updates must be >= 1, got ", updates);
  const int rank = collective_->rank(), world = collective_->size();
  const int64_t total = static_cast<int64_t>(global_order.size());
  updates = std::min<int64_t>(updates, std::max<int64_t>(1, total));
  model_->train();
  double loss_sum = 0, grad_norm_sum = 0, clip_sum = 0, token_sum = 0;
  for (int64_t m = 0; m < updates; ++m) {
    std::vector<int64_t> mine;
    double local_tokens = 0;
    for (int64_t idx : MiniBatchShard(global_order, updates, m, rank, world)) {
      const Sample& s = samples[idx];
      if (s.response_ids.empty()) continue;
      mine.push_back(idx);
      local_tokens += static_cast<double>(s.response_ids.size());
    }
    const double global_tokens = collective_->AllReduceSum({local_tokens})[0];
    optimizer_.ZeroGrad();
    double local_loss = 0, local_clip = 0;
    for (const MicroBatch& mb : PackMicroBatches(samples, mine, micro_batch_tokens)) {
      std::vector<float> old_values, returns;
      for (int64_t idx : mb.sample_indices) {
        const Sample& s = samples[idx];
        LR_CHECK(s.values.size() == s.response_ids.size(), "sample ", s.sample_id, ": values has ", s.values.size(),
                 " entries, response has ", s.response_ids.size());
        LR_CHECK(s.returns.size() == s.response_ids.size(), "sample ", s.sample_id, ": returns has ",
                 s.returns.size(), " entries, response has ", s.response_ids.size());
        old_values.insert(old_values.end(), s.values.begin(), s.values.end());
        returns.insert(returns.end(), s.returns.begin(), s.returns.end());
      }
      const torch::Tensor values = TargetValues(mb).unsqueeze(0);  // [1, N] fp32, requires grad
      const torch::Tensor old_v = torch::tensor(old_values).unsqueeze(0);  // [1, N] fp32
      const torch::Tensor ret = torch::tensor(returns).unsqueeze(0);       // [1, N] fp32
      const torch::Tensor mask = torch::ones_like(ret, torch::kBool);      // [1, N] bool
      algorithms::ValueLossOutput out = algorithms::ClippedValueLoss(values, old_v, ret, mask, value_clip_);
      const torch::Tensor loss = out.per_token_loss.sum() / std::max(1.0, global_tokens);  // 0-d
      loss.backward();
      local_loss += loss.item<double>();
      local_clip += out.clip_frac_sum.item<double>();
    }
    // Parameters that got no gradient on this rank (an idle expert, an empty shard) take part.
    std::vector<torch::Tensor> grads;
    for (auto& p : params_) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.mutable_grad());
    }
    collective_->AllReduceSum(grads);
    const std::vector<double> sums = collective_->AllReduceSum({local_loss, local_clip});
    grad_norm_sum += optimizer_.Step();
    loss_sum += sums[0];
    clip_sum += sums[1];
    token_sum += global_tokens;
  }
  StepMetrics out;
  out["critic/value_loss"] = loss_sum / static_cast<double>(updates);
  out["critic/clip_frac"] = token_sum > 0 ? clip_sum / token_sum : 0.0;
  out["critic/grad_norm"] = grad_norm_sum / static_cast<double>(updates);
  out["critic/lr"] = optimizer_.current_lr();
  return out;
}

void WriteTokenAdvantages(const AlgorithmHooks& hooks, std::vector<Sample>* samples, const std::vector<int64_t>& order,
                          const std::vector<std::vector<float>>& token_penalties) {
  LR_CHECK(hooks.needs_critic && hooks.token_advantages, "WriteTokenAdvantages: the hooks have no critic estimator");
  if (order.empty()) return;
  std::vector<double> rewards;
  std::vector<std::vector<float>> values;
  for (int64_t idx : order) {
    const Sample& s = (*samples)[idx];
    LR_CHECK(!s.response_ids.empty() && s.values.size() == s.response_ids.size(), "sample ", s.sample_id, ": ",
             s.values.size(), " values for ", s.response_ids.size(), " response tokens");
    rewards.push_back(s.reward);
    values.push_back(s.values);
  }
  AlgorithmHooks::TokenAdvantages adv = hooks.token_advantages(rewards, values, token_penalties);
  LR_CHECK(adv.advantages.size() == order.size() && adv.returns.size() == order.size(),
           "token advantage estimator returned ", adv.advantages.size(), " rows for ", order.size(), " samples");
  for (size_t k = 0; k < order.size(); ++k) {
    Sample& s = (*samples)[order[k]];
    LR_CHECK(adv.advantages[k].size() == s.response_ids.size() && adv.returns[k].size() == s.response_ids.size(),
             "token advantage estimator: sample ", s.sample_id, " has ", s.response_ids.size(), " tokens but ",
             adv.advantages[k].size(), " advantages and ", adv.returns[k].size(), " returns");
    s.advantages = std::move(adv.advantages[k]);
    s.returns = std::move(adv.returns[k]);
  }
}

double ExplainedVariance(const std::vector<Sample>& samples, const std::vector<int64_t>& indices) {
  double n = 0, sr = 0, srr = 0, sd = 0, sdd = 0;
  for (int64_t idx : indices) {
    const Sample& s = samples[idx];
    LR_CHECK(s.values.size() == s.returns.size(), "sample ", s.sample_id, ": ", s.values.size(), " values but ",
             s.returns.size(), " returns");
    for (size_t t = 0; t < s.values.size(); ++t) {
      const double r = s.returns[t], d = r - static_cast<double>(s.values[t]);
      n += 1;
      sr += r;
      srr += r * r;
      sd += d;
      sdd += d * d;
    }
  }
  if (n == 0) return 0.0;
  const double var_r = srr / n - (sr / n) * (sr / n);
  const double var_d = sdd / n - (sd / n) * (sd / n);
  return var_r > 1e-12 ? 1.0 - var_d / var_r : 0.0;
}

void CaptureCriticState(Critic& critic, TrainingState* state) {
  state->extra_models["critic"] = ExportParameters(*critic.model());
  model::NamedTensors optim;
  for (const auto& [name, t] : critic.optimizer().ExportState()) optim[name] = t;
  state->extra_models["critic_optim"] = std::move(optim);
  if (state->extra.is_null()) state->extra = nlohmann::json::object();
  state->extra["critic_optimizer_step"] = critic.optimizer().step();
}

Status RestoreCriticState(const TrainingState& state, Critic& critic) {
  auto model = state.extra_models.find("critic");
  if (model == state.extra_models.end()) {
    return DataLoss("checkpoint has no extra_models/critic (written by a run without a critic?); the recipe "
                    "needs one (algorithm.critic)");
  }
  auto optim = state.extra_models.find("critic_optim");
  if (optim == state.extra_models.end()) return DataLoss("checkpoint has extra_models/critic but no critic_optim");
  if (!state.extra.is_object() || !state.extra.contains("critic_optimizer_step") ||
      !state.extra["critic_optimizer_step"].is_number_integer()) {
    return DataLoss("checkpoint json/extra: missing integer 'critic_optimizer_step'");
  }
  LR_RETURN_IF_ERROR(LoadParameters(*critic.model(), model->second, "checkpoint critic"));
  std::map<std::string, torch::Tensor> optim_state(optim->second.begin(), optim->second.end());
  return critic.optimizer()
      .ImportState(optim_state, state.extra["critic_optimizer_step"].get<int64_t>())
      .WithContext("checkpoint critic_optim");
}

}  // namespace lightrl::trainer
