#include "orchestrator/shard.hpp"

#include <algorithm>
#include <charconv>
#include <numeric>
#include <unordered_map>

namespace shammie::orchestrator {

namespace {

// Component of every job (numbered by first appearance in plan order).
std::vector<int64_t> Components(const Plan& plan, int64_t* count) {
  const size_t n = plan.jobs.size();
  std::vector<size_t> parent(n);
  std::iota(parent.begin(), parent.end(), size_t{0});
  auto find = [&](size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  std::unordered_map<std::string, size_t> index;
  index.reserve(n);
  for (size_t i = 0; i < n; ++i) index.emplace(plan.jobs[i].id, i);
  auto join = [&](size_t x, size_t y) {
    const size_t a = find(x), b = find(y);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);
  };
  std::unordered_map<std::string, size_t> first_of_stage;  // unsplit stages: one component each
  for (size_t i = 0; i < n; ++i) {
    for (const auto& in : plan.jobs[i].inputs) {
      auto it = index.find(in);
      if (it != index.end()) join(i, it->second);
    }
    const std::string& stage = plan.jobs[i].stage;
    if (std::find(plan.unsplit_stages.begin(), plan.unsplit_stages.end(), stage) != plan.unsplit_stages.end()) {
      auto [it, fresh] = first_of_stage.emplace(stage, i);
      if (!fresh) join(i, it->second);
    }
  }
  std::vector<int64_t> comp(n, -1);
  std::unordered_map<size_t, int64_t> number;
  for (size_t i = 0; i < n; ++i) {
    auto [it, fresh] = number.emplace(find(i), static_cast<int64_t>(number.size()));
    comp[i] = it->second;
  }
  *count = static_cast<int64_t>(number.size());
  return comp;
}

}  // namespace

int64_t IndependentParts(const Plan& plan) {
  int64_t count = 0;
  Components(plan, &count);
  return count;
}

Plan ShardOf(const Plan& plan, int64_t index, int64_t count) {
  int64_t parts = 0;
  const std::vector<int64_t> comp = Components(plan, &parts);
  std::vector<int64_t> size(static_cast<size_t>(parts), 0);
  for (int64_t c : comp) ++size[static_cast<size_t>(c)];
  std::vector<int64_t> order(static_cast<size_t>(parts));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return size[static_cast<size_t>(a)] > size[static_cast<size_t>(b)]; });
  std::vector<int64_t> load(static_cast<size_t>(count), 0), shard_of(static_cast<size_t>(parts), 0);
  for (int64_t c : order) {
    const auto lightest = std::min_element(load.begin(), load.end()) - load.begin();
    shard_of[static_cast<size_t>(c)] = lightest;
    load[static_cast<size_t>(lightest)] += size[static_cast<size_t>(c)];
  }
  Plan out;
  out.experiment = plan.experiment;
  out.spec_hash = plan.spec_hash;
  out.unsplit_stages = plan.unsplit_stages;
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    if (shard_of[static_cast<size_t>(comp[i])] == index) out.jobs.push_back(plan.jobs[i]);
  }
  return out;
}

common::Result<ShardSpec> ParseShard(const std::string& text) {
  const size_t slash = text.find('/');
  ShardSpec s;
  auto num = [](std::string_view v, int64_t* out) {
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    return !v.empty() && ec == std::errc() && ptr == v.data() + v.size();
  };
  if (slash == std::string::npos || !num(std::string_view(text).substr(0, slash), &s.index) ||
      !num(std::string_view(text).substr(slash + 1), &s.count) || s.count < 1 || s.index < 0 || s.index >= s.count) {
    return common::InvalidArgument("--shard \"" + text + "\": expected I/N with 0 <= I < N, e.g. 3/8");
  }
  return s;
}

}  // namespace shammie::orchestrator
