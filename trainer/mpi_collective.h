// Collective and BatchChannel over the trainer group's MPI communicator (core/comm/mpi.h,
// core/comm/mpi_tensors.h). CPU tensors are all-reduced with MPI; a CUDA build routes the
// gradient all-reduce through NCCL (core/comm) instead.
#pragma once

#include "core/comm/mpi.h"
#include "trainer/policy_trainer.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

class MpiCollective : public Collective, public BatchChannel {
 public:
  // `comm` must outlive this object.
  explicit MpiCollective(const comm::MpiComm* comm) : comm_(comm) {}
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override;
  std::vector<double> AllReduceSum(const std::vector<double>& values) override;
  std::vector<double> AllReduceMax(const std::vector<double>& values) override;
  void Broadcast(std::string* bytes) override;

 private:
  const comm::MpiComm* comm_;
};

}  // namespace lightrl::trainer
