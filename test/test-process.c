/* uvp_spawn with real children (/bin/sh, cat, sleep, head): exit codes,
 * both output streams, stdin data, signals, large and truncated output, a
 * missing program, cancellation and teardown while a child runs, a race
 * decided by a child's exit (its losers' cause names the child).  Every
 * test ends with uv_loop_close() == 0, so no pipe or process handle is
 * left behind in any path. */
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

static uvp_spawn_opts_t sh(const char *script, char **argv) {
  argv[0] = "sh";
  argv[1] = "-c";
  argv[2] = (char *)script;
  argv[3] = NULL;
  uvp_spawn_opts_t o = {.file = "/bin/sh", .args = argv};
  return o;
}

static uvp_process_result_t *fulfilled_result(uvp_promise_t *p) {
  assert_int_equal(uvp_promise_reason(p, NULL), 0);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  return uvp_promise_value(p);
}

static uint64_t ms_since(uint64_t t0) { return (uv_hrtime() - t0) / 1000000; }

static void test_exit_code_and_both_streams(void **state) {
  fixture_t *f = *state;
  char *argv[4];
  uvp_spawn_opts_t o = sh("echo out; echo err >&2; exit 3", argv);
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  run_loop(f);
  uvp_process_result_t *r = fulfilled_result(p);
  assert_int_equal(r->exit_status, 3);
  assert_int_equal(r->term_signal, 0);
  assert_string_equal(r->out.base, "out\n");
  assert_int_equal(r->out.len, 4);
  assert_string_equal(r->err.base, "err\n");
  assert_int_equal(r->err.len, 4);
  assert_int_equal(r->truncated, 0);
  uvp_promise_release(p);
}

static void test_args_default_to_file(void **state) {
  fixture_t *f = *state;
  uvp_spawn_opts_t o = {.file = "true"}; /* looked up in PATH */
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  run_loop(f);
  uvp_process_result_t *r = fulfilled_result(p);
  assert_int_equal(r->exit_status, 0);
  assert_int_equal(r->out.len, 0);
  assert_string_equal(r->out.base, "");
  assert_string_equal(r->err.base, "");
  uvp_promise_release(p);
}

static void test_cat_echoes_stdin_data(void **state) {
  fixture_t *f = *state;
  char data[] = "hello\nworld\n";
  char *argv[] = {"cat", NULL};
  uvp_spawn_opts_t o = {.file = "cat",
                        .args = argv,
                        .stdin_data = data,
                        .stdin_len = strlen(data)};
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  memset(data, 'x', sizeof(data) - 1); /* copied: ours to reuse at once */
  run_loop(f);
  uvp_process_result_t *r = fulfilled_result(p);
  assert_int_equal(r->exit_status, 0);
  assert_string_equal(r->out.base, "hello\nworld\n");
  uvp_promise_release(p);
}

/* Empty stdin_data is an empty pipe; no stdin_data reads as /dev/null:
 * either way cat sees end of file at once. */
static void test_empty_and_absent_stdin(void **state) {
  fixture_t *f = *state;
  char *argv[] = {"cat", NULL};
  uvp_spawn_opts_t empty = {.file = "cat", .args = argv, .stdin_data = ""};
  uvp_spawn_opts_t none = {.file = "cat", .args = argv};
  uvp_promise_t *p, *q;
  assert_int_equal(uvp_spawn(f->ctx, &empty, &p), 0);
  assert_int_equal(uvp_spawn(f->ctx, &none, &q), 0);
  run_loop(f);
  assert_int_equal(fulfilled_result(p)->out.len, 0);
  assert_int_equal(fulfilled_result(q)->out.len, 0);
  assert_int_equal(fulfilled_result(q)->exit_status, 0);
  uvp_promise_release(p);
  uvp_promise_release(q);
}

/* The child exits without reading its input: not an error of the call. */
static void test_child_ignores_stdin(void **state) {
  fixture_t *f = *state;
  static char big[1 << 20];
  char *argv[4];
  uvp_spawn_opts_t o = sh("exit 0", argv);
  o.stdin_data = big;
  o.stdin_len = sizeof(big);
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  run_loop(f);
  assert_int_equal(fulfilled_result(p)->exit_status, 0);
  uvp_promise_release(p);
}

