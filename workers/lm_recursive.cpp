// Decoding a recursive transformer with early exits under static,
// continuous sequence-wise and continuous depth-wise batching
// (DecodeWithExits, lm_torch.hpp), and the job kind that measures them
// (lm.loop_decode; docs/experiments/recursive.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>

#include "workers/lm.hpp"
#include "workers/lm_torch.hpp"
#include "workers/recursive.hpp"

namespace shammie::workers {

namespace lm {

namespace {

using torch::indexing::Slice;

// One row of the decoder: a prompt being continued.
struct Row {
  int64_t request = -1;   // -1: free
  std::vector<int> seq;   // prompt, then the tokens generated so far
  int64_t prompt_len = 0;
  int64_t generated = 0;
  int64_t pos = 0;        // position of the token being processed
  int64_t loop = 0;       // loops done on it
  bool busy = false;      // a token is being processed (else it waits for the step barrier)
  bool done = false;      // the request is finished (the row frees after bookkeeping)
  Tensor h;               // [d] hidden state between loops
};

class LoopDecoder {
 public:
  LoopDecoder(Transformer& model, int64_t rows) : m_(model), rows_(rows) {
    const ModelConfig& c = model->config;
    layers_ = c.layers;
    loops_ = c.loops;
    shared_ = c.layers / c.loops;
    heads_ = c.heads;
    head_dim_ = c.d_model / c.heads;
    max_len_ = c.max_len;
    // One slab per (position, row): [layers * rows, max_len, heads, head_dim].
    kc_ = torch::zeros({layers_ * rows_, max_len_, heads_, head_dim_});
    vc_ = torch::zeros_like(kc_);
    if (!model->lora.empty()) {
      for (int i = 0; i < 7; ++i) {
        std::vector<Tensor> a, b;
        for (const BlockLora& l : model->lora) {
          a.push_back(l.a[i]);
          b.push_back(l.b[i]);
        }
        lora_a_[i] = torch::stack(a).transpose(1, 2).contiguous();  // [L, in, r]
        lora_b_[i] = torch::stack(b).transpose(1, 2).contiguous();  // [L, r, out]
      }
      std::vector<Tensor> an, mn;
      for (const BlockLora& l : model->lora) {
        an.push_back(l.attn_norm);
        mn.push_back(l.mlp_norm);
      }
      attn_delta_ = torch::stack(an);
      mlp_delta_ = torch::stack(mn);
    }
  }

  // Shared block `block` on rows x [n, d] at positions `position` [n] (of the
  // L), cache rows `slot` [n] and times `t` [n]; writes their keys and values
  // first, so rows of one slot at successive times see each other causally.
  Tensor Step(int64_t block, const Tensor& x, const Tensor& position, const Tensor& slot, const Tensor& t) {
    Block& b = m_->blocks[static_cast<size_t>(block)];
    const int64_t n = x.size(0), d = x.size(1);
    Tensor h = Norm(b->attn_norm, x, position, attn_delta_);
    Tensor q = Proj(b, 0, h, position).view({n, heads_, head_dim_});
    Tensor k = Proj(b, 1, h, position).view({n, heads_, head_dim_});
    Tensor v = Proj(b, 2, h, position).view({n, heads_, head_dim_});
    const int64_t half = m_->rope_cos.size(1);
    Tensor cos = m_->rope_cos.index_select(0, t).view({n, 1, half});
    Tensor sin = m_->rope_sin.index_select(0, t).view({n, 1, half});
    q = Rope(q, cos, sin);
    k = Rope(k, cos, sin);
    Tensor cache_row = position * rows_ + slot;
    kc_.index_put_({cache_row, t}, k);
    vc_.index_put_({cache_row, t}, v);
    const int64_t span = t.max().item<int64_t>() + 1;
    // Gather only the first `span` slots of each row's slab: [n, span, heads, head_dim].
    Tensor keys = kc_.narrow(1, 0, span).index_select(0, cache_row);
    Tensor values = vc_.narrow(1, 0, span).index_select(0, cache_row);
    Tensor att = torch::einsum("nhd,nshd->nhs", {q, keys}) / std::sqrt(static_cast<double>(head_dim_));
    Tensor future = torch::arange(span).view({1, span}) > t.view({n, 1});
    att = torch::softmax(att.masked_fill(future.view({n, 1, span}), -std::numeric_limits<float>::infinity()), -1);
    Tensor y = torch::einsum("nhs,nshd->nhd", {att, values}).reshape({n, d});
    Tensor out = x + Proj(b, 3, y, position);
    Tensor mm = Norm(b->mlp_norm, out, position, mlp_delta_);
    return out + Proj(b, 6, torch::silu(Proj(b, 4, mm, position)) * Proj(b, 5, mm, position), position);
  }

