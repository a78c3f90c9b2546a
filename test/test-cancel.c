/* Cancellation: producers' hooks, combinators cancelling their inputs, the
 * UVP_CANCEL_LOSERS flag, cancellation travelling up a then-chain (and
 * stopping at a promise somebody else still consumes), cancelling from
 * handlers and hooks, and teardown.
 *
 * Every producer below is a real uvp promise with a counting hook; nothing
 * is mocked.  Hooks count into per-test structs that outlive the context
 * (hooks may run during uvp_ctx_close, which every test reaches). */
#include "helpers.h"

#if defined(__GNUC__)
#define HELPER static inline __attribute__((unused))
#else
#define HELPER static inline
#endif

/* A handler that records what it saw and fulfils with `ret_value`. */
typedef struct rec_s {
  int calls;
  int status;
  void *value;
} rec_t;

static uvp_ret_t rec_cb(void *arg, const uvp_outcome_t *in) {
  rec_t *r = arg;
  r->calls++;
  r->status = in->status;
  r->value = in->value;
  return uvp_ret_value(NULL, NULL);
}

HELPER void release_all(uvp_promise_t **ps, size_t n) {
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(ps[i]);
}

/* ---- the hook ------------------------------------------------------------ */

static void test_hook_runs_exactly_once(void **state) {
  fixture_t *f = *state;
  hook_t h = {0};
  rec_t seen = {0};
  uvp_promise_t *p = producer(f, &h), *d;
  assert_int_equal(uvp_promise_catch(p, rec_cb, &seen, &d), 0);

  assert_int_equal(uvp_promise_cancel(p), 0);
  /* Rejected first, then the hook: it sees the reason already there. */
  assert_int_equal(h.calls, 1);
  assert_ptr_equal(h.p, p);
  assert_int_equal(h.code, UV_ECANCELED);
  void *payload = SENTINEL(0);
  assert_int_equal(uvp_promise_reason(p, &payload), UV_ECANCELED);
  assert_null(payload);
  /* The handler is queued, never run inside cancel. */
  assert_int_equal(seen.calls, 0);

  /* A second cancel and late settlement attempts change nothing. */
  assert_int_equal(uvp_promise_cancel(p), UVP_ESETTLED);
  assert_int_equal(uvp_promise_resolve(p, SENTINEL(1), NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_set_cancel(p, count_hook, &h), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(seen.calls, 1);
  assert_int_equal(seen.status, UV_ECANCELED);
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);

  /* Teardown with p still held: the hook does not run again. */
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(h.calls, 1);
  uvp_promise_release(d);
  uvp_promise_release(p);
}

static void test_cancel_without_hook_then_set_hook(void **state) {
  fixture_t *f = *state;
  hook_t h = {0};
  rec_t ok = {0}, err = {0};
  uvp_promise_t *p, *d1, *d2;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, rec_cb, &ok, &d1), 0);
  assert_int_equal(uvp_promise_catch(d1, rec_cb, &err, &d2), 0);

  /* Cancelled before any hook was set: just a rejection. */
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  /* A hook set afterwards is refused and never runs. */
  assert_int_equal(uvp_promise_set_cancel(p, count_hook, &h), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(h.calls, 0);
  /* The rejection travels like any other. */
  assert_int_equal(ok.calls, 0);
  assert_int_equal(err.calls, 1);
  assert_int_equal(err.status, UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(d1, NULL), UV_ECANCELED);
  uvp_promise_release(d2);
  uvp_promise_release(d1);
  uvp_promise_release(p);
}

static void test_cancel_after_settlement_is_noop(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  int freed = 0;
  hook_t h1 = {0}, h2 = {0};
  uvp_promise_t *a = producer(f, &h1), *b = producer(f, &h2), *c;
  boxed_t *v = boxed_new(7, &freed);
  assert_int_equal(uvp_promise_resolve(a, v, boxed_free), 0);
  assert_int_equal(uvp_promise_reject(b, UV_EIO, NULL, NULL), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(2), NULL, &c), 0);
  /* Not yet seen by any handler: still settled, so still a no-op. */
  assert_int_equal(uvp_promise_cancel(a), UVP_ESETTLED);
  assert_int_equal(uvp_promise_cancel(b), UVP_ESETTLED);
  assert_int_equal(uvp_promise_cancel(c), UVP_ESETTLED);
  assert_int_equal(uvp_promise_set_cancel(c, count_hook, &h1), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(uvp_promise_cancel(a), UVP_ESETTLED);
  /* Settling dropped the hooks: they never run, also not at teardown. */
  assert_int_equal(h1.calls, 0);
  assert_int_equal(h2.calls, 0);
  assert_int_equal(uvp_promise_state(a), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(a), v);
  assert_int_equal(freed, 0);
  assert_int_equal(uvp_promise_reason(b, NULL), UV_EIO);
  assert_ptr_equal(uvp_promise_value(c), SENTINEL(2));
  assert_int_equal(uvp_promise_cancel(NULL), UV_EINVAL);
  assert_int_equal(uvp_promise_set_cancel(NULL, count_hook, &h1), UV_EINVAL);
  uvp_promise_release(a);
  assert_int_equal(freed, 1);
  uvp_promise_release(b);
  uvp_promise_release(c);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(h1.calls + h2.calls, 0);
}

