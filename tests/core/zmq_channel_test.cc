// Tests for core/comm/zmq_rpc and core/comm/channel over loopback TCP: multipart round trips,
// deadlines that name the peer, late/out-of-order replies, typed channels, fan-out.
#include <gtest/gtest.h>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <atomic>
#include <functional>
#include <thread>

#include "core/comm/channel.h"
#include "core/comm/zmq_rpc.h"

namespace lightrl::comm {
namespace {

using protocol::Message;

// Runs `handle` on every request the server receives, in a background thread, until destroyed.
// `handle` returns the reply frames, or nullopt to not answer.
class ServerThread {
 public:
  using Handle = std::function<std::optional<Frames>(const RpcRequest&)>;
  explicit ServerThread(Handle handle) {
    auto server = RpcServer::Bind();
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    endpoint_ = server_->endpoint();
    thread_ = std::thread([this, handle = std::move(handle)] {
      while (!stop_) {
        auto req = server_->Receive(Millis(20));
        if (!req.ok() || !req->has_value()) continue;
        ++received_;
        if (auto reply = handle(**req)) {
          Status s = server_->Reply(**req, *reply);
          EXPECT_TRUE(s.ok()) << s;
        }
      }
    });
  }
  ~ServerThread() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int received() const { return received_; }
  RpcServer& server() { return *server_; }

 private:
  std::unique_ptr<RpcServer> server_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> received_{0};
  std::thread thread_;
};

TEST(ZmqRpcTest, BindsLoopbackAndReportsTheChosenPort) {
  auto server = RpcServer::Bind();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string ep = (*server)->endpoint();
  ASSERT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  const int port = std::stoi(ep.substr(std::string("tcp://127.0.0.1:").size()));
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
}

TEST(ZmqRpcTest, BindingATakenEndpointNamesIt) {
  auto first = RpcServer::Bind();
  ASSERT_TRUE(first.ok());
  auto second = RpcServer::Bind((*first)->endpoint());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find((*first)->endpoint()), std::string::npos) << second.status();
}

TEST(ZmqRpcTest, MultipartFramesRoundTripUnchanged) {
  // The server echoes the frames in reverse order plus a count frame.
  ServerThread server([](const RpcRequest& r) {
    Frames out(r.frames.rbegin(), r.frames.rend());
    out.push_back(std::to_string(r.frames.size()));
    return std::optional<Frames>(out);
  });
  auto client = RpcClient::Connect(server.endpoint());
  ASSERT_TRUE(client.ok());
  const std::string binary("\0\x01\xff\0", 4);
  const std::string big(1 << 20, 'x');
  auto reply = (*client)->Call({"a", "", binary, big}, Millis(5000));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, (Frames{big, binary, "", "a", "4"}));
  // Zero payload frames are allowed too.
  auto empty = (*client)->Call({}, Millis(5000));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, (Frames{"0"}));
  EXPECT_EQ((*client)->outstanding(), 0u);
}

TEST(ZmqRpcTest, SilentPeerHitsTheDeadlineAndIsNamed) {
  ServerThread server([](const RpcRequest&) { return std::optional<Frames>(); });
  auto client = RpcClient::Connect(server.endpoint(), "reward-3");
  ASSERT_TRUE(client.ok());
  const auto start = Clock::now();
  auto reply = (*client)->Call({"ping"}, Millis(200));
  const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - start);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(reply.status().message().find("reward-3 at " + server.endpoint()), std::string::npos)
      << reply.status();
  EXPECT_NE(reply.status().message().find("request 1"), std::string::npos) << reply.status();
  EXPECT_GE(waited.count(), 195);  // it really waited for the deadline
  EXPECT_EQ((*client)->outstanding(), 0u);  // abandoned
}

TEST(ZmqRpcTest, NoServerListeningIsADeadlineNamingTheEndpoint) {
  // Find a free port, then close the server so nothing listens there.
  std::string endpoint;
  {
    auto s = RpcServer::Bind();
    ASSERT_TRUE(s.ok());
    endpoint = (*s)->endpoint();
  }
  auto client = RpcClient::Connect(endpoint);
  ASSERT_TRUE(client.ok());
  auto reply = (*client)->Call({"x"}, Millis(150));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(reply.status().message().find(endpoint), std::string::npos) << reply.status();
}

