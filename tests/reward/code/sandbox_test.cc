// The sandbox layer on its own: cgroup detection, isolation properties visible from inside, exit
// codes, limits, teardown, refusal when the machine cannot sandbox, and `sandbox: none`.
#include "reward/code/sandbox.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/logging.h"
#include "reward/code/cgroup.h"
#include "tests/reward/code/test_util.h"

namespace lightrl::reward::code {
namespace {

constexpr uint32_t kUid = 64101;

SandboxConfig Config() {
  SandboxConfig c;
  c.uid = kUid;
  c.gid = kUid;
  return c;
}

SandboxRequest Python(const std::string& code) {
  SandboxRequest r;
  r.argv = {"/usr/bin/python3", "-I", "-c", code};
  r.limits.cpu_seconds = 5;
  r.limits.wall_seconds = 15;
  return r;
}

class SandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto sb = Sandbox::Create(Config());
    ASSERT_TRUE(sb.ok()) << sb.status();
    sandbox_ = std::move(sb).value().release();
  }
  static void TearDownTestSuite() {
    delete sandbox_;
    sandbox_ = nullptr;
  }
  static Sandbox* sandbox_;
};
Sandbox* SandboxTest::sandbox_ = nullptr;

TEST(CgroupLayoutTest, DetectsAUsableLayoutWithEveryController) {
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok()) << layout.status();
  if (layout->mode == CgroupMode::kV1) {
    EXPECT_FALSE(layout->memory_dir.empty());
    EXPECT_FALSE(layout->pids_dir.empty());
    EXPECT_FALSE(layout->cpu_dir.empty());
    EXPECT_TRUE(std::filesystem::exists(layout->memory_dir + "/memory.limit_in_bytes"));
  } else {
    EXPECT_TRUE(std::filesystem::exists(layout->unified_dir + "/cgroup.subtree_control"));
  }
  EXPECT_FALSE(layout->Describe().empty());
}

TEST(CgroupLayoutTest, RunLeafGetsEveryLimitAndIsRemoved) {
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok()) << layout.status();
  auto manager = CgroupManager::Create(*layout);
  ASSERT_TRUE(manager.ok()) << manager.status();
  CgroupLimits limits;
  limits.memory_bytes = 100ll << 20;
  limits.pids_max = 17;
  limits.cpus = 0.5;
  auto run = (*manager)->CreateRun(limits);
  ASSERT_TRUE(run.ok()) << run.status();
  std::vector<std::string> dirs = (*run)->dirs();
  auto read = [](const std::string& p) {
    std::ifstream f(p);
    std::string s;
    std::getline(f, s);
    return s;
  };
  if (layout->mode == CgroupMode::kV1) {
    EXPECT_EQ(read(dirs[0] + "/memory.limit_in_bytes"), std::to_string(100ll << 20));
    EXPECT_EQ(read(dirs[1] + "/pids.max"), "17");
    EXPECT_EQ(read(dirs[2] + "/cpu.cfs_quota_us"), "50000");
    EXPECT_EQ(read(dirs[2] + "/cpu.cfs_period_us"), "100000");
  } else {
    EXPECT_EQ(read(dirs[0] + "/memory.max"), std::to_string(100ll << 20));
    EXPECT_EQ(read(dirs[0] + "/pids.max"), "17");
    EXPECT_EQ(read(dirs[0] + "/cpu.max"), "50000 100000");
  }
  ASSERT_TRUE((*run)->Destroy().ok());
  for (const auto& d : dirs) EXPECT_FALSE(std::filesystem::exists(d)) << d;
  std::vector<std::string> bases = (*manager)->base_dirs();
  manager->reset();
  for (const auto& b : bases) EXPECT_FALSE(std::filesystem::exists(b)) << b;
}

