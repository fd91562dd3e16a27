#include "reward/math/math_verifier.h"

#include <cctype>

namespace lightrl::reward {

MathVerifierConfig ParseMathVerifierConfig(ConfigReader& r) {
  MathVerifierConfig c;
  c.values = ParseRewardValues(r);
  int64_t tail = r.Get<int64_t>("tail_chars", static_cast<int64_t>(c.tail_chars));
  if (tail < 16 || tail > (1 << 20)) r.Fail("tail_chars", "expected 16..1048576");
  c.tail_chars = static_cast<size_t>(tail);
  int64_t max_ans = r.Get<int64_t>("max_answer_chars", static_cast<int64_t>(c.max_answer_chars));
  if (max_ans < 1 || max_ans > 65536) r.Fail("max_answer_chars", "expected 1..65536");
  c.max_answer_chars = static_cast<size_t>(max_ans);
  c.fallback_last_number = r.Get<bool>("fallback_last_number", c.fallback_last_number);
  c.compare.float_rel_tol = r.Get<double>("float_rel_tol", c.compare.float_rel_tol);
  if (!(c.compare.float_rel_tol >= 0 && c.compare.float_rel_tol < 1)) r.Fail("float_rel_tol", "expected 0 <= x < 1");
  c.compare.require_plain_number = r.Get<bool>("require_plain_number", c.compare.require_plain_number);
  return c;
}

namespace {

bool IsPlainNumberText(const std::string& line) {
  std::string s;
  for (char c : line) if (c != '$' && c != ' ') s.push_back(c);
  while (!s.empty() && s.back() == '.') s.pop_back();
  if (s.empty()) return false;
  size_t i = 0;
  if (s[0] == '-' || s[0] == '+') ++i;
  bool digit = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (std::isdigit(static_cast<unsigned char>(c))) digit = true;
    else if (c != '.' && c != ',' && c != '/') return false;
  }
  return digit;
}

// A line that reads like prose ("let me think") is not a bare answer: no run of 4+ letters
// outside LaTeX commands.
bool LooksLikeMath(const std::string& line) {
  size_t run = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '\\') {
      ++i;
      while (i < line.size() && std::isalpha(static_cast<unsigned char>(line[i]))) ++i;
      --i;
      run = 0;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c))) {
      if (++run >= 4) return false;
    } else {
      run = 0;
    }
  }
  return true;
}

std::optional<std::string> LastNumber(std::string_view t) {
  size_t i = t.size();
  while (i > 0) {
    --i;
    if (!std::isdigit(static_cast<unsigned char>(t[i]))) continue;
    size_t e = i + 1, b = i;
    while (b > 0 && (std::isdigit(static_cast<unsigned char>(t[b - 1])) || t[b - 1] == '.' || t[b - 1] == ',')) --b;
    while (b < e && (t[b] == '.' || t[b] == ',')) ++b;
    if (b > 0 && t[b - 1] == '-') --b;
    bool glued = b > 0 && std::isalpha(static_cast<unsigned char>(t[b - 1]));
    if (glued) { i = b; continue; }
    return std::string(t.substr(b, e - b));
  }
  return std::nullopt;
}

}  // namespace

std::optional<ExtractedAnswer> ExtractMathAnswer(std::string_view text, bool fallback_last_number) {
  if (auto e = ExtractFinalAnswer(text, /*allow_last_line=*/false)) return e;
  auto line = LastLine(text);
  if (line && IsPlainNumberText(*line)) return ExtractedAnswer{*line, AnswerSource::kLastLine};
  if (fallback_last_number) {
    if (auto n = LastNumber(text)) return ExtractedAnswer{*n, AnswerSource::kLastNumber};
  }
  // A response that is one short line is its own answer ("x = 5").
  if (line && Trim(text) == *line && LooksLikeMath(*line)) return ExtractedAnswer{*line, AnswerSource::kLastLine};
  return std::nullopt;
}

std::vector<std::string> GoldAnswers(const nlohmann::json& ref, std::string* error) {
  std::vector<std::string> raw;
  auto take = [&](const nlohmann::json& v, const char* field) -> bool {
    if (v.is_string()) { raw.push_back(v.get<std::string>()); return true; }
    if (v.is_number_integer()) { raw.push_back(std::to_string(v.get<int64_t>())); return true; }
    if (v.is_number()) { raw.push_back(v.dump()); return true; }
    *error = std::string(field) + ": expected a string or a number";
    return false;
  };
  if (ref.contains("answers")) {
    if (!ref["answers"].is_array() || ref["answers"].empty()) { *error = "answers: expected a non-empty array"; return {}; }
    for (const auto& a : ref["answers"]) if (!take(a, "answers[]")) return {};
  } else if (ref.contains("answer")) {
    if (!take(ref["answer"], "answer")) return {};
  } else if (ref.contains("solution")) {
    if (!ref["solution"].is_string()) { *error = "solution: expected a string"; return {}; }
    raw.push_back(ref["solution"].get<std::string>());
  } else {
    *error = "expected an 'answer', 'answers' or 'solution' field";
    return {};
  }
  std::vector<std::string> out;
  for (const auto& r : raw) {
    if (auto b = LastBoxed(r)) out.push_back(*b);
    else if (auto h = LastHashes(r)) out.push_back(*h);
    else if (ref.contains("solution") && !ref.contains("answer") && !ref.contains("answers")) {
      *error = "solution: no \\boxed{} answer in it";
      return {};
    } else {
      out.push_back(r);
    }
  }
  return out;
}

RewardResult MathVerifier::Verify(const protocol::RewardRequest& q) const {
  std::string err;
  auto ref = ParseReference(q, &err);
  if (!ref) return BadReference(q, err);
  std::vector<std::string> golds = GoldAnswers(*ref, &err);
  if (golds.empty()) return BadReference(q, err);
  std::vector<math::AnswerHandle> gold_parsed;
  for (const auto& g : golds) {
    math::AnswerHandle h = math::ParseAnswer(g);
    if (!h.ok()) return BadReference(q, "gold answer '" + Clip(g) + "': " + h.error);
    gold_parsed.push_back(std::move(h));
  }
  std::string_view text = TailWindow(q.response_text, config_.tail_chars);
  auto ext = ExtractMathAnswer(text, config_.fallback_last_number);
  nlohmann::json detail = {{"gold", Clip(golds[0])}};
  if (!ext) {
    detail["reason"] = "no final answer found";
    return NoAnswer(q, config_.values, detail);
  }
  detail["extracted"] = Clip(ext->text);
  detail["from"] = AnswerSourceName(ext->source);
  if (ext->text.size() > config_.max_answer_chars) {
    detail["reason"] = "answer longer than max_answer_chars";
    return NoAnswer(q, config_.values, detail);
  }
  math::AnswerHandle pred = math::ParseAnswer(ext->text);
  if (!pred.ok()) detail["parse_error"] = pred.error;
  for (const auto& g : gold_parsed) {
    if (math::Compare(g, pred, config_.compare)) return Correct(q, config_.values, detail);
  }
  if (!pred.ok() && ext->source == AnswerSource::kLastLine) {
    detail["reason"] = "last line is not an answer";
    return NoAnswer(q, config_.values, detail);
  }
  return Wrong(q, config_.values, detail);
}

}  // namespace lightrl::reward
