/* What a short-lived fiber costs: ROUNDS rounds, each spawning N trivial
 * fibers (each returns at once), running them and joining them (the loop
 * runs until all have settled; then their promises are released).  The
 * first round is cold (stacks carved, pages touched); the others reuse
 * the pool's warm stacks.
 *
 * Prints, in ns per fiber: the first round, and the median, min and max
 * of the others (warm).  System calls: bench/run-spawn counts them with
 * strace -c over 1 round and over ROUNDS rounds (the difference is the
 * warm rounds').
 * Usage: fiber-spawn [N] [ROUNDS] [STACK_KIB]   (defaults 1000, 101, 0 =
 * the default size) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core-common.h"
#include "fiber-common.h"
#include "uvp.h"

#define MAX_ROUNDS 100001

static size_t ran;

static uvp_ret_t trivial(void *arg) {
  (void)arg;
  ran++;
  return uvp_ret_pass();
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
  int rounds = argc > 2 ? atoi(argv[2]) : 101;
  size_t stack_kib = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  size_t bad = 0;
  if (n == 0 || rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "usage: %s [N] [ROUNDS <= %d] [STACK_KIB]\n", argv[0],
            MAX_ROUNDS);
    return 2;
  }
  uvp_promise_t **fps = calloc(n, sizeof(*fps));
  double *ns = calloc((size_t)rounds, sizeof(*ns));
  if (fps == NULL || ns == NULL)
    return 1;
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  if (stack_kib != 0 && uvp_ctx_set_fiber_stack(ctx, stack_kib * 1024) != 0)
    return 1;
  for (int r = 0; r < rounds; r++) {
    ran = 0;
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n; i++)
      if (uvp_fiber_spawn(ctx, trivial, NULL, NULL, &fps[i]) != 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < n; i++) {
      bad += uvp_promise_state(fps[i]) != UVP_FULFILLED;
      uvp_promise_release(fps[i]);
    }
    ns[r] = (double)(bench_now_ns() - t0) / (double)n;
    bad += ran != n;
  }
  uvp_ctx_stats_t s;
  uvp_ctx_stats(ctx, &s);
  double first = ns[0];
  double med = first, lo = first, hi = first;
  if (rounds > 1) {
    med = bench_median(ns + 1, rounds - 1); /* sorts them */
    lo = ns[1];
    hi = ns[rounds - 1];
  }
  printf("uvp fiber-spawn n=%zu rounds=%d stack_kib=%zu ok=%d first_ns=%.0f "
         "warm_ns=%.1f warm_min=%.1f warm_max=%.1f idle_stacks=%zu\n",
         n, rounds, stack_kib, bad == 0, first, med, lo, hi, s.fiber_stacks);
  free(fps);
  free(ns);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return bad == 0 ? 0 : 1;
}
