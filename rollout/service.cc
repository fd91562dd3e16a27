#include "rollout/service.h"

#include <exception>

#include "core/check.h"

namespace lightrl::rollout {

StatusOr<SamplingParams> FromProtocol(const protocol::SamplingParams& p, const std::string& path) {
  if (!(p.temperature > 0)) {
    return InvalidArgument(StrCat(path, ".temperature: must be > 0, got ", p.temperature));
  }
  if (p.max_new_tokens <= 0) {
    return InvalidArgument(StrCat(path, ".max_new_tokens: must be > 0, got ", p.max_new_tokens));
  }
  if (p.early_truncation_window < 0) {
    return InvalidArgument(StrCat(path, ".early_truncation_window: must be >= 0 (0 = off), got ",
                                  p.early_truncation_window));
  }
  SamplingParams s;
  s.temperature = p.temperature;
  s.top_p = p.top_p;
  s.top_k = p.top_k;
  s.max_new_tokens = p.max_new_tokens;
  s.stop_token_ids.assign(p.stop_token_ids.begin(), p.stop_token_ids.end());
  s.repetition_truncation = p.early_truncation_window > 0;
  s.repetition_window = p.early_truncation_window > 0 ? p.early_truncation_window : 1;
  s.repetition_prob = p.early_truncation_prob;
  // Field names of the protocol in errors: early_truncation_* rather than repetition_*.
  Status st = ValidateSamplingParams(s, path);
  if (!st.ok()) {
    std::string m = st.message();
    for (auto [from, to] : {std::pair<std::string, std::string>{"repetition_prob", "early_truncation_prob"},
                            {"repetition_window", "early_truncation_window"}}) {
      const size_t at = m.find(from);
      if (at != std::string::npos) m.replace(at, from.size(), to);
    }
    return InvalidArgument(m);
  }
  return s;
}

protocol::FinishReason ToProtocol(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
    case FinishReason::kStopString: return protocol::FinishReason::kStop;
    case FinishReason::kMaxTokens: return protocol::FinishReason::kLength;
    case FinishReason::kRepetition: return protocol::FinishReason::kRepetition;
    case FinishReason::kAborted: return protocol::FinishReason::kAborted;
  }
  return protocol::FinishReason::kUnknown;
}

namespace {

EngineOptions WithDetokenizer(EngineOptions o, const model::Tokenizer* tokenizer) {
  if (!o.detokenize && tokenizer) {
    o.detokenize = [tokenizer](const std::vector<int64_t>& ids) { return tokenizer->Decode(ids); };
  }
  return o;
}

}  // namespace

RolloutService::RolloutService(model::HybridModel model, EngineOptions options, const model::Tokenizer* tokenizer)
    : engine_(std::move(model), WithDetokenizer(std::move(options), tokenizer)), tokenizer_(tokenizer) {}

StatusOr<protocol::RolloutResult> RolloutService::Generate(const protocol::RolloutRequest& request) {
  const uint64_t served = engine_.weights_version();
  if (request.min_weights_version > served) {
    return FailedPrecondition(StrCat("rollout request ", request.request_id, ": min_weights_version ",
                                     request.min_weights_version, " > served weights version ", served));
  }
  if (request.samples_per_prompt < 1) {
    return InvalidArgument(StrCat("request.samples_per_prompt: must be >= 1, got ", request.samples_per_prompt));
  }
  LR_ASSIGN_OR_RETURN(SamplingParams params, FromProtocol(request.sampling));
  const int G = request.samples_per_prompt;
  std::vector<Request> reqs;
  reqs.reserve(request.prompts.size());
  for (size_t i = 0; i < request.prompts.size(); ++i) {
    const protocol::PromptSpec& p = request.prompts[i];
    Request r;
    r.request_id = i;
    r.prompt_ids.assign(p.token_ids.begin(), p.token_ids.end());
    r.params = params;
    r.num_samples = G;
    r.seed = request.seed;
    for (int j = 0; j < G; ++j) r.sample_seeds.push_back(protocol::SampleSeed(request.seed, p.first_sample_id + j));
    Status s = ValidateRequest(r, engine_.model()->config(), engine_.options(), StrCat("request.prompts[", i, "]"));
    if (!s.ok()) {
      // The engine names its own fields; map prompt_ids to the protocol's token_ids.
      std::string m = s.message();
      const size_t at = m.find(".prompt_ids");
      if (at != std::string::npos) m.replace(at, 11, ".token_ids");
      const size_t pa = m.find(".params.");
      if (pa != std::string::npos) m = "request.sampling." + m.substr(pa + 8);
      return InvalidArgument(m);
    }
    reqs.push_back(std::move(r));
  }
  std::vector<Completion> out;
  try {
    out = engine_.Generate(reqs);
  } catch (const std::exception& e) {
    return Internal(StrCat("rollout request ", request.request_id, ": generation failed: ", e.what()));
  }
  LR_CHECK(out.size() == reqs.size() * static_cast<size_t>(G), "RolloutService: engine returned ", out.size(),
           " completions for ", reqs.size(), " x ", G);
  protocol::RolloutResult result;
  result.request_id = request.request_id;
  result.worker_rank = worker_rank_;
  result.trajectories.reserve(out.size());
  for (size_t k = 0; k < out.size(); ++k) {
    Completion& c = out[k];
    const protocol::PromptSpec& p = request.prompts[c.request_id];
    LR_CHECK(k == c.request_id * G + c.sample_index, "RolloutService: completions out of order");
    protocol::Trajectory t;
    t.sample_id = p.first_sample_id + c.sample_index;
    t.prompt_id = p.prompt_id;
    t.group_id = p.group_id;
    t.sample_index = c.sample_index;
    t.weights_version = c.weights_version;
    t.token_ids.assign(c.token_ids.begin(), c.token_ids.end());
    t.logprobs = std::move(c.logprobs);
    t.finish_reason = ToProtocol(c.finish_reason);
    if (tokenizer_) {
      std::vector<int64_t> shown = c.token_ids;
      if (c.finish_reason == FinishReason::kEos && !shown.empty()) shown.pop_back();
      t.text = tokenizer_->Decode(shown);
    }
    t.timings.queue_s = c.queue_seconds;
    t.timings.prefill_s = c.prefill_seconds;
    t.timings.decode_s = c.decode_seconds;
    result.trajectories.push_back(std::move(t));
  }
  return result;
}

Status RolloutService::LoadWeights(const model::NamedTensors& weights, uint64_t version) {
  return engine_.SetWeights(weights, version);
}

}  // namespace lightrl::rollout