static void test_set_cancel_replaces_and_clears(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h1 = {0}, h2 = {0};
  uvp_promise_t *p = producer(f, &h1), *q = producer(f, &h1);
  assert_int_equal(uvp_promise_set_cancel(p, count_hook, &h2), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(h1.calls, 0);
  assert_int_equal(h2.calls, 1);
  /* NULL removes the hook. */
  assert_int_equal(uvp_promise_set_cancel(q, NULL, NULL), 0);
  assert_int_equal(uvp_promise_cancel(q), 0);
  assert_int_equal(uvp_promise_reason(q, NULL), UV_ECANCELED);
  assert_int_equal(h1.calls, 0);
  assert_int_equal(h2.calls, 1);
  uvp_promise_release(p);
  uvp_promise_release(q);
  /* Nobody looked at either rejection, but a cancellation the program
   * asked for is not a failure to report. */
  assert_int_equal(g_unhandled, 0);
}

/* A promise uvp settles (a timer's, a combinator's, a handler's derived
 * one, a file request's) already has uvp's hook, or none because uvp
 * settles it another way: a hook of the program's would replace it, and
 * cancelling would then leave the timer, the combinator's state or the
 * request behind.  Like resolve, set_cancel refuses with UVP_ESETTLED. */
static void count_int(void *arg) { (*(int *)arg)++; }

static void test_set_cancel_refused_on_promises_uvp_settles(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h = {0};
  int freed = 0;
  uvp_promise_t *src, *ps[5];
  assert_int_equal(uvp_promise_new(f->ctx, &src), 0);
  assert_int_equal(uvp_delay(f->ctx, 60000, NULL, NULL, 0, &ps[0]), 0);
  assert_int_equal(uvp_promise_all(f->ctx, &src, 1, 0, &ps[1]), 0);
  assert_int_equal(uvp_promise_then(src, rec_cb, NULL, &ps[2]), 0);
  assert_int_equal(uvp_fs_stat(f->ctx, "/", &ps[3]), 0);
  assert_int_equal(uvp_timeout(src, 60000, 0, &ps[4]), 0);
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(uvp_promise_set_cancel(ps[i], count_hook, &h),
                     UVP_ESETTLED);
    assert_int_equal(uvp_promise_set_cancel(ps[i], NULL, NULL), UVP_ESETTLED);
    assert_int_equal(
        uvp_promise_set_cancel_full(ps[i], count_hook, &freed, count_int),
        UVP_ESETTLED);
    assert_int_equal(uvp_promise_cancel(ps[i]), 0);
  }
  run_loop(f);
  assert_int_equal(h.calls, 0);
  assert_int_equal(freed, 5); /* each refusal's notifier, once */
  release_all(ps, 5);
  uvp_promise_release(src);
  assert_int_equal(g_unhandled, 0);
}

/* ---- combinators: cancelling the result ---------------------------------- */

enum { K_ALL, K_SETTLED, K_RACE, K_ANY };

static int combine(fixture_t *f, int kind, uvp_promise_t **in, size_t n,
                   int flags, uvp_promise_t **out) {
  switch (kind) {
  case K_ALL:
    return uvp_promise_all(f->ctx, in, n, flags, out);
  case K_SETTLED:
    return uvp_promise_all_settled(f->ctx, in, n, out);
  case K_RACE:
    return uvp_promise_race(f->ctx, in, n, flags, out);
  default:
    return uvp_promise_any(f->ctx, in, n, flags, out);
  }
}

/* Inputs: some already settled (which must not decide the result: all gets
 * a fulfilment, any a rejection, allSettled both; race none, because it is
 * cancelled before the loop runs), and two pending producers. */
static void cancel_combinator_result(fixture_t *f, int kind) {
  count_unhandled(f);
  hook_t ha = {0}, hb = {0}, hs = {0};
  uvp_promise_t *in[4];
  size_t n = 0;
  uvp_promise_t *settled_ok = NULL, *settled_err = NULL;
  if (kind == K_ALL || kind == K_SETTLED || kind == K_RACE) {
    settled_ok = producer(f, &hs);
    assert_int_equal(uvp_promise_resolve(settled_ok, SENTINEL(0), NULL), 0);
    in[n++] = settled_ok;
  }
  if (kind == K_SETTLED || kind == K_ANY) {
    settled_err = producer(f, &hs);
    assert_int_equal(uvp_promise_reject(settled_err, UV_EIO, NULL, NULL), 0);
    in[n++] = settled_err;
  }
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb);
  in[n++] = a;
  in[n++] = b;

  uvp_promise_t *r, *d;
  rec_t seen = {0};
  assert_int_equal(combine(f, kind, in, n, 0, &r), 0);
  assert_int_equal(uvp_promise_on(r, UVP_ON_BOTH, rec_cb, &seen, &d), 0);
  if (kind != K_RACE) {
    run_loop(f); /* the settled inputs have been looked at */
    assert_int_equal(uvp_promise_state(r), UVP_PENDING);
  }
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ECANCELED);
  /* Pending inputs cancelled, each once; settled ones left alone. */
  assert_int_equal(ha.calls, 1);
  assert_int_equal(hb.calls, 1);
  assert_int_equal(uvp_promise_reason(a, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(b, NULL), UV_ECANCELED);
  assert_int_equal(hs.calls, 0);
  if (settled_ok != NULL)
    assert_ptr_equal(uvp_promise_value(settled_ok), SENTINEL(0));
  if (settled_err != NULL)
    assert_int_equal(uvp_promise_reason(settled_err, NULL), UV_EIO);

  /* Queued reactions of the inputs (race's settled one, the cancelled
   * ones) do not change the result afterwards. */
  run_loop(f);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ECANCELED);
  assert_int_equal(seen.calls, 1);
  assert_int_equal(seen.status, UV_ECANCELED);
  assert_int_equal(uvp_promise_cancel(r), UVP_ESETTLED);
  assert_int_equal(ha.calls + hb.calls + hs.calls, 2);
  /* Only uvp settles the result. */
  assert_int_equal(uvp_promise_resolve(r, NULL, NULL), UVP_ESETTLED);
  uvp_promise_release(d);
  uvp_promise_release(r);
  release_all(in, n);
}

