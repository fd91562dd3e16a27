// Conversions between lightrl::DType and libtorch scalar types. Header-only; include it only from
// translation units that already use libtorch (it pulls in <torch/torch.h>).
#pragma once

#include <torch/torch.h>

#include <optional>

#include "core/protocol/dtype.h"

namespace lightrl {

inline torch::Dtype ToTorchDtype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return torch::kFloat32;
    case DType::kFloat64: return torch::kFloat64;
    case DType::kBFloat16: return torch::kBFloat16;
    case DType::kFloat16: return torch::kFloat16;
    case DType::kInt64: return torch::kInt64;
    case DType::kInt32: return torch::kInt32;
    case DType::kInt16: return torch::kInt16;
    case DType::kInt8: return torch::kInt8;
    case DType::kUInt8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  return torch::kFloat32;  // unreachable for valid enum values
}

// nullopt for torch types lightrl does not store (complex, quantized, ...).
inline std::optional<DType> FromTorchDtype(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return DType::kFloat32;
    case torch::kFloat64: return DType::kFloat64;
    case torch::kBFloat16: return DType::kBFloat16;
    case torch::kFloat16: return DType::kFloat16;
    case torch::kInt64: return DType::kInt64;
    case torch::kInt32: return DType::kInt32;
    case torch::kInt16: return DType::kInt16;
    case torch::kInt8: return DType::kInt8;
    case torch::kUInt8: return DType::kUInt8;
    case torch::kBool: return DType::kBool;
    default: return std::nullopt;
  }
}

}  // namespace lightrl
