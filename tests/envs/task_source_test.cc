// Task sources: determinism by seed, cursor save/restore (resume), epochs as permutations,
// train/eval disjointness, mixture weights and curriculum, config and JSONL errors that name the
// key / line / field. Oracles are counts and set relations computed here, not by the code.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "envs/generators.h"
#include "envs/jsonl.h"
#include "envs/task_source.h"

namespace lightrl::envs {
namespace {

std::unique_ptr<TaskSource> Build(const std::string& yaml, uint64_t seed, const std::string& split = "train") {
  auto s = BuildTaskSource(YAML::Load(yaml), seed, split);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::string BuildError(const std::string& yaml, const std::string& split = "train") {
  auto s = BuildTaskSource(YAML::Load(yaml), 1, split);
  EXPECT_FALSE(s.ok()) << yaml;
  return s.ok() ? "" : s.status().message();
}

const char* kMix = R"(
sources:
  - {name: arith, kind: arithmetic, weight: 3, size: 50, difficulty: {digits: 2}}
  - {name: cd, kind: countdown, weight: 1, size: 40}
  - {name: srt, kind: list, weight: 1, size: 30}
)";

TEST(TaskSource, DeterministicBySeed) {
  auto a = Build(kMix, 5), b = Build(kMix, 5), c = Build(kMix, 6);
  ASSERT_TRUE(a && b && c);
  int same_c = 0;
  for (int i = 0; i < 200; ++i) {
    Task x = a->Next(), y = b->Next(), z = c->Next();
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.prompt, y.prompt);
    EXPECT_EQ(x.reference_json, y.reference_json);
    same_c += x.id == z.id;
  }
  EXPECT_LT(same_c, 100) << "a different seed should give a different order";
}

TEST(TaskSource, ContentDoesNotDependOnTheRunSeed) {
  // the same task id has the same content under every seed (only the order changes)
  std::map<std::string, std::string> by_id;
  for (uint64_t seed : {1, 2, 3}) {
    auto s = Build(kMix, seed);
    for (int i = 0; i < 300; ++i) {
      Task t = s->Next();
      auto [it, inserted] = by_id.emplace(t.id, t.prompt + t.reference_json);
      if (!inserted) EXPECT_EQ(it->second, t.prompt + t.reference_json) << t.id;
    }
  }
}

TEST(TaskSource, EpochsArePermutations) {
  auto s = Build("[{name: a, kind: arithmetic, size: 37}]", 9);
  ASSERT_TRUE(s);
  std::vector<std::string> e1, e2;
  for (int i = 0; i < 37; ++i) e1.push_back(s->Next().id);
  for (int i = 0; i < 37; ++i) e2.push_back(s->Next().id);
  std::set<std::string> u1(e1.begin(), e1.end()), u2(e2.begin(), e2.end());
  EXPECT_EQ(u1.size(), 37u);
  EXPECT_EQ(u1, u2);
  EXPECT_NE(e1, e2) << "the second epoch should use a new permutation";
  EXPECT_EQ(s->State()["sources"]["a"]["epoch"], 1);
}

TEST(TaskSource, SaveAndRestoreResumesExactly) {
  auto s = Build(kMix, 42);
  for (int i = 0; i < 123; ++i) s->Next();  // crosses epochs of every source
  nlohmann::json st = s->State();
  std::vector<std::string> expected;
  for (int i = 0; i < 150; ++i) expected.push_back(s->Next().id);
  auto r = Build(kMix, 42);
  ASSERT_TRUE(r->Restore(nlohmann::json::parse(st.dump())).ok());
  for (int i = 0; i < 150; ++i) EXPECT_EQ(r->Next().id, expected[i]) << i;
}

TEST(TaskSource, RestoreErrorsNameTheField) {
  auto s = Build(kMix, 42);
  nlohmann::json st = s->State();
  auto other_seed = Build(kMix, 43);
  Status e1 = other_seed->Restore(st);
  EXPECT_NE(e1.message().find("state.seed"), std::string::npos) << e1;
  nlohmann::json bad = st;
  bad["sources"]["cd"]["position"] = 1000;
  EXPECT_NE(s->Restore(bad).message().find("state.sources.cd.position"), std::string::npos);
  bad = st;
  bad["sources"].erase("srt");
  EXPECT_NE(s->Restore(bad).message().find("state.sources.srt"), std::string::npos);
  bad = st;
  bad["sources"]["ghost"] = {{"epoch", 0}, {"position", 0}};
  EXPECT_NE(s->Restore(bad).message().find("state.sources.ghost"), std::string::npos);
  bad = st;
  bad["draws"] = "many";
  EXPECT_NE(s->Restore(bad).message().find("state.draws"), std::string::npos);
  // a failed restore changes nothing
  auto fresh = Build(kMix, 42);
  EXPECT_EQ(s->Next().id, fresh->Next().id);
}

TEST(TaskSource, MixtureFollowsWeights) {
  auto s = Build(kMix, 7);
  std::map<std::string, int> n;
  const int total = 5000;
  for (int i = 0; i < total; ++i) ++n[s->Next().source];
  EXPECT_NEAR(n["arith"] / double(total), 0.6, 0.03);
  EXPECT_NEAR(n["cd"] / double(total), 0.2, 0.03);
  EXPECT_NEAR(n["srt"] / double(total), 0.2, 0.03);
}

TEST(TaskSource, CurriculumAddsSourcesLater) {
  auto s = Build(R"(
sources:
  - {name: easy, kind: arithmetic, weight: 1, difficulty: {digits: 1}}
  - {name: hard, kind: countdown, weight: 1, start_after: 100, ramp: 100}
)", 3);
  int hard_early = 0, hard_ramp = 0, hard_late = 0;
  for (int i = 0; i < 1200; ++i) {
    bool hard = s->Next().source == "hard";
    if (i < 100) hard_early += hard;
    else if (i < 200) hard_ramp += hard;
    else hard_late += hard;
  }
  EXPECT_EQ(hard_early, 0);
  EXPECT_GT(hard_ramp, 5);
  EXPECT_LT(hard_ramp, 50);  // the ramp averages weight 1/4 .. 1/2 of the share
  EXPECT_NEAR(hard_late / 1000.0, 0.5, 0.06);
}

TEST(TaskSource, TrainAndEvalNeverShareAProblem) {
  const char* cfg = "[{name: a, kind: arithmetic, size: 3000, eval_size: 300, eval_fraction: 0.2, difficulty: {digits: 2}}]";
  auto tr = Build(cfg, 1, "train"), ev = Build(cfg, 1, "eval");
  std::set<std::string> train, eval;
  for (int i = 0; i < 3000; ++i) train.insert(tr->Next().prompt);
  for (int i = 0; i < 300; ++i) {
    Task t = ev->Next();
    EXPECT_NE(t.id.find("/eval/"), std::string::npos);
    eval.insert(t.prompt);
  }
  for (const auto& p : eval) EXPECT_EQ(train.count(p), 0u) << p;
  EXPECT_GT(eval.size(), 100u);
}

TEST(TaskSource, ConfigErrorsNameTheKey) {
  struct Case { const char* yaml; const char* key; };
  for (Case c : {Case{"[{kind: arithmetic, difficulty: {digits: 40}}]", "tasks[0].difficulty.digits"},
                 Case{"[{kind: arithmetic, difficulty: {digts: 2}}]", "tasks[0].difficulty"},
                 Case{"[{kind: sudoku}]", "tasks[0].kind"},
                 Case{"[{name: x}]", "tasks[0].kind"},
                 Case{"[{kind: countdown, weight: -1}]", "tasks[0].weight"},
                 Case{"sources: [{kind: list, wieght: 1}]", "tasks.sources[0]"},
                 Case{"sources: [{kind: list}, {kind: list}]", "tasks.sources[1].name"},
                 Case{"sources: [{kind: list, start_after: 5}]", "tasks.sources"},
                 Case{"sources: [{kind: gsm8k, path: /nonexistent/x.jsonl}]", "tasks.sources[0].path"},
                 Case{"{srcs: []}", "tasks"},
                 Case{"[{kind: arithmetic, difficulty: {ops: ['/']}}]", "tasks[0].difficulty.ops"}}) {
    std::string m = BuildError(c.yaml);
    EXPECT_NE(m.find(c.key), std::string::npos) << c.yaml << " -> " << m;
  }
}

class JsonlTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    std::string p = ::testing::TempDir() + "/" + name;
    std::ofstream(p) << text;
    return p;
  }
};

