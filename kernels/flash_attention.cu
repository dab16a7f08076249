// Flash attention (FlashAttention-2 style) on tensor cores for packed rows of documents: each
// token attends to the earlier tokens of its own document only (causal, block-diagonal), with
// grouped-query heads mapped by index (query head h reads kv head h / (hq / hkv)). Forward and a
// deterministic backward; bf16 q/k/v/o, f32 scores, online softmax and accumulation; no [T, T]
// tensor, memory O(T). CPU twin: the varlen attention of src/ops/attention.rs; launcher and the
// tile-size rationale: src/ops/flash_attention.rs.
//
// Layout: q, o, dq [n, hq, D]; k, v, dk, dv [n, hkv, D] (tokens of all rows flattened);
// doc_start[i] the flattened index of token i's document's first token (non-decreasing: a row
// starts a document); lse, delta [hq, n] f32. Scores are computed in base 2: scale_log2 is the
// softmax scale times log2(e), and lse is stored in natural log.
//
// Tiles: every block is 4 warps; each warp owns 16 rows of the block's tile (queries in the
// forward and dQ passes, keys in the dK/dV pass). Key (query) tiles that lie wholly above the
// diagonal or before the document's first token are never visited; the per-element mask is
// applied only to tiles that straddle a boundary.
//   forward   : block = (query tile of 64, query head); loops over key tiles of 64.
//   dK/dV pass: block = (key tile of 64, query head); loops over the query tiles (FA_BWD_BR) that
//               can see the keys; the head's share of dK, dV accumulated in registers and
//               written in f32 to dk_part, dv_part [n, hq, D]. A block per query head, not per kv
//               head: with 7 query heads per kv head (Qwen2.5-Coder-0.5B) a block per kv head
//               left most of the chip idle (2.9 ms against 0.25 ms for the forward on an H200).
//   dK/dV sum : dK, dV [n, hkv, D] in bf16 = the sum of the group's shares, in head order.
//   dQ pass   : block = (query tile of 64, query head); loops over key tiles (FA_DQ_BC).
// No atomics: every output element is written by exactly one thread, so results are the same
// bits on every run. delta = rowsum(dO * O) comes from flash_attention_bwd_dot first.
#include "tensor_core.cuh"

using namespace sc;

