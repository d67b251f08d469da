#include "workers/tasks.hpp"

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "common/hash.hpp"
#include "common/schema.hpp"
#include "workers/text.hpp"

namespace shammie::workers {

namespace {

// Token 0..2 are PAD, BOS, EOS; then these characters in order. Append
// only: a model's vocabulary size (and a checkpoint's shapes) follow it.
constexpr std::string_view kChars = " 0123456789abcdefghijklmnopqrstuvwxyz+-*=>|,.()";

int64_t Mod(int64_t x, int64_t p) { return ((x % p) + p) % p; }

bool IsStringFamily(const std::string& f) {
  return f == "copy" || f == "reverse" || f == "sort" || f == "rotate" || f == "distinct";
}

// A decimal number without sign or leading zeros, below `bound`.
std::optional<int64_t> ParseNumber(std::string_view text, int64_t bound) {
  if (text.empty() || text.size() > 18 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v >= bound) return std::nullopt;
  return v;
}

// `length` letters from the first `alphabet`, then `separator`.
std::optional<std::string> ParseLetters(std::string_view prompt, const TaskSpec& spec, char separator) {
  if (prompt.size() != static_cast<size_t>(spec.length) + 1 || prompt.back() != separator) return std::nullopt;
  std::string s(prompt.substr(0, prompt.size() - 1));
  for (char c : s) {
    if (c < 'a' || c >= 'a' + spec.alphabet) return std::nullopt;
  }
  return s;
}

common::Status BadPrompt(const TaskSpec& spec, const std::string& prompt, std::string_view form) {
  return common::InvalidArgument(spec.family + ": prompt \"" + prompt + "\" is not of the form " + std::string(form));
}

std::string RandomLetters(const TaskSpec& spec, common::SplitMix64& rng) {
  std::string s;
  for (int64_t i = 0; i < spec.length; ++i) s += static_cast<char>('a' + rng.NextInt(0, spec.alphabet - 1));
  return s;
}

// The label map of a variant over k classes: identity for share and ignore
// (ignore changes the rule instead), c -> c + 1 for flip, and for permute a
// permutation without fixed points drawn from variant_seed.
std::vector<int> VariantMap(const TaskSpec& spec, int k) {
  std::vector<int> map(static_cast<size_t>(k));
  for (int c = 0; c < k; ++c) map[static_cast<size_t>(c)] = c;
  if (spec.variant == "flip") {
    for (int c = 0; c < k; ++c) map[static_cast<size_t>(c)] = (c + 1) % k;
  } else if (spec.variant == "permute") {
    common::SplitMix64 rng(common::DeriveSeed(static_cast<uint64_t>(spec.variant_seed), "permute/" + spec.family,
                                              static_cast<uint64_t>(k)));
    for (;;) {  // rejection: about e tries for any k >= 2
      for (int i = k - 1; i > 0; --i) {
        std::swap(map[static_cast<size_t>(i)], map[static_cast<size_t>(rng.NextInt(0, i))]);
      }
      bool fixed = false;
      for (int c = 0; c < k; ++c) fixed = fixed || map[static_cast<size_t>(c)] == c;
      if (!fixed) break;
    }
  }
  return map;
}

class ModAdd final : public SyntheticTask {
 public:
  explicit ModAdd(TaskSpec spec)
      : SyntheticTask(std::move(spec)), map_(VariantMap(this->spec(), static_cast<int>(this->spec().modulus))) {}
  int MaxTokens() const override {
    const int digits = static_cast<int>(std::to_string(spec().modulus - 1).size());
    return 2 * digits + 2 + digits + 1;
  }
  int Classes() const override { return static_cast<int>(spec().modulus); }
  std::vector<Example> Enumerate(Split split, size_t limit) const override {
    std::vector<Example> out;
    const int64_t p = spec().modulus;
    if (static_cast<size_t>(p * p) > limit) return out;
    for (int64_t a = 0; a < p; ++a) {
      for (int64_t b = 0; b < p; ++b) {
        auto [prompt, answer] = Text(a, b);
        if (SplitOf(prompt) == split) out.push_back(MakeExample(prompt, answer));
      }
    }
    return out;
  }
  common::Result<std::string> AnswerFor(const std::string& prompt) const override {
    const size_t plus = prompt.find('+');
    if (plus == std::string::npos || prompt.empty() || prompt.back() != '=') return BadPrompt(spec(), prompt, "a+b=");
    auto a = ParseNumber(std::string_view(prompt).substr(0, plus), spec().modulus);
    auto b = ParseNumber(std::string_view(prompt).substr(plus + 1, prompt.size() - plus - 2), spec().modulus);
    if (!a || !b) return BadPrompt(spec(), prompt, "a+b= with a, b < modulus");
    return Text(*a, *b).second;
  }

