/* The compact fiber mode (uvp_ctx_set_fiber_mode): its errors; compact
 * fibers running at one address (a stack per context), unless they ask for
 * a stack size of their own; 64 KiB of locals parked and resumed while
 * other compact fibers use the stack; a compact fiber awaiting uvp_fs_read
 * into heap memory; promises settled from another thread waking compact
 * fibers; a ping-pong of two of them; 100 000 fibers parked, half of them
 * cancelled, the rest torn down, in both modes; the ASan report of a read
 * through a pointer into a parked fiber's stack (ASan builds, in a child);
 * allocation failure (spawn and await fail with UV_ENOMEM).  Suites
 * `fiber` and `threads` (TSan).  test-fiber-as-compact runs all of
 * test-fiber.c in this mode too.
 *
 * As in test-fiber.c, code on a fiber records what it saw (FCHECK) and the
 * test asserts on the loop's stack. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/fiber-switch.h" /* UVP__FIBER_CAN_COPY */
#include "alloc-helpers.h"
#include "child.h"

#if defined(T_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#define NOINLINE __attribute__((noinline))

static int fcheck_line;
static const char *fcheck_expr;

#define FCHECK(cond)                                                           \
  do {                                                                         \
    if (!(cond) && fcheck_line == 0) {                                         \
      fcheck_line = __LINE__;                                                  \
      fcheck_expr = #cond;                                                     \
    }                                                                          \
  } while (0)

static int setup(void **state) {
  fcheck_line = 0;
  fcheck_expr = NULL;
  int rc = fixture_setup(state);
  if (rc == 0 && uvp_ctx_set_fiber_mode(((fixture_t *)*state)->ctx,
                                        UVP_FIBER_COMPACT) != 0)
    rc = -1;
  return rc;
}

static int teardown(void **state) {
  fixture_teardown(state);
  if (fcheck_line != 0)
    fail_msg("on a fiber, line %d: FCHECK(%s) failed", fcheck_line,
             fcheck_expr);
  return 0;
}

#define CTEST(fn) FIXTURE_TEST_WITH(fn, setup, teardown)

/* Compact fibers share one stack per context, except under ASan (a stack
 * each, poisoned while parked). */
#if defined(T_ASAN)
enum { SHARED = 0 };
#else
enum { SHARED = 1 };
#endif

static void release_fulfilled(uvp_promise_t *fp) {
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  uvp_promise_release(fp);
}

/* ---- the mode ------------------------------------------------------------ */

static void test_mode_errors(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_fiber_mode(NULL, UVP_FIBER_COMPACT), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, 2), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, -1), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, UVP_FIBER_DEFAULT), 0);
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, UVP_FIBER_COMPACT), 0);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT), UVP_ECLOSED);
}

/* Where each fiber's first frame is, while all are parked. */
typedef struct where_s {
  uvp_promise_t *gate;
  void *frame;
  int rc;
} where_t;

static uvp_ret_t where_body(void *arg) {
  where_t *w = arg;
  w->frame = __builtin_frame_address(0);
  w->rc = uvp_await(w->gate, NULL);
  return uvp_ret_pass();
}

static void test_one_address(void **state) {
  fixture_t *f = *state;
  static where_t w[4];
  uvp_promise_t *gate, *fp[4];
  uvp_fiber_opts_t own = {.stack_size = 64 * 1024, .arg_free = NULL};
  assert_int_equal(uvp_promise_new(f->ctx, &gate), 0);
  for (int i = 0; i < 4; i++)
    w[i] = (where_t){gate, NULL, 1};
  assert_int_equal(uvp_fiber_spawn(f->ctx, where_body, &w[0], NULL, &fp[0]), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, where_body, &w[1], NULL, &fp[1]), 0);
  /* A stack size of its own: a stack of its own. */
  assert_int_equal(uvp_fiber_spawn(f->ctx, where_body, &w[2], &own, &fp[2]), 0);
  /* The mode is the context's at spawn. */
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, UVP_FIBER_DEFAULT), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, where_body, &w[3], NULL, &fp[3]), 0);
  run_loop(f);
  if (SHARED)
    assert_ptr_equal(w[0].frame, w[1].frame);
  else
    assert_ptr_not_equal(w[0].frame, w[1].frame);
  assert_ptr_not_equal(w[2].frame, w[0].frame);
  assert_ptr_not_equal(w[3].frame, w[0].frame);
  assert_ptr_not_equal(w[3].frame, w[2].frame);
  assert_int_equal(uvp_promise_resolve(gate, NULL, NULL), 0);
  run_loop(f);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(w[i].rc, 0);
    release_fulfilled(fp[i]);
  }
  uvp_promise_release(gate);
}

