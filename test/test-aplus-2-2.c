/* Promises/A+ compliance, section 2.2 (the `then` method), ported from
 * promises-aplus/promises-tests lib/tests/2.2.1.js ... 2.2.7.js (current
 * suite: 2.2.5 is the `this` test, 2.2.6 the multiple-`then` tests).
 *
 * Mapping (see include/uvp.h):
 *   resolved(v) / rejected(r)   uvp_promise_resolved / uvp_promise_rejected
 *   pending() + tuple.resolve   uvp_promise_new + uvp_promise_resolve/reject
 *   p.then(f)                   uvp_promise_then (mask UVP_ON_FULFILLED)
 *   p.then(null, r)             uvp_promise_catch (mask UVP_ON_REJECTED)
 *   p.then(f, r)                uvp_promise_on(p, UVP_ON_BOTH, ...), one
 *                               recorder routing rejections to another
 *   return x / throw e          uvp_ret_value(x, dtor) / uvp_ret_reject()
 *   a reason                    a negative code + a payload pointer
 *   setTimeout(fn, ms)          a one-shot uv_timer on the fixture loop
 *   done / setTimeout(done, t)  run the loop until only uvp's unreferenced
 *                               handles are left, then assert
 *   sinon spies / callOrder     recorders with call counts and a trace
 *   sentinel                    a boxed_t whose destructor is counted
 *
 * Cases without a C analogue, mapped to their nearest C meaning:
 *   2.2.1 / 2.2.7.3 / 2.2.7.4: the JS non-function handler values
 *     (`undefined`, `null`, `false`, `5`, an object, an array containing a
 *     function) are all "no handler" in C: a NULL handler or an outcome left
 *     out of the mask; each C spelling is tested once instead of once per JS
 *     value.
 *   2.2.5 (`this` is undefined / global): handlers get only the `arg` given
 *     at registration; the tests check it is passed through unchanged (NULL
 *     for "strict mode", a global's address for "sloppy mode").
 *   2.2.7.1 "see separate 3.3 tests" is an empty JS case (see 2.3 file). */
#include "aplus.h"

/* A handler that, like several JS closures below, registers another handler
 * from inside itself (on `target`), checks that registering did not run it,
 * and only then marks itself finished. */
typedef struct nest_s {
  uvp_promise_t *target;
  int mask;
  rec_t *inner;
  int calls;
  int finished;
  trace_t *trace;
  int id;
} nest_t;

static uvp_ret_t nest_cb(void *arg, const uvp_outcome_t *in) {
  nest_t *n = arg;
  uvp_ret_t zero = {0};
  assert_non_null(in);
  n->calls++;
  if (n->trace != NULL)
    trace_push(n->trace, n->id);
  on(n->target, n->mask, n->inner, NULL);
  assert_not_called(n->inner);
  n->finished = 1;
  return zero;
}

/* Register a handler later, from a timer. */
typedef struct reg_s {
  uvp_promise_t *p;
  int mask;
  rec_t *r;
} reg_t;

static void reg_fire(void *arg) {
  reg_t *g = arg;
  on(g->p, g->mask, g->r, NULL);
}

/* ======================================================================== */
/* 2.2.1: Both `onFulfilled` and `onRejected` are optional arguments.        */
/* ======================================================================== */
/* The five JS non-function values (`undefined`, `null`, `false`, `5`, an
 * object) all have one C meaning: the outcome is left out of the mask, i.e.
 * then(nonFunction, f) is uvp_promise_catch(p, f) and then(f, nonFunction)
 * is uvp_promise_then(p, f).  So each describe() below is one C test rather
 * than five identical ones.  A NULL handler (then(undefined, undefined)) is
 * covered by 2.2.7.3 / 2.2.7.4. */

/* 2.2.1.1: If `onFulfilled` is not a function, it must be ignored.
 * "applied to a directly-rejected promise":
 *   rejected(dummy).then(nonFunction, function () { done(); }) */
static void
t2_2_1_1_onFulfilled_not_a_function__directly_rejected(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, DUMMY, NULL, &p),
                   0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.1.1 "applied to a promise rejected and then chained off of":
 *   rejected(dummy).then(function () {}, undefined)
 *                  .then(nonFunction, function () { done(); }) */
static void
t2_2_1_1_onFulfilled_not_a_function__rejected_then_chained(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  rec_t first = {0}, r = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, DUMMY, NULL, &p),
                   0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &first, &d), 0);
  assert_int_equal(uvp_promise_catch(d, rec_cb, &r, NULL), 0);
  run_loop(f);
  assert_not_called(&first);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  uvp_promise_release(d);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.1.2: If `onRejected` is not a function, it must be ignored.
 * "applied to a directly-fulfilled promise":
 *   resolved(dummy).then(function () { done(); }, nonFunction) */
static void
t2_2_1_2_onRejected_not_a_function__directly_fulfilled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, DUMMY, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.1.2 "applied to a promise fulfilled and then chained off of":
 *   resolved(dummy).then(undefined, function () {})
 *                  .then(function () { done(); }, nonFunction) */
static void
t2_2_1_2_onRejected_not_a_function__fulfilled_then_chained(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  rec_t first = {0}, r = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, DUMMY, NULL, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &first, &d), 0);
  assert_int_equal(uvp_promise_then(d, rec_cb, &r, NULL), 0);
  run_loop(f);
  assert_not_called(&first);
  assert_fulfilled_once(&r, DUMMY);
  uvp_promise_release(d);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* ======================================================================== */
/* 2.2.2: If `onFulfilled` is a function,                                    */
/* ======================================================================== */

/* 2.2.2.1: it must be called after `promise` is fulfilled, with `promise`'s
 * fulfillment value as its first argument.  testFulfilled(sentinel, ...) */
static void t2_2_2_1_called_with_fulfillment_value(fixture_t *f, int how) {
  int freed = 0;
  boxed_t *sentinel = boxed_new(7, &freed);
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, sentinel, boxed_free);
  rec_t r = {0};

  r.watch = &t.settled;
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  tuple_go(&t);
  run_loop(f);
  assert_fulfilled_once(&r, sentinel);
  assert_int_equal(((boxed_t *)r.value)->v, 7);
  assert_ptr_equal(r.promise, p);
  assert_int_equal(r.watched, 1); /* called after `promise` is fulfilled */
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_FULFILLED(t2_2_2_1_called_with_fulfillment_value)

/* 2.2.2.2: it must not be called before `promise` is fulfilled
 * "fulfilled after a delay": isFulfilled is set right after resolve() in the
 * timer callback; onFulfilled must see it set. */
