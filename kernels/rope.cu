// Rotary position embedding, rotate-half form: for each token t, head and i < d/2,
//   y[i] = x[i] cos - x[i + d/2] sin,  y[i + d/2] = x[i + d/2] cos + x[i] sin,
// with per-token cos/sin tables [tokens, d/2] (f32) built from the position ids. sign = -1
// rotates backwards, which is the backward pass. CPU twin: src/ops/rope.rs.
// `y` may equal `x` (in place): each thread reads its pair before writing it.
#include "common.cuh"

using namespace sc;

template <typename T>
__device__ void rope(const T* x, const float* __restrict__ cos_t, const float* __restrict__ sin_t, T* y,
                     int tokens, int heads, int d, float sign) {
  const int half = d / 2;
  const long long pairs = (long long)tokens * heads * half;
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
       p += (long long)gridDim.x * blockDim.x) {
    const int i = (int)(p % half);
    const long long th = p / half;  // token * heads + head
    const long long t = th / heads;
    const long long base = th * d;
    const float c = cos_t[t * half + i], s = sign * sin_t[t * half + i];
    const float x1 = to_f(x[base + i]), x2 = to_f(x[base + i + half]);
    y[base + i] = from_f<T>(x1 * c - x2 * s);
    y[base + i + half] = from_f<T>(x2 * c + x1 * s);
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) rope_f32(const float* x, const float* c, const float* s, float* y, int tokens,
                                    int heads, int d, float sign) {
  rope<float>(x, c, s, y, tokens, heads, d, sign);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rope_bf16(const bf16* x, const float* c, const float* s, bf16* y, int tokens,
                                     int heads, int d, float sign) {
  rope<bf16>(x, c, s, y, tokens, heads, d, sign);
}
