/* test262 Promise.all, ported to uvp (uvp_promise_all).
 *
 * Source: tc39/test262, every file of test/built-ins/Promise/all/ that the
 * reference index holds (32 files; the index lacks the rest of upstream's
 * directory, whose behaviours the c_ tests below cover where they matter).
 * Each test is named after the file it ports (dashes and dots as
 * underscores); tests whose name starts with "c_" are C-specific additions
 * from the issue "Combinators" and uvp_promise_all's comment in
 * include/uvp.h; those every combinator shares are written once, in
 * combinator-cases.h.
 *
 * Mapping (see the top of include/uvp.h and test262.h):
 *   Promise.all([p1, ...])      uvp_promise_all(ctx, inputs, n, 0, &out)
 *   the values array            uvp_values_t (count, values[i] borrowed)
 *   Promise.resolve(v) / reject uvp_promise_resolved / uvp_promise_rejected
 *   new Promise + resolve/rej.  uvp_promise_new + uvp_promise_resolve/reject
 *   a thenable whose `then` calls onFulfilled(v) at once / later
 *                               an input already fulfilled / a pending input
 *                               fulfilled later (uvp adopts no thenables)
 *   calling a resolve element function a second time
 *                               settling the same input again: the call
 *                               returns UVP_ESETTLED and the combinator never
 *                               hears of it (the C form of [[AlreadyCalled]])
 *   Promise.all.call(Constructor, ...) with a recording resolve
 *                               a handler on the result that counts its calls
 *
 * Skipped (no C analogue):
 *   S25.4.4.1_A1.1_T1.js (is callable), S25.4.4.1_A1.2_T1.js (length),
 *   S25.4.4.1_A1.3_T1.js (not enumerable), not-a-constructor.js,
 *   resolve-element-function-name.js
 *     - function object properties; C functions have none.
 *   S25.4.4.1_A3.1_T1.js, S25.4.4.1_A3.1_T2.js, S25.4.4.1_A3.1_T3.js,
 *   S25.4.4.1_A5.1_T1.js, iter-step-err-no-close.js,
 *   resolve-throws-iterator-return-is-not-callable.js,
 *   resolve-not-callable-close.js, iter-arg-is-string-resolve.js
 *     - the iterator protocol (non-iterables, throwing iterators, closing,
 *       strings as iterables): inputs are a typed C array.  A NULL array or a
 *       NULL input is API validation (UV_EINVAL, c_invalid_arguments), not
 *       test262 semantics; the empty input is S25_4_4_1_A2_3_T2.
 *   S25.4.4.1_A4.1_T1.js, species-get-error.js, resolve-non-callable.js
 *     - `this` / SpeciesConstructor / NewPromiseCapability and the
 *       constructor's `resolve` lookup: uvp has one promise type and creates
 *       the result itself.
 *   new-resolve-function.js and same-reject-function.js compare function
 *   identities handed to a thenable's `then`; their observable consequences
 *   (each input fills its own slot; any input's rejection rejects the one
 *   result) are what the ports below check.
 *   S25.4.4.1_A2.1_T1.js and S25.4.4.1_A6.1_T1.js ("returns a Promise") are
 *   one test: in C the type says so, the port checks a result exists, belongs
 *   to the context and is not rejected.
 *
 * Header behaviour pinned here: the empty all is fulfilled when the call
 * returns (as JavaScript's, which S25.4.4.1_A2.2_T1 observes), though no
 * handler runs inside the call. */
#include "combinator-cases.h"

/* ------------------------------------------------------------------------ */
/* Helpers of this file                                                     */
/* ------------------------------------------------------------------------ */

static uvp_values_t *values_of(uvp_promise_t *p) {
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_values_t *v = uvp_promise_value(p);
  assert_non_null(v);
  return v;
}

/* ------------------------------------------------------------------------ */
/* The empty input                                                           */
/* ------------------------------------------------------------------------ */

/* S25.4.4.1_A2.1_T1.js, S25.4.4.1_A6.1_T1.js: Promise.all([]) is a
 * promise (of this context, not rejected). */
static void S25_4_4_1_A2_1_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;

  assert_int_equal(uvp_promise_all(f->ctx, NULL, 0, 0, &p), 0);
  assert_non_null(p);
  assert_ptr_equal(uvp_promise_ctx(p), f->ctx);
  assert_int_not_equal(uvp_promise_state(p), UVP_REJECTED);
  run_loop(f);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* S25.4.4.1_A2.2_T1.js: Promise.all([]) is resolved immediately: its
 * handler is queued before one registered later on an already resolved
 * promise (2 before 3, 4). */
