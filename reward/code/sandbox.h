// One sandboxed process run: bubblewrap namespaces + a per-run cgroup + rlimits + seccomp,
// supervised from the host with a wall-clock deadline, a CPU-time deadline and output byte caps
// (rewards.md §4.1). This is the layer below the executor: it knows nothing about tests or
// verdicts; it reports what happened (exit code, why it was stopped, what the cgroup saw).
//
// Launch (mode kBwrap). The host forks a child that joins the run's cgroup leaves, sets the
// rlimits, drops to the configured unprivileged uid/gid (when started as root) and execs
// bubblewrap with a scrubbed environment:
//   bwrap --unshare-user --unshare-pid --unshare-net --unshare-ipc --unshare-uts
//         --unshare-cgroup --disable-userns --die-with-parent --new-session --clearenv
//         --cap-drop ALL --uid U --gid G
//         --ro-bind /usr /usr (+ /bin, /lib*, /sbin as symlinks or ro-binds, as on the host)
//         --ro-bind /etc/ld.so.cache; a synthetic /etc/passwd and /etc/group
//         --proc /proc --dev /dev --size N --tmpfs /tmp --size N --tmpfs /dev/shm
//         <request binds> --chdir <cwd> --setenv PATH ... --json-status-fd 4 --seccomp 5
//         -- argv...
// Nothing else of the host file system exists inside (no /home, /root, /etc secrets, /sys).
// Because bwrap itself runs as the unprivileged uid, the sandbox uid maps to that host uid, not
// to root (rewards.md §4.1 "Measured on these hosts"), and /proc/1 (bwrap's reaper) holds only
// the scrubbed environment.
//
// File descriptors of the sandboxed program: 0 = stdin (a memfd holding the request's input,
// so huge inputs never block), 1/2 = pipes read by the host with byte caps, 3 = an optional
// result pipe (function-call harnesses write their result there). Nothing else is inherited.
//
// Supervision. The host polls the pipes, a pidfd of bwrap and, every few ms, the cgroup's CPU
// time. The run is stopped with a cgroup kill-all when CPU time exceeds the limit (also
// backstopped by RLIMIT_CPU), the wall-clock deadline passes, or a stream exceeds its cap.
// After bwrap exits, whatever is left in the cgroup (double-forked daemons) is killed, and the
// leaf is removed.
//
// Mode kNone (config `sandbox: none`): no namespaces, no cgroup: rlimits (incl. RLIMIT_AS as
// the only memory limit), seccomp, the uid drop and a process-group kill. Every run logs a
// warning. It exists for machines without bubblewrap/cgroups and is not safe for untrusted
// code.
//
// Errors. Run() returns a non-OK Status only for an infrastructure failure (the sandbox could
// not be set up, bwrap failed before starting the program, a cgroup write failed). Everything
// the program can cause is reported in SandboxResult, so a program cannot turn its own failure
// into a (masked) sandbox error.
//
// Thread-safety: Run() may be called concurrently from several threads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "reward/code/cgroup.h"

