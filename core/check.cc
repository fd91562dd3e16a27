#include "core/check.h"

#include <hdf5.h>
#include <mpi.h>
#include <zmq.h>

#include <cerrno>

namespace lightrl::detail {

namespace {
std::string Where(const char* file, int line) { return StrCat(file, ":", line, ": "); }
}  // namespace

void ThrowCheckFailure(const char* file, int line, const char* cond, const std::string& msg) {
  throw Error(Where(file, line) + "check failed: " + cond + (msg.empty() ? "" : ": " + msg));
}

void ThrowMpiFailure(const char* file, int line, const char* call, int rc) {
  char buf[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) len = 0;
  throw Error(Where(file, line) + "MPI call failed: " + call + ": " + std::string(buf, len) +
              " (code " + std::to_string(rc) + ")");
}

void ThrowH5Failure(const char* file, int line, const char* call, long long rc) {
  // HDF5 prints its own error stack to stderr when automatic printing is on; add the call site.
  throw Error(Where(file, line) + "HDF5 call failed: " + call + " returned " + std::to_string(rc));
}

void ThrowZmqFailure(const char* file, int line, const char* call, int err) {
  throw Error(Where(file, line) + "ZeroMQ call failed: " + call + ": " + zmq_strerror(err));
}

}  // namespace lightrl::detail
