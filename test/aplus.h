/* Scaffolding shared by the Promises/A+ ports, test-aplus-2-1.c,
 * test-aplus-2-2.c and test-aplus-2-3.c (each file's opening comment maps
 * the JS suite onto uvp): the suite's `dummy` and `other`, setTimeout as a
 * one-shot uv_timer (later_t), settling calls checked for their return
 * (settle_t), sinon spies (rec_t), testFulfilled / testRejected (tuple_t and
 * THREE_FULFILLED / THREE_REJECTED).
 *
 * rec_t and assert_no_live here are the A+ ports' own (a recorder that can
 * route rejections to a second one; a leak check that runs the loop first),
 * not test262.h's: the two headers do not go together. */
#ifndef UVP_TEST_APLUS_H
#define UVP_TEST_APLUS_H

#include "helpers.h"

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

static inline void settle_now(const settle_t *s) {
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
  /* Refused, the call freed the value itself (uvp.h, "Handing over"). */
  assert_int_equal(rc, s->expect);
  if (s->flag != NULL)
    *s->flag = 1;
}

/* The suite's "trying to fulfill, then reject" a promise that is settled or
 * follows another: both calls fail with UVP_ESETTLED, and the values they
 * were given stay ours (destroyed here, counted in *freed). */
static inline void try_resolve_then_reject(uvp_promise_t *p, int *freed) {
  settle_now(&(settle_t){.p = p,
                         .op = OP_RESOLVE,
                         .value = boxed_new(2, freed),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
  settle_now(&(settle_t){.p = p,
                         .op = OP_REJECT,
                         .code = OTHER_CODE,
                         .value = boxed_new(3, freed),
                         .dtor = boxed_free,
                         .expect = UVP_ESETTLED});
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

static inline void later_closed(uv_handle_t *h) { free(h->data); }

static inline void later_fire(uv_timer_t *t) {
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

static inline later_t *later_new(fixture_t *f) {
  later_t *l = calloc(1, sizeof(*l));
  assert_non_null(l);
  assert_int_equal(uv_timer_init(&f->loop, &l->timer), 0);
  l->timer.data = l;
  return l;
}

static inline void later_start(later_t *l, uint64_t ms) {
  assert_int_equal(uv_timer_start(&l->timer, later_fire, ms, 0), 0);
}

static inline void after_ms(fixture_t *f, uint64_t ms, void (*fn)(void *),
                            void *arg) {
  later_t *l = later_new(f);
  l->fn = fn;
  l->arg = arg;
  later_start(l, ms);
}

/* The timer keeps its own references to s.p and s.src until it fires. */
static inline void settle_after(fixture_t *f, uint64_t ms, settle_t s) {
  later_t *l = later_new(f);
  l->s[0] = s;
  l->n = 1;
  uvp_promise_retain(s.p);
  uvp_promise_retain(s.src);
  later_start(l, ms);
}

/* Two calls from the same timer callback, in order. */
static inline void settle2_after(fixture_t *f, uint64_t ms, settle_t a,
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

static inline void noop_fn(void *arg) { (void)arg; }

/* A handler that records how it was called (a sinon spy).  Registered with
 * UVP_ON_BOTH and `on_rej` set, it is JS's then(f, r): a rejection goes to
 * the `on_rej` recorder.  It returns `ret` (handed over once; zeroed = return
 * undefined). */
typedef struct rec_s rec_t;
struct rec_s {
  int ful, rej; /* calls per outcome */
  int status;   /* of the last call */
  void *value;  /* of the last call */
  uvp_promise_t *promise;
  const int *watch; /* if set, *watch is copied to `watched` at call time */
  int watched;
  trace_t *trace; /* if set, `id` is pushed at call time */
  int id;
  rec_t *on_rej;
  uvp_ret_t ret;
};

static inline uvp_ret_t rec_cb(void *arg, const uvp_outcome_t *in) {
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

static inline void assert_fulfilled_once(const rec_t *r, const void *value) {
  assert_int_equal(r->ful, 1);
  assert_int_equal(r->rej, 0);
  assert_int_equal(r->status, 0);
  assert_ptr_equal(r->value, value);
}

static inline void assert_rejected_once(const rec_t *r, int code,
                                        const void *payload) {
  assert_int_equal(r->rej, 1);
  assert_int_equal(r->ful, 0);
  assert_int_equal(r->status, code);
  assert_ptr_equal(r->value, payload);
}

static inline void assert_not_called(const rec_t *r) {
  assert_int_equal(r->ful, 0);
  assert_int_equal(r->rej, 0);
}

static inline void assert_trace(const trace_t *t, int n, const int *want) {
  int i;
  assert_int_equal(t->n, n);
  for (i = 0; i < n; i++)
    assert_int_equal(t->ev[i], want[i]);
}

/* Register `r` (NULL: a NULL handler) for `mask` on p. */
static inline void on(uvp_promise_t *p, int mask, rec_t *r,
                      uvp_promise_t **out) {
  assert_int_equal(uvp_promise_on(p, mask, r != NULL ? rec_cb : NULL, r, out),
                   0);
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

static inline uvp_promise_t *tuple_make(tuple_t *t, fixture_t *f, int how,
                                        int op, int code, void *value,
                                        uvp_free_cb dtor) {
  memset(t, 0, sizeof(*t));
  t->f = f;
  t->how = how;
  if (how == ALREADY) {
    if (op == OP_RESOLVE)
      assert_int_equal(uvp_promise_resolved(f->ctx, value, dtor, &t->p), 0);
    else
      assert_int_equal(uvp_promise_rejected(f->ctx, code, value, dtor, &t->p),
                       0);
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

static inline void tuple_go(tuple_t *t) {
  if (t->how == IMMEDIATELY)
    settle_now(&t->s);
  else if (t->how == EVENTUALLY)
    settle_after(t->f, EVENTUALLY_MS, t->s);
}

static inline void tuple_release(tuple_t *t) {
  uvp_promise_release(t->p);
  t->p = NULL;
}

/* After the test has dropped every reference: nothing may be left alive or
 * queued in the context. */
static inline void assert_no_live(fixture_t *f) {
  uvp_ctx_stats_t st;
  run_loop(f);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.queued, 0);
}

/* One cmocka test per case of testFulfilled / testRejected:
 * name__already_<kind>, name__immediately_<kind>, name__eventually_<kind>,
 * each calling fn(f, how). */
#define THREE_CASES_(name, kind, fn)                                           \
  static void name##__already_##kind(void **s) { fn(*s, ALREADY); }            \
  static void name##__immediately_##kind(void **s) { fn(*s, IMMEDIATELY); }    \
  static void name##__eventually_##kind(void **s) { fn(*s, EVENTUALLY); }
#define THREE_CASES_TESTS_(name, kind)                                         \
  FIXTURE_TEST(name##__already_##kind),                                        \
      FIXTURE_TEST(name##__immediately_##kind),                                \
      FIXTURE_TEST(name##__eventually_##kind)

#define THREE_FULFILLED(body) THREE_CASES_(body, fulfilled, body)
#define THREE_FULFILLED_TESTS(body) THREE_CASES_TESTS_(body, fulfilled)
#define THREE_REJECTED(body) THREE_CASES_(body, rejected, body)
#define THREE_REJECTED_TESTS(body) THREE_CASES_TESTS_(body, rejected)

/* testFulfilled + testRejected over a table: the six tests of name, each
 * calling body(f, how, rejected, which). */
#define SIX_CASES(body, name, which)                                           \
  static void name##__f(fixture_t *f, int how) { body(f, how, 0, which); }     \
  static void name##__r(fixture_t *f, int how) { body(f, how, 1, which); }     \
  THREE_CASES_(name, fulfilled, name##__f)                                     \
  THREE_CASES_(name, rejected, name##__r)
#define SIX_CASES_TESTS(name)                                                  \
  THREE_CASES_TESTS_(name, fulfilled), THREE_CASES_TESTS_(name, rejected)

/* The JS reasons table (helpers/reasons.js), used by 2.2.7.2 and 2.3.3.3.2.
 * A reason is a code and a payload, so the table becomes:
 *   `undefined`        UV_ECANCELED, no payload
 *   `null`             UV_EOF (the most negative libuv code), no payload
 *   `false`            -1 (UV_EPERM), no payload
 *   `0`                code 0: not a valid reason; uvp_ret_reject documents
 *                      that it becomes UV_EINVAL
 *   an error           UV_ECONNREFUSED + boxed payload with a counted dtor
 *   an error without a stack   UV_ECONNREFUSED + payload without dtor
 *   a date             a code neither libuv's nor uvp's (-123456) + counted
 *                      boxed payload
 *   an object          UV_ENOMEM + malloc'd payload freed by free()
 *   an always-pending thenable / a fulfilled promise / a rejected promise:
 *                      UV_EIO with a uvp promise (pending / fulfilled /
 *                      rejected) as payload: it must be passed on as an
 *                      opaque pointer, not adopted, and left unchanged.
 * The payload must arrive as the same pointer and be destroyed once. */
enum {
  R_UNDEFINED,
  R_NULL,
  R_FALSE,
  R_ZERO,
  R_ERROR,
  R_ERROR_NO_STACK,
  R_DATE,
  R_OBJECT,
  R_PENDING_THENABLE,
  R_FULFILLED_PROMISE,
  R_REJECTED_PROMISE
};

typedef struct reason_s {
  int code;   /* what is thrown */
  int expect; /* what promise2 must be rejected with */
  void *payload;
  uvp_free_cb dtor;
  int freed;
  int counted;
  uvp_promise_t *held; /* a promise used as payload (our reference) */
  uvp_state_t held_state;
} reason_t;

static inline uvp_ret_t noop_cb(void *arg, const uvp_outcome_t *in) {
  uvp_ret_t zero = {0};
  (void)arg;
  (void)in;
  return zero;
}

static inline void reason_make(fixture_t *f, int which, reason_t *r) {
  memset(r, 0, sizeof(*r));
  switch (which) {
  case R_UNDEFINED:
    r->code = UV_ECANCELED;
    break;
  case R_NULL:
    r->code = UV_EOF;
    break;
  case R_FALSE:
    r->code = -1;
    break;
  case R_ZERO:
    r->code = 0;
    break;
  case R_ERROR:
    r->code = UV_ECONNREFUSED;
    r->payload = boxed_new(41, &r->freed);
    r->dtor = boxed_free;
    r->counted = 1;
    break;
  case R_ERROR_NO_STACK:
    r->code = UV_ECONNREFUSED;
    r->payload = SENTINEL(2);
    break;
  case R_DATE:
    r->code = -123456;
    r->payload = boxed_new(42, &r->freed);
    r->dtor = boxed_free;
    r->counted = 1;
    break;
  case R_OBJECT:
    r->code = UV_ENOMEM;
    r->payload = malloc(32);
    assert_non_null(r->payload);
    r->dtor = free;
    break;
  case R_PENDING_THENABLE:
    r->code = UV_EIO;
    assert_int_equal(uvp_promise_new(f->ctx, &r->held), 0);
    r->held_state = UVP_PENDING;
    break;
  case R_FULFILLED_PROMISE:
    r->code = UV_EIO;
    assert_int_equal(uvp_promise_resolved(f->ctx, DUMMY, NULL, &r->held), 0);
    r->held_state = UVP_FULFILLED;
    break;
  case R_REJECTED_PROMISE:
    r->code = UV_EIO;
    assert_int_equal(
        uvp_promise_rejected(f->ctx, DUMMY_CODE, DUMMY, NULL, &r->held), 0);
    /* handled, so that releasing it reports nothing */
    assert_int_equal(uvp_promise_catch(r->held, noop_cb, NULL, NULL), 0);
    r->held_state = UVP_REJECTED;
    break;
  default:
    fail();
  }
  if (r->held != NULL)
    r->payload = r->held;
  r->expect = r->code < 0 ? r->code : UV_EINVAL;
}

/* Once the test has released its promises: the held promise was not
 * touched, nothing is left alive, the payload was destroyed exactly once. */
static inline void reason_finish(fixture_t *f, reason_t *r) {
  run_loop(f);
  if (r->held != NULL) {
    assert_int_equal(uvp_promise_state(r->held), r->held_state);
    uvp_promise_release(r->held);
  }
  assert_no_live(f);
  if (r->counted)
    assert_int_equal(r->freed, 1);
}

#define REASONS(X)                                                             \
  X(R_UNDEFINED, undefined)                                                    \
  X(R_NULL, null)                                                              \
  X(R_FALSE, false)                                                            \
  X(R_ZERO, 0)                                                                 \
  X(R_ERROR, an_error)                                                         \
  X(R_ERROR_NO_STACK, an_error_without_a_stack)                                \
  X(R_DATE, a_date)                                                            \
  X(R_OBJECT, an_object)                                                       \
  X(R_PENDING_THENABLE, an_always_pending_thenable)                            \
  X(R_FULFILLED_PROMISE, a_fulfilled_promise)                                  \
  X(R_REJECTED_PROMISE, a_rejected_promise)

#endif
