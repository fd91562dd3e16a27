// Training-state checkpoints: the mapping of TrainingState onto core/checkpoint's HDF5 files and
// atomic step directories, auto-resume with fallback, config drift, export, stop signals.
#include "trainer/checkpoint.h"

#include <ATen/Context.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <set>

#include "core/checkpoint/step_dir.h"
#include "core/config/config.h"
#include "core/logging.h"
#include "core/protocol/dtype_torch.h"
#include "core/protocol/messages.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "trainer/policy_trainer.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;
using checkpoint::H5Reader;
using checkpoint::H5Writer;

namespace {

constexpr const char* kFormatName = "lightrl-checkpoint";
constexpr const char* kResumeHint =
    "HINT: --resume auto skips a corrupt checkpoint in favour of an older one; --resume none starts "
    "the run from scratch";

// Group prefixes of the file layout (trainer/checkpoint.h).
constexpr const char* kModelGroup = "model/";
constexpr const char* kOptimizerGroup = "optimizer/";
constexpr const char* kExtraModelsGroup = "extra_models/";
constexpr const char* kRngGroup = "rng/";
constexpr const char* kCountersDataset = "counters";
constexpr const char* kConfigDataset = "config_yaml";
constexpr const char* kManifestDataset = "manifest";
const std::vector<std::string>& JsonBlobNames() {
  static const std::vector<std::string> names = {"task_cursor", "rng", "algorithm_state", "extra"};
  return names;
}

bool StartsWith(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// A tensor name becomes an HDF5 path: it must not produce empty, "." or ".." components.
Status CheckTensorName(const std::string& name, const std::string& what) {
  if (name.empty()) return InvalidArgument(what + ": empty tensor name");
  size_t start = 0;
  while (true) {
    size_t slash = name.find('/', start);
    std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgument(StrCat(what, ": tensor name '", name, "' has an empty, '.' or '..' path component"));
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return Status::Ok();
}

std::string Utc() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json CountersJson(const TrainingState& s) {
  return {{"step", s.step},
          {"weights_version", s.weights_version},
          {"consumed_prompts", s.consumed_prompts},
          {"consumed_samples", s.consumed_samples},
          {"next_reward_batch", s.next_reward_batch},
          {"optimizer_step", s.optimizer_step}};
}

// Reads the tensors of group `prefix` ("model/") from the listing into `out` (names without the
// prefix), or only verifies them when out == nullptr.
Status ReadGroup(const H5Reader& reader, const std::vector<checkpoint::DatasetEntry>& entries,
                 const std::string& prefix, model::NamedTensors* out) {
  for (const auto& e : entries) {
    if (!StartsWith(e.name, prefix)) continue;
    if (e.is_text) return DataLoss(StrCat(reader.path(), ": dataset '", e.name, "' is text, expected a tensor"));
    std::vector<int64_t> shape = e.info.shape;
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(ToTorchDtype(e.info.dtype)));
    LR_RETURN_IF_ERROR(reader.ReadTensorInto(e.name, e.info, t.data_ptr()));
    if (out) (*out)[e.name.substr(prefix.size())] = t;
  }
  return Status::Ok();
}

// What ReadCheckpointFile does with the tensor datasets.
enum class TensorRead {
  kKeep,    // read, check crc32, return them (LoadCheckpoint)
  kVerify,  // read and check crc32, then drop (ValidateCheckpoint)
  kSkip,    // header, manifest, counters and text only (InspectCheckpoint verifies separately)
};

// The full read of one state.h5 (header, manifest, counters, text, and tensors per `tensors`).
StatusOr<TrainingState> ReadCheckpointFile(const std::string& file, TensorRead tensors) {
  const bool keep_tensors = tensors == TensorRead::kKeep;
  LR_ASSIGN_OR_RETURN(auto reader, H5Reader::Open(file));
  // Header.
  auto format = reader->StringAttribute("lightrl_format");
  if (!format.ok() || *format != kFormatName) {
    return DataLoss(StrCat(file, ": not a lightrl checkpoint (root attribute lightrl_format is not \"", kFormatName,
                           "\")"));
  }
  auto version = reader->IntAttribute("format_version");
  if (!version.ok()) return DataLoss(StrCat(file, ": missing root attribute format_version"));
  if (*version < 1 || *version > kCheckpointFormatVersion) {
    return FailedPrecondition(StrCat(file, ": checkpoint format_version ", *version, ", this build reads 1..",
                                     kCheckpointFormatVersion,
                                     ". HINT: it was written by a newer lightrl; use that build to resume or export it"));
  }
  // Manifest: every dataset the writer wrote, and nothing else.
  LR_ASSIGN_OR_RETURN(std::string manifest_text, reader->ReadText(kManifestDataset));
  json manifest;
  try {
    manifest = json::parse(manifest_text);
  } catch (const std::exception& e) {
    return DataLoss(StrCat(file, ": dataset 'manifest': not valid JSON: ", e.what()));
  }
  if (!manifest.is_array()) return DataLoss(StrCat(file, ": dataset 'manifest': expected a JSON list of names"));
  LR_ASSIGN_OR_RETURN(std::vector<checkpoint::DatasetEntry> entries, reader->List());
  std::set<std::string> present;
  for (const auto& e : entries) present.insert(e.name);
  std::set<std::string> listed;
  for (const auto& name : manifest) {
    if (!name.is_string()) return DataLoss(StrCat(file, ": dataset 'manifest': expected a JSON list of names"));
    listed.insert(name.get<std::string>());
    if (!present.count(name.get<std::string>())) {
      return DataLoss(StrCat(file, ": dataset '", name.get<std::string>(), "' is missing (listed in the manifest)"));
    }
  }
  for (const auto& name : present) {
    if (name != kManifestDataset && !listed.count(name)) {
      return DataLoss(StrCat(file, ": unexpected dataset '", name, "' (not in the manifest)"));
    }
  }
  std::vector<std::string> required = {kCountersDataset, kConfigDataset};
  for (const auto& blob : JsonBlobNames()) required.push_back("json/" + blob);
  for (const auto& name : required) {
    if (!present.count(name)) return DataLoss(StrCat(file, ": dataset '", name, "' is missing"));
  }

  TrainingState state;
  // Counters, from the checksummed dataset; the attributes must agree.
  LR_ASSIGN_OR_RETURN(std::string counters_text, reader->ReadText(kCountersDataset));
  try {
    json c = json::parse(counters_text);
    state.step = c.at("step").get<int64_t>();
    state.weights_version = c.at("weights_version").get<uint64_t>();
    state.consumed_prompts = c.at("consumed_prompts").get<int64_t>();
    state.consumed_samples = c.at("consumed_samples").get<int64_t>();
    state.next_reward_batch = c.at("next_reward_batch").get<uint64_t>();
    state.optimizer_step = c.at("optimizer_step").get<int64_t>();
    for (const auto& [key, value] : c.items()) {
      auto attr = reader->IntAttribute(key);
      if (attr.ok() && static_cast<uint64_t>(*attr) != value.get<uint64_t>()) {
        return DataLoss(StrCat(file, ": root attribute ", key, " = ", *attr, " disagrees with dataset 'counters' (",
                               value.dump(), ")"));
      }
    }
  } catch (const json::exception& e) {
    return DataLoss(StrCat(file, ": dataset 'counters': ", e.what()));
  }
  if (auto ws = reader->IntAttribute("world_size"); ws.ok()) state.world_size = *ws;
  if (auto git = reader->StringAttribute("git_commit"); git.ok()) state.git_commit = *git;
  LR_ASSIGN_OR_RETURN(state.config_yaml, reader->ReadText(kConfigDataset));
  for (const auto& blob : JsonBlobNames()) {
    LR_ASSIGN_OR_RETURN(std::string text, reader->ReadText("json/" + blob));
    json value;
    try {
      value = json::parse(text);
    } catch (const std::exception& e) {
      return DataLoss(StrCat(file, ": dataset 'json/", blob, "': not valid JSON: ", e.what()));
    }
    if (blob == "task_cursor") state.task_cursor = std::move(value);
    if (blob == "rng") state.rng = std::move(value);
    if (blob == "algorithm_state") state.algorithm_state = std::move(value);
    if (blob == "extra") state.extra = std::move(value);
  }

  if (tensors == TensorRead::kSkip) return state;
  LR_RETURN_IF_ERROR(ReadGroup(*reader, entries, kModelGroup, keep_tensors ? &state.model : nullptr));
  LR_RETURN_IF_ERROR(ReadGroup(*reader, entries, kOptimizerGroup, keep_tensors ? &state.optimizer : nullptr));
  LR_RETURN_IF_ERROR(ReadGroup(*reader, entries, kRngGroup, keep_tensors ? &state.rng_tensors : nullptr));
  model::NamedTensors extra;
  LR_RETURN_IF_ERROR(ReadGroup(*reader, entries, kExtraModelsGroup, keep_tensors ? &extra : nullptr));
  for (auto& [name, t] : extra) {
    const size_t slash = name.find('/');
    if (slash == std::string::npos) {
      return DataLoss(StrCat(file, ": dataset 'extra_models/", name, "': expected extra_models/<key>/<tensor>"));
    }
    state.extra_models[name.substr(0, slash)][name.substr(slash + 1)] = t;
  }
  if (keep_tensors && state.model.empty()) return DataLoss(StrCat(file, ": no model tensors (group 'model' is empty)"));
  return state;
}

// The state.h5 of a resolved path, after the completion-marker check where one applies.
StatusOr<std::string> CheckedStateFile(const std::string& resolved) {
  std::error_code ec;
  if (fs::is_directory(resolved, ec)) {
    LR_RETURN_IF_ERROR(checkpoint::CheckStepDirComplete(resolved));
    const std::string file = (fs::path(resolved) / kCheckpointFile).string();
    if (!fs::is_regular_file(file, ec)) return DataLoss(StrCat(resolved, ": no ", kCheckpointFile));
    return file;
  }
  const fs::path parent = fs::path(resolved).parent_path();
  if (fs::exists(parent / checkpoint::kCompleteMarker, ec)) {
    LR_RETURN_IF_ERROR(checkpoint::CheckStepDirComplete(parent.string()));
  }
  return resolved;
}

// A node as one line of flow YAML ("[0, 1]", "[{name: countdown}]"), whatever its style in the
// file (yaml-cpp's emitter keeps a loaded node's block style).
std::string FlowText(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  if (node.IsSequence()) {
    std::string out = "[";
    for (size_t i = 0; i < node.size(); ++i) out += (i ? ", " : "") + FlowText(node[i]);
    return out + "]";
  }
  if (node.IsMap()) {
    std::string out = "{";
    bool first = true;
    for (const auto& kv : node) {
      out += (first ? "" : ", ") + kv.first.as<std::string>() + ": " + FlowText(kv.second);
      first = false;
    }
    return out + "}";
  }
  return "null";
}

// One flattened config: dotted key -> scalar text (lists emitted whole, in flow style).
void Flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (node.IsMap()) {
    if (node.size() == 0 && !prefix.empty()) (*out)[prefix] = "{}";
    for (const auto& kv : node) {
      const std::string key = kv.first.as<std::string>();
      Flatten(kv.second, prefix.empty() ? key : prefix + "." + key, out);
    }
  } else if (node.IsSequence()) {
    (*out)[prefix] = FlowText(node);
  } else if (node.IsScalar()) {
    (*out)[prefix] = node.Scalar();
  } else if (!prefix.empty()) {
    (*out)[prefix] = "null";
  }
}

bool SameValue(const std::string& a, const std::string& b) {
  if (a == b) return true;
  auto number = [](const std::string& s, double* v) {
    if (s.empty()) return false;
    char* end = nullptr;
    *v = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
  };
  double x = 0, y = 0;
  return number(a, &x) && number(b, &y) && x == y;
}

bool IsStateShapingKey(const std::string& key) {
  if (key != "model" && !StartsWith(key, "model.")) return false;
  return key != "model.lightning_block_size" && key != "model.softmax_block_size";
}

}  // namespace

