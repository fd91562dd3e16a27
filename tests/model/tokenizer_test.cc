// Tokenizer tests. Oracles: hand-computed ids and pre-token splits for a small tokenizer.json
// built here (byte alphabet + a few merges + added tokens), exact round trips on random byte
// strings / random UTF-8, and hand-written chat-template strings.
#include "model/tokenizer.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

namespace lightrl::model {
namespace {

using json = nlohmann::json;

// GPT-2 byte -> code point, written out independently of the implementation (the printable
// ranges map to themselves, the other 68 bytes to 256.. in byte order).
std::string ByteChar(int b) {
  const bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  int cp = b;
  if (!direct) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      const bool d = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
      if (!d) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

std::string Bl(const std::string& raw) {  // raw bytes -> byte-level text
  std::string s;
  for (char c : raw) s += ByteChar(static_cast<unsigned char>(c));
  return s;
}

// Vocabulary: id b = byte b, then merges' results 256.., added tokens 300, 301.
json SmallTokenizerJson(const json& pre_tokenizer, bool merges_as_pairs = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {" ", "w"}, {"o", "r"}, {" w", "or"}, {"1", "2"}};
  json jm = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    vocab[Bl(a + b)] = next++;
    if (merges_as_pairs) {
      jm.push_back({Bl(a), Bl(b)});
    } else {
      jm.push_back(Bl(a) + " " + Bl(b));
    }
  }
  json doc;
  doc["version"] = "1.0";
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = pre_tokenizer;
  doc["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}};
  doc["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", jm}, {"dropout", nullptr}};
  doc["added_tokens"] = json::array({
      {{"id", 300}, {"content", "<|endoftext|>"}, {"special", true}, {"lstrip", false}, {"rstrip", false},
       {"single_word", false}, {"normalized", false}},
      {{"id", 301}, {"content", "<|im_end|>"}, {"special", true}},
  });
  return doc;
}

json Gpt2Pre() { return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}; }

std::unique_ptr<HfBpeTokenizer> Load(const json& doc, HfTokenizerOptions o = {}) {
  auto t = HfBpeTokenizer::FromJson(doc.dump(), "test/tokenizer.json", o);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

TEST(ByteTokenizerTest, BytesAndSpecials) {
  ByteTokenizer t;
  EXPECT_EQ(t.vocab_size(), 260);
  EXPECT_EQ(t.TokenId("<|bos|>"), 256);
  EXPECT_EQ(t.TokenId("<|end_of_turn|>"), 259);
  EXPECT_FALSE(t.TokenId("<|nope|>").has_value());
  EXPECT_EQ(t.stop_token_ids(), (std::vector<int64_t>{257, 259}));
  EXPECT_EQ(t.Encode("Hi<|eos|>\xff"), (std::vector<int64_t>{72, 105, 257, 255}));
  EXPECT_EQ(t.EncodeOrdinary("<|eos|>").size(), 7u);
  EXPECT_EQ(t.Decode({72, 105, 257, 255, 9999}), "Hi<|eos|>\xff");  // unknown id: nothing
}

TEST(ByteTokenizerTest, RoundTripsArbitraryBytes) {
  ByteTokenizer t;
  std::mt19937 gen(1);
  for (int i = 0; i < 200; ++i) {
    std::string s(gen() % 40, '\0');
    for (char& c : s) c = static_cast<char>(gen() % 256);
    EXPECT_EQ(t.Decode(t.Encode(s)), s);
    EXPECT_EQ(t.Decode(t.EncodeOrdinary(s)), s);
  }
}

TEST(HfTokenizerTest, Gpt2PreTokenizerSplitsAsTheRegexSays) {
  auto t = Load(SmallTokenizerJson(Gpt2Pre()));
  ASSERT_TRUE(t);
  // Hand-derived from the GPT-2 pattern: contractions, letter/number/other runs with one
  // optional leading space, whitespace not followed by non-space kept apart.
  EXPECT_EQ(t->PreTokenize("Hello, world!  123 don't\n\n"),
            (std::vector<std::string>{"Hello", ",", " world", "!", " ", " 123", " don", "'t", "\n\n"}));
  // Unicode properties: CJK letters form one \p{L}+ run, an emoji is "other", é is a letter.
  EXPECT_EQ(t->PreTokenize("你好😀 café"), (std::vector<std::string>{"你好", "😀", " café"}));
  // Invalid UTF-8 never matches: the bytes become a piece of their own.
  EXPECT_EQ(t->PreTokenize("ab\xff\xfe" "cd"), (std::vector<std::string>{"ab", "\xff\xfe", "cd"}));
}

TEST(HfTokenizerTest, MergesApplyInRankOrder) {
  auto t = Load(SmallTokenizerJson(Gpt2Pre()));
  ASSERT_TRUE(t);
  // "hello": (h,e)->he, (l,l)->ll, (he,ll)->hell, then o.   " world": ( ,w), (o,r), ( w,or), l, d.
  EXPECT_EQ(t->Encode("hello world"), (std::vector<int64_t>{258, 'o', 261, 'l', 'd'}));
  // "hhe": (h,e) merges at the second position only.  "lll": left-most pair first.
  EXPECT_EQ(t->EncodePiece("hhe"), (std::vector<int64_t>{'h', 256}));
  EXPECT_EQ(t->EncodePiece("lll"), (std::vector<int64_t>{257, 'l'}));
  EXPECT_EQ(t->EncodePiece(" 123"), (std::vector<int64_t>{' ', 262, '3'}));
  // Added tokens are matched in the raw text first; EncodeOrdinary does not.
  EXPECT_EQ(t->Encode("he<|im_end|>he"), (std::vector<int64_t>{256, 301, 256}));
  EXPECT_EQ(t->EncodeOrdinary("<|im_end|>").size(), 10u);  // 10 bytes, no merge applies
  EXPECT_EQ(t->Decode({258, 'o', 301, 300}), "hello<|im_end|><|endoftext|>");
  EXPECT_EQ(t->vocab_size(), 302);
  EXPECT_EQ(t->TokenId("<|im_end|>"), 301);
  // Default stop tokens: the known end-of-text names that exist.
  EXPECT_EQ(t->stop_token_ids(), (std::vector<int64_t>{300, 301}));
  // Merges as [a, b] pairs (newer tokenizer.json) give the same tokenizer.
  auto p = Load(SmallTokenizerJson(Gpt2Pre(), true));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->Encode("hello world"), t->Encode("hello world"));
}