/* ---- frames parked and resumed ------------------------------------------- */

enum { BIG = 64 * 1024 };

typedef struct big_s {
  uvp_promise_t *gate;
  unsigned seed;
  int rounds, bad, done;
} big_t;

static NOINLINE void fill(volatile unsigned char *b, unsigned seed) {
  for (size_t i = 0; i < BIG; i++)
    b[i] = (unsigned char)(seed * 31 + i * 7 + i / 251);
}

static NOINLINE int same(volatile const unsigned char *b, unsigned seed) {
  for (size_t i = 0; i < BIG; i++)
    if (b[i] != (unsigned char)(seed * 31 + i * 7 + i / 251))
      return 0;
  return 1;
}

/* 64 KiB of locals, a pointer to them among the locals, a few values in
 * registers: all intact after each await, while the other fibers run on
 * the same stack in between. */
static uvp_ret_t big_body(void *arg) {
  big_t *b = arg;
  volatile unsigned char locals[BIG];
  volatile unsigned char *self = locals;
  unsigned a = b->seed * 3, c = b->seed ^ 0x5a5a;
  fill(locals, b->seed);
  for (int r = 0; r < b->rounds; r++) {
    uvp_promise_t *p;
    FCHECK(uvp_promise_resolved(uvp_promise_ctx(b->gate), NULL, NULL, &p) == 0);
    FCHECK(uvp_await(p, NULL) == 0); /* a yield: the others run */
    uvp_promise_release(p);
    b->bad += self != locals || !same(self, b->seed);
    b->bad += a != b->seed * 3 || c != (b->seed ^ 0x5a5a);
  }
  FCHECK(uvp_await(b->gate, NULL) == 0);
  b->bad += self != locals || !same(self, b->seed);
  b->done = 1;
  return uvp_ret_pass();
}

static void test_big_locals(void **state) {
  fixture_t *f = *state;
  enum { N = 3 };
  static big_t b[N];
  uvp_promise_t *gate, *fp[N];
  assert_int_equal(uvp_promise_new(f->ctx, &gate), 0);
  for (int i = 0; i < N; i++) {
    b[i] = (big_t){gate, (unsigned)i + 1, 5, 0, 0};
    assert_int_equal(uvp_fiber_spawn(f->ctx, big_body, &b[i], NULL, &fp[i]), 0);
  }
  run_loop(f);
  for (int i = 0; i < N; i++)
    assert_int_equal(b[i].done, 0);
  assert_int_equal(uvp_promise_resolve(gate, NULL, NULL), 0);
  run_loop(f);
  for (int i = 0; i < N; i++) {
    assert_int_equal(b[i].bad, 0);
    assert_int_equal(b[i].done, 1);
    release_fulfilled(fp[i]);
  }
  uvp_promise_release(gate);
}

/* Two compact fibers handing a step back and forth: each await parks one
 * and brings the other's frames back. */
typedef struct pp_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *mine[2];
  size_t steps[2];
  int bad;
} pp_t;

static uvp_ret_t pp_body(void *arg) {
  pp_t *p = arg;
  int me = p->mine[0] == NULL ? 0 : 1;
  uintptr_t mark[16];
  for (int i = 0; i < 16; i++)
    mark[i] = (uintptr_t)me * 1000 + (uintptr_t)i;
  for (size_t i = 0; i < 1000; i++) {
    uvp_promise_t *q;
    FCHECK(uvp_promise_new(p->ctx, &q) == 0);
    p->mine[me] = q;
    if (p->mine[1 - me] != NULL)
      FCHECK(uvp_promise_resolve(p->mine[1 - me], NULL, NULL) == 0);
    FCHECK(uvp_await(q, NULL) == 0);
    p->mine[me] = NULL;
    uvp_promise_release(q);
    p->steps[me]++;
    for (int k = 0; k < 16; k++)
      p->bad += mark[k] != (uintptr_t)me * 1000 + (uintptr_t)k;
  }
  if (p->mine[1 - me] != NULL)
    FCHECK(uvp_promise_resolve(p->mine[1 - me], NULL, NULL) == 0);
  return uvp_ret_pass();
}

