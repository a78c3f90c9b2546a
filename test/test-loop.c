/* uvp on a real libuv loop: what keeps uv_run() going and what does not,
 * teardown on a private and on the default loop, FIFO order and
 * asynchrony of handlers, settling from timer / fs / stream callbacks,
 * uv_stop() from a handler, no busy spin while idle, the per-turn budget,
 * a million-step chain in constant memory and stack, re-entrancy, and two
 * contexts driven by one thread. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

static uvp_ret_t count_cb(void *arg, const uvp_outcome_t *in) {
  (void)in;
  (*(int *)arg)++;
  return uvp_ret_value(NULL, NULL);
}

static void count_unhandled_into(uvp_promise_t *p, void *arg) {
  (void)p;
  (*(int *)arg)++;
}

/* Loop iterations, counted by an unreferenced prepare handle (it runs once
 * per iteration, just before poll, and does not keep the loop alive). */
typedef struct iter_s {
  uv_prepare_t h;
  unsigned long n;
} iter_t;

static void iter_cb(uv_prepare_t *h) { ((iter_t *)h->data)->n++; }

static void iter_start(uv_loop_t *loop, iter_t *it) {
  it->n = 0;
  uv_prepare_init(loop, &it->h);
  it->h.data = it;
  uv_prepare_start(&it->h, iter_cb);
  uv_unref((uv_handle_t *)&it->h);
}

static void iter_stop(iter_t *it) { uv_close((uv_handle_t *)&it->h, NULL); }

/* ---- what keeps the loop alive ------------------------------------------ */

typedef struct chain_s {
  uvp_ctx_t *ctx;
  int steps;
  int want;
} chain_t;

/* Each step queues the next one on a fresh settled promise. */
static uvp_ret_t chain_step(void *arg, const uvp_outcome_t *in) {
  chain_t *c = arg;
  uvp_promise_t *q;
  (void)in;
  if (++c->steps < c->want) {
    assert_int_equal(uvp_promise_resolved(c->ctx, NULL, NULL, &q), 0);
    assert_int_equal(uvp_promise_then(q, chain_step, c, NULL), 0);
    uvp_promise_release(q);
  }
  return uvp_ret_pass();
}

static void test_pending_does_not_keep_loop_alive(void **state) {
  fixture_t *f = *state;
  int ran = 0;
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, count_cb, &ran, NULL), 0);
  /* Only a pending promise: uvp's handles hold nothing up. */
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_true(uv_hrtime() - t0 < 2000000000ull);
  assert_int_equal(ran, 0);

  /* A queued reaction does keep it alive, until drained... */
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  assert_int_not_equal(uv_loop_alive(&f->loop), 0);
  assert_int_equal(ran, 0);
  /* ...including the reactions that reactions queue. */
  chain_t c = {f->ctx, 0, 50};
  assert_int_equal(uvp_promise_then(p, chain_step, &c, NULL), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(ran, 1);
  assert_int_equal(c.steps, 50);
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  uvp_promise_release(p);
}

/* ---- teardown on uv_default_loop() --------------------------------------- */

static void test_default_loop_teardown(void **state) {
  (void)state;
  uv_loop_t *loop = uv_default_loop();
  uvp_ctx_t *ctx;
  uvp_promise_t *p, *pending;
  assert_non_null(loop);
  assert_int_equal(uvp_ctx_new(loop, &ctx), 0);
  chain_t c = {ctx, 0, 100};
  assert_int_equal(uvp_promise_resolved(ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, chain_step, &c, NULL), 0);
  assert_int_equal(uvp_promise_new(ctx, &pending), 0);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(c.steps, 100);
  assert_int_equal(uvp_ctx_close(ctx), 0);
  /* The close callbacks of uvp's three handles. */
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uvp_promise_reason(pending, NULL), UVP_ECLOSED);
  uvp_promise_release(pending);
  uvp_promise_release(p);
  assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- order and asynchrony ------------------------------------------------ */

typedef struct order_s {
  uvp_ctx_t *ctx;
  trace_t trace;
  uvp_promise_t *p2;
  uvp_promise_t *p4;
  int inside;
} order_t;

static uvp_ret_t mark(void *arg, const uvp_outcome_t *in) {
  order_t *o = arg;
  assert_int_equal(o->inside, 0); /* never nested in another handler */
  trace_push(&o->trace, (int)(intptr_t)in->value);
  return uvp_ret_pass();
}

