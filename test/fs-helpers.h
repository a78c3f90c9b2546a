/* Scaffolding shared by the fs wrappers' tests (test-fs-*.c): real files in a
 * fresh mkdtemp directory per test, removed afterwards, checked through
 * plain POSIX calls; jobs that fill libuv's pool, so that a request can be
 * held queued behind them.  That uv_fs_req_cleanup runs exactly once per
 * request is what valgrind checks in every one of them: a second one is a
 * double free, a missing one a leak. */
#ifndef UVP_TEST_FS_HELPERS_H
#define UVP_TEST_FS_HELPERS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#if defined(UVP_HAVE_SYS_SYSCALL_H) /* meson.build: not on macOS */
#include <sys/syscall.h>
#endif
#include <sys/types.h>
#include <unistd.h>

#include "emulator.h"
#include "helpers.h"

static char tmp[64]; /* /tmp/uvp-test-fs-XXXXXX */

/* tmp/rel, in one of a few rotating buffers so several fit in one call. */
static inline const char *at(const char *rel) {
  static char ring[8][PATH_MAX];
  static unsigned next;
  char *s = ring[next++ % 8];
  snprintf(s, PATH_MAX, "%s/%s", tmp, rel);
  return s;
}

/* A fresh directory per test, and the quiet fixture: most rejections here
 * are inspected with uvp_promise_reason(), not handled. */
static inline int fs_setup(void **state) {
  umask(022);
  snprintf(tmp, sizeof(tmp), "/tmp/uvp-test-fs-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  return fixture_setup_quiet(state);
}

static inline int rm_one(const char *path, const struct stat *st, int flag,
                         struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
#if defined(_WIN32)
  if (flag == FTW_DP || flag == FTW_D)
    return _rmdir(path); /* remove() takes only files there */
  (void)_chmod(path, _S_IREAD | _S_IWRITE); /* a read-only file resists */
#endif
  return remove(path);
}

/* Jobs that occupy pool threads until released: one set at a time, kept
 * here rather than on the test's stack because fs_teardown releases them
 * after a failed assertion (the test's frames are gone by then), or the
 * process would wait for the blocked threads at exit. */
static struct {
  uv_sem_t started;
  uv_sem_t go;
  size_t held; /* threads blocked, until unblock_pool */
} blocker __attribute__((unused));

static inline int block_job(void *arg, void **result) {
  (void)arg;
  (void)result;
  uv_sem_post(&blocker.started);
  uv_sem_wait(&blocker.go);
  return 0;
}

/* Occupy `n` pool threads; returns once every one of them is running. */
static inline uvp_promise_t **block_pool(fixture_t *f, size_t n) {
  assert_int_equal(blocker.held, 0);
  assert_int_equal(uv_sem_init(&blocker.started, 0), 0);
  assert_int_equal(uv_sem_init(&blocker.go, 0), 0);
  uvp_promise_t **w = calloc(n + 1, sizeof(*w));
  assert_non_null(w);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(uvp_work(f->ctx, block_job, NULL, NULL, &w[i]), 0);
    blocker.held++; /* if a later uvp_work fails, fs_teardown frees these */
  }
  for (size_t i = 0; i < n; i++)
    uv_sem_wait(&blocker.started);
  return w;
}

static inline void unblock_pool(void) {
  for (; blocker.held > 0; blocker.held--)
    uv_sem_post(&blocker.go);
}

static inline void blockers_done(uvp_promise_t **w, size_t n, int want) {
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_reason(w[i], NULL), want);
    uvp_promise_release(w[i]);
  }
  free(w);
  uv_sem_destroy(&blocker.started);
  uv_sem_destroy(&blocker.go);
}

static inline int fs_teardown(void **state) {
  unblock_pool(); /* after a failed assertion: see block_pool */
  fixture_teardown(state);
  assert_int_equal(nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
  return 0;
}

#define FS_TEST(fn) FIXTURE_TEST_WITH(fn, fs_setup, fs_teardown)

static inline const char *name(int code) {
  return code == 0 ? "fulfilled" : uvp_err_name(code);
}

/* Run the loop; the promise must have settled with `code` (0: fulfilled).
 * Releases it. */
static inline void expect(fixture_t *f, int rc, uvp_promise_t **pp, int code) {
  assert_int_equal(rc, 0);
  run_loop(f);
  assert_int_not_equal(uvp_promise_state(*pp), UVP_PENDING);
  int got = uvp_promise_reason(*pp, NULL);
  if (got != code) {
    print_error("expected %s, ", name(code));
    print_error("got %s\n", name(got));
    fail();
  }
  uvp_promise_release(*pp);
  *pp = NULL;
}

/* Run the loop; the promise must be fulfilled.  The caller releases it. */
static inline void *value_of(fixture_t *f, int rc, uvp_promise_t *p) {
  assert_int_equal(rc, 0);
  run_loop(f);
  if (uvp_promise_state(p) != UVP_FULFILLED) {
    print_error("rejected with %s\n", name(uvp_promise_reason(p, NULL)));
    fail();
  }
  return uvp_promise_value(p);
}

static inline void put(const char *rel, const void *data, size_t len) {
  int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
}

/* The whole file through read(2); *len gets its size. */
static inline char *get(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    ssize_t r = read(fd, buf + n, cap - n);
    assert_true(r >= 0);
    if (r == 0)
      break;
    n += (size_t)r;
  }
  assert_int_equal(close(fd), 0);
  *len = n;
  return buf;
}

