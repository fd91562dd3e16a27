#include "reward/text_util.h"

#include <cctype>

namespace lightrl::reward {

std::string_view TailWindow(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t start = s.size() - max_bytes;
  while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
  return s.substr(start);
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const char* AnswerSourceName(AnswerSource s) {
  switch (s) {
    case AnswerSource::kBoxed: return "boxed";
    case AnswerSource::kAnchor: return "anchor";
    case AnswerSource::kHashes: return "hashes";
    case AnswerSource::kLastLine: return "last_line";
    case AnswerSource::kLastNumber: return "last_number";
  }
  return "?";
}

namespace {

// Finds the matching '}' for the '{' at `open`; escaped braces (\{ \}) are skipped.
size_t MatchBrace(std::string_view t, size_t open) {
  int depth = 0;
  for (size_t i = open; i < t.size(); ++i) {
    char c = t[i];
    if (c == '\\' && i + 1 < t.size()) { ++i; continue; }
    if (c == '{') ++depth;
    else if (c == '}' && --depth == 0) return i;
  }
  return std::string_view::npos;
}

struct Box { size_t begin, end; std::string content; };

// The box whose command starts at `cmd` (after "\boxed" / "\fbox" of length `len`).
std::optional<Box> ParseBox(std::string_view t, size_t cmd, size_t len) {
  size_t i = cmd + len;
  while (i < t.size() && t[i] == ' ') ++i;
  if (i < t.size() && t[i] == '{') {
    size_t close = MatchBrace(t, i);
    if (close == std::string_view::npos) return std::nullopt;
    return Box{cmd, close + 1, std::string(t.substr(i + 1, close - i - 1))};
  }
  if (i == cmd + len) return std::nullopt;  // "\boxedx" is another command
  size_t j = i;
  while (j < t.size() && !std::isspace(static_cast<unsigned char>(t[j])) && t[j] != '$') ++j;
  if (j == i) return std::nullopt;
  return Box{cmd, j, std::string(t.substr(i, j - i))};
}

bool IsJoiner(std::string_view gap) {
  std::string g = ToLower(gap);
  for (const char* w : {"\\text{and}", "\\text{ and }", "\\text{or}", "\\text{ or }", "\\qquad", "\\quad", "and", "or"}) {
    size_t p;
    std::string ws(w);
    while ((p = g.find(ws)) != std::string::npos) g.erase(p, ws.size());
  }
  for (char c : g) {
    if (!(std::isspace(static_cast<unsigned char>(c)) || c == ',' || c == ';' || c == '$' || c == '\\' || c == '~')) return false;
  }
  return true;
}

bool IsLineEnd(char c) { return c == '\n' || c == '\r'; }

}  // namespace

std::optional<std::string> LastBoxed(std::string_view t) {
  std::vector<Box> boxes;
  size_t pos = 0;
  while (pos < t.size()) {
    size_t a = t.find("\\boxed", pos), b = t.find("\\fbox", pos);
    size_t p = std::min(a, b);
    if (p == std::string_view::npos) break;
    size_t len = p == a ? 6 : 5;
    auto box = ParseBox(t, p, len);
    if (box) {
      boxes.push_back(*box);
      pos = box->end;
    } else {
      pos = p + len;
      if (p == a || p == b) {
        // An unterminated last box: the answer is malformed.
        if (t.find("\\boxed", pos) == std::string_view::npos && t.find("\\fbox", pos) == std::string_view::npos) {
          return std::nullopt;
        }
      }
    }
  }
  if (boxes.empty()) return std::nullopt;
  size_t first = boxes.size() - 1;
  while (first > 0 && IsJoiner(t.substr(boxes[first - 1].end, boxes[first].begin - boxes[first - 1].end))) --first;
  if (first == boxes.size() - 1) return boxes.back().content;
  std::string joined;
  for (size_t i = first; i < boxes.size(); ++i) joined += (i > first ? ", " : "") + boxes[i].content;
  return joined;
}

std::optional<std::string> LastAnchor(std::string_view t) {
  std::string low = ToLower(t);
  size_t search = low.size();
  while (search > 0) {
    size_t p = low.rfind("answer", search - 1);
    if (p == std::string::npos) return std::nullopt;
    search = p;
    size_t i = p + 6;
    auto skip_spaces = [&]() { while (i < t.size() && (t[i] == ' ' || t[i] == '\t')) ++i; };
    skip_spaces();
    bool sep = false;
    if (i < t.size() && t[i] == ':') { sep = true; ++i; }
    else if (low.compare(i, 2, "is") == 0 && (i + 2 >= low.size() || !std::isalpha(static_cast<unsigned char>(low[i + 2])))) {
      sep = true;
      i += 2;
      skip_spaces();
      if (i < t.size() && t[i] == ':') ++i;
    }
    skip_spaces();
    std::string_view rest = t.substr(i);
    // display math (may span lines), inline math (one line)
    struct Env { const char* open; const char* close; bool multiline; };
    bool handled = false;
    for (Env e : {Env{"\\[", "\\]", true}, Env{"$$", "$$", true}, Env{"\\(", "\\)", false}, Env{"$", "$", false}}) {
      std::string_view open(e.open), close(e.close);
      if (rest.substr(0, open.size()) != open) continue;
      size_t end = rest.find(close, open.size());
      if (end != std::string_view::npos) {
        std::string_view inner = rest.substr(open.size(), end - open.size());
        if (e.multiline || inner.find('\n') == std::string_view::npos) {
          std::string v = Trim(inner);
          if (!v.empty()) return v;
        }
      }
      handled = std::string_view(e.open) != "$";  // a lone '$' may be a currency sign
      break;
    }
    if (handled || !sep) continue;
    size_t e = 0;
    while (e < rest.size() && !IsLineEnd(rest[e])) ++e;
    std::string line = Trim(rest.substr(0, e));
    while (!line.empty() && (line.back() == '.' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) return line;
  }
  return std::nullopt;
}

std::optional<std::string> LastHashes(std::string_view t) {
  size_t p = t.rfind("####");
  if (p == std::string_view::npos) return std::nullopt;
  size_t e = p + 4;
  while (e < t.size() && !IsLineEnd(t[e])) ++e;
  std::string s = Trim(t.substr(p + 4, e - p - 4));
  if (s.empty()) return std::nullopt;
  return s;
}

std::optional<std::string> LastLine(std::string_view t) {
  size_t e = t.size();
  while (e > 0) {
    size_t b = e;
    while (b > 0 && !IsLineEnd(t[b - 1])) --b;
    std::string line = Trim(t.substr(b, e - b));
    if (!line.empty()) return line;
    if (b == 0) break;
    e = b - 1;
  }
  return std::nullopt;
}

std::optional<ExtractedAnswer> ExtractFinalAnswer(std::string_view text, bool allow_last_line) {
  if (auto b = LastBoxed(text)) return ExtractedAnswer{*b, AnswerSource::kBoxed};
  if (auto a = LastAnchor(text)) return ExtractedAnswer{*a, AnswerSource::kAnchor};
  if (auto h = LastHashes(text)) return ExtractedAnswer{*h, AnswerSource::kHashes};
  if (allow_last_line) {
    if (auto l = LastLine(text)) return ExtractedAnswer{*l, AnswerSource::kLastLine};
  }
  return std::nullopt;
}

}  // namespace lightrl::reward
