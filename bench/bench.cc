#include "bench/bench.h"

#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "model/packed_gemm.h"

namespace lightrl::bench {

double TimeMedian(const std::function<void()>& fn, int min_reps, double min_seconds, int warmup) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  double total = 0;
  while (static_cast<int>(times.size()) < min_reps || total < min_seconds) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    times.push_back(dt);
    total += dt;
    if (times.size() >= 1000) break;
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

Table::Table(std::string title, std::vector<std::string> columns)
    : title_(std::move(title)), columns_(std::move(columns)) {}

void Table::AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }

void Table::Print() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) width[c] = columns_[c].size();
  for (const auto& row : rows_)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::ostringstream out;
  out << "\n== " << title_ << "\n";
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < width.size(); ++c) {
      out << std::left << std::setw(static_cast<int>(width[c]) + 2) << (c < cells.size() ? cells[c] : "");
    }
    out << "\n";
  };
  line(columns_);
  for (const auto& row : rows_) line(row);
  std::fputs(out.str().c_str(), stdout);
  std::fflush(stdout);
}

std::string Fmt(double v, int precision) {
  std::ostringstream s;
  s << std::setprecision(precision) << std::fixed << v;
  return s.str();
}

bool Target::pass() const { return op == ">=" ? value >= goal : value <= goal; }

int PrintTargets(const std::vector<Target>& targets) {
  int misses = 0;
  std::printf("\n");
  for (const auto& t : targets) {
    std::printf("TARGET %s value=%.4g goal=%s%g %s\n", t.name.c_str(), t.value, t.op.c_str(), t.goal,
                t.pass() ? "PASS" : "MISS");
    misses += !t.pass();
  }
  std::fflush(stdout);
  return misses;
}

double MeasurePackedGemmGflops(int n) {
  if (!model::PackedGemmAvailable()) return 0;
  torch::NoGradGuard no_grad;
  auto x = torch::randn({n, n});
  auto panels = model::PackLinearWeight(torch::randn({n, n}));
  auto out = torch::empty({n, n});
  const float* xp = x.data_ptr<float>();
  const float* pp = panels.data_ptr<float>();
  float* op = out.data_ptr<float>();
  double t = TimeMedian(
      [&] {
        at::parallel_for(0, n, 8, [&](int64_t b, int64_t e) {
          model::PackedGemm(xp + b * n, n, e - b, n, pp, n, op + b * n, n);
        });
      },
      5, 0.5, 2);
  return 2.0 * n * n * static_cast<double>(n) / t / 1e9;
}

double MeasureMatmulGflops(int n) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n});
  auto b = torch::randn({n, n});
  auto c = torch::empty({n, n});
  double t = TimeMedian([&] { torch::mm_out(c, a, b); }, 5, 0.5, 2);
  return 2.0 * n * n * static_cast<double>(n) / t / 1e9;
}

}  // namespace lightrl::bench