// ---- file I/O -------------------------------------------------------------------------------

Status WriteCheckpointFile(const std::string& path, const TrainingState& state) {
  if (state.step < 0) return InvalidArgument(StrCat("checkpoint: step must be >= 0, got ", state.step));
  // Refuse bad names and dtypes before anything is written.
  std::vector<std::pair<std::string, const model::NamedTensors*>> groups = {
      {kRngGroup, &state.rng_tensors}, {kModelGroup, &state.model}, {kOptimizerGroup, &state.optimizer}};
  for (const auto& [key, tensors] : state.extra_models) {
    if (key.empty() || key.find('/') != std::string::npos || key == "." || key == "..") {
      return InvalidArgument(StrCat("checkpoint: extra_models key '", key, "' must be non-empty without '/'"));
    }
    groups.emplace_back(StrCat(kExtraModelsGroup, key, "/"), &tensors);
  }
  for (const auto& [prefix, tensors] : groups) {
    for (const auto& [name, t] : *tensors) {
      const std::string what = StrCat("checkpoint tensor '", prefix, name, "'");
      LR_RETURN_IF_ERROR(CheckTensorName(name, what));
      if (!t.defined()) return InvalidArgument(what + ": undefined tensor");
      if (!FromTorchDtype(t.scalar_type())) {
        return InvalidArgument(StrCat(what, ": unsupported dtype ", t.scalar_type(), " (expected one of ", DTypeNames(), ")"));
      }
    }
  }
  LR_ASSIGN_OR_RETURN(auto writer, H5Writer::Create(path));
  json manifest = json::array();
  auto write_tensor = [&](const std::string& dataset, const torch::Tensor& tensor) -> Status {
    if (!tensor.defined()) return InvalidArgument(StrCat(path, ": dataset '", dataset, "': undefined tensor"));
    auto dtype = FromTorchDtype(tensor.scalar_type());
    if (!dtype) {
      return InvalidArgument(StrCat(path, ": dataset '", dataset, "': unsupported dtype ", tensor.scalar_type(),
                                    " (expected one of ", DTypeNames(), ")"));
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();  // no copy for CPU contiguous tensors
    LR_RETURN_IF_ERROR(writer->WriteTensor(dataset, *dtype, t.sizes().vec(), t.data_ptr()));
    manifest.push_back(dataset);
    return Status::Ok();
  };
  auto write_group = [&](const std::string& prefix, const model::NamedTensors& tensors) -> Status {
    for (const auto& [name, t] : tensors) LR_RETURN_IF_ERROR(write_tensor(prefix + name, t));
    return Status::Ok();
  };
  auto write_text = [&](const std::string& dataset, const std::string& text) -> Status {
    LR_RETURN_IF_ERROR(writer->WriteText(dataset, text));
    manifest.push_back(dataset);
    return Status::Ok();
  };

  // Header first (llm.c save_state order: magic/version, counters, then the bulk).
  LR_RETURN_IF_ERROR(writer->SetAttribute("lightrl_format", std::string(kFormatName)));
  LR_RETURN_IF_ERROR(writer->SetAttribute("format_version", kCheckpointFormatVersion));
  LR_RETURN_IF_ERROR(writer->SetAttribute("protocol_version", static_cast<int64_t>(protocol::kProtocolVersion)));
  LR_RETURN_IF_ERROR(writer->SetAttribute("world_size", state.world_size));
  LR_RETURN_IF_ERROR(writer->SetAttribute("git_commit", state.git_commit));
  LR_RETURN_IF_ERROR(writer->SetAttribute("created_utc", Utc()));
  const json counters = CountersJson(state);
  for (const auto& [key, value] : counters.items()) {
    LR_RETURN_IF_ERROR(writer->SetAttribute(key, static_cast<int64_t>(value.get<uint64_t>())));
  }
  LR_RETURN_IF_ERROR(write_text(kCountersDataset, counters.dump()));
  LR_RETURN_IF_ERROR(write_text(kConfigDataset, state.config_yaml));
  const std::vector<const json*> blobs = {&state.task_cursor, &state.rng, &state.algorithm_state, &state.extra};
  for (size_t i = 0; i < blobs.size(); ++i) {
    LR_RETURN_IF_ERROR(write_text("json/" + JsonBlobNames()[i], blobs[i]->dump()));
  }
  for (const auto& [prefix, tensors] : groups) LR_RETURN_IF_ERROR(write_group(prefix, *tensors));
  // The manifest goes last: a file without it is not a checkpoint.
  LR_RETURN_IF_ERROR(writer->WriteText(kManifestDataset, manifest.dump()));
  return writer->Close();
}

StatusOr<std::string> ResolveCheckpointPath(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  if (!fs::is_directory(path, ec)) return NotFound(StrCat(path, ": no such checkpoint"));
  const fs::path p(path);
  const std::string name = p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
  if (fs::exists(p / kCheckpointFile, ec) || fs::exists(p / checkpoint::kCompleteMarker, ec)) return path;
  if (fs::exists(p / checkpoint::kLatestPointer, ec)) return checkpoint::ReadLatestPointer(path);
  if (fs::exists(p / "checkpoints" / checkpoint::kLatestPointer, ec)) {
    return checkpoint::ReadLatestPointer((p / "checkpoints").string());
  }
  // A step directory that lost its files: report it as such (CheckStepDirComplete names it).
  if (StartsWith(name, "step_")) return path;
  return NotFound(StrCat(path, ": not a checkpoint (expected a step_<N> directory, its ", kCheckpointFile,
                         ", or a checkpoints/run directory with a `latest` pointer)"));
}

StatusOr<TrainingState> LoadCheckpoint(const std::string& path) {
  LR_ASSIGN_OR_RETURN(std::string resolved, ResolveCheckpointPath(path));
  LR_ASSIGN_OR_RETURN(std::string file, CheckedStateFile(resolved));
  return ReadCheckpointFile(file, TensorRead::kKeep);
}

Status ValidateCheckpoint(const std::string& path) {
  LR_ASSIGN_OR_RETURN(std::string resolved, ResolveCheckpointPath(path));
  LR_ASSIGN_OR_RETURN(std::string file, CheckedStateFile(resolved));
  return ReadCheckpointFile(file, TensorRead::kVerify).status();
}

// ---- CheckpointManager ----------------------------------------------------------------------

CheckpointManager::CheckpointManager(std::string run_dir, CheckpointConfig config)
    : dir_((fs::path(run_dir) / "checkpoints").string()), config_(config) {}

bool CheckpointManager::Due(int64_t step, int64_t total_steps) const {
  return (config_.save_every > 0 && step % config_.save_every == 0) || step == total_steps;
}

Status CheckpointManager::Save(const TrainingState& state) {
  auto log = Logger("trainer");
  const auto t0 = std::chrono::steady_clock::now();
  LR_ASSIGN_OR_RETURN(std::string tmp, checkpoint::BeginStepDir(dir_, state.step));
  const std::string file = (fs::path(tmp) / kCheckpointFile).string();
  Status s = WriteCheckpointFile(file, state);
  std::error_code ec;
  const auto bytes = s.ok() ? fs::file_size(file, ec) : 0;
  if (s.ok()) s = checkpoint::CommitStepDir(dir_, state.step, tmp);
  if (!s.ok()) {
    fs::remove_all(tmp, ec);  // best effort; a leftover .tmp is ignored and pruned later
    return s.WithContext(StrCat("saving checkpoint step ", state.step));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log->info("checkpoint: saved {} ({:.1f} MB) in {:.2f} s", (fs::path(dir_) / checkpoint::StepDirName(state.step)).string(),
            bytes / 1e6, seconds);
  LR_ASSIGN_OR_RETURN(std::vector<std::string> removed, checkpoint::PruneStepDirs(dir_, config_.keep_last));
  for (const auto& path : removed) log->info("checkpoint: removed {} (keep_last = {})", path, config_.keep_last);
  return Status::Ok();
}

StatusOr<std::optional<TrainingState>> CheckpointManager::Resume(const std::string& mode) {
  auto log = Logger("trainer");
  skipped_.clear();
  if (mode.empty() || mode == "none") return std::optional<TrainingState>();
  if (mode != "auto") {
    auto state = LoadCheckpoint(mode);
    if (!state.ok()) return state.status().WithContext(StrCat("--resume ", mode));
    log->info("checkpoint: resuming from {} (step {})", mode, state->step);
    return std::optional<TrainingState>(std::move(state).value());
  }
  std::error_code ec;
  if (fs::is_directory(dir_, ec)) {
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
        log->warn("checkpoint: ignoring {} (never committed: a save was interrupted)", entry.path().string());
      }
    }
  }
  LR_ASSIGN_OR_RETURN(std::vector<checkpoint::StepDir> dirs, checkpoint::ListStepDirs(dir_));
  if (dirs.empty()) {
    log->info("checkpoint: none under {}; starting from scratch", dir_);
    return std::optional<TrainingState>();
  }
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    auto state = LoadCheckpoint(it->path);
    if (state.ok()) {
      log->info("checkpoint: resuming from {} (step {})", it->path, state->step);
      return std::optional<TrainingState>(std::move(state).value());
    }
    skipped_.push_back(StrCat(it->path, ": ", state.status().ToString()));
    log->warn("checkpoint: skipping {}: {}", it->path, state.status().ToString());
  }
  std::string list;
  for (const auto& s : skipped_) list += "\n  " + s;
  return DataLoss(StrCat("--resume auto: no valid checkpoint under ", dir_, "; skipped:", list, "\n", kResumeHint));
}

