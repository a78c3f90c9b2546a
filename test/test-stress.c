/* Cross-thread stress and teardown under load (suite 'threads': TSan runs
 * it).
 *
 *  - Several threads each resolve 250 000 promises of one loop (scaled down
 *    by UVP_STRESS_DIV under valgrind) while the loop thread chains on them
 *    in batches: every handler runs exactly once with its value, nothing is
 *    lost or duplicated, and each thread also releases its references from
 *    its own thread.
 *  - The context is torn down while thousands of promises are pending, a
 *    file-system request and TCP connections are in flight and threads are
 *    still resolving: no crash, no leak, uv_loop_close() == 0, and the late
 *    cross-thread calls fail cleanly with UVP_ECLOSED. */
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

enum { THREADS = 4, PER_THREAD_FULL = 250000 };

static size_t per_thread(void) {
  const char *d = getenv("UVP_STRESS_DIV");
  long div = d != NULL ? strtol(d, NULL, 10) : 1;
  return PER_THREAD_FULL / (size_t)(div > 0 ? div : 1);
}

typedef struct shared_s {
  uvp_promise_t **ps;
  size_t n;           /* promises in all */
  size_t per;         /* per thread */
  size_t chained;     /* how many have a then so far (loop thread) */
  uint64_t sum;       /* of handler values (loop thread) */
  size_t calls;       /* handler calls (loop thread) */
  uint8_t *seen;      /* per promise: handler ran (loop thread) */
  uvp_promise_t **ds; /* derived promises */
  atomic_int resolved_ok;
  atomic_int late_closed;
} shared_t;

typedef struct worker_s {
  shared_t *sh;
  size_t first;
  uv_thread_t tid;
} worker_t;

static uvp_ret_t count(void *arg, const uvp_outcome_t *in) {
  shared_t *sh = arg;
  size_t i;
  if (in->status == 0) {
    i = (size_t)(uintptr_t)in->value;
  } else {
    /* Every 97th promise is rejected; its index is the payload. */
    assert_int_equal(in->status, UV_ECONNRESET);
    i = (size_t)(uintptr_t)in->value;
  }
  assert_true(i < sh->n);
  assert_int_equal(sh->seen[i], 0); /* never twice */
  sh->seen[i] = 1;
  sh->sum += i;
  sh->calls++;
  return uvp_ret_value(NULL, NULL);
}

static void resolver(void *arg) {
  worker_t *w = arg;
  shared_t *sh = w->sh;
  for (size_t k = 0; k < sh->per; k++) {
    size_t i = w->first + k;
    int rc = i % 97 == 0
                 ? uvp_promise_reject(sh->ps[i], UV_ECONNRESET,
                                      (void *)(uintptr_t)i, NULL)
                 : uvp_promise_resolve(sh->ps[i], (void *)(uintptr_t)i, NULL);
    if (rc == 0)
      atomic_fetch_add(&sh->resolved_ok, 1);
    else if (rc == UVP_ECLOSED)
      atomic_fetch_add(&sh->late_closed, 1);
    else
      fail_msg("resolve from thread: %s", uvp_err_name(rc));
    uvp_promise_release(sh->ps[i]); /* this thread's reference */
  }
}

/* Attach thens in batches from the loop, interleaved with the messages the
 * threads post, so handlers meet promises both before and after they
 * settle. */
static void chain_batch(uv_idle_t *h) {
  fixture_t *f = h->data;
  shared_t *sh = f->loop.data;
  size_t end = sh->chained + 4096 < sh->n ? sh->chained + 4096 : sh->n;
  for (; sh->chained < end; sh->chained++)
    assert_int_equal(uvp_promise_on(sh->ps[sh->chained], UVP_ON_BOTH, count, sh,
                                    &sh->ds[sh->chained]),
                     0);
  if (sh->chained == sh->n)
    uv_close((uv_handle_t *)h, NULL);
}

static void keep_alive_tick(uv_timer_t *t) { (void)t; }

static void test_threads_resolve_while_loop_chains(void **state) {
  fixture_t *f = *state;
  shared_t sh;
  memset(&sh, 0, sizeof(sh));
  sh.per = per_thread();
  sh.n = sh.per * THREADS;
  sh.ps = calloc(sh.n, sizeof(*sh.ps));
  sh.ds = calloc(sh.n, sizeof(*sh.ds));
  sh.seen = calloc(sh.n, 1);
  assert_non_null(sh.ps);
  assert_non_null(sh.ds);
  assert_non_null(sh.seen);
  for (size_t i = 0; i < sh.n; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &sh.ps[i]), 0);
    uvp_promise_retain(sh.ps[i]); /* handed to a thread */
  }
  f->loop.data = &sh;
  uv_idle_t idle;
  uv_idle_init(&f->loop, &idle);
  idle.data = f;
  uv_idle_start(&idle, chain_batch);

  worker_t w[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t].sh = &sh;
    w[t].first = (size_t)t * sh.per;
    assert_int_equal(uv_thread_create(&w[t].tid, resolver, &w[t]), 0);
  }
  /* uvp's async handle is unreferenced by design, so while other threads
   * are still to settle promises the program keeps the loop alive itself
   * (as the header says): here with a referenced timer. */
  uv_timer_t keep;
  uv_timer_init(&f->loop, &keep);
  uv_timer_start(&keep, keep_alive_tick, 50, 50);
  while (sh.calls < sh.n)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&keep, NULL);
  for (int t = 0; t < THREADS; t++)
    assert_int_equal(uv_thread_join(&w[t].tid), 0);
  run_loop(f); /* the threads' last releases */

  assert_int_equal(sh.calls, sh.n);
  assert_int_equal(atomic_load(&sh.resolved_ok), (int)sh.n);
  assert_int_equal(atomic_load(&sh.late_closed), 0);
  assert_int_equal(sh.sum, (uint64_t)sh.n * (sh.n - 1) / 2);
  for (size_t i = 0; i < sh.n; i++) {
    assert_int_equal(sh.seen[i], 1);
    uvp_promise_release(sh.ds[i]);
    uvp_promise_release(sh.ps[i]);
  }
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  printf("stress: %d threads x %zu promises: %zu handlers, none lost or "
         "duplicated\n",
         THREADS, sh.per, sh.calls);
  free(sh.ps);
  free(sh.ds);
  free(sh.seen);
}

