#include "model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"
#include "core/config/config.h"

namespace lightrl::model {

namespace {

using json = nlohmann::json;

// ---- byte-level alphabet (GPT-2 bytes_to_unicode) ---------------------------------------------

// Code point that byte b is written as in a byte-level vocabulary.
std::vector<uint32_t> ByteToCodepoint() {
  std::vector<uint32_t> cp(256, 0);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b) cp[b] = direct[b] ? static_cast<uint32_t>(b) : 256 + n++;
  return cp;
}

void AppendUtf8(uint32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// Decodes valid UTF-8 into code points; false on malformed input.
bool DecodeUtf8(const std::string& s, std::vector<uint32_t>* out) {
  out->clear();
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    out->push_back(cp);
    i += len;
  }
  return true;
}

// Byte-level vocabulary string -> raw bytes; nullopt if it uses a code point outside the alphabet.
std::optional<std::string> ByteLevelToBytes(const std::string& token, const std::map<uint32_t, uint8_t>& inverse) {
  std::vector<uint32_t> cps;
  if (!DecodeUtf8(token, &cps)) return std::nullopt;
  std::string out;
  for (uint32_t c : cps) {
    auto it = inverse.find(c);
    if (it == inverse.end()) return std::nullopt;
    out.push_back(static_cast<char>(it->second));
  }
  return out;
}

// Leftmost-longest occurrences of `added` token texts in `text`: calls segment(text piece) for
// ordinary runs and token(id) for matches.
template <typename Seg, typename Tok>
void SplitOnAdded(const std::string& text, const std::map<std::string, int64_t>& added, Seg segment, Tok token) {
  if (added.empty()) {
    if (!text.empty()) segment(text);
    return;
  }
  size_t start = 0, i = 0;
  while (i < text.size()) {
    // Candidates share the first byte: the map is ordered, so scan the range of that byte.
    const std::string first(1, text[i]);
    const std::string* best = nullptr;
    int64_t best_id = -1;
    for (auto it = added.lower_bound(first); it != added.end() && it->first[0] == text[i]; ++it) {
      if (it->first.size() > text.size() - i) continue;
      if (text.compare(i, it->first.size(), it->first) == 0 && (!best || it->first.size() > best->size())) {
        best = &it->first;
        best_id = it->second;
      }
    }
    if (best) {
      if (i > start) segment(text.substr(start, i - start));
      token(best_id);
      i += best->size();
      start = i;
    } else {
      ++i;
    }
  }
  if (start < text.size()) segment(text.substr(start));
}

}  // namespace

// ---- ByteTokenizer ---------------------------------------------------------------------------

std::vector<std::string> ByteTokenizer::DefaultSpecials() {
  return {"<|bos|>", "<|eos|>", "<|pad|>", "<|end_of_turn|>"};
}

ByteTokenizer::ByteTokenizer(std::vector<std::string> specials, std::vector<std::string> stop_tokens)
    : specials_(std::move(specials)) {
  for (size_t i = 0; i < specials_.size(); ++i) added_[specials_[i]] = 256 + static_cast<int64_t>(i);
  for (size_t i = 0; i < specials_.size(); ++i) {
    LR_CHECK(!specials_[i].empty(), "ByteTokenizer: specials[", i, "] is empty");
    for (size_t j = 0; j < i; ++j) LR_CHECK(specials_[j] != specials_[i], "ByteTokenizer: duplicate special '", specials_[i], "'");
  }
  for (const std::string& s : stop_tokens) {
    auto id = TokenId(s);
    LR_CHECK(id.has_value(), "ByteTokenizer: stop token '", s, "' is not one of the specials");
    stop_ids_.push_back(*id);
  }
}

