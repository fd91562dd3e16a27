// Wire format of lightrl messages (see codec.h for the frame layout). The payload is one
// MessagePack map per message, produced with nlohmann::json; numeric arrays travel as `bin`
// blobs of little-endian elements.
#include "core/protocol/codec.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "core/check.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lightrl's wire format copies little-endian memory; big-endian hosts are not supported"
#endif

namespace lightrl::protocol {

using nlohmann::json;

namespace {

// ---- encoding helpers ------------------------------------------------------------------------

template <typename T>
json Blob(const std::vector<T>& values) {
  static_assert(std::is_arithmetic_v<T>);
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return json::binary(std::move(bytes));
}

json ToJson(const SamplingParams& p) {
  return {{"temperature", p.temperature},
          {"top_p", p.top_p},
          {"top_k", p.top_k},
          {"max_new_tokens", p.max_new_tokens},
          {"stop_token_ids", Blob(p.stop_token_ids)},
          {"early_truncation_window", p.early_truncation_window},
          {"early_truncation_prob", p.early_truncation_prob}};
}

json ToJson(const PromptSpec& p) {
  return {{"prompt_id", p.prompt_id},
          {"group_id", p.group_id},
          {"first_sample_id", p.first_sample_id},
          {"task_id", p.task_id},
          {"token_ids", Blob(p.token_ids)}};
}

json ToJson(const RolloutRequest& m) {
  json prompts = json::array();
  for (const PromptSpec& p : m.prompts) prompts.push_back(ToJson(p));
  return {{"request_id", m.request_id},
          {"prompts", std::move(prompts)},
          {"samples_per_prompt", m.samples_per_prompt},
          {"sampling", ToJson(m.sampling)},
          {"seed", m.seed},
          {"min_weights_version", m.min_weights_version}};
}

json ToJson(const Trajectory& m) {
  return {{"sample_id", m.sample_id},
          {"prompt_id", m.prompt_id},
          {"group_id", m.group_id},
          {"sample_index", m.sample_index},
          {"weights_version", m.weights_version},
          {"token_ids", Blob(m.token_ids)},
          {"logprobs", Blob(m.logprobs)},
          {"finish_reason", static_cast<uint8_t>(m.finish_reason)},
          {"text", m.text},
          {"timings",
           {{"queue_s", m.timings.queue_s},
            {"prefill_s", m.timings.prefill_s},
            {"decode_s", m.timings.decode_s}}}};
}

json ToJson(const RolloutResult& m) {
  json trajectories = json::array();
  for (const Trajectory& t : m.trajectories) trajectories.push_back(ToJson(t));
  return {{"request_id", m.request_id},
          {"worker_rank", m.worker_rank},
          {"trajectories", std::move(trajectories)}};
}

json ToJson(const RewardRequest& m) {
  return {{"sample_id", m.sample_id},
          {"task_id", m.task_id},
          {"verifier", m.verifier},
          {"reference_json", m.reference_json},
          {"prompt_text", m.prompt_text},
          {"response_text", m.response_text},
          {"finish_reason", static_cast<uint8_t>(m.finish_reason)},
          {"response_tokens", m.response_tokens}};
}

json ToJson(const RewardBatch& m) {
  json requests = json::array();
  for (const RewardRequest& r : m.requests) requests.push_back(ToJson(r));
  return {{"batch_id", m.batch_id}, {"deadline_s", m.deadline_s}, {"requests", std::move(requests)}};
}

json ToJson(const RewardResult& m) {
  json j = {{"sample_id", m.sample_id}};
  if (m.ok()) {
    const Score& s = m.score();
    j["score"] = {{"value", s.value},
                  {"verdict", static_cast<uint8_t>(s.verdict)},
                  {"detail_json", s.detail_json}};
  } else {
    const RewardError& e = m.error();
    j["error"] = {{"kind", static_cast<uint8_t>(e.kind)}, {"message", e.message}};
  }
  return j;
}

json ToJson(const RewardResultBatch& m) {
  json results = json::array();
  for (const RewardResult& r : m.results) results.push_back(ToJson(r));
  return {{"batch_id", m.batch_id}, {"results", std::move(results)}};
}

json ToJson(const TensorSpec& t) {
  return {{"name", t.name}, {"dtype", static_cast<uint8_t>(t.dtype)}, {"shape", Blob(t.shape)}};
}

json ToJson(const WeightsAnnounce& m) {
  json tensors = json::array();
  for (const TensorSpec& t : m.manifest.tensors) tensors.push_back(ToJson(t));
  return {{"version", m.manifest.version}, {"tensors", std::move(tensors)}, {"transport", m.transport}};
}

json ToJson(const Heartbeat& m) {
  return {{"role", m.role},
          {"rank", m.rank},
          {"sequence", m.sequence},
          {"unix_time_ms", m.unix_time_ms},
          {"weights_version", m.weights_version}};
}

json ToJson(const Shutdown& m) { return {{"reason", m.reason}}; }
json ToJson(const Ack& m) { return {{"request_id", m.request_id}}; }
json ToJson(const ErrorReply& m) {
  return {{"request_id", m.request_id},
          {"code", static_cast<int>(m.code)},
          {"message", m.message}};
}

void PutLE(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// ---- decoding helpers ------------------------------------------------------------------------

// Reads the fields of one JSON object, remembering the first error (with its field path) and
// which keys were read, so that Finish() can reject unknown fields.
class Fields {
 public:
  Fields(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) Fail(path_, std::string("expected a map, got ") + j_.type_name());
  }

  bool ok() const { return status_.ok(); }
  const std::string& path() const { return path_; }

  // Records the first error only (later errors are usually consequences of the first).
  void Fail(const std::string& where, const std::string& what) {
    if (status_.ok()) status_ = InvalidArgument(where + ": " + what);
  }
  void Merge(const Status& s) {
    if (status_.ok() && !s.ok()) status_ = s;
  }

  const json* Find(const char* key) {
    if (!j_.is_object()) return nullptr;
    used_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end()) {
      Fail(Path(key), "missing field");
      return nullptr;
    }
    return &*it;
  }

