// MPI session, communicators, role split, scalar collectives, agreement and abort (see mpi.h).
#include "core/comm/mpi.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "core/check.h"
#include "core/logging.h"

namespace lightrl::comm {

namespace {

int ToMpiLevel(ThreadLevel level) {
  switch (level) {
    case ThreadLevel::kSingle: return MPI_THREAD_SINGLE;
    case ThreadLevel::kFunneled: return MPI_THREAD_FUNNELED;
    case ThreadLevel::kSerialized: return MPI_THREAD_SERIALIZED;
    case ThreadLevel::kMultiple: return MPI_THREAD_MULTIPLE;
  }
  return MPI_THREAD_FUNNELED;
}

ThreadLevel FromMpiLevel(int level) {
  if (level >= MPI_THREAD_MULTIPLE) return ThreadLevel::kMultiple;
  if (level >= MPI_THREAD_SERIALIZED) return ThreadLevel::kSerialized;
  if (level >= MPI_THREAD_FUNNELED) return ThreadLevel::kFunneled;
  return ThreadLevel::kSingle;
}

// Largest element count passed to one MPI call (counts are int).
constexpr int64_t kMaxChunkBytes = int64_t{1} << 30;

}  // namespace

// ---- MpiComm ---------------------------------------------------------------------------------

MpiComm::MpiComm(MPI_Comm comm, bool owned, std::string name)
    : comm_(comm), owned_(owned), name_(std::move(name)) {
  if (comm_ != MPI_COMM_NULL) {
    LR_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    LR_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
}

MpiComm::~MpiComm() {
  // Communicators still alive after MPI_Finalize (e.g. members of objects destroyed late) are
  // released by MPI itself; freeing them then would be an error.
  if (owned_ && comm_ != MPI_COMM_NULL && MpiInitialized()) MPI_Comm_free(&comm_);
}

MpiComm::MpiComm(MpiComm&& other) noexcept
    : comm_(other.comm_), owned_(other.owned_), rank_(other.rank_), size_(other.size_),
      name_(std::move(other.name_)) {
  other.comm_ = MPI_COMM_NULL;
  other.owned_ = false;
}

MpiComm& MpiComm::operator=(MpiComm&& other) noexcept {
  if (this != &other) {
    if (owned_ && comm_ != MPI_COMM_NULL && MpiInitialized()) MPI_Comm_free(&comm_);
    comm_ = other.comm_;
    owned_ = other.owned_;
    rank_ = other.rank_;
    size_ = other.size_;
    name_ = std::move(other.name_);
    other.comm_ = MPI_COMM_NULL;
    other.owned_ = false;
  }
  return *this;
}

MpiComm MpiComm::World() {
  LR_CHECK(MpiInitialized(), "MpiComm::World() called before MPI_Init (create an MpiSession in main)");
  return MpiComm(MPI_COMM_WORLD, false, "world");
}

std::string MpiComm::Describe() const {
  if (!valid()) return "communicator '" + name_ + "' (null on this rank)";
  return "communicator '" + name_ + "' (rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ")";
}

MpiComm MpiComm::Split(int color, int key, std::string name) const {
  LR_CHECK(valid(), "Split on a null communicator '", name_, "'");
  MPI_Comm out = MPI_COMM_NULL;
  LR_MPI_CHECK(MPI_Comm_split(comm_, color, key, &out));
  return MpiComm(out, out != MPI_COMM_NULL, std::move(name));
}

void MpiComm::Barrier() const { LR_MPI_CHECK(MPI_Barrier(comm_)); }

// ---- session ---------------------------------------------------------------------------------

bool MpiInitialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

int WorldRank() {
  if (!MpiInitialized()) return 0;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int WorldSize() {
  if (!MpiInitialized()) return 1;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

MpiSession::MpiSession(int* argc, char*** argv, ThreadLevel level) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = 0;
  if (!initialized) {
    LR_MPI_CHECK(MPI_Init_thread(argc, argv, ToMpiLevel(level), &provided));
    owns_ = true;
  } else {
    LR_MPI_CHECK(MPI_Query_thread(&provided));
  }
  provided_ = FromMpiLevel(provided);
  LR_CHECK(provided >= ToMpiLevel(level), "MPI granted thread level ", provided, " but ",
           ToMpiLevel(level), " was requested (HINT: use an MPI built with thread support)");
  // Errors come back as return codes so LR_MPI_CHECK can report the call and MPI's message;
  // the abort then happens through AbortJob with that reason.
  LR_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  world_ = MpiComm::World();
}

MpiSession::~MpiSession() {
  if (!owns_ || !MpiInitialized()) return;
  if (std::uncaught_exceptions() > 0) {
    // Finalize would block waiting for ranks that are still in a collective.
    std::fprintf(stderr, "rank %d: exception in flight while shutting down MPI; aborting the job\n",
                 WorldRank());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  world_ = MpiComm();
  MPI_Finalize();
}

// ---- roles -----------------------------------------------------------------------------------

const char* RoleName(Role role) {
  switch (role) {
    case Role::kTrainer: return "trainer";
    case Role::kRollout: return "rollout";
    case Role::kReward: return "reward";
  }
  return "unknown";
}

std::vector<int> RoleAssignment::WorldRanks(Role r) const {
  int begin = 0, count = trainer_ranks;
  if (r == Role::kRollout) begin = trainer_ranks, count = rollout_ranks;
  if (r == Role::kReward) begin = trainer_ranks + rollout_ranks, count = reward_ranks;
  std::vector<int> out(count);
  for (int i = 0; i < count; ++i) out[i] = begin + i;
  return out;
}

std::string RoleAssignment::Describe() const {
  return std::string(RoleName(role)) + " " + std::to_string(role_rank) + "/" + std::to_string(role_size) +
         " (world rank " + std::to_string(WorldRank()) + " of " +
         std::to_string(trainer_ranks + rollout_ranks + reward_ranks) + ")";
}

StatusOr<RoleAssignment> SplitRoles(const MpiComm& world, const RoleLayout& layout) {
  LR_CHECK(world.valid(), "SplitRoles on a null communicator");
  // Every rank must use the same layout, or they would disagree about who is who.
  const std::vector<double> mine = {static_cast<double>(layout.rollout_ranks),
                                    static_cast<double>(layout.reward_ranks)};
  if (AllReduceMin(world, mine) != AllReduceMax(world, mine)) {
    return FailedPrecondition("roles: ranks were started with different roles.rollout_ranks / "
                              "roles.reward_ranks (this rank: " + std::to_string(layout.rollout_ranks) +
                              " / " + std::to_string(layout.reward_ranks) +
                              "; HINT: pass the same config to every rank)");
  }
  const int n = world.size();
  if (layout.rollout_ranks < 0 || layout.reward_ranks < 0) {
    return InvalidArgument("roles: roles.rollout_ranks (" + std::to_string(layout.rollout_ranks) +
                           ") and roles.reward_ranks (" + std::to_string(layout.reward_ranks) +
                           ") must be >= 0");
  }
  const int trainers = n - layout.rollout_ranks - layout.reward_ranks;
  if (trainers < 1) {
    return InvalidArgument(
        "roles: roles.rollout_ranks=" + std::to_string(layout.rollout_ranks) +
        " + roles.reward_ranks=" + std::to_string(layout.reward_ranks) + " leave " +
        std::to_string(trainers) + " trainer ranks in a world of " + std::to_string(n) +
        " ranks; expected at least 1 (HINT: mpirun -np " +
        std::to_string(layout.rollout_ranks + layout.reward_ranks + 1) +
        " or lower roles.rollout_ranks / roles.reward_ranks)");
  }
  RoleAssignment a;
  a.trainer_ranks = trainers;
  a.rollout_ranks = layout.rollout_ranks;
  a.reward_ranks = layout.reward_ranks;
  const int r = world.rank();
  if (r < trainers) {
    a.role = Role::kTrainer, a.role_rank = r, a.role_size = trainers;
  } else if (r < trainers + layout.rollout_ranks) {
    a.role = Role::kRollout, a.role_rank = r - trainers, a.role_size = layout.rollout_ranks;
  } else {
    a.role = Role::kReward, a.role_rank = r - trainers - layout.rollout_ranks,
    a.role_size = layout.reward_ranks;
  }
  a.role_comm = world.Split(static_cast<int>(a.role), r, RoleName(a.role));
  const bool in_weights = layout.rollout_ranks > 0 &&
                          ((a.role == Role::kTrainer && a.role_rank == 0) || a.role == Role::kRollout);
  // key = world rank: trainer rank 0 (world rank 0) becomes rank 0, the broadcast root.
  a.weights_comm = world.Split(in_weights ? 0 : MPI_UNDEFINED, r, "weights");
  return a;
}

// ---- scalar collectives ----------------------------------------------------------------------

namespace {
template <typename T>
std::vector<T> AllReduceVec(const MpiComm& comm, std::vector<T> values, MPI_Datatype type, MPI_Op op) {
  LR_CHECK(comm.valid(), "all-reduce on a null communicator '", comm.name(), "'");
  LR_CHECK(values.size() <= static_cast<size_t>(INT_MAX), "all-reduce of ", values.size(), " values");
  // An empty vector still participates (count 0), so every rank makes the same calls.
  LR_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), type, op,
                             comm.handle()));
  return values;
}
}  // namespace