static void
t2_2_2_2_not_called_before_fulfilled__fulfilled_after_a_delay(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  int is_fulfilled = 0;
  rec_t r = {0};

  r.watch = &is_fulfilled;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  settle_after(
      f, EVENTUALLY_MS,
      (settle_t){
          .p = p, .op = OP_RESOLVE, .value = DUMMY, .flag = &is_fulfilled});
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  assert_int_equal(r.watched, 1);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.2.2 "never fulfilled": after 150 ms (here: after the loop has nothing
 * left to do, including a 15 ms timer) onFulfilled has not been called. */
static void
t2_2_2_2_not_called_before_fulfilled__never_fulfilled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  after_ms(f, 15, noop_fn, NULL);
  run_loop(f);
  assert_not_called(&r);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.2.3: it must not be called more than once.  "already-fulfilled" */
static void
t2_2_2_3_not_called_more_than_once__already_fulfilled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, DUMMY, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  run_loop(f);
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.2.3 "trying to fulfill a pending promise more than once, immediately"
 */
static void
t2_2_2_3_not_called_more_than_once__fulfill_twice_immediately(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  settle_now(
      &(settle_t){.p = p, .op = OP_RESOLVE, .value = v, .dtor = boxed_free});
  settle_now(&(settle_t){.p = p,
                         .op = OP_RESOLVE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(freed_other, 1);
  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.2.2.3 "trying to fulfill a pending promise more than once, delayed" */
static void
t2_2_2_3_not_called_more_than_once__fulfill_twice_delayed(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  settle2_after(
      f, EVENTUALLY_MS,
      (settle_t){.p = p, .op = OP_RESOLVE, .value = v, .dtor = boxed_free},
      (settle_t){.p = p,
                 .op = OP_RESOLVE,
                 .value = boxed_new(2, &freed_other),
                 .dtor = boxed_free,
                 .expect = UVP_ESETTLED});
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(freed_other, 1);
  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.2.2.3 "trying to fulfill a pending promise more than once, immediately
 * then delayed" */
static void
t2_2_2_3_not_called_more_than_once__fulfill_immediately_then_delayed(
    void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *v = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  settle_now(
      &(settle_t){.p = p, .op = OP_RESOLVE, .value = v, .dtor = boxed_free});
  settle_after(f, EVENTUALLY_MS,
               (settle_t){.p = p,
                          .op = OP_RESOLVE,
                          .value = boxed_new(2, &freed_other),
                          .dtor = boxed_free,
                          .expect = UVP_ESETTLED});
  run_loop(f);
  assert_fulfilled_once(&r, v);
  assert_int_equal(freed_other, 1);
  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.2.2.3 "when multiple `then` calls are made, spaced apart in time":
 * then at 0, 10 and 20 ms, resolve at 30 ms; each handler runs once. */
static void
t2_2_2_3_not_called_more_than_once__multiple_thens_spaced_apart_in_time(
    void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r[3] = {{0}, {0}, {0}};
  reg_t g1, g2;

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  g1 = (reg_t){p, UVP_ON_FULFILLED, &r[1]};
  g2 = (reg_t){p, UVP_ON_FULFILLED, &r[2]};
  assert_int_equal(uvp_promise_then(p, rec_cb, &r[0], NULL), 0);
  after_ms(f, EVENTUALLY_MS, reg_fire, &g1);
  after_ms(f, 2 * EVENTUALLY_MS, reg_fire, &g2);
  settle_after(f, 3 * EVENTUALLY_MS,
               (settle_t){.p = p, .op = OP_RESOLVE, .value = DUMMY});
  run_loop(f);
  assert_fulfilled_once(&r[0], DUMMY);
  assert_fulfilled_once(&r[1], DUMMY);
  assert_fulfilled_once(&r[2], DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.2.3 "when `then` is interleaved with fulfillment" */
static void t2_2_2_3_not_called_more_than_once__then_interleaved_with_fulfill(
    void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  trace_t tr = {0};
  rec_t r0 = {0}, r1 = {0};

  r0.trace = r1.trace = &tr;
  r0.id = 0;
  r1.id = 1;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r0, NULL), 0);
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE, .value = DUMMY});
  assert_int_equal(uvp_promise_then(p, rec_cb, &r1, NULL), 0);
  run_loop(f);
  assert_fulfilled_once(&r0, DUMMY);
  assert_fulfilled_once(&r1, DUMMY);
  assert_trace(&tr, 2, (const int[]){0, 1});
  uvp_promise_release(p);
  assert_no_live(f);
}

/* ======================================================================== */
/* 2.2.3: If `onRejected` is a function,                                     */
/* ======================================================================== */

/* 2.2.3.1: it must be called after `promise` is rejected, with `promise`'s
 * reason as its first argument.  testRejected(sentinel, ...) — the reason is
 * a code and a payload; both must come through unchanged (same pointer). */
static void t2_2_3_1_called_with_rejection_reason(fixture_t *f, int how) {
  int freed = 0;
  boxed_t *sentinel = boxed_new(7, &freed);
  tuple_t t;
  uvp_promise_t *p =
      tuple_rejected(&t, f, how, UV_ECONNRESET, sentinel, boxed_free);
  rec_t r = {0};

  r.watch = &t.settled;
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  tuple_go(&t);
  run_loop(f);
  assert_rejected_once(&r, UV_ECONNRESET, sentinel);
  assert_ptr_equal(r.promise, p);
  assert_int_equal(r.watched, 1);
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_REJECTED(t2_2_3_1_called_with_rejection_reason)

/* 2.2.3.2: it must not be called more than once.  "already-rejected" */
static void t2_2_3_2_not_called_more_than_once__already_rejected(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, DUMMY, NULL, &p),
                   0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  run_loop(f);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.3.2 "trying to reject a pending promise more than once, immediately" */
static void
t2_2_3_2_not_called_more_than_once__reject_twice_immediately(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = DUMMY_CODE,
                         .value = pl,
                         .dtor = boxed_free});
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = OTHER_CODE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(freed_other, 1);
  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.2.3.2 "trying to reject a pending promise more than once, delayed" */
static void
t2_2_3_2_not_called_more_than_once__reject_twice_delayed(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  settle2_after(f, EVENTUALLY_MS,
                (settle_t){.p = p,
                           .op = OP_REJECT,
                           .code = DUMMY_CODE,
                           .value = pl,
                           .dtor = boxed_free},
                (settle_t){.p = p,
                           .op = OP_REJECT,
                           .code = OTHER_CODE,
                           .value = boxed_new(2, &freed_other),
                           .dtor = boxed_free,
                           .expect = UVP_ESETTLED});
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(freed_other, 1);
  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* 2.2.3.2 "trying to reject a pending promise more than once, immediately
 * then delayed" */
static void t2_2_3_2_not_called_more_than_once__reject_immediately_then_delayed(
    void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_other = 0;
  boxed_t *pl = boxed_new(1, &freed);
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = DUMMY_CODE,
                         .value = pl,
                         .dtor = boxed_free});
  settle_after(f, EVENTUALLY_MS,
               (settle_t){.p = p,
                          .op = OP_REJECT,
                          .code = OTHER_CODE,
                          .value = boxed_new(2, &freed_other),
                          .dtor = boxed_free,
                          .expect = UVP_ESETTLED});
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, pl);
  assert_int_equal(freed_other, 1);
  uvp_promise_release(p);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

/* "2.2.2.3 [sic, in 2.2.3.js]: it must not be called if `onFulfilled` has
 * already been called."  testFulfilled(dummy, ...) with then(onF, onR). */
static void t2_2_3_not_called_if_onFulfilled_was_called(fixture_t *f, int how) {
  int freed = 0;
  boxed_t *v = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, v, boxed_free);
  rec_t onf = {0}, onr = {0};

  onf.on_rej = &onr;
  on(p, UVP_ON_BOTH, &onf, NULL);
  tuple_go(&t);
  run_loop(f);
  assert_fulfilled_once(&onf, v);
  assert_not_called(&onr);
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_FULFILLED(t2_2_3_not_called_if_onFulfilled_was_called)

/* ======================================================================== */
/* 2.2.4: `onFulfilled` or `onRejected` must not be called until the         */
/* execution context stack contains only platform code.                      */
/* ======================================================================== */
/* C: a handler never runs inside the uvp call that registers it or settles
 * its promise, nor inside the handler during which it was registered; it
 * runs later from uvp's libuv handles. */

/* "`then` returns before the promise becomes fulfilled or rejected"
 * (fulfilled: testFulfilled(dummy, ...)) */
static void t2_2_4_then_returns_before_onFulfilled(fixture_t *f, int how) {
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, DUMMY, NULL);
  int then_has_returned = 0;
  rec_t r = {0};

  r.watch = &then_has_returned;
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  assert_not_called(&r);
  then_has_returned = 1;
  tuple_go(&t);
  assert_not_called(&r);
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  assert_int_equal(r.watched, 1);
  tuple_release(&t);
  assert_no_live(f);
}
THREE_FULFILLED(t2_2_4_then_returns_before_onFulfilled)

/* (rejected: testRejected(dummy, ...)) */
static void t2_2_4_then_returns_before_onRejected(fixture_t *f, int how) {
  tuple_t t;
  uvp_promise_t *p = tuple_rejected(&t, f, how, DUMMY_CODE, DUMMY, NULL);
  int then_has_returned = 0;
  rec_t r = {0};

  r.watch = &then_has_returned;
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  assert_not_called(&r);
  then_has_returned = 1;
  tuple_go(&t);
  assert_not_called(&r);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  assert_int_equal(r.watched, 1);
  tuple_release(&t);
  assert_no_live(f);
}
THREE_REJECTED(t2_2_4_then_returns_before_onRejected)

/* Clean-stack execution ordering tests (fulfillment case) */

/* "when `onFulfilled` is added immediately before the promise is fulfilled"
 */
static void
t2_2_4_clean_stack__onFulfilled_added_immediately_before_fulfill(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE, .value = DUMMY});
  assert_not_called(&r);
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when `onFulfilled` is added immediately after the promise is fulfilled" */
static void
t2_2_4_clean_stack__onFulfilled_added_immediately_after_fulfill(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE, .value = DUMMY});
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  assert_not_called(&r);
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when one `onFulfilled` is added inside another `onFulfilled`":
 * var promise = resolved(); the inner one must run after the outer one has
 * finished. */