TEST(ZmqRpcTest, LateReplyToAnAbandonedRequestIsDiscarded) {
  // The first request is answered after 300 ms, long after the client gave up on it.
  ServerThread server([](const RpcRequest& r) {
    if (r.frames[0] == "slow") std::this_thread::sleep_for(Millis(300));
    return std::optional<Frames>(Frames{"reply-to-" + r.frames[0]});
  });
  auto client = RpcClient::Connect(server.endpoint());
  ASSERT_TRUE(client.ok());
  auto slow = (*client)->Call({"slow"}, Millis(50));
  ASSERT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded);
  auto fast = (*client)->Call({"fast"}, Millis(5000));
  ASSERT_TRUE(fast.ok()) << fast.status();
  EXPECT_EQ(*fast, (Frames{"reply-to-fast"}));  // not the stale "reply-to-slow"
  EXPECT_EQ((*client)->discarded_replies(), 1);
}

TEST(ZmqRpcTest, EarlyReplyForAnotherOutstandingRequestIsKept) {
  // A server that answers each request with its own payload, but only after both arrived, in
  // reverse order.
  auto server = RpcServer::Bind();
  ASSERT_TRUE(server.ok());
  auto client = RpcClient::Connect((*server)->endpoint());
  ASSERT_TRUE(client.ok());
  auto id1 = (*client)->Send({"one"});
  auto id2 = (*client)->Send({"two"});
  ASSERT_TRUE(id1.ok() && id2.ok());
  auto a = (*server)->Receive(Millis(5000));
  auto b = (*server)->Receive(Millis(5000));
  ASSERT_TRUE(a.ok() && a->has_value() && b.ok() && b->has_value());
  EXPECT_EQ((**a).frames[0], "one");
  ASSERT_TRUE((*server)->Reply(**b, {"reply-two"}).ok());
  ASSERT_TRUE((*server)->Reply(**a, {"reply-one"}).ok());
  auto r1 = (*client)->Await(*id1, Clock::now() + Millis(5000));  // "reply-two" arrives first
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(*r1, (Frames{"reply-one"}));
  auto r2 = (*client)->Await(*id2, Clock::now() + Millis(1));  // already buffered
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(*r2, (Frames{"reply-two"}));
  EXPECT_EQ((*client)->discarded_replies(), 0);
  auto again = (*client)->Await(*id2, Clock::now() + Millis(1));
  EXPECT_EQ(again.status().code(), StatusCode::kNotFound);
}

TEST(ZmqRpcTest, MalformedEnvelopeIsDroppedByTheServer) {
  auto server = RpcServer::Bind();
  ASSERT_TRUE(server.ok());
  zmq::context_t ctx;
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect((*server)->endpoint());
  raw.send(zmq::buffer(std::string("no-request-id")), zmq::send_flags::none);
  auto got = (*server)->Receive(Millis(300));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ((*server)->dropped_messages(), 1);
}

// ---- typed channels --------------------------------------------------------------------------

// A typed worker: answers RewardBatch with one result per request; Shutdown with an ErrorReply;
// anything else with an Ack.
std::optional<Message> RewardHandler(const Message& m) {
  if (auto* batch = std::get_if<protocol::RewardBatch>(&m)) {
    protocol::RewardResultBatch out;
    out.batch_id = batch->batch_id;
    for (const auto& r : batch->requests) {
      out.results.push_back(RewardResult::Scored(r.sample_id, r.response_text == "42" ? 1.0 : 0.0,
                                                 r.response_text == "42" ? Verdict::kCorrect : Verdict::kWrong));
    }
    return Message(out);
  }
  if (std::holds_alternative<protocol::Shutdown>(m)) {
    return Message(protocol::ErrorReply::FromStatus(0, FailedPrecondition("busy")));
  }
  return Message(protocol::Ack{7});
}

ServerThread::Handle TypedServer(std::function<std::optional<Message>(const Message&)> handler) {
  return [handler](const RpcRequest& r) -> std::optional<Frames> {
    auto m = DecodeRequest(r);
    if (!m.ok()) return Frames{protocol::EncodeMessage(protocol::ErrorReply::FromStatus(r.request_id, m.status()))};
    auto reply = handler(*m);
    if (!reply) return std::nullopt;
    return Frames{protocol::Encode(*reply)};
  };
}

protocol::RewardBatch MakeBatch(uint64_t id) {
  protocol::RewardBatch b;
  b.batch_id = id;
  for (uint64_t i = 0; i < 3; ++i) {
    protocol::RewardRequest r;
    r.sample_id = 10 * id + i;
    r.response_text = i == 1 ? "42" : "7";
    b.requests.push_back(r);
  }
  return b;
}

