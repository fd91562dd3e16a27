#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "algorithms/filters.h"
#include "core/check.h"
#include "core/logging.h"
#include "trainer/critic.h"

namespace lightrl::trainer {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// SplitMix64: derives independent seeds from (run seed, step, index, round).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t DeriveSeed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  return Mix(Mix(Mix(seed) ^ a) ^ (b * 0x9e37ull)) ^ c;
}

}  // namespace

// ---- sample serialisation ----------------------------------------------------------------------

nlohmann::json SamplesToJson(const std::vector<Sample>& samples) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& s : samples) {
    arr.push_back({{"id", s.sample_id}, {"g", s.group}, {"t", s.task_index}, {"src", s.source}, {"p", s.prompt_ids},
                   {"r", s.response_ids}, {"lp", s.rollout_logprobs}, {"f", s.finish_reason},
                   {"v", s.weights_version}, {"m", s.masked}, {"mr", s.mask_reason}, {"rw", s.reward},
                   {"c", s.correct}});
  }
  return arr;
}

StatusOr<std::vector<Sample>> SamplesFromJson(const nlohmann::json& arr, const std::string& what) {
  if (!arr.is_array()) return DataLoss(StrCat(what, ": expected an array of samples, got ", arr.type_name()));
  std::vector<Sample> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    const nlohmann::json& j = arr[i];
    try {
      Sample s;
      s.sample_id = j.at("id").get<uint64_t>();
      s.group = j.at("g").get<int64_t>();
      s.task_index = j.at("t").get<int64_t>();
      s.source = j.at("src").get<std::string>();
      s.prompt_ids = j.at("p").get<std::vector<int64_t>>();
      s.response_ids = j.at("r").get<std::vector<int64_t>>();
      s.rollout_logprobs = j.at("lp").get<std::vector<float>>();
      s.finish_reason = j.at("f").get<std::string>();
      s.weights_version = j.at("v").get<uint64_t>();
      s.masked = j.at("m").get<bool>();
      s.scored = true;
      s.mask_reason = j.at("mr").get<std::string>();
      s.reward = j.at("rw").get<double>();
      s.correct = j.at("c").get<bool>();
      if (s.rollout_logprobs.size() != s.response_ids.size()) {
        return DataLoss(StrCat(what, "[", i, "]: ", s.rollout_logprobs.size(), " log-probs (lp) for ",
                               s.response_ids.size(), " response tokens (r)"));
      }
      out.push_back(std::move(s));
    } catch (const nlohmann::json::exception& e) {
      return DataLoss(StrCat(what, "[", i, "]: ", e.what()));
    }
  }
  return out;
}

std::string EncodeSamples(const std::vector<Sample>& samples) {
  std::vector<uint8_t> bytes = nlohmann::json::to_msgpack(SamplesToJson(samples));
  return std::string(bytes.begin(), bytes.end());
}

std::vector<Sample> DecodeSamples(const std::string& bytes) {
  StatusOr<std::vector<Sample>> out = SamplesFromJson(nlohmann::json::from_msgpack(bytes), "shared batch");
  out.status().ThrowIfError();
  return std::move(*out);
}

// ---- Trainer -----------------------------------------------------------------------------------

Trainer::Trainer(TrainConfig config, AlgorithmHooks hooks, model::HybridModel policy, TrainerPorts ports,
                 std::string run_dir)
    : config_(std::move(config)), hooks_(std::move(hooks)), ports_(ports), run_dir_(std::move(run_dir)) {
  LR_CHECK(ports_.collective != nullptr, "Trainer: a collective is required");
  LR_CHECK(hooks_.loss && (hooks_.needs_critic ? bool(hooks_.token_advantages) : bool(hooks_.advantages)),
           "Trainer: algorithm hooks are incomplete");
  const int64_t optimizer_steps = config_.trainer.total_steps * std::max<int64_t>(1, hooks_.updates_per_rollout);
  if (hooks_.needs_critic) {
    // Built before the policy is moved; identical on every rank (seed derived from trainer.seed).
    OptimConfig critic_optim = config_.optim;
    critic_optim.lr = hooks_.critic_lr;
    model::HybridModel value_model =
        MakeValueModel(policy, hooks_.critic_init_from_policy, DeriveSeed(config_.trainer.seed, 0xC41C, 0, 0));
    critic_ = std::make_unique<Critic>(std::move(value_model), critic_optim, optimizer_steps, hooks_.critic_value_clip,
                                       ports_.collective);
  }
  if (hooks_.kl_coef > 0) {
    // The reference policy: a frozen copy of the policy the run starts from (a resumed run
    // rebuilds it the same way, from trainer.init_from or the seeded initialisation, before the
    // checkpoint's weights are loaded into the policy).
    torch::NoGradGuard no_grad;
    reference_ = model::HybridModel(policy->config());
    const auto source = policy->named_parameters();
    for (auto& item : reference_->named_parameters()) {
      const torch::Tensor* p = source.find(item.key());
      LR_CHECK(p != nullptr && p->sizes() == item.value().sizes(), "reference policy: parameter ", item.key(),
               " does not match the policy");
      item.value().copy_(*p);
      item.value().set_requires_grad(false);
    }
    reference_->eval();
  }
  policy_ = std::make_unique<PolicyTrainer>(std::move(policy), config_.optim, optimizer_steps, ports_.collective);
  if (is_driver()) {
    LR_CHECK(ports_.tasks && ports_.rollout && ports_.reward, "Trainer: the driver rank needs task, rollout and reward ports");
  }
}

