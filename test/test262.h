/* Scaffolding shared by the test262 ports: test-then.c, test-catch.c,
 * test-finally.c, test-resolve-functions.c, test-all.c, test-all-settled.c,
 * test-race.c and test-any.c.
 *
 * Conventions of every port:
 *   - A test is named after the test262 file it ports (dashes and dots as
 *     underscores); a name starting with "c_" is a C-specific addition.  The
 *     top of each file lists what it skips and why.
 *   - The generic part of the mapping (the API's is at the top of
 *     include/uvp.h; each file adds its own rows):
 *       `var obj = {}`            a boxed_t whose destructor is counted, or a
 *                                 SENTINEL() when nobody owns it; a number is
 *                                 INT_VALUE(n)
 *       sequence.push / checkSequence
 *                                 trace_push / check_sequence (the trace must
 *                                 be exactly 1, 2, ..., n at that point)
 *       a handler that records, returns or throws
 *                                 rec_cb with a rec_t: .mark pushed on
 *                                 .trace, .seq checks the sequence there,
 *                                 .ret is what the first call returns
 *                                 (zeroed: fulfils with NULL, as `undefined`)
 *       p.then(f, r)              uvp_promise_on(p, UVP_ON_BOTH, both_cb, &b)
 *                                 with a both_t {ok, err}
 *       $DONE                     run_loop(), then assert
 *   - A test that expects no unhandled rejection calls count_unhandled()
 *     first and asserts g_unhandled afterwards; every test ends with
 *     assert_no_live() (no promise, no queued handler left), before
 *     helpers.h's teardown proves the loop closes. */
#ifndef UVP_TEST262_H
#define UVP_TEST262_H

#include <stdarg.h>

#include "helpers.h"

/* ------------------------------------------------------------------------ */
/* Unhandled rejections, references, leaks                                   */
/* ------------------------------------------------------------------------ */

/* A promise used as a plain value or payload: its destructor drops the
 * reference that was handed over with it. */
static inline void release_promise(void *p) { uvp_promise_release(p); }

static inline void release_all(int n, ...) {
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++)
    uvp_promise_release(va_arg(ap, uvp_promise_t *));
  va_end(ap);
}

static inline void release_array(uvp_promise_t **ps, size_t n) {
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(ps[i]);
}

static inline void assert_no_live(fixture_t *f) {
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.queued, 0);
}

/* ------------------------------------------------------------------------ */
/* Sequences and handlers                                                    */
/* ------------------------------------------------------------------------ */

/* test262's checkSequence: the trace is exactly 1, 2, ..., n. */
static inline void check_sequence(const trace_t *t, int n) {
  assert_int_equal(t->n, n);
  for (int i = 0; i < n; i++)
    assert_int_equal(t->ev[i], i + 1);
}

static inline void expect_trace(const trace_t *t, int n, ...) {
  int want[64];
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n && i < 64; i++)
    want[i] = va_arg(ap, int);
  va_end(ap);
  assert_int_equal(t->n, n);
  for (int i = 0; i < n; i++)
    assert_int_equal(t->ev[i], want[i]);
}

#define INT_VALUE(i) ((void *)(intptr_t)(i))

/* A recording handler.  Pushes `mark` (if `trace`), then, if `seq`, checks
 * the trace is exactly 1..mark; returns `ret` on the first call (zeroed: the
 * derived promise fulfils with NULL, as a JS handler returning undefined). */
typedef struct rec_s {
  trace_t *trace;
  int mark;
  int seq;
  int calls;
  int status;
  void *value;
  uvp_promise_t *from;
  uvp_ret_t ret;
} rec_t;

static inline uvp_ret_t rec_cb(void *arg, const uvp_outcome_t *in) {
  rec_t *r = arg;
  uvp_ret_t ret = r->ret;
  r->calls++;
  r->status = in->status;
  r->value = in->value;
  r->from = in->promise;
  if (r->trace != NULL) {
    trace_push(r->trace, r->mark);
    if (r->seq)
      check_sequence(r->trace, r->mark);
  }
  memset(&r->ret, 0, sizeof(r->ret));
  return ret;
}

/* p.then(onFulfilled, onRejected). */
typedef struct both_s {
  rec_t ok;
  rec_t err;
} both_t;

static inline uvp_ret_t both_cb(void *arg, const uvp_outcome_t *in) {
  both_t *b = arg;
  return rec_cb(in->status == 0 ? &b->ok : &b->err, in);
}

/* Handler pushing the boxed value (or payload) it is given. */
static inline uvp_ret_t push_msg_cb(void *arg, const uvp_outcome_t *in) {
  trace_t *t = arg;
  assert_non_null(in->value);
  trace_push(t, ((boxed_t *)in->value)->v);
  return uvp_ret_value(NULL, NULL);
}

/* A handler returning the promise it derives (test262's "resolve with
 * self"): `self` is set once the registration has produced it. */
