#include "envs/generators.h"

#include <algorithm>
#include <set>
#include <sstream>

namespace lightrl::envs {
namespace {

std::string JoinInts(const std::vector<int64_t>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += sep;
    s += std::to_string(v[i]);
  }
  return s;
}

__int128 Pow10(int d) {
  __int128 p = 1;
  for (int i = 0; i < d; ++i) p *= 10;
  return p;
}

// ---- arithmetic ---------------------------------------------------------------------------
class ArithmeticGenerator : public Generator {
 public:
  explicit ArithmeticGenerator(ConfigReader& r) {
    digits_ = r.Get<int>("digits", 2);
    if (digits_ < 1 || digits_ > 18) r.Fail("digits", "expected 1..18");
    min_digits_ = r.Get<int>("min_digits", 1);
    if (min_digits_ < 1 || min_digits_ > digits_) r.Fail("min_digits", "expected 1..digits");
    terms_ = r.Get<int>("terms", 2);
    if (terms_ < 2 || terms_ > 6) r.Fail("terms", "expected 2..6");
    ops_ = r.Get<std::vector<std::string>>("ops", {"+", "-"});
    if (ops_.empty()) r.Fail("ops", "expected a non-empty list of + - *");
    for (const auto& o : ops_) {
      if (o != "+" && o != "-" && o != "*") r.Fail("ops", "expected operators from + - *, got '" + o + "'");
    }
    if (std::find(ops_.begin(), ops_.end(), "*") != ops_.end() && digits_ * terms_ > 36) {
      r.Fail("digits", "digits * terms must be <= 36 when '*' is allowed (exact 128-bit results)");
    }
    allow_negative_ = r.Get<bool>("allow_negative", true);
    r.Finish();
  }
  std::string default_verifier() const override { return "math"; }

  GeneratedProblem Generate(Rng& rng) const override {
    for (;;) {
      std::vector<__int128> vals;
      std::vector<std::string> ops;
      for (int i = 0; i < terms_; ++i) {
        int d = static_cast<int>(rng.Uniform(min_digits_, digits_));
        __int128 lo = d == 1 ? 0 : Pow10(d - 1);
        __int128 hi = Pow10(d) - 1;
        // Uniform over [lo, hi] with two 64-bit halves is overkill: d <= 18 fits in int64.
        vals.push_back(static_cast<__int128>(rng.Uniform(static_cast<int64_t>(lo), static_cast<int64_t>(hi))));
        if (i > 0) ops.push_back(ops_[static_cast<size_t>(rng.Uniform(0, static_cast<int64_t>(ops_.size()) - 1))]);
      }
      // Evaluate with precedence: fold products first.
      std::vector<__int128> sums = {vals[0]};
      std::vector<char> signs = {'+'};
      for (size_t i = 0; i < ops.size(); ++i) {
        if (ops[i] == "*") {
          sums.back() *= vals[i + 1];
        } else {
          sums.push_back(vals[i + 1]);
          signs.push_back(ops[i][0]);
        }
      }
      __int128 acc = 0;
      bool negative_seen = false;
      for (size_t i = 0; i < sums.size(); ++i) {
        acc = signs[i] == '+' ? acc + sums[i] : acc - sums[i];
        if (acc < 0) negative_seen = true;
      }
      if (!allow_negative_ && negative_seen) continue;
      std::string expr = Int128ToString(vals[0]);
      for (size_t i = 0; i < ops.size(); ++i) expr += ops[i] + Int128ToString(vals[i + 1]);
      GeneratedProblem p;
      p.prompt = "What is " + expr + "?";
      p.key = "arithmetic:" + expr;
      p.oracle = Int128ToString(acc);
      p.reference = {{"answer", p.oracle}};
      return p;
    }
  }

 private:
  int digits_, min_digits_, terms_;
  std::vector<std::string> ops_;
  bool allow_negative_;
};

// ---- countdown ----------------------------------------------------------------------------
class CountdownGenerator : public Generator {
 public:
  explicit CountdownGenerator(ConfigReader& r) {
    count_ = r.Get<int>("count", 3);
    if (count_ < 2 || count_ > 6) r.Fail("count", "expected 2..6");
    max_number_ = r.Get<int>("max_number", 10);
    if (max_number_ < 2 || max_number_ > 1000) r.Fail("max_number", "expected 2..1000");
    min_used_ = r.Get<int>("min_used", 2);
    if (min_used_ < 2 || min_used_ > count_) r.Fail("min_used", "expected 2..count");
    max_target_ = r.Get<int64_t>("max_target", 100);
    if (max_target_ < 2) r.Fail("max_target", "expected >= 2");
    use_all_ = r.Get<bool>("use_all", false);
    if (use_all_) min_used_ = count_;
    r.Finish();
  }
  std::string default_verifier() const override { return "countdown"; }

