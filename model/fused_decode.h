// The fused decode step: HybridModel::forward with a cache for a few new tokens per row on CPU in
// fp32 — the rollout engine's decode steps (T = 1, the hot loop) and its prompt prefills
// (T <= kFusedMaxTokens). Internal to model/ (HybridModel::forward calls it; callers choose with
// ForwardOptions::fused_decode). The lightning layers run the recurrent step for T == 1 and the
// chunked block algorithm from the cached state for T > 1, as the module path does (one block
// as plain loops, LightningPrefillBlockF32; longer prompts LightningAttentionChunked).
//
// Same math, same weights, same caches as the module-by-module path, organised for small
// batches. One parallel region per step (instead of two thread wake-ups per op, several hundred
// per step at B = 64 on the tiny model), in one of two splits:
//   * Rows (many token rows): whole rows over the intra-op threads (an OpenMP team), each thread
//     running every layer's attention, norms and residuals for its rows; the MoE is shared out
//     by expert over the whole batch (each thread routes its rows into shared buffers, the
//     threads take whole experts, largest first, as each becomes free — an expert holding more
//     than a fair share split into row ranges, the smallest shared in one piece per thread — and
//     each sums its own tokens), so an expert's weights are mostly streamed by one thread in
//     blocks of all its rows.
//     Two barriers a layer; ~5% faster at B = 64 than every thread running every expert on its
//     own rows. One thread (or fewer than 2 token rows a thread) runs it all alone.
//   * Columns (B * T <= kFusedColumnMaxRows, or B below the thread count, e.g. a prompt's
//     prefill): every thread on every row, each on its share of each layer's columns (its heads of
//     the attention projections with those heads' lightning states / KV heads, its columns of the
//     output projection and of the head, its experts of the MoE by a balanced assignment), norms,
//     residuals and routing repeated on every thread, three barriers a layer. With few rows the
//     step streams the weights more than it computes, and the row split made every thread stream
//     all of them (tiny model, 2 threads: B = 8 0.51 -> 0.30 ms, B = 1 0.19 -> 0.13 ms; B = 32
//     is faster by rows). Needs head_dim % 16 == 0 with PackedGemm (a thread's heads start on a
//     panel); otherwise rows. ForwardOptions::fused_split forces either.
//   * Per layer the only library calls are the projections: PackedGemm (model/packed_gemm.h)
//     over weights packed once per weight version where the CPU has AVX-512F, with the SiLU of
//     q/k/v and the expert's SwiGLU product in its epilogues, at::mm_out into per-thread buffers
//     elsewhere; norms, SiLU (after at::mm_out), the gate, the DeepNorm residuals, the router's softmax/top-k and
//     the expert scatter are plain loops (compiled for AVX-512 / AVX2 / baseline, chosen at run
//     time), the lightning state update is LightningDecodeRowsF32 and the KV-cached softmax
//     attention is CachedAttention, both shared with the module path.
// Differences from the module path are rounding only: other GEMM kernels, a polynomial exp in
// SiLU/sigmoid (rel. error ~1e-7), norm reductions in another order. Tested against the module
// path (tests/model/fused_decode_test.cc). With PackedGemm every stage computes a row from that
// row alone in a fixed order, and each element by the same function in both splits, so a row's
// outputs are bitwise independent of the batch, its slot, the split and the thread count
// (tested); with the at::mm_out fallback BLAS may pick kernels by shape.
//
// Weight changes. The packed copies are checked against each parameter's storage pointer and
// version counter every step and repacked when either moved: every in-place tensor op bumps the
// version (copy_, optimizer updates, Engine::SetWeights, checkpoint and safetensors loads all
// write through them). A write through data_ptr() bypasses the counter and is NOT seen.
#pragma once

#include <torch/torch.h>

#include <mutex>
#include <vector>

#include "model/hybrid_model.h"

namespace lightrl::model {

// Token rows below which a step stays on one thread (more threads would each see GEMMs too
// small to pay for the wake-up).
constexpr int64_t kFusedMinRowsPerThread = 2;
// Token rows (B * T) up to which the step splits columns instead of rows over the threads (see
// above); columns are also used whenever B is below the thread count (a prompt's prefill).
// Measured on the tiny model, 2 threads: columns win below B = 16, tie at 16, rows win at 32.
constexpr int64_t kFusedColumnMaxRows = 16;
// Most tokens per row the fused step takes: decode (1) and short prefills, such as a rollout
// prompt. Longer calls are compute-bound and take the module path (blockwise softmax attention;
// CachedAttention's per-query loops are O(T^2) vector work).
constexpr int64_t kFusedMaxTokens = 512;

// The fused step's per-model state (HybridModelImpl::fused_decode_pack).
struct FusedDecodePack {
  std::mutex mutex;  // one fused step at a time per model (a step may repack)
  struct Linear {
    torch::Tensor source;        // a detached alias of the parameter's storage as packed (kept alive)
    const void* data = nullptr;  // source.data_ptr() when packed
    int64_t version = -1;        // source._version() when packed
    torch::Tensor panels;        // PackLinearWeight(source): [ceil(N/16), K, 16] fp32
    const float* panels_data = nullptr;  // panels.data_ptr<float>()
  };
  std::vector<Linear> linears;  // in the step's traversal order (layer by layer, then the head)
  // Every parameter (handles: they follow set_data, so a later dtype or device change shows);
  // collected on the first FusedDecodeApplies (empty until then) instead of walking the modules
  // every step.
  std::vector<torch::Tensor> parameters;
  // The decoder layers and each layer's experts, resolved once (ModuleList::ptr is a dynamic cast).
  std::vector<const DecoderLayerImpl*> layers;
  std::vector<std::vector<const ExpertImpl*>> experts;
};

// Whether forward(input_ids, ctx, cache, options) may take the fused step: options.fused_decode,
// a cache, 1 <= T <= kFusedMaxTokens, no packed documents, no aux loss, CPU int64 ids, every parameter a CPU fp32
// tensor, and no autograd (grad mode off or no parameter requiring grad).
bool FusedDecodeApplies(const HybridModelImpl& m, const torch::Tensor& input_ids, const ForwardContext& ctx,
                        const ModelCache* cache, const ForwardOptions& options);

// Whether a fused step of [B, T] tokens on `threads` intra-op threads splits columns (true) or
// rows (false), as FusedDecodeStep decides: `split` as requested, kAuto by the rule above.
bool FusedColumnSplit(const ModelConfig& config, int64_t B, int64_t T, int threads, ForwardOptions::FusedSplit split);

// The step itself. input_ids [B, T] int64 (ids already range-checked), cache sized for the
// model's layers and B rows (HybridModel::forward does both). Returns hidden [B, T, C] and,
// unless options.skip_head, logits [B, T or 1 (last_position_only), V] fp32 (values [B, T or 1]
// for a value head); updates the cache as the module path does (KV written at
// [lengths[b], lengths[b] + T), lengths + T, tokens + T), except that
// a contiguous lightning state is updated in place (the module path replaces the tensor): like
// the KV caches, a shallow copy of the cache taken before the step sees the update.
ModelOutput FusedDecodeStep(HybridModelImpl& m, const torch::Tensor& input_ids, ModelCache* cache,
                            const ForwardOptions& options);

}  // namespace lightrl::model
