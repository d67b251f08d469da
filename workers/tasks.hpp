// The synthetic task library: small, exactly checkable language tasks that
// the training runtime learns, generated on the fly and deterministic from a
// seed (no downloads). Each example is a prompt and an answer, tokenized
// with one fixed symbol-level vocabulary shared by every task, so a model
// trained on one task can be fine-tuned on another.
//
// Families (TaskSpec::family):
// - "modadd": "a+b=" -> (a + b + shift) mod p, a, b < p. `shift` != 0 is a
//   variant that contradicts the plain rule on every example.
// - "copy", "reverse", "sort", "rotate": a string of `length` letters drawn
//   from the first `alphabet` letters, "abca>" -> transformed string
//   (rotate: left by `shift`).
// Splits are disjoint by construction: an example's split is a hash of its
// prompt (80% train, 10% validation, 10% test), so no prompt is in two
// splits and every split is reproducible from (task, seed).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/random.hpp"
#include "common/status.hpp"

namespace shammie::workers {

class Tokenizer {
 public:
  static constexpr int kPad = 0;
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;
  static int VocabSize();
  // Fails (InvalidArgument) on a character outside the vocabulary.
  static common::Result<std::vector<int>> Encode(const std::string& text);
  static std::string Decode(const std::vector<int>& tokens);  // special tokens dropped
};

struct Example {
  std::vector<int> prompt;  // tokens, no BOS
  std::vector<int> answer;  // tokens, ending with EOS
  std::string prompt_text, answer_text;
};

enum class Split { kTrain = 0, kValidation = 1, kTest = 2 };

struct TaskSpec {
  std::string family = "modadd";
  int64_t modulus = 23;  // modadd
  int64_t shift = 0;     // modadd: added to the sum; rotate: positions
  int64_t length = 6;    // string tasks
  int64_t alphabet = 8;  // string tasks: letters a..
};

class SyntheticTask {
 public:
  // Fails with InvalidArgument on an unknown family or out-of-range options.
  static common::Result<std::unique_ptr<SyntheticTask>> Make(const TaskSpec& spec);
  virtual ~SyntheticTask() = default;
  // The next example of `split`, drawn with `rng`.
  Example Sample(Split split, common::SplitMix64& rng) const;
  // Longest prompt + answer, in tokens (for padding).
  virtual int MaxTokens() const = 0;
  // Every distinct example of `split`, when the task is small enough to
  // enumerate (<= limit); empty otherwise.
  virtual std::vector<Example> Enumerate(Split split, size_t limit) const = 0;
  const TaskSpec& spec() const { return spec_; }

 protected:
  explicit SyntheticTask(TaskSpec spec) : spec_(std::move(spec)) {}
  virtual std::pair<std::string, std::string> Draw(common::SplitMix64& rng) const = 0;
  static Split SplitOf(const std::string& prompt);
  static Example MakeExample(const std::string& prompt, const std::string& answer);

 private:
  TaskSpec spec_;
};

}  // namespace shammie::workers
