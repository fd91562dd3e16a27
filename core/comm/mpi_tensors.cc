// Tensor collectives over MPI: bucketed in-place all-reduce, manifest-checked weight broadcast.
#include "core/comm/mpi_tensors.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/check.h"
#include "core/protocol/codec.h"
#include "core/protocol/dtype_torch.h"

namespace lightrl::comm {

namespace {

// Elements per MPI call (counts are int).
constexpr int64_t kMaxChunkElements = int64_t{1} << 28;
constexpr int64_t kMaxChunkBytes = int64_t{1} << 30;

std::string ShapeString(const torch::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
  return out + "]";
}

MPI_Datatype ReduceType(torch::Dtype dtype) {
  if (dtype == torch::kFloat32) return MPI_FLOAT;
  if (dtype == torch::kFloat64) return MPI_DOUBLE;
  if (dtype == torch::kInt64) return MPI_INT64_T;
  return MPI_DATATYPE_NULL;
}

// FNV-1a over the dtypes and shapes of the list: ranks with different lists (almost surely)
// get different signatures.
int64_t Signature(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  };
  for (const torch::Tensor& t : tensors) {
    mix(static_cast<uint64_t>(t.scalar_type()));
    mix(static_cast<uint64_t>(t.dim()));
    for (int64_t d : t.sizes()) mix(static_cast<uint64_t>(d));
  }
  return static_cast<int64_t>(h);
}

void ReduceInPlace(const MpiComm& comm, void* data, int64_t numel, torch::Dtype dtype) {
  const MPI_Datatype type = ReduceType(dtype);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  char* p = static_cast<char*>(data);
  for (int64_t off = 0; off < numel; off += kMaxChunkElements) {
    const int n = static_cast<int>(std::min(kMaxChunkElements, numel - off));
    LR_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p + off * elem, n, type, MPI_SUM, comm.handle()));
  }
}

}  // namespace

Status AllReduceSumInPlace(const MpiComm& comm, std::vector<torch::Tensor>& tensors,
                           const AllReduceOptions& options) {
  LR_CHECK(comm.valid(), "AllReduceSumInPlace on a null communicator '", comm.name(), "'");
  Status local;
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size() && local.ok(); ++i) {
    const torch::Tensor& t = tensors[i];
    const std::string where = "tensor " + std::to_string(i);
    if (!t.defined()) {
      local = InvalidArgument(where + " is undefined");
    } else if (!t.device().is_cpu()) {
      local = InvalidArgument(where + " is on " + t.device().str() + "; MPI all-reduce needs CPU tensors");
    } else if (!t.is_contiguous()) {
      local = InvalidArgument(where + " " + ShapeString(t) + " is not contiguous");
    } else if (ReduceType(t.scalar_type()) == MPI_DATATYPE_NULL) {
      local = InvalidArgument(where + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                              "; expected float32, float64 or int64");
    } else {
      total += t.numel();
    }
  }
  LR_RETURN_IF_ERROR(AgreeOnStatus(comm, local, "all-reduce"));

  // Same tensor list everywhere? (count, element total, dtype+shape signature)
  int64_t sig[3] = {static_cast<int64_t>(tensors.size()), total, Signature(tensors)};
  int64_t lo[3], hi[3];
  LR_MPI_CHECK(MPI_Allreduce(sig, lo, 3, MPI_INT64_T, MPI_MIN, comm.handle()));
  LR_MPI_CHECK(MPI_Allreduce(sig, hi, 3, MPI_INT64_T, MPI_MAX, comm.handle()));
  if (!std::equal(lo, lo + 3, hi)) {
    return FailedPrecondition("all-reduce on " + comm.Describe() +
                              ": ranks passed different tensor lists (this rank: " +
                              std::to_string(tensors.size()) + " tensors, " + std::to_string(total) +
                              " elements; counts, shapes or dtypes differ across ranks)");
  }

  // Pack runs of small same-dtype tensors into one flat buffer per bucket.
  std::vector<torch::Tensor> bucket;
  int64_t bucket_bytes = 0;
  auto flush = [&]() {
    if (bucket.empty()) return;
    if (bucket.size() == 1) {
      ReduceInPlace(comm, bucket[0].data_ptr(), bucket[0].numel(), bucket[0].scalar_type());
    } else {
      std::vector<torch::Tensor> flat_views;
      flat_views.reserve(bucket.size());
      for (const torch::Tensor& t : bucket) flat_views.push_back(t.detach().reshape({-1}));
      torch::Tensor flat = torch::cat(flat_views);
      ReduceInPlace(comm, flat.data_ptr(), flat.numel(), flat.scalar_type());
      int64_t off = 0;
      torch::NoGradGuard no_grad;
      for (const torch::Tensor& t : bucket) {
        t.detach().view({-1}).copy_(flat.narrow(0, off, t.numel()));
        off += t.numel();
      }
    }
    bucket.clear();
    bucket_bytes = 0;
  };
  for (const torch::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (bytes >= options.bucket_bytes) {
      ReduceInPlace(comm, t.data_ptr(), t.numel(), t.scalar_type());
      continue;
    }
    if (!bucket.empty() &&
        (bucket[0].scalar_type() != t.scalar_type() || bucket_bytes + bytes > options.bucket_bytes)) {
      flush();
    }
    bucket.push_back(t);
    bucket_bytes += bytes;
  }
  flush();
  return Status::Ok();
}

