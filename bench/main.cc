// lightrl-bench <suite> [--threads N] [--quick] [suite args...]
// Suites: attention, rollout, trainer, reward (one per area; see bench/README.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "bench/bench.h"
#include "core/logging.h"
#include "core/runtime.h"

int main(int argc, char** argv) {
  using namespace lightrl::bench;
  CLI::App app{"lightrl-bench: speed measurements with in-run baselines and TARGET lines"};
  BenchOptions options;
  std::string suite;
  app.add_option("suite", suite, "attention | rollout | trainer | reward")
      ->required()
      ->check(CLI::IsMember({"attention", "rollout", "trainer", "reward"}));
  app.add_option("--threads", options.threads, "libtorch threads (0 = cores available)");
  app.add_flag("--quick", options.quick, "smaller sizes, fewer repetitions");
  app.add_option("args", options.args, "suite-specific arguments");
  CLI11_PARSE(app, argc, argv);
  lightrl::InitLogging({"bench", 0, "warn"});
  int threads = lightrl::ConfigureThreads(options.threads);
  std::printf("lightrl-bench %s  threads=%d%s\n", suite.c_str(), threads, options.quick ? "  (quick)" : "");
  try {
    if (suite == "attention") return RunAttentionSuite(options);
    if (suite == "rollout") return RunRolloutSuite(options);
    if (suite == "trainer") return RunTrainerSuite(options);
    if (suite == "reward") return RunRewardSuite(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lightrl-bench %s failed: %s\n", suite.c_str(), e.what());
    return 1;
  }
  return 2;
}
