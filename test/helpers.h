/* Shared test scaffolding: every test gets a fresh loop and context, and
 * every test ends by closing the context, running the loop for the close
 * callbacks and asserting uv_loop_close() == 0 — so each test proves it left
 * nothing behind. */
#ifndef UVP_TEST_HELPERS_H
#define UVP_TEST_HELPERS_H

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "skip.h"

/* A pointer as uvp's dumps and messages write it (src/base.h, UVP__PTR):
 * "0x" and hex digits everywhere, where Windows' %p has no 0x. */
#define PTR_FMT "0x%" PRIxPTR
#define PTR_ARG(p) ((uintptr_t)(const void *)(p))
#include "uvp.h"

/* Which sanitizer (gcc says it one way, clang the other) or valgrind this
 * test runs under, for the tests they cannot run as written. */
#if defined(__SANITIZE_ADDRESS__)
#define T_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(T_ASAN)
#define T_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(T_TSAN)
#define T_TSAN 1
#endif
#endif
#if defined(UVP_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif
#if !defined(RUNNING_ON_VALGRIND)
#define RUNNING_ON_VALGRIND 0
#endif

/* A host name that cannot be looked up, refused by the resolver before any
 * query leaves the machine: its first label is 64 characters, one more
 * than DNS allows.  (A plain unknown name goes to the configured
 * nameserver, off the machine, and without one waits for its timeouts.) */
#define UNRESOLVABLE_NAME                                                      \
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"           \
  ".invalid"

typedef struct fixture_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  void (*test)(void **state); /* run by fixture_run; NULL if not */
  bool returned;              /* the test returned: no assertion failed */
} fixture_t;

/* A test's function, handed to its setup as cmocka's initial state. */
typedef struct fixture_fn_s {
  void (*test)(void **state);
} fixture_fn_t;

/* cmocka's skip() longjmps out of the test as a failed assertion does,
 * but on purpose and with nothing half done (a test skips before it
 * starts, or once it has checked what it could): recorded, so that the
 * teardown closes and checks as for a test that returned. */
static bool fixture_skipped __attribute__((unused));

static inline void fixture_skip(const char *file, int line) {
  fixture_skipped = true;
  _skip(file, line);
}
#undef skip
#define skip() fixture_skip(__FILE__, __LINE__)

static inline int fixture_setup(void **state) {
  const fixture_fn_t *t = *state;
  fixture_t *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  f->test = t != NULL ? t->test : NULL;
  fixture_skipped = false;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(uvp_ctx_new(&f->loop, &f->ctx), 0);
  *state = f;
  return 0;
}

/* Runs the test and records that it returned: a failed assertion
 * longjmps out of it instead, which the teardown must know. */
static inline void fixture_run(void **state) {
  fixture_t *f = *state;
  assert_non_null(f->test);
  f->test(state);
  f->returned = true;
}

/* A test on the fixture (whatever its setup and teardown add): cmocka
 * runs fixture_run, which runs `fn`. */
#define FIXTURE_TEST_WITH(fn, setup, teardown)                                 \
  {                                                                            \
    .name = #fn, .test_func = fixture_run, .setup_func = (setup),              \
    .teardown_func = (teardown), .initial_state = &(fixture_fn_t) {            \
      .test = (fn)                                                             \
    }                                                                          \
  }

/* Set once a test failed, or left its loop busy: its context is still
 * alive, and the allocator check below would fail every later test of the
 * program too. */
static bool fixture_ctx_leaked __attribute__((unused));

static inline void fixture_deadline(uv_timer_t *t) { *(bool *)t->data = true; }

/* Why the timers of the loops below repeat: uv_run(UV_RUN_ONCE) runs the
 * timers already due before it computes poll's timeout, so a one-shot
 * timer that came due meanwhile (the loop's cached time was stale, or the
 * machine slow) fires there and leaves poll nothing to wake for: with a
 * handle alive (a server the test runs on the loop) uv_run would wait in
 * poll forever, past any deadline the caller checks between iterations.
 * A timer that repeats is always due again. */

