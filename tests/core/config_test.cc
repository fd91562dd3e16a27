#include "core/config/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace lightrl {
namespace {

YAML::Node Parse(const std::string& text) { return LoadConfigString(text).value(); }

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigReaderTest, ReadsTypedValuesAndDefaults) {
  YAML::Node root = Parse("a: 3\nb: 1.5e-3\nc: true\nd: [1, 2, 3]\ns: cispo\n");
  ConfigReader r(root, "algo");
  EXPECT_EQ(r.Get<int>("a"), 3);
  EXPECT_DOUBLE_EQ(r.Get<double>("b"), 1.5e-3);
  EXPECT_TRUE(r.Get<bool>("c"));
  EXPECT_EQ(r.Get<std::vector<int>>("d"), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(r.Get<std::string>("s"), "cispo");
  EXPECT_EQ(r.Get<int>("missing", 7), 7);
  EXPECT_FALSE(r.GetOptional<double>("absent").has_value());
  EXPECT_NO_THROW(r.Finish());
}

TEST(ConfigReaderTest, ErrorsNameTheKeyPathAndExpectation) {
  YAML::Node root = Parse("model:\n  hidden_size: abc\n  layers: [1, x]\n");
  ConfigReader top(root, "");
  ConfigReader m = top.Child("model");
  EXPECT_EQ(ErrorOf([&] { m.Get<int64_t>("hidden_size"); }),
            "model.hidden_size: expected an integer, got 'abc'");
  EXPECT_EQ(ErrorOf([&] { m.Get<std::vector<int>>("layers"); }),
            "model.layers[1]: expected an integer, got 'x'");
  EXPECT_EQ(ErrorOf([&] { m.Get<int>("vocab_size"); }), "model.vocab_size: missing required key");
  EXPECT_EQ(ErrorOf([&] { top.Child("trainer"); }), "trainer: missing required section");
}

TEST(ConfigReaderTest, UnknownKeyIsAnError) {
  YAML::Node root = Parse("eps_high: 4.0\neps_hgih: 5.0\n");
  ConfigReader r(root, "algorithm.policy_loss");
  r.Get<double>("eps_high");
  const std::string err = ErrorOf([&] { r.Finish(); });
  EXPECT_NE(err.find("algorithm.policy_loss.eps_hgih: unknown key"), std::string::npos) << err;
  EXPECT_NE(err.find("eps_high"), std::string::npos) << err;
}

TEST(ConfigReaderTest, IntegerRangeAndBool) {
  YAML::Node root = Parse("big: 99999999999\nflag: yes_please\nsci: 1e6\nfrac: 2.5\n");
  ConfigReader r(root, "");
  EXPECT_NE(ErrorOf([&] { r.Get<int>("big"); }).find("big: expected an integer"), std::string::npos);
  EXPECT_EQ(r.Get<int64_t>("big"), 99999999999LL);
  EXPECT_EQ(r.Get<int>("sci"), 1000000);
  EXPECT_NE(ErrorOf([&] { r.Get<int>("frac"); }), "");
  EXPECT_EQ(ErrorOf([&] { r.Get<bool>("flag"); }), "flag: expected true or false, got 'yes_please'");
}

TEST(ConfigOverrideTest, DottedOverridesSetNestedValues) {
  YAML::Node root = Parse("trainer:\n  total_steps: 10\n  seed: 1\n");
  ASSERT_TRUE(ApplyOverrides(root, {"trainer.total_steps=3", "algorithm.policy_loss.eps_high=5.5",
                                    "model.attn_type_list=[0, 1]"})
                  .ok());
  EXPECT_EQ(root["trainer"]["total_steps"].as<int>(), 3);
  EXPECT_EQ(root["trainer"]["seed"].as<int>(), 1);
  EXPECT_DOUBLE_EQ(root["algorithm"]["policy_loss"]["eps_high"].as<double>(), 5.5);
  EXPECT_EQ(root["model"]["attn_type_list"].size(), 2u);
}

TEST(ConfigOverrideTest, MalformedOverridesAreRejectedWithTheirText) {
  YAML::Node root = Parse("trainer:\n  total_steps: 10\n");
  Status s = ApplyOverrides(root, {"no_equals_sign"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no_equals_sign"), std::string::npos);
  s = ApplyOverrides(root, {"trainer.total_steps.x=1"});
  EXPECT_NE(s.message().find("'trainer.total_steps' is '10', not a map"), std::string::npos)
      << s.message();
}

TEST(ConfigFileTest, IncludesMergeAndIncludingFileWins) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("lightrl_config_test_" + std::to_string(::getpid()));
  fs::create_directories(dir / "base");
  std::ofstream(dir / "base" / "model.yaml") << "model:\n  hidden_size: 64\n  num_hidden_layers: 8\n";
  std::ofstream(dir / "recipe.yaml") << "include: [base/model.yaml]\nmodel:\n  hidden_size: 128\n";
  auto node = LoadConfigFile((dir / "recipe.yaml").string());
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ((*node)["model"]["hidden_size"].as<int>(), 128);
  EXPECT_EQ((*node)["model"]["num_hidden_layers"].as<int>(), 8);
  EXPECT_FALSE((*node)["include"]);

  std::ofstream(dir / "bad.yaml") << "a: [1, 2\n";
  auto bad = LoadConfigFile((dir / "bad.yaml").string());
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.yaml: YAML syntax error at line"), std::string::npos)
      << bad.status();
  auto missing = LoadConfigFile((dir / "nope.yaml").string());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lightrl
