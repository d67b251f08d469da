#include "storage/result_store.hpp"

#include <sys/stat.h>

#include <cstddef>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/text.hpp"
#include "storage/h5.hpp"

namespace shammie::storage {

using common::StatusCode;

namespace {

constexpr const char* kJobsPath = "/jobs";
constexpr const char* kRunsPath = "/runs";

// In-memory row of /jobs; strings are borrowed pointers when writing and
// HDF5-allocated when reading (released with H5Dvlen_reclaim).
struct JobRow {
  const char* id;
  const char* stage;
  const char* kind;
  const char* status;
  int32_t attempts;
  const char* ranks;
  const char* host;
  double start_time;
  double end_time;
  const char* error;
  int64_t seed;
  const char* config;
};

hid_t NewJobRowType(hid_t str) {
  hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(JobRow));
  if (t < 0) return t;
  bool ok = H5Tinsert(t, "id", offsetof(JobRow, id), str) >= 0 &&
            H5Tinsert(t, "stage", offsetof(JobRow, stage), str) >= 0 &&
            H5Tinsert(t, "kind", offsetof(JobRow, kind), str) >= 0 &&
            H5Tinsert(t, "status", offsetof(JobRow, status), str) >= 0 &&
            H5Tinsert(t, "attempts", offsetof(JobRow, attempts), H5T_NATIVE_INT32) >= 0 &&
            H5Tinsert(t, "ranks", offsetof(JobRow, ranks), str) >= 0 &&
            H5Tinsert(t, "host", offsetof(JobRow, host), str) >= 0 &&
            H5Tinsert(t, "start_time", offsetof(JobRow, start_time), H5T_NATIVE_DOUBLE) >= 0 &&
            H5Tinsert(t, "end_time", offsetof(JobRow, end_time), H5T_NATIVE_DOUBLE) >= 0 &&
            H5Tinsert(t, "error", offsetof(JobRow, error), str) >= 0 &&
            H5Tinsert(t, "seed", offsetof(JobRow, seed), H5T_NATIVE_INT64) >= 0 &&
            H5Tinsert(t, "config", offsetof(JobRow, config), str) >= 0;
  if (!ok) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

hid_t NewMetricType() {
  hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(MetricPoint));
  if (t < 0) return t;
  if (H5Tinsert(t, "step", offsetof(MetricPoint, step), H5T_NATIVE_INT64) < 0 ||
      H5Tinsert(t, "value", offsetof(MetricPoint, value), H5T_NATIVE_DOUBLE) < 0) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

// Creates an empty, chunked, extendible 1-D dataset of `type`.
hid_t CreateExtendible(hid_t parent, const std::string& name, hid_t type, hsize_t chunk) {
  hsize_t dims[1] = {0};
  hsize_t max_dims[1] = {H5S_UNLIMITED};
  h5::Handle space(H5Screate_simple(1, dims, max_dims));
  h5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  h5::Handle lcpl(H5Pcreate(H5P_LINK_CREATE));
  if (!space.valid() || !dcpl.valid() || !lcpl.valid()) return -1;
  if (H5Pset_chunk(dcpl.get(), 1, &chunk) < 0) return -1;
  if (H5Pset_create_intermediate_group(lcpl.get(), 1) < 0) return -1;
  return H5Dcreate2(parent, name.c_str(), type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT);
}

// Appends `count` elements of `mem_type` from `data` to a 1-D extendible dataset.
Status AppendRows(hid_t dataset, hid_t mem_type, const void* data, hsize_t count, const std::string& context) {
  if (count == 0) return Status::Ok();
  SHAMMIE_H5_HANDLE(space, H5Dget_space(dataset), context);
  hsize_t old_size[1] = {0};
  SHAMMIE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), old_size, nullptr), context);
  hsize_t new_size[1] = {old_size[0] + count};
  SHAMMIE_H5_CHECK(H5Dset_extent(dataset, new_size), context);
  SHAMMIE_H5_HANDLE(file_space, H5Dget_space(dataset), context);
  hsize_t start[1] = {old_size[0]};
  hsize_t n[1] = {count};
  SHAMMIE_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, n, nullptr), context);
  SHAMMIE_H5_HANDLE(mem_space, H5Screate_simple(1, n, nullptr), context);
  SHAMMIE_H5_CHECK(H5Dwrite(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data), context);
  return Status::Ok();
}

Result<hsize_t> DatasetLength(hid_t dataset, const std::string& context) {
  SHAMMIE_H5_HANDLE(space, H5Dget_space(dataset), context);
  if (H5Sget_simple_extent_ndims(space.get()) != 1) return common::DataLoss(context + ": dataset is not 1-D");
  hsize_t dims[1] = {0};
  SHAMMIE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr), context);
  return dims[0];
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status CheckName(std::string_view what, std::string_view name) {
  if (!common::IsSafeName(name)) {
    return common::InvalidArgument(std::string(what) + " name \"" + std::string(name) +
                                   "\" is not valid: use letters, digits, `_`, `.` and `-`");
  }
  return Status::Ok();
}

