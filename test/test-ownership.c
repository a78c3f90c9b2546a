/* Destroy notifiers: who frees a callback's argument, and when.
 *
 * Every argument below is a malloc'd closure that only its notifier frees,
 * so valgrind and ASan prove it freed once (a second run is a double free,
 * a missing one a leak, a handler called after it a use after free).  The
 * closure counts into a log on the test's stack, which outlives it: the
 * handler's calls, the notifier's runs, their order, and whether the
 * notifier ran while one of the closure's callbacks was running.
 *
 * Covered: the _full forms of handlers (then, catch, on, finally) on every
 * way a handler can end up never running or having run; cancel hooks with
 * uvp_promise_set_cancel_full; the unhandled hook's and the context data's
 * notifiers; map, loop, reduce and retry with their arg_free; failed
 * registrations, also for want of memory (the argument is freed at once);
 * and the rules of what the unhandled-rejection hook hears. */
#include <unistd.h>

#include "alloc-helpers.h"

/* ---- a closure and what it tells ----------------------------------------- */

enum { EV_CALL = 1, EV_FREE = 2, EV_OTHER = 3 };

typedef struct log_s {
  int calls;      /* the closure's callbacks run */
  int freed;      /* its notifier ran */
  int busy;       /* one of its callbacks is running */
  int freed_busy; /* the notifier ran while one was */
  int status;     /* what the last callback saw */
  trace_t order;  /* EV_CALL, EV_FREE (and EV_OTHER from elsewhere) */
} log_t;

/* A test's wider state, for callbacks that need more than their log. */
typedef struct env_s {
  fixture_t *f;
  uvp_promise_t *result; /* a map's, loop's or retry's, for callbacks */
  size_t cancel_at;      /* the index at which a callback cancels it */
  int cancel_rc;
  int pending; /* items are pending producers */
  int each_calls;
  log_t *next_log; /* for a closure a callback makes */
  hook_t hooks[8];
  uvp_promise_t *items[8]; /* references to started items */
} env_t;

typedef struct closure_s {
  log_t *log;
  env_t *env;
  uvp_promise_t *cancel; /* a handler cancels this from inside */
  int cancel_rc;
  uvp_ret_t ret; /* what a handler returns */
} closure_t;

static closure_t *closure_new(log_t *log) {
  closure_t *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->log = log;
  c->ret = uvp_ret_pass();
  return c;
}

static closure_t *closure_in(log_t *log, env_t *env) {
  closure_t *c = closure_new(log);
  c->env = env;
  return c;
}

static void closure_free(void *arg) {
  closure_t *c = arg;
  log_t *l = c->log;
  l->freed++;
  if (l->busy != 0)
    l->freed_busy++;
  trace_push(&l->order, EV_FREE);
  free(c);
}

/* Entering and leaving one of the closure's callbacks. */
static log_t *enter(closure_t *c) {
  log_t *l = c->log;
  l->calls++;
  l->busy++;
  trace_push(&l->order, EV_CALL);
  return l;
}

static void leave(log_t *l) { l->busy--; }

/* The closure was freed once, never during a callback, after all of its
 * `calls` callbacks. */
static void expect_freed_after(const log_t *l, int calls) {
  assert_int_equal(l->calls, calls);
  assert_int_equal(l->freed, 1);
  assert_int_equal(l->freed_busy, 0);
  assert_int_equal(l->busy, 0);
  assert_int_equal(l->order.n, calls + 1);
  assert_int_equal(l->order.ev[calls], EV_FREE);
}

/* A handler: records, cancels `cancel` if set (after which it no longer
 * touches the closure, which the notifier may already have freed if uvp
 * were wrong), and returns `ret`. */
static uvp_ret_t closure_then(void *arg, const uvp_outcome_t *in) {
  closure_t *c = arg;
  log_t *l = enter(c);
  l->status = in->status;
  uvp_ret_t ret = c->ret;
  if (c->cancel != NULL) {
    uvp_promise_t *victim = c->cancel;
    c->cancel = NULL;
    c->cancel_rc = uvp_promise_cancel(victim);
  }
  leave(l);
  return ret;
}

/* A cancel hook. */
static void closure_hook(uvp_promise_t *p, void *arg) {
  closure_t *c = arg;
  log_t *l = enter(c);
  l->status = uvp_promise_reason(p, NULL);
  leave(l);
}

/* The unhandled hook of this file, recording what it is told. */
static int g_reports, g_report_code;

static void report_cb(uvp_promise_t *p, void *arg) {
  (void)arg;
  g_reports++;
  g_report_code = uvp_promise_reason(p, NULL);
}

static int fixture_setup_reports(void **state) {
  fixture_setup(state);
  fixture_t *f = *state;
  g_reports = 0;
  g_report_code = 0;
  return uvp_ctx_set_unhandled_cb(f->ctx, report_cb, NULL);
}

#define REPORT_TEST(fn)                                                        \
  FIXTURE_TEST_WITH(fn, fixture_setup_reports, fixture_teardown)

/* Close the context inside the test (the fixture then only runs the
 * loop); returns it for calls that must see UVP_ECLOSED. */
static uvp_ctx_t *close_now(fixture_t *f) {
  uvp_ctx_t *ctx = f->ctx;
  assert_int_equal(uvp_ctx_close(ctx), 0);
  f->ctx = NULL;
  return ctx;
}

/* ---- 1. the source settles outside the mask ------------------------------ */

static void test_then_full_source_rejects(void **state) {
  fixture_t *f = *state;
  log_t l = {0}, l2 = {0};
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(
      uvp_promise_then_full(p, closure_then, closure_new(&l), closure_free, &d),
      0);
  /* Without a derived promise too. */
  assert_int_equal(uvp_promise_then_full(p, closure_then, closure_new(&l2),
                                         closure_free, NULL),
                   0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  assert_true(l.freed <= 1);
  run_loop(f);
  expect_freed_after(&l, 0);
  expect_freed_after(&l2, 0);
  /* The rejection went on to d unchanged; the handler without a derived
   * promise passed it on to nobody, which is reported (as JavaScript
   * reports p.then(f) of a rejected p). */
  assert_int_equal(uvp_promise_reason(d, NULL), UV_EIO);
  assert_int_equal(g_reports, 1);
  uvp_promise_release(p);
  uvp_promise_release(d); /* nobody handled d's rejection */
  assert_int_equal(g_reports, 2);
  assert_int_equal(g_report_code, UV_EIO);
  assert_int_equal(l.freed, 1);
}

/* ---- 2. the derived promise is cancelled --------------------------------- */

static int g_other_calls;

static uvp_ret_t other_consumer(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  g_other_calls++;
  return uvp_ret_pass();
}

/* Before the source settles: the handler can never run, so the notifier
 * runs at the cancel.  The source has another consumer and stays
 * pending; later it settles, and the handler still never runs. */
static void test_derived_cancelled_source_pending(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  hook_t h = {0};
  uvp_promise_t *p = producer(f, &h), *d, *other;
  g_other_calls = 0;
  assert_int_equal(uvp_promise_then(p, other_consumer, NULL, &other), 0);
  assert_int_equal(
      uvp_promise_then_full(p, closure_then, closure_new(&l), closure_free, &d),
      0);
  assert_int_equal(uvp_promise_cancel(d), 0);
  expect_freed_after(&l, 0);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ECANCELED);
  /* p has another consumer: not cancelled. */
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(h.calls, 0);
  assert_int_equal(uvp_promise_resolve(p, SENTINEL(1), NULL), 0);
  run_loop(f);
  assert_int_equal(g_other_calls, 1);
  expect_freed_after(&l, 0);
  uvp_promise_release(other);
  uvp_promise_release(d);
  uvp_promise_release(p);
}

/* The same when d is p's only consumer: the cancellation travels up to p,
 * whose hook runs; the notifier runs at the cancel too. */
