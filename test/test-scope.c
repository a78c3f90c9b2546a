/* Scopes (uvp_scope_set/get/clear): request-scoped slots captured where a
 * handler is registered, a fiber spawned or a group member added, and
 * seen again when that code runs: three then()s down, across a fiber's
 * awaits, in a group member started much later, and when another thread
 * settled the promise.  A slot's value is let go of exactly once, when the
 * last scope holding it goes (the contexts' close included); setting a
 * slot inside a handler changes nothing for other handlers; errors.
 * Suites `structured` and `threads` (TSan: settles from other threads).
 *
 * Values are malloc'd boxes only their free_cb frees (helpers.h), so
 * valgrind and ASan catch a second run and a missing one; the counts say
 * when it ran.  Code on fibers and in handlers records what it saw and
 * the test asserts afterwards, on the loop's stack. */
#include <limits.h>
#include <stdatomic.h>

#include "alloc-helpers.h"

/* What some code saw of slots 0 and 1, in the order it looked. */
typedef struct seen_s {
  uvp_ctx_t *ctx;
  int n;
  void *slot0[16], *slot1[16];
} seen_t;

static void look(seen_t *s) {
  if (s->n < 16) {
    s->slot0[s->n] = uvp_scope_get(s->ctx, 0);
    s->slot1[s->n] = uvp_scope_get(s->ctx, 1);
  }
  s->n++;
}

static uvp_ret_t look_handler(void *arg, const uvp_outcome_t *in) {
  (void)in;
  look(arg);
  return uvp_ret_pass();
}

static void assert_saw(const seen_t *s, int k, const void *slot0,
                       const void *slot1) {
  assert_true(k < s->n);
  if (s->slot0[k] != slot0 || s->slot1[k] != slot1)
    fail_msg("look %d saw (%p, %p), want (%p, %p)", k, s->slot0[k], s->slot1[k],
             slot0, slot1);
}

/* A value whose free_cb counts into freed[i]. */
static int freed[8];
#define VAL(i) boxed_new((i), &freed[(i)])

static void set(uvp_ctx_t *ctx, unsigned slot, void *v) {
  assert_int_equal(uvp_scope_set(ctx, slot, v, boxed_free), 0);
}

static int setup(void **state) {
  memset(freed, 0, sizeof(freed));
  return fixture_setup(state);
}

#define STEST(fn) FIXTURE_TEST_WITH(fn, setup, fixture_teardown)

/* ---- set, get, clear ----------------------------------------------------- */

static void test_set_get_clear(void **state) {
  fixture_t *f = *state;
  boxed_t *a = VAL(0), *b = VAL(1), *c = VAL(2);
  for (unsigned i = 0; i < UVP_SCOPE_SLOTS; i++)
    assert_null(uvp_scope_get(f->ctx, i));
  set(f->ctx, 0, a);
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), a);
  assert_null(uvp_scope_get(f->ctx, 1));
  set(f->ctx, 1, b);
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), a);
  assert_ptr_equal(uvp_scope_get(f->ctx, 1), b);
  /* Replaced, and held by no other scope: let go of at once. */
  set(f->ctx, 0, c);
  assert_int_equal(freed[0], 1);
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), c);
  assert_ptr_equal(uvp_scope_get(f->ctx, 1), b);
  /* No value, no notifier: the slot is unset. */
  assert_int_equal(uvp_scope_set(f->ctx, 0, NULL, NULL), 0);
  assert_int_equal(freed[2], 1);
  assert_null(uvp_scope_get(f->ctx, 0));
  assert_ptr_equal(uvp_scope_get(f->ctx, 1), b);
  /* The last slot works like the first; a value without a notifier is
   * just stored. */
  assert_int_equal(
      uvp_scope_set(f->ctx, UVP_SCOPE_SLOTS - 1, SENTINEL(3), NULL), 0);
  assert_ptr_equal(uvp_scope_get(f->ctx, UVP_SCOPE_SLOTS - 1), SENTINEL(3));
  assert_null(uvp_scope_get(f->ctx, UVP_SCOPE_SLOTS)); /* out of range */
  assert_null(uvp_scope_get(f->ctx, UINT_MAX));
  assert_null(uvp_scope_get(NULL, 0));
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(freed[1], 1);
  for (unsigned i = 0; i < UVP_SCOPE_SLOTS; i++)
    assert_null(uvp_scope_get(f->ctx, i));
  assert_int_equal(uvp_scope_clear(f->ctx), 0); /* clearing nothing */
  assert_int_equal(freed[0] + freed[1] + freed[2], 3);
}

/* ---- errors -------------------------------------------------------------- */

