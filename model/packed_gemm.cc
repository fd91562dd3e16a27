// PackedGemm (model/packed_gemm.h). Compiled with -O3 (model/CMakeLists.txt). The kernel is GCC
// vector-extension code in functions compiled for AVX-512F (target attribute), so the rest of
// the library keeps the baseline ISA; PackedGemmAvailable gates every call at run time.
#include "model/packed_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <cstring>
#include <type_traits>

#include "core/check.h"
#include "model/decode_kernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define LIGHTRL_PACKED_GEMM 1
#else
#define LIGHTRL_PACKED_GEMM 0
#endif

namespace lightrl::model {

#if LIGHTRL_PACKED_GEMM
namespace {

typedef float V16 __attribute__((vector_size(64)));                // one zmm, aligned loads (panels)
typedef float V16u __attribute__((vector_size(64), aligned(4)));   // unaligned stores (output rows)
typedef int32_t V16i __attribute__((vector_size(64)));

// y * sigmoid(y) on 16 lanes: e = e^-|y| (ExpNonPositive's steps), sigmoid = 1/(1+e), or e/(1+e)
// for y < 0 (never overflows).
__attribute__((target("avx512f"), always_inline)) inline V16 SiluV(V16 y) {
  const V16i sign = V16i{} + static_cast<int32_t>(0x80000000u);
  V16 t = reinterpret_cast<V16>(reinterpret_cast<V16i>(y) | sign);  // -|y|
  const V16 lo = V16{} - 87.0f;
  const V16i below = t < lo;
  t = reinterpret_cast<V16>((reinterpret_cast<V16i>(t) & ~below) | (reinterpret_cast<V16i>(lo) & below));
  V16 n;
  const V16 p = detail::ExpReduced(t, &n);
  const V16i bits = (__builtin_convertvector(n, V16i) + 127) << 23;
  const V16 e = p * reinterpret_cast<V16>(bits);
  const V16 inv = 1.0f / (1.0f + e);
  const V16i nonneg = y >= V16{};
  const V16 sig = reinterpret_cast<V16>((reinterpret_cast<V16i>(inv) & nonneg) |
                                        (reinterpret_cast<V16i>(e * inv) & ~nonneg));
  return y * sig;
}

// The epilogue of one block: `mul` already at the block's first element.
struct BlockEpilogue {
  PackedEpilogue::Kind kind = PackedEpilogue::Kind::kNone;
  const float* mul = nullptr;
  int64_t ldm = 0;
};

// R rows x P panels of accumulators (R*P <= 16 zmm) over the full K. With `ahead` (the first row
// block of a panel group), each k step also prefetches P cache lines of the next group, the same
// rate this block consumes its own: a matrix streamed from beyond the L3 (the decode step's
// weights, states and caches together exceed it) then arrives before its block runs.
// `ahead_lines` bounds the prefetch to the matrix.
template <int R, int P>
__attribute__((target("avx512f"), always_inline)) inline void Kernel(const float* __restrict x, int64_t ldx,
                                                                      const float* __restrict panel, int64_t K,
                                                                      float* out, int64_t ldo, int64_t cols,
                                                                      const float* ahead, int64_t ahead_lines,
                                                                      const BlockEpilogue& epi) {
  V16 acc[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) acc[r][p] = V16{};
  }
  for (int64_t k = 0; k < K; ++k) {
    V16 w[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) w[p] = *reinterpret_cast<const V16*>(panel + (p * K + k) * kPackedPanel);
    if (ahead != nullptr && k * P < ahead_lines) {
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) __builtin_prefetch(ahead + (k * P + p) * kPackedPanel, 0, 3);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * ldx + k];
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) acc[r][p] += xv * w[p];
    }
  }
  if (epi.kind == PackedEpilogue::Kind::kSilu) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) acc[r][p] = SiluV(acc[r][p]);
    }
  }
  const bool mul = epi.kind == PackedEpilogue::Kind::kMul;
  if (cols == P * kPackedPanel) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) {
        V16 y = acc[r][p];
        if (mul) y *= *reinterpret_cast<const V16u*>(epi.mul + r * epi.ldm + p * kPackedPanel);
        *reinterpret_cast<V16u*>(out + r * ldo + p * kPackedPanel) = y;
      }
    }
  } else {
    for (int r = 0; r < R; ++r) {
      float row[P * kPackedPanel];
      std::memcpy(row, &acc[r][0], sizeof(row));
      if (mul) {
        for (int64_t j = 0; j < cols; ++j) row[j] *= epi.mul[r * epi.ldm + j];
      }
      std::memcpy(out + r * ldo, row, cols * sizeof(float));
    }
  }
}

// Rows [0, rows) (rows <= 8, and <= 4 for P == 4) against P panels (cols valid columns).
template <int P>
__attribute__((target("avx512f"))) void Block(const float* x, int64_t ldx, int64_t rows, const float* panel,
                                              int64_t K, float* out, int64_t ldo, int64_t cols, const float* ahead,
                                              int64_t ahead_lines, const BlockEpilogue& epi) {
#define LIGHTRL_KERNEL(R) Kernel<R, P>(x, ldx, panel, K, out, ldo, cols, ahead, ahead_lines, epi)
  switch (rows) {
    case 1: LIGHTRL_KERNEL(1); break;
    case 2: LIGHTRL_KERNEL(2); break;
    case 3: LIGHTRL_KERNEL(3); break;
    case 4: LIGHTRL_KERNEL(4); break;
    default:
      if constexpr (P <= 2) {
        switch (rows) {
          case 5: LIGHTRL_KERNEL(5); break;
          case 6: LIGHTRL_KERNEL(6); break;
          case 7: LIGHTRL_KERNEL(7); break;
          case 8: LIGHTRL_KERNEL(8); break;
          default: break;
        }
      }
  }
#undef LIGHTRL_KERNEL
}