Trainer::~Trainer() = default;

bool Trainer::is_driver() const { return ports_.collective->rank() == 0; }

void Trainer::SetCounters(int64_t step, uint64_t weights_version, int64_t consumed_prompts, int64_t consumed_samples) {
  step_ = step;
  weights_version_ = weights_version;
  consumed_prompts_ = consumed_prompts;
  consumed_samples_ = consumed_samples;
}

Status Trainer::Run() {
  auto log = Logger("trainer");
  if (is_driver()) {
    LR_ASSIGN_OR_RETURN(metrics_, MetricsLogger::Open(run_dir_, step_, config_.tensorboard));
    log->info("algorithm: {}", hooks_.description);
    // The rollout side must serve the current weights before the first step. A resumed run
    // re-publishes the checkpoint's version (the weights are the ones that version named), so
    // its version counter continues exactly as in an uninterrupted run.
    LR_RETURN_IF_ERROR(PublishWeights(/*new_version=*/step_ == 0));
  }
  while (step_ < config_.trainer.total_steps) {
    const int64_t step = step_ + 1;
    LR_ASSIGN_OR_RETURN(StepMetrics metrics, Step(step));
    step_ = step;
    if (is_driver()) LR_RETURN_IF_ERROR(metrics_->Log(step, config_.trainer.total_steps, metrics));
    if (after_step) LR_RETURN_IF_ERROR(after_step(step));
  }
  return Status::Ok();
}

GeneratedBatch Trainer::GenerateBatch(int64_t step) {
  GeneratedBatch batch;
  batch.step = step;
  std::vector<PromptTask> tasks;
  Status& failure = batch.status;
  auto t = Clock::now();
  failure = SamplePrompts(step, config_.rollout.prompts_per_step, &tasks);
  batch.metrics["time/sample_prompts_s"] = Seconds(t);
  if (failure.ok()) {
    t = Clock::now();
    failure = Rollouts(step, tasks, 0, &batch.samples);
    batch.metrics["time/rollout_s"] = Seconds(t);
  }
  if (failure.ok()) {
    t = Clock::now();
    failure = Rewards(tasks, &batch.samples);
    batch.metrics["time/reward_s"] = Seconds(t);
  }
  if (failure.ok() && hooks_.dynamic_sampling) {
    t = Clock::now();
    failure = DynamicSampling(step, &tasks, &batch.samples, &batch.metrics);
    batch.metrics["time/dynamic_sampling_s"] = Seconds(t);
  }
  if (!failure.ok()) batch.samples.clear();
  return batch;
}

GeneratedBatch Trainer::TakeBatch(int64_t step, StepMetrics* metrics) {
  const auto t = Clock::now();
  GeneratedBatch batch;
  if (pending_ && pending_->step == step) {
    batch = std::move(*pending_);
    (*metrics)["async/prefetched"] = 1.0;
  } else {
    batch = GenerateBatch(step);
    if (config_.rollout.max_staleness > 0) (*metrics)["async/prefetched"] = 0.0;
  }
  pending_.reset();
  // Async only: the time the step waited for its batch (the whole generation when nothing was
  // prefetched). In synchronous mode it would only repeat the generation phases' own times.
  if (config_.rollout.max_staleness > 0) (*metrics)["time/generation_wait_s"] = Seconds(t);
  return batch;
}

Status Trainer::CheckStaleness(const std::vector<Sample>& samples, StepMetrics* metrics) const {
  double sum = 0, mx = 0, n = 0;
  for (const Sample& s : samples) {
    if (s.weights_version > weights_version_) {
      return DataLoss(StrCat("sample ", s.sample_id, " reports weights version ", s.weights_version,
                             ", newer than the trainer's ", weights_version_));
    }
    const uint64_t lag = weights_version_ - s.weights_version;
    if (lag > static_cast<uint64_t>(config_.rollout.max_staleness)) {
      return FailedPrecondition(StrCat("sample ", s.sample_id, " was generated with weights v", s.weights_version,
                                       " but the policy is at v", weights_version_, ": staleness ", lag,
                                       " exceeds rollout.max_staleness = ", config_.rollout.max_staleness));
    }
    sum += static_cast<double>(lag);
    mx = std::max(mx, static_cast<double>(lag));
    n += 1;
  }
  (*metrics)["rollout/staleness_mean"] = n > 0 ? sum / n : 0.0;
  (*metrics)["rollout/staleness_max"] = mx;
  return Status::Ok();
}

