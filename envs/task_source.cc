#include "envs/task_source.h"

#include <cstdio>
#include <map>
#include <set>

#include "core/config/config.h"
#include "envs/generators.h"
#include "envs/jsonl.h"
#include "envs/rng.h"

namespace lightrl::envs {
namespace {

constexpr int64_t kBuckets = 1000000;

std::string Pad6(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%06lld", static_cast<long long>(i));
  return buf;
}

bool InEval(const std::string& key, double eval_fraction) {
  return static_cast<int64_t>(HashString(key) % kBuckets) < static_cast<int64_t>(eval_fraction * kBuckets);
}

// Tasks of one split of a generator: task i is the first draw of a per-(i, attempt) stream
// whose key falls in the split.
class GeneratedTaskSet : public TaskSet {
 public:
  GeneratedTaskSet(std::string name, std::string split, int64_t size, uint64_t data_seed, double eval_fraction,
                   std::unique_ptr<Generator> gen, std::string verifier, std::string suffix)
      : name_(std::move(name)), split_(std::move(split)), size_(size), data_seed_(data_seed),
        eval_fraction_(eval_fraction), gen_(std::move(gen)), verifier_(std::move(verifier)),
        suffix_(std::move(suffix)) {}
  int64_t size() const override { return size_; }
  Task Get(int64_t index) const override {
    LR_CHECK(index >= 0 && index < size_, "GeneratedTaskSet::Get: index ", index, " out of range");
    bool want_eval = split_ == "eval";
    uint64_t base = HashCombine(HashCombine(data_seed_, HashString(split_)), static_cast<uint64_t>(index));
    for (uint64_t attempt = 0; attempt < 100000; ++attempt) {
      Rng rng(HashCombine(base, attempt));
      GeneratedProblem p = gen_->Generate(rng);
      if (InEval(p.key, eval_fraction_) != want_eval) continue;
      Task t;
      t.id = name_ + "/" + split_ + "/" + Pad6(index);
      t.source = name_;
      t.prompt = p.prompt + suffix_;
      t.verifier = verifier_;
      t.reference_json = p.reference.dump();
      return t;
    }
    LR_FAIL("source '", name_, "': no ", split_, " task found in 100000 draws (the problem space is too small ",
            "for eval_fraction=", eval_fraction_, ")");
  }

 private:
  std::string name_, split_;
  int64_t size_;
  uint64_t data_seed_;
  double eval_fraction_;
  std::unique_ptr<Generator> gen_;
  std::string verifier_, suffix_;
};

class JsonlTaskSet : public TaskSet {
 public:
  explicit JsonlTaskSet(std::vector<Task> tasks) : tasks_(std::move(tasks)) {}
  int64_t size() const override { return static_cast<int64_t>(tasks_.size()); }
  Task Get(int64_t index) const override {
    LR_CHECK(index >= 0 && index < size(), "JsonlTaskSet::Get: index ", index, " out of range");
    return tasks_[static_cast<size_t>(index)];
  }

