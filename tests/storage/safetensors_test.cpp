// safetensors: golden bytes, round trips, float rounding, corrupt files, and
// the oracle: files written by Python + torch read here, and files written
// here read back by Python (tests/storage/safetensors_oracle.py).
#include "storage/safetensors.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numbers>
#include <random>

#include <nlohmann/json.hpp>

#include "tests/test_util.hpp"

namespace shammie::storage {
namespace {

using common::StatusCode;
using nlohmann::json;
using Tensors = std::map<std::string, TensorData>;

std::string Le64(uint64_t n) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out;
}

template <typename T>
std::string Raw(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

// A file from header text (padded to 8 with spaces, as a writer would) and
// the byte buffer.
std::string FileBytes(std::string header, const std::string& buffer) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return Le64(header.size()) + header + buffer;
}

std::vector<std::string> DirEntries(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// --- golden bytes ------------------------------------------------------------

// Computed by hand; the first three are also the reference implementation's
// own test vectors (safetensors/src/tensor.rs: test_serialization, test_empty).
TEST(SafetensorsGoldenTest, OneF32Tensor) {
  Tensors t{{"attn.0", {"F32", {1, 2, 3}, Raw<float>({0, 1, 2, 3, 4, 5})}}};
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);  // a multiple of 8: no padding
  const std::string expected = std::string("\x40\0\0\0\0\0\0\0", 8) + header +
                               std::string("\0\0\0\0\0\0\x80\x3f\0\0\0\x40\0\0\x40\x40\0\0\x80\x40\0\0\xa0\x40", 24);
  auto bytes = SerializeSafetensors(t);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, expected);
  auto back = ParseSafetensors(expected, "golden");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tensors, t);
  EXPECT_TRUE(back->metadata.empty());
}

TEST(SafetensorsGoldenTest, EmptyFileAndMetadataOnly) {
  auto empty = SerializeSafetensors({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  auto meta = SerializeSafetensors({}, {{"framework", "pt"}});
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(*meta, std::string("\x28\0\0\0\0\0\0\0", 8) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  auto back = ParseSafetensors(*meta, "golden");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->tensors.empty());
  EXPECT_EQ(back->metadata, (std::map<std::string, std::string>{{"framework", "pt"}}));
}

// Descending dtype rank (I64 > F32 > BF16 > I8), then name; back to back.
TEST(SafetensorsGoldenTest, OrderByDtypeRankThenName) {
  Tensors t{{"a", {"I8", {2}, Raw<int8_t>({1, -1})}},
            {"b", {"F32", {}, Raw<float>({1.0f})}},
            {"c", {"BF16", {1}, Raw<uint16_t>({0x3f80})}},
            {"d", {"I64", {1}, Raw<int64_t>({5})}}};
  const std::string header =
      R"({"d":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[],"data_offsets":[8,12]},)"
      R"("c":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]},)"
      R"("a":{"dtype":"I8","shape":[2],"data_offsets":[14,16]}})"
      "       ";  // 217 + 7 = 224
  const std::string expected = std::string("\xe0\0\0\0\0\0\0\0", 8) + header +
                               std::string("\x05\0\0\0\0\0\0\0" "\0\0\x80\x3f" "\x80\x3f" "\x01\xff", 16);
  auto bytes = SerializeSafetensors(t);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, expected);
}

// --- round trips -------------------------------------------------------------

Tensors EveryDtype() {
  Tensors t;
  std::mt19937 rng(7);
  int i = 0;
  for (const char* dtype : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32",
                            "U32", "F32", "C64", "F64", "I64", "U64"}) {
    const int64_t size = *SafetensorsDtypeSize(dtype);
    const std::vector<int64_t> shape = i % 3 == 0 ? std::vector<int64_t>{3, 2} : std::vector<int64_t>{5};
    std::string bytes(static_cast<size_t>(*SafetensorsElementCount(shape) * size), '\0');
    for (auto& c : bytes) c = static_cast<char>(std::string_view(dtype) == "BOOL" ? rng() % 2 : rng());
    t["t" + std::to_string(i++) + "." + dtype] = {dtype, shape, bytes};
  }
  t["scalar"] = {"F64", {}, Raw<double>({std::numbers::pi})};
  t["empty"] = {"F32", {0, 7}, ""};
  t["also.empty"] = {"I64", {3, 0}, ""};
  t["ünïcode/\"name\"\t\x01"] = {"U8", {1}, "x"};
  return t;
}

