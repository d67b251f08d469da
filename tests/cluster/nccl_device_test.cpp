// The NCCL device collectives on real GPUs. Built only with CUDA; each test
// skips (with a message) when it lacks the devices it needs, unless
// SHAMMIE_REQUIRE_GPU=1 is set (bench/gpu_check.sh sets it), which turns a
// missing device into a failure so a GPU machine cannot pass by skipping.
#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cluster/inproc_channel.hpp"
#include "cluster/nccl_collectives.hpp"

namespace shammie::cluster {
namespace {

using ::testing::HasSubstr;
using common::StatusCode;

bool GpuRequired() {
  const char* v = std::getenv("SHAMMIE_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

// Skips the test when fewer than `n` devices are visible; fails instead when
// one device is needed and SHAMMIE_REQUIRE_GPU=1.
#define SHAMMIE_NEED_DEVICES(n)                                                                             \
  do {                                                                                                      \
    const int have_ = VisibleCudaDeviceCount();                                                             \
    if (have_ < (n)) {                                                                                      \
      if ((n) == 1 && GpuRequired()) FAIL() << "SHAMMIE_REQUIRE_GPU=1 but no CUDA device is visible:\n"    \
                                            << CudaRuntimeSummary();                                       \
      GTEST_SKIP() << "needs " << (n) << " CUDA device(s), " << have_ << " visible";                        \
    }                                                                                                       \
  } while (false)

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call << ": " << cudaGetErrorString(cudaGetLastError())

// A device buffer for the test's lifetime.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

template <typename T>
void Upload(DeviceBuffer& buffer, const std::vector<T>& host) {
  ASSERT_EQ(cudaMemcpy(buffer.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& buffer, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), buffer.ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

// bfloat16 bits of a float that bfloat16 holds exactly (small integers).
uint16_t ToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return static_cast<uint16_t>(bits >> 16);
}

TEST(NcclDeviceTest, OneRankAllreduceAndBroadcastOnEachDtype) {
  SHAMMIE_NEED_DEVICES(1);
  auto solo = MakeSoloCollectives();
  NcclOptions options;
  options.device = 0;
  options.timeout = std::chrono::seconds(60);
  auto made = MakeNcclCollectives(*solo, options);
  ASSERT_TRUE(made.ok()) << made.status().ToString() << "\n" << CudaRuntimeSummary();
  DeviceCollectives& dc = **made;
  EXPECT_EQ(dc.rank(), 0);
  EXPECT_EQ(dc.size(), 1);
  EXPECT_EQ(dc.device(), 0);
  EXPECT_EQ(dc.backend(), "nccl");

  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  constexpr size_t kN = 1000;

  std::vector<float> f(kN);
  for (size_t i = 0; i < kN; ++i) f[i] = 0.5f * static_cast<float>(i);
  DeviceBuffer fb(kN * sizeof(float));
  Upload(fb, f);
  ASSERT_TRUE(dc.AllreduceSum(fb.ptr, kN, DeviceDType::kFloat32).ok());
  EXPECT_EQ(Download<float>(fb, kN), f);  // a gang of one: the sum is the input
  ASSERT_TRUE(dc.AllreduceSum(fb.ptr, kN, DeviceDType::kFloat32, stream).ok());
  EXPECT_EQ(Download<float>(fb, kN), f);

  std::vector<double> d(kN);
  for (size_t i = 0; i < kN; ++i) d[i] = 1.0 / static_cast<double>(i + 1);
  DeviceBuffer db(kN * sizeof(double));
  Upload(db, d);
  ASSERT_TRUE(dc.AllreduceSum(db.ptr, kN, DeviceDType::kFloat64, stream).ok());
  EXPECT_EQ(Download<double>(db, kN), d);

  std::vector<uint16_t> h(kN);
  for (size_t i = 0; i < kN; ++i) h[i] = ToBf16(static_cast<float>(i % 200));
  DeviceBuffer hb(kN * sizeof(uint16_t));
  Upload(hb, h);
  ASSERT_TRUE(dc.AllreduceSum(hb.ptr, kN, DeviceDType::kBFloat16, stream).ok());
  EXPECT_EQ(Download<uint16_t>(hb, kN), h);

  ASSERT_TRUE(dc.Broadcast(db.ptr, kN, DeviceDType::kFloat64, 0, stream).ok());
  EXPECT_EQ(Download<double>(db, kN), d);
  ASSERT_TRUE(dc.Broadcast(hb.ptr, kN * 2, DeviceDType::kUint8, 0).ok());
  EXPECT_EQ(Download<uint16_t>(hb, kN), h);
  EXPECT_TRUE(dc.AllreduceSum(fb.ptr, 0, DeviceDType::kFloat32).ok());  // nothing to do

  // Bad arguments are refused before NCCL and leave the communicator usable.
  auto bytes = dc.AllreduceSum(hb.ptr, kN, DeviceDType::kUint8);
  EXPECT_EQ(bytes.code(), StatusCode::kInvalidArgument) << bytes.ToString();
  auto root = dc.Broadcast(fb.ptr, kN, DeviceDType::kFloat32, 1);
  EXPECT_EQ(root.code(), StatusCode::kInvalidArgument) << root.ToString();
  EXPECT_THAT(root.message(), HasSubstr("root 1"));
  EXPECT_TRUE(dc.AllreduceSum(fb.ptr, kN, DeviceDType::kFloat32).ok());
  CUDA_OK(cudaStreamDestroy(stream));
}

// A gang rank that cannot get its device makes every rank fail at once; the
// others learn it from the agreement step and never enter NCCL.
TEST(NcclDeviceTest, ARankWithoutItsDeviceFailsTheWholeGangAtOnce) {
  SHAMMIE_NEED_DEVICES(1);
  auto net = std::make_shared<InProcNetwork>(2);
  std::vector<common::Status> results(2, common::Internal("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto gang = net->Channel(r)->JoinGang(21, {0, 1}, std::chrono::seconds(30));
      if (!gang.ok()) {
        results[static_cast<size_t>(r)] = gang.status();
        return;
      }
      NcclOptions options;
      options.device = r == 0 ? 0 : 999;
      auto made = MakeNcclCollectives(**gang, options);
      results[static_cast<size_t>(r)] = made.ok() ? common::Status::Ok() : made.status();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(results[1].code(), StatusCode::kInvalidArgument) << results[1].ToString();
  EXPECT_THAT(results[1].message(), HasSubstr("CUDA device 999 was asked for"));
  EXPECT_EQ(results[0].code(), StatusCode::kUnavailable) << results[0].ToString();
  EXPECT_THAT(results[0].message(), HasSubstr("1 of the gang's 2 ranks have no usable CUDA device"));
}

// Two ranks (threads) on two devices: the sum and a broadcast from rank 1.
TEST(NcclDeviceTest, TwoRanksSumAndBroadcast) {
  SHAMMIE_NEED_DEVICES(2);
  constexpr size_t kN = 4096;
  auto net = std::make_shared<InProcNetwork>(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::string& error = errors[static_cast<size_t>(r)];
      auto gang = net->Channel(r)->JoinGang(22, {0, 1}, std::chrono::seconds(60));
      if (!gang.ok()) return void(error = gang.status().ToString());
      NcclOptions options;
      options.device = r;
      options.timeout = std::chrono::seconds(60);
      auto made = MakeNcclCollectives(**gang, options);
      if (!made.ok()) return void(error = made.status().ToString());
      std::vector<float> x(kN);
      for (size_t i = 0; i < kN; ++i) x[i] = static_cast<float>((r + 1) * static_cast<int>(i % 1000));
      DeviceBuffer b(kN * sizeof(float));
      cudaMemcpy(b.ptr, x.data(), kN * sizeof(float), cudaMemcpyHostToDevice);
      if (auto s = (*made)->AllreduceSum(b.ptr, kN, DeviceDType::kFloat32); !s.ok()) return void(error = s.ToString());
      std::vector<float> y(kN);
      cudaMemcpy(y.data(), b.ptr, kN * sizeof(float), cudaMemcpyDeviceToHost);
      for (size_t i = 0; i < kN; ++i) {
        if (y[i] != 3.0f * static_cast<float>(i % 1000)) return void(error = "sum wrong at " + std::to_string(i));
      }
      std::vector<double> z(kN, static_cast<double>(r) + 0.25);
      DeviceBuffer zb(kN * sizeof(double));
      cudaMemcpy(zb.ptr, z.data(), kN * sizeof(double), cudaMemcpyHostToDevice);
      if (auto s = (*made)->Broadcast(zb.ptr, kN, DeviceDType::kFloat64, 1); !s.ok()) return void(error = s.ToString());
      cudaMemcpy(z.data(), zb.ptr, kN * sizeof(double), cudaMemcpyDeviceToHost);
      for (size_t i = 0; i < kN; ++i) {
        if (z[i] != 1.25) return void(error = "broadcast wrong at " + std::to_string(i));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

// A peer that skips a collective: the other rank gets DeadlineExceeded after
// the timeout (not a hang), the communicator is aborted, and later calls say
// so.
TEST(NcclDeviceTest, APeerThatSkipsACollectiveIsADeadlineNotAHang) {
  SHAMMIE_NEED_DEVICES(2);
  auto net = std::make_shared<InProcNetwork>(2);
  std::vector<common::Status> first(2, common::Internal("not run")), second(2, common::Internal("not run"));
  std::atomic<bool> rank0_done{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto gang = net->Channel(r)->JoinGang(23, {0, 1}, std::chrono::seconds(60));
      if (!gang.ok()) return void(first[static_cast<size_t>(r)] = gang.status());
      NcclOptions options;
      options.device = r;
      options.timeout = std::chrono::seconds(3);
      auto made = MakeNcclCollectives(**gang, options);
      if (!made.ok()) return void(first[static_cast<size_t>(r)] = made.status());
      if (r == 1) {  // never calls the allreduce
        while (!rank0_done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        first[1] = common::Status::Ok();
        return;
      }
      DeviceBuffer b(1024 * sizeof(float));
      const auto start = std::chrono::steady_clock::now();
      first[0] = (*made)->AllreduceSum(b.ptr, 1024, DeviceDType::kFloat32);
      EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
      second[0] = (*made)->AllreduceSum(b.ptr, 1024, DeviceDType::kFloat32);
      rank0_done.store(true);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(first[1].ok()) << first[1].ToString();
  EXPECT_EQ(first[0].code(), StatusCode::kDeadlineExceeded) << first[0].ToString();
  EXPECT_THAT(first[0].message(), HasSubstr("ncclAllReduce"));
  EXPECT_EQ(second[0].code(), StatusCode::kFailedPrecondition) << second[0].ToString();
  EXPECT_THAT(second[0].message(), HasSubstr("aborted after an earlier error"));
}

}  // namespace
}  // namespace shammie::cluster
