// Lightning attention ops: see model/lightning_ops.h for the contract and the math.
//
// Implementation notes.
// - Layout. q, k, v are copied once into a head-major layout [B*H, nb, m, D] (zero-padded to
//   whole blocks), so that any run of consecutive blocks of one head is one contiguous
//   [G, m, D] batch for bmm. Outputs are copied back once.
// - Threads. Heads are independent: at::parallel_for splits the B*H heads over the intra-op
//   threads and each thread runs its heads' block algorithm single-threaded (ATen ops and
//   OpenBLAS run serially inside a parallel region). One parallel region per call instead of
//   one per small op: on a CPU the per-op thread wake-ups of [G, m, m] masks and [D, D] scan
//   steps otherwise cost more than the matmuls (measured: a 256 KB mul_ took 5-8 ms with two
//   threads on a busy 2-core machine, 0.02 ms on one).
// - Generic block coefficients. Every block b carries its own row/column decay vectors a_b, c_b
//   and its state decay bd_b (the "Plan"). For a single sequence they are λ^{i+1}, λ^{m_b-1-j},
//   λ^{m_b}, where only the last (partial) block differs. Packed documents reuse the same
//   algorithm with masked coefficients (below), so there is one forward and one backward.
// - Groups. A head's blocks are processed in groups of G blocks so its [G, m, m] score
//   temporaries stay within a core's L2 (512 KB); the state scan is a loop over blocks.
// - Packed documents (cu_seqlens). With doc(p) the document of position p (-1 for padding),
//   prev_b = doc(first position of block b, minus one) and last_b = doc(last valid position):
//     a_{b,i} = λ^{i+1}·[doc(i) = prev_b]      (rows that continue the incoming state)
//     c_{b,j} = λ^{m_b-1-j}·[doc(j) = last_b]  (only the block's last document feeds S_b)
//     bd_b    = λ^{m_b}·[last_b = prev_b]      (the state survives the block only if no
//                                               document starts inside it)
//     intra mask Dm_ij·[doc(i) = doc(j)]
//   so S_b is always the state of the document owning the block's last token, and nothing
//   crosses a boundary. This is exact, needs no padding per document, and the backward (a
//   linear function of the same coefficients) is unchanged.
#include "model/lightning_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace lightrl::model {

// ---- slopes ------------------------------------------------------------------------------

namespace {

// get_slopes' inner pow2(n): start = 2^(-(2^-(log2 n - 3))), slopes = start * start^i.
std::vector<double> SlopesPow2(int64_t n) {
  const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3.0)));
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = start * std::pow(start, static_cast<double>(i));
  return out;
}

}  // namespace

std::vector<double> AlibiSlopes(int64_t num_heads) {
  LR_CHECK(num_heads >= 1, "AlibiSlopes: num_heads must be >= 1, got ", num_heads);
  const double l2 = std::log2(static_cast<double>(num_heads));
  if (l2 == std::floor(l2)) return SlopesPow2(num_heads);
  const int64_t closest = int64_t{1} << static_cast<int64_t>(std::floor(l2));
  std::vector<double> out = SlopesPow2(closest);
  const std::vector<double> extra = AlibiSlopes(2 * closest);
  for (int64_t i = 0; i < num_heads - closest; ++i) out.push_back(extra[static_cast<size_t>(2 * i)]);
  return out;
}

double LightningLayerFactor(int64_t layer_idx, int64_t num_layers) {
  LR_CHECK(num_layers >= 1 && layer_idx >= 0 && layer_idx < num_layers,
           "LightningLayerFactor: layer_idx ", layer_idx, " out of range for num_layers ", num_layers);
  const double ratio =
      num_layers == 1 ? 0.0 : static_cast<double>(layer_idx) / static_cast<double>(num_layers - 1);
  return 1.0 - ratio + 1e-5;  // same evaluation order as M1-MOD: (1 - idx/(L-1)) + 1e-5
}

