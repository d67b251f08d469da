#include "workers/dataset.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/hash.hpp"

namespace shammie::workers {

// The .bin format is little-endian; reading it in place needs a host that is too.
static_assert(std::endian::native == std::endian::little, "token shards are read in place: little-endian hosts only");

namespace {

constexpr std::string_view kFormat = "shammie.tokens";
constexpr int64_t kVersion = 1;
constexpr int64_t kMaxVocab32 = int64_t{1} << 31;

std::string Errno() { return std::strerror(errno); }

size_t WidthOf(TokenDType dtype) { return dtype == TokenDType::kUint16 ? 2 : 4; }

int64_t MaxVocab(TokenDType dtype) { return dtype == TokenDType::kUint16 ? 65536 : kMaxVocab32; }

// NAME, NAME.json or NAME.bin -> NAME.
std::string StripShardSuffix(const std::string& path) {
  for (std::string_view suffix : {".json", ".bin"}) {
    if (path.size() > suffix.size() && path.ends_with(suffix)) return path.substr(0, path.size() - suffix.size());
  }
  return path;
}

// A read-only mapping of a whole file; unmapped by its owner.
struct Mapping {
  const unsigned char* data = nullptr;
  size_t size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (data != nullptr) ::munmap(const_cast<unsigned char*>(data), size);
  }
};

// One document of the dataset: where its tokens are.
struct DocRef {
  int32_t shard;
  int64_t offset, length;  // in tokens
};

struct Shard {
  std::string name;
  TokenDType dtype = TokenDType::kUint16;
  int64_t tokens = 0;
  std::unique_ptr<Mapping> map;

  int32_t At(int64_t i) const {
    if (dtype == TokenDType::kUint16) {
      uint16_t v;
      std::memcpy(&v, map->data + 2 * static_cast<size_t>(i), 2);
      return static_cast<int32_t>(v);
    }
    uint32_t v;
    std::memcpy(&v, map->data + 4 * static_cast<size_t>(i), 4);
    return static_cast<int32_t>(v);
  }
};

common::Result<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const std::string error = Errno();
    if (!std::filesystem::exists(path)) {
      return common::NotFound(path + ": no such file (a token shard is NAME.json + NAME.bin; see docs/runtime.md)");
    }
    return common::Internal(path + ": cannot open: " + error);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return common::Internal(path + ": read failed: " + Errno());
  return text.str();
}

common::Result<std::unique_ptr<Mapping>> MapFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return common::NotFound(path + ": no such file (the tokens of " + path.substr(0, path.size() - 4) + ".json)");
    }
    return common::Internal(path + ": cannot open: " + Errno());
  }
  auto map = std::make_unique<Mapping>();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string e = Errno();
    ::close(fd);
    return common::Internal(path + ": fstat: " + e);
  }
  map->size = static_cast<size_t>(st.st_size);
  if (map->size > 0) {
    void* p = ::mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string e = Errno();
      ::close(fd);
      return common::Internal(path + ": mmap of " + std::to_string(map->size) + " bytes: " + e);
    }
    map->data = static_cast<const unsigned char*>(p);
  }
  ::close(fd);
  return map;
}

// An integer field of the index, in [lo, hi].
common::Result<int64_t> IntField(const nlohmann::json& index, const std::string& path, const char* key, int64_t lo,
                                 int64_t hi) {
  auto it = index.find(key);
  if (it == index.end()) return common::DataLoss(path + ": the index has no \"" + key + "\"");
  if (!it->is_number_integer()) {
    return common::DataLoss(path + ": \"" + key + "\" must be an integer, got " + it->dump());
  }
  const auto v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return common::DataLoss(path + ": \"" + key + "\" must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                            "], got " + std::to_string(v));
  }
  return v;
}