static void test_errors(void **state) {
  fixture_t *f = *state;
  static int nfree;
  nfree = 0;
  boxed_t *held = VAL(1), *top = VAL(0);
  /* Each refusal frees its value at once (uvp.h, "Handing over"). */
  assert_int_equal(
      uvp_scope_set(f->ctx, UVP_SCOPE_SLOTS, boxed_new(5, &nfree), boxed_free),
      UV_EINVAL);
  assert_int_equal(
      uvp_scope_set(f->ctx, (unsigned)-1, boxed_new(5, &nfree), boxed_free),
      UV_EINVAL);
  assert_int_equal(uvp_scope_set(NULL, 0, boxed_new(5, &nfree), boxed_free),
                   UV_EINVAL);
  assert_int_equal(uvp_scope_clear(NULL), UV_EINVAL);
  assert_null(uvp_scope_get(NULL, 0));
  assert_null(uvp_scope_get(f->ctx, UVP_SCOPE_SLOTS));
  assert_int_equal(nfree, 3);

  /* Closing the context lets go of the current scope and of those its
   * dropped handlers held, each value once. */
  uvp_promise_t *p;
  seen_t s = {.ctx = f->ctx};
  set(f->ctx, 1, held);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, look_handler, &s, NULL), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  set(f->ctx, 0, top);
  assert_int_equal(freed[0] + freed[1], 0);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  assert_int_equal(freed[0], 1);
  assert_int_equal(freed[1], 1);
  assert_int_equal(s.n, 0);
  assert_int_equal(uvp_scope_set(f->ctx, 0, boxed_new(5, &nfree), boxed_free),
                   UVP_ECLOSED);
  assert_int_equal(uvp_scope_clear(f->ctx), UVP_ECLOSED);
  assert_null(uvp_scope_get(f->ctx, 0));
  assert_int_equal(nfree, 4);
  uvp_promise_release(p);
  f->ctx = NULL;
}

/* Closed from inside a handler: the handler's slots, the slots current
 * outside and those of handlers never run all go, once each. */
typedef struct closer_s {
  uvp_ctx_t *ctx;
  boxed_t *b;
  int set_rc, close_rc;
} closer_t;

static uvp_ret_t closing_handler(void *arg, const uvp_outcome_t *in) {
  closer_t *c = arg;
  (void)in;
  c->set_rc = uvp_scope_set(c->ctx, 1, c->b, boxed_free);
  c->close_rc = uvp_ctx_close(c->ctx);
  return uvp_ret_pass();
}

static void test_close_in_handler(void **state) {
  fixture_t *f = *state;
  static closer_t c;
  boxed_t *a = VAL(0), *t = VAL(2);
  uvp_promise_t *p, *never;
  seen_t s = {.ctx = f->ctx};
  c = (closer_t){.ctx = f->ctx, .b = VAL(1)};
  set(f->ctx, 0, a);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_then(p, closing_handler, &c, NULL), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &never), 0);
  assert_int_equal(uvp_promise_then(never, look_handler, &s, NULL), 0);
  set(f->ctx, 0, t);
  run_loop(f);
  assert_int_equal(c.set_rc, 0);
  assert_int_equal(c.close_rc, 0);
  assert_int_equal(s.n, 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(freed[i], 1);
  uvp_promise_release(p);
  uvp_promise_release(never);
  f->ctx = NULL;
}

/* Off the loop thread (with the check on), setting and clearing fail and
 * change nothing: the loop thread's slots stay, the value stays ours. */
typedef struct offthread_s {
  uvp_ctx_t *ctx;
  int set_rc, clear_rc;
  int nfree;
} offthread_t;

static void offthread_main(void *arg) {
  offthread_t *o = arg;
  boxed_t *v = boxed_new(9, &o->nfree);
  o->set_rc = uvp_scope_set(o->ctx, 0, v, boxed_free); /* or freed */
  o->clear_rc = uvp_scope_clear(o->ctx);
}

static void test_other_thread(void **state) {
  fixture_t *f = *state;
  offthread_t o = {.ctx = f->ctx};
  uv_thread_t tid;
  boxed_t *mine = VAL(0);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  set(f->ctx, 0, mine);
  assert_int_equal(uv_thread_create(&tid, offthread_main, &o), 0);
  assert_int_equal(uv_thread_join(&tid), 0);
  assert_int_equal(o.set_rc, UVP_ETHREAD);
  assert_int_equal(o.clear_rc, UVP_ETHREAD);
  assert_int_equal(o.nfree, 1); /* freed by the refusal, on that thread */
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), mine);
  assert_int_equal(freed[0], 0);
}

/* ---- handlers ------------------------------------------------------------ */

