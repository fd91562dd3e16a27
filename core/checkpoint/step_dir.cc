// Atomic checkpoint directories (see step_dir.h for the layout and the commit sequence).
#include "core/checkpoint/step_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "core/check.h"

namespace lightrl::checkpoint {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kMarkerFormat = "lightrl-step-dir";
constexpr const char* kTmpSuffix = ".tmp";

// Parses "step_<N>" (exactly: digits only after the prefix); -1 otherwise.
int64_t ParseStepName(const std::string& name) {
  const std::string prefix = "step_";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    if (step > (INT64_MAX - 9) / 10) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Status RemoveAll(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) return Unavailable(StrCat(p.string(), ": cannot remove: ", ec.message()));
  return Status::Ok();
}

Status RenamePath(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Unavailable(StrCat("rename ", from.string(), " -> ", to.string(), ": ", std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace

std::string StepDirName(int64_t step) { return "step_" + std::to_string(step); }

Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Unavailable(StrCat(path, ": cannot open for fsync: ", std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems refuse fsync on directories (EINVAL); that is not a data-loss risk we can act on.
  if (rc != 0 && err != EINVAL) return Unavailable(StrCat(path, ": fsync failed: ", std::strerror(err)));
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + kTmpSuffix;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Unavailable(StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return Unavailable(StrCat(tmp, ": write failed: ", err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return Unavailable(StrCat(tmp, ": fsync failed: ", err));
  }
  ::close(fd);
  LR_RETURN_IF_ERROR(RenamePath(tmp, path));
  fs::path parent = fs::path(path).parent_path();
  return FsyncPath(parent.empty() ? "." : parent.string());
}

StatusOr<std::vector<StepDir>> ListStepDirs(const std::string& root) {
  std::vector<StepDir> out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  fs::directory_iterator it(root, ec);
  if (ec) return Unavailable(StrCat(root, ": cannot list: ", ec.message()));
  for (const auto& entry : it) {
    if (!entry.is_directory(ec)) continue;
    const int64_t step = ParseStepName(entry.path().filename().string());
    if (step >= 0) out.push_back({step, entry.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const StepDir& a, const StepDir& b) { return a.step < b.step; });
  return out;
}

StatusOr<std::string> BeginStepDir(const std::string& root, int64_t step) {
  if (step < 0) return InvalidArgument(StrCat("checkpoint step must be >= 0, got ", step));
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return Unavailable(StrCat(root, ": cannot create checkpoint directory: ", ec.message()));
  const fs::path tmp = fs::path(root) / (StepDirName(step) + kTmpSuffix);
  LR_RETURN_IF_ERROR(RemoveAll(tmp));
  fs::create_directory(tmp, ec);
  if (ec) return Unavailable(StrCat(tmp.string(), ": cannot create: ", ec.message()));
  return tmp.string();
}

Status CommitStepDir(const std::string& root, int64_t step, const std::string& tmp_dir) {
  std::error_code ec;
  json files = json::object();
  for (const auto& entry : fs::directory_iterator(tmp_dir, ec)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (name == kCompleteMarker) continue;
    LR_RETURN_IF_ERROR(FsyncPath(entry.path().string()));
    files[name] = static_cast<int64_t>(entry.file_size());
  }
  if (ec) return Unavailable(StrCat(tmp_dir, ": cannot list: ", ec.message()));
  json marker = {{"format", kMarkerFormat}, {"step", step}, {"files", files}};
  LR_RETURN_IF_ERROR(WriteFileAtomic((fs::path(tmp_dir) / kCompleteMarker).string(), marker.dump(2) + "\n"));
  LR_RETURN_IF_ERROR(FsyncPath(tmp_dir));

  const fs::path final_dir = fs::path(root) / StepDirName(step);
  if (fs::exists(final_dir, ec)) {
    // A re-save of the same step: move the old one aside first (rename cannot replace a
    // non-empty directory). A crash here leaves only *.tmp directories, which readers ignore.
    const fs::path old = fs::path(root) / (StepDirName(step) + ".old" + kTmpSuffix);
    LR_RETURN_IF_ERROR(RemoveAll(old));
    LR_RETURN_IF_ERROR(RenamePath(final_dir, old));
    LR_RETURN_IF_ERROR(RenamePath(tmp_dir, final_dir));
    LR_RETURN_IF_ERROR(RemoveAll(old));
  } else {
    LR_RETURN_IF_ERROR(RenamePath(tmp_dir, final_dir));
  }
  LR_RETURN_IF_ERROR(FsyncPath(root));
  return WriteFileAtomic((fs::path(root) / kLatestPointer).string(), StepDirName(step) + "\n");
}

Status CheckStepDirComplete(const std::string& dir) {
  const fs::path marker_path = fs::path(dir) / kCompleteMarker;
  std::ifstream in(marker_path);
  if (!in) {
    return DataLoss(StrCat(dir, ": no ", kCompleteMarker, " marker: the checkpoint was never committed (partial write)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  json marker;
  try {
    marker = json::parse(text.str());
  } catch (const std::exception& e) {
    return DataLoss(StrCat(marker_path.string(), ": not valid JSON: ", e.what()));
  }
  if (!marker.is_object() || marker.value("format", "") != kMarkerFormat || !marker.contains("step") ||
      !marker["step"].is_number_integer() || !marker.contains("files") || !marker["files"].is_object()) {
    return DataLoss(StrCat(marker_path.string(), ": expected {\"format\": \"", kMarkerFormat,
                           "\", \"step\": N, \"files\": {name: bytes}}"));
  }
  const int64_t dir_step = ParseStepName(fs::path(dir).filename().string());
  if (dir_step >= 0 && marker["step"].get<int64_t>() != dir_step) {
    return DataLoss(StrCat(marker_path.string(), ": marker says step ", marker["step"].get<int64_t>(),
                           " but the directory is ", StepDirName(dir_step)));
  }
  for (const auto& [name, bytes] : marker["files"].items()) {
    const fs::path file = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) return DataLoss(StrCat(file.string(), ": missing (listed in ", kCompleteMarker, ")"));
    const auto size = static_cast<int64_t>(fs::file_size(file, ec));
    if (ec || !bytes.is_number_integer() || size != bytes.get<int64_t>()) {
      return DataLoss(StrCat(file.string(), ": has ", size, " bytes, ", kCompleteMarker, " recorded ", bytes.dump(),
                             " (truncated or modified)"));
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> PruneStepDirs(const std::string& root, int64_t keep_last) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::exists(root, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && EndsWith(name, kTmpSuffix) && name.compare(0, 5, "step_") == 0) {
      LR_RETURN_IF_ERROR(RemoveAll(entry.path()));
      removed.push_back(entry.path().string());
    }
  }
  if (keep_last <= 0) return removed;
  LR_ASSIGN_OR_RETURN(std::vector<StepDir> dirs, ListStepDirs(root));
  const int64_t excess = static_cast<int64_t>(dirs.size()) - keep_last;
  for (int64_t i = 0; i < excess; ++i) {
    LR_RETURN_IF_ERROR(RemoveAll(dirs[static_cast<size_t>(i)].path));
    removed.push_back(dirs[static_cast<size_t>(i)].path);
  }
  if (!removed.empty()) LR_RETURN_IF_ERROR(FsyncPath(root));
  return removed;
}

StatusOr<std::string> ReadLatestPointer(const std::string& root) {
  const fs::path pointer = fs::path(root) / kLatestPointer;
  std::ifstream in(pointer);
  if (!in) return NotFound(StrCat(pointer.string(), ": no latest pointer"));
  std::string name;
  std::getline(in, name);
  if (ParseStepName(name) < 0) {
    return DataLoss(StrCat(pointer.string(), ": expected \"step_<N>\", got \"", name, "\""));
  }
  return (fs::path(root) / name).string();
}

}  // namespace lightrl::checkpoint
