#include "reward/synthetic_verifiers.h"

#include <gmpxx.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "reward/text_util.h"

namespace lightrl::reward {

SyntheticVerifierConfig ParseSyntheticVerifierConfig(ConfigReader& r) {
  SyntheticVerifierConfig c;
  c.values = ParseRewardValues(r);
  int64_t tail = r.Get<int64_t>("tail_chars", static_cast<int64_t>(c.tail_chars));
  if (tail < 16 || tail > (1 << 20)) r.Fail("tail_chars", "expected 16..1048576");
  c.tail_chars = static_cast<size_t>(tail);
  int64_t m = r.Get<int64_t>("max_answer_chars", static_cast<int64_t>(c.max_answer_chars));
  if (m < 1 || m > 65536) r.Fail("max_answer_chars", "expected 1..65536");
  c.max_answer_chars = static_cast<size_t>(m);
  return c;
}

namespace {

std::optional<std::string> Candidate(const protocol::RewardRequest& q, const SyntheticVerifierConfig& c,
                                     nlohmann::json* detail) {
  std::string_view text = TailWindow(q.response_text, c.tail_chars);
  auto e = ExtractFinalAnswer(text, /*allow_last_line=*/true);
  if (!e) return std::nullopt;
  (*detail)["extracted"] = Clip(e->text);
  (*detail)["from"] = AnswerSourceName(e->source);
  if (e->text.size() > c.max_answer_chars) return std::nullopt;
  std::string s = e->text;
  // inline math wrappers
  for (const char* w : {"$", "\\(", "\\)", "\\[", "\\]"}) {
    size_t p;
    while ((p = s.find(w)) != std::string::npos) s.erase(p, std::string(w).size());
  }
  s = Trim(s);
  while (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// ---- countdown expression grammar --------------------------------------------------------
//   expr := term (('+'|'-') term)*      term := atom (('*'|'/') atom)*
//   atom := integer | '(' expr ')'
class CdParser {
 public:
  CdParser(const std::string& s, std::vector<int64_t>* used) : s_(s), used_(used) {}
  std::optional<mpq_class> Parse(bool* defined, std::string* error) {
    try {
      mpq_class v = Expr();
      Skip();
      if (i_ != s_.size()) throw std::string("unexpected '") + s_[i_] + "'";
      *defined = defined_;
      return v;
    } catch (const std::string& e) {
      *error = e;
      return std::nullopt;
    }
  }

 private:
  void Skip() { while (i_ < s_.size() && s_[i_] == ' ') ++i_; }
  // One operator, ASCII or the UTF-8 multiplication/division signs.
  char Op() {
    Skip();
    if (i_ >= s_.size()) return 0;
    char c = s_[i_];
    if (c == '+' || c == '-' || c == '*' || c == '/' || c == 'x' || c == 'X') return c == 'x' || c == 'X' ? '*' : c;
    if (s_.compare(i_, 2, "\xC3\x97") == 0) return 'M';  // ×
    if (s_.compare(i_, 2, "\xC3\xB7") == 0) return 'D';  // ÷
    if (s_.compare(i_, 3, "\xE2\x88\x92") == 0) return 'S';  // − (minus sign)
    if (s_.compare(i_, 6, "\\times") == 0) return 'T';
    if (s_.compare(i_, 5, "\\cdot") == 0) return 'C';
    if (s_.compare(i_, 4, "\\div") == 0) return 'V';
    return 0;
  }
  char TakeOp() {
    char o = Op();
    size_t w = o == 'M' || o == 'D' ? 2 : o == 'S' ? 3 : o == 'T' ? 6 : o == 'C' ? 5 : o == 'V' ? 4 : 1;
    i_ += w;
    if (o == 'M' || o == 'T' || o == 'C') return '*';
    if (o == 'D' || o == 'V') return '/';
    if (o == 'S') return '-';
    return o;
  }
  mpq_class Expr() {
    if (++depth_ > 32) throw std::string("nested too deeply");
    mpq_class v = Term();
    for (char o = Op(); o == '+' || o == '-' || o == 'S'; o = Op()) {
      o = TakeOp();
      mpq_class t = Term();
      if (o == '+') v += t; else v -= t;
    }
    --depth_;
    return v;
  }
  mpq_class Term() {
    mpq_class v = Atom();
    for (char o = Op(); o == '*' || o == '/' || o == 'M' || o == 'D' || o == 'T' || o == 'C' || o == 'V'; o = Op()) {
      o = TakeOp();
      mpq_class a = Atom();
      if (o == '*') {
        v *= a;
      } else if (a == 0) {
        defined_ = false;
        v = 0;
      } else {
        v /= a;
      }
    }
    return v;
  }
  mpq_class Atom() {
    Skip();
    if (i_ >= s_.size()) throw std::string("unexpected end of expression");
    char c = s_[i_];
    if (c == '(' || c == '[' || c == '{') {
      char close = c == '(' ? ')' : c == '[' ? ']' : '}';
      ++i_;
      mpq_class v = Expr();
      Skip();
      if (i_ >= s_.size() || s_[i_] != close) throw std::string("missing '") + close + "'";
      ++i_;
      return v;
    }
    if (!std::isdigit(static_cast<unsigned char>(c))) throw std::string("unexpected '") + c + "'";
    size_t j = i_;
    while (j < s_.size() && std::isdigit(static_cast<unsigned char>(s_[j]))) ++j;
    if (j - i_ > 9) throw std::string("number too long");
    int64_t n = std::stoll(s_.substr(i_, j - i_));
    i_ = j;
    used_->push_back(n);
    if (used_->size() > 64) throw std::string("too many numbers");
    return mpq_class(static_cast<long>(n));
  }

  const std::string& s_;
  std::vector<int64_t>* used_;
  size_t i_ = 0;
  int depth_ = 0;
  bool defined_ = true;
};

bool ParseIntToken(const std::string& tok, int64_t* out) {
  if (tok.empty() || tok.size() > 18) return false;
  size_t i = tok[0] == '-' ? 1 : 0;
  if (i == tok.size()) return false;
  for (size_t k = i; k < tok.size(); ++k) if (!std::isdigit(static_cast<unsigned char>(tok[k]))) return false;
  *out = std::stoll(tok);
  return true;
}

}  // namespace

std::optional<CountdownValue> EvalCountdownExpression(const std::string& expr, std::vector<int64_t>* used,
                                                      std::string* error) {
  CdParser p(expr, used);
  bool defined = true;
  auto v = p.Parse(&defined, error);
  if (!v) return std::nullopt;
  CountdownValue out;
  out.defined = defined;
  out.num = v->get_num().get_str();
  out.den = v->get_den().get_str();
  return out;
}

RewardResult CountdownVerifier::Verify(const protocol::RewardRequest& q) const {
  std::string err;
  auto ref = ParseReference(q, &err);
  if (!ref) return BadReference(q, err);
  if (!ref->contains("numbers") || !(*ref)["numbers"].is_array() || (*ref)["numbers"].empty()) {
    return BadReference(q, "numbers: expected a non-empty array of integers");
  }
  std::map<int64_t, int> avail;
  for (const auto& n : (*ref)["numbers"]) {
    if (!n.is_number_integer()) return BadReference(q, "numbers: expected integers");
    ++avail[n.get<int64_t>()];
  }
  if (!ref->contains("target") || !(*ref)["target"].is_number_integer()) return BadReference(q, "target: expected an integer");
  int64_t target = (*ref)["target"].get<int64_t>();
  bool use_all = ref->value("use_all", false);
  nlohmann::json detail = {{"target", target}};
  auto cand = Candidate(q, c_, &detail);
  if (!cand || cand->empty()) return NoAnswer(q, c_.values, detail);
  // "expr = target" / "target = expr"
  std::vector<std::string> parts;
  size_t p0 = 0;
  while (true) {
    size_t e = cand->find('=', p0);
    parts.push_back(Trim(cand->substr(p0, e == std::string::npos ? std::string::npos : e - p0)));
    if (e == std::string::npos) break;
    p0 = e + 1;
  }
  std::string expr;
  {
    // One side is the expression; every other side must be the target itself.
    size_t expr_idx = 0;
    int64_t v;
    if (parts.size() == 2 && ParseIntToken(parts[0], &v) && !ParseIntToken(parts[1], &v)) expr_idx = 1;
    for (size_t k = 0; k < parts.size(); ++k) {
      if (k == expr_idx) continue;
      if (!ParseIntToken(parts[k], &v)) {
        detail["reason"] = "more than one expression";
        return NoAnswer(q, c_.values, detail);
      }
      if (v != target) {
        detail["reason"] = "claims a different result";
        return Wrong(q, c_.values, detail);
      }
    }
    expr = parts[expr_idx];
  }
  if (expr.empty()) { detail["reason"] = "no expression"; return NoAnswer(q, c_.values, detail); }
  std::vector<int64_t> used;
  std::string perr;
  auto val = EvalCountdownExpression(expr, &used, &perr);
  if (!val) {
    detail["reason"] = "not an expression: " + perr;
    return NoAnswer(q, c_.values, detail);
  }
  std::map<int64_t, int> count;
  for (int64_t u : used) {
    if (++count[u] > (avail.count(u) ? avail[u] : 0)) {
      detail["reason"] = "uses " + std::to_string(u) + " more often than given";
      return Wrong(q, c_.values, detail);
    }
  }
  if (use_all && count != avail) { detail["reason"] = "does not use every number"; return Wrong(q, c_.values, detail); }
  if (!val->defined) { detail["reason"] = "division by zero"; return Wrong(q, c_.values, detail); }
  detail["value"] = val->den == "1" ? val->num : val->num + "/" + val->den;
  if (val->den == "1" && val->num == std::to_string(target)) return Correct(q, c_.values, detail);
  detail["reason"] = "value differs from the target";
  return Wrong(q, c_.values, detail);
}

RewardResult ListVerifier::Verify(const protocol::RewardRequest& q) const {
  std::string err;
  auto ref = ParseReference(q, &err);
  if (!ref) return BadReference(q, err);
  if (!ref->contains("answer") || !(*ref)["answer"].is_array()) return BadReference(q, "answer: expected an array of integers");
  std::vector<int64_t> gold;
  for (const auto& v : (*ref)["answer"]) {
    if (!v.is_number_integer()) return BadReference(q, "answer: expected integers");
    gold.push_back(v.get<int64_t>());
  }
  nlohmann::json detail;
  auto cand = Candidate(q, c_, &detail);
  if (!cand || cand->empty()) return NoAnswer(q, c_.values, detail);
  std::string s = *cand;
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  std::vector<int64_t> got;
  std::string tok;
  bool bad = false;
  auto flush = [&]() {
    if (tok.empty()) return;
    int64_t v;
    if (!ParseIntToken(tok, &v)) bad = true;
    else got.push_back(v);
    tok.clear();
  };
  for (char c : s) {
    if (c == ' ' || c == ',' || c == '\t') flush();
    else tok.push_back(c);
  }
  flush();
  if (bad || got.empty()) {
    detail["reason"] = "not a list of integers";
    return NoAnswer(q, c_.values, detail);
  }
  if (got == gold) return Correct(q, c_.values, detail);
  detail["reason"] = "different list";
  return Wrong(q, c_.values, detail);
}

RewardResult LatinVerifier::Verify(const protocol::RewardRequest& q) const {
  std::string err;
  auto ref = ParseReference(q, &err);
  if (!ref) return BadReference(q, err);
  if (!ref->contains("n") || !(*ref)["n"].is_number_integer()) return BadReference(q, "n: expected an integer");
  int n = (*ref)["n"].get<int>();
  if (n < 1 || n > 9) return BadReference(q, "n: expected 1..9");
  if (!ref->contains("grid") || !(*ref)["grid"].is_array() || static_cast<int>((*ref)["grid"].size()) != n) {
    return BadReference(q, "grid: expected n rows");
  }
  std::vector<std::vector<int>> given(n, std::vector<int>(n));
  for (int r = 0; r < n; ++r) {
    const auto& row = (*ref)["grid"][r];
    if (!row.is_array() || static_cast<int>(row.size()) != n) return BadReference(q, "grid: expected n x n");
    for (int c = 0; c < n; ++c) {
      if (!row[c].is_number_integer() || row[c].get<int>() < 0 || row[c].get<int>() > n) {
        return BadReference(q, "grid: expected integers 0..n");
      }
      given[r][c] = row[c].get<int>();
    }
  }
  nlohmann::json detail;
  std::string_view text = TailWindow(q.response_text, c_.tail_chars);
  // The rows follow the last anchor (possibly on the next lines); else a box; else the last n
  // non-empty lines.
  std::string region;
  std::string low = ToLower(text);
  size_t a = low.rfind("answer");
  if (auto b = LastBoxed(text)) {
    region = *b;
  } else if (a != std::string::npos) {
    size_t i = a + 6;
    while (i < text.size() && (text[i] == ':' || text[i] == ' ')) ++i;
    region = std::string(text.substr(i));
  } else {
    std::vector<std::string> lines;
    std::string_view rest = text;
    while (!rest.empty() && static_cast<int>(lines.size()) < n) {
      auto l = LastLine(rest);
      if (!l) break;
      lines.push_back(*l);
      size_t p = rest.rfind(*l);
      rest = rest.substr(0, p);
    }
    std::reverse(lines.begin(), lines.end());
    for (const auto& l : lines) region += l + "\n";
  }
  if (region.size() > c_.max_answer_chars) return NoAnswer(q, c_.values, {{"reason", "answer too long"}});
  std::vector<int> cells;
  for (char c : region) {
    if (c >= '1' && c <= '9') {
      cells.push_back(c - '0');
    } else if (!(std::isspace(static_cast<unsigned char>(c)) || c == ',' || c == ';' || c == '/' || c == '|' ||
                 c == '[' || c == ']' || c == '.' || c == '$')) {
      return NoAnswer(q, c_.values, {{"reason", std::string("unexpected character '") + c + "'"}});
    }
  }
  if (static_cast<int>(cells.size()) != n * n) {
    return NoAnswer(q, c_.values, {{"reason", "expected " + std::to_string(n * n) + " digits, got " + std::to_string(cells.size())}});
  }
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < n; ++c) {
      int v = cells[r * n + c];
      if (v > n) return Wrong(q, c_.values, {{"reason", "digit out of range"}});
      if (given[r][c] && given[r][c] != v) return Wrong(q, c_.values, {{"reason", "changes a given cell"}});
    }
  }
  for (int k = 0; k < n; ++k) {
    std::vector<bool> row(n + 1, false), col(n + 1, false);
    for (int j = 0; j < n; ++j) {
      int rv = cells[k * n + j], cv = cells[j * n + k];
      if (row[rv] || col[cv]) return Wrong(q, c_.values, {{"reason", "a row or column repeats a digit"}});
      row[rv] = col[cv] = true;
    }
  }
  return Correct(q, c_.values, detail);
}

}  // namespace lightrl::reward
