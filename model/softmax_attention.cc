// Softmax attention layer (hybrid_model.md §4): partial NeoX RoPE, GQA, causal attention with a
// materialised path (short inputs) and a FlashAttention-2 style blockwise path with a custom
// backward (long inputs), plus the per-row KV cache. Decode without autograd (T <= 8 new tokens
// per row) takes a plain-loop fast path: RoPE and the cache write here, the attention in
// CachedAttention (softmax_decode.cc).
//
// Blockwise layout. GQA is handled without expanding k/v: the G query heads that share a kv
// head are interleaved into the row dimension, q [B, H, T, D] -> [B*Hkv, T*G, D] with row
// r = t*G + g. A query tile is then a contiguous slice of rows, one bmm per tile computes the
// scores of all G heads against the shared key tile, and dK/dV accumulate over the G heads
// for free. The mask of a tile depends only on t, so it is [Bq, 1, Bk] broadcast over g.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "model/decode_kernels.h"
#include "model/layers.h"

namespace lightrl::model {

namespace {

using detail::RopeInto;
using detail::RopeTables;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// fp64 stays fp64 (tests); every other floating dtype computes in fp32.
torch::ScalarType ComputeDtype(torch::ScalarType t) {
  return t == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// Which keys a query may see. Query t (0-based within the call) sits at absolute position
// offset + t and may see keys j with doc_start(offset + t) <= j <= offset + t.
struct MaskSpec {
  int64_t offset = 0;
  std::vector<int64_t> doc_start;  // [Tk] first position of each position's document; empty = 0
  int64_t DocStart(int64_t p) const { return doc_start.empty() ? 0 : doc_start[p]; }
};

enum class TileKind { kEmpty, kFull, kPartial };

// Classifies the tile of queries [qs, qe) x keys [ks, ke).
TileKind ClassifyTile(const MaskSpec& m, int64_t qs, int64_t qe, int64_t ks, int64_t ke) {
  const int64_t ps = m.offset + qs, pe = m.offset + qe;  // absolute query positions [ps, pe)
  if (ks > pe - 1) return TileKind::kEmpty;              // every key is in every query's future
  // doc_start is non-decreasing, so the last query has the latest document start.
  if (ke - 1 <= ps && m.DocStart(pe - 1) <= ks) return TileKind::kFull;
  if (m.doc_start.empty()) return TileKind::kPartial;
  for (int64_t p = ps; p < pe; ++p) {
    if (std::max(ks, m.DocStart(p)) <= std::min(ke - 1, p)) return TileKind::kPartial;
  }
  return TileKind::kEmpty;  // every query's document starts after the tile
}

// true = masked, [Bq, 1, Bk] (broadcast over the G interleaved heads of a row block).
torch::Tensor TileMask(const MaskSpec& m, int64_t qs, int64_t qe, int64_t ks, int64_t ke,
                       const torch::Device& device) {
  const auto opts = torch::TensorOptions().dtype(torch::kLong);
  torch::Tensor p = torch::arange(m.offset + qs, m.offset + qe, opts).unsqueeze(1);  // [Bq, 1]
  torch::Tensor j = torch::arange(ks, ke, opts).unsqueeze(0);                        // [1, Bk]
  torch::Tensor masked = j > p;
  if (!m.doc_start.empty()) {
    std::vector<int64_t> starts(qe - qs);
    for (int64_t t = qs; t < qe; ++t) starts[t - qs] = m.DocStart(m.offset + t);
    torch::Tensor lo = torch::tensor(starts, opts).unsqueeze(1);  // [Bq, 1]
    masked = masked | (j < lo);
  }
  return masked.unsqueeze(1).to(device);
}

// FlashAttention-2 style attention over the grouped layout.
//   q3: [N, Tq*G, D] (unscaled), k3, v3: [N, Tk, D]; N = B*Hkv, row r = t*G + g.
// Forward saves (q*scale, k, v, out, lse); backward recomputes every tile's probabilities.
class BlockwiseAttentionFn : public torch::autograd::Function<BlockwiseAttentionFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q3, const torch::Tensor& k3,
                               const torch::Tensor& v3, double scale, int64_t group, int64_t q_tile,
                               int64_t k_tile, int64_t offset, std::vector<int64_t> doc_start) {
    const MaskSpec mask{offset, doc_start};
    const torch::Tensor qs = (q3 * scale).contiguous();
    const torch::Tensor k = k3.contiguous(), v = v3.contiguous();
    const int64_t N = qs.size(0), Tq = qs.size(1) / group, Tk = k.size(1), D = qs.size(2);
    torch::Tensor out = torch::empty({N, Tq * group, D}, qs.options());
    torch::Tensor lse = torch::empty({N, Tq * group}, qs.options());

    for (int64_t q0 = 0; q0 < Tq; q0 += q_tile) {
      const int64_t q1 = std::min(q0 + q_tile, Tq), rows = (q1 - q0) * group;
      const torch::Tensor qi = qs.narrow(1, q0 * group, rows);  // [N, rows, D]
      torch::Tensor acc, m, l;                                  // [N, rows, D], [N, rows], [N, rows]
      for (int64_t k0 = 0; k0 < Tk; k0 += k_tile) {
        const int64_t k1 = std::min(k0 + k_tile, Tk);
        const TileKind kind = ClassifyTile(mask, q0, q1, k0, k1);
        if (kind == TileKind::kEmpty) continue;
        const torch::Tensor kj = k.narrow(1, k0, k1 - k0), vj = v.narrow(1, k0, k1 - k0);
        torch::Tensor s = torch::bmm(qi, kj.transpose(1, 2));  // [N, rows, bk]
        if (kind == TileKind::kPartial) {
          s.view({N, q1 - q0, group, k1 - k0}).masked_fill_(TileMask(mask, q0, q1, k0, k1, s.device()), kNegInf);
        }
        torch::Tensor tile_max = std::get<0>(s.max(-1));  // [N, rows]
        // A row may have seen no allowed key yet (a new document starting inside the tile):
        // its running max is -inf, and exp(-inf - -inf) would be NaN, so subtract 0 instead.
        torch::Tensor m_new = m.defined() ? torch::maximum(m, tile_max) : tile_max;
        torch::Tensor m_safe = m_new.masked_fill(m_new == kNegInf, 0.0);
        s.sub_(m_safe.unsqueeze(-1)).exp_();  // probabilities up to the row's normaliser
        if (!m.defined()) {
          l = s.sum(-1);
          acc = torch::bmm(s, vj);
        } else {
          torch::Tensor alpha = (m - m_safe).exp_();  // rescales the previous tiles' sums
          l.mul_(alpha).add_(s.sum(-1));
          acc.mul_(alpha.unsqueeze(-1)).baddbmm_(s, vj);
        }
        m = m_new;
      }
      // Every query sees at least itself, so l > 0 and m is finite for every row.
      out.narrow(1, q0 * group, rows).copy_(acc / l.unsqueeze(-1));
      lse.narrow(1, q0 * group, rows).copy_(m + l.log());
    }

    ctx->save_for_backward({qs, k, v, out, lse});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["group"] = group;
    ctx->saved_data["q_tile"] = q_tile;
    ctx->saved_data["k_tile"] = k_tile;
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["doc_start"] = std::move(doc_start);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &qs = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t group = ctx->saved_data["group"].toInt();
    const int64_t q_tile = ctx->saved_data["q_tile"].toInt();
    const int64_t k_tile = ctx->saved_data["k_tile"].toInt();
    const MaskSpec mask{ctx->saved_data["offset"].toInt(), ctx->saved_data["doc_start"].toIntVector()};
    const torch::Tensor dout = grads[0].to(qs.scalar_type()).contiguous();  // [N, Tq*G, D]
    const int64_t Tq = qs.size(1) / group, Tk = k.size(1);

    const torch::Tensor delta = (dout * out).sum(-1);  // [N, Tq*G]: rowsum(dO * O)
    torch::Tensor dq = torch::zeros_like(qs);          // w.r.t. the scaled q until the end
    torch::Tensor dk = torch::zeros_like(k), dv = torch::zeros_like(v);

    // Outer loop over key tiles keeps dK_j / dV_j in a local accumulator; dQ tiles are
    // accumulated in place.
    for (int64_t k0 = 0; k0 < Tk; k0 += k_tile) {
      const int64_t k1 = std::min(k0 + k_tile, Tk), bk = k1 - k0;
      const torch::Tensor kj = k.narrow(1, k0, bk), vj = v.narrow(1, k0, bk);
      torch::Tensor dkj = dk.narrow(1, k0, bk), dvj = dv.narrow(1, k0, bk);
      for (int64_t q0 = 0; q0 < Tq; q0 += q_tile) {
        const int64_t q1 = std::min(q0 + q_tile, Tq), rows = (q1 - q0) * group;
        const TileKind kind = ClassifyTile(mask, q0, q1, k0, k1);
        if (kind == TileKind::kEmpty) continue;
        const torch::Tensor qi = qs.narrow(1, q0 * group, rows);
        const torch::Tensor doi = dout.narrow(1, q0 * group, rows);
        const torch::Tensor lse_i = lse.narrow(1, q0 * group, rows).unsqueeze(-1);
        // p = exp(q k^T - lse): the forward's normalised probabilities, recomputed.
        torch::Tensor p = torch::baddbmm(-lse_i.expand({qs.size(0), rows, bk}), qi, kj.transpose(1, 2));
        if (kind == TileKind::kPartial) {
          p.view({qs.size(0), q1 - q0, group, bk}).masked_fill_(TileMask(mask, q0, q1, k0, k1, p.device()), kNegInf);
        }
        p.exp_();
        dvj.baddbmm_(p.transpose(1, 2), doi);                // dV += P^T dO
        torch::Tensor ds = torch::bmm(doi, vj.transpose(1, 2));  // dP = dO V^T
        ds.sub_(delta.narrow(1, q0 * group, rows).unsqueeze(-1)).mul_(p);  // dS = P (dP - delta)
        dq.narrow(1, q0 * group, rows).baddbmm_(ds, kj);      // d(scaled q) += dS K
        dkj.baddbmm_(ds.transpose(1, 2), qi);                  // dK += dS^T (q*scale)
      }
    }
    dq.mul_(scale);
    return {dq, dk, dv, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

// Plain attention over [B, H, Tq, D] x [B, Hkv, Tk, D] with an explicit mask.
// masked: [B or 1, Tq, Tk] bool, true = not attended. Standard autograd.
torch::Tensor MaterializedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    double scale, const torch::Tensor& masked) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), Tk = k.size(2), G = H / Hkv;
  // [B, H, Tq, D] -> [B, Hkv, G*Tq, D]: heads h = kv*G + g share kv head `kv`.
  torch::Tensor qg = (q * scale).reshape({B, Hkv, G * Tq, D});
  torch::Tensor s = torch::matmul(qg, k.transpose(-1, -2)).view({B, Hkv, G, Tq, Tk});
  s = s.masked_fill(masked.view({masked.size(0), 1, 1, Tq, Tk}), kNegInf);
  torch::Tensor p = torch::softmax(s, -1).view({B, Hkv, G * Tq, Tk});
  return torch::matmul(p, v).view({B, H, Tq, D});
}

// masked[b, t, j] = !(lo[b, t] <= j <= qpos[b, t]); qpos, lo: [B', Tq] int64.
torch::Tensor BuildMask(const torch::Tensor& qpos, const torch::Tensor& lo, int64_t Tk) {
  torch::Tensor j = torch::arange(Tk, torch::TensorOptions().dtype(torch::kLong)).view({1, 1, Tk});
  torch::Tensor masked = j > qpos.unsqueeze(-1);
  if (lo.defined()) masked = masked | (j < lo.unsqueeze(-1));
  return masked;
}

std::vector<int64_t> DocStarts(const std::vector<int64_t>& cu_seqlens, int64_t T, const char* who) {
  LR_CHECK(cu_seqlens.size() >= 2 && cu_seqlens.front() == 0 && cu_seqlens.back() == T, who,
           ": cu_seqlens must start at 0 and end at T = ", T, " (got ", cu_seqlens.size(), " entries)");
  std::vector<int64_t> starts(T);
  for (size_t d = 0; d + 1 < cu_seqlens.size(); ++d) {
    LR_CHECK(cu_seqlens[d] <= cu_seqlens[d + 1], who, ": cu_seqlens must be non-decreasing, entry ", d + 1,
             " is ", cu_seqlens[d + 1], " < ", cu_seqlens[d]);
    for (int64_t t = cu_seqlens[d]; t < cu_seqlens[d + 1]; ++t) starts[t] = cu_seqlens[d];
  }
  return starts;
}


// ---- decode fast path ----------------------------------------------------------------------
// Used by SoftmaxAttentionImpl::forward with a cache when no gradient is needed and each row
// brings at most kMaxFastTokens tokens (decode). Plain loops: RoPE, the cache write and
// CachedAttention (softmax_decode.cc) touch each element once, with no libtorch op per step
// beyond the projections.
constexpr int64_t kMaxFastTokens = 8;

}  // namespace

