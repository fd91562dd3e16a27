// Tests for core/comm/mpi_tensors.h under `mpirun -np 2`: the in-place tensor all-reduce against
// a sum computed locally in fp64 from every rank's (seeded, reproducible) inputs, and the weight
// broadcast with its manifest check. All tests are collective (EXPECT before collectives).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "core/comm/mpi_tensors.h"

namespace lightrl::comm {
namespace {

MpiComm& World() {
  static MpiComm* world = new MpiComm(MpiComm::World());
  return *world;
}

// The tensors rank `r` contributes: deterministic in r, so every rank can compute every other
// rank's input and the exact expected sum without communicating.
std::vector<torch::Tensor> Inputs(int r) {
  torch::Generator gen = at::detail::createCPUGenerator(1000 + r);
  return {
      torch::randn({3, 5}, gen),                                              // fp32, packed
      torch::randn({70000}, gen),                                             // fp32, > bucket: direct
      torch::zeros({0}),                                                      // empty
      torch::randn({7}, gen).to(torch::kFloat64),                             // fp64 (new bucket)
      torch::randint(-1000000000LL, 1000000000LL, {4}, gen, torch::kInt64),   // int64
      torch::randn({2, 2}, gen),                                              // fp32 again
      torch::randn({}, gen),                                                  // 0-d scalar
  };
}

TEST(MpiTensorsTest, RunsOnTwoRanks) { EXPECT_EQ(World().size(), 2) << "run under mpirun -np 2"; }

TEST(MpiTensorsTest, AllReduceMatchesALocallyComputedSum) {
  std::vector<torch::Tensor> mine = Inputs(World().rank());
  std::vector<void*> ptrs;
  for (auto& t : mine) ptrs.push_back(t.data_ptr());
  Status s = AllReduceSumInPlace(World(), mine, AllReduceOptions{4096});
  EXPECT_TRUE(s.ok()) << s;
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_EQ(mine[i].data_ptr(), ptrs[i]) << "tensor " << i << " was not reduced in place";
    torch::Tensor expected = torch::zeros_like(mine[i], torch::kFloat64);
    for (int r = 0; r < World().size(); ++r) expected += Inputs(r)[i].to(torch::kFloat64);
    if (mine[i].scalar_type() == torch::kInt64) {
      EXPECT_TRUE(torch::equal(mine[i], expected.to(torch::kInt64))) << "tensor " << i;
    } else {
      // fp32: one rounding of an exact two-term sum -> within half an ulp of the fp64 value.
      const double tol = mine[i].scalar_type() == torch::kFloat32 ? 1e-6 : 1e-15;
      EXPECT_TRUE(torch::allclose(mine[i].to(torch::kFloat64), expected, tol, tol)) << "tensor " << i;
    }
  }
}

TEST(MpiTensorsTest, AllReduceWorksOnParametersThatRequireGrad) {
  torch::Tensor p = torch::full({4}, static_cast<float>(World().rank() + 1)).requires_grad_(true);
  std::vector<torch::Tensor> v = {p};
  EXPECT_TRUE(AllReduceSumInPlace(World(), v).ok());
  EXPECT_TRUE(torch::equal(p.detach(), torch::full({4}, 3.0f)));
  EXPECT_TRUE(p.requires_grad());
}

TEST(MpiTensorsTest, MismatchedShapesFailOnEveryRankInsteadOfHanging) {
  std::vector<torch::Tensor> v = {torch::ones({World().rank() == 0 ? 4 : 5})};
  Status s = AllReduceSumInPlace(World(), v);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("different tensor lists"), std::string::npos) << s;
  EXPECT_TRUE(torch::equal(v[0], torch::ones_like(v[0])));  // untouched
}

TEST(MpiTensorsTest, BadInputOnOneRankIsReportedOnAllRanks) {
  torch::Tensor base = torch::ones({4, 3});
  std::vector<torch::Tensor> v = {World().rank() == 1 ? base.t() : base};  // non-contiguous on rank 1
  Status s = AllReduceSumInPlace(World(), v);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("not contiguous"), std::string::npos) << s;
  std::vector<torch::Tensor> ints = {torch::ones({2}, torch::kInt32)};
  Status d = AllReduceSumInPlace(World(), ints);
  EXPECT_NE(d.message().find("expected float32, float64 or int64"), std::string::npos) << d;
}