 protected:
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    const int64_t a = rng.NextInt(0, spec().modulus - 1), b = rng.NextInt(0, spec().modulus - 1);
    return Text(a, b);
  }

 private:
  std::pair<std::string, std::string> Text(int64_t a, int64_t b) const {
    const int64_t p = spec().modulus;
    const int64_t plain = Mod(spec().variant == "ignore" ? a - b + spec().shift : a + b + spec().shift, p);
    const int c = map_[static_cast<size_t>(plain)];
    return {std::to_string(a) + "+" + std::to_string(b) + "=", std::to_string(c)};
  }
  std::vector<int> map_;
};

class StringTask final : public SyntheticTask {
 public:
  explicit StringTask(TaskSpec spec) : SyntheticTask(std::move(spec)) {}
  int MaxTokens() const override { return 2 * static_cast<int>(spec().length) + 2; }
  std::vector<Example> Enumerate(Split, size_t) const override { return {}; }
  common::Result<std::string> AnswerFor(const std::string& prompt) const override {
    auto s = ParseLetters(prompt, spec(), '>');
    if (!s) return BadPrompt(spec(), prompt, "`length` letters of the alphabet, then '>'");
    return Transform(*s);
  }

 protected:
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    std::string s = RandomLetters(spec(), rng);
    return {s + ">", Transform(s)};
  }

 private:
  std::string Transform(std::string t) const {
    const std::string& f = spec().family;
    if (f == "reverse") {
      std::reverse(t.begin(), t.end());
    } else if (f == "sort") {
      std::sort(t.begin(), t.end());
    } else if (f == "distinct") {
      std::sort(t.begin(), t.end());
      t.erase(std::unique(t.begin(), t.end()), t.end());
    } else if (f == "rotate") {
      const auto k = static_cast<size_t>(Mod(spec().shift, spec().length));
      std::rotate(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(k), t.end());
    }
    return t;
  }
};

class Arith final : public SyntheticTask {
 public:
  static constexpr std::string_view kOps = "+-*";
  explicit Arith(TaskSpec spec) : SyntheticTask(std::move(spec)) {}

