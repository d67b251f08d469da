#include "orchestrator/spec_loader.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "common/hash.hpp"
#include "common/text.hpp"
#include "orchestrator/spec_schema.hpp"
#include "workers/tasks.hpp"

namespace shammie::orchestrator {

namespace fs = std::filesystem;
using common::KeySpec;
using common::Schema;
using nlohmann::json;

std::string Location::ToString() const {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string Diagnostic::ToString() const {
  std::string out = where.ToString() + ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

const Stage* ExperimentSpec::FindStage(const std::string& stage_name) const {
  for (const auto& s : stages) {
    if (s.name == stage_name) return &s;
  }
  return nullptr;
}

int64_t Sweep::PointsPerUpstream() const {
  // Saturating product: the loader rejects anything above kMaxJobsPerStage.
  auto mul = [](int64_t a, int64_t b) -> int64_t {
    if (a == 0 || b == 0) return 0;
    if (a > kMaxJobsPerStage * 10 / b) return kMaxJobsPerStage * 10;
    return a * b;
  };
  int64_t n = 1;
  for (const auto& axis : grid) n = mul(n, static_cast<int64_t>(axis.values.size()));
  if (!zip.empty()) n = mul(n, static_cast<int64_t>(zip.front().values.size()));
  if (random_samples > 0) n = mul(n, random_samples);
  return mul(n, seeds);
}

namespace {

// ---------------------------------------------------------------------------
// The merged document: TOML nodes from all files, kept alive, arranged by the
// merge rules. Leaves point at the node the user wrote, so every error can
// name its file:line:col.

struct MValue {
  enum class Type { kLeaf, kTable, kTableArray };
  Type type = Type::kLeaf;
  const toml::node* node = nullptr;  // the leaf, or the table/array that (last) defined it
  toml::source_region key_source;     // where its key was written (for unknown-key errors)
  std::vector<std::pair<std::string, MValue>> entries;  // kTable
  std::vector<MValue> items;                            // kTableArray

  const MValue* Get(std::string_view key) const {
    for (const auto& [k, v] : entries) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  MValue* GetMutable(std::string_view key) {
    for (auto& [k, v] : entries) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

MValue Build(const toml::node& node) {
  MValue out;
  out.node = &node;
  if (const toml::table* t = node.as_table()) {
    out.type = MValue::Type::kTable;
    for (const auto& [key, value] : *t) {
      MValue child = Build(value);
      child.key_source = key.source();
      out.entries.emplace_back(std::string(key.str()), std::move(child));
    }
  } else if (const toml::array* a = node.as_array(); a && a->is_array_of_tables()) {
    out.type = MValue::Type::kTableArray;
    for (const auto& item : *a) out.items.push_back(Build(item));
  }
  return out;
}

std::optional<std::string> StageNameOf(const MValue& stage) {
  const MValue* name = stage.Get("name");
  if (!name || name->type != MValue::Type::kLeaf) return std::nullopt;
  if (auto s = name->node->value<std::string>()) return *s;
  return std::nullopt;
}

// Merges `over` onto `base` (see spec_loader.hpp for the rules).
void Merge(MValue& base, MValue over, bool at_root) {
  if (base.type != MValue::Type::kTable || over.type != MValue::Type::kTable) {
    base = std::move(over);
    return;
  }
  base.node = over.node;
  for (auto& [key, value] : over.entries) {
    MValue* existing = base.GetMutable(key);
    if (!existing) {
      base.entries.emplace_back(key, std::move(value));
      continue;
    }
    if (at_root && key == "stage" && existing->type == MValue::Type::kTableArray &&
        value.type == MValue::Type::kTableArray) {
      for (auto& stage : value.items) {
        auto name = StageNameOf(stage);
        MValue* match = nullptr;
        for (auto& b : existing->items) {
          if (name && StageNameOf(b) == name) match = &b;
        }
        if (match) {
          Merge(*match, std::move(stage), false);
        } else {
          existing->items.push_back(std::move(stage));
        }
      }
      existing->node = value.node;
      continue;
    }
    Merge(*existing, std::move(value), false);
  }
}

// Turns the merged document back into a TOML table for the canonical text.
toml::table ToToml(const MValue& table) {
  toml::table out;
  for (const auto& [key, value] : table.entries) {
    switch (value.type) {
      case MValue::Type::kLeaf: out.insert_or_assign(key, *value.node); break;
      case MValue::Type::kTable: out.insert_or_assign(key, ToToml(value)); break;
      case MValue::Type::kTableArray: {
        toml::array arr;
        for (const auto& item : value.items) arr.push_back(ToToml(item));
        out.insert_or_assign(key, std::move(arr));
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------

class Loader {
 public:
  explicit Loader(const workers::KindRegistry& kinds) : kinds_(kinds) {}

  LoadResult Load(const std::string& path, const std::optional<std::string>& text);

 private:
  // Diagnostics.
  Location Loc(const toml::node* node, const std::string& fallback_file = "") const {
    Location loc;
    if (node) {
      const auto& src = node->source();
      loc.file = src.path ? *src.path : fallback_file;
      loc.line = src.begin.line;
      loc.column = src.begin.column;
    } else {
      loc.file = fallback_file;
    }
    if (loc.file.empty()) loc.file = root_path_;
    return loc;
  }
  // Where a key was written; falls back to its value.
  Location KeyLoc(const MValue& value) const {
    if (value.key_source.path && value.key_source.begin.line > 0) {
      return {*value.key_source.path, static_cast<int64_t>(value.key_source.begin.line),
              static_cast<int64_t>(value.key_source.begin.column)};
    }
    return Loc(value.node);
  }
  void Error(const toml::node* at, std::string key, std::string message) {
    errors_.push_back({Loc(at), std::move(key), std::move(message)});
  }
  // An `extends` that cannot be followed leaves the merged document incomplete.
  void ExtendsError(const toml::node* at, std::string message) {
    Error(at, "extends", std::move(message));
    base_failed_ = true;
  }
  void ErrorAt(Location at, std::string key, std::string message) {
    errors_.push_back({std::move(at), std::move(key), std::move(message)});
  }

  // Where each stage's DAG keys were written, by position in the file, for
  // DAG errors.
  struct StageSource {
    std::string prefix;                   // "stage.<name>" or "stage[<index>]"
    const toml::node* table = nullptr;
    bool depends_on_valid = false;
    std::vector<std::pair<std::string, const toml::node*>> deps;
    std::vector<std::pair<std::string, const toml::node*>> over;
  };

  // Files and composition.
  std::optional<MValue> LoadFile(const std::string& display_path, const std::optional<std::string>& text,
                                 std::vector<std::string> chain, const toml::node* included_from);

  // Schema checks.
  std::optional<json> LeafToJson(const toml::node& node, const std::string& key);
  json CheckTable(const MValue* table, const Schema& schema, const std::string& prefix,
                  const std::vector<std::string>& subtables, const toml::node* parent);
  bool RequireTable(const MValue* value, const std::string& key);
  // `owner`'s [resources] sub-table (a stage or the continual study).
  Resources CheckResources(const MValue& owner, const std::string& prefix);
  void CheckStage(const MValue& item, size_t index, Stage& stage);
  void CheckRetryCodes(const MValue* retry, const std::string& prefix, RetryPolicy& retry_policy);
  void CheckAdaptive(const MValue& sweep, const json& fields, const std::string& sp, Stage& stage);
  void CheckSweep(const MValue* sweep, const workers::JobKind* kind, StageSource& source, Stage& stage);
  // unique: a value may appear once (grid axes); zip lists may repeat values
  // as long as their rows differ (checked by the caller).
  std::optional<SweepAxis> CheckAxis(const std::string& key, const MValue& value, const KeySpec& spec,
                                     const std::string& dotted, bool unique = true);
  std::optional<RandomAxis> CheckRandomAxis(const std::string& key, const MValue& value, const KeySpec& spec,
                                            const std::string& dotted);
  void CheckDag(std::vector<Stage>& stages);
  void CheckAnalyses(const MValue& analyses, ExperimentSpec& spec);
  void CheckSlurm(const MValue& table, SlurmSpec& slurm);
  void CheckContinual(const MValue& table, ExperimentSpec& spec);

  const workers::KindRegistry& kinds_;
  std::string root_path_;
  std::vector<std::unique_ptr<toml::table>> documents_;  // keep every node alive
  std::vector<std::string> files_;
  std::vector<Diagnostic> errors_;

  std::vector<StageSource> stage_sources_;
  bool base_failed_ = false;  // a file named by `extends` could not be loaded
};

std::optional<std::string> ReadFile(const std::string& path, std::string* error) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    *error = "is a directory, not a TOML file";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::optional<MValue> Loader::LoadFile(const std::string& display_path, const std::optional<std::string>& text,
                                       std::vector<std::string> chain, const toml::node* included_from) {
  std::string content;
  if (text) {
    content = *text;
  } else {
    std::string why;
    auto read = ReadFile(display_path, &why);
    if (!read) {
      if (included_from) {
        Error(included_from, "extends", "cannot read `" + display_path + "`: " + why);
      } else {
        ErrorAt({display_path, 0, 0}, "", "cannot read experiment file: " + why);
      }
      return std::nullopt;
    }
    content = std::move(*read);
  }
  files_.push_back(display_path);

  auto doc = std::make_unique<toml::table>();
  try {
    *doc = toml::parse(content, display_path);
  } catch (const toml::parse_error& e) {
    Location loc{display_path, static_cast<int64_t>(e.source().begin.line),
                 static_cast<int64_t>(e.source().begin.column)};
    ErrorAt(loc, "syntax", std::string(e.description()));
    return std::nullopt;
  }
  const toml::table* table = doc.get();
  documents_.push_back(std::move(doc));
  MValue root = Build(*table);

  // extends: merge bases in order, then this file over them.
  std::optional<MValue> merged;
  for (size_t i = 0; i < root.entries.size(); ++i) {
    if (root.entries[i].first != "extends") continue;
    const MValue ext = root.entries[i].second;
    root.entries.erase(root.entries.begin() + static_cast<std::ptrdiff_t>(i));
    std::vector<const toml::node*> targets;
    if (ext.type == MValue::Type::kLeaf && ext.node->is_string()) {
      targets.push_back(ext.node);
    } else if (ext.type == MValue::Type::kLeaf && ext.node->is_array() &&
               std::all_of(ext.node->as_array()->begin(), ext.node->as_array()->end(),
                           [](const toml::node& n) { return n.is_string(); })) {
      for (const auto& n : *ext.node->as_array()) targets.push_back(&n);
    } else {
      ExtendsError(ext.node, "expected a file name or a list of file names (strings)");
    }
    for (const toml::node* target : targets) {
      const std::string name = target->value<std::string>().value_or("");
      if (name.empty() || name.find('\0') != std::string::npos) {
        ExtendsError(target, "file name must not be empty");
        continue;
      }
      fs::path base_path = fs::path(name).is_absolute()
                               ? fs::path(name)
                               : (fs::path(display_path).parent_path() / name).lexically_normal();
      if (base_path.extension() != ".toml") {
        ExtendsError(target, "`" + name + "` is not a .toml file");
        continue;
      }
      std::error_code ec;
      std::string identity = fs::weakly_canonical(base_path, ec).string();
      if (ec) identity = base_path.string();
      if (std::find(chain.begin(), chain.end(), identity) != chain.end()) {
        std::string cycle;
        for (const auto& c : chain) cycle += fs::path(c).filename().string() + " -> ";
        ExtendsError(target, "extends cycle: " + cycle + fs::path(identity).filename().string());
        continue;
      }
      if (chain.size() >= 16) {
        ExtendsError(target, "extends nests deeper than 16 files");
        continue;
      }
      auto next_chain = chain;
      next_chain.push_back(identity);
      auto base = LoadFile(base_path.string(), std::nullopt, next_chain, target);
      if (!base) {
        base_failed_ = true;
        continue;
      }
      if (!merged) {
        merged = std::move(*base);
      } else {
        Merge(*merged, std::move(*base), true);
      }
    }
    break;  // a TOML table holds a key once
  }
  if (!merged) return root;
  Merge(*merged, std::move(root), true);
  return merged;
}

std::optional<json> Loader::LeafToJson(const toml::node& node, const std::string& key) {
  switch (node.type()) {
    case toml::node_type::string: return json(*node.value<std::string>());
    case toml::node_type::integer: return json(*node.value<int64_t>());
    case toml::node_type::floating_point: {
      double v = *node.value<double>();
      if (!std::isfinite(v)) {
        Error(&node, key, "inf and nan are not allowed");
        return std::nullopt;
      }
      return json(v);
    }
    case toml::node_type::boolean: return json(*node.value<bool>());
    case toml::node_type::array: {
      json out = json::array();
      for (const auto& item : *node.as_array()) {
        auto v = LeafToJson(item, key);
        if (!v) return std::nullopt;
        out.push_back(std::move(*v));
      }
      return out;
    }
    case toml::node_type::table: {
      json out = json::object();
      for (const auto& [k, item] : *node.as_table()) {
        auto v = LeafToJson(item, key + "." + std::string(k.str()));
        if (!v) return std::nullopt;
        out[std::string(k.str())] = std::move(*v);
      }
      return out;
    }
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      Error(&node, key, "dates and times are not supported; write a string or a number");
      return std::nullopt;
    default:
      Error(&node, key, "unsupported TOML value");
      return std::nullopt;
  }
}

std::string JoinKey(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string UnknownKeyMessage(const std::string& key, std::vector<std::string> known) {
  if (key == "extends") return "unknown key: `extends` belongs at the top of the file, before any table";
  std::string hint = common::DidYouMean(key, known);
  if (!hint.empty()) return "unknown key" + hint;
  if (known.empty()) return "unknown key: this table takes no keys";
  std::sort(known.begin(), known.end());
  return "unknown key; expected one of " + common::QuotedList(known);
}

json Loader::CheckTable(const MValue* table, const Schema& schema, const std::string& prefix,
                        const std::vector<std::string>& subtables, const toml::node* parent) {
  json out = json::object();
  std::vector<std::string> known = schema.KeyNames();
  known.insert(known.end(), subtables.begin(), subtables.end());
  if (table) {
    for (const auto& [key, value] : table->entries) {
      if (std::find(subtables.begin(), subtables.end(), key) != subtables.end()) continue;
      const std::string dotted = JoinKey(prefix, key);
      const KeySpec* spec = schema.Find(key);
      if (!spec) {
        ErrorAt(KeyLoc(value), dotted, UnknownKeyMessage(key, known));
        continue;
      }
      if (value.type != MValue::Type::kLeaf || value.node->is_table()) {
        Error(value.node, dotted, "expected a " + std::string(common::ValueTypeName(spec->type)) + ", got a table");
        continue;
      }
      auto raw = LeafToJson(*value.node, dotted);
      if (!raw) continue;
      json normalized;
      if (auto problem = spec->Check(*raw, &normalized)) {
        Error(value.node, dotted, *problem);
        continue;
      }
      out[key] = std::move(normalized);
    }
  }
  for (const auto& spec : schema.keys()) {
    if (out.contains(spec.name)) continue;
    const bool written = table && table->Get(spec.name);
    if (written) continue;  // present but invalid: already reported
    if (spec.required) {
      Error(table ? table->node : parent, JoinKey(prefix, spec.name), "missing required key");
    } else if (!spec.default_value.is_null()) {
      out[spec.name] = spec.default_value;
    }
  }
  return out;
}

bool Loader::RequireTable(const MValue* value, const std::string& key) {
  if (!value) return false;
  if (value->type == MValue::Type::kTable) return true;
  Error(value->node, key, "expected a table");
  return false;
}

void Loader::CheckRetryCodes(const MValue* retry, const std::string& prefix, RetryPolicy& policy) {
  const MValue* on = retry ? retry->Get("on") : nullptr;
  std::vector<std::string> names;
  std::vector<const toml::node*> where;
  if (on && on->type == MValue::Type::kLeaf && on->node->is_array()) {
    for (const auto& n : *on->node->as_array()) {
      if (auto s = n.value<std::string>()) {
        names.push_back(*s);
        where.push_back(&n);
      }
    }
  } else if (!on) {
    for (const auto& n : RetrySchema().Find("on")->default_value) names.push_back(n.get<std::string>());
    where.assign(names.size(), nullptr);
  }
  const std::vector<std::string> allowed = {"unavailable", "aborted", "deadline_exceeded", "cancelled",
                                            "resource_exhausted", "internal", "data_loss"};
  for (size_t i = 0; i < names.size(); ++i) {
    if (std::find(allowed.begin(), allowed.end(), names[i]) == allowed.end()) {
      std::string msg = "\"" + names[i] + "\" is not a retryable error code";
      std::string hint = common::DidYouMean(names[i], allowed);
      msg += hint.empty() ? "; expected some of " + common::QuotedList(allowed) : hint;
      Error(where[i], JoinKey(prefix, "on"), msg);
      continue;
    }
    policy.on.push_back(*common::StatusCodeFromName(names[i]));
  }
}

std::optional<SweepAxis> Loader::CheckAxis(const std::string& key, const MValue& value, const KeySpec& spec,
                                           const std::string& dotted, bool unique) {
  if (value.type != MValue::Type::kLeaf || !value.node->is_array()) {
    Error(value.node, dotted, "expected a list of values to sweep, e.g. " + key + " = [1, 2, 3]");
    return std::nullopt;
  }
  const toml::array& arr = *value.node->as_array();
  if (arr.empty()) {
    Error(value.node, dotted, "sweep list is empty");
    return std::nullopt;
  }
  SweepAxis axis{key, {}};
  bool ok = true;
  for (size_t i = 0; i < arr.size(); ++i) {
    auto raw = LeafToJson(*arr.get(i), dotted);
    if (!raw) {
      ok = false;
      continue;
    }
    json normalized;
    if (auto problem = spec.Check(*raw, &normalized)) {
      Error(arr.get(i), dotted, "value " + std::to_string(i) + ": " + *problem);
      ok = false;
      continue;
    }
    if (unique && std::find(axis.values.begin(), axis.values.end(), normalized) != axis.values.end()) {
      Error(arr.get(i), dotted, "value " + common::ShortJson(normalized) + " appears twice in the sweep list");
      ok = false;
      continue;
    }
    axis.values.push_back(std::move(normalized));
  }
  if (!ok) return std::nullopt;
  return axis;
}

std::optional<RandomAxis> Loader::CheckRandomAxis(const std::string& key, const MValue& value, const KeySpec& spec,
                                                  const std::string& dotted) {
  const std::vector<std::string> kDists = {"uniform", "log_uniform", "int_uniform", "choice"};
  const std::string usage = "write " + key + " = { uniform = [lo, hi] }, { log_uniform = [lo, hi] }, "
                            "{ int_uniform = [lo, hi] } or { choice = [values] }";
  if (value.type != MValue::Type::kTable || value.entries.size() != 1) {
    Error(value.node, dotted, "expected a table with exactly one distribution: " + usage);
    return std::nullopt;
  }
  const auto& [dist, arg] = value.entries.front();
  const std::string dist_key = dotted + "." + dist;
  RandomAxis axis;
  axis.key = key;
  if (dist == "uniform") axis.distribution = RandomAxis::Distribution::kUniform;
  else if (dist == "log_uniform") axis.distribution = RandomAxis::Distribution::kLogUniform;
  else if (dist == "int_uniform") axis.distribution = RandomAxis::Distribution::kIntUniform;
  else if (dist == "choice") axis.distribution = RandomAxis::Distribution::kChoice;
  else {
    std::string hint = common::DidYouMean(dist, kDists);
    Error(arg.node, dist_key, "unknown distribution" + (hint.empty() ? "; " + usage : hint));
    return std::nullopt;
  }
  if (axis.distribution == RandomAxis::Distribution::kChoice) {
    auto values = CheckAxis(key, arg, spec, dist_key);
    if (!values) return std::nullopt;
    axis.choices = std::move(values->values);
    return axis;
  }
  const bool is_int = axis.distribution == RandomAxis::Distribution::kIntUniform;
  if (is_int && spec.type != common::ValueType::kInt) {
    Error(arg.node, dist_key, "int_uniform draws integers but `" + key + "` is a " +
                                  std::string(common::ValueTypeName(spec.type)) + "; use uniform");
    return std::nullopt;
  }
  if (!is_int && spec.type != common::ValueType::kFloat) {
    Error(arg.node, dist_key, dist + " draws floats but `" + key + "` is a " +
                                  std::string(common::ValueTypeName(spec.type)) +
                                  (spec.type == common::ValueType::kInt ? "; use int_uniform" : "; use choice"));
    return std::nullopt;
  }
  const toml::array* bounds = arg.type == MValue::Type::kLeaf ? arg.node->as_array() : nullptr;
  if (!bounds || bounds->size() != 2 || !(*bounds)[0].is_number() || !(*bounds)[1].is_number() ||
      (is_int && (!(*bounds)[0].is_integer() || !(*bounds)[1].is_integer()))) {
    Error(arg.node, dist_key, std::string("expected [lo, hi] with two ") + (is_int ? "integers" : "numbers"));
    return std::nullopt;
  }
  axis.lo = *(*bounds)[0].value<double>();
  axis.hi = *(*bounds)[1].value<double>();
  if (!(axis.lo < axis.hi) && !(is_int && axis.lo == axis.hi)) {
    Error(arg.node, dist_key, "lower bound must be below the upper bound");
    return std::nullopt;
  }
  if (axis.distribution == RandomAxis::Distribution::kLogUniform && axis.lo <= 0) {
    Error(arg.node, dist_key, "log_uniform needs a positive lower bound");
    return std::nullopt;
  }
  for (double bound : {axis.lo, axis.hi}) {
    json ignored;
    json v = is_int ? json(static_cast<int64_t>(bound)) : json(bound);
    if (auto problem = spec.Check(v, &ignored)) {
      Error(arg.node, dist_key, "bound " + common::ShortJson(v) + ": " + *problem);
      return std::nullopt;
    }
  }
  return axis;
}

void Loader::CheckSweep(const MValue* sweep, const workers::JobKind* kind, StageSource& source, Stage& stage) {
  const std::string sp = source.prefix + ".sweep";
  json fields = CheckTable(sweep, SweepSchema(), sp, {"grid", "zip", "random"}, sweep ? sweep->node : nullptr);
  if (fields.contains("seeds")) stage.sweep.seeds = fields["seeds"].get<int64_t>();
  if (fields.contains("over")) {
    stage.sweep.over = fields["over"].get<std::vector<std::string>>();
    const MValue* over = sweep ? sweep->Get("over") : nullptr;
    for (size_t i = 0; i < stage.sweep.over.size(); ++i) {
      source.over.emplace_back(stage.sweep.over[i], over ? over->node->as_array()->get(i) : nullptr);
    }
  }
  if (!sweep) return;

  // Which config keys the sweep may name.
  std::map<std::string, std::string> swept;  // key -> sub-table that sweeps it
  auto lookup = [&](const std::string& key, const MValue& value, const std::string& dotted,
                    const std::string& table) -> const KeySpec* {
    if (!kind) return nullptr;  // unknown kind: already reported
    const KeySpec* spec = kind->config.Find(key);
    if (!spec) {
      std::string hint = common::DidYouMean(key, kind->config.KeyNames());
      std::string known = kind->config.keys().empty()
                              ? " (" + kind->name + " takes no config keys)"
                              : " (its keys: " + common::QuotedList(kind->config.KeyNames()) + ")";
      if (table == "random" && hint.empty() && common::ClosestMatch(key, {"samples"})) {
        ErrorAt(KeyLoc(value), dotted, "unknown key (did you mean `samples`?)");
        return nullptr;
      }
      ErrorAt(KeyLoc(value), dotted, "`" + key + "` is not a config key of " + kind->name + (hint.empty() ? known : hint));
      return nullptr;
    }
    if (!spec->sweepable) {
      Error(value.node, dotted, "`" + key + "` of " + kind->name + " cannot be swept");
      return nullptr;
    }
    if (auto it = swept.find(key); it != swept.end()) {
      Error(value.node, dotted, "`" + key + "` is already swept in " + sp + "." + it->second +
                                    "; a key may be swept once");
      return nullptr;
    }
    swept[key] = table;
    return spec;
  };

  for (const char* table_name : {"grid", "zip"}) {
    const MValue* table = sweep->Get(table_name);
    const std::string tp = sp + "." + table_name;
    if (!RequireTable(table, tp)) continue;
    std::vector<SweepAxis>& axes = std::string(table_name) == "grid" ? stage.sweep.grid : stage.sweep.zip;
    for (const auto& [key, value] : table->entries) {
      const std::string dotted = tp + "." + key;
      const KeySpec* spec = lookup(key, value, dotted, table_name);
      if (!spec) continue;
      const bool zip = std::string(table_name) == "zip";
      auto axis = CheckAxis(key, value, *spec, dotted, /*unique=*/!zip);
      if (!axis) continue;
      if (zip && !axes.empty() && axes.front().values.size() != axis->values.size()) {
        Error(value.node, dotted, "has " + std::to_string(axis->values.size()) + " values but `" + axes.front().key +
                                      "` has " + std::to_string(axes.front().values.size()) +
                                      "; zip lists must have equal lengths");
        continue;
      }
      axes.push_back(std::move(*axis));
    }
  }
  // Zip rows (one value of every list) must differ; a single list's values
  // too. Only when every zip list was accepted (a refused one has its error).
  const MValue* zip_table = sweep->Get("zip");
  if (!stage.sweep.zip.empty() && zip_table && zip_table->entries.size() == stage.sweep.zip.size()) {
    const size_t rows = stage.sweep.zip.front().values.size();
    std::vector<json> seen;
    for (size_t r = 0; r < rows; ++r) {
      json row = json::array();
      std::string text;
      for (const auto& axis : stage.sweep.zip) {
        row.push_back(axis.values[r]);
        text += (text.empty() ? "" : ", ") + axis.key + " = " + common::ShortJson(axis.values[r]);
      }
      auto at = std::find(seen.begin(), seen.end(), row);
      if (at != seen.end()) {
        const MValue* first = sweep->Get("zip")->Get(stage.sweep.zip.front().key);
        const toml::array* arr = first && first->node ? first->node->as_array() : nullptr;
        Error(arr && r < arr->size() ? arr->get(r) : sweep->node, sp + ".zip",
              "row " + std::to_string(r) + " repeats row " + std::to_string(at - seen.begin()) + " (" + text +
                  "); every zip row must differ");
      }
      seen.push_back(std::move(row));
    }
  }
  const MValue* random = sweep->Get("random");
  const std::string rp = sp + ".random";
  if (RequireTable(random, rp)) {
    std::vector<std::string> axis_keys;
    for (const auto& [key, value] : random->entries) {
      if (key != "samples") axis_keys.push_back(key);
    }
    // Only `samples` is a plain key; the rest are axes, checked below.
    MValue plain;
    plain.type = MValue::Type::kTable;
    plain.node = random->node;
    if (const MValue* samples = random->Get("samples")) plain.entries.emplace_back("samples", *samples);
    json fields_random = CheckTable(&plain, RandomSweepSchema(), rp, {}, random->node);
    if (fields_random.contains("samples")) stage.sweep.random_samples = fields_random["samples"].get<int64_t>();
    if (axis_keys.empty()) Error(random->node, rp, "random sweep names no keys to sample");
    for (const auto& key : axis_keys) {
      const MValue& value = *random->Get(key);
      const std::string dotted = rp + "." + key;
      const KeySpec* spec = lookup(key, value, dotted, "random");
      if (!spec) continue;
      if (auto axis = CheckRandomAxis(key, value, *spec, dotted)) stage.sweep.random.push_back(std::move(*axis));
    }
  }
  CheckAdaptive(*sweep, fields, sp, stage);
  // Sorted axes: reordering keys in the file does not change the jobs.
  auto by_key = [](const auto& a, const auto& b) { return a.key < b.key; };
  std::sort(stage.sweep.grid.begin(), stage.sweep.grid.end(), by_key);
  std::sort(stage.sweep.zip.begin(), stage.sweep.zip.end(), by_key);
  std::sort(stage.sweep.random.begin(), stage.sweep.random.end(), by_key);
  if (stage.sweep.PointsPerUpstream() > kMaxJobsPerStage) {
    Error(sweep->node, sp, "expands to more than " + std::to_string(kMaxJobsPerStage) +
                               " jobs per upstream job; shrink the sweep");
  }
}

void Loader::CheckAdaptive(const MValue& sweep, const json& fields, const std::string& sp, Stage& stage) {
  AdaptiveSweep& a = stage.sweep.adaptive;
  if (fields.contains("strategy")) a.strategy = fields["strategy"].get<std::string>();
  const std::vector<std::string> keys = {"budget",     "batch", "objectives", "maximize",        "reference", "constraint",
                                         "alpha",      "delta", "binary",     "validation_size", "calibration_size"};
  if (!a.adaptive()) {
    for (const auto& key : keys) {
      if (const MValue* v = sweep.Get(key)) ErrorAt(KeyLoc(*v), sp + "." + key, "applies to strategy = \"bo\" or \"risk-bo\" only");
    }
    return;
  }
  const MValue* strategy = sweep.Get("strategy");
  auto at = [&](const char* key) { return sweep.Get(key) ? sweep.Get(key)->node : strategy->node; };
  if (fields.contains("budget")) a.budget = fields["budget"].get<int64_t>();
  if (fields.contains("batch")) a.batch = fields["batch"].get<int64_t>();
  if (fields.contains("objectives")) a.objectives = fields["objectives"].get<std::vector<std::string>>();
  if (fields.contains("maximize")) a.maximize = fields["maximize"].get<std::vector<std::string>>();
  if (fields.contains("reference")) a.reference = fields["reference"].get<std::vector<double>>();
  if (fields.contains("constraint")) a.constraint = fields["constraint"].get<std::string>();
  if (fields.contains("alpha")) a.alpha = fields["alpha"].get<double>();
  if (fields.contains("delta")) a.delta = fields["delta"].get<double>();
  if (fields.contains("binary")) a.binary = fields["binary"].get<bool>();
  if (fields.contains("validation_size")) a.validation_size = fields["validation_size"].get<int64_t>();
  if (fields.contains("calibration_size")) a.calibration_size = fields["calibration_size"].get<int64_t>();
  const std::string what = "strategy = \"" + a.strategy + "\"";
  std::vector<std::string> required = {"budget", "objectives"};
  if (a.strategy == "risk-bo") required.insert(required.end(), {"constraint", "validation_size", "calibration_size"});
  for (const auto& key : required) {
    if (!sweep.Get(key)) Error(strategy->node, sp + "." + key, "missing required key for " + what);
  }
  for (const char* key : {"grid", "zip"}) {
    if (const MValue* v = sweep.Get(key)) {
      ErrorAt(KeyLoc(*v), sp + "." + key, std::string("does not combine with ") + what + ": the random axes are the search space");
    }
  }
  if (!stage.sweep.over.empty()) Error(at("over"), sp + ".over", "does not combine with " + what);
  if (stage.sweep.seeds != 1) Error(at("seeds"), sp + ".seeds", "does not combine with " + what + " (one seed per point)");
  if (stage.sweep.random.empty()) {
    Error(strategy->node, sp + ".random", what + " searches the random axes: declare them with their ranges, and "
                                                 "random.samples = the initial design");
  }
  for (const auto& axis : stage.sweep.random) {
    if (axis.distribution == RandomAxis::Distribution::kChoice) {
      Error(sweep.Get("random")->Get(axis.key)->node, sp + ".random." + axis.key,
            "choice axes cannot be searched by " + what + "; use uniform, log_uniform or int_uniform");
    }
  }
  if (a.budget > 0 && stage.sweep.random_samples > a.budget) {
    Error(at("budget"), sp + ".budget", "is below random.samples (" + std::to_string(stage.sweep.random_samples) +
                                            "), the initial design it includes");
  }
  for (const auto& m : a.maximize) {
    if (std::find(a.objectives.begin(), a.objectives.end(), m) == a.objectives.end()) {
      Error(at("maximize"), sp + ".maximize", "\"" + m + "\" is not one of the objectives");
    }
  }
  if (!a.reference.empty() && a.reference.size() != a.objectives.size()) {
    Error(at("reference"), sp + ".reference", "needs one value per objective (" + std::to_string(a.objectives.size()) + ")");
  }
  if (a.strategy == "risk-bo") {
    if (sweep.Get("reference")) {
      Error(at("reference"), sp + ".reference", "risk-bo takes its reference point from the region of interest");
    }
    if (!a.constraint.empty() && std::find(a.objectives.begin(), a.objectives.end(), a.constraint) == a.objectives.end()) {
      Error(at("constraint"), sp + ".constraint", "\"" + a.constraint + "\" is not one of the objectives");
    }
    if (std::find(a.maximize.begin(), a.maximize.end(), a.constraint) != a.maximize.end()) {
      Error(at("maximize"), sp + ".maximize", "the constraint is a risk: it is minimized");
    }
    if (a.objectives.size() < 2) {
      Error(at("objectives"), sp + ".objectives", "risk-bo needs the constraint and at least one free objective");
    }
  }
}

Resources Loader::CheckResources(const MValue& owner, const std::string& prefix) {
  Resources out;
  const MValue* resources = owner.Get("resources");
  if (resources && !RequireTable(resources, prefix + ".resources")) resources = nullptr;
  json r = CheckTable(resources, ResourcesSchema(), prefix + ".resources", {}, owner.node);
  if (r.contains("ranks")) out.ranks = r["ranks"].get<int64_t>();
  if (r.contains("gpus")) out.gpus = r["gpus"].get<int64_t>();
  if (r.contains("time_limit")) out.time_limit_s = r["time_limit"].get<int64_t>();
  if (r.contains("memory")) out.memory_bytes = r["memory"].get<int64_t>();
  if (r.contains("isolation")) out.isolation = r["isolation"].get<std::string>();
  if (out.isolation == "process" && out.ranks > 1) {
    const MValue* at = resources ? resources->Get("isolation") : nullptr;
    Error(at ? at->node : owner.node, prefix + ".resources.isolation",
          "isolation = \"process\" is for single-rank jobs; this stage has ranks = " + std::to_string(out.ranks) +
              " (a gang shares MPI communicators and cannot be forked)");
  }
  return out;
}

void Loader::CheckStage(const MValue& item, size_t index, Stage& stage) {
  std::string prefix = "stage";
  if (auto name = StageNameOf(item); name && common::IsSafeName(*name)) {
    prefix += "." + *name;
  } else {
    prefix += "[" + std::to_string(index) + "]";
  }
  stage.location = Loc(item.node);
  json fields = CheckTable(&item, StageSchema(), prefix, {"config", "resources", "retry", "sweep"}, item.node);
  if (fields.contains("name")) stage.name = fields["name"].get<std::string>();
  if (fields.contains("description")) stage.description = fields["description"].get<std::string>();
  if (fields.contains("depends_on")) stage.depends_on = fields["depends_on"].get<std::vector<std::string>>();
  if (stage_sources_.size() <= index) stage_sources_.resize(index + 1);
  StageSource& source = stage_sources_[index];
  source.prefix = prefix;
  source.table = item.node;
  source.depends_on_valid = fields.contains("depends_on");
  if (const MValue* deps = item.Get("depends_on"); source.depends_on_valid && deps) {
    const toml::array& arr = *deps->node->as_array();
    for (size_t i = 0; i < arr.size() && i < stage.depends_on.size(); ++i) {
      source.deps.emplace_back(stage.depends_on[i], arr.get(i));
    }
  }

  const workers::JobKind* kind = nullptr;
  if (fields.contains("kind")) {
    stage.kind = fields["kind"].get<std::string>();
    kind = kinds_.Find(stage.kind);
    if (!kind) {
      std::string hint = common::DidYouMean(stage.kind, kinds_.Names());
      Error(item.Get("kind")->node, prefix + ".kind",
            "unknown job kind \"" + stage.kind + "\"" +
                (hint.empty() ? "; `shammie validate --explain` lists the kinds" : hint));
    }
  }

  const MValue* config = item.Get("config");
  if (config && !RequireTable(config, prefix + ".config")) config = nullptr;
  if (kind) {
    const size_t errors_before = errors_.size();
    stage.config = CheckTable(config, kind->config, prefix + ".config", {}, item.node);
    // Cross-key checks only make sense once every key is valid.
    if (kind->check && errors_.size() == errors_before) {
      for (const auto& problem : kind->check(stage.config)) {
        const MValue* at = config ? config->Get(problem.key) : nullptr;
        Error(at ? at->node : (config ? config->node : item.node), prefix + ".config." + problem.key, problem.message);
      }
    }
  }

  stage.resources = CheckResources(item, prefix);

  const MValue* retry = item.Get("retry");
  if (retry && !RequireTable(retry, prefix + ".retry")) retry = nullptr;
  json rt = CheckTable(retry, RetrySchema(), prefix + ".retry", {}, item.node);
  if (rt.contains("attempts")) stage.retry.attempts = rt["attempts"].get<int64_t>();
  if (rt.contains("backoff")) stage.retry.backoff_s = rt["backoff"].get<double>();
  if (rt.contains("on")) CheckRetryCodes(retry, prefix + ".retry", stage.retry);

  const MValue* sweep = item.Get("sweep");
  if (sweep && !RequireTable(sweep, prefix + ".sweep")) sweep = nullptr;
  CheckSweep(sweep, kind, source, stage);
}

void Loader::CheckDag(std::vector<Stage>& stages) {
  std::map<std::string, size_t> index;
  std::vector<std::string> names;
  for (size_t i = 0; i < stages.size(); ++i) {
    const std::string& name = stages[i].name;
    if (name.empty()) continue;
    if (auto it = index.find(name); it != index.end()) {
      ErrorAt(stages[i].location, "stage." + name + ".name",
              "duplicate stage name \"" + name + "\" (first defined at " + stages[it->second].location.ToString() + ")");
      continue;
    }
    index[name] = i;
    names.push_back(name);
  }
  // Stages are still in file order here, so stage i was written as stage_sources_[i].
  auto dep_node = [&](size_t stage, const std::string& dep) -> const toml::node* {
    for (const auto& [d, n] : stage_sources_[stage].deps) {
      if (d == dep) return n;
    }
    return stage_sources_[stage].table;
  };
  bool edges_ok = true;
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& stage = stages[i];
    const StageSource& source = stage_sources_[i];
    std::set<std::string> seen;
    for (const auto& dep : stage.depends_on) {
      const std::string key = source.prefix + ".depends_on";
      if (dep == stage.name) {
        Error(dep_node(i, dep), key, "stage \"" + dep + "\" depends on itself");
        edges_ok = false;
      } else if (!index.count(dep)) {
        std::string hint = common::DidYouMean(dep, names);
        Error(dep_node(i, dep), key,
              "no stage named \"" + dep + "\"" +
                  (!hint.empty() ? hint : names.empty() ? "; no stage has a valid name" : "; stages: " + common::QuotedList(names)));
        edges_ok = false;
      } else if (!seen.insert(dep).second) {
        Error(dep_node(i, dep), key, "\"" + dep + "\" is listed twice");
      } else if (stages[index.at(dep)].sweep.adaptive.adaptive()) {
        Error(dep_node(i, dep), key,
              "stage \"" + dep + "\" is an adaptive sweep (strategy = \"" + stages[index.at(dep)].sweep.adaptive.strategy +
                  "\"), whose jobs are only known as it runs; no stage can depend on it yet");
      }
    }
    if (!source.depends_on_valid) continue;  // already reported; `over` cannot be checked
    for (const auto& [over, node] : source.over) {
      if (std::find(stage.depends_on.begin(), stage.depends_on.end(), over) == stage.depends_on.end()) {
        Error(node, source.prefix + ".sweep.over",
              "\"" + over + "\" is not in depends_on; a stage can only fan out over stages it depends on");
      }
    }
  }
  if (!edges_ok || index.size() != stages.size()) return;

  // Cycle detection by depth-first search; report each cycle once, at the
  // dependency that closes it.
  std::vector<int> color(stages.size(), 0);  // 0 new, 1 on stack, 2 done
  std::vector<size_t> stack;
  std::function<void(size_t)> visit = [&](size_t s) {
    color[s] = 1;
    stack.push_back(s);
    for (const auto& dep : stages[s].depends_on) {
      size_t d = index[dep];
      if (color[d] == 1) {
        std::string cycle;
        auto start = std::find(stack.begin(), stack.end(), d);
        for (auto it = start; it != stack.end(); ++it) cycle += stages[*it].name + " -> ";
        cycle += stages[d].name;
        Error(dep_node(s, dep), stage_sources_[s].prefix + ".depends_on",
              "dependency cycle: " + cycle);
      } else if (color[d] == 0) {
        visit(d);
      }
    }
    stack.pop_back();
    color[s] = 2;
  };
  for (size_t i = 0; i < stages.size(); ++i) {
    if (color[i] == 0) visit(i);
  }
  if (!errors_.empty()) return;

  // Topological order, ties broken by file order.
  std::vector<Stage> ordered;
  std::vector<bool> placed(stages.size(), false);
  while (ordered.size() < stages.size()) {
    for (size_t i = 0; i < stages.size(); ++i) {
      if (placed[i]) continue;
      bool ready = std::all_of(stages[i].depends_on.begin(), stages[i].depends_on.end(),
                               [&](const std::string& d) { return placed[index[d]]; });
      if (ready) {
        placed[i] = true;
        ordered.push_back(stages[i]);
        break;
      }
    }
  }
  stages = std::move(ordered);
}

void Loader::CheckAnalyses(const MValue& analyses, ExperimentSpec& spec) {
  if (analyses.type != MValue::Type::kTableArray) {
    Error(analyses.node, "analysis", "expected [[analysis]] tables (an array of tables)");
    return;
  }
  const std::vector<std::string> kMethods = {"classical", "ppi", "ppi++", "stratppi", "bayes-ppi", "ltt", "clm",
                                            "pareto-testing", "curves"};
  std::vector<std::string> stage_names;
  for (const auto& s : spec.stages) stage_names.push_back(s.name);
  std::set<std::string> names;
  for (size_t i = 0; i < analyses.items.size(); ++i) {
    const MValue& item = analyses.items[i];
    std::string prefix = "analysis[" + std::to_string(i) + "]";
    if (auto name = StageNameOf(item); name && common::IsSafeName(*name)) prefix = "analysis." + *name;
    json fields = CheckTable(&item, AnalysisSchema(), prefix, {}, item.node);
    AnalysisSpec a;
    a.location = Loc(item.node);
    a.parameters = fields;
    auto str = [&](const char* key) { return fields.contains(key) ? fields[key].get<std::string>() : std::string(); };
    a.name = str("name");
    a.stage = str("stage");
    a.table = str("table");
    a.label = str("label");
    a.prediction = str("prediction");
    a.strata = str("strata");
    a.config = str("config");
    a.loss = str("loss");
    if (fields.contains("delta")) a.delta = fields["delta"].get<double>();
    if (fields.contains("bound")) a.bound = fields["bound"].get<std::string>();
    if (fields.contains("procedure")) a.procedure = fields["procedure"].get<std::string>();
    if (fields.contains("alpha")) a.alpha = fields["alpha"].get<double>();
    if (fields.contains("lambda")) a.lambda = fields["lambda"].get<double>();
    if (fields.contains("clt_free")) a.clt_free = fields["clt_free"].get<bool>();
    if (fields.contains("bins")) a.bins = fields["bins"].get<int64_t>();
    if (fields.contains("target_width")) a.target_width = fields["target_width"].get<double>();
    if (fields.contains("seed")) a.seed = fields["seed"].get<int64_t>();
    if (fields.contains("epsilons")) a.epsilons = fields["epsilons"].get<std::vector<double>>();
    for (size_t e = 0; e < a.epsilons.size(); ++e) {
      if (!(a.epsilons[e] > 0 && a.epsilons[e] < 1)) {
        const toml::array* arr = item.Get("epsilons")->node->as_array();
        Error(arr && e < arr->size() ? arr->get(e) : item.node, prefix + ".epsilons", "every epsilon must be in (0, 1)");
      }
    }
    if (fields.contains("trials")) a.trials = fields["trials"].get<int64_t>();
    if (fields.contains("calibration")) a.calibration = fields["calibration"].get<double>();
    if (fields.contains("grid_points")) a.grid_points = fields["grid_points"].get<int64_t>();
    if (fields.contains("components")) a.components = fields["components"].get<std::string>();
    if (fields.contains("separator")) a.separator = fields["separator"].get<std::string>();
    a.metric = str("metric");
    if (fields.contains("by")) a.by = fields["by"].get<std::vector<std::string>>();
    a.x = str("x");
    a.x_metric = str("x_metric");
    if (!a.x.empty() && !a.x_metric.empty()) {
      ErrorAt(KeyLoc(*item.Get("x_metric")), prefix + ".x_metric", "curves take `x` or `x_metric`, not both");
    }
    if (!a.name.empty() && !names.insert(a.name).second) {
      Error(item.Get("name")->node, prefix + ".name", "duplicate analysis name \"" + a.name + "\"");
    }
    if (fields.contains("methods")) {
      const toml::array* arr = item.Get("methods")->node->as_array();
      for (size_t m = 0; m < arr->size(); ++m) {
        const std::string method = arr->get(m)->value<std::string>().value_or("");
        if (std::find(kMethods.begin(), kMethods.end(), method) == kMethods.end()) {
          std::string hint = common::DidYouMean(method, kMethods);
          Error(arr->get(m), prefix + ".methods",
                "unknown method \"" + method + "\"" + (hint.empty() ? "; expected some of " + common::QuotedList(kMethods) : hint));
        } else {
          a.methods.push_back(method);
        }
      }
      if (std::find(a.methods.begin(), a.methods.end(), "stratppi") != a.methods.end() && a.strata.empty() &&
          !item.Get("strata")) {
        Error(item.Get("methods")->node, prefix + ".methods", "stratppi needs a `strata` column");
      }
      // Which keys each family needs, and which it does not take.
      auto has = [&](const char* m) { return std::find(a.methods.begin(), a.methods.end(), m) != a.methods.end(); };
      const std::string family = has("ltt") ? "ltt" : has("clm") ? "clm" : has("pareto-testing") ? "pareto-testing"
                                 : has("curves") ? "curves" : "mean";
      const std::vector<std::string> mean_keys = {"label", "prediction", "strata", "lambda", "clt_free", "bins", "target_width"};
      const std::vector<std::string> ltt_keys = {"config", "loss", "bound", "procedure"};
      const std::vector<std::string> clm_keys = {"epsilons", "trials", "calibration", "grid_points", "components", "separator"};
      if (family != "mean" && a.methods.size() > 1) {
        Error(item.Get("methods")->node, prefix + ".methods",
              family + " runs alone: put the other methods in another [[analysis]]");
      } else if (a.methods.size() == arr->size()) {
        std::vector<std::string> needed, foreign;
        auto append = [](std::vector<std::string>& to, const std::vector<std::string>& keys) {
          to.insert(to.end(), keys.begin(), keys.end());
        };
        if (family != "curves") {
          needed.push_back("table");
          foreign.insert(foreign.end(), {"metric", "by", "x", "x_metric"});
        }
        if (family == "curves") {
          needed = {"metric"};
          append(foreign, mean_keys);
          append(foreign, ltt_keys);
          append(foreign, clm_keys);
          foreign.insert(foreign.end(), {"table", "delta"});
        } else if (family == "ltt") {
          needed.insert(needed.end(), {"config", "loss"});
          append(foreign, mean_keys);
          append(foreign, clm_keys);
        } else if (family == "clm") {
          append(foreign, mean_keys);
          append(foreign, ltt_keys);
          foreign.push_back("alpha");
        } else if (family == "pareto-testing") {
          append(foreign, mean_keys);
          foreign.insert(foreign.end(), {"config", "loss", "procedure", "epsilons", "grid_points", "components", "separator"});
        } else {
          needed.insert(needed.end(), {"label", "prediction"});
          append(foreign, ltt_keys);
          append(foreign, clm_keys);
          foreign.push_back("delta");
        }
        for (const auto& key : needed) {
          if (!item.Get(key)) Error(item.node, prefix + "." + key, "missing required key");
        }
        for (const auto& key : foreign) {
          if (const MValue* v = item.Get(key)) {
            ErrorAt(KeyLoc(*v), prefix + "." + key,
                    "does not apply to " + (family == "mean" ? std::string("mean estimators") : family) +
                        " (methods = " + common::QuotedList(a.methods) + ")");
          }
        }
      }
    }
    if (!a.stage.empty() && !spec.FindStage(a.stage)) {
      std::string hint = common::DidYouMean(a.stage, stage_names);
      Error(item.Get("stage")->node, prefix + ".stage",
            "no stage named \"" + a.stage + "\"" + (hint.empty() ? "; stages: " + common::QuotedList(stage_names) : hint));
    }
    spec.analyses.push_back(std::move(a));
  }
}

void Loader::CheckContinual(const MValue& table, ExperimentSpec& spec) {
  const workers::JobKind* lm = kinds_.Find("lm.train");
  if (!lm) {
    Error(table.node, "continual", "this build has no lm.train kind, which a [continual] study trains with");
    return;
  }
  ContinualSpec c;
  c.location = Loc(table.node);
  json fields = CheckTable(&table, ContinualSchema(), "continual", {"base", "finetune", "resources", "sequence"}, table.node);
  if (fields.contains("learners")) {
    const std::vector<std::string> known = {"independent", "sequential", "selective", "oracle"};
    const toml::array* arr = table.Get("learners") ? table.Get("learners")->node->as_array() : nullptr;
    std::set<std::string> seen;
    size_t i = 0;
    for (const auto& l : fields["learners"].get<std::vector<std::string>>()) {
      const toml::node* at = arr && i < arr->size() ? arr->get(i) : table.node;
      ++i;
      if (std::find(known.begin(), known.end(), l) == known.end()) {
        std::string hint = common::DidYouMean(l, known);
        Error(at, "continual.learners", "unknown learner \"" + l + "\"" + (hint.empty() ? "; expected some of " + common::QuotedList(known) : hint));
      } else if (!seen.insert(l).second) {
        Error(at, "continual.learners", "learner \"" + l + "\" is listed twice");
      } else {
        c.learners.push_back(l);
      }
    }
  }
  if (fields.contains("learners") && std::find(c.learners.begin(), c.learners.end(), "independent") == c.learners.end()) {
    Error(table.Get("learners") ? table.Get("learners")->node : table.node, "continual.learners",
          "include \"independent\": transfer is measured against it");
  }
  if (fields.contains("seeds")) c.seeds = fields["seeds"].get<int64_t>();
  if (fields.contains("selection")) c.selection = fields["selection"].get<std::string>();
  if (fields.contains("probe_steps")) c.probe_steps = fields["probe_steps"].get<int64_t>();
  if (fields.contains("rule")) c.rule = fields["rule"].get<std::string>();
  if (fields.contains("pool")) c.pool = fields["pool"].get<std::string>();
  const int64_t source_examples = fields.value("source_examples", int64_t{0});
  const int64_t target_examples = fields.value("target_examples", int64_t{32});
  const int64_t source_steps = fields.value("source_steps", int64_t{0});

  auto check_kind = [&](const json& config, const MValue* where, const std::string& prefix) {
    if (!lm->check) return;
    for (const auto& problem : lm->check(config)) {
      const MValue* at = where ? where->Get(problem.key) : nullptr;
      Error(at ? at->node : (where ? where->node : table.node), prefix + "." + problem.key, problem.message);
    }
  };
  const MValue* base = table.Get("base");
  if (base && !RequireTable(base, "continual.base")) base = nullptr;
  const size_t errors_before = errors_.size();
  c.base = CheckTable(base, lm->config, "continual.base", {}, table.node);
  c.base["save_model"] = true;
  if (errors_.size() == errors_before) check_kind(c.base, base, "continual.base");

  // Fine-tunes: their own keys; the model keys are the base's (a checkpoint
  // only loads into the same architecture).
  const std::vector<std::string> model_keys = {"d_model", "layers", "heads", "max_len", "tied_embeddings"};
  const std::vector<std::string> fixed_keys = {"init", "save_model", "data", "window"};
  const MValue* finetune = table.Get("finetune");
  if (finetune && !RequireTable(finetune, "continual.finetune")) finetune = nullptr;
  json ft = CheckTable(finetune, lm->config, "continual.finetune", {}, table.node);
  if (finetune) {
    if (const MValue* v = finetune->Get("train_examples")) {
      ErrorAt(KeyLoc(*v), "continual.finetune.train_examples",
              "set by role: use [continual] source_examples / target_examples, or train_examples in a task table");
    }
  }
  if (finetune) {
    for (const auto& key : model_keys) {
      if (const MValue* v = finetune->Get(key)) {
        ErrorAt(KeyLoc(*v), "continual.finetune." + key, "model keys come from [continual.base]: fine-tunes load its checkpoint");
      }
    }
    for (const auto& key : fixed_keys) {
      if (const MValue* v = finetune->Get(key)) {
        ErrorAt(KeyLoc(*v), "continual.finetune." + key, "set by the study (fine-tunes start from the chosen checkpoint)");
      }
    }
  }
  for (const auto& key : model_keys) {
    if (c.base.contains(key)) ft[key] = c.base[key];
  }
  ft["init"] = "upstream";
  ft["save_model"] = true;

  c.resources = CheckResources(table, "continual");

  // A task: task keys (defaults: the finetune table's), role, and optional
  // train_examples / steps of its own.
  Schema task_schema("continual.sequence.tasks", "One task of a sequence.");
  task_schema.Enum("role", {"source", "target"}).Default("target")
      .Doc("source: many training examples (source_examples); target: few (target_examples).");
  workers::DeclareTaskKeys(task_schema);
  for (const char* key : {"train_examples", "steps"}) {
    if (const KeySpec* k = lm->config.Find(key)) {
      KeySpec& copy = task_schema.Add(k->name, k->type);
      copy = *k;
    }
  }
  const MValue* sequences = table.Get("sequence");
  if (!sequences) {
    Error(table.node, "continual.sequence", "missing [[continual.sequence]] tables: a study needs at least one sequence");
  } else if (sequences->type != MValue::Type::kTableArray) {
    Error(sequences->node, "continual.sequence", "expected [[continual.sequence]] tables (an array of tables)");
  } else {
    std::set<std::string> names;
    for (size_t i = 0; i < sequences->items.size(); ++i) {
      const MValue& item = sequences->items[i];
      std::string prefix = "continual.sequence[" + std::to_string(i) + "]";
      if (auto name = StageNameOf(item); name && common::IsSafeName(*name)) prefix = "continual.sequence." + *name;
      json sf = CheckTable(&item, ContinualSequenceSchema(), prefix, {"tasks"}, item.node);
      ContinualSequence q;
      q.location = Loc(item.node);
      if (sf.contains("name")) q.name = sf["name"].get<std::string>();
      if (sf.contains("regime")) q.regime = sf["regime"].get<std::string>();
      if (!q.name.empty() && !names.insert(q.name).second) {
        Error(item.Get("name")->node, prefix + ".name", "duplicate sequence name \"" + q.name + "\"");
      }
      const MValue* tasks = item.Get("tasks");
      if (!tasks) {
        Error(item.node, prefix + ".tasks", "missing required key (a list of task tables, e.g. [{ rule = \"parity\" }])");
      } else if (tasks->type != MValue::Type::kTableArray) {
        Error(tasks->node, prefix + ".tasks", "expected a list of task tables, e.g. [{ rule = \"parity\", role = \"source\" }]");
      } else if (tasks->items.size() < 2) {
        Error(tasks->node, prefix + ".tasks", "a sequence needs at least 2 tasks");
      } else {
        for (size_t t = 0; t < tasks->items.size(); ++t) {
          const MValue& task = tasks->items[t];
          const std::string tprefix = prefix + ".tasks[" + std::to_string(t) + "]";
          const size_t before = errors_.size();
          json tf = CheckTable(&task, task_schema, tprefix, {}, task.node);
          ContinualTask ct;
          ct.location = Loc(task.node);
          ct.role = tf.value("role", std::string("target"));
          ct.config = ft;
          for (const auto& [key, value] : tf.items()) {
            if (key == "role" || !task.Get(key)) continue;  // unwritten keys inherit the finetune table's
            ct.config[key] = value;
          }
          if (!task.Get("train_examples")) ct.config["train_examples"] = ct.role == "source" ? source_examples : target_examples;
          if (!task.Get("steps") && ct.role == "source" && source_steps > 0) ct.config["steps"] = source_steps;
          if (errors_.size() != before) continue;
          auto parsed = workers::TaskSpecFromConfig(ct.config);
          if (!parsed.ok()) {
            Error(task.node, tprefix, parsed.status().message());
            continue;
          }
          check_kind(ct.config, &task, tprefix);
          // Every task runs on the base's architecture: its examples must fit.
          if (auto made = workers::SyntheticTask::Make(*parsed); made.ok() && c.base.contains("max_len") &&
              (*made)->MaxTokens() + 1 > c.base["max_len"].get<int64_t>()) {
            Error(task.node, tprefix,
                  "examples of this task need " + std::to_string((*made)->MaxTokens() + 1) +
                      " positions but [continual.base] has max_len = " + std::to_string(c.base["max_len"].get<int64_t>()));
            continue;
          }
          q.tasks.push_back(std::move(ct));
        }
      }
      c.sequences.push_back(std::move(q));
    }
  }
  spec.continual = std::move(c);
}

LoadResult Loader::Load(const std::string& path, const std::optional<std::string>& text) {
  root_path_ = path;
  std::error_code ec;
  std::string identity = fs::weakly_canonical(path, ec).string();
  if (ec) identity = path;
  auto merged = LoadFile(path, text, {identity}, nullptr);
  LoadResult result;
  // Without all of its bases the merged document is incomplete: checking it
  // would only add misleading "missing key" errors.
  if (!merged || base_failed_) {
    result.errors = std::move(errors_);
    return result;
  }
  const MValue& root = *merged;

  ExperimentSpec spec;
  spec.path = path;
  spec.files = files_;
  for (const auto& [key, value] : root.entries) {
    if (key == "experiment" || key == "stage" || key == "analysis" || key == "continual" || key == "slurm") continue;
    ErrorAt(KeyLoc(value), key,
            UnknownKeyMessage(key, {"experiment", "stage", "analysis", "continual", "slurm", "extends"}));
  }

  const MValue* experiment = root.Get("experiment");
  if (!experiment) {
    ErrorAt({path, 1, 1}, "experiment", "missing [experiment] table (it needs at least `name`)");
  } else if (RequireTable(experiment, "experiment")) {
    json e = CheckTable(experiment, ExperimentSchema(), "experiment", {}, root.node);
    if (e.contains("name")) spec.name = e["name"].get<std::string>();
    if (e.contains("description")) spec.description = e["description"].get<std::string>();
    if (e.contains("seed")) spec.seed = e["seed"].get<int64_t>();
    if (e.contains("output")) {
      spec.output = e["output"].get<std::string>();
      if (!spec.output.empty() && spec.output[0] == '~') {
        Error(experiment->Get("output")->node, "experiment.output", "`~` is not expanded; write the full path");
      }
    } else if (!spec.name.empty()) {
      spec.output = "runs/" + spec.name;
    }
  }

  const MValue* stages = root.Get("stage");
  const MValue* continual = root.Get("continual");
  if (!stages && !continual) {
    ErrorAt({path, 1, 1}, "stage", "no [[stage]] tables: an experiment needs at least one stage (or a [continual] study)");
  } else if (!stages) {
  } else if (stages->type != MValue::Type::kTableArray) {
    Error(stages->node, "stage", "expected [[stage]] tables (an array of tables)");
  } else {
    for (size_t i = 0; i < stages->items.size(); ++i) {
      Stage stage;
      CheckStage(stages->items[i], i, stage);
      spec.stages.push_back(std::move(stage));
    }
    CheckDag(spec.stages);
  }
  if (continual && RequireTable(continual, "continual")) CheckContinual(*continual, spec);
  if (const MValue* analyses = root.Get("analysis")) CheckAnalyses(*analyses, spec);
  if (const MValue* slurm = root.Get("slurm"); slurm && RequireTable(slurm, "slurm")) CheckSlurm(*slurm, spec.slurm);

  // Errors in file order, each once.
  std::stable_sort(errors_.begin(), errors_.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.where.file, a.where.line, a.where.column) < std::tie(b.where.file, b.where.line, b.where.column);
  });
  errors_.erase(std::unique(errors_.begin(), errors_.end(),
                            [](const Diagnostic& a, const Diagnostic& b) { return a.ToString() == b.ToString(); }),
                errors_.end());
  result.errors = std::move(errors_);
  if (!result.errors.empty()) return result;

  std::ostringstream os;
  os << toml::toml_formatter(ToToml(root));
  spec.canonical_text = os.str() + "\n";
  spec.spec_hash = common::Hash128Hex(spec.canonical_text);
  result.spec = std::move(spec);
  return result;
}

}  // namespace

LoadResult LoadExperiment(const std::string& path, const workers::KindRegistry& kinds) {
  return Loader(kinds).Load(path, std::nullopt);
}

LoadResult LoadExperimentFromString(const std::string& text, const std::string& path,
                                    const workers::KindRegistry& kinds) {
  return Loader(kinds).Load(path, text);
}

void Loader::CheckSlurm(const MValue& table, SlurmSpec& slurm) {
  json s = CheckTable(&table, SlurmSchema(), "slurm", {}, nullptr);
  slurm.present = true;
  slurm.location = Loc(table.node);
  auto integer = [&](const char* key, std::optional<int64_t>& into) {
    if (s.contains(key)) into = s[key].get<int64_t>();
  };
  integer("nodes", slurm.nodes);
  integer("ntasks_per_node", slurm.ntasks_per_node);
  integer("gpus_per_node", slurm.gpus_per_node);
  integer("cpus_per_task", slurm.cpus_per_task);
  integer("max_requeues", slurm.max_requeues);
  integer("array", slurm.array);
  integer("time", slurm.time_s);
  integer("grace", slurm.grace_s);
  integer("mem_per_cpu", slurm.mem_per_cpu_bytes);
  // Names go into #SBATCH lines: quoted there, but a line cannot hold a newline.
  auto text = [&](const char* key, std::optional<std::string>& into) {
    if (!s.contains(key)) return;
    const std::string v = s[key].get<std::string>();
    const MValue* node = table.Get(key);
    if (v.empty()) {
      Error(node->node, std::string("slurm.") + key, "must not be empty");
      return;
    }
    if (std::any_of(v.begin(), v.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
      Error(node->node, std::string("slurm.") + key,
            "control characters (newlines, tabs) cannot go into an #SBATCH line");
      return;
    }
    into = v;
  };
  text("partition", slurm.partition);
  text("account", slurm.account);
  text("qos", slurm.qos);
  text("job_name", slurm.job_name);
  if (slurm.time_s && slurm.grace_s && *slurm.grace_s >= *slurm.time_s) {
    Error(table.Get("grace")->node, "slurm.grace",
          std::to_string(*slurm.grace_s) + " s is not shorter than slurm.time (" + std::to_string(*slurm.time_s) +
              " s): the warning would come before the job starts");
  }
}

std::string ExplainSpec() {
  std::string out;
  out += "Top level: `extends` (a file or list of files to merge this one over), [experiment], [[stage]], [[analysis]], [continual], [slurm].\n\n";
  out += ExperimentSchema().Explain("experiment") + "\n";
  out += StageSchema().Explain("[stage]") + "\n";
  out += "[stage.config]  the kind's own keys: `shammie validate --explain KIND`\n\n";
  out += ResourcesSchema().Explain("stage.resources") + "\n";
  out += RetrySchema().Explain("stage.retry") + "\n";
  out += SweepSchema().Explain("stage.sweep") + "\n";
  out += RandomSweepSchema().Explain("stage.sweep.random") + "\n";
  out += AnalysisSchema().Explain("[analysis]") + "\n";
  out += ContinualSchema().Explain("continual") + "\n";
  out += ContinualSequenceSchema().Explain("[continual.sequence]") +
         "  tasks: a list of task tables: role (source | target), train_examples, steps and the task keys of lm.train "
         "(unwritten keys come from [continual.finetune]).\n";
  out += SlurmSchema().Explain("slurm");
  return out;
}

}  // namespace shammie::orchestrator
