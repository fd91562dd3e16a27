// AdamW against libtorch's torch::optim::AdamW (an independent implementation), the LR schedule
// against closed forms, name-keyed state round trip, clipping, and config errors.
#include "trainer/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

namespace lightrl::trainer {
namespace {

TEST(OptimizerTest, MatchesLibtorchAdamW) {
  torch::manual_seed(0);
  torch::OrderedDict<std::string, torch::Tensor> mine, ref;
  for (auto [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{{"w", {4, 3}}, {"g", {3}}}) {
    torch::Tensor init = torch::randn(shape);
    mine.insert(name, init.clone().requires_grad_(true));
    ref.insert(name, init.clone().requires_grad_(true));
  }
  OptimConfig c;
  c.lr = 1e-2;
  c.warmup_steps = 0;
  c.weight_decay = 0.1;
  c.grad_clip = 0;  // libtorch's AdamW does not clip
  Optimizer opt(mine, c, 100);
  // libtorch with the same decay split: decay on matrices only.
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{ref["w"]},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-15).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{ref["g"]},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-15).weight_decay(0.0)));
  torch::optim::AdamW torch_opt(groups, torch::optim::AdamWOptions(1e-2));
  for (int step = 0; step < 5; ++step) {
    torch::Tensor x = torch::randn({3});
    auto loss = [&](torch::OrderedDict<std::string, torch::Tensor>& p) {
      return (torch::matmul(p["w"], x * p["g"]).pow(2).sum() + p["g"].sum() * (step + 1));
    };
    opt.ZeroGrad();
    torch_opt.zero_grad();
    loss(mine).backward();
    loss(ref).backward();
    opt.Step();
    torch_opt.step();
    for (const auto& item : mine)
      EXPECT_TRUE(torch::allclose(item.value(), ref[item.key()], 1e-6, 1e-7)) << item.key() << " step " << step;
  }
  EXPECT_EQ(opt.step(), 5);
}

TEST(OptimizerTest, ScheduleWarmupConstantAndCosine) {
  OptimConfig c;
  c.lr = 1.0;
  c.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 0, 100), 0.25);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 3, 100), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 50, 100), 1.0);
  c.schedule = "cosine";
  c.min_lr_ratio = 0.0;
  EXPECT_NEAR(ScheduledLr(c, 4, 104), 1.0, 1e-12);
  EXPECT_NEAR(ScheduledLr(c, 54, 104), 0.5, 1e-12);  // halfway through the cosine horizon
  EXPECT_NEAR(ScheduledLr(c, 104, 104), 0.0, 1e-12);
}

TEST(OptimizerTest, ClipsTheGlobalNormAndReportsIt) {
  torch::OrderedDict<std::string, torch::Tensor> p;
  p.insert("a", torch::zeros({2}, torch::requires_grad()));
  OptimConfig c;
  c.lr = 0.1;
  c.warmup_steps = 0;
  c.grad_clip = 1.0;
  Optimizer opt(p, c, 10);
  p["a"].mutable_grad() = torch::tensor({3.0f, 4.0f});
  EXPECT_DOUBLE_EQ(opt.Step(), 5.0);
  // First Adam step moves each coordinate by lr * sign(g) regardless of scale.
  EXPECT_NEAR(p["a"][0].item<double>(), -0.1, 1e-6);
  p["a"].mutable_grad() = torch::tensor({NAN, 0.0f});
  EXPECT_THROW(opt.Step(), std::exception);
}

TEST(OptimizerTest, StateRoundTripsByName) {
  torch::OrderedDict<std::string, torch::Tensor> p;
  p.insert("a", torch::ones({2, 2}, torch::requires_grad()));
  OptimConfig c;
  Optimizer opt(p, c, 10);
  p["a"].mutable_grad() = torch::ones({2, 2});
  opt.Step();
  auto state = opt.ExportState();
  Optimizer other(p, c, 10);
  ASSERT_TRUE(other.ImportState(state, opt.step()).ok());
  EXPECT_TRUE(torch::equal(other.ExportState().at("exp_avg/a"), state.at("exp_avg/a")));
  state.erase("exp_avg_sq/a");
  Status s = other.ImportState(state, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("exp_avg_sq/a"), std::string::npos);
}

TEST(OptimizerTest, ConfigErrorsNameTheKey) {
  auto node = LoadConfigString("optim:\n  lr: 1e-6\n  schedule: linear\n").value();
  ConfigReader r(node["optim"], "optim");
  try {
    ParseOptimConfig(r);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("optim.schedule"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lightrl::trainer