NamedTensors RootWeights() {
  torch::Generator gen = at::detail::createCPUGenerator(7);
  NamedTensors w;
  w["layers.0.attn.q.weight"] = torch::randn({16, 8}, gen);
  w["layers.0.moe.router"] = torch::randn({8, 4}, gen).t();  // non-contiguous on the root
  w["embed.weight"] = torch::randn({32, 8}, gen).to(torch::kBFloat16);
  w["lm_head.weight"] = torch::randn({20000}, gen);            // above the bucket: sent alone
  w["step"] = torch::tensor(int64_t{12345});                    // 0-d int64
  w["empty"] = torch::zeros({0, 3});
  w["mask"] = torch::tensor({true, false, true});
  return w;
}

void ExpectBitEqual(const NamedTensors& a, const NamedTensors& b) {
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    EXPECT_TRUE(it != b.end()) << name;
    if (it == b.end()) continue;
    EXPECT_EQ(t.scalar_type(), it->second.scalar_type()) << name;
    EXPECT_EQ(t.sizes(), it->second.sizes()) << name;
    EXPECT_TRUE(torch::equal(t, it->second)) << name;
  }
}

TEST(MpiTensorsTest, BroadcastAllocatesFromTheManifestOnEmptyReceivers) {
  NamedTensors w = World().rank() == 0 ? RootWeights() : NamedTensors{};
  uint64_t version = World().rank() == 0 ? 7 : 0;
  Status s = BroadcastWeights(World(), 0, &w, &version, WeightSyncOptions{10.0, 1024});
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(version, 7u);
  ExpectBitEqual(w, RootWeights());
}

TEST(MpiTensorsTest, BroadcastWritesIntoExistingTensorsInPlace) {
  NamedTensors w;
  std::map<std::string, void*> ptrs;
  if (World().rank() == 0) {
    w = RootWeights();
  } else {
    for (const auto& [name, t] : RootWeights()) w[name] = torch::zeros_like(t, torch::MemoryFormat::Contiguous);
    // A non-contiguous destination (a transposed view of a parameter) is filled too.
    w["layers.0.moe.router"] = torch::zeros({8, 4}).t();
    for (const auto& [name, t] : w) ptrs[name] = t.data_ptr();
  }
  uint64_t version = World().rank() == 0 ? 8 : 3;
  Status s = BroadcastWeights(World(), 0, &w, &version);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(version, 8u);
  ExpectBitEqual(w, RootWeights());
  for (const auto& [name, p] : ptrs) EXPECT_EQ(w[name].data_ptr(), p) << name << " was reallocated";
}

TEST(MpiTensorsTest, ManifestMismatchFailsEverywhereNamingRankAndTensor) {
  NamedTensors w = RootWeights();
  if (World().rank() == 1) w["layers.0.attn.q.weight"] = torch::zeros({16, 9});
  const NamedTensors before = World().rank() == 1 ? NamedTensors{{"q", w["layers.0.attn.q.weight"].clone()}}
                                                  : NamedTensors{};
  uint64_t version = World().rank() == 0 ? 9 : 4;
  Status s = BroadcastWeights(World(), 0, &w, &version);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("weight sync v9: rank 1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("tensor 'layers.0.attn.q.weight': expected float32[16, 8], have float32[16, 9]"),
            std::string::npos) << s;
  if (World().rank() == 1) {
    EXPECT_EQ(version, 4u);  // unchanged
    EXPECT_TRUE(torch::equal(w["layers.0.attn.q.weight"], before.at("q")));
  }

  NamedTensors extra = RootWeights();
  if (World().rank() == 1) extra["stale.bias"] = torch::zeros({2});
  Status e = BroadcastWeights(World(), 0, &extra, &version);
  EXPECT_NE(e.message().find("unexpected tensor 'stale.bias'"), std::string::npos) << e;

  NamedTensors missing = RootWeights();
  if (World().rank() == 1) missing.erase("embed.weight");
  Status m = BroadcastWeights(World(), 0, &missing, &version);
  EXPECT_NE(m.message().find("missing tensor 'embed.weight'"), std::string::npos) << m;
}

TEST(MpiTensorsTest, RootWithAnUnsupportedTensorFailsEverywhere) {
  NamedTensors w;
  if (World().rank() == 0) w["bad"] = torch::zeros({2}, torch::kComplexFloat);
  uint64_t version = 1;
  Status s = BroadcastWeights(World(), 0, &w, &version);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("tensor 'bad' has dtype"), std::string::npos) << s;
}

}  // namespace
}  // namespace lightrl::comm

int main(int argc, char** argv) {
  lightrl::comm::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int failed = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&failed, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
