// lightrl-bench rollout: the generation engine on the tiny hybrid model (configs/model/tiny.yaml).
//
//   lightrl-bench rollout [--quick] [--threads N]
//
// Sections:
//  1. Decode throughput vs batch size (1..64) at context 512: tokens/s of one decode step over B
//     rows (synthetic cache, fastest of N steps, as in DecodeScalingSection), hybrid vs all-softmax;
//     and the fused step's row and column thread splits forced (the split kAuto picks is shown).
//  2. DecodeScalingSection: decode time per token vs context 1K..32K (quick: 1K..8K), hybrid vs
//     all-softmax; target hybrid t(32K)/t(1K) <= 1.5.
//  3. Continuous vs static batching: the Engine on a mixed-length workload (prompt 32 tokens,
//     response lengths spread evenly over 16..256 (quick: 16..128) and forced by max_new_tokens,
//     no EOS, repetition truncation off), wall time of Generate; 8 slots with 8 requests per slot
//     (quick: 4) for the target continuous >= 1.3x static throughput, and the recipes' 64 slots
//     with 4 requests per slot (quick: 2) for reference.
//  4. Memory per slot: lightning state (fp32, O(1) in context) vs softmax KV cache (fp32, per
//     token), for the tiny model (measured with ModelCache::bytes) and MiniMax-M1 (analytic).
//  5. Batched decode at B = 64 as a fraction of the compute limit: the Engine's decode tokens/s
//     (64 samples of one prompt, sampling and log-probs included, prefill excluded; best of 5
//     Generate calls, quick: 3) x 2 x active
//     parameters per token (attention/MoE active weights + LM head; CountParameters) vs the fp32
//     fp32 GEMM rate measured in this run at 1024^3 (the faster of libtorch's mm and
//     model::PackedGemm); target >= 50%. The bare forward step, the same step's matmuls alone
//     (with libtorch and with PackedGemm: the ceilings at these shapes) and a 4x wider variant are
//     shown for reference.
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "bench/bench.h"
#include "core/check.h"
#include "model/config.h"
#include "model/fused_decode.h"
#include "model/hybrid_model.h"
#include "model/packed_gemm.h"
#include "rollout/engine.h"

namespace lightrl::bench {

// From bench/decode_bench.cc.
double DecodeStepSeconds(model::HybridModel& m, int64_t B, int64_t C, int reps,
                         model::ForwardOptions::FusedSplit split = model::ForwardOptions::FusedSplit::kAuto);
model::ModelConfig TinyModelConfig();
model::ModelConfig AllSoftmaxVariant(model::ModelConfig c);

namespace {

std::string Mb(double bytes) {
  if (bytes >= 1e9) return Fmt(bytes / 1e9, 2) + " GB";
  if (bytes >= 1e6) return Fmt(bytes / 1e6, 2) + " MB";
  return Fmt(bytes / 1e3, 2) + " KB";
}

model::HybridModel Build(const model::ModelConfig& c) {
  model::HybridModel m(c);
  m->InitWeights(1);
  m->eval();
  return m;
}

// n requests, prompt 32 tokens, response lengths spread evenly over [16, max_len] in a shuffled
// order (forced by max_new_tokens: no EOS, repetition truncation off).
std::vector<rollout::Request> MixedWorkload(int n, int max_len, int64_t vocab) {
  std::vector<rollout::Request> out;
  for (int i = 0; i < n; ++i) {
    rollout::Request r;
    r.request_id = i;
    torch::Tensor p = torch::randint(vocab, {32}, torch::kLong);
    r.prompt_ids.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + 32);
    const int64_t rank = (static_cast<int64_t>(i) * 37) % n;  // a fixed permutation of 0..n-1 (n coprime to 37)
    r.params.max_new_tokens = 16 + static_cast<int>(rank * (max_len - 16) / std::max(1, n - 1));
    r.params.repetition_truncation = false;
    r.seed = i;
    out.push_back(r);
  }
  return out;
}

// Decode throughput of the Engine at batch B: B samples of one prompt (shared prefill) decoding
// `steps` tokens together; tokens/s over the wall time minus the prefill (so it includes
// sampling, log-probs and bookkeeping, not only the forward). The best of `runs` Generate calls
// after a warm-up one (as elsewhere here: on a shared machine other load only adds time).
double EngineDecodeTokensPerSecond(model::HybridModel& m, int B, int steps, int runs) {
  rollout::EngineOptions o;
  o.max_slots = B;
  rollout::Engine engine(m, o);
  rollout::Request r;
  torch::Tensor p = torch::randint(m->config().vocab_size, {32}, torch::kLong);
  r.prompt_ids.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + 32);
  r.params.max_new_tokens = steps;
  r.params.repetition_truncation = false;
  r.num_samples = B;
  engine.Generate({r});  // warm-up
  double best = 0;
  for (int i = 0; i < runs; ++i) {
    engine.ResetStats();
    const auto t0 = std::chrono::steady_clock::now();
    engine.Generate({r});
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const rollout::EngineStats st = engine.stats();
    best = std::max(best, static_cast<double>(st.decode_rows) / (wall - st.prefill_seconds));
  }
  return best;
}

}  // namespace

