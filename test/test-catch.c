/* test262 Promise.prototype.catch, ported to uvp.
 *
 * Source: tc39/test262, every file in test/built-ins/Promise/prototype/catch/.
 * Each test is named after the file it ports (dashes and dots as
 * underscores).  catch(f) is specified as then(undefined, f) (25.4.5.1), so
 * the behavioural then/ cases whose handler is onRejected are ported here a
 * second time through uvp_promise_catch: those tests are named
 * "<then file>__via_catch".  Tests whose name starts with "c_" are C-specific
 * additions.
 *
 * Mapping (see the top of include/uvp.h and test262.h):
 *   p.catch(r)                  uvp_promise_catch(p, r, ...)
 *   p.then(undefined, r)        uvp_promise_on(p, UVP_ON_REJECTED, r, ...)
 *   p.then(f, r)                uvp_promise_on(p, UVP_ON_BOTH, both_cb, ...)
 *   return v / throw e          uvp_ret_value / uvp_ret_reject
 *   return promise              uvp_ret_adopt
 *   TypeError (self-resolution) UVP_ECYCLE
 *
 * Skipped groups (no C analogue):
 *   length.js, name.js, prop-desc.js, not-a-constructor.js,
 *   S25.4.5.1_A1.1_T1 (catch is a function), S25.4.5.1_A2.1_T1 (catch is a
 *   method of promises)
 *     - function object properties; C functions have none.
 *   this-value-non-object.js, this-value-obj-coercible.js,
 *   this-value-then-not-callable.js, this-value-then-poisoned.js,
 *   this-value-then-throws.js
 *     - catch called on a non-promise receiver / one whose `then` property is
 *       missing, poisoned or throwing: the C argument is typed and uvp
 *       promises have no overridable `then`.
 *   invokes-then.js's observable part (catch looks `then` up and calls it
 *     with exactly (undefined, onRejected) and returns its result) has no
 *     analogue; its meaning — catch(f) is then(undefined, f) — is ported as
 *     invokes_then below by comparing uvp_promise_catch with
 *     uvp_promise_on(UVP_ON_REJECTED) and then(f, r) on both outcomes. */
#include "test262.h"

/* ------------------------------------------------------------------------ */
/* catch/                                                                    */
/* ------------------------------------------------------------------------ */

/* S25.4.5.1_A3.1_T1.js: catch on a fulfilled promise does not call its
 * handler; the value passes through (shared, destroyed once). */
static void S25_4_5_1_A3_1_T1(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d1, *d2;
  rec_t never = {0};
  both_t next = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, obj, boxed_free, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &never, &d1), 0);
  assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &next, &d2), 0);
  run_loop(f);

  assert_int_equal(never.calls, 0);
  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, obj);
  assert_ptr_equal(uvp_promise_value(d1), obj);
  uvp_promise_release(p);
  assert_int_equal(freed, 0); /* d1 still shares it */
  release_all(2, d1, d2);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* S25.4.5.1_A3.1_T2.js: Promise.reject(obj).then(f).catch(r): f is not
 * called, r gets the reason through the derived promise. */
static void S25_4_5_1_A3_1_T2(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d1, *d2;
  rec_t never = {0}, c = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, obj, boxed_free, &p),
                   0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &never, &d1), 0);
  assert_int_equal(uvp_promise_catch(d1, rec_cb, &c, &d2), 0);
  run_loop(f);

  assert_int_equal(never.calls, 0);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, UV_EIO);
  assert_ptr_equal(c.value, obj);
  assert_ptr_equal(c.from, d1);
  /* the catch handler returned normally */
  assert_int_equal(uvp_promise_state(d2), UVP_FULFILLED);
  release_all(3, p, d1, d2);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* invokes-then.js (its meaning): catch(f) behaves as then(undefined, f) —
 * same calls, same order among other reactions, same derived outcome — on
 * a rejected and on a fulfilled promise. */
