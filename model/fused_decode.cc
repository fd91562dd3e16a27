// FusedDecodeStep (model/fused_decode.h). Compiled with -O3 (model/CMakeLists.txt).
#include "model/fused_decode.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "core/check.h"
#include "model/decode_kernels.h"
#include "model/lightning_ops.h"
#include "model/packed_gemm.h"

namespace lightrl::model {

namespace {

using detail::ExpNonPositive;

// sigmoid(x) = 1 / (1 + e^-x) from e = e^-|x| (never overflows).
inline float Sigmoid(float x) {
  const float e = ExpNonPositive(-std::fabs(x));
  const float inv = 1.0f / (1.0f + e);
  return x >= 0.0f ? inv : e * inv;
}

// x <- silu(x) = x * sigmoid(x). x: [n]
LIGHTRL_VECTOR_CLONES void SiluInPlace(float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * Sigmoid(x[i]);
}

// u <- silu(u) * v (the SwiGLU product). u, v: [n]
LIGHTRL_VECTOR_CLONES void SiluMul(float* __restrict u, const float* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) u[i] = (u[i] * Sigmoid(u[i])) * v[i];
}

// Sum of squares with 16 independent partial sums (vectorises without reassociation flags).
inline float SumSquares(const float* __restrict x, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * x[i + j];
  }
  for (; i < n; ++i) acc[i % 16] += x[i] * x[i];
  float s = 0;
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

// RMSNorm of `rows` rows of width n (RmsNorm in layers.cc): y = (x * rsqrt(mean(x^2) + eps)) * w.
// x and y: [rows, n] contiguous (y may alias x); w: [n].
LIGHTRL_VECTOR_CLONES void RmsNormRows(const float* x, const float* __restrict w, float eps, int64_t rows, int64_t n,
                                       float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float inv = 1.0f / std::sqrt(SumSquares(xr, n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * inv) * w[i];
  }
}

// The lightning layer's output norm and gate (lightning_attention.cc), in place on o:
// o = ((o * rsqrt(mean(o^2) + eps)) * w) * sigmoid(g). o, g: [rows, n]; w: [n].
LIGHTRL_VECTOR_CLONES void NormGateRows(float* o, const float* __restrict g, const float* __restrict w, float eps,
                                        int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict orow = o + r * n;
    const float* __restrict grow = g + r * n;
    const float inv = 1.0f / std::sqrt(SumSquares(orow, n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) orow[i] = ((orow[i] * inv) * w[i]) * Sigmoid(grow[i]);
  }
}

// DeepNorm residual: out = a * alpha + b * beta over n elements (out may alias a or b).
LIGHTRL_VECTOR_CLONES void Residual(const float* a, float alpha, const float* b, float beta, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * alpha + b[i] * beta;
}

// acc[i] += y[i] * w over n elements (the weighted expert output added to its token).
LIGHTRL_VECTOR_CLONES void AddScaled(float* __restrict acc, const float* __restrict y, float w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += y[i] * w;
}

float* F(const at::Tensor& t) { return t.data_ptr<float>(); }

// A projection weight of the step: the parameter [N, K] and, when PackedGemm runs, its panels.
struct Weight {
  const at::Tensor* w = nullptr;
  const float* panels = nullptr;
  PackedNext next;  // the weight the step multiplies by after this one (prefetched during this one)
};

// out[:, c0:c1] = x · w[c0:c1]ᵀ (w an nn::Linear weight [N, K] without bias; out and x at column
// 0, row-major with row strides ldx and ldo; c0 a multiple of kPackedPanel when packed), on the
// calling thread, then SiLU if `silu`: in PackedGemm's epilogue, or a pass over the rows after
// at::mm_out. The whole width (0, N) prefetches w.next; a slice does not. Raw pointers: a tensor
// view per call costs about a microsecond, and a step makes ~130 of these calls per thread.
void LinearCols(const float* x, int64_t ldx, int64_t n, const Weight& w, int64_t c0, int64_t c1, float* out,
                int64_t ldo, bool silu = false) {
  if (c1 <= c0 || n == 0) return;
  const int64_t N = w.w->size(0), K = w.w->size(1);
  if (w.panels != nullptr) {
    PackedEpilogue epi;
    if (silu) epi.kind = PackedEpilogue::Kind::kSilu;
    const bool whole = c0 == 0 && c1 == N;
    PackedGemm(x, ldx, n, K, w.panels + (c0 / kPackedPanel) * K * kPackedPanel, c1 - c0, out + c0, ldo,
               whole ? w.next : PackedNext{}, epi);
    return;
  }
  const at::Tensor xt = at::from_blob(const_cast<float*>(x), {n, K}, {ldx, 1}, at::kFloat);
  at::Tensor ot = at::from_blob(out + c0, {n, c1 - c0}, {ldo, 1}, at::kFloat);
  at::mm_out(ot, xt, w.w->narrow(0, c0, c1 - c0).t());
  if (silu) {
    for (int64_t r = 0; r < n; ++r) SiluInPlace(out + r * ldo + c0, c1 - c0);
  }
}

// out [n, N] = x [n, K] · wᵀ, the whole width.
void Linear(const float* x, int64_t ldx, int64_t n, const Weight& w, float* out, int64_t ldo) {
  LinearCols(x, ldx, n, w, 0, w.w->size(0), out, ldo);
}

// The same on whole [n, K] -> [n, N] row-major tensors.
void Linear(const at::Tensor& x, const Weight& w, at::Tensor& out) {
  Linear(F(x), x.stride(0), x.size(0), w, F(out), out.stride(0));
}

// The SwiGLU expert's first half for ne rows: u [ne, I] = silu(x · w1ᵀ) * (x · w3ᵀ). With
// PackedGemm both products end in the GEMM epilogues (w3's multiplies by u in place); otherwise
// x · w3ᵀ goes to `scratch` [ne, I] and SiluMul combines.
void SwiGlu(const float* x, int64_t ldx, int64_t ne, const Weight& w1, const Weight& w3, float* u, float* scratch) {
  const int64_t I = w1.w->size(0), K = w1.w->size(1);
  if (w1.panels != nullptr && w3.panels != nullptr) {
    PackedGemm(x, ldx, ne, K, w1.panels, I, u, I, w1.next, PackedEpilogue{PackedEpilogue::Kind::kSilu, nullptr, 0});
    PackedGemm(x, ldx, ne, K, w3.panels, I, u, I, w3.next, PackedEpilogue{PackedEpilogue::Kind::kMul, u, I});
    return;
  }
  Linear(x, ldx, ne, w1, u, I);
  Linear(x, ldx, ne, w3, scratch, I);
  SiluMul(u, scratch, ne * I);
}

// Hands out the step's weights in traversal order, repacking the ones whose parameter changed
// (storage pointer or version counter) since they were packed. Main thread, pack mutex held.
class Packer {
 public:
  Packer(FusedDecodePack* pack, bool enabled) : pack_(pack), enabled_(enabled) {}
  Weight operator()(const at::Tensor& w) {
    Weight out;
    out.w = &w;
    if (!enabled_) return out;
    if (next_ == pack_->linears.size()) pack_->linears.emplace_back();
    FusedDecodePack::Linear& p = pack_->linears[next_++];
    if (p.data != w.data_ptr() || p.version != w._version() || !p.source.defined() ||
        p.source.sizes() != w.sizes()) {
      p.panels = PackLinearWeight(w);
      p.panels_data = F(p.panels);
      // A detached alias keeps THIS storage alive: after a set_data (e.g. a dtype round trip) a
      // new storage can never reuse its address and pass for the packed one.
      p.source = w.detach();
      p.data = w.data_ptr();
      p.version = w._version();
    }
    out.panels = p.panels_data;
    return out;
  }