// Reads and checks one shard's index and data; appends its documents.
common::Status OpenShard(const std::string& name, int32_t shard_index, Shard* shard, int64_t* vocab,
                         std::vector<DocRef>* docs) {
  const std::string json_path = name + ".json", bin_path = name + ".bin";
  SHAMMIE_ASSIGN_OR_RETURN(std::string text, ReadText(json_path));
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return common::DataLoss(json_path + ": not valid JSON: " + e.what());
  }
  if (!index.is_object()) return common::DataLoss(json_path + ": the index must be a JSON object");
  auto format = index.find("format");
  if (format == index.end() || !format->is_string() || format->get<std::string>() != kFormat) {
    return common::DataLoss(json_path + ": not a token shard index (\"format\" must be \"" + std::string(kFormat) +
                            "\")");
  }
  SHAMMIE_ASSIGN_OR_RETURN(int64_t version, IntField(index, json_path, "version", 1, INT64_MAX));
  if (version > kVersion) {
    return common::FailedPrecondition(json_path + ": index version " + std::to_string(version) +
                                      " is newer than this shammie reads (" + std::to_string(kVersion) +
                                      "); update shammie");
  }
  auto dtype = index.find("dtype");
  if (dtype == index.end() || (*dtype != "uint16" && *dtype != "uint32")) {
    return common::DataLoss(json_path + ": \"dtype\" must be \"uint16\" or \"uint32\", got " +
                            (dtype == index.end() ? std::string("nothing") : dtype->dump()));
  }
  shard->name = name;
  shard->dtype = *dtype == "uint16" ? TokenDType::kUint16 : TokenDType::kUint32;
  SHAMMIE_ASSIGN_OR_RETURN(int64_t vocab_size, IntField(index, json_path, "vocab_size", 1, MaxVocab(shard->dtype)));
  if (*vocab != 0 && vocab_size != *vocab) {
    return common::DataLoss(json_path + ": vocab_size " + std::to_string(vocab_size) +
                            " differs from the first shard's " + std::to_string(*vocab) +
                            "; shards of one dataset share a vocabulary");
  }
  *vocab = vocab_size;
  SHAMMIE_ASSIGN_OR_RETURN(shard->tokens, IntField(index, json_path, "tokens", 0, INT64_MAX / 4));

  SHAMMIE_ASSIGN_OR_RETURN(shard->map, MapFile(bin_path));
  const size_t width = WidthOf(shard->dtype);
  const auto expected = static_cast<size_t>(shard->tokens) * width;
  if (shard->map->size != expected) {
    return common::DataLoss(bin_path + ": " + std::to_string(shard->map->size) + " bytes, expected " +
                            std::to_string(expected) + " (" + std::to_string(shard->tokens) + " " +
                            std::string(TokenDTypeName(shard->dtype)) + " tokens per " + json_path +
                            "); truncated, or not this index's data");
  }
  for (int64_t i = 0; i < shard->tokens; ++i) {
    const int32_t t = shard->At(i);
    if (t < 0 || t >= vocab_size) {
      return common::DataLoss(bin_path + ": token " + std::to_string(static_cast<uint32_t>(t)) + " at position " +
                              std::to_string(i) + " is not below vocab_size " + std::to_string(vocab_size));
    }
  }

  auto documents = index.find("documents");
  if (documents == index.end() || !documents->is_array()) {
    return common::DataLoss(json_path + ": \"documents\" must be an array of [offset, length]");
  }
  int64_t end = 0;
  for (size_t d = 0; d < documents->size(); ++d) {
    const nlohmann::json& doc = (*documents)[d];
    const std::string where = json_path + ": document " + std::to_string(d);
    if (!doc.is_array() || doc.size() != 2 || !doc[0].is_number_integer() || !doc[1].is_number_integer()) {
      return common::DataLoss(where + " must be [offset, length] (two integers), got " + doc.dump());
    }
    const auto offset = doc[0].get<int64_t>(), length = doc[1].get<int64_t>();
    if (offset < end || length < 0 || length > shard->tokens || offset > shard->tokens - length) {
      return common::DataLoss(where + " [" + std::to_string(offset) + ", " + std::to_string(length) +
                              "] is out of bounds: it must start at or after " + std::to_string(end) +
                              " (the previous document's end) and end by " + std::to_string(shard->tokens) +
                              " (the tokens in " + bin_path + ")");
    }
    docs->push_back(DocRef{shard_index, offset, length});
    end = offset + length;
  }
  return common::Status::Ok();
}

