// Per-run control groups for the code sandbox: memory, pids and CPU limits, CPU-time and OOM
// accounting, and a kill-all (rewards.md §4.1).
//
// Two layouts are supported and detected at start-up (DetectCgroupLayout):
//   kV2  the unified hierarchy (cgroup2) has the memory, pids and cpu controllers: one leaf per
//        run with memory.max, memory.swap.max=0, pids.max, cpu.max; OOM from memory.events;
//        kill-all by cgroup.kill.
//   kV1  the controllers live in cgroup v1 hierarchies (memory, pids, cpu; pure v1 or a v1/v2
//        hybrid such as this project's machines): one leaf per run in each hierarchy with
//        memory.limit_in_bytes (+ memsw), pids.max, cpu.cfs_quota_us; OOM from
//        memory.oom_control (`oom_kill`). Kill-all uses a leaf in the v2 `unified` mount when
//        there is one with cgroup.kill (the hybrid case), else SIGKILL of the pid list until the
//        pids leaf is empty. CPU time comes from the v2 leaf's cpu.stat or v1 cpuacct.usage.
//
// Where the leaves go: under the cgroup this process already belongs to in each hierarchy
// (/proc/self/cgroup), in a per-manager directory `lightrl-code-<pid>-<n>`, so the runs stay
// inside whatever limits the host put on this process. Directories left by a dead process
// (nsjail #69) are swept when a manager starts.
//
// Every limit is written on every run and read back (ioi/isolate PR #123, #195: limits silently
// not applied / left over from a previous run).
//
// Thread-safety: CgroupManager is safe to use from several threads (each run gets its own leaf).
// RunCgroup is used by one thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::reward::code {

enum class CgroupMode { kV2, kV1 };

// Which hierarchy to use: detect (prefer v2 where it has the controllers), or force one.
enum class CgroupPreference { kAuto, kV2, kV1 };

// Where each piece lives on this machine. Directories are absolute paths of the cgroup this
// process belongs to in that hierarchy (the parent of our manager directory).
struct CgroupLayout {
  CgroupMode mode = CgroupMode::kV1;
  // kV2: the process's cgroup in the unified hierarchy (controllers live here).
  // kV1 hybrid: the unified cgroup used only for cgroup.kill and cpu.stat ("" if none).
  std::string unified_dir;
  bool unified_has_kill = false;  // cgroup.kill exists in a child of unified_dir (kernel >= 5.14)
  // kV1 only.
  std::string memory_dir, pids_dir, cpu_dir, cpuacct_dir;  // cpuacct_dir may be ""
  bool memsw = false;  // memory.memsw.limit_in_bytes exists (swap accounting on)

  // One line for logs: "cgroup v1 (memory=/sys/fs/cgroup/memory/..., ..., kill=unified)".
  std::string Describe() const;
};

// Reads /proc/self/mountinfo and /proc/self/cgroup, probes that leaves can be created, and
// picks the layout. Errors (FailedPrecondition) say what is missing, e.g. "no cgroup hierarchy
// with the memory controller is mounted", and that `sandbox: none` is the explicit opt-out.
StatusOr<CgroupLayout> DetectCgroupLayout(CgroupPreference preference = CgroupPreference::kAuto);

struct CgroupLimits {
  int64_t memory_bytes = 256ll << 20;  // memory.max / memory.limit_in_bytes (and swap 0)
  int64_t pids_max = 64;               // processes + threads
  double cpus = 1.0;                   // CPU bandwidth, in CPUs (cpu.max quota/period)
};

// After a run: what the cgroup saw.
struct CgroupStats {
  double cpu_seconds = 0;     // user + system CPU of every process that ran in the leaf
  int64_t oom_kills = 0;      // processes killed by the OOM killer for this leaf's limit
  int64_t memory_peak = -1;   // bytes, -1 if the kernel does not report it
  int64_t pids_max_hits = 0;  // fork/clone failures because pids.max was reached
};

class RunCgroup;

// Owns the per-manager directories; creates per-run leaves. Removing the manager removes its
// directories (after every leaf is gone).
class CgroupManager {
 public:
  static StatusOr<std::unique_ptr<CgroupManager>> Create(const CgroupLayout& layout);
  ~CgroupManager();
  CgroupManager(const CgroupManager&) = delete;
  CgroupManager& operator=(const CgroupManager&) = delete;

  const CgroupLayout& layout() const { return layout_; }

  // A fresh leaf with every limit written and verified. Errors are infrastructure errors (SE).
  StatusOr<std::unique_ptr<RunCgroup>> CreateRun(const CgroupLimits& limits);

  // Directories (one per hierarchy) that hold this manager's leaves.
  const std::vector<std::string>& base_dirs() const { return base_dirs_; }

 private:
  explicit CgroupManager(CgroupLayout layout) : layout_(std::move(layout)) {}
  CgroupLayout layout_;
  std::vector<std::string> base_dirs_;  // unified (kV2) or memory/pids/cpu[/cpuacct][/unified]
  std::string name_;
  std::atomic<uint64_t> next_run_{0};
};

// One run's leaf (in one or several hierarchies). Destruction kills whatever is left and
// removes the directories.
class RunCgroup {
 public:
  ~RunCgroup();
  RunCgroup(const RunCgroup&) = delete;
  RunCgroup& operator=(const RunCgroup&) = delete;

  // Moves `pid` (a whole process) into the leaf in every hierarchy.
  Status AddProcess(pid_t pid);

  // CPU seconds used so far by the leaf's processes (live and dead). -1 on a read error.
  double CpuSeconds() const;

  // Kills every process in the leaf and waits (up to `timeout_s`) until it is empty. Returns
  // an error if processes remain.
  Status KillAll(double timeout_s = 2.0);

  // Number of processes still in the leaf (-1 on a read error).
  int64_t ProcessCount() const;

  CgroupStats Stats() const;

  // KillAll + rmdir of every directory. Called by the destructor; calling it first gives the
  // error (e.g. "a process survived cgroup.kill").
  Status Destroy();

  // Every directory of the leaf (one per hierarchy); a process joins by writing its pid to
  // each <dir>/cgroup.procs.
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  friend class CgroupManager;
  RunCgroup(const CgroupLayout* layout) : layout_(layout) {}
  const CgroupLayout* layout_;
  // kV2: {unified}. kV1: {memory, pids, cpu, [cpuacct], [unified]} in that order.
  std::vector<std::string> dirs_;
  std::string memory_dir_, pids_dir_, cpu_stat_dir_, cpuacct_dir_, kill_dir_;
  bool destroyed_ = false;
};

}  // namespace lightrl::reward::code
