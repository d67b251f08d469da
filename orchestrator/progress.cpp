#include "orchestrator/progress.hpp"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace shammie::orchestrator {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[32];
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>((s % 3600) / 60));
  }
  return buf;
}

ProgressDisplay::ProgressDisplay(ProgressMode mode, std::ostream& out, std::chrono::milliseconds plain_every)
    : mode_(mode), out_(out), plain_every_(plain_every) {}

std::string ProgressDisplay::Line(const ProgressSnapshot& s) {
  std::ostringstream o;
  const int64_t finished = s.done + s.failed + s.skipped;
  o << "[" << finished << "/" << s.total << "] " << s.done << " done";
  if (s.cached > 0) o << " (" << s.cached << " stored before)";
  o << ", " << s.running << " running, " << s.failed << " failed";
  if (s.skipped > 0) o << ", " << s.skipped << " skipped";
  if (s.retrying > 0) o << ", " << s.retrying << " waiting to retry";
  o << ", " << s.left << " left";
  char rate[64];
  if (s.rate >= 100) {
    std::snprintf(rate, sizeof rate, "%.0f jobs/s", s.rate);
  } else {
    std::snprintf(rate, sizeof rate, "%.2f jobs/s", s.rate);
  }
  o << " | " << rate << " | " << FormatDuration(s.elapsed_s) << " elapsed";
  if (s.left + s.running > 0 && s.rate > 0) o << ", ETA " << FormatDuration((s.left + s.running) / s.rate);
  if (s.stopping) o << " | stopping: waiting for running jobs";
  return o.str();
}

std::chrono::milliseconds ProgressDisplay::Interval() const {
  return mode_ == ProgressMode::kTty ? std::chrono::milliseconds(200) : plain_every_;
}

bool ProgressDisplay::Due() const {
  return mode_ != ProgressMode::kNone && std::chrono::steady_clock::now() - last_ >= Interval();
}

void ProgressDisplay::Update(const ProgressSnapshot& s, bool force) {
  if (mode_ == ProgressMode::kNone) return;
  if (!force && !Due()) return;
  last_ = std::chrono::steady_clock::now();
  if (mode_ == ProgressMode::kPlain) {
    out_ << "shammie: " << Line(s) << "\n" << std::flush;
    return;
  }
  std::ostringstream block;
  if (drawn_lines_ > 1) block << "\x1b[" << (drawn_lines_ - 1) << "A";
  block << "\r\x1b[J" << Line(s);
  int lines = 1;
  for (size_t i = 0; i < s.long_jobs.size() && i < 8; ++i) {
    const auto& j = s.long_jobs[i];
    block << "\n  " << j.label << "  rank " << j.ranks << "  " << FormatDuration(j.seconds);
    ++lines;
  }
  if (s.long_jobs.size() > 8) {
    block << "\n  ... and " << (s.long_jobs.size() - 8) << " more long jobs";
    ++lines;
  }
  drawn_lines_ = lines;
  out_ << block.str() << std::flush;
}

void ProgressDisplay::Finish() {
  if (mode_ != ProgressMode::kTty || drawn_lines_ == 0) return;
  if (drawn_lines_ > 1) out_ << "\x1b[" << (drawn_lines_ - 1) << "A";
  out_ << "\r\x1b[J" << std::flush;
  drawn_lines_ = 0;
}

}  // namespace shammie::orchestrator
