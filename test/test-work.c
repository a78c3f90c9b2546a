/* uvp_work on libuv's thread pool: values and their destructor, failures,
 * a hundred jobs at once, cancellation of queued jobs (which never run) and
 * of a running one (whose late result is freed once), and a job settling
 * another promise from its pool thread, and uvp_work_full's done callback
 * for each way a job ends, or does not start.  Part of suite `threads`,
 * which runs under TSan. */
#include <stdatomic.h>

#include "alloc-helpers.h"

/* A job's view: what to produce and a record of what happened.  Counters
 * touched on pool threads are atomic; destructors run on the loop thread. */
typedef struct job_s {
  int value;
  int rc; /* what work_cb returns */
  int sleep_ms;
  atomic_int ran;
  int freed;         /* result destructor calls (loop thread) */
  uv_sem_t *started; /* posted when the job starts, if set */
  uv_sem_t *go;      /* waited for before returning, if set */
} job_t;

static int job_run(void *arg, void **result) {
  job_t *j = arg;
  atomic_fetch_add(&j->ran, 1);
  if (j->started != NULL)
    uv_sem_post(j->started);
  if (j->go != NULL)
    uv_sem_wait(j->go);
  if (j->sleep_ms > 0)
    uv_sleep((unsigned)j->sleep_ms);
  *result = boxed_new(j->value, &j->freed);
  return j->rc;
}

static void test_value_and_destructor_once(void **state) {
  fixture_t *f = *state;
  job_t j = {.value = 42};
  uvp_promise_t *p;
  assert_int_equal(uvp_work(f->ctx, job_run, &j, boxed_free, &p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  boxed_t *b = uvp_promise_value(p);
  assert_int_equal(b->v, 42);
  assert_int_equal(atomic_load(&j.ran), 1);
  assert_int_equal(j.freed, 0);
  uvp_promise_release(p);
  assert_int_equal(j.freed, 1);
}

static int return_null(void *arg, void **result) {
  (void)arg;
  (void)result;
  return 0;
}

static void test_null_result_without_destructor(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uvp_work(f->ctx, return_null, NULL, NULL, &p), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_null(uvp_promise_value(p));
  uvp_promise_release(p);
}

/* A failing job rejects with its code; the result it left is not lost. */
static void test_failing_job(void **state) {
  fixture_t *f = *state;
  job_t fail = {.value = 1, .rc = UV_EIO};
  job_t positive = {.value = 2, .rc = 7};
  uvp_promise_t *p, *q;
  assert_int_equal(uvp_work(f->ctx, job_run, &fail, boxed_free, &p), 0);
  assert_int_equal(uvp_work(f->ctx, job_run, &positive, boxed_free, &q), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_EIO);
  assert_int_equal(uvp_promise_reason(q, NULL), UV_EINVAL);
  assert_int_equal(fail.freed, 1);
  assert_int_equal(positive.freed, 1);
  uvp_promise_release(p);
  uvp_promise_release(q);
  assert_int_equal(fail.freed, 1);
}

static void test_hundred_jobs_all_settled(void **state) {
  fixture_t *f = *state;
  enum { N = 100 };
  static job_t jobs[N];
  uvp_promise_t *ps[N], *all;
  for (int i = 0; i < N; i++) {
    memset(&jobs[i], 0, sizeof(jobs[i]));
    jobs[i].value = i;
    jobs[i].rc = i % 10 == 3 ? UV_EPERM : 0;
    assert_int_equal(uvp_work(f->ctx, job_run, &jobs[i], boxed_free, &ps[i]),
                     0);
  }
  assert_int_equal(uvp_promise_all_settled(f->ctx, ps, N, &all), 0);
  for (int i = 0; i < N; i++)
    uvp_promise_release(ps[i]);
  run_loop(f);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  uvp_settled_list_t *l = uvp_promise_value(all);
  assert_int_equal(l->count, N);
  assert_int_equal(l->fulfilled, 90);
  assert_int_equal(l->rejected, 10);
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&jobs[i].ran), 1);
    if (i % 10 == 3) {
      assert_int_equal(l->items[i].status, UV_EPERM);
      assert_int_equal(jobs[i].freed, 1);
    } else {
      assert_int_equal(l->items[i].status, 0);
      assert_int_equal(((boxed_t *)l->items[i].value)->v, i);
      assert_int_equal(jobs[i].freed, 0);
    }
  }
  uvp_promise_release(all);
  for (int i = 0; i < N; i++)
    assert_int_equal(jobs[i].freed, 1);
}

