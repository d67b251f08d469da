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
  const std::string& artifact_dir() const override { return artifact_dir_; }
  const std::vector<Artifact>& inputs() const override { return inputs_; }
  const std::vector<Artifact>& previous_artifacts() const override { return previous_; }
  common::Status RecordArtifact(std::string_view name, const std::string& path) override {
    if (artifact_dir_.empty()) return common::FailedPrecondition("this context keeps no artifacts");
    for (auto& a : recorded_) {
      if (a.name == name) {
        a.path = path;
        return common::Status::Ok();
      }
    }
    recorded_.push_back({job_id_, std::string(name), path});
    return common::Status::Ok();
  }

  // Files: where artifacts go, what upstream jobs left, what earlier attempts left.
  void set_artifact_dir(std::string dir) { artifact_dir_ = std::move(dir); }
  void set_inputs(std::vector<Artifact> inputs) { inputs_ = std::move(inputs); }
  void set_previous_artifacts(std::vector<Artifact> previous) { previous_ = std::move(previous); }
  // Runs a gang member with the gang's collectives (tests of data parallelism).
  void set_collectives(std::unique_ptr<cluster::Collectives> c) { collectives_ = std::move(c); }
  // What this job recorded (latest per name).
  const std::vector<Artifact>& recorded() const { return recorded_; }

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
  std::string artifact_dir_;
  std::vector<Artifact> inputs_, previous_, recorded_;
  std::unique_ptr<cluster::Collectives> collectives_ = cluster::MakeSoloCollectives();
  std::map<std::string, std::vector<storage::MetricPoint>> metrics_;
  std::map<std::string, storage::Table> tables_;
};

}  // namespace shammie::workers
