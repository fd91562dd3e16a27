// Hard wall-clock limits for in-process checkers (rewards.md §1 item 5): the checking code runs
// in forked checker processes, and the parent kills a process whose current request runs past
// its limit. Signals inside the checker are never relied on (they cannot interrupt long GMP
// work and do not work off the main thread), so a power tower or a pathological regex costs at
// most `timeout_s` and the request gets a kTimeout error; the remaining requests of that process
// go to a fresh one (a checker that timed out is never reused: compose-rl PR #90).
//
// Protocol: the child computes fn(i) for its share of the indices in order and writes one frame
// per result to a pipe (8-byte length + JSON). The parent, never the child, attaches sample ids.
// A child that dies without a frame for its current request (crash, RLIMIT_AS) gives that
// request kInternal; the others are rerun. Children get PR_SET_PDEATHSIG and are always reaped
// (SIGKILL + waitpid) before Run() returns.
//
// Thread-safety: Run() may be called from any thread; concurrent calls are independent. fork()
// copies only the calling thread; the child runs only `fn` (pure computation: no locks shared
// with other threads except malloc's, which glibc makes fork-safe), closes every inherited fd
// except its pipe and stderr, and leaves with _exit().
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/protocol/reward_types.h"

namespace lightrl::reward {

struct CheckerPoolOptions {
  double timeout_s = 10.0;      // per request
  int processes = 2;            // concurrent checker processes
  int64_t memory_bytes = 2ll << 30;  // RLIMIT_AS of a checker process (0 = unlimited)
};

// Returns one result per entry of `sample_ids` (same order). fn(i) computes request i; its
// result's sample_id is replaced by sample_ids[i]. `deadline_s` > 0 bounds the whole call:
// requests not finished by then get kTimeout.
std::vector<RewardResult> RunIsolated(const std::vector<uint64_t>& sample_ids,
                                      const std::function<RewardResult(size_t)>& fn,
                                      const CheckerPoolOptions& options, double deadline_s = 0);

// Same contract without processes (no hard kill): exceptions become kInternal. For benchmarks
// and `isolation: none`.
std::vector<RewardResult> RunInline(const std::vector<uint64_t>& sample_ids,
                                    const std::function<RewardResult(size_t)>& fn);

// Wire form of one result (used by the pool; exposed for tests).
std::string EncodeResult(const RewardResult& r);
RewardResult DecodeResult(const std::string& frame, uint64_t sample_id);

}  // namespace lightrl::reward
