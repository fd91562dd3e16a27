// Tests of trainer/checkpoint: every TrainingState field round-trips; auto-resume ignores
// uncommitted (.tmp) and unmarked checkpoints and falls back past truncated / bit-flipped /
// incomplete ones, naming them; keep_last pruning; config drift; export to safetensors; trainer
// capture/restore (a resumed optimizer continues bit-identically); stop signals.
// Oracles: the values written (hand-built), a second optimizer that never went through a
// checkpoint, the original model's logits, hand-written drift lines, HDF5 itself (to corrupt
// the file at a dataset's real offset).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint/step_dir.h"
#include "core/config/config.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/safetensors.h"
#include "trainer/checkpoint.h"
#include "trainer/policy_trainer.h"
#include "trainer/trainer.h"
#include "tests/checkpoint/h5_offsets.h"
#include "tests/util/files.h"

namespace lightrl::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using lightrl::testing::DatasetOffset;

struct TempDir : lightrl::testing::TempDir {
  TempDir() : lightrl::testing::TempDir("lightrl_ckpt_test") {}
};

void FlipByte(const std::string& file, int64_t offset) { lightrl::testing::XorByte(file, offset, 0x10); }


std::string SourceDir() {
  const char* dir = std::getenv("LIGHTRL_SOURCE_DIR");
  return dir ? dir : ".";
}

// A small hand-built state with every field set (no model needed).
TrainingState SmallState(int64_t step) {
  torch::manual_seed(static_cast<uint64_t>(step) + 100);
  TrainingState s;
  s.step = step;
  s.weights_version = (uint64_t{1} << 40) + static_cast<uint64_t>(step);
  s.consumed_prompts = 8 * step;
  s.consumed_samples = 64 * step;
  s.next_reward_batch = static_cast<uint64_t>(step) * 3 + 1;
  s.optimizer_step = 2 * step;
  s.model["model.embed_tokens.weight"] = torch::randn({6, 4});                       // [V, C] fp32
  s.model["model.layers.0.block_sparse_moe.gate.weight"] = torch::randn({3, 4});      // [E, C] fp32
  s.model["lm_head.weight"] = torch::randn({6, 4});                                   // [V, C] fp32
  for (const auto& [name, t] : s.model) {
    s.optimizer["exp_avg/" + name] = torch::randn(t.sizes());
    s.optimizer["exp_avg_sq/" + name] = torch::rand(t.sizes());
  }
  s.extra_models["critic"]["value_head.weight"] = torch::randn({1, 4});               // [1, C] fp32
  s.extra_models["critic"]["scale"] = torch::tensor(2.5, torch::kFloat64);            // [] fp64
  s.extra_models["critic_optim"]["exp_avg/value_head.weight"] = torch::randn({1, 4}).to(torch::kBFloat16);
  s.extra_models["buffers"]["ids"] = torch::arange(5, torch::kInt64);                  // [5] int64
  s.extra_models["buffers"]["mask"] = torch::tensor({true, false, true});              // [3] bool
  s.extra_models["buffers"]["empty"] = torch::zeros({0, 3});                           // [0, 3] fp32
  s.rng_tensors["torch_cpu"] = CaptureTorchRng().at("torch_cpu");                     // [N] uint8
  s.task_cursor = {{"epoch", 2}, {"position", 17 + step}, {"permutation_seed", 12345}, {"source", "countdown"}};
  s.rng = {{"sampler_seed", 99}, {"rollout_seeds", {1, 2, 3}}};
  s.algorithm_state = {{"kl_coef", 0.0123}, {"entropy_coef", 0.001}, {"dapo_buffer", json::array()}};
  s.extra = {{"note", "ünïcode ok"}, {"nested", {{"a", nullptr}}}};
  s.config_yaml = "model:\n  hidden_size: 4\nrollout:\n  temperature: 1.0\n";
  s.world_size = 4;
  s.git_commit = "deadbeef";
  return s;
}

void ExpectSameTensors(const model::NamedTensors& a, const model::NamedTensors& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << what << ": " << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << what << ": " << name;
    EXPECT_EQ(it->second.sizes(), t.sizes()) << what << ": " << name;
    EXPECT_TRUE(torch::equal(it->second, t)) << what << ": " << name;
  }
}



