// Bounded text helpers shared by the verifiers (rewards.md §1 item 6): every verifier clips
// the response to a tail window first, and every scan here is linear in its input (no regex
// backtracking on model text).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lightrl::reward {

// The last `max_bytes` bytes of `s` (moved forward to a UTF-8 character boundary).
std::string_view TailWindow(std::string_view s, size_t max_bytes);
std::string Trim(std::string_view s);
std::string ToLower(std::string_view s);

// Where a final answer was found, in priority order of the extractor.
enum class AnswerSource { kBoxed, kAnchor, kHashes, kLastLine, kLastNumber };
const char* AnswerSourceName(AnswerSource s);

struct ExtractedAnswer {
  std::string text;
  AnswerSource source = AnswerSource::kBoxed;
};

// Content of the last \boxed{...} / \fbox{...} (brace matching; \{ and \} do not count), also
// the TeX short form "\boxed 5". When several boxes at the end are separated only by commas,
// "and"/"or", \quad, \text{and} or '$', they are joined as "a, b" (one answer given in parts).
// nullopt when there is none or the last one is unterminated.
std::optional<std::string> LastBoxed(std::string_view text);

// Text after the last answer anchor ("Answer:", "answer is", "final answer:", case-insensitive),
// to the end of that line; an anchor followed by \[ ... \] or $$ ... $$ takes the display math
// (which may span lines), one followed by $...$ or \( ... \) takes it only if it closes on the
// same line. A trailing '.' is dropped.
std::optional<std::string> LastAnchor(std::string_view text);

// "#### N" (GSM8K reference style): the rest of the line after the last "####".
std::optional<std::string> LastHashes(std::string_view text);

// The last non-empty line, trimmed.
std::optional<std::string> LastLine(std::string_view text);

// The final answer by priority: \boxed, anchor, ####, then (if allow_last_line) the last line.
std::optional<ExtractedAnswer> ExtractFinalAnswer(std::string_view text, bool allow_last_line);

}  // namespace lightrl::reward