std::string SplitName(Split split) {
  return split == Split::kTrain ? "train" : split == Split::kValidation ? "validation" : "test";
}

}  // namespace

std::string_view TokenDTypeName(TokenDType dtype) { return dtype == TokenDType::kUint16 ? "uint16" : "uint32"; }

struct TokenDataset::Impl {
  TokenDatasetOptions options;
  int64_t vocab_size = 0;
  std::vector<Shard> shards;
  std::vector<DocRef> docs;
  std::vector<Split> doc_split;
  // Per split: its documents in order, and where each starts in its stream
  // (starts[k] = tokens before document k; starts.back() = stream length).
  struct Stream {
    std::vector<int64_t> docs;
    std::vector<int64_t> starts{0};
  };
  Stream streams[3];

  const Stream& StreamOf(Split split) const { return streams[static_cast<int>(split)]; }

  void Read(const DocRef& d, int64_t from, int64_t n, int32_t* out) const {
    const Shard& s = shards[static_cast<size_t>(d.shard)];
    for (int64_t i = 0; i < n; ++i) out[i] = s.At(d.offset + from + i);
  }

  // window + 1 tokens of the split's stream from `start`.
  std::vector<int32_t> Slice(Split split, int64_t start) const {
    const Stream& st = StreamOf(split);
    std::vector<int32_t> out(static_cast<size_t>(options.window + 1));
    // The document holding `start`: the last k with starts[k] <= start.
    auto k = static_cast<size_t>(std::upper_bound(st.starts.begin(), st.starts.end(), start) - st.starts.begin() - 1);
    int64_t filled = 0, pos = start - st.starts[k];
    while (filled < static_cast<int64_t>(out.size())) {
      const DocRef& d = docs[static_cast<size_t>(st.docs[k])];
      const int64_t n = std::min(d.length - pos, static_cast<int64_t>(out.size()) - filled);
      Read(d, pos, n, out.data() + filled);
      filled += n;
      pos = 0;
      ++k;
    }
    return out;
  }
};

