/* uvp's fs wrappers against real files in a fresh mkdtemp directory per test
 * (removed afterwards): typed results checked against the file system
 * through plain POSIX calls, the errors each call naturally produces,
 * UV_EACCES from a child process that really lacks the permission,
 * cancellation before a request starts (the pool filled with blocked jobs)
 * and while it runs (an open blocked on a FIFO), and teardown with requests
 * in flight.  That uv_fs_req_cleanup runs exactly once per request is what
 * valgrind checks: a second one is a double free, a missing one a leak. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

/* ---- scaffolding ---------------------------------------------------------- */

static char tmp[64]; /* /tmp/uvp-test-fs-XXXXXX */

/* tmp/rel, in one of a few rotating buffers so several fit in one call. */
static const char *at(const char *rel) {
  static char ring[8][PATH_MAX];
  static unsigned next;
  char *s = ring[next++ % 8];
  snprintf(s, PATH_MAX, "%s/%s", tmp, rel);
  return s;
}

static int setup(void **state) {
  umask(022);
  snprintf(tmp, sizeof(tmp), "/tmp/uvp-test-fs-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  fixture_setup(state);
  fixture_t *f = *state;
  /* Most rejections here are inspected with uvp_promise_reason(), not
   * handled: keep the default report off stderr. */
  return uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int teardown(void **state) {
  fixture_teardown(state);
  assert_int_equal(nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
  return 0;
}

#define TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const char *name(int code) {
  return code == 0 ? "fulfilled" : uvp_err_name(code);
}

/* Run the loop; the promise must have settled with `code` (0: fulfilled).
 * Releases it. */
static void expect(fixture_t *f, int rc, uvp_promise_t **pp, int code) {
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
static void *value_of(fixture_t *f, int rc, uvp_promise_t *p) {
  assert_int_equal(rc, 0);
  run_loop(f);
  if (uvp_promise_state(p) != UVP_FULFILLED) {
    print_error("rejected with %s\n", name(uvp_promise_reason(p, NULL)));
    fail();
  }
  return uvp_promise_value(p);
}

static void put(const char *rel, const void *data, size_t len) {
  int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
}

/* The whole file through read(2); *len gets its size. */
static char *get(const char *path, size_t *len) {
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

static bool exists(const char *rel) {
  struct stat st;
  return lstat(at(rel), &st) == 0;
}

static void fill_pattern(char *buf, size_t len, unsigned seed) {
  for (size_t i = 0; i < len; i++)
    buf[i] = (char)((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}

/* Open descriptors of this process, to prove late results are closed. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

/* ---- open, write, read, fstat, close ---------------------------------------- */

static void test_open_write_read_fstat_close(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  int rc = uvp_fs_open(f->ctx, at("a.txt"), O_RDWR | O_CREAT | O_EXCL, 0600,
                       &p);
  uv_file fd = (uv_file)UVP_INT(value_of(f, rc, p));
  uvp_promise_release(p);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0); /* a real descriptor of that file */
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_int_equal(st.st_size, 0);

  static const char msg[] = "promises over libuv\n";
  rc = uvp_fs_write(f->ctx, fd, msg, sizeof(msg) - 1, 0, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), sizeof(msg) - 1);
  uvp_promise_release(p);
  rc = uvp_fs_write(f->ctx, fd, "LIBUV", 5, 14, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 5);
  uvp_promise_release(p);

  rc = uvp_fs_fstat(f->ctx, fd, &p);
  const uv_stat_t *s = value_of(f, rc, p);
  assert_int_equal(s->st_size, sizeof(msg) - 1);
  assert_true(S_ISREG(s->st_mode));
  assert_int_equal(s->st_mode & 07777, 0600);
  assert_int_equal(s->st_ino, st.st_ino);
  uvp_promise_release(p);

  char buf[64];
  memset(buf, 0, sizeof(buf));
  rc = uvp_fs_read(f->ctx, fd, buf, sizeof(buf), 0, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), sizeof(msg) - 1);
  uvp_promise_release(p);
  assert_memory_equal(buf, "promises over LIBUV\n", sizeof(msg) - 1);
  rc = uvp_fs_read(f->ctx, fd, buf, sizeof(buf), sizeof(msg) - 1, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 0); /* end of file */
  uvp_promise_release(p);
  /* Offset -1 reads at the file position, still 0 after pread/pwrite. */
  memset(buf, 0, sizeof(buf));
  rc = uvp_fs_read(f->ctx, fd, buf, 8, -1, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 8);
  uvp_promise_release(p);
  assert_memory_equal(buf, "promises", 8);
  rc = uvp_fs_read(f->ctx, fd, buf, 6, -1, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 6);
  uvp_promise_release(p);
  assert_memory_equal(buf, " over ", 6);

  rc = uvp_fs_close(f->ctx, fd, &p);
  assert_null(value_of(f, rc, p));
  uvp_promise_release(p);
  errno = 0;
  assert_int_equal(fcntl(fd, F_GETFD), -1);
  assert_int_equal(errno, EBADF);

  size_t len;
  char *disk = get(at("a.txt"), &len);
  assert_int_equal(len, sizeof(msg) - 1);
  assert_memory_equal(disk, "promises over LIBUV\n", len);
  free(disk);
}

static void test_open_read_write_errors(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  put("file", "x", 1);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  expect(f, uvp_fs_open(f->ctx, at("missing"), O_RDONLY, 0, &p), &p,
         UV_ENOENT);
  expect(f, uvp_fs_open(f->ctx, at("file"), O_RDWR | O_CREAT | O_EXCL, 0644,
                        &p),
         &p, UV_EEXIST);
  expect(f, uvp_fs_open(f->ctx, at("dir"), O_WRONLY, 0, &p), &p, UV_EISDIR);
  expect(f, uvp_fs_open(f->ctx, at("file/x"), O_RDONLY, 0, &p), &p,
         UV_ENOTDIR);
  expect(f, uvp_fs_close(f->ctx, -1, &p), &p, UV_EBADF);

  /* A read on a write-only descriptor and a write on a read-only one. */
  int wfd = open(at("file"), O_WRONLY);
  int rfd = open(at("file"), O_RDONLY);
  assert_true(wfd >= 0 && rfd >= 0);
  char buf[4];
  expect(f, uvp_fs_read(f->ctx, wfd, buf, sizeof(buf), 0, &p), &p, UV_EBADF);
  expect(f, uvp_fs_write(f->ctx, rfd, "y", 1, 0, &p), &p, UV_EBADF);
  expect(f, uvp_fs_fstat(f->ctx, -1, &p), &p, UV_EBADF);
  close(wfd);
  close(rfd);
  /* Nothing was written by the failed calls. */
  size_t len;
  char *disk = get(at("file"), &len);
  assert_int_equal(len, 1);
  assert_int_equal(disk[0], 'x');
  free(disk);
}

/* ---- stat, lstat ------------------------------------------------------------ */

static void test_stat_lstat(void **state) {
  fixture_t *f = *state;
  char data[1000];
  fill_pattern(data, sizeof(data), 1);
  put("data", data, sizeof(data));
  assert_int_equal(chmod(at("data"), 0640), 0);
  assert_int_equal(symlink("data", at("link")), 0);
  assert_int_equal(mkdir(at("sub"), 0700), 0);
  struct stat real;
  assert_int_equal(stat(at("data"), &real), 0);

  /* Several at once, one loop run. */
  uvp_promise_t *ps, *pl, *pll, *pd;
  assert_int_equal(uvp_fs_stat(f->ctx, at("data"), &ps), 0);
  assert_int_equal(uvp_fs_stat(f->ctx, at("link"), &pl), 0);
  assert_int_equal(uvp_fs_lstat(f->ctx, at("link"), &pll), 0);
  assert_int_equal(uvp_fs_lstat(f->ctx, at("sub"), &pd), 0);
  run_loop(f);

  const uv_stat_t *s = uvp_promise_value(ps);
  assert_non_null(s);
  assert_int_equal(s->st_size, sizeof(data));
  assert_true(S_ISREG(s->st_mode));
  assert_int_equal(s->st_mode & 07777, 0640);
  assert_int_equal(s->st_ino, real.st_ino);
  assert_int_equal(s->st_dev, real.st_dev);
  assert_int_equal(s->st_nlink, 1);
  assert_int_equal(s->st_uid, getuid());
  assert_int_equal(s->st_mtim.tv_sec, real.st_mtim.tv_sec);

  s = uvp_promise_value(pl); /* stat follows the link */
  assert_non_null(s);
  assert_int_equal(s->st_ino, real.st_ino);
  assert_int_equal(s->st_size, sizeof(data));

  s = uvp_promise_value(pll); /* lstat does not */
  assert_non_null(s);
  assert_true(S_ISLNK(s->st_mode));
  assert_int_equal(s->st_size, strlen("data"));
  assert_int_not_equal(s->st_ino, real.st_ino);

  s = uvp_promise_value(pd);
  assert_non_null(s);
  assert_true(S_ISDIR(s->st_mode));
  assert_int_equal(s->st_mode & 07777, 0700);
  uvp_promise_release(ps);
  uvp_promise_release(pl);
  uvp_promise_release(pll);
  uvp_promise_release(pd);

  uvp_promise_t *p;
  expect(f, uvp_fs_stat(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_lstat(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_stat(f->ctx, at("data/x"), &p), &p, UV_ENOTDIR);
  assert_int_equal(symlink("nowhere", at("dangling")), 0);
  expect(f, uvp_fs_stat(f->ctx, at("dangling"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_lstat(f->ctx, at("dangling"), &p), &p, 0);
}

/* ---- mkdir, rename, rmdir, unlink -------------------------------------------- */

static void test_mkdir_rename_rmdir_unlink(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  struct stat st;

  int rc = uvp_fs_mkdir(f->ctx, at("d"), 0750, &p);
  assert_null(value_of(f, rc, p));
  uvp_promise_release(p);
  assert_int_equal(stat(at("d"), &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0750);
  expect(f, uvp_fs_mkdir(f->ctx, at("d"), 0750, &p), &p, UV_EEXIST);
  expect(f, uvp_fs_mkdir(f->ctx, at("nope/d"), 0750, &p), &p, UV_ENOENT);
  put("f", "xyz", 3);
  expect(f, uvp_fs_mkdir(f->ctx, at("f/d"), 0750, &p), &p, UV_ENOTDIR);

  assert_int_equal(stat(at("f"), &st), 0);
  ino_t ino = st.st_ino;
  expect(f, uvp_fs_rename(f->ctx, at("f"), at("d/g"), &p), &p, 0);
  assert_false(exists("f"));
  assert_int_equal(stat(at("d/g"), &st), 0);
  assert_int_equal(st.st_ino, ino); /* moved, not copied */
  size_t len;
  char *disk = get(at("d/g"), &len);
  assert_int_equal(len, 3);
  assert_memory_equal(disk, "xyz", 3);
  free(disk);
  expect(f, uvp_fs_rename(f->ctx, at("f"), at("h"), &p), &p, UV_ENOENT);
  put("h", "h", 1);
  expect(f, uvp_fs_rename(f->ctx, at("h"), at("d"), &p), &p, UV_EISDIR);
  assert_true(exists("h"));

  expect(f, uvp_fs_rmdir(f->ctx, at("d"), &p), &p, UV_ENOTEMPTY);
  expect(f, uvp_fs_rmdir(f->ctx, at("d/g"), &p), &p, UV_ENOTDIR);
  expect(f, uvp_fs_unlink(f->ctx, at("d"), &p), &p, UV_EISDIR);
  assert_true(exists("d/g"));
  expect(f, uvp_fs_unlink(f->ctx, at("d/g"), &p), &p, 0);
  assert_false(exists("d/g"));
  expect(f, uvp_fs_unlink(f->ctx, at("d/g"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_rmdir(f->ctx, at("d"), &p), &p, 0);
  assert_false(exists("d"));
  expect(f, uvp_fs_rmdir(f->ctx, at("d"), &p), &p, UV_ENOENT);
}

/* ---- scandir ---------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
  return strcmp(((const uv_dirent_t *)a)->name,
                ((const uv_dirent_t *)b)->name);
}

static void test_scandir(void **state) {
  fixture_t *f = *state;
  put("a", "abc", 3);
  put("b", "", 0);
  assert_int_equal(mkdir(at("c"), 0755), 0);
  put("c/inner", "i", 1);
  assert_int_equal(symlink("a", at("d")), 0);
  assert_int_equal(mkfifo(at("e"), 0600), 0);
  assert_int_equal(mkdir(at("empty"), 0755), 0);

  uvp_promise_t *p;
  int rc = uvp_fs_scandir(f->ctx, tmp, &p);
  const uvp_dirents_t *d = value_of(f, rc, p);
  assert_int_equal(d->count, 6); /* no "." or ".." */
  uv_dirent_t sorted[6];
  memcpy(sorted, d->items, sizeof(sorted));
  qsort(sorted, 6, sizeof(sorted[0]), by_name);
  static const char *names[] = {"a", "b", "c", "d", "e", "empty"};
  static const uv_dirent_type_t types[] = {UV_DIRENT_FILE, UV_DIRENT_FILE,
                                           UV_DIRENT_DIR,  UV_DIRENT_LINK,
                                           UV_DIRENT_FIFO, UV_DIRENT_DIR};
  for (int i = 0; i < 6; i++) {
    assert_string_equal(sorted[i].name, names[i]);
    assert_int_equal(sorted[i].type, types[i]);
  }
  uvp_promise_release(p);

  rc = uvp_fs_scandir(f->ctx, at("c"), &p);
  d = value_of(f, rc, p);
  assert_int_equal(d->count, 1);
  assert_string_equal(d->items[0].name, "inner");
  assert_int_equal(d->items[0].type, UV_DIRENT_FILE);
  uvp_promise_release(p);

  rc = uvp_fs_scandir(f->ctx, at("empty"), &p);
  d = value_of(f, rc, p);
  assert_int_equal(d->count, 0);
  uvp_promise_release(p);

  expect(f, uvp_fs_scandir(f->ctx, at("a"), &p), &p, UV_ENOTDIR);
  expect(f, uvp_fs_scandir(f->ctx, at("missing"), &p), &p, UV_ENOENT);
}

/* Enough entries to outgrow the wrapper's first array many times over. */
static void test_scandir_many(void **state) {
  fixture_t *f = *state;
  enum { N = 300 };
  assert_int_equal(mkdir(at("many"), 0755), 0);
  char rel[64];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "many/entry-%03d", i);
    put(rel, rel, strlen(rel));
  }
  uvp_promise_t *p;
  int rc = uvp_fs_scandir(f->ctx, at("many"), &p);
  const uvp_dirents_t *d = value_of(f, rc, p);
  assert_int_equal(d->count, N);
  bool seen[N] = {false};
  for (size_t i = 0; i < d->count; i++) {
    int k = -1;
    assert_int_equal(sscanf(d->items[i].name, "entry-%d", &k), 1);
    assert_true(k >= 0 && k < N);
    assert_false(seen[k]);
    seen[k] = true;
    assert_int_equal(d->items[i].type, UV_DIRENT_FILE);
  }
  uvp_promise_release(p);
}

/* ---- realpath ---------------------------------------------------------------- */

static void test_realpath(void **state) {
  fixture_t *f = *state;
  assert_int_equal(mkdir(at("x"), 0755), 0);
  assert_int_equal(mkdir(at("x/y"), 0755), 0);
  put("x/y/f", "f", 1);
  assert_int_equal(symlink("x/y", at("ly")), 0);   /* to a directory */
  assert_int_equal(symlink("ly/f", at("lf")), 0);  /* through another link */
  assert_int_equal(symlink("l2", at("l1")), 0);
  assert_int_equal(symlink("l1", at("l2")), 0);
  assert_int_equal(symlink("gone", at("dangling")), 0);
  char want[PATH_MAX];
  assert_non_null(realpath(at("x/y/f"), want));
  assert_null(strstr(want, "ly"));

  uvp_promise_t *p;
  int rc = uvp_fs_realpath(f->ctx, at("lf"), &p);
  assert_string_equal(value_of(f, rc, p), want);
  uvp_promise_release(p);
  rc = uvp_fs_realpath(f->ctx, at("x/./y/../y//f"), &p);
  assert_string_equal(value_of(f, rc, p), want);
  uvp_promise_release(p);

  expect(f, uvp_fs_realpath(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_realpath(f->ctx, at("dangling"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_realpath(f->ctx, at("l1"), &p), &p, UV_ELOOP);
  expect(f, uvp_fs_realpath(f->ctx, at("x/y/f/z"), &p), &p, UV_ENOTDIR);
}

/* ---- read_file, write_file -------------------------------------------------------- */

static void test_read_file(void **state) {
  fixture_t *f = *state;
  enum { SIZE = 100007 }; /* not a multiple of any buffer size */
  char *data = malloc(SIZE);
  assert_non_null(data);
  fill_pattern(data, SIZE, 2);
  put("big", data, SIZE);
  put("empty", "", 0);
  int fds = count_fds();

  uvp_promise_t *p;
  int rc = uvp_fs_read_file(f->ctx, at("big"), 0, &p);
  const uvp_buf_t *b = value_of(f, rc, p);
  assert_int_equal(b->len, SIZE);
  assert_memory_equal(b->base, data, SIZE);
  assert_int_equal(b->base[b->len], '\0');
  uvp_promise_release(p);

  rc = uvp_fs_read_file(f->ctx, at("big"), SIZE, &p); /* exactly the max */
  b = value_of(f, rc, p);
  assert_int_equal(b->len, SIZE);
  assert_memory_equal(b->base, data, SIZE);
  uvp_promise_release(p);
  expect(f, uvp_fs_read_file(f->ctx, at("big"), SIZE - 1, &p), &p,
         UV_EFBIG);

  rc = uvp_fs_read_file(f->ctx, at("empty"), 0, &p);
  b = value_of(f, rc, p);
  assert_int_equal(b->len, 0);
  assert_int_equal(b->base[0], '\0');
  uvp_promise_release(p);

  expect(f, uvp_fs_read_file(f->ctx, at("missing"), 0, &p), &p, UV_ENOENT);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  expect(f, uvp_fs_read_file(f->ctx, at("dir"), 0, &p), &p, UV_EISDIR);
  expect(f, uvp_fs_read_file(f->ctx, at("big/x"), 0, &p), &p, UV_ENOTDIR);

  /* procfs reports size 0: the file ends where a read returns 0, and the
   * limit is enforced while reading. */
  size_t vlen;
  char *version = get("/proc/version", &vlen);
  assert_true(vlen > 8);
  rc = uvp_fs_read_file(f->ctx, "/proc/version", 0, &p);
  b = value_of(f, rc, p);
  assert_int_equal(b->len, vlen);
  assert_memory_equal(b->base, version, vlen);
  uvp_promise_release(p);
  free(version);
  expect(f, uvp_fs_read_file(f->ctx, "/proc/version", 8, &p), &p, UV_EFBIG);

  /* Every path above closed what it opened. */
  assert_int_equal(count_fds(), fds);
  free(data);
}

static void test_write_file(void **state) {
  fixture_t *f = *state;
  enum { SIZE = 1 << 20 };
  char *data = malloc(SIZE);
  assert_non_null(data);
  fill_pattern(data, SIZE, 3);
  int fds = count_fds();

  uvp_promise_t *p;
  int rc = uvp_fs_write_file(f->ctx, at("big"), data, SIZE, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), SIZE);
  uvp_promise_release(p);
  struct stat st;
  assert_int_equal(stat(at("big"), &st), 0);
  assert_int_equal(st.st_mode & 07777, 0644); /* umask 022 */
  size_t len;
  char *disk = get(at("big"), &len);
  assert_int_equal(len, SIZE);
  assert_memory_equal(disk, data, SIZE);
  free(disk);

  /* Truncates what was there. */
  rc = uvp_fs_write_file(f->ctx, at("big"), "short", 5, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 5);
  uvp_promise_release(p);
  disk = get(at("big"), &len);
  assert_int_equal(len, 5);
  assert_memory_equal(disk, "short", 5);
  free(disk);

  rc = uvp_fs_write_file(f->ctx, at("none"), NULL, 0, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 0);
  uvp_promise_release(p);
  assert_int_equal(stat(at("none"), &st), 0);
  assert_int_equal(st.st_size, 0);

  expect(f, uvp_fs_write_file(f->ctx, at("missing/x"), "a", 1, &p), &p,
         UV_ENOENT);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  expect(f, uvp_fs_write_file(f->ctx, at("dir"), "a", 1, &p), &p, UV_EISDIR);
  expect(f, uvp_fs_write_file(f->ctx, at("big/x"), "a", 1, &p), &p,
         UV_ENOTDIR);
  assert_int_equal(count_fds(), fds);

  /* Round trip through both wrappers. */
  rc = uvp_fs_write_file(f->ctx, at("again"), data, 4096 + 3, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 4096 + 3);
  uvp_promise_release(p);
  rc = uvp_fs_read_file(f->ctx, at("again"), 0, &p);
  const uvp_buf_t *b = value_of(f, rc, p);
  assert_int_equal(b->len, 4096 + 3);
  assert_memory_equal(b->base, data, 4096 + 3);
  uvp_promise_release(p);
  free(data);
}

/* Two hundred requests of every kind at once, all checked. */
static void test_many_requests_at_once(void **state) {
  fixture_t *f = *state;
  enum { N = 50 };
  char rel[32], content[32];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "f%02d", i);
    snprintf(content, sizeof(content), "file number %d", i);
    put(rel, content, strlen(content));
  }
  uvp_promise_t *st[N], *rf[N], *sd[N], *rp[N];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "f%02d", i);
    assert_int_equal(uvp_fs_stat(f->ctx, at(rel), &st[i]), 0);
    assert_int_equal(uvp_fs_read_file(f->ctx, at(rel), 0, &rf[i]), 0);
    assert_int_equal(uvp_fs_scandir(f->ctx, tmp, &sd[i]), 0);
    assert_int_equal(uvp_fs_realpath(f->ctx, at(rel), &rp[i]), 0);
  }
  run_loop(f);
  char want[PATH_MAX];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "f%02d", i);
    snprintf(content, sizeof(content), "file number %d", i);
    const uv_stat_t *s = uvp_promise_value(st[i]);
    assert_non_null(s);
    assert_int_equal(s->st_size, strlen(content));
    const uvp_buf_t *b = uvp_promise_value(rf[i]);
    assert_non_null(b);
    assert_string_equal(b->base, content);
    const uvp_dirents_t *d = uvp_promise_value(sd[i]);
    assert_non_null(d);
    assert_int_equal(d->count, N);
    assert_non_null(realpath(at(rel), want));
    assert_string_equal(uvp_promise_value(rp[i]), want);
    uvp_promise_release(st[i]);
    uvp_promise_release(rf[i]);
    uvp_promise_release(sd[i]);
    uvp_promise_release(rp[i]);
  }
}

/* ---- UV_EACCES, for real ----------------------------------------------------- */

/* Root bypasses permission bits, so the checks run in a child process that
 * drops to nobody (uid/gid 65534, no supplementary groups) with its own loop
 * and context, and reports through its exit status: 0 all passed, k the
 * k-th check failed, 77 the environment cannot produce EACCES (skip).  The
 * child is this program started afresh (fork + exec with --eacces-child
 * DIR) rather than a bare fork: it inherits no loop, pool or test-runner
 * state, and under valgrind its exit status is its own. */
enum { CHILD_SKIP = 77 };

static char self[PATH_MAX]; /* this program, to start it as the child */

typedef struct access_check_s {
  int kind;
  const char *rel;
  int want;
} access_check_t;

enum { A_OPEN, A_READ_FILE, A_WRITE_FILE, A_STAT, A_SCANDIR, A_REALPATH,
       A_MKDIR, A_UNLINK, A_RENAME, A_RMDIR };

static const access_check_t access_checks[] = {
    {A_OPEN, "secret", UV_EACCES},          /* mode 000 */
    {A_READ_FILE, "secret", UV_EACCES},
    {A_WRITE_FILE, "secret", UV_EACCES},
    {A_STAT, "secret", 0},                  /* needs search permission only */
    {A_SCANDIR, "locked", UV_EACCES},       /* directory mode 000 */
    {A_STAT, "locked/inside", UV_EACCES},
    {A_READ_FILE, "locked/inside", UV_EACCES},
    {A_REALPATH, "locked/inside", UV_EACCES},
    {A_MKDIR, "ro/new", UV_EACCES},         /* directory mode 0555 */
    {A_WRITE_FILE, "ro/new", UV_EACCES},
    {A_UNLINK, "ro/keep", UV_EACCES},
    {A_RENAME, "ro/keep", UV_EACCES},
    {A_RMDIR, "ro/sub", UV_EACCES},
    {A_READ_FILE, "ro/keep", 0},            /* control: the tree is reachable */
    {A_SCANDIR, "ro", 0},
};

static int start_access_check(uvp_ctx_t *ctx, const access_check_t *c,
                              uvp_promise_t **p) {
  const char *path = at(c->rel);
  switch (c->kind) {
  case A_OPEN:
    return uvp_fs_open(ctx, path, O_RDONLY, 0, p);
  case A_READ_FILE:
    return uvp_fs_read_file(ctx, path, 0, p);
  case A_WRITE_FILE:
    return uvp_fs_write_file(ctx, path, "w", 1, p);
  case A_STAT:
    return uvp_fs_stat(ctx, path, p);
  case A_SCANDIR:
    return uvp_fs_scandir(ctx, path, p);
  case A_REALPATH:
    return uvp_fs_realpath(ctx, path, p);
  case A_MKDIR:
    return uvp_fs_mkdir(ctx, path, 0755, p);
  case A_UNLINK:
    return uvp_fs_unlink(ctx, path, p);
  case A_RENAME:
    return uvp_fs_rename(ctx, path, at("ro/moved"), p);
  default:
    return uvp_fs_rmdir(ctx, path, p);
  }
}

static int access_child(const char *dir) {
  snprintf(tmp, sizeof(tmp), "%s", dir);
  if (geteuid() == 0 &&
      (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
    return CHILD_SKIP; /* e.g. a user namespace without 65534 mapped */
  int fd = open(at("secret"), O_RDONLY);
  if (fd >= 0 || errno != EACCES)
    return CHILD_SKIP; /* a capability still overrides the mode bits */

  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 100;
  uvp_ctx_set_unhandled_cb(ctx, ignore_unhandled, NULL);
  int failed = 0;
  size_t n = sizeof(access_checks) / sizeof(access_checks[0]);
  for (size_t i = 0; i < n && failed == 0; i++) {
    uvp_promise_t *p;
    int rc = start_access_check(ctx, &access_checks[i], &p);
    if (rc != 0) {
      fprintf(stderr, "check %zu: start failed with %s\n", i + 1, name(rc));
      failed = (int)i + 1;
      break;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int got = uvp_promise_state(p) == UVP_PENDING ? 1
                                                  : uvp_promise_reason(p, NULL);
    if (got != access_checks[i].want) {
      fprintf(stderr, "check %zu (%s): expected %s, ", i + 1,
              access_checks[i].rel, name(access_checks[i].want));
      fprintf(stderr, "got %s\n", name(got));
      failed = (int)i + 1;
    }
    uvp_promise_release(p);
  }
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0 && failed == 0)
    failed = 101;
  return failed;
}

static void test_eacces_for_real(void **state) {
  (void)state;
  assert_int_equal(chmod(tmp, 0755), 0); /* mkdtemp made it 0700 */
  put("secret", "top secret", 10);
  assert_int_equal(chmod(at("secret"), 0), 0);
  assert_int_equal(mkdir(at("locked"), 0755), 0);
  put("locked/inside", "in", 2);
  assert_int_equal(chmod(at("locked"), 0), 0);
  assert_int_equal(mkdir(at("ro"), 0755), 0);
  put("ro/keep", "keep", 4);
  assert_int_equal(mkdir(at("ro/sub"), 0755), 0);
  assert_int_equal(chmod(at("ro"), 0555), 0);

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    execl(self, self, "--eacces-child", tmp, (char *)NULL);
    _exit(126);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));

  /* Whatever the verdict, nothing changed on disk. */
  assert_true(exists("ro/keep"));
  assert_true(exists("ro/sub"));
  assert_false(exists("ro/new"));
  assert_false(exists("ro/moved"));
  size_t len;
  char *disk = get(at("secret"), &len); /* root may read it */
  assert_int_equal(len, 10);
  assert_memory_equal(disk, "top secret", 10);
  free(disk);
  /* Let the teardown walk and remove the tree as any user. */
  assert_int_equal(chmod(at("locked"), 0755), 0);
  assert_int_equal(chmod(at("ro"), 0755), 0);

  if (WEXITSTATUS(status) == CHILD_SKIP)
    skip();
  if (WEXITSTATUS(status) != 0)
    fail_msg("child check %d failed (see stderr)", WEXITSTATUS(status));
}

/* ---- cancellation ------------------------------------------------------------- */

/* Jobs that occupy a pool thread until released. */
typedef struct blocker_s {
  uv_sem_t started;
  uv_sem_t go;
} blocker_t;

static int block_job(void *arg, void **result) {
  blocker_t *b = arg;
  (void)result;
  uv_sem_post(&b->started);
  uv_sem_wait(&b->go);
  return 0;
}

/* Occupy `n` pool threads; returns once every one of them is running. */
static uvp_promise_t **block_pool(fixture_t *f, blocker_t *b, size_t n) {
  assert_int_equal(uv_sem_init(&b->started, 0), 0);
  assert_int_equal(uv_sem_init(&b->go, 0), 0);
  uvp_promise_t **w = calloc(n + 1, sizeof(*w));
  assert_non_null(w);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(uvp_work(f->ctx, block_job, b, NULL, &w[i]), 0);
  for (size_t i = 0; i < n; i++)
    uv_sem_wait(&b->started);
  return w;
}

static void unblock_pool(blocker_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    uv_sem_post(&b->go);
}

static void blockers_done(blocker_t *b, uvp_promise_t **w, size_t n,
                          int want) {
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_reason(w[i], NULL), want);
    uvp_promise_release(w[i]);
  }
  free(w);
  uv_sem_destroy(&b->started);
  uv_sem_destroy(&b->go);
}

/* Queued behind a full pool, every kind of request is cancelled before it
 * starts: it rejects at once, and its effect never happens. */
static void test_cancel_before_start(void **state) {
  fixture_t *f = *state;
  put("exists", "data", 4);
  assert_int_equal(mkdir(at("emptydir"), 0755), 0);
  size_t n = uvp_pool_size();
  blocker_t b;
  uvp_promise_t **w = block_pool(f, &b, n);

  enum { K = 12 };
  uvp_promise_t *p[K];
  assert_int_equal(uvp_fs_stat(f->ctx, at("exists"), &p[0]), 0);
  assert_int_equal(uvp_fs_scandir(f->ctx, tmp, &p[1]), 0);
  assert_int_equal(uvp_fs_realpath(f->ctx, tmp, &p[2]), 0);
  assert_int_equal(uvp_fs_read_file(f->ctx, at("exists"), 0, &p[3]), 0);
  assert_int_equal(uvp_fs_mkdir(f->ctx, at("never"), 0755, &p[4]), 0);
  assert_int_equal(uvp_fs_write_file(f->ctx, at("never.txt"), "x", 1, &p[5]),
                   0);
  assert_int_equal(uvp_fs_unlink(f->ctx, at("exists"), &p[6]), 0);
  assert_int_equal(uvp_fs_open(f->ctx, at("created"), O_WRONLY | O_CREAT,
                               0644, &p[7]),
                   0);
  assert_int_equal(uvp_fs_rename(f->ctx, at("exists"), at("renamed"), &p[8]),
                   0);
  assert_int_equal(uvp_fs_rmdir(f->ctx, at("emptydir"), &p[9]), 0);
  assert_int_equal(uvp_fs_lstat(f->ctx, at("exists"), &p[10]), 0);
  int fd = open(at("exists"), O_RDONLY);
  assert_true(fd >= 0);
  static char buf[8];
  assert_int_equal(uvp_fs_read(f->ctx, fd, buf, sizeof(buf), 0, &p[11]), 0);
  for (int i = 0; i < K; i++) {
    assert_int_equal(uvp_promise_state(p[i]), UVP_PENDING);
    assert_int_equal(uvp_promise_cancel(p[i]), 0);
    assert_int_equal(uvp_promise_state(p[i]), UVP_REJECTED);
    assert_int_equal(uvp_promise_reason(p[i], NULL), UV_ECANCELED);
  }
  unblock_pool(&b, n);
  run_loop(f);
  blockers_done(&b, w, n, 0);
  for (int i = 0; i < K; i++) {
    assert_int_equal(uvp_promise_reason(p[i], NULL), UV_ECANCELED);
    uvp_promise_release(p[i]);
  }
  assert_false(exists("never"));
  assert_false(exists("never.txt"));
  assert_false(exists("created"));
  assert_false(exists("renamed"));
  assert_true(exists("exists"));
  assert_true(exists("emptydir"));
  assert_int_equal(buf[0], 0); /* the read never ran */
  close(fd);
}

/* Waits until a reader is inside open() of the FIFO (only then does a
 * non-blocking open for writing succeed); that also lets the open finish. */
static int writer_for_blocked_reader(const char *fifo) {
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

/* Cancelled while running: libuv cannot stop an open already inside the
 * kernel, so the promise rejects at once and the descriptor the open
 * produces later is closed by uvp, not leaked. */
static void test_cancel_while_running(void **state) {
  fixture_t *f = *state;
  assert_int_equal(mkfifo(at("fifo"), 0600), 0);
  int fds = count_fds();

  uvp_promise_t *op, *rf;
  assert_int_equal(uvp_fs_open(f->ctx, at("fifo"), O_RDONLY, 0, &op), 0);
  int wfd = writer_for_blocked_reader(at("fifo"));
  assert_int_equal(uvp_promise_cancel(op), 0);
  assert_int_equal(uvp_promise_reason(op, NULL), UV_ECANCELED);
  uvp_promise_release(op); /* the request keeps its own reference */
  run_loop(f);
  assert_int_equal(close(wfd), 0);
  assert_int_equal(count_fds(), fds);

  /* The same for read_file, whose later steps must not run. */
  assert_int_equal(uvp_fs_read_file(f->ctx, at("fifo"), 0, &rf), 0);
  wfd = writer_for_blocked_reader(at("fifo"));
  assert_int_equal(write(wfd, "late", 4), 4);
  assert_int_equal(uvp_promise_cancel(rf), 0);
  assert_int_equal(uvp_promise_reason(rf, NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(rf, NULL), UV_ECANCELED);
  assert_null(uvp_promise_value(rf));
  uvp_promise_release(rf);
  assert_int_equal(close(wfd), 0);
  assert_int_equal(count_fds(), fds);
}

/* ---- a handler returning a fresh request ------------------------------------ */

/* A handler that returns a request it has just started hands the request
 * to its derived promise (see take_over in promise.c): the request's own
 * promise is freed at once instead of being adopted.  What users observe
 * must not change: values, order, cancellation, and a request promise the
 * handler kept for itself. */
typedef struct handoff_s {
  fixture_t *f;
  const char *path;
  int flags;
  uvp_promise_t *kept; /* the request's promise, if the handler keeps it */
  bool keep;
  int ran;
  size_t live_in_read; /* live promises seen by the read step */
  char buf[16];
} handoff_t;

static uvp_ret_t handoff_open(void *arg, const uvp_outcome_t *in) {
  handoff_t *h = arg;
  (void)in;
  h->ran++;
  uvp_promise_t *q;
  int rc = uvp_fs_open(h->f->ctx, h->path, h->flags, 0644, &q);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  if (h->keep)
    h->kept = uvp_promise_retain(q);
  return uvp_ret_adopt(q);
}

static uvp_ret_t handoff_read(void *arg, const uvp_outcome_t *in) {
  handoff_t *h = arg;
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(h->f->ctx, &st), 0);
  h->live_in_read = st.live;
  uvp_promise_t *q;
  int rc = uvp_fs_read(h->f->ctx, (uv_file)UVP_INT(in->value), h->buf,
                       sizeof(h->buf) - 1, 0, &q);
  return rc != 0 ? uvp_ret_reject(rc, NULL, NULL) : uvp_ret_adopt(q);
}

/* start -> open (returned by a handler) -> read (returned by a handler).
 * Returns the final promise; *opened gets the open step's. */
static uvp_promise_t *handoff_chain(handoff_t *h, uvp_promise_t **opened) {
  uvp_promise_t *start, *read;
  assert_int_equal(uvp_promise_new(h->f->ctx, &start), 0);
  assert_int_equal(uvp_promise_then(start, handoff_open, h, opened), 0);
  assert_int_equal(uvp_promise_then(*opened, handoff_read, h, &read), 0);
  assert_int_equal(uvp_promise_resolve(start, NULL, NULL), 0);
  uvp_promise_release(start);
  return read;
}

static void test_handler_hands_request_on(void **state) {
  fixture_t *f = *state;
  put("a", "hand-off", 8);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  size_t base = st.live;

  handoff_t h = {.f = f, .path = at("a"), .flags = O_RDONLY};
  uvp_promise_t *opened;
  uvp_promise_t *read = handoff_chain(&h, &opened);
  void *n = value_of(f, 0, read);
  assert_int_equal(UVP_INT(n), 8);
  assert_string_equal(h.buf, "hand-off");
  assert_int_equal(h.ran, 1);
  /* While the read step ran: `opened` and `read`, and nothing else.  An
   * adopted open would still be alive, owning the value `opened` shows. */
  assert_int_equal(h.live_in_read, base + 2);
  uv_file fd = (uv_file)UVP_INT(uvp_promise_value(opened));
  assert_true(fd >= 0);
  assert_int_equal(close(fd), 0);
  uvp_promise_release(opened);
  uvp_promise_release(read);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, base);
}

/* A handler that keeps the request's promise: that promise is adopted as
 * before, and settles with the same value as the derived one. */
static void test_handler_keeps_request(void **state) {
  fixture_t *f = *state;
  put("a", "kept", 4);
  handoff_t h = {.f = f, .path = at("a"), .flags = O_RDONLY, .keep = true};
  uvp_promise_t *opened;
  uvp_promise_t *read = handoff_chain(&h, &opened);
  void *n = value_of(f, 0, read);
  assert_int_equal(UVP_INT(n), 4);
  assert_string_equal(h.buf, "kept");
  assert_non_null(h.kept);
  assert_int_equal(uvp_promise_state(h.kept), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(h.kept), uvp_promise_value(opened));
  assert_int_equal(close((uv_file)UVP_INT(uvp_promise_value(opened))), 0);
  uvp_promise_release(h.kept);
  uvp_promise_release(opened);
  uvp_promise_release(read);
}

/* libuv's allocator, replaced in main() before libuv allocates anything,
 * to see when libuv frees its copy of one path: the first block of
 * `watch_len` bytes allocated while `watch_armed` is set. */
static _Atomic size_t watch_len;
static _Atomic bool watch_armed;
static void *_Atomic watched;
static _Atomic bool watched_freed;
/* If set, its state when the watched block is freed (loop thread only). */
static uvp_promise_t *watched_owner;
static int watched_owner_state;

/* Watch the next block libuv allocates for `path` (its copy of it). */
static void watch_path_copy(const char *path) {
  atomic_store(&watch_len, strlen(path) + 1);
  atomic_store(&watched_freed, false);
  atomic_store(&watched, NULL);
  atomic_store(&watch_armed, true);
}

static void *uv_malloc_hook(size_t n) {
  void *p = malloc(n);
  if (p != NULL && n == atomic_load(&watch_len) &&
      atomic_exchange(&watch_armed, false))
    atomic_store(&watched, p);
  return p;
}
static void uv_free_hook(void *p) {
  if (p != NULL && p == atomic_load(&watched)) {
    atomic_store(&watched, NULL);
    atomic_store(&watched_freed, true);
    if (watched_owner != NULL)
      watched_owner_state = uvp_promise_state(watched_owner);
  }
  free(p);
}
static void *uv_realloc_hook(void *p, size_t n) {
  assert_true(p == NULL || p != atomic_load(&watched));
  return realloc(p, n);
}
static void *uv_calloc_hook(size_t n, size_t size) { return calloc(n, size); }

/* What a handler saw: whether libuv's path copy was already freed, and the
 * outcome, its value read while the handler runs (a stat's lives only as
 * long as the result; 0 on failure). */
typedef struct {
  bool ran;
  bool freed_in_handler;
  int status;
  int64_t value;
} seen_t;

static void note(seen_t *seen, const uvp_outcome_t *in, int64_t value) {
  seen->ran = true;
  seen->freed_in_handler = atomic_load(&watched_freed);
  seen->status = in->status;
  seen->value = value;
}

static uvp_ret_t note_stat(void *arg, const uvp_outcome_t *in) {
  note(arg, in,
       in->status == 0 ? (int64_t)((const uv_stat_t *)in->value)->st_size
                       : 0);
  return uvp_ret_pass();
}

static uvp_ret_t note_outcome(void *arg, const uvp_outcome_t *in) {
  note(arg, in, in->status == 0 ? UVP_INT(in->value) : 0);
  return uvp_ret_pass();
}

/* A stat's request is cleaned (libuv's copy of the path freed) when the
 * result is released, not when it settles: after the handler that reads it
 * (see stat_free in src/fs.c for why).  Either way exactly once. */
static void test_stat_request_cleaned_with_its_result(void **state) {
  fixture_t *f = *state;
  put("stat-request-cleaned-with-its-result", "12345", 5);
  const char *path = at("stat-request-cleaned-with-its-result");
  for (int keep = 0; keep < 2; keep++) {
    watch_path_copy(path);
    uvp_promise_t *p, *d;
    assert_int_equal(uvp_fs_stat(f->ctx, path, &p), 0);
    atomic_store(&watch_armed, false);
    assert_non_null(atomic_load(&watched)); /* libuv copied the path */
    seen_t seen = {0};
    assert_int_equal(uvp_promise_then(p, note_stat, &seen, &d), 0);
    if (!keep)
      uvp_promise_release(p);
    run_loop(f);
    assert_true(seen.ran);
    assert_int_equal(seen.status, 0);
    assert_int_equal(seen.value, 5);
    assert_false(seen.freed_in_handler);
    assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
    uvp_promise_release(d);
    /* The stat promise's last reference was the handler's (keep == 0) or
     * is still ours (keep == 1). */
    assert_int_equal(atomic_load(&watched_freed), !keep);
    if (keep) {
      const uv_stat_t *st = uvp_promise_value(p);
      assert_int_equal(st->st_size, 5);
      uvp_promise_release(p);
      assert_true(atomic_load(&watched_freed));
    }
  }
}

/* Where the value is the result alone (an open's descriptor) or the
 * request failed (a stat of a missing name), the request is cleaned in
 * libuv's callback, as a hand-written one does (see simple_cb in
 * src/fs.c): libuv's copy of the path is freed while the promise is still
 * pending, and the settle does not clean it again. */
static void test_request_cleaned_before_settling(void **state) {
  fixture_t *f = *state;
  put("request-cleaned-before-settling", "12345", 5);
  for (int missing = 0; missing < 2; missing++) {
    const char *path = at(missing ? "request-cleaned-before-settling-not"
                                  : "request-cleaned-before-settling");
    watch_path_copy(path);
    uvp_promise_t *p, *d;
    int rc = missing ? uvp_fs_stat(f->ctx, path, &p)
                     : uvp_fs_open(f->ctx, path, O_RDONLY, 0, &p);
    assert_int_equal(rc, 0);
    atomic_store(&watch_armed, false);
    assert_non_null(atomic_load(&watched)); /* libuv copied the path */
    watched_owner = p;
    watched_owner_state = -1;
    seen_t seen = {0};
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, note_outcome, &seen, &d),
                     0);
    run_loop(f);
    assert_int_equal(watched_owner_state, UVP_PENDING);
    watched_owner = NULL;
    uvp_promise_release(p);
    assert_true(seen.ran);
    assert_true(seen.freed_in_handler);
    if (missing) {
      assert_int_equal(seen.status, UV_ENOENT);
    } else {
      assert_int_equal(seen.status, 0);
      assert_true(seen.value >= 0);
      assert_int_equal(close((uv_file)seen.value), 0);
    }
    uvp_promise_release(d);
  }
}

