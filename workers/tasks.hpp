// The synthetic task library: small, exactly checkable language tasks that
// the training runtime learns, generated on the fly and deterministic from a
// seed (no downloads). Each example is a prompt and an answer, tokenized
// with one fixed symbol-level vocabulary shared by every task, so a model
// trained on one task can be fine-tuned on another.
//
// Families (TaskSpec::family):
// - "modadd": "a+b=" -> (a + b + shift) mod p, a, b < p. `shift` != 0 is a
//   variant that contradicts the plain rule on every example.
// - "copy", "reverse", "sort", "rotate", "distinct": a string of `length` letters drawn
//   from the first `alphabet` letters, "abca>" -> transformed string
//   (rotate: left by `shift`); "distinct": the string's distinct letters in
//   alphabetical order, "abca>" -> "abc" (answers of varying length: the
//   reward-ensemble study's task, graded there by the F1 of letter sets).
// - "arith": a chain of `operations` operations on numbers < p, all mod p,
//   with the usual precedence (* before + and -, then left to right). The
//   answer writes the expression out after each operation, the leftmost `*`
//   first, and ends with the final value:
//     "3+4*2-5=" -> "3+8-5=11-5=6"   (p = 23)
//   So the final answer is the text after the last '=' (FinalAnswer()), and
//   a chain of one operation is answered with its value alone.
// - "grammar": a string of `length` letters from the first `alphabet`
//   letters, "abca|" -> a label digit, given by `rule`:
//     parity    2 classes  number of 'a's mod 2
//     contains  2 classes  1 when "ab" occurs in the string
//     majority  4 classes  the most frequent of a, b, c, d (ties: earliest)
//     dyck      2 classes  1 when the a/b subsequence is balanced brackets
//                          (a opens, b closes; other letters are ignored)
//   Prompts are drawn class-balanced: a label uniformly, then strings until
//   one has it.
//
// Variants (TaskSpec::variant) relate tasks of one family; they apply to
// the families whose answer is a label from a finite set: grammar (the
// rule's classes) and modadd (the p residues). With c the plain answer and
// k the number of classes:
// - "share":   c (the plain rule);
// - "flip":    (c + 1) mod k: contradicts the plain rule on every example
//              (for k = 2, the opposite label);
// - "permute": pi(c), pi a permutation of the k classes without fixed
//              points, drawn from `variant_seed`: contradicts on every
//              example, but is a relabelling a model can learn back (for
//              k = 2 the only such permutation is flip);
// - "ignore":  an independent rule on other features: grammar applies the
//              rule to the next letters (parity of 'b'; "cd"; e, f, g, h;
//              c/d brackets), modadd answers (a - b + shift) mod p, which is
//              independent of a + b over uniform a, b when p is odd.
// The other families accept only "share".
//
// Splits are disjoint by construction: an example's split is a hash of its
// prompt (80% train, 10% validation, 10% test), so no prompt is in two
// splits and every split is reproducible from (task, seed).
//
// Metrics: ExactMatch() (the whole answer, EOS included) and Correct() (the
// final answer: arith's last value, grammar's label; the whole answer for
// the other families), graded on generated tokens; Grade() sums them.
//
// Config: DeclareTaskKeys() declares the task keys for a job kind's schema
// and TaskSpecFromConfig() reads them back, so every kind that takes a task
// spells its keys the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/random.hpp"
#include "common/status.hpp"

namespace shammie::common {
class Schema;
}

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
  int64_t modulus = 23;          // modadd, arith
  int64_t shift = 0;             // modadd: added to the sum; rotate: positions
  int64_t length = 6;            // string tasks, grammar
  int64_t alphabet = 8;          // string tasks, grammar: letters a..
  int64_t operations = 3;        // arith: operations per chain
  std::string rule = "contains";  // grammar: parity, contains, majority, dyck
  std::string variant = "share";  // share, flip, permute, ignore
  int64_t variant_seed = 1;      // permute: seeds the permutation
};

