#include "workers/tasks.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/schema.hpp"
#include "workers/job_kind.hpp"
#include "workers/text.hpp"

namespace shammie::workers {
namespace {

TEST(TasksTest, TokenizerRoundTripsAndRefusesUnknownCharacters) {
  auto t = Tokenizer::Encode("12+7=19 abc>cba");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Tokenizer::Decode(*t), "12+7=19 abc>cba");
  for (int id : *t) EXPECT_GE(id, 3);
  EXPECT_FALSE(Tokenizer::Encode("ABC").ok());
  // The ids are fixed (a model's embedding and a checkpoint follow them):
  // new symbols are appended, never inserted.
  EXPECT_EQ(Tokenizer::VocabSize(), 50);
  EXPECT_EQ(*Tokenizer::Encode(" 0a+)"), (std::vector<int>{3, 4, 14, 40, 49}));
  // Every task's text round-trips through the tokenizer.
  common::SplitMix64 rng(3);
  for (const std::string& family : TaskFamilies()) {
    TaskSpec spec;
    spec.family = family;
    auto task = SyntheticTask::Make(spec);
    ASSERT_TRUE(task.ok()) << family << ": " << task.status().ToString();
    for (int i = 0; i < 20; ++i) {
      Example e = (*task)->Sample(Split::kTrain, rng);
      EXPECT_EQ(Tokenizer::Decode(e.prompt), e.prompt_text);
      EXPECT_EQ(Tokenizer::Decode(e.answer), e.answer_text);
      EXPECT_EQ(*Tokenizer::Encode(e.prompt_text), e.prompt);
    }
  }
}

TEST(TasksTest, TextMapsProseOntoTheVocabulary) {
  EXPECT_EQ(NormalizeText("Hello,  World!\n\tThe \xE2\x80\x98" "cat\xE2\x80\x99 [x]: a/b_c; why?  "),
            "hello, world. the cat (x), a-b-c, why.");
  EXPECT_EQ(NormalizeText("  \n"), "");
  EXPECT_EQ(NormalizeText("{A<B}"), "(a(b)");
  EXPECT_EQ(NormalizeText("#$%^&`~\"'@"), "");
}

TEST(TasksTest, TextChunksAreProseInDisjointSplits) {
  TaskSpec spec;
  spec.family = "text";
  auto task = SyntheticTask::Make(spec);
  ASSERT_TRUE(task.ok()) << task.status().ToString();
  common::SplitMix64 rng(11);
  std::map<Split, std::set<std::string>> seen;
  size_t chars = 0, spaces = 0;
  for (Split split : {Split::kTrain, Split::kValidation, Split::kTest}) {
    for (int i = 0; i < 200; ++i) {
      const Example e = (*task)->Sample(split, rng);
      EXPECT_TRUE(e.answer_text.empty());
      EXPECT_EQ(e.answer, std::vector<int>{Tokenizer::kEos});
      EXPECT_GE(e.prompt_text.size(), 64u);
      EXPECT_LE(static_cast<int>(e.prompt.size() + e.answer.size()), (*task)->MaxTokens());
      EXPECT_EQ(NormalizeText(e.prompt_text), e.prompt_text);  // already normal: no capitals, no runs of spaces
      chars += e.prompt_text.size();
      spaces += static_cast<size_t>(std::count(e.prompt_text.begin(), e.prompt_text.end(), ' '));
      seen[split].insert(e.prompt_text);
    }
  }
  // English prose: about one character in six is a space.
  const double space_rate = static_cast<double>(spaces) / static_cast<double>(chars);
  EXPECT_GT(space_rate, 0.1);
  EXPECT_LT(space_rate, 0.3);
  for (const std::string& t : seen[Split::kValidation]) {
    EXPECT_FALSE(seen[Split::kTrain].count(t)) << t.substr(0, 80);
    EXPECT_FALSE(seen[Split::kTest].count(t)) << t.substr(0, 80);
  }
  EXPECT_GT(seen[Split::kTrain].size(), 150u);  // many distinct chunks, not a few repeated
  EXPECT_FALSE((*task)->AnswerFor("some prose").ok());

  // lm.train on text is language modelling: without packed it would learn only EOS.
  KindRegistry registry;
  RegisterLmKinds(registry);
  const JobKind* train = registry.Find("lm.train");
  ASSERT_NE(train, nullptr);
  nlohmann::json config = nlohmann::json::object();
  for (const auto& key : train->config.keys()) {
    if (!key.default_value.is_null()) config[key.name] = key.default_value;
  }
  config["task"] = "text";
  config["packed"] = false;
  auto problems = train->check(config);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].key, "task");
  config["packed"] = true;
  EXPECT_TRUE(train->check(config).empty());

  // lm.loop_decode's prompts on text are windows of prose: no answers, so
  // the number of new tokens must be given.
  const JobKind* decode = registry.Find("lm.loop_decode");
  ASSERT_NE(decode, nullptr);
  nlohmann::json d = nlohmann::json::object();
  for (const auto& key : decode->config.keys()) {
    if (!key.default_value.is_null()) d[key.name] = key.default_value;
  }
  EXPECT_TRUE(decode->check(d).empty());
  d["prompt_length"] = 64;
  problems = decode->check(d);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].key, "max_new_tokens");
  d["max_new_tokens"] = 32;
  EXPECT_TRUE(decode->check(d).empty());
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
  for (std::string family : {"copy", "reverse", "sort", "rotate", "distinct"}) {
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
      if (family == "distinct") {  // each letter of s once, in alphabetical order
        want.clear();
        for (char c = 'a'; c < 'a' + 5; ++c) {
          if (s.find(c) != std::string::npos) want += c;
        }
      }
      EXPECT_EQ(e.answer_text, want) << family;
      for (char c : s) EXPECT_TRUE(c >= 'a' && c < 'a' + 5);
      EXPECT_LE(static_cast<int>(e.prompt.size() + e.answer.size()), (*task)->MaxTokens());
    }
  }
  TaskSpec bad;
  bad.family = "parity";
  EXPECT_EQ(SyntheticTask::Make(bad).status().code(), common::StatusCode::kInvalidArgument);
}


