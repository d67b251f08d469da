// The transformer, KV-cache generation and the checkpoint container.
#include "workers/lm_torch.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/random.hpp"
#include "common/wire.hpp"
#include "storage/checkpoint_store.hpp"
#include "storage/safetensors.hpp"
#include "workers/fused_cpu.hpp"
#include "workers/recursive.hpp"

namespace shammie::workers::lm {

namespace nn = torch::nn;

namespace {

nn::Linear MakeLinear(int64_t in, int64_t out) { return nn::Linear(nn::LinearOptions(in, out).bias(false)); }

}  // namespace

Tensor Rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

// --- fused CPU layers (workers/fused_cpu.hpp) ---

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// SHAMMIE_FUSED=0 runs the composite LibTorch ops instead (to compare).
bool FusedEnabled() {
  static const bool on = [] {
    const char* v = std::getenv("SHAMMIE_FUSED");
    return !(v && std::string(v) == "0");
  }();
  return on;
}

bool Fusable(const Tensor& t) {
  return FusedEnabled() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
}

float* F32(Tensor& t) { return t.data_ptr<float>(); }
const float* F32(const Tensor& t) { return t.data_ptr<float>(); }

// Rows [0, rows) over LibTorch's intra-op threads, about 64 KB of work a chunk.
template <typename F>
void ForRows(int64_t rows, int64_t row_floats, F&& f) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_floats)), f);
}

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& w_in, double eps) {
    Tensor x = x_in.contiguous(), w = w_in.contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    Tensor y = torch::empty_like(x), r = torch::empty({rows}, x.options());
    ForRows(rows, d, [&](int64_t b, int64_t e) {
      fused::RmsNormForward(F32(x), F32(w), static_cast<float>(eps), d, b, e, F32(y), F32(r));
    });
    ctx->save_for_backward({x, w, r});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &w = saved[1], &r = saved[2];
    const Tensor dy = grads[0].contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty_like(x);
      ForRows(rows, d, [&](int64_t b, int64_t e) {
        fused::RmsNormBackwardInput(F32(x), F32(w), F32(r), F32(dy), d, b, e, F32(dx));
      });
    }
    if (ctx->needs_input_grad(1)) {
      dw = torch::empty_like(w);
      fused::RmsNormBackwardWeight(F32(x), F32(r), F32(dy), rows, d, F32(dw));
    }
    return {dx, dw, Tensor()};
  }
};

// q, k with rotary positions and v, each [b, heads, t, hd], from the packed
// projection [b, t, 3d]; cos/sin [cb, 1, t, hd / 2] with cb 1 or b.
struct QkvHeadsFn : torch::autograd::Function<QkvHeadsFn> {
  static fused::RopeShape Shape(const Tensor& qkv, const Tensor& cos, int64_t heads) {
    const int64_t b = qkv.size(0), t = qkv.size(1), d = qkv.size(2) / 3;
    return fused::RopeShape{b, t, heads, d / heads, 3 * d, cos.size(0) == 1 ? 0 : t * (d / heads / 2)};
  }
  static variable_list forward(AutogradContext* ctx, const Tensor& qkv_in, const Tensor& cos_in, const Tensor& sin_in,
                               int64_t heads) {
    Tensor qkv = qkv_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
    const fused::RopeShape s = Shape(qkv, cos, heads);
    const int64_t d = s.heads * s.hd;
    auto opts = qkv.options();
    Tensor q = torch::empty({s.b, s.heads, s.t, s.hd}, opts), k = torch::empty_like(q), v = torch::empty_like(q);
    const float* base = F32(qkv);
    ForRows(s.b * s.t, 3 * d, [&](int64_t b, int64_t e) {
      fused::RopeToHeads(base, F32(cos), F32(sin), s, b, e, F32(q));
      fused::RopeToHeads(base + d, F32(cos), F32(sin), s, b, e, F32(k));
      fused::ToHeads(base + 2 * d, s, b, e, F32(v));
    });
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["b"] = s.b;
    ctx->saved_data["t"] = s.t;
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["d"] = d;
    return {q, k, v};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &cos = saved[0], &sin = saved[1];
    const int64_t b = ctx->saved_data["b"].toInt(), t = ctx->saved_data["t"].toInt();
    const int64_t heads = ctx->saved_data["heads"].toInt(), d = ctx->saved_data["d"].toInt();
    const fused::RopeShape s{b, t, heads, d / heads, 3 * d, cos.size(0) == 1 ? 0 : t * (d / heads / 2)};
    Tensor dqkv = torch::empty({b, t, 3 * d}, cos.options());
    Tensor g[3];
    for (int i = 0; i < 3; ++i) {
      g[i] = grads[i].defined() ? grads[i].contiguous() : torch::zeros({b, heads, t, d / heads}, cos.options());
    }
    float* base = F32(dqkv);
    ForRows(b * t, 3 * d, [&](int64_t lo, int64_t hi) {
      fused::RopeFromHeads(F32(g[0]), F32(cos), F32(sin), s, lo, hi, base);
      fused::RopeFromHeads(F32(g[1]), F32(cos), F32(sin), s, lo, hi, base + d);
      fused::FromHeads(F32(g[2]), s, lo, hi, base + 2 * d);
    });
    return {dqkv, Tensor(), Tensor(), Tensor()};
  }
};

// softmax(scale * scores) over the last axis with `mask` (bool, broadcast to
// the scores' shape; true = no weight) taking no weight.
struct MaskedSoftmaxFn : torch::autograd::Function<MaskedSoftmaxFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& scores_in, const Tensor& mask, double scale) {
    Tensor scores = scores_in.contiguous();
    const int64_t n = scores.size(-1), rows = scores.numel() / n;
    fused::MaskLayout layout{nullptr, scores.size(1), scores.size(2), {0, 0, 0, 0}};
    Tensor m;
    if (mask.defined() && mask.numel() > 0) {  // an empty mask masks nothing
      m = mask.expand(scores.sizes());
      layout.mask = reinterpret_cast<const uint8_t*>(m.data_ptr<bool>());
      for (int i = 0; i < 4; ++i) layout.stride[i] = m.stride(i);
    }
    Tensor p = torch::empty_like(scores);
    ForRows(rows, n, [&](int64_t b, int64_t e) {
      fused::MaskedSoftmaxForward(F32(scores), layout, static_cast<float>(scale), n, b, e, F32(p));
    });
    ctx->save_for_backward({p});
    ctx->saved_data["scale"] = scale;
    return p;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor p = ctx->get_saved_variables()[0];
    const Tensor dp = grads[0].contiguous();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t n = p.size(-1), rows = p.numel() / n;
    Tensor ds = torch::empty_like(p);
    ForRows(rows, n, [&](int64_t b, int64_t e) {
      fused::MaskedSoftmaxBackward(F32(p), F32(dp), static_cast<float>(scale), n, b, e, F32(ds));
    });
    return {ds, Tensor(), Tensor()};
  }
};