static void test_env_and_cwd(void **state) {
  fixture_t *f = *state;
  char *argv[4];
  char *env[] = {"UVP_TEST_VAR=hello", NULL};
  uvp_spawn_opts_t o = sh("echo \"$UVP_TEST_VAR\"; pwd", argv);
  o.env = env;
  o.cwd = "/";
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  run_loop(f);
  assert_string_equal(fulfilled_result(p)->out.base, "hello\n/\n");
  uvp_promise_release(p);
}

/* Refused synchronously: no promise, and the loop still closes cleanly
 * once it has run the close callbacks of the attempt's handles. */
static void test_missing_program(void **state) {
  fixture_t *f = *state;
  char *argv[] = {"no-such-program-uvp", NULL};
  uvp_spawn_opts_t o = {.file = "no-such-program-uvp",
                        .args = argv,
                        .stdin_data = "x",
                        .stdin_len = 1};
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), UV_ENOENT);
  assert_null(p);
  o.file = "/nonexistent/dir/prog";
  o.stdin_data = NULL;
  o.stdin_len = 0;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), UV_ENOENT);
  assert_null(p);
  run_loop(f);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

/* The context closing before the failed attempt's handles are closed. */
static void test_missing_program_then_teardown(void **state) {
  fixture_t *f = *state;
  uvp_spawn_opts_t o = {.file = "no-such-program-uvp"};
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), UV_ENOENT);
  assert_null(p);
  /* fixture_teardown closes the context before running the loop. */
}

/* uv_spawn's own refusal other than a missing file: a directory, and a
 * file without execute permission (refused to root too). */
static void test_not_executable(void **state) {
  fixture_t *f = *state;
  char path[] = "/tmp/uvp-test-noexec-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
  assert_int_equal(close(fd), 0);
  assert_int_equal(chmod(path, 0644), 0);
  uvp_spawn_opts_t o = {.file = path};
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), UV_EACCES);
  o.file = "/";
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), UV_EACCES);
  assert_null(p);
  assert_int_equal(unlink(path), 0);
  run_loop(f);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

static void test_bad_cwd(void **state) {
  fixture_t *f = *state;
  char *argv[4];
  uvp_spawn_opts_t o = sh("exit 0", argv);
  o.cwd = "/nonexistent/dir";
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), UV_ENOENT);
  assert_null(p);
}

static void test_cancel_kills_child(void **state) {
  fixture_t *f = *state;
  char *argv[] = {"sleep", "10", NULL};
  uvp_spawn_opts_t o = {.file = "sleep", .args = argv};
  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  uvp_promise_release(p);
  /* The process handle keeps uv_run going until the child has exited. */
  run_loop(f);
  assert_true(ms_since(t0) < 2000);
}

