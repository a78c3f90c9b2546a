/* Sequential steps (uvp_promise_loop / uvp_promise_reduce), retry with
 * backoff (uvp_retry) and splitting allSettled outcomes (uvp_settled_split):
 * the patterns users write right after allSettled. */
#include "helpers.h"

/* ---- loop ---------------------------------------------------------------- */

typedef struct {
  fixture_t *f;
  size_t stop_at;
  size_t calls;
  size_t max_live;
  int fail_at;                 /* -1: never */
  int reject_at;               /* -1: never; step returns a rejected promise */
  uvp_promise_t *pending_step; /* for cancellation tests */
  int step_cancelled;
} loop_state_t;

static void note_live(loop_state_t *s) {
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(s->f->ctx, &st), 0);
  if (st.live > s->max_live)
    s->max_live = st.live;
}

static int counting_step(void *arg, size_t index, const uvp_outcome_t *prev,
                         uvp_promise_t **next) {
  loop_state_t *s = arg;
  assert_int_equal(prev->status, 0);
  /* Each step gets the previous step's value: index i sees i. */
  assert_int_equal((intptr_t)prev->value, (intptr_t)index);
  assert_int_equal(s->calls, index);
  s->calls++;
  note_live(s);
  if (s->fail_at >= 0 && index == (size_t)s->fail_at)
    return UV_EIO;
  if (index == s->stop_at)
    return 0; /* *next stays NULL: stop */
  if (s->reject_at >= 0 && index == (size_t)s->reject_at)
    return uvp_promise_rejected(s->f->ctx, UV_EPIPE, NULL, NULL, next);
  return uvp_promise_resolved(s->f->ctx, (void *)(intptr_t)(index + 1), NULL,
                              next);
}

static void test_loop_million_steps_constant_memory(void **state) {
  fixture_t *f = *state;
  loop_state_t s = {f, 1000000, 0, 0, -1, -1, NULL, 0};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop(f->ctx, counting_step, &s, &r), 0);
  assert_int_equal(s.calls, 0); /* never inside the call */
  run_loop(f);
  assert_int_equal(s.calls, 1000001);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  assert_int_equal((intptr_t)uvp_promise_value(r), 1000000);
  /* Only the result and the current step are ever alive. */
  assert_true(s.max_live <= 4);
  uvp_promise_release(r);
}

static void test_loop_step_error_rejects(void **state) {
  fixture_t *f = *state;
  loop_state_t s = {f, 100, 0, 0, 5, -1, NULL, 0};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop(f->ctx, counting_step, &s, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 6);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EIO);
  uvp_promise_release(r);
}

static void test_loop_rejected_step_ends_with_its_reason(void **state) {
  fixture_t *f = *state;
  loop_state_t s = {f, 100, 0, 0, -1, 3, NULL, 0};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop(f->ctx, counting_step, &s, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 4); /* step 4 never called */
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EPIPE);
  uvp_promise_release(r);
}

static void step_cancel_hook(uvp_promise_t *p, void *arg) {
  (void)p;
  (*(int *)arg)++;
}

static int pending_step(void *arg, size_t index, const uvp_outcome_t *prev,
                        uvp_promise_t **next) {
  loop_state_t *s = arg;
  (void)prev;
  s->calls++;
  if (index < 2)
    return uvp_promise_resolved(s->f->ctx, (void *)(intptr_t)(index + 1), NULL,
                                next);
  assert_int_equal(uvp_promise_new(s->f->ctx, next), 0);
  assert_int_equal(
      uvp_promise_set_cancel(*next, step_cancel_hook, &s->step_cancelled), 0);
  s->pending_step = uvp_promise_retain(*next);
  return 0;
}

