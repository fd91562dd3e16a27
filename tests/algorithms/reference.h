// Slow, loop-based reference implementations of the algorithms/ formulas, written separately
// from the vectorised code (scalars and std::vector<double>, no libtorch). The tests compare
// the libtorch implementations (values AND autograd gradients) against these. Each loss
// reference returns the per-token loss and its analytic derivative w.r.t. that token's logp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <vector>

namespace lightrl::algorithms::ref {

// B rows of T tokens, row-major [B * T].
struct Batch {
  int B = 0, T = 0;
  std::vector<double> logp, old_logp, adv, rollout_logp;
  std::vector<int> mask;
  int at(int b, int t) const { return b * T + t; }
};

struct PerToken {
  std::vector<double> loss;  // [B * T], 0 outside the mask
  std::vector<double> grad;  // d loss_t / d logp_t
};

inline double Clamp(double x, double lo, double hi) { return std::min(std::max(x, lo), hi); }

// r with the log-ratio clamped to +-20; `clamped` tells whether the clamp was active (then the
// ratio is constant in logp).
inline double Ratio(double logp, double old_logp, bool* clamped = nullptr) {
  const double d = logp - old_logp;
  if (clamped) *clamped = std::fabs(d) > 20.0;
  return std::exp(Clamp(d, -20.0, 20.0));
}

inline PerToken Cispo(const Batch& b, double lo, double hi, bool unified_mask, const std::vector<double>* c = nullptr) {
  PerToken out{std::vector<double>(b.B * b.T, 0.0), std::vector<double>(b.B * b.T, 0.0)};
  for (int i = 0; i < b.B * b.T; ++i) {
    if (!b.mask[i]) continue;
    const double r = Ratio(b.logp[i], b.old_logp[i]);
    double w = r;
    if (w < lo) w = lo;
    if (w > hi) w = hi;
    const double A = b.adv[i];
    double M = 1.0;
    if (unified_mask && ((A > 0 && r > hi) || (A < 0 && r < lo))) M = 0.0;
    const double cc = c ? (*c)[i] : 1.0;
    out.loss[i] = -M * cc * w * A * b.logp[i];
    out.grad[i] = -M * cc * w * A;
  }
  return out;
}

inline PerToken PpoClip(const Batch& b, double eps_low, double eps_high, std::optional<double> dual_c,
                        const std::vector<double>* c = nullptr) {
  PerToken out{std::vector<double>(b.B * b.T, 0.0), std::vector<double>(b.B * b.T, 0.0)};
  for (int i = 0; i < b.B * b.T; ++i) {
    if (!b.mask[i]) continue;
    bool clamped = false;
    const double r = Ratio(b.logp[i], b.old_logp[i], &clamped);
    const double A = b.adv[i];
    const double unclipped = -A * r;
    const double clipped = -A * Clamp(r, 1.0 - eps_low, 1.0 + eps_high);
    double loss, grad;
    if (clipped > unclipped) {  // the clipped branch is active: constant in logp
      loss = clipped;
      grad = 0.0;
    } else {
      loss = unclipped;
      grad = clamped ? 0.0 : -A * r;
    }
    if (dual_c && A < 0 && loss > -A * *dual_c) {
      loss = -A * *dual_c;
      grad = 0.0;
    }
    const double cc = c ? (*c)[i] : 1.0;
    out.loss[i] = cc * loss;
    out.grad[i] = cc * grad;
  }
  return out;
}

inline PerToken Gspo(const Batch& b, double eps_low, double eps_high) {
  PerToken out{std::vector<double>(b.B * b.T, 0.0), std::vector<double>(b.B * b.T, 0.0)};
  for (int row = 0; row < b.B; ++row) {
    double sum = 0;
    int n = 0;
    for (int t = 0; t < b.T; ++t) {
      if (!b.mask[b.at(row, t)]) continue;
      sum += b.logp[b.at(row, t)] - b.old_logp[b.at(row, t)];
      ++n;
    }
    if (n == 0) continue;
    const double mean = sum / n;
    const bool capped = mean > 10.0;
    const double s = std::exp(std::min(mean, 10.0));
    for (int t = 0; t < b.T; ++t) {
      const int i = b.at(row, t);
      if (!b.mask[i]) continue;
      const double A = b.adv[i];
      const double unclipped = -A * s;
      const double clipped = -A * Clamp(s, 1.0 - eps_low, 1.0 + eps_high);
      if (clipped > unclipped) {
        out.loss[i] = clipped;
        out.grad[i] = 0.0;
      } else {
        out.loss[i] = unclipped;
        out.grad[i] = capped ? 0.0 : -A * s;  // d s_it / d logp_it = s_i
      }
    }
  }
  return out;
}

inline PerToken Reinforce(const Batch& b, const std::vector<double>* c = nullptr) {
  PerToken out{std::vector<double>(b.B * b.T, 0.0), std::vector<double>(b.B * b.T, 0.0)};
  for (int i = 0; i < b.B * b.T; ++i) {
    if (!b.mask[i]) continue;
    const double cc = c ? (*c)[i] : 1.0;
    out.loss[i] = -cc * b.adv[i] * b.logp[i];
    out.grad[i] = -cc * b.adv[i];
  }
  return out;
}

// Train/inference correction factor (token|sequence, truncate|mask).
inline std::vector<double> IsWeights(const Batch& b, bool sequence, bool mask_mode, double cap) {
  std::vector<double> c(b.B * b.T, 0.0);
  for (int row = 0; row < b.B; ++row) {
    double seq = 0;
    for (int t = 0; t < b.T; ++t)
      if (b.mask[b.at(row, t)]) seq += b.old_logp[b.at(row, t)] - b.rollout_logp[b.at(row, t)];
    for (int t = 0; t < b.T; ++t) {
      const int i = b.at(row, t);
      if (!b.mask[i]) continue;
      const double lw = sequence ? seq : b.old_logp[i] - b.rollout_logp[i];
      const double w = std::exp(Clamp(lw, -20.0, 20.0));
      c[i] = mask_mode ? (w <= cap ? w : 0.0) : std::min(w, cap);
    }
  }
  return c;
}

enum class Agg { kTokenMeanGlobal, kSeqMeanTokenMean, kSeqMeanTokenSum, kSeqMeanTokenSumNorm };

// d(aggregate)/d(loss_t) for each token: the weight of token t in the aggregate.
inline std::vector<double> AggWeights(const Batch& b, Agg mode, double global_tokens, double global_samples,
                                      double norm_constant = 0) {
  std::vector<double> w(b.B * b.T, 0.0);
  for (int row = 0; row < b.B; ++row) {
    int len = 0;
    for (int t = 0; t < b.T; ++t) len += b.mask[b.at(row, t)] ? 1 : 0;
    for (int t = 0; t < b.T; ++t) {
      const int i = b.at(row, t);
      if (!b.mask[i]) continue;
      switch (mode) {
        case Agg::kTokenMeanGlobal: w[i] = 1.0 / global_tokens; break;
        case Agg::kSeqMeanTokenMean: w[i] = 1.0 / (len * global_samples); break;
        case Agg::kSeqMeanTokenSum: w[i] = 1.0 / global_samples; break;
        case Agg::kSeqMeanTokenSumNorm: w[i] = 1.0 / (global_samples * norm_constant); break;
      }
    }
  }
  return w;
}

inline double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---- advantages ------------------------------------------------------------------------------

// GRPO: (x - group mean) / (unbiased group std + eps); singleton: mean 0, std 1.
inline std::vector<double> Grpo(const std::vector<double>& x, const std::vector<int64_t>& g, bool std_norm,
                                double eps) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double sum = 0;
    int n = 0;
    for (size_t j = 0; j < x.size(); ++j)
      if (g[j] == g[i]) sum += x[j], ++n;
    double mean = 0, sd = 1;
    if (n >= 2) {
      mean = sum / n;
      double ss = 0;
      for (size_t j = 0; j < x.size(); ++j)
        if (g[j] == g[i]) ss += (x[j] - mean) * (x[j] - mean);
      sd = std::sqrt(ss / (n - 1));
    }
    out[i] = std_norm ? (x[i] - mean) / (sd + eps) : x[i] - mean;
  }
  return out;
}

