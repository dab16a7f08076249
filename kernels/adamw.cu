// Fused AdamW over many parameters in one launch (PyTorch's torch.optim.AdamW formula):
//   g = grad * scale;  m += (1 - b1) (g - m);  v = b2 v + (1 - b2) g^2;
//   master = master * decay - step_size * m / (sqrt(v) / bc2_sqrt + eps)
// with decay = 1 - lr * weight_decay per parameter (1 where the weight-decay mask is off),
// fp32 master weights and moments, and, for bf16 parameters, the rounded master written back.
// Gradients come in the parameters' dtype (`_f32`, `_bf16`) or, from the explicit training
// step's f32 buffers, in f32 beside bf16 parameters (`adamw_multi_mixed`).
// CPU twin: adamw_cpu in src/ops/adamw.rs.
//
// `table` holds 8 u64 per parameter: master, m, v, grad, param (0: the master is the parameter),
// element count, decay (f32 bits), unused. `chunks` (common.cuh) splits the work in blocks.
#include "common.cuh"

using namespace sc;

template <typename G, typename P>
__device__ void adamw_multi(const unsigned long long* __restrict__ table, const unsigned long long* __restrict__ chunks,
                            float step_size, float bc2_sqrt, float b1c, float b2, float b2c, float eps, float scale) {
  const unsigned long long c = chunks[blockIdx.x];
  const unsigned long long* e = table + 8ull * chunk_tensor(c);
  float* master = (float*)e[0];
  float* m = (float*)e[1];
  float* v = (float*)e[2];
  const G* grad = (const G*)e[3];
  P* param = (P*)e[4];
  const long long n = (long long)e[5];
  const float decay = __uint_as_float((unsigned int)e[6]);
  const long long start = chunk_start(c);
  const long long end = min(n, start + (long long)ADAMW_CHUNK);
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = to_f(grad[i]) * scale;
    float mi = m[i], vi = v[i];
    mi += b1c * (g - mi);
    vi = vi * b2 + b2c * g * g;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    const float p = master[i] * decay - step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    if (param != nullptr) param[i] = from_f<P>(p);
  }
}

extern "C" __global__ void __launch_bounds__(BLOCK) adamw_multi_f32(const unsigned long long* table, const unsigned long long* chunks,
                                           float step_size, float bc2_sqrt, float b1c, float b2, float b2c, float eps,
                                           float scale) {
  adamw_multi<float, float>(table, chunks, step_size, bc2_sqrt, b1c, b2, b2c, eps, scale);
}
extern "C" __global__ void __launch_bounds__(BLOCK) adamw_multi_bf16(const unsigned long long* table, const unsigned long long* chunks,
                                            float step_size, float bc2_sqrt, float b1c, float b2, float b2c, float eps,
                                            float scale) {
  adamw_multi<bf16, bf16>(table, chunks, step_size, bc2_sqrt, b1c, b2, b2c, eps, scale);
}
extern "C" __global__ void __launch_bounds__(BLOCK) adamw_multi_mixed(const unsigned long long* table,
                                                                  const unsigned long long* chunks, float step_size,
                                                                  float bc2_sqrt, float b1c, float b2, float b2c,
                                                                  float eps, float scale) {
  adamw_multi<float, bf16>(table, chunks, step_size, bc2_sqrt, b1c, b2, b2c, eps, scale);
}
