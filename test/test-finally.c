/* test262 Promise.prototype.finally, ported to uvp.
 *
 * Source: tc39/test262, every file in
 * test/built-ins/Promise/prototype/finally/. Each test is named after the file
 * it ports (dashes and dots as underscores).  Tests whose name starts with "c_"
 * are C-specific additions derived from the spec's Then/Catch Finally Functions
 * (25.6.5.3.1-2) and from uvp_promise_finally's comment in include/uvp.h.
 *
 * Mapping (see the top of include/uvp.h and test262.h):
 *   p.finally(f)                uvp_promise_finally(p, f, ...)
 *   return v (from onFinally)   uvp_ret_value: ignored (and destroyed)
 *   throw e (from onFinally)    uvp_ret_reject: overrides the outcome
 *   return promise              uvp_ret_adopt: waited for; its rejection
 *                               overrides, its fulfilment does not
 *   JS `throw e` in a catch     uvp_ret_pass (rethrow the same reason)
 *
 * One deliberate difference: JavaScript calls onFinally with no arguments;
 * uvp's handler sees the outcome (header: "cb runs on either outcome (and
 * sees it)").  The "onFinally receives zero args" assertions are therefore
 * replaced by checks that the handler saw the right outcome.
 *
 * Skipped groups (no C analogue):
 *   length.js, name.js, prop-desc.js, not-a-constructor.js, is-a-function.js,
 *   is-a-method.js
 *     - function object properties.
 *   species-constructor.js, species-symbol.js, subclass-reject-count.js,
 *   subclass-resolve-count.js, subclass-species-constructor-*.js,
 *   then-catch-finally-realm.js
 *     - SpeciesConstructor / subclassing / realms: uvp has one promise type.
 *   this-value-non-object.js, this-value-non-promise.js, this-value-proxy.js,
 *   this-value-then-not-callable.js, this-value-then-poisoned.js,
 *   this-value-then-throws.js, this-value-thenable.js,
 *   invokes-then-with-function.js, invokes-then-with-non-function.js
 *     - finally on non-promise receivers and the observable Invoke(promise,
 *       "then", ...): the C argument is typed and uvp promises have no
 *       overridable `then`.
 *   rejected-observable-then-calls-argument.js,
 *   resolved-observable-then-calls-argument.js,
 *   *-observable-then-calls-PromiseResolve.js
 *     - the `length`/`name` of the valueThunk/thrower functions and the
 *       PromiseResolve lookups.
 *   The "then invoked once" counters of rejected-observable-then-calls.js and
 *   resolved-observable-then-calls.js are dropped for the same reason; their
 *   behaviour (which outcome wins, every callback called once, in order) is
 *   ported. */
#include "test262.h"

/* ------------------------------------------------------------------------ */
/* finally/                                                                  */
/* ------------------------------------------------------------------------ */

/* resolution-value-no-override.js: a value onFinally returns does not
 * replace the fulfilment value (and is destroyed exactly once). */
static void resolution_value_no_override(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  int freed_obj = 0, freed_ret = 0;
  boxed_t *obj = boxed_new(1, &freed_obj);
  uvp_promise_t *p, *d, *d2, *d3;
  rec_t fin = {.trace = &t, .mark = 1};
  rec_t next = {.trace = &t, .mark = 2};
  rec_t last = {.trace = &t, .mark = 3, .seq = 1}; /* callbackCount === 2 */

  assert_int_equal(uvp_promise_resolved(f->ctx, obj, boxed_free, &p), 0);
  fin.ret = uvp_ret_value(boxed_new(2, &freed_ret), boxed_free);
  assert_int_equal(uvp_promise_finally(p, rec_cb, &fin, &d), 0);
  assert_int_equal(uvp_promise_then(d, rec_cb, &next, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &last, &d3), 0);
  assert_int_equal(fin.calls, 0);
  run_loop(f);

  check_sequence(&t, 3);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(fin.status, 0);
  assert_ptr_equal(fin.value, obj);
  assert_int_equal(freed_ret, 1);
  assert_int_equal(next.calls, 1);
  assert_int_equal(next.status, 0);
  assert_ptr_equal(next.value, obj);
  assert_ptr_equal(uvp_promise_value(d), obj);
  uvp_promise_release(p);
  assert_int_equal(freed_obj, 0); /* d shares it */
  release_all(3, d, d2, d3);
  assert_int_equal(freed_obj, 1);
  assert_int_equal(freed_ret, 1);
  assert_no_live(f);
}