  // Keys and values of position `position` for rows that skipped it, from
  // their exit hidden states x [n, d] (state copying).
  void CopyState(int64_t position, const Tensor& x, const Tensor& slot, const Tensor& t) {
    Block& b = m_->blocks[static_cast<size_t>(m_->layer_map[static_cast<size_t>(position)])];
    const int64_t n = x.size(0);
    Tensor pos = torch::full({n}, position, torch::kInt64);
    Tensor h = Norm(b->attn_norm, x, pos, attn_delta_);
    const int64_t half = m_->rope_cos.size(1);
    Tensor k = Rope(Proj(b, 1, h, pos).view({n, heads_, head_dim_}), m_->rope_cos.index_select(0, t).view({n, 1, half}),
                    m_->rope_sin.index_select(0, t).view({n, 1, half}));
    Tensor cache_row = pos * rows_ + slot;
    kc_.index_put_({cache_row, t}, k);
    vc_.index_put_({cache_row, t}, Proj(b, 2, h, pos).view({n, heads_, head_dim_}));
  }

  int64_t loops() const { return loops_; }
  int64_t shared() const { return shared_; }

 private:
  Tensor Proj(Block& b, int i, const Tensor& x, const Tensor& position) {
    Tensor y = b->Projection(i)(x);
    if (lora_a_[i].defined()) {
      Tensor a = lora_a_[i].index_select(0, position), bb = lora_b_[i].index_select(0, position);
      y = y + torch::bmm(torch::bmm(x.unsqueeze(1), a), bb).squeeze(1);
    }
    return y;
  }
  static Tensor Norm(RMSNorm& norm, const Tensor& x, const Tensor& position, const Tensor& deltas) {
    if (!deltas.defined()) return norm(x);
    return norm->WithDelta(x, deltas.index_select(0, position));  // each row its own position's delta
  }

