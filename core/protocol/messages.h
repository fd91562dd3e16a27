// Every message that crosses a process boundary in lightrl, as plain structs. Serialization lives
// in core/protocol/codec.h and nowhere else; transports (core/comm/) move the encoded bytes.
//
// Roles and the messages they exchange:
//   trainer --RolloutRequest-->   rollout worker   --RolloutResult (Trajectory...)--> trainer
//   trainer --RewardBatch-->      reward worker    --RewardResultBatch-->            trainer
//   trainer --WeightsAnnounce-->  rollout workers  (manifest; tensors follow over MPI/NCCL)
//   any     --Heartbeat/Shutdown/Ack/ErrorReply--> any
//
// Accounting is exactly-once by sample id: the trainer assigns every sample a unique id before
// it is generated (PromptSpec::first_sample_id + j); trajectories, reward requests and reward
// results all carry it, so a missing or duplicated result is detectable.
//
// Exceptions never cross a process boundary: a worker that fails a request replies ErrorReply
// (a StatusCode + message), which DecodeAs<T>() turns back into a Status on the caller's side.
//
// Versioning: bump kProtocolVersion on ANY change of a field, enum value or message type. The
// codec rejects frames of another version; there is no cross-version compatibility.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/protocol/dtype.h"
#include "core/protocol/reward_types.h"
#include "core/status.h"

namespace lightrl::protocol {

inline constexpr uint16_t kProtocolVersion = 1;  // bump on any field change

// ---- rollout ---------------------------------------------------------------------------------

// Why generation of one sample stopped.
enum class FinishReason : uint8_t {
  kUnknown = 0,
  kStop = 1,        // a stop token (EOS) was generated; it is the last entry of token_ids
  kLength = 2,      // max_new_tokens reached (overlong; rewards.md scores it per task)
  kRepetition = 3,  // M1 repetition early truncation (algorithms.md §6.3)
  kAborted = 4,     // cancelled by the worker (shutdown, weights update); the trainer masks it
};
const char* FinishReasonName(FinishReason reason);  // "unknown", "stop", "length", ...
std::optional<FinishReason> FinishReasonFromName(std::string_view name);

// Sampling knobs of one RolloutRequest (trainer config `rollout.*`).
struct SamplingParams {
  float temperature = 1.0f;              // > 0: logits / temperature
  float top_p = 1.0f;                    // (0, 1]; 1 = off
  int32_t top_k = 0;                     // 0 = off
  int32_t max_new_tokens = 0;            // response budget in tokens, > 0
  std::vector<int32_t> stop_token_ids;   // generation stops after any of these (EOS, <|im_end|>)
  // M1 early truncation: stop once this many consecutive tokens each had p > early_truncation_prob.
  int32_t early_truncation_window = 0;   // 0 = off (M1 used 3000)
  float early_truncation_prob = 0.99f;
};

// One prompt of a rollout request; the worker generates RolloutRequest::samples_per_prompt
// samples for it, sample j (0-based) with sample id first_sample_id + j.
struct PromptSpec {
  uint64_t prompt_id = 0;        // the task source's stable id of the prompt
  uint64_t group_id = 0;         // unique per (step, prompt): GRPO groups samples by it
  uint64_t first_sample_id = 0;  // sample ids first_sample_id .. first_sample_id + G - 1
  std::string task_id;           // task source / task name (for metrics and rewards)
  std::vector<int32_t> token_ids;  // [P] prompt tokens, chat template already applied
};

// trainer -> rollout worker. The worker answers with one RolloutResult holding exactly
// prompts.size() * samples_per_prompt trajectories, or with an ErrorReply.
struct RolloutRequest {
  uint64_t request_id = 0;        // unique per trainer run; echoed in the reply
  std::vector<PromptSpec> prompts;
  int32_t samples_per_prompt = 1;  // G, >= 1
  SamplingParams sampling;
  // Sampling of sample s uses a generator seeded with SampleSeed(seed, s), so the result does
  // not depend on batching, worker count or order (synchronous runs are reproducible).
  uint64_t seed = 0;
  // The worker must generate with weights of at least this version (the staleness bound); a
  // worker that serves an older version replies ErrorReply(kFailedPrecondition).
  uint64_t min_weights_version = 0;
};

// Worker-side wall-clock timings of one sample, in seconds.
struct TrajectoryTimings {
  double queue_s = 0;    // request received -> sample started
  double prefill_s = 0;  // prompt forward
  double decode_s = 0;   // token-by-token generation
};

// One generated sample.
struct Trajectory {
  uint64_t sample_id = 0;
  uint64_t prompt_id = 0;
  uint64_t group_id = 0;
  int32_t sample_index = 0;        // j in [0, G): position within its group
  uint64_t weights_version = 0;    // the policy version that generated every token
  std::vector<int32_t> token_ids;  // [n] response tokens (prompt excluded)
  // [n] fp32: log pi(token_t | prefix) under the FULL-vocabulary distribution of
  // logits / temperature, i.e. before top-p/top-k truncation (algorithms.md §9 row 5).
  std::vector<float> logprobs;
  FinishReason finish_reason = FinishReason::kUnknown;
  std::string text;                // detokenized response (may be empty if not requested)
  TrajectoryTimings timings;
};

// rollout worker -> trainer: the reply to one RolloutRequest.
struct RolloutResult {
  uint64_t request_id = 0;
  int32_t worker_rank = -1;        // MPI world rank of the worker (-1 for a standalone process)
  std::vector<Trajectory> trajectories;  // ordered by (prompt, sample_index)
};

// ---- reward ----------------------------------------------------------------------------------

// One sample to score (rewards.md §1).
struct RewardRequest {
  uint64_t sample_id = 0;
  std::string task_id;
  std::string verifier;            // verifier registry name ("math", "countdown", "code", ...)
  std::string reference_json;      // what the verifier needs (gold answer, tests), JSON text
  std::string prompt_text;
  std::string response_text;
  FinishReason finish_reason = FinishReason::kUnknown;
  int32_t response_tokens = 0;     // length in tokens (overlong shaping)
};

// trainer -> reward worker. The worker replies one RewardResultBatch with exactly one
// RewardResult per request (a RewardError for infrastructure failures, never a missing entry).
struct RewardBatch {
  uint64_t batch_id = 0;
  double deadline_s = 0;           // time budget for the whole batch (0 = worker default)
  std::vector<RewardRequest> requests;
};

struct RewardResultBatch {
  uint64_t batch_id = 0;
  std::vector<RewardResult> results;  // lightrl::RewardResult (core/protocol/reward_types.h)
};

// ---- weights and control ---------------------------------------------------------------------

// Name, dtype and shape of one tensor of a weight set.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;      // [] = scalar
  int64_t numel() const;
  int64_t nbytes() const;
  bool operator==(const TensorSpec& o) const {
    return name == o.name && dtype == o.dtype && shape == o.shape;
  }
  bool operator!=(const TensorSpec& o) const { return !(*this == o); }
  std::string ToString() const;    // "layers.0.attn.q.weight float32[64, 64]"
};

