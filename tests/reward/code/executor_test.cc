// Functional behaviour of the code executor and the CodeVerifier adapter: AC/WA/CE/RE per
// comparator for Python and C++, function-call tests in both languages, stop-on-first-failure,
// the pool, and the RewardResult mapping (scores for model failures, sandbox_error for SE).
#include "reward/code/executor.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "reward/code/code_verifier.h"
#include "tests/reward/code/test_util.h"

namespace lightrl::reward::code {
namespace {

using testing::StdinTask;
using testing::TestConfig;
using nlohmann::json;

constexpr uint32_t kUid = 64201;

class ExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ex = CodeExecutor::Create(TestConfig(kUid));
    ASSERT_TRUE(ex.ok()) << ex.status();
    ex_ = std::move(ex).value().release();
    ASSERT_TRUE(ex_->cpp_available()) << "g++ must run in the sandbox on this machine";
  }
  static void TearDownTestSuite() {
    delete ex_;
    ex_ = nullptr;
  }
  static ExecutionReport Run(const std::string& src, const CodeTask& task) {
    auto r = ex_->Execute(src, task);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ExecutionReport{};
  }
  static std::vector<TestVerdict> Verdicts(const ExecutionReport& r) {
    std::vector<TestVerdict> v;
    for (const auto& t : r.tests) v.push_back(t.verdict);
    return v;
  }
  static CodeExecutor* ex_;
};
CodeExecutor* ExecutorTest::ex_ = nullptr;

using V = TestVerdict;

// ---- Python, stdin/stdout ----------------------------------------------------------------

TEST_F(ExecutorTest, PythonStdinAcceptedAndWrongPerTest) {
  // Sums two numbers; the second expected output is deliberately wrong.
  CodeTask task = StdinTask(Language::kPython, {{"1 2\n", "3\n"}, {"10 20\n", "31\n"}, {"-5 5\n", "0"}});
  auto r = Run("a, b = map(int, input().split())\nprint(a + b)\n", task);
  EXPECT_EQ(Verdicts(r), (std::vector<V>{V::kAC, V::kWA, V::kAC}));
  EXPECT_EQ(r.passed, 2);
  EXPECT_TRUE(r.compiled);
}

TEST_F(ExecutorTest, PythonRuntimeErrorAndSyntaxErrorAsCompileError) {
  CodeTask task = StdinTask(Language::kPython, {{"", "1\n"}});
  auto re = Run("raise ValueError('boom')\n", task);
  EXPECT_EQ(Verdicts(re), std::vector<V>{V::kRE});
  EXPECT_NE(re.tests[0].detail.find("exit status 1"), std::string::npos) << re.tests[0].detail;
  EXPECT_NE(re.tests[0].stderr_tail.find("ValueError: boom"), std::string::npos);
  auto ce = Run("def f(:\n  pass\n", task);
  EXPECT_FALSE(ce.compiled);
  EXPECT_EQ(Verdicts(ce), std::vector<V>{V::kCE});
  EXPECT_NE(ce.compile_output.find("SyntaxError"), std::string::npos) << ce.compile_output;
}

TEST_F(ExecutorTest, ExactComparatorOnlyForgivesTrailingNewlines) {
  const std::string src = "print('3 ')\n";  // trailing space
  auto exact = Run(src, StdinTask(Language::kPython, {{"", "3"}}, ComparatorKind::kExact));
  EXPECT_EQ(Verdicts(exact), std::vector<V>{V::kWA});
  auto lines = Run(src, StdinTask(Language::kPython, {{"", "3"}}, ComparatorKind::kLines));
  EXPECT_EQ(Verdicts(lines), std::vector<V>{V::kAC});
  auto exact_nl = Run("print('3')\nprint()\n", StdinTask(Language::kPython, {{"", "3"}}, ComparatorKind::kExact));
  EXPECT_EQ(Verdicts(exact_nl), std::vector<V>{V::kAC});
}

