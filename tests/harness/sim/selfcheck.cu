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
