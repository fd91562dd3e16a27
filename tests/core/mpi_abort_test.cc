// A rank that fails must end the whole MPI job with a non-zero status and the reason in the log,
// not leave the other ranks blocked in a collective. Launches its own `mpirun -np 2` of
// mpi_abort_helper (so it is not itself run under mpirun), bounded by `timeout`.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

struct JobResult {
  int exit_code = -1;
  std::string output;
};

JobResult Launch(const std::string& mode) {
  const std::string cmd = std::string("timeout 60 ") + LIGHTRL_MPIEXEC +
                          " -n 2 --oversubscribe --bind-to none --allow-run-as-root " +
                          LIGHTRL_ABORT_HELPER + " " + mode + " 2>&1";
  JobResult run;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return run;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) run.output.append(buf.data(), n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

TEST(MpiAbortTest, AnExceptionOnOneRankAbortsTheJobWithItsReason) {
  const JobResult run = Launch("throw");
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.exit_code, 124) << "the job hung until timeout killed it:\n" << run.output;
  EXPECT_NE(run.output.find("rank 1: fatal:"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("batch of 7 samples, expected 8"), std::string::npos) << run.output;
}

TEST(MpiAbortTest, AbortJobEndsTheJobWithItsReason) {
  const JobResult run = Launch("status");
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.exit_code, 124) << "the job hung until timeout killed it:\n" << run.output;
  EXPECT_NE(run.output.find("rank 1: fatal: reward worker lost: no heartbeat for 30 s"), std::string::npos)
      << run.output;
}

}  // namespace
