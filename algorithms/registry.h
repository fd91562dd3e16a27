// Registry<T>: name -> factory for one kind of algorithm part (policy loss, advantage
// estimator). Each factory builds its object from its OWN config block and validates its own
// knobs, so CISPO's `eps_high` is not PPO's. Built-in entries are registered explicitly in
// algorithms/builtin.cc (one list, no static-initialisation tricks); an experiment may
// Register() extra entries from its main() before the config is parsed.
//
// This header does not include libtorch.
//
// Thread-safety: Register() is not synchronised; call it before any Create(). Create() and
// Names() are safe to call concurrently afterwards.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "core/config/config.h"
#include "core/status.h"

namespace lightrl::algorithms {

template <typename T>
class Registry {
 public:
  // Builds an object from its config block. Reads its knobs through `config` (whose path is
  // the block's key path, e.g. "algorithm.policy_loss") and throws ConfigError via
  // config.Get / config.Fail for bad values; Create() turns that into a Status. Keys the
  // factory does not read are rejected by Create() (typos such as `eps_hgih`).
  using Factory = std::function<std::unique_ptr<T>(ConfigReader& config)>;

  // `kind` names the registry in errors ("policy_loss", "advantage estimator").
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // Registering a name twice is a programming error (LR_CHECK).
  void Register(std::string name, Factory factory) {
    LR_CHECK(!name.empty(), kind_, " registry: empty name");
    LR_CHECK(factory != nullptr, kind_, " registry: null factory for '", name, "'");
    LR_CHECK(factories_.find(name) == factories_.end(), kind_, " registry: '", name, "' registered twice");
    factories_.emplace(std::move(name), std::move(factory));
  }

  bool Contains(std::string_view name) const { return factories_.find(name) != factories_.end(); }

  // Sorted names (used in --help and in error messages).
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& kv : factories_) out.push_back(kv.first);
    return out;
  }

  // "cispo, gspo, ppo_clip, reinforce"
  std::string NamesJoined() const {
    std::string out;
    for (const auto& kv : factories_) out += (out.empty() ? "" : ", ") + kv.first;
    return out;
  }

  // Builds entry `name` from `config` (a map, or null for all defaults) at key path `path`.
  // Keys listed in `ignore_keys` belong to the caller (e.g. the `name` selector itself).
  // Unknown name: InvalidArgument("<name_path>: unknown policy_loss 'cispoo'; known: cispo, ...").
  StatusOr<std::unique_ptr<T>> Create(std::string_view name, const YAML::Node& config, const std::string& path,
                                      const std::vector<std::string>& ignore_keys = {},
                                      const std::string& name_path = "") const {
    auto it = factories_.find(name);
    if (it == factories_.end()) {
      return InvalidArgument(StrCat(name_path.empty() ? path : name_path, ": unknown ", kind_, " '", name,
                                    "'; known: ", NamesJoined()));
    }
    if (config.IsDefined() && !config.IsNull() && !config.IsMap()) {
      return InvalidArgument(StrCat(path, ": expected a map of ", kind_, " settings"));
    }
    const Factory& factory = it->second;
    return ParseConfig<std::unique_ptr<T>>([&]() -> std::unique_ptr<T> {
      ConfigReader reader(config, path);
      for (const auto& k : ignore_keys) reader.MarkUsed(k);
      std::unique_ptr<T> object = factory(reader);
      LR_CHECK(object != nullptr, kind_, " factory '", name, "' returned null");
      reader.Finish();
      return object;
    });
  }

  // Builds from a block that names its entry under `name_key`:
  //   policy_loss: {name: cispo, eps_high: 4.0}      CreateFromBlock(node, "algorithm.policy_loss")
  StatusOr<std::unique_ptr<T>> CreateFromBlock(const YAML::Node& block, const std::string& path,
                                               const std::string& name_key = "name") const {
    if (!block.IsDefined() || block.IsNull()) return InvalidArgument(StrCat(path, ": missing required section"));
    if (!block.IsMap()) return InvalidArgument(StrCat(path, ": expected a map with '", name_key, "'"));
    const YAML::Node name = block[name_key];
    const std::string name_path = path + "." + name_key;
    if (!name.IsDefined() || name.IsNull()) {
      return InvalidArgument(StrCat(name_path, ": missing required key (one of: ", NamesJoined(), ")"));
    }
    if (!name.IsScalar()) return InvalidArgument(StrCat(name_path, ": expected a string"));
    return Create(name.Scalar(), block, path, {name_key}, name_path);
  }

  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  std::map<std::string, Factory, std::less<>> factories_;
};

}  // namespace lightrl::algorithms
