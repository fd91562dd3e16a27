// HDF5 reading/writing for checkpoints (see h5_file.h for the on-disk layout).
//
// Every public method suppresses HDF5's automatic error printing (H5Quiet) and turns a failed
// HDF5 call into a Status carrying the file, the dataset and the HDF5 error stack's message, so
// the caller (auto-resume) can log "step_12: state.h5: dataset 'model/x': ..." and move on.
#include "core/checkpoint/h5_file.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace lightrl::checkpoint {

namespace {

constexpr const char* kDtypeAttr = "lightrl_dtype";
constexpr const char* kCrcAttr = "crc32";
constexpr const char* kTextKind = "text";

// Suppresses HDF5's default error printing to stderr for the scope; errors are reported as
// Status values built from the error stack instead.
class H5Quiet {
 public:
  H5Quiet() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~H5Quiet() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The current HDF5 error stack as one line (outermost call, then the innermost cause), cleared.
std::string H5ErrorText() {
  std::vector<std::string> frames;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        auto* out = static_cast<std::vector<std::string>*>(data);
        out->push_back(StrCat(e->func_name ? e->func_name : "?", ": ", e->desc ? e->desc : ""));
        return 0;
      },
      &frames);
  H5Eclear2(H5E_DEFAULT);
  if (frames.empty()) return "HDF5 call failed";
  if (frames.size() == 1) return frames.front();
  return frames.front() + " (cause: " + frames.back() + ")";
}

// Owns an hid_t and closes it with the matching H5*close.
class Hid {
 public:
  using Closer = herr_t (*)(hid_t);
  Hid(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Hid() {
    if (id_ >= 0) closer_(id_);
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer closer_;
};

struct H5Types {
  hid_t file;    // type stored in the file (little-endian standard type)
  hid_t memory;  // native in-memory type (the same bytes on little-endian hosts)
};

H5Types TypesFor(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return {H5T_IEEE_F32LE, H5T_NATIVE_FLOAT};
    case DType::kFloat64: return {H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE};
    case DType::kBFloat16:
    case DType::kFloat16: return {H5T_STD_U16LE, H5T_NATIVE_UINT16};
    case DType::kInt64: return {H5T_STD_I64LE, H5T_NATIVE_INT64};
    case DType::kInt32: return {H5T_STD_I32LE, H5T_NATIVE_INT32};
    case DType::kInt16: return {H5T_STD_I16LE, H5T_NATIVE_INT16};
    case DType::kInt8: return {H5T_STD_I8LE, H5T_NATIVE_INT8};
    case DType::kUInt8:
    case DType::kBool: return {H5T_STD_U8LE, H5T_NATIVE_UINT8};
  }
  LR_FAIL("unknown DType ", static_cast<int>(dtype));
}

// File access: no file locking (readers must not trip over a writer's lock, h5_file.h) and
// strong close (closing the file closes every object still open in it).
StatusOr<hid_t> MakeFileAccess(const std::string& path, bool for_write) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return Internal(StrCat(path, ": H5Pcreate(FILE_ACCESS): ", H5ErrorText()));
#if H5_VERSION_GE(1, 10, 7)
  if (H5Pset_file_locking(fapl, false, true) < 0) {
    H5Pclose(fapl);
    return Internal(StrCat(path, ": H5Pset_file_locking: ", H5ErrorText()));
  }
#endif
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
  // The HDF5 1.8 file format (superblock v2, object header v2, new-style groups): its metadata
  // carries checksums, so a flipped byte in an object header or superblock fails the open/read
  // instead of silently changing a shape or a name; every HDF5 >= 1.8 (and h5py) reads it.
  // Only set for files we create; readers accept any format.
  if (for_write && H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0) {
    H5Pclose(fapl);
    return Internal(StrCat(path, ": H5Pset_libver_bounds: ", H5ErrorText()));
  }
  return fapl;
}

