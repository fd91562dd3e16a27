#include "reward/code/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/check.h"
#include "core/logging.h"
#include "reward/code/seccomp_policy.h"

namespace lightrl::reward::code {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<uint64_t> g_sandbox_counter{0};

std::string ErrnoText(int err) { return std::strerror(err); }

// ---- the forked child (async-signal-safe code only) ------------------------------------------

// Everything the child needs, prepared before fork() so the child only makes system calls.
struct ChildPlan {
  std::vector<std::string> cgroup_procs;  // files to write our pid into
  int target_fds[7] = {-1, -1, -1, -1, -1, -1, -1};  // host fds that become 0..6 (-1 = closed)
  int num_targets = 3;
  int err_fd = -1;  // CLOEXEC pipe: the child writes {stage, errno} here if it fails
  bool new_pgrp = false;
  const char* chdir_to = nullptr;
  struct Limit {
    int resource;
    rlim_t soft, hard;
  };
  std::vector<Limit> rlimits;
  bool drop_ids = false;
  uid_t uid = 0;
  gid_t gid = 0;
  const sock_fprog* seccomp = nullptr;  // kNone: loaded before exec
  const char* exe = nullptr;
  std::vector<char*> argv, envp;
};

enum ChildStage : int {
  kStageCgroup = 1,
  kStageFds,
  kStageRlimit,
  kStageIds,
  kStageChdir,
  kStageSeccomp,
  kStageExec,
  kStagePgrp,
};

const char* StageName(int s) {
  switch (s) {
    case kStageCgroup: return "joining the cgroup";
    case kStageFds: return "setting up file descriptors";
    case kStageRlimit: return "setting rlimits";
    case kStageIds: return "dropping to the sandbox uid/gid";
    case kStageChdir: return "chdir";
    case kStageSeccomp: return "loading seccomp";
    case kStageExec: return "exec";
    case kStagePgrp: return "setpgid";
    default: return "unknown stage";
  }
}

[[noreturn]] void ChildFail(int err_fd, int stage) {
  int msg[2] = {stage, errno};
  ssize_t ignored = ::write(err_fd, msg, sizeof(msg));
  (void)ignored;
  ::_exit(127);
}

// Formats a non-negative integer into buf (no allocation). Returns the length.
int FormatInt(long v, char* buf) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  for (int i = 0; i < n; ++i) buf[i] = tmp[n - 1 - i];
  return n;
}

[[noreturn]] void ChildMain(const ChildPlan& plan) {
  // Default signal state: exec keeps ignored signals ignored and the mask as it was.
  sigset_t all;
  sigemptyset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);

  int err_fd = plan.err_fd;
  // Join the cgroup before anything else can run inside it.
  char pidbuf[24];
  int pidlen = FormatInt(static_cast<long>(::getpid()), pidbuf);
  for (const auto& file : plan.cgroup_procs) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) ChildFail(err_fd, kStageCgroup);
    if (::write(fd, pidbuf, static_cast<size_t>(pidlen)) != pidlen) ChildFail(err_fd, kStageCgroup);
    ::close(fd);
  }
  if (plan.new_pgrp && ::setpgid(0, 0) != 0) ChildFail(err_fd, kStagePgrp);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);

  // Move the fds into place: first above every target, then down.
  int high[7];
  for (int i = 0; i < plan.num_targets; ++i) {
    high[i] = -1;
    if (plan.target_fds[i] >= 0) {
      high[i] = ::fcntl(plan.target_fds[i], F_DUPFD_CLOEXEC, 100);
      if (high[i] < 0) ChildFail(err_fd, kStageFds);
    }
  }
  int err_high = ::fcntl(err_fd, F_DUPFD_CLOEXEC, 100);
  if (err_high < 0) ChildFail(err_fd, kStageFds);
  err_fd = err_high;
  for (int i = 0; i < plan.num_targets; ++i) {
    if (high[i] >= 0) {
      if (::dup2(high[i], i) != i) ChildFail(err_fd, kStageFds);  // dup2 clears CLOEXEC
    } else {
      ::close(i);
    }
  }
  // Close everything else except err_fd (CLOEXEC, closes itself on exec).
  if (err_fd > plan.num_targets) {
    ::syscall(SYS_close_range, static_cast<unsigned>(plan.num_targets),
              static_cast<unsigned>(err_fd - 1), 0u);
  }
  ::syscall(SYS_close_range, static_cast<unsigned>(err_fd + 1), ~0u, 0u);

  for (const auto& l : plan.rlimits) {
    struct rlimit r{l.soft, l.hard};
    if (::setrlimit(l.resource, &r) != 0) ChildFail(err_fd, kStageRlimit);
  }
  if (plan.drop_ids) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(plan.gid, plan.gid, plan.gid) != 0 ||
        ::setresuid(plan.uid, plan.uid, plan.uid) != 0) {
      ChildFail(err_fd, kStageIds);
    }
  }
  if (plan.chdir_to && ::chdir(plan.chdir_to) != 0) ChildFail(err_fd, kStageChdir);
  if (plan.seccomp) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, plan.seccomp) != 0) {
      ChildFail(err_fd, kStageSeccomp);
    }
  }
  ::execve(plan.exe, plan.argv.data(), plan.envp.data());
  ChildFail(err_fd, kStageExec);
}

