// Real data for the training runtime: tokenized shards on disk, read back
// as fixed-length training windows (no LibTorch here).
//
// A shard NAME is two files side by side (docs/runtime.md, "Token shards"):
// - NAME.bin: the tokens, unsigned little-endian integers of the index's
//   dtype (uint16 or uint32), the documents one after another, no header;
// - NAME.json: the index,
//     {"format": "shammie.tokens", "version": 1, "dtype": "uint16",
//      "vocab_size": 50257, "tokens": 1234, "documents": [[0, 700], [700, 534]]}
//   `tokens` is the length of NAME.bin in tokens; each document is
//   [offset, length] in tokens, in file order, not overlapping.
// TokenShardWriter writes them; TokenDataset reads one or more shards.
//
// Splits: a document's split is a hash of its tokens (as uint32 values, so
// the dtype does not matter) salted with `split_seed`, against the
// validation and test fractions. Identical documents share a split, so a
// duplicated document cannot leak from train into validation.
//
// Windows: the documents of a split, in order, make one token stream. A
// window is `window + 1` consecutive tokens of it (a model reads the first
// `window` and predicts the last `window`), and may span a document
// boundary; write an end-of-document token into the documents if the model
// should see one. Windows come two ways, both deterministic:
// - SampleWindow(): a uniform start, drawn with a caller's SplitMix64;
// - Window(i) for i < WindowCount(): the stream cut every `window` tokens,
//   and EpochOrder(): a shuffled order of those, from (seed, epoch).
//
// Threads: a TokenDataset is immutable after Open(); its const methods may
// be called from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/random.hpp"
#include "common/status.hpp"
#include "workers/tasks.hpp"

namespace shammie::workers {

enum class TokenDType { kUint16, kUint32 };
std::string_view TokenDTypeName(TokenDType dtype);  // "uint16", "uint32"

struct TokenDatasetOptions {
  int64_t window = 128;              // tokens a window predicts; a window holds window + 1
  double validation_fraction = 0.1;  // of the documents, by hash
  double test_fraction = 0.0;
  uint64_t split_seed = 0;           // another seed, another split
};

class TokenDataset {
 public:
  // Opens the shards (each given as NAME, NAME.json or NAME.bin) and checks
  // them whole: the index's fields, the .bin's size against `tokens` and
  // the dtype, every document in bounds, and every token < vocab_size (one
  // pass over the data, which also hashes each document for its split).
  // The shards must agree on vocab_size. Errors name the file:
  // NotFound (a missing file), DataLoss (a malformed index, a .bin of the
  // wrong size, a token or document out of bounds), FailedPrecondition (an
  // index of a newer version), InvalidArgument (bad options).
  static common::Result<TokenDataset> Open(const std::vector<std::string>& shards,
                                           const TokenDatasetOptions& options = {});
  static common::Result<TokenDataset> Open(const std::string& shard, const TokenDatasetOptions& options = {});

  TokenDataset(TokenDataset&&) noexcept;
  TokenDataset& operator=(TokenDataset&&) noexcept;
  ~TokenDataset();

  const TokenDatasetOptions& options() const;
  int64_t vocab_size() const;
  int64_t tokens() const;     // in all shards, documents or not
  int64_t documents() const;  // in all shards
  // Document d (0 <= d < documents(), shards in the order given) and its split.
  std::vector<int32_t> Document(int64_t d) const;
  Split SplitOfDocument(int64_t d) const;

  int64_t SplitDocuments(Split split) const;
  int64_t SplitTokens(Split split) const;  // the length of the split's stream
  int64_t WindowCount(Split split) const;  // (SplitTokens - 1) / window, 0 when none fits
  // OK when the split has a window; FailedPrecondition saying how many
  // tokens it has and needs otherwise. Call before the window methods.
  common::Status CheckSplit(Split split) const;

  // Window i: stream tokens [i * window, i * window + window]. CHECKs
  // 0 <= i < WindowCount(split).
  std::vector<int32_t> Window(Split split, int64_t i) const;
  // window + 1 tokens from a uniform start in the split's stream, drawn
  // with `rng`. CHECKs that a window fits (CheckSplit).
  std::vector<int32_t> SampleWindow(Split split, common::SplitMix64& rng) const;
  // A permutation of [0, WindowCount(split)), the same for the same
  // (split, seed, epoch) and another for another epoch.
  std::vector<int64_t> EpochOrder(Split split, uint64_t seed, uint64_t epoch) const;

 private:
  struct Impl;
  explicit TokenDataset(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Writes one shard. NAME.bin and NAME.json are written as NAME.bin.tmp and
// NAME.json.tmp and renamed by Finish(), so a shard that is there is whole;
// a writer destroyed before Finish() removes its temporaries. Not thread-safe.
class TokenShardWriter {
 public:
  // AlreadyExists when NAME.bin or NAME.json exists (remove it first);
  // InvalidArgument when vocab_size does not fit the dtype (uint16: at most
  // 65536; uint32: at most 2^31); errno failures as Internal.
  static common::Result<TokenShardWriter> Create(const std::string& name, TokenDType dtype, int64_t vocab_size);

  TokenShardWriter(TokenShardWriter&&) noexcept;
  TokenShardWriter& operator=(TokenShardWriter&&) noexcept;
  ~TokenShardWriter();

  // Appends one document (may be empty). InvalidArgument, and nothing
  // written, when a token is outside [0, vocab_size).
  common::Status Add(std::span<const int32_t> document);
  // Writes the index and renames both files into place. The writer is
  // spent afterwards (Add and Finish then fail with FailedPrecondition).
  common::Status Finish();

 private:
  struct Impl;
  explicit TokenShardWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shammie::workers
