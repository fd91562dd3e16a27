// `lightrl generate` and `lightrl serve`: the rollout engine from the command line.
//
// Both take the model from --config (a YAML with a `model:` block, e.g. configs/model/tiny.yaml,
// plus optional `tokenizer:` and `chat_template:` blocks; `--set a.b=c` overrides) and weights
// from --weights (a safetensors directory or file, model/safetensors.h) or a fresh init with
// --init-seed. With --weights and no --config, the directory's config.json is used (and its
// tokenizer.json, if present).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "core/config/config.h"
#include "core/protocol/messages.h"
#include "core/runtime.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "rollout/engine.h"
#include "rollout/http_server.h"

namespace lightrl::app {

namespace {

using json = nlohmann::json;

struct CommonFlags {
  std::string config, weights;
  std::vector<std::string> overrides;
  uint64_t init_seed = 1;
  uint64_t weights_version = 0;
  int threads = 0, max_slots = 64;
  bool batch_invariant = false;
  std::string logprob_source = "decode";
};

void AddCommonFlags(CLI::App* cmd, CommonFlags* f) {
  cmd->add_option("--config", f->config, "YAML with a model: block (+ tokenizer:, chat_template:)");
  cmd->add_option("--weights", f->weights, "safetensors directory or file (default: fresh init)");
  cmd->add_option("--set", f->overrides, "config override a.b.c=value (repeatable)");
  cmd->add_option("--init-seed", f->init_seed, "seed of the fresh weight init (no --weights)");
  cmd->add_option("--weights-version", f->weights_version, "version recorded with every sample");
  cmd->add_option("--threads", f->threads, "libtorch threads (0 = cores available)");
  cmd->add_option("--max-slots", f->max_slots, "sequences decoding together")->check(CLI::PositiveNumber);
  cmd->add_flag("--batch-invariant", f->batch_invariant,
                "decode each sequence at batch 1 (bitwise independent of batching, slower)");
  cmd->add_option("--logprob-source", f->logprob_source, "decode | forward (recompute with the training forward)")
      ->check(CLI::IsMember({"decode", "forward"}));
}

struct Setup {
  model::ModelConfig config;
  model::HybridModel model{nullptr};
  std::unique_ptr<model::Tokenizer> tokenizer;
  model::ChatTemplate chat;
};

StatusOr<Setup> BuildSetup(const CommonFlags& f) {
  Setup s;
  YAML::Node root;
  if (!f.config.empty()) {
    LR_ASSIGN_OR_RETURN(root, LoadConfigFile(f.config));
    LR_RETURN_IF_ERROR(ApplyOverrides(root, f.overrides));
    if (!root["model"]) return InvalidArgument(f.config + ": model: missing (the model config block)");
    auto c = model::ParseModelConfigNode(root["model"], "model");
    if (!c.ok()) return c.status().WithContext(f.config);
    s.config = *c;
  } else if (!f.weights.empty()) {
    if (!f.overrides.empty()) return InvalidArgument("--set needs --config");
    const std::filesystem::path dir = std::filesystem::is_directory(f.weights)
                                          ? std::filesystem::path(f.weights)
                                          : std::filesystem::path(f.weights).parent_path();
    LR_ASSIGN_OR_RETURN(s.config, model::LoadModelConfig((dir / "config.json").string()));
    if (std::filesystem::exists(dir / "tokenizer.json")) {
      root["tokenizer"]["type"] = "hf";
      root["tokenizer"]["path"] = (dir / "tokenizer.json").string();
    }
  } else {
    return InvalidArgument("--config or --weights is required (e.g. --config configs/model/tiny.yaml)");
  }
  s.model = model::HybridModel(s.config);
  if (!f.weights.empty()) {
    LR_RETURN_IF_ERROR(model::LoadModelWeights(s.model, f.weights).WithContext("--weights " + f.weights));
  } else {
    s.model->InitWeights(f.init_seed);
  }
  s.model->eval();
  auto tok = model::BuildTokenizer(root["tokenizer"], "tokenizer");
  if (!tok.ok()) return tok.status();
  s.tokenizer = std::move(tok).value();
  if (s.tokenizer->vocab_size() > s.config.vocab_size) {
    return InvalidArgument(StrCat("tokenizer: vocab_size ", s.tokenizer->vocab_size(), " exceeds the model's ",
                                  s.config.vocab_size));
  }
  if (root["chat_template"]) {
    LR_ASSIGN_OR_RETURN(s.chat, model::ParseChatTemplate(root["chat_template"], "chat_template"));
  } else {
    LR_ASSIGN_OR_RETURN(s.chat, model::ChatTemplatePreset(s.tokenizer->type() == "byte" ? "tiny" : "chatml"));
  }
  return s;
}

rollout::EngineOptions MakeEngineOptions(const CommonFlags& f, const model::Tokenizer* tok) {
  rollout::EngineOptions o;
  o.max_slots = f.max_slots;
  o.batch_invariant = f.batch_invariant;
  o.logprob_source = f.logprob_source == "forward" ? rollout::LogProbSource::kForward : rollout::LogProbSource::kDecode;
  o.detokenize = [tok](const std::vector<int64_t>& ids) { return tok->Decode(ids); };
  return o;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---- generate ------------------------------------------------------------------------------

struct GenerateFlags {
  std::string prompts, output;
  int samples = 1, max_new_tokens = 256, top_k = 0, early_window = 3000;
  double temperature = 1.0, top_p = 1.0, early_prob = 0.99;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false, entropy = false, raw = false, no_progress = false;
};

// One prompts.jsonl line -> the prompt's token ids (and its id for the output). Errors name the
// file, line and field.
struct PromptLine {
  json id;
  std::vector<int64_t> ids;
  std::optional<uint64_t> seed;
  std::optional<int> max_new_tokens, samples;
};

StatusOr<PromptLine> ParsePromptLine(const std::string& line, const std::string& where, const Setup& s, bool raw,
                                     int64_t index) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    return InvalidArgument(StrCat(where, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return InvalidArgument(where + ": expected a JSON object");
  auto bad = [&](const std::string& field, const std::string& what) {
    return InvalidArgument(StrCat(where, ": field '", field, "': ", what));
  };
  PromptLine p;
  p.id = j.contains("id") ? j["id"] : json(index);
  std::string system;
  if (j.contains("system")) {
    if (!j["system"].is_string()) return bad("system", "expected a string");
    system = j["system"].get<std::string>();
  }
  const int given = j.contains("prompt") + j.contains("messages") + j.contains("prompt_ids");
  if (given != 1) return InvalidArgument(where + ": expected exactly one of 'prompt', 'messages', 'prompt_ids'");
  if (j.contains("prompt")) {
    if (!j["prompt"].is_string()) return bad("prompt", "expected a string");
    const std::string text = j["prompt"].get<std::string>();
    p.ids = s.tokenizer->Encode(raw ? text : s.chat.RenderPrompt(text, system));
  } else if (j.contains("messages")) {
    if (!j["messages"].is_array()) return bad("messages", "expected a list of {role, content}");
    std::vector<model::ChatTemplate::Message> msgs;
    if (!system.empty()) msgs.push_back({"system", system});
    for (size_t i = 0; i < j["messages"].size(); ++i) {
      const json& m = j["messages"][i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
          !m["content"].is_string())
        return bad(StrCat("messages[", i, "]"), "expected {role: string, content: string}");
      msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    auto text = s.chat.RenderConversation(msgs, true);
    if (!text.ok()) return InvalidArgument(StrCat(where, ": field '", text.status().message()));
    p.ids = s.tokenizer->Encode(*text);
  } else {
    if (!j["prompt_ids"].is_array()) return bad("prompt_ids", "expected a list of token ids");
    for (size_t i = 0; i < j["prompt_ids"].size(); ++i) {
      const json& v = j["prompt_ids"][i];
      if (!v.is_number_integer()) return bad(StrCat("prompt_ids[", i, "]"), "expected an integer token id");
      p.ids.push_back(v.get<int64_t>());
    }
  }
  if (j.contains("seed")) {
    if (!j["seed"].is_number_unsigned()) return bad("seed", "expected a non-negative integer");
    p.seed = j["seed"].get<uint64_t>();
  }
  if (j.contains("max_new_tokens")) {
    if (!j["max_new_tokens"].is_number_integer()) return bad("max_new_tokens", "expected an integer");
    p.max_new_tokens = j["max_new_tokens"].get<int>();
  }
  if (j.contains("n")) {
    if (!j["n"].is_number_integer()) return bad("n", "expected an integer");
    p.samples = j["n"].get<int>();
  }
  return p;
}

// A one-line progress bar on stderr, redrawn at most 10 times a second.
class Progress {
 public:
  Progress(int64_t total, bool enabled) : total_(total), enabled_(enabled), start_(Clock::now()) {}
  void Add(int64_t tokens) {
    std::lock_guard<std::mutex> l(mu_);
    done_++;
    tokens_ += tokens;
    const auto now = Clock::now();
    if (done_ < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    Draw(now);
  }
  void Finish() {
    if (enabled_) std::fprintf(stderr, "\n");
  }

 private:
  using Clock = std::chrono::steady_clock;
  void Draw(Clock::time_point now) {
    if (!enabled_) return;
    const double s = std::chrono::duration<double>(now - start_).count();
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : width;
    std::string bar(filled, '=');
    bar.resize(width, ' ');
    std::fprintf(stderr, "\rgenerate [%s] %lld/%lld samples  %lld tokens  %.1f tok/s  %.1fs", bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), static_cast<long long>(tokens_),
                 s > 0 ? tokens_ / s : 0.0, s);
    std::fflush(stderr);
  }
  std::mutex mu_;
  int64_t total_, done_ = 0, tokens_ = 0;
  bool enabled_;
  Clock::time_point start_, last_;
};

int RunGenerate(const CommonFlags& cf, const GenerateFlags& g) {
  ConfigureThreads(cf.threads);
  auto setup = BuildSetup(cf);
  if (!setup.ok()) {
    std::fprintf(stderr, "lightrl generate: %s\n", setup.status().ToString().c_str());
    return 1;
  }
  Setup& s = *setup;
  std::ifstream in(g.prompts);
  if (!in) {
    std::fprintf(stderr, "lightrl generate: cannot open --prompts '%s'\n", g.prompts.c_str());
    return 1;
  }
  rollout::SamplingParams params;
  params.temperature = g.temperature;
  params.top_p = g.top_p;
  params.top_k = g.top_k;
  params.max_new_tokens = g.max_new_tokens;
  params.stop_strings = g.stop;
  if (!g.ignore_eos) params.stop_token_ids = s.tokenizer->stop_token_ids();
  params.repetition_truncation = g.early_window > 0;
  params.repetition_window = g.early_window > 0 ? g.early_window : 1;
  params.repetition_prob = g.early_prob;
  params.return_entropy = g.entropy;
  if (Status st = rollout::ValidateSamplingParams(params, "flags"); !st.ok()) {
    std::fprintf(stderr, "lightrl generate: %s\n", st.ToString().c_str());
    return 1;
  }

  std::vector<rollout::Request> requests;
  std::vector<json> ids;
  std::string line;
  int64_t lineno = 0, total_samples = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = StrCat(g.prompts, ":", lineno);
    auto p = ParsePromptLine(line, where, s, g.raw, static_cast<int64_t>(requests.size()));
    if (!p.ok()) {
      std::fprintf(stderr, "lightrl generate: %s\n", p.status().ToString().c_str());
      return 1;
    }
    rollout::Request r;
    r.request_id = requests.size();
    r.prompt_ids = p->ids;
    r.params = params;
    if (p->max_new_tokens) r.params.max_new_tokens = *p->max_new_tokens;
    r.num_samples = p->samples.value_or(g.samples);
    // Seeds depend on the line's position (or its own seed), never on batching.
    r.seed = p->seed.value_or(protocol::SampleSeed(g.seed, requests.size()));
    rollout::EngineOptions check = MakeEngineOptions(cf, s.tokenizer.get());
    if (Status st = rollout::ValidateRequest(r, s.config, check, where + ": request"); !st.ok()) {
      std::fprintf(stderr, "lightrl generate: %s\n", st.ToString().c_str());
      return 1;
    }
    total_samples += r.num_samples;
    ids.push_back(p->id);
    requests.push_back(std::move(r));
  }

  std::ofstream file;
  std::ostream* out = &std::cout;
  if (g.output != "-") {
    file.open(g.output);
    if (!file) {
      std::fprintf(stderr, "lightrl generate: cannot write --output '%s'\n", g.output.c_str());
      return 1;
    }
    out = &file;
  }
  Progress progress(total_samples, !g.no_progress);
  rollout::EngineOptions o = MakeEngineOptions(cf, s.tokenizer.get());
  o.on_completion = [&](const rollout::Completion& c) { progress.Add(static_cast<int64_t>(c.token_ids.size())); };
  rollout::Engine engine(s.model, o);
  engine.SetWeightsVersion(cf.weights_version);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<rollout::Completion> done = engine.Generate(requests);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.Finish();
  int64_t tokens = 0;
  for (const rollout::Completion& c : done) {
    const rollout::Request& r = requests[c.request_id];
    std::vector<int64_t> shown = c.token_ids;
    if (c.finish_reason == rollout::FinishReason::kEos && !shown.empty()) shown.pop_back();
    json j = {{"id", ids[c.request_id]},
              {"prompt_index", c.request_id},
              {"sample_index", c.sample_index},
              {"text", s.tokenizer->Decode(shown)},
              {"token_ids", c.token_ids},
              {"logprobs", c.logprobs},
              {"finish_reason", rollout::FinishReasonName(c.finish_reason)},
              {"weights_version", c.weights_version},
              {"prompt_tokens", r.prompt_ids.size()}};
    if (g.entropy) j["entropies"] = c.entropies;
    *out << Dump(j) << "\n";
    tokens += static_cast<int64_t>(c.token_ids.size());
  }
  out->flush();
  const rollout::EngineStats st = engine.stats();
  std::fprintf(stderr, "lightrl generate: %zu prompts, %zu samples, %lld tokens in %.2fs (%.1f tok/s; %lld prefills, "
               "%lld decode steps, peak batch %lld)\n",
               requests.size(), done.size(), static_cast<long long>(tokens), seconds, tokens / std::max(seconds, 1e-9),
               static_cast<long long>(st.prefills), static_cast<long long>(st.decode_steps),
               static_cast<long long>(st.peak_rows));
  return 0;
}

// ---- serve ---------------------------------------------------------------------------------

struct ServeFlags {
  std::string host = "127.0.0.1", model_name = "lightrl";
  int port = 8000, default_max_tokens = 16, http_threads = 8;
};

int RunServe(const CommonFlags& cf, const ServeFlags& sf) {
  ConfigureThreads(cf.threads);
  auto setup = BuildSetup(cf);
  if (!setup.ok()) {
    std::fprintf(stderr, "lightrl serve: %s\n", setup.status().ToString().c_str());
    return 1;
  }
  Setup& s = *setup;
  rollout::Engine engine(s.model, MakeEngineOptions(cf, s.tokenizer.get()));
  engine.SetWeightsVersion(cf.weights_version);
  rollout::HttpServerOptions so;
  so.host = sf.host;
  so.port = sf.port;
  so.model_name = sf.model_name;
  so.default_max_tokens = sf.default_max_tokens;
  so.http_threads = sf.http_threads;
  // Block SIGINT/SIGTERM before any thread starts (threads inherit the mask), then wait for one.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  rollout::HttpServer server(&engine, s.tokenizer.get(), &s.chat, so);
  if (Status st = server.Start(); !st.ok()) {
    std::fprintf(stderr, "lightrl serve: %s\n", st.ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "lightrl serve: model '%s' (%s tokenizer, weights version %llu) on http://%s:%d  "
               "(/v1/completions, /v1/chat/completions, /v1/models; Ctrl-C stops)\n",
               sf.model_name.c_str(), s.tokenizer->type().c_str(), static_cast<unsigned long long>(cf.weights_version),
               sf.host.c_str(), server.port());
  int sig = 0;
  sigwait(&sigs, &sig);
  std::fprintf(stderr, "lightrl serve: signal %d, stopping\n", sig);
  server.Stop();
  return 0;
}

}  // namespace

void AddRolloutCommands(CLI::App& app, int* exit_code) {
  auto* gen = app.add_subcommand("generate", "prompts JSONL in, completions JSONL out (text, ids, log-probs)");
  static CommonFlags gen_common;
  static GenerateFlags g;
  AddCommonFlags(gen, &gen_common);
  gen->add_option("--prompts", g.prompts,
                  "JSONL, one object per line: {\"prompt\": text} | {\"messages\": [...]} | {\"prompt_ids\": [...]}, "
                  "optional id, system, seed, n, max_new_tokens")
      ->required();
  gen->add_option("--output", g.output, "completions JSONL ('-' = stdout), one line per sample")->required();
  gen->add_option("--samples,-n", g.samples, "samples per prompt")->check(CLI::PositiveNumber);
  gen->add_option("--max-new-tokens", g.max_new_tokens, "token budget per sample")->check(CLI::PositiveNumber);
  gen->add_option("--temperature", g.temperature, "0 = greedy");
  gen->add_option("--top-p", g.top_p, "nucleus mass in (0, 1]");
  gen->add_option("--top-k", g.top_k, "0 = off");
  gen->add_option("--seed", g.seed, "sampling seed (line i uses SampleSeed(seed, i) unless it gives its own)");
  gen->add_option("--stop", g.stop, "stop string (repeatable)");
  gen->add_flag("--ignore-eos", g.ignore_eos, "do not stop at the tokenizer's EOS / end-of-turn ids");
  gen->add_option("--early-truncation-window", g.early_window,
                  "M1 repetition truncation: stop after this many consecutive tokens with p > prob (0 = off)");
  gen->add_option("--early-truncation-prob", g.early_prob, "probability threshold of early truncation");
  gen->add_flag("--entropy", g.entropy, "also write per-token entropies");
  gen->add_flag("--raw", g.raw, "encode 'prompt' as is, without the chat template");
  gen->add_flag("--no-progress", g.no_progress, "no progress bar on stderr");
  gen->callback([exit_code] {
    try {
      *exit_code = RunGenerate(gen_common, g);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lightrl generate: %s\n", e.what());
      *exit_code = 1;
    }
  });

  auto* serve = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)");
  static CommonFlags serve_common;
  static ServeFlags sf;
  AddCommonFlags(serve, &serve_common);
  serve->add_option("--host", sf.host, "address to bind (default 127.0.0.1: local only)");
  serve->add_option("--port", sf.port, "TCP port (0 = any free port)");
  serve->add_option("--model-name", sf.model_name, "the model id clients send and /v1/models lists");
  serve->add_option("--default-max-tokens", sf.default_max_tokens, "max_tokens when a request gives none")
      ->check(CLI::PositiveNumber);
  serve->add_option("--http-threads", sf.http_threads, "HTTP worker threads (concurrent requests)")
      ->check(CLI::PositiveNumber);
  serve->callback([exit_code] {
    try {
      *exit_code = RunServe(serve_common, sf);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lightrl serve: %s\n", e.what());
      *exit_code = 1;
    }
  });
}

}  // namespace lightrl::app