/* rejection-reason-no-fulfill.js: a value onFinally returns does not turn
 * a rejection into a fulfilment. */
static void rejection_reason_no_fulfill(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  int freed_orig = 0, freed_repl = 0;
  boxed_t *original = boxed_new(1, &freed_orig);
  uvp_promise_t *p, *d, *d1, *d2, *d3;
  rec_t fin = {.trace = &t, .mark = 1};
  rec_t never = {.trace = &t, .mark = -1};
  rec_t c = {.trace = &t, .mark = 2};
  rec_t last = {.trace = &t, .mark = 3, .seq = 1};

  count_unhandled(f);
  assert_int_equal(
      uvp_promise_rejected(f->ctx, UV_EIO, original, boxed_free, &p), 0);
  fin.ret = uvp_ret_value(boxed_new(2, &freed_repl), boxed_free);
  assert_int_equal(uvp_promise_finally(p, rec_cb, &fin, &d), 0);
  assert_int_equal(uvp_promise_then(d, rec_cb, &never, &d1), 0);
  assert_int_equal(uvp_promise_catch(d1, rec_cb, &c, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &last, &d3), 0);
  run_loop(f);

  check_sequence(&t, 3);
  assert_int_equal(fin.status, UV_EIO);
  assert_ptr_equal(fin.value, original);
  assert_int_equal(never.calls, 0);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, UV_EIO);
  assert_ptr_equal(c.value, original);
  assert_int_equal(freed_repl, 1);
  release_all(5, p, d, d1, d2, d3);
  assert_int_equal(freed_orig, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* rejection-reason-override-with-throw.js: onFinally throwing replaces the
 * rejection reason. */
static void rejection_reason_override_with_throw(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  int freed_orig = 0, freed_thrown = 0;
  boxed_t *original = boxed_new(1, &freed_orig);
  boxed_t *thrown = boxed_new(2, &freed_thrown);
  uvp_promise_t *p, *d, *d1, *d2, *d3;
  rec_t fin = {.trace = &t, .mark = 1};
  rec_t never = {.trace = &t, .mark = -1};
  rec_t c = {.trace = &t, .mark = 2};
  rec_t last = {.trace = &t, .mark = 3, .seq = 1}; /* callbackCount === 2 */

  count_unhandled(f);
  assert_int_equal(
      uvp_promise_rejected(f->ctx, UV_EIO, original, boxed_free, &p), 0);
  fin.ret = uvp_ret_reject(UV_EPIPE, thrown, boxed_free);
  assert_int_equal(uvp_promise_finally(p, rec_cb, &fin, &d), 0);
  assert_int_equal(uvp_promise_then(d, rec_cb, &never, &d1), 0);
  assert_int_equal(uvp_promise_catch(d1, rec_cb, &c, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &last, &d3), 0);
  run_loop(f);

  check_sequence(&t, 3);
  assert_int_equal(fin.status, UV_EIO);
  assert_int_equal(never.calls, 0);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, UV_EPIPE);
  assert_ptr_equal(c.value, thrown);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_EPIPE);
  assert_int_equal(freed_orig, 0);
  release_all(5, p, d, d1, d2, d3);
  assert_int_equal(freed_orig, 1);
  assert_int_equal(freed_thrown, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* rejected-observable-then-calls.js:
 *   no.catch(e => { throw e; }).finally(() => yes).catch(e => e === noReason)
 * onFinally returning a fulfilled promise keeps the rejection. */
static void rejected_observable_then_calls(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *no, *yes, *d1, *d2, *d3, *d4;
  rec_t c1 = {.trace = &t, .mark = 1};
  rec_t fin = {.trace = &t, .mark = 2};
  rec_t c3 = {.trace = &t, .mark = 3};
  rec_t last = {.trace = &t, .mark = 4, .seq = 1}; /* callbackCount === 3 */

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(1), NULL, &no),
                   0);
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(2), NULL, &yes), 0);
  c1.ret = uvp_ret_pass(); /* throw e */
  fin.ret = uvp_ret_adopt(uvp_promise_retain(yes));
  assert_int_equal(uvp_promise_catch(no, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_finally(d1, rec_cb, &fin, &d2), 0);
  assert_int_equal(uvp_promise_catch(d2, rec_cb, &c3, &d3), 0);
  assert_int_equal(uvp_promise_then(d3, rec_cb, &last, &d4), 0);
  run_loop(f);

  check_sequence(&t, 4);
  assert_int_equal(c1.status, UV_EIO);
  assert_ptr_equal(c1.value, SENTINEL(1));
  assert_int_equal(fin.calls, 1);
  assert_int_equal(fin.status, UV_EIO);
  assert_int_equal(c3.calls, 1);
  assert_int_equal(c3.status, UV_EIO);
  assert_ptr_equal(c3.value, SENTINEL(1));
  assert_int_equal(last.calls, 1);
  release_all(6, no, yes, d1, d2, d3, d4);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolved-observable-then-calls.js:
 *   yes.then(x => x).finally(() => no).catch(e => e === noReason)
 * onFinally returning a rejected promise overrides the fulfilment. */
static void resolved_observable_then_calls(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *no, *yes, *d1, *d2, *d3, *d4;
  rec_t c1 = {.trace = &t, .mark = 1};
  rec_t fin = {.trace = &t, .mark = 2};
  rec_t c3 = {.trace = &t, .mark = 3};
  rec_t last = {.trace = &t, .mark = 4, .seq = 1};

  count_unhandled(f);
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(2), NULL, &yes), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(1), NULL, &no),
                   0);
  c1.ret = uvp_ret_value(SENTINEL(2), NULL); /* return x */
  fin.ret = uvp_ret_adopt(uvp_promise_retain(no));
  assert_int_equal(uvp_promise_then(yes, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_finally(d1, rec_cb, &fin, &d2), 0);
  assert_int_equal(uvp_promise_catch(d2, rec_cb, &c3, &d3), 0);
  assert_int_equal(uvp_promise_then(d3, rec_cb, &last, &d4), 0);
  run_loop(f);

  check_sequence(&t, 4);
  assert_ptr_equal(c1.value, SENTINEL(2));
  assert_int_equal(fin.calls, 1);
  assert_int_equal(fin.status, 0);
  assert_ptr_equal(fin.value, SENTINEL(2));
  assert_int_equal(c3.calls, 1);
  assert_int_equal(c3.status, UV_EIO);
  assert_ptr_equal(c3.value, SENTINEL(1));
  assert_int_equal(last.calls, 1);
  release_all(6, no, yes, d1, d2, d3, d4);
  /* `no` was handled by the adoption, d2 by the catch */
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* C-specific, from the spec's Then/Catch Finally Functions                  */
/* ------------------------------------------------------------------------ */

/* Then Finally step: `result = Call(onFinally)` abrupt -> the derived
 * promise rejects with it, also when the original fulfilled. */
static void c_resolution_value_override_with_throw(void **state) {
  fixture_t *f = *state;
  int freed_obj = 0, freed_thrown = 0;
  boxed_t *thrown = boxed_new(2, &freed_thrown);
  uvp_promise_t *p, *d, *d2;
  rec_t fin = {0};
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &freed_obj), boxed_free, &p),
      0);
  fin.ret = uvp_ret_reject(UV_EPIPE, thrown, boxed_free);
  assert_int_equal(uvp_promise_finally(p, rec_cb, &fin, &d), 0);
  assert_int_equal(uvp_promise_on(d, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(fin.calls, 1);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EPIPE);
  assert_ptr_equal(next.err.value, thrown);
  release_all(3, p, d, d2);
  assert_int_equal(freed_obj, 1);
  assert_int_equal(freed_thrown, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* p.finally(onFinally) where onFinally returns q (one reference handed
 * over): the derived promise. */
static uvp_promise_t *finally_adopting(uvp_promise_t *p, uvp_promise_t *q,
                                       rec_t *fin) {
  uvp_promise_t *d;
  fin->ret = uvp_ret_adopt(uvp_promise_retain(q));
  assert_int_equal(uvp_promise_finally(p, rec_cb, fin, &d), 0);
  return d;
}

/* Then/Catch Finally: `promise = PromiseResolve(C, result); return
 * promise.then(valueThunk / thrower)` — a pending promise onFinally returns
 * is waited for; when it fulfils, the original outcome wins, when it
 * rejects, its reason does. */
static void finally_adopt_pending_case(fixture_t *f, int orig_ok, int q_ok) {
  int freed_orig = 0, freed_q = 0;
  boxed_t *orig = boxed_new(1, &freed_orig);
  boxed_t *qv = boxed_new(2, &freed_q);
  uvp_promise_t *p, *q, *d, *d2;
  rec_t fin = {0};
  both_t next = {0};
  void *payload = NULL;

  count_unhandled(f);
  if (orig_ok)
    assert_int_equal(uvp_promise_resolved(f->ctx, orig, boxed_free, &p), 0);
  else
    assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, orig, boxed_free, &p),
                     0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  d = finally_adopting(p, q, &fin);
  assert_int_equal(uvp_promise_on(d, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  /* onFinally ran; d waits for q */
  assert_int_equal(fin.calls, 1);
  assert_int_equal(fin.status, orig_ok ? 0 : UV_EIO);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);
  assert_int_equal(next.ok.calls + next.err.calls, 0);

  if (q_ok)
    assert_int_equal(uvp_promise_resolve(q, qv, boxed_free), 0);
  else
    assert_int_equal(uvp_promise_reject(q, UV_EPIPE, qv, boxed_free), 0);
  run_loop(f);

  if (q_ok && orig_ok) {
    assert_int_equal(next.ok.calls, 1);
    assert_int_equal(next.err.calls, 0);
    assert_ptr_equal(next.ok.value, orig);
    assert_ptr_equal(uvp_promise_value(d), orig);
  } else if (q_ok) {
    assert_int_equal(next.err.calls, 1);
    assert_int_equal(next.ok.calls, 0);
    assert_int_equal(next.err.status, UV_EIO);
    assert_ptr_equal(next.err.value, orig);
    assert_int_equal(uvp_promise_reason(d, &payload), UV_EIO);
    assert_ptr_equal(payload, orig);
  } else {
    assert_int_equal(next.err.calls, 1);
    assert_int_equal(next.ok.calls, 0);
    assert_int_equal(next.err.status, UV_EPIPE);
    assert_ptr_equal(next.err.value, qv);
  }
  release_all(4, p, q, d, d2);
  assert_int_equal(freed_orig, 1);
  assert_int_equal(freed_q, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

static void c_fulfilled_waits_for_adopted_pending_fulfilled(void **state) {
  finally_adopt_pending_case(*state, 1, 1);
}
static void c_fulfilled_waits_for_adopted_pending_rejected(void **state) {
  finally_adopt_pending_case(*state, 1, 0);
}
static void c_rejected_waits_for_adopted_pending_fulfilled(void **state) {
  finally_adopt_pending_case(*state, 0, 1);
}
static void c_rejected_waits_for_adopted_pending_rejected(void **state) {
  finally_adopt_pending_case(*state, 0, 0);
}

/* onFinally returning a rejected promise overrides a rejection too (the
 * settled variant of resolved-observable-then-calls.js, on a rejection). */
static void c_rejected_override_with_rejected_promise(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *q, *d, *d2;
  rec_t fin = {0};
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(1), NULL, &p),
                   0);
  assert_int_equal(
      uvp_promise_rejected(f->ctx, UV_EPIPE, SENTINEL(2), NULL, &q), 0);
  d = finally_adopting(p, q, &fin);
  assert_int_equal(uvp_promise_on(d, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EPIPE);
  assert_ptr_equal(next.err.value, SENTINEL(2));
  release_all(4, p, q, d, d2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* uvp_ret_pass from onFinally: the derived promise settles like p. */
static void c_handler_pass(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *q, *d, *e;
  rec_t f1 = {0}, f2 = {0};
  void *payload = NULL;

  count_unhandled(f);
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(1), NULL, &p), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(2), NULL, &q),
                   0);
  f1.ret = uvp_ret_pass();
  f2.ret = uvp_ret_pass();
  assert_int_equal(uvp_promise_finally(p, rec_cb, &f1, &d), 0);
  assert_int_equal(uvp_promise_finally(q, rec_cb, &f2, &e), 0);
  run_loop(f);

  assert_int_equal(f1.calls, 1);
  assert_int_equal(f2.calls, 1);
  assert_ptr_equal(uvp_promise_value(d), SENTINEL(1));
  assert_int_equal(uvp_promise_reason(e, &payload), UV_EIO);
  assert_ptr_equal(payload, SENTINEL(2));
  release_all(3, p, q, d);
  /* e is rejected and nobody handled it */
  assert_int_equal(g_unhandled, 0);
  uvp_promise_release(e);
  assert_int_equal(g_unhandled, 1);
  assert_no_live(f);
}

/* finally's reaction takes its place in the FIFO among then/catch
 * reactions of the same promise; nothing runs inside finally(). */
static void c_fifo_with_then(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d1, *d2, *d3, *d4, *d5;
  rec_t r1 = {.trace = &t, .mark = 1}, r2 = {.trace = &t, .mark = 2},
        r3 = {.trace = &t, .mark = 3}, r4 = {.trace = &t, .mark = 4},
        never = {.trace = &t, .mark = -1};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r1, &d1), 0);
  assert_int_equal(uvp_promise_finally(p, rec_cb, &r2, &d2), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &never, &d3), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r3, &d4), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &r4, &d5), 0);
  assert_int_equal(uvp_promise_resolve(p, SENTINEL(1), NULL), 0);
  assert_int_equal(t.n, 0);
  run_loop(f);

  expect_trace(&t, 4, 1, 2, 3, 4);
  assert_ptr_equal(r4.value, SENTINEL(1));
  release_all(6, p, d1, d2, d3, d4, d5);
  assert_no_live(f);
}