static inline bool exists(const char *rel) {
  struct stat st;
  return lstat(at(rel), &st) == 0;
}

static inline void fill_pattern(char *buf, size_t len, unsigned seed) {
  for (size_t i = 0; i < len; i++)
    buf[i] = (char)((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}

/* What Windows says where POSIX says otherwise (the tests check the same
 * request either way):
 * - a path through a regular file ("file/x"): POSIX's ENOTDIR; Windows
 *   finds no such path, which libuv maps to ENOENT;
 * - a file's mode: POSIX's permission bits; Windows keeps a read-only
 *   attribute alone, which its C runtime's stat shows as 0444 or 0666;
 * - symbolic links: wine's CreateSymbolicLink makes none (and Windows
 *   asks for a privilege), so a test that reads one skips there. */
#if defined(_WIN32)
#define UV_ENOTDIR_THROUGH_FILE UV_ENOENT
#define MODE_SHOWN(m) (((m)&0200) != 0 ? 0666 : 0444)
#else
#define UV_ENOTDIR_THROUGH_FILE UV_ENOTDIR
#define MODE_SHOWN(m) (m)
#endif
#define NO_SYMLINKS "no symbolic links (wine makes none)"
#define NO_FIFOS "no FIFO to block a request on"

/* Open descriptors of this process, to prove late results are closed. */
#if defined(_WIN32)
/* Windows (test/win): the C runtime's descriptors, which libuv's are. */
static inline int count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 2048; fd++)
    n += _get_osfhandle(fd) != -1;
  return n;
}
#else
/* Not the eventfds: each context's wake-up holds one until its teardown
 * (src/wake.h), and the loop one; the counts are of files and sockets. */
static inline int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char path[300], to[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
    ssize_t len = readlink(path, to, sizeof(to) - 1);
    to[len > 0 ? len : 0] = '\0';
    n += strcmp(to, "anon_inode:[eventfd]") != 0;
  }
  closedir(d);
  return n;
}
#endif

/* ---- requests pinned in the pool ---------------------------------------- */

/* Waits until a reader is inside open() of the FIFO (only then does a
 * non-blocking open for writing succeed); that also lets the open finish. */
static inline int writer_for_blocked_reader(const char *fifo) {
  for (int i = 0; i < 10000; i++) { /* 10 s at most */
    int fd = open(fifo, O_WRONLY | O_NONBLOCK);
    if (fd >= 0)
      return fd;
    assert_int_equal(errno, ENXIO);
    uv_sleep(1);
  }
  fail_msg("the pool never opened %s", fifo);
  return -1;
}

/* A descriptor of `path` this process has open other than `mine`, or -1. */
static inline int fd_of(const char *path, int mine) {
  int found = -1;
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  struct dirent *e;
  char link[300], target[PATH_MAX];
  while (found < 0 && (e = readdir(d)) != NULL) {
    snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n > 0) {
      target[n] = '\0';
      if (strcmp(target, path) == 0 && atoi(e->d_name) != mine)
        found = atoi(e->d_name);
    }
  }
  closedir(d);
  return found;
}

/* The checks that watch a pool thread block in a system call read it from
 * /proc/self/task/N/syscall, Linux's: elsewhere (macOS) they skip, by name,
 * before anything blocks. */
#define SKIP_WITHOUT_SYSCALL_VIEW()                                            \
  do {                                                                         \
    if (access("/proc/self/task", R_OK) != 0)                                  \
      SKIP_BECAUSE("no /proc/self/task here: which system call a pool "        \
                   "thread is blocked in cannot be seen");                     \
  } while (0)
#if !defined(SYS_read) /* no <sys/syscall.h>: numbers for the calls above */
#define SYS_read (-1)  /* never asked: those checks skip first */
#define SYS_write (-1)
#endif
#if !defined(SYS_openat)
#define SYS_openat (-1)
#endif

/* Whether a thread of this process is in a system call whose line in
 * /proc (number, then arguments) starts with `want`.  Under an emulator
 * the host's call shows, numbered as the host numbers them (emulator.h):
 * there only the arguments are compared. */
static inline bool thread_in_syscall_line(const char *want) {
  char line[256], path[300];
  bool any_nr = emulated_syscalls();
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  bool found = false;
  struct dirent *e;
  while (!found && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", e->d_name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
      continue; /* the thread has exited */
    if (fgets(line, sizeof(line), fp) != NULL) {
      const char *got = any_nr ? strchr(line, ' ') : line;
      const char *w = any_nr ? strchr(want, ' ') : want;
      found = got != NULL && w != NULL && strncmp(got, w, strlen(w)) == 0;
    }
    fclose(fp);
  }
  closedir(d);
  return found;
}

/* Whether a thread of this process is blocked in system call `nr` on fd. */
static inline bool thread_in_syscall(long nr, int fd) {
  char want[64];
  snprintf(want, sizeof(want), "%ld 0x%x ", nr, (unsigned)fd);
  return thread_in_syscall_line(want);
}

/* Runs the loop until a pool thread sits in system call `nr` on the
 * descriptor uvp opened for `path`, a FIFO whose other end the test holds
 * (`mine`), so the call blocks there until the test lets it go. */
static inline void wait_pinned(fixture_t *f, long nr, const char *path,
                               int mine) {
  for (int i = 0; i < 10000; i++) { /* 10 s at most */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    int fd = fd_of(path, mine);
    if (fd >= 0 && thread_in_syscall(nr, fd))
      return;
    uv_sleep(1);
  }
  fail_msg("no pool thread ever blocked on %s", path);
}

#endif