static void test_derived_cancelled_sole_consumer(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  hook_t h = {0};
  uvp_promise_t *p = producer(f, &h), *d;
  assert_int_equal(
      uvp_promise_then_full(p, closure_then, closure_new(&l), closure_free, &d),
      0);
  assert_int_equal(uvp_promise_cancel(d), 0);
  expect_freed_after(&l, 0);
  assert_int_equal(h.calls, 1);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  run_loop(f);
  expect_freed_after(&l, 0);
  uvp_promise_release(d);
  uvp_promise_release(p);
}

/* The source settled and the reaction is queued when d is cancelled: the
 * notifier runs when the queued reaction is processed, the handler
 * never. */
static void test_derived_cancelled_reaction_queued(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0};
  uvp_promise_t *ok, *p, *d1, *d2;
  /* Settled before registering... */
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(0), NULL, &ok), 0);
  assert_int_equal(uvp_promise_then_full(ok, closure_then, closure_new(&l1),
                                         closure_free, &d1),
                   0);
  /* ...and after. */
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then_full(p, closure_then, closure_new(&l2),
                                         closure_free, &d2),
                   0);
  assert_int_equal(uvp_promise_resolve(p, SENTINEL(1), NULL), 0);
  assert_int_equal(uvp_promise_cancel(d1), 0);
  assert_int_equal(uvp_promise_cancel(d2), 0);
  assert_int_equal(l1.freed, 0);
  assert_int_equal(l2.freed, 0);
  run_loop(f);
  expect_freed_after(&l1, 0);
  expect_freed_after(&l2, 0);
  assert_int_equal(uvp_promise_reason(d1, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(d2, NULL), UV_ECANCELED);
  uvp_promise_release(d1);
  uvp_promise_release(d2);
  uvp_promise_release(ok);
  uvp_promise_release(p);
}

/* ---- 3. the source goes while pending ------------------------------------ */

static void test_source_released_pending(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0}, l3 = {0};
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then_full(p, closure_then, closure_new(&l1),
                                         closure_free, &d),
                   0);
  assert_int_equal(uvp_promise_on_full(p, UVP_ON_BOTH, closure_then,
                                       closure_new(&l2), closure_free, NULL),
                   0);
  assert_int_equal(uvp_promise_finally_full(p, closure_then, closure_new(&l3),
                                            closure_free, NULL),
                   0);
  run_loop(f);
  assert_int_equal(l1.freed + l2.freed + l3.freed, 0);
  uvp_promise_release(p); /* its last reference */
  expect_freed_after(&l1, 0);
  expect_freed_after(&l2, 0);
  expect_freed_after(&l3, 0);
  /* d stays pending (what it followed is gone unsettled). */
  run_loop(f);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);
  uvp_promise_release(d);
  expect_freed_after(&l1, 0);
}

/* ---- 4. teardown --------------------------------------------------------- */

static void test_teardown_queued_and_pending(void **state) {
  fixture_t *f = *state;
  enum { N = 8 };
  log_t l[N];
  memset(l, 0, sizeof(l));
  uvp_promise_t *ok, *err, *pend, *d[N];
  int nd = 0;
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(0), NULL, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &err), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &pend), 0);
  /* Queued: their sources are settled and the loop has not run. */
  assert_int_equal(uvp_promise_then_full(ok, closure_then, closure_new(&l[0]),
                                         closure_free, &d[nd++]),
                   0);
  assert_int_equal(uvp_promise_catch_full(err, closure_then, closure_new(&l[1]),
                                          closure_free, &d[nd++]),
                   0);
  assert_int_equal(uvp_promise_finally_full(ok, closure_then,
                                            closure_new(&l[2]), closure_free,
                                            NULL),
                   0);
  assert_int_equal(uvp_promise_on_full(err, UVP_ON_BOTH, closure_then,
                                       closure_new(&l[3]), closure_free, NULL),
                   0);
  /* Pending: their source never settles; one waits on another's derived
   * promise. */
  assert_int_equal(uvp_promise_then_full(pend, closure_then, closure_new(&l[4]),
                                         closure_free, &d[nd]),
                   0);
  assert_int_equal(uvp_promise_then_full(d[nd], closure_then,
                                         closure_new(&l[5]), closure_free,
                                         &d[nd + 1]),
                   0);
  nd += 2;
  assert_int_equal(uvp_promise_finally_full(pend, closure_then,
                                            closure_new(&l[6]), closure_free,
                                            &d[nd++]),
                   0);
  assert_int_equal(uvp_promise_catch_full(pend, closure_then,
                                          closure_new(&l[7]), closure_free,
                                          NULL),
                   0);
  close_now(f);
  for (int i = 0; i < N; i++)
    expect_freed_after(&l[i], 0);
  for (int i = 0; i < nd; i++) {
    assert_int_equal(uvp_promise_reason(d[i], NULL), UVP_ECLOSED);
    uvp_promise_release(d[i]);
  }
  uvp_promise_release(ok);
  uvp_promise_release(err);
  uvp_promise_release(pend);
  for (int i = 0; i < N; i++)
    assert_int_equal(l[i].freed, 1);
}

/* ---- 5. a handler that ran ----------------------------------------------- */

static void test_notifier_after_handler(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0};
  int freed = 0;
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  closure_t *c1 = closure_new(&l1);
  c1->ret = uvp_ret_value(boxed_new(7, &freed), boxed_free);
  assert_int_equal(uvp_promise_then_full(p, closure_then, c1, closure_free, &d),
                   0);
  assert_int_equal(uvp_promise_then_full(p, closure_then, closure_new(&l2),
                                         closure_free, NULL),
                   0);
  assert_int_equal(uvp_promise_resolve(p, SENTINEL(2), NULL), 0);
  run_loop(f);
  expect_freed_after(&l1, 1);
  expect_freed_after(&l2, 1);
  assert_int_equal(l1.order.ev[0], EV_CALL);
  assert_int_equal(l1.status, 0);
  assert_int_equal(((boxed_t *)uvp_promise_value(d))->v, 7);
  uvp_promise_release(d);
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
}

/* The handler cancels its own derived promise: it is running, so its
 * argument stays until it returns; what it returns goes nowhere and is
 * destroyed once. */
static void test_handler_cancels_own_derived(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  int freed = 0;
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  closure_t *c = closure_new(&l);
  c->ret = uvp_ret_value(boxed_new(8, &freed), boxed_free);
  assert_int_equal(uvp_promise_then_full(p, closure_then, c, closure_free, &d),
                   0);
  c->cancel = d;
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  run_loop(f);
  expect_freed_after(&l, 1);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ECANCELED);
  assert_int_equal(freed, 1);
  uvp_promise_release(d);
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
}

/* ---- 6. finally, catch, on ----------------------------------------------- */

static void test_finally_full_both_outcomes(void **state) {
  fixture_t *f = *state;
  log_t lok = {0}, lerr = {0}, lwait = {0};
  uvp_promise_t *ok, *err, *d1, *d2, *d3, *later;
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(0), NULL, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &err), 0);
  assert_int_equal(uvp_promise_finally_full(ok, closure_then, closure_new(&lok),
                                            closure_free, &d1),
                   0);
  assert_int_equal(uvp_promise_finally_full(err, closure_then,
                                            closure_new(&lerr), closure_free,
                                            &d2),
                   0);
  /* A finally handler that returns a pending promise: d3 waits for it,
   * but the handler has run, so its argument goes when it returns. */
  assert_int_equal(uvp_promise_new(f->ctx, &later), 0);
  closure_t *c = closure_new(&lwait);
  c->ret = uvp_ret_adopt(uvp_promise_retain(later));
  assert_int_equal(
      uvp_promise_finally_full(ok, closure_then, c, closure_free, &d3), 0);
  run_loop(f);
  expect_freed_after(&lok, 1);
  expect_freed_after(&lerr, 1);
  expect_freed_after(&lwait, 1);
  assert_int_equal(lok.status, 0);
  assert_int_equal(lerr.status, UV_EIO);
  assert_ptr_equal(uvp_promise_value(d1), SENTINEL(0));
  assert_int_equal(uvp_promise_reason(d2, NULL), UV_EIO);
  assert_int_equal(uvp_promise_state(d3), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(later, NULL, NULL), 0);
  run_loop(f);
  assert_ptr_equal(uvp_promise_value(d3), SENTINEL(0));
  expect_freed_after(&lwait, 1);
  uvp_promise_t *all[] = {ok, err, d1, d2, d3, later};
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
    uvp_promise_release(all[i]);
}

