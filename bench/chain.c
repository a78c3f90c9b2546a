/* Workload (e) of bench/run: an adoption chain.  p[0] is pending; each
 * p[i] (i = 1..N-1) is a fresh promise resolved with p[i-1], built in that
 * order (root first), then p[0] is fulfilled and the loop runs until
 * p[N-1] has settled.  Prints the build and settle times in ms; the
 * figure is their sum (target: under 1 s for N = 1e6, and linear: the
 * build must not walk the chain for each link).
 * Usage: chain [N]   (default 1000000) */
#include <stdio.h>
#include <stdlib.h>

#include "core-common.h"
#include "trace-probe.h"
#include "uvp.h"

static uint64_t now_ns(void) { return uv_hrtime(); }

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000000;
  if (n < 2)
    n = 2;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  int traced = bench_traced(ctx);
  uvp_promise_t **p = malloc(sizeof(*p) * n);
  if (p == NULL || uvp_promise_new(ctx, &p[0]) != 0)
    return 1;
  uint64_t t0 = now_ns();
  for (uint32_t i = 1; i < n; i++)
    if (uvp_promise_new(ctx, &p[i]) != 0 ||
        uvp_promise_resolve_with(p[i], p[i - 1]) != 0)
      return 1;
  uint64_t t1 = now_ns();
  if (uvp_promise_resolve(p[0], (void *)(uintptr_t)42, NULL) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t2 = now_ns();
  int ok = uvp_promise_state(p[n - 1]) == UVP_FULFILLED &&
           uvp_promise_value(p[n - 1]) == (void *)(uintptr_t)42;
  for (uint32_t i = 0; i < n; i++)
    uvp_promise_release(p[i]);
  free(p);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  ok = ok && uv_loop_close(&loop) == 0;
  printf("name=chain impl=uvp n=%u ok=%d build_ms=%.1f settle_ms=%.1f "
         "wall_ms=%.1f peak_rss_kb=%ld traced=%d\n",
         n, ok, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t2 - t0) / 1e6,
         bench_peak_rss_kb(), traced);
  return ok ? 0 : 1;
}