TEST_F(JsonlTest, Gsm8kMathCodeLoaders) {
  std::string g = Write("g.jsonl",
                        "{\"question\": \"Q1?\", \"answer\": \"48/2 = 24\\n#### 1,024\"}\n\n"
                        "{\"question\": \"Q2?\", \"answer\": \"so #### -7\", \"id\": \"x2\"}\n");
  auto recs = LoadJsonl("gsm8k", g);
  ASSERT_TRUE(recs.ok()) << recs.status();
  ASSERT_EQ(recs->size(), 2u);
  EXPECT_EQ((*recs)[0].reference["answer"], "1024");
  EXPECT_EQ((*recs)[0].id, "1");
  EXPECT_EQ((*recs)[1].id, "x2");
  EXPECT_EQ((*recs)[1].reference["answer"], "-7");
  std::string m = Write("m.jsonl", "{\"problem\": \"P\", \"solution\": \"thus \\\\boxed{\\\\frac{1}{2}}\"}\n");
  auto mr = LoadJsonl("math", m);
  ASSERT_TRUE(mr.ok()) << mr.status();
  EXPECT_EQ((*mr)[0].verifier, "math");
  std::string c = Write("c.jsonl",
                        "{\"prompt\": \"add\", \"fn_name\": \"add\", \"tests\": [{\"args\": [1, 2], \"expected\": 3}]}\n");
  auto cr = LoadJsonl("code", c);
  ASSERT_TRUE(cr.ok()) << cr.status();
  EXPECT_EQ((*cr)[0].verifier, "code");
  EXPECT_FALSE((*cr)[0].reference.contains("prompt"));
  EXPECT_EQ((*cr)[0].reference["fn_name"], "add");
}

