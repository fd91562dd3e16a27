#include "trainer/algorithm_hooks.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "algorithms/aggregation.h"
#include "algorithms/losses.h"
#include "core/check.h"

namespace lightrl::trainer {

namespace {

namespace alg = lightrl::algorithms;

std::string ShapeString(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

void CheckTokenTensor(const torch::Tensor& t, int64_t N, const char* field) {
  LR_CHECK(t.defined() && t.dim() == 1 && t.size(0) == N, "algorithm loss: LossInputs.", field, " must be [N] = [",
           N, "], got ", ShapeString(t));
  LR_CHECK(t.is_floating_point(), "algorithm loss: LossInputs.", field, " must be floating point, got ",
           t.scalar_type());
}

// Everything the loss closure needs (shared by copies of the std::function).
struct LossState {
  std::shared_ptr<const alg::PolicyLoss> policy_loss;
  alg::AggregationConfig aggregation;
  std::optional<alg::IsCorrectionConfig> is_correction;
  double entropy_coef = 0;
  double kl_coef = 0;   // > 0: kl_coef * KL(logp || ref) added per token (loss-term KL)
  alg::KlEstimator kl_estimator = alg::KlEstimator::kK3;
  std::vector<std::string> sum_names;  // from the policy loss, then ours
};

torch::Tensor ComputeLoss(const LossState& st, const LossInputs& in, std::map<std::string, double>* metric_sums) {
  LR_CHECK(in.logp.defined() && in.logp.dim() == 1, "algorithm loss: LossInputs.logp must be [N], got ",
           ShapeString(in.logp));
  const int64_t N = in.logp.size(0);
  CheckTokenTensor(in.logp, N, "logp");
  CheckTokenTensor(in.old_logp, N, "old_logp");
  CheckTokenTensor(in.rollout_logp, N, "rollout_logp");
  CheckTokenTensor(in.advantages, N, "advantages");
  LR_CHECK(std::isfinite(in.global_tokens) && in.global_tokens >= N && in.global_tokens > 0,
           "algorithm loss: LossInputs.global_tokens = ", in.global_tokens,
           " must be the all-reduced token count of the mini-batch (>= this micro-batch's ", N, " tokens)");
  LR_CHECK(std::isfinite(in.global_samples) && in.global_samples >= in.sample_lengths.size(0) && in.global_samples > 0,
           "algorithm loss: LossInputs.global_samples = ", in.global_samples,
           " must be the all-reduced sample count of the mini-batch (>= this micro-batch's ",
           in.sample_lengths.defined() ? in.sample_lengths.size(0) : 0, " samples)");
  // logits are needed for the entropy bonus; the trainer always passes them (then the entropy
  // metric is reported too), hand-built inputs without a bonus may leave them undefined.
  if (st.entropy_coef > 0 || in.logits.defined()) {
    LR_CHECK(in.logits.defined() && in.logits.dim() == 2 && in.logits.size(0) == N,
             "algorithm loss: LossInputs.logits must be [N, V] with N = ", N, ", got ", ShapeString(in.logits),
             st.entropy_coef > 0 ? " (needed by algorithm.entropy_coef > 0)" : "");
  }
  const PaddedLayout layout = MakePaddedLayout(in.token_sample, in.sample_lengths);
  const auto dtype = in.logp.scalar_type();

  alg::PolicyLossInputs pin;
  pin.logp = ToPadded(in.logp, layout);
  pin.old_logp = ToPadded(in.old_logp.detach().to(dtype), layout);
  pin.advantages = ToPadded(in.advantages.detach().to(dtype), layout);
  pin.response_mask = layout.mask;
  std::vector<std::pair<std::string, torch::Tensor>> sums;
  if (st.is_correction) {
    const torch::Tensor roll = ToPadded(in.rollout_logp.detach().to(dtype), layout);
    const torch::Tensor c = alg::ComputeIsWeights(pin.old_logp, roll, layout.mask, *st.is_correction);
    pin.is_weights = c;
    sums.emplace_back("actor/is_weight_mean", torch::where(layout.mask, c, torch::zeros({}, c.options())).sum());
    sums.emplace_back("actor/is_zeroed_frac", torch::logical_and(layout.mask, c == 0).sum().to(dtype));
  }
  alg::PolicyLossOutput out = st.policy_loss->Compute(pin);
  torch::Tensor per_token = out.per_token_loss;

  if (st.entropy_coef > 0) {
    const torch::Tensor entropy = alg::TokenEntropy(in.logits.to(dtype));  // [N], differentiable
    per_token = per_token - st.entropy_coef * ToPadded(entropy, layout);
    sums.emplace_back("actor/entropy", entropy.detach().sum());
  } else if (in.logits.defined()) {
    // Metric only: in row chunks, so no second full [N, V] temporary is alive at once
    // (V = 200,064 for M1; algorithms.md §9 row 8).
    torch::NoGradGuard no_grad;
    constexpr int64_t kChunk = 1024;
    torch::Tensor total = torch::zeros({}, in.logits.options().dtype(dtype));
    for (int64_t begin = 0; begin < N; begin += kChunk) {
      total += alg::TokenEntropy(in.logits.detach().narrow(0, begin, std::min(kChunk, N - begin)).to(dtype)).sum();
    }
    sums.emplace_back("actor/entropy", total);
  }

  if (st.kl_coef > 0) {
    LR_CHECK(in.ref_logp.defined(), "algorithm loss: LossInputs.ref_logp is required by algorithm.kl.coef = ",
             st.kl_coef, " (the reference policy's log-probs)");
    CheckTokenTensor(in.ref_logp, N, "ref_logp");
    const torch::Tensor kl =
        alg::KlPenalty(pin.logp, ToPadded(in.ref_logp.detach().to(dtype), layout), st.kl_estimator);  // [n, L]
    const torch::Tensor kl_masked = torch::where(layout.mask, kl, torch::zeros({}, kl.options()));
    per_token = per_token + st.kl_coef * kl_masked;
    sums.emplace_back("actor/kl", kl_masked.detach().sum());
  }

  const torch::Tensor loss =
      alg::Aggregate(per_token, layout.mask, st.aggregation, {in.global_tokens, in.global_samples});

  if (metric_sums) {
    // One device->host copy for all metrics.
    std::vector<std::string> names;
    std::vector<torch::Tensor> values;
    for (const auto& name : st.policy_loss->SumNames()) {
      auto it = out.sums.find(name);
      LR_CHECK(it != out.sums.end(), "policy loss did not report its declared stat '", name, "'");
      names.push_back(name);
      values.push_back(it->second.detach().to(torch::kDouble).reshape({}));
    }
    for (auto& [name, v] : sums) {
      names.push_back(name);
      values.push_back(v.detach().to(torch::kDouble).reshape({}));
    }
    const torch::Tensor host = torch::stack(values).to(torch::kCPU).contiguous();
    const double* p = host.data_ptr<double>();
    for (size_t i = 0; i < names.size(); ++i) (*metric_sums)[names[i]] += p[i];
  }
  return loss;
}

}  // namespace

PaddedLayout MakePaddedLayout(const torch::Tensor& token_sample, const torch::Tensor& sample_lengths) {
  LR_CHECK(token_sample.defined() && token_sample.dim() == 1 && token_sample.scalar_type() == torch::kLong,
           "algorithm loss: LossInputs.token_sample must be [N] int64, got ", ShapeString(token_sample));
  LR_CHECK(sample_lengths.defined() && sample_lengths.dim() == 1 && sample_lengths.scalar_type() == torch::kLong,
           "algorithm loss: LossInputs.sample_lengths must be [n] int64, got ", ShapeString(sample_lengths));
  const torch::Tensor ts = token_sample.to(torch::kCPU);
  const torch::Tensor len = sample_lengths.to(torch::kCPU);
  const int64_t N = ts.size(0), n = len.size(0);
  LR_CHECK(n > 0 || N == 0, "algorithm loss: ", N, " tokens but no samples");
  PaddedLayout out;
  out.samples = n;
  if (n > 0) {
    LR_CHECK(len.min().item<int64_t>() >= 0, "algorithm loss: negative entry in sample_lengths");
    LR_CHECK(len.sum().item<int64_t>() == N, "algorithm loss: sample_lengths sum to ", len.sum().item<int64_t>(),
             " but there are N = ", N, " tokens");
  }
  if (N > 0) {
    LR_CHECK(ts.min().item<int64_t>() >= 0 && ts.max().item<int64_t>() < n,
             "algorithm loss: token_sample entries must be in [0, ", n, ")");
    LR_CHECK(torch::equal(torch::bincount(ts, {}, n), len),
             "algorithm loss: token counts per sample in token_sample differ from sample_lengths");
  }
  out.max_len = n > 0 ? std::max<int64_t>(1, len.max().item<int64_t>()) : 1;
  const torch::Tensor offsets = len.cumsum(0) - len;  // [n]
  const torch::Tensor pos = torch::arange(N, torch::kLong) - offsets.index_select(0, ts);
  if (N > 0) {
    LR_CHECK(torch::logical_and(pos >= 0, pos < len.index_select(0, ts)).all().item<bool>(),
             "algorithm loss: the tokens of each sample must be contiguous in token_sample, in sample order");
  }
  const auto device = token_sample.device();
  out.flat_index = (ts * out.max_len + pos).to(device);
  out.mask = torch::zeros({n * out.max_len}, torch::TensorOptions().dtype(torch::kBool).device(device))
                 .index_fill(0, out.flat_index, true)
                 .view({n, out.max_len});
  return out;
}

torch::Tensor ToPadded(const torch::Tensor& x, const PaddedLayout& layout) {
  LR_CHECK(x.dim() == 1 && x.size(0) == layout.flat_index.size(0), "ToPadded: x must be [N] = [",
           layout.flat_index.size(0), "], got ", ShapeString(x));
  return torch::zeros({layout.samples * layout.max_len}, x.options())
      .scatter(0, layout.flat_index.to(x.device()), x)
      .view({layout.samples, layout.max_len});
}

StatusOr<AlgorithmHooks> BuildAlgorithmHooksFromRecipe(const algorithms::Recipe& recipe, const std::string& path) {
  if (!recipe.advantage || !recipe.policy_loss) return InvalidArgument(StrCat(path, ": recipe is incomplete"));
  if (recipe.advantage->needs_values() && !recipe.critic) {
    return InvalidArgument(StrCat(path, ".critic: required by advantage estimator '", recipe.advantage_name, "'"));
  }
  AlgorithmHooks h;
  h.name = recipe.name;
  h.updates_per_rollout = recipe.updates_per_rollout;
  h.recompute_old_logprobs = recipe.old_logprob_source == algorithms::OldLogprobSource::kRecompute;
  h.dynamic_sampling = recipe.dynamic_sampling.enabled;
  h.max_gen_batches = recipe.dynamic_sampling.max_gen_batches;
  h.description = recipe.Describe();
  h.kl_coef = recipe.kl.coef;
  h.kl_in_reward = recipe.kl.in_reward;
  h.kl_estimator = recipe.kl.estimator;

  std::shared_ptr<const algorithms::AdvantageEstimator> estimator = recipe.advantage;
  if (estimator->needs_values()) {
    h.needs_critic = true;
    h.critic_value_clip = recipe.critic->value_clip;
    h.critic_lr = recipe.critic->lr;
    h.critic_init_from_policy = recipe.critic->init_from_policy;
    h.token_advantages = [estimator](const std::vector<double>& rewards, const std::vector<std::vector<float>>& values,
                                     const std::vector<std::vector<float>>& token_penalties) {
      LR_CHECK(rewards.size() == values.size(), "token advantages: ", rewards.size(), " rewards but ", values.size(),
               " value rows");
      LR_CHECK(token_penalties.empty() || token_penalties.size() == values.size(), "token advantages: ",
               token_penalties.size(), " penalty rows for ", values.size(), " samples");
      const int64_t n = static_cast<int64_t>(rewards.size());
      int64_t T = 1;
      for (const auto& v : values) T = std::max<int64_t>(T, static_cast<int64_t>(v.size()));
      // Padded [n, T] fp64 (the GAE scan and the whitening in double; results stored as fp32).
      torch::Tensor v = torch::zeros({n, T}, torch::kDouble);
      torch::Tensor mask = torch::zeros({n, T}, torch::kBool);
      auto va = v.accessor<double, 2>();
      auto ma = mask.accessor<bool, 2>();
      for (int64_t i = 0; i < n; ++i) {
        LR_CHECK(!values[i].empty(), "token advantages: sample ", i, " has no response tokens");
        for (size_t t = 0; t < values[i].size(); ++t) {
          va[i][t] = values[i][t];
          ma[i][t] = true;
        }
      }
      algorithms::AdvantageInputs in;
      in.scores = torch::tensor(rewards, torch::kDouble);
      in.group_index = torch::arange(n, torch::kLong);
      in.response_mask = mask;
      in.values = v;  // without penalties, token_rewards unset: the score on the last response token of each row
      if (!token_penalties.empty()) {
        // Token rewards: the penalties on every token, plus the outcome score on the last one.
        torch::Tensor tr = torch::zeros({n, T}, torch::kDouble);  // [n, T] fp64
        auto ta = tr.accessor<double, 2>();
        for (int64_t i = 0; i < n; ++i) {
          LR_CHECK(token_penalties[i].size() == values[i].size(), "token advantages: sample ", i, " has ",
                   token_penalties[i].size(), " penalties for ", values[i].size(), " tokens");
          for (size_t t = 0; t < values[i].size(); ++t) ta[i][t] = token_penalties[i][t];
          ta[i][static_cast<int64_t>(values[i].size()) - 1] += rewards[i];
        }
        in.token_rewards = tr;
      }
      algorithms::AdvantageOutput out = estimator->Compute(in);
      const torch::Tensor a = out.advantages.to(torch::kDouble).contiguous();
      const torch::Tensor r = out.returns.to(torch::kDouble).contiguous();
      AlgorithmHooks::TokenAdvantages result;
      for (int64_t i = 0; i < n; ++i) {
        const double* ap = a.data_ptr<double>() + i * T;
        const double* rp = r.data_ptr<double>() + i * T;
        result.advantages.emplace_back(ap, ap + values[i].size());
        result.returns.emplace_back(rp, rp + values[i].size());
      }
      return result;
    };
  } else {
    h.advantages = [estimator](const std::vector<double>& rewards, const std::vector<int64_t>& groups) {
      LR_CHECK(rewards.size() == groups.size(), "advantages: ", rewards.size(), " rewards but ", groups.size(),
               " group ids");
      const int64_t n = static_cast<int64_t>(rewards.size());
      algorithms::AdvantageInputs in;
      in.scores = torch::tensor(rewards, torch::kDouble);
      in.group_index = torch::tensor(groups, torch::kLong);
      in.response_mask = torch::ones({n, 1}, torch::kBool);
      const torch::Tensor a = estimator->Compute(in).advantages.select(1, 0).contiguous().to(torch::kDouble);
      return std::vector<double>(a.data_ptr<double>(), a.data_ptr<double>() + n);
    };
  }

  auto state = std::make_shared<LossState>();
  state->policy_loss = recipe.policy_loss;
  state->aggregation = recipe.aggregation;
  state->is_correction = recipe.is_correction;
  state->entropy_coef = recipe.entropy_coef;
  if (!recipe.kl.in_reward) {
    state->kl_coef = recipe.kl.coef;
    state->kl_estimator = recipe.kl.estimator;
  }
  h.metric_names = recipe.policy_loss->SumNames();
  if (recipe.is_correction) {
    h.metric_names.push_back("actor/is_weight_mean");
    h.metric_names.push_back("actor/is_zeroed_frac");
  }
  h.metric_names.push_back("actor/entropy");
  if (state->kl_coef > 0) h.metric_names.push_back("actor/kl");
  state->sum_names = h.metric_names;
  h.loss = [state](const LossInputs& in, std::map<std::string, double>* metric_sums) {
    return ComputeLoss(*state, in, metric_sums);
  };
  return h;
}

StatusOr<AlgorithmHooks> BuildAlgorithmHooks(const YAML::Node& algorithm_block, const std::string& path) {
  LR_ASSIGN_OR_RETURN(algorithms::Recipe recipe, algorithms::ParseRecipe(algorithm_block, path));
  return BuildAlgorithmHooksFromRecipe(recipe, path);
}

}  // namespace lightrl::trainer
