#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/check.h"

namespace lightrl::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DtypeInfo {
  const char* name;
  torch::Dtype dtype;
  int64_t size;
};

const std::vector<DtypeInfo>& Dtypes() {
  static const std::vector<DtypeInfo> table = {
      {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
      {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
      {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
      {"BOOL", torch::kBool, 1},
  };
  return table;
}

const DtypeInfo* FindDtype(const std::string& name) {
  for (const auto& d : Dtypes())
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* FindDtype(torch::Dtype dtype) {
  for (const auto& d : Dtypes())
    if (dtype == d.dtype) return &d;
  return nullptr;
}

std::string Shape(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Writes `bytes` to `path` atomically: tmp file in the same directory, fsync, rename.
Status WriteFileAtomic(const std::string& path, const std::vector<std::pair<const char*, size_t>>& pieces) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Unavailable(StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  for (const auto& [data, size] : pieces) {
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::write(fd, data + done, size - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::string err = std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        return Unavailable(StrCat(tmp, ": write failed: ", err));
      }
      done += static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return Unavailable(StrCat(tmp, ": fsync/close failed: ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Unavailable(StrCat(path, ": rename failed: ", std::strerror(errno)));
  }
  return Status::Ok();
}

Status WriteTextAtomic(const std::string& path, const std::string& text) {
  return WriteFileAtomic(path, {{text.data(), text.size()}});
}

}  // namespace

StatusOr<NamedTensors> ReadSafetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(StrCat(path, ": cannot open safetensors file"));
  in.seekg(0, std::ios::end);
  const int64_t file_size = in.tellg();
  in.seekg(0);
  if (file_size < 8) return DataLoss(StrCat(path, ": truncated: ", file_size, " bytes, no header length"));
  uint64_t header_len = 0;
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > static_cast<uint64_t>(file_size - 8) || header_len > (100u << 20)) {
    return DataLoss(StrCat(path, ": header length ", header_len, " exceeds the file (", file_size, " bytes)"));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  json j = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLoss(StrCat(path, ": header is not a JSON object"));
  const int64_t data_start = 8 + static_cast<int64_t>(header_len);
  const int64_t data_size = file_size - data_start;

  NamedTensors out;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (metadata && e.is_object()) {
        for (auto m = e.begin(); m != e.end(); ++m)
          if (m.value().is_string()) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto field_error = [&](const std::string& what) {
      return DataLoss(StrCat(path, ": tensor '", name, "': ", what));
    };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      return field_error("expected an object with dtype, shape and data_offsets");
    if (!e["dtype"].is_string()) return field_error("dtype must be a string");
    const DtypeInfo* dt = FindDtype(e["dtype"].get<std::string>());
    if (!dt) return field_error(StrCat("unsupported dtype '", e["dtype"].get<std::string>(), "'"));
    std::vector<int64_t> shape;
    if (!e["shape"].is_array()) return field_error("shape must be an array of integers");
    int64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) return field_error("shape must hold non-negative integers");
      shape.push_back(d.get<int64_t>());
      numel *= shape.back();
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_integer() || !off[1].is_number_integer())
      return field_error("data_offsets must be [begin, end]");
    const int64_t begin = off[0].get<int64_t>(), end = off[1].get<int64_t>();
    if (begin < 0 || end < begin) return field_error(StrCat("bad data_offsets [", begin, ", ", end, "]"));
    if (end - begin != numel * dt->size) {
      return field_error(StrCat("data_offsets span ", end - begin, " bytes but ", e["dtype"].get<std::string>(),
                                " ", Shape(shape), " needs ", numel * dt->size));
    }
    if (end > data_size) {
      return field_error(StrCat("data [", begin, ", ", end, ") runs past the end of the file (", data_size,
                                " data bytes): truncated file?"));
    }
    ranges.emplace_back(begin, end);
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dt->dtype));
    in.seekg(data_start + begin);
    in.read(static_cast<char*>(t.data_ptr()), end - begin);
    if (!in) return field_error("read failed (truncated file?)");
    out[name] = t;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return DataLoss(StrCat(path, ": tensor data ranges overlap"));
  }
  return out;
}

Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> payload;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const DtypeInfo* dt = FindDtype(tensor.scalar_type());
    if (!dt) return InvalidArgument(StrCat(path, ": tensor '", name, "': unsupported dtype ", tensor.scalar_type()));
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const int64_t bytes = t.numel() * dt->size;
    header[name] = {{"dtype", dt->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    payload.push_back(t);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // align data to 8 bytes (as the reference does)
  unsigned char len_bytes[8];
  uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((len >> (8 * i)) & 0xff);
  std::vector<std::pair<const char*, size_t>> pieces = {{reinterpret_cast<const char*>(len_bytes), 8},
                                                        {text.data(), text.size()}};
  for (const auto& t : payload)
    pieces.emplace_back(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel() * t.element_size()));
  return WriteFileAtomic(path, pieces);
}

Status SaveModelDirectory(HybridModel& model, const std::string& dir, torch::Dtype dtype, int64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Unavailable(StrCat(dir, ": cannot create directory: ", ec.message()));
  std::vector<NamedTensors> shards(1);
  int64_t current = 0;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    torch::Tensor t = item.value().detach();
    if (t.is_floating_point()) t = t.to(dtype);
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (max_shard_bytes > 0 && current > 0 && current + bytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back()[item.key()] = t;
    current += bytes;
  }
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"producer", "lightrl"}};
  if (shards.size() == 1) {
    LR_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "model.safetensors").string(), shards[0], meta));
  } else {
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      LR_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / name).string(), shards[i], meta));
      for (const auto& [tname, t] : shards[i]) weight_map[tname] = name;
    }
    json index = {{"metadata", json::object()}, {"weight_map", weight_map}};
    LR_RETURN_IF_ERROR(WriteTextAtomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2)));
  }
  return WriteTextAtomic((fs::path(dir) / "config.json").string(), ModelConfigToJson(model->config()));
}