static void test_catch_full_both_outcomes(void **state) {
  fixture_t *f = *state;
  log_t lok = {0}, lerr = {0};
  uvp_promise_t *ok, *err, *d1, *d2;
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(0), NULL, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &err), 0);
  assert_int_equal(uvp_promise_catch_full(ok, closure_then, closure_new(&lok),
                                          closure_free, &d1),
                   0);
  closure_t *c = closure_new(&lerr);
  c->ret = uvp_ret_value(SENTINEL(3), NULL); /* recovered */
  assert_int_equal(
      uvp_promise_catch_full(err, closure_then, c, closure_free, &d2), 0);
  run_loop(f);
  expect_freed_after(&lok, 0); /* fulfilled: not its outcome */
  expect_freed_after(&lerr, 1);
  assert_int_equal(lerr.status, UV_EIO);
  assert_ptr_equal(uvp_promise_value(d1), SENTINEL(0));
  assert_ptr_equal(uvp_promise_value(d2), SENTINEL(3));
  uvp_promise_t *all[] = {ok, err, d1, d2};
  for (size_t i = 0; i < 4; i++)
    uvp_promise_release(all[i]);
}

static void test_on_full_both(void **state) {
  fixture_t *f = *state;
  log_t lok = {0}, lerr = {0}, lnone = {0};
  uvp_promise_t *ok, *err, *d1;
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(0), NULL, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &err), 0);
  assert_int_equal(uvp_promise_on_full(ok, UVP_ON_BOTH, closure_then,
                                       closure_new(&lok), closure_free, &d1),
                   0);
  assert_int_equal(uvp_promise_on_full(err, UVP_ON_BOTH, closure_then,
                                       closure_new(&lerr), closure_free, NULL),
                   0);
  /* A NULL handler with a notifier: the argument still goes, once. */
  assert_int_equal(uvp_promise_on_full(ok, UVP_ON_BOTH, NULL,
                                       closure_new(&lnone), closure_free, NULL),
                   0);
  run_loop(f);
  expect_freed_after(&lok, 1);
  expect_freed_after(&lerr, 1);
  expect_freed_after(&lnone, 0);
  assert_int_equal(lok.status, 0);
  assert_int_equal(lerr.status, UV_EIO);
  uvp_promise_release(d1);
  uvp_promise_release(ok);
  uvp_promise_release(err);
  /* The rejection was seen by a handler: not reported. */
  assert_int_equal(g_reports, 0);
}

/* ---- 7. cancel hooks ----------------------------------------------------- */

/* Give p a _full cancel hook whose closure logs into l. */
static void hook_full(uvp_promise_t *p, log_t *l) {
  assert_int_equal(uvp_promise_set_cancel_full(p, closure_hook, closure_new(l),
                                               closure_free),
                   0);
}

/* A new pending promise with such a hook. */
static uvp_promise_t *hooked(fixture_t *f, log_t *l) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  hook_full(p, l);
  return p;
}

static void test_cancel_full_hook_then_notifier(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  uvp_promise_t *p = hooked(f, &l);
  assert_int_equal(uvp_promise_cancel(p), 0);
  expect_freed_after(&l, 1);
  assert_int_equal(l.status, UV_ECANCELED);
  assert_int_equal(uvp_promise_cancel(p), UVP_ESETTLED);
  run_loop(f);
  uvp_promise_release(p);
  expect_freed_after(&l, 1);
}

static void test_cancel_full_settled_otherwise(void **state) {
  fixture_t *f = *state;
  log_t lres = {0}, lrej = {0};
  uvp_promise_t *a = hooked(f, &lres), *b = hooked(f, &lrej);
  assert_int_equal(uvp_promise_resolve(a, SENTINEL(0), NULL), 0);
  expect_freed_after(&lres, 0);
  assert_int_equal(uvp_promise_reject(b, UV_EIO, NULL, NULL), 0);
  expect_freed_after(&lrej, 0);
  assert_int_equal(uvp_promise_cancel(a), UVP_ESETTLED);
  run_loop(f);
  uvp_promise_release(a);
  uvp_promise_release(b); /* unhandled: reported, not our concern here */
  expect_freed_after(&lres, 0);
  expect_freed_after(&lrej, 0);
}

static void test_cancel_full_replaced_and_removed(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0}, l3 = {0};
  hook_t h = {0};
  uvp_promise_t *p = hooked(f, &l1);
  /* Replaced by another _full hook. */
  hook_full(p, &l2);
  expect_freed_after(&l1, 0);
  assert_int_equal(l2.freed, 0);
  /* Removed. */
  assert_int_equal(uvp_promise_set_cancel(p, NULL, NULL), 0);
  expect_freed_after(&l2, 0);
  /* Removed with a notifier: a NULL hook keeps none (arg stays ours). */
  log_t l4 = {0};
  closure_t *c4 = closure_new(&l4);
  assert_int_equal(uvp_promise_set_cancel_full(p, NULL, c4, closure_free), 0);
  /* Replaced by a plain hook, which then runs alone. */
  hook_full(p, &l3);
  assert_int_equal(uvp_promise_set_cancel(p, count_hook, &h), 0);
  expect_freed_after(&l3, 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(h.calls, 1);
  expect_freed_after(&l1, 0);
  expect_freed_after(&l2, 0);
  expect_freed_after(&l3, 0);
  assert_int_equal(l4.freed, 0);
  free(c4);
  uvp_promise_release(p);
}

static void test_cancel_full_freed_pending(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  uvp_promise_t *p = hooked(f, &l);
  run_loop(f);
  assert_int_equal(l.freed, 0);
  uvp_promise_release(p);
  expect_freed_after(&l, 0);
}

static void test_cancel_full_teardown(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  uvp_promise_t *p = hooked(f, &l);
  close_now(f);
  expect_freed_after(&l, 1);
  assert_int_equal(l.status, UVP_ECLOSED);
  uvp_promise_release(p);
  expect_freed_after(&l, 1);
}

/* ---- 8. the unhandled hook's notifier ------------------------------------ */

static void closure_unhandled(uvp_promise_t *p, void *arg) {
  closure_t *c = arg;
  assert_non_null(c); /* the hook's own argument, until it is replaced */
  log_t *l = enter(c);
  l->status = uvp_promise_reason(p, NULL);
  leave(l);
}

static void test_unhandled_full_replaced(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0}, l3 = {0};
  uvp_promise_t *p;
  assert_int_equal(uvp_ctx_set_unhandled_cb_full(f->ctx, closure_unhandled,
                                                 closure_new(&l1),
                                                 closure_free),
                   0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &p), 0);
  uvp_promise_release(p);
  assert_int_equal(l1.calls, 1);
  assert_int_equal(l1.status, UV_EIO);
  assert_int_equal(uvp_ctx_set_unhandled_cb_full(f->ctx, closure_unhandled,
                                                 closure_new(&l2),
                                                 closure_free),
                   0);
  expect_freed_after(&l1, 1);
  assert_int_equal(l2.freed, 0);
  /* Back to a plain hook: the second one's argument goes too. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, report_cb, NULL), 0);
  expect_freed_after(&l2, 0);
  assert_int_equal(uvp_ctx_set_unhandled_cb_full(f->ctx, closure_unhandled,
                                                 closure_new(&l3),
                                                 closure_free),
                   0);
  /* And NULL (the default hook) lets go of the third, and keeps no
   * notifier of its own: the argument given with it stays ours. */
  log_t l4 = {0};
  closure_t *c4 = closure_new(&l4);
  assert_int_equal(
      uvp_ctx_set_unhandled_cb_full(f->ctx, NULL, c4, closure_free), 0);
  expect_freed_after(&l3, 0);
  close_now(f);
  expect_freed_after(&l1, 1);
  expect_freed_after(&l2, 0);
  expect_freed_after(&l3, 0);
  assert_int_equal(l4.freed, 0);
  free(c4);
}

