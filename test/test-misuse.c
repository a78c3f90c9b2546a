/* Misuse that uvp cannot turn into an error code, made visible by the tools
 * users already run: a double release, a use of a released promise and a
 * second uvp_ctx_close after the teardown completed.  Each runs in a child
 * process (this program, exec'd with the misuse's name) and the test
 * asserts that ASan (in an ASan build) or memcheck (when this program runs
 * under valgrind, the child is started under valgrind too) reported it.
 * In a build with neither there is nothing to observe: the tests skip. */
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(UVP_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif

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

static void child_double_release(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *p;
  if (uvp_promise_new(ctx, &p) != 0)
    _exit(3);
  uvp_promise_release(p);
  uvp_promise_release(p); /* the misuse */
}

static void child_use_after_release(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  uvp_promise_t *p, *d;
  if (uvp_promise_resolved(ctx, NULL, NULL, &p) != 0)
    _exit(3);
  uvp_promise_release(p);
  (void)uvp_promise_then(p, NULL, NULL, &d); /* the misuse */
}

static void child_close_twice(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx = child_ctx(&loop);
  if (uvp_ctx_close(ctx) != 0)
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT); /* the context is freed now */
  uvp_ctx_close(ctx);            /* the misuse */
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
      execl(self, self, misuse, (char *)NULL);
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

static void expect_reported(const char *misuse, const char *asan_kind) {
  static char err[65536];
#if defined(ASAN_BUILD)
  int status = run_child(misuse, err, sizeof(err));
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_non_null(strstr(err, "ERROR: AddressSanitizer"));
  assert_non_null(strstr(err, asan_kind));
#else
  (void)asan_kind;
  if (!under_valgrind())
    skip(); /* neither tool is watching: nothing can observe the misuse */
  int status = run_child(misuse, err, sizeof(err));
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 42);
  assert_non_null(strstr(err, "Invalid read"));
#endif
}

static void test_double_release_reported(void **state) {
  (void)state;
  expect_reported("double-release", "use-after-poison");
}

static void test_use_after_release_reported(void **state) {
  (void)state;
  expect_reported("use-after-release", "use-after-poison");
}

static void test_close_twice_after_teardown_reported(void **state) {
  (void)state;
  expect_reported("close-twice", "heap-use-after-free");
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
      cmocka_unit_test(test_close_twice_after_teardown_reported),
      FIXTURE_TEST(test_close_twice_before_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
