/* Fibers through the public API (uvp_fiber_spawn, uvp_await): outcomes
 * both ways; when a fiber starts and resumes relative to handlers, other
 * fibers, timers, I/O and other threads; await's immediate errors;
 * cancellation (the awaited promise cancelled only when the fiber alone
 * waited for it, the return value discarded); teardown with fibers
 * suspended and not started; the argument's destroy notifier; the pending
 * dump; pooled stacks, their sizes and their guard page (in a child
 * process); 30 000 fibers suspended at once; 100 000 spawned through a
 * map's limit; a million awaits in constant memory; spawning without
 * memory or address space; uvp_await_take (a fresh call in one
 * expression, how long its outcome lives, its refusals, which consume the
 * reference).  Suites `fiber` and `threads` (TSan).
 *
 * cmocka's assertions jump back to the test's frame with longjmp, which
 * must not leave a fiber's stack: code on a fiber records what it saw, or
 * the first failed FCHECK, and the test asserts on the loop's stack.  What
 * fibers and hooks point to is static: a test that fails half-way leaves
 * its fibers to the teardown's uvp_ctx_close, which resumes them after the
 * test's frame is gone. */
#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/fiber-stack.h"
#include "../src/fiber-switch.h"
#include "alloc-helpers.h"
#include "child.h"
#include "proc-maps.h"

/* A stack's default size, as uvp/fibers.h states it for each ABI. */
#if UINTPTR_MAX > UINT32_MAX
#define DEFAULT_STACK (256u * 1024u)
#else
#define DEFAULT_STACK (128u * 1024u)
#endif

#if defined(T_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#if defined(T_TSAN)
#include <sanitizer/allocator_interface.h>
#endif

/* The most stacks a context keeps warm for the next fibers. */
enum { KEPT_MAX = 1024 };

#define NOINLINE __attribute__((noinline))
#if defined(__clang__) || defined(__SANITIZE_ADDRESS__)
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

/* ---- checks on a fiber --------------------------------------------------- */

static int fcheck_line;
static const char *fcheck_expr;

#define FCHECK(cond)                                                           \
  do {                                                                         \
    if (!(cond) && fcheck_line == 0) {                                         \
      fcheck_line = __LINE__;                                                  \
      fcheck_expr = #cond;                                                     \
    }                                                                          \
  } while (0)

static void assert_fibers_ok(void) {
  if (fcheck_line != 0)
    fail_msg("on a fiber, line %d: FCHECK(%s) failed", fcheck_line,
             fcheck_expr);
}

static int setup(void **state) {
  fcheck_line = 0;
  fcheck_expr = NULL;
  int rc = fixture_setup(state);
#if defined(T_COMPACT)
  /* The whole file again with the context's fibers in the compact mode
   * (test-fiber-as-compact). */
  if (rc == 0 && uvp_ctx_set_fiber_mode(((fixture_t *)*state)->ctx,
                                        UVP_FIBER_COMPACT) != 0)
    rc = -1;
#endif
  return rc;
}

static int teardown(void **state) {
  fixture_teardown(state); /* fibers may still run in uvp_ctx_close */
  assert_fibers_ok();
  return 0;
}

#define FTEST(fn) FIXTURE_TEST_WITH(fn, setup, teardown)

/* ---- small tools --------------------------------------------------------- */

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* The process's resident set, in bytes. */
static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, resident = 0;
  if (f != NULL) {
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
      resident = 0;
    fclose(f);
  }
  return (size_t)resident * page_size();
}

static uvp_ctx_stats_t stats(uvp_ctx_t *ctx) {
  uvp_ctx_stats_t s;
  memset(&s, 0xff, sizeof(s));
  int rc = uvp_ctx_stats(ctx, &s);
  if (rc != 0)
    fail_msg("uvp_ctx_stats: %s", uvp_err_name(rc));
  return s;
}

/* Spawns fn(arg) and runs the loop until nothing but pending promises is
 * left; returns the fiber's promise. */
static uvp_promise_t *spawn_and_run(fixture_t *f, uvp_fiber_fn fn, void *arg) {
  uvp_promise_t *fp = NULL;
  assert_int_equal(uvp_fiber_spawn(f->ctx, fn, arg, NULL, &fp), 0);
  run_loop(f);
  return fp;
}

static void release_fulfilled(uvp_promise_t *fp) {
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  uvp_promise_release(fp);
}

/* A handler that pushes its tag (the trace is the arg's first member). */
typedef struct tagged_s {
  trace_t *t;
  int tag;
} tagged_t;

static uvp_ret_t push_tag(void *arg, const uvp_outcome_t *in) {
  tagged_t *tg = arg;
  (void)in;
  trace_push(tg->t, tg->tag);
  return uvp_ret_pass();
}

static void assert_trace(const trace_t *t, const int *want, int n) {
  assert_int_equal(t->n, n);
  for (int i = 0; i < n; i++)
    if (t->ev[i] != want[i])
      fail_msg("trace[%d] = %d, want %d", i, t->ev[i], want[i]);
}

/* ---- spawn and await ----------------------------------------------------- */

typedef struct awaiter_s {
  uvp_promise_t *awaited;
  int steps; /* 1: before the await, 2: after it */
  int in_fiber;
  int rc;
  uvp_outcome_t out;
} awaiter_t;

static uvp_ret_t await_body(void *arg) {
  awaiter_t *a = arg;
  a->in_fiber = uvp_in_fiber();
  a->steps = 1;
  a->rc = uvp_await(a->awaited, &a->out);
  a->steps = 2;
  return uvp_ret_value(SENTINEL(1), NULL);
}

static void test_await_value(void **state) {
  fixture_t *f = *state;
  static awaiter_t a;
  static int freed;
  uvp_promise_t *fp;
  a = (awaiter_t){.steps = 0};
  freed = 0;
  assert_int_equal(uvp_promise_new(f->ctx, &a.awaited), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, await_body, &a, NULL, &fp), 0);
  assert_int_equal(a.steps, 0); /* not inside the spawn */
  assert_false(uvp_in_fiber());
  run_loop(f); /* returns: a suspended fiber keeps nothing alive */
  assert_int_equal(a.steps, 1);
  assert_int_equal(a.in_fiber, 1);
  assert_int_equal(uvp_promise_state(fp), UVP_PENDING);
  assert_int_equal(stats(f->ctx).fibers, 1);
  boxed_t *b = boxed_new(7, &freed);
  assert_int_equal(uvp_promise_resolve(a.awaited, b, boxed_free), 0);
  assert_int_equal(a.steps, 1); /* not inside the resolve */
  run_loop(f);
  assert_int_equal(a.steps, 2);
  assert_int_equal(a.rc, 0);
  assert_int_equal(a.out.status, 0);
  assert_ptr_equal(a.out.value, b);
  assert_ptr_equal(a.out.promise, a.awaited);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(fp), SENTINEL(1));
  assert_int_equal(stats(f->ctx).fibers, 0);
  uvp_promise_release(fp);
  assert_int_equal(freed, 0); /* the awaited promise's, still held */
  uvp_promise_release(a.awaited);
  assert_int_equal(freed, 1);
}

static void test_await_rejection(void **state) {
  fixture_t *f = *state;
  static awaiter_t a;
  static int freed;
  a = (awaiter_t){.steps = 0};
  freed = 0;
  assert_int_equal(uvp_promise_new(f->ctx, &a.awaited), 0);
  uvp_promise_t *fp = spawn_and_run(f, await_body, &a);
  assert_int_equal(a.steps, 1);
  boxed_t *b = boxed_new(8, &freed);
  assert_int_equal(uvp_promise_reject(a.awaited, UV_EPROTO, b, boxed_free), 0);
  run_loop(f);
  assert_int_equal(a.steps, 2);
  assert_int_equal(a.rc, UV_EPROTO);
  assert_int_equal(a.out.status, UV_EPROTO);
  assert_ptr_equal(a.out.value, b); /* the payload */
  assert_ptr_equal(a.out.promise, a.awaited);
  /* The rejection was the fiber's to handle: its own promise fulfils. */
  release_fulfilled(fp);
  uvp_promise_release(a.awaited);
  assert_int_equal(freed, 1);
}

/* Awaiting a settled promise yields once, through the run queue: a handler
 * queued before the await runs before the fiber goes on. */
typedef struct yield_s {
  trace_t t;
  tagged_t tag2;
  uvp_promise_t *settled, *other;
  int rc;
  void *value;
} yield_t;

static uvp_ret_t yield_body(void *arg) {
  yield_t *y = arg;
  uvp_outcome_t o;
  trace_push(&y->t, 1);
  FCHECK(uvp_promise_then(y->other, push_tag, &y->tag2, NULL) == 0);
  y->rc = uvp_await(y->settled, &o);
  y->value = o.value;
  trace_push(&y->t, 3);
  return uvp_ret_pass();
}

static void test_await_settled_yields(void **state) {
  fixture_t *f = *state;
  static yield_t y;
  y = (yield_t){.rc = 1};
  uvp_promise_t *fp;
  y.tag2 = (tagged_t){&y.t, 2};
  assert_int_equal(uvp_promise_resolved(f->ctx, SENTINEL(2), NULL, &y.settled),
                   0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &y.other), 0);
  fp = spawn_and_run(f, yield_body, &y);
  assert_trace(&y.t, (int[]){1, 2, 3}, 3);
  assert_int_equal(y.rc, 0);
  assert_ptr_equal(y.value, SENTINEL(2));
  /* uvp_ret_pass fulfils with NULL. */
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_null(uvp_promise_value(fp));
  uvp_promise_release(fp);
  uvp_promise_release(y.settled);
  uvp_promise_release(y.other);
}

/* Fibers start from the run queue in spawn order, interleaved with the
 * handlers queued around them; each await of a settled promise lets the
 * others run. */
typedef struct order_s {
  trace_t *t;
  int i;
  uvp_promise_t *settled;
} order_t;

static uvp_ret_t order_body(void *arg) {
  order_t *o = arg;
  trace_push(o->t, o->i);
  FCHECK(uvp_await(o->settled, NULL) == 0);
  trace_push(o->t, 10 + o->i);
  return uvp_ret_pass();
}

static void test_spawn_order(void **state) {
  fixture_t *f = *state;
  static trace_t t;
  static order_t o[4];
  static tagged_t mid;
  uvp_promise_t *fp[4], *settled;
  t.n = 0;
  mid = (tagged_t){&t, 99};
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &settled), 0);
  for (int i = 0; i < 4; i++) {
    o[i] = (order_t){&t, i, settled};
    assert_int_equal(uvp_fiber_spawn(f->ctx, order_body, &o[i], NULL, &fp[i]),
                     0);
    if (i == 1) /* a handler queued between the second and third spawn */
      assert_int_equal(uvp_promise_then(settled, push_tag, &mid, NULL), 0);
  }
  assert_int_equal(t.n, 0);
  run_loop(f);
  assert_trace(&t, (int[]){0, 1, 99, 2, 3, 10, 11, 12, 13}, 9);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(uvp_promise_state(fp[i]), UVP_FULFILLED);
    uvp_promise_release(fp[i]);
  }
  uvp_promise_release(settled);
}

/* What a fiber returns settles its promise as a handler's return would. */
typedef struct ret_s {
  fixture_t *f;
  int *freed;
  uvp_promise_t *adopted; /* our reference to what the fiber adopted */
} ret_t;

static uvp_ret_t reject_body(void *arg) {
  ret_t *r = arg;
  return uvp_ret_reject(UV_EPROTO, boxed_new(3, r->freed), boxed_free);
}

