// Token embedding lookup y[i] = w[ids[i]] and its gradient dw[v] = sum of dy[i] over the tokens
// i with ids[i] == v, accumulated in f32 in a fixed order (the tokens sorted by id, then by
// position, once per batch on the host): no atomics, the same bits on every run, and the order
// of a sequential scatter-add. CPU twin: src/ops/embedding.rs.
#include "common.cuh"

using namespace sc;

// One block per token (grid-strided), threads over the hidden size.
template <typename T>
__device__ void embedding_fwd(const T* __restrict__ w, const unsigned* __restrict__ ids, T* __restrict__ y, int n,
                              int h) {
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    const T* src = w + (long long)ids[i] * h;
    T* dst = y + (long long)i * h;
    for (int c = threadIdx.x; c < h; c += blockDim.x) dst[c] = src[c];
  }
}

// One block per vocabulary row (grid-strided): slot[v] is the index of v among the batch's
// distinct ids (0xFFFFFFFF when absent: the row is zero); that id's tokens are
// order[seg[s] .. seg[s + 1]). Every element of dw is written.
template <typename T>
__device__ void embedding_bwd(const T* __restrict__ dy, const unsigned* __restrict__ order,
                              const unsigned* __restrict__ seg, const unsigned* __restrict__ slot, T* __restrict__ dw,
                              int vocab, int h) {
  for (int v = blockIdx.x; v < vocab; v += gridDim.x) {
    const unsigned s = slot[v];
    T* row = dw + (long long)v * h;
    if (s == 0xFFFFFFFFu) {
      for (int c = threadIdx.x; c < h; c += blockDim.x) row[c] = from_f<T>(0.f);
      continue;
    }
    const unsigned first = seg[s], last = seg[s + 1];
    for (int c = threadIdx.x; c < h; c += blockDim.x) {
      float acc = 0.f;
      for (unsigned j = first; j < last; ++j) acc += to_f(dy[(long long)order[j] * h + c]);
      row[c] = from_f<T>(acc);
    }
  }
}

// The same sums added into an f32 buffer (the explicit training step's gradient buffer, which
// with tied embeddings already holds the output projection's gradient): rows of absent ids are
// left as they are. One block per vocabulary row, so no two blocks touch one element.
template <typename T>
__device__ void embedding_bwd_add(const T* __restrict__ dy, const unsigned* __restrict__ order,
                                  const unsigned* __restrict__ seg, const unsigned* __restrict__ slot,
                                  float* __restrict__ dw, int vocab, int h) {
  for (int v = blockIdx.x; v < vocab; v += gridDim.x) {
    const unsigned s = slot[v];
    if (s == 0xFFFFFFFFu) continue;
    float* row = dw + (long long)v * h;
    const unsigned first = seg[s], last = seg[s + 1];
    for (int c = threadIdx.x; c < h; c += blockDim.x) {
      float acc = 0.f;
      for (unsigned j = first; j < last; ++j) acc += to_f(dy[(long long)order[j] * h + c]);
      row[c] += acc;
    }
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) embedding_fwd_f32(const float* w, const unsigned* ids, float* y,
                                                                  int n, int h) {
  embedding_fwd<float>(w, ids, y, n, h);
}
extern "C" __global__ void __launch_bounds__(BLOCK) embedding_fwd_bf16(const bf16* w, const unsigned* ids, bf16* y,
                                                                   int n, int h) {
  embedding_fwd<bf16>(w, ids, y, n, h);
}
extern "C" __global__ void __launch_bounds__(BLOCK) embedding_bwd_f32(const float* dy, const unsigned* order,
                                                                  const unsigned* seg, const unsigned* slot,
                                                                  float* dw, int vocab, int h) {
  embedding_bwd<float>(dy, order, seg, slot, dw, vocab, h);
}
extern "C" __global__ void __launch_bounds__(BLOCK) embedding_bwd_bf16(const bf16* dy, const unsigned* order,
                                                                   const unsigned* seg, const unsigned* slot,
                                                                   bf16* dw, int vocab, int h) {
  embedding_bwd<bf16>(dy, order, seg, slot, dw, vocab, h);
}
extern "C" __global__ void __launch_bounds__(BLOCK) embedding_bwd_add_f32(const float* dy, const unsigned* order,
                                                                      const unsigned* seg, const unsigned* slot,
                                                                      float* dw, int vocab, int h) {
  embedding_bwd_add<float>(dy, order, seg, slot, dw, vocab, h);
}
extern "C" __global__ void __launch_bounds__(BLOCK) embedding_bwd_add_bf16(const bf16* dy, const unsigned* order,
                                                                       const unsigned* seg, const unsigned* slot,
                                                                       float* dw, int vocab, int h) {
  embedding_bwd_add<bf16>(dy, order, seg, slot, dw, vocab, h);
}
