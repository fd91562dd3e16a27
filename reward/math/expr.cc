#include "reward/math/expr.h"

#include <gmpxx.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <vector>

#include "reward/text_util.h"

namespace lightrl::reward::math {
namespace {

constexpr int kMaxDepth = 400;          // parser recursion (~7 frames per nesting level)
constexpr size_t kMaxTokens = 4000;     // longer answers are not parsed
constexpr size_t kMaxPolyTerms = 128;   // expansion guard
constexpr size_t kMaxBits = 1 << 16;    // size guard for exact rationals (bits)
constexpr long kMaxExponent = 4096;     // |n| in x^n evaluated exactly
constexpr long kMaxFactorial = 3000;
constexpr int kMaxDecimalExponent = 4096;

struct ParseError {
  std::string what;
};
[[noreturn]] void Fail(const std::string& w) { throw ParseError{w}; }

size_t Bits(const mpq_class& q) {
  return mpz_sizeinbase(q.get_num_mpz_t(), 2) + mpz_sizeinbase(q.get_den_mpz_t(), 2);
}

// ---- polynomials over Q in named atoms ---------------------------------------------------
using Monomial = std::map<std::string, long>;  // atom -> non-zero exponent
struct Poly {
  std::map<Monomial, mpq_class> terms;  // no zero coefficients
  static Poly Const(const mpq_class& q) {
    Poly p;
    if (q != 0) p.terms[{}] = q;
    return p;
  }
  static Poly Atom(const std::string& a) {
    Poly p;
    p.terms[Monomial{{a, 1}}] = 1;
    return p;
  }
  bool IsRational() const { return terms.empty() || (terms.size() == 1 && terms.begin()->first.empty()); }
  mpq_class Rational() const { return terms.empty() ? mpq_class(0) : terms.begin()->second; }
  bool operator==(const Poly& o) const { return terms == o.terms; }
  // The single atom with exponent 1 and coefficient 1, or "".
  std::string SoleAtom() const {
    if (terms.size() != 1) return "";
    const auto& [m, c] = *terms.begin();
    if (c != 1 || m.size() != 1 || m.begin()->second != 1) return "";
    return m.begin()->first;
  }
};

std::string QStr(const mpq_class& q) { return q.get_str(); }

std::string PolyStr(const Poly& p) {
  if (p.terms.empty()) return "0";
  std::string s;
  for (const auto& [m, c] : p.terms) {
    std::string t = QStr(c);
    for (const auto& [a, e] : m) t += "*" + a + (e == 1 ? "" : "^" + std::to_string(e));
    s += (s.empty() ? "" : " + ") + t;
  }
  return s;
}

void AddInto(Poly* acc, const Poly& b, const mpq_class& scale) {
  for (const auto& [m, c] : b.terms) {
    mpq_class v = acc->terms.count(m) ? mpq_class(acc->terms[m] + c * scale) : mpq_class(c * scale);
    if (v == 0) acc->terms.erase(m);
    else acc->terms[m] = v;
    if (Bits(v) > kMaxBits) Fail("number too large");
  }
  if (acc->terms.size() > kMaxPolyTerms) Fail("expression too large");
}

Poly Add(const Poly& a, const Poly& b) { Poly r = a; AddInto(&r, b, 1); return r; }
Poly Sub(const Poly& a, const Poly& b) { Poly r = a; AddInto(&r, b, -1); return r; }
Poly Scale(const Poly& a, const mpq_class& s) { Poly r; AddInto(&r, a, s); return r; }

Poly Mul(const Poly& a, const Poly& b) {
  if (a.terms.size() * b.terms.size() > kMaxPolyTerms * 4) Fail("expression too large");
  Poly r;
  for (const auto& [ma, ca] : a.terms) {
    for (const auto& [mb, cb] : b.terms) {
      Monomial m = ma;
      for (const auto& [atom, e] : mb) {
        long v = (m.count(atom) ? m[atom] : 0) + e;
        if (v == 0) m.erase(atom); else m[atom] = v;
      }
      Poly t;
      t.terms[m] = ca * cb;
      AddInto(&r, t, 1);
    }
  }
  return r;
}

Poly Inverse(const Poly& a) {
  if (a.terms.empty()) Fail("division by zero");
  if (a.terms.size() == 1) {
    const auto& [m, c] = *a.terms.begin();
    Monomial inv;
    for (const auto& [atom, e] : m) inv[atom] = -e;
    Poly r;
    r.terms[inv] = 1 / c;
    return r;
  }
  Poly r;
  r.terms[Monomial{{"(" + PolyStr(a) + ")", -1}}] = 1;
  return r;
}

Poly IntPow(const Poly& base, long n) {
  if (n == 0) return Poly::Const(1);
  if (base.IsRational()) {
    mpq_class b = base.Rational();
    if (b == 0) { if (n < 0) Fail("division by zero"); return Poly::Const(0); }
    if (b == 1) return Poly::Const(1);
    if (b == -1) return Poly::Const(n % 2 ? -1 : 1);
    if (static_cast<size_t>(std::labs(n)) * Bits(b) > kMaxBits) Fail("power too large");
    mpz_class num, den;
    mpz_pow_ui(num.get_mpz_t(), b.get_num_mpz_t(), static_cast<unsigned long>(std::labs(n)));
    mpz_pow_ui(den.get_mpz_t(), b.get_den_mpz_t(), static_cast<unsigned long>(std::labs(n)));
    mpq_class r(num, den);
    r.canonicalize();
    return Poly::Const(n > 0 ? r : 1 / r);
  }
  if (base.terms.size() == 1) {
    const auto& [m, c] = *base.terms.begin();
    Poly cp = IntPow(Poly::Const(c), n);
    Monomial mm;
    for (const auto& [a, e] : m) mm[a] = e * n;
    Poly r;
    r.terms[mm] = cp.Rational();
    return r;
  }
  if (n < 0) return Inverse(IntPow(base, -n));
  if (n > 16) Fail("power too large");
  Poly r = Poly::Const(1);
  for (long i = 0; i < n; ++i) r = Mul(r, base);
  return r;
}

// sqrt of a non-negative rational: k * sqrt(m) with m square-free up to trial division.
Poly SqrtRational(const mpq_class& q) {
  if (q < 0) return Poly::Atom("sqrt(" + QStr(q) + ")");
  mpz_class n = q.get_num() * q.get_den();  // sqrt(a/b) = sqrt(a*b)/b
  mpz_class outside = 1, inside = n;
  if (mpz_perfect_square_p(inside.get_mpz_t())) {
    mpz_class r;
    mpz_sqrt(r.get_mpz_t(), inside.get_mpz_t());
    outside = r;
    inside = 1;
  } else {
    for (unsigned long p = 2; p < 2000; ++p) {
      mpz_class sq = p * p;
      if (sq > inside) break;
      while (mpz_divisible_p(inside.get_mpz_t(), sq.get_mpz_t())) {
        inside /= sq;
        outside *= p;
      }
    }
  }
  mpq_class coef(outside, q.get_den());
  coef.canonicalize();
  if (inside == 1) return Poly::Const(coef);
  Poly r;
  r.terms[Monomial{{"sqrt(" + inside.get_str() + ")", 1}}] = coef;
  return r;
}

// ---- answer nodes --------------------------------------------------------------------------
enum class Kind { kValue, kList, kBracket, kSet, kRelation, kRatio, kMatrix, kUnion };

struct Node {
  Kind kind = Kind::kValue;
  Poly value;
  bool plain = false;          // a number literal: integer, decimal, fraction, sci notation
  bool float_literal = false;  // written with a decimal point
  char open = 0, close = 0;    // kBracket
  std::vector<Node> items;     // list/bracket/set/relation operands/ratio/union
  std::vector<std::string> ops;  // kRelation: "=", "<", "<=", ">", ">=", "!=", "in"
  std::vector<std::vector<Node>> rows;  // kMatrix
};

Node ValueNode(Poly p) {
  Node n;
  n.value = std::move(p);
  return n;
}

std::string Describe(const Node& n) {
  auto join = [](const std::vector<Node>& v, const char* sep) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + Describe(v[i]);
    return s;
  };
  switch (n.kind) {
    case Kind::kValue: return PolyStr(n.value);
    case Kind::kList: return "[list " + join(n.items, ", ") + "]";
    case Kind::kBracket: return std::string(1, n.open) + join(n.items, ", ") + std::string(1, n.close);
    case Kind::kSet: return "{" + join(n.items, ", ") + "}";
    case Kind::kUnion: return join(n.items, " U ");
    case Kind::kRatio: return join(n.items, " : ");
    case Kind::kRelation: {
      std::string s = Describe(n.items[0]);
      for (size_t i = 0; i < n.ops.size(); ++i) s += " " + n.ops[i] + " " + Describe(n.items[i + 1]);
      return s;
    }
    case Kind::kMatrix: {
      std::string s = "matrix[";
      for (const auto& r : n.rows) s += "[" + join(r, ", ") + "]";
      return s + "]";
    }
  }
  return "?";
}

// ---- normalisation -------------------------------------------------------------------------
void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  size_t p = 0;
  while ((p = s->find(from, p)) != std::string::npos) {
    s->replace(p, from.size(), to);
    p += to.size();
  }
}

