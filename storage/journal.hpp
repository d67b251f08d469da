// An append-only, checksummed journal: the source of truth for a run
// directory's job states (results.h5 is rebuilt from it).
//
// File: the 8-byte magic "SHJRNL1\n", then records
//   [u32 body length][u32 CRC-32C of body][body]     (little-endian)
// where body[0] is a record type chosen by the user of the journal.
//
// Crash safety:
// - Append() buffers; Write() hands the buffer to the kernel with write(2),
//   so a kill -9 of the process after Write() loses nothing.
// - A background thread fdatasync()s written data at most every
//   `sync_interval` (group commit: one fsync covers every record written
//   since the last one), and Sync() does it now; that covers power loss.
// - A torn or corrupt tail (a write cut short) is detected by length and
//   CRC; Read() stops before it and Recover() truncates it, so records before
//   it are never lost and garbage is never replayed.
// - The writer holds an exclusive flock on the file: a second writer on the
//   same directory fails with FailedPrecondition instead of interleaving.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.hpp"

namespace shammie::storage {

struct JournalScan {
  int64_t records = 0;
  int64_t valid_bytes = 0;  // up to the end of the last good record
  int64_t torn_bytes = 0;   // after it (a cut-short or corrupt tail)
};

// Calls `fn(type, body_without_type)` for every good record in order. A
// missing file is an empty journal. Fails with DataLoss if the magic is wrong.
common::Result<JournalScan> ReadJournal(const std::string& path,
                                        const std::function<void(uint8_t type, std::string_view body)>& fn);

class JournalWriter {
 public:
  // Opens (creating) the journal for appending after truncating any torn tail.
  static common::Result<std::unique_ptr<JournalWriter>> Open(const std::string& path,
                                                             std::chrono::milliseconds sync_interval);
  ~JournalWriter();  // Sync()s and closes
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  void Append(uint8_t type, std::string_view body);
  // Appends a record whose body is the concatenation of `parts`.
  void Append(uint8_t type, std::initializer_list<std::string_view> parts);
  common::Status Write();  // buffer -> kernel
  common::Status Sync();   // Write() and fdatasync now
  int64_t bytes_written() const { return offset_; }
  int64_t syncs() const { return syncs_.load(); }

 private:
  JournalWriter() = default;
  void SyncLoop();

  std::string path_;
  int fd_ = -1;
  int64_t offset_ = 0;
  std::string buffer_;
  std::chrono::milliseconds interval_{50};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<int64_t> written_{0}, synced_{0}, syncs_{0};
  std::atomic<int> sync_errno_{0};
  std::thread syncer_;
};

}  // namespace shammie::storage