  std::string Path(const char* key) const { return path_ + "." + key; }

  // Presence probe for optional / alternative fields (does not mark the key used).
  bool Has(const char* key) const { return j_.is_object() && j_.contains(key); }

  template <typename T>
  void Int(const char* key, T* out) {
    static_assert(std::is_integral_v<T>);
    const json* v = Find(key);
    if (!v) return;
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        *out = static_cast<T>(u);
        return;
      }
    } else if (v->is_number_integer()) {
      const int64_t s = v->get<int64_t>();
      if (std::is_signed_v<T> && s >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
          s <= static_cast<int64_t>(std::numeric_limits<T>::max())) {
        *out = static_cast<T>(s);
        return;
      }
    } else {
      Fail(Path(key), std::string("expected an integer, got ") + v->type_name());
      return;
    }
    Fail(Path(key), "integer " + v->dump() + " out of range");
  }

  template <typename T>
  void Float(const char* key, T* out) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_number()) {
      Fail(Path(key), std::string("expected a number, got ") + v->type_name());
      return;
    }
    *out = static_cast<T>(v->get<double>());
  }

  void Bool(const char* key, bool* out) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_boolean()) return Fail(Path(key), std::string("expected a bool, got ") + v->type_name());
    *out = v->get<bool>();
  }

  void String(const char* key, std::string* out) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_string()) return Fail(Path(key), std::string("expected a string, got ") + v->type_name());
    *out = v->get<std::string>();
  }

  template <typename T>
  void Array(const char* key, std::vector<T>* out) {
    static_assert(std::is_arithmetic_v<T>);
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_binary()) {
      return Fail(Path(key), std::string("expected a binary array of ") + std::to_string(sizeof(T)) +
                                 "-byte elements, got " + v->type_name());
    }
    const auto& bin = v->get_binary();
    if (bin.size() % sizeof(T) != 0) {
      return Fail(Path(key), "binary array of " + std::to_string(bin.size()) +
                                 " bytes is not a multiple of the element size " +
                                 std::to_string(sizeof(T)));
    }
    out->resize(bin.size() / sizeof(T));
    if (!bin.empty()) std::memcpy(out->data(), bin.data(), bin.size());
  }

  // A list of maps; calls `parse(Fields&, T*)` on each element.
  template <typename T, typename Parse>
  void List(const char* key, std::vector<T>* out, Parse parse) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_array()) return Fail(Path(key), std::string("expected a list, got ") + v->type_name());
    out->clear();
    out->reserve(v->size());
    for (size_t i = 0; i < v->size() && ok(); ++i) {
      Fields child((*v)[i], Path(key) + "[" + std::to_string(i) + "]");
      T item;
      if (child.ok()) parse(child, &item);
      Merge(child.Finish());
      out->push_back(std::move(item));
    }
  }

  // A nested map.
  template <typename T, typename Parse>
  void Object(const char* key, T* out, Parse parse) {
    const json* v = Find(key);
    if (!v) return;
    Fields child(*v, Path(key));
    if (child.ok()) parse(child, out);
    Merge(child.Finish());
  }

  // First error, or an error for fields present on the wire that this build does not know
  // (same protocol version but a different build: refuse rather than silently drop data).
  Status Finish() const {
    if (!status_.ok()) return status_;
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!used_.count(it.key())) return InvalidArgument(path_ + "." + it.key() + ": unknown field");
    }
    return Status::Ok();
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> used_;
  Status status_;
};