static void test_loop_cancel_between_steps(void **state) {
  fixture_t *f = *state;
  loop_state_t s = {f, 0, 0, 0, -1, -1, NULL, 0};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop(f->ctx, pending_step, &s, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 3);
  assert_int_equal(uvp_promise_state(r), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ECANCELED);
  /* The step in flight is cancelled with it, and no further step runs. */
  assert_int_equal(s.step_cancelled, 1);
  assert_int_equal(uvp_promise_reason(s.pending_step, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(s.calls, 3);
  uvp_promise_release(s.pending_step);
  uvp_promise_release(r);
}

/* A step in flight that something else also waits for is left to it when
 * the loop is cancelled (uvp_promise_cancel's rule), and the loop stops
 * waiting for it: cancelling the other consumer, the last, cancels it. */
static void test_loop_cancel_leaves_shared_step(void **state) {
  fixture_t *f = *state;
  loop_state_t s = {f, 0, 0, 0, -1, -1, NULL, 0};
  uvp_promise_t *r, *other;
  assert_int_equal(uvp_promise_loop(f->ctx, pending_step, &s, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 3);
  assert_int_equal(uvp_promise_then(s.pending_step, NULL, NULL, &other), 0);
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(s.step_cancelled, 0);
  assert_int_equal(uvp_promise_state(s.pending_step), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(other), 0);
  assert_int_equal(s.step_cancelled, 1);
  assert_int_equal(uvp_promise_reason(s.pending_step, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(s.calls, 3);
  uvp_promise_release(other);
  uvp_promise_release(s.pending_step);
  uvp_promise_release(r);
}

static void test_loop_result_cannot_be_settled_by_user(void **state) {
  fixture_t *f = *state;
  loop_state_t s = {f, 3, 0, 0, -1, -1, NULL, 0};
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop(f->ctx, counting_step, &s, &r), 0);
  assert_int_equal(uvp_promise_resolve(r, NULL, NULL), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal((intptr_t)uvp_promise_value(r), 3);
  uvp_promise_release(r);
}

/* ---- reduce -------------------------------------------------------------- */

static int sum_step(void *arg, size_t index, const uvp_outcome_t *prev,
                    uvp_promise_t **next) {
  fixture_t *f = arg;
  intptr_t acc = (intptr_t)prev->value;
  return uvp_promise_resolved(f->ctx, (void *)(acc + (intptr_t)index + 1), NULL,
                              next);
}

static void test_reduce_sums_in_order(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *init, *r;
  assert_int_equal(
      uvp_promise_resolved(f->ctx, (void *)(intptr_t)100, NULL, &init), 0);
  assert_int_equal(uvp_promise_reduce(f->ctx, 10, sum_step, f, init, &r), 0);
  run_loop(f);
  assert_int_equal((intptr_t)uvp_promise_value(r), 100 + 55);
  uvp_promise_release(init);
  uvp_promise_release(r);
}

static void test_reduce_zero_items_is_initial(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_reduce(f->ctx, 0, sum_step, f, NULL, &r), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  assert_null(uvp_promise_value(r));
  uvp_promise_release(r);
}

static void test_reduce_rejected_initial(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *init, *r;
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_ENOENT, NULL, NULL, &init),
                   0);
  assert_int_equal(uvp_promise_reduce(f->ctx, 10, sum_step, f, init, &r), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ENOENT);
  uvp_promise_release(init);
  uvp_promise_release(r);
}

static void test_flow_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_loop(NULL, sum_step, f, &r), UV_EINVAL);
  assert_int_equal(uvp_promise_loop(f->ctx, NULL, f, &r), UV_EINVAL);
  assert_int_equal(uvp_promise_loop(f->ctx, sum_step, f, NULL), UV_EINVAL);
  assert_int_equal(uvp_retry(f->ctx, NULL, NULL, NULL, &r), UV_EINVAL);
  assert_int_equal(uvp_settled_split(NULL, NULL), UV_EINVAL);
  /* A reduce starting from another context's promise (a second context
   * on the fixture's loop, whose teardown reaps it). */
  uvp_ctx_t *ctx2;
  uvp_promise_t *theirs;
  r = NULL;
  assert_int_equal(uvp_ctx_new(&f->loop, &ctx2), 0);
  assert_int_equal(uvp_promise_resolved(ctx2, NULL, NULL, &theirs), 0);
  assert_int_equal(uvp_promise_reduce(f->ctx, 3, sum_step, f, theirs, &r),
                   UVP_EXCTX);
  assert_null(r);
  uvp_promise_release(theirs);
  assert_int_equal(uvp_ctx_close(ctx2), 0);
  /* A list claiming records it does not have. */
  uvp_settled_list_t hollow = {.count = 2, .fulfilled = 2};
  uvp_split_t sp = {.nfulfilled = 7};
  assert_int_equal(uvp_settled_split(&hollow, &sp), UV_EINVAL);
  assert_int_equal(uvp_settled_split(&hollow, NULL), UV_EINVAL);
  assert_int_equal(sp.nfulfilled, 7); /* untouched */
}

/* ---- retry --------------------------------------------------------------- */

typedef struct {
  fixture_t *f;
  unsigned calls;
  unsigned succeed_at; /* attempt index that fulfils; UINT_MAX: never */
  int code;
  uint64_t at[16]; /* uv_now() of each attempt */
  uvp_promise_t *inflight;
  int inflight_cancelled;
} retry_state_t;

static int attempt_cb(void *arg, unsigned attempt, uvp_promise_t **out) {
  retry_state_t *s = arg;
  assert_int_equal(attempt, s->calls);
  uv_update_time(&s->f->loop);
  s->at[s->calls++] = uv_now(&s->f->loop);
  if (attempt == s->succeed_at)
    return uvp_promise_resolved(s->f->ctx, (void *)(intptr_t)(attempt + 40),
                                NULL, out);
  return uvp_promise_rejected(s->f->ctx, s->code, NULL, NULL, out);
}

static void test_retry_succeeds_after_failures_with_backoff(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, 2, UV_ECONNREFUSED, {0}, NULL, 0};
  int codes[] = {UV_ECONNREFUSED, UV_ETIMEDOUT};
  uvp_retry_opts_t o = {.attempts = 5,
                        .base_ms = 20,
                        .max_ms = 1000,
                        .factor = 2.0,
                        .jitter = 0.0,
                        .retry_on = codes,
                        .retry_on_count = 2,
                        .should_retry = NULL};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, attempt_cb, &s, &o, &r), 0);
  assert_int_equal(s.calls, 1); /* the first attempt inside the call */
  run_loop(f);
  assert_int_equal(s.calls, 3);
  assert_int_equal((intptr_t)uvp_promise_value(r), 42);
  /* Lower bounds only: 20 ms, then 40 ms. */
  assert_true(s.at[1] - s.at[0] >= 20);
  assert_true(s.at[2] - s.at[1] >= 40);
  uvp_promise_release(r);
}