// ---- host-side helpers -----------------------------------------------------------------------

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd = o.fd;
    o.fd = -1;
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

struct Pipe {
  Fd r, w;
};

StatusOr<Pipe> MakePipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Internal(StrCat("pipe2: ", ErrnoText(errno)));
  Pipe out;
  out.r = Fd(p[0]);
  out.w = Fd(p[1]);
  return out;
}

StatusOr<Fd> MakeMemfd(const char* name, const void* data, size_t size) {
  Fd fd(::memfd_create(name, MFD_CLOEXEC));
  if (fd.fd < 0) return Internal(StrCat("memfd_create: ", ErrnoText(errno)));
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd.fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal(StrCat("write memfd: ", ErrnoText(errno)));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::lseek(fd.fd, 0, SEEK_SET) != 0) return Internal(StrCat("lseek memfd: ", ErrnoText(errno)));
  return fd;
}

// Launches the plan's child. Returns its pid, or an infrastructure error if any setup step in
// the child failed (reported through the CLOEXEC error pipe, which reads EOF on a good exec).
StatusOr<pid_t> Launch(ChildPlan& plan) {
  LR_ASSIGN_OR_RETURN(Pipe err, MakePipe());
  plan.err_fd = err.w.fd;
  plan.argv.push_back(nullptr);
  plan.envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return Unavailable(StrCat("fork: ", ErrnoText(errno)));
  if (pid == 0) ChildMain(plan);
  err.w.reset();
  int msg[2] = {0, 0};
  ssize_t n;
  do {
    n = ::read(err.r.fd, msg, sizeof(msg));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status;
    ::waitpid(pid, &status, 0);
    return Internal(StrCat("sandbox launch failed while ", StageName(msg[0]), ": ",
                           ErrnoText(msg[1]), " (", plan.exe, ")"));
  }
  return pid;
}

struct Stream {
  int fd = -1;
  std::string* buf = nullptr;
  int64_t cap = 0;
  bool open = false;
  bool over = false;  // more than cap bytes were written
};

// Reads what is available; returns false when the stream reached EOF.
void ReadAvailable(Stream& s) {
  char chunk[65536];
  while (s.open) {
    ssize_t n = ::read(s.fd, chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      s.open = false;
      return;
    }
    if (n == 0) {
      s.open = false;
      return;
    }
    int64_t room = s.cap - static_cast<int64_t>(s.buf->size());
    if (n > room) {
      if (room > 0) s.buf->append(chunk, static_cast<size_t>(room));
      s.over = true;
      return;
    }
    s.buf->append(chunk, static_cast<size_t>(n));
  }
}

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

struct SuperviseHooks {
  std::function<double()> cpu_seconds;  // -1 if unknown
  std::function<void()> kill_all;
};