std::unique_ptr<SyntheticTask> MakeTask(const TaskSpec& spec) {
  auto task = SyntheticTask::Make(spec);
  EXPECT_TRUE(task.ok()) << task.status().ToString();
  return task.ok() ? std::move(task).value() : nullptr;
}

// An independent evaluator: fold the products into terms, then add the terms
// with their signs, all mod p.
int64_t EvalChain(const std::string& expression, int64_t p) {
  std::vector<int64_t> terms;
  std::vector<char> signs;
  int64_t number = 0, term = 1;
  char sign = '+', pending = '*';
  for (size_t i = 0; i <= expression.size(); ++i) {
    const char c = i < expression.size() ? expression[i] : '+';
    if (c >= '0' && c <= '9') {
      number = number * 10 + (c - '0');
      continue;
    }
    term = pending == '*' ? (term * number) % p : number;
    number = 0;
    if (c == '*') {
      pending = '*';
      continue;
    }
    terms.push_back(term);
    signs.push_back(sign);
    sign = c;
    term = 1;
    pending = '*';
  }
  int64_t value = 0;
  for (size_t i = 0; i < terms.size(); ++i) value = signs[i] == '+' ? value + terms[i] : value - terms[i];
  return ((value % p) + p) % p;
}

std::vector<std::string> SplitOn(const std::string& text, char sep) {
  std::vector<std::string> parts(1);
  for (char c : text) {
    if (c == sep) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

int CountOps(const std::string& s) {
  return static_cast<int>(std::count_if(s.begin(), s.end(), [](char c) { return c == '+' || c == '-' || c == '*'; }));
}

TEST(TasksTest, ArithWritesEachStepAndTheFinalValue) {
  TaskSpec spec;
  spec.family = "arith";
  spec.modulus = 23;
  spec.operations = 3;
  auto task = MakeTask(spec);
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(*task->AnswerFor("3+4*2-5="), "3+8-5=11-5=6");
  EXPECT_EQ(*task->AnswerFor("3-5*1*2="), "3-5*2=3-10=16");
  EXPECT_EQ(task->FinalAnswer("3+8-5=11-5=6"), "6");
  for (const char* bad : {"3+4*2=", "3+4*2-5", "3+4*2-23=", "3+4*2/5=", "3=4*2-5=", "03+4*2-5=", "+4*2-5="}) {
    EXPECT_EQ(task->AnswerFor(bad).status().code(), common::StatusCode::kInvalidArgument) << bad;
  }
  common::SplitMix64 rng(7);
  for (int i = 0; i < 300; ++i) {
    const Split split = static_cast<Split>(i % 3);
    Example e = task->Sample(split, rng);
    const std::string expression = e.prompt_text.substr(0, e.prompt_text.size() - 1);
    ASSERT_EQ(CountOps(expression), 3) << e.prompt_text;
    const int64_t want = EvalChain(expression, 23);
    const std::vector<std::string> steps = SplitOn(e.answer_text, '=');
    ASSERT_EQ(steps.size(), 3u) << e.answer_text;
    for (size_t k = 0; k < steps.size(); ++k) {
      EXPECT_EQ(CountOps(steps[k]), 2 - static_cast<int>(k)) << e.answer_text;  // one operation per step
      EXPECT_EQ(EvalChain(steps[k], 23), want) << e.prompt_text << e.answer_text;  // the value is kept
    }
    EXPECT_EQ(task->FinalAnswer(e.answer_text), std::to_string(want));
    EXPECT_EQ(*task->AnswerFor(e.prompt_text), e.answer_text);
    EXPECT_LE(static_cast<int>(e.prompt.size() + e.answer.size()), task->MaxTokens());
  }
  // MaxTokens is the longest chain: every number two digits, and EOS.
  EXPECT_EQ(task->MaxTokens(), static_cast<int>(std::string("22*22*22*22=").size() +
                                                std::string("22*22*22=22*22=22").size()) + 1);
}

TEST(TasksTest, ArithSlipsChangeAStepsValueAtTheGivenRateAndCarryOn) {
  TaskSpec spec;
  spec.family = "arith";
  spec.modulus = 11;
  spec.operations = 3;
  auto task = MakeTask(spec);
  ASSERT_NE(task, nullptr);
  ASSERT_TRUE(task->HasSteps());
  common::SplitMix64 rng(5);
  const double rate = 0.3;
  int steps = 0, slips = 0, wrong_final = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    const Example e = task->Sample(Split::kTrain, rng);
    EXPECT_EQ(task->WithSlips(e, 0.0, rng).answer_text, e.answer_text);
    const Example noisy = task->WithSlips(e, rate, rng);
    EXPECT_EQ(noisy.prompt_text, e.prompt_text);
    const std::vector<std::string> written = SplitOn(noisy.answer_text, '=');
    ASSERT_EQ(written.size(), 3u) << noisy.answer_text;
    std::string before = e.prompt_text.substr(0, e.prompt_text.size() - 1);
    for (size_t k = 0; k < written.size(); ++k) {
      EXPECT_EQ(CountOps(written[k]), 2 - static_cast<int>(k)) << noisy.answer_text;
      // A step slips when its value differs from the value of the expression it rewrites.
      slips += EvalChain(written[k], 11) != EvalChain(before, 11) ? 1 : 0;
      ++steps;
      before = written[k];
    }
    wrong_final += task->FinalAnswer(noisy.answer_text) != task->FinalAnswer(e.answer_text) ? 1 : 0;
    EXPECT_EQ(noisy.answer.back(), e.answer.back()) << "ends with EOS";
  }
  // Within 4 standard errors of the rate (12,000 steps: se = 0.0042).
  const double measured = static_cast<double>(slips) / steps;
  EXPECT_NEAR(measured, rate, 4 * std::sqrt(rate * (1 - rate) / steps));
  // A slip is carried on: the final value is wrong unless a later slip lands
  // back on it (probability 1/10 per later slip): P(right) = 0.7^3 + small.
  EXPECT_GT(static_cast<double>(wrong_final) / n, 1 - std::pow(0.7, 3) - 0.05);
  EXPECT_LT(static_cast<double>(wrong_final) / n, 1 - std::pow(0.7, 3));
  // Families without steps are left unchanged.
  TaskSpec copy;
  copy.family = "copy";
  auto other = MakeTask(copy);
  ASSERT_NE(other, nullptr);
  EXPECT_FALSE(other->HasSteps());
  const Example e = other->Sample(Split::kTrain, rng);
  EXPECT_EQ(other->WithSlips(e, 0.5, rng).answer_text, e.answer_text);
}

TEST(TasksTest, ArithEnumeratesSmallChainsIntoDisjointSplits) {
  TaskSpec spec;
  spec.family = "arith";
  spec.modulus = 5;
  spec.operations = 2;
  auto task = MakeTask(spec);
  ASSERT_NE(task, nullptr);
  std::set<std::string> all;
  size_t total = 0;
  for (Split s : {Split::kTrain, Split::kValidation, Split::kTest}) {
    for (const Example& e : task->Enumerate(s, 100000)) {
      all.insert(e.prompt_text);
      ++total;
      const std::string expression = e.prompt_text.substr(0, e.prompt_text.size() - 1);
      EXPECT_EQ(task->FinalAnswer(e.answer_text), std::to_string(EvalChain(expression, 5))) << e.prompt_text;
    }
  }
  EXPECT_EQ(total, 125u * 9u);
  EXPECT_EQ(all.size(), total);  // no prompt in two splits
  EXPECT_TRUE(task->Enumerate(Split::kTrain, 1000).empty());
  spec.operations = 1;
  task = MakeTask(spec);
  EXPECT_EQ(*task->AnswerFor("4*3="), "2");  // one operation: the value alone
}

// The grammar rules, computed independently on letters from `first`.
int GrammarLabel(const std::string& rule, const std::string& s, char first) {
  if (rule == "parity") return static_cast<int>(std::count(s.begin(), s.end(), first)) % 2;
  if (rule == "contains") {
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (s[i] == first && s[i + 1] == first + 1) return 1;
    }
    return 0;
  }
  if (rule == "majority") {
    std::map<char, int> count;
    for (char c : s) ++count[c];
    int best = 0;
    for (int c = 1; c < 4; ++c) {
      if (count[static_cast<char>(first + c)] > count[static_cast<char>(first + best)]) best = c;
    }
    return best;
  }
  std::string brackets;  // dyck
  for (char c : s) {
    if (c == first) brackets += '(';
    if (c == first + 1) brackets += ')';
  }
  while (brackets.find("()") != std::string::npos) brackets.erase(brackets.find("()"), 2);
  return brackets.empty() ? 1 : 0;
}

