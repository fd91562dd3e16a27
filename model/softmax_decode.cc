// CachedAttention (model/layers.h): the softmax layer's decode kernel over a KV cache, written as
// plain loops instead of libtorch ops. Not used for training (no autograd).
//
// Why plain loops. At decode each row has a handful of queries (T * G rows per kv head) and a
// long cache, so the work is two GEMV-like passes that are bound by memory. The libtorch version
// (matmul, mask, masked_fill, softmax, matmul) costs about 10 ops of fixed overhead and
// materialises the scores and the mask. Here each cache element is read once, no mask exists
// (each query row simply stops at its own last key), and the work is spread over the threads.
//
// Split-K ("flash decoding"). The keys of a row are cut into chunks of kKeyChunk at fixed
// positions (0, kKeyChunk, 2 kKeyChunk, ...). A task is one (row b, kv head, chunk). It computes,
// for each of the R = G * T query rows that share the kv head, the chunk's running max m, sum
// l = sum exp(s - m) and unnormalised output acc = sum exp(s - m) v. A second pass merges the
// chunks of each query row in chunk order: M = max m_c, out = sum e^(m_c - M) acc_c /
// sum e^(m_c - M) l_c. The chunk boundaries depend on nothing but the key positions and the
// merge order is fixed, so a row's result is bitwise independent of the thread count and of the
// other rows of the batch. Threads are used only above kParallelKeyRows of work.
//
// Vector code. The kernel is a template compiled twice on x86-64 with GCC/Clang: for the
// baseline ISA, and with target("avx2,fma") plus fixed head dims (32, 64, 128), chosen at run
// time with __builtin_cpu_supports. The fp32 exponential is a Cephes-style polynomial (rel. error
// ~1e-7, inputs <= 0 only) that vectorises; fp64 (tests) uses std::exp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/check.h"
#include "model/decode_kernels.h"
#include "model/layers.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define LIGHTRL_DECODE_AVX2 1
#else
#define LIGHTRL_DECODE_AVX2 0
#endif

