// Portable deterministic randomness for task generation and mixing. Everything in envs/ derives
// its randomness from these functions (never from std::*_distribution, whose output differs
// between standard libraries), so a (config, seed, cursor) triple names the same task stream on
// every platform.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"

namespace lightrl::envs {

// SplitMix64 finaliser: a bijective 64-bit mix.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline uint64_t HashCombine(uint64_t a, uint64_t b) { return Mix64(a ^ Mix64(b)); }
// FNV-1a of a string, then mixed.
inline uint64_t HashString(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return Mix64(h);
}

// SplitMix64 stream.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [lo, hi] (inclusive), unbiased (rejection sampling).
  int64_t Uniform(int64_t lo, int64_t hi) {
    LR_CHECK(lo <= hi, "Rng::Uniform: empty range [", lo, ", ", hi, "]");
    uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    if (span == 0) return static_cast<int64_t>(Next());  // full 64-bit range
    uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t v;
    do v = Next(); while (v >= limit);
    return lo + static_cast<int64_t>(v % span);
  }
  // Uniform double in [0, 1).
  double UniformDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i) {
      size_t j = static_cast<size_t>(Uniform(0, static_cast<int64_t>(i) - 1));
      std::swap((*v)[i - 1], (*v)[j]);
    }
  }

 private:
  uint64_t state_;
};

}  // namespace lightrl::envs