nlohmann::json Trainer::PendingBatchState() const {
  if (!pending_) return nullptr;
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [k, v] : pending_->metrics) metrics[k] = v;
  return {{"step", pending_->step},
          {"status", pending_->status.ToString()},
          {"ok", pending_->status.ok()},
          {"metrics", metrics},
          {"samples", SamplesToJson(pending_->samples)}};
}

Status Trainer::RestorePendingBatch(const nlohmann::json& state) {
  pending_.reset();
  if (state.is_null()) return Status::Ok();
  const std::string what = "checkpoint extra.pending_batch";
  if (!state.is_object() || !state.contains("step") || !state["step"].is_number_integer() ||
      !state.contains("ok") || !state["ok"].is_boolean() || !state.contains("samples") ||
      !state.contains("metrics") || !state["metrics"].is_object()) {
    return DataLoss(StrCat(what, ": expected {step: int, ok: bool, status, metrics: {}, samples: []}"));
  }
  GeneratedBatch b;
  b.step = state["step"].get<int64_t>();
  if (b.step != step_ + 1) {
    return DataLoss(StrCat(what, ".step = ", b.step, " but the checkpoint is of step ", step_, " (expected ", step_ + 1,
                           ")"));
  }
  if (!state["ok"].get<bool>()) {
    b.status = Internal(StrCat("prefetched generation of step ", b.step, " failed before the checkpoint: ",
                               state.value("status", std::string("?"))));
  }
  for (const auto& [k, v] : state["metrics"].items()) {
    if (!v.is_number()) return DataLoss(StrCat(what, ".metrics.", k, ": expected a number"));
    b.metrics[k] = v.get<double>();
  }
  LR_ASSIGN_OR_RETURN(b.samples, SamplesFromJson(state["samples"], what + ".samples"));
  // A batch older than the bound allows (max_staleness lowered since the checkpoint) is dropped:
  // its prompts are skipped and the step regenerates.
  for (const Sample& s : b.samples) {
    if (weights_version_ >= s.weights_version &&
        weights_version_ - s.weights_version > static_cast<uint64_t>(config_.rollout.max_staleness)) {
      Logger("trainer")->warn("{}: generated with weights v{}, beyond rollout.max_staleness = {} at v{}; dropped",
                              what, s.weights_version, config_.rollout.max_staleness, weights_version_);
      return Status::Ok();
    }
  }
  pending_ = std::move(b);
  return Status::Ok();
}

StatusOr<StepMetrics> Trainer::Step(int64_t step) {
  const auto step_start = Clock::now();
  StepMetrics metrics;
  std::vector<Sample> samples;
  Status failure;
  if (is_driver()) {
    GeneratedBatch batch = TakeBatch(step, &metrics);
    failure = batch.status;
    if (failure.ok()) failure = CheckStaleness(batch.samples, &metrics);
    samples = std::move(batch.samples);
    metrics.insert(batch.metrics.begin(), batch.metrics.end());
    if (!failure.ok()) samples.clear();
  }
  // Every trainer rank learns whether the driver failed (an empty batch with a failure flag
  // would otherwise leave the others waiting in a collective).
  const double failed = ports_.collective->AllReduceSum({failure.ok() ? 0.0 : 1.0})[0];
  if (failed > 0) {
    if (!failure.ok()) return failure;
    return Internal(StrCat("step ", step, ": the driver trainer rank failed (see its log)"));
  }
  auto t = Clock::now();
  ShareBatch(&samples);
  metrics["time/share_batch_s"] = Seconds(t);

  // Async pipeline: generate the next step's batch while this one trains (joined before the
  // publish below, whatever happens in between).
  struct JoinGuard {
    std::future<GeneratedBatch>* f;
    ~JoinGuard() {
      if (f->valid()) f->wait();
    }
  } join_guard{&inflight_};
  if (is_driver() && config_.rollout.max_staleness > 0 && step < config_.trainer.total_steps) {
    inflight_ = std::async(std::launch::async, [this, step] { return GenerateBatch(step + 1); });
  }

  // The global order: every usable sample, in sample order (identical on every rank).
  std::vector<int64_t> order;
  for (size_t i = 0; i < samples.size(); ++i)
    if (!samples[i].masked && !samples[i].response_ids.empty()) order.push_back(static_cast<int64_t>(i));

  if (reference_) {
    t = Clock::now();
    RefLogProbs(&samples, order, &metrics);
    metrics["time/ref_logprobs_s"] = Seconds(t);
  }
  t = Clock::now();
  if (critic_) {
    CriticAdvantages(&samples, order, &metrics);
  } else {
    Advantages(&samples, &metrics);
  }
  metrics["time/advantages_s"] = Seconds(t);
  t = Clock::now();
  OldLogProbs(&samples, order, &metrics);
  metrics["time/old_logprobs_s"] = Seconds(t);
  t = Clock::now();
  StepMetrics update = Update(&samples, order);
  metrics.insert(update.begin(), update.end());
  metrics["time/update_s"] = Seconds(t);
  if (critic_) {
    t = Clock::now();
    StepMetrics critic = critic_->Update(samples, order, hooks_.updates_per_rollout, config_.trainer.micro_batch_tokens);
    metrics.insert(critic.begin(), critic.end());
    metrics["time/critic_update_s"] = Seconds(t);
  }
  if (inflight_.valid()) {
    // The next batch must be complete before the weights move (the rollout side refuses a
    // weights load during a generation, and the staleness bound counts on it).
    t = Clock::now();
    pending_ = inflight_.get();
    metrics["time/prefetch_join_s"] = Seconds(t);
  }
  t = Clock::now();
  if (is_driver()) LR_RETURN_IF_ERROR(PublishWeights(/*new_version=*/true));
  metrics["time/publish_weights_s"] = Seconds(t);
  SampleMetrics(samples, &metrics);
  consumed_prompts_ += config_.rollout.prompts_per_step;
  consumed_samples_ += static_cast<int64_t>(samples.size());
  metrics["counters/consumed_prompts"] = static_cast<double>(consumed_prompts_);
  metrics["counters/consumed_samples"] = static_cast<double>(consumed_samples_);
  metrics["counters/weights_version"] = static_cast<double>(weights_version_);
  const double step_s = Seconds(step_start);
  metrics["time/step_s"] = step_s;
  double tokens = 0;
  for (const auto& s : samples) tokens += static_cast<double>(s.response_ids.size());
  metrics["throughput/response_tokens_per_s"] = tokens / std::max(step_s, 1e-9);
  return metrics;
}

