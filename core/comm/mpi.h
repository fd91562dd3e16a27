// MPI for lightrl: RAII init/finalize, communicators, the role split of the world (trainer /
// rollout / reward ranks), scalar all-reduces, byte broadcasts, status agreement, and the abort
// path. Tensor collectives (all-reduce of gradients, weight broadcast) are in
// core/comm/mpi_tensors.h; this header does not include libtorch.
//
// Failure policy (style.md §8): a collective must never hang because one rank failed locally.
//   * Helpers that can fail on some ranks only (bad input, mismatched shapes) first agree on the
//     outcome (AgreeOnStatus), so every rank returns the same error instead of some ranks
//     entering the collective alone.
//   * Anything unrecoverable goes through AbortJob(reason): it logs the reason with the rank and
//     calls MPI_Abort(MPI_COMM_WORLD), which makes mpirun tear the whole job down with a non-zero
//     exit. RunOrAbort() wraps main's body; MpiSession's destructor aborts instead of finalizing
//     when an exception is in flight.
//   * Collectives with a deadline (WaitOptions::timeout_s > 0) use non-blocking MPI and return
//     DeadlineExceeded naming the operation and communicator. After that the communicator is in an
//     undefined state: the caller must AbortJob (there is no safe way to cancel a collective).
//
// Thread-safety: MPI is initialized with MPI_THREAD_FUNNELED by default (only the main thread
// calls MPI). Communicator objects are not thread-safe.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::comm {

// A communicator handle. Owned communicators (from Split) are freed on destruction; World() is
// not owned. A default-constructed MpiComm is null (this rank is not part of the group).
// Move-only.
class MpiComm {
 public:
  MpiComm() = default;
  MpiComm(MPI_Comm comm, bool owned, std::string name);
  ~MpiComm();
  MpiComm(MpiComm&& other) noexcept;
  MpiComm& operator=(MpiComm&& other) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  // MPI_COMM_WORLD. REQUIRES: MPI is initialized.
  static MpiComm World();

  bool valid() const { return comm_ != MPI_COMM_NULL; }
  MPI_Comm handle() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  // "world", "trainer", "weights", ... (for messages). Describe() adds rank/size.
  const std::string& name() const { return name_; }
  std::string Describe() const;  // "communicator 'trainer' (rank 1 of 2)"

  // Collective over this communicator. Ranks passing the same color end up in one new
  // communicator ordered by `key` (ties by rank); MPI_UNDEFINED yields a null MpiComm.
  MpiComm Split(int color, int key, std::string name) const;

  void Barrier() const;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  bool owned_ = false;
  int rank_ = -1;
  int size_ = 0;
  std::string name_;
};

enum class ThreadLevel { kSingle, kFunneled, kSerialized, kMultiple };

// RAII MPI_Init_thread / MPI_Finalize (TensorRT-LLM's MpiSession shape). One per process, in main.
// If MPI was already initialized (e.g. by a test fixture) it neither initializes nor finalizes.
// Destroying it while an exception propagates calls MPI_Abort instead of MPI_Finalize (finalize
// would wait for the other ranks forever).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv, ThreadLevel level = ThreadLevel::kFunneled);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  const MpiComm& world() const { return world_; }
  // The thread level MPI granted (may be lower than requested; checked >= requested).
  ThreadLevel provided() const { return provided_; }

 private:
  bool owns_ = false;
  ThreadLevel provided_ = ThreadLevel::kSingle;
  MpiComm world_;
};

bool MpiInitialized();  // initialized and not yet finalized
int WorldRank();        // 0 when MPI is not initialized
int WorldSize();        // 1 when MPI is not initialized

// ---- roles -----------------------------------------------------------------------------------

enum class Role { kTrainer, kRollout, kReward };
const char* RoleName(Role role);  // "trainer", "rollout", "reward"

