// Golden (gold, prediction, expected) triples for the math checker (rewards.md §2.7). Rows
// marked MV-n are Math-Verify's representative triples (the spec's table row n) with their
// expected values; rows marked FLIP are Math-Verify behaviours the spec tells us not to copy,
// with the mathematically right value; the rest are hand-written cases (traps and the plain
// answer forms the tiny-model tasks produce). Expected values are never derived from the code.
//
// Mode: 'A' = the prediction is an extracted answer string; 'R' = a full response that goes
// through extraction (no last-number fallback); 'F' = a response with fallback_last_number.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "reward/math/expr.h"
#include "reward/math/math_verifier.h"

namespace lightrl::reward {
namespace {

struct Row {
  const char* tag;
  const char* gold;
  const char* pred;
  int expected;
  char mode;
};

const Row kRows[] = {
    // --- numbers, separators, currency, units (test_number_extraction) ---
    {"MV-1", "7425000", "7,425,000", 1, 'A'},
    {"MV-2", "1000", "1 000", 1, 'A'},
    {"MV-3", "1000.99", "1000,99", 1, 'A'},
    {"MV-4", "1,22", "1.22", 1, 'A'},
    {"MV-5", "2.74", "Soucis : 2,74 $ a..", 1, 'F'},
    {"MV-6", "0.4", ".4", 1, 'A'},
    {"MV-7", "1000.99", "$1,000.99", 1, 'A'},
    {"MV-8", "1000.99", "so the number is 10 which is 1,000.99m\xC2\xB2", 1, 'F'},
    {"MV-9", "2", "AZYUK2A", 0, 'F'},
    {"MV-9b", "2", "AZYUK2A", 0, 'R'},
    // --- fractions and LaTeX forms ---
    {"MV-10", "10/9", "\\frac{10}{9}", 1, 'A'},
    {"MV-15", "$1/3$", "$\\frac13 $", 1, 'A'},
    {"MV-16", "$\\sqrt{3}$", "$\\sqrt3 $", 1, 'A'},
    {"MV-17", "$1/3$", "$\\left( \\frac{1}{3} \\right)$", 1, 'A'},
    {"MV-18", "$1/3$", "$k = \\frac{1}{3}$", 1, 'A'},
    {"MV-21", "$125$ miles", "The distance is $\\boxed{125\\textnormal{ miles}}.$", 1, 'R'},
    {"MV-22", "$\\sqrt{2}+\\sqrt{5}$", "The answer is $\\boxed{\\sqrt 2+\\sqrt 5}$", 1, 'R'},
    {"MV-23", "x \\in \\boxed{\\{-1\\} \\cup [0,7)}.$", "x \\in \\boxed{\\{-1\\} \\cup [0,7)}.$", 1, 'R'},
    // --- environments after an anchor (test_latex_notation) ---
    {"MV-13", "$9$", "Answer $ \n 9 \n $", 0, 'R'},
    {"MV-14", "$9$", "Answer \\[ \n 9 \n \\]", 1, 'R'},
    // --- intervals and sets ---
    {"MV-11", "$[0,9)$", "$[0,1)$", 0, 'A'},
    {"MV-12", "$(0,9)$", "$[0,9)$", 0, 'A'},
    {"MV-45", "$(3,1)$", "${1,3}$", 0, 'A'},
    {"MV-46", "$(1,3)$", "${1,3}$", 1, 'A'},
    {"MV-54", "$-12;-11;-10;-8;-7;-6$", "$\\boxed{\\{-12, -11, -10, -8, -7, -6\\}}$", 1, 'R'},
    {"MV-62", "$$(98, 2), (99, 503)$$", "$$\\boxed{(98, 2)} \\quad \\text{and} \\quad \\boxed{(99, 503)}$$", 1, 'R'},
    {"MV-64", "\\boxed{1} no no no no no \\boxed{2}", "$\\boxed{1,2}$", 0, 'R'},
    {"set-order", "\\{3, 1, 2\\}", "\\{1, 2, 3\\}", 1, 'A'},
    {"set-size", "\\{1, 2\\}", "\\{1, 2, 2\\}", 0, 'A'},
    {"interval-closed", "[2, 5]", "[2, 5]", 1, 'A'},
    {"interval-flags", "[2, 5]", "[2, 5)", 0, 'A'},
    {"union", "(-\\infty, 1) \\cup (2, \\infty)", "(-\\infty,1)\\cup(2,\\infty)", 1, 'A'},
    {"union-wrong", "(-\\infty, 1) \\cup (2, \\infty)", "(-\\infty,1)\\cup[2,\\infty)", 0, 'A'},
    // --- percent ---
    {"MV-19", "$28\\%$", "28 percent", 1, 'A'},
    {"MV-20", "$28\\%$", "$\\boxed{28}$ pct", 1, 'R'},
    {"pct-no-x100", "$50\\%$", "0.5", 0, 'A'},        // Qwen's x100 leniency is not copied
    {"pct-no-div100", "0.5", "50", 0, 'A'},
    // --- relations ---
    {"MV-24", "$x >= 5$", "$x \\geq 5$", 1, 'A'},
    {"MV-24r", "$x >= 5$", "Therefore $x \\geq 5$ is the solution.", 0, 'R'},  // no anchor: not extracted
    {"MV-25", "$x > 5$", "$x < 5$", 0, 'A'},
    {"MV-26", "$x \\leq 5$", "$5 \\geq x$", 1, 'A'},
    {"MV-27", "$x = 11$", "$x = 5+5+1 = 7 =11$", 1, 'A'},
    {"MV-28", "$7 = 11a+c$", "$11a+c$", 0, 'A'},
    {"MV-29", "$11$", "$x=11$", 1, 'A'},
    {"MV-30", "$x < 1$", "$-x > -1$", 1, 'A'},
    {"MV-31", "$a +3z = 0$", "$0$", 0, 'A'},
    {"MV-32", "$2x + z = 1$", "$1$", 0, 'A'},
    {"MV-40", "$34x+45y-20z+100=0$", "$-34x-45y+20z-100=0$", 1, 'A'},
    {"MV-50", "$-2 \\le x \\le 7$", "$x \\in [-2,7]$", 1, 'A'},
    {"MV-51", "$x \\in [-2,7]$", "$-2 \\le x \\le 7$", 0, 'A'},   // the designed asymmetry
    {"MV-53", "$(p,q)=(3,2)$", "$(3,2)$", 1, 'A'},
    {"MV-55", "$S_{MBCN}:S=7:32$", "$\\boxed{7:32}$", 1, 'R'},
    {"MV-60", "$0<f(x)<1$", "$(0,1)$", 1, 'A'},
    {"MV-61", "$$-793 < a < 10$$", "$$(-793, 10)$$", 1, 'A'},
    {"MV-63", "$$|AB|=1$$", "$$1$$", 1, 'A'},
    {"MV-65", "$n=2, 3, 4$", "$n=1, 2, 3$", 0, 'A'},   // not RHS-only (Math-Verify #14)
    {"MV-66", "$D = (0, 1)$", "$D = (0, 1.5)$", 0, 'A'},
    {"rel-interval-reverse", "(0, 1)", "0 < x < 1", 0, 'A'},
    {"assign-other-var", "x = 5", "y = 5", 0, 'A'},
    // --- matrices ---
    {"MV-34", "$\\begin{bmatrix}0 & 0 \\\\0 & 0\\end{bmatrix}$", "$ \\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix} $", 1, 'A'},
    {"MV-35", "$\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}$", "$ \\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right] $", 1, 'A'},
    {"MV-36", "$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$", "The matrix is $\\boxed{\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}}$", 0, 'R'},
    // --- precision: float tolerance only where the gold is a decimal ---
    {"MV-37-FLIP", "$\\frac{1}{12}$", "$0.0833333333333333$", 0, 'A'},  // rounded decimal for an exact gold
    {"MV-38-FLIP", "$(1,\\frac{9}{2})$", "$(1,4.5)$", 1, 'A'},          // 4.5 is exactly 9/2
    {"MV-44-FLIP", "$(\\frac{3}{5},\\frac{8}{3}]$", "$(0.6,2.6667]$", 0, 'A'},
    {"float-gold-rel", "0.0833333", "\\frac{1}{12}", 1, 'A'},
    {"float-gold-exact", "2.5", "\\frac{5}{2}", 1, 'A'},
    {"float-gold-off", "2.5", "2.46", 0, 'A'},
    {"MV-21-FLIP", "0.0000001", "0.0000002", 0, 'A'},   // Math-Verify #21: no 6-decimal rounding
    {"pi-not-3.14", "\\pi", "3.14", 0, 'A'},
    {"3.14-not-pi", "3.14", "\\pi", 0, 'A'},
    {"sci", "1500", "1.5 \\times 10^{3}", 1, 'A'},
    {"sci-e", "0.00015", "1.5e-4", 1, 'A'},
    // --- the plain-number rule: an unsimplified expression does not match a number ---
    {"MV-42", "$2$", "$\\frac{1+\\sqrt{5}}{2}$", 0, 'A'},
    {"MV-43", "$1\\sqrt{19}$", "$1$", 0, 'A'},
    {"MV-52", "$4$", "$4\\sqrt{2}$", 0, 'A'},
    {"unsimplified", "5", "2+3", 0, 'A'},
    {"unreduced-ok", "\\frac{1}{2}", "2/4", 1, 'A'},
    {"neg-frac", "-\\frac{3}{4}", "-3/4", 1, 'A'},
    {"sqrt-simplify", "2\\sqrt{2}", "\\sqrt{8}", 1, 'A'},
    {"poly-commute", "x^2+2x+1", "1+2x+x^2", 1, 'A'},
    {"poly-expand", "x^2+2x+1", "(x+1)^2", 1, 'A'},
    {"poly-wrong", "x^2+2x+1", "(x+1)^3", 0, 'A'},
    // --- Math-Verify #14 false positives, flipped ---
    {"MV-67-FLIP", "$1 - \\frac{1}{\\mathrm{e}}$", "$1 + \\frac{1}{\\mathrm{e}}$", 0, 'A'},
    {"MV-68", "$\\pm 2021$", "$2021$", 0, 'A'},
    {"MV-69", "$\\pm 2021$", "${-2021, 2021}$", 1, 'A'},
    {"MV14-fact-FLIP", "\\frac{1}{2004!}", "\\frac{1}{2006!}", 0, 'A'},
    {"MV14-pow-FLIP", "\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", 0, 'A'},
    {"MV14-clock", "12:00", "1:00", 0, 'A'},
    // --- text and symbols ---
    {"MV-47", " So the answer is: \\[ \\boxed{11111111100} \\]", "is $\\boxed{11,\\! 111,\\! 111,\\! 100}$", 1, 'R'},
    {"MV-48", " So the answer is: \\[ \\boxed{32349} \\]", "is $\\boxed{32, 349}$", 0, 'R'},
    {"MV-49", "$\\text{E}$", "$E$", 1, 'A'},
    {"MV-57", "$\\text{odd}$", "$odd$", 1, 'A'},
    {"MV-59", "$d$", "$\\text{E}$", 0, 'A'},
    // --- answer forms the tiny-model tasks produce ---
    {"bare", "42", "42", 1, 'R'},
    {"bare-neg", "-17", "-17", 1, 'R'},
    {"anchor", "42", "Answer: 42", 1, 'R'},
    {"anchor-period", "42", "37+5 makes it.\nAnswer: 42.", 1, 'R'},
    {"anchor-last-wins", "42", "Answer: 41\nwait, no.\nAnswer: 42", 1, 'R'},
    {"anchor-wrong", "42", "Answer: 43", 0, 'R'},
    {"hashes", "72", "She sold 48 + 24 = 72 clips.\n#### 72", 1, 'R'},
    {"last-line-number", "72", "48 + 24 is\n72", 1, 'R'},
    {"boxed-over-anchor", "7", "Answer: 6 \\boxed{7}", 1, 'R'},
    {"no-anchor-prose", "72", "I think it is 72 or so\nbut not sure", 0, 'R'},
    {"empty", "72", "", 0, 'R'},
    {"garbage", "72", "\xFF\xFE}}}{{{\\boxed{", 0, 'R'},
    {"echo-prompt", "82", "What is 37+45?", 0, 'R'},
    {"overlong-list", "5", "Answer: 1 2 3 4 5 6 7 8 9 10", 0, 'R'},
    {"thousands-gsm8k", "1200", "#### 1,200", 1, 'R'},
    {"dollars", "18", "Answer: $18", 1, 'R'},
    {"decimal-trailing-zero", "18", "Answer: 18.00", 1, 'R'},
    {"power-tower", "5", "\\boxed{5^{5^{5^{5^{5}}}}}", 0, 'R'},
};

TEST(MathGolden, TableHasEnoughCases) { EXPECT_GE(sizeof(kRows) / sizeof(kRows[0]), 80u); }

TEST(MathGolden, AllRows) {
  int failures = 0;
  for (const Row& row : kRows) {
    std::string err;
    auto golds = GoldAnswers(nlohmann::json{{"answer", row.gold}}, &err);
    ASSERT_EQ(golds.size(), 1u) << row.tag << ": " << err;
    math::AnswerHandle g = math::ParseAnswer(golds[0]);
    ASSERT_TRUE(g.ok()) << row.tag << ": gold '" << golds[0] << "' does not parse: " << g.error;
    std::string pred = row.pred;
    bool have = true;
    if (row.mode != 'A') {
      auto e = ExtractMathAnswer(pred, row.mode == 'F');
      have = e.has_value();
      if (have) pred = e->text;
    }
    int got = 0;
    if (have) got = math::Compare(g, math::ParseAnswer(pred), math::CompareOptions{}) ? 1 : 0;
    if (got != row.expected) {
      ++failures;
      ADD_FAILURE() << row.tag << ": gold '" << row.gold << "' pred '" << row.pred << "' (extracted '" << pred
                    << "', parsed " << math::DescribeAnswer(math::ParseAnswer(pred)) << ", gold parsed "
                    << math::DescribeAnswer(g) << "): expected " << row.expected << ", got " << got;
    }
  }
  EXPECT_EQ(failures, 0);
}

}  // namespace
}  // namespace lightrl::reward