// The host side of a run: reads the streams, enforces CPU/wall/output limits, reaps the child.
// Returns the raw wait status of the direct child.
int Supervise(pid_t pid, std::vector<Stream*> streams, const SandboxLimits& limits,
              Clock::time_point start, const SuperviseHooks& hooks, SandboxResult* result) {
  Fd pidfd(PidfdOpen(pid));
  for (Stream* s : streams) {
    ::fcntl(s->fd, F_SETFL, ::fcntl(s->fd, F_GETFL) | O_NONBLOCK);
    s->open = true;
  }
  const auto wall_deadline = start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(limits.wall_seconds));
  bool exited = false;
  bool stopped = false;
  auto stop = [&](StopReason why) {
    if (stopped) return;
    stopped = true;
    result->stop = why;
    hooks.kill_all();
  };
  int status = 0;
  while (!exited && !stopped) {
    auto now = Clock::now();
    if (now >= wall_deadline) {
      stop(StopReason::kWallLimit);
      break;
    }
    int timeout_ms = static_cast<int>(
        std::min<int64_t>(10, std::chrono::duration_cast<std::chrono::milliseconds>(wall_deadline - now).count() + 1));
    std::vector<pollfd> pfds;
    for (Stream* s : streams) {
      if (s->open) pfds.push_back({s->fd, POLLIN, 0});
    }
    if (pidfd.fd >= 0) pfds.push_back({pidfd.fd, POLLIN, 0});
    int rc = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (rc < 0 && errno != EINTR) break;
    for (Stream* s : streams) {
      if (!s->open) continue;
      ReadAvailable(*s);
      if (s->over) {
        stop(StopReason::kOutputLimit);
        break;
      }
    }
    if (stopped) break;
    if (pidfd.fd >= 0) {
      exited = !pfds.empty() && (pfds.back().revents & POLLIN);
    } else {
      // No pidfd (old kernel): poll waitpid.
      struct rusage ru;
      pid_t w = ::wait4(pid, &status, WNOHANG, &ru);
      if (w == pid) {
        exited = true;
        pid = -1;
        result->cpu_seconds = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                              1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
      }
    }
    if (!exited && hooks.cpu_seconds) {
      double cpu = hooks.cpu_seconds();
      if (cpu > limits.cpu_seconds) stop(StopReason::kCpuLimit);
    }
  }
  if (pid > 0) {
    struct rusage ru;
    std::memset(&ru, 0, sizeof(ru));
    while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    // CPU of the direct child and the descendants it reaped (the cgroup figure replaces this
    // where there is a cgroup).
    result->cpu_seconds = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                          1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  }
  result->wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Whatever survived the direct child (daemons) goes now, then the streams are drained: with
  // every writer dead they reach EOF at once; the deadline guards against a writer we missed.
  hooks.kill_all();
  auto drain_deadline = Clock::now() + std::chrono::milliseconds(500);
  while (Clock::now() < drain_deadline) {
    bool any_open = false;
    std::vector<pollfd> pfds;
    for (Stream* s : streams) {
      if (s->open && !s->over) {
        any_open = true;
        pfds.push_back({s->fd, POLLIN, 0});
      }
    }
    if (!any_open) break;
    ::poll(pfds.data(), pfds.size(), 20);
    for (Stream* s : streams) {
      if (s->open && !s->over) ReadAvailable(*s);
    }
  }
  if (!stopped) {
    for (Stream* s : streams) {
      if (s->over) {
        result->stop = StopReason::kOutputLimit;
        break;
      }
    }
  }
  return status;
}

