// Verifiers for the generated tasks of envs/generators.h (rewards.md §3.3): strict parsers
// (never eval), exact arithmetic, constraint checks that accept any valid answer.
//
// The answer is taken from the last `tail_chars` bytes of the response: the last \boxed{}, else
// the text after the last "Answer:" anchor, else "#### ...", else the last non-empty line (so a
// bare "5+8" or "1 2 5 9" is an answer). Anything that does not parse under the task's grammar
// is a format failure (no_answer_reward, verdict kNoAnswer/kTruncated); a well-formed wrong
// answer is kWrong. There is no partial credit.
//
//   countdown  reference {"numbers": [ints], "target": int, "use_all": bool}
//              answer: an expression over non-negative integers with + - * / (also x, ×, ÷) and
//              parentheses, optionally followed by "= <target>". Every number must come from
//              the given multiset (each at most once; exactly once with use_all), division is
//              exact rational division (a non-integer intermediate is allowed, x/0 is wrong),
//              and the value must equal the target.
//   list       reference {"answer": [ints]}
//              answer: integers separated by spaces/commas, optionally in [ ]; exact sequence.
//   latin      reference {"n": n, "grid": [[0 = blank]]}
//              answer: n*n digits 1..n (separators: whitespace , ; / | [ ]), read row by row;
//              any completion that keeps the givens and makes every row and column a
//              permutation of 1..n scores.
//
// Config keys (each verifier): correct_reward, incorrect_reward, no_answer_reward,
// tail_chars [2048], max_answer_chars [512].
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "reward/verifier.h"

namespace lightrl::reward {

struct SyntheticVerifierConfig {
  RewardValues values;
  size_t tail_chars = 2048;
  size_t max_answer_chars = 512;
};
SyntheticVerifierConfig ParseSyntheticVerifierConfig(ConfigReader& r);

// Countdown expression parsing and evaluation (exposed for tests). Returns nullopt on a syntax
// error (with *error); `numbers_used` receives the literals in order.
struct CountdownValue {
  bool defined = true;  // false: division by zero
  // exact value as numerator/denominator decimal strings
  std::string num, den;
};
std::optional<CountdownValue> EvalCountdownExpression(const std::string& expr, std::vector<int64_t>* numbers_used,
                                                      std::string* error);

class CountdownVerifier : public Verifier {
 public:
  explicit CountdownVerifier(SyntheticVerifierConfig c) : c_(std::move(c)) {}
  std::string name() const override { return "countdown"; }
  RewardResult Verify(const protocol::RewardRequest& request) const override;

 private:
  SyntheticVerifierConfig c_;
};

class ListVerifier : public Verifier {
 public:
  explicit ListVerifier(SyntheticVerifierConfig c) : c_(std::move(c)) {}
  std::string name() const override { return "list"; }
  RewardResult Verify(const protocol::RewardRequest& request) const override;

 private:
  SyntheticVerifierConfig c_;
};

class LatinVerifier : public Verifier {
 public:
  explicit LatinVerifier(SyntheticVerifierConfig c) : c_(std::move(c)) {}
  std::string name() const override { return "latin"; }
  RewardResult Verify(const protocol::RewardRequest& request) const override;

 private:
  SyntheticVerifierConfig c_;
};

}  // namespace lightrl::reward
