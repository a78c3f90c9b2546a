/* Workload (a) without promises: what a libuv program writes by hand to run
 * a callback later with a result.  Each "deferred" is a malloc'd record
 * (callback, argument, result); completing it appends it to a FIFO that an
 * idle handle drains on the next loop iteration, then frees it.
 * Usage: core-then-baseline [N] */
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

int main(int argc, char **argv) {
  uint32_t n = bench_arg_n(argc, argv, 1, 1000000);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0 || uv_idle_init(&loop, &idle) != 0)
    return 1;

  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < n; i++) {
    deferred_t *d = malloc(sizeof(*d));
    if (d == NULL)
      return 1;
    d->cb = on_value;
    d->arg = NULL;
    complete(d, i);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();

  int ok = ran == n && sum == (uint64_t)n * (n - 1) / 2;
  uv_close((uv_handle_t *)&idle, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  printf("name=then impl=libuv-cb n=%u ok=%d ns_per_promise=%.1f "
         "peak_rss_kb=%ld wall_ms=%.1f\n",
         n, ok, (double)(t1 - t0) / n, bench_peak_rss_kb(), (t1 - t0) / 1e6);
  return ok ? 0 : 1;
}