std::vector<int64_t> ByteTokenizer::EncodeOrdinary(const std::string& text) const {
  std::vector<int64_t> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::vector<int64_t> ByteTokenizer::Encode(const std::string& text) const {
  std::vector<int64_t> out;
  out.reserve(text.size());
  SplitOnAdded(
      text, added_,
      [&](const std::string& seg) {
        for (char c : seg) out.push_back(static_cast<unsigned char>(c));
      },
      [&](int64_t id) { out.push_back(id); });
  return out;
}

std::string ByteTokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int64_t id : ids) {
    if (id >= 0 && id < 256) {
      out.push_back(static_cast<char>(id));
    } else if (id >= 256 && id < vocab_size()) {
      out += specials_[id - 256];
    }
  }
  return out;
}

std::optional<int64_t> ByteTokenizer::TokenId(const std::string& special) const {
  for (size_t i = 0; i < specials_.size(); ++i) {
    if (specials_[i] == special) return 256 + static_cast<int64_t>(i);
  }
  return std::nullopt;
}

// ---- HfBpeTokenizer ------------------------------------------------------------------------

struct HfBpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
  // Splits [0, s.size()) into matched pieces and the gaps between them (HF Split "Isolated").
  void SplitIsolated(const std::string& s, std::vector<std::string>* out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    LR_CHECK(md != nullptr, "tokenizer: out of memory for PCRE2 match data");
    size_t piece_start = 0, search = 0;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    while (search <= s.size()) {
      const int rc = pcre2_match(code, subject, s.size(), search, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(rc, buf, sizeof(buf));
        pcre2_match_data_free(md);
        LR_FAIL("tokenizer: PCRE2 match failed: ", reinterpret_cast<const char*>(buf));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: nothing to emit, search on from the next byte
        search = b + 1;
        continue;
      }
      if (b > piece_start) out->push_back(s.substr(piece_start, b - piece_start));
      out->push_back(s.substr(b, e - b));
      piece_start = search = e;
    }
    if (piece_start < s.size()) out->push_back(s.substr(piece_start));
    pcre2_match_data_free(md);
  }
};

HfBpeTokenizer::HfBpeTokenizer() = default;
HfBpeTokenizer::~HfBpeTokenizer() = default;