// RLOO by its definition: x_i - mean of the OTHER members of the group (singleton: x_i).
inline std::vector<double> Rloo(const std::vector<double>& x, const std::vector<int64_t>& g) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double sum = 0;
    int n = 0;
    for (size_t j = 0; j < x.size(); ++j)
      if (j != i && g[j] == g[i]) sum += x[j], ++n;
    out[i] = n == 0 ? x[i] : x[i] - sum / n;
  }
  return out;
}

// Whitening over masked entries (unbiased variance, rsqrt(var + 1e-8)).
inline std::vector<double> Whiten(const std::vector<double>& x, const std::vector<int>& mask) {
  double sum = 0;
  int n = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (mask[i]) sum += x[i], ++n;
  std::vector<double> out(x.size(), 0.0);
  if (n == 0) return out;
  const double mean = sum / n;
  double ss = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (mask[i]) ss += (x[i] - mean) * (x[i] - mean);
  const double var = n >= 2 ? ss / (n - 1) : ss;
  for (size_t i = 0; i < x.size(); ++i)
    if (mask[i]) out[i] = (x[i] - mean) / std::sqrt(var + 1e-8);
  return out;
}

// GAE, one row at a time, literally verl's reverse loop over scalars.
inline void Gae(int B, int T, const std::vector<double>& rewards, const std::vector<double>& values,
                const std::vector<int>& mask, double gamma, double lam, std::vector<double>* adv,
                std::vector<double>* ret) {
  adv->assign(B * T, 0.0);
  ret->assign(B * T, 0.0);
  for (int b = 0; b < B; ++b) {
    double next_value = 0, last = 0;
    for (int t = T - 1; t >= 0; --t) {
      const int i = b * T + t;
      const double m = mask[i] ? 1.0 : 0.0;
      const double v = mask[i] ? values[i] : 0.0;
      const double r = mask[i] ? rewards[i] : 0.0;
      const double delta = r + gamma * next_value - v;
      const double cand = delta + gamma * lam * last;
      next_value = v * m + (1 - m) * next_value;
      last = cand * m + (1 - m) * last;
      if (mask[i]) {
        (*adv)[i] = last;
        (*ret)[i] = last + v;
      }
    }
  }
}