TEST_F(ExecutorTest, TokensComparatorAppliesFloatToleranceLinesDoesNot) {
  const std::string src = "print(1/3)\n";  // 0.3333333333333333
  CodeTask tokens = StdinTask(Language::kPython, {{"", "0.333333334"}}, ComparatorKind::kTokens);
  EXPECT_EQ(Verdicts(Run(src, tokens)), std::vector<V>{V::kAC});
  CodeTask lines = StdinTask(Language::kPython, {{"", "0.333333334"}}, ComparatorKind::kLines);
  EXPECT_EQ(Verdicts(Run(src, lines)), std::vector<V>{V::kWA});
  CodeTask far = StdinTask(Language::kPython, {{"", "0.3334"}}, ComparatorKind::kTokens);
  EXPECT_EQ(Verdicts(Run(src, far)), std::vector<V>{V::kWA});
}

TEST_F(ExecutorTest, StopOnFirstFailureSkipsTheRest) {
  ExecutorConfig c = TestConfig(kUid + 1, 1);
  c.stop_on_first_failure = true;
  auto ex = CodeExecutor::Create(c);
  ASSERT_TRUE(ex.ok()) << ex.status();
  CodeTask task = StdinTask(Language::kPython, {{"1\n", "1\n"}, {"2\n", "3\n"}, {"3\n", "3\n"}});
  auto r = (*ex)->Execute("print(input())\n", task);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Verdicts(*r), (std::vector<V>{V::kAC, V::kWA, V::kSkipped}));
}

// ---- C++, stdin/stdout --------------------------------------------------------------------

TEST_F(ExecutorTest, CppStdinAcceptedWrongAndRuntimeError) {
  // Prints a/b; division by zero raises SIGFPE (RE), a wrong expected value gives WA.
  const std::string src =
      "#include <cstdio>\n"
      "int main() { long long a, b; if (std::scanf(\"%lld %lld\", &a, &b) != 2) return 2;\n"
      "  volatile long long q = a / b; std::printf(\"%lld\\n\", (long long)q); return 0; }\n";
  CodeTask task = StdinTask(Language::kCpp, {{"7 2\n", "3\n"}, {"9 3\n", "4\n"}, {"1 0\n", "0\n"}, {"x\n", "0\n"}},
                            ComparatorKind::kTokens);
  auto r = Run(src, task);
  ASSERT_TRUE(r.compiled) << r.compile_output;
  EXPECT_EQ(Verdicts(r), (std::vector<V>{V::kAC, V::kWA, V::kRE, V::kRE}));
  EXPECT_NE(r.tests[2].detail.find("signal 8"), std::string::npos) << r.tests[2].detail;
  EXPECT_NE(r.tests[3].detail.find("exit status 2"), std::string::npos) << r.tests[3].detail;
}

TEST_F(ExecutorTest, CppCompileErrorMarksEveryTest) {
  CodeTask task = StdinTask(Language::kCpp, {{"", "1"}, {"", "2"}}, ComparatorKind::kExact);
  auto r = Run("int main() { return undeclared_name; }\n", task);
  EXPECT_FALSE(r.compiled);
  EXPECT_EQ(Verdicts(r), (std::vector<V>{V::kCE, V::kCE}));
  EXPECT_NE(r.compile_output.find("undeclared_name"), std::string::npos) << r.compile_output;
}

TEST_F(ExecutorTest, CppCompilerCannotReadHostFiles) {
  // The compiler runs inside the sandbox: including a host file outside the binds fails.
  CodeTask task = StdinTask(Language::kCpp, {{"", "1"}});
  auto r = Run("#include \"/etc/shadow\"\nint main() {}\n", task);
  EXPECT_FALSE(r.compiled);
  EXPECT_NE(r.compile_output.find("No such file"), std::string::npos) << r.compile_output;
}

// ---- function-call tests --------------------------------------------------------------------

CodeTask CallTask(Language lang, const std::string& fn, std::vector<std::pair<json, json>> cases,
                  std::vector<std::string> arg_types = {}) {
  CodeTask t;
  t.language = lang;
  t.fn_name = fn;
  t.cpp_arg_types = std::move(arg_types);
  for (auto& [args, expected] : cases) {
    TestCase tc;
    tc.args = args;
    tc.expected = expected;
    t.tests.push_back(tc);
  }
  return t;
}