static void test_retry_gives_up_after_attempts(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, UINT32_MAX, UV_ETIMEDOUT, {0}, NULL, 0};
  uvp_retry_opts_t o = {.attempts = 4,
                        .base_ms = 1,
                        .max_ms = 5,
                        .factor = 2.0,
                        .jitter = 0.5,
                        .retry_on = NULL,
                        .retry_on_count = 0,
                        .should_retry = NULL};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, attempt_cb, &s, &o, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 4);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ETIMEDOUT);
  uvp_promise_release(r);
}

static void test_retry_predicate_stops_on_unlisted_code(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, UINT32_MAX, UV_ENOENT, {0}, NULL, 0};
  int codes[] = {UV_ECONNREFUSED, UV_ETIMEDOUT};
  uvp_retry_opts_t o = {.attempts = 5,
                        .base_ms = 1,
                        .max_ms = 5,
                        .factor = 2.0,
                        .jitter = 0.0,
                        .retry_on = codes,
                        .retry_on_count = 2,
                        .should_retry = NULL};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, attempt_cb, &s, &o, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 1); /* UV_ENOENT is not worth retrying */
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ENOENT);
  uvp_promise_release(r);
}

static int only_twice(void *arg, int code, unsigned attempt) {
  (void)arg;
  assert_int_equal(code, UV_ECONNRESET);
  return attempt < 1;
}