std::string RunPath(std::string_view job_id) { return std::string(kRunsPath) + "/" + std::string(job_id); }

Status WriteInfo(hid_t root, const ExperimentInfo& info) {
  SHAMMIE_RETURN_IF_ERROR(h5::WriteIntAttribute(root, "shammie_layout_version", info.layout_version));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "experiment", info.experiment));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "spec", info.spec_text));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "spec_hash", info.spec_hash));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "shammie_version", info.shammie_version));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "git_commit", info.git_commit));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "build_options", info.build_options));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "command_line", info.command_line));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "start_time", info.start_time));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(root, "end_time", info.end_time));
  return Status::Ok();
}

Result<ExperimentInfo> ReadInfo(hid_t root) {
  ExperimentInfo info;
  SHAMMIE_ASSIGN_OR_RETURN(info.layout_version, h5::ReadIntAttribute(root, "shammie_layout_version"));
  SHAMMIE_ASSIGN_OR_RETURN(info.experiment, h5::ReadStringAttribute(root, "experiment"));
  SHAMMIE_ASSIGN_OR_RETURN(info.spec_text, h5::ReadStringAttribute(root, "spec"));
  SHAMMIE_ASSIGN_OR_RETURN(info.spec_hash, h5::ReadStringAttribute(root, "spec_hash"));
  SHAMMIE_ASSIGN_OR_RETURN(info.shammie_version, h5::ReadStringAttribute(root, "shammie_version"));
  SHAMMIE_ASSIGN_OR_RETURN(info.git_commit, h5::ReadStringAttribute(root, "git_commit"));
  SHAMMIE_ASSIGN_OR_RETURN(info.build_options, h5::ReadStringAttribute(root, "build_options"));
  SHAMMIE_ASSIGN_OR_RETURN(info.command_line, h5::ReadStringAttribute(root, "command_line"));
  SHAMMIE_ASSIGN_OR_RETURN(info.start_time, h5::ReadStringAttribute(root, "start_time"));
  SHAMMIE_ASSIGN_OR_RETURN(info.end_time, h5::ReadStringAttribute(root, "end_time"));
  return info;
}

}  // namespace

std::string_view JobStatusName(JobStatus status) {
  switch (status) {
    case JobStatus::kPending: return "pending";
    case JobStatus::kRunning: return "running";
    case JobStatus::kDone: return "done";
    case JobStatus::kFailed: return "failed";
    case JobStatus::kCancelled: return "cancelled";
    case JobStatus::kSkipped: return "skipped";
  }
  return "?";
}

std::optional<JobStatus> JobStatusFromName(std::string_view name) {
  for (JobStatus s : {JobStatus::kPending, JobStatus::kRunning, JobStatus::kDone, JobStatus::kFailed,
                      JobStatus::kCancelled, JobStatus::kSkipped}) {
    if (JobStatusName(s) == name) return s;
  }
  return std::nullopt;
}

size_t Column::size() const {
  return std::visit([](const auto& v) { return v.size(); }, values);
}

Status Table::Validate() const {
  if (columns.empty()) return common::InvalidArgument("table has no columns");
  for (size_t i = 0; i < columns.size(); ++i) {
    SHAMMIE_RETURN_IF_ERROR(CheckName("column", columns[i].name));
    for (size_t j = 0; j < i; ++j) {
      if (columns[j].name == columns[i].name) {
        return common::InvalidArgument("table has two columns named \"" + columns[i].name + "\"");
      }
    }
    if (columns[i].size() != columns[0].size()) {
      return common::InvalidArgument("column \"" + columns[i].name + "\" has " + std::to_string(columns[i].size()) +
                                     " rows, column \"" + columns[0].name + "\" has " +
                                     std::to_string(columns[0].size()));
    }
  }
  return Status::Ok();
}

struct ResultStore::Impl {
  h5::Handle file;
  h5::Handle str_type;   // vlen UTF-8 string
  h5::Handle job_type;   // JobRow compound
  h5::Handle metric_type;
};

ResultStore::ResultStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ResultStore::~ResultStore() = default;

namespace {
Result<std::unique_ptr<ResultStore::Impl>> NewImpl() {
  auto impl = std::make_unique<ResultStore::Impl>();
  impl->str_type = h5::Handle(h5::NewVlenStringType());
  if (!impl->str_type.valid()) return h5::Failure(StatusCode::kInternal, "NewVlenStringType()", __FILE__, __LINE__, "setting up types");
  impl->job_type = h5::Handle(NewJobRowType(impl->str_type.get()));
  impl->metric_type = h5::Handle(NewMetricType());
  if (!impl->job_type.valid() || !impl->metric_type.valid()) {
    return h5::Failure(StatusCode::kInternal, "H5Tcreate(H5T_COMPOUND)", __FILE__, __LINE__, "setting up types");
  }
  return impl;
}
}  // namespace