TEST_F(ExecutorTest, PythonFunctionCallFreeFunctionAndSolutionMethod) {
  CodeTask task = CallTask(Language::kPython, "two_sum",
                           {{json::array({json::array({2, 7, 11, 15}), 9}), json::array({0, 1})},
                            {json::array({json::array({3, 2, 4}), 6}), json::array({1, 2})},
                            {json::array({json::array({3, 3}), 6}), json::array({0, 1})}});
  // Returns a tuple: compared as a list. The wrong variant returns the reversed pair.
  const std::string free_fn =
      "def two_sum(nums, target):\n"
      "    seen = {}\n"
      "    for i, x in enumerate(nums):\n"
      "        if target - x in seen: return (seen[target - x], i)\n"
      "        seen[x] = i\n"
      "if __name__ == '__main__':\n"
      "    print(input())  # must not run under the harness\n";
  EXPECT_EQ(Verdicts(Run(free_fn, task)), (std::vector<V>{V::kAC, V::kAC, V::kAC}));
  const std::string method =
      "class Solution:\n"
      "    def two_sum(self, nums: List[int], target: int) -> List[int]:\n"
      "        for i in range(len(nums)):\n"
      "            for j in range(i + 1, len(nums)):\n"
      "                if nums[i] + nums[j] == target: return [j, i] if nums[i] == 3 else [i, j]\n";
  EXPECT_EQ(Verdicts(Run(method, task)), (std::vector<V>{V::kAC, V::kAC, V::kWA}));
}

TEST_F(ExecutorTest, PythonFunctionCallErrorsAndNonJsonResults) {
  CodeTask task = CallTask(Language::kPython, "f", {{json::array({1}), 2}});
  EXPECT_EQ(Verdicts(Run("def f(x):\n    return x / 0\n", task)), std::vector<V>{V::kRE});
  EXPECT_EQ(Verdicts(Run("def g(x):\n    return x + 1\n", task)), std::vector<V>{V::kRE});  // missing f
  auto set_result = Run("def f(x):\n    return {x, 2}\n", task);
  EXPECT_EQ(Verdicts(set_result), std::vector<V>{V::kWA});
  EXPECT_NE(set_result.tests[0].detail.find("not JSON-serializable"), std::string::npos);
  EXPECT_EQ(Verdicts(Run("def f(x):\n    return x + 1.0\n", task)), std::vector<V>{V::kAC});  // 2.0 == 2
  EXPECT_EQ(Verdicts(Run("def f(x):\n    return True\n", task)), std::vector<V>{V::kWA});  // bool != number
}

TEST_F(ExecutorTest, CppFunctionCallFreeFunction) {
  CodeTask task = CallTask(Language::kCpp, "join_count",
                           {{json::array({json::array({"ab", "c"}), "-"}), json::array({"ab-c", 2})},
                            {json::array({json::array(), "+"}), json::array({"", 0})},
                            {json::array({json::array({"x\"y"}), ","}), json::array({"x\"y", 1})}},
                           {"vector<string>", "std::string"});
  const std::string src =
      "#define int long long\n"  // competitive-programming macros must not break the harness
      "pair<string, int> join_count(vector<string>& parts, const string& sep) {\n"
      "  string out;\n"
      "  for (size_t i = 0; i < parts.size(); ++i) { if (i) out += sep; out += parts[i]; }\n"
      "  return {out, (int)parts.size()};\n"
      "}\n"
      "signed main() { return 5; }\n";  // renamed away by the harness
  auto r = Run(src, task);
  ASSERT_TRUE(r.compiled) << r.compile_output;
  EXPECT_EQ(Verdicts(r), (std::vector<V>{V::kAC, V::kAC, V::kAC}));
}

