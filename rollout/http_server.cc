#include "rollout/http_server.h"

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "core/check.h"
#include "core/protocol/messages.h"

namespace lightrl::rollout {

namespace {

using json = nlohmann::json;

// A client error: HTTP `status` naming the request field `param`.
struct BadRequest {
  std::string param, message;
  int status = 400;
};

[[noreturn]] void Fail(const std::string& param, const std::string& what, int status = 400) {
  throw BadRequest{param, param + ": " + what, status};
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpReply ErrorReply(const BadRequest& e) {
  json err = {{"error", {{"message", e.message}, {"type", "invalid_request_error"}, {"param", e.param}, {"code", nullptr}}}};
  return {e.status, Dump(err)};
}

const char* OpenAiFinishReason(FinishReason r) {
  switch (r) {
    case FinishReason::kEos:
    case FinishReason::kStopString: return "stop";
    case FinishReason::kMaxTokens: return "length";
    case FinishReason::kRepetition: return "repetition";
    case FinishReason::kAborted: return "aborted";
  }
  return "unknown";
}

// Typed optional fields of the request object.
struct Fields {
  const json& j;
  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  int64_t Int(const char* k, int64_t dflt, int64_t lo, int64_t hi) const {
    if (!has(k)) return dflt;
    if (!j[k].is_number_integer()) Fail(k, "expected an integer, got " + Dump(j[k]));
    const int64_t v = j[k].get<int64_t>();
    if (v < lo || v > hi) Fail(k, StrCat("must be in [", lo, ", ", hi, "], got ", v));
    return v;
  }
  double Num(const char* k, double dflt) const {
    if (!has(k)) return dflt;
    if (!j[k].is_number()) Fail(k, "expected a number, got " + Dump(j[k]));
    return j[k].get<double>();
  }
  bool Bool(const char* k, bool dflt) const {
    if (!has(k)) return dflt;
    if (!j[k].is_boolean()) Fail(k, "expected true or false, got " + Dump(j[k]));
    return j[k].get<bool>();
  }
};

}  // namespace

struct HttpServer::Impl {
  httplib::Server server;
};

HttpServer::HttpServer(Engine* engine, const model::Tokenizer* tokenizer, const model::ChatTemplate* chat_template,
                       HttpServerOptions options)
    : engine_(engine), tokenizer_(tokenizer), template_(chat_template), options_(std::move(options)),
      impl_(std::make_unique<Impl>()) {
  LR_CHECK(engine_ && tokenizer_ && template_, "HttpServer: engine, tokenizer and chat template are required");
}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start() {
  httplib::Server& svr = impl_->server;
  const int threads = options_.http_threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  auto reply = [](httplib::Response& res, const HttpReply& r) {
    res.status = r.status;
    res.set_content(r.body, "application/json");
  };
  svr.Post("/v1/completions", [this, reply](const httplib::Request& req, httplib::Response& res) {
    reply(res, HandleCompletions(req.body, false));
  });
  svr.Post("/v1/chat/completions", [this, reply](const httplib::Request& req, httplib::Response& res) {
    reply(res, HandleCompletions(req.body, true));
  });
  svr.Get("/v1/models", [this, reply](const httplib::Request&, httplib::Response& res) { reply(res, HandleModels()); });
  svr.Get("/health", [reply](const httplib::Request&, httplib::Response& res) { reply(res, {200, R"({"status":"ok"})"}); });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) {  // an unknown route (not a handler's own 404)
      json err = {{"error",
                   {{"message", "no route " + req.method + " " + req.path}, {"type", "invalid_request_error"},
                    {"param", nullptr}, {"code", nullptr}}}};
      res.set_content(Dump(err), "application/json");
    }
  });
  if (options_.port == 0) {
    port_ = svr.bind_to_any_port(options_.host);
    if (port_ <= 0) return Unavailable("HttpServer: cannot bind " + options_.host + " to any port");
  } else {
    if (!svr.bind_to_port(options_.host, options_.port))
      return Unavailable(StrCat("HttpServer: cannot bind ", options_.host, ":", options_.port, " (in use?)"));
    port_ = options_.port;
  }
  stepper_ = std::thread([this] { EngineLoop(); });
  listener_ = std::thread([this] { impl_->server.listen_after_bind(); });
  return Status::Ok();
}

