// Reading and writing the safetensors format (Hugging Face), without LibTorch.
//
// File layout (little-endian; https://github.com/huggingface/safetensors):
//   [u64 N][N bytes: UTF-8 JSON header, padded with spaces][byte buffer]
// The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end)} (offsets relative to the byte buffer), plus an optional
// "__metadata__" object of string -> string. Tensors are row-major and packed.
//
// Reader contract (the reference implementation's rules, all checked before
// any tensor byte is allocated or read):
// - N <= kSafetensorsMaxHeader (100 MB); 8 + N <= file size.
// - The header is one JSON object with no duplicate key at any level; each
//   tensor has a known dtype, a shape of non-negative integers and exactly two
//   offsets; "__metadata__" values are strings.
// - Sorted by offset, the tensors tile the byte buffer exactly: the first
//   begins at 0, each begins where the previous ends (no gap, no overlap),
//   end - begin == (product of shape) x (dtype size), and the last ends at
//   the end of the file. Empty tensors ([k, k]) and scalars (shape []) are
//   allowed.
// A file that breaks a rule fails with DataLoss naming the file, the tensor
// and expected vs. actual; a missing file with NotFound; a dtype the format
// defines but shammie does not hold (sub-byte F4, F6_*) with
// FailedPrecondition. Tensor values are not checked (NaN and Inf are data).
//
// Writer contract: the same bytes as the reference serializer
// (safetensors.torch.save_file) for the same tensors: tensors ordered by
// descending dtype alignment (the reference's Dtype order) then by name
// (bytewise), laid out back to back from offset 0; compact JSON with the keys
// "dtype", "shape", "data_offsets" in that order and "__metadata__" first
// (omitted when empty); spaces to a multiple of 8 bytes. One exception: the
// reference keeps metadata in a hash map, so with two or more metadata keys
// its order is arbitrary; ours is sorted by key.
//
// Thread-safety: free functions without shared state; concurrent calls on
// different paths are safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

namespace shammie::storage {

// The reference's limit on N, the header's length in bytes.
inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

// One tensor: dtype name as in the file ("F32", "BF16", "I64", "BOOL", ...),
// shape (row-major; [] is a scalar), and its raw little-endian bytes
// (product of shape x dtype size of them).
struct TensorData {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;

  bool operator==(const TensorData&) const = default;
};

struct SafetensorsFile {
  std::map<std::string, TensorData> tensors;     // by name
  std::map<std::string, std::string> metadata;  // "__metadata__"; empty when absent
};

// Bytes per element of a dtype this module holds: BOOL U8 I8 F8_E5M2 F8_E4M3
// F8_E8M0 (1), I16 U16 F16 BF16 (2), I32 U32 F32 (4), I64 U64 F64 C64 (8).
// nullopt for anything else (including the sub-byte F4, F6_E2M3, F6_E3M2).
std::optional<int64_t> SafetensorsDtypeSize(std::string_view dtype);

// Product of the dims (1 for a scalar); InvalidArgument when a dim is
// negative or the product overflows int64.
common::Result<int64_t> SafetensorsElementCount(const std::vector<int64_t>& shape);

// Reads and validates a whole file (contract above). Memory: the tensors'
// bytes plus the header; no second copy of the file.
common::Result<SafetensorsFile> ReadSafetensors(const std::string& path);

// The same for a file already in memory; `source` names it in errors.
common::Result<SafetensorsFile> ParseSafetensors(std::string_view data, std::string_view source);

// The file's bytes for these tensors and metadata (writer contract above).
// InvalidArgument for an unknown dtype, a negative dim, bytes that do not
// match shape x dtype, a name that is "__metadata__" or not valid UTF-8, or
// a header over kSafetensorsMaxHeader.
common::Result<std::string> SerializeSafetensors(const std::map<std::string, TensorData>& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});

// Writes SerializeSafetensors' bytes to `path` atomically: a temporary file
// in the same directory, fsync, rename over `path`, fsync the directory. A
// crash leaves the old file or the new one, never a mix; on failure the
// temporary is removed. Tensor bytes are written from `tensors` directly (no
// second copy in memory). Errors as SerializeSafetensors, plus NotFound for a
// missing directory, ResourceExhausted for a full disk, Internal for other
// I/O errors, each naming the path.
common::Status WriteSafetensors(const std::string& path, const std::map<std::string, TensorData>& tensors,
                                const std::map<std::string, std::string>& metadata = {});

// Scalar conversions. Narrowing rounds to nearest, ties to even; values past
// the largest finite one become Inf. NaN stays NaN: BF16 gives 0x7FC0, F16
// gives sign | 0x7E00 (what PyTorch's conversions give). Widening is exact.
uint16_t FloatToBf16(float value);
float Bf16ToFloat(uint16_t bits);
uint16_t FloatToF16(float value);
float F16ToFloat(uint16_t bits);

// A tensor of dtype F32, BF16 or F16 as floats (exact). InvalidArgument for
// any other dtype or for bytes that do not match the shape.
common::Result<std::vector<float>> TensorToFloats(const TensorData& tensor);

// Builds an F32, BF16 or F16 tensor from floats (rounded as above).
// InvalidArgument for another dtype or when values.size() != product of shape.
common::Result<TensorData> TensorFromFloats(std::string_view dtype, std::vector<int64_t> shape,
                                            std::span<const float> values);

}  // namespace shammie::storage
