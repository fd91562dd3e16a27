// Process-wide runtime settings every binary applies at start-up.
#pragma once

namespace lightrl {

// Number of CPU cores this process may run on (sched_getaffinity; respects taskset, cgroups'
// cpusets and mpirun's binding). At least 1.
int AvailableCores();

// Sets libtorch's intra-op thread count. `requested` <= 0 means AvailableCores().
// Returns the count in force afterwards. libtorch itself starts with 1 thread on this platform.
// Also applies ConfigureAllocator() (once per process).
int ConfigureThreads(int requested);

// Keeps freed tensor memory in the process heap instead of returning it to the OS: glibc serves
// allocations above its mmap threshold (dynamic, at most 32 MB) with fresh mmaps, so every large
// temporary of a training step (activations, the lightning layout copies) is page-faulted in
// anew on every call. Measured on the lightning forward at 16K tokens: 60 -> 100 GFLOP/s on one
// core. Sets M_MMAP_THRESHOLD to 1 GiB and M_TRIM_THRESHOLD to 2 GiB (the resident size then
// stays at the process's peak). LIGHTRL_MALLOC_DEFAULTS=1 in the environment leaves glibc's
// defaults. Returns whether the settings were applied.
bool ConfigureAllocator();

}  // namespace lightrl
