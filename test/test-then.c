/* test262 Promise.prototype.then, ported to uvp.
 *
 * Source: tc39/test262, every file in test/built-ins/Promise/prototype/then/.
 * Each test below is named after the file it ports (dashes and dots as
 * underscores); tests whose name starts with "c_" are C-specific additions.
 *
 * Mapping (see the top of include/uvp.h; the rows every port shares are at
 * the top of test262.h):
 *   p.then(f)                   uvp_promise_then(p, f, ...)
 *   p.then(f, r)                uvp_promise_on(p, UVP_ON_BOTH, both_cb, ...)
 *                               where both_cb dispatches on in->status
 *   p.then() / then(undefined)  a NULL handler (Identity / Thrower)
 *   Promise.resolve(v)          uvp_promise_resolved
 *   Promise.reject(e)           uvp_promise_rejected (a code + a payload)
 *   new Promise + resolve/rej.  uvp_promise_new + uvp_promise_resolve/reject
 *   return v / throw e          uvp_ret_value / uvp_ret_reject
 *   return promise              uvp_ret_adopt
 *   TypeError (self-resolution) UVP_ECYCLE
 *
 * Skipped groups (no C analogue):
 *   length.js, name.js, prop-desc.js, not-a-constructor.js,
 *   S25.4.5.3_A1.1_T1 (then is a function), S25.4.5.3_A1.1_T2
 *     - function object properties; C functions have none.
 *   S25.4.5.3_A2.1_T1, S25.4.5.3_A2.1_T2, context-check-on-entry.js
 *     - `this` is not a promise; in C the argument is typed (NULL gives
 *       UV_EINVAL, which is API validation, not test262 semantics).
 *   S25.4.5.3_A3.1_T1, S25.4.5.3_A3.1_T2, ctor-access-count.js, ctor-custom.js,
 *   ctor-null.js, ctor-poisoned.js, ctor-throws.js, ctor-undef.js,
 *   capability-executor-called-twice.js, capability-executor-not-callable.js,
 *   deferred-is-resolved-value.js
 *     - SpeciesConstructor / NewPromiseCapability / subclassing: uvp has one
 *       promise type and creates derived promises itself.
 *   resolve-{pending,settled}-{fulfilled,rejected}-poisoned-then.js
 *     - a `then` getter that throws: uvp adopts only uvp promises (no
 *       thenables, no property lookup).
 *   resolve-{pending,settled}-{fulfilled,rejected}-prms-cstm-then.js
 *     - a promise whose `then` method was overwritten: uvp promises have no
 *       overridable methods.
 *   rxn-handler-*-invoke-nonstrict.js / -strict.js differ only in the `this`
 *     value; both are covered by one test per outcome (the C analogue of the
 *     receiver is the registration `arg`, and "exactly one argument" is the
 *     outcome).
 *   S25.4.5.3_A4.2_T* ("non-callable arguments are treated as undefined"):
 *     C's type system has no non-callable handler; ported with NULL handlers
 *     registered through the then/catch macros (S25.4.5.3_A4.1_T* use
 *     uvp_promise_on(UVP_ON_BOTH, NULL)).
 *
 * uvp difference (deliberate): adopting a promise that is already settled
 * takes effect at once, without JavaScript's NewPromiseResolveThenableJob and
 * the extra reaction job (two ticks).  No ported test262 sequence depends on
 * it; c_adopt_settled_no_thenable_job_ticks pins uvp's order and states the
 * JavaScript order next to it. */
#include "test262.h"

/* ------------------------------------------------------------------------ */
/* Reaction jobs: Identity, Thrower, invocation                              */
/* ------------------------------------------------------------------------ */

/* S25.4.2.1_A1.1_T1.js: argument passes through "Identity" (then() with no
 * handlers, here uvp_promise_on(UVP_ON_BOTH, NULL)). */
static void S25_4_2_1_A1_1_T1(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d1, *d2;
  both_t next = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, obj, boxed_free, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, obj);
  assert_ptr_equal(next.ok.from, d1);
  assert_int_equal(uvp_promise_state(d1), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(d1), obj);
  assert_int_equal(uvp_promise_state(d2), UVP_FULFILLED);

  /* d1 shares p's value: it outlives our reference to p. */
  uvp_promise_release(p);
  assert_int_equal(freed, 0);
  assert_ptr_equal(uvp_promise_value(d1), obj);
  release_all(2, d1, d2);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* rxn-handler-identity.js: Promise.resolve(obj).then() — the same through
 * the then() macro with a NULL handler. */
static void rxn_handler_identity(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d1, *d2;
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_resolved(f->ctx, obj, boxed_free, &p), 0);
  assert_int_equal(uvp_promise_then(p, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, obj);
  release_all(3, p, d1, d2);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* S25.4.2.1_A2.1_T1.js: reason thrown through "Thrower". */
static void S25_4_2_1_A2_1_T1(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d1, *d2;
  both_t next = {0};
  void *payload = NULL;

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, obj, boxed_free, &p),
                   0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EIO);
  assert_ptr_equal(next.err.value, obj);
  assert_int_equal(uvp_promise_reason(d1, &payload), UV_EIO);
  assert_ptr_equal(payload, obj);
  /* the onRejected handler returned normally: d2 is fulfilled */
  assert_int_equal(uvp_promise_state(d2), UVP_FULFILLED);

  release_all(3, p, d1, d2);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* rxn-handler-thrower.js: Promise.reject(obj).then() — through the then()
 * macro with a NULL handler. */
static void rxn_handler_thrower(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d1, *d2;
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, obj, boxed_free, &p),
                   0);
  assert_int_equal(uvp_promise_then(p, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EIO);
  assert_ptr_equal(next.err.value, obj);
  release_all(3, p, d1, d2);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* rxn-handler-fulfilled-invoke-strict.js, -nonstrict.js,
 * S25.4.2.1_A3.1_T1.js, S25.4.2.1_A3.1_T2.js: the onFulfilled handler is
 * called once, with its own receiver (here: its registration arg) and exactly
 * the promise's value; never inside then(). */
static void rxn_handler_fulfilled_invoke(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d1, *d2;
  both_t h1 = {0}, h2 = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(2), NULL, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h1, &d1), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h2, &d2), 0);
  assert_int_equal(h1.ok.calls + h2.ok.calls, 0);
  run_loop(f);

  assert_int_equal(h1.ok.calls, 1);
  assert_int_equal(h1.err.calls, 0);
  assert_int_equal(h1.ok.status, 0);
  assert_ptr_equal(h1.ok.value, SENTINEL(2));
  assert_ptr_equal(h1.ok.from, p);
  assert_int_equal(h2.ok.calls, 1);
  assert_int_equal(h2.err.calls, 0);
  assert_ptr_equal(h2.ok.value, SENTINEL(2));
  release_all(3, p, d1, d2);
  assert_no_live(f);
}

