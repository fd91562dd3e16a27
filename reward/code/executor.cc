#include "reward/code/executor.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "core/logging.h"
#include "reward/code/harness.h"

namespace lightrl::reward::code {
namespace {

namespace fs = std::filesystem;

std::string Tail(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(s.size() - n); }
std::string Head(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n) + "..."; }

Status WriteHostFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  f.close();
  if (!f) return Internal("cannot write " + path);
  if (::chmod(path.c_str(), 0644) != 0) return Internal("chmod " + path);
  return Status::Ok();
}

// Removes a directory tree when it goes out of scope.
struct ScopedDir {
  std::string path;
  ~ScopedDir() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string ExitDetail(int code) {
  if (code > 128 && code < 128 + 65) {
    return StrCat("exit status ", code, " (signal ", code - 128, " ", strsignal(code - 128), ")");
  }
  return StrCat("exit status ", code);
}

}  // namespace

StatusOr<Language> ParseLanguage(const std::string& name) {
  if (name == "python" || name == "python3" || name == "py") return Language::kPython;
  if (name == "cpp" || name == "c++" || name == "cxx") return Language::kCpp;
  return InvalidArgument(StrCat("unknown language '", name, "'; expected python or cpp"));
}

const char* LanguageName(Language lang) { return lang == Language::kPython ? "python" : "cpp"; }

const char* TestVerdictName(TestVerdict v) {
  switch (v) {
    case TestVerdict::kAC: return "AC";
    case TestVerdict::kWA: return "WA";
    case TestVerdict::kTLE: return "TLE";
    case TestVerdict::kMLE: return "MLE";
    case TestVerdict::kOLE: return "OLE";
    case TestVerdict::kRE: return "RE";
    case TestVerdict::kCE: return "CE";
    case TestVerdict::kSE: return "SE";
    case TestVerdict::kSkipped: return "SKIP";
  }
  return "?";
}

TestVerdict ExecutionReport::first_failure() const {
  for (const auto& t : tests) {
    if (t.verdict != TestVerdict::kAC) return t.verdict;
  }
  return TestVerdict::kAC;
}

nlohmann::json ExecutionReport::ToJson() const {
  nlohmann::json j;
  j["passed"] = passed;
  j["total"] = tests.size();
  if (!compiled) j["compile_output"] = Tail(compile_output, 2000);
  if (sandbox_failed()) j["sandbox_error"] = sandbox_error;
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& t : tests) {
    nlohmann::json e;
    e["verdict"] = TestVerdictName(t.verdict);
    if (!t.detail.empty()) e["detail"] = t.detail;
    if (t.verdict != TestVerdict::kSkipped && t.verdict != TestVerdict::kCE) {
      e["cpu_s"] = std::round(t.cpu_seconds * 1000) / 1000;
      e["wall_s"] = std::round(t.wall_seconds * 1000) / 1000;
    }
    arr.push_back(std::move(e));
  }
  j["tests"] = std::move(arr);
  return j;
}

ExecutorConfig::ExecutorConfig() {
  compile_limits.cpu_seconds = 20;
  compile_limits.wall_seconds = 40;
  compile_limits.memory_bytes = 1ll << 30;
  compile_limits.pids = 32;
  compile_limits.file_size_bytes = 64ll << 20;
  compile_limits.open_files = 256;
  compile_limits.stdout_bytes = 1 << 20;
  compile_limits.stderr_bytes = 1 << 20;
}