namespace {

// The GPT-2 pre-tokenizer regex (HF ByteLevel with use_regex: true).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

StatusOr<std::shared_ptr<HfBpeTokenizer::Regex>> CompileRegexImpl(const std::string& pattern,
                                                                  const std::string& field) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return InvalidArgument(StrCat(field, ": regex does not compile at offset ", offset, ": ",
                                  reinterpret_cast<const char*>(buf)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort; the interpreter is the fallback
  auto r = std::make_shared<HfBpeTokenizer::Regex>();
  r->code = code;
  return r;
}

}  // namespace

StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::FromFile(const std::string& path,
                                                                  const HfTokenizerOptions& options) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound("cannot open tokenizer file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  HfTokenizerOptions opts = options;
  if (opts.stop_tokens.empty()) {
    // eos_token of a tokenizer_config.json in the same directory (string or {content: ...}).
    const auto cfg_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    std::ifstream cf(cfg_path);
    if (cf) {
      try {
        json cfg = json::parse(cf);
        if (cfg.contains("eos_token")) {
          const json& e = cfg["eos_token"];
          if (e.is_string()) opts.stop_tokens.push_back(e.get<std::string>());
          if (e.is_object() && e.contains("content") && e["content"].is_string())
            opts.stop_tokens.push_back(e["content"].get<std::string>());
        }
      } catch (const json::exception& e) {
        return InvalidArgument(StrCat(cfg_path.string(), ": not valid JSON: ", e.what()));
      }
      if (!opts.stop_tokens.empty()) opts.stop_tokens.push_back("");  // marker: keep known names too
    }
  }
  return FromJson(ss.str(), path, opts);
}

StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::FromJson(const std::string& text, const std::string& origin,
                                                                  const HfTokenizerOptions& options) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument(StrCat(origin, ": not valid JSON: ", e.what()));
  }
  auto bad = [&](const std::string& field, const std::string& what) {
    return InvalidArgument(StrCat(origin, ": ", field, ": ", what));
  };
  auto unsupported = [&](const std::string& field, const std::string& what) {
    return Unimplemented(StrCat(origin, ": ", field, ": ", what));
  };
  if (!doc.is_object()) return bad("<root>", "expected a JSON object");
  std::unique_ptr<HfBpeTokenizer> tok(new HfBpeTokenizer());

  // normalizer
  if (doc.contains("normalizer") && !doc["normalizer"].is_null() && !options.ignore_normalizer) {
    std::string type = doc["normalizer"].value("type", std::string("?"));
    return unsupported("normalizer.type", "normalizer '" + type +
                                              "' is not implemented; set tokenizer.ignore_normalizer: true to encode "
                                              "text without it");
  }

  // model
  if (!doc.contains("model") || !doc["model"].is_object()) return bad("model", "missing or not an object");
  const json& m = doc["model"];
  const std::string mtype = m.value("type", std::string("BPE"));
  if (mtype != "BPE") return unsupported("model.type", "only BPE is implemented, got '" + mtype + "'");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && !m[key].is_null() && !(m[key].is_string() && m[key].get<std::string>().empty()))
      return unsupported(StrCat("model.", key), "not implemented (byte-level BPE does not use it)");
  }
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    return unsupported("model.dropout", "BPE dropout is not implemented");
  tok->ignore_merges_ = m.value("ignore_merges", false);
  if (!m.contains("vocab") || !m["vocab"].is_object()) return bad("model.vocab", "missing or not an object");

  const std::vector<uint32_t> b2c = ByteToCodepoint();
  std::map<uint32_t, uint8_t> c2b;
  for (int b = 0; b < 256; ++b) c2b[b2c[b]] = static_cast<uint8_t>(b);

  int64_t max_id = -1;
  std::map<int64_t, std::string> id_text;  // id -> vocabulary text (byte-level form)
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      return bad("model.vocab[\"" + it.key() + "\"]", "expected a non-negative integer id");
    const int64_t id = it.value().get<int64_t>();
    if (id_text.count(id)) return bad("model.vocab[\"" + it.key() + "\"]", StrCat("id ", id, " is used twice"));
    id_text[id] = it.key();
    max_id = std::max(max_id, id);
  }
  // added tokens
  std::map<int64_t, std::string> added_text;
  if (doc.contains("added_tokens") && !doc["added_tokens"].is_null()) {
    if (!doc["added_tokens"].is_array()) return bad("added_tokens", "expected a list");
    for (size_t i = 0; i < doc["added_tokens"].size(); ++i) {
      const json& a = doc["added_tokens"][i];
      const std::string field = StrCat("added_tokens[", i, "]");
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        return bad(field, "expected {id: int, content: string, ...}");
      const std::string content = a["content"].get<std::string>();
      if (content.empty()) return bad(field + ".content", "must not be empty");
      for (const char* flag : {"single_word", "lstrip", "rstrip"}) {
        if (a.value(flag, false))
          return unsupported(StrCat(field, ".", flag), "true is not implemented (added tokens match exact text)");
      }
      const int64_t id = a["id"].get<int64_t>();
      if (id < 0) return bad(field + ".id", "must be >= 0");
      added_text[id] = content;
      tok->added_[content] = id;
      max_id = std::max(max_id, id);
    }
  }
  tok->vocab_size_ = max_id + 1;
  tok->id_to_bytes_.assign(tok->vocab_size_, "");
  tok->has_token_.assign(tok->vocab_size_, false);
  for (const auto& [id, t] : id_text) {
    if (added_text.count(id)) continue;  // an added token's text is literal
    auto bytes = ByteLevelToBytes(t, c2b);
    if (!bytes) {
      return bad("model.vocab[\"" + t + "\"]",
                 "not a byte-level token (uses characters outside the GPT-2 byte alphabet); only byte-level BPE "
                 "vocabularies are supported");
    }
    tok->token_to_id_[*bytes] = id;
    tok->id_to_bytes_[id] = *bytes;
    tok->has_token_[id] = true;
  }
  for (const auto& [id, t] : added_text) {
    tok->id_to_bytes_[id] = t;
    tok->has_token_[id] = true;
  }
  for (int b = 0; b < 256; ++b) {
    if (!tok->token_to_id_.count(std::string(1, static_cast<char>(b)))) {
      std::string shown;
      AppendUtf8(b2c[b], &shown);
      return bad("model.vocab", StrCat("the byte-level alphabet is incomplete: no token for byte ", b, " ('", shown,
                                       "'); byte-level BPE needs all 256"));
    }
  }
  // merges: "a b" strings or [a, b] pairs
  if (m.contains("merges") && !m["merges"].is_null()) {
    if (!m["merges"].is_array()) return bad("model.merges", "expected a list");
    for (size_t i = 0; i < m["merges"].size(); ++i) {
      const json& e = m["merges"][i];
      const std::string field = StrCat("model.merges[", i, "]");
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
          return bad(field, "expected \"left right\" (two tokens separated by one space), got \"" + s + "\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        return bad(field, "expected \"left right\" or [left, right]");
      }
      auto ab = ByteLevelToBytes(a, c2b), bb = ByteLevelToBytes(b, c2b);
      if (!ab || !bb) return bad(field, "uses characters outside the byte-level alphabet");
      if (!tok->token_to_id_.count(*ab + *bb))
        return bad(field, "the merged token \"" + a + b + "\" is not in model.vocab");
      tok->merge_rank_.emplace(std::make_pair(*ab, *bb), static_cast<int64_t>(i));
    }
  }

  // pre_tokenizer
  bool byte_level_seen = false;
  std::function<Status(const json&, const std::string&)> add_pre = [&](const json& p, const std::string& field) -> Status {
    if (p.is_null()) return Status::Ok();
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
      return bad(field, "expected an object with a \"type\"");
    const std::string type = p["type"].get<std::string>();
    if (type == "Sequence") {
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array())
        return bad(field + ".pretokenizers", "expected a list");
      for (size_t i = 0; i < p["pretokenizers"].size(); ++i)
        LR_RETURN_IF_ERROR(add_pre(p["pretokenizers"][i], StrCat(field, ".pretokenizers[", i, "]")));
      return Status::Ok();
    }
    if (type == "ByteLevel") {
      byte_level_seen = true;
      if (p.value("add_prefix_space", false)) tok->add_prefix_space_ = true;
      if (p.value("use_regex", true)) {
        LR_ASSIGN_OR_RETURN(auto re, CompileRegexImpl(kGpt2Pattern, field));
        tok->pre_steps_.push_back({PreStep::kByteLevelRegex, re});
      }
      return Status::Ok();
    }
    if (type == "Split") {
      const std::string behavior = p.value("behavior", std::string("Isolated"));
      if (behavior != "Isolated")
        return unsupported(field + ".behavior", "only \"Isolated\" is implemented, got \"" + behavior + "\"");
      if (p.value("invert", false)) return unsupported(field + ".invert", "true is not implemented");
      if (!p.contains("pattern") || !p["pattern"].is_object()) return bad(field + ".pattern", "expected {Regex: ...}");
      std::string pattern;
      if (p["pattern"].contains("Regex") && p["pattern"]["Regex"].is_string()) {
        pattern = p["pattern"]["Regex"].get<std::string>();
      } else if (p["pattern"].contains("String") && p["pattern"]["String"].is_string()) {
        // A literal: quote it for PCRE2.
        pattern = "\\Q" + p["pattern"]["String"].get<std::string>() + "\\E";
      } else {
        return bad(field + ".pattern", "expected {Regex: string} or {String: string}");
      }
      LR_ASSIGN_OR_RETURN(auto re, CompileRegexImpl(pattern, field + ".pattern"));
      tok->pre_steps_.push_back({PreStep::kSplitIsolated, re});
      return Status::Ok();
    }
    return unsupported(field + ".type", "pre-tokenizer '" + type +
                                            "' is not implemented (supported: ByteLevel, Split/Isolated, Sequence)");
  };
  if (doc.contains("pre_tokenizer")) LR_RETURN_IF_ERROR(add_pre(doc["pre_tokenizer"], "pre_tokenizer"));
  // decoder: must be byte-level (or absent)
  if (doc.contains("decoder") && !doc["decoder"].is_null()) {
    const json& d = doc["decoder"];
    const std::string type = d.is_object() ? d.value("type", std::string("?")) : std::string("?");
    if (type != "ByteLevel")
      return unsupported("decoder.type", "only the ByteLevel decoder is implemented, got '" + type + "'");
    byte_level_seen = true;
  }
  if (!byte_level_seen)
    return unsupported("pre_tokenizer", "not a byte-level tokenizer (no ByteLevel pre-tokenizer or decoder)");

  // stop tokens
  std::vector<std::string> names = options.stop_tokens;
  bool add_known = names.empty();
  if (!names.empty() && names.back().empty()) {  // from tokenizer_config.json: known names as well
    names.pop_back();
    add_known = true;
  }
  for (const std::string& n : names) {
    auto id = tok->TokenId(n);
    if (!id) return bad("stop_tokens", "'" + n + "' is not a token of this tokenizer");
    if (std::find(tok->stop_ids_.begin(), tok->stop_ids_.end(), *id) == tok->stop_ids_.end())
      tok->stop_ids_.push_back(*id);
  }
  if (add_known) {
    for (const char* n : {"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>",
                          "<end_of_sentence>", "<|eos|>", "<|end_of_turn|>"}) {
      auto id = tok->TokenId(n);
      if (id && std::find(tok->stop_ids_.begin(), tok->stop_ids_.end(), *id) == tok->stop_ids_.end())
        tok->stop_ids_.push_back(*id);
    }
  }
  return tok;
}

