// Tests for core/protocol/codec: every message type round-trips field by field, and malformed
// frames (bad magic, wrong version, truncated, trailing bytes, unknown type, bad payload) are
// rejected with an error that names the problem.
#include "core/protocol/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

namespace lightrl::protocol {
namespace {

using nlohmann::json;

// Builds a frame by hand (independent of the codec's encoder) from a header and a JSON payload.
std::string HandFrame(uint16_t type, const json& payload, uint16_t version = kProtocolVersion) {
  const std::vector<uint8_t> body = json::to_msgpack(payload);
  std::string out;
  const char magic[4] = {'L', 'R', 'M', '1'};
  out.append(magic, 4);
  out.push_back(static_cast<char>(version & 0xff));
  out.push_back(static_cast<char>(version >> 8));
  out.push_back(static_cast<char>(type & 0xff));
  out.push_back(static_cast<char>(type >> 8));
  uint64_t n = body.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out.append(reinterpret_cast<const char*>(body.data()), body.size());
  return out;
}

json BinI32(const std::vector<int32_t>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return json::binary(b);
}
json BinF32(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return json::binary(b);
}

// A valid Trajectory payload written by hand; tests mutate it.
json TrajectoryPayload() {
  return {{"sample_id", 7},
          {"prompt_id", 3},
          {"group_id", 2},
          {"sample_index", 1},
          {"weights_version", 5},
          {"token_ids", BinI32({10, 11, 12})},
          {"logprobs", BinF32({-0.5f, -1.0f, -2.0f})},
          {"finish_reason", 1},
          {"text", "abc"},
          {"timings", {{"queue_s", 0.0}, {"prefill_s", 0.1}, {"decode_s", 0.2}}}};
}

template <typename T>
T RoundTrip(const T& in) {
  const std::string bytes = EncodeMessage(in);
  auto out = DecodeAs<T>(bytes);
  EXPECT_TRUE(out.ok()) << out.status();
  // Decode through the variant too: the same alternative must come back.
  auto any = Decode(bytes);
  EXPECT_TRUE(any.ok()) << any.status();
  if (any.ok()) EXPECT_TRUE(std::holds_alternative<T>(*any));
  return out.ok() ? *out : T{};
}

Trajectory SampleTrajectory(uint64_t id) {
  Trajectory t;
  t.sample_id = id;
  t.prompt_id = 1000 + id;
  t.group_id = id / 4;
  t.sample_index = static_cast<int32_t>(id % 4);
  t.weights_version = 42;
  t.token_ids = {1, 200063, -1, 0, 7};
  t.logprobs = {-0.0f, -1.5f, -std::numeric_limits<float>::infinity(), -1e-30f, -7.25f};
  t.finish_reason = FinishReason::kRepetition;
  t.text = "héllo\nworld";  // UTF-8 survives
  t.timings = {0.25, 1.5, 3.75};
  return t;
}

void ExpectSame(const Trajectory& a, const Trajectory& b) {
  EXPECT_EQ(a.sample_id, b.sample_id);
  EXPECT_EQ(a.prompt_id, b.prompt_id);
  EXPECT_EQ(a.group_id, b.group_id);
  EXPECT_EQ(a.sample_index, b.sample_index);
  EXPECT_EQ(a.weights_version, b.weights_version);
  EXPECT_EQ(a.token_ids, b.token_ids);
  ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
  // Bit-exact float transport (including -0 and -inf).
  EXPECT_EQ(0, std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * 4));
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.timings.queue_s, b.timings.queue_s);
  EXPECT_EQ(a.timings.prefill_s, b.timings.prefill_s);
  EXPECT_EQ(a.timings.decode_s, b.timings.decode_s);
}

