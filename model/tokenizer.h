// Tokenizers and the chat template. Plain C++ (no libtorch): ids are int64_t, text is bytes
// (std::string, normally UTF-8 but any byte sequence is accepted).
//
// Two implementations behind one interface:
//   * ByteTokenizer: ids 0..255 are the bytes themselves, specials follow (256, 257, ...). For
//     the tiny models trained from scratch (configs/model/tiny.yaml: vocab 260 = 256 bytes +
//     <|bos|> <|eos|> <|pad|> <|end_of_turn|>).
//   * HfBpeTokenizer: the Hugging Face `tokenizer.json` byte-level BPE format (GPT-2, Qwen,
//     Llama-3, MiniMax): model.vocab + model.merges, added tokens (matched in the raw text before
//     pre-tokenization, leftmost-longest), the Split/ByteLevel pre-tokenizers with their regexes
//     run by PCRE2 with Unicode properties, the ByteLevel decoder.
//
// Round trip. For both, Decode(Encode(s)) == s for every byte string s (valid UTF-8 or not),
// except that an HF tokenizer with ByteLevel add_prefix_space: true prepends one space per
// segment (HF behaviour). Invalid UTF-8 bytes never match the pre-tokenizer regex
// (PCRE2_MATCH_INVALID_UTF) and become pieces of their own, encoded through the byte alphabet.
// Text that spells a special/added token ("<|eos|>") encodes to that token's id (as HF does by
// default); EncodeOrdinary() treats it as plain text.
//
// Decode renders special tokens as their text. Ids the tokenizer has no token for (e.g. padding
// rows of a model vocabulary larger than the tokenizer's) decode to nothing, as HF does.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace YAML {
class Node;
}

namespace lightrl::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids; substrings equal to a special/added token become that token.
  virtual std::vector<int64_t> Encode(const std::string& text) const = 0;
  // Text -> ids with no special-token matching (user-supplied text that must not inject specials).
  virtual std::vector<int64_t> EncodeOrdinary(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int64_t>& ids) const = 0;
  // One past the largest id the tokenizer can produce.
  virtual int64_t vocab_size() const = 0;
  // Ids that end a generation (EOS, end-of-turn), in configuration order.
  virtual std::vector<int64_t> stop_token_ids() const = 0;
  // Id of a special/added token by its text ("<|eos|>"), if it has one.
  virtual std::optional<int64_t> TokenId(const std::string& special) const = 0;
  // "byte" or "hf" (for logs).
  virtual std::string type() const = 0;
};

class ByteTokenizer : public Tokenizer {
 public:
  static std::vector<std::string> DefaultSpecials();  // <|bos|> <|eos|> <|pad|> <|end_of_turn|>
  // specials get ids 256, 257, ... in order; stop_tokens must be among them.
  explicit ByteTokenizer(std::vector<std::string> specials = DefaultSpecials(),
                         std::vector<std::string> stop_tokens = {"<|eos|>", "<|end_of_turn|>"});

  std::vector<int64_t> Encode(const std::string& text) const override;
  std::vector<int64_t> EncodeOrdinary(const std::string& text) const override;
  std::string Decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return 256 + static_cast<int64_t>(specials_.size()); }
  std::vector<int64_t> stop_token_ids() const override { return stop_ids_; }
  std::optional<int64_t> TokenId(const std::string& special) const override;
  std::string type() const override { return "byte"; }

 private:
  std::vector<std::string> specials_;
  std::map<std::string, int64_t> added_;  // special text -> id
  std::vector<int64_t> stop_ids_;
};

struct HfTokenizerOptions {
  // Names of the tokens that end a generation. Empty: the `eos_token` of a tokenizer_config.json
  // next to tokenizer.json (if any) plus those of <|endoftext|> <|im_end|> <|eot_id|>
  // <|end_of_text|> </s> <end_of_sentence> <|eos|> <|end_of_turn|> that exist.
  std::vector<std::string> stop_tokens;
  // HF normalizers (NFC, ...) are not implemented; a tokenizer.json with one is refused unless
  // this is set, in which case the normalizer is skipped (text is encoded as given).
  bool ignore_normalizer = false;
};

class HfBpeTokenizer : public Tokenizer {
 public:
  // Parses tokenizer.json text. `origin` names the source in errors (file path). Errors name the
  // JSON field ("tokenizer.json: model.merges[12]: ...").
  static StatusOr<std::unique_ptr<HfBpeTokenizer>> FromJson(const std::string& json_text,
                                                            const std::string& origin,
                                                            const HfTokenizerOptions& options = {});
  static StatusOr<std::unique_ptr<HfBpeTokenizer>> FromFile(const std::string& path,
                                                            const HfTokenizerOptions& options = {});
  ~HfBpeTokenizer() override;