/* At close: after the last report (a rejection still held is reported by
 * the close itself).  Two reports, so that a notifier run after the first
 * (the close's sweep runs on a closed context) would show. */
static void test_unhandled_full_at_close(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  uvp_promise_t *p, *q;
  assert_int_equal(uvp_ctx_set_unhandled_cb_full(f->ctx, closure_unhandled,
                                                 closure_new(&l), closure_free),
                   0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EPIPE, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &q), 0);
  run_loop(f);
  assert_int_equal(l.calls, 0);
  close_now(f);
  expect_freed_after(&l, 2);
  assert_int_equal(l.order.ev[0], EV_CALL);
  assert_int_equal(l.order.ev[1], EV_CALL);
  uvp_promise_release(p); /* reported already: not again */
  uvp_promise_release(q);
  expect_freed_after(&l, 2);
}

/* One call, which went on after the replacement or close it made
 * (EV_OTHER), then the notifier, after the call. */
static void expect_freed_after_return(const log_t *l) {
  assert_int_equal(l->calls, 1);
  assert_int_equal(l->freed, 1);
  assert_int_equal(l->freed_busy, 0);
  assert_int_equal(l->order.n, 3);
  assert_int_equal(l->order.ev[0], EV_CALL);
  assert_int_equal(l->order.ev[1], EV_OTHER);
  assert_int_equal(l->order.ev[2], EV_FREE);
}

/* The hook closes the context while it runs: its argument goes after it
 * returns, not inside the close it called. */
static void closing_unhandled(uvp_promise_t *p, void *arg) {
  closure_t *c = arg;
  log_t *l = enter(c);
  (void)p;
  if (c->env->f->ctx != NULL)
    close_now(c->env->f);
  trace_push(&l->order, EV_OTHER); /* still here after the close */
  leave(l);
}

static void test_unhandled_full_hook_closes_context(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f};
  closure_t *c = closure_in(&l, &e);
  uvp_promise_t *p;
  assert_int_equal(
      uvp_ctx_set_unhandled_cb_full(f->ctx, closing_unhandled, c, closure_free),
      0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &p), 0);
  uvp_promise_release(p);
  assert_null(f->ctx);
  expect_freed_after_return(&l);
}

/* The hook replaces itself while it runs (a report-once hook): its
 * argument goes after it returns, not inside the replacing call.  The
 * second hook, installed by the first, reports a rejection the first
 * releases while still running, and replaces itself in turn: each
 * argument waits for its own hook's return. */
static void replacing_unhandled(uvp_promise_t *p, void *arg) {
  closure_t *c = arg;
  log_t *l = enter(c);
  env_t *e = c->env;
  (void)p;
  if (e != NULL) { /* the first hook: hand over to a second */
    closure_t *next = closure_new(e->next_log);
    assert_int_equal(uvp_ctx_set_unhandled_cb_full(
                         e->f->ctx, replacing_unhandled, next, closure_free),
                     0);
    uvp_promise_t *q;
    assert_int_equal(uvp_promise_rejected(e->f->ctx, UV_EIO, NULL, NULL, &q),
                     0);
    uvp_promise_release(q); /* reported to the second, which ends it */
  } else {
    assert_int_equal(uvp_ctx_set_unhandled_cb(uvp_promise_ctx(p), NULL, NULL),
                     0);
  }
  trace_push(&l->order, EV_OTHER); /* still running after the replacement */
  leave(l);
}

static void test_unhandled_full_replaced_inside_hook(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0};
  env_t e = {.f = f, .next_log = &l2};
  uvp_promise_t *p;
  assert_int_equal(uvp_ctx_set_unhandled_cb_full(f->ctx, replacing_unhandled,
                                                 closure_in(&l1, &e),
                                                 closure_free),
                   0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EPIPE, NULL, NULL, &p), 0);
  uvp_promise_release(p);
  expect_freed_after_return(&l1);
  expect_freed_after_return(&l2);
}

/* ---- 9. the context's data ----------------------------------------------- */

static void order_hook(uvp_promise_t *p, void *arg) {
  log_t *l = arg;
  (void)p;
  trace_push(&l->order, EV_OTHER);
}

static void test_ctx_data(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0};
  int plain = 5;
  assert_null(uvp_ctx_data(f->ctx));
  assert_null(uvp_ctx_data(NULL));
  log_t l0 = {0}; /* refused: freed at once (uvp.h, "Handing over") */
  assert_int_equal(uvp_ctx_set_data(NULL, closure_new(&l0), closure_free),
                   UV_EINVAL);
  expect_freed_after(&l0, 0);
  closure_t *c1 = closure_new(&l1), *c2 = closure_new(&l2);
  assert_int_equal(uvp_ctx_set_data(f->ctx, c1, closure_free), 0);
  assert_ptr_equal(uvp_ctx_data(f->ctx), c1);
  assert_int_equal(uvp_ctx_set_data(f->ctx, c2, closure_free), 0);
  expect_freed_after(&l1, 0);
  assert_ptr_equal(uvp_ctx_data(f->ctx), c2);
  /* Data without a destructor: stored, and replaced with nothing run. */
  assert_int_equal(uvp_ctx_set_data(f->ctx, &plain, NULL), 0);
  expect_freed_after(&l2, 0);
  assert_ptr_equal(uvp_ctx_data(f->ctx), &plain);
  log_t l3 = {0};
  closure_t *c3 = closure_new(&l3);
  assert_int_equal(uvp_ctx_set_data(f->ctx, c3, closure_free), 0);
  assert_int_equal(plain, 5);
  /* A pending promise's hook runs at close before the data goes. */
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_set_cancel(p, order_hook, &l3), 0);
  uvp_ctx_t *ctx = close_now(f);
  assert_int_equal(l3.freed, 1);
  assert_int_equal(l3.order.n, 2);
  assert_int_equal(l3.order.ev[0], EV_OTHER);
  assert_int_equal(l3.order.ev[1], EV_FREE);
  assert_null(uvp_ctx_data(ctx));
  /* After close: refused, and the destructor runs at once. */
  log_t l4 = {0};
  closure_t *c4 = closure_new(&l4);
  assert_int_equal(uvp_ctx_set_data(ctx, c4, closure_free), UVP_ECLOSED);
  expect_freed_after(&l4, 0);
  uvp_promise_release(p);
  expect_freed_after(&l1, 0);
  expect_freed_after(&l2, 0);
}

/* ---- 10. map ------------------------------------------------------------- */

static int map_start(void *arg, size_t i, uvp_promise_t **out) {
  closure_t *c = arg;
  env_t *e = c->env;
  log_t *l = enter(c);
  int rc;
  if (e->cancel_at == i + 1)
    e->cancel_rc = uvp_promise_cancel(e->result);
  if (e->pending && i < 8) {
    *out = producer(e->f, &e->hooks[i]);
    e->items[i] = uvp_promise_retain(*out);
    rc = 0;
  } else {
    rc = uvp_promise_resolved(e->f->ctx, (void *)(uintptr_t)(i + 1), NULL, out);
  }
  leave(l);
  return rc;
}

static void map_each(void *arg, size_t i, const uvp_outcome_t *o) {
  closure_t *c = arg;
  env_t *e = c->env;
  log_t *l = c->log;
  (void)o;
  l->busy++;
  e->each_calls++;
  if (e->cancel_at == i + 1 + 100)
    e->cancel_rc = uvp_promise_cancel(e->result);
  l->busy--;
}

static void release_items(env_t *e) {
  for (int i = 0; i < 8; i++)
    uvp_promise_release(e->items[i]);
}

static void test_map_arg_free_completes(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f};
  closure_t *c = closure_in(&l, &e);
  uvp_map_opts_t o = {
      .limit = 2, .on_settle = map_each, .arg_free = closure_free};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_map(f->ctx, 5, map_start, c, &o, &r), 0);
  assert_int_equal(l.freed, 0);
  run_loop(f);
  expect_freed_after(&l, 5);
  assert_int_equal(e.each_calls, 5);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  const uvp_settled_list_t *list = uvp_promise_value(r);
  assert_int_equal(list->fulfilled, 5);
  uvp_promise_release(r);
}