std::vector<std::string> SandboxEnv(const std::string& home) {
  return {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8"};
}

void AddRlimits(const SandboxLimits& l, bool address_space, ChildPlan* plan) {
  auto cpu = static_cast<rlim_t>(std::ceil(l.cpu_seconds)) + 1;
  plan->rlimits.push_back({RLIMIT_CPU, cpu, cpu + 1});
  plan->rlimits.push_back({RLIMIT_FSIZE, static_cast<rlim_t>(l.file_size_bytes),
                           static_cast<rlim_t>(l.file_size_bytes)});
  plan->rlimits.push_back({RLIMIT_NOFILE, static_cast<rlim_t>(l.open_files),
                           static_cast<rlim_t>(l.open_files)});
  plan->rlimits.push_back({RLIMIT_CORE, 0, 0});
  plan->rlimits.push_back({RLIMIT_STACK, static_cast<rlim_t>(l.stack_bytes),
                           static_cast<rlim_t>(l.stack_bytes)});
  if (address_space) {
    plan->rlimits.push_back({RLIMIT_AS, static_cast<rlim_t>(l.memory_bytes),
                             static_cast<rlim_t>(l.memory_bytes)});
  }
}

Status ValidateLimits(const SandboxLimits& l) {
  if (!(l.cpu_seconds > 0) || !(l.wall_seconds > 0)) return InvalidArgument("time limits must be > 0");
  if (l.memory_bytes < (8ll << 20)) return InvalidArgument("memory limit must be at least 8 MiB");
  if (l.pids < 1 || l.open_files < 8 || l.file_size_bytes < 0 || l.stack_bytes < (1 << 16)) {
    return InvalidArgument("pids >= 1, open_files >= 8, file_size >= 0, stack >= 64 KiB required");
  }
  if (l.stdout_bytes < 0 || l.stderr_bytes < 0 || l.result_bytes < 0) {
    return InvalidArgument("output caps must be >= 0");
  }
  return Status::Ok();
}

void SweepStaleWorkDirs(const std::string& root) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("lightrl-code-", 0) != 0) continue;
    long owner = 0;
    try {
      owner = std::stol(name.substr(std::strlen("lightrl-code-")));
    } catch (...) {
      continue;
    }
    if (owner <= 0 || ::kill(static_cast<pid_t>(owner), 0) == 0 || errno == EPERM) continue;
    fs::remove_all(entry.path(), ec);
  }
}

StatusOr<std::string> RunCapture(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return Internal("popen failed");
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

}  // namespace

const char* StopReasonName(StopReason r) {
  switch (r) {
    case StopReason::kExited: return "exited";
    case StopReason::kCpuLimit: return "cpu_limit";
    case StopReason::kWallLimit: return "wall_limit";
    case StopReason::kOutputLimit: return "output_limit";
  }
  return "?";
}

// ---- Sandbox ----------------------------------------------------------------------------------

