// Engine tests. Oracles: the model's full (training) forward without cache, the same request
// run alone, static batching, separate prefills, and weights that force a known token.
#include "rollout/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "model/packed_gemm.h"
#include "tests/rollout/test_util.h"

namespace lightrl::rollout {
namespace {

using testing::Detok;
using testing::MakeModel;
using testing::Prompt;

Request MakeRequest(uint64_t id, int64_t prompt_len, int max_new, uint64_t seed, int samples = 1) {
  Request r;
  r.request_id = id;
  r.prompt_ids = Prompt(prompt_len, 1000 + id);
  r.params.max_new_tokens = max_new;
  r.params.temperature = 1.0;
  r.params.return_entropy = true;
  r.seed = seed;
  r.num_samples = samples;
  return r;
}

// A mixed workload: prompt lengths 3..40, lengths 4..40, top-p / top-k / temperature varied.
std::vector<Request> MixedWorkload(int n, int samples = 1) {
  std::vector<Request> out;
  for (int i = 0; i < n; ++i) {
    Request r = MakeRequest(100 + i, 3 + (i * 7) % 38, 4 + (i * 11) % 37, 50 + i, samples);
    r.params.top_p = (i % 3 == 0) ? 0.9 : 1.0;
    r.params.top_k = (i % 4 == 1) ? 10 : 0;
    r.params.temperature = (i % 5 == 2) ? 0.7 : 1.0;
    out.push_back(r);
  }
  return out;
}

// Full-sequence (training path) log-probs of a completion: forward of prompt + tokens, no cache.
torch::Tensor ForwardLogProbs(model::HybridModel& m, const Request& r, const Completion& c) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids = r.prompt_ids;
  ids.insert(ids.end(), c.token_ids.begin(), c.token_ids.end());
  const int64_t P = r.prompt_ids.size(), n = c.token_ids.size();
  torch::Tensor logits = m->forward(torch::tensor(ids).view({1, -1})).logits.narrow(1, P - 1, n);
  const double T = r.params.temperature > 0 ? r.params.temperature : 1.0;
  return model::TokenLogProbs(logits, torch::tensor(c.token_ids).view({1, n}), T).reshape({-1});
}

torch::Tensor Vec(const std::vector<float>& v) { return torch::tensor(v); }

void ExpectSameCompletion(const Completion& a, const Completion& b, const std::string& what) {
  EXPECT_EQ(a.request_id, b.request_id) << what;
  EXPECT_EQ(a.sample_index, b.sample_index) << what;
  EXPECT_EQ(a.token_ids, b.token_ids) << what;
  EXPECT_EQ(a.logprobs, b.logprobs) << what;  // bitwise
  EXPECT_EQ(a.entropies, b.entropies) << what;
  EXPECT_EQ(a.finish_reason, b.finish_reason) << what;
}

TEST(EngineTest, CompletionsAreOrderedAndWellFormed) {
  Engine engine(MakeModel(), {});
  engine.SetWeightsVersion(42);
  std::vector<Request> reqs = {MakeRequest(9, 5, 6, 1, 3), MakeRequest(4, 12, 9, 2, 2)};
  std::vector<Completion> out = engine.Generate(reqs);
  ASSERT_EQ(out.size(), 5u);
  const std::vector<std::pair<uint64_t, int>> order = {{9, 0}, {9, 1}, {9, 2}, {4, 0}, {4, 1}};
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].request_id, order[i].first);
    EXPECT_EQ(out[i].sample_index, order[i].second);
    const size_t n = out[i].token_ids.size();
    EXPECT_EQ(n, out[i].request_id == 9 ? 6u : 9u);
    EXPECT_EQ(out[i].finish_reason, FinishReason::kMaxTokens);
    EXPECT_EQ(out[i].logprobs.size(), n);
    EXPECT_EQ(out[i].entropies.size(), n);
    EXPECT_EQ(out[i].weights_version, 42u);
    for (size_t t = 0; t < n; ++t) {
      EXPECT_LE(out[i].logprobs[t], 0.f);
      EXPECT_GE(out[i].entropies[t], 0.f);
      EXPECT_LE(out[i].entropies[t], std::log(64.0) + 1e-4);
    }
  }
  // Samples of one request draw from different streams.
  EXPECT_NE(out[0].token_ids, out[1].token_ids);
  EXPECT_TRUE(engine.idle());
  EngineStats s = engine.stats();
  EXPECT_EQ(s.prefills, 2);  // one per request, shared by its samples
  EXPECT_EQ(s.completed, 5);
  EXPECT_EQ(s.generated_tokens, 3 * 6 + 2 * 9);
}