TEST(SafetensorsRoundTripTest, WriteReadEveryDtype) {
  testing::ScratchDir dir("safetensors-roundtrip");
  const std::string path = dir.File("model.safetensors");
  const Tensors tensors = EveryDtype();
  const std::map<std::string, std::string> metadata{{"format", "pt"}, {"step", "100"}, {"note", "a \"b\"\n✓"}};
  ASSERT_TRUE(WriteSafetensors(path, tensors, metadata).ok());
  auto back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tensors, tensors);
  EXPECT_EQ(back->metadata, metadata);
  // The file is exactly SerializeSafetensors' bytes, and parses the same.
  auto bytes = SerializeSafetensors(tensors, metadata);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(testing::ReadFileText(path), *bytes);
  uint64_t n = 0;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  auto parsed = ParseSafetensors(*bytes, "memory");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->tensors, tensors);
}

TEST(SafetensorsRoundTripTest, OverwriteIsAtomicAndLeavesNoTemporary) {
  testing::ScratchDir dir("safetensors-atomic");
  const std::string path = dir.File("ckpt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", {"F32", {1}, Raw<float>({1.0f})}}}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"w", {"F32", {2}, Raw<float>({2.0f, 3.0f})}}}).ok());
  auto back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tensors.at("w").shape, std::vector<int64_t>{2});
  EXPECT_EQ(DirEntries(dir.path()), std::vector<std::string>{"ckpt.safetensors"});
  // A relative path lands in the working directory's view of it.
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  const auto status = WriteSafetensors("rel.safetensors", {});
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_TRUE(ReadSafetensors(dir.File("rel.safetensors")).ok());
}

TEST(SafetensorsRoundTripTest, IoErrorsNameThePath) {
  testing::ScratchDir dir("safetensors-io");
  const std::string missing_dir = dir.File("no/such/dir/m.safetensors");
  auto status = WriteSafetensors(missing_dir, {});
  EXPECT_EQ(status.code(), StatusCode::kNotFound) << status.ToString();
  EXPECT_NE(status.message().find(missing_dir), std::string::npos) << status.message();
  auto read = ReadSafetensors(dir.File("absent.safetensors"));
  EXPECT_EQ(read.status().code(), StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("absent.safetensors"), std::string::npos);
  EXPECT_EQ(WriteSafetensors("", {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(dir.path().string() + "/", {}).code(), StatusCode::kInvalidArgument);
  auto a_dir = ReadSafetensors(dir.path().string());
  EXPECT_EQ(a_dir.status().code(), StatusCode::kInvalidArgument) << a_dir.status().ToString();
  EXPECT_TRUE(DirEntries(dir.path()).empty());
}

// --- writer input errors -----------------------------------------------------

TEST(SafetensorsWriteTest, RejectsBadTensorsAndWritesNothing) {
  testing::ScratchDir dir("safetensors-reject");
  const std::string path = dir.File("bad.safetensors");
  struct Case {
    Tensors tensors;
    std::map<std::string, std::string> metadata;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"w", {"F128", {1}, "x"}}}, {}, "tensor \"w\": unknown dtype \"F128\""},
      {{{"w", {"F4", {2}, "x"}}}, {}, "tensor \"w\": dtype F4 packs elements below one byte"},
      {{{"w", {"F32", {3}, Raw<float>({1, 2})}}}, {}, "tensor \"w\": shape [3] of F32 needs 12 bytes, got 8"},
      {{{"w", {"F32", {2, -1}, ""}}}, {}, "tensor \"w\": shape [2, -1] has a negative dimension"},
      {{{"w", {"U8", {1LL << 62, 1LL << 62}, ""}}}, {}, "more elements than int64 holds"},
      {{{"__metadata__", {"U8", {1}, "x"}}}, {}, "cannot be named \"__metadata__\""},
      {{{"bad\xff", {"U8", {1}, "x"}}}, {}, "is not valid UTF-8"},
      {{}, {{"k", "bad\xc3"}}, "metadata key \"k\" is not valid UTF-8"},
  };
  for (const auto& c : cases) {
    auto status = WriteSafetensors(path, c.tensors, c.metadata);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << c.message << " -> " << status.ToString();
    EXPECT_NE(status.message().find(c.message), std::string::npos) << status.message();
  }
  EXPECT_TRUE(DirEntries(dir.path()).empty());
}

