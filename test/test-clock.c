/* The virtual clock (uvp.h "Time": uvp_ctx_set_clock, uvp_clock_advance,
 * uvp_clock_now): timers fire in due order (ties in start order) when the
 * program advances the clock; a 0 ms timer fires from the loop; a retry
 * schedule of 91 s of virtual time against a real refusing port runs in
 * well under a second, its attempts exactly where the backoff puts them;
 * a real TCP reply on its way beats a virtual timeout pending meanwhile,
 * and a server that never answers still times out (in real time); the
 * program's own uv_timer_t is not virtual; deadlines and the task dump's
 * ages run on it; switching is refused once the context has promises; bad
 * arguments.  Every test ends with uv_loop_close() == 0 (the fixture). */
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

/* Records the order in which promises settled (their handlers ran) and
 * the virtual time each saw. */
typedef struct order_s {
  uvp_ctx_t *ctx;
  int n;
  int ids[16];
  int status[16];
  uint64_t at[16];
} order_t;

typedef struct tagged_s {
  order_t *o;
  int id;
} tagged_t;

static uvp_ret_t note(void *arg, const uvp_outcome_t *in) {
  tagged_t *t = arg;
  order_t *o = t->o;
  assert_true(o->n < 16);
  o->ids[o->n] = t->id;
  o->status[o->n] = in->status;
  o->at[o->n++] = uvp_clock_now(o->ctx);
  return uvp_ret_value(NULL, NULL);
}

static void watch(uvp_promise_t *p, tagged_t *t) {
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, note, t, NULL), 0);
}

/* Run what is ready without waiting: a manual clock's loop would wait
 * for the program to advance it. */
