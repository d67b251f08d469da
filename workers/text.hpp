// The `text` task family's character mapping (workers/tasks.cpp): English
// prose onto the task vocabulary, for character-level language modelling.
#pragma once

#include <string>
#include <string_view>

namespace shammie::workers {

// Lowercase; whitespace runs -> one space (none at the ends); ':' ';' -> ',';
// '!' '?' -> '.'; '[' '{' '<' -> '('; ']' '}' -> ')'; '/' '_' and backslash
// -> '-'; every other character outside the vocabulary dropped (a UTF-8
// sequence whole).
std::string NormalizeText(std::string_view raw);

}  // namespace shammie::workers
