// YAML configuration: loading with includes, `a.b.c=value` overrides, and typed reading that
// names the full key path in every error.
//
// A config file may start with `include: [relative/path.yaml, ...]`; included files are merged
// first (maps merge recursively, later files and then the including file win; lists and scalars
// are replaced). Command-line overrides are applied last.
//
// Typed parsing goes through ConfigReader, which records every key it reads. After a struct is
// parsed, Finish() turns any key that was never read into an error (typos such as `eps_hgih`).
//
//   ConfigReader r(root["model"], "model");
//   cfg.hidden_size = r.Get<int64_t>("hidden_size");            // required
//   cfg.rope_theta  = r.Get<double>("rope_theta", 10000.0);     // optional with default
//   r.Finish();
//
// ConfigReader throws ConfigError (a lightrl::Error) whose message starts with the key path;
// ParseConfig() converts that into an InvalidArgument Status at the boundary.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/status.h"

namespace lightrl {

class ConfigError : public Error {
 public:
  ConfigError(std::string key_path, const std::string& what)
      : Error((key_path.empty() ? std::string("<root>") : key_path) + ": " + what),
        key_path_(std::move(key_path)) {}
  const std::string& key_path() const { return key_path_; }

 private:
  std::string key_path_;
};

// Reads a YAML (or JSON) file, resolving `include:` lists relative to the file's directory.
// Errors name the file (and line/column for syntax errors).
StatusOr<YAML::Node> LoadConfigFile(const std::string& path);

// Parses a YAML document from a string (for tests and embedded defaults).
StatusOr<YAML::Node> LoadConfigString(const std::string& text, const std::string& origin = "<string>");

// Recursively merges `overlay` into a deep copy of `base`; overlay wins.
YAML::Node MergeConfig(const YAML::Node& base, const YAML::Node& overlay);

// Applies "a.b.c=value" overrides in order. The value is parsed as a YAML scalar or flow
// collection ("3", "1e-3", "true", "[1, 2]", "cispo"). Intermediate maps are created; a path
// that walks through a scalar or a list is an error naming the override.
Status ApplyOverrides(YAML::Node& root, const std::vector<std::string>& overrides);

// Emits a node as block YAML text (resolved config for logs and checkpoints).
std::string ConfigToYaml(const YAML::Node& node);

class ConfigReader {
 public:
  // `node` must be a map or null/undefined (treated as empty). `path` is its key path ("" = root).
  ConfigReader(const YAML::Node& node, std::string path);

  bool Has(const std::string& key) const;
  // Full key path of a child key: Path("eps_high") == "algorithm.policy_loss.eps_high".
  std::string Path(const std::string& key) const;
  const std::string& path() const { return path_; }
  const YAML::Node& node() const { return node_; }

  // Required key. Throws ConfigError("<path>: missing required key" / "expected <type>, got ...").
  template <typename T>
  T Get(const std::string& key);
  // Optional key with a default.
  template <typename T>
  T Get(const std::string& key, const T& default_value);
  template <typename T>
  std::optional<T> GetOptional(const std::string& key);

  // Nested map (required / may be absent). The child shares the "used keys" bookkeeping only
  // for its own level: call Finish() on children you parse.
  ConfigReader Child(const std::string& key);
  ConfigReader ChildOrEmpty(const std::string& key);

  // Marks a key as consumed without parsing it (e.g. a block handed to a registry entry).
  void MarkUsed(const std::string& key);
  // Throws ConfigError naming the first unknown key and listing the known ones.
  void Finish() const;

  // Throws ConfigError for `key` with `what` (for cross-field validation in parse functions).
  [[noreturn]] void Fail(const std::string& key, const std::string& what) const;

 private:
  YAML::Node Lookup(const std::string& key);
  YAML::Node node_;
  std::string path_;
  std::set<std::string> used_;
};

// Runs a parse function that may throw ConfigError / lightrl::Error and returns a Status.
template <typename T>
StatusOr<T> ParseConfig(const std::function<T()>& parse) {
  try {
    return parse();
  } catch (const ConfigError& e) {
    return InvalidArgument(e.what());
  } catch (const Error& e) {
    return InvalidArgument(e.what());
  }
}

// ---- scalar conversion (declared for the types ConfigReader supports) ---------------------
namespace config_detail {
template <typename T>
T Convert(const YAML::Node& node, const std::string& path);
}  // namespace config_detail

template <typename T>
T ConfigReader::Get(const std::string& key) {
  YAML::Node n = Lookup(key);
  if (!n.IsDefined() || n.IsNull()) throw ConfigError(Path(key), "missing required key");
  return config_detail::Convert<T>(n, Path(key));
}

template <typename T>
T ConfigReader::Get(const std::string& key, const T& default_value) {
  YAML::Node n = Lookup(key);
  if (!n.IsDefined() || n.IsNull()) return default_value;
  return config_detail::Convert<T>(n, Path(key));
}

template <typename T>
std::optional<T> ConfigReader::GetOptional(const std::string& key) {
  YAML::Node n = Lookup(key);
  if (!n.IsDefined() || n.IsNull()) return std::nullopt;
  return config_detail::Convert<T>(n, Path(key));
}

}  // namespace lightrl