ExecutorConfig ParseExecutorConfig(ConfigReader& r) {
  ExecutorConfig c;
  std::string mode = r.Get<std::string>("sandbox", "bwrap");
  if (mode == "bwrap") {
    c.sandbox.mode = SandboxMode::kBwrap;
  } else if (mode == "none") {
    c.sandbox.mode = SandboxMode::kNone;
  } else {
    r.Fail("sandbox", "expected bwrap or none, got '" + mode + "'");
  }
  c.sandbox.bwrap_path = r.Get<std::string>("bwrap", c.sandbox.bwrap_path);
  int64_t uid = r.Get<int64_t>("uid", c.sandbox.uid);
  int64_t gid = r.Get<int64_t>("gid", c.sandbox.gid);
  if (uid <= 0 || uid > 0xFFFFFFF0ll) r.Fail("uid", "expected a non-root uid");
  if (gid <= 0 || gid > 0xFFFFFFF0ll) r.Fail("gid", "expected a non-root gid");
  c.sandbox.uid = static_cast<uint32_t>(uid);
  c.sandbox.gid = static_cast<uint32_t>(gid);
  c.sandbox.ro_dirs = r.Get<std::vector<std::string>>("ro_dirs", c.sandbox.ro_dirs);
  std::string cg = r.Get<std::string>("cgroup", "auto");
  if (cg == "auto") {
    c.sandbox.cgroup = CgroupPreference::kAuto;
  } else if (cg == "v1") {
    c.sandbox.cgroup = CgroupPreference::kV1;
  } else if (cg == "v2") {
    c.sandbox.cgroup = CgroupPreference::kV2;
  } else {
    r.Fail("cgroup", "expected auto, v1 or v2, got '" + cg + "'");
  }
  c.sandbox.seccomp = r.Get<bool>("seccomp", true);
  c.sandbox.tmpfs_bytes = r.Get<int64_t>("tmpfs_mb", c.sandbox.tmpfs_bytes >> 20) << 20;
  c.sandbox.work_root = r.Get<std::string>("work_dir", c.sandbox.work_root);
  c.python = r.Get<std::string>("python", c.python);
  c.gxx = r.Get<std::string>("gxx", c.gxx);
  c.cpp_flags = r.Get<std::vector<std::string>>("cpp_flags", c.cpp_flags);

  SandboxLimits& l = c.run_limits;
  l.cpu_seconds = r.Get<double>("time_limit_s", l.cpu_seconds);
  c.wall_factor = r.Get<double>("wall_factor", c.wall_factor);
  if (!(l.cpu_seconds > 0)) r.Fail("time_limit_s", "expected > 0");
  if (!(c.wall_factor >= 1)) r.Fail("wall_factor", "expected >= 1");
  l.wall_seconds = r.Get<double>("wall_limit_s", c.wall_factor * l.cpu_seconds + 1.0);
  if (!(l.wall_seconds >= l.cpu_seconds)) r.Fail("wall_limit_s", "expected >= time_limit_s");
  l.memory_bytes = r.Get<int64_t>("memory_mb", l.memory_bytes >> 20) << 20;
  if (l.memory_bytes < (16ll << 20)) r.Fail("memory_mb", "expected >= 16");
  l.pids = r.Get<int64_t>("pids_max", l.pids);
  if (l.pids < 4) r.Fail("pids_max", "expected >= 4");
  l.cpus = r.Get<double>("cpus", l.cpus);
  if (!(l.cpus > 0)) r.Fail("cpus", "expected > 0");
  l.file_size_bytes = r.Get<int64_t>("file_size_mb", l.file_size_bytes >> 20) << 20;
  l.open_files = r.Get<int64_t>("open_files", l.open_files);
  if (l.open_files < 16) r.Fail("open_files", "expected >= 16");
  l.stack_bytes = r.Get<int64_t>("stack_mb", l.stack_bytes >> 20) << 20;
  l.stdout_bytes = r.Get<int64_t>("stdout_limit_kb", l.stdout_bytes >> 10) << 10;
  l.stderr_bytes = r.Get<int64_t>("stderr_limit_kb", l.stderr_bytes >> 10) << 10;
  l.result_bytes = l.stdout_bytes;
  c.compile_limits.cpu_seconds = r.Get<double>("compile_time_limit_s", c.compile_limits.cpu_seconds);
  c.compile_limits.wall_seconds = 2 * c.compile_limits.cpu_seconds;
  c.compile_limits.memory_bytes = r.Get<int64_t>("compile_memory_mb", c.compile_limits.memory_bytes >> 20) << 20;
  c.python_syntax_check = r.Get<bool>("python_syntax_check", c.python_syntax_check);
  c.stop_on_first_failure = r.Get<bool>("stop_on_first_failure", c.stop_on_first_failure);
  c.max_parallel = r.Get<int>("max_parallel", c.max_parallel);
  if (c.max_parallel < 0) r.Fail("max_parallel", "expected >= 0 (0 = number of CPUs)");
  return c;
}

// ---- CodeExecutor ---------------------------------------------------------------------------

