#include "workers/continual.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "common/random.hpp"
#include "common/schema.hpp"
#include "storage/checkpoint_store.hpp"

namespace shammie::workers {

namespace {

// One candidate as the inputs describe it.
struct Candidate {
  std::string job;      // the candidate checkpoint's job (pick = init) or the input job (pick = model)
  std::string model;    // the file to record when chosen
  double score = 0;     // higher is better (losses negated)
  double tiebreak = 0;  // higher is better
  bool seen = false;
};

common::Status RunSelect(JobContext& ctx) {
  const nlohmann::json& c = ctx.config();
  const auto pool = c["candidates"].get<std::vector<std::string>>();
  const std::string score = c["score"].get<std::string>();
  const std::string pick = c["pick"].get<std::string>();
  const std::string rule = c["rule"].get<std::string>();
  if (pool.empty()) return common::InvalidArgument("continual.select needs at least one candidate");
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < pool.size(); ++i) {
    if (!index.emplace(pool[i], i).second) return common::InvalidArgument("candidate " + pool[i] + " is listed twice");
  }
  const bool loss = score.find("loss") != std::string::npos;
  const std::string tiebreak_key = score == "step0_val_accuracy" ? "step0_val_loss" : "val_loss";
  std::map<std::string, std::string> models;  // input job -> its own "model"
  for (const auto& a : ctx.inputs()) {
    if (a.name == "model") models[a.job_id] = a.path;
  }
  std::vector<Candidate> candidates(pool.size());
  for (const auto& a : ctx.inputs()) {
    if (a.name != "summary") continue;
    SHAMMIE_ASSIGN_OR_RETURN(std::string text, storage::ReadVerified(a.path));
    nlohmann::json s = nlohmann::json::parse(text, nullptr, false);
    if (s.is_discarded() || !s.is_object() || !s.contains(score) || !s.contains(tiebreak_key)) {
      return common::DataLoss(a.path + ": not a training summary with \"" + score + "\"");
    }
    std::string job = a.job_id, model;
    if (pick == "init") {
      job = s.value("initialized_from", std::string());
      model = s.value("init_model", std::string());
      if (job.empty() || model.empty()) {
        return common::InvalidArgument("input " + a.job_id + " started from no upstream model; pick = \"init\" needs "
                                       "probes fine-tuned from the candidates");
      }
    } else {
      auto it = models.find(a.job_id);
      if (it == models.end()) {
        return common::InvalidArgument("input " + a.job_id + " recorded no \"model\" (pick = \"model\" needs "
                                       "fine-tunes that save their model)");
      }
      model = it->second;
    }
    auto at = index.find(job);
    if (at == index.end()) {
      return common::InvalidArgument("input " + a.job_id + " is about " + job + ", which is not a candidate");
    }
    Candidate& cand = candidates[at->second];
    if (cand.seen) return common::InvalidArgument("two inputs score candidate " + job);
    cand.job = job;
    cand.model = model;
    // A diverged probe (NaN, stored as null) is the worst candidate, not an error.
    auto value = [&](const std::string& key) {
      const auto& v = s[key];
      return v.is_number() && std::isfinite(v.get<double>()) ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
    };
    const double raw = value(score), tie = value(tiebreak_key);
    constexpr double kWorst = -std::numeric_limits<double>::infinity();
    cand.score = std::isnan(raw) ? kWorst : (loss ? -raw : raw);
    cand.tiebreak = loss || std::isnan(tie) ? (loss ? 0.0 : kWorst) : -tie;
    cand.seen = true;
  }
  for (size_t i = 0; i < pool.size(); ++i) {
    if (!candidates[i].seen) return common::InvalidArgument("no input scores candidate " + pool[i]);
  }
  size_t chosen = 0;
  if (rule == "last") {
    chosen = pool.size() - 1;
  } else if (rule == "best") {  // ties go to the earlier candidate (the base first)
    for (size_t i = 1; i < pool.size(); ++i) {
      const Candidate& a = candidates[i];
      const Candidate& b = candidates[chosen];
      if (a.score > b.score || (a.score == b.score && a.tiebreak > b.tiebreak)) chosen = i;
    }
  }
  storage::Table table;
  std::vector<int64_t> position, selected;
  std::vector<std::string> job;
  std::vector<double> scores;
  for (size_t i = 0; i < pool.size(); ++i) {
    position.push_back(static_cast<int64_t>(i));
    job.push_back(pool[i]);
    scores.push_back(loss ? -candidates[i].score : candidates[i].score);
    selected.push_back(i == chosen ? 1 : 0);
    ctx.ReportMetric("score", static_cast<int64_t>(i), scores.back());
  }
  table.columns = {{"candidate", position}, {"job", job}, {"score", scores}, {"selected", selected}};
  SHAMMIE_RETURN_IF_ERROR(ctx.WriteTable("scores", table));
  ctx.ReportMetric("selected_index", 0, static_cast<double>(chosen));
  ctx.ReportMetric("selected_score", 0, scores[chosen]);
  ctx.ReportMetric("pool_size", 0, static_cast<double>(pool.size()));
  return ctx.RecordArtifact("model", candidates[chosen].model);
}

}  // namespace