TEST(EngineTest, GreedyDecodingFollowsTheFullForwardArgmax) {
  model::HybridModel m = MakeModel();
  Engine engine(m, {});
  Request r = MakeRequest(1, 17, 40, 0);
  r.params.temperature = 0;
  Completion c = engine.Generate({r})[0];
  ASSERT_EQ(c.token_ids.size(), 40u);
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids = r.prompt_ids;
  ids.insert(ids.end(), c.token_ids.begin(), c.token_ids.end());
  torch::Tensor logits = m->forward(torch::tensor(ids).view({1, -1})).logits[0];  // [P + n, V]
  for (int64_t i = 0; i < 40; ++i) {
    torch::Tensor row = logits[r.prompt_ids.size() - 1 + i];
    auto top2 = std::get<0>(row.topk(2));
    if ((top2[0] - top2[1]).item<double>() < 1e-4) continue;  // a near-tie may legitimately flip
    EXPECT_EQ(row.argmax().item<int64_t>(), c.token_ids[i]) << "position " << i;
  }
}

TEST(EngineTest, SeededSamplingIsReproducibleAndSeedDependent) {
  Engine engine(MakeModel(), {});
  Request r = MakeRequest(1, 8, 30, 123, 2);
  r.params.top_p = 0.95;
  auto a = engine.Generate({r});
  auto b = engine.Generate({r});
  for (int k = 0; k < 2; ++k) ExpectSameCompletion(a[k], b[k], "same seed");
  r.seed = 124;
  auto c = engine.Generate({r});
  EXPECT_NE(a[0].token_ids, c[0].token_ids);
}

// Batch invariance. With batch_invariant = true every sequence runs at batch 1 end to end, so
// its tokens and log-probs must be bitwise equal whatever else is in the batch and whatever
// slot it lands in. Batched decode is bitwise invariant too where the fused step's GEMMs are
// PackedGemm (AVX-512F); elsewhere BLAS kernel choice depends on the number of rows, and the
// deviation is measured and bounded.
std::vector<Completion> RunWithCompanions(bool invariant, int max_slots, const Request& target, int companions,
                                          bool target_first) {
  EngineOptions o;
  o.batch_invariant = invariant;
  o.max_slots = max_slots;
  Engine engine(MakeModel(), o);
  std::vector<Request> reqs = MixedWorkload(companions);
  if (target_first) {
    reqs.insert(reqs.begin(), target);
  } else {
    reqs.push_back(target);
  }
  std::vector<Completion> out = engine.Generate(reqs);
  std::vector<Completion> mine;
  for (auto& c : out) {
    if (c.request_id == target.request_id) mine.push_back(c);
  }
  return mine;
}

TEST(EngineTest, BatchInvariantModeIsBitwiseIndependentOfBatchAndSlot) {
  Request target = MakeRequest(7777, 21, 30, 99, 2);
  target.params.top_k = 20;
  auto alone = RunWithCompanions(true, 64, target, 0, true);
  auto crowded = RunWithCompanions(true, 8, target, 11, false);
  auto first = RunWithCompanions(true, 3, target, 5, true);
  ASSERT_EQ(alone.size(), 2u);
  for (int k = 0; k < 2; ++k) {
    ExpectSameCompletion(alone[k], crowded[k], "alone vs last of 12 in 8 slots");
    ExpectSameCompletion(alone[k], first[k], "alone vs first of 6 in 3 slots");
  }
}