// --- corrupt files (error cases are data) --------------------------------------

struct CorruptCase {
  std::string name;
  std::string bytes;
  StatusCode code;
  std::string message;  // must appear in the error, after "<path>: "
};

std::vector<CorruptCase> CorruptCases() {
  const std::string f32x2 = Raw<float>({1, 2});
  auto one = [](const std::string& entry) { return R"({"w":)" + entry + "}"; };
  return {
      {"empty", "", StatusCode::kDataLoss, "truncated: 0 bytes, but a safetensors file starts with an 8-byte header"},
      {"five_bytes", std::string("\x10\0\0\0\0", 5), StatusCode::kDataLoss, "truncated: 5 bytes"},
      {"header_too_large", Le64(100'000'001) + "{}", StatusCode::kDataLoss,
       "header length 100000001 exceeds the 100000000-byte limit"},
      {"header_length_max", Le64(~0ULL), StatusCode::kDataLoss, "header length 18446744073709551615 exceeds"},
      {"header_cut", Le64(64) + "{\"w\":", StatusCode::kDataLoss,
       "truncated: the header length says 64 bytes but only 5 follow it"},
      {"not_json", FileBytes("{\"w\":{", ""), StatusCode::kDataLoss, "the header is not valid JSON: "},
      {"nul_padding", Le64(8) + std::string("{}\0\0\0\0\0\0", 8), StatusCode::kDataLoss,
       "the header is not valid JSON: a NUL byte at offset 2"},
      {"bad_utf8", FileBytes("{\"w\xff\":{}}", ""), StatusCode::kDataLoss, "not valid JSON"},
      {"array", FileBytes("[]", ""), StatusCode::kDataLoss, "the header must be a JSON object, got array"},
      {"duplicate_tensor",
       FileBytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                 f32x2),
       StatusCode::kDataLoss, "duplicate key \"w\" in the header"},
      {"duplicate_field", FileBytes(one(R"({"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})"), f32x2),
       StatusCode::kDataLoss, "duplicate key \"dtype\""},
      {"entry_not_object", FileBytes(one("[1]"), ""), StatusCode::kDataLoss,
       "tensor \"w\" must be an object with \"dtype\", \"shape\" and \"data_offsets\", got [1]"},
      {"missing_dtype", FileBytes(one(R"({"shape":[2],"data_offsets":[0,8]})"), f32x2), StatusCode::kDataLoss,
       "tensor \"w\" has no \"dtype\""},
      {"unknown_dtype", FileBytes(one(R"({"dtype":"F128","shape":[2],"data_offsets":[0,8]})"), f32x2),
       StatusCode::kDataLoss, "tensor \"w\": unknown dtype \"F128\" (known: BOOL, U8, "},
      {"sub_byte_dtype", FileBytes(one(R"({"dtype":"F4","shape":[2],"data_offsets":[0,1]})"), "x"),
       StatusCode::kFailedPrecondition, "tensor \"w\": dtype F4 packs elements below one byte"},
      {"negative_dim", FileBytes(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), f32x2),
       StatusCode::kDataLoss, "\"shape\" must be an array of non-negative integers, got [-2]"},
      {"float_dim", FileBytes(one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), f32x2),
       StatusCode::kDataLoss, "\"shape\" must be an array of non-negative integers, got [2.0]"},
      {"three_offsets", FileBytes(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"), f32x2),
       StatusCode::kDataLoss, "\"data_offsets\" must be [begin, end] with 0 <= begin <= end, got [0,8,8]"},
      {"reversed_offsets", FileBytes(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), f32x2),
       StatusCode::kDataLoss, "\"data_offsets\" must be [begin, end] with 0 <= begin <= end, got [8,0]"},
      {"size_mismatch", FileBytes(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), f32x2),
       StatusCode::kDataLoss, "tensor \"w\": data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12"},
      {"shape_overflow",
       FileBytes(one(R"({"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]})"), f32x2),
       StatusCode::kDataLoss, "shape [4611686018427387904, 4] of F32 overflows a 64-bit size"},
      {"offset_past_end", FileBytes(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), f32x2),
       StatusCode::kDataLoss, "truncated: the tensors need a 16-byte buffer but only 8 bytes follow the header"},
      {"trailing_bytes", FileBytes(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), f32x2 + "xy"),
       StatusCode::kDataLoss, "2 trailing bytes after the last tensor"},
      {"gap_at_start", FileBytes(one(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), f32x2),
       StatusCode::kDataLoss, "bytes [0, 4) of the buffer belong to no tensor (a gap at the start, before tensor \"w\")"},
      {"gap_between",
       FileBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                 Raw<float>({1, 2, 3})),
       StatusCode::kDataLoss, "bytes [4, 8) of the buffer belong to no tensor (a gap after tensor \"a\", before tensor \"b\")"},
      {"overlap",
       FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 Raw<float>({1, 2, 3})),
       StatusCode::kDataLoss, "tensor \"b\" [4, 12] overlaps tensor \"a\" [0, 8]"},
      {"same_range",
       FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                 f32x2),
       StatusCode::kDataLoss, "tensor \"b\" [0, 8] overlaps tensor \"a\" [0, 8]"},
      {"metadata_not_string", FileBytes(R"({"__metadata__":{"step":3}})", ""), StatusCode::kDataLoss,
       "\"__metadata__\" values must be strings; \"step\" holds 3"},
      {"metadata_not_object", FileBytes(R"({"__metadata__":"pt"})", ""), StatusCode::kDataLoss,
       "\"__metadata__\" must be an object of strings, got \"pt\""},
  };
}

