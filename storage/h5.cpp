#include "storage/h5.hpp"

namespace shammie::storage::h5 {

void Handle::Reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: H5Idec_ref(id_); break;
  }
  id_ = -1;
}

void SilenceAutomaticErrors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {
herr_t CollectError(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n >= 6) return 0;  // the innermost frames say enough
  if (!out->empty()) out->append("; ");
  out->append(err->func_name ? err->func_name : "?");
  out->append(": ");
  out->append(err->desc ? err->desc : "");
  char minor[128] = {0};
  if (H5Eget_msg(err->min_num, nullptr, minor, sizeof(minor)) > 0) {
    out->append(" (");
    out->append(minor);
    out->append(")");
  }
  return 0;
}
}  // namespace

std::string ErrorStack() {
  std::string out;
  hid_t stack = H5Eget_current_stack();
  if (stack < 0) return "no HDF5 error stack";
  H5Ewalk2(stack, H5E_WALK_DOWNWARD, CollectError, &out);
  H5Eclose_stack(stack);
  return out.empty() ? "no detail from HDF5" : out;
}

common::Status Failure(common::StatusCode code, const char* statement, const char* file, int line,
                       std::string_view context) {
  std::string msg(context);
  msg += ": HDF5 call `";
  msg += statement;
  msg += "` failed at ";
  msg += file;
  msg += ":" + std::to_string(line) + ": " + ErrorStack();
  return common::Status(code, std::move(msg));
}

hid_t NewVlenStringType() {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return t;
  if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

bool HasAttribute(hid_t object, const char* name) { return H5Aexists(object, name) > 0; }

common::Status WriteStringAttribute(hid_t object, const char* name, const std::string& value, bool fresh) {
  const std::string context = std::string("writing attribute ") + name;
  if (!fresh && HasAttribute(object, name)) SHAMMIE_H5_CHECK(H5Adelete(object, name), context);
  SHAMMIE_H5_HANDLE(type, NewVlenStringType(), context);
  SHAMMIE_H5_HANDLE(space, H5Screate(H5S_SCALAR), context);
  SHAMMIE_H5_HANDLE(attr, H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), context);
  const char* ptr = value.c_str();
  SHAMMIE_H5_CHECK(H5Awrite(attr.get(), type.get(), &ptr), context);
  return common::Status::Ok();
}

common::Status WriteIntAttribute(hid_t object, const char* name, int64_t value, bool fresh) {
  const std::string context = std::string("writing attribute ") + name;
  if (!fresh && HasAttribute(object, name)) SHAMMIE_H5_CHECK(H5Adelete(object, name), context);
  SHAMMIE_H5_HANDLE(space, H5Screate(H5S_SCALAR), context);
  SHAMMIE_H5_HANDLE(attr, H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), context);
  SHAMMIE_H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), context);
  return common::Status::Ok();
}

common::Result<std::string> ReadStringAttribute(hid_t object, const char* name) {
  const std::string context = std::string("reading attribute ") + name;
  if (!HasAttribute(object, name)) return common::DataLoss(std::string("attribute `") + name + "` is missing");
  SHAMMIE_H5_HANDLE(attr, H5Aopen(object, name, H5P_DEFAULT), context);
  SHAMMIE_H5_HANDLE(file_type, H5Aget_type(attr.get()), context);
  if (H5Tget_class(file_type.get()) != H5T_STRING) {
    return common::DataLoss(std::string("attribute `") + name + "` is not a string");
  }
  if (H5Tis_variable_str(file_type.get()) > 0) {
    SHAMMIE_H5_HANDLE(type, NewVlenStringType(), context);
    char* ptr = nullptr;
    SHAMMIE_H5_CHECK(H5Aread(attr.get(), type.get(), &ptr), context);
    std::string out = ptr ? ptr : "";
    if (ptr) H5free_memory(ptr);
    return out;
  }
  // Fixed-length strings (e.g. written by other tools).
  size_t size = H5Tget_size(file_type.get());
  std::string out(size, '\0');
  SHAMMIE_H5_CHECK(H5Aread(attr.get(), file_type.get(), out.data()), context);
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

common::Result<int64_t> ReadIntAttribute(hid_t object, const char* name) {
  const std::string context = std::string("reading attribute ") + name;
  if (!HasAttribute(object, name)) return common::DataLoss(std::string("attribute `") + name + "` is missing");
  SHAMMIE_H5_HANDLE(attr, H5Aopen(object, name, H5P_DEFAULT), context);
  SHAMMIE_H5_HANDLE(file_type, H5Aget_type(attr.get()), context);
  if (H5Tget_class(file_type.get()) != H5T_INTEGER) {
    return common::DataLoss(std::string("attribute `") + name + "` is not an integer");
  }
  int64_t value = 0;
  SHAMMIE_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), context);
  return value;
}

bool LinkExists(hid_t location, const std::string& path) {
  // Check each component: H5Lexists fails on a missing intermediate group.
  size_t pos = 0;
  while (true) {
    size_t next = path.find('/', pos);
    std::string prefix = path.substr(0, next);
    if (!prefix.empty() && H5Lexists(location, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (next == std::string::npos) return true;
    pos = next + 1;
  }
}

namespace {
herr_t CollectLink(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}
}  // namespace

common::Result<std::vector<std::string>> ListLinks(hid_t group) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  SHAMMIE_H5_CHECK(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, CollectLink, &names), "listing group");
  return names;
}

}  // namespace shammie::storage::h5
