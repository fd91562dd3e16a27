// RewardWorker: owns the verifiers and scores batches of RewardRequests (rewards.md §1).
//
// Contract:
//   - Score() returns exactly one RewardResult per request, in request order, each carrying its
//     request's sample_id, and never throws.
//   - Rule verifiers (math, countdown, list, latin) run in forked checker processes under a hard
//     per-request wall-clock limit (checker_pool.h): a request that runs past `timeout_s` is
//     killed and gets RewardErrorKind::kTimeout; an exception inside a verifier is kInternal.
//   - "code" requests go to the sandboxed code executor's pool (reward/code), whose wall, CPU,
//     memory and output limits are enforced by cgroups and the host supervisor; a sandbox
//     failure is kSandboxError. The executor is created on the first code request (creating it
//     checks bubblewrap/cgroups, which machines without code tasks need not have); if that
//     fails, every code request gets kSandboxError with the reason.
//   - An unknown verifier name or an unparseable reference is an infrastructure error
//     (kInternal / kParseFail), never a 0.
//   - `deadline_s` > 0 bounds the whole call; what is not done by then is kTimeout. Rule
//     checkers still running are killed; code runs still in flight finish in the background
//     (each is bounded by the executor's wall limit) and their late results are dropped.
//
// The `reward.verifiers` block (all keys optional; errors name the key):
//   reward:
//     verifiers:
//       timeout_s: 10         # per-request hard limit for rule verifiers
//       processes: 2          # concurrent checker processes per Score() call
//       memory_mb: 2048       # address-space limit of a checker process (0 = none)
//       isolation: process    # process | none (none: no hard kill; debugging/benchmarks only)
//       math:      {correct_reward: 1, incorrect_reward: 0, no_answer_reward: 0, tail_chars: 4096,
//                   max_answer_chars: 512, fallback_last_number: false, float_rel_tol: 1e-6,
//                   require_plain_number: true}
//       countdown: {correct_reward: 1, incorrect_reward: 0, no_answer_reward: 0, tail_chars: 2048,
//                   max_answer_chars: 512}
//       list:      {... same keys as countdown}
//       latin:     {... same keys as countdown}
//       code:      {enabled: true, score_mode: fraction, correct_reward: 1, incorrect_reward: 0,
//                   language: python, require_code_block: true, max_code_kb: 64,
//                   executor: {...reward/code executor keys...}}
//     A verifier block may also be `false` to disable it (its requests then get kInternal
//     "verifier '<name>' is disabled").
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "core/protocol/messages.h"
#include "core/protocol/reward_types.h"
#include "core/status.h"
#include "reward/checker_pool.h"
#include "reward/code/code_verifier.h"
#include "reward/verifier.h"

namespace lightrl::reward {

struct RewardWorkerConfig {
  CheckerPoolOptions pool;
  bool isolate = true;
  std::map<std::string, std::shared_ptr<const Verifier>> rule_verifiers;  // by name
  bool code_enabled = true;
  code::CodeVerifierConfig code;
};
// Parses the block described above. Throws ConfigError naming the key.
RewardWorkerConfig ParseRewardWorkerConfig(const YAML::Node& node, const std::string& path);

class RewardWorker {
 public:
  // `config`: the `reward.verifiers` YAML (may be null/undefined = defaults); errors name the key.
  static StatusOr<std::unique_ptr<RewardWorker>> Create(const YAML::Node& config,
                                                        const std::string& path = "reward.verifiers");
  static StatusOr<std::unique_ptr<RewardWorker>> Create(RewardWorkerConfig config);

  // Exactly one result per request, in request order, each with the request's sample_id;
  // per-request wall-clock limit; never throws (exceptions inside a verifier ->
  // RewardErrorKind::kInternal).
  std::vector<RewardResult> Score(const std::vector<protocol::RewardRequest>& requests, double deadline_s = 0);
  std::vector<std::string> VerifierNames() const;

  // Offline gold validation (M1 keeps only samples whose gold the rule checker can parse):
  // OK when `verifier` exists and accepts `reference_json`, else InvalidArgument with the
  // verifier's reason. Rule verifiers run inline here (references are trusted data); "code"
  // references are checked by the executor's task parser without running anything.
  Status ValidateReference(const std::string& verifier, const std::string& reference_json) const;

  const RewardWorkerConfig& config() const { return config_; }
  ~RewardWorker();  // waits for code executions still running after a deadline

 private:
  struct CodeCall {
    std::vector<protocol::RewardRequest> requests;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::vector<RewardResult> results;
  };
  explicit RewardWorker(RewardWorkerConfig c) : config_(std::move(c)) {}
  void ReapFinishedCodeThreads();
  std::vector<RewardResult> ScoreRules(const std::vector<protocol::RewardRequest>& requests,
                                       const std::vector<size_t>& idx, double deadline_s);
  std::vector<RewardResult> ScoreCode(const std::vector<protocol::RewardRequest>& requests,
                                      const std::vector<size_t>& idx);
  code::CodeVerifier* CodeVerifierOrNull(std::string* error);

  RewardWorkerConfig config_;
  std::mutex code_mu_;
  std::unique_ptr<code::CodeVerifier> code_;
  std::string code_error_;  // why the code verifier could not be created (sticky)
  std::mutex threads_mu_;
  std::vector<std::pair<std::thread, std::shared_ptr<CodeCall>>> code_threads_;
};

// Per-batch monitoring (rewards.md §1 item 4): per verifier, how many results were scored, how
// many were masked by each error kind, and the mean score; `all_zero` flags a batch whose scored
// results are all 0 (the silent-zero failure of verl PR #5635 / slime PR #2219).
struct VerifierBatchStats {
  int64_t requests = 0;
  int64_t scored = 0;
  std::map<std::string, int64_t> errors;  // RewardErrorKindName -> count
  double mean_score = 0;
  bool all_zero = false;  // scored > 0 and every score == 0
};
std::map<std::string, VerifierBatchStats> SummarizeBatch(const std::vector<protocol::RewardRequest>& requests,
                                                         const std::vector<RewardResult>& results);
// Logs a warning per verifier with an all-zero batch or more than `max_error_share` masked.
void LogBatchWarnings(const std::map<std::string, VerifierBatchStats>& stats, double max_error_share = 0.1);

}  // namespace lightrl::reward
