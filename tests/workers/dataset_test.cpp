#include "workers/dataset.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/test_util.hpp"

namespace shammie::workers {
namespace {

using Docs = std::vector<std::vector<int32_t>>;

void WriteShard(const std::string& name, TokenDType dtype, int64_t vocab, const Docs& docs) {
  auto w = TokenShardWriter::Create(name, dtype, vocab);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (const auto& d : docs) ASSERT_TRUE(w->Add(d).ok());
  ASSERT_TRUE(w->Finish().ok());
}

// n documents of lengths 0, 1, ..., with tokens from a simple formula.
Docs MakeDocs(int n, int32_t vocab) {
  Docs docs;
  for (int d = 0; d < n; ++d) {
    std::vector<int32_t> doc;
    for (int i = 0; i < d % 23; ++i) doc.push_back((d * 131 + i * 7) % vocab);
    docs.push_back(doc);
  }
  return docs;
}

// The split's stream, computed from the documents as written.
std::vector<int32_t> Stream(const TokenDataset& ds, const Docs& docs, Split split) {
  std::vector<int32_t> out;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (ds.SplitOfDocument(static_cast<int64_t>(d)) == split) out.insert(out.end(), docs[d].begin(), docs[d].end());
  }
  return out;
}

TEST(DatasetTest, RoundTripSplitsAndWindows) {
  testing::ScratchDir dir("dataset_round_trip");
  const Docs docs = MakeDocs(200, 1000);
  const std::string name = dir.File("shard");
  WriteShard(name, TokenDType::kUint16, 1000, docs);
  EXPECT_EQ(std::filesystem::file_size(name + ".bin") % 2, 0u);
  EXPECT_FALSE(std::filesystem::exists(name + ".bin.tmp"));

  TokenDatasetOptions options;
  options.window = 16;
  options.validation_fraction = 0.2;
  options.test_fraction = 0.1;
  auto opened = TokenDataset::Open(name + ".json", options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  const TokenDataset& ds = *opened;
  EXPECT_EQ(ds.vocab_size(), 1000);
  EXPECT_EQ(ds.documents(), 200);
  int64_t total = 0;
  for (int d = 0; d < 200; ++d) {
    EXPECT_EQ(ds.Document(d), docs[static_cast<size_t>(d)]);
    total += static_cast<int64_t>(docs[static_cast<size_t>(d)].size());
  }
  EXPECT_EQ(ds.tokens(), total);
  EXPECT_EQ(ds.SplitTokens(Split::kTrain) + ds.SplitTokens(Split::kValidation) + ds.SplitTokens(Split::kTest), total);
  EXPECT_GT(ds.SplitDocuments(Split::kTrain), 100);
  EXPECT_GT(ds.SplitDocuments(Split::kValidation), 15);
  EXPECT_GT(ds.SplitDocuments(Split::kTest), 5);

  for (Split split : {Split::kTrain, Split::kValidation, Split::kTest}) {
    ASSERT_TRUE(ds.CheckSplit(split).ok());
    const std::vector<int32_t> stream = Stream(ds, docs, split);
    ASSERT_EQ(static_cast<int64_t>(stream.size()), ds.SplitTokens(split));
    EXPECT_EQ(ds.WindowCount(split), (static_cast<int64_t>(stream.size()) - 1) / 16);
    for (int64_t i = 0; i < ds.WindowCount(split); ++i) {
      const auto from = stream.begin() + i * 16;
      EXPECT_EQ(ds.Window(split, i), std::vector<int32_t>(from, from + 17)) << i;
    }
    // Sampled windows: deterministic from the seed, and slices of the stream.
    common::SplitMix64 r1(9), r2(9);
    for (int k = 0; k < 50; ++k) {
      const std::vector<int32_t> w = ds.SampleWindow(split, r1);
      ASSERT_EQ(w.size(), 17u);
      EXPECT_EQ(ds.SampleWindow(split, r2), w);
      EXPECT_NE(std::search(stream.begin(), stream.end(), w.begin(), w.end()), stream.end());
    }
    const std::vector<int64_t> order = ds.EpochOrder(split, 5, 0);
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], static_cast<int64_t>(i));
    EXPECT_EQ(ds.EpochOrder(split, 5, 0), order);
    if (order.size() > 5) {
      EXPECT_NE(ds.EpochOrder(split, 5, 1), order);
    }
  }

