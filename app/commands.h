// Subcommand registration for the `lightrl` executable. Each Add*Commands adds its subcommands
// to the CLI11 app; the callback runs the job and sets *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace lightrl::app {

void AddModelCommands(CLI::App& app, int* exit_code);  // model-info, model-smoke

}  // namespace lightrl::app
