/* What every combinator must do, written once: the C-specific cases that
 * test-all.c, test-all-settled.c, test-race.c and test-any.c share (the
 * "Common rules" above uvp_promise_all in include/uvp.h).  Each file expands
 * COMBINATOR_CASES(&combinators[COMB_...]) and lists COMBINATOR_CASE_TESTS;
 * the three that take flags add COMBINATOR_FLAG_CASES / _TESTS, and all and
 * allSettled the test262 ports their directories share
 * (COMBINATOR_ELEMENT_PORTS / _TESTS).
 *
 * A row of combinators[] says how a combinator's result must look: which
 * input outcomes decide it at once (a UVP_ON_* mask) and what it is once
 * every input has settled without deciding it.  The cases settle inputs
 * through cin_t, which remembers how and when each settled, and
 * expect_result() derives from the row what the result must be at that
 * point:
 *   - the deciding input that settled first, if any (inputs already settled
 *     when the call was made count first, in input order: uvp.h's rule), its
 *     value or reason shared, not copied;
 *   - else, once every input has settled, the complete shape: all's values,
 *     allSettled's records, any's aggregate, each in input order;
 *   - else pending.
 * A handler on the result (ccall_t.h) must have seen that outcome once. */
#ifndef UVP_TEST_COMBINATOR_CASES_H
#define UVP_TEST_COMBINATOR_CASES_H

#include "test262.h"

/* ------------------------------------------------------------------------ */
/* The table                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum {
  COMPLETE_VALUES,    /* fulfils with a uvp_values_t */
  COMPLETE_RECORDS,   /* fulfils with a uvp_settled_list_t */
  COMPLETE_AGGREGATE, /* rejects UVP_EAGGREGATE with a uvp_settled_list_t */
  COMPLETE_NEVER      /* stays pending: only race([]) gets there */
} complete_t;

typedef int (*comb_call_fn)(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                            size_t n, int flags, uvp_promise_t **out);

typedef struct comb_s {
  const char *name;
  comb_call_fn call;
  int decides_on; /* UVP_ON_*: the input outcomes that settle the result */
  complete_t complete;
  bool has_flags; /* takes UVP_CANCEL_LOSERS */
} comb_t;

static inline int comb_all(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                           size_t n, int flags, uvp_promise_t **out) {
  return uvp_promise_all(ctx, inputs, n, flags, out);
}

/* Flags through the _ex form: UVP_TAKE_INPUTS, or unknown ones. */
static inline int comb_all_settled(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                                   size_t n, int flags, uvp_promise_t **out) {
  if (flags != 0)
    return uvp_promise_all_settled_ex(ctx, inputs, n, flags, out);
  return uvp_promise_all_settled(ctx, inputs, n, out);
}

static inline int comb_race(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                            size_t n, int flags, uvp_promise_t **out) {
  return uvp_promise_race(ctx, inputs, n, flags, out);
}

static inline int comb_any(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                           size_t n, int flags, uvp_promise_t **out) {
  return uvp_promise_any(ctx, inputs, n, flags, out);
}

enum { COMB_ALL, COMB_ALL_SETTLED, COMB_RACE, COMB_ANY, COMB_COUNT };

static const comb_t combinators[COMB_COUNT] = {
    [COMB_ALL] = {"all", comb_all, UVP_ON_REJECTED, COMPLETE_VALUES, true},
    [COMB_ALL_SETTLED] = {"allSettled", comb_all_settled, 0, COMPLETE_RECORDS,
                          false},
    [COMB_RACE] = {"race", comb_race, UVP_ON_BOTH, COMPLETE_NEVER, true},
    [COMB_ANY] = {"any", comb_any, UVP_ON_FULFILLED, COMPLETE_AGGREGATE, true},
};

static inline bool comb_decides(const comb_t *c, int status) {
  return (c->decides_on & (status == 0 ? UVP_ON_FULFILLED : UVP_ON_REJECTED)) !=
         0;
}

/* Outcomes that leave c's result waiting, as a mass_t mode (test262.h):
 * 2 (even inputs fulfil, odd ones reject) where neither decides, 1 (all
 * reject) where only fulfilment decides, 0 (all fulfil) where rejection
 * decides, and where both do (race: the first to fulfil decides). */
static inline int quiet_mode(const comb_t *c) {
  if (c->decides_on == 0)
    return 2;
  return c->decides_on == UVP_ON_FULFILLED ? 1 : 0;
}

/* Input i's status under a mass_t mode: 0 or UV_EIO, as mass_settle_cb. */
static inline int mode_status(int mode, size_t i) {
  return mode == 1 || (mode == 2 && (i & 1)) ? UV_EIO : 0;
}

/* A status that does not decide c's result; false where every outcome
 * does (race).  A rejection where possible: it exercises the payloads. */
static inline bool quiet_status(const comb_t *c, int *status) {
  if (!comb_decides(c, UV_EIO))
    *status = UV_EIO;
  else if (!comb_decides(c, 0))
    *status = 0;
  else
    return false;
  return true;
}