void HttpServer::Stop() {
  if (!listener_.joinable() && !stepper_.joinable()) return;
  engine_->Abort();  // in-flight requests finish as "aborted" so their handlers return
  {
    std::lock_guard<std::mutex> l(mu_);
    work_ = true;
  }
  cv_.notify_all();
  impl_->server.stop();
  if (listener_.joinable()) listener_.join();
  stop_ = true;
  {
    std::lock_guard<std::mutex> l(mu_);
    work_ = true;
  }
  cv_.notify_all();
  if (stepper_.joinable()) stepper_.join();
}

void HttpServer::EngineLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return work_ || stop_.load(); });
      work_ = false;
    }
    try {
      while (engine_->Step()) {
      }
    } catch (const std::exception& e) {
      // Step aborted everything in flight (their handlers answer "aborted"); keep serving.
      std::fprintf(stderr, "lightrl serve: engine step failed: %s\n", e.what());
    }
    if (stop_ && engine_->idle()) return;
  }
}

std::vector<std::vector<Completion>> HttpServer::Run(std::vector<Request> requests) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    size_t remaining = 0;
    std::vector<std::vector<Completion>> out;
  };
  auto w = std::make_shared<Wait>();
  w->remaining = requests.size();
  w->out.resize(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Status s = engine_->Submit(std::move(requests[i]), [w, i](std::vector<Completion> c) {
      std::lock_guard<std::mutex> l(w->mu);
      w->out[i] = std::move(c);
      w->remaining--;
      w->cv.notify_all();
    });
    if (!s.ok()) {
      std::lock_guard<std::mutex> l(w->mu);
      w->remaining--;  // validated before; cannot happen, reported as an empty result
    }
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    work_ = true;
  }
  cv_.notify_all();
  std::unique_lock<std::mutex> l(w->mu);
  w->cv.wait(l, [&] { return w->remaining == 0; });
  return std::move(w->out);
}

HttpReply HttpServer::HandleModels() const {
  json data = json::array();
  data.push_back({{"id", options_.model_name},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "lightrl"},
                  {"weights_version", engine_->weights_version()},
                  {"max_model_len", engine_->model()->config().max_position_embeddings}});
  return {200, Dump(json{{"object", "list"}, {"data", data}})};
}