static void S25_4_4_1_A2_2_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *all, *r, *d1, *d2, *d3;
  rec_t r2 = {.trace = &t, .mark = 2, .seq = 1};
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};

  assert_int_equal(uvp_promise_all(f->ctx, NULL, 0, 0, &all), 0);
  /* fulfilled when the call returns, as in JavaScript: that is what puts 2
   * before 3 */
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  assert_int_equal(uvp_promise_then(all, rec_cb, &r2, &d1), 0);
  r = fulfilled(f, NULL);
  assert_int_equal(uvp_promise_then(r, rec_cb, &r3, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, rec_cb, &r4, &d3), 0);
  trace_push(&t, 1);
  assert_int_equal(r2.calls + r3.calls + r4.calls, 0);
  run_loop(f);

  check_sequence(&t, 4);
  release_all(5, all, r, d1, d2, d3);
  assert_no_live(f);
}

/* S25.4.4.1_A2.3_T2.js, S25.4.4.1_A6.1_T2.js: Promise.all([]) fulfils with
 * a new, empty array (not the caller's). */
static void S25_4_4_1_A2_3_T2(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *arg[1] = {NULL};
  uvp_promise_t *all, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_all(f->ctx, arg, 0, 0, &all), 0);
  assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  uvp_values_t *v = h.ok.value;
  assert_non_null(v);
  assert_ptr_equal(v, uvp_promise_value(all));
  assert_int_equal(v->count, 0);
  assert_ptr_not_equal(v->values, (void **)arg);
  release_all(2, all, d);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Fulfilment                                                                */
/* ------------------------------------------------------------------------ */

/* S25.4.4.1_A7.1_T1.js: Promise.all([Promise.resolve(3)]) fulfils with a
 * one-element array holding 3. */
static void S25_4_4_1_A7_1_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p1 = fulfilled(f, INT_VALUE(3));
  uvp_promise_t *all, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_all(f->ctx, &p1, 1, 0, &all), 0);
  assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  assert_ptr_equal(h.ok.from, all);
  uvp_values_t *v = h.ok.value;
  assert_int_equal(v->count, 1);
  assert_ptr_equal(v->values[0], INT_VALUE(3));
  release_all(3, p1, all, d);
  assert_no_live(f);
}

/* S25.4.4.1_A8.1_T1.js: Promise.all([p1, p2]) resolution functions are
 * called in a predictable sequence: p1.then (3), p2.then (4), all.then (5). */
static void S25_4_4_1_A8_1_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p1 = pending(f), *p2 = pending(f);
  uvp_promise_t *all, *d1, *d2, *d3;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  assert_int_equal(uvp_promise_resolve(p1, INT_VALUE(1), NULL), 0);
  assert_int_equal(uvp_promise_resolve(p2, INT_VALUE(2), NULL), 0);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_then(p1, rec_cb, &r3, &d1), 0);
  /* The inputs as a compound literal: its commas go through the macro. */
  assert_int_equal(
      uvp_promise_all(f->ctx, (uvp_promise_t *[]){p1, p2}, 2, 0, &all), 0);
  assert_int_equal(uvp_promise_then(all, rec_cb, &r5, &d2), 0);
  assert_int_equal(uvp_promise_then(p2, rec_cb, &r4, &d3), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  uvp_values_t *v = values_of(all);
  assert_int_equal(v->count, 2);
  assert_ptr_equal(v->values[0], INT_VALUE(1));
  assert_ptr_equal(v->values[1], INT_VALUE(2));
  release_all(6, p1, p2, all, d1, d2, d3);
  assert_no_live(f);
}

/* new-resolve-function.js: every input has its own resolve element: values
 * land in their input's slot whatever the completion order. */
static void new_resolve_function(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {pending(f), pending(f)};
  uvp_promise_t *all;

  assert_int_equal(uvp_promise_all(f->ctx, ins, 2, 0, &all), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(2), NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(all), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(ins[0], SENTINEL(1), NULL), 0);
  run_loop(f);

  uvp_values_t *v = values_of(all);
  assert_ptr_equal(v->values[0], SENTINEL(1));
  assert_ptr_equal(v->values[1], SENTINEL(2));
  release_all(3, ins[0], ins[1], all);
  assert_no_live(f);
}

/* same-reject-function.js: every input shares the result's reject: either
 * input rejecting rejects the one result with that reason. */