// ---- weight broadcast ------------------------------------------------------------------------

StatusOr<protocol::WeightsManifest> MakeManifest(const NamedTensors& tensors, uint64_t version) {
  protocol::WeightsManifest m;
  m.version = version;
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) return InvalidArgument("tensor '" + name + "' is undefined");
    if (!t.device().is_cpu()) {
      return InvalidArgument("tensor '" + name + "' is on " + t.device().str() +
                             "; the MPI weight sync sends CPU tensors (copy device tensors to the CPU first: there is no NCCL path yet)");
    }
    const std::optional<DType> dtype = FromTorchDtype(t.scalar_type());
    if (!dtype) {
      return InvalidArgument("tensor '" + name + "' has dtype " + std::string(c10::toString(t.scalar_type())) +
                             "; supported: " + DTypeNames());
    }
    protocol::TensorSpec spec;
    spec.name = name;
    spec.dtype = *dtype;
    spec.shape.assign(t.sizes().begin(), t.sizes().end());
    m.tensors.push_back(std::move(spec));
  }
  return m;
}

Status CheckManifest(const protocol::WeightsManifest& manifest, const NamedTensors& tensors) {
  for (const protocol::TensorSpec& spec : manifest.tensors) {
    auto it = tensors.find(spec.name);
    if (it == tensors.end()) {
      return FailedPrecondition("missing tensor '" + spec.name + "' (manifest: " + spec.ToString() + ")");
    }
    const torch::Tensor& t = it->second;
    if (!t.defined() || !t.device().is_cpu()) {
      return FailedPrecondition("tensor '" + spec.name + "' is undefined or not on CPU");
    }
    const std::optional<DType> dtype = FromTorchDtype(t.scalar_type());
    const std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    if (!dtype || *dtype != spec.dtype || shape != spec.shape) {
      const std::string expected = spec.ToString().substr(spec.name.size() + 1);  // "float32[4, 8]"
      const std::string have = std::string(dtype ? DTypeName(*dtype) : c10::toString(t.scalar_type())) +
                               ShapeString(t);
      return FailedPrecondition("tensor '" + spec.name + "': expected " + expected + ", have " + have);
    }
  }
  if (tensors.size() != manifest.tensors.size()) {
    for (const auto& [name, t] : tensors) {
      bool listed = std::any_of(manifest.tensors.begin(), manifest.tensors.end(),
                                [&](const protocol::TensorSpec& s) { return s.name == name; });
      if (!listed) return FailedPrecondition("unexpected tensor '" + name + "' (not in the manifest)");
    }
  }
  return Status::Ok();
}

