/* A user's program on fibers, as uvp.h's Fibers section ("Tools") supports
 * it under AddressSanitizer: this file built with -fsanitize=address
 * against a release libuvp (.ci/run's section "a user's ASan build against
 * a release uvp", meson option tests_sanitize=address), linked to the
 * shared library as a program using pkg-config would be, and through the
 * public header only.  Built without ASan (any other tree) it runs the
 * same patterns as a plain test.
 *
 * The patterns: 1000 fibers, each parked in turn with address-taken locals
 * in frames of different shapes (uvp_await(p, &o) as a server's fiber per
 * connection does), resumed alternately for rounds, their locals checked
 * after every await, in the compact mode and the default one; a loopback
 * echo server with a fiber per connection and 300 clients that are fibers
 * too (50 under valgrind), in both modes; a fiber that longjmps out of
 * deep frames and then uses the stack they were on (ASan must know which
 * stack runs to clear their redzones).  Under ASan, in a
 * child each: a buffer overflow in a compact fiber's body after it parked
 * and resumed is still reported (its frames' redzones went out and back
 * with them), and so is a read through a pointer into a parked compact
 * fiber's frames or into the stack of a fiber that has returned
 * (use-after-poison).  Suite `fiber`. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "child.h"
#include "helpers.h"

#if defined(T_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#define NOINLINE __attribute__((noinline))

enum { FIBERS_MAX = 1000, ROUNDS = 30 };

static long awaited, bad;
static volatile int sink;

/* Keeps what p points to in memory and used, whatever the optimizer. */
static NOINLINE void use(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    sink += p[i];
}

/* One await with an address-taken outcome, the promise a yield. */
static NOINLINE int park(uvp_ctx_t *ctx) {
  uvp_outcome_t o;
  uvp_promise_t *p;
  if (uvp_delay(ctx, 0, NULL, NULL, 0, &p) != 0)
    return -1;
  int rc = uvp_await(p, &o);
  uvp_promise_release(p);
  return rc == 0 && o.status == 0 ? 0 : -1;
}

/* Frames of three shapes, so that a fiber's locals lie where another's
 * redzones were if the shadow of one were handed to the next. */
static NOINLINE int shape_a(uvp_ctx_t *ctx, int tag) {
  char a[24];
  int rc;
  memset(a, tag, sizeof(a));
  rc = park(ctx);
  use(a, sizeof(a));
  for (size_t i = 0; i < sizeof(a); i++)
    rc |= a[i] != (char)tag;
  return rc;
}

static NOINLINE int shape_b(uvp_ctx_t *ctx, int tag) {
  char b[7], c[61];
  int rc;
  memset(b, tag, sizeof(b));
  memset(c, tag + 1, sizeof(c));
  rc = park(ctx);
  use(b, sizeof(b));
  use(c, sizeof(c));
  for (size_t i = 0; i < sizeof(c); i++)
    rc |= c[i] != (char)(tag + 1) || b[i % sizeof(b)] != (char)tag;
  return rc;
}

static NOINLINE int shape_c(uvp_ctx_t *ctx, int tag) {
  long n[33];
  int rc;
  for (size_t i = 0; i < 33; i++)
    n[i] = tag * 1000 + (long)i;
  rc = shape_a(ctx, tag + 2);
  use((const char *)n, sizeof(n));
  for (size_t i = 0; i < 33; i++)
    rc |= n[i] != tag * 1000 + (long)i;
  return rc;
}

typedef struct {
  uvp_ctx_t *ctx;
  int id;
} who_t;

static uvp_ret_t many_body(void *arg) {
  who_t *w = arg;
  for (int r = 0; r < ROUNDS; r++) {
    int tag = (w->id + r) % 100;
    int rc = (w->id + r) % 3 == 0   ? shape_a(w->ctx, tag)
             : (w->id + r) % 3 == 1 ? shape_b(w->ctx, tag)
                                    : shape_c(w->ctx, tag);
    bad += rc != 0;
    awaited++;
  }
  return uvp_ret_pass();
}

