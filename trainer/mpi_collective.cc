#include "trainer/mpi_collective.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/check.h"
#include "core/comm/mpi_tensors.h"
#include "core/logging.h"

namespace lightrl::trainer {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

class MpiCollective::Guard {
 public:
  Guard(MpiCollective* c, const char* what) : c_(c) {
    c_->what_.store(what);
    c_->entered_ns_.store(NowNs());
  }
  ~Guard() { c_->entered_ns_.store(0); }

 private:
  MpiCollective* c_;
};

MpiCollective::MpiCollective(const comm::MpiComm* comm, double timeout_s) : comm_(comm), timeout_s_(timeout_s) {
  LR_CHECK(comm_ != nullptr, "MpiCollective: comm must not be null");
  LR_CHECK(timeout_s_ >= 0, "MpiCollective: timeout_s must be >= 0, got ", timeout_s_);
  if (timeout_s_ > 0 && comm_->size() > 1) watchdog_ = std::thread([this] { WatchLoop(); });
}

MpiCollective::~MpiCollective() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

void MpiCollective::WatchLoop() {
  const auto period = std::chrono::milliseconds(std::min<int64_t>(1000, static_cast<int64_t>(timeout_s_ * 250) + 1));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [this] { return stop_; })) {
    const int64_t entered = entered_ns_.load();
    if (entered == 0) continue;
    const double waited = static_cast<double>(NowNs() - entered) / 1e9;
    if (waited < timeout_s_) continue;
    const std::string reason =
        StrCat("trainer rank ", comm_->rank(), " of ", comm_->size(), ": the collective '", what_.load(),
               "' has waited ", static_cast<int64_t>(waited), " s for the other trainer ranks (trainer.collective_timeout_s = ",
               timeout_s_, "); a peer rank is hung or gone. Ending the job");
    try {
      Logger("trainer")->critical("{}", reason);
      Logger("trainer")->flush();
    } catch (...) {
      std::fprintf(stderr, "%s\n", reason.c_str());
    }
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);  // not MPI_Abort: this thread must not call MPI (MPI_THREAD_FUNNELED)
  }
}

void MpiCollective::AllReduceSum(std::vector<torch::Tensor>& tensors) {
  if (size() == 1 || tensors.empty()) return;
  Guard g(this, "all-reduce (tensors)");
  comm::AllReduceSumInPlace(*comm_, tensors).ThrowIfError();
}

std::vector<double> MpiCollective::AllReduceSum(const std::vector<double>& values) {
  if (size() == 1 || values.empty()) return values;
  Guard g(this, "all-reduce sum (scalars)");
  return comm::AllReduceSum(*comm_, values);
}

std::vector<double> MpiCollective::AllReduceMax(const std::vector<double>& values) {
  if (size() == 1 || values.empty()) return values;
  Guard g(this, "all-reduce max (scalars)");
  return comm::AllReduceMax(*comm_, values);
}

void MpiCollective::Broadcast(std::string* bytes) {
  if (size() == 1) return;
  Guard g(this, "batch broadcast");
  comm::BroadcastBytes(*comm_, 0, bytes).ThrowIfError();
}

}  // namespace lightrl::trainer
