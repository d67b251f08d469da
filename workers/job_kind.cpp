#include "workers/job_kind.hpp"

#include "workers/continual.hpp"

#include "common/text.hpp"

namespace shammie::workers {

common::Status KindRegistry::Register(JobKind kind) {
  // Kind names are "family.name" with safe characters.
  if (!common::IsSafeName(kind.name) || kind.name.find('.') == std::string::npos) {
    return common::InvalidArgument("job kind name \"" + kind.name + "\" must look like `family.name`");
  }
  if (kinds_.count(kind.name)) return common::AlreadyExists("job kind " + kind.name + " is registered twice");
  std::string name = kind.name;
  kinds_.emplace(std::move(name), std::move(kind));
  return common::Status::Ok();
}

const JobKind* KindRegistry::Find(std::string_view name) const {
  auto it = kinds_.find(name);
  return it == kinds_.end() ? nullptr : &it->second;
}

std::vector<std::string> KindRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, kind] : kinds_) names.push_back(name);
  return names;
}

void RegisterBuiltinKinds(KindRegistry& registry) {
  RegisterBenchKinds(registry);
  RegisterToyKinds(registry);
  RegisterSimKinds(registry);
  RegisterLmKinds(registry);
  RegisterContinualKinds(registry);
  RegisterPreferenceKinds(registry);
  RegisterRecursiveKinds(registry);
}

}  // namespace shammie::workers
