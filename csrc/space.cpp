#include "space.h"

#include <stdexcept>
#include <string>
#include <utility>

namespace vattention {

namespace {

CUmemAllocationProp device_pages(int device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

size_t granularity_of(const Driver& driver, int device) {
  CUmemAllocationProp prop = device_pages(device);
  size_t granularity = 0;
  driver.check(driver.cuMemGetAllocationGranularity(&granularity, &prop,
                                                    CU_MEM_ALLOC_GRANULARITY_MINIMUM),
               "cuMemGetAllocationGranularity");
  return granularity;
}

}  // namespace

size_t allocation_granularity(int device) {
  Driver driver;
  driver.check(driver.cuInit(0), "cuInit");
  CUdevice dev = 0;
  driver.check(driver.cuDeviceGet(&dev, device), "cuDeviceGet");
  return granularity_of(driver, device);
}

Space::Space(int device, size_t page_size, size_t num_frames, size_t num_reservations,
             size_t reservation_bytes)
    : ordinal_(device), page_size_(page_size), num_frames_(num_frames) {
  if (page_size == 0 || num_reservations == 0 || reservation_bytes == 0 ||
      reservation_bytes % page_size != 0) {
    throw std::invalid_argument("reservation_bytes must be a positive multiple of page_size");
  }
  pages_per_reservation_ = reservation_bytes / page_size;
  driver_.check(driver_.cuInit(0), "cuInit");
  CUdevice dev = 0;
  driver_.check(driver_.cuDeviceGet(&dev, device), "cuDeviceGet");
  // The primary context is the one the CUDA runtime (and so torch) uses on this device:
  // memory mapped here is valid in torch's kernels.
  driver_.check(driver_.cuDevicePrimaryCtxRetain(&ctx_, dev), "cuDevicePrimaryCtxRetain");
  try {
    ContextScope scope(driver_, ctx_);
    CUmemAllocationProp prop = device_pages(device);
    const size_t granularity = granularity_of(driver_, device);
    if (page_size % granularity != 0) {
      throw std::invalid_argument("page_size " + std::to_string(page_size) +
                                  " is not a multiple of the allocation granularity " +
                                  std::to_string(granularity));
    }
    access_.location = prop.location;
    access_.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    handles_.reserve(num_frames * num_reservations);
    for (size_t i = 0; i < num_frames * num_reservations; ++i) {
      CUmemGenericAllocationHandle handle = 0;
      driver_.check(driver_.cuMemCreate(&handle, page_size, &prop, 0), "cuMemCreate");
      handles_.push_back(handle);
    }
    bases_.reserve(num_reservations);
    for (size_t r = 0; r < num_reservations; ++r) {
      CUdeviceptr ptr = 0;
      driver_.check(driver_.cuMemAddressReserve(&ptr, reservation_bytes, granularity, 0, 0),
                    "cuMemAddressReserve");
      bases_.push_back(ptr);
    }
  } catch (...) {
    release_all();
    throw;
  }
  table_.assign(num_reservations * pages_per_reservation_, kUnmapped);
}

Space::~Space() { release_all(); }

void Space::check_range(size_t first, size_t count) const {
  if (first > pages_per_reservation_ || count > pages_per_reservation_ - first) {
    throw UsageError("pages [" + std::to_string(first) + ", " + std::to_string(first + count) +
                     ") are outside the reservation of " +
                     std::to_string(pages_per_reservation_) + " pages");
  }
}

void Space::map(size_t first, const std::vector<size_t>& frames) {
  const size_t count = frames.size();
  check_range(first, count);
  if (count == 0) return;
  for (size_t frame : frames) {
    if (frame >= num_frames_) {
      throw UsageError("frame " + std::to_string(frame) + " is outside the pool of " +
                       std::to_string(num_frames_) + " frames");
    }
  }
  const size_t reservations = bases_.size();
  ContextScope scope(driver_, ctx_);
  auto pool_index = [&](size_t r, size_t i) { return frames[i] * reservations + r; };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) throw UsageError("the space is closed");
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) {
        if (table_[slot(r, first + i)] != kUnmapped) {
          throw UsageError("page " + std::to_string(first + i) + " of reservation " +
                           std::to_string(r) + " is already mapped");
        }
      }
    }
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) table_[slot(r, first + i)] = kInTransit;
    }
  }
  size_t mapped = 0;  // pages mapped so far, in (reservation, page) order
  try {
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) {
        // A frame may be mapped elsewhere too: the driver allows one handle at several
        // addresses, all seeing the same memory.
        driver_.check(driver_.cuMemMap(address(r, first + i), page_size_, 0,
                                       handles_[pool_index(r, i)], 0),
                      "cuMemMap");
        ++mapped;
      }
      // One access call over the contiguous range: per-page calls cost far more.
      driver_.check(driver_.cuMemSetAccess(address(r, first), count * page_size_, &access_, 1),
                    "cuMemSetAccess");
    }
  } catch (...) {
    for (size_t k = 0; k < mapped; ++k) {
      driver_.cuMemUnmap(address(k / count, first + k % count), page_size_);
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) table_[slot(r, first + i)] = kUnmapped;
    }
    throw;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t r = 0; r < reservations; ++r) {
    for (size_t i = 0; i < count; ++i) {
      table_[slot(r, first + i)] = static_cast<int64_t>(pool_index(r, i));
    }
  }
}

