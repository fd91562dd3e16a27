// The "math" verifier (rewards.md §2): extract the final answer, normalise, compare exactly.
//
// Reference JSON: {"answer": "72"} | {"answer": "\\frac{1}{2}"} | {"answers": ["2", "x=2"]}
// (any matches) | {"solution": "... \\boxed{72}"} (MATH style: the last box) | an "answer"
// holding a GSM8K solution ("... #### 72"). A reference that yields no parseable gold answer
// is a kParseFail error (masked), never a 0.
//
// Prediction extraction, in priority order, on the last `tail_chars` bytes of the response:
//   1. the last \boxed{} (brace matching; trailing boxes joined by "and"/"," form one answer);
//   2. the last answer anchor ("Answer:", "answer is", "final answer:"; display math after it);
//   3. "#### N";
//   4. the last non-empty line when it is a plain number ("42", "$42$.", "-3/4"), or the whole
//      response when it is a single line (a bare "42" or "x = 5");
//   5. only if `fallback_last_number`: the last number in the text not glued to a letter.
// An extracted answer longer than `max_answer_chars` scores as no answer.
//
// Config keys (`reward.verifiers.math`): correct_reward [1], incorrect_reward [0],
// no_answer_reward [0], tail_chars [4096], max_answer_chars [512], fallback_last_number
// [false], float_rel_tol [1e-6] (only when the gold is a decimal), require_plain_number [true].
#pragma once

#include <optional>
#include <string>

#include "reward/math/expr.h"
#include "reward/text_util.h"
#include "reward/verifier.h"

namespace lightrl::reward {

struct MathVerifierConfig {
  RewardValues values;
  size_t tail_chars = 4096;
  size_t max_answer_chars = 512;
  bool fallback_last_number = false;
  math::CompareOptions compare;
};
MathVerifierConfig ParseMathVerifierConfig(ConfigReader& r);

// Prediction extraction (steps 1-5 above) on an already clipped text.
std::optional<ExtractedAnswer> ExtractMathAnswer(std::string_view text, bool fallback_last_number);
// Gold answer strings from a reference object; empty + *error when there is none.
std::vector<std::string> GoldAnswers(const nlohmann::json& reference, std::string* error);

class MathVerifier : public Verifier {
 public:
  explicit MathVerifier(MathVerifierConfig config) : config_(std::move(config)) {}
  std::string name() const override { return "math"; }
  RewardResult Verify(const protocol::RewardRequest& request) const override;
  const MathVerifierConfig& config() const { return config_; }

 private:
  MathVerifierConfig config_;
};

}  // namespace lightrl::reward
