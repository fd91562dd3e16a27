#include <cstdio>

#include "app/commands.h"
#include "model/config.h"

namespace lightrl::app {

void AddModelCommands(CLI::App& app, int* exit_code) {
  auto* info = app.add_subcommand("model-info", "print a model config's shape and parameter counts");
  static std::string config_path;
  info->add_option("config", config_path, "model YAML (configs/model/*.yaml) or config.json")->required();
  info->callback([exit_code] {
    auto config = model::LoadModelConfig(config_path);
    if (!config.ok()) {
      std::fprintf(stderr, "lightrl model-info: %s\n", config.status().ToString().c_str());
      *exit_code = 1;
      return;
    }
    auto counts = model::CountParameters(*config);
    std::printf("%s\n", model::ModelConfigToJson(*config).c_str());
    std::printf("parameters: total=%lld (%.2fB) embedding=%lld active_non_embedding=%lld (%.2fB)\n",
                (long long)counts.total, counts.total / 1e9, (long long)counts.embedding,
                (long long)counts.active_non_embedding, counts.active_non_embedding / 1e9);
  });
}

}  // namespace lightrl::app