std::vector<Example> Draw(const SyntheticTask& task, Split split, uint64_t seed, int n) {
  common::SplitMix64 rng(seed);
  std::vector<Example> out;
  for (int i = 0; i < n; ++i) out.push_back(task.Sample(split, rng));
  return out;
}

TEST(TasksTest, GrammarRulesAreRightAndClassBalanced) {
  for (const std::string& rule : GrammarRules()) {
    TaskSpec spec;
    spec.family = "grammar";
    spec.rule = rule;
    spec.length = 8;
    spec.alphabet = 6;
    auto task = MakeTask(spec);
    ASSERT_NE(task, nullptr);
    const int k = task->Classes();
    EXPECT_EQ(k, rule == "majority" ? 4 : 2);
    std::vector<int> counts(static_cast<size_t>(k));
    const std::vector<Example> examples = Draw(*task, Split::kTrain, 11, 800);
    for (const Example& e : examples) {
      ASSERT_EQ(e.prompt_text.size(), 9u);
      EXPECT_EQ(e.prompt_text.back(), '|');
      const std::string s = e.prompt_text.substr(0, 8);
      for (char c : s) EXPECT_TRUE(c >= 'a' && c < 'a' + 6) << s;
      const int label = GrammarLabel(rule, s, 'a');
      EXPECT_EQ(e.answer_text, std::to_string(label)) << rule << " " << s;
      ++counts[static_cast<size_t>(label)];
      EXPECT_EQ(e.answer.size(), 2u);  // one label token, EOS
      EXPECT_LE(static_cast<int>(e.prompt.size() + e.answer.size()), task->MaxTokens());
    }
    for (int c : counts) {
      EXPECT_GT(c, 800 / k / 2) << rule;
      EXPECT_LT(c, 800 / k * 3 / 2) << rule;
    }
    // Deterministic from the seed; another seed, other prompts.
    const std::vector<Example> again = Draw(*task, Split::kTrain, 11, 800), other = Draw(*task, Split::kTrain, 12, 800);
    int same = 0;
    for (size_t i = 0; i < examples.size(); ++i) {
      EXPECT_EQ(again[i].prompt_text, examples[i].prompt_text);
      same += other[i].prompt_text == examples[i].prompt_text ? 1 : 0;
    }
    EXPECT_LT(same, 40) << rule;
  }
}