  // Another split seed, another split; a window larger than a split is refused.
  options.split_seed = 1;
  auto reseeded = TokenDataset::Open(name, options);
  ASSERT_TRUE(reseeded.ok());
  int moved = 0;
  for (int d = 0; d < 200; ++d) moved += reseeded->SplitOfDocument(d) != ds.SplitOfDocument(d) ? 1 : 0;
  EXPECT_GT(moved, 20);
  options.window = 100000;
  auto big = TokenDataset::Open(name, options);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->WindowCount(Split::kValidation), 0);
  common::Status s = big->CheckSplit(Split::kValidation);
  EXPECT_EQ(s.code(), common::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("the validation split has"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("window + 1 = 100001"), std::string::npos) << s.message();
}

TEST(DatasetTest, SplitsFollowDocumentContentNotDtypeOrPosition) {
  testing::ScratchDir dir("dataset_content_split");
  Docs docs = MakeDocs(60, 60000);
  const std::vector<int32_t> twin17 = docs[17], twin22 = docs[22];
  docs.push_back(twin17);  // a duplicate lands with its twin
  docs.push_back(twin22);
  WriteShard(dir.File("a16"), TokenDType::kUint16, 65536, docs);
  WriteShard(dir.File("a32"), TokenDType::kUint32, 1 << 20, docs);
  TokenDatasetOptions options;
  options.validation_fraction = 0.5;
  auto a = TokenDataset::Open(dir.File("a16"), options);
  auto b = TokenDataset::Open(dir.File("a32.bin"), options);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  for (int64_t d = 0; d < a->documents(); ++d) EXPECT_EQ(a->SplitOfDocument(d), b->SplitOfDocument(d)) << d;
  EXPECT_EQ(a->SplitOfDocument(60), a->SplitOfDocument(17));
  EXPECT_EQ(a->SplitOfDocument(61), a->SplitOfDocument(22));
  // Large token ids survive uint32.
  WriteShard(dir.File("big"), TokenDType::kUint32, int64_t{1} << 31, {{0, 70000, 2147483647, 5}});
  auto big = TokenDataset::Open(dir.File("big"));
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  EXPECT_EQ(big->Document(0), (std::vector<int32_t>{0, 70000, 2147483647, 5}));
}

