/* Time: uvp_delay and uvp_timeout on the loop's real timers.
 *
 * Only lower bounds on elapsed time are asserted (a timer never fires
 * early on the loop's clock); the few upper bounds only prove that a timer
 * was stopped (a stopped 10 s timer does not hold uv_run for 10 s) and
 * leave seconds of slack for valgrind and a busy machine. */
#include "helpers.h"

/* Milliseconds on the loop's clock, refreshed. */
static uint64_t now_ms(fixture_t *f) {
  uv_update_time(&f->loop);
  return uv_now(&f->loop);
}

/* A bound far above anything the tests wait for, far below the stopped
 * timers' delays. */
enum { LONG_MS = 20000, BOUND_MS = 10000 };

/* Records when (loop clock) and with what a handler ran. */
typedef struct seen_s {
  fixture_t *f;
  int calls;
  int status;
  void *value;
  uint64_t at;
} seen_t;

static uvp_ret_t seen_cb(void *arg, const uvp_outcome_t *in) {
  seen_t *s = arg;
  s->calls++;
  s->status = in->status;
  s->value = in->value;
  s->at = now_ms(s->f);
  return uvp_ret_value(NULL, NULL);
}

/* Settles a producer from a plain libuv timer, as an I/O callback would. */
typedef struct later_s {
  uv_timer_t timer;
  uvp_promise_t *p;
  int code; /* 0: resolve with value */
  void *value;
  uvp_free_cb free_cb;
  int rc;
} later_t;

static void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  l->rc = l->code == 0
              ? uvp_promise_resolve(l->p, l->value, l->free_cb)
              : uvp_promise_reject(l->p, l->code, l->value, l->free_cb);
  uv_close((uv_handle_t *)t, NULL);
}

static void settle_later(fixture_t *f, later_t *l, uvp_promise_t *p,
                         uint64_t ms, int code, void *value,
                         uvp_free_cb free_cb) {
  l->p = p;
  l->code = code;
  l->value = value;
  l->free_cb = free_cb;
  l->rc = 1;
  assert_int_equal(uv_timer_init(&f->loop, &l->timer), 0);
  l->timer.data = l;
  assert_int_equal(uv_timer_start(&l->timer, later_fire, ms, 0), 0);
}

/* ---- delay --------------------------------------------------------------- */

static void test_delay_fulfils_after_at_least(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  seen_t s = {f, 0, 0, NULL, 0};
  boxed_t *v = boxed_new(42, &freed);
  uvp_promise_t *p, *d;
  uint64_t t0 = now_ms(f);
  uint64_t h0 = uv_hrtime();
  assert_int_equal(uvp_delay(f->ctx, 50, v, boxed_free, UVP_KEEP_ALIVE, &p), 0);
  assert_int_equal(uvp_promise_then(p, seen_cb, &s, &d), 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  run_loop(f);
  uint64_t h1 = uv_hrtime();
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.status, 0);
  assert_ptr_equal(s.value, v);
  assert_ptr_equal(uvp_promise_value(p), v);
  assert_true(s.at - t0 >= 50);
  /* The loop's clock may be a millisecond-coarse one: allow that much. */
  assert_true(h1 - h0 >= 49 * (uint64_t)1000000);
  assert_int_equal(freed, 0);
  uvp_promise_release(d);
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
}

static void test_delay_zero_and_ordering(void **state) {
  fixture_t *f = *state;
  seen_t s0 = {f, 0, 0, NULL, 0}, s1 = {f, 0, 0, NULL, 0};
  uvp_promise_t *p0, *p1, *d0, *d1;
  uint64_t t0 = now_ms(f);
  assert_int_equal(
      uvp_delay(f->ctx, 30, SENTINEL(1), NULL, UVP_KEEP_ALIVE, &p1), 0);
  assert_int_equal(uvp_delay(f->ctx, 0, SENTINEL(0), NULL, UVP_KEEP_ALIVE, &p0),
                   0);
  /* Never settled inside the call, even for 0 ms. */
  assert_int_equal(uvp_promise_state(p0), UVP_PENDING);
  assert_int_equal(uvp_promise_then(p0, seen_cb, &s0, &d0), 0);
  assert_int_equal(uvp_promise_then(p1, seen_cb, &s1, &d1), 0);
  run_loop(f);
  assert_ptr_equal(s0.value, SENTINEL(0));
  assert_ptr_equal(s1.value, SENTINEL(1));
  assert_true(s0.at <= s1.at);
  assert_true(s1.at - t0 >= 30);
  uvp_promise_release(d0);
  uvp_promise_release(d1);
  uvp_promise_release(p0);
  uvp_promise_release(p1);
}

