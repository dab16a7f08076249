// The kernel harness runtime: runs one launch of a kernel compiled for the CPU (cuda_sim.h)
// block after block, each block's threads as ucontext fibers that switch at __syncthreads()
// and at warp exchanges, in an order chosen per pass by the launch's schedule:
//   0: forward, 1: reverse, 2 + seed: a seeded shuffle, different in every pass and block.
// Global buffers (sch_alloc) and every shared-memory array sit at the end of their own pages
// with an inaccessible page after (and before) them, so an out-of-bounds access faults; the
// fault handler names the buffer and the kernel, block and thread, then aborts. Shared memory
// is filled with 0xFF bytes (NaN as f32 and f64) at each block start, so reading a value that
// no thread of this block wrote yields NaN. A deadlock (threads waiting at different barriers,
// a warp exchange some lane never reaches) and a misuse (mismatched shuffle masks, shared
// memory beyond 48 KiB) end the launch with an error instead of hanging.
#include "cuda_sim.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

extern "C" {
uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;
}

typedef void (*sch_entry_fn)(const uint64_t* args);

namespace {

const size_t kPage = 4096;
const size_t kStack = 256 * 1024;
const size_t kMaxShared = 48 * 1024;

// A guarded allocation: [guard page][padding | data][guard page], data ending at the guard.
struct Region {
  unsigned char* base;
  size_t total;
  unsigned char* data;
  size_t bytes;
  char label[96];
};

std::mutex g_regions_mutex;
std::vector<Region>* g_regions = new std::vector<Region>();

unsigned char* guarded_alloc(size_t bytes, const char* label) {
  size_t usable = (bytes + kPage - 1) / kPage * kPage;
  if (usable == 0) usable = kPage;
  size_t total = usable + 2 * kPage;
  void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  unsigned char* base = (unsigned char*)m;
  mprotect(base, kPage, PROT_NONE);
  mprotect(base + kPage + usable, kPage, PROT_NONE);
  Region r;
  r.base = base;
  r.total = total;
  r.data = base + kPage + usable - bytes;
  r.bytes = bytes;
  snprintf(r.label, sizeof r.label, "%s", label ? label : "?");
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  g_regions->push_back(r);
  return r.data;
}

void guarded_free(void* data) {
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  for (size_t i = 0; i < g_regions->size(); ++i) {
    Region& r = (*g_regions)[i];
    if (r.data == data) {
      munmap(r.base, r.total);
      (*g_regions)[i] = g_regions->back();
      g_regions->pop_back();
      return;
    }
  }
}

enum class St { Run, Barrier, Warp, Done };

struct Fiber {
  ucontext_t ctx;
  St st;
  uint64_t wait;
};

struct Warp {
  unsigned mask;
  unsigned arrived;
  uint64_t gen;
  uint64_t slots[2][32][4];
};

struct Launch {
  const char* name;
  sch_entry_fn entry;
  const uint64_t* args;
  unsigned threads;
  unsigned char* stacks;
  size_t stacks_bytes;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t sched;
  unsigned cur;
  unsigned live;
  unsigned at_barrier;
  std::map<const void*, std::pair<unsigned char*, size_t>> statics;
  size_t static_bytes;
  unsigned char* dynamic;
  size_t dynamic_bytes;
  bool failed;
  std::string error;
};

Launch* g = nullptr;
std::mutex g_launch_mutex;

// What the fault handler reports about the running kernel.
const char* volatile g_kernel = "(no kernel)";

void on_fault(int sig, siginfo_t* info, void*) {
  char msg[512];
  uintptr_t a = (uintptr_t)info->si_addr;
  int n = -1;
  for (const Region& r : *g_regions) {
    uintptr_t base = (uintptr_t)r.base, data = (uintptr_t)r.data;
    if (a < base || a >= base + r.total) continue;
    if (a >= data + r.bytes)
      n = snprintf(msg, sizeof msg,
                   "kernel harness: %s, block %u, thread %u: out-of-bounds access %lu bytes past the end of "
                   "`%s` (%lu bytes)\n",
                   g_kernel, blockIdx.x, threadIdx.x, (unsigned long)(a - data - r.bytes), r.label,
                   (unsigned long)r.bytes);
    else
      n = snprintf(msg, sizeof msg,
                   "kernel harness: %s, block %u, thread %u: out-of-bounds access %lu bytes before the start of "
                   "`%s` (%lu bytes)\n",
                   g_kernel, blockIdx.x, threadIdx.x, (unsigned long)(data - a), r.label, (unsigned long)r.bytes);
    break;
  }
  if (n < 0 && g != nullptr && a >= (uintptr_t)g->stacks && a < (uintptr_t)g->stacks + g->stacks_bytes)
    n = snprintf(msg, sizeof msg, "kernel harness: %s, block %u, thread %u: the thread's stack overflowed\n",
                 g_kernel, blockIdx.x, threadIdx.x);
  if (n < 0) {
    // Not a harness address: let the default action report it.
    signal(sig, SIG_DFL);
    return;
  }
  ssize_t ignored = write(2, msg, (size_t)n);
  (void)ignored;
  signal(SIGABRT, SIG_DFL);
  abort();
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
  // The handler runs on an alternate stack: the faulting fiber's may be the one that overflowed.
  static thread_local bool have_alt = false;
  if (!have_alt) {
    stack_t ss;
    ss.ss_sp = malloc(64 * 1024);
    ss.ss_size = 64 * 1024;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    have_alt = true;
  }
}

void yield() { swapcontext(&g->fibers[g->cur].ctx, &g->sched); }

void release_barrier_if_complete() {
  if (g->at_barrier > 0 && g->at_barrier == g->live) {
    for (Fiber& f : g->fibers)
      if (f.st == St::Barrier) f.st = St::Run;
    g->at_barrier = 0;
  }
}

void fiber_main() {
  g->entry(g->args);
  // A barrier must be reached by every thread of the block or by none (CUDA leaves anything
  // else undefined): exiting while others wait at one is a divergent barrier.
  if (g->at_barrier > 0) sc_sim::fail("exits while other threads of the block wait at __syncthreads (a divergent barrier)");
  Fiber& f = g->fibers[g->cur];
  f.st = St::Done;
  g->live -= 1;
  release_barrier_if_complete();
  // uc_link returns to the scheduler.
}

std::vector<unsigned> pass_order(uint64_t schedule, unsigned block, unsigned pass, unsigned n) {
  std::vector<unsigned> order(n);
  for (unsigned i = 0; i < n; ++i) order[i] = i;
  if (schedule == 1) {
    std::reverse(order.begin(), order.end());
  } else if (schedule >= 2) {
    std::mt19937_64 rng(schedule * 0x9E3779B97F4A7C15ull ^ ((uint64_t)block << 20) ^ pass);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

void poison_shared() {
  for (auto& s : g->statics) memset(s.second.first, 0xFF, s.second.second);
  if (g->dynamic_bytes) memset(g->dynamic, 0xFF, g->dynamic_bytes);
}

// A fresh fiber for thread `t` (out of line: getcontext returns twice).
__attribute__((noinline)) void make_fiber(Launch& l, unsigned t) {
  Fiber& f = l.fibers[t];
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = l.stacks + (size_t)t * kStack + kPage;
  f.ctx.uc_stack.ss_size = kStack - kPage;
  f.ctx.uc_link = &l.sched;
  makecontext(&f.ctx, fiber_main, 0);
  f.st = St::Run;
  f.wait = 0;
}

std::string where() {
  char buf[160];
  snprintf(buf, sizeof buf, "%s, block %u, thread %u: ", g->name, blockIdx.x, threadIdx.x);
  return buf;
}

}  // namespace

namespace sc_sim {

void fail(const char* what) {
  g->error = where() + what;
  g->failed = true;
  g->fibers[g->cur].st = St::Done;
  setcontext(&g->sched);
  abort();
}

unsigned lane() { return threadIdx.x & 31u; }

void syncthreads() {
  if (g->live < g->threads) fail("reaches __syncthreads after other threads of the block exited (a divergent barrier)");
  Fiber& f = g->fibers[g->cur];
  f.st = St::Barrier;
  g->at_barrier += 1;
  release_barrier_if_complete();
  yield();
}

void warp_exchange_n(unsigned mask, const uint64_t* bits, unsigned n, uint64_t* out) {
  if (n == 0 || n > 4) fail("a warp exchange of more than 4 words per lane");
  const unsigned me = lane();
  Warp& w = g->warps[threadIdx.x >> 5];
  if (!((mask >> me) & 1u)) fail("a warp exchange (shuffle/vote) whose mask excludes the calling lane");
  const unsigned first = threadIdx.x & ~31u;
  if (first + 32 > g->threads && (mask >> (g->threads - first)) != 0)
    fail("a warp exchange whose mask names lanes beyond the block");
  if (w.arrived == 0) {
    w.mask = mask;
  } else if (w.mask != mask) {
    fail("lanes of one warp meet at a warp exchange with different masks");
  }
  const uint64_t gen = w.gen;
  for (unsigned i = 0; i < n; ++i) w.slots[gen & 1][me][i] = bits[i];
  w.arrived |= 1u << me;
  Fiber& f = g->fibers[g->cur];
  if (w.arrived == w.mask) {
    w.arrived = 0;
    w.gen += 1;
    for (unsigned l = 0; l < 32 && first + l < g->threads; ++l) {
      Fiber& o = g->fibers[first + l];
      if (o.st == St::Warp && o.wait == gen) o.st = St::Run;
    }
  } else {
    f.st = St::Warp;
    f.wait = gen;
  }
  yield();
  for (unsigned l = 0; l < 32; ++l)
    for (unsigned i = 0; i < n; ++i) out[l * n + i] = ((w.mask >> l) & 1u) ? w.slots[gen & 1][l][i] : ~0ull;
}

void warp_exchange(unsigned mask, uint64_t bits, uint64_t* out) { warp_exchange_n(mask, &bits, 1, out); }


void* shared_static(const void* site, size_t bytes, const char* name) {
  auto it = g->statics.find(site);
  if (it != g->statics.end()) return it->second.first;
  g->static_bytes += bytes;
  if (g->static_bytes + g->dynamic_bytes > kMaxShared) {
    char buf[200];
    snprintf(buf, sizeof buf, "shared memory: %zu B static (with `%s`) + %zu B dynamic exceeds the 48 KiB limit",
             g->static_bytes, name, g->dynamic_bytes);
    fail(buf);
  }
  char label[96];
  snprintf(label, sizeof label, "__shared__ %s", name);
  unsigned char* p = guarded_alloc(bytes, label);
  if (p == nullptr) fail("out of memory for shared memory");
  memset(p, 0xFF, bytes);
  g->statics[site] = {p, bytes};
  return p;
}

void* shared_dynamic() { return g->dynamic; }

}  // namespace sc_sim

extern "C" {

void* sch_alloc(size_t bytes, const char* label) { return guarded_alloc(bytes, label); }

void sch_free(void* data) { guarded_free(data); }

// Runs `entry` over `grid` blocks of `block` threads; returns 0, or 1 with the reason in `err`.
int sch_launch(const char* name, sch_entry_fn entry, const uint64_t* args, unsigned grid, unsigned block,
               unsigned shared_bytes, uint64_t schedule, char* err, size_t err_len) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  install_fault_handler();
  Launch l;
  l.name = name;
  l.entry = entry;
  l.args = args;
  l.threads = block;
  l.static_bytes = 0;
  l.failed = false;
  l.dynamic_bytes = shared_bytes;
  l.dynamic = shared_bytes ? guarded_alloc(shared_bytes, "extern __shared__ (dynamic)") : nullptr;
  l.stacks_bytes = (size_t)block * kStack;
  l.stacks = (unsigned char*)mmap(nullptr, l.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (unsigned t = 0; t < block; ++t) mprotect(l.stacks + (size_t)t * kStack, kPage, PROT_NONE);
  l.fibers.resize(block);
  l.warps.resize((block + 31) / 32);
  g = &l;
  g_kernel = name;
  gridDim = dim3{grid, 1, 1};
  blockDim = dim3{block, 1, 1};
  int status = 0;
  if (shared_bytes > kMaxShared) {
    l.error = std::string(name) + ": dynamic shared memory above the 48 KiB limit";
    l.failed = true;
  }
  for (unsigned b = 0; b < grid && !l.failed; ++b) {
    blockIdx = uint3{b, 0, 0};
    threadIdx = uint3{0, 0, 0};
    poison_shared();
    for (Warp& w : l.warps) memset(&w, 0, sizeof w);
    l.live = block;
    l.at_barrier = 0;
    for (unsigned t = 0; t < block; ++t) make_fiber(l, t);
    for (unsigned pass = 0; !l.failed; ++pass) {
      bool progress = false, all_done = true;
      for (unsigned t : pass_order(schedule, b, pass, block)) {
        Fiber& f = l.fibers[t];
        if (f.st != St::Run) continue;
        l.cur = t;
        threadIdx = uint3{t, 0, 0};
        swapcontext(&l.sched, &f.ctx);
        progress = true;
        if (l.failed) break;
      }
      for (const Fiber& f : l.fibers) all_done = all_done && f.st == St::Done;
      if (all_done || l.failed) break;
      if (!progress) {
        unsigned at_bar = 0, at_warp = 0, done = 0;
        for (const Fiber& f : l.fibers) {
          at_bar += f.st == St::Barrier;
          at_warp += f.st == St::Warp;
          done += f.st == St::Done;
        }
        char buf[240];
        snprintf(buf, sizeof buf,
                 "%s, block %u: deadlock: %u threads wait at __syncthreads, %u at a warp exchange, %u have exited",
                 name, b, at_bar, at_warp, done);
        l.error = buf;
        l.failed = true;
      }
    }
  }
  if (l.failed) {
    snprintf(err, err_len, "%s", l.error.c_str());
    status = 1;
  }
  for (auto& s : l.statics) guarded_free(s.second.first);
  if (l.dynamic) guarded_free(l.dynamic);
  munmap(l.stacks, l.stacks_bytes);
  g = nullptr;
  g_kernel = "(no kernel)";
  return status;
}

}  // extern "C"