torch::Tensor LightningSlopes(int64_t num_heads, int64_t layer_idx, int64_t num_layers) {
  const std::vector<double> s = AlibiSlopes(num_heads);
  const float factor = static_cast<float>(LightningLayerFactor(layer_idx, num_layers));
  torch::Tensor out = torch::empty({num_heads}, torch::kFloat32);
  float* p = out.data_ptr<float>();
  // torch: fp32 tensor * python float multiplies in fp32.
  for (int64_t h = 0; h < num_heads; ++h) p[h] = static_cast<float>(s[static_cast<size_t>(h)]) * factor;
  return out;
}

// ---- chunked algorithm ---------------------------------------------------------------------

namespace {

using torch::Tensor;
using torch::indexing::Slice;

// Target elements of one head's [G, m, m] score temporary (512 KB in fp32: fits in L2).
constexpr int64_t kGroupScoreElems = int64_t{1} << 17;

struct Plan {
  int64_t B = 0, H = 0, T = 0, D = 0;
  int64_t blk = 0;     // block size m (<= T)
  int64_t nb = 0;      // number of blocks, ceil(T / m)
  int64_t nfull = 0;   // number of full blocks
  int64_t group = 1;   // blocks per group (of one head)
  bool multi_doc = false;
  Tensor a;      // [nb, 1, H, m, 1] row decays of the inter-block term
  Tensor c;      // [nb, 1, H, m, 1] column decays of the block's state contribution
  Tensor bd;     // [nb, 1, H, 1, 1] state decay across the block
  Tensor dmask;  // [1, H, m, m] intra-block causal decay mask λ^{i-j}[i>=j]
  Tensor docid;  // [nb, m] int64 document of each padded position (multi_doc only)
};

Plan MakePlan(int64_t B, int64_t H, int64_t T, int64_t D, int64_t block_size,
              const std::vector<int64_t>& cu_seqlens, const Tensor& slopes_w) {
  Plan p;
  p.B = B, p.H = H, p.T = T, p.D = D;
  p.blk = std::min(block_size, T);
  p.nb = (T + p.blk - 1) / p.blk;
  p.nfull = T / p.blk;
  p.group = std::clamp<int64_t>(kGroupScoreElems / std::max<int64_t>(1, p.blk * p.blk), 1, p.nb);
  const int64_t m = p.blk, nb = p.nb;

  // Document of every padded position (CPU, O(T)).
  std::vector<int64_t> doc(static_cast<size_t>(nb * m), -1);
  int64_t non_empty = 0;
  if (cu_seqlens.empty()) {
    std::fill(doc.begin(), doc.begin() + T, 0);
    non_empty = 1;
  } else {
    for (size_t d = 0; d + 1 < cu_seqlens.size(); ++d) {
      if (cu_seqlens[d + 1] > cu_seqlens[d]) ++non_empty;
      std::fill(doc.begin() + cu_seqlens[d], doc.begin() + cu_seqlens[d + 1], static_cast<int64_t>(d));
    }
  }
  p.multi_doc = non_empty > 1;

  // Per-block masks and exponents (fp64 host buffers; exact small integers).
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  Tensor amask = torch::zeros({nb, 1, m}, f64), cmask = torch::zeros({nb, 1, m}, f64);
  Tensor cexp = torch::zeros({nb, 1, m}, f64), bdmask = torch::zeros({nb, 1}, f64), bdexp = torch::zeros({nb, 1}, f64);
  double* am = amask.data_ptr<double>();
  double* cm = cmask.data_ptr<double>();
  double* ce = cexp.data_ptr<double>();
  double* bm = bdmask.data_ptr<double>();
  double* be = bdexp.data_ptr<double>();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t p0 = b * m, mb = std::min(m, T - p0);
    const int64_t prev = b == 0 ? doc[0] : doc[static_cast<size_t>(p0 - 1)];
    const int64_t last = doc[static_cast<size_t>(p0 + mb - 1)];
    for (int64_t i = 0; i < mb; ++i) {
      const int64_t di = doc[static_cast<size_t>(p0 + i)];
      am[b * m + i] = di == prev ? 1.0 : 0.0;
      cm[b * m + i] = di == last ? 1.0 : 0.0;
      ce[b * m + i] = static_cast<double>(mb - 1 - i);
    }
    bm[b] = last == prev ? 1.0 : 0.0;
    be[b] = static_cast<double>(mb);
  }
  const auto wopt = slopes_w.options();
  const Tensor s = slopes_w.view({1, H, 1});                           // [1, H, 1]
  const Tensor idx = torch::arange(m, wopt);                           // [m]
  const Tensor a_base = torch::exp(-s * (idx + 1).view({1, 1, m}));   // [1, H, m]  λ^{i+1}
  p.a = (amask.to(wopt) * a_base).view({nb, 1, H, m, 1});
  p.c = (torch::exp(-s * cexp.to(wopt)) * cmask.to(wopt)).view({nb, 1, H, m, 1});
  p.bd = (torch::exp(-slopes_w.view({1, H}) * bdexp.to(wopt)) * bdmask.to(wopt)).view({nb, 1, H, 1, 1});
  const Tensor diff = idx.view({m, 1}) - idx.view({1, m});             // i - j
  p.dmask = torch::where(diff.view({1, m, m}) >= 0, torch::exp(-s.view({H, 1, 1}) * diff.clamp_min(0).view({1, m, m})),
                         torch::zeros({}, wopt))
                .view({1, H, m, m});
  if (p.multi_doc) {
    p.docid = torch::from_blob(doc.data(), {nb, m}, torch::kInt64).clone().to(slopes_w.device());
  }
  return p;
}