TEST(CodecTest, HeaderLayoutIsMagicVersionTypeLength) {
  Shutdown s{"bye"};
  const std::string bytes = EncodeMessage(s);
  ASSERT_GE(bytes.size(), kFrameHeaderSize);
  EXPECT_EQ(bytes.substr(0, 4), "LRM1");
  EXPECT_EQ(static_cast<uint8_t>(bytes[4]) | (static_cast<uint8_t>(bytes[5]) << 8), kProtocolVersion);
  EXPECT_EQ(static_cast<uint8_t>(bytes[6]), static_cast<uint8_t>(MessageType::kShutdown));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
  EXPECT_EQ(n, bytes.size() - kFrameHeaderSize);
  // The payload is plain MessagePack readable by any msgpack library.
  json j = json::from_msgpack(bytes.substr(kFrameHeaderSize));
  EXPECT_EQ(j["reason"], "bye");
}

TEST(CodecTest, RolloutRequestRoundTrip) {
  RolloutRequest r;
  r.request_id = 0xFFFFFFFFFFFFFFFFull;  // full uint64 range
  r.samples_per_prompt = 16;
  r.seed = 123456789012345ull;
  r.min_weights_version = 9;
  r.sampling.temperature = 0.7f;
  r.sampling.top_p = 0.95f;
  r.sampling.top_k = 50;
  r.sampling.max_new_tokens = 40960;
  r.sampling.stop_token_ids = {200020, 200021};
  r.sampling.early_truncation_window = 3000;
  r.sampling.early_truncation_prob = 0.99f;
  for (int i = 0; i < 3; ++i) {
    PromptSpec p;
    p.prompt_id = 100 + i;
    p.group_id = 10 + i;
    p.first_sample_id = 16 * i;
    p.task_id = "countdown/" + std::to_string(i);
    for (int k = 0; k <= i * 5; ++k) p.token_ids.push_back(k * 1000 + i);
    r.prompts.push_back(p);
  }
  r.prompts.push_back(PromptSpec{});  // empty prompt tokens survive too
  const RolloutRequest o = RoundTrip(r);
  EXPECT_EQ(o.request_id, r.request_id);
  EXPECT_EQ(o.samples_per_prompt, 16);
  EXPECT_EQ(o.seed, r.seed);
  EXPECT_EQ(o.min_weights_version, 9u);
  EXPECT_EQ(o.sampling.temperature, 0.7f);
  EXPECT_EQ(o.sampling.top_p, 0.95f);
  EXPECT_EQ(o.sampling.top_k, 50);
  EXPECT_EQ(o.sampling.max_new_tokens, 40960);
  EXPECT_EQ(o.sampling.stop_token_ids, r.sampling.stop_token_ids);
  EXPECT_EQ(o.sampling.early_truncation_window, 3000);
  EXPECT_EQ(o.sampling.early_truncation_prob, 0.99f);
  ASSERT_EQ(o.prompts.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(o.prompts[i].prompt_id, r.prompts[i].prompt_id);
    EXPECT_EQ(o.prompts[i].group_id, r.prompts[i].group_id);
    EXPECT_EQ(o.prompts[i].first_sample_id, r.prompts[i].first_sample_id);
    EXPECT_EQ(o.prompts[i].task_id, r.prompts[i].task_id);
    EXPECT_EQ(o.prompts[i].token_ids, r.prompts[i].token_ids);
  }
}

TEST(CodecTest, TrajectoryRoundTripIsBitExact) {
  const Trajectory t = SampleTrajectory(9);
  ExpectSame(RoundTrip(t), t);
}

TEST(CodecTest, RolloutResultRoundTrip) {
  RolloutResult r;
  r.request_id = 77;
  r.worker_rank = 2;
  for (uint64_t i = 0; i < 5; ++i) r.trajectories.push_back(SampleTrajectory(i));
  r.trajectories.push_back(Trajectory{});  // an empty response
  const RolloutResult o = RoundTrip(r);
  EXPECT_EQ(o.request_id, 77u);
  EXPECT_EQ(o.worker_rank, 2);
  ASSERT_EQ(o.trajectories.size(), r.trajectories.size());
  for (size_t i = 0; i < r.trajectories.size(); ++i) ExpectSame(o.trajectories[i], r.trajectories[i]);
}