 private:
  FusedDecodePack* pack_;
  bool enabled_;
  size_t next_ = 0;
};

// Everything a row range needs about one layer, resolved once per step on the calling thread.
struct LayerPlan {
  const DecoderLayerImpl* layer = nullptr;
  bool lightning = false;
  Weight qkv, gate, out;    // lightning projections
  Weight q, k, v, o;        // softmax projections
  Weight router;            // [E, C]
  std::vector<Weight> w1, w3, w2;  // [E] experts
  // lightning
  const float* state = nullptr;  // [B, H, D, D] old state (nullptr = zeros)
  float* next_state = nullptr;   // [B, H, D, D] new state (may be `state`: in place)
  at::Tensor state_tensor;       // the old state as a tensor (undefined = zeros), for T > 1
  // softmax
  std::vector<int64_t> lengths;  // [B] row lengths before this step
  at::Tensor k_cache, v_cache;   // [B, Hkv, capacity, D] fp32 contiguous
};

struct StepPlan {
  const ModelConfig* config = nullptr;
  HybridModelImpl* model = nullptr;
  const int64_t* ids = nullptr;  // [B, T] row-major
  int64_t T = 1;                 // new tokens per row
  bool last_only = false;        // head on each row's last token only
  std::vector<LayerPlan> layers;
  Weight head_weight;  // lm_head [V, C] or value_head [1, C]
  at::Tensor hidden;  // [B*T, C] final-normed hidden (output)
  at::Tensor head;    // [B or B*T, V] logits or [B or B*T, 1] values (output; undefined with skip_head)
};

// Points each packed weight's `next` at the one RunRows multiplies by after it (attention
// projections, router, experts' w1 w3 w2 in expert order, then the next layer; the head last), so
// each GEMM prefetches the start of the following one.
void LinkPrefetch(StepPlan* p) {
  std::vector<Weight*> order;
  for (LayerPlan& lp : p->layers) {
    if (lp.lightning) {
      order.insert(order.end(), {&lp.qkv, &lp.gate, &lp.out});
    } else {
      order.insert(order.end(), {&lp.q, &lp.k, &lp.v, &lp.o});
    }
    order.push_back(&lp.router);
    for (size_t e = 0; e < lp.w1.size(); ++e) order.insert(order.end(), {&lp.w1[e], &lp.w3[e], &lp.w2[e]});
  }
  order.push_back(&p->head_weight);
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    const Weight& b = *order[i + 1];
    if (order[i]->panels == nullptr || b.panels == nullptr) continue;
    const int64_t panels = (b.w->size(0) + kPackedPanel - 1) / kPackedPanel;
    order[i]->next = PackedNext{b.panels, panels * b.w->size(1)};
  }
}

// Scratch of one range of rows (allocated per step per thread: a handful of small tensors).
// n = token rows = sequences * T, row r = (sequence, token) = (r / T, r % T).
struct Scratch {
  at::Tensor x, h, y, a;     // [n, C] residual stream, normed input, residual, attention out
  at::Tensor qkv, gate, o;   // lightning: [n, 3*H*D], [n, H*D], [n, H*D]
  at::Tensor q, k, v;        // softmax: [n, H*D], [n, Hkv*D], [n, Hkv*D]
  at::Tensor router;         // [n, E]
  at::Tensor xe, u, w3, ye;  // experts: [tokens, C], [tokens, I], [tokens, I] (one expert at a time), [n*K, C] by slot
  at::Tensor moe;            // [n, C]
};