CheckpointConfig Keep(int64_t keep_last, int64_t save_every = 0) {
  CheckpointConfig c;
  c.keep_last = keep_last;
  c.save_every = save_every;
  return c;
}

std::vector<int64_t> Steps(const std::string& root) {
  auto dirs = checkpoint::ListStepDirs(root);
  std::vector<int64_t> out;
  for (const auto& d : *dirs) out.push_back(d.step);
  return out;
}

TEST(CheckpointTest, EveryFieldRoundTrips) {
  TempDir run;
  CheckpointManager manager(run.path(), Keep(3));
  const TrainingState saved = SmallState(7);
  ASSERT_TRUE(manager.Save(saved).ok());
  EXPECT_TRUE(fs::exists(run / "checkpoints/step_7/state.h5"));
  EXPECT_TRUE(fs::exists(run / "checkpoints/step_7/COMPLETE"));
  auto loaded = LoadCheckpoint(run / "checkpoints/step_7");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 7);
  EXPECT_EQ(loaded->weights_version, (uint64_t{1} << 40) + 7);
  EXPECT_EQ(loaded->consumed_prompts, 56);
  EXPECT_EQ(loaded->consumed_samples, 448);
  EXPECT_EQ(loaded->next_reward_batch, 22u);
  EXPECT_EQ(loaded->optimizer_step, 14);
  ExpectSameTensors(saved.model, loaded->model, "model");
  ExpectSameTensors(saved.optimizer, loaded->optimizer, "optimizer");
  ExpectSameTensors(saved.rng_tensors, loaded->rng_tensors, "rng");
  ASSERT_EQ(loaded->extra_models.size(), 3u);
  for (const auto& [key, tensors] : saved.extra_models) ExpectSameTensors(tensors, loaded->extra_models[key], key);
  EXPECT_EQ(loaded->task_cursor, saved.task_cursor);
  EXPECT_EQ(loaded->rng, saved.rng);
  EXPECT_EQ(loaded->algorithm_state, saved.algorithm_state);
  EXPECT_EQ(loaded->extra, saved.extra);
  EXPECT_EQ(loaded->config_yaml, saved.config_yaml);
  EXPECT_EQ(loaded->world_size, 4);
  EXPECT_EQ(loaded->git_commit, "deadbeef");
  // The same checkpoint through the other accepted paths: the file, the root's and the run's `latest`.
  for (const std::string p : {run / "checkpoints/step_7/state.h5", run / "checkpoints", run.path()}) {
    auto again = LoadCheckpoint(p);
    ASSERT_TRUE(again.ok()) << p << ": " << again.status();
    EXPECT_EQ(again->step, 7) << p;
  }
  EXPECT_EQ(LoadCheckpoint(run / "nope").status().code(), StatusCode::kNotFound);

  // ckpt-info: validity, counters, every tensor with dtype and shape, the config.
  auto info = InspectCheckpoint(run.path());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->valid());
  const std::string text = FormatCheckpointInfo(*info);
  for (const char* expected : {"valid: yes", "  step: 7\n", "  world_size: 4\n", "model/lm_head.weight  float32 [6, 4]",
                               "extra_models/critic_optim/exp_avg/value_head.weight  bfloat16 [1, 4]",
                               "extra_models/buffers/empty  float32 [0, 3]", "optimizer/exp_avg_sq: 3 tensors, 60 elements",
                               "temperature: 1.0", "\"position\":24"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\n" << text;
  }
}

TEST(CheckpointTest, InvalidNamesAndDtypesAreRefusedByName) {
  TempDir dir;
  TrainingState s = SmallState(1);
  s.model["model.layers/../weight"] = torch::zeros({1});
  Status st = WriteCheckpointFile(dir / "a.h5", s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("model.layers/../weight"), std::string::npos) << st;
  EXPECT_FALSE(fs::exists(dir / "a.h5"));  // refused before anything is written
  s = SmallState(1);
  s.optimizer["exp_avg//x"] = torch::zeros({1});
  EXPECT_EQ(WriteCheckpointFile(dir / "a.h5", s).code(), StatusCode::kInvalidArgument);
  s = SmallState(1);
  s.extra_models["a/b"]["x"] = torch::zeros({1});
  EXPECT_EQ(WriteCheckpointFile(dir / "b.h5", s).code(), StatusCode::kInvalidArgument);
  s = SmallState(1);
  s.model["complex"] = torch::zeros({2}, torch::kComplexFloat);
  st = WriteCheckpointFile(dir / "c.h5", s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("complex"), std::string::npos) << st;
}

