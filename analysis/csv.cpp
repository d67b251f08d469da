#include "analysis/csv.hpp"

#include <fstream>
#include <sstream>

#include "common/text.hpp"

namespace shammie::analysis {

common::Result<size_t> CsvTable::Column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  return common::NotFound("no column \"" + name + "\"" + common::DidYouMean(name, header) + "; columns: " +
                          common::QuotedList(header));
}

common::Result<CsvTable> ParseCsv(const std::string& text, const std::string& name) {
  CsvTable table;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, field_started = false;
  size_t line = 1, row_line = 1;
  auto end_row = [&]() -> common::Status {
    row.push_back(field);
    field.clear();
    field_started = false;
    const bool blank = row.size() == 1 && row[0].empty();
    if (!blank) {
      if (table.header.empty()) {
        table.header = row;
      } else if (row.size() != table.header.size()) {
        return common::InvalidArgument(name + ":" + std::to_string(row_line) + ": " + std::to_string(row.size()) +
                                       " fields, the header has " + std::to_string(table.header.size()));
      } else {
        table.rows.push_back(row);
      }
    }
    row.clear();
    return common::Status::Ok();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"' && !field_started) {
      quoted = true;
      field_started = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
      field_started = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      SHAMMIE_RETURN_IF_ERROR(end_row());
      ++line;
      row_line = line;
    } else {
      field += c;
      field_started = true;
    }
  }
  if (quoted) return common::InvalidArgument(name + ":" + std::to_string(row_line) + ": unterminated quoted field");
  if (!field.empty() || !row.empty()) SHAMMIE_RETURN_IF_ERROR(end_row());
  if (table.header.empty()) return common::InvalidArgument(name + ": empty CSV file (no header row)");
  return table;
}

common::Result<CsvTable> ReadCsvFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return common::NotFound("cannot read " + path);
  std::ostringstream os;
  os << in.rdbuf();
  return ParseCsv(os.str(), path);
}

}  // namespace shammie::analysis
