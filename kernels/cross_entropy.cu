// The cross-entropy part of linear_cross_entropy, in place over one chunk of logits [rows, V]:
// one block per row computes loss = logsumexp(x) - x[target] (f32) and overwrites the row with
// its gradient grad_scale * (softmax(x) - onehot(target)), the scale (the step's 1 / supervised
// tokens) applied in f32 before the one rounding to T. Two passes over the row: an online
// max-and-sum (each thread rescales its running sum when its maximum grows; the block then
// rescales every thread's sum to the block maximum), then the gradient. Ignored rows (target ==
// ignore_index) get loss 0 and a zero gradient; a target outside [0, V) gets loss -1 (never a
// real loss, which is >= 0) so the caller can report it. CPU twin: cross_entropy_row in
// src/ops/linear_cross_entropy.rs.
#include "common.cuh"

using namespace sc;

template <typename T>
__device__ void cross_entropy_in_place(T* __restrict__ logits, const long long* __restrict__ targets,
                                       float* __restrict__ row_loss, int rows, int v, long long ignore_index,
                                       float grad_scale) {
  __shared__ float scratch[33];
  const int row = blockIdx.x;
  if (row >= rows) return;
  T* x = logits + (long long)row * v;
  const long long target = targets[row];
  if (target == ignore_index || target < 0 || target >= v) {
    for (int i = threadIdx.x; i < v; i += blockDim.x) x[i] = from_f<T>(0.f);
    if (threadIdx.x == 0) row_loss[row] = target == ignore_index ? 0.f : -1.f;
    return;
  }
  float m = -INFINITY, s = 0.f;
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    const float xi = to_f(x[i]);
    if (xi > m) {
      s = s * expf(m - xi) + 1.f;
      m = xi;
    } else {
      s += expf(xi - m);
    }
  }
  const float mb = block_max(m, scratch);
  s = m == -INFINITY ? 0.f : s * expf(m - mb);
  s = block_sum(s, scratch);
  m = mb;
  // Every thread has read the picked logit's value before any thread overwrites it.
  const float picked = to_f(x[target]);
  __syncthreads();
  const float inv = 1.f / s;
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    float p = expf(to_f(x[i]) - m) * inv;
    if (i == target) p -= 1.f;
    x[i] = from_f<T>(p * grad_scale);
  }
  if (threadIdx.x == 0) row_loss[row] = m + logf(s) - picked;
}

extern "C" __global__ void __launch_bounds__(BLOCK) cross_entropy_in_place_f32(float* logits, const long long* targets, float* row_loss,
                                                      int rows, int v, long long ignore_index, float grad_scale) {
  cross_entropy_in_place<float>(logits, targets, row_loss, rows, v, ignore_index, grad_scale);
}
extern "C" __global__ void __launch_bounds__(BLOCK) cross_entropy_in_place_bf16(bf16* logits, const long long* targets, float* row_loss,
                                                       int rows, int v, long long ignore_index, float grad_scale) {
  cross_entropy_in_place<bf16>(logits, targets, row_loss, rows, v, ignore_index, grad_scale);
}
