// THE list of built-in algorithm parts. Every built-in policy loss and advantage estimator is
// registered here and only here (explicit registration: no static-initialisation order issues,
// no --whole-archive, one file a newcomer can read). Experiments register extra entries from
// their own main() before the config is parsed:
//   lightrl::algorithms::PolicyLossRegistry().Register("my_loss", &MyLoss::FromConfig);
#include "algorithms/advantage.h"
#include "algorithms/advantages.h"
#include "algorithms/losses.h"
#include "algorithms/policy_loss.h"

namespace lightrl::algorithms {

namespace {

void RegisterBuiltinPolicyLosses(Registry<PolicyLoss>& r) {
  r.Register("cispo", &CispoLoss::FromConfig);
  r.Register("ppo_clip", &PpoClipLoss::FromConfig);
  r.Register("gspo", &GspoLoss::FromConfig);
  r.Register("reinforce", &ReinforceLoss::FromConfig);
}

void RegisterBuiltinAdvantages(Registry<AdvantageEstimator>& r) {
  r.Register("grpo", &GrpoAdvantage::FromConfig);
  r.Register("rloo", &RlooAdvantage::FromConfig);
  r.Register("reinforce_pp", &ReinforcePlusPlusAdvantage::FromConfig);
  r.Register("gae", &GaeAdvantage::FromConfig);
}

}  // namespace

Registry<PolicyLoss>& PolicyLossRegistry() {
  // Intentionally leaked: no destruction-order issues at exit.
  static Registry<PolicyLoss>* registry = [] {
    auto* r = new Registry<PolicyLoss>("policy_loss");
    RegisterBuiltinPolicyLosses(*r);
    return r;
  }();
  return *registry;
}

Registry<AdvantageEstimator>& AdvantageRegistry() {
  static Registry<AdvantageEstimator>* registry = [] {
    auto* r = new Registry<AdvantageEstimator>("advantage estimator");
    RegisterBuiltinAdvantages(*r);
    return r;
  }();
  return *registry;
}

}  // namespace lightrl::algorithms
