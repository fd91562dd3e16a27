// Verifier invariants (rewards.md §3.3) on generated tasks: the oracle answer scores 1, a
// perturbed answer < 1, empty / garbage / overlong outputs 0; strict parsers stay bounded on
// adversarial input. Oracles are computed here from the prompt text (independent of the
// generators' and verifiers' code), or, for countdown, taken from the generator's own hidden
// construction.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "envs/task_source.h"
#include "reward/math/math_verifier.h"
#include "reward/synthetic_verifiers.h"

namespace lightrl::reward {
namespace {

using protocol::RewardRequest;

RewardRequest Req(const envs::Task& t, const std::string& response) {
  RewardRequest q;
  q.sample_id = 7;
  q.task_id = t.id;
  q.verifier = t.verifier;
  q.reference_json = t.reference_json;
  q.prompt_text = t.prompt;
  q.response_text = response;
  return q;
}

RewardRequest RawReq(const std::string& verifier, const std::string& ref, const std::string& response) {
  RewardRequest q;
  q.sample_id = 3;
  q.task_id = "t";
  q.verifier = verifier;
  q.reference_json = ref;
  q.response_text = response;
  return q;
}

std::vector<envs::Task> Tasks(const std::string& yaml, int n) {
  auto src = envs::BuildTaskSource(YAML::Load(yaml), 11);
  EXPECT_TRUE(src.ok()) << src.status();
  std::vector<envs::Task> out;
  for (int i = 0; i < n; ++i) out.push_back((*src)->Next());
  return out;
}

double Value(const RewardResult& r) {
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.score().value : -99;
}

// ---- independent oracles -------------------------------------------------------------------
__int128 EvalPlusMinusTimes(const std::string& e) {  // "12+3*4-5", left to right with precedence
  std::vector<__int128> terms;
  std::vector<char> signs;
  size_t i = 0;
  char sign = '+';
  while (i < e.size()) {
    __int128 prod = 1;
    while (true) {
      __int128 v = 0;
      while (i < e.size() && isdigit(static_cast<unsigned char>(e[i]))) v = v * 10 + (e[i++] - '0');
      prod *= v;
      if (i < e.size() && e[i] == '*') { ++i; continue; }
      break;
    }
    terms.push_back(prod);
    signs.push_back(sign);
    if (i < e.size()) sign = e[i++];
  }
  __int128 acc = 0;
  for (size_t k = 0; k < terms.size(); ++k) acc += signs[k] == '+' ? terms[k] : -terms[k];
  return acc;
}

std::string I128(__int128 v) {
  if (v == 0) return "0";
  bool neg = v < 0;
  std::string s;
  while (v != 0) { int d = static_cast<int>(v % 10); s.push_back(static_cast<char>('0' + (d < 0 ? -d : d))); v /= 10; }
  if (neg) s.push_back('-');
  std::reverse(s.begin(), s.end());
  return s;
}

std::vector<int64_t> Numbers(const std::string& s) {
  std::vector<int64_t> out;
  std::istringstream in(s);
  int64_t v;
  while (in >> v) out.push_back(v);
  return out;
}

std::string Join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + std::to_string(v[i]);
  return s;
}

// Backtracking Latin-square completion.
bool SolveLatin(std::vector<std::vector<int>>& g, int n, int cell = 0) {
  if (cell == n * n) return true;
  int r = cell / n, c = cell % n;
  if (g[r][c]) return SolveLatin(g, n, cell + 1);
  for (int v = 1; v <= n; ++v) {
    bool ok = true;
    for (int k = 0; k < n && ok; ++k) ok = g[r][k] != v && g[k][c] != v;
    if (!ok) continue;
    g[r][c] = v;
    if (SolveLatin(g, n, cell + 1)) return true;
    g[r][c] = 0;
  }
  return false;
}

void ExpectRejectsJunk(const Verifier& v, const envs::Task& t, const std::string& oracle) {
  EXPECT_EQ(Value(v.Verify(Req(t, ""))), 0.0) << t.id;
  EXPECT_EQ(Value(v.Verify(Req(t, "\xFF\xFE garbage }{ \\boxed{"))), 0.0) << t.id;
  EXPECT_EQ(Value(v.Verify(Req(t, "Answer: I do not know"))), 0.0) << t.id;
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += oracle + " ";
  EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + ten))), 0.0) << t.id << " overlong";
}

