/* A stand-in for libcuda.so.1 on machines without a GPU: "device memory" is host memory.
 *
 * Reservations are PROT_NONE anonymous mappings, physical pages are memfd files, mapping
 * is mmap(MAP_FIXED) of the file, access is mprotect. That is enough to run the
 * extension's bookkeeping, error paths and threading for real; counters exported below
 * let tests check that nothing leaks and that access calls are batched. */
#define _GNU_SOURCE
#include <cuda.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

static atomic_long live_handles, live_reservations, ctx_refs, ctx_depth, mapped_bytes,
    access_calls, creates_left = -1, maps_left = -1;

long fake_live_handles(void) { return live_handles; }
long fake_live_reservations(void) { return live_reservations; }
long fake_ctx_refs(void) { return ctx_refs; }
long fake_ctx_depth(void) { return ctx_depth; }
long fake_mapped_bytes(void) { return mapped_bytes; }
long fake_access_calls(void) { return access_calls; }
void fake_fail_create_after(long n) { creates_left = n; }
void fake_fail_map_after(long n) { maps_left = n; }

static int take(atomic_long* budget) {
  long left = atomic_load(budget);
  if (left < 0) return 1;
  return atomic_fetch_sub(budget, 1) > 0;
}

CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_SUCCESS; }

CUresult cuGetErrorName(CUresult error, const char** name) {
  switch (error) {
    case CUDA_ERROR_OUT_OF_MEMORY: *name = "CUDA_ERROR_OUT_OF_MEMORY"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_DEVICE: *name = "CUDA_ERROR_INVALID_DEVICE"; return CUDA_SUCCESS;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult cuDeviceGet(CUdevice* dev, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *dev = 0;
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice dev) {
  (void)dev;
  *ctx = (CUcontext)0x1;
  ctx_refs++;
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) { (void)dev; ctx_refs--; return CUDA_SUCCESS; }
CUresult cuCtxPushCurrent_v2(CUcontext ctx) { (void)ctx; ctx_depth++; return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent_v2(CUcontext* ctx) { *ctx = (CUcontext)0x1; ctx_depth--; return CUDA_SUCCESS; }
CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }

CUresult cuMemGetAllocationGranularity(size_t* granularity, const CUmemAllocationProp* prop,
                                       CUmemAllocationGranularity_flags option) {
  (void)prop; (void)option;
  *granularity = 65536;
  return CUDA_SUCCESS;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size,
                     const CUmemAllocationProp* prop, unsigned long long flags) {
  (void)prop; (void)flags;
  if (!take(&creates_left)) return CUDA_ERROR_OUT_OF_MEMORY;
  int fd = memfd_create("fake-cuda-page", 0);
  if (fd < 0 || ftruncate(fd, (off_t)size) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
  *handle = (CUmemGenericAllocationHandle)fd + 1;
  live_handles++;
  return CUDA_SUCCESS;
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  close((int)(handle - 1));
  live_handles--;
  return CUDA_SUCCESS;
}

CUresult cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags) {
  (void)alignment; (void)addr; (void)flags;
  void* p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  *ptr = (CUdeviceptr)p;
  live_reservations++;
  return CUDA_SUCCESS;
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  munmap((void*)ptr, size);
  live_reservations--;
  return CUDA_SUCCESS;
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags) {
  (void)offset; (void)flags;
  if (!take(&maps_left)) return CUDA_ERROR_OUT_OF_MEMORY;
  void* p = mmap((void*)ptr, size, PROT_NONE, MAP_SHARED | MAP_FIXED, (int)(handle - 1), 0);
  if (p == MAP_FAILED) return CUDA_ERROR_INVALID_VALUE;
  mapped_bytes += (long)size;
  return CUDA_SUCCESS;
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  (void)desc; (void)count;
  access_calls++;
  return mprotect((void*)ptr, size, PROT_READ | PROT_WRITE) == 0 ? CUDA_SUCCESS
                                                                  : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
  void* p = mmap((void*)ptr, size, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) return CUDA_ERROR_INVALID_VALUE;
  mapped_bytes -= (long)size;
  return CUDA_SUCCESS;
}
