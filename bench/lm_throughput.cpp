// Benchmark: training throughput of the LibTorch runtime (shammie::lm) on a
// fixed-shape task, against the same model in PyTorch eager
// (bench/lm_throughput_torch.py), in one run (bench/lm_throughput.sh,
// docs/benchmarks.md). Uses only the public API (workers/lm.hpp): no torch
// headers here.
//
// The task is `copy` with a fixed length L, so every batch is [B, 2L+2]
// tokens (BOS, L letters, '>', L letters; EOS is the last target).
//
// Usage:
//   lm_throughput train --d D --layers N --heads H --length L --batch B
//                       --steps S --threads T [--warmup W]
//   lm_throughput sample --d D --layers N --heads H --length L --batch B
//                        --rows R --new K --threads T
//   lm_throughput blas-core   (OpenBLAS's kernel family in this program)
// Prints one line of JSON (blas-core: the name alone).
//
// train: TrainLanguageModel for S steps of batch B.
//   tokens_per_second  the runtime's own figure (TrainResult: input positions,
//                      B x (2L+2) per step, per wall second of its loop; it
//                      includes one evaluation of 1 example at the end)
//   cpu_tokens_per_second  the same positions per CPU second of the process,
//                      from the difference between a run of W steps and the
//                      run of S steps (setup and evaluations cancel): robust
//                      on a shared machine at one thread, where wall time
//                      also counts time the scheduler gave to others
//   wall_s             the timed TrainLanguageModel call, end to end
//   loss               mean training loss over the S steps (sanity check)
//   A first run of W steps (default 2) warms the process (allocator, BLAS and
//   OpenMP thread pools) and is not timed.
// sample: the lm.sample job (RunLmSample) on a model of this configuration:
//   greedy decoding of R prompts of the copy task (BOS, L letters, '>': L+2
//   tokens, no padding) in batches of B rows, K new tokens each (the model's
//   max_len is at least L+2+K). The model is the runtime's initialisation after one
//   training step at learning rate 0 (weights do not matter for speed, and
//   greedy decoding of it must not stop early: a row that emits EOS before K
//   tokens fails the run, so both sides decode exactly R x K tokens).
//   tokens_per_second  lm.sample's own metric (generated tokens per second of
//                      its sampling loop: prefill, decoding, and the per-row
//                      bookkeeping of the samples table)
//   cpu_tokens_per_second  per CPU second, from the difference between an
//                      lm.sample of B rows and one of R rows
//   One untimed lm.sample of one batch warms the process first.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <variant>

#include <dlfcn.h>
#include <time.h>
#include <unistd.h>

#include "common/blas_core.hpp"
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
  c.eval_examples = 1;    // its cost is in the runtime's tokens/s: keep it to one example
  c.log_every = steps;    // train_loss = mean over all steps
  c.threads = a.Get("threads", 1);
  c.seed = 1;
  return c;
}

// The BLAS libraries mapped into this process and OpenBLAS's kernel family,
// as two JSON members (to show that both sides use the same library and
// kernels).
std::string BlasInfo() {
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  for (std::string line; std::getline(maps, line);) {
    const size_t slash = line.find('/');
    if (slash != std::string::npos && line.find("blas") != std::string::npos) libs.insert(line.substr(slash));
  }
  std::string out = "\"blas\": [";
  for (const auto& l : libs) out += (out.back() != '[' ? ", \"" : "\"") + l + "\"";
  using CoreName = char* (*)();
  auto core_name = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return out + "], \"blas_core\": \"" + (core_name ? core_name() : "not OpenBLAS") + "\"";
}

// CPU seconds of this process (all threads).
double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