// The families, the grammar rules and the variants, in documentation order.
const std::vector<std::string>& TaskFamilies();
const std::vector<std::string>& GrammarRules();
const std::vector<std::string>& TaskVariants();

// Checks a spec: known names, options in range, and combinations that can
// make every label (e.g. majority with "ignore" needs alphabet >= 8).
// InvalidArgument naming the family and the option otherwise.
common::Status ValidateTaskSpec(const TaskSpec& spec);

// Declares the task keys on a job kind's schema: "task", "modulus", "shift",
// "length", "alphabet", "operations", "rule", "variant", "variant_seed",
// each with the default of TaskSpec.
void DeclareTaskKeys(common::Schema& schema);
// Reads those keys from a job's (normalized) config; an absent key keeps the
// TaskSpec default. InvalidArgument on a key of the wrong type or a spec that
// ValidateTaskSpec() refuses.
common::Result<TaskSpec> TaskSpecFromConfig(const nlohmann::json& config);

// Accuracy over a set of examples; rates in [0, 1] (0 when empty).
struct TaskAccuracy {
  int64_t examples = 0;
  double exact_match = 0;   // ExactMatch()
  double final_answer = 0;  // Correct()
};

class SyntheticTask {
 public:
  // Fails with InvalidArgument where ValidateTaskSpec() does.
  static common::Result<std::unique_ptr<SyntheticTask>> Make(const TaskSpec& spec);
  virtual ~SyntheticTask() = default;
  // The next example of `split`, drawn with `rng`.
  Example Sample(Split split, common::SplitMix64& rng) const;
  // Longest prompt + answer, in tokens (for padding).
  virtual int MaxTokens() const = 0;
  // Every distinct example of `split`, when the task is small enough to
  // enumerate (<= limit); empty otherwise.
  virtual std::vector<Example> Enumerate(Split split, size_t limit) const = 0;
  // This task's answer to a prompt of its family's form (which may come
  // from another task of the family: a variant, another seed). So one
  // prompt can be graded under two related rules. InvalidArgument when the
  // prompt is not of that form (or has a number >= p, a letter outside the
  // alphabet, a wrong length).
  virtual common::Result<std::string> AnswerFor(const std::string& prompt_text) const = 0;
  // Number of labels when the answer is a label (grammar: the rule's
  // classes; modadd: p); 0 otherwise.
  virtual int Classes() const { return 0; }
  // Whether answers are written as steps that WithSlips() can corrupt (arith).
  virtual bool HasSteps() const { return false; }
  // A noisy training answer for `e` (lm.train's step_noise): each step's
  // value is, with probability `rate`, replaced by a uniformly drawn wrong
  // one and carried on, so later steps compute from it. Only where
  // HasSteps(); others return `e` unchanged.
  virtual Example WithSlips(const Example& e, double /*rate*/, common::SplitMix64& /*rng*/) const { return e; }
  // The part of an answer graded as "the answer": arith: the text after the
  // last '='; every other family: the whole text.
  virtual std::string FinalAnswer(const std::string& answer_text) const { return answer_text; }

  // Grading a model's output. `generated` is what the model produced after
  // the prompt (no BOS), possibly running on after its EOS (ignored).
  // - ExactMatch: the tokens up to and including the first EOS are exactly
  //   e.answer (a generation cut off before its EOS does not match);
  // - Correct: FinalAnswer() of GeneratedText() equals that of the example
  //   (label accuracy for grammar, final-answer accuracy for arith; for the
  //   other families, the whole answer, with or without its EOS).
  // GeneratedText: the tokens before the first EOS (all of them when there
  // is none), decoded; other special tokens are dropped.
  static std::string GeneratedText(const std::vector<int>& generated);
  bool ExactMatch(const Example& e, const std::vector<int>& generated) const;
  bool Correct(const Example& e, const std::vector<int>& generated) const;
  // examples[i] graded against generated[i]; the sizes must be equal (CHECK).
  TaskAccuracy Grade(const std::vector<Example>& examples, const std::vector<std::vector<int>>& generated) const;

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