namespace {

// Collects all tensors of a directory or file.
StatusOr<NamedTensors> ReadAllWeights(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  if (fs::is_regular_file(p)) return ReadSafetensors(p.string());
  if (!fs::is_directory(p)) return NotFound(StrCat(dir_or_file, ": no such model directory or file"));
  if (fs::exists(p / "model.safetensors")) return ReadSafetensors((p / "model.safetensors").string());
  fs::path index_path = p / "model.safetensors.index.json";
  if (!fs::exists(index_path)) {
    return NotFound(StrCat(dir_or_file, ": neither model.safetensors nor model.safetensors.index.json found"));
  }
  std::ifstream in(index_path);
  json index = json::parse(in, nullptr, false);
  if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return DataLoss(StrCat(index_path.string(), ": expected a JSON object with a weight_map object"));
  }
  std::set<std::string> files;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string()) return DataLoss(StrCat(index_path.string(), ": weight_map['", it.key(), "'] must be a file name"));
    files.insert(it.value().get<std::string>());
  }
  NamedTensors all;
  for (const auto& f : files) {
    LR_ASSIGN_OR_RETURN(NamedTensors part, ReadSafetensors((p / f).string()));
    for (auto& [name, t] : part) {
      auto wm = index["weight_map"].find(name);
      if (wm == index["weight_map"].end() || wm->get<std::string>() != f) {
        return DataLoss(StrCat((p / f).string(), ": tensor '", name, "' is not mapped to this file in the index"));
      }
      all[name] = t;
    }
  }
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!all.count(it.key())) return DataLoss(StrCat(index_path.string(), ": tensor '", it.key(), "' listed but not found in ", it.value().get<std::string>()));
  }
  return all;
}

}  // namespace

Status LoadModelWeights(HybridModel& model, const std::string& dir_or_file,
                        const std::vector<std::string>& allow_missing) {
  LR_ASSIGN_OR_RETURN(NamedTensors weights, ReadAllWeights(dir_or_file));
  auto params = model->named_parameters(/*recurse=*/true);
  // Validate everything before touching the model: nothing is half-loaded.
  for (const auto& item : params) {
    auto it = weights.find(item.key());
    if (it == weights.end()) {
      bool ok = false;
      for (const auto& prefix : allow_missing) ok |= item.key().rfind(prefix, 0) == 0;
      if (ok) continue;
      return InvalidArgument(StrCat(dir_or_file, ": missing tensor '", item.key(), "' (expected shape ",
                                    Shape(item.value().sizes().vec()), ")"));
    }
    if (it->second.sizes() != item.value().sizes()) {
      return InvalidArgument(StrCat(dir_or_file, ": tensor '", item.key(), "' has shape ",
                                    Shape(it->second.sizes().vec()), ", model expects ",
                                    Shape(item.value().sizes().vec())));
    }
    if (!it->second.is_floating_point()) {
      return InvalidArgument(StrCat(dir_or_file, ": tensor '", item.key(), "' has non-float dtype ", it->second.scalar_type()));
    }
  }
  for (const auto& [name, t] : weights) {
    if (!params.contains(name)) return InvalidArgument(StrCat(dir_or_file, ": unexpected tensor '", name, "' (not a parameter of this model)"));
  }
  torch::NoGradGuard no_grad;
  for (auto& item : params) {
    auto it = weights.find(item.key());
    if (it != weights.end()) item.value().copy_(it->second.to(item.value().scalar_type()));
  }
  return Status::Ok();
}

StatusOr<HybridModel> LoadModelDirectory(const std::string& dir) {
  LR_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig((fs::path(dir) / "config.json").string()));
  HybridModel model(config);
  LR_RETURN_IF_ERROR(LoadModelWeights(model, dir));
  return model;
}

}  // namespace lightrl::model
