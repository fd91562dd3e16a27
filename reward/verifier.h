// The verifier interface and shared reward-value config (rewards.md §1).
//
// A verifier maps one request (task reference + model response) to exactly one RewardResult:
// a Score (value, verdict, detail_json) for anything the model did, or a RewardError for an
// infrastructure failure (unparseable reference -> kParseFail, ...), which the trainer masks.
// Verify() is a pure function of the request and the verifier's config. It may throw; the
// RewardWorker turns an exception into kInternal (never into a score of 0) and runs every rule
// verifier under a hard wall-clock kill in a separate process (checker_pool.h).
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "core/config/config.h"
#include "core/protocol/messages.h"
#include "core/protocol/reward_types.h"

namespace lightrl::reward {

// Reward scale of one verifier (per-task config, rewards.md §1 item 7).
struct RewardValues {
  double correct = 1.0;
  double incorrect = 0.0;   // wrong answer
  double no_answer = 0.0;   // nothing extractable / malformed answer (format failure)
};
// Reads `correct_reward`, `incorrect_reward`, `no_answer_reward`.
RewardValues ParseRewardValues(ConfigReader& r);

class Verifier {
 public:
  virtual ~Verifier() = default;
  virtual std::string name() const = 0;
  virtual RewardResult Verify(const protocol::RewardRequest& request) const = 0;
};

// Helpers for verifier implementations.
RewardResult Correct(const protocol::RewardRequest& q, const RewardValues& v, nlohmann::json detail);
RewardResult Wrong(const protocol::RewardRequest& q, const RewardValues& v, nlohmann::json detail);
// No answer: verdict kTruncated when the response hit the length limit, else kNoAnswer.
RewardResult NoAnswer(const protocol::RewardRequest& q, const RewardValues& v, nlohmann::json detail);
RewardResult BadReference(const protocol::RewardRequest& q, const std::string& why);
// Parses request.reference_json as a JSON object (nullopt + *error on failure).
std::optional<nlohmann::json> ParseReference(const protocol::RewardRequest& q, std::string* error);
// Clips long strings for detail_json.
std::string Clip(const std::string& s, size_t max_bytes = 200);

}  // namespace lightrl::reward
