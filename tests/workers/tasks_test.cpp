#include "workers/tasks.hpp"

#include <gtest/gtest.h>

#include <set>

namespace shammie::workers {
namespace {

TEST(TasksTest, TokenizerRoundTripsAndRefusesUnknownCharacters) {
  auto t = Tokenizer::Encode("12+7=19 abc>cba");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Tokenizer::Decode(*t), "12+7=19 abc>cba");
  for (int id : *t) EXPECT_GE(id, 3);
  EXPECT_FALSE(Tokenizer::Encode("ABC").ok());
}

TEST(TasksTest, ModAddAnswersAreTheModularSumAndSplitsAreDisjoint) {
  TaskSpec spec;
  spec.family = "modadd";
  spec.modulus = 17;
  spec.shift = 3;
  auto task = SyntheticTask::Make(spec);
  ASSERT_TRUE(task.ok());
  std::set<std::string> seen[3];
  size_t total = 0;
  for (Split s : {Split::kTrain, Split::kValidation, Split::kTest}) {
    for (const Example& e : (*task)->Enumerate(s, 10000)) {
      int a = 0, b = 0;
      ASSERT_EQ(std::sscanf(e.prompt_text.c_str(), "%d+%d=", &a, &b), 2);
      EXPECT_EQ(std::stoi(e.answer_text), (a + b + 3) % 17) << e.prompt_text;
      EXPECT_EQ(e.answer.back(), Tokenizer::kEos);
      seen[static_cast<int>(s)].insert(e.prompt_text);
      ++total;
    }
  }
  EXPECT_EQ(total, 17u * 17u);
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      for (const auto& p : seen[i]) EXPECT_EQ(seen[j].count(p), 0u) << p;
    }
  }
  EXPECT_GT(seen[0].size(), seen[1].size() * 5);  // about 80 / 10 / 10
  // Sampling stays inside its split and is reproducible from the seed.
  common::SplitMix64 r1(5), r2(5);
  for (int i = 0; i < 50; ++i) {
    Example a = (*task)->Sample(Split::kValidation, r1), b = (*task)->Sample(Split::kValidation, r2);
    EXPECT_EQ(a.prompt_text, b.prompt_text);
    EXPECT_EQ(seen[1].count(a.prompt_text), 1u);
  }
}

TEST(TasksTest, StringTransforms) {
  common::SplitMix64 rng(1);
  for (std::string family : {"copy", "reverse", "sort", "rotate"}) {
    TaskSpec spec;
    spec.family = family;
    spec.length = 7;
    spec.alphabet = 5;
    spec.shift = 2;
    auto task = SyntheticTask::Make(spec);
    ASSERT_TRUE(task.ok()) << family;
    for (int i = 0; i < 20; ++i) {
      Example e = (*task)->Sample(Split::kTrain, rng);
      std::string s = e.prompt_text.substr(0, 7), want = s;
      if (family == "reverse") std::reverse(want.begin(), want.end());
      if (family == "sort") std::sort(want.begin(), want.end());
      if (family == "rotate") want = s.substr(2) + s.substr(0, 2);
      EXPECT_EQ(e.answer_text, want) << family;
      for (char c : s) EXPECT_TRUE(c >= 'a' && c < 'a' + 5);
      EXPECT_LE(static_cast<int>(e.prompt.size() + e.answer.size()), (*task)->MaxTokens());
    }
  }
  TaskSpec bad;
  bad.family = "parity";
  EXPECT_EQ(SyntheticTask::Make(bad).status().code(), common::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shammie::workers