// The lightning attention core for heads [h0, h0 + nh) of sequences [b0, b0 + ns) (n = ns * T
// token rows), from and into the layer's cached states: qkv [n, nh*3D] rows (SiLU applied; head
// h's q | k | v at (h - h0)*3D) -> o [n, H*D] rows at columns h0*D.. (o at sequence b0's first
// row). One token per row: the recurrent step (LightningDecodeRowsF32). Several: the chunked
// block algorithm from the cached state, as a prefill does: as loops for at most one block
// (LightningPrefillBlockF32), else LightningAttentionChunked. The row split passes every head,
// the column split every sequence.
void LightningCore(const StepPlan& p, const LayerPlan& lp, const float* qkv, int64_t b0, int64_t ns, int64_t h0,
                   int64_t nh, float* o) {
  const LightningAttentionImpl& la = *lp.layer->lightning;
  const int64_t H = la.num_heads(), D = la.head_dim(), inner = H * D, T = p.T, ld = nh * 3 * D, DD = D * D;
  auto state = [&](int64_t b) { return lp.state ? lp.state + (b * H + h0) * DD : nullptr; };  // [nh, D, D]
  auto next = [&](int64_t b) { return lp.next_state + (b * H + h0) * DD; };
  if (T == 1) {
    if (nh == H) {
      // Every head: the rows' (sequence, head) pairs are contiguous, one call over all of them.
      LightningDecodeRowsF32(qkv, qkv + D, qkv + 2 * D, 3 * D, state(b0), F(la.decay()), ns * H, H, D, next(b0), o);
    } else {
      for (int64_t i = 0; i < ns; ++i) {
        const float* row = qkv + i * ld;
        LightningDecodeRowsF32(row, row + D, row + 2 * D, 3 * D, state(b0 + i), F(la.decay()) + h0, nh, nh, D,
                               next(b0 + i), o + i * inner + h0 * D);
      }
    }
  } else if (T <= la.block_size()) {
    // A prompt of at most one block: the block algorithm as loops (no libtorch op per layer).
    for (int64_t i = 0; i < ns; ++i) {
      const float* rows = qkv + i * T * ld;
      LightningPrefillBlockF32(rows, rows + D, rows + 2 * D, ld, T, nh, D, F(la.slopes()) + h0, state(b0 + i),
                               next(b0 + i), o + i * T * inner + h0 * D, inner);
    }
  } else {
    const at::Tensor heads = at::from_blob(const_cast<float*>(qkv), {ns, T, nh, 3 * D}, at::kFloat);
    const at::Tensor q = heads.narrow(3, 0, D).transpose(1, 2), k = heads.narrow(3, D, D).transpose(1, 2);
    const at::Tensor v = heads.narrow(3, 2 * D, D).transpose(1, 2);  // each [ns, nh, T, D]
    const at::Tensor s0 =
        lp.state_tensor.defined() ? lp.state_tensor.narrow(0, b0, ns).narrow(1, h0, nh) : at::Tensor();
    const LightningResult r = LightningAttentionChunked(q, k, v, la.slopes().narrow(0, h0, nh), s0,
                                                        LightningOptions{la.block_size(), {}, true});
    at::from_blob(o, {ns, T, H, D}, at::kFloat).narrow(2, h0, nh).copy_(r.out.transpose(1, 2));
    const at::Tensor st = r.state.contiguous();  // [ns, nh, D, D]
    for (int64_t i = 0; i < ns; ++i) std::memcpy(next(b0 + i), F(st) + i * nh * DD, nh * DD * sizeof(float));
  }
}

// Attention of one lightning layer for sequences [b0, b0 + ns), every head: s.h -> s.a.
void LightningRows(const StepPlan& p, const LayerPlan& lp, int64_t b0, int64_t ns, Scratch& s) {
  const LightningAttentionImpl& la = *lp.layer->lightning;
  const int64_t H = la.num_heads(), inner = H * la.head_dim(), n = ns * p.T;
  // [n, H, 3D]: head h owns q | k | v, SiLU applied.
  LinearCols(F(s.h), s.h.stride(0), n, lp.qkv, 0, 3 * inner, F(s.qkv), 3 * inner, /*silu=*/true);
  Linear(s.h, lp.gate, s.gate);
  LightningCore(p, lp, F(s.qkv), b0, ns, 0, H, F(s.o));
  NormGateRows(F(s.o), F(s.gate), F(la.norm->weight), static_cast<float>(la.norm->eps), n, inner);
  Linear(s.o, lp.out, s.a);
}

// The softmax attention core for KV heads [k0, k0 + nkv) (q heads k0*G..) of sequences
// [b0, b0 + ns): q [n, nq*D], k and v [n, nkv*D] (this call's projections, unit stride in D) ->
// o [ns, nq, T, D] (a transposed view of [ns, T, nq, D]); writes the new K (RoPE'd) and V at
// [lengths[b], lengths[b] + T) of the cache; query t attends keys [0, lengths[b] + t].
at::Tensor SoftmaxCore(const StepPlan& p, const LayerPlan& lp, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, int64_t b0, int64_t ns, int64_t k0, int64_t nkv) {
  const SoftmaxAttentionImpl& sa = *lp.layer->softmax;
  const int64_t D = sa.head_dim(), rot = sa.rotary_dim(), T = p.T;
  const int64_t nq = nkv * (sa.num_heads() / sa.num_kv_heads());
  const std::vector<int64_t> lengths(lp.lengths.begin() + b0, lp.lengths.begin() + b0 + ns);
  std::vector<float> cos, sin;
  detail::RopeTables<float>(lengths, T, rot, sa.rope_theta(), &cos, &sin);
  const at::Tensor& ck = lp.k_cache;
  const at::Tensor& cv = lp.v_cache;
  // [n, h*D] viewed as [ns, h, T, D] (the layout RopeInto reads).
  auto heads = [ns, T, D](const at::Tensor& t, int64_t h) { return t.view({ns, T, h, D}).transpose(1, 2); };
  at::Tensor qrot = at::empty({ns, nq, T, D}, at::kFloat);
  detail::RopeInto<float>(heads(q, nq), cos, sin, rot / 2, rot, F(qrot), nq * T * D, T * D, D, {});
  detail::RopeInto<float>(heads(k, nkv), cos, sin, rot / 2, rot, F(ck) + b0 * ck.stride(0) + k0 * ck.stride(1),
                          ck.stride(0), ck.stride(1), ck.stride(2), lengths);
  detail::RopeInto<float>(heads(v, nkv), cos, sin, 0, 0, F(cv) + b0 * cv.stride(0) + k0 * cv.stride(1), cv.stride(0),
                          cv.stride(1), cv.stride(2), lengths);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  return CachedAttention(qrot, ck.narrow(0, b0, ns).narrow(1, k0, nkv), cv.narrow(0, b0, ns).narrow(1, k0, nkv),
                         lengths, scale);
}

// Attention of one softmax layer for sequences [b0, b0 + ns), every head: s.h -> s.a.
void SoftmaxRows(const StepPlan& p, const LayerPlan& lp, int64_t b0, int64_t ns, Scratch& s) {
  const SoftmaxAttentionImpl& sa = *lp.layer->softmax;
  const int64_t n = ns * p.T;
  Linear(s.h, lp.q, s.q);
  Linear(s.h, lp.k, s.k);
  Linear(s.h, lp.v, s.v);
  const at::Tensor o = SoftmaxCore(p, lp, s.q, s.k, s.v, b0, ns, 0, sa.num_kv_heads());  // [ns, H, T, D]
  Linear(o.transpose(1, 2).reshape({n, sa.num_heads() * sa.head_dim()}), lp.o, s.a);
}

// ---- MoE pieces (moe.cc: fp32 softmax router, top-k renormalised, SwiGLU experts over their
// tokens grouped, outputs weighted and summed in expert order) --------------------------------

