// `lightrl export CKPT --out DIR` and `lightrl ckpt-info CKPT` (bodies in trainer/checkpoint.h).
#include <cstdio>
#include <string>

#include "app/commands.h"
#include "trainer/checkpoint.h"

namespace lightrl::app {

void AddCheckpointCommands(CLI::App& app, int* exit_code) {
  auto* exp = app.add_subcommand(
      "export", "write a checkpoint's policy as a MiniMax-M1 model directory (config.json + safetensors)");
  static std::string export_ckpt, export_out, export_dtype = "fp32";
  static int64_t shard_mb = 0;
  exp->add_option("checkpoint", export_ckpt, "step_<N> directory, its state.h5, or a run/checkpoints directory (latest)")
      ->required();
  exp->add_option("--out", export_out, "output model directory (created)")->required();
  exp->add_option("--dtype", export_dtype, "tensor dtype of the export")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  exp->add_option("--shard-mb", shard_mb, "max shard size in MB (0 = one model.safetensors)")
      ->check(CLI::NonNegativeNumber);
  exp->callback([exit_code] {
    const torch::Dtype dtype = export_dtype == "bf16"   ? torch::kBFloat16
                               : export_dtype == "fp16" ? torch::kFloat16
                                                        : torch::kFloat32;
    Status s = trainer::ExportCheckpoint(export_ckpt, export_out, dtype, shard_mb * 1000 * 1000);
    if (!s.ok()) {
      std::fprintf(stderr, "lightrl export: %s\n", s.ToString().c_str());
      *exit_code = 1;
      return;
    }
    std::printf("exported %s -> %s (%s)\n", export_ckpt.c_str(), export_out.c_str(), export_dtype.c_str());
  });

  auto* info = app.add_subcommand("ckpt-info", "print what a checkpoint holds and whether it is valid");
  static std::string info_ckpt;
  static bool summary = false;
  info->add_option("checkpoint", info_ckpt, "step_<N> directory, its state.h5, or a run/checkpoints directory (latest)")
      ->required();
  info->add_flag("--summary", summary, "per-group totals instead of every tensor");
  info->callback([exit_code] {
    auto inspected = trainer::InspectCheckpoint(info_ckpt);
    if (!inspected.ok()) {
      std::fprintf(stderr, "lightrl ckpt-info: %s\n", inspected.status().ToString().c_str());
      *exit_code = 1;
      return;
    }
    std::fputs(trainer::FormatCheckpointInfo(*inspected, !summary).c_str(), stdout);
    // An invalid checkpoint is reported and signalled by the exit status (scripts can test it).
    if (!inspected->valid()) *exit_code = 2;
  });
}

}  // namespace lightrl::app
