// Small text helpers shared by parsers and the CLI.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shammie::common {

// Optimal-string-alignment edit distance (insertions, deletions,
// substitutions and adjacent transpositions each cost 1).
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate closest to `word`, if it is close enough to be a likely typo
// (distance <= max(1, |word| / 3), or one is a case-insensitive match).
std::optional<std::string> ClosestMatch(std::string_view word, const std::vector<std::string>& candidates);

// " (did you mean `x`?)" or "".
std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates);

// "a", "b" and "c" -> "`a`, `b`, `c`"
std::string QuotedList(const std::vector<std::string>& items);

// True for names made of [A-Za-z0-9_.-], starting with a letter or digit,
// at most 128 characters: safe as a file name, HDF5 link name and CLI word.
bool IsSafeName(std::string_view name);

}  // namespace shammie::common