bool IsLetter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Reviewed unit list: stripped only at the very end, after a digit, '}' or a space.
const std::vector<std::string>& Units() {
  static const std::vector<std::string> k = {
      "square units", "sq units", "cubic units", "units", "unit", "square feet", "square meters", "square inches",
      "square centimeters", "cubic feet", "cubic meters", "cubic centimeters", "meters", "metres", "meter",
      "centimeters", "centimetres", "cm", "millimeters", "mm", "kilometers", "km", "miles", "mile", "feet", "foot",
      "ft", "inches", "inch", "yards", "yard", "mph", "km/h", "m/s", "kg", "grams", "gram", "pounds", "pound",
      "lbs", "ounces", "oz", "liters", "litres", "liter", "ml", "gallons", "gallon", "seconds", "second", "sec",
      "minutes", "minute", "min", "hours", "hour", "hrs", "days", "day", "weeks", "week", "months", "month",
      "years", "year", "dollars", "dollar", "cents", "cent", "degrees", "degree", "radians", "cm^2", "m^2", "km^2",
      "cm^3", "m^3", "m²", "cm²", "km²", "m³", "cm³", "people", "students", "percent", "percentage", "pct",
      "m", "s", "g"};
  return k;
}

std::string StripTrailingUnit(std::string s) {
  for (int round = 0; round < 3; ++round) {
    std::string t = Trim(s);
    bool changed = false;
    // \text{ unit } at the end
    if (t.size() > 6 && t.back() == '}') {
      size_t p = t.rfind("\\text{");
      if (p != std::string::npos && p > 0) {
        std::string inner = ToLower(Trim(t.substr(p + 6, t.size() - p - 7)));
        for (const auto& u : Units()) {
          if (inner == u) { t = Trim(t.substr(0, p)); changed = true; break; }
        }
      }
    }
    std::string low = ToLower(t);
    for (const auto& u : Units()) {
      if (low.size() > u.size() && low.compare(low.size() - u.size(), u.size(), u) == 0) {
        char before = t[t.size() - u.size() - 1];
        if (IsDigit(before) || before == ' ' || before == '}') {
          // a bare single-letter unit only right after a digit ("5 m", "5m"); never "x m"
          std::string head = Trim(t.substr(0, t.size() - u.size()));
          if (!head.empty() && (IsDigit(head.back()) || head.back() == '}')) {
            t = head;
            changed = true;
            break;
          }
        }
      }
    }
    s = t;
    if (!changed) break;
  }
  return s;
}

bool AllDigits(const std::string& s, size_t b, size_t e) {
  if (b >= e) return false;
  for (size_t i = b; i < e; ++i) if (!IsDigit(s[i])) return false;
  return true;
}

// Whole-answer number spellings: "7,425,000", "1 000", "1000,99" (comma decimal with exactly
// 2 or >= 4 fraction digits; 3 digits are thousands, 1 digit is a list "1,2").
std::string FixWholeNumber(const std::string& s) {
  std::string t = s;
  size_t start = (!t.empty() && (t[0] == '-' || t[0] == '+')) ? 1 : 0;
  std::string body = t.substr(start), sign = t.substr(0, start);
  std::string intpart = body, frac;
  size_t dot = body.find('.');
  if (dot != std::string::npos) { intpart = body.substr(0, dot); frac = body.substr(dot); }
  for (char sep : {',', ' '}) {
    if (intpart.find(sep) == std::string::npos) continue;
    std::vector<std::string> groups;
    size_t p = 0;
    while (true) {
      size_t q = intpart.find(sep, p);
      groups.push_back(intpart.substr(p, q == std::string::npos ? std::string::npos : q - p));
      if (q == std::string::npos) break;
      p = q + 1;
    }
    bool ok = groups.size() >= 2 && groups[0].size() >= 1 && groups[0].size() <= 3 && AllDigits(groups[0], 0, groups[0].size());
    for (size_t i = 1; ok && i < groups.size(); ++i) ok = groups[i].size() == 3 && AllDigits(groups[i], 0, 3);
    if (ok && (frac.empty() || AllDigits(frac, 1, frac.size()))) {
      std::string joined;
      for (auto& g : groups) joined += g;
      return sign + joined + frac;
    }
  }
  size_t comma = body.find(',');
  if (comma != std::string::npos && body.find(',', comma + 1) == std::string::npos && dot == std::string::npos) {
    size_t fd = body.size() - comma - 1;
    if (AllDigits(body, 0, comma) && AllDigits(body, comma + 1, body.size()) && (fd == 2 || fd >= 4)) {
      return sign + body.substr(0, comma) + "." + body.substr(comma + 1);
    }
  }
  return s;
}

}  // namespace

