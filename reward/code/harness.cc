#include "reward/code/harness.h"

#include <cctype>
#include <set>

#include "core/check.h"

namespace lightrl::reward::code {
namespace {

// A small preamble of the names LeetCode-style solutions use without importing them
// (LiveCodeBench prepends a much larger star-import block; this keeps interpreter start-up cheap).
const char* kPythonHarness = R"PY(import sys, os, json, types


def _lightrl_main():
    sol_path, fn_name = sys.argv[1], sys.argv[2]
    data = sys.stdin.read()
    args = [json.loads(line) for line in data.split("\n") if line.strip()]
    sys.stdin = open(os.devnull)
    write, dumps = os.write, json.dumps
    with open(sol_path, encoding="utf-8") as f:
        src = f.read()
    mod = types.ModuleType("solution")
    mod.__file__ = sol_path
    sys.modules["solution"] = mod
    exec("from typing import *\nimport collections, heapq, bisect, math, itertools, functools, re, string\n",
         mod.__dict__)
    exec(compile(src, sol_path, "exec"), mod.__dict__)
    ns = mod.__dict__
    target = None
    cls = ns.get("Solution")
    if isinstance(cls, type) and hasattr(cls, fn_name):
        target = getattr(cls(), fn_name)
    elif callable(ns.get(fn_name)):
        target = ns[fn_name]
    if target is None:
        sys.stderr.write("lightrl harness: function %r not found\n" % fn_name)
        sys.stderr.flush()
        os._exit(2)
    result = target(*args)
    try:
        line = "R " + dumps(result)
    except (TypeError, ValueError, RecursionError):
        line = "U " + type(result).__name__
    payload = (line.replace("\n", " ") + "\n").encode("utf-8", "replace")
    while payload:
        n = write(3, payload)
        payload = payload[n:]


_lightrl_main()
)PY";

// Compiled before the model's code: JSON decoding of arguments and encoding of the result.
const char* kCppPrefix = R"CPP(#include <bits/stdc++.h>
#include <unistd.h>

namespace lightrl_h {
struct J {
  enum Kind { kNull, kBool, kNum, kStr, kArr } kind = kNull;
  bool b = false;
  std::string text;
  std::vector<J> items;
};
[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "lightrl harness: bad argument (%s)\n", what);
  std::_Exit(3);
}
struct Parser {
  const std::string& s;
  size_t i = 0;
  explicit Parser(const std::string& src) : s(src) {}
  void Ws() { while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i; }
  static void Utf8(unsigned cp, std::string& out) {
    if (cp < 0x80) { out += static_cast<char>(cp); }
    else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { out += static_cast<char>(0xE0 | (cp >> 12)); out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
    else { out += static_cast<char>(0xF0 | (cp >> 18)); out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)); out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
  }
  unsigned Hex4() {
    if (i + 4 > s.size()) Fail("\\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else Fail("\\u escape");
    }
    return v;
  }
  std::string Str() {
    ++i;
    std::string out;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c != '\\') { out += c; continue; }
      if (i >= s.size()) Fail("string");
      char e = s[i++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case '/': out += '/'; break;
        case '\\': out += '\\'; break;
        case '"': out += '"'; break;
        case 'u': {
          unsigned cp = Hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            unsigned lo = Hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          Utf8(cp, out);
          break;
        }
        default: Fail("string escape");
      }
    }
    if (i >= s.size()) Fail("unterminated string");
    ++i;
    return out;
  }
  J Value() {
    Ws();
    if (i >= s.size()) Fail("missing value");
    J j;
    char c = s[i];
    if (c == '[') {
      ++i;
      j.kind = J::kArr;
      Ws();
      if (i < s.size() && s[i] == ']') { ++i; return j; }
      while (true) {
        j.items.push_back(Value());
        Ws();
        if (i < s.size() && s[i] == ',') { ++i; continue; }
        if (i < s.size() && s[i] == ']') { ++i; return j; }
        Fail("array");
      }
    }
    if (c == '"') { j.kind = J::kStr; j.text = Str(); return j; }
    if (s.compare(i, 4, "true") == 0) { i += 4; j.kind = J::kBool; j.b = true; return j; }
    if (s.compare(i, 5, "false") == 0) { i += 5; j.kind = J::kBool; return j; }
    if (s.compare(i, 4, "null") == 0) { i += 4; return j; }
    size_t st = i;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '-' || s[i] == '+' ||
                            s[i] == '.' || s[i] == 'e' || s[i] == 'E')) ++i;
    if (st == i) Fail("value (objects are not supported)");
    j.kind = J::kNum;
    j.text = s.substr(st, i - st);
    return j;
  }
};
inline J ParseLine(const std::string& line) {
  Parser p(line);
  J j = p.Value();
  p.Ws();
  if (p.i != line.size()) Fail("trailing characters");
  return j;
}
template <class T>
typename std::enable_if<std::is_integral<T>::value && !std::is_same<T, bool>::value && !std::is_same<T, char>::value>::type
Dec(const J& j, T& out) {
  if (j.kind != J::kNum) Fail("expected an integer");
  errno = 0;
  char* end = nullptr;
  if (std::is_signed<T>::value) {
    long long v = std::strtoll(j.text.c_str(), &end, 10);
    if (errno || *end) Fail("expected an integer");
    out = static_cast<T>(v);
  } else {
    unsigned long long v = std::strtoull(j.text.c_str(), &end, 10);
    if (errno || *end) Fail("expected an unsigned integer");
    out = static_cast<T>(v);
  }
}
template <class T>
typename std::enable_if<std::is_floating_point<T>::value>::type Dec(const J& j, T& out) {
  if (j.kind != J::kNum) Fail("expected a number");
  char* end = nullptr;
  out = static_cast<T>(std::strtod(j.text.c_str(), &end));
  if (*end) Fail("expected a number");
}
inline void Dec(const J& j, bool& out) { if (j.kind != J::kBool) Fail("expected a bool"); out = j.b; }
inline void Dec(const J& j, char& out) {
  if (j.kind != J::kStr || j.text.size() != 1) Fail("expected a 1-character string");
  out = j.text[0];
}
inline void Dec(const J& j, std::string& out) { if (j.kind != J::kStr) Fail("expected a string"); out = j.text; }
template <class T>
void Dec(const J& j, std::vector<T>& out) {
  if (j.kind != J::kArr) Fail("expected an array");
  out.clear();
  for (const J& item : j.items) { T v{}; Dec(item, v); out.push_back(v); }
}
template <class T>
T Decode(const std::string& line) { T v{}; Dec(ParseLine(line), v); return v; }