static void turn(fixture_t *f) {
  for (int i = 0; i < 4; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* ---- advancing by hand --------------------------------------------------- */

static void test_advance_fires_in_due_order(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  order_t o = {.ctx = f->ctx};
  tagged_t tag[6];
  uint64_t t0 = uvp_clock_now(f->ctx);
  /* Due at 300, 100, 200, 100 (after the first 100: started later), and a
   * timeout of 150 on a promise nobody settles. */
  static const uint64_t ms[4] = {300, 100, 200, 100};
  uvp_promise_t *d[4], *never, *tmo;
  for (int i = 0; i < 4; i++) {
    tag[i] = (tagged_t){&o, i};
    assert_int_equal(uvp_delay(f->ctx, ms[i], NULL, NULL, 0, &d[i]), 0);
    watch(d[i], &tag[i]);
  }
  assert_int_equal(uvp_promise_new(f->ctx, &never), 0);
  assert_int_equal(uvp_timeout(never, 150, 0, &tmo), 0);
  tag[4] = (tagged_t){&o, 4};
  watch(tmo, &tag[4]);

  uint64_t r0 = uv_hrtime();
  assert_int_equal(uvp_clock_advance(f->ctx, 99), 0);
  turn(f);
  assert_int_equal(o.n, 0);
  assert_true(uvp_clock_now(f->ctx) == t0 + 99);
  assert_int_equal(uvp_clock_advance(f->ctx, 1), 0);
  turn(f);
  assert_int_equal(o.n, 2);
  assert_int_equal(o.ids[0], 1);
  assert_int_equal(o.ids[1], 3);
  assert_int_equal(uvp_clock_advance(f->ctx, 10000), 0);
  turn(f);
  assert_int_equal(o.n, 5);
  assert_int_equal(o.ids[2], 4); /* the timeout, at 150 */
  assert_int_equal(o.status[2], UV_ETIMEDOUT);
  assert_int_equal(o.ids[3], 2);
  assert_int_equal(o.ids[4], 0);
  assert_true(uvp_clock_now(f->ctx) == t0 + 10100);
  /* The timeout cancelled what it waited for (nothing else did). */
  assert_int_equal(uvp_promise_reason(never, NULL), UV_ECANCELED);
  /* Virtual: none of it took real time. */
  assert_true(uv_hrtime() - r0 < 2000000000ull);
  for (int i = 0; i < 4; i++)
    uvp_promise_release(d[i]);
  uvp_promise_release(never);
  uvp_promise_release(tmo);
}

/* A 0 ms timer fires from the loop's next timer phase on a stopped clock;
 * the loop waits for a referenced virtual timer (it is work in progress)
 * but not for an unreferenced one. */
static void test_zero_delay_and_refs(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  uvp_promise_t *z, *u;
  assert_int_equal(uvp_delay(f->ctx, 0, SENTINEL(1), NULL, 0, &z), 0);
  assert_int_equal(uvp_delay(f->ctx, 5, NULL, NULL, UVP_UNREF, &u), 0);
  run_loop(f); /* returns: only the unreferenced one is left */
  assert_ptr_equal(uvp_promise_value(z), SENTINEL(1));
  assert_int_equal(uvp_promise_state(u), UVP_PENDING);
  assert_int_equal(uvp_clock_advance(f->ctx, 5), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(u), UVP_FULFILLED);
  uvp_promise_release(z);
  uvp_promise_release(u);
}

/* ---- automatic advance --------------------------------------------------- */

/* Each attempt connects to a port nobody listens on: real I/O, refused at
 * once.  Records the virtual time of each attempt. */
typedef struct retry_s {
  fixture_t *f;
  int port;
  unsigned calls;
  uint64_t at[16];
  uvp_tcp_t *conns[16];
  bool real;
} retry_t;

static int attempt(void *arg, unsigned n, uvp_promise_t **out) {
  retry_t *r = arg;
  assert_true(n < 16);
  r->at[r->calls++] = uvp_clock_now(r->f->ctx);
  if (!r->real)
    return uvp_promise_rejected(r->f->ctx, UV_ECONNREFUSED, NULL, NULL, out);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", r->port, &a), 0);
  assert_int_equal(uvp_tcp_new(r->f->ctx, &r->conns[n]), 0);
  return uvp_tcp_connect(r->conns[n], (struct sockaddr *)&a, out);
}

/* A port on 127.0.0.1 that refuses: bound and closed again. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static void retry_schedule(fixture_t *f, bool real) {
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  retry_t r = {.f = f, .port = closed_port(), .real = real};
  /* Waits of 1, 2, 4, 8, 16, 30, 30 s: 91 s before the eighth attempt. */
  uvp_retry_opts_t o = {.attempts = 8, .base_ms = 1000, .max_ms = 30000};
  uvp_promise_t *p;
  uint64_t r0 = uv_hrtime(), v0 = uvp_clock_now(f->ctx);
  assert_int_equal(uvp_retry(f->ctx, attempt, &r, &o, &p), 0);
  run_loop(f);
  double real_ms = (double)(uv_hrtime() - r0) / 1e6;
  uint64_t virt = uvp_clock_now(f->ctx) - v0;
  print_message("retry: %u attempts over %llu ms of virtual time in %.1f ms "
                "of real time (%s)\n",
                r.calls, (unsigned long long)virt, real_ms,
                real ? "real connects" : "no I/O");
  assert_int_equal(r.calls, 8);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECONNREFUSED);
  static const uint64_t wait[7] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (int i = 0; i < 7; i++) {
    uint64_t gap = r.at[i + 1] - r.at[i];
    /* Exactly the backoff without I/O; with it, plus the real
     * milliseconds a connect was in flight (the clock's pace then). */
    if (!real)
      assert_true(gap == wait[i]);
    else
      assert_true(gap >= wait[i] &&
                  gap <= wait[i] + (RUNNING_ON_VALGRIND ? 2000 : 100));
  }
  assert_true(virt >= 91000);
  /* Under valgrind each step is slower, not the schedule. */
  assert_true(real_ms < (RUNNING_ON_VALGRIND ? 10000 : 1000));
  for (unsigned i = 0; i < r.calls; i++)
    if (r.conns[i] != NULL)
      assert_int_equal(uvp_tcp_close(r.conns[i]), 0);
  uvp_promise_release(p);
}

static void test_retry_91s_virtual_no_io(void **state) {
  retry_schedule(*state, false);
}

static void test_retry_91s_virtual_real_connects(void **state) {
  retry_schedule(*state, true);
}

/* ---- real I/O beside it -------------------------------------------------- */

/* A server of the test's own (plain libuv): it reads a request and answers
 * "pong" after reply_ms of real time, or never (reply_ms 0). */
typedef struct server_s {
  uv_tcp_t listener;
  uv_tcp_t conn;
  uv_timer_t later;
  uv_write_t w;
  char buf[64];
  uint64_t reply_ms;
  bool accepted;
  int port;
} server_t;

static void srv_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  server_t *s = h->data;
  (void)sz;
  *b = uv_buf_init(s->buf, sizeof(s->buf));
}