// [B, H, T, D] (any strides) -> [B*H, nb, m, D] contiguous, zero-padded.
Tensor ToHeadMajor(const Plan& p, const Tensor& x) {
  Tensor out = torch::empty({p.B, p.H, p.nb * p.blk, p.D}, x.options().memory_format(torch::MemoryFormat::Contiguous));
  out.narrow(2, 0, p.T).copy_(x);
  if (p.nb * p.blk > p.T) out.narrow(2, p.T, p.nb * p.blk - p.T).zero_();
  return out.view({p.B * p.H, p.nb, p.blk, p.D});
}

// [B*H, nb, m, D] -> [B, H, T, D] view of a [B, T, H, D]-contiguous tensor (so the layer's
// transpose back to [B, T, H*D] is free).
Tensor FromHeadMajor(const Plan& p, const Tensor& y) {
  Tensor bthd = torch::empty({p.B, p.T, p.H, p.D}, y.options());
  Tensor out = bthd.permute({0, 2, 1, 3});  // [B, H, T, D]
  out.copy_(y.view({p.B, p.H, p.nb * p.blk, p.D}).narrow(2, 0, p.T));
  return out;
}

// The coefficients of head h (index into H), as views.
struct HeadCoeffs {
  Tensor a;      // [nb, m, 1]
  Tensor c;      // [nb, m, 1]
  Tensor bd;     // [nb, 1, 1]
  Tensor dmask;  // [m, m]
};

HeadCoeffs CoeffsOf(const Plan& p, int64_t h) {
  return {p.a.select(2, h).select(1, 0), p.c.select(2, h).select(1, 0), p.bd.select(2, h).select(1, 0),
          p.dmask.select(1, h).select(0, 0)};
}

// Multiplies one head's scores [G, m, m] of blocks [g0, g0+G) by the intra-block mask in place.
void ApplyIntraMask(const Plan& p, const HeadCoeffs& hc, Tensor& scores, int64_t g0, int64_t G) {
  scores.mul_(hc.dmask);
  if (p.multi_doc) {
    const Tensor d = p.docid.narrow(0, g0, G);                                        // [G, m]
    scores.mul_((d.unsqueeze(2) == d.unsqueeze(1)).to(scores.scalar_type()));          // [G, m, m]
  }
}

// Runs fn(begin, end) over ranges of the heads [0, B*H), split over the intra-op threads; each
// call runs single-threaded (nested ATen/OpenBLAS parallelism is serial in a parallel region)
// and allocates its temporaries once for its whole range (fresh large allocations are mmaps
// whose page faults cost more than the small matmuls).
template <class Fn>
void ForEachHeadRange(int64_t BH, const Fn& fn) {
  at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
    torch::NoGradGuard no_grad;  // grad mode is thread-local; nothing here is differentiated
    fn(begin, end);
  });
}