// Rows [r0, r0 + rows) against all panels, in groups of `width` (2, or 4 when rows <= 4) panels,
// then 2, then 1. Panel-major: a group's panels stay in L1 while its row blocks run.
__attribute__((target("avx512f"))) void Panels(const float* x, int64_t ldx, int64_t r0, int64_t rows, int64_t K,
                                               const float* panels, int64_t N, float* out, int64_t ldo, int width,
                                               PackedNext next, const PackedEpilogue& epilogue) {
  LR_CHECK(width == 2 || (width == 4 && rows <= 4), "PackedGemm: 4-panel groups take at most 4 rows, got ", rows);
  const int64_t np = (N + kPackedPanel - 1) / kPackedPanel;
  int64_t p = 0;
  auto run = [&](auto tag) {
    constexpr int P = decltype(tag)::value;
    const int64_t cols = std::min<int64_t>(P * kPackedPanel, N - p * kPackedPanel);
    const float* panel = panels + p * K * kPackedPanel;
    // The next group starts where this one ends (panels are contiguous; K lines per panel); after
    // the last group comes `next`.
    const bool last = p + P >= np;
    const float* ahead = last ? next.panels : panel + P * K * kPackedPanel;
    const int64_t ahead_lines = last ? std::min<int64_t>(P * K, next.lines) : std::min<int64_t>(P, np - p - P) * K;
    for (int64_t r = r0; r < r0 + rows; r += 8) {
      const bool first = r == r0 && ahead != nullptr && ahead_lines > 0;
      BlockEpilogue epi{epilogue.kind, nullptr, epilogue.ldm};
      if (epilogue.kind == PackedEpilogue::Kind::kMul) epi.mul = epilogue.mul + r * epilogue.ldm + p * kPackedPanel;
      Block<P>(x + r * ldx, ldx, std::min<int64_t>(8, r0 + rows - r), panel, K, out + r * ldo + p * kPackedPanel,
               ldo, cols, first ? ahead : nullptr, ahead_lines, epi);
    }
    p += P;
  };
  if (width == 4) {
    while (p + 4 <= np) run(std::integral_constant<int, 4>{});
  }
  while (p + 2 <= np) run(std::integral_constant<int, 2>{});
  if (p < np) run(std::integral_constant<int, 1>{});
}

bool EnabledAtStart() {
  const char* env = std::getenv("LIGHTRL_PACKED_GEMM");
  return env == nullptr || std::string(env) != "0";
}

std::atomic<bool> g_enabled{EnabledAtStart()};

}  // namespace

bool PackedGemmAvailable() {
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported && g_enabled.load(std::memory_order_relaxed);
}

void SetPackedGemmEnabled(bool enabled) { g_enabled.store(enabled, std::memory_order_relaxed); }

void PackedGemm(const float* x, int64_t ldx, int64_t n, int64_t K, const float* panels, int64_t N, float* out,
                int64_t ldo, PackedNext next, PackedEpilogue epilogue) {
  LR_CHECK(PackedGemmAvailable(), "PackedGemm: this CPU has no AVX-512F (check PackedGemmAvailable first)");
  LR_CHECK(reinterpret_cast<uintptr_t>(panels) % 64 == 0, "PackedGemm: panels must be 64-byte aligned");
  // Blocks of 8 rows x 2 panels (16 accumulators). A tail of 1-4 rows takes 4 panels at a time so
  // that it still has 4-16 independent FMA chains (1 or 2 rows x 2 panels would wait on the FMA
  // latency). Every output element is the same FMA chain over k whatever its block.
  const int64_t full = n / 8 * 8, tail = n - full;
  // `next` goes to the last pass over the panels.
  LR_CHECK(epilogue.kind != PackedEpilogue::Kind::kMul || epilogue.mul != nullptr,
           "PackedGemm: a kMul epilogue needs its multiplier");
  if (full > 0) Panels(x, ldx, 0, full, K, panels, N, out, ldo, 2, tail > 0 ? PackedNext{} : next, epilogue);
  if (tail > 0) Panels(x, ldx, full, tail, K, panels, N, out, ldo, tail <= 4 ? 4 : 2, next, epilogue);
}

#else  // !LIGHTRL_PACKED_GEMM

bool PackedGemmAvailable() { return false; }

void SetPackedGemmEnabled(bool) {}

void PackedGemm(const float*, int64_t, int64_t, int64_t, const float*, int64_t, float*, int64_t, PackedNext,
                PackedEpilogue) {
  LR_FAIL("PackedGemm: not built for this architecture (x86-64 with GCC/Clang only)");
}

#endif

at::Tensor PackLinearWeight(const at::Tensor& w) {
  LR_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat && w.device().is_cpu(),
           "PackLinearWeight: w must be a [N, K] fp32 CPU tensor, got ", w.sizes(), " ", w.scalar_type(), " on ",
           w.device());
  const int64_t N = w.size(0), K = w.size(1), np = (N + kPackedPanel - 1) / kPackedPanel;
  const at::Tensor src = w.contiguous();
  at::Tensor panels = at::zeros({np, K, kPackedPanel}, at::kFloat);  // [ceil(N/16), K, 16]
  const float* s = src.data_ptr<float>();
  float* d = panels.data_ptr<float>();
  for (int64_t j = 0; j < N; ++j) {
    float* dj = d + (j / kPackedPanel) * K * kPackedPanel + j % kPackedPanel;
    for (int64_t k = 0; k < K; ++k) dj[k * kPackedPanel] = s[j * K + k];
  }
  return panels;
}

}  // namespace lightrl::model