/* Cancelling the derived promise that took a request over cancels the
 * request itself: queued behind a full pool, it never runs. */
static void test_cancel_handed_on_request(void **state) {
  fixture_t *f = *state;
  size_t n = uvp_pool_size();
  blocker_t b;
  uvp_promise_t **w = block_pool(f, &b, n);

  handoff_t h = {.f = f, .path = at("created"), .flags = O_WRONLY | O_CREAT};
  uvp_promise_t *opened;
  uvp_promise_t *read = handoff_chain(&h, &opened);
  for (int i = 0; i < 100 && h.ran == 0; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(h.ran, 1);
  assert_int_equal(uvp_promise_state(opened), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(opened), 0);
  assert_int_equal(uvp_promise_reason(opened, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_cancel(opened), UVP_ESETTLED);

  unblock_pool(&b, n);
  run_loop(f);
  blockers_done(&b, w, n, 0);
  assert_int_equal(uvp_promise_reason(opened, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(read, NULL), UV_ECANCELED);
  assert_false(exists("created"));
  uvp_promise_release(opened);
  uvp_promise_release(read);
}

/* Cancelling a settled request does nothing. */
static void test_cancel_after_settled(void **state) {
  fixture_t *f = *state;
  put("a", "abc", 3);
  uvp_promise_t *p;
  int rc = uvp_fs_read_file(f->ctx, at("a"), 0, &p);
  const uvp_buf_t *b = value_of(f, rc, p);
  assert_int_equal(uvp_promise_cancel(p), UVP_ESETTLED);
  assert_string_equal(b->base, "abc");
  uvp_promise_release(p);
}

/* uvp_ctx_close with requests done, running and queued: all reject with
 * UVP_ECLOSED, the loop runs their callbacks, descriptors are closed and
 * the fixture's uv_loop_close() returns 0. */
static void test_teardown_in_flight(void **state) {
  fixture_t *f = *state;
  enum { K = 40 };
  char *data = malloc(1 << 16);
  assert_non_null(data);
  fill_pattern(data, 1 << 16, 4);
  put("src", data, 1 << 16);
  free(data);
  int fds = count_fds();

  /* All but one pool thread blocked, so requests are at every stage. */
  size_t n = uvp_pool_size() - 1;
  blocker_t b;
  uvp_promise_t **w = block_pool(f, &b, n);
  uvp_promise_t *p[K];
  char rel[32];
  for (int i = 0; i < K; i++) {
    snprintf(rel, sizeof(rel), "out%02d", i);
    int rc;
    switch (i % 5) {
    case 0:
      rc = uvp_fs_read_file(f->ctx, at("src"), 0, &p[i]);
      break;
    case 1:
      rc = uvp_fs_write_file(f->ctx, at(rel), "payload", 7, &p[i]);
      break;
    case 2:
      rc = uvp_fs_scandir(f->ctx, tmp, &p[i]);
      break;
    case 3:
      rc = uvp_fs_stat(f->ctx, at("src"), &p[i]);
      break;
    default:
      rc = uvp_fs_open(f->ctx, at("src"), O_RDONLY, 0, &p[i]);
      break;
    }
    assert_int_equal(rc, 0);
  }
  uv_sleep(2); /* let the free thread get some of them going */
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  for (int i = 0; i < K; i++) {
    assert_int_equal(uvp_promise_reason(p[i], NULL), UVP_ECLOSED);
    uvp_promise_release(p[i]);
  }
  unblock_pool(&b, n);
  run_loop(f);
  blockers_done(&b, w, n, UVP_ECLOSED);
  assert_int_equal(count_fds(), fds);
}

/* ---- a finished request whose promise is not settled yet ------------------ */

/* libuv's callback queues the completion and the run queue settles the
 * promise later in the same iteration (src/fs.c: simple_cb).  A chain of
 * handlers, one per iteration (budget 1), each queueing its successor only
 * when it runs, finds anything else queued exactly when that completion is
 * waiting: then the request is done in libuv and its promise pending. */
typedef struct {
  fixture_t *f;
  uvp_promise_t *op;
  bool close_ctx;
  bool hit;
  long turns;
} window_t;

static void next_turn(window_t *w);

static uvp_ret_t in_window(void *arg, const uvp_outcome_t *in) {
  window_t *w = arg;
  (void)in;
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(w->f->ctx, &st), 0);
  if (st.queued != 0) {
    w->hit = true;
    assert_int_equal(uvp_promise_state(w->op), UVP_PENDING);
    if (w->close_ctx) {
      assert_int_equal(uvp_ctx_close(w->f->ctx), 0);
      w->f->ctx = NULL;
    } else {
      assert_int_equal(uvp_promise_cancel(w->op), 0);
    }
    return uvp_ret_value(NULL, NULL);
  }
  if (uvp_promise_state(w->op) == UVP_PENDING && ++w->turns < 10000000)
    next_turn(w);
  /* else missed: hit stays false */
  return uvp_ret_value(NULL, NULL);
}

static void next_turn(window_t *w) {
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(w->f->ctx, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  assert_int_equal(uvp_promise_then(p, in_window, w, &d), 0);
  uvp_promise_release(p);
  uvp_promise_release(d);
}

/* Opens a real file and acts in the window; the file must end up closed
 * (the late result is released) whatever settled the promise. */
static void open_and_act_in_window(fixture_t *f, bool close_ctx, int want) {
  put("w", "x", 1);
  int fds = count_fds();
  assert_int_equal(uvp_ctx_set_budget(f->ctx, 1), 0);
  window_t w = {f, NULL, close_ctx, false, 0};
  assert_int_equal(uvp_fs_open(f->ctx, at("w"), O_RDONLY, 0, &w.op), 0);
  next_turn(&w);
  run_loop(f);
  assert_true(w.hit);
  assert_int_equal(uvp_promise_reason(w.op, NULL), want);
  uvp_promise_release(w.op);
  run_loop(f);
  assert_int_equal(count_fds(), fds);
}

static void test_cancel_while_completion_queued(void **state) {
  open_and_act_in_window(*state, false, UV_ECANCELED);
}

static void test_teardown_while_completion_queued(void **state) {
  open_and_act_in_window(*state, true, UVP_ECLOSED);
}

/* ---- the order of completions and their handlers ------------------------- */

/* Two stats finish in the pool before the loop runs, so libuv reports both
 * in one iteration and both completions are queued together.  Everything
 * that flows from whichever settles first (its handler, and a reaction
 * that handler queues) runs before the other promise settles
 * (src/sched.c: drain), as Node runs each I/O callback's promise jobs
 * before the next callback; a reaction queued before the completions runs
 * before both. */
typedef struct {
  trace_t t;
  uvp_promise_t *stat[2]; /* borrowed */
  uvp_state_t other_seen[2];
  uvp_promise_t *later; /* resolved by the first stat handler to run */
  int first;            /* the index of that handler's stat */
  uvp_state_t later_saw; /* the other stat's state when later's ran */
} arrival_t;

static uvp_ret_t arrival_early(void *arg, const uvp_outcome_t *in) {
  arrival_t *a = arg;
  (void)in;
  trace_push(&a->t, 0);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t arrival_later(void *arg, const uvp_outcome_t *in) {
  arrival_t *a = arg;
  (void)in;
  trace_push(&a->t, 3);
  a->later_saw = uvp_promise_state(a->stat[1 - a->first]);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t arrival_stat(arrival_t *a, int i) {
  trace_push(&a->t, 1 + i);
  a->other_seen[i] = uvp_promise_state(a->stat[1 - i]);
  if (a->other_seen[i] == UVP_PENDING) {
    a->first = i;
    assert_int_equal(uvp_promise_resolve(a->later, NULL, NULL), 0);
  }
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t arrival_stat0(void *arg, const uvp_outcome_t *in) {
  (void)in;
  return arrival_stat(arg, 0);
}

static uvp_ret_t arrival_stat1(void *arg, const uvp_outcome_t *in) {
  (void)in;
  return arrival_stat(arg, 1);
}

static void test_completion_handlers_in_arrival_order(void **state) {
  fixture_t *f = *state;
  put("a", "x", 1);
  arrival_t a = {0};
  uvp_promise_t *early;
  assert_int_equal(uvp_fs_stat(f->ctx, at("a"), &a.stat[0]), 0);
  assert_int_equal(uvp_fs_stat(f->ctx, at("missing"), &a.stat[1]), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &a.later), 0);
  assert_int_equal(
      uvp_promise_on(a.later, UVP_ON_BOTH, arrival_later, &a, NULL), 0);
  assert_int_equal(
      uvp_promise_on(a.stat[0], UVP_ON_BOTH, arrival_stat0, &a, NULL), 0);
  assert_int_equal(
      uvp_promise_on(a.stat[1], UVP_ON_BOTH, arrival_stat1, &a, NULL), 0);
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &early), 0);
  assert_int_equal(uvp_promise_on(early, UVP_ON_BOTH, arrival_early, &a, NULL),
                   0);
  uv_sleep(200); /* both stats finish before libuv is asked */
  run_loop(f);
  assert_int_equal(a.t.n, 4);
  assert_int_equal(a.t.ev[0], 0);
  int first = a.t.ev[1] - 1; /* whichever stat libuv reported first */
  assert_true(first == 0 || first == 1);
  assert_int_equal(a.other_seen[first], UVP_PENDING);
  assert_int_equal(a.first, first);
  assert_int_equal(a.t.ev[2], 3);
  assert_int_equal(a.later_saw, UVP_PENDING);
  assert_int_equal(a.t.ev[3], 1 + (1 - first));
  assert_int_equal(a.other_seen[1 - first],
                   first == 0 ? UVP_FULFILLED : UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(a.stat[1], NULL), UV_ENOENT);
  uvp_promise_release(a.stat[0]);
  uvp_promise_release(a.stat[1]);
  uvp_promise_release(a.later);
  uvp_promise_release(early);
}

/* Node lets an endless chain of promise jobs starve I/O.  Here a drain that
 * found no moment to run a completion lets the next one run it first: a
 * stat finishes in the pool before the loop runs, so libuv reports it in
 * the first iteration, while a chain of handlers, each queueing the next,
 * never leaves the run queue empty (budget 8 per drain).  The stat's
 * handler runs a drain or two later, after a few dozen chain steps at
 * most; without the rule, after the chain's last. */
#define CHAIN_LIMIT 1000000L
typedef struct {
  fixture_t *f;
  bool stat_done;
  long turns;      /* chain steps run */
  long turns_at;   /* when the stat's handler ran */
} starve_t;

static void starve_next(starve_t *s);

static uvp_ret_t starve_step(void *arg, const uvp_outcome_t *in) {
  starve_t *s = arg;
  (void)in;
  if (++s->turns < CHAIN_LIMIT && !s->stat_done)
    starve_next(s);
  return uvp_ret_value(NULL, NULL);
}

static void starve_next(starve_t *s) {
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_resolved(s->f->ctx, NULL, NULL, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, starve_step, s, NULL), 0);
  uvp_promise_release(p);
}

static uvp_ret_t starve_stat(void *arg, const uvp_outcome_t *in) {
  starve_t *s = arg;
  assert_int_equal(in->status, 0);
  s->stat_done = true;
  s->turns_at = s->turns;
  return uvp_ret_value(NULL, NULL);
}

static void test_completion_not_starved_by_endless_chain(void **state) {
  fixture_t *f = *state;
  put("a", "x", 1);
  starve_t s = {f, false, 0, 0};
  assert_int_equal(uvp_ctx_set_budget(f->ctx, 8), 0);
  uvp_promise_t *st;
  assert_int_equal(uvp_fs_stat(f->ctx, at("a"), &st), 0);
  assert_int_equal(uvp_promise_on(st, UVP_ON_BOTH, starve_stat, &s, NULL), 0);
  starve_next(&s);
  uv_sleep(200); /* the stat finishes before libuv is asked */
  run_loop(f);
  assert_true(s.stat_done);
  printf("stat handler ran after %ld chain steps\n", s.turns_at);
  assert_true(s.turns_at < 1000);
  uvp_promise_release(st);
}

/* ---- argument errors ----------------------------------------------------------- */

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_fs_stat(NULL, tmp, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_stat(f->ctx, tmp, NULL), UV_EINVAL);
  assert_int_equal(uvp_fs_read_file(f->ctx, NULL, 0, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_write_file(f->ctx, at("x"), NULL, 3, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_fs_write_file(f->ctx, NULL, "x", 1, &p), UV_EINVAL);
  assert_null(p);
  assert_false(exists("x"));

  /* Only uvp settles a wrapper's promise. */
  assert_int_equal(uvp_fs_stat(f->ctx, tmp, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), UVP_ESETTLED);
  const uv_stat_t *s = value_of(f, 0, p);
  assert_true(S_ISDIR(s->st_mode));
  uvp_promise_release(p);
  p = NULL;

  assert_false(exists("x"));
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--eacces-child") == 0)
    return access_child(argv[2]);
  if (realpath(argv[0], self) == NULL)
    return 1;
  if (uv_replace_allocator(uv_malloc_hook, uv_realloc_hook, uv_calloc_hook,
                           uv_free_hook) != 0)
    return 1;
  const struct CMUnitTest tests[] = {
      TEST(test_open_write_read_fstat_close),
      TEST(test_open_read_write_errors),
      TEST(test_stat_lstat),
      TEST(test_mkdir_rename_rmdir_unlink),
      TEST(test_scandir),
      TEST(test_scandir_many),
      TEST(test_realpath),
      TEST(test_read_file),
      TEST(test_write_file),
      TEST(test_many_requests_at_once),
      TEST(test_eacces_for_real),
      TEST(test_cancel_before_start),
      TEST(test_cancel_while_running),
      TEST(test_cancel_after_settled),
      TEST(test_handler_hands_request_on),
      TEST(test_handler_keeps_request),
      TEST(test_stat_request_cleaned_with_its_result),
      TEST(test_request_cleaned_before_settling),
      TEST(test_cancel_handed_on_request),
      TEST(test_teardown_in_flight),
      TEST(test_cancel_while_completion_queued),
      TEST(test_teardown_while_completion_queued),
      TEST(test_completion_handlers_in_arrival_order),
      TEST(test_completion_not_starved_by_endless_chain),
      TEST(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
