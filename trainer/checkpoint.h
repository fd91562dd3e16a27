// Checkpoints of a training run: the full resume state of algorithms.md §8.1 in one HDF5 file per
// step, written atomically (core/checkpoint/step_dir.h), world-size independent (everything by
// name, unsharded), with a crc32 per dataset; auto-resume that skips corrupt or partial
// checkpoints by name; config-drift checks; export to a safetensors model directory; and the
// stop-signal flag that turns SIGTERM/SIGINT into "save at the next safe point, exit 0".
//
// On disk (<run_dir>/checkpoints/step_<N>/state.h5, readable with h5py; see
// core/checkpoint/README.md for the full table):
//
//   / attributes        lightrl_format="lightrl-checkpoint", format_version, protocol_version,
//                       world_size, git_commit, created_utc, and the counters (a convenience copy
//                       for h5py; the loader reads the checksummed `counters` dataset and checks
//                       that the attributes agree)
//   /counters           text: JSON {step, weights_version, consumed_prompts, consumed_samples,
//                       next_reward_batch, optimizer_step}
//   /model/<name>       policy parameters by named_parameters() name, as stored (fp32 masters)
//   /optimizer/exp_avg/<name>, /optimizer/exp_avg_sq/<name>   AdamW moments (Optimizer::ExportState)
//   /extra_models/<key>/<name>    e.g. key "critic" (PPO value model), "critic_optim"
//   /rng/<name>         generator states as uint8 tensors ("torch_cpu", "torch_cuda_<i>")
//   /json/task_cursor, /json/rng, /json/algorithm_state, /json/extra    text: JSON
//   /config_yaml        text: the resolved config (style.md §13)
//   /manifest           text: JSON list of every dataset written (a missing one is DATA_LOSS)
//
// The LR schedule is a pure function of the optimizer step (trainer/optimizer.h ScheduledLr), so
// `optimizer_step` is the LR-scheduler state.
//
// Who saves and who loads. All trainer state is replicated over the data-parallel trainer
// ranks, so ONLY trainer rank 0 calls Save. Every trainer rank calls Resume/LoadCheckpoint
// itself (the run directory must be on a file system all trainer ranks see; there is no
// broadcast). Resume is deterministic given the directory contents, so all ranks pick the same
// checkpoint; a rank that fails returns the error and the job aborts (core/comm status
// agreement). Saving is synchronous: the caller must not update parameters during Save.
//
// Wiring in `lightrl train` (the integration is these lines):
//
//   InstallStopSignalHandlers();
//   CheckpointManager ckpt(run_dir, config.checkpoint);
//   LR_ASSIGN_OR_RETURN(auto resumed, ckpt.Resume(resume_flag));        // auto | none | PATH
//   if (resumed) {
//     LR_ASSIGN_OR_RETURN(auto drift, CheckConfigDrift(resumed->config_yaml, config.raw));
//     for (const auto& line : drift) log->warn("config changed since the checkpoint: {}", line);
//     LR_RETURN_IF_ERROR(RestoreTrainingState(*resumed, trainer));      // model, optim, counters, torch RNG
//     LR_RETURN_IF_ERROR(task_source.Restore(resumed->task_cursor));    // + algorithm_state, rng
//   }
//   trainer.after_step = [&](int64_t step) -> Status {
//     const bool stop = AnyRankStopRequested(*collective);               // every trainer rank
//     if (rank == 0 && (stop || ckpt.Due(step, config.trainer.total_steps))) {
//       TrainingState s = CaptureTrainingState(trainer, config);
//       s.task_cursor = task_source.State();  s.algorithm_state = ...;
//       LR_RETURN_IF_ERROR(ckpt.Save(s));
//     }
//     return stop ? Status(StatusCode::kCancelled, "stop requested") : Status::Ok();  // exit 0 on kCancelled
//   };
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint/h5_file.h"
#include "core/status.h"
#include "model/safetensors.h"
#include "trainer/train_config.h"

namespace lightrl::trainer {

class Trainer;
class Collective;

// The on-disk format this build writes; it reads every version <= this.
inline constexpr int64_t kCheckpointFormatVersion = 1;
// The payload file inside a step directory.
inline constexpr const char* kCheckpointFile = "state.h5";

// Everything a resumed run needs (algorithms.md §8.1). Tensors are CPU and contiguous when
// loaded; when saving they may be on any device (copied to CPU while writing) and may alias live
// parameters (Save copies nothing it does not have to).
struct TrainingState {
  // Counters (§8.1 item 7). Trainer::SetCounters restores the first four.
  int64_t step = 0;                  // last completed step; the resumed run starts at step + 1
  uint64_t weights_version = 0;      // version of the weights the rollout side serves
  int64_t consumed_prompts = 0;
  int64_t consumed_samples = 0;
  uint64_t next_reward_batch = 1;    // next RewardBatch id (protocol batch ids stay unique)
  int64_t optimizer_step = 0;        // Optimizer::step(): also the LR-scheduler state