std::optional<int64_t> HfBpeTokenizer::TokenId(const std::string& special) const {
  auto it = added_.find(special);
  if (it != added_.end()) return it->second;
  auto jt = token_to_id_.find(special);  // a plain vocabulary token spelled in raw bytes
  if (jt != token_to_id_.end()) return jt->second;
  return std::nullopt;
}

std::vector<std::string> HfBpeTokenizer::PreTokenize(const std::string& segment) const {
  std::vector<std::string> pieces = {add_prefix_space_ && (segment.empty() || segment[0] != ' ') ? " " + segment
                                                                                                  : segment};
  for (const PreStep& step : pre_steps_) {
    std::vector<std::string> next;
    for (const std::string& p : pieces) step.regex->SplitIsolated(p, &next);
    pieces = std::move(next);
  }
  return pieces;
}

std::vector<int64_t> HfBpeTokenizer::EncodePiece(const std::string& piece) const {
  std::vector<int64_t> out;
  if (piece.empty()) return out;
  if (ignore_merges_) {
    auto it = token_to_id_.find(piece);
    if (it != token_to_id_.end()) return {it->second};
  }
  // Classic BPE: start from bytes, repeatedly merge the adjacent pair of lowest rank (all its
  // non-overlapping occurrences, left to right).
  std::vector<std::string> sym;
  sym.reserve(piece.size());
  for (char c : piece) sym.emplace_back(1, c);
  while (sym.size() > 1) {
    int64_t best = std::numeric_limits<int64_t>::max();
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = merge_rank_.find({sym[i], sym[i + 1]});
      if (it != merge_rank_.end() && it->second < best) best = it->second;
    }
    if (best == std::numeric_limits<int64_t>::max()) break;
    std::vector<std::string> next;
    next.reserve(sym.size());
    for (size_t i = 0; i < sym.size(); ++i) {
      if (i + 1 < sym.size()) {
        auto it = merge_rank_.find({sym[i], sym[i + 1]});
        if (it != merge_rank_.end() && it->second == best) {
          next.push_back(sym[i] + sym[i + 1]);
          ++i;
          continue;
        }
      }
      next.push_back(sym[i]);
    }
    sym = std::move(next);
  }
  out.reserve(sym.size());
  for (const std::string& s : sym) out.push_back(token_to_id_.at(s));  // merges were checked at load
  return out;
}