RewardRequest SampleRewardRequest(uint64_t id) {
  RewardRequest r;
  r.sample_id = id;
  r.task_id = "gsm8k";
  r.verifier = "math";
  r.reference_json = R"({"answer": "42"})";
  r.prompt_text = "What is 6*7?";
  r.response_text = std::string("The answer is \\boxed{42}\0tail", 30);  // embedded NUL
  r.finish_reason = FinishReason::kLength;
  r.response_tokens = 512;
  return r;
}

void ExpectSame(const RewardRequest& a, const RewardRequest& b) {
  EXPECT_EQ(a.sample_id, b.sample_id);
  EXPECT_EQ(a.task_id, b.task_id);
  EXPECT_EQ(a.verifier, b.verifier);
  EXPECT_EQ(a.reference_json, b.reference_json);
  EXPECT_EQ(a.prompt_text, b.prompt_text);
  EXPECT_EQ(a.response_text, b.response_text);
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.response_tokens, b.response_tokens);
}

TEST(CodecTest, RewardRequestAndBatchRoundTrip) {
  const RewardRequest r = SampleRewardRequest(5);
  ExpectSame(RoundTrip(r), r);
  EXPECT_EQ(RoundTrip(r).response_text.size(), 30u);

  RewardBatch b;
  b.batch_id = 3;
  b.deadline_s = 12.5;
  for (uint64_t i = 0; i < 4; ++i) b.requests.push_back(SampleRewardRequest(i));
  const RewardBatch o = RoundTrip(b);
  EXPECT_EQ(o.batch_id, 3u);
  EXPECT_EQ(o.deadline_s, 12.5);
  ASSERT_EQ(o.requests.size(), 4u);
  for (size_t i = 0; i < 4; ++i) ExpectSame(o.requests[i], b.requests[i]);
}

TEST(CodecTest, RewardResultScoreAndErrorRoundTrip) {
  const RewardResult scored = RewardResult::Scored(11, -1.0, Verdict::kTimeLimit, R"({"tests": [1,0]})");
  const RewardResult o1 = RoundTrip(scored);
  EXPECT_EQ(o1.sample_id, 11u);
  ASSERT_TRUE(o1.ok());
  EXPECT_EQ(o1.score().value, -1.0);
  EXPECT_EQ(o1.score().verdict, Verdict::kTimeLimit);
  EXPECT_EQ(o1.score().detail_json, R"({"tests": [1,0]})");

  const RewardResult failed = RewardResult::Failed(12, RewardErrorKind::kSandboxError, "bwrap: EPERM");
  const RewardResult o2 = RoundTrip(failed);
  EXPECT_EQ(o2.sample_id, 12u);
  ASSERT_FALSE(o2.ok());  // an infrastructure error stays an error, never a score
  EXPECT_EQ(o2.error().kind, RewardErrorKind::kSandboxError);
  EXPECT_EQ(o2.error().message, "bwrap: EPERM");

  RewardResultBatch b;
  b.batch_id = 8;
  b.results = {scored, failed, RewardResult::Scored(13, 0.5, Verdict::kPartial)};
  const RewardResultBatch ob = RoundTrip(b);
  EXPECT_EQ(ob.batch_id, 8u);
  ASSERT_EQ(ob.results.size(), 3u);
  EXPECT_EQ(ob.results[0].sample_id, 11u);
  EXPECT_FALSE(ob.results[1].ok());
  EXPECT_EQ(ob.results[2].score().verdict, Verdict::kPartial);
  EXPECT_EQ(ob.results[2].score().value, 0.5);
}

