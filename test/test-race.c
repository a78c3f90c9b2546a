/* test262 Promise.race, ported to uvp (uvp_promise_race).
 *
 * Source: tc39/test262, every file of test/built-ins/Promise/race/ that the
 * reference index holds (33 files).  Each test is named after the file it
 * ports (dashes and dots as underscores); tests whose name starts with "c_"
 * are C-specific additions from the issue "Combinators" and
 * uvp_promise_race's comment in include/uvp.h; those every combinator
 * shares are written once, in combinator-cases.h.
 *
 * Mapping (see the top of include/uvp.h and test262.h):
 *   Promise.race([...])         uvp_promise_race(ctx, inputs, n, 0, &out)
 *   the winner's value/reason   shared, not copied: the result's value (or
 *                               payload) is the winning input's pointer
 *   a thenable calling resolve/reject at once / later
 *                               an input already settled / a pending input
 *                               settled later (uvp adopts no thenables)
 *   calling resolve or reject again
 *                               settling the same input again: UVP_ESETTLED
 *   Promise.race.call(Constructor, ...) with a recording resolve
 *                               a handler on the result counting its calls
 *
 * Skipped (no C analogue):
 *   S25.4.4.3_A1.1_T1.js (is callable), S25.4.4.3_A1.2_T1.js (not
 *   enumerable), length.js, name.js, prop-desc.js, not-a-constructor.js,
 *   anySettled.js (race is the same function object as anySettled)
 *     - function object properties and identities.
 *   S25.4.4.3_A3.1_T2.js, species-get-error.js, resolve-non-callable.js,
 *   resolve-not-callable-close.js, invoke-resolve-on-promises-every-iteration-
 *   of-custom.js, invoke-resolve-on-promises-every-iteration-of-promise.js,
 *   invoke-resolve-on-values-every-iteration-of-promise.js
 *     - `this` / NewPromiseCapability and the constructor's `resolve`
 *       (Promise.resolve called once per element): uvp has one promise type,
 *       creates the result itself and takes promises, not values to coerce.
 *   S25.4.4.3_A4.1_T1.js, iter-arg-is-string-resolve.js,
 *   resolve-throws-iterator-return-is-not-callable.js
 *     - the iterator protocol and strings as iterables: inputs are a typed C
 *       array.  (The stored iter-arg-is-string-resolve.js expects race("")
 *       to fulfil, which it never does; the empty input is
 *       S25_4_4_3_A5_1_T1.)
 *   resolve-from-same-thenable.js and reject-from-same-thenable.js check that
 *   race itself does not stop the capability's resolve from being called
 *   three times; in C the input can be settled only once (the second and
 *   third calls return UVP_ESETTLED) and the result settles once: that is
 *   what the ports check.
 *   same-resolve-function.js and same-reject-function.js compare function
 *   identities; the port checks their consequence: any input's outcome
 *   settles the one result.
 *
 * resolved-sequence-mixed.js: the race rejects (its first input is
 * rejected), so its `.then(() => push(6))` never runs and the outer
 * Promise.all rejects; the file passes in JavaScript only because $DONE('')
 * treats the empty rejection reason as success.  The port asserts what
 * actually happens: trace 1..4, handler 6 never called, outer all rejected
 * with the race's reason. */
#include "combinator-cases.h"

/* ------------------------------------------------------------------------ */
/* Helpers of this file                                                     */
/* ------------------------------------------------------------------------ */

/* Promise.resolve().then(3).then(5) with sequence checks: the ticks test262
 * counts against. */
typedef struct ticks_s {
  uvp_promise_t *r, *d1, *d2;
  rec_t r3, r5;
} ticks_t;

static void ticks_start(fixture_t *f, ticks_t *k, trace_t *t) {
  k->r3 = (rec_t){.trace = t, .mark = 3, .seq = 1};
  k->r5 = (rec_t){.trace = t, .mark = 5, .seq = 1};
  k->r = fulfilled(f, NULL);
  assert_int_equal(uvp_promise_then(k->r, rec_cb, &k->r3, &k->d1), 0);
  assert_int_equal(uvp_promise_then(k->d1, rec_cb, &k->r5, &k->d2), 0);
}

static void ticks_release(ticks_t *k) { release_all(3, k->r, k->d1, k->d2); }

/* ------------------------------------------------------------------------ */
/* The empty input                                                           */
/* ------------------------------------------------------------------------ */

