/* Small groups one after another, as a server makes one per request
 * (bench/run-group): G groups of K members each; for each, K pending
 * promises are added, K next() calls made, the promises fulfilled in
 * order and the loop run until every result is in, then the group is
 * released.  The figure is wall time per group, creation to release.
 * Usage: group-small [G] [K]   (defaults 100000 and 3, K at most 64) */
#include <stdio.h>
#include <stdlib.h>

#include "core-common.h"
#include "uvp.h"

enum { MAX_K = 64 };

static uint32_t got;

static uvp_ret_t on_next(void *arg, const uvp_outcome_t *in) {
  uint32_t *want = arg; /* the value this next() must see */
  if (in->status == 0 && (uintptr_t)in->value == *want)
    got++;
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  uint32_t groups = bench_arg_n(argc, argv, 1, 100000);
  uint32_t k = bench_arg_n(argc, argv, 2, 3);
  if (k > MAX_K)
    return fprintf(stderr, "K at most %d\n", MAX_K), 2;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  uint32_t want[MAX_K];
  for (uint32_t i = 0; i < k; i++)
    want[i] = i;

  uint64_t t0 = uv_hrtime();
  for (uint32_t r = 0; r < groups; r++) {
    uvp_group_t *g;
    uvp_promise_t *ps[MAX_K], *w;
    if (uvp_group_new(ctx, NULL, &g) != 0)
      return 1;
    for (uint32_t i = 0; i < k; i++)
      if (uvp_promise_new(ctx, &ps[i]) != 0 || uvp_group_add(g, ps[i]) != 0)
        return 1;
    if (uvp_group_close(g) != 0)
      return 1;
    for (uint32_t i = 0; i < k; i++) {
      if (uvp_group_next(g, &w) != 0 ||
          uvp_promise_on(w, UVP_ON_BOTH, on_next, &want[i], NULL) != 0)
        return 1;
      uvp_promise_release(w);
    }
    for (uint32_t i = 0; i < k; i++) {
      if (uvp_promise_resolve(ps[i], (void *)(uintptr_t)i, NULL) != 0)
        return 1;
      uvp_promise_release(ps[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uvp_group_release(g);
  }
  uint64_t t1 = uv_hrtime();

  uvp_ctx_stats_t st;
  int ok = uvp_ctx_stats(ctx, &st) == 0 && got == groups * k && st.live == 0;
  if (uvp_ctx_close(ctx) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  ok = ok && uv_loop_close(&loop) == 0;
  printf("name=group-small impl=uvp groups=%u k=%u ok=%d ns_per_group=%.1f "
         "peak_rss_kb=%ld\n",
         groups, k, ok, (double)(t1 - t0) / groups, bench_peak_rss_kb());
  return ok ? 0 : 1;
}
