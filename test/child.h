/* A forked child for what must not run in the test's own process (a stack
 * overflow, a full table of mappings, a lowered rlimit).  Shared by
 * test-fiber.c and test-fiber-switch.c. */
#ifndef UVP_TEST_CHILD_H
#define UVP_TEST_CHILD_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(_WIN32)
#include "skip.h"
/* No fork on Windows: the test skips there, saying so (test/win). */
static inline int test_in_child(void (*fn)(int fd), int *fd_out, char *err,
                                size_t cap) {
  (void)fn;
  (void)err;
  (void)cap;
  *fd_out = -1;
  skip_say_why("no fork on Windows: the child's checks do not run");
  skip();
  return -1;
}
#else
/* Runs fn(fd) in a child and returns its wait status.  fn reports through
 * fd, read back through *fd_out.  With err != NULL the child's stderr is
 * kept there (cap bytes at most, NUL-terminated), read before the wait: a
 * sanitizer's report may not fit in a pipe. */
static inline int test_in_child(void (*fn)(int fd), int *fd_out, char *err,
                                size_t cap) {
  int fds[2], errs[2] = {-1, -1}, status;
  assert_int_equal(pipe(fds), 0);
  if (err != NULL)
    assert_int_equal(pipe(errs), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    if (err != NULL) {
      close(errs[0]);
      dup2(errs[1], 2);
    }
    fn(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  if (err != NULL) {
    size_t got = 0;
    ssize_t n;
    close(errs[1]);
    while (got < cap - 1 && (n = read(errs[0], err + got, cap - 1 - got)) > 0)
      got += (size_t)n;
    err[got] = '\0';
    close(errs[0]);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  *fd_out = fds[0];
  return status;
}
#endif

#endif