// What a weight sync transfers, sent before the tensors (algorithms.md §9 row 7).
struct WeightsManifest {
  uint64_t version = 0;
  std::vector<TensorSpec> tensors;  // in transfer order (sorted by name by the MPI helpers)
  int64_t total_bytes() const;
};

// trainer -> rollout workers: weights `manifest.version` are about to be (or have been) sent.
struct WeightsAnnounce {
  WeightsManifest manifest;
  std::string transport;           // "mpi", "nccl" or "file:<path>"
};

struct Heartbeat {
  std::string role;                // "trainer", "rollout", "reward"
  int32_t rank = -1;               // MPI world rank (-1 for a standalone process)
  uint64_t sequence = 0;           // increments per heartbeat of the sender
  int64_t unix_time_ms = 0;
  uint64_t weights_version = 0;    // the version the sender serves (rollout) or trains (trainer)
};

// Ask a worker to exit after its current request. It replies Ack, then exits 0.
struct Shutdown {
  std::string reason;
};

// Positive reply to a control message (Shutdown, WeightsAnnounce, Heartbeat).
struct Ack {
  uint64_t request_id = 0;         // the id or version being acknowledged (0 if none)
};

// A request failed on the worker; carries a Status across the process boundary.
struct ErrorReply {
  uint64_t request_id = 0;
  StatusCode code = StatusCode::kInternal;
  std::string message;
  Status ToStatus() const;         // code + message ("worker: " context added by transports)
  static ErrorReply FromStatus(uint64_t request_id, const Status& status);
};

// ---- the message set -------------------------------------------------------------------------

// Wire type tags. Values are part of the protocol (never reuse or renumber).
enum class MessageType : uint16_t {
  kRolloutRequest = 1,
  kRolloutResult = 2,
  kTrajectory = 3,
  kRewardRequest = 4,
  kRewardBatch = 5,
  kRewardResult = 6,
  kRewardResultBatch = 7,
  kWeightsAnnounce = 8,
  kHeartbeat = 9,
  kShutdown = 10,
  kAck = 11,
  kErrorReply = 12,
};
const char* MessageTypeName(MessageType type);  // "RolloutRequest", ...; "unknown" otherwise
bool IsKnownMessageType(uint16_t raw);

using Message = std::variant<RolloutRequest, RolloutResult, Trajectory, RewardRequest, RewardBatch,
                             RewardResult, RewardResultBatch, WeightsAnnounce, Heartbeat, Shutdown,
                             Ack, ErrorReply>;

template <typename T> struct MessageTypeOf;
#define LR_PROTOCOL_MESSAGE_TYPE(T)                                   \
  template <> struct MessageTypeOf<T> {                               \
    static constexpr MessageType value = MessageType::k##T;           \
  };
LR_PROTOCOL_MESSAGE_TYPE(RolloutRequest)
LR_PROTOCOL_MESSAGE_TYPE(RolloutResult)
LR_PROTOCOL_MESSAGE_TYPE(Trajectory)
LR_PROTOCOL_MESSAGE_TYPE(RewardRequest)
LR_PROTOCOL_MESSAGE_TYPE(RewardBatch)
LR_PROTOCOL_MESSAGE_TYPE(RewardResult)
LR_PROTOCOL_MESSAGE_TYPE(RewardResultBatch)
LR_PROTOCOL_MESSAGE_TYPE(WeightsAnnounce)
LR_PROTOCOL_MESSAGE_TYPE(Heartbeat)
LR_PROTOCOL_MESSAGE_TYPE(Shutdown)
LR_PROTOCOL_MESSAGE_TYPE(Ack)
LR_PROTOCOL_MESSAGE_TYPE(ErrorReply)
#undef LR_PROTOCOL_MESSAGE_TYPE

// The type tag of the alternative `message` holds.
MessageType TypeOf(const Message& message);

// The per-sample seed of RolloutRequest::seed (splitmix64 of seed ^ golden-ratio * sample_id):
// independent of batching and worker assignment.
uint64_t SampleSeed(uint64_t request_seed, uint64_t sample_id);

}  // namespace lightrl::protocol