void CheckChannelContract(MessageChannel& ch) {
  auto res = ch.CallAs<protocol::RewardResultBatch>(MakeBatch(2), Millis(5000));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->batch_id, 2u);
  ASSERT_EQ(res->results.size(), 3u);
  EXPECT_EQ(res->results[1].sample_id, 21u);
  EXPECT_EQ(res->results[1].score().value, 1.0);
  EXPECT_EQ(res->results[0].score().verdict, Verdict::kWrong);

  // ErrorReply becomes the peer's Status, prefixed with the peer's name.
  auto err = ch.CallAs<protocol::Ack>(protocol::Shutdown{"now"}, Millis(5000));
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(err.status().message().find(ch.peer() + ": busy"), std::string::npos) << err.status();

  // A reply of another type is rejected naming both types.
  auto wrong = ch.CallAs<protocol::RewardResultBatch>(protocol::Heartbeat{}, Millis(5000));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("expected a RewardResultBatch reply, got Ack"),
            std::string::npos) << wrong.status();
}

TEST(ChannelTest, ZmqAndInProcessChannelsBehaveTheSame) {
  ServerThread server(TypedServer(RewardHandler));
  auto zmq_channel = ZmqChannel::Connect(server.endpoint(), "reward-0");
  ASSERT_TRUE(zmq_channel.ok());
  CheckChannelContract(**zmq_channel);
  InProcessChannel local("reward-local", RewardHandler);
  CheckChannelContract(local);
}

TEST(ChannelTest, ServerRejectsAFrameOfAnotherProtocolVersion) {
  ServerThread server(TypedServer(RewardHandler));
  auto client = RpcClient::Connect(server.endpoint());
  ASSERT_TRUE(client.ok());
  std::string frame = protocol::EncodeMessage(protocol::Ack{1});
  frame[4] = static_cast<char>(protocol::kProtocolVersion + 3);
  auto reply = (*client)->Call({frame}, Millis(5000));
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto decoded = protocol::DecodeAs<protocol::Ack>((*reply)[0]);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(decoded.status().message().find("protocol version"), std::string::npos) << decoded.status();
}

TEST(ChannelTest, InProcessChannelModelsSilenceAndCrashes) {
  InProcessChannel silent("rollout-1", [](const Message&) { return std::optional<Message>(); });
  auto r = silent.Call(protocol::Ack{}, Millis(10000));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("rollout-1"), std::string::npos) << r.status();

  InProcessChannel crashing("rollout-2", [](const Message&) -> std::optional<Message> {
    throw std::runtime_error("engine OOM");
  });
  auto c = crashing.CallAs<protocol::Ack>(protocol::Ack{}, Millis(1000));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInternal);
  EXPECT_NE(c.status().message().find("engine OOM"), std::string::npos) << c.status();
}

TEST(ChannelTest, CallAllMasksOnlyTheSilentPeerWithinOneDeadline) {
  ServerThread good(TypedServer(RewardHandler));
  ServerThread dead(TypedServer([](const Message&) { return std::optional<Message>(); }));
  auto a = ZmqChannel::Connect(good.endpoint(), "reward-0");
  auto b = ZmqChannel::Connect(dead.endpoint(), "reward-1");
  ASSERT_TRUE(a.ok() && b.ok());
  InProcessChannel c("reward-2", RewardHandler);
  const auto start = Clock::now();
  auto replies = CallAll({b->get(), a->get(), &c}, {MakeBatch(1), MakeBatch(2), MakeBatch(3)}, Millis(300));
  const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - start).count();
  ASSERT_EQ(replies.size(), 3u);
  ASSERT_FALSE(replies[0].ok());
  EXPECT_EQ(replies[0].status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(replies[0].status().message().find("reward-1 at " + dead.endpoint()), std::string::npos)
      << replies[0].status();
  ASSERT_TRUE(replies[1].ok()) << replies[1].status();
  EXPECT_EQ(std::get<protocol::RewardResultBatch>(*replies[1]).batch_id, 2u);
  ASSERT_TRUE(replies[2].ok()) << replies[2].status();
  EXPECT_EQ(std::get<protocol::RewardResultBatch>(*replies[2]).batch_id, 3u);
  // One common deadline: the silent peer cost ~300 ms once, not per peer.
  EXPECT_GE(waited, 295);
  EXPECT_LT(waited, 3000);
  EXPECT_EQ(dead.received(), 1);
}

}  // namespace
}  // namespace lightrl::comm
