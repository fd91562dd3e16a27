#include "trainer/launch.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <variant>

#include "core/check.h"
#include "core/comm/channel.h"
#include "core/comm/mpi.h"
#include "core/comm/mpi_tensors.h"
#include "core/logging.h"
#include "core/runtime.h"
#include "envs/task_source.h"
#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "reward/reward_worker.h"
#include "rollout/service.h"
#include "trainer/algorithm_hooks.h"
#include "trainer/checkpoint.h"
#include "trainer/critic.h"
#include "trainer/local_ports.h"
#include "trainer/mpi_collective.h"
#include "trainer/remote_ports.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitBadConfig = 2;

// How long a worker's Receive waits before checking for a stop signal.
constexpr comm::Millis kPollInterval{200};

// ---- shared set-up --------------------------------------------------------------------------

// The policy (or the rollout copy): fresh weights from trainer.seed, then trainer.init_from if set.
StatusOr<model::HybridModel> BuildPolicy(const TrainConfig& config) {
  model::HybridModel policy(config.model);
  policy->InitWeights(config.trainer.seed);
  if (!config.trainer.init_from.empty()) {
    Status st = model::LoadModelWeights(policy, config.trainer.init_from);
    if (!st.ok()) return st.WithContext("trainer.init_from");
  }
  return policy;
}

}  // namespace

int ThreadsPerRank(int requested) {
  if (requested > 0) return requested;
  // Ranks of this job on this node (Open MPI sets OMPI_COMM_WORLD_LOCAL_SIZE); oversubscribing
  // the cores with every rank's OpenMP pool makes each step several times slower.
  int local = 1;
  if (const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) local = std::max(1, std::atoi(s));
  return std::max(1, AvailableCores() / local);
}