static void test_retry_custom_predicate(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, UINT32_MAX, UV_ECONNRESET, {0}, NULL, 0};
  uvp_retry_opts_t o = {.attempts = 9,
                        .base_ms = 1,
                        .max_ms = 5,
                        .factor = 2.0,
                        .jitter = 0.0,
                        .retry_on = NULL,
                        .retry_on_count = 0,
                        .should_retry = only_twice};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, attempt_cb, &s, &o, &r), 0);
  run_loop(f);
  assert_int_equal(s.calls, 2);
  uvp_promise_release(r);
}

static void stop_loop_cb(uv_timer_t *t) {
  retry_state_t *s = t->data;
  uvp_promise_t *r = s->inflight;
  /* Cancel during the backoff wait. */
  assert_int_equal(uvp_promise_cancel(r), 0);
  uv_close((uv_handle_t *)t, NULL);
}

/* Retry always failing with backoff base_ms * factor^k (capped at max_ms),
 * cancelled after cancel_ms; returns the result.  *ran_ms gets how long
 * the loop ran. */
static uvp_promise_t *retry_cancelled_after(retry_state_t *s, uint64_t base_ms,
                                            uint64_t max_ms, double factor,
                                            uint64_t cancel_ms,
                                            uint64_t *ran_ms) {
  fixture_t *f = s->f;
  uvp_retry_opts_t o = {.attempts = 5,
                        .base_ms = base_ms,
                        .max_ms = max_ms,
                        .factor = factor,
                        .jitter = 0.0,
                        .retry_on = NULL,
                        .retry_on_count = 0,
                        .should_retry = NULL};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, attempt_cb, s, &o, &r), 0);
  s->inflight = r;
  uv_timer_t t;
  uv_timer_init(&f->loop, &t);
  t.data = s;
  uv_timer_start(&t, stop_loop_cb, cancel_ms, 0);
  uint64_t t0 = uv_now(&f->loop);
  run_loop(f);
  *ran_ms = uv_now(&f->loop) - t0;
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ECANCELED);
  return r;
}

static void test_retry_cancel_during_backoff(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, UINT32_MAX, UV_ECONNREFUSED, {0}, NULL, 0};
  /* A 20 s wait, so that the bound below leaves seconds of slack for
   * valgrind and a busy machine and still fails if the loop waits for the
   * backoff timer (it was a 200 ms wait with a 200 ms bound: 150 ms of
   * slack). */
  uint64_t ran;
  uvp_promise_t *r = retry_cancelled_after(&s, 20000, 40000, 2.0, 50, &ran);
  /* One attempt, then cancelled in the 20 s wait: no second attempt and
   * the loop did not wait for the backoff timer. */
  assert_int_equal(s.calls, 1);
  assert_true(ran < 10000);
  uvp_promise_release(r);
}

/* A wait past what a uint64_t of milliseconds holds (max_ms = UINT64_MAX
 * for "no cap", a growth of 1e30) is the longest wait, not a cast out of
 * range: that made it 0, and the attempts ran back to back. */
static void test_retry_uncapped_huge_backoff_waits(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, UINT32_MAX, UV_ECONNREFUSED, {0}, NULL, 0};
  uint64_t ran;
  uvp_promise_t *r = retry_cancelled_after(&s, 1, UINT64_MAX, 1e30, 200, &ran);
  /* 1 ms, then 1e30 ms (capped at UINT64_MAX): two attempts in 200 ms. */
  assert_int_equal(s.calls, 2);
  uvp_promise_release(r);
}

static int pending_attempt(void *arg, unsigned attempt, uvp_promise_t **out) {
  retry_state_t *s = arg;
  (void)attempt;
  s->calls++;
  assert_int_equal(uvp_promise_new(s->f->ctx, out), 0);
  assert_int_equal(
      uvp_promise_set_cancel(*out, step_cancel_hook, &s->inflight_cancelled),
      0);
  s->inflight = uvp_promise_retain(*out);
  return 0;
}

