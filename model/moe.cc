// MoE block (hybrid_model.md §5): fp32 softmax router, top-k with renormalisation, SwiGLU
// experts with dispatch by expert, and the Mixtral/M1 load-balancing loss.
//
// Dispatch: the N*k (token, choice) pairs are sorted by expert id, so each expert's tokens form
// one contiguous run; every expert with a non-empty run does one gather + one SwiGLU over all
// its tokens, and a single index_add scatters the weighted outputs back to their tokens.
#include <string>

#include "core/check.h"
#include "model/layers.h"

namespace lightrl::model {

namespace {

// fp64 stays fp64 (tests); the router otherwise always runs in fp32 (pitfall §10.7).
torch::ScalarType RouterDtype(torch::ScalarType t) {
  return t == torch::kDouble ? torch::kDouble : torch::kFloat;
}

}  // namespace

ExpertImpl::ExpertImpl(int64_t hidden_size, int64_t intermediate_size) {
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  w1 = register_module("w1", linear(hidden_size, intermediate_size));
  w3 = register_module("w3", linear(hidden_size, intermediate_size));
  w2 = register_module("w2", linear(intermediate_size, hidden_size));
}

torch::Tensor ExpertImpl::forward(const torch::Tensor& x) {
  return w2->forward(torch::silu(w1->forward(x)) * w3->forward(x));
}

MoeImpl::MoeImpl(const ModelConfig& config)
    : num_experts_(config.num_local_experts), top_k_(config.num_experts_per_tok) {
  LR_CHECK(num_experts_ > 0 && top_k_ >= 1 && top_k_ <= num_experts_, "Moe: num_experts_per_tok = ", top_k_,
           " must be in [1, num_local_experts = ", num_experts_, "]");
  LR_CHECK(config.hidden_size > 0 && config.intermediate_size > 0,
           "Moe: hidden_size and intermediate_size must be > 0, got ", config.hidden_size, " and ",
           config.intermediate_size);
  gate = register_module(
      "gate", torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size, num_experts_).bias(false)));
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < num_experts_; ++e) {
    experts->push_back(Expert(config.hidden_size, config.intermediate_size));
  }
}

MoeOutput MoeImpl::forward(const torch::Tensor& x) {
  LR_CHECK(x.dim() == 3, "Moe: x must be [B, T, C], got ", x.sizes());
  const int64_t C = x.size(2), N = x.size(0) * x.size(1), E = num_experts_, K = top_k_;
  LR_CHECK(C == gate->weight.size(1), "Moe: x has hidden size ", C, ", the router expects ", gate->weight.size(1));
  const torch::Tensor h = x.reshape({N, C});  // [N, C]
  if (N == 0) {
    return MoeOutput{torch::zeros_like(x), torch::zeros({0, E}, x.options().dtype(RouterDtype(x.scalar_type())))};
  }

  // Router in fp32 (weight and input), softmax, top-k, renormalise.
  const auto rdt = RouterDtype(x.scalar_type());
  torch::Tensor logits = torch::matmul(h.to(rdt), gate->weight.to(rdt).t());  // [N, E]
  torch::Tensor probs = torch::softmax(logits, -1);
  auto [top_w, top_idx] = torch::topk(probs, K, -1);           // [N, K], [N, K]
  top_w = (top_w / top_w.sum(-1, /*keepdim=*/true)).to(x.scalar_type());

  // Group the N*K (token, choice) pairs by expert.
  torch::Tensor flat_expert = top_idx.reshape({-1});                          // [N*K]
  torch::Tensor order = std::get<1>(torch::sort(flat_expert, /*stable=*/c10::optional<bool>(true), 0));  // [N*K]
  torch::Tensor token_of = torch::div(order, K, "floor");                     // [N*K] token ids
  torch::Tensor weight_of = top_w.reshape({-1}).index_select(0, order);       // [N*K]
  torch::Tensor counts = torch::bincount(flat_expert, {}, E).to(torch::kCPU);  // [E]
  const int64_t* count = counts.data_ptr<int64_t>();

  std::vector<torch::Tensor> outs;
  int64_t start = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = count[e];
    if (n == 0) continue;
    torch::Tensor tokens = token_of.narrow(0, start, n);
    torch::Tensor ye = experts->ptr<ExpertImpl>(e)->forward(h.index_select(0, tokens));  // [n, C]
    outs.push_back(ye * weight_of.narrow(0, start, n).unsqueeze(1));
    start += n;
  }
  torch::Tensor out = torch::zeros({N, C}, h.options()).index_add(0, token_of, torch::cat(outs, 0));
  return MoeOutput{out.view(x.sizes()), logits};
}

torch::Tensor LoadBalancingLoss(const torch::Tensor& router_logits, int64_t top_k, const torch::Tensor& token_mask) {
  LR_CHECK(router_logits.dim() == 2 && router_logits.size(1) > 0,
           "LoadBalancingLoss: router_logits must be [N, E], got ", router_logits.sizes());
  const int64_t N = router_logits.size(0), E = router_logits.size(1);
  LR_CHECK(top_k >= 1 && top_k <= E, "LoadBalancingLoss: top_k = ", top_k, " must be in [1, E = ", E, "]");
  const auto dt = RouterDtype(router_logits.scalar_type());
  torch::Tensor probs = torch::softmax(router_logits.to(dt), -1);            // [N, E]
  torch::Tensor sel = std::get<1>(torch::topk(probs, top_k, -1));             // [N, k]
  torch::Tensor chosen = torch::one_hot(sel, E).to(dt);                       // [N, k, E]
  if (token_mask.defined()) {
    LR_CHECK(token_mask.dim() == 1 && token_mask.size(0) == N,
             "LoadBalancingLoss: token_mask must be [N = ", N, "], got ", token_mask.sizes());
    torch::Tensor m = token_mask.to(probs.device(), dt);  // [N] 0/1
    torch::Tensor count = m.sum();
    // An all-masked batch contributes nothing (instead of 0/0).
    torch::Tensor denom = count.clamp_min(1.0);
    torch::Tensor f = (chosen * m.view({N, 1, 1})).sum(0) / denom;  // [k, E]
    torch::Tensor pbar = (probs * m.view({N, 1})).sum(0) / denom;  // [E]
    return (f * pbar.unsqueeze(0)).sum() * static_cast<double>(E);
  }
  LR_CHECK(N > 0, "LoadBalancingLoss: no tokens (router_logits is [0, E])");
  torch::Tensor f = chosen.mean(0);    // [k, E]
  torch::Tensor pbar = probs.mean(0);  // [E]
  return (f * pbar.unsqueeze(0)).sum() * static_cast<double>(E);
}

}  // namespace lightrl::model
