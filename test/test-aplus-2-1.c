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
 * UVP_ESETTLED and leaves the value it was given with the caller, which the
 * tests check too (the value is destroyed exactly once, by us).
 *
 * Every JS case is ported; none is skipped.  Test names follow the JS
 * describe/specify titles. */
#include <limits.h>

#include "helpers.h"

/* ------------------------------------------------------------------------ */
/* Port scaffolding.  Every test-aplus-2-*.c file has its own copy so that    */
/* each one builds alone.                                                    */
/* ------------------------------------------------------------------------ */

/* Not every file uses every helper. */
#if defined(__GNUC__)
#define HELPER static inline __attribute__((unused))
#else
#define HELPER static inline
#endif

/* The JS suite's setTimeout(..., 50) for "eventually" cases.  A timer of 0
 * stays 0. */
#define EVENTUALLY_MS 10

/* The suite's `dummy`: what we fulfil or reject with when we don't intend to
 * test it.  A rejection needs a code too. */
#define DUMMY SENTINEL(0)
#define DUMMY_CODE UV_EIO
/* The suite's `other`: a value nothing may be strictly equal to. */
#define OTHER SENTINEL(1)
#define OTHER_CODE UV_EPIPE

enum { ALREADY = 0, IMMEDIATELY, EVENTUALLY };
enum { OP_RESOLVE = 1, OP_REJECT, OP_RESOLVE_WITH };

typedef uvp_promise_t *(*make_src_fn)(void *arg);

/* One call to uvp_promise_resolve / _reject / _resolve_with and the value it
 * must return.  When the call fails, the value / payload is still ours (the
 * API promises "on error nothing happened"), so we destroy it ourselves: a
 * library that also destroyed it would double free under ASan/valgrind. */
typedef struct settle_s {
  uvp_promise_t *p;
  int op;
  int code;
  void *value; /* the value, or the reason's payload */
  uvp_free_cb dtor;
  uvp_promise_t *src;   /* OP_RESOLVE_WITH: the promise to follow... */
  make_src_fn make_src; /* ...or a factory called at the time of the call */
  void *make_arg;
  int expect; /* what the call must return */
  int *flag;  /* set to 1 right after the call */
} settle_t;

HELPER void settle_now(const settle_t *s) {
  int rc = -1;
  uvp_promise_t *src = s->src;
  switch (s->op) {
  case OP_RESOLVE:
    rc = uvp_promise_resolve(s->p, s->value, s->dtor);
    break;
  case OP_REJECT:
    rc = uvp_promise_reject(s->p, s->code, s->value, s->dtor);
    break;
  case OP_RESOLVE_WITH:
    if (src == NULL && s->make_src != NULL)
      src = s->make_src(s->make_arg);
    assert_non_null(src);
    rc = uvp_promise_resolve_with(s->p, src);
    if (s->src == NULL)
      uvp_promise_release(src);
    break;
  default:
    fail();
  }
  assert_int_equal(rc, s->expect);
  if (rc != 0 && s->op != OP_RESOLVE_WITH && s->dtor != NULL)
    s->dtor(s->value);
  if (s->flag != NULL)
    *s->flag = 1;
}

/* setTimeout on the fixture loop: a one-shot uv_timer that runs `fn` and/or
 * up to two settle_t calls, then closes and frees itself. */
typedef struct later_s {
  uv_timer_t timer;
  void (*fn)(void *arg);
  void *arg;
  int n;
  settle_t s[2];
} later_t;

HELPER void later_closed(uv_handle_t *h) { free(h->data); }

HELPER void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  int i;
  if (l->fn != NULL)
    l->fn(l->arg);
  for (i = 0; i < l->n; i++)
    settle_now(&l->s[i]);
  for (i = 0; i < l->n; i++) {
    uvp_promise_release(l->s[i].p);
    uvp_promise_release(l->s[i].src);
  }
  uv_close((uv_handle_t *)&l->timer, later_closed);
}

HELPER later_t *later_new(fixture_t *f) {
  later_t *l = calloc(1, sizeof(*l));
  assert_non_null(l);
  assert_int_equal(uv_timer_init(&f->loop, &l->timer), 0);
  l->timer.data = l;
  return l;
}

HELPER void later_start(later_t *l, uint64_t ms) {
  assert_int_equal(uv_timer_start(&l->timer, later_fire, ms, 0), 0);
}

HELPER void after_ms(fixture_t *f, uint64_t ms, void (*fn)(void *),
                            void *arg) {
  later_t *l = later_new(f);
  l->fn = fn;
  l->arg = arg;
  later_start(l, ms);
}

/* The timer keeps its own references to s.p and s.src until it fires. */
HELPER void settle_after(fixture_t *f, uint64_t ms, settle_t s) {
  later_t *l = later_new(f);
  l->s[0] = s;
  l->n = 1;
  uvp_promise_retain(s.p);
  uvp_promise_retain(s.src);
  later_start(l, ms);
}

