// SwiGLU over the stacked gate/up projection: each row of gu [rows, 2 * width] holds the gate
// (first width columns) then the up projection (last width columns), and
//   y[r, j] = silu(g) * u,  g = gu[r, j],  u = gu[r, width + j],
// with its backward into the same packed layout (what the stacked GEMMs take back):
//   dgu[r, j] = dy * u * s * (1 + g * (1 - s)),  dgu[r, width + j] = dy * silu(g),  s = sigmoid(g).
// Reading gate and up straight out of the GEMM's output means no split copies in either pass.
// CPU twin: src/ops/swiglu.rs.
#include "common.cuh"

using namespace sc;

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

template <typename T>
__device__ void swiglu_fwd(const T* __restrict__ gu, T* __restrict__ y, long long rows, int width) {
  const long long n = rows * width;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / width;
    const long long at = i + r * width;  // r * 2 * width + j
    const float gv = to_f(gu[at]);
    y[i] = from_f<T>(gv * sigmoid(gv) * to_f(gu[at + width]));
  }
}

template <typename T>
__device__ void swiglu_bwd(const T* __restrict__ gu, const T* __restrict__ dy, T* __restrict__ dgu, long long rows,
                           int width) {
  const long long n = rows * width;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / width;
    const long long at = i + r * width;
    const float gv = to_f(gu[at]), uv = to_f(gu[at + width]), d = to_f(dy[i]);
    const float s = sigmoid(gv);
    dgu[at] = from_f<T>(d * uv * s * (1.f + gv * (1.f - s)));
    dgu[at + width] = from_f<T>(d * (gv * s));
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_fwd_f32(const float* gu, float* y, long long rows, int width) {
  swiglu_fwd<float>(gu, y, rows, width);
}
extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_fwd_bf16(const bf16* gu, bf16* y, long long rows, int width) {
  swiglu_fwd<bf16>(gu, y, rows, width);
}
extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_bwd_f32(const float* gu, const float* dy, float* dgu, long long rows,
                                                                   int width) {
  swiglu_bwd<float>(gu, dy, dgu, rows, width);
}
extern "C" __global__ void __launch_bounds__(BLOCK) swiglu_bwd_bf16(const bf16* gu, const bf16* dy, bf16* dgu, long long rows,
                                                                    int width) {
  swiglu_bwd<bf16>(gu, dy, dgu, rows, width);
}
