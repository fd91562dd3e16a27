// `lightrl train`, `lightrl sft` and `lightrl reward-worker`: command-line wiring only; the job is in
// trainer/launch.h.
#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "trainer/launch.h"
#include "trainer/sft.h"

namespace lightrl::app {

void AddTrainCommands(CLI::App& app, int* exit_code) {
  auto train_args = std::make_shared<trainer::TrainArgs>();
  CLI::App* train = app.add_subcommand(
      "train",
      "RL training: mpirun -np N lightrl train CONFIG [key.sub=value ...] --run-dir DIR [--resume auto|none|PATH]");
  train->add_option("config", train_args->config_path, "training recipe (YAML), e.g. configs/cispo_tiny.yaml")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("overrides", train_args->overrides, "config overrides key.sub=value (applied in order)");
  train->add_option("--run-dir", train_args->run_dir, "run directory: metrics.jsonl, tb/, checkpoints/")->required();
  train->add_option("--resume", train_args->resume,
                    "auto (newest valid checkpoint in the run dir, if any), none, or a checkpoint path")
      ->default_val("auto");
  train->callback([train_args, exit_code] { *exit_code = trainer::RunTrainJob(*train_args); });

  auto sft_args = std::make_shared<trainer::SftArgs>();
  CLI::App* sft = app.add_subcommand(
      "sft", "supervised warm start on the recipe's tasks: [mpirun -np N] lightrl sft CONFIG [k=v ...] --run-dir DIR");
  sft->add_option("config", sft_args->config_path, "recipe (YAML) with tasks, tokenizer, chat_template and an sft block")
      ->required()
      ->check(CLI::ExistingFile);
  sft->add_option("overrides", sft_args->overrides, "config overrides key.sub=value");
  sft->add_option("--run-dir", sft_args->run_dir, "run directory (metrics.jsonl)")->required();
  sft->add_option("--out", sft_args->out, "model directory to write (default: sft.out or RUN_DIR/sft_model)");
  sft->callback([sft_args, exit_code] { *exit_code = trainer::RunSftJob(*sft_args); });

  auto worker_args = std::make_shared<trainer::RewardWorkerArgs>();
  CLI::App* worker = app.add_subcommand(
      "reward-worker", "standalone reward worker serving RewardBatches over ZeroMQ (list its endpoint in reward.endpoints)");
  worker->add_option("--bind", worker_args->bind, "ZeroMQ endpoint to bind (loopback by default; tcp://127.0.0.1:* picks a port)")
      ->default_val("tcp://127.0.0.1:5555");
  worker->add_option("--config", worker_args->config_path, "training config whose reward.verifiers block to use");
  worker->add_option("overrides", worker_args->overrides, "config overrides key.sub=value");
  worker->add_option("--endpoint-file", worker_args->endpoint_file, "write the bound endpoint to this file");
  worker->callback([worker_args, exit_code] { *exit_code = trainer::RunStandaloneRewardWorker(*worker_args); });
}

}  // namespace lightrl::app
