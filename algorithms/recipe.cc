#include "algorithms/recipe.h"

#include <cmath>

#include "core/check.h"
#include "core/config/config.h"
#include "core/logging.h"

namespace lightrl::algorithms {

namespace {

double GetNonNegativeFinite(ConfigReader& r, const std::string& key, double default_value) {
  const double v = r.Get<double>(key, default_value);
  if (!std::isfinite(v) || v < 0) r.Fail(key, StrCat("expected a finite number >= 0, got ", v));
  return v;
}

Recipe Parse(const YAML::Node& node, const std::string& path) {
  if (!node.IsDefined() || node.IsNull()) throw ConfigError(path, "missing required section");
  if (!node.IsMap()) throw ConfigError(path, "expected a map (the algorithm recipe)");
  ConfigReader r(node, path);
  Recipe rc;
  rc.name = r.Get<std::string>("name", rc.name);

  // Advantage estimator (registry entry built from its own block).
  r.MarkUsed("advantage");
  {
    // NOTE: a fresh node, not an assignment to node["advantage"]: for a missing key that is a
    // yaml-cpp zombie node, and assigning to it throws InvalidNode.
    const YAML::Node given = node["advantage"];
    YAML::Node block(YAML::NodeType::Map);
    if (given.IsDefined() && !given.IsNull()) {
      block = given;
    } else {
      block["estimator"] = "grpo";
    }
    auto est = AdvantageRegistry().CreateFromBlock(block, r.Path("advantage"), "estimator");
    if (!est.ok()) throw Error(est.status().message());
    rc.advantage_name = block["estimator"].Scalar();
    rc.advantage = std::shared_ptr<const AdvantageEstimator>(std::move(est).value());
  }

  // Policy loss.
  r.MarkUsed("policy_loss");
  {
    auto loss = PolicyLossRegistry().CreateFromBlock(node["policy_loss"], r.Path("policy_loss"), "name");
    if (!loss.ok()) throw Error(loss.status().message());
    rc.policy_loss_name = node["policy_loss"]["name"].Scalar();
    rc.policy_loss = std::shared_ptr<const PolicyLoss>(std::move(loss).value());
  }

  // Loss aggregation: a name, or {mode, norm_constant}.
  if (r.Has("loss_aggregation")) {
    const YAML::Node agg = node["loss_aggregation"];
    std::string mode;
    std::string mode_path = r.Path("loss_aggregation");
    std::optional<double> constant;
    if (agg.IsMap()) {
      ConfigReader a = r.Child("loss_aggregation");
      mode = a.Get<std::string>("mode");
      mode_path = a.Path("mode");
      constant = a.GetOptional<double>("norm_constant");
      if (constant && !(std::isfinite(*constant) && *constant > 0)) {
        a.Fail("norm_constant", StrCat("expected a finite number > 0 (e.g. the max response length), got ", *constant));
      }
      a.Finish();
    } else {
      mode = r.Get<std::string>("loss_aggregation");
    }
    auto parsed = ParseLossAggregation(mode, mode_path);
    if (!parsed.ok()) throw Error(parsed.status().message());
    rc.aggregation.mode = *parsed;
    if (rc.aggregation.mode == LossAggregation::kSeqMeanTokenSumNorm) {
      if (!constant) {
        throw ConfigError(r.Path("loss_aggregation") + ".norm_constant",
                          "required for seq_mean_token_sum_norm (write loss_aggregation: {mode: "
                          "seq_mean_token_sum_norm, norm_constant: <max response length>})");
      }
      rc.aggregation.norm_constant = *constant;
    } else if (constant) {
      throw ConfigError(r.Path("loss_aggregation") + ".norm_constant",
                        StrCat("only used by seq_mean_token_sum_norm, not ", LossAggregationName(rc.aggregation.mode)));
    }
  }

  rc.updates_per_rollout = r.Get<int64_t>("updates_per_rollout", rc.updates_per_rollout);
  if (rc.updates_per_rollout < 1) r.Fail("updates_per_rollout", StrCat("expected >= 1, got ", rc.updates_per_rollout));

  const std::string source = r.Get<std::string>("old_logprob_source", "recompute");
  if (source == "recompute") {
    rc.old_logprob_source = OldLogprobSource::kRecompute;
  } else if (source == "rollout") {
    rc.old_logprob_source = OldLogprobSource::kRollout;
  } else {
    r.Fail("old_logprob_source", StrCat("expected 'recompute' or 'rollout', got '", source, "'"));
  }

  if (r.Has("is_correction")) {
    ConfigReader c = r.Child("is_correction");
    rc.is_correction = ParseIsCorrectionConfig(c);
    if (rc.old_logprob_source == OldLogprobSource::kRollout) {
      r.Fail("is_correction", "cannot be combined with old_logprob_source: rollout (old and rollout log-probs are "
                              "then the same, so the correction would be counted twice); remove one of them");
    }
  }

  if (r.Has("dynamic_sampling")) {
    ConfigReader d = r.Child("dynamic_sampling");
    rc.dynamic_sampling.enabled = d.Get<bool>("enabled", rc.dynamic_sampling.enabled);
    rc.dynamic_sampling.max_gen_batches = d.Get<int64_t>("max_gen_batches", rc.dynamic_sampling.max_gen_batches);
    if (rc.dynamic_sampling.max_gen_batches < 0) {
      d.Fail("max_gen_batches", StrCat("expected >= 0 (0 = unbounded), got ", rc.dynamic_sampling.max_gen_batches));
    }
    d.Finish();
  }

  rc.entropy_coef = GetNonNegativeFinite(r, "entropy_coef", rc.entropy_coef);

  if (r.Has("kl")) {
    ConfigReader k = r.Child("kl");
    rc.kl.coef = GetNonNegativeFinite(k, "coef", rc.kl.coef);
    const std::string est = k.Get<std::string>("estimator", "k3");
    auto parsed = ParseKlEstimator(est, k.Path("estimator"));
    if (!parsed.ok()) throw Error(parsed.status().message());
    rc.kl.estimator = *parsed;
    rc.kl.in_reward = k.Get<bool>("in_reward", rc.kl.in_reward);
    k.Finish();
  }

  if (r.Has("critic")) {
    ConfigReader c = r.Child("critic");
    CriticConfig cc;
    cc.value_clip = c.Get<double>("value_clip", cc.value_clip);
    if (!(std::isfinite(cc.value_clip) && cc.value_clip > 0)) {
      c.Fail("value_clip", StrCat("expected a finite number > 0, got ", cc.value_clip));
    }
    cc.lr = c.Get<double>("lr", cc.lr);
    if (!(std::isfinite(cc.lr) && cc.lr > 0)) c.Fail("lr", StrCat("expected a finite number > 0, got ", cc.lr));
    const std::string init = c.Get<std::string>("init", "policy");
    if (init == "policy") {
      cc.init_from_policy = true;
    } else if (init == "fresh") {
      cc.init_from_policy = false;
    } else {
      c.Fail("init", StrCat("expected 'policy' or 'fresh', got '", init, "'"));
    }
    c.Finish();
    rc.critic = cc;
  }
  if (rc.advantage->needs_values() && !rc.critic) {
    throw ConfigError(r.Path("critic"), StrCat("required: advantage estimator '", rc.advantage_name,
                                               "' needs a critic (add critic: {value_clip: 0.5})"));
  }
  if (!rc.advantage->needs_values() && rc.critic) {
    r.Fail("critic", StrCat("advantage estimator '", rc.advantage_name, "' does not use a critic; remove this block"));
  }
  r.Finish();

  if (rc.policy_loss_name == "gspo" && rc.aggregation.mode != LossAggregation::kSeqMeanTokenMean) {
    Logger("algorithms")->warn("{}: gspo with loss_aggregation {}; GSPO (and verl) use seq_mean_token_mean",
                               path, LossAggregationName(rc.aggregation.mode));
  }
  return rc;
}

}  // namespace

const char* OldLogprobSourceName(OldLogprobSource s) {
  return s == OldLogprobSource::kRecompute ? "recompute" : "rollout";
}

StatusOr<Recipe> ParseRecipe(const YAML::Node& algorithm_block, const std::string& path) {
  return ParseConfig<Recipe>([&] { return Parse(algorithm_block, path); });
}

std::string Recipe::Describe() const {
  std::string agg = LossAggregationName(aggregation.mode);
  if (aggregation.mode == LossAggregation::kSeqMeanTokenSumNorm) agg += StrCat(" (C=", aggregation.norm_constant, ")");
  return StrCat("recipe '", name, "': advantage = ", advantage ? advantage->Describe() : "?",
                "; policy_loss = ", policy_loss ? policy_loss->Describe() : "?", "; loss_aggregation = ", agg,
                "; old_logprob_source = ", OldLogprobSourceName(old_logprob_source),
                "; updates_per_rollout = ", updates_per_rollout,
                "; is_correction = ", is_correction ? DescribeIsCorrection(*is_correction) : std::string("off"),
                "; dynamic_sampling = ",
                dynamic_sampling.enabled ? StrCat("on (max_gen_batches ", dynamic_sampling.max_gen_batches, ")")
                                         : std::string("off"),
                "; entropy_coef = ", entropy_coef, "; kl = ",
                kl.coef > 0 ? StrCat(KlEstimatorName(kl.estimator), " x ", kl.coef, kl.in_reward ? " in reward" : " in loss")
                            : std::string("off"),
                critic ? StrCat("; critic value_clip = ", critic->value_clip, ", lr = ", critic->lr,
                                ", init = ", critic->init_from_policy ? "policy" : "fresh") : std::string(""));
}

}  // namespace lightrl::algorithms
