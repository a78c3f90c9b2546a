/* test262 Promise.allSettled, ported to uvp (uvp_promise_all_settled).
 *
 * Source: tc39/test262, every file of test/built-ins/Promise/allSettled/
 * that the reference index holds (96 files).  Each test is named after the
 * file it ports (dashes and dots as underscores); tests whose name starts
 * with "c_" are C-specific additions from the issue "Combinators" and
 * uvp_promise_all_settled's comment in include/uvp.h; those every
 * combinator shares are written once, in combinator-cases.h.
 *
 * Mapping (see the top of include/uvp.h and test262.h):
 *   Promise.allSettled([...])   uvp_promise_all_settled(ctx, inputs, n, &out)
 *   the array of {status, value | reason}
 *                               uvp_settled_list_t: items[i].status 0 and
 *                               .value, or status < 0 (the code) and .value
 *                               the payload; .promise the input; plus the
 *                               counts `fulfilled` and `rejected`
 *   checkSettledPromises        expect_item() on each record, and the counts
 *   a thenable calling onFulfilled / onRejected at once / later
 *                               an input already settled / a pending input
 *                               settled later (uvp adopts no thenables)
 *   calling an element function a second time, or reject after resolve
 *                               settling the same input again: UVP_ESETTLED,
 *                               the combinator never hears of it
 *   Promise.allSettled.call(Constructor, ...) with a recording resolve
 *                               a handler on the result counting its calls
 *
 * Skipped (no C analogue):
 *   length.js, name.js, prop-desc.js, is-function.js, not-a-constructor.js,
 *   resolve-element-function-{extensible,length,name,nonconstructor,
 *   prototype}.js, reject-element-function-{extensible,length,name,
 *   nonconstructor,prototype}.js
 *     - function object properties; C functions have none.
 *   ctx-ctor.js, ctx-ctor-throws.js, ctx-non-ctor.js, ctx-non-object.js,
 *   species-get-error.js, capability-executor-called-twice.js,
 *   capability-executor-not-callable.js, capability-resolve-throws-no-close.js,
 *   capability-resolve-throws-reject.js, invoke-resolve.js,
 *   invoke-resolve-return.js, invoke-resolve-get-error-close.js,
 *   invoke-resolve-get-error-reject.js,
 * invoke-resolve-get-once-multiple-calls.js,
 *   invoke-resolve-get-once-no-calls.js, invoke-resolve-error-close.js,
 *   invoke-resolve-error-reject.js, resolve-non-callable.js,
 *   resolve-not-callable-close.js
 *     - `this` / NewPromiseCapability / the constructor's `resolve` lookup:
 *       uvp has one promise type, creates the result itself and takes
 *       promises, not values to coerce.
 *   iter-arg-is-{false,null,number,symbol,true,undefined}-reject.js,
 *   iter-arg-is-poisoned.js, iter-arg-is-string-resolve.js,
 *   iter-assigned-*-reject.js, iter-returns-*-reject.js,
 *   iter-next-err-reject.js, iter-next-val-err-no-close.js,
 *   iter-next-val-err-reject.js, iter-step-err-no-close.js,
 *   iter-step-err-reject.js, resolve-throws-iterator-return-is-not-callable.js,
 *   does-not-invoke-array-setters.js
 *     - the iterator protocol and JS arrays: inputs are a typed C array.  A
 *       NULL array or input is API validation (c_invalid_arguments); the
 *       empty input is resolves_empty_array.
 *   invoke-then-error-close.js, invoke-then-error-reject.js,
 *   invoke-then-get-error-close.js, invoke-then-get-error-reject.js,
 *   resolve-poisoned-then.js, resolve-thenable.js
 *     - overridable or throwing `then` methods (resolve-thenable.js patches
 *       Array.prototype.then): uvp promises have no overridable methods.
 *   same-reject-function.js
 *     - expects every input to get the capability's own reject function,
 *       which contradicts new-reject-function.js and the specification
 *       (allSettled gives each input its own reject element); the specified
 *       behaviour is ported as new_reject_function.
 *   invoke-then.js checks `then` is invoked once per input, in input order,
 *   with two functions; the port checks each input gets exactly one
 *   reaction, attached in input order (observable as handler order).
 *
 * Header behaviour pinned here: the empty allSettled is fulfilled when the
 * call returns (as JavaScript's, which resolved-immed.js observes), though
 * no handler runs inside the call. */