static void test_retry_cancel_attempt_in_flight(void **state) {
  fixture_t *f = *state;
  retry_state_t s = {f, 0, 0, 0, {0}, NULL, 0};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, pending_attempt, &s, NULL, &r), 0);
  assert_int_equal(s.calls, 1);
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(s.inflight_cancelled, 1);
  assert_int_equal(uvp_promise_reason(s.inflight, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(s.calls, 1);
  uvp_promise_release(s.inflight);
  uvp_promise_release(r);
}

/* should_retry runs from the scheduler: not inside the call that rejects
 * the attempt's promise, only once the loop runs.  Its arg is the
 * attempt's: a retry_state_t first, for pending_attempt. */
typedef struct {
  retry_state_t s;
  unsigned asked;
} asked_state_t;

static int counting_pred(void *arg, int code, unsigned attempt) {
  asked_state_t *a = arg;
  assert_int_equal(code, a->s.code);
  assert_int_equal(attempt, 0);
  a->asked++;
  return 0; /* the result takes this failure */
}

static void test_retry_predicate_runs_from_scheduler(void **state) {
  fixture_t *f = *state;
  asked_state_t a = {{f, 0, 0, UV_EPIPE, {0}, NULL, 0}, 0};
  uvp_retry_opts_t o = {.attempts = 3, .should_retry = counting_pred};
  uvp_promise_t *r;
  assert_int_equal(uvp_retry(f->ctx, pending_attempt, &a, &o, &r), 0);
  assert_int_equal(a.s.calls, 1);
  assert_int_equal(uvp_promise_reject(a.s.inflight, UV_EPIPE, NULL, NULL), 0);
  assert_int_equal(a.asked, 0);
  assert_int_equal(uvp_promise_state(r), UVP_PENDING);
  run_loop(f);
  assert_int_equal(a.asked, 1);
  assert_int_equal(a.s.calls, 1);
  assert_int_equal(a.s.inflight_cancelled, 0);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EPIPE);
  uvp_promise_release(a.s.inflight);
  uvp_promise_release(r);
}

/* should_retry may cancel the result it is asked about: the retry then
 * stops there, as when an attempt cancels it. */
typedef struct {
  uvp_promise_t *result;
  int asked, freed;
} cancelling_pred_t;

static int failing_attempt(void *arg, unsigned attempt, uvp_promise_t **out) {
  (void)arg;
  (void)attempt;
  (void)out;
  return UV_ECONNREFUSED;
}

static int cancelling_pred(void *arg, int code, unsigned attempt) {
  cancelling_pred_t *c = arg;
  assert_int_equal(code, UV_ECONNREFUSED);
  assert_int_equal(attempt, 0);
  c->asked++;
  assert_int_equal(uvp_promise_cancel(c->result), 0);
  assert_int_equal(c->freed, 0); /* not while the predicate runs */
  return 0;
}

static void cancelling_pred_free(void *arg) {
  ((cancelling_pred_t *)arg)->freed++;
}

static void test_retry_predicate_cancels_result(void **state) {
  fixture_t *f = *state;
  cancelling_pred_t c = {NULL, 0, 0};
  uvp_retry_opts_t o = {.attempts = 3,
                        .should_retry = cancelling_pred,
                        .arg_free = cancelling_pred_free};
  assert_int_equal(uvp_retry(f->ctx, failing_attempt, &c, &o, &c.result), 0);
  run_loop(f);
  assert_int_equal(c.asked, 1);
  assert_int_equal(c.freed, 1);
  assert_int_equal(uvp_promise_reason(c.result, NULL), UV_ECANCELED);
  uvp_promise_release(c.result);
}

/* A bounded fan-out whose items retry: item i fails (i % 3) times with
 * UV_ECONNREFUSED before succeeding; item 7 always fails with UV_ENOENT,
 * which is not worth retrying. */
