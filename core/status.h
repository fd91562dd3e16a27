// Status and StatusOr<T>: the error currency at I/O boundaries (config files, sockets, checkpoints,
// sandboxes). Semantics follow leveldb/abseil: a Status is OK or carries a code and a message;
// StatusOr<T> holds either a T or a non-OK Status. Both are [[nodiscard]].
//
// Invariants and programmer errors use LR_CHECK (core/check.h) instead, which throws.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <utility>

namespace lightrl {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad config value, malformed input, wrong shape in a file
  kNotFound,            // missing file, key, checkpoint
  kAlreadyExists,
  kFailedPrecondition,  // operation not allowed in the current state
  kOutOfRange,
  kUnimplemented,       // a feature that is declared but not built
  kInternal,            // a broken invariant reported across a boundary
  kUnavailable,         // transient: peer not answering, sandbox not available
  kDeadlineExceeded,    // timeout
  kDataLoss,            // truncated or corrupt data (checkpoint, safetensors, wire frame)
  kResourceExhausted,
  kCancelled,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: model.hidden_size: expected a positive integer, got -3"
  std::string ToString() const;

  // Returns a copy with "context: " prepended to the message (same code).
  Status WithContext(const std::string& context) const;

  // Throws lightrl::Error with ToString() if !ok(). For use where a failure is fatal.
  void ThrowIfError() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }

// Either a value or an error. REQUIRES: a StatusOr built from a Status has !status.ok().
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : status_(status) { CheckNotOk(); }  // NOLINT: implicit by design
  StatusOr(Status&& status) : status_(std::move(status)) { CheckNotOk(); }  // NOLINT
  StatusOr(const T& value) : value_(value) {}  // NOLINT
  StatusOr(T&& value) : value_(std::move(value)) {}  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok(). Accessing the value of an error throws lightrl::Error with the status text.
  const T& value() const& { EnsureOk(); return *value_; }
  T& value() & { EnsureOk(); return *value_; }
  T&& value() && { EnsureOk(); return std::move(*value_); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  void CheckNotOk();
  void EnsureOk() const { status_.ThrowIfError(); }
  Status status_;
  std::optional<T> value_;
};

template <typename T>
void StatusOr<T>::CheckNotOk() {
  if (status_.ok()) status_ = Status(StatusCode::kInternal, "StatusOr constructed from an OK Status");
}

}  // namespace lightrl

#define LR_STATUS_CONCAT_INNER(a, b) a##b
#define LR_STATUS_CONCAT(a, b) LR_STATUS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define LR_RETURN_IF_ERROR(expr)                          \
  do {                                                    \
    ::lightrl::Status lr_status_tmp_ = (expr);            \
    if (!lr_status_tmp_.ok()) return lr_status_tmp_;      \
  } while (0)

// LR_ASSIGN_OR_RETURN(auto x, MakeX());  assigns the value or returns the error.
#define LR_ASSIGN_OR_RETURN(lhs, expr) \
  LR_ASSIGN_OR_RETURN_IMPL(LR_STATUS_CONCAT(lr_statusor_, __LINE__), lhs, expr)
#define LR_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
