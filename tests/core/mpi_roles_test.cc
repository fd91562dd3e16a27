// Tests for core/comm/mpi.h under `mpirun -np 3`: role split, scalar all-reduces, status
// agreement, byte broadcast, deadlines on collectives. Every test is collective: all ranks run
// the same test in the same order, and tests use EXPECT (not ASSERT) before collectives so a
// failing rank never leaves the others blocked.
#include <gtest/gtest.h>

#include <thread>

#include "core/comm/mpi.h"

namespace lightrl::comm {
namespace {

MpiComm& World() {
  static MpiComm* world = new MpiComm(MpiComm::World());
  return *world;
}

TEST(MpiRolesTest, RunsOnThreeRanks) { EXPECT_EQ(World().size(), 3) << "run under mpirun -np 3"; }

TEST(MpiRolesTest, SplitOneTrainerOneRolloutOneReward) {
  auto a = SplitRoles(World(), RoleLayout{1, 1});
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return;
  const int r = World().rank();
  const Role expected[] = {Role::kTrainer, Role::kRollout, Role::kReward};
  EXPECT_EQ(a->role, expected[r]);
  EXPECT_EQ(a->role_rank, 0);
  EXPECT_EQ(a->role_size, 1);
  EXPECT_EQ(a->role_comm.size(), 1);
  EXPECT_EQ(a->WorldRanks(Role::kTrainer), std::vector<int>{0});
  EXPECT_EQ(a->WorldRanks(Role::kRollout), std::vector<int>{1});
  EXPECT_EQ(a->WorldRanks(Role::kReward), std::vector<int>{2});
  // The weight-sync group is trainer rank 0 (as rank 0, the root) + the rollout rank.
  if (r == 2) {
    EXPECT_FALSE(a->weights_comm.valid());
  } else {
    EXPECT_TRUE(a->weights_comm.valid());
    EXPECT_EQ(a->weights_comm.size(), 2);
    EXPECT_EQ(a->weights_comm.rank(), r);
  }
  EXPECT_NE(a->Describe().find(RoleName(expected[r])), std::string::npos) << a->Describe();
}

TEST(MpiRolesTest, TwoTrainersShareADataParallelCommunicator) {
  auto a = SplitRoles(World(), RoleLayout{0, 1});
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return;
  const int r = World().rank();
  EXPECT_EQ(a->trainer_ranks, 2);
  EXPECT_EQ(a->role, r < 2 ? Role::kTrainer : Role::kReward);
  EXPECT_EQ(a->role_comm.size(), r < 2 ? 2 : 1);
  EXPECT_EQ(a->role_comm.rank(), r < 2 ? r : 0);
  EXPECT_FALSE(a->weights_comm.valid());  // no rollout ranks, no weight-sync group
  // The trainer communicator really is a separate group: a sum over it sees only trainers.
  const int64_t sum = AllReduceSum(a->role_comm, static_cast<int64_t>(r + 1));
  EXPECT_EQ(sum, r < 2 ? 1 + 2 : 3);
}

TEST(MpiRolesTest, ColocatedModeMakesEveryRankATrainer) {
  auto a = SplitRoles(World(), RoleLayout{0, 0});
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return;
  EXPECT_EQ(a->role, Role::kTrainer);
  EXPECT_EQ(a->role_size, 3);
  EXPECT_EQ(a->role_rank, World().rank());
  EXPECT_EQ(a->role_comm.size(), 3);
}

TEST(MpiRolesTest, TooFewRanksIsAnErrorNamingTheKeysOnEveryRank) {
  auto a = SplitRoles(World(), RoleLayout{2, 1});
  EXPECT_FALSE(a.ok());
  if (a.ok()) return;
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = a.status().message();
  EXPECT_NE(m.find("roles.rollout_ranks=2"), std::string::npos) << m;
  EXPECT_NE(m.find("world of 3 ranks"), std::string::npos) << m;
  EXPECT_NE(m.find("HINT: mpirun -np 4"), std::string::npos) << m;
}

TEST(MpiRolesTest, RanksWithDifferentLayoutsAllFail) {
  RoleLayout layout{1, 1};
  if (World().rank() == 2) layout.reward_ranks = 0;  // a rank started with another config
  auto a = SplitRoles(World(), layout);
  EXPECT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(a.status().message().find("different roles"), std::string::npos) << a.status();
}

TEST(MpiRolesTest, ScalarAllReduces) {
  const int r = World().rank();
  // Uneven token counts, as the global normaliser sees them; exact in int64.
  const int64_t tokens[] = {1000000000007LL, 3, 123456789};
  EXPECT_EQ(AllReduceSum(World(), tokens[r]), 1000000000007LL + 3 + 123456789);
  EXPECT_EQ(AllReduceSum(World(), std::vector<int64_t>{r, 10 * r, -r}), (std::vector<int64_t>{3, 30, -3}));
  EXPECT_DOUBLE_EQ(AllReduceSum(World(), 0.5 * r), 1.5);
  EXPECT_EQ(AllReduceMax(World(), std::vector<double>{double(r), -double(r)}), (std::vector<double>{2, 0}));
  EXPECT_EQ(AllReduceMin(World(), std::vector<double>{double(r), -double(r)}), (std::vector<double>{0, -2}));
  EXPECT_TRUE(AllReduceSum(World(), std::vector<double>{}).empty());
}

TEST(MpiRolesTest, AgreeOnStatusReportsTheLowestFailingRankEverywhere) {
  const int r = World().rank();
  EXPECT_TRUE(AgreeOnStatus(World(), Status::Ok(), "step").ok());
  Status local = r == 0 ? Status::Ok() : (r == 1 ? NotFound("no checkpoint in /x") : Internal("other"));
  Status s = AgreeOnStatus(World(), local, "resume");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "resume: rank 1 of world: no checkpoint in /x");
}

TEST(MpiRolesTest, BroadcastBytesCarriesArbitraryData) {
  std::string bytes;
  if (World().rank() == 1) {
    bytes.resize(3 << 20);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131) % 251);
  }
  EXPECT_TRUE(BroadcastBytes(World(), 1, &bytes, {5.0, "test"}).ok());
  EXPECT_EQ(bytes.size(), size_t{3} << 20);
  bool same = true;
  for (size_t i = 0; i < bytes.size(); ++i) same &= bytes[i] == static_cast<char>((i * 131) % 251);
  EXPECT_TRUE(same);
  std::string empty = World().rank() == 0 ? "" : "stale";
  EXPECT_TRUE(BroadcastBytes(World(), 0, &empty).ok());
  EXPECT_EQ(empty, "");
}