Status Trainer::SamplePrompts(int64_t step, int64_t count, std::vector<PromptTask>* tasks) {
  std::vector<PromptTask> next = ports_.tasks->Next(count);
  if (static_cast<int64_t>(next.size()) != count) {
    return Internal(StrCat("step ", step, ": task source returned ", next.size(), " prompts, expected ", count));
  }
  for (auto& t : next) {
    if (t.prompt_ids.empty()) return InvalidArgument(StrCat("task '", t.task_id, "': empty prompt after tokenisation"));
    tasks->push_back(std::move(t));
  }
  return Status::Ok();
}

Status Trainer::Rollouts(int64_t step, const std::vector<PromptTask>& tasks, int64_t group_offset,
                         std::vector<Sample>* samples) {
  const int G = config_.rollout.samples_per_prompt;
  protocol::RolloutRequest request;
  request.request_id = (static_cast<uint64_t>(step) << 16) | static_cast<uint64_t>(group_offset);
  request.samples_per_prompt = G;
  request.seed = DeriveSeed(config_.trainer.seed, static_cast<uint64_t>(step), 0, 0);
  request.min_weights_version = weights_version_;
  auto& sp = request.sampling;
  sp.temperature = static_cast<float>(config_.rollout.temperature);
  sp.top_p = static_cast<float>(config_.rollout.top_p);
  sp.top_k = config_.rollout.top_k;
  sp.max_new_tokens = static_cast<int32_t>(config_.rollout.max_response_len);
  sp.stop_token_ids = stop_token_ids_;
  sp.early_truncation_window = static_cast<int32_t>(config_.rollout.early_truncation_window);
  sp.early_truncation_prob = static_cast<float>(config_.rollout.early_truncation_prob);
  for (int64_t i = group_offset; i < static_cast<int64_t>(tasks.size()); ++i) {
    protocol::PromptSpec p;
    p.prompt_id = static_cast<uint64_t>(i);
    p.group_id = static_cast<uint64_t>(i);
    // Sample ids are unique in the run: the step in the high bits, (task, sample) below.
    p.first_sample_id = (static_cast<uint64_t>(step) << 32) | static_cast<uint64_t>(i * G);
    p.task_id = tasks[i].source;
    p.token_ids.assign(tasks[i].prompt_ids.begin(), tasks[i].prompt_ids.end());
    request.prompts.push_back(std::move(p));
  }
  LR_ASSIGN_OR_RETURN(protocol::RolloutResult result, ports_.rollout->Generate(request));
  const size_t expected = request.prompts.size() * static_cast<size_t>(G);
  if (result.trajectories.size() != expected) {
    return Internal(StrCat("rollout returned ", result.trajectories.size(), " samples, expected ", expected));
  }
  for (auto& tr : result.trajectories) {
    if (tr.logprobs.size() != tr.token_ids.size()) {
      return DataLoss(StrCat("rollout sample ", tr.sample_id, " has ", tr.logprobs.size(), " log-probs for ",
                             tr.token_ids.size(), " tokens"));
    }
    const int64_t task = static_cast<int64_t>(tr.group_id);
    if (task < group_offset || task >= static_cast<int64_t>(tasks.size())) {
      return DataLoss(StrCat("rollout sample ", tr.sample_id, " has unknown group ", tr.group_id));
    }
    Sample s;
    s.sample_id = tr.sample_id;
    s.group = task;
    s.task_index = task;
    s.source = tasks[task].source;
    s.prompt_ids = tasks[task].prompt_ids;
    s.response_ids.assign(tr.token_ids.begin(), tr.token_ids.end());
    s.rollout_logprobs = std::move(tr.logprobs);
    s.finish_reason = protocol::FinishReasonName(tr.finish_reason);
    s.weights_version = tr.weights_version;
    s.response_text = std::move(tr.text);
    samples->push_back(std::move(s));
  }
  return Status::Ok();
}

