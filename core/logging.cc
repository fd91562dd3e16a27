#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

#include "core/check.h"

namespace lightrl {
namespace {

std::mutex g_mu;
LoggingOptions g_options;

spdlog::level::level_enum ParseLevel(const std::string& name) {
  static const char* kNames[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  for (int i = 0; i < 7; ++i) {
    if (name == kNames[i]) return static_cast<spdlog::level::level_enum>(i);
  }
  LR_FAIL("unknown log level '", name, "'; expected one of trace, debug, info, warn, error, critical, off");
}

std::string Pattern() {
  return "[%Y-%m-%d %H:%M:%S.%e] [" + g_options.role + ":" + std::to_string(g_options.rank) +
         "] [%n] [%^%l%$] %v";
}

}  // namespace

void InitLogging(const LoggingOptions& options) {
  const auto level = ParseLevel(options.level);
  std::lock_guard<std::mutex> lock(g_mu);
  g_options = options;
  spdlog::set_pattern(Pattern());
  spdlog::set_level(level);
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) {
    l->set_pattern(Pattern());
    l->set_level(level);
  });
}

std::shared_ptr<spdlog::logger> Logger(const std::string& component) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (auto existing = spdlog::get(component)) return existing;
  // Logs go to stderr so that stdout stays clean for command output (JSONL, tables).
  auto logger = spdlog::stderr_color_mt(component);
  logger->set_pattern(Pattern());
  logger->set_level(spdlog::get_level());
  return logger;
}

}  // namespace lightrl
