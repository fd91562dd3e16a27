// The trainer's ports to the other roles. The step loop (trainer.h) only sees these; adapters
// bind them to in-process components (colocated mode, tests) or to remote ranks/processes over
// ZeroMQ (split roles). Keeping the loop behind ports lets the same loop run on 1 rank or N.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/protocol/messages.h"
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

class RolloutPort {
 public:
  virtual ~RolloutPort() = default;
  // Generates request.samples_per_prompt samples for every prompt; the result holds exactly
  // prompts.size() * G trajectories ordered by (prompt, sample_index). A failed rollout worker
  // is an error naming it (the step cannot proceed without its samples).
  virtual StatusOr<protocol::RolloutResult> Generate(const protocol::RolloutRequest& request) = 0;
  // Makes `weights` (the policy's named parameters) the served weights, tagged `version`.
  virtual Status PublishWeights(const model::NamedTensors& weights, uint64_t version) = 0;
};

class RewardPort {
 public:
  virtual ~RewardPort() = default;
  // Exactly one result per request, in request order. Workers that miss the deadline
  // (batch.deadline_s) yield RewardErrorKind::kWorkerLost / kTimeout results (the sample is
  // masked), never a 0 score.
  virtual std::vector<RewardResult> Score(const protocol::RewardBatch& batch) = 0;
};

}  // namespace lightrl::trainer