std::string TaskRelation(const TaskSpec& s, const TaskSpec& t) {
  // Measured, not inferred from names: the answers of both tasks on the
  // target's prompts (flip and a binary permute are the same task; a modadd
  // flip is a shift by one).
  auto source = SyntheticTask::Make(s);
  auto target = SyntheticTask::Make(t);
  if (!source.ok() || !target.ok()) return "neutral";
  common::SplitMix64 rng(common::DeriveSeed(0x5ea1u, "relation", 0));
  int64_t agree = 0, asked = 0;
  for (int i = 0; i < 512; ++i) {
    const Example e = (*target)->Sample(Split::kTest, rng);
    auto theirs = (*source)->AnswerFor(e.prompt_text);
    if (!theirs.ok()) return "neutral";  // another input format: no common prompts
    auto ours = (*target)->AnswerFor(e.prompt_text);
    if (!ours.ok()) return "neutral";
    ++asked;
    agree += *theirs == *ours ? 1 : 0;
  }
  if (agree == asked) return "positive";
  return "negative";  // the same inputs, contradicting answers on some (flip: all; ignore: about half)
}

void RegisterContinualKinds(KindRegistry& registry) {
  JobKind k;
  k.name = "continual.select";
  k.doc = "Chooses a checkpoint from a pool: reads the \"summary\" of each upstream fine-tune (one per candidate), "
          "scores the candidates and records the chosen checkpoint as artifact \"model\"; writes table \"scores\".";
  k.config = common::Schema(k.name, k.doc);
  k.config.Add("candidates", common::ValueType::kStringList).Required()
      .Doc("Job ids of the candidate checkpoints, in pool order (the base first, then the past tasks').");
  k.config.Enum("score", {"val_accuracy", "val_loss", "step0_val_accuracy", "step0_val_loss", "test_accuracy"})
      .Default("val_accuracy")
      .Doc("What ranks the candidates: a score of the upstream fine-tunes' summaries (accuracies are maximised, "
           "ties broken by the lower loss; losses minimised; remaining ties go to the earlier candidate).");
  k.config.Enum("pick", {"init", "model"}).Default("init")
      .Doc("init: record the chosen candidate itself (selective initialisation: the inputs are probes fine-tuned "
           "from the candidates); model: record the best input's own fine-tuned model (the oracle).");
  k.config.Enum("rule", {"best", "first", "last"}).Default("best")
      .Doc("best: the top score; first / last: force the first (base) / last candidate (for tests and ablations).");
  k.run = RunSelect;
  common::Status s = registry.Register(std::move(k));
  SHAMMIE_CHECK_MSG(s.ok(), s.ToString());
}

}  // namespace shammie::workers