static uvp_ret_t adopt_body(void *arg) {
  ret_t *r = arg;
  uvp_promise_t *q;
  if (uvp_promise_new(r->f->ctx, &q) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  r->adopted = uvp_promise_retain(q);
  return uvp_ret_adopt(q); /* hands the reference from uvp_promise_new */
}

static void test_return_kinds(void **state) {
  fixture_t *f = *state;
  static int freed;
  static ret_t r;
  freed = 0;
  r = (ret_t){f, &freed, NULL};
  uvp_promise_t *rej, *ado;
  void *payload;
  count_unhandled(f);
  assert_int_equal(uvp_fiber_spawn(f->ctx, reject_body, &r, NULL, &rej), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, adopt_body, &r, NULL, &ado), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(rej), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(rej, &payload), UV_EPROTO);
  assert_non_null(payload);
  assert_int_equal(((boxed_t *)payload)->v, 3);
  /* Adopting a pending promise: pending until that one settles. */
  assert_non_null(r.adopted);
  assert_int_equal(uvp_promise_state(ado), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(r.adopted, SENTINEL(3), NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(ado), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(ado), SENTINEL(3));
  uvp_promise_release(ado);
  uvp_promise_release(r.adopted);
  assert_int_equal(freed, 0);
  uvp_promise_release(rej); /* unhandled: reported once, payload freed */
  assert_int_equal(freed, 1);
  assert_int_equal(g_unhandled, 1);
}

/* Only the fiber settles its promise: settling it by hand is refused,
 * before the fiber ran and while it waits, and the fiber's own result
 * stands. */
static uvp_ret_t value_after_await(void *arg) {
  uvp_promise_t *p = arg;
  FCHECK(uvp_await(p, NULL) == 0);
  return uvp_ret_value(SENTINEL(7), NULL);
}

static void test_promise_settled_only_by_fiber(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *gate, *fp;
  assert_int_equal(uvp_promise_new(f->ctx, &gate), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, value_after_await, gate, NULL, &fp),
                   0);
  assert_int_equal(uvp_promise_resolve(fp, NULL, NULL), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(uvp_promise_reject(fp, UV_EIO, NULL, NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_state(fp), UVP_PENDING);
  assert_int_equal(uvp_promise_resolve(gate, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(fp), SENTINEL(7));
  uvp_promise_release(fp);
  uvp_promise_release(gate);
}

/* ---- fibers and other fibers -------------------------------------------- */

typedef struct nest_s {
  fixture_t *f;
  int inner_started;
  int inner_started_in_spawn;
  int rc;
  intptr_t got;
} nest_t;

static uvp_ret_t inner_body(void *arg) {
  nest_t *n = arg;
  uvp_promise_t *d;
  n->inner_started = 1;
  FCHECK(uvp_delay(n->f->ctx, 2, NULL, NULL, UVP_KEEP_ALIVE, &d) == 0);
  FCHECK(uvp_await(d, NULL) == 0);
  uvp_promise_release(d);
  return uvp_ret_value((void *)(intptr_t)42, NULL);
}

static uvp_ret_t outer_body(void *arg) {
  nest_t *n = arg;
  uvp_promise_t *ip;
  uvp_outcome_t o;
  n->rc = uvp_fiber_spawn(n->f->ctx, inner_body, n, NULL, &ip);
  if (n->rc != 0)
    return uvp_ret_reject(n->rc, NULL, NULL);
  n->inner_started_in_spawn = n->inner_started;
  n->rc = uvp_await(ip, &o);
  n->got = (intptr_t)o.value;
  uvp_promise_release(ip);
  return uvp_ret_value((void *)(n->got + 1), NULL);
}

static void test_spawn_from_fiber(void **state) {
  fixture_t *f = *state;
  static nest_t n;
  n = (nest_t){.f = f, .rc = 1};
  uvp_promise_t *fp = spawn_and_run(f, outer_body, &n);
  assert_int_equal(n.inner_started, 1);
  assert_int_equal(n.inner_started_in_spawn, 0);
  assert_int_equal(n.rc, 0);
  assert_int_equal(n.got, 42);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_int_equal((intptr_t)uvp_promise_value(fp), 43);
  uvp_promise_release(fp);
}

typedef struct same_s {
  trace_t *t;
  int i;
  uvp_promise_t *p;
  int rc;
  void *value;
} same_t;

static uvp_ret_t same_body(void *arg) {
  same_t *s = arg;
  uvp_outcome_t o;
  s->rc = uvp_await(s->p, &o);
  s->value = o.value;
  if (s->t != NULL)
    trace_push(s->t, s->i);
  return uvp_ret_pass();
}

static void test_many_await_same(void **state) {
  fixture_t *f = *state;
  enum { N = 16 };
  static trace_t t;
  static same_t s[N];
  static int freed;
  uvp_promise_t *fp[N], *p;
  int want[N];
  t.n = 0;
  freed = 0;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  for (int i = 0; i < N; i++) {
    s[i] = (same_t){&t, i, p, 1, NULL};
    want[i] = i;
    assert_int_equal(uvp_fiber_spawn(f->ctx, same_body, &s[i], NULL, &fp[i]),
                     0);
  }
  run_loop(f);
  assert_int_equal(t.n, 0);
  assert_int_equal(stats(f->ctx).fibers, N);
  boxed_t *b = boxed_new(5, &freed);
  assert_int_equal(uvp_promise_resolve(p, b, boxed_free), 0);
  run_loop(f);
  assert_trace(&t, want, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(s[i].rc, 0);
    assert_ptr_equal(s[i].value, b);
    uvp_promise_release(fp[i]);
  }
  uvp_promise_release(p);
  assert_int_equal(freed, 1);
}

/* Floating-point modes (fibers.h): a fiber that asks keeps what it sets
 * across an await, and neither the loop's code nor another fiber sees it;
 * one that does not ask shares the thread's where the switch keeps none
 * (UVP__FIBER_SHARED_FP: x86-64), and elsewhere keeps its own all the
 * same, starting with those in effect where it was spawned. */
typedef struct fpmode_s {
  uvp_promise_t *gate;
  int keep, at_start, after_set, after_await;
} fpmode_t;

static uvp_ret_t fpmode_body(void *arg) {
  fpmode_t *m = arg;
  m->at_start = fegetround();
  if (m->keep) {
    FCHECK(uvp_fiber_keep_fp_modes() == 0);
    FCHECK(uvp_fiber_keep_fp_modes() == 0); /* again: nothing changes */
  }
  FCHECK(fesetround(FE_UPWARD) == 0);
  m->after_set = fegetround();
  FCHECK(uvp_await(m->gate, NULL) == 0);
  m->after_await = fegetround();
  FCHECK(fesetround(FE_TONEAREST) == 0);
  return uvp_ret_pass();
}

static uvp_ret_t fpmode_other(void *arg) {
  fpmode_t *m = arg;
  m->at_start = fegetround();
  FCHECK(uvp_await(m->gate, NULL) == 0);
  m->after_await = fegetround();
  return uvp_ret_pass();
}

static void fp_modes(fixture_t *f, int compact) {
  static fpmode_t a, b;
  uvp_promise_t *gate, *fa, *fb;
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, compact ? UVP_FIBER_COMPACT
                                                          : UVP_FIBER_DEFAULT),
                   0);
  assert_int_equal(uvp_fiber_keep_fp_modes(), UVP_ENOTFIBER);
  assert_int_equal(uvp_promise_new(f->ctx, &gate), 0);
  a = (fpmode_t){gate, 1, -1, -1, -1};
  b = (fpmode_t){gate, 0, -1, -1, -1};
  assert_int_equal(fesetround(FE_DOWNWARD), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, fpmode_body, &a, NULL, &fa), 0);
  assert_int_equal(fesetround(FE_TONEAREST), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, fpmode_other, &b, NULL, &fb), 0);
  run_loop(f); /* a keeps its modes, sets upward and waits; b waits */
  assert_int_equal(fegetround(), FE_TONEAREST);
#if defined(UVP__FIBER_SHARED_FP)
  assert_int_equal(a.at_start, FE_TONEAREST); /* the thread's */
#else
  assert_int_equal(a.at_start, FE_DOWNWARD); /* its spawn's */
#endif
  assert_int_equal(a.after_set, FE_UPWARD);
  assert_int_equal(b.at_start, FE_TONEAREST);
  assert_int_equal(uvp_promise_resolve(gate, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(a.after_await, FE_UPWARD);
  assert_int_equal(b.after_await, FE_TONEAREST);
  assert_int_equal(fegetround(), FE_TONEAREST);
  release_fulfilled(fa);
  release_fulfilled(fb);
  uvp_promise_release(gate);

  /* A fiber that does not ask. */
  assert_int_equal(uvp_promise_new(f->ctx, &gate), 0);
  a = (fpmode_t){gate, 0, -1, -1, -1};
  assert_int_equal(uvp_fiber_spawn(f->ctx, fpmode_body, &a, NULL, &fa), 0);
  run_loop(f);
  assert_int_equal(a.after_set, FE_UPWARD);
#if defined(UVP__FIBER_SHARED_FP)
  /* The thread's: the loop sees what it set, and it sees what the loop
   * set since. */
  assert_int_equal(fegetround(), FE_UPWARD);
  assert_int_equal(fesetround(FE_TOWARDZERO), 0);
  assert_int_equal(uvp_promise_resolve(gate, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(a.after_await, FE_TOWARDZERO);
#else
  assert_int_equal(fegetround(), FE_TONEAREST);
  assert_int_equal(uvp_promise_resolve(gate, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(a.after_await, FE_UPWARD);
#endif
  assert_int_equal(fesetround(FE_TONEAREST), 0);
  release_fulfilled(fa);
  uvp_promise_release(gate);
}

static void test_fp_modes_per_fiber(void **state) { fp_modes(*state, 0); }

static void test_fp_modes_per_fiber_compact(void **state) {
  fp_modes(*state, 1);
}

/* ---- awaiting combinators, timers, I/O ----------------------------------- */

typedef struct combo_s {
  fixture_t *f;
  int rc;
  size_t count, fulfilled;
  void *values[3];
  uint64_t waited;
} combo_t;

static uvp_ret_t combo_body(void *arg) {
  combo_t *c = arg;
  static const uint64_t ms[3] = {30, 10, 20};
  uvp_promise_t *d[3] = {NULL, NULL, NULL}, *all = NULL;
  uvp_outcome_t o;
  uint64_t t0 = uv_now(uvp_ctx_loop(c->f->ctx));
  for (int i = 0; i < 3; i++)
    FCHECK(uvp_delay(c->f->ctx, ms[i], SENTINEL(i), NULL, UVP_KEEP_ALIVE,
                     &d[i]) == 0);
  FCHECK(uvp_promise_all_settled(c->f->ctx, d, 3, &all) == 0);
  c->rc = uvp_await(all, &o);
  c->waited = uv_now(uvp_ctx_loop(c->f->ctx)) - t0;
  const uvp_settled_list_t *l = o.value;
  if (c->rc == 0 && l != NULL) {
    c->count = l->count;
    c->fulfilled = l->fulfilled;
    for (size_t i = 0; i < 3 && i < l->count; i++)
      c->values[i] = l->items[i].value;
  }
  uvp_promise_release(all);
  for (int i = 0; i < 3; i++)
    uvp_promise_release(d[i]);
  return uvp_ret_pass();
}

static void test_await_all_settled(void **state) {
  fixture_t *f = *state;
  static combo_t c;
  c = (combo_t){.f = f, .rc = 1};
  uvp_promise_t *fp = spawn_and_run(f, combo_body, &c);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.count, 3);
  assert_int_equal(c.fulfilled, 3);
  for (int i = 0; i < 3; i++)
    assert_ptr_equal(c.values[i], SENTINEL(i)); /* input order */
  assert_true(c.waited >= 30);
  release_fulfilled(fp);
}

typedef struct tick_s {
  uv_timer_t timer;
  fixture_t *f;
  int fired;
  int fired_when_resumed;
  uint64_t fired_at, resumed_at;
  int rc;
} tick_t;

static void tick_cb(uv_timer_t *t) {
  tick_t *k = (tick_t *)t;
  k->fired++;
  k->fired_at = uv_now(t->loop);
}

static uvp_ret_t tick_body(void *arg) {
  tick_t *k = arg;
  uvp_promise_t *d;
  FCHECK(uvp_delay(k->f->ctx, 60, NULL, NULL, UVP_KEEP_ALIVE, &d) == 0);
  k->rc = uvp_await(d, NULL);
  k->fired_when_resumed = k->fired;
  k->resumed_at = uv_now(&k->f->loop);
  uvp_promise_release(d);
  return uvp_ret_pass();
}

static void test_timer_runs_while_waiting(void **state) {
  fixture_t *f = *state;
  static tick_t k;
  k = (tick_t){.f = f, .rc = 1};
  assert_int_equal(uv_timer_init(&f->loop, &k.timer), 0);
  assert_int_equal(uv_timer_start(&k.timer, tick_cb, 5, 0), 0);
  uvp_promise_t *fp = spawn_and_run(f, tick_body, &k);
  assert_int_equal(k.rc, 0);
  assert_int_equal(k.fired, 1);
  assert_int_equal(k.fired_when_resumed, 1);
  assert_true(k.fired_at < k.resumed_at);
  uv_close((uv_handle_t *)&k.timer, NULL);
  run_loop(f); /* the close completes before the test ends */
  uvp_promise_release(fp);
}

typedef struct file_s {
  fixture_t *f;
  const char *path;
  int rc;
  size_t len;
  int same;
  const char *want;
  size_t want_len;
} file_t;

static uvp_ret_t file_body(void *arg) {
  file_t *r = arg;
  uvp_promise_t *p;
  uvp_outcome_t o;
  r->rc = uvp_fs_read_file(r->f->ctx, r->path, 0, &p);
  if (r->rc != 0)
    return uvp_ret_reject(r->rc, NULL, NULL);
  r->rc = uvp_await(p, &o);
  if (r->rc == 0) {
    const uvp_buf_t *b = o.value;
    r->len = b->len;
    r->same = b->len == r->want_len &&
              memcmp(b->base, r->want, r->want_len) == 0 &&
              b->base[b->len] == '\0';
  }
  uvp_promise_release(p);
  return uvp_ret_pass();
}

static void test_read_file(void **state) {
  fixture_t *f = *state;
  char path[] = "/tmp/uvp-test-fiber-XXXXXX";
  enum { LEN = 200000 }; /* several reads' worth */
  char *data = malloc(LEN);
  assert_non_null(data);
  for (size_t i = 0; i < LEN; i++)
    data[i] = (char)('a' + (i * 7 + i / 1000) % 26);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, LEN), LEN);
  assert_int_equal(close(fd), 0);
  static file_t r;
  r = (file_t){.f = f, .path = path, .rc = 1, .want = data, .want_len = LEN};
  uvp_promise_t *fp = spawn_and_run(f, file_body, &r);
  assert_int_equal(unlink(path), 0);
  free(data);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.len, LEN);
  assert_true(r.same);
  release_fulfilled(fp);
}

/* ---- await's immediate errors -------------------------------------------- */

typedef struct outside_s {
  uvp_promise_t *p;
  int rc, status, in_fiber;
} outside_t;

static uvp_ret_t await_in_handler(void *arg, const uvp_outcome_t *in) {
  outside_t *o = arg;
  uvp_outcome_t out = {1, SENTINEL(0), NULL};
  (void)in;
  o->in_fiber = uvp_in_fiber();
  o->rc = uvp_await(o->p, &out);
  o->status = out.status;
  return uvp_ret_pass();
}

static void test_await_outside_fiber(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *settled;
  uvp_outcome_t out = {1, SENTINEL(0), NULL};
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_await(p, &out), UVP_ENOTFIBER);
  assert_int_equal(out.status, UVP_ENOTFIBER);
  assert_ptr_equal(out.promise, p);
  assert_int_equal(uvp_await(p, NULL), UVP_ENOTFIBER);
  assert_int_equal(uvp_await(NULL, &out), UV_EINVAL);
  assert_int_equal(out.status, UV_EINVAL);
  /* From a handler: the loop's own stack too. */
  static outside_t o;
  o = (outside_t){p, 1, 1, 1};
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &settled), 0);
  assert_int_equal(uvp_promise_then(settled, await_in_handler, &o, NULL), 0);
  run_loop(f);
  assert_int_equal(o.in_fiber, 0);
  assert_int_equal(o.rc, UVP_ENOTFIBER);
  assert_int_equal(o.status, UVP_ENOTFIBER);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  uvp_promise_release(settled);
  uvp_promise_release(p);
}