#include "combinator-cases.h"

/* ------------------------------------------------------------------------ */
/* Helpers of this file                                                     */
/* ------------------------------------------------------------------------ */

static uvp_settled_list_t *list_of(uvp_promise_t *p) {
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_settled_list_t *l = uvp_promise_value(p);
  assert_non_null(l);
  return l;
}

/* ------------------------------------------------------------------------ */
/* The empty input                                                           */
/* ------------------------------------------------------------------------ */

/* resolves-empty-array.js, resolves-to-array.js, returns-promise.js:
 * allSettled([]) returns a promise that fulfils with a new, empty list. */
static void resolves_empty_array(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *arg[1] = {NULL};
  uvp_promise_t *p = NULL, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_all_settled(f->ctx, arg, 0, &p), 0);
  assert_non_null(p);
  assert_ptr_equal(uvp_promise_ctx(p), f->ctx);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  uvp_settled_list_t *l = h.ok.value;
  assert_ptr_equal(l, uvp_promise_value(p));
  expect_counts(l, 0, 0, 0);
  assert_ptr_not_equal((void *)l->items, (void *)arg);
  release_all(2, p, d);
  assert_no_live(f);
}

/* resolved-immed.js: allSettled([]) is resolved immediately: 2, 3, 4. */
static void resolved_immed(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p, *r, *d1, *d2, *d3;
  rec_t r2 = {.trace = &t, .mark = 2, .seq = 1};
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};

  assert_int_equal(uvp_promise_all_settled(f->ctx, NULL, 0, &p), 0);
  /* fulfilled when the call returns, as in JavaScript: that is what puts 2
   * before 3 */
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r2, &d1), 0);
  r = fulfilled(f, NULL);
  assert_int_equal(uvp_promise_then(r, rec_cb, &r3, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &r4, &d3), 0);
  trace_push(&t, 1);
  run_loop(f);

  check_sequence(&t, 4);
  release_all(5, p, r, d1, d2, d3);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Records                                                                   */
/* ------------------------------------------------------------------------ */

/* resolve-non-thenable.js: plain values, all fulfilled, in order. */
static void resolve_non_thenable(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[3];
  uvp_promise_t *p;

  for (int i = 0; i < 3; i++)
    ins[i] = fulfilled(f, SENTINEL(i));
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 3, &p), 0);
  run_loop(f);

  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 3, 3, 0);
  for (int i = 0; i < 3; i++)
    expect_item(l, i, 0, SENTINEL(i), ins[i]);
  release_array(ins, 3);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* resolved-all-fulfilled.js: every input fulfilled (1, 'test262', obj). */
static void resolved_all_fulfilled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[3] = {pending(f), pending(f), pending(f)};
  uvp_promise_t *p;

  assert_int_equal(uvp_promise_resolve(ins[0], INT_VALUE(1), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[2], SENTINEL(2), NULL), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 3, &p), 0);
  run_loop(f);

  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 3, 3, 0);
  expect_item(l, 0, 0, INT_VALUE(1), ins[0]);
  expect_item(l, 1, 0, SENTINEL(1), ins[1]);
  expect_item(l, 2, 0, SENTINEL(2), ins[2]);
  release_array(ins, 3);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* resolved-all-rejected.js: every input rejected: allSettled still
 * fulfils, with three rejection records in order. */