// ---- RoPE --------------------------------------------------------------------------------------

torch::Tensor RopePositions(int64_t B, int64_t T, const std::vector<int64_t>& cu_seqlens,
                            const std::vector<int64_t>& offsets) {
  std::vector<int64_t> pos(B * T);
  if (!cu_seqlens.empty()) {
    LR_CHECK(B == 1, "RopePositions: packed documents (cu_seqlens) require B == 1, got B = ", B);
    const std::vector<int64_t> starts = DocStarts(cu_seqlens, T, "RopePositions");
    for (int64_t t = 0; t < T; ++t) pos[t] = t - starts[t];
  } else {
    LR_CHECK(offsets.empty() || static_cast<int64_t>(offsets.size()) == B, "RopePositions: offsets has ",
             offsets.size(), " entries, expected B = ", B);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) pos[b * T + t] = (offsets.empty() ? 0 : offsets[b]) + t;
    }
  }
  return torch::tensor(pos, torch::TensorOptions().dtype(torch::kLong)).view({B, T});
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& positions, int64_t rotary_dim,
                        double theta) {
  LR_CHECK(x.dim() == 4, "ApplyRope: x must be [B, Hx, T, D], got ", x.sizes());
  const int64_t T = x.size(2), D = x.size(3);
  LR_CHECK(rotary_dim >= 0 && rotary_dim % 2 == 0 && rotary_dim <= D,
           "ApplyRope: rotary_dim must be even and in [0, head_dim = ", D, "], got ", rotary_dim);
  LR_CHECK(theta > 0, "ApplyRope: rope_theta must be > 0, got ", theta);
  torch::Tensor pos = positions.dim() == 1 ? positions.unsqueeze(0) : positions;
  LR_CHECK(pos.dim() == 2 && pos.size(1) == T && (pos.size(0) == 1 || pos.size(0) == x.size(0)),
           "ApplyRope: positions must be [B, T] or [T] with T = ", T, ", got ", positions.sizes());
  if (rotary_dim == 0) return x;
  const int64_t half = rotary_dim / 2;
  const auto cdt = ComputeDtype(x.scalar_type());

  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -static_cast<double>(2 * i) / rotary_dim);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor angle = pos.to(torch::kCPU, torch::kDouble).unsqueeze(-1) * torch::tensor(inv_freq, f64);
  torch::Tensor cos = angle.cos().to(x.device(), cdt).unsqueeze(1);  // [B', 1, T, half]
  torch::Tensor sin = angle.sin().to(x.device(), cdt).unsqueeze(1);

  const torch::Tensor xc = x.to(cdt);
  const torch::Tensor x1 = xc.narrow(-1, 0, half), x2 = xc.narrow(-1, half, half);
  std::vector<torch::Tensor> parts = {x1 * cos - x2 * sin, x2 * cos + x1 * sin};
  if (rotary_dim < D) parts.push_back(xc.narrow(-1, rotary_dim, D - rotary_dim));
  return torch::cat(parts, -1).to(x.scalar_type());
}