void FinishReasonField(Fields& f, const char* key, FinishReason* out) {
  uint8_t raw = 0;
  f.Int(key, &raw);
  if (!f.ok()) return;
  if (raw > static_cast<uint8_t>(FinishReason::kAborted)) {
    f.Fail(f.Path(key), "unknown finish reason " + std::to_string(raw));
    return;
  }
  *out = static_cast<FinishReason>(raw);
}

void Parse(Fields& f, SamplingParams* p) {
  f.Float("temperature", &p->temperature);
  f.Float("top_p", &p->top_p);
  f.Int("top_k", &p->top_k);
  f.Int("max_new_tokens", &p->max_new_tokens);
  f.Array("stop_token_ids", &p->stop_token_ids);
  f.Int("early_truncation_window", &p->early_truncation_window);
  f.Float("early_truncation_prob", &p->early_truncation_prob);
}

void Parse(Fields& f, PromptSpec* p) {
  f.Int("prompt_id", &p->prompt_id);
  f.Int("group_id", &p->group_id);
  f.Int("first_sample_id", &p->first_sample_id);
  f.String("task_id", &p->task_id);
  f.Array("token_ids", &p->token_ids);
}

void Parse(Fields& f, RolloutRequest* m) {
  f.Int("request_id", &m->request_id);
  f.List("prompts", &m->prompts, [](Fields& c, PromptSpec* p) { Parse(c, p); });
  f.Int("samples_per_prompt", &m->samples_per_prompt);
  f.Object("sampling", &m->sampling, [](Fields& c, SamplingParams* p) { Parse(c, p); });
  f.Int("seed", &m->seed);
  f.Int("min_weights_version", &m->min_weights_version);
  if (f.ok() && m->samples_per_prompt < 1) {
    f.Fail(f.Path("samples_per_prompt"), "expected >= 1, got " + std::to_string(m->samples_per_prompt));
  }
}

