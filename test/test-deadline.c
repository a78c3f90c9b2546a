/* Deadlines (uvp.h "Deadlines", src/deadline.c): what uvp_deadline_left
 * says and how nested deadlines combine; a group's deadline cancelling a
 * file read still queued in the pool (its threads held busy, so uv_cancel
 * succeeds) and one already running (an open blocked on a FIFO: it
 * completes, its promise has rejected with UV_ETIMEDOUT, its descriptor is
 * closed); the same deadline cancelling a TCP connect and a child process
 * started three levels down; a fiber's own deadline and its awaits; work
 * started after a deadline passed; a library's own promise watched
 * (uvp_deadline_watch); teardown with deadlines pending.
 * Every test ends with uv_loop_close() == 0 (the fixture). */
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include "fs-helpers.h"

/* ---- what is left -------------------------------------------------------- */

static void test_left_and_nesting(void **state) {
  fixture_t *f = *state;
  assert_true(uvp_deadline_left(f->ctx) == UVP_NO_DEADLINE);
  assert_true(uvp_deadline_left(NULL) == UVP_NO_DEADLINE);
  assert_int_equal(uvp_deadline_set(NULL, 10), UV_EINVAL);
  assert_int_equal(uvp_deadline_set(f->ctx, 1000), 0);
  uint64_t left = uvp_deadline_left(f->ctx);
  assert_true(left <= 1000 && left >= 900);
  /* A farther one changes nothing; a nearer one wins. */
  assert_int_equal(uvp_deadline_set(f->ctx, 5000), 0);
  assert_true(uvp_deadline_left(f->ctx) <= 1000);
  assert_int_equal(uvp_deadline_set(f->ctx, 40), 0);
  assert_true(uvp_deadline_left(f->ctx) <= 40);
  /* It passes: 0 left, and the delays started under it, due after it,
   * were stopped by it (the loop ends then, not at 5 s). */
  uvp_promise_t *d, *keep;
  assert_int_equal(uvp_delay(f->ctx, 60, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &keep), 0);
  uint64_t t0 = uv_hrtime();
  run_loop(f);
  assert_true((uv_hrtime() - t0) / 1000000 < 2000);
  assert_int_equal(uvp_deadline_left(f->ctx), 0);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(keep, NULL), UV_ETIMEDOUT);
  uvp_promise_release(d);
  uvp_promise_release(keep);
  (void)close_ctx(f);
}

/* A handler registered under a deadline sees it, and what it starts is
 * watched by it; a scope cleared keeps the deadline (as a group's). */
typedef struct seen_left_s {
  uint64_t left;
  uvp_promise_t *started;
  uvp_ctx_t *ctx;
} seen_left_t;

static uvp_ret_t note_left(void *arg, const uvp_outcome_t *in) {
  seen_left_t *s = arg;
  (void)in;
  assert_int_equal(uvp_scope_clear(s->ctx), 0);
  s->left = uvp_deadline_left(s->ctx);
  assert_int_equal(uvp_delay(s->ctx, 5000, NULL, NULL, 0, &s->started), 0);
  return uvp_ret_pass();
}

static void test_handlers_carry_it(void **state) {
  fixture_t *f = *state;
  static seen_left_t s;
  s = (seen_left_t){0, NULL, f->ctx};
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_deadline_set(f->ctx, 50), 0);
  assert_int_equal(uvp_promise_then(p, note_left, &s, &d), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0); /* out here: keeps it too */
  assert_true(uvp_deadline_left(f->ctx) <= 50);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  uint64_t t0 = uv_hrtime();
  run_loop(f); /* the 5 s delay keeps it running until the deadline */
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_true(s.left <= 50);
  assert_int_equal(uvp_promise_reason(s.started, NULL), UV_ETIMEDOUT);
  assert_true(ms < 2000);
  uvp_promise_release(s.started);
  uvp_promise_release(p);
  uvp_promise_release(d);
}

/* Work started after the deadline passed is stopped at once, from the
 * loop (not inside the call that started it). */