// ---- arithmetic (math verifier) ------------------------------------------------------------
TEST(ArithmeticTasks, OracleScoresOneAndPerturbationsZero) {
  MathVerifier v{MathVerifierConfig{}};
  for (const char* diff : {"{digits: 1, terms: 2}", "{digits: 3, terms: 3, ops: ['+', '-', '*']}",
                           "{digits: 12, terms: 3, ops: ['*', '-']}"}) {
    auto tasks = Tasks(std::string("[{kind: arithmetic, difficulty: ") + diff + "}]", 30);
    for (const auto& t : tasks) {
      ASSERT_EQ(t.prompt.rfind("What is ", 0), 0u);
      std::string expr = t.prompt.substr(8, t.prompt.size() - 9);
      __int128 ans = EvalPlusMinusTimes(expr);
      std::string a = I128(ans);
      EXPECT_EQ(Value(v.Verify(Req(t, a))), 1.0) << t.prompt << " bare " << a;
      EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + a))), 1.0) << t.prompt;
      EXPECT_EQ(Value(v.Verify(Req(t, "so \\boxed{" + a + "}"))), 1.0) << t.prompt;
      EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + I128(ans + 1)))), 0.0) << t.prompt;
      EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + expr))), 0.0) << "echoing the expression: " << t.prompt;
      ExpectRejectsJunk(v, t, a);
    }
  }
}

TEST(ArithmeticTasks, EasiestDifficultyIsShort) {
  auto tasks = Tasks("[{kind: arithmetic, difficulty: {digits: 1, terms: 2, ops: ['+']}}]", 50);
  for (const auto& t : tasks) {
    EXPECT_LE(t.prompt.size(), 16u) << t.prompt;
    auto ref = nlohmann::json::parse(t.reference_json);
    EXPECT_LE(ref["answer"].get<std::string>().size(), 2u);
  }
}

// ---- countdown -----------------------------------------------------------------------------
TEST(CountdownTasks, OracleScoresOneAndPerturbationsZero) {
  CountdownVerifier v{SyntheticVerifierConfig{}};
  for (const char* diff : {"{count: 2, max_number: 9}", "{count: 4, max_number: 25, max_target: 500}",
                           "{count: 3, use_all: true}"}) {
    auto tasks = Tasks(std::string("[{kind: countdown, difficulty: ") + diff + "}]", 30);
    for (const auto& t : tasks) {
      auto ref = nlohmann::json::parse(t.reference_json);
      std::string sol = ref["solution"];
      int64_t target = ref["target"];
      EXPECT_EQ(Value(v.Verify(Req(t, sol))), 1.0) << t.prompt << " " << sol;
      EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + sol + " = " + std::to_string(target)))), 1.0) << sol;
      EXPECT_EQ(Value(v.Verify(Req(t, "\\boxed{" + sol + "}"))), 1.0) << sol;
      EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + sol + " = " + std::to_string(target + 1)))), 0.0) << sol;
      // the same numbers combined so that the value changes (the SynLogic game-of-24 bug)
      EXPECT_EQ(Value(v.Verify(Req(t, "(" + sol + ")+1"))), 0.0) << "1 is not necessarily given: " << sol;
      std::vector<int64_t> nums = ref["numbers"];
      std::string all_plus;
      for (size_t i = 0; i < nums.size(); ++i) all_plus += (i ? "+" : "") + std::to_string(nums[i]);
      int64_t sum = 0;
      for (auto x : nums) sum += x;
      EXPECT_EQ(Value(v.Verify(Req(t, all_plus))), sum == target ? 1.0 : 0.0) << all_plus;
      // a number used more often than given
      EXPECT_EQ(Value(v.Verify(Req(t, sol + "+" + std::to_string(nums[0]) + "-" + std::to_string(nums[0])))), 0.0);
      ExpectRejectsJunk(v, t, sol);
    }
  }
}

TEST(CountdownVerifier, StrictGrammarAndArithmetic) {
  CountdownVerifier v{SyntheticVerifierConfig{}};
  std::string ref = R"({"numbers": [3, 5, 8, 2], "target": 14, "use_all": false})";
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "3*8-5*2"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "(3 \xC3\x97 8) \xE2\x88\x92 (5 \xC3\x97 2)"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "8/2*3+2"))), 0.0);  // uses 2 twice
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "(8+5)/2*2+1"))), 0.0);
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "8/(5-5)"))), 0.0);
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "3**8"))), 0.0);
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", ref, "__import__('os').system('x')"))), 0.0);
  // exact rationals: 8/3 is not rounded
  std::string r2 = R"({"numbers": [8, 3, 3], "target": 8})";
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", r2, "8/3*3"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", r2, "8/3+3"))), 0.0);
  std::string r3 = R"({"numbers": [2, 3], "target": 5, "use_all": true})";
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", r3, "2+3"))), 1.0);
  std::string r4 = R"({"numbers": [2, 3, 4], "target": 5, "use_all": true})";
  EXPECT_EQ(Value(v.Verify(RawReq("countdown", r4, "2+3"))), 0.0);
  // bad references are infrastructure errors, never 0
  auto bad = v.Verify(RawReq("countdown", R"({"numbers": "x"})", "2+3"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, RewardErrorKind::kParseFail);
}