void Parse(Fields& f, Trajectory* m) {
  f.Int("sample_id", &m->sample_id);
  f.Int("prompt_id", &m->prompt_id);
  f.Int("group_id", &m->group_id);
  f.Int("sample_index", &m->sample_index);
  f.Int("weights_version", &m->weights_version);
  f.Array("token_ids", &m->token_ids);
  f.Array("logprobs", &m->logprobs);
  FinishReasonField(f, "finish_reason", &m->finish_reason);
  f.String("text", &m->text);
  f.Object("timings", &m->timings, [](Fields& c, TrajectoryTimings* t) {
    c.Float("queue_s", &t->queue_s);
    c.Float("prefill_s", &t->prefill_s);
    c.Float("decode_s", &t->decode_s);
  });
  if (f.ok() && m->logprobs.size() != m->token_ids.size()) {
    f.Fail(f.Path("logprobs"), "expected " + std::to_string(m->token_ids.size()) +
                                   " values (one per token_ids entry), got " +
                                   std::to_string(m->logprobs.size()));
  }
}

void Parse(Fields& f, RolloutResult* m) {
  f.Int("request_id", &m->request_id);
  f.Int("worker_rank", &m->worker_rank);
  f.List("trajectories", &m->trajectories, [](Fields& c, Trajectory* t) { Parse(c, t); });
}

void Parse(Fields& f, RewardRequest* m) {
  f.Int("sample_id", &m->sample_id);
  f.String("task_id", &m->task_id);
  f.String("verifier", &m->verifier);
  f.String("reference_json", &m->reference_json);
  f.String("prompt_text", &m->prompt_text);
  f.String("response_text", &m->response_text);
  FinishReasonField(f, "finish_reason", &m->finish_reason);
  f.Int("response_tokens", &m->response_tokens);
}

void Parse(Fields& f, RewardBatch* m) {
  f.Int("batch_id", &m->batch_id);
  f.Float("deadline_s", &m->deadline_s);
  f.List("requests", &m->requests, [](Fields& c, RewardRequest* r) { Parse(c, r); });
}

void Parse(Fields& f, RewardResult* m) {
  f.Int("sample_id", &m->sample_id);
  // The variant's alternative is whichever of "score" / "error" is present (exactly one).
  const bool has_score = f.Has("score"), has_error = f.Has("error");
  if (has_score == has_error) {
    f.Fail(f.path(), has_score ? "both \"score\" and \"error\" present (expected exactly one)"
                               : "neither \"score\" nor \"error\" present (expected exactly one)");
    return;
  }
  if (has_score) {
    Score s;
    f.Object("score", &s, [](Fields& c, Score* s) {
      c.Float("value", &s->value);
      uint8_t raw = 0;
      c.Int("verdict", &raw);
      if (c.ok() && raw > static_cast<uint8_t>(Verdict::kTruncated)) {
        c.Fail(c.Path("verdict"), "unknown verdict " + std::to_string(raw));
      }
      s->verdict = static_cast<Verdict>(raw);
      c.String("detail_json", &s->detail_json);
    });
    m->outcome = std::move(s);
  } else {
    RewardError e;
    f.Object("error", &e, [](Fields& c, RewardError* e) {
      uint8_t raw = 0;
      c.Int("kind", &raw);
      if (c.ok() && raw > static_cast<uint8_t>(RewardErrorKind::kInternal)) {
        c.Fail(c.Path("kind"), "unknown reward error kind " + std::to_string(raw));
      }
      e->kind = static_cast<RewardErrorKind>(raw);
      c.String("message", &e->message);
    });
    m->outcome = std::move(e);
  }
}

void Parse(Fields& f, RewardResultBatch* m) {
  f.Int("batch_id", &m->batch_id);
  f.List("results", &m->results, [](Fields& c, RewardResult* r) { Parse(c, r); });
}