struct ForwardResult {
  Tensor out;     // [B*H, nb, m, D]
  Tensor states;  // [B*H, nb + 1, D, D] (states[:, b] = S_{b-1}, states[:, nb] = final); if kept
  Tensor final_state;  // [B, H, D, D]
};

// The chunked forward on head-major Q, K, V [B*H, nb, m, D]. s0: [B, H, D, D] or undefined.
ForwardResult ForwardBlocks(const Plan& p, const Tensor& Q, const Tensor& K, const Tensor& V, const Tensor& s0,
                            bool keep_states) {
  const int64_t BH = p.B * p.H, D = p.D, m = p.blk, GM = p.group;
  ForwardResult r;
  r.out = torch::empty_like(Q);
  Tensor finals = torch::empty({BH, D, D}, Q.options());  // [B*H, D, D]
  if (keep_states) r.states = torch::empty({BH, p.nb + 1, D, D}, Q.options());
  const Tensor s0h = s0.defined() ? s0.reshape({BH, D, D}) : Tensor();  // [B*H, D, D]
  ForEachHeadRange(BH, [&](int64_t h0, int64_t h1) {
    // Workspaces of one group, reused for every group of every head of this range.
    Tensor A_ws = torch::empty({GM, m, m}, Q.options());       // scores
    Tensor KV_ws = torch::empty({GM, D, D}, Q.options());      // block state contributions
    Tensor scaled_ws = torch::empty({GM, m, D}, Q.options());  // K ⊙ c, then Q ⊙ a
    Tensor buf_ws = torch::empty({GM + 1, D, D}, Q.options()); // scan buffer (keep_states = false)
    for (int64_t bh = h0; bh < h1; ++bh) {
      const HeadCoeffs hc = CoeffsOf(p, bh % p.H);
      const Tensor Qh = Q.select(0, bh), Kh = K.select(0, bh), Vh = V.select(0, bh);  // [nb, m, D]
      Tensor S = s0h.defined() ? s0h.select(0, bh) : Tensor();  // [D, D] state before the group
      Tensor Oh = r.out.select(0, bh);
      for (int64_t g0 = 0; g0 < p.nb; g0 += GM) {
        const int64_t G = std::min(GM, p.nb - g0);
        const Tensor Qg = Qh.narrow(0, g0, G), Kg = Kh.narrow(0, g0, G), Vg = Vh.narrow(0, g0, G);  // [G, m, D]
        Tensor scaled = scaled_ws.narrow(0, 0, G), KV = KV_ws.narrow(0, 0, G), A = A_ws.narrow(0, 0, G);
        // Block contributions to the state: KV_b = (K_b ⊙ c_b)ᵀ V_b.
        torch::mul_out(scaled, Kg, hc.c.narrow(0, g0, G));
        torch::bmm_out(KV, scaled.transpose(1, 2), Vg);
        // Scan: buf[i] = S_{g0+i-1}, buf[i+1] = bd * buf[i] + KV_i.
        Tensor buf = keep_states ? r.states.select(0, bh).narrow(0, g0, G + 1) : buf_ws.narrow(0, 0, G + 1);
        if (g0 == 0 || !keep_states) {
          if (S.defined()) {
            buf.select(0, 0).copy_(S);
          } else {
            buf.select(0, 0).zero_();
          }
        }
        for (int64_t i = 0; i < G; ++i) {
          Tensor dst = buf.select(0, i + 1);
          torch::addcmul_out(dst, KV.select(0, i), hc.bd.select(0, g0 + i), buf.select(0, i));
        }
        S = buf.select(0, G);
        // Intra-block: [(Q Kᵀ) ⊙ Dm] V; inter-block: (Q ⊙ a) S_{b-1}.
        torch::bmm_out(A, Qg, Kg.transpose(1, 2));  // [G, m, m]
        ApplyIntraMask(p, hc, A, g0, G);
        Tensor Og = Oh.narrow(0, g0, G);  // [G, m, D]
        torch::bmm_out(Og, A, Vg);
        torch::mul_out(scaled, Qg, hc.a.narrow(0, g0, G));
        Og.baddbmm_(scaled, buf.narrow(0, 0, G));
        if (!keep_states) S = S.clone();  // buf_ws is reused by the next group
      }
      finals.select(0, bh).copy_(S);
    }
  });
  r.final_state = finals.view({p.B, p.H, D, D});
  return r;
}