// ---- list ----------------------------------------------------------------------------------
TEST(ListTasks, OracleScoresOneAndPerturbationsZero) {
  ListVerifier v{SyntheticVerifierConfig{}};
  auto tasks = Tasks("[{kind: list, difficulty: {length: 8, ops: [sort, sort_desc, reverse, max, min, sum]}}]", 60);
  for (const auto& t : tasks) {
    size_t colon = t.prompt.find(": ");
    std::string op = t.prompt.substr(0, colon);
    std::vector<int64_t> xs = Numbers(t.prompt.substr(colon + 2)), ans = xs;
    if (op == "Sort ascending") std::sort(ans.begin(), ans.end());
    else if (op == "Sort descending") std::sort(ans.begin(), ans.end(), std::greater<int64_t>());
    else if (op == "Reverse") std::reverse(ans.begin(), ans.end());
    else if (op == "Largest of") ans = {*std::max_element(xs.begin(), xs.end())};
    else if (op == "Smallest of") ans = {*std::min_element(xs.begin(), xs.end())};
    else if (op == "Sum of") { int64_t s = 0; for (auto x : xs) s += x; ans = {s}; }
    else FAIL() << "unknown prompt " << t.prompt;
    std::string a = Join(ans);
    EXPECT_EQ(Value(v.Verify(Req(t, a))), 1.0) << t.prompt;
    std::string bracketed = "[";
    for (size_t i = 0; i < ans.size(); ++i) bracketed += (i ? ", " : "") + std::to_string(ans[i]);
    EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + bracketed + "]"))), 1.0) << bracketed;
    std::vector<int64_t> pert = ans;
    pert.back() += 1;
    EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + Join(pert)))), 0.0);
    if (ans.size() > 1) {
      std::vector<int64_t> dropped(ans.begin(), ans.end() - 1);
      EXPECT_EQ(Value(v.Verify(Req(t, Join(dropped)))), 0.0);
    }
    ExpectRejectsJunk(v, t, a);
  }
}

// ---- latin (constraint check: any valid completion) -----------------------------------------
TEST(LatinTasks, AnyValidCompletionScoresOne) {
  LatinVerifier v{SyntheticVerifierConfig{}};
  auto tasks = Tasks("[{kind: latin, difficulty: {n: 4, blank_fraction: 0.6}}]", 30);
  int multi = 0;
  for (const auto& t : tasks) {
    auto ref = nlohmann::json::parse(t.reference_json);
    int n = ref["n"];
    std::vector<std::vector<int>> g = ref["grid"];
    auto solved = g;
    ASSERT_TRUE(SolveLatin(solved, n));
    std::string rows, flat;
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) {
        rows += (c ? " " : "") + std::to_string(solved[r][c]);
        flat += std::to_string(solved[r][c]);
      }
      rows += "\n";
      flat += r + 1 < n ? "/" : "";
    }
    EXPECT_EQ(Value(v.Verify(Req(t, rows))), 1.0) << rows;
    EXPECT_EQ(Value(v.Verify(Req(t, "Answer:\n" + rows))), 1.0);
    EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + flat))), 1.0) << flat;
    // swap two different cells of a row: a column now repeats
    auto bad = solved;
    std::swap(bad[0][0], bad[0][1]);
    std::string brow;
    for (auto& r : bad) for (int c = 0; c < n; ++c) brow += std::to_string(r[c]) + " ";
    EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + brow))), 0.0);
    // a valid Latin square that ignores the givens
    std::string cyclic;
    for (int r = 0; r < n; ++r) for (int c = 0; c < n; ++c) cyclic += std::to_string((r + c) % n + 1) + " ";
    bool matches_givens = true;
    for (int r = 0; r < n; ++r) for (int c = 0; c < n; ++c) matches_givens &= !g[r][c] || g[r][c] == (r + c) % n + 1;
    EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + cyclic))), matches_givens ? 1.0 : 0.0);
    // a second, different completion also counts (checked by brute force over completions)
    auto other = g;
    // fill from the largest digit first to find a different solution when one exists
    std::function<bool(int)> rev = [&](int cell) {
      if (cell == n * n) return true;
      int r = cell / n, c = cell % n;
      if (other[r][c]) return rev(cell + 1);
      for (int val = n; val >= 1; --val) {
        bool ok = true;
        for (int k = 0; k < n && ok; ++k) ok = other[r][k] != val && other[k][c] != val;
        if (!ok) continue;
        other[r][c] = val;
        if (rev(cell + 1)) return true;
        other[r][c] = 0;
      }
      return false;
    };
    ASSERT_TRUE(rev(0));
    if (other != solved) {
      ++multi;
      std::string o;
      for (auto& r : other) for (int c = 0; c < n; ++c) o += std::to_string(r[c]) + " ";
      EXPECT_EQ(Value(v.Verify(Req(t, "Answer: " + o))), 1.0);
    }
    ExpectRejectsJunk(v, t, flat);
  }
  EXPECT_GT(multi, 0) << "no puzzle with two solutions at blank_fraction 0.6: the any-answer path went untested";
}