// The matmul shapes of one decode step of B rows (the shapes HybridModel's decode runs: attention
// projections per layer, the router, the experts with the B*k (token, choice) pairs split evenly
// over the experts, the LM head): (rows, in, out, expert) each, expert = the expert's index within
// its layer for its w1 / w3 / w2, -1 for the others.
std::vector<std::array<int64_t, 4>> DecodeMatmulShapes(const model::ModelConfig& c, int64_t B) {
  std::vector<std::array<int64_t, 4>> shapes;
  auto add = [&](int64_t n, int64_t in, int64_t out, int64_t expert = -1) {
    if (n > 0) shapes.push_back({n, in, out, expert});
  };
  const int64_t C = c.hidden_size, inner = c.num_attention_heads * c.head_dim;
  const int64_t kv = c.num_key_value_heads * c.head_dim, E = c.num_local_experts, k = c.num_experts_per_tok;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.attn_type_list[l] == 0) {
      add(B, C, 3 * inner);  // qkv
      add(B, C, inner);      // output gate
      add(B, inner, C);      // out
    } else {
      add(B, C, inner);  // q
      add(B, C, kv);     // k
      add(B, C, kv);     // v
      add(B, inner, C);  // o
    }
    add(B, C, E);  // router
    for (int64_t e = 0; e < E; ++e) {
      const int64_t n = (B * k) / E + (e < (B * k) % E ? 1 : 0);
      add(n, C, c.intermediate_size, e);  // w1
      add(n, C, c.intermediate_size, e);  // w3
      add(n, c.intermediate_size, C, e);  // w2
    }
  }
  add(B, C, c.vocab_size);  // LM head (fp32)
  return shapes;
}

// Seconds of the matmuls alone of one decode step of B rows with libtorch (torch::mm_out, its
// own threading per call) on preallocated inputs: what a decode step would cost with zero
// overhead besides BLAS at these shapes. The fastest of `reps` passes.
double DecodeMatmulsOnlySeconds(const model::ModelConfig& c, int64_t B, int reps) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> mms;  // (x [n, in], w [in, out]) fp32
  for (const auto& [n, in, out, expert] : DecodeMatmulShapes(c, B)) {
    mms.emplace_back(torch::randn({n, in}), torch::randn({in, out}));
  }
  std::vector<torch::Tensor> outs;
  for (auto& [x, w] : mms) outs.push_back(torch::empty({x.size(0), w.size(1)}));
  double best = 1e30;
  for (int r = 0; r < reps + 2; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < mms.size(); ++i) torch::mm_out(outs[i], mms[i].first, mms[i].second);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r >= 2) best = std::min(best, s);
  }
  return best;
}