static void test_ping_pong(void **state) {
  fixture_t *f = *state;
  static pp_t p;
  uvp_promise_t *a, *b;
  p = (pp_t){.ctx = f->ctx};
  assert_int_equal(uvp_fiber_spawn(f->ctx, pp_body, &p, NULL, &a), 0);
  run_loop(f);
  assert_int_equal(uvp_fiber_spawn(f->ctx, pp_body, &p, NULL, &b), 0);
  run_loop(f);
  assert_int_equal(p.steps[0], 1000);
  assert_int_equal(p.steps[1], 1000);
  assert_int_equal(p.bad, 0);
  release_fulfilled(a);
  release_fulfilled(b);
}

/* ---- I/O into the heap, settles from another thread ---------------------- */

typedef struct rd_s {
  uvp_ctx_t *ctx;
  const char *path;
  const char *want;
  size_t len;
  int rc, same, reading;
  size_t yields;
} rd_t;

/* The buffer libuv writes into while the fiber is parked is on the heap:
 * a compact fiber's stack is not where it was while it is parked. */
static uvp_ret_t read_body(void *arg) {
  rd_t *r = arg;
  uvp_promise_t *p;
  uvp_outcome_t o;
  char *buf = malloc(r->len);
  FCHECK(buf != NULL);
  FCHECK(uvp_fs_open(r->ctx, r->path, O_RDONLY, 0, &p) == 0);
  r->rc = uvp_await(p, &o);
  uv_file fd = (uv_file)UVP_INT(o.value);
  uvp_promise_release(p);
  r->reading = 1;
  FCHECK(uvp_fs_read(r->ctx, fd, buf, r->len, 0, &p) == 0);
  r->rc |= uvp_await(p, &o);
  r->same =
      UVP_INT(o.value) == (int64_t)r->len && memcmp(buf, r->want, r->len) == 0;
  uvp_promise_release(p);
  r->reading = 0;
  FCHECK(uvp_fs_close(r->ctx, fd, &p) == 0);
  r->rc |= uvp_await(p, NULL);
  uvp_promise_release(p);
  free(buf);
  return uvp_ret_pass();
}

/* Runs on the compact stack while the reader waits, scribbling on it. */
static uvp_ret_t scribble_body(void *arg) {
  rd_t *r = arg;
  volatile unsigned char junk[8192];
  do {
    uvp_promise_t *p;
    memset((void *)junk, 0xee, sizeof(junk));
    FCHECK(uvp_promise_resolved(r->ctx, NULL, NULL, &p) == 0);
    FCHECK(uvp_await(p, NULL) == 0);
    uvp_promise_release(p);
    r->yields++;
  } while (r->reading || r->yields < 2);
  return uvp_ret_pass();
}

static void test_fs_read_into_heap(void **state) {
  fixture_t *f = *state;
  char path[] = "/tmp/uvp-test-compact-XXXXXX";
  enum { LEN = 100000 };
  char *data = malloc(LEN);
  assert_non_null(data);
  for (size_t i = 0; i < LEN; i++)
    data[i] = (char)('a' + (i * 13 + i / 777) % 26);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, LEN), LEN);
  assert_int_equal(close(fd), 0);
  static rd_t r;
  r = (rd_t){.ctx = f->ctx, .path = path, .want = data, .len = LEN, .rc = 1};
  uvp_promise_t *a, *b;
  assert_int_equal(uvp_fiber_spawn(f->ctx, read_body, &r, NULL, &a), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, scribble_body, &r, NULL, &b), 0);
  run_loop(f);
  assert_int_equal(unlink(path), 0);
  free(data);
  assert_int_equal(r.rc, 0);
  assert_true(r.same);
  assert_true(r.yields >= 2);
  release_fulfilled(a);
  release_fulfilled(b);
}

enum { XN = 64 };

typedef struct xthread_s {
  uvp_promise_t *p[XN];
  void *got[XN];
  int rc[XN];
  uv_async_t keep; /* the loop waits for the thread: uvp's async does not */
  size_t woken;
} xthread_t;

static xthread_t x;

static uvp_ret_t xthread_body(void *arg) {
  size_t i = (size_t)(uintptr_t)arg;
  uvp_outcome_t o;
  unsigned char pad[300]; /* frames worth copying */
  memset(pad, (int)i, sizeof(pad));
  x.rc[i] = uvp_await(x.p[i], &o);
  x.got[i] = o.value;
  for (size_t k = 0; k < sizeof(pad); k++)
    x.rc[i] |= pad[k] != (unsigned char)i;
  if (++x.woken == XN)
    uv_close((uv_handle_t *)&x.keep, NULL);
  return uvp_ret_pass();
}