/* Two calls from the same timer callback, in order. */
HELPER void settle2_after(fixture_t *f, uint64_t ms, settle_t a,
                                 settle_t b) {
  later_t *l = later_new(f);
  l->s[0] = a;
  l->s[1] = b;
  l->n = 2;
  uvp_promise_retain(a.p);
  uvp_promise_retain(a.src);
  uvp_promise_retain(b.p);
  uvp_promise_retain(b.src);
  later_start(l, ms);
}

HELPER void noop_fn(void *arg) { (void)arg; }

/* A handler that records how it was called (a sinon spy).  Registered with
 * UVP_ON_BOTH and `on_rej` set, it is JS's then(f, r): a rejection goes to
 * the `on_rej` recorder.  It returns `ret` (handed over once; zeroed = return
 * undefined). */
typedef struct rec_s rec_t;
struct rec_s {
  int ful, rej;   /* calls per outcome */
  int status;     /* of the last call */
  void *value;    /* of the last call */
  uvp_promise_t *promise;
  const int *watch; /* if set, *watch is copied to `watched` at call time */
  int watched;
  trace_t *trace; /* if set, `id` is pushed at call time */
  int id;
  rec_t *on_rej;
  uvp_ret_t ret;
};

HELPER uvp_ret_t rec_cb(void *arg, const uvp_outcome_t *in) {
  rec_t *r = arg;
  uvp_ret_t ret;
  void *payload = NULL;
  assert_non_null(r);
  assert_non_null(in);
  assert_non_null(in->promise);
  if (in->status != 0 && r->on_rej != NULL)
    r = r->on_rej;
  /* The outcome is a faithful view of the settled promise. */
  if (in->status == 0) {
    r->ful++;
    assert_int_equal(uvp_promise_state(in->promise), UVP_FULFILLED);
    assert_ptr_equal(uvp_promise_value(in->promise), in->value);
  } else {
    r->rej++;
    assert_true(in->status < 0);
    assert_int_equal(uvp_promise_state(in->promise), UVP_REJECTED);
    assert_int_equal(uvp_promise_reason(in->promise, &payload), in->status);
    assert_ptr_equal(payload, in->value);
  }
  r->status = in->status;
  r->value = in->value;
  r->promise = in->promise;
  if (r->watch != NULL)
    r->watched = *r->watch;
  if (r->trace != NULL)
    trace_push(r->trace, r->id);
  ret = r->ret;
  memset(&r->ret, 0, sizeof(r->ret));
  return ret;
}

HELPER void assert_fulfilled_once(const rec_t *r, const void *value) {
  assert_int_equal(r->ful, 1);
  assert_int_equal(r->rej, 0);
  assert_int_equal(r->status, 0);
  assert_ptr_equal(r->value, value);
}

HELPER void assert_rejected_once(const rec_t *r, int code,
                                        const void *payload) {
  assert_int_equal(r->rej, 1);
  assert_int_equal(r->ful, 0);
  assert_int_equal(r->status, code);
  assert_ptr_equal(r->value, payload);
}

HELPER void assert_not_called(const rec_t *r) {
  assert_int_equal(r->ful, 0);
  assert_int_equal(r->rej, 0);
}

HELPER void assert_trace(const trace_t *t, int n, const int *want) {
  int i;
  assert_int_equal(t->n, n);
  for (i = 0; i < n; i++)
    assert_int_equal(t->ev[i], want[i]);
}

/* Register `r` (NULL: a NULL handler) for `mask` on p. */
HELPER void on(uvp_promise_t *p, int mask, rec_t *r,
                      uvp_promise_t **out) {
  assert_int_equal(
      uvp_promise_on(p, mask, r != NULL ? rec_cb : NULL, r, out), 0);
  if (out != NULL)
    assert_non_null(*out);
}

/* testThreeCases: the promise under test is already settled
 * (uvp_promise_resolved / _rejected), settled right after the test has
 * registered its handlers (tuple_go), or settled EVENTUALLY_MS later from a
 * uv_timer.  `settled` turns 1 right after the settling call. */
typedef struct tuple_s {
  fixture_t *f;
  int how;
  uvp_promise_t *p;
  settle_t s;
  int settled;
} tuple_t;

HELPER uvp_promise_t *tuple_make(tuple_t *t, fixture_t *f, int how,
                                        int op, int code, void *value,
                                        uvp_free_cb dtor) {
  memset(t, 0, sizeof(*t));
  t->f = f;
  t->how = how;
  if (how == ALREADY) {
    if (op == OP_RESOLVE)
      assert_int_equal(uvp_promise_resolved(f->ctx, value, dtor, &t->p), 0);
    else
      assert_int_equal(
          uvp_promise_rejected(f->ctx, code, value, dtor, &t->p), 0);
    t->settled = 1;
  } else {
    assert_int_equal(uvp_promise_new(f->ctx, &t->p), 0);
    t->s.p = t->p;
    t->s.op = op;
    t->s.code = code;
    t->s.value = value;
    t->s.dtor = dtor;
    t->s.flag = &t->settled;
  }
  assert_non_null(t->p);
  return t->p;
}