static void many(fixture_t *f, int mode) {
  static who_t who[FIBERS_MAX];
  static uvp_promise_t *fp[FIBERS_MAX];
  /* valgrind walks its list of registered stacks at every switch */
  int n = RUNNING_ON_VALGRIND ? 200 : FIBERS_MAX;
  awaited = bad = 0;
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, mode), 0);
  for (int i = 0; i < n; i++) {
    who[i] = (who_t){f->ctx, i};
    assert_int_equal(uvp_fiber_spawn(f->ctx, many_body, &who[i], NULL, &fp[i]),
                     0);
  }
  run_loop(f);
  for (int i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_state(fp[i]), UVP_FULFILLED);
    uvp_promise_release(fp[i]);
  }
  assert_int_equal(bad, 0);
  assert_int_equal(awaited, (long)n * ROUNDS);
}

static void test_many_parked_compact(void **state) {
  many(*state, UVP_FIBER_COMPACT);
}

static void test_many_parked_default(void **state) {
  many(*state, UVP_FIBER_DEFAULT);
}

/* ---- an echo server ------------------------------------------------------ */

/* A fiber per connection on each side, as the report of issue 51 had it
 * (an echo server whose compact fibers died on their first concurrent
 * connections): the server's answer each line, the clients' send three
 * and check the echoes. */
enum { LINES = 3 };

static uv_tcp_t listener;
static uvp_ctx_t *echo_ctx;
static int clients, clients_done, echo_bad;

static uvp_ret_t echo_serve(void *arg) {
  uvp_tcp_t *t = arg;
  for (;;) {
    uvp_promise_t *r, *w;
    uvp_outcome_t o;
    if (uvp_tcp_read(t, &r) != 0)
      break;
    int rc = uvp_await(r, &o);
    if (rc != 0) {
      echo_bad += rc != UV_EOF;
      uvp_promise_release(r);
      break;
    }
    const uvp_buf_t *b = o.value;
    char *copy = malloc(b->len); /* on the heap: the stack moves */
    if (copy == NULL) {
      uvp_promise_release(r);
      break;
    }
    memcpy(copy, b->base, b->len);
    rc = uvp_tcp_write_full(t, copy, b->len, free, &w); /* or copy freed */
    uvp_promise_release(r);
    if (rc != 0) {
      echo_bad++;
      break;
    }
    rc = uvp_await(w, &o);
    uvp_promise_release(w);
    echo_bad += rc != 0;
  }
  uvp_tcp_close(t);
  return uvp_ret_pass();
}

static void on_connection(uv_stream_t *l, int status) {
  uvp_tcp_t *t;
  uvp_promise_t *fp;
  if (status != 0 || uvp_tcp_accept(echo_ctx, l, &t) != 0) {
    echo_bad++;
    return;
  }
  if (uvp_fiber_spawn(echo_ctx, echo_serve, t, NULL, &fp) != 0) {
    echo_bad++;
    uvp_tcp_close(t);
    return;
  }
  uvp_promise_release(fp);
}

/* Reads until `want` bytes have come, into `into`. */
static NOINLINE int read_exactly(uvp_tcp_t *t, char *into, size_t want) {
  size_t got = 0;
  while (got < want) {
    uvp_promise_t *r;
    uvp_outcome_t o;
    if (uvp_tcp_read(t, &r) != 0)
      return -1;
    int rc = uvp_await(r, &o);
    if (rc == 0) {
      const uvp_buf_t *b = o.value;
      if (b->len > want - got)
        rc = -1;
      else
        memcpy(into + got, b->base, b->len);
      got += b->len;
    }
    uvp_promise_release(r);
    if (rc != 0)
      return -1;
  }
  return 0;
}

