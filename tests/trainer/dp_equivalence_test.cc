// Data-parallel equivalence under `mpirun -np 2`: two ranks with half of each mini-batch each
// produce the same update as one rank with the whole mini-batch, because the loss normaliser
// is the global token count (all-reduced) and gradients are summed. Uneven splits included.
#include <gtest/gtest.h>
#include <mpi.h>

#include "trainer/mpi_collective.h"
#include "trainer/policy_trainer.h"

#include "tests/trainer/small_model.h"

namespace lightrl::trainer {
namespace {

model::ModelConfig SmallConfig() { return SmallModelConfig(8); }

// Uneven prompts and responses so the split over 2 ranks has different token counts.
std::vector<Sample> MakeSamples(int64_t vocab) {
  std::vector<Sample> samples;
  auto gen = at::detail::createCPUGenerator(11);
  for (int i = 0; i < 7; ++i) {
    Sample s;
    s.sample_id = i;
    s.group = i / 3;
    const int64_t P = 3 + i % 4, R = 2 + (i * 5) % 9;
    torch::Tensor ids = at::randint(vocab, {P + R}, gen, torch::kLong);
    for (int64_t k = 0; k < P; ++k) s.prompt_ids.push_back(ids[k].item<int64_t>());
    for (int64_t k = P; k < P + R; ++k) s.response_ids.push_back(ids[k].item<int64_t>());
    s.rollout_logprobs.assign(R, -2.0f);
    s.advantages.assign(R, static_cast<float>((i % 3) - 1) * 0.7f);
    samples.push_back(s);
  }
  return samples;
}

// A clipped importance-weighted policy-gradient loss normalised by the global token count
// (the shape of CISPO with token_mean_global), enough to exercise the normaliser.
torch::Tensor Loss(const LossInputs& in, std::map<std::string, double>* sums) {
  torch::Tensor ratio = torch::exp(in.logp.detach() - in.old_logp).clamp_max(1.5);
  (*sums)["test/tokens"] += static_cast<double>(in.logp.numel());
  return -(ratio * in.advantages * in.logp).sum() / in.global_tokens;
}

TEST(DataParallelTest, TwoRanksEqualOneRankWithTheWholeBatch) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ASSERT_EQ(world, 2) << "run under mpirun -np 2";
  torch::manual_seed(0);
  model::ModelConfig config = SmallConfig();
  OptimConfig optim;
  optim.lr = 1e-2;
  optim.warmup_steps = 0;
  UpdateOptions opts;
  opts.updates_per_rollout = 2;
  opts.micro_batch_tokens = 24;  // several micro-batches per rank
  opts.metric_names = {"test/tokens"};

  auto run = [&](Collective* collective) {
    model::HybridModel m(config);
    m->InitWeights(5);
    PolicyTrainer trainer(m, optim, 10, collective);
    std::vector<Sample> samples = MakeSamples(config.vocab_size);
    std::vector<int64_t> all;
    for (size_t i = 0; i < samples.size(); ++i) all.push_back(static_cast<int64_t>(i));
    // Old log-probs for every sample (each rank computes all of them here; the step loop
    // computes only its own shard).
    trainer.ComputeLogProbs(samples, all, opts, /*write_old=*/true);
    StepMetrics metrics = trainer.Update(samples, all, opts, Loss);
    return std::make_pair(m, metrics);
  };
  comm::MpiComm world_comm = comm::MpiComm::World();
  MpiCollective mpi(&world_comm);
  auto [distributed, dist_metrics] = run(&mpi);
  LocalCollective local;
  auto [single, single_metrics] = run(&local);

  double max_diff = 0;
  auto single_params = single->named_parameters();
  for (const auto& item : distributed->named_parameters()) {
    max_diff = std::max(max_diff, (item.value() - single_params[item.key()]).abs().max().item<double>());
  }
  // Summation order differs (two partial sums vs one); fp32 rounding only.
  EXPECT_LT(max_diff, 2e-6) << "max |param difference| between 2-rank and 1-rank updates";
  EXPECT_NEAR(dist_metrics["loss/policy"], single_metrics["loss/policy"], 1e-6);
  EXPECT_DOUBLE_EQ(dist_metrics["test/tokens"], 1.0);  // sum of tokens / global tokens
  EXPECT_NEAR(dist_metrics["optim/grad_norm"], single_metrics["optim/grad_norm"], 1e-5);
  // The update did something: parameters moved from their initial values.
  model::HybridModel fresh(config);
  fresh->InitWeights(5);
  EXPECT_GT((distributed->named_parameters()["lm_head.weight"] - fresh->named_parameters()["lm_head.weight"])
                .abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace lightrl::trainer

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int result = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