  GeneratedProblem Generate(Rng& rng) const override {
    for (;;) {
      std::vector<int64_t> nums;
      for (int i = 0; i < count_; ++i) nums.push_back(rng.Uniform(1, max_number_));
      std::vector<int64_t> order = nums;
      rng.Shuffle(&order);
      int used = static_cast<int>(rng.Uniform(min_used_, count_));
      // Combine `used` values pairwise in random order; keep every intermediate a positive integer.
      struct Item { int64_t v; std::string e; bool atom; };
      std::vector<Item> items;
      for (int i = 0; i < used; ++i) items.push_back({order[static_cast<size_t>(i)], std::to_string(order[static_cast<size_t>(i)]), true});
      bool ok = true;
      while (items.size() > 1 && ok) {
        size_t i = static_cast<size_t>(rng.Uniform(0, static_cast<int64_t>(items.size()) - 1));
        size_t j = static_cast<size_t>(rng.Uniform(0, static_cast<int64_t>(items.size()) - 2));
        if (j >= i) ++j;
        Item a = items[i], b = items[j];
        if (a.v < b.v) std::swap(a, b);
        std::vector<char> choices = {'+', '*'};
        if (a.v > b.v) choices.push_back('-');
        if (b.v > 1 && a.v % b.v == 0) choices.push_back('/');
        char op = choices[static_cast<size_t>(rng.Uniform(0, static_cast<int64_t>(choices.size()) - 1))];
        int64_t v = op == '+' ? a.v + b.v : op == '-' ? a.v - b.v : op == '*' ? a.v * b.v : a.v / b.v;
        if (v > max_target_ * 1000) { ok = false; break; }
        auto wrap = [](const Item& it) { return it.atom ? it.e : "(" + it.e + ")"; };
        Item c{v, wrap(a) + op + wrap(b), false};
        if (i > j) std::swap(i, j);
        items.erase(items.begin() + static_cast<long>(j));
        items.erase(items.begin() + static_cast<long>(i));
        items.push_back(c);
      }
      if (!ok) continue;
      int64_t target = items[0].v;
      if (target < 1 || target > max_target_) continue;
      if (std::find(nums.begin(), nums.end(), target) != nums.end()) continue;  // trivial
      std::string sol = items[0].e;
      GeneratedProblem p;
      std::string list = JoinInts(nums, " ");
      p.prompt = "Make " + std::to_string(target) + " from " + list + " using + - * / (each number " +
                 (use_all_ ? "exactly once)." : "at most once).");
      p.key = "countdown:" + std::to_string(target) + ":" + list + (use_all_ ? ":all" : "");
      p.oracle = sol;
      p.reference = {{"numbers", nums}, {"target", target}, {"use_all", use_all_}, {"solution", sol}};
      return p;
    }
  }

 private:
  int count_, max_number_, min_used_;
  int64_t max_target_;
  bool use_all_;
};

// ---- list ---------------------------------------------------------------------------------
class ListGenerator : public Generator {
 public:
  explicit ListGenerator(ConfigReader& r) {
    length_ = r.Get<int>("length", 4);
    if (length_ < 1 || length_ > 64) r.Fail("length", "expected 1..64");
    min_length_ = r.Get<int>("min_length", std::min(2, length_));
    if (min_length_ < 1 || min_length_ > length_) r.Fail("min_length", "expected 1..length");
    max_value_ = r.Get<int64_t>("max_value", 9);
    if (max_value_ < 1 || max_value_ > 1000000000) r.Fail("max_value", "expected 1..1e9");
    ops_ = r.Get<std::vector<std::string>>("ops", {"sort", "reverse"});
    static const std::set<std::string> kOps = {"sort", "sort_desc", "reverse", "max", "min", "sum"};
    if (ops_.empty()) r.Fail("ops", "expected a non-empty list");
    for (const auto& o : ops_) {
      if (!kOps.count(o)) r.Fail("ops", "unknown op '" + o + "' (expected sort, sort_desc, reverse, max, min, sum)");
    }
    r.Finish();
  }
  std::string default_verifier() const override { return "list"; }