/* ------------------------------------------------------------------------ */
/* Inputs as the test knows them                                             */
/* ------------------------------------------------------------------------ */

/* Settling order across every input of a test. */
static uint64_t cin_clock __attribute__((unused));

typedef struct cin_s {
  uvp_promise_t *p; /* our reference */
  bool settled;
  int status;   /* 0, or the rejection's code */
  void *value;  /* the value or the payload */
  uint64_t seq; /* cin_clock when it settled */
} cin_t;

static inline void cin_note(cin_t *x, int status, void *value) {
  assert_false(x->settled);
  x->settled = true;
  x->status = status;
  x->value = value;
  x->seq = ++cin_clock;
}

static inline void cin_pending(fixture_t *f, cin_t *x) {
  memset(x, 0, sizeof(*x));
  x->p = pending(f);
}

/* Settled before any call sees it. */
static inline void cin_settled(fixture_t *f, cin_t *x, int status,
                               void *value) {
  memset(x, 0, sizeof(*x));
  x->p = status == 0 ? fulfilled(f, value) : rejected(f, status, value);
  cin_note(x, status, value);
}

static inline void cin_settle(cin_t *x, int status, void *value,
                              uvp_free_cb dtor) {
  if (status == 0)
    assert_int_equal(uvp_promise_resolve(x->p, value, dtor), 0);
  else
    assert_int_equal(uvp_promise_reject(x->p, status, value, dtor), 0);
  cin_note(x, status, value);
}

/* A result used as an input of another call: note its outcome once it has
 * one (after expect_result has checked it). */
static inline void cin_follow(cin_t *x, uvp_promise_t *res) {
  void *payload = NULL;
  x->p = res;
  if (x->settled || uvp_promise_state(res) == UVP_PENDING)
    return;
  if (uvp_promise_state(res) == UVP_FULFILLED)
    cin_note(x, 0, uvp_promise_value(res));
  else
    cin_note(x, uvp_promise_reason(res, &payload), payload);
}

/* n pending inputs, each listed once, in order. */
static inline void cin_pending_n(fixture_t *f, cin_t *xs, cin_t **in,
                                 size_t n) {
  for (size_t i = 0; i < n; i++) {
    cin_pending(f, &xs[i]);
    in[i] = &xs[i];
  }
}

/* ------------------------------------------------------------------------ */
/* One call and what its result must be                                      */
/* ------------------------------------------------------------------------ */

typedef struct ccall_s {
  const comb_t *c;
  size_t n;
  cin_t **in;         /* input order; a cin_t may stand several times */
  uint64_t at;        /* cin_clock when the call was made */
  uvp_promise_t *res; /* our reference */
  uvp_promise_t *d;   /* h's derived promise; NULL: nobody watches res */
  both_t h;
} ccall_t;

/* Call c on `in` (copied to an array that is poisoned and freed as soon as
 * the call returns: uvp.h lets the caller free it).  `watch` registers
 * h on the result; leave it out where the result may still be pending at
 * teardown, whose handlers run after the test's frame is gone. */
static inline void ccall_start(fixture_t *f, ccall_t *cc, const comb_t *c,
                               cin_t **in, size_t n, int flags, bool watch) {
  uvp_promise_t **ps = malloc((n > 0 ? n : 1) * sizeof(*ps));

  assert_non_null(ps);
  memset(cc, 0, sizeof(*cc));
  cc->c = c;
  cc->n = n;
  cc->in = in;
  cc->at = cin_clock;
  for (size_t i = 0; i < n; i++)
    ps[i] = in[i]->p;
  assert_int_equal(c->call(f->ctx, n > 0 ? ps : NULL, n, flags, &cc->res), 0);
  assert_non_null(cc->res);
  assert_ptr_equal(uvp_promise_ctx(cc->res), f->ctx);
  memset(ps, 0xA5, (n > 0 ? n : 1) * sizeof(*ps));
  free(ps);
  if (watch)
    assert_int_equal(
        uvp_promise_on(cc->res, UVP_ON_BOTH, both_cb, &cc->h, &cc->d), 0);
}

static inline void ccall_release(ccall_t *cc) {
  uvp_promise_release(cc->res);
  uvp_promise_release(cc->d);
}

/* The deciding input that settled first; NULL if none has. */
static inline const cin_t *ccall_decider(const ccall_t *cc) {
  const cin_t *best = NULL;
  for (size_t i = 0; i < cc->n; i++) {
    const cin_t *x = cc->in[i];
    if (!x->settled || !comb_decides(cc->c, x->status))
      continue;
    if (best == NULL)
      best = x;
    else if (best->seq > cc->at && (x->seq <= cc->at || x->seq < best->seq))
      best = x; /* best settled after the call, x before it or earlier */
  }
  return best;
}

static inline bool ccall_all_settled(const ccall_t *cc) {
  for (size_t i = 0; i < cc->n; i++)
    if (!cc->in[i]->settled)
      return false;
  return true;
}

