#include "trainer/mpi_collective.h"

#include "core/check.h"

namespace lightrl::trainer {

MpiCollective::MpiCollective(MPI_Comm comm) : comm_(comm) {
  LR_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  LR_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

void MpiCollective::AllReduceSum(std::vector<torch::Tensor>& tensors) {
  if (size_ == 1 || tensors.empty()) return;
  std::vector<torch::Tensor> flat;
  for (auto& t : tensors) {
    LR_CHECK(t.scalar_type() == torch::kFloat32 && t.device().is_cpu(),
             "MpiCollective::AllReduceSum: expected CPU fp32 tensors, got ", t.scalar_type(), " on ", t.device());
    flat.push_back(t.reshape({-1}));
  }
  torch::Tensor buffer = torch::cat(flat).contiguous();  // [sum numel] fp32
  // MPI counts are int: reduce in chunks of at most 2^30 elements.
  const int64_t n = buffer.numel();
  float* data = buffer.data_ptr<float>();
  for (int64_t off = 0; off < n; off += (int64_t{1} << 30)) {
    const int count = static_cast<int>(std::min<int64_t>(n - off, int64_t{1} << 30));
    LR_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, comm_));
  }
  int64_t off = 0;
  for (auto& t : tensors) {
    t.copy_(buffer.narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
}

std::vector<double> MpiCollective::AllReduceSum(const std::vector<double>& values) {
  std::vector<double> out = values;
  if (size_ > 1 && !out.empty())
    LR_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, out.data(), static_cast<int>(out.size()), MPI_DOUBLE, MPI_SUM, comm_));
  return out;
}

std::vector<double> MpiCollective::AllReduceMax(const std::vector<double>& values) {
  std::vector<double> out = values;
  if (size_ > 1 && !out.empty())
    LR_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, out.data(), static_cast<int>(out.size()), MPI_DOUBLE, MPI_MAX, comm_));
  return out;
}

void MpiCollective::Broadcast(std::string* bytes) {
  if (size_ == 1) return;
  int64_t n = static_cast<int64_t>(bytes->size());
  LR_MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT64_T, 0, comm_));
  bytes->resize(static_cast<size_t>(n));
  for (int64_t off = 0; off < n; off += (int64_t{1} << 30)) {
    const int count = static_cast<int>(std::min<int64_t>(n - off, int64_t{1} << 30));
    LR_MPI_CHECK(MPI_Bcast(bytes->data() + off, count, MPI_CHAR, 0, comm_));
  }
}

}  // namespace lightrl::trainer
