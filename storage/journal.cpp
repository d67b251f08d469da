#include "storage/journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "common/wire.hpp"

namespace shammie::storage {

using common::Status;

namespace {

constexpr std::string_view kMagic = "SHJRNL1\n";
constexpr uint32_t kMaxRecord = 1u << 30;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::Status(errno == ENOSPC ? common::StatusCode::kResourceExhausted : common::StatusCode::kInternal,
                            Errno("writing " + path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

common::Result<JournalScan> ReadJournal(const std::string& path,
                                        const std::function<void(uint8_t, std::string_view)>& fn) {
  JournalScan scan;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (::access(path.c_str(), F_OK) != 0) return scan;
    return common::Unavailable("cannot read " + path);
  }
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.empty()) return scan;
  if (data.size() < kMagic.size()) {
    scan.torn_bytes = static_cast<int64_t>(data.size());
    return scan;
  }
  if (std::string_view(data).substr(0, kMagic.size()) != kMagic) {
    return common::DataLoss(path + " is not a shammie journal (bad magic)");
  }
  size_t pos = kMagic.size();
  while (pos + 8 <= data.size()) {
    uint32_t len = 0, crc = 0;
    std::memcpy(&len, data.data() + pos, 4);
    std::memcpy(&crc, data.data() + pos + 4, 4);
    if (len == 0 || len > kMaxRecord || pos + 8 + len > data.size()) break;
    std::string_view body(data.data() + pos + 8, len);
    if (common::Crc32c(body) != crc) break;
    fn(static_cast<uint8_t>(body[0]), body.substr(1));
    ++scan.records;
    pos += 8 + len;
  }
  scan.valid_bytes = static_cast<int64_t>(pos);
  scan.torn_bytes = static_cast<int64_t>(data.size() - pos);
  return scan;
}

common::Result<std::unique_ptr<JournalWriter>> JournalWriter::Open(const std::string& path,
                                                                   std::chrono::milliseconds sync_interval) {
  std::unique_ptr<JournalWriter> w(new JournalWriter());
  w->path_ = path;
  w->interval_ = sync_interval;
  w->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return common::Unavailable(Errno("cannot open journal " + path));
  if (::flock(w->fd_, LOCK_EX | LOCK_NB) != 0) {
    return common::FailedPrecondition(path + " is in use by another shammie run (wait for it, or stop it first)");
  }
  SHAMMIE_ASSIGN_OR_RETURN(JournalScan scan, ReadJournal(path, [](uint8_t, std::string_view) {}));
  if (scan.valid_bytes == 0) {
    if (::ftruncate(w->fd_, 0) != 0) return common::Internal(Errno("truncating " + path));
    SHAMMIE_RETURN_IF_ERROR(WriteAll(w->fd_, kMagic, path));
    w->offset_ = static_cast<int64_t>(kMagic.size());
  } else {
    if (scan.torn_bytes > 0 && ::ftruncate(w->fd_, scan.valid_bytes) != 0) {
      return common::Internal(Errno("truncating the torn tail of " + path));
    }
    w->offset_ = scan.valid_bytes;
  }
  if (::lseek(w->fd_, w->offset_, SEEK_SET) < 0) return common::Internal(Errno("seeking in " + path));
  if (::fdatasync(w->fd_) != 0) return common::Internal(Errno("fdatasync " + path));
  w->written_ = w->synced_ = w->offset_;
  w->syncer_ = std::thread([raw = w.get()] { raw->SyncLoop(); });
  return w;
}

JournalWriter::~JournalWriter() {
  (void)Sync();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void JournalWriter::Append(uint8_t type, std::string_view body) { Append(type, {body}); }

void JournalWriter::Append(uint8_t type, std::initializer_list<std::string_view> parts) {
  size_t len = 1;
  for (auto p : parts) len += p.size();
  SHAMMIE_CHECK(len <= kMaxRecord);
  const size_t header = buffer_.size();
  buffer_.resize(header + 8);
  buffer_.push_back(static_cast<char>(type));
  for (auto p : parts) buffer_.append(p.data(), p.size());
  const uint32_t len32 = static_cast<uint32_t>(len);
  const uint32_t crc = common::Crc32c(std::string_view(buffer_).substr(header + 8));
  std::memcpy(buffer_.data() + header, &len32, 4);
  std::memcpy(buffer_.data() + header + 4, &crc, 4);
}

Status JournalWriter::Write() {
  if (buffer_.empty()) return Status::Ok();
  if (int e = sync_errno_.load(); e != 0) {
    errno = e;
    return common::Internal(Errno("fdatasync " + path_));
  }
  SHAMMIE_RETURN_IF_ERROR(WriteAll(fd_, buffer_, path_));
  offset_ += static_cast<int64_t>(buffer_.size());
  buffer_.clear();
  written_.store(offset_);
  cv_.notify_all();
  return Status::Ok();
}

Status JournalWriter::Sync() {
  SHAMMIE_RETURN_IF_ERROR(Write());
  if (synced_.load() == offset_) return Status::Ok();
  if (::fdatasync(fd_) != 0) return common::Internal(Errno("fdatasync " + path_));
  ++syncs_;
  synced_.store(offset_);
  return Status::Ok();
}

void JournalWriter::SyncLoop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    // Timed: Write() notifies without the lock, so a wakeup can be missed.
    cv_.wait_for(lock, interval_ * 4, [&] { return stop_ || written_.load() != synced_.load(); });
    if (stop_) break;
    if (written_.load() == synced_.load()) continue;
    // Group commit: let records accumulate for one interval, then one fsync.
    cv_.wait_for(lock, interval_, [&] { return stop_; });
    const int64_t target = written_.load();
    lock.unlock();
    if (::fdatasync(fd_) != 0) sync_errno_.store(errno);
    ++syncs_;
    int64_t cur = synced_.load();
    while (cur < target && !synced_.compare_exchange_weak(cur, target)) {
    }
    lock.lock();
  }
}

}  // namespace shammie::storage
