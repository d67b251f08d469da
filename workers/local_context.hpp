// An in-process JobContext: runs a job on the calling thread and keeps its
// metrics and tables in memory. For tests, benchmarks and tools; the engine
// uses its own MPI-backed context with the same interface.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "workers/job.hpp"

namespace shammie::workers {

class LocalJobContext final : public JobContext {
 public:
  LocalJobContext(std::string job_id, nlohmann::json config, uint64_t seed, int attempt = 1)
      : job_id_(std::move(job_id)), config_(std::move(config)), seed_(seed), attempt_(attempt) {}

  const std::string& job_id() const override { return job_id_; }
  const nlohmann::json& config() const override { return config_; }
  uint64_t seed() const override { return seed_; }
  int attempt() const override { return attempt_; }
  void ReportMetric(std::string_view name, int64_t step, double value) override {
    metrics_[std::string(name)].push_back({step, value});
  }
  common::Status WriteTable(std::string_view name, const storage::Table& table) override {
    SHAMMIE_RETURN_IF_ERROR(table.Validate());
    tables_[std::string(name)] = table;
    return common::Status::Ok();
  }
  bool cancelled() const override { return cancelled_.load(); }
  cluster::Collectives& collectives() override { return *collectives_; }

  // Raised from any thread, like a signal at the controller would.
  void Cancel() { cancelled_.store(true); }
  const std::map<std::string, std::vector<storage::MetricPoint>>& metrics() const { return metrics_; }
  const std::map<std::string, storage::Table>& tables() const { return tables_; }

 private:
  std::string job_id_;
  nlohmann::json config_;
  uint64_t seed_;
  int attempt_;
  std::atomic<bool> cancelled_{false};
  std::unique_ptr<cluster::Collectives> collectives_ = cluster::MakeSoloCollectives();
  std::map<std::string, std::vector<storage::MetricPoint>> metrics_;
  std::map<std::string, storage::Table> tables_;
};

}  // namespace shammie::workers
