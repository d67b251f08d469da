#include "orchestrator/cli.hpp"

#include <gtest/gtest.h>

#include <sstream>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "analysis/ppi.hpp"
#include "storage/result_store.hpp"

#include "tests/test_util.hpp"

namespace shammie::orchestrator {
namespace {

struct CliRun {
  int code;
  std::string out, err;
};

CliRun RunShammie(std::vector<std::string> args) {
  workers::KindRegistry kinds;
  workers::RegisterBuiltinKinds(kinds);
  args.insert(args.begin(), "shammie");
  std::ostringstream out, err;
  int code = RunCli(args, kinds, out, err);
  return {code, out.str(), err.str()};
}

const std::string kDefault = SHAMMIE_SOURCE_DIR "/experiments/configs/quadratic-sweep.toml";

TEST(CliTest, ValidateOk) {
  auto r = RunShammie({"validate", kDefault});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(": ok (experiment quadratic-sweep, 1 stage, 24 jobs)"), std::string::npos) << r.out;
}

TEST(CliTest, ValidateBadFileExitsTwoWithOneLinePerError) {
  testing::ScratchDir dir("cli-bad");
  const std::string path = dir.File("bad.toml");
  testing::WriteFile(path, "[experiment]\nname = \"x\"\nsed = 1\n[[stage]]\nname = \"t\"\nkind = \"toy.quadratc\"\n");
  auto r = RunShammie({"validate", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, path + ":3:1: experiment.sed: unknown key (did you mean `seed`?)\n" + path +
                       ":6:8: stage.t.kind: unknown job kind \"toy.quadratc\" (did you mean `toy.quadratic`?)\n"
                       "shammie: 2 errors in " + path + "\n");
  EXPECT_EQ(r.out, "");
}

TEST(CliTest, PlanTextAndJson) {
  auto text = RunShammie({"plan", kDefault});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("24 jobs in 1 stage"), std::string::npos);
  auto js = RunShammie({"plan", kDefault, "--json"});
  ASSERT_EQ(js.code, 0) << js.err;
  auto parsed = nlohmann::json::parse(js.out);
  EXPECT_EQ(parsed["jobs"].size(), 24u);
  EXPECT_EQ(parsed["experiment"], "quadratic-sweep");
}

TEST(CliTest, HelpVersionAndUsageErrors) {
  auto help = RunShammie({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("validate"), std::string::npos);
  EXPECT_NE(help.out.find("plan"), std::string::npos);
  auto sub_help = RunShammie({"plan", "--help"});
  EXPECT_EQ(sub_help.code, 0);
  EXPECT_NE(sub_help.out.find("--json"), std::string::npos);
  auto version = RunShammie({"--version"});
  EXPECT_EQ(version.code, 0);
  EXPECT_NE(version.out.find("shammie 0."), std::string::npos) << version.out;
  EXPECT_EQ(RunShammie({}).code, 2) << "a subcommand is required";
  EXPECT_EQ(RunShammie({"frobnicate"}).code, 2);
  EXPECT_EQ(RunShammie({"plan"}).code, 2) << "missing file";
  EXPECT_EQ(RunShammie({"plan", "/no/such.toml"}).code, 2);
  EXPECT_EQ(RunShammie({"validate", "--bogus"}).code, 2);
}

TEST(CliTest, ExplainListsKindsAndKeys) {
  auto all = RunShammie({"validate", "--explain"});
  EXPECT_EQ(all.code, 0) << all.err;
  for (const char* s : {"[experiment]", "name (name), required", "stage.resources", "time_limit (duration)",
                        "toy.quadratic", "bench.fail", "learning_rate (float), default 0.1, > 0 and <= 10"}) {
    EXPECT_NE(all.out.find(s), std::string::npos) << s;
  }
  auto one = RunShammie({"validate", "--explain", "bench.fail"});
  EXPECT_EQ(one.code, 0);
  EXPECT_NE(one.out.find("probability (float), default 1.0, >= 0 and <= 1"), std::string::npos) << one.out;
  EXPECT_EQ(one.out.find("toy.quadratic"), std::string::npos);
  EXPECT_EQ(RunShammie({"validate", "--explain", "toy.nope"}).code, 2);
}

}  // namespace
}  // namespace shammie::orchestrator

