// Kill-and-resume of the real job (`mpirun ... lightrl train ... --resume auto`): a run killed
// with SIGKILL at several points and resumed produces the same per-step metrics (losses, rewards,
// token counts: everything but wall-clock times) as an uninterrupted run with the same seed, bit
// for bit; so does a run stopped by SIGTERM (which saves and exits 0), a run whose newest
// checkpoint is corrupt (auto-resume falls back to the previous one), and a run whose checkpoint
// falls exactly on an epoch boundary of the task source. A checkpoint written by 2 trainer ranks
// resumes on 1.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/files.h"
#include "tests/util/job_util.h"

namespace {

namespace fs = std::filesystem;
using lightrl::testing::CountLines;
using lightrl::testing::Mpirun;
using lightrl::testing::RankPids;
using lightrl::testing::RunCommand;
using RunResult = lightrl::testing::CommandResult;

std::string SourceDir() { return lightrl::testing::SourceDir(LIGHTRL_SOURCE_DIR_DEFAULT); }
std::string FreshDir(const std::string& name) { return lightrl::testing::FreshDir("lightrl_resume", name); }

// Mean wall-clock time of steps 2.. of a run (time/step_s in its metrics.jsonl).
double MeanStepSeconds(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  double sum = 0;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["step"].get<int64_t>() < 2) continue;
    sum += j["time/step_s"].get<double>();
    ++n;
  }
  return n > 0 ? sum / n : 0.0;
}

// A small, fast version of the tiny recipe (resume_tiny.yaml: a task source of 6 problems; at 2
// prompts per step an epoch ends every 3 steps).
std::string Overrides(int steps) {
  return " trainer.total_steps=" + std::to_string(steps) +
         " rollout.prompts_per_step=2 rollout.samples_per_prompt=4 rollout.max_response_len=8"
         " trainer.threads=1 metrics.tensorboard=false checkpoint.save_every=3 checkpoint.keep_last=3";
}

std::string TrainCommand(int np, const std::string& run_dir, int steps, const std::string& extra = "") {
  return Mpirun(np) + LIGHTRL_BINARY + " train " + SourceDir() + "/tests/checkpoint/resume_tiny.yaml" + Overrides(steps) + extra +
         " --run-dir " + run_dir + " --resume auto";
}

// step -> the metrics that must replay exactly (wall-clock times and rates dropped).
std::map<int64_t, nlohmann::json> DeterministicMetrics(const std::string& run_dir) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    nlohmann::json kept;
    for (auto& [k, v] : j.items())
      if (k.rfind("time/", 0) != 0 && k.rfind("throughput/", 0) != 0) kept[k] = v;
    out[j["step"].get<int64_t>()] = kept;
  }
  return out;
}

// Starts the job in the background, waits until `lines` steps are logged plus `delay_ms`, then
// sends `sig` to trainer rank 0. Returns the job's result.
RunResult RunAndSignal(const std::string& command, const std::string& run_dir, size_t lines, int delay_ms, int sig) {
  RunResult r;
  std::thread job([&] { r = RunCommand(command); });
  for (int i = 0; i < 6000 && CountLines(run_dir + "/metrics.jsonl") < lines; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  for (pid_t pid : RankPids(run_dir, 0)) ::kill(pid, sig);
  job.join();
  return r;
}

class ResumeJobTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    reference_dir_ = new std::string(FreshDir("reference"));
    RunResult r = RunCommand(TrainCommand(3, *reference_dir_, 7));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    reference_ = new std::map<int64_t, nlohmann::json>(DeterministicMetrics(*reference_dir_));
    ASSERT_EQ(reference_->size(), 7u);
  }
  static void ExpectMatchesReference(const std::string& run_dir, const std::string& output) {
    std::map<int64_t, nlohmann::json> got = DeterministicMetrics(run_dir);
    ASSERT_EQ(got.size(), reference_->size()) << output;
    for (const auto& [step, ref] : *reference_) {
      ASSERT_TRUE(got.count(step)) << "step " << step << " missing\n" << output;
      EXPECT_EQ(got[step], ref) << "step " << step << " differs from the uninterrupted run";
    }
  }
  static std::string* reference_dir_;
  static std::map<int64_t, nlohmann::json>* reference_;
};
std::string* ResumeJobTest::reference_dir_ = nullptr;
std::map<int64_t, nlohmann::json>* ResumeJobTest::reference_ = nullptr;

TEST_F(ResumeJobTest, KilledAtSeveralPointsThenResumedReplaysTheSameMetrics) {
  // After step 4 is logged (checkpoint at 3), at 0, 1/3 and 2/3 of a step's duration (measured in
  // the reference run): the rollout, reward/old-log-prob and update phases of step 5.
  const double step_s = MeanStepSeconds(*reference_dir_);
  for (double fraction : {0.0, 1.0 / 3.0, 2.0 / 3.0}) {
    const int delay_ms = static_cast<int>(fraction * step_s * 1000.0);
    SCOPED_TRACE("kill " + std::to_string(delay_ms) + " ms after step 4 (step time " + std::to_string(step_s) + " s)");
    const std::string dir = FreshDir("kill" + std::to_string(delay_ms));
    RunResult killed = RunAndSignal(TrainCommand(3, dir, 7), dir, 4, delay_ms, SIGKILL);
    EXPECT_NE(killed.exit_code, 0) << "a job whose trainer was killed must fail";
    EXPECT_LT(CountLines(dir + "/metrics.jsonl"), 7u) << "the kill came after the run had finished";
    RunResult resumed = RunCommand(TrainCommand(3, dir, 7));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resumed from step"), std::string::npos) << resumed.output;
    ExpectMatchesReference(dir, resumed.output);
  }
}

