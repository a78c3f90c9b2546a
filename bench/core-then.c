/* Workload (a): create, register one then, resolve, for N promises; then
 * run the loop until every handler has run.  The figure is wall time over
 * the whole thing divided by N.
 * Usage: core-then [N] [--derived] [--settled] [--take] [--reserve]
 *                  [--rounds=R]
 *   --derived  ask for the derived promise too (what JavaScript's then
 *              always makes) and drop it at once
 *   --settled  resolve before registering (the handler is queued by the
 *              registration, not by the resolve)
 *   --take     register with uvp_promise_then_take, which takes the
 *              reference (no release of p); implies --settled, since the
 *              caller may not touch p after the take
 *   --reserve  uvp_ctx_reserve(N, N) before the clock starts
 *   --rounds=R run the workload R times on the same loop and context
 *              (default 1): round 1 is the cold figure, the median of the
 *              others the warm one (see core-common.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "trace-probe.h"
#include "uvp.h"

static uint64_t ran;
static uint64_t sum;

static uvp_ret_t on_value(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  ran++;
  sum += (uintptr_t)in->value;
  return uvp_ret_value(NULL, NULL);
}

/* The --settled and --take forms: resolve, then register. */
static int settled_first(uvp_ctx_t *ctx, uint32_t n, int derived, int take) {
  for (uint32_t i = 0; i < n; i++) {
    uvp_promise_t *p, *d;
    if (uvp_promise_new(ctx, &p) != 0 ||
        uvp_promise_resolve(p, (void *)(uintptr_t)i, NULL) != 0)
      return -1;
    if (take) {
      if (uvp_promise_then_take(p, on_value, NULL, derived ? &d : NULL) != 0)
        return -1;
    } else {
      if (uvp_promise_then(p, on_value, NULL, derived ? &d : NULL) != 0)
        return -1;
      uvp_promise_release(p);
    }
    if (derived)
      uvp_promise_release(d);
  }
  return 0;
}

/* One round; *ns gets its wall time.  Returns 1 if every handler ran once
 * with its value and nothing is left alive, 0 if not, -1 on an error. */
static int one_round(uvp_ctx_t *ctx, uint32_t n, int derived, int settled,
                     int take, uint64_t *ns) {
  ran = 0;
  sum = 0;
  uint64_t t0 = uv_hrtime();
  if (settled) {
    if (settled_first(ctx, n, derived, take) != 0)
      return -1;
  } else {
    for (uint32_t i = 0; i < n; i++) {
      uvp_promise_t *p, *d;
      if (uvp_promise_new(ctx, &p) != 0 ||
          uvp_promise_then(p, on_value, NULL, derived ? &d : NULL) != 0 ||
          uvp_promise_resolve(p, (void *)(uintptr_t)i, NULL) != 0)
        return -1;
      uvp_promise_release(p);
      if (derived)
        uvp_promise_release(d);
    }
  }
  uv_run(uvp_ctx_loop(ctx), UV_RUN_DEFAULT);
  *ns = uv_hrtime() - t0;

  uvp_ctx_stats_t st;
  if (uvp_ctx_stats(ctx, &st) != 0)
    return -1;
  return ran == n && sum == (uint64_t)n * (n - 1) / 2 && st.live == 0 &&
         st.queued == 0;
}

int main(int argc, char **argv) {
  uint32_t n = bench_arg_n(argc, argv, 1, 1000000);
  int derived = 0, settled = 0, take = 0, reserve = 0, rounds = 1;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--derived") == 0)
      derived = 1;
    else if (strcmp(argv[i], "--settled") == 0)
      settled = 1;
    else if (strcmp(argv[i], "--take") == 0)
      take = settled = 1;
    else if (strcmp(argv[i], "--reserve") == 0)
      reserve = 1;
    else if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }

  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  if (reserve && uvp_ctx_reserve(ctx, derived ? 2 * (size_t)n : n, n) != 0)
    return 1;
  int traced = bench_traced(ctx);

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int ok = 1;
  for (int r = 0; r < rounds; r++) {
    int rc = one_round(ctx, n, derived, settled, take, &ns[r]);
    if (rc < 0)
      return 1;
    ok = ok && rc;
    if (r == 0)
      cold_rss_kb = bench_peak_rss_kb();
  }

  if (uvp_ctx_close(ctx) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  printf("name=then impl=uvp%s%s%s%s n=%u ok=%d traced=%d",
         derived ? "-derived" : "", settled ? "-settled" : "",
         take ? "-take" : "", reserve ? "-reserve" : "", n, ok, traced);
  bench_print_rounds(ns, rounds, n, cold_rss_kb);
  return ok ? 0 : 1;
}