TEST_F(ExecutorTest, CppFunctionCallSolutionMethodAndWrongAnswer) {
  CodeTask task = CallTask(Language::kCpp, "maxArea",
                           {{json::array({json::array({1, 8, 6, 2, 5, 4, 8, 3, 7})}), 49},
                            {json::array({json::array({1, 1})}), 1},
                            {json::array({json::array({1, 2, 4, 3, 1})}), 4}},
                           {"vector<int>"});
  // Off by one on the right end: misses pairs that use the last element.
  const std::string src =
      "class Solution {\n public:\n"
      "  int maxArea(vector<int>& h) {\n"
      "    int best = 0;\n"
      "    for (size_t i = 0; i < h.size(); ++i)\n"
      "      for (size_t j = i + 1; j + 1 < h.size(); ++j) best = max(best, (int)(j - i) * min(h[i], h[j]));\n"
      "    return best;\n  }\n};\n";
  auto r = Run(src, task);
  ASSERT_TRUE(r.compiled) << r.compile_output;
  EXPECT_EQ(Verdicts(r), (std::vector<V>{V::kWA, V::kWA, V::kAC}));
}

// ---- the pool ------------------------------------------------------------------------------

TEST_F(ExecutorTest, BatchReturnsReportsInOrder) {
  std::vector<std::pair<std::string, CodeTask>> jobs;
  for (int i = 0; i < 6; ++i) {
    CodeTask t = StdinTask(Language::kPython, {{std::to_string(i) + "\n", std::to_string(i * i) + "\n"}});
    // Odd jobs are wrong (x*x+1).
    jobs.push_back({i % 2 ? "x = int(input())\nprint(x * x + 1)\n" : "x = int(input())\nprint(x * x)\n", t});
  }
  auto reports = ex_->ExecuteBatch(jobs);
  ASSERT_EQ(reports.size(), jobs.size());
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(reports[i].ok()) << reports[i].status();
    EXPECT_EQ(reports[i]->tests[0].verdict, i % 2 ? V::kWA : V::kAC) << i;
  }
  EXPECT_EQ(ex_->pool_size(), 2);
}

// ---- CodeVerifier -------------------------------------------------------------------------

class VerifierTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    CodeVerifierConfig c;
    c.executor = TestConfig(kUid + 2);
    c.correct_reward = 1.0;
    c.incorrect_reward = -1.0;
    auto v = CodeVerifier::Create(c);
    ASSERT_TRUE(v.ok()) << v.status();
    v_ = std::move(v).value().release();
  }
  static void TearDownTestSuite() {
    delete v_;
    v_ = nullptr;
  }
  static CodeVerifier* v_;
};
CodeVerifier* VerifierTest::v_ = nullptr;

const json kSquareTask = json::parse(R"({"language": "python", "comparator": "lines",
  "tests": [{"input": "2\n", "output": "4\n"}, {"input": "3\n", "output": "9\n"},
            {"input": "-4\n", "output": "16\n"}, {"input": "0\n", "output": "0\n"}]})");

TEST_F(VerifierTest, AllPassIsCorrectWithTheConfiguredReward) {
  auto r = v_->Verify(11, kSquareTask, "Here:\n```python\nx = int(input())\nprint(x * x)\n```\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.sample_id, 11u);
  EXPECT_EQ(r.score().verdict, Verdict::kCorrect);
  EXPECT_DOUBLE_EQ(r.score().value, 1.0);
  json d = json::parse(r.score().detail_json);
  EXPECT_EQ(d["passed"], 4);
  EXPECT_EQ(d["tests"][2]["verdict"], "AC");
}

TEST_F(VerifierTest, FractionModeScalesBetweenIncorrectAndCorrect) {
  // abs() breaks the negative case only: 3 of 4 pass -> -1 + 2 * 0.75 = 0.5.
  auto r = v_->Verify(12, kSquareTask, "```python\nx = int(input())\nprint(x * abs(x) if x < 0 else x * x)\n```");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.score().verdict, Verdict::kPartial);
  EXPECT_DOUBLE_EQ(r.score().value, 0.5);
}