TEST(CodecTest, ControlMessagesRoundTrip) {
  WeightsAnnounce w;
  w.manifest.version = 17;
  w.manifest.tensors = {{"embed.weight", DType::kBFloat16, {200064, 6144}},
                        {"scale", DType::kFloat32, {}},
                        {"empty", DType::kInt64, {0, 3}}};
  w.transport = "mpi";
  const WeightsAnnounce ow = RoundTrip(w);
  EXPECT_EQ(ow.manifest.version, 17u);
  ASSERT_EQ(ow.manifest.tensors.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(ow.manifest.tensors[i], w.manifest.tensors[i]) << i;
  EXPECT_EQ(ow.transport, "mpi");
  EXPECT_EQ(ow.manifest.total_bytes(), 200064LL * 6144 * 2 + 4);

  Heartbeat h{"rollout", 3, 99, 1700000000123, 16};
  const Heartbeat oh = RoundTrip(h);
  EXPECT_EQ(oh.role, "rollout");
  EXPECT_EQ(oh.rank, 3);
  EXPECT_EQ(oh.sequence, 99u);
  EXPECT_EQ(oh.unix_time_ms, 1700000000123);
  EXPECT_EQ(oh.weights_version, 16u);

  EXPECT_EQ(RoundTrip(Shutdown{"SIGTERM"}).reason, "SIGTERM");
  EXPECT_EQ(RoundTrip(Ack{55}).request_id, 55u);

  const ErrorReply e = ErrorReply::FromStatus(4, DeadlineExceeded("verifier hung"));
  const ErrorReply oe = RoundTrip(e);
  EXPECT_EQ(oe.request_id, 4u);
  EXPECT_EQ(oe.code, StatusCode::kDeadlineExceeded);
  EXPECT_EQ(oe.message, "verifier hung");
}

TEST(CodecTest, EncodeOfVariantMatchesTypedEncode) {
  const Trajectory t = SampleTrajectory(3);
  EXPECT_EQ(Encode(Message(t)), EncodeMessage(t));
  EXPECT_EQ(TypeOf(Message(t)), MessageType::kTrajectory);
  EXPECT_EQ(TypeOf(Message(Ack{})), MessageType::kAck);
}

// ---- rejection -------------------------------------------------------------------------------

TEST(CodecTest, WrongProtocolVersionIsRejectedNamingBothVersions) {
  std::string bytes = EncodeMessage(Ack{1});
  bytes[4] = static_cast<char>(kProtocolVersion + 1);
  auto r = Decode(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("protocol version"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("version " + std::to_string(kProtocolVersion + 1)),
            std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("speaks version " + std::to_string(kProtocolVersion)),
            std::string::npos) << r.status();
  // A hand-built frame of an older version is rejected the same way.
  auto old = Decode(HandFrame(11, {{"request_id", 1}}, 0));
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), StatusCode::kFailedPrecondition);
}

TEST(CodecTest, TruncatedFramesAreRejectedAtEveryLength) {
  const std::string bytes = EncodeMessage(SampleTrajectory(1));
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = Decode(std::string_view(bytes).substr(0, n));
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status();
    EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status();
  }
  auto partial = Decode(std::string_view(bytes).substr(0, bytes.size() - 1));
  EXPECT_NE(partial.status().message().find("Trajectory"), std::string::npos) << partial.status();
}

TEST(CodecTest, TrailingBytesAreRejected) {
  auto r = Decode(EncodeMessage(Ack{1}) + "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("trailing"), std::string::npos) << r.status();
}

TEST(CodecTest, UnknownMessageTypeIsRejectedNamingTheNumber) {
  for (uint16_t type : {0, 13, 999}) {
    auto r = Decode(HandFrame(type, {{"request_id", 1}}));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("unknown message type " + std::to_string(type)),
              std::string::npos) << r.status();
  }
}

TEST(CodecTest, BadMagicIsRejected) {
  std::string bytes = EncodeMessage(Ack{1});
  bytes[0] = 'X';
  auto r = Decode(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("magic"), std::string::npos) << r.status();
}