TEST(TasksTest, GrammarSplitsAreDisjoint) {
  TaskSpec spec;
  spec.family = "grammar";
  spec.length = 5;
  spec.alphabet = 4;  // 1024 strings: repeats within a split are common, across splits impossible
  auto task = MakeTask(spec);
  ASSERT_NE(task, nullptr);
  std::set<std::string> seen[3];
  for (Split s : {Split::kTrain, Split::kValidation, Split::kTest}) {
    for (const Example& e : Draw(*task, s, 5, 400)) seen[static_cast<int>(s)].insert(e.prompt_text);
  }
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      for (const auto& p : seen[i]) EXPECT_EQ(seen[j].count(p), 0u) << p;
    }
  }
  EXPECT_GT(seen[0].size(), seen[1].size());
}

TEST(TasksTest, GrammarVariantsShareContradictOrIgnoreTheRule) {
  for (const std::string& rule : GrammarRules()) {
    TaskSpec spec;
    spec.family = "grammar";
    spec.rule = rule;
    spec.length = 8;
    spec.alphabet = 8;
    auto base = MakeTask(spec);
    ASSERT_NE(base, nullptr);
    const int k = base->Classes();
    std::map<std::string, std::unique_ptr<SyntheticTask>> variants;
    for (const std::string& v : TaskVariants()) {
      TaskSpec vs = spec;
      vs.variant = v;
      vs.variant_seed = 4;
      variants[v] = MakeTask(vs);
      ASSERT_NE(variants[v], nullptr) << v;
      EXPECT_EQ(variants[v]->Classes(), k);
    }
    std::map<int, int> permutation;
    int agree_ignore = 0, n = 0;
    // Prompts of the base task, graded under each variant's rule.
    for (const Example& e : Draw(*base, Split::kTest, 21, 600)) {
      const int c = std::stoi(e.answer_text);
      const std::string s = e.prompt_text.substr(0, 8);
      EXPECT_EQ(*variants["share"]->AnswerFor(e.prompt_text), e.answer_text);
      EXPECT_EQ(std::stoi(*variants["flip"]->AnswerFor(e.prompt_text)), (c + 1) % k) << rule << " " << s;
      const int permuted = std::stoi(*variants["permute"]->AnswerFor(e.prompt_text));
      EXPECT_NE(permuted, c) << rule << " " << s;  // contradicts on every example
      auto [it, inserted] = permutation.emplace(c, permuted);
      EXPECT_EQ(it->second, permuted) << "permute must be a function of the plain label";
      const int ignored = std::stoi(*variants["ignore"]->AnswerFor(e.prompt_text));
      const char next = static_cast<char>('a' + (rule == "parity" ? 1 : rule == "majority" ? 4 : 2));
      EXPECT_EQ(ignored, GrammarLabel(rule, s, next)) << rule << " " << s;
      agree_ignore += ignored == c ? 1 : 0;
      ++n;
    }
    // permute is a permutation of the k labels.
    ASSERT_EQ(static_cast<int>(permutation.size()), k) << rule;
    std::set<int> image;
    for (auto [from, to] : permutation) image.insert(to);
    EXPECT_EQ(static_cast<int>(image.size()), k) << rule;
    // ignore agrees with the plain rule about as often as chance would.
    const double agreement = static_cast<double>(agree_ignore) / n;
    EXPECT_GT(agreement, 1.0 / k - 0.15) << rule;
    EXPECT_LT(agreement, 1.0 / k + 0.15) << rule;
  }
}