StatusOr<std::unique_ptr<Sandbox>> Sandbox::Create(const SandboxConfig& config) {
  std::unique_ptr<Sandbox> sb(new Sandbox(config));
  sb->drop_ids_ = (::geteuid() == 0);
  if (sb->drop_ids_ && config.uid == 0) {
    return InvalidArgument("code_executor.uid: the sandbox uid must not be 0 (root)");
  }
  // Scratch directory.
  std::error_code ec;
  if (!fs::is_directory(config.work_root, ec)) {
    return FailedPrecondition(StrCat("code_executor.work_dir: ", config.work_root, " is not a directory"));
  }
  SweepStaleWorkDirs(config.work_root);
  sb->work_dir_ = StrCat(config.work_root, "/lightrl-code-", ::getpid(), "-", g_sandbox_counter.fetch_add(1));
  if (::mkdir(sb->work_dir_.c_str(), 0755) != 0 || ::chmod(sb->work_dir_.c_str(), 0755) != 0) {
    return FailedPrecondition(StrCat("cannot create ", sb->work_dir_, ": ", ErrnoText(errno)));
  }
  if (config.seccomp) {
    LR_ASSIGN_OR_RETURN(sb->seccomp_bpf_, BuildSeccompBpf());
  }
  if (config.mode == SandboxMode::kNone) {
    Logger("reward.code")
        ->warn("code executor: sandbox: none — model-written code runs WITHOUT namespaces or "
               "cgroups (rlimits{} only). Do not use for untrusted code.",
               config.seccomp ? " + seccomp" : "");
    return sb;
  }
  // bubblewrap.
  if (::access(config.bwrap_path.c_str(), X_OK) != 0) {
    return FailedPrecondition(StrCat(
        "bubblewrap not found or not executable at ", config.bwrap_path,
        " (install the bubblewrap package, set code_executor.bwrap, or set "
        "code_executor.sandbox: none to run unsandboxed)"));
  }
  if (auto v = RunCapture(config.bwrap_path + " --version 2>&1"); v.ok()) {
    sb->bwrap_version_ = *v;
    while (!sb->bwrap_version_.empty() && std::isspace(static_cast<unsigned char>(sb->bwrap_version_.back()))) {
      sb->bwrap_version_.pop_back();
    }
  }
  // cgroups.
  auto layout = DetectCgroupLayout(config.cgroup);
  if (!layout.ok()) return layout.status();
  LR_ASSIGN_OR_RETURN(sb->cgroups_, CgroupManager::Create(*layout));

  // /etc/passwd and /etc/group for the sandbox user only.
  fs::create_directories(sb->work_dir_ + "/etc", ec);
  {
    std::ofstream passwd(sb->work_dir_ + "/etc/passwd");
    passwd << "sandbox:x:" << config.uid << ":" << config.gid << ":sandbox:/tmp:/usr/sbin/nologin\n";
    std::ofstream group(sb->work_dir_ + "/etc/group");
    group << "sandbox:x:" << config.gid << ":\n";
    if (!passwd || !group) return Internal("cannot write the sandbox /etc files under " + sb->work_dir_);
  }
  ::chmod((sb->work_dir_ + "/etc").c_str(), 0755);
  ::chmod((sb->work_dir_ + "/etc/passwd").c_str(), 0644);
  ::chmod((sb->work_dir_ + "/etc/group").c_str(), 0644);

  const uint32_t uid = config.uid, gid = config.gid;
  std::vector<std::string>& a = sb->base_args_;
  a = {config.bwrap_path, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
       "--unshare-uts", "--unshare-cgroup", "--disable-userns", "--die-with-parent",
       "--new-session", "--clearenv", "--cap-drop", "ALL", "--hostname", "sandbox"};
  if (sb->drop_ids_) {
    a.insert(a.end(), {"--uid", std::to_string(uid), "--gid", std::to_string(gid)});
  }
  for (const auto& d : config.ro_dirs) {
    if (!fs::exists(d, ec)) return FailedPrecondition(StrCat("code_executor.ro_dirs: ", d, " does not exist"));
    a.insert(a.end(), {"--ro-bind", d, d});
  }
  for (const char* top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    struct stat st;
    if (::lstat(top, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = ::readlink(top, target, sizeof(target) - 1);
      if (n <= 0) continue;
      a.insert(a.end(), {"--symlink", std::string(target, static_cast<size_t>(n)), top});
    } else if (S_ISDIR(st.st_mode) &&
               std::find(config.ro_dirs.begin(), config.ro_dirs.end(), top) == config.ro_dirs.end()) {
      a.insert(a.end(), {"--ro-bind", top, top});
    }
  }
  if (fs::exists("/etc/ld.so.cache", ec)) a.insert(a.end(), {"--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"});
  a.insert(a.end(), {"--ro-bind", sb->work_dir_ + "/etc/passwd", "/etc/passwd", "--ro-bind",
                     sb->work_dir_ + "/etc/group", "/etc/group", "--proc", "/proc", "--dev", "/dev",
                     "--size", std::to_string(config.tmpfs_bytes), "--tmpfs", "/tmp", "--size",
                     std::to_string(config.tmpfs_bytes), "--tmpfs", "/dev/shm"});
  for (const auto& kv : SandboxEnv("/tmp")) {
    auto eq = kv.find('=');
    a.insert(a.end(), {"--setenv", kv.substr(0, eq), kv.substr(eq + 1)});
  }
  a.insert(a.end(), {"--json-status-fd", "4"});
  if (config.seccomp) a.insert(a.end(), {"--seccomp", "5"});

  LR_RETURN_IF_ERROR(sb->Preflight());
  Logger("reward.code")->info("code executor sandbox ready: {}", sb->Describe());
  return sb;
}

Sandbox::~Sandbox() {
  cgroups_.reset();
  std::error_code ec;
  if (!work_dir_.empty()) fs::remove_all(work_dir_, ec);
}

std::string Sandbox::Describe() const {
  if (config_.mode == SandboxMode::kNone) {
    return StrCat("UNSANDBOXED (sandbox: none; rlimits", config_.seccomp ? " + seccomp" : "", ")");
  }
  return StrCat(bwrap_version_.empty() ? "bubblewrap" : bwrap_version_, " + ",
                cgroups_->layout().Describe(), config_.seccomp ? " + seccomp" : " (no seccomp)",
                drop_ids_ ? StrCat(" as uid ", config_.uid) : std::string(" as the current uid"));
}

std::string Sandbox::VisiblePath(const BindMount& bind) const {
  return config_.mode == SandboxMode::kBwrap ? bind.sandbox_path : bind.host_path;
}

StatusOr<std::string> Sandbox::MakeScratchDir(const std::string& prefix, bool writable_by_sandbox) {
  std::string dir = StrCat(work_dir_, "/", prefix, "-", scratch_counter_.fetch_add(1));
  if (::mkdir(dir.c_str(), 0755) != 0 || ::chmod(dir.c_str(), 0755) != 0) {
    return Internal(StrCat("mkdir ", dir, ": ", ErrnoText(errno)));
  }
  if (writable_by_sandbox && drop_ids_ && ::chown(dir.c_str(), config_.uid, config_.gid) != 0) {
    return Internal(StrCat("chown ", dir, ": ", ErrnoText(errno)));
  }
  return dir;
}

Status Sandbox::Preflight() {
  SandboxRequest req;
  req.argv = {"/usr/bin/true"};
  req.limits.cpu_seconds = 5;
  req.limits.wall_seconds = 20;
  auto r = Run(req);
  if (!r.ok()) return FailedPrecondition("sandbox preflight failed: " + r.status().message());
  if (r->stop != StopReason::kExited || r->exit_code != 0) {
    return FailedPrecondition(StrCat("sandbox preflight (/usr/bin/true) failed: ", StopReasonName(r->stop),
                                     ", exit ", r->exit_code, ", stderr: ", r->stderr_data.substr(0, 2000)));
  }
  return Status::Ok();
}

StatusOr<SandboxResult> Sandbox::Run(const SandboxRequest& request) {
  if (request.argv.empty()) return InvalidArgument("SandboxRequest.argv is empty");
  LR_RETURN_IF_ERROR(ValidateLimits(request.limits));
  if (config_.mode == SandboxMode::kNone) return RunNone(request);
  return RunBwrap(request);
}

StatusOr<SandboxResult> Sandbox::RunBwrap(const SandboxRequest& request) {
  const SandboxLimits& lim = request.limits;
  CgroupLimits cl;
  cl.memory_bytes = lim.memory_bytes;
  cl.pids_max = lim.pids;
  cl.cpus = lim.cpus;
  auto cg_or = cgroups_->CreateRun(cl);
  if (!cg_or.ok()) return cg_or.status().WithContext("sandbox cgroup");
  std::unique_ptr<RunCgroup> cg = std::move(cg_or).value();

  LR_ASSIGN_OR_RETURN(Fd stdin_fd, MakeMemfd("lightrl-stdin", request.stdin_data.data(), request.stdin_data.size()));
  LR_ASSIGN_OR_RETURN(Pipe out, MakePipe());
  LR_ASSIGN_OR_RETURN(Pipe err, MakePipe());
  LR_ASSIGN_OR_RETURN(Pipe json, MakePipe());
  LR_ASSIGN_OR_RETURN(Pipe started_pipe, MakePipe());
  Pipe res;
  if (request.result_channel) {
    LR_ASSIGN_OR_RETURN(res, MakePipe());
  }
  Fd bpf;
  if (config_.seccomp) {
    LR_ASSIGN_OR_RETURN(bpf, MakeMemfd("lightrl-seccomp", seccomp_bpf_.data(), seccomp_bpf_.size()));
  }

  for (const auto& b : request.binds) {
    struct stat st;
    if (::stat(b.host_path.c_str(), &st) != 0) {
      return Internal(StrCat("sandbox bind source ", b.host_path, ": ", ErrnoText(errno)));
    }
  }
  std::vector<std::string> args = base_args_;
  for (const auto& b : request.binds) {
    args.insert(args.end(), {b.writable ? "--bind" : "--ro-bind", b.host_path, b.sandbox_path});
  }
  args.insert(args.end(), {"--chdir", request.cwd});
  for (const auto& kv : request.env) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) return InvalidArgument("SandboxRequest.env entry without '=': " + kv);
    args.insert(args.end(), {"--setenv", kv.substr(0, eq), kv.substr(eq + 1)});
  }
  args.push_back("--");
  // bwrap reports "child-pid" before it sets up the mounts, and a setup failure then exits 1
  // like a program would. A start marker written to fd 6 by a shell right before it execs the
  // program (and closes fd 6) tells the two apart: no marker = the sandbox failed (SE); the
  // program never sees fd 6, so it cannot forge or suppress the marker.
  args.insert(args.end(), {"/bin/sh", "-c", "printf s >&6 && exec 6>&- && exec \"$@\"", "lightrl-start"});
  args.insert(args.end(), request.argv.begin(), request.argv.end());
  // bwrap itself gets a scrubbed environment: /proc/1/environ inside shows only this.
  std::vector<std::string> env = {"PATH=/usr/bin:/bin"};

  ChildPlan plan;
  for (const auto& d : cg->dirs()) plan.cgroup_procs.push_back(d + "/cgroup.procs");
  plan.num_targets = 7;
  plan.target_fds[0] = stdin_fd.fd;
  plan.target_fds[1] = out.w.fd;
  plan.target_fds[2] = err.w.fd;
  plan.target_fds[3] = request.result_channel ? res.w.fd : -1;
  plan.target_fds[4] = json.w.fd;
  plan.target_fds[5] = config_.seccomp ? bpf.fd : -1;
  plan.target_fds[6] = started_pipe.w.fd;
  AddRlimits(lim, /*address_space=*/false, &plan);
  plan.drop_ids = drop_ids_;
  plan.uid = config_.uid;
  plan.gid = config_.gid;
  plan.exe = config_.bwrap_path.c_str();
  for (auto& s : args) plan.argv.push_back(s.data());
  for (auto& s : env) plan.envp.push_back(s.data());

  const auto start = Clock::now();
  auto pid_or = Launch(plan);
  if (!pid_or.ok()) return pid_or.status();
  const pid_t pid = *pid_or;
  out.w.reset();
  err.w.reset();
  json.w.reset();
  started_pipe.w.reset();
  res.w.reset();
  stdin_fd.reset();
  bpf.reset();

  SandboxResult result;
  std::string json_text, started_text;
  Stream s_out{out.r.fd, &result.stdout_data, lim.stdout_bytes};
  Stream s_err{err.r.fd, &result.stderr_data, lim.stderr_bytes};
  Stream s_json{json.r.fd, &json_text, 1 << 16};
  Stream s_started{started_pipe.r.fd, &started_text, 16};
  Stream s_res{res.r.fd, &result.result_data, lim.result_bytes};
  std::vector<Stream*> streams = {&s_out, &s_err, &s_json, &s_started};
  if (request.result_channel) streams.push_back(&s_res);
  RunCgroup* cgp = cg.get();
  SuperviseHooks hooks;
  hooks.cpu_seconds = [cgp] { return cgp->CpuSeconds(); };
  hooks.kill_all = [cgp] { (void)cgp->KillAll(); };
  int status = Supervise(pid, streams, lim, start, hooks, &result);

  CgroupStats stats = cg->Stats();
  result.cpu_seconds = stats.cpu_seconds;
  result.oom_kills = stats.oom_kills;
  result.memory_peak = stats.memory_peak;
  result.pids_max_hits = stats.pids_max_hits;
  Status destroyed = cg->Destroy();
  if (!destroyed.ok()) {
    result.cleanup_ok = false;
    result.cleanup_error = destroyed.message();
    Logger("reward.code")->error("sandbox cleanup: {}", destroyed.message());
  }

  // bwrap's status documents, one per line: {"child-pid": N, ...} then {"exit-code": N}.
  std::istringstream lines(json_text);
  std::string line;
  while (std::getline(lines, line)) {
    auto doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) continue;
    if (doc.contains("exit-code") && doc["exit-code"].is_number_integer()) {
      result.exit_code = doc["exit-code"].get<int>();
    }
  }
  if (started_text != "s") {
    // No start marker: bubblewrap failed (or hung) while setting up, before any model code
    // ran. An infrastructure error, whatever the exit status says.
    return Internal(StrCat("bubblewrap failed before starting the program (",
                           StopReasonName(result.stop), ", status ",
                           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                           "): ", result.stderr_data.substr(0, 2000)));
  }
  if (result.stop == StopReason::kExited && result.exit_code < 0) {
    // The program started but bwrap did not report an exit (its reaper was killed, e.g. by
    // the OOM killer): report bwrap's own status.
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  if (result.stop == StopReason::kExited && result.cpu_seconds > lim.cpu_seconds) {
    result.stop = StopReason::kCpuLimit;  // ended by RLIMIT_CPU before the host noticed
  }
  return result;
}