/* Run the loop until nothing keeps it going, for at most `ms`: true if it
 * ended.  The guard is unreferenced (it keeps nothing going) but bounds
 * uv_run's wait in poll while a handle the test left keeps the loop
 * alive. */
static inline bool fixture_drain(fixture_t *f, uint64_t ms) {
  uv_timer_t guard;
  bool expired = false;
  assert_int_equal(uv_timer_init(&f->loop, &guard), 0);
  guard.data = &expired;
  uv_unref((uv_handle_t *)&guard);
  assert_int_equal(uv_timer_start(&guard, fixture_deadline, ms, ms), 0);
  while (!expired && uv_run(&f->loop, UV_RUN_ONCE) != 0)
    ;
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* the guard's close: it is on this stack */
  return !uv_loop_alive(&f->loop);
}

/* Close the context (if the test did not) and prove the loop is clean,
 * and that the context is gone: uvp refuses to change allocators
 * (UV_EBUSY) while any context is alive, a leak no leak checker sees (the
 * table of contexts keeps it reachable).
 * After a failed assertion the loop is not touched again: the test's
 * frames are gone, but handles in them (a listener, a connection) may
 * still be linked into the loop, and running it would read and write that
 * stale stack, or wait in poll for meson's timeout.  The fixture, its loop
 * and its context are abandoned, so that cmocka reports the failure and
 * goes on with the next test on a fresh loop (a skipped test is torn
 * down as one that returned).  A test that returned but
 * left its loop busy for 10 s fails here (its loop is abandoned too). */
static inline int fixture_teardown(void **state) {
  fixture_t *f = *state;
  if (f->test != NULL && !f->returned && !fixture_skipped) {
    fixture_ctx_leaked = true;
    return 0;
  }
  if (f->ctx != NULL)
    assert_int_equal(uvp_ctx_close(f->ctx), 0);
  if (!fixture_drain(f, 10000)) {
    fixture_ctx_leaked = true;
    fail_msg("the test left its loop busy: still running after 10 s");
  }
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  if (!fixture_ctx_leaked)
    assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
  return 0;
}

#define FIXTURE_TEST(fn) FIXTURE_TEST_WITH(fn, fixture_setup, fixture_teardown)

/* Close the fixture's context now (the teardown then only runs the loop)
 * and return it: what a test calls afterwards must be refused. */
static inline uvp_ctx_t *close_ctx(fixture_t *f) {
  uvp_ctx_t *ctx = f->ctx;
  assert_int_equal(uvp_ctx_close(ctx), 0);
  f->ctx = NULL;
  return ctx;
}

/* How many promises of the fixture's context are alive. */
static inline size_t live_count(fixture_t *f) {
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  return st.live;
}

/* Run the loop until nothing but pending promises remains. */
static inline void run_loop(fixture_t *f) {
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

/* Run `loop` for `ms` of its time (what it does meanwhile is the test's). */
static inline void loop_run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t t;
  bool rang = false;
  assert_int_equal(uv_timer_init(loop, &t), 0);
  t.data = &rang;
  uv_update_time(loop);
  assert_int_equal(uv_timer_start(&t, fixture_deadline, ms, ms), 0);
  while (!rang)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* the timer's close: it is on this stack */
}

/* Run `loop` an iteration at a time until done(arg), for at most 10 s
 * (each iteration must have something to wait for); fails if the loop
 * ends first (done would never hold). */
static inline void loop_run_until(uv_loop_t *loop, bool (*done)(void *),
                                  void *arg) {
  uint64_t deadline = uv_hrtime() + 10 * (uint64_t)1000000000;
  while (!done(arg)) {
    if (uv_hrtime() > deadline)
      fail_msg("still waiting after 10 s");
    if (uv_run(loop, UV_RUN_ONCE) == 0 && !done(arg))
      fail_msg("the loop ended before the condition held");
  }
}

