#include "reward/reward_worker.h"

#include <chrono>
#include <condition_variable>
#include <thread>

#include "core/check.h"
#include "core/logging.h"
#include "reward/math/math_verifier.h"
#include "reward/synthetic_verifiers.h"

namespace lightrl::reward {
namespace {

// A verifier block: a map, null/absent (defaults) or `false` (disabled).
bool BlockEnabled(ConfigReader& top, const std::string& key, YAML::Node* block) {
  top.MarkUsed(key);
  YAML::Node n;
  if (top.node().IsMap() && top.node()[key]) n = top.node()[key];
  if (n.IsDefined() && n.IsScalar()) {
    std::string v = n.Scalar();
    if (v == "false") return false;
    if (v == "true") { *block = YAML::Node(); return true; }
    top.Fail(key, "expected a map, true or false");
  }
  if (n.IsDefined() && !n.IsNull() && !n.IsMap()) top.Fail(key, "expected a map, true or false");
  *block = n;
  return true;
}

}  // namespace

RewardWorkerConfig ParseRewardWorkerConfig(const YAML::Node& node, const std::string& path) {
  ConfigReader r(node, path);
  RewardWorkerConfig c;
  c.pool.timeout_s = r.Get<double>("timeout_s", c.pool.timeout_s);
  if (!(c.pool.timeout_s > 0 && c.pool.timeout_s <= 3600)) r.Fail("timeout_s", "expected 0 < x <= 3600 seconds");
  c.pool.processes = r.Get<int>("processes", c.pool.processes);
  if (c.pool.processes < 1 || c.pool.processes > 256) r.Fail("processes", "expected 1..256");
  int64_t mb = r.Get<int64_t>("memory_mb", c.pool.memory_bytes >> 20);
  if (mb < 0) r.Fail("memory_mb", "expected >= 0 (0 = no limit)");
  if (mb > 0 && mb < 64) r.Fail("memory_mb", "expected >= 64 (a checker process needs room for its own code)");
  c.pool.memory_bytes = mb << 20;
  std::string iso = r.Get<std::string>("isolation", "process");
  if (iso == "process") c.isolate = true;
  else if (iso == "none") c.isolate = false;
  else r.Fail("isolation", "expected process or none, got '" + iso + "'");

  YAML::Node b;
  if (BlockEnabled(r, "math", &b)) {
    ConfigReader m(b, r.Path("math"));
    c.rule_verifiers["math"] = std::make_shared<MathVerifier>(ParseMathVerifierConfig(m));
    m.Finish();
  }
  for (const char* name : {"countdown", "list", "latin"}) {
    if (!BlockEnabled(r, name, &b)) continue;
    ConfigReader s(b, r.Path(name));
    SyntheticVerifierConfig sc = ParseSyntheticVerifierConfig(s);
    s.Finish();
    std::string n(name);
    if (n == "countdown") c.rule_verifiers[n] = std::make_shared<CountdownVerifier>(sc);
    else if (n == "list") c.rule_verifiers[n] = std::make_shared<ListVerifier>(sc);
    else c.rule_verifiers[n] = std::make_shared<LatinVerifier>(sc);
  }
  c.code_enabled = BlockEnabled(r, "code", &b);
  if (c.code_enabled) {
    ConfigReader cr(b, r.Path("code"));
    c.code_enabled = cr.Get<bool>("enabled", true);
    c.code = code::ParseCodeVerifierConfig(cr);
    cr.Finish();
  }
  r.Finish();
  return c;
}

StatusOr<std::unique_ptr<RewardWorker>> RewardWorker::Create(const YAML::Node& config, const std::string& path) {
  auto parsed = ParseConfig<RewardWorkerConfig>([&]() { return ParseRewardWorkerConfig(config, path); });
  if (!parsed.ok()) return parsed.status();
  return Create(std::move(parsed).value());
}

StatusOr<std::unique_ptr<RewardWorker>> RewardWorker::Create(RewardWorkerConfig config) {
  return std::unique_ptr<RewardWorker>(new RewardWorker(std::move(config)));
}

std::vector<std::string> RewardWorker::VerifierNames() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : config_.rule_verifiers) names.push_back(n);
  if (config_.code_enabled) names.push_back("code");
  std::sort(names.begin(), names.end());
  return names;
}

code::CodeVerifier* RewardWorker::CodeVerifierOrNull(std::string* error) {
  std::lock_guard<std::mutex> lock(code_mu_);
  if (code_) return code_.get();
  if (!code_error_.empty()) {
    *error = code_error_;
    return nullptr;
  }
  auto v = code::CodeVerifier::Create(config_.code);
  if (!v.ok()) {
    code_error_ = "code executor unavailable: " + v.status().ToString();
    Logger("reward")->error("{}", code_error_);
    *error = code_error_;
    return nullptr;
  }
  code_ = std::move(v).value();
  return code_.get();
}