StatusOr<SandboxResult> Sandbox::RunNone(const SandboxRequest& request) {
  Logger("reward.code")
      ->warn("code executor: running {} UNSANDBOXED (sandbox: none)", request.argv[0]);
  const SandboxLimits& lim = request.limits;
  LR_ASSIGN_OR_RETURN(std::string cwd, MakeScratchDir("none-cwd", /*writable_by_sandbox=*/true));
  LR_ASSIGN_OR_RETURN(Fd stdin_fd, MakeMemfd("lightrl-stdin", request.stdin_data.data(), request.stdin_data.size()));
  LR_ASSIGN_OR_RETURN(Pipe out, MakePipe());
  LR_ASSIGN_OR_RETURN(Pipe err, MakePipe());
  Pipe res;
  if (request.result_channel) {
    LR_ASSIGN_OR_RETURN(res, MakePipe());
  }
  std::vector<std::string> args = request.argv;
  std::vector<std::string> env = SandboxEnv(cwd);
  env.insert(env.end(), request.env.begin(), request.env.end());
  sock_fprog prog{};
  if (config_.seccomp) {
    prog.len = static_cast<unsigned short>(seccomp_bpf_.size() / sizeof(sock_filter));
    prog.filter = reinterpret_cast<sock_filter*>(seccomp_bpf_.data());
  }
  ChildPlan plan;
  plan.num_targets = 4;
  plan.target_fds[0] = stdin_fd.fd;
  plan.target_fds[1] = out.w.fd;
  plan.target_fds[2] = err.w.fd;
  plan.target_fds[3] = request.result_channel ? res.w.fd : -1;
  plan.new_pgrp = true;
  plan.chdir_to = cwd.c_str();
  AddRlimits(lim, /*address_space=*/true, &plan);
  plan.drop_ids = drop_ids_;
  plan.uid = config_.uid;
  plan.gid = config_.gid;
  plan.seccomp = config_.seccomp ? &prog : nullptr;
  plan.exe = args[0].c_str();
  for (auto& s : args) plan.argv.push_back(s.data());
  for (auto& s : env) plan.envp.push_back(s.data());

  const auto start = Clock::now();
  auto pid_or = Launch(plan);
  if (!pid_or.ok()) return pid_or.status();
  const pid_t pid = *pid_or;
  out.w.reset();
  err.w.reset();
  res.w.reset();
  stdin_fd.reset();

  SandboxResult result;
  Stream s_out{out.r.fd, &result.stdout_data, lim.stdout_bytes};
  Stream s_err{err.r.fd, &result.stderr_data, lim.stderr_bytes};
  Stream s_res{res.r.fd, &result.result_data, lim.result_bytes};
  std::vector<Stream*> streams = {&s_out, &s_err};
  if (request.result_channel) streams.push_back(&s_res);
  SuperviseHooks hooks;
  hooks.kill_all = [pid] { ::kill(-pid, SIGKILL); };
  int status = Supervise(pid, streams, lim, start, hooks, &result);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
    result.exit_code = 128 + WTERMSIG(status);
  }
  if (result.stop == StopReason::kExited &&
      (result.term_signal == SIGXCPU || result.cpu_seconds > lim.cpu_seconds)) {
    result.stop = StopReason::kCpuLimit;
  }
  std::error_code ec;
  fs::remove_all(cwd, ec);
  return result;
}

}  // namespace lightrl::reward::code
