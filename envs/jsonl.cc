#include "envs/jsonl.h"

#include <fstream>

#include "core/check.h"

namespace lightrl::envs {
namespace {

Status FieldError(const std::string& where, const std::string& field, const std::string& what) {
  return InvalidArgument(StrCat(where, ": field '", field, "': ", what));
}

StatusOr<std::string> GetString(const nlohmann::json& j, const std::string& field, const std::string& where) {
  if (!j.contains(field)) return FieldError(where, field, "missing");
  if (!j[field].is_string()) return FieldError(where, field, StrCat("expected a string, got ", j[field].type_name()));
  std::string s = j[field].get<std::string>();
  if (s.empty()) return FieldError(where, field, "expected a non-empty string");
  return s;
}

}  // namespace

bool IsJsonlKind(const std::string& kind) { return kind == "gsm8k" || kind == "math" || kind == "code"; }

std::string Gsm8kFinalAnswer(const std::string& solution) {
  size_t pos = solution.rfind("####");
  if (pos == std::string::npos) return "";
  std::string rest = solution.substr(pos + 4);
  std::string out;
  size_t i = 0;
  while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t' || rest[i] == '$')) ++i;
  for (; i < rest.size(); ++i) {
    char c = rest[i];
    if (c == ',') continue;
    if ((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '/') out.push_back(c);
    else break;
  }
  // The rest of the line must be empty: "#### 72 apples" is not a clean reference.
  for (; i < rest.size() && rest[i] != '\n'; ++i) {
    if (rest[i] != ' ' && rest[i] != '\t' && rest[i] != '\r') return "";
  }
  bool digit = false;
  for (char c : out) digit |= (c >= '0' && c <= '9');
  return digit ? out : "";
}

StatusOr<JsonlRecord> ParseJsonlRecord(const std::string& kind, const nlohmann::json& j, int64_t line_no,
                                       const std::string& where) {
  if (!j.is_object()) return InvalidArgument(StrCat(where, ": expected a JSON object, got ", j.type_name()));
  JsonlRecord rec;
  rec.id = std::to_string(line_no);
  for (const char* f : {"id", "task_id"}) {
    if (j.contains(f)) {
      if (j[f].is_string()) rec.id = j[f].get<std::string>();
      else if (j[f].is_number_integer()) rec.id = std::to_string(j[f].get<int64_t>());
      else return FieldError(where, f, "expected a string or an integer");
      break;
    }
  }
  if (kind == "gsm8k") {
    LR_ASSIGN_OR_RETURN(rec.prompt, GetString(j, "question", where));
    LR_ASSIGN_OR_RETURN(std::string sol, GetString(j, "answer", where));
    std::string ans = Gsm8kFinalAnswer(sol);
    if (ans.empty()) return FieldError(where, "answer", "expected a GSM8K solution ending in '#### <number>'");
    rec.verifier = "math";
    rec.reference = {{"answer", ans}};
    rec.key = rec.prompt;
  } else if (kind == "math") {
    LR_ASSIGN_OR_RETURN(rec.prompt, GetString(j, "problem", where));
    rec.verifier = "math";
    if (j.contains("answer")) {
      LR_ASSIGN_OR_RETURN(std::string a, GetString(j, "answer", where));
      rec.reference = {{"answer", a}};
    } else {
      LR_ASSIGN_OR_RETURN(std::string sol, GetString(j, "solution", where));
      if (sol.find("\\boxed") == std::string::npos && sol.find("\\fbox") == std::string::npos) {
        return FieldError(where, "solution", "expected a solution containing \\boxed{...} (or give an 'answer' field)");
      }
      rec.reference = {{"solution", sol}};
    }
    rec.key = rec.prompt;
  } else if (kind == "code") {
    LR_ASSIGN_OR_RETURN(rec.prompt, GetString(j, "prompt", where));
    if (!j.contains("tests")) return FieldError(where, "tests", "missing");
    const auto& tests = j["tests"];
    if (!tests.is_array() || tests.empty()) return FieldError(where, "tests", "expected a non-empty array");
    bool call = j.contains("fn_name") && !j["fn_name"].is_null();
    if (call && !j["fn_name"].is_string()) return FieldError(where, "fn_name", "expected a string");
    for (size_t i = 0; i < tests.size(); ++i) {
      std::string f = StrCat("tests[", i, "]");
      const auto& t = tests[i];
      if (!t.is_object()) return FieldError(where, f, "expected an object");
      if (call) {
        if (!t.contains("args") || !t["args"].is_array()) return FieldError(where, f + ".args", "expected an array (fn_name is set)");
        if (!t.contains("expected")) return FieldError(where, f + ".expected", "missing");
      } else {
        if (!t.contains("input") || !t["input"].is_string()) return FieldError(where, f + ".input", "expected a string (stdin)");
        if (!t.contains("output") || !t["output"].is_string()) return FieldError(where, f + ".output", "expected a string (stdout)");
      }
    }
    if (j.contains("language") && !j["language"].is_string()) return FieldError(where, "language", "expected a string");
    rec.verifier = "code";
    rec.reference = j;
    rec.reference.erase("prompt");
    rec.reference.erase("id");
    rec.reference.erase("task_id");
    rec.key = rec.prompt;
  } else {
    return InvalidArgument(StrCat(where, ": unknown JSONL kind '", kind, "' (expected gsm8k, math, code)"));
  }
  return rec;
}

StatusOr<std::vector<JsonlRecord>> LoadJsonl(const std::string& kind, const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound(StrCat(path, ": cannot open"));
  std::vector<JsonlRecord> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::string where = StrCat(path, ":", n);
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return InvalidArgument(StrCat(where, ": not valid JSON"));
    LR_ASSIGN_OR_RETURN(JsonlRecord rec, ParseJsonlRecord(kind, j, n, where));
    out.push_back(std::move(rec));
  }
  if (in.bad()) return DataLoss(StrCat(path, ": read error"));
  if (out.empty()) return InvalidArgument(StrCat(path, ": no records"));
  return out;
}

}  // namespace lightrl::envs
