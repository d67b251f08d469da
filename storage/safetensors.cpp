#include "storage/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

namespace shammie::storage {

using common::Result;
using common::Status;
using common::StatusCode;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swaps here");

namespace {

constexpr std::string_view kMetadataKey = "__metadata__";

// The format's dtypes in the reference's enum order (its Dtype derives Ord:
// "increasing alignment order"), which the writer sorts by. size 0: defined
// by the format but not held here (sub-byte).
struct DtypeInfo {
  std::string_view name;
  int64_t size;
};
constexpr std::array<DtypeInfo, 20> kDtypes = {{
    {"BOOL", 1},    {"F4", 0},      {"F6_E2M3", 0}, {"F6_E3M2", 0}, {"U8", 1},
    {"I8", 1},      {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1}, {"I16", 2},
    {"U16", 2},     {"F16", 2},     {"BF16", 2},    {"I32", 4},     {"U32", 4},
    {"F32", 4},     {"C64", 8},     {"F64", 8},     {"I64", 8},     {"U64", 8},
}};

// Index in kDtypes, or -1.
int DtypeRank(std::string_view dtype) {
  for (size_t i = 0; i < kDtypes.size(); ++i) {
    if (kDtypes[i].name == dtype) return static_cast<int>(i);
  }
  return -1;
}

std::string KnownDtypes() {
  std::string out;
  for (const auto& d : kDtypes) {
    if (d.size == 0) continue;
    if (!out.empty()) out += ", ";
    out += d.name;
  }
  return out;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// A JSON value for a message, cut to a readable length.
std::string Excerpt(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 120) text = text.substr(0, 117) + "...";
  return text;
}

std::string Quoted(std::string_view name) { return Excerpt(json(std::string(name))); }

Status Corrupt(std::string_view source, const std::string& what) {
  return common::DataLoss(std::string(source) + ": " + what);
}

// One tensor as declared in the header.
struct Entry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The validated header: entries sorted by offset, tiling [0, buffer_len).
struct Layout {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

// Reads the 8-byte length and checks it against the file size. Returns N.
Result<uint64_t> CheckHeaderLength(std::string_view first_bytes, uint64_t file_size, std::string_view source) {
  if (file_size < 8) {
    return Corrupt(source, "truncated: " + std::to_string(file_size) +
                               " bytes, but a safetensors file starts with an 8-byte header length");
  }
  uint64_t n = 0;
  std::memcpy(&n, first_bytes.data(), 8);
  if (n > kSafetensorsMaxHeader) {
    return Corrupt(source, "header length " + std::to_string(n) + " exceeds the " +
                               std::to_string(kSafetensorsMaxHeader) +
                               "-byte limit (not a safetensors file, or a corrupt one)");
  }
  if (n > file_size - 8) {
    return Corrupt(source, "truncated: the header length says " + std::to_string(n) + " bytes but only " +
                               std::to_string(file_size - 8) + " follow it");
  }
  return n;
}

// Parses JSON and reports the first key that repeats within one object, at
// any depth (nlohmann would silently keep the last).
Result<json> ParseJsonStrict(std::string_view text, std::string_view source) {
  std::vector<std::set<std::string>> open_objects;
  std::optional<std::string> duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && !duplicate) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  // nlohmann stops at a NUL as at the end of input; JSON has no raw NULs, and
  // the reference (serde_json) rejects them, so do we.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return Corrupt(source, "the header is not valid JSON: a NUL byte at offset " + std::to_string(nul) +
                               " (a header is padded with spaces)");
  }
  json header;
  try {
    header = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    return Corrupt(source, std::string("the header is not valid JSON: ") + e.what());
  }
  if (duplicate) return Corrupt(source, "duplicate key " + Quoted(*duplicate) + " in the header (the format forbids it)");
  return header;
}

// A JSON number that is a non-negative integer fitting int64.
std::optional<int64_t> NonNegative(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(u);
    return std::nullopt;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  return std::nullopt;
}

