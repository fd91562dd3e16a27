// The OpenAI-compatible server on loopback. Oracles: the Engine run directly with the seeds the
// server documents (protocol::SampleSeed(seed, prompt index), sample k), hand-written malformed
// requests and the field each must name, sequential vs concurrent runs (batch-invariant engine).
#include "rollout/http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "core/protocol/messages.h"
#include "tests/rollout/test_util.h"

namespace lightrl::rollout {
namespace {

using json = nlohmann::json;
using testing::Detok;
using testing::MakeModel;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.batch_invariant = true;  // exact comparisons between sequential and concurrent runs
    o.detokenize = Detok;
    engine_ = std::make_unique<Engine>(MakeModel(), o);
    engine_->SetWeightsVersion(6);
    tmpl_ = *model::ChatTemplatePreset("none");
    tmpl_.user_prefix = "U:";
    tmpl_.assistant_prefix = "A:";
    HttpServerOptions so;
    so.port = 0;
    so.model_name = "tiny";
    server_ = std::make_unique<HttpServer>(engine_.get(), &tok_, &tmpl_, so);
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(60, 0);
  }
  void TearDown() override { server_->Stop(); }

  std::pair<int, json> Post(const std::string& path, const std::string& body) {
    auto res = client_->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << "no response for " << path;
    if (!res) return {0, json()};
    return {res->status, json::parse(res->body)};
  }
  // Expects HTTP 400 whose error names `param`.
  void ExpectBad(const std::string& path, const std::string& body, const std::string& param) {
    auto [status, j] = Post(path, body);
    EXPECT_EQ(status, 400) << body;
    ASSERT_TRUE(j.contains("error")) << j.dump();
    EXPECT_EQ(j["error"]["param"], param) << body << " -> " << j.dump();
    EXPECT_EQ(j["error"]["message"].get<std::string>().rfind(param + ":", 0), 0u) << j.dump();
  }

  testing::PrintableTokenizer tok_;
  model::ChatTemplate tmpl_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, ModelsAndHealth) {
  auto res = client_->Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "tiny");
  EXPECT_EQ(j["data"][0]["weights_version"], 6);
  EXPECT_EQ(client_->Get("/health")->status, 200);
  auto missing = client_->Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST_F(HttpServerTest, CompletionMatchesTheEngineRunDirectly) {
  auto [status, j] = Post("/v1/completions",
                          R"({"model": "tiny", "prompt": "HELLO", "max_tokens": 9, "temperature": 0.8,
                              "seed": 3, "n": 2, "logprobs": 0, "ignore_eos": true})");
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["weights_version"], 6);
  ASSERT_EQ(j["choices"].size(), 2u);
  Request r;
  r.prompt_ids = tok_.Encode("HELLO");
  r.params.temperature = 0.8;
  r.params.max_new_tokens = 9;
  r.seed = protocol::SampleSeed(3, 0);
  r.num_samples = 2;
  Engine direct(MakeModel(), engine_->options());
  auto ref = direct.Generate({r});
  for (int k = 0; k < 2; ++k) {
    const json& c = j["choices"][k];
    EXPECT_EQ(c["index"], k);
    EXPECT_EQ(c["token_ids"].get<std::vector<int64_t>>(), ref[k].token_ids);
    EXPECT_EQ(c["text"], Detok(ref[k].token_ids));
    EXPECT_EQ(c["finish_reason"], "length");
    EXPECT_EQ(c["logprobs"]["token_logprobs"].get<std::vector<float>>(), ref[k].logprobs);
    EXPECT_EQ(c["logprobs"]["tokens"].size(), 9u);
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 18);
  // Same seed: same output; token-id prompts and lists of prompts work too.
  auto [s2, j2] = Post("/v1/completions",
                       R"({"prompt": [[40, 37, 44, 44, 47], "HELLO"], "max_tokens": 9, "temperature": 0.8,
                           "seed": 3, "ignore_eos": true})");
  ASSERT_EQ(s2, 200) << j2.dump();
  ASSERT_EQ(j2["choices"].size(), 2u);
  EXPECT_EQ(j2["choices"][0]["token_ids"], j["choices"][0]["token_ids"]);  // prompt 0 -> SampleSeed(3, 0)
  EXPECT_NE(j2["choices"][1]["token_ids"], j["choices"][0]["token_ids"]);  // prompt 1 -> SampleSeed(3, 1)
}

TEST_F(HttpServerTest, StopStringsAreCutFromTheText) {
  auto [s0, free_run] = Post("/v1/completions", R"({"prompt": "AB", "max_tokens": 30, "seed": 1, "ignore_eos": true})");
  ASSERT_EQ(s0, 200);
  const std::string text = free_run["choices"][0]["text"];
  const std::string stop = text.substr(10, 2);
  json req = {{"prompt", "AB"}, {"max_tokens", 30}, {"seed", 1}, {"ignore_eos", true}, {"stop", stop}};
  auto [s1, j] = Post("/v1/completions", req.dump());
  ASSERT_EQ(s1, 200);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["text"], text.substr(0, text.find(stop)));
}

