// Helpers shared by tests: scratch directories and running commands.
#pragma once

#include <filesystem>
#include <string>

namespace shammie::testing {

// A fresh directory under the build tree's test scratch area, removed at
// destruction unless SHAMMIE_KEEP_TEST_FILES is set.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name);
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a shell command line and captures its output.
CommandResult RunCommand(const std::string& command);

void WriteFile(const std::string& path, const std::string& text);
std::string ReadFileText(const std::string& path);

}  // namespace shammie::testing
