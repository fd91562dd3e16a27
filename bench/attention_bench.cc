// lightrl-bench attention: lightning vs softmax attention, training-shaped (forward + backward).
//
//   lightrl-bench attention [--quick] [--threads N] [heads=8] [head_dim=64] [block=256]
//                           [softmax_block=<ModelConfig default>] [lengths=1024,4096,...]
//
// Sections:
//  1. Forward + backward time of the attention core at 1K, 4K, 16K, 32K, 64K tokens (quick: 1K,
//     2K, 4K, 8K) for B = 1 and H heads of size D: lightning (model/lightning_ops.h, chunked forward
//     + custom chunked backward) vs softmax (CausalSoftmaxAttention, the blockwise online-softmax
//     core with its custom backward, model/layers.h). Ratio softmax/lightning per length; target
//     >= 8 at 32K.
//  2. Lightning scaling t(64K)/t(32K) (quick: t(8K)/t(4K)); linear is 2.0, target <= 2.2.
//  3. Lightning achieved FLOP rate at the longest length, as a fraction of a plain 1024^3 fp32
//     matmul's rate measured in the same run (target >= 50%). FLOPs are those the chunked
//     algorithm executes, LightningForwardFlops + LightningBackwardFlops (formulas in
//     model/lightning_ops.h): every matmul of the block algorithm with its m×m products counted
//     in full, plus the elementwise masks/decays and the scan. A second figure counts only the
//     causal half of the m×m products ("useful" FLOPs) for reference.
//  4. DecodeScalingSection (bench/decode_bench.cc): decode time per token vs context.
// Inputs are SiLU(randn) like the layer feeds them; slopes are layer 0's of an 8-layer model
// (the fastest decays; the cost does not depend on them).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "core/check.h"
#include "model/config.h"
#include "model/layers.h"
#include "model/lightning_ops.h"