static void test_delay_cancel_stops_timer_and_frees_value(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  int freed = 0;
  uvp_promise_t *p;
  assert_int_equal(uvp_delay(f->ctx, LONG_MS, boxed_new(1, &freed), boxed_free,
                             UVP_KEEP_ALIVE, &p),
                   0);
  uint64_t t0 = now_ms(f);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  assert_int_equal(freed, 1); /* the value will never be delivered */
  run_loop(f);                /* would wait LONG_MS if the timer still ran */
  assert_true(now_ms(f) - t0 < BOUND_MS);
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
}

/* Found from outside (issue 40): a fiber awaiting a delay, all that was
 * left to run, saw uv_run return with its program unfinished.  A timer the
 * program starts is its work in progress and keeps the loop alive, as
 * JavaScript's setTimeout does; UVP_UNREF opts out, as timer.unref(). */
static void test_timers_keep_loop_alive_by_default(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h = {0};
  uvp_promise_t *p, *q = producer(f, &h), *t;
  assert_int_equal(uvp_delay(f->ctx, 20, SENTINEL(0), NULL, 0, &p), 0);
  assert_int_equal(uvp_timeout(q, 20, 0, &t), 0);
  run_loop(f); /* waits for both */
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(0));
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  assert_int_equal(h.calls, 1);
  uvp_promise_release(p);
  uvp_promise_release(q);
  uvp_promise_release(t);

  /* UVP_KEEP_ALIVE, the old opt-in, is the same; with both, refused. */
  assert_int_equal(
      uvp_delay(f->ctx, 1, NULL, NULL, UVP_KEEP_ALIVE | UVP_UNREF, &p),
      UV_EINVAL);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  assert_int_equal(uvp_timeout(q, 1, UVP_KEEP_ALIVE | UVP_UNREF, &t),
                   UV_EINVAL);
  uvp_promise_release(q);
  assert_int_equal(uvp_delay(f->ctx, 20, SENTINEL(1), NULL, UVP_KEEP_ALIVE, &p),
                   0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(1));
  uvp_promise_release(p);

  /* UVP_UNREF: uv_run returns although both timers are pending. */
  int freed = 0;
  hook_t h2 = {0};
  uvp_promise_t *q2 = producer(f, &h2);
  assert_int_equal(uvp_delay(f->ctx, LONG_MS, boxed_new(1, &freed), boxed_free,
                             UVP_UNREF, &p),
                   0);
  assert_int_equal(uvp_timeout(q2, LONG_MS, UVP_UNREF, &t), 0);
  uint64_t t0 = now_ms(f);
  run_loop(f);
  assert_true(now_ms(f) - t0 < BOUND_MS);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_promise_state(t), UVP_PENDING);
  assert_int_equal(h2.calls, 0);
  uvp_promise_release(p);
  uvp_promise_release(q2);
  uvp_promise_release(t);
  /* Teardown (fixture) rejects the pending delay: its value is freed. */
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(freed, 1);
  assert_int_equal(h2.calls, 1);
  assert_int_equal(h2.code, UVP_ECLOSED);
}

/* The program: the main fiber awaits a sleep while nothing else
 * runs; uv_run returns only once it has finished. */
static uvp_ret_t sleeper(void *arg) {
  uvp_ctx_t *ctx = arg;
  for (int i = 0; i < 3; i++) {
    uvp_promise_t *d;
    if (uvp_delay(ctx, 5, NULL, NULL, 0, &d) != 0)
      return uvp_ret_reject(UV_EINVAL, NULL, NULL);
    int rc = uvp_await(d, NULL);
    uvp_promise_release(d);
    if (rc != 0)
      return uvp_ret_reject(rc, NULL, NULL);
  }
  return uvp_ret_value(SENTINEL(3), NULL);
}