// Router of n tokens from logits [n, E]: softmax, top-k by probability (the lower expert id first
// on ties), renormalised: choice / weight [n*K], token-major.
void RouteTokens(const float* logits, int64_t n, int64_t E, int64_t K, int64_t* choice, float* weight) {
  std::vector<float> prob(E);
  for (int64_t t = 0; t < n; ++t) {
    const float* z = logits + t * E;
    float mx = z[0];
    for (int64_t e = 1; e < E; ++e) mx = std::max(mx, z[e]);
    float sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (prob[e] = std::exp(z[e] - mx));
    for (int64_t e = 0; e < E; ++e) prob[e] /= sum;
    float wsum = 0;
    for (int64_t k = 0; k < K; ++k) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        bool taken = false;
        for (int64_t j = 0; j < k; ++j) taken = taken || choice[t * K + j] == e;
        if (!taken && (best < 0 || prob[e] > prob[best])) best = e;
      }
      choice[t * K + k] = best;
      weight[t * K + k] = prob[best];
      wsum += prob[best];
    }
    for (int64_t k = 0; k < K; ++k) weight[t * K + k] /= wsum;
  }
}

// The (token, choice) pairs of n tokens grouped by expert in (token, choice) order (a stable
// counting sort): slot -> token and weight, and each expert's slot range.
struct Routing {
  std::vector<int64_t> count, start, token_of;  // [E], [E + 1], [n*K]
  std::vector<float> weight_of;                 // [n*K]
};
Routing GroupSlots(const int64_t* choice, const float* weight, int64_t n, int64_t E, int64_t K) {
  Routing r;
  r.count.assign(E, 0);
  for (int64_t i = 0; i < n * K; ++i) r.count[choice[i]]++;
  r.start.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) r.start[e + 1] = r.start[e] + r.count[e];
  std::vector<int64_t> fill(r.start.begin(), r.start.end() - 1);
  r.token_of.resize(n * K);
  r.weight_of.resize(n * K);
  for (int64_t i = 0; i < n * K; ++i) {
    const int64_t slot = fill[choice[i]]++;
    r.token_of[slot] = i / K;
    r.weight_of[slot] = weight[i];
  }
  return r;
}

// Slots [lo, hi) of expert e: their rows gathered from h [tokens, C] into xe, u = SwiGLU, then
// those rows of ye [n*K, C] (by slot). xe [tokens, C] and u, w3 [tokens, I] are scratch for one
// call (an expert has at most one slot per token).
void RunExpertSlots(const LayerPlan& lp, const Routing& r, int64_t e, int64_t lo, int64_t hi, const float* h,
                    int64_t C, int64_t I, float* xe, float* u, float* w3, float* ye) {
  const int64_t ne = hi - lo;
  if (ne <= 0) return;
  for (int64_t j = 0; j < ne; ++j) std::memcpy(xe + j * C, h + r.token_of[lo + j] * C, C * sizeof(float));
  SwiGlu(xe, C, ne, lp.w1[e], lp.w3[e], u, w3);
  Linear(u, I, ne, lp.w2[e], ye + lo * C, C);
}

// Experts `experts`, all their slots.
void RunExperts(const LayerPlan& lp, const Routing& r, const std::vector<int64_t>& experts, const float* h, int64_t C,
                int64_t I, float* xe, float* u, float* w3, float* ye) {
  for (int64_t e : experts) RunExpertSlots(lp, r, e, r.start[e], r.start[e + 1], h, C, I, xe, u, w3, ye);
}

// Piece i of [0, total) cut into `parts` near-equal pieces of whole `align`-sized units.
std::pair<int64_t, int64_t> Piece(int64_t total, int64_t parts, int64_t i, int64_t align = 1) {
  const int64_t units = (total + align - 1) / align;
  return {std::min(total, units * i / parts * align), std::min(total, units * (i + 1) / parts * align)};
}

// The row split's MoE work items, largest first (then expert, then slot order): each active
// expert whole, or in near-equal row ranges where it holds more than a fair share of the slots
// (total / threads, at least kMinExpertItemRows), so that more threads than experts, or one
// expert taking most tokens, still spread. Every thread builds the same list.
struct ExpertItem {
  int64_t expert, lo, hi;
};
constexpr int64_t kMinExpertItemRows = 16;
std::vector<ExpertItem> ExpertItems(const Routing& r, int nt) {
  const int64_t E = static_cast<int64_t>(r.count.size()), total = r.start[E];
  const int64_t fair = std::max<int64_t>(kMinExpertItemRows, (total + nt - 1) / nt);
  std::vector<ExpertItem> items;
  // Expert e's slots [lo, hi) in `pieces` near-equal row ranges.
  auto add = [&](int64_t e, int64_t lo, int64_t hi, int64_t pieces) {
    for (int64_t i = 0; i < pieces; ++i) {
      const auto [a, b] = Piece(hi - lo, pieces, i);
      items.push_back({e, lo + a, lo + b});
    }
  };
  for (int64_t e = 0; e < E; ++e) add(e, r.start[e], r.start[e + 1], (r.count[e] + fair - 1) / fair);
  std::stable_sort(items.begin(), items.end(),
                   [](const ExpertItem& a, const ExpertItem& b) { return a.hi - a.lo > b.hi - b.lo; });
  // The smallest item goes last, in one piece per thread: whoever is free first shares it, so
  // the threads reach the barrier within a fraction of an item (one expert streamed twice).
  if (nt > 1 && items.size() > 1) {
    const ExpertItem last = items.back();
    const int64_t pieces = std::min<int64_t>(nt, last.hi - last.lo);
    if (pieces > 1) {
      items.pop_back();
      add(last.expert, last.lo, last.hi, pieces);
    }
  }
  return items;
}

// moe [t1 - t0, C] = for tokens t0..t1-1 the weighted sum of their experts' rows of ye, in slot
// (= expert) order.
void SumExperts(const Routing& r, const float* ye, int64_t t0, int64_t t1, int64_t C, float* moe) {
  std::memset(moe, 0, (t1 - t0) * C * sizeof(float));
  for (size_t slot = 0; slot < r.token_of.size(); ++slot) {
    const int64_t t = r.token_of[slot];
    if (t >= t0 && t < t1) AddScaled(moe + (t - t0) * C, ye + slot * C, r.weight_of[slot], C);
  }
}

std::vector<int64_t> AllExperts(int64_t E) {
  std::vector<int64_t> all(E);
  for (int64_t e = 0; e < E; ++e) all[e] = e;
  return all;
}