static void test_cancel_all_result(void **state) {
  cancel_combinator_result(*state, K_ALL);
}
static void test_cancel_all_settled_result(void **state) {
  cancel_combinator_result(*state, K_SETTLED);
}
static void test_cancel_race_result(void **state) {
  cancel_combinator_result(*state, K_RACE);
}
static void test_cancel_any_result(void **state) {
  cancel_combinator_result(*state, K_ANY);
}

/* ---- UVP_CANCEL_LOSERS --------------------------------------------------- */

/* Three producers; `decide` settles what decides the outcome:
 *   race: b fulfils; any: a rejects, b fulfils; all: b rejects.
 * With the flag, the inputs still pending afterwards (a for race, c for
 * all three; a for all too) are cancelled; without it (the default, since
 * an input may have other consumers) nothing is. */
static void losers(fixture_t *f, int kind, int flags) {
  count_unhandled(f);
  hook_t h[3] = {{0}, {0}, {0}};
  uvp_promise_t *in[3];
  for (int i = 0; i < 3; i++)
    in[i] = producer(f, &h[i]);
  uvp_promise_t *r;
  assert_int_equal(combine(f, kind, in, 3, flags, &r), 0);
  if (kind == K_ANY)
    assert_int_equal(uvp_promise_reject(in[0], UV_EIO, NULL, NULL), 0);
  if (kind == K_ALL)
    assert_int_equal(uvp_promise_reject(in[1], UV_EPIPE, NULL, NULL), 0);
  else
    assert_int_equal(uvp_promise_resolve(in[1], SENTINEL(1), NULL), 0);
  /* Nothing is cancelled inside the settling call. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(h[i].calls, 0);
  run_loop(f);

  if (kind == K_ALL) {
    assert_int_equal(uvp_promise_reason(r, NULL), UV_EPIPE);
  } else {
    assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
    assert_ptr_equal(uvp_promise_value(r), SENTINEL(1));
  }
  assert_int_equal(h[1].calls, 0); /* the winner / the failure */
  bool a_pending_before = kind != K_ANY;
  if (flags & UVP_CANCEL_LOSERS) {
    assert_int_equal(h[0].calls, a_pending_before ? 1 : 0);
    assert_int_equal(h[2].calls, 1);
    assert_int_equal(uvp_promise_reason(in[2], NULL), UV_ECANCELED);
    if (a_pending_before)
      assert_int_equal(uvp_promise_reason(in[0], NULL), UV_ECANCELED);
    else
      assert_int_equal(uvp_promise_reason(in[0], NULL), UV_EIO);
  } else {
    assert_int_equal(h[0].calls + h[2].calls, 0);
    assert_int_equal(uvp_promise_state(in[2]), UVP_PENDING);
    /* Their producers can still settle them. */
    assert_int_equal(uvp_promise_resolve(in[2], NULL, NULL), 0);
    if (a_pending_before)
      assert_int_equal(uvp_promise_resolve(in[0], NULL, NULL), 0);
    run_loop(f);
    /* Late outcomes do not change the decided result. */
    if (kind == K_ALL)
      assert_int_equal(uvp_promise_reason(r, NULL), UV_EPIPE);
    else
      assert_ptr_equal(uvp_promise_value(r), SENTINEL(1));
  }
  uvp_promise_release(r);
  release_all(in, 3);
}

static void test_race_cancel_losers(void **state) {
  losers(*state, K_RACE, UVP_CANCEL_LOSERS);
}
static void test_race_default_keeps_losers(void **state) {
  losers(*state, K_RACE, 0);
}
static void test_any_cancel_losers(void **state) {
  losers(*state, K_ANY, UVP_CANCEL_LOSERS);
}
static void test_any_default_keeps_losers(void **state) {
  losers(*state, K_ANY, 0);
}
static void test_all_cancel_losers(void **state) {
  losers(*state, K_ALL, UVP_CANCEL_LOSERS);
}
static void test_all_default_keeps_losers(void **state) {
  losers(*state, K_ALL, 0);
}