/* 4 x pool size jobs of 50 ms: the last pool-size ones are still queued
 * when cancelled, so they never run. */
static void test_cancel_queued_jobs_never_run(void **state) {
  fixture_t *f = *state;
  size_t n = 4 * uvp_pool_size(), ncancel = uvp_pool_size();
  job_t *jobs = calloc(n, sizeof(*jobs));
  uvp_promise_t **ps = calloc(n, sizeof(*ps));
  assert_non_null(jobs);
  assert_non_null(ps);
  for (size_t i = 0; i < n; i++) {
    jobs[i].value = (int)i;
    jobs[i].sleep_ms = 50;
    assert_int_equal(uvp_work(f->ctx, job_run, &jobs[i], boxed_free, &ps[i]),
                     0);
  }
  for (size_t i = n - ncancel; i < n; i++) {
    assert_int_equal(uvp_promise_cancel(ps[i]), 0);
    assert_int_equal(uvp_promise_reason(ps[i], NULL), UV_ECANCELED);
  }
  run_loop(f);
  for (size_t i = 0; i < n; i++) {
    bool cancelled = i >= n - ncancel;
    assert_int_equal(atomic_load(&jobs[i].ran), cancelled ? 0 : 1);
    assert_int_equal(uvp_promise_state(ps[i]),
                     cancelled ? UVP_REJECTED : UVP_FULFILLED);
    uvp_promise_release(ps[i]);
    assert_int_equal(jobs[i].freed, cancelled ? 0 : 1);
  }
  free(jobs);
  free(ps);
}

/* Cancelled while running: rejected at once, the job finishes, its result
 * goes to the destructor exactly once, on the loop thread. */
static void test_cancel_running_job_frees_late_result(void **state) {
  fixture_t *f = *state;
  uv_sem_t started, go;
  assert_int_equal(uv_sem_init(&started, 0), 0);
  assert_int_equal(uv_sem_init(&go, 0), 0);
  job_t j = {.value = 5, .started = &started, .go = &go};
  uvp_promise_t *p;
  assert_int_equal(uvp_work(f->ctx, job_run, &j, boxed_free, &p), 0);
  uv_sem_wait(&started);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  uvp_promise_release(p); /* the request keeps its own reference */
  uv_sem_post(&go);
  run_loop(f);
  assert_int_equal(atomic_load(&j.ran), 1);
  assert_int_equal(j.freed, 1);
  uv_sem_destroy(&started);
  uv_sem_destroy(&go);
}

/* The job settles a promise of the loop from its pool thread (one of the
 * three calls allowed there) and releases the reference it was given. */
typedef struct cross_s {
  uvp_promise_t *target; /* one reference, the job's */
  int freed;
} cross_t;

static int resolve_from_pool(void *arg, void **result) {
  cross_t *c = arg;
  (void)result;
  int rc = uvp_promise_resolve(c->target, boxed_new(9, &c->freed), boxed_free);
  uvp_promise_release(c->target);
  return rc;
}

static void test_job_resolves_other_promise_cross_thread(void **state) {
  fixture_t *f = *state;
  cross_t c = {0};
  uvp_promise_t *target, *p;
  assert_int_equal(uvp_promise_new(f->ctx, &target), 0);
  c.target = uvp_promise_retain(target);
  assert_int_equal(uvp_work(f->ctx, resolve_from_pool, &c, NULL, &p), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(target), UVP_FULFILLED);
  assert_int_equal(((boxed_t *)uvp_promise_value(target))->v, 9);
  uvp_promise_release(p);
  uvp_promise_release(target);
  assert_int_equal(c.freed, 1);
}

/* Teardown rejects every job with UVP_ECLOSED; queued ones are cancelled,
 * running ones complete and their results are freed when the loop runs. */