// The experts thread `tid` of `nt` runs, from the per-expert (token, choice) counts: active
// experts by count (descending, then id) each to the least loaded thread, a load being its rows
// plus kExpertFixedRows (streaming an expert's weights costs about that many rows). Every thread
// computes the same assignment.
constexpr int64_t kExpertFixedRows = 8;
std::vector<int64_t> ExpertsOf(const std::vector<int64_t>& count, int tid, int nt) {
  std::vector<int64_t> order;
  for (int64_t e = 0; e < static_cast<int64_t>(count.size()); ++e) {
    if (count[e] > 0) order.push_back(e);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return count[a] > count[b]; });
  std::vector<int64_t> load(nt, 0), mine;
  for (int64_t e : order) {
    const int owner = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    load[owner] += count[e] + kExpertFixedRows;
    if (owner == tid) mine.push_back(e);
  }
  return mine;
}

// A team of threads in one OpenMP parallel region: Phase runs a piece of work unless a thread has
// failed, then (barrier = true) waits for every thread. All threads pass the same barriers
// whatever throws; the first error is rethrown after the region (Rethrow).
struct Team {
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex mutex;
  template <class Fn>
  void Phase(Fn&& fn, bool barrier = true) {
    if (!failed.load()) {
      try {
        fn();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
    if (barrier) {
#pragma omp barrier
    }
  }
  void Rethrow() {
    if (error) std::rethrow_exception(error);
  }
};

// The row split's shared MoE state: each thread routes its own tokens into choice / weight and
// writes their normed rows to h2; then the threads take the experts over ALL rows (ExpertItems:
// whole experts, split only where one holds more than a fair share), largest first, as each
// becomes free (next_expert), writing ye, so each expert's weights are streamed by one thread in
// blocks of all its rows; then each sums its own tokens. Two barriers a layer. (Equal shares of
// the slots instead, splitting experts wherever a share ends, balance the rows but stream more
// weights: measured slower on the tiny model.)
struct RowTeam {
  Team team;
  at::Tensor h2, ye;            // [n, C], [n*K, C]
  std::vector<int64_t> choice;  // [n*K]
  std::vector<float> weight;    // [n*K]
  // Per layer, the next ExpertItem a thread takes: the threads share the experts dynamically, so
  // a slower core or a heavier expert delays no one at the barrier more than one item's time.
  // Which thread runs an item does not change its result.
  std::unique_ptr<std::atomic<int64_t>[]> next_expert;  // [layers]
};

// All layers and the head for sequences [b0, b1) on the calling thread; with a team (thread tid
// of nt) the MoE runs over the whole batch, experts shared out (RowTeam), else over these rows.
void RunRows(const StepPlan& p, int64_t b0, int64_t b1, RowTeam* team = nullptr, int tid = 0, int nt = 1) {
  torch::NoGradGuard no_grad;  // grad mode is thread-local
  const ModelConfig& c = *p.config;
  const int64_t ns = b1 - b0, T = p.T, n = ns * T, C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim;
  const int64_t Hkv = c.num_key_value_heads, E = c.num_local_experts, K = c.num_experts_per_tok;
  const int64_t I = c.intermediate_size, inner = H * D, t0 = b0 * T;
  const int64_t all = team != nullptr ? team->h2.size(0) : n;  // token rows the experts see
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto phase = [&](auto&& fn, bool barrier = true) {
    if (team != nullptr) {
      team->team.Phase(fn, barrier);
    } else {
      fn();
    }
  };
  Scratch s;
  float* x = nullptr;
  phase(
      [&] {
        s.x = at::empty({n, C}, f32);
        s.h = at::empty({n, C}, f32);
        s.y = at::empty({n, C}, f32);
        s.a = at::empty({n, C}, f32);
        s.router = at::empty({n, E}, f32);
        s.xe = at::empty({all, C}, f32);  // one expert's rows at a time
        s.u = at::empty({all, I}, f32);
        s.w3 = at::empty({all, I}, f32);
        if (team == nullptr) s.ye = at::empty({n * K, C}, f32);
        s.moe = at::empty({n, C}, f32);
        bool any_lightning = false, any_softmax = false;
        for (const LayerPlan& lp : p.layers) (lp.lightning ? any_lightning : any_softmax) = true;
        if (any_lightning) {
          s.qkv = at::empty({n, 3 * inner}, f32);
          s.gate = at::empty({n, inner}, f32);
          s.o = at::empty({n, inner}, f32);
        }
        if (any_softmax) {
          s.q = at::empty({n, inner}, f32);
          s.k = at::empty({n, Hkv * D}, f32);
          s.v = at::empty({n, Hkv * D}, f32);
        }
        const float* emb = F(p.model->model->embed_tokens->weight);
        x = F(s.x);
        for (int64_t r = 0; r < n; ++r) std::memcpy(x + r * C, emb + p.ids[t0 + r] * C, C * sizeof(float));
      },
      false);

  std::vector<int64_t> choice(team != nullptr ? 0 : n * K);
  std::vector<float> weight(team != nullptr ? 0 : n * K);
  for (size_t layer_index = 0; layer_index < p.layers.size(); ++layer_index) {
    const LayerPlan& lp = p.layers[layer_index];
    const DecoderLayerImpl& layer = *lp.layer;
    // Attention, residual, post-norm and routing of these rows (team: into the shared buffers).
    phase([&] {
      if (n == 0) return;
      RmsNormRows(x, F(layer.input_layernorm->weight), static_cast<float>(layer.input_layernorm->eps), n, C, F(s.h));
      if (lp.lightning) {
        LightningRows(p, lp, b0, ns, s);
      } else {
        SoftmaxRows(p, lp, b0, ns, s);
      }
      // y = (postnorm ? h1 : x) * alpha_attn + attn * beta_attn; h2 = RMSNorm_post(y)
      Residual(layer.postnorm() ? F(s.h) : x, static_cast<float>(layer.alpha_attn()), F(s.a),
               static_cast<float>(layer.beta_attn()), n * C, F(s.y));
      RmsNormRows(F(s.y), F(layer.post_attention_layernorm->weight),
                  static_cast<float>(layer.post_attention_layernorm->eps), n, C, F(s.h));
      Linear(s.h, lp.router, s.router);  // [n, E]
      if (team != nullptr) {
        std::memcpy(F(team->h2) + t0 * C, F(s.h), n * C * sizeof(float));
        RouteTokens(F(s.router), n, E, K, team->choice.data() + t0 * K, team->weight.data() + t0 * K);
      } else {
        RouteTokens(F(s.router), n, E, K, choice.data(), weight.data());
      }
    });
    // The experts: a team's share over every row, or all of them over these rows.
    Routing route;
    phase([&] {
      if (team != nullptr) {
        route = GroupSlots(team->choice.data(), team->weight.data(), all, E, K);
        const std::vector<ExpertItem> items = ExpertItems(route, nt);
        std::atomic<int64_t>& next = team->next_expert[layer_index];
        for (int64_t i = next.fetch_add(1); i < static_cast<int64_t>(items.size()); i = next.fetch_add(1)) {
          const ExpertItem& it = items[i];
          RunExpertSlots(lp, route, it.expert, it.lo, it.hi, F(team->h2), C, I, F(s.xe), F(s.u), F(s.w3),
                         F(team->ye));
        }
      } else {
        route = GroupSlots(choice.data(), weight.data(), n, E, K);
        RunExperts(lp, route, AllExperts(E), F(s.h), C, I, F(s.xe), F(s.u), F(s.w3), F(s.ye));
      }
    });
    // These rows' weighted expert sums and the residual x = (postnorm ? h2 : y) * alpha + moe * beta.
    phase(
        [&] {
          if (n == 0) return;
          SumExperts(route, team != nullptr ? F(team->ye) : F(s.ye), team != nullptr ? t0 : 0,
                     team != nullptr ? t0 + n : n, C, F(s.moe));
          Residual(layer.postnorm() ? F(s.h) : F(s.y), static_cast<float>(layer.alpha_mlp()), F(s.moe),
                   static_cast<float>(layer.beta_mlp()), n * C, x);
        },
        false);
  }
  phase(
      [&] {
        if (n == 0) return;
        at::Tensor hidden = p.hidden.narrow(0, t0, n);  // [n, C]
        const RMSNormImpl& norm = *p.model->model->norm;
        RmsNormRows(x, F(norm.weight), static_cast<float>(norm.eps), n, C, F(hidden));
        if (!p.head.defined()) return;
        if (!p.last_only || T == 1) {
          at::Tensor out = p.head.narrow(0, t0, n);
          Linear(hidden, p.head_weight, out);
        } else {
          at::Tensor last = hidden.view({ns, T, C}).select(1, T - 1).contiguous();  // [ns, C]
          at::Tensor out = p.head.narrow(0, b0, ns);
          Linear(last, p.head_weight, out);
        }
      },
      false);
}

// ---- column split: every thread on every row, each on its share of the columns ---------------
//
// For a few token rows (small decode batches, one prompt's prefill) the step is bound by streaming
// the weights, and splitting ROWS over threads makes every thread stream all of them. Here each
// thread takes a share of every layer's output columns instead: its heads of the attention
// projections (and those heads' lightning states / KV heads), its columns of the output
// projection and of the head, and its experts of the MoE. Norms, residuals and routing are cheap
// at these sizes and run on every thread for every row (thread-private copies), so a layer needs
// three barriers. Each output element is computed by the same function in the same order as in
// the row split (a GEMM column's FMA chain, a head's recurrence, a row's norm, the expert sum in
// slot order), so the two modes give bitwise equal results with PackedGemm.

// Buffers every thread reads after a barrier: [n, H*D] attention outputs (before the norm) and
// gate logits, [n, C] output projection, [n*K, C] expert outputs by slot.
struct ColumnShared {
  at::Tensor o, gate, a, ye;
  Team team;
};

// One thread's part of the whole step (inside an OpenMP parallel region of nt threads).
void RunColumns(const StepPlan& p, ColumnShared& sh, int64_t B, int tid, int nt) {
  torch::NoGradGuard no_grad;
  const ModelConfig& c = *p.config;
  const int64_t T = p.T, n = B * T, C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim;
  const int64_t Hkv = c.num_key_value_heads, E = c.num_local_experts, K = c.num_experts_per_tok;
  const int64_t I = c.intermediate_size, inner = H * D, G = H / Hkv;
  auto phase = [&](auto&& fn, bool barrier = true) { sh.team.Phase(fn, barrier); };
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor x, h, y, on, own, router, xe, u, w3, moe;  // thread-private
  // This thread's lightning heads, softmax KV heads (q heads kv0*G..kv1*G) and output columns.
  int64_t lh0, lh1, kv0, kv1, c0, c1;
  std::tie(lh0, lh1) = Piece(H, nt, tid);
  std::tie(kv0, kv1) = Piece(Hkv, nt, tid);
  std::tie(c0, c1) = Piece(C, nt, tid, kPackedPanel);
  phase([&] {
    x = at::empty({n, C}, f32);
    h = at::empty({n, C}, f32);
    y = at::empty({n, C}, f32);
    on = at::empty({n, inner}, f32);
    own = at::empty({n, 3 * inner}, f32);
    router = at::empty({n, E}, f32);
    xe = at::empty({n, C}, f32);  // one expert's rows at a time
    u = at::empty({n, I}, f32);
    w3 = at::empty({n, I}, f32);
    moe = at::empty({n, C}, f32);
    const float* emb = F(p.model->model->embed_tokens->weight);
    for (int64_t r = 0; r < n; ++r) std::memcpy(F(x) + r * C, emb + p.ids[r] * C, C * sizeof(float));
  });
  for (const LayerPlan& lp : p.layers) {
    const DecoderLayerImpl& layer = *lp.layer;
    // 1. input norm, this thread's heads of attention -> sh.o (and sh.gate).
    phase([&] {
      RmsNormRows(F(x), F(layer.input_layernorm->weight), static_cast<float>(layer.input_layernorm->eps), n, C, F(h));
      if (lp.lightning) {
        const int64_t nh = lh1 - lh0, ld = nh * 3 * D;
        if (nh == 0) return;
        float* qkv = F(own);
        LinearCols(F(h), C, n, lp.qkv, lh0 * 3 * D, lh1 * 3 * D, qkv - lh0 * 3 * D, ld, /*silu=*/true);
        LinearCols(F(h), C, n, lp.gate, lh0 * D, lh1 * D, F(sh.gate), inner);
        LightningCore(p, lp, qkv, 0, B, lh0, nh, F(sh.o));
      } else {
        const int64_t nkv = kv1 - kv0, nq = nkv * G;
        if (nkv == 0) return;
        at::Tensor q = own.narrow(1, 0, nq * D), k = own.narrow(1, nq * D, nkv * D);
        at::Tensor v = own.narrow(1, (nq + nkv) * D, nkv * D);  // [n, nq*D], [n, nkv*D] x2 (row stride 3*inner)
        const int64_t ld = own.stride(0);
        LinearCols(F(h), C, n, lp.q, kv0 * G * D, kv1 * G * D, F(q) - kv0 * G * D, ld);
        LinearCols(F(h), C, n, lp.k, kv0 * D, kv1 * D, F(k) - kv0 * D, ld);
        LinearCols(F(h), C, n, lp.v, kv0 * D, kv1 * D, F(v) - kv0 * D, ld);
        const at::Tensor o = SoftmaxCore(p, lp, q, k, v, 0, B, kv0, nkv);  // [B, nq, T, D]
        sh.o.view({B, T, H, D}).narrow(2, kv0 * G, nq).copy_(o.transpose(1, 2));
      }
    });
    // 2. (lightning: the norm and gate over all heads, per row) this thread's columns of the
    // output projection -> sh.a.
    phase([&] {
      const float* attn = F(sh.o);
      if (lp.lightning) {
        const LightningAttentionImpl& la = *layer.lightning;
        std::memcpy(F(on), F(sh.o), n * inner * sizeof(float));
        NormGateRows(F(on), F(sh.gate), F(la.norm->weight), static_cast<float>(la.norm->eps), n, inner);
        attn = F(on);
      }
      LinearCols(attn, inner, n, lp.lightning ? lp.out : lp.o, c0, c1, F(sh.a), C);
    });
    // 3. residual and post-norm (every row), routing, this thread's experts -> sh.ye.
    Routing route;
    phase([&] {
      Residual(layer.postnorm() ? F(h) : F(x), static_cast<float>(layer.alpha_attn()), F(sh.a),
               static_cast<float>(layer.beta_attn()), n * C, F(y));
      RmsNormRows(F(y), F(layer.post_attention_layernorm->weight),
                  static_cast<float>(layer.post_attention_layernorm->eps), n, C, F(h));
      Linear(h, lp.router, router);
      std::vector<int64_t> choice(n * K);
      std::vector<float> weight(n * K);
      RouteTokens(F(router), n, E, K, choice.data(), weight.data());
      route = GroupSlots(choice.data(), weight.data(), n, E, K);
      RunExperts(lp, route, ExpertsOf(route.count, tid, nt), F(h), C, I, F(xe), F(u), F(w3), F(sh.ye));
    });
    // 4. the weighted expert sum in slot order and the residual (every row); the next layer's
    // phase 1 is this one's end.
    phase(
        [&] {
          SumExperts(route, F(sh.ye), 0, n, C, F(moe));
          Residual(layer.postnorm() ? F(h) : F(y), static_cast<float>(layer.alpha_mlp()), F(moe),
                   static_cast<float>(layer.beta_mlp()), n * C, F(x));
        },
        false);
  }
  // Final norm (thread 0 writes the shared hidden) and this thread's columns of the head.
  phase(
      [&] {
        const RMSNormImpl& norm = *p.model->model->norm;
        RmsNormRows(F(x), F(norm.weight), static_cast<float>(norm.eps), n, C, F(h));
        if (tid == 0) std::memcpy(F(p.hidden), F(h), n * C * sizeof(float));
        if (!p.head.defined()) return;
        const int64_t V = p.head_weight.w->size(0);
        int64_t v0, v1;
        std::tie(v0, v1) = Piece(V, nt, tid, kPackedPanel);
        if (!p.last_only || T == 1) {
          LinearCols(F(h), C, n, p.head_weight, v0, v1, F(p.head), V);
        } else {
          const at::Tensor last = h.view({B, T, C}).select(1, T - 1).contiguous();  // [B, C]
          LinearCols(F(last), C, B, p.head_weight, v0, v1, F(p.head), V);
        }
      },
      false);
}

}  // namespace

bool FusedColumnSplit(const ModelConfig& config, int64_t B, int64_t T, int threads, ForwardOptions::FusedSplit split) {
  // Each thread's head columns must start on a panel (D % 16 == 0) for PackedGemm.
  const bool fits = threads > 1 && (config.head_dim % kPackedPanel == 0 || !PackedGemmAvailable());
  switch (split) {
    case ForwardOptions::FusedSplit::kAuto:
      return fits && (B * T <= kFusedColumnMaxRows || B < threads);
    case ForwardOptions::FusedSplit::kRows:
      return false;
    case ForwardOptions::FusedSplit::kColumns:
      return fits;
  }
  return false;
}

bool FusedDecodeApplies(const HybridModelImpl& m, const torch::Tensor& input_ids, const ForwardContext& ctx,
                        const ModelCache* cache, const ForwardOptions& options) {
  if (!options.fused_decode || cache == nullptr || input_ids.dim() != 2 || input_ids.size(1) < 1 ||
      input_ids.size(1) > kFusedMaxTokens ||
      !ctx.cu_seqlens.empty() || options.compute_aux_loss || !input_ids.device().is_cpu()) {
    return false;
  }
  const bool grad = torch::GradMode::is_enabled();
  FusedDecodePack& pack = *m.fused_decode_pack;
  std::lock_guard<std::mutex> lock(pack.mutex);
  if (pack.parameters.empty()) pack.parameters = m.parameters(/*recurse=*/true);
  for (const auto& p : pack.parameters) {
    if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat || !p.is_contiguous()) return false;
    if (grad && p.requires_grad()) return false;
  }
  return true;
}