#define tuple_fulfilled(t, f, how, v, d)                                       \
  tuple_make((t), (f), (how), OP_RESOLVE, 0, (v), (d))
#define tuple_rejected(t, f, how, c, pl, d)                                    \
  tuple_make((t), (f), (how), OP_REJECT, (c), (pl), (d))

HELPER void tuple_go(tuple_t *t) {
  if (t->how == IMMEDIATELY)
    settle_now(&t->s);
  else if (t->how == EVENTUALLY)
    settle_after(t->f, EVENTUALLY_MS, t->s);
}

HELPER void tuple_release(tuple_t *t) {
  uvp_promise_release(t->p);
  t->p = NULL;
}

/* After the test has dropped every reference: nothing may be left alive or
 * queued in the context. */
HELPER void assert_no_live(fixture_t *f) {
  uvp_ctx_stats_t st;
  run_loop(f);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.queued, 0);
}

/* One cmocka test per case of testFulfilled / testRejected. */
#define THREE_FULFILLED(body)                                                  \
  static void body##__already_fulfilled(void **s) { body(*s, ALREADY); }       \
  static void body##__immediately_fulfilled(void **s) {                        \
    body(*s, IMMEDIATELY);                                                     \
  }                                                                            \
  static void body##__eventually_fulfilled(void **s) { body(*s, EVENTUALLY); }
#define THREE_FULFILLED_TESTS(body)                                            \
  FIXTURE_TEST(body##__already_fulfilled),                                     \
      FIXTURE_TEST(body##__immediately_fulfilled),                             \
      FIXTURE_TEST(body##__eventually_fulfilled)
#define THREE_REJECTED(body)                                                   \
  static void body##__already_rejected(void **s) { body(*s, ALREADY); }        \
  static void body##__immediately_rejected(void **s) {                         \
    body(*s, IMMEDIATELY);                                                     \
  }                                                                            \
  static void body##__eventually_rejected(void **s) { body(*s, EVENTUALLY); }
#define THREE_REJECTED_TESTS(body)                                             \
  FIXTURE_TEST(body##__already_rejected),                                      \
      FIXTURE_TEST(body##__immediately_rejected),                              \
      FIXTURE_TEST(body##__eventually_rejected)

/* ------------------------------------------------------------------------ */

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

  settle_now(&(settle_t){.p = p, .op = OP_REJECT, .code = OTHER_CODE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free, .expect = UVP_ESETTLED});
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE,
                         .value = boxed_new(3, &freed_other),
                         .dtor = boxed_free, .expect = UVP_ESETTLED});
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
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE, .value = v,
                         .dtor = boxed_free});
  settle_now(&(settle_t){.p = p, .op = OP_REJECT, .code = OTHER_CODE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free, .expect = UVP_ESETTLED});
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
  settle2_after(f, EVENTUALLY_MS,
                (settle_t){.p = p, .op = OP_RESOLVE, .value = v,
                           .dtor = boxed_free},
                (settle_t){.p = p, .op = OP_REJECT, .code = OTHER_CODE,
                           .value = boxed_new(2, &freed_other),
                           .dtor = boxed_free, .expect = UVP_ESETTLED});
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
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE, .value = v,
                         .dtor = boxed_free});
  settle_after(f, EVENTUALLY_MS,
               (settle_t){.p = p, .op = OP_REJECT, .code = OTHER_CODE,
                          .value = boxed_new(2, &freed_other),
                          .dtor = boxed_free, .expect = UVP_ESETTLED});
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

  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free, .expect = UVP_ESETTLED});
  settle_now(&(settle_t){.p = p, .op = OP_REJECT, .code = OTHER_CODE,
                         .value = boxed_new(3, &freed_other),
                         .dtor = boxed_free, .expect = UVP_ESETTLED});
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
  settle_now(&(settle_t){.p = p, .op = OP_REJECT, .code = DUMMY_CODE,
                         .value = pl, .dtor = boxed_free});
  settle_now(&(settle_t){.p = p, .op = OP_RESOLVE,
                         .value = boxed_new(2, &freed_other),
                         .dtor = boxed_free, .expect = UVP_ESETTLED});
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
                (settle_t){.p = p, .op = OP_REJECT, .code = DUMMY_CODE,
                           .value = pl, .dtor = boxed_free},
                (settle_t){.p = p, .op = OP_RESOLVE,
                           .value = boxed_new(2, &freed_other),
                           .dtor = boxed_free, .expect = UVP_ESETTLED});
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
  settle_now(&(settle_t){.p = p, .op = OP_REJECT, .code = DUMMY_CODE,
                         .value = pl, .dtor = boxed_free});
  settle_after(f, EVENTUALLY_MS,
               (settle_t){.p = p, .op = OP_RESOLVE,
                          .value = boxed_new(2, &freed_other),
                          .dtor = boxed_free, .expect = UVP_ESETTLED});
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
