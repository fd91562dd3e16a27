#include "trainer/train_config.h"

#include "core/check.h"

namespace lightrl::trainer {

namespace {

// node[key], or a null node when node is not a map or has no such key (a const yaml-cpp lookup
// of a missing key yields an invalid "zombie" node that throws when used).
YAML::Node Block(const YAML::Node& node, const std::string& key) {
  if (!node.IsMap()) return YAML::Node();
  for (const auto& kv : node)
    if (kv.first.as<std::string>() == key) return kv.second;
  return YAML::Node();
}

TrainConfig Parse(const YAML::Node& root) {
  ConfigReader r(root, "");
  TrainConfig c;
  c.raw = root;
  {
    ConfigReader m = r.Child("model");
    c.model = model::ParseModelConfig(m);
    Status valid = c.model.Validate("model");
    if (!valid.ok()) throw Error(valid.message());
  }
  {
    ConfigReader t = r.ChildOrEmpty("trainer");
    c.trainer.total_steps = t.Get<int64_t>("total_steps", c.trainer.total_steps);
    c.trainer.seed = t.Get<uint64_t>("seed", c.trainer.seed);
    c.trainer.threads = t.Get<int>("threads", c.trainer.threads);
    c.trainer.micro_batch_tokens = t.Get<int64_t>("micro_batch_tokens", c.trainer.micro_batch_tokens);
    c.trainer.log_level = t.Get<std::string>("log_level", c.trainer.log_level);
    c.trainer.deterministic = t.Get<bool>("deterministic", c.trainer.deterministic);
    c.trainer.init_from = t.Get<std::string>("init_from", c.trainer.init_from);
    c.trainer.moe_aux_loss = t.Get<bool>("moe_aux_loss", c.trainer.moe_aux_loss);
    c.trainer.collective_timeout_s = t.Get<double>("collective_timeout_s", c.trainer.collective_timeout_s);
    if (!(c.trainer.collective_timeout_s >= 0)) t.Fail("collective_timeout_s", "expected >= 0 (0 = off)");
    if (c.trainer.total_steps < 1) t.Fail("total_steps", "expected >= 1");
    if (c.trainer.micro_batch_tokens < 1) t.Fail("micro_batch_tokens", "expected >= 1");
    t.Finish();
  }
  {
    ConfigReader ro = r.ChildOrEmpty("rollout");
    auto& o = c.rollout;
    o.prompts_per_step = ro.Get<int64_t>("prompts_per_step", o.prompts_per_step);
    o.samples_per_prompt = ro.Get<int>("samples_per_prompt", o.samples_per_prompt);
    o.temperature = ro.Get<double>("temperature", o.temperature);
    o.top_p = ro.Get<double>("top_p", o.top_p);
    o.top_k = ro.Get<int>("top_k", o.top_k);
    o.max_response_len = ro.Get<int64_t>("max_response_len", o.max_response_len);
    if (ro.Has("early_truncation")) {
      ConfigReader et = ro.Child("early_truncation");
      o.early_truncation_window = et.Get<int64_t>("window", o.early_truncation_window);
      o.early_truncation_prob = et.Get<double>("prob", o.early_truncation_prob);
      et.Finish();
    }
    o.timeout_s = ro.Get<double>("timeout_s", o.timeout_s);
    o.max_slots = ro.Get<int>("max_slots", o.max_slots);
    o.batch_invariant = ro.Get<bool>("batch_invariant", o.batch_invariant);
    o.max_staleness = ro.Get<int>("max_staleness", o.max_staleness);
    if (o.prompts_per_step < 1) ro.Fail("prompts_per_step", "expected >= 1");
    if (o.samples_per_prompt < 1) ro.Fail("samples_per_prompt", "expected >= 1");
    if (!(o.temperature > 0)) ro.Fail("temperature", "expected > 0");
    if (!(o.top_p > 0 && o.top_p <= 1)) ro.Fail("top_p", "expected a value in (0, 1]");
    if (o.max_response_len < 1) ro.Fail("max_response_len", "expected >= 1");
    if (o.max_staleness < 0 || o.max_staleness > 1) {
      ro.Fail("max_staleness",
              StrCat("expected 0 (synchronous: a step trains on samples of its own weights) or 1 (the rollouts of "
                     "step t+1 are generated while step t trains, one weights version behind); got ",
                     o.max_staleness, " (deeper pipelines are not implemented)"));
    }
    ro.Finish();
  }
  {
    ConfigReader rw = r.ChildOrEmpty("reward");
    auto& w = c.reward;
    w.timeout_s = rw.Get<double>("timeout_s", w.timeout_s);
    w.endpoints = rw.Get<std::vector<std::string>>("endpoints", w.endpoints);
    rw.MarkUsed("verifiers");
    w.verifiers = Block(rw.node(), "verifiers");
    if (rw.Has("overlong")) {
      ConfigReader ol = rw.Child("overlong");
      w.overlong_buffer_len = ol.Get<int64_t>("buffer_len", w.overlong_buffer_len);
      w.overlong_penalty_factor = ol.Get<double>("penalty_factor", w.overlong_penalty_factor);
      w.overlong_filter = ol.Get<bool>("filter", w.overlong_filter);
      if (w.overlong_buffer_len < 0 || w.overlong_buffer_len >= c.rollout.max_response_len) {
        ol.Fail("buffer_len", StrCat("expected 0 (off) or a length in [1, rollout.max_response_len = ",
                                     c.rollout.max_response_len, "), got ", w.overlong_buffer_len,
                                     " (the penalty starts at max_response_len - buffer_len)"));
      }
      ol.Finish();
    }
    if (!(w.timeout_s > 0)) rw.Fail("timeout_s", "expected > 0");
    rw.Finish();
  }
  {
    ConfigReader ro = r.ChildOrEmpty("roles");
    c.roles.mode = ro.Get<std::string>("mode", c.roles.mode);
    c.roles.rollout_ranks = ro.Get<int>("rollout_ranks", c.roles.rollout_ranks);
    c.roles.reward_ranks = ro.Get<int>("reward_ranks", c.roles.reward_ranks);
    if (c.roles.mode != "split" && c.roles.mode != "colocated") ro.Fail("mode", "expected 'split' or 'colocated'");
    if (c.roles.rollout_ranks < 0 || c.roles.reward_ranks < 0) ro.Fail("rollout_ranks", "rank counts must be >= 0");
    ro.Finish();
  }
  {
    ConfigReader ck = r.ChildOrEmpty("checkpoint");
    c.checkpoint.save_every = ck.Get<int64_t>("save_every", c.checkpoint.save_every);
    c.checkpoint.keep_last = ck.Get<int64_t>("keep_last", c.checkpoint.keep_last);
    if (c.checkpoint.save_every < 0) ck.Fail("save_every", "expected >= 0");
    if (c.checkpoint.keep_last < 1) ck.Fail("keep_last", "expected >= 1");
    ck.Finish();
  }
  {
    ConfigReader o = r.ChildOrEmpty("optim");
    c.optim = ParseOptimConfig(o);
  }
  {
    ConfigReader mt = r.ChildOrEmpty("metrics");
    c.tensorboard = mt.Get<bool>("tensorboard", c.tensorboard);
    mt.Finish();
  }
  for (const char* k : {"algorithm", "tasks", "tokenizer", "chat_template", "sft"}) r.MarkUsed(k);
  c.algorithm = Block(root, "algorithm");
  c.tasks = Block(root, "tasks");
  c.tokenizer = Block(root, "tokenizer");
  c.chat_template = Block(root, "chat_template");
  c.sft = Block(root, "sft");
  if (c.trainer.collective_timeout_s > 0 &&
      c.trainer.collective_timeout_s <= c.rollout.timeout_s + c.reward.timeout_s) {
    throw Error(StrCat("trainer.collective_timeout_s = ", c.trainer.collective_timeout_s,
                       ": must exceed rollout.timeout_s + reward.timeout_s = ", c.rollout.timeout_s + c.reward.timeout_s,
                       " (the other trainer ranks wait through the driver's generation), or be 0 (off)"));
  }
  r.Finish();
  return c;
}

}  // namespace

StatusOr<TrainConfig> ParseTrainConfig(const YAML::Node& root) {
  return ParseConfig<TrainConfig>([&] { return Parse(root); });
}

StatusOr<TrainConfig> LoadTrainConfig(const std::string& file, const std::vector<std::string>& overrides) {
  LR_ASSIGN_OR_RETURN(YAML::Node root, LoadConfigFile(file));
  LR_RETURN_IF_ERROR(ApplyOverrides(root, overrides));
  auto parsed = ParseTrainConfig(root);
  if (!parsed.ok()) return parsed.status().WithContext(file);
  return parsed;
}

}  // namespace lightrl::trainer