/* rxn-handler-rejected-invoke-strict.js, -nonstrict.js,
 * S25.4.2.1_A3.2_T1.js, S25.4.2.1_A3.2_T2.js: the same for onRejected. */
static void rxn_handler_rejected_invoke(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d1, *d2;
  both_t h1 = {0}, h2 = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(2), NULL, &p),
                   0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h1, &d1), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h2, &d2), 0);
  assert_int_equal(h1.err.calls + h2.err.calls, 0);
  run_loop(f);

  assert_int_equal(h1.err.calls, 1);
  assert_int_equal(h1.ok.calls, 0);
  assert_int_equal(h1.err.status, UV_EIO);
  assert_ptr_equal(h1.err.value, SENTINEL(2));
  assert_ptr_equal(h1.err.from, p);
  assert_int_equal(h2.err.calls, 1);
  assert_int_equal(h2.ok.calls, 0);
  assert_ptr_equal(h2.err.value, SENTINEL(2));
  release_all(3, p, d1, d2);
  assert_no_live(f);
}

/* rxn-handler-fulfilled-next.js: all queued jobs run in series, each handler
 * exactly once ('a', 'b', 'c' are 1, 2, 3; the fourth checks the log). */
static void rxn_handler_fulfilled_next(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p;
  both_t h[3];
  both_t last = {0};

  memset(h, 0, sizeof(h));
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  for (int i = 0; i < 3; i++) {
    h[i].ok.trace = h[i].err.trace = &t;
    h[i].ok.mark = i + 1;
    h[i].err.mark = -(i + 1);
    /* JS discards the promises then() returns: no derived promise here */
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h[i], NULL), 0);
  }
  last.ok.trace = last.err.trace = &t;
  last.ok.mark = 4;
  last.ok.seq = 1; /* log === 'abc' when it runs */
  last.err.mark = -4;
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &last, NULL), 0);
  run_loop(f);

  check_sequence(&t, 4);
  assert_int_equal(last.ok.calls, 1);
  assert_int_equal(last.err.calls, 0);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* rxn-handler-rejected-next.js: the same for onRejected ('A', 'B', 'C'). */
static void rxn_handler_rejected_next(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p;
  both_t h[3];
  both_t last = {0};

  memset(h, 0, sizeof(h));
  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  for (int i = 0; i < 3; i++) {
    h[i].ok.trace = h[i].err.trace = &t;
    h[i].ok.mark = -(i + 1);
    h[i].err.mark = i + 1;
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h[i], NULL), 0);
  }
  last.ok.trace = last.err.trace = &t;
  last.ok.mark = -4;
  last.err.mark = 4;
  last.err.seq = 1;
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &last, NULL), 0);
  run_loop(f);

  check_sequence(&t, 4);
  assert_int_equal(last.err.calls, 1);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* rxn-handler-fulfilled-next-abrupt.js: a handler that throws does not stop
 * the next job.  JS drops the rejected promise then() returned; here there
 * is no derived promise (out == NULL), so the header says the rejection is
 * reported as unhandled — as an engine reports JS's dropped one. */
static void rxn_handler_fulfilled_next_abrupt(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p;
  both_t first = {0}, second = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  first.ok.trace = &t;
  first.ok.mark = 1;
  first.ok.ret = uvp_ret_reject(UV_EIO, NULL, NULL);
  first.err.trace = &t;
  first.err.mark = -1;
  second.ok.trace = &t;
  second.ok.mark = 2;
  second.ok.seq = 1; /* fulfilledCallCount 1, rejectedCallCount 0 */
  second.err.trace = &t;
  second.err.mark = -2;
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &first, NULL), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &second, NULL), 0);
  run_loop(f);

  check_sequence(&t, 2);
  assert_int_equal(first.ok.calls, 1);
  assert_int_equal(first.err.calls, 0);
  assert_int_equal(second.ok.calls, 1);
  assert_int_equal(g_unhandled, 1);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 1);
  assert_no_live(f);
}

/* rxn-handler-rejected-next-abrupt.js: the same for onRejected; here the
 * first reaction's derived promise is kept and must be rejected. */
static void rxn_handler_rejected_next_abrupt(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d1;
  both_t first = {0}, second = {0};
  int freed = 0;
  boxed_t *err = boxed_new(7, &freed);
  void *payload = NULL;

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  first.err.trace = &t;
  first.err.mark = 1;
  first.err.ret = uvp_ret_reject(UV_EPIPE, err, boxed_free);
  first.ok.trace = &t;
  first.ok.mark = -1;
  second.err.trace = &t;
  second.err.mark = 2;
  second.err.seq = 1;
  second.ok.trace = &t;
  second.ok.mark = -2;
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &first, &d1), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &second, NULL), 0);
  run_loop(f);

  check_sequence(&t, 2);
  assert_int_equal(first.err.calls, 1);
  assert_int_equal(second.err.calls, 1);
  assert_int_equal(uvp_promise_reason(d1, &payload), UV_EPIPE);
  assert_ptr_equal(payload, err);
  /* d1 never had a rejection handler: reported when its last reference
   * goes, not before */
  assert_int_equal(g_unhandled, 0);
  uvp_promise_release(d1);
  assert_int_equal(g_unhandled, 1);
  assert_int_equal(freed, 1);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* rxn-handler-fulfilled-return-normal.js: the value onFulfilled returns
 * fulfils the derived promise. */
