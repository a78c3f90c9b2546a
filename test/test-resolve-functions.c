/* test262 resolving functions, Promise.resolve and Promise.reject, ported
 * to uvp.
 *
 * Sources (tc39/test262):
 *   test/built-ins/Promise/ (files)   the executor's resolve / reject
 *                                     (resolve-*, reject-*, exception-after-
 *                                     resolve-*, S25.4.3.1_*)
 *   test/built-ins/Promise/resolve-function/, reject-function/
 *   test/built-ins/Promise/resolve/   Promise.resolve
 *   test/built-ins/Promise/reject/    Promise.reject
 * Each test is named after the file it ports (dashes and dots as
 * underscores; a "resolve__" / "reject__" prefix for the files of the
 * resolve/ and reject/ directories).  Tests whose name starts with "c_" are
 * C-specific additions: the [[AlreadyResolved]] rule of
 * CreateResolvingFunctions, which test262 spreads over the files above, is
 * spelled out for every pair of calls.
 *
 * Mapping (see the top of include/uvp.h):
 *   new Promise(executor)       uvp_promise_new; the executor's calls are
 *                               made right after it ("immed": before any
 *                               reaction is registered, "deferred": after)
 *   resolve(v)                  uvp_promise_resolve(p, v, dtor)
 *   resolve(promise)            uvp_promise_resolve_with(p, promise)
 *   reject(e) / executor throws uvp_promise_reject(p, code, payload, dtor)
 *   resolve function returns undefined
 *                               the call returns 0; an ignored call returns
 *                               UVP_ESETTLED and leaves the value with us
 *   TypeError (self-resolution) UVP_ECYCLE
 *   Promise.resolve(v)          uvp_promise_resolved
 *   Promise.reject(e)           uvp_promise_rejected
 *   "non-thenable object"       a value that happens to point at a uvp
 *                               promise, passed as a plain value: uvp adopts
 *                               only through resolve_with / uvp_ret_adopt,
 *                               never by looking at a value
 *
 * Skipped groups (no C analogue):
 *   resolve-function/ and reject-function/ (length, name, prop-desc,
 *   nonconstructor, prototype, extensible, property-order) and the
 *   resolve-function-*.js / reject-function-*.js / executor-function-*.js
 *   files, create-resolving-functions-*.js
 *     - properties of the JS function objects; uvp's resolving functions are
 *       plain C functions.
 *   S25.4.3.1_A1.1_T1, S25.4.3.1_A2.*, S25.4.3.1_A3.1_T1, S25.4.3.1_A5.1_T*,
 *   undefined-newtarget.js, get-prototype-abrupt*.js, proto-from-ctor-realm.js,
 *   exec-args.js, executor-call-context-*.js
 *     - the constructor's receiver / NewTarget / executor validation and its
 *       `this`: uvp has no executor.
 *   resolve-poisoned-then-immed.js, resolve-poisoned-then-deferred.js,
 *   resolve-prms-cstm-then-immed.js, resolve-prms-cstm-then-deferred.js,
 *   exception-after-resolve-in-thenable-job.js
 *     - a `then` getter that throws / an overwritten `then` method /
 *       thenables: uvp adopts only uvp promises and looks nothing up.
 *   reject-via-abrupt.js, reject-via-abrupt-queue.js
 *     - "the executor throws" is the same C call as reject-via-fn-immed.js /
 *       reject-via-fn-immed-queue.js, which are ported.
 *   resolve/: S25.4.4.5_A1.1_T1, S25.4.4.5_A1.2_T1, length, name, prop-desc,
 *   not-a-constructor, capability-*, context-non-object-with-promise,
 *   ctx-*, resolve-from-promise-capability, arg-uniq-ctor, resolve-self.js
 *   (a custom capability whose promise is the argument), arg-poisoned-then,
 *   resolve-poisoned-then, resolve-prms-cstm-then, resolve-thenable,
 *   S25.4.4.5_A3.1_T1, S25.Promise_resolve_foreign_thenable_*
 *     - function properties, custom constructors/capabilities, and foreign
 *       thenables.  The identity half of S25.4.4.5_A2.*_T1
 *       (Promise.resolve(p) === p) has no analogue either: its following
 *       half is ported with uvp_promise_resolve_with.
 *   reject/: S25.4.4.4_A1.1_T1, S25.4.4.4_A3.1_T1, length, name, prop-desc,
 *   not-a-constructor, capability-*, ctx-*
 *     - the same reasons.
 *
 * uvp difference (deliberate): resolve_with on an already-settled promise
 * settles p at once, without JavaScript's NewPromiseResolveThenableJob and
 * reaction job; c_resolve_with_settled_no_thenable_job_ticks pins uvp's
 * order and states the JavaScript order next to it. */