StatusOr<std::unique_ptr<CodeExecutor>> CodeExecutor::Create(const ExecutorConfig& config) {
  std::unique_ptr<CodeExecutor> ex(new CodeExecutor(config));
  LR_ASSIGN_OR_RETURN(ex->sandbox_, Sandbox::Create(config.sandbox));
  LR_ASSIGN_OR_RETURN(ex->harness_dir_, ex->sandbox_->MakeScratchDir("harness", false));
  LR_RETURN_IF_ERROR(WriteHostFile(ex->harness_dir_ + "/call_harness.py", PythonCallHarness()));
  // Toolchain preflight inside the sandbox.
  SandboxRequest py;
  py.argv = {config.python, "-I", "-B", "-c", "import json, types; print(6 * 7)"};
  py.limits = config.compile_limits;
  auto pr = ex->sandbox_->Run(py);
  if (!pr.ok() || pr->exit_code != 0 || pr->stdout_data != "42\n") {
    return FailedPrecondition(StrCat("code_executor.python: ", config.python, " does not run in the sandbox: ",
                                     pr.ok() ? StrCat("exit ", pr->exit_code, ", stderr: ", pr->stderr_data.substr(0, 1000))
                                             : pr.status().message()));
  }
  SandboxRequest gxx;
  gxx.argv = {config.gxx, "--version"};
  gxx.limits = config.compile_limits;
  auto gr = ex->sandbox_->Run(gxx);
  ex->cpp_available_ = gr.ok() && gr->exit_code == 0;
  if (!ex->cpp_available_) {
    Logger("reward.code")->warn("code executor: {} does not run in the sandbox; C++ tasks will be reported as sandbox errors", config.gxx);
  }
  int n = config.max_parallel > 0 ? config.max_parallel
                                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) ex->workers_.emplace_back([e = ex.get()] { e->WorkerLoop(); });
  return ex;
}

CodeExecutor::~CodeExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void CodeExecutor::WorkerLoop() {
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job();
  }
}

std::future<StatusOr<ExecutionReport>> CodeExecutor::Submit(std::string source, CodeTask task) {
  auto promise = std::make_shared<std::promise<StatusOr<ExecutionReport>>>();
  auto future = promise->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    LR_CHECK(!stopping_, "CodeExecutor::Submit after shutdown");
    queue_.push_back([this, promise, source = std::move(source), task = std::move(task)] {
      try {
        promise->set_value(Execute(source, task));
      } catch (const std::exception& e) {
        promise->set_value(Internal(StrCat("code executor: ", e.what())));
      }
    });
  }
  cv_.notify_one();
  return future;
}

std::vector<StatusOr<ExecutionReport>> CodeExecutor::ExecuteBatch(
    const std::vector<std::pair<std::string, CodeTask>>& jobs) {
  std::vector<std::future<StatusOr<ExecutionReport>>> futures;
  futures.reserve(jobs.size());
  for (const auto& [src, task] : jobs) futures.push_back(Submit(src, task));
  std::vector<StatusOr<ExecutionReport>> out;
  out.reserve(jobs.size());
  for (auto& f : futures) out.push_back(f.get());
  return out;
}