// ---- attention core ----------------------------------------------------------------------------

torch::Tensor CausalSoftmaxAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     double scale, int64_t block_size, const std::vector<int64_t>& cu_seqlens,
                                     AttentionPath path) {
  LR_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
           "CausalSoftmaxAttention: q [B, H, Tq, D], k/v [B, Hkv, Tk, D] expected, got ", q.sizes(), ", ",
           k.sizes(), ", ", v.sizes());
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), Tk = k.size(2);
  LR_CHECK(k.sizes() == v.sizes() && k.size(0) == B && k.size(3) == D,
           "CausalSoftmaxAttention: k and v must both be [B = ", B, ", Hkv, Tk, D = ", D, "], got ", k.sizes(),
           " and ", v.sizes());
  LR_CHECK(Hkv > 0 && H % Hkv == 0, "CausalSoftmaxAttention: query heads ", H,
           " must be a multiple of kv heads ", Hkv);
  LR_CHECK(Tq > 0 && Tk >= Tq, "CausalSoftmaxAttention: need 0 < Tq <= Tk, got Tq = ", Tq, ", Tk = ", Tk);
  LR_CHECK(block_size > 0, "CausalSoftmaxAttention: block_size must be > 0, got ", block_size);
  const int64_t G = H / Hkv;

  MaskSpec mask;
  mask.offset = Tk - Tq;
  if (!cu_seqlens.empty()) {
    LR_CHECK(B == 1 && Tq == Tk, "CausalSoftmaxAttention: packed documents (cu_seqlens) require B == 1 and "
             "Tq == Tk, got B = ", B, ", Tq = ", Tq, ", Tk = ", Tk);
    mask.doc_start = DocStarts(cu_seqlens, Tk, "CausalSoftmaxAttention");
  }
  if (path == AttentionPath::kAuto) {
    path = (Tq == 1 || Tq * Tk <= block_size * block_size) ? AttentionPath::kMaterialized
                                                           : AttentionPath::kBlockwise;
  }

  const auto cdt = ComputeDtype(q.scalar_type());
  const torch::Tensor qc = q.to(cdt), kc = k.to(cdt), vc = v.to(cdt);
  torch::Tensor out;
  if (path == AttentionPath::kMaterialized) {
    const auto i64 = torch::TensorOptions().dtype(torch::kLong);
    torch::Tensor qpos = torch::arange(mask.offset, Tk, i64).unsqueeze(0);  // [1, Tq]
    torch::Tensor lo;
    if (!mask.doc_start.empty()) lo = torch::tensor(mask.doc_start, i64).unsqueeze(0);
    out = MaterializedAttention(qc.contiguous(), kc, vc, scale, BuildMask(qpos, lo, Tk).to(q.device()));
  } else {
    // [B, H, Tq, D] -> [B, Hkv, Tq, G, D] -> [B*Hkv, Tq*G, D] (row = t*G + g).
    torch::Tensor q3 = qc.reshape({B, Hkv, G, Tq, D}).permute({0, 1, 3, 2, 4}).reshape({B * Hkv, Tq * G, D});
    torch::Tensor k3 = kc.reshape({B * Hkv, Tk, D}), v3 = vc.reshape({B * Hkv, Tk, D});
    const int64_t q_tile = std::max<int64_t>(1, block_size / G);
    torch::Tensor o3 = BlockwiseAttentionFn::apply(q3, k3, v3, scale, G, q_tile, block_size, mask.offset,
                                                   mask.doc_start);
    out = o3.view({B, Hkv, Tq, G, D}).permute({0, 1, 3, 2, 4}).reshape({B, H, Tq, D});
  }
  return out.to(q.scalar_type());
}

