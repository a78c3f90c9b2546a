/* The core in steady state (issue 57): N promises in waves of W.  Each
 * wave creates W promises, registers one then on each with its derived
 * promise, resolves them all, runs the loop until every handler ran and
 * releases the W promises and their W derived ones.  After the first wave
 * everything is warm and reused, so the figure is instructions, not page
 * faults: what a long-running server pays per promise.
 * bench/core-waves-floor.c is the same work on a minimal C promise.
 * Usage: core-waves [N] [--wave=W] [--rounds=R]
 *   N          promises in all (default 10000000); the last wave is
 *              shorter when W does not divide N
 *   --wave=W   promises per wave (default 1000)
 *   --rounds=R run the workload R times on the same loop and context
 *              (default 1): round 1 is the cold figure, the median of the
 *              others the warm one (see core-common.h)
 * Prints the fields of core-then; ok=1 when every handler ran once, with
 * its own value, in the wave of its promise, and nothing is left alive.
 * bench/ab runs it in both modes (time, and callgrind's instructions per
 * promise against the floor's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "recorder-probe.h"
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

typedef struct {
  uvp_ctx_t *ctx;
  uint32_t n, wave;
  uvp_promise_t **ps, **ds; /* the wave's promises and derived ones */
} waves_t;

/* One round; *ns gets its wall time.  Returns 1 if every handler ran once
 * with its value and nothing is left alive, 0 if not, -1 on an error. */
static int one_round(void *arg, uint64_t *ns) {
  waves_t *w = arg;
  uv_loop_t *loop = uvp_ctx_loop(w->ctx);
  int ok = 1;
  ran = 0;
  sum = 0;
  uint64_t t0 = uv_hrtime();
  for (uint32_t base = 0; base < w->n; base += w->wave) {
    uint32_t m = w->n - base < w->wave ? w->n - base : w->wave;
    for (uint32_t i = 0; i < m; i++)
      if (uvp_promise_new(w->ctx, &w->ps[i]) != 0 ||
          uvp_promise_then(w->ps[i], on_value, NULL, &w->ds[i]) != 0)
        return -1;
    for (uint32_t i = 0; i < m; i++)
      if (uvp_promise_resolve(w->ps[i], (void *)(uintptr_t)(base + i), NULL) !=
          0)
        return -1;
    uv_run(loop, UV_RUN_DEFAULT);
    ok = ok && ran == (uint64_t)base + m;
    for (uint32_t i = 0; i < m; i++) {
      uvp_promise_release(w->ps[i]);
      uvp_promise_release(w->ds[i]);
    }
  }
  *ns = uv_hrtime() - t0;

  uvp_ctx_stats_t st;
  if (uvp_ctx_stats(w->ctx, &st) != 0)
    return -1;
  return ok && ran == w->n && sum == (uint64_t)w->n * (w->n - 1) / 2 &&
         st.live == 0 && st.queued == 0;
}

int main(int argc, char **argv) {
  waves_t w = {.n = bench_arg_n(argc, argv, 1, 10000000), .wave = 1000};
  int rounds = 1;
  for (int i = 2; i < argc; i++) {
    if (strncmp(argv[i], "--wave=", 7) == 0) {
      unsigned long v = strtoul(argv[i] + 7, NULL, 10);
      if (v == 0 || v > 10000000ul)
        return fprintf(stderr, "bad wave: %s\n", argv[i]), 2;
      w.wave = (uint32_t)v;
    } else if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }
  w.ps = malloc(w.wave * sizeof(*w.ps));
  w.ds = malloc(w.wave * sizeof(*w.ds));
  if (w.ps == NULL || w.ds == NULL)
    return 1;

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &w.ctx) != 0 ||
      bench_recorder(w.ctx) != 0)
    return 1;
  int traced = bench_traced(w.ctx);

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int ok = bench_rounds(rounds, one_round, &w, ns, &cold_rss_kb);
  if (ok < 0 || uvp_ctx_close(w.ctx) != 0 || bench_loop_close(&loop, NULL))
    return 1;
  free(w.ps);
  free(w.ds);
  printf("name=waves impl=uvp n=%u wave=%u ok=%d traced=%d", w.n, w.wave, ok,
         traced);
  bench_print_rounds(ns, rounds, w.n, cold_rss_kb);
  return ok ? 0 : 1;
}