static void rxn_handler_fulfilled_return_normal(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *value = boxed_new(3, &freed);
  uvp_promise_t *p1, *p2, *p3;
  rec_t h = {0};
  both_t next = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
  h.ret = uvp_ret_value(value, boxed_free);
  assert_int_equal(uvp_promise_then(p1, rec_cb, &h, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  run_loop(f);

  assert_int_equal(h.calls, 1);
  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, value);
  assert_ptr_equal(uvp_promise_value(p2), value);
  assert_int_equal(freed, 0);
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* rxn-handler-rejected-return-normal.js: a value onRejected returns fulfils
 * the derived promise. */
static void rxn_handler_rejected_return_normal(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *value = boxed_new(3, &freed);
  uvp_promise_t *p1, *p2, *p3;
  both_t h = {0}, next = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  h.err.ret = uvp_ret_value(value, boxed_free);
  assert_int_equal(uvp_promise_on(p1, UVP_ON_BOTH, both_cb, &h, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, value);
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* rxn-handler-fulfilled-return-abrupt.js: onFulfilled throwing rejects the
 * derived promise with what it threw. */
static void rxn_handler_fulfilled_return_abrupt(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *thrown = boxed_new(4, &freed);
  uvp_promise_t *p1, *p2, *p3;
  both_t h = {0}, next = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
  h.ok.ret = uvp_ret_reject(UV_EPIPE, thrown, boxed_free);
  assert_int_equal(uvp_promise_on(p1, UVP_ON_BOTH, both_cb, &h, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EPIPE);
  assert_ptr_equal(next.err.value, thrown);
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* rxn-handler-rejected-return-abrupt.js: the same from onRejected. */
static void rxn_handler_rejected_return_abrupt(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *thrown = boxed_new(4, &freed);
  uvp_promise_t *p1, *p2, *p3;
  both_t h = {0}, next = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  h.err.ret = uvp_ret_reject(UV_EPIPE, thrown, boxed_free);
  assert_int_equal(uvp_promise_on(p1, UVP_ON_BOTH, both_cb, &h, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EPIPE);
  assert_ptr_equal(next.err.value, thrown);
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* PerformPromiseThen on each state                                          */
/* ------------------------------------------------------------------------ */

static void prfm_case(fixture_t *f, int pending, int fulfilled) {
  int freed = 0;
  boxed_t *value = boxed_new(5, &freed);
  uvp_promise_t *p;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  if (!pending) {
    if (fulfilled)
      assert_int_equal(uvp_promise_resolve(p, value, boxed_free), 0);
    else
      assert_int_equal(uvp_promise_reject(p, UV_EIO, value, boxed_free), 0);
  }
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, NULL), 0);
  assert_int_equal(h.ok.calls + h.err.calls, 0);
  if (pending) {
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0); /* still pending */
    if (fulfilled)
      assert_int_equal(uvp_promise_resolve(p, value, boxed_free), 0);
    else
      assert_int_equal(uvp_promise_reject(p, UV_EIO, value, boxed_free), 0);
    assert_int_equal(h.ok.calls + h.err.calls, 0); /* not inside resolve */
  }
  run_loop(f);

  if (fulfilled) {
    assert_int_equal(h.ok.calls, 1);
    assert_int_equal(h.err.calls, 0);
    assert_ptr_equal(h.ok.value, value);
  } else {
    assert_int_equal(h.ok.calls, 0);
    assert_int_equal(h.err.calls, 1);
    assert_int_equal(h.err.status, UV_EIO);
    assert_ptr_equal(h.err.value, value);
  }
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* prfm-fulfilled.js */
static void prfm_fulfilled(void **state) { prfm_case(*state, 0, 1); }
/* prfm-rejected.js */
static void prfm_rejected(void **state) { prfm_case(*state, 0, 0); }
/* prfm-pending-fulfulled.js (sic) */
static void prfm_pending_fulfulled(void **state) { prfm_case(*state, 1, 1); }
/* prfm-pending-rejected.js */
static void prfm_pending_rejected(void **state) { prfm_case(*state, 1, 0); }

/* ------------------------------------------------------------------------ */
/* reject-{pending,settled}-{fulfilled,rejected}: the handler throws a      */
/* promise; the derived promise is rejected with it as the reason (a reason */
/* is never adopted).                                                        */
/* ------------------------------------------------------------------------ */

typedef struct throw_s {
  int calls;
  int status;
  uvp_promise_t *thenable; /* thrown: a reference handed over as payload */
} throw_t;

static uvp_ret_t throw_thenable_cb(void *arg, const uvp_outcome_t *in) {
  throw_t *t = arg;
  t->calls++;
  t->status = in->status;
  return uvp_ret_reject(UV_EIO, uvp_promise_retain(t->thenable),
                        release_promise);
}

static void reject_case(fixture_t *f, int pending, int fulfilled) {
  uvp_promise_t *thenable, *p1, *p2, *p3;
  throw_t h = {0};
  both_t next = {0};

  count_unhandled(f);
  /* var thenable = new Promise(function(resolve) { resolve(); }); */
  assert_int_equal(uvp_promise_new(f->ctx, &thenable), 0);
  assert_int_equal(uvp_promise_resolve(thenable, NULL, NULL), 0);
  h.thenable = thenable;
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  if (!pending) {
    if (fulfilled)
      assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
    else
      assert_int_equal(uvp_promise_reject(p1, UV_ECANCELED, NULL, NULL), 0);
  }
  if (fulfilled) /* p1.then(function() { throw thenable; }) */
    assert_int_equal(uvp_promise_then(p1, throw_thenable_cb, &h, &p2), 0);
  else /* p1.then(function() {}, function() { throw thenable; }) */
    assert_int_equal(
        uvp_promise_on(p1, UVP_ON_REJECTED, throw_thenable_cb, &h, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  if (pending) {
    run_loop(f);
    assert_int_equal(h.calls, 0);
    if (fulfilled)
      assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
    else
      assert_int_equal(uvp_promise_reject(p1, UV_ECANCELED, NULL, NULL), 0);
  }
  run_loop(f);

  assert_int_equal(h.calls, 1);
  assert_int_equal(h.status, fulfilled ? 0 : UV_ECANCELED);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EIO);
  assert_ptr_equal(next.err.value, thenable);
  assert_int_equal(uvp_promise_state(p2), UVP_REJECTED);
  release_all(4, thenable, p1, p2, p3);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* reject-pending-fulfilled.js */
static void reject_pending_fulfilled(void **state) {
  reject_case(*state, 1, 1);
}
/* reject-pending-rejected.js */
static void reject_pending_rejected(void **state) { reject_case(*state, 1, 0); }
/* reject-settled-fulfilled.js */
static void reject_settled_fulfilled(void **state) {
  reject_case(*state, 0, 1);
}
/* reject-settled-rejected.js */
static void reject_settled_rejected(void **state) { reject_case(*state, 0, 0); }

/* ------------------------------------------------------------------------ */
/* resolve-{pending,settled}-{fulfilled,rejected}-{non-obj,non-thenable,    */
/* self,thenable}: what the handler returns resolves the derived promise.   */
/* ------------------------------------------------------------------------ */

enum { R_NON_OBJ, R_NON_THENABLE, R_SELF, R_THENABLE };

typedef struct rcase_s {
  int kind;
  int calls;
  int status;
  uvp_promise_t *self;     /* p2, borrowed (R_SELF) */
  uvp_promise_t *thenable; /* one reference, handed over (R_THENABLE) */
  boxed_t *obj;            /* ownership handed over (R_NON_THENABLE) */
} rcase_t;

static uvp_ret_t rcase_cb(void *arg, const uvp_outcome_t *in) {
  rcase_t *c = arg;
  c->calls++;
  c->status = in->status;
  switch (c->kind) {
  case R_NON_OBJ: /* return 23; */
    return uvp_ret_value(INT_VALUE(23), NULL);
  case R_NON_THENABLE: { /* return { then: null }; */
    boxed_t *o = c->obj;
    c->obj = NULL;
    return uvp_ret_value(o, boxed_free);
  }
  case R_SELF: /* return p2; */
    return uvp_ret_adopt(uvp_promise_retain(c->self));
  default: { /* return thenable; */
    uvp_promise_t *t = c->thenable;
    c->thenable = NULL;
    return uvp_ret_adopt(t);
  }
  }
}

static void resolve_case(fixture_t *f, int pending, int fulfilled, int kind) {
  int freed_obj = 0, freed_value = 0;
  uvp_promise_t *p1, *p2, *p3;
  rcase_t c = {0};
  both_t next = {0};
  void *want = NULL;

  count_unhandled(f);
  c.kind = kind;
  if (kind == R_NON_THENABLE) {
    c.obj = boxed_new(8, &freed_obj);
    want = c.obj;
  } else if (kind == R_THENABLE) {
    /* var thenable = new Promise(function(r) { r(value); }); */
    boxed_t *value = boxed_new(9, &freed_value);
    assert_int_equal(uvp_promise_new(f->ctx, &c.thenable), 0);
    assert_int_equal(uvp_promise_resolve(c.thenable, value, boxed_free), 0);
    want = value;
  } else if (kind == R_NON_OBJ) {
    want = INT_VALUE(23);
  }

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  if (!pending) {
    if (fulfilled)
      assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
    else
      assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  }
  if (fulfilled) /* p2 = p1.then(function() { return X; }) */
    assert_int_equal(uvp_promise_then(p1, rcase_cb, &c, &p2), 0);
  else /* p2 = p1.then(function() {}, function() { return X; }) */
    assert_int_equal(uvp_promise_on(p1, UVP_ON_REJECTED, rcase_cb, &c, &p2), 0);
  c.self = p2;
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  if (pending) {
    run_loop(f);
    assert_int_equal(c.calls, 0);
    assert_int_equal(uvp_promise_state(p2), UVP_PENDING);
    if (fulfilled)
      assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
    else
      assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  }
  run_loop(f);

  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, fulfilled ? 0 : UV_EIO);
  if (kind == R_SELF) {
    /* TypeError: self-resolution */
    assert_int_equal(uvp_promise_state(p2), UVP_REJECTED);
    assert_int_equal(next.ok.calls, 0);
    assert_int_equal(next.err.calls, 1);
    assert_int_equal(next.err.status, UVP_ECYCLE);
    assert_int_equal(uvp_promise_reason(p2, NULL), UVP_ECYCLE);
  } else {
    assert_int_equal(uvp_promise_state(p2), UVP_FULFILLED);
    assert_int_equal(next.err.calls, 0);
    assert_int_equal(next.ok.calls, 1);
    assert_ptr_equal(next.ok.value, want);
    assert_ptr_equal(uvp_promise_value(p2), want);
  }
  assert_null(c.thenable); /* handed over */
  release_all(3, p1, p2, p3);
  if (kind == R_NON_THENABLE)
    assert_int_equal(freed_obj, 1);
  if (kind == R_THENABLE)
    assert_int_equal(freed_value, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

#define RESOLVE_CASE(name, pending, fulfilled, kind)                           \
  static void name(void **state) {                                             \
    resolve_case(*state, pending, fulfilled, kind);                            \
  }

/* resolve-pending-fulfilled-*.js */
RESOLVE_CASE(resolve_pending_fulfilled_non_obj, 1, 1, R_NON_OBJ)
RESOLVE_CASE(resolve_pending_fulfilled_non_thenable, 1, 1, R_NON_THENABLE)
RESOLVE_CASE(resolve_pending_fulfilled_self, 1, 1, R_SELF)
RESOLVE_CASE(resolve_pending_fulfilled_thenable, 1, 1, R_THENABLE)
/* resolve-pending-rejected-*.js */
RESOLVE_CASE(resolve_pending_rejected_non_obj, 1, 0, R_NON_OBJ)
RESOLVE_CASE(resolve_pending_rejected_non_thenable, 1, 0, R_NON_THENABLE)
RESOLVE_CASE(resolve_pending_rejected_self, 1, 0, R_SELF)
RESOLVE_CASE(resolve_pending_rejected_thenable, 1, 0, R_THENABLE)
/* resolve-settled-fulfilled-*.js */
RESOLVE_CASE(resolve_settled_fulfilled_non_obj, 0, 1, R_NON_OBJ)
RESOLVE_CASE(resolve_settled_fulfilled_non_thenable, 0, 1, R_NON_THENABLE)
RESOLVE_CASE(resolve_settled_fulfilled_self, 0, 1, R_SELF)
RESOLVE_CASE(resolve_settled_fulfilled_thenable, 0, 1, R_THENABLE)
/* resolve-settled-rejected-*.js */
RESOLVE_CASE(resolve_settled_rejected_non_obj, 0, 0, R_NON_OBJ)
RESOLVE_CASE(resolve_settled_rejected_non_thenable, 0, 0, R_NON_THENABLE)
RESOLVE_CASE(resolve_settled_rejected_self, 0, 0, R_SELF)
RESOLVE_CASE(resolve_settled_rejected_thenable, 0, 0, R_THENABLE)

/* ------------------------------------------------------------------------ */
/* PerformPromiseThen with missing handlers (S25.4.5.3_A4.*)                 */
/* ------------------------------------------------------------------------ */

/* S25.4.5.3_A4.1_T1.js: then(undefined, undefined) on a fulfilled promise. */
static void S25_4_5_3_A4_1_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d1, *d2;
  both_t next = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(3), NULL, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);
  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, SENTINEL(3));
  release_all(3, p, d1, d2);
  assert_no_live(f);
}

/* S25.4.5.3_A4.1_T2.js: then(undefined, undefined) on a rejected promise. */
static void S25_4_5_3_A4_1_T2(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d1, *d2;
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(3), NULL, &p),
                   0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EIO);
  assert_ptr_equal(next.err.value, SENTINEL(3));
  release_all(3, p, d1, d2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* S25.4.5.3_A4.2_T1.js: non-callable handlers behave as undefined — here
 * NULL handlers through the then() and catch() macros, on fulfilment. */
static void S25_4_5_3_A4_2_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d1, *d2, *e1, *e2;
  both_t n1 = {0}, n2 = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(3), NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_catch(p, NULL, NULL, &e1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &n1, &d2), 0);
  assert_int_equal(uvp_promise_on(e1, UVP_ON_BOTH, both_cb, &n2, &e2), 0);
  run_loop(f);
  assert_int_equal(n1.ok.calls, 1);
  assert_int_equal(n1.err.calls, 0);
  assert_ptr_equal(n1.ok.value, SENTINEL(3));
  assert_int_equal(n2.ok.calls, 1);
  assert_int_equal(n2.err.calls, 0);
  assert_ptr_equal(n2.ok.value, SENTINEL(3));
  release_all(5, p, d1, d2, e1, e2);
  assert_no_live(f);
}

/* S25.4.5.3_A4.2_T2.js: the same on rejection. */
static void S25_4_5_3_A4_2_T2(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d1, *d2, *e1, *e2;
  both_t n1 = {0}, n2 = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(3), NULL, &p),
                   0);
  assert_int_equal(uvp_promise_then(p, NULL, NULL, &d1), 0);
  assert_int_equal(uvp_promise_catch(p, NULL, NULL, &e1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &n1, &d2), 0);
  assert_int_equal(uvp_promise_on(e1, UVP_ON_BOTH, both_cb, &n2, &e2), 0);
  run_loop(f);
  assert_int_equal(n1.ok.calls, 0);
  assert_int_equal(n1.err.calls, 1);
  assert_int_equal(n1.err.status, UV_EIO);
  assert_ptr_equal(n1.err.value, SENTINEL(3));
  assert_int_equal(n2.ok.calls, 0);
  assert_int_equal(n2.err.calls, 1);
  assert_ptr_equal(n2.err.value, SENTINEL(3));
  release_all(5, p, d1, d2, e1, e2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Sequencing                                                                */
/* ------------------------------------------------------------------------ */

/* S25.4.4_A1.1_T1.js: onResolved handlers of two chains on one promise run
 * in a predictable, interleaved sequence; none before then() returns. */
static void S25_4_4_A1_1_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *a1, *a2, *a3, *b1, *b2, *b3, *b4;
  rec_t r3 = {.trace = &t, .mark = 3}, r5 = {.trace = &t, .mark = 5},
        r7 = {.trace = &t, .mark = 7}, r4 = {.trace = &t, .mark = 4},
        r6 = {.trace = &t, .mark = 6}, r8 = {.trace = &t, .mark = 8},
        check = {.trace = &t, .mark = 9, .seq = 1};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  trace_push(&t, 1); /* in the executor */
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);

  assert_int_equal(uvp_promise_then(p, rec_cb, &r3, &a1), 0);
  assert_int_equal(uvp_promise_then(a1, rec_cb, &r5, &a2), 0);
  assert_int_equal(uvp_promise_then(a2, rec_cb, &r7, &a3), 0);

  assert_int_equal(uvp_promise_then(p, rec_cb, &r4, &b1), 0);
  assert_int_equal(uvp_promise_then(b1, rec_cb, &r6, &b2), 0);
  assert_int_equal(uvp_promise_then(b2, rec_cb, &r8, &b3), 0);
  /* .then(function () { checkSequence(sequence); }) */
  assert_int_equal(uvp_promise_then(b3, rec_cb, &check, &b4), 0);

  trace_push(&t, 2);
  check_sequence(&t, 2);
  run_loop(f);

  check_sequence(&t, 9);
  assert_int_equal(check.calls, 1);
  release_all(8, p, a1, a2, a3, b1, b2, b3, b4);
  assert_no_live(f);
}

/* S25.4.4_A2.1_T1.js: reactions of two pending promises run in the order
 * the promises were settled (reject p2 before resolve p1). */
static void S25_4_4_A2_1_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  int freed = 0;
  uvp_promise_t *p1, *p2, *d1, *d2, *e1;
  rec_t check = {.trace = &t, .mark = 4, .seq = 1};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_then(p1, push_msg_cb, &t, &d1), 0);
  assert_int_equal(uvp_promise_then(d1, rec_cb, &check, &d2), 0);

  assert_int_equal(uvp_promise_new(f->ctx, &p2), 0);
  assert_int_equal(uvp_promise_catch(p2, push_msg_cb, &t, &e1), 0);

  assert_int_equal(
      uvp_promise_reject(p2, UV_EIO, boxed_new(2, &freed), boxed_free), 0);
  assert_int_equal(uvp_promise_resolve(p1, boxed_new(3, &freed), boxed_free),
                   0);
  trace_push(&t, 1);
  check_sequence(&t, 1);
  run_loop(f);

  check_sequence(&t, 4); /* "Expected 1,2,3" when the check ran */
  assert_int_equal(check.calls, 1);
  release_all(5, p1, p2, d1, d2, e1);
  assert_int_equal(freed, 2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* S25.4.4_A2.1_T2.js: both promises settled before the reactions are
 * registered: registration order decides. */
static void S25_4_4_A2_1_T2(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  int freed = 0;
  uvp_promise_t *p1, *p2, *d1, *e1, *e2;
  rec_t check = {.trace = &t, .mark = 4, .seq = 1};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p2), 0);
  assert_int_equal(
      uvp_promise_reject(p2, UV_EIO, boxed_new(3, &freed), boxed_free), 0);
  assert_int_equal(uvp_promise_resolve(p1, boxed_new(2, &freed), boxed_free),
                   0);

  assert_int_equal(uvp_promise_then(p1, push_msg_cb, &t, &d1), 0);
  assert_int_equal(uvp_promise_catch(p2, push_msg_cb, &t, &e1), 0);
  assert_int_equal(uvp_promise_then(e1, rec_cb, &check, &e2), 0);
  trace_push(&t, 1);
  check_sequence(&t, 1);
  run_loop(f);

  check_sequence(&t, 4);
  assert_int_equal(check.calls, 1);
  release_all(5, p1, p2, d1, e1, e2);
  assert_int_equal(freed, 2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* S25.4.4_A2.1_T3.js: the same registrations made from inside a reaction of
 * Promise.resolve(). */
typedef struct a21t3_s {
  trace_t *t;
  uvp_promise_t *p1, *p2;
  uvp_promise_t *d1, *e1, *e2;
  rec_t check;
  int calls;
} a21t3_t;

static uvp_ret_t a21t3_cb(void *arg, const uvp_outcome_t *in) {
  a21t3_t *s = arg;
  (void)in;
  s->calls++;
  assert_int_equal(uvp_promise_then(s->p1, push_msg_cb, s->t, &s->d1), 0);
  assert_int_equal(uvp_promise_catch(s->p2, push_msg_cb, s->t, &s->e1), 0);
  assert_int_equal(uvp_promise_then(s->e1, rec_cb, &s->check, &s->e2), 0);
  /* nothing registered here runs inside this handler */
  check_sequence(s->t, 1);
  return uvp_ret_value(NULL, NULL);
}

static void S25_4_4_A2_1_T3(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  int freed = 0;
  uvp_promise_t *r, *rd;
  a21t3_t s = {0};

  count_unhandled(f);
  s.t = &t;
  s.check = (rec_t){.trace = &t, .mark = 4, .seq = 1};
  assert_int_equal(uvp_promise_new(f->ctx, &s.p1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &s.p2), 0);
  assert_int_equal(
      uvp_promise_reject(s.p2, UV_EIO, boxed_new(3, &freed), boxed_free), 0);
  assert_int_equal(uvp_promise_resolve(s.p1, boxed_new(2, &freed), boxed_free),
                   0);

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &r), 0);
  assert_int_equal(uvp_promise_then(r, a21t3_cb, &s, &rd), 0);
  trace_push(&t, 1);
  run_loop(f);

  assert_int_equal(s.calls, 1);
  check_sequence(&t, 4);
  assert_int_equal(s.check.calls, 1);
  release_all(7, r, rd, s.p1, s.p2, s.d1, s.e1, s.e2);
  assert_int_equal(freed, 2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* S25.4.5.3_A5.1_T1.js: then() on a pending promise queues the handler when
 * the promise settles, after the reactions registered before it. */
typedef struct a5_s {
  trace_t *t;
  uvp_promise_t *p;
  uvp_promise_t *d;
  both_t h;
  int push;   /* what the outer handler pushes */
  int settle; /* 0: nothing, 1: resolve p, 2: reject p */
  int calls;
} a5_t;

static uvp_ret_t a5_outer_cb(void *arg, const uvp_outcome_t *in) {
  a5_t *s = arg;
  (void)in;
  s->calls++;
  /* enqueue another then-handler */
  assert_int_equal(uvp_promise_on(s->p, UVP_ON_BOTH, both_cb, &s->h, &s->d), 0);
  trace_push(s->t, s->push);
  check_sequence(s->t, s->push);
  if (s->settle == 1)
    assert_int_equal(uvp_promise_resolve(s->p, NULL, NULL), 0);
  else if (s->settle == 2)
    assert_int_equal(uvp_promise_reject(s->p, UV_EIO, NULL, NULL), 0);
  return uvp_ret_value(NULL, NULL);
}

static void S25_4_5_3_A5_1_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d, *r, *rd;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1}; /* "Should be second" */
  a5_t s = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r3, &d), 0);

  s.t = &t;
  s.p = p;
  s.push = 2; /* "Should be first" */
  s.settle = 1;
  s.h.ok = (rec_t){.trace = &t, .mark = 4, .seq = 1}; /* "Should be third" */
  s.h.err = (rec_t){.trace = &t, .mark = -4};
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &r), 0);
  assert_int_equal(uvp_promise_then(r, a5_outer_cb, &s, &rd), 0);
  check_sequence(&t, 1);
  run_loop(f);

  check_sequence(&t, 4);
  assert_int_equal(r3.calls, 1);
  assert_int_equal(s.h.ok.calls, 1);
  release_all(5, p, d, r, rd, s.d);
  assert_no_live(f);
}