std::string NormalizeAnswer(const std::string& answer) {
  std::string s = answer;
  // unicode
  for (auto [from, to] : std::vector<std::pair<const char*, const char*>>{
           {"\xE2\x88\x92", "-"}, {"\xC3\x97", "*"}, {"\xC2\xB7", "*"}, {"\xE2\x8B\x85", "*"}, {"\xE2\x89\xA4", "\\le "},
           {"\xE2\x89\xA5", "\\ge "}, {"\xE2\x89\xA0", "\\ne "}, {"\xCF\x80", "\\pi "}, {"\xE2\x88\x9E", "\\infty "},
           {"\xC2\xB0", ""}, {"\xE2\x88\x9A", "\\sqrt"}, {"\xE2\x82\xAC", ""}, {"\xC2\xA3", ""}, {"\xC2\xA5", ""},
           {"\xC2\xB1", "\\pm "}}) {
    ReplaceAll(&s, from, to);
  }
  // ",\! " thousands (11,\! 111) before \! is dropped
  for (const char* sp : {",\\! ", ",\\!"}) ReplaceAll(&s, sp, ",");
  for (const char* cmd : {"\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\qquad", "\\quad",
                          "\\limits", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\big", "\\Big"}) {
    ReplaceAll(&s, cmd, cmd[1] == '!' || cmd[1] == 'l' || cmd[1] == 'r' || cmd[1] == 'd' || cmd[1] == 'b' || cmd[1] == 'B' ? "" : " ");
  }
  for (const char* f : {"\\dfrac", "\\tfrac", "\\cfrac"}) ReplaceAll(&s, f, "\\frac");
  for (const char* t : {"\\textnormal", "\\mathrm", "\\mathit", "\\mathbf", "\\textbf", "\\textrm", "\\mbox", "\\textit",
                        "\\operatorname"}) {
    ReplaceAll(&s, t, "\\text");
  }
  for (const char* d : {"^{\\circ}", "^\\circ", "\\circ", "\\degree"}) ReplaceAll(&s, d, "");
  for (const char* p : {"\\%", "%", "\\$", "$"}) ReplaceAll(&s, p, "");
  ReplaceAll(&s, "\\text{ }", " ");
  ReplaceAll(&s, "\\text{}", "");
  s = Trim(s);
  while (!s.empty() && (s.back() == '.' || s.back() == ' ')) s.pop_back();  // "5." but not "5.0"
  // words
  std::string low = ToLower(s);
  for (const char* w : {" percentage", " percent", " pct"}) {
    size_t n = std::string(w).size();
    if (low.size() >= n && low.compare(low.size() - n, n, w) == 0) { s = s.substr(0, s.size() - n); low = ToLower(s); }
  }
  s = StripTrailingUnit(s);
  s = Trim(s);
  if (ToLower(s) == "infinity" || ToLower(s) == "inf") s = "\\infty";
  s = FixWholeNumber(s);
  return s;
}

namespace {

// ---- lexer ---------------------------------------------------------------------------------
enum class Tok { kNum, kIdent, kCmd, kText, kOp, kEnd };
struct Token {
  Tok type;
  std::string text;
  bool space_before = false;
};

std::vector<Token> Lex(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  bool space = false;
  while (i < s.size()) {
    if (out.size() > kMaxTokens) Fail("answer too long");
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) { space = true; ++i; continue; }
    Token t{Tok::kOp, "", space};
    space = false;
    if (IsDigit(c) || (c == '.' && i + 1 < s.size() && IsDigit(s[i + 1]))) {
      size_t j = i;
      while (j < s.size() && IsDigit(s[j])) ++j;
      if (j < s.size() && s[j] == '.' && j + 1 < s.size() && IsDigit(s[j + 1])) {
        ++j;
        while (j < s.size() && IsDigit(s[j])) ++j;
      } else if (j < s.size() && s[j] == '.' && (j + 1 == s.size() || !IsDigit(s[j + 1])) && j > i) {
        // "5." at the end of a number: the period is punctuation
      }
      if (j + 1 < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '-' || s[k] == '+')) ++k;
        if (k < s.size() && IsDigit(s[k]) && !(k + 1 < s.size() && IsLetter(s[k + 1]))) {
          while (k < s.size() && IsDigit(s[k])) ++k;
          j = k;
        }
      }
      t.type = Tok::kNum;
      t.text = s.substr(i, j - i);
      i = j;
    } else if (IsLetter(c)) {
      size_t j = i;
      while (j < s.size() && IsLetter(s[j])) ++j;
      t.type = Tok::kIdent;
      t.text = s.substr(i, j - i);
      i = j;
    } else if (c == '\\') {
      if (i + 1 < s.size() && IsLetter(s[i + 1])) {
        size_t j = i + 1;
        while (j < s.size() && IsLetter(s[j])) ++j;
        t.type = Tok::kCmd;
        t.text = s.substr(i + 1, j - i - 1);
        i = j;
        if (t.text == "text") {
          // raw brace content
          size_t k = i;
          while (k < s.size() && s[k] == ' ') ++k;
          if (k < s.size() && s[k] == '{') {
            int depth = 0;
            size_t m = k;
            for (; m < s.size(); ++m) {
              if (s[m] == '{') ++depth;
              else if (s[m] == '}' && --depth == 0) break;
            }
            if (m >= s.size()) Fail("unbalanced \\text{");
            t.type = Tok::kText;
            t.text = Trim(s.substr(k + 1, m - k - 1));
            i = m + 1;
          }
        }
      } else if (i + 1 < s.size()) {
        char d = s[i + 1];
        t.text = d == '{' ? "\\{" : d == '}' ? "\\}" : d == '\\' ? "\\\\" : d == '|' ? "|" : std::string(1, d);
        i += 2;
        if (t.text == std::string(1, d) && d != '|') continue;  // \, \; ... already removed; ignore others
      } else {
        Fail("trailing backslash");
      }
    } else {
      // multi-char operators
      auto two = s.substr(i, 2);
      if (two == "<=" || two == ">=" || two == "!=" || two == "==") {
        t.text = two == "<=" ? "<=" : two == ">=" ? ">=" : two == "!=" ? "!=" : "=";
        i += 2;
      } else {
        t.text = std::string(1, c);
        ++i;
      }
    }
    out.push_back(std::move(t));
  }
  out.push_back(Token{Tok::kEnd, "", false});
  return out;
}

