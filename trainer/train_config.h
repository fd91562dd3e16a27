// The resolved configuration of a training run (`lightrl train CONFIG [k=v ...]`): typed blocks
// for the parts the trainer owns, and the raw YAML of blocks owned by other layers (algorithm,
// tasks, tokenizer, chat_template), which their own parsers validate. Unknown top-level keys
// are errors naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/config/config.h"
#include "model/config.h"
#include "trainer/optimizer.h"

namespace lightrl::trainer {

struct RunConfig {
  int64_t total_steps = 20;        // trainer.total_steps
  uint64_t seed = 1;               // trainer.seed: every generator of the run derives from it
  int threads = 0;                 // trainer.threads: libtorch threads per rank (0 = cores available)
  int64_t micro_batch_tokens = 4096;  // trainer.micro_batch_tokens
  std::string log_level = "info";  // trainer.log_level
  bool deterministic = true;       // trainer.deterministic: synchronous, bit-reproducible on CPU
  bool moe_aux_loss = true;        // trainer.moe_aux_loss: add the router load-balancing loss
  // trainer.collective_timeout_s: hang guard of the trainer ranks' collectives (0 = off). A
  // trainer rank that waits longer than this in one collective ends the job naming it. It must
  // exceed rollout.timeout_s + reward.timeout_s: the other trainer ranks wait through the
  // driver's generation phases.
  double collective_timeout_s = 1800;
  std::string init_from;           // trainer.init_from: model directory (safetensors + config.json,
                                   // e.g. from `lightrl sft` or `lightrl export`); empty = fresh init
};

struct RolloutConfig {
  int64_t prompts_per_step = 8;
  int samples_per_prompt = 8;       // G
  double temperature = 1.0;
  double top_p = 1.0;
  int top_k = 0;
  int64_t max_response_len = 64;
  int64_t early_truncation_window = 3000;  // M1 repetition early truncation
  double early_truncation_prob = 0.99;
  double timeout_s = 600;
  int max_slots = 64;
  // rollout.batch_invariant: every sequence decodes with batch 1, so its tokens are bitwise
  // independent of batch composition (rollout/engine.h). Off by default: a synchronous run is
  // reproducible without it (the same requests give the same batches); turn it on to make a
  // run's samples independent of the number of rollout workers.
  bool batch_invariant = false;
  // rollout.max_staleness: how many weights versions a trained sample may lag behind the policy
  // that trains on it. 0 = synchronous (generate, then train; deterministic). 1 = one-step
  // off-policy pipeline: while step t updates the policy, the driver generates and scores the
  // batch of step t+1 with the weights step t started from (trainer.h, "Async pipeline"). Each
  // sample's version is checked against the bound when it is trained on.
  int max_staleness = 0;
};

struct RewardConfig {
  double timeout_s = 60;                // deadline per reward batch (workers that miss it are masked)
  std::vector<std::string> endpoints;   // extra standalone reward workers (tcp://host:port)
  int64_t overlong_buffer_len = 0;      // DAPO soft overlong punishment (0 = off)
  double overlong_penalty_factor = 1.0;
  bool overlong_filter = false;         // mask truncated samples from the loss
  YAML::Node verifiers;                 // reward.verifiers: parsed by reward/ (RewardWorker::Create)
};

struct RolesConfig {
  std::string mode = "split";  // split: trainer / rollout / reward ranks; colocated: trainers do all
  int rollout_ranks = 1;       // split mode
  int reward_ranks = 1;        // split mode (0 = rewards computed on the trainer's rank 0)
};

struct CheckpointConfig {
  int64_t save_every = 0;  // steps between checkpoints (0 = only at the end / on SIGTERM)
  int64_t keep_last = 3;
};

struct TrainConfig {
  model::ModelConfig model;
  RunConfig trainer;
  RolloutConfig rollout;
  RewardConfig reward;
  RolesConfig roles;
  CheckpointConfig checkpoint;
  OptimConfig optim;
  bool tensorboard = true;
  YAML::Node algorithm;      // parsed by algorithms/ (AlgorithmConfig)
  YAML::Node tasks;          // parsed by envs/
  YAML::Node tokenizer;      // parsed by model/tokenizer.h
  YAML::Node chat_template;  // parsed by model/tokenizer.h
  YAML::Node sft;            // parsed by trainer/sft.h (`lightrl sft` only)
  YAML::Node raw;            // the whole resolved config (stored in checkpoints)
};

// Loads CONFIG (with `include:`), applies `a.b.c=value` overrides, and parses it.
StatusOr<TrainConfig> LoadTrainConfig(const std::string& file, const std::vector<std::string>& overrides);
StatusOr<TrainConfig> ParseTrainConfig(const YAML::Node& root);

}  // namespace lightrl::trainer
