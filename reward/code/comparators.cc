#include "reward/code/comparators.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <vector>

#include "core/check.h"

namespace lightrl::reward::code {
namespace {

// Python's str.strip()/split() whitespace, restricted to ASCII.
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' ||
         c == '\x1c' || c == '\x1d' || c == '\x1e' || c == '\x1f';
}

std::string_view Strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::vector<std::string_view> SplitWs(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !IsSpace(s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string_view> SplitLines(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t nl = s.find('\n', start);
    if (nl == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
}

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// A Python Decimal in canonical form: value = (-1)^neg * digits * 10^exp, digits without
// leading or trailing zeros ("" for zero), or an infinity, or NaN.
struct Dec {
  enum Kind { kFinite, kInf, kNaN } kind = kFinite;
  bool neg = false;
  std::string digits;
  long long exp = 0;
};

// Python's Decimal(str) grammar (ASCII): [sign] (digits [. [digits]] | . digits) [e [sign] digits]
// | [sign] (Inf | Infinity) | [sign] (NaN | sNaN) [digits]; '_' allowed between digits
// (PEP 515); surrounding whitespace is stripped.
std::optional<Dec> ParseDecimal(std::string_view tok) {
  tok = Strip(tok);
  Dec d;
  size_t i = 0;
  if (i < tok.size() && (tok[i] == '+' || tok[i] == '-')) {
    d.neg = tok[i] == '-';
    ++i;
  }
  std::string_view rest = tok.substr(i);
  if (IEquals(rest, "inf") || IEquals(rest, "infinity")) {
    d.kind = Dec::kInf;
    return d;
  }
  auto all_digits = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (rest.size() >= 3 && IEquals(rest.substr(0, 3), "nan") && all_digits(rest.substr(3))) {
    d.kind = Dec::kNaN;
    return d;
  }
  if (rest.size() >= 4 && IEquals(rest.substr(0, 4), "snan") && all_digits(rest.substr(4))) {
    d.kind = Dec::kNaN;
    return d;
  }
  // Digits with single underscores between digits.
  auto read_digits = [&](std::string* out) -> bool {
    bool any = false;
    bool last_digit = false;
    while (i < tok.size()) {
      char c = tok[i];
      if (c >= '0' && c <= '9') {
        out->push_back(c);
        any = last_digit = true;
        ++i;
      } else if (c == '_' && last_digit && i + 1 < tok.size() && tok[i + 1] >= '0' && tok[i + 1] <= '9') {
        last_digit = false;
        ++i;
      } else {
        break;
      }
    }
    return any;
  };
  std::string int_part, frac_part;
  bool has_int = read_digits(&int_part);
  bool has_frac = false;
  if (i < tok.size() && tok[i] == '.') {
    ++i;
    has_frac = read_digits(&frac_part);
  }
  if (!has_int && !has_frac) return std::nullopt;
  long long exp = 0;
  if (i < tok.size() && (tok[i] == 'e' || tok[i] == 'E')) {
    ++i;
    bool eneg = false;
    if (i < tok.size() && (tok[i] == '+' || tok[i] == '-')) {
      eneg = tok[i] == '-';
      ++i;
    }
    std::string edigits;
    if (!read_digits(&edigits)) return std::nullopt;
    size_t nz = edigits.find_first_not_of('0');
    edigits = nz == std::string::npos ? "0" : edigits.substr(nz);
    if (edigits.size() > 17) return std::nullopt;  // beyond what we represent exactly
    exp = std::stoll(edigits);
    if (eneg) exp = -exp;
  }
  if (i != tok.size()) return std::nullopt;
  std::string digits = int_part + frac_part;
  exp -= static_cast<long long>(frac_part.size());
  size_t nz = digits.find_first_not_of('0');
  if (nz == std::string::npos) {
    d.digits.clear();  // zero: sign and exponent do not matter for equality
    d.neg = false;
    d.exp = 0;
    return d;
  }
  digits = digits.substr(nz);
  size_t last = digits.find_last_not_of('0');
  exp += static_cast<long long>(digits.size() - 1 - last);
  digits.resize(last + 1);
  d.digits = digits;
  d.exp = exp;
  return d;
}

bool DecEqual(const Dec& a, const Dec& b) {
  if (a.kind == Dec::kNaN || b.kind == Dec::kNaN) return false;
  if (a.kind != b.kind) return false;
  if (a.kind == Dec::kInf) return a.neg == b.neg;
  return a.neg == b.neg && a.digits == b.digits && a.exp == b.exp;
}

// Lower-cased ASCII copy.
std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsInteger(std::string_view s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

// Canonical text of an integer token: sign + digits without leading zeros ("-0" -> "0").
std::string CanonicalInt(std::string_view s) {
  bool neg = s[0] == '-';
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  while (i + 1 < s.size() && s[i] == '0') ++i;
  std::string digits(s.substr(i));
  if (digits == "0") neg = false;
  return (neg ? "-" : "") + digits;
}

std::optional<double> ParseFinite(const std::string& s) {
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  // strtod accepts hex floats ("0x1p3"); competitive-programming outputs never mean those.
  if (s.find('x') != std::string::npos || s.find('X') != std::string::npos) return std::nullopt;
  return v;
}

bool Close(double a, double b, const ComparatorSpec& spec) {
  double diff = std::fabs(a - b);
  if (diff <= spec.abs_tol) return true;
  return diff <= spec.rel_tol * std::max(std::fabs(a), std::fabs(b));
}

bool TokensMatch(const ComparatorSpec& spec, std::string_view out, std::string_view exp) {
  auto a = SplitWs(out);
  auto b = SplitWs(exp);
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string x = Lower(a[i]), y = Lower(b[i]);
    if (x == y) continue;
    if (IsInteger(x) && IsInteger(y)) {
      if (CanonicalInt(x) == CanonicalInt(y)) continue;
      return false;
    }
    auto fx = ParseFinite(x), fy = ParseFinite(y);
    if (fx && fy && Close(*fx, *fy, spec)) continue;
    return false;
  }
  return true;
}

bool LinesMatch(std::string_view out, std::string_view exp) {
  auto a = SplitLines(Strip(out));
  auto b = SplitLines(Strip(exp));
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string_view x = Strip(a[i]), y = Strip(b[i]);
    if (x == y) continue;
    auto tx = SplitWs(x), ty = SplitWs(y);
    std::vector<Dec> dx, dy;
    for (auto t : tx) {
      auto d = ParseDecimal(t);
      if (!d) return false;
      dx.push_back(*d);
    }
    for (auto t : ty) {
      auto d = ParseDecimal(t);
      if (!d) return false;
      dy.push_back(*d);
    }
    if (dx.size() != dy.size()) return false;
    for (size_t k = 0; k < dx.size(); ++k) {
      if (!DecEqual(dx[k], dy[k])) return false;
    }
  }
  return true;
}

std::string_view RstripNewlines(std::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

}  // namespace

StatusOr<ComparatorKind> ParseComparatorKind(const std::string& name) {
  if (name == "exact") return ComparatorKind::kExact;
  if (name == "lines") return ComparatorKind::kLines;
  if (name == "tokens") return ComparatorKind::kTokens;
  return InvalidArgument(StrCat("unknown comparator '", name, "'; expected one of exact, lines, tokens"));
}

const char* ComparatorName(ComparatorKind kind) {
  switch (kind) {
    case ComparatorKind::kExact: return "exact";
    case ComparatorKind::kLines: return "lines";
    case ComparatorKind::kTokens: return "tokens";
  }
  return "?";
}

bool DecimalTokensEqual(std::string_view a, std::string_view b) {
  auto x = ParseDecimal(a), y = ParseDecimal(b);
  return x && y && DecEqual(*x, *y);
}

bool OutputsMatch(const ComparatorSpec& spec, std::string_view output, std::string_view expected) {
  switch (spec.kind) {
    case ComparatorKind::kExact: return RstripNewlines(output) == RstripNewlines(expected);
    case ComparatorKind::kLines: return LinesMatch(output, expected);
    case ComparatorKind::kTokens: return TokensMatch(spec, output, expected);
  }
  return false;
}

bool JsonValuesMatch(const nlohmann::json& got, const nlohmann::json& expected,
                     const ComparatorSpec& spec, bool tolerant) {
  using J = nlohmann::json;
  if (got.is_number() && expected.is_number()) {
    if (got.is_number_float() || expected.is_number_float()) {
      double a = got.get<double>(), b = expected.get<double>();
      if (!std::isfinite(a) || !std::isfinite(b)) return false;
      return tolerant ? Close(a, b, spec) : a == b;
    }
    // Both integers (signed or unsigned storage).
    if (got.is_number_unsigned() && expected.is_number_unsigned()) {
      return got.get<uint64_t>() == expected.get<uint64_t>();
    }
    if (got.is_number_unsigned() || expected.is_number_unsigned()) {
      const J& u = got.is_number_unsigned() ? got : expected;
      const J& s = got.is_number_unsigned() ? expected : got;
      int64_t sv = s.get<int64_t>();
      return sv >= 0 && static_cast<uint64_t>(sv) == u.get<uint64_t>();
    }
    return got.get<int64_t>() == expected.get<int64_t>();
  }
  if (got.type() != expected.type()) return false;
  switch (got.type()) {
    case J::value_t::null: return true;
    case J::value_t::boolean: return got.get<bool>() == expected.get<bool>();
    case J::value_t::string: return got.get_ref<const std::string&>() == expected.get_ref<const std::string&>();
    case J::value_t::array: {
      if (got.size() != expected.size()) return false;
      for (size_t i = 0; i < got.size(); ++i) {
        if (!JsonValuesMatch(got[i], expected[i], spec, tolerant)) return false;
      }
      return true;
    }
    case J::value_t::object: {
      if (got.size() != expected.size()) return false;
      for (auto it = expected.begin(); it != expected.end(); ++it) {
        auto g = got.find(it.key());
        if (g == got.end() || !JsonValuesMatch(*g, it.value(), spec, tolerant)) return false;
      }
      return true;
    }
    default: return false;
  }
}

}  // namespace lightrl::reward::code