static inline void run_until_true(fixture_t *f, bool (*done)(void *),
                                  void *arg) {
  loop_run_until(&f->loop, done, arg);
}

static inline bool promise_is_settled(void *p) {
  return uvp_promise_state(p) != UVP_PENDING;
}

/* Run the loop until p has settled. */
static inline void run_until_settled(fixture_t *f, const uvp_promise_t *p) {
  loop_run_until(&f->loop, promise_is_settled, (void *)p);
}

static inline void settle_tick(uv_timer_t *t) { (void)t; }

/* Run the loop until p has settled, 10 s at most, with a ticking timer
 * keeping it going: for work that holds no handle of its own (a deadline's
 * timer is unreferenced; a fiber awaiting a promise nobody settles holds
 * nothing). */
static inline void settle_ticking(fixture_t *f, uvp_promise_t *p) {
  uv_timer_t t;
  uv_timer_init(&f->loop, &t);
  uv_timer_start(&t, settle_tick, 5, 5);
  uint64_t t0 = uv_hrtime();
  while (uvp_promise_state(p) == UVP_PENDING &&
         uv_hrtime() - t0 < 10000000000ull)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_not_equal(uvp_promise_state(p), UVP_PENDING);
}

/* Run fn(arg) on a thread of its own and wait for it to end: a foreign
 * thread making loop-thread-only calls, refused with UVP_ETHREAD once
 * uvp_ctx_set_checks(ctx, UVP_CHECK_THREAD) is on.  fn records what it
 * got; the test asserts after the join, on the loop thread. */
static inline void run_on_other_thread(void (*fn)(void *), void *arg) {
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, fn, arg), 0);
  assert_int_equal(uv_thread_join(&tid), 0);
}

/* Init `l` on `loop` and listen on 127.0.0.1, at a port the kernel picks,
 * with l->data = data; *to is the address to connect to. */
static inline void listen_loopback(uv_loop_t *loop, uv_tcp_t *l, int backlog,
                                   uv_connection_cb cb, void *data,
                                   struct sockaddr_storage *to) {
  assert_int_equal(uv_tcp_init(loop, l), 0);
  l->data = data;
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
  assert_int_equal(uv_tcp_bind(l, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)l, backlog, cb), 0);
  int len = sizeof(*to);
  assert_int_equal(uv_tcp_getsockname(l, (struct sockaddr *)to, &len), 0);
}

/* A seeded generator (xorshift64*): the same seed, the same run.  The seed
 * is UVP_TEST_SEED from the environment, else `fallback`; tests print it. */
typedef struct test_rng_s {
  uint64_t s;
} test_rng_t;

static inline uint64_t test_seed(uint64_t fallback) {
  const char *e = getenv("UVP_TEST_SEED");
  uint64_t s = e != NULL ? strtoull(e, NULL, 0) : fallback;
  return s != 0 ? s : 1;
}

static inline uint64_t test_rng_next(test_rng_t *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 2685821657736338717ULL;
}

/* Uniform enough in [0, n) for n far below 2^64. */
static inline size_t test_rng_below(test_rng_t *r, size_t n) {
  return (size_t)(test_rng_next(r) % n);
}

