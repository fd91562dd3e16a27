#include "reward/checker_pool.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>

#include "core/check.h"

namespace lightrl::reward {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

RewardResult SafeCall(const std::function<RewardResult(size_t)>& fn, size_t i) {
  try {
    return fn(i);
  } catch (const std::exception& e) {
    return RewardResult::Failed(0, RewardErrorKind::kInternal, std::string("verifier threw: ") + e.what());
  } catch (...) {
    return RewardResult::Failed(0, RewardErrorKind::kInternal, "verifier threw a non-standard exception");
  }
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

[[noreturn]] void ChildMain(int fd, const std::vector<size_t>& work, const std::function<RewardResult(size_t)>& fn,
                            const CheckerPoolOptions& o) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) ::_exit(3);
  // Keep only stdin/stdout/stderr and the result pipe (as fd 3).
  if (fd != 3) {
    if (::dup2(fd, 3) < 0) ::_exit(4);
  }
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, 4u, ~0u, 0u) != 0)
#endif
  {
    for (int k = 4; k < 65536; ++k) ::close(k);
  }
  if (o.memory_bytes > 0) {
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = static_cast<rlim_t>(o.memory_bytes);
    ::setrlimit(RLIMIT_AS, &rl);
  }
  for (size_t i : work) {
    std::string frame = EncodeResult(SafeCall(fn, i));
    uint64_t len = frame.size();
    char hdr[8];
    std::memcpy(hdr, &len, 8);
    if (!WriteAll(3, hdr, 8) || !WriteAll(3, frame.data(), frame.size())) ::_exit(5);
  }
  ::_exit(0);
}

struct Child {
  pid_t pid = -1;
  int fd = -1;
  std::deque<size_t> pending;  // indices (into the request list) not yet answered, in order
  Clock::time_point current_start;
  std::string buf;
};

void Reap(Child* c) {
  if (c->pid > 0) {
    ::kill(c->pid, SIGKILL);
    int st;
    while (::waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {
    }
    c->pid = -1;
  }
  if (c->fd >= 0) {
    ::close(c->fd);
    c->fd = -1;
  }
}

// Starts a process for c->pending. Returns false when fork/pipe fails.
bool Spawn(Child* c, const std::function<RewardResult(size_t)>& fn, const CheckerPoolOptions& o, std::string* error) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  std::vector<size_t> work(c->pending.begin(), c->pending.end());
  pid_t pid = ::fork();
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    ::close(p[0]);
    ::close(p[1]);
    return false;
  }
  if (pid == 0) {
    ::close(p[0]);
    ChildMain(p[1], work, fn, o);
  }
  ::close(p[1]);
  c->pid = pid;
  c->fd = p[0];
  c->buf.clear();
  c->current_start = Clock::now();
  return true;
}

std::string DescribeExit(pid_t pid) {
  int st = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  if (r < 0) return "unknown exit";
  if (WIFSIGNALED(st)) return StrCat("killed by signal ", WTERMSIG(st));
  if (WIFEXITED(st)) return StrCat("exit status ", WEXITSTATUS(st));
  return "unknown exit";
}

}  // namespace