// ---- layer ---------------------------------------------------------------------------------------

SoftmaxAttentionImpl::SoftmaxAttentionImpl(const ModelConfig& config, int64_t layer_idx)
    : num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      rotary_dim_(config.rotary_dim),
      block_size_(config.softmax_block_size),
      rope_theta_(config.rope_theta) {
  LR_CHECK(num_heads_ > 0 && num_kv_heads_ > 0 && num_heads_ % num_kv_heads_ == 0,
           "SoftmaxAttention (layer ", layer_idx, "): num_attention_heads = ", num_heads_,
           " must be a positive multiple of num_key_value_heads = ", num_kv_heads_);
  LR_CHECK(head_dim_ > 0 && rotary_dim_ >= 0 && rotary_dim_ % 2 == 0 && rotary_dim_ <= head_dim_,
           "SoftmaxAttention (layer ", layer_idx, "): rotary_dim = ", rotary_dim_,
           " must be even and <= head_dim = ", head_dim_);
  LR_CHECK(block_size_ > 0, "SoftmaxAttention: softmax_block_size must be > 0, got ", block_size_);
  const int64_t C = config.hidden_size;
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  q_proj = register_module("q_proj", linear(C, num_heads_ * head_dim_));
  k_proj = register_module("k_proj", linear(C, num_kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", linear(C, num_kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", linear(num_heads_ * head_dim_, C));
}

std::vector<int64_t> SoftmaxAttentionImpl::ReserveCache(SoftmaxLayerCache* cache, int64_t B, int64_t T,
                                                        torch::ScalarType dtype, const torch::Device& device,
                                                        bool contiguous) const {
  const int64_t Hkv = num_kv_heads_, D = head_dim_;
  std::vector<int64_t> lengths(B, 0);
  if (cache->lengths.defined()) {
    LR_CHECK(cache->lengths.dim() == 1 && cache->lengths.size(0) == B, "SoftmaxAttention: cache lengths must be [B = ",
             B, "], got ", cache->lengths.sizes());
    torch::Tensor len = cache->lengths.to(torch::kCPU, torch::kLong).contiguous();
    for (int64_t b = 0; b < B; ++b) lengths[b] = len.data_ptr<int64_t>()[b];
  }
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) {
    LR_CHECK(lengths[b] >= 0, "SoftmaxAttention: negative cache length ", lengths[b], " in row ", b);
    max_len = std::max(max_len, lengths[b]);
  }
  const int64_t need = max_len + T;
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  if (!cache->k.defined()) {
    LR_CHECK(max_len == 0, "SoftmaxAttention: cache lengths are non-zero but the cache holds no keys");
    cache->k = torch::zeros({B, Hkv, need, D}, options);
    cache->v = torch::zeros({B, Hkv, need, D}, options);
    return lengths;
  }
  LR_CHECK(cache->k.dim() == 4 && cache->k.size(0) == B && cache->k.size(1) == Hkv && cache->k.size(3) == D &&
               cache->v.sizes() == cache->k.sizes(),
           "SoftmaxAttention: cache k/v must be [B = ", B, ", Hkv = ", Hkv, ", capacity, D = ", D, "], got ",
           cache->k.sizes(), " and ", cache->v.sizes());
  LR_CHECK(cache->k.scalar_type() == dtype && cache->v.scalar_type() == dtype, "SoftmaxAttention: cache dtype ",
           cache->k.scalar_type(), " does not match the compute dtype ", dtype);
  LR_CHECK(cache->k.size(2) >= max_len, "SoftmaxAttention: cache capacity ", cache->k.size(2),
           " is below the longest row length ", max_len);
  const int64_t cap = cache->k.size(2);
  if (cap < need) {
    const int64_t new_cap = std::max(need, 2 * cap);
    torch::Tensor nk = torch::zeros({B, Hkv, new_cap, D}, options);
    torch::Tensor nv = torch::zeros({B, Hkv, new_cap, D}, options);
    nk.narrow(2, 0, cap).copy_(cache->k);
    nv.narrow(2, 0, cap).copy_(cache->v);
    cache->k = nk;
    cache->v = nv;
  }
  if (contiguous && (cache->k.stride(3) != 1 || cache->v.strides() != cache->k.strides())) {
    cache->k = cache->k.contiguous();  // once: caches built by this layer already are
    cache->v = cache->v.contiguous();
  }
  return lengths;
}