void HfBpeTokenizer::EncodeSegment(const std::string& segment, std::vector<int64_t>* out) const {
  for (const std::string& piece : PreTokenize(segment)) {
    std::vector<int64_t> ids = EncodePiece(piece);
    out->insert(out->end(), ids.begin(), ids.end());
  }
}

std::vector<int64_t> HfBpeTokenizer::Encode(const std::string& text) const {
  std::vector<int64_t> out;
  SplitOnAdded(
      text, added_, [&](const std::string& seg) { EncodeSegment(seg, &out); }, [&](int64_t id) { out.push_back(id); });
  return out;
}

std::vector<int64_t> HfBpeTokenizer::EncodeOrdinary(const std::string& text) const {
  std::vector<int64_t> out;
  if (!text.empty()) EncodeSegment(text, &out);
  return out;
}

std::string HfBpeTokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id >= 0 && id < vocab_size_ && has_token_[id]) out += id_to_bytes_[id];
  }
  return out;
}

// ---- BuildTokenizer ------------------------------------------------------------------------

StatusOr<std::unique_ptr<Tokenizer>> BuildTokenizer(const YAML::Node& block, const std::string& path) {
  return ParseConfig<std::unique_ptr<Tokenizer>>([&]() -> std::unique_ptr<Tokenizer> {
    ConfigReader r(block, path);
    const std::string type = r.Get<std::string>("type", "byte");
    if (type == "byte") {
      auto specials = r.Get<std::vector<std::string>>("specials", ByteTokenizer::DefaultSpecials());
      auto stop = r.Get<std::vector<std::string>>("stop_tokens", {"<|eos|>", "<|end_of_turn|>"});
      r.Finish();
      for (size_t i = 0; i < specials.size(); ++i) {
        if (specials[i].empty()) r.Fail("specials", StrCat("entry ", i, " is empty"));
        for (size_t j = 0; j < i; ++j)
          if (specials[j] == specials[i]) r.Fail("specials", "duplicate '" + specials[i] + "'");
      }
      for (const auto& s : stop) {
        if (std::find(specials.begin(), specials.end(), s) == specials.end())
          r.Fail("stop_tokens", "'" + s + "' is not one of the specials");
      }
      return std::make_unique<ByteTokenizer>(specials, stop);
    }
    if (type == "hf") {
      const std::string file = r.Get<std::string>("path");
      HfTokenizerOptions o;
      o.stop_tokens = r.Get<std::vector<std::string>>("stop_tokens", {});
      o.ignore_normalizer = r.Get<bool>("ignore_normalizer", false);
      r.Finish();
      auto tok = HfBpeTokenizer::FromFile(file, o);
      if (!tok.ok()) r.Fail("path", tok.status().message());
      return std::unique_ptr<Tokenizer>(std::move(tok).value());
    }
    r.Fail("type", "expected 'byte' or 'hf', got '" + type + "'");
  });
}

