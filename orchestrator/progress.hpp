// The live progress display of `shammie run` (on the controller's stderr).
// - kTty: a block of lines redrawn in place a few times a second: counts,
//   throughput, ETA, and one line per job running longer than 10 s.
// - kPlain: one line every `plain_every` (logs, CI, files).
// - kNone: nothing until the summary.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace shammie::orchestrator {

enum class ProgressMode { kNone, kPlain, kTty };

struct ProgressSnapshot {
  int64_t total = 0, done = 0, cached = 0, running = 0, failed = 0, skipped = 0, left = 0, retrying = 0;
  double elapsed_s = 0;
  double rate = 0;  // jobs finished per second, recent
  struct LongJob {
    std::string label;
    std::string ranks;
    double seconds = 0;
  };
  std::vector<LongJob> long_jobs;  // running > 10 s, longest first
  bool stopping = false;
};

class ProgressDisplay {
 public:
  ProgressDisplay(ProgressMode mode, std::ostream& out, std::chrono::milliseconds plain_every);
  // Whether Update() would draw now (callers skip building a snapshot otherwise).
  bool Due() const;
  // Draws if it is time to (tty: every 200 ms; plain: every plain_every).
  void Update(const ProgressSnapshot& s, bool force = false);
  // Clears the live block (tty) before the final summary.
  void Finish();
  static std::string Line(const ProgressSnapshot& s);  // the one-line form

 private:
  ProgressMode mode_;
  std::ostream& out_;
  std::chrono::milliseconds plain_every_;
  std::chrono::milliseconds Interval() const;
  std::chrono::steady_clock::time_point last_{};
  int drawn_lines_ = 0;
};

std::string FormatDuration(double seconds);  // "42s", "3m07s", "2h05m"

}  // namespace shammie::orchestrator