static void same_reject_function(void **state) {
  fixture_t *f = *state;

  count_unhandled(f);
  for (int which = 0; which < 2; which++) {
    uvp_promise_t *ins[2] = {pending(f), pending(f)};
    uvp_promise_t *all, *d;
    both_t h = {0};
    void *payload = NULL;

    assert_int_equal(uvp_promise_all(f->ctx, ins, 2, 0, &all), 0);
    assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, both_cb, &h, &d), 0);
    assert_int_equal(
        uvp_promise_reject(ins[which], UV_EIO, SENTINEL(which), NULL), 0);
    run_loop(f);

    assert_int_equal(h.ok.calls, 0);
    assert_int_equal(h.err.calls, 1);
    assert_int_equal(h.err.status, UV_EIO);
    assert_ptr_equal(h.err.value, SENTINEL(which));
    assert_int_equal(uvp_promise_reason(all, &payload), UV_EIO);
    assert_ptr_equal(payload, SENTINEL(which));
    assert_int_equal(uvp_promise_state(ins[!which]), UVP_PENDING);
    release_all(4, ins[0], ins[1], all, d);
  }
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Rejection                                                                 */
/* ------------------------------------------------------------------------ */

/* S25.4.4.1_A8.2_T1.js: Promise.all rejects when an input rejects: p1
 * pending, p2 fulfilled; p1 rejects with 1 -> the result rejects with 1. */
static void S25_4_4_1_A8_2_T1(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  uvp_promise_t *ins[2] = {pending(f), fulfilled(f, INT_VALUE(2))};
  uvp_promise_t *all, *d;
  both_t h = {0};
  boxed_t *one = boxed_new(1, &freed);

  count_unhandled(f);
  assert_int_equal(uvp_promise_all(f->ctx, ins, 2, 0, &all), 0);
  assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(uvp_promise_reject(ins[0], UV_EIO, one, boxed_free), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UV_EIO);
  assert_ptr_equal(h.err.value, one);
  assert_int_equal(((boxed_t *)h.err.value)->v, 1);
  /* the result shares the input's payload: it outlives the input's
   * reference */
  uvp_promise_release(ins[0]);
  assert_int_equal(freed, 0);
  void *payload = NULL;
  assert_int_equal(uvp_promise_reason(all, &payload), UV_EIO);
  assert_ptr_equal(payload, one);
  release_all(3, ins[1], all, d);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* C-specific: the requirements                                      */
/* ------------------------------------------------------------------------ */

/* Values are in input order whatever the completion order. */
static void c_values_in_input_order(void **state) {
  fixture_t *f = *state;
  enum { N = 6 };
  static const int order[N] = {4, 1, 5, 0, 3, 2};
  uvp_promise_t *ins[N], *all;

  for (int i = 0; i < N; i++)
    ins[i] = pending(f);
  assert_int_equal(uvp_promise_all(f->ctx, ins, N, 0, &all), 0);
  for (int k = 0; k < N; k++) {
    assert_int_equal(uvp_promise_state(all), UVP_PENDING);
    assert_int_equal(
        uvp_promise_resolve(ins[order[k]], INT_VALUE(100 + order[k]), NULL), 0);
    run_loop(f);
  }
  uvp_values_t *v = values_of(all);
  assert_int_equal(v->count, N);
  for (int i = 0; i < N; i++)
    assert_ptr_equal(v->values[i], INT_VALUE(100 + i));
  release_array(ins, N);
  uvp_promise_release(all);
  assert_no_live(f);
}

/* The FIRST rejection in time wins, not the first in input order: input 2
 * rejects before input 0, in the same tick and in separate ticks. */
static void c_first_rejection_in_time(void **state) {
  fixture_t *f = *state;

  count_unhandled(f);
  for (int separate = 0; separate < 2; separate++) {
    uvp_promise_t *ins[3] = {pending(f), pending(f), pending(f)};
    uvp_promise_t *all, *d;
    both_t h = {0};
    void *payload = NULL;

    assert_int_equal(uvp_promise_all(f->ctx, ins, 3, 0, &all), 0);
    assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, both_cb, &h, &d), 0);
    assert_int_equal(
        uvp_promise_reject(ins[2], UV_ETIMEDOUT, SENTINEL(2), NULL), 0);
    if (separate)
      run_loop(f);
    assert_int_equal(uvp_promise_reject(ins[0], UV_ENOENT, SENTINEL(0), NULL),
                     0);
    assert_int_equal(uvp_promise_resolve(ins[1], NULL, NULL), 0);
    run_loop(f);

    assert_int_equal(h.err.calls, 1);
    assert_int_equal(h.ok.calls, 0);
    assert_int_equal(h.err.status, UV_ETIMEDOUT);
    assert_ptr_equal(h.err.value, SENTINEL(2));
    assert_int_equal(uvp_promise_reason(all, &payload), UV_ETIMEDOUT);
    assert_ptr_equal(payload, SENTINEL(2));
    release_all(5, ins[0], ins[1], ins[2], all, d);
  }
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* Inputs already rejected when the call is made are looked at in input
 * order: the first of them in the array wins. */