TEST(EngineTest, BatchedDecodeDeviationIsMeasuredAndSmall) {
  Request target = MakeRequest(7777, 21, 30, 99, 2);
  auto alone = RunWithCompanions(false, 64, target, 0, true);
  // 8 slots: the fused step splits columns over the threads, as alone; 24 slots: rows (B > 16),
  // and sampling / scoring run in row ranges on both threads.
  auto crowded = RunWithCompanions(false, 8, target, 11, false);
  auto wide = RunWithCompanions(false, 24, target, 30, false);
  double max_diff = 0;
  for (int k = 0; k < 2; ++k) {
    // Same seeds and logits equal to ~1e-6: a token could only flip if a uniform draw landed
    // within ~1e-6 of a bucket edge; these seeds do not.
    ASSERT_EQ(alone[k].token_ids, crowded[k].token_ids);
    ASSERT_EQ(alone[k].token_ids, wide[k].token_ids);
    max_diff = std::max(max_diff, (Vec(alone[k].logprobs) - Vec(crowded[k].logprobs)).abs().max().item<double>());
    max_diff = std::max(max_diff, (Vec(alone[k].logprobs) - Vec(wide[k].logprobs)).abs().max().item<double>());
  }
  std::printf("batched decode: max |logprob(alone) - logprob(in a batch of 8 or 24)| = %.3g\n", max_diff);
  RecordProperty("batched_decode_max_abs_diff", std::to_string(max_diff));
  if (model::PackedGemmAvailable()) {
    EXPECT_EQ(max_diff, 0.0) << "the fused decode step with PackedGemm is bitwise batch-invariant";
  } else {
    EXPECT_LT(max_diff, 1e-4);
  }
}

TEST(EngineTest, ContinuousBatchingEqualsStaticBatchingWithFewerSteps) {
  std::vector<Request> reqs = MixedWorkload(14);
  EngineOptions o;
  o.batch_invariant = true;
  o.max_slots = 4;
  Engine continuous(MakeModel(), o);
  o.continuous_batching = false;
  Engine fixed(MakeModel(), o);
  auto a = continuous.Generate(reqs);
  auto b = fixed.Generate(reqs);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ExpectSameCompletion(a[i], b[i], "continuous vs static #" + std::to_string(i));
  const EngineStats sa = continuous.stats(), sb = fixed.stats();
  EXPECT_EQ(sa.generated_tokens, sb.generated_tokens);
  EXPECT_LE(sa.peak_rows, 4);
  // Refilling freed slots keeps the batch full: fewer steps, more rows per step.
  EXPECT_LT(sa.decode_steps, sb.decode_steps);
  EXPECT_GT(static_cast<double>(sa.decode_rows) / sa.decode_steps,
            static_cast<double>(sb.decode_rows) / sb.decode_steps);
}

TEST(EngineTest, BatchedContinuousAndStaticAgree) {
  // Batched decode (the default): same tokens, log-probs equal up to last-bit GEMM differences.
  std::vector<Request> reqs = MixedWorkload(10);
  EngineOptions o;
  o.max_slots = 4;
  Engine continuous(MakeModel(), o);
  o.continuous_batching = false;
  Engine fixed(MakeModel(), o);
  auto a = continuous.Generate(reqs);
  auto b = fixed.Generate(reqs);
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].token_ids, b[i].token_ids) << i;
    EXPECT_EQ(a[i].finish_reason, b[i].finish_reason);
    max_diff = std::max(max_diff, (Vec(a[i].logprobs) - Vec(b[i].logprobs)).abs().max().item<double>());
  }
  EXPECT_LT(max_diff, 1e-4);
}

