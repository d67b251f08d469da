// Content-addressed files for checkpoints and other artifacts jobs hand on
// (DESIGN.md §1: workers write them to a shared directory, named by content
// hash). A file is written completely or not at all: bytes go to a
// temporary file in the same directory, are fsynced and renamed to
// <dir>/<hash>.<ext>, and the directory is fsynced. Writing the same bytes
// twice gives the same name and writes once. Readers check the bytes against
// the name, so a damaged file is an error, never a silently wrong model.
#pragma once

#include <string>
#include <string_view>

#include "common/status.hpp"

namespace shammie::storage {

// Writes `bytes` to DIR/<32 hex digits>.<ext> (creating DIR) and returns that path.
common::Result<std::string> WriteContentAddressed(const std::string& dir, std::string_view bytes,
                                                  std::string_view ext);

// Reads a file; when its name is <32 hex digits>.<ext>, checks the hash
// (DataLoss on a mismatch).
common::Result<std::string> ReadVerified(const std::string& path);

// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of
// the directory).
common::Status WriteFileAtomically(const std::string& path, std::string_view bytes);

}  // namespace shammie::storage
