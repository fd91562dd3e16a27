// The README's promise in one test: SFT warm start, then a short CISPO run under mpirun (trainer,
// rollout and reward ranks) on a synthetic task, and the mean reward goes up. Seeded (the run is
// deterministic on CPU); the assertion is an increase between the first and the last steps, not
// an exact curve.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "tests/util/job_util.h"

namespace {

using lightrl::testing::Mpirun;
using lightrl::testing::RunCommand;

std::vector<nlohmann::json> ReadMetrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

double Mean(const std::vector<nlohmann::json>& m, size_t begin, size_t end, const char* key) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += m[i][key].get<double>();
  return sum / static_cast<double>(end - begin);
}

TEST(CispoLearnsTest, SftThenCispoIncreasesTheMeanReward) {
  const std::string src = lightrl::testing::SourceDir(LIGHTRL_SOURCE_DIR_DEFAULT);
  const std::string dir = lightrl::testing::FreshDir("lightrl_cispo_learns", "run");
  auto sft = RunCommand(Mpirun(1) + LIGHTRL_BINARY + " sft " + src +
                        "/configs/cispo_tiny.yaml sft.steps=60 sft.examples_per_step=32 metrics.tensorboard=false"
                        " --run-dir " + dir + "/sft");
  ASSERT_EQ(sft.exit_code, 0) << sft.output;
  std::vector<nlohmann::json> s = ReadMetrics(dir + "/sft/metrics.jsonl");
  ASSERT_EQ(s.size(), 60u);
  EXPECT_LT(Mean(s, 50, 60, "sft/loss"), 0.5 * Mean(s, 0, 10, "sft/loss")) << "SFT must fit its targets";

  auto rl = RunCommand(Mpirun(3) + LIGHTRL_BINARY + " train " + src + "/tests/trainer/learn_tiny.yaml trainer.init_from=" +
                       dir + "/sft/sft_model trainer.total_steps=30 checkpoint.save_every=0 metrics.tensorboard=false"
                       " --run-dir " + dir + "/rl --resume none");
  ASSERT_EQ(rl.exit_code, 0) << rl.output;
  std::vector<nlohmann::json> m = ReadMetrics(dir + "/rl/metrics.jsonl");
  ASSERT_EQ(m.size(), 30u);
  const double first = Mean(m, 0, 5, "reward/mean"), last = Mean(m, 25, 30, "reward/mean");
  std::printf("mean reward: steps 1-5 %.4f, steps 26-30 %.4f\n", first, last);
  EXPECT_GT(last, first + 0.04) << "CISPO did not increase the mean reward";
  // On-policy sanity: the rollout's log-probs are the trainer's.
  for (const auto& step : m) EXPECT_LT(step["logp/rollout_vs_trainer_abs_max"].get<double>(), 1e-4);
}

}  // namespace
