// DAPO's sample/group filters and length shaping (DAPO paper §3, Eq. 13; algorithms.md §2).
// Plain C++ (no libtorch): these act on per-sample rewards and lengths before tensors exist.
//
//   * Dynamic sampling: drop prompt groups whose rewards are all equal (accuracy 0 or 1, or
//     any zero-variance group); they carry no gradient under group-relative advantages. The
//     CALLER refills the batch with new prompts (trainer/trainer.cc DynamicSampling) and bounds
//     the number of generation rounds (algorithm.dynamic_sampling.max_gen_batches).
//   * Overlong filtering: truncated samples are masked from the loss.
//   * Soft overlong punishment (Eq. 13), added to the correctness reward:
//       0                                  if L <= L_max - L_cache
//       ((L_max - L_cache) - L) / L_cache  if L_max - L_cache < L <= L_max
//       -1                                 if L > L_max
//     times penalty_factor (verl's overlong_buffer.penalty_factor).
#pragma once

#include <cstdint>
#include <vector>

namespace lightrl::algorithms {

struct GroupFilterResult {
  std::vector<int64_t> kept_groups;     // group ids kept, in first-appearance order
  std::vector<int64_t> dropped_groups;  // group ids dropped, in first-appearance order
  std::vector<bool> keep_sample;        // [n]: the sample's group is kept
};

// rewards [n], groups [n] (any ids). A group is kept iff it has >= min_group_size samples and
// its rewards are not all equal (exact comparison: rewards are verifier outputs).
// REQUIRES: rewards.size() == groups.size() and finite rewards (LR_CHECK, naming the index).
GroupFilterResult FilterZeroVarianceGroups(const std::vector<double>& rewards, const std::vector<int64_t>& groups,
                                           int64_t min_group_size = 2);

// DAPO Eq. 13 times penalty_factor. REQUIRES: length >= 0, max_len >= 1,
// 0 <= buffer_len <= max_len (buffer_len 0 = off: returns 0 for length <= max_len, else -factor).
double SoftOverlongPenalty(int64_t length, int64_t max_len, int64_t buffer_len, double penalty_factor = 1.0);

// Overlong filtering: true when the sample must be masked from the loss (filter enabled and the
// sample was truncated at the length limit).
inline bool OverlongFiltered(bool filter_enabled, bool truncated) { return filter_enabled && truncated; }

}  // namespace lightrl::algorithms