static void test_fiber_awaiting_a_delay_keeps_the_loop(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *main_fiber;
  assert_int_equal(uvp_fiber_spawn(f->ctx, sleeper, f->ctx, NULL, &main_fiber),
                   0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(main_fiber), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(main_fiber), SENTINEL(3));
  uvp_promise_release(main_fiber);
}

/* ---- timeout ------------------------------------------------------------- */

static void test_timeout_input_fulfils_first(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  hook_t h = {0};
  later_t l;
  boxed_t *v = boxed_new(5, &freed);
  uvp_promise_t *in = producer(f, &h), *t;
  assert_int_equal(uvp_timeout(in, LONG_MS, UVP_KEEP_ALIVE, &t), 0);
  settle_later(f, &l, in, 10, 0, v, boxed_free);
  uvp_promise_release(in); /* borrowed: the timeout keeps what it needs */
  uint64_t t0 = now_ms(f);
  run_loop(f); /* returns once the input won: the timer was stopped */
  assert_true(now_ms(f) - t0 < BOUND_MS);
  assert_int_equal(l.rc, 0);
  assert_int_equal(uvp_promise_state(t), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(t), v); /* shared, not copied */
  assert_int_equal(h.calls, 0);
  assert_int_equal(freed, 0);
  uvp_promise_release(t);
  assert_int_equal(freed, 1);
}

static void test_timeout_input_rejects_first(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  hook_t h = {0};
  later_t l;
  seen_t s = {f, 0, 0, NULL, 0};
  boxed_t *payload = boxed_new(6, &freed);
  uvp_promise_t *in = producer(f, &h), *t, *d;
  assert_int_equal(uvp_timeout(in, LONG_MS, UVP_KEEP_ALIVE, &t), 0);
  assert_int_equal(uvp_promise_catch(t, seen_cb, &s, &d), 0);
  settle_later(f, &l, in, 10, UV_ECONNREFUSED, payload, boxed_free);
  uint64_t t0 = now_ms(f);
  run_loop(f);
  assert_true(now_ms(f) - t0 < BOUND_MS);
  void *got = NULL;
  assert_int_equal(uvp_promise_reason(t, &got), UV_ECONNREFUSED);
  assert_ptr_equal(got, payload);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.status, UV_ECONNREFUSED);
  assert_ptr_equal(s.value, payload);
  assert_int_equal(h.calls, 0);
  uvp_promise_release(d);
  uvp_promise_release(t);
  uvp_promise_release(in);
  assert_int_equal(freed, 1);
}

static void test_timeout_time_wins_cancels_input(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h = {0};
  seen_t s = {f, 0, 0, NULL, 0};
  uvp_promise_t *in = producer(f, &h), *t, *d;
  uint64_t t0 = now_ms(f);
  assert_int_equal(uvp_timeout(in, 40, UVP_KEEP_ALIVE, &t), 0);
  assert_int_equal(uvp_promise_catch(t, seen_cb, &s, &d), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.status, UV_ETIMEDOUT);
  assert_true(s.at - t0 >= 40);
  /* The input was cancelled: its producer's hook ran, once. */
  assert_int_equal(h.calls, 1);
  assert_int_equal(h.code, UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(in, NULL), UV_ECANCELED);
  /* Its producer's late result is refused. */
  assert_int_equal(uvp_promise_resolve(in, NULL, NULL), UVP_ESETTLED);
  uvp_promise_release(d);
  uvp_promise_release(t);
  uvp_promise_release(in);
  assert_int_equal(h.calls, 1);
}