// ---- ChatTemplate ----------------------------------------------------------------------------

std::string ChatTemplate::RenderPrompt(const std::string& user, const std::string& system) const {
  std::string out = bos;
  const std::string& sys = system.empty() ? default_system : system;
  if (!sys.empty()) out += system_prefix + sys + system_suffix;
  out += user_prefix + user + user_suffix + assistant_prefix;
  if (open_think) out += think_open;
  return out;
}

StatusOr<std::string> ChatTemplate::RenderConversation(const std::vector<Message>& messages,
                                                       bool add_generation_prompt) const {
  std::string out = bos;
  size_t i = 0;
  std::string sys = default_system;
  if (!messages.empty() && messages[0].role == "system") {
    sys = messages[0].content;
    i = 1;
  }
  if (!sys.empty()) out += system_prefix + sys + system_suffix;
  for (; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "user") {
      out += user_prefix + m.content + user_suffix;
    } else if (m.role == "assistant") {
      out += assistant_prefix + m.content + assistant_suffix;
    } else if (m.role == "system") {
      return InvalidArgument(StrCat("messages[", i, "].role: a system message must come first"));
    } else {
      return InvalidArgument(
          StrCat("messages[", i, "].role: expected 'system', 'user' or 'assistant', got '", m.role, "'"));
    }
  }
  if (add_generation_prompt) {
    out += assistant_prefix;
    if (open_think) out += think_open;
  }
  return out;
}

