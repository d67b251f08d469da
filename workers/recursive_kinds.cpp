// Job kinds of the recursive-transformer study without LibTorch
// (docs/experiments/recursive.md): rec.batching, the discrete-event
// simulator of batching under early exit (workers/recursive.hpp). The
// models themselves train as lm.train jobs (keys loops, tying, lora_rank).
#include "workers/job_kind.hpp"
#include "workers/recursive.hpp"

namespace shammie::workers {

namespace {

std::vector<ConfigProblem> CheckBatching(const nlohmann::json& c) {
  if (c["min_tokens"].get<int64_t>() > c["max_tokens"].get<int64_t>()) {
    return {{"min_tokens", "exceeds max_tokens (" + std::to_string(c["max_tokens"].get<int64_t>()) + ")"}};
  }
  return {};
}

common::Status RunBatching(JobContext& ctx) {
  const nlohmann::json& c = ctx.config();
  rec::BatchingOptions o;
  o.requests = c["requests"].get<int64_t>();
  o.batch = c["batch"].get<int64_t>();
  o.loops = c["loops"].get<int64_t>();
  o.exit_prob = c["exit_prob"].get<double>();
  o.early_exit = c["early_exit"].get<bool>();
  o.min_tokens = c["min_tokens"].get<int64_t>();
  o.max_tokens = c["max_tokens"].get<int64_t>();
  o.seed = ctx.seed();
  SHAMMIE_RETURN_IF_ERROR(rec::CheckBatchingOptions(o));
  SHAMMIE_ASSIGN_OR_RETURN(const rec::Batching policy, rec::ParseBatching(c["batching"].get<std::string>()));
  const rec::BatchingResult r = rec::SimulateBatching(o, policy);
  ctx.ReportMetric("tokens_per_call", 0, r.tokens_per_call());
  ctx.ReportMetric("stages_per_token", 0, r.stages_per_token());
  ctx.ReportMetric("expected_depth", 0, o.early_exit ? rec::ExpectedDepth(o.loops, o.exit_prob)
                                                     : static_cast<double>(o.loops));
  ctx.ReportMetric("utilization", 0, r.utilization());
  ctx.ReportMetric("calls", 0, static_cast<double>(r.calls));
  ctx.ReportMetric("tokens", 0, static_cast<double>(r.tokens));
  return common::Status::Ok();
}

}  // namespace

void RegisterRecursiveKinds(KindRegistry& registry) {
  JobKind k;
  k.name = "rec.batching";
  k.doc = "Discrete-event simulation of decoding a request stream with a recursive model under early exit "
          "(PAPERS.md §1(a) step 6): static, continuous sequence-wise or continuous depth-wise batching. Metrics "
          "tokens_per_call (throughput per call of the shared block), stages_per_token (mean depth), "
          "expected_depth (its closed form), utilization (share of the calls' rows that did work), calls, tokens.";
  k.config = common::Schema(k.name, k.doc);
  k.config.Enum("batching", {"static", "sequence", "depth"}).Default("depth")
      .Doc("static: groups of `batch` sequences; sequence: finished sequences' rows refilled every decode step; "
           "depth: rows at different loop depths share each call, exited tokens' rows move on at once.");
  k.config.Int("requests").Default(2000).Range(1, 100000000).Doc("Sequences in the stream.");
  k.config.Int("batch").Default(32).Range(1, 1000000).Doc("Rows per call.");
  k.config.Int("loops").Default(2).Range(1, 64).Doc("Stages (loops of the shared block) a token may run.");
  k.config.Float("exit_prob").Default(0.5).Range(0, 1)
      .Doc("Probability that a token exits after each stage but the last (independently).");
  k.config.Bool("early_exit").Default(true).Doc("false: every token runs all loops.");
  k.config.Int("min_tokens").Default(16).Range(1, 1000000).Doc("Shortest request, in decoded tokens.");
  k.config.Int("max_tokens").Default(64).Range(1, 1000000).Doc("Longest request (lengths uniform in between).");
  k.check = CheckBatching;
  k.run = RunBatching;
  const common::Status s = registry.Register(std::move(k));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

}  // namespace shammie::workers
