// RolloutPort / RewardPort over core/comm MessageChannels: the split-roles mode, where rollout
// and reward workers are other MPI ranks (or standalone processes) reached over ZeroMQ.
//
// Rewards: requests are spread round-robin over the live workers, sent together, and collected
// before one deadline. A worker that fails or misses the deadline is reported by name, its
// samples get RewardErrorKind::kWorkerLost results (masked, never scored 0), and it is skipped
// in later steps. Exactly one result per sample id comes back, whatever the workers send.
//
// Rollouts: prompts are split into contiguous chunks over the rollout workers; a failure is an
// error naming the worker (the step cannot run without its samples). Weights: a WeightsAnnounce
// (manifest) to every worker, then comm::BroadcastWeights over the weight-sync communicator.
#pragma once

#include <memory>
#include <vector>

#include "core/comm/channel.h"
#include "core/comm/mpi.h"
#include "trainer/interfaces.h"

namespace lightrl::trainer {

class RemoteRewardPort : public RewardPort {
 public:
  explicit RemoteRewardPort(std::vector<std::unique_ptr<comm::MessageChannel>> workers);
  std::vector<RewardResult> Score(const protocol::RewardBatch& batch) override;
  int live_workers() const;

 private:
  std::vector<std::unique_ptr<comm::MessageChannel>> workers_;
  std::vector<bool> alive_;
};

class RemoteRolloutPort : public RolloutPort {
 public:
  // weights_comm: trainer rank 0 (root 0) + the rollout ranks, in the workers' order.
  RemoteRolloutPort(std::vector<std::unique_ptr<comm::MessageChannel>> workers, const comm::MpiComm* weights_comm,
                    double timeout_s);
  StatusOr<protocol::RolloutResult> Generate(const protocol::RolloutRequest& request) override;
  Status PublishWeights(const model::NamedTensors& weights, uint64_t version) override;

 private:
  std::vector<std::unique_ptr<comm::MessageChannel>> workers_;
  const comm::MpiComm* weights_comm_;
  double timeout_s_;
};

// Sends Shutdown to every channel and waits (bounded) for the Acks.
void ShutdownWorkers(const std::vector<comm::MessageChannel*>& workers, double timeout_s);

}  // namespace lightrl::trainer
