/* uvp_ctx_close_full: the callback that says uvp is done with the loop.
 * It runs once, from a libuv callback, after the context's handles have
 * closed and after every request uvp started has completed (one running
 * in the thread pool, whose promise the teardown already rejected, and
 * its done callback first), and at that moment the loop holds nothing of
 * uvp's: no handle in its list, no active request, which is all
 * uv_loop_close() checks.  The fixture's teardown then proves
 * uv_loop_close() == 0.  Errors leave the callback uncalled. */
#include "fs-helpers.h"

typedef struct closed_s {
  uv_loop_t *loop;
  uvp_ctx_t *ctx;
  int calls;
  uvp_ctx_t *got_ctx;
  void *got_arg;
  int handles; /* in the loop's list, when the callback ran */
  unsigned reqs;
  int fds;      /* descriptors open, when the callback ran */
  int work_end; /* the work's done callback ran before: how (or -1) */
} closed_t;

static void count_handle(uv_handle_t *h, void *arg) {
  (void)h;
  (*(int *)arg)++;
}

static void on_closed(uvp_ctx_t *ctx, void *arg) {
  closed_t *c = arg;
  c->calls++;
  c->got_ctx = ctx;
  c->got_arg = arg;
  c->handles = 0;
  uv_walk(c->loop, count_handle, &c->handles);
  c->reqs = c->loop->active_reqs.count;
  c->fds = count_fds();
  /* Closed: it answers as after uvp_ctx_close. */
  assert_ptr_equal(uvp_ctx_loop(ctx), c->loop);
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(ctx, &p), UVP_ECLOSED);
}

static void closed_init(closed_t *c, fixture_t *f) {
  memset(c, 0, sizeof(*c));
  c->loop = &f->loop;
  c->ctx = f->ctx;
  c->work_end = -1;
}

/* The callback ran once, for this context and argument, with nothing of
 * uvp's left in the loop (the fixture has no handle of its own). */
static void assert_done(const closed_t *c) {
  assert_int_equal(c->calls, 1);
  assert_ptr_equal(c->got_ctx, c->ctx);
  assert_ptr_equal(c->got_arg, c);
  assert_int_equal(c->handles, 0);
  assert_int_equal(c->reqs, 0);
}

/* Run the loop without waiting, a few turns: what is ready runs. */
static void spin(fixture_t *f) {
  for (int i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* ---- when it runs -------------------------------------------------------- */

/* Nothing in flight: the three handles' close callbacks, never inside the
 * call itself. */
static void test_called_once_after_the_handles(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), 0);
  f->ctx = NULL;
  assert_int_equal(c.calls, 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_ONCE), 0);
  assert_done(&c);
  run_loop(f);
  assert_int_equal(c.calls, 1);
}

static int quick_job(void *arg, void **result) {
  (void)arg;
  (void)result;
  return 0;
}

static void record_end(void *arg, uvp_work_end_t end) {
  closed_t *c = arg;
  assert_int_equal(c->calls, 0); /* before the close callback */
  c->work_end = (int)end;
}

/* Requests running in the pool when the context closes cannot be stopped:
 * their promises reject with UVP_ECLOSED at once, and the callback waits
 * until the pool has handed every one of them back, behind a whole-file
 * read and a job queued behind them (cancelled by the teardown), and
 * after the job's done callback. */
static void test_waits_for_running_pool_requests(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  static char data[1 << 16];
  fill_pattern(data, sizeof(data), 5);
  put("file", data, sizeof(data));
  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);
  uvp_promise_t *rf, *wp;
  assert_int_equal(uvp_fs_read_file(f->ctx, at("file"), 0, &rf), 0);
  assert_int_equal(uvp_work_full(f->ctx, quick_job, &c, record_end, NULL, &wp),
                   0);
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(rf, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_promise_reason(w[0], NULL), UVP_ECLOSED);
  spin(f);
  assert_int_equal(c.calls, 0); /* the blocked jobs still run */
  assert_int_equal(c.work_end, UVP_WORK_CLOSED);
  assert_true(f->loop.active_reqs.count >= n);
  unblock_pool();
  run_loop(f);
  assert_done(&c);
  blockers_done(w, n, UVP_ECLOSED);
  uvp_promise_release(rf);
  uvp_promise_release(wp);
}

/* A whole-file read whose open runs in the pool (held on a FIFO until a
 * writer comes) when the context closes: the callback comes once the
 * read's later step, the file's close, has run too. */
static void test_waits_for_a_whole_read_in_flight(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  assert_int_equal(mkfifo(at("fifo"), 0600), 0);
  int fds = count_fds();
  uvp_promise_t *rf;
  assert_int_equal(uvp_fs_read_file(f->ctx, at("fifo"), 0, &rf), 0);
  /* Its open is running once a writer may open without waiting. */
  int wfd;
  while ((wfd = open(at("fifo"), O_WRONLY | O_NONBLOCK)) < 0) {
    assert_int_equal(errno, ENXIO);
    uv_sleep(1);
  }
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(rf, NULL), UVP_ECLOSED);
  run_loop(f);
  assert_done(&c);
  assert_int_equal(c.fds, fds + 1); /* the writer's; uvp's closed before */
  assert_int_equal(close(wfd), 0);
  uvp_promise_release(rf);
}

