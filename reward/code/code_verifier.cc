#include "reward/code/code_verifier.h"

#include <algorithm>
#include <cctype>
#include <future>

#include "core/check.h"
#include "core/logging.h"

namespace lightrl::reward::code {
namespace {

using nlohmann::json;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string TrimWs(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

bool LanguageTagMatches(const std::string& tag, Language lang) {
  std::string t = Lower(tag);
  if (lang == Language::kPython) return t == "python" || t == "python3" || t == "py";
  return t == "cpp" || t == "c++" || t == "cxx" || t == "cc";
}

StatusOr<std::string> GetString(const json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key)) return InvalidArgument(where + key + ": missing");
  if (!j[key].is_string()) return InvalidArgument(where + key + ": expected a string");
  return j[key].get<std::string>();
}

StatusOr<json> ParseJsonText(const std::string& text, const std::string& where) {
  json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) return InvalidArgument(where + ": not valid JSON: " + text.substr(0, 80));
  return v;
}

}  // namespace

CodeVerifierConfig ParseCodeVerifierConfig(ConfigReader& r) {
  CodeVerifierConfig c;
  std::string mode = r.Get<std::string>("score_mode", "fraction");
  if (mode == "fraction") {
    c.score_mode = ScoreMode::kFraction;
  } else if (mode == "all_or_nothing") {
    c.score_mode = ScoreMode::kAllOrNothing;
  } else {
    r.Fail("score_mode", "expected fraction or all_or_nothing, got '" + mode + "'");
  }
  c.correct_reward = r.Get<double>("correct_reward", c.correct_reward);
  c.incorrect_reward = r.Get<double>("incorrect_reward", c.incorrect_reward);
  auto lang = ParseLanguage(r.Get<std::string>("language", "python"));
  if (!lang.ok()) r.Fail("language", lang.status().message());
  c.default_language = *lang;
  c.require_code_block = r.Get<bool>("require_code_block", c.require_code_block);
  int64_t kb = r.Get<int64_t>("max_code_kb", static_cast<int64_t>(c.max_code_bytes >> 10));
  if (kb <= 0) r.Fail("max_code_kb", "expected > 0");
  c.max_code_bytes = static_cast<size_t>(kb) << 10;
  ConfigReader ex = r.ChildOrEmpty("executor");
  c.executor = ParseExecutorConfig(ex);
  ex.Finish();
  return c;
}

