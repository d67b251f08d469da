// The sbatch script `shammie submit` writes, without a cluster (label unit):
// quoting (bash reads every hostile value back unchanged and runs none of
// it), directives, time limits, resource checks, array placeholders. The
// real cluster runs in tests/slurm/slurm_test.cpp (label slurm).
#include "cluster/slurm.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace shammie::cluster {
namespace {

const std::vector<std::string> kHostile = {
    "x; rm -rf ~", "a b", "$(touch /tmp/shammie-canary)", "`id`", "it's", "\"quoted\"", "back\\slash",
    "*", "~", "semi;colon&amp|pipe", "new\nline", "", "-n", "${HOME}", "!event", "tab\there", "ünïcode"};

// What bash makes of `printf %s WORD`.
std::string BashEcho(const std::string& quoted) {
  char path[] = "/tmp/shammie-quote-XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  const std::string script = "printf %s " + quoted + "\n";
  EXPECT_EQ(::write(fd, script.data(), script.size()), static_cast<ssize_t>(script.size()));
  ::close(fd);
  FILE* p = ::popen(("bash --noprofile --norc " + std::string(path)).c_str(), "r");
  std::string out;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  ::unlink(path);
  return out;
}

TEST(ShellQuoteTest, BashReadsEveryValueBackUnchanged) {
  for (const auto& v : kHostile) EXPECT_EQ(BashEcho(ShellQuote(v)), v) << ShellQuote(v);
  EXPECT_FALSE(std::filesystem::exists("/tmp/shammie-canary"));
  EXPECT_EQ(ShellQuote("/plain/path-1.toml"), "/plain/path-1.toml");  // readable when safe
}

TEST(SbatchQuoteTest, DoubleQuotesWithEscapes) {
  EXPECT_EQ(SbatchQuote("debug"), "debug");
  EXPECT_EQ(SbatchQuote("x; rm -rf ~"), "\"x; rm -rf ~\"");
  EXPECT_EQ(SbatchQuote("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"");
  EXPECT_TRUE(SbatchValueProblem("a\nb").has_value());
  EXPECT_TRUE(SbatchValueProblem("a\tb").has_value());
  EXPECT_FALSE(SbatchValueProblem("x; rm -rf ~ $(id) `id` 'q' \"q\"").has_value());
}

TEST(SlurmTimeTest, AcceptsSlurmFormsAndRejectsTheRest) {
  const std::pair<const char*, int64_t> good[] = {{"90", 5400},          {"10:30", 630},      {"02:00:00", 7200},
                                                  {"1-00", 86400},       {"1-02:30", 95400},  {"2-00:00:01", 172801}};
  for (const auto& [text, seconds] : good) {
    int64_t s = 0;
    EXPECT_FALSE(SlurmTimeProblem(text, &s).has_value()) << text;
    EXPECT_EQ(s, seconds) << text;
  }
  for (const char* bad : {"", "2h", "1:2:3:4", "-5", "00:00:00", "a-01", "1-", "12:ab", "400-00:00:00"}) {
    EXPECT_TRUE(SlurmTimeProblem(bad, nullptr).has_value()) << bad;
  }
}

TEST(CheckResourcesTest, NamesTheKeyThatIsWrong) {
  SlurmResources r;
  EXPECT_TRUE(CheckResources(r).ok());
  r.ntasks_per_node = 1;
  EXPECT_THAT(CheckResources(r).message(), ::testing::StartsWith("ntasks_per_node: the job has 1 rank"));
  r.nodes = 2;
  EXPECT_TRUE(CheckResources(r).ok());
  r.time = "00:01:00";
  r.grace_s = 60;
  EXPECT_THAT(CheckResources(r).message(), ::testing::StartsWith("grace: 60 s is not shorter"));
  r.grace_s = 30;
  EXPECT_TRUE(CheckResources(r).ok());
  r.time = "soon";
  EXPECT_THAT(CheckResources(r).message(), ::testing::StartsWith("time: \"soon\""));
  r.time.reset();
  r.partition = "gpu\n#SBATCH --account=other";
  EXPECT_THAT(CheckResources(r).message(), ::testing::StartsWith("partition: control characters"));
}

BatchScript Example() {
  BatchScript s;
  s.resources.job_name = "x; rm -rf ~";
  s.resources.nodes = 2;
  s.resources.ntasks_per_node = 4;
  s.resources.gpus_per_node = 4;
  s.resources.time = "01:00:00";
  s.resources.partition = "gpu";
  s.resources.account = "my lab";
  s.resources.grace_s = 300;
  s.resources.max_requeues = 5;
  s.run_dir = "/scratch/it's here; touch canary";
  s.workdir = "/home/me/$(id)";
  s.output_pattern = s.run_dir + "/slurm/%j.out";
  s.program = {"/opt/shammie", "run", "/home/me/exp `id`.toml", "--out", s.run_dir, "--resume"};
  s.env = {{"PATH", "/usr/bin:/bin"}, {"OMP_NUM_THREADS", "1"}, {"SHAMMIE_COMMAND_LINE", "shammie submit 'a b'"}};
  s.provenance = "Submitted from /home/me with:\n  shammie submit exp.toml";
  return s;
}

TEST(BatchScriptTest, DirectivesAreVisibleAndQuoted) {
  const std::string text = RenderBatchScript(Example());
  for (const char* line :
       {"#SBATCH --job-name=\"x; rm -rf ~\"\n", "#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=4\n",
        "#SBATCH --cpus-per-task=1\n", "#SBATCH --gpus-per-node=4\n", "#SBATCH --time=01:00:00\n",
        "#SBATCH --partition=gpu\n", "#SBATCH --account=\"my lab\"\n", "#SBATCH --signal=B:USR1@300\n",
        "#SBATCH --requeue\n", "#SBATCH --open-mode=append\n", "max_requeues=5\n", "trap forward_usr1 USR1\n",
        "scontrol requeue \"$SLURM_JOB_ID\"", "export OMP_NUM_THREADS=1\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
  }
  EXPECT_NE(text.find("srun --mpi=pmix --kill-on-bad-exit=1 \\\n    /opt/shammie run '/home/me/exp `id`.toml' --out "
                      "'/scratch/it'\\''s here; touch canary' --resume &\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.rfind("#!/bin/bash\n", 0), 0u);
  // Every #SBATCH line comes before the first command (sbatch stops reading them there).
  const size_t first_command = text.find("\nset -uo pipefail");
  EXPECT_LT(text.rfind("#SBATCH"), first_command);
}

TEST(BatchScriptTest, BashParsesItAndTheQuotedValuesComeBackUnchanged) {
  const BatchScript s = Example();
  const std::string text = RenderBatchScript(s);
  char path[] = "/tmp/shammie-sbatch-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  EXPECT_EQ(std::system(("bash -n " + std::string(path)).c_str()), 0) << text;
  // Run only the variable assignments and exports, then print them.
  std::string vars;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("run_dir=", 0) == 0 || line.rfind("export ", 0) == 0) vars += line + "\n";
  }
  ::unlink(path);
  EXPECT_EQ(BashEcho("\"$(" + vars + " printf %s \"$run_dir|$SHAMMIE_COMMAND_LINE\")\""),
            s.run_dir + "|shammie submit 'a b'");
  EXPECT_FALSE(std::filesystem::exists("canary"));
}

TEST(BatchScriptTest, ArrayTasksGetTheirShard) {
  BatchScript s = Example();
  s.array_tasks = 8;
  s.output_pattern = "/r/slurm/%A_%a.out";
  s.program = {"/opt/shammie", "run", "/e.toml", "--out", kShardDirWord, "--shard", std::string(kShardIndexWord) + "/8",
               "--resume"};
  const std::string text = RenderBatchScript(s);
  EXPECT_NE(text.find("#SBATCH --array=0-7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("#SBATCH --output=/r/slurm/%A_%a.out\n"), std::string::npos) << text;
  EXPECT_NE(text.find("shard_dir=\"$run_dir/shards/$shard\"\n"), std::string::npos) << text;
  EXPECT_NE(text.find("--out \"$shard_dir\" --shard \"$shard\"/8 --resume &"), std::string::npos) << text;
}

}  // namespace
}  // namespace shammie::cluster