typedef struct {
  fixture_t *f;
  unsigned attempts[12];
} fanout_retry_t;

typedef struct {
  fanout_retry_t *st;
  size_t index;
} item_ref_t;

static int item_attempt(void *arg, unsigned attempt, uvp_promise_t **out) {
  item_ref_t *it = arg;
  fanout_retry_t *st = it->st;
  st->attempts[it->index]++;
  if (it->index == 7)
    return uvp_promise_rejected(st->f->ctx, UV_ENOENT, NULL, NULL, out);
  if (attempt < it->index % 3)
    return uvp_promise_rejected(st->f->ctx, UV_ECONNREFUSED, NULL, NULL, out);
  return uvp_promise_resolved(st->f->ctx, (void *)(intptr_t)(100 + it->index),
                              NULL, out);
}

static item_ref_t item_refs[12];

static int start_with_retry(void *arg, size_t i, uvp_promise_t **out) {
  fanout_retry_t *st = arg;
  static const int codes[] = {UV_ECONNREFUSED};
  uvp_retry_opts_t o = {.attempts = 4,
                        .base_ms = 1,
                        .max_ms = 4,
                        .factor = 2.0,
                        .jitter = 0.5,
                        .retry_on = codes,
                        .retry_on_count = 1,
                        .should_retry = NULL};
  item_refs[i].st = st;
  item_refs[i].index = i;
  return uvp_retry(st->f->ctx, item_attempt, &item_refs[i], &o, out);
}

static void test_map_items_retry(void **state) {
  fixture_t *f = *state;
  fanout_retry_t st;
  memset(&st, 0, sizeof(st));
  st.f = f;
  uvp_promise_t *r;
  /* The options as a compound literal: its commas go through the macro. */
  assert_int_equal(uvp_promise_map(f->ctx, 12, start_with_retry, &st,
                                   &(uvp_map_opts_t){.limit = 3, .flags = 0},
                                   &r),
                   0);
  run_loop(f);
  const uvp_settled_list_t *l = uvp_promise_value(r);
  assert_non_null(l);
  assert_int_equal(l->fulfilled, 11);
  assert_int_equal(l->rejected, 1);
  for (size_t i = 0; i < 12; i++) {
    if (i == 7) {
      assert_int_equal(l->items[i].status, UV_ENOENT);
      assert_int_equal(st.attempts[i], 1);
    } else {
      assert_int_equal(l->items[i].status, 0);
      assert_int_equal((intptr_t)l->items[i].value, 100 + (intptr_t)i);
      assert_int_equal(st.attempts[i], i % 3 + 1);
    }
  }
  uvp_promise_release(r);
}

/* ---- split --------------------------------------------------------------- */

static void test_split_all_settled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *in[10], *s;
  int freed = 0;
  for (int i = 0; i < 10; i++) {
    if (i == 3 || i == 7)
      assert_int_equal(uvp_promise_rejected(f->ctx,
                                            i == 3 ? UV_ENOENT : UV_ETIMEDOUT,
                                            NULL, NULL, &in[i]),
                       0);
    else
      assert_int_equal(uvp_promise_resolved(f->ctx, boxed_new(i, &freed),
                                            boxed_free, &in[i]),
                       0);
  }
  assert_int_equal(uvp_promise_all_settled(f->ctx, in, 10, &s), 0);
  for (int i = 0; i < 10; i++)
    uvp_promise_release(in[i]);
  run_loop(f);
  const uvp_settled_list_t *list = uvp_promise_value(s);
  uvp_split_t sp;
  assert_int_equal(uvp_settled_split(list, &sp), 0);
  assert_int_equal(sp.nfulfilled, 8);
  assert_int_equal(sp.nrejected, 2);
  assert_int_equal(sp.rejected[0].index, 3);
  assert_int_equal(sp.rejected[0].status, UV_ENOENT);
  assert_int_equal(sp.rejected[1].index, 7);
  assert_int_equal(sp.rejected[1].status, UV_ETIMEDOUT);
  for (size_t k = 0; k < sp.nfulfilled; k++) {
    boxed_t *b = sp.fulfilled[k].value;
    assert_int_equal(b->v, (int)sp.fulfilled[k].index); /* not copied */
    assert_ptr_equal(b, list->items[sp.fulfilled[k].index].value);
  }
  uvp_split_free(&sp);
  assert_int_equal(freed, 0);
  uvp_promise_release(s);
  assert_int_equal(freed, 8); /* the values went with the result */
}

