#include "algorithms/filters.h"

#include <cmath>
#include <map>

#include "core/check.h"

namespace lightrl::algorithms {

GroupFilterResult FilterZeroVarianceGroups(const std::vector<double>& rewards, const std::vector<int64_t>& groups,
                                           int64_t min_group_size) {
  LR_CHECK(rewards.size() == groups.size(), "FilterZeroVarianceGroups: ", rewards.size(), " rewards but ",
           groups.size(), " group ids");
  struct Stats {
    int64_t count = 0;
    double first = 0;
    bool all_equal = true;
  };
  std::vector<int64_t> order;  // first-appearance order
  std::map<int64_t, Stats> by_group;
  for (size_t i = 0; i < rewards.size(); ++i) {
    LR_CHECK(std::isfinite(rewards[i]), "FilterZeroVarianceGroups: reward[", i, "] = ", rewards[i],
             " is not finite");
    auto [it, inserted] = by_group.try_emplace(groups[i]);
    Stats& s = it->second;
    if (inserted) {
      order.push_back(groups[i]);
      s.first = rewards[i];
    } else if (rewards[i] != s.first) {
      s.all_equal = false;
    }
    ++s.count;
  }
  GroupFilterResult out;
  std::map<int64_t, bool> keep;
  for (int64_t g : order) {
    const Stats& s = by_group[g];
    const bool k = s.count >= min_group_size && !s.all_equal;
    keep[g] = k;
    (k ? out.kept_groups : out.dropped_groups).push_back(g);
  }
  out.keep_sample.reserve(groups.size());
  for (int64_t g : groups) out.keep_sample.push_back(keep[g]);
  return out;
}

double SoftOverlongPenalty(int64_t length, int64_t max_len, int64_t buffer_len, double penalty_factor) {
  LR_CHECK(length >= 0, "SoftOverlongPenalty: negative length ", length);
  LR_CHECK(max_len >= 1, "SoftOverlongPenalty: max_len must be >= 1, got ", max_len);
  LR_CHECK(buffer_len >= 0 && buffer_len <= max_len, "SoftOverlongPenalty: buffer_len must be in [0, max_len = ",
           max_len, "], got ", buffer_len);
  const int64_t expected = max_len - buffer_len;  // L_max - L_cache
  if (length <= expected) return 0.0;
  if (length > max_len) return -penalty_factor;
  return penalty_factor * static_cast<double>(expected - length) / static_cast<double>(buffer_len);
}

}  // namespace lightrl::algorithms
