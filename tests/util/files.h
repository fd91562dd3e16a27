// File helpers shared by tests: a self-deleting temporary directory and in-place byte corruption.
// Header-only, no lightrl dependencies.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace lightrl::testing {

// A fresh directory under the temp dir (mkdtemp), removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "lightrl_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// XORs the byte at `offset` of `file` with `mask`, in place (corruption tests).
inline void XorByte(const std::string& file, int64_t offset, unsigned char mask) {
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(offset);
  char c = 0;
  io.read(&c, 1);
  c = static_cast<char>(c ^ static_cast<char>(mask));
  io.seekp(offset);
  io.write(&c, 1);
}

}  // namespace lightrl::testing