static void test_started_after_it_passed(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_deadline_set(f->ctx, 1), 0);
  uv_sleep(5);
  uvp_promise_t *first;
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &first), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(first, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_deadline_left(f->ctx), 0);
  uvp_promise_t *late;
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &late), 0);
  assert_int_equal(uvp_promise_state(late), UVP_PENDING);
  uint64_t t0 = uv_hrtime();
  run_loop(f);
  assert_int_equal(uvp_promise_reason(late, NULL), UV_ETIMEDOUT);
  assert_true((uv_hrtime() - t0) / 1000000 < 1000);
  uvp_promise_release(first);
  uvp_promise_release(late);
}

/* ---- a group's deadline and the thread pool ------------------------------ */

static const char *read_path;

static int start_read(void *arg, uvp_promise_t **out) {
  uvp_ctx_t *ctx = arg;
  return uvp_fs_read_file(ctx, read_path, 0, out);
}

static uvp_group_t *group_within(fixture_t *f, uint64_t ms) {
  uvp_group_opts_t o = {0, 0, ms};
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, &o, &g), 0);
  return g;
}

/* Queued behind a full pool: cancelled before it starts, never opened. */
static void test_group_deadline_read_queued(void **state) {
  fixture_t *f = *state;
  put("data", "some bytes", 10);
  read_path = at("data");
  int fds = count_fds();
  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);
  uvp_group_t *g = group_within(f, 30);
  assert_int_equal(uvp_group_start(g, start_read, f->ctx, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  uvp_promise_t *join, *next;
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_group_next(g, &next), 0);
  settle_ticking(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  settle_ticking(f, next);
  assert_int_equal(uvp_promise_reason(next, NULL), UV_ETIMEDOUT);
  unblock_pool();
  run_loop(f);
  blockers_done(w, n, 0);
  assert_int_equal(count_fds(), fds); /* the open never ran */
  uvp_promise_release(join);
  uvp_promise_release(next);
  uvp_group_release(g);
}

/* Already running (an open blocked on a FIFO until a writer comes): it
 * cannot be stopped; its promise rejects with UV_ETIMEDOUT at the deadline,
 * the open completes when the writer comes, and uvp closes what it
 * opened. */
static void test_group_deadline_read_running(void **state) {
  fixture_t *f = *state;
  SKIP_ON_WINDOWS("no FIFO to block an open on");
  assert_int_equal(mkfifo(at("fifo"), 0600), 0);
  read_path = at("fifo");
  int fds = count_fds();
  uvp_group_t *g = group_within(f, 30);
  assert_int_equal(uvp_group_start(g, start_read, f->ctx, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  uvp_promise_t *join, *next;
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_group_next(g, &next), 0);
  uint64_t t0 = uv_hrtime();
  settle_ticking(f, next); /* the open still blocks: nothing opened it */
  assert_int_equal(uvp_promise_reason(next, NULL), UV_ETIMEDOUT);
  /* The join, cut by the deadline as uvp_promise_cancel would, waits on:
   * the open goes on in the pool, and the group's work is not over. */
  assert_int_equal(uvp_promise_state(join), UVP_PENDING);
  assert_true((uv_hrtime() - t0) / 1000000 < 2000);
  assert_int_equal(count_fds(), fds);
  int wfd = writer_for_blocked_reader(at("fifo")); /* the open completes */
  settle_ticking(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  run_loop(f);
  assert_int_equal(close(wfd), 0);
  assert_int_equal(count_fds(), fds);
  uvp_promise_release(join);
  uvp_promise_release(next);
  uvp_group_release(g);
}

/* ---- three levels down: a TCP connect and a child process ---------------- */

/* A loopback listener whose accept queue is full: a connect to it waits
 * (its SYN dropped and sent again) until stopped. */
typedef struct full_listener_s {
  int fd, fillers[4];
  struct sockaddr_in addr;
} full_listener_t;

static void full_listener(full_listener_t *l) {
  l->fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l->fd >= 0);
  memset(&l->addr, 0, sizeof(l->addr));
  l->addr.sin_family = AF_INET;
  l->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(l->fd, (struct sockaddr *)&l->addr, sizeof(l->addr)),
                   0);
  socklen_t len = sizeof(l->addr);
  assert_int_equal(getsockname(l->fd, (struct sockaddr *)&l->addr, &len), 0);
  assert_int_equal(listen(l->fd, 0), 0);
  for (int i = 0; i < 4; i++) {
#if defined(SOCK_NONBLOCK)
    l->fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(l->fillers[i] >= 0);
#else /* macOS: none, the flag is set after */
    l->fillers[i] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l->fillers[i] >= 0);
    assert_int_equal(fcntl(l->fillers[i], F_SETFL, O_NONBLOCK), 0);
#endif
    (void)connect(l->fillers[i], (struct sockaddr *)&l->addr, sizeof(l->addr));
    uv_sleep(20);
  }
}

