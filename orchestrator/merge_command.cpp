// `shammie merge DIR`: one results.h5 from the shards of a job array
// (DIR/shards/<i>/results.h5, docs/slurm.md). Every job once: a job in
// several shards (shards re-cut by a second submission) is taken from a
// shard where it is done, else from the first. Artifact paths are rewritten
// to stay relative to DIR. Atomic: DIR/results.h5.tmp, then a rename.
#include <algorithm>
#include <filesystem>
#include <map>
#include <unordered_map>

#include "cluster/slurm.hpp"
#include "orchestrator/commands.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

namespace fs = std::filesystem;

namespace {

struct Shard {
  int64_t index = 0;
  std::string dir;
  std::unique_ptr<storage::ResultStore> store;
};

common::Status CopyRun(storage::ResultStore& from, storage::ResultStore& to, const std::string& id,
                       const std::string& shard_prefix) {
  SHAMMIE_ASSIGN_OR_RETURN(storage::RunRecord run, from.ReadRun(id));
  for (auto& [name, path] : run.artifacts) {
    if (!path.empty() && path.front() != '/') path = shard_prefix + path;
  }
  SHAMMIE_RETURN_IF_ERROR(to.BeginRun(run));
  SHAMMIE_ASSIGN_OR_RETURN(auto metrics, from.ListMetrics(id));
  for (const auto& name : metrics) {
    SHAMMIE_ASSIGN_OR_RETURN(auto points, from.ReadMetric(id, name));
    SHAMMIE_RETURN_IF_ERROR(to.AppendMetrics(id, name, points));
  }
  SHAMMIE_ASSIGN_OR_RETURN(auto tables, from.ListTables(id));
  for (const auto& name : tables) {
    SHAMMIE_ASSIGN_OR_RETURN(auto table, from.ReadTable(id, name));
    SHAMMIE_RETURN_IF_ERROR(to.AppendTable(id, name, table));
  }
  return common::Status::Ok();
}

}  // namespace

int MergeCommand(const std::string& dir, std::ostream& out, std::ostream& err) {
  std::vector<Shard> shards;
  std::vector<int64_t> missing;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir + "/shards", ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int64_t index = std::stoll(name);
    if (!fs::exists(entry.path() / "results.h5")) {
      missing.push_back(index);
      continue;
    }
    shards.push_back({index, entry.path().string(), nullptr});
  }
  if (shards.empty()) {
    err << "shammie merge: no shard results under " << dir
        << "/shards/*/results.h5 (was it submitted with `shammie submit --array N`, and has a shard finished?)\n";
    return kExitBadInput;
  }
  std::sort(shards.begin(), shards.end(), [](const Shard& a, const Shard& b) { return a.index < b.index; });
  std::sort(missing.begin(), missing.end());
  for (auto& s : shards) {
    auto store = storage::ResultStore::Open(s.dir + "/results.h5", storage::ResultStore::Mode::kReadOnly);
    if (!store.ok()) {
      err << "shammie merge: " << s.dir << "/results.h5: " << store.status().ToString() << "\n";
      return common::ExitCodeFor(store.status().code());
    }
    s.store = std::move(*store);
    if (s.store->info().spec_hash != shards.front().store->info().spec_hash) {
      err << "shammie merge: shard " << s.index << " ran another version of the experiment (spec hash "
          << s.store->info().spec_hash << ", shard " << shards.front().index << " has "
          << shards.front().store->info().spec_hash << "); merge only shards of one submission\n";
      return kExitBadInput;
    }
  }

  // Every job once: done wins, then the lowest shard.
  struct Pick {
    size_t shard;
    storage::JobRecord row;
  };
  std::vector<std::string> order;
  std::unordered_map<std::string, Pick> picks;
  int64_t duplicates = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    auto rows = shards[i].store->ReadJobs();
    if (!rows.ok()) {
      err << "shammie merge: " << shards[i].dir << "/results.h5: " << rows.status().ToString() << "\n";
      return common::ExitCodeFor(rows.status().code());
    }
    for (auto& row : *rows) {
      const std::string id = row.id;
      auto it = picks.find(id);
      if (it == picks.end()) {
        order.push_back(id);
        picks.emplace(id, Pick{i, std::move(row)});
        continue;
      }
      ++duplicates;
      if (it->second.row.status != storage::JobStatus::kDone && row.status == storage::JobStatus::kDone) {
        it->second = Pick{i, std::move(row)};
      }
    }
  }

  storage::ExperimentInfo info = shards.front().store->info();
  info.command_line = "shammie merge " + cluster::ShellQuote(dir);
  std::string end_time;
  for (const auto& s : shards) {
    info.start_time = std::min(info.start_time, s.store->info().start_time);
    end_time = std::max(end_time, s.store->info().end_time);
  }
  const std::string final_path = dir + "/results.h5";
  const std::string tmp = final_path + ".tmp";
  fs::remove(tmp, ec);
  auto fail = [&](const common::Status& s) {
    err << "shammie merge: " << s.ToString() << "\n";
    fs::remove(tmp, ec);
    return common::ExitCodeFor(s.code());
  };
  auto created = storage::ResultStore::Create(tmp, info);
  if (!created.ok()) return fail(created.status());
  std::unique_ptr<storage::ResultStore> store = std::move(*created);
  std::vector<storage::JobRecord> rows;
  rows.reserve(order.size());
  int64_t done = 0;
  for (const auto& id : order) {
    rows.push_back(picks.at(id).row);
    done += rows.back().status == storage::JobStatus::kDone ? 1 : 0;
  }
  if (auto s = store->InsertJobs(rows); !s.ok()) return fail(s);
  int64_t runs = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    auto listed = shards[i].store->ListRuns();
    if (!listed.ok()) return fail(listed.status());
    const std::string prefix = "shards/" + std::to_string(shards[i].index) + "/";
    for (const auto& run : *listed) {
      auto it = picks.find(run.job_id);
      if (it == picks.end() || it->second.shard != i) continue;
      if (auto s = CopyRun(*shards[i].store, *store, run.job_id, prefix); !s.ok()) return fail(s);
      ++runs;
    }
  }
  if (!end_time.empty()) {
    if (auto s = store->SetEndTime(end_time); !s.ok()) return fail(s);
  }
  if (auto s = store->Close(); !s.ok()) return fail(s);
  store.reset();
  fs::rename(tmp, final_path, ec);
  if (ec) return fail(common::Internal("cannot rename " + tmp + " to " + final_path + ": " + ec.message()));
  out << "shammie merge: " << shards.size() << " shard" << (shards.size() == 1 ? "" : "s") << " -> " << final_path
      << ": " << order.size() << " jobs (" << done << " done), " << runs << " runs";
  if (duplicates > 0) out << "; " << duplicates << " duplicate rows dropped";
  out << "\n";
  if (!missing.empty()) {
    out << "shammie merge: shard" << (missing.size() == 1 ? "" : "s");
    for (int64_t m : missing) out << " " << m;
    out << " ha" << (missing.size() == 1 ? "s" : "ve") << " no results.h5 yet (still queued or running): merge again "
        << "when " << (missing.size() == 1 ? "it ends" : "they end") << "\n";
  }
  return kExitOk;
}

}  // namespace shammie::orchestrator