static void srv_written(uv_write_t *w, int status) {
  (void)w;
  (void)status;
}

static void srv_reply(uv_timer_t *t) {
  server_t *s = t->data;
  uv_buf_t b = uv_buf_init("pong", 4);
  assert_int_equal(uv_write(&s->w, (uv_stream_t *)&s->conn, &b, 1, srv_written),
                   0);
}

static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  server_t *s = st->data;
  (void)b;
  if (n > 0 && s->reply_ms != 0)
    uv_timer_start(&s->later, srv_reply, s->reply_ms, 0);
}

static void srv_accept(uv_stream_t *l, int status) {
  server_t *s = l->data;
  assert_int_equal(status, 0);
  assert_int_equal(uv_tcp_init(l->loop, &s->conn), 0);
  s->conn.data = s;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
  s->accepted = true;
  assert_int_equal(uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_read),
                   0);
}

static void server_start(fixture_t *f, server_t *s, uint64_t reply_ms) {
  struct sockaddr_storage to;
  listen_loopback(&f->loop, &s->listener, 8, srv_accept, s, &to);
  s->port = ntohs(((struct sockaddr_in *)&to)->sin_port);
  s->reply_ms = reply_ms;
  assert_int_equal(uv_timer_init(&f->loop, &s->later), 0);
  s->later.data = s;
}

static void server_stop(fixture_t *f, server_t *s) {
  uv_close((uv_handle_t *)&s->listener, NULL);
  uv_close((uv_handle_t *)&s->later, NULL);
  if (s->accepted)
    uv_close((uv_handle_t *)&s->conn, NULL);
  run_loop(f);
}

/* Connect a uvp client to s, send a request, and race the reply against
 * a virtual timeout of tmo_ms: its outcome, and the real and virtual
 * milliseconds it took. */
static int ask(fixture_t *f, server_t *s, uint64_t tmo_ms, double *real_ms,
               uint64_t *virt_ms, uvp_buf_t *reply) {
  uvp_tcp_t *c;
  uvp_promise_t *conn, *w, *rd, *tmo;
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", s->port, &a), 0);
  assert_int_equal(uvp_tcp_new(f->ctx, &c), 0);
  assert_int_equal(uvp_tcp_connect(c, (struct sockaddr *)&a, &conn), 0);
  run_until_settled(f, conn);
  assert_int_equal(uvp_promise_state(conn), UVP_FULFILLED);
  assert_int_equal(uvp_tcp_write(c, "ping", 4, &w), 0);
  uint64_t r0 = uv_hrtime(), v0 = uvp_clock_now(f->ctx);
  assert_int_equal(uvp_tcp_read(c, &rd), 0);
  assert_int_equal(uvp_timeout(rd, tmo_ms, 0, &tmo), 0);
  run_until_settled(f, tmo);
  *real_ms = (double)(uv_hrtime() - r0) / 1e6;
  *virt_ms = uvp_clock_now(f->ctx) - v0;
  int status = uvp_promise_reason(tmo, NULL);
  if (status == 0) {
    const uvp_buf_t *b = uvp_promise_value(tmo);
    *reply = *b;
    memcpy(s->buf, b->base, b->len < 63 ? b->len : 63);
    s->buf[b->len < 63 ? b->len : 63] = '\0';
    reply->base = s->buf;
  }
  uvp_promise_release(conn);
  uvp_promise_release(w);
  uvp_promise_release(rd);
  uvp_promise_release(tmo);
  assert_int_equal(uvp_tcp_close(c), 0);
  return status;
}

/* The reply is 150 ms of real time away; the virtual timeout of 5 s is
 * pending meanwhile, with nothing else to do.  A clock that jumped
 * whenever the loop waits would fire the timeout at once: the read in
 * flight holds it to the loop's pace, and the reply wins. */
static void test_real_reply_beats_virtual_timeout(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  server_t s = {0};
  server_start(f, &s, 150);
  double real_ms;
  uint64_t virt_ms;
  uvp_buf_t reply = {0};
  assert_int_equal(ask(f, &s, 5000, &real_ms, &virt_ms, &reply), 0);
  assert_int_equal(reply.len, 4);
  assert_memory_equal(reply.base, "pong", 4);
  print_message("reply after %.1f ms real, %llu ms virtual\n", real_ms,
                (unsigned long long)virt_ms);
  assert_true(real_ms >= 140);
  assert_true(virt_ms < 5000);
  server_stop(f, &s);
}