namespace lightrl::reward::code {

enum class SandboxMode { kBwrap, kNone };

struct SandboxConfig {
  SandboxMode mode = SandboxMode::kBwrap;
  std::string bwrap_path = "/usr/bin/bwrap";
  // Host uid/gid of the sandboxed processes when lightrl runs as root (ignored otherwise: the
  // current ids are kept). Give concurrent executors different uids if they must not share
  // one (kernel keyrings and such are per uid; seccomp also denies keyctl).
  uint32_t uid = 65534;
  uint32_t gid = 65534;
  // Read-only host directories bound at the same path (the toolchain). Top-level /bin, /sbin,
  // /lib, /lib32, /lib64, /libx32 are mirrored automatically (symlink or ro-bind).
  std::vector<std::string> ro_dirs = {"/usr"};
  CgroupPreference cgroup = CgroupPreference::kAuto;
  bool seccomp = true;
  int64_t tmpfs_bytes = 64ll << 20;  // size of /tmp and /dev/shm inside (also memory-charged)
  std::string work_root = "/tmp";    // host directory for per-executor scratch files
};

struct SandboxLimits {
  double cpu_seconds = 2.0;            // CPU time of the whole cgroup (all processes)
  double wall_seconds = 6.0;           // wall clock from fork to exit
  int64_t memory_bytes = 256ll << 20;  // cgroup memory limit (no swap)
  int64_t pids = 64;                   // cgroup pids.max (processes + threads)
  double cpus = 1.0;                   // CPU bandwidth (cpu.max)
  int64_t file_size_bytes = 16ll << 20;  // RLIMIT_FSIZE
  int64_t open_files = 64;               // RLIMIT_NOFILE
  int64_t stack_bytes = 64ll << 20;      // RLIMIT_STACK (soft and hard)
  int64_t stdout_bytes = 1ll << 20;      // caps: exceeding one stops the run (kOutputLimit)
  int64_t stderr_bytes = 1ll << 20;
  int64_t result_bytes = 1ll << 20;
};

struct BindMount {
  std::string host_path;     // must exist on the host
  std::string sandbox_path;  // absolute path inside the sandbox
  bool writable = false;
};

struct SandboxRequest {
  // argv[0] must be an absolute path as seen by the program (use Sandbox::VisiblePath for
  // files that come in through `binds`).
  std::vector<std::string> argv;
  std::string stdin_data;
  std::vector<BindMount> binds;
  std::vector<std::string> env;  // extra "KEY=VALUE" (PATH, HOME, LANG are always set)
  std::string cwd = "/tmp";      // inside the sandbox (kNone: a fresh host scratch dir)
  bool result_channel = false;   // open fd 3 as a pipe to the host
  SandboxLimits limits;
};

enum class StopReason {
  kExited,       // the program ended by itself (any exit code / signal)
  kCpuLimit,     // killed: CPU time over the limit
  kWallLimit,    // killed: wall clock over the limit
  kOutputLimit,  // killed: a stream went over its byte cap
};
const char* StopReasonName(StopReason r);

struct SandboxResult {
  StopReason stop = StopReason::kExited;
  // The program's exit status as bwrap reports it: the exit code, or 128+N for signal N
  // (kNone mode reports the same convention). -1 when the run was stopped before one existed.
  int exit_code = -1;
  int term_signal = 0;  // kNone mode only (bwrap folds signals into exit_code)
  std::string stdout_data, stderr_data, result_data;  // each at most its cap
  double cpu_seconds = 0;   // cgroup CPU time (kNone: rusage of the direct child)
  double wall_seconds = 0;
  int64_t oom_kills = 0;    // > 0: the OOM killer fired for this run's memory limit
  int64_t memory_peak = -1;
  int64_t pids_max_hits = 0;  // forks refused by pids.max
  bool cleanup_ok = true;     // every process was gone and the leaf removed afterwards
  std::string cleanup_error;
};

class Sandbox {
 public:
  // Checks the machine (bubblewrap present and working, a usable cgroup hierarchy) and runs a
  // preflight program. Refuses with FailedPrecondition and a message naming what is missing
  // and the `sandbox: none` opt-out.
  static StatusOr<std::unique_ptr<Sandbox>> Create(const SandboxConfig& config);
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // Runs one program to completion (or until stopped). See the header comment for errors.
  StatusOr<SandboxResult> Run(const SandboxRequest& request);

  // Where the program sees a bind: its sandbox_path (kBwrap) or its host_path (kNone).
  std::string VisiblePath(const BindMount& bind) const;

  // A host directory private to this Sandbox (removed with it) for per-run files; readable by
  // the sandbox uid. Callers create subdirectories with MakeScratchDir.
  const std::string& work_dir() const { return work_dir_; }
  // Creates a fresh subdirectory of work_dir() (mode 0755; `writable_by_sandbox` chowns it to
  // the sandbox uid so that a writable bind of it works).
  StatusOr<std::string> MakeScratchDir(const std::string& prefix, bool writable_by_sandbox);

  SandboxMode mode() const { return config_.mode; }
  const SandboxConfig& config() const { return config_; }
  // "bwrap 0.8.0 + cgroup v1 (...) + seccomp" for logs and reports.
  std::string Describe() const;

 private:
  explicit Sandbox(SandboxConfig config) : config_(std::move(config)) {}
  StatusOr<SandboxResult> RunBwrap(const SandboxRequest& request);
  StatusOr<SandboxResult> RunNone(const SandboxRequest& request);
  Status Preflight();

  SandboxConfig config_;
  std::unique_ptr<CgroupManager> cgroups_;
  std::vector<uint8_t> seccomp_bpf_;
  std::vector<std::string> base_args_;  // bwrap arguments shared by every run
  std::string work_dir_;
  std::string bwrap_version_;
  bool drop_ids_ = false;  // running as root: setgid/setuid to config uid/gid
  std::atomic<uint64_t> scratch_counter_{0};
};

}  // namespace lightrl::reward::code