/* Handler 1 queues more work while the queue drains. */
static uvp_ret_t first(void *arg, const uvp_outcome_t *in) {
  order_t *o = arg;
  (void)in;
  o->inside = 1;
  trace_push(&o->trace, 1);
  assert_int_equal(uvp_promise_then(o->p2, mark, o, NULL), 0);
  assert_int_equal(uvp_promise_resolve(o->p2, (void *)(intptr_t)3, NULL), 0);
  assert_int_equal(uvp_promise_then(o->p4, mark, o, NULL), 0);
  assert_int_equal(o->trace.n, 1);
  o->inside = 0;
  return uvp_ret_pass();
}

static void test_fifo_and_never_synchronous(void **state) {
  fixture_t *f = *state;
  order_t o;
  memset(&o, 0, sizeof(o));
  o.ctx = f->ctx;
  uvp_promise_t *p1;
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &o.p2), 0);
  assert_int_equal(
      uvp_promise_resolved(f->ctx, (void *)(intptr_t)4, NULL, &o.p4), 0);
  assert_int_equal(uvp_promise_then(p1, first, &o, NULL), 0);
  assert_int_equal(uvp_promise_then(p1, mark, &o, NULL), 0);
  assert_int_equal(o.trace.n, 0);
  assert_int_equal(uvp_promise_resolve(p1, (void *)(intptr_t)2, NULL), 0);
  assert_int_equal(o.trace.n, 0); /* not inside resolve */
  /* then() on an already settled promise does not run it either. */
  int ran = 0, unhandled = 0;
  assert_int_equal(
      uvp_ctx_set_unhandled_cb(f->ctx, count_unhandled_into, &unhandled), 0);
  assert_int_equal(uvp_promise_then(o.p4, count_cb, &ran, NULL), 0);
  uvp_promise_t *r;
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &r), 0);
  assert_int_equal(uvp_promise_catch(r, count_cb, &ran, NULL), 0);
  assert_int_equal(uvp_promise_finally(r, count_cb, &ran, NULL), 0);
  assert_int_equal(ran, 0);
  run_loop(f);
  assert_int_equal(ran, 3);
  /* finally() passes the rejection on, with no derived promise to take
   * it; its handler saw it, so it is not reported. */
  assert_int_equal(unhandled, 0);
  /* 1 and 2 were queued by p1's resolve; 3 and 4 while 1 ran, in that
   * order, behind them. */
  assert_int_equal(o.trace.n, 4);
  for (int i = 0; i < 4; i++)
    assert_int_equal(o.trace.ev[i], i + 1);
  uvp_promise_release(p1);
  uvp_promise_release(o.p2);
  uvp_promise_release(o.p4);
  uvp_promise_release(r);
}

/* ---- settling from libuv callbacks --------------------------------------- */

typedef struct cbset_s {
  fixture_t *f;
  iter_t it;
  uvp_promise_t *p;
  unsigned long cb_iter;
  unsigned long handler_iter;
  int handled;
  int64_t got;
  uv_timer_t timer;
  uv_fs_t req;
  uv_pipe_t pipe;
  char rbuf[64];
} cbset_t;

static uvp_ret_t record(void *arg, const uvp_outcome_t *in) {
  cbset_t *s = arg;
  assert_int_equal(in->status, 0);
  s->handled++;
  s->handler_iter = s->it.n;
  s->got = UVP_INT(in->value);
  return uvp_ret_pass();
}

static void cbset_init(cbset_t *s, fixture_t *f) {
  memset(s, 0, sizeof(*s));
  s->f = f;
  iter_start(&f->loop, &s->it);
  assert_int_equal(uvp_promise_new(f->ctx, &s->p), 0);
  assert_int_equal(uvp_promise_then(s->p, record, s, NULL), 0);
}

/* The handler ran, once, in the very iteration of the callback that settled
 * its promise (idle or check phase right after it), with its value. */
static void cbset_check(cbset_t *s, int64_t want) {
  assert_int_equal(s->handled, 1);
  assert_int_equal(s->got, want);
  assert_int_equal(s->handler_iter, s->cb_iter);
  uvp_promise_release(s->p);
  iter_stop(&s->it);
  run_loop(s->f);
}

