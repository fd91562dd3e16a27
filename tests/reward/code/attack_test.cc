// The attack-program suite for the code executor (rewards.md §4.5). Each case runs a hostile
// Python program in the sandbox and checks the expected verdict AND a host invariant afterwards
// (no process of the sandbox uid survives, the toolchain is unchanged, no secret reaches the
// output). Where the program's own report is the observable, it prints SAFE/LEAK and the test
// expects "SAFE": an AC then proves the program ran to the end and found nothing.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "reward/code/executor.h"
#include "tests/reward/code/test_util.h"

namespace lightrl::reward::code {
namespace {

using testing::ProcessesOfUid;
using testing::StdinTask;
using testing::TestConfig;
using V = TestVerdict;

constexpr uint32_t kUid = 64301;

class AttackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::setenv("LIGHTRL_ATTACK_SECRET", "s3cr3t-token-4242", 1);
    ExecutorConfig c = TestConfig(kUid, 2);
    c.run_limits.cpu_seconds = 2;
    c.run_limits.wall_seconds = 6;
    c.run_limits.stdout_bytes = 1 << 20;
    c.run_limits.file_size_bytes = 16ll << 20;
    auto ex = CodeExecutor::Create(c);
    ASSERT_TRUE(ex.ok()) << ex.status();
    ex_ = std::move(ex).value().release();
  }
  static void TearDownTestSuite() {
    delete ex_;
    ex_ = nullptr;
  }
  static TestResult RunOne(const std::string& src, const std::string& expected = "SAFE\n", double cpu_s = 0) {
    CodeTask task = StdinTask(Language::kPython, {{"", expected}});
    if (cpu_s > 0) task.time_limit_s = cpu_s;
    auto r = ex_->Execute(src, task);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r.ok() && !r->sandbox_failed()) << (r.ok() ? r->sandbox_error : "");
    TestResult t = r.ok() && !r->tests.empty() ? r->tests[0] : TestResult{};
    EXPECT_TRUE(t.cleanup_ok);
    return t;
  }
  static void ExpectNoSurvivors() {
    for (int i = 0; i < 50 && !ProcessesOfUid(kUid).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(ProcessesOfUid(kUid).empty()) << ProcessesOfUid(kUid).size() << " sandbox processes survived";
  }
  static CodeExecutor* ex_;
};
CodeExecutor* AttackTest::ex_ = nullptr;

TEST_F(AttackTest, BusyLoopIsTleAndTheTreeIsGone) {
  TestResult t = RunOne("while True:\n    pass\n", "SAFE\n", 1.0);
  EXPECT_EQ(t.verdict, V::kTLE) << t.detail;
  EXPECT_LE(t.cpu_seconds, 1.0 + 0.8);
  ExpectNoSurvivors();
}

TEST_F(AttackTest, SleepIsWallTle) {
  auto t0 = std::chrono::steady_clock::now();
  TestResult t = RunOne("import time\ntime.sleep(1000)\n", "SAFE\n", 0.5);
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(t.verdict, V::kTLE) << t.detail;
  EXPECT_LT(wall, 10.0);
  ExpectNoSurvivors();
}

TEST_F(AttackTest, ForkBombHitsThePidsLimit) {
  TestResult t = RunOne(
      "import os\n"
      "n = 0\n"
      "while n < 100000:\n"
      "    try:\n"
      "        if os.fork() == 0:\n"
      "            while True: pass\n"
      "    except OSError:\n"
      "        n += 1\n",
      "SAFE\n", 1.0);
  EXPECT_TRUE(t.verdict == V::kTLE || t.verdict == V::kRE || t.verdict == V::kWA) << TestVerdictName(t.verdict);
  EXPECT_NE(t.verdict, V::kAC);
  EXPECT_GT(t.pids_limit_hits, 0) << "pids.max should refuse forks";
  ExpectNoSurvivors();
}

TEST_F(AttackTest, MemoryBombIsMle) {
  TestResult t = RunOne("a = []\nwhile True:\n    a.append(bytearray(16 << 20))\n");
  EXPECT_EQ(t.verdict, V::kMLE) << TestVerdictName(t.verdict) << " " << t.detail;
  ExpectNoSurvivors();
}

TEST_F(AttackTest, HugeStdoutIsOleAtTheCap) {
  TestResult t = RunOne("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n");
  EXPECT_EQ(t.verdict, V::kOLE) << t.detail;
  ExpectNoSurvivors();
}

TEST_F(AttackTest, LargeFileWriteFails) {
  TestResult t = RunOne("f = open('/tmp/big', 'wb')\nfor i in range(64):\n    f.write(b'x' * (1 << 20))\nf.close()\nprint('SAFE')\n");
  EXPECT_NE(t.verdict, V::kAC) << "a 64 MiB write passed a 16 MiB RLIMIT_FSIZE";
  ExpectNoSurvivors();
}

TEST_F(AttackTest, NoNetwork) {
  TestResult t = RunOne(
      "import socket\n"
      "ok = True\n"
      "for addr in [('1.1.1.1', 53), ('127.0.0.1', 22), ('8.8.8.8', 443)]:\n"
      "    try:\n"
      "        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
      "        s.settimeout(1)\n"
      "        s.connect(addr)\n"
      "        ok = False\n"
      "    except OSError:\n"
      "        pass\n"
      "print('SAFE' if ok else 'LEAK')\n");
  EXPECT_EQ(t.verdict, V::kAC) << TestVerdictName(t.verdict) << " " << t.stderr_tail;
}

