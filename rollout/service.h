// RolloutService: the rollout worker's request handler. Turns a protocol::RolloutRequest (the
// trainer's message, core/protocol/messages.h) into Engine requests and the Engine's completions
// into a protocol::RolloutResult.
//
//   rollout::RolloutService service(model, rollout::EngineOptions(), &tokenizer);
//   StatusOr<protocol::RolloutResult> result = service.Generate(request);
//   service.LoadWeights(weights, version);          // refused while a Generate is in flight
//
// Contract of Generate:
//   * exactly prompts.size() * samples_per_prompt trajectories, ordered by (prompt, sample_index);
//     trajectory j of prompt p has sample_id = p.first_sample_id + j, prompt_id / group_id of p;
//   * sample with id s draws from SampleRng(protocol::SampleSeed(request.seed, s), 0): its tokens
//     depend on (weights, prompt, sampling, seed, s) only, not on batching, prompt order or worker;
//   * weights_version = the version being served (every token of a result comes from it: weights
//     cannot change while a generation is in flight);
//   * logprobs: full-vocabulary fp32 log-softmax of logits / temperature at the sampled token
//     (model::TokenLogProbs), before top-k/top-p (algorithms.md §9 row 5);
//   * text: the detokenized response when a tokenizer was given, without a final stop token;
//   * finish reasons: EOS -> kStop, max_new_tokens -> kLength, early truncation -> kRepetition,
//     Engine::Abort -> kAborted. early_truncation_window == 0 turns early truncation off.
//   * errors: InvalidArgument naming the field ("request.prompts[2].token_ids[5]: ..."),
//     FailedPrecondition when min_weights_version > weights_version().
// Thread-safe: concurrent Generate calls share the engine's batch.
#pragma once

#include <cstdint>

#include "core/protocol/messages.h"
#include "core/status.h"
#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "rollout/engine.h"

namespace lightrl::rollout {

// protocol::SamplingParams -> SamplingParams (temperature > 0 required by the protocol;
// early_truncation_window 0 = off). Errors name `path.field`.
StatusOr<SamplingParams> FromProtocol(const protocol::SamplingParams& p, const std::string& path = "request.sampling");
protocol::FinishReason ToProtocol(FinishReason reason);

class RolloutService {
 public:
  // tokenizer (may be null: then Trajectory::text is empty) must outlive the service.
  RolloutService(model::HybridModel model, EngineOptions options, const model::Tokenizer* tokenizer);

  StatusOr<protocol::RolloutResult> Generate(const protocol::RolloutRequest& request);

  // Loads weights by checkpoint name and sets the served version; FailedPrecondition while a
  // generation is in flight, InvalidArgument naming a missing/unexpected/misshapen tensor.
  Status LoadWeights(const model::NamedTensors& weights, uint64_t version);
  uint64_t weights_version() const { return engine_.weights_version(); }
  void set_worker_rank(int32_t rank) { worker_rank_ = rank; }

  Engine& engine() { return engine_; }

 private:
  Engine engine_;
  const model::Tokenizer* tokenizer_;
  int32_t worker_rank_ = -1;
};

}  // namespace lightrl::rollout