struct BackwardResult {
  Tensor dQ, dK, dV;  // [B*H, nb, m, D]
  Tensor dS0;         // [B, H, D, D]
};

// Chunked backward (hybrid_model.md §3.7). dO: head-major; states from ForwardBlocks;
// dS_final: [B, H, D, D] or undefined (zero).
BackwardResult BackwardBlocks(const Plan& p, const Tensor& Q, const Tensor& K, const Tensor& V, const Tensor& dO,
                              const Tensor& states, const Tensor& dS_final) {
  const int64_t BH = p.B * p.H, D = p.D, m = p.blk, GM = p.group;
  BackwardResult r;
  r.dQ = torch::empty_like(Q);
  r.dK = torch::empty_like(Q);
  r.dV = torch::empty_like(Q);
  Tensor dS0 = torch::empty({BH, D, D}, Q.options());  // [B*H, D, D]
  const Tensor dSf = dS_final.defined() ? dS_final.reshape({BH, D, D}) : Tensor();
  const int64_t ngroups = (p.nb + GM - 1) / GM;
  ForEachHeadRange(BH, [&](int64_t h0, int64_t h1) {
    Tensor A_ws = torch::empty({GM, m, m}, Q.options());
    Tensor P_ws = torch::empty({GM, m, m}, Q.options());
    Tensor Gm_ws = torch::empty({GM, D, D}, Q.options());
    Tensor scaled_ws = torch::empty({GM, m, D}, Q.options());  // Q ⊙ a, then K ⊙ c
    Tensor dbuf_ws = torch::empty({GM + 1, D, D}, Q.options());
    Tensor dS = torch::empty({D, D}, Q.options());  // gradient of the state after the current group
    for (int64_t bh = h0; bh < h1; ++bh) {
      const HeadCoeffs hc = CoeffsOf(p, bh % p.H);
      const Tensor Qh = Q.select(0, bh), Kh = K.select(0, bh), Vh = V.select(0, bh), dOh = dO.select(0, bh);
      const Tensor Sh = states.select(0, bh);  // [nb + 1, D, D]
      if (dSf.defined()) {
        dS.copy_(dSf.select(0, bh));
      } else {
        dS.zero_();
      }
      for (int64_t gi = ngroups - 1; gi >= 0; --gi) {
        const int64_t g0 = gi * GM, G = std::min(GM, p.nb - g0);
        const Tensor Qg = Qh.narrow(0, g0, G), Kg = Kh.narrow(0, g0, G), Vg = Vh.narrow(0, g0, G);  // [G, m, D]
        const Tensor dOg = dOh.narrow(0, g0, G);
        const Tensor a = hc.a.narrow(0, g0, G), c = hc.c.narrow(0, g0, G);  // [G, m, 1]
        Tensor scaled = scaled_ws.narrow(0, 0, G), Gm = Gm_ws.narrow(0, 0, G);
        Tensor A = A_ws.narrow(0, 0, G), P = P_ws.narrow(0, 0, G), dbuf = dbuf_ws.narrow(0, 0, G + 1);
        // Reverse scan: dbuf[i+1] = dS_{g0+i} (gradient of the state after block g0+i),
        // dbuf[i] = bd_{g0+i} dbuf[i+1] + (Q ⊙ a)ᵀ dO of block g0+i.
        torch::mul_out(scaled, Qg, a);
        torch::bmm_out(Gm, scaled.transpose(1, 2), dOg);  // [G, D, D]
        dbuf.select(0, G).copy_(dS);
        for (int64_t i = G - 1; i >= 0; --i) {
          Tensor dst = dbuf.select(0, i);
          torch::addcmul_out(dst, Gm.select(0, i), hc.bd.select(0, g0 + i), dbuf.select(0, i + 1));
        }
        dS.copy_(dbuf.select(0, 0));
        const Tensor dSg = dbuf.narrow(0, 1, G);  // [G, D, D]
        // Inter-block parts.
        Tensor dQg = r.dQ.select(0, bh).narrow(0, g0, G);
        Tensor dKg = r.dK.select(0, bh).narrow(0, g0, G);
        Tensor dVg = r.dV.select(0, bh).narrow(0, g0, G);
        torch::bmm_out(dQg, dOg, Sh.narrow(0, g0, G).transpose(1, 2));
        dQg.mul_(a);                                     // (dO S_{b-1}ᵀ) ⊙ a
        torch::bmm_out(dKg, Vg, dSg.transpose(1, 2));
        dKg.mul_(c);                                     // (V dS_bᵀ) ⊙ c
        torch::mul_out(scaled, Kg, c);
        torch::bmm_out(dVg, scaled, dSg);                // (K ⊙ c) dS_b
        // Intra-block parts: A = (Q Kᵀ) ⊙ Dm, P = (dO Vᵀ) ⊙ Dm.
        torch::bmm_out(A, Qg, Kg.transpose(1, 2));  // [G, m, m]
        ApplyIntraMask(p, hc, A, g0, G);
        torch::bmm_out(P, dOg, Vg.transpose(1, 2));  // [G, m, m]
        ApplyIntraMask(p, hc, P, g0, G);
        dQg.baddbmm_(P, Kg);
        dKg.baddbmm_(P.transpose(1, 2), Qg);
        dVg.baddbmm_(A.transpose(1, 2), dOg);
      }
      dS0.select(0, bh).copy_(dS);
    }
  });
  r.dS0 = dS0.view({p.B, p.H, D, D});
  return r;
}