namespace {

// FLASH_THREADS (4 warps) and FLASH_ROWS (16 rows per warp) come from kernel_constants.rs.
static_assert(FLASH_THREADS == 128 && FLASH_ROWS == 64, "4 warps of 16 rows each");
constexpr int FA_ROWS = FLASH_ROWS;
constexpr float LN2 = 0.69314718055994530942f;
constexpr float LOG2E = 1.44269504088896340736f;

// Query tile of the dK/dV pass and key tile of the dQ pass: 64 for head dim 64, 32 for 128, so
// four [tile x D] bf16 tiles fit the 48 KiB of shared memory.
template <int D> struct BwdTile { static constexpr int value = D <= 64 ? 64 : 32; };

// The first token after the document that holds `key` (the end of the queries that can see it).
__device__ __forceinline__ int doc_end(const unsigned* __restrict__ doc_start, int key, int n) {
  int lo = key + 1, hi = n;  // answer in [lo, hi]
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if ((int)doc_start[mid] > key) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

// Query tiles of a launch in descending order of work (later tiles see more keys).
__device__ __forceinline__ int query_tile_of_block(int tiles, int heads, int& head) {
  head = blockIdx.x % heads;
  return tiles - 1 - (int)(blockIdx.x / heads);
}

template <int D>
__device__ void fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                    const unsigned* __restrict__ doc_start, bf16* __restrict__ o, float* __restrict__ lse, int n,
                    int hq, int hkv, float scale_log2) {
  constexpr int BC = 64;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned for the tile loads
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  const SwizzledTile<D> sq{smem}, sk{smem + FA_ROWS * D}, sv{smem + (FA_ROWS + BC) * D};
  int h;
  const int tiles = (n + FA_ROWS - 1) / FA_ROWS;
  const int q0 = query_tile_of_block(tiles, hq, h) * FA_ROWS;
  const int kvh = h / (hq / hkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int q_last = min(q0 + FA_ROWS, n) - 1;
  const int last_start = (int)doc_start[q_last];
  // This thread's two query rows and where their documents start (no key for a padding row).
  int row[2], first[2];
  for (int e = 0; e < 2; ++e) {
    row[e] = q0 + warp * 16 + g + e * 8;
    first[e] = row[e] < n ? (int)doc_start[row[e]] : n;
  }
  sq.load(q, q0, FA_ROWS, n, hq, h);
  __syncthreads();
  uint32_t qa[D / 16][4];
  for (int ks = 0; ks < D / 16; ++ks) sq.a_frag(qa[ks], warp * 16, ks * 16);

  float acc[D / 8][4];
  zero_acc<D>(acc);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  const int kt_first = (int)doc_start[q0] / BC, kt_last = q_last / BC;
  for (int kt = kt_first; kt <= kt_last; ++kt) {
    const int k0 = kt * BC;
    __syncthreads();  // every warp is done with the previous K and V tiles
    sk.load(k, k0, BC, n, hkv, kvh);
    sv.load(v, k0, BC, n, hkv, kvh);
    __syncthreads();
    float s[BC / 8][4];
    zero_acc<BC>(s);
    for (int ks = 0; ks < D / 16; ++ks) mma_abt_step<D, BC>(s, qa[ks], sk, 0, ks * 16);
    // Whole tile visible to every row of the block: below the diagonal, inside every document.
    const bool masked = !(k0 + BC - 1 <= q0 && k0 >= last_start && q0 + FA_ROWS <= n);
    float mx[2] = {-INFINITY, -INFINITY};
    for (int i = 0; i < BC / 8; ++i)
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, key = k0 + i * 8 + 2 * t + (e & 1);
        float x = s[i][e] * scale_log2;
        if (masked && (key > row[r] || key < first[r])) x = -INFINITY;
        s[i][e] = x;
        mx[r] = fmaxf(mx[r], x);
      }
    float alpha[2], ref[2];
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      // A row with no visible key yet keeps m = -inf; exponents then refer to 0.
      ref[r] = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = exp2f(m[r] - ref[r]);
      m[r] = m_new;
      l[r] *= alpha[r];
    }
    for (int i = 0; i < BC / 8; ++i)
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[i][e] - ref[e >> 1]);
        s[i][e] = p;
        l[e >> 1] += p;
      }
    for (int i = 0; i < D / 8; ++i)
      for (int e = 0; e < 4; ++e) acc[i][e] *= alpha[e >> 1];
    mma_pb<D, BC>(acc, s, sv, 0);
  }
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= n) continue;
    const float inv = 1.f / l[r];
    bf16* out = o + ((long long)row[r] * hq + h) * D + 2 * t;
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<uint32_t*>(out + i * 8) = pack_bf16(acc[i][2 * r] * inv, acc[i][2 * r + 1] * inv);
    if (t == 0) lse[(long long)h * n + row[r]] = (m[r] + log2f(l[r])) * LN2;
  }
}

