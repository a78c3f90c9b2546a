/* The door for bindings' work in flight (src/inflight.c, uvp.h "Work in
 * flight"): a toy binding whose work is a real libuv timer of its own
 * (started after uvp_inflight_start, closed before uvp_inflight_end), run
 * as a group's member (the join waits for it), under a deadline (cut with
 * UV_ETIMEDOUT), in the task dump (its kind and target, under its named
 * group), counted by uvp_ctx_inflight, cut by uvp_ctx_close (UVP_ECLOSED,
 * and uvp_ctx_close_full's callback after its end, whether a close
 * callback, a timer or a thread's message ends it), on the virtual clock
 * (held while real, not when idle), and the errors of the two calls. */
#include "helpers.h"

typedef struct job_s {
  uvp_inflight_t w;
  uv_timer_t t;
  uvp_promise_t *p; /* the job's own reference, until it has ended */
  uvp_ctx_t *ctx;
  uint64_t ms;
  int cut;                /* the code its cancel got, 0 if none */
  int ended;              /* uvp_inflight_end ran */
  size_t inflight_at_end; /* uvp_ctx_inflight just before it */
} job_t;

static void job_end(job_t *j) {
  uvp_promise_t *p = j->p;
  j->p = NULL;
  j->inflight_at_end = uvp_ctx_inflight(j->ctx);
  j->ended = 1;
  uvp_inflight_end(&j->w);
  uvp_promise_release(p);
}

static void job_closed(uv_handle_t *h) { job_end(h->data); }

static void job_fire(uv_timer_t *t) {
  job_t *j = t->data;
  (void)uvp_promise_resolve(j->p, (void *)(uintptr_t)j->ms, NULL);
  uv_close((uv_handle_t *)t, job_closed);
}

static void job_cancel(uvp_inflight_t *w, int code) {
  job_t *j = w->data;
  j->cut = code;
  uv_close((uv_handle_t *)&j->t, job_closed);
}

static int job_describe(uvp_inflight_t *w, char *buf, size_t cap) {
  job_t *j = w->data;
  return snprintf(buf, cap, "job of %llu ms", (unsigned long long)j->ms);
}

static const uvp_inflight_class_t job_class = {"JOB", job_cancel, job_describe,
                                               0};
static const uvp_inflight_class_t idle_class = {"JOB", job_cancel, NULL,
                                                UVP_INFLIGHT_IDLE};

static int job_start_as(uvp_ctx_t *ctx, job_t *j, uint64_t ms,
                        const uvp_inflight_class_t *cls, uvp_promise_t **out) {
  memset(j, 0, sizeof(*j));
  j->ctx = ctx;
  j->ms = ms;
  j->w.data = j;
  int rc = uvp_promise_new(ctx, &j->p);
  if (rc == 0 && (rc = uvp_inflight_start(ctx, &j->w, j->p, cls)) != 0)
    uvp_promise_release(j->p);
  if (rc != 0)
    return rc;
  uv_timer_init(uvp_ctx_loop(ctx), &j->t);
  j->t.data = j;
  uv_timer_start(&j->t, job_fire, ms, 0);
  *out = uvp_promise_retain(j->p);
  return 0;
}

static int job_start(uvp_ctx_t *ctx, job_t *j, uint64_t ms,
                     uvp_promise_t **out) {
  return job_start_as(ctx, j, ms, &job_class, out);
}

/* ---- a group's member: the join waits for the work ---------------------- */

typedef struct member_s {
  uvp_ctx_t *ctx;
  job_t job;
  uvp_promise_t *work; /* the job's promise, nobody else awaits it */
} member_t;

/* The member settles at once; the work it started goes on. */
static int start_and_leave(void *arg, uvp_promise_t **out) {
  member_t *m = arg;
  int rc = job_start(m->ctx, &m->job, 60, &m->work);
  return rc != 0 ? rc : uvp_promise_resolved(m->ctx, NULL, NULL, out);
}

typedef struct seen_s {
  member_t *m;
  int ended_at_join; /* the job's `ended` when the join settled */
  int joined;
} seen_t;