static inline void expect_records(const ccall_t *cc,
                                  const uvp_settled_list_t *l) {
  size_t nrejected = 0;
  assert_non_null(l);
  for (size_t i = 0; i < cc->n; i++)
    nrejected += cc->in[i]->status != 0;
  expect_counts(l, cc->n, cc->n - nrejected, nrejected);
  for (size_t i = 0; i < cc->n; i++)
    expect_item(l, i, cc->in[i]->status, cc->in[i]->value, cc->in[i]->p);
}

/* Checks the result, and the handler if any, against what the inputs did.
 * Call it after run_loop(). */
static inline void expect_result(const ccall_t *cc) {
  const comb_t *c = cc->c;
  const cin_t *win = ccall_decider(cc);
  void *payload = NULL;

  if (win != NULL && win->status == 0) {
    assert_int_equal(uvp_promise_state(cc->res), UVP_FULFILLED);
    assert_ptr_equal(uvp_promise_value(cc->res), win->value);
  } else if (win != NULL) {
    assert_int_equal(uvp_promise_reason(cc->res, &payload), win->status);
    assert_ptr_equal(payload, win->value);
  } else if (!ccall_all_settled(cc) || c->complete == COMPLETE_NEVER) {
    assert_int_equal(uvp_promise_state(cc->res), UVP_PENDING);
  } else if (c->complete == COMPLETE_VALUES) {
    assert_int_equal(uvp_promise_state(cc->res), UVP_FULFILLED);
    uvp_values_t *v = uvp_promise_value(cc->res);
    assert_non_null(v);
    assert_int_equal(v->count, cc->n);
    for (size_t i = 0; i < cc->n; i++)
      assert_ptr_equal(v->values[i], cc->in[i]->value);
  } else if (c->complete == COMPLETE_RECORDS) {
    assert_int_equal(uvp_promise_state(cc->res), UVP_FULFILLED);
    expect_records(cc, uvp_promise_value(cc->res));
  } else {
    assert_int_equal(uvp_promise_reason(cc->res, &payload), UVP_EAGGREGATE);
    expect_records(cc, payload);
  }
  if (cc->d == NULL)
    return;
  if (uvp_promise_state(cc->res) == UVP_PENDING) {
    assert_int_equal(cc->h.ok.calls + cc->h.err.calls, 0);
  } else if (uvp_promise_state(cc->res) == UVP_FULFILLED) {
    assert_int_equal(cc->h.ok.calls, 1);
    assert_int_equal(cc->h.err.calls, 0);
    assert_ptr_equal(cc->h.ok.value, uvp_promise_value(cc->res));
    assert_ptr_equal(cc->h.ok.from, cc->res);
  } else {
    assert_int_equal(cc->h.err.calls, 1);
    assert_int_equal(cc->h.ok.calls, 0);
    assert_int_equal(cc->h.err.status, uvp_promise_reason(cc->res, &payload));
    assert_ptr_equal(cc->h.err.value, payload);
    assert_ptr_equal(cc->h.err.from, cc->res);
  }
}

/* Once the inputs that settle it have: the result settles as the table
 * says; then the call and the inputs xs[0..n) are dropped, and nothing may
 * be left. */