/* S25.4.5.3_A5.2_T1.js: then() on a fulfilled promise queues the handler at
 * once (before Promise.resolve().then's, registered after it). */
static void S25_4_5_3_A5_2_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d, *r, *rd;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1}; /* "Should be first" */
  a5_t s = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r3, &d), 0);

  s.t = &t;
  s.p = p;
  s.push = 4;                                         /* "Should be second" */
  s.h.ok = (rec_t){.trace = &t, .mark = 5, .seq = 1}; /* "Should be third" */
  s.h.err = (rec_t){.trace = &t, .mark = -5};
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &r), 0);
  assert_int_equal(uvp_promise_then(r, a5_outer_cb, &s, &rd), 0);
  trace_push(&t, 2);
  check_sequence(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_int_equal(r3.calls, 1);
  assert_int_equal(s.h.ok.calls, 1);
  release_all(5, p, d, r, rd, s.d);
  assert_no_live(f);
}

/* S25.4.5.3_A5.3_T1.js: the same for a rejected promise. */
static void S25_4_5_3_A5_3_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d, *r, *rd;
  both_t h3 = {0};
  a5_t s = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  h3.ok = (rec_t){.trace = &t, .mark = -3};
  h3.err = (rec_t){.trace = &t, .mark = 3, .seq = 1};
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h3, &d), 0);

  s.t = &t;
  s.p = p;
  s.push = 4;
  s.h.ok = (rec_t){.trace = &t, .mark = -5};
  s.h.err = (rec_t){.trace = &t, .mark = 5, .seq = 1};
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &r), 0);
  assert_int_equal(uvp_promise_then(r, a5_outer_cb, &s, &rd), 0);
  trace_push(&t, 2);
  check_sequence(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_int_equal(h3.err.calls, 1);
  assert_int_equal(s.h.err.calls, 1);
  release_all(5, p, d, r, rd, s.d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* uvp's documented difference                                               */
/* ------------------------------------------------------------------------ */

/* C-specific: a handler returning an already-settled promise.
 *
 *   a = Promise.resolve(); b = Promise.resolve();
 *   d = a.then(() => q);   // q already fulfilled
 *   d.then(() => push(10));
 *   b.then(push 1).then(push 2).then(push 3).then(push 4);
 *
 * JavaScript resolves d through NewPromiseResolveThenableJob and q.then's
 * reaction job — two extra ticks — and logs 1, 2, 3, 10, 4.  uvp adopts the
 * settled q at once, so d's handler is queued when a's handler returns and
 * runs right after the first handler of the other chain: 1, 10, 2, 3, 4. */
static void c_adopt_settled_no_thenable_job_ticks(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *a, *b, *q, *d, *d2, *b1, *b2, *b3, *b4;
  rec_t ra = {0}, rd = {.trace = &t, .mark = 10};
  rec_t r1 = {.trace = &t, .mark = 1}, r2 = {.trace = &t, .mark = 2},
        r3 = {.trace = &t, .mark = 3}, r4 = {.trace = &t, .mark = 4};

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &a), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &b), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(4), NULL, &q), 0);
  ra.ret = uvp_ret_adopt(uvp_promise_retain(q));
  assert_int_equal(uvp_promise_then(a, rec_cb, &ra, &d), 0);
  assert_int_equal(uvp_promise_then(d, rec_cb, &rd, &d2), 0);
  assert_int_equal(uvp_promise_then(b, rec_cb, &r1, &b1), 0);
  assert_int_equal(uvp_promise_then(b1, rec_cb, &r2, &b2), 0);
  assert_int_equal(uvp_promise_then(b2, rec_cb, &r3, &b3), 0);
  assert_int_equal(uvp_promise_then(b3, rec_cb, &r4, &b4), 0);
  run_loop(f);

  expect_trace(&t, 5, 1, 10, 2, 3, 4);
  assert_ptr_equal(rd.value, SENTINEL(4));
  assert_ptr_equal(uvp_promise_value(d), SENTINEL(4));
  release_all(9, a, b, q, d, d2, b1, b2, b3, b4);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Taking p: UVP_ON_TAKE (C-specific)                                        */
