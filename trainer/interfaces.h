// The trainer's ports to the other roles. The step loop (trainer.h) only sees these; adapters
// bind them to in-process components (colocated mode, tests) or to remote ranks/processes over
// ZeroMQ (split roles). Keeping the loop behind ports lets the same loop run on 1 rank or N.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/protocol/reward_types.h"
#include "core/status.h"
#include "model/safetensors.h"

namespace lightrl::trainer {

// One prompt of a step, as produced by a task source and rendered with the chat template.
struct PromptTask {
  std::string task_id;          // stable id from the task source
  std::string source;           // task source name ("countdown", "gsm8k", ...)
  std::string prompt_text;      // rendered prompt
  std::vector<int64_t> prompt_ids;
  std::string verifier;         // verifier name for the reward worker
  std::string reference_json;   // what the verifier needs (answer, tests, ...)
};

class TaskFeed {
 public:
  virtual ~TaskFeed() = default;
  // The next n prompts (deterministic given the seed and the cursor).
  virtual std::vector<PromptTask> Next(int64_t n) = 0;
  // Cursor state for checkpoints (epoch, position, permutation seed, ...).
  virtual nlohmann::json State() const = 0;
  virtual Status Restore(const nlohmann::json& state) = 0;
};

struct GenerationRequest {
  uint64_t request_id = 0;
  std::vector<int64_t> prompt_ids;
  int num_samples = 1;
  uint64_t seed = 0;
};

struct Generation {
  uint64_t request_id = 0;
  int sample_index = 0;
  std::vector<int64_t> token_ids;
  std::vector<float> logprobs;  // [n] fp32 full-vocab log-probs of logits / temperature
  std::string finish_reason;
  std::string text;
  uint64_t weights_version = 0;
};

class RolloutPort {
 public:
  virtual ~RolloutPort() = default;
  // All samples of all requests, ordered by (request, sample_index). A failed rollout worker is
  // an error naming it (the step cannot proceed without its samples).
  virtual StatusOr<std::vector<Generation>> Generate(const std::vector<GenerationRequest>& requests) = 0;
  // Makes `weights` (the policy's named parameters) the served weights, tagged `version`.
  virtual Status PublishWeights(const model::NamedTensors& weights, uint64_t version) = 0;
};

struct ScoreRequest {
  uint64_t sample_id = 0;
  std::string verifier;
  std::string reference_json;
  std::string prompt_text;
  std::string response_text;
  std::string finish_reason;
  int64_t response_tokens = 0;
};

class RewardPort {
 public:
  virtual ~RewardPort() = default;
  // Exactly one result per request, in request order. Workers that miss the deadline yield
  // RewardErrorKind::kWorkerLost / kTimeout results (the sample is masked), never a 0 score.
  virtual std::vector<RewardResult> Score(const std::vector<ScoreRequest>& requests, double timeout_s) = 0;
};

}  // namespace lightrl::trainer