static void xthread_main(void *arg) {
  (void)arg;
  for (size_t i = XN; i-- > 0;) {
    (void)uvp_promise_resolve(x.p[i], (void *)(uintptr_t)(i + 1), NULL);
    if (i % 8 == 0)
      uv_sleep(1);
  }
}

static void test_settled_from_thread(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *fp[XN];
  uv_thread_t tid;
  memset(&x, 0, sizeof(x));
  assert_int_equal(uv_async_init(&f->loop, &x.keep, NULL), 0);
  for (size_t i = 0; i < XN; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &x.p[i]), 0);
    assert_int_equal(uvp_fiber_spawn(f->ctx, xthread_body, (void *)(uintptr_t)i,
                                     NULL, &fp[i]),
                     0);
  }
  assert_int_equal(uv_thread_create(&tid, xthread_main, NULL), 0);
  run_loop(f);
  assert_int_equal(uv_thread_join(&tid), 0);
  assert_int_equal(x.woken, XN);
  for (size_t i = 0; i < XN; i++) {
    assert_int_equal(x.rc[i], 0);
    assert_ptr_equal(x.got[i], (void *)(uintptr_t)(i + 1));
    release_fulfilled(fp[i]);
    uvp_promise_release(x.p[i]);
  }
}

/* ---- many -----------------------------------------------------------------
 */

/* N fibers each awaiting its own hour-long timer; half are cancelled (each
 * sees UV_ECANCELED, its timer stopped), the rest torn down with the
 * context (each sees UVP_ECLOSED); the fixture's teardown checks
 * uv_loop_close() == 0. */
typedef struct parked_s {
  uvp_ctx_t *ctx;
  size_t started, cancelled, closed, other;
} parked_t;

static parked_t pk;

static uvp_ret_t parked_body(void *arg) {
  uvp_promise_t *d;
  (void)arg;
  if (uvp_delay(pk.ctx, 3600 * 1000, NULL, NULL, 0, &d) != 0) {
    pk.other++;
    return uvp_ret_pass();
  }
  pk.started++;
  int rc = uvp_await(d, NULL);
  pk.cancelled += rc == UV_ECANCELED;
  pk.closed += rc == UVP_ECLOSED;
  pk.other += rc != UV_ECANCELED && rc != UVP_ECLOSED;
  uvp_promise_release(d);
  return uvp_ret_pass();
}

static size_t many_count(int mode) {
#if defined(T_TSAN) || defined(T_ASAN)
  (void)mode;
  return 5000;
#else
  if (RUNNING_ON_VALGRIND)
    return 2000;
  if (sizeof(void *) > 4)
    return 100000;
    /* ILP32: what a 32-bit address space is promised to hold.  A stack a
     * fiber (the default mode; the compact one where nothing is copied, as
     * with the ucontext switch) is 128 KiB of it, about 30 000 in all
     * (fiber-stack.h); compact fibers sharing one take their frames' bytes. */
#if defined(UVP__FIBER_CAN_COPY)
  if (mode == UVP_FIBER_COMPACT)
    return 200000;
#endif
  (void)mode;
  return 20000;
#endif
}

static void many_parked(fixture_t *f, int mode) {
  size_t n = many_count(mode);
  uvp_promise_t **fps = calloc(n, sizeof(*fps));
  assert_non_null(fps);
  pk = (parked_t){.ctx = f->ctx};
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, mode), 0);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(uvp_fiber_spawn(f->ctx, parked_body, NULL, NULL, &fps[i]),
                     0);
  while (pk.started < n)
    (void)uv_run(&f->loop, UV_RUN_NOWAIT);
  uvp_ctx_stats_t s;
  assert_int_equal(uvp_ctx_stats(f->ctx, &s), 0);
  assert_int_equal(s.fibers, n);
  for (size_t i = 0; i < n; i += 2)
    assert_int_equal(uvp_promise_cancel(fps[i]), 0);
  while (pk.cancelled + pk.other < (n + 1) / 2)
    (void)uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(pk.closed, 0);
  for (size_t i = 0; i < n; i++) {
    if (i % 2 == 0)
      assert_int_equal(uvp_promise_reason(fps[i], NULL), UV_ECANCELED);
    else
      assert_int_equal(uvp_promise_state(fps[i]), UVP_PENDING);
    uvp_promise_release(fps[i]);
  }
  free(fps);
  (void)close_ctx(f); /* resumes the rest with UVP_ECLOSED */
  assert_int_equal(pk.cancelled, (n + 1) / 2);
  assert_int_equal(pk.closed, n / 2);
  assert_int_equal(pk.other, 0);
}