StatusOr<CodeTask> ParseCodeTask(const json& j, Language default_language) {
  if (!j.is_object()) return InvalidArgument("code task: expected a JSON object");
  CodeTask t;
  t.language = default_language;
  if (j.contains("language")) {
    LR_ASSIGN_OR_RETURN(std::string name, GetString(j, "language", ""));
    auto lang = ParseLanguage(name);
    if (!lang.ok()) return InvalidArgument("language: " + lang.status().message());
    t.language = *lang;
  }
  if (j.contains("fn_name") && !j["fn_name"].is_null()) {
    LR_ASSIGN_OR_RETURN(t.fn_name, GetString(j, "fn_name", ""));
    if (t.fn_name.empty()) return InvalidArgument("fn_name: empty");
  }
  if (j.contains("arg_types")) {
    if (!j["arg_types"].is_array()) return InvalidArgument("arg_types: expected an array of strings");
    for (size_t i = 0; i < j["arg_types"].size(); ++i) {
      if (!j["arg_types"][i].is_string()) return InvalidArgument(StrCat("arg_types[", i, "]: expected a string"));
      t.cpp_arg_types.push_back(j["arg_types"][i].get<std::string>());
    }
  }
  const bool call = !t.fn_name.empty();
  if (call && t.language == Language::kCpp && !j.contains("arg_types")) {
    return InvalidArgument("arg_types: required for C++ function-call tasks");
  }
  if (j.contains("comparator")) {
    LR_ASSIGN_OR_RETURN(std::string name, GetString(j, "comparator", ""));
    auto kind = ParseComparatorKind(name);
    if (!kind.ok()) return InvalidArgument("comparator: " + kind.status().message());
    t.comparator.kind = *kind;
  }
  for (const char* key : {"abs_tol", "rel_tol", "time_limit_s"}) {
    if (j.contains(key) && !(j[key].is_number() && j[key].get<double>() >= 0)) {
      return InvalidArgument(StrCat(key, ": expected a non-negative number"));
    }
  }
  if (j.contains("abs_tol")) t.comparator.abs_tol = j["abs_tol"].get<double>();
  if (j.contains("rel_tol")) t.comparator.rel_tol = j["rel_tol"].get<double>();
  if (j.contains("time_limit_s")) {
    if (!(j["time_limit_s"].get<double>() > 0)) return InvalidArgument("time_limit_s: expected > 0");
    t.time_limit_s = j["time_limit_s"].get<double>();
  }
  if (j.contains("memory_mb")) {
    if (!j["memory_mb"].is_number_integer() || j["memory_mb"].get<int64_t>() < 16) {
      return InvalidArgument("memory_mb: expected an integer >= 16");
    }
    t.memory_bytes = j["memory_mb"].get<int64_t>() << 20;
  }
  if (j.contains("float_tolerance")) {
    if (!j["float_tolerance"].is_boolean()) return InvalidArgument("float_tolerance: expected a bool");
    t.float_tolerance = j["float_tolerance"].get<bool>();
  }

  if (j.contains("tests")) {
    const json& tests = j["tests"];
    if (!tests.is_array()) return InvalidArgument("tests: expected an array");
    for (size_t i = 0; i < tests.size(); ++i) {
      const std::string where = StrCat("tests[", i, "].");
      const json& tj = tests[i];
      if (!tj.is_object()) return InvalidArgument(StrCat("tests[", i, "]: expected an object"));
      TestCase tc;
      if (call) {
        if (!tj.contains("args") || !tj["args"].is_array()) return InvalidArgument(where + "args: expected an array");
        if (!tj.contains("expected")) return InvalidArgument(where + "expected: missing");
        tc.args = tj["args"];
        tc.expected = tj["expected"];
      } else {
        LR_ASSIGN_OR_RETURN(tc.input, GetString(tj, "input", where));
        LR_ASSIGN_OR_RETURN(tc.expected_output, GetString(tj, "output", where));
      }
      t.tests.push_back(std::move(tc));
    }
  } else if (j.contains("inputs") || j.contains("outputs")) {
    if (!j.contains("inputs") || !j["inputs"].is_array()) return InvalidArgument("inputs: expected an array of strings");
    if (!j.contains("outputs") || !j["outputs"].is_array()) return InvalidArgument("outputs: expected an array of strings");
    const json& in = j["inputs"];
    const json& out = j["outputs"];
    if (in.size() != out.size()) {
      return InvalidArgument(StrCat("inputs/outputs: ", in.size(), " inputs but ", out.size(), " outputs"));
    }
    for (size_t i = 0; i < in.size(); ++i) {
      if (!in[i].is_string()) return InvalidArgument(StrCat("inputs[", i, "]: expected a string"));
      if (!out[i].is_string()) return InvalidArgument(StrCat("outputs[", i, "]: expected a string"));
      TestCase tc;
      if (call) {
        const std::string text = in[i].get<std::string>();
        size_t start = 0;
        while (start <= text.size()) {
          size_t nl = text.find('\n', start);
          if (nl == std::string::npos) nl = text.size();
          std::string line = TrimWs(text.substr(start, nl - start));
          if (!line.empty()) {
            LR_ASSIGN_OR_RETURN(json arg, ParseJsonText(line, StrCat("inputs[", i, "]")));
            tc.args.push_back(std::move(arg));
          }
          start = nl + 1;
        }
        LR_ASSIGN_OR_RETURN(tc.expected, ParseJsonText(out[i].get<std::string>(), StrCat("outputs[", i, "]")));
      } else {
        tc.input = in[i].get<std::string>();
        tc.expected_output = out[i].get<std::string>();
      }
      t.tests.push_back(std::move(tc));
    }
  } else {
    return InvalidArgument("tests: missing (expected `tests` or `inputs`/`outputs`)");
  }
  if (t.tests.empty()) return InvalidArgument("tests: empty");
  if (call && t.language == Language::kCpp) {
    for (size_t i = 0; i < t.tests.size(); ++i) {
      if (t.tests[i].args.size() != t.cpp_arg_types.size()) {
        return InvalidArgument(StrCat("tests[", i, "].args: ", t.tests[i].args.size(), " values for ",
                                      t.cpp_arg_types.size(), " arg_types"));
      }
    }
  }
  return t;
}

std::optional<std::string> ExtractCode(const std::string& response, Language language,
                                       bool require_code_block) {
  struct Block {
    std::string tag, body;
  };
  std::vector<Block> blocks;
  size_t pos = 0;
  while (true) {
    size_t open = response.find("```", pos);
    if (open == std::string::npos) break;
    size_t nl = response.find('\n', open + 3);
    if (nl == std::string::npos) break;
    std::string tag = TrimWs(response.substr(open + 3, nl - open - 3));
    size_t close = response.find("```", nl + 1);
    if (close == std::string::npos) break;  // unterminated (truncated) block: ignored
    blocks.push_back({tag, response.substr(nl + 1, close - nl - 1)});
    pos = close + 3;
  }
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    if (LanguageTagMatches(it->tag, language)) return it->body;
  }
  if (!blocks.empty()) return blocks.back().body;
  if (!require_code_block && !TrimWs(response).empty()) return response;
  return std::nullopt;
}

StatusOr<std::unique_ptr<CodeVerifier>> CodeVerifier::Create(const CodeVerifierConfig& config) {
  std::unique_ptr<CodeVerifier> v(new CodeVerifier(config));
  LR_ASSIGN_OR_RETURN(v->executor_, CodeExecutor::Create(config.executor));
  return v;
}