void Parse(Fields& f, TensorSpec* t) {
  f.String("name", &t->name);
  uint8_t raw = 0;
  f.Int("dtype", &raw);
  if (f.ok() && raw > static_cast<uint8_t>(DType::kBool)) {
    f.Fail(f.Path("dtype"), "unknown dtype " + std::to_string(raw) + " (known: " + DTypeNames() + ")");
  }
  t->dtype = static_cast<DType>(raw);
  f.Array("shape", &t->shape);
  for (int64_t d : t->shape) {
    if (d < 0) f.Fail(f.Path("shape"), "negative dimension " + std::to_string(d));
  }
}

void Parse(Fields& f, WeightsAnnounce* m) {
  f.Int("version", &m->manifest.version);
  f.List("tensors", &m->manifest.tensors, [](Fields& c, TensorSpec* t) { Parse(c, t); });
  f.String("transport", &m->transport);
}

void Parse(Fields& f, Heartbeat* m) {
  f.String("role", &m->role);
  f.Int("rank", &m->rank);
  f.Int("sequence", &m->sequence);
  f.Int("unix_time_ms", &m->unix_time_ms);
  f.Int("weights_version", &m->weights_version);
}

void Parse(Fields& f, Shutdown* m) { f.String("reason", &m->reason); }
void Parse(Fields& f, Ack* m) { f.Int("request_id", &m->request_id); }

void Parse(Fields& f, ErrorReply* m) {
  f.Int("request_id", &m->request_id);
  int code = 0;
  f.Int("code", &code);
  if (f.ok() && (code < 0 || code > static_cast<int>(StatusCode::kCancelled))) {
    f.Fail(f.Path("code"), "unknown status code " + std::to_string(code));
  }
  m->code = static_cast<StatusCode>(code);
  f.String("message", &m->message);
}

template <typename T>
StatusOr<T> DecodePayload(std::string_view payload) {
  const char* name = MessageTypeName(MessageTypeOf<T>::value);
  json j;
  try {
    j = json::from_msgpack(payload.begin(), payload.end());
  } catch (const json::exception& e) {
    return DataLoss(std::string(name) + " payload: malformed MessagePack (" +
                    std::to_string(payload.size()) + " bytes): " + e.what());
  }
  Fields f(j, name);
  T out;
  if (f.ok()) Parse(f, &out);
  LR_RETURN_IF_ERROR(f.Finish());
  return out;
}

}  // namespace

// ---- public API ------------------------------------------------------------------------------

template <typename T>
std::string EncodeMessage(const T& message) {
  const std::vector<uint8_t> payload = json::to_msgpack(ToJson(message));
  std::string out;
  out.reserve(kFrameHeaderSize + payload.size());
  PutLE(out, kWireMagic, 4);
  PutLE(out, kProtocolVersion, 2);
  PutLE(out, static_cast<uint16_t>(MessageTypeOf<T>::value), 2);
  PutLE(out, payload.size(), 8);
  out.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  return out;
}

std::string Encode(const Message& message) {
  return std::visit([](const auto& m) { return EncodeMessage(m); }, message);
}

StatusOr<FrameHeader> DecodeHeader(std::string_view bytes) {
  if (bytes.size() < kFrameHeaderSize) {
    return DataLoss("truncated frame: " + std::to_string(bytes.size()) +
                    " bytes, shorter than the " + std::to_string(kFrameHeaderSize) + "-byte header");
  }
  FrameHeader h;
  h.magic = static_cast<uint32_t>(GetLE(bytes.data(), 4));
  h.version = static_cast<uint16_t>(GetLE(bytes.data() + 4, 2));
  h.type = static_cast<uint16_t>(GetLE(bytes.data() + 6, 2));
  h.payload_size = GetLE(bytes.data() + 8, 8);
  if (h.magic != kWireMagic) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "0x%08x (expected 0x%08x, \"LRM1\")", h.magic, kWireMagic);
    return DataLoss(std::string("not a lightrl frame: bad magic ") + buf);
  }
  if (h.version != kProtocolVersion) {
    return FailedPrecondition("protocol version mismatch: frame has version " +
                              std::to_string(h.version) + ", this build speaks version " +
                              std::to_string(kProtocolVersion) +
                              " (HINT: run the same lightrl build on every host)");
  }
  if (!IsKnownMessageType(h.type)) {
    return InvalidArgument("unknown message type " + std::to_string(h.type) +
                           " in a protocol-version-" + std::to_string(h.version) + " frame");
  }
  const uint64_t body = bytes.size() - kFrameHeaderSize;
  const char* name = MessageTypeName(static_cast<MessageType>(h.type));
  if (body < h.payload_size) {
    return DataLoss(std::string("truncated ") + name + " frame: header says " +
                    std::to_string(h.payload_size) + " payload bytes, got " + std::to_string(body));
  }
  if (body > h.payload_size) {
    return DataLoss(std::string(name) + " frame has " + std::to_string(body - h.payload_size) +
                    " trailing bytes after its " + std::to_string(h.payload_size) + "-byte payload");
  }
  return h;
}