StatusOr<std::string> CheckpointManager::LatestValid() {
  skipped_.clear();
  LR_ASSIGN_OR_RETURN(std::vector<checkpoint::StepDir> dirs, checkpoint::ListStepDirs(dir_));
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    Status s = ValidateCheckpoint(it->path);
    if (s.ok()) return it->path;
    skipped_.push_back(StrCat(it->path, ": ", s.ToString()));
  }
  return NotFound(StrCat("no valid checkpoint under ", dir_));
}

// ---- config drift ---------------------------------------------------------------------------

StatusOr<std::vector<std::string>> CheckConfigDrift(const YAML::Node& saved, const YAML::Node& current) {
  std::map<std::string, std::string> a, b;
  Flatten(saved, "", &a);
  Flatten(current, "", &b);
  std::set<std::string> keys;
  for (const auto& [k, v] : a) keys.insert(k);
  for (const auto& [k, v] : b) keys.insert(k);
  std::vector<std::string> drift, refused;
  for (const auto& key : keys) {
    auto ia = a.find(key), ib = b.find(key);
    const std::string va = ia == a.end() ? "<absent>" : ia->second;
    const std::string vb = ib == b.end() ? "<absent>" : ib->second;
    if (ia != a.end() && ib != b.end() && SameValue(va, vb)) continue;
    std::string line = StrCat(key, ": ", va, " -> ", vb);
    if (IsStateShapingKey(key)) refused.push_back(line);
    drift.push_back(std::move(line));
  }
  if (!refused.empty()) {
    std::string list;
    for (const auto& r : refused) list += "\n  " + r;
    return FailedPrecondition(StrCat(
        "config drift on resume: the `model` block differs from the checkpoint's, so the saved parameter and "
        "optimizer state does not fit:",
        list,
        "\nHINT: resume with the checkpoint's model block (`lightrl ckpt-info CKPT` prints its config) or start a "
        "new run with --resume none"));
  }
  return drift;
}