 private:
  std::vector<Task> tasks_;
};

StatusOr<int64_t> GetInt(const nlohmann::json& j, const std::string& field, const std::string& where) {
  if (!j.is_object() || !j.contains(field)) return InvalidArgument(StrCat(where, ".", field, ": missing"));
  if (!j[field].is_number_integer()) return InvalidArgument(StrCat(where, ".", field, ": expected an integer"));
  int64_t v = j[field].get<int64_t>();
  if (v < 0) return InvalidArgument(StrCat(where, ".", field, ": expected >= 0, got ", v));
  return v;
}

std::string DefaultSuffix(const std::string& kind) {
  if (kind == "gsm8k" || kind == "math") return "\nPut the final answer in \\boxed{} or after 'Answer:'.";
  return "";
}

}  // namespace

// ---- EpochSource ----------------------------------------------------------------------------
EpochSource::EpochSource(std::shared_ptr<const TaskSet> set, uint64_t order_seed)
    : set_(std::move(set)), order_seed_(order_seed) {
  LR_CHECK(set_ && set_->size() > 0, "EpochSource: empty task set");
  BuildPermutation();
}

void EpochSource::BuildPermutation() {
  perm_.resize(static_cast<size_t>(set_->size()));
  for (size_t i = 0; i < perm_.size(); ++i) perm_[i] = static_cast<int64_t>(i);
  Rng rng(HashCombine(order_seed_, static_cast<uint64_t>(epoch_)));
  rng.Shuffle(&perm_);
}

Task EpochSource::Next() {
  if (position_ >= set_->size()) {
    ++epoch_;
    position_ = 0;
    BuildPermutation();
  }
  return set_->Get(perm_[static_cast<size_t>(position_++)]);
}

nlohmann::json EpochSource::State() const { return {{"epoch", epoch_}, {"position", position_}}; }

Status EpochSource::Restore(const nlohmann::json& state) {
  LR_ASSIGN_OR_RETURN(int64_t epoch, GetInt(state, "epoch", "state"));
  LR_ASSIGN_OR_RETURN(int64_t position, GetInt(state, "position", "state"));
  if (position > set_->size()) {
    return InvalidArgument(StrCat("state.position: ", position, " exceeds the epoch size ", set_->size(),
                                  " (was the source resized?)"));
  }
  bool rebuild = epoch != epoch_;
  epoch_ = epoch;
  position_ = position;
  if (rebuild) BuildPermutation();
  return Status::Ok();
}

// ---- MixtureSource --------------------------------------------------------------------------
double MixtureEntry::WeightAt(int64_t k) const {
  if (k < start_after) return 0.0;
  if (ramp > 0 && k < start_after + ramp) return weight * static_cast<double>(k - start_after + 1) / static_cast<double>(ramp);
  return weight;
}

StatusOr<std::unique_ptr<MixtureSource>> MixtureSource::Create(std::vector<MixtureEntry> entries, uint64_t seed,
                                                               std::string split, const std::string& path) {
  if (entries.empty()) return InvalidArgument(path + ": expected at least one source");
  std::set<std::string> names;
  double w0 = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    std::string at = StrCat(path, "[", i, "]");
    if (!names.insert(e.name).second) return InvalidArgument(StrCat(at, ".name: duplicate source name '", e.name, "'"));
    if (!(e.weight >= 0)) return InvalidArgument(StrCat(at, ".weight: expected >= 0"));
    if (e.start_after < 0) return InvalidArgument(StrCat(at, ".start_after: expected >= 0"));
    if (e.ramp < 0) return InvalidArgument(StrCat(at, ".ramp: expected >= 0"));
    if (!e.source) return InvalidArgument(StrCat(at, ": no task set"));
    w0 += e.WeightAt(0);
  }
  if (!(w0 > 0)) return InvalidArgument(path + ": every source has weight 0 at the first draw (check weight/start_after)");
  std::unique_ptr<MixtureSource> m(new MixtureSource());
  m->entries_ = std::move(entries);
  m->seed_ = seed;
  m->split_ = std::move(split);
  return m;
}

size_t MixtureSource::PickSource(int64_t k) const {
  double total = 0;
  for (const auto& e : entries_) total += e.WeightAt(k);
  double u = static_cast<double>(Mix64(HashCombine(seed_ ^ 0x6D6978ull, static_cast<uint64_t>(k))) >> 11) * 0x1.0p-53 * total;
  size_t last = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    double w = entries_[i].WeightAt(k);
    if (w <= 0) continue;
    last = i;
    if (u < w) return i;
    u -= w;
  }
  return last;  // rounding
}

Task MixtureSource::Next() {
  size_t i = PickSource(draws_);
  ++draws_;
  return entries_[i].source->Next();
}

nlohmann::json MixtureSource::State() const {
  nlohmann::json s = {{"version", 1}, {"seed", seed_}, {"split", split_}, {"draws", draws_}};
  nlohmann::json src = nlohmann::json::object();
  for (const auto& e : entries_) src[e.name] = e.source->State();
  s["sources"] = src;
  return s;
}

