#include "workers/lm_kinds.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>

namespace shammie::workers {

namespace {

using EntryPoint = common::Status* (*)(JobContext*);

struct Plugin {
  void* handle = nullptr;
  std::string error;
};

const Plugin& LoadPlugin() {
  static Plugin plugin;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* dir = std::getenv("SHAMMIE_PLUGIN_DIR")) candidates.push_back(std::string(dir) + "/libshammie_lm.so");
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libshammie_lm.so").string());
    for (const auto& path : candidates) {
      if (!std::filesystem::exists(path)) continue;
      plugin.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (plugin.handle) return;
      plugin.error = path + ": " + ::dlerror();
      return;
    }
    plugin.error = "libshammie_lm.so not found (looked in $SHAMMIE_PLUGIN_DIR and next to the shammie executable)";
  });
  return plugin;
}

common::Status CallPlugin(const char* symbol, JobContext& ctx) {
  const Plugin& plugin = LoadPlugin();
  if (!plugin.handle) {
    return common::Internal("the LibTorch runtime plugin cannot be loaded: " + plugin.error);
  }
  auto entry = reinterpret_cast<EntryPoint>(::dlsym(plugin.handle, symbol));
  if (!entry) return common::Internal(std::string("the LibTorch runtime plugin lacks ") + symbol);
  std::unique_ptr<common::Status> status(entry(&ctx));
  return *status;
}

}  // namespace

void RegisterLmKinds(KindRegistry& registry) {
  JobKind k;
  k.name = "lm.train";
  k.doc = "Trains a small decoder-only transformer on a synthetic task (data-parallel over resources.ranks); reports "
          "loss, lr, val_loss, val_accuracy, test_accuracy (exact match).";
  k.config = common::Schema(k.name, k.doc);
  k.config.Enum("task", {"modadd", "copy", "reverse", "sort", "rotate"}).Default("modadd").Doc("Task family.");
  k.config.Int("modulus").Default(23).Range(2, 100000).Doc("modadd: the modulus p.");
  k.config.Int("shift").Default(0).Range(-1000, 1000)
      .Doc("modadd: added to every sum (a contradicting variant); rotate: positions.");
  k.config.Int("length").Default(6).Range(1, 64).Doc("String tasks: string length.");
  k.config.Int("alphabet").Default(8).Range(2, 26).Doc("String tasks: letters used.");
  k.config.Int("d_model").Default(64).Range(8, 4096).Doc("Model width.");
  k.config.Int("layers").Default(2).Range(1, 64).Doc("Transformer blocks.");
  k.config.Int("heads").Default(4).Range(1, 64).Doc("Attention heads (d_model / heads must be even).");
  k.config.Int("max_len").Default(64).Range(8, 8192).Doc("Longest sequence (rotary table size).");
  k.config.Int("steps").Default(300).Range(1, 10000000).Doc("Optimizer steps.");
  k.config.Int("batch").Default(32).Range(1, 1 << 20).Doc("Global batch: examples per step over all ranks.");
  k.config.Int("accumulation").Default(1).Range(1, 1024).Doc("Micro-batches per step.");
  k.config.Float("learning_rate").Default(3e-3).Min(0, true).Max(10).Doc("Peak learning rate.");
  k.config.Enum("optimizer", {"adamw", "sgd"}).Default("adamw")
      .Doc("adamw (betas 0.9, 0.95; decoupled weight decay) or sgd (momentum 0.9).");
  k.config.Int("warmup").Default(20).Range(0, 10000000).Doc("Linear warmup steps; then cosine decay to 10%.");
  k.config.Float("weight_decay").Default(0.01).Min(0).Doc("Weight decay.");
  k.config.Float("clip").Default(1.0).Min(0).Doc("Gradient-norm clip; 0 = off.");
  k.config.Int("eval_every").Default(50).Range(1, 10000000).Doc("Steps between validation evaluations.");
  k.config.Int("eval_examples").Default(256).Range(1, 1000000)
      .Doc("Validation/test examples when a split is too big to enumerate.");
  k.config.Int("patience").Default(0).Range(0, 1000000)
      .Doc("Evaluations without improvement before stopping early; 0 = off.");
  k.config.Int("threads").Default(1).Range(1, 256).Doc("Intra-op threads per rank.");
  k.run = [](JobContext& ctx) { return CallPlugin("shammie_lm_train", ctx); };
  common::Status s = registry.Register(std::move(k));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

}  // namespace shammie::workers
