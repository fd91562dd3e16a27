// Process-wide runtime settings every binary applies at start-up.
#pragma once

namespace lightrl {

// Number of CPU cores this process may run on (sched_getaffinity; respects taskset, cgroups'
// cpusets and mpirun's binding). At least 1.
int AvailableCores();

// Sets libtorch's intra-op thread count. `requested` <= 0 means AvailableCores().
// Returns the count in force afterwards. libtorch itself starts with 1 thread on this platform.
int ConfigureThreads(int requested);

}  // namespace lightrl
