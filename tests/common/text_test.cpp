#include "common/text.hpp"

#include <gtest/gtest.h>

namespace shammie::common {
namespace {

TEST(TextTest, EditDistance) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(EditDistance("learning_rate", "learnig_rate"), 1u);
  EXPECT_EQ(EditDistance("ab", "ba"), 1u);  // transposition
}

TEST(TextTest, DidYouMean) {
  std::vector<std::string> keys = {"learning_rate", "steps", "x0"};
  EXPECT_EQ(DidYouMean("learnig_rate", keys), " (did you mean `learning_rate`?)");
  EXPECT_EQ(DidYouMean("Steps", keys), " (did you mean `steps`?)");
  EXPECT_EQ(DidYouMean("momentum", keys), "");
}

TEST(TextTest, SafeNames) {
  EXPECT_TRUE(IsSafeName("lr-sweep_2.0"));
  EXPECT_FALSE(IsSafeName(""));
  EXPECT_FALSE(IsSafeName("../etc"));
  EXPECT_FALSE(IsSafeName(".hidden"));
  EXPECT_FALSE(IsSafeName("a/b"));
  EXPECT_FALSE(IsSafeName("a b"));
  EXPECT_FALSE(IsSafeName(std::string(129, 'a')));
}

}  // namespace
}  // namespace shammie::common