std::vector<RewardResult> RewardWorker::ScoreRules(const std::vector<protocol::RewardRequest>& requests,
                                                   const std::vector<size_t>& idx, double deadline_s) {
  std::vector<uint64_t> ids;
  std::vector<const Verifier*> vs;
  for (size_t i : idx) {
    ids.push_back(requests[i].sample_id);
    vs.push_back(config_.rule_verifiers.at(requests[i].verifier).get());
  }
  auto fn = [&](size_t k) { return vs[k]->Verify(requests[idx[k]]); };
  if (!config_.isolate) return RunInline(ids, fn);
  return RunIsolated(ids, fn, config_.pool, deadline_s);
}

std::vector<RewardResult> RewardWorker::ScoreCode(const std::vector<protocol::RewardRequest>& requests,
                                                  const std::vector<size_t>& idx) {
  std::vector<RewardResult> out;
  std::string err;
  code::CodeVerifier* cv = CodeVerifierOrNull(&err);
  if (!cv) {
    for (size_t i : idx) out.push_back(RewardResult::Failed(requests[i].sample_id, RewardErrorKind::kSandboxError, err));
    return out;
  }
  std::vector<code::CodeVerifier::Sample> samples;
  std::vector<std::optional<RewardResult>> early(idx.size());
  std::vector<size_t> batch_pos;
  for (size_t k = 0; k < idx.size(); ++k) {
    const auto& q = requests[idx[k]];
    auto j = nlohmann::json::parse(q.reference_json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      early[k] = RewardResult::Failed(q.sample_id, RewardErrorKind::kParseFail,
                                      "task " + q.task_id + ": unparseable reference: expected a JSON object");
      continue;
    }
    batch_pos.push_back(k);
    samples.push_back({q.sample_id, std::move(j), q.response_text});
  }
  std::vector<RewardResult> got = cv->VerifyBatch(samples);
  for (size_t m = 0; m < batch_pos.size() && m < got.size(); ++m) early[batch_pos[m]] = std::move(got[m]);
  for (size_t k = 0; k < idx.size(); ++k) {
    out.push_back(early[k] ? std::move(*early[k])
                           : RewardResult::Failed(requests[idx[k]].sample_id, RewardErrorKind::kInternal,
                                                  "code verifier returned no result"));
  }
  return out;
}

std::vector<RewardResult> RewardWorker::Score(const std::vector<protocol::RewardRequest>& requests, double deadline_s) {
  std::vector<std::optional<RewardResult>> res(requests.size());
  try {
    std::vector<size_t> rules, code_idx;
    for (size_t i = 0; i < requests.size(); ++i) {
      const auto& q = requests[i];
      if (config_.rule_verifiers.count(q.verifier)) {
        rules.push_back(i);
      } else if (q.verifier == "code" && config_.code_enabled) {
        code_idx.push_back(i);
      } else {
        std::string why = q.verifier == "code" || q.verifier == "math" || q.verifier == "countdown" ||
                                  q.verifier == "list" || q.verifier == "latin"
                              ? "verifier '" + q.verifier + "' is disabled in the config"
                              : "no verifier named '" + q.verifier + "'";
        res[i] = RewardResult::Failed(q.sample_id, RewardErrorKind::kInternal, "task " + q.task_id + ": " + why);
      }
    }
    // Code requests run on their own thread (the executor pool does the work); the state is
    // shared so that a call that gives up at its deadline can return while the thread finishes
    // (each sandbox run is bounded by the executor's own wall limit) and is joined later.
    auto t0 = std::chrono::steady_clock::now();
    auto code_state = std::make_shared<CodeCall>();
    if (!code_idx.empty()) {
      for (size_t i : code_idx) code_state->requests.push_back(requests[i]);
      std::lock_guard<std::mutex> lock(threads_mu_);
      code_threads_.emplace_back(std::thread([this, code_state]() {
        std::vector<size_t> all(code_state->requests.size());
        for (size_t k = 0; k < all.size(); ++k) all[k] = k;
        std::vector<RewardResult> r;
        try {
          r = ScoreCode(code_state->requests, all);
        } catch (const std::exception& e) {
          for (const auto& q : code_state->requests) {
            r.push_back(RewardResult::Failed(q.sample_id, RewardErrorKind::kInternal, std::string("code verifier: ") + e.what()));
          }
        }
        std::lock_guard<std::mutex> l(code_state->mu);
        code_state->results = std::move(r);
        code_state->done = true;
        code_state->cv.notify_all();
      }), code_state);
    }
    if (!rules.empty()) {
      auto r = ScoreRules(requests, rules, deadline_s);
      for (size_t k = 0; k < rules.size(); ++k) res[rules[k]] = std::move(r[k]);
    }
    if (!code_idx.empty()) {
      std::unique_lock<std::mutex> l(code_state->mu);
      if (deadline_s > 0) {
        code_state->cv.wait_until(l, t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               std::chrono::duration<double>(deadline_s)),
                                  [&] { return code_state->done; });
      } else {
        code_state->cv.wait(l, [&] { return code_state->done; });
      }
      for (size_t k = 0; k < code_idx.size(); ++k) {
        if (code_state->done && k < code_state->results.size()) {
          res[code_idx[k]] = code_state->results[k];
        } else {
          res[code_idx[k]] = RewardResult::Failed(requests[code_idx[k]].sample_id, RewardErrorKind::kTimeout,
                                                  StrCat("reward batch deadline of ", deadline_s,
                                                         " s passed before the code executor finished"));
        }
      }
    }
    ReapFinishedCodeThreads();
  } catch (const std::exception& e) {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!res[i]) res[i] = RewardResult::Failed(requests[i].sample_id, RewardErrorKind::kInternal,
                                                 std::string("reward worker: ") + e.what());
    }
  }
  std::vector<RewardResult> out;
  out.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    RewardResult r = res[i] ? std::move(*res[i])
                            : RewardResult::Failed(requests[i].sample_id, RewardErrorKind::kInternal, "no result");
    r.sample_id = requests[i].sample_id;  // the contract: never trust a verifier with the id
    out.push_back(std::move(r));
  }
  return out;
}