/* onFinally returning the derived promise itself: uvp rejects it with
 * UVP_ECYCLE (header, uvp_ret_adopt).  In JavaScript the derived promise
 * would wait on itself through promise.then(valueThunk) and never settle;
 * uvp turns the deadlock into a rejection. */
static void c_return_self(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d, *d2;
  self_t s = {0};
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(1), NULL, &p), 0);
  assert_int_equal(uvp_promise_finally(p, return_self_cb, &s, &d), 0);
  s.self = d;
  assert_int_equal(uvp_promise_on(d, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(s.calls, 1);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UVP_ECYCLE);
  release_all(3, p, d, d2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* finally without a derived promise: the value onFinally returns is still
 * destroyed, once. */
static void c_no_derived_value_destroyed(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  uvp_promise_t *p;
  rec_t fin = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  fin.ret = uvp_ret_value(boxed_new(1, &freed), boxed_free);
  assert_int_equal(uvp_promise_finally(p, rec_cb, &fin, NULL), 0);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(freed, 1);
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* C-specific: the context is closed while d waits for the pending promise
 * onFinally returned.  Teardown rejects what is pending with UVP_ECLOSED,
 * and once the program lets go of its promises the context is freed
 * (fixture_teardown checks it). */
static void c_teardown_while_adopted_pending(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *q, *d;
  rec_t fin = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  d = finally_adopting(p, q, &fin);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);

  close_ctx(f);
  assert_int_equal(uvp_promise_reason(q, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_promise_reason(d, NULL), UVP_ECLOSED);
  release_all(3, p, q, d);
}

/* C-specific: the pending promise onFinally returned is let go of unsettled,
 * so d stays pending for good, as an unreachable promise does in
 * JavaScript; the original promise and its value are still freed once the
 * program lets go of them. */
static void c_adopted_pending_let_go(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  uvp_promise_t *p, *q, *d;
  rec_t fin = {0};

  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &p), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  d = finally_adopting(p, q, &fin);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  uvp_promise_release(q);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);
  release_all(2, p, d);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* C-specific: d, waiting for the pending promise q that onFinally
 * returned, is cancelled while q has another consumer: q stays pending (it
 * is not d's alone), and d no longer counts as its consumer, so cancelling
 * that other consumer later cancels q too (uvp_promise_cancel's rule). */
static void c_cancel_while_adopted_pending(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *q, *d, *x;
  rec_t fin = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  d = finally_adopting(p, q, &fin);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(uvp_promise_then(q, NULL, NULL, &x), 0);

  assert_int_equal(uvp_promise_cancel(d), 0);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_state(q), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(x), 0);
  assert_int_equal(uvp_promise_reason(q, NULL), UV_ECANCELED);
  run_loop(f);
  release_all(4, p, q, d, x);
  assert_no_live(f);
}

/* C-specific: onFinally returns a promise that follows d itself.  As for
 * uvp_ret_adopt from any handler, d rejects with UVP_ECYCLE (and q, which
 * follows it, with d), instead of both waiting for each other for good. */
static void c_adopt_cycle(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *q, *d;
  rec_t fin = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  d = finally_adopting(p, q, &fin);
  assert_int_equal(uvp_promise_resolve_with(q, d), 0);
  assert_int_equal(uvp_promise_mark_handled(q), 0);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(uvp_promise_reason(d, NULL), UVP_ECYCLE);
  assert_int_equal(uvp_promise_reason(q, NULL), UVP_ECYCLE);
  release_all(3, p, q, d);
  assert_no_live(f);
}

/* C-specific: UVP_ON_FINALLY registers finally's handler through
 * uvp_promise_on; taken (uvp_promise_finally_take), the original promise
 * is held until the handler has run, then shared by d while d waits for
 * the pending promise the handler returned, and goes with d. */
static void c_finally_mask_and_take(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  uvp_promise_t *p, *q, *d;
  rec_t fin = {0}, fin2 = {0};
  void *payload = NULL;

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(1), NULL, &p),
                   0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_FINALLY, rec_cb, &fin, &d), 0);
  run_loop(f);
  assert_int_equal(fin.calls, 1);
  assert_int_equal(fin.status, UV_EIO);
  assert_int_equal(uvp_promise_reason(d, &payload), UV_EIO);
  assert_ptr_equal(payload, SENTINEL(1));
  assert_int_equal(uvp_promise_mark_handled(d), 0);
  release_all(2, p, d);

  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &freed), boxed_free, &p), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  fin2.ret = uvp_ret_adopt(uvp_promise_retain(q));
  assert_int_equal(uvp_promise_finally_take(p, rec_cb, &fin2, &d), 0);
  run_loop(f);
  assert_int_equal(fin2.calls, 1);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING); /* waits for q */
  assert_int_equal(freed, 0);
  assert_int_equal(uvp_promise_resolve(q, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(((boxed_t *)uvp_promise_value(d))->v, 1);
  release_all(2, q, d);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(resolution_value_no_override),
      FIXTURE_TEST(rejection_reason_no_fulfill),
      FIXTURE_TEST(rejection_reason_override_with_throw),
      FIXTURE_TEST(rejected_observable_then_calls),
      FIXTURE_TEST(resolved_observable_then_calls),
      FIXTURE_TEST(c_resolution_value_override_with_throw),
      FIXTURE_TEST(c_fulfilled_waits_for_adopted_pending_fulfilled),
      FIXTURE_TEST(c_fulfilled_waits_for_adopted_pending_rejected),
      FIXTURE_TEST(c_rejected_waits_for_adopted_pending_fulfilled),
      FIXTURE_TEST(c_rejected_waits_for_adopted_pending_rejected),
      FIXTURE_TEST(c_rejected_override_with_rejected_promise),
      FIXTURE_TEST(c_handler_pass),
      FIXTURE_TEST(c_fifo_with_then),
      FIXTURE_TEST(c_return_self),
      FIXTURE_TEST(c_no_derived_value_destroyed),
      FIXTURE_TEST(c_teardown_while_adopted_pending),
      FIXTURE_TEST(c_adopted_pending_let_go),
      FIXTURE_TEST(c_finally_mask_and_take),
      FIXTURE_TEST(c_cancel_while_adopted_pending),
      FIXTURE_TEST(c_adopt_cycle),
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
