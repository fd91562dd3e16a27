#include "core/runtime.h"

#include <ATen/Parallel.h>
#include <sched.h>

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

int ConfigureThreads(int requested) {
  const int n = requested > 0 ? requested : AvailableCores();
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace lightrl