typedef struct xctx_s {
  uvp_promise_t *theirs, *settled;
  trace_t t;
  tagged_t tag;
  int rc, status;
} xctx_t;

static uvp_ret_t xctx_body(void *arg) {
  xctx_t *x = arg;
  uvp_outcome_t o;
  FCHECK(uvp_promise_then(x->settled, push_tag, &x->tag, NULL) == 0);
  x->rc = uvp_await(x->theirs, &o);
  x->status = o.status;
  trace_push(&x->t, 1); /* before the handler: the await did not yield */
  return uvp_ret_pass();
}

static void test_await_other_ctx(void **state) {
  fixture_t *f = *state;
  uvp_ctx_t *other;
  static xctx_t x;
  x = (xctx_t){.rc = 1, .status = 1};
  uvp_promise_t *fp;
  x.tag = (tagged_t){&x.t, 2};
  assert_int_equal(uvp_ctx_new(&f->loop, &other), 0);
  assert_int_equal(uvp_promise_new(other, &x.theirs), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &x.settled), 0);
  fp = spawn_and_run(f, xctx_body, &x);
  assert_int_equal(x.rc, UVP_EXCTX);
  assert_int_equal(x.status, UVP_EXCTX);
  assert_trace(&x.t, (int[]){1, 2}, 2);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(x.theirs), UVP_PENDING);
  uvp_promise_release(fp);
  uvp_promise_release(x.settled);
  uvp_promise_release(x.theirs);
  assert_int_equal(uvp_ctx_close(other), 0);
}

typedef struct closer_s {
  fixture_t *f;
  int rc, after;
} closer_t;

static uvp_ret_t closer_body(void *arg) {
  closer_t *c = arg;
  uvp_promise_t *p;
  c->rc = uvp_ctx_close(c->f->ctx);
  /* Nothing happened: the context still works. */
  c->after = uvp_promise_new(c->f->ctx, &p);
  if (c->after == 0) {
    c->after = uvp_promise_resolve(p, NULL, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

static void test_ctx_close_in_fiber(void **state) {
  fixture_t *f = *state;
  static closer_t c;
  c = (closer_t){f, 1, 1};
  uvp_promise_t *fp = spawn_and_run(f, closer_body, &c);
  assert_int_equal(c.rc, UVP_EINFIBER);
  assert_int_equal(c.after, 0);
  release_fulfilled(fp);
}

/* ---- cancellation -------------------------------------------------------- */

typedef struct cancel_s {
  uvp_promise_t *q;     /* awaited first */
  uvp_promise_t *later; /* awaited after the cancellation */
  int *freed;
  int rc1, rc2, status1;
  int cleanup;
  int later_pending; /* the second await left `later` alone */
} cancel_t;

static uvp_ret_t cancel_body(void *arg) {
  cancel_t *c = arg;
  uvp_outcome_t o;
  c->rc1 = uvp_await(c->q, &o);
  c->status1 = o.status;
  c->cleanup++;
  c->rc2 = uvp_await(c->later, NULL);
  c->later_pending = uvp_promise_state(c->later) == UVP_PENDING;
  return uvp_ret_value(boxed_new(9, c->freed), boxed_free);
}

static void test_cancel_only_observer(void **state) {
  fixture_t *f = *state;
  static hook_t hook;
  static int freed;
  static cancel_t c;
  uvp_promise_t *fp;
  hook = (hook_t){.calls = 0};
  freed = 0;
  c = (cancel_t){.rc1 = 1, .rc2 = 1, .freed = &freed};
  c.q = producer(f, &hook);
  assert_int_equal(uvp_promise_new(f->ctx, &c.later), 0);
  fp = spawn_and_run(f, cancel_body, &c);
  assert_int_equal(uvp_promise_cancel(fp), 0);
  /* At once: the fiber's promise, and the promise only it waited for. */
  assert_int_equal(uvp_promise_state(fp), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ECANCELED);
  assert_int_equal(hook.calls, 1);
  assert_int_equal(hook.code, UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(c.q, NULL), UV_ECANCELED);
  assert_int_equal(c.cleanup, 0); /* resumed later, from the loop */
  run_loop(f);
  assert_int_equal(c.rc1, UV_ECANCELED);
  assert_int_equal(c.status1, UV_ECANCELED);
  assert_int_equal(c.cleanup, 1);
  assert_int_equal(c.rc2, UV_ECANCELED);
  assert_true(c.later_pending);
  assert_int_equal(uvp_promise_state(c.later), UVP_PENDING);
  assert_int_equal(stats(f->ctx).fibers, 0);
  /* The return value went nowhere: destroyed once, at once. */
  assert_int_equal(freed, 1);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ECANCELED);
  uvp_promise_release(fp);
  uvp_promise_release(c.q);
  uvp_promise_release(c.later);
  assert_int_equal(freed, 1);
  assert_int_equal(hook.calls, 1);
}

typedef struct seen_s {
  int calls, status;
  void *value;
} seen_t;

static uvp_ret_t record_outcome(void *arg, const uvp_outcome_t *in) {
  seen_t *s = arg;
  s->calls++;
  s->status = in->status;
  s->value = in->value;
  return uvp_ret_pass();
}

static void test_cancel_shared_awaited(void **state) {
  fixture_t *f = *state;
  static hook_t hook;
  static int freed, vfreed;
  static cancel_t c;
  static seen_t seen;
  hook = (hook_t){.calls = 0};
  freed = vfreed = 0;
  c = (cancel_t){.rc1 = 1, .rc2 = 1, .freed = &freed};
  seen = (seen_t){0, 1, NULL};
  uvp_promise_t *fp;
  c.q = producer(f, &hook);
  assert_int_equal(uvp_promise_new(f->ctx, &c.later), 0);
  assert_int_equal(
      uvp_promise_on(c.q, UVP_ON_BOTH, record_outcome, &seen, NULL), 0);
  fp = spawn_and_run(f, cancel_body, &c);
  assert_int_equal(uvp_promise_cancel(fp), 0);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ECANCELED);
  assert_int_equal(hook.calls, 0); /* another consumer waits for q */
  assert_int_equal(uvp_promise_state(c.q), UVP_PENDING);
  run_loop(f);
  assert_int_equal(c.rc1, UV_ECANCELED);
  assert_int_equal(c.cleanup, 1);
  assert_int_equal(c.rc2, UV_ECANCELED);
  assert_int_equal(freed, 1);
  assert_int_equal(seen.calls, 0);
  boxed_t *b = boxed_new(11, &vfreed);
  assert_int_equal(uvp_promise_resolve(c.q, b, boxed_free), 0);
  run_loop(f);
  assert_int_equal(seen.calls, 1);
  assert_int_equal(seen.status, 0);
  assert_ptr_equal(seen.value, b);
  assert_int_equal(hook.calls, 0);
  uvp_promise_release(fp);
  uvp_promise_release(c.q);
  uvp_promise_release(c.later);
  assert_int_equal(vfreed, 1);
}

/* ---- uvp_await_shielded ---------------------------------------------------
 */

/* Found from outside (issue 40): a connection fiber cancelled at shutdown
 * could not await the join of the request group it started, so its
 * children's state could not live on its stack.  Here the children (a
 * group's fibers) use a counter on the parent's stack; the parent, once
 * cancelled, waits for them shielded, and only then returns. */
typedef struct shield_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *gate; /* settled by the test: the children's work */
  int rc_plain, rc_join, rc_after, children_done, parent_done;
  int children_seen_by_parent;
} shield_t;

typedef struct child_arg_s {
  shield_t *s;
  int *on_parent_stack;
} child_arg_t;

static uvp_ret_t shield_child(void *arg) {
  child_arg_t *c = arg;
  /* Shielded too: the group's cancel must not cut the cleanup short. */
  uvp_await_shielded(c->s->gate, NULL);
  (*c->on_parent_stack)++;
  c->s->children_done++;
  return uvp_ret_pass();
}

static uvp_ret_t shield_parent(void *arg) {
  shield_t *s = arg;
  int on_my_stack = 0;
  child_arg_t kids[3];
  uvp_group_t *g;
  FCHECK(uvp_group_new(s->ctx, NULL, &g) == 0);
  for (int i = 0; i < 3; i++) {
    kids[i] = (child_arg_t){s, &on_my_stack};
    FCHECK(uvp_group_spawn(g, shield_child, &kids[i], NULL) == 0);
  }
  FCHECK(uvp_group_close(g) == 0);
  uvp_promise_t *join;
  FCHECK(uvp_group_join(g, &join) == 0);
  uvp_promise_t *never;
  FCHECK(uvp_promise_new(s->ctx, &never) == 0);
  s->rc_plain = uvp_await(never, NULL); /* cancelled here */
  uvp_promise_release(never);
  s->rc_join = uvp_await_shielded(join, NULL);
  s->children_seen_by_parent = on_my_stack;
  s->rc_after = uvp_await(join, NULL); /* plain again: refused */
  uvp_promise_release(join);
  uvp_group_release(g);
  s->parent_done = 1;
  return uvp_ret_pass();
}

static void test_shielded_await_of_own_cleanup(void **state) {
  fixture_t *f = *state;
#if defined(T_COMPACT)
  SKIP_BECAUSE("compact mode: the children would run on the parent's "
               "stack; the default mode's test");
#endif
  static shield_t s;
  s = (shield_t){.ctx = f->ctx, .rc_plain = 1, .rc_join = 1, .rc_after = 1};
  assert_int_equal(uvp_promise_new(f->ctx, &s.gate), 0);
  uvp_promise_t *fp = spawn_and_run(f, shield_parent, &s);
  assert_int_equal(uvp_promise_cancel(fp), 0);
  run_loop(f);
  assert_int_equal(s.rc_plain, UV_ECANCELED);
  assert_int_equal(s.parent_done, 0); /* waiting for its children */
  assert_int_equal(s.children_done, 0);
  assert_int_equal(uvp_promise_state(s.gate), UVP_PENDING); /* not cancelled */
  assert_int_equal(uvp_promise_resolve(s.gate, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(s.children_done, 3);
  assert_int_equal(s.children_seen_by_parent, 3);
  assert_int_equal(s.rc_join, 0);
  assert_int_equal(s.rc_after, UV_ECANCELED);
  assert_int_equal(s.parent_done, 1);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ECANCELED);
  assert_int_equal(stats(f->ctx).fibers, 0);
  uvp_promise_release(fp);
  uvp_promise_release(s.gate);
}

/* Cancelled while inside the shielded await: it waits on, the awaited
 * promise is not cancelled (though the fiber alone waits for it), and the
 * value arrives; a timeout bounds a shielded wait; teardown ends one with
 * UVP_ECLOSED; outside a fiber it is refused. */
typedef struct inside_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *q, *never;
  int rc_q, rc_bounded, rc_last;
  void *value;
  uint64_t waited_ms;
} inside_t;

static uvp_ret_t inside_body(void *arg) {
  inside_t *x = arg;
  uvp_outcome_t o;
  x->rc_q = uvp_await_shielded(x->q, &o);
  x->value = o.value;
  uvp_promise_t *bounded;
  FCHECK(uvp_timeout(x->never, 20, 0, &bounded) == 0);
  uint64_t t0 = uv_now(uvp_ctx_loop(x->ctx));
  x->rc_bounded = uvp_await_shielded(bounded, NULL);
  x->waited_ms = uv_now(uvp_ctx_loop(x->ctx)) - t0;
  uvp_promise_release(bounded);
  x->rc_last = uvp_await_shielded(x->never, NULL); /* torn down here */
  return uvp_ret_pass();
}

