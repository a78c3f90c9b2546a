/* Workload (a) without promises: what a libuv program writes by hand to run
 * a callback later with a result.  Each "deferred" is a malloc'd record
 * (callback, argument, result); completing it appends it to a FIFO that an
 * idle handle drains on the next loop iteration, then frees it.
 * Usage: core-then-baseline [N] [--rounds=R]
 *   --rounds=R as in core-then: R rounds on the same loop, round 1 cold,
 *              the median of the others warm (malloc reusing what the
 *              previous round freed) */
#include <stdio.h>
#include <stdlib.h>

#include "core-common.h"
#include <uv.h>

typedef struct deferred_s deferred_t;
typedef void (*deferred_cb)(void *arg, uintptr_t value);
struct deferred_s {
  deferred_t *next;
  deferred_cb cb;
  void *arg;
  uintptr_t value;
};

static deferred_t *head, *tail;
static uv_idle_t idle;
static uint64_t ran, sum;

static void drain(uv_idle_t *h) {
  while (head != NULL) {
    deferred_t *d = head;
    head = d->next;
    d->cb(d->arg, d->value);
    free(d);
  }
  tail = NULL;
  uv_idle_stop(h);
}

static void complete(deferred_t *d, uintptr_t value) {
  d->value = value;
  d->next = NULL;
  if (tail != NULL)
    tail->next = d;
  else
    head = d;
  tail = d;
  if (!uv_is_active((uv_handle_t *)&idle))
    uv_idle_start(&idle, drain);
}

static void on_value(void *arg, uintptr_t value) {
  (void)arg;
  ran++;
  sum += value;
}

/* One round; *ns gets its wall time.  Returns 1 if every callback ran once
 * with its value, 0 if not, -1 on an error. */
static int one_round(uv_loop_t *loop, uint32_t n, uint64_t *ns) {
  ran = 0;
  sum = 0;
  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < n; i++) {
    deferred_t *d = malloc(sizeof(*d));
    if (d == NULL)
      return -1;
    d->cb = on_value;
    d->arg = NULL;
    complete(d, i);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  *ns = uv_hrtime() - t0;
  return ran == n && sum == (uint64_t)n * (n - 1) / 2 && head == NULL;
}

/* one_round for bench_rounds: ARG is N, the loop the idle handle's. */
static int round_of(void *n, uint64_t *ns) {
  return one_round(idle.loop, *(uint32_t *)n, ns);
}

int main(int argc, char **argv) {
  uint32_t n = bench_arg_n(argc, argv, 1, 1000000);
  int rounds = 1;
  for (int i = 2; i < argc; i++)
    if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0 || uv_idle_init(&loop, &idle) != 0)
    return 1;

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int ok = bench_rounds(rounds, round_of, &n, ns, &cold_rss_kb);
  if (ok < 0 || bench_loop_close(&loop, &idle) != 0)
    return 1;
  printf("name=then impl=libuv-cb n=%u ok=%d", n, ok);
  bench_print_rounds(ns, rounds, n, cold_rss_kb);
  return ok ? 0 : 1;
}