static void test_timeout_of_settled_input(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *v = boxed_new(3, &freed);
  uvp_promise_t *ok, *err, *t1, *t2;
  assert_int_equal(uvp_promise_resolved(f->ctx, v, boxed_free, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &err), 0);
  assert_int_equal(uvp_timeout(ok, LONG_MS, UVP_KEEP_ALIVE, &t1), 0);
  assert_int_equal(uvp_timeout(err, LONG_MS, UVP_KEEP_ALIVE, &t2), 0);
  /* Settled later, from the scheduler, never inside the call. */
  assert_int_equal(uvp_promise_state(t1), UVP_PENDING);
  assert_int_equal(uvp_promise_state(t2), UVP_PENDING);
  uint64_t t0 = now_ms(f);
  run_loop(f);
  assert_true(now_ms(f) - t0 < BOUND_MS);
  assert_ptr_equal(uvp_promise_value(t1), v);
  assert_int_equal(uvp_promise_reason(t2, NULL), UV_EIO);
  uvp_promise_release(ok);
  uvp_promise_release(err);
  assert_int_equal(freed, 0); /* t1 still shares it */
  uvp_promise_release(t1);
  uvp_promise_release(t2);
  assert_int_equal(freed, 1);
}

/* Timeout 0: a pending input times out (on the next timer phase) and is
 * cancelled; an input already settled has settled "within 0 ms" and
 * wins. */
static void test_timeout_zero(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h = {0};
  uvp_promise_t *in = producer(f, &h), *ok, *t1, *t2;
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(1), NULL, &ok), 0);
  assert_int_equal(uvp_timeout(in, 0, 0, &t1), 0);
  assert_int_equal(uvp_timeout(ok, 0, 0, &t2), 0);
  assert_int_equal(uvp_promise_state(t1), UVP_PENDING);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(t1, NULL), UV_ETIMEDOUT);
  assert_int_equal(h.calls, 1);
  assert_int_equal(uvp_promise_reason(in, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_state(t2), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(t2), SENTINEL(1));
  uvp_promise_release(t1);
  uvp_promise_release(t2);
  uvp_promise_release(in);
  uvp_promise_release(ok);
}

static void test_timeout_cancel_result(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h = {0};
  uvp_promise_t *in = producer(f, &h), *t;
  assert_int_equal(uvp_timeout(in, LONG_MS, UVP_KEEP_ALIVE, &t), 0);
  assert_int_equal(uvp_promise_cancel(t), 0);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ECANCELED);
  assert_int_equal(h.calls, 1);
  assert_int_equal(uvp_promise_reason(in, NULL), UV_ECANCELED);
  uint64_t t0 = now_ms(f);
  run_loop(f); /* the timer was stopped */
  assert_true(now_ms(f) - t0 < BOUND_MS);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ECANCELED);
  assert_int_equal(h.calls, 1);
  uvp_promise_release(t);
  uvp_promise_release(in);
}

static void test_time_invalid_arguments(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *t = NULL;
  assert_int_equal(uvp_delay(NULL, 1, NULL, NULL, 0, &p), UV_EINVAL);
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0, NULL), UV_EINVAL);
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0x100, &p), UV_EINVAL);
  assert_int_equal(uvp_timeout(NULL, 1, 0, &t), UV_EINVAL);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_timeout(p, 1, 0, NULL), UV_EINVAL);
  assert_int_equal(uvp_timeout(p, 1, 0x100, &t), UV_EINVAL);
  assert_null(t);
  /* After uvp_ctx_close: refused, the value freed at once (uvp.h,
   * "Handing over"). */
  int freed = 0;
  boxed_t *b = boxed_new(1, &freed);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_delay(ctx, 1, b, boxed_free, 0, &t), UVP_ECLOSED);
  assert_int_equal(freed, 1);
  assert_int_equal(uvp_timeout(p, 1, 0, &t), UVP_ECLOSED);
  assert_null(t);
  run_loop(f);
  assert_int_equal(freed, 1);
  uvp_promise_release(p);
}

/* UVP_TAKE_INPUTS: the timeout takes the reference to its input and keeps
 * the input as long as it needs it: a value shared with the result stays
 * while the result is held, an input cut by the time goes with the
 * timeout; a call that fails releases it at once. */