static void test_shielded_await_cancelled_inside(void **state) {
  fixture_t *f = *state;
  static hook_t hook;
  static inside_t x;
  hook = (hook_t){.calls = 0};
  x = (inside_t){.ctx = f->ctx, .rc_q = 1, .rc_bounded = 1, .rc_last = 1};
  x.q = producer(f, &hook);
  assert_int_equal(uvp_promise_new(f->ctx, &x.never), 0);
  /* another consumer: the timeout must leave it alone */
  assert_int_equal(uvp_promise_then(x.never, NULL, NULL, NULL), 0);
  uvp_promise_t *fp = spawn_and_run(f, inside_body, &x);
  assert_int_equal(uvp_promise_cancel(fp), 0);
  assert_int_equal(hook.calls, 0); /* q, only the fiber's, not cancelled */
  run_loop(f);
  assert_int_equal(x.rc_q, 1); /* still waiting */
  assert_int_equal(uvp_promise_resolve(x.q, SENTINEL(5), NULL), 0);
  run_loop(f);
  assert_int_equal(x.rc_q, 0);
  assert_ptr_equal(x.value, SENTINEL(5));
  assert_int_equal(x.rc_bounded, UV_ETIMEDOUT);
  assert_true(x.waited_ms >= 20);
  assert_int_equal(uvp_promise_state(x.never), UVP_PENDING);
  assert_int_equal(x.rc_last, 1);
  (void)close_ctx(f);
  assert_int_equal(x.rc_last, UVP_ECLOSED);
  uvp_promise_release(fp);
  uvp_promise_release(x.q);
  uvp_promise_release(x.never);
  uvp_outcome_t o;
  assert_int_equal(uvp_await_shielded(x.never, &o), UVP_ENOTFIBER);
  assert_int_equal(o.status, UVP_ENOTFIBER);
}

/* Cancelled before it started: the header says opts.arg_free then runs
 * because fn "will never run". */
typedef struct never_s {
  int ran;
  int freed;
} never_t;

static uvp_ret_t never_body(void *arg) {
  never_t *n = arg;
  n->ran++;
  return uvp_ret_pass();
}

static void never_free(void *arg) { ((never_t *)arg)->freed++; }

static void test_cancel_before_start(void **state) {
  fixture_t *f = *state;
  static never_t n;
  uvp_fiber_opts_t opts = {.stack_size = 0, .arg_free = never_free};
  uvp_promise_t *fp;
  n = (never_t){0, 0};
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &n, &opts, &fp), 0);
  assert_int_equal(uvp_promise_cancel(fp), 0);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(n.ran, 0);
  assert_int_equal(n.freed, 1);
  assert_int_equal(stats(f->ctx).fibers, 0);
  uvp_promise_release(fp);
  assert_int_equal(n.freed, 1);
}

/* Refused, from another thread (with the check on) and after
 * uvp_ctx_close: spawning and setting the stack size change nothing, the
 * fiber never runs and arg stays ours. */
typedef struct refused_s {
  uvp_ctx_t *ctx;
  never_t *n;
  uvp_promise_t *fp;
  int spawn_rc, stack_rc;
} refused_t;

static void refused_calls(void *arg) {
  refused_t *x = arg;
  uvp_fiber_opts_t o = {.stack_size = 0, .arg_free = never_free};
  x->spawn_rc = uvp_fiber_spawn(x->ctx, never_body, x->n, &o, &x->fp);
  x->stack_rc = uvp_ctx_set_fiber_stack(x->ctx, 65536);
}

static void test_spawn_refused(void **state) {
  fixture_t *f = *state;
  static never_t n;
  n = (never_t){0, 0};
  refused_t x = {f->ctx, &n, NULL, 1, 1};
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(refused_calls, &x);
  assert_int_equal(x.spawn_rc, UVP_ETHREAD);
  assert_int_equal(x.stack_rc, UVP_ETHREAD);
  assert_null(x.fp);
  assert_int_equal(stats(f->ctx).fibers, 0);
  run_loop(f);
  /* Refused, arg_free ran at once (uvp.h, "Handing over"), the body
   * never. */
  assert_int_equal(n.ran, 0);
  assert_int_equal(n.freed, 1);

  (void)close_ctx(f);
  refused_calls(&x); /* on the loop thread, the context closed */
  assert_int_equal(x.spawn_rc, UVP_ECLOSED);
  assert_int_equal(x.stack_rc, UVP_ECLOSED);
  assert_null(x.fp);
  assert_int_equal(n.ran, 0);
  assert_int_equal(n.freed, 2);
}

/* ---- teardown ------------------------------------------------------------ */

typedef struct down_s {
  uvp_promise_t *p;
  int *unwound;
  int rc1, rc2;
  void *frame;
} down_t;

static uvp_ret_t down_body(void *arg) {
  down_t *d = arg;
  d->frame = __builtin_frame_address(0);
  d->rc1 = uvp_await(d->p, NULL);
  d->rc2 = uvp_await(d->p, NULL); /* at once */
  (*d->unwound)++;
  return uvp_ret_value(SENTINEL(4), NULL);
}

static void test_close_with_fibers(void **state) {
  fixture_t *f = *state;
  enum { N = 5 };
  static down_t d[N];
  static never_t late;
  static hook_t hooks[N];
  static int unwound;
  uvp_fiber_opts_t opts = {.stack_size = 0, .arg_free = never_free};
  uvp_promise_t *fp[N], *lp;
  late = (never_t){0, 0};
  unwound = 0;
  memset(hooks, 0, sizeof(hooks));
  for (int i = 0; i < N; i++) {
    d[i] = (down_t){producer(f, &hooks[i]), &unwound, 1, 1, NULL};
    assert_int_equal(uvp_fiber_spawn(f->ctx, down_body, &d[i], NULL, &fp[i]),
                     0);
  }
  run_loop(f);
  for (int i = 0; i < N; i++)
    assert_true(proc_mapped(d[i].frame));
  /* One more, never started. */
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &late, &opts, &lp), 0);
  assert_int_equal(stats(f->ctx).fibers, N + 1);
  assert_int_equal(unwound, 0);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(unwound, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(d[i].rc1, UVP_ECLOSED);
    assert_int_equal(d[i].rc2, UVP_ECLOSED);
    assert_int_equal(hooks[i].calls, 1);
    assert_int_equal(hooks[i].code, UVP_ECLOSED);
    assert_false(proc_mapped(d[i].frame)); /* the stacks are gone */
    assert_int_equal(uvp_promise_reason(fp[i], NULL), UVP_ECLOSED);
    uvp_promise_release(fp[i]);
    uvp_promise_release(d[i].p);
  }
  assert_int_equal(late.ran, 0);
  assert_int_equal(late.freed, 1);
  assert_int_equal(uvp_promise_reason(lp, NULL), UVP_ECLOSED);
  uvp_promise_release(lp);
  assert_int_equal(late.freed, 1);
}

/* ---- ownership of arg ---------------------------------------------------- */

typedef struct own_s {
  fixture_t *f;
  int body_done;
  int freed;
  int freed_early;
} own_t;

static void own_free(void *arg) {
  own_t *o = arg;
  if (!o->body_done)
    o->freed_early++;
  o->freed++;
}

static uvp_ret_t own_body(void *arg) {
  own_t *o = arg;
  uvp_promise_t *d;
  FCHECK(uvp_delay(o->f->ctx, 1, NULL, NULL, UVP_KEEP_ALIVE, &d) == 0);
  FCHECK(uvp_await(d, NULL) == 0);
  uvp_promise_release(d);
  FCHECK(o->freed == 0);
  o->body_done = 1;
  return uvp_ret_pass();
}

static void test_arg_free_once(void **state) {
  fixture_t *f = *state;
  static own_t o;
  o = (own_t){.f = f};
  uvp_fiber_opts_t opts = {.stack_size = 0, .arg_free = own_free};
  uvp_promise_t *fp = NULL;
  /* Refused spawns free arg at once (uvp.h, "Handing over"). */
  assert_int_equal(uvp_fiber_spawn(f->ctx, NULL, &o, &opts, &fp), UV_EINVAL);
  assert_int_equal(uvp_fiber_spawn(NULL, own_body, &o, &opts, &fp), UV_EINVAL);
  assert_null(fp);
  assert_int_equal(o.freed, 2);
  o = (own_t){.f = f};
  assert_int_equal(uvp_fiber_spawn(f->ctx, own_body, &o, &opts, &fp), 0);
  assert_int_equal(o.freed, 0);
  run_loop(f);
  assert_int_equal(o.body_done, 1);
  assert_int_equal(o.freed, 1);
  assert_int_equal(o.freed_early, 0);
  release_fulfilled(fp);
  assert_int_equal(o.freed, 1);
}

/* A fiber nobody waits for (out NULL): it runs to its end, its promise goes
 * with it, and a rejection it returns is reported as unhandled; one still
 * waiting at teardown returns there and leaves nothing behind. */
static uvp_ret_t unawaited_body(void *arg) {
  own_t *o = arg;
  uvp_promise_t *d;
  int rc = uvp_await_take(uvp_delay(o->f->ctx, 1, NULL, NULL, 0, &d), &d, NULL);
  o->body_done++;
  return rc == 0 ? uvp_ret_reject(UV_EIO, NULL, NULL) : uvp_ret_pass();
}

static int forever_rc;

static uvp_ret_t forever_body(void *arg) {
  fixture_t *f = arg;
  uvp_promise_t *never;
  FCHECK(uvp_promise_new(f->ctx, &never) == 0);
  forever_rc = uvp_await(never, NULL);
  uvp_promise_release(never);
  return uvp_ret_pass();
}

static void test_spawn_without_promise(void **state) {
  fixture_t *f = *state;
  static own_t o;
  o = (own_t){.f = f};
  count_unhandled(f);
  uvp_fiber_opts_t opts = {.arg_free = own_free};
  assert_int_equal(uvp_fiber_spawn(f->ctx, unawaited_body, &o, &opts, NULL), 0);
  run_loop(f);
  assert_int_equal(o.body_done, 1);
  assert_int_equal(o.freed, 1);
  assert_int_equal(g_unhandled, 1); /* its UV_EIO: nobody observed it */
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);

  forever_rc = 0;
  assert_int_equal(uvp_fiber_spawn(f->ctx, forever_body, f, NULL, NULL), 0);
  run_loop(f); /* parked: nothing keeps the loop */
  close_ctx(f);
  assert_int_equal(forever_rc, UVP_ECLOSED);
}

/* ---- uvp_await_take -------------------------------------------------------
 */

/* A fresh call awaited in one expression: the stat of a real file, of a
 * missing one, and a start call that fails (NULL path: UV_EINVAL without
 * waiting, the slot not read).  Every slot ends NULL, nothing stays. */
typedef struct take_stat_s {
  uvp_ctx_t *ctx;
  const char *path, *missing;
  int rc_file, rc_missing, status_missing, rc_null;
  int64_t size;
  uvp_outcome_t out_null;
  uvp_promise_t *slots[3];
  size_t live_in_fiber; /* promises alive after the three takes */
} take_stat_t;

static uvp_ret_t take_stat_body(void *arg) {
  take_stat_t *t = arg;
  uvp_promise_t *st;
  uvp_outcome_t o;
  t->rc_file = uvp_await_take(uvp_fs_stat(t->ctx, t->path, &st), &st, &o);
  if (t->rc_file == 0)
    t->size = (int64_t)((const uv_stat_t *)o.value)->st_size;
  t->slots[0] = st;
  t->rc_missing = uvp_await_take(uvp_fs_stat(t->ctx, t->missing, &st), &st, &o);
  t->status_missing = o.status;
  t->slots[1] = st;
  st = SENTINEL(3); /* read, it would be released: a crash */
  o = (uvp_outcome_t){1, SENTINEL(0), SENTINEL(1)};
  t->rc_null = uvp_await_take(uvp_fs_stat(t->ctx, NULL, &st), &st, &o);
  t->out_null = o;
  t->slots[2] = st;
  t->live_in_fiber = stats(t->ctx).live;
  return uvp_ret_pass();
}

static void test_take_fresh_call(void **state) {
  fixture_t *f = *state;
  char path[] = "/tmp/uvp-test-fiber-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "twelve bytes", 12), 12);
  assert_int_equal(close(fd), 0);
  static take_stat_t t;
  t = (take_stat_t){.ctx = f->ctx,
                    .path = path,
                    .missing = "/tmp/uvp-test-fiber-missing/none",
                    .rc_file = 1,
                    .rc_missing = 1,
                    .rc_null = 1,
                    .slots = {SENTINEL(0), SENTINEL(0), SENTINEL(0)}};
  size_t live = stats(f->ctx).live;
  uvp_promise_t *fp = spawn_and_run(f, take_stat_body, &t);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(t.rc_file, 0);
  assert_int_equal(t.size, 12);
  assert_int_equal(t.rc_missing, UV_ENOENT);
  assert_int_equal(t.status_missing, UV_ENOENT);
  assert_int_equal(t.rc_null, UV_EINVAL);
  assert_int_equal(t.out_null.status, UV_EINVAL);
  assert_null(t.out_null.value);
  assert_null(t.out_null.promise);
  for (int i = 0; i < 3; i++)
    assert_null(t.slots[i]);
  /* The fiber's own, and the missing file's stat, held until the next
   * await or the fiber's return. */
  assert_int_equal(t.live_in_fiber, live + 2);
  assert_int_equal(stats(f->ctx).live, live + 1); /* fp alone */
  release_fulfilled(fp);
}

/* The outcome of a take stays valid until the fiber's next await returns
 * (the promise is released after that await, so its value may be lent to
 * the call awaited next) or the fiber returns; retained, beyond. */
typedef struct held_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *a, *c, *e, *gate;
  int freed_a, freed_c, freed_e;
  int v_a, v_c, v_e;
  int a_after_gate, c_after_await, c_kept_value;
  int rc;
} held_t;

