// The Block Transformer (Ho et al. 2024, PAPERS.md §4): the model's
// global-to-local forward pass, its cached generation (GenerateBlocks,
// lm_torch.hpp) and lm.block_decode, the job kind that measures decode
// throughput and KV-cache sizes of a Block Transformer or a vanilla model
// (docs/experiments/block-transformer.md).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/random.hpp"
#include "workers/lm_torch.hpp"

namespace shammie::workers {
namespace lm {

namespace {

Tensor CausalMask(int64_t t, torch::Device device) {
  return torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(device)).triu(1);
}

// The rotary angles of positions 0..t-1 of a table: [1, 1, t, half].
std::pair<Tensor, Tensor> Angles(const Tensor& cos, const Tensor& sin, int64_t t) {
  const int64_t half = cos.size(1);
  return {cos.narrow(0, 0, t).view({1, 1, t, half}), sin.narrow(0, 0, t).view({1, 1, t, half})};
}

}  // namespace

Tensor TrainingBlockPad(const Tensor& tokens, int64_t block_length) {
  Tensor cpu = tokens.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t b = cpu.size(0), t = cpu.size(1);
  Tensor out = torch::empty({b}, torch::kInt64);
  const int64_t* v = cpu.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a over the row, then SplitMix64's finaliser
    for (int64_t j = 0; j < t; ++j) h = (h ^ static_cast<uint64_t>(v[i * t + j])) * 1099511628211ULL;
    out[i] = static_cast<int64_t>(common::DeriveSeed(h, "block_pad", 0) % static_cast<uint64_t>(block_length));
  }
  return out.to(tokens.device());
}

Tensor BlockContexts(TransformerImpl& m, const Tensor& y) {
  const int64_t len = m.config.block_length, dim = m.config.block_d_model;
  const int64_t b = y.size(0), nb = y.size(1) / len;
  Tensor start = m.block_start.view({1, 1, dim}).expand({b, 1, dim});
  if (nb == 1) return start;
  Tensor x = m.block_embed(y.narrow(1, 0, (nb - 1) * len)).reshape({b, nb - 1, dim});
  const auto [cos, sin] = Angles(m.block_rope_cos, m.block_rope_sin, nb - 1);
  const Tensor mask = CausalMask(nb - 1, y.device());
  for (Block& block : m.block_blocks) x = block(x, cos, sin, mask, nullptr, 0);
  return torch::cat({start, m.block_norm(x)}, 1);
}

Tensor DecodeBlocks(TransformerImpl& m, const Tensor& contexts, const Tensor& tokens) {
  const int64_t n = contexts.size(0), len = m.config.block_length, p = m.config.prefix, d = m.config.d_model;
  Tensor x = m.expand(contexts).view({n, p, d});
  if (len > 1) x = torch::cat({x, m.embed(tokens.narrow(1, 0, len - 1))}, 1);
  const int64_t t = p + len - 1;
  const auto [cos, sin] = Angles(m.rope_cos, m.rope_sin, t);
  const Tensor mask = CausalMask(t, tokens.device());
  for (Block& block : m.blocks) x = block(x, cos, sin, mask, nullptr, 0);
  return m.norm(x.narrow(1, p - 1, len));
}

Tensor BlockForward(TransformerImpl& m, const Tensor& tokens, const Tensor& left_pad) {
  const int64_t len = m.config.block_length, b = tokens.size(0), t = tokens.size(1), d = m.config.d_model;
  const auto device = tokens.device();
  Tensor pad = left_pad.defined() ? left_pad.to(device, torch::kInt64) : torch::zeros({b}, torch::kInt64).to(device);
  // Padded slot of token t in row i: pad[i] + t; the last hidden state
  // predicts slot pad[i] + t, so the layout holds one slot past the tokens.
  const int64_t nb = (len - 1 + t) / len + 1;
  Tensor slot = pad.view({b, 1}) + torch::arange(t, torch::TensorOptions().dtype(torch::kInt64).device(device)).view({1, t});
  Tensor y = torch::full({b, nb * len}, Tokenizer::kPad, torch::TensorOptions().dtype(torch::kInt64).device(device))
                 .scatter(1, slot, tokens.to(torch::kInt64));
  Tensor contexts = BlockContexts(m, y);
  Tensor hidden = DecodeBlocks(m, contexts.reshape({b * nb, -1}), y.view({b * nb, len})).reshape({b, nb * len, d});
  return hidden.gather(1, (slot + 1).unsqueeze(-1).expand({b, t, d}));
}