// ---- KL, entropy, value loss -------------------------------------------------------------------

inline double Kl(double logp, double ref, int estimator) {
  const double d = logp - ref;
  if (estimator == 1) return d;
  if (estimator == 2) return 0.5 * d * d;
  return Clamp(std::exp(ref - logp) - (ref - logp) - 1.0, -10.0, 10.0);
}

inline double Entropy(const std::vector<double>& z) {
  double mx = -std::numeric_limits<double>::infinity();
  for (double v : z) mx = std::max(mx, v);
  double s = 0;
  for (double v : z) s += std::exp(v - mx);
  const double lse = mx + std::log(s);
  double h = 0;
  for (double v : z) h -= std::exp(v - lse) * (v - lse);
  return h;
}

inline double ValueLoss(double v, double old_v, double ret, double clip, double* grad) {
  const double vc = old_v + Clamp(v - old_v, -clip, clip);
  const double l1 = (v - ret) * (v - ret), l2 = (vc - ret) * (vc - ret);
  if (l2 > l1) {
    *grad = std::fabs(v - old_v) > clip ? 0.0 : (vc - ret);  // 0.5 * d/dv (vc - ret)^2
    return 0.5 * l2;
  }
  *grad = v - ret;
  return 0.5 * l1;
}

}  // namespace lightrl::algorithms::ref