static uvp_ret_t held_body(void *arg) {
  held_t *h = arg;
  uvp_outcome_t o, g;
  FCHECK(uvp_await_take(0, &h->a, &o) == 0);
  FCHECK(h->a == NULL);
  h->v_a = ((boxed_t *)o.value)->v;
  /* The test looks at freed_a while the fiber waits here. */
  FCHECK(uvp_await(h->gate, &g) == 0);
  h->a_after_gate = h->freed_a;
  FCHECK(uvp_await_take(0, &h->c, &o) == 0);
  h->v_c = ((boxed_t *)o.value)->v;
  uvp_promise_t *kept = uvp_promise_retain(o.promise);
  FCHECK(uvp_await(h->gate, NULL) == 0); /* settled: yields once */
  h->c_after_await = h->freed_c;
  h->c_kept_value = ((boxed_t *)uvp_promise_value(kept))->v;
  uvp_promise_release(kept);
  FCHECK(uvp_await_take(0, &h->e, &o) == 0);
  h->v_e = ((boxed_t *)o.value)->v;
  return uvp_ret_pass(); /* e goes with the fiber */
}

static void test_take_value_lifetime(void **state) {
  fixture_t *f = *state;
  static held_t h;
  h = (held_t){.ctx = f->ctx};
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, &h.freed_a), boxed_free, &h.a),
      0);
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(3, &h.freed_c), boxed_free, &h.c),
      0);
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(5, &h.freed_e), boxed_free, &h.e),
      0);
  assert_int_equal(uvp_promise_new(f->ctx, &h.gate), 0);
  uvp_promise_t *fp = spawn_and_run(f, held_body, &h);
  assert_int_equal(h.v_a, 1);
  assert_int_equal(h.freed_a, 0); /* held across the await in progress */
  assert_int_equal(uvp_promise_resolve(h.gate, NULL, NULL), 0);
  run_loop(f);
  assert_fibers_ok();
  assert_int_equal(h.a_after_gate, 1); /* released as that await returned */
  assert_int_equal(h.v_c, 3);
  assert_int_equal(h.c_after_await, 0); /* retained */
  assert_int_equal(h.c_kept_value, 3);
  assert_int_equal(h.freed_c, 1);
  assert_int_equal(h.v_e, 5);
  assert_int_equal(h.freed_e, 1); /* at the fiber's return */
  release_fulfilled(fp);
  uvp_promise_release(h.gate);
}

/* 10 000 takes of fresh promises: one held at a time, nothing allocated
 * once warm (the slabs stay as they were after the first thousand).  At
 * most three promises live: the fiber's, the taken one, and the one whose
 * queued wake last resumed the fiber from the run queue (the drain holds it
 * until the fiber next switches back to the loop). */
typedef struct take_loop_s {
  uvp_ctx_t *ctx;
  int steps, done, bad;
  size_t live_max, slab_mid, slab_end, allocs_mid, allocs_end;
} take_loop_t;

static uvp_ret_t take_loop_body(void *arg) {
  take_loop_t *t = arg;
  int i;
  for (i = 0; i < t->steps; i++) {
    uvp_promise_t *p;
    uvp_outcome_t o;
    if (uvp_await_take(uvp_promise_resolved(t->ctx, SENTINEL(i % 8), NULL, &p),
                       &p, &o) != 0 ||
        o.value != SENTINEL(i % 8) || p != NULL)
      t->bad++;
    size_t live = stats(t->ctx).live;
    if (live > t->live_max)
      t->live_max = live;
    if (i + 1 == t->steps / 10) {
      uvp_ctx_stats_t s = stats(t->ctx);
      t->slab_mid = s.slab_bytes;
      t->allocs_mid = s.slab_allocs;
    }
  }
  t->done = i;
  uvp_ctx_stats_t s = stats(t->ctx);
  t->slab_end = s.slab_bytes;
  t->allocs_end = s.slab_allocs;
  return uvp_ret_pass();
}

static void test_take_loop_flat(void **state) {
  fixture_t *f = *state;
  static take_loop_t t;
  t = (take_loop_t){.ctx = f->ctx, .steps = 10000};
  uvp_promise_t *fp = spawn_and_run(f, take_loop_body, &t);
  assert_int_equal(t.bad, 0);
  assert_int_equal(t.done, t.steps);
  print_message("at most %zu promises live, slab bytes %zu -> %zu\n",
                t.live_max, t.slab_mid, t.slab_end);
  assert_true(t.live_max <= 3);
  assert_int_equal(t.slab_end, t.slab_mid);
  assert_int_equal(t.allocs_end, t.allocs_mid);
  release_fulfilled(fp);
}

/* Cancellation as uvp_await's: the take in progress returns UV_ECANCELED
 * and cancels the promise only it waited for; a later take is refused at
 * once, releases its promise and reports no unhandled rejection (the take
 * was its handler); a shielded take waits on and gets the value. */
typedef struct take_cancel_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *q, *rejected, *boxed, *slow;
  uvp_promise_t *slow_lent; /* slow, borrowed from the fiber's take */
  int freed;
  int rc_q, rc_refused, status_refused, rc_boxed, freed_after_refusal;
  int rc_shielded, rc_after;
  void *promise_refused, *value_shielded;
} take_cancel_t;

static uvp_ret_t take_cancel_body(void *arg) {
  take_cancel_t *c = arg;
  uvp_outcome_t o;
  c->rc_q = uvp_await_take(0, &c->q, &o); /* cancelled here */
  o.promise = SENTINEL(0);
  c->rc_refused = uvp_await_take(0, &c->rejected, &o);
  c->status_refused = o.status;
  c->promise_refused = o.promise;
  c->rc_boxed = uvp_await_take(0, &c->boxed, NULL);
  c->freed_after_refusal = c->freed;
  c->rc_shielded = uvp_await_shielded_take(0, &c->slow, &o);
  c->value_shielded = o.value;
  uvp_promise_t *p;
  c->rc_after = uvp_await_take(uvp_promise_new(c->ctx, &p), &p, NULL);
  return uvp_ret_pass();
}

static void test_take_cancel_and_shield(void **state) {
  fixture_t *f = *state;
  static hook_t hook, slow_hook;
  static take_cancel_t c;
  hook = slow_hook = (hook_t){.calls = 0};
  c = (take_cancel_t){.ctx = f->ctx,
                      .rc_q = 1,
                      .rc_refused = 1,
                      .rc_boxed = 1,
                      .rc_shielded = 1,
                      .rc_after = 1};
  count_unhandled(f);
  c.q = producer(f, &hook);
  c.slow = c.slow_lent = producer(f, &slow_hook);
  assert_int_equal(
      uvp_promise_rejected(f->ctx, UV_EPROTO, NULL, NULL, &c.rejected), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, boxed_new(2, &c.freed),
                                        boxed_free, &c.boxed),
                   0);
  uvp_promise_t *fp = spawn_and_run(f, take_cancel_body, &c);
  assert_int_equal(uvp_promise_cancel(fp), 0);
  assert_int_equal(hook.calls, 1); /* only the fiber waited for q */
  run_loop(f);
  assert_int_equal(c.rc_q, UV_ECANCELED);
  assert_null(c.q);
  assert_int_equal(c.rc_refused, UV_ECANCELED);
  assert_int_equal(c.status_refused, UV_ECANCELED);
  assert_null(c.promise_refused);
  assert_null(c.rejected);
  assert_int_equal(c.rc_boxed, UV_ECANCELED);
  assert_int_equal(c.freed_after_refusal, 1); /* released at once */
  assert_null(c.boxed);
  assert_int_equal(c.rc_shielded, 1); /* waits on */
  assert_int_equal(slow_hook.calls, 0);
  assert_null(c.slow);
  assert_int_equal(uvp_promise_resolve(c.slow_lent, SENTINEL(4), NULL), 0);
  run_loop(f);
  assert_int_equal(c.rc_shielded, 0);
  assert_ptr_equal(c.value_shielded, SENTINEL(4));
  assert_int_equal(c.rc_after, UV_ECANCELED);
  assert_int_equal(g_unhandled, 0);
  assert_int_equal(stats(f->ctx).fibers, 0);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ECANCELED);
  uvp_promise_release(fp);
}

/* Teardown: a fiber suspended in a take returns with UVP_ECLOSED, and both
 * the promise it waited for and the one its earlier take holds go. */
typedef struct take_down_s {
  uvp_promise_t *held, *never;
  int freed, rc_held, rc_never, unwound;
} take_down_t;

static uvp_ret_t take_down_body(void *arg) {
  take_down_t *d = arg;
  d->rc_held = uvp_await_take(0, &d->held, NULL);
  d->rc_never = uvp_await_take(0, &d->never, NULL); /* torn down here */
  d->unwound++;
  return uvp_ret_pass();
}

static void test_take_teardown(void **state) {
  fixture_t *f = *state;
  static take_down_t d;
  static hook_t hook;
  hook = (hook_t){.calls = 0};
  d = (take_down_t){.rc_held = 1, .rc_never = 1};
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(6, &d.freed), boxed_free, &d.held),
      0);
  d.never = producer(f, &hook);
  uvp_promise_t *fp = spawn_and_run(f, take_down_body, &d);
  assert_int_equal(d.rc_held, 0);
  assert_int_equal(d.freed, 0);
  (void)close_ctx(f);
  assert_int_equal(d.rc_never, UVP_ECLOSED);
  assert_int_equal(d.unwound, 1);
  assert_int_equal(hook.calls, 1);
  assert_int_equal(hook.code, UVP_ECLOSED);
  assert_int_equal(d.freed, 1);
  assert_null(d.never);
  assert_int_equal(uvp_promise_reason(fp, NULL), UVP_ECLOSED);
  uvp_promise_release(fp);
}

/* Refused without a fiber (the loop's stack, another thread), for another
 * context's promise, for a NULL slot or promise: each consumes what it was
 * given; a failed start call's code comes back whatever the slot. */
typedef struct take_off_s {
  uvp_promise_t *p;
  int rc;
  uvp_outcome_t o;
} take_off_t;

static void take_on_thread(void *arg) {
  take_off_t *x = arg;
  x->rc = uvp_await_take(0, &x->p, &x->o);
}

static int take_freed;

static bool freed_twice(void *arg) {
  (void)arg;
  return take_freed == 2;
}

static void idle_nothing(uv_idle_t *h) { (void)h; }

typedef struct take_xctx_s {
  uvp_promise_t *theirs;
  int rc;
} take_xctx_t;

static uvp_ret_t take_xctx_body(void *arg) {
  take_xctx_t *x = arg;
  x->rc = uvp_await_take(0, &x->theirs, NULL);
  return uvp_ret_pass();
}

static void test_take_refused(void **state) {
  fixture_t *f = *state;
  int *freed = &take_freed;
  *freed = 0;
  uvp_promise_t *p;
  uvp_outcome_t o = {1, SENTINEL(0), SENTINEL(1)};
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(1, freed), boxed_free, &p), 0);
  assert_int_equal(uvp_await_take(0, &p, &o), UVP_ENOTFIBER);
  assert_null(p);
  assert_int_equal(*freed, 1);
  assert_int_equal(o.status, UVP_ENOTFIBER);
  assert_null(o.value);
  assert_null(o.promise);
  assert_int_equal(uvp_await_shielded_take(0, &p, &o), UV_EINVAL); /* NULL */
  assert_int_equal(uvp_await_take(0, NULL, &o), UV_EINVAL);
  assert_int_equal(o.status, UV_EINVAL);
  assert_int_equal(uvp_await_take(UV_ENOENT, NULL, NULL), UV_ENOENT);
  p = SENTINEL(2); /* not read */
  assert_int_equal(uvp_await_take(UV_EMFILE, &p, &o), UV_EMFILE);
  assert_null(p);
  assert_int_equal(o.status, UV_EMFILE);
  /* From another thread: the release goes to the loop. */
  static take_off_t x;
  x = (take_off_t){.rc = 1};
  assert_int_equal(
      uvp_promise_resolved(f->ctx, boxed_new(2, freed), boxed_free, &x.p), 0);
  run_on_other_thread(take_on_thread, &x);
  assert_int_equal(x.rc, UVP_ENOTFIBER);
  assert_int_equal(x.o.status, UVP_ENOTFIBER);
  assert_null(x.p);
  /* uvp's handles do not keep the loop alive: this does, until the loop
   * has applied the release. */
  uv_idle_t keep;
  assert_int_equal(uv_idle_init(&f->loop, &keep), 0);
  assert_int_equal(uv_idle_start(&keep, idle_nothing), 0);
  run_until_true(f, freed_twice, NULL);
  uv_close((uv_handle_t *)&keep, NULL);
  run_loop(f);
  /* Another context's promise. */
  uvp_ctx_t *other;
  static take_xctx_t y;
  y = (take_xctx_t){.rc = 1};
  assert_int_equal(uvp_ctx_new(&f->loop, &other), 0);
  assert_int_equal(
      uvp_promise_resolved(other, boxed_new(3, freed), boxed_free, &y.theirs),
      0);
  uvp_promise_t *fp = spawn_and_run(f, take_xctx_body, &y);
  assert_int_equal(y.rc, UVP_EXCTX);
  assert_null(y.theirs);
  assert_int_equal(*freed, 3);
  release_fulfilled(fp);
  assert_int_equal(uvp_ctx_close(other), 0);
}

/* ---- the pending dump ---------------------------------------------------- */

static int dump_await_line;