torch::Tensor SoftmaxAttentionImpl::forward(const torch::Tensor& x, const ForwardContext& ctx,
                                            SoftmaxLayerCache* cache) {
  LR_CHECK(x.dim() == 3, "SoftmaxAttention: x must be [B, T, C], got ", x.sizes());
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = num_heads_, Hkv = num_kv_heads_, D = head_dim_;
  const auto cdt = ComputeDtype(x.scalar_type());
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  torch::Tensor q = q_proj->forward(x).view({B, T, H, D}).transpose(1, 2).to(cdt);  // [B, H, T, D]
  torch::Tensor k = k_proj->forward(x).view({B, T, Hkv, D}).transpose(1, 2).to(cdt);
  torch::Tensor v = v_proj->forward(x).view({B, T, Hkv, D}).transpose(1, 2).to(cdt).contiguous();

  torch::Tensor o;  // [B, H, T, D]
  if (cache == nullptr) {
    torch::Tensor pos = RopePositions(B, T, ctx.cu_seqlens);
    q = ApplyRope(q, pos, rotary_dim_, rope_theta_).contiguous();
    k = ApplyRope(k, pos, rotary_dim_, rope_theta_).contiguous();
    o = CausalSoftmaxAttention(q, k, v, scale, block_size_, ctx.cu_seqlens);
  } else {
    LR_CHECK(ctx.cu_seqlens.empty(), "SoftmaxAttention: packed documents (cu_seqlens) cannot use a KV cache");
    const bool track = torch::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
    // Decode fast path (see kMaxFastTokens): RoPE, cache write and attention as plain loops.
    const bool fast = !track && T <= kMaxFastTokens && x.device().is_cpu();
    // Row lengths before this call; capacity for T more.
    const std::vector<int64_t> lengths = ReserveCache(cache, B, T, cdt, k.device(), /*contiguous=*/fast);
    int64_t max_len = 0;
    for (int64_t l : lengths) max_len = std::max(max_len, l);
    const int64_t need = max_len + T;

    torch::Tensor pos;  // [B, T] int64, general path only
    if (!fast) {
      pos = RopePositions(B, T, {}, lengths);
      q = ApplyRope(q, pos, rotary_dim_, rope_theta_).contiguous();
      k = ApplyRope(k, pos, rotary_dim_, rope_theta_).contiguous();
    }

    if (fast) {
      torch::NoGradGuard no_grad;
      const int64_t half = rotary_dim_ / 2;
      torch::Tensor q_rot = torch::empty({B, H, T, D}, q.options());  // [B, H, T, D] cdt, post-RoPE
      AT_DISPATCH_FLOATING_TYPES(cdt, "SoftmaxAttentionDecode", [&] {
        std::vector<scalar_t> cos, sin;
        RopeTables<scalar_t>(lengths, T, rotary_dim_, rope_theta_, &cos, &sin);
        const torch::Tensor& ck = cache->k;
        const torch::Tensor& cv = cache->v;
        RopeInto<scalar_t>(q, cos, sin, half, rotary_dim_, q_rot.data_ptr<scalar_t>(), H * T * D, T * D, D, {});
        RopeInto<scalar_t>(k, cos, sin, half, rotary_dim_, ck.data_ptr<scalar_t>(), ck.stride(0), ck.stride(1),
                           ck.stride(2), lengths);
        RopeInto<scalar_t>(v, cos, sin, 0, 0, cv.data_ptr<scalar_t>(), cv.stride(0), cv.stride(1), cv.stride(2),
                           lengths);
      });
      o = CachedAttention(q_rot, cache->k, cache->v, lengths, scale);  // [B, H, T, D]
    } else {
      // Write the new keys/values at [lengths[b], lengths[b] + T).
      std::vector<int64_t> slots(B * T);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < T; ++t) slots[b * T + t] = lengths[b] + t;
      }
      torch::Tensor index = torch::tensor(slots, torch::TensorOptions().dtype(torch::kLong))
                                .to(k.device())
                                .view({B, 1, T, 1})
                                .expand({B, Hkv, T, D});
      torch::Tensor k_all, v_all;  // [B, Hkv, need, D]
      if (track) {
        // Out-of-place scatter keeps the graph to this call's k/v; the cache stores a detached copy.
        k_all = cache->k.narrow(2, 0, need).scatter(2, index, k);
        v_all = cache->v.narrow(2, 0, need).scatter(2, index, v);
        torch::NoGradGuard no_grad;
        cache->k.narrow(2, 0, need).copy_(k_all.detach());
        cache->v.narrow(2, 0, need).copy_(v_all.detach());
      } else {
        torch::NoGradGuard no_grad;
        cache->k.scatter_(2, index, k);
        cache->v.scatter_(2, index, v);
        k_all = cache->k.narrow(2, 0, need);
        v_all = cache->v.narrow(2, 0, need);
      }

      const bool uniform = std::all_of(lengths.begin(), lengths.end(), [&](int64_t l) { return l == max_len; });
      if (uniform) {
        o = CausalSoftmaxAttention(q, k_all, v_all, scale, block_size_);
      } else if (T == 1 || T * need <= block_size_ * block_size_) {
        // Each row attends its own prefix: query t of row b sees keys [0, lengths[b] + t].
        torch::Tensor qpos = pos;  // [B, T] = lengths[b] + t
        o = MaterializedAttention(q, k_all, v_all, scale, BuildMask(qpos, {}, need).to(q.device()));
      } else {
        // Long prefill continuing rows of different lengths: one blockwise call per row.
        std::vector<torch::Tensor> rows;
        for (int64_t b = 0; b < B; ++b) {
          const int64_t len = lengths[b] + T;
          rows.push_back(CausalSoftmaxAttention(q.narrow(0, b, 1), k_all.narrow(0, b, 1).narrow(2, 0, len),
                                                v_all.narrow(0, b, 1).narrow(2, 0, len), scale, block_size_));
        }
        o = torch::cat(rows, 0);
      }
    }
    std::vector<int64_t> new_lengths(lengths);
    for (auto& l : new_lengths) l += T;
    cache->lengths = torch::tensor(new_lengths, torch::TensorOptions().dtype(torch::kLong));
  }
  o = o.transpose(1, 2).reshape({B, T, H * D}).to(x.scalar_type());
  return o_proj->forward(o);
}

}  // namespace lightrl::model