static void test_timeout_takes_input(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  int freed = 0;
  hook_t h = {0};
  uvp_promise_t *ok, *in = producer(f, &h), *t1, *t2;
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &ok), 0);
  assert_int_equal(uvp_timeout(ok, LONG_MS, UVP_TAKE_INPUTS, &t1), 0);
  assert_int_equal(uvp_timeout(in, 1, UVP_TAKE_INPUTS, &t2), 0);
  run_loop(f);
  assert_int_equal(((boxed_t *)uvp_promise_value(t1))->v, 1);
  assert_int_equal(uvp_promise_reason(t2, NULL), UV_ETIMEDOUT);
  assert_int_equal(h.calls, 1); /* the input, only the timeout's, was cut */
  assert_int_equal(freed, 0);
  uvp_promise_release(t1);
  assert_int_equal(freed, 1);
  assert_int_equal(uvp_promise_mark_handled(t2), 0); /* as expected */
  uvp_promise_release(t2);
  assert_int_equal(live_count(f), 0);

  uvp_promise_t *t = NULL;
  static const int bad[] = {0x100, UVP_KEEP_ALIVE | UVP_UNREF};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(
        uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &ok), 0);
    assert_int_equal(uvp_timeout(ok, 1, bad[i] | UVP_TAKE_INPUTS, &t),
                     UV_EINVAL);
    assert_int_equal(freed, (int)i + 2);
  }
  assert_int_equal(uvp_promise_new(f->ctx, &ok), 0);
  assert_int_equal(uvp_timeout(ok, 1, UVP_TAKE_INPUTS, NULL), UV_EINVAL);
  assert_int_equal(live_count(f), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &ok), 0);
  close_ctx(f);
  assert_int_equal(uvp_timeout(ok, 1, UVP_TAKE_INPUTS, &t), UVP_ECLOSED);
  assert_null(t);
  assert_int_equal(g_unhandled, 0);
}

/* ---- the timeout's input and its other consumers ------------------------ */

/* p is raced by a timeout and, if `shared`, also awaited by a handler of
 * its own.  The time runs out (or, if `cancel_result`, the timeout's
 * result is cancelled first): p is cancelled if the timeout is all that
 * waits for it, or with UVP_CANCEL_INPUT; otherwise it is left alone, and
 * the other consumer later sees the value p is resolved with. */
static void timeout_and_consumer(fixture_t *f, bool shared, int flags,
                                 bool cancel_result) {
  count_unhandled(f);
  int freed = 0;
  hook_t h = {0};
  seen_t s = {f, 0, 0, NULL, 0};
  uvp_promise_t *p = producer(f, &h), *other = NULL, *t;
  if (shared)
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, seen_cb, &s, &other), 0);
  uint64_t ms = cancel_result ? LONG_MS : 20;
  assert_int_equal(uvp_timeout(p, ms, flags | UVP_KEEP_ALIVE, &t), 0);
  uint64_t t0 = now_ms(f);
  if (cancel_result)
    assert_int_equal(uvp_promise_cancel(t), 0);
  run_loop(f); /* the timer fires, or was stopped by the cancel */
  assert_true(now_ms(f) - t0 < BOUND_MS);
  assert_int_equal(uvp_promise_reason(t, NULL),
                   cancel_result ? UV_ECANCELED : UV_ETIMEDOUT);
  bool cancels = !shared || (flags & UVP_CANCEL_INPUT);
  if (cancels) {
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.code, UV_ECANCELED);
    assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
    if (shared) { /* the other consumer was told */
      assert_int_equal(s.calls, 1);
      assert_int_equal(s.status, UV_ECANCELED);
    }
    assert_int_equal(uvp_promise_resolve(p, NULL, NULL), UVP_ESETTLED);
  } else {
    assert_int_equal(h.calls, 0);
    assert_int_equal(uvp_promise_state(p), UVP_PENDING);
    assert_int_equal(s.calls, 0);
    /* p's producer delivers late: the other consumer gets the value. */
    later_t l;
    boxed_t *v = boxed_new(11, &freed);
    settle_later(f, &l, p, 10, 0, v, boxed_free);
    run_loop(f);
    assert_int_equal(l.rc, 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    assert_ptr_equal(s.value, v);
    assert_int_equal(uvp_promise_state(other), UVP_FULFILLED);
    assert_int_equal(h.calls, 0);
    /* The timeout's outcome stands. */
    assert_int_equal(uvp_promise_reason(t, NULL),
                     cancel_result ? UV_ECANCELED : UV_ETIMEDOUT);
  }
  uvp_promise_release(other);
  uvp_promise_release(t);
  uvp_promise_release(p);
  assert_int_equal(freed, cancels ? 0 : 1);
  assert_int_equal(h.calls, cancels ? 1 : 0);
}