/* A chain registered under A, settled from a libuv callback of the test's
 * where other slots are current: every step sees A; a handler registered
 * inside the chain sees A too, whoever settles its promise. */
typedef struct chain_s {
  seen_t seen;    /* the chain's three handlers, then the inner one */
  seen_t outside; /* the timer's callback */
  uvp_promise_t *p, *inner;
  boxed_t *c;
  uv_timer_t timer;
} chain_t;

static uvp_ret_t middle_handler(void *arg, const uvp_outcome_t *in) {
  chain_t *ch = arg;
  (void)in;
  look(&ch->seen);
  if (uvp_promise_new(ch->seen.ctx, &ch->inner) == 0 &&
      uvp_promise_then(ch->inner, look_handler, &ch->seen, NULL) != 0)
    ch->seen.n += 100;
  return uvp_ret_pass();
}

static void chain_timer(uv_timer_t *t) {
  chain_t *ch = t->data;
  look(&ch->outside); /* the last scope set out here: the test's B */
  (void)uvp_scope_set(ch->seen.ctx, 0, ch->c, boxed_free);
  (void)uvp_promise_resolve(ch->p, NULL, NULL);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_three_thens_down(void **state) {
  fixture_t *f = *state;
  static chain_t ch;
  boxed_t *a = VAL(0), *b = VAL(1), *d = VAL(3);
  uvp_promise_t *d1, *d2, *d3;
  memset(&ch, 0, sizeof(ch));
  ch.seen.ctx = ch.outside.ctx = f->ctx;
  ch.c = VAL(2);
  set(f->ctx, 0, a);
  assert_int_equal(uvp_promise_new(f->ctx, &ch.p), 0);
  assert_int_equal(uvp_promise_then(ch.p, look_handler, &ch.seen, &d1), 0);
  assert_int_equal(uvp_promise_then(d1, middle_handler, &ch, &d2), 0);
  assert_int_equal(uvp_promise_then(d2, look_handler, &ch.seen, &d3), 0);
  set(f->ctx, 0, b);
  assert_int_equal(freed[0], 0); /* the handlers hold it */
  assert_int_equal(uv_timer_init(&f->loop, &ch.timer), 0);
  ch.timer.data = &ch;
  assert_int_equal(uv_timer_start(&ch.timer, chain_timer, 1, 0), 0);
  run_loop(f);
  assert_int_equal(ch.outside.n, 1);
  assert_saw(&ch.outside, 0, b, NULL);
  assert_int_equal(ch.seen.n, 3);
  for (int k = 0; k < 3; k++)
    assert_saw(&ch.seen, k, a, NULL);
  assert_int_equal(freed[1], 1);                    /* B: replaced by C */
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), ch.c); /* set out there */
  assert_int_equal(freed[0], 0); /* the inner handler holds A */
  set(f->ctx, 0, d);
  assert_int_equal(uvp_promise_resolve(ch.inner, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(ch.seen.n, 4);
  assert_saw(&ch.seen, 3, a, NULL);
  assert_int_equal(freed[0], 1); /* the last scope holding A went */
  assert_int_equal(freed[2], 1);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(freed[3], 1);
  uvp_promise_release(ch.p);
  uvp_promise_release(ch.inner);
  uvp_promise_release(d1);
  uvp_promise_release(d2);
  uvp_promise_release(d3);
}

/* A handler that sets or clears slots changes them for itself and what it
 * registers, not for the handlers after it nor for the loop outside. */
typedef struct setter_s {
  seen_t seen;
  boxed_t *x;
  uvp_promise_t *q;
  seen_t later;
} setter_t;

static uvp_ret_t setting_handler(void *arg, const uvp_outcome_t *in) {
  setter_t *st = arg;
  (void)in;
  look(&st->seen);
  if (uvp_scope_set(st->seen.ctx, 0, st->x, boxed_free) != 0)
    st->seen.n += 100;
  look(&st->seen);
  if (uvp_promise_then(st->q, look_handler, &st->later, NULL) != 0)
    st->seen.n += 100;
  return uvp_ret_pass();
}

static uvp_ret_t clearing_handler(void *arg, const uvp_outcome_t *in) {
  seen_t *s = arg;
  (void)in;
  if (uvp_scope_clear(s->ctx) != 0)
    s->n += 100;
  look(s);
  return uvp_ret_pass();
}

static void test_set_in_handler_stays_there(void **state) {
  fixture_t *f = *state;
  static setter_t st;
  boxed_t *a = VAL(0), *b = VAL(1), *t = VAL(2);
  uvp_promise_t *p;
  memset(&st, 0, sizeof(st));
  st.seen.ctx = st.later.ctx = f->ctx;
  st.x = VAL(3);
  set(f->ctx, 0, a);
  set(f->ctx, 1, b);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &st.q), 0);
  assert_int_equal(uvp_promise_then(p, setting_handler, &st, NULL), 0);
  assert_int_equal(uvp_promise_then(p, clearing_handler, &st.seen, NULL), 0);
  assert_int_equal(uvp_promise_then(p, look_handler, &st.seen, NULL), 0);
  set(f->ctx, 0, t);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(st.seen.n, 4);
  assert_saw(&st.seen, 0, a, b);       /* before its set */
  assert_saw(&st.seen, 1, st.x, b);    /* after it */
  assert_saw(&st.seen, 2, NULL, NULL); /* the clearing handler */
  assert_saw(&st.seen, 3, a, b);       /* the next one */
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), t);
  assert_ptr_equal(uvp_scope_get(f->ctx, 1), b);
  assert_int_equal(freed[3], 0); /* the handler on q holds X */
  assert_int_equal(uvp_promise_resolve(st.q, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(st.later.n, 1);
  assert_saw(&st.later, 0, st.x, b);
  assert_int_equal(freed[3], 1);
  assert_int_equal(freed[0], 1);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(freed[i], 1);
  uvp_promise_release(p);
  uvp_promise_release(st.q);
}

/* ---- fibers -------------------------------------------------------------- */

typedef struct fib_s {
  seen_t seen, inner_seen, handler_seen;
  boxed_t *f3, *y;
  uvp_promise_t *gate; /* resolved by a handler registered outside */
  int bad;
} fib_t;

static uvp_ret_t inner_body(void *arg) {
  fib_t *fb = arg;
  uvp_promise_t *d;
  look(&fb->inner_seen);
  fb->bad += uvp_scope_set(fb->seen.ctx, 1, fb->y, boxed_free) != 0;
  fb->bad += uvp_delay(fb->seen.ctx, 1, NULL, NULL, UVP_KEEP_ALIVE, &d) != 0;
  fb->bad += uvp_await(d, NULL) != 0;
  uvp_promise_release(d);
  look(&fb->inner_seen);
  return uvp_ret_pass();
}

static uvp_ret_t outer_body(void *arg) {
  fib_t *fb = arg;
  uvp_ctx_t *ctx = fb->seen.ctx;
  uvp_promise_t *d, *inner;
  look(&fb->seen);
  fb->bad += uvp_delay(ctx, 1, NULL, NULL, UVP_KEEP_ALIVE, &d) != 0;
  fb->bad += uvp_await(d, NULL) != 0;
  uvp_promise_release(d);
  look(&fb->seen);
  fb->bad += uvp_scope_set(ctx, 0, fb->f3, boxed_free) != 0;
  look(&fb->seen);
  fb->bad += uvp_await(fb->gate, NULL) != 0;
  look(&fb->seen);
  fb->bad += uvp_fiber_spawn(ctx, inner_body, fb, NULL, &inner) != 0;
  fb->bad += uvp_await(inner, NULL) != 0;
  uvp_promise_release(inner);
  look(&fb->seen); /* the inner fiber's set stayed there */
  return uvp_ret_pass();
}

static uvp_ret_t open_gate(void *arg, const uvp_outcome_t *in) {
  fib_t *fb = arg;
  (void)in;
  look(&fb->handler_seen);
  (void)uvp_promise_resolve(fb->gate, NULL, NULL);
  return uvp_ret_pass();
}

static void test_fiber_across_awaits(void **state) {
  fixture_t *f = *state;
  static fib_t fb;
  boxed_t *f1 = VAL(0), *f2 = VAL(1);
  uvp_promise_t *fp, *tick;
  memset(&fb, 0, sizeof(fb));
  fb.seen.ctx = fb.inner_seen.ctx = fb.handler_seen.ctx = f->ctx;
  fb.f3 = VAL(2);
  fb.y = VAL(3);
  assert_int_equal(uvp_promise_new(f->ctx, &fb.gate), 0);
  set(f->ctx, 0, f1);
  assert_int_equal(uvp_fiber_spawn(f->ctx, outer_body, &fb, NULL, &fp), 0);
  set(f->ctx, 0, f2);
  /* Runs between the fiber's steps, under F2. */
  assert_int_equal(uvp_delay(f->ctx, 5, NULL, NULL, UVP_KEEP_ALIVE, &tick), 0);
  assert_int_equal(uvp_promise_then(tick, open_gate, &fb, NULL), 0);
  run_loop(f);
  assert_int_equal(fb.bad, 0);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_int_equal(fb.seen.n, 5);
  assert_saw(&fb.seen, 0, f1, NULL);
  assert_saw(&fb.seen, 1, f1, NULL);
  assert_saw(&fb.seen, 2, fb.f3, NULL);
  assert_saw(&fb.seen, 3, fb.f3, NULL);
  assert_saw(&fb.seen, 4, fb.f3, NULL);
  assert_int_equal(fb.inner_seen.n, 2);
  assert_saw(&fb.inner_seen, 0, fb.f3, NULL);
  assert_saw(&fb.inner_seen, 1, fb.f3, fb.y);
  assert_int_equal(fb.handler_seen.n, 1);
  assert_saw(&fb.handler_seen, 0, f2, NULL);
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), f2);
  /* Each value once, as its last holder went: F1 at the fiber's own set,
   * F3 and Y when the fibers ended; F2 is still current. */
  assert_int_equal(freed[0], 1);
  assert_int_equal(freed[1], 0);
  assert_int_equal(freed[2], 1);
  assert_int_equal(freed[3], 1);
  uvp_promise_release(fp);
  uvp_promise_release(tick);
  uvp_promise_release(fb.gate);
}