TEST(EngineTest, SharedPrefillEqualsSeparatePrefills) {
  for (bool invariant : {true, false}) {
    std::vector<Request> reqs = {MakeRequest(1, 30, 12, 5, 4), MakeRequest(2, 9, 20, 6, 3)};
    EngineOptions o;
    o.batch_invariant = invariant;
    Engine shared(MakeModel(), o);
    o.share_prefill = false;
    Engine separate(MakeModel(), o);
    auto a = shared.Generate(reqs);
    auto b = separate.Generate(reqs);
    ASSERT_EQ(a.size(), 7u);
    for (size_t i = 0; i < a.size(); ++i) ExpectSameCompletion(a[i], b[i], "shared vs separate #" + std::to_string(i));
    EXPECT_EQ(shared.stats().prefills, 2);
    EXPECT_EQ(separate.stats().prefills, 7);
  }
}

TEST(EngineTest, MoreSamplesThanSlotsReuseTheHeldPrefill) {
  Request r = MakeRequest(3, 14, 10, 8, 5);
  EngineOptions o;
  o.batch_invariant = true;
  o.max_slots = 2;
  Engine small(MakeModel(), o);
  o.max_slots = 16;
  Engine big(MakeModel(), o);
  auto a = small.Generate({r});
  auto b = big.Generate({r});
  ASSERT_EQ(a.size(), 5u);
  for (int k = 0; k < 5; ++k) ExpectSameCompletion(a[k], b[k], "2 slots vs 16");
  EXPECT_EQ(small.stats().prefills, 1);
  EXPECT_LE(small.stats().peak_rows, 2);
}

TEST(EngineTest, PerSampleSeedsMakeASampleIndependentOfItsGroup) {
  EngineOptions o;
  o.batch_invariant = true;
  Engine engine(MakeModel(), o);
  Request pair = MakeRequest(1, 9, 15, 0, 2);
  pair.sample_seeds = {11, 22};
  Request single = pair;
  single.num_samples = 1;
  single.sample_seeds = {22};
  auto a = engine.Generate({pair});
  auto b = engine.Generate({single});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[1].token_ids, b[0].token_ids);
  EXPECT_EQ(a[1].logprobs, b[0].logprobs);
  EXPECT_NE(a[0].token_ids, a[1].token_ids);
  // Timings are filled (non-negative, the prefill is shared by both samples).
  EXPECT_GT(a[0].prefill_seconds, 0);
  EXPECT_EQ(a[0].prefill_seconds, a[1].prefill_seconds);
  EXPECT_GE(a[0].queue_seconds, 0);
  EXPECT_GT(a[0].decode_seconds, 0);
  Request bad = pair;
  bad.sample_seeds = {1};
  EXPECT_NE(ValidateRequest(bad, engine.model()->config(), o).message().find("request.sample_seeds"),
            std::string::npos);
}

// Train/infer consistency: the log-probs the engine reports vs the training forward (full
// sequence, no cache) on the same weights.
TEST(EngineTest, TrainInferConsistency) {
  model::HybridModel m = MakeModel();
  std::vector<Request> reqs = MixedWorkload(6, 2);
  for (auto& r : reqs) r.params.max_new_tokens = 40;
  double decode_diff = 0, rescored_diff = 0, single_diff = 0;
  {
    Engine engine(m, {});
    auto out = engine.Generate(reqs);
    for (size_t i = 0; i < out.size(); ++i) {
      const Request& r = reqs[i / 2];
      decode_diff = std::max(decode_diff, (ForwardLogProbs(m, r, out[i]) - Vec(out[i].logprobs)).abs().max().item<double>());
    }
  }
  {
    EngineOptions o;
    o.batch_invariant = true;
    Engine engine(m, o);
    auto out = engine.Generate(reqs);
    for (size_t i = 0; i < out.size(); ++i) {
      const Request& r = reqs[i / 2];
      single_diff = std::max(single_diff, (ForwardLogProbs(m, r, out[i]) - Vec(out[i].logprobs)).abs().max().item<double>());
    }
  }
  {
    EngineOptions o;
    o.logprob_source = LogProbSource::kForward;
    Engine engine(m, o);
    auto out = engine.Generate(reqs);
    for (size_t i = 0; i < out.size(); ++i) {
      const Request& r = reqs[i / 2];
      torch::Tensor ref = ForwardLogProbs(m, r, out[i]);
      EXPECT_TRUE(torch::equal(ref, Vec(out[i].logprobs))) << "sample " << i;
      rescored_diff = std::max(rescored_diff, (ref - Vec(out[i].logprobs)).abs().max().item<double>());
    }
  }
  std::printf("train/infer max |logprob delta|: batched decode %.3g, batch-1 decode %.3g, kForward %.3g\n",
              decode_diff, single_diff, rescored_diff);
  RecordProperty("train_infer_max_abs_diff_decode", std::to_string(decode_diff));
  RecordProperty("train_infer_max_abs_diff_batch1", std::to_string(single_diff));
  EXPECT_LT(decode_diff, 1e-4);
  EXPECT_LT(single_diff, 1e-4);
  EXPECT_EQ(rescored_diff, 0.0);
}

