#include "trainer/metrics.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/check.h"
#include "core/logging.h"

namespace lightrl::trainer {

namespace fs = std::filesystem;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---- protobuf wire encoding (just what Event/Summary need) -----------------------------------
void Varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void Tag(std::string* out, int field, int wire) { Varint(out, (static_cast<uint64_t>(field) << 3) | wire); }
void Bytes(std::string* out, int field, const std::string& s) {
  Tag(out, field, 2);
  Varint(out, s.size());
  out->append(s);
}
template <typename T>
void Fixed(std::string* out, int field, int wire, T v) {
  Tag(out, field, wire);
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

uint32_t MaskedCrc(const char* data, size_t n) {
  uint32_t crc = Crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

}  // namespace

uint32_t Crc32c(const char* data, size_t n) {
  static uint32_t table[256];
  static bool init = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (0x82f63b78u ^ (c >> 1)) : (c >> 1);
      table[i] = c;
    }
    return true;
  }();
  (void)init;
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ static_cast<unsigned char>(data[i])) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

// ---- TensorBoardWriter -----------------------------------------------------------------------

StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Unavailable(StrCat(dir, ": cannot create TensorBoard directory: ", ec.message()));
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  std::ostringstream name;
  name << "events.out.tfevents." << static_cast<int64_t>(Now()) << "." << host << "." << ::getpid();
  std::ofstream out(fs::path(dir) / name.str(), std::ios::binary);
  if (!out) return Unavailable(StrCat(dir, ": cannot create events file"));
  std::unique_ptr<TensorBoardWriter> w(new TensorBoardWriter(std::move(out)));
  // First record: file_version (Event field 3).
  std::string event;
  Fixed<double>(&event, 1, 1, Now());
  Bytes(&event, 3, "brain.Event:2");
  LR_RETURN_IF_ERROR(w->WriteRecord(event));
  return w;
}

TensorBoardWriter::~TensorBoardWriter() { out_.flush(); }

Status TensorBoardWriter::WriteRecord(const std::string& data) {
  char header[12];
  uint64_t len = data.size();
  std::memcpy(header, &len, 8);
  uint32_t len_crc = MaskedCrc(header, 8);
  std::memcpy(header + 8, &len_crc, 4);
  uint32_t data_crc = MaskedCrc(data.data(), data.size());
  out_.write(header, 12);
  out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
  if (!out_) return Unavailable("TensorBoard events file: write failed");
  return Status::Ok();
}

Status TensorBoardWriter::WriteScalars(int64_t step, const StepMetrics& scalars, double wall_time) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    if (!std::isfinite(value)) continue;
    std::string v;
    Bytes(&v, 1, tag);                                   // Summary.Value.tag
    Fixed<float>(&v, 2, 5, static_cast<float>(value));  // Summary.Value.simple_value
    Bytes(&summary, 1, v);                               // Summary.value (repeated)
  }
  std::string event;
  Fixed<double>(&event, 1, 1, wall_time);  // Event.wall_time
  Tag(&event, 2, 0);                       // Event.step
  Varint(&event, static_cast<uint64_t>(step));
  Bytes(&event, 5, summary);  // Event.summary
  return WriteRecord(event);
}

Status TensorBoardWriter::Flush() {
  out_.flush();
  return out_ ? Status::Ok() : Unavailable("TensorBoard events file: flush failed");
}

// ---- MetricsLogger ---------------------------------------------------------------------------

StatusOr<std::unique_ptr<MetricsLogger>> MetricsLogger::Open(const std::string& run_dir, int64_t resume_step,
                                                             bool tensorboard) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return Unavailable(StrCat(run_dir, ": cannot create run directory: ", ec.message()));
  const fs::path path = fs::path(run_dir) / "metrics.jsonl";
  // Keep only lines of steps <= resume_step: a step replayed after resume is written once.
  std::vector<std::string> kept;
  if (fs::exists(path)) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("step")) continue;  // a torn last line from a kill
      if (j["step"].get<int64_t>() <= resume_step) kept.push_back(line);
    }
  }
  std::unique_ptr<MetricsLogger> logger(new MetricsLogger());
  {
    std::ofstream rewrite(path, std::ios::trunc);
    for (const auto& l : kept) rewrite << l << "\n";
    if (!rewrite) return Unavailable(StrCat(path.string(), ": cannot write"));
  }
  logger->jsonl_.open(path, std::ios::app);
  if (!logger->jsonl_) return Unavailable(StrCat(path.string(), ": cannot open for append"));
  if (tensorboard) {
    LR_ASSIGN_OR_RETURN(logger->tb_, TensorBoardWriter::Open((fs::path(run_dir) / "tb").string()));
  }
  logger->start_time_ = Now();
  return logger;
}

MetricsLogger::~MetricsLogger() = default;

Status MetricsLogger::Log(int64_t step, int64_t total_steps, const StepMetrics& metrics) {
  nlohmann::ordered_json j;
  j["step"] = step;
  for (const auto& [k, v] : metrics) {
    if (std::isfinite(v)) {
      j[k] = v;
    } else {
      j[k] = nullptr;
    }
  }
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
  if (!jsonl_) return Unavailable("metrics.jsonl: write failed");
  if (tb_) {
    LR_RETURN_IF_ERROR(tb_->WriteScalars(step, metrics, Now()));
    LR_RETURN_IF_ERROR(tb_->Flush());
  }
  if (first_step_ < 0) first_step_ = step - 1;
  const double elapsed = Now() - start_time_;
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, step - first_step_));
  const double eta = per_step * static_cast<double>(std::max<int64_t>(0, total_steps - step));
  // The headline scalars the run has (RL: reward, accuracy, policy loss, length; SFT: its loss).
  std::string line;
  for (const auto& [key, label] : std::vector<std::pair<const char*, const char*>>{
           {"reward/mean", "reward"}, {"reward/accuracy", "acc"}, {"loss/policy", "loss"},
           {"response/length_mean", "resp_len"}, {"sft/loss", "sft_loss"}, {"sft/target_token_prob", "target_p"}}) {
    auto it = metrics.find(key);
    if (it != metrics.end()) line += fmt::format("  {} {:.4g}", label, it->second);
  }
  Logger("trainer")->info("step {}/{}{}  {:.1f}s/step  ETA {:.0f}s", step, total_steps, line, per_step, eta);
  return Status::Ok();
}

}  // namespace lightrl::trainer
