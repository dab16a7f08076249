// RMSNorm over the last dimension, y = w * (x / sqrt(mean(x^2) + eps)), its backward, and the
// residual-fused forward: s = x + delta, y = rmsnorm(s) in one pass (out = [s | y]).
// CPU twin: src/ops/rms_norm.rs. One block per row; f32 math whatever the storage dtype.
#include "common.cuh"

using namespace sc;

template <typename T>
__device__ void rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                             int rows, int h, float eps) {
  __shared__ float scratch[33];
  const int row = blockIdx.x;
  if (row >= rows) return;
  const T* xr = x + (long long)row * h;
  T* yr = y + (long long)row * h;
  float ss = 0.f;
  for (int i = threadIdx.x; i < h; i += blockDim.x) {
    const float v = to_f(xr[i]);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float r = 1.f / sqrtf(ss / (float)h + eps);
  for (int i = threadIdx.x; i < h; i += blockDim.x) yr[i] = from_f<T>(to_f(w[i]) * (to_f(xr[i]) * r));
}

// out[0 .. rows*h) = x + delta (rounded to T, as the separate add would store it), out[rows*h ..)
// = rmsnorm of that rounded sum. The sum is written first and re-read, so both halves match the
// unfused add followed by rms_norm_fwd bit for bit.
template <typename T>
__device__ void add_rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ delta, const T* __restrict__ w,
                                 T* __restrict__ out, int rows, int h, float eps) {
  __shared__ float scratch[33];
  const int row = blockIdx.x;
  if (row >= rows) return;
  const long long off = (long long)row * h;
  T* sr = out + off;
  T* yr = out + (long long)rows * h + off;
  float ss = 0.f;
  for (int i = threadIdx.x; i < h; i += blockDim.x) {
    const T sv = from_f<T>(to_f(x[off + i]) + to_f(delta[off + i]));
    sr[i] = sv;
    const float v = to_f(sv);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float r = 1.f / sqrtf(ss / (float)h + eps);
  for (int i = threadIdx.x; i < h; i += blockDim.x) yr[i] = from_f<T>(to_f(w[i]) * (to_f(sr[i]) * r));
}

// dx = g*w*r - x * (sum(g*w*x) * r^3 / h); the weight gradient sum(g*x*r) over rows is
// accumulated per block (rows blockIdx.x, blockIdx.x + gridDim.x, ...) into `partial`
// [gridDim.x, h] f32, then summed over blocks in a fixed order by rms_norm_dw_reduce.
// Dynamic shared memory: h floats.
template <typename T>
__device__ void rms_norm_bwd(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ g,
                             T* __restrict__ dx, float* __restrict__ partial, int rows, int h, float eps) {
  __shared__ float scratch[33];
  extern __shared__ float dw_acc[];
  for (int i = threadIdx.x; i < h; i += blockDim.x) dw_acc[i] = 0.f;
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + (long long)row * h;
    const T* gr = g + (long long)row * h;
    T* dxr = dx + (long long)row * h;
    float ss = 0.f, c = 0.f;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
      const float xv = to_f(xr[i]);
      ss += xv * xv;
      c += to_f(gr[i]) * to_f(w[i]) * xv;
    }
    ss = block_sum(ss, scratch);
    c = block_sum(c, scratch);
    const float r = 1.f / sqrtf(ss / (float)h + eps);
    const float k = c * r * r * r / (float)h;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
      const float xv = to_f(xr[i]), gv = to_f(gr[i]);
      dw_acc[i] += gv * xv * r;
      dxr[i] = from_f<T>(gv * to_f(w[i]) * r - xv * k);
    }
  }
  float* pr = partial + (long long)blockIdx.x * h;
  for (int i = threadIdx.x; i < h; i += blockDim.x) pr[i] = dw_acc[i];
}

template <typename T>
__device__ void rms_norm_dw_reduce(const float* __restrict__ partial, T* __restrict__ dw, int blocks, int h) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= h) return;
  float s = 0.f;
  for (int b = 0; b < blocks; ++b) s += partial[(long long)b * h + i];
  dw[i] = from_f<T>(s);
}

extern "C" __global__ void __launch_bounds__(BLOCK) rms_norm_fwd_f32(const float* x, const float* w, float* y, int rows,
                                                                 int h, float eps) {
  rms_norm_fwd<float>(x, w, y, rows, h, eps);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rms_norm_bwd_f32(const float* x, const float* w, const float* g, float* dx,
                                                                 float* partial, int rows, int h, float eps) {
  rms_norm_bwd<float>(x, w, g, dx, partial, rows, h, eps);
}
extern "C" __global__ void __launch_bounds__(BLOCK) add_rms_norm_fwd_f32(const float* x, const float* delta, const float* w,
                                                                     float* out, int rows, int h, float eps) {
  add_rms_norm_fwd<float>(x, delta, w, out, rows, h, eps);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rms_norm_dw_reduce_f32(const float* partial, float* dw, int blocks,
                                                                       int h) {
  rms_norm_dw_reduce<float>(partial, dw, blocks, h);
}

extern "C" __global__ void __launch_bounds__(BLOCK) rms_norm_fwd_bf16(const bf16* x, const bf16* w, bf16* y, int rows,
                                                                 int h, float eps) {
  rms_norm_fwd<bf16>(x, w, y, rows, h, eps);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rms_norm_bwd_bf16(const bf16* x, const bf16* w, const bf16* g, bf16* dx,
                                                                 float* partial, int rows, int h, float eps) {
  rms_norm_bwd<bf16>(x, w, g, dx, partial, rows, h, eps);
}
extern "C" __global__ void __launch_bounds__(BLOCK) add_rms_norm_fwd_bf16(const bf16* x, const bf16* delta, const bf16* w,
                                                                     bf16* out, int rows, int h, float eps) {
  add_rms_norm_fwd<bf16>(x, delta, w, out, rows, h, eps);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rms_norm_dw_reduce_bf16(const float* partial, bf16* dw, int blocks,
                                                                       int h) {
  rms_norm_dw_reduce<bf16>(partial, dw, blocks, h);
}