// ---- stops --------------------------------------------------------------------------------

class ForcedTokenTest : public ::testing::Test {
 protected:
  static constexpr int64_t kToken = 33;  // 'A' under Detok
  void SetUp() override {
    model_ = MakeModel();
    EngineOptions o;
    o.detokenize = Detok;
    engine_ = std::make_unique<Engine>(model_, o);
    ASSERT_TRUE(engine_->SetWeights(testing::ForcedTokenWeights(model_, kToken), 5).ok());
  }
  Completion Run(const SamplingParams& p) {
    Request r;
    r.request_id = 1;
    r.prompt_ids = Prompt(6, 1);
    r.params = p;
    r.seed = 3;
    return engine_->Generate({r})[0];
  }
  model::HybridModel model_{nullptr};
  std::unique_ptr<Engine> engine_;
};

TEST_F(ForcedTokenTest, WeightsForceTheToken) {
  SamplingParams p;
  p.max_new_tokens = 7;
  p.repetition_truncation = false;
  Completion c = Run(p);
  EXPECT_EQ(c.token_ids, std::vector<int64_t>(7, kToken));
  EXPECT_EQ(c.finish_reason, FinishReason::kMaxTokens);
  EXPECT_EQ(c.weights_version, 5u);
  // log p = 20 - log(e^20 + 63)
  const double expected = 20.0 - std::log(std::exp(20.0) + 63.0);
  for (float lp : c.logprobs) EXPECT_NEAR(lp, expected, 1e-6);
}

TEST_F(ForcedTokenTest, EosStopsAndIsIncluded) {
  SamplingParams p;
  p.max_new_tokens = 10;
  p.stop_token_ids = {2, kToken};
  Completion c = Run(p);
  EXPECT_EQ(c.token_ids, std::vector<int64_t>{kToken});
  EXPECT_EQ(c.logprobs.size(), 1u);
  EXPECT_EQ(c.finish_reason, FinishReason::kEos);
}

TEST_F(ForcedTokenTest, RepetitionTruncationAfterWindowHighProbabilityTokens) {
  SamplingParams p;
  p.max_new_tokens = 50;
  p.repetition_window = 5;
  p.repetition_prob = 0.99;
  Completion c = Run(p);
  EXPECT_EQ(c.token_ids.size(), 5u);
  EXPECT_EQ(c.finish_reason, FinishReason::kRepetition);
  // Disabled: runs to max_new_tokens.
  p.repetition_truncation = false;
  EXPECT_EQ(Run(p).finish_reason, FinishReason::kMaxTokens);
}

