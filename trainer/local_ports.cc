#include "trainer/local_ports.h"

#include "core/check.h"

namespace lightrl::trainer {

EnvTaskFeed::EnvTaskFeed(std::unique_ptr<envs::TaskSource> source, const model::Tokenizer* tokenizer,
                         model::ChatTemplate chat_template)
    : source_(std::move(source)), tokenizer_(tokenizer), chat_template_(std::move(chat_template)) {
  LR_CHECK(source_ && tokenizer_, "EnvTaskFeed: a task source and a tokenizer are required");
}

std::vector<PromptTask> EnvTaskFeed::Next(int64_t n) {
  std::vector<PromptTask> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    envs::Task task = source_->Next();
    PromptTask p;
    p.task_id = std::move(task.id);
    p.source = std::move(task.source);
    p.prompt_text = chat_template_.RenderPrompt(task.prompt);
    p.prompt_ids = tokenizer_->Encode(p.prompt_text);
    p.verifier = std::move(task.verifier);
    p.reference_json = std::move(task.reference_json);
    out.push_back(std::move(p));
  }
  return out;
}

StatusOr<protocol::RolloutResult> LocalRolloutPort::Generate(const protocol::RolloutRequest& request) {
  return service_->Generate(request);
}

Status LocalRolloutPort::PublishWeights(const model::NamedTensors& weights, uint64_t version) {
  return service_->LoadWeights(weights, version);
}

std::vector<RewardResult> LocalRewardPort::Score(const protocol::RewardBatch& batch) {
  return worker_->Score(batch.requests, batch.deadline_s);
}

}  // namespace lightrl::trainer