static void settle_in_timer(uv_timer_t *t) {
  cbset_t *s = t->data;
  s->cb_iter = s->it.n;
  assert_int_equal(uvp_promise_resolve(s->p, (void *)(intptr_t)11, NULL), 0);
  assert_int_equal(s->handled, 0);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_settle_in_timer_cb(void **state) {
  cbset_t s;
  cbset_init(&s, *state);
  uv_timer_init(&s.f->loop, &s.timer);
  s.timer.data = &s;
  uv_timer_start(&s.timer, settle_in_timer, 5, 0);
  run_loop(s.f);
  cbset_check(&s, 11);
}

static void settle_in_fs(uv_fs_t *req) {
  cbset_t *s = req->data;
  s->cb_iter = s->it.n;
  assert_int_equal(req->result, 0);
  int64_t size = (int64_t)req->statbuf.st_size;
  uv_fs_req_cleanup(req);
  assert_int_equal(uvp_promise_resolve(s->p, (void *)(intptr_t)size, NULL), 0);
  assert_int_equal(s->handled, 0);
}

static void test_settle_in_fs_cb(void **state) {
  cbset_t s;
  cbset_init(&s, *state);
  char dir[] = "/tmp/uvp-loop-XXXXXX";
  char path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/f", dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fwrite("0123456789abc", 1, 13, fp), 13);
  fclose(fp);
  s.req.data = &s;
  assert_int_equal(uv_fs_stat(&s.f->loop, &s.req, path, settle_in_fs), 0);
  run_loop(s.f);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(rmdir(dir), 0);
  cbset_check(&s, 13);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  cbset_t *s = h->data;
  (void)hint;
  *buf = uv_buf_init(s->rbuf, sizeof(s->rbuf));
}

static void settle_in_read(uv_stream_t *st, ssize_t nread,
                           const uv_buf_t *buf) {
  cbset_t *s = st->data;
  (void)buf;
  if (nread == 0)
    return;
  assert_true(nread > 0);
  s->cb_iter = s->it.n;
  assert_int_equal(uvp_promise_resolve(s->p, (void *)(intptr_t)nread, NULL), 0);
  assert_int_equal(s->handled, 0);
  uv_read_stop(st);
  uv_close((uv_handle_t *)st, NULL);
}

static void test_settle_in_read_cb(void **state) {
  cbset_t s;
  cbset_init(&s, *state);
  int fds[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  assert_int_equal(uv_pipe_init(&s.f->loop, &s.pipe, 0), 0);
  s.pipe.data = &s;
  assert_int_equal(uv_pipe_open(&s.pipe, fds[0]), 0);
  assert_int_equal(
      uv_read_start((uv_stream_t *)&s.pipe, alloc_cb, settle_in_read), 0);
  assert_int_equal(write(fds[1], "hello", 5), 5);
  run_loop(s.f); /* closing the pipe closes fds[0] */
  close(fds[1]);
  assert_string_equal(s.rbuf, "hello");
  cbset_check(&s, 5);
}

/* ---- uv_stop() from a handler -------------------------------------------- */

typedef struct stopper_s {
  uv_loop_t *loop;
  int ran;
  int stop_at;
} stopper_t;

static uvp_ret_t maybe_stop(void *arg, const uvp_outcome_t *in) {
  stopper_t *s = arg;
  (void)in;
  if (++s->ran == s->stop_at)
    uv_stop(s->loop);
  return uvp_ret_pass();
}

static void test_uv_stop_in_handler(void **state) {
  fixture_t *f = *state;
  stopper_t s = {&f->loop, 0, 3};
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(uvp_promise_then(p, maybe_stop, &s, NULL), 0);
  /* uv_run returns early, still alive: work is queued. */
  assert_int_not_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.ran, 3);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.queued, 7);
  /* A later run drains the rest. */
  run_loop(f);
  assert_int_equal(s.ran, 10);
  uvp_promise_release(p);
}

/* ---- no busy spin -------------------------------------------------------- */

static uint64_t cpu_us(void) {
  struct rusage ru;
  assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
  return (uint64_t)ru.ru_utime.tv_sec * 1000000u +
         (uint64_t)ru.ru_utime.tv_usec +
         (uint64_t)ru.ru_stime.tv_sec * 1000000u +
         (uint64_t)ru.ru_stime.tv_usec;
}

typedef struct idle_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *early;
  int ran;
} idle_t;