/* ---- group members ------------------------------------------------------- */

/* Members start in the slots current when they were added (not when the
 * group was made, nor when room came), and what they start is still the
 * group's: the join waits for a timer a member left running. */
typedef struct gm_s {
  uvp_ctx_t *ctx;
  seen_t seen;
  uvp_promise_t *first; /* the first member's promise, ours */
  uvp_promise_t *q;     /* a handler registered by the first member */
  seen_t q_seen;
  int bad;
} gm_t;

static int first_start(void *arg, uvp_promise_t **out) {
  gm_t *g = arg;
  look(&g->seen);
  g->bad += uvp_promise_new(g->ctx, &g->q) != 0;
  g->bad += uvp_promise_then(g->q, look_handler, &g->q_seen, NULL) != 0;
  g->bad += uvp_promise_new(g->ctx, &g->first) != 0;
  *out = uvp_promise_retain(g->first);
  return 0;
}

static uvp_ret_t member_fiber(void *arg) {
  gm_t *g = arg;
  uvp_promise_t *d;
  look(&g->seen);
  g->bad += uvp_delay(g->ctx, 1, NULL, NULL, UVP_KEEP_ALIVE, &d) != 0;
  g->bad += uvp_await(d, NULL) != 0;
  uvp_promise_release(d);
  look(&g->seen);
  return uvp_ret_pass();
}