namespace {

rollout::EngineOptions EngineOptionsFor(const TrainConfig& config) {
  rollout::EngineOptions o;
  o.max_slots = config.rollout.max_slots;
  o.batch_invariant = config.rollout.batch_invariant;
  return o;
}

// Every rank learns every rank's endpoint ("" for ranks that serve nothing).
std::vector<std::string> ExchangeEndpoints(const comm::MpiComm& world, const std::string& mine) {
  std::vector<std::string> all(static_cast<size_t>(world.size()));
  for (int r = 0; r < world.size(); ++r) {
    std::string bytes = r == world.rank() ? mine : std::string();
    comm::BroadcastBytes(world, r, &bytes).ThrowIfError();
    all[static_cast<size_t>(r)] = std::move(bytes);
  }
  return all;
}

Status Reply(comm::RpcServer& server, const comm::RpcRequest& request, const protocol::Message& message) {
  return comm::ReplyMessage(server, request, message);
}

// ---- worker loops ---------------------------------------------------------------------------

// Serves one message; returns true when the worker should exit (after a Shutdown).
using Handler = std::function<StatusOr<bool>(const comm::RpcRequest&, const protocol::Message&)>;

// exit_on_signal: a standalone worker exits on SIGTERM/SIGINT; an MPI worker rank keeps serving
// (the trainer saves a checkpoint on the same signal and then sends Shutdown).
Status ServeLoop(comm::RpcServer& server, const std::string& what, bool exit_on_signal, const Handler& handle) {
  auto log = Logger(what);
  log->info("{} serving on {}", what, server.endpoint());
  while (true) {
    if (exit_on_signal && StopRequested()) {
      log->info("{}: stop signal received, exiting", what);
      return Status::Ok();
    }
    LR_ASSIGN_OR_RETURN(std::optional<comm::RpcRequest> request, server.Receive(kPollInterval));
    if (!request) continue;
    StatusOr<protocol::Message> message = comm::DecodeRequest(*request);
    if (!message.ok()) {
      // A frame of another protocol version, a truncated frame or an unknown type: refuse it
      // with the codec's reason (it names the field) and keep serving.
      log->warn("{}: rejected a request: {}", what, message.status().ToString());
      LR_RETURN_IF_ERROR(Reply(server, *request, protocol::ErrorReply::FromStatus(request->request_id, message.status())));
      continue;
    }
    if (std::holds_alternative<protocol::Shutdown>(*message)) {
      LR_RETURN_IF_ERROR(Reply(server, *request, protocol::Ack{request->request_id}));
      log->info("{}: shutdown requested ({})", what, std::get<protocol::Shutdown>(*message).reason);
      return Status::Ok();
    }
    if (std::holds_alternative<protocol::Heartbeat>(*message)) {
      LR_RETURN_IF_ERROR(Reply(server, *request, protocol::Ack{request->request_id}));
      continue;
    }
    LR_ASSIGN_OR_RETURN(bool done, handle(*request, *message));
    if (done) return Status::Ok();
  }
}

Status ServeRollout(comm::RpcServer& server, rollout::RolloutService& service, const comm::MpiComm& weights_comm,
                    double timeout_s) {
  model::NamedTensors incoming;  // receive buffer, allocated from the first manifest
  return ServeLoop(server, "rollout", /*exit_on_signal=*/false, [&](const comm::RpcRequest& request, const protocol::Message& message) -> StatusOr<bool> {
    if (auto* r = std::get_if<protocol::RolloutRequest>(&message)) {
      StatusOr<protocol::RolloutResult> result = service.Generate(*r);
      if (result.ok()) {
        result->worker_rank = comm::WorldRank();
        LR_RETURN_IF_ERROR(Reply(server, request, *result));
      } else {
        LR_RETURN_IF_ERROR(Reply(server, request, protocol::ErrorReply::FromStatus(r->request_id, result.status())));
      }
      return false;
    }
    if (auto* a = std::get_if<protocol::WeightsAnnounce>(&message)) {
      if (a->transport != "mpi") {
        LR_RETURN_IF_ERROR(Reply(server, request, protocol::ErrorReply::FromStatus(
                                                      a->manifest.version,
                                                      Unimplemented(StrCat("weights transport '", a->transport,
                                                                           "': this worker receives weights over 'mpi' only")))));
        return false;
      }
      // Acknowledge, then join the broadcast the trainer starts once every worker has acked.
      LR_RETURN_IF_ERROR(Reply(server, request, protocol::Ack{a->manifest.version}));
      if (!incoming.empty()) {
        Status fits = comm::CheckManifest(a->manifest, incoming);
        if (!fits.ok()) incoming.clear();  // re-allocate from the manifest; the service checks names/shapes
      }
      uint64_t version = 0;
      comm::WeightSyncOptions opts;
      opts.timeout_s = timeout_s;
      Status st = comm::BroadcastWeights(weights_comm, 0, &incoming, &version, opts);
      if (!st.ok()) comm::AbortJob(StrCat("rollout worker: weight sync failed: ", st.ToString()));
      Status loaded = service.LoadWeights(incoming, version);
      if (!loaded.ok()) comm::AbortJob(StrCat("rollout worker: cannot load weights v", version, ": ", loaded.ToString()));
      return false;
    }
    LR_RETURN_IF_ERROR(Reply(server, request, protocol::ErrorReply::FromStatus(
                                                  request.request_id,
                                                  InvalidArgument(StrCat("rollout worker: unexpected message ",
                                                                         protocol::MessageTypeName(protocol::TypeOf(message)))))));
    return false;
  });
}

Status ServeReward(comm::RpcServer& server, reward::RewardWorker& worker, bool exit_on_signal) {
  return ServeLoop(server, "reward", exit_on_signal, [&](const comm::RpcRequest& request, const protocol::Message& message) -> StatusOr<bool> {
    if (auto* b = std::get_if<protocol::RewardBatch>(&message)) {
      protocol::RewardResultBatch out;
      out.batch_id = b->batch_id;
      out.results = worker.Score(b->requests, b->deadline_s);
      LR_RETURN_IF_ERROR(Reply(server, request, out));
      return false;
    }
    LR_RETURN_IF_ERROR(Reply(server, request, protocol::ErrorReply::FromStatus(
                                                  request.request_id,
                                                  InvalidArgument(StrCat("reward worker: unexpected message ",
                                                                         protocol::MessageTypeName(protocol::TypeOf(message)))))));
    return false;
  });
}

YAML::Node VerifiersBlock(const TrainConfig& config) { return config.reward.verifiers; }

// ---- the trainer role -----------------------------------------------------------------------

struct DriverPorts {
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::unique_ptr<EnvTaskFeed> tasks;
  std::unique_ptr<rollout::RolloutService> local_rollout;
  std::unique_ptr<reward::RewardWorker> local_reward;
  std::unique_ptr<RolloutPort> rollout;
  std::unique_ptr<RewardPort> reward;
  std::vector<comm::MessageChannel*> workers;  // for Shutdown (owned by the ports)
};

Status BuildDriverPorts(const TrainConfig& config, const comm::RoleAssignment& roles,
                        const std::vector<std::string>& endpoints, DriverPorts* d) {
  LR_ASSIGN_OR_RETURN(d->tokenizer, model::BuildTokenizer(config.tokenizer, "tokenizer"));
  if (d->tokenizer->vocab_size() > config.model.vocab_size) {
    return InvalidArgument(StrCat("tokenizer: vocabulary of ", d->tokenizer->vocab_size(),
                                  " tokens does not fit model.vocab_size = ", config.model.vocab_size));
  }
  LR_ASSIGN_OR_RETURN(model::ChatTemplate chat, model::ParseChatTemplate(config.chat_template, "chat_template"));
  LR_ASSIGN_OR_RETURN(std::unique_ptr<envs::TaskSource> source,
                      envs::BuildTaskSource(config.tasks, config.trainer.seed, "train", "tasks"));
  d->tasks = std::make_unique<EnvTaskFeed>(std::move(source), d->tokenizer.get(), std::move(chat));

  // Rollouts: remote rollout ranks, or a local engine on its own model copy.
  const std::vector<int> rollout_ranks = roles.WorldRanks(comm::Role::kRollout);
  if (!rollout_ranks.empty()) {
    std::vector<std::unique_ptr<comm::MessageChannel>> channels;
    for (size_t i = 0; i < rollout_ranks.size(); ++i) {
      LR_ASSIGN_OR_RETURN(auto ch, comm::ZmqChannel::Connect(endpoints[static_cast<size_t>(rollout_ranks[i])],
                                                             StrCat("rollout-", i, " (world rank ", rollout_ranks[i], ")")));
      d->workers.push_back(ch.get());
      channels.push_back(std::move(ch));
    }
    d->rollout = std::make_unique<RemoteRolloutPort>(std::move(channels), &roles.weights_comm, config.rollout.timeout_s);
  } else {
    LR_ASSIGN_OR_RETURN(model::HybridModel copy, BuildPolicy(config));
    d->local_rollout = std::make_unique<rollout::RolloutService>(copy, EngineOptionsFor(config), d->tokenizer.get());
    d->rollout = std::make_unique<LocalRolloutPort>(d->local_rollout.get());
  }

  // Rewards: reward ranks + standalone workers (reward.endpoints), or a local worker.
  const std::vector<int> reward_ranks = roles.WorldRanks(comm::Role::kReward);
  std::vector<std::unique_ptr<comm::MessageChannel>> reward_channels;
  for (size_t i = 0; i < reward_ranks.size(); ++i) {
    LR_ASSIGN_OR_RETURN(auto ch, comm::ZmqChannel::Connect(endpoints[static_cast<size_t>(reward_ranks[i])],
                                                           StrCat("reward-", i, " (world rank ", reward_ranks[i], ")")));
    d->workers.push_back(ch.get());
    reward_channels.push_back(std::move(ch));
  }
  for (size_t i = 0; i < config.reward.endpoints.size(); ++i) {
    LR_ASSIGN_OR_RETURN(auto ch, comm::ZmqChannel::Connect(config.reward.endpoints[i], StrCat("reward-endpoint-", i)));
    reward_channels.push_back(std::move(ch));  // standalone workers are not shut down by the job
  }
  if (!reward_channels.empty()) {
    d->reward = std::make_unique<RemoteRewardPort>(std::move(reward_channels));
  } else {
    LR_ASSIGN_OR_RETURN(d->local_reward, reward::RewardWorker::Create(VerifiersBlock(config), "reward.verifiers"));
    d->reward = std::make_unique<LocalRewardPort>(d->local_reward.get());
  }
  return Status::Ok();
}

int RunTrainerRole(const TrainArgs& args, const TrainConfig& config, const comm::RoleAssignment& roles,
                   const std::vector<std::string>& endpoints) {
  auto log = Logger("trainer");
  const bool driver = roles.role_rank == 0;
  StatusOr<AlgorithmHooks> hooks = BuildAlgorithmHooks(config.algorithm, "algorithm");
  StatusOr<model::HybridModel> policy = BuildPolicy(config);
  DriverPorts ports;
  Status setup = hooks.ok() ? policy.status() : hooks.status();
  if (setup.ok() && driver) setup = BuildDriverPorts(config, roles, endpoints, &ports);
  // Every trainer rank must agree before anyone enters a collective.
  setup = comm::AgreeOnStatus(roles.role_comm, setup, "trainer set-up");
  if (!setup.ok()) comm::AbortJob(setup.ToString(), setup.code() == StatusCode::kInvalidArgument ? kExitBadConfig : kExitFailure);

  MpiCollective collective(&roles.role_comm, config.trainer.collective_timeout_s);
  TrainerPorts tp;
  tp.collective = &collective;
  tp.batch_channel = roles.role_size > 1 ? &collective : nullptr;
  if (driver) {
    tp.tasks = ports.tasks.get();
    tp.rollout = ports.rollout.get();
    tp.reward = ports.reward.get();
  }
  Trainer trainer(config, std::move(*hooks), *policy, tp, args.run_dir);
  if (driver) {
    std::vector<int32_t> stops;
    for (int64_t id : ports.tokenizer->stop_token_ids()) stops.push_back(static_cast<int32_t>(id));
    trainer.SetStopTokens(std::move(stops));
  }

  // Resume: every trainer rank loads the same checkpoint (all state is replicated).
  CheckpointManager checkpoints(args.run_dir, config.checkpoint);
  {
    Status resumed = Status::Ok();
    StatusOr<std::optional<TrainingState>> state = checkpoints.Resume(args.resume);
    if (!state.ok()) {
      resumed = state.status();
    } else if (state->has_value()) {
      StatusOr<std::vector<std::string>> drift = CheckConfigDrift((*state)->config_yaml, config.raw);
      if (!drift.ok()) {
        resumed = drift.status();
      } else {
        if (driver)
          for (const auto& d : *drift) log->warn("config changed since the checkpoint: {}", d);
        resumed = RestoreTrainingState(**state, trainer);
        if (resumed.ok() && trainer.critic()) resumed = RestoreCriticState(**state, *trainer.critic());
        if (resumed.ok()) trainer.SetNextRewardBatch((*state)->next_reward_batch);
        if (resumed.ok() && driver && !(*state)->task_cursor.is_null())
          resumed = ports.tasks->Restore((*state)->task_cursor).WithContext("checkpoint task_cursor");
        if (resumed.ok() && driver && (*state)->extra.is_object() && (*state)->extra.contains("pending_batch"))
          resumed = trainer.RestorePendingBatch((*state)->extra["pending_batch"]);
        if (resumed.ok() && driver) log->info("resumed from step {} ({})", (*state)->step, args.resume);
      }
    }
    resumed = comm::AgreeOnStatus(roles.role_comm, resumed, "resume");
    if (!resumed.ok()) comm::AbortJob(resumed.ToString(), kExitFailure);
  }

  bool preempted = false;
  trainer.after_step = [&](int64_t step) -> Status {
    // The stop flag is per process: agree so every trainer rank stops after the same step.
    const bool stop = AnyRankStopRequested(collective);
    if (driver && (stop || checkpoints.Due(step, config.trainer.total_steps))) {
      TrainingState s = CaptureTrainingState(trainer, config);
      if (trainer.critic()) CaptureCriticState(*trainer.critic(), &s);
      s.next_reward_batch = trainer.next_reward_batch();
      s.task_cursor = ports.tasks->State();
      // Async pipeline: the batch of step+1, already generated (its prompts are past the cursor).
      if (nlohmann::json pending = trainer.PendingBatchState(); !pending.is_null()) {
        if (!s.extra.is_object()) s.extra = nlohmann::json::object();
        s.extra["pending_batch"] = std::move(pending);
      }
      // Every other generator is derived from trainer.seed and the step (trainer.cc DeriveSeed,
      // rollout/sampling.h SampleRng), so the seed and the step restore all of them.
      s.rng = {{"trainer.seed", config.trainer.seed}, {"derivation", "splitmix64(seed, step, index)"}};
      s.world_size = roles.role_size;
      LR_RETURN_IF_ERROR(checkpoints.Save(s));
    }
    if (stop) {
      preempted = true;
      return Status(StatusCode::kCancelled, "stop signal");
    }
    return Status::Ok();
  };
  Status run = trainer.Run();
  if (preempted && run.code() == StatusCode::kCancelled) {
    log->info("stopped by a signal after step {}; checkpoint saved, resume with --resume auto", trainer.step());
    run = Status::Ok();
  }
  if (!run.ok()) comm::AbortJob(StrCat("training failed: ", run.ToString()), kExitFailure);
  if (driver) ShutdownWorkers(ports.workers, 30.0);
  if (driver) log->info("training finished at step {}", trainer.step());
  return kExitOk;
}

}  // namespace