TokenDataset::TokenDataset(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenDataset::TokenDataset(TokenDataset&&) noexcept = default;
TokenDataset& TokenDataset::operator=(TokenDataset&&) noexcept = default;
TokenDataset::~TokenDataset() = default;

common::Result<TokenDataset> TokenDataset::Open(const std::string& shard, const TokenDatasetOptions& options) {
  return Open(std::vector<std::string>{shard}, options);
}

common::Result<TokenDataset> TokenDataset::Open(const std::vector<std::string>& shards,
                                                const TokenDatasetOptions& options) {
  if (shards.empty()) return common::InvalidArgument("token dataset: no shards given");
  if (options.window < 1 || options.window > (int64_t{1} << 30)) {
    return common::InvalidArgument("token dataset: window must be in [1, 2^30], got " + std::to_string(options.window));
  }
  const double vf = options.validation_fraction, tf = options.test_fraction;
  if (!(vf >= 0 && tf >= 0 && vf + tf <= 1)) {
    return common::InvalidArgument("token dataset: validation_fraction and test_fraction must be >= 0 with a sum <= 1, "
                                   "got " + std::to_string(vf) + " and " + std::to_string(tf));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->shards.resize(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    SHAMMIE_RETURN_IF_ERROR(OpenShard(StripShardSuffix(shards[i]), static_cast<int32_t>(i), &impl->shards[i],
                                      &impl->vocab_size, &impl->docs));
  }
  std::vector<uint32_t> buffer;
  for (size_t d = 0; d < impl->docs.size(); ++d) {
    const DocRef& doc = impl->docs[d];
    buffer.resize(static_cast<size_t>(doc.length));
    impl->Read(doc, 0, doc.length, reinterpret_cast<int32_t*>(buffer.data()));
    const uint64_t h = common::Hash64(
        std::string_view(reinterpret_cast<const char*>(buffer.data()), buffer.size() * sizeof(uint32_t)),
        options.split_seed);
    const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
    const Split split = u < vf ? Split::kValidation : u < vf + tf ? Split::kTest : Split::kTrain;
    impl->doc_split.push_back(split);
    if (doc.length == 0) continue;
    Impl::Stream& st = impl->streams[static_cast<int>(split)];
    st.docs.push_back(static_cast<int64_t>(d));
    st.starts.push_back(st.starts.back() + doc.length);
  }
  return TokenDataset(std::move(impl));
}

const TokenDatasetOptions& TokenDataset::options() const { return impl_->options; }
int64_t TokenDataset::vocab_size() const { return impl_->vocab_size; }

int64_t TokenDataset::tokens() const {
  int64_t n = 0;
  for (const Shard& s : impl_->shards) n += s.tokens;
  return n;
}

int64_t TokenDataset::documents() const { return static_cast<int64_t>(impl_->docs.size()); }

std::vector<int32_t> TokenDataset::Document(int64_t d) const {
  SHAMMIE_CHECK(d >= 0 && d < documents());
  const DocRef& doc = impl_->docs[static_cast<size_t>(d)];
  std::vector<int32_t> out(static_cast<size_t>(doc.length));
  impl_->Read(doc, 0, doc.length, out.data());
  return out;
}

Split TokenDataset::SplitOfDocument(int64_t d) const {
  SHAMMIE_CHECK(d >= 0 && d < documents());
  return impl_->doc_split[static_cast<size_t>(d)];
}

int64_t TokenDataset::SplitDocuments(Split split) const {
  return static_cast<int64_t>(impl_->StreamOf(split).docs.size());
}

int64_t TokenDataset::SplitTokens(Split split) const { return impl_->StreamOf(split).starts.back(); }

int64_t TokenDataset::WindowCount(Split split) const {
  const int64_t n = SplitTokens(split);
  return n > impl_->options.window ? (n - 1) / impl_->options.window : 0;
}

common::Status TokenDataset::CheckSplit(Split split) const {
  if (WindowCount(split) > 0) return common::Status::Ok();
  std::string names;
  for (const Shard& s : impl_->shards) names += (names.empty() ? "" : ", ") + s.name;
  return common::FailedPrecondition(
      "token dataset " + names + ": the " + SplitName(split) + " split has " + std::to_string(SplitTokens(split)) +
      " tokens in " + std::to_string(SplitDocuments(split)) + " documents, fewer than one window needs (window + 1 = " +
      std::to_string(impl_->options.window + 1) + "); lower the window or change the split fractions");
}

std::vector<int32_t> TokenDataset::Window(Split split, int64_t i) const {
  SHAMMIE_CHECK_MSG(i >= 0 && i < WindowCount(split), "Window: index out of range (see WindowCount)");
  return impl_->Slice(split, i * impl_->options.window);
}

std::vector<int32_t> TokenDataset::SampleWindow(Split split, common::SplitMix64& rng) const {
  SHAMMIE_CHECK_MSG(WindowCount(split) > 0, "SampleWindow: no window fits this split (see CheckSplit)");
  return impl_->Slice(split, rng.NextInt(0, SplitTokens(split) - impl_->options.window - 1));
}

std::vector<int64_t> TokenDataset::EpochOrder(Split split, uint64_t seed, uint64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(WindowCount(split)));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  common::SplitMix64 rng(common::DeriveSeed(seed, "epoch/" + SplitName(split), epoch));
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[static_cast<size_t>(rng.NextInt(0, static_cast<int64_t>(i) - 1))]);
  }
  return order;
}

// ---------------------------------------------------------------------------

struct TokenShardWriter::Impl {
  std::string name;
  TokenDType dtype = TokenDType::kUint16;
  int64_t vocab_size = 0;
  std::FILE* bin = nullptr;
  int64_t tokens = 0;
  std::vector<std::pair<int64_t, int64_t>> documents;
  bool done = false;
  std::vector<unsigned char> buffer;

  std::string BinTmp() const { return name + ".bin.tmp"; }
  std::string JsonTmp() const { return name + ".json.tmp"; }