static void early_timer(uv_timer_t *t) {
  idle_t *s = t->data;
  /* Some work first, so the scheduler's idle handle has been started and
   * must have been stopped again for the loop to sleep. */
  assert_int_equal(uvp_promise_resolve(s->early, NULL, NULL), 0);
  uv_close((uv_handle_t *)t, NULL);
}

static void late_timer(uv_timer_t *t) { uv_close((uv_handle_t *)t, NULL); }

static void test_no_busy_spin_while_idle(void **state) {
  fixture_t *f = *state;
  idle_t s = {f->ctx, NULL, 0};
  iter_t it;
  uvp_promise_t *pending;
  assert_int_equal(uvp_promise_new(f->ctx, &pending), 0);
  assert_int_equal(uvp_promise_then(pending, count_cb, &s.ran, NULL), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &s.early), 0);
  for (int i = 0; i < 100; i++)
    assert_int_equal(uvp_promise_then(s.early, count_cb, &s.ran, NULL), 0);
  uv_timer_t t1, t2;
  uv_timer_init(&f->loop, &t1);
  uv_timer_init(&f->loop, &t2);
  t1.data = &s;
  uv_timer_start(&t1, early_timer, 10, 0);
  uv_timer_start(&t2, late_timer, 200, 0);
  iter_start(&f->loop, &it);

  uint64_t wall0 = uv_hrtime(), cpu0 = cpu_us();
  run_loop(f);
  uint64_t wall_us = (uv_hrtime() - wall0) / 1000, cpu = cpu_us() - cpu0;
  iter_stop(&it);
  run_loop(f);
  printf("idle 200 ms with a pending promise: wall %llu us, cpu %llu us, "
         "%lu loop iterations\n",
         (unsigned long long)wall_us, (unsigned long long)cpu, it.n);
  assert_int_equal(s.ran, 100);
  assert_true(wall_us >= 150000);
  /* A spinning loop would burn the whole 200 ms and iterate thousands of
   * times; a sleeping one needs a handful of iterations and a few ms. */
  assert_true(cpu < wall_us / 4);
  assert_true(it.n < 20);
  uvp_promise_release(pending);
  uvp_promise_release(s.early);
}

/* ---- the per-turn budget ------------------------------------------------- */

enum { LONG_CHAIN = 100000, TIMER_AT = 10 };

typedef struct starve_s {
  uvp_ctx_t *ctx;
  uv_timer_t timer;
  int steps;
  int at_fire;
} starve_t;

static void timer_fired(uv_timer_t *t) {
  starve_t *s = t->data;
  s->at_fire = s->steps;
}

static uvp_ret_t starve_step(void *arg, const uvp_outcome_t *in) {
  starve_t *s = arg;
  uvp_promise_t *q;
  (void)in;
  if (++s->steps == TIMER_AT)
    uv_timer_start(&s->timer, timer_fired, 0, 0);
  if (s->steps < LONG_CHAIN) {
    assert_int_equal(uvp_promise_resolved(s->ctx, NULL, NULL, &q), 0);
    assert_int_equal(uvp_promise_then(q, starve_step, s, NULL), 0);
    uvp_promise_release(q);
  }
  return uvp_ret_pass();
}

/* Run a LONG_CHAIN-step chain that starts a 0 ms timer at step TIMER_AT;
 * returns how many steps had run when the timer fired. */
static int steps_before_timer(fixture_t *f) {
  starve_t s;
  memset(&s, 0, sizeof(s));
  s.ctx = f->ctx;
  s.at_fire = -1;
  uv_timer_init(&f->loop, &s.timer);
  s.timer.data = &s;
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, starve_step, &s, NULL), 0);
  uvp_promise_release(p);
  run_loop(f);
  assert_int_equal(s.steps, LONG_CHAIN);
  uv_close((uv_handle_t *)&s.timer, NULL);
  run_loop(f);
  assert_true(s.at_fire >= TIMER_AT);
  return s.at_fire;
}

static void test_budget_lets_timers_in(void **state) {
  fixture_t *f = *state;
  /* Default budget 1024 per drain, two drains per iteration. */
  int at = steps_before_timer(f);
  printf("0 ms timer fired after %d of %d steps (default budget)\n", at,
         LONG_CHAIN);
  assert_true(at < LONG_CHAIN);
  assert_true(at <= TIMER_AT + 4 * 1024);

  assert_int_equal(uvp_ctx_set_budget(f->ctx, 16), 0);
  at = steps_before_timer(f);
  printf("0 ms timer fired after %d of %d steps (budget 16)\n", at, LONG_CHAIN);
  assert_true(at <= TIMER_AT + 4 * 16);

  /* A budget above the chain's length lets one drain run it all: the
   * budget is what made room for the timer. */
  assert_int_equal(uvp_ctx_set_budget(f->ctx, 2 * LONG_CHAIN), 0);
  at = steps_before_timer(f);
  assert_int_equal(at, LONG_CHAIN);
}

