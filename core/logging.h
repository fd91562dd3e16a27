// spdlog setup shared by every role. One named logger per component ("trainer", "rollout",
// "reward", "comm", "model", ...); the process's role and MPI rank are part of every line:
//   [2026-11-23 21:50:01.123] [trainer:0] [model] [info] built tiny preset: 2.1M params
//
// Thread-safety: InitLogging is called once from main before threads start; Logger() is safe.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace lightrl {

struct LoggingOptions {
  std::string role = "main";   // "trainer", "rollout", "reward", "main", "bench", "test"
  int rank = 0;                // MPI world rank (0 outside MPI)
  std::string level = "info";  // trace|debug|info|warn|error|critical|off
};

// Installs the pattern and level for all current and future component loggers.
// An unknown level name throws lightrl::Error naming the accepted values.
void InitLogging(const LoggingOptions& options);

// The logger for `component`, created on first use with the process-wide pattern and level.
std::shared_ptr<spdlog::logger> Logger(const std::string& component);

}  // namespace lightrl