static int last_start(void *arg, uvp_promise_t **out) {
  gm_t *g = arg;
  uvp_promise_t *d;
  look(&g->seen);
  /* Left running: the group waits for it. */
  g->bad += uvp_delay(g->ctx, 20, NULL, NULL, UVP_KEEP_ALIVE, &d) != 0;
  uvp_promise_release(d);
  return uvp_promise_resolved(g->ctx, NULL, NULL, out);
}

static void count_timer(uv_handle_t *h, void *arg) {
  *(int *)arg += h->type == UV_TIMER;
}

static void test_group_members(void **state) {
  fixture_t *f = *state;
  static gm_t g;
  boxed_t *g1 = VAL(0), *g2 = VAL(1), *g3 = VAL(2), *g4 = VAL(3), *g5 = VAL(4);
  uvp_group_t *grp;
  uvp_group_opts_t o = {1, 0, 0};
  uvp_promise_t *join;
  int timers = 0;
  memset(&g, 0, sizeof(g));
  g.ctx = g.seen.ctx = g.q_seen.ctx = f->ctx;
  set(f->ctx, 0, g1);
  assert_int_equal(uvp_group_new(f->ctx, &o, &grp), 0);
  assert_int_equal(uvp_group_join(grp, &join), 0);
  set(f->ctx, 0, g2);
  assert_int_equal(uvp_group_start(grp, first_start, &g, NULL), 0);
  assert_int_equal(g.seen.n, 1); /* there was room: started in the call */
  set(f->ctx, 0, g3);
  assert_int_equal(uvp_group_spawn(grp, member_fiber, &g, NULL), 0);
  set(f->ctx, 0, g4);
  assert_int_equal(uvp_group_start(grp, last_start, &g, NULL), 0);
  assert_int_equal(uvp_group_close(grp), 0);
  set(f->ctx, 0, g5);
  run_loop(f);
  assert_int_equal(g.seen.n, 1); /* the rest wait for room */
  assert_int_equal(uvp_promise_resolve(g.q, NULL, NULL), 0);
  assert_int_equal(uvp_promise_resolve(g.first, NULL, NULL), 0);
  (void)uv_run(&f->loop, UV_RUN_NOWAIT);
  run_until_settled(f, join);
  uv_walk(&f->loop, count_timer, &timers);
  assert_int_equal(timers, 0); /* the join waited for the member's timer */
  assert_int_equal(g.bad, 0);
  assert_int_equal(g.seen.n, 4);
  assert_saw(&g.seen, 0, g2, NULL);
  assert_saw(&g.seen, 1, g3, NULL);
  assert_saw(&g.seen, 2, g3, NULL);
  assert_saw(&g.seen, 3, g4, NULL);
  assert_int_equal(g.q_seen.n, 1);
  assert_saw(&g.q_seen, 0, g2, NULL);
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), g5);
  uvp_promise_release(join);
  uvp_promise_release(g.first);
  uvp_promise_release(g.q);
  uvp_group_release(grp);
  run_loop(f);
  for (int i = 0; i < 4; i++)
    assert_int_equal(freed[i], 1);
  assert_int_equal(freed[4], 0);
}