int64_t AllReduceSum(const MpiComm& comm, int64_t value) {
  return AllReduceVec<int64_t>(comm, {value}, MPI_INT64_T, MPI_SUM)[0];
}
double AllReduceSum(const MpiComm& comm, double value) {
  return AllReduceVec<double>(comm, {value}, MPI_DOUBLE, MPI_SUM)[0];
}
std::vector<int64_t> AllReduceSum(const MpiComm& comm, const std::vector<int64_t>& values) {
  return AllReduceVec(comm, values, MPI_INT64_T, MPI_SUM);
}
std::vector<double> AllReduceSum(const MpiComm& comm, const std::vector<double>& values) {
  return AllReduceVec(comm, values, MPI_DOUBLE, MPI_SUM);
}
std::vector<double> AllReduceMax(const MpiComm& comm, const std::vector<double>& values) {
  return AllReduceVec(comm, values, MPI_DOUBLE, MPI_MAX);
}
std::vector<double> AllReduceMin(const MpiComm& comm, const std::vector<double>& values) {
  return AllReduceVec(comm, values, MPI_DOUBLE, MPI_MIN);
}

// ---- agreement, bytes, deadlines -------------------------------------------------------------

double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Status WaitRequest(const MpiComm& comm, MPI_Request* request, const WaitOptions& wait, double started_at_s) {
  if (wait.timeout_s <= 0) {
    LR_MPI_CHECK(MPI_Wait(request, MPI_STATUS_IGNORE));
    return Status::Ok();
  }
  // MPI_Test drives progress; back off from spinning to short sleeps so a long wait does not burn
  // a core that libtorch could use.
  int done = 0;
  for (int spins = 0;; ++spins) {
    LR_MPI_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return Status::Ok();
    const double waited = MonotonicSeconds() - started_at_s;
    if (waited > wait.timeout_s) {
      return DeadlineExceeded((wait.what.empty() ? std::string("MPI operation") : wait.what) + " on " +
                              comm.Describe() + " did not complete within " +
                              std::to_string(wait.timeout_s) +
                              " s (a peer rank is dead, stuck or not calling the same collective; "
                              "HINT: the job must be aborted)");
    }
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(spins > 5000 ? 1000 : 50));
  }
}

