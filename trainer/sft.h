// `lightrl sft`: the supervised warm start that turns a scratch-initialised tiny model into a base
// policy for RL (the M1 pipeline starts RL from a fine-tuned model, algorithms.md §6.6).
//
//   [mpirun -np N] lightrl sft CONFIG [key.sub=value ...] --run-dir DIR [--out MODEL_DIR]
//
// Data: the recipe's `tasks:` block (envs/), each task's oracle answer as the target:
// reference_json's "solution" (a string) if present, else its "answer" (a string, a number, or a
// list of numbers joined by spaces). A task without either is an error naming the task id.
// Sequence = chat_template.RenderPrompt(prompt) + chat_template.RenderTarget(answer); the loss is
// the mean negative log-likelihood of the TARGET tokens only (prompt tokens are context), with
// the global token count as normaliser across data-parallel ranks (every rank is an SFT rank).
// Packing, FP32 head, AdamW and the all-reduce are the RL update's (trainer/policy_trainer.h).
//
// The `sft:` block (all optional):
//   sft:
//     steps: 200              optimizer steps
//     examples_per_step: 32   sequences per step (global, split over ranks)
//     lr: 1.0e-3              overrides optim.lr (warm-up and schedule come from `optim`)
//     out: ""                 model directory to write (default DIR/sft_model); --out wins
// Output: the model directory (config.json + model.safetensors, model/safetensors.h) that
// `trainer.init_from` loads, and DIR/metrics.jsonl with "sft/loss", "sft/target_token_prob".
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::trainer {

struct SftArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string run_dir;
  std::string out;  // model directory; empty = sft.out or DIR/sft_model
};

// Runs this rank's part of the SFT job; returns the process exit code (0 ok, 2 bad config).
int RunSftJob(const SftArgs& args);

// The SFT target text of a task from its reference JSON (see above). InvalidArgument naming
// `task_id` when there is none.
StatusOr<std::string> SftTargetText(const std::string& reference_json, const std::string& task_id);

}  // namespace lightrl::trainer