// One query head's share of dK and dV of one key tile (f32, [n, hq, D]; dK already scaled).
template <int D>
__device__ void bwd_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const bf16* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, const unsigned* __restrict__ doc_start,
                         float* __restrict__ dk_part, float* __restrict__ dv_part, int n, int hq, int hkv,
                         float scale_log2) {
  constexpr int BR = BwdTile<D>::value;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned for the tile loads
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  const SwizzledTile<D> sk{smem}, sv{smem + FA_ROWS * D}, sq{smem + 2 * FA_ROWS * D},
      sdo{smem + (2 * FA_ROWS + BR) * D};
  // Key tiles in ascending order: the first ones are seen by the most queries.
  const int h = blockIdx.x % hq, k0 = (blockIdx.x / hq) * FA_ROWS, kvh = h / (hq / hkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int k_last = min(k0 + FA_ROWS, n) - 1;
  const int q_end = doc_end(doc_start, k_last, n);  // queries k0 .. q_end - 1 can see the tile
  int key[2];
  for (int e = 0; e < 2; ++e) key[e] = k0 + warp * 16 + g + e * 8;
  sk.load(k, k0, FA_ROWS, n, hkv, kvh);
  sv.load(v, k0, FA_ROWS, n, hkv, kvh);

  float dka[D / 8][4], dva[D / 8][4];
  zero_acc<D>(dka);
  zero_acc<D>(dva);

  for (int qt = k0 / BR; qt * BR < q_end; ++qt) {
    const int q0 = qt * BR;
    __syncthreads();  // every warp is done with the previous Q and dO tiles
    sq.load(q, q0, BR, n, hq, h);
    sdo.load(dout, q0, BR, n, hq, h);
    __syncthreads();
    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for this warp's 16 keys: rows are keys, columns queries.
    float st[BR / 8][4], dpt[BR / 8][4];
    zero_acc<BR>(st);
    zero_acc<BR>(dpt);
    mma_abt<D, BR>(st, sk, warp * 16, sq, 0);
    mma_abt<D, BR>(dpt, sv, warp * 16, sdo, 0);
    const int q_last = min(q0 + BR, n) - 1;
    const bool masked = !(k_last <= q0 && q0 + BR <= n && (int)doc_start[q_last] <= k0);
    // Pᵀ = exp(Sᵀ - lse) and dSᵀ = Pᵀ (dPᵀ - delta), in place; zero where a query cannot see
    // the key (and for padding queries past n).
    for (int i = 0; i < BR / 8; ++i)
      for (int c = 0; c < 2; ++c) {
        const int query = q0 + i * 8 + 2 * t + c;
        const bool real = query < n;
        const float lse2 = real ? lse[(long long)h * n + query] * LOG2E : 0.f;
        const float dl = real ? delta[(long long)h * n + query] : 0.f;
        const int first = real ? (int)doc_start[query] : n;
        for (int r2 = 0; r2 < 2; ++r2) {
          const int e = 2 * r2 + c;
          const bool visible = real && (!masked || (key[r2] <= query && key[r2] >= first));
          const float p = visible ? exp2f(st[i][e] * scale_log2 - lse2) : 0.f;
          st[i][e] = p;
          dpt[i][e] = p * (dpt[i][e] - dl);
        }
      }
    // dV += Pᵀ dO and dK += dSᵀ Q: the queries are the K dimension.
    mma_pb<D, BR>(dva, st, sdo, 0);
    mma_pb<D, BR>(dka, dpt, sq, 0);
  }
  const float scale = scale_log2 / LOG2E;
  for (int r2 = 0; r2 < 2; ++r2) {
    if (key[r2] >= n) continue;
    const long long off = ((long long)key[r2] * hq + h) * D + 2 * t;
    for (int i = 0; i < D / 8; ++i) {
      *reinterpret_cast<float2*>(dk_part + off + i * 8) =
          make_float2(dka[i][2 * r2] * scale, dka[i][2 * r2 + 1] * scale);
      *reinterpret_cast<float2*>(dv_part + off + i * 8) = make_float2(dva[i][2 * r2], dva[i][2 * r2 + 1]);
    }
  }
}

// dQ of one query tile of one query head.
template <int D>
__device__ void bwd_dq(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                       const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                       const unsigned* __restrict__ doc_start, bf16* __restrict__ dq, int n, int hq, int hkv,
                       float scale_log2) {
  constexpr int BC = BwdTile<D>::value;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned for the tile loads
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  const SwizzledTile<D> sq{smem}, sdo{smem + FA_ROWS * D}, sk{smem + 2 * FA_ROWS * D},
      sv{smem + (2 * FA_ROWS + BC) * D};
  int h;
  const int tiles = (n + FA_ROWS - 1) / FA_ROWS;
  const int q0 = query_tile_of_block(tiles, hq, h) * FA_ROWS;
  const int kvh = h / (hq / hkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int q_last = min(q0 + FA_ROWS, n) - 1;
  const int last_start = (int)doc_start[q_last];
  int row[2], first[2];
  float lse2[2], dl[2];
  for (int e = 0; e < 2; ++e) {
    row[e] = q0 + warp * 16 + g + e * 8;
    const bool real = row[e] < n;
    first[e] = real ? (int)doc_start[row[e]] : n;
    lse2[e] = real ? lse[(long long)h * n + row[e]] * LOG2E : 0.f;
    dl[e] = real ? delta[(long long)h * n + row[e]] : 0.f;
  }
  sq.load(q, q0, FA_ROWS, n, hq, h);
  sdo.load(dout, q0, FA_ROWS, n, hq, h);

  float acc[D / 8][4];
  zero_acc<D>(acc);

  const int kt_first = (int)doc_start[q0] / BC, kt_last = q_last / BC;
  for (int kt = kt_first; kt <= kt_last; ++kt) {
    const int k0 = kt * BC;
    __syncthreads();
    sk.load(k, k0, BC, n, hkv, kvh);
    sv.load(v, k0, BC, n, hkv, kvh);
    __syncthreads();
    float s[BC / 8][4], dp[BC / 8][4];
    zero_acc<BC>(s);
    zero_acc<BC>(dp);
    mma_abt<D, BC>(s, sq, warp * 16, sk, 0);
    mma_abt<D, BC>(dp, sdo, warp * 16, sv, 0);
    const bool masked = !(k0 + BC - 1 <= q0 && k0 >= last_start && q0 + FA_ROWS <= n);
    for (int i = 0; i < BC / 8; ++i)
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, key = k0 + i * 8 + 2 * t + (e & 1);
        const bool visible = row[r] < n && (!masked || (key <= row[r] && key >= first[r]));
        const float p = visible ? exp2f(s[i][e] * scale_log2 - lse2[r]) : 0.f;
        dp[i][e] = p * (dp[i][e] - dl[r]);
      }
    // dQ += dS K: the keys are the K dimension.
    mma_pb<D, BC>(acc, dp, sk, 0);
  }
  const float scale = scale_log2 / LOG2E;
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= n) continue;
    bf16* out = dq + ((long long)row[r] * hq + h) * D + 2 * t;
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<uint32_t*>(out + i * 8) = pack_bf16(acc[i][2 * r] * scale, acc[i][2 * r + 1] * scale);
  }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_attention_fwd_d64(const bf16* q, const bf16* k, const bf16* v,
                                                                       const unsigned* doc_start, bf16* o, float* lse,
                                                                       int n, int hq, int hkv, float scale_log2) {
  fwd<64>(q, k, v, doc_start, o, lse, n, hq, hkv, scale_log2);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_attention_fwd_d128(const bf16* q, const bf16* k, const bf16* v,
                                                                        const unsigned* doc_start, bf16* o, float* lse,
                                                                        int n, int hq, int hkv, float scale_log2) {
  fwd<128>(q, k, v, doc_start, o, lse, n, hq, hkv, scale_log2);
}

// delta[h, i] = sum_d dout[i, h, d] * o[i, h, d] (f32), one warp per (token, head).
extern "C" __global__ void __launch_bounds__(BLOCK) flash_attention_bwd_dot(const bf16* o, const bf16* dout,
                                                                         float* delta, int n, int hq, int d) {
  const long long rows = (long long)n * hq;
  const long long r = (long long)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const bf16* a = o + r * d;
  const bf16* b = dout + r * d;
  float s = 0.f;
  for (int i = lane; i < d; i += 32) s += to_f(a[i]) * to_f(b[i]);
  s = warp_sum(s);
  const long long token = r / hq, head = r % hq;
  if (lane == 0) delta[head * n + token] = s;
}

extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_attention_bwd_dkdv_d64(
    const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* delta,
    const unsigned* doc_start, float* dk_part, float* dv_part, int n, int hq, int hkv, float scale_log2) {
  bwd_dkdv<64>(q, k, v, dout, lse, delta, doc_start, dk_part, dv_part, n, hq, hkv, scale_log2);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_attention_bwd_dkdv_d128(
    const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* delta,
    const unsigned* doc_start, float* dk_part, float* dv_part, int n, int hq, int hkv, float scale_log2) {
  bwd_dkdv<128>(q, k, v, dout, lse, delta, doc_start, dk_part, dv_part, n, hq, hkv, scale_log2);
}

// dk, dv [n, hkv, d] (bf16) = the sum over each kv head's group of query heads of dk_part,
// dv_part [n, hq, d] (f32), in head order; one thread per element.
extern "C" __global__ void __launch_bounds__(BLOCK) flash_attention_bwd_dkdv_sum(const float* dk_part,
                                                                              const float* dv_part, bf16* dk,
                                                                              bf16* dv, int n, int hq, int hkv,
                                                                              int d) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)n * hkv * d) return;
  const int e = (int)(i % d), group = hq / hkv;
  const long long row = i / d;  // token * hkv + kv head
  const long long first = ((row / hkv) * hq + (row % hkv) * group) * d + e;
  float sk = 0.f, sv = 0.f;
  for (int r = 0; r < group; ++r) {
    sk += dk_part[first + (long long)r * d];
    sv += dv_part[first + (long long)r * d];
  }
  dk[i] = from_f<bf16>(sk);
  dv[i] = from_f<bf16>(sv);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_attention_bwd_dq_d64(
    const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* delta,
    const unsigned* doc_start, bf16* dq, int n, int hq, int hkv, float scale_log2) {
  bwd_dq<64>(q, k, v, dout, lse, delta, doc_start, dq, n, hq, hkv, scale_log2);
}
extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_attention_bwd_dq_d128(
    const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* delta,
    const unsigned* doc_start, bf16* dq, int n, int hq, int hkv, float scale_log2) {
  bwd_dq<128>(q, k, v, dout, lse, delta, doc_start, dq, n, hq, hkv, scale_log2);
}