Result<std::unique_ptr<ResultStore>> ResultStore::Create(const std::string& path, const ExperimentInfo& info) {
  h5::SilenceAutomaticErrors();
  if (FileExists(path)) {
    return common::AlreadyExists("results file " + path + " already exists; open it to append, or choose another run directory");
  }
  SHAMMIE_ASSIGN_OR_RETURN(auto impl, NewImpl());
  const std::string context = "creating " + path;
  // HDF5 1.8+ object formats: compact groups and attributes (a run's group
  // costs hundreds of bytes instead of kilobytes, and is created several
  // times faster). h5py and every HDF5 since 1.8 read them.
  SHAMMIE_H5_HANDLE(fapl, H5Pcreate(H5P_FILE_ACCESS), context);
  SHAMMIE_H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), context);
  impl->file = h5::Handle(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()));
  if (!impl->file.valid()) return h5::Failure(StatusCode::kUnavailable, "H5Fcreate", __FILE__, __LINE__, context);
  hid_t file = impl->file.get();
  SHAMMIE_RETURN_IF_ERROR(WriteInfo(file, info).WithContext(context));
  SHAMMIE_H5_HANDLE(jobs, CreateExtendible(file, kJobsPath, impl->job_type.get(), 64), context);
  SHAMMIE_H5_HANDLE(runs, H5Gcreate2(file, kRunsPath, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), context);
  SHAMMIE_H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL), context);

  std::unique_ptr<ResultStore> store(new ResultStore(std::move(impl)));
  store->path_ = path;
  store->info_ = info;
  store->mode_ = Mode::kReadWrite;
  return store;
}

Result<std::unique_ptr<ResultStore>> ResultStore::Open(const std::string& path, Mode mode) {
  h5::SilenceAutomaticErrors();
  if (!FileExists(path)) return common::NotFound("results file " + path + " does not exist");
  htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 == 0) {
    return common::InvalidArgument(path + " is not an HDF5 file (no HDF5 signature): not a shammie results file");
  }
  if (is_hdf5 < 0) {
    return h5::Failure(StatusCode::kDataLoss, "H5Fis_hdf5", __FILE__, __LINE__, "reading " + path);
  }
  SHAMMIE_ASSIGN_OR_RETURN(auto impl, NewImpl());
  const unsigned flags = mode == Mode::kReadWrite ? H5F_ACC_RDWR : H5F_ACC_RDONLY;
  impl->file = h5::Handle(H5Fopen(path.c_str(), flags, H5P_DEFAULT));
  if (!impl->file.valid()) {
    return h5::Failure(StatusCode::kDataLoss, "H5Fopen", __FILE__, __LINE__,
                       "cannot open " + path + " (truncated or corrupt?)");
  }
  hid_t file = impl->file.get();
  if (!h5::HasAttribute(file, "shammie_layout_version")) {
    return common::InvalidArgument(path + " is an HDF5 file but not a shammie results file (no shammie_layout_version attribute)");
  }
  SHAMMIE_ASSIGN_OR_RETURN(int64_t layout, h5::ReadIntAttribute(file, "shammie_layout_version"));
  if (layout > kLayoutVersion) {
    return common::FailedPrecondition(path + " was written with results layout v" + std::to_string(layout) +
                                      " by a newer shammie; this build reads up to v" +
                                      std::to_string(kLayoutVersion) + ": upgrade shammie to read it");
  }
  if (layout < 1) return common::DataLoss(path + ": invalid results layout version " + std::to_string(layout));
  auto info = ReadInfo(file);
  if (!info.ok()) return info.status().WithContext("reading " + path);
  if (!h5::LinkExists(file, "jobs") || !h5::LinkExists(file, "runs")) {
    return common::DataLoss(path + " lacks /jobs or /runs: the file is damaged");
  }

  std::unique_ptr<ResultStore> store(new ResultStore(std::move(impl)));
  store->path_ = path;
  store->info_ = *info;
  store->mode_ = mode;
  auto jobs = store->ReadJobs();
  if (!jobs.ok()) return jobs.status();
  for (size_t i = 0; i < jobs->size(); ++i) store->job_rows_[(*jobs)[i].id] = static_cast<int64_t>(i);
  return store;
}