/* S25.4.4.3_A5.1_T1.js: race([]) never settles, not even after three
 * ticks; teardown still frees it. */
static void S25_4_4_3_A5_1_T1(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d, *r, *t1, *t2, *t3;
  both_t h = {0};
  rec_t done = {0};

  assert_int_equal(uvp_promise_race(f->ctx, NULL, 0, 0, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  r = fulfilled(f, NULL);
  assert_int_equal(uvp_promise_then(r, NULL, NULL, &t1), 0);
  assert_int_equal(uvp_promise_then(t1, NULL, NULL, &t2), 0);
  assert_int_equal(uvp_promise_then(t2, rec_cb, &done, &t3), 0);
  run_loop(f);

  assert_int_equal(done.calls, 1);
  assert_int_equal(h.ok.calls + h.err.calls, 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  release_all(6, p, d, r, t1, t2, t3);
  /* the pending result keeps itself alive until teardown, which frees it
   * (the fixture proves the loop closes; valgrind that nothing leaks) */
  assert_int_not_equal(live_count(f), 0);
}

/* ------------------------------------------------------------------------ */
/* Settling like the first input                                             */
/* ------------------------------------------------------------------------ */

/* S25.4.4.3_A6.2_T1.js: race([rejected 1]) settles "immediately": its
 * rejection handler (4) runs between ticks 3 and 5. */
static void S25_4_4_3_A6_2_T1(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *p1 = rejected(f, UV_EIO, INT_VALUE(1));
  uvp_promise_t *p, *d;
  both_t h = {0};
  ticks_t k;

  count_unhandled(f);
  assert_int_equal(uvp_promise_race(f->ctx, &p1, 1, 0, &p), 0);
  trace_push(&t, 1);
  h.err = (rec_t){.trace = &t, .mark = 4, .seq = 1};
  h.ok = (rec_t){.trace = &t, .mark = -1};
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  ticks_start(f, &k, &t);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_int_equal(h.err.status, UV_EIO);
  assert_ptr_equal(h.err.value, INT_VALUE(1));
  ticks_release(&k);
  release_all(3, p1, p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* S25.4.4.3_A7.1_T1.js (both fulfilled: 1 wins), S25.4.4.3_A7.1_T2.js (p2
 * never settles: 1), S25.4.4.3_A7.1_T3.js (p1 never settles: 2),
 * S25.4.4.3_A7.2_T1.js (p1 rejected with 1, p2 fulfilled: rejects with 1). */
typedef struct a7_case_s {
  int p1; /* 0 fulfilled 1, 1 pending, 2 rejected 1 */
  int p2; /* 0 fulfilled 2, 1 pending */
  int status;
  void *value;
} a7_case_t;

static void a7_run(fixture_t *f, const a7_case_t *c) {
  trace_t t = {0};
  uvp_promise_t *ins[2], *p, *d;
  both_t h = {0};
  ticks_t k;

  count_unhandled(f);
  ins[0] = c->p1 == 0   ? fulfilled(f, INT_VALUE(1))
           : c->p1 == 1 ? pending(f)
                        : rejected(f, UV_EIO, INT_VALUE(1));
  ins[1] = c->p2 == 0 ? fulfilled(f, INT_VALUE(2)) : pending(f);
  assert_int_equal(uvp_promise_race(f->ctx, ins, 2, 0, &p), 0);
  trace_push(&t, 1);
  h.ok = (rec_t){.trace = &t, .mark = c->status == 0 ? 4 : -1, .seq = 1};
  h.err = (rec_t){.trace = &t, .mark = c->status != 0 ? 4 : -1, .seq = 1};
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
  ticks_start(f, &k, &t);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  rec_t *won = c->status == 0 ? &h.ok : &h.err;
  assert_int_equal(won->calls, 1);
  assert_int_equal(won->status, c->status);
  assert_ptr_equal(won->value, c->value);
  ticks_release(&k);
  release_all(4, ins[0], ins[1], p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

static void S25_4_4_3_A7_1_T1(void **state) {
  a7_case_t c = {0, 0, 0, INT_VALUE(1)};
  a7_run(*state, &c);
}

static void S25_4_4_3_A7_1_T2(void **state) {
  a7_case_t c = {0, 1, 0, INT_VALUE(1)};
  a7_run(*state, &c);
}

static void S25_4_4_3_A7_1_T3(void **state) {
  a7_case_t c = {1, 0, 0, INT_VALUE(2)};
  a7_run(*state, &c);
}

static void S25_4_4_3_A7_2_T1(void **state) {
  a7_case_t c = {2, 0, UV_EIO, INT_VALUE(1)};
  a7_run(*state, &c);
}

/* resolve-from-same-thenable.js, reject-from-same-thenable.js: the input
 * settled three times (two fail): the result settles once, like the first. */
static void resolve_from_same_thenable(void **state) {
  fixture_t *f = *state;

  count_unhandled(f);
  for (int reject = 0; reject < 2; reject++) {
    uvp_promise_t *a = pending(f);
    uvp_promise_t *p, *d;
    both_t h = {0};

    assert_int_equal(uvp_promise_race(f->ctx, &a, 1, 0, &p), 0);
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
    run_loop(f);
    assert_int_equal(h.ok.calls + h.err.calls, 0);
    for (int i = 1; i <= 3; i++) {
      int rc = reject ? uvp_promise_reject(a, -i, INT_VALUE(i), NULL)
                      : uvp_promise_resolve(a, INT_VALUE(i), NULL);
      assert_int_equal(rc, i == 1 ? 0 : UVP_ESETTLED);
    }
    run_loop(f);

    rec_t *r = reject ? &h.err : &h.ok;
    assert_int_equal(h.ok.calls + h.err.calls, 1);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->status, reject ? -1 : 0);
    assert_ptr_equal(r->value, INT_VALUE(1));
    release_all(3, a, p, d);
  }
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolve-ignores-late-rejection-deferred.js: resolver fulfils with 42
 * later; lateRejector, later still, resolves with 9 and then rejects (which
 * fails): the race fulfils with 42. */
static void resolve_ignores_late_rejection_deferred(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[2] = {pending(f), pending(f)};
  uvp_promise_t *tick = fulfilled(f, NULL);
  uvp_promise_t *p, *d, *dt;
  rec_t r = {0};

  assert_int_equal(uvp_promise_race(f->ctx, ins, 2, 0, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, &d), 0);
  assert_int_equal(uvp_promise_then(tick, settle_both_cb, ins, &dt), 0);
  run_loop(f);

  assert_int_equal(r.calls, 1);
  assert_ptr_equal(r.value, INT_VALUE(42));
  assert_ptr_equal(uvp_promise_value(p), INT_VALUE(42));
  release_all(6, ins[0], ins[1], tick, p, d, dt);
  assert_no_live(f);
}

/* same-resolve-function.js, same-reject-function.js: every input settles
 * the same result: whichever input settles first decides it. */
static void same_resolve_function(void **state) {
  fixture_t *f = *state;

  count_unhandled(f);
  for (int which = 0; which < 4; which++) {
    uvp_promise_t *ins[2] = {pending(f), pending(f)};
    uvp_promise_t *p, *d;
    both_t h = {0};
    int idx = which & 1, fail = which >> 1;

    assert_int_equal(uvp_promise_race(f->ctx, ins, 2, 0, &p), 0);
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, both_cb, &h, &d), 0);
    if (fail)
      assert_int_equal(
          uvp_promise_reject(ins[idx], UV_EIO, SENTINEL(idx), NULL), 0);
    else
      assert_int_equal(uvp_promise_resolve(ins[idx], SENTINEL(idx), NULL), 0);
    run_loop(f);

    rec_t *r = fail ? &h.err : &h.ok;
    assert_int_equal(h.ok.calls + h.err.calls, 1);
    assert_int_equal(r->calls, 1);
    assert_ptr_equal(r->value, SENTINEL(idx));
    assert_int_equal(uvp_promise_state(ins[!idx]), UVP_PENDING);
    release_all(4, ins[0], ins[1], p, d);
  }
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* Sequences (each wrapped in Promise.all as the files do)                   */
/* ------------------------------------------------------------------------ */

/* resolved-sequence.js: a, b fulfilled; all([a.then (3), race([a, b]).then
 * (5), b.then (4)]) fulfils after 1..5. */
static void resolved_sequence(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *a = fulfilled(f, SENTINEL(0)), *b = fulfilled(f, SENTINEL(1));
  uvp_promise_t *ab[2] = {a, b};
  uvp_promise_t *race, *parts[3], *all;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  trace_push(&t, 1);
  assert_int_equal(uvp_promise_then(a, rec_cb, &r3, &parts[0]), 0);
  assert_int_equal(uvp_promise_race(f->ctx, ab, 2, 0, &race), 0);
  assert_int_equal(uvp_promise_then(race, rec_cb, &r5, &parts[1]), 0);
  assert_int_equal(uvp_promise_then(b, rec_cb, &r4, &parts[2]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, parts, 3, 0, &all), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_ptr_equal(r5.value, SENTINEL(0));
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  release_all(7, a, b, race, parts[0], parts[1], parts[2], all);
  assert_no_live(f);
}

/* resolved-sequence-with-rejections.js: a, b rejected; catch handlers 3, 5
 * (on the race), 4. */
static void resolved_sequence_with_rejections(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *a = rejected(f, UV_EIO, SENTINEL(0));
  uvp_promise_t *b = rejected(f, UV_EPIPE, SENTINEL(1));
  uvp_promise_t *ab[2] = {a, b};
  uvp_promise_t *race, *parts[3], *all;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  count_unhandled(f);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_catch(a, rec_cb, &r3, &parts[0]), 0);
  assert_int_equal(uvp_promise_race(f->ctx, ab, 2, 0, &race), 0);
  assert_int_equal(uvp_promise_catch(race, rec_cb, &r5, &parts[1]), 0);
  assert_int_equal(uvp_promise_catch(b, rec_cb, &r4, &parts[2]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, parts, 3, 0, &all), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_int_equal(r5.status, UV_EIO);
  assert_ptr_equal(r5.value, SENTINEL(0));
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  release_all(7, a, b, race, parts[0], parts[1], parts[2], all);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolved-sequence-mixed.js: a rejected, b fulfilled, c rejected: the race
 * rejects like a, so handler 6 never runs (see the note at the top). */
static void resolved_sequence_mixed(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *a = rejected(f, UV_EIO, SENTINEL(0));
  uvp_promise_t *b = fulfilled(f, SENTINEL(1));
  uvp_promise_t *c = rejected(f, UV_EPIPE, SENTINEL(2));
  uvp_promise_t *abc[3] = {a, b, c};
  uvp_promise_t *race, *parts[3], *all, *d;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4, .seq = 1};
  rec_t r6 = {.trace = &t, .mark = 6, .seq = 1};
  both_t fin = {0};

  count_unhandled(f);
  trace_push(&t, 1);
  assert_int_equal(uvp_promise_catch(a, rec_cb, &r3, &parts[0]), 0);
  assert_int_equal(uvp_promise_race(f->ctx, abc, 3, 0, &race), 0);
  assert_int_equal(uvp_promise_then(race, rec_cb, &r6, &parts[1]), 0);
  assert_int_equal(uvp_promise_then(b, rec_cb, &r4, &parts[2]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, parts, 3, 0, &all), 0);
  assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, both_cb, &fin, &d), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 4);
  assert_int_equal(r6.calls, 0);
  assert_int_equal(uvp_promise_reason(race, NULL), UV_EIO);
  assert_int_equal(fin.ok.calls, 0);
  assert_int_equal(fin.err.calls, 1);
  assert_int_equal(fin.err.status, UV_EIO);
  assert_ptr_equal(fin.err.value, SENTINEL(0));
  release_all(9, a, b, c, race, parts[0], parts[1], parts[2], all, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* resolved-sequence-extra-ticks.js: all([race([a]).then (4), a.then (3)
 * .then (5)]). */
static void resolved_sequence_extra_ticks(void **state) {
  fixture_t *f = *state;
  trace_t t = {0};
  uvp_promise_t *a = fulfilled(f, SENTINEL(0));
  uvp_promise_t *race, *parts[2], *mid, *all;
  rec_t r3 = {.trace = &t, .mark = 3, .seq = 1};
  rec_t r4 = {.trace = &t, .mark = 4};
  rec_t r5 = {.trace = &t, .mark = 5, .seq = 1};

  trace_push(&t, 1);
  assert_int_equal(uvp_promise_race(f->ctx, &a, 1, 0, &race), 0);
  assert_int_equal(uvp_promise_then(race, rec_cb, &r4, &parts[0]), 0);
  assert_int_equal(uvp_promise_then(a, rec_cb, &r3, &mid), 0);
  assert_int_equal(uvp_promise_then(mid, rec_cb, &r5, &parts[1]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, parts, 2, 0, &all), 0);
  trace_push(&t, 2);
  run_loop(f);

  check_sequence(&t, 5);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  release_all(6, a, race, parts[0], parts[1], mid, all);
  assert_no_live(f);
}

/* resolved-then-catch-finally.js: inputs made by then / catch / finally
 * chains; the first to settle is a = reject('a').catch(v => v): 'a'. */
static uvp_ret_t identity_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value(in->value, NULL);
}

static uvp_ret_t rethrow_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_reject(UV_EIO, in->value, NULL);
}

static uvp_ret_t j_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value(in->status == 0 ? in->value : SENTINEL(7), NULL);
}

static void resolved_then_catch_finally(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *base[9], *ins[9], *p;
  int i = 0;

  count_unhandled(f);
  /* a..i are SENTINEL(0..6) and INT_VALUE('h'), INT_VALUE('i') */
  base[0] = rejected(f, UV_EIO, SENTINEL(0));
  assert_int_equal(uvp_promise_catch(base[0], identity_cb, NULL, &ins[0]), 0);
  base[1] = fulfilled(f, SENTINEL(1));
  assert_int_equal(uvp_promise_then(base[1], rethrow_cb, NULL, &ins[1]), 0);
  base[2] = rejected(f, UV_EIO, SENTINEL(2));
  assert_int_equal(uvp_promise_then(base[2], rethrow_cb, NULL, &ins[2]), 0);
  base[3] = fulfilled(f, SENTINEL(3));
  assert_int_equal(uvp_promise_finally(base[3], identity_cb, NULL, &ins[3]), 0);
  base[4] = rejected(f, UV_EIO, SENTINEL(4));
  assert_int_equal(uvp_promise_finally(base[4], identity_cb, NULL, &ins[4]), 0);
  base[5] = fulfilled(f, SENTINEL(5));
  assert_int_equal(uvp_promise_finally(base[5], rethrow_cb, NULL, &ins[5]), 0);
  base[6] = rejected(f, UV_EIO, SENTINEL(6));
  assert_int_equal(uvp_promise_finally(base[6], rethrow_cb, NULL, &ins[6]), 0);
  base[7] = rejected(f, UV_EIO, INT_VALUE('h'));
  assert_int_equal(uvp_promise_on(base[7], UVP_ON_BOTH, j_cb, NULL, &ins[7]),
                   0);
  base[8] = fulfilled(f, INT_VALUE('i'));
  assert_int_equal(uvp_promise_then(base[8], identity_cb, NULL, &ins[8]), 0);

  assert_int_equal(uvp_promise_race(f->ctx, ins, 9, 0, &p), 0);
  run_loop(f);

  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(0));
  /* every chain settled as in JavaScript */
  static const int state_of[9] = {UVP_FULFILLED, UVP_REJECTED,  UVP_REJECTED,
                                  UVP_FULFILLED, UVP_REJECTED,  UVP_REJECTED,
                                  UVP_REJECTED,  UVP_FULFILLED, UVP_FULFILLED};
  for (i = 0; i < 9; i++)
    assert_int_equal(uvp_promise_state(ins[i]), state_of[i]);
  assert_ptr_equal(uvp_promise_value(ins[7]), SENTINEL(7));
  release_array(base, 9);
  /* the rejected chains were observed by the race: none is unhandled */
  release_array(ins, 9);
  uvp_promise_release(p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* C-specific: the requirements                                      */
/* ------------------------------------------------------------------------ */

/* Among inputs already settled when the call is made, the first in input
 * order wins, whether it fulfilled or rejected, and even when a later one
 * settled earlier. */
static void c_settled_first_in_input_order(void **state) {
  fixture_t *f = *state;

  count_unhandled(f);
  for (int first_rejects = 0; first_rejects < 2; first_rejects++) {
    uvp_promise_t *ins[4];
    uvp_promise_t *p;

    ins[0] = pending(f);
    ins[3] = fulfilled(f, SENTINEL(3)); /* settled first in time */
    ins[1] = first_rejects ? rejected(f, UV_EIO, SENTINEL(1))
                           : fulfilled(f, SENTINEL(1));
    ins[2] = rejected(f, UV_EPIPE, SENTINEL(2));
    assert_int_equal(uvp_promise_race(f->ctx, ins, 4, 0, &p), 0);
    assert_int_equal(uvp_promise_resolve(ins[0], SENTINEL(0), NULL), 0);
    run_loop(f);

    void *payload = NULL;
    if (first_rejects) {
      assert_int_equal(uvp_promise_reason(p, &payload), UV_EIO);
      assert_ptr_equal(payload, SENTINEL(1));
    } else {
      assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
      assert_ptr_equal(uvp_promise_value(p), SENTINEL(1));
    }
    int before = g_unhandled;
    release_array(ins, 4);
    assert_int_equal(g_unhandled, before);
    uvp_promise_release(p); /* the rejected race, unhandled, is reported */
    assert_int_equal(g_unhandled, before + first_rejects);
  }
  assert_no_live(f);
}

/* Among pending inputs, the first to settle in time wins. */
static void c_first_in_time(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *ins[3] = {pending(f), pending(f), pending(f)};
  uvp_promise_t *p;

  assert_int_equal(uvp_promise_race(f->ctx, ins, 3, 0, &p), 0);
  assert_int_equal(uvp_promise_resolve(ins[2], SENTINEL(2), NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[0], UV_EIO, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(2));
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(2));
  release_array(ins, 3);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* race on empty input never settles; teardown frees it, whether we still
 * hold it (it rejects with UVP_ECLOSED) or released it already. */
static void c_empty_teardown(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *held, *dropped;

  assert_int_equal(uvp_promise_race(f->ctx, NULL, 0, 0, &held), 0);
  assert_int_equal(
      uvp_promise_race(f->ctx, NULL, 0, UVP_CANCEL_LOSERS, &dropped), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(held), UVP_PENDING);
  uvp_promise_release(dropped);
  /* a pending result keeps itself alive until the context closes */
  assert_int_equal(live_count(f), 2);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(held, NULL), UVP_ECLOSED);
  uvp_promise_release(held);
}

/* Results compose (besides c_compose): race of all, allSettled and any over
 * inputs all pending, which any wins once b fulfils; then on the race. */
static void c_compose_of_pending_inputs(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a = pending(f), *b = pending(f);
  uvp_promise_t *ab[2] = {a, b};
  uvp_promise_t *inner[3], *p, *d;
  rec_t r = {0};

  count_unhandled(f);
  assert_int_equal(uvp_promise_all(f->ctx, ab, 2, 0, &inner[0]), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, ab, 2, &inner[1]), 0);
  assert_int_equal(uvp_promise_any(f->ctx, ab, 2, 0, &inner[2]), 0);
  assert_int_equal(uvp_promise_race(f->ctx, inner, 3, 0, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &r, &d), 0);
  assert_int_equal(uvp_promise_resolve(b, SENTINEL(1), NULL), 0);
  run_loop(f);

  /* any fulfilled first (b); all and allSettled still wait for a */
  assert_int_equal(r.calls, 1);
  assert_ptr_equal(r.value, SENTINEL(1));
  assert_int_equal(uvp_promise_state(inner[0]), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(a, SENTINEL(0), NULL), 0);
  run_loop(f);
  assert_int_equal(r.calls, 1);
  assert_ptr_equal(uvp_promise_value(p), SENTINEL(1));
  release_all(7, a, b, inner[0], inner[1], inner[2], p, d);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

COMBINATOR_CASES(&combinators[COMB_RACE])
COMBINATOR_FLAG_CASES(&combinators[COMB_RACE])

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(S25_4_4_3_A5_1_T1),
      FIXTURE_TEST(S25_4_4_3_A6_2_T1),
      FIXTURE_TEST(S25_4_4_3_A7_1_T1),
      FIXTURE_TEST(S25_4_4_3_A7_1_T2),
      FIXTURE_TEST(S25_4_4_3_A7_1_T3),
      FIXTURE_TEST(S25_4_4_3_A7_2_T1),
      FIXTURE_TEST(resolve_from_same_thenable),
      FIXTURE_TEST(resolve_ignores_late_rejection_deferred),
      FIXTURE_TEST(same_resolve_function),
      FIXTURE_TEST(resolved_sequence),
      FIXTURE_TEST(resolved_sequence_with_rejections),
      FIXTURE_TEST(resolved_sequence_mixed),
      FIXTURE_TEST(resolved_sequence_extra_ticks),
      FIXTURE_TEST(resolved_then_catch_finally),
      FIXTURE_TEST(c_settled_first_in_input_order),
      FIXTURE_TEST(c_first_in_time),
      FIXTURE_TEST(c_empty_teardown),
      FIXTURE_TEST(c_compose_of_pending_inputs),
      COMBINATOR_CASE_TESTS,
      COMBINATOR_FLAG_CASE_TESTS,
  };
  (void)sentinel_storage;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