// silu(a) * g over h = [a, g] on the last axis ([..., 2f] -> [..., f]).
struct SwiGluFn : torch::autograd::Function<SwiGluFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& h_in) {
    Tensor h = h_in.contiguous();
    const int64_t f = h.size(-1) / 2, rows = h.numel() / (2 * f);
    std::vector<int64_t> shape = h.sizes().vec();
    shape.back() = f;
    Tensor y = torch::empty(shape, h.options());
    ForRows(rows, 2 * f, [&](int64_t b, int64_t e) { fused::SwiGluForward(F32(h), f, b, e, F32(y)); });
    ctx->save_for_backward({h});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor h = ctx->get_saved_variables()[0];
    const Tensor dy = grads[0].contiguous();
    const int64_t f = h.size(-1) / 2, rows = h.numel() / (2 * f);
    Tensor dh = torch::empty_like(h);
    ForRows(rows, 2 * f, [&](int64_t b, int64_t e) { fused::SwiGluBackward(F32(h), F32(dy), f, b, e, F32(dh)); });
    return {dh};
  }
};

Tensor NormOf(const Tensor& x, const Tensor& weight) {
  if (Fusable(x) && Fusable(weight)) return RmsNormFn::apply(x, weight, 1e-6);
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * weight;
}

}  // namespace

Tensor FusedRmsNorm(const Tensor& x, const Tensor& weight) { return RmsNormFn::apply(x, weight, 1e-6); }
std::vector<Tensor> FusedQkvHeads(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int64_t heads) {
  return QkvHeadsFn::apply(qkv, cos, sin, heads);
}
Tensor FusedMaskedSoftmax(const Tensor& scores, const Tensor& mask, double scale) {
  // autograd functions take no undefined tensors: "no mask" is an empty one
  return MaskedSoftmaxFn::apply(scores, mask.defined() ? mask : torch::empty({0}, torch::kBool), scale);
}
Tensor FusedSwiGlu(const Tensor& h) { return SwiGluFn::apply(h); }

RMSNormImpl::RMSNormImpl(int64_t d) { weight = register_parameter("weight", torch::ones({d})); }
Tensor RMSNormImpl::forward(const Tensor& x) { return NormOf(x, weight); }
Tensor RMSNormImpl::WithDelta(const Tensor& x, const Tensor& weight_delta) {
  if (!weight_delta.defined()) return forward(x);
  return NormOf(x, weight + weight_delta);
}

BlockImpl::BlockImpl(int64_t d, int64_t heads, int64_t ff) : heads_(heads), head_dim_(d / heads) {
  attn_norm = register_module("attn_norm", RMSNorm(d));
  wq = register_module("wq", MakeLinear(d, d));
  wk = register_module("wk", MakeLinear(d, d));
  wv = register_module("wv", MakeLinear(d, d));
  wo = register_module("wo", MakeLinear(d, d));
  mlp_norm = register_module("mlp_norm", RMSNorm(d));
  w1 = register_module("w1", MakeLinear(d, ff));
  w3 = register_module("w3", MakeLinear(d, ff));
  w2 = register_module("w2", MakeLinear(ff, d));
}

nn::Linear& BlockImpl::Projection(int i) {
  nn::Linear* all[7] = {&wq, &wk, &wv, &wo, &w1, &w3, &w2};
  return *all[i];
}

namespace {

// Rotary tables as [cb, 1, t, half] with cb 1 or b, which the fused
// relayout reads.
bool FusableTables(const Tensor& cos, int64_t b, int64_t t) {
  return cos.dim() == 4 && (cos.size(0) == 1 || cos.size(0) == b) && cos.size(1) == 1 && cos.size(2) == t;
}

// Projection i of `in`, plus the position's LoRA b a when relaxed.
Tensor Project(BlockImpl& block, int i, const Tensor& in, const BlockLora* lora) {
  Tensor y = block.Projection(i)(in);
  if (lora) y = y + torch::matmul(torch::matmul(in, lora->a[i].t()), lora->b[i].t());
  return y;
}

// With a cache: this step's keys and values go after the cached ones, and k,
// v become everything the step attends to.
void AppendToCache(KvCache* cache, size_t layer, Tensor& k, Tensor& v) {
  if (!cache) return;
  if (cache->k[layer].defined()) {
    k = torch::cat({cache->k[layer], k}, 2);
    v = torch::cat({cache->v[layer], v}, 2);
  }
  cache->k[layer] = k;
  cache->v[layer] = v;
}

}  // namespace

Tensor BlockImpl::forward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& mask, KvCache* cache,
                          size_t layer, const BlockLora* lora) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  if (Fusable(x) && FusableTables(cos, b, t)) return FusedForward(x, cos, sin, mask, cache, layer, lora);
  auto proj = [&](int i, const Tensor& in) { return Project(*this, i, in, lora); };
  Tensor h = lora ? attn_norm->WithDelta(x, lora->attn_norm) : attn_norm(x);
  auto split = [&](const Tensor& y) { return y.view({b, t, heads_, head_dim_}).transpose(1, 2); };
  Tensor q = Rope(split(proj(0, h)), cos, sin), k = Rope(split(proj(1, h)), cos, sin), v = split(proj(2, h));
  AppendToCache(cache, layer, k, v);
  Tensor att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  att = torch::softmax(att.masked_fill(mask, -std::numeric_limits<float>::infinity()), -1);
  Tensor y = torch::matmul(att, v).transpose(1, 2).reshape({b, t, d});
  Tensor out = x + proj(3, y);
  Tensor m = lora ? mlp_norm->WithDelta(out, lora->mlp_norm) : mlp_norm(out);
  return out + proj(6, torch::silu(proj(4, m)) * proj(5, m));
}

// The same block through the fused CPU layers. q, k and v come from one
// GEMM against the stacked weights when training (and w1, w3 likewise): one
// pass over the activations instead of three. Without gradients the stacked
// weights would be copied at every decoding step, and with LoRA each
// projection has its own low-rank term, so there the projections run apart
// and their outputs are stacked instead.
Tensor BlockImpl::FusedForward(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& mask,
                               KvCache* cache, size_t layer, const BlockLora* lora) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  const bool stack_weights = torch::GradMode::is_enabled() && !lora;
  auto proj = [&](int i, const Tensor& in) { return Project(*this, i, in, lora); };
  Tensor h = lora ? attn_norm->WithDelta(x, lora->attn_norm) : attn_norm(x);
  Tensor qkv = stack_weights ? torch::linear(h, torch::cat({wq->weight, wk->weight, wv->weight}))
                             : torch::cat({proj(0, h), proj(1, h), proj(2, h)}, -1);
  std::vector<Tensor> heads = QkvHeadsFn::apply(qkv, cos, sin, heads_);
  Tensor q = heads[0], k = heads[1], v = heads[2];
  AppendToCache(cache, layer, k, v);
  Tensor att = FusedMaskedSoftmax(torch::matmul(q, k.transpose(-2, -1)), mask,
                                  1.0 / std::sqrt(static_cast<double>(head_dim_)));
  Tensor y = torch::matmul(att, v).transpose(1, 2).reshape({b, t, d});
  Tensor out = x + proj(3, y);
  Tensor m = lora ? mlp_norm->WithDelta(out, lora->mlp_norm) : mlp_norm(out);
  Tensor gates = stack_weights ? torch::linear(m, torch::cat({w1->weight, w3->weight}))
                               : torch::cat({proj(4, m), proj(5, m)}, -1);
  return out + proj(6, SwiGluFn::apply(gates));
}

