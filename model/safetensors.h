// safetensors reading/writing and HF-style model directories in the MiniMax-M1 layout.
//
// File format (https://huggingface.co/docs/safetensors): u64 little-endian header length N,
// N bytes of JSON {name: {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [b, e]},
// "__metadata__": {str: str}}, then the raw little-endian data. Offsets are relative to the end
// of the header, must lie inside the file, match dtype x shape, and not overlap.
//
// A model directory holds `config.json` (HF field names, model/config.h) and either
// `model.safetensors` or shards listed in `model.safetensors.index.json` ({"weight_map":
// {name: file}}), with the names of hybrid_model.md §1 ("model.layers.N.self_attn...").
//
// Every failure is a Status naming the file and the tensor/field; nothing is half-written
// (files are written to a temporary name and renamed).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/hybrid_model.h"

namespace lightrl::model {

using NamedTensors = std::map<std::string, torch::Tensor>;  // ordered by name

// Reads every tensor of one .safetensors file (CPU tensors, the file's dtypes).
// `metadata` (optional) receives the __metadata__ map.
StatusOr<NamedTensors> ReadSafetensors(const std::string& path,
                                       std::map<std::string, std::string>* metadata = nullptr);

// Writes `tensors` (any CPU/GPU dtype among F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; made
// contiguous) atomically to `path`.
Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata = {});

// Saves the model's parameters + config.json into `dir` (created). Tensors are written in
// `dtype` (fp32 default; the LM head is fp32 in the model either way). Shards of at most
// `max_shard_bytes` (0 = one file) with an index.json when there is more than one shard.
Status SaveModelDirectory(HybridModel& model, const std::string& dir,
                          torch::Dtype dtype = torch::kFloat32, int64_t max_shard_bytes = 0);

// Loads weights from a model directory (or a single .safetensors file) into `model`,
// converting dtype to each parameter's. Missing or unexpected names and wrong shapes are
// errors naming the tensor (unless allow_missing lists a name prefix to skip, e.g. "value_head").
Status LoadModelWeights(HybridModel& model, const std::string& dir_or_file,
                        const std::vector<std::string>& allow_missing = {});

// Builds a model from a directory's config.json and loads its weights.
StatusOr<HybridModel> LoadModelDirectory(const std::string& dir);

}  // namespace lightrl::model
