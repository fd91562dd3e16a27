// lightrl-bench: shared harness for the per-area suites (attention, rollout, trainer, reward).
//
// Convention (DEVELOPERS.md): each suite prints tables of ratios against a baseline measured in
// the same run, then one line per target:
//   TARGET <name> value=<v> goal=<op><g> PASS|MISS
// Timing lives here, never in unit tests.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace lightrl::bench {

struct BenchOptions {
  int threads = 0;          // libtorch intra-op threads (0 = cores available)
  bool quick = false;       // smaller sizes / fewer reps (smoke runs, CI)
  std::vector<std::string> args;  // suite-specific extra arguments
};

// Median wall time in seconds of fn() over at least `min_reps` runs and `min_seconds` total,
// after `warmup` untimed runs.
double TimeMedian(const std::function<void()>& fn, int min_reps = 3, double min_seconds = 0.5,
                  int warmup = 1);

// A plain-text table printed with aligned columns.
class Table {
 public:
  explicit Table(std::string title, std::vector<std::string> columns);
  void AddRow(std::vector<std::string> cells);
  void Print() const;

 private:
  std::string title_;
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
};

std::string Fmt(double v, int precision = 3);

// Target lines. op is one of ">=", "<=".
struct Target {
  std::string name;
  double value = 0;
  std::string op;
  double goal = 0;
  bool pass() const;
};
// Prints one TARGET line per target; returns the number of misses.
int PrintTargets(const std::vector<Target>& targets);

// Achieved fp32 matmul rate in GFLOP/s at n x n x n on the current thread setting (the
// in-run baseline for FLOP-rate and MFU targets).
double MeasureMatmulGflops(int n = 1024);
// The same for model::PackedGemm (the decode step's AVX-512 kernel) at n x n x n, rows split over
// the intra-op threads; 0 where PackedGemm is unavailable. On CPUs where libtorch's BLAS runs
// narrower kernels than the hardware has (Debian's OpenBLAS 0.3.21 runs AVX2 kernels on AVX-512
// AMD Zen), this is the higher of the two rates, and a compute limit must use it.
double MeasurePackedGemmGflops(int n = 1024);

// Suite entry points (one translation unit each). Return 0 on success (targets may MISS; a
// miss is reported, not an error), non-zero on a failure to run.
int RunAttentionSuite(const BenchOptions& options);
int RunRolloutSuite(const BenchOptions& options);
int RunTrainerSuite(const BenchOptions& options);
int RunRewardSuite(const BenchOptions& options);

// Sections shared between suites (each prints its own tables and appends its targets).
// attention suite: decode time per token vs context, tiny hybrid vs all-softmax (decode_bench.cc).
void DecodeScalingSection(const BenchOptions& options, std::vector<Target>* targets);
// reward suite: sandboxed code-executor throughput with the worker pool (reward_code_bench.cc).
void CodeExecutorSection(const BenchOptions& options, std::vector<Target>* targets);

}  // namespace lightrl::bench
