// Output comparators (rewards.md §4.3) and the JSON value comparison of function-call tests,
// against hand-written expectations taken from the reference harnesses' documented behaviour.
#include <gtest/gtest.h>

#include "reward/code/comparators.h"

namespace lightrl::reward::code {
namespace {

ComparatorSpec Spec(ComparatorKind k, double abs_tol = 1e-6, double rel_tol = 1e-6) {
  ComparatorSpec s;
  s.kind = k;
  s.abs_tol = abs_tol;
  s.rel_tol = rel_tol;
  return s;
}

TEST(Comparators, ExactIgnoresOnlyTrailingNewlines) {
  auto s = Spec(ComparatorKind::kExact);
  EXPECT_TRUE(OutputsMatch(s, "3\n\n", "3"));
  EXPECT_TRUE(OutputsMatch(s, "a b\n", "a b\n"));
  EXPECT_FALSE(OutputsMatch(s, "3 \n", "3\n"));
  EXPECT_FALSE(OutputsMatch(s, "3\r\n", "3\n"));
  EXPECT_FALSE(OutputsMatch(s, "Yes\n", "yes\n"));
}

TEST(Comparators, LinesUseDecimalEqualityWithoutTolerance) {
  auto s = Spec(ComparatorKind::kLines);
  EXPECT_TRUE(OutputsMatch(s, "  1 2 \n3\n\n", "1 2\n3"));
  EXPECT_TRUE(OutputsMatch(s, "0.5\n", "0.50\n"));
  EXPECT_TRUE(OutputsMatch(s, "1e2\n", "100\n"));
  EXPECT_FALSE(OutputsMatch(s, "0.3333\n", "0.33333\n"));
  EXPECT_FALSE(OutputsMatch(s, "1 2\n", "2 1\n"));  // never order-insensitive
  EXPECT_FALSE(OutputsMatch(s, "1\n2\n", "1 2\n"));  // line counts must match
  EXPECT_FALSE(DecimalTokensEqual("nan", "nan"));
  EXPECT_TRUE(DecimalTokensEqual("-0", "0"));
  EXPECT_FALSE(DecimalTokensEqual("1,000", "1000"));
}

TEST(Comparators, TokensWithTolerance) {
  auto s = Spec(ComparatorKind::kTokens, 1e-5, 0);
  EXPECT_TRUE(OutputsMatch(s, "YES 123.000001\n", "yes\t123"));
  EXPECT_FALSE(OutputsMatch(s, "123.1", "123"));
  EXPECT_FALSE(OutputsMatch(s, "12", "123"));
  EXPECT_FALSE(OutputsMatch(s, "1 2", "1 2 3"));  // a prefix does not match
  EXPECT_TRUE(OutputsMatch(s, "  a   b  ", "a b"));
}

TEST(Comparators, ParseNames) {
  EXPECT_EQ(*ParseComparatorKind("tokens"), ComparatorKind::kTokens);
  auto bad = ParseComparatorKind("set");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("lines"), std::string::npos);
}

TEST(Comparators, JsonValues) {
  auto s = Spec(ComparatorKind::kTokens, 1e-6, 1e-6);
  using nlohmann::json;
  EXPECT_TRUE(JsonValuesMatch(json(1), json(1.0), s, false));
  EXPECT_FALSE(JsonValuesMatch(json(true), json(1), s, false));
  EXPECT_FALSE(JsonValuesMatch(json(0.1 + 0.2), json(0.3), s, false));
  EXPECT_TRUE(JsonValuesMatch(json(0.1 + 0.2), json(0.3), s, true));
  EXPECT_TRUE(JsonValuesMatch(json::parse("[1, [2, 3]]"), json::parse("[1, [2, 3]]"), s, false));
  EXPECT_FALSE(JsonValuesMatch(json::parse("[1, 2]"), json::parse("[2, 1]"), s, false));
  EXPECT_TRUE(JsonValuesMatch(json::parse(R"({"a": 1, "b": "x"})"), json::parse(R"({"b": "x", "a": 1})"), s, false));
  EXPECT_FALSE(JsonValuesMatch(json::parse(R"({"a": 1})"), json::parse(R"({"a": 1, "b": 2})"), s, false));
  EXPECT_FALSE(JsonValuesMatch(json(nullptr), json(0), s, false));
  EXPECT_FALSE(JsonValuesMatch(json("1"), json(1), s, false));
}

}  // namespace
}  // namespace lightrl::reward::code