RewardWorker::~RewardWorker() {
  std::lock_guard<std::mutex> lock(threads_mu_);
  for (auto& [t, state] : code_threads_) if (t.joinable()) t.join();
}

void RewardWorker::ReapFinishedCodeThreads() {
  // Join the code threads that have finished (this call's, and late ones of earlier calls).
  std::lock_guard<std::mutex> lock(threads_mu_);
  for (auto it = code_threads_.begin(); it != code_threads_.end();) {
    bool done;
    {
      std::lock_guard<std::mutex> l(it->second->mu);
      done = it->second->done;
    }
    if (done) {
      if (it->first.joinable()) it->first.join();
      it = code_threads_.erase(it);
    } else {
      ++it;
    }
  }
}

Status RewardWorker::ValidateReference(const std::string& verifier, const std::string& reference_json) const {
  if (verifier == "code") {
    if (!config_.code_enabled) return InvalidArgument("verifier 'code' is disabled in the config");
    auto j = nlohmann::json::parse(reference_json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return InvalidArgument("code reference: expected a JSON object");
    auto t = code::ParseCodeTask(j, config_.code.default_language);
    if (!t.ok()) return InvalidArgument("code reference: " + t.status().message());
    return Status::Ok();
  }
  auto it = config_.rule_verifiers.find(verifier);
  if (it == config_.rule_verifiers.end()) return InvalidArgument("no enabled verifier named '" + verifier + "'");
  protocol::RewardRequest q;
  q.task_id = "<validate>";
  q.verifier = verifier;
  q.reference_json = reference_json;
  RewardResult r = RunInline({0}, [&](size_t) { return it->second->Verify(q); })[0];
  if (!r.ok()) return InvalidArgument(std::string(RewardErrorKindName(r.error().kind)) + ": " + r.error().message);
  return Status::Ok();
}

std::map<std::string, VerifierBatchStats> SummarizeBatch(const std::vector<protocol::RewardRequest>& requests,
                                                         const std::vector<RewardResult>& results) {
  LR_CHECK(requests.size() == results.size(), "SummarizeBatch: ", requests.size(), " requests but ",
           results.size(), " results");
  std::map<std::string, VerifierBatchStats> out;
  std::map<std::string, double> sum;
  std::map<std::string, bool> nonzero;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto& st = out[requests[i].verifier];
    ++st.requests;
    if (results[i].ok()) {
      ++st.scored;
      sum[requests[i].verifier] += results[i].score().value;
      if (results[i].score().value != 0) nonzero[requests[i].verifier] = true;
    } else {
      ++st.errors[RewardErrorKindName(results[i].error().kind)];
    }
  }
  for (auto& [name, st] : out) {
    st.mean_score = st.scored ? sum[name] / static_cast<double>(st.scored) : 0.0;
    st.all_zero = st.scored > 0 && !nonzero[name];
  }
  return out;
}

void LogBatchWarnings(const std::map<std::string, VerifierBatchStats>& stats, double max_error_share) {
  for (const auto& [name, st] : stats) {
    int64_t errors = st.requests - st.scored;
    if (st.all_zero && st.scored >= 8) {
      Logger("reward")->warn("verifier '{}': all {} scored rewards in this batch are 0", name, st.scored);
    }
    if (st.requests > 0 && static_cast<double>(errors) > max_error_share * static_cast<double>(st.requests)) {
      std::string kinds;
      for (const auto& [k, n] : st.errors) kinds += (kinds.empty() ? "" : ", ") + k + "=" + std::to_string(n);
      Logger("reward")->warn("verifier '{}': {} of {} results masked by infrastructure errors ({})", name, errors,
                             st.requests, kinds);
    }
  }
}

}  // namespace lightrl::reward