TEST_F(VerifierTest, ModelFailuresAreScoresWithTheirVerdicts) {
  auto no_block = v_->Verify(13, kSquareTask, "I think the answer is x*x.");
  ASSERT_TRUE(no_block.ok());
  EXPECT_EQ(no_block.score().verdict, Verdict::kNoAnswer);
  EXPECT_DOUBLE_EQ(no_block.score().value, -1.0);
  auto ce = v_->Verify(14, kSquareTask, "```python\nprint(\n```");
  ASSERT_TRUE(ce.ok());
  EXPECT_EQ(ce.score().verdict, Verdict::kCompileError);
  EXPECT_DOUBLE_EQ(ce.score().value, -1.0);
  json tle_task = kSquareTask;
  tle_task["time_limit_s"] = 0.5;
  auto tle = v_->Verify(15, tle_task, "```python\nwhile True: pass\n```");
  ASSERT_TRUE(tle.ok());
  EXPECT_EQ(tle.score().verdict, Verdict::kTimeLimit);
  EXPECT_DOUBLE_EQ(tle.score().value, -1.0);
}

TEST_F(VerifierTest, BadTaskMetadataIsAParseFailureNotAScore) {
  json bad = json::parse(R"({"tests": [{"input": "1"}]})");
  auto r = v_->Verify(16, bad, "```python\nprint(1)\n```");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, RewardErrorKind::kParseFail);
  EXPECT_NE(r.error().message.find("tests[0].output"), std::string::npos) << r.error().message;
}

TEST_F(VerifierTest, SandboxFailureMasksTheSampleInsteadOfScoringZero) {
  // Simulate an infrastructure fault: the harness directory disappears from the host, so
  // bubblewrap cannot set up the bind for a function-call run.
  CodeVerifierConfig c;
  c.executor = TestConfig(kUid + 3, 1);
  auto v = CodeVerifier::Create(c);
  ASSERT_TRUE(v.ok()) << v.status();
  for (const auto& e : std::filesystem::directory_iterator((*v)->executor().sandbox().work_dir())) {
    if (e.path().filename().string().rfind("harness-", 0) == 0) std::filesystem::remove_all(e.path());
  }
  json task = json::parse(R"({"fn_name": "f", "tests": [{"args": [1], "expected": 1}]})");
  auto r = (*v)->Verify(17, task, "```python\ndef f(x):\n    return x\n```");
  ASSERT_FALSE(r.ok()) << r.score().detail_json;
  EXPECT_EQ(r.error().kind, RewardErrorKind::kSandboxError);
}

TEST_F(VerifierTest, VerlShapeTasksAndBatchKeepOneResultPerSample) {
  json call = json::parse(R"({"fn_name": "add", "inputs": ["1\n2", "[1]\n[2]"], "outputs": ["3", "[1, 2]"]})");
  std::vector<CodeVerifier::Sample> samples = {
      {101, call, "```python\ndef add(a, b):\n    return a + b\n```"},
      {102, call, "```python\ndef add(a, b):\n    return b + a\n```"},
      {103, json::parse(R"({"inputs": ["5\n"], "outputs": ["25\n"]})"), "```py\nprint(int(input())**2)\n```"},
      {104, json::object(), "```python\nprint(1)\n```"},
  };
  auto results = v_->VerifyBatch(samples);
  ASSERT_EQ(results.size(), samples.size());
  for (size_t i = 0; i < samples.size(); ++i) EXPECT_EQ(results[i].sample_id, samples[i].sample_id);
  ASSERT_TRUE(results[0].ok());
  EXPECT_EQ(results[0].score().verdict, Verdict::kCorrect);
  ASSERT_TRUE(results[1].ok());
  EXPECT_EQ(results[1].score().verdict, Verdict::kPartial);  // [2, 1] != [1, 2]
  ASSERT_TRUE(results[2].ok());
  EXPECT_EQ(results[2].score().verdict, Verdict::kCorrect);
  ASSERT_FALSE(results[3].ok());
  EXPECT_EQ(results[3].error().kind, RewardErrorKind::kParseFail);
}

}  // namespace
}  // namespace lightrl::reward::code