  int MaxTokens() const override {
    const auto d = static_cast<int>(std::to_string(spec().modulus - 1).size());
    const auto n = static_cast<int>(spec().operations);
    int total = (n + 1) * d + n + 1;                              // prompt, with '='
    for (int r = n - 1; r >= 1; --r) total += (r + 1) * d + r + 1;  // each written step and its '='
    return total + d + 1;                                         // final value, EOS
  }
  std::vector<Example> Enumerate(Split split, size_t limit) const override {
    const int64_t p = spec().modulus, n = spec().operations;
    size_t total = 1;
    for (int64_t i = 0; i <= n; ++i) {
      if (total > limit / static_cast<size_t>(p)) return {};
      total *= static_cast<size_t>(p);
    }
    for (int64_t i = 0; i < n; ++i) {
      if (total > limit / kOps.size()) return {};
      total *= kOps.size();
    }
    std::vector<Example> out;
    for (size_t index = 0; index < total; ++index) {
      size_t rest = index;
      std::vector<int64_t> nums(static_cast<size_t>(n + 1));
      std::string ops(static_cast<size_t>(n), '+');
      for (auto& x : nums) {
        x = static_cast<int64_t>(rest % static_cast<size_t>(p));
        rest /= static_cast<size_t>(p);
      }
      for (auto& o : ops) {
        o = kOps[rest % kOps.size()];
        rest /= kOps.size();
      }
      const std::string prompt = Render(nums, ops) + "=";
      if (SplitOf(prompt) == split) out.push_back(MakeExample(prompt, Solve(nums, ops)));
    }
    return out;
  }
  common::Result<std::string> AnswerFor(const std::string& prompt) const override {
    SHAMMIE_ASSIGN_OR_RETURN(auto chain, Parse(prompt));
    return Solve(chain.first, chain.second);
  }
  bool HasSteps() const override { return true; }
  Example WithSlips(const Example& e, double rate, common::SplitMix64& rng) const override {
    auto chain = Parse(e.prompt_text);
    SHAMMIE_CHECK_MSG(chain.ok(), "WithSlips: not an arith prompt");
    return MakeExample(e.prompt_text, Solve(chain->first, chain->second, rate, &rng));
  }
  std::string FinalAnswer(const std::string& answer_text) const override {
    const size_t eq = answer_text.rfind('=');
    return eq == std::string::npos ? answer_text : answer_text.substr(eq + 1);
  }

 protected:
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    std::vector<int64_t> nums(static_cast<size_t>(spec().operations + 1));
    std::string ops(static_cast<size_t>(spec().operations), '+');
    for (size_t i = 0; i < nums.size(); ++i) {
      nums[i] = rng.NextInt(0, spec().modulus - 1);
      if (i < ops.size()) ops[i] = kOps[static_cast<size_t>(rng.NextInt(0, 2))];
    }
    return {Render(nums, ops) + "=", Solve(nums, ops)};
  }

 private:
  static std::string Render(const std::vector<int64_t>& nums, const std::string& ops) {
    std::string s = std::to_string(nums[0]);
    for (size_t i = 0; i < ops.size(); ++i) s += ops[i] + std::to_string(nums[i + 1]);
    return s;
  }
  common::Result<std::pair<std::vector<int64_t>, std::string>> Parse(const std::string& prompt) const {
    static constexpr std::string_view kForm = "n0 op n1 ... op nk= (k = operations, op in + - *, numbers < modulus)";
    if (prompt.empty() || prompt.back() != '=') return BadPrompt(spec(), prompt, kForm);
    std::vector<int64_t> nums;
    std::string ops;
    size_t start = 0;
    for (size_t i = 0; i < prompt.size(); ++i) {
      const char c = prompt[i];
      if (c == '=' && i + 1 != prompt.size()) return BadPrompt(spec(), prompt, kForm);
      if (c == '=' || kOps.find(c) != std::string_view::npos) {
        auto x = ParseNumber(std::string_view(prompt).substr(start, i - start), spec().modulus);
        if (!x) return BadPrompt(spec(), prompt, kForm);
        nums.push_back(*x);
        if (c != '=') ops += c;
        start = i + 1;
      }
    }
    if (static_cast<int64_t>(ops.size()) != spec().operations || start != prompt.size()) {
      return BadPrompt(spec(), prompt, kForm);
    }
    return std::make_pair(std::move(nums), std::move(ops));
  }
  // One operation per step: the leftmost '*' while there is one, then the
  // leftmost '+' or '-'. Each step's expression, joined with '='. With
  // `slip` > 0, each step's new value is, with that probability, one of the
  // other p - 1 residues (uniformly), and later steps carry it on.
  std::string Solve(std::vector<int64_t> nums, std::string ops, double slip = 0,
                    common::SplitMix64* rng = nullptr) const {
    const int64_t p = spec().modulus;
    std::string out;
    while (!ops.empty()) {
      const size_t star = ops.find('*');
      const size_t i = star == std::string::npos ? 0 : star;
      const int64_t a = nums[i], b = nums[i + 1];
      nums[i] = Mod(ops[i] == '*' ? a * b : ops[i] == '+' ? a + b : a - b, p);
      if (slip > 0 && rng->NextDouble() < slip) nums[i] = (nums[i] + rng->NextInt(1, p - 1)) % p;
      nums.erase(nums.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      ops.erase(i, 1);
      if (!out.empty()) out += '=';
      out += Render(nums, ops);
    }
    return out;
  }
};