static void test_many_parked_compact(void **state) {
  many_parked(*state, UVP_FIBER_COMPACT);
}

static void test_many_parked_default(void **state) {
  many_parked(*state, UVP_FIBER_DEFAULT);
}

/* ---- ASan: a parked fiber's stack is poisoned ---------------------------- */

#if defined(T_ASAN)
static volatile int *leaked;

static uvp_ret_t leak_body(void *arg) {
  volatile int local = 42;
  leaked = &local; /* the contract forbids this (see uvp.h) */
  (void)uvp_await(arg, NULL);
  return uvp_ret_value((void *)(intptr_t)local, NULL);
}

static void touch_child(int fd) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *gate, *fp;
  (void)fd;
  struct rlimit no_core = {0, 0};
  (void)setrlimit(RLIMIT_CORE, &no_core);
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0 ||
      uvp_promise_new(ctx, &gate) != 0 ||
      uvp_fiber_spawn(ctx, leak_body, gate, NULL, &fp) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT); /* the fiber parks */
  fprintf(stderr, "read %d\n", *leaked);
  _exit(5);
}
#endif

static void test_asan_reports_parked_stack(void **state) {
  (void)state;
#if !defined(T_ASAN)
  SKIP_BECAUSE("not an ASan build: only ASan poisons a parked fiber's "
               "stack");
#else
  if (__asan_get_current_fake_stack() != NULL)
    SKIP_BECAUSE("detect_stack_use_after_return: the fiber's locals are in "
                 "ASan's fake stack, not in the frames uvp poisons");
  static char err[65536];
  int fd;
  int status = test_in_child(touch_child, &fd, err, sizeof(err));
  close(fd);
  if (strstr(err, "AddressSanitizer: use-after-poison") == NULL ||
      strstr(err, "READ of size 4") == NULL)
    fail_msg("no ASan report of the read (status %#x):\n%s", (unsigned)status,
             err);
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 5);
#endif
}

/* ---- no memory ------------------------------------------------------------
 */

static long spawn_enomem, await_enomem, await_itself;

static uvp_ret_t af_body(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_promise_t *p;
  int rc = uvp_promise_resolved(ctx, NULL, NULL, &p);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  rc = uvp_await(p, NULL);
  await_itself += rc == UV_ENOMEM; /* no room for its frames */
  uvp_promise_release(p);
  return rc != 0 ? uvp_ret_reject(rc, NULL, NULL)
                 : uvp_ret_value((void *)(uintptr_t)9, NULL);
}

static void scenario_compact(run_t *r) {
  uvp_promise_t *fp = NULL;
  int rc = uvp_ctx_set_fiber_mode(r->ctx, UVP_FIBER_COMPACT);
  OK_OR_ENOMEM(rc);
  if (rc != 0)
    return;
  rc = uvp_fiber_spawn(r->ctx, af_body, r->ctx, NULL, &fp);
  OK_OR_ENOMEM(rc);
  if (rc != 0) {
    spawn_enomem++;
    return;
  }
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  if (uvp_promise_state(fp) == UVP_REJECTED) {
    assert_int_equal(uvp_promise_reason(fp, NULL), UV_ENOMEM);
    await_enomem++;
  } else {
    assert_ptr_equal(uvp_promise_value(fp), (void *)(uintptr_t)9);
  }
  uvp_promise_release(fp);
}

static void test_alloc_fail(void **state) {
  (void)state;
  spawn_enomem = await_enomem = await_itself = 0;
  long sites = exhaust(scenario_compact);
  print_message("%ld allocations; spawn failed %ld times, the fiber %ld "
                "(the await itself %ld)\n",
                sites, spawn_enomem, await_enomem, await_itself);
  assert_true(spawn_enomem >= 1);
  assert_true(await_itself >= 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* First: the allocator is replaced while no context exists. */
      cmocka_unit_test(test_alloc_fail),
      CTEST(test_mode_errors),
      CTEST(test_one_address),
      CTEST(test_big_locals),
      CTEST(test_ping_pong),
      CTEST(test_fs_read_into_heap),
      CTEST(test_settled_from_thread),
      CTEST(test_many_parked_compact),
      CTEST(test_many_parked_default),
      CTEST(test_asan_reports_parked_stack),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