TEST(EngineRepetitionTest, ThresholdIsComparedWithTheTokenProbability) {
  // Logit 6 for token 33, 0 for the 63 others: p = e^6 / (e^6 + 63) = 0.8649 (hand-computed).
  // Greedy decoding always emits it; its reported probability (T = 1) is 0.8649.
  model::HybridModel m = MakeModel();
  Engine engine(m, {});
  ASSERT_TRUE(engine.SetWeights(testing::ForcedTokenWeights(m, 33, 6.0), 1).ok());
  Request r;
  r.prompt_ids = Prompt(6, 1);
  r.params.temperature = 0;
  r.params.max_new_tokens = 40;
  r.params.repetition_window = 7;
  r.params.repetition_prob = 0.86;  // p > 0.86: truncated after 7 tokens
  Completion c = engine.Generate({r})[0];
  EXPECT_EQ(c.token_ids, std::vector<int64_t>(7, 33));
  EXPECT_EQ(c.finish_reason, FinishReason::kRepetition);
  const double p = std::exp(6.0) / (std::exp(6.0) + 63.0);
  for (float lp : c.logprobs) EXPECT_NEAR(lp, std::log(p), 1e-5);
  r.params.repetition_prob = 0.87;  // p < 0.87: never
  Completion d = engine.Generate({r})[0];
  EXPECT_EQ(d.token_ids.size(), 40u);
  EXPECT_EQ(d.finish_reason, FinishReason::kMaxTokens);
}

TEST_F(ForcedTokenTest, StopStringAndPriorities) {
  SamplingParams p;
  p.max_new_tokens = 10;
  p.stop_strings = {"zz", "AAA"};
  Completion c = Run(p);
  EXPECT_EQ(c.token_ids.size(), 3u);
  EXPECT_EQ(c.finish_reason, FinishReason::kStopString);
  // max_new_tokens reached on the same token as the stop string: the stop string wins.
  p.max_new_tokens = 3;
  EXPECT_EQ(Run(p).finish_reason, FinishReason::kStopString);
  // EOS wins over everything on the same token.
  p.stop_token_ids = {kToken};
  p.max_new_tokens = 1;
  p.repetition_window = 1;
  EXPECT_EQ(Run(p).finish_reason, FinishReason::kEos);
}

TEST(EngineStopTest, StopStringMatchesTheFirstOccurrenceInTheDecodedText) {
  EngineOptions o;
  o.detokenize = Detok;
  Engine engine(MakeModel(), o);
  Request r = MakeRequest(1, 10, 60, 17);
  r.params.temperature = 0.8;
  Completion free_run = engine.Generate({r})[0];
  const std::string text = Detok(free_run.token_ids);
  const std::string stop = text.substr(25, 3);
  // Oracle: the shortest prefix whose text contains the stop string.
  size_t expect_n = 0;
  for (size_t n = 1; n <= free_run.token_ids.size(); ++n) {
    std::vector<int64_t> prefix(free_run.token_ids.begin(), free_run.token_ids.begin() + n);
    if (Detok(prefix).find(stop) != std::string::npos) {
      expect_n = n;
      break;
    }
  }
  r.params.stop_strings = {stop};
  Completion c = engine.Generate({r})[0];
  EXPECT_EQ(c.finish_reason, FinishReason::kStopString);
  ASSERT_EQ(c.token_ids.size(), expect_n);
  EXPECT_TRUE(std::equal(c.token_ids.begin(), c.token_ids.end(), free_run.token_ids.begin()));
  // The same with an EOS id: the first occurrence of that id ends the sample.
  Request e = MakeRequest(1, 10, 60, 17);
  e.params.temperature = 0.8;
  const int64_t eos = free_run.token_ids[30];
  e.params.stop_token_ids = {eos};
  Completion ce = engine.Generate({e})[0];
  const size_t first = std::find(free_run.token_ids.begin(), free_run.token_ids.end(), eos) - free_run.token_ids.begin();
  EXPECT_EQ(ce.finish_reason, FinishReason::kEos);
  EXPECT_EQ(ce.token_ids.size(), first + 1);
}

// ---- weights, validation, abort -------------------------------------------------------------