static void test_map_arg_free_cancelled_midway(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .pending = 1};
  closure_t *c = closure_in(&l, &e);
  uvp_map_opts_t o = {
      .limit = 2, .on_settle = map_each, .arg_free = closure_free};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_map(f->ctx, 6, map_start, c, &o, &r), 0);
  /* Item 0 done, item 2 starts: 1 and 2 are in flight. */
  assert_int_equal(uvp_promise_resolve(e.items[0], NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(l.calls, 3);
  assert_int_equal(l.freed, 0);
  assert_int_equal(uvp_promise_cancel(r), 0);
  expect_freed_after(&l, 3);
  assert_int_equal(e.hooks[1].calls, 1);
  assert_int_equal(e.hooks[2].calls, 1);
  assert_int_equal(e.hooks[1].code, UV_ECANCELED);
  run_loop(f);
  expect_freed_after(&l, 3);
  assert_int_equal(e.each_calls, 1);
  release_items(&e);
  uvp_promise_release(r);
}

static void test_map_arg_free_fail_fast(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .pending = 1};
  closure_t *c = closure_in(&l, &e);
  uvp_map_opts_t o = {.limit = 3,
                      .flags = UVP_MAP_FAIL_FAST,
                      .on_settle = map_each,
                      .arg_free = closure_free};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_map(f->ctx, 6, map_start, c, &o, &r), 0);
  assert_int_equal(uvp_promise_reject(e.items[1], UV_EIO, NULL, NULL), 0);
  run_loop(f);
  expect_freed_after(&l, 3);         /* items 0..2 started, no more */
  assert_int_equal(e.each_calls, 1); /* the failure, reported before */
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EIO);
  assert_int_equal(e.hooks[0].calls, 1);
  assert_int_equal(e.hooks[2].calls, 1);
  release_items(&e);
  uvp_promise_release(r);
}

static void test_map_arg_free_empty(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f};
  closure_t *c = closure_in(&l, &e);
  uvp_map_opts_t o = {.arg_free = closure_free};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_map(f->ctx, 0, map_start, c, &o, &r), 0);
  expect_freed_after(&l, 0); /* inside the call */
  run_loop(f);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  uvp_promise_release(r);
  expect_freed_after(&l, 0);
}

/* Cancelled from inside start, and from inside on_settle: the argument
 * goes after the callback returns (closure_free counts it as "busy"
 * otherwise). */
static void test_map_arg_free_not_during_callbacks(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0};
  env_t e1 = {.f = f, .cancel_at = 2}, e2 = {.f = f, .cancel_at = 100 + 1};
  closure_t *c1 = closure_in(&l1, &e1), *c2 = closure_in(&l2, &e2);
  uvp_map_opts_t o = {
      .limit = 1, .on_settle = map_each, .arg_free = closure_free};
  uvp_promise_t *r1, *r2;
  assert_int_equal(uvp_promise_map(f->ctx, 4, map_start, c1, &o, &r1), 0);
  e1.result = r1;
  assert_int_equal(uvp_promise_map(f->ctx, 4, map_start, c2, &o, &r2), 0);
  e2.result = r2;
  run_loop(f);
  /* Map 1: start(1) cancelled it. */
  assert_int_equal(e1.cancel_rc, 0);
  expect_freed_after(&l1, 2);
  assert_int_equal(uvp_promise_reason(r1, NULL), UV_ECANCELED);
  /* Map 2: on_settle(0) cancelled it, so item 1 never started. */
  assert_int_equal(e2.cancel_rc, 0);
  expect_freed_after(&l2, 1);
  assert_int_equal(e2.each_calls, 1);
  assert_int_equal(uvp_promise_reason(r2, NULL), UV_ECANCELED);
  uvp_promise_release(r1);
  uvp_promise_release(r2);
}

static void test_map_arg_free_teardown(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .pending = 1};
  closure_t *c = closure_in(&l, &e);
  uvp_map_opts_t o = {.limit = 2, .arg_free = closure_free};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_map(f->ctx, 5, map_start, c, &o, &r), 0);
  run_loop(f);
  assert_int_equal(l.freed, 0);
  close_now(f);
  expect_freed_after(&l, 2);
  assert_int_equal(uvp_promise_reason(r, NULL), UVP_ECLOSED);
  assert_int_equal(e.hooks[0].code, UVP_ECLOSED);
  release_items(&e);
  uvp_promise_release(r);
}

/* ---- 11. loop, reduce, retry --------------------------------------------- */

/* Steps fulfil with index + 1 and stop after 3; with env->pending, step 0
 * returns a producer that never settles by itself. */
static int seq_step(void *arg, size_t index, const uvp_outcome_t *prev,
                    uvp_promise_t **next) {
  closure_t *c = arg;
  env_t *e = c->env;
  log_t *l = enter(c);
  int rc = 0;
  l->status = prev->status;
  if (e->cancel_at == index + 1)
    e->cancel_rc = uvp_promise_cancel(e->result);
  if (e->pending) {
    *next = producer(e->f, &e->hooks[0]);
  } else if (index < 3) {
    uintptr_t v = (uintptr_t)prev->value + index + 1;
    rc = uvp_promise_resolved(e->f->ctx, (void *)v, NULL, next);
  }
  leave(l);
  return rc;
}

static void test_loop_full_completes(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f};
  closure_t *c = closure_in(&l, &e);
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop_full(f->ctx, seq_step, c, closure_free, &r),
                   0);
  assert_int_equal(l.calls, 0); /* never inside the call */
  run_loop(f);
  expect_freed_after(&l, 4);
  assert_int_equal((uintptr_t)uvp_promise_value(r), 1 + 2 + 3);
  uvp_promise_release(r);
}

static void test_loop_full_cancelled_midway(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .pending = 1};
  closure_t *c = closure_in(&l, &e);
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop_full(f->ctx, seq_step, c, closure_free, &r),
                   0);
  run_loop(f);
  assert_int_equal(l.calls, 1);
  assert_int_equal(l.freed, 0);
  assert_int_equal(uvp_promise_cancel(r), 0);
  expect_freed_after(&l, 1);
  assert_int_equal(e.hooks[0].calls, 1); /* the step in flight */
  run_loop(f);
  expect_freed_after(&l, 1);
  uvp_promise_release(r);
}

static void test_loop_full_cancelled_inside_step(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .cancel_at = 2};
  closure_t *c = closure_in(&l, &e);
  assert_int_equal(
      uvp_promise_loop_full(f->ctx, seq_step, c, closure_free, &e.result), 0);
  run_loop(f);
  assert_int_equal(e.cancel_rc, 0);
  expect_freed_after(&l, 2);
  assert_int_equal(uvp_promise_reason(e.result, NULL), UV_ECANCELED);
  uvp_promise_release(e.result);
}

static void test_loop_full_teardown(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .pending = 1};
  closure_t *c = closure_in(&l, &e);
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop_full(f->ctx, seq_step, c, closure_free, &r),
                   0);
  run_loop(f);
  close_now(f);
  expect_freed_after(&l, 1);
  assert_int_equal(e.hooks[0].code, UVP_ECLOSED);
  assert_int_equal(uvp_promise_reason(r, NULL), UVP_ECLOSED);
  uvp_promise_release(r);
}

