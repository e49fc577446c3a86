// The part of the DLPack ABI (https://dmlc.github.io/dlpack/latest/) the extension
// produces: an unversioned DLManagedTensor in a "dltensor" capsule, which
// torch.from_dlpack accepts. Only the fields and codes used here are declared.
#pragma once

#include <cstdint>

namespace vattention::dlpack {

enum DeviceType : int32_t { kDLCUDA = 2 };
enum DataTypeCode : uint8_t { kDLUInt = 1 };

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};

struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

}  // namespace vattention::dlpack
