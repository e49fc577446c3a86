// A Space: the virtual reservations of one KV cache and the pool of physical pages
// mapped under them.
//
// There is one reservation per cache tensor, all of the same size, and page p means the
// same offset (p * page_size) in every reservation: mapping pages [first, first + count)
// maps them in all reservations at once, which is what growing a slot by whole
// blocks need. Physical pages are created up front from the budget, so
// growing never allocates device memory and cannot fail for lack of it; freed pages go
// back to the pool, not to the driver.
//
// Thread safety: map and unmap may run concurrently from different threads on disjoint
// page ranges; the page table and the pool are guarded by a mutex, driver calls are not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "driver.h"

namespace vattention {

// The physical page granularity the driver allows on a device.
size_t allocation_granularity(int device);

class Space {
 public:
  Space(int device, size_t page_size, size_t num_pages, size_t num_reservations,
        size_t reservation_bytes);
  ~Space();
  Space(const Space&) = delete;
  Space& operator=(const Space&) = delete;

  void map(size_t first, size_t count);
  void unmap(size_t first, size_t count);
  void close();  // idempotent; the space is unusable afterwards

  CUdeviceptr base(size_t reservation) const;
  size_t free_pages() const;
  size_t num_pages() const { return handles_.size(); }
  size_t num_reservations() const { return bases_.size(); }
  size_t page_size() const { return page_size_; }
  size_t reservation_bytes() const { return pages_per_reservation_ * page_size_; }
  int device() const { return ordinal_; }

 private:
  static constexpr int64_t kUnmapped = -1;
  static constexpr int64_t kInTransit = -2;  // taken by a call that is mapping it now

  size_t slot(size_t reservation, size_t page) const {
    return reservation * pages_per_reservation_ + page;
  }
  CUdeviceptr address(size_t reservation, size_t page) const {
    return bases_[reservation] + page * page_size_;
  }
  void check_range(size_t first, size_t count) const;
  // Best effort (used by close() and failed construction): returns the first failure.
  std::pair<CUresult, const char*> release_all() noexcept;

  Driver driver_;
  int ordinal_;
  CUcontext ctx_ = nullptr;
  size_t page_size_;
  size_t pages_per_reservation_;
  CUmemAccessDesc access_{};
  std::vector<CUmemGenericAllocationHandle> handles_;  // the pool
  std::vector<CUdeviceptr> bases_;                     // one per reservation
  mutable std::mutex mu_;                              // guards everything below
  std::vector<uint32_t> free_;                         // pool indices not mapped anywhere
  std::vector<int64_t> table_;  // per (reservation, page): pool index, kUnmapped, kInTransit
  bool closed_ = false;
};

}  // namespace vattention