Status Trainer::Rewards(const std::vector<PromptTask>& tasks, std::vector<Sample>* samples) {
  protocol::RewardBatch batch;
  batch.batch_id = next_reward_batch_++;
  batch.deadline_s = config_.reward.timeout_s;
  std::vector<size_t> which;
  for (size_t i = 0; i < samples->size(); ++i) {
    Sample& s = (*samples)[i];
    if (s.scored) continue;  // scored in an earlier dynamic-sampling round
    protocol::RewardRequest r;
    r.sample_id = s.sample_id;
    r.task_id = tasks[s.task_index].task_id;
    r.verifier = tasks[s.task_index].verifier;
    r.reference_json = tasks[s.task_index].reference_json;
    r.prompt_text = tasks[s.task_index].prompt_text;
    r.response_text = s.response_text;
    r.finish_reason = protocol::FinishReasonFromName(s.finish_reason).value_or(protocol::FinishReason::kUnknown);
    r.response_tokens = static_cast<int32_t>(s.response_ids.size());
    batch.requests.push_back(std::move(r));
    which.push_back(i);
  }
  std::vector<RewardResult> results = ports_.reward->Score(batch);
  if (results.size() != batch.requests.size()) {
    return Internal(StrCat("reward port returned ", results.size(), " results for ", batch.requests.size(), " requests"));
  }
  for (size_t k = 0; k < results.size(); ++k) {
    Sample& s = (*samples)[which[k]];
    const RewardResult& r = results[k];
    if (r.sample_id != s.sample_id) {
      return Internal(StrCat("reward result ", k, " is for sample ", r.sample_id, ", expected ", s.sample_id));
    }
    s.scored = true;
    if (!r.ok()) {
      s.masked = true;
      s.mask_reason = RewardErrorKindName(r.error().kind);
      continue;
    }
    s.reward = r.score().value;
    s.correct = r.score().verdict == Verdict::kCorrect;
    // DAPO soft overlong punishment (Eq. 13) and overlong filtering.
    const int64_t L = static_cast<int64_t>(s.response_ids.size());
    if (config_.reward.overlong_buffer_len > 0) {
      s.reward += algorithms::SoftOverlongPenalty(L, config_.rollout.max_response_len, config_.reward.overlong_buffer_len,
                                                  config_.reward.overlong_penalty_factor);
    }
    if (algorithms::OverlongFiltered(config_.reward.overlong_filter, s.finish_reason == "length")) {
      s.masked = true;
      s.mask_reason = "overlong_filter";
    }
  }
  return Status::Ok();
}

Status Trainer::DynamicSampling(int64_t step, std::vector<PromptTask>* tasks, std::vector<Sample>* samples,
                                StepMetrics* metrics) {
  const int64_t wanted = config_.rollout.prompts_per_step;
  auto kept_groups = [&]() {
    std::vector<double> rewards;
    std::vector<int64_t> groups;
    for (const auto& s : *samples) {
      if (s.masked) continue;
      rewards.push_back(s.reward);
      groups.push_back(s.group);
    }
    return algorithms::FilterZeroVarianceGroups(rewards, groups, /*min_group_size=*/2).kept_groups;
  };
  std::vector<int64_t> kept = kept_groups();
  int64_t rounds = 1;
  const int64_t first_round_groups = static_cast<int64_t>(tasks->size());
  while (static_cast<int64_t>(kept.size()) < wanted) {
    if (hooks_.max_gen_batches > 0 && rounds >= hooks_.max_gen_batches) {
      int64_t correct = 0, total = 0;
      for (const auto& s : *samples) {
        total += !s.masked;
        correct += !s.masked && s.correct;
      }
      return ResourceExhausted(StrCat(
          "step ", step, ": dynamic sampling kept ", kept.size(), " of ", wanted, " groups after ", rounds,
          " generation batches (algorithm.dynamic_sampling.max_gen_batches = ", hooks_.max_gen_batches,
          "); accuracy over ", total, " samples = ", total ? static_cast<double>(correct) / total : 0.0,
          " (all-correct or all-wrong groups are dropped; raise the cap, set it to 0 for unbounded, or change the data)"));
    }
    const int64_t offset = static_cast<int64_t>(tasks->size());
    LR_RETURN_IF_ERROR(SamplePrompts(step, wanted - static_cast<int64_t>(kept.size()), tasks));
    LR_RETURN_IF_ERROR(Rollouts(step, *tasks, offset, samples));
    LR_RETURN_IF_ERROR(Rewards(*tasks, samples));
    kept = kept_groups();
    ++rounds;
  }
  const int64_t kept_before_trim = static_cast<int64_t>(kept.size());
  kept.resize(wanted);
  std::set<int64_t> keep(kept.begin(), kept.end());
  std::vector<Sample> filtered;
  for (auto& s : *samples)
    if (keep.count(s.group)) filtered.push_back(std::move(s));
  (*metrics)["dynamic_sampling/gen_batches"] = static_cast<double>(rounds);
  (*metrics)["dynamic_sampling/groups_generated"] = static_cast<double>(tasks->size());
  (*metrics)["dynamic_sampling/kept_group_frac"] =
      static_cast<double>(kept_before_trim) / static_cast<double>(tasks->size());
  (void)first_round_groups;
  *samples = std::move(filtered);
  return Status::Ok();
}

