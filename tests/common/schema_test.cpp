#include "common/schema.hpp"

#include <gtest/gtest.h>

namespace shammie::common {
namespace {

using nlohmann::json;

std::string CheckError(const KeySpec& spec, const json& v) {
  json out;
  auto e = spec.Check(v, &out);
  return e ? *e : "";
}

TEST(SchemaTest, FloatAcceptsIntegersAndNormalizes) {
  Schema s("t", "");
  s.Float("lr").Min(0, true).Max(1);
  json out;
  EXPECT_FALSE(s.Find("lr")->Check(json(1), &out).has_value());
  EXPECT_TRUE(out.is_number_float());
  EXPECT_EQ(out.get<double>(), 1.0);
  EXPECT_EQ(CheckError(*s.Find("lr"), json(0.0)), "must be > 0 and <= 1, got 0");
  EXPECT_EQ(CheckError(*s.Find("lr"), json(1.5)), "must be > 0 and <= 1, got 1.5");
  EXPECT_EQ(CheckError(*s.Find("lr"), json("0.1")), "expected a float, got string \"0.1\"");
}

TEST(SchemaTest, IntRejectsFloat) {
  Schema s("t", "");
  s.Int("steps").Range(1, 10);
  EXPECT_EQ(CheckError(*s.Find("steps"), json(2.5)), "expected an integer, got float 2.5");
  EXPECT_EQ(CheckError(*s.Find("steps"), json(11)), "must be >= 1 and <= 10, got 11");
  EXPECT_EQ(CheckError(*s.Find("steps"), json(3)), "");
}

TEST(SchemaTest, EnumSuggestsNearMiss) {
  Schema s("t", "");
  s.Enum("mode", {"error", "crash"});
  EXPECT_EQ(CheckError(*s.Find("mode"), json("eror")),
            "unknown value \"eror\", expected one of `error`, `crash` (did you mean `error`?)");
}

TEST(SchemaTest, PathsAndNames) {
  Schema s("t", "");
  s.Add("out", ValueType::kPath);
  s.Add("name", ValueType::kName);
  EXPECT_EQ(CheckError(*s.Find("out"), json("../../etc")), "path \"../../etc\" must not contain `..` components");
  EXPECT_EQ(CheckError(*s.Find("out"), json("runs/a..b/x")), "");
  EXPECT_NE(CheckError(*s.Find("name"), json("a/b")), "");
  EXPECT_EQ(CheckError(*s.Find("name"), json("lr-sweep_1.2")), "");
}

TEST(SchemaTest, DurationsAndSizes) {
  EXPECT_EQ(ParseDuration("90s"), 90);
  EXPECT_EQ(ParseDuration("15m"), 900);
  EXPECT_EQ(ParseDuration("1h30m"), 5400);
  EXPECT_EQ(ParseDuration("02:00:00"), 7200);
  EXPECT_EQ(ParseDuration("10:30"), 630);
  EXPECT_EQ(ParseDuration("1d"), 86400);
  EXPECT_FALSE(ParseDuration("1h30").has_value());
  EXPECT_FALSE(ParseDuration("01:75").has_value());
  EXPECT_FALSE(ParseDuration("soon").has_value());
  EXPECT_EQ(ParseSize("512M"), 512LL << 20);
  EXPECT_EQ(ParseSize("4G"), 4LL << 30);
  EXPECT_EQ(ParseSize("4GiB"), 4LL << 30);
  EXPECT_EQ(ParseSize("1.5K"), 1536);
  EXPECT_EQ(ParseSize("100"), 100);
  EXPECT_FALSE(ParseSize("4X").has_value());
  EXPECT_FALSE(ParseSize("G").has_value());

  Schema s("t", "");
  s.Add("time", ValueType::kDuration).Min(1);
  json out;
  EXPECT_FALSE(s.Find("time")->Check(json("1h"), &out).has_value());
  EXPECT_EQ(out, 3600);
  EXPECT_EQ(CheckError(*s.Find("time"), json("1 hour")),
            "cannot read duration \"1 hour\": write e.g. \"90s\", \"15m\", \"1h30m\" or \"HH:MM:SS\"");
}

TEST(SchemaTest, ListsCheckEveryItem) {
  Schema s("t", "");
  s.Add("sizes", ValueType::kIntList).MinItems(1).Min(1);
  json out;
  EXPECT_FALSE(s.Find("sizes")->Check(json::array({1, 2}), &out).has_value());
  EXPECT_EQ(CheckError(*s.Find("sizes"), json::array({1, 0})), "item 1: must be >= 1, got 0");
  EXPECT_EQ(CheckError(*s.Find("sizes"), json::array()), "expected at least 1 item(s), got 0");
  EXPECT_EQ(CheckError(*s.Find("sizes"), json(3)), "expected a list of integers, got integer 3");
}

TEST(SchemaTest, ExplainListsEveryKey) {
  Schema s("toy", "A toy.");
  s.Float("lr").Default(0.1).Min(0, true).Doc("Step size.");
  s.Int("n").Required();
  std::string text = s.Explain("stage.config");
  EXPECT_NE(text.find("lr (float), default 0.1, > 0"), std::string::npos) << text;
  EXPECT_NE(text.find("Step size."), std::string::npos);
  EXPECT_NE(text.find("n (integer), required"), std::string::npos);
}

}  // namespace
}  // namespace shammie::common