static void invokes_then(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *q, *d1, *d2, *d3, *e1, *e2;
  rec_t c1 = {.trace = &t, .mark = 1}, c2 = {.trace = &t, .mark = 2};
  rec_t c4 = {.trace = &t, .mark = -4}, c5 = {.trace = &t, .mark = -5};
  both_t h3 = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, SENTINEL(1), NULL, &p),
                   0);
  c1.ret = uvp_ret_value(INT_VALUE(11), NULL);
  c2.ret = uvp_ret_value(INT_VALUE(12), NULL);
  h3.err = (rec_t){.trace = &t, .mark = 3};
  h3.err.ret = uvp_ret_value(INT_VALUE(13), NULL);
  h3.ok = (rec_t){.trace = &t, .mark = -3};
  assert_int_equal(uvp_promise_catch(p, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_REJECTED, rec_cb, &c2, &d2), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h3, &d3), 0);

  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(2), NULL, &q), 0);
  assert_int_equal(uvp_promise_catch(q, rec_cb, &c4, &e1), 0);
  assert_int_equal(uvp_promise_on(q, UVP_ON_REJECTED, rec_cb, &c5, &e2), 0);
  assert_int_equal(t.n, 0);
  run_loop(f);

  expect_trace(&t, 3, 1, 2, 3);
  assert_int_equal(c1.status, UV_EIO);
  assert_int_equal(c2.status, UV_EIO);
  assert_int_equal(h3.err.status, UV_EIO);
  assert_ptr_equal(c1.value, SENTINEL(1));
  assert_ptr_equal(c2.value, SENTINEL(1));
  assert_ptr_equal(h3.err.value, SENTINEL(1));
  assert_ptr_equal(uvp_promise_value(d1), INT_VALUE(11));
  assert_ptr_equal(uvp_promise_value(d2), INT_VALUE(12));
  assert_ptr_equal(uvp_promise_value(d3), INT_VALUE(13));
  /* on fulfilment both pass the value through */
  assert_int_equal(uvp_promise_state(e1), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(e2), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(e1), SENTINEL(2));
  assert_ptr_equal(uvp_promise_value(e2), SENTINEL(2));
  release_all(7, p, q, d1, d2, d3, e1, e2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* then/ onRejected cases, through catch                                     */
/* ------------------------------------------------------------------------ */

/* then/rxn-handler-rejected-next.js via catch: catch handlers run once
 * each, in registration order. */
static void rxn_handler_rejected_next__via_catch(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d[4];
  rec_t c[4];

  count_unhandled(f);
  memset(c, 0, sizeof(c));
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  for (int i = 0; i < 4; i++) {
    c[i].trace = &t;
    c[i].mark = i + 1;
    c[i].seq = 1;
    assert_int_equal(uvp_promise_catch(p, rec_cb, &c[i], &d[i]), 0);
  }
  run_loop(f);
  check_sequence(&t, 4);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(c[i].calls, 1);
    assert_int_equal(uvp_promise_state(d[i]), UVP_FULFILLED);
  }
  release_all(5, p, d[0], d[1], d[2], d[3]);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* then/rxn-handler-rejected-return-normal.js via catch: a value the catch
 * handler returns fulfils the derived promise (recovery). */
static void rxn_handler_rejected_return_normal__via_catch(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_reason = 0;
  boxed_t *value = boxed_new(3, &freed);
  uvp_promise_t *p1, *p2, *p3;
  rec_t c = {0};
  both_t next = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(
      uvp_promise_reject(p1, UV_EIO, boxed_new(0, &freed_reason), boxed_free),
      0);
  c.ret = uvp_ret_value(value, boxed_free);
  assert_int_equal(uvp_promise_catch(p1, rec_cb, &c, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  run_loop(f);

  assert_int_equal(c.calls, 1);
  assert_int_equal(next.ok.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_ptr_equal(next.ok.value, value);
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_int_equal(freed_reason, 1);
  assert_no_live(f);
}

/* then/rxn-handler-rejected-return-abrupt.js via catch: a catch handler
 * that throws rejects the derived promise with the new reason. */
static void rxn_handler_rejected_return_abrupt__via_catch(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *thrown = boxed_new(4, &freed);
  uvp_promise_t *p1, *p2, *p3;
  rec_t c = {0};
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  c.ret = uvp_ret_reject(UV_EPIPE, thrown, boxed_free);
  assert_int_equal(uvp_promise_catch(p1, rec_cb, &c, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  run_loop(f);

  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, UV_EIO);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UV_EPIPE);
  assert_ptr_equal(next.err.value, thrown);
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* then/resolve-settled-rejected-thenable.js and
 * then/resolve-pending-rejected-thenable.js via catch: a promise the catch
 * handler returns is adopted. */
static void adopt_case(fixture_t *f, int pending) {
  int freed = 0;
  boxed_t *value = boxed_new(9, &freed);
  uvp_promise_t *thenable, *p1, *p2, *p3;
  rec_t c = {0};
  both_t next = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &thenable), 0);
  assert_int_equal(uvp_promise_resolve(thenable, value, boxed_free), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  if (!pending)
    assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  c.ret = uvp_ret_adopt(uvp_promise_retain(thenable));
  assert_int_equal(uvp_promise_catch(p1, rec_cb, &c, &p2), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  if (pending) {
    run_loop(f);
    assert_int_equal(c.calls, 0);
    assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  }
  run_loop(f);

  assert_int_equal(c.calls, 1);
  assert_int_equal(next.err.calls, 0);
  assert_int_equal(next.ok.calls, 1);
  assert_ptr_equal(next.ok.value, value);
  uvp_promise_release(thenable);
  assert_int_equal(freed, 0); /* p2 shares it */
  release_all(3, p1, p2, p3);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

static void resolve_settled_rejected_thenable__via_catch(void **state) {
  adopt_case(*state, 0);
}
static void resolve_pending_rejected_thenable__via_catch(void **state) {
  adopt_case(*state, 1);
}

/* then/resolve-pending-rejected-self.js and resolve-settled-rejected-self.js
 * via catch: returning the derived promise itself rejects it (TypeError ->
 * UVP_ECYCLE). */
static void self_case(fixture_t *f, int pending) {
  uvp_promise_t *p1, *p2, *p3;
  self_t s = {0};
  both_t next = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  if (!pending)
    assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  assert_int_equal(uvp_promise_catch(p1, return_self_cb, &s, &p2), 0);
  s.self = p2;
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &next, &p3), 0);
  if (pending) {
    run_loop(f);
    assert_int_equal(s.calls, 0);
    assert_int_equal(uvp_promise_reject(p1, UV_EIO, NULL, NULL), 0);
  }
  run_loop(f);

  assert_int_equal(s.calls, 1);
  assert_int_equal(next.ok.calls, 0);
  assert_int_equal(next.err.calls, 1);
  assert_int_equal(next.err.status, UVP_ECYCLE);
  release_all(3, p1, p2, p3);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

static void resolve_settled_rejected_self__via_catch(void **state) {
  self_case(*state, 0);
}
static void resolve_pending_rejected_self__via_catch(void **state) {
  self_case(*state, 1);
}

/* then/S25.4.5.3_A5.3_T1.js via catch: catch on a rejected promise queues
 * its handler at once; one registered from a later job runs after. */
typedef struct a53_s {
  trace_t *t;
  uvp_promise_t *p, *d;
  rec_t c;
  int calls;
} a53_t;

static uvp_ret_t a53_outer_cb(void *arg, const uvp_outcome_t *in) {
  a53_t *s = arg;
  (void)in;
  s->calls++;
  assert_int_equal(uvp_promise_catch(s->p, rec_cb, &s->c, &s->d), 0);
  trace_push(s->t, 4);
  check_sequence(s->t, 4); /* "Should be second" */
  return uvp_ret_value(NULL, NULL);
}

static void S25_4_5_3_A5_3_T1__via_catch(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *d, *r, *rd;
  rec_t c3 = {.trace = &t, .mark = 3, .seq = 1}; /* "Should be first" */
  a53_t s = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &c3, &d), 0);
  s.t = &t;
  s.p = p;
  s.c = (rec_t){.trace = &t, .mark = 5, .seq = 1}; /* "Should be third" */
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &r), 0);
  assert_int_equal(uvp_promise_then(r, a53_outer_cb, &s, &rd), 0);
  trace_push(&t, 2);
  check_sequence(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_int_equal(c3.calls, 1);
  assert_int_equal(s.c.calls, 1);
  assert_int_equal(s.c.status, UV_EIO);
  release_all(5, p, d, r, rd, s.d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* C-specific: a catch handles the rejection (no unhandled report), also
 * one with no derived promise (p.catch(() => {}), the header's way to keep
 * an expected rejection quiet); the same rejection without one is
 * reported once its last reference goes, and so is one passed on by a NULL
 * handler with no derived promise (p.catch(), whose result rejects). */
static void c_catch_marks_handled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d, *e, *n, *q;
  rec_t c = {0}, quiet = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &c, &d), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &e), 0);
  assert_int_equal(uvp_promise_catch(e, rec_cb, &quiet, NULL), 0);
  run_loop(f);
  assert_int_equal(c.calls, 1);
  assert_int_equal(quiet.calls, 1);
  release_all(3, p, d, e);
  assert_int_equal(g_unhandled, 0);

  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &n), 0);
  assert_int_equal(uvp_promise_catch(n, NULL, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(g_unhandled, 1);
  uvp_promise_release(n);
  assert_int_equal(g_unhandled, 1);

  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &q), 0);
  run_loop(f);
  assert_int_equal(g_unhandled, 1);
  uvp_promise_release(q);
  assert_int_equal(g_unhandled, 2);
  assert_no_live(f);
}

