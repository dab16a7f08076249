// SwiGLU, y = silu(gate) * up, and its backward
//   dup = dy * silu(gate),  dgate = dy * up * s * (1 + gate * (1 - s)),  s = sigmoid(gate).
// CPU twin: src/ops/swiglu.rs.
#include "common.cuh"

using namespace sc;

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

template <typename T>
__device__ void swiglu_fwd(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ y, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float gv = to_f(g[i]);
    y[i] = from_f<T>(gv * sigmoid(gv) * to_f(u[i]));
  }
}

// out = [dgate (n) | dup (n)]
template <typename T>
__device__ void swiglu_bwd(const T* __restrict__ g, const T* __restrict__ u, const T* __restrict__ dy,
                           T* __restrict__ out, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float gv = to_f(g[i]), uv = to_f(u[i]), d = to_f(dy[i]);
    const float s = sigmoid(gv);
    out[n + i] = from_f<T>(d * (gv * s));
    out[i] = from_f<T>(d * uv * s * (1.f + gv * (1.f - s)));
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_fwd_f32(const float* g, const float* u, float* y, long long n) {
  swiglu_fwd<float>(g, u, y, n);
}
extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_fwd_bf16(const bf16* g, const bf16* u, bf16* y, long long n) {
  swiglu_fwd<bf16>(g, u, y, n);
}
extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_bwd_f32(const float* g, const float* u, const float* dy, float* out, long long n) {
  swiglu_bwd<float>(g, u, dy, out, n);
}
extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_bwd_bf16(const bf16* g, const bf16* u, const bf16* dy, bf16* out, long long n) {
  swiglu_bwd<bf16>(g, u, dy, out, n);
}
