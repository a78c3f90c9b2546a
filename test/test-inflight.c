/* The door for bindings' work in flight (src/inflight.c, uvp.h "Work in
 * flight"): a toy binding whose work is a real libuv timer of its own
 * (started after uvp_inflight_start, closed before uvp_inflight_end), run
 * as a group's member (the join waits for it), under a deadline (cut with
 * UV_ETIMEDOUT), in the task dump (its kind and target, under its named
 * group), counted by uvp_ctx_inflight, cut by uvp_ctx_close (UVP_ECLOSED,
 * and uvp_ctx_close_full's callback after its end, whether a close
 * callback, a timer or a thread's message ends it), on the virtual clock
 * (held while real, not when idle), and the errors of the two calls.
 * Then a library that calls back on a thread of its own: that thread
 * settles, ends and frees its records while the loop cuts some of them;
 * a record keeps uv_run() going until its end (not one of a
 * UVP_INFLIGHT_UNREF class); an end after uvp_ctx_close_full comes before
 * its callback; ends allocate nothing once warm. */
#include <stdatomic.h>

#include "helpers.h"

typedef struct job_s {
  uvp_inflight_t w;
  uv_timer_t t;
  uvp_promise_t *p; /* the job's own reference, until it has ended */
  uvp_ctx_t *ctx;
  uint64_t ms;
  int cut;                /* the code its cancel got, 0 if none */
  atomic_int ended;       /* uvp_inflight_end ran (maybe on a thread) */
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
enum { BY_CLOSE_CB, BY_TIMER, BY_THREAD, BY_THREAD_END };

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

/* The library's thread ends the record itself, with no message of the
 * binding's: the end travels in uvp's mailbox, still open after the
 * teardown for it. */
static void late_end_work(void *arg) {
  late_t *l = arg;
  uv_sleep(100);
  job_end(&l->job);
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
  if (l->how == BY_THREAD_END) {
    l->worker_started = uv_thread_create(&l->worker, late_end_work, l) == 0;
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
  static late_t jobs[4];
  static closing_t c;
  assert_true(n <= 4);
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
    assert_true(jobs[i].worker_started ==
                (hows[i] == BY_THREAD || hows[i] == BY_THREAD_END));
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

static void test_close_full_waits_thread_end(void **state) {
  static const int hows[] = {BY_THREAD_END};
  close_full_waits(*state, hows, 1);
}

static void test_close_full_waits_every_record(void **state) {
  static const int hows[] = {BY_THREAD, BY_CLOSE_CB, BY_TIMER, BY_THREAD_END};
  close_full_waits(*state, hows, 4);
}

/* A host that closes every handle with uv_walk after the teardown, while a
 * record is still open (uvp keeps its async for the record's end then),
 * closes that async too: the end, later, finds it closed by the host and
 * does not close it again (libuv would abort), and close_full's callback
 * still comes, after the end. */
static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void cut_noted(uvp_inflight_t *w, int code) { *(int *)w->data = code; }

/* The end is the last of uvp's work, but close_full's callback never runs
 * inside uvp_inflight_end (a binding ending its record from a close
 * callback of its own, or with its own state half torn down, would be
 * called back in the middle of it): it comes from the loop's next turn.
 * Whether the walk came after the teardown (the async closed by the host
 * while the record held it open) or before (every handle of the context
 * closed by the host: uvp_ctx_close_full is UV_EBUSY until they have). */
static void close_full_walk(fixture_t *f, bool walk_first) {
  static const uvp_inflight_class_t cls = {"JOB", cut_noted, NULL, 0};
  static closing_t c;
  memset(&c, 0, sizeof(c));
  uvp_inflight_t w = {0};
  int cut = 0;
  w.data = &cut;
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_inflight_start(f->ctx, &w, p, &cls), 0);
  uvp_ctx_t *ctx = f->ctx;
  if (walk_first) {
    uv_walk(&f->loop, walk_close, NULL);
    assert_int_equal(uvp_ctx_close_full(ctx, on_closed, &c), UV_EBUSY);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the closes complete */
  }
  assert_int_equal(uvp_ctx_close_full(ctx, on_closed, &c), 0);
  f->ctx = NULL;
  assert_int_equal(cut, UVP_ECLOSED);
  if (!walk_first)
    uv_walk(&f->loop, walk_close, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* the closes complete */
  assert_int_equal(c.called, 0);
  assert_int_equal(uvp_ctx_inflight(ctx), 1);
  uvp_promise_release(p); /* the record's reference holds it */
  uvp_inflight_end(&w);   /* the last of uvp's work */
  assert_int_equal(c.called, 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_NOWAIT), 0); /* a turn: it comes */
  assert_int_equal(c.called, 1);
  assert_int_equal(c.inflight_at_cb, 0);
  run_loop(f);
}

static void test_close_full_then_walk(void **state) {
  close_full_walk(*state, false);
}

static void test_close_full_after_walk(void **state) {
  close_full_walk(*state, true);
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

/* ---- a library that calls back on its own thread ------------------------ */

/* The library: one thread working through a queue of jobs.  For each it
 * settles the promise (unless told not to), lets go of the job's
 * reference, ends the record and frees the job at once, as a binding on
 * such a library does in its callback.  The loop thread meanwhile cuts
 * some of the promises: the class's cancel then races the end, and must
 * never run once the end has returned (the job is freed memory then). */
enum { TJ_MAGIC = 0x7e57 };

typedef struct tjob_s {
  uvp_inflight_t w;
  uvp_promise_t *p; /* the job's reference: the thread lets it go */
  int magic;        /* TJ_MAGIC while the job lives */
  int id;
  atomic_int in_cancel; /* its cancel runs now */
  struct tjob_s *next;
} tjob_t;

typedef struct worker_s {
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  tjob_t *head, *tail;
  bool stop;
  bool settle;        /* settle each promise and let go of the job's
                         reference before the end (else the loop does) */
  atomic_int ended;   /* records the thread ended (or is ending) */
  atomic_int cancels; /* cancels the class ran */
  atomic_int bad;     /* a cancel of a freed job, or after its end */
} worker_t;

static worker_t worker;

static void tjob_cancel(uvp_inflight_t *w, int code) {
  tjob_t *j = w->data;
  (void)code;
  if (j->magic != TJ_MAGIC)
    atomic_fetch_add(&worker.bad, 1);
  atomic_store(&j->in_cancel, 1);
  /* Long enough for the thread's end to come meanwhile, and wait. */
  for (volatile int i = 0; i < 20000; i++)
    ;
  if (j->magic != TJ_MAGIC)
    atomic_fetch_add(&worker.bad, 1);
  atomic_store(&j->in_cancel, 0);
  atomic_fetch_add(&worker.cancels, 1);
}

static int tjob_describe(uvp_inflight_t *w, char *buf, size_t cap) {
  const tjob_t *j = w->data;
  if (j->magic != TJ_MAGIC)
    atomic_fetch_add(&worker.bad, 1);
  return snprintf(buf, cap, "query #%d", j->id);
}

static const uvp_inflight_class_t tjob_class = {"DRIVER", tjob_cancel,
                                                tjob_describe, 0};
static const uvp_inflight_class_t tjob_unref_class = {
    "DRIVER", tjob_cancel, tjob_describe, UVP_INFLIGHT_UNREF};

static int discard(void *arg, const char *text, size_t len) {
  (void)arg;
  (void)text;
  (void)len;
  return 0;
}

static void worker_main(void *arg) {
  worker_t *wk = arg;
  uv_mutex_lock(&wk->mu);
  for (;;) {
    while (wk->head == NULL && !wk->stop)
      uv_cond_wait(&wk->cv, &wk->mu);
    tjob_t *j = wk->head;
    if (j == NULL)
      break;
    wk->head = j->next;
    if (wk->head == NULL)
      wk->tail = NULL;
    bool settle = wk->settle;
    uv_mutex_unlock(&wk->mu);
    uvp_promise_t *p = j->p;
    if (settle) { /* the loop's cut may have rejected it first: ESETTLED */
      (void)uvp_promise_resolve(p, (void *)(intptr_t)(j->id + 1), NULL);
      uvp_promise_release(p); /* the record's reference remains */
    }
    atomic_fetch_add(&wk->ended, 1); /* before: the loop sees it after */
    uvp_inflight_end(&j->w);
    if (atomic_load(&j->in_cancel)) /* the end waited for it */
      atomic_fetch_add(&wk->bad, 1);
    j->magic = 0;
    free(j); /* uvp is done with the record */
    uv_mutex_lock(&wk->mu);
  }
  uv_mutex_unlock(&wk->mu);
}

static void worker_start(bool settle) {
  memset(&worker, 0, sizeof(worker));
  worker.settle = settle;
  assert_int_equal(uv_mutex_init(&worker.mu), 0);
  assert_int_equal(uv_cond_init(&worker.cv), 0);
  assert_int_equal(uv_thread_create(&worker.thread, worker_main, &worker), 0);
}

static void worker_stop(void) {
  uv_mutex_lock(&worker.mu);
  worker.stop = true;
  uv_cond_signal(&worker.cv);
  uv_mutex_unlock(&worker.mu);
  assert_int_equal(uv_thread_join(&worker.thread), 0);
  uv_cond_destroy(&worker.cv);
  uv_mutex_destroy(&worker.mu);
  assert_int_equal(atomic_load(&worker.bad), 0);
}

/* A started job, not yet the thread's; *out is the caller's reference. */
static tjob_t *tjob_start(uvp_ctx_t *ctx, int id,
                          const uvp_inflight_class_t *cls,
                          uvp_promise_t **out) {
  tjob_t *j = calloc(1, sizeof(*j));
  assert_non_null(j);
  j->magic = TJ_MAGIC;
  j->id = id;
  j->w.data = j;
  assert_int_equal(uvp_promise_new(ctx, &j->p), 0);
  assert_int_equal(uvp_inflight_start(ctx, &j->w, j->p, cls), 0);
  *out = uvp_promise_retain(j->p);
  return j;
}

static void worker_give(tjob_t *j) {
  uv_mutex_lock(&worker.mu);
  j->next = NULL;
  if (worker.tail != NULL)
    worker.tail->next = j;
  else
    worker.head = j;
  worker.tail = j;
  uv_cond_signal(&worker.cv);
  uv_mutex_unlock(&worker.mu);
}

enum { RACE_BATCH = 32, RACE_ROUNDS = 150 };

/* Every other promise is cancelled as the thread works through the batch:
 * each ends fulfilled (the thread's settle applied first) or cancelled,
 * the class's cancel runs only for a record not ended yet, never on a
 * freed job; uv_run() returns once every end has come, and nothing is
 * left. */
static void test_thread_ends_while_loop_cuts(void **state) {
  fixture_t *f = *state;
  worker_start(true);
  int fulfilled = 0, cancelled = 0;
  for (int round = 0; round < RACE_ROUNDS; round++) {
    uvp_promise_t *out[RACE_BATCH];
    tjob_t *jobs[RACE_BATCH];
    for (int i = 0; i < RACE_BATCH; i++)
      jobs[i] = tjob_start(f->ctx, i, &tjob_class, &out[i]);
    for (int i = 0; i < RACE_BATCH; i++)
      worker_give(jobs[i]); /* the thread's from here: freed any moment */
    /* Behind the thread, or (odd rounds) from the far end, meeting it. */
    for (int k = 0; k < RACE_BATCH; k += 2) {
      int i = round % 2 == 0 ? k : RACE_BATCH - 2 - k;
      assert_int_equal(uvp_promise_cancel(out[i]), 0);
      if (i % 8 == 0) { /* the dump describes what has not ended yet */
        uvp_dump_opts_t o = {0, NULL, discard, NULL, 0};
        assert_true(uvp_ctx_dump_tasks(f->ctx, &o) >= 0);
      }
    }
    run_loop(f); /* the records keep it going until their ends */
    assert_int_equal(atomic_load(&worker.ended), (round + 1) * RACE_BATCH);
    assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
    for (int i = 0; i < RACE_BATCH; i++) {
      if (uvp_promise_state(out[i]) == UVP_FULFILLED) {
        assert_int_equal((intptr_t)uvp_promise_value(out[i]), i + 1);
        fulfilled++;
      } else {
        assert_int_equal(i % 2, 0); /* only the cut ones */
        assert_int_equal(uvp_promise_reason(out[i], NULL), UV_ECANCELED);
        cancelled++;
      }
      uvp_promise_release(out[i]);
    }
  }
  worker_stop();
  assert_int_equal(fulfilled + cancelled, RACE_BATCH * RACE_ROUNDS);
  assert_true(fulfilled >= RACE_BATCH * RACE_ROUNDS / 2);
  assert_true(atomic_load(&worker.cancels) <= cancelled);
  print_message("    %d cancelled, %d cancels run before the end\n", cancelled,
                atomic_load(&worker.cancels));
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

/* The end comes while the class's cancel of that record runs: it returns
 * only once the cancel has, so the thread frees nothing in use. */
typedef struct meet_s {
  tjob_t *job;
  atomic_int in_cancel; /* the cancel began */
  atomic_int ending;    /* the thread is about to end the record */
  atomic_int cancel_done;
  int done_at_end; /* cancel_done when the end returned */
} meet_t;

static meet_t meet;

static void meet_cancel(uvp_inflight_t *w, int code) {
  (void)w;
  (void)code;
  atomic_store(&meet.in_cancel, 1);
  for (int i = 0; i < 5000 && !atomic_load(&meet.ending); i++)
    uv_sleep(1);
  uv_sleep(50); /* the thread is inside uvp_inflight_end now */
  atomic_store(&meet.cancel_done, 1);
}

static const uvp_inflight_class_t meet_class = {"DRIVER", meet_cancel, NULL, 0};

static void meet_thread(void *arg) {
  (void)arg;
  for (int i = 0; i < 5000 && !atomic_load(&meet.in_cancel); i++)
    uv_sleep(1);
  tjob_t *j = meet.job;
  atomic_store(&meet.ending, 1);
  uvp_inflight_end(&j->w);
  meet.done_at_end = atomic_load(&meet.cancel_done);
  j->magic = 0;
  free(j);
}

static void test_thread_end_waits_for_cancel(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  memset(&meet, 0, sizeof(meet));
  meet.job = tjob_start(f->ctx, 0, &meet_class, &p);
  uvp_promise_release(meet.job->p); /* the record's reference remains */
  uv_thread_t t;
  assert_int_equal(uv_thread_create(&t, meet_thread, NULL), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  run_loop(f); /* until the end comes */
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(meet.done_at_end, 1);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  uvp_promise_release(p);
}

/* ---- a record keeps uv_run() going -------------------------------------- */

typedef struct later_s {
  tjob_t *job;
  int ms;
} later_t;

/* The thread answers after ms: it settles, ends and frees. */
static void answer_later(void *arg) {
  later_t *l = arg;
  uv_sleep((unsigned)l->ms);
  tjob_t *j = l->job;
  uvp_promise_t *p = j->p;
  (void)uvp_promise_resolve(p, (void *)(intptr_t)42, NULL);
  uvp_promise_release(p);
  uvp_inflight_end(&j->w);
  j->magic = 0;
  free(j);
}

/* Alone in the loop, a started record keeps uv_run(UV_RUN_DEFAULT) going
 * until a thread ends it, 100 ms later, as a libuv request in flight
 * would; the value settled before the end is there when it returns. */
static void test_record_keeps_loop_alive(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  later_t l = {tjob_start(f->ctx, 0, &tjob_class, &p), 100};
  assert_int_equal(uv_loop_alive(&f->loop), 1);
  uv_thread_t t;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uv_thread_create(&t, answer_later, &l), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(uv_thread_join(&t), 0);
  assert_true(ms >= 90);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal((intptr_t)uvp_promise_value(p), 42);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  uvp_promise_release(p);
}

/* A UVP_INFLIGHT_UNREF record does not: uv_run() returns at once, the
 * record still counted. */
static void test_unref_record_lets_loop_end(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  tjob_t *j = tjob_start(f->ctx, 0, &tjob_unref_class, &p);
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 1);
  /* And one of each: the held one keeps it, until its end. */
  uvp_promise_t *q;
  tjob_t *k = tjob_start(f->ctx, 1, &tjob_class, &q);
  assert_int_equal(uv_loop_alive(&f->loop), 1);
  uvp_inflight_end(&k->w);
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  uvp_inflight_end(&j->w);
  assert_int_equal(uvp_ctx_inflight(f->ctx), 0);
  uvp_promise_release(j->p);
  uvp_promise_release(k->p);
  free(j);
  free(k);
  uvp_promise_release(p);
  uvp_promise_release(q);
}

/* But a teardown waits for it, as it waits for a held record: the
 * context, closing, keeps uv_run() going until the end a thread posts
 * 100 ms later has come (else uvp_ctx_close_full's callback never came,
 * nor could the loop close, however the loop was run).  One
 * uv_run(UV_RUN_DEFAULT) returns with the teardown complete: the callback
 * called, or (uvp_ctx_close) no handle of uvp's left in the loop. */
static void count_handle(uv_handle_t *h, void *arg) {
  (void)h;
  (*(int *)arg)++;
}

static void unref_record_at_close(fixture_t *f, bool full) {
  static closing_t c;
  memset(&c, 0, sizeof(c));
  uvp_promise_t *p;
  later_t l = {tjob_start(f->ctx, 0, &tjob_unref_class, &p), 100};
  uvp_promise_release(p); /* the job's reference and the record's remain */
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  uvp_ctx_t *ctx = f->ctx;
  f->ctx = NULL;
  assert_int_equal(
      full ? uvp_ctx_close_full(ctx, on_closed, &c) : uvp_ctx_close(ctx), 0);
  assert_int_equal(uv_loop_alive(&f->loop), 1);
  uv_thread_t t;
  assert_int_equal(uv_thread_create(&t, answer_later, &l), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(c.called, full ? 1 : 0);
  int handles = 0;
  uv_walk(&f->loop, count_handle, &handles);
  assert_int_equal(handles, 0);
}

static void test_unref_record_holds_close_full(void **state) {
  unref_record_at_close(*state, true);
}

static void test_unref_record_holds_close(void **state) {
  unref_record_at_close(*state, false);
}

/* ---- ends allocate nothing once warm ------------------------------------- */

static atomic_long tallocs;

static void *t_malloc(size_t n) {
  atomic_fetch_add(&tallocs, 1);
  return malloc(n);
}
static void *t_calloc(size_t c, size_t n) {
  atomic_fetch_add(&tallocs, 1);
  return calloc(c, n);
}
static void *t_realloc(void *p, size_t n) {
  atomic_fetch_add(&tallocs, 1);
  return realloc(p, n);
}

enum { WARM_BATCH = 64 };

/* n records started, ended (here or by the thread, which does not
 * settle: a settle from another thread allocates its message), then
 * settled here.  The arrays are the test's own malloc, not counted. */
static void warm_round_of(fixture_t *f, bool on_thread, int n) {
  uvp_promise_t **out = calloc((size_t)n, sizeof(*out));
  tjob_t **jobs = calloc((size_t)n, sizeof(*jobs));
  assert_non_null(out);
  assert_non_null(jobs);
  for (int i = 0; i < n; i++)
    jobs[i] = tjob_start(f->ctx, i, &tjob_class, &out[i]);
  for (int i = 0; i < n; i++) {
    if (on_thread) {
      uvp_promise_release(jobs[i]->p); /* the record's stays until its end */
      worker_give(jobs[i]);
    } else {
      uvp_inflight_end(&jobs[i]->w);
      uvp_promise_release(jobs[i]->p);
      free(jobs[i]);
    }
  }
  run_loop(f); /* the thread's ends */
  for (int i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_resolve(out[i], NULL, NULL), 0);
    uvp_promise_release(out[i]);
  }
  run_loop(f);
  free(jobs);
  free(out);
}

static void warm_round(fixture_t *f, bool on_thread) {
  warm_round_of(f, on_thread, WARM_BATCH);
}

static void test_ends_allocate_nothing_once_warm(void **state) {
  (void)state;
  assert_int_equal(uvp_replace_allocator(t_malloc, t_realloc, t_calloc, free),
                   0);
  fixture_t *f = NULL;
  fixture_setup((void **)&f);
  worker_start(false);
  warm_round(f, false);
  warm_round(f, true);
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  atomic_store(&tallocs, 0);
  for (int round = 0; round < 20; round++)
    warm_round(f, round % 2 != 0);
  assert_int_equal(atomic_load(&tallocs), 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_int_equal(after.slab_bytes, before.slab_bytes);
  /* The blocks are idle now: trim gives them back. */
  assert_int_equal(uvp_ctx_trim(f->ctx), 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_true(after.slab_bytes < before.slab_bytes);
  worker_stop();
  f->returned = true;
  fixture_teardown((void **)&f);
}

/* A burst of more records than uvp keeps idle: the blocks past
 * UVP_INFLIGHT_KEEP go back to the allocator as they end, and the next
 * burst of the same size allocates exactly those again. */
static void test_burst_keeps_at_most_keep_idle(void **state) {
  (void)state;
  enum { PAST = 100 };
  assert_int_equal(uvp_replace_allocator(t_malloc, t_realloc, t_calloc, free),
                   0);
  fixture_t *f = NULL;
  fixture_setup((void **)&f);
  warm_round_of(f, false, UVP_INFLIGHT_KEEP + PAST);
  atomic_store(&tallocs, 0);
  warm_round_of(f, false, UVP_INFLIGHT_KEEP + PAST);
  assert_int_equal(atomic_load(&tallocs), PAST);
  /* Within the bound, nothing. */
  atomic_store(&tallocs, 0);
  warm_round_of(f, false, UVP_INFLIGHT_KEEP);
  assert_int_equal(atomic_load(&tallocs), 0);
  f->returned = true;
  fixture_teardown((void **)&f);
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
  uvp_inflight_class_t bad_flag = {"JOB", job_cancel, NULL, 4};
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
      QUIET_TEST(test_close_full_waits_thread_end),
      QUIET_TEST(test_close_full_waits_every_record),
      QUIET_TEST(test_close_full_then_walk),
      QUIET_TEST(test_close_full_after_walk),
      FIXTURE_TEST_WITH(test_clock_held_by_real_work, auto_setup,
                        fixture_teardown),
      FIXTURE_TEST_WITH(test_clock_not_held_by_idle_work, auto_quiet_setup,
                        fixture_teardown),
      FIXTURE_TEST_WITH(test_count_is_work_only, auto_setup, fixture_teardown),
      QUIET_TEST(test_errors),
      QUIET_TEST(test_thread_ends_while_loop_cuts),
      QUIET_TEST(test_thread_end_waits_for_cancel),
      QUIET_TEST(test_record_keeps_loop_alive),
      QUIET_TEST(test_unref_record_lets_loop_end),
      QUIET_TEST(test_unref_record_holds_close_full),
      QUIET_TEST(test_unref_record_holds_close),
      cmocka_unit_test(test_ends_allocate_nothing_once_warm),
      cmocka_unit_test(test_burst_keeps_at_most_keep_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