// ---- parser --------------------------------------------------------------------------------
mpq_class ParseNumberLiteral(const std::string& text, bool* is_float) {
  std::string mant = text;
  long exp10 = 0;
  size_t e = text.find_first_of("eE");
  if (e != std::string::npos) {
    mant = text.substr(0, e);
    exp10 = std::stol(text.substr(e + 1));
    if (std::labs(exp10) > kMaxDecimalExponent) Fail("exponent too large");
  }
  size_t dot = mant.find('.');
  std::string digits = mant;
  if (dot != std::string::npos) {
    digits = mant.substr(0, dot) + mant.substr(dot + 1);
    exp10 -= static_cast<long>(mant.size() - dot - 1);
    *is_float = true;
  }
  if (digits.empty()) digits = "0";
  mpz_class n(digits, 10);
  mpz_class p;
  mpz_ui_pow_ui(p.get_mpz_t(), 10, static_cast<unsigned long>(std::labs(exp10)));
  mpq_class q = exp10 >= 0 ? mpq_class(n * p) : mpq_class(n, p);
  q.canonicalize();
  return q;
}

const std::vector<std::string>& Functions() {
  static const std::vector<std::string> k = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan",
                                             "sinh", "cosh", "tanh", "ln", "log", "exp", "lg"};
  return k;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Node Top() {
    Node n = ListUntil({""});
    if (Peek().type != Tok::kEnd) Fail("unexpected '" + Peek().text + "'");
    return n;
  }

 private:
  const Token& Peek(size_t k = 0) const { return t_[std::min(pos_ + k, t_.size() - 1)]; }
  bool IsOp(const std::string& s, size_t k = 0) const { return Peek(k).type == Tok::kOp && Peek(k).text == s; }
  bool IsCmd(const std::string& s) const { return Peek().type == Tok::kCmd && Peek().text == s; }
  Token Take() { Token x = Peek(); if (pos_ < t_.size() - 1) ++pos_; return x; }
  void Expect(const std::string& op) {
    if (!IsOp(op)) Fail("expected '" + op + "'");
    Take();
  }
  struct Depth {
    explicit Depth(int* d) : d_(d) { if (++*d_ > kMaxDepth) Fail("nested too deeply"); }
    ~Depth() { --*d_; }
    int* d_;
  };

  bool AtStop(const std::vector<std::string>& stops) const {
    if (Peek().type == Tok::kEnd) return true;
    for (const auto& s : stops) {
      if (s.empty()) continue;
      if (s == "\\end" ? (Peek().type == Tok::kCmd && Peek().text == "end") : IsOp(s)) return true;
    }
    return false;
  }

  // item (',' | ';' item)* up to one of `stops` (not consumed).
  Node ListUntil(const std::vector<std::string>& stops) {
    Depth d(&depth_);
    std::vector<Node> items;
    items.push_back(Relation());
    while (IsOp(",") || IsOp(";")) {
      Take();
      if (AtStop(stops)) break;  // trailing comma
      items.push_back(Relation());
    }
    if (!AtStop(stops)) Fail("unexpected '" + Peek().text + "'");
    if (items.size() == 1) return items[0];
    // "n = 1, 2, 3": an assignment whose right side is the whole list.
    if (items[0].kind == Kind::kRelation && items[0].ops.size() == 1 && items[0].ops[0] == "=") {
      bool rest_plain = true;
      for (size_t i = 1; i < items.size(); ++i) rest_plain &= items[i].kind != Kind::kRelation;
      if (rest_plain) {
        Node rel = items[0];
        Node list;
        list.kind = Kind::kList;
        list.items.push_back(rel.items[1]);
        for (size_t i = 1; i < items.size(); ++i) list.items.push_back(items[i]);
        rel.items[1] = list;
        return rel;
      }
    }
    Node n;
    n.kind = Kind::kList;
    n.items = std::move(items);
    return n;
  }

  std::string RelOp() const {
    const Token& k = Peek();
    if (k.type == Tok::kOp) {
      if (k.text == "=" || k.text == "<" || k.text == ">" || k.text == "<=" || k.text == ">=" || k.text == "!=") return k.text;
    }
    if (k.type == Tok::kCmd) {
      if (k.text == "le" || k.text == "leq" || k.text == "leqslant") return "<=";
      if (k.text == "ge" || k.text == "geq" || k.text == "geqslant") return ">=";
      if (k.text == "lt") return "<";
      if (k.text == "gt") return ">";
      if (k.text == "ne" || k.text == "neq") return "!=";
      if (k.text == "in") return "in";
    }
    return "";
  }

  Node Relation() {
    Depth d(&depth_);
    Node a = Ratio();
    if (RelOp().empty()) return a;
    Node r;
    r.kind = Kind::kRelation;
    r.items.push_back(a);
    while (!RelOp().empty()) {
      r.ops.push_back(RelOp());
      Take();
      r.items.push_back(Ratio());
    }
    return r;
  }

  Node Ratio() {
    Node a = Union();
    if (!IsOp(":")) return a;
    Node r;
    r.kind = Kind::kRatio;
    r.items.push_back(a);
    while (IsOp(":")) { Take(); r.items.push_back(Union()); }
    return r;
  }

  Node Union() {
    Node a = Sum();
    if (!IsCmd("cup")) return a;
    Node u;
    u.kind = Kind::kUnion;
    u.items.push_back(a);
    while (IsCmd("cup")) { Take(); u.items.push_back(Sum()); }
    return u;
  }

  static const Poly& V(const Node& n) {
    if (n.kind != Kind::kValue) Fail("arithmetic on a non-number (" + Describe(n) + ")");
    return n.value;
  }

  // Sum with at most one \pm (A \pm B -> {A - B, A + B}).
  Node Sum() {
    Depth d(&depth_);
    Poly acc;
    Poly pm;  // the \pm term
    bool has_pm = false;
    int n_terms = 0;
    Node first;
    bool first_only = true;
    int sign = 1;
    auto sign_op = [&]() -> int {
      if (IsOp("+")) return 1;
      if (IsOp("-")) return -1;
      if (IsCmd("pm") || IsCmd("mp")) return 2;
      return 0;
    };
    int s0 = sign_op();
    if (s0) { Take(); sign = s0; }
    while (true) {
      Node t = Term();
      if (n_terms == 0 && sign == 1) first = t;
      else first_only = false;
      if (sign == 2) {
        if (has_pm) Fail("more than one \\pm");
        has_pm = true;
        pm = V(t);
      } else {
        if (n_terms == 0 && sign == 1 && t.kind != Kind::kValue) {
          // a single non-value term (tuple, set, ...) stands alone
          if (sign_op() == 0) return t;
        }
        AddInto(&acc, V(t), sign);
      }
      ++n_terms;
      int s = sign_op();
      if (!s) break;
      Take();
      sign = s;
    }
    if (has_pm) {
      Node set;
      set.kind = Kind::kSet;
      set.items.push_back(ValueNode(Sub(acc, pm)));
      set.items.push_back(ValueNode(Add(acc, pm)));
      return set;
    }
    if (first_only && n_terms == 1) return first;
    Node r = ValueNode(acc);
    // "-5", "-0.5", "-3/4": a negated plain number is still plain.
    if (n_terms == 1 && s0 == -1) {
      r.plain = last_term_plain_;
      r.float_literal = last_term_float_;
    }
    return r;
  }

  bool StartsFactor() const {
    const Token& k = Peek();
    if (k.type == Tok::kNum || k.type == Tok::kIdent || k.type == Tok::kText) return true;
    if (k.type == Tok::kCmd) {
      static const std::vector<std::string> no = {"cup", "le", "leq", "ge", "geq", "ne", "neq", "in", "pm", "mp", "cdot",
                                                  "times", "div", "end", "lt", "gt", "leqslant", "geqslant"};
      return std::find(no.begin(), no.end(), k.text) == no.end();
    }
    if (k.type == Tok::kOp) return k.text == "(" || k.text == "\\{" || k.text == "{";
    return false;
  }

  Node Term() {
    Depth d(&depth_);
    Node f = Power();
    bool plain = f.plain, flt = f.float_literal;
    int factors = 1;
    bool sci = false, frac_form = false;
    Poly acc;
    bool is_value = f.kind == Kind::kValue;
    if (is_value) acc = f.value;
    while (true) {
      int op = 0;  // 1 mul, 2 div, 3 implicit
      if (IsOp("*") || IsCmd("cdot") || IsCmd("times")) op = 1;
      else if (IsOp("/") || IsCmd("div")) op = 2;
      else if (StartsFactor() && !(Peek().type == Tok::kOp && Peek().text == "{" )) op = 3;
      if (!op) break;
      bool times_cmd = IsCmd("times") || IsOp("*") || IsCmd("cdot");
      if (op != 3) Take();
      Node g = Power();
      if (!is_value) Fail("arithmetic on a non-number (" + Describe(f) + ")");
      if (op == 2) {
        acc = Mul(acc, Inverse(V(g)));
        frac_form = factors == 1 && plain && g.plain && !flt && !g.float_literal && !last_was_pow_;
      } else {
        // a \times 10^k: scientific notation stays a plain number
        sci = factors == 1 && plain && times_cmd && last_was_pow10_;
        acc = Mul(acc, V(g));
      }
      ++factors;
      if (!(sci || frac_form)) plain = false;
    }
    if (factors == 1) {
      last_term_plain_ = f.plain;
      last_term_float_ = f.float_literal;
      return f;
    }
    Node r = ValueNode(acc);
    r.plain = factors == 2 && (sci || frac_form);
    r.float_literal = r.plain && flt;
    last_term_plain_ = r.plain;
    last_term_float_ = r.float_literal;
    return r;
  }

  Node Power() {
    Depth d(&depth_);
    last_was_pow_ = false;
    last_was_pow10_ = false;
    Node b = Postfix();
    if (!IsOp("^")) return b;
    Take();
    Node e = Exponent();
    Node r = ValueNode(PowNode(V(b), V(e)));
    last_was_pow_ = true;
    last_was_pow10_ = b.plain && V(b).IsRational() && V(b).Rational() == 10 && V(e).IsRational() &&
                      V(e).Rational().get_den() == 1;
    return r;
  }

  Poly PowNode(const Poly& b, const Poly& e) {
    if (e.IsRational() && e.Rational().get_den() == 1 && mpz_fits_slong_p(e.Rational().get_num_mpz_t())) {
      long n = e.Rational().get_num().get_si();
      if (std::labs(n) <= kMaxExponent) {
        try {
          return IntPow(b, n);
        } catch (const ParseError&) {
          // too large to evaluate: keep it as an atom
        }
      }
    }
    if (e.IsRational() && e.Rational() == mpq_class(1, 2) && b.IsRational()) return SqrtRational(b.Rational());
    return Poly::Atom("pow(" + PolyStr(b) + "," + PolyStr(e) + ")");
  }

  Node Exponent() {
    Depth d(&depth_);
    if (IsOp("{")) {
      Take();
      Node e = ListUntil({"}"});
      Expect("}");
      return e;
    }
    if (IsOp("-")) { Take(); Node e = Exponent(); return ValueNode(Scale(V(e), -1)); }
    if (Peek().type == Tok::kNum) {  // x^23 in TeX is x^2 3; accept the whole number as models write it
      return Primary();
    }
    return Postfix();
  }

  Node Postfix() {
    Node p = Primary();
    while (IsOp("!")) {
      Take();
      const Poly& v = V(p);
      if (v.IsRational() && v.Rational().get_den() == 1 && v.Rational() >= 0 && v.Rational() <= kMaxFactorial) {
        mpz_class f;
        mpz_fac_ui(f.get_mpz_t(), v.Rational().get_num().get_ui());
        p = ValueNode(Poly::Const(mpq_class(f)));
      } else {
        p = ValueNode(Poly::Atom("factorial(" + PolyStr(v) + ")"));
      }
    }
    return p;
  }

  // A TeX macro argument: {group} or one token (\frac13: the digit '1', then '3').
  Node Arg() {
    if (IsOp("{")) {
      Take();
      Node n = ListUntil({"}"});
      Expect("}");
      return n;
    }
    if (Peek().type == Tok::kNum && Peek().text.size() > 1 && Peek().text.find_first_of(".eE") == std::string::npos) {
      std::string first = Peek().text.substr(0, 1);
      t_[pos_].text = t_[pos_].text.substr(1);
      t_[pos_].space_before = false;
      Node n = ValueNode(Poly::Const(mpq_class(first)));
      n.plain = true;
      return n;
    }
    if (Peek().type == Tok::kIdent && Peek().text.size() > 1) {  // \sqrt ab = \sqrt{a} b
      std::string first = Peek().text.substr(0, 1);
      t_[pos_].text = t_[pos_].text.substr(1);
      return ValueNode(Poly::Atom(first));
    }
    return Primary();
  }

  std::string RawGroup() {
    if (!IsOp("{")) Fail("expected '{'");
    Take();
    std::string s;
    while (!IsOp("}")) {
      if (Peek().type == Tok::kEnd) Fail("unbalanced '{'");
      s += Take().text;
    }
    Take();
    return s;
  }

  Node Bracketed(const std::string& open) {
    Depth d(&depth_);
    // (a), [a, b), \{a\}, {a, b}
    if (open == "\\{" || open == "{") {
      std::string close = open == "\\{" ? "\\}" : "}";
      Node set;
      set.kind = Kind::kSet;
      if (IsOp(close)) { Take(); return set; }
      Node inner = ListUntil({close});
      Expect(close);
      if (open == "{" && inner.kind != Kind::kList) return inner;  // plain grouping
      if (inner.kind == Kind::kList) set.items = inner.items;
      else set.items.push_back(inner);
      return set;
    }
    Node inner = ListUntil({")", "]"});
    std::string close = Take().text;
    if (inner.kind != Kind::kList) {
      if (open == "(" && close == ")") return inner;
      if (open == "[" && close == "]") return inner;
      Fail("half-open bracket around one value");
    }
    Node b;
    b.kind = Kind::kBracket;
    b.open = open[0];
    b.close = close[0];
    b.items = inner.items;
    return b;
  }

  Node Matrix() {
    std::string env = RawGroup();
    static const std::vector<std::string> envs = {"pmatrix", "bmatrix", "matrix", "vmatrix", "Bmatrix", "array", "smallmatrix"};
    if (std::find(envs.begin(), envs.end(), env) == envs.end()) Fail("unsupported environment " + env);
    if (env == "array" && IsOp("{")) RawGroup();  // column spec
    Node m;
    m.kind = Kind::kMatrix;
    std::vector<Node> row;
    while (true) {
      if (Peek().type == Tok::kEnd) Fail("unterminated matrix");
      if (IsCmd("end")) break;
      row.push_back(Sum());
      if (IsOp("&")) { Take(); continue; }
      if (IsOp("\\\\")) { Take(); m.rows.push_back(row); row.clear(); if (IsCmd("end")) break; continue; }
      if (IsCmd("end")) break;
      Fail("unexpected '" + Peek().text + "' in matrix");
    }
    if (!row.empty()) m.rows.push_back(row);
    Take();  // \end
    RawGroup();
    for (const auto& r : m.rows) if (r.size() != m.rows[0].size()) Fail("ragged matrix");
    if (m.rows.empty()) Fail("empty matrix");
    return m;
  }

  Node Primary() {
    Depth d(&depth_);
    Token k = Peek();
    switch (k.type) {
      case Tok::kNum: {
        Take();
        bool is_float = false;
        Node n = ValueNode(Poly::Const(ParseNumberLiteral(k.text, &is_float)));
        n.plain = true;
        n.float_literal = is_float;
        return n;
      }
      case Tok::kIdent: {
        Take();
        std::string name = k.text;
        if (IsOp("_")) {
          Take();
          if (IsOp("{")) name += "_{" + RawGroup() + "}";
          else name += "_" + Take().text;
        }
        while (IsOp("'")) { Take(); name += "'"; }
        if (std::find(Functions().begin(), Functions().end(), name) != Functions().end()) return Function(name);
        if (IsOp("(") && !Peek().space_before && name.size() == 1 && std::string("fghpqFGPu").find(name) != std::string::npos) {
          Take();
          Node inner = ListUntil({")"});
          Expect(")");
          return ValueNode(Poly::Atom(name + "(" + Describe(inner) + ")"));
        }
        return ValueNode(Poly::Atom(name));
      }
      case Tok::kText: {
        Take();
        std::string t;
        for (char c : k.text) if (!(c == ' ' && (t.empty() || t.back() == ' '))) t.push_back(c);
        // numbers inside \text{} parse as numbers
        if (!t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return IsDigit(c) || c == '.'; })) {
          bool f = false;
          Node n = ValueNode(Poly::Const(ParseNumberLiteral(t, &f)));
          n.plain = true;
          n.float_literal = f;
          return n;
        }
        if (t.empty()) Fail("empty \\text{}");
        return ValueNode(Poly::Atom(t));
      }
      case Tok::kCmd: {
        Take();
        const std::string& c = k.text;
        if (c == "frac") {
          Node a = Arg();
          Node b = Arg();
          Node r = ValueNode(Mul(V(a), Inverse(V(b))));
          r.plain = a.plain && b.plain && !a.float_literal && !b.float_literal;
          return r;
        }
        if (c == "sqrt") {
          Poly index = Poly::Const(2);
          bool has_index = false;
          if (IsOp("[")) {
            Take();
            Node idx = Sum();
            Expect("]");
            index = V(idx);
            has_index = true;
          }
          Node a = Arg();
          if (!has_index || index == Poly::Const(2)) {
            if (V(a).IsRational()) return ValueNode(SqrtRational(V(a).Rational()));
            return ValueNode(Poly::Atom("sqrt(" + PolyStr(V(a)) + ")"));
          }
          return ValueNode(Poly::Atom("root(" + PolyStr(index) + "," + PolyStr(V(a)) + ")"));
        }
        if (c == "pi") return ValueNode(Poly::Atom("pi"));
        if (c == "infty" || c == "infinity") return ValueNode(Poly::Atom("oo"));
        if (c == "emptyset" || c == "varnothing") { Node s; s.kind = Kind::kSet; return s; }
        if (c == "begin") return Matrix();
        if (c == "boxed") return Arg();
        if (std::find(Functions().begin(), Functions().end(), c) != Functions().end()) return Function(c);
        if (c.size() > 1 && IsLetter(c[0])) return ValueNode(Poly::Atom("\\" + c));  // \alpha, ...
        Fail("unsupported command \\" + c);
      }
      case Tok::kOp: {
        if (k.text == "(" || k.text == "[" || k.text == "\\{" || k.text == "{") {
          Take();
          return Bracketed(k.text);
        }
        if (k.text == "|") {
          Take();
          Node inner = Sum();
          Expect("|");
          const Poly& v = V(inner);
          if (v.IsRational()) return ValueNode(Poly::Const(abs(v.Rational())));
          return ValueNode(Poly::Atom("abs(" + PolyStr(v) + ")"));
        }
        if (k.text == "-") {
          Take();
          Node inner = Power();
          Node r = ValueNode(Scale(V(inner), -1));
          r.plain = inner.plain;
          r.float_literal = inner.float_literal;
          return r;
        }
        if (k.text == "+") { Take(); return Power(); }
        Fail("unexpected '" + k.text + "'");
      }
      case Tok::kEnd:
        Fail("unexpected end of answer");
    }
    Fail("unexpected token");
  }

  Node Function(const std::string& name) {
    Poly power = Poly::Const(1);
    bool has_power = false;
    if (IsOp("^")) {  // \tan^2(y)
      Take();
      power = V(Exponent());
      has_power = true;
    }
    Node arg;
    if (IsOp("(")) {
      Take();
      arg = ListUntil({")"});
      Expect(")");
    } else {
      arg = Power();
    }
    Poly f = Poly::Atom(name + "(" + Describe(arg) + ")");
    if (has_power) return ValueNode(PowNode(f, power));
    return ValueNode(f);
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
  bool last_term_plain_ = false, last_term_float_ = false;
  bool last_was_pow_ = false, last_was_pow10_ = false;
};

}  // namespace

