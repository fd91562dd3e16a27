// Independent fp64 references for lightning attention; see lightning_reference.h.
#include "tests/model/reference/lightning_reference.h"

#include <cmath>
#include <stdexcept>

namespace lightrl::model::reference {

namespace {

torch::Tensor F64(const torch::Tensor& t) { return t.to(torch::kFloat64); }

// Document index of each of T positions ([T] int64); all zeros without cu_seqlens.
torch::Tensor DocIds(int64_t T, const std::vector<int64_t>& cu) {
  torch::Tensor ids = torch::zeros({T}, torch::kInt64);
  for (size_t d = 0; d + 1 < cu.size(); ++d) {
    if (cu[d + 1] > cu[d]) ids.narrow(0, cu[d], cu[d + 1] - cu[d]).fill_(static_cast<int64_t>(d));
  }
  return ids;
}

}  // namespace

LightningRef ParallelLightning(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& slopes, const torch::Tensor& s0,
                               const std::vector<int64_t>& cu_seqlens) {
  const torch::Tensor Q = F64(q), K = F64(k), V = F64(v);
  const int64_t B = Q.size(0), H = Q.size(1), T = Q.size(2);
  const torch::Tensor s = F64(slopes).reshape({1, H, 1, 1});
  const torch::Tensor t = torch::arange(T, torch::kFloat64);
  const torch::Tensor dist = t.view({T, 1}) - t.view({1, T});  // t - j
  torch::Tensor allowed = dist >= 0;
  if (!cu_seqlens.empty()) {
    const torch::Tensor ids = DocIds(T, cu_seqlens);
    allowed = allowed & (ids.view({T, 1}) == ids.view({1, T}));
  }
  // Decay matrix M [1, H, T, T]: λ^{t-j} on allowed pairs, 0 elsewhere.
  const torch::Tensor M = torch::exp(-s * dist.clamp_min(0).view({1, 1, T, T})) * allowed.to(torch::kFloat64);
  LightningRef r;
  r.out = torch::matmul(torch::matmul(Q, K.transpose(2, 3)) * M, V);
  if (s0.defined()) {
    const torch::Tensor qdecay = torch::exp(-s * (t + 1).view({1, 1, T, 1}));  // λ^{t+1}
    r.out = r.out + qdecay * torch::matmul(Q, F64(s0));
  }
  if (cu_seqlens.empty()) {
    const torch::Tensor w = torch::exp(-s * (static_cast<double>(T - 1) - t).view({1, 1, T, 1}));  // λ^{T-1-j}
    r.state = torch::matmul((K * w).transpose(2, 3), V);
    if (s0.defined()) r.state = r.state + torch::exp(-s * static_cast<double>(T)) * F64(s0);
  } else {
    if (B != 1 || s0.defined()) throw std::invalid_argument("ParallelLightning: cu_seqlens needs B == 1, no s0");
    std::vector<torch::Tensor> states;
    for (size_t d = 0; d + 1 < cu_seqlens.size(); ++d) {
      const int64_t a = cu_seqlens[d], e = cu_seqlens[d + 1];
      const torch::Tensor j = torch::arange(a, e, torch::kFloat64);
      const torch::Tensor w = torch::exp(-s.view({H, 1, 1}) * (static_cast<double>(e - 1) - j).view({1, e - a, 1}));
      states.push_back(torch::matmul((K[0].narrow(1, a, e - a) * w).transpose(1, 2), V[0].narrow(1, a, e - a)));
    }
    r.state = torch::stack(states, 0);
  }
  return r;
}

LightningRef RecurrentLightning(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& slopes, const torch::Tensor& s0) {
  torch::NoGradGuard no_grad;
  const torch::Tensor Q = F64(q).contiguous(), K = F64(k).contiguous(), V = F64(v).contiguous();
  const torch::Tensor s = F64(slopes).contiguous();
  const int64_t B = Q.size(0), H = Q.size(1), T = Q.size(2), D = Q.size(3);
  torch::Tensor out = torch::zeros({B, H, T, D}, torch::kFloat64);
  torch::Tensor state = s0.defined() ? F64(s0).contiguous().clone() : torch::zeros({B, H, D, D}, torch::kFloat64);
  const double* qp = Q.data_ptr<double>();
  const double* kp = K.data_ptr<double>();
  const double* vp = V.data_ptr<double>();
  double* op = out.data_ptr<double>();
  double* sp = state.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const double lambda = std::exp(-s.data_ptr<double>()[h]);
      double* S = sp + (b * H + h) * D * D;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = ((b * H + h) * T + t) * D;
        for (int64_t i = 0; i < D; ++i) {
          for (int64_t j = 0; j < D; ++j) S[i * D + j] = lambda * S[i * D + j] + kp[row + i] * vp[row + j];
        }
        for (int64_t j = 0; j < D; ++j) {
          double acc = 0;
          for (int64_t i = 0; i < D; ++i) acc += qp[row + i] * S[i * D + j];
          op[row + j] = acc;
        }
      }
    }
  }
  return {out, state};
}

torch::Tensor ReferenceLightningLayer(const torch::Tensor& x, const torch::Tensor& w_qkv, const torch::Tensor& w_gate,
                                      const torch::Tensor& norm_w, const torch::Tensor& w_out,
                                      const torch::Tensor& slopes, int64_t head_dim, double eps,
                                      const std::vector<int64_t>& cu_seqlens) {
  const torch::Tensor X = F64(x), Wqkv = F64(w_qkv);
  const int64_t H = slopes.numel(), D = head_dim;
  auto silu = [](const torch::Tensor& z) { return z / (1 + torch::exp(-z)); };
  std::vector<torch::Tensor> qs, ks, vs;
  for (int64_t h = 0; h < H; ++h) {
    qs.push_back(silu(torch::matmul(X, Wqkv.narrow(0, 3 * D * h, D).t())));          // [B, T, D]
    ks.push_back(silu(torch::matmul(X, Wqkv.narrow(0, 3 * D * h + D, D).t())));
    vs.push_back(silu(torch::matmul(X, Wqkv.narrow(0, 3 * D * h + 2 * D, D).t())));
  }
  const torch::Tensor attn =
      ParallelLightning(torch::stack(qs, 1), torch::stack(ks, 1), torch::stack(vs, 1), slopes, {}, cu_seqlens).out;
  std::vector<torch::Tensor> heads;
  for (int64_t h = 0; h < H; ++h) heads.push_back(attn.select(1, h));  // [B, T, D]
  torch::Tensor o = torch::cat(heads, -1);                              // [B, T, H*D]
  o = o / torch::sqrt((o * o).mean(-1, true) + eps) * F64(norm_w);
  const torch::Tensor gate = 1 / (1 + torch::exp(-torch::matmul(X, F64(w_gate).t())));
  return torch::matmul(o * gate, F64(w_out).t());
}

}  // namespace lightrl::model::reference