TEST(SafetensorsCorruptTest, EveryCaseFailsWithItsMessage) {
  testing::ScratchDir dir("safetensors-corrupt");
  for (const auto& c : CorruptCases()) {
    const std::string path = dir.File(c.name + ".safetensors");
    testing::WriteFile(path, c.bytes);
    auto read = ReadSafetensors(path);
    ASSERT_FALSE(read.ok()) << c.name;
    EXPECT_EQ(read.status().code(), c.code) << c.name << ": " << read.status().ToString();
    EXPECT_EQ(read.status().message().rfind(path + ": ", 0), 0u) << c.name << ": " << read.status().message();
    EXPECT_NE(read.status().message().find(c.message), std::string::npos)
        << c.name << ": expected \"" << c.message << "\" in\n  " << read.status().message();
    // The in-memory parser agrees.
    auto parsed = ParseSafetensors(c.bytes, c.name);
    ASSERT_FALSE(parsed.ok()) << c.name;
    EXPECT_EQ(parsed.status().code(), c.code) << c.name;
    EXPECT_NE(parsed.status().message().find(c.message), std::string::npos) << parsed.status().message();
  }
}

// What the format allows that a strict reader might wrongly refuse.
TEST(SafetensorsCorruptTest, AcceptsWhatTheFormatAllows) {
  // Tensors listed out of offset order, an unpadded header, unknown extra
  // fields in an entry (the reference ignores them), null metadata, empty
  // tensors sharing an offset.
  const std::string header =
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8],"extra":1},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
      R"("e2":{"dtype":"I64","shape":[2,0],"data_offsets":[8,8]},"__metadata__":null})";
  const std::string file = Le64(header.size()) + header + Raw<float>({1, 2});
  auto parsed = ParseSafetensors(file, "lenient");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->tensors.size(), 4u);
  EXPECT_EQ(parsed->tensors.at("a").bytes, Raw<float>({1}));
  EXPECT_EQ(parsed->tensors.at("b").bytes, Raw<float>({2}));
  EXPECT_EQ(parsed->tensors.at("e2").shape, (std::vector<int64_t>{2, 0}));
  EXPECT_TRUE(parsed->metadata.empty());
}

