// Tests of core/checkpoint (HDF5 tensor files with checksums, atomic step directories).
// Oracles: hand-written values, the published CRC-32 check value, byte-level corruption of the
// file at the offset HDF5 reports for the dataset, and h5dump (an independent HDF5 reader).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/checkpoint/h5_file.h"
#include "core/checkpoint/step_dir.h"
#include "tests/checkpoint/h5_offsets.h"
#include "tests/util/files.h"
#include "tests/util/job_util.h"

namespace lightrl::checkpoint {
namespace {

namespace fs = std::filesystem;
using lightrl::testing::DatasetOffset;

struct TempDir : lightrl::testing::TempDir {
  TempDir() : lightrl::testing::TempDir("lightrl_h5_test") {}
};

void FlipBit(const std::string& file, int64_t offset, int bit) {
  lightrl::testing::XorByte(file, offset, static_cast<unsigned char>(1u << bit));
}





TEST(Crc32Test, MatchesTheStandardCheckValue) {
  // The CRC-32 (ISO-HDLC, zlib) check value of "123456789" is 0xCBF43926.
  const char* s = "123456789";
  EXPECT_EQ(Crc32(s, 9), 0xCBF43926u);
  // Chained calls equal one call.
  EXPECT_EQ(Crc32(s + 4, 5, Crc32(s, 4)), 0xCBF43926u);
  EXPECT_EQ(Crc32(nullptr, 0), 0u);
}

TEST(H5FileTest, RoundTripsEveryDtypeShapeTextAndAttribute) {
  TempDir dir;
  const std::string path = dir / "t.h5";
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, 1e-30f, -7.0f};        // [2, 3]
  const std::vector<double> f64 = {3.141592653589793};                            // []
  const std::vector<int64_t> i64 = {INT64_MIN, -1, INT64_MAX};                    // [3]
  const std::vector<int32_t> i32 = {7, -8};                                       // [2, 1]
  const std::vector<int16_t> i16 = {-32768, 32767};                               // [2]
  const std::vector<int8_t> i8 = {-128, 127, 0};                                  // [3]
  const std::vector<uint8_t> u8 = {0, 255, 17, 42};                               // [4]
  const std::vector<uint8_t> b = {1, 0, 1};                                       // [3] bool
  const std::vector<uint16_t> bf16 = {0x3f80, 0xbf80};                            // [2] = {1, -1}
  const std::vector<uint16_t> f16 = {0x3c00};                                     // [1] = {1}
  const std::string text = "{\"epoch\": 2, \"position\": 17}\nsecond line: ünïcode";
  {
    auto w = H5Writer::Create(path);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->WriteTensor("model/model.layers.0.w.weight", DType::kFloat32, {2, 3}, f32.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("f64", DType::kFloat64, {}, f64.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("ints/i64", DType::kInt64, {3}, i64.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("ints/i32", DType::kInt32, {2, 1}, i32.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("ints/i16", DType::kInt16, {2}, i16.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("ints/i8", DType::kInt8, {3}, i8.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("u8", DType::kUInt8, {4}, u8.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("b", DType::kBool, {3}, b.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("half/bf16", DType::kBFloat16, {2}, bf16.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("half/f16", DType::kFloat16, {1}, f16.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("empty", DType::kFloat32, {0, 4}, nullptr).ok());
    ASSERT_TRUE((*w)->WriteText("json/cursor", text).ok());
    ASSERT_TRUE((*w)->WriteText("json/empty", "").ok());
    ASSERT_TRUE((*w)->SetAttribute("format_version", int64_t{1}).ok());
    ASSERT_TRUE((*w)->SetAttribute("step", int64_t{-5}).ok());
    ASSERT_TRUE((*w)->SetAttribute("step", int64_t{12}).ok());  // overwrite
    ASSERT_TRUE((*w)->SetAttribute("git_commit", std::string("abc123")).ok());
    // A duplicate dataset is refused, naming it.
    Status dup = (*w)->WriteTensor("u8", DType::kUInt8, {4}, u8.data());
    EXPECT_FALSE(dup.ok());
    EXPECT_NE(dup.message().find("'u8'"), std::string::npos) << dup;
    ASSERT_TRUE((*w)->Close().ok());
  }
  auto r = H5Reader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  auto check = [&](const std::string& name, DType dtype, std::vector<int64_t> shape, const void* expected,
                   size_t bytes) {
    auto t = (*r)->ReadTensor(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->info.dtype, dtype) << name;
    EXPECT_EQ(t->info.shape, shape) << name;
    ASSERT_EQ(t->bytes.size(), bytes) << name;
    EXPECT_EQ(std::memcmp(t->bytes.data(), expected, bytes), 0) << name;
  };
  check("model/model.layers.0.w.weight", DType::kFloat32, {2, 3}, f32.data(), 24);
  check("f64", DType::kFloat64, {}, f64.data(), 8);
  check("ints/i64", DType::kInt64, {3}, i64.data(), 24);
  check("ints/i32", DType::kInt32, {2, 1}, i32.data(), 8);
  check("ints/i16", DType::kInt16, {2}, i16.data(), 4);
  check("ints/i8", DType::kInt8, {3}, i8.data(), 3);
  check("u8", DType::kUInt8, {4}, u8.data(), 4);
  check("b", DType::kBool, {3}, b.data(), 3);
  check("half/bf16", DType::kBFloat16, {2}, bf16.data(), 4);
  check("half/f16", DType::kFloat16, {1}, f16.data(), 2);
  check("empty", DType::kFloat32, {0, 4}, nullptr, 0);
  EXPECT_EQ(*(*r)->ReadText("json/cursor"), text);
  EXPECT_EQ(*(*r)->ReadText("json/empty"), "");
  EXPECT_EQ(*(*r)->IntAttribute("format_version"), 1);
  EXPECT_EQ(*(*r)->IntAttribute("step"), 12);
  EXPECT_EQ(*(*r)->StringAttribute("git_commit"), "abc123");
  EXPECT_EQ((*r)->IntAttribute("missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*r)->IntAttribute("git_commit").status().code(), StatusCode::kInvalidArgument);
  auto attrs = (*r)->Attributes();
  ASSERT_TRUE(attrs.ok());
  EXPECT_EQ(attrs->at("step"), "12");
  EXPECT_EQ(attrs->at("git_commit"), "abc123");

  auto list = (*r)->List();
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> names;
  for (const auto& e : *list) names.push_back(e.name);
  const std::vector<std::string> expected = {"b",        "empty",    "f64",       "half/bf16",
                                             "half/f16", "ints/i16", "ints/i32",  "ints/i64",
                                             "ints/i8",  "json/cursor", "json/empty", "model/model.layers.0.w.weight",
                                             "u8"};
  EXPECT_EQ(names, expected);
  EXPECT_TRUE((*r)->Has("ints/i64"));
  EXPECT_TRUE((*r)->Has("/ints/i64"));
  EXPECT_FALSE((*r)->Has("ints"));  // a group, not a dataset
  EXPECT_FALSE((*r)->Has("nope/deeper"));
  EXPECT_TRUE((*r)->Verify().empty());
  // Reading with the wrong kind names the dataset.
  EXPECT_EQ((*r)->ReadText("u8").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->ReadTensor("json/cursor").status().code(), StatusCode::kInvalidArgument);
  auto missing = (*r)->ReadTensor("model/nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("model/nope"), std::string::npos);
}

TEST(H5FileTest, StandardToolsReadTheFile) {
  // h5dump (hdf5-tools) is an independent reader: it must see our types and values.
  TempDir dir;
  const std::string path = dir / "t.h5";
  const std::vector<float> v = {0.5f, 2.0f};
  {
    auto w = H5Writer::Create(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->WriteTensor("model/lm_head.weight", DType::kFloat32, {1, 2}, v.data()).ok());
    ASSERT_TRUE((*w)->WriteText("config_yaml", "model:\n  hidden_size: 8\n").ok());
    ASSERT_TRUE((*w)->SetAttribute("format_version", int64_t{1}).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  const std::string out = lightrl::testing::RunCommand("h5dump " + path).output;
  EXPECT_NE(out.find("DATASET \"lm_head.weight\""), std::string::npos) << out;
  EXPECT_NE(out.find("H5T_IEEE_F32LE"), std::string::npos) << out;
  EXPECT_NE(out.find("0.5, 2"), std::string::npos) << out;
  EXPECT_NE(out.find("ATTRIBUTE \"crc32\""), std::string::npos) << out;
  EXPECT_NE(out.find("ATTRIBUTE \"format_version\""), std::string::npos) << out;
  EXPECT_NE(out.find("DATASET \"config_yaml\""), std::string::npos) << out;
  EXPECT_NE(out.find("H5T_STD_U8LE"), std::string::npos) << out;     // text as bytes
  EXPECT_NE(out.find("\"float32\""), std::string::npos) << out;      // @lightrl_dtype
  EXPECT_NE(out.find("\"text\""), std::string::npos) << out;
  EXPECT_EQ(out.find("H5T_VARIABLE"), std::string::npos) << out;     // no global-heap strings
}

TEST(H5FileTest, BitFlipInADatasetIsDetectedAndNamed) {
  TempDir dir;
  const std::string path = dir / "t.h5";
  std::vector<float> a(64), b(64);
  for (int i = 0; i < 64; ++i) {
    a[i] = 0.25f * i;
    b[i] = -1.0f * i;
  }
  {
    auto w = H5Writer::Create(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->WriteTensor("model/a", DType::kFloat32, {8, 8}, a.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("model/b", DType::kFloat32, {64}, b.data()).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  const int64_t off = DatasetOffset(path, "model/b");
  ASSERT_GT(off, 0);
  FlipBit(path, off + 4 * 10 + 1, 3);  // inside element 10 of model/b
  auto r = H5Reader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->ReadTensor("model/a").ok());
  auto bad = (*r)->ReadTensor("model/b");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("'model/b'"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("checksum mismatch"), std::string::npos) << bad.status();
  auto problems = (*r)->Verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].rfind("model/b: ", 0), 0u) << problems[0];
}

// What a reader sees of a file: every dataset's bytes/text and the int attributes (the parts a
// checkpoint relies on; string attributes are informational and live in the unchecksummed
// global heap). Empty string = the file was rejected (open failed or Verify found a problem).
std::string Snapshot(const std::string& path) {
  auto r = H5Reader::Open(path);
  if (!r.ok() || !(*r)->Verify().empty()) return "";
  auto list = (*r)->List();
  if (!list.ok()) return "";
  std::string out;
  for (const auto& e : *list) {
    out += e.name + "\n";
    if (e.is_text) {
      out += *(*r)->ReadText(e.name) + "\n";
    } else {
      auto t = (*r)->ReadTensor(e.name);
      out += std::string(DTypeName(t->info.dtype)) + ShapeString(t->info.shape);
      out.append(reinterpret_cast<const char*>(t->bytes.data()), t->bytes.size());
    }
  }
  for (const char* attr : {"format_version", "step"}) {
    auto v = (*r)->IntAttribute(attr);
    out += std::string(attr) + "=" + (v.ok() ? std::to_string(*v) : v.status().ToString()) + "\n";
  }
  return out;
}

TEST(H5FileTest, NoSingleBitFlipAnywhereChangesWhatIsReadSilently) {
  // Flip one bit in every byte of a small file, one byte at a time: the reader must either
  // reject the file (checksums of the data, HDF5's metadata checksums of the 1.8 format) or read
  // back exactly the original content (the byte was unused). Never a silent change.
  TempDir dir;
  const std::string path = dir / "t.h5";
  std::vector<float> a(16);
  std::vector<int64_t> b = {1, 2, 3};
  for (int i = 0; i < 16; ++i) a[i] = 0.5f * i - 3.0f;
  {
    auto w = H5Writer::Create(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->SetAttribute("format_version", int64_t{1}).ok());
    ASSERT_TRUE((*w)->SetAttribute("step", int64_t{42}).ok());
    ASSERT_TRUE((*w)->WriteTensor("model/a", DType::kFloat32, {4, 4}, a.data()).ok());
    ASSERT_TRUE((*w)->WriteTensor("optimizer/exp_avg/b", DType::kInt64, {3}, b.data()).ok());
    ASSERT_TRUE((*w)->WriteText("counters", "{\"step\": 42}").ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  const std::string original = Snapshot(path);
  ASSERT_FALSE(original.empty());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  const std::string copy = dir / "flipped.h5";
  int rejected = 0, silent = 0;
  for (size_t off = 0; off < bytes.size(); ++off) {
    std::string flipped = bytes;
    flipped[off] = static_cast<char>(flipped[off] ^ (1 << (off % 8)));
    std::ofstream(copy, std::ios::binary | std::ios::trunc) << flipped;
    const std::string seen = Snapshot(copy);
    if (seen.empty()) {
      ++rejected;
    } else if (seen != original) {
      ++silent;
      ADD_FAILURE() << "a flip at byte " << off << " of " << bytes.size() << " changed the content silently";
      if (silent > 5) break;
    }
  }
  EXPECT_EQ(silent, 0);
  EXPECT_GT(rejected, 0);
}

TEST(H5FileTest, TruncatedFileFailsToOpenWithItsName) {
  TempDir dir;
  const std::string path = dir / "t.h5";
  std::vector<float> a(4096, 1.0f);
  {
    auto w = H5Writer::Create(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->WriteTensor("model/a", DType::kFloat32, {4096}, a.data()).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  fs::resize_file(path, fs::file_size(path) / 2);
  auto r = H5Reader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status();

  std::ofstream(dir / "garbage.h5") << "not hdf5";
  auto g = H5Reader::Open(dir / "garbage.h5");
  EXPECT_EQ(g.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(H5Reader::Open(dir / "absent.h5").status().code(), StatusCode::kNotFound);
}

TEST(H5FileTest, ReaderIsNotBlockedByAWritersLock) {
  // A child process holds the file open for writing (HDF5 >= 1.10.7 flocks files it opens).
  // Our reader disables locking, so whatever it sees (possibly an unflushed file) is not a
  // lock error, and after the writer's Close() the file is complete.
  TempDir dir;
  const std::string path = dir / "t.h5";
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto w = H5Writer::Create(path);
    const int32_t v = 5;
    bool ok = w.ok() && (*w)->WriteTensor("x", DType::kInt32, {1}, &v).ok();
    char c = ok ? 'y' : 'n';
    (void)!write(to_parent[1], &c, 1);
    (void)!read(to_child[0], &c, 1);  // hold the file until the parent is done
    _exit(ok && (*w)->Close().ok() ? 0 : 1);
  }
  char c = 0;
  ASSERT_EQ(read(to_parent[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto r = H5Reader::Open(path);
  if (!r.ok()) EXPECT_EQ(r.status().message().find("lock"), std::string::npos) << r.status();
  r = StatusOr<std::unique_ptr<H5Reader>>(Internal("released"));
  (void)!write(to_child[1], &c, 1);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  auto r2 = H5Reader::Open(path);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_TRUE((*r2)->Verify().empty());
}

// ---- step directories --------------------------------------------------------------------

void WritePayload(const std::string& dir, const std::string& content) {
  std::ofstream(fs::path(dir) / "state.h5") << content;
}

TEST(StepDirTest, CommitWritesMarkerRenamesAndPointsLatest) {
  TempDir root;
  auto tmp = BeginStepDir(root.path(), 7);
  ASSERT_TRUE(tmp.ok()) << tmp.status();
  EXPECT_EQ(fs::path(*tmp).filename(), "step_7.tmp");
  WritePayload(*tmp, "0123456789");
  // Before the commit, nothing is listed: a crash here leaves only the .tmp dir.
  EXPECT_TRUE(ListStepDirs(root.path())->empty());
  ASSERT_TRUE(CommitStepDir(root.path(), 7, *tmp).ok());
  EXPECT_FALSE(fs::exists(*tmp));
  auto dirs = ListStepDirs(root.path());
  ASSERT_EQ(dirs->size(), 1u);
  EXPECT_EQ((*dirs)[0].step, 7);
  EXPECT_TRUE(CheckStepDirComplete((*dirs)[0].path).ok());
  EXPECT_EQ(*ReadLatestPointer(root.path()), root / "step_7");
  std::ifstream marker(root / "step_7/COMPLETE");
  std::stringstream ss;
  ss << marker.rdbuf();
  EXPECT_NE(ss.str().find("\"state.h5\": 10"), std::string::npos) << ss.str();

  // Re-saving the same step replaces it.
  tmp = BeginStepDir(root.path(), 7);
  WritePayload(*tmp, "abc");
  ASSERT_TRUE(CommitStepDir(root.path(), 7, *tmp).ok());
  EXPECT_EQ(fs::file_size(root / "step_7/state.h5"), 3u);
  EXPECT_TRUE(CheckStepDirComplete(root / "step_7").ok());
}

TEST(StepDirTest, MissingMarkerTruncationAndWrongStepAreDataLoss) {
  TempDir root;
  fs::create_directories(root / "step_3");
  WritePayload(root / "step_3", "xx");
  Status s = CheckStepDirComplete(root / "step_3");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("COMPLETE"), std::string::npos) << s;

  auto tmp = BeginStepDir(root.path(), 4);
  WritePayload(*tmp, "0123456789");
  ASSERT_TRUE(CommitStepDir(root.path(), 4, *tmp).ok());
  fs::resize_file(root / "step_4/state.h5", 5);
  s = CheckStepDirComplete(root / "step_4");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("state.h5"), std::string::npos) << s;
  EXPECT_NE(s.message().find("5 bytes"), std::string::npos) << s;

  fs::rename(root / "step_4", root / "step_5");
  s = CheckStepDirComplete(root / "step_5");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("step 4"), std::string::npos) << s;
}

TEST(StepDirTest, ListIgnoresTmpAndOtherNamesAndSortsNumerically) {
  TempDir root;
  for (const char* name : {"step_10", "step_9", "step_100", "step_11.tmp", "step_x", "stepp_1", "step_"}) {
    fs::create_directories(root / name);
  }
  std::ofstream(root / "step_12") << "a file, not a dir";
  auto dirs = ListStepDirs(root.path());
  ASSERT_TRUE(dirs.ok());
  std::vector<int64_t> steps;
  for (const auto& d : *dirs) steps.push_back(d.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{9, 10, 100}));
  EXPECT_TRUE(ListStepDirs(root / "missing")->empty());
}

TEST(StepDirTest, PruneKeepsTheNewestAndRemovesTmpDirs) {
  TempDir root;
  for (int step : {2, 4, 6, 8, 10}) {
    auto tmp = BeginStepDir(root.path(), step);
    WritePayload(*tmp, "x");
    ASSERT_TRUE(CommitStepDir(root.path(), step, *tmp).ok());
  }
  fs::create_directories(root / "step_12.tmp");
  auto removed = PruneStepDirs(root.path(), 2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->size(), 4u);  // step_12.tmp, step_2, step_4, step_6
  auto left = ListStepDirs(root.path());
  ASSERT_TRUE(left.ok());
  std::vector<int64_t> steps;
  for (const auto& d : *left) steps.push_back(d.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{8, 10}));
  EXPECT_FALSE(fs::exists(root / "step_12.tmp"));
  // keep_last <= 0 keeps everything.
  EXPECT_TRUE(PruneStepDirs(root.path(), 0)->empty());
  EXPECT_EQ(ListStepDirs(root.path())->size(), 2u);
}

TEST(StepDirTest, WriteFileAtomicLeavesNoTemporary) {
  TempDir root;
  ASSERT_TRUE(WriteFileAtomic(root / "latest", "step_1\n").ok());
  ASSERT_TRUE(WriteFileAtomic(root / "latest", "step_2\n").ok());
  EXPECT_EQ(*ReadLatestPointer(root.path()), root / "step_2");
  EXPECT_FALSE(fs::exists(root / "latest.tmp"));
  std::ofstream(root / "latest") << "garbage";
  EXPECT_EQ(ReadLatestPointer(root.path()).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lightrl::checkpoint