static void full_listener_close(full_listener_t *l) {
  for (int i = 0; i < 4; i++)
    close(l->fillers[i]);
  close(l->fd);
}

typedef struct deep_s {
  uvp_ctx_t *ctx;
  full_listener_t *l;
  uvp_tcp_t *tcp;
  uvp_promise_t *connect, *child; /* kept: their reasons are checked */
  int level3;
} deep_t;

/* Level 3: a handler registered by the inner fiber starts both. */
static uvp_ret_t level3(void *arg, const uvp_outcome_t *in) {
  deep_t *d = arg;
  (void)in;
  static char *args[] = {"sleep", "30", NULL};
  uvp_spawn_opts_t o = {"sleep", args, NULL, NULL, NULL, 0, 0, 0};
  if (uvp_tcp_new(d->ctx, &d->tcp) != 0 ||
      uvp_tcp_connect(d->tcp, (const struct sockaddr *)&d->l->addr,
                      &d->connect) != 0 ||
      uvp_spawn(d->ctx, &o, &d->child) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  d->level3 = 1;
  return uvp_ret_pass();
}

/* Level 2: a fiber spawned by the member. */
static uvp_ret_t level2(void *arg) {
  deep_t *d = arg;
  uvp_promise_t *p, *h;
  if (uvp_promise_resolved(d->ctx, NULL, NULL, &p) != 0 ||
      uvp_promise_then(p, level3, d, &h) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  uvp_promise_release(p);
  int rc = uvp_await(h, NULL);
  uvp_promise_release(h);
  uvp_promise_t *never;
  if (rc == 0 && uvp_promise_new(d->ctx, &never) == 0) {
    rc = uvp_await(never, NULL); /* until the deadline */
    uvp_promise_release(never);
  }
  return uvp_ret_reject(rc, NULL, NULL);
}

/* Level 1: the group's member, a fiber. */
static uvp_ret_t level1(void *arg) {
  deep_t *d = arg;
  uvp_promise_t *inner;
  if (uvp_fiber_spawn(d->ctx, level2, d, NULL, &inner) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  int rc = uvp_await(inner, NULL);
  uvp_promise_release(inner);
  return uvp_ret_reject(rc, NULL, NULL);
}

static void test_group_deadline_three_levels_down(void **state) {
  fixture_t *f = *state;
  SKIP_ON_WINDOWS("its full listener is made of POSIX sockets "
                  "(SOCK_NONBLOCK, close)");
  static full_listener_t l;
  static deep_t d;
  full_listener(&l);
  d = (deep_t){f->ctx, &l, NULL, NULL, NULL, 0};
  uv_update_time(&f->loop); /* deadlines count in the loop's time */
  uvp_group_t *g = group_within(f, 200);
  assert_int_equal(uvp_group_spawn(g, level1, &d, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(g, &join), 0);
  uint64_t t0 = uv_hrtime();
  while (d.connect == NULL && uv_hrtime() - t0 < 5000000000ull)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(d.level3, 1);
  settle_ticking(f, d.connect);
  settle_ticking(f, d.child);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(uvp_promise_reason(d.connect, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(d.child, NULL), UV_ETIMEDOUT);
  if (!(ms >= 150 && ms < 5000))
    fail_msg("the deadline of 200 ms ended the work after %llu ms",
             (unsigned long long)ms);
  /* The connection the member opened is the group's work until it is
   * closed: the join, cut, waits for it. */
  for (int k = 0; k < 10; k++)
    (void)uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_promise_state(join), UVP_PENDING);
  assert_int_equal(uvp_tcp_close(d.tcp), 0);
  settle_ticking(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  run_loop(f); /* the child exits on its signal: its handle closes */
  uvp_promise_release(d.connect);
  uvp_promise_release(d.child);
  uvp_promise_release(join);
  uvp_group_release(g);
  full_listener_close(&l);
}

/* ---- a shield over work already watched ---------------------------------- */

/* Work started under a deadline stays watched by it after a shield takes
 * its place (uvp/groups.h), with a deadline of the shield's own or none
 * (UVP_NO_DEADLINE): the delay started before is cut at 40 ms, the one
 * started inside the shield runs to its end (none) or is cut by the
 * shield's deadline. */
static void shield_over(fixture_t *f, uint64_t shield_ms) {
  assert_int_equal(uvp_deadline_set(f->ctx, 40), 0);
  uvp_promise_t *before, *inside;
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &before), 0);
  assert_int_equal(uvp_deadline_shield(f->ctx, shield_ms), 0);
  if (shield_ms == UVP_NO_DEADLINE)
    assert_true(uvp_deadline_left(f->ctx) == UVP_NO_DEADLINE);
  else
    assert_true(uvp_deadline_left(f->ctx) <= shield_ms);
  assert_int_equal(uvp_delay(f->ctx, 150, NULL, NULL, 0, &inside), 0);
  uint64_t t0 = uv_hrtime();
  run_loop(f);
  assert_true((uv_hrtime() - t0) / 1000000 < 2500); /* not the 5 s */
  assert_int_equal(uvp_promise_reason(before, NULL), UV_ETIMEDOUT);
  if (shield_ms == UVP_NO_DEADLINE)
    assert_int_equal(uvp_promise_state(inside), UVP_FULFILLED);
  else
    assert_int_equal(uvp_promise_reason(inside, NULL), UV_ETIMEDOUT);
  uvp_promise_release(before);
  uvp_promise_release(inside);
  (void)close_ctx(f);
}

static void test_shield_none_keeps_watched(void **state) {
  shield_over(*state, UVP_NO_DEADLINE);
}

static void test_shield_keeps_watched(void **state) { shield_over(*state, 80); }

/* The same for a nearer deadline set in the scope's place: the work
 * started under the farther one is still cut by it. */
static void test_nearer_keeps_watched(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_deadline_set(f->ctx, 300), 0);
  uvp_promise_t *before, *inside;
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &before), 0);
  assert_int_equal(uvp_deadline_set(f->ctx, 40), 0);
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &inside), 0);
  uint64_t t0 = uv_hrtime();
  run_loop(f);
  assert_true((uv_hrtime() - t0) / 1000000 < 2500); /* not the 5 s */
  assert_int_equal(uvp_promise_reason(before, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(inside, NULL), UV_ETIMEDOUT);
  uvp_promise_release(before);
  uvp_promise_release(inside);
  (void)close_ctx(f);
}

