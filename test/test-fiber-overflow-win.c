/* Windows: a fiber that runs off its stack is reported as on Linux
 * (fiber-stack.c's vectored handler: "uvp: the fiber spawned at FILE:LINE
 * ran off its stack of N bytes ... in the guard page below it"), and the
 * process stops.  The suites' own overflow tests run in a forked child,
 * which Windows has not (test/child.h): this one runs its child as a
 * second process of its own program (uv_spawn of uv_exepath, argument
 * "child"), its stderr read through a pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "uvp.h"

/* ---- the child: a fiber recursing without end -----------------------------
 */

static int deep(int n) {
  volatile char frame[1024];
  frame[0] = (char)n;
  return n == 0 ? frame[0] : deep(n - 1) + frame[0];
}

static uvp_ret_t runaway(void *arg) {
  (void)arg;
  printf("%d\n", deep(1 << 24)); /* 16 GiB of frames: past any stack */
  return uvp_ret_pass();
}

static int child(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *p;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_fiber_spawn(ctx, runaway, NULL, NULL, &p) != 0)
    return 3;
  (void)uv_run(&loop, UV_RUN_DEFAULT);
  return 4; /* not reached: the overflow stops the process */
}

/* ---- the test -------------------------------------------------------------
 */

typedef struct {
  char err[4096];
  size_t len;
  int64_t status;
  int exited, closed;
} run_t;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  run_t *r = h->data;
  (void)hint;
  *buf = uv_buf_init(r->err + r->len, (unsigned)(sizeof(r->err) - 1 - r->len));
}

static void on_close(uv_handle_t *h) { ((run_t *)h->data)->closed++; }

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  run_t *r = s->data;
  (void)buf;
  if (n > 0)
    r->len += (size_t)n;
  else if (n < 0)
    uv_close((uv_handle_t *)s, on_close);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  run_t *r = p->data;
  (void)sig;
  r->status = status;
  r->exited = 1;
  uv_close((uv_handle_t *)p, on_close);
}

static void test_overflow_reported(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_pipe_t err;
  uv_process_t proc;
  static run_t r;
  char exe[1024];
  size_t len = sizeof(exe);
  memset(&r, 0, sizeof(r));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_exepath(exe, &len), 0);
  assert_int_equal(uv_pipe_init(&loop, &err, 0), 0);
  err.data = proc.data = &r;
  char *args[] = {exe, "child", NULL};
  uv_stdio_container_t io[3] = {{.flags = UV_IGNORE},
                                {.flags = UV_IGNORE},
                                {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                                 .data.stream = (uv_stream_t *)&err}};
  uv_process_options_t o = {.exit_cb = on_exit_cb,
                            .file = exe,
                            .args = args,
                            .stdio_count = 3,
                            .stdio = io};
  assert_int_equal(uv_spawn(&loop, &proc, &o), 0);
  assert_int_equal(uv_read_start((uv_stream_t *)&err, on_alloc, on_read), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  r.err[r.len] = '\0';
  print_message("the child said: %s", r.err);
  assert_int_equal(r.exited, 1);
  assert_int_equal(r.closed, 2);
  /* Stopped by the fault, not by returning (3, 4) or exiting cleanly. */
  assert_true(r.status != 0 && r.status != 3 && r.status != 4);
  assert_non_null(strstr(r.err, "uvp: the fiber spawned at "));
  assert_non_null(strstr(r.err, "test-fiber-overflow-win.c:"));
  assert_non_null(strstr(r.err, "ran off its stack of "));
  assert_non_null(strstr(r.err, "in the guard page below it); stopping"));
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "child") == 0)
    return child();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_overflow_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
