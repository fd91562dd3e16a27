#include "core/comm/channel.h"

#include <set>

#include "core/check.h"

namespace lightrl::comm {

using protocol::Message;

StatusOr<Message> MessageChannel::Call(const Message& request, Millis timeout) {
  const Deadline deadline = Clock::now() + timeout;
  LR_ASSIGN_OR_RETURN(const uint64_t ticket, Send(request));
  return Await(ticket, deadline);
}

// ---- ZmqChannel ------------------------------------------------------------------------------

StatusOr<std::unique_ptr<ZmqChannel>> ZmqChannel::Connect(const std::string& endpoint, std::string name) {
  LR_ASSIGN_OR_RETURN(std::unique_ptr<RpcClient> client, RpcClient::Connect(endpoint, std::move(name)));
  return std::unique_ptr<ZmqChannel>(new ZmqChannel(std::move(client)));
}

StatusOr<uint64_t> ZmqChannel::Send(const Message& request) {
  return client_->Send({protocol::Encode(request)});
}

StatusOr<Message> ZmqChannel::Await(uint64_t ticket, Deadline deadline) {
  LR_ASSIGN_OR_RETURN(Frames frames, client_->Await(ticket, deadline));
  if (frames.size() != 1) {
    return InvalidArgument(peer() + ": expected a reply of 1 frame, got " + std::to_string(frames.size()));
  }
  StatusOr<Message> message = protocol::Decode(frames[0]);
  if (!message.ok()) return message.status().WithContext("reply from " + peer());
  return message;
}

// ---- InProcessChannel ------------------------------------------------------------------------

StatusOr<uint64_t> InProcessChannel::Send(const Message& request) {
  const uint64_t ticket = next_ticket_++;
  // Round-trip the request through the codec: the handler sees what a remote worker would.
  LR_ASSIGN_OR_RETURN(Message decoded, protocol::Decode(protocol::Encode(request)));
  std::optional<std::string> reply;
  try {
    std::optional<Message> answer = handler_(decoded);
    if (answer) reply = protocol::Encode(*answer);
  } catch (const std::exception& e) {
    reply = protocol::EncodeMessage(
        protocol::ErrorReply::FromStatus(ticket, Internal(std::string("handler threw: ") + e.what())));
  }
  replies_[ticket] = std::move(reply);
  return ticket;
}

StatusOr<Message> InProcessChannel::Await(uint64_t ticket, Deadline deadline) {
  auto it = replies_.find(ticket);
  if (it == replies_.end()) {
    return NotFound(peer() + ": request " + std::to_string(ticket) + " is not outstanding");
  }
  std::optional<std::string> reply = std::move(it->second);
  replies_.erase(it);
  if (!reply) {
    return DeadlineExceeded("no reply from " + peer() + " (request " + std::to_string(ticket) +
                            "; the handler did not answer)");
  }
  StatusOr<Message> message = protocol::Decode(*reply);
  if (!message.ok()) return message.status().WithContext("reply from " + peer());
  return message;
}

// ---- fan-out ---------------------------------------------------------------------------------

std::vector<StatusOr<Message>> CallAll(const std::vector<MessageChannel*>& channels,
                                       const std::vector<Message>& requests, Millis timeout) {
  LR_CHECK(channels.size() == requests.size(), "CallAll: ", channels.size(), " channels but ",
           requests.size(), " requests");
  LR_CHECK(std::set<MessageChannel*>(channels.begin(), channels.end()).size() == channels.size(),
           "CallAll: a channel appears twice");
  const Deadline deadline = Clock::now() + timeout;
  std::vector<StatusOr<uint64_t>> tickets;
  tickets.reserve(channels.size());
  for (size_t i = 0; i < channels.size(); ++i) tickets.push_back(channels[i]->Send(requests[i]));
  // Every request is already on its way, so awaiting them in order with one absolute deadline
  // waits at most `timeout` in total: replies that arrive while we wait on another peer are
  // queued in their own socket.
  std::vector<StatusOr<Message>> out;
  out.reserve(channels.size());
  for (size_t i = 0; i < channels.size(); ++i) {
    if (!tickets[i].ok()) {
      out.push_back(tickets[i].status());
      continue;
    }
    out.push_back(channels[i]->Await(*tickets[i], deadline));
  }
  return out;
}

// ---- server helpers --------------------------------------------------------------------------

StatusOr<Message> DecodeRequest(const RpcRequest& request) {
  if (request.frames.size() != 1) {
    return InvalidArgument("request " + std::to_string(request.request_id) + ": expected 1 frame, got " +
                           std::to_string(request.frames.size()));
  }
  return protocol::Decode(request.frames[0]);
}

Status ReplyMessage(RpcServer& server, const RpcRequest& request, const Message& reply) {
  return server.Reply(request, {protocol::Encode(reply)});
}

}  // namespace lightrl::comm