/* ------------------------------------------------------------------------ */

/* The masks a taking registration is made with, and an outcome of the
 * source that each one's handler runs for. */
static const struct {
  int mask;
  int status;
} take_forms[] = {
    {UVP_ON_FULFILLED, 0},
    {UVP_ON_REJECTED, UV_EIO},
    {UVP_ON_BOTH, UV_EIO},
    {UVP_ON_FINALLY, 0},
};
enum { NTAKE = sizeof(take_forms) / sizeof(take_forms[0]) };

/* A pending promise nothing but the test holds, settled by settling *src
 * (the derived promise of a handler-less then: its handler holds it, not
 * its source). */
static uvp_promise_t *take_source(fixture_t *f, uvp_promise_t **src) {
  uvp_promise_t *p;
  *src = pending(f);
  assert_int_equal(uvp_promise_then(*src, NULL, NULL, &p), 0);
  return p;
}

static void take_settle(uvp_promise_t *src, int status, void *v) {
  if (status == 0)
    assert_int_equal(uvp_promise_resolve(src, v, NULL), 0);
  else
    assert_int_equal(uvp_promise_reject(src, status, v, NULL), 0);
}

/* A taken handler's destroy notifier: counts its calls. */
static int g_notified;
static void count_notified(void *arg) {
  (void)arg;
  g_notified++;
}