TEST(TasksTest, PermuteHasNoFixedPointAndFollowsItsSeed) {
  TaskSpec spec;
  spec.family = "modadd";
  spec.modulus = 11;
  spec.variant = "permute";
  std::set<std::vector<std::string>> maps;
  for (int64_t seed : {1, 2, 3}) {
    spec.variant_seed = seed;
    auto task = MakeTask(spec);
    ASSERT_NE(task, nullptr);
    std::vector<std::string> map;  // the label of "0+c=" for each plain sum c
    for (int c = 0; c < 11; ++c) map.push_back(*task->AnswerFor("0+" + std::to_string(c) + "="));
    for (int c = 0; c < 11; ++c) EXPECT_NE(map[static_cast<size_t>(c)], std::to_string(c));
    EXPECT_EQ(std::set<std::string>(map.begin(), map.end()).size(), 11u);
    // The label depends on the sum only: a permutation of Z_p applied to a + b.
    for (int a = 0; a < 11; ++a) {
      for (int b = 0; b < 11; ++b) {
        const std::string prompt = std::to_string(a) + "+" + std::to_string(b) + "=";
        EXPECT_EQ(*task->AnswerFor(prompt), map[static_cast<size_t>((a + b) % 11)]);
      }
    }
    EXPECT_EQ(*MakeTask(spec)->AnswerFor("3+4="), *task->AnswerFor("3+4="));  // reproducible
    maps.insert(map);
  }
  EXPECT_GT(maps.size(), 1u);
}