static void
t2_2_4_clean_stack__onFulfilled_added_inside_onFulfilled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t inner = {0};
  nest_t n = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  n.target = p;
  n.mask = UVP_ON_FULFILLED;
  n.inner = &inner;
  inner.watch = &n.finished;
  assert_int_equal(uvp_promise_then(p, nest_cb, &n, NULL), 0);
  run_loop(f);
  assert_int_equal(n.calls, 1);
  assert_fulfilled_once(&inner, NULL);
  assert_int_equal(inner.watched, 1);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when `onFulfilled` is added inside an `onRejected`":
 * promise = rejected(); promise2 = resolved(); */
static void
t2_2_4_clean_stack__onFulfilled_added_inside_onRejected(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *p2;
  rec_t inner = {0};
  nest_t n = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p2), 0);
  n.target = p2;
  n.mask = UVP_ON_FULFILLED;
  n.inner = &inner;
  inner.watch = &n.finished;
  assert_int_equal(uvp_promise_catch(p, nest_cb, &n, NULL), 0);
  run_loop(f);
  assert_int_equal(n.calls, 1);
  assert_fulfilled_once(&inner, NULL);
  assert_int_equal(inner.watched, 1);
  uvp_promise_release(p2);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when the promise is fulfilled asynchronously": resolve from a 0 ms timer,
 * then set firstStackFinished; the handler must see it set. */
static void t2_2_4_clean_stack__promise_fulfilled_asynchronously(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  int first_stack_finished = 0;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  settle_after(f, 0,
               (settle_t){.p = p,
                          .op = OP_RESOLVE,
                          .value = DUMMY,
                          .flag = &first_stack_finished});
  r.watch = &first_stack_finished;
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, NULL), 0);
  run_loop(f);
  assert_fulfilled_once(&r, DUMMY);
  assert_int_equal(r.watched, 1);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* Clean-stack execution ordering tests (rejection case) */

/* "when `onRejected` is added immediately before the promise is rejected" */
static void
t2_2_4_clean_stack__onRejected_added_immediately_before_reject(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  settle_now(
      &(settle_t){.p = p, .op = OP_REJECT, .code = DUMMY_CODE, .value = DUMMY});
  assert_not_called(&r);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when `onRejected` is added immediately after the promise is rejected" */
static void
t2_2_4_clean_stack__onRejected_added_immediately_after_reject(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  settle_now(
      &(settle_t){.p = p, .op = OP_REJECT, .code = DUMMY_CODE, .value = DUMMY});
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  assert_not_called(&r);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when `onRejected` is added inside an `onFulfilled`":
 * promise = resolved(); promise2 = rejected(); */
static void
t2_2_4_clean_stack__onRejected_added_inside_onFulfilled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *p2;
  rec_t inner = {0};
  nest_t n = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, NULL, NULL, &p2),
                   0);
  n.target = p2;
  n.mask = UVP_ON_REJECTED;
  n.inner = &inner;
  inner.watch = &n.finished;
  assert_int_equal(uvp_promise_then(p, nest_cb, &n, NULL), 0);
  run_loop(f);
  assert_int_equal(n.calls, 1);
  assert_rejected_once(&inner, DUMMY_CODE, NULL);
  assert_int_equal(inner.watched, 1);
  uvp_promise_release(p2);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when one `onRejected` is added inside another `onRejected`":
 * promise = rejected(); */