  Transformer& m_;
  int64_t rows_, layers_ = 0, loops_ = 1, shared_ = 1, heads_ = 1, head_dim_ = 1, max_len_ = 0;
  Tensor kc_, vc_;
  Tensor lora_a_[7], lora_b_[7], attn_delta_, mlp_delta_;
};

Tensor Longs(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kInt64); }

}  // namespace

common::Result<LoopDecodeResult> DecodeWithExits(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                                 const LoopDecodeOptions& o) {
  SHAMMIE_ASSIGN_OR_RETURN(const rec::Batching policy, rec::ParseBatching(o.batching));
  if (model->config.loops > 1 && model->config.tying != "cycle") {
    return common::InvalidArgument("early exits at loop boundaries need CYCLE tying (the whole stack looped); this "
                                   "model ties by " + model->config.tying);
  }
  if (model->config.block_length > 0) {
    return common::InvalidArgument("a Block Transformer has no loops to exit from; measure it with lm.block_decode");
  }
  if (o.batch < 1) return common::InvalidArgument("batch must be at least 1");
  for (const auto& p : prompts) {
    if (p.empty()) return common::InvalidArgument("an empty prompt (give at least BOS)");
    if (static_cast<int64_t>(p.size()) >= model->config.max_len) {
      return common::InvalidArgument("a prompt of " + std::to_string(p.size()) + " tokens leaves no room in max_len " +
                                     std::to_string(model->config.max_len));
    }
  }
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto start = std::chrono::steady_clock::now();
  LoopDecoder dec(model, o.batch);
  const int64_t loops = dec.loops(), shared = dec.shared();
  LoopDecodeResult res;
  res.tokens.resize(prompts.size());
  res.exits.assign(static_cast<size_t>(loops), 0);
  std::vector<Row> rows(static_cast<size_t>(o.batch));
  std::deque<int64_t> queue;
  for (size_t i = 0; i < prompts.size(); ++i) queue.push_back(static_cast<int64_t>(i));
  auto begin_token = [&](Row& r) {  // the token at r.pos enters loop 0
    r.h = model->embed->weight[r.seq[static_cast<size_t>(r.pos)]].clone();
    r.loop = 0;
    r.busy = true;
  };
  // Prefill: every free row takes the next prompt; the prompts' tokens but
  // the last run through all positions together, one call per position.
  auto admit = [&] {
    std::vector<int64_t> slot, time, token;
    std::vector<size_t> taken;
    for (size_t s = 0; s < rows.size() && !queue.empty(); ++s) {
      if (rows[s].request >= 0) continue;
      Row& r = rows[s];
      r = Row{};
      r.request = queue.front();
      queue.pop_front();
      r.seq = prompts[static_cast<size_t>(r.request)];
      r.prompt_len = static_cast<int64_t>(r.seq.size());
      r.pos = r.prompt_len - 1;
      taken.push_back(s);
      for (int64_t j = 0; j + 1 < r.prompt_len; ++j) {
        slot.push_back(static_cast<int64_t>(s));
        time.push_back(j);
        token.push_back(r.seq[static_cast<size_t>(j)]);
      }
    }
    if (!token.empty()) {
      const auto prefill_start = std::chrono::steady_clock::now();
      Tensor x = model->embed(Longs(token));
      Tensor sl = Longs(slot), tt = Longs(time);
      for (int64_t l = 0; l < model->config.layers; ++l) {
        x = dec.Step(model->layer_map[static_cast<size_t>(l)], x, torch::full({x.size(0)}, l, torch::kInt64), sl, tt);
      }
      res.prefill_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - prefill_start).count();
    }
    for (size_t s : taken) begin_token(rows[s]);
  };
  auto occupied = [&] { return std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.request >= 0; }); };
  auto any_busy = [&] { return std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.busy; }); };
  const bool synchronous = policy != rec::Batching::kDepth;
  while (true) {
    if (!synchronous || !any_busy()) {
      if (policy != rec::Batching::kStatic || !occupied()) admit();
      if (synchronous) {  // the step barrier: every waiting row starts its next token
        for (Row& r : rows) {
          if (r.request >= 0 && !r.busy) begin_token(r);
        }
      }
    }
    if (!occupied()) break;
    // One call of the shared block: every busy row at its own loop.
    std::vector<size_t> members;
    std::vector<int64_t> slot, time, loop;
    std::vector<Tensor> hs;
    for (size_t s = 0; s < rows.size(); ++s) {
      if (!rows[s].busy) continue;
      members.push_back(s);
      slot.push_back(static_cast<int64_t>(s));
      time.push_back(rows[s].pos);
      loop.push_back(rows[s].loop);
      hs.push_back(rows[s].h);
    }
    ++res.calls;
    res.row_slots += o.batch;
    Tensor x = torch::stack(hs);
    Tensor sl = Longs(slot), tt = Longs(time), lp = Longs(loop);
    for (int64_t k = 0; k < shared; ++k) x = dec.Step(k, x, lp * shared + k, sl, tt);
    // Which rows' tokens are done: the last loop, or confident enough.
    Tensor probs = torch::softmax(model->Logits(model->norm(x)).to(torch::kFloat32), -1);
    auto [top, arg] = probs.max(-1);
    auto top_a = top.accessor<float, 1>();
    auto arg_a = arg.accessor<int64_t, 1>();
    std::vector<std::vector<int64_t>> copy_rows(static_cast<size_t>(loops));  // by exit loop
    for (size_t i = 0; i < members.size(); ++i) {
      Row& r = rows[members[i]];
      r.loop += 1;
      const auto ii = static_cast<int64_t>(i);
      if (r.loop < loops && !(top_a[ii] >= o.exit_threshold)) {
        r.h = x[ii];
        continue;
      }
      ++res.exits[static_cast<size_t>(r.loop - 1)];
      res.stages += r.loop;
      ++res.tokens_decoded;
      if (r.loop < loops) copy_rows[static_cast<size_t>(r.loop)].push_back(ii);
      const int token = static_cast<int>(arg_a[ii]);
      r.seq.push_back(token);
      ++r.generated;
      r.busy = false;
      const bool stop = std::find(o.stop_tokens.begin(), o.stop_tokens.end(), token) != o.stop_tokens.end();
      if (stop || r.generated >= o.max_new_tokens || static_cast<int64_t>(r.seq.size()) >= model->config.max_len) {
        r.done = true;
      }
    }
    // State copying for the positions the exited tokens skipped.
    for (int64_t j = 1; j < loops; ++j) {
      const auto& idx = copy_rows[static_cast<size_t>(j)];
      if (idx.empty()) continue;
      Tensor which = Longs(idx);
      Tensor xs = x.index_select(0, which), ss = sl.index_select(0, which), ts = tt.index_select(0, which);
      for (int64_t l = j * shared; l < loops * shared; ++l) dec.CopyState(l, xs, ss, ts);
    }
    for (size_t s : members) {
      Row& r = rows[s];
      if (r.busy) continue;
      if (r.done) {
        res.tokens[static_cast<size_t>(r.request)].assign(r.seq.begin() + r.prompt_len, r.seq.end());
        r = Row{};
        continue;
      }
      r.pos += 1;
      if (!synchronous) begin_token(r);
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (was_training) model->train();
  return res;
}

}  // namespace lm