/* ---- a million steps by adoption ----------------------------------------- */

enum { DEEP = 1000000 };

typedef struct deep_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *cur; /* derived promise of the handler registered last */
  long steps;
  size_t max_live;
  uintptr_t sp_min, sp_max;
} deep_t;

static uvp_ret_t plus_one(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value((void *)((intptr_t)in->value + 1), NULL);
}

/* Step i (i = in->value): the next step is registered on our own derived
 * promise, which adopts a promise that settles only after another trip
 * through the scheduler. */
static uvp_ret_t deep_step(void *arg, const uvp_outcome_t *in) {
  deep_t *d = arg;
  volatile char marker = 0;
  uintptr_t sp = (uintptr_t)&marker;
  if (sp < d->sp_min)
    d->sp_min = sp;
  if (sp > d->sp_max)
    d->sp_max = sp;
  intptr_t v = (intptr_t)in->value;
  assert_int_equal(v, d->steps);
  d->steps++;
  if ((d->steps & 1023) == 0) {
    uvp_ctx_stats_t st;
    assert_int_equal(uvp_ctx_stats(d->ctx, &st), 0);
    if (st.live > d->max_live)
      d->max_live = st.live;
  }
  if (d->steps == DEEP)
    return uvp_ret_value((void *)v, NULL);
  uvp_promise_t *next, *q, *q2;
  assert_int_equal(uvp_promise_then(d->cur, deep_step, d, &next), 0);
  uvp_promise_release(d->cur);
  d->cur = next;
  assert_int_equal(uvp_promise_resolved(d->ctx, (void *)v, NULL, &q), 0);
  assert_int_equal(uvp_promise_then(q, plus_one, NULL, &q2), 0);
  uvp_promise_release(q);
  return uvp_ret_adopt(q2);
}

static void test_million_steps_constant_memory_and_stack(void **state) {
  fixture_t *f = *state;
  deep_t d;
  memset(&d, 0, sizeof(d));
  d.ctx = f->ctx;
  d.sp_min = UINTPTR_MAX;
  uvp_promise_t *p0;
  assert_int_equal(uvp_promise_resolved(f->ctx, (void *)0, NULL, &p0), 0);
  assert_int_equal(uvp_promise_then(p0, deep_step, &d, &d.cur), 0);
  uvp_promise_release(p0);
  uint64_t t0 = uv_hrtime();
  run_loop(f);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(d.steps, DEEP);
  /* The last derived promise fulfils with the last step's index. */
  assert_int_equal(uvp_promise_state(d.cur), UVP_FULFILLED);
  assert_int_equal((intptr_t)uvp_promise_value(d.cur), DEEP - 1);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  printf("%d adoption steps in %llu ms: at most %zu promises live, slabs "
         "%zu bytes, handler stack spread %zu bytes\n",
         DEEP, (unsigned long long)ms, d.max_live, st.slab_bytes,
         (size_t)(d.sp_max - d.sp_min));
  assert_true(d.max_live <= 16);
  assert_true(st.slab_bytes < 1024 * 1024);
  /* Every handler ran at the same depth, called from the scheduler. */
  assert_true(d.sp_max - d.sp_min < 64 * 1024);
  uvp_promise_release(d.cur);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

/* The opposite shape, JavaScript's `f = i => i && resolve().then(() =>
 * f(i - 1))`: each handler returns a promise that waits for the next, so
 * n promises wait on each other (memory grows, as in JavaScript); settling
 * the innermost one and freeing the outermost must still cost no stack. */
typedef struct nest_s {
  uvp_ctx_t *ctx;
  int left;
} nest_t;

static uvp_ret_t nest_step(void *arg, const uvp_outcome_t *in) {
  nest_t *n = arg;
  (void)in;
  if (n->left-- == 0)
    return uvp_ret_value((void *)(intptr_t)1234, NULL);
  uvp_promise_t *q, *d;
  assert_int_equal(uvp_promise_resolved(n->ctx, NULL, NULL, &q), 0);
  assert_int_equal(uvp_promise_then(q, nest_step, n, &d), 0);
  uvp_promise_release(q);
  return uvp_ret_adopt(d);
}

static void test_nested_adoption_constant_stack(void **state) {
  fixture_t *f = *state;
  enum { NEST = 200000 };
  nest_t n = {f->ctx, NEST};
  uvp_promise_t *p, *outer;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, nest_step, &n, &outer), 0);
  uvp_promise_release(p);
  run_loop(f);
  assert_int_equal(n.left, -1);
  assert_int_equal(uvp_promise_state(outer), UVP_FULFILLED);
  assert_int_equal((intptr_t)uvp_promise_value(outer), 1234);
  uvp_promise_release(outer);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

