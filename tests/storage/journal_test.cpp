#include "storage/journal.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/test_util.hpp"

namespace shammie::storage {
namespace {

using Records = std::vector<std::pair<uint8_t, std::string>>;

Records ReadAll(const std::string& path, JournalScan* scan_out = nullptr) {
  Records out;
  auto scan = ReadJournal(path, [&](uint8_t type, std::string_view body) { out.emplace_back(type, std::string(body)); });
  EXPECT_TRUE(scan.ok()) << scan.status().ToString();
  if (scan_out && scan.ok()) *scan_out = *scan;
  return out;
}

TEST(JournalTest, RecordsComeBackInOrderAcrossReopens) {
  testing::ScratchDir dir("journal");
  const std::string path = dir.File("j.bin");
  {
    auto w = JournalWriter::Open(path, std::chrono::milliseconds(5));
    ASSERT_TRUE(w.ok());
    (*w)->Append(1, "first");
    (*w)->Append(2, {"sec", "ond"});
    ASSERT_TRUE((*w)->Write().ok());
    (*w)->Append(3, std::string(100000, 'x'));
    ASSERT_TRUE((*w)->Sync().ok());
  }
  {
    auto w = JournalWriter::Open(path, std::chrono::milliseconds(5));
    ASSERT_TRUE(w.ok());
    (*w)->Append(4, "after reopen");
  }  // the destructor syncs
  Records r = ReadAll(path);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0], (std::pair<uint8_t, std::string>{1, "first"}));
  EXPECT_EQ(r[1], (std::pair<uint8_t, std::string>{2, "second"}));
  EXPECT_EQ(r[2].second.size(), 100000u);
  EXPECT_EQ(r[3], (std::pair<uint8_t, std::string>{4, "after reopen"}));
}

TEST(JournalTest, ATornOrCorruptTailIsIgnoredThenTruncatedByTheNextWriter) {
  testing::ScratchDir dir("journal");
  const std::string path = dir.File("j.bin");
  {
    auto w = JournalWriter::Open(path, std::chrono::milliseconds(5));
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 10; ++i) (*w)->Append(1, "record " + std::to_string(i));
  }
  const auto good_size = std::filesystem::file_size(path);
  // Cut the last record in half: a write interrupted by a kill.
  std::filesystem::resize_file(path, good_size - 5);
  JournalScan scan;
  EXPECT_EQ(ReadAll(path, &scan).size(), 9u);
  EXPECT_GT(scan.torn_bytes, 0);
  // Flip a byte inside the 5th record's body: its CRC fails, reading stops there.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(scan.valid_bytes) - 3 - 4 * 21);
    f.put('#');
  }
  Records r = ReadAll(path, &scan);
  EXPECT_LT(r.size(), 9u);
  for (size_t i = 0; i < r.size(); ++i) EXPECT_EQ(r[i].second, "record " + std::to_string(i));
  const size_t kept = r.size();
  {
    auto w = JournalWriter::Open(path, std::chrono::milliseconds(5));
    ASSERT_TRUE(w.ok());
    (*w)->Append(7, "appended after recovery");
  }
  r = ReadAll(path, &scan);
  ASSERT_EQ(r.size(), kept + 1);
  EXPECT_EQ(r.back().second, "appended after recovery");
  EXPECT_EQ(scan.torn_bytes, 0);
}

TEST(JournalTest, ASecondWriterIsRefused) {
  testing::ScratchDir dir("journal");
  const std::string path = dir.File("j.bin");
  auto first = JournalWriter::Open(path, std::chrono::milliseconds(5));
  ASSERT_TRUE(first.ok());
  auto second = JournalWriter::Open(path, std::chrono::milliseconds(5));
  EXPECT_EQ(second.status().code(), common::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another shammie run"), std::string::npos);
}

TEST(JournalTest, NotAJournalIsDataLossAndMissingIsEmpty) {
  testing::ScratchDir dir("journal");
  testing::WriteFile(dir.File("other"), "this is some other file with text");
  auto bad = ReadJournal(dir.File("other"), [](uint8_t, std::string_view) {});
  EXPECT_EQ(bad.status().code(), common::StatusCode::kDataLoss);
  auto missing = ReadJournal(dir.File("nope"), [](uint8_t, std::string_view) {});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->records, 0);
}

TEST(JournalTest, GroupCommitSyncsFarLessThanOncePerRecord) {
  testing::ScratchDir dir("journal");
  auto w = JournalWriter::Open(dir.File("j.bin"), std::chrono::milliseconds(20));
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 2000; ++i) {
    (*w)->Append(1, "r");
    ASSERT_TRUE((*w)->Write().ok());
  }
  ASSERT_TRUE((*w)->Sync().ok());
  EXPECT_LT((*w)->syncs(), 200);  // not one fsync per record
  EXPECT_GE((*w)->syncs(), 1);
}

}  // namespace
}  // namespace shammie::storage