Status ResultStore::UpsertJob(const JobRecord& job) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  SHAMMIE_RETURN_IF_ERROR(CheckName("job id", job.id));
  const std::string context = "writing job " + job.id + " to " + path_;
  std::string status(JobStatusName(job.status));
  JobRow row{job.id.c_str(),   job.stage.c_str(), job.kind.c_str(), status.c_str(),  job.attempts,
             job.ranks.c_str(), job.host.c_str(),  job.start_time,  job.end_time,   job.error.c_str(),
             job.seed,          job.config_json.c_str()};
  SHAMMIE_H5_HANDLE(dataset, H5Dopen2(impl_->file.get(), kJobsPath, H5P_DEFAULT), context);
  auto it = job_rows_.find(job.id);
  if (it == job_rows_.end()) {
    SHAMMIE_ASSIGN_OR_RETURN(hsize_t n, DatasetLength(dataset.get(), context));
    SHAMMIE_RETURN_IF_ERROR(AppendRows(dataset.get(), impl_->job_type.get(), &row, 1, context));
    job_rows_[job.id] = static_cast<int64_t>(n);
    return Status::Ok();
  }
  SHAMMIE_H5_HANDLE(file_space, H5Dget_space(dataset.get()), context);
  hsize_t start[1] = {static_cast<hsize_t>(it->second)};
  hsize_t count[1] = {1};
  SHAMMIE_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), context);
  SHAMMIE_H5_HANDLE(mem_space, H5Screate_simple(1, count, nullptr), context);
  SHAMMIE_H5_CHECK(H5Dwrite(dataset.get(), impl_->job_type.get(), mem_space.get(), file_space.get(), H5P_DEFAULT, &row),
                   context);
  return Status::Ok();
}

Status ResultStore::InsertJobs(std::span<const JobRecord> jobs) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  if (jobs.empty()) return Status::Ok();
  const std::string context = "writing " + std::to_string(jobs.size()) + " jobs to " + path_;
  std::vector<std::string> statuses;
  statuses.reserve(jobs.size());
  std::vector<JobRow> rows;
  rows.reserve(jobs.size());
  for (const JobRecord& job : jobs) {
    SHAMMIE_RETURN_IF_ERROR(CheckName("job id", job.id));
    if (job_rows_.count(job.id)) return common::AlreadyExists("job " + job.id + " is already in " + path_);
    statuses.emplace_back(JobStatusName(job.status));
    rows.push_back(JobRow{job.id.c_str(), job.stage.c_str(), job.kind.c_str(), statuses.back().c_str(), job.attempts,
                          job.ranks.c_str(), job.host.c_str(), job.start_time, job.end_time, job.error.c_str(),
                          job.seed, job.config_json.c_str()});
  }
  SHAMMIE_H5_HANDLE(dataset, H5Dopen2(impl_->file.get(), kJobsPath, H5P_DEFAULT), context);
  SHAMMIE_ASSIGN_OR_RETURN(hsize_t n, DatasetLength(dataset.get(), context));
  SHAMMIE_RETURN_IF_ERROR(AppendRows(dataset.get(), impl_->job_type.get(), rows.data(), rows.size(), context));
  for (size_t i = 0; i < jobs.size(); ++i) job_rows_[jobs[i].id] = static_cast<int64_t>(n + i);
  return Status::Ok();
}

Result<std::vector<JobRecord>> ResultStore::ReadJobs() {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  const std::string context = "reading /jobs of " + path_;
  SHAMMIE_H5_HANDLE(dataset, H5Dopen2(impl_->file.get(), kJobsPath, H5P_DEFAULT), context);
  SHAMMIE_ASSIGN_OR_RETURN(hsize_t n, DatasetLength(dataset.get(), context));
  std::vector<JobRecord> out;
  if (n == 0) return out;
  std::vector<JobRow> rows(n);
  SHAMMIE_H5_HANDLE(space, H5Dget_space(dataset.get()), context);
  SHAMMIE_H5_CHECK(H5Dread(dataset.get(), impl_->job_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()), context);
  auto str = [](const char* s) { return std::string(s ? s : ""); };
  Status bad = Status::Ok();
  for (const JobRow& r : rows) {
    JobRecord j;
    j.id = str(r.id);
    j.stage = str(r.stage);
    j.kind = str(r.kind);
    auto status = JobStatusFromName(str(r.status));
    if (!status && bad.ok()) bad = common::DataLoss(context + ": job " + j.id + " has unknown status \"" + str(r.status) + "\"");
    j.status = status.value_or(JobStatus::kPending);
    j.attempts = r.attempts;
    j.ranks = str(r.ranks);
    j.host = str(r.host);
    j.start_time = r.start_time;
    j.end_time = r.end_time;
    j.error = str(r.error);
    j.seed = r.seed;
    j.config_json = str(r.config);
    out.push_back(std::move(j));
  }
  H5Dvlen_reclaim(impl_->job_type.get(), space.get(), H5P_DEFAULT, rows.data());
  if (!bad.ok()) return bad;
  return out;
}