std::string EncodeResult(const RewardResult& r) {
  nlohmann::json j;
  if (r.ok()) {
    j = {{"ok", true}, {"v", r.score().value}, {"verdict", static_cast<int>(r.score().verdict)}, {"d", r.score().detail_json}};
  } else {
    j = {{"ok", false}, {"k", static_cast<int>(r.error().kind)}, {"m", r.error().message}};
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

RewardResult DecodeResult(const std::string& frame, uint64_t id) {
  auto j = nlohmann::json::parse(frame, nullptr, false);
  try {
    if (j.is_object() && j.contains("ok") && j["ok"].is_boolean()) {
      if (j["ok"].get<bool>()) {
        int v = j.at("verdict").get<int>();
        if (v < 0 || v > static_cast<int>(Verdict::kTruncated)) throw std::runtime_error("verdict");
        return RewardResult::Scored(id, j.at("v").get<double>(), static_cast<Verdict>(v), j.at("d").get<std::string>());
      }
      int k = j.at("k").get<int>();
      if (k < 0 || k > static_cast<int>(RewardErrorKind::kInternal)) throw std::runtime_error("kind");
      return RewardResult::Failed(id, static_cast<RewardErrorKind>(k), j.at("m").get<std::string>());
    }
  } catch (const std::exception&) {
  }
  return RewardResult::Failed(id, RewardErrorKind::kInternal, "checker process sent a malformed result");
}

std::vector<RewardResult> RunInline(const std::vector<uint64_t>& ids, const std::function<RewardResult(size_t)>& fn) {
  std::vector<RewardResult> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    RewardResult r = SafeCall(fn, i);
    r.sample_id = ids[i];
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<RewardResult> RunIsolated(const std::vector<uint64_t>& ids, const std::function<RewardResult(size_t)>& fn,
                                      const CheckerPoolOptions& o, double deadline_s) {
  const size_t n = ids.size();
  std::vector<std::optional<RewardResult>> res(n);
  if (n == 0) return {};
  const Clock::time_point t0 = Clock::now();
  const int procs = std::max(1, std::min<int>(o.processes, static_cast<int>(n)));
  std::vector<Child> kids(static_cast<size_t>(procs));
  for (size_t i = 0; i < n; ++i) kids[i % static_cast<size_t>(procs)].pending.push_back(i);
  std::string err;
  auto fail_rest = [&](Child* c, RewardErrorKind kind, const std::string& msg) {
    for (size_t i : c->pending) res[i] = RewardResult::Failed(ids[i], kind, msg);
    c->pending.clear();
  };
  for (auto& c : kids) {
    if (!Spawn(&c, fn, o, &err)) fail_rest(&c, RewardErrorKind::kInternal, "cannot start a checker process: " + err);
  }
  while (true) {
    std::vector<pollfd> pfds;
    std::vector<Child*> owners;
    double wait_s = 1e9;
    Clock::time_point now = Clock::now();
    for (auto& c : kids) {
      if (c.pending.empty()) {
        if (c.pid > 0) Reap(&c);
        continue;
      }
      pfds.push_back({c.fd, POLLIN, 0});
      owners.push_back(&c);
      wait_s = std::min(wait_s, o.timeout_s - Seconds(now - c.current_start));
    }
    if (owners.empty()) break;
    if (deadline_s > 0) wait_s = std::min(wait_s, deadline_s - Seconds(now - t0));
    int timeout_ms = wait_s <= 0 ? 0 : static_cast<int>(std::min(wait_s * 1000.0 + 1, 60000.0));
    int pr = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (pr < 0 && errno != EINTR) {
      std::string msg = std::string("poll: ") + std::strerror(errno);
      for (auto& c : kids) { Reap(&c); fail_rest(&c, RewardErrorKind::kInternal, msg); }
      break;
    }
    for (size_t k = 0; k < pfds.size() && pr > 0; ++k) {
      if (!(pfds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Child* c = owners[k];
      char tmp[65536];
      ssize_t r = ::read(c->fd, tmp, sizeof(tmp));
      if (r < 0 && errno == EINTR) continue;
      if (r > 0) {
        c->buf.append(tmp, static_cast<size_t>(r));
        while (c->buf.size() >= 8 && !c->pending.empty()) {
          uint64_t len;
          std::memcpy(&len, c->buf.data(), 8);
          if (len > (64u << 20)) { c->buf.clear(); r = -1; break; }
          if (c->buf.size() < 8 + len) break;
          size_t i = c->pending.front();
          c->pending.pop_front();
          res[i] = DecodeResult(c->buf.substr(8, len), ids[i]);
          c->buf.erase(0, 8 + len);
          c->current_start = Clock::now();
        }
        if (r > 0) continue;
      }
      // EOF or error: the process is gone; its current request failed, the rest go to a new one.
      if (c->pending.empty()) { Reap(c); continue; }
      ::close(c->fd);
      c->fd = -1;
      if (r != 0) ::kill(c->pid, SIGKILL);  // a read error or a bad frame: make sure it is gone
      std::string how = DescribeExit(c->pid);
      c->pid = -1;
      size_t i = c->pending.front();
      c->pending.pop_front();
      res[i] = RewardResult::Failed(ids[i], RewardErrorKind::kInternal, "checker process died (" + how + ")");
      if (!c->pending.empty() && !Spawn(c, fn, o, &err)) fail_rest(c, RewardErrorKind::kInternal, err);
    }
    now = Clock::now();
    bool batch_over = deadline_s > 0 && Seconds(now - t0) >= deadline_s;
    for (auto& c : kids) {
      if (c.pending.empty() || c.pid <= 0) continue;
      if (batch_over) {
        Reap(&c);
        fail_rest(&c, RewardErrorKind::kTimeout, StrCat("reward batch deadline of ", deadline_s, " s passed"));
        continue;
      }
      if (Seconds(now - c.current_start) >= o.timeout_s) {
        Reap(&c);
        size_t i = c.pending.front();
        c.pending.pop_front();
        res[i] = RewardResult::Failed(ids[i], RewardErrorKind::kTimeout,
                                      StrCat("verifier exceeded its wall-clock limit of ", o.timeout_s, " s"));
        if (!c.pending.empty() && !Spawn(&c, fn, o, &err)) fail_rest(&c, RewardErrorKind::kInternal, err);
      }
    }
  }
  for (auto& c : kids) Reap(&c);
  std::vector<RewardResult> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(res[i] ? std::move(*res[i]) : RewardResult::Failed(ids[i], RewardErrorKind::kInternal, "no result"));
  }
  return out;
}

}  // namespace lightrl::reward