#include "test262.h"

/* ------------------------------------------------------------------------ */
/* The executor's resolve                                                    */
/* ------------------------------------------------------------------------ */

/* resolve-self.js: resolving a promise with itself rejects it (TypeError);
 * the call itself succeeds (it "returns undefined"). */
static void resolve_self(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(uvp_promise_resolve_with(p, p), 0);
  assert_int_equal(h.ok.calls + h.err.calls, 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UVP_ECYCLE);
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECYCLE);
  /* already resolved: the functions are spent */
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), UVP_ESETTLED);
  release_all(2, p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolve/S25.4.4.5_A4.1_T1.js: a self-resolved promise rejects with
 * TypeError — resolved before the reaction is registered. */
static void resolve__S25_4_4_5_A4_1_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve_with(p, p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UVP_ECYCLE);
  assert_ptr_equal(h.err.from, p);
  release_all(2, p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolve-thenable-immed.js / resolve-thenable-deferred.js: resolving with
 * a fulfilled promise fulfils with its value (shared, destroyed once). */
static void resolve_thenable_case(fixture_t *f, int deferred) {
  int freed = 0;
  boxed_t *value = boxed_new(1, &freed);
  uvp_promise_t *thenable, *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &thenable), 0);
  assert_int_equal(uvp_promise_resolve(thenable, value, boxed_free), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  if (!deferred)
    assert_int_equal(uvp_promise_resolve_with(p, thenable), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  if (deferred) {
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0);
    assert_int_equal(uvp_promise_resolve_with(p, thenable), 0);
  }
  assert_int_equal(h.ok.calls + h.err.calls, 0);
  run_loop(f);

  assert_int_equal(h.err.calls, 0);
  assert_int_equal(h.ok.calls, 1);
  assert_ptr_equal(h.ok.value, value);
  /* resolve_with borrows: our reference to the thenable is still ours */
  uvp_promise_release(thenable);
  assert_int_equal(freed, 0);
  assert_ptr_equal(uvp_promise_value(p), value);
  release_all(2, p, d);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

static void resolve_thenable_immed(void **state) {
  resolve_thenable_case(*state, 0);
}
static void resolve_thenable_deferred(void **state) {
  resolve_thenable_case(*state, 1);
}

/* resolve-non-obj-immed.js / resolve-non-obj-deferred.js */
static void resolve_non_obj_case(fixture_t *f, int deferred) {
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  if (!deferred)
    assert_int_equal(uvp_promise_resolve(p, INT_VALUE(45), NULL), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  if (deferred) {
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0);
    assert_int_equal(uvp_promise_resolve(p, INT_VALUE(45), NULL), 0);
  }
  run_loop(f);

  assert_int_equal(h.err.calls, 0);
  assert_int_equal(h.ok.calls, 1);
  assert_ptr_equal(h.ok.value, INT_VALUE(45));
  release_all(2, p, d);
  assert_no_live(f);
}

static void resolve_non_obj_immed(void **state) {
  resolve_non_obj_case(*state, 0);
}
static void resolve_non_obj_deferred(void **state) {
  resolve_non_obj_case(*state, 1);
}

/* resolve-non-thenable-immed.js / resolve-non-thenable-deferred.js: an
 * object that is not a thenable is a plain value.  The C analogue: a value
 * that points at a (forever pending) uvp promise is not adopted — p fulfils
 * with the pointer itself, whose destructor runs once. */
static void resolve_non_thenable_case(fixture_t *f, int deferred) {
  uvp_promise_t *other, *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &other), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  if (!deferred)
    assert_int_equal(
        uvp_promise_resolve(p, uvp_promise_retain(other), release_promise), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  if (deferred) {
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0);
    assert_int_equal(
        uvp_promise_resolve(p, uvp_promise_retain(other), release_promise), 0);
  }
  run_loop(f);

  assert_int_equal(h.err.calls, 0);
  assert_int_equal(h.ok.calls, 1);
  assert_ptr_equal(h.ok.value, other);
  assert_int_equal(uvp_promise_state(other), UVP_PENDING);
  release_all(3, p, d, other); /* p's value drops the last reference */
  assert_no_live(f);
}

static void resolve_non_thenable_immed(void **state) {
  resolve_non_thenable_case(*state, 0);
}
static void resolve_non_thenable_deferred(void **state) {
  resolve_non_thenable_case(*state, 1);
}

/* ------------------------------------------------------------------------ */
/* The executor's reject                                                     */
/* ------------------------------------------------------------------------ */

/* reject-via-fn-immed.js / reject-via-fn-deferred.js and their -queue.js
 * variants: rejecting with a promise as the reason rejects with the promise
 * itself (a reason is never adopted); through p.then(f) the rejection passes
 * on unchanged to the next onRejected. */
static void reject_via_fn_case(fixture_t *f, int deferred, int queue) {
  uvp_promise_t *thenable, *p, *d1, *d2;
  rec_t never = {0};
  both_t h = {0};

  count_unhandled(f);
  /* var thenable = new Promise(function() {}); */
  assert_int_equal(uvp_promise_new(f->ctx, &thenable), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  if (!deferred)
    assert_int_equal(uvp_promise_reject(p, UV_EIO, uvp_promise_retain(thenable),
                                        release_promise),
                     0);
  if (queue) {
    assert_int_equal(uvp_promise_then(p, rec_cb, &never, &d1), 0);
    assert_int_equal(uvp_promise_on(d1, UVP_ON_BOTH, both_cb, &h, &d2), 0);
  } else {
    d1 = NULL;
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d2), 0);
  }
  if (deferred) {
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0);
    assert_int_equal(uvp_promise_reject(p, UV_EIO, uvp_promise_retain(thenable),
                                        release_promise),
                     0);
  }
  run_loop(f);

  assert_int_equal(never.calls, 0);
  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UV_EIO);
  assert_ptr_equal(h.err.value, thenable);
  assert_int_equal(uvp_promise_state(thenable), UVP_PENDING);
  release_all(4, thenable, p, d1, d2);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