TransformerImpl::TransformerImpl(const ModelConfig& c, int64_t vocab_size, uint64_t seed)
    : config(c), vocab(vocab_size) {
  const int64_t d = c.d_model;
  int64_t ff = c.d_ff;
  if (ff <= 0) ff = ((8 * d / 3) + 7) / 8 * 8;
  config.d_ff = ff;
  embed = register_module("embed", nn::Embedding(vocab, d));
  SHAMMIE_CHECK_MSG(rec::CheckLoops(c.layers, c.loops).ok(), "loops must divide layers");
  const common::Result<rec::Tying> tying = rec::ParseTying(c.tying);
  SHAMMIE_CHECK_MSG(tying.ok(), tying.status().ToString());
  SHAMMIE_CHECK_MSG(c.lora_rank >= 0 && c.lora_rank <= d, "lora_rank must lie in [0, d_model]");
  for (int64_t i = 0; i < c.layers / c.loops; ++i) {
    blocks.push_back(register_module("block" + std::to_string(i), Block(d, c.heads, ff)));
  }
  layer_map = rec::LayerMap(c.layers, c.loops, *tying);
  norm = register_module("norm", RMSNorm(d));
  if (!c.tied_embeddings) lm_head = register_module("lm_head", MakeLinear(d, vocab));
  score_head = register_module("score_head", nn::Linear(d, 1));
  if (c.classes > 0) class_head = register_module("class_head", nn::Linear(d, c.classes));
  if (c.lora_rank > 0) {
    const int64_t r = c.lora_rank;
    const int64_t in[7] = {d, d, d, d, d, d, ff}, out[7] = {d, d, d, d, ff, ff, d};
    for (int64_t l = 0; l < c.layers; ++l) {
      BlockLora pl;
      const std::string at = "lora" + std::to_string(l) + "_";
      for (int i = 0; i < 7; ++i) {
        pl.a[i] = register_parameter(at + kLoraProjections[i] + "_a", torch::zeros({r, in[i]}));
        pl.b[i] = register_parameter(at + kLoraProjections[i] + "_b", torch::zeros({out[i], r}));
      }
      pl.attn_norm = register_parameter(at + "attn_norm_delta", torch::zeros({d}));
      pl.mlp_norm = register_parameter(at + "mlp_norm_delta", torch::zeros({d}));
      lora.push_back(pl);
    }
  }
  if (c.block_length > 0) {  // the Block Transformer's embedder, block decoder and prefix map (lm_block.cpp)
    SHAMMIE_CHECK_MSG(c.block_d_model % c.block_length == 0 && c.block_d_model % c.heads == 0 && c.prefix > 0 &&
                          c.loops == 1 && c.lora_rank == 0,
                      "invalid Block Transformer configuration");
    const int64_t bd = c.block_d_model;
    block_embed = register_module("block_embed", nn::Embedding(vocab, bd / c.block_length));
    for (int64_t i = 0; i < c.block_layers; ++i) {
      block_blocks.push_back(
          register_module("block_decoder" + std::to_string(i), Block(bd, c.heads, ((8 * bd / 3) + 7) / 8 * 8)));
    }
    block_norm = register_module("block_norm", RMSNorm(bd));
    block_start = register_parameter("block_start", torch::zeros({bd}));
    expand = register_module("expand", nn::Linear(bd, c.prefix * d));
  }
  // Explicit initialisation (the defaults differ across LibTorch versions),
  // from a generator of our own: the global one is shared by every thread.
  torch::NoGradGuard guard;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (auto& p : named_parameters()) {
    if (p.key().find("norm") != std::string::npos) continue;
    if (p.key().rfind("lora", 0) == 0 && p.key().back() == 'b') continue;  // LoRA starts at b a = 0
    if (p.key().find("bias") != std::string::npos) {
      p.value().zero_();
    } else {
      p.value().normal_(0.0, 0.02, gen);
    }
  }
  // Rotary tables for every position, once (angles in float64, then float32).
  const int64_t half = d / c.heads / 2;
  Tensor inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, half, torch::kFloat64) / static_cast<double>(half));
  Tensor angles = torch::outer(torch::arange(0, c.max_len, torch::kFloat64), inv_freq);
  rope_cos = register_buffer("rope_cos", angles.cos().to(torch::kFloat32));
  rope_sin = register_buffer("rope_sin", angles.sin().to(torch::kFloat32));
  if (c.block_length > 0) {  // the block decoder's positions are blocks
    const int64_t bhalf = c.block_d_model / c.heads / 2;
    Tensor bfreq = 1.0 / torch::pow(10000.0, torch::arange(0, bhalf, torch::kFloat64) / static_cast<double>(bhalf));
    Tensor bangles = torch::outer(torch::arange(0, c.max_len / c.block_length + 2, torch::kFloat64), bfreq);
    block_rope_cos = register_buffer("block_rope_cos", bangles.cos().to(torch::kFloat32));
    block_rope_sin = register_buffer("block_rope_sin", bangles.sin().to(torch::kFloat32));
  }
}

Tensor TransformerImpl::forward(const Tensor& tokens) {
  if (config.block_length > 0) return BlockForward(*this, tokens, is_training() ? TrainingBlockPad(tokens, config.block_length) : Tensor());
  const int64_t t = tokens.size(1);
  Tensor mask = torch::ones({t, t}, torch::kBool).triu(1);
  const int64_t half = rope_cos.size(1);
  Tensor cos = rope_cos.narrow(0, 0, t).view({1, 1, t, half}), sin = rope_sin.narrow(0, 0, t).view({1, 1, t, half});
  Tensor x = embed(tokens);
  for (size_t l = 0; l < layer_map.size(); ++l) {
    x = blocks[static_cast<size_t>(layer_map[l])](x, cos, sin, mask, nullptr, 0, lora.empty() ? nullptr : &lora[l]);
  }
  return norm(x);
}

