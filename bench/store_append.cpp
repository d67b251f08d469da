// Benchmark: streaming metrics into results.h5 through ResultStore.
// Workload (same as bench/store_append_h5py.py): RUNS runs x METRICS metrics x
// STEPS steps, appended in batches of BATCH points, as workers stream them;
// then every series is read back and checksummed.
// Usage: store_append OUT.h5 [RUNS METRICS STEPS BATCH]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/result_store.hpp"

using shammie::storage::MetricPoint;
using shammie::storage::ResultStore;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: store_append OUT.h5 [RUNS METRICS STEPS BATCH]\n");
    return 2;
  }
  const std::string path = argv[1];
  const int runs = argc > 2 ? std::atoi(argv[2]) : 100;
  const int metrics = argc > 3 ? std::atoi(argv[3]) : 4;
  const int steps = argc > 4 ? std::atoi(argv[4]) : 10000;
  const int batch = argc > 5 ? std::atoi(argv[5]) : 50;
  std::filesystem::remove(path);

  auto t0 = std::chrono::steady_clock::now();
  shammie::storage::ExperimentInfo info;
  info.experiment = "bench";
  auto store = ResultStore::Create(path, info);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 3;
  }
  std::vector<MetricPoint> buf(static_cast<size_t>(batch));
  for (int r = 0; r < runs; ++r) {
    const std::string id = "run" + std::to_string(r);
    if (!(*store)->BeginRun({id, "s", "k", "{}", r, {}}).ok()) return 3;
  }
  // Interleaved like a controller receiving batches from many workers.
  for (int s0 = 0; s0 < steps; s0 += batch) {
    for (int r = 0; r < runs; ++r) {
      const std::string id = "run" + std::to_string(r);
      for (int m = 0; m < metrics; ++m) {
        for (int i = 0; i < batch; ++i) buf[static_cast<size_t>(i)] = {s0 + i, 1.0 / (1 + s0 + i + r + m)};
        if (!(*store)->AppendMetrics(id, "m" + std::to_string(m), buf).ok()) return 3;
      }
    }
  }
  if (!(*store)->Close().ok()) return 3;
  auto t1 = std::chrono::steady_clock::now();

  auto reader = ResultStore::Open(path, ResultStore::Mode::kReadOnly);
  double checksum = 0;
  for (int r = 0; r < runs; ++r) {
    for (int m = 0; m < metrics; ++m) {
      auto series = (*reader)->ReadMetric("run" + std::to_string(r), "m" + std::to_string(m));
      if (!series.ok()) return 3;
      for (const auto& p : *series) checksum += p.value;
    }
  }
  auto t2 = std::chrono::steady_clock::now();
  const double write_s = std::chrono::duration<double>(t1 - t0).count();
  const double read_s = std::chrono::duration<double>(t2 - t1).count();
  std::printf("shammie write_s=%.3f read_s=%.3f points=%lld checksum=%.9f\n", write_s, read_s,
              static_cast<long long>(runs) * metrics * steps, checksum);
  return 0;
}