inline void Enc(std::string& o, bool v) { o += v ? "true" : "false"; }
inline void EncStr(std::string& o, const std::string& s) {
  o += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) { char b[8]; std::snprintf(b, sizeof(b), "\\u%04x", c); o += b; }
        else o += static_cast<char>(c);
    }
  }
  o += '"';
}
inline void Enc(std::string& o, char c) { EncStr(o, std::string(1, c)); }
inline void Enc(std::string& o, const std::string& s) { EncStr(o, s); }
inline void Enc(std::string& o, const char* s) { EncStr(o, s); }
template <class T>
typename std::enable_if<std::is_integral<T>::value && !std::is_same<T, bool>::value && !std::is_same<T, char>::value>::type
Enc(std::string& o, T v) { o += std::to_string(v); }
template <class T>
typename std::enable_if<std::is_floating_point<T>::value>::type Enc(std::string& o, T v) {
  if (!std::isfinite(static_cast<double>(v))) { o += "null"; return; }
  char b[40];
  std::snprintf(b, sizeof(b), "%.17g", static_cast<double>(v));
  o += b;
}
template <class A, class B>
void Enc(std::string& o, const std::pair<A, B>& p);
template <class T>
void Enc(std::string& o, const std::vector<T>& v) {
  o += '[';
  bool first = true;
  for (const auto& x : v) { if (!first) o += ','; first = false; T y = x; Enc(o, y); }
  o += ']';
}
template <class A, class B>
void Enc(std::string& o, const std::pair<A, B>& p) { o += '['; Enc(o, p.first); o += ','; Enc(o, p.second); o += ']'; }

inline std::vector<std::string> ReadArgLines() {
  std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  size_t st = 0;
  while (st <= all.size()) {
    size_t nl = all.find('\n', st);
    if (nl == std::string::npos) nl = all.size();
    std::string line = all.substr(st, nl - st);
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
    st = nl + 1;
  }
  return lines;
}
inline void Emit(const std::string& s) {
  const char* p = s.data();
  size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(3, p, left);
    if (n <= 0) std::_Exit(4);
    p += n;
    left -= static_cast<size_t>(n);
  }
}
}  // namespace lightrl_h

