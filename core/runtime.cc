#include "core/runtime.h"

#include <ATen/Parallel.h>
#include <malloc.h>
#include <sched.h>

#include <climits>
#include <cstdlib>
#include <cstring>

namespace lightrl {

int AvailableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

bool ConfigureAllocator() {
  static const bool applied = [] {
    const char* keep = std::getenv("LIGHTRL_MALLOC_DEFAULTS");
    if (keep != nullptr && std::strcmp(keep, "1") == 0) return false;
    const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1;
    const bool trim_ok = mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
    return mmap_ok && trim_ok;
  }();
  return applied;
}

int ConfigureThreads(int requested) {
  ConfigureAllocator();
  const int n = requested > 0 ? requested : AvailableCores();
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace lightrl
