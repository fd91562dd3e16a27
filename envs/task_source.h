// Task sources: where prompts come from (procedural generators and JSONL datasets), with a
// cursor that can be saved and restored (resume), epochs, a train/eval split, and a weighted
// mixture across sources with a simple curriculum (a source can join after N draws and ramp
// its weight in).
//
// Determinism. A source is a pure function of (config, seed, cursor):
//   - the CONTENT of task i of a source depends only on the source config and its `data_seed`
//     (default: a hash of the source name), not on the run seed, so the eval set is the same in
//     every run;
//   - the ORDER (epoch permutations) and the MIXTURE draws depend on the run seed.
// Epoch e of a source visits its `size` tasks in a permutation derived from (seed, name, e);
// after the last one the next epoch starts with a new permutation. The mixture picks the source
// of draw k from a hash of (seed, k), so State() is just counters (no RNG state to serialise).
//
// Train/eval split. Generated tasks are assigned to a split by a hash of their canonical problem
// text (eval iff hash % 1e6 < eval_fraction * 1e6); a generator re-draws until the task falls in
// the requested split, so train and eval never share a problem. JSONL sources use `eval_path`
// when given, otherwise the same hash rule over each record's text.
//
// The `tasks:` block (keys are checked; errors name the full key path):
//
//   tasks:
//     sources:
//       - name: arith              # unique; used in task ids "arith/train/000042"
//         kind: arithmetic         # countdown | arithmetic | list | latin | gsm8k | math | code
//         weight: 1.0              # mixture weight (>= 0)
//         start_after: 0           # curriculum: number of mixture draws before this source joins
//         ramp: 0                  # draws over which its weight rises linearly to `weight`
//                                  # (both ignored for the eval split: eval mixes every source)
//         size: 100000             # tasks per epoch, train split (generators; JSONL: the file)
//         eval_size: 1000          # tasks per epoch, eval split (generators)
//         eval_fraction: 0.1       # share of the problem space reserved for eval
//         data_seed: 7             # content seed (default: hash of `name`)
//         verifier: math           # verifier registry name (default per kind)
//         prompt_suffix: "..."     # appended to every prompt (default per kind)
//         difficulty: {...}        # generator knobs (envs/generators.h documents them)
//         path: data/x.jsonl       # JSONL kinds: the train file (relative to the working dir)
//         eval_path: data/y.jsonl  # JSONL kinds: optional eval file
//
// A bare list (`tasks: [ {...}, ... ]`) is accepted as shorthand for `tasks: {sources: [...]}`.
#pragma once

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::envs {

struct Task {
  std::string id;              // stable, unique within the source (e.g. "countdown/train/000123")
  std::string source;          // source name from the config ("countdown", "gsm8k", ...)
  std::string prompt;          // the user-turn text (no chat template applied)
  std::string verifier;        // verifier registry name for the reward worker
  std::string reference_json;  // what the verifier needs (JSON text)
};

class TaskSource {             // deterministic given (config, seed, cursor)
 public:
  virtual ~TaskSource() = default;
  virtual Task Next() = 0;                     // advances the cursor; epochs wrap with a new permutation
  virtual nlohmann::json State() const = 0;    // cursor (epoch, position, permutation seed, mix RNG ...)
  virtual Status Restore(const nlohmann::json& state) = 0;  // errors name the field
};

// Builds the mixture described by a training config's `tasks:` block (schema above). Errors
// (InvalidArgument) name the key, e.g. "tasks.sources[1].difficulty.digits: expected 1..18".
// JSONL files are read (and every line validated) here.
StatusOr<std::unique_ptr<TaskSource>> BuildTaskSource(const YAML::Node& tasks_block, uint64_t seed,
                                                      const std::string& split = "train",
                                                      const std::string& path = "tasks");

// ---- building blocks (used by BuildTaskSource; public for tests and tools) ----------------

// A finite, indexable task set: task i is a pure function of i.
class TaskSet {
 public:
  virtual ~TaskSet() = default;
  virtual int64_t size() const = 0;
  virtual Task Get(int64_t index) const = 0;
};

// Epoch-permuted iteration over a TaskSet. State: {"epoch", "position"}.
class EpochSource : public TaskSource {
 public:
  EpochSource(std::shared_ptr<const TaskSet> set, uint64_t order_seed);
  Task Next() override;
  nlohmann::json State() const override;
  Status Restore(const nlohmann::json& state) override;
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  int64_t size() const { return set_->size(); }

 private:
  void BuildPermutation();
  std::shared_ptr<const TaskSet> set_;
  uint64_t order_seed_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> perm_;  // permutation of [0, size) for epoch_
};

struct MixtureEntry {
  std::string name;
  double weight = 1.0;
  int64_t start_after = 0;
  int64_t ramp = 0;
  std::unique_ptr<EpochSource> source;
  // Effective weight at mixture draw k (curriculum).
  double WeightAt(int64_t k) const;
};

// Weighted mixture. State: {"version", "seed", "split", "draws", "sources": {name: {...}}}.
class MixtureSource : public TaskSource {
 public:
  // Errors if names repeat, a weight is negative, or no source has weight at draw 0.
  static StatusOr<std::unique_ptr<MixtureSource>> Create(std::vector<MixtureEntry> entries, uint64_t seed,
                                                         std::string split, const std::string& path);
  Task Next() override;
  nlohmann::json State() const override;
  Status Restore(const nlohmann::json& state) override;
  int64_t draws() const { return draws_; }
  // Index of the source draw k would use (pure function; for tests and logging).
  size_t PickSource(int64_t k) const;
  const std::vector<MixtureEntry>& entries() const { return entries_; }

 private:
  MixtureSource() = default;
  std::vector<MixtureEntry> entries_;
  uint64_t seed_ = 0;
  std::string split_;
  int64_t draws_ = 0;
};

}  // namespace lightrl::envs