/* A timer cancelled by the teardown closes with the rest; a connection the
 * program has not closed keeps the callback waiting (its handle is uvp's)
 * until uvp_tcp_close, which works after the teardown. */
static void test_waits_for_timers_and_connections(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  uvp_promise_t *d;
  uvp_tcp_t *t;
  assert_int_equal(uvp_delay(f->ctx, 60000, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), 0);
  f->ctx = NULL;
  run_loop(f); /* an idle connection does not keep the loop running */
  assert_int_equal(c.calls, 0);
  assert_int_equal(uvp_tcp_close(t), 0);
  run_loop(f);
  assert_done(&c);
  assert_int_equal(uvp_promise_reason(d, NULL), UVP_ECLOSED);
  uvp_promise_release(d);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* A host that closed every handle with uv_walk first: UV_EBUSY (nothing
 * changes, no callback) until it has run their close callbacks; then the
 * callback still comes from the loop, not from inside the call. */
static void test_after_a_host_walk(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  uv_walk(&f->loop, close_any, NULL);
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), UV_EBUSY);
  run_loop(f);
  assert_int_equal(c.calls, 0);
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), 0);
  f->ctx = NULL;
  assert_int_equal(c.calls, 0);
  run_loop(f);
  assert_done(&c);
}

/* The virtual clock's two handles count too. */
static void test_waits_for_the_clock_handles(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(f->ctx, 5, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_ctx_close_full(f->ctx, on_closed, &c), 0);
  f->ctx = NULL;
  run_loop(f);
  assert_done(&c);
  uvp_promise_release(d);
}

/* ---- errors -------------------------------------------------------------- */

static void never(uvp_ctx_t *ctx, void *arg) {
  (void)ctx;
  (void)arg;
  fail_msg("a refused close called its callback");
}

typedef struct other_s {
  uvp_ctx_t *ctx;
  int rc;
} other_t;

static void close_from_other_thread(void *arg) {
  other_t *o = arg;
  o->rc = uvp_ctx_close_full(o->ctx, never, NULL);
}

typedef struct in_fiber_s {
  uvp_ctx_t *ctx;
  int rc;
} in_fiber_t;

static uvp_ret_t close_in_fiber(void *arg) {
  in_fiber_t *x = arg;
  x->rc = uvp_ctx_close_full(x->ctx, never, NULL);
  return uvp_ret_pass();
}

static void test_errors(void **state) {
  fixture_t *f = *state;
  static closed_t c;
  closed_init(&c, f);
  assert_int_equal(uvp_ctx_close_full(NULL, on_closed, &c), UV_EINVAL);
  assert_int_equal(uvp_ctx_close_full(f->ctx, NULL, &c), UV_EINVAL);

  /* On a fiber: refused, the context still open. */
  static in_fiber_t x;
  x = (in_fiber_t){f->ctx, 1};
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, close_in_fiber, &x, NULL, &fp), 0);
  run_loop(f);
  assert_int_equal(x.rc, UVP_EINFIBER);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  uvp_promise_release(fp);

  /* From another thread, with the check on. */
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  static other_t o;
  o = (other_t){f->ctx, 1};
  run_on_other_thread(close_from_other_thread, &o);
  assert_int_equal(o.rc, UVP_ETHREAD);

  /* The first close's callback is the only one: a second close, with
   * either call, is refused before and after the context is freed. */
  uvp_ctx_t *ctx = f->ctx;
  assert_int_equal(uvp_ctx_close_full(ctx, on_closed, &c), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_ctx_close_full(ctx, never, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_ctx_close(ctx), UVP_ECLOSED);
  run_loop(f);
  assert_done(&c);
  assert_int_equal(uvp_ctx_close_full(ctx, never, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_ctx_close_full(NULL, never, NULL), UV_EINVAL);
}

/* Plain uvp_ctx_close is unchanged: the fixture's teardown closes and
 * checks uv_loop_close() as before, with requests in flight too. */
static void test_plain_close_still_waits_under_run_default(void **state) {
  fixture_t *f = *state;
  put("file", "data", 4);
  uvp_promise_t *rf;
  assert_int_equal(uvp_fs_read_file(f->ctx, at("file"), 0, &rf), 0);
  close_ctx(f);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(rf, NULL), UVP_ECLOSED);
  uvp_promise_release(rf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FS_TEST(test_called_once_after_the_handles),
      FS_TEST(test_waits_for_running_pool_requests),
      FS_TEST(test_waits_for_a_whole_read_in_flight),
      FS_TEST(test_waits_for_timers_and_connections),
      FS_TEST(test_after_a_host_walk),
      FS_TEST(test_waits_for_the_clock_handles),
      FS_TEST(test_errors),
      FS_TEST(test_plain_close_still_waits_under_run_default),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