std::vector<Tensor> TransformerImpl::ForwardLayers(const Tensor& tokens) {
  SHAMMIE_CHECK_MSG(config.block_length == 0, "a Block Transformer has no per-layer exits");
  const int64_t t = tokens.size(1);
  Tensor mask = torch::ones({t, t}, torch::kBool).triu(1);
  const int64_t half = rope_cos.size(1);
  Tensor cos = rope_cos.narrow(0, 0, t).view({1, 1, t, half}), sin = rope_sin.narrow(0, 0, t).view({1, 1, t, half});
  Tensor x = embed(tokens);
  std::vector<Tensor> out;
  for (size_t l = 0; l < layer_map.size(); ++l) {
    x = blocks[static_cast<size_t>(layer_map[l])](x, cos, sin, mask, nullptr, 0, lora.empty() ? nullptr : &lora[l]);
    out.push_back(norm(x));
  }
  return out;
}

CachedStep PrepareCachedStep(const Tensor& positions, const Tensor& pad, KvCache& cache, size_t layers,
                             const Tensor& rope_cos, const Tensor& rope_sin) {
  const int64_t b = positions.size(0), t = positions.size(1);
  if (cache.k.empty()) {
    cache.k.resize(layers);
    cache.v.resize(layers);
  }
  const int64_t past = cache.length();
  cache.key_pad = past == 0 ? pad : torch::cat({cache.key_pad, pad}, 1);
  const int64_t s = past + t;
  // Query i (absolute slot past + i) sees slots <= past + i that are not
  // padding; a padding query sees the earlier padding too (so no row of the
  // softmax is empty; its output is never used).
  Tensor causal = torch::ones({t, s}, torch::TensorOptions().dtype(torch::kBool).device(positions.device()))
                      .triu(past + 1)
                      .view({1, 1, t, s});
  Tensor key_pad = cache.key_pad.view({b, 1, 1, s});
  Tensor query_real = pad.logical_not().view({b, 1, t, 1});
  CachedStep step;
  step.mask = causal.logical_or(key_pad.logical_and(query_real));
  const int64_t half = rope_cos.size(1);
  Tensor flat = positions.reshape({-1});
  step.cos = rope_cos.index_select(0, flat).view({b, 1, t, half});
  step.sin = rope_sin.index_select(0, flat).view({b, 1, t, half});
  return step;
}

Tensor TransformerImpl::ForwardCached(const Tensor& tokens, const Tensor& positions, const Tensor& pad,
                                      KvCache& cache) {
  SHAMMIE_CHECK_MSG(config.block_length == 0, "a Block Transformer decodes through GenerateBlocks");
  const CachedStep step = PrepareCachedStep(positions, pad, cache, layer_map.size(), rope_cos, rope_sin);
  Tensor x = embed(tokens);
  for (size_t l = 0; l < layer_map.size(); ++l) {
    x = blocks[static_cast<size_t>(layer_map[l])](x, step.cos, step.sin, step.mask, &cache, l,
                                                  lora.empty() ? nullptr : &lora[l]);
  }
  return norm(x);
}

Tensor TransformerImpl::Logits(const Tensor& hidden) {
  return config.tied_embeddings ? torch::matmul(hidden, embed->weight.t()) : lm_head(hidden);
}

namespace {
Tensor LastHidden(const Tensor& hidden, const Tensor& last_index) {
  const int64_t b = hidden.size(0), d = hidden.size(2);
  return hidden.gather(1, last_index.view({b, 1, 1}).expand({b, 1, d})).squeeze(1);
}
}  // namespace

Tensor TransformerImpl::Score(const Tensor& hidden, const Tensor& last_index) {
  return score_head(LastHidden(hidden, last_index)).squeeze(-1);
}

Tensor TransformerImpl::ClassLogits(const Tensor& hidden, const Tensor& last_index) {
  SHAMMIE_CHECK_MSG(!class_head.is_empty(), "the model has no classification head (classes = 0)");
  return class_head(LastHidden(hidden, last_index));
}

// --- generation ---

// Index of the token drawn from `logits` (one row) with `rng`.
int DrawToken(const float* logits, int64_t vocab, const SampleOptions& o, common::SplitMix64& rng) {
  if (o.temperature <= 0) return static_cast<int>(std::max_element(logits, logits + vocab) - logits);
  std::vector<int> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  // Highest first; ties by token id, so the order is deterministic.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (o.top_k > 0) keep = std::min(keep, static_cast<size_t>(o.top_k));
  std::vector<double> p(keep);
  const double top = logits[order[0]];
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((logits[order[i]] - top) / o.temperature);
    total += p[i];
  }
  if (o.top_p < 1.0) {
    double mass = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      mass += p[i] / total;
      if (mass >= o.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  double u = rng.NextDouble() * total;
  for (size_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return order[i];
  }
  return order[keep - 1];
}

std::vector<size_t> RowBudgets(const std::vector<std::vector<int>>& prompts, int64_t max_new_tokens, int64_t max_len) {
  std::vector<size_t> budget(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto room = max_len - static_cast<int64_t>(prompts[i].size());
    budget[i] = static_cast<size_t>(std::max<int64_t>(0, std::min(max_new_tokens, room)));
  }
  return budget;
}

bool DrawStep(const Tensor& logits, const SampleOptions& options, const std::vector<size_t>& budget,
              std::vector<common::SplitMix64>& rngs, std::vector<bool>& done, std::vector<Sampled>& out,
              const std::function<void(int64_t, int)>& drawn) {
  const int64_t b = logits.size(0), vocab = logits.size(1);
  const Tensor host = logits.to(torch::kCPU, torch::kFloat32).contiguous();
  Tensor logp = torch::log_softmax(host.to(torch::kFloat64), -1).contiguous();
  const float* lg = host.data_ptr<float>();
  const double* lp = logp.data_ptr<double>();
  bool any = false;
  for (int64_t i = 0; i < b; ++i) {
    const auto r = static_cast<size_t>(i);
    if (done[r] || out[r].tokens.size() >= budget[r]) {
      done[r] = true;
      continue;
    }
    const int tok = DrawToken(lg + i * vocab, vocab, options, rngs[r]);
    out[r].tokens.push_back(tok);
    out[r].logprobs.push_back(lp[i * vocab + tok]);
    drawn(i, tok);
    if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), tok) != options.stop_tokens.end()) {
      out[r].stopped = true;
      done[r] = true;
    } else if (out[r].tokens.size() >= budget[r]) {
      done[r] = true;  // its budget spent, not stopped
    } else {
      any = true;
    }
  }
  return any;
}