static void resolved_all_rejected(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[3] = {pending(f), pending(f), pending(f)};
  uvp_promise_t *p;

  count_unhandled(f);
  assert_int_equal(uvp_promise_reject(ins[0], UV_EIO, INT_VALUE(1), NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EPIPE, SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[2], UV_ENOENT, SENTINEL(2), NULL), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 3, &p), 0);
  run_loop(f);

  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 3, 0, 3);
  expect_item(l, 0, UV_EIO, INT_VALUE(1), ins[0]);
  expect_item(l, 1, UV_EPIPE, SENTINEL(1), ins[1]);
  expect_item(l, 2, UV_ENOENT, SENTINEL(2), ins[2]);
  release_array(ins, 3);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolved-all-mixed.js: r1, f1, f2, r2, r3, f3 -> records in that order. */
static void resolved_all_mixed(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[6];
  uvp_promise_t *p;
  static const int fails[6] = {1, 0, 0, 1, 1, 0};

  count_unhandled(f);
  for (int i = 0; i < 6; i++)
    ins[i] =
        fails[i] ? rejected(f, UV_EIO, SENTINEL(i)) : fulfilled(f, SENTINEL(i));
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 6, &p), 0);
  run_loop(f);

  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 6, 3, 3);
  for (int i = 0; i < 6; i++)
    expect_item(l, i, fails[i] ? UV_EIO : 0, SENTINEL(i), ins[i]);
  release_array(ins, 6);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* reject-immed.js: an input rejected before the call. */
static void reject_immed(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *in = rejected(f, UV_ECONNREFUSED, SENTINEL(1));
  uvp_promise_t *p;

  count_unhandled(f);
  assert_int_equal(uvp_promise_all_settled(f->ctx, &in, 1, &p), 0);
  run_loop(f);
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 1, 0, 1);
  expect_item(l, 0, UV_ECONNREFUSED, SENTINEL(1), in);
  release_all(2, in, p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* reject-deferred.js: an input rejected later, from a handler of another
 * promise. */
static void reject_deferred(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *in = pending(f), *tick = fulfilled(f, NULL);
  uvp_promise_t *p, *d;

  count_unhandled(f);
  assert_int_equal(uvp_promise_then(tick, reject_target_cb, in, &d), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, &in, 1, &p), 0);
  run_loop(f);
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 1, 0, 1);
  expect_item(l, 0, UV_EIO, SENTINEL(1), in);
  release_all(4, in, tick, p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* reject-ignored-immed.js: fulfiller, and a late rejector that resolves
 * and then rejects (which fails): two fulfilled records. */
static void reject_ignored_immed(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {pending(f), pending(f)};
  uvp_promise_t *p;

  assert_int_equal(uvp_promise_resolve(ins[0], INT_VALUE(42), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EIO, NULL, NULL),
                   UVP_ESETTLED);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 2, &p), 0);
  run_loop(f);
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 2, 2, 0);
  expect_item(l, 0, 0, INT_VALUE(42), ins[0]);
  expect_item(l, 1, 0, SENTINEL(1), ins[1]);
  release_all(3, ins[0], ins[1], p);
  assert_no_live(f);
}

/* reject-ignored-deferred.js: the same, with both settled later from a
 * handler. */

static void reject_ignored_deferred(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {pending(f), pending(f)};
  uvp_promise_t *tick = fulfilled(f, NULL);
  uvp_promise_t *p, *d;

  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 2, &p), 0);
  assert_int_equal(uvp_promise_then(tick, settle_both_cb, ins, &d), 0);
  run_loop(f);
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 2, 2, 0);
  expect_item(l, 0, 0, INT_VALUE(42), ins[0]);
  expect_item(l, 1, 0, SENTINEL(1), ins[1]);
  release_all(5, ins[0], ins[1], tick, p, d);
  assert_no_live(f);
}