Status ResultStore::BeginRun(const RunRecord& run) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  SHAMMIE_RETURN_IF_ERROR(CheckName("job id", run.job_id));
  const std::string path = RunPath(run.job_id);
  const std::string context = "writing run " + run.job_id + " to " + path_;
  if (h5::LinkExists(impl_->file.get(), path)) {
    SHAMMIE_ASSIGN_OR_RETURN(RunRecord existing, ReadRun(run.job_id));
    if (existing == run) return Status::Ok();
    return common::FailedPrecondition(context + ": a run with this id already exists with different attributes");
  }
  SHAMMIE_H5_HANDLE(group, H5Gcreate2(impl_->file.get(), path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), context);
  nlohmann::json inputs = run.inputs;
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(group.get(), "stage", run.stage, /*fresh=*/true));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(group.get(), "kind", run.kind, true));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(group.get(), "config", run.config_json, true));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteIntAttribute(group.get(), "seed", run.seed, true));
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(group.get(), "inputs", inputs.dump(), true));
  nlohmann::json artifacts = nlohmann::json::object();
  for (const auto& [name, file] : run.artifacts) artifacts[name] = file;
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(group.get(), "artifacts", artifacts.dump(), true));
  return Status::Ok();
}

Result<RunRecord> ResultStore::ReadRun(std::string_view job_id) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  const std::string path = RunPath(job_id);
  const std::string context = "reading run " + std::string(job_id) + " of " + path_;
  if (!common::IsSafeName(job_id) || !h5::LinkExists(impl_->file.get(), path)) {
    return common::NotFound(path_ + " has no run " + std::string(job_id));
  }
  SHAMMIE_H5_HANDLE(group, H5Gopen2(impl_->file.get(), path.c_str(), H5P_DEFAULT), context);
  RunRecord run;
  run.job_id = std::string(job_id);
  SHAMMIE_ASSIGN_OR_RETURN(run.stage, h5::ReadStringAttribute(group.get(), "stage"));
  SHAMMIE_ASSIGN_OR_RETURN(run.kind, h5::ReadStringAttribute(group.get(), "kind"));
  SHAMMIE_ASSIGN_OR_RETURN(run.config_json, h5::ReadStringAttribute(group.get(), "config"));
  SHAMMIE_ASSIGN_OR_RETURN(run.seed, h5::ReadIntAttribute(group.get(), "seed"));
  SHAMMIE_ASSIGN_OR_RETURN(std::string inputs, h5::ReadStringAttribute(group.get(), "inputs"));
  auto parsed = nlohmann::json::parse(inputs, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_array()) return common::DataLoss(context + ": attribute `inputs` is not a JSON array");
  for (const auto& v : parsed) {
    if (!v.is_string()) return common::DataLoss(context + ": attribute `inputs` holds a non-string");
    run.inputs.push_back(v.get<std::string>());
  }
  if (h5::HasAttribute(group.get(), "artifacts")) {  // absent in files of shammie < 0.3
    SHAMMIE_ASSIGN_OR_RETURN(std::string artifacts, h5::ReadStringAttribute(group.get(), "artifacts"));
    auto a = nlohmann::json::parse(artifacts, nullptr, /*allow_exceptions=*/false);
    if (!a.is_object()) return common::DataLoss(context + ": attribute `artifacts` is not a JSON object");
    for (const auto& [name, file] : a.items()) {
      if (!file.is_string()) return common::DataLoss(context + ": attribute `artifacts` holds a non-string");
      run.artifacts[name] = file.get<std::string>();
    }
  }
  return run;
}

Result<std::vector<RunRecord>> ResultStore::ListRuns() {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  SHAMMIE_H5_HANDLE(group, H5Gopen2(impl_->file.get(), kRunsPath, H5P_DEFAULT), "listing runs of " + path_);
  SHAMMIE_ASSIGN_OR_RETURN(auto names, h5::ListLinks(group.get()));
  std::vector<RunRecord> runs;
  for (const auto& name : names) {
    SHAMMIE_ASSIGN_OR_RETURN(RunRecord run, ReadRun(name));
    runs.push_back(std::move(run));
  }
  return runs;
}

Status ResultStore::AppendMetrics(std::string_view job_id, std::string_view name, std::span<const MetricPoint> points) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  SHAMMIE_RETURN_IF_ERROR(CheckName("metric", name));
  if (!common::IsSafeName(job_id) || !h5::LinkExists(impl_->file.get(), RunPath(job_id))) {
    return common::FailedPrecondition("metrics for job " + std::string(job_id) + " before BeginRun()");
  }
  auto& buffer = metric_buffers_[{std::string(job_id), std::string(name)}];
  buffer.insert(buffer.end(), points.begin(), points.end());
  if (buffer.size() >= kMetricChunk) {
    return WriteMetricBuffer(std::string(job_id), std::string(name), buffer);
  }
  return Status::Ok();
}

