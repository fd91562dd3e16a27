// The fused decode step (model/fused_decode.h) against the module-by-module decode path, which
// is itself tested against the full forward (hybrid_model_test.cc): logits, hidden states,
// lightning states, KV caches and lengths after several steps over rows of different lengths,
// on one and on two threads, post-norm and pre-norm, LM and value heads; plus when the fused
// step must not be taken.
#include "model/fused_decode.h"

#include "model/packed_gemm.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <string>

namespace lightrl::model {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 48;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.head_dim = 8;
  c.num_key_value_heads = 2;
  c.vocab_size = 70;
  c.intermediate_size = 40;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.rotary_dim = 4;
  c.attn_type_list = {0, 1, 0, 1};
  c.layernorm_full_attention_alpha = c.layernorm_linear_attention_alpha = c.layernorm_mlp_alpha = 2.0;
  c.lightning_block_size = 8;
  c.initializer_range = 0.15;  // activations well away from 0 so relative errors mean something
  return c;
}

HybridModel MakeModel(const ModelConfig& c, HeadType head = HeadType::kLanguageModel) {
  HybridModel m(c, head);
  m->InitWeights(11);
  m->eval();
  return m;
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }
double MaxAbs(const torch::Tensor& a) { return a.abs().max().item<double>(); }

// A cache of `rows` rows with prefill lengths 3, 4, ..., so softmax rows differ in length (built
// without autograd whatever the caller's grad mode).
ModelCache MixedCache(HybridModel& m, int64_t rows) {
  torch::NoGradGuard no_grad;
  ModelCache cache;
  for (int64_t r = 0; r < rows; ++r) {
    ModelCache one;
    auto gen = at::detail::createCPUGenerator(100 + r);
    m->forward(at::randint(m->config().vocab_size, {1, 3 + r % 7}, gen, torch::kLong), {}, &one);
    cache.AppendRows(one);
  }
  return cache;
}

// A deep copy (fresh tensors), so the two paths never share a KV buffer.
ModelCache Copy(const ModelCache& c) {
  ModelCache out = c;
  out.SelectRows(torch::arange(c.batch, torch::kLong));
  return out;
}

void ExpectCachesClose(const ModelCache& a, const ModelCache& b, const std::string& what) {
  ASSERT_EQ(a.layers.size(), b.layers.size());
  EXPECT_EQ(a.tokens, b.tokens) << what;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerCache& x = a.layers[l];
    const LayerCache& y = b.layers[l];
    if (x.lightning.state.defined() || y.lightning.state.defined()) {
      ASSERT_TRUE(x.lightning.state.defined() && y.lightning.state.defined()) << what << " layer " << l;
      EXPECT_LT(MaxDiff(x.lightning.state, y.lightning.state), 1e-5 * (1 + MaxAbs(y.lightning.state)))
          << what << " lightning state, layer " << l;
    }
    if (y.softmax.k.defined()) {
      ASSERT_TRUE(x.softmax.k.defined()) << what << " layer " << l;
      EXPECT_TRUE(torch::equal(x.softmax.lengths, y.softmax.lengths)) << what << " lengths, layer " << l;
      // Compare the valid prefixes only (spare capacity is never read).
      const int64_t n = y.softmax.lengths.max().item<int64_t>();
      for (int64_t r = 0; r < y.softmax.lengths.size(0); ++r) {
        const int64_t len = y.softmax.lengths[r].item<int64_t>();
        EXPECT_LT(MaxDiff(x.softmax.k[r].narrow(1, 0, len), y.softmax.k[r].narrow(1, 0, len)), 1e-5)
            << what << " keys, layer " << l << " row " << r << " (of max length " << n << ")";
        EXPECT_LT(MaxDiff(x.softmax.v[r].narrow(1, 0, len), y.softmax.v[r].narrow(1, 0, len)), 1e-5)
            << what << " values, layer " << l << " row " << r;
      }
    }
  }
}