TEST_F(AttackTest, SecretsAreNotReadable) {
  TestResult t = RunOne(
      "import os\n"
      "leak = False\n"
      "for p in ['/etc/shadow', '/root/.ssh/id_rsa', '/root/.bash_history', '/proc/1/environ', '/etc/ssh/ssh_host_rsa_key']:\n"
      "    try:\n"
      "        data = open(p, 'rb').read()\n"
      "        if b's3cr3t' in data or b'root:' in data or b'PRIVATE' in data: leak = True\n"
      "    except OSError:\n"
      "        pass\n"
      "if 's3cr3t-token-4242' in str(os.environ): leak = True\n"
      "for pid in os.listdir('/proc'):\n"
      "    if pid.isdigit():\n"
      "        try:\n"
      "            if b's3cr3t' in open('/proc/%s/environ' % pid, 'rb').read(): leak = True\n"
      "        except OSError:\n"
      "            pass\n"
      "print('LEAK' if leak else 'SAFE')\n");
  EXPECT_EQ(t.verdict, V::kAC) << TestVerdictName(t.verdict) << " " << t.stderr_tail;
}

TEST_F(AttackTest, ToolchainIsReadOnly) {
  struct stat before, after;
  ASSERT_EQ(::stat("/usr/bin/python3", &before), 0);
  TestResult t = RunOne(
      "ok = True\n"
      "for p in ['/usr/bin/python3', '/bin/sh', '/usr/lib/os-release']:\n"
      "    try:\n"
      "        open(p, 'ab').write(b'x')\n"
      "        ok = False\n"
      "    except OSError:\n"
      "        pass\n"
      "print('SAFE' if ok else 'LEAK')\n");
  EXPECT_EQ(t.verdict, V::kAC) << t.stderr_tail;
  ASSERT_EQ(::stat("/usr/bin/python3", &after), 0);
  EXPECT_EQ(before.st_size, after.st_size);
  EXPECT_EQ(before.st_mtime, after.st_mtime);
}

TEST_F(AttackTest, PtraceUnshareMountAreDenied) {
  TestResult t = RunOne(
      "import ctypes, ctypes.util\n"
      "libc = ctypes.CDLL(None, use_errno=True)\n"
      "bad = []\n"
      "if libc.ptrace(0, 0, 0, 0) == 0: bad.append('ptrace')\n"
      "if libc.unshare(0x10000000) == 0: bad.append('unshare-user')\n"
      "if libc.unshare(0x00020000) == 0: bad.append('unshare-mnt')\n"
      "if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0: bad.append('mount')\n"
      "print('SAFE' if not bad else 'LEAK ' + ' '.join(bad))\n");
  EXPECT_EQ(t.verdict, V::kAC) << TestVerdictName(t.verdict) << " " << t.stderr_tail;
}

TEST_F(AttackTest, DaemonisedChildIsKilled) {
  TestResult t = RunOne(
      "import os, time\n"
      "if os.fork() == 0:\n"
      "    os.setsid()\n"
      "    if os.fork() == 0:\n"
      "        time.sleep(100)\n"
      "    os._exit(0)\n"
      "print('SAFE')\n");
  EXPECT_EQ(t.verdict, V::kAC) << t.stderr_tail;
  ExpectNoSurvivors();
}

// (A forged result line that holds the right value is not an attack: knowing the value is
// solving the task, and the expected value never enters the sandbox.)
TEST_F(AttackTest, ExitBeforeTheCallEarnsNothing) {
  CodeTask task;
  task.language = Language::kPython;
  task.fn_name = "add";
  TestCase tc;
  tc.args = nlohmann::json::array({1, 2});
  tc.expected = 3;
  task.tests.push_back(tc);
  for (const char* src : {"import os\nprint('PASSED')\nos._exit(0)\ndef add(a, b): return a + b\n",
                          "import sys\nsys.exit(0)\n",
                          "def add(a, b):\n    raise SystemExit(0)\n",
                          "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b): return a - b\n",
                          "def add(a, b):\n    import os\n    os.write(3, b'R 3\\n')\n    return 4\n"}) {
    auto r = ex_->Execute(src, task);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->tests.size(), 1u);
    EXPECT_NE(r->tests[0].verdict, V::kAC) << src;
  }
}

TEST_F(AttackTest, ParallelRunsDoNotShareTmp) {
  std::string writer = "import time\nopen('/tmp/marker', 'w').write('x')\ntime.sleep(1.5)\nprint('SAFE')\n";
  std::string reader = "import os, time\ntime.sleep(0.5)\nprint('LEAK' if os.path.exists('/tmp/marker') else 'SAFE')\n";
  CodeTask task = StdinTask(Language::kPython, {{"", "SAFE\n"}});
  auto reports = ex_->ExecuteBatch({{writer, task}, {reader, task}});
  ASSERT_EQ(reports.size(), 2u);
  for (const auto& r : reports) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->tests[0].verdict, V::kAC) << r->tests[0].stderr_tail;
  }
}

TEST_F(AttackTest, HugeInputAndUnicodeAreHandled) {
  CodeTask task = StdinTask(Language::kPython, {{std::string(8 << 20, 'a') + "\n", "8388608\n"},
                                                 {"h\xC3\xA9llo \xE2\x9C\x93\n", "h\xC3\xA9llo \xE2\x9C\x93\n"}});
  auto r = ex_->Execute("import sys\ns = sys.stdin.buffer.read().rstrip(b'\\n')\n"
                        "print(len(s) if len(s) > 1000 else s.decode())\n", task);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->passed, 2) << r->ToJson().dump();
}

}  // namespace
}  // namespace lightrl::reward::code