  GeneratedProblem Generate(Rng& rng) const override {
    int n = static_cast<int>(rng.Uniform(min_length_, length_));
    std::vector<int64_t> v;
    for (int i = 0; i < n; ++i) v.push_back(rng.Uniform(0, max_value_));
    const std::string& op = ops_[static_cast<size_t>(rng.Uniform(0, static_cast<int64_t>(ops_.size()) - 1))];
    std::vector<int64_t> ans = v;
    std::string instr;
    if (op == "sort") { std::sort(ans.begin(), ans.end()); instr = "Sort ascending: "; }
    else if (op == "sort_desc") { std::sort(ans.rbegin(), ans.rend()); instr = "Sort descending: "; }
    else if (op == "reverse") { std::reverse(ans.begin(), ans.end()); instr = "Reverse: "; }
    else if (op == "max") { ans = {*std::max_element(v.begin(), v.end())}; instr = "Largest of: "; }
    else if (op == "min") { ans = {*std::min_element(v.begin(), v.end())}; instr = "Smallest of: "; }
    else { int64_t s = 0; for (auto x : v) s += x; ans = {s}; instr = "Sum of: "; }
    GeneratedProblem p;
    p.prompt = instr + JoinInts(v, " ");
    p.key = "list:" + op + ":" + JoinInts(v, ",");
    p.oracle = JoinInts(ans, " ");
    p.reference = {{"answer", ans}, {"op", op}};
    return p;
  }

 private:
  int length_, min_length_;
  int64_t max_value_;
  std::vector<std::string> ops_;
};

// ---- latin square completion -------------------------------------------------------------
class LatinGenerator : public Generator {
 public:
  explicit LatinGenerator(ConfigReader& r) {
    n_ = r.Get<int>("n", 4);
    if (n_ < 2 || n_ > 9) r.Fail("n", "expected 2..9");
    blank_ = r.Get<double>("blank_fraction", 0.5);
    if (!(blank_ >= 0 && blank_ <= 1)) r.Fail("blank_fraction", "expected 0..1");
    r.Finish();
  }
  std::string default_verifier() const override { return "latin"; }

  GeneratedProblem Generate(Rng& rng) const override {
    std::vector<int> rows(n_), cols(n_), syms(n_);
    for (int i = 0; i < n_; ++i) rows[i] = cols[i] = syms[i] = i;
    rng.Shuffle(&rows);
    rng.Shuffle(&cols);
    rng.Shuffle(&syms);
    std::vector<std::vector<int>> full(n_, std::vector<int>(n_));
    for (int r = 0; r < n_; ++r)
      for (int c = 0; c < n_; ++c) full[r][c] = syms[(rows[r] + cols[c]) % n_] + 1;
    int blanks = static_cast<int>(blank_ * n_ * n_ + 0.5);
    std::vector<int> cells(n_ * n_);
    for (int i = 0; i < n_ * n_; ++i) cells[i] = i;
    rng.Shuffle(&cells);
    auto grid = full;
    for (int i = 0; i < blanks; ++i) grid[cells[i] / n_][cells[i] % n_] = 0;
    std::string board, key = "latin:" + std::to_string(n_) + ":", oracle;
    for (int r = 0; r < n_; ++r) {
      for (int c = 0; c < n_; ++c) {
        board += (c ? " " : "") + (grid[r][c] ? std::to_string(grid[r][c]) : std::string("."));
        key += grid[r][c] ? static_cast<char>('0' + grid[r][c]) : '.';
        oracle += (c ? " " : "") + std::to_string(full[r][c]);
      }
      board += "\n";
      if (r + 1 < n_) oracle += "\n";
    }
    GeneratedProblem p;
    std::string ns = std::to_string(n_);
    p.prompt = "Fill the blanks (.) so each row and column has 1-" + ns + " once:\n" + board +
               "Answer with the " + ns + " rows.";
    p.key = key;
    p.oracle = oracle;
    p.reference = {{"n", n_}, {"grid", grid}};
    return p;
  }

 private:
  int n_;
  double blank_;
};

}  // namespace

std::string Int128ToString(__int128 v) {
  if (v == 0) return "0";
  bool neg = v < 0;
  unsigned __int128 u = neg ? static_cast<unsigned __int128>(-(v + 1)) + 1 : static_cast<unsigned __int128>(v);
  std::string s;
  while (u) { s.push_back(static_cast<char>('0' + static_cast<int>(u % 10))); u /= 10; }
  if (neg) s.push_back('-');
  std::reverse(s.begin(), s.end());
  return s;
}

bool IsGeneratorKind(const std::string& kind) {
  return kind == "arithmetic" || kind == "countdown" || kind == "list" || kind == "latin";
}

std::unique_ptr<Generator> MakeGenerator(const std::string& kind, ConfigReader& d) {
  if (kind == "arithmetic") return std::make_unique<ArithmeticGenerator>(d);
  if (kind == "countdown") return std::make_unique<CountdownGenerator>(d);
  if (kind == "list") return std::make_unique<ListGenerator>(d);
  if (kind == "latin") return std::make_unique<LatinGenerator>(d);
  LR_FAIL("MakeGenerator: unknown generator kind '", kind, "'");
}

}  // namespace lightrl::envs
