// Output comparators for stdin/stdout tests and value comparison for function-call tests
// (rewards.md §4.3, §4.4). Selectable per dataset/task; none of them is order-insensitive
// (never APPS's `set(split())` fallback).
//
//   exact   `out.rstrip("\n") == expected.rstrip("\n")` (verl's SandboxFusion client). Only
//           trailing '\n' characters are ignored; "\r", spaces and case matter.
//   lines   LiveCodeBench `grade_stdio`: both sides are `strip()`ped and split on '\n'; the line
//           counts must match; each line pair (after `strip()`) matches exactly, or every
//           whitespace-separated token of both lines parses as a Python `Decimal` and the
//           Decimal lists are equal. So "0.5" == "0.50" and "1e2" == "100", but there is NO
//           float tolerance: "0.3333" != "0.33333". NaN never equals anything.
//   tokens  CodeContests `OutputsMatch` with a tolerance: both sides are split on ASCII
//           whitespace (empty tokens skipped) and lower-cased; the token counts must match and
//           each pair must be equal strings, or both integers with the same value, or both
//           finite numbers with |a-b| <= abs_tol or |a-b| <= rel_tol * max(|a|,|b|).
//
// Function-call results are compared as JSON values (JsonValuesMatch): null/bool/string
// exactly (a bool never equals a number), numbers by value (1 == 1.0, as in Python), with the
// tokens tolerances applied when either side is a float and a tolerance is configured; arrays
// element-wise (tuples arrive as arrays), objects by key set and values.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "core/status.h"

namespace lightrl::reward::code {

enum class ComparatorKind { kExact, kLines, kTokens };

struct ComparatorSpec {
  ComparatorKind kind = ComparatorKind::kLines;
  double abs_tol = 1e-6;  // kTokens and float JSON values
  double rel_tol = 1e-6;
};

// "exact" | "lines" | "tokens". Unknown names are an InvalidArgument listing the valid ones.
StatusOr<ComparatorKind> ParseComparatorKind(const std::string& name);
const char* ComparatorName(ComparatorKind kind);

// True when the program's output is accepted for the expected output.
bool OutputsMatch(const ComparatorSpec& spec, std::string_view output, std::string_view expected);

// Python Decimal equality of two tokens (the `lines` rule), exposed for tests. A token that
// Decimal() would reject makes the result false.
bool DecimalTokensEqual(std::string_view a, std::string_view b);

// Function-call result comparison (see header comment). `tolerant` applies the spec's float
// tolerances; otherwise floats must be equal.
bool JsonValuesMatch(const nlohmann::json& got, const nlohmann::json& expected,
                     const ComparatorSpec& spec, bool tolerant);

}  // namespace lightrl::reward::code