StatusOr<Message> Decode(std::string_view bytes) {
  LR_ASSIGN_OR_RETURN(const FrameHeader h, DecodeHeader(bytes));
  const std::string_view payload = bytes.substr(kFrameHeaderSize);
  switch (static_cast<MessageType>(h.type)) {
#define LR_DECODE_CASE(T)                                        \
  case MessageType::k##T: {                                      \
    LR_ASSIGN_OR_RETURN(T m, DecodePayload<T>(payload));         \
    return Message(std::move(m));                                \
  }
    LR_DECODE_CASE(RolloutRequest)
    LR_DECODE_CASE(RolloutResult)
    LR_DECODE_CASE(Trajectory)
    LR_DECODE_CASE(RewardRequest)
    LR_DECODE_CASE(RewardBatch)
    LR_DECODE_CASE(RewardResult)
    LR_DECODE_CASE(RewardResultBatch)
    LR_DECODE_CASE(WeightsAnnounce)
    LR_DECODE_CASE(Heartbeat)
    LR_DECODE_CASE(Shutdown)
    LR_DECODE_CASE(Ack)
    LR_DECODE_CASE(ErrorReply)
#undef LR_DECODE_CASE
  }
  return InvalidArgument("unknown message type " + std::to_string(h.type));  // unreachable
}

template <typename T>
StatusOr<T> DecodeAs(std::string_view bytes) {
  LR_ASSIGN_OR_RETURN(const FrameHeader h, DecodeHeader(bytes));
  const auto type = static_cast<MessageType>(h.type);
  if (type == MessageTypeOf<T>::value) return DecodePayload<T>(bytes.substr(kFrameHeaderSize));
  if (type == MessageType::kErrorReply) {
    LR_ASSIGN_OR_RETURN(const ErrorReply e, DecodePayload<ErrorReply>(bytes.substr(kFrameHeaderSize)));
    return e.ToStatus();
  }
  return InvalidArgument(std::string("expected a ") + MessageTypeName(MessageTypeOf<T>::value) +
                         " message, got " + MessageTypeName(type));
}

#define LR_INSTANTIATE(T)                                   \
  template std::string EncodeMessage<T>(const T&);          \
  template StatusOr<T> DecodeAs<T>(std::string_view);
LR_INSTANTIATE(RolloutRequest)
LR_INSTANTIATE(RolloutResult)
LR_INSTANTIATE(Trajectory)
LR_INSTANTIATE(RewardRequest)
LR_INSTANTIATE(RewardBatch)
LR_INSTANTIATE(RewardResult)
LR_INSTANTIATE(RewardResultBatch)
LR_INSTANTIATE(WeightsAnnounce)
LR_INSTANTIATE(Heartbeat)
LR_INSTANTIATE(Shutdown)
LR_INSTANTIATE(Ack)
LR_INSTANTIATE(ErrorReply)
#undef LR_INSTANTIATE

}  // namespace lightrl::protocol
