#include "rollout/engine.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/check.h"

namespace lightrl::rollout {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kMaxTokens: return "max_tokens";
    case FinishReason::kRepetition: return "repetition";
    case FinishReason::kAborted: return "aborted";
  }
  return "unknown";
}

Status ValidateRequest(const Request& r, const model::ModelConfig& config, const EngineOptions& options,
                       const std::string& path) {
  const int64_t V = config.vocab_size;
  if (r.prompt_ids.empty()) return InvalidArgument(path + ".prompt_ids: must not be empty");
  for (size_t i = 0; i < r.prompt_ids.size(); ++i) {
    const int64_t id = r.prompt_ids[i];
    if (id < 0 || id >= V) {
      return InvalidArgument(StrCat(path, ".prompt_ids[", i, "]: id ", id, " out of range [0, ", V, ")"));
    }
  }
  if (r.num_samples < 1) return InvalidArgument(StrCat(path, ".num_samples: must be >= 1, got ", r.num_samples));
  if (!r.sample_seeds.empty() && static_cast<int64_t>(r.sample_seeds.size()) != r.num_samples) {
    return InvalidArgument(StrCat(path, ".sample_seeds: has ", r.sample_seeds.size(), " entries, expected num_samples = ",
                                  r.num_samples, " (or none)"));
  }
  LR_RETURN_IF_ERROR(ValidateSamplingParams(r.params, path + ".params"));
  for (size_t i = 0; i < r.params.stop_token_ids.size(); ++i) {
    const int64_t id = r.params.stop_token_ids[i];
    if (id >= V) {
      return InvalidArgument(
          StrCat(path, ".params.stop_token_ids[", i, "]: id ", id, " out of range [0, ", V, ")"));
    }
  }
  if (!r.params.stop_strings.empty() && !options.detokenize) {
    return InvalidArgument(path + ".params.stop_strings: stop strings need a tokenizer to decode text, and this "
                                  "engine has none (EngineOptions::detokenize)");
  }
  const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_new_tokens;
  if (total > config.max_position_embeddings) {
    return InvalidArgument(StrCat(path, ".params.max_new_tokens: prompt (", r.prompt_ids.size(), ") + ",
                                  r.params.max_new_tokens, " new tokens exceeds the model's max_position_embeddings ",
                                  config.max_position_embeddings));
  }
  return Status::Ok();
}

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct RequestState {
  Request request;
  Engine::DoneFn done;
  std::vector<Completion> completions;  // [num_samples]
  int admitted = 0;                     // samples given a slot (or finished at their first token)
  int finished = 0;
  std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();
  double prefill_seconds = 0;           // the shared prefill's time (share_prefill)
  // Shared prefill (share_prefill): the B = 1 cache after the prompt and the logits [1, V] fp32
  // CPU for the first generated token. Released once every sample is admitted.
  bool prefilled = false;
  model::ModelCache prefill_cache;
  torch::Tensor prefill_logits;
};

struct Row {
  std::shared_ptr<RequestState> req;
  SampleRng rng;
  Completion out;
  int high_prob_run = 0;  // consecutive tokens with p > repetition_prob
  bool live = true;
  std::chrono::steady_clock::time_point admitted = std::chrono::steady_clock::now();
  Row(std::shared_ptr<RequestState> r, int k)
      : req(std::move(r)),
        rng(req->request.sample_seeds.empty() ? req->request.seed : req->request.sample_seeds[k],
            req->request.sample_seeds.empty() ? static_cast<uint64_t>(k) : 0) {
    out.request_id = req->request.request_id;
    out.sample_index = k;
    out.queue_seconds = std::chrono::duration<double>(admitted - req->submitted).count();
  }
};

// Rows per thread below which sampling stays on the calling thread.
constexpr int64_t kSampleRowsPerThread = 8;

// Longest stop string in bytes (0 if none).
size_t MaxStopBytes(const SamplingParams& p) {
  size_t n = 0;
  for (const auto& s : p.stop_strings) n = std::max(n, s.size());
  return n;
}

}  // namespace

struct Engine::Impl {
  model::HybridModel model;
  EngineOptions options;
  torch::Device device{torch::kCPU};
  int64_t vocab = 0;

  // state_mutex guards queue, in_flight and stats; step_mutex serialises Step and the weight
  // copy of SetWeights (the users of the model and of the caches below).
  mutable std::mutex state_mutex;
  std::mutex step_mutex;
  std::deque<std::shared_ptr<RequestState>> queue;  // requests with samples not yet admitted
  int64_t in_flight = 0;                            // submitted and not yet delivered
  EngineStats stats;
  std::atomic<bool> abort_requested{false};
  std::atomic<uint64_t> version{0};

