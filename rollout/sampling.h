// Token sampling for the rollout engine: sampling parameters, the per-sample random stream, and
// the temperature / top-k / top-p distribution a token is drawn from. Plain C++ (no libtorch):
// the engine hands each row's fp32 logits over as a float array.
//
// The distribution (documented here once; the engine and the tests use exactly this):
//   temperature == 0      greedy: the argmax (lowest id among exact ties); no random draw.
//   temperature  > 0      p_i ∝ exp(logit_i / temperature), computed in fp64 (a polynomial exp
//                         within a few ulp of std::exp; 0 for terms below e^-708);
//   top_k > 0             keep the k most probable tokens (ties broken by lower id);
//   top_p < 1             then keep the smallest prefix, in descending probability of the
//                         top-k-renormalised distribution, whose mass reaches top_p (at least one
//                         token);
//   draw                  one uniform u in [0, 1) from the sample's own stream; the token is the
//                         first candidate (in the candidate order) whose cumulative renormalised
//                         mass exceeds u. With neither top-k nor top-p the candidate order is the
//                         vocabulary order (no sort), and the walk compares the cumulative
//                         unnormalised weight with u times the total (the same draw up to
//                         rounding at a boundary).
// The log-prob the engine REPORTS for the drawn token is a different, untruncated quantity (see
// rollout/engine.h, Completion::logprobs).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::rollout {

struct SamplingParams {
  double temperature = 1.0;   // >= 0; 0 = greedy
  double top_p = 1.0;         // in (0, 1]; 1 = off
  int top_k = 0;              // >= 0; 0 = off
  int max_new_tokens = 256;   // >= 1; finish reason kMaxTokens when reached
  std::vector<int64_t> stop_token_ids;    // EOS ids: generation ends after emitting one (kEos);
                                          // the id is part of the completion
  std::vector<std::string> stop_strings;  // non-empty strings; need EngineOptions::detokenize
  // MiniMax-M1 early truncation: stop (kRepetition) once `repetition_window` consecutive sampled
  // tokens each had probability exp(logprob) > repetition_prob (logprob as reported).
  bool repetition_truncation = true;
  int repetition_window = 3000;   // >= 1
  double repetition_prob = 0.99;  // in [0, 1)
  bool return_entropy = false;    // fill Completion::entropies
};

// Checks ranges; the message names the field as `path.field` (e.g. "params.top_p: must be in
// (0, 1], got 0").
Status ValidateSamplingParams(const SamplingParams& params, const std::string& path = "params");

// The random stream of one (request, sample): std::mt19937_64 seeded from a SplitMix64 mix of
// (seed, sample_index), so a sample's draws depend on nothing else (batch composition, slot,
// other requests). One Uniform() per sampled token.
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t sample_index);
  double Uniform();  // in [0, 1), 53 random bits

 private:
  std::mt19937_64 engine_;
};

// The candidate set of the distribution above, in candidate order, with renormalised
// probabilities (summing to 1). For temperature == 0: the argmax with probability 1.
struct Candidates {
  std::vector<int64_t> ids;
  std::vector<double> probs;
};
Candidates SamplingCandidates(const float* logits, int64_t vocab, double temperature, int top_k, double top_p);

// Draws a token with uniform u in [0, 1) (ignored for temperature == 0). logits: [vocab] fp32.
int64_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, double u);

}  // namespace lightrl::rollout