// Final state of every packed document, [num_docs, H, D, D]. k, v: [1, H, T, D] working dtype;
// states: [H, nb + 1, D, D] (B = 1) from ForwardBlocks(keep_states = true).
Tensor DocumentFinalStates(const Plan& p, const Tensor& k, const Tensor& v, const Tensor& slopes_w,
                           const Tensor& states, const std::vector<int64_t>& cu) {
  const int64_t H = p.H, D = p.D, m = p.blk;
  const int64_t ndocs = static_cast<int64_t>(cu.size()) - 1;
  Tensor out = torch::zeros({ndocs, H, D, D}, k.options());
  for (int64_t d = 0; d < ndocs; ++d) {
    const int64_t s = cu[d], e = cu[d + 1];
    if (e == s) continue;
    const int64_t bb = (e - 1) / m, p0 = bb * m, mb = std::min(m, p.T - p0);
    if (e == p0 + mb) {  // the document owns the block's last token: S_bb
      out.select(0, d).copy_(states.select(1, bb + 1));
      continue;
    }
    const int64_t j0 = std::max(s, p0), len = e - j0;
    const Tensor w = torch::exp(-slopes_w.view({H, 1}) *
                                (static_cast<double>(e - 1) - torch::arange(j0, e, slopes_w.options())).view({1, len}));
    Tensor kv = torch::matmul((k.select(0, 0).narrow(1, j0, len) * w.unsqueeze(-1)).transpose(1, 2),
                              v.select(0, 0).narrow(1, j0, len));  // [H, D, D]
    if (s < p0) {
      kv.add_(torch::exp(-slopes_w * static_cast<double>(e - p0)).view({H, 1, 1}) * states.select(1, bb));
    }
    out.select(0, d).copy_(kv);
  }
  return out;
}

struct Validated {
  int64_t B, H, T, D;
  Tensor slopes_w;  // [H] working dtype
};