RewardResult ScoreReport(const CodeVerifierConfig& config, uint64_t sample_id, const CodeTask& task,
                         const ExecutionReport& report) {
  if (report.sandbox_failed()) {
    return RewardResult::Failed(sample_id, RewardErrorKind::kSandboxError, report.sandbox_error);
  }
  json detail = report.ToJson();
  detail["language"] = LanguageName(task.language);
  const int total = static_cast<int>(report.tests.size());
  const double share = total > 0 ? static_cast<double>(report.passed) / total : 0.0;
  if (report.passed == total) {
    return RewardResult::Scored(sample_id, config.correct_reward, Verdict::kCorrect, detail.dump());
  }
  Verdict verdict = Verdict::kWrong;
  switch (report.first_failure()) {
    case TestVerdict::kCE: verdict = Verdict::kCompileError; break;
    case TestVerdict::kTLE: verdict = Verdict::kTimeLimit; break;
    case TestVerdict::kRE:
    case TestVerdict::kMLE:
    case TestVerdict::kOLE: verdict = Verdict::kRuntimeError; break;
    default: verdict = Verdict::kWrong; break;
  }
  double value = config.incorrect_reward;
  if (config.score_mode == ScoreMode::kFraction) {
    value = config.incorrect_reward + (config.correct_reward - config.incorrect_reward) * share;
    if (report.passed > 0) verdict = Verdict::kPartial;
  }
  return RewardResult::Scored(sample_id, value, verdict, detail.dump());
}

RewardResult CodeVerifier::VerifyParsed(uint64_t sample_id, const CodeTask& task, const std::string& response) {
  try {
    auto code = ExtractCode(response, task.language, config_.require_code_block);
    if (!code) {
      return RewardResult::Scored(sample_id, config_.incorrect_reward, Verdict::kNoAnswer,
                                  R"({"reason":"no fenced code block"})");
    }
    if (code->size() > config_.max_code_bytes) {
      json d;
      d["reason"] = StrCat("code is ", code->size(), " bytes (max ", config_.max_code_bytes, ")");
      return RewardResult::Scored(sample_id, config_.incorrect_reward, Verdict::kNoAnswer, d.dump());
    }
    auto report = executor_->Execute(*code, task);
    if (!report.ok()) {
      auto kind = report.status().code() == StatusCode::kInvalidArgument ? RewardErrorKind::kParseFail
                                                                          : RewardErrorKind::kSandboxError;
      return RewardResult::Failed(sample_id, kind, report.status().ToString());
    }
    return ScoreReport(config_, sample_id, task, *report);
  } catch (const std::exception& e) {
    return RewardResult::Failed(sample_id, RewardErrorKind::kInternal, StrCat("code verifier: ", e.what()));
  }
}

RewardResult CodeVerifier::Verify(uint64_t sample_id, const json& task, const std::string& response) {
  auto parsed = ParseCodeTask(task, config_.default_language);
  if (!parsed.ok()) {
    return RewardResult::Failed(sample_id, RewardErrorKind::kParseFail, "code task: " + parsed.status().message());
  }
  return VerifyParsed(sample_id, *parsed, response);
}

std::vector<RewardResult> CodeVerifier::VerifyBatch(const std::vector<Sample>& samples) {
  std::vector<RewardResult> out(samples.size());
  // The pool runs Execute(); parsing and extraction happen here.
  struct Pending {
    std::optional<RewardResult> done;
    CodeTask task;
    std::future<StatusOr<ExecutionReport>> report;
  };
  std::vector<Pending> pending(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    auto parsed = ParseCodeTask(s.task, config_.default_language);
    if (!parsed.ok()) {
      pending[i].done = RewardResult::Failed(s.sample_id, RewardErrorKind::kParseFail, "code task: " + parsed.status().message());
      continue;
    }
    auto code = ExtractCode(s.response, parsed->language, config_.require_code_block);
    if (!code || code->size() > config_.max_code_bytes) {
      pending[i].done = VerifyParsed(s.sample_id, *parsed, s.response);  // no execution needed
      continue;
    }
    pending[i].task = *parsed;
    pending[i].report = executor_->Submit(*code, *parsed);
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    if (pending[i].done) {
      out[i] = std::move(*pending[i].done);
      continue;
    }
    auto report = pending[i].report.get();
    if (!report.ok()) {
      auto kind = report.status().code() == StatusCode::kInvalidArgument ? RewardErrorKind::kParseFail
                                                                          : RewardErrorKind::kSandboxError;
      out[i] = RewardResult::Failed(samples[i].sample_id, kind, report.status().ToString());
    } else {
      out[i] = ScoreReport(config_, samples[i].sample_id, pending[i].task, *report);
    }
  }
  return out;
}

}  // namespace lightrl::reward::code