void Trainer::ShareBatch(std::vector<Sample>* samples) {
  if (!ports_.batch_channel || ports_.collective->size() == 1) return;
  std::string bytes;
  if (is_driver()) bytes = EncodeSamples(*samples);
  ports_.batch_channel->Broadcast(&bytes);
  if (!is_driver()) *samples = DecodeSamples(bytes);
}

void Trainer::Advantages(std::vector<Sample>* samples, StepMetrics* metrics) {
  std::vector<double> rewards;
  std::vector<int64_t> groups;
  std::vector<size_t> which;
  for (size_t i = 0; i < samples->size(); ++i) {
    const Sample& s = (*samples)[i];
    if (s.masked) continue;
    rewards.push_back(s.reward - s.reward_penalty);
    groups.push_back(s.group);
    which.push_back(i);
  }
  std::vector<double> adv = rewards.empty() ? std::vector<double>{} : hooks_.advantages(rewards, groups);
  LR_CHECK(adv.size() == rewards.size(), "advantage estimator returned ", adv.size(), " values for ", rewards.size());
  double sum = 0, abs_sum = 0;
  for (size_t k = 0; k < which.size(); ++k) {
    Sample& s = (*samples)[which[k]];
    s.advantages.assign(s.response_ids.size(), static_cast<float>(adv[k]));
    sum += adv[k];
    abs_sum += std::abs(adv[k]);
  }
  const double n = std::max<double>(1, static_cast<double>(which.size()));
  (*metrics)["advantage/mean"] = sum / n;
  (*metrics)["advantage/abs_mean"] = abs_sum / n;
}

void Trainer::CriticAdvantages(std::vector<Sample>* samples, const std::vector<int64_t>& order, StepMetrics* metrics) {
  // Every rank needs every sample's values (advantages are whitened over the whole batch).
  const std::vector<std::vector<float>> values = ShardedTokenRows(
      *samples, order,
      [&](const std::vector<int64_t>& shard) {
        critic_->ComputeValues(*samples, shard, config_.trainer.micro_batch_tokens);
      },
      [](const Sample& s) { return s.values; });
  for (size_t i = 0; i < order.size(); ++i) (*samples)[order[i]].values = values[i];
  WriteTokenAdvantages(hooks_, samples, order, kl_token_penalties_);
  kl_token_penalties_.clear();
  double sum = 0, abs_sum = 0, tokens = 0, value_sum = 0, return_sum = 0;
  for (int64_t idx : order) {
    const Sample& s = (*samples)[idx];
    for (size_t t = 0; t < s.advantages.size(); ++t) {
      sum += s.advantages[t];
      abs_sum += std::abs(s.advantages[t]);
      value_sum += s.values[t];
      return_sum += s.returns[t];
      tokens += 1;
    }
  }
  const double n = std::max(1.0, tokens);
  (*metrics)["advantage/mean"] = sum / n;
  (*metrics)["advantage/abs_mean"] = abs_sum / n;
  (*metrics)["critic/value_mean"] = value_sum / n;
  (*metrics)["critic/return_mean"] = return_sum / n;
  (*metrics)["critic/explained_var"] = ExplainedVariance(*samples, order);
}

std::vector<int64_t> Trainer::UpdateShard(const std::vector<int64_t>& order) const {
  const int64_t total = static_cast<int64_t>(order.size());
  const int64_t updates = std::min<int64_t>(std::max<int64_t>(1, hooks_.updates_per_rollout), std::max<int64_t>(1, total));
  std::vector<int64_t> mine;
  for (int64_t m = 0; m < updates; ++m) {
    const std::vector<int64_t> part =
        MiniBatchShard(order, updates, m, ports_.collective->rank(), ports_.collective->size());
    mine.insert(mine.end(), part.begin(), part.end());
  }
  return mine;
}