static void test_reduce_full(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0}, l3 = {0};
  env_t e1 = {.f = f}, e2 = {.f = f, .pending = 1}, e3 = {.f = f, .pending = 1};
  closure_t *c1 = closure_in(&l1, &e1), *c2 = closure_in(&l2, &e2),
            *c3 = closure_in(&l3, &e3);
  uvp_promise_t *init, *r1, *r2, *r3;
  assert_int_equal(
      uvp_promise_resolved(f->ctx, (void *)(uintptr_t)10, NULL, &init), 0);
  /* Completes: 10 + 1 + 2. */
  assert_int_equal(
      uvp_promise_reduce_full(f->ctx, 2, seq_step, c1, closure_free, init, &r1),
      0);
  /* Cancelled with a step in flight; torn down with one in flight. */
  assert_int_equal(
      uvp_promise_reduce_full(f->ctx, 5, seq_step, c2, closure_free, init, &r2),
      0);
  assert_int_equal(
      uvp_promise_reduce_full(f->ctx, 5, seq_step, c3, closure_free, NULL, &r3),
      0);
  run_loop(f);
  expect_freed_after(&l1, 2);
  assert_int_equal((uintptr_t)uvp_promise_value(r1), 10 + 1 + 2);
  assert_int_equal(l2.freed + l3.freed, 0);
  assert_int_equal(uvp_promise_cancel(r2), 0);
  expect_freed_after(&l2, 1);
  assert_int_equal(e2.hooks[0].code, UV_ECANCELED);
  close_now(f);
  expect_freed_after(&l3, 1);
  assert_int_equal(e3.hooks[0].code, UVP_ECLOSED);
  uvp_promise_release(init);
  uvp_promise_release(r1);
  uvp_promise_release(r2);
  uvp_promise_release(r3);
}

/* Attempt 0 fails with UV_EIO; later ones fulfil, or (env->pending) hang
 * on a producer. */
static int retry_attempt(void *arg, unsigned int attempt, uvp_promise_t **out) {
  closure_t *c = arg;
  env_t *e = c->env;
  log_t *l = enter(c);
  int rc;
  if (e->cancel_at == (size_t)attempt + 1)
    e->cancel_rc = uvp_promise_cancel(e->result);
  if (attempt == 0 && !e->pending)
    rc = uvp_promise_rejected(e->f->ctx, UV_EIO, NULL, NULL, out);
  else if (e->pending)
    rc = (*out = producer(e->f, &e->hooks[0])) != NULL ? 0 : UV_ENOMEM;
  else
    rc = uvp_promise_resolved(e->f->ctx, SENTINEL(attempt), NULL, out);
  leave(l);
  return rc;
}

static int retry_pred(void *arg, int code, unsigned int attempt) {
  closure_t *c = arg;
  log_t *l = enter(c);
  (void)attempt;
  l->status = code;
  leave(l);
  return 1;
}

static void test_retry_arg_free(void **state) {
  fixture_t *f = *state;
  log_t l1 = {0}, l2 = {0}, l3 = {0};
  env_t e1 = {.f = f}, e2 = {.f = f, .pending = 1}, e3 = {.f = f};
  closure_t *c1 = closure_in(&l1, &e1), *c2 = closure_in(&l2, &e2),
            *c3 = closure_in(&l3, &e3);
  uvp_retry_opts_t fast = {.attempts = 3,
                           .base_ms = 1,
                           .should_retry = retry_pred,
                           .arg_free = closure_free};
  uvp_retry_opts_t slow = fast;
  slow.base_ms = 60000; /* the backoff outlasts the test */
  uvp_promise_t *r1, *r2, *r3;
  /* Completes: attempt, should_retry, attempt. */
  assert_int_equal(uvp_retry(f->ctx, retry_attempt, c1, &fast, &r1), 0);
  /* Cancelled while its attempt is in flight. */
  assert_int_equal(uvp_retry(f->ctx, retry_attempt, c2, &fast, &r2), 0);
  /* Torn down while waiting out its backoff. */
  assert_int_equal(uvp_retry(f->ctx, retry_attempt, c3, &slow, &r3), 0);
  for (int i = 0; i < 1000 && (l1.freed == 0 || l3.calls < 2); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  expect_freed_after(&l1, 3);
  assert_int_equal(l1.status, UV_EIO);
  assert_ptr_equal(uvp_promise_value(r1), SENTINEL(1));
  assert_int_equal(l2.calls, 1);
  assert_int_equal(l2.freed, 0);
  assert_int_equal(uvp_promise_cancel(r2), 0);
  expect_freed_after(&l2, 1);
  assert_int_equal(e2.hooks[0].code, UV_ECANCELED);
  assert_int_equal(l3.calls, 2); /* attempt 0 and should_retry */
  assert_int_equal(l3.freed, 0);
  close_now(f);
  expect_freed_after(&l3, 2);
  assert_int_equal(uvp_promise_reason(r3, NULL), UVP_ECLOSED);
  uvp_promise_release(r1);
  uvp_promise_release(r2);
  uvp_promise_release(r3);
}

/* Cancelled from inside its attempt: the argument goes after the attempt
 * returns. */
static void test_retry_cancelled_inside_attempt(void **state) {
  fixture_t *f = *state;
  log_t l = {0};
  env_t e = {.f = f, .cancel_at = 2};
  closure_t *c = closure_in(&l, &e);
  uvp_retry_opts_t o = {.attempts = 3,
                        .base_ms = 1,
                        .should_retry = retry_pred,
                        .arg_free = closure_free};
  assert_int_equal(uvp_retry(f->ctx, retry_attempt, c, &o, &e.result), 0);
  for (int i = 0; i < 1000 && l.freed == 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(e.cancel_rc, 0);
  expect_freed_after(&l, 3);
  assert_int_equal(uvp_promise_reason(e.result, NULL), UV_ECANCELED);
  uvp_promise_release(e.result);
}

/* ---- 12. refused registrations: the argument stays the caller's ------- */

static uvp_ret_t not_called(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  fail();
  return uvp_ret_pass();
}

static int not_started(void *arg, size_t i, uvp_promise_t **out) {
  (void)arg;
  (void)i;
  (void)out;
  fail();
  return UV_EINVAL;
}

static int not_stepped(void *arg, size_t i, const uvp_outcome_t *prev,
                       uvp_promise_t **next) {
  (void)arg;
  (void)i;
  (void)prev;
  (void)next;
  fail();
  return UV_EINVAL;
}

static int not_attempted(void *arg, unsigned int i, uvp_promise_t **out) {
  (void)arg;
  (void)i;
  (void)out;
  fail();
  return UV_EINVAL;
}

/* A refused registration: the closure it was handed is freed once,
 * before the call returns, and never called (uvp.h, "Handing over").
 * Each call gets a closure of its own, which only closure_free frees. */
#define REFUSED(code, call)                                                    \
  do {                                                                         \
    log_t l_ = {0};                                                            \
    closure_t *c = closure_new(&l_);                                           \
    assert_int_equal((call), (code));                                          \
    expect_freed_after(&l_, 0);                                                \
  } while (0)

static void test_refused_registration_frees_arg(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *settled, *d = NULL;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &settled), 0);
  /* Bad arguments. */
  REFUSED(UV_EINVAL,
          uvp_promise_on_full(p, 0, not_called, c, closure_free, &d));
  REFUSED(UV_EINVAL,
          uvp_promise_on_full(p, 5, not_called, c, closure_free, &d));
  REFUSED(UV_EINVAL,
          uvp_promise_then_full(NULL, not_called, c, closure_free, &d));
  REFUSED(UV_EINVAL,
          uvp_promise_finally_full(NULL, not_called, c, closure_free, &d));
  REFUSED(UV_EINVAL,
          uvp_promise_set_cancel_full(NULL, closure_hook, c, closure_free));
  REFUSED(UVP_ESETTLED,
          uvp_promise_set_cancel_full(settled, closure_hook, c, closure_free));
  REFUSED(UV_EINVAL, uvp_ctx_set_unhandled_cb_full(NULL, closure_unhandled, c,
                                                   closure_free));
  uvp_map_opts_t mo = {.flags = 0x100, .arg_free = closure_free};
  uvp_promise_t *r = NULL;
  REFUSED(UV_EINVAL, uvp_promise_map(f->ctx, 3, not_started, c, &mo, &r));
  mo.flags = 0;
  REFUSED(UV_EINVAL, uvp_promise_map(f->ctx, 3, NULL, c, &mo, &r));
  REFUSED(UV_EINVAL, uvp_promise_loop_full(f->ctx, NULL, c, closure_free, &r));
  REFUSED(UV_EINVAL, uvp_promise_reduce_full(f->ctx, 2, not_stepped, c,
                                             closure_free, NULL, NULL));
  uvp_retry_opts_t ro = {.arg_free = closure_free};
  REFUSED(UV_EINVAL, uvp_retry(f->ctx, NULL, c, &ro, &r));
  REFUSED(UV_EINVAL, uvp_retry(f->ctx, not_attempted, c, &ro, NULL));
  assert_null(d);
  assert_null(r);
  /* After close. */
  uvp_ctx_t *ctx = close_now(f);
  REFUSED(UVP_ECLOSED,
          uvp_promise_then_full(p, not_called, c, closure_free, &d));
  REFUSED(UVP_ECLOSED, uvp_promise_on_full(settled, UVP_ON_BOTH, not_called, c,
                                           closure_free, NULL));
  REFUSED(UVP_ECLOSED,
          uvp_promise_finally_full(p, not_called, c, closure_free, &d));
  REFUSED(UVP_ECLOSED,
          uvp_promise_set_cancel_full(p, closure_hook, c, closure_free));
  REFUSED(UVP_ECLOSED, uvp_ctx_set_unhandled_cb_full(ctx, closure_unhandled, c,
                                                     closure_free));
  REFUSED(UVP_ECLOSED, uvp_ctx_set_data(ctx, c, closure_free));
  REFUSED(UVP_ECLOSED, uvp_promise_map(ctx, 3, not_started, c, &mo, &r));
  REFUSED(UVP_ECLOSED,
          uvp_promise_loop_full(ctx, not_stepped, c, closure_free, &r));
  REFUSED(UVP_ECLOSED, uvp_promise_reduce_full(ctx, 2, not_stepped, c,
                                               closure_free, NULL, &r));
  REFUSED(UVP_ECLOSED, uvp_retry(ctx, not_attempted, c, &ro, &r));
  assert_null(d);
  assert_null(r);
  uvp_promise_release(p);
  uvp_promise_release(settled);
}