// --- float conversions -----------------------------------------------------------

TEST(SafetensorsFloatTest, KnownBf16AndF16Values) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);  // tie: to even (down)
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3f82);  // tie: to even (up)
  EXPECT_EQ(FloatToBf16(std::nextafter(1.00390625f, 2.0f)), 0x3f81);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds past the largest bf16
  EXPECT_EQ(FloatToBf16(-inf), 0xff80);
  EXPECT_EQ(FloatToBf16(nan), 0x7fc0);
  EXPECT_EQ(FloatToBf16(-nan), 0x7fc0);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xc020), -2.5f);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(0x7fc1)));

  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(1.0f / 3.0f), 0x3555);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // tie between 65504 and 2^16: to even = Inf
  EXPECT_EQ(FloatToF16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToF16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToF16(0x1p-25f), 0x0000);  // tie: to even = 0
  EXPECT_EQ(FloatToF16(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(FloatToF16(0x3p-25f), 0x0002);  // 1.5 x 2^-24: tie to even = 2
  EXPECT_EQ(FloatToF16(0x1.ff8p-15f), 0x03ff);  // largest subnormal
  EXPECT_EQ(FloatToF16(std::nextafter(0x1.ffcp-15f, 0.0f)), 0x03ff);
  EXPECT_EQ(FloatToF16(0x1.ffcp-15f), 0x0400);  // tie: to even, into the normals
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToF16(inf), 0x7c00);
  EXPECT_EQ(FloatToF16(nan), 0x7e00);
  EXPECT_EQ(FloatToF16(-nan), 0xfe00);
  EXPECT_EQ(F16ToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0xfc00), -inf);
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7c01)));
}

// Every 16-bit pattern widens exactly and narrows back to itself.
TEST(SafetensorsFloatTest, EveryHalfPatternRoundTrips) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const float h = F16ToFloat(bits);
    const float bf = Bf16ToFloat(bits);
    if (std::isnan(h)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(h)))) << std::hex << b;
    } else {
      ASSERT_EQ(FloatToF16(h), bits) << std::hex << b;
    }
    if (std::isnan(bf)) {
      EXPECT_EQ(FloatToBf16(bf), 0x7fc0) << std::hex << b;
    } else {
      ASSERT_EQ(FloatToBf16(bf), bits) << std::hex << b;
    }
  }
}

// Narrowing picks the nearest representable value, ties to the even pattern,
// checked against the neighbours of the result (an independent definition).
template <typename Narrow, typename Widen>
void CheckNearestEven(Narrow narrow, Widen widen, float max_finite, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 300000; ++i) {
    const float x = std::bit_cast<float>(any(rng));
    if (!std::isfinite(x) || std::fabs(x) > max_finite) continue;
    const uint16_t r = narrow(x);
    const double err = std::fabs(static_cast<double>(widen(r)) - x);
    for (int step : {-1, 1}) {
      const uint16_t n = static_cast<uint16_t>(r + step);
      const float other = widen(n);
      if (std::isnan(other) || (n & 0x7fff) == 0x7fff || ((r ^ n) & 0x8000)) continue;
      const double other_err = std::fabs(static_cast<double>(other) - x);
      ASSERT_LE(err, other_err) << x;
      if (err == other_err) {
        ASSERT_EQ(r & 1, 0) << "tie not to even at " << x;
      }
    }
  }
}