/* ---- observed adoption chains and the cycle check ------------------------ */

/* Found from outside (issue 40): each link of a chain built root first
 * (p[i] resolved with p[i-1]) observed by a handler's derived promise made
 * the cycle check walk the whole chain again for every link: 403 ms for
 * 2e4 links, 13 minutes for 1e6.  Both orders of building, each link
 * observed, must now cost O(1) a link; the whole chain then settles, every
 * handler once, with the root's value. */
static uvp_ret_t count_value(void *arg, const uvp_outcome_t *in) {
  long *seen = arg;
  assert_int_equal((intptr_t)in->value, 42);
  (*seen)++;
  return uvp_ret_pass();
}

static void observed_chain(fixture_t *f, long n, bool root_first) {
  uvp_promise_t **p = malloc(sizeof(*p) * (size_t)n);
  uvp_promise_t **d = malloc(sizeof(*d) * (size_t)n);
  assert_non_null(p);
  assert_non_null(d);
  long seen = 0;
  uint64_t t0 = uv_hrtime();
  for (long i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
    assert_int_equal(uvp_promise_then(p[i], count_value, &seen, &d[i]), 0);
    if (i == 0)
      continue;
    /* root first: the new link waits for the chain; else the chain's
     * last link waits for the new one, which becomes the root */
    if (root_first)
      assert_int_equal(uvp_promise_resolve_with(p[i], p[i - 1]), 0);
    else
      assert_int_equal(uvp_promise_resolve_with(p[i - 1], p[i]), 0);
  }
  uint64_t t1 = uv_hrtime();
  uvp_promise_t *root = root_first ? p[0] : p[n - 1];
  assert_int_equal(uvp_promise_resolve(root, (void *)(intptr_t)42, NULL), 0);
  run_loop(f);
  printf("%ld observed links, %s: built in %.1f ms\n", n,
         root_first ? "root first" : "root last", (t1 - t0) / 1e6);
  assert_int_equal(seen, n);
  for (long i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_state(d[i]), UVP_FULFILLED);
    uvp_promise_release(d[i]);
    uvp_promise_release(p[i]);
  }
  free(p);
  free(d);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

static void test_observed_chain_of_a_million(void **state) {
  fixture_t *f = *state;
  long n = RUNNING_ON_VALGRIND ? 100000 : 1000000;
  observed_chain(f, n, true);
  observed_chain(f, n, false);
}

/* The check over a tree with branches: p observed by handlers whose
 * derived promises are followed, adopted and observed in turn, three
 * levels deep.  p following any promise of its own tree is a cycle
 * (UVP_ECYCLE), wherever in the tree it sits and however long the chain
 * above it is; following a promise of another tree is not. */
enum { FAN = 3, DEPTH = 3 };

typedef struct tree_s {
  uvp_promise_t *nodes[128];
  int count;
} tree_t;

/* Under n: FAN derived promises, each also followed by a fresh promise
 * (an adoption), down to `depth` more levels; every promise recorded. */
static void grow(fixture_t *f, tree_t *t, uvp_promise_t *n, int depth) {
  if (depth == 0)
    return;
  for (int i = 0; i < FAN; i++) {
    uvp_promise_t *c, *a;
    assert_int_equal(uvp_promise_then(n, NULL, NULL, &c), 0);
    assert_int_equal(uvp_promise_new(f->ctx, &a), 0);
    assert_int_equal(uvp_promise_resolve_with(a, c), 0);
    assert_true(t->count + 2 <= 128);
    t->nodes[t->count++] = c;
    t->nodes[t->count++] = a;
    grow(f, t, i % 2 ? c : a, depth - 1);
  }
}

