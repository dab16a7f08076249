// Shared helpers of syncoder's fused kernels: dtype conversion (bf16 storage, f32 math) and
// deterministic block reductions (fixed shapes give the same sums on every run).
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

// Launch constants come from src/ops/kernel_constants.rs as -D flags (build.rs,
// scripts/compile_kernels.sh), so a kernel and its launcher cannot disagree.
#if !defined(BLOCK) || !defined(ADAMW_CHUNK) || !defined(SUMSQ_CHUNK) || !defined(SUM_PARTIALS_BLOCK)
#error "BLOCK, ADAMW_CHUNK, SUMSQ_CHUNK and SUM_PARTIALS_BLOCK are passed by build.rs from src/ops/kernel_constants.rs"
#endif
static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "block reductions need whole warps, at most 1024 threads");
static_assert(SUM_PARTIALS_BLOCK % 32 == 0 && SUM_PARTIALS_BLOCK <= 1024, "whole warps, at most 1024 threads");

namespace sc {

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

template <typename R> __device__ __forceinline__ R warp_sum(R v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// `scratch` holds 33 values of shared memory owned by the caller.
template <typename R> __device__ R block_sum(R v, R* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // the scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    R r = lane < warps ? scratch[lane] : R(0);
    r = warp_sum(r);
    if (lane == 0) scratch[32] = r;
  }
  __syncthreads();
  return scratch[32];
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float r = lane < warps ? scratch[lane] : -INFINITY;
    r = warp_max(r);
    if (lane == 0) scratch[32] = r;
  }
  __syncthreads();
  return scratch[32];
}

// Multi-tensor launches (AdamW, gradient norm) walk a table of chunks: each u64 packs a tensor
// index (high 24 bits) and the chunk's first element (low 40 bits).
__device__ __forceinline__ uint32_t chunk_tensor(unsigned long long c) { return (uint32_t)(c >> 40); }
__device__ __forceinline__ long long chunk_start(unsigned long long c) {
  return (long long)(c & ((1ull << 40) - 1));
}

}  // namespace sc