TEST(TasksTest, ModAddVariants) {
  TaskSpec spec;
  spec.family = "modadd";
  spec.modulus = 13;
  spec.shift = 2;
  for (const std::string v : {"flip", "ignore"}) {
    spec.variant = v;
    auto task = MakeTask(spec);
    ASSERT_NE(task, nullptr);
    EXPECT_EQ(task->Classes(), 13);
    int agree = 0, total = 0;
    for (Split s : {Split::kTrain, Split::kValidation, Split::kTest}) {
      for (const Example& e : task->Enumerate(s, 1000)) {
        int a = 0, b = 0;
        ASSERT_EQ(std::sscanf(e.prompt_text.c_str(), "%d+%d=", &a, &b), 2);
        const int plain = (a + b + 2) % 13;
        const int want = v == "flip" ? (plain + 1) % 13 : ((a - b + 2) % 13 + 13) % 13;
        EXPECT_EQ(std::stoi(e.answer_text), want) << v << " " << e.prompt_text;
        agree += want == plain ? 1 : 0;
        ++total;
      }
    }
    EXPECT_EQ(total, 169);
    // flip never agrees; for odd p, a - b agrees with a + b exactly when b = 0.
    EXPECT_EQ(agree, v == "flip" ? 0 : 13) << v;
  }
}

TEST(TasksTest, SpecsThatCannotWorkAreRefused) {
  auto refused = [](TaskSpec spec, const std::string& words) {
    common::Status s = ValidateTaskSpec(spec);
    EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << words;
    EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
    EXPECT_FALSE(SyntheticTask::Make(spec).ok());
  };
  TaskSpec arith;
  arith.family = "arith";
  arith.variant = "flip";
  refused(arith, "variants apply to modadd and grammar");
  arith.variant = "share";
  arith.operations = 0;
  refused(arith, "operations must be in [1, 16]");
  TaskSpec g;
  g.family = "grammar";
  g.rule = "majority";
  g.variant = "ignore";
  g.alphabet = 6;
  refused(g, "alphabet must be >= 8");
  g.rule = "dyck";
  g.variant = "share";
  g.alphabet = 2;
  g.length = 7;
  refused(g, "even length");
  g.rule = "contains";
  g.length = 1;
  refused(g, "length >= 2");
  g.rule = "regex";
  refused(g, "unknown rule \"regex\"");
  g.rule = "parity";
  g.variant = "mirror";
  refused(g, "unknown task variant");
}

TEST(TasksTest, GradingExactMatchAndFinalAnswer) {
  TaskSpec spec;
  spec.family = "arith";
  auto task = MakeTask(spec);
  ASSERT_NE(task, nullptr);
  Example e;
  e.prompt_text = "3+4*2-5=";
  e.answer_text = *task->AnswerFor(e.prompt_text);
  e.answer = *Tokenizer::Encode(e.answer_text);
  e.answer.push_back(Tokenizer::kEos);
  auto tokens = [](const std::string& text, bool eos) {
    std::vector<int> t = *Tokenizer::Encode(text);
    if (eos) t.push_back(Tokenizer::kEos);
    return t;
  };
  EXPECT_TRUE(task->ExactMatch(e, e.answer));
  EXPECT_TRUE(task->Correct(e, e.answer));
  std::vector<int> trailing = e.answer;
  trailing.push_back(Tokenizer::Encode("9")->front());  // after EOS: ignored
  EXPECT_TRUE(task->ExactMatch(e, trailing));
  EXPECT_FALSE(task->ExactMatch(e, tokens("3+8-5=11-5=6", false)));  // cut off before EOS
  EXPECT_TRUE(task->Correct(e, tokens("3+8-5=11-5=6", false)));
  EXPECT_FALSE(task->ExactMatch(e, tokens("3+8-5=12-5=6", true)));  // a wrong step, the right value
  EXPECT_TRUE(task->Correct(e, tokens("3+8-5=12-5=6", true)));
  EXPECT_FALSE(task->Correct(e, tokens("3+8-5=11-5=7", true)));
  EXPECT_FALSE(task->Correct(e, tokens("3+8-5=11-5=61", true)));
  EXPECT_EQ(SyntheticTask::GeneratedText({Tokenizer::kBos, 14, 15, Tokenizer::kEos, 16}), "ab");
  const TaskAccuracy acc = task->Grade({e, e, e, e}, {e.answer, tokens("3+8-5=12-5=6", true), tokens("6", true), {}});
  EXPECT_EQ(acc.examples, 4);
  EXPECT_DOUBLE_EQ(acc.exact_match, 0.25);
  EXPECT_DOUBLE_EQ(acc.final_answer, 0.75);
  EXPECT_EQ(task->Grade({}, {}).exact_match, 0);

  spec.family = "grammar";
  task = MakeTask(spec);
  Example g = Draw(*task, Split::kTrain, 1, 1)[0];
  const std::string wrong = g.answer_text == "0" ? "1" : "0";
  EXPECT_TRUE(task->Correct(g, tokens(g.answer_text, true)));
  EXPECT_FALSE(task->Correct(g, tokens(wrong, true)));
  EXPECT_FALSE(task->Correct(g, tokens(g.answer_text + g.answer_text, true)));
}