namespace shammie::orchestrator {
namespace {

// Writes a small results.h5 and returns the run directory.
std::string WriteRun(const testing::ScratchDir& dir) {
  storage::ExperimentInfo info;
  info.experiment = "exp";
  info.spec_hash = "abc";
  auto store = storage::ResultStore::Create(dir.File("results.h5"), info);
  EXPECT_TRUE(store.ok());
  EXPECT_TRUE((*store)->BeginRun({"r1", "train", "toy.quadratic", R"({"learning_rate":0.1})", 5, {}}).ok());
  EXPECT_TRUE((*store)->BeginRun({"r2", "eval,x", "bench.noop", "{}", 6, {"r1"}}).ok());
  std::vector<storage::MetricPoint> loss = {{0, 1.0}, {10, 0.1}};
  std::vector<storage::MetricPoint> acc = {{10, 1.0 / 3}};
  EXPECT_TRUE((*store)->AppendMetrics("r1", "loss", loss).ok());
  EXPECT_TRUE((*store)->AppendMetrics("r2", "acc", acc).ok());
  EXPECT_TRUE((*store)->Close().ok());
  return dir.path().string();
}

TEST(CliExportTest, CsvAndJson) {
  testing::ScratchDir dir("cli-export");
  const std::string run = WriteRun(dir);
  auto csv = RunShammie({"export", run});
  ASSERT_EQ(csv.code, 0) << csv.err;
  EXPECT_EQ(csv.out,
            "job_id,stage,kind,seed,metric,step,value\n"
            "r1,train,toy.quadratic,5,loss,0,1\n"
            "r1,train,toy.quadratic,5,loss,10,0.10000000000000001\n"
            "r2,\"eval,x\",bench.noop,6,acc,10,0.33333333333333331\n");
  auto js = RunShammie({"export", dir.File("results.h5"), "--format", "json"});
  ASSERT_EQ(js.code, 0) << js.err;
  auto doc = nlohmann::json::parse(js.out);
  EXPECT_EQ(doc["experiment"], "exp");
  ASSERT_EQ(doc["runs"].size(), 2u);
  EXPECT_EQ(doc["runs"][0]["config"]["learning_rate"], 0.1);
  EXPECT_EQ(doc["runs"][0]["metrics"]["loss"][1][1], 0.1);
  EXPECT_EQ(doc["runs"][1]["inputs"][0], "r1");

  auto to_file = RunShammie({"export", run, "-o", dir.File("out.csv")});
  ASSERT_EQ(to_file.code, 0) << to_file.err;
  EXPECT_EQ(testing::ReadFileText(dir.File("out.csv")), csv.out);
}

TEST(CliExportTest, BadFilesExitTwoOrThree) {
  testing::ScratchDir dir("cli-export-bad");
  EXPECT_EQ(RunShammie({"export", dir.File("nothing-here")}).code, 2) << "missing";
  testing::WriteFile(dir.File("junk.h5"), "not hdf5");
  auto junk = RunShammie({"export", dir.File("junk.h5")});
  EXPECT_EQ(junk.code, 2);
  EXPECT_NE(junk.err.find("not an HDF5 file"), std::string::npos) << junk.err;
  const std::string run = WriteRun(dir);
  std::filesystem::copy_file(dir.File("results.h5"), dir.File("cut.h5"));
  std::filesystem::resize_file(dir.File("cut.h5"), 200);
  auto cut = RunShammie({"export", dir.File("cut.h5")});
  EXPECT_EQ(cut.code, 3) << cut.err;
  EXPECT_NE(cut.err.find("data_loss"), std::string::npos) << cut.err;
  EXPECT_EQ(RunShammie({"export", run, "--format", "xml"}).code, 2);
}

}  // namespace
}  // namespace shammie::orchestrator

