// Every file in tests/data/invalid/ declares the errors it must produce
// (`# expect: LINE:COL: key: message`, see tests/data/invalid/README.md);
// the loader must print exactly that set of errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "orchestrator/spec_loader.hpp"

namespace shammie::orchestrator {
namespace {

namespace fs = std::filesystem;

const std::string kCorpus = "tests/data/invalid";

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(fs::path(SHAMMIE_SOURCE_DIR) / kCorpus)) {
    if (e.is_regular_file() && e.path().extension() == ".toml") files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Expected error lines, with paths as the loader prints them for `path`.
std::multiset<std::string> Expectations(const std::string& path) {
  std::multiset<std::string> out;
  std::ifstream in(path);
  std::string line;
  const std::string tag = "# expect: ";
  while (std::getline(in, line)) {
    if (line.rfind(tag, 0) != 0) continue;
    std::string rest = line.substr(tag.size());
    if (!rest.empty() && rest[0] == '@') {
      out.insert(kCorpus + "/" + rest.substr(1));
    } else {
      out.insert(path.substr(path.find(kCorpus)) + ":" + rest);
    }
  }
  return out;
}

class InvalidCorpusTest : public ::testing::TestWithParam<std::string> {};

TEST_P(InvalidCorpusTest, ProducesExactlyTheDeclaredErrors) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  // Paths relative to the source root, as a researcher would type them.
  fs::current_path(SHAMMIE_SOURCE_DIR);
  const std::string path = kCorpus + "/" + GetParam();
  std::multiset<std::string> expected = Expectations(path);
  ASSERT_FALSE(expected.empty()) << path << " declares no `# expect:` line";
  LoadResult r = LoadExperiment(path, kinds);
  EXPECT_FALSE(r.ok());
  std::multiset<std::string> got;
  for (const auto& d : r.errors) got.insert(d.ToString());
  EXPECT_EQ(got, expected) << "got:\n" << ::testing::PrintToString(got) << "\nexpected:\n"
                           << ::testing::PrintToString(expected);
}

INSTANTIATE_TEST_SUITE_P(Corpus, InvalidCorpusTest, ::testing::ValuesIn(CorpusFiles()),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           const std::string& file = param_info.param;
                           std::string name = file.substr(0, file.size() - 5);
                           std::replace_if(name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
                           return name;
                         });

TEST(InvalidCorpusSizeTest, HasAtLeastFortyFiles) { EXPECT_GE(CorpusFiles().size(), 40u); }

}  // namespace
}  // namespace shammie::orchestrator
