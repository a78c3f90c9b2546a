/* Workload (e) of bench/run: an adoption chain.  p[0] is pending; each
 * p[i] (i = 1..N-1) is a fresh promise resolved with p[i-1], built in that
 * order (root first), then p[0] is fulfilled and the loop runs until
 * p[N-1] has settled.  Prints the build and settle times in ms; the
 * figure is their sum (target: under 1 s for N = 1e6, and linear: the
 * build must not walk the chain for each link).  With --observed, each
 * p[i] has a handler (and its derived promise) before it is resolved, as
 * `p.then(f)` would (workload (e'): issue 40 found its build quadratic).
 * Usage: chain [N] [--observed]   (default 1000000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "trace-probe.h"
#include "uvp.h"

static uint64_t now_ns(void) { return uv_hrtime(); }

static uvp_ret_t seen(void *arg, const uvp_outcome_t *in) {
  (void)in;
  (*(uint32_t *)arg)++;
  return uvp_ret_pass();
}

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000000;
  if (n < 2)
    n = 2;
  int observed = argc > 2 && strcmp(argv[2], "--observed") == 0;
  uint32_t calls = 0;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  int traced = bench_traced(ctx);
  uvp_promise_t **p = malloc(sizeof(*p) * n);
  uvp_promise_t **d = observed ? malloc(sizeof(*d) * n) : NULL;
  if (p == NULL || (observed && d == NULL))
    return 1;
  uint64_t t0 = now_ns();
  for (uint32_t i = 0; i < n; i++)
    if (uvp_promise_new(ctx, &p[i]) != 0 ||
        (observed && uvp_promise_then(p[i], seen, &calls, &d[i]) != 0) ||
        (i > 0 && uvp_promise_resolve_with(p[i], p[i - 1]) != 0))
      return 1;
  uint64_t t1 = now_ns();
  if (uvp_promise_resolve(p[0], (void *)(uintptr_t)42, NULL) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t2 = now_ns();
  int ok = uvp_promise_state(p[n - 1]) == UVP_FULFILLED &&
           uvp_promise_value(p[n - 1]) == (void *)(uintptr_t)42 &&
           calls == (observed ? n : 0);
  for (uint32_t i = 0; i < n; i++) {
    uvp_promise_release(p[i]);
    if (observed)
      uvp_promise_release(d[i]);
  }
  free(p);
  free(d);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  ok = ok && uv_loop_close(&loop) == 0;
  printf("name=chain%s impl=uvp n=%u ok=%d build_ms=%.1f settle_ms=%.1f "
         "wall_ms=%.1f peak_rss_kb=%ld traced=%d\n",
         observed ? "-observed" : "", n, ok, (t1 - t0) / 1e6, (t2 - t1) / 1e6,
         (t2 - t0) / 1e6, bench_peak_rss_kb(), traced);
  return ok ? 0 : 1;
}