std::vector<std::vector<float>> Trainer::ShardedTokenRows(
    const std::vector<Sample>& samples, const std::vector<int64_t>& order,
    const std::function<void(const std::vector<int64_t>& shard)>& compute,
    const std::function<std::vector<float>(const Sample&)>& row) {
  const int rank = ports_.collective->rank(), world = ports_.collective->size();
  std::vector<int64_t> shard, offsets;
  int64_t total_tokens = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    offsets.push_back(total_tokens);
    total_tokens += static_cast<int64_t>(samples[order[i]].response_ids.size());
    if (static_cast<int>(i % world) == rank) shard.push_back(order[i]);
  }
  compute(shard);
  // The zero-padded [total tokens] buffer summed over ranks: x + 0 is exact, so every rank
  // holds bit-identical rows.
  std::vector<torch::Tensor> buffer{torch::zeros({total_tokens}, torch::kFloat32)};  // [total tokens] fp32
  float* p = buffer[0].data_ptr<float>();
  for (size_t i = 0; i < order.size(); ++i) {
    if (static_cast<int>(i % world) != rank) continue;
    const Sample& s = samples[order[i]];
    const std::vector<float> r = row(s);
    LR_CHECK(r.size() == s.response_ids.size(), "sample ", s.sample_id, ": ", r.size(), " values for ",
             s.response_ids.size(), " response tokens");
    std::copy(r.begin(), r.end(), p + offsets[i]);
  }
  if (world > 1) ports_.collective->AllReduceSum(buffer);
  p = buffer[0].data_ptr<float>();
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t R = static_cast<int64_t>(samples[order[i]].response_ids.size());
    rows.emplace_back(p + offsets[i], p + offsets[i] + R);
  }
  return rows;
}

void Trainer::RefLogProbs(std::vector<Sample>* samples, const std::vector<int64_t>& order, StepMetrics* metrics) {
  const int64_t mbt = config_.trainer.micro_batch_tokens;
  const double temperature = config_.rollout.temperature;
  auto write_ref = [](Sample& s, std::vector<float> v) { s.ref_logprobs = std::move(v); };
  // Per-token KL estimate of the behaviour policy (rollout log-probs) vs the reference.
  auto kl_of = [&](const Sample& s) {
    const torch::Tensor lp = torch::tensor(s.rollout_logprobs);  // [R] fp32
    const torch::Tensor ref = torch::tensor(s.ref_logprobs);     // [R] fp32
    return algorithms::KlPenalty(lp, ref, hooks_.kl_estimator).contiguous();  // [R] fp32
  };
  double kl_sum = 0, tokens = 0;
  if (!hooks_.kl_in_reward) {
    // Loss term: only this rank's update shard needs them.
    const std::vector<int64_t> mine = UpdateShard(order);
    ResponseLogProbs(reference_, *samples, mine, mbt, temperature, write_ref);
    for (int64_t i : mine) {
      kl_sum += kl_of((*samples)[i]).sum().item<double>();
      tokens += static_cast<double>((*samples)[i].response_ids.size());
    }
    const std::vector<double> sums = ports_.collective->AllReduceSum({kl_sum, tokens});
    (*metrics)["kl/behaviour_vs_ref"] = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    return;
  }
  // Reward penalty: every rank needs every sample's penalty (advantages are batch statistics).
  const std::vector<std::vector<float>> kl_rows = ShardedTokenRows(
      *samples, order,
      [&](const std::vector<int64_t>& shard) {
        ResponseLogProbs(reference_, *samples, shard, mbt, temperature, write_ref);
      },
      [&](const Sample& s) {
        const torch::Tensor kl = kl_of(s);  // [R] fp32
        return std::vector<float>(kl.data_ptr<float>(), kl.data_ptr<float>() + kl.size(0));
      });
  kl_token_penalties_.clear();
  for (size_t i = 0; i < order.size(); ++i) {
    Sample& s = (*samples)[order[i]];
    const size_t R = s.response_ids.size();
    double seq = 0;
    std::vector<float> penalty(R);
    for (size_t t = 0; t < R; ++t) {
      seq += kl_rows[i][t];
      penalty[t] = static_cast<float>(-hooks_.kl_coef * kl_rows[i][t]);
    }
    kl_sum += seq;
    tokens += static_cast<double>(R);
    if (hooks_.needs_critic) {
      kl_token_penalties_.push_back(std::move(penalty));  // per token, into GAE
    } else {
      s.reward_penalty = hooks_.kl_coef * seq;  // sequence-level, subtracted in Advantages
    }
    s.ref_logprobs.clear();  // not a loss input in this mode
  }
  (*metrics)["kl/behaviour_vs_ref"] = tokens > 0 ? kl_sum / tokens : 0.0;
  (*metrics)["kl/reward_penalty_mean"] = order.empty() ? 0.0 : hooks_.kl_coef * kl_sum / static_cast<double>(order.size());
}