std::vector<Sampled> Generate(Transformer& model, const std::vector<std::vector<int>>& prompts,
                              const SampleOptions& options, GenerationStats* stats) {
  if (model->config.block_length > 0) return GenerateBlocks(model, prompts, options, stats);
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto b = static_cast<int64_t>(prompts.size());
  std::vector<Sampled> out(prompts.size());
  if (b == 0) return out;
  const int64_t max_len = model->config.max_len;
  int64_t p = 1;
  for (const auto& pr : prompts) p = std::max<int64_t>(p, static_cast<int64_t>(pr.size()));
  const std::vector<size_t> budget = RowBudgets(prompts, options.max_new_tokens, max_len);
  const auto max_new = static_cast<int64_t>(*std::max_element(budget.begin(), budget.end()));
  Tensor tokens = torch::full({b, p}, Tokenizer::kPad, torch::kInt64);
  Tensor pad = torch::ones({b, p}, torch::kBool);
  Tensor positions = torch::zeros({b, p}, torch::kInt64);
  std::vector<int64_t> next_pos(prompts.size());
  {
    auto tk = tokens.accessor<int64_t, 2>();
    auto pd = pad.accessor<bool, 2>();
    auto ps = positions.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
      const auto& pr = prompts[static_cast<size_t>(i)];
      const int64_t offset = p - static_cast<int64_t>(pr.size());
      for (size_t j = 0; j < pr.size(); ++j) {
        tk[i][offset + static_cast<int64_t>(j)] = pr[j];
        pd[i][offset + static_cast<int64_t>(j)] = false;
        ps[i][offset + static_cast<int64_t>(j)] = static_cast<int64_t>(j);
      }
      next_pos[static_cast<size_t>(i)] = static_cast<int64_t>(pr.size());
    }
  }
  std::vector<common::SplitMix64> rngs;
  rngs.reserve(prompts.size());
  for (int64_t i = 0; i < b; ++i) rngs.emplace_back(common::DeriveSeed(options.seed, "sample", static_cast<uint64_t>(i)));
  std::vector<bool> done(prompts.size(), false);
  KvCache cache;
  Tensor hidden = model->ForwardCached(tokens, positions, pad, cache);
  Tensor logits = model->Logits(hidden.select(1, p - 1)).to(torch::kFloat32).contiguous();
  const double prefill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto kv_width = static_cast<double>(model->layer_map.size() * 2 * model->config.d_model);
  double kv_reads = 0;  // key and value entries the decode steps' attention read, per row
  for (int64_t step = 0; step < max_new; ++step) {
    Tensor next = torch::full({b, 1}, Tokenizer::kPad, torch::kInt64);
    Tensor next_positions = torch::zeros({b, 1}, torch::kInt64);
    auto nx = next.accessor<int64_t, 2>();
    auto np = next_positions.accessor<int64_t, 2>();
    // A finished row's padding keeps a position in the rotary table.
    for (int64_t i = 0; i < b; ++i) np[i][0] = std::min(next_pos[static_cast<size_t>(i)], max_len - 1);
    const bool any = DrawStep(logits, options, budget, rngs, done, out, [&](int64_t i, int tok) {
      nx[i][0] = tok;
      ++next_pos[static_cast<size_t>(i)];
    });
    if (!any) break;
    hidden = model->ForwardCached(next, next_positions, torch::zeros({b, 1}, torch::kBool), cache);
    kv_reads += kv_width * static_cast<double>(cache.length());
    logits = model->Logits(hidden.select(1, 0)).to(torch::kFloat32).contiguous();
  }
  if (was_training) model->train();
  if (stats) {
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats->prefill_seconds = prefill_seconds;
    stats->kv_entries = CacheEntries(cache) / b;
    stats->kv_reads = kv_reads;
  }
  return out;
}

// --- files ---

namespace {

constexpr char kMagic[8] = {'S', 'H', 'M', 'C', 'K', 'P', 'T', '1'};

nlohmann::json ModelJson(const ModelConfig& m) {
  nlohmann::json j = {{"d_model", m.d_model}, {"layers", m.layers},   {"heads", m.heads},
                      {"d_ff", m.d_ff},       {"max_len", m.max_len}, {"tied_embeddings", m.tied_embeddings},
                      {"classes", m.classes}};
  if (m.loops != 1 || m.lora_rank != 0) {  // a vanilla model's metadata stays as it always was
    j["loops"] = m.loops;
    j["tying"] = m.tying;
    j["lora_rank"] = m.lora_rank;
  }
  if (m.block_length != 0) {
    j["block_length"] = m.block_length;
    j["block_d_model"] = m.block_d_model;
    j["block_layers"] = m.block_layers;
    j["prefix"] = m.prefix;
  }
  return j;
}

common::Result<ModelConfig> ModelFromJson(const nlohmann::json& j) {
  ModelConfig m;
  try {
    m.d_model = j.at("d_model").get<int64_t>();
    m.layers = j.at("layers").get<int64_t>();
    m.heads = j.at("heads").get<int64_t>();
    m.d_ff = j.at("d_ff").get<int64_t>();
    m.max_len = j.at("max_len").get<int64_t>();
    m.tied_embeddings = j.at("tied_embeddings").get<bool>();
    m.classes = j.at("classes").get<int64_t>();
    m.loops = j.value("loops", int64_t{1});
    m.tying = j.value("tying", std::string("cycle"));
    m.lora_rank = j.value("lora_rank", int64_t{0});
    m.block_length = j.value("block_length", int64_t{0});
    m.block_d_model = j.value("block_d_model", int64_t{0});
    m.block_layers = j.value("block_layers", int64_t{0});
    m.prefix = j.value("prefix", int64_t{2});
  } catch (const std::exception& e) {
    return common::DataLoss(std::string("model configuration: ") + e.what());
  }
  if (!rec::CheckLoops(m.layers, m.loops).ok() || !rec::ParseTying(m.tying).ok() || m.lora_rank < 0 ||
      m.lora_rank > m.d_model) {
    return common::DataLoss("model configuration: invalid recursion (loops, tying or lora_rank)");
  }
  if (m.block_length < 0 || (m.block_length > 0 && (m.block_d_model <= 0 || m.block_d_model % m.block_length != 0 ||
                                                    m.block_d_model % m.heads != 0 || m.block_layers < 0 ||
                                                    m.prefix <= 0 || m.loops != 1 || m.lora_rank != 0))) {
    return common::DataLoss("model configuration: invalid Block Transformer (block_length, block_d_model, "
                            "block_layers or prefix)");
  }
  return m;
}

}  // namespace

std::string SerializeCheckpoint(const Checkpoint& c) {
  nlohmann::json meta = {{"format", "shammie checkpoint"},
                         {"version", 1},
                         {"model", ModelJson(c.model)},
                         {"vocab", c.vocab},
                         {"job_config", c.job_config},
                         {"optimizer", c.optimizer},
                         {"step", c.state.step},
                         {"finished", c.state.finished},
                         {"bad_evals", c.state.bad_evals},
                         {"window_steps", c.state.window_steps},
                         {"tokens", c.state.tokens}};
  common::WireWriter w;
  w.Raw(kMagic, sizeof kMagic);
  w.Str(meta.dump());
  w.F64(c.state.best_val);
  w.F64(c.state.window_loss);
  w.Var(c.state.metrics.size());
  for (const auto& [name, step, value] : c.state.metrics) {
    w.Str(name);
    w.I64(step);
    w.F64(value);
  }
  w.Str(c.model_bytes);
  w.Str(c.optimizer_bytes);
  return w.Take();
}