TEST(EngineWeightsTest, SetWeightsIsRefusedWhileGenerating) {
  model::HybridModel m = MakeModel();
  model::NamedTensors w = testing::CopyWeights(m);
  EngineOptions o;
  Engine* self = nullptr;
  std::vector<Status> during;
  o.on_completion = [&](const Completion&) { during.push_back(self->SetWeights(w, 9)); };
  Engine engine(m, o);
  self = &engine;
  engine.SetWeightsVersion(3);
  auto out = engine.Generate({MakeRequest(1, 5, 4, 1, 2), MakeRequest(2, 5, 3, 1)});
  ASSERT_EQ(during.size(), 3u);
  for (const Status& s : during) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(s.message().find("in flight"), std::string::npos) << s.message();
  }
  for (const auto& c : out) EXPECT_EQ(c.weights_version, 3u);
  EXPECT_EQ(engine.weights_version(), 3u);
  // Idle: accepted, and the next generation records the new version.
  o.on_completion = nullptr;
  self = nullptr;
  Engine idle_engine(m, {});
  ASSERT_TRUE(idle_engine.SetWeights(w, 9).ok());
  EXPECT_EQ(idle_engine.Generate({MakeRequest(1, 5, 2, 1)})[0].weights_version, 9u);
  // A queued request also counts as in flight.
  ASSERT_TRUE(idle_engine.Submit(MakeRequest(1, 5, 2, 1), nullptr).ok());
  EXPECT_EQ(idle_engine.SetWeights(w, 10).code(), StatusCode::kFailedPrecondition);
  while (idle_engine.Step()) {
  }
  EXPECT_TRUE(idle_engine.SetWeights(w, 10).ok());
}

TEST(EngineWeightsTest, BadWeightsNameTheTensorAndChangeNothing) {
  model::HybridModel m = MakeModel();
  Engine engine(m, {});
  torch::Tensor before = m->lm_head->weight.clone();
  model::NamedTensors w = testing::CopyWeights(m);
  w["lm_head.weight"] = torch::zeros_like(before);
  model::NamedTensors missing = w;
  missing.erase("model.norm.weight");
  Status s = engine.SetWeights(missing, 1);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model.norm.weight"), std::string::npos);
  model::NamedTensors extra = w;
  extra["value_head.weight"] = torch::zeros({1, 32});
  EXPECT_NE(engine.SetWeights(extra, 1).message().find("value_head.weight"), std::string::npos);
  model::NamedTensors shape = w;
  shape["model.norm.weight"] = torch::ones({31});
  EXPECT_NE(engine.SetWeights(shape, 1).message().find("model.norm.weight"), std::string::npos);
  EXPECT_TRUE(torch::equal(before, m->lm_head->weight));
  EXPECT_EQ(engine.weights_version(), 0u);
}