Status ResultStore::WriteMetricBuffer(const std::string& job_id, const std::string& name,
                                      std::vector<MetricPoint>& points) {
  if (points.empty()) return Status::Ok();
  const std::string path = RunPath(job_id) + "/metrics/" + name;
  const std::string context = "writing metric " + name + " of job " + job_id + " to " + path_;
  hid_t file = impl_->file.get();
  h5::Handle dataset;
  if (h5::LinkExists(file, path)) {
    dataset = h5::Handle(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
  } else {
    dataset = h5::Handle(CreateExtendible(file, path, impl_->metric_type.get(), kMetricChunk));
  }
  if (!dataset.valid()) return h5::Failure(StatusCode::kInternal, "open/create metric dataset", __FILE__, __LINE__, context);
  SHAMMIE_RETURN_IF_ERROR(AppendRows(dataset.get(), impl_->metric_type.get(), points.data(), points.size(), context));
  points.clear();
  return Status::Ok();
}

Result<std::vector<std::string>> ResultStore::ListMetrics(std::string_view job_id) {
  SHAMMIE_RETURN_IF_ERROR(Flush());
  SHAMMIE_ASSIGN_OR_RETURN(RunRecord run, ReadRun(job_id));
  const std::string path = RunPath(job_id) + "/metrics";
  if (!h5::LinkExists(impl_->file.get(), path)) return std::vector<std::string>{};
  SHAMMIE_H5_HANDLE(group, H5Gopen2(impl_->file.get(), path.c_str(), H5P_DEFAULT), "listing metrics of " + run.job_id);
  return h5::ListLinks(group.get());
}

Result<std::vector<MetricPoint>> ResultStore::ReadMetric(std::string_view job_id, std::string_view name) {
  SHAMMIE_RETURN_IF_ERROR(Flush());
  const std::string path = RunPath(job_id) + "/metrics/" + std::string(name);
  const std::string context = "reading metric " + std::string(name) + " of job " + std::string(job_id);
  if (!common::IsSafeName(job_id) || !common::IsSafeName(name) || !h5::LinkExists(impl_->file.get(), path)) {
    return common::NotFound(path_ + " has no metric " + std::string(name) + " for job " + std::string(job_id));
  }
  SHAMMIE_H5_HANDLE(dataset, H5Dopen2(impl_->file.get(), path.c_str(), H5P_DEFAULT), context);
  SHAMMIE_ASSIGN_OR_RETURN(hsize_t n, DatasetLength(dataset.get(), context));
  std::vector<MetricPoint> points(n);
  if (n > 0) {
    SHAMMIE_H5_CHECK(H5Dread(dataset.get(), impl_->metric_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, points.data()),
                     context);
  }
  return points;
}

namespace {

enum class ColumnKind { kFloat, kInt, kString };

ColumnKind KindOf(const Column& c) {
  return static_cast<ColumnKind>(c.values.index());
}

// Each column takes 8 bytes in memory: a double, an int64 or a char*.
constexpr size_t kCell = 8;
static_assert(sizeof(double) == kCell && sizeof(int64_t) == kCell && sizeof(char*) == kCell);

hid_t NewTableType(const std::vector<std::pair<std::string, ColumnKind>>& columns, hid_t str) {
  hid_t t = H5Tcreate(H5T_COMPOUND, kCell * columns.size());
  if (t < 0) return t;
  for (size_t i = 0; i < columns.size(); ++i) {
    hid_t member = columns[i].second == ColumnKind::kFloat ? H5T_NATIVE_DOUBLE
                   : columns[i].second == ColumnKind::kInt ? H5T_NATIVE_INT64
                                                           : str;
    if (H5Tinsert(t, columns[i].first.c_str(), i * kCell, member) < 0) {
      H5Tclose(t);
      return -1;
    }
  }
  return t;
}

// Reads the column names and kinds of a stored table's compound type.
Result<std::vector<std::pair<std::string, ColumnKind>>> StoredColumns(hid_t dataset, const std::string& context) {
  SHAMMIE_H5_HANDLE(type, H5Dget_type(dataset), context);
  if (H5Tget_class(type.get()) != H5T_COMPOUND) return common::DataLoss(context + ": table is not a compound dataset");
  int n = H5Tget_nmembers(type.get());
  if (n <= 0) return common::DataLoss(context + ": table has no columns");
  std::vector<std::pair<std::string, ColumnKind>> out;
  for (int i = 0; i < n; ++i) {
    char* name = H5Tget_member_name(type.get(), static_cast<unsigned>(i));
    std::string column = name ? name : "";
    if (name) H5free_memory(name);
    switch (H5Tget_member_class(type.get(), static_cast<unsigned>(i))) {
      case H5T_FLOAT: out.emplace_back(column, ColumnKind::kFloat); break;
      case H5T_INTEGER: out.emplace_back(column, ColumnKind::kInt); break;
      case H5T_STRING: out.emplace_back(column, ColumnKind::kString); break;
      default: return common::DataLoss(context + ": column " + column + " has an unsupported type");
    }
  }
  return out;
}

}  // namespace

Status ResultStore::AppendTable(std::string_view job_id, std::string_view name, const Table& table) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  SHAMMIE_RETURN_IF_ERROR(CheckName("table", name));
  SHAMMIE_RETURN_IF_ERROR(table.Validate().WithContext("table " + std::string(name)));
  if (!common::IsSafeName(job_id) || !h5::LinkExists(impl_->file.get(), RunPath(job_id))) {
    return common::FailedPrecondition("table for job " + std::string(job_id) + " before BeginRun()");
  }
  const std::string path = RunPath(job_id) + "/tables/" + std::string(name);
  return WriteTableAt(path, table,
                      "writing table " + std::string(name) + " of job " + std::string(job_id) + " to " + path_);
}