/* a[0..n-1] = a random permutation of 0..n-1 (Fisher-Yates). */
static inline void test_permutation(test_rng_t *r, size_t *a, size_t n) {
  for (size_t i = 0; i < n; i++)
    a[i] = i;
  for (size_t i = n; i > 1; i--) {
    size_t j = test_rng_below(r, i), t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

/* Records the order in which handlers ran. */
typedef struct trace_s {
  int n;
  int ev[64];
} trace_t;

static inline void trace_push(trace_t *t, int v) {
  assert_true(t->n < 64);
  t->ev[t->n++] = v;
}

/* A value that can be told apart and whose destruction is counted. */
typedef struct boxed_s {
  int v;
  int *freed;
} boxed_t;

static inline void boxed_free(void *p) {
  boxed_t *b = p;
  if (b->freed != NULL)
    (*b->freed)++;
  free(b);
}

static inline boxed_t *boxed_new(int v, int *freed) {
  boxed_t *b = malloc(sizeof(*b));
  assert_non_null(b);
  b->v = v;
  b->freed = freed;
  return b;
}

/* Sentinel non-NULL values without ownership, like JS's `dummy`. */
static int sentinel_storage[8] __attribute__((unused));
#define SENTINEL(i) ((void *)&sentinel_storage[(i)])

/* Rejections a test expects and nobody handles: ignored (any thread), or
 * counted in g_unhandled (one loop thread only), instead of uvp's default
 * line on stderr.  The counter is static and the hook's arg NULL, so a
 * report during teardown touches no dead frame. */
static inline void ignore_unhandled(uvp_promise_t *p, void *arg) {
  (void)p;
  (void)arg;
}

/* The fixture for tests that look at rejections with uvp_promise_reason()
 * rather than handlers (the wrappers' tests): the default report on stderr
 * would only be noise. */
static inline int fixture_setup_quiet(void **state) {
  fixture_setup(state);
  fixture_t *f = *state;
  return uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
}

#define QUIET_TEST(fn)                                                         \
  FIXTURE_TEST_WITH(fn, fixture_setup_quiet, fixture_teardown)

static int g_unhandled __attribute__((unused));

/* The promise it gets, even the temporary one standing for a rejection a
 * handler returned that nobody can observe, is a full promise of its
 * context: rejected, with a creation site. */
static inline void count_unhandled_cb(uvp_promise_t *p, void *arg) {
  (void)arg;
  const char *file;
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_true(uvp_promise_reason(p, NULL) < 0);
  assert_non_null(uvp_promise_ctx(p));
  uvp_promise_site(p, &file, NULL);
  assert_non_null(file);
  g_unhandled++;
}

static inline void count_unhandled_on(uvp_ctx_t *ctx) {
  g_unhandled = 0;
  assert_int_equal(uvp_ctx_set_unhandled_cb(ctx, count_unhandled_cb, NULL), 0);
}

static inline void count_unhandled(fixture_t *f) { count_unhandled_on(f->ctx); }

/* A producer: a pending promise whose cancel hook counts its calls and
 * records the reason it saw; `also_cancel` is cancelled from inside the
 * hook (re-entrancy tests).  Hooks write into structs that outlive the
 * context: they may run during uvp_ctx_close. */
typedef struct hook_s {
  int calls;
  int code;                   /* the promise's reason as the hook saw it */
  uvp_promise_t *p;           /* the promise the hook was given */
  uvp_promise_t *also_cancel; /* cancel this from inside the hook */
  int also_rc;
} hook_t;

static inline void count_hook(uvp_promise_t *p, void *arg) {
  hook_t *h = arg;
  h->calls++;
  h->code = uvp_promise_reason(p, NULL);
  h->p = p;
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  if (h->also_cancel != NULL) {
    uvp_promise_t *q = h->also_cancel;
    h->also_cancel = NULL;
    h->also_rc = uvp_promise_cancel(q);
  }
}

static inline uvp_promise_t *producer(fixture_t *f, hook_t *h) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_set_cancel(p, count_hook, h), 0);
  return p;
}

/* The line of text s that holds `needle`, up to its end and without its
 * newline (a static copy, overwritten by the next call), or NULL: for
 * checking one line of a dump. */
static inline const char *text_line(const char *s, const char *needle) {
  static char line[8192];
  const char *hit = s != NULL ? strstr(s, needle) : NULL;
  if (hit == NULL)
    return NULL;
  const char *b = hit;
  while (b > s && b[-1] != '\n')
    b--;
  const char *e = strchr(hit, '\n');
  size_t n = e != NULL ? (size_t)(e - b) : strlen(b);
  assert_true(n < sizeof(line));
  memcpy(line, b, n);
  line[n] = '\0';
  return line;
}

#endif