/* A chain of n derived promises below `from`; returns its last link (the
 * caller's reference) after letting go of the others. */
static uvp_promise_t *chain_below(uvp_promise_t *from, int n) {
  uvp_promise_t *link = from;
  for (int i = 0; i < n; i++) {
    uvp_promise_t *next;
    assert_int_equal(uvp_promise_then(link, NULL, NULL, &next), 0);
    if (link != from)
      uvp_promise_release(link);
    link = next;
  }
  return link;
}

static void release_tree(tree_t *t) {
  for (int j = 0; j < t->count; j++)
    uvp_promise_release(t->nodes[j]);
  t->count = 0;
}

static void test_cycle_check_over_a_tree(void **state) {
  fixture_t *f = *state;
  tree_t t = {{NULL}, 0}, other = {{NULL}, 0};
  uvp_promise_t *p, *q, *above, *x;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  grow(f, &t, p, DEPTH);
  /* Every promise of p's tree, and the end of a long chain hanging from
   * its last one (the walk up from there is long; the walk over the
   * tree must not give up before it). */
  for (int i = 0; i <= t.count; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &x), 0);
    assert_int_equal(uvp_promise_then(x, NULL, NULL, NULL), 0); /* observed */
    uvp_promise_t *in =
        i < t.count ? t.nodes[i] : chain_below(t.nodes[t.count - 1], 1000);
    assert_int_equal(uvp_promise_resolve_with(x, in), 0);
    if (i == t.count)
      uvp_promise_release(in);
    /* x now waits for a promise of p's tree: it is in that tree too */
    assert_int_equal(uvp_promise_resolve_with(p, x), 0);
    assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECYCLE);
    uvp_promise_release(x);
    uvp_promise_release(p);
    /* A fresh root with the same tree, for the next one. */
    release_tree(&t);
    assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
    grow(f, &t, p, DEPTH);
  }
  /* No cycle: the end of a long chain of another root (the walk over p's
   * tree answers first), then, for another root with the same tree, a
   * promise near the top of a third tree (the walk up answers first). */
  assert_int_equal(uvp_promise_new(f->ctx, &above), 0);
  uvp_promise_t *end = chain_below(above, 1000);
  assert_int_equal(uvp_promise_resolve_with(p, end), 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  grow(f, &other, q, DEPTH);
  uvp_promise_t *p2;
  tree_t t2 = {{NULL}, 0};
  assert_int_equal(uvp_promise_new(f->ctx, &p2), 0);
  grow(f, &t2, p2, DEPTH);
  assert_int_equal(uvp_promise_resolve_with(p2, other.nodes[0]), 0);
  assert_int_equal(uvp_promise_state(p2), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(above, NULL, NULL), 0);
  assert_int_equal(uvp_promise_resolve(q, NULL, NULL), 0);
  run_loop(f);
  tree_t *all[] = {&t, &t2, &other};
  for (int k = 0; k < 3; k++)
    for (int j = 0; j < all[k]->count; j++)
      assert_int_equal(uvp_promise_state(all[k]->nodes[j]), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(p2), UVP_FULFILLED);
  release_tree(&t);
  release_tree(&t2);
  release_tree(&other);
  uvp_promise_release(end);
  uvp_promise_release(above);
  uvp_promise_release(p);
  uvp_promise_release(p2);
  uvp_promise_release(q);
}

/* ---- re-entrancy --------------------------------------------------------- */

typedef struct reent_s {
  int inside;
  int inner_ran;
  uvp_promise_t *settled;
} reent_t;

static uvp_ret_t inner(void *arg, const uvp_outcome_t *in) {
  reent_t *r = arg;
  (void)in;
  assert_int_equal(r->inside, 0);
  r->inner_ran++;
  return uvp_ret_pass();
}

static uvp_ret_t outer(void *arg, const uvp_outcome_t *in) {
  reent_t *r = arg;
  r->inside = 1;
  /* On the promise being handled, and on another settled one. */
  assert_int_equal(uvp_promise_then(in->promise, inner, r, NULL), 0);
  assert_int_equal(uvp_promise_then(r->settled, inner, r, NULL), 0);
  assert_int_equal(uvp_promise_finally(r->settled, inner, r, NULL), 0);
  assert_int_equal(r->inner_ran, 0);
  r->inside = 0;
  return uvp_ret_pass();
}

