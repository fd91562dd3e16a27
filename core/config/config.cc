#include "core/config/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace lightrl {
namespace fs = std::filesystem;

namespace {

StatusOr<YAML::Node> LoadWithIncludes(const fs::path& path, int depth) {
  if (depth > 16) return InvalidArgument("config include depth exceeds 16 at " + path.string());
  std::ifstream in(path);
  if (!in) return NotFound("config file not found or unreadable: " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  auto parsed = LoadConfigString(ss.str(), path.string());
  if (!parsed.ok()) return parsed.status();
  YAML::Node node = *parsed;
  if (!node.IsDefined() || node.IsNull()) node = YAML::Node(YAML::NodeType::Map);
  if (!node.IsMap()) return InvalidArgument(path.string() + ": top level must be a map");
  if (!node["include"]) return node;

  const YAML::Node includes = node["include"];
  if (!includes.IsSequence()) {
    return InvalidArgument(path.string() + ": include: expected a list of file paths");
  }
  YAML::Node merged(YAML::NodeType::Map);
  for (const auto& inc : includes) {
    if (!inc.IsScalar()) return InvalidArgument(path.string() + ": include: entries must be paths");
    fs::path p = inc.as<std::string>();
    if (p.is_relative()) p = path.parent_path() / p;
    auto sub = LoadWithIncludes(p, depth + 1);
    if (!sub.ok()) return sub.status().WithContext("included from " + path.string());
    merged = MergeConfig(merged, *sub);
  }
  YAML::Node self = YAML::Clone(node);
  self.remove("include");
  return MergeConfig(merged, self);
}

std::string Describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a map";
  return "null";
}

}  // namespace

StatusOr<YAML::Node> LoadConfigString(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(origin + ": YAML syntax error at line " + std::to_string(e.mark.line + 1) +
                           ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

StatusOr<YAML::Node> LoadConfigFile(const std::string& path) { return LoadWithIncludes(path, 0); }

YAML::Node MergeConfig(const YAML::Node& base, const YAML::Node& overlay) {
  if (!overlay.IsDefined()) return YAML::Clone(base);
  if (!base.IsMap() || !overlay.IsMap()) return YAML::Clone(overlay);
  YAML::Node out = YAML::Clone(base);
  for (const auto& kv : overlay) {
    const std::string key = kv.first.as<std::string>();
    if (out[key] && out[key].IsMap() && kv.second.IsMap()) {
      out[key] = MergeConfig(out[key], kv.second);
    } else {
      out[key] = YAML::Clone(kv.second);
    }
  }
  return out;
}

Status ApplyOverrides(YAML::Node& root, const std::vector<std::string>& overrides) {
  for (const auto& ov : overrides) {
    const auto eq = ov.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("override '" + ov + "': expected key.path=value");
    }
    const std::string key = ov.substr(0, eq);
    const std::string text = ov.substr(eq + 1);
    std::vector<std::string> parts;
    std::stringstream ks(key);
    for (std::string part; std::getline(ks, part, '.');) {
      if (part.empty()) return InvalidArgument("override '" + ov + "': empty key component");
      parts.push_back(part);
    }
    YAML::Node value;
    try {
      value = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return InvalidArgument("override '" + ov + "': value is not valid YAML: " + e.msg);
    }
    if (!value.IsDefined()) value = YAML::Node(text);
    if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    // Walk with explicit node copies: yaml-cpp nodes are handles, assignment rebinds.
    std::vector<YAML::Node> chain{root};
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      YAML::Node cur = chain.back();
      YAML::Node next = cur[parts[i]];
      if (!next.IsDefined() || next.IsNull()) {
        cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
        next = cur[parts[i]];
      } else if (!next.IsMap()) {
        std::string prefix;
        for (size_t j = 0; j <= i; ++j) prefix += (j ? "." : "") + parts[j];
        return InvalidArgument("override '" + ov + "': '" + prefix + "' is " + Describe(next) +
                               ", not a map");
      }
      chain.push_back(next);
    }
    chain.back()[parts.back()] = value;
  }
  return Status::Ok();
}

std::string ConfigToYaml(const YAML::Node& node) {
  YAML::Emitter out;
  out << node;
  return out.c_str();
}

ConfigReader::ConfigReader(const YAML::Node& node, std::string path)
    : node_(node), path_(std::move(path)) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
    throw ConfigError(path_, "expected a map, got " + Describe(node_));
  }
}

bool ConfigReader::Has(const std::string& key) const {
  if (!node_.IsDefined() || node_.IsNull()) return false;
  const YAML::Node n = node_[key];
  return n.IsDefined() && !n.IsNull();
}

