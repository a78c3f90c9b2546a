/* uvp_work on libuv's thread pool: values and their destructor, failures,
 * a hundred jobs at once, cancellation of queued jobs (which never run) and
 * of a running one (whose late result is freed once), and a job settling
 * another promise from its pool thread.  Part of suite `threads`, which runs
 * under TSan. */
#include <stdatomic.h>

#include "helpers.h"

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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
