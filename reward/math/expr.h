// Math answers as structured values, compared exactly (rewards.md §2.1 step 3, §2.4, §2.5).
//
// Parsing. An answer string (already extracted) is normalised (a reviewed subset of
// latex2sympy2_extended's basic_latex + units steps: \left/\right, spacing commands, \dfrac,
// \text{unit}, $ and currency, percent signs, degree marks, a short unit list at the end only)
// and parsed by a recursive-descent parser with depth and size limits into:
//   value     a polynomial over GMP rationals in atoms (symbols, \pi, \infty, sqrt(...),
//             function calls, non-integer powers). Integers, decimals, fractions, \frac,
//             scientific notation and exact arithmetic (+ - * / ^ small integer powers, n! for
//             small n) are evaluated exactly; \sqrt{8} becomes 2\sqrt{2}. Anything beyond the
//             guards (a power tower, a 10^{10^6}) stays an unevaluated atom: no hang.
//   list      a, b, c  (top-level commas / semicolons; several final boxes)
//   bracket   (a, b), [a, b), ... kept with their bracket characters (tuple or interval)
//   set       \{a, b\}, {a, b}, \pm a (= {-a, a})
//   relation  a = b, x \le 5, 0 < x < 1, x \in [0, 1)
//   ratio     a : b
//   matrix    \begin{pmatrix|bmatrix|array}...\end{...}
//   text      \text{odd}, words
//
// Comparison is gold-first (Compare(gold, pred)) and keeps the designed asymmetries:
//   - an interval prediction matches an inequality gold, never the reverse;
//   - `x = 5` matches `5` (the prediction's last right-hand side is taken when the gold is not
//     an equation; an assignment gold `x = 5` / `(p,q) = (3,2)` is unwrapped when its left side
//     is only symbols), but `7 = 11a + c` is not unwrapped;
//   - a gold written as a plain number (integer, decimal, fraction, percent) needs a plain
//     number: `2+3` does not match `5` (the "copied the unsimplified expression" trap);
//   - float tolerance (relative, `float_rel_tol`) applies only when the gold is a decimal
//     literal; `0.0833` never matches `\frac{1}{12}`, there is no x100 percent leniency, no
//     pi ~ 3.14, no RHS-only comparison of lists, and `\pm 2021` is not `2021`;
//   - a tuple gold against a set prediction compares in the prediction's written order; sets
//     compare as sets; interval endpoints and open/closed flags must match.
// No eval(), no CAS: equal canonical forms imply mathematically equal answers; what the
// canonicaliser cannot show equal (trig identities, general equation solving) scores wrong.
#pragma once

#include <memory>
#include <optional>
#include <string>

namespace lightrl::reward::math {

struct CompareOptions {
  double float_rel_tol = 1e-6;  // used only when the gold is a decimal literal
  bool require_plain_number = true;  // a plain-number gold needs a plain-number prediction
};

// The normalised text (exposed for tests and detail_json).
std::string NormalizeAnswer(const std::string& answer);

class ParsedAnswer;
struct AnswerHandle {
  std::shared_ptr<const ParsedAnswer> p;
  std::string normalized;
  std::string error;  // non-empty: could not parse (why)
  bool ok() const { return p != nullptr; }
};
AnswerHandle ParseAnswer(const std::string& answer);

// Human-readable canonical form ("[list 1, 2]", "3/4", ...), for detail_json and tests.
std::string DescribeAnswer(const AnswerHandle& a);

bool Compare(const AnswerHandle& gold, const AnswerHandle& pred, const CompareOptions& options);

// Convenience: parse both and compare (false when the prediction does not parse). The gold
// must parse; a gold that does not is reported through `gold_error`.
bool AnswersMatch(const std::string& gold, const std::string& pred, const CompareOptions& options = {},
                  std::string* gold_error = nullptr);

}  // namespace lightrl::reward::math
