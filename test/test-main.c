/* uvp_main_run and uvp_main_run_promise (uvp/main.h): the loop, the
 * context, the signals and the teardown of a program whose life is one
 * job.  Each test runs the whole frame for real, signals included (sent to
 * the test's own process while the frame watches them); the ones that end
 * the process (a second signal) run in a forked child.  That the frame
 * left nothing behind is its return: uv_loop_close's failure would make
 * it negative (UV_EBUSY), and the valgrind run finds what it leaked. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>

#include "child.h"
#include "helpers.h"

static struct {
  uvp_ctx_t *ctx; /* what the job was given */
  void *arg;
  int rc;            /* what its await returned */
  uvp_cause_t cause; /* the awaited promise's cause, copied */
  char why[160];     /* as uvp_cause_format says it */
  bool cleaned;      /* its cleanup after a cut ran to its end */
  int orphan_rc;     /* what a fiber nobody awaited saw at the teardown */
} seen;

static void reset(void) {
  memset(&seen, 0, sizeof(seen));
  seen.rc = 1;
  seen.orphan_rc = 1;
}

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- the job's ends ---------------------------------------------------- */

static uvp_ret_t fulfil(uvp_ctx_t *ctx, void *arg) {
  seen.ctx = ctx;
  seen.arg = arg;
  uvp_promise_t *d;
  seen.rc = uvp_await_take(uvp_delay(ctx, 1, "v", NULL, 0, &d), &d, NULL);
  return uvp_ret_value(strdup("the job's value"), free); /* released */
}

static void test_fulfil(void **state) {
  (void)state;
  reset();
  int x;
  assert_int_equal(uvp_main_run(fulfil, &x, NULL), 0);
  assert_non_null(seen.ctx);
  assert_ptr_equal(seen.arg, &x);
  assert_int_equal(seen.rc, 0);
}

static uvp_ret_t reject(uvp_ctx_t *ctx, void *arg) {
  (void)ctx;
  (void)arg;
  return uvp_ret_reject(UV_ENOENT, strdup("payload"), free);
}

static void test_reject(void **state) {
  (void)state;
  uvp_main_opts_t o = {.flags = UVP_MAIN_QUIET};
  assert_int_equal(uvp_main_run(reject, NULL, &o), 1);
  o.reject_status = 3; /* a tool's "error" status of its own */
  assert_int_equal(uvp_main_run(reject, NULL, &o), 3);
  /* Said on stderr without UVP_MAIN_QUIET; the status is the same. */
  assert_int_equal(uvp_main_run(reject, NULL, NULL), 1);
}