TEST_F(JsonlTest, ErrorsNameFileLineAndField) {
  struct Case { const char* kind; const char* text; const char* expect; };
  for (Case c : {Case{"gsm8k", "{\"question\": \"q\", \"answer\": \"#### 1\"}\n{\"question\": \"q\"}\n", ":2: field 'answer': missing"},
                 Case{"gsm8k", "{\"question\": \"q\", \"answer\": \"no hashes\"}\n", ":1: field 'answer': expected a GSM8K"},
                 Case{"gsm8k", "{\"question\": 5, \"answer\": \"#### 1\"}\n", ":1: field 'question': expected a string"},
                 Case{"math", "{\"problem\": \"p\", \"solution\": \"no box\"}\n", ":1: field 'solution'"},
                 Case{"code", "{\"prompt\": \"p\", \"tests\": [{\"input\": \"1\"}]}\n", ":1: field 'tests[0].output'"},
                 Case{"code", "{\"prompt\": \"p\", \"fn_name\": \"f\", \"tests\": [{\"args\": 1}]}\n", ":1: field 'tests[0].args'"},
                 Case{"code", "{\"prompt\": \"p\", \"tests\": []}\n", "field 'tests': expected a non-empty array"},
                 Case{"math", "{\"problem\": \"p\", \n", ":1: not valid JSON"}}) {
    std::string p = Write("bad.jsonl", c.text);
    auto r = LoadJsonl(c.kind, p);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status();
  }
  // the first line of a good answer "#### 1" followed by words is not a clean reference
  EXPECT_EQ(Gsm8kFinalAnswer("#### 72 apples"), "");
  EXPECT_EQ(Gsm8kFinalAnswer("x\n#### $1,200\n"), "1200");
}

