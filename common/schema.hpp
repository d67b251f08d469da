// Key declarations: each configuration key is declared once — name, type,
// default, constraint, doc — and that declaration drives parsing, validation,
// `shammie validate --explain` and the provenance dump (STYLE.md 16).
//
// Schemas know nothing about TOML: the orchestrator converts TOML values to
// JSON (keeping their source positions) and asks the schema to check and
// normalize them. Job kinds declare their config the same way.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace shammie::common {

enum class ValueType {
  kBool,
  kInt,
  kFloat,       // accepts integers too; normalized to a double
  kString,
  kEnum,        // a string from `choices`
  kName,        // a safe name: [A-Za-z0-9][A-Za-z0-9_.-]*
  kPath,        // a path with no `..` component and no NUL
  kDuration,    // "90s", "15m", "2h", "1h30m", "HH:MM:SS" or seconds; normalized to seconds (int)
  kSize,        // "512M", "4G", "1.5T" or bytes; normalized to bytes (int)
  kIntList,
  kFloatList,
  kStringList,
  kNameList,
};

std::string_view ValueTypeName(ValueType type);

struct KeySpec {
  std::string name;
  ValueType type = ValueType::kString;
  std::string doc;
  bool required = false;
  nlohmann::json default_value;  // null: no default (optional keys without default are absent)
  std::optional<double> min, max;
  bool min_exclusive = false, max_exclusive = false;
  std::vector<std::string> choices;  // kEnum
  std::optional<size_t> min_items;    // lists
  bool sweepable = true;              // may appear in [stage.sweep]

  // Fluent setters used by Schema's builders.
  KeySpec& Doc(std::string d) { doc = std::move(d); return *this; }
  KeySpec& Required() { required = true; return *this; }
  KeySpec& Default(nlohmann::json v) { default_value = std::move(v); return *this; }
  KeySpec& Min(double v, bool exclusive = false) { min = v; min_exclusive = exclusive; return *this; }
  KeySpec& Max(double v, bool exclusive = false) { max = v; max_exclusive = exclusive; return *this; }
  KeySpec& Range(double lo, double hi) { min = lo; max = hi; return *this; }
  KeySpec& Choices(std::vector<std::string> c) { choices = std::move(c); return *this; }
  KeySpec& MinItems(size_t n) { min_items = n; return *this; }
  KeySpec& NotSweepable() { sweepable = false; return *this; }

  // Checks one value written by the user (already converted to JSON) and
  // returns its normalized form, or a message such as
  // "expected a float, got string \"abc\"" / "must be > 0, got -1".
  // The message never repeats the key name: callers prefix the location.
  std::optional<std::string> Check(const nlohmann::json& value, nlohmann::json* normalized) const;
  // A human summary of the constraint: "> 0", "one of `a`, `b`", "" if none.
  std::string ConstraintText() const;
};

class Schema {
 public:
  Schema() = default;
  Schema(std::string name, std::string doc) : name_(std::move(name)), doc_(std::move(doc)) {}

  KeySpec& Add(std::string key, ValueType type);
  KeySpec& Bool(std::string key) { return Add(std::move(key), ValueType::kBool); }
  KeySpec& Int(std::string key) { return Add(std::move(key), ValueType::kInt); }
  KeySpec& Float(std::string key) { return Add(std::move(key), ValueType::kFloat); }
  KeySpec& String(std::string key) { return Add(std::move(key), ValueType::kString); }
  KeySpec& Enum(std::string key, std::vector<std::string> choices) {
    return Add(std::move(key), ValueType::kEnum).Choices(std::move(choices));
  }

  const std::string& name() const { return name_; }
  const std::string& doc() const { return doc_; }
  const std::deque<KeySpec>& keys() const { return keys_; }
  const KeySpec* Find(std::string_view key) const;
  std::vector<std::string> KeyNames() const;

  // Multi-line reference text for `shammie validate --explain`.
  std::string Explain(std::string_view table_label) const;

 private:
  std::string name_;
  std::string doc_;
  std::deque<KeySpec> keys_;  // deque: references stay valid while building
};

// Parses "90s", "15m", "2h", "1d", "1h30m", "HH:MM:SS", "MM:SS" into seconds.
std::optional<int64_t> ParseDuration(std::string_view text);
// Parses "512", "512K", "4G", "1.5T" (binary units, optional trailing B/iB) into bytes.
std::optional<int64_t> ParseSize(std::string_view text);
// A short rendering of a JSON value for messages: strings quoted, long arrays cut.
std::string ShortJson(const nlohmann::json& value);
// "integer", "float", "string", "boolean", "array", "table"
std::string JsonTypeName(const nlohmann::json& value);

}  // namespace shammie::common