static void test_timeout_fires_shared_input_left_alone(void **state) {
  timeout_and_consumer(*state, true, 0, false);
}
static void test_timeout_fires_sole_input_cancelled(void **state) {
  timeout_and_consumer(*state, false, 0, false);
}
static void test_timeout_fires_cancel_input_always(void **state) {
  timeout_and_consumer(*state, true, UVP_CANCEL_INPUT, false);
}
static void test_timeout_cancelled_shared_input_left_alone(void **state) {
  timeout_and_consumer(*state, true, 0, true);
}
static void test_timeout_cancelled_sole_input_cancelled(void **state) {
  timeout_and_consumer(*state, false, 0, true);
}
static void test_timeout_cancelled_cancel_input_always(void **state) {
  timeout_and_consumer(*state, true, UVP_CANCEL_INPUT, true);
}

/* A timeout that gave up on a shared p no longer counts as one of p's
 * consumers: cancelling the other consumer afterwards, the last one,
 * cancels p (uvp_promise_cancel's rule), whether the time ran out or the
 * timeout's result was cancelled. */
static void timeout_then_last_consumer(fixture_t *f, bool cancel_result) {
  count_unhandled(f);
  hook_t h = {0};
  seen_t s = {f, 0, 0, NULL, 0};
  uvp_promise_t *p = producer(f, &h), *other, *t;
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, seen_cb, &s, &other), 0);
  assert_int_equal(
      uvp_timeout(p, cancel_result ? LONG_MS : 20, UVP_KEEP_ALIVE, &t), 0);
  if (cancel_result)
    assert_int_equal(uvp_promise_cancel(t), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(h.calls, 0);
  assert_int_equal(uvp_promise_cancel(other), 0);
  assert_int_equal(h.calls, 1);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(s.calls, 0); /* other's handler: its promise cancelled */
  uvp_promise_release(other);
  uvp_promise_release(t);
  uvp_promise_release(p);
}

static void test_timeout_fired_last_consumer_cancels_input(void **state) {
  timeout_then_last_consumer(*state, false);
}
static void test_timeout_cancelled_last_consumer_cancels_input(void **state) {
  timeout_then_last_consumer(*state, true);
}

/* ---- teardown ------------------------------------------------------------ */

/* ---- counted from the call ----------------------------------------------- */

/* Start-up work before the loop's first turn (or a long callback) leaves
 * the loop's cached time (uv_now) STALE_MS behind the clock: a delay and a
 * timeout started then still count from their call, not from the cached
 * time (they would fire at the loop's first timer phase).  The clock is
 * read afresh around the call and when the handler runs: a lower bound,
 * less the millisecond the loop's clock rounds down. */
enum { STALE_MS = 300, FROM_CALL_MS = 200 };

static uint64_t fresh_ms(void) { return uv_hrtime() / 1000000; }

typedef struct at_s {
  int calls;
  int status;
  uint64_t ms;
} at_t;

static uvp_ret_t note_at(void *arg, const uvp_outcome_t *in) {
  at_t *a = arg;
  a->calls++;
  a->status = in->status;
  a->ms = fresh_ms();
  return uvp_ret_value(NULL, NULL);
}

