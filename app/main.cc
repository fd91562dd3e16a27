// lightrl <subcommand> ...   (`lightrl --help` lists them)
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "app/commands.h"
#include "core/check.h"

int main(int argc, char** argv) {
  CLI::App app{"lightrl: RL training of hybrid-attention LLMs (MiniMax-M1 style), built around CISPO"};
  app.require_subcommand(1);
  int exit_code = 0;
  lightrl::app::AddModelCommands(app, &exit_code);
  lightrl::app::AddTrainCommands(app, &exit_code);
  lightrl::app::AddCheckpointCommands(app, &exit_code);
  lightrl::app::AddRolloutCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lightrl: error: %s\n", e.what());
    return 1;
  }
  return exit_code;
}
