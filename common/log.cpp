#include "common/log.hpp"

#include <cstdio>

namespace shammie::common {

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "?";
}

void StderrSink::Write(LogLevel level, std::string_view line) {
  std::lock_guard lock(mu_);
  std::string_view name = LogLevelName(level);
  std::fprintf(stderr, "shammie: %.*s: %.*s\n", static_cast<int>(name.size()), name.data(),
               static_cast<int>(line.size()), line.data());
}

void MemorySink::Write(LogLevel level, std::string_view line) {
  std::lock_guard lock(mu_);
  lines_.push_back(std::string(LogLevelName(level)) + ": " + std::string(line));
}

std::vector<std::string> MemorySink::Lines() const {
  std::lock_guard lock(mu_);
  return lines_;
}

Logger Logger::WithPrefix(std::string_view prefix) const {
  return Logger(sink_, min_level_, prefix_ + std::string(prefix));
}

void Logger::Log(LogLevel level, std::string_view message) const {
  if (!sink_ || level < min_level_) return;
  if (prefix_.empty()) {
    sink_->Write(level, message);
  } else {
    sink_->Write(level, prefix_ + " " + std::string(message));
  }
}

}  // namespace shammie::common