/* Through uvp_timeout: the timer cancels the spawn. */
static void test_timeout_kills_child(void **state) {
  fixture_t *f = *state;
  char *argv[] = {"sleep", "10", NULL};
  uvp_spawn_opts_t o = {.file = "sleep", .args = argv};
  uvp_promise_t *p, *t;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  assert_int_equal(uvp_timeout(p, 100, 0, &t), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  uint64_t ms = ms_since(t0);
  assert_true(ms >= 90 && ms < 2000);
  uvp_promise_release(t);
  uvp_promise_release(p);
}

/* A child that ignores SIGTERM is stopped with the signal of the options. */
static void test_cancel_signal_option(void **state) {
  fixture_t *f = *state;
  char *argv[4];
  uvp_spawn_opts_t o = sh("trap '' TERM; exec sleep 10", argv);
  o.cancel_signal = SIGKILL;
  uvp_promise_t *p, *d;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  /* Give sh time to install the trap and exec. */
  assert_int_equal(uvp_delay(f->ctx, 100, NULL, NULL, UVP_KEEP_ALIVE, &d), 0);
  run_until_settled(f, d);
  assert_int_equal(uvp_promise_cancel(p), 0);
  run_loop(f);
  assert_true(ms_since(t0) < 2000);
  uvp_promise_release(d);
  uvp_promise_release(p);
}

static void test_killed_by_signal(void **state) {
  fixture_t *f = *state;
  char *argv[4];
  uvp_spawn_opts_t o = sh("echo before; kill -KILL $$; echo after", argv);
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  run_loop(f);
  uvp_process_result_t *r = fulfilled_result(p);
  assert_int_equal(r->term_signal, SIGKILL);
  assert_int_equal(r->exit_status, 0);
  assert_string_equal(r->out.base, "before\n");
  uvp_promise_release(p);
}

/* A race decided by a child's exit (UVP_CANCEL_LOSERS): the loser's cause
 * says which process ended and how, after the sites; the race's value is
 * the child's result, freed with the last promise holding it (valgrind). */
static void race_lost_to_child(fixture_t *f, const char *script,
                               const char *how) {
  char *argv[4];
  uvp_spawn_opts_t o = sh(script, argv);
  uvp_promise_t *child, *work, *r;
  int cline = __LINE__ + 1;
  assert_int_equal(uvp_spawn(f->ctx, &o, &child), 0);
  assert_int_equal(uvp_delay(f->ctx, 10000, NULL, NULL, 0, &work), 0);
  uvp_promise_t *in[] = {child, work};
  int rline = __LINE__ + 1;
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, UVP_CANCEL_LOSERS, &r), 0);
  uvp_promise_release(child); /* the race's value keeps the result */
  run_until_settled(f, r);
  assert_ptr_equal(fulfilled_result(r), uvp_promise_value(r));
  assert_null(uvp_promise_cause(r));
  const uvp_cause_t *c = uvp_promise_cause(work);
  assert_non_null(c);
  char line[512], head[256];
  assert_true(uvp_cause_format(c, line, sizeof(line)) < (int)sizeof(line));
  snprintf(head, sizeof(head),
           "lost a race decided at %s:%d (by the input created at %s:%d): "
           "process ",
           __FILE__, rline, __FILE__, cline);
  if (strncmp(line, head, strlen(head)) != 0)
    fail_msg("%s: does not begin with %s", line, head);
  const char *pid = line + strlen(head);
  size_t digits = strspn(pid, "0123456789");
  assert_true(digits > 0);
  assert_string_equal(pid + digits, how);
  uvp_promise_release(r);
  uvp_promise_release(work);
}

static void test_race_lost_to_child_exit(void **state) {
  race_lost_to_child(*state, "exit 3", " (/bin/sh) exited with status 3");
}

static void test_race_lost_to_child_killed(void **state) {
  race_lost_to_child(*state, "kill -9 $$", " (/bin/sh) was killed by signal 9");
}

static void test_large_output_collected(void **state) {
  fixture_t *f = *state;
  char *argv[] = {"head", "-c", "1000000", "/dev/zero", NULL};
  uvp_spawn_opts_t o = {.file = "head", .args = argv};
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  run_loop(f);
  uvp_process_result_t *r = fulfilled_result(p);
  assert_int_equal(r->exit_status, 0);
  assert_int_equal(r->out.len, 1000000);
  assert_int_equal(r->truncated, 0);
  for (size_t i = 0; i < r->out.len; i++)
    if (r->out.base[i] != 0)
      fail_msg("byte %zu is %d", i, r->out.base[i]);
  assert_int_equal(r->out.base[r->out.len], '\0');
  uvp_promise_release(p);
}

/* Past max_output the rest is drained and dropped: the child is not
 * blocked on a full pipe and exits normally. */
static void test_output_truncated_at_max(void **state) {
  fixture_t *f = *state;
  char *argv[4];
  uvp_spawn_opts_t o =
      sh("head -c 300000 /dev/zero | tr '\\0' a; echo small >&2", argv);
  o.max_output = 1000;
  uvp_promise_t *p;
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  run_loop(f);
  uvp_process_result_t *r = fulfilled_result(p);
  assert_int_equal(r->exit_status, 0);
  assert_int_equal(r->out.len, 1000);
  assert_int_equal(r->out.base[999], 'a');
  assert_int_equal(r->out.base[1000], '\0');
  assert_string_equal(r->err.base, "small\n");
  assert_int_not_equal(r->truncated, 0);
  uvp_promise_release(p);
}