/* new-resolve-function.js, new-reject-function.js: every input has its own
 * resolve and reject elements: outcomes land in their own records whatever
 * the completion order. */
static void new_reject_function(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[4] = {pending(f), pending(f), pending(f), pending(f)};
  uvp_promise_t *p;

  count_unhandled(f);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 4, &p), 0);
  assert_int_equal(uvp_promise_reject(ins[3], UV_EPIPE, SENTINEL(3), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[2], SENTINEL(2), NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EIO, SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[0], SENTINEL(0), NULL), 0);
  run_loop(f);

  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 4, 2, 2);
  expect_item(l, 0, 0, SENTINEL(0), ins[0]);
  expect_item(l, 1, UV_EIO, SENTINEL(1), ins[1]);
  expect_item(l, 2, 0, SENTINEL(2), ins[2]);
  expect_item(l, 3, UV_EPIPE, SENTINEL(3), ins[3]);
  release_array(ins, 4);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* invoke-then.js: each input gets exactly one reaction, attached in input
 * order: with handlers registered on every input before and after the
 * call, the combinator's reactions run between them, and the result's
 * handler after the last input's. */
static void invoke_then(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *ins[3] = {pending(f), pending(f), pending(f)};
  uvp_promise_t *p, *d;
  rec_t before[3], after[3], fin = {.trace = &t, .mark = 100};

  for (int i = 0; i < 3; i++) {
    before[i] = (rec_t){.trace = &t, .mark = 10 + i};
    assert_int_equal(uvp_promise_then(ins[i], rec_cb, &before[i], NULL), 0);
  }
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 3, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &fin, &d), 0);
  for (int i = 0; i < 3; i++) {
    after[i] = (rec_t){.trace = &t, .mark = 20 + i};
    assert_int_equal(uvp_promise_then(ins[i], rec_cb, &after[i], NULL), 0);
  }
  for (int i = 2; i >= 0; i--)
    assert_int_equal(uvp_promise_resolve(ins[i], SENTINEL(i), NULL), 0);
  run_loop(f);

  /* the result settles in input 0's reaction, which runs last */
  expect_trace(&t, 7, 12, 22, 11, 21, 10, 20, 100);
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 3, 3, 0);
  release_all(5, ins[0], ins[1], ins[2], p, d);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Sequences                                                                 */
/* ------------------------------------------------------------------------ */

/* resolved-sequence.js: p1.then (3), p2.then (4), allSettled.then (5). */
static void resolved_sequence(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p1 = fulfilled(f, INT_VALUE(1));
  uvp_promise_t *p2 = fulfilled(f, INT_VALUE(2));
  uvp_promise_t *ins[2] = {p1, p2};
  uvp_promise_t *p, *d1, *d2, *d3;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  trace_push(&t, 1);
  assert_int_equal(uvp_promise_then(p1, rec_cb, &r3, &d1), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 2, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r5, &d2), 0);
  assert_int_equal(uvp_promise_then(p2, rec_cb, &r4, &d3), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  release_all(6, p1, p2, p, d1, d2, d3);
  assert_no_live(f);
}

/* resolved-sequence-with-rejections.js: the same with two rejections and
 * catch handlers. */