/* ---- a fiber's own deadline ---------------------------------------------- */

typedef struct own_s {
  uvp_ctx_t *ctx;
  int rc1, rc2, rc_shielded;
  uint64_t left;
} own_t;

static uvp_ret_t own_body(void *arg) {
  own_t *o = arg;
  o->left = uvp_deadline_left(o->ctx);
  uvp_promise_t *never, *d;
  if (uvp_promise_new(o->ctx, &never) != 0)
    return uvp_ret_pass();
  o->rc1 = uvp_await(never, NULL); /* not watched: the fiber is */
  o->rc2 = uvp_await(never, NULL);
  uvp_promise_release(never);
  /* Cleanup still runs: shielded, a delay started now (past the
   * deadline, so it is stopped at once). */
  if (uvp_delay(o->ctx, 5, NULL, NULL, 0, &d) == 0) {
    o->rc_shielded = uvp_await_shielded(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_value((void *)1, NULL);
}

static void test_fiber_deadline(void **state) {
  fixture_t *f = *state;
  static own_t o;
  o = (own_t){f->ctx, 1, 1, 1, 0};
  uvp_fiber_opts_t fo = {0, NULL, 30};
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, own_body, &o, &fo, &fp), 0);
  assert_true(uvp_deadline_left(f->ctx) == UVP_NO_DEADLINE); /* its own */
  settle_ticking(f, fp);
  run_loop(f);
  assert_true(o.left <= 30);
  assert_int_equal(o.rc1, UV_ETIMEDOUT);
  assert_int_equal(o.rc2, UV_ETIMEDOUT);
  assert_int_equal(o.rc_shielded, UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ETIMEDOUT);
  uvp_promise_release(fp);
}