static void test_many_children_all_settled(void **state) {
  fixture_t *f = *state;
  enum { N = 16 };
  char scripts[N][32];
  char *argv[N][4];
  uvp_promise_t *ps[N], *all;
  for (int i = 0; i < N; i++) {
    snprintf(scripts[i], sizeof(scripts[i]), "echo %d; exit %d", i, i);
    uvp_spawn_opts_t o = sh(scripts[i], argv[i]);
    assert_int_equal(uvp_spawn(f->ctx, &o, &ps[i]), 0);
  }
  assert_int_equal(uvp_promise_all(f->ctx, ps, N, 0, &all), 0);
  for (int i = 0; i < N; i++)
    uvp_promise_release(ps[i]);
  run_loop(f);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  uvp_values_t *v = uvp_promise_value(all);
  for (int i = 0; i < N; i++) {
    uvp_process_result_t *r = v->values[i];
    char want[8];
    snprintf(want, sizeof(want), "%d\n", i);
    assert_int_equal(r->exit_status, i);
    assert_string_equal(r->out.base, want);
  }
  uvp_promise_release(all);
}

/* uvp_ctx_close with a child running: the promise rejects with
 * UVP_ECLOSED, the child is killed, and the loop finishes promptly. */
static void test_teardown_with_running_process(void **state) {
  fixture_t *f = *state;
  char *argv[] = {"sleep", "10", NULL};
  char data[] = "unread input";
  uvp_spawn_opts_t o = {.file = "sleep",
                        .args = argv,
                        .stdin_data = data,
                        .stdin_len = sizeof(data)};
  uvp_promise_t *p, *q;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  o.stdin_data = NULL;
  o.stdin_len = 0;
  assert_int_equal(uvp_spawn(f->ctx, &o, &q), 0);
  uvp_promise_release(q); /* the operation keeps its own reference */
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  run_loop(f);
  assert_true(ms_since(t0) < 2000);
  uvp_promise_release(p);
}

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_spawn_opts_t o = {.file = "true"};
  uvp_spawn_opts_t nofile = {.file = NULL};
  uvp_spawn_opts_t nodata = {.file = "true", .stdin_len = 3};
  /* A signal kill(2) refuses: a cancellation could not stop the child. */
  uvp_spawn_opts_t nosig = {.file = "true", .cancel_signal = -1};
  uvp_spawn_opts_t bigsig = {.file = "true", .cancel_signal = NSIG};
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_spawn(NULL, &o, &p), UV_EINVAL);
  assert_int_equal(uvp_spawn(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_spawn(f->ctx, &o, NULL), UV_EINVAL);
  assert_int_equal(uvp_spawn(f->ctx, &nofile, &p), UV_EINVAL);
  assert_int_equal(uvp_spawn(f->ctx, &nodata, &p), UV_EINVAL);
  assert_int_equal(uvp_spawn(f->ctx, &nosig, &p), UV_EINVAL);
  assert_int_equal(uvp_spawn(f->ctx, &bigsig, &p), UV_EINVAL);
  assert_null(p);
  /* Only uvp settles it. */
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), UVP_ESETTLED);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_promise_release(p);
  /* After uvp_ctx_close: refused, no child started. */
  uvp_ctx_t *ctx = close_ctx(f);
  p = NULL;
  assert_int_equal(uvp_spawn(ctx, &o, &p), UVP_ECLOSED);
  assert_null(p);
  run_loop(f);
}

int main(void) {
  /* Writing to a child that stopped reading must not kill the tests. */
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_exit_code_and_both_streams),
      QUIET_TEST(test_args_default_to_file),
      QUIET_TEST(test_cat_echoes_stdin_data),
      QUIET_TEST(test_empty_and_absent_stdin),
      QUIET_TEST(test_child_ignores_stdin),
      QUIET_TEST(test_env_and_cwd),
      QUIET_TEST(test_missing_program),
      QUIET_TEST(test_missing_program_then_teardown),
      QUIET_TEST(test_not_executable),
      QUIET_TEST(test_bad_cwd),
      QUIET_TEST(test_cancel_kills_child),
      QUIET_TEST(test_timeout_kills_child),
      QUIET_TEST(test_cancel_signal_option),
      QUIET_TEST(test_killed_by_signal),
      QUIET_TEST(test_race_lost_to_child_exit),
      QUIET_TEST(test_race_lost_to_child_killed),
      QUIET_TEST(test_large_output_collected),
      QUIET_TEST(test_output_truncated_at_max),
      QUIET_TEST(test_many_children_all_settled),
      QUIET_TEST(test_teardown_with_running_process),
      QUIET_TEST(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
