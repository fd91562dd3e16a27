#include "core/status.h"

#include <gtest/gtest.h>

#include "core/check.h"

namespace lightrl {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status Quarter(int x, int* out) {
  LR_ASSIGN_OR_RETURN(int h, Half(x));
  LR_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(StatusTest, OkAndErrorToString) {
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(Status::Ok().ToString(), "OK");
  Status s = NotFound("ckpt/step_3");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: ckpt/step_3");
  EXPECT_EQ(s.WithContext("resume").message(), "resume: ckpt/step_3");
}

TEST(StatusTest, AssignOrReturnPropagatesFirstError) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);  // 6 -> 3 -> odd
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "odd: 3");
}

TEST(StatusTest, ValueOfErrorThrows) {
  StatusOr<int> r = Half(3);
  EXPECT_FALSE(r.ok());
  EXPECT_THROW(r.value(), Error);
}

TEST(StatusTest, StatusOrFromOkStatusBecomesInternalError) {
  StatusOr<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(CheckTest, FailureCarriesFileLineAndMessage) {
  try {
    int dims = 3;
    LR_CHECK(dims == 2, "expected 2 dims, got ", dims);
    FAIL() << "LR_CHECK did not throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("status_test.cc:"), std::string::npos) << what;
    EXPECT_NE(what.find("dims == 2"), std::string::npos) << what;
    EXPECT_NE(what.find("expected 2 dims, got 3"), std::string::npos) << what;
  }
  EXPECT_NO_THROW(LR_CHECK(1 + 1 == 2));
}

TEST(CheckTest, LibraryChecksReportTheCall) {
  try {
    LR_H5_CHECK(-1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HDF5 call failed: -1"), std::string::npos) << e.what();
  }
  try {
    errno = EINVAL;
    LR_ZMQ_CHECK(-1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Invalid argument"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lightrl