common::Result<Checkpoint> ParseCheckpoint(std::string_view bytes, const std::string& path) {
  auto bad = [&](const std::string& why) { return common::DataLoss(path + ": not a shammie checkpoint (" + why + ")"); };
  if (bytes.size() < sizeof kMagic || bytes.substr(0, sizeof kMagic) != std::string_view(kMagic, sizeof kMagic)) {
    return bad("bad magic");
  }
  common::WireReader r(bytes.substr(sizeof kMagic));
  std::string meta_text;
  Checkpoint c;
  uint64_t n = 0;
  if (!r.Str(meta_text) || !r.F64(c.state.best_val) || !r.F64(c.state.window_loss) || !r.Var(n) ||
      n > r.remaining()) {
    return bad("truncated header");
  }
  c.state.metrics.resize(n);
  for (auto& [name, step, value] : c.state.metrics) {
    if (!r.Str(name) || !r.I64(step) || !r.F64(value)) return bad("truncated metrics");
  }
  if (!r.Str(c.model_bytes) || !r.Str(c.optimizer_bytes) || !r.done()) return bad("truncated tensors");
  auto meta = nlohmann::json::parse(meta_text, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || meta.value("version", 0) != 1) return bad("unknown metadata version");
  auto model = ModelFromJson(meta["model"]);
  if (!model.ok()) return bad(model.status().message());
  c.model = *model;
  try {
    c.vocab = meta.at("vocab").get<int64_t>();
    c.job_config = meta.at("job_config");
    c.optimizer = meta.at("optimizer").get<std::string>();
    c.state.step = meta.at("step").get<int64_t>();
    c.state.finished = meta.at("finished").get<bool>();
    c.state.bad_evals = meta.at("bad_evals").get<int64_t>();
    c.state.window_steps = meta.at("window_steps").get<int64_t>();
    c.state.tokens = meta.at("tokens").get<int64_t>();
  } catch (const std::exception& e) {
    return bad(e.what());
  }
  return c;
}

namespace {

// Modules and optimizers serialize the same way: through an archive.
template <typename T>
std::string SaveArchive(T& object) {
  torch::serialize::OutputArchive archive;
  object.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  return std::move(os).str();
}

template <typename T>
common::Status LoadArchive(T& object, const std::string& bytes, torch::Device device, const std::string& what) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size(), device);
    object.load(archive);
  } catch (const std::exception& e) {
    return common::DataLoss(what + ": " + e.what());
  }
  return common::Status::Ok();
}

}  // namespace

std::string SaveModule(torch::nn::Module& module) { return SaveArchive(module); }
// The optimizer state, parameter by parameter in the optimizer's order, under
// keys "p<i>.<field>". LibTorch's own Optimizer::save keys the state by
// tensor addresses, so two identical runs wrote different bytes; this way
// the same training state is the same file (checkpoints are content-addressed).
namespace {

// LibTorch's key of a parameter's state: its TensorImpl address as text.
std::string StateKey(const torch::Tensor& p) {
  std::ostringstream os;
  os << p.unsafeGetTensorImpl();
  return os.str();
}

}  // namespace

bool FusedKernelsEnabled() { return FusedEnabled(); }

bool FusedAdamWStep(torch::optim::AdamW& optimizer, double clip) {
  if (!FusedEnabled()) return false;
  std::vector<Tensor> params;
  for (auto& group : optimizer.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    if (o.amsgrad()) return false;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (!Fusable(p) || !Fusable(p.grad()) || !p.is_contiguous() || !p.grad().is_contiguous()) return false;
      params.push_back(p);
    }
  }
  // clip_grad_norm_: the global 2-norm over every gradient, then a factor
  // max_norm / (norm + 1e-6) when below one (folded into the update here).
  float grad_scale = 1.0f;
  if (clip > 0) {
    double squares = 0;
    for (const auto& p : params) {
      const Tensor& g = p.grad();
      squares += fused::SumSquaresDouble(g.data_ptr<float>(), 0, g.numel());
    }
    const double coef = clip / (std::sqrt(squares) + 1e-6);
    if (coef < 1) grad_scale = static_cast<float>(coef);
  }
  torch::NoGradGuard no_grad;
  for (auto& group : optimizer.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = optimizer.state()[StateKey(p)];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      state.step(state.step() + 1);
      const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      const double bc1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
      const double bc2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
      const fused::AdamWScalars k{static_cast<float>(1 - o.lr() * o.weight_decay()),
                                  grad_scale,
                                  static_cast<float>(beta1),
                                  static_cast<float>(1 - beta1),
                                  static_cast<float>(beta2),
                                  static_cast<float>(1 - beta2),
                                  static_cast<float>(std::sqrt(bc2)),
                                  static_cast<float>(o.lr() / bc1),
                                  static_cast<float>(o.eps())};
      float* w = p.data_ptr<float>();
      const float* g = p.grad().data_ptr<float>();
      float* m = state.exp_avg().data_ptr<float>();
      float* v = state.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), 32768, [&](int64_t b, int64_t e) { fused::AdamWUpdate(w, g, m, v, k, b, e); });
    }
  }
  return true;
}

std::string SaveOptimizer(torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  int64_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      const std::string key = "p" + std::to_string(i++) + ".";
      auto it = optimizer.state().find(StateKey(p));
      if (it == optimizer.state().end()) continue;
      if (auto* adam = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get())) {
        archive.write(key + "step", torch::tensor(adam->step(), torch::kInt64));
        archive.write(key + "exp_avg", adam->exp_avg().cpu());
        archive.write(key + "exp_avg_sq", adam->exp_avg_sq().cpu());
        if (adam->max_exp_avg_sq().defined()) archive.write(key + "max_exp_avg_sq", adam->max_exp_avg_sq().cpu());
      } else if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
        if (sgd->momentum_buffer().defined()) archive.write(key + "momentum_buffer", sgd->momentum_buffer().cpu());
      }
    }
  }
  std::ostringstream os;
  archive.save_to(os);
  return std::move(os).str();
}

common::Status LoadModule(torch::nn::Module& module, const std::string& bytes, const std::string& what,
                          torch::Device device) {
  return LoadArchive(module, bytes, device, what + ": cannot load the model's tensors");
}

