// The device collectives' contract where no GPU is needed: what the factory
// answers without CUDA or without a device (never a silent CPU fallback), that
// a gang agrees instead of hanging, and the runtime summary. Runs in both
// builds (the NCCL backend and the stub). The tests that move data on a GPU
// are in nccl_device_test.cpp.
#include "cluster/nccl_collectives.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "cluster/inproc_channel.hpp"

namespace shammie::cluster {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

TEST(NcclCollectivesTest, DTypes) {
  EXPECT_EQ(DeviceDTypeName(DeviceDType::kFloat32), "float32");
  EXPECT_EQ(DeviceDTypeName(DeviceDType::kBFloat16), "bfloat16");
  EXPECT_EQ(DeviceDTypeName(DeviceDType::kFloat64), "float64");
  EXPECT_EQ(DeviceDTypeName(DeviceDType::kUint8), "uint8");
  EXPECT_EQ(DeviceDTypeSize(DeviceDType::kFloat32), 4u);
  EXPECT_EQ(DeviceDTypeSize(DeviceDType::kBFloat16), 2u);
  EXPECT_EQ(DeviceDTypeSize(DeviceDType::kFloat64), 8u);
  EXPECT_EQ(DeviceDTypeSize(DeviceDType::kUint8), 1u);
}

TEST(NcclCollectivesTest, TheBuildFlagMatchesTheLinkedBackend) {
  EXPECT_EQ(BuiltWithCuda(), SHAMMIE_WITH_CUDA == 1);
  if (!BuiltWithCuda()) {
    EXPECT_EQ(VisibleCudaDeviceCount(), 0);
  }
}

TEST(NcclCollectivesTest, SummaryNamesTheBuildTheDevicesAndNccl) {
  const std::string summary = CudaRuntimeSummary();
  if (!BuiltWithCuda()) {
    EXPECT_THAT(summary, HasSubstr("not built in"));
    return;
  }
  EXPECT_THAT(summary, HasSubstr("CUDA: built in"));
  EXPECT_THAT(summary, HasSubstr("CUDA runtime: "));
  EXPECT_THAT(summary, HasSubstr("CUDA driver: "));
  EXPECT_THAT(summary, HasSubstr("devices: " + std::to_string(VisibleCudaDeviceCount())));
  EXPECT_THAT(summary, HasSubstr("NCCL: library 2."));
}

// The check this GPU-less machine makes: asking for NCCL without CUDA or
// without a device is Unavailable, with the reason and what to do.
TEST(NcclCollectivesTest, TheFactoryIsUnavailableWithoutCudaOrADevice) {
  if (VisibleCudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is visible: nccl_device_test covers this machine";
  auto solo = MakeSoloCollectives();
  const auto start = Clock::now();
  auto made = MakeNcclCollectives(*solo);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), common::StatusCode::kUnavailable) << made.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
  const std::string& message = made.status().message();
  EXPECT_THAT(message, HasSubstr("NCCL device collectives (gang rank 0)"));
  EXPECT_THAT(message, HasSubstr("CPU ranks"));
  if (BuiltWithCuda()) {
    // No driver here: cudaGetDeviceCount fails (35, insufficient driver) or
    // answers no device (100); the message carries CUDA's own words.
    EXPECT_THAT(message, HasSubstr("no CUDA device is visible to this process"));
    EXPECT_THAT(message, HasSubstr("cudaGetDeviceCount"));
    EXPECT_THAT(message, HasSubstr("nvidia-smi"));
  } else {
    EXPECT_THAT(message, HasSubstr("built without CUDA"));
    EXPECT_THAT(message, HasSubstr("SHAMMIE_WITH_CUDA"));
  }
}

// Runs MakeNcclCollectives on a gang of `ranks` threads; rank r's result is
// results[r]. `absent` ranks join the gang but never call the factory.
// `timeout` bounds the gang's CPU collectives and the NCCL steps alike.
std::vector<common::Status> MakeOnGang(int ranks, std::vector<int> absent, Micros timeout) {
  auto net = std::make_shared<InProcNetwork>(ranks);
  std::vector<int> members;
  for (int r = 0; r < ranks; ++r) members.push_back(r);
  std::vector<common::Status> results(static_cast<size_t>(ranks), common::Internal("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      auto gang = net->Channel(r)->JoinGang(11, members, timeout);
      if (!gang.ok()) {
        results[static_cast<size_t>(r)] = gang.status();
        return;
      }
      if (std::find(absent.begin(), absent.end(), r) != absent.end()) {
        results[static_cast<size_t>(r)] = common::Status::Ok();
        return;
      }
      NcclOptions options;
      options.timeout = timeout;
      auto made = MakeNcclCollectives(**gang, options);
      results[static_cast<size_t>(r)] = made.ok() ? common::Status::Ok() : made.status();
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

// No rank of a gang of three has a device: every rank returns Unavailable
// promptly; none waits for the others in NCCL.
TEST(NcclCollectivesTest, AGangWithoutDevicesFailsOnEveryRankAtOnce) {
  if (VisibleCudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is visible";
  const auto start = Clock::now();
  auto results = MakeOnGang(3, {}, std::chrono::seconds(60));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_EQ(results[r].code(), common::StatusCode::kUnavailable) << "rank " << r << ": " << results[r].ToString();
    EXPECT_THAT(results[r].message(), HasSubstr("gang rank " + std::to_string(r)));
  }
}

// A peer that never takes part: creation fails with DeadlineExceeded after
// the timeout instead of hanging (the agreement step runs on every machine,
// before any NCCL call).
TEST(NcclCollectivesTest, APeerThatNeverComesIsADeadlineNotAHang) {
  if (!BuiltWithCuda()) GTEST_SKIP() << "the stub answers without talking to the gang";
  const auto start = Clock::now();
  auto results = MakeOnGang(2, {1}, std::chrono::seconds(1));
  const auto took = Clock::now() - start;
  EXPECT_EQ(results[0].code(), common::StatusCode::kDeadlineExceeded) << results[0].ToString();
  EXPECT_THAT(results[0].message(), HasSubstr("agreeing on devices"));
  EXPECT_GE(took, std::chrono::seconds(1));
  EXPECT_LT(took, std::chrono::seconds(10));
}

}  // namespace
}  // namespace shammie::cluster