StatusOr<std::vector<std::string>> CheckConfigDrift(const std::string& saved_yaml, const YAML::Node& current) {
  LR_ASSIGN_OR_RETURN(YAML::Node saved, LoadConfigString(saved_yaml, "<checkpoint config_yaml>"));
  return CheckConfigDrift(saved, current);
}

// ---- bridges --------------------------------------------------------------------------------

model::NamedTensors ExportParameters(torch::nn::Module& module) {
  model::NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out[item.key()] = item.value().detach();
  return out;
}

Status LoadParameters(torch::nn::Module& module, const model::NamedTensors& tensors, const std::string& what) {
  auto params = module.named_parameters(/*recurse=*/true);
  for (const auto& item : params) {
    auto it = tensors.find(item.key());
    if (it == tensors.end()) return InvalidArgument(StrCat(what, ": tensor '", item.key(), "' missing"));
    if (it->second.sizes() != item.value().sizes()) {
      return InvalidArgument(StrCat(what, ": tensor '", item.key(), "' has shape ", it->second.sizes(),
                                    ", the model expects ", item.value().sizes()));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!params.contains(name)) return InvalidArgument(StrCat(what, ": unexpected tensor '", name, "' (not a parameter)"));
  }
  torch::NoGradGuard no_grad;
  for (auto& item : params) item.value().copy_(tensors.at(item.key()));
  return Status::Ok();
}