class ParsedAnswer {
 public:
  Node root;
};

AnswerHandle ParseAnswer(const std::string& answer) {
  AnswerHandle h;
  h.normalized = NormalizeAnswer(answer);
  if (h.normalized.empty()) {
    h.error = "empty answer";
    return h;
  }
  try {
    auto p = std::make_shared<ParsedAnswer>();
    p->root = Parser(Lex(h.normalized)).Top();
    h.p = p;
  } catch (const ParseError& e) {
    h.error = e.what;
  }
  return h;
}

std::string DescribeAnswer(const AnswerHandle& a) { return a.ok() ? Describe(a.p->root) : "<" + a.error + ">"; }

namespace {

// ---- comparison ----------------------------------------------------------------------------
bool Eq(const Node& g, const Node& p, const CompareOptions& o);

bool IsSymbolLike(const Node& n) {
  if (n.kind == Kind::kValue) {
    std::string a = n.value.SoleAtom();
    if (a.empty()) return false;
    if (a == "pi" || a == "oo" || a.rfind("sqrt(", 0) == 0 || a.rfind("pow(", 0) == 0 || a.rfind("root(", 0) == 0) return false;
    return true;
  }
  if (n.kind == Kind::kBracket || n.kind == Kind::kRatio) {
    for (const auto& i : n.items) if (!IsSymbolLike(i)) return false;
    return true;
  }
  return false;
}

bool IsAssignment(const Node& n) {
  return n.kind == Kind::kRelation && !n.ops.empty() && n.ops[0] == "=" && IsSymbolLike(n.items[0]) &&
         std::all_of(n.ops.begin(), n.ops.end(), [](const std::string& s) { return s == "="; });
}

bool ValueEq(const Node& g, const Node& p, const CompareOptions& o) {
  if (g.kind != Kind::kValue || p.kind != Kind::kValue) return false;
  if (o.require_plain_number && g.plain && !p.plain) return false;
  if (g.value == p.value) return true;
  if (g.float_literal && g.value.IsRational() && p.value.IsRational() && o.float_rel_tol > 0) {
    mpq_class gv = g.value.Rational(), pv = p.value.Rational();
    mpq_class diff = abs(gv - pv);
    mpq_class tol = abs(gv) * mpq_class(o.float_rel_tol);
    return diff <= tol;
  }
  return false;
}

// Multiset match (each gold item matched by a distinct prediction item).
bool SetEq(const std::vector<Node>& g, const std::vector<Node>& p, const CompareOptions& o) {
  if (g.size() != p.size()) return false;
  std::vector<bool> used(p.size(), false);
  for (const auto& gi : g) {
    bool found = false;
    for (size_t j = 0; j < p.size() && !found; ++j) {
      if (!used[j] && Eq(gi, p[j], o)) used[j] = found = true;
    }
    if (!found) return false;
  }
  return true;
}

bool SeqEq(const std::vector<Node>& g, const std::vector<Node>& p, const CompareOptions& o) {
  if (g.size() != p.size()) return false;
  for (size_t i = 0; i < g.size(); ++i) if (!Eq(g[i], p[i], o)) return false;
  return true;
}

struct Interval {
  std::string var;  // "" for a bare interval
  Poly lo, hi;
  bool lo_closed = false, hi_closed = false;
};

std::optional<Interval> FromBracket(const Node& n) {
  if (n.kind != Kind::kBracket || n.items.size() != 2) return std::nullopt;
  if (n.items[0].kind != Kind::kValue || n.items[1].kind != Kind::kValue) return std::nullopt;
  Interval iv;
  iv.lo = n.items[0].value;
  iv.hi = n.items[1].value;
  iv.lo_closed = n.open == '[';
  iv.hi_closed = n.close == ']';
  return iv;
}

// x op c with the variable possibly scaled: c1*x op c2.
std::optional<Interval> FromRelation(const Node& r) {
  if (r.kind != Kind::kRelation) return std::nullopt;
  auto dir = [](const std::string& op) { return op == "<" || op == "<=" ? 1 : op == ">" || op == ">=" ? -1 : 0; };
  auto strict = [](const std::string& op) { return op == "<" || op == ">"; };
  if (r.ops.size() == 1 && r.ops[0] == "in") {
    auto iv = FromBracket(r.items[1]);
    if (!iv || !IsSymbolLike(r.items[0])) return std::nullopt;
    iv->var = Describe(r.items[0]);
    return iv;
  }
  for (const auto& n : r.items) if (n.kind != Kind::kValue) return std::nullopt;
  Poly oo = Poly::Atom("oo");
  if (r.ops.size() == 1) {
    int d = dir(r.ops[0]);
    if (!d) return std::nullopt;
    // find the variable side: a single monomial c*x with x symbol-like; the other side rational
    for (int side = 0; side < 2; ++side) {
      const Poly& v = r.items[side].value;
      const Poly& other = r.items[1 - side].value;
      if (v.terms.size() != 1 || !other.IsRational()) continue;
      const auto& [m, c] = *v.terms.begin();
      if (m.size() != 1 || m.begin()->second != 1) continue;
      Node sym = ValueNode(Poly::Atom(m.begin()->first));
      if (!IsSymbolLike(sym)) continue;
      mpq_class bound = other.Rational() / c;
      int dd = d * (side == 0 ? 1 : -1) * (c < 0 ? -1 : 1);  // +1: x < bound
      Interval iv;
      iv.var = m.begin()->first;
      if (dd > 0) { iv.lo = Scale(oo, -1); iv.hi = Poly::Const(bound); iv.hi_closed = !strict(r.ops[0]); }
      else { iv.lo = Poly::Const(bound); iv.hi = oo; iv.lo_closed = !strict(r.ops[0]); }
      return iv;
    }
    return std::nullopt;
  }
  if (r.ops.size() == 2) {
    int d1 = dir(r.ops[0]), d2 = dir(r.ops[1]);
    if (!d1 || d1 != d2) return std::nullopt;
    if (!IsSymbolLike(r.items[1])) return std::nullopt;
    Interval iv;
    iv.var = Describe(r.items[1]);
    const Node& a = r.items[d1 > 0 ? 0 : 2];
    const Node& b = r.items[d1 > 0 ? 2 : 0];
    iv.lo = a.value;
    iv.hi = b.value;
    iv.lo_closed = !strict(r.ops[d1 > 0 ? 0 : 1]);
    iv.hi_closed = !strict(r.ops[d1 > 0 ? 1 : 0]);
    return iv;
  }
  return std::nullopt;
}

bool IntervalEq(const Interval& a, const Interval& b, bool check_var) {
  if (check_var && a.var != b.var) return false;
  return a.lo == b.lo && a.hi == b.hi && a.lo_closed == b.lo_closed && a.hi_closed == b.hi_closed;
}

const Node& LastRhs(const Node& rel) { return rel.items.back(); }

bool Eq(const Node& g, const Node& p, const CompareOptions& o) {
  // A prediction that is an assignment chain is unwrapped to its last right side unless the gold
  // is itself a relation.
  if (g.kind != Kind::kRelation && IsAssignment(p)) return Eq(g, LastRhs(p), o);
  switch (g.kind) {
    case Kind::kValue:
      return ValueEq(g, p, o);
    case Kind::kRelation: {
      if (IsAssignment(g) && g.ops.size() == 1) {
        const Node& rhs = g.items[1];
        if (p.kind == Kind::kRelation) {
          if (!IsAssignment(p)) return false;
          return Describe(p.items[0]) == Describe(g.items[0]) && Eq(rhs, LastRhs(p), o);
        }
        return Eq(rhs, p, o);
      }
      if (g.ops.size() == 1 && g.ops[0] == "=") {
        // an equation: same up to moving terms and an overall sign
        if (p.kind != Kind::kRelation || p.ops.size() != 1 || p.ops[0] != "=") return false;
        if (g.items[0].kind != Kind::kValue || g.items[1].kind != Kind::kValue) return SeqEq(g.items, p.items, o);
        if (p.items[0].kind != Kind::kValue || p.items[1].kind != Kind::kValue) return false;
        Poly dg = Sub(g.items[0].value, g.items[1].value), dp = Sub(p.items[0].value, p.items[1].value);
        return dg == dp || dg == Scale(dp, -1);
      }
      if (g.ops.size() == 1 && g.ops[0] == "in") {
        if (p.kind == Kind::kRelation) {
          if (p.ops.size() != 1 || p.ops[0] != "in") return false;  // no inequality for an interval gold
          return Describe(p.items[0]) == Describe(g.items[0]) && Eq(g.items[1], p.items[1], o);
        }
        return Eq(g.items[1], p, o);
      }
      auto gi = FromRelation(g);
      if (!gi) {
        return p.kind == Kind::kRelation && p.ops == g.ops && SeqEq(g.items, p.items, o);
      }
      if (p.kind == Kind::kRelation) {
        auto pi = FromRelation(p);
        return pi && IntervalEq(*gi, *pi, !pi->var.empty() || true);
      }
      auto pi = FromBracket(p);
      return pi && IntervalEq(*gi, *pi, false);
    }
    case Kind::kBracket: {
      if (p.kind == Kind::kBracket) return g.open == p.open && g.close == p.close && SeqEq(g.items, p.items, o);
      if (p.kind == Kind::kSet && g.open == '(' && g.close == ')') return SeqEq(g.items, p.items, o);
      if (p.kind == Kind::kRelation && p.ops.size() == 1 && p.ops[0] == "in") return Eq(g, p.items[1], o);
      return false;
    }
    case Kind::kSet:
    case Kind::kList:
      if (p.kind == Kind::kSet || p.kind == Kind::kList) return SetEq(g.items, p.items, o);
      return false;
    case Kind::kUnion:
      return p.kind == Kind::kUnion && SeqEq(g.items, p.items, o);
    case Kind::kRatio:
      return p.kind == Kind::kRatio && SeqEq(g.items, p.items, o);
    case Kind::kMatrix: {
      if (p.kind != Kind::kMatrix || p.rows.size() != g.rows.size()) return false;
      for (size_t i = 0; i < g.rows.size(); ++i) if (!SeqEq(g.rows[i], p.rows[i], o)) return false;
      return true;
    }
  }
  return false;
}

}  // namespace

bool Compare(const AnswerHandle& gold, const AnswerHandle& pred, const CompareOptions& options) {
  if (!gold.normalized.empty() && gold.normalized == pred.normalized) return true;
  if (!gold.ok() || !pred.ok()) return false;
  try {
    return Eq(gold.p->root, pred.p->root, options);
  } catch (const ParseError&) {
    return false;
  }
}

bool AnswersMatch(const std::string& gold, const std::string& pred, const CompareOptions& options,
                  std::string* gold_error) {
  AnswerHandle g = ParseAnswer(gold);
  if (!g.ok()) {
    if (gold_error) *gold_error = g.error;
    return false;
  }
  AnswerHandle p = ParseAnswer(pred);
  if (!p.ok()) return false;
  return Compare(g, p, options);
}

}  // namespace lightrl::reward::math