TEST_F(JsonlTest, JsonlSourceSplitsAndIds) {
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text += "{\"question\": \"What is " + std::to_string(i) + "+1?\", \"answer\": \"#### " + std::to_string(i + 1) + "\"}\n";
  }
  std::string p = Write("gsm.jsonl", text);
  std::string cfg = "[{name: gsm, kind: gsm8k, path: " + p + ", eval_fraction: 0.25}]";
  auto tr = Build(cfg, 1, "train"), ev = Build(cfg, 1, "eval");
  std::set<std::string> a, b;
  for (int i = 0; i < 400; ++i) a.insert(tr->Next().prompt);
  for (int i = 0; i < 200; ++i) b.insert(ev->Next().prompt);
  EXPECT_EQ(a.size() + b.size(), 200u);
  for (const auto& x : b) EXPECT_EQ(a.count(x), 0u);
  Task t = tr->Next();
  EXPECT_EQ(t.verifier, "math");
  EXPECT_EQ(t.id.rfind("gsm/train/", 0), 0u);
  EXPECT_NE(t.prompt.find("Answer:"), std::string::npos) << "default prompt suffix";
  // duplicate ids are rejected with the file named
  std::string d = Write("dup.jsonl", "{\"id\": 1, \"question\": \"a\", \"answer\": \"#### 1\"}\n{\"id\": 1, \"question\": \"b\", \"answer\": \"#### 2\"}\n");
  std::string m = BuildError("[{name: g, kind: gsm8k, eval_fraction: 0, path: " + d + "}]");
  EXPECT_NE(m.find("duplicate record id '1'"), std::string::npos) << m;
}

TEST(Generators, DifficultyKnobsShapeTheTasks) {
  auto s = Build("[{kind: countdown, difficulty: {count: 5, max_number: 50, max_target: 999}}]", 1);
  for (int i = 0; i < 50; ++i) {
    auto ref = nlohmann::json::parse(s->Next().reference_json);
    EXPECT_EQ(ref["numbers"].size(), 5u);
    for (auto& n : ref["numbers"]) EXPECT_LE(n.get<int>(), 50);
    EXPECT_LE(ref["target"].get<int>(), 999);
  }
  auto l = Build("[{kind: latin, difficulty: {n: 5, blank_fraction: 0.4}}]", 1);
  auto ref = nlohmann::json::parse(l->Next().reference_json);
  int blanks = 0;
  for (auto& row : ref["grid"]) for (auto& v : row) blanks += v.get<int>() == 0;
  EXPECT_EQ(blanks, 10);
  auto a = Build("[{kind: arithmetic, difficulty: {digits: 4, min_digits: 4, terms: 3, allow_negative: false}}]", 1);
  for (int i = 0; i < 50; ++i) {
    auto r = nlohmann::json::parse(a->Next().reference_json);
    EXPECT_NE(r["answer"].get<std::string>()[0], '-');
  }
}

TEST(TaskSource, ShippedTinyCurriculumBuildsAndStartsShort) {
  const char* root = std::getenv("LIGHTRL_SOURCE_DIR");
  ASSERT_NE(root, nullptr) << "ctest sets LIGHTRL_SOURCE_DIR";
  YAML::Node cfg = YAML::LoadFile(std::string(root) + "/configs/tasks/tiny_curriculum.yaml");
  auto s = BuildTaskSource(cfg["tasks"], 1);
  ASSERT_TRUE(s.ok()) << s.status();
  for (int i = 0; i < 500; ++i) {
    Task t = (*s)->Next();
    EXPECT_EQ(t.source, "add1") << "only the easiest source is on during the first draws";
    EXPECT_LE(t.prompt.size(), 14u) << t.prompt;
  }
  auto ev = BuildTaskSource(cfg["tasks"], 1, "eval");
  ASSERT_TRUE(ev.ok()) << ev.status();
  std::set<std::string> eval_sources;
  for (int i = 0; i < 500; ++i) eval_sources.insert((*ev)->Next().source);
  EXPECT_EQ(eval_sources.size(), 5u) << "the curriculum does not apply to eval";
}

}  // namespace
}  // namespace lightrl::envs