std::string ChatTemplate::RenderTarget(const std::string& response) const { return response + assistant_suffix; }

ChatTemplate::ThinkSplit ChatTemplate::SplitThinking(const std::string& response) const {
  ThinkSplit s;
  size_t begin = 0;
  if (!open_think) {
    const size_t o = think_open.empty() ? std::string::npos : response.find(think_open);
    if (o == std::string::npos) {  // no reasoning block at all: everything is the answer
      s.answer = response;
      s.closed = true;
      return s;
    }
    begin = o + think_open.size();
  }
  const size_t c = think_close.empty() ? std::string::npos : response.find(think_close, begin);
  if (c == std::string::npos) {
    s.thinking = response.substr(begin);
    return s;
  }
  s.thinking = response.substr(begin, c - begin);
  s.answer = response.substr(c + think_close.size());
  s.closed = true;
  return s;
}

StatusOr<ChatTemplate> ChatTemplatePreset(const std::string& name) {
  ChatTemplate t;
  if (name == "none") return t;
  if (name == "tiny") {
    t.bos = "<|bos|>";
    t.system_prefix = "System: ";
    t.system_suffix = "<|end_of_turn|>";
    t.user_prefix = "User: ";
    t.user_suffix = "<|end_of_turn|>";
    t.assistant_prefix = "Assistant: ";
    t.assistant_suffix = "<|end_of_turn|>";
    return t;
  }
  if (name == "chatml") {
    t.system_prefix = "<|im_start|>system\n";
    t.system_suffix = "<|im_end|>\n";
    t.user_prefix = "<|im_start|>user\n";
    t.user_suffix = "<|im_end|>\n";
    t.assistant_prefix = "<|im_start|>assistant\n";
    t.assistant_suffix = "<|im_end|>";
    return t;
  }
  return InvalidArgument("unknown chat template preset '" + name + "' (expected none, tiny, chatml)");
}

StatusOr<ChatTemplate> ParseChatTemplate(const YAML::Node& block, const std::string& path) {
  return ParseConfig<ChatTemplate>([&]() -> ChatTemplate {
    ConfigReader r(block, path);
    const std::string preset = r.Get<std::string>("preset", "tiny");
    auto base = ChatTemplatePreset(preset);
    if (!base.ok()) r.Fail("preset", base.status().message());
    ChatTemplate t = *base;
    auto str = [&](const char* key, std::string* field) { *field = r.Get<std::string>(key, *field); };
    str("bos", &t.bos);
    str("system_prefix", &t.system_prefix);
    str("system_suffix", &t.system_suffix);
    str("user_prefix", &t.user_prefix);
    str("user_suffix", &t.user_suffix);
    str("assistant_prefix", &t.assistant_prefix);
    str("assistant_suffix", &t.assistant_suffix);
    str("think_open", &t.think_open);
    str("think_close", &t.think_close);
    str("default_system", &t.default_system);
    t.open_think = r.Get<bool>("open_think", t.open_think);
    r.Finish();
    if (t.open_think && t.think_open.empty()) r.Fail("think_open", "must not be empty when open_think is true");
    return t;
  });
}

}  // namespace lightrl::model