static void test_teardown_with_jobs_in_flight(void **state) {
  fixture_t *f = *state;
  size_t n = 2 * uvp_pool_size();
  job_t *jobs = calloc(n, sizeof(*jobs));
  uvp_promise_t **ps = calloc(n, sizeof(*ps));
  assert_non_null(jobs);
  assert_non_null(ps);
  for (size_t i = 0; i < n; i++) {
    jobs[i].sleep_ms = 20;
    assert_int_equal(uvp_work(f->ctx, job_run, &jobs[i], boxed_free, &ps[i]),
                     0);
  }
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_reason(ps[i], NULL), UVP_ECLOSED);
    uvp_promise_release(ps[i]);
  }
  run_loop(f);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(jobs[i].freed, atomic_load(&jobs[i].ran));
  free(jobs);
  free(ps);
}

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_work(NULL, return_null, NULL, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_work(f->ctx, NULL, NULL, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_work(f->ctx, return_null, NULL, NULL, NULL), UV_EINVAL);
  assert_null(p);
  /* Only uvp settles it. */
  assert_int_equal(uvp_work(f->ctx, return_null, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_promise_release(p);
  /* After uvp_ctx_close: refused, nothing queued. */
  uvp_ctx_t *ctx = close_ctx(f);
  p = NULL;
  assert_int_equal(uvp_work(ctx, return_null, NULL, NULL, &p), UVP_ECLOSED);
  assert_null(p);
  run_loop(f);
}

/* ---- uvp_work_full: how the job ended, told once ------------------------- */

/* What the test keeps of one job (outlives it): its done callback's calls
 * and what they said.  `ran` is touched on the pool thread; the rest on
 * the loop thread. */
typedef struct ending_s {
  atomic_int ran;
  int done_calls;
  uvp_work_end_t end;
  int freed;        /* results destroyed */
  uvp_promise_t *p; /* the job's promise (we hold it until the end) */
  uvp_state_t state_at_done;
} ending_t;

/* The job's own data: malloc'd, freed only by its done callback, so
 * valgrind and ASan see a missing or second call. */
typedef struct fjob_s {
  ending_t *e;
  uv_sem_t *started; /* posted when the job starts, if set */
  uv_sem_t *go;      /* waited for before returning, if set */
  int value;
  int rc;
} fjob_t;

static fjob_t *fjob_new(ending_t *e, int value, uv_sem_t *started,
                        uv_sem_t *go) {
  fjob_t *j = calloc(1, sizeof(*j));
  assert_non_null(j);
  j->e = e;
  j->value = value;
  j->started = started;
  j->go = go;
  return j;
}

static int fjob_run(void *arg, void **result) {
  fjob_t *j = arg;
  atomic_fetch_add(&j->e->ran, 1);
  if (j->started != NULL)
    uv_sem_post(j->started);
  if (j->go != NULL)
    uv_sem_wait(j->go);
  *result = boxed_new(j->value, &j->e->freed);
  return j->rc;
}

static void fjob_done(void *arg, uvp_work_end_t end) {
  fjob_t *j = arg;
  ending_t *e = j->e;
  e->done_calls++;
  e->end = end;
  e->state_at_done = uvp_promise_state(e->p); /* settled first */
  free(j);
}

static uvp_promise_t *start_fjob(fixture_t *f, ending_t *e, fjob_t *j) {
  assert_int_equal(
      uvp_work_full(f->ctx, fjob_run, j, fjob_done, boxed_free, &e->p), 0);
  assert_int_equal(e->done_calls, 0); /* never inside the call */
  return e->p;
}

static void expect_ending(const ending_t *e, uvp_work_end_t end, int ran,
                          uvp_state_t state) {
  assert_int_equal(e->done_calls, 1);
  assert_int_equal(e->end, end);
  assert_int_equal(atomic_load(&e->ran), ran);
  assert_int_equal(e->state_at_done, state);
}

/* The pool's every thread busy with a job that waits for `go`: a job
 * queued now stays queued until `go` is posted pool-size times.  (Relies
 * on uvp_pool_size() being libuv's pool size, as documented.) */
typedef struct blockers_s {
  size_t n;
  uv_sem_t started, go;
  ending_t *e;
} blockers_t;

static void blockers_start(fixture_t *f, blockers_t *b) {
  b->n = uvp_pool_size();
  assert_int_equal(uv_sem_init(&b->started, 0), 0);
  assert_int_equal(uv_sem_init(&b->go, 0), 0);
  b->e = calloc(b->n, sizeof(*b->e));
  assert_non_null(b->e);
  for (size_t i = 0; i < b->n; i++)
    start_fjob(f, &b->e[i], fjob_new(&b->e[i], (int)i, &b->started, &b->go));
  for (size_t i = 0; i < b->n; i++)
    uv_sem_wait(&b->started);
}

static void blockers_release(blockers_t *b) {
  for (size_t i = 0; i < b->n; i++)
    uv_sem_post(&b->go);
}

static void blockers_end(blockers_t *b, uvp_work_end_t end, uvp_state_t state) {
  for (size_t i = 0; i < b->n; i++) {
    expect_ending(&b->e[i], end, 1, state);
    uvp_promise_release(b->e[i].p);
    assert_int_equal(b->e[i].freed, 1);
  }
  free(b->e);
  uv_sem_destroy(&b->started);
  uv_sem_destroy(&b->go);
}

/* A job queued behind blockers b: it cannot start before they are let
 * go. */
static uvp_promise_t *queued_job(fixture_t *f, blockers_t *b, ending_t *e) {
  blockers_start(f, b);
  return start_fjob(f, e, fjob_new(e, 1, NULL, NULL));
}

static void test_work_full_settled(void **state) {
  fixture_t *f = *state;
  ending_t ok = {0}, bad = {0};
  uvp_promise_t *p = start_fjob(f, &ok, fjob_new(&ok, 3, NULL, NULL));
  fjob_t *j = fjob_new(&bad, 4, NULL, NULL);
  j->rc = UV_EIO;
  uvp_promise_t *q = start_fjob(f, &bad, j);
  run_loop(f);
  expect_ending(&ok, UVP_WORK_SETTLED, 1, UVP_FULFILLED);
  assert_int_equal(((boxed_t *)uvp_promise_value(p))->v, 3);
  assert_int_equal(ok.freed, 0);
  /* A failed job settled its promise too; its result was freed. */
  expect_ending(&bad, UVP_WORK_SETTLED, 1, UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(q, NULL), UV_EIO);
  assert_int_equal(bad.freed, 1);
  uvp_promise_release(p);
  uvp_promise_release(q);
  assert_int_equal(ok.freed, 1);
  assert_int_equal(ok.done_calls, 1);
}

/* Cancelled while queued behind a busy pool: it never runs. */
static void test_work_full_cancelled_queued(void **state) {
  fixture_t *f = *state;
  blockers_t b;
  ending_t e = {0};
  uvp_promise_t *p = queued_job(f, &b, &e);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  blockers_release(&b);
  run_loop(f);
  expect_ending(&e, UVP_WORK_CANCELLED, 0, UVP_REJECTED);
  assert_int_equal(e.freed, 0);
  blockers_end(&b, UVP_WORK_SETTLED, UVP_FULFILLED);
  uvp_promise_release(p);
  assert_int_equal(e.done_calls, 1);
}

/* Cancelled while it runs: the promise rejects at once, the job finishes,
 * its result goes to result_free and done says ABANDONED. */
static void test_work_full_abandoned_running(void **state) {
  fixture_t *f = *state;
  uv_sem_t started, go;
  assert_int_equal(uv_sem_init(&started, 0), 0);
  assert_int_equal(uv_sem_init(&go, 0), 0);
  ending_t e = {0};
  uvp_promise_t *p = start_fjob(f, &e, fjob_new(&e, 2, &started, &go));
  uv_sem_wait(&started);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  assert_int_equal(e.done_calls, 0);
  uv_sem_post(&go);
  run_loop(f);
  expect_ending(&e, UVP_WORK_ABANDONED, 1, UVP_REJECTED);
  assert_int_equal(e.freed, 1);
  uvp_promise_release(p);
  assert_int_equal(e.freed, 1);
  uv_sem_destroy(&started);
  uv_sem_destroy(&go);
}

/* The context closed while the job is queued: it never runs, and done
 * still comes, when the loop runs the request's callback.  The jobs
 * running at the close are abandoned. */
static void test_work_full_closed_queued(void **state) {
  fixture_t *f = *state;
  blockers_t b;
  ending_t e = {0};
  uvp_promise_t *p = queued_job(f, &b, &e);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  assert_int_equal(e.done_calls, 0);
  blockers_release(&b);
  run_loop(f);
  expect_ending(&e, UVP_WORK_CLOSED, 0, UVP_REJECTED);
  assert_int_equal(e.freed, 0);
  blockers_end(&b, UVP_WORK_ABANDONED, UVP_REJECTED);
  uvp_promise_release(p);
}

/* Refused: the job never runs, and done runs once, before the call
 * returns (uvp.h, "Handing over"): UVP_WORK_CLOSED for a closed
 * context, else UVP_WORK_CANCELLED; it frees the job's data. */
static void test_work_full_refused(void **state) {
  fixture_t *f = *state;
  ending_t e = {0};
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_work_full(NULL, fjob_run, fjob_new(&e, 1, NULL, NULL),
                                 fjob_done, NULL, &p),
                   UV_EINVAL);
  assert_int_equal(e.done_calls, 1);
  assert_int_equal(e.end, UVP_WORK_CANCELLED);
  assert_int_equal(uvp_work_full(f->ctx, NULL, fjob_new(&e, 1, NULL, NULL),
                                 fjob_done, NULL, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_work_full(f->ctx, fjob_run, fjob_new(&e, 1, NULL, NULL),
                                 fjob_done, NULL, NULL),
                   UV_EINVAL);
  assert_int_equal(e.done_calls, 3);
  uvp_ctx_t *ctx = f->ctx;
  assert_int_equal(uvp_ctx_close(ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_work_full(ctx, fjob_run, fjob_new(&e, 1, NULL, NULL),
                                 fjob_done, NULL, &p),
                   UVP_ECLOSED);
  assert_int_equal(e.done_calls, 4);
  assert_int_equal(e.end, UVP_WORK_CLOSED);
  run_loop(f);
  assert_null(p);
  assert_int_equal(e.done_calls, 4);
  assert_int_equal(atomic_load(&e.ran), 0);
}

/* Refused for want of memory, with the k-th allocation failing for every k
 * (alloc-helpers.h): the job never ran, done ran once inside the call
 * (UVP_WORK_CANCELLED) and not again once the loop has; accepted, done
 * runs once, later. */
static long wf_enomem;

static void scenario_work_full(run_t *r) {
  ending_t e = {0};
  fjob_t *j = fjob_new(&e, 5, NULL, NULL);
  int rc = uvp_work_full(r->ctx, fjob_run, j, fjob_done, boxed_free, &e.p);
  OK_OR_ENOMEM(rc);
  assert_int_equal(e.done_calls, rc != 0);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  if (rc != 0) {
    wf_enomem++;
    assert_null(e.p);
    if (e.done_calls != 1 || e.end != UVP_WORK_CANCELLED)
      fail_msg("UV_ENOMEM: done ran %d times (not once), end %d", e.done_calls,
               (int)e.end);
    assert_int_equal(atomic_load(&e.ran), 0);
    return;
  }
  expect_ending(&e, UVP_WORK_SETTLED, 1, UVP_FULFILLED);
  assert_int_equal(((boxed_t *)uvp_promise_value(e.p))->v, 5);
  uvp_promise_release(e.p);
  assert_int_equal(e.freed, 1);
  assert_int_equal(e.done_calls, 1);
}

static void test_work_full_refused_for_memory(void **state) {
  (void)state;
  wf_enomem = 0;
  exhaust(scenario_work_full);
  assert_true(wf_enomem > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_value_and_destructor_once),
      QUIET_TEST(test_null_result_without_destructor),
      QUIET_TEST(test_failing_job),
      QUIET_TEST(test_hundred_jobs_all_settled),
      QUIET_TEST(test_cancel_queued_jobs_never_run),
      QUIET_TEST(test_cancel_running_job_frees_late_result),
      QUIET_TEST(test_job_resolves_other_promise_cross_thread),
      QUIET_TEST(test_teardown_with_jobs_in_flight),
      QUIET_TEST(test_bad_input),
      QUIET_TEST(test_work_full_settled),
      QUIET_TEST(test_work_full_cancelled_queued),
      QUIET_TEST(test_work_full_abandoned_running),
      QUIET_TEST(test_work_full_closed_queued),
      QUIET_TEST(test_work_full_refused),
      cmocka_unit_test(test_work_full_refused_for_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