namespace lightrl::model {

namespace {

// Keys per split-K task. Fixed (never derived from the thread count): see the file comment.
constexpr int64_t kKeyChunk = 256;
// Key x query-row pairs (summed over rows and kv heads) below which one thread does the work.
constexpr int64_t kParallelKeyRows = 65536;

// Everything a task needs; pointers into the caller's tensors.
template <typename S>
struct DecodeArgs {
  const S* q;             // [B, H, T, D] contiguous
  const S* k;             // cache, key j of (b, h) at k + b * sb + h * sh + j * sj, unit stride in D
  const S* v;             // same strides as k
  int64_t sb, sh, sj;     // cache strides (elements)
  const int64_t* prefix;  // [B] keys before this call's T tokens
  int64_t B, H, Hkv, G, T, D, R, nchunk;
  S scale;
  S* partial;             // [B, Hkv, nchunk, R, D + 2]: acc[D], m, l
};

using detail::ExpNonPositive;  // fp32; the fp64 overload (tests) is std::exp
using detail::ExpReduced;
LIGHTRL_ALWAYS_INLINE double ExpNonPositive(double x) { return std::exp(x); }

// a . b over D elements (kD > 0: compile-time D). Eight independent partial sums so the
// compiler can vectorise without reassociating; the final order is fixed.
template <typename S, int64_t kD>
LIGHTRL_ALWAYS_INLINE S Dot(const S* a, const S* b, int64_t D) {
  if constexpr (kD > 0 && kD % 8 == 0) {
    S acc[8] = {};
    for (int64_t d = 0; d < kD; d += 8) {
      for (int i = 0; i < 8; ++i) acc[i] += a[d + i] * b[d + i];
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  } else {
    S s = 0;
    for (int64_t d = 0; d < D; ++d) s += a[d] * b[d];
    return s;
  }
}

// One (b, kv head, chunk) task. scores: scratch [kKeyChunk].
// Query row r = g * T + t (the memory order of q's heads h*G + g and tokens t) sees keys
// [0, prefix + t]; in this chunk that is [j0, j0 + n). Rows are processed one at a time with the
// query and the output accumulator in registers; the chunk's K and V (kKeyChunk * D values) stay
// in L1 across the R rows, so memory reads each cache element once.
template <typename S, int64_t kD>
LIGHTRL_ALWAYS_INLINE void ChunkTask(const DecodeArgs<S>& a, int64_t task, S* __restrict scores) {
  constexpr int64_t kAcc = kD > 0 ? kD : 1;
  const int64_t D = kD > 0 ? kD : a.D;
  const int64_t R = a.R, T = a.T, sj = a.sj;
  const int64_t c = task % a.nchunk, bh = task / a.nchunk, b = bh / a.Hkv, h = bh % a.Hkv;
  S* part = a.partial + task * R * (D + 2);  // [R, D + 2]: acc, m, l
  const int64_t total = a.prefix[b] + T;     // keys of row b, this call's tokens included
  const int64_t j0 = c * kKeyChunk, j1 = std::min(j0 + kKeyChunk, total);
  const S* __restrict kb = a.k + b * a.sb + h * a.sh + j0 * sj;
  const S* __restrict vb = a.v + b * a.sb + h * a.sh + j0 * sj;
  const S* qb = a.q + (b * a.H + h * a.G) * T * D;  // R consecutive [D] rows
  for (int64_t r = 0; r < R; ++r) {
    S* __restrict out = part + r * (D + 2);
    const int64_t n = std::max<int64_t>(0, std::min(j1, a.prefix[b] + r % T + 1) - j0);
    if (n == 0) {
      for (int64_t d = 0; d < D; ++d) out[d] = 0;
      out[D] = -std::numeric_limits<S>::infinity();
      out[D + 1] = 0;
      continue;
    }
    const S* __restrict qr = qb + r * D;
    S m = -std::numeric_limits<S>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      const S sc = Dot<S, kD>(qr, kb + j * sj, D) * a.scale;
      scores[j] = sc;
      m = sc > m ? sc : m;
    }
    S l8[8] = {};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      for (int i = 0; i < 8; ++i) {
        const S p = ExpNonPositive(scores[j + i] - m);
        scores[j + i] = p;
        l8[i] += p;
      }
    }
    for (; j < n; ++j) {
      const S p = ExpNonPositive(scores[j] - m);
      scores[j] = p;
      l8[0] += p;
    }
    if constexpr (kD > 0) {
      S acc[kAcc] = {};
      for (int64_t jj = 0; jj < n; ++jj) {
        const S w = scores[jj];
        const S* __restrict vj = vb + jj * sj;
        for (int64_t d = 0; d < kD; ++d) acc[d] += w * vj[d];
      }
      for (int64_t d = 0; d < kD; ++d) out[d] = acc[d];
    } else {
      for (int64_t d = 0; d < D; ++d) out[d] = 0;
      for (int64_t jj = 0; jj < n; ++jj) {
        const S w = scores[jj];
        const S* __restrict vj = vb + jj * sj;
        for (int64_t d = 0; d < D; ++d) out[d] += w * vj[d];
      }
    }
    out[D] = m;
    out[D + 1] = ((l8[0] + l8[4]) + (l8[1] + l8[5])) + ((l8[2] + l8[6]) + (l8[3] + l8[7]));
  }
}

#if defined(__GNUC__) || defined(__clang__)
#define LIGHTRL_DECODE_VEC 1
// fp32 x 8 GCC/Clang vector extension (one AVX register; two SSE registers on the baseline ISA).
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));
typedef float V8u __attribute__((vector_size(32), aligned(4)));  // unaligned loads/stores

LIGHTRL_ALWAYS_INLINE V8 Load8(const float* p) { return *reinterpret_cast<const V8u*>(p); }
LIGHTRL_ALWAYS_INLINE void Store8(float* p, V8 v) { *reinterpret_cast<V8u*>(p) = v; }

// ExpNonPositive on 8 lanes (same steps as the scalar version).
LIGHTRL_ALWAYS_INLINE V8 Exp8(V8 x) {
  const V8 lo = V8{} - 87.0f;
  const V8i below = x < lo;  // -1 where x < -87
  x = reinterpret_cast<V8>((reinterpret_cast<V8i>(x) & ~below) | (reinterpret_cast<V8i>(lo) & below));
  V8 n;
  const V8 p = ExpReduced(x, &n);
  const V8i bits = (__builtin_convertvector(n, V8i) + 127) << 23;
  return p * reinterpret_cast<V8>(bits);
}