TEST(SafetensorsFloatTest, NarrowingIsNearestEven) {
  CheckNearestEven(FloatToF16, F16ToFloat, 65504.0f, 1);
  CheckNearestEven(FloatToBf16, Bf16ToFloat, 0x1.fep127f, 2);
}

TEST(SafetensorsFloatTest, TensorHelpers) {
  const std::vector<float> values{1.0f, -2.5f, 0.1f, 65504.0f};
  for (const char* dtype : {"F32", "BF16", "F16"}) {
    auto t = TensorFromFloats(dtype, {2, 2}, values);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->bytes.size(), 4u * static_cast<size_t>(*SafetensorsDtypeSize(dtype)));
    auto back = TensorToFloats(*t);
    ASSERT_TRUE(back.ok());
    for (size_t i = 0; i < values.size(); ++i) {
      const float want = std::string_view(dtype) == "F32"    ? values[i]
                         : std::string_view(dtype) == "BF16" ? Bf16ToFloat(FloatToBf16(values[i]))
                                                             : F16ToFloat(FloatToF16(values[i]));
      EXPECT_EQ((*back)[i], want) << dtype << " " << i;
    }
  }
  EXPECT_EQ(TensorFromFloats("I32", {1}, values).status().code(), StatusCode::kInvalidArgument);
  auto wrong = TensorFromFloats("F32", {3}, values);
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("shape [3] holds 3 values, got 4"), std::string::npos);
  EXPECT_EQ(TensorToFloats({"I64", {1}, Raw<int64_t>({1})}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(TensorToFloats({"F32", {3}, Raw<float>({1})}).status().code(), StatusCode::kInvalidArgument);
}

// --- the Python + torch oracle ---------------------------------------------------

constexpr const char* kPython = "/usr/bin/python3";
constexpr const char* kOracle = SHAMMIE_SOURCE_DIR "/tests/storage/safetensors_oracle.py";

float JsonFloat(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "nan") return std::numeric_limits<float>::quiet_NaN();
    return s == "inf" ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
  }
  return static_cast<float>(v.get<double>());
}

// A tensor built here from the values Python reported (not from its bytes).
TensorData FromExpected(const json& e) {
  const std::string dtype = e["dtype"];
  const std::vector<int64_t> shape = e["shape"].get<std::vector<int64_t>>();
  if (dtype == "F32" || dtype == "BF16" || dtype == "F16") {
    std::vector<float> values;
    for (const auto& v : e.contains("source") ? e["source"] : e["values"]) values.push_back(JsonFloat(v));
    auto t = TensorFromFloats(dtype, shape, values);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? *t : TensorData{};
  }
  TensorData t{dtype, shape, ""};
  for (const auto& v : e["values"]) {
    if (dtype == "F64") {
      t.bytes += Raw<double>({v.is_string() ? static_cast<double>(JsonFloat(v)) : v.get<double>()});
    } else if (dtype == "I64") {
      t.bytes += Raw<int64_t>({v.get<int64_t>()});
    } else if (dtype == "I32") {
      t.bytes += Raw<int32_t>({v.get<int32_t>()});
    } else if (dtype == "I16") {
      t.bytes += Raw<int16_t>({v.get<int16_t>()});
    } else if (dtype == "I8") {
      t.bytes += Raw<int8_t>({v.get<int8_t>()});
    } else {  // U8, BOOL
      t.bytes += Raw<uint8_t>({v.get<uint8_t>()});
    }
  }
  return t;
}

