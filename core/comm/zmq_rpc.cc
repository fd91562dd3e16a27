// ROUTER/DEALER request-reply with deadlines (see zmq_rpc.h for the envelope and guarantees).
#include "core/comm/zmq_rpc.h"

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <cerrno>
#include <iterator>

#include "core/check.h"
#include "core/logging.h"

namespace lightrl::comm {

namespace {

// One process-wide context, intentionally leaked: destroying a context blocks until every socket
// is closed, which at exit (static destruction order) could hang the process.
zmq::context_t& Context() {
  static zmq::context_t* context = new zmq::context_t(1);
  return *context;
}

std::string EncodeId(uint64_t id) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((id >> (8 * i)) & 0xff);
  return out;
}

std::optional<uint64_t> DecodeId(const zmq::message_t& m) {
  if (m.size() != 8) return std::nullopt;
  const auto* p = static_cast<const uint8_t*>(m.data());
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id |= static_cast<uint64_t>(p[i]) << (8 * i);
  return id;
}

// Waits until `socket` is readable or `timeout` passes. Retries on EINTR (signals such as the
// trainer's SIGTERM handler must not turn into spurious errors).
StatusOr<bool> PollIn(zmq::socket_t& socket, Deadline deadline, const std::string& who) {
  while (true) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      const int n = zmq::poll(&item, 1, Remaining(deadline));
      if (n > 0 && (item.revents & ZMQ_POLLIN)) return true;
      if (Clock::now() >= deadline) return false;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return Internal("poll on " + who + ": " + e.what());
    }
  }
}

// Receives one whole multipart message without blocking (the caller polled first).
StatusOr<std::vector<zmq::message_t>> RecvAll(zmq::socket_t& socket, const std::string& who) {
  std::vector<zmq::message_t> parts;
  try {
    auto n = zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait);
    if (!n) return Unavailable("receive on " + who + ": no message ready");
  } catch (const zmq::error_t& e) {
    return Internal("receive on " + who + ": " + e.what());
  }
  return parts;
}

}  // namespace

Millis Remaining(Deadline deadline) {
  const auto now = Clock::now();
  if (now >= deadline) return Millis(0);
  // Round up so that a 0.4 ms remainder still polls instead of spinning.
  return std::chrono::ceil<Millis>(deadline - now);
}

// ---- server ----------------------------------------------------------------------------------

struct RpcServer::Impl {
  zmq::socket_t socket{Context(), zmq::socket_type::router};
  std::string endpoint;
};

RpcServer::RpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RpcServer::~RpcServer() = default;

StatusOr<std::unique_ptr<RpcServer>> RpcServer::Bind(const std::string& endpoint) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->socket.set(zmq::sockopt::linger, 0);
    impl->socket.bind(endpoint);
    impl->endpoint = impl->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot bind RPC server to " + endpoint + ": " + e.what());
  }
  Logger("comm")->debug("RPC server bound to {}", impl->endpoint);
  return std::unique_ptr<RpcServer>(new RpcServer(std::move(impl)));
}

const std::string& RpcServer::endpoint() const { return impl_->endpoint; }

StatusOr<std::optional<RpcRequest>> RpcServer::Receive(Millis timeout) {
  const Deadline deadline = Clock::now() + timeout;
  const std::string who = "RPC server " + impl_->endpoint;
  while (true) {
    LR_ASSIGN_OR_RETURN(const bool ready, PollIn(impl_->socket, deadline, who));
    if (!ready) return std::optional<RpcRequest>();
    LR_ASSIGN_OR_RETURN(std::vector<zmq::message_t> parts, RecvAll(impl_->socket, who));
    std::optional<uint64_t> id;
    if (parts.size() >= 2) id = DecodeId(parts[1]);
    if (!id) {
      ++dropped_;
      Logger("comm")->warn("{}: dropped a malformed message ({} parts; expected identity, 8-byte "
                           "request id, payload)", who, parts.size());
      continue;
    }
    RpcRequest request;
    request.peer_identity = parts[0].to_string();
    request.request_id = *id;
    for (size_t i = 2; i < parts.size(); ++i) request.frames.push_back(parts[i].to_string());
    return std::optional<RpcRequest>(std::move(request));
  }
}