static void c_settled_rejections_input_order(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[4] = {fulfilled(f, NULL), rejected(f, UV_EPIPE, NULL),
                           rejected(f, UV_EIO, NULL), pending(f)};
  uvp_promise_t *all;

  count_unhandled(f);
  assert_int_equal(uvp_promise_all(f->ctx, ins, 4, 0, &all), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(all), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(all, NULL), UV_EPIPE);
  /* the inputs' rejections were observed by all: none is unhandled; the
   * result, which nobody handled, is */
  release_array(ins, 4);
  assert_int_equal(g_unhandled, 0);
  uvp_promise_release(all);
  assert_int_equal(g_unhandled, 1);
  assert_no_live(f);
}

/* all observes each input through a 16-byte cell instead of a reaction of
 * its own.  Cells sit in inputs' handler lists among ordinary handlers:
 * handlers registered on an input before and after all run in
 * registration order around all's, whose result settles in between; the
 * same input twice holds two cells on one list; and cancelling the result
 * cancels an input only where all's cells are all that observe it. */
static void c_cells_among_handlers(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  rec_t before = {.trace = &t, .mark = 1}, after = {.trace = &t, .mark = 2};
  rec_t done = {.trace = &t, .mark = 3};
  uvp_promise_t *p = pending(f), *q = fulfilled(f, SENTINEL(1));
  uvp_promise_t *ins[3] = {p, q, p};
  uvp_promise_t *all;

  assert_int_equal(uvp_promise_then(p, rec_cb, &before, NULL), 0);
  assert_int_equal(uvp_promise_all(f->ctx, ins, 3, 0, &all), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &after, NULL), 0);
  assert_int_equal(uvp_promise_then(all, rec_cb, &done, NULL), 0);
  run_loop(f);
  assert_int_equal(t.n, 0);
  assert_int_equal(uvp_promise_resolve(p, SENTINEL(0), NULL), 0);
  run_loop(f);
  int want[] = {1, 2, 3};
  assert_int_equal(t.n, 3);
  assert_memory_equal(t.ev, want, sizeof(want));
  uvp_values_t *v = values_of(all);
  assert_int_equal(v->count, 3);
  assert_ptr_equal(v->values[0], SENTINEL(0));
  assert_ptr_equal(v->values[1], SENTINEL(1));
  assert_ptr_equal(v->values[2], SENTINEL(0));
  release_all(3, p, q, all);

  /* Cancel: a (two cells, nothing else) is cancelled; b, which a handler
   * of ours also observes, is not. */
  uvp_promise_t *a = pending(f), *b = pending(f);
  uvp_promise_t *ins2[3] = {a, b, a};
  rec_t other = {0};
  assert_int_equal(uvp_promise_all(f->ctx, ins2, 3, 0, &all), 0);
  assert_int_equal(uvp_promise_then(b, rec_cb, &other, NULL), 0);
  assert_int_equal(uvp_promise_cancel(all), 0);
  assert_int_equal(uvp_promise_reason(all, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(a, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_state(b), UVP_PENDING);
  run_loop(f);
  assert_int_equal(other.calls, 0);
  assert_int_equal(uvp_promise_resolve(b, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(other.calls, 1);
  release_all(3, a, b, all);
  assert_no_live(f);
}

COMBINATOR_ELEMENT_PORTS(&combinators[COMB_ALL])
COMBINATOR_CASES(&combinators[COMB_ALL])
COMBINATOR_FLAG_CASES(&combinators[COMB_ALL])

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(S25_4_4_1_A2_1_T1),
      FIXTURE_TEST(S25_4_4_1_A2_2_T1),
      FIXTURE_TEST(S25_4_4_1_A2_3_T2),
      FIXTURE_TEST(S25_4_4_1_A7_1_T1),
      FIXTURE_TEST(S25_4_4_1_A8_1_T1),
      COMBINATOR_ELEMENT_PORT_TESTS,
      FIXTURE_TEST(new_resolve_function),
      FIXTURE_TEST(same_reject_function),
      FIXTURE_TEST(S25_4_4_1_A8_2_T1),
      FIXTURE_TEST(c_values_in_input_order),
      FIXTURE_TEST(c_first_rejection_in_time),
      FIXTURE_TEST(c_settled_rejections_input_order),
      FIXTURE_TEST(c_cells_among_handlers),
      COMBINATOR_CASE_TESTS,
      COMBINATOR_FLAG_CASE_TESTS,
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
