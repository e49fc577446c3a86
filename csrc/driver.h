// The CUDA driver entry points the extension uses, resolved at run time.
//
// Loading libcuda with dlopen instead of linking it lets the extension build where only
// the toolkit headers exist (no driver, no stub library) and import where no driver is
// installed; the driver is needed only when a Space is created.
#pragma once

#include <cuda.h>

#include <stdexcept>
#include <string>

namespace vattention {

#define VATTN_DRIVER_FUNCS(X)            \
  X(cuInit)                              \
  X(cuGetErrorName)                      \
  X(cuDeviceGet)                         \
  X(cuDevicePrimaryCtxRetain)            \
  X(cuDevicePrimaryCtxRelease)           \
  X(cuCtxPushCurrent)                    \
  X(cuCtxPopCurrent)                     \
  X(cuCtxSynchronize)                    \
  X(cuMemGetAllocationGranularity)       \
  X(cuMemCreate)                         \
  X(cuMemRelease)                        \
  X(cuMemAddressReserve)                 \
  X(cuMemAddressFree)                    \
  X(cuMemMap)                            \
  X(cuMemUnmap)                          \
  X(cuMemSetAccess)

// A failed driver call: which call, and the driver's name for the error.
struct DriverFailure : std::runtime_error {
  DriverFailure(std::string call, std::string name, int code);
  std::string call;
  std::string name;
  int code;
};

// Misuse of a Space (double mapping, closed space, exhausted pool): a caller's bug.
struct UsageError : std::logic_error {
  using std::logic_error::logic_error;
};

class Driver {
 public:
  Driver();  // throws std::runtime_error when libcuda cannot be loaded
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // Throws DriverFailure unless result is CUDA_SUCCESS.
  void check(CUresult result, const char* call) const;

  // cuda.h renames some entry points to versioned symbols with macros (e.g.
  // cuCtxPushCurrent -> cuCtxPushCurrent_v2); the members follow the same renaming, so
  // callers write the plain names.
#define VATTN_DECLARE(f) decltype(&::f) f = nullptr;
  VATTN_DRIVER_FUNCS(VATTN_DECLARE)
#undef VATTN_DECLARE

 private:
  void* lib_ = nullptr;
};

// Pushes a context on the calling thread for the scope's lifetime: driver calls may come
// from any Python thread, and the caller's own current context must survive them.
class ContextScope {
 public:
  ContextScope(const Driver& driver, CUcontext ctx);
  ~ContextScope();
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  const Driver& driver_;
};

}  // namespace vattention