Status MixtureSource::Restore(const nlohmann::json& state) {
  if (!state.is_object()) return InvalidArgument("state: expected an object");
  LR_ASSIGN_OR_RETURN(int64_t version, GetInt(state, "version", "state"));
  if (version != 1) return InvalidArgument(StrCat("state.version: expected 1, got ", version));
  if (!state.contains("seed") || !(state["seed"].is_number_unsigned() || state["seed"].is_number_integer())) {
    return InvalidArgument("state.seed: expected an integer");
  }
  uint64_t seed = state["seed"].get<uint64_t>();
  if (seed != seed_) {
    return InvalidArgument(StrCat("state.seed: the saved cursor was made with seed ", seed, ", this source uses ", seed_));
  }
  if (!state.contains("split") || !state["split"].is_string() || state["split"].get<std::string>() != split_) {
    return InvalidArgument(StrCat("state.split: expected \"", split_, "\""));
  }
  LR_ASSIGN_OR_RETURN(int64_t draws, GetInt(state, "draws", "state"));
  if (!state.contains("sources") || !state["sources"].is_object()) return InvalidArgument("state.sources: expected an object");
  const auto& src = state["sources"];
  for (const auto& [name, _] : src.items()) {
    bool known = false;
    for (const auto& e : entries_) known |= e.name == name;
    if (!known) return InvalidArgument(StrCat("state.sources.", name, ": no such source in the config"));
  }
  // Validate everything before changing anything.
  for (const auto& e : entries_) {
    if (!src.contains(e.name)) return InvalidArgument(StrCat("state.sources.", e.name, ": missing"));
    std::string where = "state.sources." + e.name;
    LR_ASSIGN_OR_RETURN(int64_t ep, GetInt(src[e.name], "epoch", where));
    LR_ASSIGN_OR_RETURN(int64_t pos, GetInt(src[e.name], "position", where));
    (void)ep;
    if (pos > e.source->size()) {
      return InvalidArgument(StrCat(where, ".position: ", pos, " exceeds the epoch size ", e.source->size()));
    }
  }
  for (auto& e : entries_) {
    Status st = e.source->Restore(src[e.name]);
    if (!st.ok()) return st.WithContext("state.sources." + e.name);
  }
  draws_ = draws;
  return Status::Ok();
}

