#include "trainer/remote_ports.h"

#include <map>

#include "core/check.h"
#include "core/comm/mpi_tensors.h"
#include "core/logging.h"

namespace lightrl::trainer {

namespace {
comm::Millis ToMillis(double seconds) { return comm::Millis(static_cast<int64_t>(seconds * 1000.0)); }
}  // namespace

// ---- rewards ---------------------------------------------------------------------------------

RemoteRewardPort::RemoteRewardPort(std::vector<std::unique_ptr<comm::MessageChannel>> workers)
    : workers_(std::move(workers)), alive_(workers_.size(), true) {}

int RemoteRewardPort::live_workers() const {
  int n = 0;
  for (bool a : alive_) n += a;
  return n;
}

std::vector<RewardResult> RemoteRewardPort::Score(const protocol::RewardBatch& batch) {
  auto log = Logger("trainer");
  std::vector<size_t> live;
  for (size_t w = 0; w < workers_.size(); ++w)
    if (alive_[w]) live.push_back(w);
  std::map<uint64_t, RewardResult> got;
  std::map<uint64_t, std::string> lost;  // sample id -> why
  if (live.empty()) {
    for (const auto& r : batch.requests) lost[r.sample_id] = "no live reward worker";
  } else {
    std::vector<protocol::RewardBatch> parts(live.size());
    for (size_t i = 0; i < batch.requests.size(); ++i) parts[i % live.size()].requests.push_back(batch.requests[i]);
    std::vector<comm::MessageChannel*> channels;
    std::vector<protocol::Message> messages;
    std::vector<size_t> part_worker;
    for (size_t k = 0; k < live.size(); ++k) {
      if (parts[k].requests.empty()) continue;
      parts[k].batch_id = batch.batch_id;
      parts[k].deadline_s = batch.deadline_s;
      channels.push_back(workers_[live[k]].get());
      messages.push_back(parts[k]);
      part_worker.push_back(k);
    }
    // Workers enforce deadline_s themselves; allow transport slack before declaring them lost.
    auto replies = comm::CallAll(channels, messages, ToMillis(batch.deadline_s * 1.2 + 2.0));
    for (size_t i = 0; i < replies.size(); ++i) {
      const protocol::RewardBatch& part = parts[part_worker[i]];
      const size_t w = live[part_worker[i]];
      Status failure;
      if (!replies[i].ok()) {
        failure = replies[i].status();
      } else if (auto* rb = std::get_if<protocol::RewardResultBatch>(&*replies[i])) {
        for (const auto& r : rb->results) {
          if (got.count(r.sample_id)) {
            // Two results for one id: neither can be trusted.
            got[r.sample_id] = RewardResult::Failed(r.sample_id, RewardErrorKind::kInternal,
                                                    StrCat(workers_[w]->peer(), ": duplicate result"));
          } else {
            got[r.sample_id] = r;
          }
        }
        continue;
      } else if (auto* err = std::get_if<protocol::ErrorReply>(&*replies[i])) {
        failure = err->ToStatus().WithContext(workers_[w]->peer());
      } else {
        failure = InvalidArgument(StrCat(workers_[w]->peer(), ": unexpected reply type"));
      }
      log->warn("reward worker {} failed: {}; masking its {} samples and skipping it from now on",
                workers_[w]->peer(), failure.ToString(), part.requests.size());
      alive_[w] = false;
      for (const auto& r : part.requests) lost[r.sample_id] = failure.ToString();
    }
  }
  std::vector<RewardResult> out;
  out.reserve(batch.requests.size());
  for (const auto& r : batch.requests) {
    auto it = got.find(r.sample_id);
    if (it != got.end()) {
      out.push_back(it->second);
    } else {
      auto why = lost.find(r.sample_id);
      out.push_back(RewardResult::Failed(r.sample_id, RewardErrorKind::kWorkerLost,
                                         why != lost.end() ? why->second : "no result returned for this sample"));
    }
  }
  return out;
}

// ---- rollouts --------------------------------------------------------------------------------

RemoteRolloutPort::RemoteRolloutPort(std::vector<std::unique_ptr<comm::MessageChannel>> workers,
                                     const comm::MpiComm* weights_comm, double timeout_s)
    : workers_(std::move(workers)), weights_comm_(weights_comm), timeout_s_(timeout_s) {
  LR_CHECK(!workers_.empty(), "RemoteRolloutPort: no rollout workers");
}

StatusOr<protocol::RolloutResult> RemoteRolloutPort::Generate(const protocol::RolloutRequest& request) {
  const size_t n = workers_.size(), P = request.prompts.size();
  std::vector<comm::MessageChannel*> channels;
  std::vector<protocol::Message> messages;
  for (size_t w = 0; w < n; ++w) {
    const size_t begin = P * w / n, end = P * (w + 1) / n;
    if (begin == end) continue;
    protocol::RolloutRequest part = request;
    part.prompts.assign(request.prompts.begin() + static_cast<std::ptrdiff_t>(begin),
                        request.prompts.begin() + static_cast<std::ptrdiff_t>(end));
    channels.push_back(workers_[w].get());
    messages.push_back(std::move(part));
  }
  auto replies = comm::CallAll(channels, messages, ToMillis(timeout_s_));
  protocol::RolloutResult merged;
  merged.request_id = request.request_id;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i].ok()) return replies[i].status();
    if (auto* err = std::get_if<protocol::ErrorReply>(&*replies[i])) {
      return err->ToStatus().WithContext(channels[i]->peer());
    }
    auto* result = std::get_if<protocol::RolloutResult>(&*replies[i]);
    if (!result) return InvalidArgument(StrCat(channels[i]->peer(), ": expected a RolloutResult reply"));
    for (auto& t : result->trajectories) merged.trajectories.push_back(std::move(t));
  }
  return merged;
}

Status RemoteRolloutPort::PublishWeights(const model::NamedTensors& weights, uint64_t version) {
  LR_ASSIGN_OR_RETURN(protocol::WeightsManifest manifest, comm::MakeManifest(weights, version));
  protocol::WeightsAnnounce announce;
  announce.manifest = manifest;
  announce.transport = "mpi";
  std::vector<comm::MessageChannel*> channels;
  std::vector<protocol::Message> messages;
  for (auto& w : workers_) {
    channels.push_back(w.get());
    messages.push_back(announce);
  }
  auto replies = comm::CallAll(channels, messages, ToMillis(timeout_s_));
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i].ok()) return replies[i].status().WithContext(StrCat("weight sync v", version));
    if (!std::holds_alternative<protocol::Ack>(*replies[i])) {
      return FailedPrecondition(StrCat("weight sync v", version, ": ", channels[i]->peer(), " did not acknowledge"));
    }
  }
  LR_CHECK(weights_comm_ != nullptr && weights_comm_->valid(), "weight sync: no weight-sync communicator");
  model::NamedTensors send = weights;
  uint64_t v = version;
  comm::WeightSyncOptions opts;
  opts.timeout_s = timeout_s_;
  return comm::BroadcastWeights(*weights_comm_, 0, &send, &v, opts);
}

void ShutdownWorkers(const std::vector<comm::MessageChannel*>& workers, double timeout_s) {
  std::vector<protocol::Message> messages(workers.size(), protocol::Shutdown{"training finished"});
  auto replies = comm::CallAll(workers, messages, ToMillis(timeout_s));
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i].ok()) Logger("trainer")->warn("shutdown of {}: {}", workers[i]->peer(), replies[i].status().ToString());
  }
}

}  // namespace lightrl::trainer