namespace shammie::orchestrator {
namespace {

std::string WriteEvalCsv(const testing::ScratchDir& dir) {
  // 12 labeled rows, 24 unlabeled, two strata; predictions are judge votes.
  std::string text = "id,human,judge,domain\n";
  for (int i = 0; i < 36; ++i) {
    const std::string domain = i % 2 ? "math" : "chat";
    const int judge = (i * 7) % 3 == 0 ? 0 : 1;
    const int human = (i % 5 == 0) ? 1 - judge : judge;
    text += std::to_string(i) + "," + (i < 12 ? std::to_string(human) : "") + "," + std::to_string(judge) + "," +
            domain + "\n";
  }
  testing::WriteFile(dir.File("eval.csv"), text);
  return dir.File("eval.csv");
}

TEST(CliAnalyzeTest, CsvSideBySideMatchesTheLibrary) {
  testing::ScratchDir dir("cli-analyze");
  const std::string csv = WriteEvalCsv(dir);
  auto r = RunShammie({"analyze", "--csv", csv, "--label", "human", "--pred", "judge", "--strata", "domain", "--method",
                       "classical,ppi,ppi++", "--method", "stratppi", "--method", "bayes-ppi", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["labeled"], 12);
  EXPECT_EQ(doc["unlabeled"], 24);
  EXPECT_EQ(doc["strata"], 2);
  ASSERT_EQ(doc["methods"].size(), 5u);
  // The same numbers straight from the library.
  std::vector<double> y, f, fu;
  for (int i = 0; i < 36; ++i) {
    const int judge = (i * 7) % 3 == 0 ? 0 : 1;
    const int human = (i % 5 == 0) ? 1 - judge : judge;
    if (i < 12) {
      y.push_back(human);
      f.push_back(judge);
    } else {
      fu.push_back(judge);
    }
  }
  auto pp = analysis::PpiMean(y, f, fu, 0.1);
  ASSERT_TRUE(pp.ok());
  EXPECT_EQ(doc["methods"][2]["method"], "ppi++");
  EXPECT_DOUBLE_EQ(doc["methods"][2]["estimate"].get<double>(), pp->estimate);
  EXPECT_DOUBLE_EQ(doc["methods"][2]["lower"].get<double>(), pp->lower);
  EXPECT_EQ(doc["methods"][4]["method"], "bayes-chain-rule");

  auto text = RunShammie({"analyze", "--csv", csv, "--label", "human", "--pred", "judge", "--target-width", "0.1"});
  ASSERT_EQ(text.code, 0) << text.err;
  char expected[64];
  std::snprintf(expected, sizeof(expected), "%.4f", pp->estimate);
  EXPECT_NE(text.out.find(expected), std::string::npos) << "4 decimals: " << text.out;
  EXPECT_NE(text.out.find("labels_for_target"), std::string::npos);
}

TEST(CliAnalyzeTest, BadInputExitsTwoWithAClearMessage) {
  testing::ScratchDir dir("cli-analyze-bad");
  const std::string csv = WriteEvalCsv(dir);
  auto col = RunShammie({"analyze", "--csv", csv, "--label", "humna", "--pred", "judge"});
  EXPECT_EQ(col.code, 2);
  EXPECT_NE(col.err.find("did you mean `human`?"), std::string::npos) << col.err;
  auto method = RunShammie({"analyze", "--csv", csv, "--label", "human", "--pred", "judge", "--method", "ppi+"});
  EXPECT_EQ(method.code, 2);
  EXPECT_NE(method.err.find("unknown method"), std::string::npos);
  auto strata = RunShammie({"analyze", "--csv", csv, "--label", "human", "--pred", "judge", "--method", "stratppi"});
  EXPECT_EQ(strata.code, 2);
  EXPECT_NE(strata.err.find("needs strata"), std::string::npos) << strata.err;
  testing::WriteFile(dir.File("text.csv"), "human,judge\n1,0.5\nyes,0.2\n");
  auto word = RunShammie({"analyze", "--csv", dir.File("text.csv"), "--label", "human", "--pred", "judge"});
  EXPECT_EQ(word.code, 2);
  EXPECT_NE(word.err.find("data row 2: label \"yes\" is not a number"), std::string::npos) << word.err;
  testing::WriteFile(dir.File("ragged.csv"), "a,b\n1,2\n3\n");
  auto ragged = RunShammie({"analyze", "--csv", dir.File("ragged.csv"), "--label", "a", "--pred", "b"});
  EXPECT_EQ(ragged.code, 2);
  EXPECT_NE(ragged.err.find("ragged.csv:3: 1 fields, the header has 2"), std::string::npos) << ragged.err;
}

}  // namespace
}  // namespace shammie::orchestrator

namespace shammie::orchestrator {
namespace {

// `shammie submit --dry-run` (no Slurm needed): the [slurm] table, command
// line overrides, and bad input that writes nothing. Real submissions:
// tests/slurm/slurm_test.cpp.
TEST(CliSubmitTest, DryRunWritesTheScriptFromTheTableAndTheCommandLine) {
  testing::ScratchDir dir("cli-submit");
  const std::string spec = dir.File("exp.toml");
  testing::WriteFile(spec, R"([experiment]
name = "sub"

[[stage]]
name = "train"
kind = "toy.quadratic"
sweep = { seeds = 5 }

[[stage]]
name = "gang"
kind = "bench.allreduce"
resources = { ranks = 3 }

[slurm]
nodes = 2
ntasks_per_node = 2
partition = "cpu"
time = "2h"
job_name = "x; rm -rf ~"
max_requeues = 7
)");
  const std::string out = dir.File("run");
  auto r = RunShammie({"submit", spec, "--out", out, "--partition", "big mem", "--grace", "600", "--dry-run"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string script = testing::ReadFileText(out + "/slurm/job.sbatch");
  EXPECT_EQ(r.out, script);
  for (const char* line : {"#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=2\n", "#SBATCH --partition=\"big mem\"\n",
                           "#SBATCH --time=02:00:00\n", "#SBATCH --job-name=\"x; rm -rf ~\"\n",
                           "#SBATCH --signal=B:USR1@600\n", "max_requeues=7\n"}) {
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  }
  EXPECT_NE(script.find(" run " + spec + " --out " + out + " --resume"), std::string::npos) << script;
  EXPECT_NE(r.err.find("not submitted: --dry-run"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out + "/slurm/jobs.txt"));

  // Array mode: 5 independent toy jobs and the gang: 6 parts.
  r = RunShammie({"submit", spec, "--out", out, "--array", "10", "--dry-run"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("using 6 array tasks instead of 10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("#SBATCH --array=0-5\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--shard \"$shard\"/6"), std::string::npos) << r.out;
}

TEST(CliSubmitTest, BadInputExitsTwoAndWritesNothing) {
  testing::ScratchDir dir("cli-submit-bad");
  const std::string spec = dir.File("exp.toml");
  testing::WriteFile(spec, R"([experiment]
name = "sub"

[[stage]]
name = "gang"
kind = "bench.allreduce"
resources = { ranks = 3 }

[slurm]
time = "00:10:00"
)");
  const std::string out = dir.File("run");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--time", "2 hours"}, "shammie submit: --time: \"2 hours\": expected a Slurm time limit"},
      {{"--nodes", "1", "--ntasks-per-node", "1"}, "shammie submit: --ntasks-per-node: the job has 1 rank"},
      {{"--nodes", "1", "--ntasks-per-node", "3"}, "stage \"gang\" needs resources.ranks = 3 but the job has 3 ranks"},
      {{"--grace", "900", "--ntasks-per-node", "4"}, "shammie submit: --grace: 900 s is not shorter than the time limit 00:10:00"},
      {{"--partition", "a\nb", "--ntasks-per-node", "4"}, "shammie submit: --partition: control characters"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"submit", spec, "--out", out, "--dry-run"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto r = RunShammie(args);
    EXPECT_EQ(r.code, 2) << c.message << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << c.message;
  }
  // An error in the [slurm] table: file:line:col, nothing written.
  testing::WriteFile(spec, "[experiment]\nname = \"sub\"\n[[stage]]\nname = \"a\"\nkind = \"bench.noop\"\n[slurm]\nnodez = 2\n");
  auto r = RunShammie({"submit", spec, "--out", out, "--dry-run"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(spec + ":7:1: slurm.nodez: unknown key (did you mean `nodes`?)"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(CliMergeTest, NoShardsIsBadInput) {
  testing::ScratchDir dir("cli-merge");
  auto r = RunShammie({"merge", dir.path().string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no shard results under"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace shammie::orchestrator