static void reject_via_fn_immed(void **state) {
  reject_via_fn_case(*state, 0, 0);
}
static void reject_via_fn_deferred(void **state) {
  reject_via_fn_case(*state, 1, 0);
}
static void reject_via_fn_immed_queue(void **state) {
  reject_via_fn_case(*state, 0, 1);
}
static void reject_via_fn_deferred_queue(void **state) {
  reject_via_fn_case(*state, 1, 1);
}

/* reject-ignored-via-fn-immed.js / reject-ignored-via-fn-deferred.js:
 * after resolve, reject is ignored (UVP_ESETTLED; the payload stays ours). */
static void reject_ignored_case(fixture_t *f, int deferred) {
  int freed = 0;
  boxed_t *payload = boxed_new(1, &freed);
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  if (!deferred) {
    assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
    assert_int_equal(uvp_promise_reject(p, UV_EIO, payload, boxed_free),
                     UVP_ESETTLED);
  }
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  if (deferred) {
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0);
    assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
    assert_int_equal(uvp_promise_reject(p, UV_EIO, payload, boxed_free),
                     UVP_ESETTLED);
  }
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  release_all(2, p, d);
  /* Refused, and freed by the refusal (uvp.h, "Handing over"). */
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

static void reject_ignored_via_fn_immed(void **state) {
  reject_ignored_case(*state, 0);
}
static void reject_ignored_via_fn_deferred(void **state) {
  reject_ignored_case(*state, 1);
}

/* reject-ignored-via-abrupt.js: `resolve(); throw thenable;` — the
 * executor's abrupt completion calls reject, which is ignored. */
static void reject_ignored_via_abrupt(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *thenable, *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &thenable), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, thenable, release_promise),
                   UVP_ESETTLED);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  /* The refused reject let go of the reference to thenable it was
   * handed (uvp.h, "Handing over"): ours is gone. */
  release_all(2, p, d);
  assert_no_live(f);
}

/* exception-after-resolve-in-executor.js: an exception after resolve(v)
 * does not reject; v is kept and destroyed once. */