static uvp_ret_t echo_client(void *arg) {
  const struct sockaddr *addr = arg;
  uvp_tcp_t *t;
  uvp_promise_t *p;
  uvp_outcome_t o;
  int rc = uvp_tcp_new(echo_ctx, &t);
  if (rc == 0 && uvp_tcp_connect(t, addr, &p) == 0) {
    rc = uvp_await(p, &o);
    uvp_promise_release(p);
    for (int i = 0; rc == 0 && i < LINES; i++) {
      char line[64], back[64]; /* locals: written and read between awaits */
      int len = snprintf(line, sizeof(line), "line %d of %p\n", i, (void *)t);
      char *out = malloc((size_t)len);
      if (out == NULL) {
        rc = -1;
        break;
      }
      memcpy(out, line, (size_t)len);
      rc = uvp_tcp_write_full(t, out, (size_t)len, free, &p); /* or freed */
      if (rc != 0)
        break;
      rc = uvp_await(p, &o);
      uvp_promise_release(p);
      if (rc == 0)
        rc = read_exactly(t, back, (size_t)len);
      if (rc == 0 && memcmp(back, line, (size_t)len) != 0)
        rc = -1;
    }
  } else {
    rc = -1;
  }
  echo_bad += rc != 0;
  if (t != NULL)
    uvp_tcp_close(t);
  if (++clients_done == clients)
    uv_close((uv_handle_t *)&listener, NULL);
  return uvp_ret_pass();
}

static void echo(fixture_t *f, int mode) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  echo_ctx = f->ctx;
  clients = RUNNING_ON_VALGRIND ? 50 : 300; /* two descriptors each */
  clients_done = echo_bad = 0;
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, mode), 0);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
  assert_int_equal(uv_tcp_init(&f->loop, &listener), 0);
  assert_int_equal(uv_tcp_bind(&listener, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&listener, 1024, on_connection), 0);
  assert_int_equal(uv_tcp_getsockname(&listener, (struct sockaddr *)&ss, &len),
                   0);
  for (int i = 0; i < clients; i++) {
    uvp_promise_t *fp;
    assert_int_equal(uvp_fiber_spawn(f->ctx, echo_client, &ss, NULL, &fp), 0);
    uvp_promise_release(fp);
  }
  run_loop(f);
  assert_int_equal(clients_done, clients);
  assert_int_equal(echo_bad, 0);
}

static void test_echo_compact(void **state) { echo(*state, UVP_FIBER_COMPACT); }

static void test_echo_default(void **state) { echo(*state, UVP_FIBER_DEFAULT); }

/* ---- longjmp on a fiber -------------------------------------------------- */

static jmp_buf jump_out;

static NOINLINE void deep(int d) {
  char a[40], b[40], c[40];
  memset(a, 1, sizeof(a));
  memset(b, 2, sizeof(b));
  memset(c, 3, sizeof(c));
  use(a, sizeof(a));
  use(b, sizeof(b));
  use(c, sizeof(c));
  if (d > 0)
    deep(d - 1);
  else if (sink != -1)    /* always */
    longjmp(jump_out, 1); /* their redzones stay poisoned unless ASan ... */
}

static NOINLINE void later(void) {
  char big[2048]; /* ... clears them: it knows the stack the fiber is on */
  memset(big, 0, sizeof(big));
  use(big, sizeof(big));
}

static uvp_ret_t jump_body(void *arg) {
  uvp_ctx_t *ctx = arg;
  if (park(ctx) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  if (setjmp(jump_out) == 0)
    deep(8);
  later();
  if (park(ctx) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  later();
  return uvp_ret_pass();
}

static void jump(fixture_t *f, int mode) {
  uvp_promise_t *fp[2];
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, mode), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(uvp_fiber_spawn(f->ctx, jump_body, f->ctx, NULL, &fp[i]),
                     0);
  run_loop(f);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(uvp_promise_state(fp[i]), UVP_FULFILLED);
    uvp_promise_release(fp[i]);
  }
}

static void test_longjmp_default(void **state) {
  jump(*state, UVP_FIBER_DEFAULT);
}

static void test_longjmp_compact(void **state) {
  jump(*state, UVP_FIBER_COMPACT);
}

/* ---- what ASan still reports --------------------------------------------- */

#if defined(T_ASAN)
static volatile size_t too_far = 17;
static volatile char *leaked;

/* In a child: a loop and a context whose fibers are compact. */
static uvp_ctx_t *child_ctx(uv_loop_t *loop) {
  uvp_ctx_t *ctx;
  struct rlimit no_core = {0, 0};
  (void)setrlimit(RLIMIT_CORE, &no_core);
  if (uv_loop_init(loop) != 0 || uvp_ctx_new(loop, &ctx) != 0 ||
      uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0)
    _exit(3);
  return ctx;
}

