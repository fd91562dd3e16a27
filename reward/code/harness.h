// Function-call harnesses (rewards.md §4.4): the code that calls the model's function inside
// the sandbox and reports what it returned. The assertion never runs inside the model's process:
// the harness only *reports* the return value, and the host compares it with the expected
// value, which never enters the sandbox. The report goes to fd 3 (a pipe to the host), not
// stdout, so the model's own prints do not mix with it.
//
// Result protocol (one run = one call): fd 3 receives exactly one line
//   "R <json>\n"   the JSON encoding of the return value (tuples become arrays), or
//   "U <type>\n"   the return value could not be encoded as JSON (scored as a wrong answer).
// The host also requires exit status 0. So `exit(0)` before the call (no line), a printed
// "PASSED" (stdout is ignored for call tests), an extra forged line (two lines) or a crash after
// returning (exit status) all fail. A forged "R" line alone can only win by containing the
// correct value, which is the same as solving the task.
//
// Arguments arrive on stdin, one JSON value per line (the LiveCodeBench / verl convention).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::reward::code {

// Python harness script. argv: <harness> <solution.py> <fn_name>. It execs the solution as a
// module named "solution" (so `if __name__ == "__main__":` blocks do not run), then calls
// `Solution().<fn_name>` when a class Solution with that attribute exists (LeetCode style),
// else the top-level `<fn_name>`. A missing function is a runtime error (exit 2).
const std::string& PythonCallHarness();

// C++ argument types accepted in tasks: int, long, long long, int64_t, unsigned, size_t,
// double, float, bool, char, string, and vector<T> of those (nested). "std::" is optional.
// Returns the canonical C++ spelling, or InvalidArgument naming the bad type.
StatusOr<std::string> CanonicalCppType(const std::string& type);

// Builds the C++ translation unit for one function-call task: a JSON codec (before the model's
// code, so the model's macros cannot break it), the model's code with any `main` renamed, and a
// main() that decodes one argument per stdin line with `arg_types`, calls `fn_name` (a free
// function, or `Solution().fn_name` if that is what compiles), and writes the result line.
// Unsupported return types (e.g. void) fail to compile, which is reported as CE.
StatusOr<std::string> BuildCppCallProgram(const std::string& model_code, const std::string& fn_name,
                                          const std::vector<std::string>& arg_types);

}  // namespace lightrl::reward::code
