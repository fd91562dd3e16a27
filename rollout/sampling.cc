#include "rollout/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/check.h"
#include "core/vectorize.h"

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

// e^x for x <= 0 in fp64, within a few ulp of std::exp (0 below -708, where e^x < 4e-308):
// Cody-Waite reduction x = n ln2 + r (fdlibm's split of ln2), |r| <= ln2/2, the degree-13 Taylor
// polynomial of e^r (truncation < 1e-17 relative) and 2^n from the exponent bits. Pure
// arithmetic, so the loop over a vocabulary vectorises; std::exp costs ~4 ns a call, which at
// B = 64 and a few hundred tokens was 4% of a decode step.
inline double ExpNonPositiveF64(double x) {
  const bool underflow = x < -708.0;
  x = underflow ? -708.0 : x;
  const double t = x * 1.4426950408889634;
  // Round to nearest with 1.5 * 2^52: the sum's low mantissa bits then hold n as an integer, so
  // 2^n's exponent field is (bits + 1023) << 52 (no double-to-integer conversion, which AVX2
  // and AVX-512F have no vector instruction for).
  const double shifted = t + 6755399441055744.0;
  const double n = shifted - 6755399441055744.0;
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  uint64_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  bits = (bits + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return underflow ? 0.0 : p * scale;
}

// max over logits (NaN propagates as "not finite" through the check in Weights).
LIGHTRL_VECTOR_CLONES float MaxLogit(const float* __restrict logits, int64_t vocab) {
  float m[16];
  for (int j = 0; j < 16; ++j) m[j] = -INFINITY;
  int64_t i = 0;
  bool nan = false;
  for (; i + 16 <= vocab; i += 16) {
    for (int j = 0; j < 16; ++j) {
      nan |= logits[i + j] != logits[i + j];
      m[j] = logits[i + j] > m[j] ? logits[i + j] : m[j];
    }
  }
  for (; i < vocab; ++i) {
    nan |= logits[i] != logits[i];
    m[0] = logits[i] > m[0] ? logits[i] : m[0];
  }
  float out = m[0];
  for (int j = 1; j < 16; ++j) out = m[j] > out ? m[j] : out;
  return nan ? NAN : out;
}

// w[i] = exp((logit_i - max) / temperature) in fp64, unnormalised; returns their sum (8 partial
// sums, a fixed order). w: [vocab].
LIGHTRL_VECTOR_CLONES double ExpWeights(const float* __restrict logits, int64_t vocab, double max,
                                          double temperature, double* __restrict w) {
  for (int64_t i = 0; i < vocab; ++i) w[i] = ExpNonPositiveF64((static_cast<double>(logits[i]) - max) / temperature);
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= vocab; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += w[i + j];
  }
  for (; i < vocab; ++i) acc[0] += w[i];
  double sum = 0;
  for (int j = 0; j < 8; ++j) sum += acc[j];
  return sum;
}

// The unnormalised weights of the distribution in sampling.h into *w; returns their sum.
double Weights(const float* logits, int64_t vocab, double temperature, std::vector<double>* w) {
  w->resize(vocab);
  const double max = MaxLogit(logits, vocab);
  LR_CHECK(std::isfinite(max), "sampling: logits contain no finite maximum (NaN or all -inf)");
  return ExpWeights(logits, vocab, max, temperature, w->data());
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
  if ((params.top_k <= 0 || params.top_k >= vocab) && params.top_p >= 1.0) {
    // The whole vocabulary in id order: walk the unnormalised cumulative weight against u * total
    // (no candidate list, no normalisation pass, one buffer per thread).
    thread_local std::vector<double> w;
    const double total = Weights(logits, vocab, params.temperature, &w);
    const double target = u * total;
    double cum = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      cum += w[i];
      if (target < cum) return i;
    }
    for (int64_t i = vocab; i-- > 0;) {
      if (w[i] > 0) return i;  // u in the rounding gap at the end: the last token with mass
    }
    return vocab - 1;
  }
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
