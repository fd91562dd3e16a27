#include "rollout/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"

namespace lightrl::rollout {

namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

int64_t Argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: the lowest id wins exact ties
  }
  return best;
}

// exp((logit - max) / temperature) in fp64, unnormalised; returns the sum.
double Weights(const float* logits, int64_t vocab, double temperature, std::vector<double>* w) {
  w->resize(vocab);
  double max = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) max = std::max(max, static_cast<double>(logits[i]));
  LR_CHECK(std::isfinite(max), "sampling: logits contain no finite maximum (NaN or all -inf)");
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double x = std::exp((static_cast<double>(logits[i]) - max) / temperature);
    (*w)[i] = x;
    sum += x;
  }
  return sum;
}

}  // namespace

Status ValidateSamplingParams(const SamplingParams& p, const std::string& path) {
  auto bad = [&](const std::string& field, const std::string& what) {
    return InvalidArgument(path + "." + field + ": " + what);
  };
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    return bad("temperature", StrCat("must be a finite number >= 0, got ", p.temperature));
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p", StrCat("must be in (0, 1], got ", p.top_p));
  if (p.top_k < 0) return bad("top_k", StrCat("must be >= 0 (0 = off), got ", p.top_k));
  if (p.max_new_tokens < 1) return bad("max_new_tokens", StrCat("must be >= 1, got ", p.max_new_tokens));
  for (size_t i = 0; i < p.stop_strings.size(); ++i) {
    if (p.stop_strings[i].empty()) return bad(StrCat("stop_strings[", i, "]"), "must not be empty");
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    if (p.stop_token_ids[i] < 0) return bad(StrCat("stop_token_ids[", i, "]"), "must be >= 0");
  }
  if (p.repetition_window < 1) return bad("repetition_window", StrCat("must be >= 1, got ", p.repetition_window));
  if (!(p.repetition_prob >= 0 && p.repetition_prob < 1))
    return bad("repetition_prob", StrCat("must be in [0, 1), got ", p.repetition_prob));
  return Status::Ok();
}

SampleRng::SampleRng(uint64_t seed, uint64_t sample_index)
    : engine_(SplitMix64(SplitMix64(seed) ^ SplitMix64(sample_index + 0x5851F42D4C957F2Dull))) {}

double SampleRng::Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

Candidates SamplingCandidates(const float* logits, int64_t vocab, double temperature, int top_k, double top_p) {
  LR_CHECK(vocab > 0, "sampling: empty vocabulary");
  Candidates out;
  if (temperature == 0) {
    out.ids = {Argmax(logits, vocab)};
    out.probs = {1.0};
    return out;
  }
  std::vector<double> w;
  const double total = Weights(logits, vocab, temperature, &w);
  const bool use_k = top_k > 0 && top_k < vocab;
  const bool use_p = top_p < 1.0;
  std::vector<int64_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  if (!use_k && !use_p) {
    out.ids = std::move(ids);
    out.probs.resize(vocab);
    for (int64_t i = 0; i < vocab; ++i) out.probs[i] = w[i] / total;
    return out;
  }
  auto by_prob = [&](int64_t a, int64_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
  int64_t keep = vocab;
  if (use_k) {
    keep = top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_prob);
  } else {
    std::sort(ids.begin(), ids.end(), by_prob);
  }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += w[ids[i]];
  if (use_p) {
    // Smallest prefix whose top-k-renormalised mass reaches top_p.
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += w[ids[n]] / mass;
      ++n;
      if (cum >= top_p) break;
    }
    keep = n;
    mass = 0;
    for (int64_t i = 0; i < keep; ++i) mass += w[ids[i]];
  }
  ids.resize(keep);
  out.probs.resize(keep);
  for (int64_t i = 0; i < keep; ++i) out.probs[i] = w[ids[i]] / mass;
  out.ids = std::move(ids);
  return out;
}

int64_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, double u) {
  if (params.temperature == 0) return Argmax(logits, vocab);
  Candidates c = SamplingCandidates(logits, vocab, params.temperature, params.top_k, params.top_p);
  double cum = 0;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    cum += c.probs[i];
    if (u < cum) return c.ids[i];
  }
  // u lies in the rounding gap at the end of the cumulative sum: the last candidate with mass.
  for (size_t i = c.ids.size(); i-- > 0;) {
    if (c.probs[i] > 0) return c.ids[i];
  }
  return c.ids.back();
}

}  // namespace lightrl::rollout