TEST(MpiRolesTest, ACollectiveWithADeadlineReportsALateRank) {
  // A private communicator: the abandoned collective must not disturb the others.
  MpiComm comm = World().Split(0, World().rank(), "deadline-test");
  if (comm.rank() == 2) {
    // A rank that is busy elsewhere for longer than the others' deadline; it joins late.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_TRUE(AgreeOnStatus(comm, Status::Ok(), "late").ok());
  } else {
    const double t0 = MonotonicSeconds();
    Status s = AgreeOnStatus(comm, Status::Ok(), "weight sync v3", {0.3, ""});
    const double waited = MonotonicSeconds() - t0;
    EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
    EXPECT_NE(s.message().find("weight sync v3"), std::string::npos) << s;
    EXPECT_NE(s.message().find("communicator 'deadline-test'"), std::string::npos) << s;
    EXPECT_GE(waited, 0.29);
    EXPECT_LT(waited, 1.4);
  }
  World().Barrier();  // drives progress so the late rank's collective completes
}

}  // namespace
}  // namespace lightrl::comm

int main(int argc, char** argv) {
  lightrl::comm::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int failed = RUN_ALL_TESTS();
  // Every rank exits with the worst result, so mpirun's status reflects any failing rank.
  int worst = 0;
  MPI_Allreduce(&failed, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
