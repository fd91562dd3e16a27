#include "reward/code/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <algorithm>
#include <sstream>
#include <thread>

#include "core/check.h"
#include "core/logging.h"

namespace lightrl::reward::code {
namespace {

std::string ErrnoText(int err) { return std::string(std::strerror(err)); }

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Reads a small pseudo-file completely. Returns NotFound / Internal with the path and errno.
StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFound(StrCat(path, ": ", ErrnoText(err)));
    return Internal(StrCat("open ", path, ": ", ErrnoText(err)));
  }
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Internal(StrCat("read ", path, ": ", ErrnoText(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status WriteFile(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Internal(StrCat("open ", path, " for writing: ", ErrnoText(errno)));
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (n < 0) return Internal(StrCat("write '", value, "' to ", path, ": ", ErrnoText(err)));
  if (static_cast<size_t>(n) != value.size()) return Internal(StrCat("short write to ", path));
  return Status::Ok();
}

// "key value" lines (cpu.stat, memory.events, memory.oom_control, pids.events).
int64_t ReadKeyed(const std::string& path, const std::string& key, int64_t fallback) {
  auto text = ReadFile(path);
  if (!text.ok()) return fallback;
  std::istringstream in(*text);
  std::string k;
  std::string v;
  while (in >> k >> v) {
    if (k == key) {
      try {
        return std::stoll(v);
      } catch (...) {
        return fallback;
      }
    }
  }
  return fallback;
}

int64_t ReadInt(const std::string& path, int64_t fallback) {
  auto text = ReadFile(path);
  if (!text.ok()) return fallback;
  try {
    return std::stoll(*text);
  } catch (...) {
    return fallback;
  }
}

std::vector<pid_t> ReadPids(const std::string& procs_file) {
  std::vector<pid_t> pids;
  auto text = ReadFile(procs_file);
  if (!text.ok()) return pids;
  std::istringstream in(*text);
  long p;
  while (in >> p) pids.push_back(static_cast<pid_t>(p));
  return pids;
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return Internal(StrCat("mkdir ", path, ": ", ErrnoText(errno)));
  }
  return Status::Ok();
}

// rmdir with retries: a leaf stays busy for a moment while its last processes are released.
Status RemoveDir(const std::string& path, double timeout_s = 1.0) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return Status::Ok();
    int err = errno;
    if (err != EBUSY || std::chrono::steady_clock::now() > deadline) {
      return Internal(StrCat("rmdir ", path, ": ", ErrnoText(err)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::vector<std::string> ListSubdirs(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_type != DT_DIR) continue;
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    out.push_back(name);
  }
  ::closedir(d);
  return out;
}

struct Mount {
  std::string root;        // the mount's root inside its hierarchy
  std::string mountpoint;  // where it is mounted
};

struct ProcView {
  std::optional<Mount> unified;             // cgroup2 mount
  std::map<std::string, Mount> v1;          // controller name -> mount
  std::optional<std::string> unified_path;  // this process's v2 path ("0::<path>")
  std::map<std::string, std::string> v1_path;  // controller -> this process's path
};

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

StatusOr<ProcView> ReadProcView() {
  ProcView view;
  LR_ASSIGN_OR_RETURN(std::string mountinfo, ReadFile("/proc/self/mountinfo"));
  std::istringstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    // id parent maj:min root mountpoint options [optional...] - fstype source superoptions
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string tok;
    while (ls >> tok) f.push_back(tok);
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i) {
      if (f[i] == "-") {
        dash = i;
        break;
      }
    }
    if (dash == 0 || dash + 3 > f.size()) continue;
    const std::string& fstype = f[dash + 1];
    Mount m{f[3], f[4]};
    if (fstype == "cgroup2") {
      if (!view.unified) view.unified = m;
    } else if (fstype == "cgroup") {
      for (const auto& opt : Split(f[dash + 3], ',')) {
        if (opt == "memory" || opt == "pids" || opt == "cpu" || opt == "cpuacct") {
          if (!view.v1.count(opt)) view.v1[opt] = m;
        }
      }
    }
  }
  LR_ASSIGN_OR_RETURN(std::string cgroups, ReadFile("/proc/self/cgroup"));
  std::istringstream cin(cgroups);
  while (std::getline(cin, line)) {
    // hierarchy-id:controller-list:path
    auto first = line.find(':');
    auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    std::string controllers = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (line.substr(0, first) == "0" && controllers.empty()) {
      view.unified_path = path;
    } else {
      for (const auto& c : Split(controllers, ',')) view.v1_path[c] = path;
    }
  }
  return view;
}

// Host directory of this process's cgroup in a hierarchy mounted at `m`.
std::optional<std::string> OwnDir(const Mount& m, const std::string& own_path) {
  std::string rel;
  if (m.root == "/") {
    rel = own_path;
  } else if (own_path.compare(0, m.root.size(), m.root) == 0) {
    rel = own_path.substr(m.root.size());
  } else {
    return std::nullopt;
  }
  if (rel == "/") rel.clear();
  std::string dir = m.mountpoint + rel;
  if (!Exists(dir)) return std::nullopt;
  return dir;
}

bool ContainsWord(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  std::string w;
  while (in >> w) {
    if (w == word) return true;
  }
  return false;
}

// Makes memory, pids and cpu available to the children of `dir` (cgroup v2). A non-root
// cgroup that holds processes cannot delegate controllers ("no internal processes"); then this
// process moves itself into a leaf `lightrl-host-<pid>` below it and retries once.
Status EnableV2Controllers(const std::string& dir) {
  auto current = ReadFile(dir + "/cgroup.subtree_control");
  if (!current.ok()) return current.status();
  bool all = ContainsWord(*current, "memory") && ContainsWord(*current, "pids") &&
             ContainsWord(*current, "cpu");
  if (all) return Status::Ok();
  Status st = WriteFile(dir + "/cgroup.subtree_control", "+memory +pids +cpu");
  if (st.ok()) return st;
  std::string host_leaf = StrCat(dir, "/lightrl-host-", ::getpid());
  LR_RETURN_IF_ERROR(MakeDir(host_leaf));
  Logger("reward.code")
      ->warn("cgroup v2: {} holds processes, so controllers cannot be delegated; moving this "
             "process into {}",
             dir, host_leaf);
  LR_RETURN_IF_ERROR(WriteFile(host_leaf + "/cgroup.procs", "0"));
  st = WriteFile(dir + "/cgroup.subtree_control", "+memory +pids +cpu");
  if (!st.ok()) {
    return FailedPrecondition(StrCat(
        "cgroup v2: cannot enable memory/pids/cpu for the children of ", dir, " (", st.message(),
        "); other processes share that cgroup. Run lightrl in a delegated cgroup (systemd "
        "Delegate=yes) or set code_executor.sandbox: none to run unsandboxed"));
  }
  return Status::Ok();
}

std::atomic<uint64_t> g_manager_counter{0};

bool ProcessAlive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// Kills and removes leaves left by a lightrl process that no longer exists.
void SweepStale(const std::string& parent) {
  for (const auto& name : ListSubdirs(parent)) {
    if (name.rfind("lightrl-code-", 0) != 0) continue;
    auto parts = Split(name.substr(std::strlen("lightrl-code-")), '-');
    if (parts.empty()) continue;
    pid_t owner = 0;
    try {
      owner = static_cast<pid_t>(std::stol(parts[0]));
    } catch (...) {
      continue;
    }
    if (owner <= 0 || ProcessAlive(owner)) continue;
    std::string mdir = parent + "/" + name;
    for (const auto& leaf : ListSubdirs(mdir)) {
      std::string ldir = mdir + "/" + leaf;
      if (Exists(ldir + "/cgroup.kill")) (void)WriteFile(ldir + "/cgroup.kill", "1");
      for (pid_t p : ReadPids(ldir + "/cgroup.procs")) ::kill(p, SIGKILL);
      (void)RemoveDir(ldir, 0.5);
    }
    if (RemoveDir(mdir, 0.5).ok()) {
      Logger("reward.code")->info("removed stale sandbox cgroup {} (owner pid {} is gone)", mdir, owner);
    }
  }
}

int64_t PageRound(int64_t bytes) { return (bytes + 4095) / 4096 * 4096; }

}  // namespace

std::string CgroupLayout::Describe() const {
  if (mode == CgroupMode::kV2) return StrCat("cgroup v2 (", unified_dir, ")");
  return StrCat("cgroup v1 (memory=", memory_dir, ", pids=", pids_dir, ", cpu=", cpu_dir,
                cpuacct_dir.empty() ? "" : ", cpuacct=" + cpuacct_dir,
                ", kill=", unified_has_kill ? "v2 cgroup.kill in " + unified_dir : "pid list",
                memsw ? ", memsw" : "", ")");
}

StatusOr<CgroupLayout> DetectCgroupLayout(CgroupPreference preference) {
  LR_ASSIGN_OR_RETURN(ProcView view, ReadProcView());
  CgroupLayout layout;
  std::string v2_why;
  // ---- unified hierarchy ----
  std::optional<std::string> unified_dir;
  if (view.unified && view.unified_path) unified_dir = OwnDir(*view.unified, *view.unified_path);
  if (unified_dir) {
    layout.unified_dir = *unified_dir;
    auto controllers = ReadFile(*unified_dir + "/cgroup.controllers");
    bool has_all = controllers.ok() && ContainsWord(*controllers, "memory") &&
                   ContainsWord(*controllers, "pids") && ContainsWord(*controllers, "cpu");
    if (has_all && preference != CgroupPreference::kV1) {
      Status st = EnableV2Controllers(*unified_dir);
      if (st.ok()) {
        layout.mode = CgroupMode::kV2;
        layout.unified_has_kill = true;
        return layout;
      }
      v2_why = st.message();
    } else if (!has_all) {
      v2_why = StrCat("the unified hierarchy at ", *unified_dir, " lacks memory/pids/cpu (has: ",
                      controllers.ok() ? *controllers : std::string("?"), ")");
    }
  } else {
    v2_why = "no cgroup2 mount for this process";
  }
  if (preference == CgroupPreference::kV2) {
    return FailedPrecondition("cgroup v2 requested but unusable: " + v2_why);
  }
  // ---- v1 hierarchies ----
  auto v1dir = [&](const std::string& c) -> std::optional<std::string> {
    auto m = view.v1.find(c);
    auto p = view.v1_path.find(c);
    if (m == view.v1.end() || p == view.v1_path.end()) return std::nullopt;
    return OwnDir(m->second, p->second);
  };
  auto mem = v1dir("memory"), pids = v1dir("pids"), cpu = v1dir("cpu"), acct = v1dir("cpuacct");
  std::vector<std::string> missing;
  if (!mem) missing.push_back("memory");
  if (!pids) missing.push_back("pids");
  if (!cpu) missing.push_back("cpu");
  if (!missing.empty()) {
    std::string m;
    for (const auto& c : missing) m += (m.empty() ? "" : ", ") + c;
    return FailedPrecondition(StrCat(
        "no usable cgroup hierarchy for the code sandbox: v2: ", v2_why, "; v1: no mounted ",
        m, " controller. The executor needs memory, pids and cpu limits; set "
        "code_executor.sandbox: none to run unsandboxed (unsafe)"));
  }
  layout.mode = CgroupMode::kV1;
  layout.memory_dir = *mem;
  layout.pids_dir = *pids;
  layout.cpu_dir = *cpu;
  layout.cpuacct_dir = acct ? *acct : "";
  layout.memsw = Exists(*mem + "/memory.memsw.limit_in_bytes") ||
                 Exists(view.v1["memory"].mountpoint + "/memory.memsw.limit_in_bytes");
  if (unified_dir) {
    // cgroup.kill lives in non-root cgroups only: probe with a scratch child.
    std::string probe = StrCat(*unified_dir, "/lightrl-probe-", ::getpid(), "-",
                               g_manager_counter.fetch_add(1));
    if (MakeDir(probe).ok()) {
      layout.unified_has_kill = Exists(probe + "/cgroup.kill");
      (void)RemoveDir(probe);
    } else {
      layout.unified_dir.clear();
    }
  }
  if (layout.cpuacct_dir.empty() && layout.unified_dir.empty()) {
    return FailedPrecondition(
        "no usable cgroup CPU accounting for the code sandbox (neither v1 cpuacct nor a v2 "
        "cpu.stat); set code_executor.sandbox: none to run unsandboxed (unsafe)");
  }
  return layout;
}

// ---- CgroupManager --------------------------------------------------------------------------

StatusOr<std::unique_ptr<CgroupManager>> CgroupManager::Create(const CgroupLayout& layout) {
  std::unique_ptr<CgroupManager> m(new CgroupManager(layout));
  m->name_ = StrCat("lightrl-code-", ::getpid(), "-", g_manager_counter.fetch_add(1));
  std::vector<std::string> parents;
  if (layout.mode == CgroupMode::kV2) {
    parents = {layout.unified_dir};
  } else {
    parents = {layout.memory_dir, layout.pids_dir, layout.cpu_dir};
    if (!layout.cpuacct_dir.empty()) parents.push_back(layout.cpuacct_dir);
    if (!layout.unified_dir.empty()) parents.push_back(layout.unified_dir);
  }
  for (const auto& p : parents) {
    SweepStale(p);
    std::string dir = p + "/" + m->name_;
    Status st = MakeDir(dir);
    if (!st.ok()) {
      return FailedPrecondition(StrCat("cannot create sandbox cgroups: ", st.message(),
                                       " (need write access to ", p, ")"));
    }
    m->base_dirs_.push_back(dir);
  }
  if (layout.mode == CgroupMode::kV2) {
    LR_RETURN_IF_ERROR(WriteFile(m->base_dirs_[0] + "/cgroup.subtree_control", "+memory +pids +cpu"));
  }
  return m;
}

CgroupManager::~CgroupManager() {
  for (const auto& d : base_dirs_) {
    // Leaves are removed by their RunCgroup; anything left here is a leaked leaf.
    for (const auto& leaf : ListSubdirs(d)) {
      std::string ldir = d + "/" + leaf;
      if (Exists(ldir + "/cgroup.kill")) (void)WriteFile(ldir + "/cgroup.kill", "1");
      for (pid_t p : ReadPids(ldir + "/cgroup.procs")) ::kill(p, SIGKILL);
      (void)RemoveDir(ldir, 0.5);
    }
    Status st = RemoveDir(d, 0.5);
    if (!st.ok()) Logger("reward.code")->warn("sandbox cgroup cleanup: {}", st.message());
  }
}

StatusOr<std::unique_ptr<RunCgroup>> CgroupManager::CreateRun(const CgroupLimits& limits) {
  LR_CHECK(limits.memory_bytes > 0 && limits.pids_max > 0 && limits.cpus > 0,
           "CgroupLimits must be positive");
  std::unique_ptr<RunCgroup> run(new RunCgroup(&layout_));
  std::string leaf = StrCat("run-", next_run_.fetch_add(1));
  for (const auto& b : base_dirs_) {
    std::string dir = b + "/" + leaf;
    if (::mkdir(dir.c_str(), 0755) != 0) {
      return Internal(StrCat("mkdir ", dir, ": ", ErrnoText(errno)));
    }
    run->dirs_.push_back(dir);
  }
  const int64_t mem = PageRound(limits.memory_bytes);
  const int64_t period = 100000;
  const int64_t quota = std::max<int64_t>(1000, std::llround(limits.cpus * period));
  if (layout_.mode == CgroupMode::kV2) {
    const std::string& d = run->dirs_[0];
    run->memory_dir_ = run->cpu_stat_dir_ = run->kill_dir_ = d;
    run->pids_dir_ = d;
    LR_RETURN_IF_ERROR(WriteFile(d + "/memory.max", std::to_string(mem)));
    if (Exists(d + "/memory.swap.max")) LR_RETURN_IF_ERROR(WriteFile(d + "/memory.swap.max", "0"));
    LR_RETURN_IF_ERROR(WriteFile(d + "/pids.max", std::to_string(limits.pids_max)));
    LR_RETURN_IF_ERROR(WriteFile(d + "/cpu.max", StrCat(quota, " ", period)));
    if (ReadInt(d + "/memory.max", -1) != mem) {
      return Internal(StrCat(d, "/memory.max did not take the limit ", mem));
    }
  } else {
    run->memory_dir_ = run->dirs_[0];
    run->pids_dir_ = run->dirs_[1];
    const std::string& cpu = run->dirs_[2];
    size_t next = 3;
    if (!layout_.cpuacct_dir.empty()) run->cpuacct_dir_ = run->dirs_[next++];
    if (!layout_.unified_dir.empty()) {
      run->cpu_stat_dir_ = run->dirs_[next];
      if (layout_.unified_has_kill) run->kill_dir_ = run->dirs_[next];
    }
    LR_RETURN_IF_ERROR(WriteFile(run->memory_dir_ + "/memory.limit_in_bytes", std::to_string(mem)));
    if (layout_.memsw) {
      LR_RETURN_IF_ERROR(
          WriteFile(run->memory_dir_ + "/memory.memsw.limit_in_bytes", std::to_string(mem)));
    }
    LR_RETURN_IF_ERROR(WriteFile(run->pids_dir_ + "/pids.max", std::to_string(limits.pids_max)));
    LR_RETURN_IF_ERROR(WriteFile(cpu + "/cpu.cfs_period_us", std::to_string(period)));
    LR_RETURN_IF_ERROR(WriteFile(cpu + "/cpu.cfs_quota_us", std::to_string(quota)));
    if (ReadInt(run->memory_dir_ + "/memory.limit_in_bytes", -1) != mem) {
      return Internal(StrCat(run->memory_dir_, "/memory.limit_in_bytes did not take the limit ", mem));
    }
  }
  if (ReadInt(run->pids_dir_ + "/pids.max", -1) != limits.pids_max) {
    return Internal(StrCat(run->pids_dir_, "/pids.max did not take the limit ", limits.pids_max));
  }
  return run;
}

// ---- RunCgroup ------------------------------------------------------------------------------

RunCgroup::~RunCgroup() {
  if (!destroyed_) {
    Status st = Destroy();
    if (!st.ok()) Logger("reward.code")->error("sandbox cgroup: {}", st.message());
  }
}

Status RunCgroup::AddProcess(pid_t pid) {
  const std::string p = std::to_string(pid);
  for (const auto& d : dirs_) LR_RETURN_IF_ERROR(WriteFile(d + "/cgroup.procs", p));
  return Status::Ok();
}

double RunCgroup::CpuSeconds() const {
  if (!cpuacct_dir_.empty()) {
    int64_t ns = ReadInt(cpuacct_dir_ + "/cpuacct.usage", -1);
    return ns < 0 ? -1.0 : static_cast<double>(ns) * 1e-9;
  }
  int64_t us = ReadKeyed(cpu_stat_dir_ + "/cpu.stat", "usage_usec", -1);
  return us < 0 ? -1.0 : static_cast<double>(us) * 1e-6;
}

int64_t RunCgroup::ProcessCount() const {
  auto text = ReadFile(pids_dir_ + "/cgroup.procs");
  if (!text.ok()) return -1;
  int64_t n = 0;
  std::istringstream in(*text);
  long p;
  while (in >> p) ++n;
  if (!kill_dir_.empty() && kill_dir_ != pids_dir_) {
    auto more = ReadFile(kill_dir_ + "/cgroup.procs");
    if (more.ok()) {
      std::istringstream in2(*more);
      while (in2 >> p) ++n;
    }
  }
  return n;
}

Status RunCgroup::KillAll(double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  if (!kill_dir_.empty()) LR_RETURN_IF_ERROR(WriteFile(kill_dir_ + "/cgroup.kill", "1"));
  while (true) {
    // Without cgroup.kill (or as a backstop): SIGKILL the pid list until it stays empty. A
    // process forked between the read and the kill is caught by the next round; pids.max
    // bounds how many there can be.
    std::vector<pid_t> pids = ReadPids(pids_dir_ + "/cgroup.procs");
    if (!kill_dir_.empty() && kill_dir_ != pids_dir_) {
      for (pid_t p : ReadPids(kill_dir_ + "/cgroup.procs")) pids.push_back(p);
    }
    if (pids.empty()) return Status::Ok();
    for (pid_t p : pids) ::kill(p, SIGKILL);
    if (std::chrono::steady_clock::now() > deadline) {
      return Internal(StrCat(pids.size(), " process(es) survived the kill in ", pids_dir_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

CgroupStats RunCgroup::Stats() const {
  CgroupStats s;
  s.cpu_seconds = CpuSeconds();
  if (layout_->mode == CgroupMode::kV2) {
    s.oom_kills = ReadKeyed(memory_dir_ + "/memory.events", "oom_kill", 0);
    s.memory_peak = ReadInt(memory_dir_ + "/memory.peak", -1);
  } else {
    s.oom_kills = ReadKeyed(memory_dir_ + "/memory.oom_control", "oom_kill", 0);
    s.memory_peak = ReadInt(memory_dir_ + "/memory.max_usage_in_bytes", -1);
  }
  s.pids_max_hits = ReadKeyed(pids_dir_ + "/pids.events", "max", 0);
  return s;
}

Status RunCgroup::Destroy() {
  if (destroyed_) return Status::Ok();
  destroyed_ = true;
  Status kill = KillAll();
  Status result = kill;
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    Status st = RemoveDir(*it);
    if (!st.ok() && result.ok()) result = st;
  }
  return result;
}

}  // namespace lightrl::reward::code
