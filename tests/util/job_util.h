// Helpers for tests that launch the real `lightrl` binary (usually under mpirun) and inspect what
// it leaves in its run directory. Header-only; used by tests/trainer and tests/checkpoint.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace lightrl::testing {

// The source tree (ctest sets LIGHTRL_SOURCE_DIR; the compile-time default otherwise).
inline std::string SourceDir(const char* fallback) {
  const char* d = std::getenv("LIGHTRL_SOURCE_DIR");
  return d ? d : fallback;
}

// "mpirun -np N" with the flags this machine needs (oversubscribed, unbound, as root).
inline std::string Mpirun(int np) {
  return "mpirun -np " + std::to_string(np) + " --oversubscribe --bind-to none --allow-run-as-root ";
}

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string output;  // stdout + stderr
};

// Runs `command` through the shell and collects its output.
inline CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Non-empty lines of a file (0 if it does not exist).
inline size_t CountLines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

// An empty directory under the temp dir, unique per process and name.
// PIDs of a job's world-rank-`rank` processes: every rank runs the same command line, which
// names run_dir (mpirun itself is skipped); the rank is read from OMPI_COMM_WORLD_RANK in its
// environment.
inline std::vector<pid_t> RankPids(const std::string& run_dir, int rank) {
  std::vector<pid_t> pids;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmd(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    if (cmdline.find(run_dir) == std::string::npos || cmdline.find("mpirun") != std::string::npos) continue;
    std::ifstream env(e.path() / "environ");
    std::string environ((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    if (environ.find("OMPI_COMM_WORLD_RANK=" + std::to_string(rank) + std::string(1, '\0')) != std::string::npos)
      pids.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return pids;
}

inline std::string FreshDir(const std::string& prefix, const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / (prefix + "_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

}  // namespace lightrl::testing
