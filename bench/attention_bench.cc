// Placeholder until the attention suite lands: refuses clearly instead of printing fake numbers.
#include <cstdio>

#include "bench/bench.h"

namespace lightrl::bench {

int RunAttentionSuite(const BenchOptions&) {
  std::fprintf(stderr, "lightrl-bench attention: not implemented yet\n");
  return 3;
}

}  // namespace lightrl::bench