static uvp_ret_t dump_body(void *arg) {
  uvp_promise_t *p = arg;
  dump_await_line = __LINE__ + 1;
  FCHECK(uvp_await(p, NULL) == 0);
  return uvp_ret_pass();
}

static void test_dump_pending(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *fp, *fq;
  char want[512], text[8192];
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  int spawn_line = __LINE__ + 1; /* the site is the caller's: no helper */
  assert_int_equal(uvp_fiber_spawn(f->ctx, dump_body, p, NULL, &fp), 0);
  run_loop(f);
  int queued_line = __LINE__ + 1;
  assert_int_equal(uvp_fiber_spawn(f->ctx, dump_body, p, NULL, &fq), 0);
  FILE *out = tmpfile();
  assert_non_null(out);
  int count = uvp_ctx_dump_pending(f->ctx, out);
  /* p, the two fibers' promises, the two fibers */
  assert_true(count >= 4);
  rewind(out);
  size_t len = fread(text, 1, sizeof(text) - 1, out);
  text[len] = '\0';
  fclose(out);
  snprintf(want, sizeof(want), "spawned at %s:%d awaiting", __FILE__,
           spawn_line);
  if (strstr(text, want) == NULL)
    fail_msg("no \"%s\" in the dump:\n%s", want, text);
  char *line = strstr(text, want);
  snprintf(want, sizeof(want), " at %s:%d", __FILE__, dump_await_line);
  char *eol = strchr(line, '\n');
  char *at = strstr(line, want);
  if (at == NULL || (eol != NULL && at > eol))
    fail_msg("no await site \"%s\" on the fiber's line:\n%s", want, text);
  snprintf(want, sizeof(want), "spawned at %s:%d not started", __FILE__,
           queued_line);
  if (strstr(text, want) == NULL)
    fail_msg("no \"%s\" in the dump:\n%s", want, text);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(fq), UVP_FULFILLED);
  uvp_promise_release(fp);
  uvp_promise_release(fq);
  uvp_promise_release(p);
}

/* ---- stacks -------------------------------------------------------------- */

typedef struct where_s {
  fixture_t *f;
  void *frame;
  uvp_ctx_stats_t inside;
  uintptr_t base; /* the lowest byte above the guard under the frame */
  size_t use;     /* bytes of stack to use */
  size_t used;
  int bad;
} where_t;

static NOINLINE void use_stack(where_t *w, char *top, unsigned depth) {
  volatile unsigned char buf[512];
  size_t used = (size_t)(top - (char *)__builtin_frame_address(0));
  for (int i = 0; i < 512; i++)
    buf[i] = (unsigned char)(depth + (unsigned)i);
  if (used > w->used)
    w->used = used;
  if (used < w->use)
    use_stack(w, top, depth + 1);
  for (int i = 0; i < 512; i++)
    w->bad |= buf[i] != (unsigned char)(depth + (unsigned)i);
}

/* The lowest byte above the first page under addr that faults (a guard,
 * whether a marker or PROT_NONE), looking at most `max` bytes down; 0 if
 * none.  It asserts nothing, so code running on a fiber may call it. */
static uintptr_t guard_under(const void *addr, size_t max) {
  uintptr_t page = page_size();
  uintptr_t p = (uintptr_t)addr & ~(page - 1);
  for (uintptr_t end = p - max; p > end; p -= page)
    if (proc_guarded((void *)(p - 1)))
      return p;
  return 0;
}

static uvp_ret_t where_body(void *arg) {
  where_t *w = arg;
  w->frame = __builtin_frame_address(0);
  w->inside = stats(w->f->ctx);
  w->base = guard_under(w->frame, 2 * 1024 * 1024);
  if (w->use != 0)
    use_stack(w, w->frame, 0);
  return uvp_ret_pass();
}

static void spawn_where(fixture_t *f, where_t *w, const uvp_fiber_opts_t *o) {
  uvp_promise_t *fp;
  w->f = f;
  assert_int_equal(uvp_fiber_spawn(f->ctx, where_body, w, o, &fp), 0);
  run_loop(f);
  release_fulfilled(fp);
  assert_int_equal(w->bad, 0);
  assert_true(w->used >= w->use);
}

static void test_stack_reuse(void **state) {
  fixture_t *f = *state;
#if defined(T_COMPACT)
  SKIP_BECAUSE("compact mode: a stack per fiber is the default mode's");
#endif
  where_t a = {.use = 0}, b = {.use = 0};
  uvp_ctx_stats_t s = stats(f->ctx);
  assert_int_equal(s.fibers, 0);
  assert_int_equal(s.fiber_stacks, 0);
  assert_int_equal(s.fiber_stack_bytes, 0);
  spawn_where(f, &a, NULL);
  assert_int_equal(a.inside.fibers, 1);
  assert_int_equal(a.inside.fiber_stacks, 0);
  s = stats(f->ctx);
  assert_int_equal(s.fibers, 0);
  assert_int_equal(s.fiber_stacks, 1);
  size_t one = s.fiber_stack_bytes;
  assert_true(one >= DEFAULT_STACK && one <= DEFAULT_STACK + 3 * page_size());
  /* The next fiber gets the same stack back. */
  spawn_where(f, &b, NULL);
  assert_int_equal(b.inside.fiber_stacks, 0);
  assert_ptr_equal(b.frame, a.frame);
  s = stats(f->ctx);
  assert_int_equal(s.fiber_stacks, 1);
  assert_int_equal(s.fiber_stack_bytes, one);
  /* Many at once: as many stacks come back as the caps allow. */
  enum { N = 100 };
  uvp_promise_t *p, *fp[N];
  static same_t w[N];
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  for (int i = 0; i < N; i++) {
    w[i] = (same_t){NULL, i, p, 1, NULL};
    assert_int_equal(uvp_fiber_spawn(f->ctx, same_body, &w[i], NULL, &fp[i]),
                     0);
  }
  run_loop(f);
  s = stats(f->ctx);
  assert_int_equal(s.fibers, N);
  assert_int_equal(s.fiber_stacks, 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  run_loop(f);
  s = stats(f->ctx);
  assert_int_equal(s.fibers, 0);
  /* All kept: N were out at once, fewer than the warm stacks' caps (64,
   * 16 MiB) and the spares' (1024) allow together. */
  assert_int_equal(s.fiber_stacks, N);
  assert_int_equal(s.fiber_stack_bytes, s.fiber_stacks * one);
  for (int i = 0; i < N; i++) {
    assert_int_equal(w[i].rc, 0);
    uvp_promise_release(fp[i]);
  }
  uvp_promise_release(p);
}

/* Under a fiber's first frames, the stack's usable part (rounded to
 * pages, plus a page at most for the fiber's own record), and under that a
 * guard page: a guard marker (in the same mapping: only an access tells)
 * or a PROT_NONE page. */
static void assert_stack_of(const where_t *w, size_t size) {
  size_t height = (size_t)((uintptr_t)w->frame - w->base);
  if (w->base == 0)
    fail_msg("stack of %zu: no guard under the fiber's frames", size);
  if (height > size + 2 * page_size() || height + 4 * page_size() < size)
    fail_msg("stack of %zu: first frame %zu bytes above its guard", size,
             height);
}

static void test_stack_sizes(void **state) {
  fixture_t *f = *state;
#if defined(T_COMPACT)
  SKIP_BECAUSE("compact mode: a stack per fiber is the default mode's");
#endif
  where_t w = {.use = 48 * 1024};
  spawn_where(f, &w, NULL);
  assert_stack_of(&w, DEFAULT_STACK);
  /* Per spawn. */
  uvp_fiber_opts_t o = {.stack_size = 64 * 1024, .arg_free = NULL};
  w = (where_t){.use = 48 * 1024};
  spawn_where(f, &w, &o);
  assert_stack_of(&w, 64 * 1024);
  /* Not pooled: only stacks of the context's size are kept. */
  assert_int_equal(stats(f->ctx).fiber_stacks, 1);
  /* Per context: the stacks kept of the old size go. */
  assert_int_equal(uvp_ctx_set_fiber_stack(f->ctx, 32 * 1024), 0);
  assert_int_equal(stats(f->ctx).fiber_stacks, 0);
  w = (where_t){.use = 24 * 1024};
  spawn_where(f, &w, NULL);
  assert_stack_of(&w, 32 * 1024);
  assert_int_equal(stats(f->ctx).fiber_stacks, 1);
  /* At least 16 KiB. */
  assert_int_equal(uvp_ctx_set_fiber_stack(f->ctx, 1000), 0);
  w = (where_t){.use = 8 * 1024};
  spawn_where(f, &w, NULL);
  assert_stack_of(&w, 16 * 1024);
  o.stack_size = 100;
  w = (where_t){.use = 8 * 1024};
  spawn_where(f, &w, &o);
  assert_stack_of(&w, 16 * 1024);
  assert_int_equal(uvp_ctx_set_fiber_stack(f->ctx, 0), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_fiber_stack(NULL, 65536), UV_EINVAL);
}

/* A fiber that runs off its stack is stopped with a report naming where it
 * was spawned, in a child process, whatever guards the stack:
 *   a guard marker (the kernel's, where it has them) or a PROT_NONE page
 *   (the fallback, forced): uvp's SIGSEGV handler reports the fault in the
 *   guard page, then hands it on (to ASan's handler, which reports the
 *   faulting access too, or the default action: death by SIGSEGV);
 *   a canary (the fallback once page guards run out, forced): an overrun
 *   into the stack below is found at the fiber's next switch (its await),
 *   and the process aborts. */
static volatile int forever = 1; /* hides the recursion's end from gcc */

static NOINLINE int recurse_forever(int n) {
  volatile char buf[256];
  buf[0] = (char)n;
  return (forever ? recurse_forever(n + 1) : 0) + buf[0];
}

static int overflow_line;

static uvp_ret_t overflow_body(void *arg) {
  (void)arg;
  (void)recurse_forever(0);
  return uvp_ret_pass();
}

/* Writes frames down to `depth` bytes below top, and returns. */
/* Writes every byte from here down to `depth` below top, as one block:
 * frames of a recursion leave gaps (padding) that the canary could fall
 * into, depending on where the stack's top is.  Not instrumented: ASan
 * would report the writes landing in the stack below (its redzones),
 * before the canary could. */
static NOINLINE NO_ASAN int overrun_to(char *top, size_t depth) {
  size_t used = (size_t)(top - (char *)__builtin_frame_address(0));
  size_t n = depth > used ? depth - used : 1;
  volatile char *buf = __builtin_alloca(n);
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)i;
  return buf[0] + buf[n - 1];
}

static uvp_promise_t *overrun_gate;

/* Past the unused guard page under a 16 KiB stack (20 KiB at most, with
 * the stagger of its top) and the canary at the top of the stack below
 * it, then an await. */
static uvp_ret_t overrun_body(void *arg) {
  (void)arg;
  (void)overrun_to(__builtin_frame_address(0), (16 + 4 + 4 + 2) * 1024);
  (void)uvp_await(overrun_gate, NULL);
  return uvp_ret_pass();
}

static uvp_ret_t parked_body(void *arg) {
  (void)arg;
  (void)uvp_await(overrun_gate, NULL);
  return uvp_ret_pass();
}

/* The resumed variant, in the compact mode: the fiber that overruns first
 * waits for another to run, which takes the shared stack meanwhile, so the
 * report must name the overrunning fiber again as it comes back. */
static uvp_promise_t *resume_gate;

static uvp_ret_t resume_then_park_body(void *arg) {
  (void)arg;
  (void)uvp_promise_resolve(resume_gate, NULL, NULL);
  (void)uvp_await(overrun_gate, NULL);
  return uvp_ret_pass();
}

/* The other fiber is spawned here, so that it runs once this one waits. */
static uvp_ret_t overrun_resumed_body(void *arg) {
  uvp_promise_t *other;
  if (uvp_fiber_spawn(arg, resume_then_park_body, NULL, NULL, &other) != 0)
    _exit(3);
  (void)uvp_await(resume_gate, NULL);
  return overrun_body(NULL);
}

static int overflow_guards;
static bool overflow_resumed;
static struct sigaction startup_segv; /* before cmocka's, in main */

static void overflow_child(int fd) {
  struct rlimit no_core = {0, 0};
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *fp, *below;
  (void)setrlimit(RLIMIT_CORE, &no_core); /* an expected death */
  /* Not cmocka's handler (which would jump back into the test, in the
   * child): the one the process started with, as a program has it (ASan's,
   * or the default action), to which uvp's hands the fault on. */
  (void)sigaction(SIGSEGV, &startup_segv, NULL);
  uvp__stack_default_guards(overflow_guards);
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_ctx_set_fiber_stack(ctx, 16 * 1024) != 0 ||
      uvp_promise_new(ctx, &overrun_gate) != 0 ||
      uvp_promise_new(ctx, &resume_gate) != 0)
    _exit(3);
  if (overflow_resumed) {
    if (uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0 ||
        uvp_fiber_spawn(ctx, parked_body, NULL, NULL, &below) != 0)
      _exit(3);
    overflow_line = __LINE__ + 1;
    if (uvp_fiber_spawn(ctx, overrun_resumed_body, ctx, NULL, &fp) != 0)
      _exit(3);
  } else if (overflow_guards == UVP__GUARDS_CANARY) {
    /* A neighbour below in the same chunk, then the fiber that overruns. */
    if (uvp_fiber_spawn(ctx, parked_body, NULL, NULL, &below) != 0)
      _exit(3);
    overflow_line = __LINE__ + 1;
    if (uvp_fiber_spawn(ctx, overrun_body, NULL, NULL, &fp) != 0)
      _exit(3);
  } else {
    overflow_line = __LINE__ + 1;
    if (uvp_fiber_spawn(ctx, overflow_body, NULL, NULL, &fp) != 0)
      _exit(3);
  }
  if (write(fd, &overflow_line, sizeof(overflow_line)) !=
      (ssize_t)sizeof(overflow_line))
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT);
  _exit(5); /* the fiber came back: not stopped */
}

