// RewardWorker contract (rewards.md §1): one result per request in order with its sample id,
// hard wall-clock kill from outside the checking code, exceptions/crashes -> kInternal,
// infrastructure errors never become 0, config errors name the key; the code verifier is
// reachable as "code".
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "reward/reward_worker.h"

namespace lightrl::reward {
namespace {

using protocol::RewardRequest;
using Clock = std::chrono::steady_clock;

RewardRequest Req(uint64_t id, const std::string& verifier, const std::string& ref, const std::string& resp) {
  RewardRequest q;
  q.sample_id = id;
  q.task_id = "task-" + std::to_string(id);
  q.verifier = verifier;
  q.reference_json = ref;
  q.response_text = resp;
  return q;
}

std::unique_ptr<RewardWorker> MakeWorker(const std::string& yaml) {
  auto w = RewardWorker::Create(YAML::Load(yaml));
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? std::move(w).value() : nullptr;
}

class FnVerifier : public Verifier {
 public:
  FnVerifier(std::string n, std::function<RewardResult(const RewardRequest&)> f) : n_(std::move(n)), f_(std::move(f)) {}
  std::string name() const override { return n_; }
  RewardResult Verify(const RewardRequest& q) const override { return f_(q); }

 private:
  std::string n_;
  std::function<RewardResult(const RewardRequest&)> f_;
};

TEST(RewardWorker, DefaultsRegisterEveryVerifier) {
  auto w = MakeWorker("");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->VerifierNames(), (std::vector<std::string>{"code", "countdown", "latin", "list", "math"}));
}

TEST(RewardWorker, ConfigErrorsNameTheKey) {
  struct Case { const char* yaml; const char* key; };
  for (Case c : {Case{"timeout_s: -1", "reward.verifiers.timeout_s"}, Case{"mth: {}", "reward.verifiers"},
                 Case{"math: {tail_chars: 3}", "reward.verifiers.math.tail_chars"},
                 Case{"math: {correct_rewrd: 1}", "reward.verifiers.math"},
                 Case{"isolation: thread", "reward.verifiers.isolation"},
                 Case{"countdown: 7", "reward.verifiers.countdown"},
                 Case{"code: {score_mode: best}", "reward.verifiers.code.score_mode"}}) {
    auto w = RewardWorker::Create(YAML::Load(c.yaml));
    ASSERT_FALSE(w.ok()) << c.yaml;
    EXPECT_NE(w.status().message().find(c.key), std::string::npos) << c.yaml << " -> " << w.status();
  }
}

TEST(RewardWorker, OneResultPerRequestInOrderWithIds) {
  auto w = MakeWorker("processes: 3");
  ASSERT_TRUE(w);
  std::vector<RewardRequest> reqs;
  std::vector<int> expect;  // 1 correct, 0 wrong, -1 parse_fail, -2 internal
  for (int i = 0; i < 40; ++i) {
    uint64_t id = 1000003ull * (i + 1) % 9973;  // scrambled, unique
    switch (i % 6) {
      case 0: reqs.push_back(Req(id, "math", R"({"answer": "12"})", "Answer: 12")); expect.push_back(1); break;
      case 1: reqs.push_back(Req(id, "math", R"({"answer": "12"})", "Answer: 13")); expect.push_back(0); break;
      case 2: reqs.push_back(Req(id, "countdown", R"({"numbers": [3, 4], "target": 12})", "3*4")); expect.push_back(1); break;
      case 3: reqs.push_back(Req(id, "list", R"({"answer": [1, 2]})", "2 1")); expect.push_back(0); break;
      case 4: reqs.push_back(Req(id, "math", R"({"answer": "\\frac{"})", "Answer: 1")); expect.push_back(-1); break;
      case 5: reqs.push_back(Req(id, "no_such_verifier", "{}", "")); expect.push_back(-2); break;
    }
  }
  auto res = w->Score(reqs);
  ASSERT_EQ(res.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(res[i].sample_id, reqs[i].sample_id) << i;
    if (expect[i] >= 0) {
      ASSERT_TRUE(res[i].ok()) << i << ": " << res[i].error().message;
      EXPECT_EQ(res[i].score().value, expect[i]) << i;
    } else {
      ASSERT_FALSE(res[i].ok()) << i;
      EXPECT_EQ(res[i].error().kind, expect[i] == -1 ? RewardErrorKind::kParseFail : RewardErrorKind::kInternal) << i;
    }
  }
  EXPECT_TRUE(w->Score({}).empty());
}

RewardWorkerConfig HostileConfig(double timeout_s) {
  RewardWorkerConfig c;
  c.pool.timeout_s = timeout_s;
  c.pool.processes = 2;
  c.code_enabled = false;
  c.rule_verifiers["ok"] = std::make_shared<FnVerifier>("ok", [](const RewardRequest& q) {
    return RewardResult::Scored(999, 1.0, Verdict::kCorrect, "{\"echo\":\"" + q.response_text + "\"}");
  });
  c.rule_verifiers["hang"] = std::make_shared<FnVerifier>("hang", [](const RewardRequest&) -> RewardResult {
    volatile uint64_t x = 0;
    for (;;) x = x + 1;  // a C-level loop no signal handler would interrupt
  });
  c.rule_verifiers["throw"] = std::make_shared<FnVerifier>("throw", [](const RewardRequest&) -> RewardResult {
    throw std::runtime_error("boom");
  });
  c.rule_verifiers["crash"] = std::make_shared<FnVerifier>("crash", [](const RewardRequest&) -> RewardResult {
    ::abort();
  });
  c.rule_verifiers["hog"] = std::make_shared<FnVerifier>("hog", [](const RewardRequest&) -> RewardResult {
    std::vector<std::vector<char>> v;
    for (;;) v.emplace_back(64 << 20, 'x');  // until RLIMIT_AS stops it
  });
  c.pool.memory_bytes = 512ll << 20;
  return c;
}

TEST(RewardWorker, HardKillsHangsAndSurvivesCrashes) {
  auto w = RewardWorker::Create(HostileConfig(0.5));
  ASSERT_TRUE(w.ok());
  std::vector<std::string> kinds = {"ok", "hang", "ok", "throw", "ok", "crash", "hang", "ok", "hog", "ok"};
  std::vector<RewardRequest> reqs;
  for (size_t i = 0; i < kinds.size(); ++i) reqs.push_back(Req(100 + i, kinds[i], "{}", "r" + std::to_string(i)));
  auto t0 = Clock::now();
  auto res = (*w)->Score(reqs);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(res.size(), reqs.size());
  for (size_t i = 0; i < kinds.size(); ++i) {
    EXPECT_EQ(res[i].sample_id, 100 + i);
    if (kinds[i] == "ok") {
      ASSERT_TRUE(res[i].ok()) << i;
      EXPECT_EQ(res[i].score().detail_json, "{\"echo\":\"r" + std::to_string(i) + "\"}") << "results stay aligned";
    } else {
      ASSERT_FALSE(res[i].ok()) << i << " " << kinds[i];
      EXPECT_EQ(res[i].error().kind, kinds[i] == "hang" ? RewardErrorKind::kTimeout : RewardErrorKind::kInternal)
          << kinds[i] << ": " << res[i].error().message;
    }
  }
  // two hangs, each killed at 0.5 s, on two processes: far below the hang's "forever"
  EXPECT_LT(secs, 8.0);
  // no checker process is left behind (children of this process)
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1) << "an unreaped child exists";
}

TEST(RewardWorker, BatchDeadlineBoundsTheCall) {
  auto w = RewardWorker::Create(HostileConfig(30));
  ASSERT_TRUE(w.ok());
  std::vector<RewardRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back(Req(i, i == 0 ? "ok" : "hang", "{}", ""));
  auto t0 = Clock::now();
  auto res = (*w)->Score(reqs, /*deadline_s=*/0.7);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(secs, 5.0);
  ASSERT_EQ(res.size(), 4u);
  EXPECT_TRUE(res[0].ok());
  for (int i = 1; i < 4; ++i) {
    ASSERT_FALSE(res[i].ok());
    EXPECT_EQ(res[i].error().kind, RewardErrorKind::kTimeout);
  }
}

TEST(RewardWorker, MathPowerTowerReturnsWithinBudget) {
  auto w = MakeWorker("timeout_s: 5");
  ASSERT_TRUE(w);
  std::string tower = "\\boxed{5^{5^{5^{5^{5^{5}}}}}}";
  auto t0 = Clock::now();
  auto res = w->Score({Req(1, "math", R"({"answer": "5"})", tower),
                       Req(2, "math", R"({"answer": "5"})", std::string(10 << 20, '{') + "Answer: 5")});
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
  ASSERT_EQ(res.size(), 2u);
  ASSERT_TRUE(res[0].ok());
  EXPECT_EQ(res[0].score().value, 0.0);
  ASSERT_TRUE(res[1].ok());
  EXPECT_EQ(res[1].score().value, 1.0);
}

TEST(RewardWorker, DisabledVerifierIsAnErrorNotAZero) {
  auto w = MakeWorker("code: false\nlatin: false");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->VerifierNames(), (std::vector<std::string>{"countdown", "list", "math"}));
  auto res = w->Score({Req(1, "code", "{}", ""), Req(2, "latin", "{}", "")});
  for (const auto& r : res) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, RewardErrorKind::kInternal);
    EXPECT_NE(r.error().message.find("disabled"), std::string::npos);
  }
}

