// The rollout engine: batched autoregressive generation with the trainer's own model code
// (model::HybridModel), so rollout log-probs and trainer log-probs come from the same kernels.
//
// Start here for rollout/. Usage:
//   rollout::EngineOptions options;  options.max_slots = 64;
//   rollout::Engine engine(model, options);
//   std::vector<Completion> out = engine.Generate(requests);   // ordered by (request, sample)
//   engine.SetWeights(new_weights, version);                   // between generations only
//
// How a generation runs (see rollout/README.md for the design discussion):
//   * Slots. At most max_slots sequences decode together. Each holds its own rows of a
//     model::ModelCache: per lightning layer an fp32 state [H, D, D] (O(1) in context), per
//     softmax layer a KV cache with the row's own length.
//   * Prefill. A prompt is prefilled alone (B = 1, the chunked path of every layer); the G
//     samples of a request share that prefill (its cache row is replicated G times; with
//     share_prefill = false each sample prefills separately, giving identical results).
//   * Decode. One forward of [B, 1] per step over all live slots (the recurrent step of the
//     lightning layers, KV-cached attention in softmax layers); then per row: sample, score,
//     check stops.
//   * Continuous batching. A finished sequence frees its slot at once and a waiting sample is
//     admitted at the next step (its cache rows are written into the freed slot in place).
//     continuous_batching = false is static batching: no admission until the whole batch is done.
//   * Reproducibility. Each (request, sample) draws from its own SampleRng(seed, sample_index),
//     one uniform per token, so its output depends on nothing else in the batch — exactly so with
//     batch_invariant = true (see there), up to last-bit GEMM differences otherwise.
//
// Thread-safety: Submit, Abort, SetWeights, SetWeightsVersion and the accessors may be called
// from any thread. Step (and Generate, which calls it) may be called from any thread; concurrent
// calls are serialised. Callbacks (EngineOptions::on_completion, Submit's done) run on the thread
// executing Step and must not call Step, Generate or SetWeights-and-wait on this engine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "rollout/sampling.h"