// Runs `steps` calls of `tokens` new tokens per row from `start` with the fused step and with the
// module path and compares everything they produce. An empty `start` begins `empty_rows` new
// sequences.
void CompareSteps(HybridModel& m, const ModelCache& start, int steps, const std::string& what,
                  int64_t empty_rows = 6, int64_t tokens = 1, bool last_only = true,
                  ForwardOptions::FusedSplit split = ForwardOptions::FusedSplit::kAuto) {
  torch::NoGradGuard no_grad;
  const int64_t B = start.batch > 0 ? start.batch : empty_rows;
  ModelCache fused = start.batch > 0 ? Copy(start) : ModelCache{};
  ModelCache modules = start.batch > 0 ? Copy(start) : ModelCache{};
  ForwardOptions on, off;
  on.last_position_only = off.last_position_only = last_only;
  on.fused_split = split;
  off.fused_decode = false;
  auto gen = at::detail::createCPUGenerator(5);
  for (int s = 0; s < steps; ++s) {
    torch::Tensor ids = at::randint(m->config().vocab_size, {B, tokens}, gen, torch::kLong);  // [B, tokens]
    EXPECT_TRUE(FusedDecodeApplies(*m, ids, {}, &fused, on)) << what;
    ModelOutput a = m->forward(ids, {}, &fused, on);
    ModelOutput b = m->forward(ids, {}, &modules, off);
    ASSERT_EQ(a.logits.sizes(), b.logits.sizes()) << what;
    ASSERT_EQ(a.hidden.sizes(), b.hidden.sizes()) << what;
    EXPECT_EQ(a.logits.scalar_type(), torch::kFloat) << what;
    EXPECT_LT(MaxDiff(a.hidden, b.hidden), 1e-5 * (1 + MaxAbs(b.hidden))) << what << " hidden, step " << s;
    EXPECT_LT(MaxDiff(a.logits, b.logits), 1e-5 * (1 + MaxAbs(b.logits))) << what << " head, step " << s;
    EXPECT_GT(MaxAbs(b.logits), 1e-3) << what << ": outputs too small for the comparison to mean anything";
  }
  ExpectCachesClose(fused, modules, what);
}

// RAII intra-op thread count.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(FusedDecodeTest, MatchesTheModulePathOnRowsOfDifferentLengths) {
  HybridModel m = MakeModel(SmallConfig());
  for (int threads : {1, 2}) {
    ThreadCount tc(threads);
    for (int64_t rows : {int64_t{1}, int64_t{5}, 2 * kFusedMinRowsPerThread + 3}) {
      const ModelCache start = MixedCache(m, rows);
      CompareSteps(m, start, 6, "threads " + std::to_string(threads) + ", rows " + std::to_string(rows));
    }
  }
}

TEST(FusedDecodeTest, TheLibtorchGemmFallbackMatchesTheModulePathToo) {
  // What a CPU without AVX-512F runs: the same fused step with at::mm_out projections.
  struct Restore {
    ~Restore() { SetPackedGemmEnabled(true); }
  } restore;
  SetPackedGemmEnabled(false);
  ASSERT_FALSE(PackedGemmAvailable());
  HybridModel m = MakeModel(SmallConfig());
  ThreadCount tc(2);
  const ModelCache start = MixedCache(m, 2 * kFusedMinRowsPerThread + 3);
  CompareSteps(m, start, 3, "libtorch GEMMs, decode");
  CompareSteps(m, ModelCache{}, 1, "libtorch GEMMs, prefill", 3, 13, false);
}

TEST(FusedDecodeTest, WithPackedGemmARowIsBitwiseIndependentOfBatchAndThreads) {
  torch::NoGradGuard no_grad;
  HybridModel m = MakeModel(SmallConfig());
  const int64_t B = 2 * kFusedMinRowsPerThread + 3;
  ModelCache start = MixedCache(m, B);
  auto gen = at::detail::createCPUGenerator(9);
  const torch::Tensor ids = at::randint(m->config().vocab_size, {B, 1}, gen, torch::kLong);
  torch::Tensor batched;
  {
    ThreadCount tc(2);
    ModelCache c = Copy(start);
    batched = m->forward(ids, {}, &c).logits;  // [B, 1, V], rows split over 2 threads
  }
  ThreadCount tc(1);
  double max_diff = 0;
  bool all_equal = true;
  for (int64_t r = 0; r < B; ++r) {
    ModelCache c = start;
    c.SelectRows(torch::tensor({r}, torch::kLong));
    const torch::Tensor alone = m->forward(ids.narrow(0, r, 1), {}, &c).logits;  // [1, 1, V]
    all_equal = all_equal && torch::equal(alone[0], batched[r]);
    max_diff = std::max(max_diff, MaxDiff(alone[0], batched[r]));
  }
  if (PackedGemmAvailable()) {
    EXPECT_TRUE(all_equal) << "max |alone - in batch| = " << max_diff;
  } else {
    EXPECT_LT(max_diff, 1e-5);  // libtorch GEMMs may pick kernels by the number of rows
  }
}