model::NamedTensors CaptureTorchRng() {
  model::NamedTensors out;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out["torch_cpu"] = gen.get_state();
  }
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      at::Generator gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      out["torch_cuda_" + std::to_string(i)] = gen.get_state();
    }
  }
  return out;
}

Status RestoreTorchRng(const model::NamedTensors& states) {
  for (const auto& [name, state] : states) {
    if (state.scalar_type() != torch::kUInt8 || state.dim() != 1) {
      return InvalidArgument(StrCat("rng state '", name, "': expected a 1-d uint8 tensor"));
    }
    try {
      if (name == "torch_cpu") {
        at::Generator gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(state);
      } else if (StartsWith(name, "torch_cuda_")) {
        const int64_t index = std::stoll(name.substr(11));
        if (!torch::cuda::is_available() || index >= static_cast<int64_t>(torch::cuda::device_count())) {
          return FailedPrecondition(StrCat("rng state '", name, "': this process has no such GPU"));
        }
        at::Generator gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index)));
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(state);
      } else {
        return InvalidArgument(StrCat("rng state '", name, "': unknown generator (expected torch_cpu, torch_cuda_<i>)"));
      }
    } catch (const std::exception& e) {
      return InvalidArgument(StrCat("rng state '", name, "': ", e.what()));
    }
  }
  return Status::Ok();
}

