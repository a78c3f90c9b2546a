/* The costs behind uvp's fiber layer (src/fiber-switch.c, src/fiber-stack.c):
 *
 * 1. A switch pair (into a fiber and back), for each candidate built in:
 *      uvp       uvp__fiber_switch, the layer's own assembly;
 *      fcontext  Boost.Context's jump_fcontext (when libboost-context-dev's
 *                static archive was found at build time);
 *      ucontext  glibc's swapcontext (where the C library has it: musl
 *                does not).
 *    ns per pair over N round trips, RUNS runs interleaved across the
 *    candidates: median, min and max.
 * 2. A fiber's life on a stack from the pool: get, init, run a fiber that
 *    writes DEPTH bytes of stack, exit, put; ns per life, with the pool
 *    keeping pages (the default), releasing them below a 16 KiB window or
 *    all but the top page (keep_warm), and with no pool (mmap and munmap
 *    each time).  Medians of RUNS runs of 2000 lives.
 * 3. Memory: resident pages of one fresh stack with a fiber suspended a few
 *    calls deep (mincore), and the resident set's growth per fiber over
 *    10 000 suspended fibers (/proc/self/statm), descriptor included.
 * Usage: fiber-switch [RUNS] [N]   (defaults 7 and 10000000; ucontext does
 * N/10 round trips) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(HAVE_UCONTEXT)
#include <ucontext.h>
#endif

#include "core-common.h"
#include "fiber-common.h"

#include "../src/fiber-stack.h"

#define MAX_RUNS 101

static void report(const char *name, double *v, int n, const char *unit) {
  double med = bench_median(v, n); /* v sorted: min and max at the ends */
  printf("  %-34s median %9.1f  min %9.1f  max %9.1f  %s\n", name, med, v[0],
         v[n - 1], unit);
}

/* ---- 1. switch pairs ----------------------------------------------------- */

/* uvp's own: bench_pair_ns (fiber-common.h). */

#if defined(HAVE_FCONTEXT)
/* Boost.Context's C entry points (boost/context/detail/fcontext.hpp). */
typedef void *fcontext_t;
typedef struct {
  fcontext_t fctx;
  void *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

static fcontext_t f_fib;

static void f_entry(transfer_t t) {
  for (;;)
    t = jump_fcontext(t.fctx, NULL);
}

static double run_fcontext(uint64_t n) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++)
    f_fib = jump_fcontext(f_fib, NULL).fctx;
  return (double)(bench_now_ns() - t0) / (double)n;
}
#endif

#if defined(HAVE_UCONTEXT)
static ucontext_t c_main, c_fib;

static void c_entry(void) {
  for (;;)
    swapcontext(&c_fib, &c_main);
}

static double run_ucontext(uint64_t n) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++)
    swapcontext(&c_main, &c_fib);
  return (double)(bench_now_ns() - t0) / (double)n;
}
#endif

static void bench_switch(uvp__stack_pool_t *pool, int runs, uint64_t n) {
  uvp__stack_t *s[3];
  double v[3][MAX_RUNS];
  for (int i = 0; i < 3; i++)
    if (uvp__stack_get(pool, 0, &s[i]) != 0)
      exit(1);
  bench_pair_init(s[0]->base, s[0]->size);
#if defined(HAVE_FCONTEXT)
  f_fib = make_fcontext(s[1]->base + s[1]->size, s[1]->size, f_entry);
#endif
#if defined(HAVE_UCONTEXT)
  getcontext(&c_fib);
  c_fib.uc_stack.ss_sp = s[2]->base;
  c_fib.uc_stack.ss_size = s[2]->size;
  c_fib.uc_link = NULL;
  makecontext(&c_fib, c_entry, 0);
#endif
  /* One warm-up round trip each: the stacks' first pages faulted in. */
  bench_pair_ns(1);
#if defined(HAVE_FCONTEXT)
  run_fcontext(1);
#endif
#if defined(HAVE_UCONTEXT)
  run_ucontext(1);
#endif
  for (int r = 0; r < runs; r++) {
    v[0][r] = bench_pair_ns(n);
#if defined(HAVE_FCONTEXT)
    v[1][r] = run_fcontext(n);
#endif
#if defined(HAVE_UCONTEXT)
    v[2][r] = run_ucontext(n / 10);
#endif
  }
  printf("switch pair (into a fiber and back), %d runs of %llu round trips\n",
         runs, (unsigned long long)n);
  report("uvp (own assembly)", v[0], runs, "ns/pair");
#if defined(HAVE_FCONTEXT)
  report("fcontext (Boost.Context)", v[1], runs, "ns/pair");
#else
  printf("  fcontext: not built (libboost-context-dev not found)\n");
#endif
#if defined(HAVE_UCONTEXT)
  report("ucontext (glibc swapcontext)", v[2], runs, "ns/pair");
#else
  printf("  ucontext: not built (no swapcontext in this C library)\n");
#endif
  /* The fibers stay suspended for good: their stacks go back unused. */
  uvp__fiber_destroy(&bench_pair_fib);
  for (int i = 0; i < 3; i++)
    uvp__stack_put(pool, s[i]);
}

/* ---- 2. a fiber's life on a pooled stack --------------------------------- */

static uvp__fiber_ctx_t l_main;
static size_t l_depth;

typedef struct {
  uvp__fiber_ctx_t ctx;
  char *top;
} life_t;

static __attribute__((noinline)) void write_down(char *top, size_t depth) {
  volatile char buf[1024];
  buf[0] = buf[1023] = 1;
  if ((size_t)(top - (char *)__builtin_frame_address(0)) < depth)
    write_down(top, depth);
  buf[0] = buf[1023];
}

