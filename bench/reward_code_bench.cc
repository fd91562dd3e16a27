// Placeholder until this section lands: refuses clearly instead of printing fake numbers.
#include "bench/bench.h"
#include "core/check.h"

namespace lightrl::bench {

void CodeExecutorSection(const BenchOptions&, std::vector<Target>*) { LR_FAIL("CodeExecutorSection: not implemented yet"); }

}  // namespace lightrl::bench