static uvp_ret_t overflow_body(void *arg) {
  char buf[16];
  memset(buf, 1, sizeof(buf));
  if (park(arg) != 0)
    _exit(4);
  memset(buf, 2, too_far); /* one byte past it, into its frame's redzone */
  use(buf, sizeof(buf));
  return uvp_ret_pass();
}

static void overflow_child(int fd) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *fp[2];
  (void)fd;
  for (int i = 0; i < 2; i++)
    if (uvp_fiber_spawn(ctx, overflow_body, ctx, NULL, &fp[i]) != 0)
      _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT);
  _exit(5); /* not reported */
}

static uvp_ret_t leak_body(void *arg) {
  volatile char local[8] = {42};
  leaked = local; /* the contract forbids this (uvp.h, Modes) */
  (void)uvp_await(arg, NULL);
  return uvp_ret_value((void *)(intptr_t)local[0], NULL);
}

static void parked_child(int fd) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *gate, *fp;
  (void)fd;
  if (uvp_promise_new(ctx, &gate) != 0 ||
      uvp_fiber_spawn(ctx, leak_body, gate, NULL, &fp) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT); /* the fiber parks */
  fprintf(stderr, "read %d\n", leaked[0]);
  _exit(5);
}

static uvp_ret_t returning_body(void *arg) {
  volatile char local[8] = {42};
  (void)arg;
  leaked = local; /* used after the fiber returned: the contract forbids it */
  return uvp_ret_pass();
}

static void returned_child(int fd) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *fp;
  (void)fd;
  if (uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_DEFAULT) != 0 ||
      uvp_fiber_spawn(ctx, returning_body, NULL, NULL, &fp) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT); /* it returns, its stack goes to the pool */
  fprintf(stderr, "read %d\n", leaked[0]);
  _exit(5);
}

static void expect_report(void (*child)(int), const char *what) {
  static char err[65536];
  int fd;
  int status = test_in_child(child, &fd, err, sizeof(err));
  close(fd);
  if (strstr(err, what) == NULL)
    fail_msg("no ASan report '%s' (status %#x):\n%s", what, (unsigned)status,
             err);
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 5);
}
#endif

static void test_overflow_after_await_reported(void **state) {
  (void)state;
#if !defined(T_ASAN)
  SKIP_BECAUSE("not built with ASan: nothing reports an overflow");
#else
  expect_report(overflow_child, "AddressSanitizer: stack-buffer-overflow");
#endif
}

static void test_parked_frame_reported(void **state) {
  (void)state;
#if !defined(T_ASAN)
  SKIP_BECAUSE("not built with ASan: nothing poisons a parked fiber's frames");
#else
  if (__asan_get_current_fake_stack() != NULL)
    SKIP_BECAUSE("detect_stack_use_after_return: the fiber's locals are in "
                 "ASan's fake stack, not in the frames uvp poisons");
  expect_report(parked_child, "AddressSanitizer: use-after-poison");
#endif
}

static void test_returned_frame_reported(void **state) {
  (void)state;
#if !defined(T_ASAN)
  SKIP_BECAUSE("not built with ASan: nothing poisons a pooled stack");
#else
  if (__asan_get_current_fake_stack() != NULL)
    SKIP_BECAUSE("detect_stack_use_after_return: the fiber's locals were in "
                 "ASan's fake stack, not in the stack uvp poisons");
  expect_report(returned_child, "AddressSanitizer: use-after-poison");
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_many_parked_compact),
      FIXTURE_TEST(test_many_parked_default),
      FIXTURE_TEST(test_echo_compact),
      FIXTURE_TEST(test_echo_default),
      FIXTURE_TEST(test_longjmp_default),
      FIXTURE_TEST(test_longjmp_compact),
      FIXTURE_TEST(test_overflow_after_await_reported),
      FIXTURE_TEST(test_parked_frame_reported),
      FIXTURE_TEST(test_returned_frame_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