TestResult CodeExecutor::RunOne(const SandboxRequest& request, const CodeTask& task,
                                const TestCase& test, std::string* sandbox_error) {
  TestResult t;
  auto run = sandbox_->Run(request);
  if (!run.ok()) {
    t.verdict = TestVerdict::kSE;
    t.detail = run.status().message();
    *sandbox_error = run.status().ToString();
    return t;
  }
  const SandboxResult& r = *run;
  t.cpu_seconds = r.cpu_seconds;
  t.wall_seconds = r.wall_seconds;
  t.exit_code = r.exit_code;
  t.stderr_tail = Tail(r.stderr_data, 2000);
  t.cleanup_ok = r.cleanup_ok;
  t.pids_limit_hits = r.pids_max_hits;
  t.memory_peak = r.memory_peak;
  const SandboxLimits& lim = request.limits;
  if (r.stop == StopReason::kOutputLimit) {
    t.verdict = TestVerdict::kOLE;
    t.detail = StrCat("output over the cap (stdout ", lim.stdout_bytes, " B, stderr ", lim.stderr_bytes, " B)");
  } else if (r.oom_kills > 0) {
    t.verdict = TestVerdict::kMLE;
    t.detail = StrCat("memory limit ", lim.memory_bytes >> 20, " MiB (OOM kill)");
  } else if (r.stop == StopReason::kCpuLimit) {
    t.verdict = TestVerdict::kTLE;
    t.detail = StrCat("cpu ", r.cpu_seconds, " s > ", lim.cpu_seconds, " s");
  } else if (r.stop == StopReason::kWallLimit) {
    t.verdict = TestVerdict::kTLE;
    t.detail = StrCat("wall ", r.wall_seconds, " s > ", lim.wall_seconds, " s");
  } else if (r.exit_code != 0) {
    t.verdict = TestVerdict::kRE;
    t.detail = ExitDetail(r.exit_code);
  } else if (task.fn_name.empty()) {
    bool ok = OutputsMatch(task.comparator, r.stdout_data, test.expected_output);
    t.verdict = ok ? TestVerdict::kAC : TestVerdict::kWA;
    if (!ok) t.detail = StrCat("output differs (", ComparatorName(task.comparator.kind), "): got '", Head(r.stdout_data, 120), "'");
  } else {
    std::vector<std::string> lines;
    std::istringstream in(r.result_data);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) lines.push_back(line);
    }
    t.verdict = TestVerdict::kWA;
    if (lines.empty()) {
      t.detail = "no result: the program ended before the function returned";
    } else if (lines.size() > 1) {
      t.detail = StrCat(lines.size(), " result lines (exactly one expected)");
    } else if (lines[0].rfind("U ", 0) == 0) {
      t.detail = "the return value (" + Head(lines[0].substr(2), 60) + ") is not JSON-serializable";
    } else if (lines[0].rfind("R ", 0) != 0) {
      t.detail = "malformed result line";
    } else {
      auto got = nlohmann::json::parse(lines[0].substr(2), nullptr, /*allow_exceptions=*/false);
      if (got.is_discarded()) {
        t.detail = "unparseable result: " + Head(lines[0].substr(2), 120);
      } else if (JsonValuesMatch(got, test.expected, task.comparator, task.float_tolerance)) {
        t.verdict = TestVerdict::kAC;
      } else {
        t.detail = "returned " + Head(got.dump(), 120);
      }
    }
  }
  return t;
}

