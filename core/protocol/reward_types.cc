#include "core/protocol/reward_types.h"

namespace lightrl {

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kCorrect: return "correct";
    case Verdict::kPartial: return "partial";
    case Verdict::kWrong: return "wrong";
    case Verdict::kNoAnswer: return "no_answer";
    case Verdict::kCompileError: return "compile_error";
    case Verdict::kRuntimeError: return "runtime_error";
    case Verdict::kTimeLimit: return "time_limit";
    case Verdict::kTruncated: return "truncated";
  }
  return "unknown";
}

const char* RewardErrorKindName(RewardErrorKind k) {
  switch (k) {
    case RewardErrorKind::kTimeout: return "timeout";
    case RewardErrorKind::kParseFail: return "parse_fail";
    case RewardErrorKind::kJudgeFail: return "judge_fail";
    case RewardErrorKind::kSandboxError: return "sandbox_error";
    case RewardErrorKind::kWorkerLost: return "worker_lost";
    case RewardErrorKind::kInternal: return "internal";
  }
  return "unknown";
}

}  // namespace lightrl