static void exception_after_resolve_in_executor(void **state) {
  fixture_t *f = *state;
  int freed = 0, freed_err = 0;
  boxed_t *value = boxed_new(1, &freed);
  boxed_t *err = boxed_new(2, &freed_err);
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, value, boxed_free), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, err, boxed_free),
                   UVP_ESETTLED); /* and err freed */
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  assert_ptr_equal(h.ok.value, value);
  release_all(2, p, d);
  assert_int_equal(freed, 1);
  assert_int_equal(freed_err, 1);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* [[AlreadyResolved]]: every later call is ignored                          */
/* ------------------------------------------------------------------------ */

/* resolve after resolve, and reject after reject: the first outcome stays;
 * the ignored calls return UVP_ESETTLED and free their values (uvp.h,
 * "Handing over"). */
static void c_already_resolved_after_settle(void **state) {
  fixture_t *f = *state;
  int freed_a = 0, freed_b = 0, freed_c = 0, freed_d = 0;
  boxed_t *a = boxed_new(1, &freed_a), *c = boxed_new(3, &freed_c);
  uvp_promise_t *p, *q, *other;
  void *payload = NULL;

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &other), 0);

  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, a, boxed_free), 0);
  assert_int_equal(uvp_promise_resolve(p, boxed_new(2, &freed_b), boxed_free),
                   UVP_ESETTLED);
  assert_int_equal(
      uvp_promise_reject(p, UV_EIO, boxed_new(2, &freed_b), boxed_free),
      UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve_with(p, other), UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve_with(p, p), UVP_ESETTLED);
  assert_ptr_equal(uvp_promise_value(p), a);

  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  assert_int_equal(uvp_promise_reject(q, UV_EPIPE, c, boxed_free), 0);
  assert_int_equal(
      uvp_promise_reject(q, UV_EIO, boxed_new(4, &freed_d), boxed_free),
      UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve(q, boxed_new(4, &freed_d), boxed_free),
                   UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve_with(q, other), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reason(q, &payload), UV_EPIPE);
  assert_ptr_equal(payload, c);
  run_loop(f);

  assert_int_equal(freed_b + freed_d, 4); /* each freed by its refusal */
  assert_int_equal(uvp_promise_state(other), UVP_PENDING);
  release_all(2, p, other);
  assert_int_equal(freed_a, 1);
  uvp_promise_release(q); /* rejected, never handled */
  assert_int_equal(g_unhandled, 1);
  assert_int_equal(freed_c, 1);
  assert_no_live(f);
}

/* resolve(pendingPromise) already resolves p: later resolve / reject /
 * resolve_with are ignored although p is still pending, and p then takes
 * the outcome of the promise it follows (fulfilment and rejection). */
static void already_resolved_following_case(fixture_t *f, int src_ok) {
  int freed_v = 0, freed_x = 0;
  boxed_t *v = boxed_new(1, &freed_v);
  uvp_promise_t *src, *p, *other, *d;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &src), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &other), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(uvp_promise_resolve_with(p, src), 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(p, boxed_new(2, &freed_x), boxed_free),
                   UVP_ESETTLED);
  assert_int_equal(
      uvp_promise_reject(p, UV_EIO, boxed_new(2, &freed_x), boxed_free),
      UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve_with(p, other), UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve_with(p, p), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(h.ok.calls + h.err.calls, 0);

  if (src_ok)
    assert_int_equal(uvp_promise_resolve(src, v, boxed_free), 0);
  else
    assert_int_equal(uvp_promise_reject(src, UV_EPIPE, v, boxed_free), 0);
  run_loop(f);

  if (src_ok) {
    assert_int_equal(h.ok.calls, 1);
    assert_int_equal(h.err.calls, 0);
    assert_ptr_equal(h.ok.value, v);
  } else {
    assert_int_equal(h.ok.calls, 0);
    assert_int_equal(h.err.calls, 1);
    assert_int_equal(h.err.status, UV_EPIPE);
    assert_ptr_equal(h.err.value, v);
  }
  /* still spent once settled */
  assert_int_equal(uvp_promise_resolve(p, boxed_new(2, &freed_x), boxed_free),
                   UVP_ESETTLED);
  assert_int_equal(freed_x, 3); /* each refused value freed at once */
  release_all(4, src, other, p, d);
  assert_int_equal(freed_v, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

static void c_already_resolved_while_following_fulfilled(void **state) {
  already_resolved_following_case(*state, 1);
}
static void c_already_resolved_while_following_rejected(void **state) {
  already_resolved_following_case(*state, 0);
}

/* Resolving p with a promise that waits for p: JavaScript would leave both
 * pending forever; uvp rejects p with UVP_ECYCLE (header,
 * uvp_promise_resolve_with), and what waits for p follows. */
static void c_resolve_with_cycle(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *q, *r;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, NULL, NULL, &q), 0); /* q waits on p */
  assert_int_equal(uvp_promise_on(q, UVP_ON_BOTH, both_cb, &h, &r), 0);
  assert_int_equal(uvp_promise_resolve_with(p, q), 0);
  run_loop(f);

  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECYCLE);
  assert_int_equal(uvp_promise_reason(q, NULL), UVP_ECYCLE);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UVP_ECYCLE);
  release_all(3, p, q, r);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Promise.resolve                                                           */
