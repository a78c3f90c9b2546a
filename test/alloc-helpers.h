/* A counting allocator that fails the k-th allocation of a run, and the
 * driver that runs a scenario once per allocation it makes (k = 1, 2, ...
 * until a run meets no failure), each run on a fresh loop and context
 * ending with nothing leaked (the counting allocator balances) and
 * uv_loop_close() == 0.  The allocator can only be replaced while no
 * context exists: a test using it does not run on the fixture's context
 * (which exists from setup to teardown), and is skipped once an earlier
 * failed test has left its context alive. */
#ifndef UVP_TEST_ALLOC_HELPERS_H
#define UVP_TEST_ALLOC_HELPERS_H

#include "helpers.h"

static long calls;    /* allocation calls so far in this run */
static long fail_at;  /* 1-based; 0: never */
static long failures; /* injected failures in this run */
static long live;     /* allocations not yet freed */

static inline bool should_fail(void) {
  calls++;
  if (fail_at != 0 && calls == fail_at) {
    failures++;
    return true;
  }
  return false;
}

static inline void *t_malloc(size_t n) {
  if (should_fail())
    return NULL;
  void *p = malloc(n);
  if (p != NULL)
    live++;
  return p;
}
static inline void *t_calloc(size_t c, size_t n) {
  if (should_fail())
    return NULL;
  void *p = calloc(c, n);
  if (p != NULL)
    live++;
  return p;
}
static inline void *t_realloc(void *old, size_t n) {
  if (should_fail())
    return NULL;
  void *p = realloc(old, n);
  if (p != NULL && old == NULL)
    live++;
  return p;
}
static inline void t_free(void *p) {
  if (p != NULL)
    live--;
  free(p);
}

/* ok(rc): a call either worked or reported the injected failure. */
#define OK_OR_ENOMEM(rc)                                                       \
  do {                                                                         \
    int rc_ = (rc);                                                            \
    if (rc_ != 0 && rc_ != UV_ENOMEM)                                          \
      fail_msg("unexpected code %d (%s)", rc_, uvp_err_name(rc_));             \
  } while (0)

typedef struct run_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
} run_t;

typedef void (*scenario_fn)(run_t *r);

/* Settled state must be fulfilled or rejected with UV_ENOMEM (or the
 * scenario's own expected code). */
static inline void expect_ok_or_enomem(uvp_promise_t *p, int other_ok_code) {
  if (p == NULL)
    return;
  uvp_state_t s = uvp_promise_state(p);
  if (s == UVP_REJECTED) {
    int code = uvp_promise_reason(p, NULL);
    if (code != UV_ENOMEM && code != other_ok_code)
      fail_msg("rejected with %s", uvp_err_name(code));
  }
}

/* One run of `fn` on a fresh loop and context, the k-th allocation
 * failing (0: none), ending with nothing leaked and uv_loop_close() == 0;
 * the number of failures injected.  A scenario that closes the context
 * itself sets r->ctx to NULL.  The counting allocator must be in place. */
static inline long run_counted(scenario_fn fn, long k) {
  calls = failures = live = 0;
  fail_at = k;
  run_t r;
  assert_int_equal(uv_loop_init(&r.loop), 0);
  int rc = uvp_ctx_new(&r.loop, &r.ctx);
  OK_OR_ENOMEM(rc);
  if (rc == 0) {
    uvp_ctx_set_unhandled_cb(r.ctx, ignore_unhandled, NULL);
    fn(&r);
    if (r.ctx != NULL)
      assert_int_equal(uvp_ctx_close(r.ctx), 0);
  }
  assert_int_equal(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&r.loop), 0);
  if (live != 0)
    fail_msg("k=%ld: %ld allocation(s) leaked", k, live);
  fail_at = 0;
  return failures;
}

static inline void counting_allocator(bool on) {
  if (on && fixture_ctx_leaked) {
    SKIP_BECAUSE("an earlier failed test left a context alive, and the "
                 "allocator cannot change while one is");
  }
  assert_int_equal(
      on ? uvp_replace_allocator(t_malloc, t_realloc, t_calloc, t_free)
         : uvp_replace_allocator(malloc, realloc, calloc, free),
      0);
}

/* Run `fn` for k = 1, 2, ... until a run meets no injected failure. */
static inline long exhaust(scenario_fn fn) {
  counting_allocator(true);
  long k = 1;
  while (run_counted(fn, k) != 0)
    k++;
  counting_allocator(false);
  return k - 1; /* allocation sites met */
}

/* Run `fn` once, no allocation failing: it leaks nothing. */
static inline void no_leak(scenario_fn fn) {
  counting_allocator(true);
  (void)run_counted(fn, 0);
  counting_allocator(false);
}

#endif