std::vector<Sampled> GenerateBlocks(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                    const SampleOptions& options, GenerationStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  TransformerImpl& m = *model;
  const int64_t len = m.config.block_length, p_len = m.config.prefix, d = m.config.d_model;
  const int64_t dim = m.config.block_d_model;
  const auto b = static_cast<int64_t>(prompts.size());
  std::vector<Sampled> out(prompts.size());
  if (b == 0) return out;
  const torch::Device device = m.embed->weight.device();
  const auto ints = torch::TensorOptions().dtype(torch::kInt64);
  const auto bools = torch::TensorOptions().dtype(torch::kBool);
  int64_t p = 1;
  for (const auto& pr : prompts) p = std::max<int64_t>(p, static_cast<int64_t>(pr.size()));
  const std::vector<size_t> budget = RowBudgets(prompts, options.max_new_tokens, m.config.max_len);
  const auto max_new = static_cast<int64_t>(*std::max_element(budget.begin(), budget.end()));
  // Each prompt ends at the end of the last prompt block: left padding fills
  // the first block (as in training) and masks whole blocks of padding.
  const int64_t nbp = (p + len - 1) / len;
  Tensor y = torch::full({b, nbp * len}, Tokenizer::kPad, ints);
  Tensor block_pad = torch::ones({b, nbp}, bools);
  Tensor positions = torch::zeros({b, nbp}, ints);
  std::vector<int64_t> next_block(prompts.size());
  {
    auto yy = y.accessor<int64_t, 2>();
    auto bp = block_pad.accessor<bool, 2>();
    auto ps = positions.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
      const auto& pr = prompts[static_cast<size_t>(i)];
      const int64_t offset = nbp * len - static_cast<int64_t>(pr.size());
      for (size_t j = 0; j < pr.size(); ++j) yy[i][offset + static_cast<int64_t>(j)] = pr[j];
      const int64_t first = offset / len;
      for (int64_t j = first; j < nbp; ++j) {
        bp[i][j] = false;
        ps[i][j] = j - first;
      }
      next_block[static_cast<size_t>(i)] = nbp - first;
    }
  }
  KvCache block_cache;
  const auto block_layers = m.block_blocks.size(), token_layers = m.blocks.size();
  // The block decoder over `n` new blocks (tokens [b, n * len]): the context
  // of the last one [b, dim].
  auto block_step = [&](const Tensor& tokens, const Tensor& pos, const Tensor& pad) {
    const int64_t n = pos.size(1);
    Tensor x = m.block_embed(tokens.to(device)).reshape({b, n, dim});
    const CachedStep s = PrepareCachedStep(pos.to(device), pad.to(device), block_cache, block_layers,
                                           m.block_rope_cos, m.block_rope_sin);
    for (size_t l = 0; l < block_layers; ++l) x = m.block_blocks[l](x, s.cos, s.sin, s.mask, &block_cache, l);
    return m.block_norm(x.select(1, n - 1));
  };
  Tensor context = block_step(y, positions, block_pad);
  const double prefill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::vector<common::SplitMix64> rngs;
  rngs.reserve(prompts.size());
  for (int64_t i = 0; i < b; ++i) rngs.emplace_back(common::DeriveSeed(options.seed, "sample", static_cast<uint64_t>(i)));
  std::vector<bool> done(prompts.size(), false);
  const auto token_width = static_cast<double>(token_layers * 2 * static_cast<size_t>(d));
  const auto block_width = static_cast<double>(block_layers * 2 * static_cast<size_t>(dim));
  double kv_reads = 0;
  int64_t token_kv = 0;
  int64_t generated = 0;
  bool finished = max_new == 0;
  while (!finished) {
    // One block: the prefix from the context, then up to `len` tokens
    // through a fresh local cache.
    KvCache local;
    Tensor x = m.expand(context).view({b, p_len, d});
    {
      Tensor pos = torch::arange(p_len, ints).view({1, p_len}).expand({b, p_len}).contiguous();
      const CachedStep s = PrepareCachedStep(pos.to(device), torch::zeros({b, p_len}, bools).to(device), local,
                                             token_layers, m.rope_cos, m.rope_sin);
      for (size_t l = 0; l < token_layers; ++l) x = m.blocks[l](x, s.cos, s.sin, s.mask, &local, l);
      kv_reads += token_width * static_cast<double>(p_len * (p_len + 1) / 2);
    }
    Tensor logits = m.Logits(m.norm(x.select(1, p_len - 1))).to(torch::kFloat32).to(torch::kCPU).contiguous();
    Tensor block_tokens = torch::full({b, len}, Tokenizer::kPad, ints);
    auto bt = block_tokens.accessor<int64_t, 2>();
    for (int64_t j = 0; j < len; ++j) {
      const bool any = DrawStep(logits, options, budget, rngs, done, out, [&](int64_t i, int tok) { bt[i][j] = tok; });
      ++generated;
      if (!any || generated == max_new) {
        finished = true;
        break;
      }
      if (j + 1 == len) break;
      Tensor pos = torch::full({b, 1}, p_len + j, ints);
      const CachedStep s = PrepareCachedStep(pos.to(device), torch::zeros({b, 1}, bools).to(device), local,
                                             token_layers, m.rope_cos, m.rope_sin);
      Tensor h = m.embed(block_tokens.narrow(1, j, 1).to(device));
      for (size_t l = 0; l < token_layers; ++l) h = m.blocks[l](h, s.cos, s.sin, s.mask, &local, l);
      kv_reads += token_width * static_cast<double>(local.length());
      logits = m.Logits(m.norm(h.select(1, 0))).to(torch::kFloat32).to(torch::kCPU).contiguous();
    }
    token_kv = std::max(token_kv, CacheEntries(local) / b);
    if (finished) break;
    // The block decoder reads the finished block: the next block's context.
    Tensor pos = torch::empty({b, 1}, ints);
    const int64_t last_block = m.block_rope_cos.size(0) - 1;  // a finished row's blocks stay in the table
    for (int64_t i = 0; i < b; ++i) pos[i][0] = std::min(next_block[static_cast<size_t>(i)]++, last_block);
    context = block_step(block_tokens, pos, torch::zeros({b, 1}, bools));
    kv_reads += block_width * static_cast<double>(block_cache.length());
  }
  if (was_training) model->train();
  if (stats) {
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats->prefill_seconds = prefill_seconds;
    stats->block_kv_entries = CacheEntries(block_cache) / b;
    stats->token_kv_entries = token_kv;
    stats->kv_entries = stats->block_kv_entries + stats->token_kv_entries;
    stats->kv_reads = kv_reads;
  }
  return out;
}

}  // namespace lm

