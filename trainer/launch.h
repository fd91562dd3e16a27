// The `lightrl train` job as every MPI rank runs it:
//
//   mpirun -np N lightrl train CONFIG [key.sub=value ...] --run-dir DIR [--resume auto|none|PATH]
//
// Every rank loads the same config, the world is split into roles (core/comm/mpi.h SplitRoles:
// world ranks [0, T) trainer, then `roles.rollout_ranks` rollout ranks, then `roles.reward_ranks`
// reward ranks; `roles.mode: colocated` makes every rank a trainer that also generates and scores),
// and each rank runs its role:
//   * trainer rank 0 drives the step loop (trainer/trainer.h) and reaches the workers over
//     ZeroMQ (trainer/remote_ports.h); other trainer ranks are data-parallel replicas;
//   * rollout ranks serve RolloutRequests with rollout::RolloutService and receive weights by MPI
//     broadcast after each WeightsAnnounce;
//   * reward ranks serve RewardBatches with reward::RewardWorker.
// Worker endpoints (tcp://127.0.0.1:<ephemeral>) are exchanged over MPI at start-up; standalone
// reward workers (`lightrl reward-worker --bind ...`) listed in `reward.endpoints` join the pool.
//
// Exit codes: 0 on success (also after a SIGTERM/SIGINT-triggered checkpoint), 2 for a bad config
// or command line, 1 for any other failure. A failure on one rank that would leave the others
// waiting aborts the whole job with the reason (comm::AbortJob).
#pragma once

#include <string>
#include <vector>

namespace lightrl::trainer {

struct TrainArgs {
  std::string config_path;
  std::vector<std::string> overrides;  // "a.b.c=value"
  std::string run_dir;
  std::string resume = "auto";         // auto | none | PATH (a checkpoint directory)
};

// Runs this rank's part of the job; returns the process exit code.
int RunTrainJob(const TrainArgs& args);

// libtorch threads for this rank: `requested` (trainer.threads) if > 0, else the cores available
// to the process divided by the job's ranks on this node (at least 1).
int ThreadsPerRank(int requested);

struct RewardWorkerArgs {
  std::string bind = "tcp://127.0.0.1:5555";  // ZeroMQ endpoint to serve on
  std::string config_path;                    // optional: a training config (its reward.verifiers)
  std::vector<std::string> overrides;
  std::string endpoint_file;                  // if set, the bound endpoint is written here
};

// `lightrl reward-worker`: a standalone reward worker process serving RewardBatches until a
// Shutdown message (or SIGTERM). Returns the exit code.
int RunStandaloneRewardWorker(const RewardWorkerArgs& args);

}  // namespace lightrl::trainer