Status ResultStore::WriteTableAt(const std::string& path, const Table& table, const std::string& context) {
  std::vector<std::pair<std::string, ColumnKind>> layout;
  for (const auto& c : table.columns) layout.emplace_back(c.name, KindOf(c));
  SHAMMIE_H5_HANDLE(type, NewTableType(layout, impl_->str_type.get()), context);

  h5::Handle dataset;
  if (h5::LinkExists(impl_->file.get(), path)) {
    dataset = h5::Handle(H5Dopen2(impl_->file.get(), path.c_str(), H5P_DEFAULT));
    if (!dataset.valid()) return h5::Failure(StatusCode::kInternal, "H5Dopen2", __FILE__, __LINE__, context);
    SHAMMIE_ASSIGN_OR_RETURN(auto stored, StoredColumns(dataset.get(), context));
    if (stored != layout) {
      return common::InvalidArgument(context + ": columns differ from the stored table's (same names, order and types required to append)");
    }
  } else {
    dataset = h5::Handle(CreateExtendible(impl_->file.get(), path, type.get(), 1024));
    if (!dataset.valid()) return h5::Failure(StatusCode::kInternal, "H5Dcreate2", __FILE__, __LINE__, context);
  }
  const size_t rows = table.num_rows();
  const size_t cols = table.columns.size();
  std::vector<unsigned char> buffer(rows * cols * kCell);
  for (size_t c = 0; c < cols; ++c) {
    std::visit(
        [&](const auto& values) {
          using T = typename std::decay_t<decltype(values)>::value_type;
          for (size_t r = 0; r < rows; ++r) {
            unsigned char* cell = buffer.data() + (r * cols + c) * kCell;
            if constexpr (std::is_same_v<T, std::string>) {
              const char* p = values[r].c_str();
              std::memcpy(cell, &p, kCell);
            } else {
              std::memcpy(cell, &values[r], kCell);
            }
          }
        },
        table.columns[c].values);
  }
  return AppendRows(dataset.get(), type.get(), buffer.data(), rows, context);
}

Result<std::vector<std::string>> ResultStore::ListTables(std::string_view job_id) {
  SHAMMIE_ASSIGN_OR_RETURN(RunRecord run, ReadRun(job_id));
  const std::string path = RunPath(job_id) + "/tables";
  if (!h5::LinkExists(impl_->file.get(), path)) return std::vector<std::string>{};
  SHAMMIE_H5_HANDLE(group, H5Gopen2(impl_->file.get(), path.c_str(), H5P_DEFAULT), "listing tables of " + run.job_id);
  return h5::ListLinks(group.get());
}

Result<Table> ResultStore::ReadTable(std::string_view job_id, std::string_view name) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  const std::string path = RunPath(job_id) + "/tables/" + std::string(name);
  if (!common::IsSafeName(job_id) || !common::IsSafeName(name) || !h5::LinkExists(impl_->file.get(), path)) {
    return common::NotFound(path_ + " has no table " + std::string(name) + " for job " + std::string(job_id));
  }
  return ReadTableAt(path, "reading table " + std::string(name) + " of job " + std::string(job_id));
}

