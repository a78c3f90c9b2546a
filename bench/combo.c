/* Workloads (c) and (d): allSettled / all over N pending promises, settled
 * from an idle handle 1000 per loop turn in a fixed-seed random order.  For
 * allSettled every 10th input (i % 10 == 9) rejects with UV_EIO; for all
 * every input fulfils.  Input i's value is i.  Wall time covers creating
 * the inputs, the combinator call, settling and the result's handler.
 * Usage: combo settled|all [N] [--reserve] [--rounds=R]
 *   --reserve  uvp_ctx_reserve for the inputs, the result and our
 *              reaction on it before the clock starts (the combinator's
 *              per-input reactions live in its own block)
 *   --rounds=R run the workload R times on the same loop and context
 *              (default 1): round 1 is the cold figure, the median of the
 *              others the warm one (see core-common.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "uvp.h"

#define PER_TURN 1000

static uvp_promise_t **ps;
static uint32_t *perm;
static uint32_t n, next_k;
static int settled_mode;
static uint64_t t1;
static int ok;

static void settle_some(uv_idle_t *h) {
  uint32_t end = next_k + PER_TURN < n ? next_k + PER_TURN : n;
  for (; next_k < end; next_k++) {
    uint32_t i = perm[next_k];
    int rc = settled_mode && i % 10 == 9
                 ? uvp_promise_reject(ps[i], UV_EIO, NULL, NULL)
                 : uvp_promise_resolve(ps[i], (void *)(uintptr_t)i, NULL);
    if (rc != 0)
      abort();
    uvp_promise_release(ps[i]);
  }
  if (next_k == n)
    uv_idle_stop(h);
}

static uvp_ret_t on_result(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  t1 = uv_hrtime();
  if (in->status != 0)
    return uvp_ret_pass();
  ok = 1;
  if (settled_mode) {
    const uvp_settled_list_t *l = in->value;
    ok = l->count == n && l->rejected == n / 10 && l->fulfilled == n - n / 10;
    for (uint32_t i = 0; ok && i < n; i++)
      ok = i % 10 == 9 ? l->items[i].status == UV_EIO
                       : l->items[i].status == 0 &&
                             l->items[i].value == (void *)(uintptr_t)i;
  } else {
    const uvp_values_t *v = in->value;
    ok = v->count == n;
    for (uint32_t i = 0; ok && i < n; i++)
      ok = v->values[i] == (void *)(uintptr_t)i;
  }
  return uvp_ret_value(NULL, NULL);
}

/* One round; *ns gets its wall time up to the result's handler.  Returns 1
 * if the result is right, 0 if not, -1 on an error. */
static int one_round(uvp_ctx_t *ctx, uv_idle_t *idle, uint64_t *ns) {
  next_k = 0;
  t1 = 0;
  ok = 0;
  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < n; i++)
    if (uvp_promise_new(ctx, &ps[i]) != 0)
      return -1;
  uvp_promise_t *res;
  int rc = settled_mode ? uvp_promise_all_settled(ctx, ps, n, &res)
                        : uvp_promise_all(ctx, ps, n, 0, &res);
  if (rc != 0 || uvp_promise_on(res, UVP_ON_BOTH, on_result, NULL, NULL) != 0)
    return -1;
  uv_idle_start(idle, settle_some);
  uv_run(uvp_ctx_loop(ctx), UV_RUN_DEFAULT);
  *ns = t1 - t0;

  int good = ok && t1 != 0 && uvp_promise_state(res) == UVP_FULFILLED;
  uvp_promise_release(res);
  /* Everything of this round is gone: the next one starts from the free
   * lists, not from memory still held. */
  uvp_ctx_stats_t st;
  if (uvp_ctx_stats(ctx, &st) != 0)
    return -1;
  return good && st.live == 0 && st.queued == 0;
}

/* one_round for bench_rounds: the idle handle carries the context. */
static int round_of(void *idle, uint64_t *ns) {
  return one_round(((uv_idle_t *)idle)->data, idle, ns);
}

int main(int argc, char **argv) {
  if (argc < 2 ||
      (strcmp(argv[1], "settled") != 0 && strcmp(argv[1], "all") != 0)) {
    fprintf(stderr, "usage: %s settled|all [N] [--reserve] [--rounds=R]\n",
            argv[0]);
    return 2;
  }
  settled_mode = strcmp(argv[1], "settled") == 0;
  n = bench_arg_n(argc, argv, 2, 1000000);
  int reserve = 0, rounds = 1;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--reserve") == 0)
      reserve = 1;
    else if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }

  perm = malloc(n * sizeof(*perm));
  ps = malloc(n * sizeof(*ps));
  if (perm == NULL || ps == NULL)
    return 1;
  uint32_t check = bench_shuffle(perm, n);

  uv_loop_t loop;
  uv_idle_t idle;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uv_idle_init(&loop, &idle) != 0 ||
      uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  /* The inputs and the result, and our reaction on the result. */
  if (reserve && uvp_ctx_reserve(ctx, (size_t)n + 1, 1) != 0)
    return 1;

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  idle.data = ctx;
  int all_ok = bench_rounds(rounds, round_of, &idle, ns, &cold_rss_kb);
  if (all_ok < 0)
    return 1;

  if (uvp_ctx_close(ctx) != 0 || bench_loop_close(&loop, &idle) != 0)
    return 1;
  free(ps);
  free(perm);
  printf("name=%s impl=uvp%s n=%u ok=%d perm_check=%u",
         settled_mode ? "allSettled" : "all", reserve ? "-reserve" : "", n,
         all_ok, check);
  bench_print_rounds(ns, rounds, n, cold_rss_kb);
  return all_ok ? 0 : 1;
}
