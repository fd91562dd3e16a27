// Typed request/reply channels carrying core/protocol messages. Workers and the trainer talk
// through the MessageChannel interface, so tests (and the colocated mode) can swap the ZeroMQ
// transport for an in-process one without touching the step loop (leveldb's Env idea):
//
//   ZmqChannel        a RpcClient to a remote RpcServer (core/comm/zmq_rpc.h)
//   InProcessChannel  calls a handler function directly; the messages still go through the codec,
//                     so both transports see exactly the same bytes and the same errors
//
// Fan-out with one deadline (the trainer's reward and rollout phases):
//
//   std::vector<comm::MessageChannel*> workers = ...;
//   std::vector<protocol::Message> batches = ...;                 // one per worker
//   auto replies = comm::CallAll(workers, batches, comm::Millis(60000));
//   for (size_t i = 0; i < replies.size(); ++i)
//     if (!replies[i].ok()) mask the samples of batches[i]; log replies[i].status()  // names the peer
//
// Errors are Status values naming the peer: DeadlineExceeded for a peer that did not answer in
// time, the peer's own code for an ErrorReply, InvalidArgument / DataLoss / FailedPrecondition
// for undecodable replies (wrong type, truncated, other protocol version).
//
// Thread-safety: a channel is used by one thread at a time.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/comm/zmq_rpc.h"
#include "core/protocol/codec.h"
#include "core/protocol/messages.h"
#include "core/status.h"

namespace lightrl::comm {

class MessageChannel {
 public:
  virtual ~MessageChannel() = default;

  // Who is at the other end, for error messages ("reward-0 at tcp://127.0.0.1:40123").
  virtual std::string peer() const = 0;

  // Sends `request` and returns a ticket for Await. Does not wait for the reply.
  virtual StatusOr<uint64_t> Send(const protocol::Message& request) = 0;

  // The reply to `ticket`, decoded; waits until `deadline`. An ErrorReply from the peer is
  // returned as the decoded ErrorReply message (use AwaitAs<T> to turn it into a Status).
  virtual StatusOr<protocol::Message> Await(uint64_t ticket, Deadline deadline) = 0;

  // Send + Await.
  StatusOr<protocol::Message> Call(const protocol::Message& request, Millis timeout);

  // Send + Await expecting a reply of type T; an ErrorReply becomes its Status and any other type
  // is InvalidArgument. Every error is prefixed with peer().
  template <typename T>
  StatusOr<T> CallAs(const protocol::Message& request, Millis timeout);
  template <typename T>
  StatusOr<T> AwaitAs(uint64_t ticket, Deadline deadline);
};

// A MessageChannel over a RpcClient: each message is one frame of its encoded bytes.
class ZmqChannel final : public MessageChannel {
 public:
  // See RpcClient::Connect.
  static StatusOr<std::unique_ptr<ZmqChannel>> Connect(const std::string& endpoint,
                                                       std::string name = "");
  std::string peer() const override { return client_->Describe(); }
  StatusOr<uint64_t> Send(const protocol::Message& request) override;
  StatusOr<protocol::Message> Await(uint64_t ticket, Deadline deadline) override;
  RpcClient& client() { return *client_; }

 private:
  explicit ZmqChannel(std::unique_ptr<RpcClient> client) : client_(std::move(client)) {}
  std::unique_ptr<RpcClient> client_;
};

// A MessageChannel that answers by calling `handler` in the caller's thread (during Send). The
// request and the reply are encoded and decoded like on the wire. A handler returning nullopt
// models a peer that never answers: Await then returns DeadlineExceeded immediately (without
// sleeping until the deadline, to keep tests fast). A handler that throws is turned into an
// ErrorReply(kInternal) carrying what(), as a remote worker would report it.
class InProcessChannel final : public MessageChannel {
 public:
  using Handler = std::function<std::optional<protocol::Message>(const protocol::Message&)>;
  InProcessChannel(std::string name, Handler handler)
      : name_(std::move(name)), handler_(std::move(handler)) {}
  std::string peer() const override { return name_ + " (in-process)"; }
  StatusOr<uint64_t> Send(const protocol::Message& request) override;
  StatusOr<protocol::Message> Await(uint64_t ticket, Deadline deadline) override;

 private:
  std::string name_;
  Handler handler_;
  uint64_t next_ticket_ = 1;
  std::map<uint64_t, std::optional<std::string>> replies_;  // ticket -> encoded reply
};

// Sends requests[i] to channels[i] (all sends first), then collects every reply before the common
// deadline now + timeout. Result i is channels[i]'s reply or the error for it (naming its peer);
// one slow or dead peer never delays the others' results past the deadline.
// REQUIRES: channels.size() == requests.size(); no channel appears twice.
std::vector<StatusOr<protocol::Message>> CallAll(const std::vector<MessageChannel*>& channels,
                                                 const std::vector<protocol::Message>& requests,
                                                 Millis timeout);

// Server side: decodes the single frame of `request` (InvalidArgument naming the frame count if
// it is not exactly one frame).
StatusOr<protocol::Message> DecodeRequest(const RpcRequest& request);

// Server side: encodes `reply` as one frame and sends it.
Status ReplyMessage(RpcServer& server, const RpcRequest& request, const protocol::Message& reply);

// ---- implementation of the templates ---------------------------------------------------------

namespace channel_detail {
// The T inside `message`, its ErrorReply as a Status, or InvalidArgument for another type.
template <typename T>
StatusOr<T> Expect(StatusOr<protocol::Message> message, const std::string& peer) {
  if (!message.ok()) return message.status();
  if (auto* value = std::get_if<T>(&*message)) return std::move(*value);
  if (auto* error = std::get_if<protocol::ErrorReply>(&*message)) {
    return error->ToStatus().WithContext(peer);
  }
  return InvalidArgument(peer + ": expected a " +
                         protocol::MessageTypeName(protocol::MessageTypeOf<T>::value) +
                         " reply, got " + protocol::MessageTypeName(protocol::TypeOf(*message)));
}
}  // namespace channel_detail

template <typename T>
StatusOr<T> MessageChannel::CallAs(const protocol::Message& request, Millis timeout) {
  return channel_detail::Expect<T>(Call(request, timeout), peer());
}

template <typename T>
StatusOr<T> MessageChannel::AwaitAs(uint64_t ticket, Deadline deadline) {
  return channel_detail::Expect<T>(Await(ticket, deadline), peer());
}

}  // namespace lightrl::comm
