// JSONL dataset loaders. Each line is one JSON object; a bad line is an error naming the file,
// the 1-based line number and the field ("data/gsm8k.jsonl:17: field 'answer': expected a
// GSM8K solution ending in '#### <number>'"). Blank lines are skipped. Nothing is downloaded:
// the repository ships only generated data (configs/tasks/data/), users supply the rest.
//
// Schemas (extra fields are ignored; `id` or `task_id`, if present, names the task):
//   gsm8k  {"question": str, "answer": str ending in "#### N"}
//          -> verifier "math", reference {"answer": "N"} (thousands commas removed)
//   math   {"problem": str, "solution": str containing \boxed{...}} or {"problem", "answer": str}
//          -> verifier "math", reference {"answer": ...} when given, else {"solution": ...}
//          (the verifier extracts the last \boxed{} of the solution)
//   code   {"prompt": str, "tests": [...]} plus optional "fn_name", "language", "arg_types",
//          "comparator", "abs_tol", "rel_tol", "time_limit_s", "memory_mb", "float_tolerance"
//          (the reward/code task JSON, see reward/code/code_verifier.h). Tests are
//          {"input": str, "output": str} (stdin/stdout) or {"args": [...], "expected": v}
//          (function call, needs fn_name).
//          -> verifier "code", reference = the record without "prompt"/"id"
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::envs {

struct JsonlRecord {
  std::string id;              // from `id`/`task_id`, else the 1-based line number
  std::string prompt;
  std::string verifier;
  nlohmann::json reference;
  std::string key;             // canonical text for the split hash
};

// Validates and converts one parsed line. `where` prefixes errors ("file:line").
StatusOr<JsonlRecord> ParseJsonlRecord(const std::string& kind, const nlohmann::json& line, int64_t line_no,
                                       const std::string& where);
// Reads every line of `path` (kind: gsm8k | math | code).
StatusOr<std::vector<JsonlRecord>> LoadJsonl(const std::string& kind, const std::string& path);
bool IsJsonlKind(const std::string& kind);

// The number after "####" in a GSM8K solution (commas and a leading '$' removed), or "".
std::string Gsm8kFinalAnswer(const std::string& solution);

}  // namespace lightrl::envs