common::Status RunLmBlockDecode(JobContext& ctx) {
  const nlohmann::json& c = ctx.config();
  SHAMMIE_ASSIGN_OR_RETURN(lm::UpstreamWork work, lm::OpenUpstream(ctx, "lm.block_decode", 0));
  lm::Transformer& model = work.loaded.model;
  const ModelConfig& mc = model->config;
  const int64_t prompt_length = c["prompt_length"].get<int64_t>(), new_tokens = c["new_tokens"].get<int64_t>();
  const int64_t batch = c["batch"].get<int64_t>(), rounds = c["rounds"].get<int64_t>();
  if (prompt_length + new_tokens > mc.max_len) {
    return common::InvalidArgument("prompt_length + new_tokens (" + std::to_string(prompt_length + new_tokens) +
                                   ") exceeds the model's max_len (" + std::to_string(mc.max_len) + ")");
  }
  if (mc.loops != 1 || mc.lora_rank != 0) {
    return common::InvalidArgument("lm.block_decode measures a Block Transformer or a vanilla model; decode "
                                   "recursive models with lm.loop_decode");
  }
  // Prompts: windows of the split's packed stream (the corpus lm.train's
  // `packed` trains on), the same for every model.
  SHAMMIE_ASSIGN_OR_RETURN(const Split split, lm::SplitFromName(c["split"].get<std::string>()));
  std::vector<std::vector<int>> prompts =
      lm::PackedPrompts(*work.task, split, prompt_length, rounds * batch, "block_decode_prompts");
  std::vector<std::vector<std::vector<int>>> chunks(static_cast<size_t>(rounds));
  for (size_t i = 0; i < prompts.size(); ++i) chunks[i / static_cast<size_t>(batch)].push_back(std::move(prompts[i]));
  lm::SampleOptions o;
  o.temperature = 0;
  o.max_new_tokens = new_tokens;  // no stop tokens: every row decodes new_tokens
  const int64_t repeats = c["repeats"].get<int64_t>();
  double best = 0, best_prefill = 0;
  lm::GenerationStats last;
  for (int64_t r = 0; r < repeats; ++r) {
    double seconds = 0, prefill = 0;
    for (const auto& chunk : chunks) {
      lm::Generate(model, chunk, o, &last);
      seconds += last.seconds;
      prefill += last.prefill_seconds;
      if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "cancelled");
    }
    if (r == 0 || seconds < best) {
      best = seconds;
      best_prefill = prefill;
    }
  }
  const double tokens = static_cast<double>(rounds * batch * new_tokens);
  // float32 caches: 4 bytes per element. The paper's formulas (PAPERS.md
  // §4(f)) at context L = prompt + new tokens: vanilla n L 2d; block
  // n_b (L / L_B) 2D + n_t (P + L_B) 2d.
  const double context = static_cast<double>(prompt_length + new_tokens);
  double formula = 0;
  if (mc.block_length > 0) {
    formula = static_cast<double>(mc.block_layers) * (context / static_cast<double>(mc.block_length)) * 2.0 *
                  static_cast<double>(mc.block_d_model) +
              static_cast<double>(mc.layers * (mc.prefix + mc.block_length) * 2 * mc.d_model);
  } else {
    formula = static_cast<double>(mc.layers) * context * 2.0 * static_cast<double>(mc.d_model);
  }
  int64_t parameters = 0, embedding = 0;
  for (const auto& p : model->named_parameters()) {
    parameters += p.value().numel();
    if (p.key() == "embed.weight" || p.key() == "block_embed.weight" || p.key() == "lm_head.weight") {
      embedding += p.value().numel();
    }
  }
  ctx.ReportMetric("tokens_per_second", 0, best > 0 ? tokens / best : 0);
  ctx.ReportMetric("decode_tokens_per_second", 0, best - best_prefill > 0 ? tokens / (best - best_prefill) : 0);
  ctx.ReportMetric("prefill_seconds", 0, best_prefill);
  ctx.ReportMetric("seconds", 0, best);
  ctx.ReportMetric("kv_bytes_per_sample", 0, 4.0 * static_cast<double>(last.kv_entries));
  ctx.ReportMetric("kv_bytes_formula", 0, 4.0 * formula);
  ctx.ReportMetric("block_kv_bytes_per_sample", 0, 4.0 * static_cast<double>(last.block_kv_entries));
  ctx.ReportMetric("token_kv_bytes_per_sample", 0, 4.0 * static_cast<double>(last.token_kv_entries));
  ctx.ReportMetric("kv_reads_per_token", 0, last.kv_reads / static_cast<double>(new_tokens));
  ctx.ReportMetric("parameters", 0, static_cast<double>(parameters));
  ctx.ReportMetric("non_embedding_parameters", 0, static_cast<double>(parameters - embedding));
  ctx.ReportMetric("block_length", 0, static_cast<double>(mc.block_length));
  return common::Status::Ok();
}

}  // namespace shammie::workers