int Train(const Args& a) {
  const int64_t warmup = std::max<int64_t>(1, a.Get("warmup", 2)), steps = a.Get("steps", 20);
  if (steps <= warmup) {
    std::fprintf(stderr, "lm_throughput: --steps must exceed --warmup\n");
    return 2;
  }
  // Runs of `n` steps: the first warms the process; the second and third
  // differ only in their step count, so their CPU-time difference is the
  // CPU cost of steps - warmup steps (setup and evaluations cancel).
  double cpu[3] = {0, 0, 0}, wall = 0;
  common::Result<workers::TrainResult> r = common::Internal("not run");
  const int64_t runs[3] = {warmup, warmup, steps};
  for (int i = 0; i < 3; ++i) {
    workers::LocalJobContext ctx("train", nlohmann::json::object(), 1);
    const double c0 = CpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    r = workers::TrainLanguageModel(MakeConfig(a, runs[i]), ctx);
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu[i] = CpuSeconds() - c0;
    if (!r.ok()) {
      std::fprintf(stderr, "lm_throughput: training failed: %s\n", r.status().ToString().c_str());
      return 1;
    }
  }
  const workers::TrainConfig config = MakeConfig(a, steps);
  const int64_t seq = 2 * config.task.length + 2;
  const double cpu_tps = static_cast<double>((steps - warmup) * config.batch * seq) / (cpu[2] - cpu[1]);
  std::printf(
      "{\"side\": \"shammie\", \"mode\": \"train\", \"parameters\": %lld, \"batch\": %lld, \"seq\": %lld, "
      "\"steps\": %lld, \"threads\": %lld, \"tokens_per_second\": %.3f, \"cpu_tokens_per_second\": %.3f, "
      "\"wall_s\": %.4f, \"loss\": %.5f, %s}\n",
      static_cast<long long>(r->parameters), static_cast<long long>(config.batch), static_cast<long long>(seq),
      static_cast<long long>(r->steps), static_cast<long long>(config.threads), r->tokens_per_second, cpu_tps, wall,
      r->train_loss, BlasInfo().c_str());
  return 0;
}

// The "tokens" and "stopped" columns of the samples table: total tokens, and
// whether any row ended on a stop token.
std::pair<int64_t, bool> Generated(const workers::LocalJobContext& ctx) {
  int64_t tokens = 0;
  bool stopped = false;
  const auto& table = ctx.tables().at("samples");
  for (const auto& column : table.columns) {
    const auto* values = std::get_if<std::vector<int64_t>>(&column.values);
    if (!values) continue;
    for (int64_t v : *values) {
      if (column.name == "tokens") tokens += v;
      if (column.name == "stopped") stopped = stopped || v != 0;
    }
  }
  return {tokens, stopped};
}

