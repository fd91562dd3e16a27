// The reward contract shared by every role (rewards.md §1): exactly one RewardResult per sample
// id, a tagged union of a score or a typed infrastructure error. Infrastructure errors mask the
// sample in the trainer (excluded from the loss and its group's statistics); they are never
// turned into a score of 0. Model failures (no answer, CE, RE, TLE, ...) are scores.
//
// Wire encoding of these types lives in core/protocol/ (codec); this header is plain data.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

namespace lightrl {

// What the checker concluded about the model's output (a model-side outcome, scored).
enum class Verdict : uint8_t {
  kCorrect = 0,        // full credit
  kPartial = 1,        // partial credit (e.g. some test cases passed)
  kWrong = 2,          // answer extracted and compared, not equal
  kNoAnswer = 3,       // nothing extractable (format failure)
  kCompileError = 4,   // code: CE
  kRuntimeError = 5,   // code: RE / MLE / OLE / crash
  kTimeLimit = 6,      // code: TLE (the model's program was too slow: a model failure)
  kTruncated = 7,      // response hit the length limit (overlong), scored per task config
};

// Infrastructure failures: the sample is masked, never scored.
enum class RewardErrorKind : uint8_t {
  kTimeout = 0,        // the verifier itself exceeded its wall-clock budget
  kParseFail = 1,      // unparseable reference / gold answer / task metadata
  kJudgeFail = 2,      // generative reward model unreachable or unparseable verdict
  kSandboxError = 3,   // sandbox could not be set up / crashed (not the program's fault)
  kWorkerLost = 4,     // the reward worker died or missed its deadline (set by the trainer)
  kInternal = 5,       // any other checker bug (exception inside the verifier)
};

struct Score {
  double value = 0.0;          // the reward, per-task scale (e.g. 1/0 or +1/-1)
  Verdict verdict = Verdict::kWrong;
  std::string detail_json = "{}";  // checker-specific detail (extracted answer, per-test verdicts)
};

struct RewardError {
  RewardErrorKind kind = RewardErrorKind::kInternal;
  std::string message;         // human-readable cause, logged and counted
};

struct RewardResult {
  uint64_t sample_id = 0;
  std::variant<Score, RewardError> outcome;

  bool ok() const { return std::holds_alternative<Score>(outcome); }
  const Score& score() const { return std::get<Score>(outcome); }
  const RewardError& error() const { return std::get<RewardError>(outcome); }

  static RewardResult Scored(uint64_t id, double value, Verdict verdict, std::string detail_json = "{}") {
    return RewardResult{id, Score{value, verdict, std::move(detail_json)}};
  }
  static RewardResult Failed(uint64_t id, RewardErrorKind kind, std::string message) {
    return RewardResult{id, RewardError{kind, std::move(message)}};
  }
};

const char* VerdictName(Verdict v);               // "correct", "wrong", ...
const char* RewardErrorKindName(RewardErrorKind k);  // "timeout", "parse_fail", ...

}  // namespace lightrl