  model::NamedTensors model;         // policy named_parameters(): name -> tensor (fp32 masters)
  model::NamedTensors optimizer;     // Optimizer::ExportState(): "exp_avg/<name>", "exp_avg_sq/<name>"
  // Other models of the algorithm by key (no '/' in keys), e.g. "critic" (PPO value model) and
  // "critic_optim" (its Optimizer::ExportState; put its step in `extra`).
  std::map<std::string, model::NamedTensors> extra_models;
  // Generator states as [N] uint8 tensors (CaptureTorchRng: "torch_cpu", "torch_cuda_<i>").
  model::NamedTensors rng_tensors;

  nlohmann::json task_cursor;        // the task source's State(): epoch, position, permutation seed
  nlohmann::json rng;                // other RNG state: sampler seeds, per-request rollout seeds
  nlohmann::json algorithm_state;    // controller state: adaptive KL/entropy coef, DAPO buffer policy
  nlohmann::json extra;              // anything else a component needs (free-form)
  std::string config_yaml;           // the resolved config (ConfigToYaml(config.raw))

  // Metadata (written for humans and tools; never needed to load).
  int64_t world_size = 1;            // trainer ranks that saved it (the layout does not depend on it)
  std::string git_commit = "unknown";
};

// Writes `state` to one HDF5 file (truncating it) and fsyncs it. Tensor names must be non-empty,
// without a leading '/', empty components, or "." / ".." components. Prefer CheckpointManager::Save,
// which adds the atomic directory protocol; this is the raw file writer.
Status WriteCheckpointFile(const std::string& path, const TrainingState& state);

// Loads and fully verifies a checkpoint: completion marker (for a step directory), header
// (format, version), manifest (every dataset present, none unexpected), every checksum, the
// JSON blobs. `path` may be a step directory, its state.h5, a checkpoints root or a run
// directory (both resolved through `latest`). Errors are DATA_LOSS / NOT_FOUND /
// FAILED_PRECONDITION naming the file and the dataset, with a HINT where one helps.
StatusOr<TrainingState> LoadCheckpoint(const std::string& path);

// The same checks as LoadCheckpoint without keeping the tensors in memory.
Status ValidateCheckpoint(const std::string& path);

// Resolves `path` as LoadCheckpoint does; returns the step directory (or the file given).
StatusOr<std::string> ResolveCheckpointPath(const std::string& path);

// Checkpoints of one run under <run_dir>/checkpoints. Used by trainer rank 0 to save and by every
// trainer rank to resume. Not thread-safe.
class CheckpointManager {
 public:
  CheckpointManager(std::string run_dir, CheckpointConfig config);

  // True when step `step` must be saved: a multiple of save_every (> 0), or the last step.
  bool Due(int64_t step, int64_t total_steps) const;

  // Writes step_<state.step>/ atomically (tmp dir, fsync, rename), points `latest` at it, then
  // prunes to keep_last (and removes leftover *.tmp dirs). Logs path, size and time.
  Status Save(const TrainingState& state);

  // mode "none" (or ""): nullopt. "auto": the newest valid checkpoint; corrupt or partial ones
  // are logged by name (warn) and skipped in favour of older ones; nullopt when the run has no
  // checkpoint at all; DATA_LOSS listing every skipped one when none is valid. Any other mode
  // is a PATH (step dir, state.h5, or a checkpoints/run dir via `latest`) loaded without fallback.
  StatusOr<std::optional<TrainingState>> Resume(const std::string& mode);

  // Path of the newest valid step directory (full verification); NOT_FOUND if there is none.
  StatusOr<std::string> LatestValid();