int RunTrainJob(const TrainArgs& args) {
  comm::MpiSession session(nullptr, nullptr);
  const comm::MpiComm& world = session.world();
  InstallStopSignalHandlers();
  return comm::RunOrAbort([&]() -> int {
    if (args.run_dir.empty()) {
      std::fprintf(stderr, "lightrl train: --run-dir is required\n");
      return kExitBadConfig;
    }
    StatusOr<TrainConfig> config = LoadTrainConfig(args.config_path, args.overrides);
    if (!config.ok()) {
      // Every rank parses the same file: every rank fails the same way, without a collective.
      if (world.rank() == 0) std::fprintf(stderr, "lightrl train: %s\n", config.status().ToString().c_str());
      return kExitBadConfig;
    }
    comm::RoleLayout layout;
    if (config->roles.mode == "colocated") {
      layout.rollout_ranks = 0;
      layout.reward_ranks = 0;
    } else {
      layout.rollout_ranks = config->roles.rollout_ranks;
      layout.reward_ranks = config->roles.reward_ranks;
    }
    StatusOr<comm::RoleAssignment> roles = comm::SplitRoles(world, layout);
    if (!roles.ok()) {
      if (world.rank() == 0) std::fprintf(stderr, "lightrl train: %s\n", roles.status().ToString().c_str());
      return kExitBadConfig;
    }
    InitLogging({comm::RoleName(roles->role), world.rank(), config->trainer.log_level});
    ConfigureThreads(ThreadsPerRank(config->trainer.threads));
    torch::manual_seed(config->trainer.seed);

    // Workers bind first; then every rank learns every endpoint.
    std::unique_ptr<comm::RpcServer> server;
    std::unique_ptr<model::Tokenizer> rollout_tokenizer;  // declared first: outlives the service
    std::unique_ptr<rollout::RolloutService> rollout_service;
    std::unique_ptr<reward::RewardWorker> reward_worker;
    Status setup = Status::Ok();
    if (roles->role == comm::Role::kRollout) {
      StatusOr<model::HybridModel> model = BuildPolicy(*config);
      StatusOr<std::unique_ptr<model::Tokenizer>> tokenizer = model::BuildTokenizer(config->tokenizer, "tokenizer");
      setup = !model.ok() ? model.status() : tokenizer.status();
      if (setup.ok()) {
        rollout_tokenizer = std::move(*tokenizer);
        rollout_service =
            std::make_unique<rollout::RolloutService>(*model, EngineOptionsFor(*config), rollout_tokenizer.get());
      }
    } else if (roles->role == comm::Role::kReward) {
      StatusOr<std::unique_ptr<reward::RewardWorker>> worker =
          reward::RewardWorker::Create(VerifiersBlock(*config), "reward.verifiers");
      setup = worker.status();
      if (setup.ok()) reward_worker = std::move(*worker);
    }
    if (setup.ok() && roles->role != comm::Role::kTrainer) {
      StatusOr<std::unique_ptr<comm::RpcServer>> bound = comm::RpcServer::Bind(comm::kLoopbackAnyPort);
      setup = bound.status();
      if (setup.ok()) server = std::move(*bound);
    }
    setup = comm::AgreeOnStatus(world, setup, "worker set-up");
    if (!setup.ok()) comm::AbortJob(setup.ToString(), kExitFailure);
    const std::vector<std::string> endpoints = ExchangeEndpoints(world, server ? server->endpoint() : "");

    switch (roles->role) {
      case comm::Role::kTrainer:
        return RunTrainerRole(args, *config, *roles, endpoints);
      case comm::Role::kRollout: {
        Status st = ServeRollout(*server, *rollout_service, roles->weights_comm, config->rollout.timeout_s);
        if (!st.ok()) comm::AbortJob(StrCat("rollout worker: ", st.ToString()));
        return kExitOk;
      }
      case comm::Role::kReward: {
        Status st = ServeReward(*server, *reward_worker, /*exit_on_signal=*/false);
        if (!st.ok()) comm::AbortJob(StrCat("reward worker: ", st.ToString()));
        return kExitOk;
      }
    }
    return kExitFailure;
  });
}

