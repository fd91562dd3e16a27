// Placeholder until the rollout suite lands: refuses clearly instead of printing fake numbers.
#include <cstdio>

#include "bench/bench.h"

namespace lightrl::bench {

int RunRolloutSuite(const BenchOptions&) {
  std::fprintf(stderr, "lightrl-bench rollout: not implemented yet\n");
  return 3;
}

}  // namespace lightrl::bench