// The column split (each thread on every row, its own heads / columns / experts) needs head_dim
// % 16 == 0 with PackedGemm: a config with 16-wide heads.
ModelConfig ColumnConfig() {
  ModelConfig c = SmallConfig();
  c.hidden_size = 64;
  c.head_dim = 16;
  c.rotary_dim = 8;
  return c;
}

TEST(FusedDecodeTest, TheColumnSplitMatchesTheModulePath) {
  HybridModel m = MakeModel(ColumnConfig());
  const auto columns = ForwardOptions::FusedSplit::kColumns;
  // 3 threads: 4 lightning heads split 1/1/2, 2 KV heads 0/1/1 (a thread with no softmax head),
  // 64 output columns 16/16/32, 4 experts over 3 threads.
  for (int threads : {2, 3}) {
    ThreadCount tc(threads);
    const std::string t = "columns, threads " + std::to_string(threads);
    for (int64_t rows : {int64_t{1}, int64_t{5}}) {
      const ModelCache start = MixedCache(m, rows);
      CompareSteps(m, start, 4, t + ", decode, rows " + std::to_string(rows), 0, 1, true, columns);
      CompareSteps(m, start, 1, t + ", one-block prefill continuing rows", 0, 5, false, columns);
      CompareSteps(m, start, 1, t + ", chunked prefill continuing rows", 0, 13, true, columns);
    }
    CompareSteps(m, ModelCache{}, 2, t + ", from empty", 3, 1, true, columns);
    CompareSteps(m, ModelCache{}, 1, t + ", prefill from empty", 1, 8, false, columns);
  }
  ModelConfig c = ColumnConfig();
  c.postnorm = false;
  HybridModel critic = MakeModel(c, HeadType::kValue);
  ThreadCount tc(2);
  const ModelCache b = MixedCache(critic, 3);
  CompareSteps(critic, b, 3, "columns, pre-norm value head", 0, 1, true, columns);
}

// Everything each split writes: the step's outputs and the caches it updates.
struct StepResult {
  torch::Tensor logits, hidden;
  ModelCache cache;
};
StepResult RunSplit(HybridModel& m, const ModelCache& start, const torch::Tensor& ids, ForwardOptions::FusedSplit split,
                    bool last_only) {
  torch::NoGradGuard no_grad;
  StepResult r;
  r.cache = Copy(start);
  ForwardOptions o;
  o.fused_split = split;
  o.last_position_only = last_only;
  ModelOutput out = m->forward(ids, {}, &r.cache, o);
  r.logits = out.logits;
  r.hidden = out.hidden;
  return r;
}

// Bitwise equal with PackedGemm (every element the same FMA chain in both splits); with the
// libtorch fallback BLAS may block a column slice differently, so there within rounding.
void ExpectSame(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  if (PackedGemmAvailable()) {
    EXPECT_TRUE(torch::equal(a, b)) << what << " differ by " << MaxDiff(a, b);
  } else {
    EXPECT_LT(MaxDiff(a, b), 1e-5 * (1 + MaxAbs(b))) << what;
  }
}

void ExpectBitwiseEqual(const StepResult& a, const StepResult& b, const std::string& what) {
  ExpectSame(a.logits, b.logits, what + ": logits");
  ExpectSame(a.hidden, b.hidden, what + ": hidden");
  for (size_t l = 0; l < a.cache.layers.size(); ++l) {
    const LayerCache& x = a.cache.layers[l];
    const LayerCache& y = b.cache.layers[l];
    if (x.lightning.state.defined()) {
      ExpectSame(x.lightning.state, y.lightning.state, what + ": state, layer " + std::to_string(l));
    }
    if (x.softmax.k.defined()) {
      EXPECT_TRUE(torch::equal(x.softmax.lengths, y.softmax.lengths)) << what << ": lengths, layer " << l;
      for (int64_t r = 0; r < x.softmax.lengths.size(0); ++r) {
        const int64_t len = x.softmax.lengths[r].item<int64_t>();
        const std::string at = ", layer " + std::to_string(l) + " row " + std::to_string(r);
        ExpectSame(x.softmax.k[r].narrow(1, 0, len), y.softmax.k[r].narrow(1, 0, len), what + ": keys" + at);
        ExpectSame(x.softmax.v[r].narrow(1, 0, len), y.softmax.v[r].narrow(1, 0, len), what + ": values" + at);
      }
    }
  }
}