TEST(DatasetTest, ShardsAreReadInOrder) {
  testing::ScratchDir dir("dataset_shards");
  WriteShard(dir.File("s0"), TokenDType::kUint16, 50, {{1, 2, 3}, {4}});
  WriteShard(dir.File("s1"), TokenDType::kUint32, 50, {{5, 6}, {}, {7, 8, 9}});
  auto ds = TokenDataset::Open(std::vector<std::string>{dir.File("s0"), dir.File("s1")});
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->documents(), 5);
  EXPECT_EQ(ds->tokens(), 9);
  EXPECT_EQ(ds->Document(2), (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(ds->Document(3).empty());
  EXPECT_EQ(ds->Document(4), (std::vector<int32_t>{7, 8, 9}));
  WriteShard(dir.File("other"), TokenDType::kUint16, 51, {{1}});
  auto mixed = TokenDataset::Open(std::vector<std::string>{dir.File("s0"), dir.File("other")});
  EXPECT_EQ(mixed.status().code(), common::StatusCode::kDataLoss);
  EXPECT_NE(mixed.status().message().find("vocab_size 51 differs"), std::string::npos) << mixed.status().message();
}

TEST(DatasetTest, TaskExamplesRoundTripThroughAShard) {
  testing::ScratchDir dir("dataset_tasks");
  TaskSpec spec;
  spec.family = "arith";
  auto task = SyntheticTask::Make(spec);
  ASSERT_TRUE(task.ok());
  common::SplitMix64 rng(1);
  std::vector<std::string> texts;
  auto w = TokenShardWriter::Create(dir.File("arith"), TokenDType::kUint16, Tokenizer::VocabSize());
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 30; ++i) {
    Example e = (*task)->Sample(Split::kTrain, rng);
    std::vector<int32_t> doc(e.prompt.begin(), e.prompt.end());
    doc.insert(doc.end(), e.answer.begin(), e.answer.end());
    ASSERT_TRUE(w->Add(doc).ok());
    texts.push_back(e.prompt_text + e.answer_text);
  }
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(w->Add(std::vector<int32_t>{1}).code(), common::StatusCode::kFailedPrecondition);
  auto ds = TokenDataset::Open(dir.File("arith"));
  ASSERT_TRUE(ds.ok());
  for (int d = 0; d < 30; ++d) {
    const std::vector<int32_t> doc = ds->Document(d);
    EXPECT_EQ(Tokenizer::Decode(std::vector<int>(doc.begin(), doc.end())), texts[static_cast<size_t>(d)]);
  }
}

TEST(DatasetTest, WriterRefusesBadInput) {
  testing::ScratchDir dir("dataset_writer");
  EXPECT_EQ(TokenShardWriter::Create(dir.File("x"), TokenDType::kUint16, 65537).status().code(),
            common::StatusCode::kInvalidArgument);
  {
    auto w = TokenShardWriter::Create(dir.File("x"), TokenDType::kUint16, 10);
    ASSERT_TRUE(w.ok());
    common::Status s = w->Add(std::vector<int32_t>{1, 10});
    EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("token 10 at 1, outside [0, 10)"), std::string::npos) << s.message();
    EXPECT_EQ(w->Add(std::vector<int32_t>{-1}).code(), common::StatusCode::kInvalidArgument);
  }  // dropped before Finish: nothing is left
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  WriteShard(dir.File("x"), TokenDType::kUint16, 10, {{1}});
  auto again = TokenShardWriter::Create(dir.File("x"), TokenDType::kUint16, 10);
  EXPECT_EQ(again.status().code(), common::StatusCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find(dir.File("x.bin")), std::string::npos);
}

void ExpectError(const common::Status& s, common::StatusCode code, const std::string& words) {
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_NE(s.message().find(words), std::string::npos) << "\"" << words << "\" not in: " << s.message();
}

// A good shard (6 uint16 tokens, vocab 100, documents [0,3] [3,2] [5,1]),
// damaged in its index, its .bin or both, and what Open must say. "@" in
// `words` stands for the shard's path.
struct Damage {
  std::string name;
  std::function<void(nlohmann::json&)> index;
  std::function<void(const std::string& path)> files;
  common::StatusCode code;
  std::string words;
};

