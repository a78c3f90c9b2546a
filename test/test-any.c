/* test262 Promise.any, ported to uvp (uvp_promise_any).
 *
 * Source: tc39/test262, every file of test/built-ins/Promise/any/ that the
 * reference index holds (60 files).  Each test is named after the file it
 * ports (dashes and dots as underscores); tests whose name starts with "c_"
 * are C-specific additions from the issue "Combinators" and
 * uvp_promise_any's comment in include/uvp.h; those every combinator
 * shares are written once, in combinator-cases.h.
 *
 * Mapping (see the top of include/uvp.h and test262.h):
 *   Promise.any([...])          uvp_promise_any(ctx, inputs, n, 0, &out)
 *   AggregateError, .errors     rejection code UVP_EAGGREGATE whose payload
 *                               is a uvp_settled_list_t: items[i].status the
 *                               input's code, .value its payload, in input
 *                               order
 *   a thenable calling resolve/reject at once / later
 *                               an input already settled / a pending input
 *                               settled later (uvp adopts no thenables)
 *   Promise.resolve(p)          p itself, or a promise following p
 *                               (uvp_promise_resolve_with)
 *   calling a reject element again
 *                               settling the same input again: UVP_ESETTLED
 *
 * Skipped (no C analogue):
 *   not-a-constructor.js
 *     - function object properties.
 *   ctx-ctor.js, ctx-ctor-throws.js, ctx-non-ctor.js, ctx-non-object.js,
 *   species-get-error.js, does-not-perform-species-get-of-custom.js,
 *   does-not-perform-species-get-of-promise.js,
 *   capability-reject-throws-no-close.js,
 * capability-resolve-throws-no-close.js, capability-resolve-throws-reject.js,
 * invoke-resolve.js, invoke-resolve-error-close.js,
 * invoke-resolve-error-reject.js, invoke-resolve-get-error-close.js,
 * invoke-resolve-get-error-reject.js,
 *   invoke-resolve-get-once-multiple-calls.js,
 *   invoke-resolve-get-once-no-calls.js,
 *   invoke-resolve-not-callable-rejects-with-typerror.js,
 *   invoke-resolve-on-promises-every-iteration-of-custom.js,
 *   invoke-resolve-on-promises-every-iteration-of-promise.js,
 *   invoke-resolve-on-values-every-iteration-of-custom.js,
 *   invoke-resolve-on-values-every-iteration-of-promise.js,
 *   resolve-non-callable.js, resolve-not-callable-close.js
 *     - `this` / SpeciesConstructor / NewPromiseCapability and the
 *       constructor's `resolve`: uvp has one promise type, creates the
 *       result itself and takes promises, not values to coerce.
 *   invoke-then-error-close.js, invoke-then-error-reject.js,
 *   invoke-then-get-error-close.js, invoke-then-get-error-reject.js
 *     - throwing or poisoned `then`: uvp promises have no overridable
 *       methods.
 *   iter-arg-is-{false,null,number,symbol,true,undefined}-reject.js,
 *   iter-arg-is-empty-string-reject.js, iter-arg-is-poisoned.js,
 *   iter-arg-is-string-resolve.js, iter-assigned-*-reject.js,
 *   iter-step-err-no-close.js, iter-step-err-reject.js,
 *   resolve-throws-iterator-return-is-not-callable.js
 *     - the iterator protocol and strings as iterables: inputs are a typed C
 *       array; a NULL array or input is API validation
 *       (c_invalid_arguments).  (The stored iter-arg-is-string-resolve.js
 *       expects any('') to fulfil; node v20 and the specification reject
 *       with an empty AggregateError, which empty_iterable_rejects checks.)
 *   invoke-then.js and invoke-then-on-promises-every-iteration.js check the
 *   arguments and count of `then` calls; the port checks each input gets
 *   exactly one reaction, attached in input order (observable as handler
 *   order).
 *
 * resolve-from-resolve-reject-finally.js: the stored file expects any to
 * fulfil with 'd', but its fourth input is reject('d').finally(v => v),
 * which stays rejected (finally passes a rejection through; node v20 gives
 * AggregateError ['a','b','c','d']).  The port asserts the specified
 * outcome: an aggregate of the four reasons in input order. */
#include "combinator-cases.h"

/* ------------------------------------------------------------------------ */
/* Helpers of this file                                                     */
/* ------------------------------------------------------------------------ */

/* The aggregate of a rejected any. */
static uvp_settled_list_t *aggregate_of(uvp_promise_t *p) {
  void *payload = NULL;
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(p, &payload), UVP_EAGGREGATE);
  assert_non_null(payload);
  return payload;
}

/* ------------------------------------------------------------------------ */
/* The empty input                                                           */
/* ------------------------------------------------------------------------ */

