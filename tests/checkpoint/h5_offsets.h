// File offset of a contiguous HDF5 dataset's data, from HDF5 itself, so a corruption test hits
// the data rather than metadata. -1 if the dataset has no contiguous storage.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>

namespace lightrl::testing {

inline int64_t DatasetOffset(const std::string& file, const std::string& name) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  haddr_t off = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  return off == HADDR_UNDEF ? -1 : static_cast<int64_t>(off);
}

}  // namespace lightrl::testing
