// The code executor: runs model-written Python or C++ against a task's tests in the sandbox
// and returns one verdict per test case (rewards.md §4). Start here for reward/code; the
// RewardResult adapter is code_verifier.h, the isolation layer sandbox.h.
//
// Test kinds:
//   stdin/stdout  the program reads `input` on stdin; its stdout is compared with `output` by
//                 the task's comparator (comparators.h); exit status must be 0.
//   function call the task names a function (`fn_name`) and gives JSON argument lists and an
//                 expected JSON value; a harness (harness.h) calls the function inside the
//                 sandbox and reports the return value on a separate pipe; the host compares.
//                 The expected value never enters the sandbox, and exit status 0 plus exactly
//                 one result line are required, so exit(0) before the call or a printed
//                 "PASSED" earns nothing.
//
// Verdicts per test (first matching rule wins):
//   SE   the sandbox failed (infrastructure; the sample must be masked, never scored)
//   OLE  stdout/stderr/result exceeded its byte cap (the run was killed)
//   MLE  the cgroup's OOM killer fired
//   TLE  CPU time over the limit (killed by the host or RLIMIT_CPU) or wall clock over the limit
//   RE   non-zero exit status (bwrap reports signal N as 128+N)
//   WA   wrong output / wrong or missing return value
//   AC   accepted
//   CE   C++ did not compile (every test gets CE); the compiler runs in the sandbox too
//   SKIP not run because an earlier test failed and stop_on_first_failure is set
//
// Parallelism: Execute() is thread-safe; each call runs its tests one after another. The pool
// (Submit/ExecuteBatch) runs up to `max_parallel` executions at once, which bounds the number
// of live sandboxes.
#pragma once

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/config/config.h"
#include "core/status.h"
#include "reward/code/comparators.h"
#include "reward/code/sandbox.h"

namespace lightrl::reward::code {

enum class Language { kPython, kCpp };
StatusOr<Language> ParseLanguage(const std::string& name);  // "python" | "cpp" (also "c++")
const char* LanguageName(Language lang);

enum class TestVerdict { kAC, kWA, kTLE, kMLE, kOLE, kRE, kCE, kSE, kSkipped };
const char* TestVerdictName(TestVerdict v);  // "AC", "WA", ..., "SKIP"

struct TestCase {
  // stdin/stdout tests
  std::string input;
  std::string expected_output;
  // function-call tests (used when CodeTask::fn_name is set)
  nlohmann::json args = nlohmann::json::array();  // one element per argument
  nlohmann::json expected;
};

struct CodeTask {
  Language language = Language::kPython;
  std::vector<TestCase> tests;
  std::string fn_name;                     // non-empty: function-call tests
  std::vector<std::string> cpp_arg_types;  // C++ function-call tests: one type per argument
  ComparatorSpec comparator;
  bool float_tolerance = false;            // function-call results: apply comparator tolerances
  std::optional<double> time_limit_s;      // overrides ExecutorConfig::run_limits.cpu_seconds
  std::optional<int64_t> memory_bytes;     // overrides ExecutorConfig::run_limits.memory_bytes
};

struct TestResult {
  TestVerdict verdict = TestVerdict::kSkipped;
  std::string detail;  // e.g. "exit code 1", "cpu 2.01 s > 2 s", "line 3 differs"
  double cpu_seconds = 0;
  double wall_seconds = 0;
  int exit_code = -1;
  std::string stderr_tail;  // last bytes of stderr (for logs)
  bool cleanup_ok = true;   // the sandbox was fully torn down afterwards
  int64_t pids_limit_hits = 0;  // forks refused by the pids limit
  int64_t memory_peak = -1;     // bytes (cgroup), -1 if unknown
};

struct ExecutionReport {
  bool compiled = true;          // false: CE (C++ only)
  std::string compile_output;    // compiler stderr tail on CE
  std::vector<TestResult> tests;
  int passed = 0;
  // Set when any test hit a sandbox failure: the whole execution is an infrastructure error.
  std::string sandbox_error;
  bool sandbox_failed() const { return !sandbox_error.empty(); }
  // The first non-AC verdict (kAC when everything passed).
  TestVerdict first_failure() const;
  nlohmann::json ToJson() const;  // per-test verdicts for RewardResult detail
};

struct ExecutorConfig {
  SandboxConfig sandbox;
  SandboxLimits run_limits;      // per test run
  SandboxLimits compile_limits;  // the g++ run
  double wall_factor = 3.0;      // wall limit = factor * CPU limit + 1 s (task overrides)
  std::string python = "/usr/bin/python3";
  std::string gxx = "/usr/bin/g++";
  std::vector<std::string> cpp_flags = {"-std=c++17", "-O2", "-pipe"};
  // Python: compile() the source in the sandbox once before the tests, so a SyntaxError is CE
  // (like a C++ compile error) rather than an RE on every test.
  bool python_syntax_check = true;
  bool stop_on_first_failure = false;
  int max_parallel = 0;  // pool size; 0 = number of CPUs
  ExecutorConfig();      // sets compile_limits to generous defaults
};

// Parses the `code_executor` block (keys documented in reward/code/README.md). Throws
// ConfigError naming the key.
ExecutorConfig ParseExecutorConfig(ConfigReader& r);

class CodeExecutor {
 public:
  // Builds the sandbox (refusing if the machine cannot provide it), checks that the Python
  // interpreter runs inside it (refusing otherwise: a broken interpreter would score every sample
  // as RE, i.e. silently 0) and whether g++ does (if not, C++ tasks return Unavailable, which
  // the verifier reports as a sandbox error), then starts the pool.
  static StatusOr<std::unique_ptr<CodeExecutor>> Create(const ExecutorConfig& config);
  ~CodeExecutor();
  CodeExecutor(const CodeExecutor&) = delete;
  CodeExecutor& operator=(const CodeExecutor&) = delete;

  // Runs `source` against every test of `task` on the calling thread. Never throws for
  // anything the program does; bad task data (e.g. an unsupported C++ type) is reported as
  // InvalidArgument, a C++ task without a working g++ as Unavailable.
  StatusOr<ExecutionReport> Execute(const std::string& source, const CodeTask& task);

  // Queues an execution on the pool.
  std::future<StatusOr<ExecutionReport>> Submit(std::string source, CodeTask task);

  // Runs every (source, task) pair on the pool and returns the reports in order.
  std::vector<StatusOr<ExecutionReport>> ExecuteBatch(
      const std::vector<std::pair<std::string, CodeTask>>& jobs);

  Sandbox& sandbox() { return *sandbox_; }
  const ExecutorConfig& config() const { return config_; }
  int pool_size() const { return static_cast<int>(workers_.size()); }
  bool cpp_available() const { return cpp_available_; }

 private:
  explicit CodeExecutor(ExecutorConfig config) : config_(std::move(config)) {}
  void WorkerLoop();
  TestResult RunOne(const SandboxRequest& request, const CodeTask& task, const TestCase& test,
                    std::string* sandbox_error);

  ExecutorConfig config_;
  std::unique_ptr<Sandbox> sandbox_;
  std::string harness_dir_;  // host dir holding the Python call harness
  bool cpp_available_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace lightrl::reward::code