common::Status LoadOptimizer(torch::optim::Optimizer& optimizer, const std::string& bytes, const std::string& what,
                             torch::Device device) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size(), device);
    const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
    int64_t i = 0;
    for (auto& group : optimizer.param_groups()) {
      for (auto& p : group.params()) {
        const std::string key = "p" + std::to_string(i++) + ".";
        torch::Tensor a, b, c;
        if (adamw) {
          if (!archive.try_read(key + "step", a)) continue;  // no state yet for this parameter
          auto state = std::make_unique<torch::optim::AdamWParamState>();
          state->step(a.item<int64_t>());
          archive.read(key + "exp_avg", b);
          archive.read(key + "exp_avg_sq", c);
          state->exp_avg(b.to(device));
          state->exp_avg_sq(c.to(device));
          torch::Tensor m;
          if (archive.try_read(key + "max_exp_avg_sq", m)) state->max_exp_avg_sq(m.to(device));
          optimizer.state()[StateKey(p)] = std::move(state);
        } else {
          if (!archive.try_read(key + "momentum_buffer", a)) continue;
          auto state = std::make_unique<torch::optim::SGDParamState>();
          state->momentum_buffer(a.to(device));
          optimizer.state()[StateKey(p)] = std::move(state);
        }
      }
    }
  } catch (const std::exception& e) {
    return common::DataLoss(what + ": cannot load the optimizer state: " + e.what());
  }
  return common::Status::Ok();
}

common::Result<LoadedModel> LoadModelFile(const std::string& path) {
  SHAMMIE_ASSIGN_OR_RETURN(std::string bytes, storage::ReadVerified(path));
  LoadedModel loaded;
  SHAMMIE_ASSIGN_OR_RETURN(loaded.checkpoint, ParseCheckpoint(bytes, path));
  loaded.model = Transformer(loaded.checkpoint.model, loaded.checkpoint.vocab, 0);
  SHAMMIE_RETURN_IF_ERROR(LoadModule(*loaded.model, loaded.checkpoint.model_bytes, path));
  loaded.model->eval();
  return loaded;
}

// --- safetensors with Llama names ---

namespace {

// Our parameter name -> the Llama (Hugging Face) name, for a vanilla model.
// Score and class heads have no Llama counterpart and keep shammie names.
std::vector<std::pair<std::string, std::string>> LlamaNames(TransformerImpl& model) {
  std::vector<std::pair<std::string, std::string>> names = {{"embed.weight", "model.embed_tokens.weight"}};
  for (size_t i = 0; i < model.blocks.size(); ++i) {
    const std::string ours = "block" + std::to_string(i) + ".";
    const std::string theirs = "model.layers." + std::to_string(i) + ".";
    names.insert(names.end(), {{ours + "attn_norm.weight", theirs + "input_layernorm.weight"},
                               {ours + "wq.weight", theirs + "self_attn.q_proj.weight"},
                               {ours + "wk.weight", theirs + "self_attn.k_proj.weight"},
                               {ours + "wv.weight", theirs + "self_attn.v_proj.weight"},
                               {ours + "wo.weight", theirs + "self_attn.o_proj.weight"},
                               {ours + "mlp_norm.weight", theirs + "post_attention_layernorm.weight"},
                               {ours + "w1.weight", theirs + "mlp.gate_proj.weight"},
                               {ours + "w3.weight", theirs + "mlp.up_proj.weight"},
                               {ours + "w2.weight", theirs + "mlp.down_proj.weight"}});
  }
  names.emplace_back("norm.weight", "model.norm.weight");
  if (!model.config.tied_embeddings) names.emplace_back("lm_head.weight", "lm_head.weight");
  names.emplace_back("score_head.weight", "shammie.score_head.weight");
  names.emplace_back("score_head.bias", "shammie.score_head.bias");
  if (model.config.classes > 0) {
    names.emplace_back("class_head.weight", "shammie.class_head.weight");
    names.emplace_back("class_head.bias", "shammie.class_head.bias");
  }
  return names;
}

bool IsVanilla(const ModelConfig& m) { return m.loops == 1 && m.lora_rank == 0 && m.block_length == 0; }

}  // namespace

Tensor EffectiveWeight(TransformerImpl& model, size_t position, int projection) {
  Tensor w = model.blocks[static_cast<size_t>(model.layer_map[position])]->Projection(projection)->weight;
  if (model.lora.empty()) return w;
  const BlockLora& l = model.lora[position];
  return w + torch::matmul(l.b[projection], l.a[projection]);
}

// A recursive model exports unrolled (UnrollToVanilla): position l's
// effective weights as Llama layer l, so any Llama reader gets the function
// the model computes.
common::Status ExportSafetensors(Transformer& model, const std::string& path) {
  if (model->config.block_length > 0) {
    return common::InvalidArgument(path + ": a Block Transformer has no Llama layout to export to");
  }
  if (!IsVanilla(model->config)) {
    Transformer unrolled(WithoutRecursion(model->config), model->vocab, /*seed=*/0);
    SHAMMIE_RETURN_IF_ERROR(UnrollToVanilla(*model, *unrolled));
    return ExportSafetensors(unrolled, path);
  }
  torch::NoGradGuard guard;
  auto params = model->named_parameters();
  std::vector<std::pair<std::string, Tensor>> out;  // Llama name -> tensor
  for (const auto& [ours, theirs] : LlamaNames(*model)) out.emplace_back(theirs, params[ours]);
  std::map<std::string, storage::TensorData> tensors;
  for (const auto& [theirs, value] : out) {
    Tensor t = value.detach().to(torch::kFloat32).contiguous();
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    SHAMMIE_ASSIGN_OR_RETURN(
        tensors[theirs],
        storage::TensorFromFloats("F32", shape, std::span<const float>(t.data_ptr<float>(), static_cast<size_t>(t.numel()))));
  }
  nlohmann::json config = {{"hidden_size", model->config.d_model},
                           {"num_hidden_layers", model->config.layers},
                           {"num_attention_heads", model->config.heads},
                           {"intermediate_size", model->config.d_ff},
                           {"max_position_embeddings", model->config.max_len},
                           {"vocab_size", model->vocab},
                           {"rms_norm_eps", 1e-6},
                           {"rope_theta", 10000.0},
                           {"tie_word_embeddings", model->config.tied_embeddings},
                           {"classes", model->config.classes}};
  return storage::WriteSafetensors(path, tensors, {{"format", "pt"}, {"shammie_config", config.dump()}});
}

