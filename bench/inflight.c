/* Bindings' records of work in flight (uvp_inflight_start/_end; figures in
 * docs/internals/teardown.md §18.2), in rounds of 1 000 records:
 *   inflight N            each round on the loop thread: promise, start;
 *                         then resolve, end, release
 *   inflight N --thread   started on the loop thread, then settled,
 *                         released and ended on a thread of the program's
 *                         (a library's callback thread); the loop runs
 *                         until the last end (the records keep it going)
 * One line: ns_per_record= (after a warm-up round), allocs_per_record=
 * (uvp's, counted through uvp_replace_allocator: a settle or release from
 * another thread allocates its message, an end does not). */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvp.h>

enum { ROUND = 1000 };

static atomic_long allocs;
static void *c_malloc(size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return malloc(n);
}
static void *c_calloc(size_t c, size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return calloc(c, n);
}
static void *c_realloc(void *p, size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return realloc(p, n);
}

static void on_cancel(uvp_inflight_t *w, int code) {
  (void)w;
  (void)code;
}
static const uvp_inflight_class_t cls = {"BENCH", on_cancel, NULL, 0};

static uvp_inflight_t recs[ROUND];
static uvp_promise_t *ps[ROUND];

/* The library's thread: one round at a time. */
static uv_sem_t go, idle;
static bool stop;
static void worker(void *arg) {
  (void)arg;
  for (;;) {
    uv_sem_wait(&go);
    if (stop)
      return;
    for (int i = 0; i < ROUND; i++) {
      uvp_promise_t *p = ps[i];
      (void)uvp_promise_resolve(p, NULL, NULL);
      uvp_promise_release(p);
      uvp_inflight_end(&recs[i]);
    }
    uv_sem_post(&idle);
  }
}

static void round_of(uvp_ctx_t *ctx, uv_loop_t *loop, bool thread) {
  for (int i = 0; i < ROUND; i++)
    if (uvp_promise_new(ctx, &ps[i]) != 0 ||
        uvp_inflight_start(ctx, &recs[i], ps[i], &cls) != 0)
      exit(1);
  if (thread) {
    uv_sem_post(&go);
    uv_run(loop, UV_RUN_DEFAULT); /* until the last end */
    uv_sem_wait(&idle);
    return;
  }
  for (int i = 0; i < ROUND; i++) {
    uvp_promise_resolve(ps[i], NULL, NULL);
    uvp_inflight_end(&recs[i]);
    uvp_promise_release(ps[i]);
  }
  uv_run(loop, UV_RUN_NOWAIT);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  bool thread = argc > 2 && strcmp(argv[2], "--thread") == 0;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_thread_t t;
  if (n < ROUND ||
      uvp_replace_allocator(c_malloc, c_realloc, c_calloc, free) != 0 ||
      uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uv_sem_init(&go, 0) != 0 || uv_sem_init(&idle, 0) != 0 ||
      uv_thread_create(&t, worker, NULL) != 0)
    return 2;
  round_of(ctx, &loop, thread); /* warm-up */
  atomic_store(&allocs, 0);
  long rounds = n / ROUND;
  uint64_t t0 = uv_hrtime();
  for (long r = 0; r < rounds; r++)
    round_of(ctx, &loop, thread);
  double ns = (double)(uv_hrtime() - t0) / (double)(rounds * ROUND);
  printf("inflight%s ns_per_record=%.1f allocs_per_record=%.2f\n",
         thread ? " --thread" : "", ns,
         (double)atomic_load(&allocs) / (double)(rounds * ROUND));
  stop = true;
  uv_sem_post(&go);
  uv_thread_join(&t);
  uv_sem_destroy(&go);
  uv_sem_destroy(&idle);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop);
}