// Same dtype and shape, and the same values: bit for bit, except that any NaN
// matches any NaN. (NaN payloads are not portable: for a BF16 NaN PyTorch's
// vectorized CPU conversion gives 0xFFFF and its scalar one 0x7FC0.)
void ExpectSameValues(const TensorData& got, const TensorData& want, const std::string& name) {
  EXPECT_EQ(got.dtype, want.dtype) << name;
  EXPECT_EQ(got.shape, want.shape) << name;
  if (got.dtype != "F32" && got.dtype != "BF16" && got.dtype != "F16") {
    EXPECT_EQ(got.bytes, want.bytes) << name;
    return;
  }
  auto g = TensorToFloats(got);
  auto w = TensorToFloats(want);
  ASSERT_TRUE(g.ok() && w.ok()) << name;
  ASSERT_EQ(g->size(), w->size()) << name;
  for (size_t i = 0; i < g->size(); ++i) {
    if (std::isnan((*w)[i])) {
      EXPECT_TRUE(std::isnan((*g)[i])) << name << "[" << i << "]";
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>((*g)[i]), std::bit_cast<uint32_t>((*w)[i]))
          << name << "[" << i << "]: " << (*g)[i] << " vs " << (*w)[i];
    }
  }
}

TEST(SafetensorsOracleTest, AgreesWithPythonAndTorchBothWays) {
  if (testing::RunCommand(std::string(kPython) + " -c 'import torch, numpy'").exit_code != 0) {
    GTEST_SKIP() << kPython << " has no torch/numpy (scripts/setup.sh installs python3-torch and python3-numpy)";
  }
  testing::ScratchDir dir("safetensors-oracle");
  const std::string py_file = dir.File("python.safetensors");
  const std::string expected_file = dir.File("expected.json");
  auto wrote = testing::RunCommand(std::string(kPython) + " " + kOracle + " write " + py_file + " " + expected_file);
  ASSERT_EQ(wrote.exit_code, 0) << wrote.output;
  const json expected = json::parse(testing::ReadFileText(expected_file));
  using Metadata = std::map<std::string, std::string>;
  const auto metadata = expected["metadata"].get<Metadata>();

  // 1. C++ reads Python's file; the values decode to what torch reported.
  auto read = ReadSafetensors(py_file);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->metadata, metadata);
  ASSERT_EQ(read->tensors.size(), expected["tensors"].size());
  Tensors built;
  for (const auto& [name, e] : expected["tensors"].items()) {
    ASSERT_TRUE(read->tensors.count(name)) << name;
    const TensorData& t = read->tensors.at(name);
    EXPECT_EQ(t.dtype, e["dtype"].get<std::string>()) << name;
    EXPECT_EQ(t.shape, e["shape"].get<std::vector<int64_t>>()) << name;
    if (t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F16") {
      auto values = TensorToFloats(t);
      ASSERT_TRUE(values.ok()) << values.status().ToString();
      ASSERT_EQ(values->size(), e["values"].size()) << name;
      for (size_t i = 0; i < values->size(); ++i) {
        const float want = JsonFloat(e["values"][i]);
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan((*values)[i])) << name << "[" << i << "]";
        } else {
          EXPECT_EQ(std::bit_cast<uint32_t>((*values)[i]), std::bit_cast<uint32_t>(want)) << name << "[" << i << "]";
        }
      }
    }
    // 2. Built here from the reported values (BF16 and F16 rounded here from
    // torch's float32 sources), each tensor holds what torch's does.
    built[name] = FromExpected(e);
    ExpectSameValues(built[name], t, name);
  }

  // 3. What C++ read, written back, is byte-identical to Python's file (order,
  // offsets, JSON text, escaping, padding).
  const std::string echo_file = dir.File("echo.safetensors");
  ASSERT_TRUE(WriteSafetensors(echo_file, read->tensors, read->metadata).ok());
  EXPECT_EQ(testing::ReadFileText(echo_file), testing::ReadFileText(py_file));

  // 4. Python reads the file C++ wrote from its own conversions, with its own
  // parser, and compares it with torch.
  const std::string cpp_file = dir.File("cpp.safetensors");
  ASSERT_TRUE(WriteSafetensors(cpp_file, built, metadata).ok());
  auto checked = testing::RunCommand(std::string(kPython) + " " + kOracle + " read " + cpp_file);
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
  EXPECT_NE(checked.output.find("python reads what C++ wrote: 14 tensors match torch"), std::string::npos)
      << checked.output;
}

}  // namespace
}  // namespace shammie::storage