  // Owned by the thread inside Step.
  std::vector<Row> rows;                      // live and finished-not-yet-replaced slots
  model::ModelCache cache;                    // batched mode: cache row i <-> rows[i]
  std::vector<model::ModelCache> row_caches;  // batch_invariant mode: one B = 1 cache per row

  Impl(model::HybridModel m, EngineOptions o) : model(std::move(m)), options(std::move(o)) {
    LR_CHECK(options.max_slots >= 1, "EngineOptions.max_slots: must be >= 1, got ", options.max_slots);
    LR_CHECK(model->head_type() == model::HeadType::kLanguageModel,
             "rollout::Engine: the model needs an LM head (HeadType::kLanguageModel)");
    device = model->lm_head->weight.device();
    vocab = model->config().vocab_size;
    model->eval();
  }

  // ---- model calls ---------------------------------------------------------------------------

  // Prefills `prompt` with B = 1 into a fresh cache; returns the next-token logits [1, V] fp32 CPU.
  torch::Tensor Prefill(const std::vector<int64_t>& prompt, model::ModelCache* c, double* seconds) {
    auto t0 = Clock::now();
    torch::Tensor ids = torch::tensor(prompt, torch::kLong).view({1, -1}).to(device);  // [1, P]
    model::ForwardOptions fo;
    fo.last_position_only = true;
    torch::Tensor logits = model->forward(ids, {}, c, fo).logits.reshape({1, vocab});
    logits = logits.to(torch::kCPU, torch::kFloat32).contiguous();
    std::lock_guard<std::mutex> lock(state_mutex);
    stats.prefills++;
    stats.prefill_tokens += static_cast<int64_t>(prompt.size());
    *seconds = Since(t0);
    stats.prefill_seconds += *seconds;
    return logits;
  }

  // One decode step over every row; returns logits [B, V] fp32 CPU.
  torch::Tensor Decode() {
    auto t0 = Clock::now();
    const int64_t B = static_cast<int64_t>(rows.size());
    std::vector<int64_t> last(B);
    for (int64_t b = 0; b < B; ++b) last[b] = rows[b].out.token_ids.back();
    torch::Tensor ids = torch::tensor(last, torch::kLong).view({B, 1}).to(device);  // [B, 1]
    model::ForwardOptions fo;
    fo.last_position_only = true;
    torch::Tensor logits;
    if (options.batch_invariant) {
      std::vector<torch::Tensor> parts;
      for (int64_t b = 0; b < B; ++b) {
        parts.push_back(model->forward(ids.narrow(0, b, 1), {}, &row_caches[b], fo).logits.reshape({1, vocab}));
      }
      logits = torch::cat(parts, 0);
    } else {
      logits = model->forward(ids, {}, &cache, fo).logits.reshape({B, vocab});
    }
    logits = logits.to(torch::kCPU, torch::kFloat32).contiguous();
    std::lock_guard<std::mutex> lock(state_mutex);
    stats.decode_steps++;
    stats.decode_rows += B;
    stats.peak_rows = std::max(stats.peak_rows, B);
    stats.decode_seconds += Since(t0);
    return logits;
  }

  // Recomputes c's log-probs (and entropies) with the training forward (LogProbSource::kForward).
  void Rescore(Completion* c, const Request& r) {
    const int64_t P = static_cast<int64_t>(r.prompt_ids.size()), n = static_cast<int64_t>(c->token_ids.size());
    if (n == 0) return;
    auto t0 = Clock::now();
    std::vector<int64_t> all = r.prompt_ids;
    all.insert(all.end(), c->token_ids.begin(), c->token_ids.end());
    torch::Tensor ids = torch::tensor(all, torch::kLong).view({1, -1}).to(device);  // [1, P + n]
    torch::Tensor logits = model->forward(ids).logits.narrow(1, P - 1, n);          // [1, n, V]
    torch::Tensor targets = torch::tensor(c->token_ids, torch::kLong).view({1, n}).to(logits.device());
    const double T = r.params.temperature > 0 ? r.params.temperature : 1.0;
    torch::Tensor lp = model::TokenLogProbs(logits, targets, T).reshape({-1}).to(torch::kCPU).contiguous();
    c->logprobs.assign(lp.data_ptr<float>(), lp.data_ptr<float>() + n);
    if (r.params.return_entropy) {
      torch::Tensor h = model::TokenEntropy(logits, T).reshape({-1}).to(torch::kCPU).contiguous();
      c->entropies.assign(h.data_ptr<float>(), h.data_ptr<float>() + n);
    }
    std::lock_guard<std::mutex> lock(state_mutex);
    stats.rescore_seconds += Since(t0);
  }

