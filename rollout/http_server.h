// OpenAI-compatible HTTP front end over an Engine (cpp-httplib), for `lightrl serve`.
//
//   GET  /v1/models             {"object":"list","data":[{"id":<model_name>,...}]}
//   POST /v1/completions        prompt: string | [string] | [int] | [[int]]; n, max_tokens,
//                               temperature, top_p, top_k, seed, stop, stop_token_ids,
//                               ignore_eos, logprobs (0 = the sampled tokens' log-probs)
//   POST /v1/chat/completions   messages: [{role, content}] rendered with the ChatTemplate;
//                               logprobs: true gives choices[i].logprobs.content
//   GET  /health                {"status":"ok"}
// Every choice also carries "token_ids" and the response "weights_version" (extensions).
// Log-probs are the engine's (rollout/engine.h): full-vocabulary fp32 log-softmax of
// logits / temperature at the sampled token. finish_reason: "stop" (EOS or a stop string; the
// stop text is not included in "text"), "length", "repetition" (M1 early truncation, an
// extension), "aborted".
//
// Errors: HTTP 400 with {"error": {"message": "<field>: <what>", "type": "invalid_request_error",
// "param": "<field>"}} for malformed JSON, missing/mistyped fields, out-of-range values and
// unsupported features (stream, echo, best_of > n, penalties, logit_bias, top-k alternatives);
// 404 for unknown paths.
//
// Concurrency: requests are handled on httplib's thread pool; each is submitted to the engine
// and waits for its completions, while one engine thread runs Engine::Step as long as anything is
// queued or running, so concurrent requests decode in one batch.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.h"
#include "model/tokenizer.h"
#include "rollout/engine.h"

namespace lightrl::rollout {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                 // 0 = any free port (see HttpServer::port())
  std::string model_name = "lightrl";
  int default_max_tokens = 16;     // OpenAI's default for /v1/completions
  int max_n = 64;                  // largest n accepted
  int http_threads = 8;
};

// One parsed response: HTTP status and JSON body (exposed for tests).
struct HttpReply {
  int status = 200;
  std::string body;
};

class HttpServer {
 public:
  // engine, tokenizer and chat_template must outlive the server. The engine's detokenize should
  // be set (stop strings); the server uses the tokenizer for text in and out.
  HttpServer(Engine* engine, const model::Tokenizer* tokenizer, const model::ChatTemplate* chat_template,
             HttpServerOptions options);
  ~HttpServer();  // Stop()

  // Binds and starts serving in background threads. Unavailable if the address cannot be bound.
  Status Start();
  void Stop();
  int port() const { return port_; }

  // The request handlers without the socket (the HTTP layer calls these).
  HttpReply HandleCompletions(const std::string& body, bool chat);
  HttpReply HandleModels() const;

 private:
  struct Impl;
  // Submits the requests and blocks until all completions are in.
  std::vector<std::vector<Completion>> Run(std::vector<Request> requests);
  void EngineLoop();

  Engine* engine_;
  const model::Tokenizer* tokenizer_;
  const model::ChatTemplate* template_;
  HttpServerOptions options_;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::thread listener_, stepper_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool work_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace lightrl::rollout