hid_t VariableStringType() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// Writes (replacing) a scalar attribute on `obj`.
Status WriteAttribute(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, const void* value,
                      const std::string& where) {
  if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) {
    return Internal(StrCat(where, ": cannot replace attribute '", name, "': ", H5ErrorText()));
  }
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  Hid attr(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok() || H5Awrite(attr.get(), mem_type, value) < 0) {
    return Internal(StrCat(where, ": cannot write attribute '", name, "': ", H5ErrorText()));
  }
  return Status::Ok();
}

// Strings are stored as FIXED-length (NUL-padded) attributes, inline in the object header:
// variable-length strings live in HDF5's global heap, which has no checksum, and a corrupt
// global heap can make HDF5 1.10 loop forever on read (found by the bit-flip test).
Status WriteStringAttribute(hid_t obj, const char* name, const std::string& value, const std::string& where) {
  if (value.find('\0') != std::string::npos) {
    return InvalidArgument(StrCat(where, ": attribute '", name, "' contains a NUL byte"));
  }
  Hid type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<size_t>(1, value.size()));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  return WriteAttribute(obj, name, type.get(), type.get(), padded.data(), where);
}

// Reads a string attribute (variable- or fixed-length). NOT_FOUND if absent.
StatusOr<std::string> ReadStringAttribute(hid_t obj, const char* name, const std::string& where) {
  if (H5Aexists(obj, name) <= 0) return NotFound(StrCat(where, ": no attribute '", name, "'"));
  Hid attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return DataLoss(StrCat(where, ": cannot open attribute '", name, "': ", H5ErrorText()));
  Hid ftype(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(ftype.get()) != H5T_STRING) {
    return InvalidArgument(StrCat(where, ": attribute '", name, "' is not a string"));
  }
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Hid mem(VariableStringType(), H5Tclose);
    char* p = nullptr;
    if (H5Aread(attr.get(), mem.get(), &p) < 0) {
      return DataLoss(StrCat(where, ": cannot read attribute '", name, "': ", H5ErrorText()));
    }
    std::string out = p ? p : "";
    if (p) H5free_memory(p);
    return out;
  }
  // Read with the stored type itself (same size, padding and character set: HDF5 does not
  // convert between ASCII and UTF-8).
  size_t size = H5Tget_size(ftype.get());
  Hid mem(H5Tcopy(ftype.get()), H5Tclose);
  std::string out(size, '\0');
  if (H5Aread(attr.get(), mem.get(), out.data()) < 0) {
    return DataLoss(StrCat(where, ": cannot read attribute '", name, "': ", H5ErrorText()));
  }
  out.resize(std::strlen(out.c_str()));
  return out;
}

