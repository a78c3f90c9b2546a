/* Completions of uvp's fs requests and the run queue: cancel and teardown
 * in the window where a request is done in libuv and its promise not yet
 * settled, handlers in the order the completions arrived, and a completion
 * that an endless chain of handlers does not starve. */
#include "fs-helpers.h"

/* ---- a finished request whose promise is not settled yet ----------------- */

/* libuv's callback queues the completion and the run queue settles the
 * promise later in the same iteration (src/fs.c: simple_cb).  A chain of
 * handlers, one per iteration (budget 1), each queueing its successor only
 * when it runs, finds anything else queued exactly when that completion is
 * waiting: then the request is done in libuv and its promise pending. */
typedef struct {
  fixture_t *f;
  uvp_promise_t *op;
  bool close_ctx;
  bool hit;
  long turns;
} window_t;

static void next_turn(window_t *w);

static uvp_ret_t in_window(void *arg, const uvp_outcome_t *in) {
  window_t *w = arg;
  (void)in;
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(w->f->ctx, &st), 0);
  if (st.queued != 0) {
    w->hit = true;
    assert_int_equal(uvp_promise_state(w->op), UVP_PENDING);
    if (w->close_ctx) {
      assert_int_equal(uvp_ctx_close(w->f->ctx), 0);
      w->f->ctx = NULL;
    } else {
      assert_int_equal(uvp_promise_cancel(w->op), 0);
    }
    return uvp_ret_value(NULL, NULL);
  }
  if (uvp_promise_state(w->op) == UVP_PENDING && ++w->turns < 10000000)
    next_turn(w);
  /* else missed: hit stays false */
  return uvp_ret_value(NULL, NULL);
}

