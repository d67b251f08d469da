// A small binary encoding for messages between ranks and journal records:
// little-endian fixed-width integers and doubles, LEB128 varints and
// length-prefixed bytes. A Reader never reads past its buffer: every Get*
// fails (returns false and latches `ok() == false`) on truncated or
// malformed input, so a corrupt message is an error, not a crash.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace shammie::common {

class WireWriter {
 public:
  void U8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Raw(&v, sizeof v); }
  void U64(uint64_t v) { Raw(&v, sizeof v); }
  void I64(int64_t v) { Raw(&v, sizeof v); }
  void F64(double v) { Raw(&v, sizeof v); }
  void Var(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    buf_.push_back(static_cast<char>(v));
  }
  void Str(std::string_view s) {
    Var(s.size());
    buf_.append(s.data(), s.size());
  }
  void Raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }

  std::string& buffer() { return buf_; }
  std::string Take() { return std::move(buf_); }
  size_t size() const { return buf_.size(); }
  void Clear() { buf_.clear(); }

 private:
  std::string buf_;
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : p_(data.data()), end_(data.data() + data.size()) {}

  bool U8(uint8_t& v) { return Fixed(v); }
  bool U32(uint32_t& v) { return Fixed(v); }
  bool U64(uint64_t& v) { return Fixed(v); }
  bool I64(int64_t& v) { return Fixed(v); }
  bool F64(double& v) { return Fixed(v); }
  bool Var(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) return Fail();
      const auto byte = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return Fail();
  }
  bool Str(std::string& s) {
    uint64_t n = 0;
    if (!Var(n) || n > static_cast<uint64_t>(end_ - p_)) return Fail();
    s.assign(p_, n);
    p_ += n;
    return true;
  }
  // A view into the buffer (valid while the buffer lives).
  bool Bytes(size_t n, std::string_view& out) {
    if (n > static_cast<size_t>(end_ - p_)) return Fail();
    out = std::string_view(p_, n);
    p_ += n;
    return true;
  }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && p_ == end_; }

 private:
  template <typename T>
  bool Fixed(T& v) {
    if (static_cast<size_t>(end_ - p_) < sizeof(T)) return Fail();
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return true;
  }
  bool Fail() {
    ok_ = false;
    p_ = end_;
    return false;
  }
  const char* p_;
  const char* end_;
  bool ok_ = true;
};

// CRC-32C (Castagnoli) of `data`, continuing from `crc` (0 to start).
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace shammie::common