Status RpcServer::Reply(const RpcRequest& request, const Frames& frames) {
  std::vector<zmq::message_t> parts;
  parts.reserve(frames.size() + 2);
  parts.emplace_back(request.peer_identity.data(), request.peer_identity.size());
  const std::string id = EncodeId(request.request_id);
  parts.emplace_back(id.data(), id.size());
  for (const std::string& f : frames) parts.emplace_back(f.data(), f.size());
  try {
    // ROUTER drops messages to unknown peers instead of blocking; dontwait guards the HWM case.
    auto sent = zmq::send_multipart(impl_->socket, parts, zmq::send_flags::dontwait);
    if (!sent) {
      return Unavailable("RPC server " + impl_->endpoint + ": reply to request " +
                         std::to_string(request.request_id) + " not queued (send queue full)");
    }
  } catch (const zmq::error_t& e) {
    return Internal("RPC server " + impl_->endpoint + ": reply failed: " + e.what());
  }
  return Status::Ok();
}

// ---- client ----------------------------------------------------------------------------------

struct RpcClient::Impl {
  zmq::socket_t socket{Context(), zmq::socket_type::dealer};
  std::string endpoint;
  std::string name;
};

RpcClient::RpcClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RpcClient::~RpcClient() = default;

StatusOr<std::unique_ptr<RpcClient>> RpcClient::Connect(const std::string& endpoint, std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->endpoint = endpoint;
  impl->name = std::move(name);
  try {
    impl->socket.set(zmq::sockopt::linger, 0);
    impl->socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return InvalidArgument("cannot connect RPC client to " + endpoint + ": " + e.what());
  }
  return std::unique_ptr<RpcClient>(new RpcClient(std::move(impl)));
}

const std::string& RpcClient::endpoint() const { return impl_->endpoint; }
const std::string& RpcClient::name() const { return impl_->name; }

std::string RpcClient::Describe() const {
  return impl_->name.empty() ? impl_->endpoint : impl_->name + " at " + impl_->endpoint;
}

StatusOr<uint64_t> RpcClient::Send(const Frames& frames) {
  const uint64_t id = next_id_++;
  std::vector<zmq::message_t> parts;
  parts.reserve(frames.size() + 1);
  const std::string id_bytes = EncodeId(id);
  parts.emplace_back(id_bytes.data(), id_bytes.size());
  for (const std::string& f : frames) parts.emplace_back(f.data(), f.size());
  try {
    auto sent = zmq::send_multipart(impl_->socket, parts, zmq::send_flags::dontwait);
    if (!sent) {
      return Unavailable("cannot queue request " + std::to_string(id) + " to " + Describe() +
                         " (send queue full: the peer is not reading)");
    }
  } catch (const zmq::error_t& e) {
    return Internal("send to " + Describe() + " failed: " + e.what());
  }
  outstanding_[id] = Clock::now();
  return id;
}

StatusOr<Frames> RpcClient::Await(uint64_t request_id, Deadline deadline) {
  if (auto it = early_replies_.find(request_id); it != early_replies_.end()) {
    Frames frames = std::move(it->second);
    early_replies_.erase(it);
    return frames;
  }
  auto sent = outstanding_.find(request_id);
  if (sent == outstanding_.end()) {
    return NotFound("request " + std::to_string(request_id) + " to " + Describe() +
                    " is not outstanding (already answered or abandoned)");
  }
  const Deadline sent_at = sent->second;
  while (true) {
    LR_ASSIGN_OR_RETURN(const bool ready, PollIn(impl_->socket, deadline, Describe()));
    if (!ready) {
      outstanding_.erase(request_id);  // abandoned: a late reply is discarded
      const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - sent_at).count();
      return DeadlineExceeded("no reply from " + Describe() + " within " + std::to_string(waited) +
                              " ms (request " + std::to_string(request_id) + ")");
    }
    LR_ASSIGN_OR_RETURN(std::vector<zmq::message_t> parts, RecvAll(impl_->socket, Describe()));
    std::optional<uint64_t> id;
    if (!parts.empty()) id = DecodeId(parts[0]);
    if (!id) {
      ++discarded_;
      Logger("comm")->warn("{}: discarded a malformed reply ({} parts)", Describe(), parts.size());
      continue;
    }
    Frames frames;
    for (size_t i = 1; i < parts.size(); ++i) frames.push_back(parts[i].to_string());
    if (*id == request_id) {
      outstanding_.erase(request_id);
      return frames;
    }
    if (outstanding_.count(*id)) {
      outstanding_.erase(*id);
      early_replies_[*id] = std::move(frames);
    } else {
      ++discarded_;
      Logger("comm")->debug("{}: discarded a late reply to abandoned request {}", Describe(), *id);
    }
  }
}

StatusOr<Frames> RpcClient::Call(const Frames& frames, Millis timeout) {
  LR_ASSIGN_OR_RETURN(const uint64_t id, Send(frames));
  return Await(id, Clock::now() + timeout);
}

}  // namespace lightrl::comm