// Sum of the 8 lanes of each of a[0..8) -> lane i holds the sum of a[i] (fixed order).
LIGHTRL_ALWAYS_INLINE V8 TransposeSum8(const V8* a) {
  V8 s2[4], s4[2];
  for (int i = 0; i < 4; ++i) {  // pairwise: lanes (0+1, 2+3 | of a[2i], a[2i+1]) per 128-bit half
    const V8 x = a[2 * i], y = a[2 * i + 1];
    s2[i] = __builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14) + __builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15);
  }
  for (int i = 0; i < 2; ++i) {
    const V8 x = s2[2 * i], y = s2[2 * i + 1];
    s4[i] = __builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14) + __builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15);
  }
  // s4[0] = [a0 a1 a2 a3 | a0 a1 a2 a3] (low-half and high-half partial sums), s4[1] the same for a4..a7.
  return __builtin_shufflevector(s4[0], s4[1], 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(s4[0], s4[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

// ChunkTask for fp32 and kD % 8 == 0 with explicit 8-lane vectors: the scores of 8 keys at a
// time (one transposed reduction per 8 keys instead of one horizontal sum per key), the
// exponential on 8 lanes, the weighted sum of V with the output row in registers.
template <int64_t kD>
LIGHTRL_ALWAYS_INLINE void ChunkTaskVec(const DecodeArgs<float>& a, int64_t task, float* __restrict scores) {
  static_assert(kD % 8 == 0 && kD > 0, "ChunkTaskVec needs a head dim multiple of 8");
  constexpr int64_t kV = kD / 8;
  const int64_t R = a.R, T = a.T, sj = a.sj;
  const int64_t c = task % a.nchunk, bh = task / a.nchunk, b = bh / a.Hkv, h = bh % a.Hkv;
  float* part = a.partial + task * R * (kD + 2);
  const int64_t total = a.prefix[b] + T;
  const int64_t j0 = c * kKeyChunk, j1 = std::min(j0 + kKeyChunk, total);
  const float* kb = a.k + b * a.sb + h * a.sh + j0 * sj;
  const float* vb = a.v + b * a.sb + h * a.sh + j0 * sj;
  const float* qb = a.q + (b * a.H + h * a.G) * T * kD;
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < R; ++r) {
    float* out = part + r * (kD + 2);
    const int64_t n = std::max<int64_t>(0, std::min(j1, a.prefix[b] + r % T + 1) - j0);
    if (n == 0) {
      for (int64_t d = 0; d < kD; ++d) out[d] = 0;
      out[kD] = -inf;
      out[kD + 1] = 0;
      continue;
    }
    V8 q[kV];
    for (int64_t i = 0; i < kV; ++i) q[i] = Load8(qb + r * kD + 8 * i) * a.scale;
    // Scores, 8 keys at a time; the last n % 8 keys one by one (never reading past key n).
    V8 mv = V8{} - inf;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      V8 prod[8];
      for (int u = 0; u < 8; ++u) {
        const float* kj = kb + (j + u) * sj;
        V8 acc = q[0] * Load8(kj);
        for (int64_t i = 1; i < kV; ++i) acc += q[i] * Load8(kj + 8 * i);
        prod[u] = acc;
      }
      const V8 sc = TransposeSum8(prod);
      Store8(scores + j, sc);
      const V8i gt = sc > mv;
      mv = reinterpret_cast<V8>((reinterpret_cast<V8i>(sc) & gt) | (reinterpret_cast<V8i>(mv) & ~gt));
    }
    float m = -inf;
    for (int i = 0; i < 8; ++i) m = mv[i] > m ? mv[i] : m;
    for (; j < n; ++j) {
      const float* kj = kb + j * sj;
      V8 acc = q[0] * Load8(kj);
      for (int64_t i = 1; i < kV; ++i) acc += q[i] * Load8(kj + 8 * i);
      float sc = 0;
      for (int i = 0; i < 8; ++i) sc += acc[i];
      scores[j] = sc;
      m = sc > m ? sc : m;
    }
    // p = exp(s - m), l = sum p.
    V8 lv = V8{};
    j = 0;
    for (; j + 8 <= n; j += 8) {
      const V8 p = Exp8(Load8(scores + j) - m);
      Store8(scores + j, p);
      lv += p;
    }
    float l = ((lv[0] + lv[4]) + (lv[1] + lv[5])) + ((lv[2] + lv[6]) + (lv[3] + lv[7]));
    for (; j < n; ++j) {
      const float p = ExpNonPositive(scores[j] - m);
      scores[j] = p;
      l += p;
    }
    // out = sum_j p_j v_j.
    V8 acc[kV] = {};
    for (int64_t jj = 0; jj < n; ++jj) {
      const float* vj = vb + jj * sj;
      const float w = scores[jj];
      for (int64_t i = 0; i < kV; ++i) acc[i] += w * Load8(vj + 8 * i);
    }
    for (int64_t i = 0; i < kV; ++i) Store8(out + 8 * i, acc[i]);
    out[kD] = m;
    out[kD + 1] = l;
  }
}
#else
#define LIGHTRL_DECODE_VEC 0
#endif

template <typename S, int64_t kD>
LIGHTRL_ALWAYS_INLINE void RunTasksBody(const DecodeArgs<S>& a, int64_t begin, int64_t end) {
  std::vector<S> scores(kKeyChunk);
  for (int64_t task = begin; task < end; ++task) {
#if LIGHTRL_DECODE_VEC
    if constexpr (std::is_same_v<S, float> && kD > 0 && kD % 8 == 0) {
      ChunkTaskVec<kD>(a, task, scores.data());
      continue;
    }
#endif
    ChunkTask<S, kD>(a, task, scores.data());
  }
}

template <typename S, int64_t kD>
void RunTasks(const DecodeArgs<S>& a, int64_t begin, int64_t end) {
  RunTasksBody<S, kD>(a, begin, end);
}

#if LIGHTRL_DECODE_AVX2
template <int64_t kD>
__attribute__((target("avx2,fma"))) void RunTasksAvx2(const DecodeArgs<float>& a, int64_t begin, int64_t end) {
  RunTasksBody<float, kD>(a, begin, end);
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename S>
using TaskFn = void (*)(const DecodeArgs<S>&, int64_t, int64_t);

template <typename S>
TaskFn<S> PickKernel(int64_t D) {
  if constexpr (std::is_same_v<S, float>) {
#if LIGHTRL_DECODE_AVX2
    if (HasAvx2Fma()) {
      if (D == 32) return &RunTasksAvx2<32>;
      if (D == 64) return &RunTasksAvx2<64>;
      if (D == 128) return &RunTasksAvx2<128>;
      return &RunTasksAvx2<0>;
    }
#endif
    if (D == 32) return &RunTasks<float, 32>;
    if (D == 64) return &RunTasks<float, 64>;
    if (D == 128) return &RunTasks<float, 128>;
  }
  return &RunTasks<S, 0>;
}

// Merges the chunk partials of each query row into out ([B, T, H, D] contiguous).
template <typename S>
void MergeChunks(const DecodeArgs<S>& a, S* out) {
  const int64_t D = a.D, R = a.R, T = a.T;
  for (int64_t bh = 0; bh < a.B * a.Hkv; ++bh) {
    const int64_t b = bh / a.Hkv, h = bh % a.Hkv;
    const int64_t nc = std::min(a.nchunk, (a.prefix[b] + T + kKeyChunk - 1) / kKeyChunk);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t g = r / T, t = r % T;
      S* o = out + ((b * T + t) * a.H + h * a.G + g) * D;
      auto part = [&](int64_t c) { return a.partial + ((bh * a.nchunk + c) * R + r) * (D + 2); };
      S M = -std::numeric_limits<S>::infinity();
      for (int64_t c = 0; c < nc; ++c) M = std::max(M, part(c)[D]);
      // Every query row sees at least its own key, so M is finite and l > 0.
      S l = 0;
      for (int64_t d = 0; d < D; ++d) o[d] = 0;
      for (int64_t c = 0; c < nc; ++c) {
        const S* p = part(c);
        if (p[D + 1] == 0) continue;  // no valid key in this chunk (m = -inf)
        const S w = nc == 1 ? S(1) : static_cast<S>(std::exp(p[D] - M));
        for (int64_t d = 0; d < D; ++d) o[d] += w * p[d];
        l += w * p[D + 1];
      }
      const S inv = S(1) / l;
      for (int64_t d = 0; d < D; ++d) o[d] *= inv;
    }
  }
}

template <typename S>
void CachedAttentionImpl(DecodeArgs<S> a, S* out) {
  std::vector<S> partial(a.B * a.Hkv * a.nchunk * a.R * (a.D + 2));
  a.partial = partial.data();
  const TaskFn<S> run = PickKernel<S>(a.D);
  const int64_t tasks = a.B * a.Hkv * a.nchunk;
  // Threads only for long work (~1-2 ns per key and query row on one core): a parallel region
  // costs microseconds to start and, on a loaded machine, can wait a scheduler slice for its
  // second thread, so short decode steps run on the calling thread.
  int64_t key_rows = 0;
  for (int64_t b = 0; b < a.B; ++b) key_rows += (a.prefix[b] + a.T) * a.Hkv * a.R;
  if (key_rows < kParallelKeyRows) {
    run(a, 0, tasks);
  } else {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { run(a, begin, end); });
  }
  MergeChunks(a, out);
}

}  // namespace