/* The taken promise stays alive until its handler has run, with no other
 * reference anywhere, then goes.  The test settles p through the pointer
 * it handed over (alive: the handler holds it); the plain form, released
 * here, frees p at once and its handler never runs ("p itself is not kept
 * alive by its handlers"). */
static void c_take_keeps_pending_promise(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  for (int k = 0; k < NTAKE; k++) {
    uvp_promise_t *p, *d;
    rec_t r = {0};
    assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
    assert_int_equal(
        uvp_promise_on(p, take_forms[k].mask | UVP_ON_TAKE, rec_cb, &r, &d), 0);
    run_loop(f);
    assert_int_equal(live_count(f), 2); /* pending: p waits, held */
    take_settle(p, take_forms[k].status, SENTINEL(k));
    run_loop(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, take_forms[k].status);
    assert_ptr_equal(r.value, SENTINEL(k));
    assert_ptr_equal(r.from, p);
    assert_int_equal(uvp_promise_state(d),
                     take_forms[k].status == 0 ||
                             take_forms[k].mask != UVP_ON_FINALLY
                         ? UVP_FULFILLED
                         : UVP_REJECTED);
    /* p went once its handler had run, unless finally's d shares its
     * value */
    assert_int_equal(live_count(f),
                     take_forms[k].mask == UVP_ON_FINALLY ? 2 : 1);
    uvp_promise_release(d);
    assert_no_live(f);
  }
  assert_int_equal(g_unhandled, 0);
}

