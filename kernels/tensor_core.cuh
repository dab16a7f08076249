// Tensor-core building blocks of the attention kernels (sm_80 and later): the warp-wide
// `mma.sync.m16n8k16` with bf16 inputs and f32 accumulation, `ldmatrix` (x4, plain and
// transposed) from shared memory, and the XOR-swizzled shared-memory tile layout that lets
// `ldmatrix` read 8 rows of 16 bytes without bank conflicts.
//
// Fragment layouts are those of the PTX ISA ("Matrix Fragments for mma.m16n8k16", "ldmatrix"):
// lane l, g = l / 4, t = l % 4; A (16x16, row-major) a0 = A[g][2t..2t+1], a1 = A[g+8][2t..],
// a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]; B (16x8, k x n) b0 = B[2t..2t+1][g], b1 = B[2t+8..][g];
// C (16x8, f32) c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..]. A register holds two bf16, the
// lower column (or k) in the low half.
//
// In the CPU kernel harness (tests/harness/, SC_KERNEL_HARNESS) the two instructions are the
// harness's warp-collective emulations of the same layouts (sim/cuda_sim.h); everything else in
// this file and in the kernels runs as written.
#pragma once
#include "common.cuh"

namespace sc {

// Four 8x8 b16 matrices: lanes 8m..8m+7 give the addresses of matrix m's rows (16-byte
// aligned, shared memory); r[m] of lane l is row l/4, columns 2(l%4), 2(l%4)+1 of matrix m.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16* row) {
#ifdef SC_KERNEL_HARNESS
  sc_sim::ldmatrix_x4(r, row, false);
#else
  const unsigned a = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");  // reads shared memory the compiler must not cache across it
#endif
}

// The same with each matrix transposed: r[m] of lane l is column l/4 of rows 2(l%4), 2(l%4)+1.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const bf16* row) {
#ifdef SC_KERNEL_HARNESS
  sc_sim::ldmatrix_x4(r, row, true);
#else
  const unsigned a = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");  // reads shared memory the compiler must not cache across it
#endif
}