static void test_delay_and_timeout_count_from_the_call(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *d, *input, *t, *d2, *t2;
  static at_t at_delay, at_timeout;
  at_delay = (at_t){0};
  at_timeout = (at_t){0};
  uv_update_time(&f->loop);
  uv_sleep(STALE_MS);
  uint64_t t0 = fresh_ms();
  assert_int_equal(uvp_delay(f->ctx, FROM_CALL_MS, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &input), 0);
  assert_int_equal(uvp_timeout(input, FROM_CALL_MS, 0, &t), 0);
  assert_int_equal(uvp_promise_then(d, note_at, &at_delay, &d2), 0);
  assert_int_equal(uvp_promise_catch(t, note_at, &at_timeout, &t2), 0);
  run_loop(f);
  assert_int_equal(at_delay.calls, 1);
  assert_int_equal(at_delay.status, 0);
  assert_true(at_delay.ms - t0 >= FROM_CALL_MS - 1);
  assert_int_equal(at_timeout.calls, 1);
  assert_int_equal(at_timeout.status, UV_ETIMEDOUT);
  assert_true(at_timeout.ms - t0 >= FROM_CALL_MS - 1);
  uvp_promise_release(d);
  uvp_promise_release(d2);
  uvp_promise_release(input);
  uvp_promise_release(t);
  uvp_promise_release(t2);
}

static void test_teardown_with_timers_pending(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  int freed = 0;
  hook_t h1 = {0}, h2 = {0};
  uvp_promise_t *d1, *d2, *in1 = producer(f, &h1), *in2 = producer(f, &h2), *t1,
                          *t2, *chain;
  assert_int_equal(
      uvp_delay(f->ctx, LONG_MS, boxed_new(1, &freed), boxed_free, 0, &d1), 0);
  assert_int_equal(uvp_delay(f->ctx, LONG_MS, boxed_new(2, &freed), boxed_free,
                             UVP_KEEP_ALIVE, &d2),
                   0);
  assert_int_equal(uvp_timeout(in1, LONG_MS, 0, &t1), 0);
  assert_int_equal(uvp_timeout(in2, LONG_MS, UVP_KEEP_ALIVE, &t2), 0);
  assert_int_equal(uvp_promise_then(d2, NULL, NULL, &chain), 0);
  /* One loop turn so the timers are really armed and running. */
  assert_int_equal(uv_run(&f->loop, UV_RUN_NOWAIT), 1);
  uint64_t t0 = now_ms(f);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(freed, 2);
  assert_int_equal(h1.calls, 1);
  assert_int_equal(h2.calls, 1);
  assert_int_equal(h1.code, UVP_ECLOSED);
  uvp_promise_t *all[] = {d1, d2, t1, t2, chain};
  for (int i = 0; i < 5; i++) {
    assert_int_equal(uvp_promise_reason(all[i], NULL), UVP_ECLOSED);
    uvp_promise_release(all[i]);
  }
  uvp_promise_release(in1);
  uvp_promise_release(in2);
  /* The keep-alive timers were closed: the loop ends now, and closes. */
  run_loop(f);
  assert_true(now_ms(f) - t0 < BOUND_MS);
  assert_int_equal(freed, 2);
}

/* ---- a timeout on then(connect, send_and_read) --------------------------- */

typedef struct conn_s {
  fixture_t *f;
  hook_t connect_hook;
  hook_t read_hook;
  uvp_promise_t *read; /* the "read" the handler started, if any */
  int handler_calls;
} conn_t;

static uvp_ret_t send_and_read(void *arg, const uvp_outcome_t *in) {
  conn_t *c = arg;
  (void)in;
  c->handler_calls++;
  c->read = producer(c->f, &c->read_hook);
  return uvp_ret_adopt(uvp_promise_retain(c->read));
}

typedef enum {
  CONNECT_HANGS,    /* the timeout reaches the connect */
  READ_HANGS,       /* connect succeeds: the timeout reaches the read */
  CONNECT_JUST_DONE /* connect settled, its handler not yet run */
} when_t;