// ---- math verifier references and errors ---------------------------------------------------
TEST(MathVerifier, ReferenceShapes) {
  MathVerifier v{MathVerifierConfig{}};
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answer": "72"})", "#### 72"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answer": 72})", "Answer: 72"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"solution": "so it is $\\boxed{\\frac{1}{2}}$."})", "\\boxed{1/2}"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answers": ["2", "-2"]})", "Answer: -2"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answer": "Natalia sold 48/2 = 24 clips.\n#### 72"})", "72"))), 1.0);
  for (const char* bad : {R"({"answer": "\\frac{"})", R"({"solution": "no box here"})", R"({"x": 1})", "not json",
                          R"([1, 2])"}) {
    auto r = v.Verify(RawReq("math", bad, "Answer: 1"));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind, RewardErrorKind::kParseFail) << bad;
  }
}

TEST(MathVerifier, TruncatedNoAnswerHasItsOwnVerdict) {
  MathVerifier v{MathVerifierConfig{}};
  auto q = RawReq("math", R"({"answer": "5"})", "Let me think about this for a very long");
  q.finish_reason = protocol::FinishReason::kLength;
  auto r = v.Verify(q);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.score().verdict, Verdict::kTruncated);
  EXPECT_EQ(r.score().value, 0.0);
}

TEST(MathVerifier, RewardValuesComeFromConfig) {
  MathVerifierConfig c;
  c.values = {1.0, -1.0, -0.5};
  MathVerifier v{c};
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answer": "5"})", "Answer: 5"))), 1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answer": "5"})", "Answer: 6"))), -1.0);
  EXPECT_EQ(Value(v.Verify(RawReq("math", R"({"answer": "5"})", "hmm\nno idea"))), -0.5);
}

// Pathological inputs return promptly by construction (inline, no process kill involved).
TEST(MathVerifier, PathologicalInputsAreBounded) {
  MathVerifier v{MathVerifierConfig{}};
  std::string tower = "\\boxed{";
  for (int i = 0; i < 200; ++i) tower += "5^{";
  tower += "5";
  for (int i = 0; i < 200; ++i) tower += "}";
  tower += "}";
  std::string nested = "\\boxed{" + std::string(100000, '{') + "1" + std::string(100000, '}') + "}";
  std::string parens = "Answer: " + std::string(5000, '(') + "1" + std::string(5000, ')');
  std::string huge = std::string(10 << 20, '9') + "\nAnswer: 5";
  std::string huge_number = "Answer: " + std::string(400, '9') + "!";
  std::string bigexp = "\\boxed{10^{10^{10^{10}}}}";
  std::string fact = "\\boxed{100000!}";
  for (const std::string* s : {&tower, &nested, &parens, &huge, &huge_number, &bigexp, &fact}) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = v.Verify(RawReq("math", R"({"answer": "5"})", *s));
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r.ok());
    EXPECT_LT(secs, 2.0) << s->substr(0, 40);
    EXPECT_EQ(r.score().value, s == &huge ? 1.0 : 0.0) << s->substr(0, 40);
  }
}

TEST(SyntheticVerifiers, AdversarialInputsAreBounded) {
  CountdownVerifier cd{SyntheticVerifierConfig{}};
  std::string ref = R"({"numbers": [3, 5], "target": 8})";
  for (const std::string& s : {std::string(100000, '('), "Answer: " + std::string(400, '(') + "3+5" + std::string(400, ')'),
                               std::string(10 << 20, '1'), std::string("9") + std::string(100, '9') + "+3"}) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = cd.Verify(RawReq("countdown", ref, s));
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.score().value, 0.0);
  }
}

}  // namespace
}  // namespace lightrl::reward