// c += A (16x16) * B (16x8), bf16 inputs, f32 accumulation.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], const uint32_t b0, const uint32_t b1) {
#ifdef SC_KERNEL_HARNESS
  sc_sim::mma_m16n8k16_bf16(c, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two floats as packed bf16 (round to nearest even), `lo` in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
         ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// A [rows x D] bf16 tile in shared memory, 16-byte chunk c of row r stored at chunk c ^ (r % 8)
// of that row: the 8 rows an ldmatrix phase reads land in 8 different bank groups.
template <int D>
struct SwizzledTile {
  static_assert(D % 64 == 0, "rows of at least 8 chunks of 16 bytes");
  bf16* base;
  // The element (row, 8 * chunk).
  __device__ __forceinline__ bf16* chunk(int row, int c) const { return base + row * D + ((c ^ (row & 7)) << 3); }

  // Rows row0 .. row0 + rows - 1 from global memory: token row0 + r of head `head` at
  // src + ((row0 + r) * heads + head) * D; tokens at or past `n` are zero. All threads of the
  // block take part (blockDim.x of them).
  __device__ __forceinline__ void load(const bf16* __restrict__ src, int row0, int rows, int n, int heads,
                                       int head) const {
    constexpr int C = D / 8;
    for (int i = threadIdx.x; i < rows * C; i += blockDim.x) {
      const int r = i / C, c = i % C, token = row0 + r;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (token < n) v = *reinterpret_cast<const uint4*>(src + ((long long)token * heads + head) * D + c * 8);
      *reinterpret_cast<uint4*>(chunk(r, c)) = v;
    }
  }

  // A fragment of the 16x16 block at (row0, col0): rows are M, columns K.
  __device__ __forceinline__ void a_frag(uint32_t a[4], int row0, int col0) const {
    const int l = threadIdx.x & 31, m = l >> 3, r = row0 + (l & 7) + ((m & 1) << 3);
    ldmatrix_x4(a, chunk(r, (col0 >> 3) + (m >> 1)));
  }

  // B fragments of two 16x8 blocks whose N index is the tile's row (the tile holds B
  // transposed): n-block n0 in b[0], b[1] and n-block n0 + 8 in b[2], b[3], K from column k0.
  __device__ __forceinline__ void b_frags_nk(uint32_t b[4], int n0, int k0) const {
    const int l = threadIdx.x & 31, m = l >> 3, r = n0 + (l & 7) + ((m >> 1) << 3);
    ldmatrix_x4(b, chunk(r, (k0 >> 3) + (m & 1)));
  }

  // B fragments of two 16x8 blocks whose K index is the tile's row (the tile holds B as it is):
  // K from row k0, n-block n0 in b[0], b[1] and n-block n0 + 8 in b[2], b[3].
  __device__ __forceinline__ void b_frags_kn(uint32_t b[4], int k0, int n0) const {
    const int l = threadIdx.x & 31, m = l >> 3, r = k0 + (l & 7) + ((m & 1) << 3);
    ldmatrix_x4_trans(b, chunk(r, (n0 >> 3) + (m >> 1)));
  }
};

// The A fragment for K columns 16j .. 16j + 15 of a 16 x N product held in C fragments
// (acc[N/8][4]), rounded to bf16: the flash-attention reuse of P (or dS) as the next A operand.
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// acc[i][..] = 0 for the N / 8 accumulator fragments of a 16 x N product.
template <int N>
__device__ __forceinline__ void zero_acc(float (*acc)[4]) {
  for (int i = 0; i < N / 8; ++i)
    for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
}

// acc (16 x N) += A Bᵀ for one 16-wide K step: `a` the A fragment of that step, B's rows
// n0 .. n0 + N - 1 of tile `b`, columns k0 .. k0 + 15.
template <int D, int N>
__device__ __forceinline__ void mma_abt_step(float (*acc)[4], const uint32_t a[4], const SwizzledTile<D>& b, int n0,
                                             int k0) {
  for (int np = 0; np < N / 16; ++np) {
    uint32_t f[4];
    b.b_frags_nk(f, n0 + np * 16, k0);
    mma_bf16(acc[2 * np], a, f[0], f[1]);
    mma_bf16(acc[2 * np + 1], a, f[2], f[3]);
  }
}

// acc (16 x N) += A Bᵀ over all D columns: A is rows a0 .. a0 + 15 of tile `a`, B rows
// n0 .. n0 + N - 1 of tile `b` (S = Q Kᵀ, dP = dO Vᵀ, and their transposes).
template <int D, int N>
__device__ __forceinline__ void mma_abt(float (*acc)[4], const SwizzledTile<D>& a, int a0, const SwizzledTile<D>& b,
                                        int n0) {
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t f[4];
    a.a_frag(f, a0, ks * 16);
    mma_abt_step<D, N>(acc, f, b, n0, ks * 16);
  }
}

// acc (16 x D) += P B: P (16 x K) held in C fragments p[K / 8][4], rounded to bf16 as the A
// operand; B is rows k0 .. k0 + K - 1 of tile `b` (O += P V, dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K).
template <int D, int K>
__device__ __forceinline__ void mma_pb(float (*acc)[4], const float (*p)[4], const SwizzledTile<D>& b, int k0) {
  for (int j = 0; j < K / 16; ++j) {
    uint32_t a[4];
    c_to_a(a, p[2 * j], p[2 * j + 1]);
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t f[4];
      b.b_frags_kn(f, k0 + j * 16, dp * 16);
      mma_bf16(acc[2 * dp], a, f[0], f[1]);
      mma_bf16(acc[2 * dp + 1], a, f[2], f[3]);
    }
  }
}

}  // namespace sc
