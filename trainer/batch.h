// The trainer's view of one RL step's data: samples (prompt + response + rollout log-probs +
// reward outcome), grouped by prompt, and the packing of samples into micro-batches for the
// training forward (documents packed into one row with cu_seqlens, budgeted by tokens).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lightrl::trainer {

struct Sample {
  uint64_t sample_id = 0;         // unique in the run (step * 2^32 + index)
  int64_t group = 0;              // index of the prompt group within the step
  int64_t task_index = 0;         // index into the step's task list
  std::string source;             // task source name (PromptTask::source), for per-task metrics
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> response_ids;
  std::vector<float> rollout_logprobs;  // [R] fp32, from the rollout engine
  std::string finish_reason;      // protocol::FinishReasonName: "stop", "length", "repetition", ...
  uint64_t weights_version = 0;
  std::string response_text;

  // Reward outcome: masked samples are excluded from the loss and from group statistics.
  bool scored = false;            // a reward result (score or error) has been applied
  bool masked = false;
  std::string mask_reason;        // "timeout", "sandbox_error", "worker_lost", ...
  double reward = 0.0;
  double reward_penalty = 0.0;    // subtracted from reward for the advantages (KL reward penalty)
  bool correct = false;

  // Filled by the step loop.
  std::vector<float> old_logprobs;  // [R] fp32 (recomputed or = rollout_logprobs)
  std::vector<float> ref_logprobs;  // [R] fp32 under the frozen reference policy (algorithm.kl.coef > 0)
  std::vector<float> advantages;    // [R] fp32 (constant per sample for GRPO)
  // PPO with a critic only (empty otherwise): old values V(prefix before token t) and GAE
  // returns (advantages before whitening + values).
  std::vector<float> values;        // [R] fp32
  std::vector<float> returns;       // [R] fp32

  int64_t length() const { return static_cast<int64_t>(prompt_ids.size() + response_ids.size()); }
};

// One micro-batch: samples packed along T into a single row.
struct MicroBatch {
  std::vector<int64_t> sample_indices;  // into the step's sample list, in packing order
  torch::Tensor input_ids;              // [1, T] int64
  std::vector<int64_t> cu_seqlens;      // [n + 1]
  torch::Tensor target_positions;       // [N] int64: positions whose logits predict a response token
  torch::Tensor targets;                // [N] int64: the response tokens predicted there
  torch::Tensor token_sample;           // [N] int64: which entry of sample_indices each token belongs to
  int64_t response_tokens = 0;          // N
};

// Greedily packs `indices` (in order) into micro-batches of at most `max_tokens` tokens each
// (a longer sample gets a micro-batch of its own). Samples with no response are skipped.
std::vector<MicroBatch> PackMicroBatches(const std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                                         int64_t max_tokens);

// The data-parallel assignment of one rollout batch's updates: `order` is split into `updates`
// contiguous mini-batches, slice m = [total*m/updates, total*(m+1)/updates); trainer rank `rank`
// of `world` trains the entries i of slice m with (i - begin) % world == rank. Returns those
// entries of `order` (PolicyTrainer::Update, Critic::Update and the trainer's per-rank phases
// all use this one assignment).
std::vector<int64_t> MiniBatchShard(const std::vector<int64_t>& order, int64_t updates, int64_t m, int rank,
                                    int world);

}  // namespace lightrl::trainer