/* Refused for want of memory: each registration with a notifier, run
 * with the k-th allocation failing for k = 1, 2, ... (alloc-helpers.h).
 * Refused (UV_ENOMEM), the notifier has run once, before the call
 * returned; accepted, the notifier runs once, later. */
enum { NM_FORMS = 8 };
static int nm_form;
static long nm_enomem;
static uvp_ctx_t *nm_ctx;

static int nm_start(void *arg, size_t i, uvp_promise_t **out) {
  (void)arg;
  return uvp_promise_resolved(nm_ctx, (void *)(uintptr_t)(i + 1), NULL, out);
}

static int nm_step(void *arg, size_t i, const uvp_outcome_t *prev,
                   uvp_promise_t **next) {
  (void)arg, (void)i, (void)prev, (void)next;
  return 0; /* stops at once */
}

static int nm_attempt(void *arg, unsigned int i, uvp_promise_t **out) {
  (void)arg, (void)i;
  return uvp_promise_resolved(nm_ctx, NULL, NULL, out);
}

static int nm_register(uvp_promise_t *p, closure_t *c, uvp_promise_t **d,
                       hook_t *h) {
  uvp_map_opts_t mo = {.limit = 2, .arg_free = closure_free};
  uvp_retry_opts_t ro = {.arg_free = closure_free};
  switch (nm_form) {
  case 0:
    return uvp_promise_then_full(p, closure_then, c, closure_free, d);
  case 1:
    return uvp_promise_on_full(p, UVP_ON_BOTH, closure_then, c, closure_free,
                               NULL);
  case 2:
    return uvp_promise_finally_full(p, closure_then, c, closure_free, d);
  case 3: /* over a hook, which a refusal leaves in place */
    assert_int_equal(uvp_promise_set_cancel(p, count_hook, h), 0);
    return uvp_promise_set_cancel_full(p, closure_hook, c, closure_free);
  case 4:
    return uvp_promise_map(nm_ctx, 3, nm_start, c, &mo, d);
  case 5:
    return uvp_promise_loop_full(nm_ctx, nm_step, c, closure_free, d);
  case 6:
    return uvp_promise_reduce_full(nm_ctx, 3, nm_step, c, closure_free, p, d);
  default:
    return uvp_retry(nm_ctx, nm_attempt, c, &ro, d);
  }
}

static void scenario_refused(run_t *r) {
  log_t l = {0};
  closure_t *c = closure_new(&l);
  uvp_promise_t *p, *d = NULL;
  hook_t h = {0};
  nm_ctx = r->ctx;
  int rc = uvp_promise_new(r->ctx, &p);
  OK_OR_ENOMEM(rc);
  if (rc == 0)
    rc = nm_register(p, c, &d, &h);
  else
    p = NULL;
  OK_OR_ENOMEM(rc);
  if (rc != 0 && p == NULL) {
    free(c); /* never handed over */
  } else if (rc != 0) {
    nm_enomem++;
    assert_null(d);
    if (l.freed != 1 || l.calls != 0)
      fail_msg("form %d: UV_ENOMEM, the notifier ran %d times (not 1), "
               "the callback %d (not 0)",
               nm_form, l.freed, l.calls);
  }
  if (p != NULL && nm_form == 3)
    assert_int_equal(uvp_promise_cancel(p), 0);
  else if (p != NULL)
    assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  if (nm_form == 3 && p != NULL)
    assert_int_equal(h.calls, rc != 0);
  if (rc == 0)
    expect_freed_after(&l, l.calls);
  uvp_promise_release(d);
  uvp_promise_release(p);
}

static void test_refused_for_memory_frees_arg(void **state) {
  (void)state;
  for (nm_form = 0; nm_form < NM_FORMS; nm_form++) {
    nm_enomem = 0;
    exhaust(scenario_refused);
    if (nm_enomem == 0)
      fail_msg("form %d never refused for memory", nm_form);
  }
}

/* ---- 13. what the unhandled hook hears ----------------------------------- */

static uvp_ret_t pass_cb(void *arg, const uvp_outcome_t *in) {
  int *seen = arg;
  (void)in;
  (*seen)++;
  return uvp_ret_pass();
}

static uvp_ret_t reject_cb(void *arg, const uvp_outcome_t *in) {
  int *seen = arg;
  (void)in;
  (*seen)++;
  return uvp_ret_reject(UV_EPERM, NULL, NULL);
}

/* Cancel an allSettled result that has handlers for both outcomes, with a
 * derived promise and without; release everything; close. */
static void cancel_handled_all_settled(fixture_t *f, int *seen) {
  hook_t h1 = {0}, h2 = {0};
  uvp_promise_t *in[2] = {producer(f, &h1), producer(f, &h2)}, *all, *d;
  assert_int_equal(uvp_promise_all_settled(f->ctx, in, 2, &all), 0);
  assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, pass_cb, seen, &d), 0);
  assert_int_equal(uvp_promise_on(all, UVP_ON_BOTH, pass_cb, seen, NULL), 0);
  assert_int_equal(uvp_promise_cancel(all), 0);
  run_loop(f);
  uvp_promise_release(d);
  uvp_promise_release(all);
  uvp_promise_release(in[0]);
  uvp_promise_release(in[1]);
  close_now(f);
  run_loop(f);
  *seen += 10 * (h1.calls + h2.calls); /* the inputs were cancelled */
}

static void test_unhandled_cancelled_all_settled_hook(void **state) {
  fixture_t *f = *state;
  int seen = 0;
  cancel_handled_all_settled(f, &seen);
  assert_int_equal(seen, 2 + 20);
  assert_int_equal(g_reports, 0);
}

/* stderr, captured into a file for the duration of `run`. */
typedef struct capture_s {
  int saved;
  FILE *file;
  char text[4096];
} capture_t;