static void *no_malloc(size_t n) {
  (void)n;
  return NULL;
}

/* Out of memory: UV_ENOMEM and an empty split, which uvp_split_free takes.
 * Needs no context, so the allocator can be swapped around the call. */
static void test_split_enomem(void **state) {
  (void)state;
  uvp_settled_t items[3] = {
      {0, SENTINEL(0), NULL}, {UV_EIO, NULL, NULL}, {0, SENTINEL(1), NULL}};
  uvp_settled_list_t list = {3, 2, 1, items};
  uvp_split_t sp;
  assert_int_equal(uvp_replace_allocator(no_malloc, realloc, calloc, free), 0);
  int rc = uvp_settled_split(&list, &sp);
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
  assert_int_equal(rc, UV_ENOMEM);
  assert_int_equal(sp.nfulfilled + sp.nrejected, 0);
  assert_null(sp.fulfilled);
  assert_null(sp.rejected);
  uvp_split_free(&sp);
  /* With memory it works on the same list. */
  assert_int_equal(uvp_settled_split(&list, &sp), 0);
  assert_int_equal(sp.nfulfilled, 2);
  assert_int_equal(sp.nrejected, 1);
  assert_int_equal(sp.rejected[0].index, 1);
  assert_ptr_equal(sp.fulfilled[1].value, SENTINEL(1));
  uvp_split_free(&sp);
}

static void test_split_empty(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *s;
  assert_int_equal(uvp_promise_all_settled(f->ctx, NULL, 0, &s), 0);
  run_loop(f);
  uvp_split_t sp;
  assert_int_equal(uvp_settled_split(uvp_promise_value(s), &sp), 0);
  assert_int_equal(sp.nfulfilled + sp.nrejected, 0);
  uvp_split_free(&sp);
  uvp_promise_release(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_loop_million_steps_constant_memory),
      FIXTURE_TEST(test_loop_step_error_rejects),
      FIXTURE_TEST(test_loop_rejected_step_ends_with_its_reason),
      FIXTURE_TEST(test_loop_cancel_between_steps),
      FIXTURE_TEST(test_loop_cancel_leaves_shared_step),
      FIXTURE_TEST(test_loop_result_cannot_be_settled_by_user),
      FIXTURE_TEST(test_reduce_sums_in_order),
      FIXTURE_TEST(test_reduce_zero_items_is_initial),
      FIXTURE_TEST(test_reduce_rejected_initial),
      FIXTURE_TEST(test_flow_bad_input),
      FIXTURE_TEST(test_retry_succeeds_after_failures_with_backoff),
      FIXTURE_TEST(test_retry_gives_up_after_attempts),
      FIXTURE_TEST(test_retry_predicate_stops_on_unlisted_code),
      FIXTURE_TEST(test_retry_custom_predicate),
      FIXTURE_TEST(test_retry_cancel_during_backoff),
      FIXTURE_TEST(test_retry_uncapped_huge_backoff_waits),
      FIXTURE_TEST(test_retry_cancel_attempt_in_flight),
      FIXTURE_TEST(test_retry_predicate_cancels_result),
      QUIET_TEST(test_retry_predicate_runs_from_scheduler),
      FIXTURE_TEST(test_map_items_retry),
      FIXTURE_TEST(test_split_all_settled),
      FIXTURE_TEST(test_split_empty),
      cmocka_unit_test(test_split_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