static void
t2_2_4_clean_stack__onRejected_added_inside_onRejected(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  rec_t inner = {0};
  nest_t n = {0};

  assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, NULL, NULL, &p), 0);
  n.target = p;
  n.mask = UVP_ON_REJECTED;
  n.inner = &inner;
  inner.watch = &n.finished;
  assert_int_equal(uvp_promise_catch(p, nest_cb, &n, NULL), 0);
  run_loop(f);
  assert_int_equal(n.calls, 1);
  assert_rejected_once(&inner, DUMMY_CODE, NULL);
  assert_int_equal(inner.watched, 1);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* "when the promise is rejected asynchronously" */
static void t2_2_4_clean_stack__promise_rejected_asynchronously(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  int first_stack_finished = 0;
  rec_t r = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  settle_after(f, 0,
               (settle_t){.p = p,
                          .op = OP_REJECT,
                          .code = DUMMY_CODE,
                          .value = DUMMY,
                          .flag = &first_stack_finished});
  r.watch = &first_stack_finished;
  assert_int_equal(uvp_promise_catch(p, rec_cb, &r, NULL), 0);
  run_loop(f);
  assert_rejected_once(&r, DUMMY_CODE, DUMMY);
  assert_int_equal(r.watched, 1);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* ======================================================================== */
/* 2.2.5: `onFulfilled` and `onRejected` must be called as functions (i.e.   */
/* with no `this` value).                                                    */
/* ======================================================================== */
/* C has no `this`.  Nearest meaning: a handler is called as a plain function
 * whose only context is the `arg` given at registration, passed through
 * untouched — NULL stays NULL ("strict mode": this === undefined) and a
 * pointer to a global stays that pointer ("sloppy mode": this === global). */
static int this_calls;
static int this_status;
static void *this_arg;
static int the_global;

static uvp_ret_t this_cb(void *arg, const uvp_outcome_t *in) {
  uvp_ret_t zero = {0};
  this_calls++;
  this_arg = arg;
  this_status = in->status;
  return zero;
}

static void this_case(fixture_t *f, int rejected, void *arg) {
  uvp_promise_t *p;
  this_calls = 0;
  this_status = 1;
  this_arg = SENTINEL(7);
  if (rejected) {
    assert_int_equal(uvp_promise_rejected(f->ctx, DUMMY_CODE, DUMMY, NULL, &p),
                     0);
    assert_int_equal(uvp_promise_catch(p, this_cb, arg, NULL), 0);
  } else {
    assert_int_equal(uvp_promise_resolved(f->ctx, DUMMY, NULL, &p), 0);
    assert_int_equal(uvp_promise_then(p, this_cb, arg, NULL), 0);
  }
  run_loop(f);
  assert_int_equal(this_calls, 1);
  assert_int_equal(this_status, rejected ? DUMMY_CODE : 0);
  assert_ptr_equal(this_arg, arg);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 2.2.5 "strict mode" "fulfilled" */
static void t2_2_5_called_as_function__strict_mode__fulfilled(void **state) {
  this_case(*state, 0, NULL);
}
/* 2.2.5 "strict mode" "rejected" */
static void t2_2_5_called_as_function__strict_mode__rejected(void **state) {
  this_case(*state, 1, NULL);
}
/* 2.2.5 "sloppy mode" "fulfilled" */
static void t2_2_5_called_as_function__sloppy_mode__fulfilled(void **state) {
  this_case(*state, 0, &the_global);
}
/* 2.2.5 "sloppy mode" "rejected" */
static void t2_2_5_called_as_function__sloppy_mode__rejected(void **state) {
  this_case(*state, 1, &the_global);
}

/* ======================================================================== */
/* 2.2.6: `then` may be called multiple times on the same promise.           */
/* ======================================================================== */
/* A trace records the call order: handlers 1..3 push 1..3, the final
 * handler pushes 4, the spy (the handler for the other outcome) pushes 99.
 * sinon.stub().returns(other) returns OTHER; .throws(other) rejects with
 * (OTHER_CODE, OTHER). */

/* 2.2.6.1: If/when `promise` is fulfilled, all respective `onFulfilled`
 * callbacks must execute in the order of their originating calls to `then`.
 * "multiple boring fulfillment handlers" */
static void t2_2_6_1_multiple_boring_fulfillment_handlers(fixture_t *f,
                                                          int how) {
  int freed = 0, i;
  boxed_t *sentinel = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, sentinel, boxed_free);
  trace_t tr = {0};
  rec_t spy = {0}, h[3], last = {0};

  spy.trace = last.trace = &tr;
  spy.id = 99;
  last.id = 4;
  for (i = 0; i < 3; i++) {
    h[i] = (rec_t){.trace = &tr,
                   .id = i + 1,
                   .on_rej = &spy,
                   .ret = uvp_ret_value(OTHER, NULL)};
    on(p, UVP_ON_BOTH, &h[i], NULL);
  }
  on(p, UVP_ON_FULFILLED, &last, NULL);
  tuple_go(&t);
  run_loop(f);
  for (i = 0; i < 3; i++)
    assert_fulfilled_once(&h[i], sentinel);
  assert_fulfilled_once(&last, sentinel);
  assert_not_called(&spy);
  assert_trace(&tr, 4, (const int[]){1, 2, 3, 4});
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_FULFILLED(t2_2_6_1_multiple_boring_fulfillment_handlers)

/* 2.2.6.1 "multiple fulfillment handlers, one of which throws".  The
 * promises then() returns are checked as well: the throwing handler's one
 * is rejected with what it threw, the others fulfilled with OTHER. */
static void t2_2_6_1_multiple_fulfillment_handlers_one_throws(fixture_t *f,
                                                              int how) {
  int freed = 0, i;
  boxed_t *sentinel = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, sentinel, boxed_free);
  uvp_promise_t *d[3];
  trace_t tr = {0};
  rec_t spy = {0}, h[3], last = {0}, dr[3];

  spy.trace = last.trace = &tr;
  spy.id = 99;
  last.id = 4;
  for (i = 0; i < 3; i++) {
    h[i] = (rec_t){.trace = &tr,
                   .id = i + 1,
                   .on_rej = &spy,
                   .ret = uvp_ret_value(OTHER, NULL)};
    dr[i] = (rec_t){0};
  }
  h[1].ret = uvp_ret_reject(OTHER_CODE, OTHER, NULL);
  for (i = 0; i < 3; i++)
    on(p, UVP_ON_BOTH, &h[i], &d[i]);
  on(p, UVP_ON_FULFILLED, &last, NULL);
  for (i = 0; i < 3; i++)
    on(d[i], UVP_ON_BOTH, &dr[i], NULL);
  tuple_go(&t);
  run_loop(f);
  for (i = 0; i < 3; i++)
    assert_fulfilled_once(&h[i], sentinel);
  assert_fulfilled_once(&last, sentinel);
  assert_not_called(&spy);
  assert_trace(&tr, 4, (const int[]){1, 2, 3, 4});
  assert_fulfilled_once(&dr[0], OTHER);
  assert_rejected_once(&dr[1], OTHER_CODE, OTHER);
  assert_fulfilled_once(&dr[2], OTHER);
  for (i = 0; i < 3; i++)
    uvp_promise_release(d[i]);
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_FULFILLED(t2_2_6_1_multiple_fulfillment_handlers_one_throws)

/* Three branches off one promise, each with its own outcome:
 * return sentinel / throw sentinel2 / return sentinel3. */
static void branching_chains(fixture_t *f, int how, int rejected) {
  int freed = 0, freed1 = 0, freed2 = 0, freed3 = 0;
  boxed_t *s1 = boxed_new(1, &freed1);
  boxed_t *s2 = boxed_new(2, &freed2);
  boxed_t *s3 = boxed_new(3, &freed3);
  boxed_t *base = boxed_new(0, &freed);
  int mask = rejected ? UVP_ON_REJECTED : UVP_ON_FULFILLED;
  tuple_t t;
  uvp_promise_t *p =
      rejected ? tuple_rejected(&t, f, how, DUMMY_CODE, base, boxed_free)
               : tuple_fulfilled(&t, f, how, base, boxed_free);
  uvp_promise_t *d1, *d2, *d3;
  rec_t a = {0}, b = {0}, c = {0}, a2 = {0}, b2 = {0}, c2 = {0};

  a.ret = uvp_ret_value(s1, boxed_free);
  b.ret = uvp_ret_reject(UV_ECONNABORTED, s2, boxed_free);
  c.ret = uvp_ret_value(s3, boxed_free);
  on(p, mask, &a, &d1);
  on(d1, UVP_ON_FULFILLED, &a2, NULL);
  on(p, mask, &b, &d2);
  on(d2, UVP_ON_REJECTED, &b2, NULL);
  on(p, mask, &c, &d3);
  on(d3, UVP_ON_FULFILLED, &c2, NULL);
  tuple_go(&t);
  run_loop(f);
  if (rejected) {
    assert_rejected_once(&a, DUMMY_CODE, base);
    assert_rejected_once(&b, DUMMY_CODE, base);
    assert_rejected_once(&c, DUMMY_CODE, base);
  } else {
    assert_fulfilled_once(&a, base);
    assert_fulfilled_once(&b, base);
    assert_fulfilled_once(&c, base);
  }
  assert_fulfilled_once(&a2, s1);
  assert_rejected_once(&b2, UV_ECONNABORTED, s2);
  assert_fulfilled_once(&c2, s3);
  uvp_promise_release(d1);
  uvp_promise_release(d2);
  uvp_promise_release(d3);
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
  assert_int_equal(freed1, 1);
  assert_int_equal(freed2, 1);
  assert_int_equal(freed3, 1);
}

/* 2.2.6.1 "results in multiple branching chains with their own fulfillment
 * values" */
static void t2_2_6_1_multiple_branching_chains(fixture_t *f, int how) {
  branching_chains(f, how, 0);
}
THREE_FULFILLED(t2_2_6_1_multiple_branching_chains)

/* 2.2.6.1 "`onFulfilled` handlers are called in the original order" */
static void t2_2_6_1_onFulfilled_called_in_original_order(fixture_t *f,
                                                          int how) {
  int i;
  tuple_t t;
  uvp_promise_t *p = tuple_fulfilled(&t, f, how, DUMMY, NULL);
  trace_t tr = {0};
  rec_t h[3], last = {0};

  last.trace = &tr;
  last.id = 4;
  for (i = 0; i < 3; i++) {
    h[i] = (rec_t){.trace = &tr, .id = i + 1};
    on(p, UVP_ON_FULFILLED, &h[i], NULL);
  }
  on(p, UVP_ON_FULFILLED, &last, NULL);
  tuple_go(&t);
  run_loop(f);
  for (i = 0; i < 3; i++)
    assert_fulfilled_once(&h[i], DUMMY);
  assert_trace(&tr, 4, (const int[]){1, 2, 3, 4});
  tuple_release(&t);
  assert_no_live(f);
}
THREE_FULFILLED(t2_2_6_1_onFulfilled_called_in_original_order)

/* Handler 1 registers handler 3 on the same promise from inside itself;
 * handler 2 and the final handler were registered before handler 3, so the
 * order is 1, 2, final, 3 (JS checks callOrder(h1, h2, h3) after the final
 * handler plus 15 ms; running the loop dry is the C equivalent). */
static void added_inside_another(fixture_t *f, int how, int rejected) {
  int mask = rejected ? UVP_ON_REJECTED : UVP_ON_FULFILLED;
  tuple_t t;
  uvp_promise_t *p = rejected
                         ? tuple_rejected(&t, f, how, DUMMY_CODE, DUMMY, NULL)
                         : tuple_fulfilled(&t, f, how, DUMMY, NULL);
  trace_t tr = {0};
  rec_t h2 = {0}, h3 = {0}, last = {0};
  nest_t h1 = {0};

  h1.target = p;
  h1.mask = mask;
  h1.inner = &h3;
  h1.trace = h2.trace = h3.trace = last.trace = &tr;
  h1.id = 1;
  h2.id = 2;
  h3.id = 3;
  last.id = 4;
  assert_int_equal(uvp_promise_on(p, mask, nest_cb, &h1, NULL), 0);
  on(p, mask, &h2, NULL);
  on(p, mask, &last, NULL);
  tuple_go(&t);
  run_loop(f);
  assert_int_equal(h1.calls, 1);
  if (rejected) {
    assert_rejected_once(&h2, DUMMY_CODE, DUMMY);
    assert_rejected_once(&h3, DUMMY_CODE, DUMMY);
  } else {
    assert_fulfilled_once(&h2, DUMMY);
    assert_fulfilled_once(&h3, DUMMY);
  }
  assert_trace(&tr, 4, (const int[]){1, 2, 4, 3});
  tuple_release(&t);
  assert_no_live(f);
}

/* 2.2.6.1 "`onFulfilled` handlers are called in the original order"
 * "even when one handler is added inside another handler" */
static void t2_2_6_1_original_order_even_when_added_inside_another(fixture_t *f,
                                                                   int how) {
  added_inside_another(f, how, 0);
}
THREE_FULFILLED(t2_2_6_1_original_order_even_when_added_inside_another)

/* 2.2.6.2: If/when `promise` is rejected, all respective `onRejected`
 * callbacks must execute in the order of their originating calls to `then`.
 * "multiple boring rejection handlers" */
static void t2_2_6_2_multiple_boring_rejection_handlers(fixture_t *f, int how) {
  int freed = 0, i;
  boxed_t *sentinel = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p =
      tuple_rejected(&t, f, how, UV_ECONNRESET, sentinel, boxed_free);
  trace_t tr = {0};
  rec_t spy[3], h[3], last = {0};

  last.trace = &tr;
  last.id = 4;
  for (i = 0; i < 3; i++) {
    /* then(spy, handlerN): a spy recorder routing rejections to handlerN */
    h[i] =
        (rec_t){.trace = &tr, .id = i + 1, .ret = uvp_ret_value(OTHER, NULL)};
    spy[i] = (rec_t){.trace = &tr, .id = 99, .on_rej = &h[i]};
    on(p, UVP_ON_BOTH, &spy[i], NULL);
  }
  on(p, UVP_ON_REJECTED, &last, NULL);
  tuple_go(&t);
  run_loop(f);
  for (i = 0; i < 3; i++) {
    assert_rejected_once(&h[i], UV_ECONNRESET, sentinel);
    assert_not_called(&spy[i]);
  }
  assert_rejected_once(&last, UV_ECONNRESET, sentinel);
  assert_trace(&tr, 4, (const int[]){1, 2, 3, 4});
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_REJECTED(t2_2_6_2_multiple_boring_rejection_handlers)

/* 2.2.6.2 "multiple rejection handlers, one of which throws" */
static void t2_2_6_2_multiple_rejection_handlers_one_throws(fixture_t *f,
                                                            int how) {
  int freed = 0, i;
  boxed_t *sentinel = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p =
      tuple_rejected(&t, f, how, UV_ECONNRESET, sentinel, boxed_free);
  uvp_promise_t *d[3];
  trace_t tr = {0};
  rec_t spy[3], h[3], last = {0}, dr[3];

  last.trace = &tr;
  last.id = 4;
  for (i = 0; i < 3; i++) {
    h[i] =
        (rec_t){.trace = &tr, .id = i + 1, .ret = uvp_ret_value(OTHER, NULL)};
    spy[i] = (rec_t){.trace = &tr, .id = 99, .on_rej = &h[i]};
    dr[i] = (rec_t){0};
  }
  h[1].ret = uvp_ret_reject(OTHER_CODE, OTHER, NULL);
  for (i = 0; i < 3; i++)
    on(p, UVP_ON_BOTH, &spy[i], &d[i]);
  on(p, UVP_ON_REJECTED, &last, NULL);
  for (i = 0; i < 3; i++)
    on(d[i], UVP_ON_BOTH, &dr[i], NULL);
  tuple_go(&t);
  run_loop(f);
  for (i = 0; i < 3; i++) {
    assert_rejected_once(&h[i], UV_ECONNRESET, sentinel);
    assert_not_called(&spy[i]);
  }
  assert_rejected_once(&last, UV_ECONNRESET, sentinel);
  assert_trace(&tr, 4, (const int[]){1, 2, 3, 4});
  assert_fulfilled_once(&dr[0], OTHER);
  assert_rejected_once(&dr[1], OTHER_CODE, OTHER);
  assert_fulfilled_once(&dr[2], OTHER);
  for (i = 0; i < 3; i++)
    uvp_promise_release(d[i]);
  tuple_release(&t);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}
THREE_REJECTED(t2_2_6_2_multiple_rejection_handlers_one_throws)

/* 2.2.6.2 "results in multiple branching chains with their own fulfillment
 * values" (as in the current suite: the returned values fulfil the
 * branches; an older suite version wrongly expected rejections there) */
static void t2_2_6_2_multiple_branching_chains(fixture_t *f, int how) {
  branching_chains(f, how, 1);
}
THREE_REJECTED(t2_2_6_2_multiple_branching_chains)

/* 2.2.6.2 "`onRejected` handlers are called in the original order" */
static void t2_2_6_2_onRejected_called_in_original_order(fixture_t *f,
                                                         int how) {
  int i;
  tuple_t t;
  uvp_promise_t *p = tuple_rejected(&t, f, how, DUMMY_CODE, DUMMY, NULL);
  trace_t tr = {0};
  rec_t h[3], last = {0};

  last.trace = &tr;
  last.id = 4;
  for (i = 0; i < 3; i++) {
    h[i] = (rec_t){.trace = &tr, .id = i + 1};
    on(p, UVP_ON_REJECTED, &h[i], NULL);
  }
  on(p, UVP_ON_REJECTED, &last, NULL);
  tuple_go(&t);
  run_loop(f);
  for (i = 0; i < 3; i++)
    assert_rejected_once(&h[i], DUMMY_CODE, DUMMY);
  assert_trace(&tr, 4, (const int[]){1, 2, 3, 4});
  tuple_release(&t);
  assert_no_live(f);
}
THREE_REJECTED(t2_2_6_2_onRejected_called_in_original_order)

/* 2.2.6.2 "`onRejected` handlers are called in the original order"
 * "even when one handler is added inside another handler" */
static void t2_2_6_2_original_order_even_when_added_inside_another(fixture_t *f,
                                                                   int how) {
  added_inside_another(f, how, 1);
}
THREE_REJECTED(t2_2_6_2_original_order_even_when_added_inside_another)

/* ======================================================================== */
/* 2.2.7: `then` must return a promise:                                      */
/* `promise2 = promise1.then(onFulfilled, onRejected)`                       */
/* ======================================================================== */

/* 2.2.7 "is a promise": promise1.then() on a pending promise */
static void t2_2_7_is_a_promise(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p1, *p2 = NULL, *p3 = NULL;

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_then(p1, NULL, NULL, &p2), 0);
  assert_non_null(p2);
  assert_ptr_not_equal(p2, p1);
  assert_int_equal(uvp_promise_state(p2), UVP_PENDING);
  assert_ptr_equal(uvp_promise_ctx(p2), f->ctx);
  /* ...and it has a working then */
  assert_int_equal(uvp_promise_then(p2, NULL, NULL, &p3), 0);
  assert_non_null(p3);
  uvp_promise_release(p3);
  uvp_promise_release(p2);
  uvp_promise_release(p1);
  assert_no_live(f);
}

/* 2.2.7.1: If either `onFulfilled` or `onRejected` returns a value `x`, run
 * the Promise Resolution Procedure `[[Resolve]](promise2, x)` — "see separate
 * 3.3 tests": the JS case is empty; the procedure is tested in
 * test-aplus-2-3.c. */

/* 2.2.7.2: If either `onFulfilled` or `onRejected` throws an exception `e`,
 * `promise2` must be rejected with `e` as the reason.
 *
 * "throw e" is `return uvp_ret_reject(code, payload, dtor)`, for every
 * reason of helpers/reasons.js (reason_t in aplus.h). */
static void t2_2_7_2(fixture_t *f, int how, int rejected, int which) {
  reason_t r;
  tuple_t t;
  uvp_promise_t *p1, *p2;
  rec_t h = {0}, c = {0};

  reason_make(f, which, &r);
  p1 = rejected ? tuple_rejected(&t, f, how, DUMMY_CODE, DUMMY, NULL)
                : tuple_fulfilled(&t, f, how, DUMMY, NULL);
  h.ret = uvp_ret_reject(r.code, r.payload, r.dtor);
  on(p1, rejected ? UVP_ON_REJECTED : UVP_ON_FULFILLED, &h, &p2);
  on(p2, UVP_ON_REJECTED, &c, NULL); /* promise2.then(null, ...) */
  tuple_go(&t);
  run_loop(f);
  if (rejected)
    assert_rejected_once(&h, DUMMY_CODE, DUMMY);
  else
    assert_fulfilled_once(&h, DUMMY);
  assert_rejected_once(&c, r.expect, r.payload);
  assert_ptr_equal(c.promise, p2);
  uvp_promise_release(p2);
  tuple_release(&t);
  reason_finish(f, &r);
}

/* "The reason is <name>": testFulfilled(dummy) + testRejected(dummy) */
#define T2272_DEFINE(which, name)                                              \
  SIX_CASES(t2_2_7_2, t2_2_7_2_reason_is_##name, which)
#define T2272_TESTS(which, name) SIX_CASES_TESTS(t2_2_7_2_reason_is_##name),

REASONS(T2272_DEFINE)

/* 2.2.7.3: If `onFulfilled` is not a function and `promise1` is fulfilled,
 * `promise2` must be fulfilled with the same value.
 * JS non-functions (`undefined`, `null`, `false`, `5`, an object, an array
 * containing a function) have three C spellings, each tested:
 *   NULL handler:              uvp_promise_then(p1, NULL, ...)
 *   outcome not in the mask:   uvp_promise_catch(p1, spy, ...)
 *   NULL for both outcomes:    uvp_promise_on(p1, UVP_ON_BOTH, NULL, ...)
 * "The same value" is the same pointer, shared (destroyed once). */
enum { NF_NULL, NF_NOT_IN_MASK, NF_BOTH_NULL };

static void t2_2_7_3(fixture_t *f, int how, int spelling) {
  int freed = 0;
  boxed_t *sentinel = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p1 = tuple_fulfilled(&t, f, how, sentinel, boxed_free);
  uvp_promise_t *p2;
  rec_t spy = {0}, r = {0};

  switch (spelling) {
  case NF_NULL:
    on(p1, UVP_ON_FULFILLED, NULL, &p2);
    break;
  case NF_NOT_IN_MASK:
    on(p1, UVP_ON_REJECTED, &spy, &p2);
    break;
  default:
    on(p1, UVP_ON_BOTH, NULL, &p2);
    break;
  }
  on(p2, UVP_ON_FULFILLED, &r, NULL);
  tuple_go(&t);
  run_loop(f);
  assert_not_called(&spy);
  assert_fulfilled_once(&r, sentinel);
  assert_ptr_equal(r.promise, p2);
  assert_ptr_equal(uvp_promise_value(p2), sentinel);
  tuple_release(&t);
  assert_int_equal(freed, 0); /* p2 still shares it */
  uvp_promise_release(p2);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

static void t2_2_7_3_onFulfilled_is_NULL(fixture_t *f, int how) {
  t2_2_7_3(f, how, NF_NULL);
}
THREE_FULFILLED(t2_2_7_3_onFulfilled_is_NULL)
static void t2_2_7_3_onFulfilled_not_in_mask(fixture_t *f, int how) {
  t2_2_7_3(f, how, NF_NOT_IN_MASK);
}
THREE_FULFILLED(t2_2_7_3_onFulfilled_not_in_mask)
static void t2_2_7_3_both_handlers_NULL(fixture_t *f, int how) {
  t2_2_7_3(f, how, NF_BOTH_NULL);
}
THREE_FULFILLED(t2_2_7_3_both_handlers_NULL)

/* 2.2.7.4: If `onRejected` is not a function and `promise1` is rejected,
 * `promise2` must be rejected with the same reason (same code, same payload
 * pointer, destroyed once).  Same three C spellings. */
static void t2_2_7_4(fixture_t *f, int how, int spelling) {
  int freed = 0;
  boxed_t *sentinel = boxed_new(1, &freed);
  tuple_t t;
  uvp_promise_t *p1 =
      tuple_rejected(&t, f, how, UV_ECONNRESET, sentinel, boxed_free);
  uvp_promise_t *p2;
  rec_t spy = {0}, r = {0};
  void *payload = NULL;

  switch (spelling) {
  case NF_NULL:
    on(p1, UVP_ON_REJECTED, NULL, &p2);
    break;
  case NF_NOT_IN_MASK:
    on(p1, UVP_ON_FULFILLED, &spy, &p2);
    break;
  default:
    on(p1, UVP_ON_BOTH, NULL, &p2);
    break;
  }
  on(p2, UVP_ON_REJECTED, &r, NULL);
  tuple_go(&t);
  run_loop(f);
  assert_not_called(&spy);
  assert_rejected_once(&r, UV_ECONNRESET, sentinel);
  assert_ptr_equal(r.promise, p2);
  assert_int_equal(uvp_promise_reason(p2, &payload), UV_ECONNRESET);
  assert_ptr_equal(payload, sentinel);
  tuple_release(&t);
  assert_int_equal(freed, 0); /* p2 still shares it */
  uvp_promise_release(p2);
  assert_no_live(f);
  assert_int_equal(freed, 1);
}

static void t2_2_7_4_onRejected_is_NULL(fixture_t *f, int how) {
  t2_2_7_4(f, how, NF_NULL);
}
THREE_REJECTED(t2_2_7_4_onRejected_is_NULL)
static void t2_2_7_4_onRejected_not_in_mask(fixture_t *f, int how) {
  t2_2_7_4(f, how, NF_NOT_IN_MASK);
}
THREE_REJECTED(t2_2_7_4_onRejected_not_in_mask)
static void t2_2_7_4_both_handlers_NULL(fixture_t *f, int how) {
  t2_2_7_4(f, how, NF_BOTH_NULL);
}
THREE_REJECTED(t2_2_7_4_both_handlers_NULL)

int main(void) {
  const struct CMUnitTest tests[] = {
      /* 2.2.1 */
      FIXTURE_TEST(t2_2_1_1_onFulfilled_not_a_function__directly_rejected),
      FIXTURE_TEST(t2_2_1_1_onFulfilled_not_a_function__rejected_then_chained),
      FIXTURE_TEST(t2_2_1_2_onRejected_not_a_function__directly_fulfilled),
      FIXTURE_TEST(t2_2_1_2_onRejected_not_a_function__fulfilled_then_chained),
      /* 2.2.2 */
      THREE_FULFILLED_TESTS(t2_2_2_1_called_with_fulfillment_value),
      FIXTURE_TEST(
          t2_2_2_2_not_called_before_fulfilled__fulfilled_after_a_delay),
      FIXTURE_TEST(t2_2_2_2_not_called_before_fulfilled__never_fulfilled),
      FIXTURE_TEST(t2_2_2_3_not_called_more_than_once__already_fulfilled),
      FIXTURE_TEST(
          t2_2_2_3_not_called_more_than_once__fulfill_twice_immediately),
      FIXTURE_TEST(t2_2_2_3_not_called_more_than_once__fulfill_twice_delayed),
      FIXTURE_TEST(
          t2_2_2_3_not_called_more_than_once__fulfill_immediately_then_delayed),
      FIXTURE_TEST(
          t2_2_2_3_not_called_more_than_once__multiple_thens_spaced_apart_in_time),
      FIXTURE_TEST(
          t2_2_2_3_not_called_more_than_once__then_interleaved_with_fulfill),
      /* 2.2.3 */
      THREE_REJECTED_TESTS(t2_2_3_1_called_with_rejection_reason),
      FIXTURE_TEST(t2_2_3_2_not_called_more_than_once__already_rejected),
      FIXTURE_TEST(
          t2_2_3_2_not_called_more_than_once__reject_twice_immediately),
      FIXTURE_TEST(t2_2_3_2_not_called_more_than_once__reject_twice_delayed),
      FIXTURE_TEST(
          t2_2_3_2_not_called_more_than_once__reject_immediately_then_delayed),
      THREE_FULFILLED_TESTS(t2_2_3_not_called_if_onFulfilled_was_called),
      /* 2.2.4 */
      THREE_FULFILLED_TESTS(t2_2_4_then_returns_before_onFulfilled),
      THREE_REJECTED_TESTS(t2_2_4_then_returns_before_onRejected),
      FIXTURE_TEST(
          t2_2_4_clean_stack__onFulfilled_added_immediately_before_fulfill),
      FIXTURE_TEST(
          t2_2_4_clean_stack__onFulfilled_added_immediately_after_fulfill),
      FIXTURE_TEST(t2_2_4_clean_stack__onFulfilled_added_inside_onFulfilled),
      FIXTURE_TEST(t2_2_4_clean_stack__onFulfilled_added_inside_onRejected),
      FIXTURE_TEST(t2_2_4_clean_stack__promise_fulfilled_asynchronously),
      FIXTURE_TEST(
          t2_2_4_clean_stack__onRejected_added_immediately_before_reject),
      FIXTURE_TEST(
          t2_2_4_clean_stack__onRejected_added_immediately_after_reject),
      FIXTURE_TEST(t2_2_4_clean_stack__onRejected_added_inside_onFulfilled),
      FIXTURE_TEST(t2_2_4_clean_stack__onRejected_added_inside_onRejected),
      FIXTURE_TEST(t2_2_4_clean_stack__promise_rejected_asynchronously),
      /* 2.2.5 */
      FIXTURE_TEST(t2_2_5_called_as_function__strict_mode__fulfilled),
      FIXTURE_TEST(t2_2_5_called_as_function__strict_mode__rejected),
      FIXTURE_TEST(t2_2_5_called_as_function__sloppy_mode__fulfilled),
      FIXTURE_TEST(t2_2_5_called_as_function__sloppy_mode__rejected),
      /* 2.2.6 */
      THREE_FULFILLED_TESTS(t2_2_6_1_multiple_boring_fulfillment_handlers),
      THREE_FULFILLED_TESTS(t2_2_6_1_multiple_fulfillment_handlers_one_throws),
      THREE_FULFILLED_TESTS(t2_2_6_1_multiple_branching_chains),
      THREE_FULFILLED_TESTS(t2_2_6_1_onFulfilled_called_in_original_order),
      THREE_FULFILLED_TESTS(
          t2_2_6_1_original_order_even_when_added_inside_another),
      THREE_REJECTED_TESTS(t2_2_6_2_multiple_boring_rejection_handlers),
      THREE_REJECTED_TESTS(t2_2_6_2_multiple_rejection_handlers_one_throws),
      THREE_REJECTED_TESTS(t2_2_6_2_multiple_branching_chains),
      THREE_REJECTED_TESTS(t2_2_6_2_onRejected_called_in_original_order),
      THREE_REJECTED_TESTS(
          t2_2_6_2_original_order_even_when_added_inside_another),
      /* 2.2.7 */
      FIXTURE_TEST(t2_2_7_is_a_promise),
      REASONS(T2272_TESTS) THREE_FULFILLED_TESTS(t2_2_7_3_onFulfilled_is_NULL),
      THREE_FULFILLED_TESTS(t2_2_7_3_onFulfilled_not_in_mask),
      THREE_FULFILLED_TESTS(t2_2_7_3_both_handlers_NULL),
      THREE_REJECTED_TESTS(t2_2_7_4_onRejected_is_NULL),
      THREE_REJECTED_TESTS(t2_2_7_4_onRejected_not_in_mask),
      THREE_REJECTED_TESTS(t2_2_7_4_both_handlers_NULL),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
