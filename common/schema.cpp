#include "common/schema.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "common/text.hpp"

namespace shammie::common {

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kBool: return "bool";
    case ValueType::kInt: return "integer";
    case ValueType::kFloat: return "float";
    case ValueType::kString: return "string";
    case ValueType::kEnum: return "string (enum)";
    case ValueType::kName: return "name";
    case ValueType::kPath: return "path";
    case ValueType::kDuration: return "duration";
    case ValueType::kSize: return "size";
    case ValueType::kIntList: return "list of integers";
    case ValueType::kFloatList: return "list of floats";
    case ValueType::kStringList: return "list of strings";
    case ValueType::kNameList: return "list of names";
  }
  return "?";
}

std::string JsonTypeName(const nlohmann::json& value) {
  if (value.is_boolean()) return "boolean";
  if (value.is_number_integer()) return "integer";
  if (value.is_number_float()) return "float";
  if (value.is_string()) return "string";
  if (value.is_array()) return "array";
  if (value.is_object()) return "table";
  return "nothing";
}

std::string ShortJson(const nlohmann::json& value) {
  std::string text = value.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

std::optional<int64_t> ParseDuration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  if (text.find(':') != std::string_view::npos) {
    // [HH:]MM:SS
    std::vector<int64_t> parts;
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find(':', start);
      if (end == std::string_view::npos) end = text.size();
      std::string_view part = text.substr(start, end - start);
      if (part.empty() || part.size() > 6) return std::nullopt;
      int64_t v = 0;
      for (char c : part) {
        if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
        v = v * 10 + (c - '0');
      }
      parts.push_back(v);
      start = end + 1;
      if (end == text.size()) break;
    }
    if (parts.size() < 2 || parts.size() > 3) return std::nullopt;
    if (parts.back() >= 60 || (parts.size() == 3 && parts[1] >= 60)) return std::nullopt;
    int64_t seconds = 0;
    for (int64_t p : parts) seconds = seconds * 60 + p;
    return seconds;
  }
  int64_t total = 0;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    int64_t v = 0;
    size_t digits = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      v = v * 10 + (text[i] - '0');
      if (++digits > 12) return std::nullopt;
      ++i;
    }
    if (digits == 0) return std::nullopt;
    if (i == text.size()) {
      if (any) return std::nullopt;  // "1h30" is ambiguous
      return v;                      // plain seconds as a string
    }
    int64_t unit = 0;
    switch (text[i]) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: return std::nullopt;
    }
    ++i;
    total += v * unit;
    any = true;
  }
  return total;
}

std::optional<int64_t> ParseSize(std::string_view text) {
  if (text.empty()) return std::nullopt;
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return std::nullopt;
  std::string number(text.substr(0, i));
  char* end = nullptr;
  double v = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(v) || v < 0) return std::nullopt;
  std::string_view unit = text.substr(i);
  double mult = 1;
  if (!unit.empty()) {
    switch (std::toupper(static_cast<unsigned char>(unit[0]))) {
      case 'B': mult = 1; break;
      case 'K': mult = 1024.0; break;
      case 'M': mult = 1024.0 * 1024; break;
      case 'G': mult = 1024.0 * 1024 * 1024; break;
      case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
      default: return std::nullopt;
    }
    std::string_view rest = unit.substr(1);
    if (!(rest.empty() || rest == "B" || rest == "iB" || (unit[0] == 'B' && rest.empty()))) return std::nullopt;
    if (unit[0] == 'B' && !rest.empty()) return std::nullopt;
  }
  double bytes = v * mult;
  if (bytes > 9.0e18) return std::nullopt;
  return static_cast<int64_t>(std::llround(bytes));
}

