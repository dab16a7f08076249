// Rotary position embedding (rotate-half form) where q, k and v leave the attention's stacked
// projection. A row of qkv [tokens, slots * d] holds the q heads, then the k heads, then the
// v heads (slots = hq + 2 hkv), without bias.
//
// Forward: out = [q block | k block | v block], each [tokens, heads, d] (the attention's
// layout), with x = qkv + bias and, for q and k, for each pair i < d/2,
//   y[i] = x[i] cos - x[i + d/2] sin,  y[i + d/2] = x[i + d/2] cos + x[i] sin,
// from the per-token tables [tokens, d/2] (f32); v is copied with its bias.
// Backward: the gradients dq, dk, dv rotated back (the transpose of a rotation: -sin) and
// packed into dqkv [tokens, slots * d], the layout the projection's GEMMs take.
// One thread per (token, slot, pair); f32 math, one rounding per output.
// CPU twin: src/ops/rope.rs.
#include "common.cuh"

using namespace sc;

// The start of slot s of token t in [q block | k block | v block], and whether it rotates.
__device__ __forceinline__ long long block_start(long long t, int s, int tokens, int hq, int hkv, int d, bool* rotate) {
  if (s < hq) {
    *rotate = true;
    return (t * hq + s) * d;
  }
  if (s < hq + hkv) {
    *rotate = true;
    return (long long)tokens * hq * d + (t * hkv + (s - hq)) * d;
  }
  *rotate = false;
  return (long long)tokens * (hq + hkv) * d + (t * hkv + (s - hq - hkv)) * d;
}

template <typename T>
__device__ void qkv_rope_fwd(const T* __restrict__ qkv, const T* __restrict__ bias, const float* __restrict__ cos_t,
                             const float* __restrict__ sin_t, T* __restrict__ out, int tokens, int hq, int hkv, int d) {
  const int half = d / 2, slots = hq + 2 * hkv;
  const long long pairs = (long long)tokens * slots * half;
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
       p += (long long)gridDim.x * blockDim.x) {
    const int i = (int)(p % half);
    const long long ts = p / half;  // token * slots + slot
    const int s = (int)(ts % slots);
    const long long t = ts / slots;
    const long long src = ts * d;
    const float x1 = to_f(qkv[src + i]) + to_f(bias[s * d + i]);
    const float x2 = to_f(qkv[src + i + half]) + to_f(bias[s * d + i + half]);
    bool rotate;
    const long long dst = block_start(t, s, tokens, hq, hkv, d, &rotate);
    if (rotate) {
      const float c = cos_t[t * half + i], sn = sin_t[t * half + i];
      out[dst + i] = from_f<T>(x1 * c - x2 * sn);
      out[dst + i + half] = from_f<T>(x2 * c + x1 * sn);
    } else {
      out[dst + i] = from_f<T>(x1);
      out[dst + i + half] = from_f<T>(x2);
    }
  }
}

template <typename T>
__device__ void qkv_rope_bwd(const T* __restrict__ dq, const T* __restrict__ dk, const T* __restrict__ dv,
                             const float* __restrict__ cos_t, const float* __restrict__ sin_t, T* __restrict__ dqkv,
                             int tokens, int hq, int hkv, int d) {
  const int half = d / 2, slots = hq + 2 * hkv;
  const long long pairs = (long long)tokens * slots * half;
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
       p += (long long)gridDim.x * blockDim.x) {
    const int i = (int)(p % half);
    const long long ts = p / half;
    const int s = (int)(ts % slots);
    const long long t = ts / slots;
    const T* g;
    bool rotate = true;
    if (s < hq) {
      g = dq + (t * hq + s) * d;
    } else if (s < hq + hkv) {
      g = dk + (t * hkv + (s - hq)) * d;
    } else {
      g = dv + (t * hkv + (s - hq - hkv)) * d;
      rotate = false;
    }
    const float g1 = to_f(g[i]), g2 = to_f(g[i + half]);
    const long long dst = ts * d;
    if (rotate) {
      const float c = cos_t[t * half + i], sn = sin_t[t * half + i];
      dqkv[dst + i] = from_f<T>(g1 * c + g2 * sn);
      dqkv[dst + i + half] = from_f<T>(g2 * c - g1 * sn);
    } else {
      dqkv[dst + i] = from_f<T>(g1);
      dqkv[dst + i + half] = from_f<T>(g2);
    }
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) qkv_rope_fwd_f32(const float* qkv, const float* bias, const float* c,
                                                                     const float* s, float* out, int tokens, int hq, int hkv,
                                                                     int d) {
  qkv_rope_fwd<float>(qkv, bias, c, s, out, tokens, hq, hkv, d);
}
extern "C" __global__ void __launch_bounds__(BLOCK) qkv_rope_fwd_bf16(const bf16* qkv, const bf16* bias, const float* c,
                                                                      const float* s, bf16* out, int tokens, int hq, int hkv,
                                                                      int d) {
  qkv_rope_fwd<bf16>(qkv, bias, c, s, out, tokens, hq, hkv, d);
}
extern "C" __global__ void __launch_bounds__(BLOCK) qkv_rope_bwd_f32(const float* dq, const float* dk, const float* dv,
                                                                     const float* c, const float* s, float* dqkv, int tokens,
                                                                     int hq, int hkv, int d) {
  qkv_rope_bwd<float>(dq, dk, dv, c, s, dqkv, tokens, hq, hkv, d);
}
extern "C" __global__ void __launch_bounds__(BLOCK) qkv_rope_bwd_bf16(const bf16* dq, const bf16* dk, const bf16* dv,
                                                                      const float* c, const float* s, bf16* dqkv, int tokens,
                                                                      int hq, int hkv, int d) {
  qkv_rope_bwd<bf16>(dq, dk, dv, c, s, dqkv, tokens, hq, hkv, d);
}