Validated Validate(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& s0,
                   const LightningOptions& o) {
  LR_CHECK(q.defined() && k.defined() && v.defined(), "LightningAttentionChunked: q, k, v must be defined");
  LR_CHECK(q.dim() == 4, "LightningAttentionChunked: q must be [B, H, T, D], got ", q.sizes());
  LR_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "LightningAttentionChunked: q, k, v shapes differ: ",
           q.sizes(), " ", k.sizes(), " ", v.sizes());
  const auto dt = q.scalar_type();
  LR_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64,
           "LightningAttentionChunked: q, k, v must be fp32 or fp64 (the state is never low precision), got ", dt);
  LR_CHECK(k.scalar_type() == dt && v.scalar_type() == dt, "LightningAttentionChunked: q, k, v dtypes differ");
  Validated r{q.size(0), q.size(1), q.size(2), q.size(3), {}};
  LR_CHECK(r.T >= 1 && r.D >= 1 && r.B >= 1 && r.H >= 1, "LightningAttentionChunked: empty input ", q.sizes());
  LR_CHECK(slopes.defined() && slopes.numel() == r.H, "LightningAttentionChunked: slopes must be [H = ", r.H,
           "], got ", slopes.defined() ? slopes.sizes() : torch::IntArrayRef{});
  LR_CHECK(o.block_size >= 1, "LightningAttentionChunked: block_size must be >= 1, got ", o.block_size);
  if (s0.defined()) {
    LR_CHECK(s0.dim() == 4 && s0.size(0) == r.B && s0.size(1) == r.H && s0.size(2) == r.D && s0.size(3) == r.D,
             "LightningAttentionChunked: initial_state must be [B, H, D, D] = [", r.B, ", ", r.H, ", ", r.D, ", ",
             r.D, "], got ", s0.sizes());
    LR_CHECK(s0.scalar_type() == dt, "LightningAttentionChunked: initial_state dtype ", s0.scalar_type(),
             " differs from q's ", dt);
  }
  if (!o.cu_seqlens.empty()) {
    const auto& cu = o.cu_seqlens;
    LR_CHECK(r.B == 1, "LightningAttentionChunked: cu_seqlens requires B == 1, got B = ", r.B);
    LR_CHECK(cu.size() >= 2 && cu.front() == 0 && cu.back() == r.T,
             "LightningAttentionChunked: cu_seqlens must start at 0 and end at T = ", r.T);
    for (size_t i = 0; i + 1 < cu.size(); ++i) {
      LR_CHECK(cu[i + 1] >= cu[i], "LightningAttentionChunked: cu_seqlens must be non-decreasing (entry ", i + 1,
               " = ", cu[i + 1], " < ", cu[i], ")");
    }
    LR_CHECK(!s0.defined(), "LightningAttentionChunked: an initial state cannot be combined with cu_seqlens");
  }
  r.slopes_w = slopes.reshape({r.H}).to(q.options().dtype(dt)).contiguous();
  return r;
}

// ---- autograd function ---------------------------------------------------------------------

class LightningFunction : public torch::autograd::Function<LightningFunction> {
 public:
  // Returns {out} or {out, final_state}.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q,
                                                const Tensor& k, const Tensor& v,
                                                const c10::optional<Tensor>& s0, const Tensor& slopes_w, int64_t block_size,
                                                const std::vector<int64_t>& cu, bool output_final_state) {
    ctx->set_materialize_grads(false);
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
    const Plan p = MakePlan(B, H, T, D, block_size, cu, slopes_w);
    const Tensor Qb = ToHeadMajor(p, q), Kb = ToHeadMajor(p, k), Vb = ToHeadMajor(p, v);
    ForwardResult f = ForwardBlocks(p, Qb, Kb, Vb, s0.value_or(Tensor()), /*keep_states=*/true);
    Tensor out = FromHeadMajor(p, f.out);
    ctx->save_for_backward({q, k, v, slopes_w, f.states});
    ctx->saved_data["block_size"] = block_size;
    ctx->saved_data["cu_seqlens"] = cu;
    ctx->saved_data["has_s0"] = s0.has_value();
    if (!output_final_state) return {out};
    if (cu.empty()) return {out, f.final_state};
    Tensor states = DocumentFinalStates(p, k, v, slopes_w, f.states, cu);
    ctx->mark_non_differentiable({states});
    return {out, states};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &slopes_w = saved[3], &states = saved[4];
    const int64_t block_size = ctx->saved_data["block_size"].toInt();
    const std::vector<int64_t> cu = ctx->saved_data["cu_seqlens"].toIntVector();
    const Tensor dO = grads[0];
    // Per-document states (cu_seqlens) are non-differentiable: their gradient is ignored.
    const Tensor dSf = (grads.size() > 1 && cu.empty()) ? grads[1] : Tensor();
    torch::autograd::variable_list result(8);
    if (!dO.defined() && !dSf.defined()) return result;
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
    const Plan p = MakePlan(B, H, T, D, block_size, cu, slopes_w);
    const Tensor Qb = ToHeadMajor(p, q), Kb = ToHeadMajor(p, k), Vb = ToHeadMajor(p, v);
    const Tensor dOb = dO.defined() ? ToHeadMajor(p, dO) : torch::zeros_like(Qb);
    BackwardResult g = BackwardBlocks(p, Qb, Kb, Vb, dOb, states, dSf);
    if (ctx->needs_input_grad(0)) result[0] = FromHeadMajor(p, g.dQ);
    if (ctx->needs_input_grad(1)) result[1] = FromHeadMajor(p, g.dK);
    if (ctx->needs_input_grad(2)) result[2] = FromHeadMajor(p, g.dV);
    if (ctx->saved_data["has_s0"].toBool() && ctx->needs_input_grad(3)) result[3] = g.dS0;
    return result;
  }
};

}  // namespace

