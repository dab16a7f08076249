// Global gradient norm: the sum of squares of many tensors in two deterministic launches.
// sum_squares_multi_* gives each chunk of SUMSQ_CHUNK elements one block and writes that
// chunk's sum (f64, accumulated per thread in f64) to partials[chunk]; sum_partials adds the
// partials in a fixed order. The caller takes the square root. CPU twin: sum_squares_cpu in
// src/ops/grad_norm.rs. `table` holds 2 u64 per tensor: data pointer, element count.
#include "common.cuh"

using namespace sc;

template <typename T>
__device__ void sum_squares_multi(const unsigned long long* __restrict__ table,
                                  const unsigned long long* __restrict__ chunks, double* __restrict__ partials) {
  __shared__ double scratch[33];
  const unsigned long long c = chunks[blockIdx.x];
  const unsigned long long* e = table + 2ull * chunk_tensor(c);
  const T* x = (const T*)e[0];
  const long long n = (long long)e[1];
  const long long start = chunk_start(c);
  const long long end = min(n, start + (long long)SUMSQ_CHUNK);
  double acc = 0.0;
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
    const double v = (double)to_f(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

extern "C" __global__ void __launch_bounds__(BLOCK) sum_squares_multi_f32(const unsigned long long* table, const unsigned long long* chunks,
                                                 double* partials) {
  sum_squares_multi<float>(table, chunks, partials);
}
extern "C" __global__ void __launch_bounds__(BLOCK) sum_squares_multi_bf16(const unsigned long long* table, const unsigned long long* chunks,
                                                  double* partials) {
  sum_squares_multi<bf16>(table, chunks, partials);
}

// One block: out[0] = sum of partials[0..n).
extern "C" __global__ void __launch_bounds__(SUM_PARTIALS_BLOCK) sum_partials(const double* __restrict__ partials, int n, double* __restrict__ out) {
  __shared__ double scratch[33];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = acc;
}