/* The stderr of the last child (test_in_child). */
static char child_err[65536];

static void overflow_stopped(int guards) {
  int fd;
  char want[512];
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("under valgrind, which reports the overflow its own way");
  overflow_guards = guards;
  int status = test_in_child(overflow_child, &fd, child_err, sizeof(child_err));
  if (read(fd, &overflow_line, sizeof(overflow_line)) !=
      (ssize_t)sizeof(overflow_line))
    overflow_line = -1;
  close(fd);
  if (WIFEXITED(status) &&
      (WEXITSTATUS(status) == 3 || WEXITSTATUS(status) == 5))
    fail_msg("child exited with %d (3: setup, 5: not stopped); its stderr:\n%s",
             WEXITSTATUS(status), child_err);
  snprintf(want, sizeof(want), "uvp: the fiber spawned at %s:%d %s", __FILE__,
           overflow_line,
           guards == UVP__GUARDS_CANARY ? "overran its stack of "
                                        : "ran off its stack of ");
  if (strstr(child_err, want) == NULL)
    fail_msg("no \"%s\" in the child's stderr (status %#x):\n%s", want,
             (unsigned)status, child_err);
  if (guards == UVP__GUARDS_CANARY) {
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
      fail_msg("the child did not abort (status %#x); its stderr:\n%s",
               (unsigned)status, child_err);
    return;
  }
#if defined(T_ASAN) || defined(T_TSAN)
  /* The sanitizer's handler, handed the fault, reports the access itself
   * (ASan) or at least the overflow (TSan), and ends the process. */
  if (strstr(child_err, "stack-overflow") == NULL)
    fail_msg("no sanitizer's report after uvp's:\n%s", child_err);
  assert_true(WIFSIGNALED(status) || WEXITSTATUS(status) != 0);
  return;
#endif
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
    fail_msg("the child did not die of SIGSEGV (status %#x); its stderr:\n%s",
             (unsigned)status, child_err);
}

static void test_overflow_guard_page(void **state) {
  (void)state;
  overflow_stopped(UVP__GUARDS_AUTO);
}

static void test_overflow_fallback_page(void **state) {
  (void)state;
  overflow_stopped(UVP__GUARDS_FALLBACK);
}

static void test_overflow_fallback_canary(void **state) {
  (void)state;
  overflow_stopped(UVP__GUARDS_CANARY);
}

static void test_overflow_canary_after_resume(void **state) {
  (void)state;
  overflow_resumed = true;
  overflow_stopped(UVP__GUARDS_CANARY);
  overflow_resumed = false;
}

/* ---- many fibers --------------------------------------------------------- */

/* A guarded stack takes two of the 65 530 mappings a process may have.
 * valgrind walks its registered stacks at every switch and TSan maps
 * memory per fiber: fewer there; ASan with detect_stack_use_after_return
 * gives each fiber a fake stack of several MiB. */
static size_t scaled(size_t plain, size_t valgrind, size_t tsan) {
#if defined(T_TSAN)
  (void)plain;
  (void)valgrind;
  return tsan;
#else
  (void)tsan;
  return RUNNING_ON_VALGRIND ? valgrind : plain;
#endif
}

typedef struct many_s {
  uvp_promise_t **ps;
  size_t next, done, bad;
} many_t;

static uvp_ret_t many_body(void *arg) {
  many_t *m = arg;
  size_t i = m->next++; /* fibers start in spawn order */
  uvp_outcome_t o;
  int rc = uvp_await(m->ps[i], &o);
  if (rc != 0 || o.value != (void *)(uintptr_t)(i + 1))
    m->bad++;
  m->done++;
  return uvp_ret_value((void *)(uintptr_t)(i + 1), NULL);
}

static void test_many_suspended(void **state) {
  fixture_t *f = *state;
  /* ILP32: what a 32-bit address space is promised to hold (about 30 000
   * default stacks fit in all: fiber-stack.h). */
  size_t n = scaled(sizeof(void *) > 4 ? 30000 : 20000, 2000, 3000);
#if defined(T_ASAN)
  if (__asan_get_current_fake_stack() != NULL)
    n = 500;
#endif
  static many_t m;
  m = (many_t){.next = 0};
  uvp_promise_t **fps = calloc(n, sizeof(*fps));
  m.ps = calloc(n, sizeof(*m.ps));
  assert_non_null(fps);
  assert_non_null(m.ps);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &m.ps[i]), 0);
    assert_int_equal(uvp_fiber_spawn(f->ctx, many_body, &m, NULL, &fps[i]), 0);
  }
  run_loop(f);
  assert_int_equal(m.next, n);
  assert_int_equal(m.done, 0);
  assert_int_equal(stats(f->ctx).fibers, n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(
        uvp_promise_resolve(m.ps[i], (void *)(uintptr_t)(i + 1), NULL), 0);
  run_loop(f);
  assert_int_equal(m.done, n);
  assert_int_equal(m.bad, 0);
  uvp_ctx_stats_t s = stats(f->ctx);
  assert_int_equal(s.fibers, 0);
#if defined(T_COMPACT)
  assert_true(s.fiber_stacks <= KEPT_MAX);
#else
  /* Every stack came back; the pool keeps the last 1024 warm. */
  assert_int_equal(s.fiber_stacks, n < KEPT_MAX ? n : KEPT_MAX);
#endif
  for (size_t i = 0; i < n; i++) {
    assert_ptr_equal(uvp_promise_value(fps[i]), (void *)(uintptr_t)(i + 1));
    uvp_promise_release(fps[i]);
    uvp_promise_release(m.ps[i]);
  }
  free(fps);
  free(m.ps);
}

typedef struct maplim_s {
  uvp_ctx_t *ctx;
  size_t started, peak, bad;
} maplim_t;

static uvp_ret_t maplim_body(void *arg) {
  maplim_t *m = arg;
  size_t i = m->started++;
  uvp_promise_t *d;
  int rc = uvp_delay(m->ctx, 0, NULL, NULL, UVP_KEEP_ALIVE, &d);
  if (rc != 0) {
    m->bad++;
    return uvp_ret_reject(rc, NULL, NULL);
  }
  if (uvp_await(d, NULL) != 0)
    m->bad++;
  uvp_promise_release(d);
  return uvp_ret_value((void *)(uintptr_t)i, NULL);
}

/* Counts the fibers alive whenever the map starts one. */
static int maplim_start(void *arg, size_t i, uvp_promise_t **out) {
  maplim_t *m = arg;
  uvp_ctx_stats_t s;
  (void)i;
  if (uvp_ctx_stats(m->ctx, &s) != 0)
    m->bad++;
  else if (s.fibers > m->peak)
    m->peak = s.fibers;
  return uvp_fiber_spawn(m->ctx, maplim_body, m, NULL, out);
}

static void test_map_limit(void **state) {
  fixture_t *f = *state;
  size_t n = scaled(100000, 10000, 10000);
  static maplim_t m;
  m = (maplim_t){.ctx = f->ctx};
  uvp_map_opts_t o = {.limit = 1000, .flags = 0};
  uvp_promise_t *res;
  assert_int_equal(uvp_promise_map(f->ctx, n, maplim_start, &m, &o, &res), 0);
  run_loop(f);
  assert_int_equal(m.bad, 0);
  assert_int_equal(m.started, n);
  /* Before each start: at most limit - 1 alive, and the limit reached. */
  assert_int_equal(m.peak, o.limit - 1);
  assert_int_equal(uvp_promise_state(res), UVP_FULFILLED);
  const uvp_settled_list_t *l = uvp_promise_value(res);
  assert_int_equal(l->count, n);
  assert_int_equal(l->fulfilled, n);
  for (size_t i = 0; i < n; i++)
    if (l->items[i].value != (void *)(uintptr_t)i)
      fail_msg("item %zu has value %p", i, l->items[i].value);
  uvp_ctx_stats_t s = stats(f->ctx);
  assert_int_equal(s.fibers, 0);
  assert_true(s.fiber_stacks <= KEPT_MAX);
  uvp_promise_release(res);
}

/* A fiber awaiting in a loop: each step a promise resolved by a handler,
 * every 16th by an idle callback (a loop iteration). */
typedef struct flat_s {
  fixture_t *f;
  uv_idle_t idle;
  uvp_promise_t *for_idle;
  size_t steps, done, bad;
  size_t slab_mid, rss_mid, slab_end, rss_end;
  size_t heap_mid, heap_end;
} flat_t;

static void flat_idle(uv_idle_t *h) {
  flat_t *m = h->data;
  if (m->for_idle != NULL) {
    if (uvp_promise_resolve(m->for_idle, SENTINEL(6), NULL) != 0)
      m->bad++;
    m->for_idle = NULL;
  }
}

static uvp_ret_t resolve_arg(void *arg, const uvp_outcome_t *in) {
  (void)in;
  (void)uvp_promise_resolve(arg, SENTINEL(6), NULL);
  return uvp_ret_pass();
}

static uvp_ret_t flat_body(void *arg) {
  flat_t *m = arg;
  uvp_ctx_t *ctx = m->f->ctx;
  size_t i;
  for (i = 0; i < m->steps; i++) {
    uvp_promise_t *p, *r;
    uvp_outcome_t o;
    if (uvp_promise_new(ctx, &p) != 0) {
      m->bad++;
      break;
    }
    if (i % 16 == 0) {
      m->for_idle = p;
    } else if (uvp_promise_resolved(ctx, NULL, NULL, &r) != 0) {
      m->bad++;
      break;
    } else {
      if (uvp_promise_then(r, resolve_arg, p, NULL) != 0)
        m->bad++;
      uvp_promise_release(r);
    }
    if (uvp_await(p, &o) != 0 || o.value != SENTINEL(6))
      m->bad++;
    uvp_promise_release(p);
    if (i + 1 == m->steps / 10) {
      m->slab_mid = stats(ctx).slab_bytes;
      m->rss_mid = rss_bytes();
#if defined(T_TSAN)
      m->heap_mid = __sanitizer_get_current_allocated_bytes();
#endif
    }
  }
  m->done = i;
  m->slab_end = stats(ctx).slab_bytes;
  m->rss_end = rss_bytes();
#if defined(T_TSAN)
  m->heap_end = __sanitizer_get_current_allocated_bytes();
#endif
  uv_close((uv_handle_t *)&m->idle, NULL);
  return uvp_ret_pass();
}

static void test_await_loop_constant_memory(void **state) {
  fixture_t *f = *state;
  static flat_t m;
  m = (flat_t){.f = f, .steps = scaled(1000000, 100000, 200000)};
  uvp_promise_t *fp;
  assert_int_equal(uv_idle_init(&f->loop, &m.idle), 0);
  m.idle.data = &m;
  assert_int_equal(uv_idle_start(&m.idle, flat_idle), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, flat_body, &m, NULL, &fp), 0);
  uint64_t t0 = uv_hrtime();
  run_loop(f);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_int_equal(m.bad, 0);
  assert_int_equal(m.done, m.steps);
  print_message("%zu awaits in %.0f ms: slab bytes %zu -> %zu, "
                "RSS %zu KiB -> %zu KiB\n",
                m.steps, ms, m.slab_mid, m.slab_end, m.rss_mid / 1024,
                m.rss_end / 1024);
  assert_int_equal(m.slab_end, m.slab_mid);
#if defined(T_TSAN)
  /* TSan's resident memory moves with what the earlier tests left it (the
   * state of thousands of fibers, reclaimed lazily: this test alone stays
   * flat): what the program allocates is what must not grow. */
  print_message("TSan: heap %zu -> %zu bytes\n", m.heap_mid, m.heap_end);
  assert_true(m.heap_end <= m.heap_mid);
#else
  assert_true(m.rss_end <= m.rss_mid + 256 * 1024);
#endif
  release_fulfilled(fp);
}

/* ---- another thread settles ---------------------------------------------- */

typedef struct xthread_s {
  uvp_promise_t *p;
  uv_async_t keep; /* the loop waits for the thread: uvp's async does not */
  uv_thread_t loop_thread;
  int rc, on_loop_thread;
  void *value;
} xthread_t;

static void xthread_main(void *arg) {
  xthread_t *x = arg;
  uv_sleep(20);
  (void)uvp_promise_resolve(x->p, SENTINEL(5), NULL);
}

static uvp_ret_t xthread_body(void *arg) {
  xthread_t *x = arg;
  uvp_outcome_t o;
  uv_thread_t self;
  x->rc = uvp_await(x->p, &o);
  x->value = o.value;
  self = uv_thread_self();
  x->on_loop_thread = uv_thread_equal(&self, &x->loop_thread);
  uv_close((uv_handle_t *)&x->keep, NULL);
  return uvp_ret_pass();
}