TEST(FusedDecodeTest, WithPackedGemmTheColumnAndRowSplitsAreBitwiseEqual) {
  HybridModel m = MakeModel(ColumnConfig());
  const ModelCache start = MixedCache(m, 5);
  auto gen = at::detail::createCPUGenerator(21);
  const auto rows = ForwardOptions::FusedSplit::kRows, columns = ForwardOptions::FusedSplit::kColumns;
  ThreadCount tc(2);
  // Decode, a one-block prefill (the per-head loops) and one of two blocks (the chunked op on a
  // head slice), all continuing rows of different lengths.
  for (int64_t T : {1, 5, 13}) {
    const torch::Tensor ids = at::randint(m->config().vocab_size, {5, T}, gen, torch::kLong);
    const std::string what = "T = " + std::to_string(T);
    ExpectBitwiseEqual(RunSplit(m, start, ids, columns, false), RunSplit(m, start, ids, rows, false), what);
  }
  // A row's result is the same alone (column split) as in a batch of 5 (row split).
  const torch::Tensor ids = at::randint(m->config().vocab_size, {5, 1}, gen, torch::kLong);
  const StepResult batched = RunSplit(m, start, ids, rows, true);
  for (int64_t r = 0; r < 5; ++r) {
    ModelCache one = start;
    one.SelectRows(torch::tensor({r}, torch::kLong));
    const StepResult alone = RunSplit(m, one, ids.narrow(0, r, 1), columns, true);
    ExpectSame(alone.logits[0], batched.logits[r], "row " + std::to_string(r) + " alone vs in the batch");
  }
}

// The row split's MoE: the threads share the experts of the whole batch (an expert with more
// than a fair share of the slots split into row ranges, as with 4 threads here). Every thread
// count gives the single thread's bits with PackedGemm, and the module path's values.
TEST(FusedDecodeTest, TheRowSplitSharesTheExpertsOfTheWholeBatch) {
  HybridModel m = MakeModel(SmallConfig());
  const ModelCache start = MixedCache(m, 40);
  auto gen = at::detail::createCPUGenerator(31);
  const torch::Tensor ids = at::randint(m->config().vocab_size, {40, 1}, gen, torch::kLong);
  const auto rows = ForwardOptions::FusedSplit::kRows;
  StepResult one;
  {
    ThreadCount tc(1);
    one = RunSplit(m, start, ids, rows, true);
  }
  for (int threads : {2, 3, 4}) {
    ThreadCount tc(threads);
    ExpectBitwiseEqual(RunSplit(m, start, ids, rows, true), one, "rows, " + std::to_string(threads) + " threads");
    CompareSteps(m, start, 2, "rows, " + std::to_string(threads) + " threads", 0, 1, true, rows);
  }
}

TEST(FusedDecodeTest, RepacksAfterTheWeightsChange) {
  torch::NoGradGuard no_grad;
  HybridModel m = MakeModel(SmallConfig());
  ModelCache start = MixedCache(m, 3);
  const torch::Tensor ids = torch::ones({3, 1}, torch::kLong);
  ModelCache c0 = Copy(start);
  m->forward(ids, {}, &c0);  // packs
  // In-place updates of the kinds the trainer and the engine make: an optimizer-style add_ and a
  // copy_ of new weights.
  auto layer = m->model->layers->ptr<DecoderLayerImpl>(0);
  layer->lightning->qkv_proj->weight.add_(0.05);
  m->lm_head->weight.copy_(m->lm_head->weight * 1.5);
  ForwardOptions off;
  off.fused_decode = false;
  ModelCache c1 = Copy(start), c2 = Copy(start);
  const torch::Tensor fused = m->forward(ids, {}, &c1).logits;
  const torch::Tensor modules = m->forward(ids, {}, &c2, off).logits;
  EXPECT_LT(MaxDiff(fused, modules), 1e-5 * (1 + MaxAbs(modules)));
  // A dtype round trip replaces the storage (set_data) without an in-place op.
  m->SetBodyDtype(torch::kBFloat16);
  m->SetBodyDtype(torch::kFloat32);
  ModelCache c3 = Copy(start), c4 = Copy(start);
  const torch::Tensor fused2 = m->forward(ids, {}, &c3).logits;
  const torch::Tensor modules2 = m->forward(ids, {}, &c4, off).logits;
  EXPECT_LT(MaxDiff(fused2, modules2), 1e-5 * (1 + MaxAbs(modules2)));
  EXPECT_GT(MaxDiff(modules2, modules), 0.0) << "the bf16 round trip should have changed the weights";
}