HttpReply HttpServer::HandleCompletions(const std::string& body, bool chat) {
  try {
    json j;
    try {
      j = json::parse(body);
    } catch (const json::exception& e) {
      Fail("body", std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) Fail("body", "expected a JSON object");
    Fields f{j};
    const int64_t vocab = engine_->model()->config().vocab_size;

    if (f.has("model")) {
      if (!j["model"].is_string()) Fail("model", "expected a string");
      if (j["model"].get<std::string>() != options_.model_name)
        Fail("model", "unknown model '" + j["model"].get<std::string>() + "' (this server serves '" +
                          options_.model_name + "')", 404);
    }
    // Unsupported features are refused, not ignored.
    if (f.Bool("stream", false)) Fail("stream", "streaming is not implemented (use stream: false)");
    if (!chat && f.Bool("echo", false)) Fail("echo", "echo is not implemented");
    if (!chat && f.has("suffix")) Fail("suffix", "suffix (insertion) is not implemented");
    for (const char* k : {"frequency_penalty", "presence_penalty"}) {
      if (f.Num(k, 0.0) != 0.0) Fail(k, "penalties are not implemented (use 0)");
    }
    if (f.has("repetition_penalty") && f.Num("repetition_penalty", 1.0) != 1.0)
      Fail("repetition_penalty", "not implemented (use 1)");
    if (f.has("logit_bias") && !(j["logit_bias"].is_object() && j["logit_bias"].empty()))
      Fail("logit_bias", "not implemented");
    if (chat && f.has("tools") && !(j["tools"].is_array() && j["tools"].empty())) Fail("tools", "not implemented");

    const int n = static_cast<int>(f.Int("n", 1, 1, options_.max_n));
    if (f.has("best_of") && f.Int("best_of", n, 1, options_.max_n) != n) Fail("best_of", "best_of != n is not implemented");
    const char* max_key = chat && f.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    SamplingParams p;
    p.max_new_tokens = static_cast<int>(f.Int(max_key, options_.default_max_tokens, 1, std::numeric_limits<int>::max()));
    p.temperature = f.Num("temperature", 1.0);
    if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) Fail("temperature", "must be a number >= 0");
    p.top_p = f.Num("top_p", 1.0);
    if (!(p.top_p > 0 && p.top_p <= 1)) Fail("top_p", StrCat("must be in (0, 1], got ", p.top_p));
    const int64_t top_k = f.Int("top_k", 0, -1, std::numeric_limits<int>::max());
    p.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);  // -1 = off (vLLM)
    const int64_t window = f.Int("early_truncation_window", p.repetition_window, 0, std::numeric_limits<int>::max());
    p.repetition_truncation = window > 0;
    p.repetition_window = window > 0 ? static_cast<int>(window) : 1;
    p.repetition_prob = f.Num("early_truncation_prob", p.repetition_prob);
    if (!(p.repetition_prob >= 0 && p.repetition_prob < 1)) Fail("early_truncation_prob", "must be in [0, 1)");
    p.return_entropy = false;
    if (f.has("stop")) {
      const json& s = j["stop"];
      if (s.is_string()) {
        p.stop_strings.push_back(s.get<std::string>());
      } else if (s.is_array()) {
        for (size_t i = 0; i < s.size(); ++i) {
          if (!s[i].is_string()) Fail(StrCat("stop[", i, "]"), "expected a string");
          p.stop_strings.push_back(s[i].get<std::string>());
        }
      } else {
        Fail("stop", "expected a string or a list of strings");
      }
      for (size_t i = 0; i < p.stop_strings.size(); ++i)
        if (p.stop_strings[i].empty()) Fail(StrCat("stop[", i, "]"), "must not be empty");
    }
    if (f.has("stop_token_ids")) {
      const json& s = j["stop_token_ids"];
      if (!s.is_array()) Fail("stop_token_ids", "expected a list of token ids");
      for (size_t i = 0; i < s.size(); ++i) {
        if (!s[i].is_number_integer() || s[i].get<int64_t>() < 0 || s[i].get<int64_t>() >= vocab)
          Fail(StrCat("stop_token_ids[", i, "]"), StrCat("expected a token id in [0, ", vocab, ")"));
        p.stop_token_ids.push_back(s[i].get<int64_t>());
      }
    }
    if (!f.Bool("ignore_eos", false)) {
      for (int64_t id : tokenizer_->stop_token_ids()) p.stop_token_ids.push_back(id);
    }
    bool want_logprobs = false;
    if (chat) {
      want_logprobs = f.Bool("logprobs", false);
      if (f.Int("top_logprobs", 0, 0, 20) > 0) Fail("top_logprobs", "top alternatives are not implemented (use 0)");
    } else if (f.has("logprobs")) {
      if (f.Int("logprobs", 0, 0, 5) > 0)
        Fail("logprobs", "top alternatives are not implemented; use 0 for the sampled tokens' log-probs");
      want_logprobs = true;
    }
    uint64_t seed = 0;
    if (f.has("seed")) {
      if (!j["seed"].is_number_integer()) Fail("seed", "expected an integer");
      seed = j["seed"].is_number_unsigned() ? j["seed"].get<uint64_t>() : static_cast<uint64_t>(j["seed"].get<int64_t>());
    } else {
      seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    }

    // Prompts -> token ids.
    std::vector<std::vector<int64_t>> prompts;
    std::vector<std::string> prompt_fields;
    if (chat) {
      if (!f.has("messages") || !j["messages"].is_array() || j["messages"].empty())
        Fail("messages", "expected a non-empty list of {role, content}");
      std::vector<model::ChatTemplate::Message> msgs;
      for (size_t i = 0; i < j["messages"].size(); ++i) {
        const json& m = j["messages"][i];
        const std::string field = StrCat("messages[", i, "]");
        if (!m.is_object()) Fail(field, "expected an object {role, content}");
        if (!m.contains("role") || !m["role"].is_string()) Fail(field + ".role", "expected a string");
        std::string content;
        if (!m.contains("content") || m["content"].is_null()) {
          Fail(field + ".content", "missing");
        } else if (m["content"].is_string()) {
          content = m["content"].get<std::string>();
        } else if (m["content"].is_array()) {  // [{type: "text", text: ...}, ...]
          for (size_t k = 0; k < m["content"].size(); ++k) {
            const json& part = m["content"][k];
            if (!part.is_object() || part.value("type", std::string()) != "text" || !part.contains("text") ||
                !part["text"].is_string())
              Fail(StrCat(field, ".content[", k, "]"), "only {type: \"text\", text: string} parts are supported");
            content += part["text"].get<std::string>();
          }
        } else {
          Fail(field + ".content", "expected a string or a list of text parts");
        }
        msgs.push_back({m["role"].get<std::string>(), content});
      }
      auto text = template_->RenderConversation(msgs, true);
      if (!text.ok()) {
        const std::string& m = text.status().message();
        Fail(m.substr(0, m.find(':')), m.substr(m.find(':') + 2));
      }
      prompts.push_back(tokenizer_->Encode(*text));
      prompt_fields.push_back("messages");
    } else {
      if (!f.has("prompt")) Fail("prompt", "missing (a string, a list of strings or token ids)");
      const json& pr = j["prompt"];
      auto ids_of = [&](const json& a, const std::string& field) {
        std::vector<int64_t> ids;
        for (size_t i = 0; i < a.size(); ++i) {
          if (!a[i].is_number_integer()) Fail(StrCat(field, "[", i, "]"), "expected a token id");
          const int64_t id = a[i].get<int64_t>();
          if (id < 0 || id >= vocab) Fail(StrCat(field, "[", i, "]"), StrCat("token id ", id, " out of range [0, ", vocab, ")"));
          ids.push_back(id);
        }
        return ids;
      };
      if (pr.is_string()) {
        prompts.push_back(tokenizer_->Encode(pr.get<std::string>()));
        prompt_fields.push_back("prompt");
      } else if (pr.is_array() && !pr.empty() && pr[0].is_number_integer()) {
        prompts.push_back(ids_of(pr, "prompt"));
        prompt_fields.push_back("prompt");
      } else if (pr.is_array() && !pr.empty()) {
        for (size_t i = 0; i < pr.size(); ++i) {
          const std::string field = StrCat("prompt[", i, "]");
          if (pr[i].is_string()) {
            prompts.push_back(tokenizer_->Encode(pr[i].get<std::string>()));
          } else if (pr[i].is_array()) {
            prompts.push_back(ids_of(pr[i], field));
          } else {
            Fail(field, "expected a string or a list of token ids");
          }
          prompt_fields.push_back(field);
        }
      } else {
        Fail("prompt", "expected a non-empty string, list of strings or list of token ids");
      }
    }

    std::vector<Request> reqs;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (prompts[i].empty()) Fail(prompt_fields[i], "must not be empty (it encodes to no tokens)");
      Request r;
      r.request_id = i;
      r.prompt_ids = prompts[i];
      r.params = p;
      r.seed = protocol::SampleSeed(seed, i);
      r.num_samples = n;
      Status s = ValidateRequest(r, engine_->model()->config(), engine_->options(), "request");
      if (!s.ok()) {
        const std::string& m = s.message();
        if (m.find("max_new_tokens") != std::string::npos) Fail(max_key, m.substr(m.find(':') + 2));
        if (m.find("stop_strings") != std::string::npos) Fail("stop", m.substr(m.find(':') + 2));
        Fail(prompt_fields[i], m);
      }
      reqs.push_back(std::move(r));
    }
    std::vector<std::vector<Completion>> out = Run(std::move(reqs));
    // Every completion of the call comes from one version (weights cannot change mid-flight).
    const uint64_t version =
        !out.empty() && !out[0].empty() ? out[0][0].weights_version : engine_->weights_version();

    json choices = json::array();
    int64_t prompt_tokens = 0, completion_tokens = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      prompt_tokens += static_cast<int64_t>(prompts[i].size());
      for (const Completion& c : out[i]) {
        std::vector<int64_t> shown = c.token_ids;
        if (c.finish_reason == FinishReason::kEos && !shown.empty()) shown.pop_back();
        std::string text = tokenizer_->Decode(shown);
        if (c.finish_reason == FinishReason::kStopString) {
          size_t cut = std::string::npos;
          for (const auto& s : p.stop_strings) cut = std::min(cut, text.find(s));
          if (cut != std::string::npos) text.resize(cut);
        }
        completion_tokens += static_cast<int64_t>(c.token_ids.size());
        json choice = {{"index", choices.size()},
                       {"finish_reason", OpenAiFinishReason(c.finish_reason)},
                       {"token_ids", c.token_ids}};
        json lp = nullptr;
        if (want_logprobs) {
          if (chat) {
            json content = json::array();
            for (size_t t = 0; t < c.token_ids.size(); ++t) {
              const std::string tok = tokenizer_->Decode({c.token_ids[t]});
              std::vector<int> bytes(tok.begin(), tok.end());
              for (int& b : bytes) b &= 0xFF;
              content.push_back({{"token", tok}, {"logprob", c.logprobs[t]}, {"bytes", bytes}, {"top_logprobs", json::array()}});
            }
            lp = {{"content", content}};
          } else {
            json tokens = json::array(), offsets = json::array();
            size_t offset = 0;
            for (int64_t id : c.token_ids) {
              const std::string tok = tokenizer_->Decode({id});
              tokens.push_back(tok);
              offsets.push_back(offset);
              offset += tok.size();
            }
            lp = {{"tokens", tokens}, {"token_logprobs", c.logprobs}, {"top_logprobs", nullptr}, {"text_offset", offsets}};
          }
        }
        if (chat) {
          choice["message"] = {{"role", "assistant"}, {"content", text}};
        } else {
          choice["text"] = text;
        }
        choice["logprobs"] = lp;
        choices.push_back(std::move(choice));
      }
    }
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
    json resp = {{"id", StrCat(chat ? "chatcmpl-" : "cmpl-", next_id_++)},
                 {"object", chat ? "chat.completion" : "text_completion"},
                 {"created", now.count()},
                 {"model", options_.model_name},
                 {"choices", choices},
                 {"usage",
                  {{"prompt_tokens", prompt_tokens},
                   {"completion_tokens", completion_tokens},
                   {"total_tokens", prompt_tokens + completion_tokens}}},
                 {"weights_version", version}};
    return {200, Dump(resp)};
  } catch (const BadRequest& e) {
    return ErrorReply(e);
  } catch (const std::exception& e) {
    return {500, Dump(json{{"error", {{"message", e.what()}, {"type", "server_error"}, {"param", nullptr}, {"code", nullptr}}}})};
  }
}

}  // namespace lightrl::rollout