common::Status RunLmLoopDecode(JobContext& ctx) {
  const nlohmann::json& c = ctx.config();
  const int64_t n = c["prompts"].get<int64_t>(), prompt_length = c.value("prompt_length", int64_t{0});
  // Windows of the packed stream need no examples, so no example of the
  // task need fit max_len (a text chunk takes 2050 positions).
  SHAMMIE_ASSIGN_OR_RETURN(lm::UpstreamWork work, lm::OpenUpstream(ctx, "lm.loop_decode", prompt_length > 0 ? 0 : n));
  lm::Transformer& model = work.loaded.model;
  std::vector<std::vector<int>> prompts;
  int64_t longest = 0;
  for (const Example& e : work.examples) {
    prompts.push_back(lm::WithBos(e.prompt));
    longest = std::max<int64_t>(longest, static_cast<int64_t>(e.answer.size()));
  }
  if (prompt_length > 0) {
    const int64_t max_len = model->config.max_len, new_tokens = c["max_new_tokens"].get<int64_t>();
    if (prompt_length + new_tokens > max_len) {
      return common::InvalidArgument("prompt_length + max_new_tokens (" + std::to_string(prompt_length + new_tokens) +
                                     ") exceeds the model's max_len (" + std::to_string(max_len) + ")");
    }
    // The same windows for every model, as lm.block_decode draws them.
    SHAMMIE_ASSIGN_OR_RETURN(const Split split, lm::SplitFromName(c["split"].get<std::string>()));
    prompts = lm::PackedPrompts(*work.task, split, prompt_length, n, "loop_decode_prompts");
  }
  lm::LoopDecodeOptions o;
  o.batch = c["batch"].get<int64_t>();
  o.exit_threshold = c["exit_threshold"].get<double>();
  o.max_new_tokens = c["max_new_tokens"].get<int64_t>() > 0 ? c["max_new_tokens"].get<int64_t>() : longest;
  o.stop_tokens = {Tokenizer::kEos};
  const int64_t repeats = c["repeats"].get<int64_t>();
  const auto policies = c["batching"].get<std::vector<std::string>>();
  // Round robin over the policies, `repeats` times; each keeps its fastest
  // run, so slow drift of the machine's load hits every policy alike.
  std::vector<lm::LoopDecodeResult> best(policies.size());
  for (int64_t r = 0; r < repeats; ++r) {
    for (size_t i = 0; i < policies.size(); ++i) {
      o.batching = policies[i];
      SHAMMIE_ASSIGN_OR_RETURN(lm::LoopDecodeResult res, lm::DecodeWithExits(model, prompts, o));
      if (r == 0 || res.seconds < best[i].seconds) best[i] = std::move(res);
      if (ctx.cancelled()) return common::Status(common::StatusCode::kCancelled, "cancelled");
    }
  }
  bool agree = true;
  double exit_rate = 0;
  for (size_t i = 0; i < policies.size(); ++i) {
    const std::string& policy = policies[i];
    const lm::LoopDecodeResult& b = best[i];
    agree = agree && b.tokens == best[0].tokens;
    const double tokens = static_cast<double>(b.tokens_decoded);
    exit_rate = tokens > 0 ? 1 - static_cast<double>(b.exits.back()) / tokens : 0;
    ctx.ReportMetric(policy + "_tokens_per_second", 0, b.seconds > 0 ? tokens / b.seconds : 0);
    const double decode_seconds = b.seconds - b.prefill_seconds;
    ctx.ReportMetric(policy + "_decode_tokens_per_second", 0, decode_seconds > 0 ? tokens / decode_seconds : 0);
    ctx.ReportMetric(policy + "_prefill_seconds", 0, b.prefill_seconds);
    ctx.ReportMetric(policy + "_tokens_per_call", 0, b.calls ? tokens / static_cast<double>(b.calls) : 0);
    ctx.ReportMetric(policy + "_stages_per_token", 0, tokens > 0 ? static_cast<double>(b.stages) / tokens : 0);
    ctx.ReportMetric(policy + "_utilization", 0,
                     b.row_slots ? static_cast<double>(b.stages) / static_cast<double>(b.row_slots) : 0);
    ctx.ReportMetric(policy + "_calls", 0, static_cast<double>(b.calls));
    if (!work.examples.empty()) {  // windows of prose have no answers to grade
      ctx.ReportMetric(policy + "_accuracy", 0, work.task->Grade(work.examples, b.tokens).final_answer);
    }
  }
  ctx.ReportMetric("exit_rate", 0, exit_rate);
  ctx.ReportMetric("policies_agree", 0, agree ? 1 : 0);
  ctx.ReportMetric("loops", 0, static_cast<double>(model->config.loops));
  return common::Status::Ok();
}

}  // namespace shammie::workers
