// Placeholder until this section lands: refuses clearly instead of printing fake numbers.
#include "bench/bench.h"
#include "core/check.h"

namespace lightrl::bench {

void DecodeScalingSection(const BenchOptions&, std::vector<Target>*) { LR_FAIL("DecodeScalingSection: not implemented yet"); }

}  // namespace lightrl::bench
