// Tensor collectives over MPI (CPU tensors): the data-parallel gradient all-reduce of the trainer
// ranks and the trainer -> rollout weight broadcast with a manifest. These helpers reject
// non-CPU tensors; an NCCL path for device tensors is not implemented yet.
//
// Both functions are collectives: every rank of `comm` must call them, in the same order. They
// validate first and agree on the outcome (AgreeOnStatus), so a rank with bad input makes every
// rank return the same error rather than leaving the others blocked in the collective.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/comm/mpi.h"
#include "core/protocol/messages.h"
#include "core/status.h"

namespace lightrl::comm {

// name -> tensor, ordered by name (same type as model::NamedTensors).
using NamedTensors = std::map<std::string, torch::Tensor>;

struct AllReduceOptions {
  // Tensors smaller than this are packed into one flat buffer per dtype run before reducing
  // (fewer, larger MPI calls); larger tensors are reduced in place directly.
  int64_t bucket_bytes = int64_t{64} << 20;
};

// In-place element-wise sum over the ranks of `comm` of every tensor in `tensors`.
// REQUIRES on every rank: each tensor defined, on CPU, contiguous, dtype float32 / float64 / int64;
// the same count, shapes and dtypes on every rank (checked collectively: FailedPrecondition naming
// this rank's tensor count and element total when they differ). Tensors may require grad (the
// data is reduced, autograd is not involved). Floating-point sums are reduced in MPI's order,
// which is fixed for a given world size, so results are reproducible run to run.
Status AllReduceSumInPlace(const MpiComm& comm, std::vector<torch::Tensor>& tensors,
                           const AllReduceOptions& options = {});

struct WeightSyncOptions {
  double timeout_s = 0;                     // 0 = no deadline; see WaitOptions
  int64_t bucket_bytes = int64_t{64} << 20; // tensors smaller than this are sent packed
};

// The manifest of `tensors` at `version` (tensors sorted by name). InvalidArgument naming a
// tensor that is undefined, not on CPU, or of a dtype lightrl does not transfer.
StatusOr<protocol::WeightsManifest> MakeManifest(const NamedTensors& tensors, uint64_t version);

// OK iff `tensors` has exactly the manifest's names with the same dtypes and shapes. The error
// names the first difference: "missing tensor 'x'", "unexpected tensor 'y'",
// "tensor 'z': expected float32[4, 8], have float32[4, 9]".
Status CheckManifest(const protocol::WeightsManifest& manifest, const NamedTensors& tensors);

// Broadcasts named tensors from `root` to every other rank of `comm` (the weight-sync group of
// SplitRoles: trainer rank 0 + rollout ranks), manifest first (core/protocol WeightsAnnounce
// bytes), then the data.
//   root:      *tensors is the source (CPU; non-contiguous tensors are copied); *version is the
//              version being published.
//   receivers: if *tensors is empty it is filled with new tensors allocated from the manifest;
//              otherwise it must match the manifest exactly (CheckManifest) and the data is
//              written into the existing tensors in place (e.g. the model's parameters).
//              *version is set to the root's version on success.
// Errors (the same on every rank): the root's invalid input, a receiver's manifest mismatch
// ("weight sync v7: rank 2 of weights: tensor 'w': expected ..."), or DeadlineExceeded when
// options.timeout_s passes. On error a receiver's *version is unchanged but its tensors may be
// partially overwritten; after DeadlineExceeded the job must be aborted (AbortJob).
Status BroadcastWeights(const MpiComm& comm, int root, NamedTensors* tensors, uint64_t* version,
                        const WeightSyncOptions& options = {});

}  // namespace lightrl::comm