static void resolved_sequence_with_rejections(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p1 = rejected(f, UV_EIO, SENTINEL(1));
  uvp_promise_t *p2 = rejected(f, UV_EIO, SENTINEL(2));
  uvp_promise_t *ins[2] = {p1, p2};
  uvp_promise_t *p, *d1, *d2, *d3;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  count_unhandled(f);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_catch(p1, rec_cb, &r3, &d1), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 2, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r5, &d2), 0);
  assert_int_equal(uvp_promise_catch(p2, rec_cb, &r4, &d3), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  release_all(6, p1, p2, p, d1, d2, d3);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolved-sequence-mixed.js: p1 rejected, p2 fulfilled, p3 rejected;
 * p1.catch (3), allSettled.then (6), p2.then (4), p3.catch (5). */
static void resolved_sequence_mixed(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p1 = rejected(f, UV_EIO, NULL);
  uvp_promise_t *p2 = fulfilled(f, NULL);
  uvp_promise_t *p3 = rejected(f, UV_EIO, NULL);
  uvp_promise_t *ins[3] = {p1, p2, p3};
  uvp_promise_t *p, *d1, *d2, *d3, *d4;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};
  rec_t r6 = {.trace = &t, .mark = 6, .seq = 1};

  count_unhandled(f);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_catch(p1, rec_cb, &r3, &d1), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 3, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r6, &d2), 0);
  assert_int_equal(uvp_promise_then(p2, rec_cb, &r4, &d3), 0);
  trace_push(&t, 2);
  assert_int_equal(uvp_promise_catch(p3, rec_cb, &r5, &d4), 0);
  run_loop(f);

  check_sequence(&t, 6);
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 3, 1, 2);
  release_all(8, p1, p2, p3, p, d1, d2, d3, d4);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolved-sequence-extra-ticks.js: allSettled([p1]).then (4) registered
 * before p1.then (3).then (5). */
static void resolved_sequence_extra_ticks(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p1 = fulfilled(f, SENTINEL(0));
  uvp_promise_t *p, *d1, *d2, *d3;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  trace_push(&t, 1);
  assert_int_equal(uvp_promise_all_settled(f->ctx, &p1, 1, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r4, &d1), 0);
  assert_int_equal(uvp_promise_then(p1, rec_cb, &r3, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &r5, &d3), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  release_all(5, p1, p, d1, d2, d3);
  assert_no_live(f);
}

/* resolved-then-catch-finally.js: inputs made by then / catch / finally
 * chains; each record is what the chain settled with. */
static uvp_ret_t plus_one_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value(INT_VALUE(UVP_INT(in->value) + 1), NULL);
}

static uvp_ret_t times_two_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value(INT_VALUE(UVP_INT(in->value) * 2), NULL);
}