Result<Entry> ParseEntry(const std::string& name, const json& v, std::string_view source) {
  const std::string where = "tensor " + Quoted(name);
  if (!v.is_object()) {
    return Corrupt(source, where + " must be an object with \"dtype\", \"shape\" and \"data_offsets\", got " +
                               Excerpt(v));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(field)) return Corrupt(source, where + " has no \"" + field + "\"");
  }
  Entry e;
  e.name = name;
  const json& dtype = v.at("dtype");
  if (!dtype.is_string()) return Corrupt(source, where + ": \"dtype\" must be a string, got " + Excerpt(dtype));
  e.dtype = dtype.get<std::string>();
  const int rank = DtypeRank(e.dtype);
  if (rank < 0) {
    return Corrupt(source, where + ": unknown dtype " + Quoted(e.dtype) + " (known: " + KnownDtypes() + ")");
  }
  if (kDtypes[static_cast<size_t>(rank)].size == 0) {
    return common::FailedPrecondition(std::string(source) + ": " + where + ": dtype " + e.dtype +
                                      " packs elements below one byte; shammie does not read it (supported: " +
                                      KnownDtypes() + ")");
  }
  const json& shape = v.at("shape");
  bool shape_ok = shape.is_array();
  if (shape_ok) {
    for (const auto& d : shape) {
      auto dim = NonNegative(d);
      if (!dim) {
        shape_ok = false;
        break;
      }
      e.shape.push_back(*dim);
    }
  }
  if (!shape_ok) {
    return Corrupt(source, where + ": \"shape\" must be an array of non-negative integers, got " + Excerpt(shape));
  }
  const json& offsets = v.at("data_offsets");
  std::optional<int64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = NonNegative(offsets[0]);
    end = NonNegative(offsets[1]);
  }
  if (!begin || !end || *begin > *end) {
    return Corrupt(source, where + ": \"data_offsets\" must be [begin, end] with 0 <= begin <= end, got " +
                               Excerpt(offsets));
  }
  e.begin = static_cast<uint64_t>(*begin);
  e.end = static_cast<uint64_t>(*end);
  auto count = SafetensorsElementCount(e.shape);
  int64_t nbytes = 0;
  if (!count.ok() || __builtin_mul_overflow(*count, *SafetensorsDtypeSize(e.dtype), &nbytes)) {
    return Corrupt(source, where + ": shape " + ShapeText(e.shape) + " of " + e.dtype + " overflows a 64-bit size");
  }
  if (e.end - e.begin != static_cast<uint64_t>(nbytes)) {
    return Corrupt(source, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                               "] span " + std::to_string(e.end - e.begin) + " bytes but shape " +
                               ShapeText(e.shape) + " of " + e.dtype + " needs " + std::to_string(nbytes));
  }
  return e;
}

// Validates the header text against a byte buffer of buffer_len bytes.
Result<Layout> ParseHeader(std::string_view text, uint64_t buffer_len, std::string_view source) {
  SHAMMIE_ASSIGN_OR_RETURN(json header, ParseJsonStrict(text, source));
  if (!header.is_object()) {
    return Corrupt(source, "the header must be a JSON object, got " + std::string(header.type_name()));
  }
  Layout layout;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (value.is_null()) continue;
      if (!value.is_object()) {
        return Corrupt(source, "\"__metadata__\" must be an object of strings, got " + Excerpt(value));
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return Corrupt(source, "\"__metadata__\" values must be strings; " + Quoted(mk) + " holds " + Excerpt(mv));
        }
        layout.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    SHAMMIE_ASSIGN_OR_RETURN(Entry e, ParseEntry(key, value, source));
    layout.entries.push_back(std::move(e));
  }
  // The buffer must be tiled exactly: sorted by offset, each tensor begins
  // where the previous one ends, the first at 0 and the last at the end.
  std::sort(layout.entries.begin(), layout.entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : layout.entries) {
    const std::string range = " [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
    if (e.begin > pos) {
      return Corrupt(source, "bytes [" + std::to_string(pos) + ", " + std::to_string(e.begin) +
                                 ") of the buffer belong to no tensor (a gap " +
                                 (prev ? "after tensor " + Quoted(prev->name) : std::string("at the start")) +
                                 ", before tensor " + Quoted(e.name) + ")");
    }
    if (e.begin < pos) {
      return Corrupt(source, "tensor " + Quoted(e.name) + range + " overlaps tensor " + Quoted(prev->name) + " [" +
                                 std::to_string(prev->begin) + ", " + std::to_string(prev->end) + "]");
    }
    pos = e.end;
    prev = &e;
  }
  if (pos > buffer_len) {
    return Corrupt(source, "truncated: the tensors need a " + std::to_string(pos) + "-byte buffer but only " +
                               std::to_string(buffer_len) + " bytes follow the header");
  }
  if (pos < buffer_len) {
    return Corrupt(source, std::to_string(buffer_len - pos) + " trailing bytes after the last tensor (the buffer is " +
                               std::to_string(buffer_len) + " bytes, the tensors cover " + std::to_string(pos) + ")");
  }
  return layout;
}

// --- POSIX helpers -----------------------------------------------------------

