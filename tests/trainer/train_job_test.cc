// `lightrl train` as users launch it: mpirun with split roles on loopback, colocated mode, a
// standalone reward worker killed mid-run, a protocol-version mismatch, and bad configs. Each
// test runs the real binary (LIGHTRL_BINARY) in a fresh run directory and checks its exit code,
// its stderr and metrics.jsonl.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/job_util.h"

#include "core/comm/zmq_rpc.h"
#include "core/protocol/codec.h"

namespace {

namespace fs = std::filesystem;
using lightrl::testing::CountLines;
using lightrl::testing::Mpirun;
using lightrl::testing::RunCommand;
using RunResult = lightrl::testing::CommandResult;

std::string SourceDir() { return lightrl::testing::SourceDir(LIGHTRL_SOURCE_DIR_DEFAULT); }
std::string FreshDir(const std::string& name) { return lightrl::testing::FreshDir("lightrl_train_job", name); }

// The tiny recipe shrunk to a few seconds per step.
std::string FastOverrides() {
  return " trainer.total_steps=2 rollout.prompts_per_step=2 rollout.samples_per_prompt=4"
         " rollout.max_response_len=8 trainer.threads=1 metrics.tensorboard=false";
}

std::vector<nlohmann::json> ReadMetrics(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string Recipe() { return SourceDir() + "/configs/cispo_tiny.yaml"; }

TEST(TrainJobTest, SplitRolesRunCompletesAndWritesMetrics) {
  const std::string dir = FreshDir("split");
  RunResult r = RunCommand(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                    " --run-dir " + dir + " --resume none");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> m = ReadMetrics(dir);
  ASSERT_EQ(m.size(), 2u) << r.output;
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_EQ(m[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    // 2 prompts x 4 samples, every one scored by the reward rank (none masked).
    EXPECT_EQ(m[i]["samples/total"].get<double>(), 8.0);
    EXPECT_EQ(m[i]["samples/masked"].get<double>(), 0.0);
    EXPECT_GT(m[i]["time/rollout_s"].get<double>(), 0.0);
    EXPECT_TRUE(m[i].contains("reward/mean"));
    // Per task source (one here: "arith"), the same numbers.
    ASSERT_TRUE(m[i].contains("reward/arith/mean")) << m[i].dump();
    EXPECT_EQ(m[i]["reward/arith/mean"], m[i]["reward/mean"]);
    EXPECT_EQ(m[i]["reward/arith/accuracy"], m[i]["reward/accuracy"]);
    EXPECT_EQ(m[i]["samples/arith/count"].get<double>(), 8.0);
    // Weights were published before step 1 (v1) and after every step: step i+1 ends at v(i+2).
    EXPECT_EQ(m[i]["counters/weights_version"].get<double>(), static_cast<double>(i + 2));
    // Synchronous on-policy: the rollout's log-probs are the trainer's (same model code, same weights).
    EXPECT_LT(m[i]["logp/rollout_vs_trainer_abs_max"].get<double>(), 1e-4);
  }
}

TEST(TrainJobTest, ColocatedTwoTrainerRanksRunCompletes) {
  const std::string dir = FreshDir("colocated");
  RunResult r = RunCommand(Mpirun(2) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                    " roles.mode=colocated --run-dir " + dir + " --resume none");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> m = ReadMetrics(dir);
  ASSERT_EQ(m.size(), 2u) << r.output;
  EXPECT_EQ(m[1]["samples/total"].get<double>(), 8.0);
}

TEST(TrainJobTest, AsyncPipelineTrainsOnSamplesOneVersionOld) {
  const std::string dir = FreshDir("async");
  RunResult r = RunCommand(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                           " trainer.total_steps=3 rollout.max_staleness=1 --run-dir " + dir + " --resume none");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> m = ReadMetrics(dir);
  ASSERT_EQ(m.size(), 3u) << r.output;
  // Step 1 has nothing prefetched: generated now, with the weights it trains (v1).
  EXPECT_EQ(m[0]["async/prefetched"].get<double>(), 0.0);
  EXPECT_EQ(m[0]["rollout/staleness_max"].get<double>(), 0.0);
  EXPECT_LT(m[0]["logp/rollout_vs_trainer_abs_max"].get<double>(), 1e-4);
  for (size_t i = 1; i < m.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    // Generated while the previous step trained, with the weights that step started from.
    EXPECT_EQ(m[i]["async/prefetched"].get<double>(), 1.0);
    EXPECT_EQ(m[i]["rollout/staleness_max"].get<double>(), 1.0);
    EXPECT_EQ(m[i]["rollout/staleness_mean"].get<double>(), 1.0);
    EXPECT_EQ(m[i]["samples/total"].get<double>(), 8.0);
    EXPECT_EQ(m[i]["samples/masked"].get<double>(), 0.0);
    // The recomputed old log-probs are those of a newer policy than the one that sampled.
    EXPECT_GT(m[i]["logp/rollout_vs_trainer_abs_max"].get<double>(), 1e-4);
    EXPECT_EQ(m[i]["counters/weights_version"].get<double>(), static_cast<double>(i + 2));
  }
}

TEST(TrainJobTest, KlToTheReferencePolicyAsLossTermAndAsRewardPenalty) {
  for (const std::string mode : {"false", "true"}) {
    SCOPED_TRACE("algorithm.kl.in_reward=" + mode);
    const std::string dir = FreshDir("kl_" + mode);
    RunResult r = RunCommand(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                             " algorithm.kl.coef=0.5 algorithm.kl.in_reward=" + mode + " --run-dir " + dir +
                             " --resume none");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::vector<nlohmann::json> m = ReadMetrics(dir);
    ASSERT_EQ(m.size(), 2u) << r.output;
    // Step 1 samples come from the reference weights themselves; step 2's from the updated
    // policy, which has moved away from the reference.
    EXPECT_LT(m[0]["kl/behaviour_vs_ref"].get<double>(), 1e-7);
    EXPECT_GT(m[1]["kl/behaviour_vs_ref"].get<double>(), 1e-6);
    if (mode == "false") {
      ASSERT_TRUE(m[1].contains("actor/kl")) << m[1].dump();
      EXPECT_GT(m[1]["actor/kl"].get<double>(), 0.0);
    } else {
      EXPECT_GT(m[1]["kl/reward_penalty_mean"].get<double>(), 0.0);
      EXPECT_FALSE(m[1].contains("actor/kl"));
    }
  }
}

// Sends `sig` to this job's world rank `rank`. Returns whether one was found.
bool SignalRank(const std::string& run_dir, int rank, int sig) {
  const std::vector<pid_t> pids = lightrl::testing::RankPids(run_dir, rank);
  for (pid_t pid : pids) ::kill(pid, sig);
  return !pids.empty();
}

struct FaultRun {
  RunResult result;
  double seconds_after_fault = 0;
  bool signalled = false;
};

// Runs `cmd` (a long job in run_dir), waits for its first logged step, sends `sig` to world
// rank `rank`, and waits for the job to end.
FaultRun RunWithFault(const std::string& cmd, const std::string& run_dir, int rank, int sig) {
  FaultRun f;
  std::thread job([&] { f.result = RunCommand(cmd); });
  for (int i = 0; i < 2400 && CountLines(run_dir + "/metrics.jsonl") == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto at = std::chrono::steady_clock::now();
  f.signalled = CountLines(run_dir + "/metrics.jsonl") > 0 && SignalRank(run_dir, rank, sig);
  job.join();
  f.seconds_after_fault = std::chrono::duration<double>(std::chrono::steady_clock::now() - at).count();
  return f;
}

TEST(TrainJobTest, ARankThatDiesEndsTheJobNonZeroNamingIt) {
  // The rollout rank (world rank 1) is killed mid-run: the job must end non-zero with the dead
  // rank named, long before any deadline (rollout.timeout_s is 600 s), instead of hanging.
  const std::string dir = FreshDir("rank_death");
  FaultRun f = RunWithFault(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                                " trainer.total_steps=500 --run-dir " + dir + " --resume none",
                            dir, 1, SIGKILL);
  ASSERT_TRUE(f.signalled) << "world rank 1 not found or no step logged\n" << f.result.output;
  EXPECT_NE(f.result.exit_code, 0) << f.result.output;
  EXPECT_LT(f.seconds_after_fault, 60.0) << f.result.output;
  EXPECT_NE(f.result.output.find("rank 1"), std::string::npos) << "the dead rank is named:\n" << f.result.output;
}

TEST(TrainJobTest, AHungRolloutRankIsReportedAtItsDeadline) {
  // The rollout rank is stopped (alive, never answers): the trainer's request deadline
  // (rollout.timeout_s) fires, names the worker, and the job ends non-zero.
  const std::string dir = FreshDir("rollout_hung");
  FaultRun f = RunWithFault(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                                " trainer.total_steps=500 rollout.timeout_s=3 trainer.collective_timeout_s=0"
                                " --run-dir " + dir + " --resume none",
                            dir, 1, SIGSTOP);
  ASSERT_TRUE(f.signalled) << f.result.output;
  EXPECT_NE(f.result.exit_code, 0) << f.result.output;
  EXPECT_LT(f.seconds_after_fault, 60.0) << f.result.output;
  EXPECT_NE(f.result.output.find("world rank 1"), std::string::npos) << "the hung worker is named:\n" << f.result.output;
}

TEST(TrainJobTest, AHungTrainerRankEndsTheJobThroughTheCollectiveWatchdog) {
  // Two colocated trainer ranks; rank 1 is stopped mid-run, so rank 0 waits in a collective
  // that can never complete: the watchdog (trainer.collective_timeout_s) ends the job naming it.
  const std::string dir = FreshDir("trainer_hung");
  FaultRun f = RunWithFault(Mpirun(2) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                                " trainer.total_steps=500 roles.mode=colocated rollout.timeout_s=1 reward.timeout_s=1"
                                " trainer.collective_timeout_s=4 --run-dir " + dir + " --resume none",
                            dir, 1, SIGSTOP);
  ASSERT_TRUE(f.signalled) << f.result.output;
  EXPECT_NE(f.result.exit_code, 0) << f.result.output;
  EXPECT_LT(f.seconds_after_fault, 60.0) << f.result.output;
  EXPECT_NE(f.result.output.find("trainer.collective_timeout_s"), std::string::npos) << f.result.output;
}

TEST(TrainJobTest, BadConfigKeyFailsNamingTheKey) {
  const std::string dir = FreshDir("badkey");
  RunResult r = RunCommand(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + " rollout.temprature=0.5 --run-dir " + dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("rollout.temprature"), std::string::npos) << r.output;
  RunResult stale = RunCommand(Mpirun(3) + LIGHTRL_BINARY + " train " + Recipe() + " rollout.max_staleness=2 --run-dir " + dir);
  EXPECT_NE(stale.exit_code, 0);
  EXPECT_NE(stale.output.find("rollout.max_staleness"), std::string::npos) << stale.output;
  RunResult roles = RunCommand(Mpirun(2) + LIGHTRL_BINARY + " train " + Recipe() + " --run-dir " + dir);
  EXPECT_NE(roles.exit_code, 0);  // 2 ranks cannot hold trainer + rollout + reward
  EXPECT_NE(roles.output.find("roles.rollout_ranks"), std::string::npos) << roles.output;
}

// A standalone reward worker process (lightrl reward-worker); killed with SIGKILL by Stop().
class WorkerProcess {
 public:
  explicit WorkerProcess(const std::string& endpoint_file) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(LIGHTRL_BINARY, LIGHTRL_BINARY, "reward-worker", "--bind", "tcp://127.0.0.1:*", "--endpoint-file",
              endpoint_file.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 600 && !fs::exists(endpoint_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream in(endpoint_file);
    std::getline(in, endpoint_);
  }
  ~WorkerProcess() { Stop(); }
  void Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  pid_t pid_ = -1;
  std::string endpoint_;
};

TEST(TrainJobTest, KilledRewardWorkerMasksItsSamplesAndTheRunContinues) {
  const std::string dir = FreshDir("killed");
  WorkerProcess a(dir + "/a.endpoint"), b(dir + "/b.endpoint");
  ASSERT_FALSE(a.endpoint().empty());
  ASSERT_FALSE(b.endpoint().empty());
  // trainer + rollout ranks; rewards only from the two standalone workers.
  const std::string cmd = Mpirun(2) + LIGHTRL_BINARY + " train " + Recipe() + FastOverrides() +
                          " trainer.total_steps=4 roles.reward_ranks=0 reward.timeout_s=2" +
                          " reward.endpoints=[" + a.endpoint() + "," + b.endpoint() + "]" + " --run-dir " + dir +
                          " --resume none";
  RunResult r;
  std::thread job([&] { r = RunCommand(cmd); });
  // Kill worker b once step 1 is logged (the run is under way).
  for (int i = 0; i < 2400 && CountLines(dir + "/metrics.jsonl") == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  b.Stop();
  job.join();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> m = ReadMetrics(dir);
  ASSERT_EQ(m.size(), 4u) << r.output;
  EXPECT_EQ(m[0]["samples/masked"].get<double>(), 0.0);
  double lost = 0;
  for (const auto& s : m)
    if (s.contains("samples/masked_worker_lost")) lost += s["samples/masked_worker_lost"].get<double>();
  // Round-robin over 2 workers: b held half of one batch when it was found dead, then it is skipped.
  EXPECT_EQ(lost, 4.0) << r.output;
  EXPECT_EQ(m.back()["samples/masked"].get<double>(), 0.0);
  EXPECT_NE(r.output.find("reward-endpoint-1"), std::string::npos) << "the lost worker is named in the log";
}

TEST(TrainJobTest, RewardWorkerRejectsAnotherProtocolVersion) {
  const std::string dir = FreshDir("version");
  WorkerProcess w(dir + "/w.endpoint");
  ASSERT_FALSE(w.endpoint().empty());
  auto client = lightrl::comm::RpcClient::Connect(w.endpoint(), "reward");
  ASSERT_TRUE(client.ok());
  lightrl::protocol::RewardBatch batch;
  std::string frame = lightrl::protocol::Encode(batch);
  const uint16_t other = lightrl::protocol::kProtocolVersion + 1;
  frame[4] = static_cast<char>(other & 0xff);
  frame[5] = static_cast<char>(other >> 8);
  auto reply = (*client)->Call({frame}, std::chrono::milliseconds(10000));
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_EQ(reply->size(), 1u);
  auto decoded = lightrl::protocol::Decode((*reply)[0]);
  ASSERT_TRUE(decoded.ok());
  auto* err = std::get_if<lightrl::protocol::ErrorReply>(&*decoded);
  ASSERT_NE(err, nullptr) << "expected an ErrorReply";
  EXPECT_EQ(err->code, lightrl::StatusCode::kFailedPrecondition);
  EXPECT_NE(err->message.find(std::to_string(other)), std::string::npos) << err->message;
  // The worker keeps serving well-formed requests afterwards.
  auto ok = (*client)->Call({lightrl::protocol::Encode(batch)}, std::chrono::milliseconds(10000));
  ASSERT_TRUE(ok.ok());
  auto good = lightrl::protocol::Decode((*ok)[0]);
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(std::holds_alternative<lightrl::protocol::RewardResultBatch>(*good));
}

}  // namespace