/* all with the flag that simply fulfils: nothing is left to cancel. */
static void test_losers_flag_nothing_to_cancel(void **state) {
  fixture_t *f = *state;
  hook_t h[2] = {{0}, {0}};
  uvp_promise_t *in[2] = {producer(f, &h[0]), producer(f, &h[1])}, *r;
  assert_int_equal(uvp_promise_all(f->ctx, in, 2, UVP_CANCEL_LOSERS, &r), 0);
  assert_int_equal(uvp_promise_resolve(in[0], SENTINEL(0), NULL), 0);
  assert_int_equal(uvp_promise_resolve(in[1], SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  const uvp_values_t *v = uvp_promise_value(r);
  assert_int_equal(v->count, 2);
  assert_ptr_equal(v->values[1], SENTINEL(1));
  assert_int_equal(h[0].calls + h[1].calls, 0);
  uvp_promise_release(r);
  release_all(in, 2);
}

/* ---- shared inputs ------------------------------------------------------- */

/* The same promise twice in one combinator: one cancellation, one hook
 * call. */
static void test_same_input_twice_cancelled_once(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0}, hb = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb), *r1, *r2;
  uvp_promise_t *in[3] = {a, b, a};
  assert_int_equal(uvp_promise_all(f->ctx, in, 3, 0, &r1), 0);
  assert_int_equal(uvp_promise_cancel(r1), 0);
  assert_int_equal(ha.calls, 1);
  assert_int_equal(hb.calls, 1);
  run_loop(f);
  assert_int_equal(ha.calls, 1);
  uvp_promise_release(r1);
  uvp_promise_release(a);
  uvp_promise_release(b);

  /* race [c, c, d] with losers: d wins, c's hook runs once. */
  hook_t hc = {0}, hd = {0};
  uvp_promise_t *c = producer(f, &hc), *d = producer(f, &hd);
  uvp_promise_t *in2[3] = {c, c, d};
  assert_int_equal(uvp_promise_race(f->ctx, in2, 3, UVP_CANCEL_LOSERS, &r2), 0);
  assert_int_equal(uvp_promise_resolve(d, SENTINEL(3), NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(r2), SENTINEL(3));
  assert_int_equal(hc.calls, 1);
  assert_int_equal(hd.calls, 0);
  uvp_promise_release(r2);
  uvp_promise_release(c);
  uvp_promise_release(d);
}

/* An input that someone else also consumes: by default the race leaves it
 * pending and the other consumer gets its real outcome later; with
 * UVP_CANCEL_LOSERS it is cancelled regardless (the header's reason for the
 * default), and the other consumer sees UV_ECANCELED. */
static void shared_loser(fixture_t *f, int flags) {
  count_unhandled(f);
  hook_t ha = {0}, hb = {0};
  rec_t other = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb), *r, *d;
  assert_int_equal(uvp_promise_on(a, UVP_ON_BOTH, rec_cb, &other, &d), 0);
  uvp_promise_t *in[2] = {a, b};
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, flags, &r), 0);
  assert_int_equal(uvp_promise_resolve(b, SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(r), SENTINEL(1));
  if (flags & UVP_CANCEL_LOSERS) {
    assert_int_equal(ha.calls, 1);
    assert_int_equal(other.calls, 1);
    assert_int_equal(other.status, UV_ECANCELED);
  } else {
    assert_int_equal(ha.calls, 0);
    assert_int_equal(other.calls, 0);
    assert_int_equal(uvp_promise_resolve(a, SENTINEL(2), NULL), 0);
    run_loop(f);
    assert_int_equal(other.calls, 1);
    assert_int_equal(other.status, 0);
    assert_ptr_equal(other.value, SENTINEL(2));
  }
  assert_int_equal(hb.calls, 0);
  uvp_promise_release(d);
  uvp_promise_release(r);
  uvp_promise_release(a);
  uvp_promise_release(b);
}

static void test_shared_loser_kept_by_default(void **state) {
  shared_loser(*state, 0);
}
static void test_shared_loser_cancelled_with_flag(void **state) {
  shared_loser(*state, UVP_CANCEL_LOSERS);
}

/* Two combinators over a shared input: cancelling one result cancels only
 * the inputs it alone observes (uvp_promise_cancel's sole-consumer rule), so
 * the other combinator's view of the shared input is untouched. */
static void test_cancel_result_shared_with_other_combinator(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0}, hb = {0}, hc = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb),
                *c = producer(f, &hc), *r1, *r2;
  uvp_promise_t *in1[2] = {a, b}, *in2[2] = {a, c};
  assert_int_equal(uvp_promise_all(f->ctx, in1, 2, 0, &r1), 0);
  assert_int_equal(uvp_promise_all(f->ctx, in2, 2, 0, &r2), 0);
  assert_int_equal(uvp_promise_cancel(r1), 0);
  assert_int_equal(uvp_promise_reason(r1, NULL), UV_ECANCELED);
  assert_int_equal(ha.calls, 0); /* r2 observes a too */
  assert_int_equal(hb.calls, 1); /* r1's alone */
  assert_int_equal(hc.calls, 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(a), UVP_PENDING);
  assert_int_equal(uvp_promise_state(r2), UVP_PENDING);
  /* r2 still completes from its own inputs. */
  assert_int_equal(uvp_promise_resolve(a, NULL, NULL), 0);
  assert_int_equal(uvp_promise_resolve(c, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(r2), UVP_FULFILLED);
  assert_int_equal(ha.calls + hc.calls, 0);
  /* Cancelling r2 now reaches nothing: its inputs are settled. */
  uvp_promise_release(r1);
  uvp_promise_release(r2);
  uvp_promise_release(a);
  uvp_promise_release(b);
  uvp_promise_release(c);
}