TEST_F(HttpServerTest, ChatCompletionUsesTheTemplate) {
  auto [status, j] = Post("/v1/chat/completions",
                          R"({"messages": [{"role": "user", "content": "HI"}], "max_tokens": 4, "seed": 2,
                              "logprobs": true, "ignore_eos": true})");
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "chat.completion");
  const json& c = j["choices"][0];
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_EQ(c["logprobs"]["content"].size(), 4u);
  // Oracle: the engine on the rendered prompt "U:HIA:".
  Request r;
  r.prompt_ids = tok_.Encode("U:HIA:");
  r.params.max_new_tokens = 4;
  r.seed = protocol::SampleSeed(2, 0);
  Engine direct(MakeModel(), engine_->options());
  Completion ref = direct.Generate({r})[0];
  EXPECT_EQ(c["token_ids"].get<std::vector<int64_t>>(), ref.token_ids);
  EXPECT_EQ(c["message"]["content"], Detok(ref.token_ids));
  EXPECT_EQ(j["usage"]["prompt_tokens"], 6);
}

TEST_F(HttpServerTest, MalformedRequestsAre400NamingTheField) {
  ExpectBad("/v1/completions", "{not json", "body");
  ExpectBad("/v1/completions", "[1, 2]", "body");
  ExpectBad("/v1/completions", R"({"max_tokens": 3})", "prompt");
  ExpectBad("/v1/completions", R"({"prompt": 5})", "prompt");
  ExpectBad("/v1/completions", R"({"prompt": ""})", "prompt");
  ExpectBad("/v1/completions", R"({"prompt": [1, 999]})", "prompt[1]");
  ExpectBad("/v1/completions", R"({"prompt": ["A", 7]})", "prompt[1]");
  ExpectBad("/v1/completions", R"({"prompt": "A", "top_p": 2})", "top_p");
  ExpectBad("/v1/completions", R"({"prompt": "A", "temperature": -1})", "temperature");
  ExpectBad("/v1/completions", R"({"prompt": "A", "temperature": "hot"})", "temperature");
  ExpectBad("/v1/completions", R"({"prompt": "A", "max_tokens": "x"})", "max_tokens");
  ExpectBad("/v1/completions", R"({"prompt": "A", "max_tokens": 0})", "max_tokens");
  ExpectBad("/v1/completions", R"({"prompt": "A", "max_tokens": 100000})", "max_tokens");  // > context
  ExpectBad("/v1/completions", R"({"prompt": "A", "n": 0})", "n");
  ExpectBad("/v1/completions", R"({"prompt": "A", "stream": true})", "stream");
  ExpectBad("/v1/completions", R"({"prompt": "A", "logprobs": 3})", "logprobs");
  ExpectBad("/v1/completions", R"({"prompt": "A", "stop": [""]})", "stop[0]");
  ExpectBad("/v1/completions", R"({"prompt": "A", "stop_token_ids": [64]})", "stop_token_ids[0]");
  ExpectBad("/v1/completions", R"({"prompt": "A", "presence_penalty": 0.5})", "presence_penalty");
  ExpectBad("/v1/chat/completions", R"({"max_tokens": 3})", "messages");
  ExpectBad("/v1/chat/completions", R"({"messages": [{"role": 5, "content": "x"}]})", "messages[0].role");
  ExpectBad("/v1/chat/completions", R"({"messages": [{"role": "tool", "content": "x"}]})", "messages[0].role");
  ExpectBad("/v1/chat/completions", R"({"messages": [{"role": "user"}]})", "messages[0].content");
  auto [status, j] = Post("/v1/completions", R"({"model": "gpt-9", "prompt": "A"})");
  EXPECT_EQ(status, 404);
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_TRUE(engine_->idle());
}

TEST_F(HttpServerTest, ConcurrentRequestsAreBatchedAndUnchanged) {
  auto body = [](int i) {
    return json{{"prompt", std::string("PROMPT") + std::to_string(i)}, {"max_tokens", 60}, {"seed", 100 + i},
                {"ignore_eos", true}}
        .dump();
  };
  std::vector<json> sequential;
  for (int i = 0; i < 6; ++i) sequential.push_back(Post("/v1/completions", body(i)).second);
  EXPECT_EQ(engine_->stats().peak_rows, 1);
  engine_->ResetStats();
  std::vector<json> concurrent(6);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", server_->port());
      c.set_read_timeout(60, 0);
      auto res = c.Post("/v1/completions", body(i), "application/json");
      if (res) concurrent[i] = json::parse(res->body);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(concurrent[i].contains("choices")) << concurrent[i].dump();
    EXPECT_EQ(concurrent[i]["choices"][0]["token_ids"], sequential[i]["choices"][0]["token_ids"]) << i;
  }
  // Requests overlapped in the engine: some decode steps held more than one row.
  EXPECT_GT(engine_->stats().peak_rows, 1);
}

}  // namespace
}  // namespace lightrl::rollout