static void l_entry(void *arg, void *msg) {
  life_t *l = arg;
  (void)msg;
  write_down(l->top, l_depth);
  uvp__fiber_exit(&l->ctx, &l_main, NULL);
}

static double lives(uvp__stack_pool_t *pool, int count) {
  life_t l;
  uvp__stack_t *s;
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < count; i++) {
    if (uvp__stack_get(pool, 0, &s) != 0)
      exit(1);
    l.top = s->base + s->size;
    uvp__fiber_init(&l.ctx, s->base, s->size, l_entry, &l);
    uvp__fiber_watch(&l.ctx, s); /* ASan learns its bounds */
    (void)uvp__fiber_switch(&l_main, &l.ctx, NULL);
    uvp__fiber_destroy(&l.ctx);
    uvp__stack_put(pool, s);
  }
  return (double)(bench_now_ns() - t0) / count;
}

static void bench_lives(int runs) {
  static const size_t depths[] = {1024, 16 * 1024, 64 * 1024};
  static const struct {
    const char *name;
    size_t max_idle, keep_warm;
  } ways[] = {
      {"pool, keep pages (default)", 64, UVP__STACK_KEEP_ALL},
      {"pool, keep_warm 16 KiB", 64, 16 * 1024},
      {"pool, keep_warm 0 (top page)", 64, 0},
      {"no pool (mmap + munmap)", 0, 0},
  };
  enum { WAYS = sizeof(ways) / sizeof(ways[0]) };
  double v[WAYS][MAX_RUNS];
  uvp__fiber_thread_init(&l_main);
  for (size_t d = 0; d < sizeof(depths) / sizeof(depths[0]); d++) {
    l_depth = depths[d];
    for (int r = 0; r < runs; r++)
      for (size_t w = 0; w < WAYS; w++) {
        uvp__stack_pool_t pool;
        uvp__stack_pool_init(&pool, 0);
        pool.max_idle = ways[w].max_idle;
        pool.keep_warm = ways[w].keep_warm;
        (void)lives(&pool, 1); /* a warm stack in the pool, if it keeps one */
        v[w][r] = lives(&pool, 2000);
        uvp__stack_pool_close(&pool);
      }
    printf("fiber life (get, init, run writing %zu KiB of stack, exit, "
           "put), %d runs of 2000\n",
           depths[d] / 1024, runs);
    for (size_t w = 0; w < WAYS; w++)
      report(ways[w].name, v[w], runs, "ns/life");
  }
}

/* ---- 3. memory ----------------------------------------------------------- */

static uvp__fiber_ctx_t m_main;

static __attribute__((noinline)) void m_inner(uvp__fiber_ctx_t *self) {
  volatile char buf[128];
  buf[0] = 0;
  (void)uvp__fiber_switch(self, &m_main, (void *)buf);
}

static __attribute__((noinline)) void m_middle(uvp__fiber_ctx_t *self) {
  volatile char buf[128];
  buf[0] = 0;
  m_inner(self);
  buf[1] = buf[0];
}

static void m_entry(void *arg, void *msg) {
  (void)msg;
  m_middle(arg);
  uvp__fiber_exit(arg, &m_main, NULL);
}

static void bench_memory(void) {
  enum { N = 10000 };
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uvp__stack_pool_t pool;
  uvp__stack_t **s = calloc(N, sizeof(*s));
  uvp__fiber_ctx_t *c = calloc(N, sizeof(*c));
  long long before, after;
  if (s == NULL || c == NULL)
    exit(1);
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&m_main);
  /* The arrays' own pages, out of the figure. */
  memset(s, 0, N * sizeof(*s));
  memset(c, 0, N * sizeof(*c));
  before = bench_rss_bytes();
  for (int i = 0; i < N; i++) {
    if (uvp__stack_get(&pool, 0, &s[i]) != 0)
      exit(1);
    uvp__fiber_init(&c[i], s[i]->base, s[i]->size, m_entry, &c[i]);
    uvp__fiber_watch(&c[i], s[i]);
    (void)uvp__fiber_switch(&m_main, &c[i], NULL);
  }
  after = bench_rss_bytes();
  /* The usable part and the descriptor's 32 bytes: whole pages. */
  size_t len = (s[0]->size + page - 1) & ~(page - 1);
  long resident = bench_resident_pages(s[0]->base, len);
  if (before < 0 || after < 0 || resident < 0)
    exit(1);
  printf("memory: a suspended fiber two calls deep on a fresh %zu KiB stack\n",
         len / 1024);
  printf("  resident pages of its stack (mincore): %ld of %zu (%zu bytes)\n",
         resident, len / page, (size_t)resident * page);
  printf("  RSS growth over %d suspended fibers: %.0f bytes per fiber\n", N,
         (double)(after - before) / N);
  for (int i = 0; i < N; i++) {
    (void)uvp__fiber_switch(&m_main, &c[i], NULL);
    uvp__fiber_destroy(&c[i]);
    uvp__stack_put(&pool, s[i]);
  }
  uvp__stack_pool_close(&pool);
  free(s);
  free(c);
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 7;
  uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 10000000u;
  uvp__stack_pool_t pool;
  if (runs < 1 || runs > MAX_RUNS || n < 10)
    return 2;
  uvp__stack_pool_init(&pool, 0);
  bench_switch(&pool, runs, n);
  uvp__stack_pool_close(&pool);
  bench_lives(runs < 5 ? runs : 5);
  bench_memory();
  return 0;
}