static void test_resolved_from_thread(void **state) {
  fixture_t *f = *state;
  static xthread_t x;
  x = (xthread_t){.rc = 1};
  uv_thread_t tid;
  uvp_promise_t *fp;
  x.loop_thread = uv_thread_self();
  assert_int_equal(uvp_promise_new(f->ctx, &x.p), 0);
  assert_int_equal(uv_async_init(&f->loop, &x.keep, NULL), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, xthread_body, &x, NULL, &fp), 0);
  assert_int_equal(uv_thread_create(&tid, xthread_main, &x), 0);
  run_loop(f);
  assert_int_equal(uv_thread_join(&tid), 0);
  assert_int_equal(x.rc, 0);
  assert_ptr_equal(x.value, SENTINEL(5));
  assert_true(x.on_loop_thread);
  release_fulfilled(fp);
  uvp_promise_release(x.p);
}

/* ---- no memory, no address space ----------------------------------------- */

static void test_spawn_no_stack(void **state) {
  fixture_t *f = *state;
  static never_t n;
  uvp_fiber_opts_t o = {.stack_size = SIZE_MAX / 2, .arg_free = never_free};
  uvp_promise_t *fp = NULL;
  uvp_ctx_stats_t s0 = stats(f->ctx), s;
  n = (never_t){0, 0};
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &n, &o, &fp), UV_ENOMEM);
#if SIZE_MAX > UINT32_MAX
  o.stack_size = (size_t)1 << 47; /* all of a process's address space */
#else
  o.stack_size = SIZE_MAX - (1u << 20); /* ILP32: all of it but 1 MiB */
#endif
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &n, &o, &fp), UV_ENOMEM);
  /* Sizes that would wrap round to a tiny stack with the fiber's record
   * added: still no stack, not a small one. */
  o.stack_size = SIZE_MAX;
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &n, &o, &fp), UV_ENOMEM);
  o.stack_size = SIZE_MAX - 8;
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &n, &o, &fp), UV_ENOMEM);
  assert_null(fp);
  assert_int_equal(n.freed, 4); /* each refusal's arg_free, once */
  s = stats(f->ctx);
  assert_int_equal(s.live, s0.live);
  assert_int_equal(s.pending, s0.pending);
  assert_int_equal(s.fibers, 0);
  assert_int_equal(s.fiber_stacks, 0);
  run_loop(f);
  assert_int_equal(n.ran, 0);
  /* And the context still spawns. */
  o.stack_size = 0;
  assert_int_equal(uvp_fiber_spawn(f->ctx, never_body, &n, &o, &fp), 0);
  run_loop(f);
  assert_int_equal(n.ran, 1);
  assert_int_equal(n.freed, 5);
  uvp_promise_release(fp);
}

/* In a child: RLIMIT_AS just above what the process maps, so that no new
 * stack can be mapped.  Reports the codes seen. */
enum { R_SPAWN, R_FREED, R_FIBERS, R_LIVE, R_AGAIN, R_RAN, R_CLOSE, R_N };

static void rlimit_child(int fd) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *fp = NULL, *warm;
  never_t n = {0, 0};
  uvp_fiber_opts_t o = {.stack_size = 0, .arg_free = never_free};
  struct rlimit old, lim;
  uvp_ctx_stats_t s0, s;
  int r[R_N];
  unsigned long vm = 0;
  FILE *statm = fopen("/proc/self/statm", "r");
  if (statm == NULL || uv_loop_init(&loop) != 0 ||
      uvp_ctx_new(&loop, &ctx) != 0)
    _exit(3);
  /* The context's first allocations, before the limit; then no stack of
   * the default size is pooled (the size changes). */
  if (uvp_fiber_spawn(ctx, never_body, &n, NULL, &warm) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT);
  uvp_promise_release(warm);
  if (uvp_ctx_set_fiber_stack(ctx, 128 * 1024) != 0 ||
      uvp_ctx_stats(ctx, &s0) != 0 || s0.fiber_stacks != 0)
    _exit(3);
  if (fscanf(statm, "%lu", &vm) != 1 || getrlimit(RLIMIT_AS, &old) != 0)
    _exit(3);
  fclose(statm);
  lim = old;
  lim.rlim_cur = vm * page_size() + 64 * 1024;
  if (setrlimit(RLIMIT_AS, &lim) != 0)
    _exit(3);
  void *probe = mmap(NULL, 1024 * 1024, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (probe != MAP_FAILED) { /* not enforced (qemu-user ignores it) */
    r[R_SPAWN] = 1;
    if (write(fd, r, sizeof(r)) != (ssize_t)sizeof(r))
      _exit(3);
    _exit(0);
  }
  r[R_SPAWN] = uvp_fiber_spawn(ctx, never_body, &n, &o, &fp);
  if (setrlimit(RLIMIT_AS, &old) != 0)
    _exit(3);
  r[R_FREED] = n.freed;
  r[R_FIBERS] = uvp_ctx_stats(ctx, &s) == 0 ? (int)s.fibers : -1;
  r[R_LIVE] = (int)s.live - (int)s0.live;
  r[R_AGAIN] = uvp_fiber_spawn(ctx, never_body, &n, &o, &fp);
  uv_run(&loop, UV_RUN_DEFAULT);
  r[R_RAN] = n.ran;
  uvp_promise_release(fp);
  if (uvp_ctx_close(ctx) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT);
  r[R_CLOSE] = uv_loop_close(&loop);
  if (write(fd, r, sizeof(r)) != (ssize_t)sizeof(r))
    _exit(3);
}

static void test_spawn_address_space_limit(void **state) {
  (void)state;
  int fd, r[R_N];
#if defined(T_ASAN) || defined(T_TSAN)
  SKIP_BECAUSE("a sanitizer build: its shadow memory needs terabytes of "
               "the address space the limit takes away");
#endif
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("under valgrind, which maps its own memory in the "
                 "address space the limit counts");
  SKIP_UNDER_EMULATOR("qemu-user takes no RLIMIT_AS from the program (it "
                      "would limit qemu's own memory)");
  int status = test_in_child(rlimit_child, &fd, child_err, sizeof(child_err));
  ssize_t got = read(fd, r, sizeof(r));
  close(fd);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("child status %#x; its stderr:\n%s", (unsigned)status, child_err);
  assert_int_equal(got, sizeof(r));
  if (r[R_SPAWN] == 1)
    SKIP_BECAUSE("RLIMIT_AS is not enforced here: a spawn past it succeeded");
  assert_int_equal(r[R_SPAWN], UV_ENOMEM);
  assert_int_equal(r[R_FREED], 1); /* by the refusal */
  assert_int_equal(r[R_FIBERS], 0);
  assert_int_equal(r[R_LIVE], 0);
  assert_int_equal(r[R_AGAIN], 0);
  assert_int_equal(r[R_RAN], 2);
  assert_int_equal(r[R_CLOSE], 0);
}

/* Allocation failure: every k-th allocation of a run fails, k = 1, 2, ...
 * until a run meets none (alloc-helpers.h's counting allocator).  The
 * allocator can only be replaced while no context exists: this test makes
 * its own. */
typedef struct af_s {
  uvp_ctx_t *ctx;
  int freed;
  int inner_enomem; /* the spawn inside the fiber failed so */
  int bad;          /* anything but success or UV_ENOMEM */
} af_t;

static uvp_ret_t af_inner(void *arg) {
  (void)arg;
  return uvp_ret_value(SENTINEL(7), NULL);
}

/* Spawns fibers until a spawn needs a second slab of promises (one holds
 * fewer than 2100), so that some k fails a spawn made on a fiber. */
enum { AF_INNER = 2100 };

static uvp_ret_t af_outer(void *arg) {
  static uvp_promise_t *inner[AF_INNER];
  af_t *a = arg;
  uvp_promise_t *p;
  uvp_outcome_t o;
  size_t n;
  int rc = uvp_promise_resolved(a->ctx, SENTINEL(7), NULL, &p);
  if (rc != 0) {
    a->bad += rc != UV_ENOMEM;
    return uvp_ret_reject(rc, NULL, NULL);
  }
  rc = uvp_await(p, &o);
  a->bad += rc != 0 || o.value != SENTINEL(7);
  uvp_promise_release(p);
  for (n = 0; n < AF_INNER; n++)
    if ((rc = uvp_fiber_spawn(a->ctx, af_inner, NULL, NULL, &inner[n])) != 0)
      break;
  a->inner_enomem += rc == UV_ENOMEM;
  a->bad += rc != 0 && rc != UV_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    a->bad += uvp_await(inner[i], &o) != 0 || o.value != SENTINEL(7);
    uvp_promise_release(inner[i]);
  }
  return rc != 0 ? uvp_ret_reject(rc, NULL, NULL)
                 : uvp_ret_value(SENTINEL(8), NULL);
}

static void af_free(void *arg) { ((af_t *)arg)->freed++; }

static long outer_enomem, inner_enomem;

static void scenario_spawn(run_t *r) {
  af_t a = {.ctx = r->ctx};
  uvp_fiber_opts_t o = {.stack_size = 0, .arg_free = af_free};
  uvp_promise_t *fp = NULL;
  int rc = uvp_fiber_spawn(r->ctx, af_outer, &a, &o, &fp);
  if (rc != 0) {
    assert_int_equal(rc, UV_ENOMEM);
    assert_null(fp);
    assert_int_equal(a.freed, 1); /* by the refusal (uvp.h, "Handing over") */
    outer_enomem++;
    return;
  }
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(a.freed, 1);
  assert_int_equal(a.bad, 0);
  inner_enomem += a.inner_enomem;
  if (uvp_promise_state(fp) == UVP_REJECTED)
    assert_int_equal(uvp_promise_reason(fp, NULL), UV_ENOMEM);
  else
    assert_ptr_equal(uvp_promise_value(fp), SENTINEL(8));
  uvp_promise_release(fp);
}

static void test_spawn_alloc_fail(void **state) {
  (void)state;
  outer_enomem = inner_enomem = 0;
  long sites = exhaust(scenario_spawn);
  print_message("%ld allocations; spawn failed %ld times, inside a fiber "
                "%ld\n",
                sites, outer_enomem, inner_enomem);
  assert_true(outer_enomem >= 1);
  assert_true(inner_enomem >= 1);
}

/* Setting the stack size makes the context's fiber layer when no fiber
 * has yet: that allocation failing is UV_ENOMEM, and the context still
 * spawns afterwards. */
static long stack_enomem;

static void scenario_set_stack(run_t *r) {
  static never_t n;
  uvp_promise_t *fp = NULL;
  n = (never_t){0, 0};
  int rc = uvp_ctx_set_fiber_stack(r->ctx, 65536);
  OK_OR_ENOMEM(rc);
  stack_enomem += rc == UV_ENOMEM;
  rc = uvp_fiber_spawn(r->ctx, never_body, &n, NULL, &fp);
  OK_OR_ENOMEM(rc);
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(n.ran, rc == 0);
  expect_ok_or_enomem(fp, 0);
  uvp_promise_release(fp);
}

static void test_set_stack_alloc_fail(void **state) {
  (void)state;
  stack_enomem = 0;
  long sites = exhaust(scenario_set_stack);
  print_message("%ld allocations; set_fiber_stack failed %ld times\n", sites,
                stack_enomem);
  assert_true(stack_enomem >= 1);
}

int main(void) {
  (void)sigaction(SIGSEGV, NULL, &startup_segv);
  const struct CMUnitTest tests[] = {
      /* First: the allocator is replaced while no context exists, even if
       * a failed test below leaves its context held. */
      cmocka_unit_test(test_spawn_alloc_fail),
      cmocka_unit_test(test_set_stack_alloc_fail),
      FTEST(test_await_value),
      FTEST(test_await_rejection),
      FTEST(test_await_settled_yields),
      FTEST(test_spawn_order),
      FTEST(test_return_kinds),
      FTEST(test_promise_settled_only_by_fiber),
      FTEST(test_spawn_from_fiber),
      FTEST(test_many_await_same),
      FTEST(test_fp_modes_per_fiber),
      FTEST(test_fp_modes_per_fiber_compact),
      FTEST(test_await_all_settled),
      FTEST(test_timer_runs_while_waiting),
      FTEST(test_read_file),
      FTEST(test_await_outside_fiber),
      FTEST(test_await_other_ctx),
      FTEST(test_ctx_close_in_fiber),
      FTEST(test_cancel_only_observer),
      FTEST(test_cancel_shared_awaited),
      FTEST(test_shielded_await_of_own_cleanup),
      FTEST(test_shielded_await_cancelled_inside),
      FTEST(test_cancel_before_start),
      FTEST(test_spawn_refused),
      FTEST(test_close_with_fibers),
      FTEST(test_arg_free_once),
      FTEST(test_spawn_without_promise),
      FTEST(test_take_fresh_call),
      FTEST(test_take_value_lifetime),
      FTEST(test_take_loop_flat),
      FTEST(test_take_cancel_and_shield),
      FTEST(test_take_teardown),
      FTEST(test_take_refused),
      FTEST(test_dump_pending),
      FTEST(test_stack_reuse),
      FTEST(test_stack_sizes),
      FTEST(test_overflow_guard_page),
      FTEST(test_overflow_fallback_page),
      FTEST(test_overflow_fallback_canary),
      FTEST(test_overflow_canary_after_resume),
      FTEST(test_many_suspended),
      FTEST(test_map_limit),
      FTEST(test_await_loop_constant_memory),
      FTEST(test_resolved_from_thread),
      FTEST(test_spawn_no_stack),
      FTEST(test_spawn_address_space_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
