// Helper for mpi_abort_test: a 2-rank job where rank 1 fails while rank 0 waits in a collective.
// Without the abort path rank 0 would block in MPI_Barrier forever; with it, the job ends
// non-zero and the reason is in the output.
//   mode "throw":  rank 1 throws inside RunOrAbort
//   mode "status": rank 1 calls AbortJob with a reason directly
#include <cstring>
#include <stdexcept>

#include "core/check.h"
#include "core/comm/mpi.h"

int main(int argc, char** argv) {
  lightrl::comm::MpiSession mpi(&argc, &argv);
  const bool direct = argc > 1 && std::strcmp(argv[1], "status") == 0;
  return lightrl::comm::RunOrAbort([&]() -> int {
    if (mpi.world().rank() == 1) {
      if (direct) lightrl::comm::AbortJob("reward worker lost: no heartbeat for 30 s", 3);
      LR_CHECK(false, "rank 1 hit a broken invariant: batch of 7 samples, expected 8");
    }
    mpi.world().Barrier();  // rank 0 would wait here forever
    return 0;
  });
}
