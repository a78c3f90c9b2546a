/* Workload (b): N pending promises with one reaction each; the figure is
 * the growth of the resident set over their creation divided by N.  The
 * array holding our references is allocated and touched before the first
 * reading, so only uvp's memory is counted (bench/core.js does the same
 * for its array of resolve functions).  WARM promises are made first and
 * kept, so what the first ones touch once (code, libc, the loop: ~100 KiB)
 * is not spread over the N: the figure is the marginal cost at scale.
 * Usage: core-pending [N] [--derived]
 *   --derived  keep each reaction's derived promise as well (JavaScript's
 *              then always makes one); default: uvp_promise_then(.., NULL),
 *              a reaction without a derived promise */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "trace-probe.h"
#include "uvp.h"

static uvp_ret_t on_value(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  uint32_t n = bench_arg_n(argc, argv, 1, 1000000);
  int derived = argc > 2 && strcmp(argv[2], "--derived") == 0;

  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  /* calloc of this size is fresh mmap'd zero pages: memset faults them in. */
  enum { WARM = 10000 };
  uvp_promise_t **ps = calloc((size_t)n + WARM, sizeof(*ps));
  uvp_promise_t **ds = derived ? calloc(n, sizeof(*ds)) : NULL;
  if (ps == NULL || (derived && ds == NULL))
    return 1;
  memset(ps, 0xff, ((size_t)n + WARM) * sizeof(*ps));
  if (derived)
    memset(ds, 0xff, n * sizeof(*ds));
  int traced = bench_traced(ctx);
  uvp_promise_t **warm = ps + n;
  for (uint32_t i = 0; i < WARM; i++)
    if (uvp_promise_new(ctx, &warm[i]) != 0 ||
        uvp_promise_then(warm[i], on_value, NULL, NULL) != 0)
      return 1;

  long long rss0 = bench_rss_bytes();
  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < n; i++) {
    if (uvp_promise_new(ctx, &ps[i]) != 0 ||
        uvp_promise_then(ps[i], on_value, NULL, derived ? &ds[i] : NULL) != 0)
      return 1;
  }
  uint64_t t1 = uv_hrtime();
  long long rss1 = bench_rss_bytes();

  uvp_ctx_stats_t st;
  uvp_ctx_stats(ctx, &st);
  int ok = st.pending == (derived ? 2 * (size_t)n : n) + WARM;
  for (uint32_t i = 0; i < WARM; i++)
    uvp_promise_release(warm[i]);
  for (uint32_t i = 0; i < n; i++) {
    uvp_promise_release(ps[i]);
    if (derived)
      uvp_promise_release(ds[i]);
  }
  if (uvp_ctx_close(ctx) != 0 || bench_loop_close(&loop, NULL) != 0)
    return 1;
  free(ps);
  free(ds);
  printf("name=pending impl=uvp%s n=%u ok=%d bytes_per_promise=%.1f "
         "slab_bytes_per_promise=%.1f peak_rss_kb=%ld wall_ms=%.1f traced=%d\n",
         derived ? "-derived" : "", n, ok, (double)(rss1 - rss0) / n,
         (double)st.slab_bytes / (n + WARM), bench_peak_rss_kb(),
         (t1 - t0) / 1e6, traced);
  return ok ? 0 : 1;
}