TrainingState CaptureTrainingState(Trainer& trainer, const TrainConfig& config) {
  TrainingState s;
  s.step = trainer.step();
  s.weights_version = trainer.weights_version();
  s.consumed_prompts = trainer.consumed_prompts();
  s.consumed_samples = trainer.consumed_samples();
  PolicyTrainer& policy = trainer.policy();
  s.model = ExportParameters(*policy.model());
  s.optimizer = policy.optimizer().ExportState();
  s.optimizer_step = policy.optimizer().step();
  s.rng_tensors = CaptureTorchRng();
  s.config_yaml = ConfigToYaml(config.raw);
  return s;
}

Status RestoreTrainingState(const TrainingState& state, Trainer& trainer) {
  PolicyTrainer& policy = trainer.policy();
  LR_RETURN_IF_ERROR(LoadParameters(*policy.model(), state.model, "checkpoint model"));
  LR_RETURN_IF_ERROR(policy.optimizer().ImportState(state.optimizer, state.optimizer_step));
  LR_RETURN_IF_ERROR(RestoreTorchRng(state.rng_tensors));
  trainer.SetCounters(state.step, state.weights_version, state.consumed_prompts, state.consumed_samples);
  return Status::Ok();
}

// ---- inspection and export ------------------------------------------------------------------