  ~Impl() {
    if (bin != nullptr) std::fclose(bin);
    if (!done) {
      std::remove(BinTmp().c_str());
      std::remove(JsonTmp().c_str());
    }
  }
};

TokenShardWriter::TokenShardWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenShardWriter::TokenShardWriter(TokenShardWriter&&) noexcept = default;
TokenShardWriter& TokenShardWriter::operator=(TokenShardWriter&&) noexcept = default;
TokenShardWriter::~TokenShardWriter() = default;

common::Result<TokenShardWriter> TokenShardWriter::Create(const std::string& name, TokenDType dtype,
                                                          int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > MaxVocab(dtype)) {
    return common::InvalidArgument(name + ": vocab_size " + std::to_string(vocab_size) + " does not fit " +
                                   std::string(TokenDTypeName(dtype)) + " tokens (1 to " +
                                   std::to_string(MaxVocab(dtype)) + ")");
  }
  for (const std::string& path : {name + ".bin", name + ".json"}) {
    if (std::filesystem::exists(path)) return common::AlreadyExists(path + ": exists; remove it first");
  }
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->dtype = dtype;
  impl->vocab_size = vocab_size;
  impl->bin = std::fopen(impl->BinTmp().c_str(), "wb");
  if (impl->bin == nullptr) return common::Internal(impl->BinTmp() + ": cannot create: " + Errno());
  return TokenShardWriter(std::move(impl));
}

common::Status TokenShardWriter::Add(std::span<const int32_t> document) {
  Impl& w = *impl_;
  if (w.done || w.bin == nullptr) return common::FailedPrecondition(w.name + ": Add after Finish");
  const size_t width = WidthOf(w.dtype);
  w.buffer.resize(document.size() * width);
  for (size_t i = 0; i < document.size(); ++i) {
    const int32_t t = document[i];
    if (t < 0 || t >= w.vocab_size) {
      return common::InvalidArgument(w.name + ": document " + std::to_string(w.documents.size()) + " has token " +
                                     std::to_string(t) + " at " + std::to_string(i) + ", outside [0, " +
                                     std::to_string(w.vocab_size) + ")");
    }
    if (w.dtype == TokenDType::kUint16) {
      const auto v = static_cast<uint16_t>(t);
      std::memcpy(w.buffer.data() + 2 * i, &v, 2);
    } else {
      const auto v = static_cast<uint32_t>(t);
      std::memcpy(w.buffer.data() + 4 * i, &v, 4);
    }
  }
  if (!w.buffer.empty() && std::fwrite(w.buffer.data(), 1, w.buffer.size(), w.bin) != w.buffer.size()) {
    return common::Internal(w.BinTmp() + ": write failed: " + Errno());
  }
  const auto n = static_cast<int64_t>(document.size());
  w.documents.emplace_back(w.tokens, n);
  w.tokens += n;
  return common::Status::Ok();
}

common::Status TokenShardWriter::Finish() {
  Impl& w = *impl_;
  if (w.done || w.bin == nullptr) return common::FailedPrecondition(w.name + ": Finish called twice");
  const int rc = std::fclose(w.bin);
  w.bin = nullptr;
  if (rc != 0) return common::Internal(w.BinTmp() + ": close failed: " + Errno());
  nlohmann::json index = {{"format", std::string(kFormat)},
                          {"version", kVersion},
                          {"dtype", std::string(TokenDTypeName(w.dtype))},
                          {"vocab_size", w.vocab_size},
                          {"tokens", w.tokens},
                          {"documents", w.documents}};
  {
    std::ofstream out(w.JsonTmp(), std::ios::binary | std::ios::trunc);
    out << index.dump() << "\n";
    out.close();
    if (!out) return common::Internal(w.JsonTmp() + ": write failed: " + Errno());
  }
  for (const auto& [from, to] : {std::pair{w.BinTmp(), w.name + ".bin"}, std::pair{w.JsonTmp(), w.name + ".json"}}) {
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      return common::Internal(from + ": rename to " + to + ": " + Errno());
    }
  }
  w.done = true;
  return common::Status::Ok();
}

}  // namespace shammie::workers