static void timeout_on_chain(fixture_t *f, when_t when) {
  count_unhandled(f);
  conn_t c = {.f = f};
  later_t l;
  uvp_promise_t *connect = producer(f, &c.connect_hook), *body, *t;
  assert_int_equal(uvp_promise_then(connect, send_and_read, &c, &body), 0);
  uint64_t ms = when == CONNECT_JUST_DONE ? 0 : 40;
  if (when == READ_HANGS)
    settle_later(f, &l, connect, 5, 0, NULL, NULL);
  if (when == CONNECT_JUST_DONE)
    assert_int_equal(uvp_promise_resolve(connect, NULL, NULL), 0);
  uint64_t t0 = now_ms(f);
  assert_int_equal(uvp_timeout(body, ms, UVP_KEEP_ALIVE, &t), 0);
  /* Only the timeout consumes the chain from here on.  `connect` stays
   * referenced: that is its producer's reference (a real connect request
   * holds one until it completes), which keeps it alive to be cancelled. */
  uvp_promise_release(body);
  run_loop(f);
  assert_true(now_ms(f) - t0 >= ms);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  switch (when) {
  case CONNECT_HANGS:
    assert_int_equal(c.connect_hook.calls, 1);
    assert_int_equal(c.connect_hook.code, UV_ECANCELED);
    assert_int_equal(c.handler_calls, 0);
    assert_null(c.read);
    break;
  case READ_HANGS:
    assert_int_equal(l.rc, 0);
    assert_int_equal(c.connect_hook.calls, 0);
    assert_int_equal(c.handler_calls, 1);
    assert_non_null(c.read);
    assert_int_equal(c.read_hook.calls, 1);
    assert_int_equal(c.read_hook.code, UV_ECANCELED);
    assert_int_equal(uvp_promise_reason(c.read, NULL), UV_ECANCELED);
    break;
  case CONNECT_JUST_DONE:
    /* The timer phase comes before uvp's scheduler in a loop iteration:
     * the chain was given up while send_and_read was queued, so it never
     * starts a read that nobody could cancel. */
    assert_int_equal(c.connect_hook.calls, 0);
    assert_int_equal(c.handler_calls, 0);
    assert_null(c.read);
    break;
  }
  uvp_promise_release(c.read);
  uvp_promise_release(t);
  uvp_promise_release(connect);
}

static void test_timeout_chain_reaches_connect(void **state) {
  timeout_on_chain(*state, CONNECT_HANGS);
}
static void test_timeout_chain_reaches_read(void **state) {
  timeout_on_chain(*state, READ_HANGS);
}
static void test_timeout_chain_connect_just_done(void **state) {
  timeout_on_chain(*state, CONNECT_JUST_DONE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_delay_fulfils_after_at_least),
      FIXTURE_TEST(test_delay_zero_and_ordering),
      FIXTURE_TEST(test_delay_cancel_stops_timer_and_frees_value),
      FIXTURE_TEST(test_timers_keep_loop_alive_by_default),
      FIXTURE_TEST(test_fiber_awaiting_a_delay_keeps_the_loop),
      FIXTURE_TEST(test_timeout_input_fulfils_first),
      FIXTURE_TEST(test_timeout_input_rejects_first),
      FIXTURE_TEST(test_timeout_time_wins_cancels_input),
      FIXTURE_TEST(test_timeout_of_settled_input),
      FIXTURE_TEST(test_timeout_zero),
      FIXTURE_TEST(test_timeout_cancel_result),
      FIXTURE_TEST(test_time_invalid_arguments),
      FIXTURE_TEST(test_timeout_takes_input),
      FIXTURE_TEST(test_timeout_fires_shared_input_left_alone),
      FIXTURE_TEST(test_timeout_fires_sole_input_cancelled),
      FIXTURE_TEST(test_timeout_fires_cancel_input_always),
      FIXTURE_TEST(test_timeout_cancelled_shared_input_left_alone),
      FIXTURE_TEST(test_timeout_cancelled_sole_input_cancelled),
      FIXTURE_TEST(test_timeout_cancelled_cancel_input_always),
      FIXTURE_TEST(test_timeout_fired_last_consumer_cancels_input),
      FIXTURE_TEST(test_timeout_cancelled_last_consumer_cancels_input),
      FIXTURE_TEST(test_delay_and_timeout_count_from_the_call),
      FIXTURE_TEST(test_teardown_with_timers_pending),
      FIXTURE_TEST(test_timeout_chain_reaches_connect),
      FIXTURE_TEST(test_timeout_chain_reaches_read),
      FIXTURE_TEST(test_timeout_chain_connect_just_done),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
