// Collective and BatchChannel over an MPI communicator (the trainer group). CPU tensors are
// reduced with MPI_Allreduce in place; in CUDA builds the gradient all-reduce goes over NCCL
// (core/comm) and this class handles only scalars and the batch broadcast.
#pragma once

#include <mpi.h>

#include "trainer/policy_trainer.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

class MpiCollective : public Collective, public BatchChannel {
 public:
  explicit MpiCollective(MPI_Comm comm);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Flattens all tensors into one fp32 buffer (one MPI_Allreduce), sums, and scatters back.
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override;
  std::vector<double> AllReduceSum(const std::vector<double>& values) override;
  std::vector<double> AllReduceMax(const std::vector<double>& values) override;
  void Broadcast(std::string* bytes) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace lightrl::trainer
