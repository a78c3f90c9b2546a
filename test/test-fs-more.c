/* The fs wrappers added after the first set: readlink, fsync, fdatasync,
 * ftruncate, chmod, fchmod and copyfile, one call at a time against real
 * files, with their effects checked through plain POSIX calls; the errors
 * each call naturally produces; argument errors and calls after
 * uvp_ctx_close; calls from another thread; a handler handing a request
 * on, and cancelling it there; allocation failure (readlink allocates its
 * value).  Their cancellation before they start and at teardown is in
 * test-fs-cancel.c, with every other request's. */
#include "alloc-helpers.h"
#include "fs-helpers.h"

static mode_t mode_of(const char *rel) {
  struct stat st;
  assert_int_equal(lstat(at(rel), &st), 0);
  return st.st_mode & 07777;
}

static off_t size_of(const char *rel) {
  struct stat st;
  assert_int_equal(lstat(at(rel), &st), 0);
  return st.st_size;
}

/* Fulfilled with NULL, as every call here but readlink is. */
static void expect_null(fixture_t *f, int rc, uvp_promise_t **pp) {
  assert_null(value_of(f, rc, *pp));
  uvp_promise_release(*pp);
  *pp = NULL;
}

/* The file `rel` holds exactly `len` bytes of `data`. */
static void assert_file(const char *rel, const void *data, size_t len) {
  size_t got;
  char *disk = get(at(rel), &got);
  assert_int_equal(got, len);
  assert_memory_equal(disk, data, len);
  free(disk);
}