common::Status ImportSafetensors(Transformer& model, const std::string& path) {
  if (!IsVanilla(model->config)) {
    return common::InvalidArgument(path + ": import into a vanilla model (loops = 1, lora_rank = 0), then convert it "
                                   "with an lm.train job that sets loops / lora_rank");
  }
  SHAMMIE_ASSIGN_OR_RETURN(storage::SafetensorsFile file, storage::ReadSafetensors(path));
  auto params = model->named_parameters();
  std::map<std::string, std::string> wanted;  // theirs -> ours
  for (const auto& [ours, theirs] : LlamaNames(*model)) wanted[theirs] = ours;
  for (const auto& [name, t] : file.tensors) {
    if (wanted.count(name)) continue;
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // derived, not a weight
    if (name == "lm_head.weight" && model->config.tied_embeddings) {
      // A tied model's file may carry the head as a copy of the embedding; anything else cannot be represented.
      auto head = storage::TensorToFloats(t);
      auto embed = file.tensors.count("model.embed_tokens.weight")
                       ? storage::TensorToFloats(file.tensors.at("model.embed_tokens.weight"))
                       : common::Result<std::vector<float>>(common::NotFound("no embedding"));
      if (head.ok() && embed.ok() && *head == *embed) continue;
      return common::InvalidArgument(path + ": has an lm_head.weight different from the embedding, but the model "
                                     "ties them (set tied_embeddings = false)");
    }
    return common::InvalidArgument(path + ": tensor \"" + name + "\" has no place in this model (" +
                                   std::to_string(model->config.layers) + " layers)");
  }
  torch::NoGradGuard guard;
  for (const auto& [theirs, ours] : wanted) {
    auto it = file.tensors.find(theirs);
    if (it == file.tensors.end()) {
      if (theirs.rfind("shammie.", 0) == 0) continue;  // heads of our own: keep their initialisation
      return common::InvalidArgument(path + ": missing tensor \"" + theirs + "\"");
    }
    Tensor& p = params[ours];
    const std::vector<int64_t> want(p.sizes().begin(), p.sizes().end());
    if (it->second.shape != want) {
      auto show = [](const std::vector<int64_t>& v) {
        std::string out = "[";
        for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
        return out + "]";
      };
      return common::InvalidArgument(path + ": tensor \"" + theirs + "\" has shape " + show(it->second.shape) +
                                     ", the model needs " + show(want));
    }
    SHAMMIE_ASSIGN_OR_RETURN(std::vector<float> values, storage::TensorToFloats(it->second));
    p.copy_(torch::from_blob(values.data(), p.sizes(), torch::kFloat32));
  }
  return common::Status::Ok();
}

// --- recursive conversion ---

namespace {

// `vanilla` has `recursive`'s dimensions and vocabulary, the recursion
// (loops, tying, LoRA) aside.
bool IsVanillaVersion(const TransformerImpl& vanilla, const TransformerImpl& recursive) {
  ModelConfig r = WithoutRecursion(recursive.config);
  r.tying = vanilla.config.tying;  // one loop: the tying means nothing
  return vanilla.config == r && vanilla.vocab == recursive.vocab;
}

// Everything outside the blocks and the LoRA: embedding, final norm, heads.
void CopyOutsideBlocks(TransformerImpl& from, TransformerImpl& to) {
  auto source = from.named_parameters();
  for (auto& p : to.named_parameters()) {
    if (p.key().rfind("block", 0) == 0 || p.key().rfind("lora", 0) == 0) continue;
    p.value().copy_(source[p.key()]);
  }
}

}  // namespace

common::Status ConvertToRecursive(TransformerImpl& from, TransformerImpl& to, const std::string& init,
                                  const std::string& lora_init) {
  SHAMMIE_ASSIGN_OR_RETURN(const rec::Init how, rec::ParseInit(init));
  SHAMMIE_ASSIGN_OR_RETURN(const rec::Tying tying, rec::ParseTying(to.config.tying));
  if (lora_init != "svd" && lora_init != "zero") {
    return common::InvalidArgument("lora_init must be \"svd\" or \"zero\", not \"" + lora_init + "\"");
  }
  if (!IsVanilla(from.config)) return common::InvalidArgument("only a vanilla model (loops = 1, lora_rank = 0) converts");
  if (!IsVanillaVersion(from, to)) {
    return common::InvalidArgument("the recursive model must keep the vanilla model's dimensions");
  }
  torch::NoGradGuard guard;
  CopyOutsideBlocks(from, to);
  const int64_t layers = to.config.layers, loops = to.config.loops;
  const std::vector<std::vector<int64_t>> sources = rec::InitSources(layers, loops, tying, how);
  for (size_t k = 0; k < to.blocks.size(); ++k) {
    for (auto& p : to.blocks[k]->named_parameters()) {
      Tensor sum = torch::zeros_like(p.value());
      for (int64_t l : sources[k]) sum += from.blocks[static_cast<size_t>(l)]->named_parameters()[p.key()];
      p.value().copy_(sum / static_cast<double>(sources[k].size()));
    }
  }
  if (to.lora.empty()) return common::Status::Ok();
  const int64_t r = to.config.lora_rank;
  for (size_t l = 0; l < to.lora.size(); ++l) {
    BlockLora& pl = to.lora[l];
    Block& orig = from.blocks[l];
    Block& shared = to.blocks[static_cast<size_t>(to.layer_map[l])];
    for (int i = 0; i < 7; ++i) {
      pl.b[i].zero_();
      if (lora_init != "svd") continue;
      // Eckart-Young: the rank-r truncated SVD is the closest rank-r matrix
      // to the residual; computed in float64, stored as float32.
      Tensor residual = (orig->Projection(i)->weight - shared->Projection(i)->weight).to(torch::kFloat64);
      auto [u, sv, vh] = torch::linalg_svd(residual, /*full_matrices=*/false);
      pl.b[i].copy_((u.narrow(1, 0, r) * sv.narrow(0, 0, r)).to(torch::kFloat32));
      pl.a[i].copy_(vh.narrow(0, 0, r).to(torch::kFloat32));
    }
    if (lora_init == "svd") {
      pl.attn_norm.copy_(orig->attn_norm->weight - shared->attn_norm->weight);
      pl.mlp_norm.copy_(orig->mlp_norm->weight - shared->mlp_norm->weight);
    } else {
      pl.attn_norm.zero_();
      pl.mlp_norm.zero_();
    }
  }
  return common::Status::Ok();
}

common::Status UnrollToVanilla(TransformerImpl& from, TransformerImpl& to) {
  if (from.config.block_length > 0 || IsVanilla(from.config)) {
    return common::InvalidArgument("only a recursive model (loops > 1 or lora_rank > 0) unrolls");
  }
  if (!IsVanilla(to.config)) return common::InvalidArgument("a recursive model unrolls into a vanilla model");
  if (!IsVanillaVersion(to, from)) {
    return common::InvalidArgument("the vanilla model must keep the recursive model's dimensions");
  }
  torch::NoGradGuard guard;
  CopyOutsideBlocks(from, to);
  const bool relaxed = !from.lora.empty();
  for (size_t l = 0; l < to.blocks.size(); ++l) {
    Block& shared = from.blocks[static_cast<size_t>(from.layer_map[l])];
    Block& out = to.blocks[l];
    for (int i = 0; i < 7; ++i) out->Projection(i)->weight.copy_(EffectiveWeight(from, l, i));
    out->attn_norm->weight.copy_(relaxed ? shared->attn_norm->weight + from.lora[l].attn_norm
                                         : shared->attn_norm->weight);
    out->mlp_norm->weight.copy_(relaxed ? shared->mlp_norm->weight + from.lora[l].mlp_norm
                                        : shared->mlp_norm->weight);
  }
  return common::Status::Ok();
}

}  // namespace shammie::workers::lm