std::string Errno(int err) { return std::strerror(err); }

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Close() {
    int rc = 0;
    if (fd_ >= 0) rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

Status PreadAll(int fd, char* dst, uint64_t size, uint64_t offset, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, dst, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::Unavailable("reading " + path + ": " + Errno(errno));
    }
    if (n == 0) return Corrupt(path, "the file shrank while it was read (is something writing it?)");
    dst += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return Status(err == ENOSPC || err == EDQUOT ? StatusCode::kResourceExhausted : StatusCode::kInternal,
                    "writing " + path + ": " + Errno(err));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// --- writer ------------------------------------------------------------------

using TensorMap = std::map<std::string, TensorData>;

// The length field and header, and the order the tensor bytes follow in.
struct Prepared {
  std::string prefix;
  std::vector<const TensorMap::value_type*> order;
  uint64_t buffer_len = 0;
};

// A JSON string literal; InvalidArgument (naming `what`) for invalid UTF-8.
Result<std::string> JsonString(const std::string& s, const std::string& what) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    return common::InvalidArgument(what + " is not valid UTF-8");
  }
}

Result<Prepared> Prepare(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  Prepared p;
  for (const auto& item : tensors) {
    const auto& [name, t] = item;
    const std::string where = "tensor " + Quoted(name);
    if (name == kMetadataKey) return common::InvalidArgument("a tensor cannot be named \"__metadata__\"");
    auto size = SafetensorsDtypeSize(t.dtype);
    if (!size) {
      return common::InvalidArgument(where + (DtypeRank(t.dtype) < 0 ? ": unknown dtype " + Quoted(t.dtype)
                                                                      : ": dtype " + t.dtype +
                                                                            " packs elements below one byte") +
                                     "; supported: " + KnownDtypes());
    }
    auto count = SafetensorsElementCount(t.shape);
    if (!count.ok()) return count.status().WithContext(where);
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(*count, *size, &nbytes) || static_cast<uint64_t>(nbytes) != t.bytes.size()) {
      return common::InvalidArgument(where + ": shape " + ShapeText(t.shape) + " of " + t.dtype + " needs " +
                                     (nbytes ? std::to_string(nbytes) : std::string("an overflowing number of")) +
                                     " bytes, got " + std::to_string(t.bytes.size()));
    }
    p.order.push_back(&item);
  }
  // The reference's order: descending dtype rank, then name (bytewise; the
  // map's std::string order is already bytewise, so a stable sort keeps it).
  std::stable_sort(p.order.begin(), p.order.end(),
                   [](auto* a, auto* b) { return DtypeRank(a->second.dtype) > DtypeRank(b->second.dtype); });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      SHAMMIE_ASSIGN_OR_RETURN(std::string key, JsonString(k, "metadata key " + Quoted(k)));
      SHAMMIE_ASSIGN_OR_RETURN(std::string value, JsonString(v, "the value of metadata key " + Quoted(k)));
      header += (first ? "" : ",") + key + ":" + value;
      first = false;
    }
    header += "}";
  }
  for (const auto* item : p.order) {
    const auto& [name, t] = *item;
    SHAMMIE_ASSIGN_OR_RETURN(std::string key, JsonString(name, "tensor name " + Quoted(name)));
    if (header.size() > 1) header += ",";
    header += key + ":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    const uint64_t begin = p.buffer_len;
    p.buffer_len += t.bytes.size();
    header += "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(p.buffer_len) + "]}";
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kSafetensorsMaxHeader) {
    return common::InvalidArgument("the safetensors header would be " + std::to_string(header.size()) +
                                   " bytes, over the format's limit of " + std::to_string(kSafetensorsMaxHeader) +
                                   " (too many tensors or too much metadata for one file)");
  }
  const uint64_t n = header.size();
  p.prefix.resize(8);
  std::memcpy(p.prefix.data(), &n, 8);
  p.prefix += header;
  return p;
}

std::string TempName(const std::filesystem::path& target, std::mt19937_64& rng) {
  std::ostringstream name;
  name << "." << target.filename().string() << ".tmp-" << ::getpid() << "-" << std::hex << rng();
  return (target.parent_path() / name.str()).string();
}

// --- float conversions ---------------------------------------------------

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void Store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

}  // namespace

std::optional<int64_t> SafetensorsDtypeSize(std::string_view dtype) {
  const int rank = DtypeRank(dtype);
  if (rank < 0 || kDtypes[static_cast<size_t>(rank)].size == 0) return std::nullopt;
  return kDtypes[static_cast<size_t>(rank)].size;
}

Result<int64_t> SafetensorsElementCount(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return common::InvalidArgument("shape " + ShapeText(shape) + " has a negative dimension");
    if (__builtin_mul_overflow(count, d, &count)) {
      return common::InvalidArgument("shape " + ShapeText(shape) + " has more elements than int64 holds");
    }
  }
  return count;
}

