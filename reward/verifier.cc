#include "reward/verifier.h"

namespace lightrl::reward {

RewardValues ParseRewardValues(ConfigReader& r) {
  RewardValues v;
  v.correct = r.Get<double>("correct_reward", v.correct);
  v.incorrect = r.Get<double>("incorrect_reward", v.incorrect);
  v.no_answer = r.Get<double>("no_answer_reward", v.no_answer);
  return v;
}

std::string Clip(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

namespace {
std::string Dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }
}  // namespace

RewardResult Correct(const protocol::RewardRequest& q, const RewardValues& v, nlohmann::json detail) {
  return RewardResult::Scored(q.sample_id, v.correct, Verdict::kCorrect, Dump(detail));
}
RewardResult Wrong(const protocol::RewardRequest& q, const RewardValues& v, nlohmann::json detail) {
  return RewardResult::Scored(q.sample_id, v.incorrect, Verdict::kWrong, Dump(detail));
}
RewardResult NoAnswer(const protocol::RewardRequest& q, const RewardValues& v, nlohmann::json detail) {
  Verdict verdict = q.finish_reason == protocol::FinishReason::kLength ? Verdict::kTruncated : Verdict::kNoAnswer;
  return RewardResult::Scored(q.sample_id, v.no_answer, verdict, Dump(detail));
}
RewardResult BadReference(const protocol::RewardRequest& q, const std::string& why) {
  return RewardResult::Failed(q.sample_id, RewardErrorKind::kParseFail,
                              "task " + q.task_id + ": unparseable reference: " + why);
}

std::optional<nlohmann::json> ParseReference(const protocol::RewardRequest& q, std::string* error) {
  auto j = nlohmann::json::parse(q.reference_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) { *error = "reference_json is not valid JSON"; return std::nullopt; }
  if (!j.is_object()) { *error = "reference_json: expected an object"; return std::nullopt; }
  return j;
}

}  // namespace lightrl::reward
