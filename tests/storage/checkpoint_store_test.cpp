#include "storage/checkpoint_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/hash.hpp"
#include "tests/test_util.hpp"

namespace shammie::storage {
namespace {

namespace fs = std::filesystem;

TEST(CheckpointStoreTest, SameBytesSameNameAndTheyComeBack) {
  testing::ScratchDir dir("ckpt");
  const std::string bytes("model\0weights", 13);
  auto a = WriteContentAddressed(dir.File("checkpoints"), bytes, "ckpt");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(fs::path(*a).filename().string(), common::Hash128Hex(bytes) + ".ckpt");
  auto b = WriteContentAddressed(dir.File("checkpoints"), bytes, "ckpt");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b);
  auto other = WriteContentAddressed(dir.File("checkpoints"), "other", "ckpt");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*other, *a);
  auto read = ReadVerified(*a);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, bytes);
  // No temporary files are left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.File("checkpoints"))) {
    EXPECT_EQ(e.path().filename().string()[0] != '.', true) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 2);
}

TEST(CheckpointStoreTest, ADamagedFileIsDataLossNotAWrongModel) {
  testing::ScratchDir dir("ckpt");
  auto path = WriteContentAddressed(dir.path().string(), std::string(1000, 'x'), "ckpt");
  ASSERT_TRUE(path.ok());
  fs::resize_file(*path, 999);
  auto read = ReadVerified(*path);
  EXPECT_EQ(read.status().code(), common::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find(*path), std::string::npos);
  EXPECT_EQ(ReadVerified(dir.File("missing.ckpt")).status().code(), common::StatusCode::kNotFound);
  // A file not named by a hash is read as is.
  ASSERT_TRUE(WriteFileAtomically(dir.File("plain.bin"), "abc").ok());
  EXPECT_EQ(*ReadVerified(dir.File("plain.bin")), "abc");
}

}  // namespace
}  // namespace shammie::storage
