// A Space: the virtual reservations of one KV cache and the pool of physical pages
// mapped under them.
//
// There is one reservation per cache tensor, all of the same size, and page p means the
// same offset (p * page_size) in every reservation: mapping pages [first, first + count)
// maps them in all reservations at once, which is what growing a slot by whole
// blocks need. Physical pages are created up front from the budget, so
// growing never allocates device memory and cannot fail for lack of it.
//
// The pool is numbered in frames: frame f is the physical memory of one page in every
// reservation, pool handles f * R .. f * R + R - 1 (R reservations). The caller chooses
// which frame backs which page and keeps the free list (vattention.pager); one frame may
// be mapped at several page ranges at once, which is how slots share a prompt prefix.
//
// Thread safety: map and unmap may run concurrently from different threads on disjoint
// page ranges; the page table is guarded by a mutex, driver calls are not.
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
  Space(int device, size_t page_size, size_t num_frames, size_t num_reservations,
        size_t reservation_bytes);
  ~Space();
  Space(const Space&) = delete;
  Space& operator=(const Space&) = delete;

  // Maps frames[i] at page first + i of every reservation.
  void map(size_t first, const std::vector<size_t>& frames);
  // With synchronize, first waits for all work queued on the device (kernels may still
  // read or write these pages); without, the caller has made sure none can.
  void unmap(size_t first, size_t count, bool synchronize = true);
  void close();  // idempotent; the space is unusable afterwards

  CUdeviceptr base(size_t reservation) const;
  size_t num_frames() const { return num_frames_; }
  size_t num_pages() const { return num_frames_ * bases_.size(); }
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
  size_t num_frames_;
  size_t pages_per_reservation_;
  CUmemAccessDesc access_{};
  std::vector<CUmemGenericAllocationHandle> handles_;  // the pool, frame-major
  std::vector<CUdeviceptr> bases_;                     // one per reservation
  mutable std::mutex mu_;                              // guards everything below
  std::vector<int64_t> table_;  // per (reservation, page): pool index, kUnmapped, kInTransit
  bool closed_ = false;
};

}  // namespace vattention