/* ---- teardown under load ------------------------------------------------- */

typedef struct late_s {
  uvp_promise_t **ps;
  size_t n;
  uv_sem_t started;
  atomic_int ok, closed;
} late_t;

static void late_resolver(void *arg) {
  late_t *l = arg;
  uv_sem_post(&l->started);
  for (size_t i = 0; i < l->n; i++) {
    int rc = uvp_promise_resolve(l->ps[i], (void *)(uintptr_t)i, NULL);
    if (rc == 0)
      atomic_fetch_add(&l->ok, 1);
    else if (rc == UVP_ECLOSED)
      atomic_fetch_add(&l->closed, 1);
    else
      fail_msg("unexpected %s", uvp_err_name(rc));
    uvp_promise_release(l->ps[i]); /* works before and after teardown */
  }
}

static uvp_ret_t never_called_after_close(void *arg, const uvp_outcome_t *in) {
  (void)in;
  atomic_fetch_add((atomic_int *)arg, 1);
  return uvp_ret_pass();
}

static uvp_ret_t read_after_connect(void *arg, const uvp_outcome_t *in) {
  uvp_promise_t *r;
  (void)in;
  int rc = uvp_tcp_read_all(arg, 0, &r);
  return rc != 0 ? uvp_ret_reject(rc, NULL, NULL) : uvp_ret_adopt(r);
}

static void test_teardown_under_load(void **state) {
  fixture_t *f = *state;
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
  enum { PENDING = 5000, LATE = 20000 };

  /* Thousands of pending promises with chains on them. */
  static uvp_promise_t *pend[PENDING], *derived[PENDING];
  atomic_int handlers;
  atomic_init(&handlers, 0);
  for (int i = 0; i < PENDING; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &pend[i]), 0);
    assert_int_equal(uvp_promise_then(pend[i], never_called_after_close,
                                      &handlers, &derived[i]),
                     0);
  }
  /* I/O in flight: a directory scan on the pool, connections to a port
   * nothing listens on and to a listener that never accepts. */
  uvp_promise_t *scan;
  assert_int_equal(uvp_fs_scandir(f->ctx, "/usr/lib", &scan), 0);
  /* A plain socket that listens and never accepts: the kernel completes
   * the handshakes, so the reads below stay pending. */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(lfd >= 0);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(lfd, 128), 0);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&ss, &len), 0);
  enum { CONNS = 50 };
  uvp_tcp_t *conns[CONNS];
  uvp_promise_t *cps[CONNS];
  for (int i = 0; i < CONNS; i++) {
    uvp_promise_t *c;
    assert_int_equal(uvp_tcp_new(f->ctx, &conns[i]), 0);
    assert_int_equal(uvp_tcp_connect(conns[i], (struct sockaddr *)&ss, &c), 0);
    assert_int_equal(uvp_promise_then(c, read_after_connect, conns[i], &cps[i]),
                     0);
    uvp_promise_release(c);
  }

  /* A thread resolving promises while the context goes away. */
  late_t l;
  l.n = LATE;
  l.ps = calloc(LATE, sizeof(*l.ps));
  assert_non_null(l.ps);
  atomic_init(&l.ok, 0);
  atomic_init(&l.closed, 0);
  for (size_t i = 0; i < LATE; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &l.ps[i]), 0);
    uvp_promise_retain(l.ps[i]);
  }
  assert_int_equal(uv_sem_init(&l.started, 0), 0);
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, late_resolver, &l), 0);
  uv_sem_wait(&l.started);
  for (int i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);

  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  uv_thread_join(&tid);
  assert_int_equal(atomic_load(&l.ok) + atomic_load(&l.closed), LATE);
  assert_int_equal(atomic_load(&handlers), 0);

  /* Everything pending was settled by the teardown. */
  for (int i = 0; i < PENDING; i++) {
    assert_int_equal(uvp_promise_reason(pend[i], NULL), UVP_ECLOSED);
    uvp_promise_release(pend[i]);
    uvp_promise_release(derived[i]);
  }
  /* The scan either finished before the teardown or was torn down. */
  assert_true(uvp_promise_state(scan) == UVP_FULFILLED ||
              uvp_promise_reason(scan, NULL) == UVP_ECLOSED);
  uvp_promise_release(scan);
  for (int i = 0; i < CONNS; i++) {
    assert_int_not_equal(uvp_promise_state(cps[i]), UVP_PENDING);
    uvp_promise_release(cps[i]);
    assert_int_equal(uvp_tcp_close(conns[i]), 0);
  }
  for (size_t i = 0; i < LATE; i++)
    uvp_promise_release(l.ps[i]);
  close(lfd);
  free(l.ps);
  uv_sem_destroy(&l.started);
  printf("teardown under load: %d pending, %d connections, %d late resolves "
         "(%d before, %d refused with UVP_ECLOSED)\n",
         PENDING, CONNS, LATE, atomic_load(&l.ok), atomic_load(&l.closed));
  /* fixture_teardown runs the loop (close callbacks, the scan's late
   * completion) and asserts uv_loop_close() == 0. */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_threads_resolve_while_loop_chains),
      FIXTURE_TEST(test_teardown_under_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