// The same shapes with model::PackedGemm as the fused decode step's row split runs them: one
// parallel region for the whole step, each thread running the attention, router and head matmuls
// on its rows and whole experts (expert e on thread e % threads; the step hands them out
// dynamically). 0 where PackedGemm is unavailable.
double DecodePackedMatmulsOnlySeconds(const model::ModelConfig& c, int64_t B, int reps) {
  if (!model::PackedGemmAvailable()) return 0;
  torch::NoGradGuard no_grad;
  struct Mm {
    torch::Tensor x, panels, out;  // [n, in], packed [out, in], [n, out]
    int64_t out_features, expert;
  };
  std::vector<Mm> mms;
  for (const auto& [n, in, out, expert] : DecodeMatmulShapes(c, B)) {
    mms.push_back({torch::randn({n, in}), model::PackLinearWeight(torch::randn({out, in})), torch::empty({n, out}), out,
                   expert});
  }
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), B);
  double best = 1e30;
  for (int r = 0; r < reps + 2; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t first, int64_t last) {  // threads [first, last)
      for (const Mm& m : mms) {
        // This thread's rows of an attention / router / head matmul, or an expert's all.
        const int64_t n = m.x.size(0);
        int64_t lo = first * n / threads, hi = last * n / threads;
        if (m.expert >= 0) {
          if (m.expert % threads < first || m.expert % threads >= last) continue;
          lo = 0;
          hi = n;
        }
        if (hi <= lo) continue;
        const int64_t in = m.x.size(1);
        model::PackedGemm(m.x.data_ptr<float>() + lo * in, in, hi - lo, in, m.panels.data_ptr<float>(), m.out_features,
                          m.out.data_ptr<float>() + lo * m.out_features, m.out_features);
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r >= 2) best = std::min(best, s);
  }
  return best;
}