int Sample(const Args& a) {
  const int64_t length = a.Get("length", 31), batch = a.Get("batch", 8), rows = a.Get("rows", 32);
  const int64_t new_tokens = a.Get("new", 64), threads = a.Get("threads", 1);
  if (rows <= batch) {
    std::fprintf(stderr, "lm_throughput: --rows must exceed --batch\n");
    return 2;
  }
  const nlohmann::json task = {{"task", "copy"}, {"length", length}, {"alphabet", 8}};
  // 1. The model: one step at learning rate 0, checkpointed into a scratch directory.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("shammie-lm-throughput-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  workers::TrainConfig tc = MakeConfig(a, 1);
  tc.model.max_len = std::max(2 * length + 3, length + 2 + new_tokens);  // training needs 2L+3, decoding L+2+K
  tc.batch = 1;
  tc.learning_rate = 0;
  workers::LocalJobContext train_ctx("model", task, 1);
  train_ctx.set_artifact_dir(dir.string());
  auto trained = workers::TrainLanguageModel(tc, train_ctx);
  if (!trained.ok() || train_ctx.recorded().empty()) {
    std::fprintf(stderr, "lm_throughput: making the model failed: %s\n",
                 trained.ok() ? "no checkpoint recorded" : trained.status().ToString().c_str());
    std::filesystem::remove_all(dir);
    return 1;
  }
  // 2. lm.sample: once on one batch to warm up, then timed.
  auto run = [&](int64_t n, double* wall, common::Status* status) {
    nlohmann::json config = {{"split", "test"}, {"prompts", n},      {"samples", 1},
                             {"temperature", 0.0}, {"top_k", 0},     {"top_p", 1.0},
                             {"max_new_tokens", new_tokens}, {"batch", batch}, {"threads", threads}};
    auto ctx = std::make_unique<workers::LocalJobContext>("sample", config, 1);
    ctx->set_inputs(train_ctx.recorded());
    const auto t0 = std::chrono::steady_clock::now();
    *status = workers::RunLmSample(*ctx);
    *wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return ctx;
  };
  // lm.sample of one batch warms the process; then one batch and R rows,
  // whose CPU-time difference is the cost of R - B rows (setup cancels).
  double wall = 0, cpu_one = 0, cpu_all = 0;
  common::Status status;
  run(batch, &wall, &status);
  std::unique_ptr<workers::LocalJobContext> ctx;
  if (status.ok()) {
    const double c0 = CpuSeconds();
    run(batch, &wall, &status);
    cpu_one = CpuSeconds() - c0;
  }
  if (status.ok()) {
    const double c0 = CpuSeconds();
    ctx = run(rows, &wall, &status);
    cpu_all = CpuSeconds() - c0;
  }
  std::filesystem::remove_all(dir);
  if (!status.ok()) {
    std::fprintf(stderr, "lm_throughput: lm.sample failed: %s\n", status.ToString().c_str());
    return 1;
  }
  const auto [tokens, stopped] = Generated(*ctx);
  if (stopped || tokens != rows * new_tokens) {
    std::fprintf(stderr, "lm_throughput: greedy decoding stopped early (%lld of %lld tokens); the two sides would "
                 "not decode the same number of tokens\n", static_cast<long long>(tokens),
                 static_cast<long long>(rows * new_tokens));
    return 1;
  }
  const double tps = ctx->metrics().at("tokens_per_second").back().value;
  const double cpu_tps = static_cast<double>((rows - batch) * new_tokens) / (cpu_all - cpu_one);
  std::printf(
      "{\"side\": \"shammie\", \"mode\": \"sample\", \"parameters\": %lld, \"batch\": %lld, \"rows\": %lld, "
      "\"prompt\": %lld, \"new\": %lld, \"threads\": %lld, \"tokens_per_second\": %.3f, \"cpu_tokens_per_second\": %.3f, "
      "\"wall_s\": %.4f, %s}\n",
      static_cast<long long>(trained->parameters), static_cast<long long>(batch), static_cast<long long>(rows),
      static_cast<long long>(length + 2), static_cast<long long>(new_tokens), static_cast<long long>(threads), tps,
      cpu_tps, wall, BlasInfo().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The kernels shammie's workers get (common/blas_core.hpp). OpenBLAS is
  // linked into this program and chose its kernels before main, so start
  // again with the variable set, as the shammie executable has it set before
  // it opens the LibTorch plugin.
  if (shammie::common::PreferOpenBlasCore().set_now) {
    ::execv("/proc/self/exe", argv);
    std::perror("lm_throughput: execv /proc/self/exe");
    return 1;
  }
  if (argc == 2 && std::string(argv[1]) == "blas-core") {  // the kernels this program runs, for the script
    using CoreName = char* (*)();
    auto core_name = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    std::printf("%s\n", core_name ? core_name() : "");
    return 0;
  }
  Args args;
  if (!Parse(argc, argv, args) || (args.mode != "train" && args.mode != "sample")) {
    std::fprintf(stderr,
                 "usage: lm_throughput train --d D --layers N --heads H --length L --batch B --steps S "
                 "--threads T [--warmup W]\n"
                 "       lm_throughput sample --d D --layers N --heads H --length L --batch B --rows R --new K "
                 "--threads T\n");
    return 2;
  }
  return args.mode == "train" ? Train(args) : Sample(args);
}