/* A settled promise: the handler runs, the value goes with it. */
static void c_take_settled_promise(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  uvp_promise_t *p, *d;
  rec_t r = {0};

  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &p), 0);
  assert_int_equal(uvp_promise_then_take(p, rec_cb, &r, &d), 0);
  assert_int_equal(freed, 0);
  run_loop(f);
  assert_int_equal(r.calls, 1);
  assert_int_equal(freed, 1);
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
  uvp_promise_release(d);

  /* out == NULL: nothing is left but the handler, which holds p */
  rec_t c = {0};
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &p), 0);
  count_unhandled(f);
  assert_int_equal(uvp_promise_catch_take(p, rec_cb, &c, NULL), 0);
  run_loop(f);
  assert_int_equal(c.calls, 1);
  assert_int_equal(g_unhandled, 0);

  /* finally_take: d settles like p, whose value it shares */
  rec_t fin = {0};
  freed = 0;
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(2, &freed), boxed_free, &p), 0);
  assert_int_equal(uvp_promise_finally_take(p, rec_cb, &fin, &d), 0);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(((boxed_t *)uvp_promise_value(d))->v, 2);
  assert_int_equal(freed, 0);
  uvp_promise_release(d);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

typedef struct take_thread_s {
  uvp_promise_t *p;
  int rc;
} take_thread_t;

static void take_on_other_thread(void *arg) {
  take_thread_t *t = arg;
  t->rc = uvp_promise_then_take(t->p, rec_cb, NULL, NULL);
}

/* A registration that fails still takes p: every error releases it. */
static void c_take_failed_registration_consumes(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  uvp_promise_t *p, *d = SENTINEL(0);
  static const int bad[] = {0, 5, 7, UVP_ON_TAKE << 1};

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(
        uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &p), 0);
    assert_int_equal(uvp_promise_on(p, bad[i] | UVP_ON_TAKE, rec_cb, NULL, &d),
                     UV_EINVAL);
    assert_int_equal(freed, (int)i + 1); /* released at once */
    assert_ptr_equal(d, SENTINEL(0));
  }
  /* without the bit, or negative (-1 has every bit), a bad mask leaves p
   * to the caller */
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &p), 0);
  assert_int_equal(uvp_promise_on(p, 5, rec_cb, NULL, &d), UV_EINVAL);
  assert_int_equal(uvp_promise_on(p, -1, rec_cb, NULL, &d), UV_EINVAL);
  assert_int_equal(
      uvp_promise_on(NULL, UVP_ON_FULFILLED | UVP_ON_TAKE, rec_cb, NULL, &d),
      UV_EINVAL);
  uvp_promise_release(p);
  assert_no_live(f);

  /* refused on another thread: released there (posted to the loop) */
  take_thread_t t = {.rc = 0};
  assert_int_equal(uvp_promise_new(f->ctx, &t.p), 0);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(take_on_other_thread, &t);
  assert_int_equal(t.rc, UVP_ETHREAD);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, 0), 0);
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0, &p), 0);
  run_loop(f); /* a turn of the loop: the posted release applies */
  uvp_promise_release(p);
  assert_no_live(f);

  /* a closed context: released too (else the context would never go,
   * and the teardown's allocator check would fail) */
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  close_ctx(f);
  assert_int_equal(uvp_promise_then_take(p, rec_cb, NULL, NULL), UVP_ECLOSED);
}