StatusOr<ExecutionReport> CodeExecutor::Execute(const std::string& source, const CodeTask& task) {
  if (task.tests.empty()) return InvalidArgument("code task has no tests");
  const bool call = !task.fn_name.empty();
  if (call && task.language == Language::kCpp && task.tests.front().args.size() != task.cpp_arg_types.size()) {
    return InvalidArgument(StrCat("C++ function-call task: ", task.cpp_arg_types.size(),
                                  " arg_types but the first test has ", task.tests.front().args.size(), " args"));
  }
  for (size_t i = 0; i < task.tests.size(); ++i) {
    if (call && !task.tests[i].args.is_array()) return InvalidArgument(StrCat("tests[", i, "].args must be an array"));
  }
  SandboxLimits limits = config_.run_limits;
  if (task.time_limit_s) {
    if (!(*task.time_limit_s > 0)) return InvalidArgument("time_limit_s must be > 0");
    limits.cpu_seconds = *task.time_limit_s;
    limits.wall_seconds = config_.wall_factor * *task.time_limit_s + 1.0;
  }
  if (task.memory_bytes) limits.memory_bytes = *task.memory_bytes;

  ExecutionReport report;
  ScopedDir src_dir, build_dir;
  LR_ASSIGN_OR_RETURN(src_dir.path, sandbox_->MakeScratchDir("src", false));
  const BindMount src_bind{src_dir.path, "/box/src", false};
  const std::string src_seen = sandbox_->VisiblePath(src_bind);

  SandboxRequest req;
  req.limits = limits;
  req.binds.push_back(src_bind);
  if (task.language == Language::kCpp && !cpp_available_) {
    return Unavailable(StrCat("C++ task but ", config_.gxx, " does not run in the sandbox"));
  }
  auto sandbox_failure = [&](const std::string& what, const Status& st) {
    report.sandbox_error = what + ": " + st.ToString();
    report.tests.clear();
    for (size_t i = 0; i < task.tests.size(); ++i) {
      TestResult t;
      t.verdict = TestVerdict::kSE;
      t.detail = report.sandbox_error;
      report.tests.push_back(t);
    }
    return report;
  };
  auto compile_failure = [&](const SandboxResult& r, const std::string& tool) {
    report.compiled = false;
    std::string why;
    if (r.stop != StopReason::kExited) why = StrCat(tool, " stopped: ", StopReasonName(r.stop), "\n");
    if (r.oom_kills > 0) why = tool + " ran out of memory\n";
    report.compile_output = why + Tail(r.stderr_data, 4000);
    for (size_t i = 0; i < task.tests.size(); ++i) {
      TestResult t;
      t.verdict = TestVerdict::kCE;
      report.tests.push_back(t);
    }
    return report;
  };
  if (task.language == Language::kPython) {
    LR_RETURN_IF_ERROR(WriteHostFile(src_dir.path + "/solution.py", source));
    if (config_.python_syntax_check) {
      SandboxRequest check;
      check.limits = config_.compile_limits;
      check.binds = {src_bind};
      check.argv = {config_.python, "-I", "-B", "-c",
                    "import sys\ncompile(open(sys.argv[1], encoding='utf-8').read(), 'solution.py', 'exec')\n",
                    src_seen + "/solution.py"};
      auto checked = sandbox_->Run(check);
      if (!checked.ok()) return sandbox_failure("syntax check", checked.status());
      if (checked->stop != StopReason::kExited || checked->exit_code != 0) return compile_failure(*checked, "python");
    }
    if (call) {
      BindMount h{harness_dir_, "/box/harness", false};
      req.binds.push_back(h);
      req.argv = {config_.python, "-I", "-B", sandbox_->VisiblePath(h) + "/call_harness.py",
                  src_seen + "/solution.py", task.fn_name};
      req.result_channel = true;
    } else {
      req.argv = {config_.python, "-I", "-B", src_seen + "/solution.py"};
    }
  } else {
    std::string program = source;
    if (call) {
      LR_ASSIGN_OR_RETURN(program, BuildCppCallProgram(source, task.fn_name, task.cpp_arg_types));
    }
    LR_RETURN_IF_ERROR(WriteHostFile(src_dir.path + "/solution.cpp", program));
    LR_ASSIGN_OR_RETURN(build_dir.path, sandbox_->MakeScratchDir("build", /*writable_by_sandbox=*/true));
    BindMount out_rw{build_dir.path, "/box/out", true};
    SandboxRequest cc;
    cc.limits = config_.compile_limits;
    cc.binds = {src_bind, out_rw};
    cc.argv = {config_.gxx};
    cc.argv.insert(cc.argv.end(), config_.cpp_flags.begin(), config_.cpp_flags.end());
    cc.argv.insert(cc.argv.end(), {"-o", sandbox_->VisiblePath(out_rw) + "/prog", src_seen + "/solution.cpp"});
    auto compiled = sandbox_->Run(cc);
    if (!compiled.ok()) return sandbox_failure("compile", compiled.status());
    struct stat st;
    bool have_binary = ::lstat((build_dir.path + "/prog").c_str(), &st) == 0 && S_ISREG(st.st_mode);
    if (compiled->stop != StopReason::kExited || compiled->exit_code != 0 || !have_binary) {
      return compile_failure(*compiled, "g++");
    }
    BindMount out_ro{build_dir.path, "/box/out", false};
    req.binds.push_back(out_ro);
    req.argv = {sandbox_->VisiblePath(out_ro) + "/prog"};
    req.result_channel = call;
  }

  bool stop = false;
  for (const TestCase& test : task.tests) {
    if (stop) {
      TestResult t;
      t.verdict = TestVerdict::kSkipped;
      report.tests.push_back(t);
      continue;
    }
    if (call) {
      std::string in;
      for (const auto& a : test.args) in += a.dump() + "\n";
      req.stdin_data = std::move(in);
    } else {
      req.stdin_data = test.input;
    }
    std::string se;
    TestResult t = RunOne(req, task, test, &se);
    if (!t.cleanup_ok) {
      Logger("reward.code")->error("sandbox teardown incomplete after a {} run", LanguageName(task.language));
    }
    if (t.verdict == TestVerdict::kAC) ++report.passed;
    if (t.verdict == TestVerdict::kSE) {
      report.sandbox_error = se;
      stop = true;
    } else if (t.verdict != TestVerdict::kAC && config_.stop_on_first_failure) {
      stop = true;
    }
    report.tests.push_back(std::move(t));
  }
  return report;
}

}  // namespace lightrl::reward::code
