#include "storage/checkpoint_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/hash.hpp"

namespace shammie::storage {

namespace fs = std::filesystem;

namespace {

common::Status Errno(const std::string& what) { return common::Internal(what + ": " + std::strerror(errno)); }

common::Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open " + dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? common::Status::Ok() : Errno("fsync " + dir);
}

bool IsHexName(std::string_view stem) {
  if (stem.size() != 32) return false;
  for (char c : stem) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

common::Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  const fs::path target(path);
  const std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return common::Internal("cannot create " + dir + ": " + ec.message());
  std::string tmp = dir + "/." + target.filename().string() + ".tmp.XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return Errno("create a temporary file in " + dir);
  std::string_view rest = bytes;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      common::Status s = Errno("write " + tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
    common::Status s = Errno("fsync " + tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    common::Status s = Errno("rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(dir);
}

common::Result<std::string> WriteContentAddressed(const std::string& dir, std::string_view bytes,
                                                  std::string_view ext) {
  const std::string path = dir + "/" + common::Hash128Hex(bytes) + "." + std::string(ext);
  std::error_code ec;
  if (fs::exists(path, ec) && fs::file_size(path, ec) == bytes.size() && !ec) return path;  // same bytes, same name
  SHAMMIE_RETURN_IF_ERROR(WriteFileAtomically(path, bytes));
  return path;
}

common::Result<std::string> ReadVerified(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return common::NotFound("cannot open " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return common::Internal("cannot read " + path);
  std::string bytes = std::move(buf).str();
  const std::string stem = fs::path(path).stem().string();
  if (IsHexName(stem) && common::Hash128Hex(bytes) != stem) {
    return common::DataLoss(path + ": contents do not match the hash in its name (a damaged or truncated file)");
  }
  return bytes;
}

}  // namespace shammie::storage