static void next_turn(window_t *w) {
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(w->f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  assert_int_equal(uvp_promise_then(p, in_window, w, &d), 0);
  uvp_promise_release(p);
  uvp_promise_release(d);
}

/* Opens a real file and acts in the window; the file must end up closed
 * (the late result is released) whatever settled the promise. */
static void open_and_act_in_window(fixture_t *f, bool close_ctx, int want) {
  put("w", "x", 1);
  int fds = count_fds();
  assert_int_equal(uvp_ctx_set_budget(f->ctx, 1), 0);
  window_t w = {f, NULL, close_ctx, false, 0};
  assert_int_equal(uvp_fs_open(f->ctx, at("w"), O_RDONLY, 0, &w.op), 0);
  next_turn(&w);
  run_loop(f);
  assert_true(w.hit);
  assert_int_equal(uvp_promise_reason(w.op, NULL), want);
  uvp_promise_release(w.op);
  run_loop(f);
  assert_int_equal(count_fds(), fds);
}

static void test_cancel_while_completion_queued(void **state) {
  open_and_act_in_window(*state, false, UV_ECANCELED);
}

static void test_teardown_while_completion_queued(void **state) {
  open_and_act_in_window(*state, true, UVP_ECLOSED);
}

/* ---- the order of completions and their handlers ------------------------- */

/* Two stats finish in the pool before the loop runs, so libuv reports both
 * in one iteration and both completions are queued together.  Everything
 * that flows from whichever settles first (its handler, and a reaction
 * that handler queues) runs before the other promise settles
 * (src/sched.c: drain), as Node runs each I/O callback's promise jobs
 * before the next callback; a reaction queued before the completions runs
 * before both. */
typedef struct {
  trace_t t;
  uvp_promise_t *stat[2]; /* borrowed */
  uvp_state_t other_seen[2];
  uvp_promise_t *later;  /* resolved by the first stat handler to run */
  int first;             /* the index of that handler's stat */
  uvp_state_t later_saw; /* the other stat's state when later's ran */
} arrival_t;

static uvp_ret_t arrival_early(void *arg, const uvp_outcome_t *in) {
  arrival_t *a = arg;
  (void)in;
  trace_push(&a->t, 0);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t arrival_later(void *arg, const uvp_outcome_t *in) {
  arrival_t *a = arg;
  (void)in;
  trace_push(&a->t, 3);
  a->later_saw = uvp_promise_state(a->stat[1 - a->first]);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t arrival_stat(arrival_t *a, int i) {
  trace_push(&a->t, 1 + i);
  a->other_seen[i] = uvp_promise_state(a->stat[1 - i]);
  if (a->other_seen[i] == UVP_PENDING) {
    a->first = i;
    assert_int_equal(uvp_promise_resolve(a->later, NULL, NULL), 0);
  }
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t arrival_stat0(void *arg, const uvp_outcome_t *in) {
  (void)in;
  return arrival_stat(arg, 0);
}

static uvp_ret_t arrival_stat1(void *arg, const uvp_outcome_t *in) {
  (void)in;
  return arrival_stat(arg, 1);
}

static void test_completion_handlers_in_arrival_order(void **state) {
  fixture_t *f = *state;
  put("a", "x", 1);
  arrival_t a = {0};
  uvp_promise_t *early;
  assert_int_equal(uvp_fs_stat(f->ctx, at("a"), &a.stat[0]), 0);
  assert_int_equal(uvp_fs_stat(f->ctx, at("missing"), &a.stat[1]), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &a.later), 0);
  assert_int_equal(
      uvp_promise_on(a.later, UVP_ON_BOTH, arrival_later, &a, NULL), 0);
  assert_int_equal(
      uvp_promise_on(a.stat[0], UVP_ON_BOTH, arrival_stat0, &a, NULL), 0);
  assert_int_equal(
      uvp_promise_on(a.stat[1], UVP_ON_BOTH, arrival_stat1, &a, NULL), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &early), 0);
  assert_int_equal(uvp_promise_on(early, UVP_ON_BOTH, arrival_early, &a, NULL),
                   0);
  uv_sleep(200); /* both stats finish before libuv is asked */
  run_loop(f);
  assert_int_equal(a.t.n, 4);
  assert_int_equal(a.t.ev[0], 0);
  int first = a.t.ev[1] - 1; /* whichever stat libuv reported first */
  assert_true(first == 0 || first == 1);
  assert_int_equal(a.other_seen[first], UVP_PENDING);
  assert_int_equal(a.first, first);
  assert_int_equal(a.t.ev[2], 3);
  assert_int_equal(a.later_saw, UVP_PENDING);
  assert_int_equal(a.t.ev[3], 1 + (1 - first));
  assert_int_equal(a.other_seen[1 - first],
                   first == 0 ? UVP_FULFILLED : UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(a.stat[1], NULL), UV_ENOENT);
  uvp_promise_release(a.stat[0]);
  uvp_promise_release(a.stat[1]);
  uvp_promise_release(a.later);
  uvp_promise_release(early);
}

/* Node lets an endless chain of promise jobs starve I/O.  Here a drain that
 * found no moment to run a completion lets the next one run it first: a
 * stat finishes in the pool before the loop runs, so libuv reports it in
 * the first iteration, while a chain of handlers, each queueing the next,
 * never leaves the run queue empty (budget 8 per drain).  The stat's
 * handler runs a drain or two later, after a few dozen chain steps at
 * most; without the rule, after the chain's last. */
#define CHAIN_LIMIT 1000000L
typedef struct {
  fixture_t *f;
  bool stat_done;
  long turns;    /* chain steps run */
  long turns_at; /* when the stat's handler ran */
} starve_t;

static void starve_next(starve_t *s);

static uvp_ret_t starve_step(void *arg, const uvp_outcome_t *in) {
  starve_t *s = arg;
  (void)in;
  if (++s->turns < CHAIN_LIMIT && !s->stat_done)
    starve_next(s);
  return uvp_ret_value(NULL, NULL);
}

static void starve_next(starve_t *s) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_resolved(s->f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, starve_step, s, NULL), 0);
  uvp_promise_release(p);
}

static uvp_ret_t starve_stat(void *arg, const uvp_outcome_t *in) {
  starve_t *s = arg;
  assert_int_equal(in->status, 0);
  s->stat_done = true;
  s->turns_at = s->turns;
  return uvp_ret_value(NULL, NULL);
}

static void test_completion_not_starved_by_endless_chain(void **state) {
  fixture_t *f = *state;
  put("a", "x", 1);
  starve_t s = {f, false, 0, 0};
  assert_int_equal(uvp_ctx_set_budget(f->ctx, 8), 0);
  uvp_promise_t *st;
  assert_int_equal(uvp_fs_stat(f->ctx, at("a"), &st), 0);
  assert_int_equal(uvp_promise_on(st, UVP_ON_BOTH, starve_stat, &s, NULL), 0);
  starve_next(&s);
  uv_sleep(200); /* the stat finishes before libuv is asked */
  run_loop(f);
  assert_true(s.stat_done);
  printf("stat handler ran after %ld chain steps\n", s.turns_at);
  assert_true(s.turns_at < 1000);
  uvp_promise_release(st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FS_TEST(test_cancel_while_completion_queued),
      FS_TEST(test_teardown_while_completion_queued),
      FS_TEST(test_completion_handlers_in_arrival_order),
      FS_TEST(test_completion_not_starved_by_endless_chain),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