int RunStandaloneRewardWorker(const RewardWorkerArgs& args) {
  InitLogging({"reward", 0, "info"});
  InstallStopSignalHandlers();
  YAML::Node verifiers;
  if (!args.config_path.empty()) {
    StatusOr<TrainConfig> config = LoadTrainConfig(args.config_path, args.overrides);
    if (!config.ok()) {
      std::fprintf(stderr, "lightrl reward-worker: %s\n", config.status().ToString().c_str());
      return kExitBadConfig;
    }
    verifiers = config->reward.verifiers;
  }
  StatusOr<std::unique_ptr<reward::RewardWorker>> worker = reward::RewardWorker::Create(verifiers, "reward.verifiers");
  if (!worker.ok()) {
    std::fprintf(stderr, "lightrl reward-worker: %s\n", worker.status().ToString().c_str());
    return kExitBadConfig;
  }
  StatusOr<std::unique_ptr<comm::RpcServer>> server = comm::RpcServer::Bind(args.bind);
  if (!server.ok()) {
    std::fprintf(stderr, "lightrl reward-worker: --bind: %s\n", server.status().ToString().c_str());
    return kExitBadConfig;
  }
  if (!args.endpoint_file.empty()) {
    const std::string tmp = args.endpoint_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << (*server)->endpoint() << "\n";
      if (!out) {
        std::fprintf(stderr, "lightrl reward-worker: cannot write --endpoint-file %s\n", args.endpoint_file.c_str());
        return kExitFailure;
      }
    }
    std::rename(tmp.c_str(), args.endpoint_file.c_str());
  }
  Status st = ServeReward(**server, **worker, /*exit_on_signal=*/true);
  if (!st.ok()) {
    std::fprintf(stderr, "lightrl reward-worker: %s\n", st.ToString().c_str());
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace lightrl::trainer
