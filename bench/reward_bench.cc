// Placeholder until the reward suite lands: refuses clearly instead of printing fake numbers.
#include <cstdio>

#include "bench/bench.h"

namespace lightrl::bench {

int RunRewardSuite(const BenchOptions&) {
  std::fprintf(stderr, "lightrl-bench reward: not implemented yet\n");
  return 3;
}

}  // namespace lightrl::bench