/* uvp_scope_clear inside a member empties the slots, not the member's
 * group: a timer it starts afterwards and leaves running is still the
 * group's, so the join waits for it (it used to settle at once, with the
 * timer still on the loop). */
static uvp_ret_t clearing_member(void *arg) {
  gm_t *c = arg;
  uvp_promise_t *d;
  look(&c->seen);
  c->bad += uvp_scope_clear(c->ctx) != 0;
  look(&c->seen);
  c->bad += uvp_delay(c->ctx, 20, NULL, NULL, UVP_KEEP_ALIVE, &d) != 0;
  uvp_promise_release(d);
  return uvp_ret_pass();
}

static void test_clear_in_member_keeps_group(void **state) {
  fixture_t *f = *state;
  static gm_t c;
  boxed_t *v = VAL(0);
  uvp_group_t *grp;
  uvp_promise_t *join;
  int timers = 0;
  memset(&c, 0, sizeof(c));
  c.ctx = c.seen.ctx = f->ctx;
  set(f->ctx, 0, v);
  assert_int_equal(uvp_group_new(f->ctx, NULL, &grp), 0);
  assert_int_equal(uvp_group_spawn(grp, clearing_member, &c, NULL), 0);
  assert_int_equal(uvp_group_close(grp), 0);
  assert_int_equal(uvp_group_join(grp, &join), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  run_until_settled(f, join);
  uv_walk(&f->loop, count_timer, &timers);
  assert_int_equal(timers, 0); /* the join waited for the timer */
  assert_int_equal(c.bad, 0);
  assert_int_equal(c.seen.n, 2);
  assert_saw(&c.seen, 0, v, NULL);
  assert_saw(&c.seen, 1, NULL, NULL);
  uvp_promise_release(join);
  uvp_group_release(grp);
  run_loop(f);
  assert_int_equal(freed[0], 1);
}

/* ---- a value goes with the last scope holding it ------------------------- */

typedef struct holder_s {
  seen_t seen;
  uvp_promise_t *wait;
} holder_t;

static uvp_ret_t holder_body(void *arg) {
  holder_t *h = arg;
  (void)uvp_await(h->wait, NULL);
  look(&h->seen);
  return uvp_ret_pass();
}

static void test_value_freed_with_last_scope(void **state) {
  fixture_t *f = *state;
  static holder_t h;
  boxed_t *v = VAL(0), *w = VAL(1), *x = VAL(2), *y = VAL(3);
  uvp_promise_t *p1, *p2, *p4, *fp;
  seen_t s = {.ctx = f->ctx};
  memset(&h, 0, sizeof(h));
  h.seen.ctx = f->ctx;
  set(f->ctx, 0, v);
  assert_int_equal(uvp_promise_new(f->ctx, &p1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p2), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &h.wait), 0);
  assert_int_equal(uvp_promise_then(p1, look_handler, &s, NULL), 0);
  assert_int_equal(uvp_promise_then(p2, look_handler, &s, NULL), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, holder_body, &h, NULL, &fp), 0);
  set(f->ctx, 0, w);
  run_loop(f);
  assert_int_equal(freed[0], 0);
  assert_int_equal(uvp_promise_resolve(p1, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(s.n, 1);
  assert_saw(&s, 0, v, NULL);
  assert_int_equal(freed[0], 0); /* p2's handler and the fiber */
  uvp_promise_release(p2);       /* its handler will never run */
  assert_int_equal(freed[0], 0);
  assert_int_equal(uvp_promise_resolve(h.wait, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(h.seen.n, 1);
  assert_saw(&h.seen, 0, v, NULL);
  assert_int_equal(freed[0], 1);
  assert_int_equal(s.n, 1);

  /* A handler registered after two sets holds both values. */
  set(f->ctx, 0, x);
  assert_int_equal(freed[1], 1); /* W replaced, held by nobody */
  set(f->ctx, 1, y);
  assert_int_equal(uvp_promise_new(f->ctx, &p4), 0);
  assert_int_equal(uvp_promise_then(p4, look_handler, &s, NULL), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(freed[2] + freed[3], 0);
  assert_int_equal(uvp_promise_resolve(p4, NULL, NULL), 0);
  run_loop(f);
  assert_saw(&s, 1, x, y);
  assert_int_equal(freed[2], 1);
  assert_int_equal(freed[3], 1);
  uvp_promise_release(p1);
  uvp_promise_release(p4);
  uvp_promise_release(fp);
  uvp_promise_release(h.wait);
}

/* ---- settled from other threads ------------------------------------------ */

/* Each promise is registered under a slot of its own and resolved from one
 * of four threads, in a shuffled order, while the loop thread runs under
 * yet another: every handler sees the slot it was registered under; a
 * fiber sees its own after an await another thread ended. */
enum { XTHREADS = 4 };
#define TAG(i) ((void *)(uintptr_t)(0x1000 + (i)))

typedef struct xrec_s {
  uvp_ctx_t *ctx;
  uv_thread_t loop_thread;
  void *saw;
  int calls, off_loop;
} xrec_t;

typedef struct xrun_s {
  uvp_ctx_t *ctx;
  size_t n;
  uvp_promise_t **p;
  int thread;
  uint64_t seed;
  int set_rc;
  uv_async_t *done;
  atomic_int *left;
} xrun_t;

static uvp_ret_t xrec_handler(void *arg, const uvp_outcome_t *in) {
  xrec_t *r = arg;
  uv_thread_t self = uv_thread_self();
  (void)in;
  r->saw = uvp_scope_get(r->ctx, 0);
  r->calls++;
  r->off_loop += !uv_thread_equal(&self, &r->loop_thread);
  return uvp_ret_pass();
}

static void xthread_main(void *arg) {
  xrun_t *x = arg;
  size_t *order = malloc(x->n * sizeof(*order));
  test_rng_t rng = {x->seed};
  if (order == NULL)
    abort();
  test_permutation(&rng, order, x->n);
  /* What this thread does to slots cannot reach the loop thread. */
  x->set_rc = uvp_scope_set(x->ctx, 0, SENTINEL(1), NULL);
  for (size_t k = 0; k < x->n; k++)
    if (order[k] % XTHREADS == (size_t)x->thread) {
      (void)uvp_promise_resolve(x->p[order[k]], TAG(order[k]), NULL);
      if (k % 64 == 0)
        uv_sleep(1);
    }
  free(order);
  if (atomic_fetch_sub(x->left, 1) == 1)
    uv_async_send(x->done);
}

typedef struct xfiber_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *wait;
  void *before, *after;
} xfiber_t;

static uvp_ret_t xfiber_body(void *arg) {
  xfiber_t *x = arg;
  x->before = uvp_scope_get(x->ctx, 0);
  (void)uvp_await(x->wait, NULL);
  x->after = uvp_scope_get(x->ctx, 0);
  return uvp_ret_pass();
}

static void close_async(uv_async_t *a) { uv_close((uv_handle_t *)a, NULL); }

static void test_cross_thread_settle(void **state) {
  fixture_t *f = *state;
  static xrun_t runs[XTHREADS];
  static xrec_t *recs;
  static uvp_promise_t **p;
  static xfiber_t xf;
  static atomic_int left;
  static uv_async_t done;
  size_t n = 2000;
  uint64_t seed = test_seed(0x5c09e);
  uv_thread_t tids[XTHREADS];
  uvp_promise_t *fp;
  print_message("seed %llu, %zu promises\n", (unsigned long long)seed, n);
  recs = calloc(n, sizeof(*recs));
  p = calloc(n + 1, sizeof(*p));
  assert_true(recs != NULL && p != NULL);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(uvp_scope_set(f->ctx, 0, TAG(i), NULL), 0);
    recs[i] = (xrec_t){.ctx = f->ctx, .loop_thread = uv_thread_self()};
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
    assert_int_equal(uvp_promise_then(p[i], xrec_handler, &recs[i], NULL), 0);
  }
  /* A fiber waiting for the last promise, under a slot of its own. */
  xf = (xfiber_t){.ctx = f->ctx, .wait = p[n - 1]};
  assert_int_equal(uvp_scope_set(f->ctx, 0, SENTINEL(2), NULL), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, xfiber_body, &xf, NULL, &fp), 0);
  assert_int_equal(uvp_scope_set(f->ctx, 0, SENTINEL(3), NULL), 0);
  run_loop(f); /* the fiber waits */
  assert_int_equal(uv_async_init(&f->loop, &done, close_async), 0);
  atomic_store(&left, XTHREADS);
  for (int t = 0; t < XTHREADS; t++) {
    runs[t] = (xrun_t){.ctx = f->ctx,
                       .n = n,
                       .p = p,
                       .thread = t,
                       .seed = seed + (uint64_t)t,
                       .done = &done,
                       .left = &left};
    assert_int_equal(uv_thread_create(&tids[t], xthread_main, &runs[t]), 0);
  }
  /* Until the last thread's async closes `done`: what the threads posted
   * before it has run by then (test_mail_before_a_signal_is_read). */
  run_loop(f);
  for (int t = 0; t < XTHREADS; t++) {
    assert_int_equal(uv_thread_join(&tids[t]), 0);
    assert_int_equal(runs[t].set_rc, UVP_ETHREAD);
  }
  for (size_t i = 0; i < n; i++) {
    if (recs[i].calls != 1 || recs[i].saw != TAG(i) || recs[i].off_loop)
      fail_msg("promise %zu: %d calls, saw %p (want %p), %d off the loop", i,
               recs[i].calls, recs[i].saw, TAG(i), recs[i].off_loop);
    assert_ptr_equal(uvp_promise_value(p[i]), TAG(i));
  }
  assert_ptr_equal(xf.before, SENTINEL(2));
  assert_ptr_equal(xf.after, SENTINEL(2));
  assert_ptr_equal(uvp_scope_get(f->ctx, 0), SENTINEL(3));
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  uvp_promise_release(fp);
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(p[i]);
  free(recs);
  free(p);
}

/* ---- allocation failure -------------------------------------------------- */

static int sa_made, sa_freed, sa_bad;

static void sa_free(void *v) {
  sa_freed++;
  free(v);
}

/* Set slot `slot` to a new value; on failure the value is freed at once
 * (uvp.h, "Handing over"). */
static void sa_set(uvp_ctx_t *ctx, unsigned slot) {
  void *v = malloc(1);
  if (v == NULL)
    abort();
  sa_made++;
  int rc = uvp_scope_set(ctx, slot, v, sa_free);
  sa_bad += rc != 0 && rc != UV_ENOMEM;
}

static uvp_ret_t sa_then(void *arg, const uvp_outcome_t *in) {
  (void)in;
  sa_set(arg, 1);
  return uvp_ret_pass();
}

static uvp_ret_t sa_fiber(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_promise_t *p;
  sa_set(ctx, 2);
  if (uvp_promise_resolved(ctx, NULL, NULL, &p) == 0) {
    (void)uvp_await(p, NULL);
    uvp_promise_release(p);
  }
  sa_set(ctx, 3);
  return uvp_ret_pass();
}

/* Every set either works or says UV_ENOMEM and leaves the value to the
 * caller; each value is let go of once, none is leaked. */
static void scenario_scope(run_t *r) {
  uvp_promise_t *p = NULL, *fp = NULL;
  sa_made = sa_freed = 0;
  sa_set(r->ctx, 0);
  sa_set(r->ctx, 1);
  if (uvp_promise_resolved(r->ctx, NULL, NULL, &p) == 0)
    OK_OR_ENOMEM(uvp_promise_then(p, sa_then, r->ctx, NULL));
  OK_OR_ENOMEM(uvp_fiber_spawn(r->ctx, sa_fiber, r->ctx, NULL, &fp));
  sa_set(r->ctx, 0);
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uvp_scope_clear(r->ctx), 0);
  assert_int_equal(sa_freed, sa_made);
  uvp_promise_release(p);
  uvp_promise_release(fp);
}

static void test_alloc_fail(void **state) {
  (void)state;
  sa_bad = 0;
  long sites = exhaust(scenario_scope);
  print_message("%ld allocations\n", sites);
  assert_int_equal(sa_bad, 0);
  assert_true(sites >= 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* First: the allocator is replaced while no context exists. */
      cmocka_unit_test(test_alloc_fail),
      STEST(test_set_get_clear),
      STEST(test_errors),
      STEST(test_close_in_handler),
      STEST(test_other_thread),
      STEST(test_three_thens_down),
      STEST(test_set_in_handler_stays_there),
      STEST(test_fiber_across_awaits),
      STEST(test_group_members),
      STEST(test_clear_in_member_keeps_group),
      STEST(test_value_freed_with_last_scope),
      STEST(test_cross_thread_settle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
