// The only place that knows lightrl's wire format. A frame is
//
//   offset 0  uint32  magic          kWireMagic ("LRM1" as bytes 'L' 'R' 'M' '1')
//   offset 4  uint16  version        kProtocolVersion of the sender
//   offset 6  uint16  type           MessageType
//   offset 8  uint64  payload_size   bytes that follow the header
//   offset 16 payload                MessagePack (nlohmann::json::to_msgpack) of one map
//
// all little-endian. Inside the payload every field is a named map entry; token ids and
// log-probs are MessagePack `bin` blobs of little-endian int32 / fp32 (no per-element
// overhead). Decoding is strict: a wrong magic, another protocol version, a truncated frame,
// trailing bytes, an unknown message type, a missing or mistyped field, an unknown field and an
// inconsistent message (logprobs.size() != token_ids.size(), an out-of-range enum) are all
// rejected with a Status naming the problem and the field path ("Trajectory.logprobs: ...").
//
// Thread-safety: all functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/protocol/messages.h"
#include "core/status.h"

namespace lightrl::protocol {

inline constexpr uint32_t kWireMagic = 0x314D524Cu;  // bytes "LRM1" little-endian
inline constexpr size_t kFrameHeaderSize = 16;

struct FrameHeader {
  uint32_t magic = kWireMagic;
  uint16_t version = kProtocolVersion;
  uint16_t type = 0;       // raw MessageType (may be unknown when returned by PeekHeader)
  uint64_t payload_size = 0;
};

// Encodes one message into a self-contained frame (header + payload).
std::string Encode(const Message& message);
template <typename T>
std::string EncodeMessage(const T& message);  // instantiated for every alternative of Message

// Parses and checks the header only: magic, version, a known type, and that `bytes` holds
// exactly header + payload_size bytes. Errors:
//   DataLoss            bad magic; fewer bytes than the header / payload says (truncated);
//                       trailing bytes after the payload
//   FailedPrecondition  another protocol version (names both versions)
//   InvalidArgument     unknown message type (names the number)
StatusOr<FrameHeader> DecodeHeader(std::string_view bytes);

// Decodes a full frame. Errors as DecodeHeader, plus InvalidArgument / DataLoss naming the
// message type and field path for a malformed payload.
StatusOr<Message> Decode(std::string_view bytes);

// Decodes a frame that must hold a T. An ErrorReply is turned into its Status (the peer's code
// and message); any other type is InvalidArgument("expected <T>, got <type>").
template <typename T>
StatusOr<T> DecodeAs(std::string_view bytes);

}  // namespace lightrl::protocol