static void resolved_then_catch_finally(void **state) {
  fixture_t *f = *state;
  /* 'nope', 'foo', 'yes', 'here', 'here too', 'finally',
   * 'finally after rejected' */
  void *nope = SENTINEL(0), *foo = SENTINEL(1), *yes = SENTINEL(2),
       *here = SENTINEL(3), *here_too = SENTINEL(4), *fin = SENTINEL(5),
       *fin_rej = SENTINEL(6);
  uvp_promise_t *base[9], *ins[9], *p;
  rec_t h2 = {0}, h3 = {0}, h4 = {0}, h5 = {0}, h6 = {0}, h7 = {0};
  both_t h8 = {0};

  count_unhandled(f);
  base[0] = fulfilled(f, INT_VALUE(2));
  assert_int_equal(uvp_promise_then(base[0], plus_one_cb, NULL, &ins[0]), 0);
  base[1] = rejected(f, UV_EIO, INT_VALUE(21));
  assert_int_equal(uvp_promise_catch(base[1], times_two_cb, NULL, &ins[1]), 0);
  base[2] = fulfilled(f, nope);
  h2.ret = uvp_ret_reject(UV_EIO, foo, NULL);
  assert_int_equal(uvp_promise_then(base[2], rec_cb, &h2, &ins[2]), 0);
  base[3] = rejected(f, UV_EIO, yes);
  h3.ret = uvp_ret_reject(UV_EIO, nope, NULL);
  assert_int_equal(uvp_promise_then(base[3], rec_cb, &h3, &ins[3]), 0);
  base[4] = fulfilled(f, here);
  h4.ret = uvp_ret_value(nope, NULL);
  assert_int_equal(uvp_promise_finally(base[4], rec_cb, &h4, &ins[4]), 0);
  base[5] = rejected(f, UV_EIO, here_too);
  h5.ret = uvp_ret_value(nope, NULL);
  assert_int_equal(uvp_promise_finally(base[5], rec_cb, &h5, &ins[5]), 0);
  base[6] = fulfilled(f, nope);
  h6.ret = uvp_ret_reject(UV_EIO, fin, NULL);
  assert_int_equal(uvp_promise_finally(base[6], rec_cb, &h6, &ins[6]), 0);
  base[7] = rejected(f, UV_EIO, nope);
  h7.ret = uvp_ret_reject(UV_EIO, fin_rej, NULL);
  assert_int_equal(uvp_promise_finally(base[7], rec_cb, &h7, &ins[7]), 0);
  base[8] = rejected(f, UV_EIO, INT_VALUE(1));
  h8.ok.ret = uvp_ret_value(nope, NULL);
  h8.err.ret = uvp_ret_value(INT_VALUE(0), NULL);
  assert_int_equal(uvp_promise_on(base[8], UVP_ON_BOTH, both_cb, &h8, &ins[8]),
                   0);

  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 9, &p), 0);
  run_loop(f);

  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, 9, 4, 5);
  expect_item(l, 0, 0, INT_VALUE(3), ins[0]);
  expect_item(l, 1, 0, INT_VALUE(42), ins[1]);
  expect_item(l, 2, UV_EIO, foo, ins[2]);
  expect_item(l, 3, UV_EIO, yes, ins[3]);
  expect_item(l, 4, 0, here, ins[4]);
  expect_item(l, 5, UV_EIO, here_too, ins[5]);
  expect_item(l, 6, UV_EIO, fin, ins[6]);
  expect_item(l, 7, UV_EIO, fin_rej, ins[7]);
  expect_item(l, 8, 0, INT_VALUE(0), ins[8]);
  assert_int_equal(h3.calls, 0);
  assert_int_equal(h8.ok.calls, 0);
  release_array(base, 9);
  release_array(ins, 9);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* C-specific: the requirements                                      */
/* ------------------------------------------------------------------------ */

