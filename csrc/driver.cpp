#include "driver.h"

#include <dlfcn.h>

namespace vattention {

#define VATTN_STR(x) #x
#define VATTN_XSTR(x) VATTN_STR(x)

DriverFailure::DriverFailure(std::string call_, std::string name_, int code_)
    : std::runtime_error(call_ + " failed: " + name_ + " (" + std::to_string(code_) + ")"),
      call(std::move(call_)),
      name(std::move(name_)),
      code(code_) {}

Driver::Driver() {
  lib_ = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib_ == nullptr) {
    const char* why = dlerror();
    throw std::runtime_error(std::string("cannot load the CUDA driver (libcuda.so.1): ") +
                             (why ? why : "unknown error"));
  }
#define VATTN_LOAD(f)                                                              \
  f = reinterpret_cast<decltype(f)>(dlsym(lib_, VATTN_XSTR(f)));                   \
  if (f == nullptr) {                                                              \
    dlclose(lib_);                                                                 \
    lib_ = nullptr;                                                                \
    throw std::runtime_error("the CUDA driver lacks " VATTN_XSTR(f) "; too old?"); \
  }
  VATTN_DRIVER_FUNCS(VATTN_LOAD)
#undef VATTN_LOAD
}

Driver::~Driver() {
  if (lib_ != nullptr) dlclose(lib_);
}

void Driver::check(CUresult result, const char* call) const {
  if (result == CUDA_SUCCESS) return;
  const char* name = nullptr;
  if (cuGetErrorName(result, &name) != CUDA_SUCCESS || name == nullptr) name = "CUDA_ERROR_UNKNOWN";
  throw DriverFailure(call, name, static_cast<int>(result));
}

ContextScope::ContextScope(const Driver& driver, CUcontext ctx) : driver_(driver) {
  driver_.check(driver_.cuCtxPushCurrent(ctx), "cuCtxPushCurrent");
}

ContextScope::~ContextScope() {
  CUcontext popped = nullptr;
  driver_.cuCtxPopCurrent(&popped);  // cannot fail after a successful push
}

}  // namespace vattention