TEST_F(ResumeJobTest, SigtermSavesExitsZeroAndResumes) {
  const std::string dir = FreshDir("sigterm");
  RunResult stopped = RunAndSignal(TrainCommand(3, dir, 7), dir, 1, 0, SIGTERM);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  const size_t done = CountLines(dir + "/metrics.jsonl");
  EXPECT_LT(done, 7u) << "the run stopped early";
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/step_" + std::to_string(done))) << stopped.output;
  RunResult resumed = RunCommand(TrainCommand(3, dir, 7));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  ExpectMatchesReference(dir, resumed.output);
}

TEST_F(ResumeJobTest, CorruptNewestCheckpointFallsBackToThePreviousOne) {
  // Run to step 6 (checkpoints 3 and 6; step 6 ends the second epoch), flip a byte in the middle
  // of step_6's file, then continue to 7: the run must resume from step 3, name step_6 as
  // corrupt, and still replay the reference exactly.
  const std::string dir = FreshDir("corrupt");
  RunResult first = RunCommand(TrainCommand(3, dir, 6));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string file = dir + "/checkpoints/step_6/state.h5";
  ASSERT_TRUE(fs::exists(file));
  lightrl::testing::XorByte(file, static_cast<int64_t>(fs::file_size(file)) / 2, 0x5a);
  RunResult resumed = RunCommand(TrainCommand(3, dir, 7));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("step_6"), std::string::npos) << "the corrupt checkpoint is named\n" << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from step 3"), std::string::npos) << resumed.output;
  ExpectMatchesReference(dir, resumed.output);
}

TEST_F(ResumeJobTest, EpochBoundaryCheckpointResumesIntoTheNextEpoch) {
  // Step 3 consumes the 6th and last task of epoch 0 and is checkpointed: stop there, resume.
  const std::string dir = FreshDir("epoch");
  RunResult first = RunCommand(TrainCommand(3, dir, 3));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  RunResult resumed = RunCommand(TrainCommand(3, dir, 7));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from step 3"), std::string::npos) << resumed.output;
  ExpectMatchesReference(dir, resumed.output);
}

TEST_F(ResumeJobTest, CheckpointOfTwoTrainerRanksResumesOnOne) {
  const std::string dir = FreshDir("worldsize");
  RunResult two = RunCommand(TrainCommand(4, dir, 3));  // trainers 0-1, rollout 2, reward 3
  ASSERT_EQ(two.exit_code, 0) << two.output;
  RunResult one = RunCommand(TrainCommand(3, dir, 5));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_NE(one.output.find("resumed from step 3"), std::string::npos) << one.output;
  std::map<int64_t, nlohmann::json> m = DeterministicMetrics(dir);
  ASSERT_EQ(m.size(), 5u);
  // Counters continue from the checkpoint: 2 prompts x 4 samples per step.
  EXPECT_EQ(m[5]["counters/consumed_prompts"].get<double>(), 10.0);
  EXPECT_EQ(m[5]["counters/consumed_samples"].get<double>(), 40.0);
  EXPECT_EQ(m[5]["counters/weights_version"].get<double>(), 6.0);  // v1 before step 1, +1 per step
  // The rollout of step 1 does not depend on the trainer world size: same samples and rewards.
  EXPECT_EQ(m[1]["reward/mean"], (*reference_)[1]["reward/mean"]);
  EXPECT_EQ(m[1]["response/length_mean"], (*reference_)[1]["response/length_mean"]);
}

TEST(ResumeJobAsyncTest, AsyncRunStoppedAndResumedReplaysWithItsPrefetchedBatch) {
  // rollout.max_staleness = 1: a checkpoint after step t holds the batch of step t+1, already
  // generated (with the weights of step t) and past the task cursor. A resumed run must train on
  // exactly that batch: same metrics as an uninterrupted async run, prefetched and stale by one.
  const std::string async = " rollout.max_staleness=1";
  const std::string ref_dir = FreshDir("async_reference");
  RunResult ref = RunCommand(TrainCommand(3, ref_dir, 5, async));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const std::map<int64_t, nlohmann::json> reference = DeterministicMetrics(ref_dir);
  ASSERT_EQ(reference.size(), 5u);
  const std::string dir = FreshDir("async_stopped");
  RunResult stopped = RunAndSignal(TrainCommand(3, dir, 5, async), dir, 1, 0, SIGTERM);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  const size_t done = CountLines(dir + "/metrics.jsonl");
  ASSERT_LT(done, 5u) << "the run stopped early";
  RunResult resumed = RunCommand(TrainCommand(3, dir, 5, async));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  std::map<int64_t, nlohmann::json> got = DeterministicMetrics(dir);
  ASSERT_EQ(got.size(), 5u) << resumed.output;
  for (const auto& [step, want] : reference) {
    EXPECT_EQ(got[step], want) << "step " << step << " differs from the uninterrupted async run";
  }
  // The first resumed step trained on the checkpoint's prefetched batch.
  const int64_t first = static_cast<int64_t>(done) + 1;
  EXPECT_EQ(got[first]["async/prefetched"].get<double>(), 1.0);
  EXPECT_EQ(got[first]["rollout/staleness_max"].get<double>(), 1.0);
}

}  // namespace