  // "<path>: <status>" for each checkpoint the last Resume/LatestValid skipped.
  const std::vector<std::string>& skipped() const { return skipped_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  CheckpointConfig config_;
  std::vector<std::string> skipped_;
};

// Config drift on resume. Compares the two configs key by key (dotted paths; lists compared
// whole) and returns one line per difference, "rollout.temperature: 1.0 -> 0.8" (a missing side
// is "<absent>"); numbers are compared by value (1 == 1.0). Keys under `model` fix the shapes
// and meaning of the saved state: any difference there (except the pure kernel knobs
// model.lightning_block_size and model.softmax_block_size) is FAILED_PRECONDITION listing them.
StatusOr<std::vector<std::string>> CheckConfigDrift(const YAML::Node& saved, const YAML::Node& current);
StatusOr<std::vector<std::string>> CheckConfigDrift(const std::string& saved_yaml, const YAML::Node& current);

// ---- bridges to the live objects ---------------------------------------------------------

// The module's named parameters (detached; CPU tensors alias the live parameters).
model::NamedTensors ExportParameters(torch::nn::Module& module);
// Copies `tensors` into the module's parameters (converting dtype/device). Every parameter must
// be present with its shape and no extra name may appear; errors name `what` and the tensor.
Status LoadParameters(torch::nn::Module& module, const model::NamedTensors& tensors, const std::string& what);

// States of the default torch generators: "torch_cpu", plus "torch_cuda_<i>" per visible GPU.
model::NamedTensors CaptureTorchRng();
// Restores what CaptureTorchRng captured (names it does not know are an error; a CUDA state
// without that GPU is an error naming it).
Status RestoreTorchRng(const model::NamedTensors& states);

// Fills counters, policy parameters, optimizer state and step, torch RNG, config_yaml
// (ConfigToYaml(config.raw)) and world_size from `trainer`. The caller adds task_cursor, rng,
// algorithm_state, extra, extra_models and next_reward_batch (Trainer does not expose it yet).
TrainingState CaptureTrainingState(Trainer& trainer, const TrainConfig& config);
// Restores policy parameters, optimizer state and step, counters (SetCounters) and torch RNG.
Status RestoreTrainingState(const TrainingState& state, Trainer& trainer);

// ---- inspection and export -----------------------------------------------------------------

struct CheckpointInfo {
  std::string path;                                  // resolved step directory or file
  std::map<std::string, std::string> attributes;     // root attributes as text
  std::vector<checkpoint::DatasetEntry> datasets;    // every dataset with dtype and shape
  std::string counters_json, config_yaml;            // text datasets (empty if unreadable)
  std::map<std::string, std::string> json_blobs;     // "task_cursor" -> text, ...
  std::vector<std::string> problems;                 // empty = valid (every check of LoadCheckpoint)
  bool valid() const { return problems.empty(); }
};
// Reads what a checkpoint holds and verifies it; problems are listed, not returned as errors
// (an error Status means nothing could be read at all, e.g. a missing path).
StatusOr<CheckpointInfo> InspectCheckpoint(const std::string& path);
// Human-readable report (ckpt-info). with_tensors = false prints per-group totals only.
std::string FormatCheckpointInfo(const CheckpointInfo& info, bool with_tensors = true);

// Writes the checkpoint's policy as a model directory in the MiniMax-M1 layout (config.json +
// model.safetensors, or shards + index.json when max_shard_bytes > 0) via
// model::SaveModelDirectory. The model config is the `model` block of the saved config_yaml;
// the weights are loaded into a freshly built HybridModel first, so names and shapes are checked.
Status ExportCheckpoint(const std::string& checkpoint, const std::string& out_dir,
                        torch::Dtype dtype = torch::kFloat32, int64_t max_shard_bytes = 0);

// ---- stop signals --------------------------------------------------------------------------

// Installs handlers for SIGTERM, SIGINT and SIGUSR1 that only record the signal (async-signal
// safe). Each handler is one-shot (SA_RESETHAND): a second signal of the same kind has the
// default effect (a second Ctrl-C kills). SA_RESTART is set; zmq_poll/MPI waits still return
// early, which the loop tolerates because it only polls the flag between steps.
// NOTE: Open MPI's mpirun, on SIGTERM, sends SIGTERM to the ranks and SIGKILL after
// odls_base_sigkill_timeout (default 1 s): too short for a save. For preemption send SIGUSR1 to
// mpirun (forwarded to every rank by default, no kill follows), signal the trainer processes
// directly, or launch with `--mca odls_base_sigkill_timeout 600`.
void InstallStopSignalHandlers();
// True once a stop signal arrived (this process). StopSignal() is its number, 0 if none.
bool StopRequested();
int StopSignal();
// Forgets a received signal (tests).
void ClearStopRequest();
// True on every trainer rank if any trainer rank received a stop signal (one all-reduce), so
// all ranks stop after the same step. Call it at the same point on every rank.
bool AnyRankStopRequested(Collective& collective);

}  // namespace lightrl::trainer
