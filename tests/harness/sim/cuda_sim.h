// The CUDA execution model on the CPU, for exactly what kernels/*.cu use: forced into every
// kernel translation unit of the kernel harness (tests/harness/build.rs), before the kernel's
// own includes. The runtime behind it (fibers, barriers, warp exchange, guarded memory) is
// runtime.cpp.
//
// Every thread of a block is a fiber; __syncthreads() and the warp intrinsics are the points
// where fibers switch. Between them the runtime runs the threads in a varying order (forward,
// reverse, or a seeded shuffle per pass), so a missing barrier changes the result.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
// Kernel headers pick the harness's emulation of an inline-PTX instruction with this.
#define SC_KERNEL_HARNESS 1

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

struct dim3 {
  unsigned x, y, z;
};
typedef dim3 uint3;

// Set by the runtime before it resumes a thread.
extern "C" uint3 threadIdx;
extern "C" uint3 blockIdx;
extern "C" dim3 blockDim;
extern "C" dim3 gridDim;

namespace sc_sim {
void syncthreads();
// Deposits this lane's 64 bits, waits until every lane of `mask` has done the same for this
// exchange, and copies the warp's 32 slots to `out` (lanes outside the mask hold poison).
void warp_exchange(unsigned mask, uint64_t bits, uint64_t* out);
// The same for `n` (at most 4) words per lane: lane l's word i lands in out[l * n + i].
void warp_exchange_n(unsigned mask, const uint64_t* bits, unsigned n, uint64_t* out);
unsigned lane();
// The block's instance of the `__shared__` declaration `site` (one per declaration and template
// instantiation), `bytes` long, filled with 0xFF bytes (NaN as f32 and f64) at every block start.
void* shared_static(const void* site, size_t bytes, const char* name);
// The launch's dynamic shared memory, poisoned the same way.
void* shared_dynamic();
[[noreturn]] void fail(const char* what);
}  // namespace sc_sim

// The harness build rewrites `__shared__ T name[n];` and `extern __shared__ T name[];` (the
// only two forms it accepts) to these, keeping the line.
#define SC_SIM_SHARED(T, name, n) \
  static char sc_site_##name;     \
  T* name = (T*)sc_sim::shared_static(&sc_site_##name, sizeof(T) * (n), #name)
#define SC_SIM_DYNAMIC_SHARED(T, name) T* name = (T*)sc_sim::shared_dynamic()

inline void __syncthreads() { sc_sim::syncthreads(); }

namespace sc_sim {
template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 64 bits");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename T>
inline T shuffle_from(unsigned mask, T v, unsigned src) {
  uint64_t all[32];
  warp_exchange(mask, to_bits(v), all);
  if (!((mask >> src) & 1u)) fail("a shuffle reads a lane outside its mask");
  return from_bits<T>(all[src]);
}
inline unsigned segment_base(int width) { return lane() & ~(unsigned)(width - 1); }
}  // namespace sc_sim

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  unsigned me = sc_sim::lane(), src = me ^ (unsigned)lane_mask;
  if ((src & ~(unsigned)(width - 1)) != sc_sim::segment_base(width)) src = me;
  return sc_sim::shuffle_from(mask, v, src);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  unsigned me = sc_sim::lane(), src = me + delta;
  if (src >= sc_sim::segment_base(width) + (unsigned)width) src = me;
  return sc_sim::shuffle_from(mask, v, src);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  unsigned me = sc_sim::lane();
  unsigned src = (me - sc_sim::segment_base(width)) >= delta ? me - delta : me;
  return sc_sim::shuffle_from(mask, v, src);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return sc_sim::shuffle_from(mask, v, sc_sim::segment_base(width) + ((unsigned)src_lane % (unsigned)width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  uint64_t all[32];
  sc_sim::warp_exchange(mask, pred != 0, all);
  unsigned out = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && all[l]) out |= 1u << l;
  return out;
}
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// Threads of a block never run at the same time here, so a read-modify-write is atomic.
template <typename T>
inline T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}

inline float __uint_as_float(unsigned u) { return sc_sim::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return (unsigned)sc_sim::to_bits(f); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }

// CUDA's integer min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

// ---- Tensor-core instructions (kernels/tensor_core.cuh), warp-collective like the hardware:
// every lane of the warp must arrive, and each lane gets the elements the PTX ISA's fragment
// layouts give it (see the top of tensor_core.cuh).
namespace sc_sim {

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8m..8m+7 give the 16-byte-aligned
// addresses of the rows of matrix m.
inline void ldmatrix_x4(uint32_t r[4], const void* row, bool trans) {
  if (((uintptr_t)row & 15u) != 0) fail("ldmatrix: a row address that is not 16-byte aligned");
  uint64_t all[32];
  warp_exchange(0xffffffffu, (uint64_t)(uintptr_t)row, all);
  const unsigned l = lane(), g = l >> 2, t = l & 3;
  for (unsigned m = 0; m < 4; ++m) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* p = (const uint16_t*)(uintptr_t)all[m * 8 + g];
      lo = p[2 * t];
      hi = p[2 * t + 1];
    } else {
      lo = ((const uint16_t*)(uintptr_t)all[m * 8 + 2 * t])[g];
      hi = ((const uint16_t*)(uintptr_t)all[m * 8 + 2 * t + 1])[g];
    }
    r[m] = (uint32_t)lo | ((uint32_t)hi << 16);
  }
}

inline float bf16_bits_to_float(uint32_t b) {
  uint32_t u = (b & 0xffffu) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with d = c (in place): products exact in
// f32, summed in k order onto c.
inline void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  const uint64_t mine[3] = {a[0] | ((uint64_t)a[1] << 32), a[2] | ((uint64_t)a[3] << 32),
                            b0 | ((uint64_t)b1 << 32)};
  uint64_t all[32 * 3];
  warp_exchange_n(0xffffffffu, mine, 3, all);
  // Element (row, k) of A and (k, col) of B from the lanes that hold them.
  auto a_at = [&](unsigned row, unsigned k) {
    const unsigned holder = ((row & 7) << 2) | ((k & 7) >> 1);
    const unsigned reg = (row >> 3) | ((k >> 3) << 1);  // a0: (g, k<8), a1: (g+8, k<8), a2, a3: k>=8
    const uint32_t w = (uint32_t)(all[holder * 3 + (reg >> 1)] >> (32 * (reg & 1)));
    return bf16_bits_to_float(w >> (16 * (k & 1)));
  };
  auto b_at = [&](unsigned k, unsigned col) {
    const unsigned holder = (col << 2) | ((k & 7) >> 1);
    const uint32_t w = (uint32_t)(all[holder * 3 + 2] >> (32 * (k >> 3)));
    return bf16_bits_to_float(w >> (16 * (k & 1)));
  };
  const unsigned l = lane(), g = l >> 2, t = l & 3;
  for (unsigned e = 0; e < 4; ++e) {
    const unsigned row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = c[e];
    for (unsigned k = 0; k < 16; ++k) acc += a_at(row, k) * b_at(k, col);
    c[e] = acc;
  }
}

}  // namespace sc_sim