/* empty-iterable-rejects.js, iter-arg-is-empty-iterable-reject.js,
 * reject-immed.js: any([]) rejects at once with an empty aggregate; its
 * handler still runs later, from the scheduler. */
static void empty_iterable_rejects(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_any(f->ctx, NULL, 0, 0, &p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(h.ok.calls + h.err.calls, 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UVP_EAGGREGATE);
  uvp_settled_list_t *l = h.err.value;
  assert_ptr_equal(l, aggregate_of(p));
  expect_counts(l, 0, 0, 0);
  release_all(2, p, d);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Rejection: the aggregate                                                  */
/* ------------------------------------------------------------------------ */

/* reject-all-mixed.js: reject('a'), new Promise rejecting 'b',
 * all([reject('c')]), resolve(reject('d')) -> errors 'a', 'b', 'c', 'd'. */
static void reject_all_mixed(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *c_in, *d_in, *ins[4], *p, *d;
  both_t h = {0};

  count_unhandled(f);
  ins[0] = rejected(f, UV_EIO, SENTINEL(0));
  ins[1] = pending(f);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EPIPE, SENTINEL(1), NULL), 0);
  c_in = rejected(f, UV_ENOENT, SENTINEL(2));
  assert_int_equal(uvp_promise_all(f->ctx, &c_in, 1, 0, &ins[2]), 0);
  d_in = rejected(f, UV_ECONNRESET, SENTINEL(3));
  ins[3] = pending(f);
  assert_int_equal(uvp_promise_resolve_with(ins[3], d_in), 0);
  assert_int_equal(uvp_promise_any(f->ctx, ins, 4, 0, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  uvp_settled_list_t *l = aggregate_of(p);
  expect_counts(l, 4, 0, 4);
  expect_item(l, 0, UV_EIO, SENTINEL(0), ins[0]);
  expect_item(l, 1, UV_EPIPE, SENTINEL(1), ins[1]);
  expect_item(l, 2, UV_ENOENT, SENTINEL(2), ins[2]);
  expect_item(l, 3, UV_ECONNRESET, SENTINEL(3), ins[3]);
  release_array(ins, 4);
  release_all(4, c_in, d_in, p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolve-from-resolve-reject-finally.js: as reject-all-mixed, with the
 * fourth input reject('d').finally(v => v), still rejected with 'd' (see
 * the note at the top). */
static uvp_ret_t return_value_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value(in->value, NULL);
}

/* The inputs of resolve-from-resolve-reject-finally.js and
 * resolve-one-mixed.js: reject('a'); a promise rejected with 'b' after its
 * creation; all([reject('c')]); one that follows reject('d').finally(v => v)
 * or reject('d').catch(v => v).  keep[3]: c's input, d's base and d's
 * derived promise, for the caller to release. */
static void mixed_four_inputs(fixture_t *f, bool finally, uvp_promise_t **ins,
                              uvp_promise_t **keep) {
  ins[0] = rejected(f, UV_EIO, SENTINEL(0));
  ins[1] = pending(f);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EIO, SENTINEL(1), NULL), 0);
  keep[0] = rejected(f, UV_EIO, SENTINEL(2));
  assert_int_equal(uvp_promise_all(f->ctx, &keep[0], 1, 0, &ins[2]), 0);
  keep[1] = rejected(f, UV_EIO, SENTINEL(3));
  if (finally)
    assert_int_equal(
        uvp_promise_finally(keep[1], return_value_cb, NULL, &keep[2]), 0);
  else
    assert_int_equal(
        uvp_promise_catch(keep[1], return_value_cb, NULL, &keep[2]), 0);
  ins[3] = pending(f);
  assert_int_equal(uvp_promise_resolve_with(ins[3], keep[2]), 0);
}

static void resolve_from_resolve_reject_finally(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *keep[3], *ins[4], *p;

  count_unhandled(f);
  mixed_four_inputs(f, true, ins, keep);
  assert_int_equal(uvp_promise_any(f->ctx, ins, 4, 0, &p), 0);
  run_loop(f);

  uvp_settled_list_t *l = aggregate_of(p);
  expect_counts(l, 4, 0, 4);
  for (int i = 0; i < 4; i++)
    expect_item(l, i, UV_EIO, SENTINEL(i), ins[i]);
  release_array(ins, 4);
  release_array(keep, 3);
  assert_int_equal(g_unhandled, 0);
  uvp_promise_release(p); /* nobody handled the aggregate: reported */
  assert_int_equal(g_unhandled, 1);
  assert_no_live(f);
}

/* reject-deferred.js: the only input rejects later, from a handler. */
static void reject_deferred(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *in = pending(f), *tick = fulfilled(f, NULL);
  uvp_promise_t *p, *d, *dt;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_then(tick, reject_target_cb, in, &dt), 0);
  assert_int_equal(uvp_promise_any(f->ctx, &in, 1, 0, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.err.calls, 1);
  uvp_settled_list_t *l = aggregate_of(p);
  expect_counts(l, 1, 0, 1);
  expect_item(l, 0, UV_EIO, SENTINEL(1), in);
  release_all(5, in, tick, p, d, dt);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* call-reject-element-after-return.js: rejecting a rejected input again
 * after the aggregate was made changes nothing. */
static void call_reject_element_after_return(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *in = rejected(f, UV_EIO, SENTINEL(1));
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_any(f->ctx, &in, 1, 0, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);
  assert_int_equal(h.err.calls, 1);
  uvp_settled_list_t *l = aggregate_of(p);
  expect_item(l, 0, UV_EIO, SENTINEL(1), in);

  assert_int_equal(uvp_promise_reject(in, UV_EPIPE, SENTINEL(2), NULL),
                   UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(h.err.calls, 1);
  expect_counts(l, 1, 0, 1);
  expect_item(l, 0, UV_EIO, SENTINEL(1), in);
  release_all(3, in, p, d);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Fulfilment                                                                */
/* ------------------------------------------------------------------------ */

/* resolve-one-mixed.js: three rejections and resolve(reject('d').catch(v =>
 * v)): any fulfils with 'd'. */
static void resolve_one_mixed(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *keep[3], *ins[4], *p;

  mixed_four_inputs(f, false, ins, keep);
  assert_int_equal(uvp_promise_any(f->ctx, ins, 4, 0, &p), 0);
  run_loop(f);

  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(3));
  release_array(ins, 4);
  release_array(keep, 3);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* resolve-ignores-late-rejection.js: resolver fulfilled with 42,
 * lateRejector resolved with 33 and then rejected (which fails): 42. */
static void resolve_ignores_late_rejection(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {pending(f), pending(f)};
  uvp_promise_t *p;

  assert_int_equal(uvp_promise_resolve(ins[0], INT_VALUE(42), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], INT_VALUE(33), NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EIO, NULL, NULL),
                   UVP_ESETTLED);
  assert_int_equal(uvp_promise_any(f->ctx, ins, 2, 0, &p), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(p), INT_VALUE(42));
  release_all(3, ins[0], ins[1], p);
  assert_no_live(f);
}

/* resolve-ignores-late-rejection-deferred.js: the same, both settled later
 * from a handler. */
static void resolve_ignores_late_rejection_deferred(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {pending(f), pending(f)};
  uvp_promise_t *tick = fulfilled(f, NULL);
  uvp_promise_t *p, *dt;
  rec_t r = {0};

  assert_int_equal(uvp_promise_any(f->ctx, ins, 2, 0, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  assert_int_equal(uvp_promise_then(tick, settle_both_cb, ins, &dt), 0);
  run_loop(f);
  assert_int_equal(r.calls, 1);
  assert_ptr_equal(r.value, INT_VALUE(42));
  release_all(5, ins[0], ins[1], tick, p, dt);
  assert_no_live(f);
}

/* invoke-then.js, invoke-then-on-promises-every-iteration.js: each input
 * gets exactly one reaction, attached in input order. */
static void invoke_then(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *ins[3] = {pending(f), pending(f), pending(f)};
  uvp_promise_t *p, *d;
  rec_t before[3], after[3], fin = {.trace = &t, .mark = 100};

  count_unhandled(f);
  for (int i = 0; i < 3; i++) {
    before[i] = (rec_t){.trace = &t, .mark = 10 + i};
    assert_int_equal(uvp_promise_catch(ins[i], rec_cb, &before[i], NULL), 0);
  }
  assert_int_equal(uvp_promise_any(f->ctx, ins, 3, 0, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &fin, &d), 0);
  for (int i = 0; i < 3; i++) {
    after[i] = (rec_t){.trace = &t, .mark = 20 + i};
    assert_int_equal(uvp_promise_catch(ins[i], rec_cb, &after[i], NULL), 0);
  }
  for (int i = 2; i >= 0; i--)
    assert_int_equal(uvp_promise_reject(ins[i], UV_EIO, SENTINEL(i), NULL), 0);
  run_loop(f);

  /* the aggregate is made in input 0's reaction, which runs last */
  expect_trace(&t, 7, 12, 22, 11, 21, 10, 20, 100);
  expect_counts(aggregate_of(p), 3, 0, 3);
  release_all(5, ins[0], ins[1], ins[2], p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* C-specific: the requirements                                      */
/* ------------------------------------------------------------------------ */

/* The first fulfilment in time wins: earlier rejections do not matter, and
 * a later-indexed input that fulfils first beats an earlier one. */
static void c_first_fulfilment(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[4] = {pending(f), pending(f), pending(f), pending(f)};
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_any(f->ctx, ins, 4, 0, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[0], UV_EIO, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(ins[3], SENTINEL(3), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_int_equal(r.calls, 1);
  assert_ptr_equal(r.value, SENTINEL(3));
  assert_int_equal(uvp_promise_reject(ins[2], UV_EIO, NULL, NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(3));
  release_array(ins, 4);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* Among inputs already settled when the call is made, the first fulfilled
 * one in input order wins. */
static void c_settled_first_in_input_order(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[4];
  uvp_promise_t *p;

  ins[3] = fulfilled(f, SENTINEL(3));
  ins[0] = rejected(f, UV_EIO, NULL);
  ins[2] = fulfilled(f, SENTINEL(2));
  ins[1] = pending(f);
  assert_int_equal(uvp_promise_any(f->ctx, ins, 4, 0, &p), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(2));
  release_array(ins, 4);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* All rejected, in scrambled time order: the aggregate holds every reason
 * in input order, with the counts and the inputs. */
static void c_aggregate_in_input_order(void **state) {
  fixture_t *f = *state;
  enum { N = 5 };
  static const int order[N] = {3, 0, 4, 2, 1};
  uvp_promise_t *ins[N], *p, *d;
  both_t h = {0};

  for (int i = 0; i < N; i++)
    ins[i] = pending(f);
  assert_int_equal(uvp_promise_any(f->ctx, ins, N, 0, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  for (int k = 0; k < N; k++) {
    int i = order[k];
    assert_int_equal(uvp_promise_state(p), UVP_PENDING);
    assert_int_equal(uvp_promise_reject(ins[i], -200 - i, SENTINEL(i), NULL),
                     0);
    run_loop(f);
  }
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UVP_EAGGREGATE);
  uvp_settled_list_t *l = aggregate_of(p);
  assert_ptr_equal(h.err.value, l);
  expect_counts(l, N, 0, N);
  for (int i = 0; i < N; i++)
    expect_item(l, i, -200 - i, SENTINEL(i), ins[i]);
  release_array(ins, N);
  release_all(2, p, d);
  assert_no_live(f);
}

/* Results compose (besides c_compose): any of races, all of anys, and
 * then. */
static void c_compose_races_and_anys(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a = pending(f), *b = pending(f), *c = pending(f);
  uvp_promise_t *ab[2] = {a, b}, *bc[2] = {b, c};
  uvp_promise_t *races[2], *anys[2], *any_races, *all_anys, *d;
  rec_t r = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_race(f->ctx, ab, 2, 0, &races[0]), 0);
  assert_int_equal(uvp_promise_race(f->ctx, bc, 2, 0, &races[1]), 0);
  assert_int_equal(uvp_promise_any(f->ctx, races, 2, 0, &any_races), 0);
  assert_int_equal(uvp_promise_any(f->ctx, ab, 2, 0, &anys[0]), 0);
  assert_int_equal(uvp_promise_any(f->ctx, bc, 2, 0, &anys[1]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, anys, 2, 0, &all_anys), 0);
  assert_int_equal(uvp_promise_then(all_anys, rec_cb, &r, &d), 0);
  /* a rejects: races[0] rejects; any_races waits for races[1] */
  assert_int_equal(uvp_promise_reject(a, UV_EIO, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(races[0], NULL), UV_EIO);
  assert_int_equal(uvp_promise_state(any_races), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(c, SENTINEL(2), NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(any_races), SENTINEL(2));
  assert_int_equal(r.calls, 0); /* anys[0] still waits for b */
  assert_int_equal(uvp_promise_resolve(b, SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_int_equal(r.calls, 1);
  uvp_values_t *v = r.value;
  assert_ptr_equal(v->values[0], SENTINEL(1));
  assert_ptr_equal(v->values[1], SENTINEL(2));
  release_all(10, a, b, c, races[0], races[1], anys[0], anys[1], any_races,
              all_anys, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

COMBINATOR_CASES(&combinators[COMB_ANY])
COMBINATOR_FLAG_CASES(&combinators[COMB_ANY])

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(empty_iterable_rejects),
      FIXTURE_TEST(reject_all_mixed),
      FIXTURE_TEST(resolve_from_resolve_reject_finally),
      FIXTURE_TEST(reject_deferred),
      FIXTURE_TEST(call_reject_element_after_return),
      FIXTURE_TEST(resolve_one_mixed),
      FIXTURE_TEST(resolve_ignores_late_rejection),
      FIXTURE_TEST(resolve_ignores_late_rejection_deferred),
      FIXTURE_TEST(invoke_then),
      FIXTURE_TEST(c_first_fulfilment),
      FIXTURE_TEST(c_settled_first_in_input_order),
      FIXTURE_TEST(c_aggregate_in_input_order),
      FIXTURE_TEST(c_compose_races_and_anys),
      COMBINATOR_CASE_TESTS,
      COMBINATOR_FLAG_CASE_TESTS,
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