  // ---- sampling, scoring, stops ----------------------------------------------------------------

  // Samples one token for each of `targets` from logits [n, V] fp32 CPU (row i for targets[i]),
  // appends it with its log-prob (and entropy), and applies the stop rules. Rows that stop get
  // live = false and their finish reason.
  void SampleAndAppend(const torch::Tensor& logits, const std::vector<Row*>& targets) {
    const int64_t n = static_cast<int64_t>(targets.size());
    LR_CHECK(logits.dim() == 2 && logits.size(0) == n && logits.size(1) == vocab, "Engine: logits ", logits.sizes(),
             " for ", n, " rows");
    const float* base = logits.data_ptr<float>();
    std::vector<int64_t> tokens(n);
    std::vector<float> logprob(n), entropy(n, 0.f);
    // Rows are independent (each draws from its own RNG and is reduced on its own), so each
    // thread samples a range of rows and then scores them with the trainer's functions, grouped
    // by temperature: the libtorch ops' fixed cost overlaps across the threads.
    at::parallel_for(0, n, kSampleRowsPerThread, [&](int64_t begin, int64_t end) {
      torch::NoGradGuard no_grad;
      for (int64_t i = begin; i < end; ++i) {
        const SamplingParams& p = targets[i]->req->request.params;
        const double u = p.temperature > 0 ? targets[i]->rng.Uniform() : 0.0;
        tokens[i] = SampleToken(base + i * vocab, vocab, p, u);
      }
      ScoreRows(logits, tokens, targets, begin, end, &logprob, &entropy);
    });
    for (int64_t i = 0; i < n; ++i) {
      Row& row = *targets[i];
      row.out.token_ids.push_back(tokens[i]);
      row.out.logprobs.push_back(logprob[i]);
      if (row.req->request.params.return_entropy) row.out.entropies.push_back(entropy[i]);
      ApplyStops(&row);
    }
    std::lock_guard<std::mutex> lock(state_mutex);
    stats.generated_tokens += n;
  }

  // Log-probs (and entropies where asked) of the sampled tokens of rows [begin, end) with
  // model::TokenLogProbs / TokenEntropy, one call per temperature among those rows. A row's value
  // does not depend on which other rows share its call (each is reduced on its own).
  static void ScoreRows(const torch::Tensor& logits, const std::vector<int64_t>& tokens,
                        const std::vector<Row*>& targets, int64_t begin, int64_t end, std::vector<float>* logprob,
                        std::vector<float>* entropy) {
    std::map<double, std::vector<int64_t>> groups;
    for (int64_t i = begin; i < end; ++i) {
      const double t = targets[i]->req->request.params.temperature;
      groups[t > 0 ? t : 1.0].push_back(i);
    }
    const int64_t m = end - begin;
    const torch::Tensor range_logits = logits.narrow(0, begin, m).unsqueeze(1);  // [m, 1, V]
    const torch::Tensor range_targets =
        torch::from_blob(const_cast<int64_t*>(tokens.data()) + begin, {m, 1}, torch::kLong);  // [m, 1], read only
    for (auto& [T, members] : groups) {
      torch::Tensor lg = range_logits, tg = range_targets;
      if (static_cast<int64_t>(members.size()) != m) {
        std::vector<int64_t> local(members.size());
        for (size_t j = 0; j < members.size(); ++j) local[j] = members[j] - begin;
        const torch::Tensor idx = torch::tensor(local, torch::kLong);
        lg = lg.index_select(0, idx);
        tg = tg.index_select(0, idx);
      }
      const torch::Tensor lp = model::TokenLogProbs(lg, tg, T).reshape({-1}).contiguous();
      bool want_entropy = false;
      for (int64_t i : members) want_entropy |= targets[i]->req->request.params.return_entropy;
      torch::Tensor h;
      if (want_entropy) h = model::TokenEntropy(lg, T).reshape({-1}).contiguous();
      const float* lpv = lp.data_ptr<float>();
      const float* hv = want_entropy ? h.data_ptr<float>() : nullptr;
      for (size_t j = 0; j < members.size(); ++j) {
        (*logprob)[members[j]] = lpv[j];
        if (hv != nullptr) (*entropy)[members[j]] = hv[j];
      }
    }
  }