static uvp_ret_t on_join(void *arg, const uvp_outcome_t *in) {
  seen_t *s = arg;
  (void)in;
  s->ended_at_join = s->m->job.ended;
  s->joined = 1;
  return uvp_ret_pass();
}

static void test_join_waits_for_work(void **state) {
  fixture_t *f = *state;
  static member_t m;
  memset(&m, 0, sizeof(m));
  m.ctx = f->ctx;
  uvp_group_t *g;
  uvp_promise_t *join, *seen_p;
  seen_t seen = {&m, -1, 0};
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_start(g, start_and_leave, &m, NULL), 0);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 1);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_promise_then(join, on_join, &seen, &seen_p), 0);
  run_until_settled(f, seen_p);
  assert_int_equal(seen.joined, 1);
  assert_int_equal(seen.ended_at_join, 1); /* not before the work ended */
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(m.work), UVP_FULFILLED);
  assert_int_equal(m.job.cut, 0);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  uvp_promise_release(m.work);
  uvp_promise_release(seen_p);
  uvp_promise_release(join);
  uvp_group_release(g);
}

/* ---- a deadline cuts it -------------------------------------------------- */

typedef struct cut_s {
  uvp_ctx_t *ctx;
  job_t job;
  int rc;
} cut_t;

static uvp_ret_t under_deadline(void *arg) {
  cut_t *c = arg;
  uvp_promise_t *p;
  c->rc = uvp_deadline_set(c->ctx, 30);
  if (c->rc == 0 && (c->rc = job_start(c->ctx, &c->job, 10000, &p)) == 0) {
    c->rc = uvp_await(p, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

static void test_deadline_cuts_work(void **state) {
  fixture_t *f = *state;
  static cut_t c;
  memset(&c, 0, sizeof(c));
  c.ctx = f->ctx;
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, under_deadline, &c, NULL, &fp), 0);
  run_until_settled(f, fp);
  run_loop(f); /* the job's handle closes, its record ends */
  assert_int_equal(c.rc, UV_ETIMEDOUT);
  assert_int_equal(c.job.cut, UV_ETIMEDOUT);
  assert_int_equal(c.job.ended, 1);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  uvp_promise_release(fp);
}

/* A cancellation reaches the class's cancel with UV_ECANCELED. */
static void test_cancel_reaches_class(void **state) {
  fixture_t *f = *state;
  static job_t j;
  uvp_promise_t *p;
  assert_int_equal(job_start(f->ctx, &j, 10000, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(j.cut, UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(j.ended, 1);
  uvp_promise_release(p);
}

/* ---- the task dump: kind, target, group ---------------------------------- */

static int into_buf(void *arg, const char *text, size_t len) {
  char *buf = arg;
  size_t have = strlen(buf);
  if (have + len >= 8192)
    return UV_ENOBUFS;
  memcpy(buf + have, text, len);
  buf[have + len] = '\0';
  return 0;
}

static uvp_ret_t member_awaits(void *arg) {
  member_t *m = arg;
  uvp_promise_t *p;
  int rc = job_start(m->ctx, &m->job, 10000, &p);
  if (rc == 0) {
    rc = uvp_await(p, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_reject(rc != 0 ? rc : UV_EINVAL, NULL, NULL);
}

static void test_dump_shows_work_in_group(void **state) {
  fixture_t *f = *state;
  static member_t m;
  memset(&m, 0, sizeof(m));
  m.ctx = f->ctx;
  uvp_group_t *g;
  uvp_promise_t *join;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_set_name(g, "binders"), 0);
  assert_int_equal(uvp_group_spawn(g, member_awaits, &m, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  static char text[8192];
  text[0] = '\0';
  uvp_dump_opts_t o = {0, NULL, into_buf, text, 0};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &o) >= 1);
  /* The job's promise, what it waits for, and its group. */
  const char *line = strstr(text, "for JOB job of 10000 ms");
  if (line == NULL)
    fail_msg("no JOB line in:\n%s", text);
  const char *eol = strchr(line, '\n');
  const char *grp = strstr(line, "in group \"binders\"");
  assert_true(grp != NULL && (eol == NULL || grp < eol));
  assert_int_equal(uvp_group_cancel(g), 0);
  run_until_settled(f, join);
  run_loop(f);
  assert_int_equal(m.job.cut, UV_ECANCELED);
  assert_int_equal(m.job.ended, 1);
  uvp_promise_release(join);
  uvp_group_release(g);
}

/* ---- teardown: uvp_ctx_close_full waits for every record ----------------- */

/* How a job cut by the teardown stops: the class's cancel stops its timer
 * and the record ends later, from the close callback of that timer, from
 * a timer of its own 100 ms on, or from a thread's message (the work
 * winding down on a thread of its own, which posts back to the loop). */
enum { BY_CLOSE_CB, BY_TIMER, BY_THREAD };

typedef struct late_s {
  job_t job; /* first: the record's data is the job */
  int how;
  uv_timer_t later;    /* BY_TIMER */
  uv_async_t back;     /* BY_THREAD: the thread's message */
  uv_thread_t worker;  /* BY_THREAD */
  bool worker_started; /* to join */
} late_t;

static void late_fired(uv_timer_t *t) {
  late_t *l = t->data;
  job_end(&l->job);
  uv_close((uv_handle_t *)t, NULL);
}

static void late_back(uv_async_t *a) {
  late_t *l = a->data;
  job_end(&l->job);
  uv_close((uv_handle_t *)a, NULL);
}

static void late_work(void *arg) {
  late_t *l = arg;
  uv_sleep(100); /* winding down */
  uv_async_send(&l->back);
}

static void late_cancel(uvp_inflight_t *w, int code) {
  late_t *l = w->data;
  uv_loop_t *loop = l->job.t.loop;
  l->job.cut = code;
  if (l->how == BY_CLOSE_CB) {
    uv_close((uv_handle_t *)&l->job.t, job_closed);
    return;
  }
  uv_close((uv_handle_t *)&l->job.t, NULL);
  if (l->how == BY_TIMER) {
    uv_timer_init(loop, &l->later);
    l->later.data = l;
    uv_timer_start(&l->later, late_fired, 100, 0);
    return;
  }
  uv_async_init(loop, &l->back, late_back);
  l->back.data = l;
  l->worker_started = uv_thread_create(&l->worker, late_work, l) == 0;
}

static const uvp_inflight_class_t late_class = {"JOB", late_cancel, NULL, 0};

typedef struct closing_s {
  late_t *jobs;
  int n;
  int called;
  size_t inflight_at_cb;
  int ended_at_cb; /* how many of the jobs had ended */
} closing_t;

static void on_closed(uvp_ctx_t *ctx, void *arg) {
  closing_t *c = arg;
  c->called++;
  c->inflight_at_cb = uvp_ctx_inflight(ctx);
  c->ended_at_cb = 0;
  for (int i = 0; i < c->n; i++)
    c->ended_at_cb += c->jobs[i].job.ended;
}

/* n jobs, the i-th stopping as hows[i]; uvp_ctx_close_full cuts them all,
 * and its callback comes once the last record has ended, and only then:
 * uvp's own handles close in the loop's first turn, the records go on
 * counting until their ends. */
static void close_full_waits(fixture_t *f, const int *hows, int n) {
  static late_t jobs[3];
  static closing_t c;
  assert_true(n <= 3);
  memset(jobs, 0, sizeof(jobs));
  memset(&c, 0, sizeof(c));
  c.jobs = jobs;
  c.n = n;
  bool later = false; /* some record ends after the first turn */
  for (int i = 0; i < n; i++) {
    uvp_promise_t *p;
    assert_int_equal(job_start_as(f->ctx, &jobs[i].job, 10000, &late_class, &p),
                     0);
    jobs[i].how = hows[i];
    later |= hows[i] != BY_CLOSE_CB;
    uvp_promise_release(p); /* the job's reference and the record's remain */
  }
  assert_int_equal(uvp_ctx_inflight(f->ctx), (size_t)n);
  uvp_ctx_t *ctx = f->ctx;
  assert_int_equal(uvp_ctx_close_full(ctx, on_closed, &c), 0);
  f->ctx = NULL; /* the fixture's teardown closes nothing more */
  for (int i = 0; i < n; i++) {
    assert_int_equal(jobs[i].job.cut, UVP_ECLOSED);
    assert_true(jobs[i].worker_started == (hows[i] == BY_THREAD));
  }
  assert_int_equal(c.called, 0);
  assert_int_equal(uvp_ctx_inflight(ctx), (size_t)n);
  if (later) {
    /* One turn: uvp's handles have closed, the close callbacks have ended
     * the BY_CLOSE_CB records; the others still count, and hold the
     * context (their promises). */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(c.called, 0);
    size_t open = 0;
    for (int i = 0; i < n; i++)
      open += jobs[i].job.ended == 0;
    assert_true(open >= 1);
    assert_int_equal(uvp_ctx_inflight(ctx), open);
  }
  run_loop(f);
  for (int i = 0; i < n; i++)
    if (jobs[i].worker_started)
      assert_int_equal(uv_thread_join(&jobs[i].worker), 0);
  assert_int_equal(c.called, 1);
  assert_int_equal(c.ended_at_cb, n); /* after every end, not before */
  assert_int_equal(c.inflight_at_cb, 0);
  for (int i = 0; i < n; i++) {
    assert_int_equal(jobs[i].job.ended, 1);
    /* Counted until its end: itself and the records not ended yet. */
    assert_true(jobs[i].job.inflight_at_end >= 1);
  }
}

static void test_close_full_waits_close_cb(void **state) {
  static const int hows[] = {BY_CLOSE_CB};
  close_full_waits(*state, hows, 1);
}

static void test_close_full_waits_timer(void **state) {
  static const int hows[] = {BY_TIMER};
  close_full_waits(*state, hows, 1);
}

static void test_close_full_waits_thread(void **state) {
  static const int hows[] = {BY_THREAD};
  close_full_waits(*state, hows, 1);
}

static void test_close_full_waits_every_record(void **state) {
  static const int hows[] = {BY_THREAD, BY_CLOSE_CB, BY_TIMER};
  close_full_waits(*state, hows, 3);
}

/* ---- the virtual clock --------------------------------------------------- */

static int auto_setup(void **state) {
  fixture_setup(state);
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  return 0;
}

static int auto_quiet_setup(void **state) {
  fixture_setup_quiet(state);
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  return 0;
}

/* Real work holds the clock to the loop's pace: its 40 ms beat a virtual
 * 5 s timeout.  Idle work does not: the clock jumps to the timeout. */
static void run_paced(fixture_t *f, const uvp_inflight_class_t *cls, int want) {
  static job_t j;
  uvp_promise_t *p, *t;
  assert_int_equal(job_start_as(f->ctx, &j, 40, cls, &p), 0);
  assert_int_equal(uvp_timeout(p, 5000, 0, &t), 0);
  run_until_settled(f, t);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(t, NULL), want);
  assert_int_equal(j.ended, 1);
  uvp_promise_release(t);
  uvp_promise_release(p);
}

static void test_clock_held_by_real_work(void **state) {
  run_paced(*state, &job_class, 0);
}

static void test_clock_not_held_by_idle_work(void **state) {
  run_paced(*state, &idle_class, UV_ETIMEDOUT);
}

/* uvp's own handles (the context's, the virtual clock's, the stall
 * detector's) are no work: the count is 0 with all of them open. */
static void test_count_is_work_only(void **state) {
  fixture_t *f = *state;
  static job_t j;
  uvp_promise_t *p;
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  assert_int_equal(uvp_ctx_set_stall(f->ctx, 1000, NULL, NULL), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  assert_int_equal(job_start(f->ctx, &j, 10, &p), 0);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 1);
  run_until_settled(f, p);
  run_loop(f);
  assert_int_equal(j.ended, 1);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  assert_int_equal(uvp_ctx_set_stall(f->ctx, 0, NULL, NULL), 0);
  uvp_promise_release(p);
}

/* ---- errors -------------------------------------------------------------- */

static void no_hook(uvp_promise_t *p, void *arg) {
  (void)p;
  (void)arg;
}

static void test_errors(void **state) {
  fixture_t *f = *state;
  static job_t j;
  memset(&j, 0, sizeof(j));
  uvp_inflight_class_t no_cancel = {"JOB", NULL, NULL, 0};
  uvp_inflight_class_t no_kind = {NULL, job_cancel, NULL, 0};
  uvp_inflight_class_t bad_flag = {"JOB", job_cancel, NULL, 2};
  uvp_promise_t *p, *settled, *hooked, *owned, *q;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_inflight_start(NULL, &j.w, p, &job_class), UV_EINVAL);
  assert_int_equal(uvp_inflight_start(f->ctx, NULL, p, &job_class), UV_EINVAL);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, NULL, &job_class),
                   UV_EINVAL);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, p, NULL), UV_EINVAL);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, p, &no_cancel), UV_EINVAL);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, p, &no_kind), UV_EINVAL);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, p, &bad_flag), UV_EINVAL);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &settled), 0);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, settled, &job_class),
                   UVP_ESETTLED);
  assert_int_equal(uvp_promise_new(f->ctx, &hooked), 0);
  assert_int_equal(uvp_promise_set_cancel(hooked, no_hook, NULL), 0);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, hooked, &job_class),
                   UV_EBUSY);
  assert_int_equal(uvp_delay(f->ctx, 10000, NULL, NULL, UVP_UNREF, &owned), 0);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, owned, &job_class),
                   UV_EBUSY);
  uv_loop_t other_loop;
  uvp_ctx_t *other;
  assert_int_equal(uv_loop_init(&other_loop), 0);
  assert_int_equal(uvp_ctx_new(&other_loop, &other), 0);
  assert_int_equal(uvp_inflight_start(other, &j.w, p, &job_class), UVP_EXCTX);
  /* Nothing started by a failed call: nothing to end, nothing counted but
   * the delay's timer (uvp's work too). */
  assert_int_equal(uvp_ctx_inflight(f->ctx), 1);
  uvp_inflight_end(&j.w); /* a record never started: nothing happens */
  uvp_inflight_end(NULL);
  /* Started once, not twice; ended once, not twice; then again. */
  j.w.data = &j;
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, p, &job_class), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, q, &job_class), UV_EINVAL);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 2);
  uvp_inflight_end(&j.w);
  uvp_inflight_end(&j.w);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 1);
  /* p stays pending, its hook taken back: cancelling it runs no cancel. */
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(j.cut, 0);
  assert_int_equal(uvp_inflight_start(f->ctx, &j.w, q, &job_class), 0);
  uvp_inflight_end(&j.w);
  assert_int_equal(uvp_ctx_inflight(NULL), 0);
  uvp_promise_release(q);
  assert_int_equal(uvp_promise_cancel(owned), 0);
  uvp_promise_release(owned);
  uvp_promise_release(hooked);
  uvp_promise_release(settled);
  uvp_promise_release(p);
  assert_int_equal(uvp_ctx_close(other), 0);
  assert_int_equal(uv_run(&other_loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&other_loop), 0);
  /* After the close: UVP_ECLOSED. */
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_inflight_start(ctx, &j.w, p, &job_class), UVP_ECLOSED);
  uvp_promise_release(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_join_waits_for_work),
      QUIET_TEST(test_deadline_cuts_work),
      QUIET_TEST(test_cancel_reaches_class),
      QUIET_TEST(test_dump_shows_work_in_group),
      QUIET_TEST(test_close_full_waits_close_cb),
      QUIET_TEST(test_close_full_waits_timer),
      QUIET_TEST(test_close_full_waits_thread),
      QUIET_TEST(test_close_full_waits_every_record),
      FIXTURE_TEST_WITH(test_clock_held_by_real_work, auto_setup,
                        fixture_teardown),
      FIXTURE_TEST_WITH(test_clock_not_held_by_idle_work, auto_quiet_setup,
                        fixture_teardown),
      FIXTURE_TEST_WITH(test_count_is_work_only, auto_setup, fixture_teardown),
      QUIET_TEST(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