  std::vector<int64_t> Encode(const std::string& text) const override;
  std::vector<int64_t> EncodeOrdinary(const std::string& text) const override;
  std::string Decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::vector<int64_t> stop_token_ids() const override { return stop_ids_; }
  std::optional<int64_t> TokenId(const std::string& special) const override;
  std::string type() const override { return "hf"; }

  // The BPE pieces (raw bytes) of one pre-tokenized piece; exposed for tests.
  std::vector<int64_t> EncodePiece(const std::string& piece) const;
  // Pre-tokenization of a text segment without added tokens (raw-byte pieces, in order,
  // concatenating to the segment, plus the prefix space if configured).
  std::vector<std::string> PreTokenize(const std::string& segment) const;

  struct Regex;  // a compiled PCRE2 pattern (implementation detail)

 private:
  HfBpeTokenizer();
  struct PreStep {
    enum Kind { kSplitIsolated, kByteLevelRegex } kind;
    std::shared_ptr<Regex> regex;
  };
  void EncodeSegment(const std::string& segment, std::vector<int64_t>* out) const;

  int64_t vocab_size_ = 0;
  std::unordered_map<std::string, int64_t> token_to_id_;  // raw bytes -> id (BPE vocabulary)
  std::vector<std::string> id_to_bytes_;                  // [vocab_size_] raw bytes ("" = none)
  std::vector<bool> has_token_;                           // [vocab_size_]
  std::map<std::pair<std::string, std::string>, int64_t> merge_rank_;  // raw-byte pair -> rank
  std::map<std::string, int64_t> added_;                  // added token text -> id
  std::vector<int64_t> stop_ids_;
  std::vector<PreStep> pre_steps_;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
};

// Builds a tokenizer from a `tokenizer:` YAML block:
//   {type: byte, specials: [...]?, stop_tokens: [...]?}
//   {type: hf, path: tokenizer.json, stop_tokens: [...]?, ignore_normalizer: false}
// An undefined/null block is {type: byte}. Errors name the key ("tokenizer.path: ...").
StatusOr<std::unique_ptr<Tokenizer>> BuildTokenizer(const YAML::Node& block, const std::string& path = "tokenizer");

// System/user/assistant framing, the same in rollout, SFT and evaluation. Every field is literal
// text (special tokens written as their text, e.g. "<|im_start|>", which Encode maps to ids).
//   prompt  = bos + [system_prefix + system + system_suffix] + user_prefix + user + user_suffix
//             + assistant_prefix + (open_think ? think_open : "")
//   target  = response + assistant_suffix            (SFT: what the model learns to emit)
// The system block appears when the system text (argument, else default_system) is non-empty.
struct ChatTemplate {
  std::string bos;
  std::string system_prefix, system_suffix;
  std::string user_prefix, user_suffix;
  std::string assistant_prefix;  // opens the assistant turn; a generation prompt ends with it
  std::string assistant_suffix;  // closes an assistant turn (end-of-turn text)
  std::string think_open = "<think>", think_close = "</think>";
  bool open_think = false;       // the generation prompt also opens the reasoning block
  std::string default_system;

  std::string RenderPrompt(const std::string& user, const std::string& system = "") const;
  struct Message {
    std::string role;  // "system" | "user" | "assistant"
    std::string content;
  };
  // A whole conversation; a leading system message replaces default_system. With
  // add_generation_prompt the result ends with an open assistant turn. Unknown roles and
  // misplaced system messages are InvalidArgument naming messages[i].role.
  StatusOr<std::string> RenderConversation(const std::vector<Message>& messages,
                                           bool add_generation_prompt = true) const;
  // The SFT target for a response: response + assistant_suffix.
  std::string RenderTarget(const std::string& response) const;

  // Splits a response at the think tags: the reasoning (between think_open, or the start when
  // open_think, and the first think_close) and the answer after it. closed == false when there
  // is no think_close (then answer is empty and thinking is everything after think_open).
  struct ThinkSplit {
    std::string thinking, answer;
    bool closed = false;
  };
  ThinkSplit SplitThinking(const std::string& response) const;
};

// Named presets: "none" (raw text), "tiny" (byte tokenizer specials: <|bos|>, "User: ...
// <|end_of_turn|>", "Assistant: "), "chatml" (<|im_start|>role\n ... <|im_end|>\n).
StatusOr<ChatTemplate> ChatTemplatePreset(const std::string& name);
// From a `chat_template:` block: {preset: tiny, <any field above>: override}. An undefined/null
// block is the "tiny" preset. Unknown keys are errors naming the key.
StatusOr<ChatTemplate> ParseChatTemplate(const YAML::Node& block, const std::string& path = "chat_template");

}  // namespace lightrl::model