/* ---- counted from the call ----------------------------------------------- */

/* Start-up work before the loop's first turn (or a long callback) leaves
 * the loop's cached time (uv_now) STALE_MS behind the clock.  A deadline
 * set then counts from its call, not from the cached time (which would
 * cut the work at the loop's first timer phase, before it ran): a fiber's
 * deadline_ms, a group's, a member's, uvp_deadline_set's and
 * uvp_deadline_shield's, each over a fiber that waits 50 ms, far within
 * FROM_CALL_MS. */
enum { STALE_MS = 600, FROM_CALL_MS = 500, KINDS = 5 };

typedef struct from_call_s {
  uvp_ctx_t *ctx;
  int ran;
  int rc;
} from_call_t;

static uvp_ret_t wait_a_little(void *arg) {
  from_call_t *c = arg;
  uvp_promise_t *d;
  c->ran = 1;
  c->rc = uvp_delay(c->ctx, 50, NULL, NULL, 0, &d);
  if (c->rc == 0) {
    c->rc = uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_value(NULL, NULL);
}

static void test_deadlines_count_from_the_call(void **state) {
  fixture_t *f = *state;
  static from_call_t c[KINDS];
  uvp_promise_t *p[KINDS];
  uvp_group_t *g[2];
  for (int i = 0; i < KINDS; i++)
    c[i] = (from_call_t){f->ctx, 0, 1};
  uv_update_time(&f->loop);
  uv_sleep(STALE_MS);
  uint64_t t0 = uv_hrtime();
  /* A fiber's own deadline_ms. */
  uvp_fiber_opts_t own = {.deadline_ms = FROM_CALL_MS};
  assert_int_equal(uvp_fiber_spawn(f->ctx, wait_a_little, &c[0], &own, &p[0]),
                   0);
  /* A group's, over a member without one. */
  uvp_group_opts_t go = {.deadline_ms = FROM_CALL_MS};
  assert_int_equal(uvp_group_new(f->ctx, &go, &g[0]), 0);
  assert_int_equal(uvp_group_spawn(g[0], wait_a_little, &c[1], NULL), 0);
  /* A member's, in a group without one. */
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g[1]), 0);
  assert_int_equal(uvp_group_spawn(g[1], wait_a_little, &c[2], &own), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(uvp_group_close(g[i]), 0);
    assert_int_equal(uvp_group_join(g[i], &p[1 + i]), 0);
    uvp_group_release(g[i]);
  }
  /* The scope's, set and shielded. */
  assert_int_equal(uvp_deadline_set(f->ctx, FROM_CALL_MS), 0);
  uint64_t left = uvp_deadline_left(f->ctx);
  uint64_t since = (uv_hrtime() - t0) / 1000000;
  assert_true(left <= FROM_CALL_MS && left + since + 1 >= FROM_CALL_MS);
  assert_int_equal(uvp_fiber_spawn(f->ctx, wait_a_little, &c[3], NULL, &p[3]),
                   0);
  assert_int_equal(uvp_deadline_shield(f->ctx, FROM_CALL_MS), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, wait_a_little, &c[4], NULL, &p[4]),
                   0);
  run_loop(f);
  for (int i = 0; i < KINDS; i++) {
    assert_int_equal(c[i].ran, 1);
    assert_int_equal(c[i].rc, 0);
    assert_int_equal(uvp_promise_state(p[i]), UVP_FULFILLED);
    uvp_promise_release(p[i]);
  }
}

