// A small CSV reader for `shammie analyze --csv`: a header row of column
// names, then rows; fields may be quoted ("a,b", "say ""hi"""). Errors name
// the file and line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace shammie::analysis {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each row has header.size() fields

  // Index of a column, or NotFound naming the columns there are.
  common::Result<size_t> Column(const std::string& name) const;
};

common::Result<CsvTable> ParseCsv(const std::string& text, const std::string& name);
common::Result<CsvTable> ReadCsvFile(const std::string& path);

}  // namespace shammie::analysis
