// Collective and BatchChannel over the trainer group's MPI communicator (core/comm/mpi.h,
// core/comm/mpi_tensors.h): CPU tensors, all-reduced with MPI. Training runs on the CPU; device
// placement and an NCCL collective for CUDA tensors are not implemented yet (a CUDA tensor is
// rejected by the MPI helpers with an error naming it).
//
// Hang guard. A blocking collective waits for every trainer rank; a rank that is alive but stuck
// (stopped, deadlocked, swapping) would leave the others waiting forever. With a timeout > 0 a
// watchdog thread ends the process when one collective call has waited longer than it: it logs
// which collective, for how long and the config key, then _exit(1)s (it never calls MPI itself;
// mpirun then takes the rest of the job down). A dead rank is reported by mpirun directly.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "core/comm/mpi.h"
#include "trainer/policy_trainer.h"
#include "trainer/trainer.h"

namespace lightrl::trainer {

class MpiCollective : public Collective, public BatchChannel {
 public:
  // `comm` must outlive this object. timeout_s: the hang guard (trainer.collective_timeout_s;
  // 0 = off). It must exceed the longest time a rank can legitimately wait for the others (the
  // driver's generation phases while the other trainer ranks wait for the batch).
  explicit MpiCollective(const comm::MpiComm* comm, double timeout_s = 0);
  ~MpiCollective() override;
  MpiCollective(const MpiCollective&) = delete;
  MpiCollective& operator=(const MpiCollective&) = delete;

  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override;
  std::vector<double> AllReduceSum(const std::vector<double>& values) override;
  std::vector<double> AllReduceMax(const std::vector<double>& values) override;
  void Broadcast(std::string* bytes) override;

 private:
  class Guard;  // marks one collective call as in progress
  void WatchLoop();

  const comm::MpiComm* comm_;
  const double timeout_s_;
  // The call in progress: its name and start (steady-clock ns); 0 = none.
  std::atomic<int64_t> entered_ns_{0};
  std::atomic<const char*> what_{""};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace lightrl::trainer