namespace lightrl::bench {

namespace {

struct AttentionBenchConfig {
  int64_t heads = 8;
  int64_t head_dim = 64;
  int64_t block = model::ModelConfig{}.lightning_block_size;
  int64_t softmax_block = model::ModelConfig{}.softmax_block_size;
  std::vector<int64_t> lengths;
};

AttentionBenchConfig ParseArgs(const BenchOptions& options) {
  AttentionBenchConfig c;
  c.lengths = options.quick ? std::vector<int64_t>{1024, 2048, 4096, 8192}
                            : std::vector<int64_t>{1024, 4096, 16384, 32768, 65536};
  for (const std::string& arg : options.args) {
    const auto eq = arg.find('=');
    LR_CHECK(eq != std::string::npos, "attention bench: argument '", arg, "' is not key=value");
    const std::string key = arg.substr(0, eq), value = arg.substr(eq + 1);
    try {
      if (key == "heads") {
        c.heads = std::stoll(value);
      } else if (key == "head_dim") {
        c.head_dim = std::stoll(value);
      } else if (key == "block") {
        c.block = std::stoll(value);
      } else if (key == "softmax_block") {
        c.softmax_block = std::stoll(value);
      } else if (key == "lengths") {
        c.lengths.clear();
        std::stringstream ss(value);
        std::string item;
        while (std::getline(ss, item, ',')) c.lengths.push_back(std::stoll(item));
      } else {
        LR_FAIL("attention bench: unknown argument '", key,
                "' (expected heads, head_dim, block, softmax_block, lengths)");
      }
    } catch (const std::invalid_argument&) {
      LR_FAIL("attention bench: argument '", arg, "' needs an integer value");
    }
  }
  LR_CHECK(c.lengths.size() >= 2, "attention bench: need at least two lengths");
  return c;
}

struct Inputs {
  torch::Tensor q, k, v, grad_out;  // [1, H, T, D] fp32
};

Inputs MakeInputs(int64_t H, int64_t T, int64_t D) {
  Inputs in;
  in.q = torch::silu(torch::randn({1, H, T, D})).requires_grad_(true);
  in.k = torch::silu(torch::randn({1, H, T, D})).requires_grad_(true);
  in.v = torch::silu(torch::randn({1, H, T, D})).requires_grad_(true);
  in.grad_out = torch::randn({1, H, T, D});
  return in;
}

// Forward + backward (gradients of q, k, v for a given output gradient).
void ForwardBackward(const Inputs& in, const std::function<torch::Tensor()>& forward) {
  torch::Tensor out = forward();
  auto grads = torch::autograd::grad({out}, {in.q, in.k, in.v}, {in.grad_out});
  LR_CHECK(grads.size() == 3 && grads[0].defined(), "attention bench: backward produced no gradients");
}

std::string Seconds(double s) { return s < 0.1 ? Fmt(s * 1e3, 2) + " ms" : Fmt(s, 3) + " s"; }

std::string Tokens(int64_t T) { return T % 1024 == 0 ? std::to_string(T / 1024) + "K" : std::to_string(T); }

}  // namespace

int RunAttentionSuite(const BenchOptions& options) {
  const AttentionBenchConfig cfg = ParseArgs(options);
  const int64_t H = cfg.heads, D = cfg.head_dim;
  std::printf("attention core, training-shaped: B=1 H=%lld D=%lld fp32; lightning block=%lld, softmax tile=%lld\n",
              static_cast<long long>(H), static_cast<long long>(D), static_cast<long long>(cfg.block),
              static_cast<long long>(cfg.softmax_block));
  torch::manual_seed(0);
  const torch::Tensor slopes = model::LightningSlopes(H, 0, 8);
  model::LightningOptions lopt;
  lopt.block_size = cfg.block;
  lopt.output_final_state = false;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  std::vector<double> t_light, t_soft, t_light_fwd;
  Table table("forward+backward time per call (median; softmax single run at >= 16K)",
              {"tokens", "lightning", "softmax", "softmax/lightning", "lightning fwd only", "lightning Mtok/s"});
  for (int64_t T : cfg.lengths) {
    const Inputs in = MakeInputs(H, T, D);
    auto light = [&] { return model::LightningAttentionChunked(in.q, in.k, in.v, slopes, {}, lopt).out; };
    auto soft = [&] {
      return model::CausalSoftmaxAttention(in.q, in.k, in.v, scale, cfg.softmax_block, {},
                                           model::AttentionPath::kBlockwise);
    };
    const double tl = TimeMedian([&] { ForwardBackward(in, light); }, 3, 1.0, 1);
    const double tf = TimeMedian(
        [&] {
          torch::NoGradGuard no_grad;
          light();
        },
        3, 0.5, 1);
    const bool long_softmax = T >= 16384;
    const double ts = TimeMedian([&] { ForwardBackward(in, soft); }, long_softmax ? 1 : 3,
                                 long_softmax ? 0.0 : 1.0, long_softmax ? 0 : 1);
    t_light.push_back(tl);
    t_soft.push_back(ts);
    t_light_fwd.push_back(tf);
    table.AddRow({Tokens(T), Seconds(tl), Seconds(ts), Fmt(ts / tl, 1) + "x", Seconds(tf),
                  Fmt(static_cast<double>(T) / tl / 1e6, 3)});
    std::fflush(stdout);
  }
  table.Print();

  // Scaling of the lightning time between the last two lengths.
  const size_t n = cfg.lengths.size();
  const double len_ratio = static_cast<double>(cfg.lengths[n - 1]) / static_cast<double>(cfg.lengths[n - 2]);
  const double scaling = t_light[n - 1] / t_light[n - 2];
  std::printf("\nlightning scaling t(%s)/t(%s) = %.3f (length ratio %.1f; linear = %.1f)\n",
              Tokens(cfg.lengths[n - 1]).c_str(), Tokens(cfg.lengths[n - 2]).c_str(), scaling, len_ratio, len_ratio);

  // FLOP rate at the longest length vs a plain matmul measured now.
  const int64_t T_last = cfg.lengths[n - 1];
  const double flops_fwd = model::LightningForwardFlops(H, T_last, D, cfg.block);
  const double flops_bwd = model::LightningBackwardFlops(H, T_last, D, cfg.block);
  const double m = static_cast<double>(std::min(cfg.block, T_last));
  const double nb = std::ceil(static_cast<double>(T_last) / m);
  // The causal half of the m×m products: forward 2 products, backward 5, each 2m²D.
  const double masked_half = static_cast<double>(H) * nb * (2 + 5) * (m * m * static_cast<double>(D));
  const double matmul_gflops = MeasureMatmulGflops(1024);
  const double light_gflops = (flops_fwd + flops_bwd) / t_light[n - 1] / 1e9;
  const double light_fwd_gflops = flops_fwd / t_light_fwd[n - 1] / 1e9;
  const double useful_gflops = (flops_fwd + flops_bwd - masked_half) / t_light[n - 1] / 1e9;
  Table rate("lightning achieved FLOP rate at " + Tokens(T_last) + " (in-run matmul baseline 1024^3 fp32)",
             {"what", "GFLOP", "GFLOP/s", "fraction of matmul"});
  rate.AddRow({"plain matmul 1024^3", Fmt(2.0 * 1024 * 1024 * 1024 / 1e9, 2), Fmt(matmul_gflops, 1), "1.00"});
  rate.AddRow({"lightning fwd+bwd (executed FLOPs)", Fmt((flops_fwd + flops_bwd) / 1e9, 2), Fmt(light_gflops, 1),
               Fmt(light_gflops / matmul_gflops, 2)});
  rate.AddRow({"lightning fwd only (executed FLOPs)", Fmt(flops_fwd / 1e9, 2), Fmt(light_fwd_gflops, 1),
               Fmt(light_fwd_gflops / matmul_gflops, 2)});
  rate.AddRow({"lightning fwd+bwd (useful: causal half of m x m)", Fmt((flops_fwd + flops_bwd - masked_half) / 1e9, 2),
               Fmt(useful_gflops, 1), Fmt(useful_gflops / matmul_gflops, 2)});
  rate.Print();

  // Targets: the 32K ratio (or the largest length <= 32K present), scaling and FLOP rate.
  size_t i32 = 0;
  for (size_t i = 0; i < n; ++i) {
    if (cfg.lengths[i] <= 32768) i32 = i;
  }
  std::vector<Target> targets;
  targets.push_back({"attention.lightning_vs_softmax_fwd_bwd_speedup_at_" + Tokens(cfg.lengths[i32]),
                     t_soft[i32] / t_light[i32], ">=", 8.0});
  targets.push_back({"attention.lightning_scaling_t" + Tokens(cfg.lengths[n - 1]) + "_over_t" +
                         Tokens(cfg.lengths[n - 2]),
                     scaling, "<=", 1.1 * len_ratio});
  targets.push_back({"attention.lightning_flop_rate_fraction_of_matmul", light_gflops / matmul_gflops, ">=", 0.5});

  try {
    DecodeScalingSection(options, &targets);
  } catch (const std::exception& e) {
    std::printf("\nDecodeScalingSection failed: %s\n", e.what());
  }
  PrintTargets(targets);
  return 0;
}

}  // namespace lightrl::bench