static void test_then_inside_handler_runs_later(void **state) {
  fixture_t *f = *state;
  reent_t r = {0, 0, NULL};
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &r.settled), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, outer, &r, NULL), 0);
  run_loop(f);
  assert_int_equal(r.inner_ran, 3);
  uvp_promise_release(p);
  uvp_promise_release(r.settled);
}

/* Two contexts (two loops) driven by one thread, their promises settled
 * and released alternately: each settle lands in its own context's queue
 * and runs only when that loop runs, and closing one leaves the other
 * working. */
enum { TWO_N = 100 };

typedef struct two_s {
  uv_loop_t *expect; /* the loop whose turn it is */
  uv_loop_t *loops[2];
  int ran[2];
  int wrong_loop;
} two_t;

typedef struct two_arg_s {
  two_t *t;
  int side;
} two_arg_t;

static uvp_ret_t two_cb(void *arg, const uvp_outcome_t *in) {
  two_arg_t *a = arg;
  if (a->t->loops[a->side] != a->t->expect ||
      (intptr_t)in->value != a->t->ran[a->side])
    a->t->wrong_loop++;
  a->t->ran[a->side]++;
  return uvp_ret_value(NULL, NULL);
}

static void test_two_contexts_one_thread(void **state) {
  fixture_t *f = *state;
  uv_loop_t loop2;
  uvp_ctx_t *ctx2;
  assert_int_equal(uv_loop_init(&loop2), 0);
  assert_int_equal(uvp_ctx_new(&loop2, &ctx2), 0);
  two_t t = {NULL, {&f->loop, &loop2}, {0, 0}, 0};
  two_arg_t args[2] = {{&t, 0}, {&t, 1}};
  uvp_ctx_t *ctxs[2] = {f->ctx, ctx2};
  uvp_promise_t *ps[2][TWO_N];
  for (int i = 0; i < TWO_N; i++)
    for (int side = 0; side < 2; side++) {
      assert_int_equal(uvp_promise_new(ctxs[side], &ps[side][i]), 0);
      assert_int_equal(uvp_promise_then(ps[side][i], two_cb, &args[side], NULL),
                       0);
    }
  for (int i = 0; i < TWO_N; i++)
    for (int side = 0; side < 2; side++) {
      assert_int_equal(
          uvp_promise_resolve(ps[side][i], (void *)(intptr_t)i, NULL), 0);
      assert_int_equal(uvp_promise_resolve(ps[side][i], NULL, NULL),
                       UVP_ESETTLED);
      uvp_promise_release(ps[side][i]);
    }
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(ctx2, &st), 0);
  assert_int_equal(st.queued, TWO_N);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.queued, TWO_N);

  t.expect = &loop2;
  assert_int_equal(uv_run(&loop2, UV_RUN_DEFAULT), 0);
  assert_int_equal(t.ran[1], TWO_N);
  assert_int_equal(t.ran[0], 0);
  assert_int_equal(uvp_ctx_close(ctx2), 0);

  /* The first context after the second one closed. */
  uvp_promise_t *q;
  assert_int_equal(uvp_promise_new(f->ctx, &q), 0);
  assert_int_equal(uvp_promise_resolve(q, NULL, NULL), 0);
  uvp_promise_release(q);
  t.expect = &f->loop;
  run_loop(f);
  assert_int_equal(t.ran[0], TWO_N);
  assert_int_equal(t.wrong_loop, 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  assert_int_equal(uv_run(&loop2, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop2), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_pending_does_not_keep_loop_alive),
      cmocka_unit_test(test_default_loop_teardown),
      FIXTURE_TEST(test_fifo_and_never_synchronous),
      FIXTURE_TEST(test_settle_in_timer_cb),
      FIXTURE_TEST(test_settle_in_fs_cb),
      FIXTURE_TEST(test_settle_in_read_cb),
      FIXTURE_TEST(test_uv_stop_in_handler),
      FIXTURE_TEST(test_no_busy_spin_while_idle),
      FIXTURE_TEST(test_budget_lets_timers_in),
      FIXTURE_TEST(test_million_steps_constant_memory_and_stack),
      FIXTURE_TEST(test_nested_adoption_constant_stack),
      FIXTURE_TEST(test_observed_chain_of_a_million),
      QUIET_TEST(test_cycle_check_over_a_tree),
      FIXTURE_TEST(test_then_inside_handler_runs_later),
      FIXTURE_TEST(test_two_contexts_one_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
