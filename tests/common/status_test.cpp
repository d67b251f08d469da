#include "common/status.hpp"

#include <gtest/gtest.h>

namespace shammie::common {
namespace {

TEST(StatusTest, OkAndMessages) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "ok");
  Status bad = InvalidArgument("bad key");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.ToString(), "invalid_argument: bad key");
  EXPECT_EQ(bad.WithContext("loading x.toml").message(), "loading x.toml: bad key");
}

TEST(StatusTest, RetryTableSaysWhatToDo) {
  EXPECT_EQ(RetryActionFor(StatusCode::kUnavailable), RetryAction::kRetryCall);
  EXPECT_EQ(RetryActionFor(StatusCode::kAborted), RetryAction::kRerunJob);
  EXPECT_EQ(RetryActionFor(StatusCode::kDeadlineExceeded), RetryAction::kRerunJob);
  EXPECT_EQ(RetryActionFor(StatusCode::kInvalidArgument), RetryAction::kNever);
  EXPECT_EQ(RetryActionFor(StatusCode::kDataLoss), RetryAction::kNever);
  EXPECT_EQ(ExitCodeFor(StatusCode::kInvalidArgument), 2);
  EXPECT_EQ(ExitCodeFor(StatusCode::kNotFound), 2);
  EXPECT_EQ(ExitCodeFor(StatusCode::kInternal), 3);
  EXPECT_EQ(ExitCodeFor(StatusCode::kDataLoss), 3);
}

TEST(StatusTest, CodeNamesRoundTrip) {
  for (auto code : {StatusCode::kOk, StatusCode::kInvalidArgument, StatusCode::kNotFound, StatusCode::kAlreadyExists,
                    StatusCode::kFailedPrecondition, StatusCode::kUnavailable, StatusCode::kAborted,
                    StatusCode::kDeadlineExceeded, StatusCode::kResourceExhausted, StatusCode::kCancelled,
                    StatusCode::kDataLoss, StatusCode::kInternal}) {
    auto back = StatusCodeFromName(StatusCodeName(code));
    ASSERT_TRUE(back.has_value()) << StatusCodeName(code);
    EXPECT_EQ(*back, code);
  }
  EXPECT_FALSE(StatusCodeFromName("unavailible").has_value());
}

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  SHAMMIE_ASSIGN_OR_RETURN(int h, Half(x));
  SHAMMIE_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(ResultTest, MacrosPropagateErrors) {
  auto q = Quarter(12);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 3);
  auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "3 is odd");
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> r = Internal("boom");
  EXPECT_DEATH((void)r.value(), "boom");
}

}  // namespace
}  // namespace shammie::common
