// Loss aggregation: turns a per-token loss [B, T] into the scalar a micro-batch contributes to
// the mini-batch loss. Kept apart from the losses (as verl's agg_loss) so that any loss can be
// combined with any normaliser (algorithms.md §1.4).
//
// Every mode divides by a GLOBAL normaliser supplied by the caller (counts over the whole
// mini-batch: every gradient-accumulation micro-batch on every data-parallel rank, i.e. after
// an all-reduce). Therefore the contributions of micro-batches and ranks simply SUM to the
// mini-batch loss, and splitting a batch over k ranks gives the single-rank gradient exactly
// (up to summation order) when gradients are summed across ranks.
//
//   token_mean_global        sum_i sum_t l_it / N_tok                 (M1 Eq. 4, DAPO token-level)
//   seq_mean_token_mean      sum_i (sum_t l_it / |o_i|) / N_seq       (GRPO original, slime default)
//   seq_mean_token_sum       sum_i sum_t l_it / N_seq
//   seq_mean_token_sum_norm  sum_i sum_t l_it / (N_seq * C)           (Dr.GRPO; verl seq-mean-token-sum-norm;
//                                                                      C = norm_constant, e.g. max length)
// N_tok = response tokens, N_seq = samples in the global mini-batch.
#pragma once

#include <torch/torch.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace lightrl::algorithms {

enum class LossAggregation {
  kTokenMeanGlobal,
  kSeqMeanTokenMean,
  kSeqMeanTokenSum,
  kSeqMeanTokenSumNorm,
};

struct AggregationConfig {
  LossAggregation mode = LossAggregation::kTokenMeanGlobal;
  double norm_constant = 0;  // seq_mean_token_sum_norm only (> 0 there)
};

// "token_mean_global", ...
const char* LossAggregationName(LossAggregation mode);
// Accepts the names above and `constant_norm` (algorithms.md §7's alias of
// seq_mean_token_sum_norm). Unknown: InvalidArgument naming `key_path` and the valid names.
StatusOr<LossAggregation> ParseLossAggregation(std::string_view name, const std::string& key_path);
std::vector<std::string> LossAggregationNames();

// Global normaliser counts of the mini-batch (all micro-batches, all ranks).
struct GlobalCounts {
  double tokens = 0;   // response tokens (N_tok)
  double samples = 0;  // samples with >= 1 response token (N_seq)
};

// per_token_loss [B, T] (any float dtype; masked-out entries are ignored), mask [B, T] bool.
// Returns a 0-d tensor (differentiable w.r.t. per_token_loss). For the seq_* modes, |o_i| is
// mask[i].sum() and rows with no response token contribute 0.
// REQUIRES: counts.tokens > 0 for token_mean_global, counts.samples > 0 for seq_* modes, and
// norm_constant > 0 for seq_mean_token_sum_norm (LR_CHECK).
torch::Tensor Aggregate(const torch::Tensor& per_token_loss, const torch::Tensor& mask, const AggregationConfig& config,
                        const GlobalCounts& counts);

}  // namespace lightrl::algorithms
