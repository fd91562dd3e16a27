// Element types of tensors that cross a process or file boundary (weight-sync manifests, HDF5
// checkpoints), without depending on libtorch. Torch conversions live in
// core/protocol/dtype_torch.h (include that only from translation units that use tensors).
//
// Storage convention: every type is stored as its little-endian in-memory bytes. bfloat16 and
// float16 have no portable HDF5 native type, so checkpoints store them as uint16 bit patterns
// with a `lightrl_dtype` attribute naming the real type (core/checkpoint/h5_file.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lightrl {

enum class DType : uint8_t {
  kFloat32 = 0,
  kFloat64 = 1,
  kBFloat16 = 2,
  kFloat16 = 3,
  kInt64 = 4,
  kInt32 = 5,
  kInt16 = 6,
  kInt8 = 7,
  kUInt8 = 8,
  kBool = 9,  // one byte per element, 0 or 1
};

// "float32", "float64", "bfloat16", "float16", "int64", "int32", "int16", "int8", "uint8", "bool".
const char* DTypeName(DType dtype);
// Inverse of DTypeName; nullopt for an unknown name.
std::optional<DType> DTypeFromName(std::string_view name);
// Bytes per element (bool = 1).
size_t DTypeSize(DType dtype);
// The accepted names joined with ", " (for error messages).
std::string DTypeNames();

}  // namespace lightrl
