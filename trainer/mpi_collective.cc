#include "trainer/mpi_collective.h"

#include "core/check.h"
#include "core/comm/mpi_tensors.h"

namespace lightrl::trainer {

void MpiCollective::AllReduceSum(std::vector<torch::Tensor>& tensors) {
  if (size() == 1 || tensors.empty()) return;
  comm::AllReduceSumInPlace(*comm_, tensors).ThrowIfError();
}

std::vector<double> MpiCollective::AllReduceSum(const std::vector<double>& values) {
  if (size() == 1 || values.empty()) return values;
  return comm::AllReduceSum(*comm_, values);
}

std::vector<double> MpiCollective::AllReduceMax(const std::vector<double>& values) {
  if (size() == 1 || values.empty()) return values;
  return comm::AllReduceMax(*comm_, values);
}

void MpiCollective::Broadcast(std::string* bytes) {
  if (size() == 1) return;
  comm::BroadcastBytes(*comm_, 0, bytes).ThrowIfError();
}

}  // namespace lightrl::trainer