struct RuleInfo {
  int classes;
  int features;  // letters the rule reads; "ignore" reads the next ones
};

RuleInfo InfoOf(const std::string& rule) {
  if (rule == "parity") return {2, 1};
  if (rule == "contains") return {2, 2};
  if (rule == "majority") return {4, 4};
  return {2, 2};  // dyck
}

class Grammar final : public SyntheticTask {
 public:
  explicit Grammar(TaskSpec spec)
      : SyntheticTask(std::move(spec)),
        info_(InfoOf(this->spec().rule)),
        map_(VariantMap(this->spec(), info_.classes)) {}
  int MaxTokens() const override { return static_cast<int>(spec().length) + 3; }
  int Classes() const override { return info_.classes; }
  std::vector<Example> Enumerate(Split, size_t) const override { return {}; }
  common::Result<std::string> AnswerFor(const std::string& prompt) const override {
    auto s = ParseLetters(prompt, spec(), '|');
    if (!s) return BadPrompt(spec(), prompt, "`length` letters of the alphabet, then '|'");
    return std::to_string(Label(*s));
  }

 protected:
  // Class-balanced: a label uniformly, then strings until one has it.
  // ValidateTaskSpec() refuses options under which a label cannot occur.
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    const int want = static_cast<int>(rng.NextInt(0, info_.classes - 1));
    for (;;) {
      std::string s = RandomLetters(spec(), rng);
      if (Label(s) == want) return {s + "|", std::to_string(want)};
    }
  }

 private:
  int Label(const std::string& s) const {
    if (spec().variant == "ignore") return RuleLabel(s, info_.features);
    return map_[static_cast<size_t>(RuleLabel(s, 0))];
  }
  // The plain rule on the letters 'a' + offset, ...
  int RuleLabel(const std::string& s, int offset) const {
    const char a = static_cast<char>('a' + offset);
    const std::string& rule = spec().rule;
    if (rule == "parity") return static_cast<int>(std::count(s.begin(), s.end(), a) % 2);
    if (rule == "contains") return s.find(std::string{a, static_cast<char>(a + 1)}) != std::string::npos ? 1 : 0;
    if (rule == "majority") {
      int best = 0;
      std::array<int64_t, 4> count{};
      for (int c = 0; c < 4; ++c) count[static_cast<size_t>(c)] = std::count(s.begin(), s.end(), a + c);
      for (int c = 1; c < 4; ++c) {
        if (count[static_cast<size_t>(c)] > count[static_cast<size_t>(best)]) best = c;
      }
      return best;
    }
    int depth = 0;  // dyck
    for (char c : s) {
      if (c == a) ++depth;
      if (c == a + 1 && --depth < 0) return 0;
    }
    return depth == 0 ? 1 : 0;
  }
  RuleInfo info_;
  std::vector<int> map_;
};

template <typename T>
std::string Join(const std::vector<T>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

bool Contains(const std::vector<std::string>& items, const std::string& x) {
  return std::find(items.begin(), items.end(), x) != items.end();
}

}  // namespace

int Tokenizer::VocabSize() { return 3 + static_cast<int>(kChars.size()); }