TEST(CheckpointTest, ResumeModes) {
  TempDir run;
  CheckpointManager manager(run.path(), Keep(5));
  auto none = manager.Resume("none");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto fresh = manager.Resume("auto");  // no checkpoint yet: start from scratch
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->has_value());
  ASSERT_TRUE(manager.Save(SmallState(2)).ok());
  ASSERT_TRUE(manager.Save(SmallState(4)).ok());
  auto latest = manager.Resume("auto");
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 4);
  auto explicit_path = manager.Resume(run / "checkpoints/step_2");
  ASSERT_TRUE(explicit_path.ok() && explicit_path->has_value()) << explicit_path.status();
  EXPECT_EQ((*explicit_path)->step, 2);
  auto missing = manager.Resume(run / "checkpoints/step_3");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("--resume"), std::string::npos);
  EXPECT_EQ(*checkpoint::ReadLatestPointer(run / "checkpoints"), run / "checkpoints/step_4");
}

TEST(CheckpointTest, AutoResumeIgnoresTmpDirsAndUnmarkedCheckpoints) {
  TempDir run;
  CheckpointManager manager(run.path(), Keep(10));
  ASSERT_TRUE(manager.Save(SmallState(2)).ok());
  ASSERT_TRUE(manager.Save(SmallState(4)).ok());
  const std::string root = run / "checkpoints";
  // A save interrupted after writing everything but before the rename (marker included).
  fs::copy(root + "/step_4", root + "/step_6.tmp", fs::copy_options::recursive);
  // A step dir without its completion marker (a partial copy).
  fs::create_directories(root + "/step_8");
  fs::copy_file(root + "/step_4/state.h5", root + "/step_8/state.h5");
  auto resumed = manager.Resume("auto");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE(resumed->has_value());
  EXPECT_EQ((*resumed)->step, 4);
  ASSERT_EQ(manager.skipped().size(), 1u);
  EXPECT_NE(manager.skipped()[0].find("step_8"), std::string::npos) << manager.skipped()[0];
  EXPECT_NE(manager.skipped()[0].find("COMPLETE"), std::string::npos) << manager.skipped()[0];
  auto valid = manager.LatestValid();
  ASSERT_TRUE(valid.ok());
  EXPECT_EQ(*valid, root + "/step_4");
  // The next save removes the leftover .tmp.
  ASSERT_TRUE(manager.Save(SmallState(10)).ok());
  EXPECT_FALSE(fs::exists(root + "/step_6.tmp"));
}

