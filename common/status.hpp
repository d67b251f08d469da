// Status and Result<T>: the channel for expected failures (STYLE.md 9-10).
//
// Codes say whether to retry; the retry decision is the table in
// RetryActionFor(), not ifs scattered through callers. Programmer errors are
// SHAMMIE_CHECK()s, never Statuses.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shammie::common {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad input from the user: never retry, exit 2
  kNotFound,            // a named file/job/key does not exist: never retry, exit 2
  kAlreadyExists,       // would overwrite something: never retry, exit 2
  kFailedPrecondition,  // state is wrong for the call (e.g. newer file layout): never retry
  kUnavailable,         // transient (a peer, a daemon, a busy file): retry the call
  kAborted,             // the job was interrupted (preemption, a lost rank): rerun the job
  kDeadlineExceeded,    // a deadline passed: rerun the job
  kResourceExhausted,   // memory, disk, quota: rerun only with more resources
  kCancelled,           // stopped on request (signal): rerun on resume
  kDataLoss,            // stored data is corrupt or truncated: never retry
  kInternal,            // a bug or an environment failure: never retry, exit 3
};

std::string_view StatusCodeName(StatusCode code);
// Parses the snake_case name ("unavailable", "deadline_exceeded", ...).
std::optional<StatusCode> StatusCodeFromName(std::string_view name);

// What a caller should do when an operation fails with this code.
enum class RetryAction {
  kNever,        // retrying cannot help
  kRetryCall,    // retry the same call after a backoff
  kRerunJob,     // the job may succeed if run again from its last checkpoint
};
RetryAction RetryActionFor(StatusCode code);

// Process exit code for a failure (DESIGN.md §4): 2 bad input, 3 internal or
// environment error.
int ExitCodeFor(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid_argument: message"
  std::string ToString() const;
  // Returns a copy whose message is "context: message".
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status AlreadyExists(std::string message);
Status FailedPrecondition(std::string message);
Status Unavailable(std::string message);
Status Internal(std::string message);
Status DataLoss(std::string message);

[[noreturn]] void CheckFailed(const char* expr, const char* file, int line, std::string_view message);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(data_).ok()) CheckFailed("!status.ok()", __FILE__, __LINE__, "Result built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(data_);
  }
  T& value() & { Check(); return std::get<T>(data_); }
  const T& value() const& { Check(); return std::get<T>(data_); }
  T&& value() && { Check(); return std::get<T>(std::move(data_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void Check() const {
    if (!ok()) CheckFailed("result.ok()", __FILE__, __LINE__, std::get<Status>(data_).ToString());
  }
  std::variant<T, Status> data_;
};

}  // namespace shammie::common

#define SHAMMIE_CHECK(cond)                                                    \
  do {                                                                         \
    if (!(cond)) ::shammie::common::CheckFailed(#cond, __FILE__, __LINE__, ""); \
  } while (false)

#define SHAMMIE_CHECK_MSG(cond, msg)                                              \
  do {                                                                            \
    if (!(cond)) ::shammie::common::CheckFailed(#cond, __FILE__, __LINE__, (msg)); \
  } while (false)

#define SHAMMIE_CONCAT_INNER(a, b) a##b
#define SHAMMIE_CONCAT(a, b) SHAMMIE_CONCAT_INNER(a, b)

#define SHAMMIE_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::shammie::common::Status shammie_status_ = (expr); \
    if (!shammie_status_.ok()) return shammie_status_;  \
  } while (false)

#define SHAMMIE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

#define SHAMMIE_ASSIGN_OR_RETURN(lhs, expr) \
  SHAMMIE_ASSIGN_OR_RETURN_IMPL(SHAMMIE_CONCAT(shammie_result_, __LINE__), lhs, expr)
