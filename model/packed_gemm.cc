// PackedGemm (model/packed_gemm.h). Compiled with -O3 (model/CMakeLists.txt). The kernel is GCC
// vector-extension code in functions compiled for AVX-512F (target attribute), so the rest of
// the library keeps the baseline ISA; PackedGemmAvailable gates every call at run time.
#include "model/packed_gemm.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"

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

// R rows x P panels of accumulators (R*P <= 16 zmm) over the full K.
template <int R, int P>
__attribute__((target("avx512f"), always_inline)) inline void Kernel(const float* __restrict x, int64_t ldx,
                                                                      const float* __restrict panel, int64_t K,
                                                                      float* __restrict out, int64_t ldo,
                                                                      int64_t cols) {
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
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * ldx + k];
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) acc[r][p] += xv * w[p];
    }
  }
  if (cols == P * kPackedPanel) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) *reinterpret_cast<V16u*>(out + r * ldo + p * kPackedPanel) = acc[r][p];
    }
  } else {
    for (int r = 0; r < R; ++r) {
      float row[P * kPackedPanel];
      std::memcpy(row, &acc[r][0], sizeof(row));
      std::memcpy(out + r * ldo, row, cols * sizeof(float));
    }
  }
}

// All n rows against P panels (cols valid columns), 8 rows at a time plus a tail.
template <int P>
__attribute__((target("avx512f"))) void PanelRows(const float* x, int64_t ldx, int64_t n, const float* panel,
                                                  int64_t K, float* out, int64_t ldo, int64_t cols) {
  constexpr int kRows = 8;
  int64_t r = 0;
  for (; r + kRows <= n; r += kRows) Kernel<kRows, P>(x + r * ldx, ldx, panel, K, out + r * ldo, ldo, cols);
  const float* xr = x + r * ldx;
  float* o = out + r * ldo;
  switch (n - r) {
    case 1: Kernel<1, P>(xr, ldx, panel, K, o, ldo, cols); break;
    case 2: Kernel<2, P>(xr, ldx, panel, K, o, ldo, cols); break;
    case 3: Kernel<3, P>(xr, ldx, panel, K, o, ldo, cols); break;
    case 4: Kernel<4, P>(xr, ldx, panel, K, o, ldo, cols); break;
    case 5: Kernel<5, P>(xr, ldx, panel, K, o, ldo, cols); break;
    case 6: Kernel<6, P>(xr, ldx, panel, K, o, ldo, cols); break;
    case 7: Kernel<7, P>(xr, ldx, panel, K, o, ldo, cols); break;
    default: break;
  }
}

}  // namespace

bool PackedGemmAvailable() {
  static const bool available = __builtin_cpu_supports("avx512f");
  return available;
}

void PackedGemm(const float* x, int64_t ldx, int64_t n, int64_t K, const float* panels, int64_t N, float* out,
                int64_t ldo) {
  LR_CHECK(PackedGemmAvailable(), "PackedGemm: this CPU has no AVX-512F (check PackedGemmAvailable first)");
  LR_CHECK(reinterpret_cast<uintptr_t>(panels) % 64 == 0, "PackedGemm: panels must be 64-byte aligned");
  const int64_t np = (N + kPackedPanel - 1) / kPackedPanel;
  int64_t p = 0;
  for (; p + 2 <= np; p += 2) {
    PanelRows<2>(x, ldx, n, panels + p * K * kPackedPanel, K, out + p * kPackedPanel, ldo,
                 std::min<int64_t>(2 * kPackedPanel, N - p * kPackedPanel));
  }
  if (p < np) PanelRows<1>(x, ldx, n, panels + p * K * kPackedPanel, K, out + p * kPackedPanel, ldo, N - p * kPackedPanel);
}

#else  // !LIGHTRL_PACKED_GEMM

bool PackedGemmAvailable() { return false; }

void PackedGemm(const float*, int64_t, int64_t, int64_t, const float*, int64_t, float*, int64_t) {
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