/* ---- teardown ------------------------------------------------------------ */

static uvp_ret_t sleeper(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_promise_t *d;
  if (uvp_delay(ctx, 60000, NULL, NULL, 0, &d) == 0) {
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static void test_teardown_with_deadlines(void **state) {
  fixture_t *f = *state;
  uvp_fiber_opts_t fo = {0, NULL, 50000};
  uvp_promise_t *fp, *d;
  assert_int_equal(uvp_fiber_spawn(f->ctx, sleeper, f->ctx, &fo, &fp), 0);
  assert_int_equal(uvp_deadline_set(f->ctx, 40000), 0);
  assert_int_equal(uvp_delay(f->ctx, 60000, NULL, NULL, 0, &d), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  (void)close_ctx(f);
  assert_int_equal(uvp_promise_reason(fp, NULL), UVP_ECLOSED);
  assert_int_equal(uvp_promise_reason(d, NULL), UVP_ECLOSED);
  uvp_promise_release(fp);
  uvp_promise_release(d);
}

/* ---- a library's own promises -------------------------------------------- */

/* A binding's transfer: its cancel hook stops it (here: counts). */
static void stop_transfer(uvp_promise_t *p, void *arg) {
  (void)p;
  ++*(int *)arg;
}

static void test_library_promise_watched(void **state) {
  fixture_t *f = *state;
  static int stopped;
  stopped = 0;
  uvp_promise_t *free_run, *timed, *settled;
  /* Without a deadline: watched by nothing, and nothing happens. */
  assert_int_equal(uvp_promise_new(f->ctx, &free_run), 0);
  assert_int_equal(
      uvp_promise_set_cancel_full(free_run, stop_transfer, &stopped, NULL), 0);
  assert_int_equal(uvp_deadline_watch(f->ctx, free_run), 0);
  /* Under one: rejected with UV_ETIMEDOUT when it passes, its hook run. */
  assert_int_equal(uvp_deadline_set(f->ctx, 30), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &timed), 0);
  assert_int_equal(
      uvp_promise_set_cancel_full(timed, stop_transfer, &stopped, NULL), 0);
  assert_int_equal(uvp_deadline_watch(f->ctx, timed), 0);
  assert_int_equal(uvp_deadline_watch(f->ctx, NULL), UV_EINVAL);
  assert_int_equal(uvp_deadline_watch(NULL, timed), UV_EINVAL);
  assert_int_equal(uvp_promise_new(f->ctx, &settled), 0);
  assert_int_equal(uvp_promise_resolve(settled, NULL, NULL), 0);
  assert_int_equal(uvp_deadline_watch(f->ctx, settled), UVP_ESETTLED);
  settle_ticking(f, timed);
  assert_int_equal(uvp_promise_reason(timed, NULL), UV_ETIMEDOUT);
  assert_int_equal(stopped, 1);
  assert_int_equal(uvp_promise_state(free_run), UVP_PENDING);
  uvp_promise_release(timed);
  uvp_promise_release(settled);
  assert_int_equal(uvp_promise_resolve(free_run, NULL, NULL), 0);
  uvp_promise_release(free_run);
  run_loop(f);
  assert_int_equal(stopped, 1);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_left_and_nesting),
      QUIET_TEST(test_handlers_carry_it),
      QUIET_TEST(test_started_after_it_passed),
      FS_TEST(test_group_deadline_read_queued),
      FS_TEST(test_group_deadline_read_running),
      QUIET_TEST(test_group_deadline_three_levels_down),
      QUIET_TEST(test_shield_none_keeps_watched),
      QUIET_TEST(test_shield_keeps_watched),
      QUIET_TEST(test_nearer_keeps_watched),
      QUIET_TEST(test_fiber_deadline),
      QUIET_TEST(test_deadlines_count_from_the_call),
      QUIET_TEST(test_library_promise_watched),
      FIXTURE_TEST(test_teardown_with_deadlines),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
