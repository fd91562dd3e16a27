// CodeVerifier: the RewardResult adapter of the code executor (rewards.md §1, §4).
//
// Input: a task (JSON metadata from the dataset, parsed by ParseCodeTask) and the model's
// response text. The code is the last fenced block of the task's language (```python / ```py,
// ```cpp / ```c++), else the last fenced block of any language (verl takes the first; the last
// is what a model that revises itself means); a response without a fenced block scores as
// "no answer" unless `require_code_block` is false (then the whole response is the code).
//
// Output: exactly one RewardResult per sample id.
//   - Model outcomes are scores: all tests AC -> kCorrect; `fraction` mode scores the share of
//     passed tests between incorrect_reward and correct_reward (kPartial when 0 < share < 1);
//     `all_or_nothing` gives correct_reward only when all pass. The verdict of a failed sample is
//     taken from its first failing test: CE -> kCompileError, TLE -> kTimeLimit,
//     RE/MLE/OLE -> kRuntimeError, WA -> kWrong.
//   - A sandbox failure (SE on any test) is RewardError kSandboxError: the sample is masked,
//     never scored 0. Unparseable task metadata is kParseFail. Both are infrastructure errors.
//   detail_json carries per-test verdicts, the language, and the compile output on CE.
//
// Task JSON (either shape; `language` defaults to the verifier's default_language):
//   {"language": "python", "tests": [{"input": "1 2\n", "output": "3\n"}, ...],
//    "comparator": "lines", "abs_tol": 1e-6, "rel_tol": 1e-6, "time_limit_s": 2, "memory_mb": 256}
//   {"language": "cpp", "fn_name": "add", "arg_types": ["int", "int"],
//    "tests": [{"args": [1, 2], "expected": 3}], "float_tolerance": false}
//   {"inputs": ["1 2\n"], "outputs": ["3\n"], "fn_name": "..."}   (verl / LiveCodeBench shape:
//    with fn_name, each input is one JSON value per line and each output a JSON text)
//
// Thread-safety: Verify() may be called from several threads; VerifyBatch uses the pool.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/protocol/reward_types.h"
#include "core/status.h"
#include "reward/code/executor.h"

namespace lightrl::reward::code {

enum class ScoreMode { kFraction, kAllOrNothing };

struct CodeVerifierConfig {
  ExecutorConfig executor;
  ScoreMode score_mode = ScoreMode::kFraction;
  double correct_reward = 1.0;
  double incorrect_reward = 0.0;
  Language default_language = Language::kPython;
  bool require_code_block = true;
  size_t max_code_bytes = 64 * 1024;  // longer extracted code scores as a runtime error
};

// Parses the verifier block: `score_mode` (fraction | all_or_nothing), `correct_reward`,
// `incorrect_reward`, `language`, `require_code_block`, `max_code_kb`, and the executor keys
// under `executor`. Throws ConfigError naming the key.
CodeVerifierConfig ParseCodeVerifierConfig(ConfigReader& r);

// Parses task metadata. Errors (InvalidArgument) name the field, e.g. "tests[3].args: expected
// an array".
StatusOr<CodeTask> ParseCodeTask(const nlohmann::json& task, Language default_language);

// The code to run, or nullopt when the response has no fenced block (see header comment).
std::optional<std::string> ExtractCode(const std::string& response, Language language,
                                       bool require_code_block);

// Maps an execution report to the RewardResult (see the header comment).
RewardResult ScoreReport(const CodeVerifierConfig& config, uint64_t sample_id, const CodeTask& task,
                         const ExecutionReport& report);

class CodeVerifier {
 public:
  static StatusOr<std::unique_ptr<CodeVerifier>> Create(const CodeVerifierConfig& config);

  // One sample: task metadata (JSON) + the model's response.
  RewardResult Verify(uint64_t sample_id, const nlohmann::json& task, const std::string& response);
  // Same with an already-parsed task.
  RewardResult VerifyParsed(uint64_t sample_id, const CodeTask& task, const std::string& response);

  struct Sample {
    uint64_t sample_id = 0;
    nlohmann::json task;
    std::string response;
  };
  // Every sample through the executor pool; results in input order, one per sample.
  std::vector<RewardResult> VerifyBatch(const std::vector<Sample>& samples);

  CodeExecutor& executor() { return *executor_; }
  const CodeVerifierConfig& config() const { return config_; }

 private:
  explicit CodeVerifier(CodeVerifierConfig config) : config_(std::move(config)) {}
  CodeVerifierConfig config_;
  std::unique_ptr<CodeExecutor> executor_;
};

}  // namespace lightrl::reward::code
