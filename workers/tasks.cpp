#include "workers/tasks.hpp"

#include <algorithm>
#include <array>

#include "common/hash.hpp"

namespace shammie::workers {

namespace {

// Token 0..2 are PAD, BOS, EOS; then these characters in order.
constexpr std::string_view kChars = " 0123456789abcdefghijklmnopqrstuvwxyz+-*=>|,.()";

class ModAdd final : public SyntheticTask {
 public:
  explicit ModAdd(TaskSpec spec) : SyntheticTask(std::move(spec)) {}
  int MaxTokens() const override {
    const int digits = static_cast<int>(std::to_string(spec().modulus - 1).size());
    return 2 * digits + 2 + digits + 1;
  }
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

 protected:
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    const int64_t a = rng.NextInt(0, spec().modulus - 1), b = rng.NextInt(0, spec().modulus - 1);
    return Text(a, b);
  }

 private:
  std::pair<std::string, std::string> Text(int64_t a, int64_t b) const {
    const int64_t p = spec().modulus;
    const int64_t c = (((a + b + spec().shift) % p) + p) % p;
    return {std::to_string(a) + "+" + std::to_string(b) + "=", std::to_string(c)};
  }
};

class StringTask final : public SyntheticTask {
 public:
  explicit StringTask(TaskSpec spec) : SyntheticTask(std::move(spec)) {}
  int MaxTokens() const override { return 2 * static_cast<int>(spec().length) + 2; }
  std::vector<Example> Enumerate(Split, size_t) const override { return {}; }

 protected:
  std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const override {
    std::string s;
    for (int64_t i = 0; i < spec().length; ++i) {
      s += static_cast<char>('a' + rng.NextInt(0, spec().alphabet - 1));
    }
    std::string t = s;
    const std::string& f = spec().family;
    if (f == "reverse") {
      std::reverse(t.begin(), t.end());
    } else if (f == "sort") {
      std::sort(t.begin(), t.end());
    } else if (f == "rotate") {
      const auto k = static_cast<size_t>(((spec().shift % spec().length) + spec().length) % spec().length);
      std::rotate(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(k), t.end());
    }
    return {s + ">", t};
  }
};

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

common::Result<std::unique_ptr<SyntheticTask>> SyntheticTask::Make(const TaskSpec& spec) {
  if (spec.family == "modadd") {
    if (spec.modulus < 2 || spec.modulus > 100000) return common::InvalidArgument("modadd: modulus must be in [2, 100000]");
    return std::unique_ptr<SyntheticTask>(std::make_unique<ModAdd>(spec));
  }
  if (spec.family == "copy" || spec.family == "reverse" || spec.family == "sort" || spec.family == "rotate") {
    if (spec.length < 1 || spec.length > 64) return common::InvalidArgument(spec.family + ": length must be in [1, 64]");
    if (spec.alphabet < 2 || spec.alphabet > 26) return common::InvalidArgument(spec.family + ": alphabet must be in [2, 26]");
    return std::unique_ptr<SyntheticTask>(std::make_unique<StringTask>(spec));
  }
  return common::InvalidArgument("unknown task family \"" + spec.family +
                                 "\"; families: modadd, copy, reverse, sort, rotate");
}

}  // namespace shammie::workers