  void ApplyStops(Row* row) {
    const SamplingParams& p = row->req->request.params;
    const std::vector<int64_t>& toks = row->out.token_ids;
    const int64_t tok = toks.back();
    const float lp = row->out.logprobs.back();
    // The repetition run is updated on every token, whatever else stops the sequence.
    if (p.repetition_truncation) {
      row->high_prob_run = std::exp(static_cast<double>(lp)) > p.repetition_prob ? row->high_prob_run + 1 : 0;
    }
    auto stop = [&](FinishReason r) {
      row->out.finish_reason = r;
      row->live = false;
    };
    if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), tok) != p.stop_token_ids.end()) {
      return stop(FinishReason::kEos);
    }
    if (!p.stop_strings.empty()) {
      const size_t window = std::min(toks.size(), 2 * MaxStopBytes(p) + 16);
      const std::string text = options.detokenize(std::vector<int64_t>(toks.end() - window, toks.end()));
      for (const auto& s : p.stop_strings) {
        if (text.find(s) != std::string::npos) return stop(FinishReason::kStopString);
      }
    }
    if (p.repetition_truncation && row->high_prob_run >= p.repetition_window) return stop(FinishReason::kRepetition);
    if (static_cast<int64_t>(toks.size()) >= p.max_new_tokens) return stop(FinishReason::kMaxTokens);
  }

  // Delivers a finished sample (row->live == false).
  void Finish(Row* row) {
    RequestState& r = *row->req;
    Completion c = std::move(row->out);
    c.weights_version = version.load();
    c.decode_seconds = Since(row->admitted);
    if (options.logprob_source == LogProbSource::kForward) Rescore(&c, r.request);
    Deliver(row->req, std::move(c));
  }

  void Deliver(const std::shared_ptr<RequestState>& req, Completion c) {
    RequestState& r = *req;
    const int k = c.sample_index;
    if (options.on_completion) options.on_completion(c);
    r.completions[k] = std::move(c);
    r.finished++;
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      stats.completed++;
    }
    if (r.finished == r.request.num_samples) {
      if (r.done) r.done(std::move(r.completions));
      std::lock_guard<std::mutex> lock(state_mutex);
      in_flight--;
    }
  }

  // ---- slots -----------------------------------------------------------------------------------

  int LiveRows() const {
    int n = 0;
    for (const Row& r : rows) n += r.live ? 1 : 0;
    return n;
  }

  // Drops finished rows from `rows` and the caches.
  void Compact() {
    std::vector<int64_t> keep;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].live) keep.push_back(static_cast<int64_t>(i));
    }
    if (keep.size() == rows.size()) return;
    std::vector<Row> kept_rows;
    std::vector<model::ModelCache> kept_caches;
    for (int64_t i : keep) {
      kept_rows.push_back(std::move(rows[i]));
      if (options.batch_invariant) kept_caches.push_back(std::move(row_caches[i]));
    }
    rows = std::move(kept_rows);
    if (options.batch_invariant) {
      row_caches = std::move(kept_caches);
    } else if (keep.empty()) {
      cache = model::ModelCache();
    } else {
      cache.SelectRows(torch::tensor(keep, torch::kLong));
    }
  }

  // Places new live rows whose cache state is row 0 of `src` (a B = 1 prefill cache) into free
  // slots (finished rows, overwritten in place) or appends them.
  void Place(std::vector<Row>* fresh, const model::ModelCache& src) {
    std::vector<int64_t> free_slots;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (!rows[i].live) free_slots.push_back(static_cast<int64_t>(i));
    }
    size_t reuse = std::min(free_slots.size(), fresh->size());
    for (size_t j = 0; j < reuse; ++j) rows[free_slots[j]] = std::move((*fresh)[j]);
    const int64_t append = static_cast<int64_t>(fresh->size() - reuse);
    for (size_t j = reuse; j < fresh->size(); ++j) rows.push_back(std::move((*fresh)[j]));
    if (options.batch_invariant) {
      auto copy = [&] {
        model::ModelCache c = src;
        c.SelectRows(torch::zeros({1}, torch::kLong));  // fresh tensors
        return c;
      };
      for (size_t j = 0; j < reuse; ++j) row_caches[free_slots[j]] = copy();
      for (int64_t j = 0; j < append; ++j) row_caches.push_back(copy());
      return;
    }
    if (reuse > 0) {
      std::vector<int64_t> dst(free_slots.begin(), free_slots.begin() + reuse);
      cache.CopyRowsFrom(src, torch::zeros({static_cast<int64_t>(reuse)}, torch::kLong), torch::tensor(dst, torch::kLong));
    }
    if (append > 0) {
      model::ModelCache extra = src;
      extra.SelectRows(torch::zeros({append}, torch::kLong));  // fresh tensors: the rows' own copies
      cache.AppendRows(std::move(extra));
    }
    fresh->clear();
  }

  // Admits waiting samples into free slots.
  void Admit() {
    int live = LiveRows();
    if (!options.continuous_batching && live > 0) {
      Compact();
      return;
    }
    while (live < options.max_slots) {
      std::shared_ptr<RequestState> r;
      {
        std::lock_guard<std::mutex> lock(state_mutex);
        if (queue.empty()) break;
        r = queue.front();
      }
      const Request& req = r->request;
      const int take = std::min(options.max_slots - live, req.num_samples - r->admitted);
      if (options.share_prefill) {
        if (!r->prefilled) {
          r->prefill_logits = Prefill(req.prompt_ids, &r->prefill_cache, &r->prefill_seconds);
          r->prefilled = true;
        }
        std::vector<Row> fresh;
        for (int j = 0; j < take; ++j) {
          fresh.emplace_back(r, r->admitted + j);
          fresh.back().out.prefill_seconds = r->prefill_seconds;
        }
        std::vector<Row*> ptrs;
        for (Row& row : fresh) ptrs.push_back(&row);
        SampleAndAppend(r->prefill_logits.expand({take, vocab}).contiguous(), ptrs);
        live += AdmitFresh(&fresh, r->prefill_cache);
      } else {
        for (int j = 0; j < take; ++j) {
          model::ModelCache own;
          double seconds = 0;
          torch::Tensor logits = Prefill(req.prompt_ids, &own, &seconds);
          std::vector<Row> fresh;
          fresh.emplace_back(r, r->admitted + j);
          fresh.back().out.prefill_seconds = seconds;
          SampleAndAppend(logits, {&fresh[0]});
          live += AdmitFresh(&fresh, own);
        }
      }
      r->admitted += take;
      if (r->admitted == req.num_samples) {
        r->prefill_cache = model::ModelCache();
        r->prefill_logits = torch::Tensor();
        std::lock_guard<std::mutex> lock(state_mutex);
        queue.pop_front();
      }
    }
    Compact();
  }

  // Delivers rows that stopped at their first token, places the others; returns how many.
  int AdmitFresh(std::vector<Row>* fresh, const model::ModelCache& src) {
    std::vector<Row> keep;
    for (Row& row : *fresh) {
      if (row.live) {
        keep.push_back(std::move(row));
      } else {
        Finish(&row);
      }
    }
    const int n = static_cast<int>(keep.size());
    if (n > 0) Place(&keep, src);
    return n;
  }

  // Finishes everything queued or running with kAborted.
  void AbortAll() {
    for (Row& row : rows) {
      if (!row.live) continue;
      row.live = false;
      row.out.finish_reason = FinishReason::kAborted;
      Finish(&row);
    }
    Compact();
    std::deque<std::shared_ptr<RequestState>> waiting;
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      waiting.swap(queue);
    }
    for (auto& r : waiting) {
      for (int k = r->admitted; k < r->request.num_samples; ++k) {
        Completion c;
        c.request_id = r->request.request_id;
        c.sample_index = k;
        c.finish_reason = FinishReason::kAborted;
        c.weights_version = version.load();
        Deliver(r, std::move(c));
      }
      r->admitted = r->request.num_samples;
    }
  }

  bool StepLocked() {
    if (abort_requested.exchange(false)) AbortAll();
    Admit();
    if (rows.empty()) return false;
    torch::Tensor logits = Decode();
    std::vector<Row*> all;
    for (Row& row : rows) all.push_back(&row);
    SampleAndAppend(logits, all);
    for (Row& row : rows) {
      if (!row.live) Finish(&row);
    }
    return true;
  }
};