/* A server that never answers: the virtual timeout still ends the read,
 * after its length of real time (the clock's pace while the read is in
 * flight), not never. */
static void test_silent_server_times_out_in_real_time(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  server_t s = {0};
  server_start(f, &s, 0);
  double real_ms;
  uint64_t virt_ms;
  uvp_buf_t reply = {0};
  assert_int_equal(ask(f, &s, 200, &real_ms, &virt_ms, &reply), UV_ETIMEDOUT);
  print_message("timed out after %.1f ms real, %llu ms virtual\n", real_ms,
                (unsigned long long)virt_ms);
  assert_true(virt_ms >= 200);
  assert_true(real_ms >= 150); /* the loop's clock is in whole ms */
  server_stop(f, &s);
}

/* Not covered: the program's own uv_timer_t runs in real time, and the
 * clock jumps over it (it is not uvp's work).  uv_now stays real. */
static void host_fired(uv_timer_t *t) { *(int *)t->data = 1; }

static void test_host_timer_is_not_virtual(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  uv_timer_t host;
  int fired = 0;
  assert_int_equal(uv_timer_init(&f->loop, &host), 0);
  host.data = &fired;
  assert_int_equal(uv_timer_start(&host, host_fired, 200, 0), 0);
  uvp_promise_t *hour;
  uint64_t real0 = uv_now(&f->loop), v0 = uvp_clock_now(f->ctx);
  assert_int_equal(uvp_delay(f->ctx, 3600 * 1000, NULL, NULL, 0, &hour), 0);
  run_until_settled(f, hour);
  assert_int_equal(fired, 0); /* the hour passed first */
  assert_true(uvp_clock_now(f->ctx) - v0 >= 3600 * 1000);
  uv_update_time(&f->loop);
  assert_true(uv_now(&f->loop) - real0 < 200);
  run_loop(f);
  assert_int_equal(fired, 1);
  uv_close((uv_handle_t *)&host, NULL);
  run_loop(f); /* the close: the handle is on this stack */
  uvp_promise_release(hour);
}

/* The program's own work, held: a promise its uv_timer_t settles after
 * 300 ms beats a virtual timeout of 5 s while the clock is held, and
 * loses to it at once when not. */
typedef struct own_work_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *p;
  bool held;
} own_work_t;

static void own_work_done(uv_timer_t *t) {
  own_work_t *w = t->data;
  /* Already cancelled by the timeout when it came first. */
  assert_int_equal(uvp_promise_resolve(w->p, NULL, NULL),
                   w->held ? 0 : UVP_ESETTLED);
  if (w->held)
    assert_int_equal(uvp_clock_unhold(w->ctx), 0);
}

static int own_work(fixture_t *f, bool held, double *real_ms) {
  uv_timer_t timer;
  own_work_t w = {f->ctx, NULL, held};
  assert_int_equal(uvp_promise_new(f->ctx, &w.p), 0);
  assert_int_equal(uv_timer_init(&f->loop, &timer), 0);
  timer.data = &w;
  assert_int_equal(uv_timer_start(&timer, own_work_done, 300, 0), 0);
  if (held)
    assert_int_equal(uvp_clock_hold(f->ctx), 0);
  uvp_promise_t *t;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_timeout(w.p, 5000, 0, &t), 0);
  assert_int_equal(uvp_promise_mark_handled(t), 0);
  run_until_settled(f, t);
  *real_ms = (double)(uv_hrtime() - t0) / 1e6;
  int rc =
      uvp_promise_state(t) == UVP_FULFILLED ? 0 : uvp_promise_reason(t, NULL);
  uvp_promise_release(t);
  run_loop(f); /* the timer's callback, if the timeout came first */
  uv_close((uv_handle_t *)&timer, NULL);
  run_loop(f);
  uvp_promise_release(w.p);
  return rc;
}

static void test_hold_for_own_work(void **state) {
  fixture_t *f = *state;
  /* On the real clock: nothing counted, nothing to undo. */
  assert_int_equal(uvp_clock_hold(f->ctx), 0);
  assert_int_equal(uvp_clock_unhold(f->ctx), 0);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  assert_int_equal(uvp_clock_unhold(f->ctx), UV_EINVAL); /* none taken */
  assert_int_equal(uvp_clock_hold(NULL), UV_EINVAL);
  assert_int_equal(uvp_clock_unhold(NULL), UV_EINVAL);
  double ms;
  assert_int_equal(own_work(f, true, &ms), 0);
  assert_true(ms >= 290);
  assert_int_equal(own_work(f, false, &ms), UV_ETIMEDOUT);
  assert_true(ms < 290);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_clock_hold(ctx), UVP_ECLOSED);
  assert_int_equal(uvp_clock_unhold(ctx), UVP_ECLOSED);
}

