/* Workload (a): create, register one then, resolve, for N promises; then
 * run the loop until every handler has run.  The figure is wall time over
 * the whole thing divided by N.
 * Usage: core-then [N] [--derived] [--reserve]
 *   --derived  ask for the derived promise too (what JavaScript's then
 *              always makes) and drop it at once
 *   --reserve  uvp_ctx_reserve(N, N) before the clock starts */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "uvp.h"

static uint64_t ran;
static uint64_t sum;

static uvp_ret_t on_value(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  ran++;
  sum += (uintptr_t)in->value;
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  uint32_t n = bench_arg_n(argc, argv, 1, 1000000);
  int derived = 0, reserve = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--derived") == 0)
      derived = 1;
    else if (strcmp(argv[i], "--reserve") == 0)
      reserve = 1;
    else
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }

  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  if (reserve && uvp_ctx_reserve(ctx, derived ? 2 * (size_t)n : n, n) != 0)
    return 1;

  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < n; i++) {
    uvp_promise_t *p, *d;
    if (uvp_promise_new(ctx, &p) != 0 ||
        uvp_promise_then(p, on_value, NULL, derived ? &d : NULL) != 0 ||
        uvp_promise_resolve(p, (void *)(uintptr_t)i, NULL) != 0)
      return 1;
    uvp_promise_release(p);
    if (derived)
      uvp_promise_release(d);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();

  uvp_ctx_stats_t st;
  uvp_ctx_stats(ctx, &st);
  int ok = ran == n && sum == (uint64_t)n * (n - 1) / 2 && st.live == 0;
  if (uvp_ctx_close(ctx) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  printf("name=then impl=uvp%s%s n=%u ok=%d ns_per_promise=%.1f "
         "peak_rss_kb=%ld wall_ms=%.1f\n",
         derived ? "-derived" : "", reserve ? "-reserve" : "", n, ok,
         (double)(t1 - t0) / n, bench_peak_rss_kb(), (t1 - t0) / 1e6);
  return ok ? 0 : 1;
}
