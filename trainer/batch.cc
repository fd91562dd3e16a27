#include "trainer/batch.h"

#include "core/check.h"

namespace lightrl::trainer {

namespace {

MicroBatch Build(const std::vector<Sample>& samples, const std::vector<int64_t>& members) {
  MicroBatch mb;
  mb.sample_indices = members;
  std::vector<int64_t> ids, positions, targets, owner;
  mb.cu_seqlens.push_back(0);
  for (size_t j = 0; j < members.size(); ++j) {
    const Sample& s = samples[members[j]];
    const int64_t start = static_cast<int64_t>(ids.size());
    const int64_t P = static_cast<int64_t>(s.prompt_ids.size());
    LR_CHECK(P > 0, "sample ", s.sample_id, " has an empty prompt");
    ids.insert(ids.end(), s.prompt_ids.begin(), s.prompt_ids.end());
    ids.insert(ids.end(), s.response_ids.begin(), s.response_ids.end());
    for (size_t r = 0; r < s.response_ids.size(); ++r) {
      positions.push_back(start + P - 1 + static_cast<int64_t>(r));  // logits here predict response token r
      targets.push_back(s.response_ids[r]);
      owner.push_back(static_cast<int64_t>(j));
    }
    mb.cu_seqlens.push_back(static_cast<int64_t>(ids.size()));
  }
  mb.input_ids = torch::tensor(ids, torch::kLong).reshape({1, -1});
  mb.target_positions = torch::tensor(positions, torch::kLong);
  mb.targets = torch::tensor(targets, torch::kLong);
  mb.token_sample = torch::tensor(owner, torch::kLong);
  mb.response_tokens = static_cast<int64_t>(targets.size());
  return mb;
}

}  // namespace

std::vector<MicroBatch> PackMicroBatches(const std::vector<Sample>& samples, const std::vector<int64_t>& indices,
                                         int64_t max_tokens) {
  LR_CHECK(max_tokens > 0, "PackMicroBatches: max_tokens must be > 0");
  std::vector<MicroBatch> out;
  std::vector<int64_t> current;
  int64_t tokens = 0;
  for (int64_t i : indices) {
    const Sample& s = samples.at(i);
    if (s.response_ids.empty()) continue;
    if (!current.empty() && tokens + s.length() > max_tokens) {
      out.push_back(Build(samples, current));
      current.clear();
      tokens = 0;
    }
    current.push_back(i);
    tokens += s.length();
  }
  if (!current.empty()) out.push_back(Build(samples, current));
  return out;
}

std::vector<int64_t> MiniBatchShard(const std::vector<int64_t>& order, int64_t updates, int64_t m, int rank,
                                    int world) {
  LR_CHECK(updates >= 1 && m >= 0 && m < updates, "MiniBatchShard: mini-batch ", m, " of ", updates);
  LR_CHECK(world >= 1 && rank >= 0 && rank < world, "MiniBatchShard: rank ", rank, " of ", world);
  const int64_t total = static_cast<int64_t>(order.size());
  const int64_t begin = total * m / updates, end = total * (m + 1) / updates;
  std::vector<int64_t> mine;
  for (int64_t i = begin; i < end; ++i)
    if ((i - begin) % world == rank) mine.push_back(order[i]);
  return mine;
}

}  // namespace lightrl::trainer