TEST(DatasetTest, CorruptShardsAreRefusedWithThePath) {
  testing::ScratchDir dir("dataset_corrupt");
  using common::StatusCode;
  const std::vector<Damage> cases = {
      {"nobin", nullptr, [](const std::string& p) { std::filesystem::remove(p + ".bin"); }, StatusCode::kNotFound,
       "@.bin: no such file"},
      {"short", nullptr, [](const std::string& p) { std::filesystem::resize_file(p + ".bin", 11); },
       StatusCode::kDataLoss, "@.bin: 11 bytes, expected 12 (6 uint16 tokens"},
      {"token", nullptr,
       [](const std::string& p) {
         std::fstream f(p + ".bin", std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(6);
         const char bytes[2] = {static_cast<char>(0x60), static_cast<char>(0xEA)};  // 60000 at token 3
         f.write(bytes, 2);
       },
       StatusCode::kDataLoss, "@.bin: token 60000 at position 3 is not below vocab_size 100"},
      {"json", nullptr, [](const std::string& p) { testing::WriteFile(p + ".json", "{\"format\": "); },
       StatusCode::kDataLoss, "@.json: not valid JSON"},
      {"format", [](nlohmann::json& i) { i.erase("format"); }, nullptr, StatusCode::kDataLoss,
       "@.json: not a token shard index"},
      {"version", [](nlohmann::json& i) { i["version"] = 2; }, nullptr, StatusCode::kFailedPrecondition,
       "@.json: index version 2 is newer"},
      {"dtype", [](nlohmann::json& i) { i["dtype"] = "float32"; }, nullptr, StatusCode::kDataLoss,
       "@.json: \"dtype\" must be \"uint16\" or \"uint32\""},
      {"wide", [](nlohmann::json& i) { i["dtype"] = "uint32"; }, nullptr, StatusCode::kDataLoss,
       "@.bin: 12 bytes, expected 24"},  // uint32 over a uint16 file
      {"vocab", [](nlohmann::json& i) { i["vocab_size"] = 70000; }, nullptr, StatusCode::kDataLoss,
       "\"vocab_size\" must be in [1, 65536], got 70000"},
      {"count", [](nlohmann::json& i) { i["tokens"] = -1; }, nullptr, StatusCode::kDataLoss,
       "\"tokens\" must be in [0,"},
      {"bounds", [](nlohmann::json& i) { i["documents"][2] = nlohmann::json::array({5, 2}); }, nullptr,
       StatusCode::kDataLoss, "@.json: document 2 [5, 2] is out of bounds"},
      {"overlap", [](nlohmann::json& i) { i["documents"][1] = nlohmann::json::array({2, 2}); }, nullptr,
       StatusCode::kDataLoss, "document 1 [2, 2] is out of bounds: it must start at or after 3"},
      {"shape", [](nlohmann::json& i) { i["documents"][0] = nlohmann::json::array({0}); }, nullptr,
       StatusCode::kDataLoss, "document 0 must be [offset, length] (two integers), got [0]"},
      {"nodocs", [](nlohmann::json& i) { i.erase("documents"); }, nullptr, StatusCode::kDataLoss,
       "\"documents\" must be an array"},
  };
  for (const Damage& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.File(c.name);
    WriteShard(path, TokenDType::kUint16, 100, {{1, 2, 3}, {4, 5}, {6}});
    ASSERT_TRUE(TokenDataset::Open(path).ok());
    if (c.index) {
      nlohmann::json index = nlohmann::json::parse(testing::ReadFileText(path + ".json"));
      c.index(index);
      testing::WriteFile(path + ".json", index.dump());
    }
    if (c.files) c.files(path);
    std::string words = c.words;
    if (const size_t at = words.find('@'); at != std::string::npos) words.replace(at, 1, path);
    ExpectError(TokenDataset::Open(path).status(), c.code, words);
  }
  ExpectError(TokenDataset::Open(dir.File("nothing")).status(), StatusCode::kNotFound,
              dir.File("nothing.json") + ": no such file");

  // Bad options are the caller's mistake, not the data's.
  WriteShard(dir.File("good"), TokenDType::kUint16, 100, {{1, 2, 3}});
  TokenDatasetOptions options;
  options.window = 0;
  ExpectError(TokenDataset::Open(dir.File("good"), options).status(), StatusCode::kInvalidArgument,
              "window must be in [1, 2^30]");
  options.window = 2;
  options.validation_fraction = 0.7;
  options.test_fraction = 0.4;
  ExpectError(TokenDataset::Open(dir.File("good"), options).status(), StatusCode::kInvalidArgument, "sum <= 1");
}

}  // namespace
}  // namespace shammie::workers