/* The derived promise cancelled: the handler is dropped, and the reference
 * it held goes with it (its notifier runs); p's other consumer still gets
 * p's outcome.  Cancelled while the handler is p's only consumer, p is
 * cancelled as well, up the chain. */
static void c_take_cancel_derived_drops_reference(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *src, *d, *d2;
  rec_t r = {0}, r2 = {0};

  uvp_promise_t *p = take_source(f, &src);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r2, &d2), 0);
  uvp_promise_retain(p); /* to watch it: the take gets the other */
  assert_int_equal(uvp_promise_on_full(p, UVP_ON_FULFILLED | UVP_ON_TAKE,
                                       rec_cb, &r, count_notified, &d),
                   0);
  g_notified = 0;
  assert_int_equal(uvp_promise_cancel(d), 0);
  assert_int_equal(g_notified, 1);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING); /* another waits */
  take_settle(src, 0, SENTINEL(1));
  run_loop(f);
  assert_int_equal(r.calls, 0);
  assert_int_equal(r2.calls, 1);
  release_all(4, p, src, d, d2); /* p's last: the take's went at the cut */
  assert_no_live(f);

  p = take_source(f, &src);
  assert_int_equal(uvp_promise_then_take(p, rec_cb, &r, &d), 0);
  assert_int_equal(uvp_promise_cancel(d), 0);
  assert_int_equal(uvp_promise_reason(src, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(r.calls, 0);
  release_all(2, src, d);
  assert_no_live(f);
}

/* Teardown drops a taken handler that never ran, and its reference. */
static void c_take_teardown_drops_reference(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *src[2], *p, *d;
  rec_t r = {0};

  g_notified = 0;
  p = take_source(f, &src[0]);
  assert_int_equal(uvp_promise_on_full(p, UVP_ON_BOTH | UVP_ON_TAKE, rec_cb, &r,
                                       count_notified, NULL),
                   0);
  p = take_source(f, &src[1]); /* and one with a derived promise */
  assert_int_equal(uvp_promise_finally_take(p, rec_cb, &r, &d), 0);
  close_ctx(f);
  assert_int_equal(g_notified, 1);
  assert_int_equal(r.calls, 0);
  /* the teardown's allocator check: nothing else is left */
  release_all(3, src[0], src[1], d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(S25_4_2_1_A1_1_T1),
      FIXTURE_TEST(rxn_handler_identity),
      FIXTURE_TEST(S25_4_2_1_A2_1_T1),
      FIXTURE_TEST(rxn_handler_thrower),
      FIXTURE_TEST(rxn_handler_fulfilled_invoke),
      FIXTURE_TEST(rxn_handler_rejected_invoke),
      FIXTURE_TEST(rxn_handler_fulfilled_next),
      FIXTURE_TEST(rxn_handler_rejected_next),
      FIXTURE_TEST(rxn_handler_fulfilled_next_abrupt),
      FIXTURE_TEST(rxn_handler_rejected_next_abrupt),
      FIXTURE_TEST(rxn_handler_fulfilled_return_normal),
      FIXTURE_TEST(rxn_handler_rejected_return_normal),
      FIXTURE_TEST(rxn_handler_fulfilled_return_abrupt),
      FIXTURE_TEST(rxn_handler_rejected_return_abrupt),
      FIXTURE_TEST(prfm_fulfilled),
      FIXTURE_TEST(prfm_rejected),
      FIXTURE_TEST(prfm_pending_fulfulled),
      FIXTURE_TEST(prfm_pending_rejected),
      FIXTURE_TEST(reject_pending_fulfilled),
      FIXTURE_TEST(reject_pending_rejected),
      FIXTURE_TEST(reject_settled_fulfilled),
      FIXTURE_TEST(reject_settled_rejected),
      FIXTURE_TEST(resolve_pending_fulfilled_non_obj),
      FIXTURE_TEST(resolve_pending_fulfilled_non_thenable),
      FIXTURE_TEST(resolve_pending_fulfilled_self),
      FIXTURE_TEST(resolve_pending_fulfilled_thenable),
      FIXTURE_TEST(resolve_pending_rejected_non_obj),
      FIXTURE_TEST(resolve_pending_rejected_non_thenable),
      FIXTURE_TEST(resolve_pending_rejected_self),
      FIXTURE_TEST(resolve_pending_rejected_thenable),
      FIXTURE_TEST(resolve_settled_fulfilled_non_obj),
      FIXTURE_TEST(resolve_settled_fulfilled_non_thenable),
      FIXTURE_TEST(resolve_settled_fulfilled_self),
      FIXTURE_TEST(resolve_settled_fulfilled_thenable),
      FIXTURE_TEST(resolve_settled_rejected_non_obj),
      FIXTURE_TEST(resolve_settled_rejected_non_thenable),
      FIXTURE_TEST(resolve_settled_rejected_self),
      FIXTURE_TEST(resolve_settled_rejected_thenable),
      FIXTURE_TEST(S25_4_5_3_A4_1_T1),
      FIXTURE_TEST(S25_4_5_3_A4_1_T2),
      FIXTURE_TEST(S25_4_5_3_A4_2_T1),
      FIXTURE_TEST(S25_4_5_3_A4_2_T2),
      FIXTURE_TEST(S25_4_4_A1_1_T1),
      FIXTURE_TEST(S25_4_4_A2_1_T1),
      FIXTURE_TEST(S25_4_4_A2_1_T2),
      FIXTURE_TEST(S25_4_4_A2_1_T3),
      FIXTURE_TEST(S25_4_5_3_A5_1_T1),
      FIXTURE_TEST(S25_4_5_3_A5_2_T1),
      FIXTURE_TEST(S25_4_5_3_A5_3_T1),
      FIXTURE_TEST(c_adopt_settled_no_thenable_job_ticks),
      FIXTURE_TEST(c_take_keeps_pending_promise),
      FIXTURE_TEST(c_take_settled_promise),
      FIXTURE_TEST(c_take_failed_registration_consumes),
      FIXTURE_TEST(c_take_cancel_derived_drops_reference),
      FIXTURE_TEST(c_take_teardown_drops_reference),
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