TEST(HfTokenizerTest, RoundTripIsExactOnRandomUtf8AndInvalidBytes) {
  // Both pre-tokenizer styles: GPT-2 ByteLevel regex, and Qwen/Llama-3 style Split + ByteLevel.
  json split = {{"type", "Sequence"},
                {"pretokenizers",
                 json::array({{{"type", "Split"},
                               {"pattern",
                                {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  for (const json& pre : {Gpt2Pre(), split}) {
    auto t = Load(SmallTokenizerJson(pre));
    ASSERT_TRUE(t);
    std::mt19937 gen(7);
    const std::vector<std::string> alphabet = {"a", "h", "e", "l", "o", " ", "  ", "\n", "1", "2", "'s", "é", "ü",
                                               "你", "😀", "\t", "<|im_end|>", "<|endoftext|>", "!", "world"};
    for (int i = 0; i < 300; ++i) {
      std::string s;
      const int n = gen() % 30;
      for (int k = 0; k < n; ++k) {
        if (gen() % 5 == 0) {
          s.push_back(static_cast<char>(gen() % 256));  // arbitrary byte, often invalid UTF-8
        } else {
          s += alphabet[gen() % alphabet.size()];
        }
      }
      std::vector<int64_t> ids = t->Encode(s);
      for (int64_t id : ids) ASSERT_TRUE(id >= 0 && id < t->vocab_size());
      ASSERT_EQ(t->Decode(ids), s) << "case " << i;
      ASSERT_EQ(t->Decode(t->EncodeOrdinary(s)), s) << "case " << i;
      // Pre-tokenization partitions the text.
      std::string joined;
      for (const auto& p : t->PreTokenize(s)) joined += p;
      ASSERT_EQ(joined, s);
    }
  }
}

TEST(HfTokenizerTest, Qwen3StyleSplitLimitsDigitRuns) {
  json split = {{"type", "Sequence"},
                {"pretokenizers",
                 json::array({{{"type", "Split"},
                               {"pattern", {{"Regex", R"(\p{N}{1,3}|\p{L}+|\s+|[^\s\p{L}\p{N}]+)"}}},
                               {"behavior", "Isolated"}},
                              {{"type", "ByteLevel"}, {"use_regex", false}}})}};
  auto t = Load(SmallTokenizerJson(split));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->PreTokenize("12345 ab"), (std::vector<std::string>{"123", "45", " ", "ab"}));
}

TEST(HfTokenizerTest, PrefixSpaceAndIgnoreMerges) {
  json pre = Gpt2Pre();
  pre["add_prefix_space"] = true;
  json doc = SmallTokenizerJson(pre);
  auto t = Load(doc);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->Decode(t->Encode("world")), " world");  // HF behaviour: one space prepended
  EXPECT_EQ(t->Encode("world")[0], 261);
  // ignore_merges: a piece that is itself a vocabulary token is emitted whole (Llama-3).
  json doc2 = SmallTokenizerJson(Gpt2Pre());
  doc2["model"]["vocab"][Bl("lll")] = 290;
  auto plain = Load(doc2);
  doc2["model"]["ignore_merges"] = true;
  auto ignoring = Load(doc2);
  ASSERT_TRUE(plain && ignoring);
  EXPECT_EQ(plain->EncodePiece("lll"), (std::vector<int64_t>{257, 'l'}));
  EXPECT_EQ(ignoring->EncodePiece("lll"), (std::vector<int64_t>{290}));
}

TEST(HfTokenizerTest, MalformedFilesNameTheField) {
  auto err = [](const json& doc) {
    auto t = HfBpeTokenizer::FromJson(doc.dump(), "x.json");
    EXPECT_FALSE(t.ok());
    return t.ok() ? std::string() : t.status().message();
  };
  json d = SmallTokenizerJson(Gpt2Pre());
  d["model"]["merges"][2] = "nospace";
  EXPECT_NE(err(d).find("model.merges[2]"), std::string::npos);
  d = SmallTokenizerJson(Gpt2Pre());
  d["model"]["merges"].push_back("q z");  // "qz" not in vocab
  EXPECT_NE(err(d).find("model.merges[7]"), std::string::npos);
  d = SmallTokenizerJson(Gpt2Pre());
  d["model"]["vocab"].erase(ByteChar('A'));
  EXPECT_NE(err(d).find("byte 65"), std::string::npos);
  d = SmallTokenizerJson(Gpt2Pre());
  d["normalizer"] = {{"type", "NFC"}};
  EXPECT_NE(err(d).find("normalizer.type"), std::string::npos);
  HfTokenizerOptions o;
  o.ignore_normalizer = true;
  EXPECT_TRUE(HfBpeTokenizer::FromJson(d.dump(), "x.json", o).ok());
  d = SmallTokenizerJson({{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}});
  EXPECT_NE(err(d).find("pre_tokenizer.pattern"), std::string::npos);
  d = SmallTokenizerJson({{"type", "Whitespace"}});
  EXPECT_NE(err(d).find("pre_tokenizer.type"), std::string::npos);
  d = SmallTokenizerJson(Gpt2Pre());
  d["added_tokens"][0]["lstrip"] = true;
  EXPECT_NE(err(d).find("added_tokens[0].lstrip"), std::string::npos);
  EXPECT_NE(HfBpeTokenizer::FromJson("{not json", "x.json").status().message().find("x.json"), std::string::npos);
}

TEST(BuildTokenizerTest, FromYamlBlocks) {
  auto byte = BuildTokenizer(YAML::Load("{type: byte}"));
  ASSERT_TRUE(byte.ok()) << byte.status().ToString();
  EXPECT_EQ((*byte)->vocab_size(), 260);
  auto dflt = BuildTokenizer(YAML::Node());
  ASSERT_TRUE(dflt.ok());
  EXPECT_EQ((*dflt)->type(), "byte");
  auto custom = BuildTokenizer(YAML::Load("{type: byte, specials: [<s>, </s>], stop_tokens: [</s>]}"));
  ASSERT_TRUE(custom.ok());
  EXPECT_EQ((*custom)->stop_token_ids(), (std::vector<int64_t>{257}));

  const auto dir = std::filesystem::temp_directory_path() / "lightrl_tokenizer_test";
  std::filesystem::create_directories(dir);
  const auto file = dir / "tokenizer.json";
  std::ofstream(file) << SmallTokenizerJson(Gpt2Pre()).dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": {"content": "<|im_end|>"}})";
  YAML::Node hf;
  hf["type"] = "hf";
  hf["path"] = file.string();
  auto t = BuildTokenizer(hf);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ((*t)->Encode("hello"), (std::vector<int64_t>{258, 'o'}));
  EXPECT_EQ((*t)->stop_token_ids(), (std::vector<int64_t>{301, 300}));  // config's eos first
  hf["stop_tokens"] = YAML::Load("[<|endoftext|>]");
  EXPECT_EQ((*BuildTokenizer(hf))->stop_token_ids(), (std::vector<int64_t>{300}));

  auto msg = [](const std::string& yaml) {
    auto r = BuildTokenizer(YAML::Load(yaml), "rollout.tokenizer");
    return r.ok() ? std::string("ok") : r.status().message();
  };
  EXPECT_NE(msg("{type: sentencepiece}").find("rollout.tokenizer.type"), std::string::npos);
  EXPECT_NE(msg("{type: hf}").find("rollout.tokenizer.path"), std::string::npos);
  EXPECT_NE(msg("{type: hf, path: /nonexistent/tokenizer.json}").find("rollout.tokenizer.path"), std::string::npos);
  EXPECT_NE(msg("{type: byte, stop_tokens: [<|x|>]}").find("rollout.tokenizer.stop_tokens"), std::string::npos);
  EXPECT_NE(msg("{type: byte, spcials: []}").find("spcials"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ChatTemplateTest, RendersPresetsAndOverrides) {
  auto tiny = ParseChatTemplate(YAML::Node());
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->RenderPrompt("2+2?"), "<|bos|>User: 2+2?<|end_of_turn|>Assistant: ");
  EXPECT_EQ(tiny->RenderPrompt("2+2?", "Be brief."),
            "<|bos|>System: Be brief.<|end_of_turn|>User: 2+2?<|end_of_turn|>Assistant: ");
  EXPECT_EQ(tiny->RenderTarget("4"), "4<|end_of_turn|>");
  // The byte tokenizer maps the template's specials to their ids.
  ByteTokenizer bt;
  std::vector<int64_t> ids = bt.Encode(tiny->RenderPrompt("x"));
  EXPECT_EQ(ids.front(), 256);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 259), 1);

  auto chatml = ParseChatTemplate(YAML::Load("{preset: chatml, open_think: true, default_system: S}"));
  ASSERT_TRUE(chatml.ok()) << chatml.status().ToString();
  EXPECT_EQ(chatml->RenderPrompt("hi"),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>");
  auto conv = chatml->RenderConversation({{"system", "T"}, {"user", "a"}, {"assistant", "b"}, {"user", "c"}});
  ASSERT_TRUE(conv.ok());
  EXPECT_EQ(*conv,
            "<|im_start|>system\nT<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>"
            "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n<think>");
  auto bad_role = chatml->RenderConversation({{"user", "a"}, {"tool", "b"}});
  EXPECT_NE(bad_role.status().message().find("messages[1].role"), std::string::npos);

  // Think splitting (open_think: the response starts inside the reasoning block).
  auto s = chatml->SplitThinking("step 1</think>42");
  EXPECT_TRUE(s.closed);
  EXPECT_EQ(s.thinking, "step 1");
  EXPECT_EQ(s.answer, "42");
  EXPECT_FALSE(chatml->SplitThinking("still thinking").closed);
  auto n = tiny->SplitThinking("<think>a</think> b");
  EXPECT_EQ(n.thinking, "a");
  EXPECT_EQ(n.answer, " b");
  EXPECT_EQ(tiny->SplitThinking("plain").answer, "plain");

  auto err = ParseChatTemplate(YAML::Load("{preset: tiny, user_prefx: x}"), "sft.chat_template");
  EXPECT_NE(err.status().message().find("sft.chat_template.user_prefx"), std::string::npos)
      << err.status().message();
  EXPECT_NE(ParseChatTemplate(YAML::Load("{preset: llama9}")).status().message().find("chat_template.preset"),
            std::string::npos);
}

}  // namespace
}  // namespace lightrl::model