/* C-specific: uvp_promise_mark_handled keeps a rejection quiet, whether
 * it came before or after the call, without a handler; handlers still run;
 * bad calls are refused. */
static void c_mark_handled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *before, *after, *loud, *d;
  rec_t c = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_mark_handled(NULL), UV_EINVAL);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &before),
                   0);
  assert_int_equal(uvp_promise_mark_handled(before), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &after), 0);
  assert_int_equal(uvp_promise_mark_handled(after), 0);
  assert_int_equal(uvp_promise_catch(after, rec_cb, &c, &d), 0);
  assert_int_equal(uvp_promise_reject(after, UV_EIO, NULL, NULL), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &loud), 0);
  run_loop(f);
  assert_int_equal(c.calls, 1); /* the handler ran as usual */
  release_all(3, before, after, d);
  assert_int_equal(g_unhandled, 0);
  uvp_promise_release(loud); /* the control: not marked, reported */
  assert_int_equal(g_unhandled, 1);

  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &loud), 0);
  close_ctx(f);
  assert_int_equal(uvp_promise_mark_handled(loud), UVP_ECLOSED);
  uvp_promise_release(loud);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(S25_4_5_1_A3_1_T1),
      FIXTURE_TEST(S25_4_5_1_A3_1_T2),
      FIXTURE_TEST(invokes_then),
      FIXTURE_TEST(rxn_handler_rejected_next__via_catch),
      FIXTURE_TEST(rxn_handler_rejected_return_normal__via_catch),
      FIXTURE_TEST(rxn_handler_rejected_return_abrupt__via_catch),
      FIXTURE_TEST(resolve_settled_rejected_thenable__via_catch),
      FIXTURE_TEST(resolve_pending_rejected_thenable__via_catch),
      FIXTURE_TEST(resolve_settled_rejected_self__via_catch),
      FIXTURE_TEST(resolve_pending_rejected_self__via_catch),
      FIXTURE_TEST(S25_4_5_3_A5_3_T1__via_catch),
      FIXTURE_TEST(c_catch_marks_handled),
      FIXTURE_TEST(c_mark_handled),
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
