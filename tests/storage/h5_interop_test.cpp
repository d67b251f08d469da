// results.h5 written by the store reads back identically in C++, h5py and
// h5dump (the tools researchers use).
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "storage/result_store.hpp"
#include "tests/test_util.hpp"

namespace shammie::storage {
namespace {

using nlohmann::json;

// Writes a store with a bit of everything and returns its path.
std::string WriteSample(const testing::ScratchDir& dir) {
  const std::string path = dir.File("results.h5");
  ExperimentInfo info;
  info.experiment = "interop";
  info.spec_text = "[experiment]\nname = \"interop\"\n";
  info.spec_hash = "ffeeddccbbaa99887766554433221100";
  info.shammie_version = "0.1.0";
  info.git_commit = "deadbeef";
  info.build_options = "test";
  info.command_line = "shammie run interop.toml --out runs/x";
  info.start_time = "2026-11-26T10:00:00Z";
  auto store = ResultStore::Create(path, info);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  for (int j = 0; j < 3; ++j) {
    std::string id = "job" + std::to_string(j);
    EXPECT_TRUE((*store)->UpsertJob({id, "train", "toy.quadratic", j == 2 ? JobStatus::kFailed : JobStatus::kDone, j + 1,
                                     std::to_string(j + 1), "node-" + std::to_string(j), 100.0 + j, 101.5 + j,
                                     j == 2 ? "aborted: worker 3 died" : "", 1000 + j, "{\"j\":" + std::to_string(j) + "}"})
                    .ok());
    EXPECT_TRUE((*store)->BeginRun({id, "train", "toy.quadratic", "{\"learning_rate\":0." + std::to_string(j + 1) + "}",
                                    1000 + j, j ? std::vector<std::string>{"job0"} : std::vector<std::string>{}})
                    .ok());
    std::vector<MetricPoint> loss;
    for (int s = 0; s < 5000; ++s) loss.push_back({s * 10, std::exp(-0.001 * s * (j + 1)) + 1e-17 * s});
    EXPECT_TRUE((*store)->AppendMetrics(id, "loss", loss).ok());
  }
  Table t;
  t.columns.push_back({"autorater", std::vector<double>{0.1, 0.9, -0.0, 1e300}});
  t.columns.push_back({"human", std::vector<int64_t>{0, 1, -7, 9007199254740993}});
  t.columns.push_back({"prompt", std::vector<std::string>{"2+2=?", "", "naïve ✓", "line\nbreak"}});
  EXPECT_TRUE((*store)->AppendTable("job1", "labels", t).ok());
  EXPECT_TRUE((*store)->Close().ok());
  return path;
}

// What the C++ API reads back, as JSON for the Python checker.
json ReadBackAsJson(const std::string& path) {
  auto store = ResultStore::Open(path, ResultStore::Mode::kReadOnly);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  const auto& info = (*store)->info();
  json out;
  out["attributes"] = {{"experiment", info.experiment},       {"spec", info.spec_text},
                       {"spec_hash", info.spec_hash},         {"shammie_version", info.shammie_version},
                       {"git_commit", info.git_commit},       {"build_options", info.build_options},
                       {"command_line", info.command_line},   {"start_time", info.start_time},
                       {"end_time", info.end_time},           {"shammie_layout_version", info.layout_version}};
  out["jobs"] = json::array();
  auto jobs = (*store)->ReadJobs();
  EXPECT_TRUE(jobs.ok());
  for (const auto& j : *jobs) {
    out["jobs"].push_back({{"id", j.id}, {"stage", j.stage}, {"kind", j.kind},
                           {"status", std::string(JobStatusName(j.status))}, {"attempts", j.attempts},
                           {"ranks", j.ranks}, {"host", j.host}, {"start_time", j.start_time},
                           {"end_time", j.end_time}, {"error", j.error}, {"seed", j.seed}, {"config", j.config_json}});
  }
  out["runs"] = json::object();
  auto runs = (*store)->ListRuns();
  EXPECT_TRUE(runs.ok());
  for (const auto& r : *runs) {
    json run = {{"stage", r.stage}, {"kind", r.kind}, {"config", r.config_json}, {"seed", r.seed},
                {"inputs", r.inputs}, {"metrics", json::object()}, {"tables", json::object()}};
    auto metrics = (*store)->ListMetrics(r.job_id);
    EXPECT_TRUE(metrics.ok());
    for (const auto& m : *metrics) {
      json points = json::array();
      auto series = (*store)->ReadMetric(r.job_id, m);
      EXPECT_TRUE(series.ok());
      for (const auto& p : *series) points.push_back({p.step, p.value});
      run["metrics"][m] = points;
    }
    auto tables = (*store)->ListTables(r.job_id);
    EXPECT_TRUE(tables.ok());
    for (const auto& name : *tables) {
      json columns = json::array();
      auto table = (*store)->ReadTable(r.job_id, name);
      EXPECT_TRUE(table.ok());
      for (const auto& c : table->columns) {
        json col = {{"name", c.name}};
        std::visit(
            [&](const auto& v) {
              using T = typename std::decay_t<decltype(v)>::value_type;
              col["type"] = std::is_same_v<T, std::string> ? "string" : std::is_same_v<T, double> ? "float" : "int";
              col["values"] = v;
            },
            c.values);
        columns.push_back(col);
      }
      run["tables"][name] = columns;
    }
    out["runs"][r.job_id] = run;
  }
  return out;
}

TEST(H5InteropTest, H5pyReadsWhatCppReads) {
  testing::ScratchDir dir("h5py-interop");
  const std::string path = WriteSample(dir);
  json expected = ReadBackAsJson(path);
  ASSERT_EQ(expected["runs"].size(), 3u);
  ASSERT_EQ(expected["runs"]["job1"]["tables"]["labels"][1]["values"][3], 9007199254740993LL);
  testing::WriteFile(dir.File("expected.json"), expected.dump());
  auto r = testing::RunCommand("/usr/bin/python3 " SHAMMIE_SOURCE_DIR "/tests/storage/check_with_h5py.py " + path +
                               " " + dir.File("expected.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("h5py reads the same store as C++"), std::string::npos) << r.output;
}

TEST(H5InteropTest, H5dumpShowsTheLayout) {
  testing::ScratchDir dir("h5dump-interop");
  const std::string path = WriteSample(dir);
  auto header = testing::RunCommand("h5dump -H " + path);
  ASSERT_EQ(header.exit_code, 0) << header.output;
  for (const char* expected : {"ATTRIBUTE \"shammie_layout_version\"", "DATASET \"jobs\"", "GROUP \"runs\"",
                               "GROUP \"job1\"", "DATASET \"loss\"", "DATASET \"labels\"", "H5T_STD_I64LE \"step\"",
                               "H5T_IEEE_F64LE \"value\""}) {
    EXPECT_NE(header.output.find(expected), std::string::npos) << expected << "\n" << header.output;
  }
  auto attr = testing::RunCommand("h5dump -a /experiment " + path);
  ASSERT_EQ(attr.exit_code, 0) << attr.output;
  EXPECT_NE(attr.output.find("\"interop\""), std::string::npos) << attr.output;
  auto jobs = testing::RunCommand("h5dump -d /jobs " + path);
  ASSERT_EQ(jobs.exit_code, 0) << jobs.output;
  EXPECT_NE(jobs.output.find("\"aborted: worker 3 died\""), std::string::npos) << jobs.output;
}

}  // namespace
}  // namespace shammie::storage