/* ------------------------------------------------------------------------ */

/* resolve/S25.4.4.5_A2.2_T1.js (following half): a promise resolved with an
 * unsettled promise fulfils when that one does. */
static void resolve__S25_4_4_5_A2_2_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p1, *p2, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p2), 0);
  assert_int_equal(uvp_promise_resolve_with(p2, p1), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(uvp_promise_resolve(p1, SENTINEL(1), NULL), 0);
  run_loop(f);

  assert_int_equal(h.err.calls, 0);
  assert_int_equal(h.ok.calls, 1);
  assert_ptr_equal(h.ok.value, SENTINEL(1));
  release_all(3, p1, p2, d);
  assert_no_live(f);
}

/* resolve/S25.4.4.5_A2.3_T1.js (following half): ... and rejects when that
 * one rejects. */
static void resolve__S25_4_4_5_A2_3_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p1, *p2, *d;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p2), 0);
  assert_int_equal(uvp_promise_resolve_with(p2, p1), 0);
  assert_int_equal(uvp_promise_on(p2, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(uvp_promise_reject(p1, UV_EIO, SENTINEL(1), NULL), 0);
  run_loop(f);

  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UV_EIO);
  assert_ptr_equal(h.err.value, SENTINEL(1));
  release_all(3, p1, p2, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolve/resolve-non-obj.js: Promise.resolve(45) is fulfilled with 45; the
 * handler still runs later, not inside then(). */
static void resolve__resolve_non_obj(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, INT_VALUE(45), NULL, &p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(h.ok.calls, 0);
  run_loop(f);
  assert_int_equal(h.ok.calls, 1);
  assert_int_equal(h.err.calls, 0);
  assert_ptr_equal(h.ok.value, INT_VALUE(45));
  release_all(2, p, d);
  assert_no_live(f);
}

/* resolve/resolve-non-thenable.js, resolve/arg-non-thenable.js:
 * Promise.resolve(obj) fulfils with obj, which is destroyed once, with the
 * last reference. */
static void resolve__resolve_non_thenable(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *obj = boxed_new(1, &freed);
  uvp_promise_t *p, *d;
  both_t h = {0};

  assert_int_equal(uvp_promise_resolved(f->ctx, obj, boxed_free, &p), 0);
  assert_ptr_equal(uvp_promise_value(p), obj);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  run_loop(f);
  assert_int_equal(h.ok.calls, 1);
  assert_ptr_equal(h.ok.value, obj);
  uvp_promise_release(d);
  assert_int_equal(freed, 0);
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Promise.reject                                                            */
/* ------------------------------------------------------------------------ */

/* reject/S25.4.4.4_A2.1_T1.js: Promise.reject(3) creates a rejected promise
 * whose onRejected gets the reason. */
static void reject__S25_4_4_4_A2_1_T1(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *reason = boxed_new(3, &freed);
  uvp_promise_t *p, *d;
  both_t h = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, reason, boxed_free, &p),
                   0);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  assert_int_equal(h.err.calls, 0);
  run_loop(f);
  assert_int_equal(h.ok.calls, 0);
  assert_int_equal(h.err.calls, 1);
  assert_int_equal(h.err.status, UV_EIO);
  assert_ptr_equal(h.err.value, reason);
  assert_int_equal(((boxed_t *)h.err.value)->v, 3);
  release_all(2, p, d);
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* C-specific: a reason is a negative code; anything else is UV_EINVAL and
 * changes nothing (the payload stays ours, the promise pending). */
static void c_reject_code_must_be_negative(void **state) {
  fixture_t *f = *state;
  int freed = 0;
  boxed_t *payload = boxed_new(1, &freed);
  uvp_promise_t *p = NULL, *q;

  assert_int_equal(uvp_promise_rejected(f->ctx, 0, payload, boxed_free, &p),
                   UV_EINVAL);
  assert_int_equal(freed, 1); /* freed by the refusal */
  assert_int_equal(
      uvp_promise_rejected(f->ctx, 1, boxed_new(1, &freed), boxed_free, &p),
      UV_EINVAL);
  assert_null(p);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  assert_int_equal(uvp_promise_reject(q, 0, boxed_new(1, &freed), boxed_free),
                   UV_EINVAL);
  assert_int_equal(uvp_promise_state(q), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(q, NULL, NULL), 0);
  run_loop(f);
  uvp_promise_release(q);
  assert_int_equal(freed, 3);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* uvp's documented difference                                               */
/* ------------------------------------------------------------------------ */

/* C-specific: resolving with an already-settled promise.
 *
 *   p = new Promise(r => r(q));   // q already fulfilled
 *   p.then(() => push(10));
 *   o.then(push 1).then(push 2).then(push 3);   // o = Promise.resolve()
 *
 * JavaScript: p stays pending until NewPromiseResolveThenableJob and then
 * q.then's reaction have run, and logs 1, 2, 10, 3.  uvp settles p inside
 * resolve_with, so p's handler is queued at registration: 10, 1, 2, 3. */
static void c_resolve_with_settled_no_thenable_job_ticks(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *q, *p, *o, *pd, *o1, *o2, *o3;
  rec_t rp = {.trace = &t, .mark = 10};
  rec_t r1 = {.trace = &t, .mark = 1}, r2 = {.trace = &t, .mark = 2},
        r3 = {.trace = &t, .mark = 3};

  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(1), NULL, &q), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &o), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve_with(p, q), 0);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED); /* JS: pending */
  assert_int_equal(uvp_promise_then(p, rec_cb, &rp, &pd), 0);
  assert_int_equal(uvp_promise_then(o, rec_cb, &r1, &o1), 0);
  assert_int_equal(uvp_promise_then(o1, rec_cb, &r2, &o2), 0);
  assert_int_equal(uvp_promise_then(o2, rec_cb, &r3, &o3), 0);
  assert_int_equal(t.n, 0);
  run_loop(f);

  expect_trace(&t, 4, 10, 1, 2, 3);
  assert_ptr_equal(rp.value, SENTINEL(1));
  release_all(7, q, p, o, pd, o1, o2, o3);
  assert_no_live(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(resolve_self),
      FIXTURE_TEST(resolve__S25_4_4_5_A4_1_T1),
      FIXTURE_TEST(resolve_thenable_immed),
      FIXTURE_TEST(resolve_thenable_deferred),
      FIXTURE_TEST(resolve_non_obj_immed),
      FIXTURE_TEST(resolve_non_obj_deferred),
      FIXTURE_TEST(resolve_non_thenable_immed),
      FIXTURE_TEST(resolve_non_thenable_deferred),
      FIXTURE_TEST(reject_via_fn_immed),
      FIXTURE_TEST(reject_via_fn_deferred),
      FIXTURE_TEST(reject_via_fn_immed_queue),
      FIXTURE_TEST(reject_via_fn_deferred_queue),
      FIXTURE_TEST(reject_ignored_via_fn_immed),
      FIXTURE_TEST(reject_ignored_via_fn_deferred),
      FIXTURE_TEST(reject_ignored_via_abrupt),
      FIXTURE_TEST(exception_after_resolve_in_executor),
      FIXTURE_TEST(c_already_resolved_after_settle),
      FIXTURE_TEST(c_already_resolved_while_following_fulfilled),
      FIXTURE_TEST(c_already_resolved_while_following_rejected),
      FIXTURE_TEST(c_resolve_with_cycle),
      FIXTURE_TEST(resolve__S25_4_4_5_A2_2_T1),
      FIXTURE_TEST(resolve__S25_4_4_5_A2_3_T1),
      FIXTURE_TEST(resolve__resolve_non_obj),
      FIXTURE_TEST(resolve__resolve_non_thenable),
      FIXTURE_TEST(reject__S25_4_4_4_A2_1_T1),
      FIXTURE_TEST(c_reject_code_must_be_negative),
      FIXTURE_TEST(c_resolve_with_settled_no_thenable_job_ticks),
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
