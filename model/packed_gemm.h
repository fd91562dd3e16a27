// A small-batch fp32 GEMM over pre-packed weights, for the decode step (model/fused_decode.h).
//
//   out [n, N] = x [n, K] · Wᵀ     with W [N, K] an nn::Linear weight (row-major, fp32)
//
// Why. At decode, n is the rows one thread handles (1..64) and the weights are reused by every
// step, but a general BLAS call repacks W into its panel layout on every call (that packing was
// ~25% of a decode step's GEMM time with OpenBLAS at n = 32), zero-fills the output for beta = 0,
// and — with Debian's OpenBLAS 0.3.21 on AMD Zen — runs its AVX2 (Haswell) kernels on a CPU
// with full-width AVX-512. Here W is packed once (PackLinearWeight) into panels of 16 output
// columns, [ceil(N/16), K, 16] (zero-padded), and an AVX-512 register-blocked kernel (8 rows x
// 32 columns of accumulators, one broadcast of x and two panel loads per k) writes the output
// directly. Each output element is one fused multiply-add chain over k = 0..K-1 in order, so a
// row's result does not depend on n or on the other rows (batch-invariant by construction).
//
// Available only on x86-64 CPUs with AVX-512F (checked at run time: PackedGemmAvailable);
// elsewhere callers use libtorch's matmul. Single-threaded: callers split rows over threads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace lightrl::model {

// Output columns per panel.
constexpr int64_t kPackedPanel = 16;

// True when this build and this CPU can run PackedGemm (x86-64, GCC/Clang, AVX-512F) and it has
// not been switched off (SetPackedGemmEnabled(false), or LIGHTRL_PACKED_GEMM=0 in the
// environment at start-up).
bool PackedGemmAvailable();

// Switches PackedGemm off (callers then take their libtorch fallback) or back on where the CPU
// supports it: for tests of the fallback paths and for benchmarks. Not synchronised with calls
// in flight; set it between steps.
void SetPackedGemmEnabled(bool enabled);

// w: [N, K] fp32 CPU (any strides) -> panels [ceil(N/16), K, 16] fp32 contiguous, column j of W
// at panel j/16, lane j%16; lanes past N are zero.
at::Tensor PackLinearWeight(const at::Tensor& w);

// The panels a caller will multiply by next (a prefetch hint: the first `lines` 64-byte lines
// of `panels`, i.e. its panel count x its K, or fewer), or none.
struct PackedNext {
  const float* panels = nullptr;
  int64_t lines = 0;
};

// What is applied to each output element y in registers before it is stored (saves a pass over
// the output): nothing; y * sigmoid(y) (SiLU: the lightning layer's q/k/v, the expert's w1); or
// y * mul[r * ldm + j] (the SwiGLU product with the expert's SiLU'd w1 output; mul may be out,
// each element is read before it is written). sigmoid(y) = 1 / (1 + e^-|y|) (or e^-|y| times it
// for y < 0) with the fp32 polynomial exp of model/decode_kernels.h.
struct PackedEpilogue {
  enum class Kind { kNone, kSilu, kMul };
  Kind kind = Kind::kNone;
  const float* mul = nullptr;  // kMul: [n, N] with row stride ldm
  int64_t ldm = 0;
};

// out[r * ldo + j] = epilogue(sum_k x[r * ldx + k] * W[j][k]) for r < n, j < N; panels from
// PackLinearWeight(W) (64-byte aligned, as libtorch allocates). REQUIRES PackedGemmAvailable().
// Each panel group's first row block prefetches the next group, and the last group `next`, so
// a sequence of calls streams its weights from memory ahead of use.
void PackedGemm(const float* x, int64_t ldx, int64_t n, int64_t K, const float* panels, int64_t N, float* out,
                int64_t ldo, PackedNext next = {}, PackedEpilogue epilogue = {});

}  // namespace lightrl::model