/* Time read just after a wait counts the wait (issue 51).  The clock is
 * held for 300 ms of the program's own work, a uv_timer_t: nothing else
 * wakes the loop.  In the timer's callback, before the loop's next
 * prepare phase, uvp_clock_now has moved as much as real time, and a
 * 100 ms delay started there (the clock still held) fires 100 ms later in
 * real time too, not at once (it used to count from the time before the
 * wait, 0 ms virtual). */
typedef struct after_wait_s {
  uvp_ctx_t *ctx;
  uint64_t r0, v0;
  double real_ms, virt_ms;
  uint64_t fired_at; /* uv_hrtime() in the callback */
  uvp_promise_t *delay;
} after_wait_t;

static void after_wait_cb(uv_timer_t *t) {
  after_wait_t *a = t->data;
  a->fired_at = uv_hrtime();
  a->real_ms = (double)(a->fired_at - a->r0) / 1e6;
  a->virt_ms = (double)(uvp_clock_now(a->ctx) - a->v0);
  assert_int_equal(uvp_delay(a->ctx, 100, NULL, NULL, 0, &a->delay), 0);
}

static void test_time_after_a_wait(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  after_wait_t a = {f->ctx, uv_hrtime(), uvp_clock_now(f->ctx), 0, 0, 0, NULL};
  uv_timer_t timer;
  assert_int_equal(uv_timer_init(&f->loop, &timer), 0);
  timer.data = &a;
  assert_int_equal(uvp_clock_hold(f->ctx), 0);
  assert_int_equal(uv_timer_start(&timer, after_wait_cb, 300, 0), 0);
  while (a.delay == NULL)
    uv_run(&f->loop, UV_RUN_ONCE);
  run_until_settled(f, a.delay); /* held still: at the loop's pace */
  double delay_ms = (double)(uv_hrtime() - a.fired_at) / 1e6;
  assert_int_equal(uvp_clock_unhold(f->ctx), 0);
  print_message("callback at %.1f ms real, %.0f ms virtual; the 100 ms delay "
                "it started fired %.1f ms later\n",
                a.real_ms, a.virt_ms, delay_ms);
  assert_true(a.virt_ms >= a.real_ms - 3 && a.virt_ms <= a.real_ms + 3);
  assert_true(delay_ms >= 90);
  uvp_promise_release(a.delay);
  uv_close((uv_handle_t *)&timer, NULL);
  run_loop(f);
}

/* ---- deadlines and the dump ---------------------------------------------- */

static int start_long_delay(void *arg, uvp_promise_t **out) {
  return uvp_delay(arg, 60000, NULL, NULL, 0, out);
}

static int count_sink(void *arg, const char *text, size_t len) {
  char *buf = arg;
  size_t have = strlen(buf);
  if (have + len < 4096) {
    memcpy(buf + have, text, len);
    buf[have + len] = '\0';
  }
  return 0;
}

static void test_deadline_and_dump_on_virtual_time(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  uvp_group_opts_t go = {.deadline_ms = 30000};
  uvp_group_t *g;
  uvp_promise_t *join, *kept;
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  assert_int_equal(uvp_group_start(g, start_long_delay, f->ctx, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &kept), 0);
  assert_int_equal(uvp_clock_advance(f->ctx, 29999), 0);
  turn(f);
  assert_int_equal(uvp_promise_state(join), UVP_PENDING);
  /* The dump's ages and times left are virtual. */
  static char text[4096];
  text[0] = '\0';
  uvp_dump_opts_t d = {.write = count_sink, .write_arg = text};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &d) > 0);
  assert_non_null(strstr(text, "29999 ms old"));
  assert_non_null(strstr(text, "30001 ms left")); /* the 60 s delay */
  assert_int_equal(uvp_clock_advance(f->ctx, 1), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  uvp_promise_release(join);
  uvp_promise_release(kept);
  uvp_group_release(g);
}