void Trainer::OldLogProbs(std::vector<Sample>* samples, const std::vector<int64_t>& order, StepMetrics* metrics) {
  // The samples this rank trains (the same assignment as PolicyTrainer::Update).
  const std::vector<int64_t> mine = UpdateShard(order);
  UpdateOptions opts;
  opts.micro_batch_tokens = config_.trainer.micro_batch_tokens;
  opts.temperature = config_.rollout.temperature;
  if (hooks_.recompute_old_logprobs) {
    policy_->ComputeLogProbs(*samples, mine, opts, /*write_old=*/true);
  } else {
    for (int64_t i : mine) (*samples)[i].old_logprobs = (*samples)[i].rollout_logprobs;
  }
  // Train/infer mismatch: |rollout logp - trainer logp| (meaningful when recomputed).
  double sum = 0, count = 0, mx = 0;
  for (int64_t i : mine) {
    const Sample& s = (*samples)[i];
    for (size_t k = 0; k < s.old_logprobs.size(); ++k) {
      const double d = std::abs(static_cast<double>(s.old_logprobs[k]) - s.rollout_logprobs[k]);
      sum += d;
      count += 1;
      mx = std::max(mx, d);
    }
  }
  auto sums = ports_.collective->AllReduceSum({sum, count});
  auto maxes = ports_.collective->AllReduceMax({mx});
  (*metrics)["logp/rollout_vs_trainer_abs_mean"] = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
  (*metrics)["logp/rollout_vs_trainer_abs_max"] = maxes[0];
}

StepMetrics Trainer::Update(std::vector<Sample>* samples, const std::vector<int64_t>& order) {
  UpdateOptions opts;
  opts.updates_per_rollout = hooks_.updates_per_rollout;
  opts.micro_batch_tokens = config_.trainer.micro_batch_tokens;
  opts.temperature = config_.rollout.temperature;
  opts.metric_names = hooks_.metric_names;
  opts.moe_aux_loss = config_.trainer.moe_aux_loss;
  return policy_->Update(*samples, order, opts, hooks_.loss);
}

Status Trainer::PublishWeights(bool new_version) {
  model::NamedTensors weights;
  for (const auto& item : policy_->model()->named_parameters()) weights[item.key()] = item.value().detach();
  if (new_version) ++weights_version_;
  return ports_.rollout->PublishWeights(weights, weights_version_);
}

void Trainer::SampleMetrics(const std::vector<Sample>& samples, StepMetrics* metrics) {
  double n = 0, reward = 0, correct = 0, len = 0, len_max = 0, truncated = 0, repetition = 0;
  std::map<std::string, double> masked;
  struct PerTask {
    double n = 0, reward = 0, correct = 0;
  };
  std::map<std::string, PerTask> per_task;  // by task source
  for (const auto& s : samples) {
    const double L = static_cast<double>(s.response_ids.size());
    len += L;
    len_max = std::max(len_max, L);
    truncated += s.finish_reason == "length";
    repetition += s.finish_reason == "repetition";
    if (s.masked) {
      masked[s.mask_reason] += 1;
      continue;
    }
    n += 1;
    reward += s.reward;
    correct += s.correct;
    PerTask& pt = per_task[s.source.empty() ? "unknown" : s.source];
    pt.n += 1;
    pt.reward += s.reward;
    pt.correct += s.correct;
  }
  const double total = std::max<double>(1, static_cast<double>(samples.size()));
  (*metrics)["reward/mean"] = n > 0 ? reward / n : 0.0;
  (*metrics)["reward/accuracy"] = n > 0 ? correct / n : 0.0;
  (*metrics)["reward/all_zero"] = (n > 0 && reward == 0.0) ? 1.0 : 0.0;
  for (const auto& [source, pt] : per_task) {
    (*metrics)["reward/" + source + "/mean"] = pt.reward / pt.n;
    (*metrics)["reward/" + source + "/accuracy"] = pt.correct / pt.n;
    (*metrics)["samples/" + source + "/count"] = pt.n;
  }
  (*metrics)["samples/total"] = static_cast<double>(samples.size());
  (*metrics)["samples/masked"] = static_cast<double>(samples.size()) - n;
  for (const auto& [reason, count] : masked) (*metrics)["samples/masked_" + reason] = count;
  (*metrics)["response/length_mean"] = len / total;
  (*metrics)["response/length_max"] = len_max;
  (*metrics)["response/truncated_frac"] = truncated / total;
  (*metrics)["response/repetition_frac"] = repetition / total;
}

}  // namespace lightrl::trainer
