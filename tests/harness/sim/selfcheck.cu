// The harness's own kernels, deliberately right and deliberately broken, so its tests show that
// it catches what it claims to: a missing barrier, an out-of-bounds write, divergent barriers.
// Compiled only into the harness (never into syncoder).

// out[0] = 1 + 2 + ... + blockDim.x through shared memory, with the barrier.
extern "C" __global__ void __launch_bounds__(1024) selfcheck_sum(float* out) {
  __shared__ float vals[1024];
  vals[threadIdx.x] = (float)(threadIdx.x + 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (unsigned i = 0; i < blockDim.x; ++i) s += vals[i];
    out[0] = s;
  }
}

// The same without the barrier: thread 0 may read values no thread has written yet.
extern "C" __global__ void __launch_bounds__(1024) selfcheck_sum_without_barrier(float* out) {
  __shared__ float vals[1024];
  vals[threadIdx.x] = (float)(threadIdx.x + 1);
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (unsigned i = 0; i < blockDim.x; ++i) s += vals[i];
    out[0] = s;
  }
}

// Writes out[0..=n]: one element too many.
extern "C" __global__ void __launch_bounds__(1024) selfcheck_off_by_one(float* out, int n) {
  for (int i = threadIdx.x; i <= n; i += blockDim.x) out[i] = 1.f;
}

// Only even threads reach the barrier.
extern "C" __global__ void __launch_bounds__(1024) selfcheck_divergent_barrier(float* out) {
  if (threadIdx.x % 2 == 0) __syncthreads();
  out[threadIdx.x] = 1.f;
}

// A warp sum by __shfl_xor_sync: out[w] = sum of the lane ids + 1 over warp w.
extern "C" __global__ void __launch_bounds__(1024) selfcheck_warp_sum(float* out) {
  float v = (float)((threadIdx.x & 31) + 1);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) out[threadIdx.x >> 5] = v;
}

// The tensor-core emulation against the PTX ISA's layouts (the test computes them on its own):
// one warp loads a (16x16, row-major) and b (stored [n=8][k=16]) into shared memory, then
// out[128 + 4l + m] / out[256 + 4l + m] = lane l's register m of ldmatrix.x4 / .x4.trans from
// row addresses a + (l % 16) * 16 + (l / 16) * 8 (the bits as a float), and out[4l + e] = lane
// l's c[e] of c = A * B (mma.m16n8k16, A from that ldmatrix, B from an ldmatrix of b).
#include "tensor_core.cuh"
extern "C" __global__ void __launch_bounds__(32) selfcheck_tensor_core(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                                                     float* out) {
  __shared__ uint4 sa_raw[32];
  __shared__ uint4 sb_raw[16];
  sc::bf16* sa = reinterpret_cast<sc::bf16*>(sa_raw);
  sc::bf16* sb = reinterpret_cast<sc::bf16*>(sb_raw);
  const int l = threadIdx.x;
  for (int i = l; i < 256; i += 32) sa[i] = a[i];
  for (int i = l; i < 128; i += 32) sb[i] = b[i];
  __syncthreads();
  uint32_t ra[4], rt[4], rb[4];
  sc::ldmatrix_x4(ra, sa + (l % 16) * 16 + (l / 16) * 8);
  sc::ldmatrix_x4_trans(rt, sa + (l % 16) * 16 + (l / 16) * 8);
  // b0, b1 of the B fragment: matrix 0 = rows n, k 0..7; matrix 1 = rows n, k 8..15.
  sc::ldmatrix_x4(rb, sb + (l & 7) * 16 + ((l >> 3) & 1) * 8);
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  sc::mma_bf16(c, ra, rb[0], rb[1]);
  for (int i = 0; i < 4; ++i) {
    out[4 * l + i] = c[i];
    out[128 + 4 * l + i] = __uint_as_float(ra[i]);
    out[256 + 4 * l + i] = __uint_as_float(rt[i]);
  }
}
