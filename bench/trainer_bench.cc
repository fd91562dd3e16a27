// Placeholder until the trainer suite lands: refuses clearly instead of printing fake numbers.
#include <cstdio>

#include "bench/bench.h"

namespace lightrl::bench {

int RunTrainerSuite(const BenchOptions&) {
  std::fprintf(stderr, "lightrl-bench trainer: not implemented yet\n");
  return 3;
}

}  // namespace lightrl::bench