static void capture_begin(capture_t *c) {
  fflush(stderr);
  c->file = tmpfile();
  assert_non_null(c->file);
  c->saved = dup(STDERR_FILENO);
  assert_true(c->saved >= 0);
  assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

static const char *capture_end(capture_t *c) {
  fflush(stderr);
  dup2(c->saved, STDERR_FILENO);
  close(c->saved);
  rewind(c->file);
  size_t n = fread(c->text, 1, sizeof(c->text) - 1, c->file);
  c->text[n] = '\0';
  fclose(c->file);
  return c->text;
}

static int count_lines(const char *text, const char *needle) {
  int n = 0;
  for (const char *s = strstr(text, needle); s != NULL;
       s = strstr(s + 1, needle))
    n++;
  return n;
}

/* The same with the default hook: nothing on stderr. */
static void test_unhandled_cancelled_all_settled_stderr(void **state) {
  fixture_t *f = *state;
  int seen = 0;
  capture_t cap;
  capture_begin(&cap);
  cancel_handled_all_settled(f, &seen);
  const char *text = capture_end(&cap);
  assert_string_equal(text, "");
  assert_int_equal(seen, 2 + 20);
}

/* And the capture would have seen a report: a plain UV_EIO rejection
 * nobody handles writes one line. */
static void test_unhandled_default_hook_writes_once(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  capture_t cap;
  capture_begin(&cap);
  int rc = uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &p);
  if (rc == 0)
    uvp_promise_release(p);
  close_now(f);
  const char *text = capture_end(&cap);
  assert_int_equal(rc, 0);
  assert_int_equal(count_lines(text, "unhandled rejection"), 1);
  assert_non_null(strstr(text, "EIO"));
  assert_non_null(strstr(text, __FILE__));
}

static void test_unhandled_cancelled_not_reported(void **state) {
  fixture_t *f = *state;
  hook_t h = {0};
  uvp_promise_t *p, *q = producer(f, &h), *kept;
  /* Cancelled, nobody observes it, released. */
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  uvp_promise_release(p);
  assert_int_equal(uvp_promise_cancel(q), 0);
  uvp_promise_release(q);
  /* Cancelled and still held at close. */
  assert_int_equal(uvp_promise_new(f->ctx, &kept), 0);
  assert_int_equal(uvp_promise_cancel(kept), 0);
  run_loop(f);
  close_now(f);
  uvp_promise_release(kept);
  assert_int_equal(h.calls, 1);
  assert_int_equal(g_reports, 0);
}

static void test_unhandled_cancellation_passed_on(void **state) {
  fixture_t *f = *state;
  int seen = 0;
  uvp_promise_t *p, *d1, *d2;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, pass_cb, &seen, &d1), 0);
  assert_int_equal(uvp_promise_then(d1, pass_cb, &seen, &d2), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  run_loop(f);
  assert_int_equal(seen, 0);
  assert_int_equal(uvp_promise_reason(d2, NULL), UV_ECANCELED);
  uvp_promise_release(d1);
  uvp_promise_release(d2);
  uvp_promise_release(p);
  close_now(f);
  assert_int_equal(g_reports, 0);
}

static void test_unhandled_plain_rejection_reported_once(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *kept;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(g_reports, 0);
  uvp_promise_release(p);
  assert_int_equal(g_reports, 1);
  assert_int_equal(g_report_code, UV_EIO);
  /* Held until close: reported by the close, not again at release. */
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_ENOENT, NULL, NULL, &kept),
                   0);
  close_now(f);
  assert_int_equal(g_reports, 2);
  assert_int_equal(g_report_code, UV_ENOENT);
  uvp_promise_release(kept);
  assert_int_equal(g_reports, 2);
}

/* A handler without a derived promise: a new rejection it returns is
 * reported (it has nowhere to go); a rejection it saw and passes on is
 * not (it was handled); one it did not see (outside its mask) is, as
 * JavaScript reports p.then(f) of a rejected p. */
static void test_unhandled_handler_without_derived(void **state) {
  fixture_t *f = *state;
  int seen = 0;
  uvp_promise_t *ok, *err;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &err), 0);
  /* Saw the rejection, passes it on: not reported. */
  assert_int_equal(uvp_promise_catch(err, pass_cb, &seen, NULL), 0);
  assert_int_equal(uvp_promise_on(err, UVP_ON_BOTH, pass_cb, &seen, NULL), 0);
  run_loop(f);
  assert_int_equal(seen, 2);
  assert_int_equal(g_reports, 0);
  /* Returns a new rejection: reported once, with its code. */
  assert_int_equal(uvp_promise_then(ok, reject_cb, &seen, NULL), 0);
  run_loop(f);
  assert_int_equal(seen, 3);
  assert_int_equal(g_reports, 1);
  assert_int_equal(g_report_code, UV_EPERM);
  assert_int_equal(uvp_promise_catch(err, reject_cb, &seen, NULL), 0);
  run_loop(f);
  assert_int_equal(seen, 4);
  assert_int_equal(g_reports, 2);
  assert_int_equal(g_report_code, UV_EPERM);
  /* Outside its mask: the rejection goes on to nobody. */
  assert_int_equal(uvp_promise_then(err, pass_cb, &seen, NULL), 0);
  run_loop(f);
  assert_int_equal(seen, 4);
  assert_int_equal(g_reports, 3);
  assert_int_equal(g_report_code, UV_EIO);
  uvp_promise_release(ok);
  uvp_promise_release(err);
  close_now(f);
  assert_int_equal(g_reports, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      REPORT_TEST(test_then_full_source_rejects),
      REPORT_TEST(test_derived_cancelled_source_pending),
      REPORT_TEST(test_derived_cancelled_sole_consumer),
      REPORT_TEST(test_derived_cancelled_reaction_queued),
      REPORT_TEST(test_source_released_pending),
      REPORT_TEST(test_teardown_queued_and_pending),
      REPORT_TEST(test_notifier_after_handler),
      REPORT_TEST(test_handler_cancels_own_derived),
      REPORT_TEST(test_finally_full_both_outcomes),
      REPORT_TEST(test_catch_full_both_outcomes),
      REPORT_TEST(test_on_full_both),
      REPORT_TEST(test_cancel_full_hook_then_notifier),
      REPORT_TEST(test_cancel_full_settled_otherwise),
      REPORT_TEST(test_cancel_full_replaced_and_removed),
      REPORT_TEST(test_cancel_full_freed_pending),
      REPORT_TEST(test_cancel_full_teardown),
      REPORT_TEST(test_unhandled_full_replaced),
      REPORT_TEST(test_unhandled_full_at_close),
      REPORT_TEST(test_unhandled_full_hook_closes_context),
      REPORT_TEST(test_unhandled_full_replaced_inside_hook),
      REPORT_TEST(test_ctx_data),
      REPORT_TEST(test_map_arg_free_completes),
      REPORT_TEST(test_map_arg_free_cancelled_midway),
      REPORT_TEST(test_map_arg_free_fail_fast),
      REPORT_TEST(test_map_arg_free_empty),
      REPORT_TEST(test_map_arg_free_not_during_callbacks),
      REPORT_TEST(test_map_arg_free_teardown),
      REPORT_TEST(test_loop_full_completes),
      REPORT_TEST(test_loop_full_cancelled_midway),
      REPORT_TEST(test_loop_full_cancelled_inside_step),
      REPORT_TEST(test_loop_full_teardown),
      REPORT_TEST(test_reduce_full),
      REPORT_TEST(test_retry_arg_free),
      REPORT_TEST(test_retry_cancelled_inside_attempt),
      REPORT_TEST(test_refused_registration_frees_arg),
      cmocka_unit_test(test_refused_for_memory_frees_arg),
      REPORT_TEST(test_unhandled_cancelled_all_settled_hook),
      FIXTURE_TEST(test_unhandled_cancelled_all_settled_stderr),
      FIXTURE_TEST(test_unhandled_default_hook_writes_once),
      REPORT_TEST(test_unhandled_cancelled_not_reported),
      REPORT_TEST(test_unhandled_cancellation_passed_on),
      REPORT_TEST(test_unhandled_plain_rejection_reported_once),
      REPORT_TEST(test_unhandled_handler_without_derived),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