TEST_F(SandboxTest, RunsAsTheUnprivilegedUidWithAScrubbedEnvironment) {
  ::setenv("LIGHTRL_SANDBOX_TEST_SECRET", "hunter2-sandbox", 1);
  auto r = sandbox_->Run(Python(
      "import os\n"
      "print(os.getuid(), os.getgid())\n"
      "print(sorted(os.environ))\n"
      "print(open('/proc/1/environ','rb').read())\n"
      "print(sorted(os.listdir('/')))\n"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_NE(r->stdout_data.find(std::to_string(kUid) + " " + std::to_string(kUid)), std::string::npos)
      << r->stdout_data;
  EXPECT_EQ(r->stdout_data.find("hunter2"), std::string::npos) << r->stdout_data;
  EXPECT_EQ(r->stdout_data.find("LIGHTRL_SANDBOX_TEST_SECRET"), std::string::npos);
  // Only the sandbox's own root entries: no /home, /root, /sys, /var, /work.
  EXPECT_EQ(r->stdout_data.find("'home'"), std::string::npos) << r->stdout_data;
  EXPECT_EQ(r->stdout_data.find("'root'"), std::string::npos);
  EXPECT_EQ(r->stdout_data.find("'sys'"), std::string::npos);
  EXPECT_EQ(r->stdout_data.find("'work'"), std::string::npos);
  EXPECT_TRUE(r->cleanup_ok) << r->cleanup_error;
  ::unsetenv("LIGHTRL_SANDBOX_TEST_SECRET");
}

TEST_F(SandboxTest, ReportsExitCodesStdinAndStderr) {
  SandboxRequest req = Python(
      "import sys\n"
      "data = sys.stdin.read()\n"
      "sys.stdout.write(data.upper())\n"
      "sys.stderr.write('err-text')\n"
      "sys.exit(7)\n");
  req.stdin_data = std::string(300000, 'a') + "\n";  // larger than a pipe buffer
  auto r = sandbox_->Run(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stop, StopReason::kExited);
  EXPECT_EQ(r->exit_code, 7);
  EXPECT_EQ(r->stdout_data, std::string(300000, 'A') + "\n");
  EXPECT_EQ(r->stderr_data, "err-text");
}

TEST_F(SandboxTest, SignalDeathIsReportedAs128PlusSignal) {
  auto r = sandbox_->Run(Python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 128 + 11);
}

TEST_F(SandboxTest, ResultChannelIsFd3AndNothingElseIsInherited) {
  SandboxRequest req = Python(
      "import os\n"
      "os.write(3, b'on-fd-3')\n"
      "print(sorted(int(x) for x in os.listdir('/proc/self/fd')))\n");
  req.result_channel = true;
  auto r = sandbox_->Run(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->result_data, "on-fd-3");
  // 0,1,2,3 plus the fd listdir itself opened.
  EXPECT_EQ(r->stdout_data, "[0, 1, 2, 3, 4]\n") << r->stderr_data;
}

TEST_F(SandboxTest, OutputCapStopsTheRun) {
  SandboxRequest req = Python("import sys\nwhile True: sys.stdout.write('x' * 65536)\n");
  req.limits.stdout_bytes = 100000;
  auto r = sandbox_->Run(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stop, StopReason::kOutputLimit);
  EXPECT_EQ(r->stdout_data.size(), 100000u);
}

TEST_F(SandboxTest, ScratchDirsLiveUnderTheWorkDirAndGoAwayWithTheSandbox) {
  auto sb = Sandbox::Create(Config());
  ASSERT_TRUE(sb.ok()) << sb.status();
  std::string work = (*sb)->work_dir();
  auto d = (*sb)->MakeScratchDir("x", true);
  ASSERT_TRUE(d.ok());
  struct stat st;
  ASSERT_EQ(::stat(d->c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);
  EXPECT_EQ(d->rfind(work, 0), 0u);
  sb->reset();
  EXPECT_FALSE(std::filesystem::exists(work));
}

TEST(SandboxCreateTest, RefusesWithoutBubblewrap) {
  SandboxConfig c = Config();
  c.bwrap_path = "/nonexistent/bwrap";
  auto sb = Sandbox::Create(c);
  ASSERT_FALSE(sb.ok());
  EXPECT_EQ(sb.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(sb.status().message().find("bubblewrap not found"), std::string::npos) << sb.status();
  EXPECT_NE(sb.status().message().find("sandbox: none"), std::string::npos) << sb.status();
}

TEST(SandboxCreateTest, RefusesRootAsTheSandboxUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "only meaningful when running as root";
  SandboxConfig c = Config();
  c.uid = 0;
  auto sb = Sandbox::Create(c);
  ASSERT_FALSE(sb.ok());
  EXPECT_EQ(sb.status().code(), StatusCode::kInvalidArgument);
}

TEST(SandboxNoneTest, RunsUnsandboxedAndWarnsOnEveryRun) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  auto logger = Logger("reward.code");
  logger->sinks().push_back(sink);
  SandboxConfig c = Config();
  c.mode = SandboxMode::kNone;
  auto sb = Sandbox::Create(c);
  ASSERT_TRUE(sb.ok()) << sb.status();
  EXPECT_NE((*sb)->Describe().find("UNSANDBOXED"), std::string::npos);
  size_t before = sink->last_formatted().size();
  for (int i = 0; i < 2; ++i) {
    auto r = (*sb)->Run(Python("print('hi')"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->stdout_data, "hi\n");
    EXPECT_EQ(r->exit_code, 0);
  }
  auto lines = sink->last_formatted();
  int warnings = 0;
  for (size_t i = before; i < lines.size(); ++i) {
    if (lines[i].find("UNSANDBOXED") != std::string::npos) ++warnings;
  }
  EXPECT_EQ(warnings, 2);
  logger->sinks().pop_back();
}

}  // namespace
}  // namespace lightrl::reward::code