TEST(CheckpointTest, TruncatedAndBitFlippedCheckpointsAreNamedAndSkipped) {
  TempDir run;
  CheckpointManager manager(run.path(), Keep(10));
  for (int step : {2, 4, 6}) ASSERT_TRUE(manager.Save(SmallState(step)).ok());
  const std::string root = run / "checkpoints";
  // step_6: truncated to half (the marker's recorded size catches it).
  fs::resize_file(root + "/step_6/state.h5", fs::file_size(root + "/step_6/state.h5") / 2);
  // step_4: one byte flipped inside a model tensor (same size, marker fine: the crc catches it).
  const std::string file4 = root + "/step_4/state.h5";
  const int64_t off = DatasetOffset(file4, "model/lm_head.weight");
  ASSERT_GT(off, 0);
  FlipByte(file4, off + 9);
  auto resumed = manager.Resume("auto");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE(resumed->has_value());
  EXPECT_EQ((*resumed)->step, 2);
  ExpectSameTensors(SmallState(2).model, (*resumed)->model, "fallback model");
  ASSERT_EQ(manager.skipped().size(), 2u);
  EXPECT_NE(manager.skipped()[0].find("step_6"), std::string::npos) << manager.skipped()[0];
  EXPECT_NE(manager.skipped()[0].find("DATA_LOSS"), std::string::npos) << manager.skipped()[0];
  EXPECT_NE(manager.skipped()[1].find("step_4"), std::string::npos) << manager.skipped()[1];
  EXPECT_NE(manager.skipped()[1].find("'model/lm_head.weight'"), std::string::npos) << manager.skipped()[1];
  EXPECT_NE(manager.skipped()[1].find("checksum mismatch"), std::string::npos) << manager.skipped()[1];
  // An explicit PATH does not fall back.
  auto explicit_bad = manager.Resume(root + "/step_4");
  EXPECT_EQ(explicit_bad.status().code(), StatusCode::kDataLoss);
  // ckpt-info reports the problem by dataset.
  auto info = InspectCheckpoint(root + "/step_4");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->valid());
  const std::string text = FormatCheckpointInfo(*info);
  EXPECT_NE(text.find("valid: NO"), std::string::npos) << text;
  EXPECT_NE(text.find("model/lm_head.weight"), std::string::npos) << text;
  // A truncated file outside any step dir (no marker) is caught by HDF5 itself.
  fs::copy_file(root + "/step_2/state.h5", run / "loose.h5");
  fs::resize_file(run / "loose.h5", fs::file_size(run / "loose.h5") - 100);
  Status loose = ValidateCheckpoint(run / "loose.h5");
  EXPECT_EQ(loose.code(), StatusCode::kDataLoss) << loose;
  EXPECT_NE(loose.message().find("loose.h5"), std::string::npos) << loose;
  // When every checkpoint is bad, auto-resume refuses (it never silently starts over).
  FlipByte(root + "/step_2/state.h5", DatasetOffset(root + "/step_2/state.h5", "model/lm_head.weight") + 1);
  auto all_bad = manager.Resume("auto");
  EXPECT_EQ(all_bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(all_bad.status().message().find("--resume none"), std::string::npos) << all_bad.status();
  EXPECT_EQ(manager.skipped().size(), 3u);
}

TEST(CheckpointTest, MissingDatasetAndNewerFormatAreRefused) {
  TempDir dir;
  const std::string file = dir / "state.h5";
  ASSERT_TRUE(WriteCheckpointFile(file, SmallState(3)).ok());
  ASSERT_TRUE(ValidateCheckpoint(file).ok());
  {
    hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(H5Ldelete(f, "optimizer/exp_avg/lm_head.weight", H5P_DEFAULT), 0);
    H5Fclose(f);
  }
  auto loaded = LoadCheckpoint(file);
  EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("'optimizer/exp_avg/lm_head.weight' is missing"), std::string::npos)
      << loaded.status();

  const std::string file2 = dir / "state2.h5";
  ASSERT_TRUE(WriteCheckpointFile(file2, SmallState(3)).ok());
  {
    hid_t f = H5Fopen(file2.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t v = kCheckpointFormatVersion + 1;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Fclose(f);
  }
  auto newer = LoadCheckpoint(file2);
  EXPECT_EQ(newer.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(newer.status().message().find("HINT"), std::string::npos) << newer.status();
}

TEST(CheckpointTest, KeepLastPrunesAndDueFollowsSaveEvery) {
  TempDir run;
  CheckpointManager manager(run.path(), Keep(2, 3));
  for (int step = 1; step <= 5; ++step) ASSERT_TRUE(manager.Save(SmallState(step)).ok());
  EXPECT_EQ(Steps(run / "checkpoints"), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(*checkpoint::ReadLatestPointer(run / "checkpoints"), run / "checkpoints/step_5");
  std::vector<int64_t> due;
  for (int64_t step = 1; step <= 10; ++step) {
    if (manager.Due(step, 10)) due.push_back(step);
  }
  EXPECT_EQ(due, (std::vector<int64_t>{3, 6, 9, 10}));
  CheckpointManager only_end(run.path(), Keep(2, 0));
  EXPECT_FALSE(only_end.Due(3, 10));
  EXPECT_TRUE(only_end.Due(10, 10));
}

TEST(CheckpointTest, ConfigDriftIsListedAndModelChangesAreRefused) {
  const std::string saved = R"(
model:
  hidden_size: 128
  attn_type_list: [0, 1]
  lightning_block_size: 64
rollout:
  temperature: 1.0
  top_p: 1
algorithm:
  name: cispo
  eps_high: 5.0
tasks:
  - name: countdown
)";
  YAML::Node current = *LoadConfigString(saved);
  auto same = CheckConfigDrift(saved, current);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->empty());

  current["rollout"]["temperature"] = "0.8";
  current["rollout"]["top_p"] = "1.0";            // same value, different spelling: not drift
  current["algorithm"]["eps_low"] = "0.2";        // added
  current["algorithm"].remove("eps_high");        // removed
  current["tasks"][0]["name"] = "gsm8k";          // list changed
  current["model"]["lightning_block_size"] = 128; // kernel knob: listed, allowed
  auto drift = CheckConfigDrift(saved, current);
  ASSERT_TRUE(drift.ok()) << drift.status();
  const std::vector<std::string> expected = {
      "algorithm.eps_high: 5.0 -> <absent>",
      "algorithm.eps_low: <absent> -> 0.2",
      "model.lightning_block_size: 64 -> 128",
      "rollout.temperature: 1.0 -> 0.8",
      "tasks: [{name: countdown}] -> [{name: gsm8k}]",
  };
  EXPECT_EQ(*drift, expected);

  current["model"]["hidden_size"] = 256;
  current["model"]["attn_type_list"] = YAML::Load("[0, 0]");
  auto refused = CheckConfigDrift(saved, current);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("model.hidden_size: 128 -> 256"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("model.attn_type_list: [0, 1] -> [0, 0]"), std::string::npos);
  EXPECT_EQ(refused.status().message().find("lightning_block_size"), std::string::npos);  // allowed knob
  EXPECT_NE(refused.status().message().find("HINT"), std::string::npos);
}

