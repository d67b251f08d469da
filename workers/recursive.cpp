#include "workers/recursive.hpp"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <deque>

#include "common/random.hpp"

namespace shammie::workers::rec {

common::Result<Tying> ParseTying(std::string_view name) {
  if (name == "cycle") return Tying::kCycle;
  if (name == "sequence") return Tying::kSequence;
  return common::InvalidArgument("tying must be \"cycle\" or \"sequence\", not \"" + std::string(name) + "\"");
}

common::Result<Init> ParseInit(std::string_view name) {
  if (name == "stepwise") return Init::kStepwise;
  if (name == "average") return Init::kAverage;
  if (name == "lower") return Init::kLower;
  return common::InvalidArgument("recursive init must be \"stepwise\", \"average\" or \"lower\", not \"" +
                                 std::string(name) + "\"");
}

std::string_view TyingName(Tying t) { return t == Tying::kCycle ? "cycle" : "sequence"; }

std::string_view InitName(Init i) {
  switch (i) {
    case Init::kStepwise: return "stepwise";
    case Init::kAverage: return "average";
    case Init::kLower: return "lower";
  }
  return "?";
}

common::Status CheckLoops(int64_t layers, int64_t loops) {
  if (loops < 1 || loops > layers || layers % loops != 0) {
    return common::InvalidArgument("loops (" + std::to_string(loops) + ") must divide layers (" +
                                   std::to_string(layers) + ")");
  }
  return common::Status::Ok();
}

std::vector<int64_t> LayerMap(int64_t layers, int64_t loops, Tying tying) {
  const int64_t shared = layers / loops;
  std::vector<int64_t> map(static_cast<size_t>(layers));
  for (int64_t l = 0; l < layers; ++l) map[static_cast<size_t>(l)] = tying == Tying::kCycle ? l % shared : l / loops;
  return map;
}

std::vector<int64_t> StepwiseLayers(int64_t layers, int64_t shared) {
  std::vector<int64_t> out;
  if (shared == 1) return {0};
  const int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);  // nearbyint: halves to even, as numpy's round
  for (int64_t k = 0; k < shared; ++k) {
    const double x = static_cast<double>(k) * static_cast<double>(layers - 1) / static_cast<double>(shared - 1);
    out.push_back(static_cast<int64_t>(std::nearbyint(x)));
  }
  std::fesetround(saved);
  return out;
}

std::vector<std::vector<int64_t>> InitSources(int64_t layers, int64_t loops, Tying tying, Init init) {
  const int64_t shared = layers / loops;
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(shared));
  if (init == Init::kStepwise) {
    const std::vector<int64_t> picked = StepwiseLayers(layers, shared);
    for (int64_t k = 0; k < shared; ++k) out[static_cast<size_t>(k)] = {picked[static_cast<size_t>(k)]};
  } else if (init == Init::kLower) {
    for (int64_t k = 0; k < shared; ++k) out[static_cast<size_t>(k)] = {k};
  } else {
    const std::vector<int64_t> map = LayerMap(layers, loops, tying);
    for (int64_t l = 0; l < layers; ++l) out[static_cast<size_t>(map[static_cast<size_t>(l)])].push_back(l);
  }
  return out;
}

int64_t LoraParameters(int64_t rank, int64_t d_in, int64_t d_out) { return rank * (d_in + d_out); }

std::string_view BatchingName(Batching b) {
  switch (b) {
    case Batching::kStatic: return "static";
    case Batching::kSequence: return "sequence";
    case Batching::kDepth: return "depth";
  }
  return "?";
}

common::Result<Batching> ParseBatching(std::string_view name) {
  if (name == "static") return Batching::kStatic;
  if (name == "sequence") return Batching::kSequence;
  if (name == "depth") return Batching::kDepth;
  return common::InvalidArgument("batching must be \"static\", \"sequence\" or \"depth\", not \"" + std::string(name) +
                                 "\"");
}

common::Status CheckBatchingOptions(const BatchingOptions& o) {
  if (o.requests < 1) return common::InvalidArgument("requests must be at least 1");
  if (o.batch < 1) return common::InvalidArgument("batch must be at least 1");
  if (o.loops < 1) return common::InvalidArgument("loops must be at least 1");
  if (!(o.exit_prob >= 0 && o.exit_prob <= 1)) return common::InvalidArgument("exit_prob must lie in [0, 1]");
  if (o.min_tokens < 1 || o.max_tokens < o.min_tokens) {
    return common::InvalidArgument("tokens per request: need 1 <= min_tokens <= max_tokens");
  }
  return common::Status::Ok();
}

double ExpectedDepth(int64_t loops, double exit_prob) {
  double sum = 0, stay = 1;
  for (int64_t j = 0; j < loops; ++j) {
    sum += stay;
    stay *= 1 - exit_prob;
  }
  return sum;
}

namespace {

// Each request's token depths, from its own stream.
std::vector<std::vector<int64_t>> Depths(const BatchingOptions& o) {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(o.requests));
  for (int64_t r = 0; r < o.requests; ++r) {
    common::SplitMix64 rng(common::DeriveSeed(o.seed, "request", static_cast<uint64_t>(r)));
    const int64_t n = rng.NextInt(o.min_tokens, o.max_tokens);
    auto& d = out[static_cast<size_t>(r)];
    for (int64_t t = 0; t < n; ++t) {
      int64_t depth = 1;
      while (depth < o.loops && !(rng.NextDouble() < o.exit_prob)) ++depth;
      d.push_back(o.early_exit ? depth : o.loops);
    }
  }
  return out;
}

struct Row {
  int64_t request = -1;  // -1: empty
  size_t token = 0;
  int64_t stage = 0;     // stages of the current token done (depth-wise batching)
};

}  // namespace

BatchingResult SimulateBatching(const BatchingOptions& o, Batching policy) {
  const std::vector<std::vector<int64_t>> depths = Depths(o);
  BatchingResult res;
  for (const auto& d : depths) {
    res.tokens += static_cast<int64_t>(d.size());
    for (int64_t x : d) res.stages += x;
  }
  std::deque<int64_t> queue;
  for (int64_t r = 0; r < o.requests; ++r) queue.push_back(r);
  std::vector<Row> rows(static_cast<size_t>(o.batch));
  auto refill = [&](Row& row) {
    if (row.request >= 0 || queue.empty()) return;
    row = Row{queue.front(), 0, 0};
    queue.pop_front();
  };
  auto occupied = [&] {
    return std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.request >= 0; });
  };
  while (true) {
    // Static batching takes a new group only when the whole batch is empty.
    if (policy != Batching::kStatic || !occupied()) {
      for (Row& row : rows) refill(row);
    }
    if (!occupied()) break;
    if (policy == Batching::kDepth) {
      ++res.calls;
      res.row_slots += o.batch;
      for (Row& row : rows) {
        if (row.request < 0) continue;
        const auto& d = depths[static_cast<size_t>(row.request)];
        if (++row.stage == d[row.token]) {
          row.stage = 0;
          if (++row.token == d.size()) row.request = -1;
        }
      }
      continue;
    }
    // One decode step: as many calls as its deepest token needs.
    int64_t deepest = 0;
    for (const Row& row : rows) {
      if (row.request >= 0) deepest = std::max(deepest, depths[static_cast<size_t>(row.request)][row.token]);
    }
    res.calls += deepest;
    res.row_slots += deepest * o.batch;
    for (Row& row : rows) {
      if (row.request < 0) continue;
      if (++row.token == depths[static_cast<size_t>(row.request)].size()) row.request = -1;
    }
  }
  return res;
}

}  // namespace shammie::workers::rec