common::Result<std::vector<int>> Tokenizer::Encode(const std::string& text) {
  std::vector<int> out;
  out.reserve(text.size());
  for (char c : text) {
    const size_t i = kChars.find(c);
    if (i == std::string_view::npos) {
      return common::InvalidArgument(std::string("character '") + c + "' is not in the task vocabulary");
    }
    out.push_back(3 + static_cast<int>(i));
  }
  return out;
}

std::string Tokenizer::Decode(const std::vector<int>& tokens) {
  std::string out;
  for (int t : tokens) {
    if (t >= 3 && t < VocabSize()) out += kChars[static_cast<size_t>(t - 3)];
  }
  return out;
}

namespace {

// The `text` family: English prose for character-level language modelling,
// the GNU info manuals of Debian's essential packages (the same files on
// every Debian 12 machine). Each info node is lowercased and mapped onto the
// task vocabulary, then cut at word boundaries into chunks of at most
// kTextChunk characters; a chunk is one example (its text the prompt, the
// answer empty), and its hash picks its split as for every family.
constexpr size_t kTextChunk = 2048;
constexpr std::array<const char*, 9> kTextFiles = {
    "coreutils.info.gz", "find.info.gz", "find.info-1.gz", "find.info-2.gz", "grep.info.gz",
    "sed.info.gz",       "diffutils.info.gz", "gzip.info.gz", "find-maint.info.gz"};

struct TextCorpus {
  std::vector<std::string> chunks;
  size_t longest = 0;
};

}  // namespace

std::string NormalizeText(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  auto put = [&out](char c) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) return;
    out += c;
  };
  for (size_t i = 0; i < raw.size(); ++i) {
    const auto u = static_cast<unsigned char>(raw[i]);
    if (u >= 0x80) {  // a UTF-8 sequence (curly quotes, dashes): dropped whole
      while (i + 1 < raw.size() && (static_cast<unsigned char>(raw[i + 1]) & 0xC0) == 0x80) ++i;
      continue;
    }
    char c = static_cast<char>(u >= 'A' && u <= 'Z' ? u - 'A' + 'a' : u);
    switch (c) {
      case '\n': case '\t': case '\r': case '\f': case '\v': c = ' '; break;
      case ':': case ';': c = ','; break;
      case '!': case '?': c = '.'; break;
      case '[': case '{': case '<': c = '('; break;
      case ']': case '}': c = ')'; break;
      case '/': case '_': case '\\': c = '-'; break;
      default: break;
    }
    if (kChars.find(c) != std::string_view::npos) put(c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

namespace {

common::Result<std::string> ReadGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    return common::NotFound("text: cannot open " + path +
                            " (the task reads the GNU info manuals of Debian's essential packages)");
  }
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  const bool failed = n < 0;
  gzclose(f);
  if (failed) return common::DataLoss("text: " + path + " is not a readable gzip file");
  return out;
}

common::Result<const TextCorpus*> LoadTextCorpus() {
  static std::mutex mu;
  static std::unique_ptr<TextCorpus> cached;
  std::lock_guard<std::mutex> lock(mu);
  if (cached) return cached.get();
  auto corpus = std::make_unique<TextCorpus>();
  for (const char* name : kTextFiles) {
    SHAMMIE_ASSIGN_OR_RETURN(const std::string raw, ReadGzip(std::string("/usr/share/info/") + name));
    size_t at = 0;
    while (at < raw.size()) {  // info nodes are separated by the byte 0x1f
      size_t end = raw.find('\x1f', at);
      if (end == std::string::npos) end = raw.size();
      const std::string_view node(raw.data() + at, end - at);
      at = end + 1;
      if (node.find("Tag Table:") != std::string_view::npos || node.find("Indirect:") != std::string_view::npos) continue;
      const std::string text = NormalizeText(node);
      for (size_t from = 0; from < text.size();) {
        size_t to = std::min(text.size(), from + kTextChunk);
        if (to < text.size()) {
          const size_t space = text.rfind(' ', to);
          if (space != std::string::npos && space > from) to = space;
        }
        std::string chunk = text.substr(from, to - from);
        while (!chunk.empty() && chunk.front() == ' ') chunk.erase(0, 1);
        if (chunk.size() >= 64) {
          corpus->longest = std::max(corpus->longest, chunk.size());
          corpus->chunks.push_back(std::move(chunk));
        }
        from = to;
      }
    }
  }
  cached = std::move(corpus);
  return cached.get();
}

class Text final : public SyntheticTask {
 public:
  Text(TaskSpec spec, const TextCorpus& corpus) : SyntheticTask(std::move(spec)), corpus_(corpus) {}
  int MaxTokens() const override { return static_cast<int>(corpus_.longest) + 1; }
  std::vector<Example> Enumerate(Split, size_t) const override { return {}; }
  common::Result<std::string> AnswerFor(const std::string&) const override {
    return common::InvalidArgument("text: prose has no answers to grade (a language-modelling task)");
  }

 protected:
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    const auto n = static_cast<int64_t>(corpus_.chunks.size());
    return {corpus_.chunks[static_cast<size_t>(rng.NextInt(0, n - 1))], ""};
  }

 private:
  const TextCorpus& corpus_;
};

}  // namespace