LightningResult LightningAttentionChunked(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                          const torch::Tensor& slopes, const torch::Tensor& initial_state,
                                          const LightningOptions& options) {
  const Validated val = Validate(q, k, v, slopes, initial_state, options);
  const bool need_grad = torch::GradMode::is_enabled() &&
                         (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                          (initial_state.defined() && initial_state.requires_grad()));
  LightningResult r;
  if (need_grad) {
    // The initial state goes in as an optional: an undefined tensor cannot be a Function input.
    const c10::optional<torch::Tensor> s0 =
        initial_state.defined() ? c10::optional<torch::Tensor>(initial_state) : c10::nullopt;
    auto outs = LightningFunction::apply(q, k, v, s0, val.slopes_w, options.block_size,
                                         options.cu_seqlens, options.output_final_state);
    r.out = outs[0];
    if (options.output_final_state) r.state = outs[1];
    return r;
  }
  // Inference: the same forward, keeping per-block states only when packed documents need them.
  const Plan p = MakePlan(val.B, val.H, val.T, val.D, options.block_size, options.cu_seqlens, val.slopes_w);
  const bool per_doc = options.output_final_state && !options.cu_seqlens.empty();
  ForwardResult f = ForwardBlocks(p, ToHeadMajor(p, q), ToHeadMajor(p, k), ToHeadMajor(p, v), initial_state,
                                  /*keep_states=*/per_doc);
  r.out = FromHeadMajor(p, f.out);
  if (options.output_final_state) {
    r.state = per_doc ? DocumentFinalStates(p, k, v, val.slopes_w, f.states, options.cu_seqlens) : f.final_state;
  }
  return r;
}

// LightningDecodeStep: model/lightning_decode.cc.

double LightningForwardFlops(int64_t batch_heads, int64_t T, int64_t D, int64_t block_size) {
  const double m = static_cast<double>(std::min(block_size, T));
  const double nb = std::ceil(static_cast<double>(T) / m), d = static_cast<double>(D);
  const double per_block = 2 * m * m * d + m * m + 2 * m * m * d + m * d + 2 * m * d * d + m * d + 2 * m * d * d +
                           2 * d * d;
  return static_cast<double>(batch_heads) * nb * per_block;
}

double LightningBackwardFlops(int64_t batch_heads, int64_t T, int64_t D, int64_t block_size) {
  const double m = static_cast<double>(std::min(block_size, T));
  const double nb = std::ceil(static_cast<double>(T) / m), d = static_cast<double>(D);
  const double per_block = 4 * m * m * d + 2 * m * m + 6 * m * m * d + 8 * m * d * d + 4 * m * d + 2 * d * d;
  return static_cast<double>(batch_heads) * nb * per_block;
}

}  // namespace lightrl::model