StatusOr<CheckpointInfo> InspectCheckpoint(const std::string& path) {
  CheckpointInfo info;
  LR_ASSIGN_OR_RETURN(info.path, ResolveCheckpointPath(path));
  auto file = CheckedStateFile(info.path);
  std::string h5 = info.path;
  if (!file.ok()) {
    info.problems.push_back(file.status().ToString());
    std::error_code ec;
    if (fs::is_directory(info.path, ec)) h5 = (fs::path(info.path) / kCheckpointFile).string();
  } else {
    h5 = *file;
  }
  auto reader = H5Reader::Open(h5);
  if (!reader.ok()) {
    info.problems.push_back(reader.status().ToString());
    return info;
  }
  if (auto attrs = (*reader)->Attributes(); attrs.ok()) info.attributes = *attrs;
  auto entries = (*reader)->List();
  if (entries.ok()) {
    info.datasets = *entries;
  } else {
    info.problems.push_back(entries.status().ToString());
  }
  if (auto t = (*reader)->ReadText(kCountersDataset); t.ok()) info.counters_json = *t;
  if (auto t = (*reader)->ReadText(kConfigDataset); t.ok()) info.config_yaml = *t;
  for (const auto& blob : JsonBlobNames()) {
    if (auto t = (*reader)->ReadText("json/" + blob); t.ok()) info.json_blobs[blob] = *t;
  }
  for (const auto& p : (*reader)->Verify()) info.problems.push_back(p);
  reader = StatusOr<std::unique_ptr<H5Reader>>(Internal("closed"));
  if (info.problems.empty()) {
    // Header, manifest and counters checks (the per-dataset checksums passed above).
    Status s = ReadCheckpointFile(h5, TensorRead::kSkip).status();
    if (!s.ok()) info.problems.push_back(s.ToString());
  }
  return info;
}

