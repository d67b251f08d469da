// Benchmark: training throughput of the LibTorch runtime (shammie::lm) on a
// fixed-shape task, against the same model in PyTorch eager
// (bench/lm_throughput_torch.py), in one run (bench/lm_throughput.sh,
// docs/benchmarks.md). Uses only the public API (workers/lm.hpp): no torch
// headers here.
//
// The task is `copy` with a fixed length L, so every batch is [B, 2L+2]
// tokens (BOS, L letters, '>', L letters; EOS is the last target).
//
// Usage: lm_throughput train --d D --layers N --heads H --length L --batch B
//                            --steps S --threads T [--warmup W]
// Prints one line of JSON:
//   tokens_per_second  the runtime's own figure (TrainResult), over the S
//                      steps of the timed run (it includes one evaluation of
//                      8 examples at the end, <1% of a step's work)
//   wall_s             the timed TrainLanguageModel call, end to end
//   loss               mean training loss over the S steps (sanity check)
// A first run of W steps (default 2) warms the process (allocator, BLAS and
// OpenMP thread pools) and is not timed.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "workers/lm.hpp"
#include "workers/local_context.hpp"

using namespace shammie;

namespace {

struct Args {
  std::string mode;
  std::map<std::string, int64_t> values;
  int64_t Get(const std::string& key, int64_t fallback) const {
    auto it = values.find(key);
    return it == values.end() ? fallback : it->second;
  }
};

bool Parse(int argc, char** argv, Args& args) {
  if (argc < 2) return false;
  args.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key.rfind("--", 0) != 0) return false;
    args.values[key.substr(2)] = std::strtoll(argv[i + 1], nullptr, 10);
  }
  return (argc - 2) % 2 == 0;
}

workers::TrainConfig MakeConfig(const Args& a, int64_t steps) {
  workers::TrainConfig c;
  c.task.family = "copy";
  c.task.length = a.Get("length", 31);
  c.task.alphabet = 8;
  c.model.d_model = a.Get("d", 128);
  c.model.layers = a.Get("layers", 5);
  c.model.heads = a.Get("heads", 4);
  c.model.max_len = 2 * c.task.length + 3;  // the runtime asks for one more than the longest sequence
  c.steps = steps;
  c.batch = a.Get("batch", 32);
  c.learning_rate = 3e-3;
  c.warmup = 2;
  c.eval_every = steps;   // one evaluation, at the last step
  c.eval_examples = 8;
  c.log_every = steps;    // train_loss = mean over all steps
  c.threads = a.Get("threads", 1);
  c.seed = 1;
  return c;
}

int Train(const Args& a) {
  const int64_t warmup = a.Get("warmup", 2);
  if (warmup > 0) {
    workers::LocalJobContext ctx("warmup", nlohmann::json::object(), 1);
    auto r = workers::TrainLanguageModel(MakeConfig(a, warmup), ctx);
    if (!r.ok()) {
      std::fprintf(stderr, "lm_throughput: warm-up run failed: %s\n", r.status().ToString().c_str());
      return 1;
    }
  }
  const workers::TrainConfig config = MakeConfig(a, a.Get("steps", 20));
  workers::LocalJobContext ctx("train", nlohmann::json::object(), 1);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = workers::TrainLanguageModel(config, ctx);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.ok()) {
    std::fprintf(stderr, "lm_throughput: training failed: %s\n", r.status().ToString().c_str());
    return 1;
  }
  const int64_t seq = 2 * config.task.length + 2;
  std::printf(
      "{\"side\": \"shammie\", \"mode\": \"train\", \"parameters\": %lld, \"batch\": %lld, \"seq\": %lld, "
      "\"steps\": %lld, \"threads\": %lld, \"tokens_per_second\": %.3f, \"wall_s\": %.4f, \"loss\": %.5f}\n",
      static_cast<long long>(r->parameters), static_cast<long long>(config.batch), static_cast<long long>(seq),
      static_cast<long long>(r->steps), static_cast<long long>(config.threads), r->tokens_per_second, wall,
      r->train_loss);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!Parse(argc, argv, args) || args.mode != "train") {
    std::fprintf(stderr,
                 "usage: lm_throughput train --d D --layers N --heads H --length L --batch B --steps S "
                 "--threads T [--warmup W]\n");
    return 2;
  }
  return Train(args);
}
