#include "common/status.hpp"

#include <array>
#include <cstdio>

namespace shammie::common {
namespace {

struct CodeInfo {
  StatusCode code;
  std::string_view name;
  RetryAction retry;
  int exit_code;
};

// The retry policy and the exit codes, in one table (STYLE.md 10).
constexpr std::array<CodeInfo, 12> kCodes = {{
    {StatusCode::kOk, "ok", RetryAction::kNever, 0},
    {StatusCode::kInvalidArgument, "invalid_argument", RetryAction::kNever, 2},
    {StatusCode::kNotFound, "not_found", RetryAction::kNever, 2},
    {StatusCode::kAlreadyExists, "already_exists", RetryAction::kNever, 2},
    {StatusCode::kFailedPrecondition, "failed_precondition", RetryAction::kNever, 2},
    {StatusCode::kUnavailable, "unavailable", RetryAction::kRetryCall, 3},
    {StatusCode::kAborted, "aborted", RetryAction::kRerunJob, 3},
    {StatusCode::kDeadlineExceeded, "deadline_exceeded", RetryAction::kRerunJob, 3},
    {StatusCode::kResourceExhausted, "resource_exhausted", RetryAction::kNever, 3},
    {StatusCode::kCancelled, "cancelled", RetryAction::kRerunJob, 3},
    {StatusCode::kDataLoss, "data_loss", RetryAction::kNever, 3},
    {StatusCode::kInternal, "internal", RetryAction::kNever, 3},
}};

const CodeInfo& Info(StatusCode code) {
  for (const auto& info : kCodes) {
    if (info.code == code) return info;
  }
  CheckFailed("known StatusCode", __FILE__, __LINE__, "status code missing from kCodes");
}

}  // namespace

std::string_view StatusCodeName(StatusCode code) { return Info(code).name; }

std::optional<StatusCode> StatusCodeFromName(std::string_view name) {
  for (const auto& info : kCodes) {
    if (info.name == name) return info.code;
  }
  return std::nullopt;
}

RetryAction RetryActionFor(StatusCode code) { return Info(code).retry; }
int ExitCodeFor(StatusCode code) { return Info(code).exit_code; }

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

Status InvalidArgument(std::string message) { return {StatusCode::kInvalidArgument, std::move(message)}; }
Status NotFound(std::string message) { return {StatusCode::kNotFound, std::move(message)}; }
Status AlreadyExists(std::string message) { return {StatusCode::kAlreadyExists, std::move(message)}; }
Status FailedPrecondition(std::string message) { return {StatusCode::kFailedPrecondition, std::move(message)}; }
Status Unavailable(std::string message) { return {StatusCode::kUnavailable, std::move(message)}; }
Status Internal(std::string message) { return {StatusCode::kInternal, std::move(message)}; }
Status DataLoss(std::string message) { return {StatusCode::kDataLoss, std::move(message)}; }

void CheckFailed(const char* expr, const char* file, int line, std::string_view message) {
  std::fprintf(stderr, "shammie: CHECK failed at %s:%d: %s%s%.*s\n", file, line, expr,
               message.empty() ? "" : ": ", static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace shammie::common