StatusOr<uint32_t> ReadCrcAttribute(hid_t dset, const std::string& where) {
  if (H5Aexists(dset, kCrcAttr) <= 0) return DataLoss(StrCat(where, ": no '", kCrcAttr, "' attribute"));
  Hid attr(H5Aopen(dset, kCrcAttr, H5P_DEFAULT), H5Aclose);
  uint32_t crc = 0;
  if (!attr.ok() || H5Aread(attr.get(), H5T_NATIVE_UINT32, &crc) < 0) {
    return DataLoss(StrCat(where, ": cannot read attribute '", kCrcAttr, "': ", H5ErrorText()));
  }
  return crc;
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

Status CheckCrc(uint32_t stored, const void* data, size_t size, const std::string& where) {
  uint32_t computed = Crc32(data, size);
  if (computed != stored) {
    return DataLoss(StrCat(where, ": checksum mismatch (stored crc32 ", Hex(stored), ", computed ", Hex(computed),
                           "): the data is corrupt"));
  }
  return Status::Ok();
}

std::string StripSlash(const std::string& name) {
  size_t i = 0;
  while (i < name.size() && name[i] == '/') ++i;
  return name.substr(i);
}

// True if `name` (a/b/c) names a dataset. H5Lexists needs each parent to exist, so walk down.
bool IsDataset(hid_t file, const std::string& name) {
  std::string path;
  size_t start = 0;
  while (true) {
    size_t slash = name.find('/', start);
    path = name.substr(0, slash);
    if (path.empty() || H5Lexists(file, path.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  Hid obj(H5Oopen(file, name.c_str(), H5P_DEFAULT), H5Oclose);
  return obj.ok() && H5Iget_type(obj.get()) == H5I_DATASET;
}

}  // namespace

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  constexpr size_t kChunk = size_t{1} << 30;  // zlib's length is a uInt
  while (size > 0) {
    size_t n = std::min(size, kChunk);
    c = crc32(c, p, static_cast<uInt>(n));
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t TensorInfo::bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// ---- H5Writer -------------------------------------------------------------------------------

H5Writer::H5Writer(std::string path, int64_t file) : path_(std::move(path)), file_(file) {}

H5Writer::~H5Writer() {
  if (file_ >= 0) {
    H5Quiet quiet;
    H5Fclose(static_cast<hid_t>(file_));
  }
}

StatusOr<std::unique_ptr<H5Writer>> H5Writer::Create(const std::string& path) {
  H5Quiet quiet;
  LR_ASSIGN_OR_RETURN(hid_t fapl_id, MakeFileAccess(path, /*for_write=*/true));
  Hid fapl(fapl_id, H5Pclose);
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (file < 0) return Unavailable(StrCat(path, ": cannot create HDF5 file: ", H5ErrorText()));
  return std::unique_ptr<H5Writer>(new H5Writer(path, file));
}

// One contiguous dataset with its @lightrl_dtype (`kind`) and @crc32 attributes.
static Status WriteDataset(hid_t file, const std::string& path, const std::string& raw_name, DType dtype,
                    const std::vector<int64_t>& shape, const void* data, const std::string& kind) {
  const std::string name = StripSlash(raw_name);
  const std::string where = StrCat(path, ": dataset '", name, "'");
  if (file < 0) return FailedPrecondition(where + ": writer already closed");
  if (name.empty()) return InvalidArgument(where + ": empty dataset name");
  TensorInfo info{dtype, shape};
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument(StrCat(where, ": negative dimension in shape ", ShapeString(shape)));
  }
  if (info.numel() > 0 && data == nullptr) return InvalidArgument(where + ": null data for a non-empty tensor");
  const H5Types types = TypesFor(dtype);
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Hid space(shape.empty() ? H5Screate(H5S_SCALAR)
                          : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
            H5Sclose);
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Hid dset(H5Dcreate2(file, name.c_str(), types.file, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) return Internal(StrCat(where, ": cannot create: ", H5ErrorText()));
  if (info.numel() > 0 && H5Dwrite(dset.get(), types.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    return Unavailable(StrCat(where, ": write failed: ", H5ErrorText()));
  }
  LR_RETURN_IF_ERROR(WriteStringAttribute(dset.get(), kDtypeAttr, kind, where));
  const uint32_t crc = info.numel() > 0 ? Crc32(data, info.bytes()) : Crc32(nullptr, 0);
  return WriteAttribute(dset.get(), kCrcAttr, H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc, where);
}

Status H5Writer::WriteTensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                             const void* data) {
  H5Quiet quiet;
  return WriteDataset(static_cast<hid_t>(file_), path_, name, dtype, shape, data, DTypeName(dtype));
}

Status H5Writer::WriteText(const std::string& name, const std::string& text) {
  H5Quiet quiet;
  return WriteDataset(static_cast<hid_t>(file_), path_, name, DType::kUInt8, {static_cast<int64_t>(text.size())},
                      text.data(), kTextKind);
}

Status H5Writer::SetAttribute(const std::string& name, int64_t value) {
  H5Quiet quiet;
  if (file_ < 0) return FailedPrecondition(path_ + ": writer already closed");
  return WriteAttribute(static_cast<hid_t>(file_), name.c_str(), H5T_STD_I64LE, H5T_NATIVE_INT64, &value, path_);
}

Status H5Writer::SetAttribute(const std::string& name, const std::string& value) {
  H5Quiet quiet;
  if (file_ < 0) return FailedPrecondition(path_ + ": writer already closed");
  return WriteStringAttribute(static_cast<hid_t>(file_), name.c_str(), value, path_);
}

Status H5Writer::Close() {
  H5Quiet quiet;
  if (file_ < 0) return FailedPrecondition(path_ + ": writer already closed");
  const hid_t file = static_cast<hid_t>(file_);
  file_ = -1;
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
    std::string err = H5ErrorText();
    H5Fclose(file);
    return Unavailable(StrCat(path_, ": flush failed: ", err));
  }
  if (H5Fclose(file) < 0) return Unavailable(StrCat(path_, ": close failed: ", H5ErrorText()));
  // HDF5 does not fsync; the checkpoint protocol needs the bytes durable before the rename.
  int fd = ::open(path_.c_str(), O_RDONLY);
  if (fd < 0) return Unavailable(StrCat(path_, ": cannot reopen for fsync: ", std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Unavailable(StrCat(path_, ": fsync failed: ", std::strerror(err)));
  return Status::Ok();
}

// ---- H5Reader -------------------------------------------------------------------------------

H5Reader::H5Reader(std::string path, int64_t file) : path_(std::move(path)), file_(file) {}

H5Reader::~H5Reader() {
  if (file_ >= 0) {
    H5Quiet quiet;
    H5Fclose(static_cast<hid_t>(file_));
  }
}

StatusOr<std::unique_ptr<H5Reader>> H5Reader::Open(const std::string& path) {
  H5Quiet quiet;
  if (::access(path.c_str(), R_OK) != 0) return NotFound(StrCat(path, ": cannot read: ", std::strerror(errno)));
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return DataLoss(StrCat(path, ": not an HDF5 file (no HDF5 superblock)"));
  }
  LR_ASSIGN_OR_RETURN(hid_t fapl_id, MakeFileAccess(path, /*for_write=*/false));
  Hid fapl(fapl_id, H5Pclose);
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (file < 0) return DataLoss(StrCat(path, ": cannot open HDF5 file (truncated or corrupt?): ", H5ErrorText()));
  return std::unique_ptr<H5Reader>(new H5Reader(path, file));
}

bool H5Reader::Has(const std::string& name) const {
  H5Quiet quiet;
  bool found = IsDataset(static_cast<hid_t>(file_), StripSlash(name));
  H5Eclear2(H5E_DEFAULT);
  return found;
}

StatusOr<std::vector<DatasetEntry>> H5Reader::List() const {
  H5Quiet quiet;
  std::vector<std::string> names;
#if H5_VERSION_GE(1, 12, 0)
  auto visit = [](hid_t group, const char* name, const H5L_info2_t* link, void* data) -> herr_t {
#else
  auto visit = [](hid_t group, const char* name, const H5L_info_t* link, void* data) -> herr_t {
#endif
    if (link->type != H5L_TYPE_HARD) return 0;
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) return -1;
    bool is_dataset = H5Iget_type(obj) == H5I_DATASET;
    H5Oclose(obj);
    if (is_dataset) static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  if (H5Lvisit(static_cast<hid_t>(file_), H5_INDEX_NAME, H5_ITER_INC, visit, &names) < 0) {
    return DataLoss(StrCat(path_, ": cannot list datasets: ", H5ErrorText()));
  }
  std::sort(names.begin(), names.end());
  std::vector<DatasetEntry> out;
  for (const auto& name : names) {
    DatasetEntry e;
    e.name = name;
    Hid dset(H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!dset.ok()) return DataLoss(StrCat(path_, ": dataset '", name, "': cannot open: ", H5ErrorText()));
    auto kind = ReadStringAttribute(dset.get(), kDtypeAttr, StrCat(path_, ": dataset '", name, "'"));
    if (!kind.ok()) return kind.status();
    if (*kind == kTextKind) {
      e.is_text = true;
    } else {
      LR_ASSIGN_OR_RETURN(e.info, Info(name));
    }
    out.push_back(std::move(e));
  }
  return out;
}

StatusOr<TensorInfo> H5Reader::Info(const std::string& raw_name) const {
  H5Quiet quiet;
  const std::string name = StripSlash(raw_name);
  const std::string where = StrCat(path_, ": dataset '", name, "'");
  if (!IsDataset(static_cast<hid_t>(file_), name)) {
    H5Eclear2(H5E_DEFAULT);
    return NotFound(where + ": missing");
  }
  Hid dset(H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) return DataLoss(StrCat(where, ": cannot open: ", H5ErrorText()));
  LR_ASSIGN_OR_RETURN(std::string dtype_name, ReadStringAttribute(dset.get(), kDtypeAttr, where));
  if (dtype_name == kTextKind) return InvalidArgument(where + ": is a text dataset, expected a tensor");
  auto dtype = DTypeFromName(dtype_name);
  if (!dtype) {
    return DataLoss(StrCat(where, ": unknown ", kDtypeAttr, " '", dtype_name, "' (expected one of ", DTypeNames(),
                           ")"));
  }
  Hid ftype(H5Dget_type(dset.get()), H5Tclose);
  if (H5Tequal(ftype.get(), TypesFor(*dtype).file) <= 0) {
    return DataLoss(StrCat(where, ": stored HDF5 type does not match ", kDtypeAttr, "=", dtype_name));
  }
  Hid space(H5Dget_space(dset.get()), H5Sclose);
  TensorInfo info;
  info.dtype = *dtype;
  H5S_class_t cls = H5Sget_simple_extent_type(space.get());
  if (cls == H5S_SIMPLE) {
    int rank = H5Sget_simple_extent_ndims(space.get());
    std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
    if (rank < 0 || H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) {
      return DataLoss(StrCat(where, ": cannot read the dataspace: ", H5ErrorText()));
    }
    info.shape.assign(dims.begin(), dims.end());
  } else if (cls != H5S_SCALAR) {
    return DataLoss(where + ": unexpected dataspace (expected scalar or simple)");
  }
  return info;
}

Status H5Reader::ReadTensorInto(const std::string& raw_name, const TensorInfo& info, void* dst) const {
  H5Quiet quiet;
  const std::string name = StripSlash(raw_name);
  const std::string where = StrCat(path_, ": dataset '", name, "'");
  LR_ASSIGN_OR_RETURN(TensorInfo stored, Info(name));
  if (stored.dtype != info.dtype || stored.shape != info.shape) {
    return InvalidArgument(StrCat(where, ": holds ", DTypeName(stored.dtype), " ", ShapeString(stored.shape),
                                  ", the caller expected ", DTypeName(info.dtype), " ", ShapeString(info.shape)));
  }
  Hid dset(H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) return DataLoss(StrCat(where, ": cannot open: ", H5ErrorText()));
  LR_ASSIGN_OR_RETURN(uint32_t crc, ReadCrcAttribute(dset.get(), where));
  if (info.numel() > 0 &&
      H5Dread(dset.get(), TypesFor(info.dtype).memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
    return DataLoss(StrCat(where, ": read failed: ", H5ErrorText()));
  }
  return CheckCrc(crc, dst, info.numel() > 0 ? info.bytes() : 0, where);
}

StatusOr<TensorData> H5Reader::ReadTensor(const std::string& name) const {
  TensorData out;
  LR_ASSIGN_OR_RETURN(out.info, Info(name));
  out.bytes.resize(out.info.bytes());
  LR_RETURN_IF_ERROR(ReadTensorInto(name, out.info, out.bytes.data()));
  return out;
}

StatusOr<std::string> H5Reader::ReadText(const std::string& raw_name) const {
  H5Quiet quiet;
  const std::string name = StripSlash(raw_name);
  const std::string where = StrCat(path_, ": dataset '", name, "'");
  if (!IsDataset(static_cast<hid_t>(file_), name)) {
    H5Eclear2(H5E_DEFAULT);
    return NotFound(where + ": missing");
  }
  Hid dset(H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) return DataLoss(StrCat(where, ": cannot open: ", H5ErrorText()));
  LR_ASSIGN_OR_RETURN(std::string kind, ReadStringAttribute(dset.get(), kDtypeAttr, where));
  if (kind != kTextKind) return InvalidArgument(StrCat(where, ": is a ", kind, " tensor, expected text"));
  LR_ASSIGN_OR_RETURN(uint32_t crc, ReadCrcAttribute(dset.get(), where));
  Hid ftype(H5Dget_type(dset.get()), H5Tclose);
  Hid space(H5Dget_space(dset.get()), H5Sclose);
  hsize_t n = 0;
  if (H5Tequal(ftype.get(), H5T_STD_U8LE) <= 0 || H5Sget_simple_extent_ndims(space.get()) != 1 ||
      H5Sget_simple_extent_dims(space.get(), &n, nullptr) < 0) {
    return DataLoss(where + ": expected text stored as a 1-d uint8 dataset");
  }
  std::string text(static_cast<size_t>(n), '\0');
  if (n > 0 && H5Dread(dset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data()) < 0) {
    return DataLoss(StrCat(where, ": read failed: ", H5ErrorText()));
  }
  LR_RETURN_IF_ERROR(CheckCrc(crc, text.data(), text.size(), where));
  return text;
}

StatusOr<int64_t> H5Reader::IntAttribute(const std::string& name) const {
  H5Quiet quiet;
  const hid_t file = static_cast<hid_t>(file_);
  if (H5Aexists(file, name.c_str()) <= 0) return NotFound(StrCat(path_, ": no root attribute '", name, "'"));
  Hid attr(H5Aopen(file, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return DataLoss(StrCat(path_, ": cannot open attribute '", name, "': ", H5ErrorText()));
  Hid ftype(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER) {
    return InvalidArgument(StrCat(path_, ": root attribute '", name, "' is not an integer"));
  }
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
    return DataLoss(StrCat(path_, ": cannot read attribute '", name, "': ", H5ErrorText()));
  }
  return value;
}

StatusOr<std::string> H5Reader::StringAttribute(const std::string& name) const {
  H5Quiet quiet;
  return ReadStringAttribute(static_cast<hid_t>(file_), name.c_str(), path_);
}

StatusOr<std::map<std::string, std::string>> H5Reader::Attributes() const {
  H5Quiet quiet;
  std::vector<std::string> names;
  hsize_t idx = 0;
  auto collect = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  if (H5Aiterate2(static_cast<hid_t>(file_), H5_INDEX_NAME, H5_ITER_INC, &idx, collect, &names) < 0) {
    return DataLoss(StrCat(path_, ": cannot list root attributes: ", H5ErrorText()));
  }
  std::map<std::string, std::string> out;
  for (const auto& name : names) {
    auto as_int = IntAttribute(name);
    if (as_int.ok()) {
      out[name] = std::to_string(*as_int);
      continue;
    }
    auto as_string = StringAttribute(name);
    out[name] = as_string.ok() ? *as_string : "<" + as_string.status().ToString() + ">";
  }
  return out;
}

std::vector<std::string> H5Reader::Verify() const {
  std::vector<std::string> problems;
  auto entries = List();
  if (!entries.ok()) return {entries.status().ToString()};
  for (const auto& e : *entries) {
    Status s = e.is_text ? ReadText(e.name).status() : ReadTensor(e.name).status();
    if (!s.ok()) problems.push_back(StrCat(e.name, ": ", s.ToString()));
  }
  return problems;
}

}  // namespace lightrl::checkpoint