const std::vector<std::string>& TaskFamilies() {
  static const std::vector<std::string> kFamilies = {"modadd", "copy", "reverse", "sort", "rotate",
                                                     "distinct", "arith", "grammar", "text"};
  return kFamilies;
}

const std::vector<std::string>& GrammarRules() {
  static const std::vector<std::string> kRules = {"parity", "contains", "majority", "dyck"};
  return kRules;
}

const std::vector<std::string>& TaskVariants() {
  static const std::vector<std::string> kVariants = {"share", "flip", "permute", "ignore"};
  return kVariants;
}

common::Status ValidateTaskSpec(const TaskSpec& spec) {
  const std::string& f = spec.family;
  if (!Contains(TaskFamilies(), f)) {
    return common::InvalidArgument("unknown task family \"" + f + "\"; families: " + Join(TaskFamilies()));
  }
  if (!Contains(TaskVariants(), spec.variant)) {
    return common::InvalidArgument("unknown task variant \"" + spec.variant + "\"; variants: " + Join(TaskVariants()));
  }
  if (spec.variant != "share" && f != "modadd" && f != "grammar") {
    return common::InvalidArgument(f + ": variant must be \"share\", not \"" + spec.variant +
                                   "\" (variants apply to modadd and grammar)");
  }
  if (spec.shift < -1000000000 || spec.shift > 1000000000) {
    return common::InvalidArgument(f + ": shift must be in [-1e9, 1e9], got " + std::to_string(spec.shift));
  }
  if (f == "modadd" || f == "arith") {
    if (spec.modulus < 2 || spec.modulus > 100000) {
      return common::InvalidArgument(f + ": modulus must be in [2, 100000]");
    }
  }
  if (f == "arith" && (spec.operations < 1 || spec.operations > 16)) {
    return common::InvalidArgument("arith: operations must be in [1, 16], got " + std::to_string(spec.operations));
  }
  if (IsStringFamily(f) || f == "grammar") {
    if (spec.length < 1 || spec.length > 64) return common::InvalidArgument(f + ": length must be in [1, 64]");
    if (spec.alphabet < 2 || spec.alphabet > 26) return common::InvalidArgument(f + ": alphabet must be in [2, 26]");
  }
  if (f == "grammar") {
    if (!Contains(GrammarRules(), spec.rule)) {
      return common::InvalidArgument("grammar: unknown rule \"" + spec.rule + "\"; rules: " + Join(GrammarRules()));
    }
    const RuleInfo info = InfoOf(spec.rule);
    const int64_t letters = info.features * (spec.variant == "ignore" ? 2 : 1);
    if (spec.alphabet < letters) {
      return common::InvalidArgument("grammar: rule " + spec.rule +
                                     (spec.variant == "ignore" ? " with variant ignore" : "") + " reads " +
                                     std::to_string(letters) + " letters; alphabet must be >= " +
                                     std::to_string(letters) + ", got " + std::to_string(spec.alphabet));
    }
    if (spec.rule == "contains" && spec.length < 2) {
      return common::InvalidArgument("grammar: rule contains needs length >= 2 (a pattern of two letters)");
    }
    if (spec.rule == "dyck" && spec.alphabet == 2 && spec.length % 2 != 0) {
      return common::InvalidArgument("grammar: rule dyck over two letters needs an even length (else no string is "
                                     "balanced); raise alphabet or use an even length");
    }
  }
  return common::Status::Ok();
}