Result<Table> ResultStore::ReadTableAt(const std::string& path, const std::string& context) {
  SHAMMIE_H5_HANDLE(dataset, H5Dopen2(impl_->file.get(), path.c_str(), H5P_DEFAULT), context);
  SHAMMIE_ASSIGN_OR_RETURN(auto layout, StoredColumns(dataset.get(), context));
  SHAMMIE_ASSIGN_OR_RETURN(hsize_t rows, DatasetLength(dataset.get(), context));
  SHAMMIE_H5_HANDLE(type, NewTableType(layout, impl_->str_type.get()), context);
  const size_t cols = layout.size();
  std::vector<unsigned char> buffer(rows * cols * kCell);
  Table table;
  for (const auto& [column, kind] : layout) {
    Column c;
    c.name = column;
    if (kind == ColumnKind::kFloat) c.values = std::vector<double>(rows);
    if (kind == ColumnKind::kInt) c.values = std::vector<int64_t>(rows);
    if (kind == ColumnKind::kString) c.values = std::vector<std::string>(rows);
    table.columns.push_back(std::move(c));
  }
  if (rows == 0) return table;
  SHAMMIE_H5_CHECK(H5Dread(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()), context);
  for (size_t c = 0; c < cols; ++c) {
    std::visit(
        [&](auto& values) {
          using T = typename std::decay_t<decltype(values)>::value_type;
          for (size_t r = 0; r < rows; ++r) {
            const unsigned char* cell = buffer.data() + (r * cols + c) * kCell;
            if constexpr (std::is_same_v<T, std::string>) {
              const char* p = nullptr;
              std::memcpy(&p, cell, kCell);
              values[r] = p ? p : "";
            } else {
              std::memcpy(&values[r], cell, kCell);
            }
          }
        },
        table.columns[c].values);
  }
  SHAMMIE_H5_HANDLE(space, H5Dget_space(dataset.get()), context);
  H5Dvlen_reclaim(type.get(), space.get(), H5P_DEFAULT, buffer.data());
  return table;
}

Status ResultStore::WriteAnalysis(std::string_view name, const std::string& parameters_json, const Table& results) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  SHAMMIE_RETURN_IF_ERROR(CheckName("analysis", name));
  SHAMMIE_RETURN_IF_ERROR(results.Validate().WithContext("analysis " + std::string(name)));
  const std::string context = "writing analysis " + std::string(name) + " to " + path_;
  hid_t file = impl_->file.get();
  if (!h5::LinkExists(file, "analysis")) {
    SHAMMIE_H5_HANDLE(group, H5Gcreate2(file, "/analysis", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), context);
  }
  const std::string path = "/analysis/" + std::string(name);
  if (h5::LinkExists(file, path.substr(1))) SHAMMIE_H5_CHECK(H5Ldelete(file, path.c_str(), H5P_DEFAULT), context);
  {
    SHAMMIE_H5_HANDLE(group, H5Gcreate2(file, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), context);
    SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(group.get(), "parameters", parameters_json));
  }
  return WriteTableAt(path + "/results", results, context);
}

Result<std::vector<std::string>> ResultStore::ListAnalyses() {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (!h5::LinkExists(impl_->file.get(), "analysis")) return std::vector<std::string>{};
  SHAMMIE_H5_HANDLE(group, H5Gopen2(impl_->file.get(), "/analysis", H5P_DEFAULT), "listing analyses of " + path_);
  return h5::ListLinks(group.get());
}

Result<std::pair<std::string, Table>> ResultStore::ReadAnalysis(std::string_view name) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  const std::string path = "analysis/" + std::string(name);
  if (!common::IsSafeName(name) || !h5::LinkExists(impl_->file.get(), path + "/results")) {
    return common::NotFound(path_ + " has no analysis " + std::string(name));
  }
  const std::string context = "reading analysis " + std::string(name) + " of " + path_;
  SHAMMIE_H5_HANDLE(group, H5Gopen2(impl_->file.get(), ("/" + path).c_str(), H5P_DEFAULT), context);
  SHAMMIE_ASSIGN_OR_RETURN(std::string parameters, h5::ReadStringAttribute(group.get(), "parameters"));
  SHAMMIE_ASSIGN_OR_RETURN(Table table, ReadTableAt("/" + path + "/results", context));
  return std::make_pair(std::move(parameters), std::move(table));
}

Status ResultStore::SetEndTime(const std::string& iso_time) {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return common::FailedPrecondition(path_ + " is open read-only");
  SHAMMIE_RETURN_IF_ERROR(h5::WriteStringAttribute(impl_->file.get(), "end_time", iso_time));
  info_.end_time = iso_time;
  return Status::Ok();
}

Status ResultStore::Flush() {
  if (!impl_->file.valid()) return common::FailedPrecondition("results store is closed");
  if (mode_ != Mode::kReadWrite) return Status::Ok();
  for (auto& [key, points] : metric_buffers_) {
    SHAMMIE_RETURN_IF_ERROR(WriteMetricBuffer(key.first, key.second, points));
  }
  SHAMMIE_H5_CHECK(H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL), "flushing " + path_);
  return Status::Ok();
}

Status ResultStore::Close() {
  if (!impl_->file.valid()) return Status::Ok();
  Status flushed = Flush();
  impl_->file.Reset();
  return flushed;
}

}  // namespace shammie::storage