Status BroadcastWeights(const MpiComm& comm, int root, NamedTensors* tensors, uint64_t* version,
                        const WeightSyncOptions& options) {
  LR_CHECK(comm.valid(), "BroadcastWeights on a null communicator '", comm.name(), "'");
  LR_CHECK(tensors != nullptr && version != nullptr, "BroadcastWeights: null output");
  const bool is_root = comm.rank() == root;
  const double start = MonotonicSeconds();
  auto wait_for = [&](const std::string& what) {
    WaitOptions w;
    w.what = what;
    if (options.timeout_s > 0) {
      w.timeout_s = std::max(1e-3, options.timeout_s - (MonotonicSeconds() - start));
    }
    return w;
  };

  // 1. The manifest, as a WeightsAnnounce frame (or the root's ErrorReply if its input is bad).
  std::string frame;
  if (is_root) {
    StatusOr<protocol::WeightsManifest> m = MakeManifest(*tensors, *version);
    frame = m.ok() ? protocol::EncodeMessage(protocol::WeightsAnnounce{*m, "mpi"})
                   : protocol::EncodeMessage(protocol::ErrorReply::FromStatus(*version, m.status()));
  }
  LR_RETURN_IF_ERROR(BroadcastBytes(comm, root, &frame, wait_for("weight sync manifest")));
  StatusOr<protocol::WeightsAnnounce> announce = protocol::DecodeAs<protocol::WeightsAnnounce>(frame);
  const std::string what =
      "weight sync v" + (announce.ok() ? std::to_string(announce->manifest.version) : std::string("?"));

  // 2. Every receiver checks the manifest against its tensors; all ranks agree on the outcome.
  Status local = announce.status();
  if (local.ok() && !is_root && !tensors->empty()) local = CheckManifest(announce->manifest, *tensors);
  LR_RETURN_IF_ERROR(AgreeOnStatus(comm, local, what, wait_for(what + " (manifest check)")));
  const protocol::WeightsManifest& manifest = announce->manifest;

  if (!is_root && tensors->empty()) {
    for (const protocol::TensorSpec& spec : manifest.tensors) {
      (*tensors)[spec.name] = torch::empty(spec.shape, torch::TensorOptions().dtype(ToTorchDtype(spec.dtype)));
    }
  }

  // 3. The data, in manifest order. Small tensors travel packed in byte buckets.
  // Receivers write into contiguous buffers; a non-contiguous destination is copied at the end.
  std::vector<torch::Tensor> buffers;  // [i] contiguous tensor holding manifest.tensors[i]'s bytes
  buffers.reserve(manifest.tensors.size());
  for (const protocol::TensorSpec& spec : manifest.tensors) {
    torch::Tensor t = tensors->at(spec.name).detach();
    buffers.push_back(t.is_contiguous() ? t : (is_root ? t.contiguous() : torch::empty_like(t, torch::MemoryFormat::Contiguous)));
  }
  auto bcast = [&](char* data, int64_t bytes, const std::string& label) -> Status {
    for (int64_t off = 0; off < bytes; off += kMaxChunkBytes) {
      const int n = static_cast<int>(std::min(kMaxChunkBytes, bytes - off));
      MPI_Request req;
      LR_MPI_CHECK(MPI_Ibcast(data + off, n, MPI_BYTE, root, comm.handle(), &req));
      LR_RETURN_IF_ERROR(WaitRequest(comm, &req, wait_for(what + " (" + label + ")"), MonotonicSeconds()));
    }
    return Status::Ok();
  };
  size_t i = 0;
  while (i < buffers.size()) {
    const int64_t bytes = buffers[i].numel() * static_cast<int64_t>(buffers[i].element_size());
    if (bytes >= options.bucket_bytes) {
      LR_RETURN_IF_ERROR(bcast(static_cast<char*>(buffers[i].data_ptr()), bytes, "tensor '" + manifest.tensors[i].name + "'"));
      ++i;
      continue;
    }
    // Pack [i, j) while it fits.
    size_t j = i;
    int64_t packed = 0;
    while (j < buffers.size()) {
      const int64_t b = buffers[j].numel() * static_cast<int64_t>(buffers[j].element_size());
      if (b >= options.bucket_bytes || (j > i && packed + b > options.bucket_bytes)) break;
      packed += b;
      ++j;
    }
    std::string bucket(static_cast<size_t>(packed), '\0');
    if (is_root) {
      int64_t off = 0;
      for (size_t k = i; k < j; ++k) {
        const int64_t b = buffers[k].numel() * static_cast<int64_t>(buffers[k].element_size());
        if (b > 0) std::memcpy(bucket.data() + off, buffers[k].data_ptr(), b);
        off += b;
      }
    }
    LR_RETURN_IF_ERROR(bcast(bucket.data(), packed, "bucket of " + std::to_string(j - i) + " tensors"));
    if (!is_root) {
      int64_t off = 0;
      for (size_t k = i; k < j; ++k) {
        const int64_t b = buffers[k].numel() * static_cast<int64_t>(buffers[k].element_size());
        if (b > 0) std::memcpy(buffers[k].data_ptr(), bucket.data() + off, b);
        off += b;
      }
    }
    i = j;
  }
  if (!is_root) {
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < buffers.size(); ++k) {
      torch::Tensor dst = tensors->at(manifest.tensors[k].name).detach();
      if (dst.data_ptr() != buffers[k].data_ptr()) dst.copy_(buffers[k]);
    }
    *version = manifest.version;
  }
  return Status::Ok();
}

}  // namespace lightrl::comm