void DeclareTaskKeys(common::Schema& schema) {
  const TaskSpec d;
  schema.Enum("task", TaskFamilies()).Default(d.family).Doc("Task family.");
  schema.Int("modulus").Default(d.modulus).Range(2, 100000).Doc("modadd, arith: the modulus p.");
  schema.Int("shift").Default(d.shift).Range(-1000, 1000)
      .Doc("modadd: added to every sum (a contradicting variant); rotate: positions.");
  schema.Int("length").Default(d.length).Range(1, 64).Doc("String tasks and grammar: string length.");
  schema.Int("alphabet").Default(d.alphabet).Range(2, 26).Doc("String tasks and grammar: letters used.");
  schema.Int("operations").Default(d.operations).Range(1, 16)
      .Doc("arith: operations per chain (+ - * mod p); the answer writes the expression after each one.");
  schema.Enum("rule", GrammarRules()).Default(d.rule)
      .Doc("grammar: the label rule: parity (of the a's), contains (\"ab\"), majority (of a-d), dyck (a/b balanced).");
  schema.Enum("variant", TaskVariants()).Default(d.variant)
      .Doc("modadd, grammar: relation to the plain rule: share it, flip (label + 1 mod k), permute (labels by a "
           "permutation without fixed points), ignore (an independent rule).");
  schema.Int("variant_seed").Default(d.variant_seed).Range(0, 1e15).Doc("permute: seeds the label permutation.");
}

common::Result<TaskSpec> TaskSpecFromConfig(const nlohmann::json& config) {
  if (!config.is_object()) {
    return common::InvalidArgument("task config must be a table, got " + common::JsonTypeName(config));
  }
  TaskSpec spec;
  auto text = [&](const char* key, std::string* out) -> common::Status {
    auto it = config.find(key);
    if (it == config.end()) return common::Status::Ok();
    if (!it->is_string()) {
      return common::InvalidArgument(std::string(key) + ": expected a string, got " + common::JsonTypeName(*it) +
                                     " " + common::ShortJson(*it));
    }
    *out = it->get<std::string>();
    return common::Status::Ok();
  };
  auto integer = [&](const char* key, int64_t* out) -> common::Status {
    auto it = config.find(key);
    if (it == config.end()) return common::Status::Ok();
    if (!it->is_number_integer()) {
      return common::InvalidArgument(std::string(key) + ": expected an integer, got " + common::JsonTypeName(*it) +
                                     " " + common::ShortJson(*it));
    }
    *out = it->get<int64_t>();
    return common::Status::Ok();
  };
  SHAMMIE_RETURN_IF_ERROR(text("task", &spec.family));
  SHAMMIE_RETURN_IF_ERROR(integer("modulus", &spec.modulus));
  SHAMMIE_RETURN_IF_ERROR(integer("shift", &spec.shift));
  SHAMMIE_RETURN_IF_ERROR(integer("length", &spec.length));
  SHAMMIE_RETURN_IF_ERROR(integer("alphabet", &spec.alphabet));
  SHAMMIE_RETURN_IF_ERROR(integer("operations", &spec.operations));
  SHAMMIE_RETURN_IF_ERROR(text("rule", &spec.rule));
  SHAMMIE_RETURN_IF_ERROR(text("variant", &spec.variant));
  SHAMMIE_RETURN_IF_ERROR(integer("variant_seed", &spec.variant_seed));
  SHAMMIE_RETURN_IF_ERROR(ValidateTaskSpec(spec));
  return spec;
}