namespace {

bool IsNumber(const nlohmann::json& v) { return v.is_number_integer() || v.is_number_float(); }

std::string Got(const nlohmann::json& v) { return JsonTypeName(v) + " " + ShortJson(v); }

std::string FormatNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::optional<std::string> CheckRange(const KeySpec& spec, double v) {
  if (!std::isfinite(v)) return "must be a finite number, got " + FormatNumber(v);
  bool low = spec.min && (spec.min_exclusive ? !(v > *spec.min) : !(v >= *spec.min));
  bool high = spec.max && (spec.max_exclusive ? !(v < *spec.max) : !(v <= *spec.max));
  if (low || high) return "must be " + spec.ConstraintText() + ", got " + FormatNumber(v);
  return std::nullopt;
}

bool HasDotDot(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

// Checks a scalar against the element type of a list or a scalar key.
std::optional<std::string> CheckScalar(const KeySpec& spec, ValueType type, const nlohmann::json& value,
                                       nlohmann::json* out) {
  switch (type) {
    case ValueType::kBool:
      if (!value.is_boolean()) return "expected a boolean, got " + Got(value);
      *out = value;
      return std::nullopt;
    case ValueType::kInt:
      if (!value.is_number_integer()) return "expected an integer, got " + Got(value);
      if (auto e = CheckRange(spec, static_cast<double>(value.get<int64_t>()))) return e;
      *out = value;
      return std::nullopt;
    case ValueType::kFloat:
      if (!IsNumber(value)) return "expected a float, got " + Got(value);
      if (auto e = CheckRange(spec, value.get<double>())) return e;
      *out = value.get<double>();
      return std::nullopt;
    case ValueType::kString:
      if (!value.is_string()) return "expected a string, got " + Got(value);
      *out = value;
      return std::nullopt;
    case ValueType::kEnum: {
      if (!value.is_string()) return "expected one of " + QuotedList(spec.choices) + ", got " + Got(value);
      const auto& s = value.get_ref<const std::string&>();
      for (const auto& c : spec.choices) {
        if (c == s) {
          *out = value;
          return std::nullopt;
        }
      }
      return "unknown value \"" + s + "\", expected one of " + QuotedList(spec.choices) + DidYouMean(s, spec.choices);
    }
    case ValueType::kName: {
      if (!value.is_string()) return "expected a name (string), got " + Got(value);
      const auto& s = value.get_ref<const std::string&>();
      if (!IsSafeName(s)) {
        return "\"" + s + "\" is not a valid name: use letters, digits, `_`, `.` and `-`, starting with a letter or digit (at most 128 characters)";
      }
      *out = value;
      return std::nullopt;
    }
    case ValueType::kPath: {
      if (!value.is_string()) return "expected a path (string), got " + Got(value);
      const auto& s = value.get_ref<const std::string&>();
      if (s.empty()) return "path must not be empty";
      if (s.find('\0') != std::string::npos) return "path must not contain NUL characters";
      if (HasDotDot(s)) return "path \"" + s + "\" must not contain `..` components";
      *out = value;
      return std::nullopt;
    }
    case ValueType::kDuration: {
      std::optional<int64_t> seconds;
      if (value.is_number_integer()) {
        seconds = value.get<int64_t>();
      } else if (value.is_string()) {
        seconds = ParseDuration(value.get_ref<const std::string&>());
        if (!seconds) {
          return "cannot read duration " + ShortJson(value) + ": write e.g. \"90s\", \"15m\", \"1h30m\" or \"HH:MM:SS\"";
        }
      } else {
        return "expected a duration (\"1h30m\", \"HH:MM:SS\" or seconds), got " + Got(value);
      }
      if (auto e = CheckRange(spec, static_cast<double>(*seconds))) return e;
      *out = *seconds;
      return std::nullopt;
    }
    case ValueType::kSize: {
      std::optional<int64_t> bytes;
      if (value.is_number_integer()) {
        bytes = value.get<int64_t>();
      } else if (value.is_string()) {
        bytes = ParseSize(value.get_ref<const std::string&>());
        if (!bytes) return "cannot read size " + ShortJson(value) + ": write e.g. \"512M\" or \"4G\"";
      } else {
        return "expected a size (\"4G\", \"512M\" or bytes), got " + Got(value);
      }
      if (auto e = CheckRange(spec, static_cast<double>(*bytes))) return e;
      *out = *bytes;
      return std::nullopt;
    }
    default:
      break;
  }
  return "internal: list type used as scalar";
}

ValueType ElementType(ValueType list) {
  switch (list) {
    case ValueType::kIntList: return ValueType::kInt;
    case ValueType::kFloatList: return ValueType::kFloat;
    case ValueType::kStringList: return ValueType::kString;
    case ValueType::kNameList: return ValueType::kName;
    default: return list;
  }
}

bool IsList(ValueType t) { return ElementType(t) != t; }

}  // namespace

std::optional<std::string> KeySpec::Check(const nlohmann::json& value, nlohmann::json* normalized) const {
  if (!IsList(type)) return CheckScalar(*this, type, value, normalized);
  if (!value.is_array()) return "expected a " + std::string(ValueTypeName(type)) + ", got " + Got(value);
  if (min_items && value.size() < *min_items) {
    return "expected at least " + std::to_string(*min_items) + " item(s), got " + std::to_string(value.size());
  }
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < value.size(); ++i) {
    nlohmann::json item;
    if (auto e = CheckScalar(*this, ElementType(type), value[i], &item)) {
      return "item " + std::to_string(i) + ": " + *e;
    }
    out.push_back(std::move(item));
  }
  *normalized = std::move(out);
  return std::nullopt;
}

std::string KeySpec::ConstraintText() const {
  if (!choices.empty()) return "one of " + QuotedList(choices);
  std::string out;
  if (min) out += std::string(min_exclusive ? "> " : ">= ") + FormatNumber(*min);
  if (max) out += std::string(out.empty() ? "" : " and ") + (max_exclusive ? "< " : "<= ") + FormatNumber(*max);
  return out;
}

KeySpec& Schema::Add(std::string key, ValueType type) {
  keys_.push_back(KeySpec{});
  keys_.back().name = std::move(key);
  keys_.back().type = type;
  return keys_.back();
}

const KeySpec* Schema::Find(std::string_view key) const {
  for (const auto& k : keys_) {
    if (k.name == key) return &k;
  }
  return nullptr;
}

std::vector<std::string> Schema::KeyNames() const {
  std::vector<std::string> names;
  for (const auto& k : keys_) names.push_back(k.name);
  return names;
}

std::string Schema::Explain(std::string_view table_label) const {
  std::ostringstream os;
  os << "[" << table_label << "]";
  if (!doc_.empty()) os << "  " << doc_;
  os << "\n";
  for (const auto& k : keys_) {
    os << "  " << k.name << " (" << ValueTypeName(k.type) << ")";
    if (k.required) {
      os << ", required";
    } else if (!k.default_value.is_null()) {
      os << ", default " << k.default_value.dump();
    } else {
      os << ", optional";
    }
    std::string c = k.ConstraintText();
    if (!c.empty()) os << ", " << c;
    if (!k.doc.empty()) os << "\n      " << k.doc;
    os << "\n";
  }
  return os.str();
}

}  // namespace shammie::common
