// Subcommand registration for the `lightrl` executable. Each Add*Commands adds its subcommands
// to the CLI11 app; the callback runs the job and sets *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace lightrl::app {

void AddModelCommands(CLI::App& app, int* exit_code);  // model-info, model-smoke
void AddTrainCommands(CLI::App& app, int* exit_code);  // train, sft, reward-worker
void AddCheckpointCommands(CLI::App& app, int* exit_code);  // export, ckpt-info
void AddRolloutCommands(CLI::App& app, int* exit_code);  // generate, serve

}  // namespace lightrl::app