static inline void ccall_finish(fixture_t *f, ccall_t *cc, cin_t *xs,
                                size_t n) {
  run_loop(f);
  assert_int_not_equal(uvp_promise_state(cc->res), UVP_PENDING);
  expect_result(cc);
  ccall_release(cc);
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(xs[i].p);
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* The cases                                                                 */
/* ------------------------------------------------------------------------ */

/* Inputs pending, already settled, and the same promise several times:
 * `a` settled before the call without deciding (pending where every outcome
 * decides: race, and settled last), `b` pending and settling afterwards,
 * either way; both input orders. */
static inline void case_mixed_and_duplicate_inputs(fixture_t *f,
                                                   const comb_t *c) {
  count_unhandled(f);
  for (int b_rejects = 0; b_rejects < 2; b_rejects++) {
    for (int a_first = 0; a_first < 2; a_first++) {
      cin_t a, b;
      int quiet;
      ccall_t cc;

      if (quiet_status(c, &quiet))
        cin_settled(f, &a, quiet, SENTINEL(0));
      else
        cin_pending(f, &a);
      cin_pending(f, &b);
      cin_t *x = a_first ? &a : &b, *y = a_first ? &b : &a;
      cin_t *in[5] = {x, y, x, y, x};
      ccall_start(f, &cc, c, in, 5, 0, true);
      run_loop(f);
      assert_int_equal(uvp_promise_state(cc.res), UVP_PENDING);
      expect_result(&cc);
      cin_settle(&b, b_rejects ? UV_EPIPE : 0, SENTINEL(1), NULL);
      run_loop(f);
      assert_int_not_equal(uvp_promise_state(cc.res), UVP_PENDING);
      expect_result(&cc);
      if (!a.settled) {
        cin_settle(&a, 0, SENTINEL(0), NULL);
        run_loop(f);
        expect_result(&cc); /* unchanged, handler still called once */
      }
      ccall_release(&cc);
      release_all(2, a.p, b.p);
    }
  }
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* The caller may free its input array right after the call (ccall_start
 * does): input 0 settles after that, input 1 had settled before it without
 * deciding (race: it is pending and settles after input 0). */
static inline void case_free_inputs_after_call(fixture_t *f, const comb_t *c) {
  cin_t p0, p1;
  int quiet;
  ccall_t cc;

  count_unhandled(f);
  cin_pending(f, &p0);
  if (quiet_status(c, &quiet))
    cin_settled(f, &p1, quiet, SENTINEL(1));
  else
    cin_pending(f, &p1);
  cin_t *in[2] = {&p0, &p1};
  ccall_start(f, &cc, c, in, 2, 0, true);
  cin_settle(&p0, 0, SENTINEL(0), NULL);
  run_loop(f);
  assert_int_not_equal(uvp_promise_state(cc.res), UVP_PENDING);
  expect_result(&cc);
  if (!p1.settled) {
    cin_settle(&p1, 0, SENTINEL(1), NULL);
    run_loop(f);
    expect_result(&cc);
  }
  ccall_release(&cc);
  release_all(2, p0.p, p1.p);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* No reaction runs inside the call, even with every input settled
 * (fulfilled, mixed, rejected): the result is still pending when the call
 * returns, a handler registered on an input before it has not run, and
 * everything runs in order afterwards. */
static inline void case_no_reaction_inside_call(fixture_t *f, const comb_t *c) {
  static const int mixes[3][2] = {{0, 0}, {0, UV_EIO}, {UV_EIO, UV_EPIPE}};

  count_unhandled(f);
  for (int m = 0; m < 3; m++) {
    trace_t t = {0};
    cin_t a, b;
    ccall_t cc;
    uvp_promise_t *d0, *d1;
    rec_t before = {.trace = &t, .mark = 1}, after = {.trace = &t, .mark = 2};

    cin_settled(f, &a, mixes[m][0], SENTINEL(0));
    cin_settled(f, &b, mixes[m][1], SENTINEL(1));
    cin_t *in[2] = {&a, &b};
    assert_int_equal(uvp_promise_on(a.p, UVP_ON_BOTH, rec_cb, &before, &d0), 0);
    ccall_start(f, &cc, c, in, 2, 0, false);
    assert_int_equal(uvp_promise_state(cc.res), UVP_PENDING);
    assert_int_equal(before.calls, 0);
    assert_int_equal(uvp_promise_on(cc.res, UVP_ON_BOTH, rec_cb, &after, &d1),
                     0);
    assert_int_equal(t.n, 0);
    run_loop(f);

    check_sequence(&t, 2);
    expect_result(&cc);
    assert_ptr_equal(after.from, cc.res);
    release_all(5, a.p, b.p, cc.res, d0, d1);
  }
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* compose: the result of every combinator over the same pair becomes an
 * input of c, and a handler on c's result returns (adopts) another call of
 * c over the pair. */
typedef struct adopt_s {
  fixture_t *f;
  const comb_t *c;
  cin_t **in;
  size_t n;
  int calls;
  ccall_t cc;
} adopt_t;

static inline uvp_ret_t adopt_call_cb(void *arg, const uvp_outcome_t *o) {
  adopt_t *ad = arg;
  (void)o;
  ad->calls++;
  ccall_start(ad->f, &ad->cc, ad->c, ad->in, ad->n, 0, false);
  return uvp_ret_adopt(uvp_promise_retain(ad->cc.res));
}

/* Results compose with each other and with then: c over the results of
 * all, allSettled, race and any of a pair (one input already fulfilled,
 * the other fulfilled later), and a handler on c's result that adopts c of
 * the same pair. */
static inline void case_compose(fixture_t *f, const comb_t *c) {
  cin_t a, b, ri[COMB_COUNT];
  cin_t *pair[2] = {&a, &b}, *rin[COMB_COUNT];
  ccall_t inner[COMB_COUNT], outer;
  uvp_promise_t *chained, *dc;
  adopt_t ad = {.f = f, .c = c, .in = pair, .n = 2};
  both_t hc = {0};

  count_unhandled(f);
  cin_settled(f, &a, 0, SENTINEL(0));
  cin_pending(f, &b);
  for (int k = 0; k < COMB_COUNT; k++) {
    ccall_start(f, &inner[k], &combinators[k], pair, 2, 0, false);
    memset(&ri[k], 0, sizeof(ri[k]));
    cin_follow(&ri[k], inner[k].res);
    rin[k] = &ri[k];
  }
  ccall_start(f, &outer, c, rin, COMB_COUNT, 0, true);
  assert_int_equal(uvp_promise_then(outer.res, adopt_call_cb, &ad, &chained),
                   0);
  assert_int_equal(uvp_promise_on(chained, UVP_ON_BOTH, both_cb, &hc, &dc), 0);

  /* Each phase: the inner results as the pair says, then c over them. */
  for (int phase = 0; phase < 2; phase++) {
    if (phase == 1)
      cin_settle(&b, 0, SENTINEL(1), NULL);
    run_loop(f);
    for (int k = 0; k < COMB_COUNT; k++) {
      expect_result(&inner[k]);
      cin_follow(&ri[k], inner[k].res);
    }
    expect_result(&outer);
  }

  assert_int_equal(uvp_promise_state(outer.res), UVP_FULFILLED);
  assert_int_equal(ad.calls, 1);
  expect_result(&ad.cc);
  assert_int_equal(uvp_promise_state(chained), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(chained), uvp_promise_value(ad.cc.res));
  assert_int_equal(hc.ok.calls, 1);
  assert_int_equal(hc.err.calls, 0);
  assert_ptr_equal(hc.ok.value, uvp_promise_value(chained));
  for (int k = 0; k < COMB_COUNT; k++)
    ccall_release(&inner[k]);
  ccall_release(&outer);
  ccall_release(&ad.cc);
  release_all(4, a.p, b.p, chained, dc);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* Only uvp settles the result: resolve, reject and resolve_with on it fail
 * with UVP_ESETTLED, before and after it settles as its input says; the
 * same for the result of the empty input (settled at once, or for race
 * never: it waits for teardown). */
static inline void case_result_not_settleable(fixture_t *f, const comb_t *c) {
  cin_t in;
  cin_t *one[1] = {&in};
  uvp_promise_t *other = fulfilled(f, NULL);
  ccall_t cc, e;
  bool e_settles = c->complete != COMPLETE_NEVER;

  cin_pending(f, &in);
  ccall_start(f, &cc, c, one, 1, 0, true);
  ccall_start(f, &e, c, NULL, 0, 0, e_settles);
  for (int settled = 0; settled < 2; settled++) {
    uvp_promise_t *rs[2] = {cc.res, e.res};
    for (int k = 0; k < 2; k++) {
      assert_int_equal(uvp_promise_resolve(rs[k], SENTINEL(3), NULL),
                       UVP_ESETTLED);
      assert_int_equal(uvp_promise_reject(rs[k], UV_EIO, NULL, NULL),
                       UVP_ESETTLED);
      assert_int_equal(uvp_promise_resolve_with(rs[k], other), UVP_ESETTLED);
    }
    run_loop(f);
    expect_result(&cc);
    expect_result(&e);
    if (settled == 0) {
      assert_int_equal(uvp_promise_state(cc.res), UVP_PENDING);
      cin_settle(&in, 0, SENTINEL(1), NULL);
      run_loop(f);
      expect_result(&cc);
    }
  }
  ccall_release(&cc);
  ccall_release(&e);
  release_all(2, in.p, other);
  if (e_settles)
    assert_no_live(f);
  else
    assert_int_equal(live_count(f), 1); /* e waits for teardown */
}

/* Argument errors change nothing: no result is created and the input is
 * left alone. */
static inline void case_invalid_arguments(fixture_t *f, const comb_t *c) {
  uvp_promise_t *p = pending(f);
  uvp_promise_t *with_null[2] = {p, NULL};
  uvp_promise_t *out = NULL;
  other_t o;

  assert_int_equal(c->call(NULL, &p, 1, 0, &out), UV_EINVAL);
  assert_int_equal(c->call(f->ctx, &p, 1, 0, NULL), UV_EINVAL);
  assert_int_equal(c->call(f->ctx, NULL, 1, 0, &out), UV_EINVAL);
  assert_int_equal(c->call(f->ctx, with_null, 2, 0, &out), UV_EINVAL);
  if (c->has_flags)
    assert_int_equal(c->call(f->ctx, &p, 1, 8, &out), UV_EINVAL);
  other_open(&o);
  uvp_promise_t *mixed[2] = {p, o.p};
  assert_int_equal(c->call(f->ctx, mixed, 2, 0, &out), UVP_EXCTX);
  other_close(&o);
  assert_null(out);
  assert_int_equal(live_count(f), 1);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  uvp_promise_release(p);
  assert_no_live(f);
}

/* 100 000 inputs settled in reverse order from one loop callback, with
 * outcomes that do not decide (race: all fulfil, the first to settle, the
 * last input, wins); the input array is freed right after the call. */
static inline void case_100k_inputs(fixture_t *f, const comb_t *c) {
  enum { N = 100000 };
  cin_t *xs = calloc(N, sizeof(*xs));
  cin_t **in = malloc(N * sizeof(*in));
  uvp_promise_t **keep = malloc(N * sizeof(*keep));
  int mode = quiet_mode(c);
  ccall_t cc;
  mass_t m;

  count_unhandled(f);
  assert_non_null(xs);
  assert_non_null(in);
  assert_non_null(keep);
  for (size_t i = 0; i < N; i++) {
    xs[i].p = keep[i] = pending(f);
    in[i] = &xs[i];
  }
  uint64_t t0 = uv_hrtime();
  ccall_start(f, &cc, c, in, N, 0, true);
  mass_start(f, &m, keep, N, mode);
  run_loop(f);
  uint64_t t1 = uv_hrtime();

  for (size_t k = N; k-- > 0;) /* as mass_settle_cb did */
    cin_note(&xs[k], mode_status(mode, k), INT_VALUE(k));
  expect_result(&cc);
  print_message("%s: 100000 inputs, call+settle+drain %.1f ms "
                "(drain after settling %.1f ms)\n",
                c->name, (double)(t1 - t0) / 1e6,
                (double)(t1 - m.settled_ns) / 1e6);
  release_array(keep, N);
  free(keep);
  free(in);
  free(xs);
  ccall_release(&cc);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* What the result exposes (values, records, payloads, the input pointers)
 * stays valid while the result is referenced, after every input reference
 * is gone; what it does not expose (race's losers) is freed with the
 * inputs. */
static inline void case_live_with_result(fixture_t *f, const comb_t *c) {
  enum { N = 4 };
  int freed = 0, mode = quiet_mode(c);
  cin_t xs[N];
  cin_t *in[N];
  ccall_t cc;

  count_unhandled(f);
  cin_pending_n(f, xs, in, N);
  ccall_start(f, &cc, c, in, N, 0, true);
  for (int k = N; k-- > 0;) {
    cin_settle(&xs[k], mode_status(mode, k), boxed_new(k, &freed), boxed_free);
    uvp_promise_release(xs[k].p);
  }
  run_loop(f);

  expect_result(&cc);
  const cin_t *win = ccall_decider(&cc);
  assert_int_equal(freed, win != NULL ? N - 1 : 0);
  if (win != NULL) {
    assert_int_equal(((boxed_t *)win->value)->v, (int)(win - xs));
  } else {
    /* the inputs too: the result keeps them */
    for (int i = 0; i < N; i++) {
      assert_int_equal(((boxed_t *)xs[i].value)->v, i);
      assert_int_equal(uvp_promise_state(xs[i].p),
                       xs[i].status == 0 ? UVP_FULFILLED : UVP_REJECTED);
    }
  }
  ccall_release(&cc);
  assert_int_equal(freed, N);
  assert_int_equal(g_unhandled, 0);
  assert_no_live(f);
}

/* UVP_TAKE_INPUTS: the call takes a reference to each input.  Taken, the
 * inputs live as long as the result needs them (what it exposes stays
 * valid once the test's own references are gone; race's losers go when it
 * is decided) and go with it; a cancelled result cancels and frees them,
 * and teardown frees those still pending; a call that fails releases them
 * at once, whatever failed. */
static inline void case_take_inputs(fixture_t *f, const comb_t *c) {
  enum { N = 4 };
  int freed = 0, mode = quiet_mode(c);
  cin_t xs[N], *in[N];
  ccall_t cc;

  count_unhandled(f);
  cin_pending_n(f, xs, in, N);
  for (int i = 0; i < N; i++)
    uvp_promise_retain(xs[i].p); /* the test's: the call takes the other */
  ccall_start(f, &cc, c, in, N, UVP_TAKE_INPUTS, true);
  for (int k = N; k-- > 0;) {
    cin_settle(&xs[k], mode_status(mode, k), boxed_new(k, &freed), boxed_free);
    uvp_promise_release(xs[k].p);
  }
  run_loop(f);
  expect_result(&cc);
  const cin_t *win = ccall_decider(&cc);
  assert_int_equal(freed, win != NULL ? N - 1 : 0);
  ccall_release(&cc);
  assert_int_equal(freed, N);
  assert_no_live(f);

  /* the result cancelled: its inputs, which only it consumed, too */
  cin_pending_n(f, xs, in, N);
  ccall_start(f, &cc, c, in, N, UVP_TAKE_INPUTS, false);
  assert_int_equal(uvp_promise_cancel(cc.res), 0);
  run_loop(f);
  ccall_release(&cc);
  assert_no_live(f);

  /* failed calls */
  uvp_promise_t *ins[2], *out = NULL;
  other_t o;
  freed = 0;
  for (int k = 0; k < 4; k++) {
    assert_int_equal(
        uvp_promise_resolved(f->ctx, boxed_new(k, &freed), boxed_free, &ins[0]),
        0);
    ins[1] = NULL;
    if (k == 3) {
      other_open(&o);
      ins[1] = uvp_promise_retain(o.p);
    }
    int rc = k == 0   ? c->call(f->ctx, ins, 2, UVP_TAKE_INPUTS, &out)
             : k == 1 ? c->call(f->ctx, ins, 1, UVP_TAKE_INPUTS | 8, &out)
             : k == 2 ? c->call(f->ctx, ins, 1, UVP_TAKE_INPUTS, NULL)
                      : c->call(f->ctx, ins, 2, UVP_TAKE_INPUTS, &out);
    assert_int_equal(rc, k == 3 ? UVP_EXCTX : UV_EINVAL);
    assert_int_equal(freed, k + 1);
    if (k == 3)
      other_close(&o); /* its context closes: its promise went */
  }
  assert_null(out);
  assert_no_live(f);

  /* pending at teardown (the fixture's allocator check) */
  cin_pending_n(f, xs, in, N);
  ccall_start(f, &cc, c, in, N, UVP_TAKE_INPUTS, false);
  uvp_promise_release(cc.res);
  assert_int_equal(g_unhandled, 0);
}

/* UVP_CANCEL_LOSERS: once the outcome is decided, the inputs still pending
 * are cancelled; without the flag they are left alone.  Input 0 settles
 * first without deciding (where such an outcome exists), input 1 decides,
 * input 2 is a loser.  The losers' rejections were observed by c: none is
 * reported unhandled; c's result, if rejected, is. */
static inline void case_cancel_losers(fixture_t *f, const comb_t *c) {
  int decisive = comb_decides(c, 0) ? 0 : UV_EIO;

  count_unhandled(f);
  for (int flags = 0; flags <= UVP_CANCEL_LOSERS; flags += UVP_CANCEL_LOSERS) {
    cin_t xs[3], *in[3];
    ccall_t cc;
    int quiet;

    cin_pending_n(f, xs, in, 3);
    ccall_start(f, &cc, c, in, 3, flags, false);
    if (quiet_status(c, &quiet)) {
      cin_settle(&xs[0], quiet, SENTINEL(0), NULL);
      run_loop(f);
      expect_result(&cc);
      assert_int_equal(uvp_promise_state(xs[2].p), UVP_PENDING);
    }
    cin_settle(&xs[1], decisive, SENTINEL(1), NULL);
    run_loop(f);
    expect_result(&cc);
    assert_ptr_equal(ccall_decider(&cc), &xs[1]);
    for (int i = 0; i < 3; i++) {
      if (xs[i].settled)
        assert_int_equal(uvp_promise_state(xs[i].p),
                         xs[i].status == 0 ? UVP_FULFILLED : UVP_REJECTED);
      else if (flags)
        assert_int_equal(uvp_promise_reason(xs[i].p, NULL), UV_ECANCELED);
      else
        assert_int_equal(uvp_promise_state(xs[i].p), UVP_PENDING);
    }
    int before = g_unhandled;
    for (int i = 0; i < 3; i++)
      uvp_promise_release(xs[i].p);
    assert_int_equal(g_unhandled, before);
    ccall_release(&cc);
    assert_int_equal(g_unhandled, before + (decisive != 0));
  }
  assert_no_live(f);
}

/* ------------------------------------------------------------------------ */
/* test262 ports that all/ and allSettled/ share                             */
/* ------------------------------------------------------------------------ */

/* The same test262 file stands in both directories, named alike; the port
 * is the file's scenario, the expected result comes from the table. */

/* call-resolve-element.js, call-resolve-element-items.js: an input's
 * outcome counts once: settling it again fails with UVP_ESETTLED, and the
 * result settles once, with the first values. */
static inline void port_call_resolve_element(fixture_t *f, const comb_t *c) {
  cin_t xs[2], *in[2];
  ccall_t cc;

  cin_pending_n(f, xs, in, 2);
  ccall_start(f, &cc, c, in, 2, 0, true);
  for (int i = 0; i < 2; i++) {
    cin_settle(&xs[i], 0, SENTINEL(i), NULL);
    assert_int_equal(uvp_promise_resolve(xs[i].p, SENTINEL(5), NULL),
                     UVP_ESETTLED);
  }
  assert_int_equal(cc.h.ok.calls + cc.h.err.calls, 0);
  ccall_finish(f, &cc, xs, 2);
}

/* call-resolve-element-after-return.js: an input fulfilled before the
 * call; settling it again after the result settled changes nothing. */
static inline void port_call_resolve_element_after_return(fixture_t *f,
                                                          const comb_t *c) {
  cin_t x;
  cin_t *in[1] = {&x};
  ccall_t cc;

  cin_settled(f, &x, 0, SENTINEL(1));
  ccall_start(f, &cc, c, in, 1, 0, true);
  run_loop(f);
  assert_int_not_equal(uvp_promise_state(cc.res), UVP_PENDING);
  expect_result(&cc);
  assert_int_equal(uvp_promise_resolve(x.p, SENTINEL(2), NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reject(x.p, UV_EIO, NULL, NULL), UVP_ESETTLED);
  ccall_finish(f, &cc, &x, 1); /* unchanged, handler still called once */
}

/* resolve-before-loop-exit.js: p1 follows the promise derived by a handler
 * on p2, so p2's handler settles p1 while p2 and p3 are already fulfilled:
 * the remaining count cannot be tampered with, and the result settles once,
 * with all three. */
static inline void port_resolve_before_loop_exit(fixture_t *f,
                                                 const comb_t *c) {
  cin_t xs[3], *in[3] = {&xs[0], &xs[1], &xs[2]};
  uvp_promise_t *dp2;
  rec_t h2 = {0};
  ccall_t cc;

  cin_pending(f, &xs[0]);
  cin_settled(f, &xs[1], 0, SENTINEL(2));
  cin_settled(f, &xs[2], 0, SENTINEL(3));
  h2.ret = uvp_ret_value(SENTINEL(1), NULL);
  assert_int_equal(uvp_promise_then(xs[1].p, rec_cb, &h2, &dp2), 0);
  assert_int_equal(uvp_promise_resolve_with(xs[0].p, dp2), 0);
  ccall_start(f, &cc, c, in, 3, 0, true);
  run_loop(f);
  assert_int_equal(h2.calls, 1);
  cin_note(&xs[0], 0, SENTINEL(1)); /* through dp2 */
  uvp_promise_release(dp2);
  ccall_finish(f, &cc, xs, 3);
}

/* resolve-before-loop-exit-from-same.js: p2 fulfilled twice (the second
 * fails) and p3 once before the call, p1 later: the result waits for p1,
 * then settles once. */
static inline void port_resolve_before_loop_exit_from_same(fixture_t *f,
                                                           const comb_t *c) {
  cin_t xs[3], *in[3];
  ccall_t cc;

  cin_pending_n(f, xs, in, 3);
  cin_settle(&xs[1], 0, SENTINEL(2), NULL);
  assert_int_equal(uvp_promise_resolve(xs[1].p, SENTINEL(5), NULL),
                   UVP_ESETTLED);
  cin_settle(&xs[2], 0, SENTINEL(3), NULL);
  ccall_start(f, &cc, c, in, 3, 0, true);
  run_loop(f);
  expect_result(&cc);
  cin_settle(&xs[0], 0, SENTINEL(1), NULL);
  ccall_finish(f, &cc, xs, 3);
}

/* resolve-from-same-thenable.js: p1 fulfilled three times (the last two
 * fail), then p2 and p3: the result settles once. */
static inline void port_resolve_from_same_thenable(fixture_t *f,
                                                   const comb_t *c) {
  cin_t xs[3], *in[3];
  ccall_t cc;

  cin_pending_n(f, xs, in, 3);
  ccall_start(f, &cc, c, in, 3, 0, true);
  cin_settle(&xs[0], 0, SENTINEL(1), NULL);
  for (int k = 5; k <= 6; k++)
    assert_int_equal(uvp_promise_resolve(xs[0].p, SENTINEL(k), NULL),
                     UVP_ESETTLED);
  run_loop(f);
  expect_result(&cc);
  cin_settle(&xs[1], 0, SENTINEL(2), NULL);
  cin_settle(&xs[2], 0, SENTINEL(3), NULL);
  ccall_finish(f, &cc, xs, 3);
}

/* ------------------------------------------------------------------------ */
/* Instantiation                                                             */
/* ------------------------------------------------------------------------ */

#define COMBINATOR_CASE_(name, comb)                                           \
  static void c_##name(void **state) { case_##name(*state, (comb)); }

#define COMBINATOR_CASES(comb)                                                 \
  COMBINATOR_CASE_(mixed_and_duplicate_inputs, comb)                           \
  COMBINATOR_CASE_(free_inputs_after_call, comb)                               \
  COMBINATOR_CASE_(no_reaction_inside_call, comb)                              \
  COMBINATOR_CASE_(live_with_result, comb)                                     \
  COMBINATOR_CASE_(compose, comb)                                              \
  COMBINATOR_CASE_(result_not_settleable, comb)                                \
  COMBINATOR_CASE_(invalid_arguments, comb)                                    \
  COMBINATOR_CASE_(take_inputs, comb)                                          \
  COMBINATOR_CASE_(100k_inputs, comb)

#define COMBINATOR_CASE_TESTS                                                  \
  FIXTURE_TEST(c_mixed_and_duplicate_inputs),                                  \
      FIXTURE_TEST(c_free_inputs_after_call),                                  \
      FIXTURE_TEST(c_no_reaction_inside_call),                                 \
      FIXTURE_TEST(c_live_with_result), FIXTURE_TEST(c_compose),               \
      FIXTURE_TEST(c_result_not_settleable),                                   \
      FIXTURE_TEST(c_invalid_arguments), FIXTURE_TEST(c_take_inputs),          \
      FIXTURE_TEST(c_100k_inputs)

#define COMBINATOR_PORT_(name, comb)                                           \
  static void name(void **state) { port_##name(*state, (comb)); }

/* The test262 ports that all/ and allSettled/ share. */
#define COMBINATOR_ELEMENT_PORTS(comb)                                         \
  COMBINATOR_PORT_(call_resolve_element, comb)                                 \
  COMBINATOR_PORT_(call_resolve_element_after_return, comb)                    \
  COMBINATOR_PORT_(resolve_before_loop_exit, comb)                             \
  COMBINATOR_PORT_(resolve_before_loop_exit_from_same, comb)                   \
  COMBINATOR_PORT_(resolve_from_same_thenable, comb)

#define COMBINATOR_ELEMENT_PORT_TESTS                                          \
  FIXTURE_TEST(call_resolve_element),                                          \
      FIXTURE_TEST(call_resolve_element_after_return),                         \
      FIXTURE_TEST(resolve_before_loop_exit),                                  \
      FIXTURE_TEST(resolve_before_loop_exit_from_same),                        \
      FIXTURE_TEST(resolve_from_same_thenable)

/* For the combinators that take flags (all, race, any). */
#define COMBINATOR_FLAG_CASES(comb) COMBINATOR_CASE_(cancel_losers, comb)
#define COMBINATOR_FLAG_CASE_TESTS FIXTURE_TEST(c_cancel_losers)

#endif