TEST(EngineValidationTest, InvalidRequestsNameTheField) {
  Engine engine(MakeModel(), {});
  auto expect_error = [&](Request r, const std::string& field) {
    try {
      engine.Generate({MakeRequest(1, 4, 2, 1), r});
      ADD_FAILURE() << "no error for " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  Request r = MakeRequest(1, 4, 2, 1);
  Request bad = r;
  bad.prompt_ids.clear();
  expect_error(bad, "requests[1].prompt_ids");
  bad = r;
  bad.prompt_ids[2] = 64;
  expect_error(bad, "requests[1].prompt_ids[2]");
  bad = r;
  bad.params.top_p = 0;
  expect_error(bad, "requests[1].params.top_p");
  bad = r;
  bad.params.temperature = -1;
  expect_error(bad, "requests[1].params.temperature");
  bad = r;
  bad.params.stop_strings = {"x"};  // no detokenizer
  expect_error(bad, "requests[1].params.stop_strings");
  bad = r;
  bad.num_samples = 0;
  expect_error(bad, "requests[1].num_samples");
  bad = r;
  bad.params.max_new_tokens = 5000;
  expect_error(bad, "requests[1].params.max_new_tokens");
  EXPECT_TRUE(engine.idle());  // nothing was queued
}

TEST(EngineAbortTest, AbortFinishesQueuedAndRunningSamples) {
  EngineOptions o;
  o.max_slots = 2;
  Engine engine(MakeModel(), o);
  std::vector<Completion> got;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(engine.Submit(MakeRequest(i, 5, 100, i, 2), [&](std::vector<Completion> c) {
      for (auto& x : c) got.push_back(std::move(x));
    }).ok());
  }
  for (int s = 0; s < 5; ++s) ASSERT_TRUE(engine.Step());
  engine.Abort();
  engine.Step();
  ASSERT_EQ(got.size(), 6u);
  int with_tokens = 0;
  for (const auto& c : got) {
    EXPECT_EQ(c.finish_reason, FinishReason::kAborted);
    with_tokens += c.token_ids.empty() ? 0 : 1;
    EXPECT_EQ(c.token_ids.size(), c.logprobs.size());
  }
  EXPECT_EQ(with_tokens, 2);  // the two running samples kept their tokens
  EXPECT_TRUE(engine.idle());
  EXPECT_FALSE(engine.Step());
  // The engine keeps working afterwards.
  EXPECT_EQ(engine.Generate({MakeRequest(1, 5, 3, 1)})[0].token_ids.size(), 3u);
}

// ---- cache helpers used by the engine (model/hybrid_model.h) -------------------------------

TEST(ModelCacheRowsTest, AppendAndCopyRowsContinueSequencesExactly) {
  model::HybridModel m = MakeModel();
  torch::NoGradGuard no_grad;
  std::vector<int64_t> a = Prompt(19, 1), b = Prompt(6, 2), c = Prompt(11, 3);
  auto prefill = [&](const std::vector<int64_t>& p, model::ModelCache* cache) {
    return m->forward(torch::tensor(p).view({1, -1}), {}, cache).logits;
  };
  auto step_alone = [&](const std::vector<int64_t>& p, int64_t next) {
    model::ModelCache cache;
    prefill(p, &cache);
    return m->forward(torch::tensor({next}).view({1, 1}), {}, &cache).logits.reshape({-1});
  };
  model::ModelCache ca, cb, cc;
  prefill(a, &ca);
  prefill(b, &cb);
  prefill(c, &cc);
  model::ModelCache batch;
  batch.AppendRows(ca);  // into an empty cache
  batch.AppendRows(cb);  // rows of different lengths
  ASSERT_EQ(batch.batch, 2);
  torch::Tensor two = m->forward(torch::tensor({5L, 9L}).view({2, 1}), {}, &batch).logits;  // [2, 1, V]
  EXPECT_LT((two[0][0] - step_alone(a, 5)).abs().max().item<double>(), 1e-5);
  EXPECT_LT((two[1][0] - step_alone(b, 9)).abs().max().item<double>(), 1e-5);
  // Appending must not have aliased ca: it still continues sequence a alone.
  torch::Tensor again = m->forward(torch::tensor({5L}).view({1, 1}), {}, &ca).logits.reshape({-1});
  EXPECT_TRUE(torch::equal(again, step_alone(a, 5)));
  // Overwrite row 0 (sequence a, now one token longer) with sequence c in place.
  batch.CopyRowsFrom(cc, torch::zeros({1}, torch::kLong), torch::zeros({1}, torch::kLong));
  torch::Tensor next = m->forward(torch::tensor({3L, 4L}).view({2, 1}), {}, &batch).logits;
  EXPECT_LT((next[0][0] - step_alone(c, 3)).abs().max().item<double>(), 1e-5);
  std::vector<int64_t> b9 = b;
  b9.push_back(9);
  EXPECT_LT((next[1][0] - step_alone(b9, 4)).abs().max().item<double>(), 1e-5);
  // A cache given up (rvalue) moves into an empty one: its own tensors, no copy, and it still
  // continues sequence c.
  model::ModelCache given;
  prefill(c, &given);
  const void* state = given.layers[0].lightning.state.data_ptr();
  model::ModelCache taken;
  taken.AppendRows(std::move(given));
  ASSERT_EQ(taken.batch, 1);
  EXPECT_EQ(taken.layers[0].lightning.state.data_ptr(), state);
  const torch::Tensor moved = m->forward(torch::tensor({3L}).view({1, 1}), {}, &taken).logits.reshape({-1});
  EXPECT_TRUE(torch::equal(moved, step_alone(c, 3)));
}

}  // namespace
}  // namespace lightrl::rollout
