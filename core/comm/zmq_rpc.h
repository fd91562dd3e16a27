// Request/reply over ZeroMQ with per-request deadlines: a ROUTER server (RpcServer) and a DEALER
// client (RpcClient) exchanging multipart messages. This is the byte-level transport; typed
// messages on top of it are in core/comm/channel.h.
//
// Envelope (all frames are ZeroMQ message parts):
//   client -> server   [request_id (8 bytes LE), payload frame 0, payload frame 1, ...]
//   server -> client   [request_id (8 bytes LE), payload frame 0, ...]
// The ROUTER socket adds/strips the client's routing identity. Request ids let a client discard a
// late reply to a request it already gave up on (deadline passed), so one slow answer can never be
// mistaken for the answer to the next request.
//
// Deadlines: RpcClient::Await polls with a timeout and returns DeadlineExceeded naming the peer's
// endpoint ("no reply from reward-0 at tcp://127.0.0.1:40123 within 200 ms (request 7)"). A
// client never blocks forever: sends are non-blocking (Unavailable if the queue is full) and
// sockets have linger 0, so closing never waits for an absent peer.
//
// Endpoints: servers bind to loopback by default (kLoopbackAnyPort) and report the port the OS
// chose (ZMQ_LAST_ENDPOINT). Exposing a worker beyond the host is an explicit choice of the
// caller ("tcp://0.0.0.0:5555").
//
// Thread-safety: a RpcServer / RpcClient is used by one thread at a time (ZeroMQ sockets are not
// thread-safe). Different objects may be used concurrently from different threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::comm {

// The payload parts of one multipart message.
using Frames = std::vector<std::string>;

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
using Millis = std::chrono::milliseconds;

inline constexpr const char* kLoopbackAnyPort = "tcp://127.0.0.1:*";

// One request as received by a server.
struct RpcRequest {
  std::string peer_identity;  // ROUTER routing id of the client (opaque bytes)
  uint64_t request_id = 0;
  Frames frames;
};

class RpcServer {
 public:
  // Binds a ROUTER socket to `endpoint` ("tcp://127.0.0.1:*" picks a free loopback port,
  // "ipc:///tmp/x", "inproc://name" also work). Unavailable if the address cannot be bound
  // (the message names the endpoint and the ZeroMQ error, e.g. "Address already in use").
  static StatusOr<std::unique_ptr<RpcServer>> Bind(const std::string& endpoint = kLoopbackAnyPort);
  ~RpcServer();
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // The endpoint actually bound, with the resolved port ("tcp://127.0.0.1:40123"). Give this to
  // clients.
  const std::string& endpoint() const;

  // Waits up to `timeout` for one request; nullopt when none arrived in time. Malformed
  // envelopes (not from a lightrl client) are dropped with a warning and counted.
  StatusOr<std::optional<RpcRequest>> Receive(Millis timeout);

  // Sends `frames` as the reply to `request`. A reply to a client that went away is dropped by
  // ZeroMQ (ROUTER semantics) and still returns OK.
  Status Reply(const RpcRequest& request, const Frames& frames);

  int64_t dropped_messages() const { return dropped_; }

 private:
  struct Impl;
  explicit RpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int64_t dropped_ = 0;
};

class RpcClient {
 public:
  // Connects a DEALER socket to `endpoint`. Connecting succeeds even if no server listens yet
  // (ZeroMQ connects in the background); a missing server shows up as DeadlineExceeded on Await.
  // `name` identifies the peer in error messages ("reward-0"); defaults to the endpoint.
  static StatusOr<std::unique_ptr<RpcClient>> Connect(const std::string& endpoint,
                                                       std::string name = "");
  ~RpcClient();
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;

  const std::string& endpoint() const;
  const std::string& name() const;
  // "reward-0 at tcp://127.0.0.1:40123" (or just the endpoint when no name was given).
  std::string Describe() const;

  // Queues a request; returns its id (unique per client, increasing). Unavailable if ZeroMQ
  // cannot queue it (high-water mark reached).
  StatusOr<uint64_t> Send(const Frames& frames);

  // Waits for the reply to `request_id` until `deadline`. Replies to other outstanding requests
  // that arrive meanwhile are kept for their own Await; replies to abandoned requests are
  // discarded. DeadlineExceeded (naming the peer, the timeout and the request id) when the
  // deadline passes; the request is then abandoned. NotFound for an id that is not outstanding.
  StatusOr<Frames> Await(uint64_t request_id, Deadline deadline);

  // Send + Await with a relative timeout.
  StatusOr<Frames> Call(const Frames& frames, Millis timeout);

  // Requests sent but neither answered nor abandoned.
  size_t outstanding() const { return outstanding_.size(); }
  int64_t discarded_replies() const { return discarded_; }

 private:
  struct Impl;
  explicit RpcClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Deadline> outstanding_;   // id -> when it was sent (for messages)
  std::map<uint64_t, Frames> early_replies_;   // replies received while awaiting another id
  int64_t discarded_ = 0;
};

// Milliseconds from now until `deadline` (0 if past).
Millis Remaining(Deadline deadline);

}  // namespace lightrl::comm