TEST(RewardWorker, InlineIsolationGivesTheSameScores) {
  auto a = MakeWorker("isolation: none");
  auto b = MakeWorker("isolation: process");
  ASSERT_TRUE(a && b);
  std::vector<RewardRequest> reqs = {Req(5, "math", R"({"answer": "1/2"})", "\\boxed{\\frac{1}{2}}"),
                                     Req(6, "countdown", R"({"numbers": [2, 3], "target": 7})", "2*3+1")};
  auto ra = a->Score(reqs), rb = b->Score(reqs);
  ASSERT_EQ(ra.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(ra[i].ok() && rb[i].ok());
    EXPECT_EQ(ra[i].score().value, rb[i].score().value);
    EXPECT_EQ(ra[i].score().detail_json, rb[i].score().detail_json);
  }
  EXPECT_EQ(ra[0].score().value, 1.0);
  EXPECT_EQ(ra[1].score().value, 0.0);  // 1 is not given
}

// The sandboxed executor behind the "code" name (needs bubblewrap + cgroups: root on the
// project's machines and CI, like the reward/code suites).
TEST(RewardWorker, CodeVerifierScoresPythonPrograms) {
  auto w = MakeWorker("code: {executor: {max_parallel: 2, uid: 64990, gid: 64990, time_limit_s: 5}}");
  ASSERT_TRUE(w);
  std::string ref = R"({"language": "python", "tests": [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6\n"}]})";
  std::string good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```";
  std::string bad = "```python\na, b = map(int, input().split())\nprint(a - b)\n```";
  auto res = w->Score({Req(1, "code", ref, good), Req(2, "code", ref, bad), Req(3, "code", "[1]", good),
                       Req(4, "math", R"({"answer": "3"})", "3")});
  ASSERT_EQ(res.size(), 4u);
  ASSERT_TRUE(res[0].ok()) << res[0].error().message;
  EXPECT_EQ(res[0].score().value, 1.0);
  ASSERT_TRUE(res[1].ok());
  EXPECT_EQ(res[1].score().value, 0.0);
  ASSERT_FALSE(res[2].ok());
  EXPECT_EQ(res[2].error().kind, RewardErrorKind::kParseFail);
  ASSERT_TRUE(res[3].ok());
  EXPECT_EQ(res[3].score().value, 1.0);
}

TEST(RewardWorker, BatchDeadlineAlsoBoundsCodeRequests) {
  auto w = MakeWorker("code: {executor: {max_parallel: 1, uid: 64991, gid: 64991, time_limit_s: 5}}");
  ASSERT_TRUE(w);
  std::string ref = R"({"tests": [{"input": "", "output": "1\n"}]})";
  std::string slow = "```python\nimport time\ntime.sleep(2.5)\nprint(1)\n```";
  auto t0 = Clock::now();
  auto res = w->Score({Req(1, "code", ref, slow), Req(2, "math", R"({"answer": "3"})", "3")}, /*deadline_s=*/0.8);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
  ASSERT_EQ(res.size(), 2u);
  ASSERT_FALSE(res[0].ok());
  EXPECT_EQ(res[0].error().kind, RewardErrorKind::kTimeout);
  ASSERT_TRUE(res[1].ok());
  // the worker stays usable, and the late run is joined on destruction
  auto again = w->Score({Req(3, "code", ref, "```python\nprint(1)\n```")});
  ASSERT_TRUE(again[0].ok()) << again[0].error().message;
  EXPECT_EQ(again[0].score().value, 1.0);
}

TEST(RewardWorker, ShippedDefaultsFileMatchesTheBuiltInDefaults) {
  const char* root = std::getenv("LIGHTRL_SOURCE_DIR");
  ASSERT_NE(root, nullptr) << "ctest sets LIGHTRL_SOURCE_DIR";
  YAML::Node cfg = YAML::LoadFile(std::string(root) + "/configs/tasks/reward_defaults.yaml");
  auto w = RewardWorker::Create(cfg["reward"]["verifiers"]);
  ASSERT_TRUE(w.ok()) << w.status();
  auto d = RewardWorker::Create(YAML::Node());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*w)->VerifierNames(), (*d)->VerifierNames());
  EXPECT_EQ((*w)->config().pool.timeout_s, (*d)->config().pool.timeout_s);
  EXPECT_EQ((*w)->config().pool.processes, (*d)->config().pool.processes);
  EXPECT_EQ((*w)->config().pool.memory_bytes, (*d)->config().pool.memory_bytes);
}

TEST(RewardWorker, ValidateReferenceFindsBadGolds) {
  auto w = MakeWorker("");
  ASSERT_TRUE(w);
  EXPECT_TRUE(w->ValidateReference("math", R"({"answer": "\\frac{1}{2}"})").ok());
  EXPECT_TRUE(w->ValidateReference("countdown", R"({"numbers": [1, 2], "target": 3})").ok());
  EXPECT_TRUE(w->ValidateReference("code", R"({"tests": [{"input": "1", "output": "1"}]})").ok());
  Status a = w->ValidateReference("math", R"({"answer": "\\frac{"})");
  EXPECT_FALSE(a.ok());
  EXPECT_NE(a.message().find("parse_fail"), std::string::npos) << a;
  EXPECT_FALSE(w->ValidateReference("latin", R"({"n": 3})").ok());
  EXPECT_FALSE(w->ValidateReference("code", R"({"tests": 5})").ok());
  EXPECT_FALSE(w->ValidateReference("nope", "{}").ok());
}

TEST(RewardWorker, BatchSummaryCountsErrorsAndFlagsAllZero) {
  std::vector<RewardRequest> reqs = {Req(1, "math", "", ""), Req(2, "math", "", ""), Req(3, "math", "", ""),
                                     Req(4, "code", "", ""), Req(5, "code", "", "")};
  std::vector<RewardResult> res = {RewardResult::Scored(1, 0, Verdict::kWrong), RewardResult::Scored(2, 0, Verdict::kWrong),
                                   RewardResult::Failed(3, RewardErrorKind::kTimeout, "t"),
                                   RewardResult::Scored(4, 0.5, Verdict::kPartial),
                                   RewardResult::Failed(5, RewardErrorKind::kSandboxError, "s")};
  auto st = SummarizeBatch(reqs, res);
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st["math"].requests, 3);
  EXPECT_EQ(st["math"].scored, 2);
  EXPECT_EQ(st["math"].errors["timeout"], 1);
  EXPECT_TRUE(st["math"].all_zero);
  EXPECT_FALSE(st["code"].all_zero);
  EXPECT_DOUBLE_EQ(st["code"].mean_score, 0.5);
  EXPECT_EQ(st["code"].errors["sandbox_error"], 1);
  LogBatchWarnings(st);  // must not throw
}

TEST(CheckerPool, ResultWireFormatRoundTrips) {
  auto a = RewardResult::Scored(1, -0.5, Verdict::kPartial, R"({"x":"\u00e9"})");
  auto b = DecodeResult(EncodeResult(a), 77);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b.sample_id, 77u);
  EXPECT_EQ(b.score().value, -0.5);
  EXPECT_EQ(b.score().verdict, Verdict::kPartial);
  EXPECT_EQ(b.score().detail_json, a.score().detail_json);
  auto e = DecodeResult(EncodeResult(RewardResult::Failed(1, RewardErrorKind::kParseFail, "m")), 2);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().kind, RewardErrorKind::kParseFail);
  auto junk = DecodeResult("{\"ok\": true, \"verdict\": 99, \"v\": 1, \"d\": \"\"}", 3);
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.error().kind, RewardErrorKind::kInternal);
}

}  // namespace
}  // namespace lightrl::reward