/* The job returns a promise still pending: the program ends when it does. */
static uvp_ret_t adopt(uvp_ctx_t *ctx, void *arg) {
  uvp_promise_t *d;
  (void)arg;
  if (uvp_delay(ctx, 20, NULL, NULL, 0, &d) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  return uvp_ret_adopt(d);
}

static void test_adopt(void **state) {
  (void)state;
  uint64_t t0 = now_ms();
  assert_int_equal(uvp_main_run(adopt, NULL, NULL), 0);
  assert_true(now_ms() - t0 >= 19);
}

/* ---- signals ----------------------------------------------------------- */

/* Windows: libuv hears Ctrl-C from the console, which a test cannot press
 * for itself (raise is the C runtime's, and uv_kill ends the process): the
 * signals' tests skip there, saying so, and the rest run. */
#if !defined(_WIN32)
/* Sends signo to this process, awaits something long (10 s), records what
 * the await says and why, then cleans up: a shielded short wait. */
static uvp_ret_t cut_by(uvp_ctx_t *ctx, void *arg) {
  int signo = (int)(intptr_t)arg;
  uvp_promise_t *d;
  uvp_outcome_t o;
  if (uv_kill(uv_os_getpid(), signo) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  seen.rc = uvp_await_take(uvp_delay(ctx, 10000, NULL, NULL, 0, &d), &d, &o);
  const uvp_cause_t *c = uvp_promise_cause(o.promise); /* until next await */
  if (c != NULL) {
    seen.cause = *c;
    uvp_cause_format(c, seen.why, sizeof(seen.why));
  }
  seen.cause.message = NULL; /* the record's: not kept past the await */
  uvp_promise_t *w;
  int rc = uvp_delay(ctx, 20, NULL, NULL, 0, &w);
  if (rc == 0 && uvp_await_shielded(w, NULL) == 0)
    seen.cleaned = true;
  if (rc == 0)
    uvp_promise_release(w);
  return uvp_ret_pass(); /* discarded: the cut decided */
}

static void expect_cut(int signo, const char *name) {
  reset();
  uint64_t t0 = now_ms();
  int line = __LINE__ + 1;
  int rc = uvp_main_run(cut_by, (void *)(intptr_t)signo, NULL);
  assert_int_equal(rc, 128 + signo);
  assert_true(now_ms() - t0 < 5000); /* the 10 s wait was cut */
  assert_int_equal(seen.rc, UV_ECANCELED);
  assert_int_equal(seen.cause.kind, UVP_CAUSE_SIGNAL);
  assert_int_equal(seen.cause.peer_code, signo);
  assert_int_equal(seen.cause.line, line);
  char want[160];
  snprintf(want, sizeof(want), "%s received (uvp_main_run at %s:%d)", name,
           __FILE__, line);
  assert_string_equal(seen.why, want);
  assert_true(seen.cleaned); /* the program waited for the cleanup */
}
#endif

static void test_sigint_cuts(void **state) {
  (void)state;
#if defined(_WIN32)
  SKIP_BECAUSE("a console's Ctrl-C cannot be sent to the test itself");
#else
  expect_cut(SIGINT, "SIGINT");
#endif
}

static void test_sigterm_cuts(void **state) {
  (void)state;
#if defined(_WIN32)
  SKIP_BECAUSE("no SIGTERM between processes on Windows (uvp/main.h)");
#else
  expect_cut(SIGTERM, "SIGTERM");
#endif
}

#if !defined(_WIN32)
static int child_fd = -1;

/* Cut by a first SIGINT, the cleanup sends a second one and waits 5 s;
 * "done" goes to the parent if it got to the end. */
static uvp_ret_t cut_twice(uvp_ctx_t *ctx, void *arg) {
  uvp_promise_t *d;
  (void)arg;
  if (uv_kill(uv_os_getpid(), SIGINT) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  uvp_await_take(uvp_delay(ctx, 10000, NULL, NULL, 0, &d), &d, NULL);
  if (uv_kill(uv_os_getpid(), SIGINT) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  uvp_await_shielded_take(uvp_delay(ctx, 300, NULL, NULL, 0, &d), &d, NULL);
  if (write(child_fd, "done", 4) != 4)
    return uvp_ret_reject(UV_EIO, NULL, NULL);
  return uvp_ret_pass();
}

static unsigned int child_flags;

static void second_signal_child(int fd) {
  child_fd = fd;
  uvp_main_opts_t o = {.flags = child_flags};
  _exit(uvp_main_run(cut_twice, NULL, &o));
}

/* The wait status of the child, and whether its cleanup got to the end. */
static int run_second_signal(unsigned int flags, bool *finished) {
  int fd;
  child_flags = flags;
  int status = test_in_child(second_signal_child, &fd, NULL, 0);
  char buf[8] = {0};
  *finished = read(fd, buf, sizeof(buf)) == 4;
  close(fd);
  return status;
}
#endif

static void test_second_signal(void **state) {
  (void)state;
#if defined(_WIN32)
  SKIP_BECAUSE("no fork, and no Ctrl-C to send to oneself, on Windows");
#else
  bool finished;
  /* Default: the second SIGINT ends the process at once, status 130. */
  int status = run_second_signal(0, &finished);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 130);
  assert_false(finished);
  /* UVP_MAIN_IGNORE_SECOND: the cleanup runs to its end. */
  status = run_second_signal(UVP_MAIN_IGNORE_SECOND, &finished);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 130);
  assert_true(finished);
#endif
}

#if !defined(_WIN32)
/* Signals off: a SIGINT handler of the program's own is left alone. */
static volatile sig_atomic_t own_handler_ran;
static void own_handler(int signo) {
  (void)signo;
  own_handler_ran = 1;
}

static uvp_ret_t raise_and_wait(uvp_ctx_t *ctx, void *arg) {
  uvp_promise_t *d;
  (void)arg;
  if (raise(SIGINT) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  seen.rc = uvp_await_take(uvp_delay(ctx, 20, NULL, NULL, 0, &d), &d, NULL);
  return uvp_ret_pass();
}
#endif

static void test_no_signals(void **state) {
  (void)state;
#if defined(_WIN32)
  SKIP_BECAUSE("raise(SIGINT) is the C runtime's on Windows, not libuv's");
#else
  reset();
  struct sigaction sa = {.sa_handler = own_handler}, old;
  assert_int_equal(sigaction(SIGINT, &sa, &old), 0);
  uvp_main_opts_t o = {.flags = UVP_MAIN_NO_SIGNALS};
  assert_int_equal(uvp_main_run(raise_and_wait, NULL, &o), 0);
  assert_int_equal(sigaction(SIGINT, &old, NULL), 0);
  assert_true(own_handler_ran);
  assert_int_equal(seen.rc, 0); /* not cut */
#endif
}

/* ---- teardown ---------------------------------------------------------- */

static uvp_ret_t orphan(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_promise_t *d;
  seen.orphan_rc =
      uvp_await_take(uvp_delay(ctx, 10000, NULL, NULL, 0, &d), &d, NULL);
  return uvp_ret_pass();
}

static uv_timer_t left_open;
static void tick(uv_timer_t *t) { (void)t; }

/* Leaves behind what a careless job does: a fiber nobody awaits, waiting
 * 10 s, and a repeating timer of its own, never closed. */
static uvp_ret_t careless(uvp_ctx_t *ctx, void *arg) {
  (void)arg;
  if (uvp_fiber_spawn(ctx, orphan, ctx, NULL, NULL) != 0 ||
      uv_timer_init(uvp_ctx_loop(ctx), &left_open) != 0 ||
      uv_timer_start(&left_open, tick, 1000, 1000) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  return uvp_ret_pass();
}

static void test_teardown_cuts_the_rest(void **state) {
  (void)state;
  reset();
  uint64_t t0 = now_ms();
  /* 0: the loop closed (uv_loop_close returned 0 inside), the timer closed
   * for the program (said on stderr), the orphan run to its end. */
  assert_int_equal(uvp_main_run(careless, NULL, NULL), 0);
  assert_true(now_ms() - t0 < 5000);
  assert_int_equal(seen.orphan_rc, UVP_ECLOSED);
}

/* A job waiting for what nothing will settle: the loop runs dry. */
static uvp_ret_t stuck(uvp_ctx_t *ctx, void *arg) {
  uvp_promise_t *never;
  (void)arg;
  if (uvp_promise_new(ctx, &never) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  seen.rc = uvp_await(never, NULL);
  uvp_promise_release(never);
  return uvp_ret_pass();
}

static void test_stuck(void **state) {
  (void)state;
  reset();
  uvp_main_opts_t o = {.reject_status = 4};
  assert_int_equal(uvp_main_run(stuck, NULL, &o), 4);
  assert_int_equal(seen.rc, UVP_ECLOSED); /* resumed by the teardown */
}

/* What uvp_main_run says on stderr: the handles left open, a rejection
 * with what cut it, and nothing with UVP_MAIN_QUIET. */
#if !defined(_WIN32)
static int deadline_line;

/* The job: a 10 s delay under a deadline of 10 ms, which cuts it. */
static int past_deadline(uvp_ctx_t *ctx, void *arg, uvp_promise_t **out) {
  (void)arg;
  deadline_line = __LINE__ + 1;
  int rc = uvp_deadline_set(ctx, 10);
  return rc != 0 ? rc : uvp_delay(ctx, 10000, NULL, NULL, 0, out);
}

static void say_child(int fd) {
  uvp_main_opts_t quiet = {.flags = UVP_MAIN_QUIET};
  int said[4] = {uvp_main_run(careless, NULL, NULL),
                 uvp_main_run_promise(past_deadline, NULL, NULL),
                 uvp_main_run_promise(past_deadline, NULL, &quiet),
                 deadline_line}; /* this process's: the parent's is 0 */
  if (write(fd, said, sizeof(said)) != (ssize_t)sizeof(said))
    _exit(1);
}
#endif

static void test_what_it_says(void **state) {
  (void)state;
#if defined(_WIN32)
  SKIP_BECAUSE("no fork on Windows to read the child's stderr");
#else
  char err[2048], want[256];
  int status[4];
  int fd;
  int ws = test_in_child(say_child, &fd, err, sizeof(err));
  assert_true(WIFEXITED(ws));
  assert_int_equal(WEXITSTATUS(ws), 0);
  assert_int_equal(read(fd, status, sizeof(status)), sizeof(status));
  close(fd);
  assert_int_equal(status[0], 0);
  assert_int_equal(status[1], 1);
  assert_int_equal(status[2], 1);
  const char *left = "uvp_main_run: the program left 1 libuv handle open "
                     "(timer): closed at exit\n";
  assert_non_null(strstr(err, left));
  snprintf(want, sizeof(want),
           "uvp_main_run: the job rejected: ETIMEDOUT (%s); cut: deadline "
           "10 ms set at %s:%d\n",
           uvp_strerror(UV_ETIMEDOUT), __FILE__, status[3]);
  const char *said = strstr(err, want);
  assert_non_null(said);
  /* Once only: the quiet run said nothing. */
  assert_null(strstr(said + strlen(want), "the job rejected"));
#endif
}

/* ---- the promise form -------------------------------------------------- */

static int start_delay(uvp_ctx_t *ctx, void *arg, uvp_promise_t **out) {
  seen.ctx = ctx;
  return uvp_delay(ctx, (uint64_t)(uintptr_t)arg, NULL, NULL, 0, out);
}

static int start_fails(uvp_ctx_t *ctx, void *arg, uvp_promise_t **out) {
  (void)ctx;
  (void)arg;
  (void)out;
  return UV_ECONNREFUSED;
}

static uvp_ret_t chain_end(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  seen.rc = in->status;
  return uvp_ret_pass();
}

/* No promise handed out: the loop's own work is the job (Node's rule). */
static int start_chain(uvp_ctx_t *ctx, void *arg, uvp_promise_t **out) {
  uvp_promise_t *d;
  (void)arg;
  (void)out;
  int rc = uvp_delay(ctx, 10, NULL, NULL, 0, &d);
  return rc != 0 ? rc : uvp_promise_then_take(d, chain_end, NULL, NULL);
}

static void test_promise_form(void **state) {
  (void)state;
  reset();
  assert_int_equal(uvp_main_run_promise(start_delay, (void *)1, NULL), 0);
  assert_non_null(seen.ctx);
  uvp_main_opts_t o = {.flags = UVP_MAIN_QUIET};
  assert_int_equal(uvp_main_run_promise(start_fails, NULL, &o), 1);
  reset();
  assert_int_equal(uvp_main_run_promise(start_chain, NULL, NULL), 0);
  assert_int_equal(seen.rc, 0);
}

#if !defined(_WIN32)
static uv_timer_t kill_timer;
static void send_sigint(uv_timer_t *t) {
  assert_int_equal(uv_kill(uv_os_getpid(), SIGINT), 0);
  uv_close((uv_handle_t *)t, NULL);
}

static uvp_ret_t on_cut(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  seen.rc = in->status;
  uvp_cause_format(uvp_promise_cause(in->promise), seen.why, sizeof(seen.why));
  return uvp_ret_pass();
}

/* The job: a 10 s delay, watched by a handler that reads its cause;
 * SIGINT in 10 ms. */
static int start_long(uvp_ctx_t *ctx, void *arg, uvp_promise_t **out) {
  (void)arg;
  int rc = uvp_delay(ctx, 10000, NULL, NULL, 0, out);
  if (rc == 0)
    rc = uvp_promise_on(*out, UVP_ON_BOTH, on_cut, NULL, NULL);
  if (rc == 0)
    rc = uv_timer_init(uvp_ctx_loop(ctx), &kill_timer);
  if (rc == 0)
    rc = uv_timer_start(&kill_timer, send_sigint, 10, 0);
  return rc;
}
#endif

static void test_promise_form_signal(void **state) {
  (void)state;
#if defined(_WIN32)
  SKIP_BECAUSE("a console's Ctrl-C cannot be sent to the test itself");
#else
  reset();
  uint64_t t0 = now_ms();
  assert_int_equal(uvp_main_run_promise(start_long, NULL, NULL), 130);
  assert_true(now_ms() - t0 < 5000);
  assert_int_equal(seen.rc, UV_ECANCELED);
  assert_non_null(strstr(seen.why, "SIGINT received (uvp_main_run at "));
#endif
}

/* ---- options and misuse ------------------------------------------------ */

static uvp_ret_t nested(uvp_ctx_t *ctx, void *arg) {
  (void)ctx;
  (void)arg;
  seen.rc = uvp_main_run(fulfil, NULL, NULL);
  return uvp_ret_pass();
}

static void test_misuse(void **state) {
  (void)state;
  assert_int_equal(uvp_main_run(NULL, NULL, NULL), UV_EINVAL);
  assert_int_equal(uvp_main_run_promise(NULL, NULL, NULL), UV_EINVAL);
  uvp_main_opts_t o = {.flags = 1u << 20};
  assert_int_equal(uvp_main_run(fulfil, NULL, &o), UV_EINVAL);
  o = (uvp_main_opts_t){.reserved = {0, 0, 0, 1}};
  assert_int_equal(uvp_main_run(fulfil, NULL, &o), UV_EINVAL);
  o = (uvp_main_opts_t){.reject_status = 256};
  assert_int_equal(uvp_main_run(fulfil, NULL, &o), UV_EINVAL);
  o = (uvp_main_opts_t){.reject_status = -1};
  assert_int_equal(uvp_main_run(fulfil, NULL, &o), UV_EINVAL);
  o = (uvp_main_opts_t){.fiber_mode = 7};
  assert_int_equal(uvp_main_run(fulfil, NULL, &o), UV_EINVAL);
  /* On a fiber: refused, and the outer frame goes on. */
  reset();
  assert_int_equal(uvp_main_run(nested, NULL, NULL), 0);
  assert_int_equal(seen.rc, UVP_EINFIBER);
}

static uvp_ret_t in_compact(uvp_ctx_t *ctx, void *arg) {
  uvp_promise_t *d;
  char big[64 * 1024]; /* fits the 256 KiB asked for, not 16 KiB */
  (void)arg;
  memset(big, 1, sizeof(big));
  seen.rc = uvp_await_take(uvp_delay(ctx, 1, NULL, NULL, 0, &d), &d, NULL);
  return big[sizeof(big) - 1] == 1 ? uvp_ret_pass()
                                   : uvp_ret_reject(UV_EIO, NULL, NULL);
}

static void test_fiber_options(void **state) {
  (void)state;
  reset();
  uvp_main_opts_t o = {.fiber_stack = 256 * 1024,
                       .fiber_mode = UVP_FIBER_COMPACT};
  assert_int_equal(uvp_main_run(in_compact, NULL, &o), 0);
  assert_int_equal(seen.rc, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fulfil),
      cmocka_unit_test(test_reject),
      cmocka_unit_test(test_adopt),
      cmocka_unit_test(test_sigint_cuts),
      cmocka_unit_test(test_sigterm_cuts),
      cmocka_unit_test(test_second_signal),
      cmocka_unit_test(test_no_signals),
      cmocka_unit_test(test_teardown_cuts_the_rest),
      cmocka_unit_test(test_stuck),
      cmocka_unit_test(test_what_it_says),
      cmocka_unit_test(test_promise_form),
      cmocka_unit_test(test_promise_form_signal),
      cmocka_unit_test(test_misuse),
      cmocka_unit_test(test_fiber_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