torch::Tensor CachedAttention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                              const std::vector<int64_t>& prefix, double scale) {
  LR_CHECK(q.dim() == 4 && k_cache.dim() == 4 && v_cache.dim() == 4,
           "CachedAttention: q [B, H, T, D], k/v caches [B, Hkv, capacity, D] expected, got ", q.sizes(), ", ",
           k_cache.sizes(), ", ", v_cache.sizes());
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = k_cache.size(1), cap = k_cache.size(2);
  LR_CHECK(k_cache.sizes() == v_cache.sizes() && k_cache.size(0) == B && k_cache.size(3) == D,
           "CachedAttention: k and v caches must both be [B = ", B, ", Hkv, capacity, D = ", D, "], got ",
           k_cache.sizes(), " and ", v_cache.sizes());
  LR_CHECK(Hkv > 0 && H % Hkv == 0, "CachedAttention: query heads ", H, " must be a multiple of kv heads ", Hkv);
  LR_CHECK(T > 0, "CachedAttention: no query tokens (T = 0)");
  LR_CHECK(static_cast<int64_t>(prefix.size()) == B, "CachedAttention: prefix has ", prefix.size(),
           " entries, expected B = ", B);
  const auto dt = q.scalar_type();
  LR_CHECK((dt == torch::kFloat || dt == torch::kDouble) && k_cache.scalar_type() == dt &&
               v_cache.scalar_type() == dt,
           "CachedAttention: q and the caches must share one dtype, fp32 or fp64; got ", dt, ", ",
           k_cache.scalar_type(), ", ", v_cache.scalar_type());
  LR_CHECK(q.device().is_cpu() && k_cache.device().is_cpu() && v_cache.device().is_cpu(),
           "CachedAttention: CPU tensors only");
  LR_CHECK(!(torch::GradMode::is_enabled() && (q.requires_grad() || k_cache.requires_grad() ||
                                               v_cache.requires_grad())),
           "CachedAttention: not differentiable; call it under torch::NoGradGuard or on tensors without grad");
  for (int64_t b = 0; b < B; ++b) {
    LR_CHECK(prefix[b] >= 0 && prefix[b] + T <= cap, "CachedAttention: row ", b, " has prefix ", prefix[b],
             " + T = ", T, " keys, above the cache capacity ", cap);
  }
  // One layout for both caches, unit stride along D (the layer's caches always are).
  torch::Tensor kc = k_cache, vc = v_cache;
  if (kc.stride(3) != 1 || vc.strides() != kc.strides()) {
    kc = kc.contiguous();
    vc = vc.contiguous();
  }
  const torch::Tensor qc = q.contiguous();                    // [B, H, T, D]
  torch::Tensor out = torch::empty({B, T, H, D}, q.options());  // [B, T, H, D]
  int64_t max_keys = 0;
  for (int64_t b = 0; b < B; ++b) max_keys = std::max(max_keys, prefix[b] + T);
  const int64_t nchunk = (max_keys + kKeyChunk - 1) / kKeyChunk;
  AT_DISPATCH_FLOATING_TYPES(dt, "CachedAttention", [&] {
    DecodeArgs<scalar_t> a{qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
                           kc.stride(0), kc.stride(1), kc.stride(2), prefix.data(),
                           B, H, Hkv, H / Hkv, T, D, (H / Hkv) * T, nchunk,
                           static_cast<scalar_t>(scale), nullptr};
    CachedAttentionImpl<scalar_t>(a, out.data_ptr<scalar_t>());
  });
  return out.transpose(1, 2);  // [B, H, T, D] view
}

}  // namespace lightrl::model
