// CodeExecutorSection (part of `lightrl-bench reward`): sandboxed Python test runs per second.
// Each job is a small stdin/stdout program with 4 tests (one sandbox per test: bwrap + cgroup +
// seccomp). Baseline: the same jobs one after another on the calling thread (Execute); then
// the executor pool (ExecuteBatch) with 2 and hardware_concurrency workers. Targets: pool runs/s
// >= 1.5x serial with >= 2 cores available, and >= 10 sandboxed runs/s with the pool.
// If the sandbox cannot be created (no bubblewrap / cgroups / not root), the section prints why
// and reports its targets as MISS with value 0: no number is made up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "bench/bench.h"
#include "core/check.h"
#include "reward/code/executor.h"

namespace lightrl::bench {

void CodeExecutorSection(const BenchOptions& options, std::vector<Target>* targets) {
  using namespace lightrl::reward::code;
  const int jobs = options.quick ? 8 : 24;
  const int tests_per_job = 4;
  CodeTask task;
  task.language = Language::kPython;
  for (int i = 0; i < tests_per_job; ++i) {
    TestCase tc;
    tc.input = std::to_string(i) + " " + std::to_string(3 * i) + "\n";
    tc.expected_output = std::to_string(4 * i) + "\n";
    task.tests.push_back(tc);
  }
  const std::string source = "a, b = map(int, input().split())\nprint(a + b)\n";
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> pools = {2};
  if (hw > 2) pools.push_back(hw);

  ExecutorConfig cfg;
  cfg.sandbox.uid = cfg.sandbox.gid = 64950;
  cfg.max_parallel = pools.back();
  auto ex = CodeExecutor::Create(cfg);
  if (!ex.ok()) {
    std::printf("\nCode executor: sandbox unavailable, section not measured: %s\n", ex.status().ToString().c_str());
    targets->push_back({"reward_code_pool_speedup", 0, ">=", 1.5});
    targets->push_back({"reward_code_python_runs_per_s", 0, ">=", 10});
    return;
  }
  auto check = [&](const StatusOr<ExecutionReport>& r) {
    LR_CHECK(r.ok(), r.status().ToString());
    LR_CHECK(r->passed == tests_per_job, "bench program failed: ", r->ToJson().dump());
  };
  using Clock = std::chrono::steady_clock;
  (void)(*ex)->Execute(source, task);  // warm-up (page cache, cgroup dirs)
  auto t0 = Clock::now();
  for (int j = 0; j < jobs; ++j) check((*ex)->Execute(source, task));
  double serial_s = std::chrono::duration<double>(Clock::now() - t0).count();
  double serial = jobs * tests_per_job / serial_s;

  Table t("Sandboxed Python test runs (bwrap + cgroup + seccomp; 1 run = 1 test case)",
          {"mode", "workers", "jobs x tests", "runs/s", "ms/run", "vs serial"});
  t.AddRow({"serial", "1", std::to_string(jobs) + "x" + std::to_string(tests_per_job), Fmt(serial, 1),
            Fmt(1000.0 / serial, 1), "1.00x"});
  double best = 0;
  for (int p : pools) {
    ExecutorConfig pc = cfg;
    pc.max_parallel = p;
    auto pe = CodeExecutor::Create(pc);
    LR_CHECK(pe.ok(), pe.status().ToString());
    std::vector<std::pair<std::string, CodeTask>> batch(static_cast<size_t>(jobs), {source, task});
    (void)(*pe)->ExecuteBatch({{source, task}});
    auto t1 = Clock::now();
    auto reports = (*pe)->ExecuteBatch(batch);
    double s = std::chrono::duration<double>(Clock::now() - t1).count();
    for (const auto& r : reports) check(r);
    double rate = jobs * tests_per_job / s;
    best = std::max(best, rate);
    t.AddRow({"pool", std::to_string(p), std::to_string(jobs) + "x" + std::to_string(tests_per_job), Fmt(rate, 1),
              Fmt(1000.0 / rate, 1), Fmt(rate / serial, 2) + "x"});
  }
  t.Print();
  targets->push_back({"reward_code_pool_speedup", best / serial, ">=", hw >= 2 ? 1.5 : 1.0});
  targets->push_back({"reward_code_python_runs_per_s", best, ">=", 10});
}

}  // namespace lightrl::bench