Result<SafetensorsFile> ParseSafetensors(std::string_view data, std::string_view source) {
  SHAMMIE_ASSIGN_OR_RETURN(uint64_t n, CheckHeaderLength(data, data.size(), source));
  const std::string_view buffer = data.substr(8 + n);
  SHAMMIE_ASSIGN_OR_RETURN(Layout layout, ParseHeader(data.substr(8, n), buffer.size(), source));
  SafetensorsFile file;
  file.metadata = std::move(layout.metadata);
  for (Entry& e : layout.entries) {
    file.tensors[e.name] = TensorData{std::move(e.dtype), std::move(e.shape),
                                      std::string(buffer.substr(e.begin, e.end - e.begin))};
  }
  return file;
}

Result<SafetensorsFile> ReadSafetensors(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    return Status(err == ENOENT ? StatusCode::kNotFound : StatusCode::kUnavailable,
                  "cannot open " + path + ": " + Errno(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return common::Unavailable("cannot stat " + path + ": " + Errno(errno));
  if (!S_ISREG(st.st_mode)) return common::InvalidArgument(path + " is not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  char length[8] = {};
  if (file_size >= 8) SHAMMIE_RETURN_IF_ERROR(PreadAll(fd.get(), length, 8, 0, path));
  SHAMMIE_ASSIGN_OR_RETURN(uint64_t n, CheckHeaderLength(std::string_view(length, 8), file_size, path));
  std::string header(n, '\0');
  SHAMMIE_RETURN_IF_ERROR(PreadAll(fd.get(), header.data(), n, 8, path));
  SHAMMIE_ASSIGN_OR_RETURN(Layout layout, ParseHeader(header, file_size - 8 - n, path));
  SafetensorsFile file;
  file.metadata = std::move(layout.metadata);
  for (Entry& e : layout.entries) {
    TensorData t{std::move(e.dtype), std::move(e.shape), std::string(e.end - e.begin, '\0')};
    SHAMMIE_RETURN_IF_ERROR(PreadAll(fd.get(), t.bytes.data(), t.bytes.size(), 8 + n + e.begin, path));
    file.tensors[e.name] = std::move(t);
  }
  return file;
}

Result<std::string> SerializeSafetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  SHAMMIE_ASSIGN_OR_RETURN(Prepared p, Prepare(tensors, metadata));
  std::string out = std::move(p.prefix);
  out.reserve(out.size() + p.buffer_len);
  for (const auto* item : p.order) out += item->second.bytes;
  return out;
}

// Steps: 1) validate and build the header (nothing touched on error);
// 2) create a uniquely named temporary beside `path` (O_EXCL, 0644 & umask);
// 3) write the prefix and each tensor's bytes; 4) fsync and close it;
// 5) rename it over `path`; 6) fsync the directory so the rename is durable.
// Any failure in 2-5 unlinks the temporary.
Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                        const std::map<std::string, std::string>& metadata) {
  SHAMMIE_ASSIGN_OR_RETURN(Prepared p, Prepare(tensors, metadata));
  std::error_code ec;
  const std::filesystem::path target = std::filesystem::absolute(path, ec);
  if (ec || path.empty() || !target.has_filename()) {
    return common::InvalidArgument("cannot write safetensors to \"" + path + "\": not a file path" +
                                   (ec ? " (" + ec.message() + ")" : std::string()));
  }
  const std::string dir = target.parent_path().string();
  std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(::getpid()));
  std::string tmp;
  int raw_fd = -1;
  for (int attempt = 0; attempt < 16 && raw_fd < 0; ++attempt) {
    tmp = TempName(target, rng);
    raw_fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (raw_fd < 0 && errno != EEXIST) break;
  }
  if (raw_fd < 0) {
    const int err = errno;
    return Status(err == ENOENT ? StatusCode::kNotFound
                  : err == ENOSPC || err == EDQUOT ? StatusCode::kResourceExhausted
                                                   : StatusCode::kInternal,
                  "cannot create a temporary file in " + dir + " to write " + path + ": " + Errno(err));
  }
  Fd fd(raw_fd);
  bool committed = false;
  struct Cleanup {
    const std::string& tmp;
    const bool& committed;
    ~Cleanup() {
      if (!committed) ::unlink(tmp.c_str());
    }
  } cleanup{tmp, committed};

  SHAMMIE_RETURN_IF_ERROR(WriteAll(fd.get(), p.prefix, tmp));
  for (const auto* item : p.order) SHAMMIE_RETURN_IF_ERROR(WriteAll(fd.get(), item->second.bytes, tmp));
  if (::fsync(fd.get()) != 0) return common::Internal("fsync " + tmp + ": " + Errno(errno));
  if (fd.Close() != 0) return common::Internal("closing " + tmp + ": " + Errno(errno));
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    return common::Internal("cannot rename " + tmp + " to " + path + ": " + Errno(errno));
  }
  committed = true;
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0 || ::fsync(dir_fd.get()) != 0) {
    return common::Internal("fsync of directory " + dir + " after writing " + path + ": " + Errno(errno));
  }
  return Status::Ok();
}

