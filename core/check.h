// Invariant checks that throw lightrl::Error with file:line, and return-code checks for the C
// libraries lightrl talks to (MPI, HDF5, ZeroMQ, NCCL, CUDA).
//
//   LR_CHECK(x.dim() == 2, "expected a 2-d tensor, got ", x.dim(), " dims");
//   LR_MPI_CHECK(MPI_Allreduce(...));      // message carries MPI_Error_string
//   LR_H5_CHECK(H5Fclose(file));           // negative herr_t/hid_t is an error
//   LR_ZMQ_CHECK(zmq_setsockopt(...));     // -1 is an error, message carries zmq_strerror(errno)
//
// LR_DCHECK compiles away under NDEBUG; use it in hot loops only.
// Library checks are implemented in check.cc so this header stays free of library includes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lightrl {

// The exception type of every lightrl invariant failure. what() = "file:line: message".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void StreamAll(std::ostringstream&) {}
template <typename T, typename... Rest>
void StreamAll(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  StreamAll(os, rest...);
}
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  StreamAll(os, args...);
  return os.str();
}
[[noreturn]] void ThrowCheckFailure(const char* file, int line, const char* cond,
                                    const std::string& msg);
[[noreturn]] void ThrowMpiFailure(const char* file, int line, const char* call, int rc);
[[noreturn]] void ThrowH5Failure(const char* file, int line, const char* call, long long rc);
[[noreturn]] void ThrowZmqFailure(const char* file, int line, const char* call, int err);
}  // namespace detail

// Concatenates streamable arguments: StrCat("key ", name, " = ", 3).
using detail::StrCat;

}  // namespace lightrl

#define LR_CHECK(cond, ...)                                                              \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      ::lightrl::detail::ThrowCheckFailure(__FILE__, __LINE__, #cond,                    \
                                           ::lightrl::detail::StrCat(__VA_ARGS__)); \
    }                                                                                    \
  } while (0)

#ifdef NDEBUG
#define LR_DCHECK(cond, ...) \
  do {                       \
  } while (0)
#else
#define LR_DCHECK(cond, ...) LR_CHECK(cond, ##__VA_ARGS__)
#endif

// Unconditional failure with a message (unreachable branches).
#define LR_FAIL(...) \
  ::lightrl::detail::ThrowCheckFailure(__FILE__, __LINE__, "failure", ::lightrl::detail::StrCat(__VA_ARGS__))

#define LR_MPI_CHECK(call)                                                         \
  do {                                                                             \
    int lr_mpi_rc_ = (call);                                                       \
    if (lr_mpi_rc_ != 0) ::lightrl::detail::ThrowMpiFailure(__FILE__, __LINE__, #call, lr_mpi_rc_); \
  } while (0)

#define LR_H5_CHECK(call)                                                          \
  do {                                                                             \
    long long lr_h5_rc_ = static_cast<long long>(call);                           \
    if (lr_h5_rc_ < 0) ::lightrl::detail::ThrowH5Failure(__FILE__, __LINE__, #call, lr_h5_rc_); \
  } while (0)

#define LR_ZMQ_CHECK(call)                                                         \
  do {                                                                             \
    if ((call) == -1) ::lightrl::detail::ThrowZmqFailure(__FILE__, __LINE__, #call, errno); \
  } while (0)
