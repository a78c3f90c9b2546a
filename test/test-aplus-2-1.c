/* Promises/A+ compliance, section 2.1 (promise states), ported from
 * promises-aplus/promises-tests lib/tests/2.1.2.js and 2.1.3.js.
 *
 * Mapping (see include/uvp.h):
 *   resolved(v) / rejected(r)   uvp_promise_resolved / uvp_promise_rejected
 *   pending() + tuple.resolve   uvp_promise_new + uvp_promise_resolve/reject
 *   then(onFulfilled, onRejected)  uvp_promise_on(p, UVP_ON_BOTH, ...)
 *   setTimeout(fn, ms)          a one-shot uv_timer on the fixture loop
 *   "done" / setTimeout(done, 100)  run the loop until only uvp's unreferenced
 *                               handles are left, then assert
 *   dummy                       a boxed_t whose destructor is counted
 * In C a second settling call is not silently ignored: it returns
 * UVP_ESETTLED and frees the value it was given (uvp.h, "Handing over"),
 * which the tests check too (the value is destroyed exactly once).
 *
 * Every JS case is ported; none is skipped.  Test names follow the JS
 * describe/specify titles. */
#include "aplus.h"

/* ======================================================================== */
/* 2.1.2: When fulfilled, a promise must not transition to any other state  */
/* ======================================================================== */

/* "2.1.2.1: When fulfilled, a promise: must not transition to any other
 * state." testFulfilled(dummy, ...): then(onFulfilled, onRejected); onRejected
 * must never run.  Then the C analogue of "trying": once fulfilled, resolve
 * and reject both fail with UVP_ESETTLED and change nothing. */
static void t2_1_2_1_must_not_transition(fixture_t *f, int how) {
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, v, boxed_free);
  rec_t r = {0};

  on(p, UVP_ON_BOTH, &r, NULL);
  tuple_go(&t);
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_ptr_equal(r.promise, p);

  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = OTHER_CODE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  settle_now(&(settle_t){.p = p,
                         .op = OP_RESOLVE,
                         .value = boxed_new(3, &freed_other),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(p), v);
  assert_int_equal(uvp_promise_reason(p, NULL), 0);
  assert_int_equal(freed_other, 2);

  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_FULFILLED(t2_1_2_1_must_not_transition)

/* 2.1.2.1 "trying to fulfill then immediately reject" */
static void t2_1_2_1_trying_to_fulfill_then_immediately_reject(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  on(p, UVP_ON_BOTH, &r, NULL);
  settle_now(
      &(settle_t){.p = p, .op = OP_RESOLVE, .value = v, .dtor = boxed_free});
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = OTHER_CODE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  assert_not_called(&r);
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(freed_other, 1);

  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.1.2.1 "trying to fulfill then reject, delayed" */
static void t2_1_2_1_trying_to_fulfill_then_reject_delayed(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  on(p, UVP_ON_BOTH, &r, NULL);
  settle2_after(
      f, EVENTUALLY_MS,
      (settle_t){.p = p, .op = OP_RESOLVE, .value = v, .dtor = boxed_free},
      (settle_t){.p = p,
                 .op = OP_REJECT,
                 .code = OTHER_CODE,
                 .value = boxed_new(2, &freed_other),
                 .dtor = boxed_free,
                 .expect = UVP_ESETTLED});
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(freed_other, 1);

  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.1.2.1 "trying to fulfill immediately then reject delayed" */
static void
t2_1_2_1_trying_to_fulfill_immediately_then_reject_delayed(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  on(p, UVP_ON_BOTH, &r, NULL);
  settle_now(
      &(settle_t){.p = p, .op = OP_RESOLVE, .value = v, .dtor = boxed_free});
  settle_after(f, EVENTUALLY_MS,
               (settle_t){.p = p,
                          .op = OP_REJECT,
                          .code = OTHER_CODE,
                          .value = boxed_new(2, &freed_other),
                          .dtor = boxed_free,
                          .expect = UVP_ESETTLED});
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(freed_other, 1);

  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* ======================================================================== */
/* 2.1.3: When rejected, a promise must not transition to any other state   */
/* ======================================================================== */

/* "2.1.3.1: When rejected, a promise: must not transition to any other
 * state." testRejected(dummy, ...): onFulfilled must never run. */
static void t2_1_3_1_must_not_transition(fixture_t *f, int how) {
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p = tuple_rejected(&t, f, how, DUMMY_CODE, pl, boxed_free);
  rec_t r = {0};
  void *payload = NULL;

  on(p, UVP_ON_BOTH, &r, NULL);
  tuple_go(&t);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_ptr_equal(r.promise, p);

  try_resolve_then_reject(p, &freed_other);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(p, &payload), DUMMY_CODE);
  assert_ptr_equal(payload, pl);
  assert_null(uvp_promise_value(p));
  assert_int_equal(freed_other, 2);

  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_REJECTED(t2_1_3_1_must_not_transition)

/* 2.1.3.1 "trying to reject then immediately fulfill" */
static void t2_1_3_1_trying_to_reject_then_immediately_fulfill(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  on(p, UVP_ON_BOTH, &r, NULL);
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = DUMMY_CODE,
                         .value = pl,
                         .dtor = boxed_free});
  settle_now(&(settle_t){.p = p,
                         .op = OP_RESOLVE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  assert_not_called(&r);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(freed_other, 1);

  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.1.3.1 "trying to reject then fulfill, delayed" */
static void t2_1_3_1_trying_to_reject_then_fulfill_delayed(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  on(p, UVP_ON_BOTH, &r, NULL);
  settle2_after(f, EVENTUALLY_MS,
                (settle_t){.p = p,
                           .op = OP_REJECT,
                           .code = DUMMY_CODE,
                           .value = pl,
                           .dtor = boxed_free},
                (settle_t){.p = p,
                           .op = OP_RESOLVE,
                           .value = boxed_new(2, &freed_other),
                           .dtor = boxed_free,
                           .expect = UVP_ESETTLED});
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(freed_other, 1);

  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.1.3.1 "trying to reject immediately then fulfill delayed" */
static void
t2_1_3_1_trying_to_reject_immediately_then_fulfill_delayed(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  on(p, UVP_ON_BOTH, &r, NULL);
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = DUMMY_CODE,
                         .value = pl,
                         .dtor = boxed_free});
  settle_after(f, EVENTUALLY_MS,
               (settle_t){.p = p,
                          .op = OP_RESOLVE,
                          .value = boxed_new(2, &freed_other),
                          .dtor = boxed_free,
                          .expect = UVP_ESETTLED});
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(freed_other, 1);

  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      THREE_FULFILLED_TESTS(t2_1_2_1_must_not_transition),
      FIXTURE_TEST(t2_1_2_1_trying_to_fulfill_then_immediately_reject),
      FIXTURE_TEST(t2_1_2_1_trying_to_fulfill_then_reject_delayed),
      FIXTURE_TEST(t2_1_2_1_trying_to_fulfill_immediately_then_reject_delayed),
      THREE_REJECTED_TESTS(t2_1_3_1_must_not_transition),
      FIXTURE_TEST(t2_1_3_1_trying_to_reject_then_immediately_fulfill),
      FIXTURE_TEST(t2_1_3_1_trying_to_reject_then_fulfill_delayed),
      FIXTURE_TEST(t2_1_3_1_trying_to_reject_immediately_then_fulfill_delayed),
  };
  (void)sentinel_storage; /* helpers.h: unused when SENTINEL() is not */
  return cmocka_run_group_tests(tests, NULL, NULL);
}
