#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/export.hpp"
#include "orchestrator/commands.hpp"
#include "storage/result_store.hpp"

namespace shammie::orchestrator {

// `shammie export`: DIR is a run directory (holding results.h5) or the file.
std::string ResultsFilePath(const std::string& target) {
  std::error_code ec;
  if (std::filesystem::is_directory(target, ec)) return (std::filesystem::path(target) / "results.h5").string();
  return target;
}

int ExportCommand(const std::string& target, const std::string& format, const std::string& output, std::ostream& out,
                  std::ostream& err) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string path = ResultsFilePath(target);
  auto store = storage::ResultStore::Open(path, storage::ResultStore::Mode::kReadOnly);
  if (!store.ok()) {
    err << "shammie export: " << store.status().ToString() << "\n";
    return common::ExitCodeFor(store.status().code());
  }
  // Export into memory first: a failure half-way writes nothing.
  std::ostringstream text;
  common::Status s = format == "csv" ? analysis::ExportMetricsCsv(**store, text) : analysis::ExportJson(**store, text);
  if (!s.ok()) {
    err << "shammie export: " << path << ": " << s.ToString() << "\n";
    return common::ExitCodeFor(s.code());
  }
  if (output.empty() || output == "-") {
    out << text.str();
    return kExitOk;
  }
  const std::string tmp = output + ".tmp";
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    file << text.str();
    if (!file.flush()) {
      err << "shammie export: cannot write " << tmp << "\n";
      fs::remove(tmp, ec);
      return 3;
    }
  }
  fs::rename(tmp, output, ec);
  if (ec) {
    err << "shammie export: cannot rename " << tmp << " to " << output << ": " << ec.message() << "\n";
    return 3;
  }
  return kExitOk;
}

}  // namespace shammie::orchestrator
