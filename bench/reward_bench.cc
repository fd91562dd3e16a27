// lightrl-bench reward: verifier throughput.
//
//   lightrl-bench reward [--quick]
//
// Sections:
//  1. Rule verifiers (math on generated arithmetic + a mix of LaTeX answers; countdown; list;
//     latin), checks/s on one thread, inline (the baseline: raw Verify calls).
//  2. The same math requests through RewardWorker with the forked checker pool (the hard
//     wall-clock kill of rewards.md §1 item 5) at 1 and 2 processes: checks/s and the ratio to
//     the inline baseline (what the isolation costs).
//  3. CodeExecutorSection (reward_code_bench.cc): sandboxed Python test runs/s, serial vs pool.
// Targets: isolated math checks/s >= 2000 (a 1024-sample batch scores in < 0.5 s), and the
// code-executor targets of section 3.
#include <chrono>
#include <cstdio>

#include <yaml-cpp/yaml.h>

#include "bench/bench.h"
#include "core/check.h"
#include "envs/task_source.h"
#include "reward/math/math_verifier.h"
#include "reward/reward_worker.h"
#include "reward/synthetic_verifiers.h"

namespace lightrl::bench {
namespace {

using protocol::RewardRequest;

std::vector<RewardRequest> FromTasks(const std::string& yaml, int n, uint64_t seed) {
  auto src = envs::BuildTaskSource(YAML::Load(yaml), seed);
  LR_CHECK(src.ok(), src.status().ToString());
  std::vector<RewardRequest> out;
  for (int i = 0; i < n; ++i) {
    envs::Task t = (*src)->Next();
    RewardRequest q;
    q.sample_id = static_cast<uint64_t>(i);
    q.task_id = t.id;
    q.verifier = t.verifier;
    q.reference_json = t.reference_json;
    q.prompt_text = t.prompt;
    out.push_back(std::move(q));
  }
  return out;
}

std::vector<RewardRequest> MathRequests(int n) {
  // Half generated arithmetic (answered "Answer: <ref>" or off by one), half LaTeX answers.
  std::vector<RewardRequest> out = FromTasks("[{kind: arithmetic, difficulty: {digits: 3, terms: 3}}]", n / 2, 1);
  for (size_t i = 0; i < out.size(); ++i) {
    auto ref = nlohmann::json::parse(out[i].reference_json);
    std::string a = ref["answer"];
    out[i].response_text = "Let me add these up step by step.\nAnswer: " + (i % 3 ? a : a + "1");
  }
  const char* latex[][2] = {{"\\frac{3}{4}", "so the result is $\\boxed{\\dfrac{3}{4}}$."},
                            {"(1, 2]", "The interval is \\boxed{(1,2]}"},
                            {"x^2+2x+1", "Expanding, \\boxed{(x+1)^2}"},
                            {"2\\sqrt{2}", "Answer: $\\sqrt{8}$"},
                            {"1200", "They paid #### 1,200"},
                            {"\\{1, 2, 3\\}", "\\boxed{\\{3,2,1\\}}"}};
  for (int i = static_cast<int>(out.size()); i < n; ++i) {
    RewardRequest q;
    q.sample_id = static_cast<uint64_t>(i);
    q.verifier = "math";
    q.reference_json = nlohmann::json{{"answer", latex[i % 6][0]}}.dump();
    q.response_text = std::string("We work through the problem carefully. ") + latex[i % 6][1];
    out.push_back(std::move(q));
  }
  return out;
}

double ChecksPerSecond(const std::function<void()>& fn, size_t n, bool quick) {
  double t = TimeMedian(fn, quick ? 2 : 3, quick ? 0.2 : 0.5, 1);
  return static_cast<double>(n) / t;
}

}  // namespace

int RunRewardSuite(const BenchOptions& options) {
  const bool quick = options.quick;
  std::vector<Target> targets;
  const int n = quick ? 512 : 2048;

  // 1. inline verifier throughput
  reward::MathVerifier math{reward::MathVerifierConfig{}};
  reward::CountdownVerifier cd{reward::SyntheticVerifierConfig{}};
  reward::ListVerifier lst{reward::SyntheticVerifierConfig{}};
  reward::LatinVerifier lat{reward::SyntheticVerifierConfig{}};
  auto math_reqs = MathRequests(n);
  auto cd_reqs = FromTasks("[{kind: countdown, difficulty: {count: 4, max_number: 25, max_target: 500}}]", n, 2);
  for (auto& q : cd_reqs) q.response_text = "Answer: " + nlohmann::json::parse(q.reference_json)["solution"].get<std::string>();
  auto list_reqs = FromTasks("[{kind: list, difficulty: {length: 8}}]", n, 3);
  for (auto& q : list_reqs) {
    std::string s;
    for (auto& v : nlohmann::json::parse(q.reference_json)["answer"]) s += std::to_string(v.get<int64_t>()) + " ";
    q.response_text = "Answer: " + s;
  }
  auto latin_reqs = FromTasks("[{kind: latin, difficulty: {n: 5}}]", n, 4);
  for (auto& q : latin_reqs) q.response_text = "Answer: 1 2 3 4 5 2 3 4 5 1 3 4 5 1 2 4 5 1 2 3 5 1 2 3 4";

  Table t1("Rule verifiers, one thread, inline (no process isolation)", {"verifier", "requests", "checks/s", "us/check"});
  double math_inline = 0;
  struct V { const char* name; const reward::Verifier* v; const std::vector<RewardRequest>* reqs; };
  for (V v : {V{"math", &math, &math_reqs}, V{"countdown", &cd, &cd_reqs}, V{"list", &lst, &list_reqs},
              V{"latin", &lat, &latin_reqs}}) {
    double cps = ChecksPerSecond([&] { for (const auto& q : *v.reqs) (void)v.v->Verify(q); }, v.reqs->size(), quick);
    if (std::string(v.name) == "math") math_inline = cps;
    t1.AddRow({v.name, std::to_string(v.reqs->size()), Fmt(cps, 0), Fmt(1e6 / cps, 1)});
  }
  t1.Print();

  // 2. through the worker with the checker pool
  Table t2("math through RewardWorker (forked checker processes, hard kill)",
           {"isolation", "processes", "checks/s", "vs inline"});
  double best_isolated = 0;
  for (auto [iso, procs] : std::vector<std::pair<std::string, int>>{{"none", 1}, {"process", 1}, {"process", 2}}) {
    auto w = reward::RewardWorker::Create(YAML::Load("isolation: " + iso + "\nprocesses: " + std::to_string(procs)));
    LR_CHECK(w.ok(), w.status().ToString());
    double cps = ChecksPerSecond([&] {
      auto r = (*w)->Score(math_reqs);
      LR_CHECK(r.size() == math_reqs.size(), "result count");
    }, math_reqs.size(), quick);
    if (iso == "process") best_isolated = std::max(best_isolated, cps);
    t2.AddRow({iso, std::to_string(procs), Fmt(cps, 0), Fmt(cps / math_inline, 2) + "x"});
  }
  t2.Print();
  targets.push_back({"reward_math_isolated_checks_per_s", best_isolated, ">=", 2000});

  // 3. code executor
  CodeExecutorSection(options, &targets);
  PrintTargets(targets);
  return 0;
}

}  // namespace lightrl::bench