namespace lightrl::rollout {

enum class FinishReason {
  kEos,         // emitted one of params.stop_token_ids (the id is the last completion token)
  kStopString,  // the decoded completion came to contain one of params.stop_strings
  kMaxTokens,   // reached params.max_new_tokens
  kRepetition,  // M1 early truncation: repetition_window consecutive tokens with p > repetition_prob
  kAborted,     // Engine::Abort() while queued or running (tokens so far are kept)
};
// "eos" | "stop_string" | "max_tokens" | "repetition" | "aborted"
const char* FinishReasonName(FinishReason reason);

struct Request {
  uint64_t request_id = 0;            // echoed in the completions; need not be unique
  std::vector<int64_t> prompt_ids;    // non-empty, ids in [0, vocab)
  SamplingParams params;
  uint64_t seed = 0;                  // sample k draws from SampleRng(seed, k) ...
  int num_samples = 1;                // G >= 1 samples share one prefill
  // ... unless given: [num_samples] per-sample seeds, sample k then draws from
  // SampleRng(sample_seeds[k], 0) (RolloutService: protocol::SampleSeed(seed, sample_id), so a
  // sample depends only on its id, not on how samples are grouped into requests).
  std::vector<uint64_t> sample_seeds;
};

struct Completion {
  uint64_t request_id = 0;
  int sample_index = 0;               // k in [0, num_samples)
  std::vector<int64_t> token_ids;     // [n] generated tokens (prompt excluded; a stop id included)
  // [n] fp32: log p(token_ids[t] | prompt, token_ids[<t]) under softmax(logits / T) over the FULL
  // vocabulary, T = params.temperature (T = 1 when temperature == 0, i.e. greedy), NOT
  // truncated or renormalised by top-k / top-p. Logits are the model's fp32 LM head output. This
  // is model::TokenLogProbs(logits, targets, T), the quantity the trainer computes. Source: the
  // decode step's logits, or the training forward (EngineOptions::logprob_source).
  std::vector<float> logprobs;
  std::vector<float> entropies;       // [n] fp32 entropy of softmax(logits / T) (return_entropy)
  FinishReason finish_reason = FinishReason::kMaxTokens;
  uint64_t weights_version = 0;       // version of the weights that produced every token
  // Wall-clock seconds: Submit -> slot (queue), the prompt's prefill (shared by the request's
  // samples when share_prefill), slot -> finished (decode, incl. waiting for other rows).
  double queue_seconds = 0, prefill_seconds = 0, decode_seconds = 0;
};

// Where Completion::logprobs come from.
enum class LogProbSource {
  kDecode,   // the logits the token was sampled from (prefill / decode step); free
  kForward,  // recomputed when the sample finishes with the training forward pass: one
             // HybridModel::forward of [1, P + n] (prompt + completion) without cache, then
             // model::TokenLogProbs at positions P-1 .. P+n-2. Bitwise equal to a trainer that
             // scores the sequence the same way; costs one prefill-sized forward per sample.
};

struct EngineOptions {
  int max_slots = 64;                 // sequences decoding together (>= 1)
  bool continuous_batching = true;    // false: static batching (refill only when all finished)
  bool share_prefill = true;          // G samples reuse one prefill (false: prefill per sample)
  // true: every sequence runs with batch 1 end to end (its own cache; decode rows are separate
  // forward calls), so its tokens and log-probs are bitwise independent of batch composition
  // and slot, at the cost of batched decode throughput. false: one batched forward per step;
  // CPU BLAS picks kernels by matrix size (OpenBLAS small-matrix path for few rows), so a row's
  // logits may differ in the last bits with the number of rows (see rollout/README.md).
  bool batch_invariant = false;
  LogProbSource logprob_source = LogProbSource::kDecode;
  // Token ids -> text; needed by requests with stop_strings (else they are rejected). Stop
  // strings are matched on the text of a trailing window of tokens (twice the longest stop
  // string in bytes + 16 tokens), re-decoded after every token.
  std::function<std::string(const std::vector<int64_t>&)> detokenize;
  // Called once per finished sample (progress reporting), on the thread running Step.
  std::function<void(const Completion&)> on_completion;
};

// Checks a request against the model (vocab, context) and the engine (detokenize for stop
// strings); errors name the field as `path.field` (e.g. "request.prompt_ids[3]: id 999 out of
// range [0, 260)").
Status ValidateRequest(const Request& request, const model::ModelConfig& config, const EngineOptions& options,
                       const std::string& path = "request");

// Counters since construction (or ResetStats).
struct EngineStats {
  int64_t prefills = 0;            // prefill forward calls
  int64_t prefill_tokens = 0;      // prompt tokens prefilled
  int64_t decode_steps = 0;        // decode steps (one batched forward each)
  int64_t decode_rows = 0;         // sum over steps of the rows decoded
  int64_t generated_tokens = 0;    // tokens appended to completions (incl. first tokens)
  int64_t completed = 0;           // finished samples
  int64_t peak_rows = 0;           // most rows decoded in one step
  double prefill_seconds = 0, decode_seconds = 0, rescore_seconds = 0;
};

class Engine {
 public:
  // `model` is shared (ModuleHolder): SetWeights writes into it, and a trainer holding the same
  // module sees the same weights. The engine puts it in eval mode.
  Engine(model::HybridModel model, EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Generates every sample of every request; returns when all are finished, ordered by
  // (request position, sample_index). Throws lightrl::Error (with ValidateRequest's message)
  // if any request is invalid, before generating anything.
  std::vector<Completion> Generate(const std::vector<Request>& requests);

  // Asynchronous interface (the HTTP server): queues a request; `done` receives its
  // num_samples completions (ordered by sample_index) once all have finished. Someone must
  // drive Step() (Generate does; the server runs a loop).
  using DoneFn = std::function<void(std::vector<Completion>)>;
  Status Submit(Request request, DoneFn done);
  // One scheduling round: admit waiting samples into free slots (prefilling new prompts), then
  // one decode step over the live slots. Returns false when there was nothing to do.
  bool Step();
  // Finishes every queued and running sample at the next Step with kAborted.
  void Abort();
  // No request queued or running.
  bool idle() const;

  // Loads `weights` (every parameter by its checkpoint name, model/safetensors.h NamedTensors;
  // converted to each parameter's dtype/device) and sets the version. Refused
  // (FailedPrecondition) while any request is queued or running; missing, unexpected or
  // wrongly shaped tensors are InvalidArgument naming the tensor, and leave the model unchanged.
  Status SetWeights(const model::NamedTensors& weights, uint64_t version);
  void SetWeightsVersion(uint64_t version);
  uint64_t weights_version() const;

  model::HybridModel& model();
  const EngineOptions& options() const;
  EngineStats stats() const;
  void ResetStats();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lightrl::rollout