void Space::unmap(size_t first, size_t count, bool synchronize) {
  check_range(first, count);
  if (count == 0) return;
  const size_t reservations = bases_.size();
  ContextScope scope(driver_, ctx_);
  std::vector<int64_t> held(count * reservations);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) throw UsageError("the space is closed");
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) {
        const int64_t entry = table_[slot(r, first + i)];
        if (entry < 0) {
          throw UsageError("page " + std::to_string(first + i) + " of reservation " +
                           std::to_string(r) + " is not mapped");
        }
        held[r * count + i] = entry;
      }
    }
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) table_[slot(r, first + i)] = kInTransit;
    }
  }
  size_t done = 0;
  try {
    // Kernels queued before the owner of these pages was freed may still touch them.
    if (synchronize) driver_.check(driver_.cuCtxSynchronize(), "cuCtxSynchronize");
    for (size_t r = 0; r < reservations; ++r) {
      for (size_t i = 0; i < count; ++i) {
        // One call per page: cuMemUnmap must cover exactly what one cuMemMap mapped.
        driver_.check(driver_.cuMemUnmap(address(r, first + i), page_size_), "cuMemUnmap");
        ++done;
      }
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t k = 0; k < held.size(); ++k) {
      const size_t idx = slot(k / count, first + k % count);
      table_[idx] = k < done ? kUnmapped : held[k];
    }
    throw;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t k = 0; k < held.size(); ++k) table_[slot(k / count, first + k % count)] = kUnmapped;
}

CUdeviceptr Space::base(size_t reservation) const {
  if (reservation >= bases_.size()) throw UsageError("no such reservation");
  return bases_[reservation];
}

void Space::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  const auto [result, call] = release_all();
  driver_.check(result, call);
}

std::pair<CUresult, const char*> Space::release_all() noexcept {
  std::pair<CUresult, const char*> first{CUDA_SUCCESS, ""};
  auto note = [&first](CUresult result, const char* call) {
    if (result != CUDA_SUCCESS && first.first == CUDA_SUCCESS) first = {result, call};
  };
  if (ctx_ == nullptr) return first;
  // Keep going after a failure: leaking the rest would be worse than reporting late.
  const CUresult pushed = driver_.cuCtxPushCurrent(ctx_);
  note(pushed, "cuCtxPushCurrent");
  if (pushed == CUDA_SUCCESS) {
    note(driver_.cuCtxSynchronize(), "cuCtxSynchronize");
    for (size_t idx = 0; idx < table_.size(); ++idx) {
      if (table_[idx] >= 0) {
        note(driver_.cuMemUnmap(address(idx / pages_per_reservation_,
                                        idx % pages_per_reservation_), page_size_),
             "cuMemUnmap");
        table_[idx] = kUnmapped;
      }
    }
    for (CUmemGenericAllocationHandle handle : handles_) {
      note(driver_.cuMemRelease(handle), "cuMemRelease");
    }
    for (CUdeviceptr ptr : bases_) {
      note(driver_.cuMemAddressFree(ptr, pages_per_reservation_ * page_size_),
           "cuMemAddressFree");
    }
    CUcontext popped = nullptr;
    driver_.cuCtxPopCurrent(&popped);
  }
  CUdevice dev = 0;
  note(driver_.cuDeviceGet(&dev, ordinal_), "cuDeviceGet");
  note(driver_.cuDevicePrimaryCtxRelease(dev), "cuDevicePrimaryCtxRelease");
  handles_.clear();
  bases_.clear();
  table_.clear();
  ctx_ = nullptr;
  return first;
}

}  // namespace vattention