std::string ConfigReader::Path(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

YAML::Node ConfigReader::Lookup(const std::string& key) {
  used_.insert(key);
  if (!node_.IsDefined() || node_.IsNull()) return YAML::Node();
  const YAML::Node& cn = node_;
  return cn[key];
}

ConfigReader ConfigReader::Child(const std::string& key) {
  YAML::Node n = Lookup(key);
  if (!n.IsDefined() || n.IsNull()) throw ConfigError(Path(key), "missing required section");
  return ConfigReader(n, Path(key));
}

ConfigReader ConfigReader::ChildOrEmpty(const std::string& key) {
  return ConfigReader(Lookup(key), Path(key));
}

void ConfigReader::MarkUsed(const std::string& key) { used_.insert(key); }

void ConfigReader::Finish() const {
  if (!node_.IsDefined() || node_.IsNull()) return;
  for (const auto& kv : node_) {
    const std::string key = kv.first.as<std::string>();
    if (!used_.count(key)) {
      std::string known;
      for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
      throw ConfigError(Path(key), "unknown key; known keys here: " + (known.empty() ? "(none)" : known));
    }
  }
}

void ConfigReader::Fail(const std::string& key, const std::string& what) const {
  throw ConfigError(Path(key), what);
}

namespace config_detail {
namespace {

[[noreturn]] void Expected(const std::string& path, const char* what, const YAML::Node& n) {
  throw ConfigError(path, std::string("expected ") + what + ", got " + Describe(n));
}

template <typename Int>
Int ConvertInt(const YAML::Node& n, const std::string& path, const char* what) {
  if (!n.IsScalar()) Expected(path, what, n);
  const std::string& s = n.Scalar();
  try {
    size_t pos = 0;
    long long v = std::stoll(s, &pos, 0);
    if (pos != s.size()) {
      // Accept integral floats written as 1e6.
      double d = std::stod(s, &pos);
      if (pos != s.size() || std::floor(d) != d || std::fabs(d) > 9.0e18) Expected(path, what, n);
      v = static_cast<long long>(d);
    }
    if (v < static_cast<long long>(std::numeric_limits<Int>::min()) ||
        v > static_cast<long long>(std::numeric_limits<Int>::max())) {
      Expected(path, what, n);
    }
    return static_cast<Int>(v);
  } catch (const std::logic_error&) {
    Expected(path, what, n);
  }
}

double ConvertDouble(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) Expected(path, "a number", n);
  const std::string& s = n.Scalar();
  if (s == ".inf" || s == "inf") return std::numeric_limits<double>::infinity();
  if (s == "-.inf" || s == "-inf") return -std::numeric_limits<double>::infinity();
  try {
    size_t pos = 0;
    double v = std::stod(s, &pos);
    if (pos != s.size()) Expected(path, "a number", n);
    return v;
  } catch (const std::logic_error&) {
    Expected(path, "a number", n);
  }
}

}  // namespace

template <>
bool Convert<bool>(const YAML::Node& n, const std::string& path) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  Expected(path, "true or false", n);
}
template <>
int Convert<int>(const YAML::Node& n, const std::string& path) {
  return ConvertInt<int>(n, path, "an integer");
}
template <>
int64_t Convert<int64_t>(const YAML::Node& n, const std::string& path) {
  return ConvertInt<int64_t>(n, path, "an integer");
}
template <>
uint64_t Convert<uint64_t>(const YAML::Node& n, const std::string& path) {
  const int64_t v = ConvertInt<int64_t>(n, path, "a non-negative integer");
  if (v < 0) Expected(path, "a non-negative integer", n);
  return static_cast<uint64_t>(v);
}
template <>
double Convert<double>(const YAML::Node& n, const std::string& path) {
  return ConvertDouble(n, path);
}
template <>
float Convert<float>(const YAML::Node& n, const std::string& path) {
  return static_cast<float>(ConvertDouble(n, path));
}
template <>
std::string Convert<std::string>(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) Expected(path, "a string", n);
  return n.Scalar();
}

template <typename T>
std::vector<T> ConvertList(const YAML::Node& n, const std::string& path) {
  if (!n.IsSequence()) Expected(path, "a list", n);
  std::vector<T> out;
  out.reserve(n.size());
  for (size_t i = 0; i < n.size(); ++i) {
    out.push_back(Convert<T>(n[i], path + "[" + std::to_string(i) + "]"));
  }
  return out;
}

template <>
std::vector<int> Convert<std::vector<int>>(const YAML::Node& n, const std::string& path) {
  return ConvertList<int>(n, path);
}
template <>
std::vector<int64_t> Convert<std::vector<int64_t>>(const YAML::Node& n, const std::string& path) {
  return ConvertList<int64_t>(n, path);
}
template <>
std::vector<double> Convert<std::vector<double>>(const YAML::Node& n, const std::string& path) {
  return ConvertList<double>(n, path);
}
template <>
std::vector<std::string> Convert<std::vector<std::string>>(const YAML::Node& n,
                                                           const std::string& path) {
  return ConvertList<std::string>(n, path);
}

}  // namespace config_detail
}  // namespace lightrl
