#include "core/protocol/messages.h"

#include "core/check.h"

namespace lightrl::protocol {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kUnknown: return "unknown";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kRepetition: return "repetition";
    case FinishReason::kAborted: return "aborted";
  }
  return "invalid";
}

std::optional<FinishReason> FinishReasonFromName(std::string_view name) {
  for (FinishReason r : {FinishReason::kUnknown, FinishReason::kStop, FinishReason::kLength,
                         FinishReason::kRepetition, FinishReason::kAborted}) {
    if (name == FinishReasonName(r)) return r;
  }
  return std::nullopt;
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t TensorSpec::nbytes() const { return numel() * static_cast<int64_t>(DTypeSize(dtype)); }

std::string TensorSpec::ToString() const {
  std::string out = name + " " + DTypeName(dtype) + "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

int64_t WeightsManifest::total_bytes() const {
  int64_t total = 0;
  for (const TensorSpec& t : tensors) total += t.nbytes();
  return total;
}

Status ErrorReply::ToStatus() const {
  // An ErrorReply always describes a failure; an OK code on the wire is itself a bug.
  if (code == StatusCode::kOk) return Internal("peer sent ErrorReply with code OK: " + message);
  return Status(code, message);
}

ErrorReply ErrorReply::FromStatus(uint64_t request_id, const Status& status) {
  ErrorReply r;
  r.request_id = request_id;
  r.code = status.ok() ? StatusCode::kInternal : status.code();
  r.message = status.ok() ? "ErrorReply built from an OK status" : status.message();
  return r;
}

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kRolloutRequest: return "RolloutRequest";
    case MessageType::kRolloutResult: return "RolloutResult";
    case MessageType::kTrajectory: return "Trajectory";
    case MessageType::kRewardRequest: return "RewardRequest";
    case MessageType::kRewardBatch: return "RewardBatch";
    case MessageType::kRewardResult: return "RewardResult";
    case MessageType::kRewardResultBatch: return "RewardResultBatch";
    case MessageType::kWeightsAnnounce: return "WeightsAnnounce";
    case MessageType::kHeartbeat: return "Heartbeat";
    case MessageType::kShutdown: return "Shutdown";
    case MessageType::kAck: return "Ack";
    case MessageType::kErrorReply: return "ErrorReply";
  }
  return "unknown";
}

bool IsKnownMessageType(uint16_t raw) {
  return raw >= static_cast<uint16_t>(MessageType::kRolloutRequest) &&
         raw <= static_cast<uint16_t>(MessageType::kErrorReply);
}

MessageType TypeOf(const Message& message) {
  return std::visit([](const auto& m) { return MessageTypeOf<std::decay_t<decltype(m)>>::value; },
                    message);
}

uint64_t SampleSeed(uint64_t request_seed, uint64_t sample_id) {
  // splitmix64 finaliser (Steele et al.): a bijective mix, so distinct sample ids of one request
  // never share a seed.
  uint64_t z = request_seed ^ (sample_id * 0x9E3779B97F4A7C15ull);
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace lightrl::protocol
