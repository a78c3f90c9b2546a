/* Shared by the fiber benchmarks: a monotonic clock in ns, and the switch
 * pair that is the floor under every await (src/fiber-switch.h directly, no
 * uvp.h): a fiber that only switches back to main. */
#ifndef UVP_BENCH_FIBER_COMMON_H
#define UVP_BENCH_FIBER_COMMON_H

#include <stdint.h>
#include <time.h>

#include "../src/fiber-switch.h"

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The two ends of the pair: the includer's thread and the fiber. */
static uvp__fiber_ctx_t bench_pair_main, bench_pair_fib;

static inline void bench_pair_entry(void *arg, void *msg) {
  (void)arg;
  for (;;)
    msg = uvp__fiber_switch(&bench_pair_fib, &bench_pair_main, msg);
}

/* Sets the pair up on a stack of size bytes at base (the caller's, kept
 * until uvp__fiber_destroy(&bench_pair_fib)). */
static inline void bench_pair_init(char *base, size_t size) {
  uvp__fiber_thread_init(&bench_pair_main);
  uvp__fiber_init(&bench_pair_fib, base, size, bench_pair_entry, NULL);
}

/* ns per switch pair (into the fiber and back) over n pairs. */
static inline double bench_pair_ns(uint64_t n) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++)
    (void)uvp__fiber_switch(&bench_pair_main, &bench_pair_fib, NULL);
  return (double)(bench_now_ns() - t0) / (double)n;
}

#endif