// ---- BuildTaskSource ------------------------------------------------------------------------
StatusOr<std::unique_ptr<TaskSource>> BuildTaskSource(const YAML::Node& tasks_block, uint64_t seed,
                                                      const std::string& split, const std::string& path) {
  if (split != "train" && split != "eval") {
    return InvalidArgument(StrCat("split: expected train or eval, got '", split, "'"));
  }
  auto built = ParseConfig<std::vector<MixtureEntry>>([&]() {
    YAML::Node list;
    std::string list_path;
    if (tasks_block.IsSequence()) {
      list = tasks_block;
      list_path = path;
    } else {
      if (!tasks_block.IsDefined() || tasks_block.IsNull()) throw ConfigError(path, "missing (expected a `sources:` list)");
      if (!tasks_block.IsMap()) throw ConfigError(path, "expected a map with `sources:` or a list of sources");
      ConfigReader top(tasks_block, path);
      top.MarkUsed("sources");
      top.Finish();
      list = tasks_block["sources"];
      list_path = top.Path("sources");
      if (!list.IsDefined() || !list.IsSequence()) throw ConfigError(list_path, "expected a list of sources");
    }
    std::vector<MixtureEntry> entries;
    for (size_t i = 0; i < list.size(); ++i) {
      std::string at = StrCat(list_path, "[", i, "]");
      if (!list[i].IsMap()) throw ConfigError(at, "expected a map");
      ConfigReader r(list[i], at);
      MixtureEntry e;
      std::string kind = r.Get<std::string>("kind");
      e.name = r.Get<std::string>("name", kind);
      if (e.name.empty() || e.name.find('/') != std::string::npos) r.Fail("name", "expected a non-empty name without '/'");
      e.weight = r.Get<double>("weight", 1.0);
      if (!(e.weight >= 0)) r.Fail("weight", "expected >= 0");
      e.start_after = r.Get<int64_t>("start_after", 0);
      if (e.start_after < 0) r.Fail("start_after", "expected >= 0");
      e.ramp = r.Get<int64_t>("ramp", 0);
      if (e.ramp < 0) r.Fail("ramp", "expected >= 0");
      if (split == "eval") e.start_after = e.ramp = 0;  // the curriculum shapes training only
      double eval_fraction = r.Get<double>("eval_fraction", 0.1);
      if (!(eval_fraction >= 0 && eval_fraction < 1)) r.Fail("eval_fraction", "expected 0 <= x < 1");
      uint64_t data_seed = r.Get<uint64_t>("data_seed", HashString(e.name));
      std::string suffix = r.Get<std::string>("prompt_suffix", DefaultSuffix(kind));
      std::optional<std::string> verifier = r.GetOptional<std::string>("verifier");
      uint64_t order_seed = HashCombine(seed, HashString(e.name + "/" + split));
      std::shared_ptr<const TaskSet> set;
      if (IsGeneratorKind(kind)) {
        int64_t size = r.Get<int64_t>("size", 100000);
        if (size < 1 || size > 100000000) r.Fail("size", "expected 1..1e8");
        int64_t eval_size = r.Get<int64_t>("eval_size", 1000);
        if (eval_size < 1 || eval_size > 100000000) r.Fail("eval_size", "expected 1..1e8");
        if (split == "eval" && !(eval_fraction > 0)) r.Fail("eval_fraction", "must be > 0 to build the eval split");
        ConfigReader d = r.ChildOrEmpty("difficulty");
        std::unique_ptr<Generator> gen = MakeGenerator(kind, d);
        std::string ver = verifier.value_or(gen->default_verifier());
        set = std::make_shared<GeneratedTaskSet>(e.name, split, split == "eval" ? eval_size : size, data_seed,
                                                 eval_fraction, std::move(gen), ver, suffix);
      } else if (IsJsonlKind(kind)) {
        std::string file = r.Get<std::string>("path");
        std::optional<std::string> eval_file = r.GetOptional<std::string>("eval_path");
        bool use_eval_file = split == "eval" && eval_file.has_value();
        std::string chosen = use_eval_file ? *eval_file : file;
        auto recs = LoadJsonl(kind, chosen);
        if (!recs.ok()) throw ConfigError(r.Path(use_eval_file ? "eval_path" : "path"), recs.status().message());
        std::vector<Task> tasks;
        std::set<std::string> ids;
        for (auto& rec : *recs) {
          if (!use_eval_file && !eval_file.has_value()) {
            if (InEval(rec.key, eval_fraction) != (split == "eval")) continue;
          }
          Task t;
          t.id = e.name + "/" + split + "/" + rec.id;
          if (!ids.insert(t.id).second) {
            throw ConfigError(r.Path(use_eval_file ? "eval_path" : "path"),
                              StrCat(chosen, ": duplicate record id '", rec.id, "'"));
          }
          t.source = e.name;
          t.prompt = rec.prompt + suffix;
          t.verifier = verifier.value_or(rec.verifier);
          t.reference_json = rec.reference.dump();
          tasks.push_back(std::move(t));
        }
        if (tasks.empty()) throw ConfigError(r.Path("path"), StrCat(chosen, ": no records in the ", split, " split"));
        set = std::make_shared<JsonlTaskSet>(std::move(tasks));
      } else {
        r.Fail("kind", "unknown kind '" + kind + "' (expected countdown, arithmetic, list, latin, gsm8k, math, code)");
      }
      r.Finish();
      e.source = std::make_unique<EpochSource>(set, order_seed);
      entries.push_back(std::move(e));
    }
    return entries;
  });
  if (!built.ok()) return built.status();
  std::string list_path = tasks_block.IsSequence() ? path : path + ".sources";
  auto mix = MixtureSource::Create(std::move(built).value(), seed, split, list_path);
  if (!mix.ok()) return mix.status();
  return std::unique_ptr<TaskSource>(std::move(mix).value());
}

}  // namespace lightrl::envs
