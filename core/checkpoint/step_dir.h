// The atomic on-disk protocol of checkpoint directories (algorithms.md §8.1, style.md §14), free
// of any knowledge of what a checkpoint holds (trainer/checkpoint.h fills the payload).
//
// Layout under a checkpoint root (the trainer uses <run_dir>/checkpoints):
//
//   step_<N>/              a committed checkpoint: payload files (state.h5) + COMPLETE
//   step_<N>/COMPLETE      the completion marker, written last: JSON
//                          {"format": "lightrl-step-dir", "step": N, "files": {"state.h5": bytes}}
//   step_<N>.tmp/          being written, or left behind by a crash: never read, removed by the
//                          next BeginStepDir / PruneStepDirs
//   latest                 "step_<N>\n": the newest committed checkpoint (written atomically)
//
// Commit sequence (CommitStepDir): fsync every payload file, write COMPLETE (tmp file + fsync +
// rename), fsync the directory, rename step_<N>.tmp -> step_<N>, fsync the root, then replace
// `latest` the same way. A crash at any point leaves either the previous state or the new
// checkpoint, never a directory named step_<N> without its marker -- and a step_<N> without a
// valid marker (copied by hand, half-deleted) is rejected by CheckStepDirComplete.
//
// Step numbers are decimal without padding; names never encode the world size (verl #2265).
// Not thread-safe; exactly one process (trainer rank 0) writes a root.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace lightrl::checkpoint {

inline constexpr const char* kCompleteMarker = "COMPLETE";
inline constexpr const char* kLatestPointer = "latest";

struct StepDir {
  int64_t step = 0;
  std::string path;  // <root>/step_<N>
};

// "step_<N>" for a step.
std::string StepDirName(int64_t step);

// Directories of `root` named exactly step_<N> (no .tmp suffix), ascending by step. Contents are
// not checked. A missing root is an empty list.
StatusOr<std::vector<StepDir>> ListStepDirs(const std::string& root);

// Creates <root> (and parents) and a fresh <root>/step_<N>.tmp (removing a stale one); returns
// the temporary directory to write payload files into.
StatusOr<std::string> BeginStepDir(const std::string& root, int64_t step);

// Seals `tmp_dir` (from BeginStepDir) as <root>/step_<N> with the sequence above and points
// `latest` at it. An existing step_<N> (a re-save of the same step) is replaced.
// REQUIRES: every payload file in tmp_dir is closed.
Status CommitStepDir(const std::string& root, int64_t step, const std::string& tmp_dir);

// OK if `dir` holds a COMPLETE marker that parses, names the directory's step, and lists files
// that exist with the recorded sizes. DATA_LOSS naming the directory and the file otherwise.
Status CheckStepDirComplete(const std::string& dir);

// Removes all committed step dirs but the newest `keep_last` (keep_last <= 0 keeps all), and
// every *.tmp directory. Returns the removed paths.
StatusOr<std::vector<std::string>> PruneStepDirs(const std::string& root, int64_t keep_last);

// The step dir that <root>/latest names (NOT_FOUND if there is no pointer; it is not validated).
StatusOr<std::string> ReadLatestPointer(const std::string& root);

// Writes `bytes` to `path` atomically: <path>.tmp, fsync, rename, fsync of the parent directory.
Status WriteFileAtomic(const std::string& path, const std::string& bytes);
// fsync of a file or directory by path.
Status FsyncPath(const std::string& path);

}  // namespace lightrl::checkpoint