// --- float conversions ---------------------------------------------------------

uint16_t FloatToBf16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN, as PyTorch
  // Round to nearest even: add 0x7fff plus the lowest kept bit, truncate. A
  // carry into the exponent is the correct result (up to Inf).
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float Bf16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t FloatToF16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00;              // NaN, as PyTorch
  if (abs >= 0x477ff000u) return sign | 0x7c00;             // >= 65520 rounds to Inf
  if (abs <= 0x33000000u) return sign;                      // <= 2^-25 rounds to zero
  const uint32_t exponent = abs >> 23;                       // biased by 127
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;  // with the implicit bit
  // Normal halves (exponent >= 2^-14) keep 10 of the 23 fraction bits;
  // subnormal halves are multiples of 2^-24, so they keep fewer.
  const uint32_t shift = exponent >= 113 ? 13 : 126 - exponent;
  uint32_t kept = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (kept & 1u))) ++kept;
  if (exponent < 113) return sign | static_cast<uint16_t>(kept);  // a carry to 0x400 is the smallest normal
  // kept holds the implicit bit at 2^10; adding the exponent field on top of
  // it turns a mantissa carry into the next exponent.
  return sign | static_cast<uint16_t>(((exponent - 113) << 10) + kept);
}

float F16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa x 2^-24, exact in float.
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}

Result<std::vector<float>> TensorToFloats(const TensorData& tensor) {
  if (tensor.dtype != "F32" && tensor.dtype != "BF16" && tensor.dtype != "F16") {
    return common::InvalidArgument("cannot read a " + tensor.dtype + " tensor as floats (F32, BF16 or F16 only)");
  }
  SHAMMIE_ASSIGN_OR_RETURN(int64_t count, SafetensorsElementCount(tensor.shape));
  const int64_t size = *SafetensorsDtypeSize(tensor.dtype);
  int64_t nbytes = 0;
  if (__builtin_mul_overflow(count, size, &nbytes) || static_cast<uint64_t>(nbytes) != tensor.bytes.size()) {
    return common::InvalidArgument("a " + tensor.dtype + " tensor of shape " + ShapeText(tensor.shape) + " needs " +
                                   std::to_string(count) + " x " + std::to_string(size) + " bytes, got " +
                                   std::to_string(tensor.bytes.size()));
  }
  std::vector<float> out(static_cast<size_t>(count));
  const char* p = tensor.bytes.data();
  for (size_t i = 0; i < out.size(); ++i, p += size) {
    if (tensor.dtype == "F32") {
      out[i] = Load<float>(p);
    } else if (tensor.dtype == "BF16") {
      out[i] = Bf16ToFloat(Load<uint16_t>(p));
    } else {
      out[i] = F16ToFloat(Load<uint16_t>(p));
    }
  }
  return out;
}

Result<TensorData> TensorFromFloats(std::string_view dtype, std::vector<int64_t> shape, std::span<const float> values) {
  if (dtype != "F32" && dtype != "BF16" && dtype != "F16") {
    return common::InvalidArgument("cannot build a " + std::string(dtype) +
                                   " tensor from floats (F32, BF16 or F16 only)");
  }
  SHAMMIE_ASSIGN_OR_RETURN(int64_t count, SafetensorsElementCount(shape));
  if (static_cast<uint64_t>(count) != values.size()) {
    return common::InvalidArgument("shape " + ShapeText(shape) + " holds " + std::to_string(count) + " values, got " +
                                   std::to_string(values.size()));
  }
  const size_t size = static_cast<size_t>(*SafetensorsDtypeSize(dtype));
  TensorData t{std::string(dtype), std::move(shape), std::string(values.size() * size, '\0')};
  char* p = t.bytes.data();
  for (float v : values) {
    if (dtype == "F32") {
      Store(p, v);
    } else if (dtype == "BF16") {
      Store(p, FloatToBf16(v));
    } else {
      Store(p, FloatToF16(v));
    }
    p += size;
  }
  return t;
}

}  // namespace shammie::storage