// How the world is split (trainer config `roles.*`). World ranks are assigned in order:
// [0, T) trainer, [T, T + rollout_ranks) rollout, then reward_ranks reward ranks, where
// T = world size - rollout_ranks - reward_ranks must be >= 1. Colocated mode (trainers also
// generate and score) is rollout_ranks = reward_ranks = 0.
struct RoleLayout {
  int rollout_ranks = 1;
  int reward_ranks = 1;
};

struct RoleAssignment {
  Role role = Role::kTrainer;
  int role_rank = 0;        // index of this rank within its role
  int role_size = 0;        // ranks of this role
  int trainer_ranks = 0;
  int rollout_ranks = 0;
  int reward_ranks = 0;
  MpiComm role_comm;        // every rank of this role (the trainer data-parallel group for trainers)
  // Trainer rank 0 (rank 0 here, the broadcast root) + every rollout rank: the weight-sync group.
  // Null on other ranks, and when there are no rollout ranks.
  MpiComm weights_comm;

  // World ranks of `role`, ascending.
  std::vector<int> WorldRanks(Role role) const;
  // "trainer 0/2 (world rank 0 of 4)"
  std::string Describe() const;
};

// Collective over `world`. Validates the layout against the world size (InvalidArgument naming
// roles.rollout_ranks / roles.reward_ranks and the world size, with a HINT) and checks that every
// rank passed the same layout (FailedPrecondition otherwise). Every rank gets the same error.
StatusOr<RoleAssignment> SplitRoles(const MpiComm& world, const RoleLayout& layout);

// ---- scalar collectives (blocking; every rank must call with the same count) -----------------

int64_t AllReduceSum(const MpiComm& comm, int64_t value);
double AllReduceSum(const MpiComm& comm, double value);
std::vector<int64_t> AllReduceSum(const MpiComm& comm, const std::vector<int64_t>& values);
std::vector<double> AllReduceSum(const MpiComm& comm, const std::vector<double>& values);
std::vector<double> AllReduceMax(const MpiComm& comm, const std::vector<double>& values);
std::vector<double> AllReduceMin(const MpiComm& comm, const std::vector<double>& values);

// ---- agreement, bytes, deadlines --------------------------------------------------------------

struct WaitOptions {
  double timeout_s = 0;   // 0 = wait forever (blocking MPI); > 0 = DeadlineExceeded after that
  std::string what;       // operation name for messages ("weight sync v7")
};

// Collective. OK if `local` is OK on every rank; otherwise every rank returns the error of the
// lowest failing rank, as Status(code, "<what>: rank <r> of <comm name>: <message>"). With a
// timeout in `wait`, DeadlineExceeded if some rank does not join in time.
Status AgreeOnStatus(const MpiComm& comm, const Status& local, const std::string& what,
                     const WaitOptions& wait = {});

// Collective. Broadcasts `*bytes` from `root` (any length; resized on receivers). With a timeout
// the broadcast is non-blocking and DeadlineExceeded is returned if it does not complete in time.
Status BroadcastBytes(const MpiComm& comm, int root, std::string* bytes, const WaitOptions& wait = {});

// Waits for `request` (from a non-blocking MPI call) until the deadline of `wait`. A timeout is
// DeadlineExceeded("<what> on <comm.Describe()> did not complete within <t> s ..."); the request
// is left pending (the caller must AbortJob).
Status WaitRequest(const MpiComm& comm, MPI_Request* request, const WaitOptions& wait,
                   double started_at_s);

// Seconds on a monotonic clock (MPI_Wtime).
double MonotonicSeconds();

// ---- abort -----------------------------------------------------------------------------------

// Logs "rank <r>: fatal: <reason>" (critical, also to stderr) and aborts the whole MPI job with
// `exit_code`. Without MPI, exits the process with `exit_code`.
[[noreturn]] void AbortJob(const std::string& reason, int exit_code = 1);

// Runs `body`; an exception escaping it (lightrl::Error, c10::Error, std::exception, anything)
// becomes AbortJob(what()). Returns body's result otherwise. Use around main's body.
int RunOrAbort(const std::function<int()>& body);

}  // namespace lightrl::comm
