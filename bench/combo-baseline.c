/* Workloads (c) and (d) without promises: the hand-written libuv way of
 * waiting for N operations, a counter and an array of records indexed by
 * operation.  Same settle order, same 1000 per loop turn from an idle
 * handle, same checks as bench/combo.c.
 * Usage: combo-baseline settled|all [N] [--rounds=R]
 *   --rounds=R as in combo: R rounds on the same loop, round 1 cold, the
 *              median of the others warm (the records array is malloc'd
 *              and freed each round, as a program doing this repeatedly
 *              would) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include <uv.h>

#define PER_TURN 1000

typedef struct record_s {
  int status;
  void *value;
} record_t;

typedef struct gather_s {
  record_t *records;
  uint32_t remaining;
  uint32_t fulfilled;
  uint32_t rejected;
  int failed; /* `all`: the first rejection decides */
  void (*done)(struct gather_s *g);
} gather_t;

static gather_t gather;
static uint32_t *perm;
static uint32_t n, next_k;
static int settled_mode;
static uint64_t t1;
static int ok;

/* The completion callback an operation would call. */
static void complete(gather_t *g, uint32_t i, int status, void *value) {
  if (g->failed)
    return;
  g->records[i].status = status;
  g->records[i].value = value;
  if (status == 0) {
    g->fulfilled++;
  } else {
    g->rejected++;
    if (!settled_mode) {
      g->failed = 1;
      g->done(g);
      return;
    }
  }
  if (--g->remaining == 0)
    g->done(g);
}

static void on_done(gather_t *g) {
  t1 = uv_hrtime();
  ok = !g->failed;
  if (settled_mode)
    ok = ok && g->rejected == n / 10 && g->fulfilled == n - n / 10;
  for (uint32_t i = 0; ok && i < n; i++)
    ok = settled_mode && i % 10 == 9
             ? g->records[i].status == UV_EIO
             : g->records[i].status == 0 &&
                   g->records[i].value == (void *)(uintptr_t)i;
}

static void settle_some(uv_idle_t *h) {
  uint32_t end = next_k + PER_TURN < n ? next_k + PER_TURN : n;
  for (; next_k < end; next_k++) {
    uint32_t i = perm[next_k];
    if (settled_mode && i % 10 == 9)
      complete(&gather, i, UV_EIO, NULL);
    else
      complete(&gather, i, 0, (void *)(uintptr_t)i);
  }
  if (next_k == n)
    uv_idle_stop(h);
}

/* One round; *ns gets its wall time up to the done callback.  Returns 1
 * if the records are right, 0 if not, -1 on an error. */
static int one_round(uv_loop_t *loop, uv_idle_t *idle, uint64_t *ns) {
  next_k = 0;
  t1 = 0;
  ok = 0;
  memset(&gather, 0, sizeof(gather));
  uint64_t t0 = uv_hrtime();
  gather.records = malloc(n * sizeof(*gather.records));
  if (gather.records == NULL)
    return -1;
  gather.remaining = n;
  gather.done = on_done;
  uv_idle_start(idle, settle_some);
  uv_run(loop, UV_RUN_DEFAULT);
  *ns = t1 - t0;
  /* Poison (outside the clock) so a later round that malloc gets the same
   * block back cannot pass its checks on this round's records. */
  memset(gather.records, 0xff, n * sizeof(*gather.records));
  free(gather.records);
  return ok && t1 != 0;
}

/* one_round for bench_rounds. */
static int round_of(void *idle, uint64_t *ns) {
  return one_round(((uv_idle_t *)idle)->loop, idle, ns);
}

int main(int argc, char **argv) {
  if (argc < 2 ||
      (strcmp(argv[1], "settled") != 0 && strcmp(argv[1], "all") != 0)) {
    fprintf(stderr, "usage: %s settled|all [N] [--rounds=R]\n", argv[0]);
    return 2;
  }
  settled_mode = strcmp(argv[1], "settled") == 0;
  n = bench_arg_n(argc, argv, 2, 1000000);
  int rounds = 1;
  for (int i = 3; i < argc; i++)
    if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  perm = malloc(n * sizeof(*perm));
  if (perm == NULL)
    return 1;
  uint32_t check = bench_shuffle(perm, n);

  uv_loop_t loop;
  uv_idle_t idle;
  if (uv_loop_init(&loop) != 0 || uv_idle_init(&loop, &idle) != 0)
    return 1;

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int all_ok = bench_rounds(rounds, round_of, &idle, ns, &cold_rss_kb);
  if (all_ok < 0 || bench_loop_close(&loop, &idle) != 0)
    return 1;
  free(perm);
  printf("name=%s impl=libuv-cb n=%u ok=%d perm_check=%u",
         settled_mode ? "allSettled" : "all", n, all_ok, check);
  bench_print_rounds(ns, rounds, n, cold_rss_kb);
  return all_ok ? 0 : 1;
}