int RunRolloutSuite(const BenchOptions& options) {
  torch::manual_seed(0);
  const model::ModelConfig hybrid_cfg = TinyModelConfig();
  const model::ModelConfig softmax_cfg = AllSoftmaxVariant(hybrid_cfg);
  model::HybridModel hybrid = Build(hybrid_cfg), softmax = Build(softmax_cfg);
  std::vector<Target> targets;
  const int reps = options.quick ? 7 : 15;

  // 1. batch sweep.
  const int64_t context = 512;
  const std::vector<int64_t> batches = options.quick ? std::vector<int64_t>{1, 4, 16, 64}
                                                     : std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64};
  Table bt("decode throughput vs batch size (context " + std::to_string(context) + ", one step of B rows)",
           {"batch", "hybrid tok/s", "all-softmax tok/s", "hybrid/softmax", "hybrid step", "hybrid vs B=1", "split",
            "step by rows", "step by columns"});
  double hybrid_tps_1 = 0;
  using Split = model::ForwardOptions::FusedSplit;
  const int threads = at::get_num_threads();
  for (int64_t B : batches) {
    const double th = DecodeStepSeconds(hybrid, B, context, reps);
    const double ts = DecodeStepSeconds(softmax, B, context, reps);
    const double tps = B / th;
    if (B == 1) hybrid_tps_1 = tps;
    // The fused step's two thread splits forced, for the crossover behind kFusedColumnMaxRows.
    const bool columns_possible = model::FusedColumnSplit(hybrid_cfg, B, 1, threads, Split::kColumns);
    const double by_rows = DecodeStepSeconds(hybrid, B, context, reps, Split::kRows);
    const double by_columns = columns_possible ? DecodeStepSeconds(hybrid, B, context, reps, Split::kColumns) : 0;
    bt.AddRow({std::to_string(B), Fmt(tps, 0), Fmt(B / ts, 0), Fmt(ts / th, 2) + "x", Fmt(th * 1e3, 3) + " ms",
               Fmt(tps / hybrid_tps_1, 2) + "x",
               model::FusedColumnSplit(hybrid_cfg, B, 1, threads, Split::kAuto) ? "columns" : "rows",
               Fmt(by_rows * 1e3, 3) + " ms", columns_possible ? Fmt(by_columns * 1e3, 3) + " ms" : "n/a"});
    std::fflush(stdout);
  }
  bt.Print();

  // 2. context scaling (shared with the attention suite).
  DecodeScalingSection(options, &targets);

  // 3. continuous vs static batching: 8 slots (the target; 8 requests per slot), and the
  // recipes' 64 slots (configs/*_tiny.yaml rollout.max_slots) with 4 requests per slot.
  {
    const int max_len = options.quick ? 128 : 256;
    Table ct("continuous vs static batching (prompt 32, response lengths evenly 16.." + std::to_string(max_len) +
                 " in a shuffled order, forced by max_new_tokens)",
             {"slots", "requests", "tokens", "mode", "wall", "tok/s", "decode steps", "rows/step", "prefill",
              "decode fwd", "other", "ratio"});
    auto compare = [&](int slots, int n) {
      std::vector<rollout::Request> work = MixedWorkload(n, max_len, hybrid_cfg.vocab_size);
      int64_t total_tokens = 0;
      for (const auto& r : work) total_tokens += r.params.max_new_tokens;
      auto run = [&](bool continuous, rollout::EngineStats* stats) {
        rollout::EngineOptions o;
        o.max_slots = slots;
        o.continuous_batching = continuous;
        rollout::Engine engine(hybrid, o);
        const auto t0 = std::chrono::steady_clock::now();
        auto out = engine.Generate(work);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        int64_t tokens = 0;
        for (const auto& c : out) tokens += static_cast<int64_t>(c.token_ids.size());
        LR_CHECK(tokens == total_tokens, "rollout bench: expected ", total_tokens, " tokens, got ", tokens);
        *stats = engine.stats();
        return s;
      };
      rollout::EngineStats sc, ss;
      const double t_static = run(false, &ss);
      const double t_cont = run(true, &sc);
      auto add = [&](const std::string& mode, double t, const rollout::EngineStats& st, double ratio) {
        ct.AddRow({std::to_string(slots), std::to_string(n), std::to_string(total_tokens), mode, Fmt(t, 3) + " s",
                   Fmt(total_tokens / t, 0), std::to_string(st.decode_steps),
                   Fmt(static_cast<double>(st.decode_rows) / st.decode_steps, 2), Fmt(st.prefill_seconds, 3) + " s",
                   Fmt(st.decode_seconds, 3) + " s", Fmt(t - st.prefill_seconds - st.decode_seconds, 3) + " s",
                   Fmt(ratio, 2) + "x"});
      };
      add("static", t_static, ss, 1.0);
      add("continuous", t_cont, sc, t_static / t_cont);
      return t_static / t_cont;
    };
    const double ratio8 = compare(8, options.quick ? 32 : 64);
    compare(64, options.quick ? 128 : 256);
    ct.Print();
    std::printf("the target is the 8-slot workload; the 64-slot rows are the recipes' setting, for reference.\n");
    targets.push_back({"rollout.continuous_over_static_throughput", ratio8, ">=", 1.3});
  }

  // 4. memory per slot.
  {
    Table mt("memory per slot (fp32): lightning state vs softmax KV cache",
             {"model", "lightning state/slot", "KV/token", "KV at 4K", "KV at 32K", "all-softmax KV at 32K",
              "break-even context"});
    auto row = [&](const std::string& name, const model::ModelConfig& c, double measured_state) {
      const int64_t n_soft = std::count(c.attn_type_list.begin(), c.attn_type_list.end(), 1);
      const int64_t n_light = c.num_hidden_layers - n_soft;
      const double state = measured_state > 0 ? measured_state
                                              : 4.0 * n_light * c.num_attention_heads * c.head_dim * c.head_dim;
      const double kv_tok = 4.0 * 2 * n_soft * c.num_key_value_heads * c.head_dim;
      const double kv_tok_all = 4.0 * 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim;
      mt.AddRow({name, Mb(state), Mb(kv_tok), Mb(kv_tok * 4096), Mb(kv_tok * 32768), Mb(kv_tok_all * 32768),
                 Fmt(state / kv_tok, 0) + " tokens"});
    };
    // Measured on the tiny model: a 1-row cache after a 64-token prefill, minus its KV part.
    model::ModelCache cache;
    {
      torch::NoGradGuard no_grad;
      hybrid->forward(torch::randint(hybrid_cfg.vocab_size, {1, 64}, torch::kLong), {}, &cache);
    }
    double state_bytes = 0;
    for (const auto& l : cache.layers) {
      if (l.lightning.state.defined()) state_bytes += l.lightning.state.numel() * 4.0;
    }
    row("tiny (measured state)", hybrid_cfg, state_bytes);
    std::vector<std::filesystem::path> m1 = {"configs/model/minimax_m1.yaml",
                                             std::filesystem::path(__FILE__).parent_path().parent_path() /
                                                 "configs/model/minimax_m1.yaml"};
    for (const auto& p : m1) {
      if (!std::filesystem::exists(p)) continue;
      auto c = model::LoadModelConfig(p.string());
      if (c.ok()) row("MiniMax-M1 (analytic)", *c, 0);
      break;
    }
    mt.Print();
  }

  // 5. batched decode vs the compute limit: the Engine at B = 64 (sampling included), the bare
  // forward step, the step's matmuls alone (libtorch and PackedGemm), and a 4x wider variant of
  // the tiny model for the trend (per-op overhead vs FLOPs). The limit takes the faster of the two
  // fp32 GEMM rates measured now: on a CPU where libtorch's BLAS runs narrower kernels than the
  // hardware has, libtorch's rate would understate it.
  {
    const double torch_rate = MeasureMatmulGflops(1024);
    const double packed_rate = MeasurePackedGemmGflops(1024);
    const double matmul = std::max(torch_rate, packed_rate);
    Table ft("batched decode at B = 64 vs the compute limit (2 x active params FLOPs/token at " + Fmt(matmul, 1) +
                 " GFLOP/s = the faster of libtorch mm " + Fmt(torch_rate, 1) + " and PackedGemm " +
                 Fmt(packed_rate, 1) + " GFLOP/s, fp32 1024^3, measured now)",
             {"model", "active params", "FLOPs/token", "limit tok/s", "engine tok/s", "fraction",
              "fraction at libtorch rate", "forward-only", "mm-only libtorch", "mm-only packed"});
    auto measure = [&](const std::string& name, model::HybridModel& m, double* fraction) {
      const model::ModelConfig& c = m->config();
      const model::ParameterCounts pc = model::CountParameters(c);
      const double active = static_cast<double>(pc.active_non_embedding) +
                            static_cast<double>(c.vocab_size) * c.hidden_size;  // + LM head
      const double limit = matmul * 1e9 / (2 * active);
      const double engine_tps = EngineDecodeTokensPerSecond(m, 64, options.quick ? 16 : 32, options.quick ? 3 : 5);
      const double fwd_tps = 64 / DecodeStepSeconds(m, 64, context, reps);
      const double mm_tps = 64 / DecodeMatmulsOnlySeconds(c, 64, reps);
      const double packed_s = DecodePackedMatmulsOnlySeconds(c, 64, reps);
      ft.AddRow({name, Fmt(active / 1e6, 3) + " M", Fmt(2 * active / 1e6, 2) + " M", Fmt(limit, 0), Fmt(engine_tps, 0),
                 Fmt(engine_tps / limit, 3), Fmt(engine_tps / (torch_rate * 1e9 / (2 * active)), 3),
                 Fmt(fwd_tps / limit, 3), Fmt(mm_tps / limit, 3), packed_s > 0 ? Fmt(64 / packed_s / limit, 3) : "n/a"});
      *fraction = engine_tps / limit;
    };
    double tiny_fraction = 0, wide_fraction = 0;
    measure("tiny", hybrid, &tiny_fraction);
    model::ModelConfig wide = hybrid_cfg;
    wide.hidden_size *= 4;
    wide.intermediate_size *= 4;
    wide.head_dim *= 2;
    wide.num_attention_heads *= 2;
    wide.num_key_value_heads *= 2;
    wide.rotary_dim *= 2;
    model::HybridModel wide_model = Build(wide);
    measure("tiny x4 wide (reference)", wide_model, &wide_fraction);
    ft.Print();
    std::printf(
        "fractions of the limit: engine = Engine::Generate decode tokens/s (sampling, log-probs included);\n"
        "forward-only = one HybridModel decode step at context %lld; mm-only = the same step's matmul shapes\n"
        "alone on preallocated inputs (experts split evenly), with libtorch (threads per call) and with\n"
        "PackedGemm (as the fused step's row split runs them: rows over the threads, whole experts per\n"
        "thread): the ceilings of each.\n",
        static_cast<long long>(context));
    targets.push_back({"rollout.batch64_decode_fraction_of_compute_limit", tiny_fraction, ">=", 0.5});
  }

  PrintTargets(targets);
  return 0;
}

}  // namespace lightrl::bench