Status BroadcastBytes(const MpiComm& comm, int root, std::string* bytes, const WaitOptions& wait) {
  LR_CHECK(comm.valid(), "broadcast on a null communicator '", comm.name(), "'");
  LR_CHECK(root >= 0 && root < comm.size(), "broadcast root ", root, " outside ", comm.Describe());
  const double start = MonotonicSeconds();
  uint64_t size = comm.rank() == root ? bytes->size() : 0;
  MPI_Request req;
  LR_MPI_CHECK(MPI_Ibcast(&size, 1, MPI_UINT64_T, root, comm.handle(), &req));
  LR_RETURN_IF_ERROR(WaitRequest(comm, &req, wait, start));
  if (comm.rank() != root) bytes->resize(size);
  for (uint64_t offset = 0; offset < size; offset += kMaxChunkBytes) {
    const int n = static_cast<int>(std::min<uint64_t>(kMaxChunkBytes, size - offset));
    LR_MPI_CHECK(MPI_Ibcast(bytes->data() + offset, n, MPI_BYTE, root, comm.handle(), &req));
    LR_RETURN_IF_ERROR(WaitRequest(comm, &req, wait, start));
  }
  return Status::Ok();
}

Status AgreeOnStatus(const MpiComm& comm, const Status& local, const std::string& what,
                     const WaitOptions& wait) {
  LR_CHECK(comm.valid(), "AgreeOnStatus on a null communicator '", comm.name(), "'");
  const double start = MonotonicSeconds();
  WaitOptions w = wait;
  if (w.what.empty()) w.what = what + " (status agreement)";
  int first = local.ok() ? comm.size() : comm.rank();
  MPI_Request req;
  LR_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm.handle(), &req));
  LR_RETURN_IF_ERROR(WaitRequest(comm, &req, w, start));
  if (first == comm.size()) return Status::Ok();
  // The first failing rank tells everyone why: 4 bytes of code, then the message.
  std::string reason;
  if (comm.rank() == first) {
    const int32_t code = static_cast<int32_t>(local.code());
    reason.assign(reinterpret_cast<const char*>(&code), 4);
    reason += local.message();
  }
  WaitOptions rest = w;
  if (rest.timeout_s > 0) rest.timeout_s = std::max(1e-3, w.timeout_s - (MonotonicSeconds() - start));
  LR_RETURN_IF_ERROR(BroadcastBytes(comm, first, &reason, rest));
  int32_t code = static_cast<int32_t>(StatusCode::kInternal);
  if (reason.size() >= 4) std::memcpy(&code, reason.data(), 4);
  return Status(static_cast<StatusCode>(code),
                what + ": rank " + std::to_string(first) + " of " + comm.name() + ": " +
                    (reason.size() >= 4 ? reason.substr(4) : std::string("(no reason)")));
}

// ---- abort -----------------------------------------------------------------------------------

void AbortJob(const std::string& reason, int exit_code) {
  const int rank = WorldRank();
  try {
    Logger("comm")->critical("rank {}: fatal: {}", rank, reason);
    Logger("comm")->flush();
  } catch (...) {
    std::fprintf(stderr, "rank %d: fatal: %s\n", rank, reason.c_str());
  }
  std::fflush(stdout);
  std::fflush(stderr);
  if (MpiInitialized()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

int RunOrAbort(const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    AbortJob(e.what());
  } catch (...) {
    AbortJob("unknown exception (not derived from std::exception)");
  }
}

}  // namespace lightrl::comm