// ---- with the tiny model ------------------------------------------------------------------

model::ModelConfig TinyConfig() {
  auto config = model::LoadModelConfig(SourceDir() + "/configs/model/tiny.yaml");
  LR_CHECK(config.ok(), config.status().ToString());
  return *config;
}

TEST(CheckpointTest, ExportReloadsIntoAFreshModelWithIdenticalLogits) {
  TempDir run;
  torch::NoGradGuard no_grad;
  const model::ModelConfig config = TinyConfig();
  model::HybridModel original(config);
  original->InitWeights(11);
  original->eval();
  TrainingState s;
  s.step = 3;
  s.model = ExportParameters(*original);
  YAML::Node root = *LoadConfigFile(SourceDir() + "/configs/model/tiny.yaml");
  root["trainer"]["total_steps"] = 10;
  s.config_yaml = ConfigToYaml(root);
  CheckpointManager manager(run.path(), Keep(1));
  ASSERT_TRUE(manager.Save(s).ok());

  const std::string out = run / "export";
  Status st = ExportCheckpoint(run / "checkpoints/step_3", out);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  auto reloaded = model::LoadModelDirectory(out);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  (*reloaded)->eval();
  torch::manual_seed(5);
  torch::Tensor ids = torch::randint(config.vocab_size, {2, 37}, torch::kLong);  // [B, T] int64
  torch::Tensor expected = original->forward(ids).logits;                       // [B, T, V] fp32
  torch::Tensor got = (*reloaded)->forward(ids).logits;                         // [B, T, V] fp32
  EXPECT_TRUE(torch::equal(expected, got)) << (expected - got).abs().max().item<double>();
  // A fresh model with other weights really differs (the comparison above is not vacuous).
  model::HybridModel other(config);
  other->InitWeights(12);
  other->eval();
  EXPECT_FALSE(torch::allclose(other->forward(ids).logits, expected));
}

struct NullFeed : TaskFeed {
  std::vector<PromptTask> Next(int64_t) override { return {}; }
  json State() const override { return json::object(); }
  Status Restore(const json&) override { return Status::Ok(); }
};
struct NullRollout : RolloutPort {
  StatusOr<protocol::RolloutResult> Generate(const protocol::RolloutRequest&) override {
    return Unimplemented("test port");
  }
  Status PublishWeights(const model::NamedTensors&, uint64_t) override { return Status::Ok(); }
};
struct NullReward : RewardPort {
  std::vector<RewardResult> Score(const protocol::RewardBatch&) override { return {}; }
};