TEST(CodecTest, HandBuiltFrameDecodes) {
  // The encoder is not the only producer: a frame assembled independently decodes.
  auto r = DecodeAs<Trajectory>(HandFrame(3, TrajectoryPayload()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sample_id, 7u);
  EXPECT_EQ(r->token_ids, (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(r->logprobs, (std::vector<float>{-0.5f, -1.0f, -2.0f}));
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
}

Status DecodeTrajectoryError(const json& payload) {
  auto r = DecodeAs<Trajectory>(HandFrame(3, payload));
  return r.ok() ? Status::Ok() : r.status();
}

TEST(CodecTest, MalformedPayloadNamesTheField) {
  json p = TrajectoryPayload();
  p.erase("weights_version");
  Status s = DecodeTrajectoryError(p);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Trajectory.weights_version: missing field"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["text"] = 5;
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.text: expected a string"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["logprobs"] = BinF32({-1.0f, -2.0f});
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.logprobs: expected 3 values"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["token_ids"] = json::binary(std::vector<uint8_t>{1, 2, 3, 4, 5});
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.token_ids: binary array of 5 bytes"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["finish_reason"] = 42;
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.finish_reason: unknown finish reason 42"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["sample_index"] = -5LL * 1000 * 1000 * 1000 * 1000;
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.sample_index: integer"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["timings"].erase("decode_s");
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.timings.decode_s: missing field"), std::string::npos) << s;

  p = TrajectoryPayload();
  p["new_field"] = 1;
  s = DecodeTrajectoryError(p);
  EXPECT_NE(s.message().find("Trajectory.new_field: unknown field"), std::string::npos) << s;
}

TEST(CodecTest, NestedListErrorsCarryTheIndex) {
  RolloutResult r;
  r.trajectories = {SampleTrajectory(0), SampleTrajectory(1)};
  json p = json::from_msgpack(EncodeMessage(r).substr(kFrameHeaderSize));
  p["trajectories"][1]["token_ids"] = "oops";
  auto d = DecodeAs<RolloutResult>(HandFrame(2, p));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("RolloutResult.trajectories[1].token_ids"), std::string::npos)
      << d.status();

  json q = json::from_msgpack(EncodeMessage(RewardResult::Scored(1, 1, Verdict::kCorrect))
                                  .substr(kFrameHeaderSize));
  q["error"] = {{"kind", 0}, {"message", "x"}};
  auto e = DecodeAs<RewardResult>(HandFrame(6, q));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("both \"score\" and \"error\""), std::string::npos) << e.status();
}

TEST(CodecTest, GarbagePayloadIsDataLossNamingTheType) {
  std::string bytes = EncodeMessage(Shutdown{"x"});
  // Keep the header, replace the payload with bytes that are not MessagePack of a map.
  std::string garbage = bytes.substr(0, kFrameHeaderSize);
  garbage.replace(8, 8, std::string("\x02\0\0\0\0\0\0\0", 8));
  garbage += std::string("\xc1\xc1", 2);  // 0xc1 is never used in MessagePack
  auto r = Decode(garbage);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("Shutdown payload: malformed MessagePack"), std::string::npos)
      << r.status();
}

TEST(CodecTest, DecodeAsRejectsAnotherTypeAndSurfacesErrorReplies) {
  auto wrong = DecodeAs<RolloutResult>(EncodeMessage(Ack{1}));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("expected a RolloutResult message, got Ack"),
            std::string::npos) << wrong.status();

  auto remote = DecodeAs<RewardResultBatch>(
      EncodeMessage(ErrorReply::FromStatus(3, Unavailable("sandbox pool exhausted"))));
  ASSERT_FALSE(remote.ok());
  EXPECT_EQ(remote.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(remote.status().message(), "sandbox pool exhausted");
}

TEST(CodecTest, SampleSeedsAreDistinctAndStable) {
  std::set<uint64_t> seen;
  for (uint64_t id = 0; id < 10000; ++id) seen.insert(SampleSeed(1, id));
  EXPECT_EQ(seen.size(), 10000u);
  EXPECT_EQ(SampleSeed(1, 5), SampleSeed(1, 5));
  EXPECT_NE(SampleSeed(1, 5), SampleSeed(2, 5));
}

}  // namespace
}  // namespace lightrl::protocol