TEST(TasksTest, TaskKeysMatchTheLmKindsAndReadBack) {
  common::Schema schema("test", "");
  DeclareTaskKeys(schema);
  EXPECT_EQ(schema.KeyNames(), (std::vector<std::string>{"task", "modulus", "shift", "length", "alphabet", "operations",
                                                          "rule", "variant", "variant_seed"}));
  // The keys lm.train declares today keep their names, types, defaults and ranges.
  KindRegistry registry;
  RegisterLmKinds(registry);
  const JobKind* lm = registry.Find("lm.train");
  ASSERT_NE(lm, nullptr);
  for (const auto& key : schema.keys()) {
    const common::KeySpec* theirs = lm->config.Find(key.name);
    if (theirs == nullptr) continue;
    EXPECT_EQ(theirs->type, key.type) << key.name;
    EXPECT_EQ(theirs->default_value, key.default_value) << key.name;
    EXPECT_EQ(theirs->min, key.min) << key.name;
    EXPECT_EQ(theirs->max, key.max) << key.name;
    for (const auto& choice : theirs->choices) {
      EXPECT_NE(std::find(key.choices.begin(), key.choices.end(), choice), key.choices.end()) << choice;
    }
  }
  for (const char* name : {"task", "modulus", "shift", "length", "alphabet"}) EXPECT_NE(lm->config.Find(name), nullptr);

  // The schema's defaults read back as the default TaskSpec.
  nlohmann::json config = nlohmann::json::object();
  for (const auto& key : schema.keys()) config[key.name] = key.default_value;
  auto spec = TaskSpecFromConfig(config);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  const TaskSpec d;
  EXPECT_EQ(spec->family, d.family);
  EXPECT_EQ(spec->modulus, d.modulus);
  EXPECT_EQ(spec->rule, d.rule);
  EXPECT_EQ(spec->variant_seed, d.variant_seed);
  config["task"] = "grammar";
  config["rule"] = "majority";
  config["variant"] = "permute";
  config["variant_seed"] = 9;
  config["length"] = 10;
  spec = TaskSpecFromConfig(config);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->family, "grammar");
  EXPECT_EQ(spec->rule, "majority");
  EXPECT_EQ(spec->variant, "permute");
  EXPECT_EQ(spec->variant_seed, 9);
  EXPECT_EQ(spec->length, 10);
  // Absent keys keep their defaults (a kind may declare fewer).
  spec = TaskSpecFromConfig(nlohmann::json{{"task", "reverse"}});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->length, 6);
  auto bad = TaskSpecFromConfig(nlohmann::json{{"modulus", "23"}});
  EXPECT_EQ(bad.status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("modulus: expected an integer, got string"), std::string::npos)
      << bad.status().message();
  bad = TaskSpecFromConfig(nlohmann::json{{"task", "arith"}, {"variant", "ignore"}});
  EXPECT_NE(bad.status().message().find("arith: variant must be \"share\""), std::string::npos);
  EXPECT_FALSE(TaskSpecFromConfig(nlohmann::json::array()).ok());
}

}  // namespace
}  // namespace shammie::workers