ModelOutput FusedDecodeStep(HybridModelImpl& m, const torch::Tensor& input_ids, ModelCache* cache,
                            const ForwardOptions& options) {
  torch::NoGradGuard no_grad;
  const ModelConfig& c = m.config();
  const int64_t B = input_ids.size(0), T = input_ids.size(1), L = c.num_hidden_layers, C = c.hidden_size;
  LR_CHECK(T >= 1 && T <= kFusedMaxTokens && cache != nullptr && cache->batch == B &&
               static_cast<int64_t>(cache->layers.size()) == L,
           "FusedDecodeStep: needs [B, T <= ", kFusedMaxTokens, "] ids and a cache of B rows and ", L, " layers");
  const torch::Tensor ids = input_ids.contiguous();
  FusedDecodePack& pack = *m.fused_decode_pack;
  std::lock_guard<std::mutex> lock(pack.mutex);
  Packer packed(&pack, PackedGemmAvailable());
  StepPlan p;
  p.config = &c;
  p.model = &m;
  p.ids = ids.data_ptr<int64_t>();
  p.T = T;
  p.last_only = options.last_position_only;
  p.layers.resize(L);
  if (pack.layers.empty()) {
    for (int64_t l = 0; l < L; ++l) {
      const DecoderLayerImpl* layer = m.model->layers->ptr<DecoderLayerImpl>(l).get();
      pack.layers.push_back(layer);
      std::vector<const ExpertImpl*> experts;
      for (size_t e = 0; e < layer->block_sparse_moe->experts->size(); ++e) {
        experts.push_back(layer->block_sparse_moe->experts->ptr<ExpertImpl>(e).get());
      }
      pack.experts.push_back(std::move(experts));
    }
  }
  std::vector<torch::Tensor> keep;  // contiguous copies of old states, alive until the step ends
  for (int64_t l = 0; l < L; ++l) {
    LayerPlan& lp = p.layers[l];
    lp.layer = pack.layers[l];
    lp.lightning = lp.layer->attn_type() == AttnType::kLightning;
    LayerCache& lc = cache->layers[l];
    if (lp.lightning) {
      const LightningAttentionImpl& la = *lp.layer->lightning;
      lp.qkv = packed(la.qkv_proj->weight);
      lp.gate = packed(la.output_gate->weight);
      lp.out = packed(la.out_proj->weight);
    } else {
      const SoftmaxAttentionImpl& sa = *lp.layer->softmax;
      lp.q = packed(sa.q_proj->weight);
      lp.k = packed(sa.k_proj->weight);
      lp.v = packed(sa.v_proj->weight);
      lp.o = packed(sa.o_proj->weight);
    }
    const MoeImpl& moe = *lp.layer->block_sparse_moe;
    lp.router = packed(moe.gate->weight);
    const std::vector<const ExpertImpl*>& experts = pack.experts[l];
    lp.w1.reserve(experts.size());
    lp.w3.reserve(experts.size());
    lp.w2.reserve(experts.size());
    for (const ExpertImpl* expert : experts) {
      const ExpertImpl& ex = *expert;
      lp.w1.push_back(packed(ex.w1->weight));
      lp.w3.push_back(packed(ex.w3->weight));
      lp.w2.push_back(packed(ex.w2->weight));
    }
    if (lp.lightning) {
      const int64_t H = lp.layer->lightning->num_heads(), D = lp.layer->lightning->head_dim();
      const torch::Tensor& s0 = lc.lightning.state;
      lp.layer->lightning->CheckCachedState(s0, B, torch::kFloat);
      LR_CHECK(!s0.defined() || s0.device().is_cpu(), "LightningAttention: cached state must be on the CPU, got ",
               s0.defined() ? s0.device() : torch::Device(torch::kCPU));
      if (s0.defined() && s0.is_contiguous()) {
        lp.state = lp.next_state = F(s0);  // updated in place, like the KV caches
        lp.state_tensor = s0;
      } else {
        if (s0.defined()) {
          keep.push_back(s0.contiguous());
          lp.state = F(keep.back());
          lp.state_tensor = keep.back();
        }
        lc.lightning.state = torch::empty({B, H, D, D}, torch::kFloat);  // [B, H, D, D] fp32
        lp.next_state = F(lc.lightning.state);
      }
    } else {
      lp.lengths = lp.layer->softmax->ReserveCache(&lc.softmax, B, T, torch::kFloat, torch::kCPU, /*contiguous=*/true);
      lp.k_cache = lc.softmax.k;
      lp.v_cache = lc.softmax.v;
    }
  }
  p.head_weight = packed(m.head_type() == HeadType::kLanguageModel ? m.lm_head->weight : m.value_head->weight);
  LinkPrefetch(&p);
  p.hidden = torch::empty({B * T, C}, torch::kFloat);
  const int64_t head_rows = options.last_position_only ? B : B * T;
  if (!options.skip_head) {
    const int64_t V = m.head_type() == HeadType::kLanguageModel ? c.vocab_size : 1;
    p.head = torch::empty({head_rows, V}, torch::kFloat);
  }

  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (FusedColumnSplit(c, B, T, threads, options.fused_split)) {
    ColumnShared sh;
    const int64_t n = B * T, inner = c.num_attention_heads * c.head_dim;
    sh.o = torch::empty({n, inner}, torch::kFloat);
    sh.gate = torch::empty({n, inner}, torch::kFloat);
    sh.a = torch::empty({n, C}, torch::kFloat);
    sh.ye = torch::empty({n * c.num_experts_per_tok, C}, torch::kFloat);
#pragma omp parallel num_threads(threads)
    RunColumns(p, sh, B, omp_get_thread_num(), omp_get_num_threads());
    sh.team.Rethrow();
  } else if (threads > 1 && B * T >= threads * kFusedMinRowsPerThread) {
    // Whole sequences per thread (their tokens depend on each other), the experts shared out.
    RowTeam team;
    const int64_t n = B * T, K = c.num_experts_per_tok;
    team.h2 = torch::empty({n, C}, torch::kFloat);
    team.ye = torch::empty({n * K, C}, torch::kFloat);
    team.choice.resize(n * K);
    team.weight.resize(n * K);
    team.next_expert.reset(new std::atomic<int64_t>[L]);
    for (int64_t l = 0; l < L; ++l) team.next_expert[l] = 0;
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t b0, b1;
      std::tie(b0, b1) = Piece(B, nt, tid);
      RunRows(p, b0, b1, &team, tid, nt);
    }
    team.team.Rethrow();
  } else {
    RunRows(p, 0, B);
  }

  for (int64_t l = 0; l < L; ++l) {
    if (p.layers[l].lightning) continue;
    std::vector<int64_t> lengths = p.layers[l].lengths;
    for (auto& len : lengths) len += T;
    cache->layers[l].softmax.lengths = torch::tensor(lengths, torch::TensorOptions().dtype(torch::kLong));
  }
  cache->tokens += T;
  ModelOutput out;
  out.hidden = p.hidden.view({B, T, C});
  if (p.head.defined()) {
    const int64_t Th = head_rows / B;
    out.logits = m.head_type() == HeadType::kLanguageModel ? p.head.view({B, Th, c.vocab_size}) : p.head.view({B, Th});
  }
  return out;
}

}  // namespace lightrl::model