TEST(FusedDecodeTest, StartsFromAnEmptyCache) {
  // First token of new sequences: undefined lightning states and empty KV caches.
  HybridModel m = MakeModel(SmallConfig());
  ThreadCount tc(2);
  CompareSteps(m, ModelCache{}, 3, "empty cache", 2 * kFusedMinRowsPerThread);
}

TEST(FusedDecodeTest, PrefillsMatchTheModulePathFromEmptyAndFromCachedRows) {
  // T > 1: the chunked lightning algorithm from the cached state (T = 13 is one full block of 8
  // plus a partial one: LightningAttentionChunked; T <= 8: the one-block loops) and causal
  // attention over the cached prefix plus the new tokens.
  HybridModel m = MakeModel(SmallConfig());
  ThreadCount tc(2);
  CompareSteps(m, ModelCache{}, 1, "prefill from empty, head on every position", 3, 13, false);
  CompareSteps(m, ModelCache{}, 1, "prefill from empty, last position", 5, 13, true);
  const ModelCache start = MixedCache(m, 5);
  CompareSteps(m, start, 2, "prefill continuing rows of different lengths", 0, 5, false);
  CompareSteps(m, start, 1, "prefill of exactly one lightning block", 0, 8, false);
  CompareSteps(m, ModelCache{}, 2, "one-block prefills from empty, then again", 4, 7, true);
}

TEST(FusedDecodeTest, PreNormLayersAndTheValueHead) {
  ModelConfig c = SmallConfig();
  c.postnorm = false;
  HybridModel lm = MakeModel(c);
  HybridModel critic = MakeModel(c, HeadType::kValue);
  ThreadCount tc(2);
  const ModelCache a = MixedCache(lm, 2 * kFusedMinRowsPerThread);
  const ModelCache b = MixedCache(critic, 3);
  CompareSteps(lm, a, 4, "pre-norm LM");
  CompareSteps(critic, b, 4, "pre-norm value head");
}

TEST(FusedDecodeTest, SkipHeadReturnsOnlyTheHidden) {
  torch::NoGradGuard no_grad;
  HybridModel m = MakeModel(SmallConfig());
  ModelCache cache = MixedCache(m, 2);
  ForwardOptions o;
  o.skip_head = true;
  ModelOutput out = m->forward(torch::zeros({2, 1}, torch::kLong), {}, &cache, o);
  EXPECT_FALSE(out.logits.defined());
  EXPECT_EQ(out.hidden.sizes(), (torch::IntArrayRef{2, 1, 48}));
}

TEST(FusedDecodeTest, IsNotTakenWhereItDoesNotApply) {
  HybridModel m = MakeModel(SmallConfig());
  ModelCache cache;
  const torch::Tensor one = torch::zeros({2, 1}, torch::kLong), two = torch::zeros({2, 2}, torch::kLong);
  ForwardOptions on, off, aux;
  off.fused_decode = false;
  aux.compute_aux_loss = true;
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(FusedDecodeApplies(*m, one, {}, &cache, on));
    EXPECT_FALSE(FusedDecodeApplies(*m, one, {}, &cache, off));
    EXPECT_FALSE(FusedDecodeApplies(*m, one, {}, nullptr, on));  // no cache
    EXPECT_TRUE(FusedDecodeApplies(*m, two, {}, &cache, on));    // a short prefill
    const torch::Tensor long_prefill = torch::zeros({1, kFusedMaxTokens + 1}, torch::kLong);
    EXPECT_FALSE(FusedDecodeApplies(*m, long_prefill, {}, &cache, on));
    EXPECT_FALSE(FusedDecodeApplies(*m, one, {}, &cache, aux));  // aux loss wants router logits
  }
  // Autograd on: parameters require grad, so the module path must run (it is differentiable).
  EXPECT_FALSE(FusedDecodeApplies(*m, one, {}, &cache, on));
  // An fp64 model takes the module path.
  HybridModel d = MakeModel(SmallConfig());
  d->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(FusedDecodeApplies(*d, one, {}, &cache, on));
}

TEST(FusedDecodeTest, BadCachedStateIsRejectedWithTheExpectedShape) {
  torch::NoGradGuard no_grad;
  HybridModel m = MakeModel(SmallConfig());
  ModelCache cache = MixedCache(m, 2);
  cache.layers[0].lightning.state = torch::zeros({2, 4, 8, 7});
  try {
    m->forward(torch::zeros({2, 1}, torch::kLong), {}, &cache);
    FAIL() << "a wrong state shape was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("[B, H, D, D] = [2, 4, 8, 8]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lightrl::model