std::string FormatCheckpointInfo(const CheckpointInfo& info, bool with_tensors) {
  std::string out = StrCat("checkpoint: ", info.path, "\n");
  out += StrCat("valid: ", info.valid() ? "yes" : "NO", "\n");
  for (const auto& p : info.problems) out += "  problem: " + p + "\n";
  out += "attributes:\n";
  for (const auto& [k, v] : info.attributes) out += StrCat("  ", k, ": ", v, "\n");
  if (!info.counters_json.empty()) out += "counters: " + info.counters_json + "\n";
  for (const auto& [k, v] : info.json_blobs) out += StrCat(k, ": ", v, "\n");
  // Per-group totals, then (optionally) every tensor.
  std::map<std::string, std::pair<int64_t, int64_t>> groups;  // group -> (tensors, elements)
  for (const auto& d : info.datasets) {
    if (d.is_text) continue;
    std::string group = d.name.substr(0, d.name.find('/'));
    if (group == "optimizer" || group == "extra_models") {
      size_t second = d.name.find('/', group.size() + 1);
      group = d.name.substr(0, second);
    }
    groups[group].first += 1;
    groups[group].second += d.info.numel();
  }
  out += "tensor groups:\n";
  for (const auto& [g, n] : groups) out += StrCat("  ", g, ": ", n.first, " tensors, ", n.second, " elements\n");
  if (with_tensors) {
    out += "tensors:\n";
    for (const auto& d : info.datasets) {
      if (d.is_text) continue;
      out += StrCat("  ", d.name, "  ", DTypeName(d.info.dtype), " ", checkpoint::ShapeString(d.info.shape), "\n");
    }
  }
  out += "config:\n" + info.config_yaml;
  if (!info.config_yaml.empty() && info.config_yaml.back() != '\n') out += "\n";
  return out;
}

Status ExportCheckpoint(const std::string& checkpoint, const std::string& out_dir, torch::Dtype dtype,
                        int64_t max_shard_bytes) {
  LR_ASSIGN_OR_RETURN(TrainingState state, LoadCheckpoint(checkpoint));
  LR_ASSIGN_OR_RETURN(YAML::Node config, LoadConfigString(state.config_yaml, checkpoint + ": config_yaml"));
  if (!config["model"].IsMap()) {
    return FailedPrecondition(StrCat(checkpoint, ": the saved config has no `model` block; cannot build the model"));
  }
  LR_ASSIGN_OR_RETURN(model::ModelConfig model_config, model::ParseModelConfigNode(config["model"], "model"));
  torch::NoGradGuard no_grad;
  model::HybridModel model(model_config);
  LR_RETURN_IF_ERROR(LoadParameters(*model, state.model, checkpoint + ": model"));
  return model::SaveModelDirectory(model, out_dir, dtype, max_shard_bytes);
}

// ---- stop signals ---------------------------------------------------------------------------

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }
}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

bool StopRequested() { return g_stop_signal != 0; }
int StopSignal() { return static_cast<int>(g_stop_signal); }
void ClearStopRequest() { g_stop_signal = 0; }

bool AnyRankStopRequested(Collective& collective) {
  return collective.AllReduceMax({StopRequested() ? 1.0 : 0.0}).at(0) > 0.0;
}

}  // namespace lightrl::trainer