Engine::Engine(model::HybridModel model, EngineOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options))) {}

Engine::~Engine() = default;

Status Engine::Submit(Request request, DoneFn done) {
  LR_RETURN_IF_ERROR(ValidateRequest(request, impl_->model->config(), impl_->options));
  auto r = std::make_shared<RequestState>();
  r->completions.resize(request.num_samples);
  r->request = std::move(request);
  r->done = std::move(done);
  std::lock_guard<std::mutex> lock(impl_->state_mutex);
  impl_->queue.push_back(std::move(r));
  impl_->in_flight++;
  return Status::Ok();
}

bool Engine::Step() {
  std::lock_guard<std::mutex> step(impl_->step_mutex);
  torch::NoGradGuard no_grad;
  try {
    return impl_->StepLocked();
  } catch (...) {
    // Leave no request hanging: everything in flight finishes as aborted, caches are dropped.
    try {
      impl_->AbortAll();
    } catch (...) {
      std::lock_guard<std::mutex> lock(impl_->state_mutex);  // callbacks may be dangling now
      impl_->queue.clear();
      impl_->in_flight = 0;
    }
    impl_->rows.clear();
    impl_->row_caches.clear();
    impl_->cache = model::ModelCache();
    throw;
  }
}

std::vector<Completion> Engine::Generate(const std::vector<Request>& requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    Status s = ValidateRequest(requests[i], impl_->model->config(), impl_->options, StrCat("requests[", i, "]"));
    LR_CHECK(s.ok(), "Engine::Generate: ", s.ToString());
  }
  std::vector<std::vector<Completion>> results(requests.size());
  std::atomic<size_t> remaining{requests.size()};
  for (size_t i = 0; i < requests.size(); ++i) {
    Status s = Submit(requests[i], [&results, &remaining, i](std::vector<Completion> c) {
      results[i] = std::move(c);
      remaining--;
    });
    LR_CHECK(s.ok(), "Engine::Generate: ", s.ToString());
  }
  while (remaining.load() > 0) {
    if (!Step()) std::this_thread::yield();  // another thread is driving our requests
  }
  std::vector<Completion> out;
  for (auto& group : results) {
    for (auto& c : group) out.push_back(std::move(c));
  }
  return out;
}