/* uvp_deadline_left counts on the virtual clock too. */
static uvp_ret_t check_left(void *arg, const uvp_outcome_t *in) {
  uvp_ctx_t *ctx = arg;
  (void)in;
  assert_int_equal(uvp_deadline_set(ctx, 1000), 0);
  assert_true(uvp_deadline_left(ctx) == 1000);
  assert_int_equal(uvp_clock_advance(ctx, 400), 0);
  assert_true(uvp_deadline_left(ctx) == 600);
  return uvp_ret_value(NULL, NULL);
}

static void test_deadline_left_virtual(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  uvp_promise_t *p, *q;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, check_left, f->ctx, &q), 0);
  turn(f);
  assert_int_equal(uvp_promise_state(q), UVP_FULFILLED);
  uvp_promise_release(p);
  uvp_promise_release(q);
}

/* ---- switching, bad input, teardown -------------------------------------- */

typedef struct foreign_s {
  uvp_ctx_t *ctx;
  int set_rc, adv_rc;
} foreign_t;

static void foreign_calls(void *arg) {
  foreign_t *x = arg;
  x->set_rc = uvp_ctx_set_clock(x->ctx, UVP_CLOCK_AUTO);
  x->adv_rc = uvp_clock_advance(x->ctx, 1);
}

static void test_bad_input_and_switching(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(NULL, UVP_CLOCK_VIRTUAL), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, 3), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, -1), UV_EINVAL);
  assert_int_equal(uvp_clock_advance(NULL, 1), UV_EINVAL);
  assert_int_equal(uvp_clock_advance(f->ctx, 1), UV_EINVAL); /* real */
  assert_true(uvp_clock_now(NULL) == 0);
  assert_true(uvp_clock_now(f->ctx) == uv_now(&f->loop));
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_REAL), 0);
  /* With a promise alive, no switch between real and virtual. */
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), UV_EBUSY);
  uvp_promise_release(p);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  /* Between manual and automatic, at any time. */
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(f->ctx, 50000, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_REAL), UV_EBUSY);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  uvp_promise_release(d);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_REAL), 0);
  assert_int_equal(uvp_clock_advance(f->ctx, 1), UV_EINVAL);
  /* A deadline in the current scope holds it too. */
  assert_int_equal(uvp_deadline_set(f->ctx, 1000), 0);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), UV_EBUSY);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  /* Another thread, with the check on. */
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  foreign_t x = {f->ctx, 0, 0};
  run_on_other_thread(foreign_calls, &x);
  assert_int_equal(x.set_rc, UVP_ETHREAD);
  assert_int_equal(x.adv_rc, UVP_ETHREAD);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_ctx_set_clock(ctx, UVP_CLOCK_AUTO), UVP_ECLOSED);
  assert_int_equal(uvp_clock_advance(ctx, 1), UVP_ECLOSED);
}

/* Teardown with virtual timers, a deadline and the automatic handles
 * pending: everything closes (the fixture's uv_loop_close() == 0). */
static void test_teardown_with_virtual_timers(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  uvp_group_opts_t go = {.deadline_ms = 10000};
  uvp_group_t *g;
  uvp_promise_t *d, *z;
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  assert_int_equal(uvp_group_start(g, start_long_delay, f->ctx, NULL), 0);
  assert_int_equal(uvp_delay(f->ctx, 100, NULL, NULL, UVP_UNREF, &d), 0);
  assert_int_equal(uvp_delay(f->ctx, 0, NULL, NULL, 0, &z), 0);
  uvp_promise_release(d);
  uvp_promise_release(z);
  uvp_group_release(g);
  (void)close_ctx(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_advance_fires_in_due_order),
      QUIET_TEST(test_zero_delay_and_refs),
      QUIET_TEST(test_retry_91s_virtual_no_io),
      QUIET_TEST(test_retry_91s_virtual_real_connects),
      QUIET_TEST(test_real_reply_beats_virtual_timeout),
      QUIET_TEST(test_silent_server_times_out_in_real_time),
      QUIET_TEST(test_hold_for_own_work),
      QUIET_TEST(test_time_after_a_wait),
      QUIET_TEST(test_host_timer_is_not_virtual),
      QUIET_TEST(test_deadline_and_dump_on_virtual_time),
      QUIET_TEST(test_deadline_left_virtual),
      QUIET_TEST(test_bad_input_and_switching),
      QUIET_TEST(test_teardown_with_virtual_timers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
