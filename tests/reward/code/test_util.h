// Shared set-up for the reward/code tests: an executor config with short limits and a test-
// specific sandbox uid (so "no process of that uid survives" is a meaningful host invariant even
// when ctest runs several test binaries at once).
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "reward/code/executor.h"

namespace lightrl::reward::code::testing {

inline ExecutorConfig TestConfig(uint32_t uid, int max_parallel = 2) {
  ExecutorConfig c;
  c.sandbox.uid = uid;
  c.sandbox.gid = uid;
  c.run_limits.cpu_seconds = 5;  // generous: ctest may run other suites on the 2 cores
  c.run_limits.wall_seconds = 15;
  c.run_limits.memory_bytes = 256ll << 20;
  c.max_parallel = max_parallel;
  return c;
}

// Pids of live processes owned by `uid` (scans /proc).
inline std::vector<int> ProcessesOfUid(uint32_t uid) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    struct stat st;
    std::string path = std::string("/proc/") + e->d_name;
    if (::stat(path.c_str(), &st) == 0 && st.st_uid == uid) {
      // Skip zombies already reaped by the time we read the status.
      std::ifstream status(path + "/status");
      std::string line;
      bool zombie = false;
      while (std::getline(status, line)) {
        if (line.rfind("State:", 0) == 0) zombie = line.find('Z') != std::string::npos;
      }
      if (!zombie) out.push_back(static_cast<int>(pid));
    }
  }
  ::closedir(d);
  return out;
}

inline CodeTask StdinTask(Language lang, std::vector<std::pair<std::string, std::string>> io,
                          ComparatorKind kind = ComparatorKind::kLines) {
  CodeTask t;
  t.language = lang;
  t.comparator.kind = kind;
  for (auto& [in, out] : io) {
    TestCase tc;
    tc.input = in;
    tc.expected_output = out;
    t.tests.push_back(tc);
  }
  return t;
}

}  // namespace lightrl::reward::code::testing