void Engine::Abort() { impl_->abort_requested = true; }

bool Engine::idle() const {
  std::lock_guard<std::mutex> lock(impl_->state_mutex);
  return impl_->in_flight == 0;
}

Status Engine::SetWeights(const model::NamedTensors& weights, uint64_t version) {
  auto busy = [this]() -> Status {
    std::lock_guard<std::mutex> lock(impl_->state_mutex);
    if (impl_->in_flight > 0) {
      return FailedPrecondition(StrCat("Engine::SetWeights: refused while a generation is in flight (",
                                       impl_->in_flight, " request(s) queued or running); retry when idle"));
    }
    return Status::Ok();
  };
  LR_RETURN_IF_ERROR(busy());  // before taking step_mutex: a callback inside Step gets an error, not a deadlock
  std::lock_guard<std::mutex> step(impl_->step_mutex);
  LR_RETURN_IF_ERROR(busy());
  auto params = impl_->model->named_parameters(/*recurse=*/true);
  std::set<std::string> known;
  for (const auto& item : params) {
    known.insert(item.key());
    auto it = weights.find(item.key());
    if (it == weights.end()) return InvalidArgument("Engine::SetWeights: missing tensor '" + item.key() + "'");
    if (!it->second.defined() || it->second.sizes() != item.value().sizes()) {
      return InvalidArgument(StrCat("Engine::SetWeights: tensor '", item.key(), "' has shape ",
                                    it->second.defined() ? it->second.sizes() : c10::IntArrayRef{},
                                    ", the model expects ", item.value().sizes()));
    }
  }
  for (const auto& [name, t] : weights) {
    if (!known.count(name)) return InvalidArgument("Engine::SetWeights: unexpected tensor '" + name + "'");
  }
  torch::NoGradGuard no_grad;
  for (auto& item : params) item.value().copy_(weights.at(item.key()));
  impl_->version = version;
  return Status::Ok();
}

void Engine::SetWeightsVersion(uint64_t version) { impl_->version = version; }
uint64_t Engine::weights_version() const { return impl_->version.load(); }
model::HybridModel& Engine::model() { return impl_->model; }
const EngineOptions& Engine::options() const { return impl_->options; }

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->state_mutex);
  return impl_->stats;
}

void Engine::ResetStats() {
  std::lock_guard<std::mutex> lock(impl_->state_mutex);
  impl_->stats = EngineStats();
}

}  // namespace lightrl::rollout
