/* Misuse that uvp cannot turn into an error code of the call's, made
 * visible: a double release, a use of a released promise, and a second
 * uvp_ctx_close after the teardown completed.  Each runs in a child
 * process (this program, exec'd with the misuse's name).
 *  - In every build, uvp itself notices a call on a promise whose memory is
 *    free and not yet taken by another promise: it says so on stderr and
 *    ignores the call (a release) or refuses it (UV_EINVAL); the child then
 *    goes on using the library, which still works.
 *  - Where a tool watches uvp's own memory (uvp built with ASan; this
 *    program run under valgrind, a debug build telling memcheck about the
 *    slabs), the tool reports the access first, as before.
 *  - A second uvp_ctx_close returns UVP_ECLOSED in every build, also once
 *    the context is freed: uvp looks the pointer up before reading it. */
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(UVP_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif

#include "emulator.h"
#include "helpers.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif

static const char *self;

/* ---- the misuses, run in the child --------------------------------------- */

/* The loop and context a misuse needs.  A child that cannot set them up
 * exits 3: neither the code the parent wants from valgrind (42) nor a
 * report from ASan, so the test fails instead of blaming the misuse. */
static uvp_ctx_t *child_ctx(uv_loop_t *loop) {
  uvp_ctx_t *ctx;
  if (uv_loop_init(loop) != 0 || uvp_ctx_new(loop, &ctx) != 0)
    _exit(3);
  return ctx;
}

/* After the misuse: the library still works (a promise settles, a
 * handler runs, the context closes and the loop closes), or exit 4. */
static uvp_ret_t mark(void *arg, const uvp_outcome_t *in) {
  *(int *)arg = in->value == (void *)&mark;
  return uvp_ret_pass();
}

static void still_works(uv_loop_t *loop, uvp_ctx_t *ctx) {
  uvp_promise_t *p;
  int ran = 0;
  if (uvp_promise_new(ctx, &p) != 0 ||
      uvp_promise_then(p, mark, &ran, NULL) != 0 ||
      uvp_promise_resolve(p, (void *)&mark, NULL) != 0)
    _exit(4);
  uvp_promise_release(p);
  uv_run(loop, UV_RUN_DEFAULT);
  if (!ran || uvp_ctx_close(ctx) != 0)
    _exit(4);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0)
    _exit(4);
}

static void child_double_release(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *p;
  if (uvp_promise_new(ctx, &p) != 0)
    _exit(3);
  uvp_promise_release(p);
  uvp_promise_release(p); /* the misuse: ignored */
  still_works(&loop, ctx);
}

static void child_use_after_release(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *p, *d;
  if (uvp_promise_resolved(ctx, NULL, NULL, &p) != 0)
    _exit(3);
  uvp_promise_release(p);
  if (uvp_promise_then(p, NULL, NULL, &d) != UV_EINVAL) /* the misuse */
    _exit(5);
  if (uvp_promise_resolve(p, NULL, NULL) != UV_EINVAL)
    _exit(5);
  if (uvp_promise_retain(p) != NULL)
    _exit(5);
  still_works(&loop, ctx);
}

static void child_close_twice(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  if (uvp_ctx_close(ctx) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT);         /* the context is freed now */
  if (uvp_ctx_close(ctx) != UVP_ECLOSED) /* the misuse */
    _exit(5);
  if (uv_loop_close(&loop) != 0)
    _exit(4);
}

/* ---- the parent ---------------------------------------------------------- */

static bool under_valgrind(void) {
#if defined(UVP_HAVE_VALGRIND)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

/* Run this program with `misuse` as its argument (under valgrind when we
 * run under it); return its exit status and what it wrote to stderr. */
static int run_child(const char *misuse, char *err, size_t cap) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    if (under_valgrind())
      execlp("valgrind", "valgrind", "--quiet", "--error-exitcode=42",
             "--leak-check=no", self, misuse, (char *)NULL);
    else
      exec_self((char *const[]){(char *)self, (char *)misuse, NULL});
    _exit(127);
  }
  close(fds[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < cap && (r = read(fds[0], err + n, cap - 1 - n)) != 0) {
    if (r < 0 && errno == EINTR)
      continue;
    assert_true(r > 0);
    n += (size_t)r;
  }
  err[n] = '\0';
  close(fds[0]);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return status;
}

/* The child's report: the tool's, where one watches uvp's memory, else
 * uvp's own (`call` named), and then the child goes on to exit 0. */
static void expect_reported(const char *misuse, const char *asan_kind,
                            const char *call) {
  static char err[65536];
  int status = run_child(misuse, err, sizeof(err));
#if defined(ASAN_BUILD)
  (void)call;
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_non_null(strstr(err, "ERROR: AddressSanitizer"));
  assert_non_null(strstr(err, asan_kind));
#else
  (void)asan_kind;
  assert_true(WIFEXITED(status));
  if (under_valgrind()) {
    assert_int_equal(WEXITSTATUS(status), 42);
    assert_non_null(strstr(err, "Invalid read"));
  } else {
    if (WEXITSTATUS(status) != 0)
      fail_msg("child exited %d:\n%s", WEXITSTATUS(status), err);
  }
  assert_non_null(strstr(err, "already freed"));
  assert_non_null(strstr(err, call));
#endif
}

static void test_double_release_reported(void **state) {
  (void)state;
  expect_reported("double-release", "use-after-poison",
                  "uvp: uvp_promise_release on promise");
}

static void test_use_after_release_reported(void **state) {
  (void)state;
  expect_reported("use-after-release", "use-after-poison",
                  "uvp: a handler's registration on promise");
}

/* A second close once the context is freed: UVP_ECLOSED in every build,
 * with nothing read (no tool reports anything), and the loop closes. */
static void test_close_twice_after_teardown(void **state) {
  (void)state;
  static char err[65536];
  int status = run_child("close-twice", err, sizeof(err));
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) != 0)
    fail_msg("child exited %d:\n%s", WEXITSTATUS(status), err);
}

/* The contract's other half: a second close before the loop has run the
 * close callbacks is answered, and leaves nothing behind. */
static void test_close_twice_before_teardown(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  assert_int_equal(uvp_ctx_close(f->ctx), UVP_ECLOSED);
  f->ctx = NULL;
}

int main(int argc, char **argv) {
  self = argv[0];
  if (argc == 2) {
    if (strcmp(argv[1], "double-release") == 0)
      child_double_release();
    else if (strcmp(argv[1], "use-after-release") == 0)
      child_use_after_release();
    else if (strcmp(argv[1], "close-twice") == 0)
      child_close_twice();
    return 0; /* the tool did not stop it: the parent says so */
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_double_release_reported),
      cmocka_unit_test(test_use_after_release_reported),
      cmocka_unit_test(test_close_twice_after_teardown),
      FIXTURE_TEST(test_close_twice_before_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