typedef struct self_s {
  uvp_promise_t *self;
  int calls;
} self_t;

static inline uvp_ret_t return_self_cb(void *arg, const uvp_outcome_t *in) {
  self_t *s = arg;
  (void)in;
  s->calls++;
  return uvp_ret_adopt(uvp_promise_retain(s->self));
}

/* ------------------------------------------------------------------------ */
/* Inputs for the combinator ports                                           */
/* ------------------------------------------------------------------------ */

static inline uvp_promise_t *pending(fixture_t *f) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  return p;
}

static inline uvp_promise_t *fulfilled(fixture_t *f, void *v) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_resolved(f->ctx, v, NULL, &p), 0);
  return p;
}

static inline uvp_promise_t *rejected(fixture_t *f, int code, void *payload) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_rejected(f->ctx, code, payload, NULL, &p), 0);
  return p;
}

/* reject-deferred.js: the pending input `arg` is rejected later, from a
 * handler of another promise. */
static inline uvp_ret_t reject_target_cb(void *arg, const uvp_outcome_t *in) {
  (void)in;
  assert_int_equal(uvp_promise_reject(arg, UV_EIO, SENTINEL(1), NULL), 0);
  return uvp_ret_value(NULL, NULL);
}

/* resolve-ignores-late-rejection-deferred.js (race, any) and
 * reject-ignored-deferred.js (allSettled): from a handler, the resolver
 * fulfils input 0 with 42, then lateRejector fulfils input 1 with
 * SENTINEL(1) (allSettled's `simulation`; race's and any's 9 is never
 * observed) and tries to reject it too, which must fail. */
static inline uvp_ret_t settle_both_cb(void *arg, const uvp_outcome_t *in) {
  uvp_promise_t **ins = arg;
  (void)in;
  assert_int_equal(uvp_promise_resolve(ins[0], INT_VALUE(42), NULL), 0);
  assert_int_equal(uvp_promise_resolve(ins[1], SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_reject(ins[1], UV_EIO, NULL, NULL),
                   UVP_ESETTLED);
  return uvp_ret_value(NULL, NULL);
}

/* Settles `n` pending promises from one loop callback (a timer due at
 * once), in reverse input order, so that completion order differs from
 * input order.  mode: 0 all fulfil (value i), 1 all reject (UV_EIO, payload
 * i), 2 even indexes fulfil and odd ones reject. */
typedef struct mass_s {
  uv_timer_t timer;
  uvp_promise_t **ps;
  size_t n;
  int mode;
  uint64_t settled_ns;
} mass_t;

static inline void mass_settle_cb(uv_timer_t *t) {
  mass_t *m = t->data;
  for (size_t k = m->n; k-- > 0;) {
    int fail = m->mode == 1 || (m->mode == 2 && (k & 1));
    if (fail)
      assert_int_equal(uvp_promise_reject(m->ps[k], UV_EIO, INT_VALUE(k), NULL),
                       0);
    else
      assert_int_equal(uvp_promise_resolve(m->ps[k], INT_VALUE(k), NULL), 0);
  }
  m->settled_ns = uv_hrtime();
  uv_close((uv_handle_t *)t, NULL);
}

static inline void mass_start(fixture_t *f, mass_t *m, uvp_promise_t **ps,
                              size_t n, int mode) {
  m->ps = ps;
  m->n = n;
  m->mode = mode;
  m->timer.data = m;
  assert_int_equal(uv_timer_init(&f->loop, &m->timer), 0);
  assert_int_equal(uv_timer_start(&m->timer, mass_settle_cb, 0, 0), 0);
}

/* A second loop and context, for inputs of another context. */
typedef struct other_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *p;
} other_t;

static inline void other_open(other_t *o) {
  assert_int_equal(uv_loop_init(&o->loop), 0);
  assert_int_equal(uvp_ctx_new(&o->loop, &o->ctx), 0);
  assert_int_equal(uvp_promise_new(o->ctx, &o->p), 0);
}

static inline void other_close(other_t *o) {
  uvp_promise_release(o->p);
  assert_int_equal(uvp_ctx_close(o->ctx), 0);
  assert_int_equal(uv_run(&o->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&o->loop), 0);
}

/* One record of a uvp_settled_list_t (allSettled's result, any's
 * aggregate); a NULL `input` skips the input check. */
static inline void expect_item(const uvp_settled_list_t *l, size_t i,
                               int status, void *value, uvp_promise_t *input) {
  assert_true(i < l->count);
  assert_int_equal(l->items[i].status, status);
  assert_ptr_equal(l->items[i].value, value);
  if (input != NULL)
    assert_ptr_equal(l->items[i].promise, input);
}

static inline void expect_counts(const uvp_settled_list_t *l, size_t count,
                                 size_t nfulfilled, size_t nrejected) {
  assert_int_equal(l->count, count);
  assert_int_equal(l->fulfilled, nfulfilled);
  assert_int_equal(l->rejected, nrejected);
}

#endif
