#include "trainer/sft.h"

#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/comm/mpi.h"
#include "core/config/config.h"
#include "core/logging.h"
#include "core/runtime.h"
#include "envs/task_source.h"
#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "trainer/batch.h"
#include "trainer/launch.h"
#include "trainer/metrics.h"
#include "trainer/mpi_collective.h"
#include "trainer/policy_trainer.h"
#include "trainer/train_config.h"

namespace lightrl::trainer {

namespace {

constexpr int kExitBadConfig = 2;

struct SftConfig {
  int64_t steps = 200;
  int64_t examples_per_step = 32;
  std::optional<double> lr;
  std::string out;
};

SftConfig ParseSftConfig(const YAML::Node& node) {
  ConfigReader r(node, "sft");
  SftConfig c;
  c.steps = r.Get<int64_t>("steps", c.steps);
  c.examples_per_step = r.Get<int64_t>("examples_per_step", c.examples_per_step);
  c.lr = r.GetOptional<double>("lr");
  c.out = r.Get<std::string>("out", c.out);
  if (c.steps < 1) r.Fail("steps", "expected >= 1");
  if (c.examples_per_step < 1) r.Fail("examples_per_step", "expected >= 1");
  if (c.lr && !(*c.lr > 0)) r.Fail("lr", "expected > 0");
  r.Finish();
  return c;
}

// Negative log-likelihood of the target tokens, normalised by the global target-token count.
torch::Tensor SftLoss(const LossInputs& in, std::map<std::string, double>* sums) {
  (*sums)["sft/target_token_prob"] += in.logp.detach().exp().sum().item<double>();
  return -in.logp.sum() / in.global_tokens;
}

}  // namespace

StatusOr<std::string> SftTargetText(const std::string& reference_json, const std::string& task_id) {
  nlohmann::json ref = nlohmann::json::parse(reference_json, nullptr, /*allow_exceptions=*/false);
  if (ref.is_discarded() || !ref.is_object()) {
    return InvalidArgument(StrCat("task '", task_id, "': reference_json is not a JSON object"));
  }
  if (ref.contains("solution") && ref["solution"].is_string()) return ref["solution"].get<std::string>();
  if (ref.contains("answer")) {
    const nlohmann::json& a = ref["answer"];
    if (a.is_string()) return a.get<std::string>();
    if (a.is_number_integer()) return std::to_string(a.get<int64_t>());
    if (a.is_number()) return a.dump();
    if (a.is_array()) {
      std::string out;
      for (const auto& v : a) {
        if (!v.is_number() && !v.is_string()) break;
        if (!out.empty()) out += ' ';
        out += v.is_string() ? v.get<std::string>() : v.dump();
      }
      if (!out.empty() || a.empty()) return out;
    }
  }
  return InvalidArgument(StrCat("task '", task_id,
                                "': no SFT target (reference_json needs a string \"solution\" or an \"answer\" "
                                "that is a string, a number or a list of numbers)"));
}

int RunSftJob(const SftArgs& args) {
  comm::MpiSession session(nullptr, nullptr);
  const comm::MpiComm& world = session.world();
  return comm::RunOrAbort([&]() -> int {
    auto fail_config = [&](const Status& st) {
      if (world.rank() == 0) std::fprintf(stderr, "lightrl sft: %s\n", st.ToString().c_str());
      return kExitBadConfig;
    };
    if (args.run_dir.empty()) return fail_config(InvalidArgument("--run-dir is required"));
    StatusOr<TrainConfig> config = LoadTrainConfig(args.config_path, args.overrides);
    if (!config.ok()) return fail_config(config.status());
    StatusOr<SftConfig> sft = ParseConfig<SftConfig>([&] { return ParseSftConfig(config->sft); });
    if (!sft.ok()) return fail_config(sft.status());
    InitLogging({"sft", world.rank(), config->trainer.log_level});
    ConfigureThreads(ThreadsPerRank(config->trainer.threads));
    auto log = Logger("sft");

    StatusOr<std::unique_ptr<model::Tokenizer>> tokenizer = model::BuildTokenizer(config->tokenizer, "tokenizer");
    if (!tokenizer.ok()) return fail_config(tokenizer.status());
    StatusOr<model::ChatTemplate> chat = model::ParseChatTemplate(config->chat_template, "chat_template");
    if (!chat.ok()) return fail_config(chat.status());
    // Every rank draws the same tasks (deterministic source) and trains its share of them.
    StatusOr<std::unique_ptr<envs::TaskSource>> tasks =
        envs::BuildTaskSource(config->tasks, config->trainer.seed, "train", "tasks");
    if (!tasks.ok()) return fail_config(tasks.status());

    model::HybridModel policy(config->model);
    policy->InitWeights(config->trainer.seed);
    if (!config->trainer.init_from.empty()) {
      Status st = model::LoadModelWeights(policy, config->trainer.init_from);
      if (!st.ok()) return fail_config(st.WithContext("trainer.init_from"));
    }
    OptimConfig optim = config->optim;
    if (sft->lr) optim.lr = *sft->lr;
    MpiCollective collective(&world);
    PolicyTrainer trainer(policy, optim, sft->steps, &collective);

    std::unique_ptr<MetricsLogger> metrics;
    if (world.rank() == 0) {
      std::filesystem::create_directories(args.run_dir);
      StatusOr<std::unique_ptr<MetricsLogger>> opened = MetricsLogger::Open(args.run_dir, 0, config->tensorboard);
      if (!opened.ok()) comm::AbortJob(opened.status().ToString());
      metrics = std::move(*opened);
    }
    UpdateOptions opts;
    opts.updates_per_rollout = 1;
    opts.micro_batch_tokens = config->trainer.micro_batch_tokens;
    opts.temperature = 1.0;
    opts.metric_names = {"sft/target_token_prob"};
    for (int64_t step = 1; step <= sft->steps; ++step) {
      std::vector<Sample> samples;
      std::vector<int64_t> order;
      for (int64_t i = 0; i < sft->examples_per_step; ++i) {
        envs::Task task = (*tasks)->Next();
        StatusOr<std::string> answer = SftTargetText(task.reference_json, task.id);
        if (!answer.ok()) comm::AbortJob(answer.status().ToString(), kExitBadConfig);
        Sample s;
        s.sample_id = static_cast<uint64_t>(step) << 32 | static_cast<uint64_t>(i);
        s.prompt_ids = (*tokenizer)->Encode(chat->RenderPrompt(task.prompt));
        s.response_ids = (*tokenizer)->Encode(chat->RenderTarget(*answer));
        const size_t R = s.response_ids.size();
        s.rollout_logprobs.assign(R, 0.0f);
        s.old_logprobs.assign(R, 0.0f);
        s.advantages.assign(R, 1.0f);
        order.push_back(static_cast<int64_t>(samples.size()));
        samples.push_back(std::move(s));
      }
      StepMetrics m = trainer.Update(samples, order, opts, SftLoss);
      StepMetrics out;
      out["sft/loss"] = m["loss/policy"];
      out["sft/target_token_prob"] = m["sft/target_token_prob"];
      out["optim/grad_norm"] = m["optim/grad_norm"];
      out["optim/lr"] = m["optim/lr"];
      if (metrics) {
        Status st = metrics->Log(step, sft->steps, out);
        if (!st.ok()) comm::AbortJob(st.ToString());
      }
    }
    if (world.rank() == 0) {
      const std::string out = !args.out.empty() ? args.out : !sft->out.empty() ? sft->out : args.run_dir + "/sft_model";
      Status st = model::SaveModelDirectory(policy, out);
      if (!st.ok()) comm::AbortJob(st.ToString());
      log->info("SFT finished after {} steps; model written to {} (use trainer.init_from={})", sft->steps, out, out);
    }
    world.Barrier();
    return 0;
  });
}

}  // namespace lightrl::trainer