/* Records in input order with the counts, whatever the completion order. */
static void c_records_in_input_order(void **state) {
  fixture_t *f = *state;
  enum { N = 6 };
  static const int order[N] = {5, 2, 0, 4, 1, 3};
  uvp_promise_t *ins[N], *p;

  count_unhandled(f);
  for (int i = 0; i < N; i++)
    ins[i] = pending(f);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, N, &p), 0);
  for (int k = 0; k < N; k++) {
    int i = order[k];
    assert_int_equal(uvp_promise_state(p), UVP_PENDING);
    if (i % 3 == 0)
      assert_int_equal(uvp_promise_reject(ins[i], -100 - i, SENTINEL(i), NULL),
                       0);
    else
      assert_int_equal(uvp_promise_resolve(ins[i], SENTINEL(i), NULL), 0);
    run_loop(f);
  }
  uvp_settled_list_t *l = list_of(p);
  expect_counts(l, N, 4, 2);
  for (int i = 0; i < N; i++)
    expect_item(l, i, i % 3 == 0 ? -100 - i : 0, SENTINEL(i), ins[i]);
  release_array(ins, N);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* Results compose (besides c_compose): all of allSettled results (the
 * issue's example), and uvp_settled_split on a record list reached through
 * it. */
static void c_compose_all_of_all_settled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a = fulfilled(f, SENTINEL(0));
  uvp_promise_t *b = pending(f);
  uvp_promise_t *c = pending(f);
  uvp_promise_t *g1[2] = {a, b}, *g2[2] = {c, a};
  uvp_promise_t *s[2], *outer, *d;
  rec_t r = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_all_settled(f->ctx, g1, 2, &s[0]), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, g2, 2, &s[1]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, s, 2, 0, &outer), 0);
  assert_int_equal(uvp_promise_then(outer, rec_cb, &r, &d), 0);
  assert_int_equal(uvp_promise_reject(b, UV_ECONNRESET, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(r.calls, 0);
  assert_int_equal(uvp_promise_resolve(c, SENTINEL(2), NULL), 0);
  run_loop(f);

  assert_int_equal(r.calls, 1);
  uvp_values_t *v = r.value;
  assert_int_equal(v->count, 2);
  uvp_settled_list_t *l1 = v->values[0], *l2 = v->values[1];
  expect_counts(l1, 2, 1, 1);
  expect_item(l1, 0, 0, SENTINEL(0), a);
  expect_item(l1, 1, UV_ECONNRESET, NULL, b);
  expect_counts(l2, 2, 2, 0);
  expect_item(l2, 0, 0, SENTINEL(2), c);
  expect_item(l2, 1, 0, SENTINEL(0), a);

  uvp_split_t sp;
  assert_int_equal(uvp_settled_split(l1, &sp), 0);
  assert_int_equal(sp.nfulfilled, 1);
  assert_int_equal(sp.nrejected, 1);
  assert_int_equal(sp.fulfilled[0].index, 0);
  assert_int_equal(sp.rejected[0].index, 1);
  assert_int_equal(sp.rejected[0].status, UV_ECONNRESET);
  uvp_split_free(&sp);
  release_all(7, a, b, c, s[0], s[1], outer, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* Teardown with the result pending: it rejects with UVP_ECLOSED (the one
 * rejection besides cancellation) and is freed with the last reference. */
static void c_teardown_pending(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *in = pending(f);
  uvp_promise_t *p;

  count_unhandled(f);
  assert_int_equal(uvp_promise_all_settled(f->ctx, &in, 1, &p), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_promise_reason(in, NULL), UVP_ECLOSED);
  release_all(2, in, p);
}

/* Cancelling the result rejects it with UV_ECANCELED and cancels the
 * inputs still pending. */
static void c_cancel(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {fulfilled(f, NULL), pending(f)};
  uvp_promise_t *p;
  both_t h = {0};

  assert_int_equal(uvp_promise_all_settled(f->ctx, ins, 2, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, NULL), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  run_loop(f);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UV_ECANCELED);
  assert_int_equal(uvp_promise_state(ins[0]), UVP_FULFILLED);
  assert_int_equal(uvp_promise_reason(ins[1], NULL), UV_ECANCELED);
  release_array(ins, 2);
  uvp_promise_release(p);
  assert_no_live(f);
}

COMBINATOR_ELEMENT_PORTS(&combinators[COMB_ALL_SETTLED])
COMBINATOR_CASES(&combinators[COMB_ALL_SETTLED])

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(resolves_empty_array),
      FIXTURE_TEST(resolved_immed),
      FIXTURE_TEST(resolve_non_thenable),
      FIXTURE_TEST(resolved_all_fulfilled),
      FIXTURE_TEST(resolved_all_rejected),
      FIXTURE_TEST(resolved_all_mixed),
      FIXTURE_TEST(reject_immed),
      FIXTURE_TEST(reject_deferred),
      FIXTURE_TEST(reject_ignored_immed),
      FIXTURE_TEST(reject_ignored_deferred),
      FIXTURE_TEST(new_reject_function),
      COMBINATOR_ELEMENT_PORT_TESTS,
      FIXTURE_TEST(invoke_then),
      FIXTURE_TEST(resolved_sequence),
      FIXTURE_TEST(resolved_sequence_with_rejections),
      FIXTURE_TEST(resolved_sequence_mixed),
      FIXTURE_TEST(resolved_sequence_extra_ticks),
      FIXTURE_TEST(resolved_then_catch_finally),
      FIXTURE_TEST(c_records_in_input_order),
      FIXTURE_TEST(c_compose_all_of_all_settled),
      FIXTURE_TEST(c_teardown_pending),
      FIXTURE_TEST(c_cancel),
      COMBINATOR_CASE_TESTS,
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
