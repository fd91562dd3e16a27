// Per-step metrics sinks: console progress line, `metrics.jsonl` (one JSON object per step with
// a `step` field), and TensorBoard event files (`tb/events.out.tfevents.*`, scalars only).
//
// Only the coordinating trainer rank writes; other ranks pass their values to it.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "core/status.h"

namespace lightrl::trainer {

// Ordered name -> value map of one step's scalars ("reward/mean", "time/update_s", ...).
using StepMetrics = std::map<std::string, double>;

// Minimal TensorBoard event-file writer (TFRecord framing with masked CRC32C, Event protos
// with Summary.Value.simple_value), readable by TensorBoard and tf.compat.v1.train.summary_iterator.
class TensorBoardWriter {
 public:
  // Creates `dir` and a new events file in it.
  static StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& dir);
  ~TensorBoardWriter();
  Status WriteScalars(int64_t step, const StepMetrics& scalars, double wall_time);
  Status Flush();

 private:
  explicit TensorBoardWriter(std::ofstream out) : out_(std::move(out)) {}
  Status WriteRecord(const std::string& data);
  std::ofstream out_;
};

class MetricsLogger {
 public:
  // run_dir/metrics.jsonl is appended to (a resumed run continues the file; lines of steps
  // after `resume_step` are dropped first so a replayed step is not duplicated).
  static StatusOr<std::unique_ptr<MetricsLogger>> Open(const std::string& run_dir, int64_t resume_step, bool tensorboard);
  ~MetricsLogger();
  // Writes one line {"step": step, ...metrics} (keys sorted), a TensorBoard record, and logs a
  // progress line with ETA given total_steps.
  Status Log(int64_t step, int64_t total_steps, const StepMetrics& metrics);

 private:
  MetricsLogger() = default;
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
  double start_time_ = 0;
  int64_t first_step_ = -1;
};

// CRC32C (Castagnoli), as TFRecord framing requires. Exposed for tests.
uint32_t Crc32c(const char* data, size_t n);

}  // namespace lightrl::trainer
