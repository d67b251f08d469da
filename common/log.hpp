// Logging through an injectable sink (STYLE.md 28). Libraries never write to
// stdout/stderr themselves; they get a Logger from whoever built them. main()
// decides where lines go; tests capture them with a MemorySink.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace shammie::common {

enum class LogLevel { kDebug = 0, kInfo, kWarning, kError };
std::string_view LogLevelName(LogLevel level);

class LogSink {
 public:
  virtual ~LogSink() = default;
  // Called from any thread; implementations serialize.
  virtual void Write(LogLevel level, std::string_view line) = 0;
};

// Writes "shammie: <level>: <line>" to stderr.
class StderrSink final : public LogSink {
 public:
  void Write(LogLevel level, std::string_view line) override;

 private:
  std::mutex mu_;
};

// Keeps every line; for tests.
class MemorySink final : public LogSink {
 public:
  void Write(LogLevel level, std::string_view line) override;
  std::vector<std::string> Lines() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// A cheap handle: a sink, a minimum level and a prefix such as "[rank 3][job ab12]".
class Logger {
 public:
  Logger() = default;
  Logger(std::shared_ptr<LogSink> sink, LogLevel min_level = LogLevel::kInfo, std::string prefix = "")
      : sink_(std::move(sink)), min_level_(min_level), prefix_(std::move(prefix)) {}

  // A logger that writes to the same sink with "prefix" appended to this one's.
  Logger WithPrefix(std::string_view prefix) const;

  void Log(LogLevel level, std::string_view message) const;
  void Debug(std::string_view m) const { Log(LogLevel::kDebug, m); }
  void Info(std::string_view m) const { Log(LogLevel::kInfo, m); }
  void Warning(std::string_view m) const { Log(LogLevel::kWarning, m); }
  void Error(std::string_view m) const { Log(LogLevel::kError, m); }

 private:
  std::shared_ptr<LogSink> sink_;  // null: discard everything
  LogLevel min_level_ = LogLevel::kInfo;
  std::string prefix_;
};

}  // namespace shammie::common
