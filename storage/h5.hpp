// Thin ownership and error helpers over the HDF5 C API. Private to storage/:
// no header outside this folder includes it (HDF5 stays in its room).
#pragma once

#include <hdf5.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

namespace shammie::storage::h5 {

// Owns one HDF5 identifier of any kind and closes it with the right call.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { Reset(); }
  Handle(Handle&& other) noexcept : id_(other.id_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      Reset();
      id_ = other.id_;
      other.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void Reset();

 private:
  hid_t id_ = -1;
};

// Turns off HDF5's automatic printing of error stacks (once per process; safe
// to call often).
void SilenceAutomaticErrors();
// The current HDF5 error stack as one line: "H5Fopen: unable to open file; ...".
std::string ErrorStack();
// A Status for a failed HDF5 call: the statement, where, and HDF5's own words.
common::Status Failure(common::StatusCode code, const char* statement, const char* file, int line,
                       std::string_view context);

// A variable-length UTF-8 string type (caller owns the handle).
hid_t NewVlenStringType();

// Attribute helpers on any object. Existing attributes are replaced.
// Replaces an attribute of that name; `fresh` (a just-created object) skips the lookup.
common::Status WriteStringAttribute(hid_t object, const char* name, const std::string& value, bool fresh = false);
common::Status WriteIntAttribute(hid_t object, const char* name, int64_t value, bool fresh = false);
common::Result<std::string> ReadStringAttribute(hid_t object, const char* name);
common::Result<int64_t> ReadIntAttribute(hid_t object, const char* name);
bool HasAttribute(hid_t object, const char* name);
bool LinkExists(hid_t location, const std::string& path);
// Names of the links directly under a group, in name order.
common::Result<std::vector<std::string>> ListLinks(hid_t group);

}  // namespace shammie::storage::h5

// Declares `Handle var` from an HDF5 call that returns an id; on failure returns
// a Status (code kInternal unless given) from the enclosing function.
#define SHAMMIE_H5_HANDLE(var, expr, context)                                                       \
  ::shammie::storage::h5::Handle var(expr);                                                        \
  if (!var.valid())                                                                                \
  return ::shammie::storage::h5::Failure(::shammie::common::StatusCode::kInternal, #expr, __FILE__, \
                                         __LINE__, (context))

// Checks an HDF5 call that returns herr_t.
#define SHAMMIE_H5_CHECK(expr, context)                                                               \
  do {                                                                                                \
    if ((expr) < 0)                                                                                   \
      return ::shammie::storage::h5::Failure(::shammie::common::StatusCode::kInternal, #expr, __FILE__, \
                                             __LINE__, (context));                                    \
  } while (false)