struct TinyTrainer {
  TinyTrainer(uint64_t seed, const std::string& run_dir) {
    config.model = TinyConfig();
    config.trainer.total_steps = 10;
    config.optim.warmup_steps = 2;
    config.raw = *LoadConfigFile(SourceDir() + "/configs/model/tiny.yaml");
    AlgorithmHooks hooks;
    hooks.name = "test";
    hooks.loss = [](const LossInputs&, std::map<std::string, double>*) { return torch::zeros({}); };
    hooks.advantages = [](const std::vector<double>& r, const std::vector<int64_t>&) { return r; };
    model::HybridModel policy(config.model);
    policy->InitWeights(seed);
    ports.tasks = &feed;
    ports.rollout = &rollout;
    ports.reward = &reward;
    ports.collective = &collective;
    trainer = std::make_unique<Trainer>(config, hooks, policy, ports, run_dir);
  }
  // One AdamW step with gradients drawn from `seed` (identical across trainers for a seed).
  void Step(uint64_t seed) {
    torch::manual_seed(seed);
    for (auto& p : trainer->policy().model()->parameters()) p.mutable_grad() = torch::randn(p.sizes()) * 1e-3;
    trainer->policy().optimizer().Step();
  }
  TrainConfig config;
  NullFeed feed;
  NullRollout rollout;
  NullReward reward;
  LocalCollective collective;
  TrainerPorts ports;
  std::unique_ptr<Trainer> trainer;
};

TEST(CheckpointTest, ResumedTrainerContinuesBitIdentically) {
  TempDir run;
  TinyTrainer a(1, run.path());
  a.Step(100);
  a.Step(101);
  a.trainer->SetCounters(2, 2, 16, 128);
  TrainingState s = CaptureTrainingState(*a.trainer, a.config);
  s.next_reward_batch = 5;
  s.task_cursor = {{"epoch", 0}, {"position", 16}};
  CheckpointManager manager(run.path(), Keep(2));
  ASSERT_TRUE(manager.Save(s).ok());
  const torch::Tensor rng_expected = torch::rand({4});  // the draw right after the capture
  a.Step(102);                                          // the uninterrupted run continues

  TinyTrainer b(2, run.path());                         // a fresh process: other weights
  auto resumed = manager.Resume("auto");
  ASSERT_TRUE(resumed.ok() && resumed->has_value()) << resumed.status();
  ASSERT_TRUE(RestoreTrainingState(**resumed, *b.trainer).ok());
  EXPECT_TRUE(torch::equal(torch::rand({4}), rng_expected));  // torch CPU generator restored
  EXPECT_EQ(b.trainer->step(), 2);
  EXPECT_EQ(b.trainer->weights_version(), 2u);
  EXPECT_EQ(b.trainer->consumed_prompts(), 16);
  EXPECT_EQ(b.trainer->consumed_samples(), 128);
  EXPECT_EQ(b.trainer->policy().optimizer().step(), 2);
  EXPECT_EQ((*resumed)->task_cursor["position"], 16);
  b.Step(102);
  // After the same third update, the resumed run equals the uninterrupted one exactly
  // (parameters, both moments): the LR schedule, moments and bias corrections were restored.
  ExpectSameTensors(ExportParameters(*a.trainer->policy().model()), ExportParameters(*b.trainer->policy().model()),
                    "parameters after resume");
  ExpectSameTensors(a.trainer->policy().optimizer().ExportState(), b.trainer->policy().optimizer().ExportState(),
                    "optimizer after resume");

  // A checkpoint of another model shape is refused by name.
  TrainingState wrong = **resumed;
  wrong.model["lm_head.weight"] = torch::zeros({3, 3});
  Status st = RestoreTrainingState(wrong, *b.trainer);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("lm_head.weight"), std::string::npos) << st;
}

TEST(StopSignalTest, FirstSignalSetsTheFlagSecondKills) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ClearStopRequest();
    InstallStopSignalHandlers();
    bool before = StopRequested();
    std::raise(SIGTERM);
    char ok = (!before && StopRequested() && StopSignal() == SIGTERM) ? 'y' : 'n';
    (void)!write(fds[1], &ok, 1);
    std::raise(SIGTERM);  // one-shot handler: the default action now terminates the process
    _exit(3);
  }
  close(fds[1]);
  char ok = 0;
  ASSERT_EQ(read(fds[0], &ok, 1), 1);
  EXPECT_EQ(ok, 'y');
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;

  LocalCollective single;
  ClearStopRequest();
  EXPECT_FALSE(AnyRankStopRequested(single));
}

}  // namespace
}  // namespace lightrl::trainer