Split SyntheticTask::SplitOf(const std::string& prompt) {
  const uint64_t h = common::Hash64(prompt) % 10;
  return h < 8 ? Split::kTrain : h == 8 ? Split::kValidation : Split::kTest;
}

Example SyntheticTask::MakeExample(const std::string& prompt, const std::string& answer) {
  Example e;
  e.prompt_text = prompt;
  e.answer_text = answer;
  e.prompt = *Tokenizer::Encode(prompt);
  e.answer = *Tokenizer::Encode(answer);
  e.answer.push_back(Tokenizer::kEos);
  return e;
}

Example SyntheticTask::Sample(Split split, common::SplitMix64& rng) const {
  for (;;) {
    auto [prompt, answer] = Draw(rng);
    if (SplitOf(prompt) == split) return MakeExample(prompt, answer);
  }
}

std::string SyntheticTask::GeneratedText(const std::vector<int>& generated) {
  auto eos = std::find(generated.begin(), generated.end(), Tokenizer::kEos);
  return Tokenizer::Decode(std::vector<int>(generated.begin(), eos));
}

bool SyntheticTask::ExactMatch(const Example& e, const std::vector<int>& generated) const {
  auto eos = std::find(generated.begin(), generated.end(), Tokenizer::kEos);
  if (eos == generated.end()) return false;
  return std::equal(generated.begin(), eos + 1, e.answer.begin(), e.answer.end());
}

bool SyntheticTask::Correct(const Example& e, const std::vector<int>& generated) const {
  return FinalAnswer(GeneratedText(generated)) == FinalAnswer(e.answer_text);
}

TaskAccuracy SyntheticTask::Grade(const std::vector<Example>& examples,
                                  const std::vector<std::vector<int>>& generated) const {
  SHAMMIE_CHECK_MSG(examples.size() == generated.size(), "Grade: one generation per example");
  TaskAccuracy a;
  a.examples = static_cast<int64_t>(examples.size());
  if (examples.empty()) return a;
  for (size_t i = 0; i < examples.size(); ++i) {
    a.exact_match += ExactMatch(examples[i], generated[i]) ? 1 : 0;
    a.final_answer += Correct(examples[i], generated[i]) ? 1 : 0;
  }
  a.exact_match /= static_cast<double>(a.examples);
  a.final_answer /= static_cast<double>(a.examples);
  return a;
}

common::Result<std::unique_ptr<SyntheticTask>> SyntheticTask::Make(const TaskSpec& spec) {
  SHAMMIE_RETURN_IF_ERROR(ValidateTaskSpec(spec));
  const std::string& f = spec.family;
  if (f == "modadd") return std::unique_ptr<SyntheticTask>(std::make_unique<ModAdd>(spec));
  if (f == "arith") return std::unique_ptr<SyntheticTask>(std::make_unique<Arith>(spec));
  if (f == "grammar") return std::unique_ptr<SyntheticTask>(std::make_unique<Grammar>(spec));
  if (f == "text") {
    SHAMMIE_ASSIGN_OR_RETURN(const TextCorpus* corpus, LoadTextCorpus());
    return std::unique_ptr<SyntheticTask>(std::make_unique<Text>(spec, *corpus));
  }
  return std::unique_ptr<SyntheticTask>(std::make_unique<StringTask>(spec));
}

}  // namespace shammie::workers