/* The same over time: once the first combinator's result is cancelled it
 * observes nothing any more, so cancelling the second, now the shared
 * input's only consumer, cancels the input. */
static void test_cancel_both_combinators_cancels_shared_input(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0};
  uvp_promise_t *a = producer(f, &ha), *r1, *r2;
  assert_int_equal(uvp_promise_all(f->ctx, &a, 1, 0, &r1), 0);
  assert_int_equal(uvp_promise_race(f->ctx, &a, 1, 0, &r2), 0);
  assert_int_equal(uvp_promise_cancel(r1), 0);
  assert_int_equal(ha.calls, 0);
  assert_int_equal(uvp_promise_cancel(r2), 0);
  assert_int_equal(ha.calls, 1);
  assert_int_equal(uvp_promise_reason(a, NULL), UV_ECANCELED);
  run_loop(f);
  uvp_promise_release(r1);
  uvp_promise_release(r2);
  uvp_promise_release(a);
}

/* A decided combinator observes its inputs no more: once race's result
 * has settled, a later consumer of a loser that is cancelled was the
 * loser's only one, and the loser is cancelled with it. */
static void test_decided_combinator_leaves_losers(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0}, hb = {0};
  rec_t c = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb), *r, *d;
  uvp_promise_t *in[2] = {a, b};
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, 0, &r), 0);
  assert_int_equal(uvp_promise_resolve(a, SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(r), SENTINEL(1));
  assert_int_equal(uvp_promise_then(b, rec_cb, &c, &d), 0);
  assert_int_equal(uvp_promise_cancel(d), 0);
  assert_int_equal(hb.calls, 1);
  assert_int_equal(uvp_promise_reason(b, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(c.calls + ha.calls, 0);
  uvp_promise_release(d);
  uvp_promise_release(r);
  uvp_promise_release(a);
  uvp_promise_release(b);
}

/* An input the combinator shares with a then-handler is not cancelled with
 * the result; one it shares with nobody (even held by a reference) is. */
static void test_cancel_result_spares_input_with_handler(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0}, hb = {0};
  rec_t seen = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb), *r, *d;
  assert_int_equal(uvp_promise_then(a, rec_cb, &seen, &d), 0);
  uvp_promise_t *in[2] = {a, b};
  assert_int_equal(uvp_promise_all_settled(f->ctx, in, 2, &r), 0);
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(ha.calls, 0);
  assert_int_equal(hb.calls, 1);
  assert_int_equal(uvp_promise_state(a), UVP_PENDING);
  assert_int_equal(uvp_promise_reason(b, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(seen.calls, 0);
  assert_int_equal(uvp_promise_resolve(a, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(seen.calls, 1);
  uvp_promise_release(d);
  uvp_promise_release(r);
  uvp_promise_release(a);
  uvp_promise_release(b);
}

/* ---- up a then-chain ----------------------------------------------------- */

static void test_chain_cancel_reaches_sole_consumer_upstream(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t hs = {0};
  rec_t c1 = {0}, c2 = {0}, tail = {0};
  uvp_promise_t *s = producer(f, &hs), *d1, *d2, *d3;
  assert_int_equal(uvp_promise_then(s, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_then(d1, rec_cb, &c2, &d2), 0);
  assert_int_equal(uvp_promise_catch(d2, rec_cb, &tail, &d3), 0);
  /* The caller keeps references to every link: references are not
   * consumers, reactions are. */
  assert_int_equal(uvp_promise_cancel(d2), 0);
  assert_int_equal(hs.calls, 1);
  assert_int_equal(hs.code, UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(s, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(d1, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(d2, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(c1.calls + c2.calls, 0);
  assert_int_equal(tail.calls, 1);
  assert_int_equal(tail.status, UV_ECANCELED);
  assert_int_equal(uvp_promise_state(d3), UVP_FULFILLED);
  uvp_promise_release(d3);
  uvp_promise_release(d2);
  uvp_promise_release(d1);
  uvp_promise_release(s);
}

/* Through adoption: p follows q (resolve_with), and a handler's result
 * (uvp_ret_adopt). */
static uvp_ret_t adopt_arg(void *arg, const uvp_outcome_t *in) {
  (void)in;
  return uvp_ret_adopt(uvp_promise_retain(arg));
}

static void test_chain_cancel_through_adoption(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t hq = {0}, hx = {0};
  uvp_promise_t *q = producer(f, &hq), *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve_with(p, q), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(hq.calls, 1);
  assert_int_equal(uvp_promise_reason(q, NULL), UV_ECANCELED);
  uvp_promise_release(p);
  uvp_promise_release(q);

  /* start -> then(adopt x): once d follows x, cancelling d reaches x. */
  uvp_promise_t *start, *x = producer(f, &hx), *d;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &start), 0);
  assert_int_equal(uvp_promise_then(start, adopt_arg, x, &d), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(d), 0);
  assert_int_equal(hx.calls, 1);
  assert_int_equal(uvp_promise_reason(x, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_state(start), UVP_FULFILLED);
  uvp_promise_release(d);
  uvp_promise_release(x);
  uvp_promise_release(start);
}

/* s has two consumers: cancelling one branch stops there; s keeps running
 * and the other branch gets its value.  The cancelled branch's handler
 * never runs. */
static void test_chain_cancel_stops_at_shared_upstream(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t hs = {0};
  rec_t c1 = {0}, ce = {0}, c2 = {0};
  uvp_promise_t *s = producer(f, &hs), *d1, *e1, *d2;
  assert_int_equal(uvp_promise_then(s, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_then(s, rec_cb, &ce, &e1), 0);
  assert_int_equal(uvp_promise_then(d1, rec_cb, &c2, &d2), 0);
  assert_int_equal(uvp_promise_cancel(d2), 0);
  assert_int_equal(uvp_promise_reason(d2, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(d1, NULL), UV_ECANCELED);
  assert_int_equal(hs.calls, 0);
  assert_int_equal(uvp_promise_state(s), UVP_PENDING);

  assert_int_equal(uvp_promise_resolve(s, SENTINEL(4), NULL), 0);
  run_loop(f);
  assert_int_equal(ce.calls, 1);
  assert_ptr_equal(ce.value, SENTINEL(4));
  assert_int_equal(uvp_promise_state(e1), UVP_FULFILLED);
  assert_int_equal(c1.calls, 0);
  assert_int_equal(c2.calls, 0);
  assert_int_equal(uvp_promise_reason(d1, NULL), UV_ECANCELED);
  assert_int_equal(hs.calls, 0);
  uvp_promise_release(d2);
  uvp_promise_release(e1);
  uvp_promise_release(d1);
  uvp_promise_release(s);
}

/* Each consumer that is cancelled stops consuming: once the last one of a
 * source is cancelled, the source is cancelled too, whatever the order
 * and whether they waited through a handler or an adoption.  Each
 * abandoned handler's notifier runs at its cancellation. */
static int notified;
static void count_notify(void *arg) {
  (void)arg;
  notified++;
}

static void test_chain_cancel_after_every_consumer_cancelled(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t hs = {0};
  rec_t c1 = {0}, c2 = {0};
  uvp_promise_t *s = producer(f, &hs), *d1, *d2, *x;
  notified = 0;
  assert_int_equal(
      uvp_promise_on_full(s, UVP_ON_BOTH, rec_cb, &c1, count_notify, &d1), 0);
  assert_int_equal(
      uvp_promise_on_full(s, UVP_ON_BOTH, rec_cb, &c2, count_notify, &d2), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &x), 0);
  assert_int_equal(uvp_promise_resolve_with(x, s), 0);

  assert_int_equal(uvp_promise_cancel(d2), 0);
  assert_int_equal(notified, 1);
  assert_int_equal(uvp_promise_cancel(x), 0);
  assert_int_equal(hs.calls, 0); /* d1 still waits */
  assert_int_equal(uvp_promise_state(s), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(d1), 0);
  assert_int_equal(notified, 2);
  assert_int_equal(hs.calls, 1);
  assert_int_equal(uvp_promise_reason(s, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(c1.calls + c2.calls, 0);
  assert_int_equal(notified, 2);
  uvp_promise_release(x);
  uvp_promise_release(d2);
  uvp_promise_release(d1);
  uvp_promise_release(s);
}

/* A source that lives long (a shutdown signal, a connection's close) and
 * sees many waiters cancelled keeps nothing of them: each cancelled and
 * released derived promise is freed at once, not when the source settles. */
static void test_cancelled_waiters_leave_the_source(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  rec_t kept = {0}, c = {0};
  uvp_promise_t *s, *keep;
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_promise_new(f->ctx, &s), 0);
  assert_int_equal(uvp_promise_then(s, rec_cb, &kept, &keep), 0);
  for (int i = 0; i < 1000; i++) {
    uvp_promise_t *d;
    assert_int_equal(uvp_promise_then(s, rec_cb, &c, &d), 0);
    assert_int_equal(uvp_promise_cancel(d), 0);
    uvp_promise_release(d);
  }
  run_loop(f);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 2); /* s and keep */
  assert_int_equal(uvp_promise_state(s), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(s, SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_int_equal(kept.calls, 1);
  assert_int_equal(c.calls, 0);
  uvp_promise_release(keep);
  uvp_promise_release(s);
}

/* Other kinds of consumer also stop the climb: a handler registered
 * without a derived promise, and a combinator. */
static void test_chain_cancel_stops_at_other_consumer_kinds(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t h1 = {0}, h2 = {0};
  rec_t side = {0}, c1 = {0}, c2 = {0};
  uvp_promise_t *s1 = producer(f, &h1), *s2 = producer(f, &h2), *d1, *d2, *all;
  assert_int_equal(uvp_promise_then(s1, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_on(s1, UVP_ON_BOTH, rec_cb, &side, NULL), 0);
  assert_int_equal(uvp_promise_then(s2, rec_cb, &c2, &d2), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, &s2, 1, &all), 0);
  assert_int_equal(uvp_promise_cancel(d1), 0);
  assert_int_equal(uvp_promise_cancel(d2), 0);
  assert_int_equal(h1.calls + h2.calls, 0);
  assert_int_equal(uvp_promise_state(s1), UVP_PENDING);
  assert_int_equal(uvp_promise_state(s2), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(s1, SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_resolve(s2, SENTINEL(2), NULL), 0);
  run_loop(f);
  assert_int_equal(side.calls, 1);
  assert_int_equal(side.status, 0);
  assert_int_equal(c1.calls + c2.calls, 0); /* their promises were cancelled */
  const uvp_settled_list_t *l = uvp_promise_value(all);
  assert_non_null(l);
  assert_int_equal(l->fulfilled, 1);
  assert_ptr_equal(l->items[0].value, SENTINEL(2));
  uvp_promise_release(all);
  uvp_promise_release(d1);
  uvp_promise_release(d2);
  uvp_promise_release(s1);
  uvp_promise_release(s2);
}

/* The upstream settled but the derived promise's handler has not run yet
 * (as when a timeout fires in the timer phase, before uvp's scheduler runs
 * the queued reaction): cancelling the derived promise settles it, the
 * settled upstream is untouched, and the handler - which would start the
 * next operation of the chain, with nobody left to cancel it - does not
 * run. */
static void test_cancel_derived_with_queued_handler(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  int freed = 0;
  hook_t hs = {0};
  rec_t c1 = {0}, tail = {0};
  uvp_promise_t *s = producer(f, &hs), *d1, *d2;
  assert_int_equal(uvp_promise_then(s, rec_cb, &c1, &d1), 0);
  assert_int_equal(uvp_promise_catch(d1, rec_cb, &tail, &d2), 0);
  assert_int_equal(uvp_promise_resolve(s, boxed_new(1, &freed), boxed_free), 0);
  assert_int_equal(uvp_promise_cancel(d1), 0);
  assert_int_equal(uvp_promise_reason(d1, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_state(s), UVP_FULFILLED);
  run_loop(f);
  assert_int_equal(c1.calls, 0);
  assert_int_equal(tail.calls, 1);
  assert_int_equal(tail.status, UV_ECANCELED);
  assert_int_equal(hs.calls, 0);
  assert_int_equal(freed, 0);
  uvp_promise_release(d2);
  uvp_promise_release(d1);
  uvp_promise_release(s);
  assert_int_equal(freed, 1);
}

/* ---- from inside handlers and hooks -------------------------------------- */

typedef struct inside_s {
  uvp_promise_t *victim;
  uvp_promise_t **self; /* the derived promise of the running handler */
  int rc_victim;
  int rc_self;
  int calls;
  int *freed;
} inside_t;

static uvp_ret_t cancel_inside(void *arg, const uvp_outcome_t *in) {
  inside_t *x = arg;
  (void)in;
  x->calls++;
  x->rc_victim = uvp_promise_cancel(x->victim);
  x->rc_self = uvp_promise_cancel(*x->self);
  /* What the handler returns has nowhere to go: it is destroyed. */
  return uvp_ret_value(boxed_new(9, x->freed), boxed_free);
}

static void test_cancel_from_handler(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  int freed = 0;
  hook_t hv = {0};
  rec_t on_victim = {0}, tail = {0};
  uvp_promise_t *trigger, *d = NULL, *vd, *td;
  inside_t x = {producer(f, &hv), &d, 1, 1, 0, &freed};
  assert_int_equal(
      uvp_promise_on(x.victim, UVP_ON_BOTH, rec_cb, &on_victim, &vd), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &trigger), 0);
  assert_int_equal(uvp_promise_then(trigger, cancel_inside, &x, &d), 0);
  assert_int_equal(uvp_promise_catch(d, rec_cb, &tail, &td), 0);
  run_loop(f);
  assert_int_equal(x.calls, 1);
  assert_int_equal(x.rc_victim, 0);
  assert_int_equal(x.rc_self, 0);
  assert_int_equal(hv.calls, 1);
  assert_int_equal(on_victim.calls, 1);
  assert_int_equal(on_victim.status, UV_ECANCELED);
  /* The handler's own derived promise was cancelled while it ran. */
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ECANCELED);
  assert_int_equal(freed, 1);
  assert_int_equal(tail.calls, 1);
  assert_int_equal(tail.status, UV_ECANCELED);
  uvp_promise_release(td);
  uvp_promise_release(d);
  uvp_promise_release(vd);
  uvp_promise_release(x.victim);
  uvp_promise_release(trigger);
}

static void test_cancel_from_hook(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0}, hb = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb);
  ha.also_cancel = b;
  hb.also_cancel = a; /* cancelling back an already cancelled one */
  assert_int_equal(uvp_promise_cancel(a), 0);
  assert_int_equal(ha.calls, 1);
  assert_int_equal(hb.calls, 1);
  assert_int_equal(ha.also_rc, 0);
  assert_int_equal(hb.also_rc, UVP_ESETTLED);
  assert_int_equal(uvp_promise_reason(b, NULL), UV_ECANCELED);
  /* A hook may release the last reference to its promise. */
  uvp_promise_release(b);
  uvp_promise_release(a);
  run_loop(f);
  assert_int_equal(ha.calls + hb.calls, 2);
}

/* ---- teardown ------------------------------------------------------------ */

static void test_cancel_at_teardown(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t ha = {0}, hb = {0}, hc = {0}, hx = {0};
  rec_t never = {0};
  uvp_promise_t *a = producer(f, &ha), *b = producer(f, &hb),
                *c = producer(f, &hc), *x = producer(f, &hx), *da, *r;
  assert_int_equal(uvp_promise_then(a, rec_cb, &never, &da), 0);
  uvp_promise_t *in[2] = {b, c};
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, 0, &r), 0);
  assert_int_equal(uvp_promise_cancel(x), 0);
  assert_int_equal(hx.calls, 1);

  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  /* Every pending producer's hook ran once, seeing UVP_ECLOSED; the one
   * cancelled earlier did not run again; no handler ran. */
  assert_int_equal(ha.calls, 1);
  assert_int_equal(ha.code, UVP_ECLOSED);
  assert_int_equal(hb.calls, 1);
  assert_int_equal(hc.calls, 1);
  assert_int_equal(hb.code, UVP_ECLOSED);
  assert_int_equal(hx.calls, 1);
  assert_int_equal(hx.code, UV_ECANCELED);
  assert_int_equal(never.calls, 0);
  assert_int_equal(uvp_promise_reason(r, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_promise_reason(da, NULL), UVP_ECLOSED);
  /* After close: cancel and set_cancel answer UVP_ECLOSED. */
  assert_int_equal(uvp_promise_cancel(a), UVP_ECLOSED);
  assert_int_equal(uvp_promise_set_cancel(a, count_hook, &ha), UVP_ECLOSED);
  assert_int_equal(ha.calls, 1);
  uvp_promise_release(da);
  uvp_promise_release(r);
  uvp_promise_release(a);
  uvp_promise_release(b);
  uvp_promise_release(c);
  uvp_promise_release(x);
}

/* Teardown while a cancellation-triggered handler is still queued: it is
 * dropped, and nothing runs twice. */
static void test_teardown_after_cancel_with_queued_handlers(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  hook_t hs = {0};
  rec_t tail = {0};
  rec_t head = {0};
  uvp_promise_t *s = producer(f, &hs), *d1, *d2;
  assert_int_equal(uvp_promise_then(s, rec_cb, &head, &d1), 0);
  assert_int_equal(uvp_promise_catch(d1, rec_cb, &tail, &d2), 0);
  assert_int_equal(uvp_promise_cancel(d1), 0);
  assert_int_equal(hs.calls, 1);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(hs.calls, 1);
  assert_int_equal(tail.calls + head.calls, 0);
  assert_int_equal(uvp_promise_reason(d2, NULL), UVP_ECLOSED);
  uvp_promise_release(d2);
  uvp_promise_release(d1);
  uvp_promise_release(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_hook_runs_exactly_once),
      FIXTURE_TEST(test_cancel_without_hook_then_set_hook),
      FIXTURE_TEST(test_cancel_after_settlement_is_noop),
      FIXTURE_TEST(test_set_cancel_replaces_and_clears),
      FIXTURE_TEST(test_set_cancel_refused_on_promises_uvp_settles),
      FIXTURE_TEST(test_cancel_all_result),
      FIXTURE_TEST(test_cancel_all_settled_result),
      FIXTURE_TEST(test_cancel_race_result),
      FIXTURE_TEST(test_cancel_any_result),
      FIXTURE_TEST(test_race_cancel_losers),
      FIXTURE_TEST(test_race_default_keeps_losers),
      FIXTURE_TEST(test_any_cancel_losers),
      FIXTURE_TEST(test_any_default_keeps_losers),
      FIXTURE_TEST(test_all_cancel_losers),
      FIXTURE_TEST(test_all_default_keeps_losers),
      FIXTURE_TEST(test_losers_flag_nothing_to_cancel),
      FIXTURE_TEST(test_same_input_twice_cancelled_once),
      FIXTURE_TEST(test_shared_loser_kept_by_default),
      FIXTURE_TEST(test_shared_loser_cancelled_with_flag),
      FIXTURE_TEST(test_cancel_result_shared_with_other_combinator),
      FIXTURE_TEST(test_cancel_both_combinators_cancels_shared_input),
      FIXTURE_TEST(test_decided_combinator_leaves_losers),
      FIXTURE_TEST(test_cancel_result_spares_input_with_handler),
      FIXTURE_TEST(test_chain_cancel_reaches_sole_consumer_upstream),
      FIXTURE_TEST(test_chain_cancel_through_adoption),
      FIXTURE_TEST(test_chain_cancel_stops_at_shared_upstream),
      FIXTURE_TEST(test_chain_cancel_stops_at_other_consumer_kinds),
      FIXTURE_TEST(test_chain_cancel_after_every_consumer_cancelled),
      FIXTURE_TEST(test_cancelled_waiters_leave_the_source),
      FIXTURE_TEST(test_cancel_derived_with_queued_handler),
      FIXTURE_TEST(test_cancel_from_handler),
      FIXTURE_TEST(test_cancel_from_hook),
      FIXTURE_TEST(test_cancel_at_teardown),
      FIXTURE_TEST(test_teardown_after_cancel_with_queued_handlers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