struct Solution;
using namespace std;
#define main lightrl_user_main_
)CPP";

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

bool ValidIdentifier(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

}  // namespace

const std::string& PythonCallHarness() {
  static const std::string kText = kPythonHarness;
  return kText;
}

StatusOr<std::string> CanonicalCppType(const std::string& raw) {
  std::string t = Trim(raw);
  // Collapse internal whitespace runs to one space, and drop spaces around < and >.
  std::string c;
  for (char ch : t) {
    if (ch == ' ' || ch == '\t') {
      if (!c.empty() && c.back() != ' ') c += ' ';
    } else {
      c += ch;
    }
  }
  std::string u;
  for (size_t i = 0; i < c.size(); ++i) {
    if (c[i] == ' ' && ((i > 0 && (c[i - 1] == '<' || c[i - 1] == '>')) ||
                        (i + 1 < c.size() && (c[i + 1] == '<' || c[i + 1] == '>')))) {
      continue;
    }
    u += c[i];
  }
  if (u.rfind("std::", 0) == 0) u = u.substr(5);
  if (u.rfind("vector<", 0) == 0 && u.size() > 8 && u.back() == '>') {
    auto inner = CanonicalCppType(u.substr(7, u.size() - 8));
    if (!inner.ok()) return InvalidArgument(StrCat("unsupported C++ argument type '", raw, "'"));
    return "std::vector<" + *inner + ">";
  }
  static const std::set<std::string> kScalars = {"int", "long", "long long", "int64_t", "unsigned",
                                                 "unsigned int", "unsigned long", "unsigned long long",
                                                 "size_t", "uint64_t", "double", "float", "bool", "char"};
  if (kScalars.count(u)) return u;
  if (u == "string") return std::string("std::string");
  return InvalidArgument(StrCat("unsupported C++ argument type '", raw,
                                "'; expected int, long, long long, int64_t, unsigned, size_t, "
                                "uint64_t, double, float, bool, char, string or vector<...> of those"));
}

StatusOr<std::string> BuildCppCallProgram(const std::string& model_code, const std::string& fn_name,
                                          const std::vector<std::string>& arg_types) {
  if (!ValidIdentifier(fn_name)) return InvalidArgument(StrCat("fn_name '", fn_name, "' is not a C++ identifier"));
  std::vector<std::string> types;
  for (const auto& t : arg_types) {
    LR_ASSIGN_OR_RETURN(std::string canon, CanonicalCppType(t));
    types.push_back(canon);
  }
  std::string src = kCppPrefix;
  src += "#line 1 \"solution.cpp\"\n";
  src += model_code;
  src += "\n#undef main\n#line 1 \"lightrl_harness.cpp\"\n";
  // Call dispatch: Solution().fn(...) when that is well-formed, else the free function.
  src += "namespace lightrl_call {\n";
  src += "template <class S, class... A>\nauto Call(int, A&... a) -> decltype(std::declval<S&>()." + fn_name +
         "(a...)) { S s; return s." + fn_name + "(a...); }\n";
  src += "template <class S, class... A>\nauto Call(long, A&... a) -> decltype(" + fn_name + "(a...)) { return " +
         fn_name + "(a...); }\n";
  src += "}  // namespace lightrl_call\n";
  src += "signed main() {\n  std::ios::sync_with_stdio(true);\n";
  src += "  std::vector<std::string> lr_lines = lightrl_h::ReadArgLines();\n";
  src += StrCat("  if (lr_lines.size() != ", types.size(), "u) lightrl_h::Fail(\"wrong number of argument lines\");\n");
  std::string call_args;
  for (size_t i = 0; i < types.size(); ++i) {
    src += StrCat("  auto lr_a", i, " = lightrl_h::Decode<", types[i], ">(lr_lines[", i, "]);\n");
    call_args += StrCat(i ? ", " : "", "lr_a", i);
  }
  src += "  auto lr_result = lightrl_call::Call<::Solution>(0" + std::string(types.empty() ? "" : ", ") +
         call_args + ");\n";
  src += "  std::string lr_out = \"R \";\n  lightrl_h::Enc(lr_out, lr_result);\n  lr_out += '\\n';\n";
  src += "  std::fflush(stdout);\n  std::cout.flush();\n  lightrl_h::Emit(lr_out);\n  return 0;\n}\n";
  return src;
}

}  // namespace lightrl::reward::code
