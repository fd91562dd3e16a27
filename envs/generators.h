// Procedural task generators (synthetic and logic tasks) with difficulty knobs. Each generator
// is a pure function of an Rng: Generate() draws one problem with its prompt, the reference the
// verifier needs, and a canonical key (used for the train/eval split and de-duplication).
//
// Kinds and their `difficulty:` knobs (defaults in brackets; the easiest settings give prompts
// of ~30 bytes and answers of a few bytes, learnable by a tiny byte-level model):
//
//   arithmetic   verifier "math", reference {"answer": "<integer>"}
//     digits [2]        max digits per operand (1..18)
//     min_digits [1]    min digits per operand
//     terms [2]         operands (2..6)
//     ops [["+","-"]]   operators drawn from + - *
//     allow_negative [true]  false: every intermediate and the result stay >= 0
//     prompt: "What is 37+45?"                         answer: "82"
//
//   countdown    verifier "countdown", reference {"numbers": [...], "target": T, "use_all": b,
//                "solution": "<one valid expression>"}
//     count [3]         numbers given (2..6)
//     max_number [10]   numbers are drawn from 1..max_number (<= 1000)
//     min_used [2]      the hidden solution uses at least this many numbers
//     max_target [100]  targets above this are re-drawn
//     use_all [false]   the answer must use every number exactly once
//     prompt: "Make 13 from 3 5 8 using + - * / (each number at most once)."   answer: "5+8"
//
//   list         verifier "list", reference {"answer": [ints], "op": "..."}
//     length [4], min_length [2], max_value [9] (values 0..max_value), ops [["sort","reverse"]]
//     (ops: sort, sort_desc, reverse, max, min, sum -- scalar ops give a 1-element answer)
//     prompt: "Sort ascending: 5 2 9 1"                 answer: "1 2 5 9"
//
//   latin        verifier "latin", reference {"n": n, "grid": [[0 = blank, ...]]}
//     n [4] (2..9), blank_fraction [0.5]
//     any valid completion of the Latin square scores (not only the generating one).
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "envs/rng.h"

namespace lightrl::envs {

struct GeneratedProblem {
  std::string prompt;
  nlohmann::json reference;
  std::string key;     // canonical problem text (split hash, de-duplication)
  std::string oracle;  // a correct final answer text (tests, benchmarks, sanity checks)
};

class Generator {
 public:
  virtual ~Generator() = default;
  virtual GeneratedProblem Generate(Rng& rng) const = 0;
  virtual std::string default_verifier() const = 0;
};

// True for the kinds below.
bool IsGeneratorKind(const std::string& kind);
// Parses the `difficulty` block for `kind` and builds the generator. Throws ConfigError naming
// the key (unknown keys included).
std::unique_ptr<Generator> MakeGenerator(const std::string& kind, ConfigReader& difficulty);

// Exact evaluation of an integer expression with + - * and usual precedence (helper for
// arithmetic; __int128, callers bound the sizes). Exposed for tests.
std::string Int128ToString(__int128 v);

}  // namespace lightrl::envs