/* A refused call started nothing: no promise lives. */
static void assert_none_live(fixture_t *f) {
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

/* A descriptor that was open and is not any more. */
static int closed_fd(void) {
  int fd = open("/dev/null", O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(close(fd), 0);
  return fd;
}

/* ---- readlink ------------------------------------------------------------ */

static void test_readlink(void **state) {
  fixture_t *f = *state;
  SKIP_ON_WINDOWS(NO_SYMLINKS);
  put("file", "x", 1);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  /* The stored text, not resolved: a relative one with ".." in it, an
   * absolute one, one to nothing, and one far longer than a name. */
  assert_int_equal(symlink("dir/../file", at("rel")), 0);
  assert_int_equal(symlink(at("file"), at("abs")), 0);
  assert_int_equal(symlink("gone", at("dangling")), 0);
  char long_target[3001];
  for (size_t i = 0; i < sizeof(long_target) - 1; i++)
    long_target[i] = i % 100 == 99 ? '/' : (char)('a' + i % 26);
  long_target[sizeof(long_target) - 1] = '\0';
  assert_int_equal(symlink(long_target, at("long")), 0);

  uvp_promise_t *p;
  int rc = uvp_fs_readlink(f->ctx, at("rel"), &p);
  assert_string_equal(value_of(f, rc, p), "dir/../file");
  uvp_promise_release(p);
  rc = uvp_fs_readlink(f->ctx, at("abs"), &p);
  assert_string_equal(value_of(f, rc, p), at("file"));
  uvp_promise_release(p);
  rc = uvp_fs_readlink(f->ctx, at("dangling"), &p);
  assert_string_equal(value_of(f, rc, p), "gone");
  uvp_promise_release(p);
  rc = uvp_fs_readlink(f->ctx, at("long"), &p);
  assert_string_equal(value_of(f, rc, p), long_target);
  uvp_promise_release(p);

  /* Not a link: the kernel's EINVAL, as a rejection. */
  expect(f, uvp_fs_readlink(f->ctx, at("file"), &p), &p, UV_EINVAL);
  expect(f, uvp_fs_readlink(f->ctx, at("dir"), &p), &p, UV_EINVAL);
  expect(f, uvp_fs_readlink(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_readlink(f->ctx, at("file/x"), &p), &p, UV_ENOTDIR);
}

/* ---- fsync, fdatasync ---------------------------------------------------- */

static void test_fsync_fdatasync(void **state) {
  fixture_t *f = *state;
  int fd = open(at("f"), O_RDWR | O_CREAT | O_EXCL, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "synced", 6), 6);
  uvp_promise_t *p;
  expect_null(f, uvp_fs_fsync(f->ctx, fd, &p), &p);
  expect_null(f, uvp_fs_fdatasync(f->ctx, fd, &p), &p);
  assert_file("f", "synced", 6); /* and the descriptor still open: */
  assert_int_equal(fcntl(fd, F_GETFD), 0);
  assert_int_equal(close(fd), 0);

#if !defined(_WIN32) /* Windows flushes a pipe (waiting for its reader) */
  /* A pipe cannot be synced: the kernel says EINVAL. */
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  expect(f, uvp_fs_fsync(f->ctx, pfd[1], &p), &p, UV_EINVAL);
  expect(f, uvp_fs_fdatasync(f->ctx, pfd[1], &p), &p, UV_EINVAL);
  close(pfd[0]);
  close(pfd[1]);
#endif

  int gone = closed_fd();
  expect(f, uvp_fs_fsync(f->ctx, gone, &p), &p, UV_EBADF);
  expect(f, uvp_fs_fdatasync(f->ctx, gone, &p), &p, UV_EBADF);
  expect(f, uvp_fs_fsync(f->ctx, -1, &p), &p, UV_EBADF);
}

/* ---- ftruncate ----------------------------------------------------------- */

static void test_ftruncate(void **state) {
  fixture_t *f = *state;
  put("f", "0123456789", 10);
  int fd = open(at("f"), O_RDWR);
  assert_true(fd >= 0);
  uvp_promise_t *p;
  expect_null(f, uvp_fs_ftruncate(f->ctx, fd, 4, &p), &p);
  assert_file("f", "0123", 4);
  /* Extended with zeros. */
  expect_null(f, uvp_fs_ftruncate(f->ctx, fd, 8, &p), &p);
  assert_file("f", "0123\0\0\0\0", 8);
  expect_null(f, uvp_fs_ftruncate(f->ctx, fd, 0, &p), &p);
  assert_int_equal(size_of("f"), 0);

  /* A negative length is refused at once: nothing started, nothing
   * changed. */
  put("g", "abc", 3);
  int gfd = open(at("g"), O_RDWR);
  assert_true(gfd >= 0);
  p = NULL;
  assert_int_equal(uvp_fs_ftruncate(f->ctx, gfd, -1, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_ftruncate(f->ctx, gfd, INT64_MIN, &p), UV_EINVAL);
  assert_null(p);
  assert_none_live(f);
  run_loop(f);
  assert_file("g", "abc", 3);
  assert_int_equal(close(gfd), 0);
  assert_int_equal(close(fd), 0);

  /* A descriptor not open for writing: the kernel's EINVAL. */
  int rfd = open(at("g"), O_RDONLY);
  assert_true(rfd >= 0);
  expect(f, uvp_fs_ftruncate(f->ctx, rfd, 1, &p), &p, UV_EINVAL);
  assert_int_equal(close(rfd), 0);
  assert_file("g", "abc", 3);
  expect(f, uvp_fs_ftruncate(f->ctx, closed_fd(), 1, &p), &p, UV_EBADF);
}

/* ---- chmod, fchmod ------------------------------------------------------- */

static void test_chmod_fchmod(void **state) {
  fixture_t *f = *state;
  SKIP_ON_WINDOWS(
      "no permission bits, a read-only attribute alone; " NO_SYMLINKS);
  put("f", "x", 1);
  assert_int_equal(mkdir(at("d"), 0755), 0);
  assert_int_equal(symlink("f", at("l")), 0);
  assert_int_equal(mode_of("f"), MODE_SHOWN(0644));
  uvp_promise_t *p;
  expect_null(f, uvp_fs_chmod(f->ctx, at("f"), 0600, &p), &p);
  assert_int_equal(mode_of("f"), 0600);
  /* Not masked by the umask (022 here). */
  expect_null(f, uvp_fs_chmod(f->ctx, at("d"), 0777, &p), &p);
  assert_int_equal(mode_of("d"), 0777);
  /* Through a link, to its target. */
  expect_null(f, uvp_fs_chmod(f->ctx, at("l"), 0640, &p), &p);
  assert_int_equal(mode_of("f"), 0640);

  int fd = open(at("f"), O_RDONLY);
  assert_true(fd >= 0);
  expect_null(f, uvp_fs_fchmod(f->ctx, fd, 0604, &p), &p);
  assert_int_equal(mode_of("f"), 0604);
  assert_int_equal(close(fd), 0);

  expect(f, uvp_fs_chmod(f->ctx, at("missing"), 0600, &p), &p, UV_ENOENT);
  expect(f, uvp_fs_chmod(f->ctx, at("f/x"), 0600, &p), &p, UV_ENOTDIR);
  expect(f, uvp_fs_fchmod(f->ctx, closed_fd(), 0600, &p), &p, UV_EBADF);
  assert_int_equal(mode_of("f"), 0604);
}

/* ---- copyfile ------------------------------------------------------------ */

static void test_copyfile(void **state) {
  fixture_t *f = *state;
  enum { SIZE = 200 * 1024 + 7 }; /* many pages, and not a whole one */
  char *data = malloc(SIZE);
  assert_non_null(data);
  fill_pattern(data, SIZE, 3);
  put("src", data, SIZE);
  assert_int_equal(chmod(at("src"), 0640), 0);
  assert_int_equal(mkdir(at("dir"), 0755), 0);

  uvp_promise_t *p;
  expect_null(f, uvp_fs_copyfile(f->ctx, at("src"), at("dst"), 0, &p), &p);
  assert_file("dst", data, SIZE);
  assert_int_equal(mode_of("dst"), MODE_SHOWN(0640)); /* the mode comes along */
  struct stat a, b;
  assert_int_equal(stat(at("src"), &a), 0);
  assert_int_equal(stat(at("dst"), &b), 0);
#if !defined(_WIN32) /* the C runtime's stat has no inode numbers */
  assert_int_not_equal(a.st_ino, b.st_ino); /* a copy, not a link */
#endif

  /* An existing, longer destination is replaced, not written over. */
  char *longer = malloc(SIZE + 100);
  assert_non_null(longer);
  memset(longer, 'z', SIZE + 100);
  put("big", longer, SIZE + 100);
  free(longer);
  expect_null(f, uvp_fs_copyfile(f->ctx, at("src"), at("big"), 0, &p), &p);
  assert_file("big", data, SIZE);

  /* UV_FS_COPYFILE_EXCL: refused over an existing file, which is left as
   * it was; allowed to a new one. */
  put("kept", "kept", 4);
  expect(
      f,
      uvp_fs_copyfile(f->ctx, at("src"), at("kept"), UV_FS_COPYFILE_EXCL, &p),
      &p, UV_EEXIST);
  assert_file("kept", "kept", 4);
  expect_null(
      f, uvp_fs_copyfile(f->ctx, at("src"), at("new"), UV_FS_COPYFILE_EXCL, &p),
      &p);
  assert_file("new", data, SIZE);

  /* UV_FS_COPYFILE_FICLONE falls back to a copy where there are no
   * clones; _FORCE clones or fails, by file system. */
  expect_null(f,
              uvp_fs_copyfile(f->ctx, at("src"), at("clone"),
                              UV_FS_COPYFILE_FICLONE, &p),
              &p);
  assert_file("clone", data, SIZE);
  assert_int_equal(uvp_fs_copyfile(f->ctx, at("src"), at("forced"),
                                   UV_FS_COPYFILE_FICLONE_FORCE, &p),
                   0);
  run_loop(f);
  int forced = uvp_promise_reason(p, NULL);
  uvp_promise_release(p);
  if (forced == 0)
    assert_file("forced", data, SIZE);
  else if (forced != UV_ENOTSUP && forced != UV_EXDEV && forced != UV_EINVAL &&
           forced != UV_ENOSYS)
    fail_msg("UV_FS_COPYFILE_FICLONE_FORCE: %s", uvp_err_name(forced));

  /* A flag libuv does not know: refused at once, nothing started. */
  p = NULL;
  assert_int_equal(uvp_fs_copyfile(f->ctx, at("src"), at("odd"), 0x100, &p),
                   UV_EINVAL);
  assert_null(p);
  assert_none_live(f);
  run_loop(f);
  assert_false(exists("odd"));

  expect(f, uvp_fs_copyfile(f->ctx, at("missing"), at("x"), 0, &p), &p,
         UV_ENOENT);
  assert_false(exists("x"));
  expect(f, uvp_fs_copyfile(f->ctx, at("src"), at("nodir/x"), 0, &p), &p,
         UV_ENOENT);
  /* Onto a directory: Windows denies the access (libuv: EPERM). */
#if defined(_WIN32)
  expect(f, uvp_fs_copyfile(f->ctx, at("src"), at("dir"), 0, &p), &p, UV_EPERM);
#else
  expect(f, uvp_fs_copyfile(f->ctx, at("src"), at("dir"), 0, &p), &p,
         UV_EISDIR);
#endif
  free(data);
}

/* ---- argument errors, a closed context ----------------------------------- */

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  put("f", "abc", 3);
#if !defined(_WIN32) /* NO_SYMLINKS: every call on it is refused anyway */
  assert_int_equal(symlink("f", at("l")), 0);
#endif
  int fd = open(at("f"), O_RDWR);
  assert_true(fd >= 0);
  uvp_promise_t *p = NULL;
  /* A NULL path, refused before libuv sees it. */
  assert_int_equal(uvp_fs_readlink(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_chmod(f->ctx, NULL, 0600, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_copyfile(f->ctx, NULL, at("x"), 0, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_copyfile(f->ctx, at("f"), NULL, 0, &p), UV_EINVAL);
  /* A NULL context or out. */
  int rc[] = {
      uvp_fs_readlink(NULL, at("l"), &p),
      uvp_fs_readlink(f->ctx, at("l"), NULL),
      uvp_fs_fsync(NULL, fd, &p),
      uvp_fs_fsync(f->ctx, fd, NULL),
      uvp_fs_fdatasync(NULL, fd, &p),
      uvp_fs_fdatasync(f->ctx, fd, NULL),
      uvp_fs_ftruncate(NULL, fd, 0, &p),
      uvp_fs_ftruncate(f->ctx, fd, 0, NULL),
      uvp_fs_chmod(NULL, at("f"), 0600, &p),
      uvp_fs_chmod(f->ctx, at("f"), 0600, NULL),
      uvp_fs_fchmod(NULL, fd, 0600, &p),
      uvp_fs_fchmod(f->ctx, fd, 0600, NULL),
      uvp_fs_copyfile(NULL, at("f"), at("x"), 0, &p),
      uvp_fs_copyfile(f->ctx, at("f"), at("x"), 0, NULL),
  };
  for (size_t i = 0; i < sizeof(rc) / sizeof(rc[0]); i++)
    if (rc[i] != UV_EINVAL)
      fail_msg("call %zu: %s", i, uvp_err_name(rc[i]));
  assert_null(p);
  assert_none_live(f);
  run_loop(f);
  /* Nothing happened. */
  assert_file("f", "abc", 3);
  assert_int_equal(mode_of("f"), MODE_SHOWN(0644));
  assert_false(exists("x"));

  /* Only uvp settles a wrapper's promise. */
  assert_int_equal(uvp_fs_readlink(f->ctx, at("l"), &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), UVP_ESETTLED);
#if defined(_WIN32) /* NO_SYMLINKS: libuv's own answer, that there is none */
  expect(f, 0, &p, UV_ENOENT);
#else
  assert_string_equal(value_of(f, 0, p), "f");
  uvp_promise_release(p);
#endif
  p = NULL;

  /* After uvp_ctx_close: every call refused, nothing started. */
  uvp_ctx_t *ctx = close_ctx(f);
  int closed[] = {
      uvp_fs_readlink(ctx, at("l"), &p),
      uvp_fs_fsync(ctx, fd, &p),
      uvp_fs_fdatasync(ctx, fd, &p),
      uvp_fs_ftruncate(ctx, fd, 0, &p),
      uvp_fs_chmod(ctx, at("f"), 0600, &p),
      uvp_fs_fchmod(ctx, fd, 0600, &p),
      uvp_fs_copyfile(ctx, at("f"), at("x"), 0, &p),
  };
  for (size_t i = 0; i < sizeof(closed) / sizeof(closed[0]); i++)
    if (closed[i] != UVP_ECLOSED)
      fail_msg("call %zu: %s", i, uvp_err_name(closed[i]));
  assert_null(p);
  run_loop(f);
  assert_file("f", "abc", 3);
  assert_int_equal(mode_of("f"), MODE_SHOWN(0644));
  assert_false(exists("x"));
  assert_int_equal(close(fd), 0);
}

/* Loop-thread-only, as every wrapper: another thread's calls are refused
 * with UVP_ETHREAD before they touch anything (see test-threads.c). */
typedef struct foreign_s {
  uvp_ctx_t *ctx;
  const char *link, *file, *copy;
  int fd;
  int rc[7];
  uvp_promise_t *out;
} foreign_t;

static void foreign_calls(void *arg) {
  foreign_t *x = arg;
  x->rc[0] = uvp_fs_readlink(x->ctx, x->link, &x->out);
  x->rc[1] = uvp_fs_fsync(x->ctx, x->fd, &x->out);
  x->rc[2] = uvp_fs_fdatasync(x->ctx, x->fd, &x->out);
  x->rc[3] = uvp_fs_ftruncate(x->ctx, x->fd, 0, &x->out);
  x->rc[4] = uvp_fs_chmod(x->ctx, x->file, 0600, &x->out);
  x->rc[5] = uvp_fs_fchmod(x->ctx, x->fd, 0600, &x->out);
  x->rc[6] = uvp_fs_copyfile(x->ctx, x->file, x->copy, 0, &x->out);
}

static void test_other_thread_refused(void **state) {
  fixture_t *f = *state;
  put("f", "abc", 3);
#if !defined(_WIN32) /* NO_SYMLINKS: the other thread's calls are refused */
  assert_int_equal(symlink("f", at("l")), 0);
#endif
  foreign_t x = {.ctx = f->ctx, .fd = open(at("f"), O_RDWR)};
  assert_true(x.fd >= 0);
  x.link = strdup(at("l"));
  x.file = strdup(at("f"));
  x.copy = strdup(at("copy"));
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(foreign_calls, &x);
  for (size_t i = 0; i < sizeof(x.rc) / sizeof(x.rc[0]); i++)
    if (x.rc[i] != UVP_ETHREAD)
      fail_msg("call %zu: %s", i, uvp_err_name(x.rc[i]));
  assert_null(x.out);
  run_loop(f);
  assert_file("f", "abc", 3);
  assert_int_equal(mode_of("f"), MODE_SHOWN(0644));
  assert_false(exists("copy"));
#if !defined(_WIN32)
  /* The loop thread's own calls go through. */
  uvp_promise_t *p;
  int rc = uvp_fs_readlink(f->ctx, x.link, &p);
  assert_string_equal(value_of(f, rc, p), "f");
  uvp_promise_release(p);
#endif
  assert_int_equal(close(x.fd), 0);
  free((void *)x.link);
  free((void *)x.file);
  free((void *)x.copy);
}

/* ---- a handler handing a request on -------------------------------------- */

/* A handler returning a request it has just started hands the request to
 * its derived promise (take-over, docs/internals/operations.md §7.5): the
 * request's own promise is gone at once, the derived promise gets the value,
 * and cancelling the derived promise cancels the request in libuv. */
typedef struct handoff_s {
  fixture_t *f;
  const char *link;
  const char *copy; /* copy the link's target here instead */
  int ran;
} handoff_t;

static uvp_ret_t start_request(void *arg, const uvp_outcome_t *in) {
  handoff_t *h = arg;
  (void)in;
  h->ran++;
  uvp_promise_t *q;
  int rc = h->copy != NULL ? uvp_fs_copyfile(h->f->ctx, h->link, h->copy, 0, &q)
                           : uvp_fs_readlink(h->f->ctx, h->link, &q);
  return rc != 0 ? uvp_ret_reject(rc, NULL, NULL) : uvp_ret_adopt(q);
}

static bool handler_ran(void *arg) { return ((handoff_t *)arg)->ran > 0; }

static uvp_promise_t *request_later(handoff_t *h) {
  uvp_promise_t *start, *d;
  assert_int_equal(uvp_promise_new(h->f->ctx, &start), 0);
  assert_int_equal(uvp_promise_then(start, start_request, h, &d), 0);
  assert_int_equal(uvp_promise_resolve(start, NULL, NULL), 0);
  uvp_promise_release(start);
  return d;
}

static void test_handler_hands_request_on(void **state) {
  fixture_t *f = *state;
  SKIP_ON_WINDOWS(NO_SYMLINKS);
  put("f", "x", 1);
  assert_int_equal(symlink("f", at("l")), 0);
  handoff_t h = {.f = f, .link = at("l")};
  uvp_promise_t *d = request_later(&h);
  assert_string_equal(value_of(f, 0, d), "f");
  assert_int_equal(h.ran, 1);
  uvp_promise_release(d);

  /* A copy, with the pool full, so the request is still queued when the
   * handler has run; cancelled there, it never happens. */
  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);
  h.ran = 0;
  h.copy = at("copy");
  d = request_later(&h);
  run_until_true(f, handler_ran, &h);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  /* The blockers and d: no promise of the request's own waits to be
   * adopted. */
  assert_int_equal(st.live, n + 1);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(d), 0);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ECANCELED);
  unblock_pool();
  run_loop(f);
  blockers_done(w, n, 0);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ECANCELED);
  uvp_promise_release(d);
  assert_false(exists("copy"));
}

/* ---- allocation failure -------------------------------------------------- */

/* Every allocation failing in turn: a call refused with UV_ENOMEM, or a
 * promise rejected with it (readlink's value is copied into uvp's memory
 * after libuv read the link), else the right value; nothing leaked. */
static long value_enomem;

static void scenario_readlink(run_t *r) {
  uvp_promise_t *p[3] = {NULL, NULL, NULL};
  OK_OR_ENOMEM(uvp_fs_readlink(r->ctx, at("l"), &p[0]));
  OK_OR_ENOMEM(uvp_fs_readlink(r->ctx, at("l"), &p[1]));
  OK_OR_ENOMEM(uvp_fs_copyfile(r->ctx, at("f"), at("copy"), 0, &p[2]));
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 3; i++) {
    if (p[i] == NULL)
      continue;
    expect_ok_or_enomem(p[i], 0);
    if (uvp_promise_state(p[i]) == UVP_FULFILLED && i < 2)
      assert_string_equal(uvp_promise_value(p[i]), "f");
    else if (uvp_promise_state(p[i]) == UVP_REJECTED)
      value_enomem++;
    uvp_promise_release(p[i]);
  }
}

static void test_readlink_enomem(void **state) {
  (void)state;
  SKIP_ON_WINDOWS(NO_SYMLINKS);
  snprintf(tmp, sizeof(tmp), "/tmp/uvp-test-fs-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  put("f", "abc", 3);
  assert_int_equal(symlink("f", at("l")), 0);
  value_enomem = 0;
  long sites = exhaust(scenario_readlink);
  printf("readlink: %ld allocations failed one by one\n", sites);
  assert_true(sites > 3);
  /* The copy of each readlink's string failed once, in a run of its own. */
  assert_int_equal(value_enomem, 2);
  assert_file("copy", "abc", 3);
  assert_int_equal(nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_readlink_enomem),
      FS_TEST(test_readlink),
      FS_TEST(test_fsync_fdatasync),
      FS_TEST(test_ftruncate),
      FS_TEST(test_chmod_fchmod),
      FS_TEST(test_copyfile),
      FS_TEST(test_bad_input),
      FS_TEST(test_other_thread_refused),
      FS_TEST(test_handler_hands_request_on),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
