// HDF5 files of named tensors and text with a checksum per dataset: the storage layer of lightrl
// checkpoints (trainer/checkpoint.h), shared by every role and free of libtorch (tensors are raw
// little-endian buffers described by a DType and a shape, core/protocol/dtype.h).
//
// What a file written here looks like (readable with h5py / h5dump, no lightrl needed):
//
//   /<group>/<name>     one dataset per tensor, contiguous, standard little-endian HDF5 type:
//                       float32 -> IEEE F32LE, float64 -> F64LE, int64/32/16/8 -> STD I*LE,
//                       uint8 and bool -> STD U8LE, bfloat16 and float16 -> STD U16LE (bit
//                       patterns). A 0-d tensor is a scalar dataspace; dims may be 0.
//     @lightrl_dtype    string: the DTypeName (the real type, e.g. "bfloat16" for a U16 set)
//     @crc32            uint32: zlib crc32 of the dataset's little-endian bytes
//   /<name>             text (JSON, YAML): its bytes as a 1-d uint8 dataset with
//     @lightrl_dtype = "text" and @crc32 (h5py: f[name][()].tobytes().decode()).
//   / attributes        int64 scalars or fixed-length NUL-padded UTF-8 strings (SetAttribute).
//
// No variable-length types are written: they live in HDF5's global heap, which carries no
// checksum, and a corrupt global heap can make HDF5 1.10 loop forever. Files use the HDF5 1.8
// format (superblock v2, object header v2), whose metadata is checksummed by HDF5 itself, so a
// flipped bit anywhere in the file is either rejected or lands in unused bytes (tested).
//
// Names may contain '/' (intermediate groups are created) and any other character, including
// '.', so parameter names such as "model.layers.3.mlp.w1.weight" are used unchanged.
//
// Checksums: every read (ReadTensor / ReadText / Verify) recomputes the crc32 and returns
// DATA_LOSS naming the file and the dataset on a mismatch, so a bit flip anywhere in a dataset's
// data is detected. A truncated file fails to open (HDF5 checks the stored end-of-file) or fails
// the read of the dataset that lies past the end; both are reported with the file name.
//
// File locking: HDF5 >= 1.10.7 locks files (flock) while open; lightrl disables it per file
// (H5Pset_file_locking(fapl, false, ...)) so a reader (ckpt-info, a test) never blocks or fails
// on a writer's lock. Writers must Close() before the file is renamed into place.
//
// Thread-safety: none. The Debian libhdf5 is not built thread-safe; use HDF5 from one thread at
// a time (checkpoints are written by one thread of trainer rank 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/protocol/dtype.h"
#include "core/status.h"

namespace lightrl::checkpoint {

// zlib crc32 of `size` bytes (continuing from `crc`; pass 0 to start). Handles buffers > 4 GiB.
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

// Element type, shape and size of a stored tensor dataset.
struct TensorInfo {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // [] for a 0-d tensor
  int64_t numel() const;
  size_t bytes() const;        // numel * DTypeSize(dtype)
};

// A tensor read into memory (owned bytes, little-endian, row-major).
struct TensorData {
  TensorInfo info;
  std::vector<uint8_t> bytes;  // info.bytes() bytes
};

// Kind of a dataset as stored: a tensor of some DType, or text.
struct DatasetEntry {
  std::string name;  // full path without the leading '/', e.g. "model/lm_head.weight"
  bool is_text = false;
  TensorInfo info;   // tensors only
};

// "[2, 3]" (shapes in messages and ckpt-info).
std::string ShapeString(const std::vector<int64_t>& shape);

// Creates (truncates) an HDF5 file and writes datasets and root attributes into it.
// Each Write* call is complete on return (the dataset is closed); Close() flushes, closes and
// fsyncs the file. A writer destroyed without Close() closes the file without fsync (the caller
// treats that file as garbage: it is never renamed into place).
class H5Writer {
 public:
  // REQUIRES: the parent directory exists. Fails (naming the path) if the file cannot be created.
  static StatusOr<std::unique_ptr<H5Writer>> Create(const std::string& path);
  ~H5Writer();
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  // Writes a tensor dataset of `dtype` and `shape` from `data` (numel * DTypeSize bytes,
  // little-endian, row-major; may be null when numel == 0). Fails if `name` exists.
  Status WriteTensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                     const void* data);
  // Writes a text dataset (any bytes).
  Status WriteText(const std::string& name, const std::string& text);
  // Root attributes (overwrite an existing attribute of the same name).
  Status SetAttribute(const std::string& name, int64_t value);
  Status SetAttribute(const std::string& name, const std::string& value);

  // Flushes and closes the file, then fsyncs it. The writer is unusable afterwards.
  Status Close();
  const std::string& path() const { return path_; }

 private:
  H5Writer(std::string path, int64_t file);
  std::string path_;
  int64_t file_ = -1;  // hid_t
};

// Opens an HDF5 file read-only.
class H5Reader {
 public:
  static StatusOr<std::unique_ptr<H5Reader>> Open(const std::string& path);
  ~H5Reader();
  H5Reader(const H5Reader&) = delete;
  H5Reader& operator=(const H5Reader&) = delete;

  // Every dataset in the file, sorted by name (tensors and text).
  StatusOr<std::vector<DatasetEntry>> List() const;
  bool Has(const std::string& name) const;

  // Dtype and shape of a tensor dataset, from its dataspace and @lightrl_dtype (checked
  // against the stored HDF5 type). Errors name the file and the dataset.
  StatusOr<TensorInfo> Info(const std::string& name) const;
  // Reads a tensor dataset into `dst` (exactly info.bytes() bytes, as returned by Info) and
  // checks its crc32 (DATA_LOSS on mismatch).
  Status ReadTensorInto(const std::string& name, const TensorInfo& info, void* dst) const;
  StatusOr<TensorData> ReadTensor(const std::string& name) const;
  // Reads a text dataset and checks its crc32.
  StatusOr<std::string> ReadText(const std::string& name) const;

  // Root attributes. NOT_FOUND if absent; INVALID_ARGUMENT if of the other kind.
  StatusOr<int64_t> IntAttribute(const std::string& name) const;
  StatusOr<std::string> StringAttribute(const std::string& name) const;
  // Every root attribute rendered as text (ints in decimal), for ckpt-info.
  StatusOr<std::map<std::string, std::string>> Attributes() const;

  // Reads every dataset and checks its checksum. Returns one line per problem
  // ("model/lm_head.weight: DATA_LOSS: ... checksum mismatch ..."); empty = all datasets valid.
  std::vector<std::string> Verify() const;

  const std::string& path() const { return path_; }

 private:
  H5Reader(std::string path, int64_t file);
  std::string path_;
  int64_t file_ = -1;  // hid_t
};

}  // namespace lightrl::checkpoint
